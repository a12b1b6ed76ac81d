/* bench_serve.h: the parts of `mfaserve bench serve` (cli/bench_serve.c)
 * that need no network, exposed so tests/bench can check them directly:
 * the random source and arrival sampler, the SSE chunk reader, and the
 * metric arithmetic. Not a public API; only cli/ and tests/bench include it.
 * Nothing here is thread-safe; the benchmark runs on one thread. */
#ifndef MFS_BENCH_SERVE_H
#define MFS_BENCH_SERVE_H

#include <stddef.h>
#include <stdint.h>

/* xoshiro256** seeded through splitmix64: same seed, same stream. */
typedef struct bsv_rng {
  uint64_t s[4];
} bsv_rng;
void bsv_rng_init(bsv_rng *r, uint64_t seed);
uint64_t bsv_rng_next(bsv_rng *r);
/* Uniform in the open interval (0, 1). */
double bsv_rng_uniform(bsv_rng *r);
/* Uniform integer in [lo, hi] (lo <= hi). */
int bsv_rng_int(bsv_rng *r, int lo, int hi);
/* Gamma(shape, scale) (Marsaglia-Tsang; shape < 1 by the boost
 * U^(1/shape)); mean shape*scale, variance shape*scale^2. shape > 0. */
double bsv_rng_gamma(bsv_rng *r, double shape, double scale);

/* Send times, as vLLM's benchmark_serving: t[0] = 0 and each gap is
 * Gamma(shape = burstiness, scale = 1 / (rate * burstiness)), so the mean
 * rate is `rate` req/s whatever the burstiness (1: Poisson; < 1 burstier;
 * > 1 more uniform). rate = INFINITY (or <= 0) sends all at t = 0.
 * t: [n] seconds from the start, non-decreasing. */
void bsv_arrivals(double *t, int n, double rate, double burstiness, uint64_t seed);

/* The stream of one request. bsv_stream_feed() takes response bytes as they
 * arrive (any split), stamps each `data:` chunk that carries output with
 * `now` (seconds): the first such chunk gives t_first, each later one an
 * inter-token gap. A chunk carries output when choices[0] has non-empty
 * text (or delta.content), or has no finish_reason yet (a token whose text
 * is still held back); the empty closing chunk with only a finish_reason
 * is not a token. usage.completion_tokens, when sent, is kept. */
typedef struct bsv_stream {
  char *line; /* partial line; from malloc, freed by bsv_stream_deinit */
  size_t len, cap;
  double t_first, t_last; /* seconds; valid when chunks > 0 */
  double *itl;            /* [n_itl] seconds; from malloc */
  int n_itl, cap_itl;
  int chunks;             /* chunks that carried output */
  long usage_tokens;      /* completion_tokens from usage, or -1 */
  int done;               /* saw data: [DONE] */
  int bad;                /* the stream sent an error object or unparsable JSON */
  char err[160];          /* what `bad` saw */
} bsv_stream;
void bsv_stream_init(bsv_stream *s);
void bsv_stream_deinit(bsv_stream *s);
/* 0, or MFS_ENOMEM (the stream is then unusable; count the request failed). */
int bsv_stream_feed(bsv_stream *s, const char *data, size_t n, double now);

/* One finished request as the metrics see it (times in seconds from its send). */
typedef struct bsv_result {
  int ok;
  int prompt_len;
  int output_tokens; /* usage if sent, else chunks */
  double ttft, e2el;
  const double *itl; /* [n_itl] */
  int n_itl;
} bsv_result;

/* Goodput SLOs in ms; <= 0 means not set. */
typedef struct bsv_slo {
  double ttft_ms, tpot_ms, e2el_ms;
} bsv_slo;

#define BSV_MAX_PCT 16
/* Mean, median, standard deviation and the asked percentiles of one metric, ms. */
typedef struct bsv_dist {
  double mean, median, std;
  double pct[BSV_MAX_PCT];
} bsv_dist;

typedef struct bsv_metrics {
  int completed, failed;
  long total_input, total_output;
  double duration;
  double request_throughput, request_goodput, output_throughput, total_token_throughput;
  int good;
  bsv_dist ttft, tpot, itl, e2el;
} bsv_metrics;

/* vLLM's calculate_metrics: over successful requests only, TTFT and E2EL
 * per request; TPOT = (e2el - ttft) / (output_tokens - 1) for requests with
 * more than one output token (0 for goodput otherwise); ITL over all gaps
 * of all requests; a request is good when every set SLO is >= its value.
 * Percentiles interpolate linearly between order statistics (numpy's
 * default). An empty metric reports zeros. 0, or MFS_ENOMEM with *m zeroed. */
int bsv_metrics_compute(bsv_metrics *m, const bsv_result *r, int n, double duration, const bsv_slo *slo,
                        const double *pcts, int npct);

/* numpy.percentile(v, p) of sorted v[n], linear interpolation; 0 if n == 0. */
double bsv_percentile(const double *sorted, int n, double p);

/* Parses SLOs "ttft:500 tpot:50,e2el:2000" (space or comma separated) into
 * *slo (keys not named keep their value). 0 or MFS_EINVAL. */
int bsv_slo_parse(bsv_slo *slo, const char *s);

#endif
