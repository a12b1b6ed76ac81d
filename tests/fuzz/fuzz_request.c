/* fuzz_request.c: request body -> validated parameters, the server's
 * worker-side parser (srv_job_run in server/srv_openai.c) for
 * /v1/completions, /v1/chat/completions, /tokenize and /detokenize.
 *
 * Input: byte 0 picks the route (bits 0-1) and the chat template (bits
 * 2-3: chatml, llama3, mistral); the rest is the body. The server state is
 * the part a job reads: a tokenizer (data/tok_llama3), the model's vocab,
 * max_model_len 256, an EOS id and the template's end-of-turn id.
 *
 * Properties:
 *  - an error has a 4xx/5xx status and its JSON body parses, with the
 *    "error" object clients expect;
 *  - a prepared generation is what the scheduler accepts: at least one
 *    prompt, each with 1..max_model_len-1 in-vocabulary ids and room for
 *    max_tokens; n in [1, 128]; min_tokens <= max_tokens; logprobs in
 *    [-1, 20]; sampling values inside their documented ranges; logit_bias
 *    and stop ids in the vocabulary and within their counts; a decoder
 *    stream per choice;
 *  - /tokenize and /detokenize answers are JSON objects. */
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "fuzz_util.h"
#include "srv_int.h"

#define MML 256

static srv g_srv[3];
static eng_model_info g_info;
static tok_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  char dir[1024], err[512];
  snprintf(dir, sizeof dir, "%s/tok_llama3", fuzz_data_dir());
  if (tok_new(dir, &g_tok, err, sizeof err)) {
    fprintf(stderr, "fuzz_request: %s\n", err);
    abort();
  }
  g_info.vocab = tok_vocab_size(g_tok);
  static const char *names[3] = {"chatml", "llama3", "mistral"};
  for (int i = 0; i < 3; i++) {
    srv *s = &g_srv[i];
    s->tok = g_tok;
    s->info = &g_info;
    s->max_model_len = MML;
    snprintf(s->served, sizeof s->served, "test-model");
    s->chat_template_name = (char *)names[i];
    s->eos[0] = tok_eos(g_tok);
    s->n_eos = s->eos[0] >= 0;
    char msg[256];
    srv_tmpl_pick(s, msg, sizeof msg);
  }
  return 0;
}

static void check_json(const char *p, size_t n, const char *what) {
  cJSON *j = cJSON_ParseWithLength(p, n);
  FUZZ_CHECK(cJSON_IsObject(j), "%s is not a JSON object: %.*s", what, (int)(n > 300 ? 300 : n), p);
  cJSON_Delete(j);
}

static void check_gen(const srv *s, const srv_gen *g) {
  const sched_request_params *sp = &g->sp;
  const sched_sampling *sa = &sp->sampling;
  int V = s->info->vocab;
  FUZZ_CHECK(g->n_prompts >= 1 && g->prompts, "no prompt");
  FUZZ_CHECK(g->n >= 1 && g->n <= 128 && sp->n == g->n, "n %d", g->n);
  FUZZ_CHECK(sp->max_tokens >= 0 && sp->min_tokens >= 0 && sp->min_tokens <= sp->max_tokens, "max %d min %d",
             sp->max_tokens, sp->min_tokens);
  for (int i = 0; i < g->n_prompts; i++) {
    const srv_prompt *p = &g->prompts[i];
    FUZZ_CHECK(p->n_ids >= 1 && p->n_ids < s->max_model_len, "prompt %d has %d ids", i, p->n_ids);
    FUZZ_CHECK((long)p->n_ids + sp->max_tokens <= s->max_model_len, "prompt %d: %d + %d tokens > %d", i, p->n_ids,
               sp->max_tokens, s->max_model_len);
    for (int k = 0; k < p->n_ids; k++) FUZZ_CHECK(p->ids[k] >= 0 && p->ids[k] < V, "prompt id %d", p->ids[k]);
  }
  FUZZ_CHECK(sp->logprobs >= -1 && sp->logprobs <= SCHED_MAX_LOGPROBS, "logprobs %d", sp->logprobs);
  FUZZ_CHECK(sp->prompt_logprobs >= -1 && sp->prompt_logprobs <= SCHED_MAX_LOGPROBS, "prompt_logprobs");
  FUZZ_CHECK(sp->n_stop_ids >= 0 && sp->n_stop_ids <= SCHED_MAX_STOP_IDS, "n_stop_ids %d", sp->n_stop_ids);
  for (int k = 0; k < sp->n_stop_ids; k++) FUZZ_CHECK(sp->stop_ids[k] >= 0 && sp->stop_ids[k] < V, "stop id");
  FUZZ_CHECK(g->n_stop_tok <= (int)(sizeof g->stop_tok / sizeof g->stop_tok[0]), "n_stop_tok %d", g->n_stop_tok);
  FUZZ_CHECK(g->n_stop >= 0 && g->n_stop <= SRV_MAX_STOP, "n_stop %d", g->n_stop);
  for (int k = 0; k < g->n_stop; k++) FUZZ_CHECK(g->stop[k] && g->stop_len[k] == strlen(g->stop[k]), "stop");
  FUZZ_CHECK(isfinite(sa->temperature) && sa->temperature >= 0 && sa->temperature <= 2, "temperature");
  FUZZ_CHECK(sa->top_p > 0 && sa->top_p <= 1, "top_p %g", sa->top_p);
  FUZZ_CHECK(sa->min_p >= 0 && sa->min_p <= 1, "min_p");
  FUZZ_CHECK(sa->repetition_penalty > 0 && isfinite(sa->repetition_penalty), "repetition_penalty");
  FUZZ_CHECK(fabsf(sa->presence_penalty) <= 2 && fabsf(sa->frequency_penalty) <= 2, "penalties");
  FUZZ_CHECK(sa->n_bias >= 0 && sa->n_bias <= SCHED_MAX_BIAS, "n_bias %d", sa->n_bias);
  for (int k = 0; k < sa->n_bias; k++)
    FUZZ_CHECK(sa->bias_ids[k] >= 0 && sa->bias_ids[k] < V && fabsf(sa->bias_vals[k]) <= 100, "bias %d", k);
  FUZZ_CHECK(g->choices, "choices");
  for (int k = 0; k < g->n_prompts * g->n; k++) FUZZ_CHECK(g->choices[k].ts, "choice %d has no decoder", k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const srv_route routes[4] = {SRV_R_COMPLETIONS, SRV_R_CHAT, SRV_R_TOKENIZE, SRV_R_DETOKENIZE};
  srv *s = &g_srv[((data[0] >> 2) & 3) % 3];
  srv_job j;
  memset(&j, 0, sizeof j);
  j.s = s;
  j.route = routes[data[0] & 3];
  j.len = size - 1;
  j.body = malloc(j.len ? j.len : 1); /* exact size: reads past the body are caught */
  FUZZ_CHECK(j.body, "malloc");
  memcpy(j.body, data + 1, j.len);
  srv_job_run(&j);
  if (j.err.kind != SRV_E_NONE) {
    int st = srv_error_status(j.err.kind);
    FUZZ_CHECK(st >= 400 && st <= 599, "status %d for kind %d", st, (int)j.err.kind);
    FUZZ_CHECK(memchr(j.err.msg, 0, sizeof j.err.msg) && j.err.msg[0], "empty error message");
    sb out = {0};
    srv_error_json(&out, &j.err);
    check_json(out.p, out.len, "error body");
    cJSON *e = cJSON_ParseWithLength(out.p, out.len);
    const cJSON *eo = cJSON_GetObjectItemCaseSensitive(e, "error");
    FUZZ_CHECK(cJSON_IsObject(eo) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(eo, "message")),
               "error body lacks error.message");
    cJSON_Delete(e);
    sb_free(&out);
  } else if (j.route == SRV_R_COMPLETIONS || j.route == SRV_R_CHAT) {
    FUZZ_CHECK(j.gen != NULL, "no generation and no error");
    check_gen(s, j.gen);
  } else {
    check_json(j.resp.p, j.resp.len, "tokenize/detokenize answer");
  }
  srv_gen_free(j.gen);
  sb_free(&j.resp);
  free(j.body);
  return 0;
}
