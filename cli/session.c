/* session.c: see session.h. */
#include "session.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "common.h"

static void load_progress(double f, void *u) {
  (void)u;
  fprintf(stderr, "\rloading weights: %3.0f%%", f * 100);
  if (f >= 1) fprintf(stderr, "\n");
}

int cli_parse_kv_dtype(const char *s, kvc_dtype *out) {
  if (!strcasecmp(s, "f32") || !strcasecmp(s, "float32")) *out = KVC_F32;
  else if (!strcasecmp(s, "f16") || !strcasecmp(s, "float16")) *out = KVC_F16;
  /* q8_0: llama.cpp's name for the same layout (32 int8 values and an F16 scale) */
  else if (!strcasecmp(s, "int8") || !strcasecmp(s, "i8") || !strcasecmp(s, "q8_0")) *out = KVC_I8;
  else return -1;
  return 0;
}

int cli_parse_spec_config(const char *json, const char **method, int *tokens, int *max, int *min) {
  cJSON *j = cJSON_Parse(json);
  int rc = 2;
  const char *bad = NULL;
  if (!cJSON_IsObject(j)) {
    fprintf(stderr, "mfaserve: --speculative-config: not a JSON object: %s\n", json);
    goto out;
  }
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "method");
  if (!cJSON_IsString(m) || (strcmp(m->valuestring, "ngram") && strcmp(m->valuestring, "[ngram]"))) {
    fprintf(stderr, "mfaserve: --speculative-config: \"method\" must be \"ngram\" (prompt lookup; draft models, "
                    "EAGLE and MTP are not supported)\n");
    goto out;
  }
  static const char *const keys[] = {"num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min"};
  int *dst[] = {tokens, max, min}, got[3] = {0, 0, 0};
  for (const cJSON *it = j->child; it; it = it->next) {
    int k = -1;
    for (int i = 0; i < 3; i++)
      if (!strcmp(it->string, keys[i])) k = i;
    if (k < 0) {
      if (strcmp(it->string, "method")) bad = it->string;
      continue;
    }
    if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble || it->valuedouble < 1) {
      fprintf(stderr, "mfaserve: --speculative-config: \"%s\" must be a positive integer\n", keys[k]);
      goto out;
    }
    *dst[k] = (int)it->valuedouble;
    got[k] = 1;
  }
  if (bad) {
    fprintf(stderr, "mfaserve: --speculative-config: unknown key \"%s\" (known: method, num_speculative_tokens, "
                    "prompt_lookup_max, prompt_lookup_min)\n", bad);
    goto out;
  }
  if (got[1] && !got[2]) *min = *max; /* vLLM: one size alone is both */
  if (got[2] && !got[1]) *max = *min;
  *method = "ngram";
  rc = 0;
out:
  cJSON_Delete(j);
  return rc;
}

int cli_quant_apply(const char *type) {
  if (eng_weights_quantize(type ? type : "none")) {
    fprintf(stderr, "mfaserve: --quantize '%s': expected none, q8_0 or q4_0\n", type);
    return 2;
  }
  return 0;
}

int cli_session_open(cli_session *s, const cli_session_opts *o) {
  memset(s, 0, sizeof *s);
  char err[1024];
  if (!o->model || !*o->model) {
    fprintf(stderr, "mfaserve: no model given: pass --model DIR or set MFASERVE_MODEL\n");
    return 2;
  }
  if (cli_isa_apply(o->isa)) return 2;
  eng_weights_use_mmap(o->mmap);
  if (cli_quant_apply(o->quantize)) return 2;
  int rc = eng_model_load(&s->m, o->model, o->quiet ? NULL : load_progress, NULL, err, sizeof err);
  if (rc) {
    fprintf(stderr, "mfaserve: cannot load model: %s\n", err);
    return rc == MFS_ENOMEM ? 1 : 2;
  }
  s->info = eng_model_get_info(s->m);
  s->max_ctx = o->max_ctx > 0 ? MFS_MIN(o->max_ctx, s->info->max_pos) : s->info->max_pos;
  s->chunk = o->chunk > 0 ? MFS_MIN(o->chunk, s->max_ctx) : MFS_MIN(512, s->max_ctx);
  eng_ctx_opts eo = {o->threads, s->chunk, 1, s->max_ctx};
  if ((rc = eng_ctx_new(&s->c, s->m, &eo))) {
    fprintf(stderr, "mfaserve: cannot create the engine context: %s\n", mfs_strerror(rc));
    cli_session_close(s);
    return 1;
  }
  kvc_geom g;
  int bs = o->block_size > 0 ? o->block_size : 16;
  eng_model_kv_geom(s->m, bs, o->kv_dtype, &g);
  uint64_t blocks = (uint64_t)(s->max_ctx + bs - 1) / bs + 1;
  if ((rc = kvc_pool_new(&s->kv, &g, blocks * kvc_block_bytes(&g)))) {
    fprintf(stderr, "mfaserve: cannot create the KV pool: %s\n", mfs_strerror(rc));
    cli_session_close(s);
    return 1;
  }
  if (cli_session_reset(s)) {
    cli_session_close(s);
    return 1;
  }
  return 0;
}

void cli_session_close(cli_session *s) {
  if (s->kv) kvc_seq_free(s->kv, s->seq);
  kvc_pool_free(s->kv);
  eng_ctx_free(s->c);
  eng_model_free(s->m);
  memset(s, 0, sizeof *s);
}

int cli_session_reset(cli_session *s) {
  kvc_seq_free(s->kv, s->seq);
  s->seq = NULL;
  return kvc_seq_new(s->kv, &s->seq);
}

int cli_session_feed(cli_session *s, const int32_t *toks, int n, eng_logits_mode mode, float *logits) {
  int V = s->info->vocab;
  for (int i = 0; i < n;) {
    int k = MFS_MIN(s->chunk, n - i);
    int past = kvc_seq_len(s->seq);
    if (past + k > s->max_ctx) return MFS_ERANGE;
    int rc = kvc_seq_reserve(s->kv, s->seq, past + k);
    if (rc) return rc;
    int nb;
    eng_seq_step st = {past, k, kvc_seq_blocks(s->seq, &nb), ENG_LOGITS_NONE};
    float *out = NULL;
    if (mode == ENG_LOGITS_ALL) {
      st.logits = ENG_LOGITS_ALL;
      out = logits + (size_t)i * V;
    } else if (mode == ENG_LOGITS_LAST && i + k == n) {
      st.logits = ENG_LOGITS_LAST;
      out = logits;
    }
    eng_batch b = {1, &st, toks + i, s->kv, out, NULL};
    if ((rc = eng_forward(s->c, &b))) return rc;
    if ((rc = kvc_seq_commit(s->kv, s->seq, toks + i, k))) return rc;
    i += k;
  }
  return 0;
}
