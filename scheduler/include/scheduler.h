/* scheduler.h: request lifecycle and continuous batching.
 *
 * One scheduler thread owns the waiting and running queues, the KV pool and
 * the engine context. Each step it: takes submitted and cancelled requests
 * from its inbox; schedules running decodes first (one token each), then
 * chunked prefills within the token budget (--max-num-batched-tokens) and up
 * to --max-num-seqs sequences; when the pool runs out of blocks it preempts
 * the most recently admitted sequence (frees its blocks; it is recomputed
 * later); runs the engine; samples; and emits events.
 *
 * Hand-offs: sched_request_submit / sched_request_cancel may be called from
 * any thread (the HTTP loop); they only append to the inbox and wake the
 * scheduler. Events go into a bounded queue; after appending, the scheduler
 * calls the notify callback (the server passes a function that calls
 * uv_async_send) and the consumer drains them all at once with
 * sched_events_take. Events are fixed-size records: nothing is allocated per
 * token.
 *
 * A request is identified by the id sched_request_submit returns. Its events
 * end with one SCHED_EV_FINISHED per choice; the last of them has
 * `last = 1`, after which the scheduler holds nothing of the request.
 */
#ifndef MFS_SCHEDULER_H
#define MFS_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "grammar.h"
#include "kvcache.h"

#define SCHED_MAX_LOGPROBS 20
#define SCHED_MAX_STOP_IDS 16
#define SCHED_MAX_BIAS 300
#define SCHED_MAX_SPEC 16 /* draft tokens per sequence and step at most */

typedef struct sched_sampling {
  float temperature;        /* 0: greedy */
  float top_p;              /* 1: off */
  int top_k;                /* <= 0: off */
  float min_p;              /* 0: off */
  float repetition_penalty; /* 1: off (CTRL-style, over prompt and output) */
  float presence_penalty;   /* 0: off (over output tokens, OpenAI semantics) */
  float frequency_penalty;  /* 0: off */
  int has_seed;
  uint64_t seed;            /* with has_seed, the output is reproducible */
  int n_bias;
  int32_t bias_ids[SCHED_MAX_BIAS];
  float bias_vals[SCHED_MAX_BIAS];
} sched_sampling;

typedef struct sched_request_params {
  const int32_t *prompt;    /* copied at submit */
  int n_prompt;             /* >= 1 */
  int max_tokens;           /* >= 0; 0 only makes sense with prompt_logprobs */
  int min_tokens;           /* EOS and stop ids are suppressed before this many */
  int ignore_eos;
  int n_stop_ids;
  int32_t stop_ids[SCHED_MAX_STOP_IDS];
  int n;                    /* choices, >= 1: the prompt is computed once and forked */
  int priority;             /* lower runs first; ties: first come, first served */
  int logprobs;             /* -1: none; 0..20: chosen token's logprob + this many top */
  int prompt_logprobs;      /* -1: none; 0..20: logprob of each prompt token (echo) */
  sched_sampling sampling;
  /* Structured output: NULL, or the constraint every choice's output must
   * match (its index's vocabulary is the model's). Submit takes a
   * reference, dropped when the request ends; masks are computed and the
   * matcher advanced on the scheduler thread only, so the caller must not
   * use the index's matchers while requests hold it. A choice ends with
   * STOP as soon as its text is complete and nothing may follow, or when it
   * samples EOS where the text is complete (EOS is allowed only there);
   * with max_tokens first, LENGTH (the value may be incomplete). */
  gr_index *constraint;
} sched_request_params;

typedef enum {
  SCHED_FINISH_STOP = 0,  /* EOS or a stop id */
  SCHED_FINISH_LENGTH,    /* max_tokens or the context limit */
  SCHED_FINISH_CANCELLED, /* sched_request_cancel */
  SCHED_FINISH_ERROR,     /* see the event's err */
  SCHED_FINISH_ABORTED,   /* ended by shutdown */
  SCHED_FINISH_N
} sched_finish;

const char *sched_finish_name(sched_finish f); /* "stop", "length", "cancelled", "error", "aborted" */

typedef enum { SCHED_EV_TOKEN = 0, SCHED_EV_PROMPT_LOGPROB, SCHED_EV_FINISHED } sched_event_type;

typedef struct sched_event {
  sched_event_type type;
  uint64_t req;            /* request id */
  int choice;              /* 0..n-1 */
  /* TOKEN: the sampled token; PROMPT_LOGPROB: prompt token at `index` */
  int32_t token;
  int index;               /* position among generated (TOKEN) or prompt tokens */
  float logprob;           /* NAN when not asked for (or first prompt token) */
  int n_top;
  int32_t top_ids[SCHED_MAX_LOGPROBS];
  float top_logprobs[SCHED_MAX_LOGPROBS];
  double t;                /* mfs_now() when emitted */
  /* FINISHED */
  sched_finish finish;
  int last;                /* last event of the request */
  int err;                 /* FINISH_ERROR: MFS_* */
  int prompt_tokens, completion_tokens, cached_tokens;
  double t_arrival, t_scheduled, t_first_token; /* mfs_now() times (TOKEN events carry them too) */
} sched_event;

typedef struct sched_opts {
  int max_num_seqs;           /* running sequences at most */
  int max_num_batched_tokens; /* tokens per step at most */
  int max_queued;             /* waiting requests at most (then SCHED_QUEUE_FULL) */
  int max_model_len;          /* prompt + output limit; <= 0: model's */
  int block_size;
  uint64_t kv_bytes;
  kvc_dtype kv_dtype;
  int n_threads;
  int event_capacity;         /* events queued for the consumer; 0: default */
  void (*notify)(void *u);    /* called (scheduler thread) after events are queued */
  void *notify_u;
  kvc_event_fn kv_event_fn;   /* NULL, or the pool's prefix-cache events (scheduler thread; kvcache.h) */
  void *kv_event_u;
  /* Prompt-lookup (n-gram) speculative decoding; spec_tokens 0: off. Each
   * decode step, a sequence whose last spec_ngram_max..spec_ngram_min
   * tokens (longest first) occurred before in its prompt or output gets
   * the up to spec_tokens tokens that followed the most recent occurrence
   * as a draft; the engine computes the pending token and the draft in one
   * step, and the tokens are then sampled one by one from those rows
   * exactly as without speculation (same filters, same RNG draws), the
   * draft kept while it agrees with what was sampled. For a draft token d
   * this accepts d with probability p(d) and otherwise samples from p
   * without d, renormalized: rejection sampling with a point-mass draft,
   * so outputs are distributed as without speculation, and a seeded or
   * greedy request gives the same tokens (up to the engine's rounding in
   * a batch of another shape, as for any change of batch). Drafts use
   * step budget left after one token for every running sequence, and only
   * as many tokens as pay for their verification (spec_row_cost). */
  int spec_tokens;            /* 0..SCHED_MAX_SPEC */
  int spec_ngram_min, spec_ngram_max; /* 1 <= min <= max */
  /* The time one more token in a step adds, as a fraction of a one-token
   * step (a step of two rows or more pays it once more: the one-row
   * product is a faster kernel); 0: 0.3, measured on the bundled model at
   * batch 1 on 2 cores. The draft's length is chosen per sequence from it,
   * the rows in the step and the sequence's recent acceptance rate
   * (sched.c spec_len); near 0 every draft is as long as the match
   * allows (tests). */
  double spec_row_cost;
} sched_opts;

typedef struct sched sched;

/* Normal outcomes of submit */
#define SCHED_QUEUE_FULL 1
#define SCHED_DRAINING 2

/* Creates the pool, the engine context and the scheduler thread. The model
 * must outlive the scheduler. 0, MFS_EINVAL, MFS_ENOMEM. */
int sched_new(sched **out, const eng_model *m, const sched_opts *o);
/* Stops the thread (ending what runs with ABORTED), frees everything. */
void sched_free(sched *s);

/* Any thread. Validates (token ids, lengths against max_model_len, ranges)
 * and queues. Returns 0 and *id, MFS_EINVAL/MFS_ERANGE for a bad request,
 * SCHED_QUEUE_FULL, SCHED_DRAINING, or MFS_ENOMEM. */
int sched_request_submit(sched *s, const sched_request_params *p, uint64_t *id);
/* Any thread. Ends the request within one step with FINISH_CANCELLED
 * (nothing if it already finished). */
void sched_request_cancel(sched *s, uint64_t id);

/* Any thread. Ends one choice of a request (e.g. its stop string matched)
 * with FINISH_CANCELLED; the other choices go on. Nothing happens if that
 * choice already finished. Before the first token (the choices do not
 * exist yet) it ends the whole request like sched_request_cancel. */
void sched_request_cancel_choice(sched *s, uint64_t id, int choice);

/* Any thread (normally the consumer's). Moves up to max queued events into
 * out; returns how many. */
int sched_events_take(sched *s, sched_event *out, int max);

/* Stop admitting (submit returns SCHED_DRAINING); running and waiting
 * requests continue. */
void sched_drain(sched *s);
/* End every request now with FINISH_ABORTED. */
void sched_abort_all(sched *s);

typedef struct sched_stats {
  int running, waiting, draining;
  kvc_stats kv; /* the pool's counts, except that the prefix-cache queries
                   and hits count admitted sequences only (an admission tried
                   again while the pool is full is counted once) */
  int64_t prompt_tokens_total;     /* prompt tokens computed (not cached) */
  int64_t generation_tokens_total;
  int64_t preemptions_total;
  int64_t steps_total;             /* engine steps run */
  double step_seconds_total;       /* wall time of those steps, planning to sampling */
  double forward_seconds_total;    /* the engine's part of it (eng_forward) */
  int64_t finished_total[SCHED_FINISH_N];
  int max_model_len, max_num_seqs, block_size;
  /* speculative decoding (vLLM's spec_decode_* counters): sequence-steps
   * that carried a draft, draft tokens proposed, draft tokens accepted, and
   * acceptances by position in the draft (0 = first draft token) */
  int spec_tokens;
  int64_t spec_drafts_total, spec_draft_tokens_total, spec_accepted_tokens_total;
  int64_t spec_accepted_per_pos_total[SCHED_MAX_SPEC];
} sched_stats;

/* Any thread: a consistent snapshot, published at the end of each step: it
 * may trail the events of the step just run (sched_events_take can return a
 * request's FINISHED before its blocks show as freed here). */
void sched_get_stats(sched *s, sched_stats *out);

/* Any thread: for the cache map. Writes, for each of up to max blocks, its
 * state (0 free, 1 cached-free, 2 used) and ref count, and for each running
 * sequence (up to max_seqs) its request id, choice and block table length
 * into seqs; returns the number of blocks written. Block tables are copied
 * into tables (seq i's blocks at tables[i*max_table .. ]). */
typedef struct sched_seq_view {
  uint64_t req;
  int choice, n_tokens, n_blocks;
} sched_seq_view;
int sched_cache_snapshot(sched *s, uint8_t *state, uint16_t *refs, int max_blocks, sched_seq_view *seqs,
                         int max_seqs, int *n_seqs, int32_t *tables, int max_table);

/* Any thread: the distinct hashes of the indexed (prefix-cache) blocks, as
 * of the snapshot sched_cache_snapshot last returned or a newer one (the
 * two agree while nothing runs); ascending, up to max. Returns how many. */
int sched_cache_hashes(sched *s, uint64_t *out, int max);

#endif
