/* gemm.c: the packed GEMM for projections of many rows (prefill, large
 * decode batches), out[rows][n] (+)= A[rows][k] W[n][k]^T, with W in F32,
 * F16 or BF16, read where the model maps it.
 *
 * The loop nest is BLIS's, around the current level's register tile
 * (kernels.h: gemm_mr x gemm_nr, e.g. 12 x 32 with AVX-512):
 *   A is packed once per product into row panels ap[rows/MR][k][MR]
 *     (k_gemm_pack_a; the workers share it);
 *   each worker takes a chunk of GEMM_CHUNK output columns at a time, and
 *   for each block of GEMM_KC positions widens that chunk's weights into
 *     column panels bp[chunk/NR][KC][NR] (gemm_pack_b: about 128 KiB, stays
 *     in L2),
 *   then for each block of GEMM_MC rows (A's part: ~240 KiB, L2) runs the
 *   tile over every (row panel, column panel) pair; the tile's B panel
 *   (KC x NR floats, 32 KiB) stays in L1 while the row panels stream.
 * The 16-bit weights are widened exactly once per (chunk, KC block), into
 * cache, and every row of the step reuses them: there is no pass that
 * writes widened weights to memory. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

size_t k_gemm_scratch_floats(void) { return (size_t)k_gemm_chunk() * GEMM_KC; }

int k_gemm_chunk(void) {
  int nr = K()->gemm_nr;
  return (GEMM_CHUNK + nr - 1) / nr * nr;
}

void k_gemm_pack_a(float *ap, const float *a, int rows, int k, int rb0, int rb1) {
  k_pack_a(ap, a, rows, k, K()->gemm_mr, rb0, rb1);
}

void k_pack_a(float *ap, const float *a, int rows, int k, int MR, int rb0, int rb1) {
  for (int rb = rb0; rb < rb1; rb++) {
    float *dst = ap + (size_t)rb * k * MR;
    int r0 = rb * MR, nr = rows - r0 < MR ? rows - r0 : MR;
    for (int p = 0; p < k; p++) {
      for (int r = 0; r < nr; r++) dst[(size_t)p * MR + r] = a[(size_t)(r0 + r) * k + p];
      for (int r = nr; r < MR; r++) dst[(size_t)p * MR + r] = 0.0f;
    }
  }
}

void k_gemm_cols(float *c, size_t ldc, const float *ap, int rows, const void *w, int ncols, int k, st_dtype dt,
                 float beta, float *bp) {
  const k_table *kt = K();
  const int MR = kt->gemm_mr, NR = kt->gemm_nr;
  if (beta != 0.0f && beta != 1.0f) /* the tile adds or stores: scale first */
    for (int r = 0; r < rows; r++)
      for (int j = 0; j < ncols; j++) c[(size_t)r * ldc + j] *= beta;
  int mc = GEMM_MC / MR * MR;
  for (int j0 = 0; j0 < ncols; j0 += k_gemm_chunk()) {
    int nc = ncols - j0 < k_gemm_chunk() ? ncols - j0 : k_gemm_chunk();
    int npanels = (nc + NR - 1) / NR;
    for (int p0 = 0; p0 < k; p0 += GEMM_KC) {
      int kc = k - p0 < GEMM_KC ? k - p0 : GEMM_KC;
      int acc = p0 > 0 || beta != 0.0f;
      for (int jp = 0; jp < npanels; jp++) {
        int cols = nc - jp * NR < NR ? nc - jp * NR : NR;
        const void *src = st_at(w, dt, (size_t)(j0 + jp * NR), (size_t)k, (size_t)p0);
        kt->gemm_pack_b(bp + (size_t)jp * kc * NR, src, (size_t)k, cols, kc, dt);
      }
      for (int i0 = 0; i0 < rows; i0 += mc) {
        int i1 = rows - i0 < mc ? rows : i0 + mc;
        for (int jp = 0; jp < npanels; jp++) {
          int cols = nc - jp * NR < NR ? nc - jp * NR : NR;
          const float *b = bp + (size_t)jp * kc * NR;
          for (int r0 = i0; r0 < i1; r0 += MR) {
            int mr = i1 - r0 < MR ? i1 - r0 : MR;
            const float *a = ap + (size_t)(r0 / MR) * k * MR + (size_t)p0 * MR;
            kt->gemm_tile(kc, a, b, c + (size_t)r0 * ldc + j0 + jp * NR, ldc, mr, cols, acc);
          }
        }
      }
    }
  }
}

int k_gemm(float *c, size_t ldc, const float *a, int rows, const void *w, int n, int k, st_dtype dt, float beta) {
  const int MR = K()->gemm_mr;
  int nrb = (rows + MR - 1) / MR;
  float *ap = malloc((size_t)nrb * MR * k * sizeof *ap + 64), *bp = malloc(k_gemm_scratch_floats() * sizeof *bp);
  if (!ap || !bp) {
    free(ap);
    free(bp);
    return -1;
  }
  k_gemm_pack_a(ap, a, rows, k, 0, nrb);
  k_gemm_cols(c, ldc, ap, rows, w, n, k, dt, beta, bp);
  free(ap);
  free(bp);
  return 0;
}

/* ------------------------------------------------ quantized weights */

#define QBUF_FLOATS 8192 /* 32 KiB of dequantized rows: stays in L1/L2 */

/* W's row i times x for a row longer than the buffer: widened a buffer at
 * a time, each piece's dot product by the level's gemv (or, without one,
 * its few-row kernel with one row) */
static float long_row_dot(k_widen_fn widen, k_gemv_fn gemv, k_few_fn few, const void *w, size_t i, int k,
                          const float *x, st_dtype dt, float *buf) {
  float s = 0;
  for (int j0 = 0; j0 < k; j0 += QBUF_FLOATS) {
    int kk = k - j0 < QBUF_FLOATS ? k - j0 : QBUF_FLOATS;
    widen(buf, st_at(w, dt, i, (size_t)k, (size_t)j0), (size_t)kk, dt);
    float t;
    if (gemv) gemv(&t, buf, 1, kk, x + j0, 0.0f, ST_F32);
    else few(&t, 1, buf, 1, kk, x + j0, 1, 0.0f, ST_F32);
    s += t;
  }
  return s;
}

void k_quant_gemv(k_widen_fn widen, k_gemv_fn gemv, float *y, const void *w, int n, int k, const float *x, float beta,
                  st_dtype dt) {
  float buf[QBUF_FLOATS] __attribute__((aligned(64)));
  for (int i = 0; i < n; i++) {
    float s = long_row_dot(widen, gemv, NULL, w, (size_t)i, k, x, dt, buf);
    y[i] = beta == 0.0f ? s : beta * y[i] + s;
  }
}

void k_quant_few(k_widen_fn widen, k_few_fn few, float *out, int ldo, const void *w, int n, int k, const float *in,
                 int M, float beta, st_dtype dt) {
  float buf[QBUF_FLOATS] __attribute__((aligned(64)));
  if (k > QBUF_FLOATS) { /* rare: a row at a time, in pieces */
    for (int m = 0; m < M; m++)
      for (int i = 0; i < n; i++) {
        float s = long_row_dot(widen, NULL, few, w, (size_t)i, k, in + (size_t)m * k, dt, buf);
        float *o = out + (size_t)m * ldo + i;
        *o = beta == 0.0f ? s : beta * *o + s;
      }
    return;
  }
  int rows = QBUF_FLOATS / k;
  for (int i = 0; i < n; i += rows) {
    int cnt = n - i < rows ? n - i : rows;
    widen(buf, st_at(w, dt, (size_t)i, (size_t)k, 0), (size_t)cnt * k, dt);
    few(out + i, ldo, buf, cnt, k, in, M, beta, ST_F32);
  }
}

void k_quant_pack_b(k_widen_fn widen, k_pack_fn pack, float *bp, const void *w, size_t ldw, int ncols, int kc,
                    st_dtype dt) {
  float buf[64 * GEMM_KC] __attribute__((aligned(64))); /* ncols <= NR <= 64 rows of kc <= GEMM_KC */
  for (int j = 0; j < ncols; j++) widen(buf + (size_t)j * kc, st_at(w, dt, (size_t)j, ldw, 0), (size_t)kc, dt);
  pack(bp, buf, (size_t)kc, ncols, kc, ST_F32);
}

/* ---------------------------------------- int8 products (qgemm_cols) */

void k_qgemm_quant_a(uint8_t *aq, float *da, const float *a, int r0, int r1, int k) {
  int nb = k / ST_QK;
  for (int r = r0; r < r1; r++)
    for (int b = 0; b < nb; b++) {
      const float *x = a + (size_t)r * k + (size_t)b * ST_QK;
      float amax = 0;
      for (int i = 0; i < ST_QK; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
      float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
      uint8_t *q = aq + (size_t)r * k + (size_t)b * ST_QK;
      for (int i = 0; i < ST_QK; i++) {
        float v = rintf(x[i] * id);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v == v ? v : 0.0f;
        q[i] = (uint8_t)((int)v + 128);
      }
      da[(size_t)r * nb + b] = d;
    }
}

/* weight j of block b of a quantized row as an int, and the block's scale */
static inline int q_weight(const uint8_t *blk, st_dtype dt, int i) {
  if (dt == ST_Q8_0) return (int8_t)blk[2 + i];
  return i < ST_QK / 2 ? (blk[2 + i] & 15) - 8 : (blk[2 + i - ST_QK / 2] >> 4) - 8;
}

void k_gen_qgemm(float *c, size_t ldc, const uint8_t *aq, const float *da, int rows, const void *w, int ncols, int k,
                 st_dtype dt, float beta) {
  const float *lut = k_f16_lut();
  int nb = k / ST_QK;
  size_t bs = st_bytes(dt, ST_QK);
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < ncols; j++) {
      const uint8_t *row = st_at(w, dt, (size_t)j, (size_t)k, 0);
      float s = 0;
      for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * bs, *q = aq + (size_t)r * k + (size_t)b * ST_QK;
        int32_t dot = 0, ws = 0;
        for (int i = 0; i < ST_QK; i++) {
          int wi = q_weight(blk, dt, i);
          dot += (int32_t)q[i] * wi;
          ws += wi;
        }
        uint16_t h;
        memcpy(&h, blk, 2);
        s += (float)(dot - 128 * ws) * (lut[h] * da[(size_t)r * nb + b]);
      }
      float *o = c + (size_t)r * ldc + j;
      *o = beta == 0.0f ? s : beta * *o + s;
    }
}
