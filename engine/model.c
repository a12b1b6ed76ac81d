/* model.c: builds an eng_model from a directory: config, tensors by name
 * and shape, F32 views or F32 copies, MFA-KR's value-path fold, and MLA's
 * per-head W_UK^T (kv_b_proj's key rows transposed, for the absorbed form).
 *
 * Ownership: F32 tensors whose data is 4-byte aligned are used in place
 * from the read-only mapping; everything converted or folded is an owned
 * buffer listed in m->owned and freed with the model. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include "engine_int.h"
#include "kernels.h"

static int mfail(char *err, size_t errlen, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return code;
}

static void *own_alloc_aligned(eng_model *m, size_t bytes, size_t align) {
  if (m->n_owned == m->cap_owned) {
    int cap = m->cap_owned ? 2 * m->cap_owned : 64;
    void **o = realloc(m->owned, (size_t)cap * sizeof *o);
    if (!o) return NULL;
    m->owned = o;
    m->cap_owned = cap;
  }
  void *p = NULL;
  if (posix_memalign(&p, align, MFS_MAX(bytes, 1))) return NULL;
  m->owned[m->n_owned++] = p;
  return p;
}

static float *own_alloc(eng_model *m, size_t n) { return own_alloc_aligned(m, n * sizeof(float), 64); }

/* n bytes, 64-aligned; large buffers aligned to 2 MiB and advised for
 * transparent huge pages like the weight files (engine/safetensors.c) */
static void *own_bytes(eng_model *m, size_t n) {
  if (n >= (4u << 20)) {
    size_t len = MFS_ALIGN_UP(n, (size_t)2 << 20);
    void *p = own_alloc_aligned(m, len, (size_t)2 << 20);
    if (p) madvise(p, len, MADV_HUGEPAGE);
    return p;
  }
  return own_alloc_aligned(m, n, 64);
}

static void fmt_shape(char *buf, size_t len, const int64_t *shape, int nd) {
  int k = snprintf(buf, len, "[");
  for (int i = 0; i < nd && (size_t)k < len; i++)
    k += snprintf(buf + k, len - (size_t)k, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if ((size_t)k < len) snprintf(buf + k, len - (size_t)k, "]");
}

/* A matrix [r][c] stored quantized (docs/quantized-weights.md): name holds
 * the values (q8_0: I8 [r, c]; q4_0: U8 [r, c/2], two per byte as in a
 * block) and name + "_scale" the F16 scales [r, c/32]; interleaved here
 * into the engine's blocks (engine_int.h). */
static int get_quant(eng_model *m, const st_tensor *t, const char *file, const char *name, int64_t r, int64_t c,
                     eng_mat *mat, char *err, size_t errlen) {
  st_dtype q = m->stored_quant;
  const char *want_dt = st_dtype_name(q == ST_Q8_0 ? ST_I8 : ST_U8);
  if (!mat)
    return mfail(err, errlen, MFS_EFORMAT, "%s: tensor '%s' is stored quantized (%s) but must be F32, F16 or BF16",
                 file, name, st_dtype_name(t->dtype));
  if (q == ST_F32)
    return mfail(err, errlen, MFS_EFORMAT,
                 "%s: tensor '%s' has dtype %s, but config.json has no quantization_config (expected F32, F16 or "
                 "BF16)",
                 file, name, st_dtype_name(t->dtype));
  int64_t vc = q == ST_Q8_0 ? c : c / 2;
  char hs[64], ws[64], sn[300];
  int64_t want[2] = {r, vc}, swant[2] = {r, c / ST_QK};
  if (c % ST_QK)
    return mfail(err, errlen, MFS_EFORMAT,
                 "%s: tensor '%s' is stored quantized, but its rows of %lld are not whole blocks of %d", file, name,
                 (long long)c, ST_QK);
  if ((t->dtype == ST_I8) != (q == ST_Q8_0) || t->ndim != 2 || t->shape[0] != r || t->shape[1] != vc) {
    fmt_shape(hs, sizeof hs, t->shape, t->ndim);
    fmt_shape(ws, sizeof ws, want, 2);
    return mfail(err, errlen, MFS_EFORMAT, "%s: tensor '%s' is %s %s, expected %s %s (%s values of [%lld, %lld])",
                 file, name, st_dtype_name(t->dtype), hs, want_dt, ws, q == ST_Q8_0 ? "q8_0" : "q4_0",
                 (long long)r, (long long)c);
  }
  snprintf(sn, sizeof sn, "%s_scale", name);
  const char *sfile;
  const st_tensor *s = st_set_find(&m->st, sn, &sfile);
  fmt_shape(ws, sizeof ws, swant, 2);
  if (!s)
    return mfail(err, errlen, MFS_EFORMAT, "%s: tensor '%s' (the scales of quantized '%s') is missing (expected F16 %s)",
                 file, sn, name, ws);
  if (s->dtype != ST_F16 || s->ndim != 2 || s->shape[0] != r || s->shape[1] != c / ST_QK) {
    fmt_shape(hs, sizeof hs, s->shape, s->ndim);
    return mfail(err, errlen, MFS_EFORMAT,
                 "%s: tensor '%s' has shape %s%s, expected F16 %s (one scale per block of %d)", sfile, sn, hs,
                 s->dtype == ST_F16 ? "" : " and is not F16", ws, ST_QK);
  }
  size_t nb = (size_t)r * (size_t)(c / ST_QK), bs = st_bytes(q, ST_QK), vb = (size_t)(q == ST_Q8_0 ? ST_QK : ST_QK / 2);
  uint8_t *dst = own_bytes(m, nb * bs);
  if (!dst) return mfail(err, errlen, MFS_ENOMEM, "out of memory loading tensor '%s'", name);
  const uint8_t *v = t->data, *sc = s->data;
  for (size_t b = 0; b < nb; b++) {
    memcpy(dst + b * bs, sc + 2 * b, 2);
    memcpy(dst + b * bs + 2, v + b * vb, vb);
  }
  m->info.n_params += r * c;
  *mat = (eng_mat){dst, q};
  return 0;
}

/* Finds name with shape [r] (c == 0) or [r, c]. With mat != NULL, a
 * 2-byte-aligned F16/BF16 tensor is returned in place through *mat;
 * otherwise the data comes back as F32 through *out (in place or a copy). */
static int get_any(eng_model *m, const char *name, int64_t r, int64_t c, const float **out, eng_mat *mat,
                   char *err, size_t errlen) {
  const char *file;
  const st_tensor *t = st_set_find(&m->st, name, &file);
  int64_t want[2] = {r, c};
  int nd = c ? 2 : 1;
  char ws[64], hs[64];
  fmt_shape(ws, sizeof ws, want, nd);
  if (!t) return mfail(err, errlen, MFS_EFORMAT, "%s: tensor '%s' is missing (expected shape %s)", file, name, ws);
  if (t->dtype == ST_I8 || t->dtype == ST_U8) return get_quant(m, t, file, name, r, c, mat, err, errlen);
  if (t->ndim != nd || t->shape[0] != r || (c && t->shape[1] != c)) {
    fmt_shape(hs, sizeof hs, t->shape, t->ndim);
    return mfail(err, errlen, MFS_EFORMAT, "%s: tensor '%s' has shape %s, expected %s (from config.json)", file,
                 name, hs, ws);
  }
  size_t n = (size_t)r * (size_t)(c ? c : 1);
  m->info.n_params += (int64_t)n;
  if (mat && t->dtype != ST_F32 && ((uintptr_t)t->data & 1) == 0) {
    *mat = (eng_mat){t->data, t->dtype};
    return 0;
  }
  if (t->dtype == ST_F32 && ((uintptr_t)t->data & 3) == 0) {
    if (mat) *mat = (eng_mat){t->data, ST_F32};
    else *out = t->data;
    return 0;
  }
  float *buf = own_alloc(m, n);
  if (!buf) return mfail(err, errlen, MFS_ENOMEM, "out of memory converting tensor '%s'", name);
  if (t->dtype == ST_F32) memcpy(buf, t->data, n * sizeof(float));
  else if (t->dtype == ST_F16) {
    /* the mapping may be unaligned for uint16 access: copy through memcpy */
    for (size_t i = 0; i < n; i++) {
      uint16_t h;
      memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
      buf[i] = k_f16_to_f32_1(h);
    }
  } else {
    for (size_t i = 0; i < n; i++) {
      uint16_t h;
      memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
      buf[i] = k_bf16_to_f32_1(h);
    }
  }
  if (mat) *mat = (eng_mat){buf, ST_F32};
  else *out = buf;
  return 0;
}

static int get_w(eng_model *m, const char *name, int64_t r, int64_t c, const float **out, char *err,
                 size_t errlen) {
  return get_any(m, name, r, c, out, NULL, err, errlen);
}

static int get_mat(eng_model *m, const char *name, int64_t r, int64_t c, eng_mat *out, char *err, size_t errlen) {
  return get_any(m, name, r, c, NULL, out, err, errlen);
}

static st_dtype quant_to = ST_F32; /* ST_F32: none */

int eng_weights_quantize(const char *type) {
  if (!strcasecmp(type, "none") || !*type) quant_to = ST_F32;
  else if (!strcasecmp(type, "q8_0")) quant_to = ST_Q8_0;
  else if (!strcasecmp(type, "q4_0")) quant_to = ST_Q4_0;
  else return MFS_EINVAL;
  return 0;
}

/* *w [rows][cols] -> quant_to blocks in an owned buffer, row by row through
 * F32 (exact: every F16/BF16 value is a float). Rows that are not whole
 * blocks stay as they are (counted). */
static int quantize_mat(eng_model *m, eng_mat *w, int64_t rows, int64_t cols, const char *name, char *err,
                        size_t errlen) {
  st_dtype qt = m->stored_quant != ST_F32 ? m->stored_quant : quant_to;
  if (qt == ST_F32 || st_is_quant(w->dt)) return 0;
  if (cols % ST_QK) {
    m->info.n_kept_unquantized++;
    return 0;
  }
  size_t rb = st_bytes(qt, (size_t)cols);
  uint8_t *dst = own_bytes(m, rb * (size_t)rows);
  float *row = malloc((size_t)cols * sizeof *row);
  if (!dst || !row) {
    free(row);
    return mfail(err, errlen, MFS_ENOMEM, "out of memory quantizing tensor '%s'", name);
  }
  for (int64_t r = 0; r < rows; r++) {
    K()->widen(row, st_at(w->p, w->dt, (size_t)r, (size_t)cols, 0), (size_t)cols, w->dt);
    k_quantize_row(dst + (size_t)r * rb, row, (size_t)cols, qt);
  }
  free(row);
  *w = (eng_mat){dst, qt};
  return 0;
}

/* MFA-KR: wo[:, h*hd:(h+1)*hd] <- wo[:, h*hd:(h+1)*hd] @ M for every head,
 * M = I + diag(gate) * N, computed in double. */
static int fold_value_path(eng_model *m, eng_layer *ly, const float *wo_in, const float *n_mat,
                           const float *gate, char *err, size_t errlen) {
  const eng_model_info *in = &m->info;
  int d = in->d, hd = in->head_dim, H = in->n_heads;
  double *M = malloc((size_t)hd * hd * sizeof *M);
  double *row = malloc((size_t)hd * sizeof *row);
  float *wo = own_alloc(m, (size_t)d * H * hd);
  if (!M || !row || !wo) {
    free(M);
    free(row);
    return mfail(err, errlen, MFS_ENOMEM, "out of memory folding the MFA-KR value path");
  }
  for (int i = 0; i < hd; i++)
    for (int j = 0; j < hd; j++) M[i * hd + j] = (i == j) + (double)gate[i] * n_mat[(size_t)i * hd + j];
  for (int r = 0; r < d; r++)
    for (int h = 0; h < H; h++) {
      const float *src = wo_in + (size_t)r * H * hd + (size_t)h * hd;
      for (int j = 0; j < hd; j++) row[j] = 0;
      for (int i = 0; i < hd; i++) {
        double s = src[i];
        const double *Mi = M + (size_t)i * hd;
        for (int j = 0; j < hd; j++) row[j] += s * Mi[j];
      }
      float *dst = wo + (size_t)r * H * hd + (size_t)h * hd;
      for (int j = 0; j < hd; j++) dst[j] = (float)row[j];
    }
  free(M);
  free(row);
  ly->wo = (eng_mat){wo, ST_F32};
  return 0;
}

/* MLA: ly->w_uk_t [H*r][dn] from kv_b_proj (ly->wv [H*(dn+dv)][r], any
 * dtype, quantized included): row h*r + j, column i is W_UK[h][i][j] =
 * kv_b_proj[h*(dn+dv) + i][j], exactly the values the engine reads from
 * kv_b_proj. F16 / BF16 stay 16-bit (a transpose rounds nothing); F32 and
 * quantized kv_b_proj give an F32 copy (re-quantizing the transpose would
 * round the values again, and `mfaserve quantize` plus a load must equal
 * --quantize). */
static int mla_transpose_uk(eng_model *m, eng_layer *ly, char *err, size_t errlen) {
  const eng_model_info *in = &m->info;
  int H = in->n_heads, r = in->kv_rank, dn = in->nope_dim, dv = in->v_dim;
  st_dtype dt = ly->wv.dt == ST_F16 || ly->wv.dt == ST_BF16 ? ly->wv.dt : ST_F32;
  size_t n = (size_t)H * r * dn;
  void *dst = own_bytes(m, st_bytes(dt, n));
  float *row = malloc((size_t)r * sizeof *row);
  if (!dst || !row) {
    free(row);
    return mfail(err, errlen, MFS_ENOMEM, "out of memory transposing kv_b_proj");
  }
  for (int h = 0; h < H; h++)
    for (int i = 0; i < dn; i++) {
      K()->widen(row, st_at(ly->wv.p, ly->wv.dt, (size_t)h * (dn + dv) + i, (size_t)r, 0), (size_t)r, ly->wv.dt);
      for (int j = 0; j < r; j++) {
        size_t o = ((size_t)h * r + j) * dn + i;
        if (dt == ST_F32) {
          ((float *)dst)[o] = row[j];
        } else if (dt == ST_F16) {
          ((uint16_t *)dst)[o] = k_f32_to_f16_1(row[j]); /* exact: the value came from F16 */
        } else {
          uint32_t u;
          memcpy(&u, &row[j], 4);
          ((uint16_t *)dst)[o] = (uint16_t)(u >> 16); /* exact: the value came from BF16 */
        }
      }
    }
  free(row);
  ly->w_uk_t = (eng_mat){dst, dt};
  return 0;
}

void eng_model_free(eng_model *m) {
  if (!m) return;
  for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
  free(m->owned);
  free(m->layers);
  st_set_close(&m->st);
  free(m);
}

int eng_model_load(eng_model **out, const char *dir, void (*progress)(double, void *), void *u, char *err,
                   size_t errlen) {
  eng_config cfg;
  int rc = eng_config_load(&cfg, dir, err, errlen);
  if (rc) return rc;
  if (cfg.quant != ST_F32 && quant_to != ST_F32 && quant_to != cfg.quant)
    return mfail(err, errlen, MFS_EINVAL,
                 "%s is already quantized (%s); --quantize %s would quantize it again: pass --quantize none, or "
                 "quantize the original weights",
                 dir, st_dtype_name(cfg.quant), quant_to == ST_Q8_0 ? "q8_0" : "q4_0");
  eng_model *m = calloc(1, sizeof *m);
  if (!m) return mfail(err, errlen, MFS_ENOMEM, "out of memory");
  m->info = cfg.info;
  m->stored_quant = cfg.quant;
  eng_model_info *in = &m->info;
  if ((rc = st_set_open(&m->st, dir, err, errlen))) {
    free(m);
    return rc;
  }
  m->layers = calloc((size_t)in->n_layers, sizeof *m->layers);
  if (!m->layers) {
    rc = mfail(err, errlen, MFS_ENOMEM, "out of memory");
    goto fail;
  }
  const char *file;
  const st_tensor *et = st_set_find(&m->st, "model.embed_tokens.weight", &file);
  st_dtype run_q = cfg.quant != ST_F32 ? cfg.quant : quant_to;
  snprintf(in->source_dtype, sizeof in->source_dtype, "%s",
           !et ? "?" : cfg.quant != ST_F32 ? st_dtype_name(cfg.quant) : st_dtype_name(et->dtype));
  snprintf(in->weight_dtype, sizeof in->weight_dtype, "%s", run_q != ST_F32 ? st_dtype_name(run_q) : in->source_dtype);
  const int64_t d = in->d, H = in->n_heads, hd = in->head_dim, KV = in->n_kv_heads, I = in->inter,
                V = in->vocab, C = in->q_rank;
  int mfa = in->attn == ENG_ATTN_MFA || in->attn == ENG_ATTN_MFA_KR;
  int kr = in->attn == ENG_ATTN_MFA_KR, mla = in->attn == ENG_ATTN_MLA;
  const int64_t r = in->kv_rank, dr = in->rope_dim, dn = in->nope_dim, dv = in->v_dim;
  if ((rc = get_mat(m, "model.embed_tokens.weight", V, d, &m->embed, err, errlen)) ||
      (rc = quantize_mat(m, &m->embed, V, d, "model.embed_tokens.weight", err, errlen)) ||
      (rc = get_w(m, "model.norm.weight", d, 0, &m->final_norm, err, errlen)))
    goto fail;
  if (in->tie_embeddings) {
    m->lm_head = m->embed;
  } else if ((rc = get_mat(m, "lm_head.weight", V, d, &m->lm_head, err, errlen)) ||
             (rc = quantize_mat(m, &m->lm_head, V, d, "lm_head.weight", err, errlen))) {
    goto fail;
  }
  int64_t mat_bytes = 0;
#define MB(mat, r, c) \
  (mat_bytes += (int64_t)(r) * (int64_t)st_bytes((mat).dt, (size_t)(c)), in->matmul_params += (int64_t)(r) * (c))
  for (int l = 0; l < in->n_layers; l++) {
    eng_layer *ly = &m->layers[l];
    char n[160];
#define W(suffix, r, c, dst)                                                 \
  snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);                    \
  if ((rc = get_w(m, n, r, c, dst, err, errlen))) goto fail;
#define M(suffix, r, c, dst)                                                 \
  snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);                    \
  if ((rc = get_mat(m, n, r, c, dst, err, errlen)) ||                         \
      (rc = quantize_mat(m, dst, r, c, n, err, errlen)))                      \
    goto fail;                                                               \
  MB(*(dst), r, c);
    W("input_layernorm.weight", d, 0, &ly->attn_norm);
    W("post_attention_layernorm.weight", d, 0, &ly->ffn_norm);
    M("mlp.gate_proj.weight", I, d, &ly->w_gate);
    M("mlp.up_proj.weight", I, d, &ly->w_up);
    M("mlp.down_proj.weight", d, I, &ly->w_down);
    if (mla) {
      if (C) {
        M("self_attn.q_a_proj.weight", C, d, &ly->wq);
        W("self_attn.q_a_layernorm.weight", C, 0, &ly->q_norm);
        M("self_attn.q_b_proj.weight", H * hd, C, &ly->wq_up);
      } else {
        M("self_attn.q_proj.weight", H * hd, d, &ly->wq);
      }
      M("self_attn.kv_a_proj_with_mqa.weight", r + dr, d, &ly->wk);
      W("self_attn.kv_a_layernorm.weight", r, 0, &ly->kv_norm);
      /* kv_b_proj: the step reads its W_UV rows in place and W_UK through the transpose */
      snprintf(n, sizeof n, "model.layers.%d.self_attn.kv_b_proj.weight", l);
      if ((rc = get_mat(m, n, H * (dn + dv), r, &ly->wv, err, errlen)) ||
          (rc = quantize_mat(m, &ly->wv, H * (dn + dv), r, n, err, errlen)) ||
          (rc = mla_transpose_uk(m, ly, err, errlen)))
        goto fail;
      MB(ly->wv, H * dv, r);
      MB(ly->w_uk_t, H * r, dn);
      M("self_attn.o_proj.weight", d, H * dv, &ly->wo);
    } else if (mfa) {
      M("self_attn.k_proj.weight", KV * hd, d, &ly->wk);
      M("self_attn.q_proj.weight", C, d, &ly->wq);
      W("self_attn.inter_norm.weight", C, 0, &ly->q_norm);
      M("self_attn.wq.weight", H * hd, C, &ly->wq_up);
      if (kr) {
        /* the fold needs o_proj in F32; it is kept in F32 so the fold stays exact */
        const float *nm, *gate, *wo;
        W("self_attn.o_proj.weight", d, H * hd, &wo);
        W("self_attn.v_proj.weight", hd, hd, &nm);
        W("self_attn.v_gate", hd, 0, &gate);
        if ((rc = fold_value_path(m, ly, wo, nm, gate, err, errlen)) ||
            (rc = quantize_mat(m, &ly->wo, d, H * hd, n, err, errlen)))
          goto fail;
        MB(ly->wo, d, H * hd);
      } else {
        M("self_attn.v_proj.weight", hd, d, &ly->wv);
        M("self_attn.o_proj.weight", d, H * hd, &ly->wo);
      }
    } else {
      M("self_attn.k_proj.weight", KV * hd, d, &ly->wk);
      M("self_attn.q_proj.weight", H * hd, d, &ly->wq);
      M("self_attn.v_proj.weight", KV * hd, d, &ly->wv);
      M("self_attn.o_proj.weight", d, H * hd, &ly->wo);
    }
#undef W
#undef M
    if (progress) progress((double)(l + 1) / in->n_layers, u);
  }
  MB(m->lm_head, V, d);
#undef MB
  in->weight_bytes_per_token = mat_bytes;
  *out = m;
  return 0;
fail:
  eng_model_free(m);
  return rc;
}

const eng_model_info *eng_model_get_info(const eng_model *m) { return &m->info; }

void eng_model_kv_geom(const eng_model *m, int block_size, kvc_dtype dtype, kvc_geom *out) {
  out->n_layers = m->info.n_layers;
  out->block_size = block_size;
  out->k_elems = m->info.kv_k_elems;
  out->v_elems = m->info.kv_v_elems;
  out->dtype = dtype;
  /* int8: one scale per ENG_KV_I8_GROUP elements of a head, else per 32,
   * else per head (engine.h) */
  int hd = m->info.head_dim;
  out->qgroup = hd % ENG_KV_I8_GROUP == 0 ? ENG_KV_I8_GROUP : hd % 32 == 0 ? 32 : hd;
  if (m->info.attn == ENG_ATTN_MLA) { /* a group divides both cached vectors (engine.h) */
    int a = m->info.kv_rank, b = m->info.rope_dim;
    if (a % ENG_KV_I8_GROUP == 0 && b % ENG_KV_I8_GROUP == 0) out->qgroup = ENG_KV_I8_GROUP;
    else if (a % 32 == 0 && b % 32 == 0) out->qgroup = 32;
    else {
      while (b) { /* gcd */
        int t = a % b;
        a = b, b = t;
      }
      out->qgroup = a;
    }
  }
}

const char *eng_attn_name(eng_attn_kind k) {
  static const char *names[] = {"mha", "gqa", "mqa", "mfa", "mfa-kr", "mla"};
  return (unsigned)k < 6 ? names[k] : "?";
}
