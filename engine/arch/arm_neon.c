/* arm_neon.c: the aarch64 Advanced SIMD level (kernels.h): 4 floats per
 * vector, 32 vector registers. F16 weights widen with FCVTL (base ARMv8),
 * BF16 with a shift. Attention uses the portable kernels, which the
 * compiler vectorises for NEON at -O3 (tests/engine/test_kernels.c holds
 * this level to them like any other). Tested under qemu-user on x86 CI. */
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

static inline float32x4_t widen4(const void *p, st_dtype dt) {
  if (dt == ST_F32) return vld1q_f32(p);
  uint16x4_t h = vld1_u16(p);
  if (dt == ST_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
  return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

static inline const void *n_at(const void *w, size_t j, st_dtype dt) {
  return dt == ST_F32 ? (const void *)((const float *)w + j) : (const void *)((const uint16_t *)w + j);
}

static inline float n_get(const void *w, size_t j, st_dtype dt) {
  if (dt == ST_F32) return ((const float *)w)[j];
  uint16_t h = ((const uint16_t *)w)[j];
  if (dt == ST_BF16) return k_bf16_to_f32_1(h);
  float16_t f;
  memcpy(&f, &h, 2);
  return (float)f;
}

/* out[8] = q[8] * d */
static inline void n_store8(float *out, int8x8_t q, float32x4_t d) {
  int16x8_t v = vmovl_s8(q);
  vst1q_f32(out, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(v))), d));
  vst1q_f32(out + 4, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(v))), d));
}

static void n_kv_dequant(float *out, const int8_t *q, const uint16_t *s, int n, int group) {
  if (group % 8) {
    k_gen_kv_dequant(out, q, s, n, group);
    return;
  }
  for (int g0 = 0; g0 < n; g0 += group) {
    __fp16 h;
    memcpy(&h, s + g0 / group, 2);
    float32x4_t d = vdupq_n_f32((float)h);
    for (int i = g0; i < g0 + group; i += 8) n_store8(out + i, vld1_s8(q + i), d);
  }
}

/* quantized blocks (engine_int.h), n % ST_QK == 0 */

static void n_dequant(float *out, const void *in, size_t n, st_dtype dt) {
  const uint8_t *b = in;
  size_t bs = dt == ST_Q8_0 ? 34 : 18;
  for (size_t i = 0; i < n; i += ST_QK, b += bs) {
    __fp16 h;
    memcpy(&h, b, 2);
    float32x4_t d = vdupq_n_f32((float)h);
    int8x16_t q0, q1;
    if (dt == ST_Q8_0) {
      q0 = vld1q_s8((const int8_t *)(b + 2));
      q1 = vld1q_s8((const int8_t *)(b + 18));
    } else {
      uint8x16_t q = vld1q_u8(b + 2);
      q0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(15))), vdupq_n_s8(8));
      q1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
    }
    n_store8(out + i, vget_low_s8(q0), d);
    n_store8(out + i + 8, vget_high_s8(q0), d);
    n_store8(out + i + 16, vget_low_s8(q1), d);
    n_store8(out + i + 24, vget_high_s8(q1), d);
  }
}

static void n_widen(float *out, const void *in, size_t n, st_dtype dt) {
  if (st_is_quant(dt)) {
    n_dequant(out, in, n, dt);
    return;
  }
  if (dt == ST_F32) {
    memcpy(out, in, n * sizeof *out);
    return;
  }
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, widen4(n_at(in, i, dt), dt));
  for (; i < n; i++) out[i] = n_get(in, i, dt);
}

static void n_f32_to_f16(uint16_t *out, const float *in, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(out + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(in + i))));
  for (; i < n; i++) out[i] = k_f32_to_f16_1(in[i]);
}

static void n_rope_to(float *out, const float *x, const float *cs, int hd) {
  int half = hd / 2, i = 0;
  const float *c = cs, *s = cs + half;
  for (; i + 4 <= half; i += 4) {
    float32x4_t a = vld1q_f32(x + i), b = vld1q_f32(x + i + half), cv = vld1q_f32(c + i), sv = vld1q_f32(s + i);
    vst1q_f32(out + i, vfmsq_f32(vmulq_f32(a, cv), b, sv));
    vst1q_f32(out + i + half, vfmaq_f32(vmulq_f32(b, cv), a, sv));
  }
  for (; i < half; i++) {
    float a = x[i], b = x[i + half];
    out[i] = a * c[i] - b * s[i];
    out[i + half] = b * c[i] + a * s[i];
  }
}

/* 4 weight rows per pass, 2 accumulators each, 8 weights per row per step */
static inline __attribute__((always_inline)) void gemv_dt(float *y, const void *w, int n, int k, const float *x,
                                                          float beta, const st_dtype dt) {
  int k8 = k & ~7, i = 0;
  for (; i + 4 <= n; i += 4) {
    const void *r[4];
    for (int q = 0; q < 4; q++) r[q] = n_at(w, (size_t)(i + q) * k, dt);
    float32x4_t a[4], b[4];
    for (int q = 0; q < 4; q++) a[q] = b[q] = vdupq_n_f32(0);
    for (int j = 0; j < k8; j += 8) {
      float32x4_t x0 = vld1q_f32(x + j), x1 = vld1q_f32(x + j + 4);
#pragma GCC unroll 4
      for (int q = 0; q < 4; q++) {
        a[q] = vfmaq_f32(a[q], widen4(n_at(r[q], (size_t)j, dt), dt), x0);
        b[q] = vfmaq_f32(b[q], widen4(n_at(r[q], (size_t)j + 4, dt), dt), x1);
      }
    }
    for (int q = 0; q < 4; q++) {
      float s = vaddvq_f32(vaddq_f32(a[q], b[q]));
      for (int j = k8; j < k; j++) s += n_get(r[q], (size_t)j, dt) * x[j];
      y[i + q] = beta == 0.0f ? s : beta * y[i + q] + s;
    }
  }
  for (; i < n; i++) {
    const void *wr = n_at(w, (size_t)i * k, dt);
    float32x4_t a = vdupq_n_f32(0);
    int j = 0;
    for (; j + 4 <= k; j += 4) a = vfmaq_f32(a, widen4(n_at(wr, (size_t)j, dt), dt), vld1q_f32(x + j));
    float s = vaddvq_f32(a);
    for (; j < k; j++) s += n_get(wr, (size_t)j, dt) * x[j];
    y[i] = beta == 0.0f ? s : beta * y[i] + s;
  }
}

/* Quantized rows fused (x86_avx512.c's gemv_q_rows with 4 lanes): a
 * block's 32 ints widen in registers to 8 vectors; Q4_0's "- 8" is folded
 * in as -8 * sum(x) of the block, once for the R rows of a pass. */
#define NQ_MAX_BLOCKS 512
static inline float32x4_t n_i32f(int32x4_t v) { return vcvtq_f32_s32(v); }

static inline __attribute__((always_inline)) void gemv_q_rows(float *y, const uint8_t *w, size_t rb, int nb,
                                                              const float *x, float beta, const int R,
                                                              const st_dtype dt) {
  const float *lut = k_f16_lut();
  const size_t bs = dt == ST_Q8_0 ? 34 : 18;
  float sc[4][NQ_MAX_BLOCKS];
  for (int r = 0; r < R; r++)
    for (int b = 0; b < nb; b++) {
      uint16_t h;
      memcpy(&h, w + r * rb + (size_t)b * bs, 2);
      sc[r][b] = lut[h];
    }
  float32x4_t acc[4];
  for (int r = 0; r < R; r++) acc[r] = vdupq_n_f32(0);
  for (int b = 0; b < nb; b++) {
    const float *xb = x + 32 * b;
    float32x4_t xv[8];
    for (int q = 0; q < 8; q++) xv[q] = vld1q_f32(xb + 4 * q);
    float32x4_t m8s = vdupq_n_f32(0);
    if (dt == ST_Q4_0) {
      for (int q = 0; q < 8; q++) m8s = vaddq_f32(m8s, xv[q]);
      m8s = vmulq_n_f32(m8s, -8.0f);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      const uint8_t *p = w + r * rb + (size_t)b * bs + 2;
      int16x8_t h[4];
      if (dt == ST_Q8_0) {
        int8x16_t a = vld1q_s8((const int8_t *)p), c = vld1q_s8((const int8_t *)(p + 16));
        h[0] = vmovl_s8(vget_low_s8(a)), h[1] = vmovl_s8(vget_high_s8(a));
        h[2] = vmovl_s8(vget_low_s8(c)), h[3] = vmovl_s8(vget_high_s8(c));
      } else {
        uint8x16_t v = vld1q_u8(p);
        int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(15))), hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
        h[0] = vmovl_s8(vget_low_s8(lo)), h[1] = vmovl_s8(vget_high_s8(lo));
        h[2] = vmovl_s8(vget_low_s8(hi)), h[3] = vmovl_s8(vget_high_s8(hi));
      }
      float32x4_t t = m8s;
      for (int q = 0; q < 4; q++) {
        t = vfmaq_f32(t, n_i32f(vmovl_s16(vget_low_s16(h[q]))), xv[2 * q]);
        t = vfmaq_f32(t, n_i32f(vmovl_s16(vget_high_s16(h[q]))), xv[2 * q + 1]);
      }
      acc[r] = vfmaq_n_f32(acc[r], t, sc[r][b]);
    }
  }
  for (int r = 0; r < R; r++) {
    float s = vaddvq_f32(acc[r]);
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

static void n_gemv(float *y, const void *w, int n, int k, const float *x, float beta, st_dtype dt) {
  if (st_is_quant(dt) && k / ST_QK > NQ_MAX_BLOCKS) k_quant_gemv(n_widen, n_gemv, y, w, n, k, x, beta, dt);
  else if (dt == ST_Q8_0) gemv_q(y, w, n, k, x, beta, ST_Q8_0);
  else if (dt == ST_Q4_0) gemv_q(y, w, n, k, x, beta, ST_Q4_0);
  else if (dt == ST_F16) gemv_dt(y, w, n, k, x, beta, ST_F16);
  else if (dt == ST_BF16) gemv_dt(y, w, n, k, x, beta, ST_BF16);
  else gemv_dt(y, w, n, k, x, beta, ST_F32);
}

/* 2 weight rows x up to 4 input rows per pass, weights L1-blocked */
static inline __attribute__((always_inline)) void few_pass(float *out, int ldo, const void *w, int n, int k,
                                                           const float *in, int M, float beta, const st_dtype dt) {
  int k4 = k & ~3, i = 0;
  for (; i + 2 <= n; i += 2) {
    const void *wa = n_at(w, (size_t)i * k, dt), *wb = n_at(w, (size_t)(i + 1) * k, dt);
    float32x4_t a[4], b[4];
    for (int m = 0; m < 4; m++) a[m] = b[m] = vdupq_n_f32(0);
    for (int j = 0; j < k4; j += 4) {
      float32x4_t va = widen4(n_at(wa, (size_t)j, dt), dt), vb = widen4(n_at(wb, (size_t)j, dt), dt);
      for (int m = 0; m < M; m++) {
        float32x4_t x = vld1q_f32(in + (size_t)m * k + j);
        a[m] = vfmaq_f32(a[m], va, x);
        b[m] = vfmaq_f32(b[m], vb, x);
      }
    }
    for (int m = 0; m < M; m++) {
      const float *x = in + (size_t)m * k;
      float ta = vaddvq_f32(a[m]), tb = vaddvq_f32(b[m]);
      for (int j = k4; j < k; j++) ta += n_get(wa, (size_t)j, dt) * x[j], tb += n_get(wb, (size_t)j, dt) * x[j];
      float *o = out + (size_t)m * ldo + i;
      o[0] = beta == 0.0f ? ta : beta * o[0] + ta;
      o[1] = beta == 0.0f ? tb : beta * o[1] + tb;
    }
  }
  for (; i < n; i++)
    for (int m = 0; m < M; m++) {
      const void *wr = n_at(w, (size_t)i * k, dt);
      float t = 0;
      for (int j = 0; j < k; j++) t += n_get(wr, (size_t)j, dt) * in[(size_t)m * k + j];
      float *o = out + (size_t)m * ldo + i;
      *o = beta == 0.0f ? t : beta * *o + t;
    }
}

static void n_gemm_few(float *out, int ldo, const void *w, int n, int k, const float *in, int M, float beta,
                       st_dtype dt) {
  if (st_is_quant(dt)) {
    k_quant_few(n_widen, n_gemm_few, out, ldo, w, n, k, in, M, beta, dt);
    return;
  }
  size_t esz = dt == ST_F32 ? 4 : 2;
  int nb = (int)(32768 / ((size_t)k * esz)) & ~1;
  if (nb < 2) nb = 2;
  for (int i = 0; i < n; i += nb) {
    int cnt = n - i < nb ? n - i : nb;
    const void *wb = n_at(w, (size_t)i * k, dt);
    for (int m = 0; m < M; m += 4) {
      int mm = M - m < 4 ? M - m : 4;
      float *o = out + (size_t)m * ldo + i;
      const float *x = in + (size_t)m * k;
      if (dt == ST_F16) few_pass(o, ldo, wb, cnt, k, x, mm, beta, ST_F16);
      else if (dt == ST_BF16) few_pass(o, ldo, wb, cnt, k, x, mm, beta, ST_BF16);
      else few_pass(o, ldo, wb, cnt, k, x, mm, beta, ST_F32);
    }
  }
}

/* packed GEMM: 8 rows x 12 columns (24 accumulators, 3 B + 2 A vectors) */
#define N_MR 8
#define N_NR 12

static void n_pack_b(float *bp, const void *w, size_t ldw, int ncols, int kc, st_dtype dt) {
  if (st_is_quant(dt)) {
    k_quant_pack_b(n_widen, n_pack_b, bp, w, ldw, ncols, kc, dt);
    return;
  }
  float buf[256];
  for (int j = 0; j < N_NR; j++) {
    if (j >= ncols) {
      for (int p = 0; p < kc; p++) bp[(size_t)p * N_NR + j] = 0;
      continue;
    }
    for (int p0 = 0; p0 < kc; p0 += 256) {
      int cnt = kc - p0 < 256 ? kc - p0 : 256;
      n_widen(buf, n_at(w, (size_t)j * ldw + p0, dt), (size_t)cnt, dt);
      for (int p = 0; p < cnt; p++) bp[(size_t)(p0 + p) * N_NR + j] = buf[p];
    }
  }
}

static void n_tile(int kc, const float *ap, const float *bp, float *c, size_t ldc, int mr, int nr, int acc) {
  float32x4_t t[N_MR][3];
  for (int r = 0; r < N_MR; r++) t[r][0] = t[r][1] = t[r][2] = vdupq_n_f32(0);
  for (int p = 0; p < kc; p++, ap += N_MR, bp += N_NR) {
    float32x4_t b0 = vld1q_f32(bp), b1 = vld1q_f32(bp + 4), b2 = vld1q_f32(bp + 8);
    float32x4_t a0 = vld1q_f32(ap), a1 = vld1q_f32(ap + 4);
#define ROW(r, av, lane)                                 \
  t[r][0] = vfmaq_laneq_f32(t[r][0], b0, av, lane);      \
  t[r][1] = vfmaq_laneq_f32(t[r][1], b1, av, lane);      \
  t[r][2] = vfmaq_laneq_f32(t[r][2], b2, av, lane);
    ROW(0, a0, 0) ROW(1, a0, 1) ROW(2, a0, 2) ROW(3, a0, 3)
    ROW(4, a1, 0) ROW(5, a1, 1) ROW(6, a1, 2) ROW(7, a1, 3)
#undef ROW
  }
  for (int r = 0; r < mr; r++) {
    float v[N_NR];
    vst1q_f32(v, t[r][0]);
    vst1q_f32(v + 4, t[r][1]);
    vst1q_f32(v + 8, t[r][2]);
    float *o = c + (size_t)r * ldc;
    for (int j = 0; j < nr; j++) o[j] = (acc ? o[j] : 0.0f) + v[j];
  }
}

static double n_fma_burn(long iters) {
  float32x4_t a[12], b = vdupq_n_f32(0.999f), d = vdupq_n_f32(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = vdupq_n_f32(1e-3f * i);
  for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = vfmaq_f32(d, a[i], b);
  float32x4_t s = a[0];
  for (int i = 1; i < 12; i++) s = vaddq_f32(s, a[i]);
  volatile float sink = vaddvq_f32(s);
  (void)sink;
  return 2.0 * 4 * 12 * (double)iters;
}

/* FMAXNM returns the number when one operand is NaN */
static float n_vmax(const float *x, int n) {
  float32x4_t m0 = vdupq_n_f32(-INFINITY), m1 = m0;
  int i = 0;
  for (; i + 8 <= n; i += 8) m0 = vmaxnmq_f32(vld1q_f32(x + i), m0), m1 = vmaxnmq_f32(vld1q_f32(x + i + 4), m1);
  float mx = vmaxnmvq_f32(vmaxnmq_f32(m0, m1));
  for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  return mx;
}

const k_table k_table_neon = {
    .name = "neon",
    .gemm_mr = N_MR,
    .gemm_nr = N_NR,
    .few_max = 16,
    .gemv = n_gemv,
    .gemm_few = n_gemm_few,
    .gemm_pack_b = n_pack_b,
    .gemm_tile = n_tile,
    .widen = n_widen,
    .kv_dequant = n_kv_dequant,
    .f32_to_f16 = n_f32_to_f16,
    .rope_to = n_rope_to,
    /* the portable kernels below vectorise well at -O3 */
    .swiglu = k_gen_swiglu,
    .vmax = n_vmax,
    .attn_scores = k_gen_attn_scores,
    .attn_scores_few = k_gen_attn_scores_few,
    .attn_softmax = k_gen_attn_softmax,
    .attn_accum = k_gen_attn_accum,
    .fma_burn = n_fma_burn,
};
