/* sampling.c: see sampling.h. */
#include "sampling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "engine.h" /* eng_argmax */

int smp_scratch_init(smp_scratch *s, int V) {
  s->V = V;
  s->work = malloc((size_t)V * sizeof *s->work);
  s->idx = malloc((size_t)V * sizeof *s->idx);
  s->seen = calloc((size_t)V, 1);
  if (!s->work || !s->idx || !s->seen) {
    smp_scratch_deinit(s);
    return MFS_ENOMEM;
  }
  return 0;
}

void smp_scratch_deinit(smp_scratch *s) {
  free(s->work);
  free(s->idx);
  free(s->seen);
  memset(s, 0, sizeof *s);
}

uint64_t smp_rng_next(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t smp_rng_seed(uint64_t seed, int choice) {
  uint64_t st = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(choice + 1));
  return smp_rng_next(&st);
}

static const float *g_sort_key; /* qsort has no context argument; only the
                                   scheduler thread samples */
static int by_desc(const void *a, const void *b) {
  float x = g_sort_key[*(const int32_t *)a], y = g_sort_key[*(const int32_t *)b];
  if (x != y) return x < y ? 1 : -1;
  return *(const int32_t *)a - *(const int32_t *)b;
}

int32_t smp_sample(smp_scratch *s, const smp_input *in, uint64_t *rng) {
  const sched_sampling *p = in->p;
  int V = s->V;
  /* plain greedy (the common benchmark and eval case): argmax of the logits
   * as they are, no copy */
  if ((p->temperature <= 0 || p->top_k == 1) && !p->n_bias && !in->n_suppress &&
      (p->repetition_penalty <= 0 || p->repetition_penalty == 1.0f) && p->presence_penalty == 0 &&
      p->frequency_penalty == 0 && !in->allow)
    return in->argmax ? *in->argmax : eng_argmax(in->logits, V);
  float *w = s->work;
  memcpy(w, in->logits, (size_t)V * sizeof *w);
  for (int i = 0; i < p->n_bias; i++)
    if (p->bias_ids[i] >= 0 && p->bias_ids[i] < V) w[p->bias_ids[i]] += p->bias_vals[i];
  /* repetition penalty: once per distinct id of prompt + output */
  if (p->repetition_penalty > 0 && p->repetition_penalty != 1.0f) {
    for (int pass = 0; pass < 2; pass++) {
      const int32_t *t = pass ? in->output : in->prompt;
      int n = pass ? in->n_output : in->n_prompt;
      for (int i = 0; i < n; i++) {
        int32_t id = t[i];
        if (id < 0 || id >= V || s->seen[id]) continue;
        s->seen[id] = 1;
        w[id] = w[id] > 0 ? w[id] / p->repetition_penalty : w[id] * p->repetition_penalty;
      }
    }
    for (int pass = 0; pass < 2; pass++) {
      const int32_t *t = pass ? in->output : in->prompt;
      int n = pass ? in->n_output : in->n_prompt;
      for (int i = 0; i < n; i++)
        if (t[i] >= 0 && t[i] < V) s->seen[t[i]] = 0;
    }
  }
  /* presence / frequency penalties over generated tokens */
  if (p->presence_penalty != 0 || p->frequency_penalty != 0) {
    for (int i = 0; i < in->n_output; i++) {
      int32_t id = in->output[i];
      if (id < 0 || id >= V) continue;
      w[id] -= p->frequency_penalty;
      if (!s->seen[id]) w[id] -= p->presence_penalty;
      s->seen[id] = 1;
    }
    for (int i = 0; i < in->n_output; i++)
      if (in->output[i] >= 0 && in->output[i] < V) s->seen[in->output[i]] = 0;
  }
  for (int i = 0; i < in->n_suppress; i++)
    if (in->suppress[i] >= 0 && in->suppress[i] < V) w[in->suppress[i]] = -INFINITY;
  int first_allowed = -1;
  if (in->allow) {
    for (int i = 0; i < V; i++)
      if (!(in->allow[i >> 5] >> (i & 31) & 1)) w[i] = -INFINITY;
      else if (first_allowed < 0) first_allowed = i;
  }
  int best = eng_argmax(w, V);
  /* every allowed id at -inf or NaN (a bias of -inf, broken logits): the
   * constraint still holds */
  if (in->allow && first_allowed >= 0 && !(in->allow[best >> 5] >> (best & 31) & 1)) return first_allowed;
  if (p->temperature <= 0 || p->top_k == 1) return best;
  /* probabilities at temperature */
  double mx = w[best], sum = 0;
  float inv_t = 1.0f / p->temperature;
  for (int i = 0; i < V; i++) {
    w[i] = isinf(w[i]) && w[i] < 0 ? 0.0f : (float)exp(((double)w[i] - mx) * inv_t);
    sum += w[i];
  }
  for (int i = 0; i < V; i++) w[i] = (float)(w[i] / sum);
  int n = V;
  int need_sort = (p->top_k > 0 && p->top_k < V) || (p->top_p > 0 && p->top_p < 1);
  int32_t *ix = s->idx;
  for (int i = 0; i < V; i++) ix[i] = i;
  if (need_sort) {
    /* cut the tail cheaply before sorting: ids below 1e-6 of the max
     * probability cannot matter unless top-k asks for more ids than that */
    float pmax = w[best], thr = pmax * 1e-6f;
    int m = 0;
    for (int i = 0; i < V; i++)
      if (w[i] >= thr) ix[m++] = i;
    if (p->top_k > m) {
      m = V;
      for (int i = 0; i < V; i++) ix[i] = i;
    }
    g_sort_key = w;
    qsort(ix, (size_t)m, sizeof *ix, by_desc);
    n = m;
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    if (p->top_p > 0 && p->top_p < 1) {
      double total = 0, cum = 0;
      for (int i = 0; i < n; i++) total += w[ix[i]];
      for (int i = 0; i < n; i++) {
        cum += w[ix[i]] / total;
        if (cum >= p->top_p) {
          n = i + 1;
          break;
        }
      }
    }
  }
  double keep = 0;
  float minp = p->min_p > 0 ? p->min_p * w[best] : 0;
  for (int i = 0; i < n; i++)
    if (w[ix[i]] >= minp) keep += w[ix[i]];
  double u = (double)(smp_rng_next(rng) >> 11) * 0x1.0p-53 * keep;
  int32_t last = best;
  for (int i = 0; i < n; i++) {
    float pi = w[ix[i]];
    if (pi < minp || pi <= 0) continue;
    last = ix[i];
    u -= pi;
    if (u < 0) return ix[i];
  }
  return last;
}

float smp_logprobs(const float *logits, int V, int32_t tok, int n_top, int32_t *top_ids, float *top_lps) {
  double mx = -INFINITY, sum = 0;
  for (int i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
  for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
  double lse = mx + log(sum);
  /* top-n by insertion into a small sorted list */
  int k = 0;
  for (int i = 0; i < V && n_top > 0; i++) {
    float v = logits[i];
    if (k == n_top && v <= logits[top_ids[k - 1]]) continue;
    int j = k < n_top ? k++ : k - 1;
    while (j > 0 && logits[top_ids[j - 1]] < v) {
      top_ids[j] = top_ids[j - 1];
      j--;
    }
    top_ids[j] = i;
  }
  for (int i = 0; i < k; i++) top_lps[i] = (float)(logits[top_ids[i]] - lse);
  return tok >= 0 && tok < V ? (float)(logits[tok] - lse) : NAN;
}
