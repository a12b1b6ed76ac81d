/* test_regex_gbnf.c: the regex and GBNF front ends (grammar/gr_regex.c,
 * gr_gbnf.c) through the public API, with PCRE2 as the oracle.
 *
 * For each regex (and each GBNF grammar that has a regex equivalent) many
 * candidate strings are made: random strings over the pattern's own
 * characters plus a fixed set (ASCII punctuation, controls, multi-byte
 * UTF-8, ECMAScript spaces), and mutations of known matches (insertions,
 * deletions, byte-level damage that breaks UTF-8, repeats, joins). The
 * grammar's verdict (every byte accepted and the match complete) must equal
 * PCRE2's full match (ANCHORED|ENDANCHORED, UTF). Where ECMAScript and
 * PCRE2 read an escape differently (., \s, \v, \u) the table gives the
 * PCRE2 spelling of the same language. `pattern` in a JSON schema is
 * checked the same way against PCRE2's unanchored search, the candidate
 * written as a JSON string (JSON.stringify's escapes). Along the positive
 * examples every token mask is compared with single-byte steps.
 * Refusals (MFS_EUNSUPPORTED naming the construct) and malformed input
 * (MFS_EINVAL with the offset) are checked case by case. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"

enum { T_EINVAL = -1, T_EUNSUPPORTED = -5 }; /* common.h's MFS_EINVAL, MFS_EUNSUPPORTED */

static int failures;
#define CHECK(c, ...)                                                                                                 \
  do {                                                                                                                \
    if (!(c)) {                                                                                                       \
      failures++;                                                                                                     \
      fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                                                 \
      fprintf(stderr, __VA_ARGS__);                                                                                   \
      fputc('\n', stderr);                                                                                            \
    }                                                                                                                 \
  } while (0)

/* ---- helpers ---- */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state % n);
}

static size_t put_utf8(uint32_t c, char *o) {
  if (c < 0x80) return o[0] = (char)c, 1;
  if (c < 0x800) return o[0] = (char)(0xC0 | c >> 6), o[1] = (char)(0x80 | (c & 63)), 2;
  if (c < 0x10000)
    return o[0] = (char)(0xE0 | c >> 12), o[1] = (char)(0x80 | ((c >> 6) & 63)), o[2] = (char)(0x80 | (c & 63)), 3;
  return o[0] = (char)(0xF0 | c >> 18), o[1] = (char)(0x80 | ((c >> 12) & 63)), o[2] = (char)(0x80 | ((c >> 6) & 63)),
         o[3] = (char)(0x80 | (c & 63)), 4;
}

/* printable form of a candidate for messages */
static const char *show(const char *s, size_t n) {
  static char buf[4][600];
  static int k;
  char *o = buf[k++ & 3];
  size_t j = 0;
  for (size_t i = 0; i < n && j < 580; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7F && c != '\\') o[j++] = (char)c;
    else j += (size_t)snprintf(o + j, 8, "\\x%02x", c);
  }
  o[j] = 0;
  return o;
}

/* 256 single-byte tokens and an EOS (id 256). */
static gr_vocab *vocab;
static void make_vocab(void) {
  static char bytes[256];
  const char *ptr[257];
  uint32_t len[257];
  for (int i = 0; i < 256; i++) bytes[i] = (char)i, ptr[i] = &bytes[i], len[i] = 1;
  ptr[256] = NULL, len[256] = 0;
  int32_t eos = 256;
  if (gr_vocab_new(257, ptr, len, &eos, 1, &vocab)) {
    fprintf(stderr, "gr_vocab_new failed\n");
    exit(1);
  }
}

/* 1: all bytes accepted and complete; 0: rejected or incomplete. */
static int verdict(gr_index *ix, const char *s, size_t n) {
  gr_matcher m;
  if (gr_matcher_init(&m, ix)) return -1;
  int rc = gr_matcher_accept_bytes(&m, s, n);
  if (rc == T_EINVAL) return 0;
  if (rc) return -1;
  return gr_matcher_complete(&m);
}

/* Along s (which must be accepted): each step's mask equals single-byte
 * acceptance, EOS allowed exactly when complete. */
static void check_masks(gr_index *ix, const char *s, size_t n, const char *name) {
  gr_matcher m;
  uint32_t mask[(257 + 31) / 32];
  if (gr_matcher_init(&m, ix)) return;
  for (size_t i = 0; i <= n; i++) {
    int cnt = gr_matcher_mask(&m, mask), want = 0;
    for (int t = 0; t < 256; t++) {
      gr_matcher c = m;
      char byte = (char)t;
      int ok = gr_matcher_accept_bytes(&c, &byte, 1) == 0;
      int bit = (mask[t / 32] >> (t % 32)) & 1;
      want += ok;
      if (ok != bit) {
        CHECK(0, "%s: mask after '%s': byte 0x%02x mask %d, accept_bytes %d", name, show(s, i), t, bit, ok);
        return;
      }
    }
    int eos = (mask[256 / 32] >> (256 % 32)) & 1;
    CHECK(eos == gr_matcher_complete(&m), "%s: EOS bit %d, complete %d after '%s'", name, eos,
          gr_matcher_complete(&m), show(s, i));
    CHECK(cnt == want + eos, "%s: mask count %d, expected %d", name, cnt, want + eos);
    if (i < n && gr_matcher_accept_token(&m, (unsigned char)s[i])) {
      CHECK(0, "%s: accept_token refused byte %zu of '%s'", name, i, show(s, n));
      return;
    }
  }
  CHECK(gr_matcher_accept_token(&m, 256) == 0, "%s: EOS refused at the end of '%s'", name, show(s, n));
}

/* ---- PCRE2 ---- */
static pcre2_code *pcre(const char *pat, int full) {
  int e;
  PCRE2_SIZE off;
  uint32_t opt = PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | (full ? PCRE2_ANCHORED | PCRE2_ENDANCHORED : 0);
  pcre2_code *c = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opt, &e, &off, NULL);
  if (!c) fprintf(stderr, "PCRE2 cannot compile '%s' (error %d at %zu)\n", pat, e, (size_t)off);
  return c;
}

static int pcre_match(pcre2_code *c, const char *s, size_t n) {
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(c, NULL);
  int rc = pcre2_match(c, (PCRE2_SPTR)s, n, 0, 0, md, NULL);
  pcre2_match_data_free(md);
  return rc >= 0;
}

/* ---- candidates ---- */
#define MAX_ALPHA 96
#define MAX_CAND 512
typedef struct {
  uint32_t a[MAX_ALPHA];
  int n;
} alpha;

static void alpha_add(alpha *A, uint32_t c) {
  if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return;
  for (int i = 0; i < A->n; i++)
    if (A->a[i] == c) return;
  if (A->n < MAX_ALPHA) A->a[A->n++] = c;
}

/* the code points of a UTF-8 text (invalid bytes skipped) */
static void alpha_text(alpha *A, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    uint32_t c = *p;
    int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    if (len > 1) {
      c &= 0x3Fu >> (len - 1);
      for (int k = 1; k < len && p[k]; k++) c = c << 6 | (p[k] & 0x3F);
    }
    alpha_add(A, c);
    for (int k = 0; k < len && *p; k++) p++;
  }
}

static void alpha_init(alpha *A, const char *pat, const char *const *ex) {
  A->n = 0;
  static const uint32_t extra[] = {'a', 'b', 'z', 'A', 'Z', '0', '1', '9', '_', ' ',   '-',    '.',    '\n',
                                   '\r', '\t', 0x0B, 0x0C, 0,   '"', '\\', '{', '}',   0xA0,   0xE9,   0x85,
                                   0x20AC, 0x2028, 0xFEFF, 0x1F600, 0x7F, 0x3000, 0x10FFFF};
  for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) alpha_add(A, extra[i]);
  alpha_text(A, pat);
  for (int i = 0; ex && ex[i]; i++) alpha_text(A, ex[i]);
}

typedef struct {
  char s[160];
  size_t n;
} cand;

static void cand_put(cand *c, uint32_t cp) {
  if (c->n + 4 < sizeof c->s) c->n += put_utf8(cp, c->s + c->n);
}

/* random strings, examples, and mutations of them */
static int make_cands(cand *out, const alpha *A, const char *const *ex) {
  int n = 0, nex = 0;
  while (ex && ex[nex]) nex++;
  out[n++].n = 0; /* the empty string */
  for (int i = 0; i < nex; i++) {
    out[n].n = strlen(ex[i]);
    memcpy(out[n].s, ex[i], out[n].n);
    n++;
  }
  while (n < MAX_CAND) {
    cand *c = &out[n];
    c->n = 0;
    if (!nex || rnd(3) == 0) {
      int len = (int)rnd(9);
      for (int k = 0; k < len; k++) cand_put(c, A->a[rnd((uint32_t)A->n)]);
    } else {
      const char *e = ex[rnd((uint32_t)nex)];
      size_t el = strlen(e);
      if (el >= 150) el = 150;
      memcpy(c->s, e, el);
      c->n = el;
      int ops = 1 + (int)rnd(3);
      for (int o = 0; o < ops; o++) {
        size_t at = c->n ? rnd((uint32_t)c->n + 1) : 0;
        char tmp[160];
        switch (rnd(6)) {
        case 0: { /* insert a character (maybe inside a multi-byte one) */
          char enc[4];
          size_t k = put_utf8(A->a[rnd((uint32_t)A->n)], enc);
          if (c->n + k >= sizeof c->s) break;
          memmove(c->s + at + k, c->s + at, c->n - at);
          memcpy(c->s + at, enc, k);
          c->n += k;
          break;
        }
        case 1: /* delete a byte */
          if (at < c->n) memmove(c->s + at, c->s + at + 1, c->n - at - 1), c->n--;
          break;
        case 2: /* replace a byte by a character */
          if (at < c->n) {
            char enc[4];
            size_t k = put_utf8(A->a[rnd((uint32_t)A->n)], enc);
            if (c->n + k >= sizeof c->s) break;
            memmove(c->s + at + k, c->s + at + 1, c->n - at - 1);
            memcpy(c->s + at, enc, k);
            c->n += k - 1;
          }
          break;
        case 3: { /* repeat a slice */
          size_t len = at < c->n ? 1 + rnd((uint32_t)(c->n - at)) : 0;
          if (c->n + len >= sizeof c->s) break;
          memcpy(tmp, c->s + at, len);
          memmove(c->s + at + len, c->s + at, c->n - at);
          memcpy(c->s + at, tmp, len);
          c->n += len;
          break;
        }
        case 4: { /* join another example */
          const char *f = ex[rnd((uint32_t)nex)];
          size_t fl = strlen(f);
          if (c->n + fl >= sizeof c->s) break;
          memcpy(c->s + c->n, f, fl);
          c->n += fl;
          break;
        }
        default: /* cut */
          c->n = at;
          break;
        }
      }
    }
    n++;
  }
  return n;
}

/* ---- regexes against PCRE2 ---- */
typedef struct {
  const char *re;        /* ours */
  const char *pcre;      /* PCRE2's spelling, NULL: the same */
  const char *ex[8];     /* strings that match (checked against PCRE2 too) */
} rcase;

#define ECMA_SPACE "\\t\\n\\x0b\\f\\r \\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}\\x{feff}"
#define ECMA_DOT "[^\\n\\r\\x{2028}\\x{2029}]"

static const rcase REGEXES[] = {
    {"abc", NULL, {"abc"}},
    {"", NULL, {""}},
    {"a|b|cd", NULL, {"a", "b", "cd"}},
    {"a|", NULL, {"a", ""}},
    {"|a", NULL, {"a", ""}},
    {"()", NULL, {""}},
    {"a*b+c?", NULL, {"b", "aabbc", "abbb"}},
    {"(ab)*", NULL, {"", "ab", "ababab"}},
    {"(a|b)*abb", NULL, {"abb", "babb", "aaabababb"}},
    {"[a-z]+@[a-z]+\\.(com|org)", NULL, {"joe@example.com", "a@b.org"}},
    {"\\d{3}-\\d{4}", NULL, {"555-1234", "000-9999"}},
    {"\\d{2,4}", NULL, {"12", "123", "1234"}},
    {"x{2,}", NULL, {"xx", "xxxxx"}},
    {"x{0}y", NULL, {"y"}},
    {"(?:x{1,2}){2}", NULL, {"xx", "xxx", "xxxx"}},
    {"[^abc]*", NULL, {"", "xyz", "\xc3\xa9\xe2\x82\xac\n", "d\"e"}},
    {"\\w+\\s\\w+", "\\w+[" ECMA_SPACE "]\\w+", {"hello world", "a\tb", "x\xe3\x80\x80y", "p\xef\xbb\xbfq"}},
    {"\\S+", "[^" ECMA_SPACE "]+", {"abc", "\xc3\xa9\xc2\x85"}},
    {"[\\s\\S]*", NULL, {"", "any\nthing \xf0\x9f\x98\x80"}},
    {"\\D\\W", NULL, {"a-", "\xc3\xa9!"}},
    {"[\\D]", "[^0-9]", {"a", "\xe2\x82\xac"}},
    {"[^\\d]+", "[^0-9]+", {"abc", " -"}},
    {"[^\\W]", "\\w", {"a", "_", "7"}},
    {"a.c", "a" ECMA_DOT "c", {"abc", "a\xc3\xa9" "c", "a\x0b" "c", "a\xc2\x85" "c"}},
    {".*", ECMA_DOT "*", {"", "abc", "\xf0\x9f\x98\x80"}},
    {"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}$", NULL, {"deadBEEF-0123"}},
    {"^abc$", NULL, {"abc"}},
    {"^a|b$", NULL, {"a", "b"}},
    {"(?:ab|cd)+", NULL, {"ab", "cdab"}},
    {"(?<year>\\d{4})-(?<m>\\d\\d)", NULL, {"2024-05"}},
    {"(?P<x>a+)b", NULL, {"ab", "aaab"}},
    {"\xc3\xa9+[\xe2\x82\xac-\xe2\x82\xbf]", NULL, {"\xc3\xa9\xe2\x82\xac", "\xc3\xa9\xc3\xa9\xe2\x82\xbf"}},
    {"\\u00e9\\u{1F600}", "\\x{e9}\\x{1f600}", {"\xc3\xa9\xf0\x9f\x98\x80"}},
    {"\\ud83d\\ude00+", "\\x{1f600}+", {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80\xf0\x9f\x98\x80"}},
    {"\\x41\\x{263A}", NULL, {"A\xe2\x98\xba"}},
    {"[\\u0100-\\u017F]+", "[\\x{100}-\\x{17f}]+", {"\xc4\x80", "\xc5\xbf\xc4\x81"}},
    {"[\\x00-\\x{10FFFF}]", NULL, {"a", "\xf4\x8f\xbf\xbf"}},
    {"[^\\x{80}-\\x{10FFFF}]+", NULL, {"ascii only", "\x01\x7f"}},
    {"a+?b*?c??d{1,2}?", NULL, {"ad", "aabbcdd"}},
    {"(a*)*", NULL, {"", "aaa"}},
    {"(a|)*b", NULL, {"b", "aab"}},
    {"(a?){3}", NULL, {"", "a", "aaa"}},
    {"(a*b*)*c", NULL, {"c", "abbac"}},
    {"((a|b)*|c+)*d", NULL, {"d", "abccad"}},
    {"[\\-\\]\\\\.]+", NULL, {"-", "]\\.", "\\\\"}},
    {"[a-]", NULL, {"a", "-"}},
    {"[-a]", NULL, {"a", "-"}},
    {"[a\\-z]", NULL, {"a", "-", "z"}},
    {"[\\d\\-z]", NULL, {"5", "-", "z"}},
    {"[\\w-]", NULL, {"5", "-", "_"}},
    {"\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\^\\$\\/", "\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\^\\$/", {".*+?()[]{}|^$/"}},
    {"\\t\\n\\r\\f\\v", "\\t\\n\\r\\f\\x0b", {"\t\n\r\f\v"}},
    {"\\0?x", "\\x00?x", {"x"}},
    {"\\cJ\\ca", "\\n\\x01", {"\n\x01"}},
    {"[\\b]", "\\x08", {"\b"}},
    {"(\\d+\\.){3}\\d+", NULL, {"127.0.0.1", "10.20.30.40"}},
    {"[^\\n]*", NULL, {"", "a\rb"}},
    {"(?:[a-z]{1,3}){2,3}", NULL, {"ab", "abcdefgh", "abcdefghi"}},
    {"x{a}", "x\\{a\\}", {"x{a}"}},
    {"a{", "a\\{", {"a{"}},
    {"a]}", NULL, {"a]}"}},
    {"\\{\"a\":\\d+\\}", NULL, {"{\"a\":12}"}},
    {"(a|ab)(c|bcd)(d*)", NULL, {"abcd", "acd", "abcdd"}},
    {"[a-c]{2}[^a-c]{1,3}", NULL, {"abx", "ccxyz"}},
    {"[\xce\xb1-\xcf\x89]+ (\xe4\xb8\xad|\xf0\x9f\x98\x80)", NULL, {"\xce\xb1\xce\xb2 \xe4\xb8\xad"}},
};

/* the PCRE2 pattern for full matches of a test regex */
static void run_regex_case(const rcase *t) {
  gr_grammar *g = NULL;
  gr_error err;
  int rc = gr_compile_regex(t->re, strlen(t->re), &g, &err);
  CHECK(rc == 0, "regex '%s': compile failed %d (%s at %s: %s)", show(t->re, strlen(t->re)), rc, err.what, err.where,
        err.msg);
  if (rc) return;
  pcre2_code *pc = pcre(t->pcre ? t->pcre : t->re, 1);
  gr_index *ix = NULL;
  if (!pc || gr_index_new(g, vocab, &ix)) {
    CHECK(0, "regex '%s': PCRE2 or index setup failed", t->re);
    pcre2_code_free(pc);
    gr_grammar_unref(g);
    return;
  }
  for (int i = 0; t->ex[i]; i++) {
    CHECK(pcre_match(pc, t->ex[i], strlen(t->ex[i])), "regex '%s': example '%s' does not match PCRE2", t->re,
          show(t->ex[i], strlen(t->ex[i])));
    if (verdict(ix, t->ex[i], strlen(t->ex[i])) == 1) check_masks(ix, t->ex[i], strlen(t->ex[i]), t->re);
  }
  alpha A;
  alpha_init(&A, t->re, t->ex);
  static cand c[MAX_CAND];
  int n = make_cands(c, &A, t->ex), pos = 0, bad = 0;
  for (int i = 0; i < n; i++) {
    int want = pcre_match(pc, c[i].s, c[i].n), got = verdict(ix, c[i].s, c[i].n);
    pos += want;
    if (want != got && bad++ < 5)
      CHECK(0, "regex '%s': '%s': PCRE2 %d, grammar %d", show(t->re, strlen(t->re)), show(c[i].s, c[i].n), want, got);
  }
  CHECK(bad == 0, "regex '%s': %d of %d candidates disagree", t->re, bad, n);
  CHECK(pos > 0, "regex '%s': no candidate matched", t->re);
  gr_index_free(ix);
  pcre2_code_free(pc);
  gr_grammar_unref(g);
}

/* ---- random regexes against PCRE2 ----
 * A small expression tree printed in both dialects; strings sampled from
 * it are matches by construction, the rest comes from make_cands. */
typedef struct rnode {
  int k; /* 0 literal, 1 class, 2 sequence, 3 alternation, 4 repetition, 5 capture group */
  int id, min, max, lazy, n;
  struct rnode *kid[3];
} rnode;

typedef struct {
  const char *ours, *pcre, *members; /* members: UTF-8 samples of the class */
} rclass;

static const rclass RCLASSES[] = {
    {"[a-c]", "[a-c]", "abc"},
    {"[^a]", "[^a]", "b1\xc3\xa9\xf0\x9f\x98\x80\n"},
    {"\\d", "\\d", "0159"},
    {"\\w", "\\w", "aZ_9"},
    {"\\D", "\\D", "a\xc3\xa9-\n"},
    {".", ECMA_DOT, "a\xc3\xa9\xf0\x9f\x98\x80 "},
    {"[ab-]", "[ab-]", "ab-"},
    {"[\\s\\S]", "[\\s\\S]", "a\n\xf0\x9f\x98\x80"},
    {"\\u{e9}", "\\x{e9}", "\xc3\xa9"},
    {"\\x41", "\\x41", "A"},
    {"[\xc3\xa9-\xf0\x9f\x98\x80]", "[\xc3\xa9-\xf0\x9f\x98\x80]", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
    {"\\s", "[" ECMA_SPACE "]", " \n\t"},
    {"[^\\d\\s]", "[^0-9" ECMA_SPACE "]", "a-\xc3\xa9"},
};
static const char *const RLITS[] = {"a", "b", "c", "-", "\xc3\xa9", "\xf0\x9f\x98\x80", "\\.", "\\*", " "};
static const char *const RLIT_TEXT[] = {"a", "b", "c", "-", "\xc3\xa9", "\xf0\x9f\x98\x80", ".", "*", " "};

static rnode rpool[64];
static int rpool_n;

static rnode *rgen(int depth) {
  if (rpool_n >= 60) depth = 0;
  rnode *x = &rpool[rpool_n++];
  memset(x, 0, sizeof *x);
  int k = depth <= 0 ? (int)rnd(2) : (int)rnd(6);
  x->k = k;
  if (k == 0) x->id = (int)rnd(sizeof RLITS / sizeof *RLITS);
  else if (k == 1) x->id = (int)rnd(sizeof RCLASSES / sizeof *RCLASSES);
  else if (k == 2 || k == 3) {
    x->n = 2 + (int)rnd(2);
    for (int i = 0; i < x->n; i++) x->kid[i] = rgen(depth - 1);
  } else {
    x->n = 1;
    x->kid[0] = rgen(depth - 1);
    if (k == 4) {
      static const int q[][2] = {{0, -1}, {1, -1}, {0, 1}, {2, 2}, {1, 3}, {2, -1}, {0, 0}, {0, 2}};
      int j = (int)rnd(sizeof q / sizeof *q);
      x->min = q[j][0], x->max = q[j][1], x->lazy = rnd(4) == 0;
    }
  }
  return x;
}

static void rprint(const rnode *x, int pc, char *o, size_t *j) {
  switch (x->k) {
  case 0:
    *j += (size_t)sprintf(o + *j, "%s", RLITS[x->id]);
    break;
  case 1:
    *j += (size_t)sprintf(o + *j, "%s", pc ? RCLASSES[x->id].pcre : RCLASSES[x->id].ours);
    break;
  case 2:
    for (int i = 0; i < x->n; i++) rprint(x->kid[i], pc, o, j);
    break;
  case 3:
    *j += (size_t)sprintf(o + *j, "(?:");
    for (int i = 0; i < x->n; i++) {
      if (i) o[(*j)++] = '|';
      rprint(x->kid[i], pc, o, j);
    }
    o[(*j)++] = ')';
    break;
  case 4:
    *j += (size_t)sprintf(o + *j, "(?:");
    rprint(x->kid[0], pc, o, j);
    o[(*j)++] = ')';
    if (x->min == 0 && x->max == -1) o[(*j)++] = '*';
    else if (x->min == 1 && x->max == -1) o[(*j)++] = '+';
    else if (x->min == 0 && x->max == 1) o[(*j)++] = '?';
    else if (x->max == -1) *j += (size_t)sprintf(o + *j, "{%d,}", x->min);
    else if (x->min == x->max) *j += (size_t)sprintf(o + *j, "{%d}", x->min);
    else *j += (size_t)sprintf(o + *j, "{%d,%d}", x->min, x->max);
    if (x->lazy) o[(*j)++] = '?';
    break;
  default:
    o[(*j)++] = '(';
    rprint(x->kid[0], pc, o, j);
    o[(*j)++] = ')';
    break;
  }
  o[*j] = 0;
}

/* a UTF-8 character of a sample list */
static void sample_member(const char *m, cand *c) {
  int cnt = 0;
  for (const char *p = m; *p; p++) cnt += ((unsigned char)*p & 0xC0) != 0x80;
  int pick = (int)rnd((uint32_t)cnt);
  const char *p = m;
  for (; pick; p++)
    if (((unsigned char)p[1] & 0xC0) != 0x80) pick--;
  size_t len = 1;
  while (((unsigned char)p[len] & 0xC0) == 0x80) len++;
  if (c->n + len < sizeof c->s) memcpy(c->s + c->n, p, len), c->n += len;
}

static void rsample(const rnode *x, cand *c) {
  switch (x->k) {
  case 0: {
    size_t len = strlen(RLIT_TEXT[x->id]);
    if (c->n + len < sizeof c->s) memcpy(c->s + c->n, RLIT_TEXT[x->id], len), c->n += len;
    break;
  }
  case 1:
    sample_member(RCLASSES[x->id].members, c);
    break;
  case 2:
    for (int i = 0; i < x->n; i++) rsample(x->kid[i], c);
    break;
  case 3:
    rsample(x->kid[rnd((uint32_t)x->n)], c);
    break;
  case 4: {
    int hi = x->max < 0 ? x->min + 3 : x->max;
    int times = x->min + (int)rnd((uint32_t)(hi - x->min + 1));
    for (int i = 0; i < times; i++) rsample(x->kid[0], c);
    break;
  }
  default:
    rsample(x->kid[0], c);
  }
}

static void run_random_regexes(int count) {
  int total = 0, positives = 0;
  for (int r = 0; r < count; r++) {
    rpool_n = 0;
    rnode *x = rgen(1 + (int)rnd(4));
    char ours[2048], pc[4096];
    size_t j = 0;
    int a0 = rnd(4) == 0, a1 = rnd(4) == 0;
    if (a0) ours[j++] = '^';
    rprint(x, 0, ours, &j);
    if (a1) ours[j++] = '$';
    ours[j] = 0;
    j = 0;
    rprint(x, 1, pc, &j);
    gr_grammar *g = NULL;
    gr_error err;
    int rc = gr_compile_regex(ours, strlen(ours), &g, &err);
    CHECK(rc == 0, "random regex '%s': compile failed %d (%s)", show(ours, strlen(ours)), rc, err.msg);
    if (rc) continue;
    pcre2_code *pcode = pcre(pc, 1);
    gr_index *ix = NULL;
    if (!pcode || gr_index_new(g, vocab, &ix)) {
      CHECK(0, "random regex '%s': PCRE2 or index setup failed", pc);
      pcre2_code_free(pcode);
      gr_grammar_unref(g);
      continue;
    }
    /* positives sampled from the tree, kept as examples for mutations */
    static cand samp[16];
    static char exbuf[16][161];
    const char *ex[17];
    int ne = 0;
    for (int i = 0; i < 16; i++) {
      samp[i].n = 0;
      rsample(x, &samp[i]);
      int want = pcre_match(pcode, samp[i].s, samp[i].n), got = verdict(ix, samp[i].s, samp[i].n);
      CHECK(want == 1 && got == 1, "random regex '%s': sample '%s': PCRE2 %d, grammar %d", show(ours, strlen(ours)),
            show(samp[i].s, samp[i].n), want, got);
      if (i < 2 && got == 1) check_masks(ix, samp[i].s, samp[i].n, ours);
      if (!memchr(samp[i].s, 0, samp[i].n)) {
        memcpy(exbuf[ne], samp[i].s, samp[i].n);
        exbuf[ne][samp[i].n] = 0;
        ex[ne] = exbuf[ne];
        ne++;
      }
    }
    ex[ne] = NULL;
    alpha A;
    alpha_init(&A, ours, ex);
    static cand c[MAX_CAND];
    int n = make_cands(c, &A, ex), bad = 0;
    for (int i = 0; i < n; i++) {
      int want = pcre_match(pcode, c[i].s, c[i].n), got = verdict(ix, c[i].s, c[i].n);
      positives += want;
      total++;
      if (want != got && bad++ < 3)
        CHECK(0, "random regex '%s': '%s': PCRE2 %d, grammar %d", show(ours, strlen(ours)), show(c[i].s, c[i].n), want,
              got);
    }
    gr_index_free(ix);
    pcre2_code_free(pcode);
    gr_grammar_unref(g);
  }
  printf("random regexes: %d, candidates %d, of which PCRE2 matched %d\n", count, total, positives);
}

/* ---- `pattern` in a JSON schema: search semantics, JSON string content ---- */
static size_t json_string(const char *s, size_t n, char *out) {
  size_t j = 0;
  out[j++] = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : c == '\n' ? "\\n"
                    : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
    if (e) j += (size_t)sprintf(out + j, "%s", e);
    else if (c < 0x20) j += (size_t)sprintf(out + j, "\\u%04x", c);
    else out[j++] = (char)c;
  }
  out[j++] = '"';
  return j;
}

typedef struct {
  const char *re;   /* as JSON string content (already escaped for JSON) */
  const char *pcre; /* PCRE2 spelling of the same regex (unescaped) */
  const char *ex[6];
} pcase;

static const pcase PATTERNS[] = {
    {"abc", "abc", {"abc", "xxabcxx"}},
    {"^abc", "^abc", {"abc", "abcdef"}},
    {"abc$", "abc$", {"abc", "xabc"}},
    {"^a|b$", "^a|b$", {"a", "ax", "xb", "b"}},
    {"^\\\\d{3}$", "^\\d{3}$", {"123"}},
    {"^[a-z\\\"\\\\\\\\]+$", "^[a-z\"\\\\]+$", {"ab", "a\"b", "a\\b"}},
    {"^[\\\\x00-\\\\x1f]*$", "^[\\x00-\\x1f]*$", {"", "\n\t\x01"}},
    {"\\\"", "\"", {"\"", "a\"b"}},
    {"^.$", "^" ECMA_DOT "$", {"a", "\xc3\xa9"}},
    {"", "", {"", "anything"}},
    {"^$", "^$", {""}},
    {"^\xf0\x9f\x90\xb2*$", "^\xf0\x9f\x90\xb2*$", {"", "\xf0\x9f\x90\xb2\xf0\x9f\x90\xb2"}},
    {"^\\\\S+\\\\s\\\\w$", "^[^" ECMA_SPACE "]+[" ECMA_SPACE "]\\w$", {"\xc3\xa9\xc3\xa9\xc2\xa0x", "a\nb"}},
    {"^(\\\\([0-9]{3}\\\\))?[0-9]{3}-[0-9]{4}$", "^(\\([0-9]{3}\\))?[0-9]{3}-[0-9]{4}$", {"555-1212", "(888)555-1212"}},
};

static void run_pattern_case(const pcase *t) {
  char schema[512];
  snprintf(schema, sizeof schema, "{\"type\":\"string\",\"pattern\":\"%s\"}", t->re);
  gr_grammar *g = NULL;
  gr_error err;
  int rc = gr_compile_json_schema(schema, strlen(schema), 0, &g, &err);
  CHECK(rc == 0, "schema %s: compile failed %d (%s at %s: %s)", schema, rc, err.what, err.where, err.msg);
  if (rc) return;
  pcre2_code *pc = pcre(t->pcre, 0);
  gr_index *ix = NULL;
  if (!pc || gr_index_new(g, vocab, &ix)) {
    CHECK(0, "schema %s: PCRE2 or index setup failed", schema);
    pcre2_code_free(pc);
    gr_grammar_unref(g);
    return;
  }
  alpha A;
  alpha_init(&A, t->pcre, t->ex);
  static cand c[MAX_CAND];
  int n = make_cands(c, &A, t->ex), pos = 0, bad = 0;
  for (int i = 0; i < n; i++) {
    char js[1200];
    size_t jn = json_string(c[i].s, c[i].n, js);
    int want = pcre_match(pc, c[i].s, c[i].n), got = verdict(ix, js, jn);
    pos += want;
    if (want != got && bad++ < 5)
      CHECK(0, "schema %s: %s: PCRE2 %d, grammar %d", schema, show(js, jn), want, got);
    if (want && got && i < 8) check_masks(ix, js, jn, schema);
  }
  CHECK(bad == 0, "schema %s: %d of %d candidates disagree", schema, bad, n);
  CHECK(pos > 0, "schema %s: no candidate matched", schema);
  gr_index_free(ix);
  pcre2_code_free(pc);
  gr_grammar_unref(g);
}

/* ---- refusals and malformed regexes ---- */
typedef struct {
  const char *re;
  int rc;
  const char *what;  /* a substring of err.what */
  const char *where; /* err.where exactly */
} ecase;

static const ecase REGEX_ERRORS[] = {
    {"(a)\\1", T_EUNSUPPORTED, "backreference", "offset 3"},
    {"(?<n>a)\\k<n>", T_EUNSUPPORTED, "backreference", "offset 7"},
    {"a(?=b)", T_EUNSUPPORTED, "lookahead", "offset 1"},
    {"(?!a)b", T_EUNSUPPORTED, "lookahead", "offset 0"},
    {"(?<=a)b", T_EUNSUPPORTED, "lookbehind", "offset 0"},
    {"(?<!a)b", T_EUNSUPPORTED, "lookbehind", "offset 0"},
    {"\\bfoo", T_EUNSUPPORTED, "word boundary", "offset 0"},
    {"a\\B", T_EUNSUPPORTED, "word boundary", "offset 1"},
    {"a^b", T_EUNSUPPORTED, "anchor", "offset 1"},
    {"a$b", T_EUNSUPPORTED, "anchor", "offset 1"},
    {"(^a)", T_EUNSUPPORTED, "anchor", "offset 1"},
    {"(a$)", T_EUNSUPPORTED, "anchor", "offset 2"},
    {"^^a", T_EUNSUPPORTED, "anchor", "offset 1"},
    {"(?i)abc", T_EUNSUPPORTED, "inline flags", "offset 0"},
    {"a(?s:.)", T_EUNSUPPORTED, "inline flags", "offset 1"},
    {"a*+", T_EUNSUPPORTED, "possessive", "offset 2"},
    {"a{2}+", T_EUNSUPPORTED, "possessive", "offset 4"},
    {"\\p{L}", T_EUNSUPPORTED, "unicode property", "offset 0"},
    {"[\\P{L}]", T_EUNSUPPORTED, "unicode property", "offset 1"},
    {"a{10001}", T_EUNSUPPORTED, "repetition count", "offset 1"},
    {"a{1,20000}", T_EUNSUPPORTED, "repetition count", "offset 1"},
    {"(?>a)", T_EUNSUPPORTED, "atomic group", "offset 0"},
    {"[[:alpha:]]", T_EUNSUPPORTED, "nested class", "offset 1"},
    {"[]a]", T_EUNSUPPORTED, "empty class", "offset 0"},
    {"[^]", T_EUNSUPPORTED, "empty class", "offset 0"},
    {"\\01", T_EUNSUPPORTED, "octal escape", "offset 0"},
    {"a{,3}", T_EUNSUPPORTED, "quantifier", "offset 1"},
    {"a{1, 3}", T_EUNSUPPORTED, "quantifier", "offset 1"},
    {"\\e", T_EUNSUPPORTED, "escape \\e", "offset 0"},
    {"\\A", T_EUNSUPPORTED, "escape \\A", "offset 0"},
    {"\\ud800", T_EUNSUPPORTED, "surrogate", "offset 0"},
    {"(?#c)", T_EUNSUPPORTED, "comment group", "offset 0"},
    {"(?|a)", T_EUNSUPPORTED, "group construct", "offset 0"},
    {"(ab", T_EINVAL, "unbalanced '('", "offset 0"},
    {"a(b(c)", T_EINVAL, "unbalanced '('", "offset 1"},
    {"ab)", T_EINVAL, "unbalanced ')'", "offset 2"},
    {"a{3,1}", T_EINVAL, "quantifier", "offset 1"},
    {"*a", T_EINVAL, "quantifier", "offset 0"},
    {"a|+", T_EINVAL, "quantifier", "offset 2"},
    {"(?:)?{2}", T_EINVAL, "quantifier", "offset 5"},
    {"a**", T_EINVAL, "quantifier", "offset 2"},
    {"{2}", T_EINVAL, "quantifier", "offset 0"},
    {"[abc", T_EINVAL, "unterminated class", "offset 0"},
    {"[z-a]", T_EINVAL, "class range", "offset 1"},
    {"[a-\\d]", T_EINVAL, "class range", "offset 3"},
    {"[\\d-z]", T_EINVAL, "class range", "offset 1"},
    {"ab\\", T_EINVAL, "escape", "offset 2"},
    {"\\x4", T_EINVAL, "escape", "offset 0"},
    {"\\u12", T_EINVAL, "escape", "offset 0"},
    {"\\u{110000}", T_EINVAL, "escape", "offset 0"},
    {"(?<1a>x)", T_EINVAL, "group name", "offset 0"},
    {"a\xff", T_EINVAL, "UTF-8", "offset 1"},
    {"a\xc3", T_EINVAL, "UTF-8", "offset 1"},
    {"\xed\xa0\x80", T_EINVAL, "UTF-8", "offset 0"},
};

static void run_error_case(const ecase *t, int gbnf) {
  gr_grammar *g = NULL;
  gr_error err;
  const char *kind = gbnf ? "gbnf" : "regex";
  int rc = gbnf ? gr_compile_gbnf(t->re, strlen(t->re), &g, &err) : gr_compile_regex(t->re, strlen(t->re), &g, &err);
  CHECK(rc == t->rc, "%s '%s': rc %d, expected %d (%s at %s: %s)", kind, show(t->re, strlen(t->re)), rc, t->rc,
        err.what, err.where, err.msg);
  CHECK(g == NULL, "%s '%s': a grammar came back with an error", kind, t->re);
  CHECK(strstr(err.what, t->what) != NULL, "%s '%s': what '%s', expected '%s'", kind, show(t->re, strlen(t->re)),
        err.what, t->what);
  CHECK(!strcmp(err.where, t->where), "%s '%s': where '%s', expected '%s'", kind, show(t->re, strlen(t->re)),
        err.where, t->where);
  CHECK(strstr(err.msg, t->what) != NULL, "%s '%s': message '%s' does not name '%s'", kind, t->re, err.msg, t->what);
  gr_grammar_unref(g);
}

/* ---- GBNF ---- */
static const char JSON_GBNF[] =
    "# JSON, after llama.cpp's grammars/json.gbnf\n"
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "\n"
    "object ::=\n"
    "  \"{\" ws (\n"
    "            string \":\" ws value\n"
    "    (\",\" ws string \":\" ws value)*\n"
    "  )? \"}\" ws\n"
    "\n"
    "array  ::=\n"
    "  \"[\" ws (\n"
    "            value\n"
    "    (\",\" ws value)*\n"
    "  )? \"]\" ws\n"
    "\n"
    "string ::=\n"
    "  \"\\\"\" (\n"
    "    [^\"\\\\\\x7F\\x00-\\x1F] |\n"
    "    \"\\\\\" ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4}) # escapes\n"
    "  )* \"\\\"\" ws\n"
    "\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws\n"
    "\n"
    "# Optional space: by convention, applied in this grammar after literal chars when allowed\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static const char ARITH_GBNF[] = "root  ::= (expr \"=\" ws term \"\\n\")+\n"
                                 "expr  ::= term ([-+*/] term)*\n"
                                 "term  ::= ident | num | \"(\" ws expr \")\" ws\n"
                                 "ident ::= [a-z] [a-z0-9_]* ws\n"
                                 "num   ::= [0-9]+ ws\n"
                                 "ws    ::= [ \\t\\n]*\n";

static const char LIST_GBNF[] = "root ::= item+\n"
                                "\n"
                                "# Excludes various line break characters\n"
                                "item ::= \"- \" [^\\r\\n\\x0b\\x0c\\x85\\u2028\\u2029]+ \"\\n\"\n";

/* layout: continuation lines, a leading |, comments, CRLF, names with _ */
static const char LAYOUT_GBNF[] = "root ::= \"a\" # first\r\n"
                                  "       | \"b\"   # second, continued:\r\n"
                                  "  next_one\r\n"
                                  "\r\n"
                                  "next_one ::= ( \"c\"\n"
                                  "  | \"d\" ) # nested\n"
                                  "unused-rule ::= \"zzz\"";

typedef struct {
  const char *src;
  const char *name;
  const char *accept[10];
  const char *reject[10];
} gcase;

static const gcase GBNF_CASES[] = {
    {JSON_GBNF,
     "json",
     {"{}", "{ }", "{\"a\": 1}", "{\"a\":[1,2,{\"b\":null}], \"c\":\"x\\n\\u00e9\"}", "{\"k\": -0.5e+3}",
      "{\"\xc3\xa9\": true}", "{\n  \"a\": false\n}"},
     {"{\"a\":}", "[1]", "{\"a\":1,}", "{\"a\":01}", "{'a':1}", "{\"a\":\"\x01\"}", "{\"a\":\"\\x\"}", "{\"a\" 1}"}},
    {ARITH_GBNF,
     "arith",
     {"1+2=3\n", "(a+b)*c=x\n", "a = b\n1=2\n", "( x1 ) /2=y\n"},
     {"1+=3\n", "=1\n", "1=2", "A=1\n", "(a=b\n"}},
    {LIST_GBNF,
     "list",
     {"- foo\n", "- foo\n- bar \xc3\xa9\n"},
     {"- \n", "foo\n", "- a\n-", "- a\xe2\x80\xa8z\n", "- a\xc2\x85\n", ""}},
    {LAYOUT_GBNF, "layout", {"a", "bc", "bd"}, {"b", "ac", "c", "zzz", "abc"}},
    {"root ::= \"\\x41\\u00e9\\U0001F600\\t\\\"\\\\\" [\\[\\]]", "escapes", {"A\xc3\xa9\xf0\x9f\x98\x80\t\"\\[", "A\xc3\xa9\xf0\x9f\x98\x80\t\"\\]"}, {"A\xc3\xa9\xf0\x9f\x98\x80\t\"\\", "A"}},
    {"root ::= [^a]", "negated", {"b", "\n", "\xf4\x8f\xbf\xbf", "\xe2\x82\xac"}, {"a", "", "bb"}},
    {"root ::= \"\" | \"x\"", "empty literal", {"", "x"}, {"xx"}},
};

/* GBNF grammars with a regex equivalent: compared with PCRE2 on candidates */
typedef struct {
  const char *src, *pcre;
  const char *ex[6];
} gpcase;

static const gpcase GBNF_PCRE[] = {
    {"root ::= (\"ab\"{2,3} | [x-z]+) \".\" .?", "(?:(?:ab){2,3}|[x-z]+)\\.[\\s\\S]?", {"abab.", "ababab.\n", "xyz.q"}},
    {"root ::= a b* c\na ::= \"a\"+\nb ::= [0-9]{2} | \"-\"\nc ::= [^a-z]{1,}", "a+(?:[0-9]{2}|-)*[^a-z]+",
     {"a12-Z", "aa-0", "a\xc3\xa9"}},
    {"root ::= x{0,3} \"!\"\nx ::= (\"a\" | \"bc\")?", "(?:a|bc)?(?:a|bc)?(?:a|bc)?!", {"!", "abc!", "bcbca!"}},
    {"root ::= \"\\u00e9\"* [\\u0100-\\u017F\\U0001F600] ", "\\x{e9}*[\\x{100}-\\x{17f}\\x{1f600}]",
     {"\xc4\x80", "\xc3\xa9\xf0\x9f\x98\x80"}},
    {"root ::= (\"a\"*)* \"b\"", "(?:a*)*b", {"b", "aaab"}},
    {"root ::= [a-c]{3} [^\\n]{2,} \"\\n\"", "[a-c]{3}[^\\n]{2,}\\n", {"abcxx\n", "cccdefg\n"}},
};

static void run_gbnf_case(const gcase *t) {
  gr_grammar *g = NULL;
  gr_error err;
  int rc = gr_compile_gbnf(t->src, strlen(t->src), &g, &err);
  CHECK(rc == 0, "gbnf %s: compile failed %d (%s at %s: %s)", t->name, rc, err.what, err.where, err.msg);
  if (rc) return;
  gr_index *ix = NULL;
  if (gr_index_new(g, vocab, &ix)) {
    CHECK(0, "gbnf %s: index", t->name);
    gr_grammar_unref(g);
    return;
  }
  for (int i = 0; t->accept[i]; i++) {
    size_t n = strlen(t->accept[i]);
    CHECK(verdict(ix, t->accept[i], n) == 1, "gbnf %s: '%s' should match", t->name, show(t->accept[i], n));
    if (verdict(ix, t->accept[i], n) == 1) check_masks(ix, t->accept[i], n, t->name);
  }
  for (int i = 0; t->reject[i]; i++) {
    size_t n = strlen(t->reject[i]);
    CHECK(verdict(ix, t->reject[i], n) == 0, "gbnf %s: '%s' should not match", t->name, show(t->reject[i], n));
  }
  gr_index_free(ix);
  gr_grammar_unref(g);
}

static void run_gbnf_pcre_case(const gpcase *t) {
  gr_grammar *g = NULL;
  gr_error err;
  int rc = gr_compile_gbnf(t->src, strlen(t->src), &g, &err);
  CHECK(rc == 0, "gbnf '%s': compile failed %d (%s at %s: %s)", show(t->src, strlen(t->src)), rc, err.what, err.where,
        err.msg);
  if (rc) return;
  pcre2_code *pc = pcre(t->pcre, 1);
  gr_index *ix = NULL;
  if (!pc || gr_index_new(g, vocab, &ix)) {
    CHECK(0, "gbnf '%s': PCRE2 or index setup failed", t->src);
    pcre2_code_free(pc);
    gr_grammar_unref(g);
    return;
  }
  alpha A;
  alpha_init(&A, t->pcre, t->ex);
  alpha_text(&A, t->src);
  static cand c[MAX_CAND];
  int n = make_cands(c, &A, t->ex), pos = 0, bad = 0;
  for (int i = 0; i < n; i++) {
    int want = pcre_match(pc, c[i].s, c[i].n), got = verdict(ix, c[i].s, c[i].n);
    pos += want;
    if (want != got && bad++ < 5)
      CHECK(0, "gbnf '%s': '%s': PCRE2 %d, grammar %d", show(t->src, strlen(t->src)), show(c[i].s, c[i].n), want, got);
  }
  CHECK(bad == 0 && pos > 0, "gbnf '%s': %d of %d candidates disagree, %d matched", show(t->src, strlen(t->src)), bad,
        n, pos);
  gr_index_free(ix);
  pcre2_code_free(pc);
  gr_grammar_unref(g);
}

static const ecase GBNF_ERRORS[] = {
    {"root ::= foo", T_EINVAL, "foo", "offset 9"},
    {"root ::= \"a\" | bar-baz \"b\"\n", T_EINVAL, "bar-baz", "offset 15"},
    {"a ::= \"x\"", T_EINVAL, "root", ""},
    {"", T_EINVAL, "root", ""},
    {"root ::= \"abc", T_EINVAL, "unterminated string", "offset 9"},
    {"root ::= [abc", T_EINVAL, "unterminated class", "offset 9"},
    {"root ::= []", T_EINVAL, "empty class", "offset 9"},
    {"root ::= \"\\q\"", T_EINVAL, "escape", "offset 10"},
    {"root ::= \"\\x4\"", T_EINVAL, "escape", "offset 10"},
    {"root ::= \"\\U00110000\"", T_EINVAL, "escape", "offset 10"},
    {"root ::= [z-a]", T_EINVAL, "class range", "offset 10"},
    {"root ::= <[1000]>", T_EUNSUPPORTED, "token reference", "offset 9"},
    {"root ::= \"a\" <think>", T_EUNSUPPORTED, "token reference", "offset 13"},
    {"root ::= !<[1]>", T_EUNSUPPORTED, "token reference", "offset 9"},
    {"root ::= \"a\"\nroot ::= \"b\"", T_EINVAL, "root", "offset 13"},
    {"root ::= (\"a\"", T_EINVAL, "unbalanced '('", "offset 9"},
    {"root ::= \"a\")", T_EINVAL, "rule", "offset 12"},
    {"root ::= * \"a\"", T_EINVAL, "quantifier", "offset 9"},
    {"root ::= \"a\"{3,1}", T_EINVAL, "repetition", "offset 12"},
    {"root ::= \"a\"{x}", T_EINVAL, "repetition", "offset 12"},
    {"root ::= \"a\"{20000}", T_EUNSUPPORTED, "repetition count", "offset 12"},
    {"root = \"a\"", T_EINVAL, "rule", "offset 5"},
    {"::= \"a\"", T_EINVAL, "rule", "offset 0"},
    {"root ::= \"\xff\"", T_EINVAL, "UTF-8", "offset 10"},
};

/* ---- robustness: damaged regexes and grammars compile or fail cleanly ---- */
static void run_damaged(const char *src, int gbnf, int count) {
  size_t n = strlen(src);
  char *buf = malloc(n + 16);
  for (int r = 0; r < count; r++) {
    memcpy(buf, src, n);
    size_t m = n;
    int ops = 1 + (int)rnd(3);
    for (int o = 0; o < ops && m; o++) {
      size_t at = rnd((uint32_t)m);
      static const char pick[] = "()[]{}|*+?^$\\\"#:=-,.<>\n 0123456789aZ\x80\xc3\xff";
      switch (rnd(3)) {
      case 0:
        buf[at] = pick[rnd(sizeof pick - 1)];
        break;
      case 1:
        memmove(buf + at, buf + at + 1, m - at - 1), m--;
        break;
      default:
        if (m + 1 < n + 16) memmove(buf + at + 1, buf + at, m - at), buf[at] = pick[rnd(sizeof pick - 1)], m++;
      }
    }
    gr_grammar *g = NULL;
    gr_error err;
    int rc = gbnf ? gr_compile_gbnf(buf, m, &g, &err) : gr_compile_regex(buf, m, &g, &err);
    CHECK(rc == 0 || rc == T_EINVAL || rc == T_EUNSUPPORTED, "damaged %s '%s': rc %d", gbnf ? "gbnf" : "regex",
          show(buf, m), rc);
    CHECK((rc == 0) == (g != NULL), "damaged '%s': rc %d but grammar %p", show(buf, m), rc, (void *)g);
    CHECK(rc == 0 || (err.msg[0] && err.what[0]), "damaged '%s': rc %d without a message", show(buf, m), rc);
    if (g) { /* and it runs */
      gr_index *ix = NULL;
      if (!gr_index_new(g, vocab, &ix)) {
        gr_matcher mt;
        uint32_t mask[9];
        if (!gr_matcher_init(&mt, ix)) gr_matcher_mask(&mt, mask);
      }
      gr_index_free(ix);
    }
    gr_grammar_unref(g);
  }
  free(buf);
}

int main(void) {
  make_vocab();
  for (size_t i = 0; i < sizeof REGEXES / sizeof *REGEXES; i++) run_regex_case(&REGEXES[i]);
  run_random_regexes(400);
  for (size_t i = 0; i < sizeof PATTERNS / sizeof *PATTERNS; i++) run_pattern_case(&PATTERNS[i]);
  for (size_t i = 0; i < sizeof REGEX_ERRORS / sizeof *REGEX_ERRORS; i++) run_error_case(&REGEX_ERRORS[i], 0);
  for (size_t i = 0; i < sizeof GBNF_CASES / sizeof *GBNF_CASES; i++) run_gbnf_case(&GBNF_CASES[i]);
  for (size_t i = 0; i < sizeof GBNF_PCRE / sizeof *GBNF_PCRE; i++) run_gbnf_pcre_case(&GBNF_PCRE[i]);
  for (size_t i = 0; i < sizeof GBNF_ERRORS / sizeof *GBNF_ERRORS; i++) run_error_case(&GBNF_ERRORS[i], 1);
  for (size_t i = 0; i < sizeof REGEXES / sizeof *REGEXES; i++) run_damaged(REGEXES[i].re, 0, 50);
  for (size_t i = 0; i < sizeof GBNF_CASES / sizeof *GBNF_CASES; i++) run_damaged(GBNF_CASES[i].src, 1, 300);
  /* a refused `pattern` names the construct and both places */
  const char *sch = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"pattern\":\"x(?=a)\"}}}";
  gr_grammar *gs = NULL;
  gr_error es;
  int rcs = gr_compile_json_schema(sch, strlen(sch), 0, &gs, &es);
  CHECK(rcs == T_EUNSUPPORTED && !strcmp(es.what, "lookahead") && strstr(es.where, "pattern") &&
            strstr(es.where, "offset 1"),
        "schema pattern refusal: rc %d what '%s' where '%s'", rcs, es.what, es.where);
  gr_grammar_unref(gs);
  /* left recursion is refused by the lowering */
  gr_grammar *g = NULL;
  gr_error err;
  const char *lr = "root ::= root \"a\" | \"a\"";
  int rc = gr_compile_gbnf(lr, strlen(lr), &g, &err);
  CHECK(rc == T_EUNSUPPORTED && strstr(err.what, "left recursion"), "left recursion: rc %d what '%s'", rc, err.what);
  gr_grammar_unref(g);
  gr_vocab_free(vocab);
  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
