/* srv_struct.c: structured outputs on the request side. Reads which
 * constraint a request asks for (OpenAI's response_format; vLLM's
 * structured_outputs and the older guided_json / guided_regex /
 * guided_choice / guided_grammar), compiles it with the grammar module
 * (grammar.h) and hands the scheduler a gr_index. Runs on the worker pool,
 * never on the loop thread.
 *
 * Compiled constraints are cached by their text (kind + source): a repeated
 * schema costs a lookup, and the index's lazily built matcher states and
 * masks carry over from one request to the next. The cache holds one
 * reference per entry; each request holds its own (srv_gen_free drops it).
 * A constraint the grammar module cannot honour exactly is a 400 naming
 * the keyword and its place, never an unconstrained answer. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "srv_int.h"

#define GCACHE_N 64

typedef struct gent {
  char *key;
  size_t klen;
  gr_index *ix;
  uint64_t used;
} gent;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static gent g_cache[GCACHE_N];
static uint64_t g_clock;

int srv_grammar_init(srv *s) {
  int V = s->info->vocab;
  const char **bytes = calloc((size_t)V, sizeof *bytes);
  uint32_t *lens = calloc((size_t)V, sizeof *lens);
  if (!bytes || !lens) {
    free(bytes);
    free(lens);
    return MFS_ENOMEM;
  }
  int32_t tv = tok_vocab_size(s->tok);
  for (int32_t i = 0; i < V && i < tv; i++) {
    if (tok_is_special(s->tok, i)) continue;
    size_t n;
    const char *b = tok_token_bytes(s->tok, i, &n);
    if (b && n) {
      bytes[i] = b;
      lens[i] = (uint32_t)n;
    }
  }
  int rc = gr_vocab_new(V, bytes, lens, s->eos, s->n_eos, &s->gvocab);
  free(bytes);
  free(lens);
  return rc;
}

void srv_grammar_deinit(srv *s) {
  pthread_mutex_lock(&g_mu);
  for (int i = 0; i < GCACHE_N; i++) {
    free(g_cache[i].key);
    gr_index_unref(g_cache[i].ix);
    memset(&g_cache[i], 0, sizeof g_cache[i]);
  }
  pthread_mutex_unlock(&g_mu);
  gr_vocab_free(s->gvocab);
  s->gvocab = NULL;
}

/* kind: 'j' schema, 'o' any object, 'r' regex, 'c' choice (NUL-separated), 'g' GBNF, 't' tools */
static gr_index *cache_get(const char *key, size_t klen) {
  gr_index *ix = NULL;
  pthread_mutex_lock(&g_mu);
  for (int i = 0; i < GCACHE_N; i++)
    if (g_cache[i].key && g_cache[i].klen == klen && !memcmp(g_cache[i].key, key, klen)) {
      ix = g_cache[i].ix;
      gr_index_ref(ix);
      g_cache[i].used = ++g_clock;
      break;
    }
  pthread_mutex_unlock(&g_mu);
  return ix;
}

static void cache_put(const char *key, size_t klen, gr_index *ix) {
  char *k = malloc(klen ? klen : 1);
  if (!k) return;
  memcpy(k, key, klen);
  pthread_mutex_lock(&g_mu);
  int slot = 0;
  for (int i = 0; i < GCACHE_N; i++) {
    if (!g_cache[i].key) {
      slot = i;
      break;
    }
    if (g_cache[i].used < g_cache[slot].used) slot = i;
  }
  free(g_cache[slot].key);
  gr_index_unref(g_cache[slot].ix);
  gr_index_ref(ix);
  g_cache[slot] = (gent){k, klen, ix, ++g_clock};
  pthread_mutex_unlock(&g_mu);
}

/* Compiles (or finds) the constraint; 0 and *out, or -1 with j->err set. */
int srv_constraint_compile(srv_job *j, char kind, const char *src, size_t len, const char *const *choices,
                           const size_t *clens, int nchoices, const gr_tool *tools, int ntools, int parallel,
                           const char *param, gr_index **out) {
  srv *s = j->s;
  *out = NULL;
  /* the cache key: kind, then the text */
  sb key = {0};
  sb_put(&key, &kind, 1);
  if (kind == 'c')
    for (int i = 0; i < nchoices; i++) {
      sb_put(&key, choices[i], clens[i]);
      sb_put(&key, "", 1);
    }
  else if (kind == 't') {
    sb_printf(&key, "%d|", parallel);
    for (int i = 0; i < ntools; i++) {
      sb_puts(&key, tools[i].name);
      sb_put(&key, "", 1);
      if (tools[i].params_json) sb_put(&key, tools[i].params_json, tools[i].params_len);
      sb_put(&key, "", 1);
    }
  } else if (src)
    sb_put(&key, src, len);
  if (key.oom) {
    sb_free(&key);
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
    return -1;
  }
  gr_index *ix = cache_get(key.p, key.len);
  if (ix) {
    sb_free(&key);
    *out = ix;
    return 0;
  }
  gr_grammar *g = NULL;
  gr_error err;
  memset(&err, 0, sizeof err);
  int rc;
  switch (kind) {
  case 'j': rc = gr_compile_json_schema(src, len, GR_SCHEMA_STRICT_OBJECTS, &g, &err); break;
  case 'o': rc = gr_compile_json_any(1, &g, &err); break;
  case 'r': rc = gr_compile_regex(src, len, &g, &err); break;
  case 'g': rc = gr_compile_gbnf(src, len, &g, &err); break;
  case 'c': rc = gr_compile_choice(choices, clens, nchoices, &g, &err); break;
  case 't': rc = gr_compile_tool_calls(tools, ntools, SRV_TOOL_OPEN "\n", "\n" SRV_TOOL_CLOSE, "\n", parallel, &g, &err); break;
  default: rc = MFS_EINVAL;
  }
  if (rc) {
    sb_free(&key);
    if (rc == MFS_ENOMEM) srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory compiling the constraint");
    else
      srv_error_set(&j->err, rc == MFS_EUNSUPPORTED ? SRV_E_UNSUPPORTED : SRV_E_INVALID, param, "Invalid %s: %s",
                    param, err.msg[0] ? err.msg : mfs_strerror(rc));
    return -1;
  }
  rc = gr_index_new(g, s->gvocab, &ix);
  gr_grammar_unref(g);
  if (rc) {
    sb_free(&key);
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory compiling the constraint");
    return -1;
  }
  cache_put(key.p, key.len, ix);
  sb_free(&key);
  *out = ix;
  return 0;
}

static int one_constraint(srv_job *j, const char **seen, const char *name) {
  if (*seen) {
    srv_error_set(&j->err, SRV_E_INVALID, name, "Only one structured output constraint may be given: '%s' and '%s'.",
                  *seen, name);
    return -1;
  }
  *seen = name;
  return 0;
}

/* A schema given as an object or as a JSON string. */
static int schema_text(srv_job *j, const cJSON *v, const char *param, char **out, size_t *len) {
  if (cJSON_IsString(v)) {
    cJSON *p = cJSON_Parse(v->valuestring);
    if (!p) {
      srv_error_set(&j->err, SRV_E_INVALID, param, "'%s' is a string that is not a JSON schema.", param);
      return -1;
    }
    *out = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
  } else if (cJSON_IsObject(v) || cJSON_IsBool(v))
    *out = cJSON_PrintUnformatted(v);
  else {
    srv_error_set(&j->err, SRV_E_INVALID, param, "'%s' must be a JSON schema (an object).", param);
    return -1;
  }
  if (!*out) {
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
    return -1;
  }
  *len = strlen(*out);
  return 0;
}

static int choice_list(srv_job *j, const cJSON *v, const char *param, const char ***ch, size_t **cl, int *n) {
  if (!cJSON_IsArray(v) || !v->child) {
    srv_error_set(&j->err, SRV_E_INVALID, param, "'%s' must be a non-empty array of strings.", param);
    return -1;
  }
  int k = cJSON_GetArraySize(v);
  *ch = calloc((size_t)k, sizeof **ch);
  *cl = calloc((size_t)k, sizeof **cl);
  if (!*ch || !*cl) {
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
    return -1;
  }
  int i = 0;
  for (const cJSON *e = v->child; e; e = e->next, i++) {
    if (!cJSON_IsString(e)) {
      srv_error_set(&j->err, SRV_E_INVALID, param, "'%s' must be a non-empty array of strings.", param);
      return -1;
    }
    (*ch)[i] = e->valuestring;
    (*cl)[i] = strlen(e->valuestring);
  }
  *n = k;
  return 0;
}

int srv_constraint_parse(srv_job *j, srv_gen *g, const struct cJSON *root) {
  const char *seen = NULL;
  char kind = 0;
  char *owned = NULL;
  const char *src = NULL;
  size_t len = 0;
  const char **ch = NULL;
  size_t *cl = NULL;
  int nch = 0;
  const char *param = NULL;
  int rc = -1;
  const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
  if (rf && !cJSON_IsNull(rf)) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (!cJSON_IsObject(rf) || !cJSON_IsString(t)) {
      srv_error_set(&j->err, SRV_E_INVALID, "response_format", "'response_format' must be an object with a 'type'.");
      goto out;
    }
    if (!strcmp(t->valuestring, "json_object")) {
      if (one_constraint(j, &seen, "response_format")) goto out;
      kind = 'o';
      param = "response_format";
    } else if (!strcmp(t->valuestring, "json_schema")) {
      const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
      const cJSON *sch = js ? cJSON_GetObjectItemCaseSensitive(js, "schema") : NULL;
      const cJSON *nm = js ? cJSON_GetObjectItemCaseSensitive(js, "name") : NULL;
      if (!cJSON_IsObject(js) || (nm && !cJSON_IsString(nm))) {
        srv_error_set(&j->err, SRV_E_INVALID, "response_format",
                      "response_format of type 'json_schema' needs a 'json_schema' object with a 'name' and a 'schema'.");
        goto out;
      }
      if (one_constraint(j, &seen, "response_format")) goto out;
      param = "response_format";
      if (!sch) kind = 'o'; /* OpenAI: no schema means any JSON object */
      else {
        if (schema_text(j, sch, "response_format", &owned, &len)) goto out;
        kind = 'j';
        src = owned;
      }
    } else if (strcmp(t->valuestring, "text")) {
      srv_error_set(&j->err, SRV_E_INVALID, "response_format",
                    "response_format type '%s' is not one of 'text', 'json_object', 'json_schema'.", t->valuestring);
      goto out;
    }
  }
  /* vLLM: structured_outputs {json | regex | choice | grammar | json_object} */
  const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "structured_outputs");
  if (so && !cJSON_IsNull(so)) {
    if (!cJSON_IsObject(so)) {
      srv_error_set(&j->err, SRV_E_INVALID, "structured_outputs", "'structured_outputs' must be an object.");
      goto out;
    }
    for (const cJSON *e = so->child; e; e = e->next) {
      const char *k = e->string;
      if (cJSON_IsNull(e)) continue;
      if (!strcmp(k, "json")) {
        if (one_constraint(j, &seen, "structured_outputs.json") || schema_text(j, e, "structured_outputs", &owned, &len))
          goto out;
        kind = 'j', src = owned, param = "structured_outputs";
      } else if (!strcmp(k, "json_object")) {
        if (!cJSON_IsBool(e)) goto bad_so;
        if (cJSON_IsFalse(e)) continue;
        if (one_constraint(j, &seen, "structured_outputs.json_object")) goto out;
        kind = 'o', param = "structured_outputs";
      } else if (!strcmp(k, "regex") || !strcmp(k, "grammar")) {
        if (!cJSON_IsString(e)) goto bad_so;
        if (one_constraint(j, &seen, !strcmp(k, "regex") ? "structured_outputs.regex" : "structured_outputs.grammar"))
          goto out;
        kind = k[0] == 'r' ? 'r' : 'g', src = e->valuestring, len = strlen(src), param = "structured_outputs";
      } else if (!strcmp(k, "choice")) {
        if (one_constraint(j, &seen, "structured_outputs.choice") ||
            choice_list(j, e, "structured_outputs", &ch, &cl, &nch))
          goto out;
        kind = 'c', param = "structured_outputs";
      } else if (!strcmp(k, "disable_any_whitespace") || !strcmp(k, "disable_additional_properties") ||
                 !strcmp(k, "disable_fallback")) {
        /* what we do anyway: compact JSON, no extra members, no fallback */
        if (!cJSON_IsBool(e)) goto bad_so;
      } else {
        srv_error_set(&j->err, SRV_E_UNSUPPORTED, "structured_outputs", "structured_outputs.%s is not supported.", k);
        goto out;
      }
    }
  }
  /* the older guided_* fields */
  static const char *const guided[] = {"guided_json", "guided_regex", "guided_choice", "guided_grammar", NULL};
  for (int i = 0; guided[i]; i++) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, guided[i]);
    if (!e || cJSON_IsNull(e)) continue;
    if (one_constraint(j, &seen, guided[i])) goto out;
    param = guided[i];
    if (i == 0) {
      if (schema_text(j, e, guided[i], &owned, &len)) goto out;
      kind = 'j', src = owned;
    } else if (i == 2) {
      if (choice_list(j, e, guided[i], &ch, &cl, &nch)) goto out;
      kind = 'c';
    } else {
      if (!cJSON_IsString(e)) {
        srv_error_set(&j->err, SRV_E_INVALID, guided[i], "'%s' must be a string.", guided[i]);
        goto out;
      }
      kind = i == 1 ? 'r' : 'g', src = e->valuestring, len = strlen(src);
    }
  }
  const cJSON *ws = cJSON_GetObjectItemCaseSensitive(root, "guided_whitespace_pattern");
  if (ws && !cJSON_IsNull(ws)) {
    srv_error_set(&j->err, SRV_E_UNSUPPORTED, "guided_whitespace_pattern",
                  "'guided_whitespace_pattern' is not supported (JSON is written without whitespace).");
    goto out;
  }
  const cJSON *be = cJSON_GetObjectItemCaseSensitive(root, "guided_decoding_backend");
  if (be && !cJSON_IsNull(be) && !cJSON_IsString(be)) {
    srv_error_set(&j->err, SRV_E_INVALID, "guided_decoding_backend", "'guided_decoding_backend' must be a string.");
    goto out;
  }
  if (!kind) {
    rc = 0;
    goto out;
  }
  if (srv_constraint_compile(j, kind, src, len, ch, cl, nch, NULL, 0, 0, param, &g->sp.constraint)) goto out;
  rc = 0;
  goto out;
bad_so:
  srv_error_set(&j->err, SRV_E_INVALID, "structured_outputs", "structured_outputs has a field of the wrong type.");
out:
  cJSON_free(owned);
  free(ch);
  free(cl);
  return rc;
}

/* ---- tools ---- */

/* Reads tools / tool_choice / parallel_tool_calls. With tools in use, writes
 * the block the chat template puts before the conversation into *block
 * (malloc'd) and, for tool_choice "required" or a named function, the
 * constraint that makes the output calls whose arguments match the
 * parameters' schema. 0, or -1 with j->err set. */
int srv_tools_parse(srv_job *j, srv_gen *g, const struct cJSON *root, char **block) {
  *block = NULL;
  const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
  const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
  const cJSON *ptc = cJSON_GetObjectItemCaseSensitive(root, "parallel_tool_calls");
  int parallel = 1;
  if (ptc && !cJSON_IsNull(ptc)) {
    if (!cJSON_IsBool(ptc)) {
      srv_error_set(&j->err, SRV_E_INVALID, "parallel_tool_calls", "'parallel_tool_calls' must be a boolean.");
      return -1;
    }
    parallel = cJSON_IsTrue(ptc);
  }
  int n = 0;
  if (tools && !cJSON_IsNull(tools)) {
    if (!cJSON_IsArray(tools)) {
      srv_error_set(&j->err, SRV_E_INVALID, "tools", "'tools' must be an array.");
      return -1;
    }
    n = cJSON_GetArraySize(tools);
    if (n > 128) {
      srv_error_set(&j->err, SRV_E_INVALID, "tools", "At most 128 tools may be given (%d were).", n);
      return -1;
    }
  }
  /* tool_choice: none | auto | required | {"type":"function","function":{"name"}} */
  enum { TC_AUTO, TC_NONE, TC_REQUIRED, TC_NAMED } mode = n ? TC_AUTO : TC_NONE;
  const char *named = NULL;
  if (tc && !cJSON_IsNull(tc)) {
    if (cJSON_IsString(tc)) {
      if (!strcmp(tc->valuestring, "none")) mode = TC_NONE;
      else if (!strcmp(tc->valuestring, "auto")) mode = n ? TC_AUTO : TC_NONE;
      else if (!strcmp(tc->valuestring, "required")) mode = TC_REQUIRED;
      else {
        srv_error_set(&j->err, SRV_E_INVALID, "tool_choice", "'tool_choice' must be none, auto, required or a function.");
        return -1;
      }
    } else if (cJSON_IsObject(tc)) {
      const cJSON *f = cJSON_GetObjectItemCaseSensitive(tc, "function");
      const cJSON *nm = f ? cJSON_GetObjectItemCaseSensitive(f, "name") : NULL;
      if (!cJSON_IsString(nm)) {
        srv_error_set(&j->err, SRV_E_INVALID, "tool_choice",
                      "'tool_choice' as an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}.");
        return -1;
      }
      mode = TC_NAMED;
      named = nm->valuestring;
    } else {
      srv_error_set(&j->err, SRV_E_INVALID, "tool_choice", "'tool_choice' must be a string or an object.");
      return -1;
    }
    if ((mode == TC_REQUIRED || mode == TC_NAMED) && !n) {
      srv_error_set(&j->err, SRV_E_INVALID, "tool_choice", "'tool_choice' asks for a tool call but no 'tools' were given.");
      return -1;
    }
  }
  if (!n || mode == TC_NONE) return 0;
  gr_tool *gt = calloc((size_t)n, sizeof *gt);
  char **texts = calloc((size_t)n, sizeof *texts);
  sb blk = {0};
  int rc = -1, ng = 0, found = 0;
  if (!gt || !texts) {
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
    goto out;
  }
  sb_puts(&blk, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
  int i = 0;
  for (const cJSON *t = tools->child; t; t = t->next, i++) {
    char param[32];
    snprintf(param, sizeof param, "tools[%d]", i);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(t, "type");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
    const cJSON *nm = f ? cJSON_GetObjectItemCaseSensitive(f, "name") : NULL;
    const cJSON *pa = f ? cJSON_GetObjectItemCaseSensitive(f, "parameters") : NULL;
    if (!cJSON_IsObject(t) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "function") || !cJSON_IsObject(f) ||
        !cJSON_IsString(nm) || !nm->valuestring[0] || (pa && !cJSON_IsNull(pa) && !cJSON_IsObject(pa))) {
      srv_error_set(&j->err, SRV_E_INVALID, param,
                    "%s must be {\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": {...}}}.", param);
      goto out;
    }
    for (int k = 0; k < i; k++)
      if (!strcmp(gt[k].name, nm->valuestring)) {
        srv_error_set(&j->err, SRV_E_INVALID, param, "Two tools are named '%s'.", nm->valuestring);
        goto out;
      }
    char *fj = cJSON_PrintUnformatted(t);
    if (fj) {
      sb_puts(&blk, "\n");
      sb_puts(&blk, fj);
      cJSON_free(fj);
    }
    gt[i].name = nm->valuestring;
    if (pa && !cJSON_IsNull(pa)) {
      texts[i] = cJSON_PrintUnformatted(pa);
      gt[i].params_json = texts[i];
      gt[i].params_len = texts[i] ? strlen(texts[i]) : 0;
    }
    ng = i + 1;
    if (named && !strcmp(named, nm->valuestring)) found = i + 1;
  }
  sb_puts(&blk, "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
                "\"arguments\": <args-json-object>}\n</tool_call>");
  if (named && !found) {
    srv_error_set(&j->err, SRV_E_INVALID, "tool_choice", "tool_choice names '%s', which is not among the tools.", named);
    goto out;
  }
  if (mode == TC_REQUIRED || mode == TC_NAMED) {
    if (g->sp.constraint) {
      srv_error_set(&j->err, SRV_E_INVALID, "tool_choice",
                    "A required tool call cannot be combined with another structured output constraint.");
      goto out;
    }
    const gr_tool *use = named ? &gt[found - 1] : gt;
    if (srv_constraint_compile(j, 't', NULL, 0, NULL, NULL, 0, use, named ? 1 : ng, named ? 0 : parallel, "tools",
                               &g->sp.constraint))
      goto out;
  }
  g->tools_on = 1;
  if (blk.oom) {
    srv_error_set(&j->err, SRV_E_INTERNAL, NULL, "out of memory");
    goto out;
  }
  *block = sb_take(&blk);
  rc = 0;
out:
  sb_free(&blk);
  for (int k = 0; texts && k < n; k++) cJSON_free(texts[k]);
  free(texts);
  free(gt);
  return rc;
}

/* Splits generated text into content and tool calls: every
 * <tool_call>{"name": ..., "arguments": {...}}</tool_call> block that parses
 * becomes a call (arguments re-written compactly); the rest, trimmed, is
 * content. Returns the number of calls; *calls (a cJSON array of
 * {"name","arguments"}, or NULL) and *content belong to the caller. */
int srv_tools_split(const char *text, size_t len, sb *content, struct cJSON **calls) {
  static const char open[] = SRV_TOOL_OPEN, close[] = SRV_TOOL_CLOSE;
  *calls = NULL;
  size_t i = 0;
  int n = 0;
  while (i < len) {
    const char *o = memmem(text + i, len - i, open, sizeof open - 1);
    if (!o) break;
    const char *body = o + sizeof open - 1;
    const char *c = memmem(body, (size_t)(text + len - body), close, sizeof close - 1);
    if (!c) break;
    cJSON *j = cJSON_ParseWithLength(body, (size_t)(c - body));
    const cJSON *nm = j ? cJSON_GetObjectItemCaseSensitive(j, "name") : NULL;
    const cJSON *ar = j ? cJSON_GetObjectItemCaseSensitive(j, "arguments") : NULL;
    if (cJSON_IsString(nm) && (cJSON_IsObject(ar) || !ar)) {
      if (!*calls) *calls = cJSON_CreateArray();
      cJSON *call = cJSON_CreateObject();
      cJSON_AddStringToObject(call, "name", nm->valuestring);
      char *a = ar ? cJSON_PrintUnformatted(ar) : NULL;
      cJSON_AddStringToObject(call, "arguments", a ? a : "{}");
      cJSON_free(a);
      cJSON_AddItemToArray(*calls, call);
      sb_put(content, text + i, (size_t)(o - (text + i)));
      n++;
    } else
      sb_put(content, text + i, (size_t)(c + sizeof close - 1 - (text + i)));
    cJSON_Delete(j);
    i = (size_t)(c + sizeof close - 1 - text);
  }
  if (i < len) sb_put(content, text + i, len - i);
  if (n) { /* trim the content around the calls */
    size_t a = 0, b = content->len;
    while (a < b && (content->p[a] == ' ' || content->p[a] == '\n' || content->p[a] == '\t')) a++;
    while (b > a && (content->p[b - 1] == ' ' || content->p[b - 1] == '\n' || content->p[b - 1] == '\t')) b--;
    if (content->p) {
      memmove(content->p, content->p + a, b - a);
      content->len = b - a;
    }
  }
  return n;
}
