/* cmd_generate.c: `mfaserve generate` (one prompt, greedy or sampled) and
 * `mfaserve logits` (every prompt position's logits, for tests). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "session.h"
#include "tokenizer.h"

/* log-softmax of logits[tok], in double */
static double logprob_of(const float *logits, int V, int tok) {
  double mx = -INFINITY, sum = 0;
  for (int i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
  for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
  return (double)logits[tok] - mx - log(sum);
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int pick(const float *logits, int V, double temp, uint64_t *rng) {
  int best = 0;
  for (int i = 1; i < V; i++)
    if (logits[i] > logits[best]) best = i;
  if (temp <= 0) return best;
  double sum = 0;
  for (int i = 0; i < V; i++) sum += exp(((double)logits[i] - logits[best]) / temp);
  double r = (double)(rng_next(rng) >> 11) * 0x1.0p-53 * sum;
  for (int i = 0; i < V; i++) {
    r -= exp(((double)logits[i] - logits[best]) / temp);
    if (r <= 0) return i;
  }
  return best;
}

static const char *kv_dtype_s = "f16";

/* JSON string literal of UTF-8 text (the tokenizer emits valid UTF-8) */
static void json_string(const char *t, size_t n) {
  putchar('"');
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)t[i];
    if (ch == '"' || ch == '\\') printf("\\%c", ch);
    else if (ch == '\n') printf("\\n");
    else if (ch < 0x20) printf("\\u%04x", ch);
    else putchar(ch);
  }
  putchar('"');
}

#define SESSION_FLAGS(o)                                                                                  \
  {"model", "MFASERVE_MODEL", CLI_STR, &(o).model, "model directory (HF layout)"},                       \
      {"threads", "MFASERVE_THREADS", CLI_INT, &(o).threads, "worker threads (0: all cores)"},           \
      {"kv-dtype", "MFASERVE_KV_CACHE_DTYPE", CLI_STR, &kv_dtype_s, "KV-cache storage: f16, f32 or int8"},     \
      {"block-size", "MFASERVE_BLOCK_SIZE", CLI_INT, &(o).block_size, "KV-cache block size in tokens"},  \
      {"max-model-len", "MFASERVE_MAX_MODEL_LEN", CLI_INT, &(o).max_ctx, "context limit (0: model's)"},  \
      CLI_ISA_FLAG((o).isa), CLI_MMAP_FLAG((o).mmap), CLI_QUANT_FLAG((o).quantize)

static int finish_opts(cli_session_opts *o) {
  if (cli_parse_kv_dtype(kv_dtype_s, &o->kv_dtype)) {
    fprintf(stderr, "mfaserve: --kv-dtype '%s': expected f16, f32 or int8\n", kv_dtype_s);
    return 2;
  }
  return 0;
}

int cmd_generate(int argc, char **argv) {
  cli_session_opts o = {0};
  o.block_size = 16;
  o.model = cli_default_model();
  const char *ids_s = NULL, *text = NULL;
  int max_tokens = 64, json = 0, chunk = 0, stop_eos = 1;
  double temp = 0;
  int seed = 0;
  cli_flag flags[] = {
      SESSION_FLAGS(o),
      {"prompt", NULL, CLI_STR, &text, "prompt text (uses the model's tokenizer.json)"},
      {"prompt-ids", NULL, CLI_STR, &ids_s, "prompt as token ids, e.g. 5,17,99"},
      {"stop-at-eos", NULL, CLI_BOOL, &stop_eos, "stop at the model's end-of-text token"},
      {"max-tokens", NULL, CLI_INT, &max_tokens, "tokens to generate"},
      {"temperature", NULL, CLI_DOUBLE, &temp, "0 for greedy"},
      {"seed", NULL, CLI_INT, &seed, "sampling seed"},
      {"chunk", NULL, CLI_INT, &chunk, "most prompt tokens per step (0: 512)"},
      {"json", NULL, CLI_BOOL, &json, "print one JSON object"},
  };
  int rc = cli_parse("generate", "Generates tokens after a prompt with one sequence.", flags,
                     sizeof flags / sizeof flags[0], argc, argv, NULL, NULL);
  if (rc) return rc == CLI_HELP ? 0 : 2;
  if ((rc = finish_opts(&o))) return rc;
  if (!ids_s && !text) text = "Once upon a time";
  tok_tokenizer *tk = NULL;
  int32_t *ids;
  int n;
  if (text) {
    char terr[512];
    if (!o.model || tok_new(o.model, &tk, terr, sizeof terr)) {
      fprintf(stderr, "mfaserve generate: --prompt needs the model's tokenizer: %s\n",
              o.model ? terr : "no model given (pass --model DIR or set MFASERVE_MODEL)");
      return 2;
    }
    size_t nn;
    unsigned fl = tok_add_bos_default(tk) ? TOK_ADD_BOS : 0;
    if (tok_encode(tk, text, strlen(text), fl, &ids, &nn)) {
      tok_free(tk);
      return 1;
    }
    n = (int)nn;
  } else if (cli_parse_ids(ids_s, &ids, &n)) {
    return 2;
  }
  if (n < 1 || max_tokens < 0 || temp < 0) {
    fprintf(stderr, "mfaserve generate: need at least one prompt token, --max-tokens >= 0, --temperature >= 0\n");
    free(ids);
    return 2;
  }
  o.chunk = chunk;
  o.quiet = json;
  cli_session s;
  if ((rc = cli_session_open(&s, &o))) {
    free(ids);
    return rc;
  }
  int V = s.info->vocab;
  for (int i = 0; i < n; i++)
    if (ids[i] >= V) {
      fprintf(stderr, "mfaserve generate: prompt token %d is outside the vocabulary (0..%d)\n", ids[i], V - 1);
      cli_session_close(&s);
      free(ids);
      return 2;
    }
  if (n + max_tokens > s.max_ctx) {
    fprintf(stderr, "mfaserve generate: prompt (%d) + max tokens (%d) exceed the context limit %d\n", n,
            max_tokens, s.max_ctx);
    cli_session_close(&s);
    free(ids);
    return 2;
  }
  float *logits = malloc((size_t)V * sizeof *logits);
  int32_t *out = malloc((size_t)(max_tokens + 1) * sizeof *out);
  double *lps = malloc((size_t)(max_tokens + 1) * sizeof *lps);
  uint64_t rng = (uint64_t)seed;
  double t0 = mfs_now(), t1 = t0;
  int produced = 0;
  rc = logits && out && lps ? cli_session_feed(&s, ids, n, ENG_LOGITS_LAST, logits) : MFS_ENOMEM;
  t1 = mfs_now();
  tok_stream *ts = tk && !json ? tok_stream_new(tk, TOK_SKIP_SPECIAL) : NULL;
  if (ts) {
    fputs(text, stdout);
    fflush(stdout);
  }
  while (!rc && produced < max_tokens) {
    int tok = pick(logits, V, temp, &rng);
    out[produced] = tok;
    lps[produced++] = logprob_of(logits, V, tok);
    int eos = 0;
    for (int e = 0; e < s.info->n_eos; e++) eos |= tok == s.info->eos_ids[e];
    if (tk && tok == tok_eos(tk)) eos = 1;
    if (ts) {
      const char *piece;
      size_t plen;
      if (tok_stream_feed(ts, tok, &piece, &plen) == 0) fwrite(piece, 1, plen, stdout), fflush(stdout);
    }
    if (eos && stop_eos) break;
    if (produced < max_tokens) rc = cli_session_feed(&s, &tok, 1, ENG_LOGITS_LAST, logits);
  }
  if (ts) {
    const char *piece;
    size_t plen;
    if (tok_stream_flush(ts, &piece, &plen) == 0) fwrite(piece, 1, plen, stdout);
    printf("\n");
    tok_stream_free(ts);
  }
  double t2 = mfs_now();
  if (rc) {
    fprintf(stderr, "mfaserve generate: step failed: %s\n", rc > 0 ? "KV pool full" : mfs_strerror(rc));
  } else if (json) {
    if (tk) {
      char *txt;
      size_t tl;
      if (tok_decode(tk, out, (size_t)produced, TOK_SKIP_SPECIAL, &txt, &tl) == 0) {
        printf("{\"text\":");
        json_string(txt, tl);
        printf(",");
        free(txt);
      } else {
        printf("{");
      }
    } else {
      printf("{");
    }
    printf("\"prompt_ids\":[");
    for (int i = 0; i < n; i++) printf("%s%d", i ? "," : "", ids[i]);
    printf("],\"token_ids\":[");
    for (int i = 0; i < produced; i++) printf("%s%d", i ? "," : "", out[i]);
    printf("],\"logprobs\":[");
    for (int i = 0; i < produced; i++) printf("%s%.9g", i ? "," : "", lps[i]);
    printf("],\"prefill_seconds\":%.6f,\"decode_seconds\":%.6f}\n", t1 - t0, t2 - t1);
  } else {
    if (!tk) {
      for (int i = 0; i < produced; i++) printf("%s%d", i ? " " : "", out[i]);
      printf("\n");
    }
    fprintf(stderr, "prompt %d tokens in %.3f s, %d generated in %.3f s (%.1f tokens/s)\n", n, t1 - t0,
            produced, t2 - t1, produced > 1 ? (produced - 1) / (t2 - t1) : 0.0);
  }
  free(logits);
  free(out);
  free(lps);
  free(ids);
  tok_free(tk);
  cli_session_close(&s);
  return rc ? 1 : 0;
}

int cmd_logits(int argc, char **argv) {
  cli_session_opts o = {0};
  o.block_size = 16;
  const char *ids_s = NULL, *path = NULL;
  int chunk = 0;
  cli_flag flags[] = {
      SESSION_FLAGS(o),
      {"prompt-ids", NULL, CLI_STR, &ids_s, "prompt as token ids"},
      {"out", NULL, CLI_STR, &path, "output file: little-endian float32 [tokens][vocab]"},
      {"chunk", NULL, CLI_INT, &chunk, "tokens per step (0: all at once, 1: token by token)"},
  };
  int rc = cli_parse("logits", "Writes the logits of every prompt position (for tests).", flags,
                     sizeof flags / sizeof flags[0], argc, argv, NULL, NULL);
  if (rc) return rc == CLI_HELP ? 0 : 2;
  if ((rc = finish_opts(&o))) return rc;
  if (!ids_s || !path) {
    fprintf(stderr, "mfaserve logits: --prompt-ids and --out are required\n");
    return 2;
  }
  int32_t *ids;
  int n;
  if (cli_parse_ids(ids_s, &ids, &n)) return 2;
  o.chunk = chunk > 0 ? chunk : n;
  o.quiet = 1;
  if (n < 1) {
    fprintf(stderr, "mfaserve logits: --prompt-ids is empty: give at least one token id\n");
    free(ids);
    return 2;
  }
  cli_session s;
  if ((rc = cli_session_open(&s, &o))) {
    free(ids);
    return rc;
  }
  int V = s.info->vocab;
  if (n > s.max_ctx) {
    fprintf(stderr, "mfaserve logits: the prompt (%d tokens) exceeds the context limit %d\n", n, s.max_ctx);
    free(ids);
    cli_session_close(&s);
    return 2;
  }
  float *logits = malloc((size_t)n * V * sizeof *logits);
  rc = logits ? cli_session_feed(&s, ids, n, ENG_LOGITS_ALL, logits) : MFS_ENOMEM;
  if (rc) {
    fprintf(stderr, "mfaserve logits: %s\n", rc > 0 ? "KV pool full" : rc == MFS_EINVAL ? "token id out of range or prompt too long" : mfs_strerror(rc));
  } else {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(logits, sizeof(float), (size_t)n * V, f) != (size_t)n * V) {
      fprintf(stderr, "mfaserve logits: cannot write %s\n", path);
      rc = 1;
    }
    if (f) fclose(f);
  }
  free(logits);
  free(ids);
  cli_session_close(&s);
  return rc == MFS_EINVAL ? 2 : rc ? 1 : 0;
}
