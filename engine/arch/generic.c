/* generic.c: every kernel in portable C (kernels.h). This is the level any
 * CPU runs and the readable reference the other levels are tested against
 * (tests/engine/test_kernels.c). Loops are written so that a compiler's
 * auto-vectoriser can use whatever the baseline target has (SSE2 on x86-64,
 * NEON on aarch64): fixed-size accumulator arrays, no aliasing between
 * input and output. It is compiled with -O3 for that reason. */
#include <math.h>
#include <string.h>

#include "kernels.h"

/* ------------------------------------------------------------- scalars */

float k_f16_to_f32_1(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0x1f) u = sign | 0x7f800000u | (man << 13); /* inf, NaN */
  else if (exp) u = sign | ((exp + 112) << 23) | (man << 13);
  else if (!man) u = sign; /* +-0 */
  else {                   /* subnormal: normalise */
    int e = -1;
    do man <<= 1, e++;
    while (!(man & 0x400));
    u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* round to nearest even, as F16C's _MM_FROUND_TO_NEAREST_INT does */
uint16_t k_f32_to_f16_1(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000, a = u & 0x7fffffff;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff)); /* NaN stays NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);                     /* overflow -> inf */
  if (a < 0x38800000u) {                                                      /* subnormal or 0 */
    if (a < 0x33000000u) return (uint16_t)sign;
    uint32_t e = a >> 23, man = (a & 0x7fffff) | 0x800000, shift = 126 - e; /* 14..24 */
    uint32_t r = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = a - 0x38000000u; /* rebias 127 -> 15, still << 13 */
  uint32_t h = r >> 13, rem = r & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

float k_bf16_to_f32_1(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* F16 -> F32 through a 64K-entry table (256 KiB, filled once): the scalar
 * conversion above costs ~20 operations, the table one load. */
static float f16_table[65536];
static int f16_table_ready;

static void f16_table_fill(void) {
  for (uint32_t i = 0; i < 65536; i++) f16_table[i] = k_f16_to_f32_1((uint16_t)i);
  __atomic_store_n(&f16_table_ready, 1, __ATOMIC_RELEASE);
}

static inline const float *f16_lut(void) {
  if (!__atomic_load_n(&f16_table_ready, __ATOMIC_ACQUIRE)) f16_table_fill(); /* idempotent: same values */
  return f16_table;
}

const float *k_f16_lut(void) { return f16_lut(); }

float k_gen_vmax(const float *x, int n) {
  float mx = -INFINITY;
  for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx; /* a NaN compares false */
  return mx;
}

void k_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
  double ss = 0;
  for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
  float r = (float)(1.0 / sqrt(ss / n + eps));
  for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

void k_rope(float *x, const float *cs, int hd) {
  float tmp[1024];
  if (hd <= 1024) {
    K()->rope_to(tmp, x, cs, hd);
    memcpy(x, tmp, (size_t)hd * sizeof *x);
    return;
  }
  int half = hd / 2;
  for (int i = 0; i < half; i++) {
    float a = x[i], b = x[i + half];
    x[i] = a * cs[i] - b * cs[half + i];
    x[i + half] = b * cs[i] + a * cs[half + i];
  }
}

/* ---------------------------------------------------------- elementwise */

void k_kv_quant(int8_t *q, uint16_t *s, const float *x, int n, int group) {
  for (int g0 = 0; g0 < n; g0 += group) {
    float amax = 0;
    for (int i = g0; i < g0 + group; i++) amax = fmaxf(amax, fabsf(x[i]));
    /* the scale as stored (F16, largest finite at most), so q * s is what a reader gets */
    uint16_t h = k_f32_to_f16_1(fminf(amax / 127.0f, 65504.0f));
    float d = k_f16_to_f32_1(h), inv = d > 0 ? 1.0f / d : 0.0f;
    for (int i = g0; i < g0 + group; i++) {
      float v = rintf(x[i] * inv);
      q[i] = (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : v == v ? v : 0); /* NaN: 0 */
    }
    s[g0 / group] = h;
  }
}

void k_gen_kv_dequant(float *out, const int8_t *q, const uint16_t *s, int n, int group) {
  for (int g0 = 0; g0 < n; g0 += group) {
    float d = k_f16_to_f32_1(s[g0 / group]);
    for (int i = g0; i < g0 + group; i++) out[i] = (float)q[i] * d;
  }
}

/* Quantized rows (engine_int.h): n % ST_QK == 0. */
static void g_dequant(float *out, const void *in, size_t n, st_dtype dt) {
  const uint8_t *b = in;
  size_t bs = st_bytes(dt, ST_QK);
  for (size_t i0 = 0; i0 < n; i0 += ST_QK, b += bs) {
    uint16_t h;
    memcpy(&h, b, 2);
    float d = k_f16_to_f32_1(h);
    if (dt == ST_Q8_0) {
      for (int i = 0; i < ST_QK; i++) out[i0 + i] = (float)(int8_t)b[2 + i] * d;
    } else {
      for (int i = 0; i < ST_QK / 2; i++) {
        out[i0 + i] = (float)((b[2 + i] & 15) - 8) * d;
        out[i0 + i + ST_QK / 2] = (float)((b[2 + i] >> 4) - 8) * d;
      }
    }
  }
}

void k_quantize_row(void *dst, const float *x, size_t k, st_dtype dt) {
  uint8_t *b = dst;
  for (size_t i0 = 0; i0 < k; i0 += ST_QK) {
    const float *v = x + i0;
    float amax = 0, max = 0; /* max: the value of largest magnitude, with its sign */
    for (int i = 0; i < ST_QK; i++)
      if (fabsf(v[i]) > amax) amax = fabsf(v[i]), max = v[i];
    if (dt == ST_Q8_0) {
      uint16_t h = k_f32_to_f16_1(amax / 127.0f);
      float d = k_f16_to_f32_1(h), id = d > 0 ? 1.0f / d : 0.0f;
      memcpy(b, &h, 2);
      for (int i = 0; i < ST_QK; i++) {
        float q = rintf(v[i] * id);
        b[2 + i] = (uint8_t)(int8_t)(q > 127 ? 127 : q < -127 ? -127 : q == q ? q : 0); /* NaN: 0 */
      }
      b += 34;
    } else { /* Q4_0: the extreme value maps to -8, the scale's sign flips to fit */
      uint16_t h = k_f32_to_f16_1(max / -8.0f);
      float d = k_f16_to_f32_1(h), id = d != 0 ? 1.0f / d : 0.0f;
      memcpy(b, &h, 2);
      for (int i = 0; i < ST_QK / 2; i++) {
        float a = rintf(v[i] * id) + 8, c = rintf(v[i + ST_QK / 2] * id) + 8;
        int qa = a < 0 ? 0 : a > 15 ? 15 : a == a ? (int)a : 8, qc = c < 0 ? 0 : c > 15 ? 15 : c == c ? (int)c : 8;
        b[2 + i] = (uint8_t)(qa | qc << 4);
      }
      b += 18;
    }
  }
}

static void g_widen(float *out, const void *in, size_t n, st_dtype dt) {
  if (st_is_quant(dt)) {
    g_dequant(out, in, n, dt);
  } else if (dt == ST_F32) {
    memcpy(out, in, n * sizeof *out);
  } else if (dt == ST_F16) {
    const float *t = f16_lut();
    const uint16_t *h = in;
    for (size_t i = 0; i < n; i++) out[i] = t[h[i]];
  } else {
    const uint16_t *h = in;
    uint32_t *o = (uint32_t *)(void *)out;
    for (size_t i = 0; i < n; i++) o[i] = (uint32_t)h[i] << 16;
  }
}

static void g_f32_to_f16(uint16_t *out, const float *in, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = k_f32_to_f16_1(in[i]);
}

/* rotate_half form: out[i] = x[i] cos_i - x[i+half] sin_i,
 * out[i+half] = x[i+half] cos_i + x[i] sin_i */
static void g_rope_to(float *restrict out, const float *restrict x, const float *restrict cs, int hd) {
  int half = hd / 2;
  const float *c = cs, *s = cs + half;
  for (int i = 0; i < half; i++) {
    float a = x[i], b = x[i + half];
    out[i] = a * c[i] - b * s[i];
    out[i + half] = b * c[i] + a * s[i];
  }
}

void k_gen_swiglu(float *g, const float *u, int n) {
  for (int i = 0; i < n; i++) {
    float x = g[i];
    g[i] = x / (1.0f + expf(-x)) * u[i];
  }
}

/* --------------------------------------------------------- projections */

/* One weight row as F32 into buf (or the row itself when it is F32). */
static inline const float *row_f32(const void *w, size_t i, int k, st_dtype dt, float *buf) {
  if (dt == ST_F32) return (const float *)w + i * (size_t)k;
  g_widen(buf, st_at(w, dt, i, (size_t)k, 0), (size_t)k, dt);
  return buf;
}

/* dot product with 8 partial sums (vectorisable; the order other levels
 * use differs only in rounding) */
static inline float dot(const float *restrict a, const float *restrict b, int k) {
  float s[8] = {0};
  int j = 0;
  for (; j + 8 <= k; j += 8)
    for (int l = 0; l < 8; l++) s[l] += a[j + l] * b[j + l];
  float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; j < k; j++) t += a[j] * b[j];
  return t;
}

#define G_ROW_MAX 16384 /* rows longer than this are widened in pieces */

static float dot_row(const void *w, size_t i, int k, st_dtype dt, const float *x, float *buf) {
  if (dt == ST_F32 || k <= G_ROW_MAX) return dot(row_f32(w, i, k, dt, buf), x, k);
  float t = 0;
  for (int j0 = 0; j0 < k; j0 += G_ROW_MAX) {
    int kk = k - j0 < G_ROW_MAX ? k - j0 : G_ROW_MAX;
    g_widen(buf, st_at(w, dt, i, (size_t)k, (size_t)j0), (size_t)kk, dt);
    t += dot(buf, x + j0, kk);
  }
  return t;
}

static void g_gemv(float *y, const void *w, int n, int k, const float *x, float beta, st_dtype dt) {
  float buf[G_ROW_MAX];
  for (int i = 0; i < n; i++) {
    float t = dot_row(w, (size_t)i, k, dt, x, buf);
    y[i] = beta == 0.0f ? t : beta * y[i] + t;
  }
}

/* each weight row widened once, used for all M input rows */
static void g_gemm_few(float *out, int ldo, const void *w, int n, int k, const float *in, int M, float beta,
                       st_dtype dt) {
  float buf[G_ROW_MAX];
  for (int i = 0; i < n; i++) {
    const float *wr = k <= G_ROW_MAX ? row_f32(w, (size_t)i, k, dt, buf) : NULL;
    for (int m = 0; m < M; m++) {
      const float *x = in + (size_t)m * k;
      float t = wr ? dot(wr, x, k) : dot_row(w, (size_t)i, k, dt, x, buf);
      float *o = out + (size_t)m * ldo + i;
      *o = beta == 0.0f ? t : beta * *o + t;
    }
  }
}

/* 4 x 8: 8 accumulator vectors of the baseline x86-64 (SSE2, 16 registers),
 * with room for B and A's broadcasts. Measured (Xeon, 1 thread, 512 x 1408 x
 * 512): 26.8 GFLOP/s, the SSE2 multiply + add peak; 4 x 16 spilled its
 * accumulators (3.4 GFLOP/s), 6 x 8 and 8 x 8 too (6-9). */
#define G_MR 4
#define G_NR 8

static void g_pack_b(float *bp, const void *w, size_t ldw, int ncols, int kc, st_dtype dt) {
  float buf[256];
  for (int j = 0; j < G_NR; j++) {
    if (j >= ncols) {
      for (int p = 0; p < kc; p++) bp[(size_t)p * G_NR + j] = 0;
      continue;
    }
    for (int p0 = 0; p0 < kc; p0 += 256) {
      int cnt = kc - p0 < 256 ? kc - p0 : 256;
      const void *src = st_at(w, dt, (size_t)j, ldw, (size_t)p0);
      g_widen(buf, src, (size_t)cnt, dt);
      for (int p = 0; p < cnt; p++) bp[(size_t)(p0 + p) * G_NR + j] = buf[p];
    }
  }
}

static void g_tile(int kc, const float *restrict ap, const float *restrict bp, float *restrict c, size_t ldc, int mr,
                   int nr, int acc) {
  float t[G_MR][G_NR] = {{0}};
  for (int p = 0; p < kc; p++) {
    const float *a = ap + (size_t)p * G_MR, *b = bp + (size_t)p * G_NR;
    for (int r = 0; r < G_MR; r++)
      for (int j = 0; j < G_NR; j++) t[r][j] += a[r] * b[j];
  }
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nr; j++) c[(size_t)r * ldc + j] = (acc ? c[(size_t)r * ldc + j] : 0.0f) + t[r][j];
}

/* ----------------------------------------------------------- attention */

/* Attention on one tile of keys for R query rows (tokens x heads), in three
 * passes (flash-attention's inner loop, with the rows along the fast axis):
 *
 *   attn_scores:  S[t][r] = K[t] . Q[r]
 *   attn_softmax: online-softmax update: m' = max(m, max_t S), S[t] <-
 *                 e^(S[t] - m'), l <- l e^(m - m') + sum_t S[t]
 *   attn_accum:   O[r] <- O[r] corr[r] + sum_t S[t][r] V[t]
 *
 * Q arrives transposed (Qt[d][r], scaled), so the vector levels broadcast one
 * key element against 8 or 16 rows' queries; keys and values are row-major
 * as the cache stores them, and a value row may be the first hd elements of
 * a longer row (attn_accum's ldv: MLA's latent inside [latent | rope key]).
 * m starts at a finite -1e30 (not -inf), so fully masked rows never produce
 * NaN. */

/* S[t*lds + r] for t < T4 (a multiple of 4) and r < R8 (a multiple of 8) */
void k_gen_attn_scores(float *S, int lds, const float *Qt, int ldq, int R8, const float *K, int T4, int hd) {
  for (int t = 0; t < T4; t++) {
    float s[8];
    for (int r0 = 0; r0 < R8; r0 += 8) {
      for (int l = 0; l < 8; l++) s[l] = 0;
      for (int d = 0; d < hd; d++) {
        float k = K[(size_t)t * hd + d];
        const float *q = Qt + (size_t)d * ldq + r0;
        for (int l = 0; l < 8; l++) s[l] += k * q[l];
      }
      memcpy(S + (size_t)t * lds + r0, s, sizeof s);
    }
  }
}

/* R <= 4 rows given as row pointers: S[t*lds + r] = scale * q[r] . K[t] */
void k_gen_attn_scores_few(float *S, int lds, const float *const *q, int R, float scale, const float *K, int T,
                              int hd) {
  for (int r = 0; r < R; r++)
    for (int t = 0; t < T; t++) S[(size_t)t * lds + r] = scale * dot(q[r], K + (size_t)t * hd, hd);
}

/* rows r < R8: S masked (-> 0 after exp) where t >= valid[r]; m, l updated,
 * corr[r] = e^(m - m') */
void k_gen_attn_softmax(float *S, int lds, int T, int R8, const float *valid, float *m, float *l, float *corr) {
  for (int r = 0; r < R8; r++) {
    float mx = m[r];
    for (int t = 0; t < T; t++) {
      float *s = S + (size_t)t * lds + r;
      if ((float)t >= valid[r]) *s = -INFINITY;
      mx = *s > mx ? *s : mx;
    }
    float sum = 0, c = expf(m[r] - mx);
    for (int t = 0; t < T; t++) {
      float *s = S + (size_t)t * lds + r;
      *s = expf(*s - mx);
      sum += *s;
    }
    l[r] = l[r] * c + sum;
    m[r] = mx;
    corr[r] = c;
  }
}

void k_gen_attn_accum(float *O, const float *P, int ldp, const float *V, int ldv, int T, int R, int hd, const float *corr) {
  for (int r = 0; r < R; r++) {
    float *restrict o = O + (size_t)r * hd;
    for (int i = 0; i < hd; i++) o[i] *= corr[r];
    for (int t = 0; t < T; t++) {
      float p = P[(size_t)t * ldp + r];
      const float *restrict v = V + (size_t)t * ldv;
      for (int i = 0; i < hd; i++) o[i] += p * v[i];
    }
  }
}

/* ---------------------------------------------------------------- peak */

/* 48 independent lanes: enough vectors in flight to cover the multiply-add
 * latency of the baseline ISA (SSE2's separate multiply and add) */
static double g_fma_burn(long iters) {
  float a[48], b[48];
  for (int l = 0; l < 48; l++) a[l] = 1e-3f * l, b[l] = 0.999f;
  for (long i = 0; i < iters; i++)
    for (int l = 0; l < 48; l++) a[l] = a[l] * b[l] + 1e-7f;
  float sum = 0; /* every lane feeds the result, so none is optimised away */
  for (int l = 0; l < 48; l++) sum += a[l];
  volatile float sink = sum;
  (void)sink;
  return 2.0 * 48 * (double)iters;
}

const k_table k_table_generic = {
    .name = "generic",
    .gemm_mr = G_MR,
    .gemm_nr = G_NR,
    .few_max = 8,
    .gemv = g_gemv,
    .gemm_few = g_gemm_few,
    .gemm_pack_b = g_pack_b,
    .gemm_tile = g_tile,
    .widen = g_widen,
    .kv_dequant = k_gen_kv_dequant,
    .f32_to_f16 = g_f32_to_f16,
    .rope_to = g_rope_to,
    .swiglu = k_gen_swiglu,
    .vmax = k_gen_vmax,
    .attn_scores = k_gen_attn_scores,
    .attn_scores_few = k_gen_attn_scores_few,
    .attn_softmax = k_gen_attn_softmax,
    .attn_accum = k_gen_attn_accum,
    .fma_burn = g_fma_burn,
};
