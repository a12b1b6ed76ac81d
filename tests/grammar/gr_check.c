/* gr_check: runs the grammar module's matcher over JSON-lines input, for
 * the JSON-Schema-Test-Suite harness (suite.mjs) and by hand.
 *
 * Each input line: {"kind": "schema"|"regex"|"gbnf", "source": <schema
 * value or string>, "strict": bool, "texts": [string, ...]}. Each output
 * line: {"compiled": bool, "code": "...", "what": ..., "where": ...,
 * "msg": ..., "accepted": [bool, ...]} where accepted[i] says whether
 * texts[i] as bytes is a complete match. No model or vocabulary: the
 * matcher advances by bytes. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "grammar.h"

int main(int argc, char **argv) {
  FILE *in = argc > 1 ? fopen(argv[1], "r") : stdin;
  if (!in) {
    perror(argv[1]);
    return 2;
  }
  /* a 256-token byte vocabulary (the index wants one) */
  char bytes[256];
  const char *bp[256];
  uint32_t lens[256];
  for (int i = 0; i < 256; i++) bytes[i] = (char)i, bp[i] = &bytes[i], lens[i] = 1;
  gr_vocab *v;
  if (gr_vocab_new(256, bp, lens, NULL, 0, &v)) return 1;
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, in)) > 0) {
    cJSON *j = cJSON_ParseWithLength(line, (size_t)n);
    if (!j) {
      fprintf(stderr, "gr_check: bad input line\n");
      return 2;
    }
    const char *kind = cJSON_GetStringValue(cJSON_GetObjectItem(j, "kind"));
    const cJSON *src = cJSON_GetObjectItem(j, "source");
    int strict = cJSON_IsTrue(cJSON_GetObjectItem(j, "strict"));
    gr_grammar *g = NULL;
    gr_error err;
    memset(&err, 0, sizeof err);
    int rc;
    if (kind && !strcmp(kind, "schema")) {
      char *txt = cJSON_PrintUnformatted(src);
      rc = gr_compile_json_schema(txt, strlen(txt), strict ? GR_SCHEMA_STRICT_OBJECTS : 0, &g, &err);
      free(txt);
    } else if (kind && !strcmp(kind, "regex")) {
      const char *s = cJSON_GetStringValue(src);
      rc = gr_compile_regex(s, strlen(s), &g, &err);
    } else if (kind && !strcmp(kind, "gbnf")) {
      const char *s = cJSON_GetStringValue(src);
      rc = gr_compile_gbnf(s, strlen(s), &g, &err);
    } else if (kind && !strcmp(kind, "json")) {
      rc = gr_compile_json_any(strict, &g, &err);
    } else {
      fprintf(stderr, "gr_check: unknown kind\n");
      return 2;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "compiled", rc == 0);
    if (rc) {
      cJSON_AddStringToObject(o, "code", mfs_strerror(rc));
      cJSON_AddStringToObject(o, "what", err.what);
      cJSON_AddStringToObject(o, "where", err.where);
      cJSON_AddStringToObject(o, "msg", err.msg);
    } else {
      gr_index *ix;
      if (gr_index_new(g, v, &ix)) return 1;
      cJSON *acc = cJSON_AddArrayToObject(o, "accepted");
      const cJSON *texts = cJSON_GetObjectItem(j, "texts");
      for (const cJSON *t = texts ? texts->child : NULL; t; t = t->next) {
        gr_matcher m;
        gr_matcher_init(&m, ix);
        const char *s = cJSON_GetStringValue(t);
        int ok = s && gr_matcher_accept_bytes(&m, s, strlen(s)) == 0 && gr_matcher_complete(&m);
        cJSON_AddItemToArray(acc, cJSON_CreateBool(ok));
      }
      gr_index_free(ix);
      gr_grammar_unref(g);
    }
    char *out = cJSON_PrintUnformatted(o);
    puts(out);
    fflush(stdout);
    free(out);
    cJSON_Delete(o);
    cJSON_Delete(j);
  }
  free(line);
  gr_vocab_free(v);
  return 0;
}
