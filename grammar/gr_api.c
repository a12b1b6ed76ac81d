/* gr_api.c: the public compile functions: each runs a front end on a
 * builder and lowers the result (gr_build.c). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "gr_int.h"

/* root ::= body; finish; map a front end's failure to its code. */
static int finish_with(gr_builder *b, gx *body, gr_grammar **out) {
  *out = NULL;
  if (!body) {
    int rc = b->oom ? MFS_ENOMEM : b->failed ? b->fail_code : MFS_EINVAL;
    if (!b->failed) gb_fail(b, rc, "", "", "the constraint could not be compiled");
    gb_deinit(b);
    return rc;
  }
  int root = gb_rule(b, "root");
  if (root < 0) {
    gb_deinit(b);
    return MFS_ENOMEM;
  }
  gb_set(b, root, body);
  int rc = gb_finish(b, root, out);
  gb_deinit(b);
  return rc;
}

int gr_compile_regex(const char *re, size_t len, gr_grammar **out, gr_error *err) {
  gr_builder b;
  gb_init(&b, err);
  gx *x = gr_regex_gx(&b, re, len, 0, 0);
  int rc = finish_with(&b, x, out);
  return rc;
}

int gr_compile_gbnf(const char *src, size_t len, gr_grammar **out, gr_error *err) {
  gr_builder b;
  gb_init(&b, err);
  *out = NULL;
  int root = -1;
  int rc = gr_gbnf_parse(&b, src, len, &root);
  if (!rc) rc = gb_finish(&b, root, out);
  gb_deinit(&b);
  return rc;
}

int gr_compile_choice(const char *const *choices, const size_t *lens, int n, gr_grammar **out, gr_error *err) {
  gr_builder b;
  gb_init(&b, err);
  if (n <= 0) {
    gb_fail(&b, MFS_EINVAL, "", "choice", "the list of choices is empty");
    gb_deinit(&b);
    *out = NULL;
    return MFS_EINVAL;
  }
  gx **k = gb_alloc(&b, (size_t)n * sizeof *k);
  if (!k) return finish_with(&b, NULL, out);
  for (int i = 0; i < n; i++) k[i] = gx_lit(&b, choices[i], lens[i]);
  return finish_with(&b, gx_alt(&b, k, n), out);
}

int gr_compile_json_any(int object_only, gr_grammar **out, gr_error *err) {
  gr_builder b;
  gb_init(&b, err);
  return finish_with(&b, object_only ? gr_json_object_gx(&b) : gr_json_value_gx(&b), out);
}

static gx *schema_text_gx(gr_builder *b, const char *json, size_t len, unsigned flags, const char *where) {
  cJSON *root = cJSON_ParseWithLength(json, len);
  if (!root) {
    gb_fail(b, MFS_EINVAL, where, "schema", "the schema%s%s is not valid JSON", where[0] ? " at " : "", where);
    return NULL;
  }
  gx *x = gr_schema_gx(b, root, flags);
  cJSON_Delete(root);
  return x;
}

int gr_compile_json_schema(const char *json, size_t len, unsigned flags, gr_grammar **out, gr_error *err) {
  gr_builder b;
  gb_init(&b, err);
  gx *x = schema_text_gx(&b, json, len, flags, "");
  int rc = finish_with(&b, x, out);
  if (rc == MFS_EINVAL && err && !strcmp(err->what, "empty language"))
    snprintf(err->msg, sizeof err->msg, "the schema accepts no value at all");
  return rc;
}

/* A JSON string literal for a tool's name ("name" in the call). */
static gx *json_str_lit(gr_builder *b, const char *s) {
  cJSON *j = cJSON_CreateString(s);
  char *p = j ? cJSON_PrintUnformatted(j) : NULL;
  gx *x = p ? gx_lits(b, p) : NULL;
  cJSON_free(p);
  cJSON_Delete(j);
  if (!x) b->oom = 1;
  return x;
}

int gr_compile_tool_calls(const gr_tool *tools, int n, const char *open, const char *close, const char *sep,
                          int parallel, gr_grammar **out, gr_error *err) {
  gr_builder b;
  gb_init(&b, err);
  *out = NULL;
  if (n <= 0) {
    gb_fail(&b, MFS_EINVAL, "", "tools", "no tools to call");
    gb_deinit(&b);
    return MFS_EINVAL;
  }
  gx **alts = gb_alloc(&b, (size_t)n * sizeof *alts);
  if (!alts) return finish_with(&b, NULL, out);
  for (int i = 0; i < n; i++) {
    char where[96];
    snprintf(where, sizeof where, "tools[%d].function.parameters", i);
    gx *args = tools[i].params_json
                   ? schema_text_gx(&b, tools[i].params_json, tools[i].params_len, GR_SCHEMA_STRICT_OBJECTS, where)
                   : gr_json_object_gx(&b);
    if (!args) {
      if (err && !strstr(err->where, "tools[")) { /* prefix the location with the tool */
        char w[sizeof where + sizeof err->where];
        snprintf(w, sizeof w, "%s%s", where, err->where[0] == '#' ? err->where + 1 : err->where);
        size_t n = strnlen(w, sizeof err->where - 1); /* cut to fit */
        memcpy(err->where, w, n);
        err->where[n] = 0;
      }
      return finish_with(&b, NULL, out);
    }
    gx *k[5] = {gx_lits(&b, "{\"name\":"), json_str_lit(&b, tools[i].name), gx_lits(&b, ",\"arguments\":"), args,
                gx_lits(&b, "}")};
    alts[i] = gx_seq(&b, k, 5);
  }
  gx *call = gx_seq3(&b, gx_lits(&b, open ? open : ""), gx_alt(&b, alts, n), gx_lits(&b, close ? close : ""));
  gx *body = call;
  if (parallel) body = gx_seq2(&b, call, gx_star(&b, gx_seq2(&b, gx_lits(&b, sep ? sep : ""), call)));
  return finish_with(&b, body, out);
}
