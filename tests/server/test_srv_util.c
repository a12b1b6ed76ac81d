/* test_srv_util.c: the server's helpers: JSON string escaping and numbers,
 * the request-id map (growth, deletion, tombstone reuse), histograms. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv_int.h"

static int fails;
#define CHECK(c)                                                 \
  do {                                                           \
    if (!(c)) {                                                  \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      fails++;                                                   \
    }                                                            \
  } while (0)

static void test_json(void) {
  sb b = {0};
  const char in[] = "a\"b\\c\n\t\x01\x1f\xc3\xa9";
  sb_json_str(&b, in, sizeof in - 1);
  CHECK(!strcmp(b.p, "\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\xc3\xa9\""));
  sb_free(&b);
  const char nul[] = {'x', 0, 'y'};
  sb_json_str(&b, nul, 3);
  CHECK(!strcmp(b.p, "\"x\\u0000y\""));
  sb_free(&b);
  sb_json_num(&b, -INFINITY);
  sb_puts(&b, " ");
  sb_json_num(&b, NAN);
  sb_puts(&b, " ");
  sb_json_num(&b, -0.25);
  CHECK(!strcmp(b.p, "-9999.0 null -0.25"));
  sb_free(&b);
  for (int i = 0; i < 1000; i++) sb_printf(&b, "%d,", i);
  CHECK(b.len == 3890 && !b.oom);
  char *t = sb_take(&b);
  CHECK(!strncmp(t, "0,1,2,", 6) && b.p == NULL);
  free(t);
  sb_printf(&b, "%s", "long-string-longer-than-the-stack-buffer-of-256-bytes-"
                      "..............................................................................."
                      "..............................................................................."
                      "...............................................................................end");
  CHECK(b.len > 256 && !strcmp(b.p + b.len - 3, "end"));
  sb_free(&b);
}

static void test_idmap(void) {
  srv_idmap m = {0};
  static int vals[5000];
  for (uint64_t k = 1; k <= 5000; k++) CHECK(srv_idmap_put(&m, k, &vals[k - 1]) == 0);
  CHECK(m.n == 5000);
  for (uint64_t k = 1; k <= 5000; k++) CHECK(srv_idmap_get(&m, k) == &vals[k - 1]);
  CHECK(srv_idmap_get(&m, 5001) == NULL);
  for (uint64_t k = 1; k <= 5000; k += 2) srv_idmap_del(&m, k);
  CHECK(m.n == 2500);
  for (uint64_t k = 1; k <= 5000; k++) CHECK(srv_idmap_get(&m, k) == (k % 2 ? NULL : &vals[k - 1]));
  /* churn: many put/del cycles must not grow the table without bound */
  size_t cap = m.cap;
  for (uint64_t k = 10000; k < 200000; k++) {
    CHECK(srv_idmap_put(&m, k, &vals[0]) == 0);
    srv_idmap_del(&m, k);
  }
  CHECK(m.n == 2500 && m.cap <= cap * 2);
  for (uint64_t k = 2; k <= 5000; k += 2) CHECK(srv_idmap_get(&m, k) == &vals[k - 1]);
  srv_idmap_free(&m);
}

static void test_hist(void) {
  srv_hist h = {.n = 3, .le = {0.1, 1, 10}};
  srv_hist_observe(&h, 0.05);
  srv_hist_observe(&h, 0.1);
  srv_hist_observe(&h, 5);
  srv_hist_observe(&h, 100);
  srv_hist_observe(&h, -1); /* clamped to 0 */
  CHECK(h.count[0] == 3 && h.count[1] == 0 && h.count[2] == 1 && h.total == 5);
  CHECK(fabs(h.sum - 105.15) < 1e-9);
}

/* srv_utf8_invalid_at against an independent decoder: a byte string is
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

static void test_utf8(void) {
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
      long want = oracle(buf, (size_t)len), got = srv_utf8_invalid_at((const char *)buf, (size_t)len);
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
          if (oracle(buf, 4) != srv_utf8_invalid_at((const char *)buf, 4) && bad++ < 10)
            fprintf(stderr, "utf8 4 bytes %02x %02x %02x %02x\n", buf[0], buf[1], buf[2], buf[3]);
        }
  CHECK(bad == 0);
  CHECK(checked > 15000);
  /* the oracle is not trivially agreeable: hand-picked answers */
  CHECK(srv_utf8_invalid_at("ab\xc3\xa9", 4) == -1);          /* e-acute */
  CHECK(srv_utf8_invalid_at("\xf0\x9f\x98\x80", 4) == -1);    /* U+1F600 */
  CHECK(srv_utf8_invalid_at("a\xc0\xaf", 3) == 1);             /* overlong '/' */
  CHECK(srv_utf8_invalid_at("ab\xed\xa0\x80", 5) == 2);        /* a surrogate */
  CHECK(srv_utf8_invalid_at("\xf4\x90\x80\x80", 4) == 0);     /* U+110000 */
  CHECK(srv_utf8_invalid_at("abc\xe2\x82", 5) == 3);           /* cut short */
  CHECK(srv_utf8_invalid_at("x\x80", 2) == 1);                 /* a lone continuation */
  CHECK(srv_utf8_invalid_at("", 0) == -1);
}

int main(void) {
  test_utf8();
  test_json();
  test_idmap();
  test_hist();
  if (fails) fprintf(stderr, "%d checks failed\n", fails);
  else printf("server util: all checks passed\n");
  return fails != 0;
}
