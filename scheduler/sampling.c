/* sampling.c: see sampling.h. */
#include "sampling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* The first index of the largest value (NaNs never win), as the plain loop
 * `if (x[i] > x[best]) best = i` gives: a max over 16 lanes, then a scan for
 * its first occurrence. Greedy decoding runs it once per row and step over
 * the whole vocabulary (256 rows x 8192 ids: ~1.4 ms a step as scalar code,
 * which -O2 leaves it as), so both passes are written with the baseline
 * vector instructions of the architecture: SSE2 on x86-64 (MAXPS keeps the
 * second operand when one is NaN, so m never becomes NaN), Advanced SIMD on
 * aarch64 (FMAXNM returns the number when one operand is NaN). */
#if defined(__SSE2__)
#include <emmintrin.h>
static float vmax16(const float *x, int n) {
  __m128 m0 = _mm_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
  for (int i = 0; i < n; i += 16) {
    m0 = _mm_max_ps(_mm_loadu_ps(x + i), m0), m1 = _mm_max_ps(_mm_loadu_ps(x + i + 4), m1);
    m2 = _mm_max_ps(_mm_loadu_ps(x + i + 8), m2), m3 = _mm_max_ps(_mm_loadu_ps(x + i + 12), m3);
  }
  float m[4];
  _mm_storeu_ps(m, _mm_max_ps(_mm_max_ps(m0, m1), _mm_max_ps(m2, m3)));
  float mx = m[0];
  for (int k = 1; k < 4; k++) mx = m[k] > mx ? m[k] : mx;
  return mx;
}
static int vfind16(const float *x, int n, float v) { /* first i < n (n % 16 == 0) with x[i] == v, or n */
  __m128 t = _mm_set1_ps(v);
  for (int i = 0; i < n; i += 16) {
    int b = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(x + i), t)) | _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(x + i + 4), t)) << 4 |
            _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(x + i + 8), t)) << 8 |
            _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(x + i + 12), t)) << 12;
    if (b) return i + __builtin_ctz((unsigned)b);
  }
  return n;
}
#elif defined(__aarch64__)
#include <arm_neon.h>
static float vmax16(const float *x, int n) {
  float32x4_t m0 = vdupq_n_f32(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
  for (int i = 0; i < n; i += 16) {
    m0 = vmaxnmq_f32(vld1q_f32(x + i), m0), m1 = vmaxnmq_f32(vld1q_f32(x + i + 4), m1);
    m2 = vmaxnmq_f32(vld1q_f32(x + i + 8), m2), m3 = vmaxnmq_f32(vld1q_f32(x + i + 12), m3);
  }
  return vmaxnmvq_f32(vmaxnmq_f32(vmaxnmq_f32(m0, m1), vmaxnmq_f32(m2, m3)));
}
static int vfind16(const float *x, int n, float v) {
  float32x4_t t = vdupq_n_f32(v);
  for (int i = 0; i < n; i += 16) {
    uint32x4_t e = vorrq_u32(vorrq_u32(vceqq_f32(vld1q_f32(x + i), t), vceqq_f32(vld1q_f32(x + i + 4), t)),
                             vorrq_u32(vceqq_f32(vld1q_f32(x + i + 8), t), vceqq_f32(vld1q_f32(x + i + 12), t)));
    if (vmaxvq_u32(e))
      for (int j = i;; j++)
        if (x[j] == v) return j;
  }
  return n;
}
#else
static float vmax16(const float *x, int n) {
  float mx = -INFINITY;
  for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  return mx;
}
static int vfind16(const float *x, int n, float v) {
  for (int i = 0; i < n; i++)
    if (x[i] == v) return i;
  return n;
}
#endif

static int argmax_first(const float *x, int n) {
  int n16 = n & ~15;
  float mx = n16 ? vmax16(x, n16) : -INFINITY;
  for (int i = n16; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  int i = vfind16(x, n16, mx);
  for (; i < n; i++)
    if (x[i] == mx) return i;
  return 0; /* every value NaN or -inf: the plain loop also answers 0 */
}

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
    return in->argmax ? *in->argmax : argmax_first(in->logits, V);
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
  int best = argmax_first(w, V);
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
