/* engine_int.h: the engine's internal layout: safetensors files, the weight
 * set, the worker pool and the kernels. Only engine/ includes this. */
#ifndef MFS_ENGINE_INT_H
#define MFS_ENGINE_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "engine.h"

/* ---- safetensors (safetensors.c) ---- */

/* Element types of weights. F32/F16/BF16 come from safetensors files; the
 * block formats are the engine's quantized weights in memory
 * (docs/quantized-weights.md describes them; a quantized directory stores the same values as
 * int8 / packed 4-bit tensors with separate F16 scale tensors):
 *   ST_Q8_0: blocks of ST_QK weights, each {F16 d; int8 q[32]} (34 bytes),
 *            w = q * d (llama.cpp's block_q8_0);
 *   ST_Q4_0: blocks {F16 d; uint8 q[16]} (18 bytes), weight i of the block
 *            is ((q[i] & 15) - 8) * d for i < 16, ((q[i - 16] >> 4) - 8) * d
 *            after (llama.cpp's block_q4_0).
 * A quantized matrix's rows are whole blocks (k % ST_QK == 0). */
/* ST_I8 / ST_U8: file dtypes of a quantized directory's values (the loader
 * turns them and their scales into ST_Q8_0 / ST_Q4_0; no kernel sees them). */
typedef enum { ST_F32 = 0, ST_F16, ST_BF16, ST_Q8_0, ST_Q4_0, ST_I8, ST_U8 } st_dtype;
#define ST_QK 32

static inline int st_is_quant(st_dtype dt) { return dt == ST_Q8_0 || dt == ST_Q4_0; }
/* Bytes of k consecutive elements of a row (quantized: k % ST_QK == 0). */
static inline size_t st_bytes(st_dtype dt, size_t k) {
  switch (dt) {
  case ST_F32: return 4 * k;
  case ST_F16:
  case ST_BF16: return 2 * k;
  case ST_Q8_0: return k / ST_QK * 34;
  case ST_Q4_0: return k / ST_QK * 18;
  case ST_I8:
  case ST_U8: return k;
  }
  return 0;
}
/* "F32", "F16", "BF16", "Q8_0", "Q4_0", "I8", "U8" (safetensors.c) */
const char *st_dtype_name(st_dtype dt);
/* &W[row][col] of a matrix whose rows hold ld elements. */
static inline const void *st_at(const void *w, st_dtype dt, size_t row, size_t ld, size_t col) {
  return (const char *)w + st_bytes(dt, row * ld + col);
}

typedef struct st_tensor {
  char *name;          /* owned */
  st_dtype dtype;
  int ndim;
  int64_t shape[4];
  const void *data;    /* into the file's read-only mapping */
  size_t nbytes;
} st_tensor;

typedef struct st_file {
  char *path;          /* owned */
  void *map;           /* the whole file, PROT_READ: mapped from the file, or
                          read into anonymous memory (see eng_weights_use_mmap) */
  size_t size;
  size_t map_len;      /* bytes to munmap at map (anonymous: size rounded up) */
  st_tensor *tensors;  /* [n], owned */
  int n;
} st_file;

/* Maps (or reads, see eng_weights_use_mmap) path and validates its header:
 * header length inside the file, JSON header, each tensor's dtype (F32/F16/BF16, or I8/U8), shape, and data_offsets inside
 * the data area, non-overlapping and equal to shape x dtype size. On failure
 * returns MFS_EIO/MFS_EFORMAT/MFS_EUNSUPPORTED with a message naming the
 * file and tensor in err, and leaves nothing mapped. */
int st_file_open(st_file *f, const char *path, char *err, size_t errlen);
void st_file_close(st_file *f);
const st_tensor *st_file_find(const st_file *f, const char *name);

/* A model's tensors: one file or the HF sharded form. */
typedef struct st_set {
  st_file *files;
  int n_files;
  char **map_names; /* sharded: tensor name -> file index */
  int *map_file;
  int n_map;
} st_set;

int st_set_open(st_set *s, const char *dir, char *err, size_t errlen);
void st_set_close(st_set *s);
/* Finds a tensor; NULL if absent. *file receives the file's path for
 * messages. */
const st_tensor *st_set_find(const st_set *s, const char *name, const char **file);

/* ---- config (config.c) ---- */

typedef struct eng_config {
  eng_model_info info;
  int key_reuse;
  st_dtype quant; /* quantization_config.weight_type of a quantized directory; ST_F32 if none */
} eng_config;

/* MLA's qk_rope_head_dim at most (forward.c regroups it through a stack buffer). */
#define MLA_ROPE_MAX 1024

/* The quantized-directory format this reader knows (docs/quantized-weights.md). */
#define ENG_QUANT_METHOD "mfaserve"
#define ENG_QUANT_FORMAT_VERSION 1

/* Parses dir/config.json. MFS_EIO/MFS_EFORMAT/MFS_EUNSUPPORTED with a
 * message naming config.json and the key. */
int eng_config_load(eng_config *c, const char *dir, char *err, size_t errlen);

/* ---- weights (model.c) ---- */

/* A weight matrix [rows][cols] as the projections read it: F32, or F16 /
 * BF16 used in place from the mapping (decode is bandwidth bound, so
 * 16-bit weights are read as 16-bit and widened in registers). */
typedef struct eng_mat {
  const void *p;
  st_dtype dt;
} eng_mat;

/* MLA's sizes below: r = kv_rank, dn = nope_dim, dr = rope_dim, dv = v_dim,
 * qr = q_rank, hd = dn + dr (engine.h). */
typedef struct eng_layer {
  const float *attn_norm;   /* [d] */
  const float *ffn_norm;    /* [d] */
  eng_mat wq;                /* MFA: q_proj [C, d]; Llama: q_proj [H*hd, d]; MLA: q_a_proj [qr, d], or
                                q_proj [H*hd, d] when qr is 0 */
  const float *q_norm;      /* MFA: inter_norm [C]; MLA: q_a_layernorm [qr] */
  eng_mat wq_up;             /* MFA: wq [H*hd, C]; MLA: q_b_proj [H*hd, qr] */
  eng_mat wk;                /* [KV*hd, d]; MLA: kv_a_proj_with_mqa [r + dr, d] */
  eng_mat wv;                /* MFA, Llama: [KV*hd, d]; MFA-KR: NULL (folded); MLA: kv_b_proj [H*(dn+dv), r],
                                of which the forward pass reads W_UV[h], rows h*(dn+dv)+dn .. +dv */
  const float *kv_norm;     /* MLA: kv_a_layernorm [r] */
  eng_mat w_uk_t;            /* MLA: [H*r, dn], head h's rows W_UK[h]^T (W_UK[h]: kv_b_proj's rows
                                h*(dn+dv) .. +dn), the same values as wv transposed at load */
  eng_mat wo;                /* [d, H*hd]; MFA-KR: o_proj @ M per head; MLA: [d, H*dv] */
  eng_mat w_gate, w_up;     /* [I, d] */
  eng_mat w_down;           /* [d, I] */
} eng_layer;

struct eng_model {
  eng_model_info info;
  st_set st;
  eng_layer *layers;       /* [L] */
  eng_mat embed;           /* [V, d] */
  const float *final_norm; /* [d] */
  eng_mat lm_head;         /* [V, d] (== embed when tied) */
  st_dtype stored_quant;   /* quantized directory: its weight_type; else ST_F32 */
  void **owned;            /* converted/folded buffers, freed with the model */
  int n_owned, cap_owned;
};

/* ---- worker pool (threadpool.c) ---- */

typedef void (*tp_fn)(void *arg, int ith, int nth);
typedef struct tp_pool tp_pool;

/* n threads including the caller. */
int tp_pool_new(tp_pool **out, int n);
void tp_pool_free(tp_pool *p);
int tp_pool_size(const tp_pool *p);
/* Runs a job whose work fn claims from a shared counter: the caller runs
 * fn(arg, 0, n) and every worker that wakes in time runs fn(arg, i, n) too;
 * it returns once the caller's fn returned (so all work is claimed) and no
 * worker is still inside fn. A worker that starts late (another process had
 * its core) finds the job closed and skips it, so nobody waits for it.
 * fn must therefore claim its work dynamically, never by index alone; i
 * only selects per-thread scratch. Not reentrant. */
void tp_pool_run(tp_pool *p, tp_fn fn, void *arg);
/* Every worker runs fn(arg, i, n) exactly once; returns when all did (for
 * work split by index, e.g. the bandwidth probe). */
void tp_pool_run_all(tp_pool *p, tp_fn fn, void *arg);

#endif
