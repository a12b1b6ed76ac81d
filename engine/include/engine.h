/* engine.h: model loading and the forward pass.
 *
 * eng_model_load reads an HF-style model directory (config.json, safetensors
 * single or sharded, F32/F16/BF16) as model-format.md specifies; F32 tensors
 * are used in place from a read-only mmap, others are converted to F32 once.
 * MFA-KR's value path is folded into o_proj at load, so its KV cache holds
 * only the pre-RoPE key. MLA (DeepSeek-V2's latent attention, docs/mla-format.md)
 * caches the normalized latent and the rotated decoupled key, and attends in
 * the absorbed form: the queries are mapped into the latent space, so
 * attention reads only the cached rows.
 *
 * eng_forward runs one step over a batch: the new tokens of several
 * sequences concatenated (decodes of 1 token, prefill chunks of many), with
 * each sequence's past read from, and its new keys/values written into, the
 * paged pool through its block table. The context (eng_ctx) owns a
 * persistent worker pool and every scratch buffer, sized at creation, so a
 * step allocates nothing.
 *
 * Threads: a model is read-only after load and may be shared. A context is
 * used by one thread at a time (the scheduler's).
 */
#ifndef MFS_ENGINE_H
#define MFS_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "kvcache.h"

typedef enum { ENG_ATTN_MHA = 0, ENG_ATTN_GQA, ENG_ATTN_MQA, ENG_ATTN_MFA, ENG_ATTN_MFA_KR, ENG_ATTN_MLA } eng_attn_kind;

/* MLA (DeepseekV2ForCausalLM) fills the shape fields this way:
 *   head_dim    qk_nope_head_dim + qk_rope_head_dim: a head's query and key
 *               length in the explicit form (the softmax scale is
 *               1/sqrt(head_dim)); values have v_dim elements
 *   n_kv_heads  1: one cached row per token and layer, shared by all heads
 *   q_rank      q_lora_rank; 0 when the queries come from a plain q_proj
 *   kv_k_elems  kv_rank + rope_dim: the row [latent | rotated rope key]
 *   kv_v_elems  0: the value is the latent itself (absorbed form)
 * kv_rank, nope_dim, rope_dim, v_dim are 0 for every other kind. */
typedef struct eng_model_info {
  char arch[64];       /* architectures[0] */
  eng_attn_kind attn;
  int d, n_layers, n_heads, n_kv_heads, head_dim, inter, vocab, q_rank /* C: MFA; q_lora_rank: MLA */;
  int kv_rank, nope_dim, rope_dim, v_dim; /* MLA: kv_lora_rank, qk_nope/qk_rope/v_head_dim */
  int max_pos;
  float rms_eps, rope_theta;
  int tie_embeddings;
  int bos_id;              /* -1 if none */
  int eos_ids[8], n_eos;   /* from config.json */
  char weight_dtype[8];    /* dtype of most weights as the engine reads them: F32/F16/BF16, Q8_0/Q4_0 */
  char source_dtype[8];    /* as the files store them (a quantized directory: Q8_0/Q4_0) */
  int n_kept_unquantized;  /* quantizing: matrices whose rows are not whole blocks of 32, kept as stored */
  int64_t n_params;        /* parameters as stored (lm_head counted once if tied) */
  int64_t weight_bytes_per_token; /* bytes of weights a batch-1 decode step reads, as stored in memory */
  int64_t matmul_params;          /* weights multiplied per token (projections + lm_head) */
  int kv_k_elems, kv_v_elems;     /* per token per layer, see kvcache.h */
} eng_model_info;

const char *eng_attn_name(eng_attn_kind k); /* "mha", "gqa", "mqa", "mfa", "mfa-kr", "mla" */

/* Kernel levels (instruction sets). The engine picks the best level the CPU
 * supports the first time it runs a kernel, unless MFASERVE_ISA names one
 * ("auto", "avx512-bf16", "avx512", "avx2", "neon", "generic"); call
 * eng_isa_select first to choose explicitly. Returns 0, or MFS_EINVAL with
 * a message in err for a name this binary does not know or a level the CPU
 * lacks (naming what it lacks). Call it before loading a model. */
int eng_isa_select(const char *name, char *err, size_t errlen);
const char *eng_isa_name(void); /* the level in use (selects the default if none yet) */
/* Comma-separated lists: every level this binary has, and those this CPU
 * can run, best first; and the CPU features the choice looked at. */
const char *eng_isa_built(void);
const char *eng_isa_supported(void);
const char *eng_cpu_features(void);
/* The built levels whose products with quantized weights use int8 dot
 * products (activations rounded to int8 blocks, kernels.h qgemm_cols). */
const char *eng_isa_int8_gemm(void);

typedef struct eng_model eng_model;

/* How eng_model_load makes the weights resident, for every load after the
 * call (start-up, before any load; not thread-safe). 0 (the default): each
 * safetensors file is read into anonymous memory aligned to 2 MiB and advised
 * for transparent huge pages, then made read-only: a decode step streams
 * every weight, and with 4 KiB pages of a file mapping the page walks cost
 * about a tenth of batch-1 decode speed (measured, BENCHMARKS.md). 1: the
 * files are mapped (mmap, read-only; shared with other processes through the
 * page cache, loaded lazily). */
void eng_weights_use_mmap(int on);

/* Quantize the projection, embedding and output matrices of every later
 * load (start-up, before any load; not thread-safe): "none" (the default),
 * "q8_0" or "q4_0" (engine_int.h's block formats, docs/quantized-weights.md).
 * Matrices whose rows are not whole blocks of 32 stay as stored. A
 * directory written by `mfaserve quantize` is used as stored and needs no
 * call. 0, or MFS_EINVAL for another name. */
int eng_weights_quantize(const char *type);

/* Writes a quantized copy of the model directory in (F32/F16/BF16) to out
 * (created if absent; must differ from in): one model.safetensors with
 * type's ("q8_0" or "q4_0") values and scales, the other files, and
 * config.json with quantization_config (docs/quantized-weights.md). Loads
 * directly; results equal loading in with --quantize type. progress as for
 * eng_model_load. 0, or an error with a message in err. */
int eng_quantize_dir(const char *in, const char *out, const char *type, void (*progress)(double frac, void *u),
                     void *u, char *err, size_t errlen);

/* Loads dir. Returns 0, or a negative error with a message naming the file,
 * key or tensor and what was expected written to err (errlen > 0). Nothing
 * is left allocated or mapped on failure. progress, if not NULL, is called
 * with a fraction 0..1 as tensors are prepared. */
int eng_model_load(eng_model **out, const char *dir, void (*progress)(double frac, void *u),
                   void *u, char *err, size_t errlen);
void eng_model_free(eng_model *m); /* NULL: no-op */
const eng_model_info *eng_model_get_info(const eng_model *m);

/* The KV geometry this model needs, for kvc_pool_new. With KVC_I8, a
 * scale covers ENG_KV_I8_GROUP (64) elements of a head: one per head at
 * head_dim 64. Chosen by measurement (BENCHMARKS.md, "int8 KV cache": on the
 * bundled model 64 and 32 both cost under 0.0001 bits per byte, and 64 takes
 * 528 bytes per token against 544). Where 64 does not divide head_dim, 32
 * does or the whole head is one group. MLA: the group must divide both
 * cached vectors (the latent, kv_rank, and the rope key, rope_dim), so no
 * scale spans both: 64 where it divides both, else 32, else their greatest
 * common divisor. */
#ifndef ENG_KV_I8_GROUP /* a build may set it, e.g. to measure another group (tools/bench/quality.sh) */
#define ENG_KV_I8_GROUP 64
#endif
void eng_model_kv_geom(const eng_model *m, int block_size, kvc_dtype dtype, kvc_geom *out);

typedef struct eng_ctx_opts {
  int n_threads;      /* workers including the caller; <= 0: number of CPUs */
  int max_tokens;     /* most new tokens in one step (all sequences) */
  int max_seqs;       /* most sequences in one step */
  int max_ctx;        /* longest sequence (past + new); <= 0: model's max_pos */
} eng_ctx_opts;

typedef struct eng_ctx eng_ctx;

/* Creates the worker pool and reserves every buffer a step needs. 0,
 * MFS_EINVAL or MFS_ENOMEM. */
int eng_ctx_new(eng_ctx **out, const eng_model *m, const eng_ctx_opts *opts);
void eng_ctx_free(eng_ctx *c); /* NULL: no-op; joins the workers */
int eng_ctx_threads(const eng_ctx *c);

typedef enum { ENG_LOGITS_NONE = 0, ENG_LOGITS_LAST, ENG_LOGITS_ALL } eng_logits_mode;

typedef struct eng_seq_step {
  int n_past;                 /* tokens already in the cache for this sequence */
  int n_new;                  /* tokens of this sequence in this step, >= 1 */
  const int32_t *block_table; /* covers n_past + n_new tokens */
  eng_logits_mode logits;
} eng_seq_step;

typedef struct eng_batch {
  int n_seqs;
  const eng_seq_step *seqs;
  const int32_t *tokens; /* [sum n_new] the new token ids, sequence by sequence */
  kvc_pool *kv;
  float *logits;         /* out: [rows][vocab], rows in sequence order: 1 per
                            LAST, n_new per ALL */
  int32_t *argmax;       /* out, or NULL: [rows] each row's first index of its
                            largest non-NaN logit (0 when there is none), as a
                            scan of logits would give, found while the output
                            projection's columns are still in cache */
} eng_batch;

/* The first index of the largest non-NaN value of x[0..n) (0 when there is
 * none), as the loop `if (x[i] > x[best]) best = i` over the non-NaN values
 * gives; the max runs on the kernel level in use. eng_batch.argmax is this
 * for each logits row. */
int32_t eng_argmax(const float *x, int n);

/* Runs one step. Writes the new tokens' KV into the pool and the requested
 * logits. Returns 0, or MFS_EINVAL (batch beyond the context's limits, token
 * id out of range, position beyond max_ctx) with nothing written. */
int eng_forward(eng_ctx *c, const eng_batch *b);

/* Low-level pieces that benches and tests measure against. */
/* Seconds for one sgemm of m x n x k on all of the context's threads. */
double eng_bench_sgemm(eng_ctx *c, int m, int n, int k, int reps);
/* Read bandwidth in bytes/s over `bytes` using the context's threads. */
double eng_bench_bandwidth(eng_ctx *c, size_t bytes, int reps);
/* FLOP/s of independent FMA chains on all of the context's threads at the
 * running kernel level (no memory traffic): the level's compute peak, which
 * no projection can beat and which does not depend on OpenBLAS's kernels. */
double eng_bench_fma_peak(eng_ctx *c, int reps);
/* The sgemm kernels OpenBLAS chose (its core name, e.g. "Haswell" when
 * OPENBLAS_CORETYPE pins it), for the label of eng_bench_sgemm's figure. */
const char *eng_bench_blas_core(void);

#endif
