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

void k_softmax(float *x, int n) {
  float mx = -INFINITY;
  for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  double sum = 0;
  for (int i = 0; i < n; i++) {
    x[i] = expf(x[i] - mx);
    sum += x[i];
  }
  float inv = (float)(1.0 / sum);
  for (int i = 0; i < n; i++) x[i] *= inv;
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

void k_bf16_to_f32(float *out, const uint16_t *in, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = k_bf16_to_f32_1(in[i]);
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
