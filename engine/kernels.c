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
