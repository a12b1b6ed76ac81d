/* fuzz_grammar.c: the grammar module's compilers (JSON Schema, regex, GBNF,
 * choice) and its matcher and token masks over a small fixed vocabulary.
 *
 * Input: byte 0 picks the front end (bits 0-1: 0 JSON Schema, 1 regex,
 * 2 GBNF, 3 choice; bit 2: GR_SCHEMA_STRICT_OBJECTS for schemas); the rest
 * splits at its first 0xFF byte into the source and a text (no 0xFF: all
 * source, empty text). Choice sources are split at '\n' into the choices.
 *
 * The vocabulary: ids 0-255 the single bytes, then multi-byte tokens (JSON
 * punctuation, keywords, digits, words, whole and partial UTF-8 sequences,
 * one duplicate), one id with no bytes (never allowed) and EOS last.
 *
 * Properties checked:
 *  - a failed compile returns MFS_EINVAL, MFS_EUNSUPPORTED or MFS_ENOMEM,
 *    leaves *out NULL and writes a NUL-terminated message; nothing leaks
 *    (ASan) and nothing crashes;
 *  - after a compile, at every step of walking the text byte by byte (the
 *    walk stops where a call returns MFS_ENOMEM or MFS_ERANGE, the
 *    matcher's limit on parse stacks):
 *    (1) the mask's count equals its number of set bits;
 *    (2) for every id: its bit is set <=> gr_matcher_accept_token on a copy
 *        of the matcher succeeds;
 *    (3) EOS's bit is set <=> gr_matcher_complete;
 *    (4) a live state allows something (the count is never 0: the header
 *        says a grammar that was not complete cannot reach that);
 *    (5) the same mask again (served from the index's cache) is identical;
 *    (6) accept_bytes of the next byte succeeds <=> that byte's token is
 *        allowed; a rejected byte leaves the state unchanged; the walk
 *        stops there;
 *    (7) gr_matcher_finished implies complete, and then no byte token is
 *        allowed. */
#include <string.h>

#include "common.h"
#include "fuzz_util.h"
#include "grammar.h"

#define MAX_SRC 4096
#define MAX_STEPS 96

static const char *const g_multi[] = {
    "{\"", "\"}", "\":", "\",\"", ",\"", "\":\"", "[]", "{}", "[{", "}]", "},{", "\\\"", "\\n", "\\u00",
    "true", "false", "null", "tr", "nu", "0", "12", "123", "-1", "0.", ".5", "e+", "1e", "ab", "abc", "ab",
    "hello", " world", "  ", "\n", "a\"", "\"a", "é", "\xc3", "\xa9x", "東", "\xe6\x9d", "\xb1\"", "🙂", "\xf0\x9f",
    "::=", " | ", "root", "[a-z]", "(?:", ")*", "\\d", "\\w+", "@example.com", "2024-01-01", "T12:00:00Z",
};
#define N_MULTI ((int)(sizeof g_multi / sizeof g_multi[0]))
#define N_VOCAB (256 + N_MULTI + 2)
#define ID_NONE (256 + N_MULTI)
#define ID_EOS (256 + N_MULTI + 1)

static gr_vocab *g_voc;
static char g_bytes[256];
static const char *g_tb[N_VOCAB];
static uint32_t g_tl[N_VOCAB];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  for (int i = 0; i < 256; i++) {
    g_bytes[i] = (char)i;
    g_tb[i] = &g_bytes[i];
    g_tl[i] = 1;
  }
  for (int i = 0; i < N_MULTI; i++) {
    g_tb[256 + i] = g_multi[i];
    g_tl[256 + i] = (uint32_t)strlen(g_multi[i]);
  }
  g_tb[ID_NONE] = g_tb[ID_EOS] = NULL;
  int32_t eos = ID_EOS;
  FUZZ_CHECK(gr_vocab_new(N_VOCAB, g_tb, g_tl, &eos, 1, &g_voc) == 0, "gr_vocab_new");
  FUZZ_CHECK(gr_vocab_size(g_voc) == N_VOCAB, "gr_vocab_size");
  return 0;
}

static int bit(const uint32_t *m, int t) { return (int)(m[t >> 5] >> (t & 31) & 1); }

static int compile(unsigned sel, const char *src, size_t n, gr_grammar **g, gr_error *err) {
  switch (sel & 3) {
  case 0:
    return gr_compile_json_schema(src, n, sel & 4 ? GR_SCHEMA_STRICT_OBJECTS : 0, g, err);
  case 1:
    return gr_compile_regex(src, n, g, err);
  case 2:
    return gr_compile_gbnf(src, n, g, err);
  default: {
    const char *ch[64];
    size_t len[64];
    int k = 0;
    size_t a = 0;
    for (size_t i = 0; i <= n && k < 64; i++)
      if (i == n || src[i] == '\n') {
        ch[k] = src + a;
        len[k++] = i - a;
        a = i + 1;
      }
    return gr_compile_choice(ch, len, k, g, err);
  }
  }
}

static void walk(gr_index *ix, const uint8_t *text, size_t n) {
  uint32_t mask[(N_VOCAB + 31) / 32], again[(N_VOCAB + 31) / 32];
  gr_matcher m;
  FUZZ_CHECK(gr_matcher_init(&m, ix) == 0, "gr_matcher_init");
  for (size_t step = 0; step <= n && step < MAX_STEPS; step++) {
    int cnt = gr_matcher_mask(&m, mask);
    if (cnt == MFS_ENOMEM || cnt == MFS_ERANGE) return; /* ERANGE: > 4096 parse stacks, stopped by design */
    FUZZ_CHECK(cnt >= 0, "gr_matcher_mask rc %d", cnt);
    int bits = 0;
    for (int w = 0; w < (N_VOCAB + 31) / 32; w++) bits += __builtin_popcount(mask[w]);
    FUZZ_CHECK(bits == cnt, "mask count %d but %d bits set (step %zu)", cnt, bits, step);
    /* bits past the vocabulary stay clear */
    for (int t = N_VOCAB; t < (N_VOCAB + 31) / 32 * 32; t++) FUZZ_CHECK(!bit(mask, t), "bit %d past the vocab", t);
    for (int t = 0; t < N_VOCAB; t++) {
      gr_matcher c = m;
      int rc = gr_matcher_accept_token(&c, t);
      if (rc == MFS_ENOMEM || rc == MFS_ERANGE) return;
      FUZZ_CHECK(rc == 0 || rc == MFS_EINVAL, "accept_token rc %d", rc);
      FUZZ_CHECK(bit(mask, t) == (rc == 0), "token %d (%.*s): mask bit %d but accept_token %s (step %zu)", t,
                 g_tb[t] ? (int)g_tl[t] : 0, g_tb[t] ? g_tb[t] : "", bit(mask, t), rc ? "rejects" : "accepts",
                 step);
      if (rc) FUZZ_CHECK(c.state == m.state, "a rejected token moved the matcher");
    }
    int complete = gr_matcher_complete(&m);
    FUZZ_CHECK(bit(mask, ID_EOS) == complete, "EOS bit %d but complete %d (step %zu)", bit(mask, ID_EOS), complete,
               step);
    FUZZ_CHECK(!bit(mask, ID_NONE), "a token with no bytes is allowed");
    FUZZ_CHECK(cnt > 0, "a live state (step %zu, after %zu bytes) allows nothing", step, step);
    int cnt2 = gr_matcher_mask(&m, again);
    if (cnt2 == MFS_ENOMEM || cnt2 == MFS_ERANGE) return;
    FUZZ_CHECK(cnt2 == cnt && !memcmp(mask, again, sizeof mask), "the mask differs when asked again (step %zu)", step);
    if (gr_matcher_finished(&m)) {
      FUZZ_CHECK(complete, "finished but not complete");
      for (int t = 0; t < 256; t++) FUZZ_CHECK(!bit(mask, t), "finished, yet byte %d is allowed", t);
    }
    if (step == n) break;
    gr_matcher before = m;
    int rc = gr_matcher_accept_bytes(&m, (const char *)text + step, 1);
    if (rc == MFS_ENOMEM || rc == MFS_ERANGE) return;
    FUZZ_CHECK((rc == 0) == bit(mask, text[step]), "byte %d: accept_bytes rc %d but mask bit %d (step %zu)",
               text[step], rc, bit(mask, text[step]), step);
    if (rc) {
      FUZZ_CHECK(m.state == before.state, "a rejected byte moved the matcher");
      break;
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (n < 1) return 0;
  unsigned sel = d[0];
  d++, n--;
  const uint8_t *ff = memchr(d, 0xff, n);
  size_t src_n = ff ? (size_t)(ff - d) : n;
  const uint8_t *text = ff ? ff + 1 : d + n;
  size_t text_n = ff ? n - src_n - 1 : 0;
  if (src_n > MAX_SRC) return 0;
  /* the source in a buffer of its own size, so ASan sees any read past it */
  char *src = malloc(src_n ? src_n : 1);
  FUZZ_CHECK(src, "malloc");
  memcpy(src, d, src_n);
  gr_grammar *g = (gr_grammar *)1;
  gr_error err;
  memset(&err, 0x55, sizeof err);
  int rc = compile(sel, src, src_n, &g, &err);
  if (rc) {
    FUZZ_CHECK(rc == MFS_EINVAL || rc == MFS_EUNSUPPORTED || rc == MFS_ENOMEM, "compile rc %d", rc);
    FUZZ_CHECK(g == NULL, "a failed compile left *out set");
    FUZZ_CHECK(memchr(err.msg, 0, sizeof err.msg) && memchr(err.what, 0, sizeof err.what) &&
                   memchr(err.where, 0, sizeof err.where),
               "gr_error fields not NUL-terminated");
    FUZZ_CHECK(rc == MFS_ENOMEM || err.msg[0], "a failed compile (rc %d) gave no message", rc);
    free(src);
    return 0;
  }
  FUZZ_CHECK(g != NULL, "compile returned 0 without a grammar");
  int rules, elems, classes;
  gr_grammar_size(g, &rules, &elems, &classes);
  FUZZ_CHECK(rules > 0 && elems > 0 && classes >= 0, "gr_grammar_size %d %d %d", rules, elems, classes);
  gr_index *ix = NULL;
  if (gr_index_new(g, g_voc, &ix) == 0) {
    walk(ix, text, text_n);
    gr_index_stats st;
    gr_index_stats_get(ix, &st);
    FUZZ_CHECK(st.states >= 1 && st.masks_computed >= 0 && st.masks_cached >= 0, "index stats");
    gr_index_free(ix);
  }
  gr_grammar_unref(g);
  free(src);
  return 0;
}
