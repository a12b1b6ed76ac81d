/* test_tokenizer.c: unit tests of the tokenizer on small tokenizer.json
 * files written here: byte-level and sentencepiece-style BPE, Split
 * behaviours, Digits, added tokens, malformed files, streaming decode on
 * random ids, random bytes into encode, concurrent encodes, and the UTF-8
 * well-formedness scan (tok_utf8_valid_prefix) against an independent decoder. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "tokenizer.h"

static int failures;
#define CHECK(c)                                                        \
  do {                                                                  \
    if (!(c)) {                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
      failures++;                                                       \
    }                                                                   \
  } while (0)

/* tok_utf8_valid_prefix against an independent decoder: a byte string is
 * well-formed iff it splits into code points U+0000..U+10FFFF minus the
 * surrogates, each in its shortest form; the decoder below re-derives the
 * shortest length from the decoded value rather than from Table 3-7's byte
 * ranges, and the first bad offset is the start of the first sequence that
 * fails. Every string of up to 3 bytes over an alphabet that covers each
 * boundary of the table, plus hand-picked cases. */
static long oracle(const unsigned char *u, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = u[i];
    int len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (!len || i + (size_t)len > n) return (long)i;
    unsigned long cp = len == 1 ? c : c & (0xffu >> (len + 1));
    for (int k = 1; k < len; k++) {
      if ((u[i + k] & 0xc0) != 0x80) return (long)i;
      cp = cp << 6 | (u[i + k] & 0x3f);
    }
    int shortest = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (shortest != len || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return (long)i;
    i += (size_t)len;
  }
  return -1;
}

/* the first bad offset as tok_utf8_valid_prefix gives it, -1 for none */
static long first_bad(const void *s, size_t n) {
  size_t p = tok_utf8_valid_prefix(s, n);
  return p == n ? -1 : (long)p;
}

static void test_utf8_valid_prefix(void) {
  static const unsigned char alpha[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2,
                                        0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff};
  const int A = (int)sizeof alpha;
  long checked = 0, bad = 0;
  unsigned char buf[4];
  for (int len = 1; len <= 3; len++) {
    long total = 1;
    for (int k = 0; k < len; k++) total *= A;
    for (long idx = 0; idx < total; idx++) {
      long x = idx;
      for (int k = 0; k < len; k++) buf[k] = alpha[x % A], x /= A;
      long want = oracle(buf, (size_t)len), got = first_bad(buf, (size_t)len);
      checked++;
      if (want != got) {
        if (bad++ < 5) fprintf(stderr, "utf8 len %d %02x %02x %02x: got %ld want %ld\n", len, buf[0], buf[1], buf[2], got, want);
      }
    }
  }
  /* 4-byte forms: every lead byte of the alphabet with boundary continuations */
  static const unsigned char cont[] = {0x7f, 0x80, 0x8f, 0x90, 0xbf, 0xc0};
  for (int a = 0; a < A; a++)
    for (int b = 0; b < 6; b++)
      for (int c = 0; c < 6; c++)
        for (int d = 0; d < 6; d++) {
          buf[0] = alpha[a], buf[1] = cont[b], buf[2] = cont[c], buf[3] = cont[d];
          checked++;
          if (oracle(buf, 4) != first_bad(buf, 4) && bad++ < 10)
            fprintf(stderr, "utf8 4 bytes %02x %02x %02x %02x\n", buf[0], buf[1], buf[2], buf[3]);
        }
  CHECK(bad == 0);
  CHECK(checked > 15000);
  /* the oracle is not trivially agreeable: hand-picked answers */
  CHECK(first_bad("ab\xc3\xa9", 4) == -1);          /* e-acute */
  CHECK(first_bad("\xf0\x9f\x98\x80", 4) == -1);    /* U+1F600 */
  CHECK(first_bad("a\xc0\xaf", 3) == 1);             /* overlong '/' */
  CHECK(first_bad("ab\xed\xa0\x80", 5) == 2);        /* a surrogate */
  CHECK(first_bad("\xf4\x90\x80\x80", 4) == 0);     /* U+110000 */
  CHECK(first_bad("abc\xe2\x82", 5) == 3);           /* cut short */
  CHECK(first_bad("x\x80", 2) == 1);                 /* a lone continuation */
  CHECK(first_bad("", 0) == -1);
}

static char tmpdir[256];

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

static void write_file(const char *name, const char *text) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
}

/* writes json as tokenizer.json (and config if not NULL) and loads it */
static int load(const char *json, const char *config, tok_tokenizer **t, char *err, size_t errlen) {
  write_file("tokenizer.json", json);
  char p[512];
  snprintf(p, sizeof p, "%s/tokenizer_config.json", tmpdir);
  unlink(p);
  if (config) write_file("tokenizer_config.json", config);
  return tok_new(tmpdir, t, err, errlen);
}

/* ids of text as a string "1 2 3" */
static const char *enc(const tok_tokenizer *t, const char *text, unsigned flags) {
  static char out[4096];
  int32_t *ids;
  size_t n, k = 0;
  out[0] = 0;
  if (tok_encode(t, text, strlen(text), flags, &ids, &n)) return "ERROR";
  for (size_t i = 0; i < n && k < sizeof out - 16; i++)
    k += (size_t)snprintf(out + k, sizeof out - k, "%s%d", i ? " " : "", ids[i]);
  free(ids);
  return out;
}

/* ---- a byte-level model: ids 0..255 are the bytes, then merges ---- */

static void utf8_put(char **p, unsigned cp) {
  if (cp < 0x80) *(*p)++ = (char)cp;
  else {
    *(*p)++ = (char)(0xC0 | cp >> 6);
    *(*p)++ = (char)(0x80 | (cp & 0x3F));
  }
}

static void bl_char(int b, char *out) { /* GPT-2 byte -> char, as UTF-8 */
  int n = 0;
  for (int x = 0; x < 256; x++) {
    int keep = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
    unsigned cp = keep ? (unsigned)x : 256u + (unsigned)n++;
    if (x == b) {
      char *p = out;
      utf8_put(&p, cp);
      *p = 0;
      return;
    }
  }
}

/* bytes -> byte-level string */
static void bl_str(const char *bytes, char *out) {
  out[0] = 0;
  for (const unsigned char *p = (const unsigned char *)bytes; *p; p++) bl_char(*p, out + strlen(out));
}

static char *byte_level_json(const char *pre, const char *extra_model, const char *added) {
  cJSON *root = cJSON_CreateObject(), *vocab = cJSON_CreateObject(), *merges = cJSON_CreateArray();
  char s[64], a[64], b[64];
  for (int i = 0; i < 256; i++) {
    bl_char(i, s);
    cJSON_AddNumberToObject(vocab, s, i);
  }
  /* merges on raw bytes: "he", " t", " the", "ä" (C3 A4), "ä" + "ä", "😀" (F0 9F 98 80) */
  const char *m[][2] = {{"h", "e"}, {" ", "t"}, {" t", "he"}, {"\xC3", "\xA4"}, {"\xC3\xA4", "\xC3\xA4"},
                        {"\xF0", "\x9F"}, {"\x98", "\x80"}, {"\xF0\x9F", "\x98\x80"}, {"1", "2"}};
  int id = 256;
  for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
    char ab[160];
    bl_str(m[i][0], a);
    bl_str(m[i][1], b);
    snprintf(ab, sizeof ab, "%s%s", a, b);
    cJSON_AddNumberToObject(vocab, ab, id++);
    char pair[140];
    snprintf(pair, sizeof pair, "%s %s", a, b);
    if (i % 2) cJSON_AddItemToArray(merges, cJSON_CreateString(pair));
    else { /* the [["a","b"]] form too */
      cJSON *pr = cJSON_CreateArray();
      cJSON_AddItemToArray(pr, cJSON_CreateString(a));
      cJSON_AddItemToArray(pr, cJSON_CreateString(b));
      cJSON_AddItemToArray(merges, pr);
    }
  }
  cJSON *model = cJSON_CreateObject();
  cJSON_AddStringToObject(model, "type", "BPE");
  cJSON_AddItemToObject(model, "vocab", vocab);
  cJSON_AddItemToObject(model, "merges", merges);
  if (extra_model) {
    cJSON *x = cJSON_Parse(extra_model), *c;
    cJSON_ArrayForEach(c, x) cJSON_AddItemToObject(model, c->string, cJSON_Duplicate(c, 1));
    cJSON_Delete(x);
  }
  cJSON_AddItemToObject(root, "model", model);
  cJSON_AddItemToObject(root, "pre_tokenizer", cJSON_Parse(pre));
  cJSON_AddItemToObject(root, "decoder", cJSON_Parse("{\"type\":\"ByteLevel\"}"));
  cJSON_AddItemToObject(root, "added_tokens", cJSON_Parse(added ? added : "[]"));
  char *out = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return out;
}

#define BL_PRE "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}"
#define BL_ADDED                                                                                  \
  "[{\"id\":300,\"content\":\"<s>\",\"special\":true},{\"id\":301,\"content\":\"</s>\",\"special\":true}," \
  "{\"id\":302,\"content\":\"<s>x\",\"special\":true},{\"id\":303,\"content\":\"[tag]\",\"special\":false," \
  "\"lstrip\":true,\"rstrip\":true}]"

static void test_byte_level(void) {
  char *json = byte_level_json(BL_PRE, NULL, BL_ADDED), err[256];
  tok_tokenizer *t;
  CHECK(load(json, "{\"bos_token\":\"<s>\",\"eos_token\":{\"content\":\"</s>\"},\"add_bos_token\":true}", &t, err, sizeof err) == 0);
  free(json);
  if (!t) return;
  CHECK(tok_vocab_size(t) == 304);
  CHECK(tok_bos(t) == 300 && tok_eos(t) == 301 && tok_add_bos_default(t));
  CHECK(!strcmp(tok_token_str(t, 258), "Ġthe"));
  CHECK(tok_token_str(t, 290) == NULL && tok_token_str(t, -1) == NULL && tok_token_str(t, 304) == NULL);
  CHECK(tok_token_id(t, "Ġthe") == 258 && tok_token_id(t, "nope") == -1);
  CHECK(!strcmp(enc(t, "he the", 0), "256 258"));
  CHECK(!strcmp(enc(t, "ää", 0), "260"));
  CHECK(!strcmp(enc(t, "😀", 0), "263"));
  CHECK(!strcmp(enc(t, "", TOK_ADD_BOS), "300"));
  CHECK(!strcmp(enc(t, "", 0), ""));
  /* special tokens: longest first, only when parsing specials */
  CHECK(!strcmp(enc(t, "<s>x<s>", TOK_PARSE_SPECIAL), "302 300"));
  CHECK(!strcmp(enc(t, "<s>", 0), "60 115 62"));
  /* non-special added token always matched; lstrip/rstrip eat spaces */
  CHECK(!strcmp(enc(t, "he [tag] he", 0), "256 303 256"));
  CHECK(tok_is_special(t, 300) && !tok_is_special(t, 303) && !tok_is_special(t, 5));
  /* decode */
  int32_t ids[] = {300, 256, 258, 301, 263};
  char *out;
  size_t len;
  CHECK(tok_decode(t, ids, 5, 0, &out, &len) == 0 && !strcmp(out, "<s>he the</s>😀"));
  free(out);
  CHECK(tok_decode(t, ids, 5, TOK_SKIP_SPECIAL, &out, &len) == 0 && !strcmp(out, "he the😀"));
  free(out);
  int32_t badid[] = {5, 9999};
  CHECK(tok_decode(t, badid, 2, 0, &out, &len) == MFS_ERANGE && out == NULL);
  int32_t gap[] = {290};
  CHECK(tok_decode(t, gap, 1, 0, &out, &len) == MFS_ERANGE);
  tok_free(t);

  /* add_prefix_space */
  json = byte_level_json("{\"type\":\"ByteLevel\",\"add_prefix_space\":true}", NULL, NULL);
  CHECK(load(json, NULL, &t, err, sizeof err) == 0);
  free(json);
  if (t) {
    CHECK(!strcmp(enc(t, "the", 0), "258"));
    CHECK(tok_bos(t) == -1 && !tok_add_bos_default(t));
    tok_free(t);
  }
}

/* ---- Split behaviours, Digits: vocab with whole pieces, ignore_merges ---- */

static char *pieces_json(const char *pre) {
  static char buf[2048];
  snprintf(buf, sizeof buf,
           "{\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"a\":0,\"b\":1,\"-\":2,"
           "\"a-\":3,\"-b\":4,\"--\":5,\"1\":6,\"2\":7,\"3\":8,\"123\":9,\"a-b\":10,\"x\":11,\"a123\":12},"
           "\"merges\":[]},\"pre_tokenizer\":%s,\"decoder\":null}",
           pre);
  return buf;
}

static void test_split(void) {
  static const struct {
    const char *pre, *text, *ids;
  } cases[] = {
      {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Isolated\"}", "a-b", "0 2 1"},
      {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Removed\"}", "a-b", "0 1"},
      {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"MergedWithPrevious\"}", "a-b", "3 1"},
      {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"MergedWithNext\"}", "a-b", "0 4"},
      {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Contiguous\"}", "a--b", "0 5 1"},
      {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Isolated\"}", "a--b", "0 2 2 1"},
      {"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[ab]\"},\"behavior\":\"Removed\",\"invert\":true}", "a-b", "0 1"},
      {"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{L}\"},\"behavior\":\"MergedWithNext\",\"invert\":false}", "-a-b", "2 3 1"},
      {"{\"type\":\"Digits\",\"individual_digits\":true}", "a123", "0 6 7 8"},
      {"{\"type\":\"Digits\",\"individual_digits\":false}", "a123", "0 9"},
      {"{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},"
       "\"behavior\":\"Removed\"},{\"type\":\"Digits\",\"individual_digits\":true}]}", "a1-b", "0 6 1"},
      {"{\"type\":\"Sequence\",\"pretokenizers\":[]}", "a123", "12"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tok_tokenizer *t;
    char err[256];
    int rc = load(pieces_json(cases[i].pre), NULL, &t, err, sizeof err);
    CHECK(rc == 0);
    if (rc) {
      fprintf(stderr, "  case %zu: %s\n", i, err);
      continue;
    }
    const char *got = enc(t, cases[i].text, 0);
    if (strcmp(got, cases[i].ids)) {
      fprintf(stderr, "split case %zu (%s on '%s'): got '%s', want '%s'\n", i, cases[i].pre,
              cases[i].text, got, cases[i].ids);
      failures++;
    }
    /* no decoder: tokens joined with spaces */
    if (i == 0) {
      int32_t ids[] = {0, 2, 1};
      char *out;
      size_t len;
      CHECK(tok_decode(t, ids, 3, 0, &out, &len) == 0 && !strcmp(out, "a - b"));
      free(out);
    }
    tok_free(t);
  }
}

/* ---- sentencepiece-style: byte fallback, Prepend/Replace, Strip ---- */

#define SP_JSON                                                                                    \
  "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"}," \
  "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},"              \
  "\"pre_tokenizer\":null,"                                                                        \
  "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"}," \
  "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \"," \
  "\"start\":1,\"stop\":0}]},"                                                                     \
  "\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true}]," \
  "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"fuse_unk\":true,\"unk_token\":\"<unk>\",\"vocab\":{"

static char *sp_json(void) {
  static char buf[16384];
  int k = snprintf(buf, sizeof buf, "%s\"<unk>\":0,\"<s>\":1", SP_JSON);
  for (int b = 0; b < 256; b++) k += snprintf(buf + k, sizeof buf - (size_t)k, ",\"<0x%02X>\":%d", b, 2 + b);
  k += snprintf(buf + k, sizeof buf - (size_t)k,
                ",\"\xE2\x96\x81\":258,\"h\":259,\"i\":260,\"\xE2\x96\x81h\":261,\"\xE2\x96\x81hi\":262,"
                "\"\xC3\xA9\":263},\"merges\":[\"\xE2\x96\x81 h\",\"\xE2\x96\x81h i\"]}}");
  return buf;
}

static void test_sentencepiece(void) {
  tok_tokenizer *t;
  char err[256];
  int rc = load(sp_json(), "{\"bos_token\":\"<s>\",\"add_bos_token\":true}", &t, err, sizeof err);
  CHECK(rc == 0);
  if (rc) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  CHECK(!strcmp(enc(t, "hi hi", TOK_ADD_BOS), "1 262 262"));
  /* 😀 = F0 9F 98 80 has no token: bytes */
  CHECK(!strcmp(enc(t, "hi \xF0\x9F\x98\x80", 0), "262 258 242 161 154 130"));
  CHECK(!strcmp(enc(t, "\xC3\xA9", 0), "258 263"));
  int32_t ids[] = {1, 262, 258, 242, 161, 154, 130, 263};
  char *out;
  size_t len;
  CHECK(tok_decode(t, ids, 8, TOK_SKIP_SPECIAL, &out, &len) == 0 && !strcmp(out, "hi \xF0\x9F\x98\x80\xC3\xA9"));
  free(out);
  /* a leading space is stripped once, after skipped specials */
  int32_t two[] = {1, 258, 258, 259};
  CHECK(tok_decode(t, two, 4, TOK_SKIP_SPECIAL, &out, &len) == 0 && !strcmp(out, " h"));
  free(out);
  /* an unfinished byte sequence becomes U+FFFD */
  int32_t cut[] = {262, 242, 161};
  CHECK(tok_decode(t, cut, 3, 0, &out, &len) == 0 && !strcmp(out, "hi\xEF\xBF\xBD"));
  free(out);
  tok_free(t);
}

/* ---- streaming equals whole decode on random ids ---- */

static int valid_utf8(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = s[i];
    size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!l || i + l > n) return 0;
    for (size_t j = 1; j < l; j++)
      if ((s[i + j] & 0xC0) != 0x80) return 0;
    i += l;
  }
  return 1;
}

static void stream_random(const tok_tokenizer *t, unsigned flags) {
  int32_t V = tok_vocab_size(t);
  tok_stream *s = tok_stream_new(t, flags);
  CHECK(s != NULL);
  char *acc = malloc(1 << 16);
  int32_t ids[200];
  for (int round = 0; round < 2000; round++) {
    int n = (int)(rnd() % 40);
    for (int i = 0; i < n; i++) {
      do ids[i] = (int32_t)(rnd() % (uint32_t)V);
      while (!tok_token_str(t, ids[i]));
    }
    size_t k = 0;
    for (int i = 0; i < n; i++) {
      const char *o;
      size_t ol;
      CHECK(tok_stream_feed(s, ids[i], &o, &ol) == 0);
      if (!valid_utf8((const unsigned char *)o, ol)) {
        fprintf(stderr, "stream emitted invalid UTF-8\n");
        failures++;
      }
      memcpy(acc + k, o, ol);
      k += ol;
    }
    const char *o;
    size_t ol;
    tok_stream_flush(s, &o, &ol);
    memcpy(acc + k, o, ol);
    k += ol;
    char *whole;
    size_t wl;
    CHECK(tok_decode(t, ids, (size_t)n, flags, &whole, &wl) == 0);
    if (wl != k || memcmp(whole, acc, k)) {
      fprintf(stderr, "stream != decode in round %d\n", round);
      failures++;
    }
    CHECK(valid_utf8((const unsigned char *)whole, wl));
    free(whole);
  }
  const char *o;
  size_t ol;
  CHECK(tok_stream_feed(s, V, &o, &ol) == MFS_ERANGE && ol == 0);
  CHECK(tok_stream_feed(s, -5, &o, &ol) == MFS_ERANGE);
  free(acc);
  tok_stream_free(s);
}

static void test_stream(void) {
  tok_tokenizer *t;
  char err[256], *json = byte_level_json(BL_PRE, NULL, BL_ADDED);
  CHECK(load(json, NULL, &t, err, sizeof err) == 0);
  free(json);
  if (t) {
    stream_random(t, 0);
    stream_random(t, TOK_SKIP_SPECIAL);
    tok_free(t);
  }
  CHECK(load(sp_json(), NULL, &t, err, sizeof err) == 0);
  if (t) {
    stream_random(t, 0);
    stream_random(t, TOK_SKIP_SPECIAL);
    tok_free(t);
  }
  tok_stream_free(NULL);
  tok_free(NULL);
}

/* ---- JSON forms the vocab/merges scanner (tok_json.c) must read as cJSON does ---- */

static void test_json_forms(void) {
  tok_tokenizer *t;
  char err[256];
  /* escapes in member names and tokens, both merge forms, odd whitespace */
  const char *json =
      "{\"mod\\u0065l\" : {\"type\":\"BPE\", \"merges\" :\t[ \"a b\" ,\r\n [\"a\", \"\\u0000\"] ],"
      " \"vo\\u0063ab\":{ \"a\" :0,\"b\":1 , \"ab\":2,\"\\n\":3,\"\\u00e9\":4,\"\\ud83d\\ude00\":5,"
      "\"a\\u0000\":6,\"\\u0000\":7, \"\\\"\\\\\\/\\b\\f\\r\\t\":8 } } ,\"decoder\":null}";
  CHECK(load(json, NULL, &t, err, sizeof err) == 0);
  if (t) {
    CHECK(tok_vocab_size(t) == 9);
    CHECK(!strcmp(enc(t, "ab", 0), "2") && !strcmp(enc(t, "\n", 0), "3"));
    CHECK(tok_token_id(t, "\xC3\xA9") == 4 && tok_token_id(t, "\xF0\x9F\x98\x80") == 5);
    CHECK(tok_token_id(t, "\"\\/\b\f\r\t") == 8);
    int32_t *ids;
    size_t n;
    CHECK(tok_encode(t, "a\0a", 3, 0, &ids, &n) == 0 && n == 2 && ids[0] == 6 && ids[1] == 0);
    free(ids);
    tok_free(t);
  }
  /* a UTF-8 byte order mark before the object (cJSON skips it, and so did the loader) */
  CHECK(load("\xEF\xBB\xBF{\"model\":{\"type\":\"BPE\",\"vocab\":{\"x\":0}}}", NULL, &t, err, sizeof err) == 0);
  if (t) {
    CHECK(tok_token_id(t, "x") == 0);
    tok_free(t);
  }
  /* only the first "model" and the first "vocab" count */
  CHECK(load("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"x\":0},\"vocab\":{\"y\":0}},"
             "\"model\":{\"type\":\"BPE\",\"vocab\":{\"z\":0}}}", NULL, &t, err, sizeof err) == 0);
  if (t) {
    CHECK(tok_token_id(t, "x") == 0 && tok_token_id(t, "y") < 0 && tok_token_id(t, "z") < 0);
    tok_free(t);
  }
  /* merges in the file before the vocab; a merge half longer than any token is left out */
  size_t big = 9000;
  char *long_json = malloc(big + 256), *p = long_json;
  p += sprintf(p, "{\"model\":{\"merges\":[\"");
  memset(p, 'a', big);
  p += big;
  sprintf(p, " b\", \"a b\"], \"vocab\":{\"a\":0,\"b\":1,\"ab\":2}}}");
  CHECK(load(long_json, NULL, &t, err, sizeof err) == 0 || !fprintf(stderr, "%s\n", err));
  if (t) {
    CHECK(!strcmp(enc(t, "ab", 0), "2"));
    tok_free(t);
  }
  p = long_json + sprintf(long_json, "{\"model\":{\"merges\":[\"");
  memset(p, 'a', big);
  sprintf(p + big, "\"], \"vocab\":{\"a\":0}}}");
  CHECK(load(long_json, NULL, &t, err, sizeof err) == MFS_EFORMAT && strstr(err, "merges[0]"));
  free(long_json);
  /* nesting far deeper than any tokenizer.json: an error, not a stack overflow */
  size_t depth = 100000;
  char *deep = malloc(2 * depth + 64);
  p = deep + sprintf(deep, "{\"x\":");
  memset(p, '[', depth);
  memset(p + depth, ']', depth);
  sprintf(p + 2 * depth, ",\"model\":{}}");
  CHECK(load(deep, NULL, &t, err, sizeof err) == MFS_EFORMAT && strstr(err, "not valid JSON") &&
        strstr(err, "deep"));
  free(deep);
}

/* ---- malformed / unsupported files ---- */

static void test_malformed(void) {
  static const struct {
    const char *json, *needle;
    int rc;
  } cases[] = {
      {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}", "not valid JSON", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", "WordPiece", MFS_EUNSUPPORTED},
      {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", "Unigram", MFS_EUNSUPPORTED},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Whitespace\"}}",
       "Whitespace", MFS_EUNSUPPORTED},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Metaspace\"}}",
       "Metaspace", MFS_EUNSUPPORTED},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Split\","
       "\"pattern\":{\"Regex\":\"(a|b\"},\"behavior\":\"Isolated\"}}", "regex", MFS_EUNSUPPORTED},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"normalizer\":{\"type\":\"NFKD\"}}",
       "NFKD", MFS_EUNSUPPORTED},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"decoder\":{\"type\":\"WordPiece\"}}",
       "WordPiece", MFS_EUNSUPPORTED},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"ab\"]}}", "merges", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"}}}", "vocab", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"continuing_subword_prefix\":\"##\"}}",
       "continuing_subword_prefix", MFS_EUNSUPPORTED},
      {"[1,2]", "model", MFS_EFORMAT},
      /* read by tok_json.c: strict JSON, ids that are integers in range */
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\x01\":0}}}", "control character", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\udc00\":0}}}", "surrogate", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\ud800x\":0}}}", "surrogate", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\q\":0}}}", "escape", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":01}}}", "at byte 37", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,}}}", "not valid JSON", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1.5}}}", "id of \"a\"", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1}}}", "id of \"a\"", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999999999999999}}}", "id of \"a\"", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":[\"a\"]}}", "model.vocab is not an object", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"vocab\":{\"a\":0}}}", "model.vocab is not an object", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}}}", "empty", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}", "model.merges is not an array", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a a\",5]}}", "merges[1]", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\"]]}}", "merges[0]", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\",\"a\",\"a\"]]}}", "merges[0]", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\",1]]}}", "merges[0]", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a\\u0000\"]}}", "is not \"a b\"", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"x\":[1 2]}", "not valid JSON", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"x\":tru}", "not valid JSON", MFS_EFORMAT},
      {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"x\":1.}", "not valid JSON", MFS_EFORMAT},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tok_tokenizer *t = (tok_tokenizer *)1;
    char err[512] = "";
    int rc = load(cases[i].json, NULL, &t, err, sizeof err);
    if (rc != cases[i].rc || t != NULL || !strstr(err, cases[i].needle) || !strstr(err, "tokenizer.json")) {
      fprintf(stderr, "malformed case %zu: rc %d (want %d), err '%s' (want '%s')\n", i, rc,
              cases[i].rc, err, cases[i].needle);
      failures++;
    }
  }
  tok_tokenizer *t;
  char err[512];
  CHECK(tok_new("/nonexistent-dir", &t, err, sizeof err) == MFS_EIO && strstr(err, "tokenizer.json"));
  /* config naming a token that does not exist */
  char *json = byte_level_json(BL_PRE, NULL, NULL);
  CHECK(load(json, "{\"bos_token\":\"<nope>\"}", &t, err, sizeof err) == MFS_EFORMAT &&
        strstr(err, "tokenizer_config.json") && strstr(err, "<nope>"));
  CHECK(load(json, "{oops", &t, err, sizeof err) == MFS_EFORMAT && strstr(err, "tokenizer_config.json"));
  free(json);
}

/* ---- hostile input ---- */

static void fuzz_encode(const tok_tokenizer *t) {
  char *buf = malloc(1 << 20);
  for (int round = 0; round < 3000; round++) {
    size_t n = rnd() % (round < 2900 ? 64 : 4096);
    int mode = (int)(rnd() % 3);
    for (size_t i = 0; i < n; i++) {
      uint32_t r = rnd();
      static const char alpha[] = "a \n\t1'<s>[tag]\xC3\xA4\xF0\x9F\x98\x80\x80\xFF"; /* + its NUL */
      buf[i] = mode == 0 ? (char)r : mode == 1 ? alpha[r % sizeof alpha] : (char)(r % 128);
    }
    for (unsigned f = 0; f < 4; f++) {
      int32_t *ids;
      size_t ni;
      CHECK(tok_encode(t, buf, n, f, &ids, &ni) == 0);
      char *out;
      size_t ol;
      CHECK(tok_decode(t, ids, ni, 0, &out, &ol) == 0 && valid_utf8((unsigned char *)out, ol));
      free(out);
      free(ids);
    }
  }
  /* large: 1 MB of one letter, of spaces, of random bytes */
  const char fills[] = {'a', ' ', 0};
  for (int k = 0; k < 3; k++) {
    size_t n = 1 << 20;
    for (size_t i = 0; i < n; i++) buf[i] = fills[k] ? fills[k] : (char)rnd();
    int32_t *ids;
    size_t ni;
    CHECK(tok_encode(t, buf, n, 0, &ids, &ni) == 0 && ni > 0);
    free(ids);
  }
  int32_t *ids;
  size_t ni;
  CHECK(tok_encode(t, NULL, 0, 0, &ids, &ni) == 0 && ni == 0 && ids != NULL);
  free(ids);
  CHECK(tok_encode(t, NULL, 5, 0, &ids, &ni) == MFS_EINVAL && ids == NULL);
  free(buf);
}

static void test_hostile(void) {
  tok_tokenizer *t;
  char err[256], *json = byte_level_json(BL_PRE, NULL, BL_ADDED);
  CHECK(load(json, NULL, &t, err, sizeof err) == 0);
  free(json);
  if (t) {
    fuzz_encode(t);
    tok_free(t);
  }
  CHECK(load(sp_json(), NULL, &t, err, sizeof err) == 0);
  if (t) {
    fuzz_encode(t);
    tok_free(t);
  }
}

/* ---- several threads on one tokenizer ---- */

typedef struct {
  const tok_tokenizer *t;
  const char *text;
  char expect[4096];
  int bad;
} thr_arg;

static void *thr_main(void *p) {
  thr_arg *a = p;
  for (int i = 0; i < 300; i++) {
    int32_t *ids;
    size_t n;
    if (tok_encode(a->t, a->text, strlen(a->text), TOK_PARSE_SPECIAL, &ids, &n)) {
      a->bad++;
      continue;
    }
    char *out;
    size_t ol;
    if (tok_decode(a->t, ids, n, 0, &out, &ol) || strcmp(out, a->expect)) a->bad++;
    free(out);
    free(ids);
  }
  return NULL;
}

static void test_threads(void) {
  tok_tokenizer *t;
  char err[256], *json = byte_level_json(BL_PRE, NULL, BL_ADDED);
  CHECK(load(json, NULL, &t, err, sizeof err) == 0);
  free(json);
  if (!t) return;
  static const char *texts[] = {"he the ää <s> 😀 12", "the the the\n\n\t x", "<s>x</s> [tag] he", "ä😀ä😀"};
  pthread_t th[4];
  thr_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (thr_arg){.t = t, .text = texts[i]};
    snprintf(args[i].expect, sizeof args[i].expect, "%s", texts[i]);
    if (i == 2) snprintf(args[i].expect, sizeof args[i].expect, "<s>x</s>[tag]he");
    pthread_create(&th[i], NULL, thr_main, &args[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK(args[i].bad == 0);
  }
  tok_free(t);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/test_tokenizer.XXXXXX");
  if (!mkdtemp(tmpdir)) return 1;
  test_utf8_valid_prefix();
  test_byte_level();
  test_split();
  test_sentencepiece();
  test_stream();
  test_json_forms();
  test_malformed();
  test_hostile();
  test_threads();
  char p[512];
  snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
  unlink(p);
  snprintf(p, sizeof p, "%s/tokenizer_config.json", tmpdir);
  unlink(p);
  rmdir(tmpdir);
  printf("%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
