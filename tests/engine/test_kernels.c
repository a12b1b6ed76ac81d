/* test_kernels.c: every kernel level of this binary (engine/kernels.h) held to
 * the portable one, k_table_generic, and the portable one held to float64.
 *
 * For each level in k_levels_supported() other than "generic", every member
 * of its k_table runs on random inputs of many shapes (odd sizes, vector
 * tails, n = 1, k = 1, misaligned pointers, every weight dtype, beta 0 / 1 /
 * 0.5) and its output is compared with k_table_generic's on the same input.
 * The generic level itself is compared with float64 references computed here
 * from the contract in kernels.h (a bug in it would otherwise be inherited by
 * every comparison). The packed-GEMM members (gemm_pack_b, gemm_tile) have
 * level-specific panel shapes (gemm_mr x gemm_nr), so each is held to the
 * contract directly, and the whole packed product (k_gemm in gemm.c, run with
 * the level selected) is compared with k_gemm at the generic level and with
 * OpenBLAS's cblas_sgemm on the widened weights; gemm_few is also compared
 * with cblas_sgemm.
 *
 * Tolerances (see tol_chain): a result that is a sum of L rounded products
 * is within gamma_L * sum|terms| of the exact value whatever the order of
 * the additions (gamma_L ~ L u, u = 2^-24), so two implementations are within
 * 2 gamma_L * sum|terms|. That worst case (every rounding error of one sign)
 * is used for chains up to 80 terms and capped at 2 u (80 + 4) ~ 1.0e-5 for
 * longer ones: with zero-mean data the accumulated error stays near u *
 * sum|terms| whatever the length (the largest |err|/tol printed per kernel
 * was 0.27 over 60 seeds, 0.40 for rope_to's 5 u bound), while one term read
 * from a wrong index moves a result
 * by ~sum|terms| / L, still 6x the cap at L = 16385. A self-check at start
 * proves that: a weight row off by one, two output elements swapped, the last
 * input element read from its neighbour, a key or value row off by one, one
 * extra unmasked key, a cos/sin index off by one, an A panel off by one row
 * must each fail the comparison that the real cases pass. Conversions
 * (widen, pack_b, f32_to_f16) must be bit-exact; exp-based kernels (softmax,
 * swiglu) get 1e-6 resp. 2e-6 relative for the vector exp (Cephes, ~2e-7).
 * Outputs must not be written outside their region (sentinels around every
 * output), and beta 0 / acc 0 must not read the output (it starts as NaN).
 *
 * Quantized weights (ST_Q8_0, ST_Q4_0: llama.cpp's block_q8_0 / block_q4_0,
 * engine_int.h) are decoded here by an independent decoder written from the
 * documented layout (q_decode), never by the engine's code:
 * - k_quantize_row (portable, checked on the generic pass) against its
 *   contract on rows whose blocks have magnitudes 1e-3..1e3, an all-zero block
 *   and blocks of small values with one outlier: the block's F16 scale is the
 *   F16 rounding of amax / 127 (Q8_0) resp. max / -8, max the value of largest
 *   magnitude with its sign (Q4_0); every element decodes within half a step,
 *   |x - q d| <= |d| / 2 (+ the rounding of x * (1 / d)), except the clipped
 *   ones: Q8_0 codes stay in -127..127 (|x / d| > 127.5 only where an F16
 *   subnormal scale rounded down), Q4_0 codes in 0..15, so values of the sign
 *   opposite to max beyond 7.5 |d| decode as 7 d; an all-zero block has scale
 *   +-0 and the zero code, and so has a NaN element (the scale ignores it;
 *   docs/quantized-weights.md); nothing is written past the row's blocks.
 * - every level's widen of random blocks (any int8 / nibble, scales of both
 *   signs, zero, subnormal) bit-exact against the decoder (q * d is exact in
 *   float), at any byte offset, lengths 0..40 blocks and a few thousand.
 * - gemv, gemm_few (M 2..few_max), gemm_pack_b and k_gemm (rows > few_max,
 *   k not a multiple of GEMM_KC, ncols not a multiple of NR) on quantized
 *   weights, k up to 20000 (past gemm.c's 8192-float buffer and generic's
 *   16384-float rows), beta 0 / 1 / 0.5: the generic level against float64 on
 *   the decoded weights, every other against generic, same tolerances as the
 *   16-bit weights. k_gemm is also held to float64 on the generic pass (every
 *   dtype).
 * The self-check adds wrong decodes (Q4_0 nibble halves swapped, one block's
 * scale off by one F16 ulp or read from the next block) and wrong
 * k_quantize_row outputs (scale off by one ulp, one code off by one, nibble
 * halves swapped), each of which must fail.
 *
 * A level this binary has but the CPU lacks prints "SKIP level NAME: not
 * supported by this CPU"; one the binary does not have (k_level_by_name is
 * NULL: neon on x86-64, the x86 levels on aarch64) "SKIP level NAME: not
 * built for this architecture".
 *
 * usage: test_kernels [SEED]   (or MFS_TEST_SEED; fixed default, printed) */
#include <cblas.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "kernels.h"

#define DEFAULT_SEED 20261204u
#define U_ 0x1p-24       /* unit roundoff of float */
#define CHAIN_CAP 80     /* worst-case bound used up to this chain length */
#define EXP_REL 1e-6     /* vector exp (Cephes, ~2e-7) vs expf */
#define SWIGLU_REL 2e-6  /* exp + 3 roundings each side */
#define TINY 1e-37       /* below every magnitude the cases produce */
#define SENT 0x7fa5a5a5u /* sentinel (a signalling NaN) around outputs */
#define NAN_BITS 0x7fc00000u
#define PRINT_MAX 6 /* failures printed per kernel and level */

/* ------------------------------------------------------------ random */

static uint64_t rng;
static uint64_t rnd64(void) { /* splitmix64 */
  uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static double rnd01(void) { return (double)(rnd64() >> 11) * 0x1p-53; }
static int rndi(int lo, int hi) { return lo + (int)(rnd64() % (uint64_t)(hi - lo + 1)); } /* [lo, hi] */
static float rndf(float a) { return (float)((2 * rnd01() - 1) * a); }                       /* (-a, a) */
static int pick(const int *v, int n) { return v[rnd64() % (uint64_t)n]; }
#define PICK(arr) pick(arr, (int)(sizeof arr / sizeof arr[0]))
#define NELEM(arr) ((int)(sizeof arr / sizeof arr[0]))

/* ------------------------------------------------- independent float16 */

static double f16_val(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  if (e == 31) return m ? NAN : (s ? -INFINITY : INFINITY);
  double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
  return s ? -v : v;
}

/* round to nearest, ties to even (nearbyint in the default mode) */
static uint16_t f16_round(float f) {
  if (isnan(f)) return 0x7e00;
  uint16_t sign = signbit(f) ? 0x8000 : 0;
  double a = fabs((double)f);
  if (a >= 65520.0) return sign | 0x7c00;
  int e;
  frexp(a, &e);
  double ulp = a < 0x1p-14 ? 0x1p-24 : ldexp(1.0, e - 1 - 10);
  double v = nearbyint(a / ulp) * ulp;
  if (v < 0x1p-14) return sign | (uint16_t)(v / 0x1p-24);
  frexp(v, &e);
  int ex = e - 1;
  return sign | (uint16_t)((ex + 15) << 10) | (uint16_t)(v / ldexp(1.0, ex - 10) - 1024);
}

static uint16_t bf16_round(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static float bits_f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint32_t f_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static const char *dt_name(st_dtype dt) {
  return dt == ST_F32 ? "f32" : dt == ST_F16 ? "f16" : dt == ST_BF16 ? "bf16" : dt == ST_Q8_0 ? "q8_0" : "q4_0";
}
static size_t dt_size(st_dtype dt) { return dt == ST_F32 ? 4 : 2; } /* F32 / F16 / BF16 */

/* ------------------------------------- quantized blocks (engine_int.h) */

/* llama.cpp's block_q8_0 {F16 d; int8 q[32]} (34 bytes) and block_q4_0
 * {F16 d; uint8 q[16]} (18 bytes; weight i < 16 is the low nibble of q[i],
 * weight i >= 16 the high nibble of q[i - 16], both minus 8), written here
 * from engine_int.h's comment, not from the engine's code. */
#define QK 32
static int is_q(st_dtype dt) { return dt == ST_Q8_0 || dt == ST_Q4_0; }
static size_t qblock_bytes(st_dtype dt) { return dt == ST_Q8_0 ? 34 : 18; }
/* bytes of n consecutive elements (quantized: n % QK == 0) */
static size_t dt_bytes(st_dtype dt, size_t n) { return is_q(dt) ? n / QK * qblock_bytes(dt) : n * dt_size(dt); }
static uint16_t qb_scale(const uint8_t *b) { return (uint16_t)(b[0] | b[1] << 8); } /* little-endian F16 */
/* the raw code of element i: Q8_0 -128..127, Q4_0 the nibble 0..15 */
static int qb_code(const uint8_t *b, int i, st_dtype dt) {
  if (dt == ST_Q8_0) return (int)(int8_t)b[2 + i];
  return i < QK / 2 ? b[2 + i] & 15 : b[2 + i - QK / 2] >> 4;
}

/* Decoders for the self-check's wrong expectations: */
enum { QD_OK, QD_NIBBLES_SWAPPED, QD_SCALE_ULP, QD_SCALE_NEXT };

/* n elements (n % QK == 0) of blocks of dt at in -> out, w = q * d (exact in
 * float: 8 x 11 significant bits). flaw != QD_OK decodes wrongly: Q4_0's
 * nibble halves swapped (every block), or block flaw_block's scale one F16
 * ulp larger in magnitude, or taken from the next block. */
static void q_decode(float *out, const void *in, size_t n, st_dtype dt, int flaw, size_t flaw_block) {
  const uint8_t *b = in;
  size_t bs = qblock_bytes(dt);
  for (size_t blk = 0; blk < n / QK; blk++, b += bs) {
    uint16_t h = qb_scale(b);
    if (blk == flaw_block && flaw == QD_SCALE_ULP) h++;
    if (blk == flaw_block && flaw == QD_SCALE_NEXT) h = qb_scale(b + bs);
    double d = f16_val(h);
    for (int i = 0; i < QK; i++) {
      int q = qb_code(b, i, dt);
      if (dt == ST_Q4_0) q = qb_code(b, flaw == QD_NIBBLES_SWAPPED ? (i + QK / 2) % QK : i, dt) - 8;
      out[blk * QK + i] = (float)(q * d);
    }
  }
}

/* a random block scale: +-0 (1/16), an F16 subnormal (1/16), else normal of
 * either sign with |q d| up to ~1 */
static uint16_t rnd_qscale(st_dtype dt) {
  int kind = rndi(0, 15);
  if (kind == 0) return rnd64() & 1 ? 0x8000 : 0;
  if (kind == 1) return (uint16_t)((rnd64() & 1 ? 0x8000 : 0) | rndi(1, 0x3ff));
  double a = pow(10.0, -1.5 * rnd01()) / (dt == ST_Q8_0 ? 127 : 8);
  return f16_round((float)(rnd64() & 1 ? -a : a));
}

/* nblocks random blocks at b: any scale above, any code */
static void q_fill(uint8_t *b, size_t nblocks, st_dtype dt) {
  size_t bs = qblock_bytes(dt);
  for (size_t k = 0; k < nblocks; k++, b += bs) {
    uint16_t h = rnd_qscale(dt);
    b[0] = (uint8_t)(h & 255), b[1] = (uint8_t)(h >> 8);
    for (size_t i = 2; i < bs; i++) b[i] = (uint8_t)rnd64();
  }
}

/* --------------------------------------------------------- bookkeeping */

enum {
  KS_GEMV, KS_FEW, KS_PACK, KS_TILE, KS_GEMM, KS_GEMM_BLAS, KS_FEW_BLAS, KS_WIDEN, KS_F16, KS_ROPE,
  KS_SWIGLU, KS_SCORES, KS_SCORES_FEW, KS_SOFTMAX, KS_ACCUM, KS_BURN, KS_KVQ, KS_KVDQ, KS_QROW, KS_QWIDEN,
  KS_GEMM_F64, KS_QGEMM_A, KS_QGEMM, KS_RL, KS_VMAX, KS_N
};
static const char *ks_name[KS_N] = {"gemv", "gemm_few", "gemm_pack_b", "gemm_tile", "k_gemm vs generic",
                                    "k_gemm vs cblas", "gemm_few vs cblas", "widen", "f32_to_f16", "rope_to",
                                    "swiglu", "attn_scores", "attn_scores_few", "attn_softmax", "attn_accum",
                                    "fma_burn", "k_kv_quant", "kv_dequant", "k_quantize_row",
                                    "widen q8_0/q4_0", "k_gemm vs float64", "qgemm_quant_a",
                                    "qgemm_cols", "gemm_rl", "vmax"};
typedef struct {
  long cases, failed, printed;
  double worst; /* max |err| / tol over the passing comparisons */
} kstat;
static kstat ks[KS_N];
static const char *level_name; /* being tested */
static int quiet;              /* self-check: no output, no stats */
static long case_bad;          /* elements out of tolerance in the current case */
static int case_kid;
static char case_desc[256];

static void case_begin(int kid, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void case_begin(int kid, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(case_desc, sizeof case_desc, fmt, ap);
  va_end(ap);
  case_kid = kid;
  case_bad = 0;
}

static void case_end(void) {
  if (quiet) return;
  ks[case_kid].cases++;
  if (case_bad) ks[case_kid].failed++;
}

static int report(void) { return !quiet && ks[case_kid].printed++ < PRINT_MAX; }

/* got[i] vs want[i] within rel * mag[i] + abst (mag NULL: |want|); NaN in
 * got where want is a number fails. */
static long cmp(const char *what, const float *got, const double *want, const double *mag, size_t n, double rel,
                double abst) {
  long bad = 0;
  size_t first = 0;
  double worst = 0, first_err = 0, first_tol = 0;
  for (size_t i = 0; i < n; i++) {
    double m = mag ? mag[i] : fabs(want[i]);
    double tol = rel * m + abst, err = fabs((double)got[i] - want[i]);
    if (!(err <= tol)) {
      if (!bad) first = i, first_err = err, first_tol = tol;
      bad++;
      if (err > worst || isnan(err)) worst = isnan(err) ? INFINITY : err;
    } else if (!quiet && tol > 0 && err / tol > ks[case_kid].worst) {
      ks[case_kid].worst = err / tol;
    }
  }
  if (bad && report())
    fprintf(stderr,
            "FAIL level %s %s [%s] %s: %ld of %zu elements out of tolerance; first [%zu] got %.9g want %.9g "
            "|err| %.3g tol %.3g; max |err| %.3g\n",
            level_name, ks_name[case_kid], case_desc, what, bad, n, first, (double)got[first], want[first],
            first_err, first_tol, worst);
  case_bad += bad;
  return bad;
}

/* Elements of buf[0..total) outside the region (rows x cols, stride ld,
 * from 0) must still hold the sentinel. */
static long untouched(const char *what, const float *buf, size_t total, size_t rows, size_t cols, size_t ld) {
  long bad = 0;
  size_t first = 0;
  for (size_t i = 0; i < total; i++) {
    int in = i / ld < rows && i % ld < cols;
    if (in) continue;
    if (f_bits(buf[i]) != SENT) {
      if (!bad) first = i;
      bad++;
    }
  }
  if (bad && report())
    fprintf(stderr, "FAIL level %s %s [%s] %s: %ld elements outside the output written (first at %zu: %.9g)\n",
            level_name, ks_name[case_kid], case_desc, what, bad, first, (double)buf[first]);
  case_bad += bad;
  return bad;
}

/* ------------------------------------------------------------- buffers */

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "out of memory (%zu bytes)\n", n);
    exit(1);
  }
  return p;
}

static void fill_sent(float *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = bits_f(SENT);
}

/* n random floats in (-a, a) */
static float *rvec(size_t n, float a) {
  float *p = xmalloc(n * sizeof *p);
  for (size_t i = 0; i < n; i++) p[i] = rndf(a);
  return p;
}

static float *fdup(const float *p, size_t n) {
  float *q = xmalloc(n * sizeof *q);
  memcpy(q, p, n * sizeof *q);
  return q;
}

/* Chains of L rounded operations, two implementations (see the header). */
static double tol_chain(int L) {
  if (L > CHAIN_CAP) L = CHAIN_CAP;
  return 2.0 * U_ * (L + 4);
}

/* A weight matrix [rows][k] in dtype dt, at a random misalignment, and its
 * exact widening wf (float64-exact: every F16/BF16 value is a float). */
typedef struct {
  void *base;
  const void *p;
  float *wf;
  st_dtype dt;
  int rows, k;
} wmat;

static wmat wmat_new(st_dtype dt, int rows, int k, int misalign) {
  wmat m = {0};
  if (is_q(dt)) { /* random blocks at any byte offset (k % QK == 0) */
    size_t n = (size_t)rows * k, bytes = dt_bytes(dt, n);
    int off = misalign ? rndi(1, 35) : 0;
    if (k % QK) {
      fprintf(stderr, "test bug: quantized matrix with k=%d\n", k);
      exit(1);
    }
    m.base = xmalloc(bytes + off);
    m.wf = xmalloc(n * sizeof *m.wf);
    m.dt = dt, m.rows = rows, m.k = k;
    q_fill((uint8_t *)m.base + off, n / QK, dt);
    m.p = (const char *)m.base + off;
    q_decode(m.wf, m.p, n, dt, QD_OK, 0);
    return m;
  }
  size_t n = (size_t)rows * k, esz = dt_size(dt);
  int off = misalign ? rndi(1, 7) : 0;
  m.base = xmalloc((n + off) * esz); /* the data ends where the block does */
  m.wf = xmalloc(n * sizeof *m.wf);
  m.dt = dt, m.rows = rows, m.k = k;
  for (size_t i = 0; i < n; i++) {
    float v = rndf(1.0f);
    if (dt == ST_F32) {
      ((float *)m.base)[off + i] = v;
      m.wf[i] = v;
    } else if (dt == ST_F16) {
      uint16_t h = f16_round(v);
      ((uint16_t *)m.base)[off + i] = h;
      m.wf[i] = (float)f16_val(h);
    } else {
      uint16_t h = bf16_round(v);
      ((uint16_t *)m.base)[off + i] = h;
      m.wf[i] = bits_f((uint32_t)h << 16);
    }
  }
  m.p = (const char *)m.base + off * esz;
  return m;
}

static const void *wrow(const wmat *m, int r) { return (const char *)m->p + dt_bytes(m->dt, (size_t)r * m->k); }

static void wmat_free(wmat *m) {
  free(m->base);
  free(m->wf);
}

/* A float array at a random misalignment (0..7 floats) that ends where its
 * block ends (so that AddressSanitizer sees a read past it). */
typedef struct {
  float *base, *p;
} fbuf;
static fbuf fbuf_new(size_t n) {
  fbuf b;
  int off = rndi(0, 7);
  b.base = xmalloc((n + off) * sizeof(float));
  b.p = b.base + off;
  return b;
}

static const k_table *G; /* k_table_generic */
static int gen_pass;     /* the level under test is generic: compare with float64 */

/* want = generic's output, or in the generic pass the float64 reference */
static double *want_of(const float *gen, const double *ref, size_t n) {
  double *w = xmalloc(n * sizeof *w);
  for (size_t i = 0; i < n; i++) w[i] = gen_pass ? ref[i] : (double)gen[i];
  return w;
}

/* ---------------------------------------------------------------- gemv */

/* y (n + 16, sentinels after n) = beta y + W x */
static void case_gemv(const k_table *t, st_dtype dt, int n, int k, float beta) {
  case_begin(KS_GEMV, "%s n=%d k=%d beta=%g", dt_name(dt), n, k, beta);
  wmat W = wmat_new(dt, n, k, 1);
  fbuf xb = fbuf_new(k);
  for (int j = 0; j < k; j++) xb.p[j] = rndf(1.0f);
  size_t tot = (size_t)n + 16;
  float *y0 = xmalloc(tot * sizeof *y0);
  fill_sent(y0, tot);
  for (int i = 0; i < n; i++) y0[i] = beta == 0.0f ? bits_f(NAN_BITS) : rndf(2.0f);
  double *ref = xmalloc(n * sizeof *ref), *mag = xmalloc(n * sizeof *mag);
  /* a level with int8 products rounds x like k_qgemm_quant_a for quantized
   * weights (kernels.h): its reference is the product with that x */
  int int8 = !gen_pass && is_q(dt) && t->qgemm_cols && k / QK <= 512;
  float *xr = fdup(xb.p, (size_t)k);
  if (int8) {
    uint8_t *aq = xmalloc((size_t)k);
    float *da = xmalloc((size_t)(k / QK) * sizeof *da);
    k_qgemm_quant_a(aq, da, xb.p, 0, 1, k);
    for (int j = 0; j < k; j++) xr[j] = (float)(((int)aq[j] - 128) * (double)da[j / QK]);
    free(aq), free(da);
  }
  for (int i = 0; i < n; i++) {
    double s = 0, a = 0;
    for (int j = 0; j < k; j++) {
      double p = (double)W.wf[(size_t)i * k + j] * (int8 ? (double)xr[j] : (double)xb.p[j]);
      s += p, a += fabs(p);
    }
    double yb = beta == 0.0f ? 0 : (double)beta * y0[i];
    ref[i] = yb + s;
    mag[i] = fabs(yb) + a;
  }
  float *yg = fdup(y0, tot), *yl = NULL;
  G->gemv(yg, W.p, n, k, xb.p, beta, dt);
  if (!gen_pass) {
    yl = fdup(y0, tot);
    t->gemv(yl, W.p, n, k, xb.p, beta, dt);
  }
  const float *got = gen_pass ? yg : yl;
  double *want = int8 ? ref : want_of(yg, ref, n);
  cmp("y", got, want, mag, n, tol_chain(k + 2), TINY);
  untouched("y", got, tot, 1, n, tot);
  case_end();
  if (want != ref) free(want);
  free(yg), free(yl), free(ref), free(mag), free(y0), free(xb.base), free(xr);
  wmat_free(&W);
}

/* ----------------------------------------------------------- gemm_few */

/* A product of M rows for gemm_few / gemm_rl: the output block o0 (ldo,
 * sentinels around it, NaN where beta 0 must not read) and the float64
 * reference with its magnitudes (ref, mag: [M][n]) */
static float *rows_case(const wmat *W, const float *x, int M, int n, int k, float beta, int ldo, size_t tot,
                        double **ref, double **mag) {
  float *o0 = xmalloc(tot * sizeof *o0);
  fill_sent(o0, tot);
  for (int m = 0; m < M; m++)
    for (int i = 0; i < n; i++) o0[(size_t)m * ldo + i] = beta == 0.0f ? bits_f(NAN_BITS) : rndf(2.0f);
  size_t nn = (size_t)M * n;
  *ref = xmalloc(nn * sizeof **ref), *mag = xmalloc(nn * sizeof **mag);
  for (int m = 0; m < M; m++)
    for (int i = 0; i < n; i++) {
      double s = 0, a = 0;
      for (int j = 0; j < k; j++) {
        double p = (double)W->wf[(size_t)i * k + j] * x[(size_t)m * k + j];
        s += p, a += fabs(p);
      }
      double yb = beta == 0.0f ? 0 : (double)beta * o0[(size_t)m * ldo + i];
      (*ref)[(size_t)m * n + i] = yb + s;
      (*mag)[(size_t)m * n + i] = fabs(yb) + a;
    }
  return o0;
}

/* rows_case's product checked: gotb (ldo) against the generic level's genb
 * or the float64 reference, nothing written outside the block */
static void rows_check(const float *gotb, const float *genb, const double *ref, const double *mag, int M, int n,
                       int k, int ldo, size_t tot) {
  size_t nn = (size_t)M * n;
  float *got = xmalloc(nn * sizeof *got), *gen = xmalloc(nn * sizeof *gen);
  for (int m = 0; m < M; m++) {
    memcpy(got + (size_t)m * n, gotb + (size_t)m * ldo, (size_t)n * sizeof *got);
    memcpy(gen + (size_t)m * n, genb + (size_t)m * ldo, (size_t)n * sizeof *gen);
  }
  double *want = want_of(gen, ref, nn);
  cmp("out", got, want, mag, nn, tol_chain(k + 2), TINY);
  untouched("out", gotb, tot, M, n, ldo);
  free(want), free(got), free(gen);
}

static void case_few(const k_table *t, st_dtype dt, int M, int n, int k, float beta) {
  case_begin(KS_FEW, "%s M=%d n=%d k=%d beta=%g", dt_name(dt), M, n, k, beta);
  wmat W = wmat_new(dt, n, k, 1);
  fbuf xb = fbuf_new((size_t)M * k);
  for (size_t j = 0; j < (size_t)M * k; j++) xb.p[j] = rndf(1.0f);
  int ldo = n + rndi(0, 5);
  size_t tot = (size_t)M * ldo + 16;
  double *ref, *mag;
  float *o0 = rows_case(&W, xb.p, M, n, k, beta, ldo, tot, &ref, &mag);
  float *og = fdup(o0, tot), *ol = NULL;
  G->gemm_few(og, ldo, W.p, n, k, xb.p, M, beta, dt);
  if (!gen_pass) {
    ol = fdup(o0, tot);
    t->gemm_few(ol, ldo, W.p, n, k, xb.p, M, beta, dt);
  }
  rows_check(gen_pass ? og : ol, og, ref, mag, M, n, k, ldo, tot);
  case_end();
  free(og), free(ol), free(ref), free(mag), free(o0), free(xb.base);
  wmat_free(&W);
}

/* gemm_few against cblas_sgemm on the widened weights (beta 0 and 1) */
static void case_few_blas(const k_table *t, st_dtype dt, int M, int n, int k, float beta) {
  case_begin(KS_FEW_BLAS, "%s M=%d n=%d k=%d beta=%g", dt_name(dt), M, n, k, beta);
  wmat W = wmat_new(dt, n, k, 1);
  float *in = rvec((size_t)M * k, 1.0f);
  size_t nn = (size_t)M * n;
  float *c0 = rvec(nn, 2.0f), *cb = fdup(c0, nn), *cl = fdup(c0, nn);
  if (beta == 0.0f)
    for (size_t i = 0; i < nn; i++) cl[i] = bits_f(NAN_BITS), cb[i] = 0;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, n, k, 1.0f, in, k, W.wf, k, beta, cb, n);
  t->gemm_few(cl, n, W.p, n, k, in, M, beta, dt);
  double *want = xmalloc(nn * sizeof *want), *mag = xmalloc(nn * sizeof *mag);
  for (int m = 0; m < M; m++)
    for (int i = 0; i < n; i++) {
      double a = beta == 0.0f ? 0 : fabs((double)beta * c0[(size_t)m * n + i]);
      for (int j = 0; j < k; j++) a += fabs((double)W.wf[(size_t)i * k + j] * in[(size_t)m * k + j]);
      want[(size_t)m * n + i] = cb[(size_t)m * n + i];
      mag[(size_t)m * n + i] = a;
    }
  cmp("out vs cblas", cl, want, mag, nn, tol_chain(k + 2), TINY);
  case_end();
  free(want), free(mag), free(c0), free(cb), free(cl), free(in);
  wmat_free(&W);
}

/* ----------------------------------------------------------- gemm_rl */

/* Rows on lanes (levels that have it): A packed into K_RL_MR-row panels by
 * k_pack_a, against float64 and the generic gemm_few on the same rows;
 * ashift: the panels handed over one position late (the self-check: must
 * fail). Returns the elements out of tolerance. */
static long case_rl(const k_table *t, st_dtype dt, int M, int n, int k, float beta, int ashift) {
  case_begin(KS_RL, "%s M=%d n=%d k=%d beta=%g%s", dt_name(dt), M, n, k, beta, ashift ? " (A shifted)" : "");
  wmat W = wmat_new(dt, n, k, 1);
  fbuf xb = fbuf_new((size_t)M * k);
  for (size_t j = 0; j < (size_t)M * k; j++) xb.p[j] = rndf(1.0f);
  int np = (M + K_RL_MR - 1) / K_RL_MR;
  float *ap = xmalloc(((size_t)np * k + 1) * K_RL_MR * sizeof *ap);
  fill_sent(ap, ((size_t)np * k + 1) * K_RL_MR);
  k_pack_a(ap, xb.p, M, k, K_RL_MR, 0, np);
  int ldo = n + rndi(0, 5);
  size_t tot = (size_t)M * ldo + 16;
  double *ref, *mag;
  float *o0 = rows_case(&W, xb.p, M, n, k, beta, ldo, tot, &ref, &mag);
  float *og = fdup(o0, tot), *ol = fdup(o0, tot);
  for (int m = 0; m < M; m += 8) { /* generic's gemm_few, in runs its few_max allows */
    int mm = M - m < 8 ? M - m : 8;
    if (mm == 1) G->gemv(og + (size_t)m * ldo, W.p, n, k, xb.p + (size_t)m * k, beta, dt);
    else G->gemm_few(og + (size_t)m * ldo, ldo, W.p, n, k, xb.p + (size_t)m * k, mm, beta, dt);
  }
  float *scratch = xmalloc(k_gemm_scratch_floats() * sizeof *scratch);
  t->gemm_rl(ol, ldo, W.p, n, k, ap + (ashift ? K_RL_MR : 0), M, beta, dt, scratch);
  rows_check(ol, og, ref, mag, M, n, k, ldo, tot);
  long bad = case_bad;
  case_end();
  free(og), free(ol), free(ref), free(mag), free(o0), free(xb.base), free(ap);
  free(scratch);
  wmat_free(&W);
  return bad;
}

/* -------------------------------------------------------------- vmax */

/* the largest non-NaN value, bit-exact (-inf when none); mode 0 plain,
 * 1 NaNs mixed in, 2 -infs, 3 all NaN, 4 all negative (a tail must not
 * bring in zeros) */
static void case_vmax(const k_table *t, int n, int mode) {
  case_begin(KS_VMAX, "n=%d mode=%d", n, mode);
  fbuf xb = fbuf_new((size_t)n + 1);
  float *x = xb.p + (rnd64() & 1); /* misaligned too */
  double want = -INFINITY;
  for (int i = 0; i < n; i++) {
    x[i] = mode == 4 ? -1.0f - rndf(1.0f) * rndf(1.0f) : rndf(100.0f);
    if (mode == 1 && rnd64() % 5 == 0) x[i] = bits_f(NAN_BITS);
    if (mode == 2 && rnd64() % 3 == 0) x[i] = -INFINITY;
    if (mode == 3) x[i] = bits_f(NAN_BITS);
    if (x[i] == x[i] && x[i] > want) want = x[i];
  }
  float got = t->vmax(x, n);
  if (!(got == (float)want) && report())
    printf("FAIL level %s vmax [%s]: got %.9g want %.9g\n", level_name, case_desc, got, want);
  if (!(got == (float)want)) case_bad++;
  case_end();
  free(xb.base);
}

/* -------------------------------------------------------- gemm_pack_b */

/* bp[p][j] = W[j][p] (p < kc, j < ncols), 0 past ncols: bit-exact */
static void case_pack(const k_table *t, st_dtype dt, int ncols, int kc, int ldw) {
  int NR = t->gemm_nr;
  case_begin(KS_PACK, "%s ncols=%d kc=%d ldw=%d NR=%d", dt_name(dt), ncols, kc, ldw, NR);
  wmat W = wmat_new(dt, ncols, ldw, 1);
  size_t tot = (size_t)kc * NR + 16;
  float *bp = xmalloc(tot * sizeof *bp);
  fill_sent(bp, tot);
  for (size_t i = 0; i < (size_t)kc * NR; i++) bp[i] = bits_f(NAN_BITS);
  t->gemm_pack_b(bp, W.p, (size_t)ldw, ncols, kc, dt);
  size_t nn = (size_t)kc * NR;
  double *want = xmalloc(nn * sizeof *want);
  for (int p = 0; p < kc; p++)
    for (int j = 0; j < NR; j++) want[(size_t)p * NR + j] = j < ncols ? W.wf[(size_t)j * ldw + p] : 0.0;
  cmp("bp", bp, want, NULL, nn, 0, 0);
  untouched("bp", bp, tot, 1, nn, tot);
  case_end();
  free(want), free(bp);
  wmat_free(&W);
}

/* ---------------------------------------------------------- gemm_tile */

/* C[r][j] = (acc ? C : 0) + sum_p ap[p][r] bp[p][j], r < mr, j < nr; a
 * shift of the A panel by `ashift` rows is the self-check's wrong index. */
static long case_tile(const k_table *t, int kc, int mr, int nr, int acc, int ldc, int ashift) {
  int MR = t->gemm_mr, NR = t->gemm_nr;
  case_begin(KS_TILE, "kc=%d mr=%d nr=%d acc=%d ldc=%d (MR %d NR %d)", kc, mr, nr, acc, ldc, MR, NR);
  float *ap = xmalloc(((size_t)kc * MR + (ashift ? MR : 0)) * sizeof *ap), *bp = xmalloc((size_t)kc * NR * sizeof *bp);
  for (int p = 0; p < kc; p++) {
    for (int r = 0; r < MR; r++) ap[(size_t)p * MR + r] = r < mr ? rndf(1.0f) : 0.0f;
    for (int j = 0; j < NR; j++) bp[(size_t)p * NR + j] = j < nr ? rndf(1.0f) : 0.0f;
  }
  for (int r = 0; r < MR && ashift; r++) ap[(size_t)kc * MR + r] = rndf(1.0f);
  size_t tot = (size_t)mr * ldc + 16;
  float *c = xmalloc(tot * sizeof *c);
  fill_sent(c, tot);
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nr; j++) c[(size_t)r * ldc + j] = acc ? rndf(2.0f) : bits_f(NAN_BITS);
  size_t nn = (size_t)mr * nr;
  double *want = xmalloc(nn * sizeof *want), *mag = xmalloc(nn * sizeof *mag);
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nr; j++) {
      double s = acc ? c[(size_t)r * ldc + j] : 0, a = fabs(s);
      for (int p = 0; p < kc; p++) {
        double q = (double)ap[(size_t)p * MR + r] * bp[(size_t)p * NR + j];
        s += q, a += fabs(q);
      }
      want[(size_t)r * nr + j] = s, mag[(size_t)r * nr + j] = a;
    }
  t->gemm_tile(kc, ap + ashift * MR, bp, c, (size_t)ldc, mr, nr, acc);
  float *got = xmalloc(nn * sizeof *got);
  for (int r = 0; r < mr; r++) memcpy(got + (size_t)r * nr, c + (size_t)r * ldc, (size_t)nr * sizeof *got);
  long bad = cmp("C", got, want, mag, nn, tol_chain(kc + 1), TINY);
  if (!ashift) untouched("C", c, tot, mr, nr, ldc);
  case_end();
  free(got), free(want), free(mag), free(c), free(ap), free(bp);
  return bad;
}

/* -------------------------------------------------------------- k_gemm */

static int select_level(const char *name) {
  char err[256];
  if (eng_isa_select(name, err, sizeof err) != 0) {
    fprintf(stderr, "FAIL eng_isa_select(%s): %s\n", name, err);
    return -1;
  }
  if (strcmp(eng_isa_name(), name) != 0 || strcmp(K()->name, name) != 0) {
    fprintf(stderr, "FAIL eng_isa_select(%s): running level is %s\n", name, K()->name);
    return -1;
  }
  return 0;
}

/* C (ldc) = beta C + A W^T: the packed product at the level (and at the
 * generic level), against cblas_sgemm on the widened weights.
 * wshift: self-check, cblas reads W one row off. */
static long case_gemm(const k_table *t, st_dtype dt, int rows, int n, int k, float beta, int wshift) {
  case_begin(KS_GEMM_BLAS, "%s rows=%d n=%d k=%d beta=%g", dt_name(dt), rows, n, k, beta);
  wmat W = wmat_new(dt, n + 1, k, 1);
  float *a = rvec((size_t)rows * k, 1.0f);
  int ldc = n + rndi(0, 7);
  size_t tot = (size_t)rows * ldc + 16, nn = (size_t)rows * n;
  float *c0 = xmalloc(tot * sizeof *c0);
  fill_sent(c0, tot);
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < n; j++) c0[(size_t)r * ldc + j] = beta == 0.0f ? bits_f(NAN_BITS) : rndf(2.0f);
  float *cb = xmalloc(nn * sizeof *cb);
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < n; j++) cb[(size_t)r * n + j] = beta == 0.0f ? 0.0f : c0[(size_t)r * ldc + j];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, k, 1.0f, a, k, W.wf + (size_t)wshift * k, k, beta,
              cb, n);
  double *mag = xmalloc(nn * sizeof *mag), *wb = xmalloc(nn * sizeof *wb), *ex = xmalloc(nn * sizeof *ex);
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < n; j++) {
      double yb = beta == 0.0f ? 0 : (double)beta * c0[(size_t)r * ldc + j], s = fabs(yb), e = yb;
      const float *ar = a + (size_t)r * k, *wr = W.wf + (size_t)j * k;
      for (int p = 0; p < k; p++) s += fabs((double)ar[p] * wr[p]), e += (double)ar[p] * wr[p];
      mag[(size_t)r * n + j] = s;
      ex[(size_t)r * n + j] = e;
      wb[(size_t)r * n + j] = cb[(size_t)r * n + j];
    }
  float *cl = fdup(c0, tot), *cg = NULL, *got = xmalloc(nn * sizeof *got);
  long bad = 0;
  int ran = 0;
  if (select_level(t->name) == 0 && k_gemm(cl, (size_t)ldc, a, rows, W.p, n, k, dt, beta) == 0) {
    ran = 1;
    for (int r = 0; r < rows; r++) memcpy(got + (size_t)r * n, cl + (size_t)r * ldc, (size_t)n * sizeof *got);
    bad += cmp("C vs cblas", got, wb, mag, nn, tol_chain(k + 2), TINY);
    if (!wshift) bad += untouched("C", cl, tot, rows, n, ldc);
  } else {
    case_bad++, bad++;
  }
  case_end();
  if (gen_pass && !wshift && ran) { /* the generic level's product against float64 (the decoded weights) */
    case_begin(KS_GEMM_F64, "%s rows=%d n=%d k=%d beta=%g", dt_name(dt), rows, n, k, beta);
    cmp("C vs float64", got, ex, mag, nn, tol_chain(k + 2), TINY);
    case_end();
  }
  if (!gen_pass && !wshift) { /* the same product at the generic level */
    case_begin(KS_GEMM, "%s rows=%d n=%d k=%d beta=%g", dt_name(dt), rows, n, k, beta);
    cg = fdup(c0, tot);
    if (select_level("generic") == 0 && k_gemm(cg, (size_t)ldc, a, rows, W.p, n, k, dt, beta) == 0) {
      for (int r = 0; r < rows; r++)
        for (int j = 0; j < n; j++) wb[(size_t)r * n + j] = cg[(size_t)r * ldc + j];
      cmp("C vs generic", got, wb, mag, nn, tol_chain(k + 2), TINY);
    } else {
      case_bad++;
    }
    case_end();
  }
  free(got), free(cl), free(cg), free(cb), free(mag), free(wb), free(ex), free(c0), free(a);
  wmat_free(&W);
  return bad;
}

/* ------------------------------------------------ widen, f32_to_f16 */

/* bit-exact; F16 NaNs need only stay NaN (F16C quiets signalling ones) */
static long widen_nan_payload_diffs;

static void check_bits_f32(const char *what, const float *got, const float *want, size_t n, int nan_any) {
  long bad = 0;
  size_t first = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t g = f_bits(got[i]), w = f_bits(want[i]);
    if (g == w) continue;
    if (nan_any && isnan(want[i]) && isnan(got[i])) {
      if (!quiet) widen_nan_payload_diffs++;
      continue;
    }
    if (!bad) first = i;
    bad++;
  }
  if (bad && report())
    fprintf(stderr, "FAIL level %s %s [%s] %s: %ld of %zu differ; first [%zu] got %08" PRIx32 " want %08" PRIx32 "\n",
            level_name, ks_name[case_kid], case_desc, what, bad, n, first, f_bits(got[first]), f_bits(want[first]));
  case_bad += bad;
}

static void case_widen(const k_table *t, st_dtype dt, size_t n, int exhaustive) {
  case_begin(KS_WIDEN, "%s n=%zu%s", dt_name(dt), n, exhaustive ? " (every 16-bit value)" : "");
  size_t esz = dt_size(dt);
  int ioff = rndi(0, 7);
  unsigned char *ib = xmalloc((n + ioff) * esz);
  void *in = ib + ioff * esz;
  float *want = xmalloc((n + 1) * sizeof *want);
  for (size_t i = 0; i < n; i++) {
    if (dt == ST_F32) {
      uint32_t u = (uint32_t)rnd64();
      memcpy((float *)in + i, &u, 4);
      want[i] = bits_f(u);
    } else {
      uint16_t h = exhaustive ? (uint16_t)i : (uint16_t)rnd64();
      if (!exhaustive && (rnd64() & 1)) h = dt == ST_F16 ? f16_round(rndf(4.0f)) : bf16_round(rndf(4.0f));
      ((uint16_t *)in)[i] = h;
      if (dt == ST_BF16) {
        want[i] = bits_f((uint32_t)h << 16);
      } else {
        double v = f16_val(h);
        want[i] = isnan(v) ? bits_f(((uint32_t)(h & 0x8000) << 16) | 0x7f800000u | ((uint32_t)(h & 0x3ff) << 13))
                           : (float)v;
      }
    }
  }
  size_t tot = n + 24;
  fbuf ob = fbuf_new(tot);
  fill_sent(ob.p, tot);
  float *og = xmalloc((n + 1) * sizeof *og);
  G->widen(og, in, n, dt);
  if (gen_pass) {
    memcpy(ob.p, og, n * sizeof *og);
  } else {
    t->widen(ob.p, in, n, dt);
  }
  check_bits_f32("out", ob.p, gen_pass ? want : og, n, dt == ST_F16);
  untouched("out", ob.p, tot, 1, n, tot);
  case_end();
  free(ib), free(want), free(og), free(ob.base);
}

/* ------------------------------------------- int8 KV rows (kvcache.h) */

/* k_kv_quant (one portable function; checked on the generic pass) against
 * its contract, and every level's kv_dequant bit-exact against q * scale
 * (exact in float: 8 x 11 significant bits). Groups of size `group`,
 * magnitudes spread over 1e-3..1e3 per group, one group all zero. */
static void case_kv_int8(const k_table *t, int n, int group) {
  int8_t *q = xmalloc((size_t)n + 1);
  uint16_t *s = xmalloc((size_t)(n / group + 1) * 2);
  float *x = xmalloc((size_t)n * sizeof *x);
  memset(x, 0, (size_t)n * sizeof *x);
  for (int g0 = 0; g0 < n; g0 += group) {
    float a = g0 == group ? 0.0f : (float)pow(10.0, rndi(-3, 3));
    for (int i = g0; i < g0 + group; i++) x[i] = rndf(a);
  }
  k_kv_quant(q, s, x, n, group);
  if (gen_pass) {
    case_begin(KS_KVQ, "n=%d group=%d", n, group);
    long bad = 0;
    for (int g0 = 0; g0 < n; g0 += group) {
      float amax = 0;
      for (int i = g0; i < g0 + group; i++) amax = fmaxf(amax, fabsf(x[i]));
      uint16_t want_s = f16_round(amax / 127.0f);
      double d = f16_val(s[g0 / group]);
      if (s[g0 / group] != want_s) bad++;
      for (int i = g0; i < g0 + group; i++) {
        int qi = q[i];
        /* within half a step, except where an F16 subnormal scale rounded down clips */
        double err = fabs((double)x[i] - qi * d);
        if (qi < -127 || qi > 127 || (err > 0.5 * d * (1 + 1e-6) && abs(qi) != 127) ||
            (d > 0 && fabs((double)x[i]) == amax && amax / d > 126.5 && abs(qi) != 127))
          bad++;
      }
    }
    if (bad && report()) fprintf(stderr, "FAIL k_kv_quant [%s]: %ld elements or scales off contract\n", case_desc, bad);
    case_bad += bad;
    case_end();
  }
  case_begin(KS_KVDQ, "n=%d group=%d", n, group);
  float *want = xmalloc((size_t)n * sizeof *want);
  for (int i = 0; i < n; i++) want[i] = (float)(q[i] * f16_val(s[i / group]));
  size_t tot = (size_t)n + 24;
  fbuf ob = fbuf_new(tot);
  fill_sent(ob.p, tot);
  t->kv_dequant(ob.p, q, s, n, group);
  check_bits_f32("out", ob.p, want, (size_t)n, 0);
  untouched("out", ob.p, tot, 1, (size_t)n, tot);
  case_end();
  free(q), free(s), free(x), free(want), free(ob.base);
}

/* ------------------------------------- quantized weights (engine_int.h) */

/* widen of n elements (n % QK == 0) of random blocks at a random byte
 * offset, bit-exact against q_decode (flaw: the self-check's wrong decode of
 * the expectation). Returns the elements that differ. */
static long case_widen_q(const k_table *t, st_dtype dt, size_t n, int flaw) {
  case_begin(KS_QWIDEN, "%s n=%zu", dt_name(dt), n);
  size_t bytes = dt_bytes(dt, n), nb = n / QK;
  int ioff = rndi(0, 40);
  uint8_t *ib = xmalloc(bytes + ioff + 1), *in = ib + ioff;
  q_fill(in, nb, dt);
  if (flaw == QD_SCALE_ULP || flaw == QD_SCALE_NEXT) /* a block that shows it: a normal scale, codes != 0 */
    for (size_t b = 0; b < nb; b++) {
      uint16_t h = f16_round(0.01f);
      in[b * qblock_bytes(dt)] = (uint8_t)(h & 255), in[b * qblock_bytes(dt) + 1] = (uint8_t)(h >> 8);
      for (size_t i = 2; i < qblock_bytes(dt); i++) in[b * qblock_bytes(dt) + i] |= 0x11;
      if (flaw == QD_SCALE_NEXT && b % 2) in[b * qblock_bytes(dt)] ^= 0x40;
    }
  float *want = xmalloc((n + 1) * sizeof *want);
  q_decode(want, in, n, dt, flaw, nb > 1 ? (size_t)rndi(0, (int)nb - 2) : 0);
  size_t tot = n + 24;
  fbuf ob = fbuf_new(tot);
  fill_sent(ob.p, tot);
  t->widen(ob.p, in, n, dt);
  long before = case_bad;
  check_bits_f32("out", ob.p, want, n, 0);
  untouched("out", ob.p, tot, 1, n, tot);
  long bad = case_bad - before;
  case_end();
  free(ib), free(want), free(ob.base);
  return bad;
}

/* k_quantize_row's contract (kernels.h, engine_int.h; see the header) for
 * x[k] -> blocks: the scales and elements off it (the first described in
 * why). */
#define Q_SLACK (130 * 3 * U_) /* x * (1 / d) rounds twice: |q| <= 128 steps, 3 u */
static long qrow_contract(const float *x, const uint8_t *blocks, size_t k, st_dtype dt, char *why, size_t whylen) {
  long bad = 0;
  size_t bs = qblock_bytes(dt);
  float deq[QK];
  why[0] = 0;
  for (size_t b0 = 0; b0 < k; b0 += QK) {
    const uint8_t *b = blocks + b0 / QK * bs;
    const float *v = x + b0;
    float amax = 0, max = 0;
    for (int i = 0; i < QK; i++)
      if (fabsf(v[i]) > amax) amax = fabsf(v[i]), max = v[i];
    uint16_t h = qb_scale(b), want = dt == ST_Q8_0 ? f16_round(amax / 127.0f) : f16_round(max / -8.0f);
    if (h != want) {
      if (!bad) snprintf(why, whylen, "block %zu: scale %04x, want %04x (amax %.9g max %.9g)", b0 / QK, h, want,
                         (double)amax, (double)max);
      bad++;
    }
    double d = f16_val(h), ad = fabs(d);
    q_decode(deq, b, QK, dt, QD_OK, 0);
    for (int i = 0; i < QK; i++) {
      int q = qb_code(b, i, dt), zero = dt == ST_Q8_0 ? 0 : 8, ok;
      double err = fabs((double)v[i] - deq[i]), r = d != 0 ? (double)v[i] / d : 0;
      if (isnan(v[i]) || d == 0) ok = q == zero; /* NaN; an all-zero block (or amax below the F16 range) */
      else if (dt == ST_Q8_0)
        ok = q != -128 && (fabs(r) > 127.5 ? q == (r > 0 ? 127 : -127) : err <= (0.5 + Q_SLACK) * ad);
      else ok = r > 7.5 ? q == 15 : r < -8.5 ? q == 0 : err <= (0.5 + Q_SLACK) * ad;
      if (!ok) {
        if (!bad) snprintf(why, whylen, "block %zu [%d]: x %.9g code %d scale %.9g: |err| %.3g (half step %.3g)",
                           b0 / QK, i, (double)v[i], q, d, err, 0.5 * ad);
        bad++;
      }
    }
  }
  return bad;
}

/* a row of k (% QK == 0): per block magnitude 10^(-3..3), one block all
 * zero, some blocks small values with one outlier of 1e3, some with a NaN */
static float *q_row(size_t k) {
  float *x = xmalloc(k * sizeof *x);
  size_t nb = k / QK, zero_block = (size_t)rndi(0, (int)nb - 1);
  for (size_t b = 0; b < nb; b++) {
    float a = (float)(pow(10.0, rndi(-3, 3)) * (0.5 + rnd01()));
    int outlier = b != zero_block && rnd64() % 4 == 0;
    for (int i = 0; i < QK; i++) x[b * QK + i] = b == zero_block ? 0.0f : rndf(outlier ? 1e-3f : a);
    if (outlier) x[b * QK + rndi(0, QK - 1)] = rnd64() & 1 ? -1e3f : 1e3f;
    if (rnd64() % 8 == 0) x[b * QK + rndi(0, QK - 1)] = NAN; /* documented: quantizes to 0 */
  }
  return x;
}

/* k_quantize_row on q_row(k): the contract (generic pass; one portable
 * function), and this level's widen of the result bit-exact against q_decode */
static void case_quant_row(const k_table *t, st_dtype dt, size_t k) {
  float *x = q_row(k);
  size_t bytes = dt_bytes(dt, k);
  uint8_t *blk = xmalloc(bytes + 16);
  memset(blk, 0xa5, bytes + 16);
  k_quantize_row(blk, x, k, dt);
  if (gen_pass) {
    case_begin(KS_QROW, "%s k=%zu", dt_name(dt), k);
    char why[256];
    long bad = qrow_contract(x, blk, k, dt, why, sizeof why), past = 0;
    for (size_t i = bytes; i < bytes + 16; i++) past += blk[i] != 0xa5;
    if ((bad || past) && report())
      fprintf(stderr, "FAIL k_quantize_row [%s]: %ld scales or elements off contract (%s); %ld bytes written past "
                      "the row\n", case_desc, bad, why, past);
    case_bad += bad + past;
    case_end();
  }
  case_begin(KS_QWIDEN, "%s k=%zu (k_quantize_row's blocks)", dt_name(dt), k);
  float *want = xmalloc(k * sizeof *want);
  q_decode(want, blk, k, dt, QD_OK, 0);
  size_t tot = k + 24;
  fbuf ob = fbuf_new(tot);
  fill_sent(ob.p, tot);
  t->widen(ob.p, blk, k, dt);
  check_bits_f32("out", ob.p, want, k, 0);
  untouched("out", ob.p, tot, 1, k, tot);
  case_end();
  free(x), free(blk), free(want), free(ob.base);
}

/* floats that probe every rounding case of f32 -> f16 */
static float f16_probe(void) {
  switch (rndi(0, 7)) {
  case 0: return bits_f((uint32_t)rnd64()); /* any bits: NaN, inf, subnormal */
  case 1: {                                  /* an exact tie between two f16 values */
    uint16_t h = (uint16_t)(rnd64() & 0x7bff);
    double a = f16_val(h), b = f16_val((uint16_t)(h + 1));
    float f = (float)((a + b) / 2);
    return rnd64() & 1 ? -f : f;
  }
  case 2: { /* an f16 value +- one float ulp */
    float f = (float)f16_val((uint16_t)(rnd64() & 0xfbff));
    return nextafterf(f, rnd64() & 1 ? INFINITY : -INFINITY);
  }
  case 3: return rndf(65600.0f); /* around the largest f16 */
  case 4: {
    static const float edge[] = {65504.0f, 65519.0f, 65519.996f, 65520.0f, 65536.0f, 0x1p-24f, 0x1p-25f,
                                 0x1.8p-25f, 0x1p-26f, 0x1p-14f, 0x1.ffcp-15f, 0.0f, -0.0f, INFINITY, -INFINITY,
                                 1e-45f, 1e-40f, FLT_MAX};
    float f = edge[rnd64() % (sizeof edge / sizeof edge[0])];
    return rnd64() & 1 ? -f : f;
  }
  case 5: return (float)ldexp(rnd01() * 2 - 1, rndi(-30, -12)); /* subnormal f16 range */
  default: return rndf(8.0f);
  }
}

static void case_f16(const k_table *t, size_t n) {
  case_begin(KS_F16, "n=%zu", n);
  fbuf ib = fbuf_new(n);
  for (size_t i = 0; i < n; i++) ib.p[i] = f16_probe();
  size_t tot = n + 24;
  uint16_t *ob = xmalloc((tot + 8) * 2), *o = ob + rndi(0, 7), *og = xmalloc((n + 1) * 2);
  for (size_t i = 0; i < tot; i++) o[i] = 0xa5a5;
  G->f32_to_f16(og, ib.p, n);
  if (gen_pass) memcpy(o, og, n * 2);
  else t->f32_to_f16(o, ib.p, n);
  long bad = 0;
  size_t first = 0;
  uint16_t wfirst = 0;
  for (size_t i = 0; i < n; i++) {
    uint16_t w = gen_pass ? f16_round(ib.p[i]) : og[i], g = o[i];
    int wn = (w & 0x7c00) == 0x7c00 && (w & 0x3ff), gn = (g & 0x7c00) == 0x7c00 && (g & 0x3ff);
    if (w == g || (wn && gn)) continue;
    if (!bad) first = i, wfirst = w;
    bad++;
  }
  long outside = 0;
  for (size_t i = n; i < tot; i++) outside += o[i] != 0xa5a5;
  if ((bad || outside) && report())
    fprintf(stderr,
            "FAIL level %s f32_to_f16 [%s]: %ld differ (first [%zu] %.9g -> %04x, want %04x); %ld written past n\n",
            level_name, case_desc, bad, first, bad ? (double)ib.p[first] : 0.0, bad ? o[first] : 0, wfirst, outside);
  case_bad += bad + outside;
  case_end();
  free(ib.base), free(ob), free(og);
}

/* ------------------------------------------------------ rope, swiglu */

/* coff: self-check, the kernel gets cs one element off */
static long case_rope(const k_table *t, int hd, int coff) {
  case_begin(KS_ROPE, "hd=%d", hd);
  int half = hd / 2;
  fbuf xb = fbuf_new(hd), cb = fbuf_new((size_t)hd + coff);
  for (int i = 0; i < hd; i++) xb.p[i] = rndf(3.0f);
  for (int i = 0; i < half; i++) {
    double ang = rnd01() * 2 * M_PI * 100;
    cb.p[i] = (float)cos(ang), cb.p[half + i] = (float)sin(ang);
  }
  if (coff) cb.p[hd] = 0.5f;
  double *ref = xmalloc(hd * sizeof *ref), *mag = xmalloc(hd * sizeof *mag);
  for (int i = 0; i < half; i++) {
    double a = xb.p[i], b = xb.p[i + half], c = cb.p[i], s = cb.p[half + i];
    ref[i] = a * c - b * s, ref[i + half] = b * c + a * s;
    mag[i] = fabs(a * c) + fabs(b * s), mag[i + half] = fabs(b * c) + fabs(a * s);
  }
  size_t tot = (size_t)hd + 16;
  float *og = xmalloc(tot * sizeof *og), *ol = xmalloc(tot * sizeof *ol);
  fill_sent(og, tot), fill_sent(ol, tot);
  G->rope_to(og, xb.p, cb.p + coff, hd);
  if (!gen_pass) t->rope_to(ol, xb.p, cb.p + coff, hd);
  const float *got = gen_pass ? og : ol;
  double *want = want_of(og, ref, hd);
  if (coff) /* the self-check's wrong result against the right one */
    for (int i = 0; i < hd; i++) want[i] = ref[i];
  long bad = cmp("out", got, want, mag, hd, 5 * U_, TINY);
  untouched("out", got, tot, 1, hd, tot);
  case_end();
  free(want), free(og), free(ol), free(ref), free(mag), free(xb.base), free(cb.base);
  return bad;
}

static long case_swiglu(const k_table *t, int n, int ushift) {
  case_begin(KS_SWIGLU, "n=%d", n);
  static const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, 20.0f, -20.0f, 80.0f, -80.0f,
                                  88.0f, -88.0f, 89.0f, -89.0f, 100.0f, -100.0f, 1e-20f, -1e-20f};
  size_t tot = (size_t)n + 16;
  float *g0 = xmalloc(tot * sizeof *g0);
  fill_sent(g0, tot);
  fbuf ub = fbuf_new((size_t)n + ushift);
  for (int i = 0; i < n; i++) {
    g0[i] = rnd64() % 8 == 0 ? special[rnd64() % (sizeof special / sizeof special[0])] : rndf(15.0f);
    ub.p[i] = rndf(2.0f);
  }
  if (ushift) ub.p[n] = 1.5f;
  double *ref = xmalloc((n + 1) * sizeof *ref);
  for (int i = 0; i < n; i++) ref[i] = (double)g0[i] / (1.0 + exp(-(double)g0[i])) * ub.p[i];
  float *gg = fdup(g0, tot), *gl = fdup(g0, tot);
  G->swiglu(gg, ub.p + ushift, n);
  if (!gen_pass) t->swiglu(gl, ub.p + ushift, n);
  const float *got = gen_pass ? gg : gl;
  double *want = want_of(gg, ref, n);
  if (ushift)
    for (int i = 0; i < n; i++) want[i] = ref[i];
  long bad = cmp("g", got, want, NULL, n, SWIGLU_REL, 1e-30);
  untouched("g", got, tot, 1, n, tot);
  case_end();
  free(want), free(gg), free(gl), free(ref), free(g0), free(ub.base);
  return bad;
}

/* ----------------------------------------------------------- attention */

/* S[t][r] (lds) = sum_d K[t][d] Qt[d][r] for t < T4, r < R8; kshift: the
 * self-check hands the kernel K one key off */
static long case_scores(const k_table *t, int hd, int R8, int T4, int ldq, int lds, int kshift) {
  case_begin(KS_SCORES, "hd=%d R8=%d T4=%d ldq=%d lds=%d", hd, R8, T4, ldq, lds);
  float *Qt = xmalloc((size_t)hd * ldq * sizeof *Qt), *K = rvec((size_t)(T4 + kshift) * hd, 2.0f);
  float qs = 1.0f / sqrtf((float)hd);
  for (int d = 0; d < hd; d++)
    for (int r = 0; r < ldq; r++) Qt[(size_t)d * ldq + r] = r < R8 ? rndf(2.0f) * qs : bits_f(NAN_BITS);
  size_t nn = (size_t)T4 * R8, tot = (size_t)T4 * lds + 16;
  double *ref = xmalloc(nn * sizeof *ref), *mag = xmalloc(nn * sizeof *mag);
  for (int tt = 0; tt < T4; tt++)
    for (int r = 0; r < R8; r++) {
      double s = 0, a = 0;
      for (int d = 0; d < hd; d++) {
        double p = (double)K[(size_t)tt * hd + d] * Qt[(size_t)d * ldq + r];
        s += p, a += fabs(p);
      }
      ref[(size_t)tt * R8 + r] = s, mag[(size_t)tt * R8 + r] = a;
    }
  float *Sg = xmalloc(tot * sizeof *Sg), *Sl = xmalloc(tot * sizeof *Sl);
  fill_sent(Sg, tot), fill_sent(Sl, tot);
  G->attn_scores(Sg, lds, Qt, ldq, R8, K + (size_t)kshift * hd, T4, hd);
  if (!gen_pass) t->attn_scores(Sl, lds, Qt, ldq, R8, K, T4, hd);
  const float *gotb = gen_pass || kshift ? Sg : Sl;
  float *got = xmalloc(nn * sizeof *got), *gen = xmalloc(nn * sizeof *gen);
  for (int tt = 0; tt < T4; tt++) {
    memcpy(got + (size_t)tt * R8, gotb + (size_t)tt * lds, (size_t)R8 * sizeof *got);
    memcpy(gen + (size_t)tt * R8, Sg + (size_t)tt * lds, (size_t)R8 * sizeof *gen);
  }
  double *want = want_of(gen, ref, nn);
  if (kshift)
    for (size_t i = 0; i < nn; i++) want[i] = ref[i];
  long bad = cmp("S", got, want, mag, nn, tol_chain(hd + 1), TINY);
  untouched("S", gotb, tot, T4, R8, lds);
  case_end();
  free(want), free(got), free(gen), free(Sg), free(Sl), free(ref), free(mag), free(Qt), free(K);
  return bad;
}

/* S[t*lds + r] = scale q[r] . K[t], R <= 4 rows as pointers, T any */
static void case_scores_few(const k_table *t, int hd, int R, int T, int lds) {
  case_begin(KS_SCORES_FEW, "hd=%d R=%d T=%d lds=%d", hd, R, T, lds);
  float *K = rvec((size_t)T * hd, 2.0f), *qbuf[4] = {0};
  const float *q[4] = {0};
  for (int r = 0; r < R; r++) {
    int off = rndi(0, 7);
    qbuf[r] = xmalloc(((size_t)hd + off) * sizeof(float));
    float *p = qbuf[r] + off;
    for (int d = 0; d < hd; d++) p[d] = rndf(2.0f);
    q[r] = p;
  }
  float scale = 1.0f / sqrtf((float)hd) * (float)(0.5 + rnd01());
  size_t nn = (size_t)T * R, tot = (size_t)T * lds + 16;
  double *ref = xmalloc(nn * sizeof *ref), *mag = xmalloc(nn * sizeof *mag);
  for (int tt = 0; tt < T; tt++)
    for (int r = 0; r < R; r++) {
      double s = 0, a = 0;
      for (int d = 0; d < hd; d++) {
        double p = (double)q[r][d] * K[(size_t)tt * hd + d];
        s += p, a += fabs(p);
      }
      ref[(size_t)tt * R + r] = s * scale, mag[(size_t)tt * R + r] = a * fabs(scale);
    }
  float *Sg = xmalloc(tot * sizeof *Sg), *Sl = xmalloc(tot * sizeof *Sl);
  fill_sent(Sg, tot), fill_sent(Sl, tot);
  G->attn_scores_few(Sg, lds, q, R, scale, K, T, hd);
  if (!gen_pass) t->attn_scores_few(Sl, lds, q, R, scale, K, T, hd);
  const float *gotb = gen_pass ? Sg : Sl;
  float *got = xmalloc(nn * sizeof *got), *gen = xmalloc(nn * sizeof *gen);
  for (int tt = 0; tt < T; tt++) {
    memcpy(got + (size_t)tt * R, gotb + (size_t)tt * lds, (size_t)R * sizeof *got);
    memcpy(gen + (size_t)tt * R, Sg + (size_t)tt * lds, (size_t)R * sizeof *gen);
  }
  double *want = want_of(gen, ref, nn);
  cmp("S", got, want, mag, nn, tol_chain(hd + 2), TINY);
  untouched("S", gotb, tot, T, R, lds);
  case_end();
  free(want), free(got), free(gen), free(Sg), free(Sl), free(ref), free(mag), free(K);
  for (int r = 0; r < R; r++) free(qbuf[r]);
}

/* the online-softmax update of R8 rows over T keys; vshift: the self-check
 * lets every row see one key more */
static long case_softmax(const k_table *t, int T, int R8, int lds, int vshift) {
  case_begin(KS_SOFTMAX, "T=%d R8=%d lds=%d", T, R8, lds);
  size_t tot = (size_t)T * lds + 16;
  float *S0 = xmalloc(tot * sizeof *S0);
  fill_sent(S0, tot);
  float sc = (float)(1 + 4 * rnd01());
  for (int tt = 0; tt < T; tt++)
    for (int r = 0; r < R8; r++) S0[(size_t)tt * lds + r] = rndf(sc);
  float *valid = xmalloc(R8 * sizeof *valid), *m0 = xmalloc(R8 * sizeof *m0), *l0 = xmalloc(R8 * sizeof *l0);
  for (int r = 0; r < R8; r++) {
    int kind = rndi(0, 5);
    valid[r] = (float)(kind == 0 ? -rndi(1, 5) : kind == 1 ? 0 : kind == 2 ? T : rndi(1, T));
    if (rnd64() % 3 == 0) m0[r] = -1e30f, l0[r] = 0; /* the first tile */
    else m0[r] = rndf(6.0f), l0[r] = (float)(0.5 + 40 * rnd01());
  }
  /* reference: the float operations the contract names (max, m - m', S - m')
   * are exact or one rounding; exp and the sum in float64 */
  size_t nn = (size_t)T * R8;
  double *rS = xmalloc(nn * sizeof *rS), *rm = xmalloc(R8 * sizeof *rm), *rl = xmalloc(R8 * sizeof *rl),
         *rc = xmalloc(R8 * sizeof *rc), *ml = xmalloc(R8 * sizeof *ml);
  for (int r = 0; r < R8; r++) {
    float mx = m0[r];
    for (int tt = 0; tt < T; tt++)
      if ((float)tt < valid[r] && S0[(size_t)tt * lds + r] > mx) mx = S0[(size_t)tt * lds + r];
    double sum = 0;
    for (int tt = 0; tt < T; tt++) {
      double p = (float)tt < valid[r] ? exp((double)(S0[(size_t)tt * lds + r] - mx)) : 0.0;
      rS[(size_t)tt * R8 + r] = p;
      sum += p;
    }
    double c = exp((double)(m0[r] - mx));
    rm[r] = mx, rc[r] = c, rl[r] = (double)l0[r] * c + sum, ml[r] = fabs((double)l0[r] * c) + sum;
  }
  float *vs = xmalloc(R8 * sizeof *vs);
  for (int r = 0; r < R8; r++) vs[r] = valid[r] + (float)vshift;
  float *Sg = fdup(S0, tot), *Sl = fdup(S0, tot);
  float *mg = fdup(m0, R8), *lg = fdup(l0, R8), *cg = xmalloc(R8 * sizeof *cg);
  float *mL = fdup(m0, R8), *lL = fdup(l0, R8), *cL = xmalloc(R8 * sizeof *cL);
  G->attn_softmax(Sg, lds, T, R8, vs, mg, lg, cg);
  if (!gen_pass) t->attn_softmax(Sl, lds, T, R8, valid, mL, lL, cL);
  int g = gen_pass || vshift;
  const float *gotS = g ? Sg : Sl, *gotm = g ? mg : mL, *gotl = g ? lg : lL, *gotc = g ? cg : cL;
  float *got = xmalloc(nn * sizeof *got), *gen = xmalloc(nn * sizeof *gen);
  for (int tt = 0; tt < T; tt++) {
    memcpy(got + (size_t)tt * R8, gotS + (size_t)tt * lds, (size_t)R8 * sizeof *got);
    memcpy(gen + (size_t)tt * R8, Sg + (size_t)tt * lds, (size_t)R8 * sizeof *gen);
  }
  /* the generic pass and the self-check against float64, a level against generic */
  int ref_only = gen_pass || vshift;
  double *wS = want_of(gen, rS, nn), *wm = want_of(mg, rm, R8), *wl = want_of(lg, rl, R8),
         *wc = want_of(cg, rc, R8);
  if (ref_only) {
    memcpy(wS, rS, nn * sizeof *wS), memcpy(wm, rm, R8 * sizeof *wm);
    memcpy(wl, rl, R8 * sizeof *wl), memcpy(wc, rc, R8 * sizeof *wc);
  }
  /* |want| is the magnitude of an exponential */
  long bad = cmp("S (probabilities)", got, wS, NULL, nn, EXP_REL, TINY);
  bad += cmp("m", gotm, wm, NULL, R8, 0, 0);
  bad += cmp("l", gotl, wl, ml, R8, EXP_REL + tol_chain(T + 2), TINY);
  bad += cmp("corr", gotc, wc, NULL, R8, EXP_REL, TINY);
  untouched("S", gotS, tot, T, R8, lds);
  case_end();
  free(got), free(gen), free(wS), free(wm), free(wl), free(wc), free(rS), free(rm), free(rl), free(rc), free(ml);
  free(S0), free(valid), free(vs), free(m0), free(l0), free(Sg), free(Sl), free(mg), free(lg), free(cg), free(mL),
      free(lL), free(cL);
  return bad;
}

/* O[r] = O[r] corr[r] + sum_t P[t][r] V[t][:hd], r < R, T any, V's rows ldv
 * apart (MLA: the value is the first hd elements of a longer row); vshift:
 * the self-check hands the kernel V one row off */
static long case_accum(const k_table *t, int hd, int ldv, int R, int T, int ldp, int vshift) {
  case_begin(KS_ACCUM, "hd=%d ldv=%d R=%d T=%d ldp=%d", hd, ldv, R, T, ldp);
  float *P = xmalloc((size_t)T * ldp * sizeof *P), *V = rvec((size_t)(T + vshift) * ldv, 2.0f);
  for (size_t i = 0; i < (size_t)T * ldp; i++) P[i] = (float)rnd01();
  float *corr = xmalloc(R * sizeof *corr);
  for (int r = 0; r < R; r++) {
    int kind = rndi(0, 5);
    corr[r] = kind == 0 ? 1.0f : kind == 1 ? 0.0f : (float)rnd01();
  }
  size_t nn = (size_t)R * hd, tot = nn + 16;
  float *O0 = xmalloc(tot * sizeof *O0);
  fill_sent(O0, tot);
  for (size_t i = 0; i < nn; i++) O0[i] = rndf(3.0f);
  double *ref = xmalloc(nn * sizeof *ref), *mag = xmalloc(nn * sizeof *mag);
  for (int r = 0; r < R; r++)
    for (int i = 0; i < hd; i++) {
      double s = (double)O0[(size_t)r * hd + i] * corr[r], a = fabs(s);
      for (int tt = 0; tt < T; tt++) {
        double p = (double)P[(size_t)tt * ldp + r] * V[(size_t)tt * ldv + i];
        s += p, a += fabs(p);
      }
      ref[(size_t)r * hd + i] = s, mag[(size_t)r * hd + i] = a;
    }
  float *Og = fdup(O0, tot), *Ol = fdup(O0, tot);
  G->attn_accum(Og, P, ldp, V + (size_t)vshift * ldv, ldv, T, R, hd, corr);
  if (!gen_pass) t->attn_accum(Ol, P, ldp, V, ldv, T, R, hd, corr);
  const float *got = gen_pass || vshift ? Og : Ol;
  double *want = want_of(Og, ref, nn);
  if (vshift)
    for (size_t i = 0; i < nn; i++) want[i] = ref[i];
  long bad = cmp("O", got, want, mag, nn, tol_chain(T + 2), TINY);
  untouched("O", got, tot, 1, nn, tot);
  case_end();
  free(want), free(Og), free(Ol), free(ref), free(mag), free(O0), free(P), free(V), free(corr);
  return bad;
}

/* ------------------------------------------------------------ a level */

static const int N_LIST[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 31, 33, 40};
static const int K_LIST[] = {1,  2,  3,   5,   7,   8,   9,   15,  16,  17,  24,  31,  32,  33,  47,  48, 63,
                             64, 65, 96, 127, 128, 129, 200, 255, 256, 257, 300, 511, 512, 513, 640, 1000};
static const st_dtype DTS[] = {ST_F32, ST_F16, ST_BF16};

/* Quantized weights (see the header): k_quantize_row, widen, and the
 * products on random blocks; k multiples of QK. */
static const st_dtype QDTS[] = {ST_Q8_0, ST_Q4_0};
static const int QK_LIST[] = {32, 64, 96, 128, 160, 224, 256, 288, 512, 544, 1024, 2080};

/* int8 products for quantized weights (kernels.h qgemm_cols): the level's
 * qgemm_quant_a bit-identical to k_qgemm_quant_a; on the generic pass
 * k_gen_qgemm against float64 of the same integers and scales (the product
 * it computes exactly, up to F32 sums), on a level with int8 products its
 * qgemm_cols against k_gen_qgemm. k past 2048 crosses a packed pass. */
static void case_qgemm(const k_table *t, st_dtype dt, int rows, int n, int k, float beta) {
  if (!gen_pass && !t->qgemm_cols) return;
  int nb = k / QK;
  float *a = rvec((size_t)rows * k, 3.0f);
  if (rows * k > 40) a[rndi(0, rows * k - 1)] = 0, a[rndi(0, rows * k - 1)] = 40.0f; /* an outlier, a zero */
  uint8_t *aq = xmalloc((size_t)rows * k), *aq2 = xmalloc((size_t)rows * k);
  float *da = xmalloc((size_t)rows * nb * sizeof *da), *da2 = xmalloc((size_t)rows * nb * sizeof *da2);
  k_qgemm_quant_a(aq, da, a, 0, rows, k);
  if (t->qgemm_quant_a) {
    case_begin(KS_QGEMM_A, "rows=%d k=%d", rows, k);
    t->qgemm_quant_a(aq2, da2, a, 0, rows, k);
    long bad = 0;
    for (size_t i = 0; i < (size_t)rows * k; i++) bad += aq[i] != aq2[i];
    for (size_t i = 0; i < (size_t)rows * nb; i++) bad += f_bits(da[i]) != f_bits(da2[i]);
    if (bad && report()) fprintf(stderr, "FAIL level %s qgemm_quant_a [%s]: %ld bytes or scales differ\n", level_name, case_desc, bad);
    case_bad += bad;
    case_end();
  }
  case_begin(KS_QGEMM, "%s rows=%d n=%d k=%d beta=%g", dt_name(dt), rows, n, k, beta);
  wmat w = wmat_new(dt, n, k, 1);
  size_t ldc = (size_t)n + rndi(0, 5), tot = (size_t)rows * ldc;
  float *c0 = xmalloc(tot * sizeof *c0), *cg = xmalloc(tot * sizeof *cg), *cl = xmalloc(tot * sizeof *cl);
  for (size_t i = 0; i < tot; i++) c0[i] = beta == 0.0f ? bits_f(NAN_BITS) : rndf(2.0f);
  double *want = xmalloc(tot * sizeof *want), *mag = xmalloc(tot * sizeof *mag);
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < n; j++) {
      double s = 0, m = 0;
      for (int i = 0; i < k; i++) {
        double v = ((int)aq[(size_t)r * k + i] - 128) * (double)da[(size_t)r * nb + i / QK] * w.wf[(size_t)j * k + i];
        s += v, m += fabs(v);
      }
      size_t o = (size_t)r * ldc + j;
      want[o] = (beta == 0.0f ? 0.0 : beta * (double)c0[o]) + s;
      mag[o] = m + (beta == 0.0f ? 0.0 : fabs(beta * (double)c0[o])) + 1e-30;
    }
  memcpy(cg, c0, tot * sizeof *cg);
  k_gen_qgemm(cg, ldc, aq, da, rows, w.p, n, k, dt, beta);
  long bad = 0;
  if (gen_pass) {
    for (int r = 0; r < rows; r++)
      bad += cmp("C", cg + (size_t)r * ldc, want + (size_t)r * ldc, mag + (size_t)r * ldc, (size_t)n, 1e-5, 0);
  } else {
    float *scratch = xmalloc((size_t)256 << 10);
    memcpy(cl, c0, tot * sizeof *cl);
    t->qgemm_cols(cl, ldc, aq, da, rows, w.p, n, k, dt, beta, scratch);
    double *wg = want_of(cg, NULL, tot);
    for (int r = 0; r < rows; r++)
      bad += cmp("C", cl + (size_t)r * ldc, wg + (size_t)r * ldc, mag + (size_t)r * ldc, (size_t)n, 1e-5, 0);
    /* the padding between rows (ldc > n) is never written */
    for (int r = 0; r < rows; r++)
      for (size_t j = (size_t)n; j < ldc; j++)
        if (f_bits(cl[(size_t)r * ldc + j]) != f_bits(c0[(size_t)r * ldc + j])) bad++, case_bad++;
    free(wg);
    free(scratch);
  }
  (void)bad;
  case_end();
  wmat_free(&w);
  free(a), free(aq), free(aq2), free(da), free(da2), free(c0), free(cg), free(cl), free(want), free(mag);
}

static void run_level_quant(const k_table *t) {
  int NR = t->gemm_nr, fmax = t->few_max < 2 ? 2 : t->few_max;
  for (int d = 0; d < 2; d++) {
    st_dtype dt = QDTS[d];
    static const int QROW[] = {32, 64, 96, 256, 1024, 4096, 4128};
    for (int b = 0; b < NELEM(QROW); b++)
      for (int rep = 0; rep < 4; rep++) case_quant_row(t, dt, (size_t)QROW[b]);
    for (int nb = 0; nb <= 40; nb++) case_widen_q(t, dt, (size_t)nb * QK, QD_OK);
    static const int QW_N[] = {1024, 2080, 4096, 4128, 8224};
    for (int b = 0; b < NELEM(QW_N); b++) case_widen_q(t, dt, (size_t)QW_N[b], QD_OK);

    /* gemv: every n of the list x every k, beta 0 and 1; random shapes with
     * beta 0.5 (n up to 300: several of gemm.c's L1 runs of rows); rows longer
     * than gemm.c's 8192-float buffer and generic's 16384-float pieces */
    for (int a = 0; a < NELEM(N_LIST); a++)
      for (int b = 0; b < NELEM(QK_LIST); b++)
        for (int beta = 0; beta <= 1; beta++) case_gemv(t, dt, N_LIST[a], QK_LIST[b], (float)beta);
    for (int i = 0; i < 30; i++) case_gemv(t, dt, rndi(1, 300), QK * rndi(1, 70), i % 2 ? 0.5f : 1.0f);
    static const int QLONG_K[] = {8160, 8192, 8224, 16384, 16416, 20000};
    for (int b = 0; b < NELEM(QLONG_K); b++) case_gemv(t, dt, rndi(1, 6), QLONG_K[b], (float)(b % 2));

    /* gemm_few: 2 <= M <= few_max x every k, random n; several runs of rows,
     * long rows */
    for (int M = 2; M <= fmax; M++)
      for (int b = 0; b < NELEM(QK_LIST); b += (QK_LIST[b] > 300 ? 2 : 1))
        case_few(t, dt, M, PICK(N_LIST), QK_LIST[b], (float)((M + b) % 2));
    case_few(t, dt, fmax, 70, 608, 1.0f);
    case_few(t, dt, rndi(2, fmax), 300, 32, 0.0f);
    case_few(t, dt, rndi(2, fmax), 33, 2080, 1.0f);
    case_few(t, dt, 3, 5, 8224, 0.0f);
    case_few(t, dt, 2, 3, 16416, 1.0f);
    case_few(t, dt, rndi(2, fmax), rndi(1, 70), QK * rndi(1, 20), 0.5f);
    for (int i = 0; i < 6; i++) case_few_blas(t, dt, rndi(2, fmax), rndi(1, 80), PICK(QK_LIST), (float)(i % 2));

    /* gemm_pack_b: every ncols 1..NR, kc multiples of QK up to GEMM_KC */
    static const int QKC[] = {32, 64, 96, 160, 224, 256};
    for (int nc = 1; nc <= NR; nc++)
      for (int b = 0; b < NELEM(QKC); b++) case_pack(t, dt, nc, QKC[b], QKC[b] + QK * rndi(0, 3));

    /* k_gemm (the packed path, rows > few_max): k across GEMM_KC blocks and
     * not a multiple of it, ncols not a multiple of NR or of the chunk */
    static const int QGN[] = {1, 15, 17, 31, 33, 100, 129, 200};
    static const int QGK[] = {32, 64, 224, 256, 288, 512, 544, 800};
    for (int i = 0; i < 12; i++)
      case_gemm(t, dt, fmax + 1 + i * 3, PICK(QGN), PICK(QGK), i % 5 == 4 ? 0.5f : (float)(i % 2), 0);
    case_gemm(t, dt, 250, 257, 544, (float)d, 0);
    case_gemm(t, dt, 241, 129, 288, 1.0f, 0);
    case_gemm(t, dt, rndi(fmax + 1, 120), rndi(1, 300), QK * rndi(1, 30), 0.0f, 0);

    /* int8 products (levels that have them; the generic pass checks k_gen_qgemm) */
    static const int QGR[] = {1, 5, 6, 7, 13, 40}, QGC[] = {1, 17, 31, 32, 33, 64, 100};
    static const int QGKK[] = {32, 64, 544, 2048, 2080, 4128};
    for (int i = 0; i < 16; i++) case_qgemm(t, dt, PICK(QGR), PICK(QGC), PICK(QGKK), (float)(i % 3) * 0.5f);
  }
  char err[128];
  eng_isa_select("auto", err, sizeof err);
}

static void run_level(const k_table *t) {
  memset(ks, 0, sizeof ks);
  level_name = t->name;
  gen_pass = t == G;
  int MR = t->gemm_mr, NR = t->gemm_nr;

  /* gemv: every n x k of the lists, every dtype, beta 0 and 1; random ones
   * with beta 0.5; rows longer than the generic level's 16384-float piece */
  for (int d = 0; d < 3; d++)
    for (int a = 0; a < NELEM(N_LIST); a++)
      for (int b = 0; b < NELEM(K_LIST); b++)
        for (int beta = 0; beta <= 1; beta++) case_gemv(t, DTS[d], N_LIST[a], K_LIST[b], (float)beta);
  for (int i = 0; i < 150; i++) case_gemv(t, DTS[i % 3], rndi(1, 70), rndi(1, 1100), i % 2 ? 0.5f : 1.0f);
  static const int LONG_K[] = {16383, 16384, 16385, 16400, 20000};
  for (int d = 0; d < 3; d++)
    for (int b = 0; b < NELEM(LONG_K); b++) case_gemv(t, DTS[d], rndi(1, 6), LONG_K[b], (float)(b % 2));

  /* gemm_few: 2 <= M <= few_max, every k of the lists, random n */
  int fmax = t->few_max < 2 ? 2 : t->few_max;
  for (int d = 0; d < 3; d++)
    for (int M = 2; M <= fmax; M++)
      for (int b = 0; b < NELEM(K_LIST); b += (K_LIST[b] > 300 ? 2 : 1))
        case_few(t, DTS[d], M, PICK(N_LIST), K_LIST[b], (float)((M + b) % 2));
  for (int d = 0; d < 3; d++) { /* several L1 blocks of weight rows; long rows */
    case_few(t, DTS[d], fmax, 70, 600, 1.0f);
    case_few(t, DTS[d], rndi(2, fmax), 129, 300, 0.0f);
    case_few(t, DTS[d], rndi(2, fmax), 33, 2050, 1.0f);
    case_few(t, DTS[d], 3, 5, 16385, 0.0f);
    case_few(t, DTS[d], rndi(2, fmax), rndi(1, 70), rndi(1, 700), 0.5f);
  }
  for (int d = 0; d < 3; d++)
    for (int i = 0; i < 8; i++)
      case_few_blas(t, DTS[d], rndi(2, fmax), rndi(1, 80), PICK(K_LIST), (float)(i % 2));

  /* gemm_pack_b: every ncols 1..NR, kc of many lengths */
  static const int KC[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 255, 256};
  for (int d = 0; d < 3; d++)
    for (int nc = 1; nc <= NR; nc++)
      for (int b = 0; b < NELEM(KC); b++) case_pack(t, DTS[d], nc, KC[b], KC[b] + rndi(0, 20));

  /* gemm_tile: every mr 1..MR x nr 1..NR, acc 0 and 1, two kc each */
  for (int mr = 1; mr <= MR; mr++)
    for (int nr = 1; nr <= NR; nr++)
      for (int acc = 0; acc <= 1; acc++)
        for (int rep = 0; rep < 2; rep++) {
          int ldc = rnd64() % 3 == 0 ? nr : rnd64() & 1 ? NR + 3 : nr + rndi(1, 9);
          case_tile(t, PICK(KC), mr, nr, acc, ldc, 0);
        }

  /* k_gemm (gemm.c at this level): rows 1..40 each once, then blocks of
   * GEMM_MC rows, GEMM_CHUNK columns and GEMM_KC positions crossed */
  static const int GN[] = {1, 2, 15, 16, 17, 31, 32, 33, 63, 100, 127, 128, 129, 200};
  static const int GK[] = {1, 2, 7, 8, 9, 31, 33, 100, 255, 256, 257, 300, 513};
  for (int rows = 1; rows <= 40; rows++)
    case_gemm(t, DTS[rows % 3], rows, PICK(GN), PICK(GK), rows % 5 == 0 ? 0.5f : (float)(rows % 2), 0);
  for (int d = 0; d < 3; d++) {
    case_gemm(t, DTS[d], 250, 257, 513, (float)(d % 2), 0);
    case_gemm(t, DTS[d], 241, 129, 257, 1.0f, 0);
    case_gemm(t, DTS[d], rndi(41, 120), rndi(1, 300), rndi(1, 600), 0.0f, 0);
  }
  char err[128];
  eng_isa_select("auto", err, sizeof err);

  /* gemm_rl (levels that have it): every M of its range, n across blocks of
   * 12 / 24 weight rows (and short of one), k multiples of 16; a deliberately
   * shifted A panel must fail */
  if (t->gemm_rl) {
    static const int RN[] = {1, 5, 11, 12, 13, 23, 24, 25, 47, 48, 49, 100, 300};
    static const int RK[] = {16, 32, 48, 64, 512, 1408, 2064};
    for (int d = 0; d < 3; d++)
      for (int M = t->rl_min; M <= t->rl_max; M++)
        case_rl(t, DTS[d], M, PICK(RN), PICK(RK), M % 3 == 0 ? 0.5f : (float)(M % 2), 0);
    for (int d = 0; d < 3; d++) {
      case_rl(t, DTS[d], 16, 50, 4096, 1.0f, 0);
      case_rl(t, DTS[d], t->rl_max, 300, 512, 0.0f, 0);
    }
    quiet = 1;
    long shifted = case_rl(t, ST_F16, 16, 30, 64, 0.0f, 1);
    quiet = 0;
    ks[KS_RL].cases++;
    if (!shifted) {
      ks[KS_RL].failed++;
      fprintf(stderr, "FAIL %s gemm_rl: an A panel shifted by one position passed the comparison\n", t->name);
    }
  }

  for (int n = 0; n <= 70; n++)
    for (int mode = 0; mode < 5; mode++) case_vmax(t, n, mode);
  for (int mode = 0; mode < 5; mode++) case_vmax(t, 8192 + 13, mode);

  /* widen and f32_to_f16: lengths 0..70 (unaligned), every 16-bit value, bulk */
  for (int d = 0; d < 3; d++)
    for (int n = 0; n <= 70; n++) case_widen(t, DTS[d], (size_t)n, 0);
  case_widen(t, ST_F16, 65536, 1);
  case_widen(t, ST_BF16, 65536, 1);
  case_widen(t, ST_F16, 65536 + 13, 0);
  for (int n = 0; n <= 70; n++) case_f16(t, (size_t)n);
  /* int8 KV rows: the engine's groups (32, a whole odd head) and others */
  static const int KVG[][2] = {{32, 32}, {64, 32}, {256, 32}, {64, 64}, {128, 64}, {18, 18}, {72, 24}, {48, 16}, {40, 8},
                               {7, 7}, {12, 3}, {1024, 32}};
  for (int b = 0; b < NELEM(KVG); b++)
    for (int rep = 0; rep < 4; rep++) case_kv_int8(t, KVG[b][0], KVG[b][1]);
  case_f16(t, 1000);
  case_f16(t, (size_t)1 << 18);

  /* rope_to (hd 18, 64 and 128 among them), swiglu */
  static const int HD_ROPE[] = {2, 4, 6, 8, 16, 18, 24, 30, 32, 34, 48, 64, 66, 96, 128, 256};
  for (int b = 0; b < NELEM(HD_ROPE); b++)
    for (int rep = 0; rep < 6; rep++) case_rope(t, HD_ROPE[b], 0);
  for (int n = 0; n <= 70; n++) case_swiglu(t, n, 0);
  static const int SW_N[] = {127, 128, 129, 1000, 4099};
  for (int b = 0; b < NELEM(SW_N); b++) case_swiglu(t, SW_N[b], 0);

  /* attention: hd 16/32/64/128 and the odd ones the engine tests use */
  static const int HD[] = {16, 18, 24, 32, 64, 128};
  static const int R8S[] = {8, 16, 24, 32, 40, 48, 64};
  static const int T4S[] = {4, 8, 12, 16, 20, 28, 60, 64};
  for (int h = 0; h < NELEM(HD); h++)
    for (int a = 0; a < NELEM(R8S); a++)
      for (int b = 0; b < NELEM(T4S); b++) {
        int R8 = R8S[a], ldq = R8 + (rnd64() & 1 ? 8 : rndi(0, 5)), lds = R8 + (rnd64() & 1 ? 8 : rndi(0, 5));
        case_scores(t, HD[h], R8, T4S[b], ldq, lds, 0);
      }
  static const int HD8[] = {8, 16, 24, 32, 64, 128};
  static const int TS[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 63, 64, 65};
  for (int h = 0; h < NELEM(HD8); h++)
    for (int R = 1; R <= 4; R++)
      for (int b = 0; b < NELEM(TS); b++) case_scores_few(t, HD8[h], R, TS[b], rnd64() & 1 ? 16 : R + rndi(0, 5));
  for (int a = 0; a < NELEM(R8S); a++)
    for (int b = 0; b < NELEM(TS); b++)
      for (int rep = 0; rep < 2; rep++)
        case_softmax(t, TS[b], R8S[a], R8S[a] + (rep ? 8 : rndi(0, 5)), 0);
  static const int HDA[] = {16, 18, 24, 32, 48, 64, 80, 128};
  static const int RS[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 40};
  static const int TA[] = {1, 2, 3, 5, 8, 17, 33, 63, 64};
  for (int h = 0; h < NELEM(HDA); h++)
    for (int a = 0; a < NELEM(RS); a++)
      for (int b = 0; b < NELEM(TA); b++) {
        int R = RS[a], ldp = rnd64() & 1 ? ((R + 7) & ~7) + 8 : R + rndi(0, 5);
        case_accum(t, HDA[h], HDA[h], R, TA[b], ldp, 0);
      }
  /* values that are a prefix of a longer row (MLA: [latent | rope key]) */
  static const int HDV[][2] = {{64, 96}, {256, 288}, {32, 48}, {48, 66}, {18, 26}};
  for (int h = 0; h < NELEM(HDV); h++)
    for (int a = 0; a < NELEM(RS); a += 3)
      for (int b = 0; b < NELEM(TA); b += 2) {
        int R = RS[a], ldp = rnd64() & 1 ? ((R + 7) & ~7) + 8 : R + rndi(0, 5);
        case_accum(t, HDV[h][0], HDV[h][1], R, TA[b], ldp, 0);
      }

  run_level_quant(t);

  /* fma_burn: runs, and reports a positive FLOP count */
  case_begin(KS_BURN, "iters=1000");
  double fl = t->fma_burn(1000);
  if (!(fl > 0 && isfinite(fl))) {
    fprintf(stderr, "FAIL level %s fma_burn(1000) returned %g\n", level_name, fl);
    case_bad++;
  }
  case_end();
}

/* ---------------------------------------------------------- self-check */

/* Each deliberately wrong result must fail the comparison the real cases
 * use (same tolerances); returns the number that did not. */
static int self_check(void) {
  int missed = 0, ran = 0;
  quiet = 1;
  level_name = "self-check";
  gen_pass = 1;
#define EXPECT_FAIL(desc, bad)                                                      \
  do {                                                                              \
    ran++;                                                                          \
    if (!(bad)) {                                                                   \
      missed++;                                                                     \
      fprintf(stderr, "SELF-CHECK FAIL: %s passed the comparison\n", desc);         \
    }                                                                               \
  } while (0)
  static const int SK[] = {9, 33, 257, 1000, 16385};
  for (int d = 0; d < 3; d++)
    for (int b = 0; b < NELEM(SK); b++) {
      int n = 8, k = SK[b];
      st_dtype dt = DTS[d];
      wmat W = wmat_new(dt, n + 1, k, 0);
      float *x = rvec((size_t)k, 1.0f), *y = xmalloc(n * sizeof *y), *y2 = xmalloc(n * sizeof *y2);
      double *ref = xmalloc(n * sizeof *ref), *mag = xmalloc(n * sizeof *mag);
      for (int i = 0; i < n; i++) {
        double s = 0, a = 0;
        for (int j = 0; j < k; j++) {
          double p = (double)W.wf[(size_t)i * k + j] * x[j];
          s += p, a += fabs(p);
        }
        ref[i] = s, mag[i] = a;
      }
      double tol = tol_chain(k + 2);
      char desc[96];
      case_begin(KS_GEMV, "self");
      G->gemv(y, W.p, n, k, x, 0.0f, dt);
      EXPECT_FAIL("sanity: the right gemv result failed", !cmp("", y, ref, mag, n, tol, TINY));
      /* one weight row off */
      G->gemv(y2, wrow(&W, 1), n, k, x, 0.0f, dt);
      snprintf(desc, sizeof desc, "gemv %s k=%d, weight row off by one", dt_name(dt), k);
      EXPECT_FAIL(desc, cmp("", y2, ref, mag, n, tol, TINY));
      /* two outputs swapped */
      memcpy(y2, y, n * sizeof *y);
      float tmp = y2[2];
      y2[2] = y2[5], y2[5] = tmp;
      snprintf(desc, sizeof desc, "gemv %s k=%d, two outputs swapped", dt_name(dt), k);
      EXPECT_FAIL(desc, cmp("", y2, ref, mag, n, tol, TINY));
      /* the last input element read from its neighbour (a tail index bug);
       * the two differ by at least 1 here (a neighbour equal to the right
       * element is a harmless misread that no comparison can see) */
      if (k > 1) {
        float *x2 = fdup(x, k);
        x[k - 2] = x2[k - 2] = (x[k - 2] < 0 ? -0.5f : 0.5f) + x[k - 2] / 2;
        x[k - 1] = -x[k - 2], x2[k - 1] = x[k - 2];
        for (int i = 0; i < n; i++) { /* the reference for the adjusted x */
          double s2 = 0, a2 = 0;
          for (int j = 0; j < k; j++) {
            double p = (double)W.wf[(size_t)i * k + j] * x[j];
            s2 += p, a2 += fabs(p);
          }
          ref[i] = s2, mag[i] = a2;
        }
        G->gemv(y2, W.p, n, k, x2, 0.0f, dt);
        snprintf(desc, sizeof desc, "gemv %s k=%d, tail element from the wrong index", dt_name(dt), k);
        EXPECT_FAIL(desc, cmp("", y2, ref, mag, n, tol, TINY));
        free(x2);
      }
      case_end();
      free(x), free(y), free(y2), free(ref), free(mag);
      wmat_free(&W);
    }
  /* shapes inside generic's own tile (gemm_mr x gemm_nr) */
  int smr = MFS_MIN(3, G->gemm_mr), snr = MFS_MIN(11, G->gemm_nr - 1);
  EXPECT_FAIL("sanity: a right gemm_tile result failed", !case_tile(G, 37, smr, snr, 1, 20, 0));
  EXPECT_FAIL("gemm_tile, A panel off by one row", case_tile(G, 37, smr, snr, 1, 20, 1));
  EXPECT_FAIL("gemm_tile kc=256, A panel off by one row", case_tile(G, 256, G->gemm_mr, G->gemm_nr, 0, 16, 1));
  for (int b = 0; b < 3; b++) {
    static const int SHD[] = {18, 64, 128};
    char desc[96];
    EXPECT_FAIL("sanity: a right attn_accum result failed", !case_accum(G, SHD[b], SHD[b], 5, 33, 16, 0));
    snprintf(desc, sizeof desc, "attn_accum hd=%d, value row off by one", SHD[b]);
    EXPECT_FAIL(desc, case_accum(G, SHD[b], SHD[b], 5, 33, 16, 1));
    snprintf(desc, sizeof desc, "attn_accum hd=%d ldv=%d, value row off by one", SHD[b], SHD[b] + 32);
    EXPECT_FAIL(desc, case_accum(G, SHD[b], SHD[b] + 32, 5, 33, 16, 1));
    snprintf(desc, sizeof desc, "attn_scores hd=%d, key off by one", SHD[b]);
    EXPECT_FAIL("sanity: a right attn_scores result failed", !case_scores(G, SHD[b], 16, 20, 24, 24, 0));
    EXPECT_FAIL(desc, case_scores(G, SHD[b], 16, 20, 24, 24, 1));
    snprintf(desc, sizeof desc, "rope_to hd=%d, cos/sin index off by one", SHD[b]);
    EXPECT_FAIL("sanity: a right rope_to result failed", !case_rope(G, SHD[b], 0));
    EXPECT_FAIL(desc, case_rope(G, SHD[b], 1));
  }
  EXPECT_FAIL("sanity: a right attn_softmax result failed", !case_softmax(G, 33, 16, 24, 0));
  EXPECT_FAIL("attn_softmax, one key more unmasked per row", case_softmax(G, 33, 16, 24, 1));
  EXPECT_FAIL("sanity: a right swiglu result failed", !case_swiglu(G, 37, 0));
  EXPECT_FAIL("swiglu, u off by one", case_swiglu(G, 37, 1));
  if (select_level("generic") == 0) {
    EXPECT_FAIL("sanity: a right k_gemm result failed", !case_gemm(G, ST_BF16, 13, 40, 300, 1.0f, 0));
    EXPECT_FAIL("k_gemm vs cblas, weight row off by one", case_gemm(G, ST_BF16, 13, 40, 300, 1.0f, 1));
    EXPECT_FAIL("k_gemm vs cblas k=16385, weight row off by one", case_gemm(G, ST_F16, 3, 5, 16385, 0.0f, 1));
  } else {
    missed++;
  }
  /* widen: two elements swapped must fail the exact comparison */
  {
    float a[4] = {1, 2, 3, 4}, b[4] = {1, 3, 2, 4};
    case_begin(KS_WIDEN, "self");
    long before = case_bad;
    check_bits_f32("", b, a, 4, 0);
    EXPECT_FAIL("widen, two elements swapped", case_bad > before);
  }
  /* quantized weights: wrong decodes must fail the exact widen comparison ... */
  for (int d = 0; d < 2; d++) {
    st_dtype dt = QDTS[d];
    char desc[96];
    snprintf(desc, sizeof desc, "sanity: a right widen %s result failed", dt_name(dt));
    EXPECT_FAIL(desc, !case_widen_q(G, dt, 8 * QK, QD_OK));
    snprintf(desc, sizeof desc, "widen %s, one block's scale off by one F16 ulp", dt_name(dt));
    EXPECT_FAIL(desc, case_widen_q(G, dt, 8 * QK, QD_SCALE_ULP));
    snprintf(desc, sizeof desc, "widen %s, one block's scale from the next block", dt_name(dt));
    EXPECT_FAIL(desc, case_widen_q(G, dt, 8 * QK, QD_SCALE_NEXT));
  }
  EXPECT_FAIL("widen q4_0, nibble halves swapped", case_widen_q(G, ST_Q4_0, 8 * QK, QD_NIBBLES_SWAPPED));
  /* ... and the gemv tolerance against float64 (one row's worth per output) */
  static const int SQK[] = {64, 256, 1024, 16416};
  for (int d = 0; d < 2; d++)
    for (int b = 0; b < NELEM(SQK); b++) {
      st_dtype dt = QDTS[d];
      int n = 8, k = SQK[b], nb = k / QK;
      wmat W = wmat_new(dt, n, k, 1);
      float *x = rvec((size_t)k, 1.0f), *y = xmalloc(n * sizeof *y), *wf2 = xmalloc((size_t)k * sizeof *wf2);
      G->gemv(y, W.p, n, k, x, 0.0f, dt);
      for (int flaw = 0; flaw < 3; flaw++) {
        int fl = flaw == 0 ? QD_OK : flaw == 1 ? QD_SCALE_NEXT : QD_NIBBLES_SWAPPED;
        if (fl == QD_NIBBLES_SWAPPED && dt != ST_Q4_0) continue;
        double ref[8], mag[8];
        for (int i = 0; i < n; i++) {
          q_decode(wf2, wrow(&W, i), (size_t)k, dt, fl, (size_t)rndi(0, nb - 2));
          double s = 0, a = 0;
          for (int j = 0; j < k; j++) s += (double)wf2[j] * x[j], a += fabs((double)wf2[j] * x[j]);
          ref[i] = s, mag[i] = a;
        }
        case_begin(KS_GEMV, "self");
        long bad = cmp("", y, ref, mag, n, tol_chain(k + 2), TINY);
        char desc[96];
        if (fl == QD_OK) {
          snprintf(desc, sizeof desc, "sanity: the right gemv %s k=%d result failed", dt_name(dt), k);
          EXPECT_FAIL(desc, !bad);
        } else {
          snprintf(desc, sizeof desc, "gemv %s k=%d vs a decode with %s", dt_name(dt), k,
                   fl == QD_SCALE_NEXT ? "one block's scale from the next block" : "nibble halves swapped");
          EXPECT_FAIL(desc, bad);
        }
        case_end();
      }
      free(x), free(y), free(wf2);
      wmat_free(&W);
    }
  /* k_quantize_row's contract check: wrong blocks must fail it */
  for (int d = 0; d < 2; d++) {
    st_dtype dt = QDTS[d];
    size_t k = 8 * QK, bs = qblock_bytes(dt);
    float *x = xmalloc(k * sizeof *x);
    for (size_t i = 0; i < k; i++) x[i] = rndf(1.0f);
    uint8_t *blk = xmalloc(dt_bytes(dt, k)), *w = xmalloc(dt_bytes(dt, k));
    k_quantize_row(blk, x, k, dt);
    char why[256], desc[96];
    snprintf(desc, sizeof desc, "sanity: k_quantize_row %s's right blocks failed the contract", dt_name(dt));
    EXPECT_FAIL(desc, !qrow_contract(x, blk, k, dt, why, sizeof why));
    int b = rndi(0, 7);
    memcpy(w, blk, dt_bytes(dt, k)); /* one block's scale one F16 ulp larger */
    w[b * bs] = (uint8_t)(w[b * bs] + 1);
    if (!w[b * bs]) w[b * bs + 1]++;
    snprintf(desc, sizeof desc, "k_quantize_row %s, a scale off by one F16 ulp", dt_name(dt));
    EXPECT_FAIL(desc, qrow_contract(x, w, k, dt, why, sizeof why));
    memcpy(w, blk, dt_bytes(dt, k)); /* one code one step off, on the side away from x */
    int i = rndi(0, QK / 2 - 1);
    double dd = f16_val(qb_scale(blk + b * bs)), r = x[b * QK + i] / dd;
    int code = qb_code(blk + b * bs, i, dt), off = r - (code - (dt == ST_Q4_0 ? 8 : 0)) > 0 ? -1 : 1;
    if (dt == ST_Q8_0) w[b * bs + 2 + i] = (uint8_t)(int8_t)(code + off);
    else w[b * bs + 2 + i] = (uint8_t)((w[b * bs + 2 + i] & 0xf0) | ((code + off) & 15));
    snprintf(desc, sizeof desc, "k_quantize_row %s, one code off by one", dt_name(dt));
    EXPECT_FAIL(desc, qrow_contract(x, w, k, dt, why, sizeof why));
    if (dt == ST_Q4_0) { /* nibble halves swapped in every byte */
      for (size_t j = 0; j < k / QK; j++)
        for (int q = 0; q < QK / 2; q++) {
          uint8_t v = blk[j * bs + 2 + q];
          w[j * bs + 2 + q] = (uint8_t)(v >> 4 | v << 4);
        }
      for (size_t j = 0; j < k / QK; j++) w[j * bs] = blk[j * bs], w[j * bs + 1] = blk[j * bs + 1]; /* right scales */
      EXPECT_FAIL("k_quantize_row q4_0, nibble halves swapped", qrow_contract(x, w, k, dt, why, sizeof why));
    }
    free(x), free(blk), free(w);
  }
  quiet = 0;
  printf("self-check: %d deliberately wrong results, %d detected\n", ran, ran - missed);
  return missed;
#undef EXPECT_FAIL
}

/* --------------------------------------------------------------- main */

static int print_level(const k_table *t) {
  long cases = 0, failed = 0;
  for (int i = 0; i < KS_N; i++) cases += ks[i].cases, failed += ks[i].failed;
  printf("level %s%s: %ld cases, %ld failed (gemm tile %dx%d, few_max %d)\n", t->name,
         t == G ? " (vs float64 reference)" : " (vs generic)", cases, failed, t->gemm_mr, t->gemm_nr, t->few_max);
  for (int i = 0; i < KS_N; i++)
    if (ks[i].cases)
      printf("  %-18s %6ld cases %s  max |err|/tol %.3f\n", ks_name[i], ks[i].cases,
             ks[i].failed ? "FAILED" : "ok    ", ks[i].worst);
  fflush(stdout);
  return failed ? 1 : 0;
}

int main(int argc, char **argv) {
  uint64_t seed = DEFAULT_SEED;
  const char *s = argc > 1 ? argv[1] : getenv("MFS_TEST_SEED");
  if (s && *s) seed = strtoull(s, NULL, 0);
  rng = seed;
  printf("seed %" PRIu64 " (rerun: test_kernels %" PRIu64 ")\n", seed, seed);
  printf("cpu features: %s\nlevels built: %s; supported: %s\n", eng_cpu_features(), eng_isa_built(),
         eng_isa_supported());
  G = &k_table_generic;
  if (k_level_by_name("generic") != G) {
    fprintf(stderr, "FAIL k_level_by_name(\"generic\") is not k_table_generic\n");
    return 1;
  }
  int fail = self_check() ? 1 : 0;

  const k_table *const *sup = k_levels_supported();
  int n_sup = 0, sup_generic = 0;
  for (; sup[n_sup]; n_sup++) sup_generic |= sup[n_sup] == G;
  if (!sup_generic) {
    fprintf(stderr, "FAIL k_levels_supported() does not list generic\n");
    fail = 1;
  }
  run_level(G);
  fail |= print_level(G);
  widen_nan_payload_diffs = 0;

  static const char *names[] = {"avx512-bf16", "avx512", "avx2", "neon"};
  int ran_levels = 0;
  for (int i = 0; i < NELEM(names); i++) {
    const k_table *t = k_level_by_name(names[i]);
    if (!t) {
      printf("SKIP level %s: not built for this architecture\n", names[i]);
      continue;
    }
    int ok = 0;
    for (int j = 0; j < n_sup; j++) ok |= sup[j] == t;
    if (!ok) {
      printf("SKIP level %s: not supported by this CPU (features: %s)\n", names[i], eng_cpu_features());
      continue;
    }
    run_level(t);
    fail |= print_level(t);
    ran_levels++;
    if (widen_nan_payload_diffs)
      printf("  note: %ld F16 NaN inputs widened to a NaN with another payload than generic's (allowed)\n",
             widen_nan_payload_diffs);
    fflush(stdout);
    widen_nan_payload_diffs = 0;
  }
  for (int j = 0; j < n_sup; j++) { /* a supported level this test does not name */
    int named = sup[j] == G;
    for (int i = 0; i < NELEM(names); i++) named |= k_level_by_name(names[i]) == sup[j];
    if (!named) {
      run_level(sup[j]);
      fail |= print_level(sup[j]);
      ran_levels++;
    }
  }
  printf("%d levels compared with generic; %s\n", ran_levels, fail ? "FAILED" : "all passed");
  return fail;
}
