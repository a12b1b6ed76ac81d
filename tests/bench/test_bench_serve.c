/* test_bench_serve.c: the network-free parts of cli/bench_serve.c: the
 * gamma/Poisson arrival sampler reaches its documented mean rate (and
 * spread) over many draws, the SSE reader stamps the right chunks whatever
 * the byte split, and the metrics follow vLLM's definitions on hand-made
 * timings. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_serve.h"

static int fails;
#define CHECK(c)                                                        \
  do {                                                                  \
    if (!(c)) {                                                         \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); \
      fails++;                                                          \
    }                                                                   \
  } while (0)
#define NEAR(a, b, tol) CHECK(fabs((a) - (b)) <= (tol))

static void test_arrivals(void) {
  enum { N = 200000 };
  double *t = malloc(N * sizeof *t);
  const double bursts[] = {1.0, 0.5, 3.0};
  for (int b = 0; b < 3; b++) {
    double rate = 8.0, k = bursts[b];
    bsv_arrivals(t, N, rate, k, 42);
    CHECK(t[0] == 0);
    double sum = 0, sq = 0;
    int mono = 1;
    for (int i = 1; i < N; i++) {
      double g = t[i] - t[i - 1];
      mono &= g >= 0;
      sum += g, sq += g * g;
    }
    double mean = sum / (N - 1), var = sq / (N - 1) - mean * mean;
    CHECK(mono);
    /* mean gap 1/rate; gamma variance shape*scale^2 = 1/(k rate^2) */
    NEAR(1.0 / mean, rate, rate * 0.01);
    NEAR(var * rate * rate * k, 1.0, 0.05);
    printf("arrivals: burstiness %.1f: rate %.4f req/s (want %.1f), CV^2 %.4f (want %.4f)\n", k, 1.0 / mean, rate,
           var / (mean * mean), 1.0 / k);
  }
  /* same seed, same times; other seed, other times */
  double *u = malloc(N * sizeof *u);
  bsv_arrivals(t, 100, 4, 1, 7);
  bsv_arrivals(u, 100, 4, 1, 7);
  CHECK(!memcmp(t, u, 100 * sizeof *t));
  bsv_arrivals(u, 100, 4, 1, 8);
  CHECK(memcmp(t, u, 100 * sizeof *t));
  bsv_arrivals(t, 100, INFINITY, 1, 7);
  CHECK(t[99] == 0);
  free(t);
  free(u);
}

static const char *SSE =
    ": keep-alive\r\n\r\n"
    "data: {\"choices\":[{\"index\":0,\"text\":\"a\",\"finish_reason\":null}],\"usage\":null}\n\n"
    "data:{\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":null}]}\r\n\r\n" /* held-back token */
    "event: x\n"
    "data: {\"choices\":[{\"index\":0,\"text\":\"b\",\"finish_reason\":\"length\"}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n" /* not a token */
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n"
    "data: [DONE]\n\n";

static void test_sse(void) {
  size_t n = strlen(SSE);
  /* split after every k bytes; each data line gets the time of the feed call that completes it */
  for (size_t k = 1; k <= n; k = k < 8 ? k + 1 : k * 2) {
    bsv_stream s;
    bsv_stream_init(&s);
    double now = 0;
    for (size_t off = 0; off < n; off += k) {
      CHECK(bsv_stream_feed(&s, SSE + off, off + k <= n ? k : n - off, now) == 0);
      now += 1;
    }
    CHECK(s.chunks == 3);
    CHECK(s.n_itl == 2);
    CHECK(s.usage_tokens == 7);
    CHECK(s.done == 1);
    CHECK(!s.bad);
    if (s.n_itl == 2) NEAR(s.itl[0] + s.itl[1], s.t_last - s.t_first, 1e-9);
    bsv_stream_deinit(&s);
  }
  /* exact timestamps when fed line by line */
  bsv_stream s;
  bsv_stream_init(&s);
  const char *l1 = "data: {\"choices\":[{\"text\":\"x\"}]}\n", *l2 = "data: {\"choices\":[{\"text\":\"y\"}]}\n";
  bsv_stream_feed(&s, l1, strlen(l1), 10.0);
  bsv_stream_feed(&s, l2, strlen(l2), 10.25);
  bsv_stream_feed(&s, l2, strlen(l2), 10.75);
  CHECK(s.chunks == 3 && s.t_first == 10.0 && s.t_last == 10.75 && s.usage_tokens == -1);
  NEAR(s.itl[0], 0.25, 1e-12);
  NEAR(s.itl[1], 0.5, 1e-12);
  const char *e = "data: {\"error\":{\"message\":\"boom\",\"type\":\"InternalServerError\",\"code\":500}}\n";
  bsv_stream_feed(&s, e, strlen(e), 11);
  CHECK(s.bad && strstr(s.err, "boom"));
  bsv_stream_deinit(&s);
}

static void test_metrics(void) {
  double p[] = {0, 25, 50, 99, 100};
  double v[] = {1, 2, 3, 4, 5};
  NEAR(bsv_percentile(v, 5, 25), 2, 1e-12);
  NEAR(bsv_percentile(v, 5, 99), 4.96, 1e-12);
  NEAR(bsv_percentile(v, 4, 50), 2.5, 1e-12);
  double itl_a[] = {0.01, 0.01, 0.01}, itl_b[] = {0.02};
  bsv_result r[4] = {
      {.ok = 1, .prompt_len = 10, .output_tokens = 4, .ttft = 0.05, .e2el = 0.08, .itl = itl_a, .n_itl = 3},
      {.ok = 1, .prompt_len = 20, .output_tokens = 2, .ttft = 0.10, .e2el = 0.12, .itl = itl_b, .n_itl = 1},
      {.ok = 0, .prompt_len = 30},
      {.ok = 1, .prompt_len = 40, .output_tokens = 1, .ttft = 0.30, .e2el = 0.30},
  };
  bsv_metrics m;
  bsv_slo slo = {.ttft_ms = 200, .tpot_ms = 15};
  CHECK(bsv_metrics_compute(&m, r, 4, 2.0, &slo, p, 5) == 0);
  CHECK(m.completed == 3 && m.failed == 1);
  CHECK(m.total_input == 70 && m.total_output == 7);
  NEAR(m.request_throughput, 1.5, 1e-12);
  NEAR(m.output_throughput, 3.5, 1e-12);
  NEAR(m.total_token_throughput, 38.5, 1e-12);
  /* good: r0 (50 ms, tpot 10 ms); r1 tpot 20 ms > 15; r3 ttft 300 > 200 */
  CHECK(m.good == 1);
  NEAR(m.request_goodput, 0.5, 1e-12);
  NEAR(m.ttft.mean, 150, 1e-9);
  NEAR(m.ttft.median, 100, 1e-9);
  NEAR(m.ttft.pct[4], 300, 1e-9);
  /* TPOT only for output > 1: 10 ms and 20 ms */
  NEAR(m.tpot.mean, 15, 1e-9);
  NEAR(m.tpot.pct[0], 10, 1e-9);
  NEAR(m.itl.mean, 12.5, 1e-9);
  NEAR(m.itl.median, 10, 1e-9);
  NEAR(m.e2el.median, 120, 1e-9);
  NEAR(m.e2el.std, sqrt(((80 - 500 / 3.0) * (80 - 500 / 3.0) + (120 - 500 / 3.0) * (120 - 500 / 3.0) +
                         (300 - 500 / 3.0) * (300 - 500 / 3.0)) / 3),
       1e-9);
  /* nothing succeeded: zeros, no crash */
  CHECK(bsv_metrics_compute(&m, r + 2, 1, 1.0, NULL, p, 5) == 0);
  CHECK(m.completed == 0 && m.failed == 1 && m.ttft.mean == 0 && m.request_goodput == 0);

  bsv_slo s = {0};
  CHECK(bsv_slo_parse(&s, "ttft:500 tpot:50,e2el:2000.5") == 0);
  CHECK(s.ttft_ms == 500 && s.tpot_ms == 50 && s.e2el_ms == 2000.5);
  CHECK(bsv_slo_parse(&s, "itl:5") != 0);
  CHECK(bsv_slo_parse(&s, "ttft:") != 0);
  CHECK(bsv_slo_parse(&s, "ttft:-1") != 0);
  CHECK(bsv_slo_parse(&s, "ttft") != 0);
}

int main(void) {
  test_arrivals();
  test_sse();
  test_metrics();
  if (fails) fprintf(stderr, "%d checks failed\n", fails);
  else printf("ok\n");
  return fails != 0;
}
