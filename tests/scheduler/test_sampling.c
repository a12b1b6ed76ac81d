/* test_sampling.c: scheduler/sampling.c against direct computations: each
 * filter keeps exactly the tokens it should, draws follow the filtered
 * distribution, penalties and bias move the logits as OpenAI / vLLM define
 * them, seeds reproduce, and reported logprobs are the raw log-softmax. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampling.h"

static int failures;
#define CHECK(c, ...)                                                  \
  do {                                                                 \
    if (!(c)) {                                                        \
      failures++;                                                      \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c);     \
      fprintf(stderr, __VA_ARGS__);                                    \
      fprintf(stderr, "\n");                                           \
    }                                                                  \
  } while (0)

#define V 50
static float logits[V];
static smp_scratch sc;

static sched_sampling base(void) {
  sched_sampling p;
  memset(&p, 0, sizeof p);
  p.top_p = 1;
  p.repetition_penalty = 1;
  return p;
}

static int draw(const sched_sampling *p, uint64_t *rng) {
  smp_input in = {logits, p, NULL, 0, NULL, 0, NULL, 0, NULL, NULL};
  return smp_sample(&sc, &in, rng);
}

/* probabilities softmax(logits / t) */
static void probs(double *pr, double t) {
  double mx = -1e30, s = 0;
  for (int i = 0; i < V; i++) mx = fmax(mx, logits[i]);
  for (int i = 0; i < V; i++) s += pr[i] = exp((logits[i] - mx) / t);
  for (int i = 0; i < V; i++) pr[i] /= s;
}

int main(void) {
  smp_scratch_init(&sc, V);
  uint64_t seed = 99;
  for (int i = 0; i < V; i++) logits[i] = (float)((smp_rng_next(&seed) >> 40) % 1000) / 250.0f; /* 0..4 */
  int best = 0;
  for (int i = 1; i < V; i++)
    if (logits[i] > logits[best]) best = i;
  uint64_t rng = 1;
  sched_sampling p = base();
  CHECK(draw(&p, &rng) == best, "greedy is not argmax");
  p.temperature = 1.0f;
  p.top_k = 1;
  CHECK(draw(&p, &rng) == best, "top_k=1 is not argmax");

  /* greedy over other vocabulary sizes (the vector passes and their tails):
   * the first index of the largest non-NaN value, ties, NaN and -inf mixed in;
   * only NaNs (or nothing above -inf) gives index 0 */
  static const int GV[] = {1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 8192, 8193, 50257};
  for (int gi = 0; gi < (int)(sizeof GV / sizeof GV[0]); gi++)
    for (int rep = 0; rep < 40; rep++) {
      int n = GV[gi];
      smp_scratch gs;
      smp_scratch_init(&gs, n);
      float *x = malloc((size_t)n * sizeof *x);
      int mode = rep % 5; /* 0 plain, 1 few values (ties), 2 NaNs, 3 -infs, 4 all NaN / -inf */
      for (int i = 0; i < n; i++) {
        uint64_t r = smp_rng_next(&seed);
        x[i] = mode == 1 ? (float)(r % 4) : (float)((r >> 40) % 100000) / 1000.0f - 50.0f;
        if (mode == 2 && r % 7 == 0) x[i] = NAN;
        if (mode == 3 && r % 5 == 0) x[i] = -INFINITY;
        if (mode == 4) x[i] = r % 2 ? NAN : -INFINITY;
      }
      if (mode == 2 && n > 1) x[n - 1] = 1e9f, x[(int)(smp_rng_next(&seed) % (uint64_t)n)] = 1e9f; /* a late winner */
      int want = -1;
      for (int i = 0; i < n; i++)
        if (!isnan(x[i]) && (want < 0 || x[i] > x[want])) want = i;
      if (want < 0) want = 0;
      sched_sampling gp = base();
      smp_input in = {x, &gp, NULL, 0, NULL, 0, NULL, 0, NULL, NULL};
      int got = smp_sample(&gs, &in, &rng);
      CHECK(got == want, "greedy argmax over %d ids (mode %d): got %d want %d", n, mode, got, want);
      free(x);
      smp_scratch_deinit(&gs);
    }

  /* top-k: only the k best appear, in proportion */
  double pr[V];
  probs(pr, 0.7);
  int order[V];
  for (int i = 0; i < V; i++) order[i] = i;
  for (int i = 0; i < V; i++)
    for (int j = i + 1; j < V; j++)
      if (pr[order[j]] > pr[order[i]]) {
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
      }
  p = base();
  p.temperature = 0.7f;
  p.top_k = 3;
  int cnt[V] = {0};
  const int N = 40000;
  for (int i = 0; i < N; i++) cnt[draw(&p, &rng)]++;
  double z = pr[order[0]] + pr[order[1]] + pr[order[2]];
  for (int i = 0; i < V; i++) {
    int in_top = i == order[0] || i == order[1] || i == order[2];
    if (!in_top) CHECK(cnt[i] == 0, "top_k=3 drew token %d outside the top 3", i);
    else CHECK(fabs(cnt[i] / (double)N - pr[i] / z) < 0.015, "top_k frequency of %d: %.4f vs %.4f", i, cnt[i] / (double)N, pr[i] / z);
  }

  /* top-p: the smallest set whose mass reaches p */
  p = base();
  p.temperature = 0.7f;
  p.top_p = 0.5f;
  memset(cnt, 0, sizeof cnt);
  int nucleus = 0;
  double cum = 0;
  while (cum < 0.5) cum += pr[order[nucleus++]];
  for (int i = 0; i < N; i++) cnt[draw(&p, &rng)]++;
  for (int r = 0; r < V; r++) {
    int id = order[r];
    if (r >= nucleus) CHECK(cnt[id] == 0, "top_p drew token of rank %d (nucleus %d)", r, nucleus);
    else CHECK(fabs(cnt[id] / (double)N - pr[id] / cum) < 0.015, "top_p frequency rank %d", r);
  }

  /* min-p: nothing below min_p * pmax */
  p = base();
  p.temperature = 0.7f;
  p.min_p = 0.3f;
  memset(cnt, 0, sizeof cnt);
  for (int i = 0; i < N; i++) cnt[draw(&p, &rng)]++;
  for (int i = 0; i < V; i++)
    if (pr[i] < 0.3 * pr[order[0]]) CHECK(cnt[i] == 0, "min_p drew %d (p %.4f < %.4f)", i, pr[i], 0.3 * pr[order[0]]);
  int kept = 0;
  for (int i = 0; i < V; i++) kept += cnt[i] > 0;
  CHECK(kept >= 2, "min_p kept only %d tokens", kept);

  /* logit bias and suppression */
  p = base();
  p.n_bias = 2;
  p.bias_ids[0] = best;
  p.bias_vals[0] = -100;
  p.bias_ids[1] = 7;
  p.bias_vals[1] = 100;
  CHECK(draw(&p, &rng) == 7, "logit bias +100 did not win");
  p.n_bias = 1;
  CHECK(draw(&p, &rng) == order[1], "logit bias -100 on the best should give the second");
  p = base();
  int32_t sup[1] = {best};
  smp_input in = {logits, &p, NULL, 0, NULL, 0, sup, 1, NULL, NULL};
  CHECK(smp_sample(&sc, &in, &rng) == order[1], "suppressed token chosen");

  /* presence / frequency: second best (gap g) beats best after 2 repeats of best */
  p = base();
  float gap = logits[best] - logits[order[1]];
  int32_t out[2] = {best, best};
  p.frequency_penalty = gap / 2 + 0.01f; /* 2 occurrences: 2 * (g/2 + .01) > g */
  smp_input in2 = {logits, &p, NULL, 0, out, 2, NULL, 0, NULL, NULL};
  CHECK(smp_sample(&sc, &in2, &rng) == order[1], "frequency penalty not applied per occurrence");
  p.frequency_penalty = 0;
  p.presence_penalty = gap + 0.01f;
  CHECK(smp_sample(&sc, &in2, &rng) == order[1], "presence penalty not applied");
  p.presence_penalty = gap / 2; /* once, not per occurrence: best stays */
  CHECK(smp_sample(&sc, &in2, &rng) == best, "presence penalty applied more than once");

  /* repetition penalty divides positive logits of tokens seen in the prompt */
  p = base();
  p.repetition_penalty = logits[best] / logits[order[1]] + 0.05f;
  int32_t prompt[3] = {best, best, 3};
  smp_input in3 = {logits, &p, prompt, 3, NULL, 0, NULL, 0, NULL, NULL};
  CHECK(smp_sample(&sc, &in3, &rng) == order[1], "repetition penalty not applied");
  for (int i = 0; i < V; i++) CHECK(sc.seen[i] == 0, "seen[] not cleared");

  /* seeds reproduce */
  p = base();
  p.temperature = 1.0f;
  uint64_t r1 = smp_rng_seed(5, 0), r2 = smp_rng_seed(5, 0), r3 = smp_rng_seed(5, 1);
  int same = 1, diff = 0;
  for (int i = 0; i < 50; i++) {
    int a = draw(&p, &r1), b = draw(&p, &r2), c = draw(&p, &r3);
    same &= a == b;
    diff += a != c;
  }
  CHECK(same, "same seed, different draws");
  CHECK(diff > 0, "choices 0 and 1 drew the same 50 tokens");

  /* logprobs: raw log-softmax, top-n sorted */
  int32_t ids[5];
  float lps[5];
  float lp = smp_logprobs(logits, V, 11, 5, ids, lps);
  probs(pr, 1.0);
  CHECK(fabs(lp - log(pr[11])) < 1e-5, "logprob %g vs %g", lp, log(pr[11]));
  for (int i = 0; i < 5; i++) {
    CHECK(ids[i] == order[i], "top %d is %d, want %d", i, ids[i], order[i]);
    CHECK(fabs(lps[i] - log(pr[order[i]])) < 1e-5, "top logprob %d", i);
  }
  smp_scratch_deinit(&sc);
  printf("%s\n", failures ? "FAILED" : "all sampling tests passed");
  return failures != 0;
}
