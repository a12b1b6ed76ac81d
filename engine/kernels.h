/* kernels.h: the engine's kernel table, one per CPU level (engine-internal).
 *
 * Every hot loop of the forward pass is a member of k_table. Each level lives
 * in its own file under engine/arch/, compiled with its own target flags:
 *
 *   arch/generic.c     portable C (any CPU; the readable reference of every kernel)
 *   arch/x86_avx2.c    x86-64 AVX2 + FMA + F16C
 *   arch/x86_avx512.c  x86-64 AVX-512 F/BW/VL (+F16C); built twice, the second
 *                      time with AVX512_BF16 + AVX512_VNNI as the top level
 *   arch/arm_neon.c    aarch64 Advanced SIMD (fp16 conversions are base ARMv8)
 *
 * dispatch.c is the one place that asks the CPU what it has and picks the
 * best table (or the one MFASERVE_ISA / --isa forces); nothing else tests
 * CPU features. Code outside engine/arch/ calls kernels only through K().
 *
 * Conventions shared by every level (tests/engine/test_kernels.c holds each
 * level to the generic one):
 * - Weights W are [n][k] row-major, F32, F16 or BF16 (dt), read in place.
 * - gemv / gemm_few: out[m][i] (row stride ldo) = beta * out + W[i] . in[m];
 *   beta 0 never reads out. The weights cross the memory bus once.
 * - The packed GEMM (gemm.c drives it): activations are packed into panels
 *   ap[kc][MR] (rows along the fast axis, zero past the last row), weights
 *   are widened into panels bp[kc][NR] (columns along the fast axis, zero
 *   past the last column) by gemm_pack_b, and gemm_tile computes one
 *   mr x nr tile of C from one panel pair, entirely in registers.
 * - Attention: see the comment above k_attn_* in arch/generic.c. */
#ifndef MFS_ENGINE_KERNELS_H
#define MFS_ENGINE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "engine_int.h"

typedef struct k_table {
  const char *name;  /* the level: "avx512-bf16", "avx512", "avx2", "neon", "generic" */
  int gemm_mr;       /* packed GEMM register tile: rows ... */
  int gemm_nr;       /* ... and columns (a multiple of the vector width) */
  int few_max;       /* up to this many rows gemm_few beats packing (measured per level) */
  int rl_min, rl_max; /* rows for which gemm_rl beats both (0, 0 and NULL: a level without it) */

  void (*gemv)(float *y, const void *w, int n, int k, const float *x, float beta, st_dtype dt);
  /* 2 <= M <= few_max input rows */
  void (*gemm_few)(float *out, int ldo, const void *w, int n, int k, const float *in, int M, float beta,
                   st_dtype dt);
  /* Rows on lanes: out[m][i] (ldo) = beta * out + W[i] . A[m] for
   * rl_min <= M <= rl_max, A packed by k_pack_a(.., K_RL_MR, ..) into panels
   * ap[M / 16][k][16] (zero past the last row); dt F32 / F16 / BF16,
   * k % 16 == 0; scratch: k_gemm_scratch_floats(). Each weight is widened
   * once and broadcast against a vector of 16 rows, so there are no
   * horizontal sums and the weights cross the memory bus once. */
  void (*gemm_rl)(float *out, int ldo, const void *w, int n, int k, const float *ap, int M, float beta,
                  st_dtype dt, float *scratch);
  /* bp[p][j] = W[j][p] for p < kc, j < ncols (<= NR), 0 for ncols <= j < NR;
   * w points at W[j0][p0], ldw is k */
  void (*gemm_pack_b)(float *bp, const void *w, size_t ldw, int ncols, int kc, st_dtype dt);
  /* C[r][j] (ldc) = (acc ? C[r][j] : 0) + sum_p ap[p][r] bp[p][j], r < mr <= MR, j < nr <= NR */
  void (*gemm_tile)(int kc, const float *ap, const float *bp, float *c, size_t ldc, int mr, int nr, int acc);

  /* Quantized weights times rows with int8 dot products (levels that
   * have them, e.g. AVX512_VNNI; NULL elsewhere, which then widen into the
   * F32 GEMM). The rows are quantized first like Q8_0 (k_qgemm_quant_a:
   * per row, blocks of 32 with an F32 scale max|a| / 127), so results differ
   * from the F32 path by that rounding (tests/engine/test_kernels.c holds
   * the level to k_gen_qgemm, the same arithmetic in portable C).
   * A level that has qgemm_cols rounds x the same way in its gemv of
   * quantized weights (one row), so every quantized product there uses
   * int8 activations.
   * qgemm_cols: C[rows][ncols] (ldc) = beta C + A W^T, W's ncols rows at w
   * (ST_Q8_0 / ST_Q4_0, k % 32 == 0); scratch: k_gemm_scratch_floats(). */
  void (*qgemm_cols)(float *c, size_t ldc, const uint8_t *aq, const float *da, int rows, const void *w, int ncols,
                     int k, st_dtype dt, float beta, float *scratch);
  /* k_qgemm_quant_a, vectorized: bit-identical to it */
  void (*qgemm_quant_a)(uint8_t *aq, float *da, const float *a, int r0, int r1, int k);
  /* out[n] = widen(in[n]) for F16 / BF16 (F32: a copy) */
  void (*widen)(float *out, const void *in, size_t n, st_dtype dt);
  void (*f32_to_f16)(uint16_t *out, const float *in, size_t n);
  /* out[hd] = RoPE(x) at one position, cs = [cos(hd/2)][sin(hd/2)], out != x */
  void (*rope_to)(float *out, const float *x, const float *cs, int hd);
  /* out[i] = q[i] * f16(s[i / group]) for i < n (an int8 KV-cache row,
   * kvcache.h); group divides n */
  void (*kv_dequant)(float *out, const int8_t *q, const uint16_t *s, int n, int group);
  /* g[n] = silu(g) * u */
  void (*swiglu)(float *g, const float *u, int n);
  /* the largest non-NaN value of x[0..n) (-inf when there is none): the
   * greedy argmax over logits rows (forward.c) */
  float (*vmax)(const float *x, int n);

  void (*attn_scores)(float *S, int lds, const float *Qt, int ldq, int R8, const float *K, int T4, int hd);
  void (*attn_scores_few)(float *S, int lds, const float *const *q, int R, float scale, const float *K, int T,
                          int hd);
  void (*attn_softmax)(float *S, int lds, int T, int R8, const float *valid, float *m, float *l, float *corr);
  /* O[R][hd] (rows hd apart); V's rows are ldv >= hd apart: a value may be the
   * first hd elements of a longer cached row (MLA: the latent of [latent | rope key]) */
  void (*attn_accum)(float *O, const float *P, int ldp, const float *V, int ldv, int T, int R, int hd,
                     const float *corr);

  /* Runs `iters` iterations of independent FMA chains that never touch
   * memory; returns the FLOPs done (the compute ceiling bench reports). */
  double (*fma_burn)(long iters);
} k_table;

/* The levels this binary has (NULL where it was not built for that
 * architecture), best first. */
extern const k_table k_table_avx512bf16, k_table_avx512, k_table_avx2, k_table_neon, k_table_generic;

/* The running level: chosen on first use from MFASERVE_ISA or the CPU (see
 * dispatch.c), or set by eng_isa_select. */
const k_table *k_active(void);
#define K() k_active()

/* Levels the running CPU can execute, best first; NULL-terminated. */
const k_table *const *k_levels_supported(void);
/* The level called name (or one of its aliases) in this binary, else NULL. */
const k_table *k_level_by_name(const char *name);

/* The packed GEMM driver (gemm.c), for rows > K()->few_max. Blocking:
 * GEMM_KC positions per packed panel, GEMM_MC rows per A block, and a
 * worker's chunk of about GEMM_CHUNK output columns (a multiple of NR). */
#define GEMM_KC 256
#define GEMM_MC 240
#define GEMM_CHUNK 128
int k_gemm_chunk(void);            /* columns per chunk at the running level */
size_t k_gemm_scratch_floats(void); /* bp scratch k_gemm_cols needs per worker */
/* Row panels [rb0, rb1) of A[rows][k] into ap[rb][k][MR] (zero past rows);
 * ap holds ceil(rows / MR) * MR * k floats. k_gemm_pack_a: MR = gemm_mr. */
void k_pack_a(float *ap, const float *a, int rows, int k, int MR, int rb0, int rb1);
void k_gemm_pack_a(float *ap, const float *a, int rows, int k, int rb0, int rb1);
#define K_RL_MR 16 /* gemm_rl's panel height */
/* C[rows][ncols] (ldc) = beta C + A W^T for W[ncols][k] at w (a row range of
 * the weights), A packed by k_gemm_pack_a; bp: k_gemm_scratch_floats(). */
void k_gemm_cols(float *c, size_t ldc, const float *ap, int rows, const void *w, int ncols, int k, st_dtype dt,
                 float beta, float *bp);
/* The whole product on the calling thread (tests, tools): 0, or -1 when out
 * of memory. */
int k_gemm(float *c, size_t ldc, const float *a, int rows, const void *w, int n, int k, st_dtype dt, float beta);

/* Quantized weights (ST_Q8_0, ST_Q4_0; k and kc multiples of ST_QK): every
 * level widens blocks in its own widen(); its gemm_few and gemm_pack_b
 * hand quantized matrices to these drivers (gemm.c), which dequantize a few
 * rows at a time into an L1-sized buffer with that widen and run the
 * level's own F32 kernel on it (the weights still cross the memory bus
 * once, at their quantized size). Its gemv is fused and hands over only
 * rows too long for it (k_quant_gemv: one row at a time, in pieces). */
/* A's rows [r0, r1) quantized for qgemm_cols: aq[r][j] = round(a[r][j] /
 * da[r][j/32]) + 128 (as u8: VNNI multiplies unsigned by signed bytes),
 * da[r][b] = max|a[r][32b..32b+31]| / 127. aq is [rows][k], da [rows][k/32]. */
void k_qgemm_quant_a(uint8_t *aq, float *da, const float *a, int r0, int r1, int k);
/* The same product in portable C, the reference of every qgemm_cols: per
 * 32-block the exact integer dot minus 128 * sum(w), times da * dw, summed
 * in F32 (double for the reference is not needed: the integers are exact). */
void k_gen_qgemm(float *c, size_t ldc, const uint8_t *aq, const float *da, int rows, const void *w, int ncols, int k,
                 st_dtype dt, float beta);
typedef void (*k_widen_fn)(float *out, const void *in, size_t n, st_dtype dt);
typedef void (*k_gemv_fn)(float *y, const void *w, int n, int k, const float *x, float beta, st_dtype dt);
typedef void (*k_few_fn)(float *out, int ldo, const void *w, int n, int k, const float *in, int M, float beta,
                         st_dtype dt);
void k_quant_gemv(k_widen_fn widen, k_gemv_fn gemv, float *y, const void *w, int n, int k, const float *x, float beta,
                  st_dtype dt);
void k_quant_few(k_widen_fn widen, k_few_fn few, float *out, int ldo, const void *w, int n, int k, const float *in,
                 int M, float beta, st_dtype dt);
typedef void (*k_pack_fn)(float *bp, const void *w, size_t ldw, int ncols, int kc, st_dtype dt);
/* the ncols rows widened into an F32 [ncols][kc] buffer, then packed by the
 * level's own F32 pack_b (its vector transposes); kc <= GEMM_KC, NR <= 64 */
void k_quant_pack_b(k_widen_fn widen, k_pack_fn pack, float *bp, const void *w, size_t ldw, int ncols, int kc,
                    st_dtype dt);
/* One row of k F32 values (k % ST_QK == 0) into blocks of dt (the
 * engine_int.h formats; round to nearest, llama.cpp's scales). Portable:
 * it runs once per weight, at load or by `mfaserve quantize`. */
void k_quantize_row(void *dst, const float *x, size_t k, st_dtype dt);

/* A block's F16 scale: blocks may start at any byte (a mapping, a test) */
static inline uint16_t k_ld16(const void *p) {
  uint16_t h;
  __builtin_memcpy(&h, p, 2);
  return h;
}

/* Scalar helpers every level shares (arch/generic.c). */
const float *k_f16_lut(void); /* [65536]: every F16 bit pattern as F32 (filled on first use) */
float k_f16_to_f32_1(uint16_t h);
uint16_t k_f32_to_f16_1(float f);
float k_bf16_to_f32_1(uint16_t h);
void k_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* the portable vmax */
float k_gen_vmax(const float *x, int n);
/* The portable kernels other levels may reuse where the compiler's
 * vectorisation of them is as good as hand-written code. */
void k_gen_swiglu(float *g, const float *u, int n);
void k_gen_attn_scores(float *S, int lds, const float *Qt, int ldq, int R8, const float *K, int T4, int hd);
void k_gen_attn_scores_few(float *S, int lds, const float *const *q, int R, float scale, const float *K, int T,
                           int hd);
void k_gen_attn_softmax(float *S, int lds, int T, int R8, const float *valid, float *m, float *l, float *corr);
void k_gen_attn_accum(float *O, const float *P, int ldp, const float *V, int ldv, int T, int R, int hd,
                      const float *corr);
/* One int8 KV-cache row (kvcache.h): per group of `group` elements the
 * F16 scale s = max|x| / 127 and q = round(x / s), |q| <= 127. Runs once per
 * stored token, so one portable version serves every level. */
void k_kv_quant(int8_t *q, uint16_t *s, const float *x, int n, int group);
void k_gen_kv_dequant(float *out, const int8_t *q, const uint16_t *s, int n, int group);
/* x[hd] rotated in place (K()->rope_to through a stack copy) */
void k_rope(float *x, const float *cs, int hd);

#endif
