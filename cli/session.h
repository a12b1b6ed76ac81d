/* session.h: one model, one engine context and one KV pool for the CLI's
 * single-sequence commands (generate, logits, bench). The server uses the
 * scheduler instead. */
#ifndef MFS_CLI_SESSION_H
#define MFS_CLI_SESSION_H

#include "engine.h"
#include "kvcache.h"

typedef struct cli_session {
  eng_model *m;
  eng_ctx *c;
  kvc_pool *kv;
  kvc_seq *seq;
  const eng_model_info *info;
  int max_ctx, chunk;
} cli_session;

typedef struct cli_session_opts {
  const char *model;
  int threads, block_size, max_ctx, chunk; /* chunk: most tokens per step */
  kvc_dtype kv_dtype;
  int quiet;
  const char *isa; /* kernel level (NULL: MFASERVE_ISA or the best) */
  int mmap;        /* map the weight files (--mmap) */
  const char *quantize; /* --quantize: NULL/"none", q8_0, q4_0 */
} cli_session_opts;

/* Loads the model and reserves a pool for one sequence of max_ctx tokens.
 * Returns 0, 2 (bad model: message printed) or 1 (other failure). */
int cli_session_open(cli_session *s, const cli_session_opts *o);
void cli_session_close(cli_session *s);
/* Starts a new empty sequence (drops the old one). */
int cli_session_reset(cli_session *s);
/* Feeds n tokens in steps of at most `chunk`; writes logits of every fed
 * token (mode ALL, logits [n][V]) or of the last one (LAST, [V]). 0 or an
 * MFS_* error / KVC_FULL. */
int cli_session_feed(cli_session *s, const int32_t *toks, int n, eng_logits_mode mode, float *logits);

int cli_parse_kv_dtype(const char *s, kvc_dtype *out);
/* vLLM's --speculative-config JSON ({"method": "ngram", "num_speculative_tokens": K,
 * "prompt_lookup_max": N, "prompt_lookup_min": M}; absent keys keep *tokens,
 * *max, *min; one of the lookup sizes alone sets both, as in vLLM): sets
 * *method to "ngram". 0, or 2 with a message naming the key printed. */
int cli_parse_spec_config(const char *json, const char **method, int *tokens, int *max, int *min);

#endif
