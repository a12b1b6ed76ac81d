/* x86_ymm.h: 256-bit helpers the AVX2 and AVX-512 levels share (static
 * inline: each level's file compiles them with its own target flags). */
#ifndef MFS_ARCH_X86_YMM_H
#define MFS_ARCH_X86_YMM_H

#include <immintrin.h>

#include "kernels.h"

/* 8 consecutive weights as F32 (dt ST_F32 reads floats) */
static inline __m256 widen8(const uint16_t *p, st_dtype dt) {
  if (dt == ST_F32) return _mm256_loadu_ps((const float *)p);
  __m128i h = _mm_loadu_si128((const __m128i *)p);
  if (dt == ST_F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline float widen1(uint16_t h, st_dtype dt) { return dt == ST_F16 ? _cvtsh_ss(h) : k_bf16_to_f32_1(h); }

/* element j of row w (any dtype); the row pointer is typed uint16_t for
 * 16-bit weights and reinterpreted for F32 */
#define W_AT(w, j, dt) ((dt) == ST_F32 ? (const uint16_t *)((const float *)(const void *)(w) + (j)) : (w) + (j))
#define W_ROW(w, i, k, dt) ((dt) == ST_F32 ? (const uint16_t *)((const float *)(const void *)(w) + (size_t)(i) * (k)) : (w) + (size_t)(i) * (k))
static inline float wval(const uint16_t *w, int j, st_dtype dt) {
  if (dt == ST_F32) return ((const float *)(const void *)w)[j];
  return widen1(w[j], dt);
}

/* A Q4_0 block's 16 bytes (engine_int.h) as its 32 weights n - 8 in int8:
 * weights 0..15 (low nibbles) in *lo, 16..31 (high nibbles) in *hi */
static inline void q4_unpack(const uint8_t *q16, __m128i *lo, __m128i *hi) {
  const __m128i m4 = _mm_set1_epi8(15), e8 = _mm_set1_epi8(8);
  __m128i q = _mm_loadu_si128((const __m128i *)q16);
  *lo = _mm_sub_epi8(_mm_and_si128(q, m4), e8);
  *hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), e8);
}

static inline float hsum8(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
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

/* r[i] <- column i of the 8x8 block r (standard unpack/shuffle/permute) */
static inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int i = 0; i < 4; i++) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

/* The rows-on-lanes GEMMs' store (gemm_rl): t[j][m] is weight row j's
 * product with panel row m; out[m][0..nc) = (beta *) out + t[..][m] for the
 * panel's mr rows */
static inline void rl_store(float *out, int ldo, const float (*t)[16], int mr, int nc, float beta) {
  for (int m = 0; m < mr; m++) {
    float *o = out + (size_t)m * ldo;
    if (beta == 0.0f)
      for (int j = 0; j < nc; j++) o[j] = t[j][m];
    else
      for (int j = 0; j < nc; j++) o[j] = beta * o[j] + t[j][m];
  }
}

#endif
