/* x86_avx2.c: the AVX2 + FMA + F16C level (kernels.h). Compiled with
 * -mavx2 -mfma -mf16c; dispatch.c only selects it on a CPU that has all
 * three. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "x86_ymm.h"

static void a2_rope_to(float *out, const float *x, const float *cs, int hd) {
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

static void a2_f32_to_f16(uint16_t *out, const float *in, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++) out[i] = _cvtss_sh(in[i], _MM_FROUND_TO_NEAREST_INT);
}





/* Rows are short (k = 512: 1 KB), too short for the hardware prefetcher to
 * lock on to each; the block of 4 is one contiguous run, so prefetch that
 * run a fixed distance ahead, into L2 (T1): measured on a Xeon with AVX-512
 * (2026-12-07, medium F16 batch-1 decode, 1 thread), a T0 prefetch at 8 KiB
 * gained nothing over none (22.7 vs 22.2 tokens/s) and T1 at 8 KiB reached
 * 30.8, the read-bandwidth ceiling; 2 and 4 KiB with T1 fell short (26-28). */
#define GEMV_PREFETCH 8192

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
    /* the 4 rows are one contiguous run: prefetch it ahead (see GEMV_PREFETCH) */
    const size_t esz = dt == ST_F32 ? 4 : 2;
    const char *pf = (const char *)w0 + GEMV_PREFETCH;
    for (int j = 0; j < k16; j += 16) {
      for (size_t b = 0; b < 64 * esz; b += 64) _mm_prefetch(pf + (size_t)j * 4 * esz + b, _MM_HINT_T1);
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

/* BF16 rows without a widening instruction: a bf16 is the high half of an
 * f32, so interleaving 16 weights with zeros (vpunpcklwd / vpunpckhwd, one
 * shuffle per 8) yields them as f32, in the order [0-3, 8-11] and [4-7,
 * 12-15] within each 16; x is permuted the same way once per call. Half the
 * vector work per weight of the zero-extend-and-shift path, which made the
 * decode GEMV compute-bound (~20 GB/s on one core against ~50 of reads). */
#define GEMV_BF16_MAX_K 16384
static void gemv_bf16(float *y, const uint16_t *w, int n, int k, const float *x, float beta) {
  int k16 = k & ~15;
  float xp[k16 > 0 ? k16 : 1];
  for (int j = 0; j < k16; j += 16) {
    __m256 lo = _mm256_loadu_ps(x + j), hi = _mm256_loadu_ps(x + j + 8);
    _mm256_storeu_ps(xp + j, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(xp + j + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
  }
  const __m256i z = _mm256_setzero_si256();
#define BF_LO(v) _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v))
#define BF_HI(v) _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v))
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint16_t *w0 = w + (size_t)i * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    const char *pf = (const char *)w0 + GEMV_PREFETCH; /* the 4 rows are contiguous: 128 B per step */
    for (int j = 0; j < k16; j += 16) {
      _mm_prefetch(pf + (size_t)j * 8, _MM_HINT_T1);
      _mm_prefetch(pf + (size_t)j * 8 + 64, _MM_HINT_T1);
      __m256 x0 = _mm256_loadu_ps(xp + j), x1 = _mm256_loadu_ps(xp + j + 8);
      __m256i v0 = _mm256_loadu_si256((const __m256i *)(w0 + j)), v1 = _mm256_loadu_si256((const __m256i *)(w1 + j));
      __m256i v2 = _mm256_loadu_si256((const __m256i *)(w2 + j)), v3 = _mm256_loadu_si256((const __m256i *)(w3 + j));
      a0 = _mm256_fmadd_ps(BF_LO(v0), x0, a0);
      b0 = _mm256_fmadd_ps(BF_HI(v0), x1, b0);
      a1 = _mm256_fmadd_ps(BF_LO(v1), x0, a1);
      b1 = _mm256_fmadd_ps(BF_HI(v1), x1, b1);
      a2 = _mm256_fmadd_ps(BF_LO(v2), x0, a2);
      b2 = _mm256_fmadd_ps(BF_HI(v2), x1, b2);
      a3 = _mm256_fmadd_ps(BF_LO(v3), x0, a3);
      b3 = _mm256_fmadd_ps(BF_HI(v3), x1, b3);
    }
    float s[4] = {hsum8(_mm256_add_ps(a0, b0)), hsum8(_mm256_add_ps(a1, b1)), hsum8(_mm256_add_ps(a2, b2)),
                  hsum8(_mm256_add_ps(a3, b3))};
    const uint16_t *rows[4] = {w0, w1, w2, w3};
    for (int r = 0; r < 4; r++) {
      for (int j = k16; j < k; j++) s[r] += k_bf16_to_f32_1(rows[r][j]) * x[j];
      y[i + r] = beta == 0.0f ? s[r] : beta * y[i + r] + s[r];
    }
  }
  for (; i < n; i++) {
    const uint16_t *wr = w + (size_t)i * k;
    __m256 a = _mm256_setzero_ps(), b = a;
    for (int j = 0; j < k16; j += 16) {
      __m256i v = _mm256_loadu_si256((const __m256i *)(wr + j));
      a = _mm256_fmadd_ps(BF_LO(v), _mm256_loadu_ps(xp + j), a);
      b = _mm256_fmadd_ps(BF_HI(v), _mm256_loadu_ps(xp + j + 8), b);
    }
    float t = hsum8(_mm256_add_ps(a, b));
    for (int j = k16; j < k; j++) t += k_bf16_to_f32_1(wr[j]) * x[j];
    y[i] = beta == 0.0f ? t : beta * y[i] + t;
  }
#undef BF_LO
#undef BF_HI
}

static void a2_widen(float *out, const void *in, size_t n, st_dtype dt);

/* Quantized rows fused (x86_avx512.c's gemv_q_rows, 8 lanes): per block
 * and row, Q8_0 4 sign-extends + 4 converts + 4 FMAs + 1; Q4_0 2
 * zero-extends of the packed bytes, masks and shifts, 4 converts, 4 FMAs +
 * 1, with "- 8" folded in as -8 * (x0 + x1 + x2 + x3) per block. */
#define A2Q_MAX_BLOCKS 512
static inline __attribute__((always_inline)) void gemv_q_rows(float *y, const uint8_t *w, size_t rb, int nb,
                                                              const float *x, float beta, const int R,
                                                              const st_dtype dt) {
  const float *lut = k_f16_lut();
  const size_t bs = dt == ST_Q8_0 ? 34 : 18;
  float sc[4][A2Q_MAX_BLOCKS];
  for (int r = 0; r < R; r++)
    for (int b = 0; b < nb; b++) sc[r][b] = lut[k_ld16(w + r * rb + (size_t)b * bs)];
  __m256 acc[4];
  for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
  const uint8_t *pf = w + GEMV_PREFETCH;
  const __m256i lo4 = _mm256_set1_epi32(15);
  for (int b = 0; b < nb; b++) {
    for (int l = 0; l < R * (int)bs; l += 64) _mm_prefetch((const char *)pf + (size_t)b * R * bs + l, _MM_HINT_T1);
    const float *xb = x + 32 * b;
    __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
           x3 = _mm256_loadu_ps(xb + 24);
    __m256 m8s = dt == ST_Q4_0
                     ? _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)), _mm256_set1_ps(-8.0f))
                     : x0;
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      const uint8_t *p = w + r * rb + (size_t)b * bs + 2;
      __m256 t;
      if (dt == ST_Q8_0) {
        __m256 q0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
        __m256 q1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8))));
        __m256 q2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 16))));
        __m256 q3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 24))));
        t = _mm256_fmadd_ps(q1, x1, _mm256_mul_ps(q0, x0));
        t = _mm256_fmadd_ps(q3, x3, _mm256_fmadd_ps(q2, x2, t));
      } else {
        __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
        __m256i v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
        __m256 l0 = _mm256_cvtepi32_ps(_mm256_and_si256(v0, lo4)), l1 = _mm256_cvtepi32_ps(_mm256_and_si256(v1, lo4));
        __m256 h0 = _mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)), h1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4));
        t = _mm256_fmadd_ps(l1, x1, _mm256_fmadd_ps(l0, x0, m8s));
        t = _mm256_fmadd_ps(h1, x3, _mm256_fmadd_ps(h0, x2, t));
      }
      acc[r] = _mm256_fmadd_ps(t, _mm256_broadcast_ss(&sc[r][b]), acc[r]);
    }
  }
  for (int r = 0; r < R; r++) {
    float s = hsum8(acc[r]);
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

/* one instantiation per dtype, so the dtype test folds away in the loop */
static void a2_gemv(float *y, const void *wv, int n, int k, const float *x, float beta, st_dtype dt) {
  if (st_is_quant(dt)) {
    if (k / ST_QK > A2Q_MAX_BLOCKS) k_quant_gemv(a2_widen, a2_gemv, y, wv, n, k, x, beta, dt);
    else if (dt == ST_Q8_0) gemv_q(y, wv, n, k, x, beta, ST_Q8_0);
    else gemv_q(y, wv, n, k, x, beta, ST_Q4_0);
    return;
  }
  const uint16_t *w = wv;
  if (dt == ST_F32) gemv_rows(y, w, n, k, x, beta, ST_F32);
  else if (dt == ST_F16) gemv_rows(y, w, n, k, x, beta, ST_F16);
  else if (k <= GEMV_BF16_MAX_K) gemv_bf16(y, w, n, k, x, beta);
  else gemv_rows(y, w, n, k, x, beta, ST_BF16);
}

static void a2_kv_dequant(float *out, const int8_t *q, const uint16_t *s, int n, int group) {
  if (group % 8) {
    k_gen_kv_dequant(out, q, s, n, group);
    return;
  }
  for (int g0 = 0; g0 < n; g0 += group) {
    __m256 d = _mm256_set1_ps(_cvtsh_ss(s[g0 / group]));
    for (int i = g0; i < g0 + group; i += 8) {
      __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)));
      _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(v), d));
    }
  }
}

/* quantized blocks (engine_int.h), n % ST_QK == 0 */
static void a2_dequant(float *out, const void *in, size_t n, st_dtype dt) {
  const uint8_t *b = in;
  size_t bs = dt == ST_Q8_0 ? 34 : 18;
  for (size_t i = 0; i < n; i += ST_QK, b += bs) {
    __m256 d = _mm256_set1_ps(_cvtsh_ss(k_ld16(b)));
    __m128i q0, q1;
    if (dt == ST_Q8_0) {
      q0 = _mm_loadu_si128((const __m128i *)(b + 2));
      q1 = _mm_loadu_si128((const __m128i *)(b + 18));
    } else {
      q4_unpack(b + 2, &q0, &q1);
    }
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q0)), d));
    _mm256_storeu_ps(out + i + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q0, 8))), d));
    _mm256_storeu_ps(out + i + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q1)), d));
    _mm256_storeu_ps(out + i + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q1, 8))), d));
  }
}

static void a2_widen(float *out, const void *in, size_t n, st_dtype dt) {
  if (st_is_quant(dt)) {
    a2_dequant(out, in, n, dt);
    return;
  }
  if (dt == ST_F32) {
    memcpy(out, in, n * sizeof *out);
    return;
  }
  const uint16_t *w = in;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, widen8(w + i, dt));
  for (; i < n; i++) out[i] = widen1(w[i], dt);
}


/* Attention on one tile of keys for R query rows (tokens x heads), in three
 * passes that keep the FMA units busy (flash-attention's inner loop,
 * register-blocked, with the rows along the vector lanes):
 *
 *   k_attn_scores:  S[t][r] = K[t] . Q[r]          (4 keys x 16 rows per block)
 *   k_attn_softmax: online-softmax update of 8 rows at a time: m' = max(m,
 *                   max_t S), S[t] <- e^(S[t] - m'), l <- l e^(m - m') + sum_t S[t]
 *   k_attn_accum:   O[r] <- O[r] corr[r] + sum_t S[t][r] V[t]   (2 rows x 32 dims)
 *
 * Q arrives transposed (Qt[d][r], once per item), so one broadcast of a key
 * element feeds 8 rows' scores at once: no horizontal sums, and keys and
 * values are used as the cache stores them (row-major). m starts at a finite
 * -1e30 (not -inf), so fully masked rows never produce NaN. */

/* S[t*lds + r] for t < T4 (a multiple of 4; K has T4 finite rows) and
 * r < R8 (a multiple of 8; Qt[d*ldq + r] finite up to R8). */
static void a2_attn_scores(float *S, int lds, const float *Qt, int ldq, int R8, const float *K, int T4, int hd) {
  int r = 0;
  for (; r + 16 <= R8; r += 16)
    for (int t = 0; t < T4; t += 4) {
      const float *k0 = K + (size_t)t * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
      const float *q = Qt + r;
      __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
      for (int d = 0; d < hd; d++, q += ldq) {
        __m256 q0 = _mm256_loadu_ps(q), q1 = _mm256_loadu_ps(q + 8), k;
        k = _mm256_broadcast_ss(k0 + d);
        a0 = _mm256_fmadd_ps(k, q0, a0);
        b0 = _mm256_fmadd_ps(k, q1, b0);
        k = _mm256_broadcast_ss(k1 + d);
        a1 = _mm256_fmadd_ps(k, q0, a1);
        b1 = _mm256_fmadd_ps(k, q1, b1);
        k = _mm256_broadcast_ss(k2 + d);
        a2 = _mm256_fmadd_ps(k, q0, a2);
        b2 = _mm256_fmadd_ps(k, q1, b2);
        k = _mm256_broadcast_ss(k3 + d);
        a3 = _mm256_fmadd_ps(k, q0, a3);
        b3 = _mm256_fmadd_ps(k, q1, b3);
      }
      float *s = S + (size_t)t * lds + r;
      _mm256_storeu_ps(s, a0), _mm256_storeu_ps(s + 8, b0), s += lds;
      _mm256_storeu_ps(s, a1), _mm256_storeu_ps(s + 8, b1), s += lds;
      _mm256_storeu_ps(s, a2), _mm256_storeu_ps(s + 8, b2), s += lds;
      _mm256_storeu_ps(s, a3), _mm256_storeu_ps(s + 8, b3);
    }
  if (r < R8) /* 8 rows left */
    for (int t = 0; t < T4; t += 4) {
      const float *k0 = K + (size_t)t * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
      const float *q = Qt + r;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int d = 0; d < hd; d++, q += ldq) {
        __m256 q0 = _mm256_loadu_ps(q);
        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(k0 + d), q0, a0);
        a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(k1 + d), q0, a1);
        a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(k2 + d), q0, a2);
        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(k3 + d), q0, a3);
      }
      float *s = S + (size_t)t * lds + r;
      _mm256_storeu_ps(s, a0), _mm256_storeu_ps(s + lds, a1);
      _mm256_storeu_ps(s + 2 * (size_t)lds, a2), _mm256_storeu_ps(s + 3 * (size_t)lds, a3);
    }
}

/* R <= 4 rows (MHA / small-group GQA decodes): 4 keys at a time per row,
 * 4 independent FMA chains, then one horizontal sum per score. */
static void a2_attn_scores_few(float *S, int lds, const float *const *q, int R, float scale, const float *K, int T, int hd) {
  for (int r = 0; r < R; r++) {
    const float *qv = q[r];
    int t = 0;
    for (; t + 4 <= T; t += 4) {
      const float *k0 = K + (size_t)t * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int d = 0; d < hd; d += 8) {
        __m256 x = _mm256_loadu_ps(qv + d);
        a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k0 + d), a0);
        a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k1 + d), a1);
        a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k2 + d), a2);
        a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k3 + d), a3);
      }
      S[(size_t)t * lds + r] = scale * hsum8(a0);
      S[(size_t)(t + 1) * lds + r] = scale * hsum8(a1);
      S[(size_t)(t + 2) * lds + r] = scale * hsum8(a2);
      S[(size_t)(t + 3) * lds + r] = scale * hsum8(a3);
    }
    for (; t < T; t++) {
      const float *k0 = K + (size_t)t * hd;
      __m256 a = _mm256_setzero_ps();
      for (int d = 0; d < hd; d += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(qv + d), _mm256_loadu_ps(k0 + d), a);
      S[(size_t)t * lds + r] = scale * hsum8(a);
    }
  }
}

/* Rows r < R8, 8 at a time: S[t*lds + r] for t < T, masked (-> 0) where
 * t >= valid[r]; m, l updated, corr[r] = e^(m - m'). */
static void a2_attn_softmax(float *S, int lds, int T, int R8, const float *valid, float *m, float *l, float *corr) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (int r = 0; r < R8; r += 8) {
    __m256 vv = _mm256_loadu_ps(valid + r), m0 = _mm256_loadu_ps(m + r), mx = m0;
    float *s = S + r;
    for (int t = 0; t < T; t++, s += lds) {
      __m256 keep = _mm256_cmp_ps(_mm256_set1_ps((float)t), vv, _CMP_LT_OQ);
      __m256 x = _mm256_blendv_ps(ninf, _mm256_loadu_ps(s), keep);
      _mm256_storeu_ps(s, x);
      mx = _mm256_max_ps(mx, x);
    }
    __m256 c = exp8(_mm256_sub_ps(m0, mx)), sum = _mm256_setzero_ps();
    s = S + r;
    for (int t = 0; t < T; t++, s += lds) { /* exp8 of -inf (masked) is exactly 0 */
      __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(s), mx));
      _mm256_storeu_ps(s, p);
      sum = _mm256_add_ps(sum, p);
    }
    _mm256_storeu_ps(l + r, _mm256_fmadd_ps(_mm256_loadu_ps(l + r), c, sum));
    _mm256_storeu_ps(m + r, mx);
    _mm256_storeu_ps(corr + r, c);
  }
}

/* O[r][:] = O[r][:] corr[r] + sum_{t < T} P[t*ldp + r] V[t][:hd], r < R;
 * V's rows are ldv >= hd apart (hd a multiple of 8 for the vector paths). */
static void a2_attn_accum(float *O, const float *P, int ldp, const float *V, int ldv, int T, int R, int hd, const float *corr) {
  if (hd % 8) {
    for (int r = 0; r < R; r++) {
      float *o = O + (size_t)r * hd;
      for (int i = 0; i < hd; i++) o[i] *= corr[r];
      for (int t = 0; t < T; t++) {
        float p = P[(size_t)t * ldp + r];
        for (int i = 0; i < hd; i++) o[i] += p * V[(size_t)t * ldv + i];
      }
    }
    return;
  }
  int r = 0;
  for (; r + 2 <= R; r += 2) {
    float *oa = O + (size_t)r * hd, *ob = oa + hd;
    __m256 ca = _mm256_set1_ps(corr[r]), cb = _mm256_set1_ps(corr[r + 1]);
    int i = 0;
    for (; i + 32 <= hd; i += 32) {
      __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(oa + i), ca), a1 = _mm256_mul_ps(_mm256_loadu_ps(oa + i + 8), ca);
      __m256 a2 = _mm256_mul_ps(_mm256_loadu_ps(oa + i + 16), ca), a3 = _mm256_mul_ps(_mm256_loadu_ps(oa + i + 24), ca);
      __m256 b0 = _mm256_mul_ps(_mm256_loadu_ps(ob + i), cb), b1 = _mm256_mul_ps(_mm256_loadu_ps(ob + i + 8), cb);
      __m256 b2 = _mm256_mul_ps(_mm256_loadu_ps(ob + i + 16), cb), b3 = _mm256_mul_ps(_mm256_loadu_ps(ob + i + 24), cb);
      const float *v = V + i, *p = P + r;
      for (int t = 0; t < T; t++, v += ldv, p += ldp) {
        __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8), v2 = _mm256_loadu_ps(v + 16),
               v3 = _mm256_loadu_ps(v + 24);
        __m256 w = _mm256_broadcast_ss(p);
        a0 = _mm256_fmadd_ps(w, v0, a0), a1 = _mm256_fmadd_ps(w, v1, a1);
        a2 = _mm256_fmadd_ps(w, v2, a2), a3 = _mm256_fmadd_ps(w, v3, a3);
        w = _mm256_broadcast_ss(p + 1);
        b0 = _mm256_fmadd_ps(w, v0, b0), b1 = _mm256_fmadd_ps(w, v1, b1);
        b2 = _mm256_fmadd_ps(w, v2, b2), b3 = _mm256_fmadd_ps(w, v3, b3);
      }
      _mm256_storeu_ps(oa + i, a0), _mm256_storeu_ps(oa + i + 8, a1);
      _mm256_storeu_ps(oa + i + 16, a2), _mm256_storeu_ps(oa + i + 24, a3);
      _mm256_storeu_ps(ob + i, b0), _mm256_storeu_ps(ob + i + 8, b1);
      _mm256_storeu_ps(ob + i + 16, b2), _mm256_storeu_ps(ob + i + 24, b3);
    }
    for (; i < hd; i += 8) {
      __m256 a = _mm256_mul_ps(_mm256_loadu_ps(oa + i), ca), b = _mm256_mul_ps(_mm256_loadu_ps(ob + i), cb);
      const float *v = V + i, *p = P + r;
      for (int t = 0; t < T; t++, v += ldv, p += ldp) {
        __m256 v0 = _mm256_loadu_ps(v);
        a = _mm256_fmadd_ps(_mm256_broadcast_ss(p), v0, a);
        b = _mm256_fmadd_ps(_mm256_broadcast_ss(p + 1), v0, b);
      }
      _mm256_storeu_ps(oa + i, a), _mm256_storeu_ps(ob + i, b);
    }
  }
  for (; r < R; r++) {
    float *o = O + (size_t)r * hd;
    __m256 c = _mm256_set1_ps(corr[r]);
    for (int i = 0; i < hd; i += 8) {
      __m256 a = _mm256_mul_ps(_mm256_loadu_ps(o + i), c);
      const float *v = V + i, *p = P + r;
      for (int t = 0; t < T; t++, v += ldv, p += ldp) a = _mm256_fmadd_ps(_mm256_broadcast_ss(p), _mm256_loadu_ps(v), a);
      _mm256_storeu_ps(o + i, a);
    }
  }
}

/* A few rows of input against the same weights (batched decode of 2-8
 * sequences): each weight vector is widened once and used for every input
 * row, so W is streamed once instead of being widened and repacked for a
 * GEMM. out[m][i] (row stride ldo) = beta * out + W[i] . in[m]. */
/* 2 weight rows x M (2..4) input rows per pass: each weight vector is
 * widened once and feeds M FMAs, each input vector feeds 2; 2M independent
 * accumulators keep both FMA pipes busy. M and dt are constants in every
 * instantiation (the switch below), so the unused accumulators fold away. */
static inline void gemm_m4(float *out, int ldo, const uint16_t *w, int n, int k, const float *in, int M, float beta,
                           st_dtype dt) {
  int k8 = k & ~7;
  const size_t esz = dt == ST_F32 ? 4 : 2;
  const float *x0 = in, *x1 = in + (size_t)k * (M > 1), *x2 = in + (size_t)k * 2 * (M > 2),
              *x3 = in + (size_t)k * 3 * (M > 3);
  int i = 0;
  for (; i + 2 <= n; i += 2) {
    const uint16_t *wa = W_ROW(w, i, k, dt), *wb = W_ROW(w, i + 1, k, dt);
    const char *pf = (const char *)wa + GEMV_PREFETCH; /* the 2 rows are contiguous */
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int j = 0; j < k8; j += 8) {
      if (((size_t)j * esz) % 32 == 0) _mm_prefetch(pf + (size_t)j * 2 * esz, _MM_HINT_T1);
      __m256 va = widen8(W_AT(wa, j, dt), dt), vb = widen8(W_AT(wb, j, dt), dt), x;
      x = _mm256_loadu_ps(x0 + j);
      a0 = _mm256_fmadd_ps(va, x, a0);
      b0 = _mm256_fmadd_ps(vb, x, b0);
      if (M > 1) {
        x = _mm256_loadu_ps(x1 + j);
        a1 = _mm256_fmadd_ps(va, x, a1);
        b1 = _mm256_fmadd_ps(vb, x, b1);
      }
      if (M > 2) {
        x = _mm256_loadu_ps(x2 + j);
        a2 = _mm256_fmadd_ps(va, x, a2);
        b2 = _mm256_fmadd_ps(vb, x, b2);
      }
      if (M > 3) {
        x = _mm256_loadu_ps(x3 + j);
        a3 = _mm256_fmadd_ps(va, x, a3);
        b3 = _mm256_fmadd_ps(vb, x, b3);
      }
    }
    __m256 acc[2][4] = {{a0, a1, a2, a3}, {b0, b1, b2, b3}};
    const uint16_t *rows[2] = {wa, wb};
    for (int r = 0; r < 2; r++)
      for (int m = 0; m < M; m++) {
        float t = hsum8(acc[r][m]);
        for (int j = k8; j < k; j++) t += wval(rows[r], j, dt) * in[(size_t)m * k + j];
        float *o = out + (size_t)m * ldo + i + r;
        *o = beta == 0.0f ? t : beta * *o + t;
      }
  }
  for (; i < n; i++) /* an odd last row */
    for (int m = 0; m < M; m++) {
      const uint16_t *wr = W_ROW(w, i, k, dt);
      float t = 0;
      for (int j = 0; j < k; j++) t += wval(wr, j, dt) * in[(size_t)m * k + j];
      float *o = out + (size_t)m * ldo + i;
      *o = beta == 0.0f ? t : beta * *o + t;
    }
}

#define GEMM_M4_CASE(MM)                                                        \
  case MM:                                                                      \
    if (dt == ST_F16) gemm_m4(out, ldo, w, n, k, in, MM, beta, ST_F16);         \
    else if (dt == ST_BF16) gemm_m4(out, ldo, w, n, k, in, MM, beta, ST_BF16);  \
    else gemm_m4(out, ldo, w, n, k, in, MM, beta, ST_F32);                      \
    break;

static void gemm_m4_any(float *out, int ldo, const uint16_t *w, int n, int k, const float *in, int M, float beta,
                        st_dtype dt) {
  switch (M) {
    GEMM_M4_CASE(2)
    GEMM_M4_CASE(3)
    GEMM_M4_CASE(4)
  }
}

/* A few rows (decodes batched together): each block of weight rows (about
 * L1-sized) is streamed from memory by the first pass and re-read from cache
 * by the others, so the weights cross the memory bus once; a pass takes up
 * to 4 input rows (gemm_m4), a single leftover row the GEMV above. */
#define GEMM_FEW_BLOCK_BYTES 32768

static void a2_gemm_few(float *out, int ldo, const void *w, int n, int k, const float *in, int M, float beta, st_dtype dt) {
  if (st_is_quant(dt)) {
    k_quant_few(a2_widen, a2_gemm_few, out, ldo, w, n, k, in, M, beta, dt);
    return;
  }
  size_t esz = dt == ST_F32 ? 4 : 2;
  int nb = (int)(GEMM_FEW_BLOCK_BYTES / ((size_t)k * esz)) & ~3;
  if (nb < 4) nb = 4;
  for (int i = 0; i < n; i += nb) {
    int cnt = n - i < nb ? n - i : nb;
    const uint16_t *wb = W_ROW((const uint16_t *)w, i, k, dt);
    for (int m = 0; m < M; m += 4) {
      int mm = M - m < 4 ? M - m : 4;
      float *y = out + (size_t)m * ldo + i;
      const float *x = in + (size_t)m * k;
      if (mm > 1) gemm_m4_any(y, ldo, wb, cnt, k, x, mm, beta, dt);
      else a2_gemv(y, wb, cnt, k, x, beta, dt);
    }
  }
}

/* ------------------------------------ rows on lanes (batched decode) */

/* The AVX-512 level's rows-on-lanes product (x86_avx512.c) in 8-float
 * vectors: a 16-row panel is two vectors per position, so A2_RL_NB = 6 weight
 * rows give 12 accumulators (with the two panel vectors and a broadcast,
 * 15 of the 16 ymm registers): per position 2 loads and 6 broadcasts feed
 * 12 FMAs. Each weight is widened once into a two-slot L1 ring; the next
 * block of weight rows is prefetched into L2. k % 16 == 0. */
#define A2_RL_NB 6
static inline __attribute__((always_inline)) void rl_panel(float *out, int ldo, const void *w, int n, int k,
                                                           const float *ap, int M, float beta, st_dtype dt,
                                                           float *wb) {
  const size_t esz = dt == ST_F32 ? 4 : 2, ld = (size_t)k * esz;
  const int nq = k / 16, NB = A2_RL_NB;
  for (int n0 = 0; n0 < n; n0 += NB) {
    int nc = n - n0 < NB ? n - n0 : NB;
    const char *rows[A2_RL_NB];
    for (int j = 0; j < NB; j++) rows[j] = (const char *)w + (size_t)(n0 + (j < nc ? j : 0)) * ld;
    for (int j = 0; j < NB; j++) {
      _mm256_storeu_ps(wb + j * 16, widen8((const uint16_t *)(const void *)rows[j], dt));
      _mm256_storeu_ps(wb + j * 16 + 8, widen8((const uint16_t *)(const void *)(rows[j] + 8 * esz), dt));
    }
    const char *pf = n0 + 2 * NB <= n ? (const char *)w + (size_t)(n0 + NB) * ld : NULL;
    int pfn = (int)(((size_t)NB * ld / 64 + nq - 1) / nq);
    __m256 lo[A2_RL_NB], hi[A2_RL_NB];
    for (int j = 0; j < NB; j++) lo[j] = hi[j] = _mm256_setzero_ps();
    const float *a = ap;
    for (int q0 = 0; q0 < nq; q0++, a += 256) {
      const float *b = wb + (q0 & 1) * NB * 16;
      float *nx = wb + ((q0 + 1) & 1) * NB * 16;
      size_t qn = (size_t)(q0 + 1 < nq ? q0 + 1 : q0) * 16 * esz;
#pragma GCC unroll 16
      for (int q = 0; q < 16; q++) {
        __m256 a0 = _mm256_loadu_ps(a + q * 16), a1 = _mm256_loadu_ps(a + q * 16 + 8);
        if (q < NB) { /* one row of the next 16 positions per position */
          _mm256_storeu_ps(nx + q * 16, widen8((const uint16_t *)(const void *)(rows[q] + qn), dt));
          _mm256_storeu_ps(nx + q * 16 + 8, widen8((const uint16_t *)(const void *)(rows[q] + qn + 8 * esz), dt));
        }
        if (pf && q < pfn) _mm_prefetch(pf + ((size_t)q0 * pfn + q) * 64, _MM_HINT_T1);
#pragma GCC unroll 6
        for (int j = 0; j < NB; j++) {
          __m256 bj = _mm256_broadcast_ss(b + j * 16 + q);
          lo[j] = _mm256_fmadd_ps(bj, a0, lo[j]);
          hi[j] = _mm256_fmadd_ps(bj, a1, hi[j]);
        }
      }
    }
    float t[A2_RL_NB][16];
    for (int j = 0; j < NB; j++) _mm256_storeu_ps(t[j], lo[j]), _mm256_storeu_ps(t[j] + 8, hi[j]);
    rl_store(out + n0, ldo, (const float(*)[16])t, M, nc, beta);
  }
}

static void a2_gemm_rl(float *out, int ldo, const void *w, int n, int k, const float *ap, int M, float beta,
                       st_dtype dt, float *scratch) {
  for (int m = 0; m < M; m += 16) { /* a 16-row panel per pass; later passes read the weights from cache */
    int mm = M - m < 16 ? M - m : 16;
    const float *a = ap + (size_t)(m / 16) * k * 16;
    float *o = out + (size_t)m * ldo;
    if (dt == ST_F16) rl_panel(o, ldo, w, n, k, a, mm, beta, ST_F16, scratch);
    else if (dt == ST_BF16) rl_panel(o, ldo, w, n, k, a, mm, beta, ST_BF16, scratch);
    else rl_panel(o, ldo, w, n, k, a, mm, beta, ST_F32, scratch);
  }
}

/* MAXPS returns its second operand when either is NaN: m never becomes NaN */
static float a2_vmax(const float *x, int n) {
  __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
  int i = 0;
  for (; i + 16 <= n; i += 16)
    m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0), m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
  float t[8], mx;
  _mm256_storeu_ps(t, _mm256_max_ps(m0, m1));
  mx = t[0];
  for (int k = 1; k < 8; k++) mx = t[k] > mx ? t[k] : mx;
  for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  return mx;
}

/* g[n] = silu(g) u = g u / (1 + e^-g), 8 at a time with exp8 */
static void a2_swiglu(float *g, const float *u, int n) {
  int i = 0;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(g + i);
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_storeu_ps(g + i, _mm256_div_ps(_mm256_mul_ps(x, _mm256_loadu_ps(u + i)), _mm256_add_ps(one, e)));
  }
  for (; i < n; i++) {
    float x = g[i];
    g[i] = x / (1.0f + expf(-x)) * u[i];
  }
}

/* ------------------------------------------------ packed GEMM (6 x 16) */

#define A2_MR 6
#define A2_NR 16


/* bp[p][j] = W[j][p]: 8 columns x 8 positions per transpose */
static void a2_pack_b(float *bp, const void *w, size_t ldw, int ncols, int kc, st_dtype dt) {
  if (st_is_quant(dt)) {
    k_quant_pack_b(a2_widen, a2_pack_b, bp, w, ldw, ncols, kc, dt);
    return;
  }
  size_t esz = dt == ST_F32 ? 4 : 2;
  int k8 = kc & ~7;
  for (int g = 0; g < A2_NR; g += 8) {
    const char *rows[8];
    for (int i = 0; i < 8; i++) rows[i] = g + i < ncols ? (const char *)w + (size_t)(g + i) * ldw * esz : NULL;
    for (int p = 0; p < k8; p += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; i++)
        r[i] = rows[i] ? widen8((const uint16_t *)(const void *)(rows[i] + (size_t)p * esz), dt) : _mm256_setzero_ps();
      transpose8(r);
      for (int i = 0; i < 8; i++) _mm256_storeu_ps(bp + (size_t)(p + i) * A2_NR + g, r[i]);
    }
    for (int p = k8; p < kc; p++)
      for (int i = 0; i < 8; i++)
        bp[(size_t)p * A2_NR + g + i] = rows[i] ? wval((const uint16_t *)(const void *)rows[i], p, dt) : 0.0f;
  }
}

/* MR_ is a constant in every instantiation: the accumulators stay in
 * registers (12 + 2 for B + 1 broadcast of the 16 ymm) */
static inline __attribute__((always_inline)) void tile_mr(int kc, const float *ap, const float *bp, float *c,
                                                          size_t ldc, const int MR_, int nr, int acc) {
  __m256 c0[A2_MR], c1[A2_MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR_; r++) c0[r] = c1[r] = _mm256_setzero_ps();
  for (int p = 0; p < kc; p++, ap += A2_MR, bp += A2_NR) {
    __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR_; r++) {
      __m256 a = _mm256_broadcast_ss(ap + r);
      c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
    }
  }
  if (nr == A2_NR) {
#pragma GCC unroll 6
    for (int r = 0; r < MR_; r++) {
      float *o = c + (size_t)r * ldc;
      if (acc) {
        c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(o));
        c1[r] = _mm256_add_ps(c1[r], _mm256_loadu_ps(o + 8));
      }
      _mm256_storeu_ps(o, c0[r]);
      _mm256_storeu_ps(o + 8, c1[r]);
    }
    return;
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR_; r++) { /* unrolled, so c0/c1 stay registers */
    float t[A2_NR];
    _mm256_storeu_ps(t, c0[r]);
    _mm256_storeu_ps(t + 8, c1[r]);
    float *o = c + (size_t)r * ldc;
    for (int j = 0; j < nr; j++) o[j] = (acc ? o[j] : 0.0f) + t[j];
  }
}

static void a2_tile(int kc, const float *ap, const float *bp, float *c, size_t ldc, int mr, int nr, int acc) {
  switch (mr) {
  case 6: tile_mr(kc, ap, bp, c, ldc, 6, nr, acc); break;
  case 5: tile_mr(kc, ap, bp, c, ldc, 5, nr, acc); break;
  case 4: tile_mr(kc, ap, bp, c, ldc, 4, nr, acc); break;
  case 3: tile_mr(kc, ap, bp, c, ldc, 3, nr, acc); break;
  case 2: tile_mr(kc, ap, bp, c, ldc, 2, nr, acc); break;
  default: tile_mr(kc, ap, bp, c, ldc, 1, nr, acc); break;
  }
}

/* 10 independent FMA chains of 8 lanes: enough to fill both FMA pipes */
static double a2_fma_burn(long iters) {
  __m256 a[10], b = _mm256_set1_ps(0.999f), d = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 10; i++) a[i] = _mm256_set1_ps(1e-3f * i);
  for (long it = 0; it < iters; it++)
#pragma GCC unroll 10
    for (int i = 0; i < 10; i++) a[i] = _mm256_fmadd_ps(a[i], b, d);
  __m256 s = a[0];
  for (int i = 1; i < 10; i++) s = _mm256_add_ps(s, a[i]);
  volatile float sink = hsum8(s);
  (void)sink;
  return 2.0 * 8 * 10 * (double)iters;
}

const k_table k_table_avx2 = {
    .name = "avx2",
    .gemm_mr = A2_MR,
    .gemm_nr = A2_NR,
    .few_max = 32,
    .rl_min = 12, /* measured (bench batch --isa avx2, small F16, 2 threads, on AVX-512 hardware): */
    .rl_max = 48, /* 12 rows 1.09x gemm_few, 16 1.37x, 32 1.28x, 48 1.06x; 64 even, 96-128 0.93-0.96x the packed GEMM */
    .gemm_rl = a2_gemm_rl,
    .gemv = a2_gemv,
    .gemm_few = a2_gemm_few,
    .gemm_pack_b = a2_pack_b,
    .gemm_tile = a2_tile,
    .widen = a2_widen,
    .kv_dequant = a2_kv_dequant,
    .f32_to_f16 = a2_f32_to_f16,
    .rope_to = a2_rope_to,
    .swiglu = a2_swiglu,
    .vmax = a2_vmax,
    .attn_scores = a2_attn_scores,
    .attn_scores_few = a2_attn_scores_few,
    .attn_softmax = a2_attn_softmax,
    .attn_accum = a2_attn_accum,
    .fma_burn = a2_fma_burn,
};
