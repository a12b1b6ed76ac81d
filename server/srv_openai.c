/* srv_openai.c: OpenAI request bodies -> prepared generations, on libuv's
 * worker pool (so a huge body or a very long prompt never stalls the loop).
 * Everything is validated here; a request that passes holds token ids and
 * scheduler parameters the scheduler will accept. Also the chat templates
 * and /tokenize, /detokenize.
 *
 * Thread: a worker. It reads only what is immutable while the server runs
 * (options, tokenizer, model info, template choice) and writes only its job. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srv_int.h"

/* ---- field helpers: each returns 0, or -1 with j->err set ---- */

static int bad(srv_job *j, const char *param, const char *fmt, const char *what) {
  srv_error_set(&j->err, SRV_E_INVALID, param, fmt, param, what);
  return -1;
}

static int get_num(srv_job *j, const cJSON *o, const char *k, double lo, double hi, double *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsNumber(v)) return bad(j, k, "'%s' must be %s.", "a number");
  if (!(v->valuedouble >= lo && v->valuedouble <= hi)) {
    srv_error_set(&j->err, SRV_E_INVALID, k, "'%s' is %g; it must be in [%g, %g].", k, v->valuedouble, lo, hi);
    return -1;
  }
  *out = v->valuedouble;
  return 0;
}

static int get_int(srv_job *j, const cJSON *o, const char *k, double lo, double hi, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)) return bad(j, k, "'%s' must be %s.", "an integer");
  if (!(v->valuedouble >= lo && v->valuedouble <= hi)) {
    srv_error_set(&j->err, SRV_E_INVALID, k, "'%s' is %g; it must be in [%g, %g].", k, v->valuedouble, lo, hi);
    return -1;
  }
  *out = (int)v->valuedouble;
  return 0;
}

static int get_bool(srv_job *j, const cJSON *o, const char *k, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsBool(v)) return bad(j, k, "'%s' must be %s.", "a boolean");
  *out = cJSON_IsTrue(v);
  return 0;
}

static int check_fields(srv_job *j, const cJSON *root, const char *const *known) {
  for (const cJSON *it = root->child; it; it = it->next) {
    int ok = 0;
    for (int i = 0; known[i] && !ok; i++) ok = !strcmp(it->string, known[i]);
    if (!ok) {
      srv_error_set(&j->err, SRV_E_UNSUPPORTED, it->string, "Unrecognized request argument supplied: %s", it->string);
      return -1;
    }
  }
  return 0;
}

static const char *const common_fields[] = {
    "model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "presence_penalty",
    "frequency_penalty", "seed", "logit_bias", "user", "top_k", "min_p", "repetition_penalty", "min_tokens",
    "ignore_eos", "stop_token_ids", "return_tokens_as_token_ids", "priority", "skip_special_tokens",
    "include_stop_str_in_output", "logprobs", "response_format", "structured_outputs", "guided_json", "guided_regex",
    "guided_choice", "guided_grammar", "guided_decoding_backend", "guided_whitespace_pattern", NULL};
static const char *const completion_fields[] = {"prompt", "echo", "best_of", "suffix", "add_special_tokens", NULL};
static const char *const chat_fields[] = {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
                                          "response_format", "parallel_tool_calls", "metadata", "store",
                                          "add_generation_prompt", "service_tier", NULL};

static int check_all_fields(srv_job *j, const cJSON *root, int chat) {
  for (const cJSON *it = root->child; it; it = it->next) {
    int ok = 0;
    for (int i = 0; common_fields[i] && !ok; i++) ok = !strcmp(it->string, common_fields[i]);
    const char *const *extra = chat ? chat_fields : completion_fields;
    for (int i = 0; extra[i] && !ok; i++) ok = !strcmp(it->string, extra[i]);
    if (!ok) {
      srv_error_set(&j->err, SRV_E_UNSUPPORTED, it->string, "Unrecognized request argument supplied: %s", it->string);
      return -1;
    }
  }
  return 0;
}

static cJSON *parse_body(srv_job *j) {
  if (!j->len) {
    srv_error_set(&j->err, SRV_E_INVALID, NULL, "The request body is empty; send a JSON object.");
    return NULL;
  }
  size_t good = tok_utf8_valid_prefix(j->body, j->len);
  if (good < j->len) { /* RFC 8259 section 8.1: JSON text exchanged between systems is UTF-8 */
    srv_error_set(&j->err, SRV_E_INVALID, NULL,
                  "The request body is not valid UTF-8 (byte %zu, 0x%02x); JSON text must be UTF-8 (RFC 8259).",
                  good, (unsigned)(unsigned char)j->body[good]);
    return NULL;
  }
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(j->body, j->len, &end, 0);
  if (!root) {
    long at = end ? (long)(end - j->body) : 0;
    srv_error_set(&j->err, SRV_E_INVALID, NULL, "The request body is not valid JSON (near byte %ld).", at);
    return NULL;
  }
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    srv_error_set(&j->err, SRV_E_INVALID, NULL, "The request body must be a JSON object.");
    return NULL;
  }
  return root;
}

static int check_model(srv_job *j, const cJSON *root) {
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
  if (!m || cJSON_IsNull(m)) return 0;
  if (!cJSON_IsString(m)) return bad(j, "model", "'%s' must be %s.", "a string");
  if (strcmp(m->valuestring, j->s->served)) {
    srv_error_set(&j->err, SRV_E_MODEL_NOT_FOUND, "model", "The model `%s` does not exist.", m->valuestring);
    return -1;
  }
  return 0;
}

/* ---- chat templates ---- */

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
    free(p);
    p = NULL;
  }
  if (p) p[n] = 0;
  fclose(f);
  return p;
}

int srv_tmpl_pick(srv *s, char *msg, size_t msglen) {
  const char *want = s->chat_template_name;
  const char *why = "--chat-template";
  if (!strcmp(want, "auto")) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", s->model_dir);
    char *txt = read_file(path);
    cJSON *root = txt ? cJSON_Parse(txt) : NULL;
    const cJSON *t = root ? cJSON_GetObjectItemCaseSensitive(root, "chat_template") : NULL;
    const char *tmpl = NULL;
    if (cJSON_IsString(t)) tmpl = t->valuestring;
    else if (cJSON_IsArray(t))
      for (const cJSON *e = t->child; e; e = e->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *tt = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default") && cJSON_IsString(tt)) tmpl = tt->valuestring;
      }
    if (!tmpl) {
      want = "chatml";
      why = "built-in (no chat_template in tokenizer_config.json)";
    } else if (strstr(tmpl, "<|im_start|>")) {
      want = "chatml";
      why = "recognised in tokenizer_config.json";
    } else if (strstr(tmpl, "<|start_header_id|>")) {
      want = "llama3";
      why = "recognised in tokenizer_config.json";
    } else if (strstr(tmpl, "['role'] }}: {{") && strstr(tmpl, "['content'] }}\n\n") && strstr(tmpl, "assistant: ")) {
      want = "plain";
      why = "recognised in tokenizer_config.json";
    } else if (strstr(tmpl, "[INST]")) {
      want = "mistral";
      why = "recognised in tokenizer_config.json";
    } else {
      want = "chatml";
      why = "built-in (tokenizer_config.json's template is not one this server knows)";
    }
    cJSON_Delete(root);
    free(txt);
  }
  s->n_tmpl_stop = 0;
  const char *end = NULL;
  if (!strcmp(want, "chatml")) {
    s->tmpl = SRV_TMPL_CHATML;
    end = "<|im_end|>";
  } else if (!strcmp(want, "llama3")) {
    s->tmpl = SRV_TMPL_LLAMA3;
    end = "<|eot_id|>";
  } else if (!strcmp(want, "plain")) {
    s->tmpl = SRV_TMPL_PLAIN;
  } else {
    s->tmpl = SRV_TMPL_MISTRAL;
  }
  int32_t id = end ? tok_token_id(s->tok, end) : -1;
  if (id >= 0) s->tmpl_stop[s->n_tmpl_stop++] = id;
  snprintf(msg, msglen, "%s (%s)", want, why);
  return 0;
}

/* messages -> prompt text; 0 or -1 with j->err */
static void render_one(srv *s, const char *r, const char *role_as_given, const char *c, size_t clen, sb *out,
                       sb *sys, const char **pending_system);

static int render_chat(srv_job *j, const cJSON *msgs, int add_gen, const char *tools_block, sb *out) {
  srv *s = j->s;
  if (!cJSON_IsArray(msgs) || !msgs->child) {
    srv_error_set(&j->err, SRV_E_INVALID, "messages", "'messages' must be a non-empty array.");
    return -1;
  }
  if (s->tmpl == SRV_TMPL_LLAMA3) sb_puts(out, "<|begin_of_text|>");
  if (s->tmpl == SRV_TMPL_MISTRAL) sb_puts(out, "<s>");
  const char *pending_system = NULL;
  sb sys = {0};
  int k = 0;
  for (const cJSON *m = msgs->child; m; m = m->next, k++) {
    char param[32];
    snprintf(param, sizeof param, "messages[%d]", k);
    if (!cJSON_IsObject(m)) {
      srv_error_set(&j->err, SRV_E_INVALID, param, "Each message must be an object with 'role' and 'content'.");
      goto fail;
    }
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!cJSON_IsString(role)) {
      srv_error_set(&j->err, SRV_E_INVALID, param, "%s.role must be a string.", param);
      goto fail;
    }
    const char *r = role->valuestring;
    if (!strcmp(r, "developer")) r = "system";
    if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool")) {
      srv_error_set(&j->err, SRV_E_INVALID, param,
                    "%s.role '%s' is not supported (system, developer, user, assistant, tool).", param,
                    role->valuestring);
      goto fail;
    }
    const cJSON *calls = NULL;
    for (const cJSON *f = m->child; f; f = f->next) {
      if (!strcmp(f->string, "tool_calls") && !strcmp(r, "assistant")) {
        calls = f;
        continue;
      }
      if (!strcmp(f->string, "tool_call_id") && !strcmp(r, "tool")) continue;
      if (!strcmp(f->string, "refusal") && !strcmp(r, "assistant")) continue;
      if (strcmp(f->string, "role") && strcmp(f->string, "content") && strcmp(f->string, "name")) {
        srv_error_set(&j->err, SRV_E_UNSUPPORTED, param, "%s.%s is not supported.", param, f->string);
        goto fail;
      }
    }
    if (k == 0 && tools_block) /* the tools, as a system message before everything */
      render_one(s, "system", "system", tools_block, strlen(tools_block), out, &sys, &pending_system);
    sb text = {0};
    if (cJSON_IsString(content)) {
      sb_puts(&text, content->valuestring);
    } else if (cJSON_IsArray(content)) {
      for (const cJSON *part = content->child; part; part = part->next) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx)) {
          sb_free(&text);
          srv_error_set(&j->err, SRV_E_UNSUPPORTED, param,
                        "%s.content: only parts of type 'text' with a string 'text' are supported.", param);
          goto fail;
        }
        sb_puts(&text, tx->valuestring);
      }
    } else if (!((cJSON_IsNull(content) || !content) && !strcmp(r, "assistant"))) {
      srv_error_set(&j->err, SRV_E_INVALID, param, "%s.content must be a string or a list of text parts.", param);
      goto fail;
    }
    /* earlier tool calls, written as the model writes them */
    if (calls && !cJSON_IsNull(calls)) {
      if (!cJSON_IsArray(calls)) {
        sb_free(&text);
        srv_error_set(&j->err, SRV_E_INVALID, param, "%s.tool_calls must be an array.", param);
        goto fail;
      }
      for (const cJSON *tcall = calls->child; tcall; tcall = tcall->next) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tcall, "function");
        const cJSON *nm = fn ? cJSON_GetObjectItemCaseSensitive(fn, "name") : NULL;
        const cJSON *ar = fn ? cJSON_GetObjectItemCaseSensitive(fn, "arguments") : NULL;
        if (!cJSON_IsString(nm) || !cJSON_IsString(ar)) {
          sb_free(&text);
          srv_error_set(&j->err, SRV_E_INVALID, param,
                        "%s.tool_calls[] must be {\"function\": {\"name\": ..., \"arguments\": \"...\"}}.", param);
          goto fail;
        }
        if (text.len) sb_puts(&text, "\n");
        sb_puts(&text, SRV_TOOL_OPEN "\n{\"name\":");
        sb_json_str(&text, nm->valuestring, strlen(nm->valuestring));
        sb_puts(&text, ",\"arguments\":");
        sb_puts(&text, ar->valuestring[0] ? ar->valuestring : "{}");
        sb_puts(&text, "}\n" SRV_TOOL_CLOSE);
      }
    }
    if (!strcmp(r, "tool")) { /* a result goes back as the user's turn, as Qwen's and Hermes' templates do */
      sb wrapped = {0};
      sb_puts(&wrapped, "<tool_response>\n");
      sb_put(&wrapped, text.p ? text.p : "", text.len);
      sb_puts(&wrapped, "\n</tool_response>");
      sb_free(&text);
      text = wrapped;
      r = s->tmpl == SRV_TMPL_PLAIN ? "tool" : "user";
    }
    render_one(s, r, role->valuestring, text.p ? text.p : "", text.len, out, &sys, &pending_system);
    sb_free(&text);
  }
  if (add_gen) {
    if (s->tmpl == SRV_TMPL_CHATML) sb_puts(out, "<|im_start|>assistant\n");
    else if (s->tmpl == SRV_TMPL_LLAMA3) sb_puts(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    else if (s->tmpl == SRV_TMPL_PLAIN) sb_puts(out, "assistant: ");
  }
  sb_free(&sys);
  return 0;
fail:
  sb_free(&sys);
  return -1;
}

/* One message in the model's template. */
static void render_one(srv *s, const char *r, const char *role_as_given, const char *c, size_t clen, sb *out,
                       sb *sys, const char **pending_system) {
  (void)clen;
  {
    sb text = {0};
    sb_put(&text, c, clen);
    switch (s->tmpl) {
    case SRV_TMPL_CHATML:
      sb_printf(out, "<|im_start|>%s\n", r);
      sb_puts(out, c);
      sb_puts(out, "<|im_end|>\n");
      break;
    case SRV_TMPL_LLAMA3: {
      size_t a = 0, b = text.len; /* the Llama 3 template strips content */
      while (a < b && (c[a] == ' ' || c[a] == '\n' || c[a] == '\t' || c[a] == '\r')) a++;
      while (b > a && (c[b - 1] == ' ' || c[b - 1] == '\n' || c[b - 1] == '\t' || c[b - 1] == '\r')) b--;
      sb_printf(out, "<|start_header_id|>%s<|end_header_id|>\n\n", r);
      sb_put(out, c + a, b - a);
      sb_puts(out, "<|eot_id|>");
      break;
    }
    case SRV_TMPL_PLAIN:
      sb_printf(out, "%s: ", role_as_given); /* the template prints the role as given */
      sb_puts(out, c);
      sb_puts(out, "\n\n");
      break;
    case SRV_TMPL_MISTRAL:
      if (!strcmp(r, "system")) {
        if (sys->len) sb_puts(sys, "\n\n");
        sb_puts(sys, c);
        *pending_system = sys->p;
      } else if (!strcmp(r, "user")) {
        sb_puts(out, "[INST] ");
        if (*pending_system) {
          sb_puts(out, *pending_system);
          sb_puts(out, "\n\n");
          *pending_system = NULL;
        }
        sb_puts(out, c);
        sb_puts(out, " [/INST]");
      } else {
        sb_puts(out, c);
        sb_puts(out, "</s>");
      }
      break;
    }
    sb_free(&text);
  }
}

/* ---- prompts ---- */

static int encode(srv_job *j, const char *text, size_t len, unsigned flags, srv_prompt *p) {
  int32_t *ids = NULL;
  size_t n = 0;
  if (tok_encode(j->s->tok, text, len, flags, &ids, &n)) {
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "Tokenizing the prompt failed.");
    return -1;
  }
  p->ids = ids;
  p->n_ids = (int)n;
  return 0;
}

static int ids_from_array(srv_job *j, const cJSON *a, srv_prompt *p, const char *param) {
  int n = cJSON_GetArraySize(a), k = 0;
  p->ids = malloc((size_t)(n ? n : 1) * sizeof *p->ids);
  if (!p->ids) {
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
    return -1;
  }
  int vocab = tok_vocab_size(j->s->tok) > j->s->info->vocab ? tok_vocab_size(j->s->tok) : j->s->info->vocab;
  for (const cJSON *e = a->child; e; e = e->next, k++) {
    if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
        e->valuedouble >= j->s->info->vocab) {
      (void)vocab;
      srv_error_set(&j->err, SRV_E_INVALID, param, "Token ids in '%s' must be integers in [0, %d).", param,
                    j->s->info->vocab);
      return -1;
    }
    p->ids[k] = (int32_t)e->valuedouble;
  }
  p->n_ids = n;
  return 0;
}

static int is_int_array(const cJSON *a) {
  if (!cJSON_IsArray(a) || !a->child) return 0;
  for (const cJSON *e = a->child; e; e = e->next)
    if (!cJSON_IsNumber(e)) return 0;
  return 1;
}

static int parse_prompts(srv_job *j, srv_gen *g, const cJSON *root, unsigned enc_flags) {
  const cJSON *pr = cJSON_GetObjectItemCaseSensitive(root, "prompt");
  if (!pr || cJSON_IsNull(pr)) {
    srv_error_set(&j->err, SRV_E_INVALID, "prompt", "'prompt' is required.");
    return -1;
  }
  int np;
  int kind; /* 0 string, 1 ids, 2 list of strings, 3 list of id lists */
  if (cJSON_IsString(pr)) kind = 0, np = 1;
  else if (is_int_array(pr)) kind = 1, np = 1;
  else if (cJSON_IsArray(pr) && pr->child && cJSON_IsString(pr->child)) kind = 2, np = cJSON_GetArraySize(pr);
  else if (cJSON_IsArray(pr) && pr->child && cJSON_IsArray(pr->child)) kind = 3, np = cJSON_GetArraySize(pr);
  else {
    srv_error_set(&j->err, SRV_E_INVALID, "prompt",
                  "'prompt' must be a string, a list of strings, a list of token ids or a list of lists of token ids.");
    return -1;
  }
  if (np > 1024) {
    srv_error_set(&j->err, SRV_E_INVALID, "prompt", "At most 1024 prompts per request.");
    return -1;
  }
  g->prompts = calloc((size_t)np, sizeof *g->prompts);
  if (!g->prompts) {
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
    return -1;
  }
  g->n_prompts = np;
  const cJSON *e = kind >= 2 ? pr->child : pr;
  for (int i = 0; i < np; i++, e = e ? e->next : NULL) {
    srv_prompt *p = &g->prompts[i];
    if (kind == 0 || kind == 2) {
      if (!cJSON_IsString(e)) {
        srv_error_set(&j->err, SRV_E_INVALID, "prompt", "'prompt' lists must hold only strings (or only id lists).");
        return -1;
      }
      if (encode(j, e->valuestring, strlen(e->valuestring), enc_flags, p)) return -1;
      if (g->echo) p->text = strdup(e->valuestring);
    } else {
      if (!is_int_array(e)) {
        srv_error_set(&j->err, SRV_E_INVALID, "prompt", "'prompt' lists of token ids must be non-empty lists of integers.");
        return -1;
      }
      if (ids_from_array(j, e, p, "prompt")) return -1;
      if (g->echo) {
        char *t = NULL;
        size_t tl = 0;
        if (tok_decode(j->s->tok, p->ids, (size_t)p->n_ids, 0, &t, &tl) == 0) p->text = t;
      }
    }
  }
  return 0;
}

/* ---- sampling & limits (both endpoints) ---- */

static int parse_common(srv_job *j, srv_gen *g, const cJSON *root) {
  sched_request_params *sp = &g->sp;
  sched_sampling *sa = &sp->sampling;
  double d;
  int b;
  sa->temperature = 1.0f;
  sa->top_p = 1.0f;
  sa->top_k = -1;
  sa->min_p = 0;
  sa->repetition_penalty = 1.0f;
  d = 1.0;
  if (get_num(j, root, "temperature", 0, 2, &d)) return -1;
  sa->temperature = (float)d;
  d = 1.0;
  if (get_num(j, root, "top_p", 1e-9, 1, &d)) return -1;
  sa->top_p = (float)d;
  if (get_int(j, root, "top_k", -1, 1e9, &sa->top_k)) return -1;
  d = 0;
  if (get_num(j, root, "min_p", 0, 1, &d)) return -1;
  sa->min_p = (float)d;
  d = 1.0;
  if (get_num(j, root, "repetition_penalty", 1e-6, 10, &d)) return -1;
  sa->repetition_penalty = (float)d;
  d = 0;
  if (get_num(j, root, "presence_penalty", -2, 2, &d)) return -1;
  sa->presence_penalty = (float)d;
  d = 0;
  if (get_num(j, root, "frequency_penalty", -2, 2, &d)) return -1;
  sa->frequency_penalty = (float)d;
  const cJSON *seed = cJSON_GetObjectItemCaseSensitive(root, "seed");
  if (seed && !cJSON_IsNull(seed)) {
    if (!cJSON_IsNumber(seed) || seed->valuedouble != floor(seed->valuedouble) ||
        fabs(seed->valuedouble) > 9007199254740992.0) /* 2^53: exact in a JSON number */
      return bad(j, "seed", "'%s' must be %s.", "an integer between -2^53 and 2^53");
    sa->has_seed = 1;
    sa->seed = (uint64_t)(int64_t)seed->valuedouble;
  }
  const cJSON *lb = cJSON_GetObjectItemCaseSensitive(root, "logit_bias");
  if (lb && !cJSON_IsNull(lb)) {
    if (!cJSON_IsObject(lb)) return bad(j, "logit_bias", "'%s' must be %s.", "an object of token id -> bias");
    for (const cJSON *e = lb->child; e; e = e->next) {
      char *end;
      long id = strtol(e->string, &end, 10);
      if (end == e->string || *end || id < 0 || id >= j->s->info->vocab) {
        srv_error_set(&j->err, SRV_E_INVALID, "logit_bias", "logit_bias key '%s' is not a token id in [0, %d).",
                      e->string, j->s->info->vocab);
        return -1;
      }
      if (!cJSON_IsNumber(e) || e->valuedouble < -100 || e->valuedouble > 100) {
        srv_error_set(&j->err, SRV_E_INVALID, "logit_bias", "logit_bias values must be numbers in [-100, 100].");
        return -1;
      }
      if (sa->n_bias == SCHED_MAX_BIAS) {
        srv_error_set(&j->err, SRV_E_INVALID, "logit_bias", "At most %d logit_bias entries.", SCHED_MAX_BIAS);
        return -1;
      }
      sa->bias_ids[sa->n_bias] = (int32_t)id;
      sa->bias_vals[sa->n_bias++] = (float)e->valuedouble;
    }
  }
  const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "user");
  if (u && !cJSON_IsNull(u) && !cJSON_IsString(u)) return bad(j, "user", "'%s' must be %s.", "a string");
  g->n = 1;
  if (get_int(j, root, "n", 1, 128, &g->n)) return -1;
  sp->n = g->n;
  if (get_int(j, root, "min_tokens", 0, 1e9, &sp->min_tokens)) return -1;
  b = 0;
  if (get_bool(j, root, "ignore_eos", &b)) return -1;
  sp->ignore_eos = b;
  if (get_int(j, root, "priority", -1e9, 1e9, &sp->priority)) return -1;
  if (get_bool(j, root, "stream", &g->stream)) return -1;
  if (get_bool(j, root, "return_tokens_as_token_ids", &g->return_ids)) return -1;
  if (get_bool(j, root, "include_stop_str_in_output", &g->include_stop)) return -1;
  b = 1;
  if (get_bool(j, root, "skip_special_tokens", &b)) return -1;
  g->decode_flags = b ? TOK_SKIP_SPECIAL : 0;
  const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
  if (so && !cJSON_IsNull(so)) {
    if (!g->stream) {
      srv_error_set(&j->err, SRV_E_INVALID, "stream_options", "'stream_options' is only allowed when 'stream' is true.");
      return -1;
    }
    if (!cJSON_IsObject(so)) return bad(j, "stream_options", "'%s' must be %s.", "an object");
    for (const cJSON *e = so->child; e; e = e->next)
      if (strcmp(e->string, "include_usage") && strcmp(e->string, "continuous_usage_stats")) {
        srv_error_set(&j->err, SRV_E_UNSUPPORTED, "stream_options", "stream_options.%s is not supported.", e->string);
        return -1;
      }
    if (get_bool(j, so, "include_usage", &g->include_usage)) return -1;
    if (get_bool(j, so, "continuous_usage_stats", &g->continuous_usage)) return -1;
    if (g->continuous_usage) g->include_usage = 1;
  }
  /* stop strings */
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "stop");
  if (st && !cJSON_IsNull(st)) {
    if (cJSON_IsString(st)) {
      if (st->valuestring[0]) g->stop[g->n_stop++] = strdup(st->valuestring);
    } else if (cJSON_IsArray(st)) {
      if (cJSON_GetArraySize(st) > SRV_MAX_STOP) {
        srv_error_set(&j->err, SRV_E_INVALID, "stop", "At most %d stop sequences.", SRV_MAX_STOP);
        return -1;
      }
      for (const cJSON *e = st->child; e; e = e->next) {
        if (!cJSON_IsString(e)) return bad(j, "stop", "'%s' must be %s.", "a string or a list of strings");
        if (e->valuestring[0]) g->stop[g->n_stop++] = strdup(e->valuestring);
      }
    } else {
      return bad(j, "stop", "'%s' must be %s.", "a string or a list of strings");
    }
    for (int i = 0; i < g->n_stop; i++) {
      if (!g->stop[i]) {
        srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
        return -1;
      }
      g->stop_len[i] = strlen(g->stop[i]);
      if (g->stop_len[i] > g->max_stop_len) g->max_stop_len = g->stop_len[i];
    }
  }
  const cJSON *sti = cJSON_GetObjectItemCaseSensitive(root, "stop_token_ids");
  if (sti && !cJSON_IsNull(sti)) {
    if (!cJSON_IsArray(sti) || cJSON_GetArraySize(sti) > SCHED_MAX_STOP_IDS)
      return bad(j, "stop_token_ids", "'%s' must be %s.", "a list of at most 16 token ids");
    for (const cJSON *e = sti->child; e; e = e->next) {
      if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
          e->valuedouble >= j->s->info->vocab)
        return bad(j, "stop_token_ids", "'%s' must be %s.", "a list of token ids within the vocabulary");
      sp->stop_ids[sp->n_stop_ids++] = (int32_t)e->valuedouble;
    }
  }
  return 0;
}

static void make_id(srv_gen *g, const char *prefix, srv *s) {
  uint64_t k = __atomic_add_fetch(&s->next_id, 1, __ATOMIC_RELAXED);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t r = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ k * 0xD1B54A32D192ED03ULL;
  snprintf(g->id, sizeof g->id, "%s-%016llx%04llx", prefix, (unsigned long long)r, (unsigned long long)(k & 0xffff));
  g->created = (int64_t)ts.tv_sec;
}

static int finish_prepare(srv_job *j, srv_gen *g, int max_tokens_given, int chat) {
  srv *s = j->s;
  sched_request_params *sp = &g->sp;
  int mml = s->max_model_len;
  for (int i = 0; i < g->n_prompts; i++) {
    srv_prompt *p = &g->prompts[i];
    if (p->n_ids < 1) {
      srv_error_set(&j->err, SRV_E_INVALID, chat ? "messages" : "prompt", "The prompt is empty.");
      return -1;
    }
    int mt = max_tokens_given ? sp->max_tokens : mml - p->n_ids;
    if (p->n_ids >= mml || (long)p->n_ids + mt > mml) {
      srv_error_set(&j->err, SRV_E_CONTEXT, chat ? "messages" : "prompt",
                    "This model's maximum context length is %d tokens. However, you requested %ld tokens (%d in the "
                    "%s, %d in the completion). Please reduce the length of the %s or completion.",
                    mml, (long)p->n_ids + (mt > 0 ? mt : 0), p->n_ids, chat ? "messages" : "prompt", mt > 0 ? mt : 0,
                    chat ? "messages" : "prompt");
      return -1;
    }
    if (!max_tokens_given && (i == 0 || mt < sp->max_tokens)) sp->max_tokens = mt;
    if (g->echo && g->logprobs >= 0) {
      p->plp = calloc((size_t)p->n_ids, sizeof *p->plp);
      if (!p->plp) {
        srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
        return -1;
      }
      for (int k = 0; k < p->n_ids; k++) {
        p->plp[k].id = p->ids[k];
        p->plp[k].lp = NAN;
      }
    }
  }
  if (sp->min_tokens > sp->max_tokens) {
    srv_error_set(&j->err, SRV_E_INVALID, "min_tokens", "'min_tokens' (%d) must not exceed 'max_tokens' (%d).",
                  sp->min_tokens, sp->max_tokens);
    return -1;
  }
  sp->logprobs = g->logprobs;
  sp->prompt_logprobs = g->echo && g->logprobs >= 0 ? g->logprobs : -1;
  /* ids whose text is never shown: EOS (unless ignored), stop ids, end of turn */
  if (!sp->ignore_eos)
    for (int i = 0; i < s->n_eos; i++) g->stop_tok[g->n_stop_tok++] = s->eos[i];
  for (int i = 0; i < sp->n_stop_ids; i++) g->stop_tok[g->n_stop_tok++] = sp->stop_ids[i];
  if (chat)
    for (int i = 0; i < s->n_tmpl_stop; i++) {
      int have = 0;
      for (int k = 0; k < sp->n_stop_ids; k++) have |= sp->stop_ids[k] == s->tmpl_stop[i];
      for (int k = 0; k < s->n_eos; k++) have |= s->eos[k] == s->tmpl_stop[i];
      if (!have && sp->n_stop_ids < SCHED_MAX_STOP_IDS) {
        sp->stop_ids[sp->n_stop_ids++] = s->tmpl_stop[i];
        g->stop_tok[g->n_stop_tok++] = s->tmpl_stop[i];
      }
    }
  int nc = g->n_prompts * g->n;
  if (nc > SRV_MAX_CHOICES) { /* each choice holds a decoder and buffers: bound one request's memory */
    srv_error_set(&j->err, SRV_E_INVALID, "n", "At most %d choices (prompts x n) per request; this one asks for %d.",
                  SRV_MAX_CHOICES, nc);
    return -1;
  }
  g->choices = calloc((size_t)nc, sizeof *g->choices);
  if (!g->choices) {
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
    return -1;
  }
  for (int i = 0; i < nc; i++) {
    g->choices[i].prompt = i / g->n;
    g->choices[i].ts = tok_stream_new(s->tok, g->decode_flags);
    if (!g->choices[i].ts) {
      srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
      return -1;
    }
  }
  return 0;
}

static srv_gen *gen_new(srv_job *j, srv_kind kind) {
  srv_gen *g = calloc(1, sizeof *g);
  if (!g) {
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
    return NULL;
  }
  g->s = j->s;
  g->kind = kind;
  g->logprobs = -1;
  return g;
}

static void prepare_completion(srv_job *j, const cJSON *root) {
  srv *s = j->s;
  if (check_all_fields(j, root, 0) || check_model(j, root)) return;
  srv_gen *g = gen_new(j, SRV_KIND_COMPLETION);
  if (!g) return;
  j->gen = g;
  make_id(g, "cmpl", s);
  if (parse_common(j, g, root) || srv_constraint_parse(j, g, root)) return;
  const cJSON *suffix = cJSON_GetObjectItemCaseSensitive(root, "suffix");
  if (suffix && !cJSON_IsNull(suffix) && !(cJSON_IsString(suffix) && !suffix->valuestring[0])) {
    srv_error_set(&j->err, SRV_E_UNSUPPORTED, "suffix", "'suffix' is not supported.");
    return;
  }
  int best_of = g->n;
  if (get_int(j, root, "best_of", 1, 128, &best_of)) return;
  if (best_of != g->n) {
    srv_error_set(&j->err, SRV_E_UNSUPPORTED, "best_of", "'best_of' other than 'n' is not supported.");
    return;
  }
  if (get_bool(j, root, "echo", &g->echo)) return;
  if (get_int(j, root, "logprobs", 0, SCHED_MAX_LOGPROBS, &g->logprobs)) return;
  const cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
  if (cJSON_IsBool(lp)) {
    srv_error_set(&j->err, SRV_E_INVALID, "logprobs", "'logprobs' must be an integer in [0, 20] for completions.");
    return;
  }
  int mt_given = 1;
  g->sp.max_tokens = 16;
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
  if (mt && !cJSON_IsNull(mt) && get_int(j, root, "max_tokens", 0, 1e9, &g->sp.max_tokens)) return;
  int add_special = 1;
  if (get_bool(j, root, "add_special_tokens", &add_special)) return;
  unsigned flags = TOK_PARSE_SPECIAL | (add_special && tok_add_bos_default(s->tok) ? TOK_ADD_BOS : 0);
  if (parse_prompts(j, g, root, flags)) return;
  finish_prepare(j, g, mt_given, 0);
}

static void prepare_chat(srv_job *j, const cJSON *root) {
  srv *s = j->s;
  if (check_all_fields(j, root, 1) || check_model(j, root)) return;
  srv_gen *g = gen_new(j, SRV_KIND_CHAT);
  if (!g) return;
  j->gen = g;
  make_id(g, "chatcmpl", s);
  if (parse_common(j, g, root)) return;
  if (srv_constraint_parse(j, g, root)) return;
  char *tools_block = NULL;
  if (srv_tools_parse(j, g, root, &tools_block)) return;
  int lp = 0;
  const cJSON *lpv = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
  if (lpv && !cJSON_IsNull(lpv) && !cJSON_IsBool(lpv)) {
    srv_error_set(&j->err, SRV_E_INVALID, "logprobs", "'logprobs' must be a boolean for chat completions.");
    return;
  }
  if (get_bool(j, root, "logprobs", &lp)) return;
  int top = 0;
  const cJSON *tl = cJSON_GetObjectItemCaseSensitive(root, "top_logprobs");
  if (get_int(j, root, "top_logprobs", 0, SCHED_MAX_LOGPROBS, &top)) return;
  if (tl && !cJSON_IsNull(tl) && !lp) {
    srv_error_set(&j->err, SRV_E_INVALID, "top_logprobs", "'top_logprobs' needs 'logprobs' set to true.");
    return;
  }
  g->logprobs = lp ? top : -1;
  int mt_given = 0;
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_completion_tokens");
  const char *mtk = "max_completion_tokens";
  if (!mt || cJSON_IsNull(mt)) {
    mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    mtk = "max_tokens";
  }
  if (mt && !cJSON_IsNull(mt)) {
    if (get_int(j, root, mtk, 0, 1e9, &g->sp.max_tokens)) return;
    mt_given = 1;
  }
  int add_gen = 1;
  if (get_bool(j, root, "add_generation_prompt", &add_gen)) return;
  sb text = {0};
  int rr = render_chat(j, cJSON_GetObjectItemCaseSensitive(root, "messages"), add_gen, tools_block, &text);
  free(tools_block);
  if (rr) {
    sb_free(&text);
    return;
  }
  g->prompts = calloc(1, sizeof *g->prompts);
  if (!g->prompts || text.oom) {
    sb_free(&text);
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
    return;
  }
  g->n_prompts = 1;
  int rc = encode(j, text.p ? text.p : "", text.len, TOK_PARSE_SPECIAL, &g->prompts[0]);
  sb_free(&text);
  if (rc) return;
  finish_prepare(j, g, mt_given, 1);
}

static void do_tokenize(srv_job *j, const cJSON *root) {
  srv *s = j->s;
  static const char *const known[] = {"model", "prompt", "messages", "add_special_tokens", "add_generation_prompt",
                                      "return_token_strs", NULL};
  if (check_fields(j, root, known) || check_model(j, root)) return;
  const cJSON *pr = cJSON_GetObjectItemCaseSensitive(root, "prompt");
  const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
  srv_prompt p = {0};
  int strs = 0;
  if (get_bool(j, root, "return_token_strs", &strs)) return;
  if (cJSON_IsString(pr)) {
    int add_special = 1;
    if (get_bool(j, root, "add_special_tokens", &add_special)) return;
    unsigned fl = TOK_PARSE_SPECIAL | (add_special && tok_add_bos_default(s->tok) ? TOK_ADD_BOS : 0);
    if (encode(j, pr->valuestring, strlen(pr->valuestring), fl, &p)) return;
  } else if (msgs) {
    int add_gen = 1;
    if (get_bool(j, root, "add_generation_prompt", &add_gen)) return;
    sb text = {0};
    if (render_chat(j, msgs, add_gen, NULL, &text)) {
      sb_free(&text);
      return;
    }
    int rc = encode(j, text.p ? text.p : "", text.len, TOK_PARSE_SPECIAL, &p);
    sb_free(&text);
    if (rc) return;
  } else {
    srv_error_set(&j->err, SRV_E_INVALID, "prompt", "Send 'prompt' (a string) or 'messages'.");
    return;
  }
  sb_printf(&j->resp, "{\"count\":%d,\"max_model_len\":%d,\"tokens\":[", p.n_ids, s->max_model_len);
  for (int i = 0; i < p.n_ids; i++) sb_printf(&j->resp, i ? ",%d" : "%d", (int)p.ids[i]);
  sb_puts(&j->resp, "]");
  if (strs) {
    sb_puts(&j->resp, ",\"token_strs\":[");
    for (int i = 0; i < p.n_ids; i++) {
      const char *t = tok_token_str(s->tok, p.ids[i]);
      if (i) sb_puts(&j->resp, ",");
      if (t) sb_json_str(&j->resp, t, strlen(t));
      else sb_puts(&j->resp, "null");
    }
    sb_puts(&j->resp, "]");
  }
  sb_puts(&j->resp, "}");
  free(p.ids);
}

static void do_detokenize(srv_job *j, const cJSON *root) {
  static const char *const known[] = {"model", "tokens", NULL};
  if (check_fields(j, root, known) || check_model(j, root)) return;
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "tokens");
  if (!cJSON_IsArray(t)) {
    srv_error_set(&j->err, SRV_E_INVALID, "tokens", "'tokens' must be a list of token ids.");
    return;
  }
  srv_prompt p = {0};
  if (t->child && !is_int_array(t)) {
    srv_error_set(&j->err, SRV_E_INVALID, "tokens", "'tokens' must be a list of token ids.");
    return;
  }
  if (ids_from_array(j, t, &p, "tokens")) {
    free(p.ids);
    return;
  }
  char *txt = NULL;
  size_t n = 0;
  int rc = tok_decode(j->s->tok, p.ids, (size_t)p.n_ids, 0, &txt, &n);
  free(p.ids);
  if (rc) {
    srv_error_set(&j->err, SRV_E_INVALID, "tokens", "A token id has no token in this vocabulary.");
    return;
  }
  sb_puts(&j->resp, "{\"prompt\":");
  sb_json_str(&j->resp, txt, n);
  sb_puts(&j->resp, "}");
  free(txt);
}

void srv_job_run(srv_job *j) {
  cJSON *root = parse_body(j);
  if (!root) return;
  switch (j->route) {
  case SRV_R_COMPLETIONS: prepare_completion(j, root); break;
  case SRV_R_CHAT: prepare_chat(j, root); break;
  case SRV_R_TOKENIZE: do_tokenize(j, root); break;
  case SRV_R_DETOKENIZE: do_detokenize(j, root); break;
  default: srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "unrouted request"); break;
  }
  cJSON_Delete(root);
  if (j->resp.oom) srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
}
