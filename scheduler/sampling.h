/* sampling.h (scheduler-internal): turning one row of logits into a token.
 *
 * Order of processing, as vLLM applies it: logit bias, min_tokens
 * suppression, repetition / presence / frequency penalties, then (unless
 * greedy) temperature, top-k, top-p, min-p, and one draw from the
 * sequence's own RNG. Log-probabilities reported to the client are those of
 * the model's raw distribution (log-softmax of the unprocessed logits). */
#ifndef MFS_SCHED_SAMPLING_H
#define MFS_SCHED_SAMPLING_H

#include <stdint.h>

#include "scheduler.h"

typedef struct smp_scratch {
  float *work;     /* [V] */
  int32_t *idx;    /* [V] */
  uint8_t *seen;   /* [V], all zero between calls */
  int V;
} smp_scratch;

int smp_scratch_init(smp_scratch *s, int V);
void smp_scratch_deinit(smp_scratch *s);

typedef struct smp_input {
  const float *logits;        /* [V] raw */
  const sched_sampling *p;
  const int32_t *prompt;      /* for the repetition penalty */
  int n_prompt;
  const int32_t *output;      /* generated so far */
  int n_output;
  const int32_t *suppress;    /* ids forced to -inf (min_tokens: EOS and stop ids) */
  int n_suppress;
  const uint32_t *allow;      /* NULL, or a bit per id (bit i%32 of word i/32): only set ids may be
                                 chosen (structured outputs); at least one must be set */
  const int32_t *argmax;      /* NULL, or the logits' argmax already found (eng_batch.argmax):
                                 plain greedy returns it without reading the logits */
} smp_input;

/* splitmix64: one draw per sampled token, so a seeded sequence's output
 * does not depend on what else is in the batch. */
uint64_t smp_rng_next(uint64_t *state);
uint64_t smp_rng_seed(uint64_t seed, int choice);

/* Returns the chosen token id. */
int32_t smp_sample(smp_scratch *s, const smp_input *in, uint64_t *rng);

/* Raw log-softmax: logprob of `tok`, and the n_top most likely ids with
 * theirs (descending). */
float smp_logprobs(const float *logits, int V, int32_t tok, int n_top, int32_t *top_ids, float *top_lps);

#endif
