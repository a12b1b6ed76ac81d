/* forward.c: one engine step over a mixed batch (model-format.md's math).
 *
 * Rows are the step's new tokens, sequence by sequence. Projections are one
 * matrix product over all rows, split across the worker pool by output
 * column, each worker running the current kernel level's GEMV (one row),
 * few-row GEMM (a few decodes) or the packed GEMM (gemm.c) on its slice,
 * with 16-bit weights read in place (kernels.h). OpenBLAS only measures the
 * sgemm ceiling for the benches (and never starts threads of its own). Attention is split into work items
 * (sequence, token tile, head range); each item gathers the keys and values
 * it needs from the paged pool into the worker's scratch (rotating MFA-KR's
 * pre-RoPE keys on the way, so one rotation per key per item serves all of
 * its heads), then runs scores and the weighted sum as two small GEMMs.
 * MLA attends in the absorbed form (docs/mla-format.md): per head the
 * query's no-RoPE part is mapped into the latent space (q_lat = W_UK[h]^T
 * q_nope, a per-head product, hm_run), so its query [q_lat | q_rope] meets
 * the cached row [c | k_rope] directly, and the value is the row's latent
 * prefix c; the per-head output latent goes through W_UV[h] (hm_run again)
 * and then o_proj. Attention itself is the same code as for the other kinds
 * with one shared KV row per token (like MFA-KR), a key length kd = r + dr
 * and a value length vd = r.
 *
 * Invariants: every buffer is reserved in eng_ctx_new; a step allocates
 * nothing. The KV of a step's new tokens is written to the pool before any
 * attention reads it, so a prompt fed at once or token by token reads the
 * same stored values. */
#include <cblas.h>
#include <unistd.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "kernels.h"

extern void openblas_set_num_threads(int);
extern char *openblas_get_corename(void);

#define ITEM_TOKENS 32 /* query tokens per attention item (prefill) */

typedef struct {
  int seq, t0, t1; /* rows [t0, t1) of the step, all in seq */
  int k0, k1;      /* key positions [k0, k1) it reads (k1: what its last row sees) */
  int part;        /* -1: the whole context, result to att; else its partial-result slot */
  int group;       /* split group, when part >= 0 */
} att_item;

/* An item whose context was split into parts (flash-decoding): each part
 * leaves (O, m, l) in its slot; the part that finishes last merges them. */
typedef struct {
  int t0, t1, slot0, nparts; /* the item's rows; its parts' slots */
  _Atomic int done;
} att_group;

struct eng_ctx {
  const eng_model *m;
  tp_pool *tp;
  int nth, max_tokens, max_seqs, max_ctx;
  int kd, vd, rd;              /* attention's key and value length, RoPE dimension (MLA: r + dr, r, dr; else hd) */
  float scale;                 /* softmax scale 1/sqrt(head_dim) */
  float *rope;                 /* [max_ctx][rd]: cos(rd/2) then sin(rd/2) */
  float *x, *xn, *qa, *q, *k, *v, *att, *g, *u, *hrows; /* activations, see eng_ctx_new */
  float *qm;                   /* MLA: [max_tokens][H][kd] the absorbed queries [q_lat | rotated q_rope] */
  float **hbuf;                /* MLA, per thread: hm_run's rows [HM_ROWS][hm_k], then packed [HM_ROWS + MR][hm_k] */
  int hm_k;
  int32_t *row_seq, *row_pos;  /* [max_tokens] */
  int32_t *lrows;              /* [max_tokens] rows needing logits */
  float *amax_v;               /* [nth][max_tokens]: mm_job's per-thread argmax (eng_batch.argmax) */
  int32_t *amax_i;
  int *seq_row0;               /* [max_seqs] */
  att_item *items;             /* [max_items] */
  int max_items;
  att_item *base;              /* [nth] items before splitting */
  att_group *groups;           /* [nth] */
  float **part;                /* [2 nth] partial results: [item_rows_max][vd], then m and l */
  float **kbuf, **vbuf;        /* per thread: keys [KV_TILE][kd], values [KV_TILE][hd] (MLA: none, the keys' prefix) */
  float **sbuf;                /* per thread [KV_TILE][rows8 + 8] scores, then m, l, corr, valid [rows8] each */
  float **qbuf, **obuf;        /* per thread: queries transposed [kd][rows8 + 8], outputs [rows][vd] */
  float **bpack;               /* per thread: the packed GEMM's weight panels (k_gemm_scratch_floats) */
  float *apack;                /* the packed GEMM's activation panels [ceil(T / MR) MR][max k] */
  int item_rows_max;
  /* the step being run */
  const eng_batch *b;
  int layer, n_rows, n_items, n_lrows;
  _Atomic int next_item;
};

/* ---------------------------------------------------------------- matmul */

typedef struct {
  eng_mat w;  /* [n][k] */
  float *out; /* [rows][n] */
  int n;
} mm_part;

typedef struct {
  const float *in; /* [rows][k] */
  int rows, k;
  float beta;      /* 0: out = in W^T; 1: out += in W^T */
  int n_parts;
  mm_part parts[3];
  int blas;         /* F32 weights through OpenBLAS's sgemm (the bench's ceiling) */
  _Atomic int next; /* next unclaimed output column (or row panel, packing A) */
  int rl;           /* rows on lanes (K()->gemm_rl) */
  const float *ap;  /* in, packed (rows > few_max, or rl: K_RL_MR-row panels) */
  const uint8_t *aq; /* in, quantized for the level's int8 product (qgemm_cols; quantized weights) */
  const float *da;
  float **bp;       /* per-thread weight panels */
  float *amax_v;    /* or NULL: per thread and row, the largest value and ... */
  int32_t *amax_i;  /* ... its first column (-1: none yet) over the thread's chunks (one part) */
} mm_job;

/* out[rows][a..e) (+)= in W[a..e)^T for one part's column range: one row is
 * a GEMV, a few rows stream W once for all of them, more rows use the
 * packed GEMM (gemm.c); every path reads 16-bit weights in place. */
static void mm_cols(const mm_job *j, const mm_part *pt, int a, int e, float *bp) {
  const k_table *kt = K();
  const void *w = st_at(pt->w.p, pt->w.dt, (size_t)a, (size_t)j->k, 0);
  if (j->blas && pt->w.dt == ST_F32)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->rows, e - a, j->k, 1.0f, j->in, j->k, w, j->k,
                j->beta, pt->out + a, pt->n);
  else if (j->rows == 1)
    kt->gemv(pt->out + a, w, e - a, j->k, j->in, j->beta, pt->w.dt);
  else if (j->aq)
    kt->qgemm_cols(pt->out + a, (size_t)pt->n, j->aq, j->da, j->rows, w, e - a, j->k, pt->w.dt, j->beta, bp);
  else if (j->rl)
    kt->gemm_rl(pt->out + a, pt->n, w, e - a, j->k, j->ap, j->rows, j->beta, pt->w.dt, bp);
  else if (j->rows <= kt->few_max)
    kt->gemm_few(pt->out + a, pt->n, w, e - a, j->k, j->in, j->rows, j->beta, pt->w.dt);
  else
    k_gemm_cols(pt->out + a, (size_t)pt->n, j->ap, j->rows, w, e - a, j->k, pt->w.dt, j->beta, bp);
}

/* the first i < n with x[i] == v, or -1 */
static int first_eq(const float *x, int n, float v) {
  for (int i = 0; i < n; i++)
    if (x[i] == v) return i;
  return -1;
}

int32_t eng_argmax(const float *x, int n) {
  int i = first_eq(x, n, K()->vmax(x, n));
  return i < 0 ? 0 : i; /* every value NaN */
}

/* The rows' argmax over columns [c0, c1) just computed (in cache), folded
 * into this thread's running best: a thread claims its chunks in increasing
 * order, so a strictly larger value (or the first non-NaN one) is the first
 * index of the thread's maximum; threads are merged in amax_merge. */
static void amax_chunk(const mm_job *j, int ith, int c0, int c1) {
  const mm_part *pt = &j->parts[0];
  float *bv = j->amax_v + (size_t)ith * j->rows;
  int32_t *bi = j->amax_i + (size_t)ith * j->rows;
  for (int r = 0; r < j->rows; r++) {
    const float *x = pt->out + (size_t)r * pt->n + c0;
    float m = K()->vmax(x, c1 - c0);
    if (bi[r] >= 0 && !(m > bv[r])) continue;
    int i = first_eq(x, c1 - c0, m); /* absent only when every value is NaN */
    if (i >= 0) bv[r] = m, bi[r] = c0 + i;
  }
}

static void amax_merge(const mm_job *j, int nth, int32_t *out) {
  for (int r = 0; r < j->rows; r++) {
    int32_t best = -1;
    float bv = 0;
    for (int t = 0; t < nth; t++) {
      int32_t i = j->amax_i[(size_t)t * j->rows + r];
      float v = j->amax_v[(size_t)t * j->rows + r];
      if (i >= 0 && (best < 0 || v > bv || (v == bv && i < best))) best = i, bv = v;
    }
    out[r] = best < 0 ? 0 : best;
  }
}

/* Output columns are claimed in chunks from a shared counter, so a worker
 * that starts late (another process had its core) does less, not delays
 * everyone. */
static void mm_worker(void *arg, int ith, int nth) {
  mm_job *j = arg;
  int total = 0;
  for (int p = 0; p < j->n_parts; p++) total += j->parts[p].n;
  /* one decode row: one chunk per thread, the longest run each thread can
   * stream (measured: 930-965 tokens/s against 845-865 with 4 chunks per
   * thread; a late worker still only loses its chunk to the caller); a few
   * rows (the blocked GEMV): 4 per thread balance best; more rows: big
   * chunks so each sgemm call amortises packing its input */
  int few = (j->rows <= K()->few_max || j->rl) && !j->aq, packed = !few && !j->blas;
  int parts_per_thread = j->rows == 1 ? 1 : few ? 4 : 2;
  int chunk = (total + parts_per_thread * nth - 1) / (parts_per_thread * nth);
  chunk = MFS_MAX(few ? 16 : 64, (chunk + 15) & ~15);
  if (j->rl) chunk = MFS_MAX(48, (chunk + 23) / 24 * 24); /* whole blocks of 24 (or 12) weight rows */
  if (packed) chunk = k_gemm_chunk(); /* many rows: small chunks balance, the panels are reused across rows */
  for (;;) {
    int c0 = atomic_fetch_add(&j->next, chunk);
    if (c0 >= total) break;
    int c1 = MFS_MIN(total, c0 + chunk), base = 0;
    for (int p = 0; p < j->n_parts; p++) {
      const mm_part *pt = &j->parts[p];
      int a = MFS_MAX(c0, base) - base, e = MFS_MIN(c1, base + pt->n) - base;
      base += pt->n;
      if (a < e) mm_cols(j, pt, a, e, j->bp[ith]);
    }
    if (j->amax_v) amax_chunk(j, ith, c0, c1);
  }
}

/* row panels of the input, claimed like columns */
static void pack_worker(void *arg, int ith, int nth) {
  (void)ith, (void)nth;
  mm_job *j = arg;
  int MR = j->rl ? K_RL_MR : K()->gemm_mr, nrb = (j->rows + MR - 1) / MR;
  for (int rb; (rb = atomic_fetch_add(&j->next, 4)) < nrb;)
    k_pack_a((float *)j->ap, j->in, j->rows, j->k, MR, rb, MFS_MIN(nrb, rb + 4));
}

/* row runs of the input quantized for qgemm_cols, claimed like columns */
static void quant_worker(void *arg, int ith, int nth) {
  (void)ith, (void)nth;
  mm_job *j = arg;
  for (int r; (r = atomic_fetch_add(&j->next, 4)) < j->rows;)
    K()->qgemm_quant_a((uint8_t *)j->aq, (float *)j->da, j->in, r, MFS_MIN(j->rows, r + 4), j->k);
}

/* rows on lanes: the level has it, the row count is in its range, and every
 * part's weights are F32 / F16 / BF16 */
static int rl_ok(const mm_job *j) {
  const k_table *kt = K();
  if (!kt->gemm_rl || j->blas || j->rows < kt->rl_min || j->rows > kt->rl_max || j->k % 16) return 0;
  for (int p = 0; p < j->n_parts; p++)
    if (st_is_quant(j->parts[p].w.dt)) return 0;
  return 1;
}

static void mm_run(eng_ctx *c, mm_job *j) {
  j->bp = c->bpack;
  int qmode = j->rows >= 2 && !j->blas && K()->qgemm_cols && j->k % ST_QK == 0;
  for (int p = 0; p < j->n_parts; p++) qmode = qmode && st_is_quant(j->parts[p].w.dt);
  if (qmode) { /* quantized weights on a level with int8 products: A as int8 blocks in apack's memory */
    j->aq = (const uint8_t *)c->apack;
    j->da = (const float *)(void *)((uint8_t *)c->apack + MFS_ALIGN_UP((size_t)j->rows * j->k, 64));
    tp_pool_run(c->tp, quant_worker, j);
    atomic_store(&j->next, 0);
  } else if ((j->rl = rl_ok(j)) || (j->rows > K()->few_max && !j->blas)) {
    j->ap = c->apack;
    tp_pool_run(c->tp, pack_worker, j);
    atomic_store(&j->next, 0);
  }
  tp_pool_run(c->tp, mm_worker, j);
}

static void mm1(eng_ctx *c, float *out, const float *in, eng_mat w, int rows, int k, int n, float beta) {
  mm_job j = {.in = in, .rows = rows, .k = k, .beta = beta, .n_parts = 1, .parts = {{w, out, n}}};
  mm_run(c, &j);
}

/* ------------------------------------------------------ per-head products */

/* MLA's per-head products: for every row r and head h,
 *   out[r*ldo + h*ohs + j] = sum_i in[r*ldi + h*ihs + i] W_h[j][i],  j < n, i < k,
 * with W_h the n rows of w ([*][k]) from row h*whs + woff: head h's block of
 * a matrix. Work units are (head, run of up to HM_ROWS rows), claimed from a
 * counter; a unit of one row is a GEMV on the input in place, longer runs
 * copy their inputs into the worker's scratch (a row's head slice is not
 * contiguous with the next row's) and use gemm_few or the packed GEMM. */
#define HM_ROWS 64

typedef struct {
  eng_ctx *c;
  const float *in;
  int ldi, ihs;
  float *out;
  int ldo, ohs;
  eng_mat w;
  int whs, woff, n, k, rows, H, nrb;
  _Atomic int next;
} hm_job;

static void hm_worker(void *arg, int ith, int nth) {
  (void)nth;
  hm_job *j = arg;
  const k_table *kt = K();
  int MR = kt->gemm_mr;
  for (int u; (u = atomic_fetch_add(&j->next, 1)) < j->H * j->nrb;) {
    int h = u / j->nrb, r0 = u % j->nrb * HM_ROWS, nr = MFS_MIN(HM_ROWS, j->rows - r0);
    const void *w = st_at(j->w.p, j->w.dt, (size_t)h * j->whs + j->woff, (size_t)j->k, 0);
    float *o = j->out + (size_t)r0 * j->ldo + (size_t)h * j->ohs;
    const float *x = j->in + (size_t)r0 * j->ldi + (size_t)h * j->ihs;
    if (nr == 1) {
      kt->gemv(o, w, j->n, j->k, x, 0.0f, j->w.dt);
      continue;
    }
    float *a = j->c->hbuf[ith], *ap = a + (size_t)HM_ROWS * j->c->hm_k; /* a: [nr][k] */
    for (int r = 0; r < nr; r++) memcpy(a + (size_t)r * j->k, x + (size_t)r * j->ldi, (size_t)j->k * sizeof *a);
    if (nr <= kt->few_max) {
      kt->gemm_few(o, j->ldo, w, j->n, j->k, a, nr, 0.0f, j->w.dt);
    } else {
      k_gemm_pack_a(ap, a, nr, j->k, 0, (nr + MR - 1) / MR);
      k_gemm_cols(o, (size_t)j->ldo, ap, nr, w, j->n, j->k, j->w.dt, 0.0f, j->c->bpack[ith]);
    }
  }
}

static void hm_run(eng_ctx *c, float *out, int ldo, int ohs, const float *in, int ldi, int ihs, eng_mat w, int whs,
                   int woff, int n, int k) {
  int H = c->m->info.n_heads;
  hm_job j = {.c = c, .in = in, .ldi = ldi, .ihs = ihs, .out = out, .ldo = ldo, .ohs = ohs, .w = w, .whs = whs,
              .woff = woff, .n = n, .k = k, .rows = c->n_rows, .H = H, .nrb = (c->n_rows + HM_ROWS - 1) / HM_ROWS};
  if (c->n_rows * H < 4) hm_worker(&j, 0, 1);
  else tp_pool_run(c->tp, hm_worker, &j);
}

/* ------------------------------------------------------- row-wise phases */

typedef enum { PH_ATTN_NORM, PH_QNORM, PH_ROPE_STORE, PH_FFN_NORM, PH_SWIGLU, PH_FINAL_NORM } phase_kind;

typedef struct {
  eng_ctx *c;
  phase_kind kind;
  _Atomic int next; /* next unclaimed row */
} phase_job;

static void store_kv(eng_ctx *c, int r) {
  const eng_model_info *in = &c->m->info;
  const eng_batch *b = c->b;
  const kvc_geom *g = kvc_pool_geom(b->kv);
  const eng_seq_step *s = &b->seqs[c->row_seq[r]];
  int pos = c->row_pos[r];
  int32_t blk = s->block_table[pos / g->block_size];
  int off = pos % g->block_size;
  int ke = in->kv_k_elems, ve = in->kv_v_elems;
  const float *k = c->k + (size_t)r * ke, *v = c->v + (size_t)r * ve;
  uint8_t *kd = kvc_block_k(b->kv, blk, c->layer);
  uint8_t *vd = ve ? kvc_block_v(b->kv, blk, c->layer) : NULL;
  size_t kr = kvc_k_row_bytes(g), vr = kvc_v_row_bytes(g);
  kd += (size_t)off * kr;
  if (vd) vd += (size_t)off * vr;
  switch (g->dtype) {
  case KVC_F32:
    memcpy(kd, k, (size_t)ke * 4);
    if (ve) memcpy(vd, v, (size_t)ve * 4);
    break;
  case KVC_F16:
    K()->f32_to_f16((uint16_t *)kd, k, (size_t)ke);
    if (ve) K()->f32_to_f16((uint16_t *)vd, v, (size_t)ve);
    break;
  case KVC_I8: /* int8 values, then their F16 scales (kvcache.h) */
    k_kv_quant((int8_t *)kd, (uint16_t *)(kd + ke), k, ke, g->qgroup);
    if (ve) k_kv_quant((int8_t *)vd, (uint16_t *)(vd + ve), v, ve, g->qgroup);
    break;
  }
}

/* MLA, row r: the RoPE parts of the key (in c->k's row, after the latent)
 * and of every head's query (c->q, after q_nope; into c->qm after q_lat) are
 * stored interleaved, [x0, y0, x1, y1, ...] (DeepSeek-V2's checkpoints): they
 * are regrouped into halves [x0, x1, ..., y0, y1, ...] and rotated in the
 * rotate_half form over rd dimensions (docs/mla-format.md). Then the row
 * [latent | rotated rope key] goes to the pool. */
static void mla_rope_store(eng_ctx *c, int r) {
  const eng_model_info *in = &c->m->info;
  int rd = c->rd, half = rd / 2, H = in->n_heads, hd = in->head_dim, dn = in->nope_dim, lr = in->kv_rank;
  const float *cs = c->rope + (size_t)c->row_pos[r] * rd;
  float tmp[MLA_ROPE_MAX];
  const k_table *kt = K();
  for (int h = 0; h <= H; h++) {
    /* h < H: query head h; h == H: the shared key, rotated in place */
    const float *src = h < H ? c->q + ((size_t)r * H + h) * hd + dn : c->k + (size_t)r * c->kd + lr;
    float *dst = h < H ? c->qm + ((size_t)r * H + h) * c->kd + lr : c->k + (size_t)r * c->kd + lr;
    for (int i = 0; i < half; i++) tmp[i] = src[2 * i], tmp[half + i] = src[2 * i + 1];
    kt->rope_to(dst, tmp, cs, rd);
  }
  store_kv(c, r);
}

static void phase_worker(void *arg, int ith, int nth) {
  phase_job *pj = arg;
  eng_ctx *c = pj->c;
  const eng_model *m = c->m;
  const eng_model_info *in = &m->info;
  const eng_layer *ly = &m->layers[c->layer < in->n_layers ? c->layer : 0];
  int n = pj->kind == PH_FINAL_NORM ? c->n_lrows : c->n_rows;
  int d = in->d, hd = in->head_dim, H = in->n_heads, KV = in->n_kv_heads;
  int mla = in->attn == ENG_ATTN_MLA;
  (void)ith;
  int step = MFS_MAX(1, n / (4 * nth)); /* rows are claimed in small runs */
  for (int r0; (r0 = atomic_fetch_add(&pj->next, step)) < n;)
  for (int r = r0; r < MFS_MIN(n, r0 + step); r++) {
    switch (pj->kind) {
    case PH_ATTN_NORM:
      k_rmsnorm(c->xn + (size_t)r * d, c->x + (size_t)r * d, ly->attn_norm, d, in->rms_eps);
      break;
    case PH_FFN_NORM:
      k_rmsnorm(c->xn + (size_t)r * d, c->x + (size_t)r * d, ly->ffn_norm, d, in->rms_eps);
      break;
    case PH_QNORM: {
      if (in->q_rank) {
        float *qa = c->qa + (size_t)r * in->q_rank;
        k_rmsnorm(qa, qa, ly->q_norm, in->q_rank, in->rms_eps);
      }
      if (mla) { /* kv_a_layernorm on the latent, the first r of [latent | rope key] */
        float *lat = c->k + (size_t)r * c->kd;
        k_rmsnorm(lat, lat, ly->kv_norm, in->kv_rank, in->rms_eps);
      }
      break;
    }
    case PH_ROPE_STORE: {
      if (mla) {
        mla_rope_store(c, r);
        break;
      }
      const float *cs = c->rope + (size_t)c->row_pos[r] * hd;
      float *q = c->q + (size_t)r * H * hd;
      for (int h = 0; h < H; h++) k_rope(q + (size_t)h * hd, cs, hd);
      if (in->attn != ENG_ATTN_MFA_KR) {
        float *k = c->k + (size_t)r * KV * hd;
        for (int h = 0; h < KV; h++) k_rope(k + (size_t)h * hd, cs, hd);
      }
      store_kv(c, r);
      break;
    }
    case PH_SWIGLU:
      K()->swiglu(c->g + (size_t)r * in->inter, c->u + (size_t)r * in->inter, in->inter);
      break;
    case PH_FINAL_NORM:
      k_rmsnorm(c->hrows + (size_t)r * d, c->x + (size_t)c->lrows[r] * d, m->final_norm, d, in->rms_eps);
      break;
    }
  }
}

static void phase(eng_ctx *c, phase_kind k) {
  phase_job j = {c, k, 0};
  int n = k == PH_FINAL_NORM ? c->n_lrows : c->n_rows;
  /* a few rows of elementwise work cost less than waking the pool */
  if (n < 4) phase_worker(&j, 0, 1);
  else tp_pool_run(c->tp, phase_worker, &j);
}

/* ------------------------------------------------------------- attention */

/* Attention reads the cache in tiles of KV_TILE positions: a tile's keys
 * (rotated) and values are widened into the worker's L1-sized scratch,
 * every query row of the item consumes it (scores, online softmax,
 * weighted values: kernels.c), and the next tile overwrites it.
 * The cache is therefore streamed once per item, whatever the context
 * length. With fewer items than workers (a few decodes), each item's
 * context is split between items and the partial softmaxes are merged, so
 * every core works on one sequence's keys without reading any key twice. */
#define KV_TILE 64
#define SPLIT_MIN_KEYS 64 /* no part of a split context is shorter */

/* Positions [j0, j1) of KV head g: keys (rotated) into Kt[KV_TILE][kd]
 * (rows up to the next multiple of 4 zeroed), values into Vt[KV_TILE][hd].
 * MFA-KR: the value is the stored pre-RoPE key and the key its rotation.
 * MLA: the key is the whole stored row [latent | rotated rope key] and the
 * value its latent prefix, read from Kt itself (Vt is not written). */
static void gather_tile(eng_ctx *c, const eng_seq_step *s, int g, int j0, int j1, float *Kt, float *Vt) {
  const eng_model_info *in = &c->m->info;
  const kvc_geom *geo = kvc_pool_geom(c->b->kv);
  int hd = in->head_dim, ke = in->kv_k_elems, ve = in->kv_v_elems, bs = geo->block_size, kdim = c->kd;
  int kr = in->attn == ENG_ATTN_MFA_KR, qg = geo->qgroup, has_v = ve > 0;
  int n_el = in->attn == ENG_ATTN_MLA ? kdim : hd; /* elements read per key */
  size_t krow = kvc_k_row_bytes(geo), vrow = kvc_v_row_bytes(geo);
  const k_table *kt = K();
  for (int j = j0; j < j1;) {
    int32_t blk = s->block_table[j / bs];
    int off = j % bs, cnt = MFS_MIN(bs - off, j1 - j);
    const uint8_t *kb = (const uint8_t *)kvc_block_k(c->b->kv, blk, c->layer) + (size_t)off * krow;
    const uint8_t *vb = ve ? (const uint8_t *)kvc_block_v(c->b->kv, blk, c->layer) + (size_t)off * vrow : NULL;
    for (int i = 0; i < cnt; i++, j++, kb += krow, vb = vb ? vb + vrow : NULL) {
      float *kd = Kt + (size_t)(j - j0) * kdim, *vd = Vt + (size_t)(j - j0) * hd;
      size_t o = (size_t)g * n_el; /* head g's first element in a row */
      /* MFA-KR: the stored row is the value; the key is its rotation */
      float *k_dst = kr ? vd : kd;
      switch (geo->dtype) {
      case KVC_F32:
        memcpy(k_dst, (const float *)kb + o, (size_t)n_el * 4);
        if (has_v) memcpy(vd, (const float *)vb + o, (size_t)hd * 4);
        break;
      case KVC_F16:
        kt->widen(k_dst, (const uint16_t *)kb + o, (size_t)n_el, ST_F16);
        if (has_v) kt->widen(vd, (const uint16_t *)vb + o, (size_t)hd, ST_F16);
        break;
      case KVC_I8:
        kt->kv_dequant(k_dst, (const int8_t *)kb + o, (const uint16_t *)(kb + ke) + o / qg, n_el, qg);
        if (has_v) kt->kv_dequant(vd, (const int8_t *)vb + o, (const uint16_t *)(vb + ve) + o / qg, hd, qg);
        break;
      }
      if (kr) kt->rope_to(kd, vd, c->rope + (size_t)j * hd, hd);
    }
  }
  int n = j1 - j0, n4 = (n + 3) & ~3;
  memset(Kt + (size_t)n * kdim, 0, (size_t)(n4 - n) * kdim * sizeof *Kt);
}

/* A split group's parts are all done: att = sum_p O_p e^(m_p - m) / sum_p l_p e^(m_p - m). */
static void attn_merge(eng_ctx *c, const att_group *gp) {
  const eng_model_info *in = &c->m->info;
  int H = in->n_heads, vd = c->vd, R = c->item_rows_max, rows = (gp->t1 - gp->t0) * H;
  for (int r = 0; r < rows; r++) {
    float m = -1e30f, l = 0;
    for (int p = 0; p < gp->nparts; p++) {
      float mp = c->part[gp->slot0 + p][(size_t)R * vd + r];
      m = mp > m ? mp : m;
    }
    float *dst = c->att + (size_t)(gp->t0 + r / H) * H * vd + (size_t)(r % H) * vd;
    memset(dst, 0, (size_t)vd * sizeof *dst);
    for (int p = 0; p < gp->nparts; p++) {
      const float *pt = c->part[gp->slot0 + p];
      float mp = pt[(size_t)R * vd + r], lp = pt[(size_t)R * vd + R + r];
      if (lp == 0) continue; /* this part saw no key of this row */
      float w = expf(mp - m);
      l += lp * w;
      for (int i = 0; i < vd; i++) dst[i] += pt[(size_t)r * vd + i] * w;
    }
    float inv = 1.0f / l;
    for (int i = 0; i < vd; i++) dst[i] *= inv;
  }
}

/* One item: queries of head h at row t are q_att[(t*H + h)*kd ..] (c->q, or
 * MLA's absorbed c->qm), keys kd long, values vd long (MLA: the keys' first
 * vd elements, ldv = kd); outputs to c->att[(t*H + h)*vd ..]. */
static void attn_item_run(eng_ctx *c, int ith, const att_item *it) {
  const eng_model_info *in = &c->m->info;
  const eng_seq_step *s = &c->b->seqs[it->seq];
  int H = in->n_heads, KV = in->n_kv_heads, G = H / KV, R = c->item_rows_max, kd = c->kd, vd = c->vd;
  int row0 = c->seq_row0[it->seq], ntok = it->t1 - it->t0, rows = ntok * G, R8 = (rows + 7) & ~7;
  int ld = R8 + 8; /* row stride of Qt and S: off powers of two, so no cache-set conflicts */
  float *Qt = c->qbuf[ith], *O = c->obuf[ith], *Kt = c->kbuf[ith], *Vt = c->vbuf[ith];
  float *S = c->sbuf[ith], *M = S + (size_t)KV_TILE * ld, *L = M + R8, *corr = L + R8, *valid = corr + R8;
  float *part = it->part >= 0 ? c->part[it->part] : NULL;
  const k_table *kt = K();
  int mla = in->attn == ENG_ATTN_MLA, ldv = mla ? kd : vd;
  const float *qsrc = mla ? c->qm : c->q, *V = mla ? Kt : Vt;
  float scale = c->scale;
  /* up to 4 rows (a decode of MHA or small-group GQA): one dot product per
   * row and key beats 8 padded lanes of the transposed layout */
  int few = rows <= 4 && kd % 8 == 0;
  const float *qr[4] = {0};
  for (int g = 0; g < KV; g++) {
    /* row r: token r / G, head g * G + r % G; Q transposed: Qt[d][r] */
    for (int r = 0; r < R8; r++) {
      const float *q = r < rows ? qsrc + (size_t)(it->t0 + r / G) * H * kd + (size_t)(g * G + r % G) * kd : NULL;
      if (few) {
        if (q) qr[r] = q;
      } else if (q) {
        for (int d = 0; d < kd; d++) Qt[(size_t)d * ld + r] = q[d] * scale;
      } else {
        for (int d = 0; d < kd; d++) Qt[(size_t)d * ld + r] = 0;
      }
      M[r] = -1e30f; /* finite: a row with every key masked so far stays NaN-free */
      L[r] = 0;
    }
    memset(O, 0, (size_t)rows * vd * sizeof *O);
    for (int j0 = it->k0; j0 < it->k1; j0 += KV_TILE) {
      int j1 = MFS_MIN(it->k1, j0 + KV_TILE), cnt = j1 - j0;
      gather_tile(c, s, g, j0, j1, Kt, Vt);
      for (int r = 0; r < R8; r++) /* causal: row r sees keys [j0, j0 + valid) of this tile */
        valid[r] = r < rows ? (float)MFS_MIN(cnt, s->n_past + (it->t0 + r / G - row0) + 1 - j0) : 0.0f;
      if (few) kt->attn_scores_few(S, ld, qr, rows, scale, Kt, cnt, kd);
      else kt->attn_scores(S, ld, Qt, ld, R8, Kt, (cnt + 3) & ~3, kd);
      kt->attn_softmax(S, ld, cnt, R8, valid, M, L, corr);
      kt->attn_accum(O, S, ld, V, ldv, cnt, rows, vd, corr);
    }
    for (int r = 0; r < rows; r++) {
      int tok = r / G, h = g * G + r % G;
      if (part) { /* partial row tok * H + h: O, m, l */
        size_t pr = (size_t)tok * H + h;
        memcpy(part + pr * vd, O + (size_t)r * vd, (size_t)vd * sizeof *O);
        part[(size_t)R * vd + pr] = M[r];
        part[(size_t)R * vd + R + pr] = L[r];
        continue;
      }
      float inv = 1.0f / L[r];
      float *dst = c->att + (size_t)(it->t0 + tok) * H * vd + (size_t)h * vd;
      for (int i = 0; i < vd; i++) dst[i] = O[(size_t)r * vd + i] * inv;
    }
  }
  if (part) {
    att_group *gp = &c->groups[it->group];
    if (atomic_fetch_add(&gp->done, 1) == gp->nparts - 1) attn_merge(c, gp); /* the last part merges */
  }
}

static void attn_worker(void *arg, int ith, int nth) {
  (void)nth;
  eng_ctx *c = arg;
  for (;;) {
    int i = atomic_fetch_add(&c->next_item, 1);
    if (i >= c->n_items) break;
    attn_item_run(c, ith, &c->items[i]);
  }
}

/* Splits the step into attention items: token tiles of up to ITEM_TOKENS
 * rows of one sequence, all heads. With fewer items than workers (a few
 * decodes) each item's context is split further into about 2 parts per
 * worker (dynamic claiming balances them), never shorter than
 * SPLIT_MIN_KEYS and aligned to 16 positions. */
static void plan_items(eng_ctx *c) {
  const eng_batch *b = c->b;
  int n = 0;
  for (int s = 0; s < b->n_seqs; s++) {
    const eng_seq_step *st = &b->seqs[s];
    int row0 = c->seq_row0[s];
    for (int t = 0; t < st->n_new; t += ITEM_TOKENS) {
      int t1 = MFS_MIN(st->n_new, t + ITEM_TOKENS);
      c->items[n++] = (att_item){s, row0 + t, row0 + t1, 0, st->n_past + t1, -1, -1};
    }
  }
  if (n < c->nth && c->nth > 1) {
    int nb = n, want = 2 * c->nth, slot = 0;
    memcpy(c->base, c->items, (size_t)nb * sizeof *c->base);
    n = 0;
    for (int i = 0; i < nb; i++) {
      att_item it = c->base[i];
      int parts = MFS_MIN(want / nb, it.k1 / SPLIT_MIN_KEYS);
      if (parts < 2) {
        c->items[n++] = it;
        continue;
      }
      att_group *gp = &c->groups[i];
      gp->t0 = it.t0, gp->t1 = it.t1, gp->slot0 = slot, gp->nparts = parts;
      atomic_store(&gp->done, 0);
      for (int p = 0; p < parts; p++) {
        att_item q = it;
        q.k0 = p ? (int)((long)it.k1 * p / parts) & ~15 : 0;
        q.k1 = p == parts - 1 ? it.k1 : (int)((long)it.k1 * (p + 1) / parts) & ~15;
        q.part = slot + p;
        q.group = i;
        c->items[n++] = q;
      }
      slot += parts;
    }
  }
  c->n_items = n;
  atomic_store(&c->next_item, 0);
}

/* ---------------------------------------------------------------- a step */

int eng_forward(eng_ctx *c, const eng_batch *b) {
  const eng_model *m = c->m;
  const eng_model_info *in = &m->info;
  if (!b || !b->kv || !b->seqs || !b->tokens || b->n_seqs < 1 || b->n_seqs > c->max_seqs) return MFS_EINVAL;
  const kvc_geom *geo = kvc_pool_geom(b->kv);
  int mla = in->attn == ENG_ATTN_MLA;
  if (geo->n_layers != in->n_layers || geo->k_elems != in->kv_k_elems || geo->v_elems != in->kv_v_elems ||
      (geo->dtype == KVC_I8 && (mla ? in->kv_rank % geo->qgroup || in->rope_dim % geo->qgroup
                                    : in->head_dim % geo->qgroup)))
    return MFS_EINVAL;
  kvc_stats ks;
  kvc_pool_stats(b->kv, &ks);
  int rows = 0, lrows = 0;
  for (int s = 0; s < b->n_seqs; s++) {
    const eng_seq_step *st = &b->seqs[s];
    if (st->n_new < 1 || st->n_past < 0 || !st->block_table || st->n_past + st->n_new > c->max_ctx ||
        rows + st->n_new > c->max_tokens)
      return MFS_EINVAL;
    int nb = (st->n_past + st->n_new + geo->block_size - 1) / geo->block_size;
    for (int i = 0; i < nb; i++)
      if (st->block_table[i] < 0 || st->block_table[i] >= ks.blocks_total) return MFS_EINVAL;
    c->seq_row0[s] = rows;
    for (int i = 0; i < st->n_new; i++) {
      int32_t tok = b->tokens[rows];
      if (tok < 0 || tok >= in->vocab) return MFS_EINVAL;
      c->row_seq[rows] = s;
      c->row_pos[rows] = st->n_past + i;
      if (st->logits == ENG_LOGITS_ALL || (st->logits == ENG_LOGITS_LAST && i == st->n_new - 1))
        c->lrows[lrows++] = rows;
      rows++;
    }
  }
  if (lrows && !b->logits) return MFS_EINVAL;
  c->b = b;
  c->n_rows = rows;
  int d = in->d, hd = in->head_dim, H = in->n_heads, KV = in->n_kv_heads;
  for (int r = 0; r < rows; r++)
    K()->widen(c->x + (size_t)r * d, st_at(m->embed.p, m->embed.dt, (size_t)b->tokens[r], (size_t)d, 0), (size_t)d,
               m->embed.dt);
  for (int l = 0; l < in->n_layers; l++) {
    const eng_layer *ly = &m->layers[l];
    c->layer = l;
    phase(c, PH_ATTN_NORM);
    if (mla) {
      /* queries (q_a_proj, or q_proj) and [latent | rope key] from xn; the norms; q_b_proj; then
       * q_lat[h] = W_UK[h]^T q_nope[h] into qm[r][h][0 .. r) (the rope part follows in PH_ROPE_STORE) */
      int qr = in->q_rank, lr = in->kv_rank, dn = in->nope_dim, kd = c->kd;
      mm_job j = {.in = c->xn, .rows = rows, .k = d, .n_parts = 2,
                  .parts = {{ly->wq, qr ? c->qa : c->q, qr ? qr : H * hd}, {ly->wk, c->k, kd}}};
      mm_run(c, &j);
      phase(c, PH_QNORM);
      if (qr) mm1(c, c->q, c->qa, ly->wq_up, rows, qr, H * hd, 0.0f);
      hm_run(c, c->qm, H * kd, kd, c->q, H * hd, hd, ly->w_uk_t, lr, 0, lr, dn);
    } else if (in->attn == ENG_ATTN_MFA || in->attn == ENG_ATTN_MFA_KR) {
      mm_job j = {.in = c->xn, .rows = rows, .k = d, .n_parts = 2, .parts = {{ly->wq, c->qa, in->q_rank}, {ly->wk, c->k, hd}}};
      if (ly->wv.p) j.parts[j.n_parts++] = (mm_part){ly->wv, c->v, hd};
      mm_run(c, &j);
      phase(c, PH_QNORM);
      mm1(c, c->q, c->qa, ly->wq_up, rows, in->q_rank, H * hd, 0.0f);
    } else {
      mm_job j = {.in = c->xn, .rows = rows, .k = d, .n_parts = 3,
                  .parts = {{ly->wq, c->q, H * hd}, {ly->wk, c->k, KV * hd}, {ly->wv, c->v, KV * hd}}};
      mm_run(c, &j);
    }
    phase(c, PH_ROPE_STORE);
    plan_items(c);
    tp_pool_run(c->tp, attn_worker, c);
    if (mla) { /* v[h] = W_UV[h] out_lat[h] (kv_b_proj's rows h*(dn+dv)+dn ..), then x += o_proj(v) */
      int lr = in->kv_rank, dn = in->nope_dim, dv = in->v_dim;
      hm_run(c, c->v, H * dv, dv, c->att, H * lr, lr, ly->wv, dn + dv, dn, dv, lr);
      mm1(c, c->x, c->v, ly->wo, rows, H * dv, d, 1.0f);
    } else {
      mm1(c, c->x, c->att, ly->wo, rows, H * hd, d, 1.0f); /* x += o_proj(att) */
    }
    phase(c, PH_FFN_NORM);
    mm_job j = {.in = c->xn, .rows = rows, .k = d, .n_parts = 2,
                .parts = {{ly->w_gate, c->g, in->inter}, {ly->w_up, c->u, in->inter}}};
    mm_run(c, &j);
    phase(c, PH_SWIGLU);
    mm1(c, c->x, c->g, ly->w_down, rows, in->inter, d, 1.0f); /* x += down(...) */
  }
  if (lrows) {
    c->n_lrows = lrows;
    phase(c, PH_FINAL_NORM);
    mm_job j = {.in = c->hrows, .rows = lrows, .k = d, .n_parts = 1, .parts = {{m->lm_head, b->logits, in->vocab}}};
    if (b->argmax) {
      j.amax_v = c->amax_v, j.amax_i = c->amax_i;
      for (size_t i = 0; i < (size_t)c->nth * lrows; i++) c->amax_i[i] = -1;
    }
    mm_run(c, &j);
    if (b->argmax) amax_merge(&j, c->nth, b->argmax);
  }
  c->b = NULL;
  return 0;
}

/* ------------------------------------------------------------ lifecycle */

static float *falloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, MFS_MAX(n, 1) * sizeof(float))) return NULL;
  return p;
}

void eng_ctx_free(eng_ctx *c) {
  if (!c) return;
  tp_pool_free(c->tp);
  float **bufs[] = {c->kbuf, c->vbuf, c->sbuf, c->qbuf, c->obuf, c->bpack, c->hbuf};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
    if (!bufs[i]) continue;
    for (int t = 0; t < c->nth; t++) free(bufs[i][t]);
    free(bufs[i]);
  }
  float *acts[] = {c->rope, c->x, c->xn, c->qa, c->q, c->k, c->v, c->att, c->g, c->u, c->hrows, c->apack, c->qm};
  for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) free(acts[i]);
  free(c->row_seq);
  free(c->row_pos);
  free(c->lrows);
  free(c->amax_v);
  free(c->amax_i);
  free(c->seq_row0);
  free(c->items);
  free(c->base);
  free(c->groups);
  if (c->part)
    for (int p = 0; p < 2 * c->nth; p++) free(c->part[p]);
  free(c->part);
  free(c);
}

int eng_ctx_threads(const eng_ctx *c) { return c->nth; }

int eng_ctx_new(eng_ctx **out, const eng_model *m, const eng_ctx_opts *o) {
  const eng_model_info *in = &m->info;
  if (!o || o->max_tokens < 1 || o->max_seqs < 1) return MFS_EINVAL;
  eng_ctx *c = calloc(1, sizeof *c);
  if (!c) return MFS_ENOMEM;
  c->m = m;
  c->nth = o->n_threads > 0 ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (c->nth < 1) c->nth = 1;
  c->max_tokens = o->max_tokens;
  c->max_seqs = o->max_seqs;
  c->max_ctx = o->max_ctx > 0 ? MFS_MIN(o->max_ctx, in->max_pos) : in->max_pos;
  /* one owner of the cores: our pool; OpenBLAS runs single-threaded inside it */
  openblas_set_num_threads(1);
  if (tp_pool_new(&c->tp, c->nth)) goto fail;
  size_t T = (size_t)c->max_tokens, d = in->d, hd = in->head_dim, H = in->n_heads, KV = in->n_kv_heads;
  size_t C = in->q_rank > 0 ? (size_t)in->q_rank : 1;
  int mla = in->attn == ENG_ATTN_MLA;
  /* MLA: keys [latent | rope key] (r + dr), values the latent (r), RoPE over dr */
  c->kd = mla ? in->kv_k_elems : in->head_dim;
  c->vd = mla ? in->kv_rank : in->head_dim;
  c->rd = mla ? in->rope_dim : in->head_dim;
  c->scale = 1.0f / sqrtf((float)in->head_dim);
  size_t kd = (size_t)c->kd, vd = (size_t)c->vd, rd = (size_t)c->rd, dv = (size_t)in->v_dim;
  /* c->k: [T][KV*hd] keys (MLA: [T][kd] rows to cache); c->v: values (MLA: [T][H*dv] per-head outputs) */
  if (!(c->rope = falloc((size_t)c->max_ctx * rd)) || !(c->x = falloc(T * d)) || !(c->xn = falloc(T * d)) ||
      !(c->qa = falloc(T * C)) || !(c->q = falloc(T * H * hd)) || !(c->k = falloc(T * MFS_MAX(KV * hd, kd))) ||
      !(c->v = falloc(T * MFS_MAX(KV * hd, H * dv))) || !(c->att = falloc(T * H * vd)) ||
      !(c->g = falloc(T * in->inter)) || !(c->u = falloc(T * in->inter)) || !(c->hrows = falloc(T * d)) ||
      (mla && !(c->qm = falloc(T * H * kd))))
    goto fail;
  for (int p = 0; p < c->max_ctx; p++)
    for (size_t i = 0; i < rd / 2; i++) {
      double inv = pow((double)in->rope_theta, -2.0 * (double)i / (double)rd);
      c->rope[(size_t)p * rd + i] = (float)cos(p * inv);
      c->rope[(size_t)p * rd + rd / 2 + i] = (float)sin(p * inv);
    }
  c->row_seq = malloc(T * sizeof(int32_t));
  c->row_pos = malloc(T * sizeof(int32_t));
  c->lrows = malloc(T * sizeof(int32_t));
  c->amax_v = malloc((size_t)c->nth * T * sizeof(float));
  c->amax_i = malloc((size_t)c->nth * T * sizeof(int32_t));
  c->seq_row0 = malloc((size_t)c->max_seqs * sizeof(int));
  /* items: token tiles (at most one per token plus one per sequence), or
   * when split (fewer items than workers) at most 2 nth parts */
  c->max_items = (int)T + c->max_seqs + 2 * c->nth;
  c->items = malloc((size_t)c->max_items * sizeof *c->items);
  c->base = malloc((size_t)c->nth * sizeof *c->base);
  c->groups = calloc((size_t)c->nth, sizeof *c->groups);
  c->part = calloc(2 * (size_t)c->nth, sizeof(float *));
  if (!c->row_seq || !c->row_pos || !c->lrows || !c->amax_v || !c->amax_i || !c->seq_row0 || !c->items || !c->base || !c->groups || !c->part)
    goto fail;
  c->item_rows_max = (int)(MFS_MIN((size_t)ITEM_TOKENS, T) * H); /* one item: tokens x heads */
  size_t rows8 = ((size_t)c->item_rows_max + 7) & ~(size_t)7;
  for (int p = 0; p < 2 * c->nth; p++)
    if (!(c->part[p] = falloc((size_t)c->item_rows_max * (vd + 2)))) goto fail;
  c->kbuf = calloc((size_t)c->nth, sizeof(float *));
  c->vbuf = calloc((size_t)c->nth, sizeof(float *));
  c->sbuf = calloc((size_t)c->nth, sizeof(float *));
  c->qbuf = calloc((size_t)c->nth, sizeof(float *));
  c->obuf = calloc((size_t)c->nth, sizeof(float *));
  c->bpack = calloc((size_t)c->nth, sizeof(float *));
  c->hbuf = calloc((size_t)c->nth, sizeof(float *));
  if (!c->kbuf || !c->vbuf || !c->sbuf || !c->qbuf || !c->obuf || !c->bpack || !c->hbuf) goto fail;
  size_t kmax = MFS_MAX(MFS_MAX(d, (size_t)in->inter), MFS_MAX(MFS_MAX(H * hd, H * dv), C));
  size_t MR = (size_t)K()->gemm_mr, mr_pad = MFS_MAX(MR, (size_t)K_RL_MR); /* panels of either height */
  if (!(c->apack = falloc((T + mr_pad - 1) / MR * MR * kmax + mr_pad * kmax))) goto fail;
  c->hm_k = MFS_MAX(in->nope_dim, in->kv_rank);
  for (int t = 0; t < c->nth; t++)
    if (!(c->kbuf[t] = falloc((size_t)KV_TILE * kd)) || !(c->vbuf[t] = falloc((size_t)KV_TILE * hd)) ||
        !(c->sbuf[t] = falloc((rows8 + 8) * KV_TILE + 4 * rows8)) || !(c->qbuf[t] = falloc((rows8 + 8) * kd)) ||
        !(c->obuf[t] = falloc((size_t)c->item_rows_max * vd)) || !(c->bpack[t] = falloc(k_gemm_scratch_floats())) ||
        (mla && !(c->hbuf[t] = falloc((2 * (size_t)HM_ROWS + MR) * (size_t)c->hm_k))))
      goto fail;
  *out = c;
  return 0;
fail:
  eng_ctx_free(c);
  return MFS_ENOMEM;
}

/* ---------------------------------------------------------- ceilings */

double eng_bench_sgemm(eng_ctx *c, int m, int n, int k, int reps) {
  float *a = falloc((size_t)m * k), *w = falloc((size_t)n * k), *o = falloc((size_t)m * n);
  double best = 1e30;
  if (a && w && o) {
    for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < (size_t)n * k; i++) w[i] = (float)((i * 40503u) % 1000) * 1e-3f - 0.5f;
    for (int r = 0; r < reps + 1; r++) {
      double t0 = mfs_now();
      mm_job j = {.in = a, .rows = m, .k = k, .n_parts = 1, .parts = {{{w, ST_F32}, o, n}}, .blas = 1};
      mm_run(c, &j);
      double dt = mfs_now() - t0;
      if (r > 0 && dt < best) best = dt; /* first run warms up */
    }
  }
  free(a);
  free(w);
  free(o);
  return best;
}

typedef struct {
  const float *buf;
  size_t n;
  double sink[64];
} bw_job;

static void bw_worker(void *arg, int ith, int nth) {
  bw_job *j = arg;
  size_t per = (j->n / (size_t)nth) & ~(size_t)31;
  const float *p = j->buf + per * (size_t)ith;
  float s[32] = {0}; /* 32 independent sums: the compiler vectorises them for any target */
  for (size_t i = 0; i < per; i += 32) {
    /* the same prefetch as the decode kernels (into L2, 8 KiB ahead): the
     * ceiling is the best read rate, not the hardware prefetcher's alone */
    __builtin_prefetch(p + i + 2048, 0, 2);
    __builtin_prefetch(p + i + 2048 + 16, 0, 2);
    for (int l = 0; l < 32; l++) s[l] += p[i + l];
  }
  j->sink[ith & 63] = s[0] + s[31];
}

double eng_bench_bandwidth(eng_ctx *c, size_t bytes, int reps) {
  size_t n = bytes / 4;
  float *buf = falloc(n);
  if (!buf) return 0;
  for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023); /* real data: no zero-page shortcuts */
  bw_job j = {buf, n, {0}};
  double best = 1e30;
  for (int r = 0; r < reps + 1; r++) {
    double t0 = mfs_now();
    tp_pool_run_all(c->tp, bw_worker, &j);
    double dt = mfs_now() - t0;
    if (r > 0 && dt < best) best = dt;
  }
  free(buf);
  size_t per = (n / (size_t)c->nth) & ~(size_t)31;
  return (double)(per * (size_t)c->nth * 4) / best;
}

typedef struct {
  long iters;
  double flops[64];
} fma_job;

static void fma_worker(void *arg, int ith, int nth) {
  (void)nth;
  fma_job *j = arg;
  j->flops[ith & 63] = K()->fma_burn(j->iters);
}

double eng_bench_fma_peak(eng_ctx *c, int reps) {
  fma_job j = {.iters = 1 << 22};
  double best = 1e30, flops = 0;
  for (int r = 0; r < reps + 1; r++) {
    double t0 = mfs_now();
    tp_pool_run_all(c->tp, fma_worker, &j);
    double dt = mfs_now() - t0;
    flops = 0;
    for (int t = 0; t < c->nth && t < 64; t++) flops += j.flops[t];
    if (r > 0 && dt < best) best = dt; /* the first run wakes the cores up */
  }
  return flops / best;
}

const char *eng_bench_blas_core(void) { return openblas_get_corename(); }
