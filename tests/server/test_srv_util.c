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

int main(void) {
  test_json();
  test_idmap();
  test_hist();
  if (fails) fprintf(stderr, "%d checks failed\n", fails);
  else printf("server util: all checks passed\n");
  return fails != 0;
}
