/* x86_avx512.c: the AVX-512 levels (kernels.h), 16 floats per vector and 32
 * vector registers. Built twice (engine/CMakeLists.txt):
 *   -mavx512f -mavx512bw -mavx512vl (+ AVX2/FMA/F16C)    -> k_table_avx512
 *   the same + -mavx512bf16 -mavx512vnni (MFS_AVX512_BF16) -> k_table_avx512bf16
 * The second is the top level on CPUs that report both extensions; today
 * its kernels are these same ones compiled with the wider target (the
 * compiler may use the extra instructions); the int8 (VNNI) weight and KV
 * kernels of the quantization work go into it. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "x86_ymm.h"

#ifdef MFS_AVX512_BF16
#define TABLE k_table_avx512bf16
#define LEVEL "avx512-bf16"
#else
#define TABLE k_table_avx512
#define LEVEL "avx512"
#endif

/* 16 consecutive weights as F32 */
static inline __m512 widen16(const void *p, st_dtype dt) {
  if (dt == ST_F32) return _mm512_loadu_ps(p);
  __m256i h = _mm256_loadu_si256((const __m256i *)p);
  if (dt == ST_F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline const void *w_at(const void *w, size_t j, st_dtype dt) {
  return dt == ST_F32 ? (const void *)((const float *)w + j) : (const void *)((const uint16_t *)w + j);
}

static inline float w_get(const void *w, size_t j, st_dtype dt) {
  if (dt == ST_F32) return ((const float *)w)[j];
  uint16_t h = ((const uint16_t *)w)[j];
  return dt == ST_F16 ? _cvtsh_ss(h) : k_bf16_to_f32_1(h);
}

static void z_kv_dequant(float *out, const int8_t *q, const uint16_t *s, int n, int group) {
  if (group % 16) {
    k_gen_kv_dequant(out, q, s, n, group);
    return;
  }
  for (int g0 = 0; g0 < n; g0 += group) {
    __m512 d = _mm512_set1_ps(_cvtsh_ss(s[g0 / group]));
    for (int i = g0; i < g0 + group; i += 16) {
      __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + i)));
      _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_cvtepi32_ps(v), d));
    }
  }
}

/* quantized blocks (engine_int.h), n % ST_QK == 0 */
static void z_dequant(float *out, const void *in, size_t n, st_dtype dt) {
  const uint8_t *b = in;
  size_t bs = dt == ST_Q8_0 ? 34 : 18;
  for (size_t i = 0; i < n; i += ST_QK, b += bs) {
    __m512 d = _mm512_set1_ps(_cvtsh_ss(k_ld16(b)));
    __m128i q0, q1;
    if (dt == ST_Q8_0) {
      q0 = _mm_loadu_si128((const __m128i *)(b + 2));
      q1 = _mm_loadu_si128((const __m128i *)(b + 18));
    } else {
      q4_unpack(b + 2, &q0, &q1);
    }
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), d));
    _mm512_storeu_ps(out + i + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), d));
  }
}

static void z_widen(float *out, const void *in, size_t n, st_dtype dt) {
  if (st_is_quant(dt)) {
    z_dequant(out, in, n, dt);
    return;
  }
  if (dt == ST_F32) {
    memcpy(out, in, n * sizeof *out);
    return;
  }
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, widen16(w_at(in, i, dt), dt));
  for (; i < n; i++) out[i] = w_get(in, i, dt);
}

static void z_f32_to_f16(uint16_t *out, const float *in, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtps_ph(_mm512_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++) out[i] = _cvtss_sh(in[i], _MM_FROUND_TO_NEAREST_INT);
}

static void z_rope_to(float *out, const float *x, const float *cs, int hd) {
  int half = hd / 2;
  const float *c = cs, *s = cs + half;
  int i = 0;
  for (; i + 16 <= half; i += 16) {
    __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + half);
    __m512 cv = _mm512_loadu_ps(c + i), sv = _mm512_loadu_ps(s + i);
    _mm512_storeu_ps(out + i, _mm512_fnmadd_ps(b, sv, _mm512_mul_ps(a, cv)));
    _mm512_storeu_ps(out + i + half, _mm512_fmadd_ps(a, sv, _mm512_mul_ps(b, cv)));
  }
  for (; i < half; i++) {
    float a = x[i], b = x[i + half];
    out[i] = a * c[i] - b * s[i];
    out[i + half] = b * c[i] + a * s[i];
  }
}

/* exp for 16 floats: exp8's method (Cephes), same constants */
static inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.3762626647949f)), _mm512_set1_ps(88.3762626647949f));
  __m512 fx = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                                   _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500E-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

/* MAXPS returns its second operand when either is NaN: m never becomes NaN */
static float z_vmax(const float *x, int n) {
  __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
  int i = 0;
  for (; i + 32 <= n; i += 32)
    m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0), m1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), m1);
  if (i + 16 <= n) m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0), i += 16;
  if (i < n) m1 = _mm512_max_ps(_mm512_mask_loadu_ps(m1, (__mmask16)((1u << (n - i)) - 1), x + i), m1);
  return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

static void z_swiglu(float *g, const float *u, int n) {
  int i = 0;
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps(g + i);
    __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
    _mm512_storeu_ps(g + i, _mm512_div_ps(_mm512_mul_ps(x, _mm512_loadu_ps(u + i)), _mm512_add_ps(one, e)));
  }
  for (; i < n; i++) {
    float x = g[i];
    g[i] = x / (1.0f + expf(-x)) * u[i];
  }
}

/* ------------------------------------------------------ decode (GEMV) */

/* The prefetch runs this far ahead of the loads, in bytes of the stream
 * (the 4 rows of a pass are one contiguous run): rows are short (1-2 KiB),
 * too short for the hardware prefetcher to lock on to each. It fills L2
 * (T1), not L1: see GEMV_PREFETCH in x86_avx2.c for the measurement. */
#define Z_PREFETCH 8192

/* Four rows per pass share each load of x; 2 accumulators per row hide the
 * FMA latency; 32 weights per row per iteration. */
static inline __attribute__((always_inline)) void gemv_dt(float *y, const void *w, int n, int k, const float *x,
                                                          float beta, const st_dtype dt) {
  const size_t esz = dt == ST_F32 ? 4 : 2;
  int k32 = k & ~31, i = 0;
  for (; i + 4 <= n; i += 4) {
    const char *r0 = (const char *)w + (size_t)i * k * esz, *r1 = r0 + (size_t)k * esz, *r2 = r1 + (size_t)k * esz,
               *r3 = r2 + (size_t)k * esz;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    const char *pf = r0 + Z_PREFETCH;
    for (int j = 0; j < k32; j += 32) {
      /* 4 rows x 32 weights = 4 * 32 * esz bytes of the stream per iteration */
      for (size_t b = 0; b < 2 * esz * 64; b += 64) _mm_prefetch(pf + (size_t)j * 4 * esz + b, _MM_HINT_T1);
      __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
      a0 = _mm512_fmadd_ps(widen16(r0 + (size_t)j * esz, dt), x0, a0);
      b0 = _mm512_fmadd_ps(widen16(r0 + (size_t)(j + 16) * esz, dt), x1, b0);
      a1 = _mm512_fmadd_ps(widen16(r1 + (size_t)j * esz, dt), x0, a1);
      b1 = _mm512_fmadd_ps(widen16(r1 + (size_t)(j + 16) * esz, dt), x1, b1);
      a2 = _mm512_fmadd_ps(widen16(r2 + (size_t)j * esz, dt), x0, a2);
      b2 = _mm512_fmadd_ps(widen16(r2 + (size_t)(j + 16) * esz, dt), x1, b2);
      a3 = _mm512_fmadd_ps(widen16(r3 + (size_t)j * esz, dt), x0, a3);
      b3 = _mm512_fmadd_ps(widen16(r3 + (size_t)(j + 16) * esz, dt), x1, b3);
    }
    const char *rows[4] = {r0, r1, r2, r3};
    __m512 acc[4] = {_mm512_add_ps(a0, b0), _mm512_add_ps(a1, b1), _mm512_add_ps(a2, b2), _mm512_add_ps(a3, b3)};
    for (int r = 0; r < 4; r++) {
      int j = k32;
      if (j + 16 <= k) {
        acc[r] = _mm512_fmadd_ps(widen16(rows[r] + (size_t)j * esz, dt), _mm512_loadu_ps(x + j), acc[r]);
        j += 16;
      }
      float s = _mm512_reduce_add_ps(acc[r]);
      for (; j < k; j++) s += w_get(rows[r], (size_t)j, dt) * x[j];
      y[i + r] = beta == 0.0f ? s : beta * y[i + r] + s;
    }
  }
  for (; i < n; i++) {
    const char *wr = (const char *)w + (size_t)i * k * esz;
    __m512 a = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= k; j += 16) a = _mm512_fmadd_ps(widen16(wr + (size_t)j * esz, dt), _mm512_loadu_ps(x + j), a);
    float s = _mm512_reduce_add_ps(a);
    for (; j < k; j++) s += w_get(wr, (size_t)j, dt) * x[j];
    y[i] = beta == 0.0f ? s : beta * y[i] + s;
  }
}

/* Quantized rows fused: each block's ints widen in registers and meet x
 * there; nothing is written back. R rows per pass share the loads of x;
 * their F16 scales are looked up (k_f16_lut) into sc first, so a block's
 * scale costs a broadcast load, not a conversion. Per block and row: Q8_0 2 sign-extends, 2 converts, 3 FMAs;
 * Q4_0 1 zero-extend, a shift, 2 table permutes (nibble -> n - 8), 3 FMAs. */
#define ZQ_MAX_BLOCKS 512 /* k up to 16384; longer rows take the buffered path */
static inline __attribute__((always_inline)) void gemv_q_rows(float *y, const uint8_t *w, size_t rb, int nb,
                                                              const float *x, float beta, const int R,
                                                              const st_dtype dt) {
  const float *lut = k_f16_lut();
  const size_t bs = dt == ST_Q8_0 ? 34 : 18;
  float sc[4][ZQ_MAX_BLOCKS];
  for (int r = 0; r < R; r++)
    for (int b = 0; b < nb; b++) sc[r][b] = lut[k_ld16(w + r * rb + (size_t)b * bs)];
  __m512 acc[4];
  for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
  const uint8_t *pf = w + Z_PREFETCH;
  /* Q4_0: a nibble n becomes the float n - 8 by one permute through this
   * table (vpermps reads only an index's low 4 bits: no mask needed) */
  const __m512 q4tab = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  for (int b = 0; b < nb; b++) {
    for (int l = 0; l < R * (int)bs; l += 64) _mm_prefetch((const char *)pf + (size_t)b * R * bs + l, _MM_HINT_T1);
    __m512 x0 = _mm512_loadu_ps(x + 32 * b), x1 = _mm512_loadu_ps(x + 32 * b + 16);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      const uint8_t *p = w + r * rb + (size_t)b * bs + 2;
      __m512 t;
      if (dt == ST_Q8_0) {
        __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
        __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))));
        t = _mm512_fmadd_ps(hi, x1, _mm512_mul_ps(lo, x0));
      } else {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
        __m512 lo = _mm512_permutexvar_ps(v, q4tab), hi = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), q4tab);
        t = _mm512_fmadd_ps(hi, x1, _mm512_mul_ps(lo, x0));
      }
      acc[r] = _mm512_fmadd_ps(t, _mm512_set1_ps(sc[r][b]), acc[r]);
    }
  }
  for (int r = 0; r < R; r++) {
    float s = _mm512_reduce_add_ps(acc[r]);
    y[r] = beta == 0.0f ? s : beta * y[r] + s;
  }
}

static void gemv_q(float *y, const void *w, int n, int k, const float *x, float beta, const st_dtype dt) {
  int nb = k / ST_QK, i = 0;
  size_t rb = st_bytes(dt, (size_t)k);
  const uint8_t *wb = w;
  for (; i + 4 <= n; i += 4) gemv_q_rows(y + i, wb + (size_t)i * rb, rb, nb, x, beta, 4, dt);
  for (; i < n; i++) gemv_q_rows(y + i, wb + (size_t)i * rb, rb, nb, x, beta, 1, dt);
}

#ifdef MFS_AVX512_BF16
/* Batch-1 with int8 products (this level rounds every quantized product's
 * input the same way: qgemm_quant_a's blocks). VPDPBUSD multiplies unsigned
 * by signed bytes, so the weights go unsigned (Q8_0: w + 128 by flipping
 * the sign bit; Q4_0: the nibble n = w + 8 as it is) and x's quantized q
 * stays signed; the offset's contribution, 128 (8) * sum(q) per block, is
 * the same for every row and is subtracted from lane 0 of the block's 8
 * integer lanes before they are converted and scaled by d_x * d_w. (VPSIGNB
 * would move x's signs onto the weights instead, but gets -(-128) wrong.) */
static inline __attribute__((always_inline)) void qgemv_rows(float *y, const uint8_t *w, size_t rb, int nb,
                                                             const int8_t *xq, const int32_t *corr, const float *dx,
                                                             float beta, const int R, const st_dtype dt) {
  const float *lut = k_f16_lut();
  const size_t bs = dt == ST_Q8_0 ? 34 : 18;
  float sc[4][ZQ_MAX_BLOCKS];
  for (int r = 0; r < R; r++)
    for (int b = 0; b < nb; b++) sc[r][b] = lut[k_ld16(w + r * rb + (size_t)b * bs)] * dx[b];
  __m256 acc[4];
  for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
  const uint8_t *pf = w + Z_PREFETCH;
  const __m128i m4 = _mm_set1_epi8(15);
  const __m256i flip = _mm256_set1_epi8((char)0x80);
  for (int b = 0; b < nb; b++) {
    for (int l = 0; l < R * (int)bs; l += 64) _mm_prefetch((const char *)pf + (size_t)b * R * bs + l, _MM_HINT_T1);
    __m256i X = _mm256_loadu_si256((const __m256i *)(xq + 32 * b));
    __m256i C = _mm256_setr_epi32(corr[b], 0, 0, 0, 0, 0, 0, 0);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      const uint8_t *p = w + r * rb + (size_t)b * bs + 2;
      __m256i wu;
      if (dt == ST_Q8_0) {
        wu = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)p), flip);
      } else {
        __m128i q = _mm_loadu_si128((const __m128i *)p);
        wu = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
      }
      __m256i d = _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), wu, X), C);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_broadcast_ss(&sc[r][b]), acc[r]);
    }
  }
  for (int r = 0; r < R; r++) {
    float s = hsum8(acc[r]);
    y[r] = beta == 0.0f ? s : beta * y[r] + s;
  }
}

static void z_qgemm_quant_a(uint8_t *aq, float *da, const float *a, int r0, int r1, int k);

static void qgemv(float *y, const void *w, int n, int k, const float *x, float beta, const st_dtype dt) {
  int nb = k / ST_QK, i = 0;
  uint8_t aq[ZQ_MAX_BLOCKS * ST_QK] __attribute__((aligned(64)));
  int8_t xq[ZQ_MAX_BLOCKS * ST_QK] __attribute__((aligned(64)));
  int32_t corr[ZQ_MAX_BLOCKS];
  float dx[ZQ_MAX_BLOCKS];
  z_qgemm_quant_a(aq, dx, x, 0, 1, k); /* q + 128, as the GEMM's rows */
  int off = dt == ST_Q8_0 ? 128 : 8;
  for (int b = 0; b < nb; b++) {
    int s = 0;
    for (int j = 32 * b; j < 32 * b + 32; j++) s += (xq[j] = (int8_t)(aq[j] - 128));
    corr[b] = off * s;
  }
  size_t rb = st_bytes(dt, (size_t)k);
  const uint8_t *wb = w;
  for (; i + 4 <= n; i += 4) qgemv_rows(y + i, wb + (size_t)i * rb, rb, nb, xq, corr, dx, beta, 4, dt);
  for (; i < n; i++) qgemv_rows(y + i, wb + (size_t)i * rb, rb, nb, xq, corr, dx, beta, 1, dt);
}
#endif

static void z_gemv(float *y, const void *w, int n, int k, const float *x, float beta, st_dtype dt) {
  if (st_is_quant(dt) && k / ST_QK > ZQ_MAX_BLOCKS) k_quant_gemv(z_widen, z_gemv, y, w, n, k, x, beta, dt);
#ifdef MFS_AVX512_BF16
  else if (dt == ST_Q8_0) qgemv(y, w, n, k, x, beta, ST_Q8_0);
  else if (dt == ST_Q4_0) qgemv(y, w, n, k, x, beta, ST_Q4_0);
#endif
  else if (dt == ST_Q8_0) gemv_q(y, w, n, k, x, beta, ST_Q8_0);
  else if (dt == ST_Q4_0) gemv_q(y, w, n, k, x, beta, ST_Q4_0);
  else if (dt == ST_F16) gemv_dt(y, w, n, k, x, beta, ST_F16);
  else if (dt == ST_BF16) gemv_dt(y, w, n, k, x, beta, ST_BF16);
  else gemv_dt(y, w, n, k, x, beta, ST_F32);
}

/* ------------------------------------------- a few rows (batched decode) */

/* 2 weight rows x M (1..6) input rows per pass: each weight vector is
 * widened once and feeds M FMAs; M and dt are constants in every
 * instantiation, so the unused accumulators fold away. */
#define FEW_M 6
static inline __attribute__((always_inline)) void few_pass(float *out, int ldo, const void *w, int n, int k,
                                                           const float *in, const int M, float beta,
                                                           const st_dtype dt) {
  const size_t esz = dt == ST_F32 ? 4 : 2;
  int k16 = k & ~15, i = 0;
  for (; i + 2 <= n; i += 2) {
    const char *wa = (const char *)w + (size_t)i * k * esz, *wb = wa + (size_t)k * esz;
    const char *pf = wa + Z_PREFETCH;
    __m512 a[FEW_M], b[FEW_M];
#pragma GCC unroll 6
    for (int m = 0; m < M; m++) a[m] = b[m] = _mm512_setzero_ps();
    for (int j = 0; j < k16; j += 16) {
      if (((size_t)j * esz) % 64 == 0) _mm_prefetch(pf + (size_t)j * 2 * esz, _MM_HINT_T1);
      __m512 va = widen16(wa + (size_t)j * esz, dt), vb = widen16(wb + (size_t)j * esz, dt);
#pragma GCC unroll 6
      for (int m = 0; m < M; m++) {
        __m512 x = _mm512_loadu_ps(in + (size_t)m * k + j);
        a[m] = _mm512_fmadd_ps(va, x, a[m]);
        b[m] = _mm512_fmadd_ps(vb, x, b[m]);
      }
    }
    for (int m = 0; m < M; m++) {
      float ta = _mm512_reduce_add_ps(a[m]), tb = _mm512_reduce_add_ps(b[m]);
      const float *x = in + (size_t)m * k;
      for (int j = k16; j < k; j++) ta += w_get(wa, (size_t)j, dt) * x[j], tb += w_get(wb, (size_t)j, dt) * x[j];
      float *o = out + (size_t)m * ldo + i;
      o[0] = beta == 0.0f ? ta : beta * o[0] + ta;
      o[1] = beta == 0.0f ? tb : beta * o[1] + tb;
    }
  }
  for (; i < n; i++) /* an odd last row */
    for (int m = 0; m < M; m++) {
      const char *wr = (const char *)w + (size_t)i * k * esz;
      float t = 0;
      for (int j = 0; j < k; j++) t += w_get(wr, (size_t)j, dt) * in[(size_t)m * k + j];
      float *o = out + (size_t)m * ldo + i;
      *o = beta == 0.0f ? t : beta * *o + t;
    }
}

#define FEW_CASE(MM)                                                        \
  case MM:                                                                  \
    if (dt == ST_F16) few_pass(out, ldo, w, n, k, in, MM, beta, ST_F16);    \
    else if (dt == ST_BF16) few_pass(out, ldo, w, n, k, in, MM, beta, ST_BF16); \
    else few_pass(out, ldo, w, n, k, in, MM, beta, ST_F32);                 \
    break;

static void few_any(float *out, int ldo, const void *w, int n, int k, const float *in, int M, float beta,
                    st_dtype dt) {
  switch (M) {
    FEW_CASE(1)
    FEW_CASE(2)
    FEW_CASE(3)
    FEW_CASE(4)
    FEW_CASE(5)
    FEW_CASE(6)
  }
}

/* Each block of weight rows (about L1-sized) is streamed from memory by the
 * first pass and re-read from cache by the others: the weights cross the
 * memory bus once for all M rows. */
#define FEW_BLOCK_BYTES 32768
static void z_gemm_few(float *out, int ldo, const void *w, int n, int k, const float *in, int M, float beta,
                       st_dtype dt) {
  if (st_is_quant(dt)) {
    k_quant_few(z_widen, z_gemm_few, out, ldo, w, n, k, in, M, beta, dt);
    return;
  }
  size_t esz = dt == ST_F32 ? 4 : 2;
  int nb = (int)(FEW_BLOCK_BYTES / ((size_t)k * esz)) & ~1;
  if (nb < 2) nb = 2;
  for (int i = 0; i < n; i += nb) {
    int cnt = n - i < nb ? n - i : nb;
    const void *wb = w_at(w, (size_t)i * k, dt);
    for (int m = 0; m < M; m += FEW_M) {
      int mm = M - m < FEW_M ? M - m : FEW_M;
      few_any(out + (size_t)m * ldo + i, ldo, wb, cnt, k, in + (size_t)m * k, mm, beta, dt);
    }
  }
}

/* ----------------------------------- rows on lanes (batched decode, 12..128) */

/* out[m][i] = beta * out + W[i] . A[m] for RL_NB / NP weight rows at a time
 * and NP panels of 16 input rows (ap: [NP][k][16], the rows on the lanes,
 * zero past the last one). Each weight is widened once into a two-slot ring
 * in scratch ([2][NB][16] floats: the next 16 positions of every row, while
 * the current ones are used) and then broadcast from L1 against the panel:
 * per position NP vector loads and NB broadcasts feed NB * NP FMAs, and no
 * horizontal sums are needed. The next block of weight rows (contiguous in
 * memory) is prefetched into L2 while this one runs. k % 16 == 0. */
#define RL_ACC 24
static inline __attribute__((always_inline)) void rl_pass(float *out, int ldo, const void *w, int n, int k,
                                                          const float *ap, int M, float beta, st_dtype dt,
                                                          float *wb, const int NP) {
  const int NB = RL_ACC / NP;
  const size_t esz = dt == ST_F32 ? 4 : 2, ld = (size_t)k * esz;
  const int nq = k / 16;
  for (int n0 = 0; n0 < n; n0 += NB) {
    int nc = n - n0 < NB ? n - n0 : NB;
    const char *rows[RL_ACC];
    for (int j = 0; j < NB; j++) rows[j] = (const char *)w + (size_t)(n0 + (j < nc ? j : 0)) * ld;
    for (int j = 0; j < NB; j++) _mm512_storeu_ps(wb + j * 16, widen16(rows[j], dt));
    const char *pf = n0 + 2 * NB <= n ? (const char *)w + (size_t)(n0 + NB) * ld : NULL;
    int pfn = (int)(((size_t)NB * ld / 64 + nq - 1) / nq); /* lines to prefetch per 16 positions */
    __m512 acc0[RL_ACC], acc1[RL_ACC];
#pragma GCC unroll 24
    for (int j = 0; j < NB; j++) acc0[j] = acc1[j] = _mm512_setzero_ps();
    const float *a = ap;
    for (int q0 = 0; q0 < nq; q0++, a += 256) {
      const float *b = wb + (q0 & 1) * NB * 16;
      float *nx = wb + ((q0 + 1) & 1) * NB * 16;
      size_t qn = (size_t)(q0 + 1 < nq ? q0 + 1 : q0) * 16 * esz;
#pragma GCC unroll 16
      for (int q = 0; q < 16; q++) {
        __m512 av0 = _mm512_loadu_ps(a + q * 16), av1 = av0;
        if (NP == 2) av1 = _mm512_loadu_ps(a + (size_t)k * 16 + q * 16);
        if (q < NB / 2) { /* two rows of the next 16 positions per position */
          _mm512_storeu_ps(nx + (2 * q) * 16, widen16(rows[2 * q] + qn, dt));
          _mm512_storeu_ps(nx + (2 * q + 1) * 16, widen16(rows[2 * q + 1] + qn, dt));
        }
        if (pf && q < pfn) _mm_prefetch(pf + ((size_t)q0 * pfn + q) * 64, _MM_HINT_T1);
#pragma GCC unroll 24
        for (int j = 0; j < NB; j++) {
          __m512 bj = _mm512_set1_ps(b[j * 16 + q]);
          acc0[j] = _mm512_fmadd_ps(bj, av0, acc0[j]);
          if (NP == 2) acc1[j] = _mm512_fmadd_ps(bj, av1, acc1[j]);
        }
      }
    }
    for (int pn = 0; pn < NP; pn++) { /* columns of 16 rows -> rows of out */
      float t[RL_ACC][16] __attribute__((aligned(64)));
#pragma GCC unroll 24
      for (int j = 0; j < NB; j++) _mm512_store_ps(t[j], pn ? acc1[j] : acc0[j]);
      rl_store(out + (size_t)16 * pn * ldo + n0, ldo, (const float(*)[16])t, M - 16 * pn < 16 ? M - 16 * pn : 16,
               nc, beta);
    }
  }
}

#define RL_CASE(NP)                                                                  \
  if (dt == ST_F16) rl_pass(out, ldo, w, n, k, ap, M, beta, ST_F16, scratch, NP);   \
  else if (dt == ST_BF16) rl_pass(out, ldo, w, n, k, ap, M, beta, ST_BF16, scratch, NP); \
  else rl_pass(out, ldo, w, n, k, ap, M, beta, ST_F32, scratch, NP);

static void rl_one(float *out, int ldo, const void *w, int n, int k, const float *ap, int M, float beta, st_dtype dt,
                   float *scratch) {
  RL_CASE(1)
}
static void rl_two(float *out, int ldo, const void *w, int n, int k, const float *ap, int M, float beta, st_dtype dt,
                   float *scratch) {
  RL_CASE(2)
}

/* 32 rows (two panels) per pass; the weights of later passes come from cache
 * (the caller's column chunk is L2-sized) */
static void z_gemm_rl(float *out, int ldo, const void *w, int n, int k, const float *ap, int M, float beta,
                      st_dtype dt, float *scratch) {
  for (int m = 0; m < M; m += 32) {
    int mm = M - m < 32 ? M - m : 32;
    const float *a = ap + (size_t)(m / 16) * k * 16;
    float *o = out + (size_t)m * ldo;
    if (mm > 16) rl_two(o, ldo, w, n, k, a, mm, beta, dt, scratch);
    else rl_one(o, ldo, w, n, k, a, mm, beta, dt, scratch);
  }
}

/* ----------------------------------------------- packed GEMM (12 x 32) */

#define Z_MR 12
#define Z_NR 32

/* bp[p][j] = W[j][p]: 8 columns x 8 positions per transpose (ymm) */
static void z_pack_b(float *bp, const void *w, size_t ldw, int ncols, int kc, st_dtype dt) {
  if (st_is_quant(dt)) {
    k_quant_pack_b(z_widen, z_pack_b, bp, w, ldw, ncols, kc, dt);
    return;
  }
  size_t esz = dt == ST_F32 ? 4 : 2;
  int k8 = kc & ~7;
  for (int g = 0; g < Z_NR; g += 8) {
    const char *rows[8];
    for (int i = 0; i < 8; i++) rows[i] = g + i < ncols ? (const char *)w + (size_t)(g + i) * ldw * esz : NULL;
    if (!rows[0]) { /* a group entirely past the last column */
      for (int p = 0; p < kc; p++) _mm256_storeu_ps(bp + (size_t)p * Z_NR + g, _mm256_setzero_ps());
      continue;
    }
    for (int p = 0; p < k8; p += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; i++)
        r[i] = rows[i] ? widen8((const uint16_t *)(const void *)(rows[i] + (size_t)p * esz), dt) : _mm256_setzero_ps();
      transpose8(r);
      for (int i = 0; i < 8; i++) _mm256_storeu_ps(bp + (size_t)(p + i) * Z_NR + g, r[i]);
    }
    for (int p = k8; p < kc; p++)
      for (int i = 0; i < 8; i++) bp[(size_t)p * Z_NR + g + i] = rows[i] ? w_get(rows[i], (size_t)p, dt) : 0.0f;
  }
}

/* 24 accumulators + 2 B vectors + 1 broadcast of the 32 zmm registers */
static inline __attribute__((always_inline)) void ztile(int kc, const float *ap, const float *bp, float *c,
                                                        size_t ldc, const int MR_, int nr, int acc) {
  __m512 c0[Z_MR], c1[Z_MR];
#pragma GCC unroll 12
  for (int r = 0; r < MR_; r++) c0[r] = c1[r] = _mm512_setzero_ps();
  for (int p = 0; p < kc; p++, ap += Z_MR, bp += Z_NR) {
    __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR_; r++) {
      __m512 a = _mm512_set1_ps(ap[r]);
      c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
    }
  }
  __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
  __mmask16 m1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
#pragma GCC unroll 12
  for (int r = 0; r < MR_; r++) {
    float *o = c + (size_t)r * ldc;
    if (acc) {
      c0[r] = _mm512_add_ps(c0[r], _mm512_maskz_loadu_ps(m0, o));
      c1[r] = _mm512_add_ps(c1[r], _mm512_maskz_loadu_ps(m1, o + 16));
    }
    _mm512_mask_storeu_ps(o, m0, c0[r]);
    _mm512_mask_storeu_ps(o + 16, m1, c1[r]);
  }
}

static void z_tile(int kc, const float *ap, const float *bp, float *c, size_t ldc, int mr, int nr, int acc) {
  switch (mr) {
  case 12: ztile(kc, ap, bp, c, ldc, 12, nr, acc); break;
  case 11: ztile(kc, ap, bp, c, ldc, 11, nr, acc); break;
  case 10: ztile(kc, ap, bp, c, ldc, 10, nr, acc); break;
  case 9: ztile(kc, ap, bp, c, ldc, 9, nr, acc); break;
  case 8: ztile(kc, ap, bp, c, ldc, 8, nr, acc); break;
  case 7: ztile(kc, ap, bp, c, ldc, 7, nr, acc); break;
  case 6: ztile(kc, ap, bp, c, ldc, 6, nr, acc); break;
  case 5: ztile(kc, ap, bp, c, ldc, 5, nr, acc); break;
  case 4: ztile(kc, ap, bp, c, ldc, 4, nr, acc); break;
  case 3: ztile(kc, ap, bp, c, ldc, 3, nr, acc); break;
  case 2: ztile(kc, ap, bp, c, ldc, 2, nr, acc); break;
  default: ztile(kc, ap, bp, c, ldc, 1, nr, acc); break;
  }
}

/* ----------------------------------------------------------- attention */

/* S[t][r] = K[t] . Q[r] (Qt transposed, scaled); 16 rows per zmm, 8 keys per
 * block; an 8-row remainder uses one ymm. */
static void z_attn_scores(float *S, int lds, const float *Qt, int ldq, int R8, const float *K, int T4, int hd) {
  int r = 0;
  for (; r + 16 <= R8; r += 16) {
    int t = 0;
    for (; t + 8 <= T4; t += 8) {
      const float *k0 = K + (size_t)t * hd, *q = Qt + r;
      __m512 a[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; i++) a[i] = _mm512_setzero_ps();
      for (int d = 0; d < hd; d++, q += ldq) {
        __m512 qv = _mm512_loadu_ps(q);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) a[i] = _mm512_fmadd_ps(_mm512_set1_ps(k0[(size_t)i * hd + d]), qv, a[i]);
      }
#pragma GCC unroll 8
      for (int i = 0; i < 8; i++) _mm512_storeu_ps(S + (size_t)(t + i) * lds + r, a[i]);
    }
    for (; t < T4; t += 4) {
      const float *k0 = K + (size_t)t * hd, *q = Qt + r;
      __m512 a[4];
      for (int i = 0; i < 4; i++) a[i] = _mm512_setzero_ps();
      for (int d = 0; d < hd; d++, q += ldq) {
        __m512 qv = _mm512_loadu_ps(q);
        for (int i = 0; i < 4; i++) a[i] = _mm512_fmadd_ps(_mm512_set1_ps(k0[(size_t)i * hd + d]), qv, a[i]);
      }
      for (int i = 0; i < 4; i++) _mm512_storeu_ps(S + (size_t)(t + i) * lds + r, a[i]);
    }
  }
  if (r < R8) /* 8 rows left */
    for (int t = 0; t < T4; t += 4) {
      const float *k0 = K + (size_t)t * hd, *q = Qt + r;
      __m256 a[4];
      for (int i = 0; i < 4; i++) a[i] = _mm256_setzero_ps();
      for (int d = 0; d < hd; d++, q += ldq) {
        __m256 qv = _mm256_loadu_ps(q);
        for (int i = 0; i < 4; i++) a[i] = _mm256_fmadd_ps(_mm256_set1_ps(k0[(size_t)i * hd + d]), qv, a[i]);
      }
      for (int i = 0; i < 4; i++) _mm256_storeu_ps(S + (size_t)(t + i) * lds + r, a[i]);
    }
}

/* R <= 4 rows as row pointers (hd a multiple of 8) */
static void z_attn_scores_few(float *S, int lds, const float *const *q, int R, float scale, const float *K, int T,
                              int hd) {
  int h16 = hd & ~15;
  for (int r = 0; r < R; r++) {
    const float *qv = q[r];
    __m256 qt = hd & 8 ? _mm256_loadu_ps(qv + h16) : _mm256_setzero_ps();
    int t = 0;
    for (; t + 4 <= T; t += 4) {
      const float *k0 = K + (size_t)t * hd;
      __m512 a[4];
      for (int i = 0; i < 4; i++) a[i] = _mm512_setzero_ps();
      for (int d = 0; d < h16; d += 16) {
        __m512 x = _mm512_loadu_ps(qv + d);
        for (int i = 0; i < 4; i++) a[i] = _mm512_fmadd_ps(x, _mm512_loadu_ps(k0 + (size_t)i * hd + d), a[i]);
      }
      for (int i = 0; i < 4; i++) {
        float s = _mm512_reduce_add_ps(a[i]);
        if (hd & 8) s += hsum8(_mm256_mul_ps(qt, _mm256_loadu_ps(k0 + (size_t)i * hd + h16)));
        S[(size_t)(t + i) * lds + r] = scale * s;
      }
    }
    for (; t < T; t++) {
      const float *k0 = K + (size_t)t * hd;
      __m512 a = _mm512_setzero_ps();
      for (int d = 0; d < h16; d += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(qv + d), _mm512_loadu_ps(k0 + d), a);
      float s = _mm512_reduce_add_ps(a);
      if (hd & 8) s += hsum8(_mm256_mul_ps(qt, _mm256_loadu_ps(k0 + h16)));
      S[(size_t)t * lds + r] = scale * s;
    }
  }
}

/* rows r < R8, 16 at a time (a last 8 with a mask) */
static void z_attn_softmax(float *S, int lds, int T, int R8, const float *valid, float *m, float *l, float *corr) {
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  for (int r = 0; r < R8; r += 16) {
    __mmask16 lanes = R8 - r >= 16 ? 0xffff : 0x00ff;
    __m512 vv = _mm512_maskz_loadu_ps(lanes, valid + r), m0 = _mm512_mask_loadu_ps(ninf, lanes, m + r), mx = m0;
    float *s = S + r;
    for (int t = 0; t < T; t++, s += lds) {
      __mmask16 keep = _mm512_cmp_ps_mask(_mm512_set1_ps((float)t), vv, _CMP_LT_OQ) & lanes;
      __m512 x = _mm512_mask_loadu_ps(ninf, keep, s);
      _mm512_mask_storeu_ps(s, lanes, x);
      mx = _mm512_max_ps(mx, x);
    }
    __m512 c = exp16(_mm512_sub_ps(m0, mx)), sum = _mm512_setzero_ps();
    s = S + r;
    for (int t = 0; t < T; t++, s += lds) {
      __m512 p = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, s), mx));
      _mm512_mask_storeu_ps(s, lanes, p);
      sum = _mm512_add_ps(sum, p);
    }
    _mm512_mask_storeu_ps(l + r, lanes, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(lanes, l + r), c, sum));
    _mm512_mask_storeu_ps(m + r, lanes, mx);
    _mm512_mask_storeu_ps(corr + r, lanes, c);
  }
}

/* O[r] = O[r] corr[r] + sum_t P[t][r] V[t]: 4 rows x 64 dims per block
 * (16 accumulators, 4 value loads and 4 broadcasts per key) */
static void z_attn_accum(float *O, const float *P, int ldp, const float *V, int ldv, int T, int R, int hd, const float *corr) {
  if (hd % 16) {
    k_table_avx2.attn_accum(O, P, ldp, V, ldv, T, R, hd, corr);
    return;
  }
  int r = 0;
  for (; r + 4 <= R; r += 4) {
    for (int i = 0; i < hd; i += 64) {
      int nv = hd - i >= 64 ? 4 : (hd - i) / 16;
      __m512 a[4][4];
      for (int q = 0; q < 4; q++) {
        __m512 cq = _mm512_set1_ps(corr[r + q]);
        for (int v = 0; v < 4; v++)
          a[q][v] = v < nv ? _mm512_mul_ps(_mm512_loadu_ps(O + (size_t)(r + q) * hd + i + 16 * v), cq)
                           : _mm512_setzero_ps();
      }
      const float *vp = V + i, *p = P + r;
      if (nv == 4) {
        for (int t = 0; t < T; t++, vp += ldv, p += ldp) {
          __m512 v0 = _mm512_loadu_ps(vp), v1 = _mm512_loadu_ps(vp + 16), v2 = _mm512_loadu_ps(vp + 32),
                 v3 = _mm512_loadu_ps(vp + 48);
#pragma GCC unroll 4
          for (int q = 0; q < 4; q++) {
            __m512 w = _mm512_set1_ps(p[q]);
            a[q][0] = _mm512_fmadd_ps(w, v0, a[q][0]);
            a[q][1] = _mm512_fmadd_ps(w, v1, a[q][1]);
            a[q][2] = _mm512_fmadd_ps(w, v2, a[q][2]);
            a[q][3] = _mm512_fmadd_ps(w, v3, a[q][3]);
          }
        }
      } else {
        for (int t = 0; t < T; t++, vp += ldv, p += ldp)
          for (int q = 0; q < 4; q++) {
            __m512 w = _mm512_set1_ps(p[q]);
            for (int v = 0; v < nv; v++) a[q][v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(vp + 16 * v), a[q][v]);
          }
      }
      for (int q = 0; q < 4; q++)
        for (int v = 0; v < nv; v++) _mm512_storeu_ps(O + (size_t)(r + q) * hd + i + 16 * v, a[q][v]);
    }
  }
  for (; r < R; r++) {
    float *o = O + (size_t)r * hd;
    __m512 c = _mm512_set1_ps(corr[r]);
    for (int i = 0; i < hd; i += 16) {
      __m512 a = _mm512_mul_ps(_mm512_loadu_ps(o + i), c);
      const float *v = V + i, *p = P + r;
      for (int t = 0; t < T; t++, v += ldv, p += ldp) a = _mm512_fmadd_ps(_mm512_set1_ps(*p), _mm512_loadu_ps(v), a);
      _mm512_storeu_ps(o + i, a);
    }
  }
}

/* ---------------------------------------------------------------- peak */

static double z_fma_burn(long iters) {
  __m512 a[12], b = _mm512_set1_ps(0.999f), d = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(1e-3f * i);
  for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], b, d);
  __m512 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return 2.0 * 16 * 12 * (double)iters;
}

#ifdef MFS_AVX512_BF16
/* -------------------------------- int8 GEMM for quantized weights (VNNI)
 *
 * C[r][j] = sum over blocks b of (dot_b(aq_r, w_j) - 128 * sum_b(w_j)) *
 * da[r][b] * dw[j][b], with aq = q + 128 (unsigned for VPDPBUSD). A panel of
 * 32 columns x up to QG_KB blocks is packed into the scratch as
 * bq[b][g][j][4] (group g = weights 4g..4g+3 of column j's block b, one
 * dword per lane: a VPDPBUSD against a broadcast dword of a row), with
 * ws[b][j] = 128 * sum(w) and dw[b][j] = the block's scale. A tile of up to
 * QG_MR rows x 32 columns keeps 2 integer and 2 float accumulators per row:
 * per block 8 x 2 x MR VPDPBUSD (1024 MACs each pair), then per row and
 * vector one subtract, convert and 2 FMAs into the float sums. */
#define QG_MR 6
#define QG_KB 64 /* blocks per packed pass: 2048 positions, 80 KiB of scratch */

static void z_qgemm_quant_a(uint8_t *aq, float *da, const float *a, int r0, int r1, int k) {
  int nb = k / ST_QK;
  const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
  for (int r = r0; r < r1; r++)
    for (int b = 0; b < nb; b++) {
      const float *x = a + (size_t)r * k + (size_t)b * ST_QK;
      __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
      float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
      __m512 id = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
      /* round half even, clamp to +-127 */
      __m512 v0 = _mm512_roundscale_ps(_mm512_mul_ps(x0, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      __m512 v1 = _mm512_roundscale_ps(_mm512_mul_ps(x1, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v0, v0, _CMP_ORD_Q), v0); /* NaN -> 0, as k_qgemm_quant_a */
      v1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v1, v1, _CMP_ORD_Q), v1);
      v0 = _mm512_max_ps(_mm512_min_ps(v0, lim), nlim);
      v1 = _mm512_max_ps(_mm512_min_ps(v1, lim), nlim);
      __m512i off = _mm512_set1_epi32(128);
      uint8_t *q = aq + (size_t)r * k + (size_t)b * ST_QK;
      _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v0), off)));
      _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v1), off)));
      da[(size_t)r * nb + b] = amax / 127.0f;
    }
}

/* One 8 x 8 dword transpose per 8 columns and group of 8 blocks' dwords:
 * column j's block (32 int8, Q4_0 unpacked to n - 8 first) is a row of 8
 * dwords; transposed, row g holds dword g of the 8 columns, which is where
 * the tile wants it. The sums 128 * sum(w) come from VPDPBUSD with ones. */
static void z_qgemm_pack(uint8_t *bq, int32_t *ws, float *dw, const void *w, int ncols, int k, int b0, int b1,
                         st_dtype dt) {
  const float *lut = k_f16_lut();
  size_t bs = st_bytes(dt, ST_QK), rb = st_bytes(dt, (size_t)k);
  const uint8_t *base = w;
  const __m512i ones = _mm512_set1_epi8(1);
  for (int b = b0; b < b1; b++) {
    uint8_t *dst = bq + (size_t)(b - b0) * 8 * 128;
    for (int c = 0; c < 4; c++) {
      __m256 r[8];
      for (int i = 0; i < 8; i++) {
        int j = 8 * c + i;
        if (j >= ncols) {
          r[i] = _mm256_setzero_ps();
          continue;
        }
        const uint8_t *blk = base + (size_t)j * rb + (size_t)b * bs + 2;
        __m256i v;
        if (dt == ST_Q8_0) {
          v = _mm256_loadu_si256((const __m256i *)blk);
        } else {
          __m128i lo, hi;
          q4_unpack(blk, &lo, &hi);
          v = _mm256_set_m128i(hi, lo);
        }
        r[i] = _mm256_castsi256_ps(v);
      }
      transpose8(r);
      for (int g = 0; g < 8; g++) _mm256_storeu_ps((float *)(void *)(dst + g * 128 + c * 32), r[g]);
    }
    __m512i s0 = _mm512_setzero_si512(), s1 = s0;
    for (int g = 0; g < 8; g++) {
      s0 = _mm512_dpbusd_epi32(s0, ones, _mm512_loadu_si512(dst + g * 128));
      s1 = _mm512_dpbusd_epi32(s1, ones, _mm512_loadu_si512(dst + g * 128 + 64));
    }
    _mm512_storeu_si512(ws + (b - b0) * 32, _mm512_slli_epi32(s0, 7));
    _mm512_storeu_si512(ws + (b - b0) * 32 + 16, _mm512_slli_epi32(s1, 7));
    for (int j = 0; j < 32; j++) {
      uint16_t h = 0;
      if (j < ncols) memcpy(&h, base + (size_t)j * rb + (size_t)b * bs, 2);
      dw[(b - b0) * 32 + j] = j < ncols ? lut[h] : 0.0f;
    }
  }
}

static inline __attribute__((always_inline)) void qg_tile(float *c, size_t ldc, const uint8_t *aq, const float *da,
                                                          int k, int b0, int b1, const uint8_t *bq,
                                                          const int32_t *ws, const float *dw, const int MR, int nc,
                                                          int acc) {
  int nb = k / ST_QK;
  __mmask16 m0 = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1), m1 = nc >= 32 ? 0xffff : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
  __m512 f0[QG_MR], f1[QG_MR];
  for (int r = 0; r < MR; r++) {
    f0[r] = acc ? _mm512_maskz_loadu_ps(m0, c + (size_t)r * ldc) : _mm512_setzero_ps();
    f1[r] = acc ? _mm512_maskz_loadu_ps(m1, c + (size_t)r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int b = b0; b < b1; b++) {
    __m512i s0[QG_MR], s1[QG_MR];
    for (int r = 0; r < MR; r++) s0[r] = s1[r] = _mm512_setzero_si512();
    const uint8_t *bb = bq + (size_t)(b - b0) * 8 * 128;
    for (int g = 0; g < 8; g++) {
      __m512i B0 = _mm512_loadu_si512(bb + g * 128), B1 = _mm512_loadu_si512(bb + g * 128 + 64);
      for (int r = 0; r < MR; r++) {
        int32_t av;
        memcpy(&av, aq + (size_t)r * k + (size_t)b * ST_QK + 4 * g, 4);
        __m512i A = _mm512_set1_epi32(av);
        s0[r] = _mm512_dpbusd_epi32(s0[r], A, B0);
        s1[r] = _mm512_dpbusd_epi32(s1[r], A, B1);
      }
    }
    const int32_t *wb = ws + (b - b0) * 32;
    const float *db = dw + (b - b0) * 32;
    __m512i W0 = _mm512_loadu_si512(wb), W1 = _mm512_loadu_si512(wb + 16);
    __m512 D0 = _mm512_loadu_ps(db), D1 = _mm512_loadu_ps(db + 16);
    for (int r = 0; r < MR; r++) {
      __m512 a = _mm512_set1_ps(da[(size_t)r * nb + b]);
      f0[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(s0[r], W0)), _mm512_mul_ps(D0, a), f0[r]);
      f1[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(s1[r], W1)), _mm512_mul_ps(D1, a), f1[r]);
    }
  }
  for (int r = 0; r < MR; r++) {
    _mm512_mask_storeu_ps(c + (size_t)r * ldc, m0, f0[r]);
    if (m1) _mm512_mask_storeu_ps(c + (size_t)r * ldc + 16, m1, f1[r]);
  }
}

static void z_qgemm_cols(float *c, size_t ldc, const uint8_t *aq, const float *da, int rows, const void *w,
                         int ncols, int k, st_dtype dt, float beta, float *scratch) {
  int nb = k / ST_QK;
  if (beta != 0.0f && beta != 1.0f)
    for (int r = 0; r < rows; r++)
      for (int j = 0; j < ncols; j++) c[(size_t)r * ldc + j] *= beta;
  uint8_t *bq = (uint8_t *)scratch;
  int32_t *ws = (int32_t *)(bq + (size_t)QG_KB * 8 * 128);
  float *dw = (float *)(ws + QG_KB * 32);
  for (int j0 = 0; j0 < ncols; j0 += 32) {
    int nc = ncols - j0 < 32 ? ncols - j0 : 32;
    const void *wj = st_at(w, dt, (size_t)j0, (size_t)k, 0);
    for (int b0 = 0; b0 < nb; b0 += QG_KB) {
      int b1 = nb - b0 < QG_KB ? nb : b0 + QG_KB, acc = b0 > 0 || beta != 0.0f;
      z_qgemm_pack(bq, ws, dw, wj, nc, k, b0, b1, dt);
      int r0 = 0;
      for (; r0 + QG_MR <= rows; r0 += QG_MR)
        qg_tile(c + (size_t)r0 * ldc + j0, ldc, aq + (size_t)r0 * k, da + (size_t)r0 * nb, k, b0, b1, bq, ws, dw,
                QG_MR, nc, acc);
      switch (rows - r0) {
#define QG_REST(n) \
  case n: \
    qg_tile(c + (size_t)r0 * ldc + j0, ldc, aq + (size_t)r0 * k, da + (size_t)r0 * nb, k, b0, b1, bq, ws, dw, n, nc, acc); \
    break;
        QG_REST(1)
        QG_REST(2)
        QG_REST(3)
        QG_REST(4)
        QG_REST(5)
#undef QG_REST
      default: break;
      }
    }
  }
}
#endif

const k_table TABLE = {
    .name = LEVEL,
    .gemm_mr = Z_MR,
    .gemm_nr = Z_NR,
    .few_max = 16,
    .rl_min = 12, /* measured (bench batch, small F16, 2 threads): 12 rows 1.25x gemm_few, */
    .rl_max = 128, /* 16 1.5x, 32 1.45x, 64-128 1.05-1.2x the packed GEMM; 192 and prefill below it */
    .gemv = z_gemv,
    .gemm_few = z_gemm_few,
    .gemm_rl = z_gemm_rl,
    .gemm_pack_b = z_pack_b,
    .gemm_tile = z_tile,
    .widen = z_widen,
    .kv_dequant = z_kv_dequant,
    .f32_to_f16 = z_f32_to_f16,
    .rope_to = z_rope_to,
    .swiglu = z_swiglu,
    .vmax = z_vmax,
    .attn_scores = z_attn_scores,
    .attn_scores_few = z_attn_scores_few,
    .attn_softmax = z_attn_softmax,
    .attn_accum = z_attn_accum,
    .fma_burn = z_fma_burn,
#ifdef MFS_AVX512_BF16
    .qgemm_cols = z_qgemm_cols,
    .qgemm_quant_a = z_qgemm_quant_a,
#endif
};
