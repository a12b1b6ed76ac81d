/* kernels.c: small elementwise kernels of the forward pass (AVX2/FMA/F16C
 * where it matters). Each is a plain loop the reference tests pin down. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "engine_int.h"

void k_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
  double ss = 0;
  for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
  float r = (float)(1.0 / sqrt(ss / n + eps));
  for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* cs: [cos(half)][sin(half)] for one position. rotate_half form:
 * out[i]      = x[i] cos_i - x[i+half] sin_i
 * out[i+half] = x[i+half] cos_i + x[i] sin_i */
void k_rope_to(float *out, const float *x, const float *cs, int hd) {
  int half = hd / 2;
  const float *c = cs, *s = cs + half;
  int i = 0;
  for (; i + 8 <= half; i += 8) {
    __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + half);
    __m256 cv = _mm256_loadu_ps(c + i), sv = _mm256_loadu_ps(s + i);
    _mm256_storeu_ps(out + i, _mm256_fnmadd_ps(b, sv, _mm256_mul_ps(a, cv)));
    _mm256_storeu_ps(out + i + half, _mm256_fmadd_ps(a, sv, _mm256_mul_ps(b, cv)));
  }
  for (; i < half; i++) {
    float a = x[i], b = x[i + half];
    out[i] = a * c[i] - b * s[i];
    out[i + half] = b * c[i] + a * s[i];
  }
}

void k_rope(float *x, const float *cs, int hd) {
  float tmp[1024];
  if (hd <= 1024) {
    k_rope_to(tmp, x, cs, hd);
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

void k_swiglu(float *g, const float *u, int n) {
  for (int i = 0; i < n; i++) {
    float x = g[i];
    g[i] = x / (1.0f + expf(-x)) * u[i];
  }
}

void k_f16_to_f32(float *out, const uint16_t *in, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + i))));
  for (; i < n; i++) out[i] = _cvtsh_ss(in[i]);
}

void k_f32_to_f16(uint16_t *out, const float *in, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++) out[i] = _cvtss_sh(in[i], _MM_FROUND_TO_NEAREST_INT);
}

float k_f16_to_f32_1(uint16_t h) { return _cvtsh_ss(h); }

float k_bf16_to_f32_1(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* 8 consecutive weights as F32 (dt ST_F32 reads floats) */
static inline __m256 widen8(const uint16_t *p, st_dtype dt) {
  if (dt == ST_F32) return _mm256_loadu_ps((const float *)p);
  __m128i h = _mm_loadu_si128((const __m128i *)p);
  if (dt == ST_F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline float widen1(uint16_t h, st_dtype dt) { return dt == ST_F16 ? k_f16_to_f32_1(h) : k_bf16_to_f32_1(h); }

/* element j of row w (any dtype); the row pointer is typed uint16_t for
 * 16-bit weights and reinterpreted for F32 */
#define W_AT(w, j, dt) ((dt) == ST_F32 ? (const uint16_t *)((const float *)(const void *)(w) + (j)) : (w) + (j))
#define W_ROW(w, i, k, dt) ((dt) == ST_F32 ? (const uint16_t *)((const float *)(const void *)(w) + (size_t)(i) * (k)) : (w) + (size_t)(i) * (k))
static inline float wval(const uint16_t *w, int j, st_dtype dt) {
  if (dt == ST_F32) return ((const float *)(const void *)w)[j];
  return widen1(w[j], dt);
}

static inline float hsum8(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}

/* Four rows at a time share each load of x; two accumulators per row hide
 * the FMA latency. The loop streams W once: this is the decode hot path.
 * Works for F32 rows too (dt ST_F32, w reinterpreted). */
static inline void gemv_rows(float *y, const uint16_t *w, int n, int k, const float *x, float beta, st_dtype dt) {
  int i = 0;
  int k16 = k & ~15;
  for (; i + 4 <= n; i += 4) {
    const uint16_t *w0 = W_ROW(w, i, k, dt), *w1 = W_ROW(w, i + 1, k, dt), *w2 = W_ROW(w, i + 2, k, dt),
                   *w3 = W_ROW(w, i + 3, k, dt);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int j = 0; j < k16; j += 16) {
      __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
      a0 = _mm256_fmadd_ps(widen8(W_AT(w0, j, dt), dt), x0, a0);
      b0 = _mm256_fmadd_ps(widen8(W_AT(w0, j + 8, dt), dt), x1, b0);
      a1 = _mm256_fmadd_ps(widen8(W_AT(w1, j, dt), dt), x0, a1);
      b1 = _mm256_fmadd_ps(widen8(W_AT(w1, j + 8, dt), dt), x1, b1);
      a2 = _mm256_fmadd_ps(widen8(W_AT(w2, j, dt), dt), x0, a2);
      b2 = _mm256_fmadd_ps(widen8(W_AT(w2, j + 8, dt), dt), x1, b2);
      a3 = _mm256_fmadd_ps(widen8(W_AT(w3, j, dt), dt), x0, a3);
      b3 = _mm256_fmadd_ps(widen8(W_AT(w3, j + 8, dt), dt), x1, b3);
    }
    float s[4] = {hsum8(_mm256_add_ps(a0, b0)), hsum8(_mm256_add_ps(a1, b1)), hsum8(_mm256_add_ps(a2, b2)),
                  hsum8(_mm256_add_ps(a3, b3))};
    const uint16_t *rows[4] = {w0, w1, w2, w3};
    for (int r = 0; r < 4; r++) {
      for (int j = k16; j < k; j++) s[r] += wval(rows[r], j, dt) * x[j];
      y[i + r] = beta == 0.0f ? s[r] : beta * y[i + r] + s[r];
    }
  }
  for (; i < n; i++) {
    const uint16_t *wr = W_ROW(w, i, k, dt);
    __m256 a = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= k; j += 8) a = _mm256_fmadd_ps(widen8(W_AT(wr, j, dt), dt), _mm256_loadu_ps(x + j), a);
    float s = hsum8(a);
    for (; j < k; j++) s += wval(wr, j, dt) * x[j];
    y[i] = beta == 0.0f ? s : beta * y[i] + s;
  }
}

/* one instantiation per dtype, so the dtype test folds away in the loop */
void k_gemv16(float *y, const uint16_t *w, int n, int k, const float *x, float beta, st_dtype dt) {
  if (dt == ST_F16) gemv_rows(y, w, n, k, x, beta, ST_F16);
  else gemv_rows(y, w, n, k, x, beta, ST_BF16);
}

void k_gemv32(float *y, const float *w, int n, int k, const float *x, float beta) {
  gemv_rows(y, (const uint16_t *)(const void *)w, n, k, x, beta, ST_F32);
}

void k_widen16(float *out, const uint16_t *w, size_t n, st_dtype dt) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, widen8(w + i, dt));
  for (; i < n; i++) out[i] = widen1(w[i], dt);
}

/* exp for 8 floats (Cephes' expf: range reduction by ln 2, degree-5
 * polynomial), relative error ~2e-7; inputs below -87 give 0. */
static inline __m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  __m256 x2 = _mm256_mul_ps(x, x);
  y = _mm256_fmadd_ps(y, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* One query row against one tile of keys/values, online softmax:
 *   s_j = q . K_j (q pre-scaled),  m' = max(m, max_j s_j),
 *   o <- o * e^(m - m') + sum_j e^(s_j - m') V_j,  l <- l * e^(m - m') + sum_j e^(s_j - m')
 * o[hd], K[cnt][hd], V[cnt][hd], s[cnt] scratch. */
void k_attn_tile(float *o, float *m, float *l, const float *q, const float *K, const float *V, int cnt, int hd,
                 float *s) {
  float mx = -INFINITY;
  if ((hd & 7) == 0) {
    for (int j = 0; j < cnt; j++) {
      const float *k = K + (size_t)j * hd;
      __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(k));
      for (int i = 8; i < hd; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), acc);
      s[j] = hsum8(acc);
      mx = s[j] > mx ? s[j] : mx;
    }
  } else {
    for (int j = 0; j < cnt; j++) {
      float a = 0;
      for (int i = 0; i < hd; i++) a += q[i] * K[(size_t)j * hd + i];
      s[j] = a;
      mx = a > mx ? a : mx;
    }
  }
  float m_new = mx > *m ? mx : *m;
  float corr = *m == -INFINITY ? 0.0f : expf(*m - m_new);
  __m256 vm = _mm256_set1_ps(m_new), vsum = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= cnt; j += 8) {
    __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
    _mm256_storeu_ps(s + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = hsum8(vsum);
  for (; j < cnt; j++) {
    s[j] = expf(s[j] - m_new);
    sum += s[j];
  }
  *l = *l * corr + sum;
  *m = m_new;
  if (hd == 64) { /* the common width: o stays in registers across the tile */
    __m256 o0 = _mm256_mul_ps(_mm256_loadu_ps(o), _mm256_set1_ps(corr));
    __m256 o1 = _mm256_mul_ps(_mm256_loadu_ps(o + 8), _mm256_set1_ps(corr));
    __m256 o2 = _mm256_mul_ps(_mm256_loadu_ps(o + 16), _mm256_set1_ps(corr));
    __m256 o3 = _mm256_mul_ps(_mm256_loadu_ps(o + 24), _mm256_set1_ps(corr));
    __m256 o4 = _mm256_mul_ps(_mm256_loadu_ps(o + 32), _mm256_set1_ps(corr));
    __m256 o5 = _mm256_mul_ps(_mm256_loadu_ps(o + 40), _mm256_set1_ps(corr));
    __m256 o6 = _mm256_mul_ps(_mm256_loadu_ps(o + 48), _mm256_set1_ps(corr));
    __m256 o7 = _mm256_mul_ps(_mm256_loadu_ps(o + 56), _mm256_set1_ps(corr));
    for (int jj = 0; jj < cnt; jj++) {
      const float *v = V + (size_t)jj * 64;
      __m256 p = _mm256_set1_ps(s[jj]);
      o0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v), o0);
      o1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8), o1);
      o2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 16), o2);
      o3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 24), o3);
      o4 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 32), o4);
      o5 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 40), o5);
      o6 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 48), o6);
      o7 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 56), o7);
    }
    _mm256_storeu_ps(o, o0);
    _mm256_storeu_ps(o + 8, o1);
    _mm256_storeu_ps(o + 16, o2);
    _mm256_storeu_ps(o + 24, o3);
    _mm256_storeu_ps(o + 32, o4);
    _mm256_storeu_ps(o + 40, o5);
    _mm256_storeu_ps(o + 48, o6);
    _mm256_storeu_ps(o + 56, o7);
    return;
  }
  for (int i = 0; i < hd; i++) o[i] *= corr;
  if ((hd & 7) == 0) {
    for (int i = 0; i < hd; i += 8) {
      __m256 acc = _mm256_loadu_ps(o + i);
      for (int jj = 0; jj < cnt; jj++)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(s[jj]), _mm256_loadu_ps(V + (size_t)jj * hd + i), acc);
      _mm256_storeu_ps(o + i, acc);
    }
  } else {
    for (int jj = 0; jj < cnt; jj++)
      for (int i = 0; i < hd; i++) o[i] += s[jj] * V[(size_t)jj * hd + i];
  }
}

/* A few rows of input against the same weights (batched decode of 2-8
 * sequences): each weight vector is widened once and used for every input
 * row, so W is streamed once instead of being widened and repacked for a
 * GEMM. out[m][i] (row stride ldo) = beta * out + W[i] . in[m]. */
static inline void gemm_few(float *out, int ldo, const uint16_t *w, int n, int k, const float *in, int M, float beta,
                            st_dtype dt) {
  int k8 = k & ~7;
  for (int i = 0; i < n; i++) {
    const uint16_t *wr = W_ROW(w, i, k, dt);
    __m256 acc[8];
    for (int m = 0; m < M; m++) acc[m] = _mm256_setzero_ps();
    for (int j = 0; j < k8; j += 8) {
      __m256 wv = widen8(W_AT(wr, j, dt), dt);
      for (int m = 0; m < M; m++) acc[m] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(in + (size_t)m * k + j), acc[m]);
    }
    for (int m = 0; m < M; m++) {
      float s = hsum8(acc[m]);
      for (int j = k8; j < k; j++) s += wval(wr, j, dt) * in[(size_t)m * k + j];
      float *o = out + (size_t)m * ldo + i;
      *o = beta == 0.0f ? s : beta * *o + s;
    }
  }
}

#define GEMM_FEW_CASE(MM)                                                        \
  case MM:                                                                       \
    if (dt == ST_F16) gemm_few(out, ldo, w, n, k, in, MM, beta, ST_F16);         \
    else if (dt == ST_BF16) gemm_few(out, ldo, w, n, k, in, MM, beta, ST_BF16);  \
    else gemm_few(out, ldo, w, n, k, in, MM, beta, ST_F32);                      \
    break;

void k_gemm_few(float *out, int ldo, const void *w, int n, int k, const float *in, int M, float beta, st_dtype dt) {
  switch (M) {
    GEMM_FEW_CASE(1)
    GEMM_FEW_CASE(2)
    GEMM_FEW_CASE(3)
    GEMM_FEW_CASE(4)
    GEMM_FEW_CASE(5)
    GEMM_FEW_CASE(6)
    GEMM_FEW_CASE(7)
    GEMM_FEW_CASE(8)
  }
}
