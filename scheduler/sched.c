/* sched.c: the scheduler thread (see scheduler.h).
 *
 * State owned by the scheduler thread alone: the waiting and running lists,
 * every sseq/sreq reachable from them, the KV pool and the engine context.
 * Shared with other threads, each under its own mutex: the inbox (new
 * requests, cancel ids, drain/abort flags; mu), the event ring (ev_mu),
 * the stats snapshot and cache map (snap_mu).
 *
 * Invariants between steps:
 * - a running sequence has a kvc_seq holding exactly n_computed tokens, and
 *   n_toks - n_computed >= 1 (the last sampled token is not yet computed,
 *   or the prompt is not finished);
 * - a waiting sequence holds no blocks (kv == NULL);
 * - a request is freed only after its last FINISHED event is queued.
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "sampling.h"
#include "scheduler.h"

typedef struct sreq sreq;

typedef struct sseq {
  struct sseq *prev, *next; /* waiting or running list */
  sreq *r;
  int choice;
  kvc_seq *kv;              /* NULL while waiting */
  int32_t *toks;            /* prompt + generated, [cap_toks] */
  int n_toks, cap_toks;
  int n_computed;           /* tokens whose KV is in the pool */
  int n_out;                /* generated tokens */
  uint64_t rng;
  uint64_t admit_order;     /* larger = admitted later (preemption victim) */
  int running;
  gr_matcher gm;            /* structured output: where the text so far stands (gm.ix NULL: none) */
  float spec_hit, spec_try; /* speculation: draft tokens accepted / tried lately (decaying sums) */
} sseq;

struct sreq {
  sreq *next_all;           /* in s->reqs, or in s->dead once finished */
  uint64_t id;
  sched_request_params p;
  int32_t *prompt;          /* owned copy */
  uint64_t arrival_order;
  sseq **seqs;              /* [p.n]; NULL entries until forked */
  int n_live;               /* sequences not yet finished */
  int forked;
  int cancelled;
  int prompt_lp_next;       /* next prompt index to emit a logprob for */
  int cached_tokens;
  double t_arrival, t_scheduled, t_first_token;
};

typedef struct { sseq *head, *tail; int n; } sq_list;

struct sched {
  const eng_model *m;
  const eng_model_info *info;
  sched_opts o;
  eng_ctx *eng;
  kvc_pool *kv;
  smp_scratch smp;
  pthread_t th;
  int th_started;

  /* inbox */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  sreq *inbox_head, *inbox_tail;
  int inbox_n;
  struct sched_cancel { uint64_t id; int choice; } *cancels; /* choice -1: all */
  int n_cancels, cap_cancels;
  int stop, draining, abort_req, snap_wanted;
  uint64_t next_id;
  int queued_total; /* waiting + inbox, for the queue bound (under mu) */

  /* scheduler-thread state */
  sq_list waiting, running;
  sreq *reqs;
  sreq *dead;          /* finished this step; freed when the step ends, so
                          pointers taken during the step stay valid */
  uint64_t arrival_counter, admit_counter;
  int64_t prefix_queries, prefix_hits; /* tokens, counted at admission */
  float *logits;       /* [max_num_batched_tokens][V] */
  int32_t *argmax;     /* [max_num_batched_tokens]: each logits row's argmax (eng_batch.argmax) */
  eng_seq_step *steps; /* [max_num_seqs] */
  sseq **step_seqs;
  int *step_row;       /* first logits row of each step's sequence */
  int *step_n;         /* tokens of each step's sequence */
  int32_t *step_tokens;
  int32_t *suppress;
  uint32_t *gmask;     /* [ceil(V/32)] the constrained sequence's allowed ids */
  int *step_draft_n;   /* draft tokens of each step's sequence (0: none) */
  int32_t *step_draft; /* [max_num_seqs][SCHED_MAX_SPEC] the drafts */

  /* events */
  pthread_mutex_t ev_mu;
  pthread_cond_t ev_space;
  sched_event *ring;
  int ev_cap, ev_head, ev_n;

  /* counters, written by the scheduler thread only; published into st */
  sched_stats ctr;

  /* stats and cache map */
  pthread_mutex_t snap_mu;
  sched_stats st;
  uint8_t *snap_state;
  uint16_t *snap_refs;
  int snap_blocks;
  sched_seq_view *snap_seqs;
  int32_t *snap_tables;
  int snap_nseqs, snap_max_table;
  uint64_t *snap_hashes; /* [blocks_total] distinct indexed hashes */
  int snap_nhashes;
};

/* ------------------------------------------------------------- lists */

static void sq_push_back(sq_list *l, sseq *q) {
  q->prev = l->tail;
  q->next = NULL;
  if (l->tail) l->tail->next = q;
  else l->head = q;
  l->tail = q;
  l->n++;
}

static void sq_remove(sq_list *l, sseq *q) {
  if (q->prev) q->prev->next = q->next;
  else l->head = q->next;
  if (q->next) q->next->prev = q->prev;
  else l->tail = q->prev;
  q->prev = q->next = NULL;
  l->n--;
}

/* waiting is ordered by (priority, arrival): lower first */
static int sq_before(const sseq *a, const sseq *b) {
  if (a->r->p.priority != b->r->p.priority) return a->r->p.priority < b->r->p.priority;
  if (a->r->arrival_order != b->r->arrival_order) return a->r->arrival_order < b->r->arrival_order;
  return a->choice < b->choice;
}

static void sq_insert_waiting(sq_list *l, sseq *q) {
  sseq *at = l->tail;
  while (at && sq_before(q, at)) at = at->prev;
  if (!at) { /* at the front */
    q->prev = NULL;
    q->next = l->head;
    if (l->head) l->head->prev = q;
    else l->tail = q;
    l->head = q;
    l->n++;
    return;
  }
  q->prev = at;
  q->next = at->next;
  if (at->next) at->next->prev = q;
  else l->tail = q;
  at->next = q;
  l->n++;
}

const char *sched_finish_name(sched_finish f) {
  static const char *n[] = {"stop", "length", "cancelled", "error", "aborted"};
  return (unsigned)f < SCHED_FINISH_N ? n[f] : "?";
}

/* ------------------------------------------------------------ events */

static sched_event *ev_slot(sched *s) {
  pthread_mutex_lock(&s->ev_mu);
  /* the consumer (loop thread) never blocks, so waiting here is bounded */
  while (s->ev_n == s->ev_cap) {
    pthread_mutex_unlock(&s->ev_mu);
    if (s->o.notify) s->o.notify(s->o.notify_u);
    pthread_mutex_lock(&s->ev_mu);
    if (s->ev_n == s->ev_cap) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 10 * 1000000;
      if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
      pthread_cond_timedwait(&s->ev_space, &s->ev_mu, &ts);
    }
  }
  sched_event *e = &s->ring[(s->ev_head + s->ev_n) % s->ev_cap];
  memset(e, 0, offsetof(sched_event, top_ids));
  e->n_top = 0;
  e->logprob = NAN;
  return e; /* ev_mu held: ev_commit releases it */
}

static void ev_commit(sched *s) {
  s->ev_n++;
  pthread_mutex_unlock(&s->ev_mu);
}

int sched_events_take(sched *s, sched_event *out, int max) {
  pthread_mutex_lock(&s->ev_mu);
  int n = MFS_MIN(max, s->ev_n);
  for (int i = 0; i < n; i++) out[i] = s->ring[(s->ev_head + i) % s->ev_cap];
  s->ev_head = (s->ev_head + n) % s->ev_cap;
  s->ev_n -= n;
  if (n) pthread_cond_signal(&s->ev_space);
  pthread_mutex_unlock(&s->ev_mu);
  return n;
}

/* ------------------------------------------------------- request life */

static void req_free(sreq *r) {
  if (!r) return;
  if (r->seqs)
    for (int i = 0; i < r->p.n; i++)
      if (r->seqs[i]) {
        free(r->seqs[i]->toks);
        free(r->seqs[i]);
      }
  free(r->seqs);
  free(r->prompt);
  gr_index_unref(r->p.constraint);
  free(r);
}

static void reqs_unlink(sched *s, sreq *r) {
  for (sreq **pp = &s->reqs; *pp; pp = &(*pp)->next_all)
    if (*pp == r) {
      *pp = r->next_all;
      return;
    }
}

/* Ends one sequence: frees its blocks (full ones stay cached), emits
 * FINISHED, and frees the request after its last sequence. */
static void seq_finish(sched *s, sseq *q, sched_finish why, int err) {
  sreq *r = q->r;
  if (q->running) sq_remove(&s->running, q);
  else if (q->prev || q->next || s->waiting.head == q) sq_remove(&s->waiting, q);
  q->running = 0;
  kvc_seq_free(s->kv, q->kv);
  q->kv = NULL;
  r->n_live--;
  /* an unforked request ends all of its choices at once */
  int ending = 1 + (!r->forked ? r->p.n - 1 : 0);
  if (!r->forked) r->n_live = 0;
  s->ctr.finished_total[why] += ending;
  for (int c = 0; c < ending; c++) {
    sched_event *e = ev_slot(s);
    e->type = SCHED_EV_FINISHED;
    e->req = r->id;
    e->choice = r->forked ? q->choice : c;
    e->finish = why;
    e->err = err;
    e->t = mfs_now();
    e->prompt_tokens = r->p.n_prompt;
    e->completion_tokens = r->forked || c == 0 ? q->n_out : 0;
    e->cached_tokens = r->cached_tokens;
    e->t_arrival = r->t_arrival;
    e->t_scheduled = r->t_scheduled;
    e->t_first_token = r->t_first_token;
    e->last = r->n_live == 0 && c == ending - 1;
    ev_commit(s);
  }
  if (r->n_live == 0) {
    reqs_unlink(s, r);
    r->next_all = s->dead;
    s->dead = r;
  }
}

static void free_dead(sched *s) {
  while (s->dead) {
    sreq *r = s->dead;
    s->dead = r->next_all;
    req_free(r);
  }
}

/* Room in q->toks for at least `need` tokens (doubling). 0 or MFS_ENOMEM. */
static int seq_toks_room(sseq *q, int need) {
  while (need > q->cap_toks) {
    int cap = q->cap_toks * 2;
    int32_t *n = realloc(q->toks, (size_t)cap * sizeof *n);
    if (!n) return MFS_ENOMEM;
    q->toks = n;
    q->cap_toks = cap;
  }
  return 0;
}

static int seq_push_token(sseq *q, int32_t t) {
  if (seq_toks_room(q, q->n_toks + 1)) return MFS_ENOMEM;
  q->toks[q->n_toks++] = t;
  return 0;
}

/* Frees the blocks of a running sequence and puts it back in the waiting
 * queue; it recomputes prompt + generated tokens when readmitted. */
static void seq_preempt(sched *s, sseq *q) {
  sq_remove(&s->running, q);
  q->running = 0;
  kvc_seq_free(s->kv, q->kv);
  q->kv = NULL;
  q->n_computed = 0;
  sq_insert_waiting(&s->waiting, q);
  s->ctr.preemptions_total++;
  mfs_log(MFS_LOG_DEBUG, "sched", "preempted request %llu choice %d (%d tokens to recompute)",
          (unsigned long long)q->r->id, q->choice, q->n_toks);
}

/* ------------------------------------------------------------- submit */

int sched_request_submit(sched *s, const sched_request_params *p, uint64_t *id) {
  const eng_model_info *in = s->info;
  if (!p || !p->prompt || p->n_prompt < 1 || p->n < 1 || p->n > s->o.max_num_seqs || p->max_tokens < 0 ||
      p->min_tokens < 0 || p->n_stop_ids < 0 || p->n_stop_ids > SCHED_MAX_STOP_IDS || p->logprobs > SCHED_MAX_LOGPROBS ||
      p->prompt_logprobs > SCHED_MAX_LOGPROBS || p->sampling.n_bias < 0 || p->sampling.n_bias > SCHED_MAX_BIAS ||
      !(p->sampling.temperature >= 0) || !(p->sampling.top_p >= 0 && p->sampling.top_p <= 1) ||
      !(p->sampling.min_p >= 0 && p->sampling.min_p <= 1) || !(p->sampling.repetition_penalty >= 0))
    return MFS_EINVAL;
  for (int i = 0; i < p->n_prompt; i++)
    if (p->prompt[i] < 0 || p->prompt[i] >= in->vocab) return MFS_EINVAL;
  if (p->n_prompt + (p->max_tokens > 0 ? 1 : 0) > s->o.max_model_len) return MFS_ERANGE;
  kvc_stats ks;
  pthread_mutex_lock(&s->snap_mu);
  ks = s->st.kv;
  pthread_mutex_unlock(&s->snap_mu);
  if (p->n_prompt + 1 > ks.tokens_capacity) return MFS_ERANGE;
  if (mfs_fault("sched_submit")) return MFS_ENOMEM; /* test hook: the allocation below failing */
  sreq *r = calloc(1, sizeof *r);
  if (!r) return MFS_ENOMEM;
  r->p = *p;
  gr_index_ref(r->p.constraint);
  r->prompt = malloc((size_t)p->n_prompt * sizeof *r->prompt);
  r->seqs = calloc((size_t)p->n, sizeof *r->seqs);
  sseq *q = calloc(1, sizeof *q);
  int cap = p->n_prompt + MFS_MIN(p->max_tokens, 256) + 1;
  if (q) q->toks = malloc((size_t)cap * sizeof *q->toks);
  if (!r->prompt || !r->seqs || !q || !q->toks) {
    if (q) free(q->toks);
    free(q);
    req_free(r);
    return MFS_ENOMEM;
  }
  memcpy(r->prompt, p->prompt, (size_t)p->n_prompt * sizeof *r->prompt);
  r->p.prompt = r->prompt;
  memcpy(q->toks, p->prompt, (size_t)p->n_prompt * sizeof *q->toks);
  q->n_toks = p->n_prompt;
  q->cap_toks = cap;
  q->r = r;
  r->seqs[0] = q;
  r->n_live = 1;
  r->t_arrival = mfs_now();
  pthread_mutex_lock(&s->mu);
  if (s->draining || s->stop) {
    pthread_mutex_unlock(&s->mu);
    req_free(r);
    return SCHED_DRAINING;
  }
  if (s->queued_total >= s->o.max_queued) {
    pthread_mutex_unlock(&s->mu);
    req_free(r);
    return SCHED_QUEUE_FULL;
  }
  r->id = ++s->next_id;
  uint64_t seed = p->sampling.has_seed ? p->sampling.seed : r->id * 0x9E3779B97F4A7C15ull ^ (uint64_t)(r->t_arrival * 1e9);
  q->rng = smp_rng_seed(seed, 0);
  s->queued_total++;
  if (s->inbox_tail) s->inbox_tail->next_all = r;
  else s->inbox_head = r;
  s->inbox_tail = r;
  s->inbox_n++;
  *id = r->id;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

void sched_request_cancel_choice(sched *s, uint64_t id, int choice) {
  pthread_mutex_lock(&s->mu);
  if (s->n_cancels == s->cap_cancels) {
    int cap = s->cap_cancels ? 2 * s->cap_cancels : 64;
    struct sched_cancel *n = realloc(s->cancels, (size_t)cap * sizeof *n);
    if (n) {
      s->cancels = n;
      s->cap_cancels = cap;
    }
  }
  if (s->n_cancels < s->cap_cancels) s->cancels[s->n_cancels++] = (struct sched_cancel){id, choice};
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

void sched_request_cancel(sched *s, uint64_t id) { sched_request_cancel_choice(s, id, -1); }

void sched_drain(sched *s) {
  pthread_mutex_lock(&s->mu);
  s->draining = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

void sched_abort_all(sched *s) {
  pthread_mutex_lock(&s->mu);
  s->abort_req = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------- a step */

static sreq *find_req(sched *s, uint64_t id) {
  for (sreq *r = s->reqs; r; r = r->next_all)
    if (r->id == id) return r;
  return NULL;
}

static int seq_live(const sched *s, const sseq *q) {
  return q && (q->running || s->waiting.head == q || q->prev || q->next);
}

static void end_request(sched *s, sreq *r, sched_finish why) {
  for (int i = 0; i < r->p.n && r->n_live > 0; i++)
    if (seq_live(s, r->seqs[i])) seq_finish(s, r->seqs[i], why, 0);
  if (r->n_live > 0) { /* unreachable by the invariants; never loop on it */
    mfs_log(MFS_LOG_ERROR, "sched", "request %llu had no live sequence; dropping it", (unsigned long long)r->id);
    r->n_live = 0;
    reqs_unlink(s, r);
    r->next_all = s->dead;
    s->dead = r;
  }
}

/* Takes the inbox; handles cancels and aborts. Returns 0 to go on, 1 to
 * stop the thread. Blocks while there is nothing to do. */
static int take_inbox(sched *s) {
  pthread_mutex_lock(&s->mu);
  while (!s->stop && !s->inbox_head && !s->n_cancels && !s->abort_req && !s->snap_wanted && !s->running.n &&
         !s->waiting.n)
    pthread_cond_wait(&s->cv, &s->mu);
  sreq *in = s->inbox_head;
  s->inbox_head = s->inbox_tail = NULL;
  s->inbox_n = 0;
  int nc = s->n_cancels;
  struct sched_cancel cancel_buf[256];
  int take = MFS_MIN(nc, 256);
  if (take) {
    memcpy(cancel_buf, s->cancels, (size_t)take * sizeof *cancel_buf);
    memmove(s->cancels, s->cancels + take, (size_t)(nc - take) * sizeof *s->cancels);
  }
  s->n_cancels = nc - take;
  int abort_req = s->abort_req || s->stop;
  s->abort_req = 0;
  int stop = s->stop;
  pthread_mutex_unlock(&s->mu);
  while (in) {
    sreq *r = in;
    in = in->next_all;
    r->next_all = s->reqs;
    s->reqs = r;
    r->arrival_order = ++s->arrival_counter;
    sq_insert_waiting(&s->waiting, r->seqs[0]);
  }
  for (int i = 0; i < take; i++) {
    sreq *r = find_req(s, cancel_buf[i].id);
    int c = cancel_buf[i].choice;
    if (!r) continue;
    if (c < 0 || !r->forked) end_request(s, r, SCHED_FINISH_CANCELLED);
    /* only that choice, and only if it still runs: it may have finished on
     * its own while the cancel was on its way, and must not take another
     * choice with it */
    else if (c < r->p.n && seq_live(s, r->seqs[c])) seq_finish(s, r->seqs[c], SCHED_FINISH_CANCELLED, 0);
  }
  if (abort_req)
    while (s->reqs) end_request(s, s->reqs, SCHED_FINISH_ABORTED);
  return stop;
}

static void emit_token(sched *s, sseq *q, int32_t tok, const float *logits) {
  sreq *r = q->r;
  sched_event *e = ev_slot(s);
  e->type = SCHED_EV_TOKEN;
  e->req = r->id;
  e->choice = q->choice;
  e->token = tok;
  e->index = q->n_out;
  e->t_arrival = r->t_arrival; /* the consumer's first-token breakdown */
  e->t_scheduled = r->t_scheduled;
  e->t_first_token = r->t_first_token;
  if (r->p.logprobs >= 0) {
    e->n_top = r->p.logprobs;
    e->logprob = smp_logprobs(logits, s->info->vocab, tok, r->p.logprobs, e->top_ids, e->top_logprobs);
    e->n_top = MFS_MIN(r->p.logprobs, s->info->vocab);
  }
  e->t = mfs_now();
  ev_commit(s);
}

static void emit_prompt_logprob(sched *s, sreq *r, int index, const float *logits) {
  sched_event *e = ev_slot(s);
  e->type = SCHED_EV_PROMPT_LOGPROB;
  e->req = r->id;
  e->token = r->prompt[index];
  e->index = index;
  if (logits) {
    e->logprob = smp_logprobs(logits, s->info->vocab, e->token, r->p.prompt_logprobs, e->top_ids, e->top_logprobs);
    e->n_top = MFS_MIN(r->p.prompt_logprobs, s->info->vocab);
  }
  e->t = mfs_now();
  ev_commit(s);
}

static int is_eos(const sched *s, int32_t t) {
  for (int i = 0; i < s->info->n_eos; i++)
    if (t == s->info->eos_ids[i]) return 1;
  return 0;
}

static int is_stop_token(const sched *s, const sreq *r, int32_t t) {
  if (!r->p.ignore_eos && is_eos(s, t)) return 1;
  for (int i = 0; i < r->p.n_stop_ids; i++)
    if (t == r->p.stop_ids[i]) return 1;
  return 0;
}

/* Samples the next token of q from logits, emits it, and finishes q when a
 * stop condition holds. */
static void sample_and_emit(sched *s, sseq *q, const float *logits) {
  sreq *r = q->r;
  int ns = 0;
  const uint32_t *allow = NULL;
  if (r->p.constraint) { /* structured output: only what keeps the text matching */
    if (!q->gm.ix) gr_matcher_init(&q->gm, r->p.constraint);
    int n = gr_matcher_mask(&q->gm, s->gmask);
    if (n < 0) {
      seq_finish(s, q, SCHED_FINISH_ERROR, n);
      return;
    }
    if (n == 0) { /* complete with no EOS id to say so, or (a grammar bug) stuck */
      int complete = gr_matcher_complete(&q->gm);
      seq_finish(s, q, complete ? SCHED_FINISH_STOP : SCHED_FINISH_ERROR, complete ? 0 : MFS_ESTATE);
      return;
    }
    allow = s->gmask;
  }
  if (q->n_out < r->p.min_tokens && !(allow && gr_matcher_complete(&q->gm))) {
    if (!r->p.ignore_eos)
      for (int i = 0; i < s->info->n_eos; i++) s->suppress[ns++] = s->info->eos_ids[i];
    for (int i = 0; i < r->p.n_stop_ids; i++) s->suppress[ns++] = r->p.stop_ids[i];
  }
  /* the engine found every logits row's argmax while it was in cache */
  const int32_t *am = s->argmax + (logits - s->logits) / s->info->vocab;
  smp_input in = {logits, &r->p.sampling, r->prompt, r->p.n_prompt, q->toks + r->p.n_prompt, q->n_out,
                  s->suppress, ns, allow, am};
  int32_t tok = smp_sample(&s->smp, &in, &q->rng);
  int done_grammar = 0;
  if (allow) {
    if (is_eos(s, tok)) done_grammar = 1; /* allowed only where the text is complete */
    else if (gr_matcher_accept_token(&q->gm, tok)) {
      seq_finish(s, q, SCHED_FINISH_ERROR, MFS_ESTATE);
      return;
    } else if (gr_matcher_finished(&q->gm))
      done_grammar = 1; /* complete, and nothing may follow: no need to wait for EOS */
  }
  if (seq_push_token(q, tok)) {
    seq_finish(s, q, SCHED_FINISH_ERROR, MFS_ENOMEM);
    return;
  }
  q->n_out++;
  if (!r->t_first_token) r->t_first_token = mfs_now();
  s->ctr.generation_tokens_total++;
  emit_token(s, q, tok, logits);
  if (done_grammar || is_stop_token(s, r, tok)) seq_finish(s, q, SCHED_FINISH_STOP, 0);
  else if (q->n_out >= r->p.max_tokens || q->n_toks >= s->o.max_model_len) seq_finish(s, q, SCHED_FINISH_LENGTH, 0);
}

/* The prompt of a request is done: fork the other choices, then sample
 * every choice from the same logits. */
static void first_sample(sched *s, sseq *q0, const float *logits) {
  sreq *r = q0->r;
  if (r->p.max_tokens == 0) {
    seq_finish(s, q0, SCHED_FINISH_LENGTH, 0);
    return;
  }
  if (!r->forked && r->p.n > 1) {
    uint64_t base = q0->rng;
    for (int c = 1; c < r->p.n; c++) {
      sseq *q = calloc(1, sizeof *q);
      if (q) q->toks = malloc((size_t)q0->cap_toks * sizeof *q->toks);
      if (!q || !q->toks || kvc_seq_fork(s->kv, q0->kv, &q->kv)) {
        if (q) free(q->toks);
        free(q);
        seq_finish(s, q0, SCHED_FINISH_ERROR, MFS_ENOMEM);
        return;
      }
      memcpy(q->toks, q0->toks, (size_t)q0->n_toks * sizeof *q->toks);
      q->n_toks = q0->n_toks;
      q->cap_toks = q0->cap_toks;
      q->n_computed = q0->n_computed;
      q->r = r;
      q->choice = c;
      q->rng = r->p.sampling.has_seed ? smp_rng_seed(r->p.sampling.seed, c) : smp_rng_seed(base, c);
      q->admit_order = q0->admit_order;
      q->running = 1;
      r->seqs[c] = q;
      sq_push_back(&s->running, q);
    }
    r->n_live = r->p.n;
  }
  r->forked = 1;
  for (int c = 0; c < r->p.n; c++)
    if (r->seqs[c] && r->seqs[c]->running && r->seqs[c]->n_out == 0) sample_and_emit(s, r->seqs[c], logits);
}

/* Picks the running sequence to preempt: lowest priority, then latest
 * admitted, among those not in this step. */
static sseq *pick_victim(sched *s, int n_in_step) {
  sseq *v = NULL;
  for (sseq *q = s->running.head; q; q = q->next) {
    int in_step = 0;
    for (int i = 0; i < n_in_step; i++)
      if (s->step_seqs[i] == q) in_step = 1;
    if (in_step) continue;
    if (!v || q->r->p.priority > v->r->p.priority ||
        (q->r->p.priority == v->r->p.priority && q->admit_order > v->admit_order))
      v = q;
  }
  return v;
}

static void publish_stats(sched *s, int force_snapshot) {
  pthread_mutex_lock(&s->snap_mu);
  s->st.prompt_tokens_total = s->ctr.prompt_tokens_total;
  s->st.generation_tokens_total = s->ctr.generation_tokens_total;
  s->st.preemptions_total = s->ctr.preemptions_total;
  s->st.steps_total = s->ctr.steps_total;
  s->st.step_seconds_total = s->ctr.step_seconds_total;
  s->st.forward_seconds_total = s->ctr.forward_seconds_total;
  s->st.spec_drafts_total = s->ctr.spec_drafts_total;
  s->st.spec_draft_tokens_total = s->ctr.spec_draft_tokens_total;
  s->st.spec_accepted_tokens_total = s->ctr.spec_accepted_tokens_total;
  memcpy(s->st.spec_accepted_per_pos_total, s->ctr.spec_accepted_per_pos_total, sizeof s->st.spec_accepted_per_pos_total);
  memcpy(s->st.finished_total, s->ctr.finished_total, sizeof s->st.finished_total);
  kvc_pool_stats(s->kv, &s->st.kv);
  s->st.kv.prefix_queries_tokens = s->prefix_queries;
  s->st.kv.prefix_hits_tokens = s->prefix_hits;
  s->st.running = s->running.n;
  pthread_mutex_lock(&s->mu);
  s->st.waiting = s->waiting.n + s->inbox_n;
  s->queued_total = s->st.waiting;
  s->st.draining = s->draining;
  int want = s->snap_wanted || force_snapshot;
  s->snap_wanted = 0;
  pthread_mutex_unlock(&s->mu);
  if (want) {
    s->snap_blocks = kvc_pool_block_states(s->kv, s->snap_state, s->snap_refs, (int)s->st.kv.blocks_total);
    int n = 0;
    for (sseq *q = s->running.head; q && n < s->o.max_num_seqs; q = q->next, n++) {
      int nb;
      const int32_t *t = kvc_seq_blocks(q->kv, &nb);
      nb = MFS_MIN(nb, s->snap_max_table);
      s->snap_seqs[n] = (sched_seq_view){q->r->id, q->choice, q->n_computed, nb};
      memcpy(s->snap_tables + (size_t)n * s->snap_max_table, t, (size_t)nb * sizeof *t);
    }
    s->snap_nseqs = n;
    s->snap_nhashes = kvc_pool_prefix_hashes(s->kv, s->snap_hashes, (int)s->st.kv.blocks_total);
  }
  pthread_mutex_unlock(&s->snap_mu);
}

/* Prompt lookup: the tokens that followed the most recent earlier
 * occurrence of the sequence's last g tokens, for the longest g in
 * [gmin, gmax] that occurs; at most k. Returns how many (0: no match). */
static int ngram_propose(const int32_t *t, int n, int gmin, int gmax, int k, int32_t *out) {
  for (int g = MFS_MIN(gmax, n - 1); g >= gmin; g--) {
    const int32_t *suf = t + n - g;
    for (int j = n - g - 1; j >= 0; j--)
      if (t[j] == suf[0] && !memcmp(t + j, suf, (size_t)g * sizeof *t)) {
        int m = MFS_MIN(k, n - (j + g));
        memcpy(out, t + j + g, (size_t)m * sizeof *t);
        return m;
      }
  }
  return 0;
}

/* How long a draft pays. A draft token is kept with probability a (the
 * sequence's recent acceptance rate, from a prior of 0.8), so a draft of d
 * tokens yields E(d) = 1 + a + ... + a^d tokens. It costs the step time of
 * d more rows: with R rows planned in the step so far, the rate is
 * (R - 1 + E(d)) / T(R + d), and the d that maximizes it (at most k) is
 * taken. T(n), in one-token steps, is 1 + c (n - 1) plus c more once a
 * step has two rows or more (c = sched_opts.spec_row_cost): the shape
 * measured on the 2-core development machine with the bundled model
 * (`bench batch`: 2 rows 1.2-1.8x a one-row step, the one-row product
 * being a faster kernel; 5 rows ~2.3x, 8 rows ~3.5x; c = 0.3). So at batch
 * 1 a one-token draft does not pay below a = 0.6, a long one is worth it
 * from a ~ 0.65, and with many sequences a verified row delays them all:
 * only drafts nearly always right are tried. */
static double step_cost(const sched *s, int n) {
  double c = s->o.spec_row_cost;
  return 1 + c * (n - 1) + (n >= 2 ? c : 0);
}

static int spec_len(const sched *s, const sseq *q, int k, int rows) {
  /* an optimistic prior (0.8): a sequence tries a draft early, and again once its record has faded */
  double a = (q->spec_hit + 2.0) / (q->spec_try + 2.5), e = 1, term = 1;
  double best = rows / step_cost(s, rows);
  int d = 0;
  for (int j = 1; j <= k; j++) {
    term *= a;
    e += term;
    double v = (rows - 1 + e) / step_cost(s, rows + j);
    if (v > best) best = v, d = j;
  }
  return d;
}

/* A draft for q, a decoding sequence, of at most `room` tokens, in a step
 * of `rows` rows so far; it is written into q->toks past n_toks (so the
 * batch copies it with the pending token) and into out. Returns its length. */
static int seq_draft(sched *s, sseq *q, int room, int rows, int32_t *out) {
  sreq *r = q->r;
  if (s->o.spec_tokens <= 0 || !r->forked || q->n_out == 0 || q->n_toks - q->n_computed != 1) return 0;
  /* what the sequence's draft record says has faded a little: one that
   * stopped drafting for a low rate tries again later */
  q->spec_hit *= 0.95f;
  q->spec_try *= 0.95f;
  /* no point drafting past the last token the request may emit or the context */
  int k = MFS_MIN(MFS_MIN(s->o.spec_tokens, room), r->p.max_tokens - q->n_out - 1);
  k = MFS_MIN(k, s->o.max_model_len - q->n_toks - 1);
  if (k > 0) k = spec_len(s, q, k, rows);
  if (k <= 0) return 0;
  int m = ngram_propose(q->toks, q->n_toks, s->o.spec_ngram_min, s->o.spec_ngram_max, k, out);
  if (m <= 0 || seq_toks_room(q, q->n_toks + m)) return 0;
  memcpy(q->toks + q->n_toks, out, (size_t)m * sizeof *out);
  return m;
}

/* After a step that computed q's pending token and a draft of nd tokens
 * (rows row .. row+nd of the logits): samples from the rows in order, as
 * many as agree with the draft plus one, committing the draft tokens kept. */
static void spec_verify(sched *s, sseq *q, int row, const int32_t *draft, int nd) {
  int V = s->info->vocab, acc = 0;
  kvc_seq_commit(s->kv, q->kv, q->toks + q->n_computed, 1);
  q->n_computed++;
  for (int i = 0; i <= nd; i++) {
    sample_and_emit(s, q, s->logits + (size_t)(row + i) * V);
    if (!q->kv || i == nd || q->toks[q->n_toks - 1] != draft[i]) break; /* finished, or the draft ends or disagrees */
    /* the sampled token is the draft's, whose KV this step wrote */
    kvc_seq_commit(s->kv, q->kv, draft + i, 1);
    q->n_computed++;
    s->ctr.spec_accepted_per_pos_total[i]++;
    acc++;
  }
  s->ctr.spec_drafts_total++;
  s->ctr.spec_draft_tokens_total += nd;
  s->ctr.spec_accepted_tokens_total += acc;
  /* the positions tried: up to the first disagreement */
  q->spec_hit += (float)acc;
  q->spec_try += (float)MFS_MIN(acc + 1, nd);
}

static void step(sched *s) {
  int budget = s->o.max_num_batched_tokens, ns = 0, rows = 0, ntok = 0;
  int V = s->info->vocab;
  /* 1. running sequences, oldest admitted first */
  int visited = 0, drafted = 0; /* drafted: draft tokens planned so far in this step */
  for (sseq *q = s->running.head, *next; q && budget > 0 && ns < s->o.max_num_seqs; q = next) {
    next = q->next;
    int n = MFS_MIN(q->n_toks - q->n_computed, budget);
    /* a draft takes only budget left after one token for each running sequence */
    int nd = seq_draft(s, q, budget - 1 - (s->running.n - ++visited), s->running.n + drafted,
                       s->step_draft + (size_t)ns * SCHED_MAX_SPEC);
    int rc;
    /* a draft never preempts anyone: without room for it, the step goes without */
    if (nd && kvc_seq_reserve(s->kv, q->kv, q->n_computed + n + nd) != 0) nd = 0;
    while ((rc = kvc_seq_reserve(s->kv, q->kv, q->n_computed + n)) == KVC_FULL) {
      sseq *v = pick_victim(s, ns);
      if (!v || v == q) break;
      if (v == next) next = v->next;
      seq_preempt(s, v);
    }
    if (rc == KVC_FULL) {
      if (ns == 0 && s->running.n == 1) {
        /* alone and still no room: the pool cannot hold this sequence */
        seq_finish(s, q, SCHED_FINISH_LENGTH, 0);
      } else {
        seq_preempt(s, q);
      }
      continue;
    }
    if (rc < 0) {
      seq_finish(s, q, SCHED_FINISH_ERROR, rc);
      continue;
    }
    s->step_draft_n[ns] = nd;
    drafted += nd;
    n += nd;
    s->step_n[ns] = n;
    s->step_seqs[ns++] = q;
    budget -= n;
  }
  /* 2. admit waiting sequences in order while budget and blocks last */
  while (s->waiting.head && budget > 0 && ns < s->o.max_num_seqs) {
    sseq *q = s->waiting.head;
    sreq *r = q->r;
    int want_seqs = r->forked ? 1 : r->p.n;
    if (s->running.n + want_seqs > s->o.max_num_seqs) break;
    if (kvc_seq_new(s->kv, &q->kv)) break;
    int matched = 0;
    if (r->p.prompt_logprobs < 0) {
      matched = kvc_seq_match_prefix(s->kv, q->kv, q->toks, q->n_toks - 1);
      if (matched < 0) matched = 0;
    }
    int n = MFS_MIN(q->n_toks - matched, budget);
    if (kvc_seq_reserve(s->kv, q->kv, matched + n) != 0) {
      kvc_seq_free(s->kv, q->kv);
      q->kv = NULL;
      break;
    }
    sq_remove(&s->waiting, q);
    /* prefix-cache counters count admissions, not attempts that found no room */
    if (r->p.prompt_logprobs < 0) {
      s->prefix_queries += q->n_toks - 1;
      s->prefix_hits += matched;
    }
    q->n_computed = matched;
    if (!r->t_scheduled) {
      r->t_scheduled = mfs_now();
      r->cached_tokens = matched;
    }
    q->admit_order = ++s->admit_counter;
    q->running = 1;
    sq_push_back(&s->running, q);
    s->step_draft_n[ns] = 0;
    s->step_n[ns] = n;
    s->step_seqs[ns++] = q;
    budget -= n;
  }
  if (!ns) return;
  /* 3. build the batch */
  for (int i = 0; i < ns; i++) {
    sseq *q = s->step_seqs[i];
    int n = s->step_n[i], nb;
    eng_seq_step *st = &s->steps[i];
    st->n_past = q->n_computed;
    st->block_table = kvc_seq_blocks(q->kv, &nb);
    st->n_new = n;
    int reaches_end = q->n_computed + n == q->n_toks;
    int want_prompt_lp = q->r->p.prompt_logprobs >= 0 && !q->r->forked && q->r->prompt_lp_next < q->r->p.n_prompt;
    st->logits = want_prompt_lp || s->step_draft_n[i] ? ENG_LOGITS_ALL : reaches_end ? ENG_LOGITS_LAST : ENG_LOGITS_NONE;
    s->step_row[i] = rows;
    rows += st->logits == ENG_LOGITS_ALL ? n : st->logits == ENG_LOGITS_LAST ? 1 : 0;
    memcpy(s->step_tokens + ntok, q->toks + q->n_computed, (size_t)n * sizeof(int32_t));
    ntok += n;
  }
  eng_batch b = {ns, s->steps, s->step_tokens, s->kv, s->logits, s->argmax};
  double t_fwd = mfs_now();
  int rc = mfs_fault("sched_step") ? MFS_ENOMEM : eng_forward(s->eng, &b); /* test hook: a failed step */
  s->ctr.forward_seconds_total += mfs_now() - t_fwd;
  if (rc) {
    mfs_log(MFS_LOG_ERROR, "sched", "engine step failed (%s); ending its %d sequences", mfs_strerror(rc), ns);
    for (int i = 0; i < ns; i++) seq_finish(s, s->step_seqs[i], SCHED_FINISH_ERROR, rc);
    return;
  }
  s->ctr.steps_total++;
  /* 4. commit, prompt logprobs, sample */
  for (int i = 0; i < ns; i++) {
    sseq *q = s->step_seqs[i];
    sreq *r = q->r;
    const eng_seq_step *st = &s->steps[i];
    if (s->step_draft_n[i]) {
      spec_verify(s, q, s->step_row[i], s->step_draft + (size_t)i * SCHED_MAX_SPEC, s->step_draft_n[i]);
      continue;
    }
    kvc_seq_commit(s->kv, q->kv, q->toks + q->n_computed, st->n_new);
    if (q->n_computed < r->p.n_prompt)
      s->ctr.prompt_tokens_total += MFS_MIN(st->n_new, r->p.n_prompt - q->n_computed);
    if (st->logits == ENG_LOGITS_ALL) {
      for (int k = 0; k < st->n_new; k++) {
        int pos = q->n_computed + k; /* row k predicts token pos + 1 */
        if (r->prompt_lp_next == 0 && pos == 0) emit_prompt_logprob(s, r, 0, NULL), r->prompt_lp_next = 1;
        if (pos + 1 < r->p.n_prompt && pos + 1 == r->prompt_lp_next) {
          emit_prompt_logprob(s, r, pos + 1, s->logits + (size_t)(s->step_row[i] + k) * V);
          r->prompt_lp_next++;
        }
      }
      if (r->p.n_prompt == 1 && r->prompt_lp_next == 0) emit_prompt_logprob(s, r, 0, NULL), r->prompt_lp_next = 1;
    }
    q->n_computed += st->n_new;
    if (q->n_computed == q->n_toks) {
      int last_row = s->step_row[i] + (st->logits == ENG_LOGITS_ALL ? st->n_new - 1 : 0);
      const float *lg = s->logits + (size_t)last_row * V;
      if (q->n_out == 0 && !r->forked) first_sample(s, q, lg);
      else sample_and_emit(s, q, lg);
    }
  }
}

static void *sched_main(void *arg) {
  sched *s = arg;
  for (;;) {
    if (take_inbox(s)) break;
    int64_t n0 = s->ctr.steps_total;
    double t0 = mfs_now();
    step(s);
    if (s->ctr.steps_total != n0) s->ctr.step_seconds_total += mfs_now() - t0;
    free_dead(s);
    publish_stats(s, 0);
    if (s->o.notify) {
      s->o.notify(s->o.notify_u);
      /* the consumer (the server's loop thread) was just woken to stream
       * this step's tokens; with every core busy stepping it would wait for
       * the kernel's next tick (~4 ms) to preempt us: let it run now */
      sched_yield();
    }
  }
  free_dead(s);
  publish_stats(s, 0);
  if (s->o.notify) s->o.notify(s->o.notify_u);
  return NULL;
}

/* ------------------------------------------------------------ lifecycle */

void sched_get_stats(sched *s, sched_stats *out) {
  pthread_mutex_lock(&s->snap_mu);
  *out = s->st;
  pthread_mutex_unlock(&s->snap_mu);
}

int sched_cache_snapshot(sched *s, uint8_t *state, uint16_t *refs, int max_blocks, sched_seq_view *seqs,
                         int max_seqs, int *n_seqs, int32_t *tables, int max_table) {
  pthread_mutex_lock(&s->mu);
  s->snap_wanted = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  pthread_mutex_lock(&s->snap_mu);
  int nb = MFS_MIN(max_blocks, s->snap_blocks);
  memcpy(state, s->snap_state, (size_t)nb);
  memcpy(refs, s->snap_refs, (size_t)nb * sizeof *refs);
  int n = MFS_MIN(max_seqs, s->snap_nseqs);
  for (int i = 0; i < n; i++) {
    seqs[i] = s->snap_seqs[i];
    int k = MFS_MIN(seqs[i].n_blocks, max_table);
    seqs[i].n_blocks = k;
    memcpy(tables + (size_t)i * max_table, s->snap_tables + (size_t)i * s->snap_max_table, (size_t)k * sizeof *tables);
  }
  *n_seqs = n;
  pthread_mutex_unlock(&s->snap_mu);
  return nb;
}

int sched_cache_hashes(sched *s, uint64_t *out, int max) {
  pthread_mutex_lock(&s->snap_mu);
  int n = MFS_MIN(max, s->snap_nhashes);
  memcpy(out, s->snap_hashes, (size_t)n * sizeof *out);
  pthread_mutex_unlock(&s->snap_mu);
  return n;
}

void sched_free(sched *s) {
  if (!s) return;
  if (s->th_started) {
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
  }
  free_dead(s);
  while (s->reqs) {
    sreq *r = s->reqs;
    s->reqs = r->next_all;
    for (int i = 0; i < r->p.n; i++)
      if (r->seqs && r->seqs[i]) kvc_seq_free(s->kv, r->seqs[i]->kv);
    req_free(r);
  }
  for (sreq *r = s->inbox_head, *n; r; r = n) {
    n = r->next_all;
    req_free(r);
  }
  eng_ctx_free(s->eng);
  kvc_pool_free(s->kv);
  smp_scratch_deinit(&s->smp);
  free(s->logits);
  free(s->argmax);
  free(s->steps);
  free(s->step_seqs);
  free(s->step_row);
  free(s->step_n);
  free(s->step_tokens);
  free(s->suppress);
  free(s->gmask);
  free(s->step_draft_n);
  free(s->step_draft);
  free(s->ring);
  free(s->cancels);
  free(s->snap_state);
  free(s->snap_refs);
  free(s->snap_seqs);
  free(s->snap_tables);
  free(s->snap_hashes);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->ev_mu);
  pthread_cond_destroy(&s->ev_space);
  pthread_mutex_destroy(&s->snap_mu);
  free(s);
}

int sched_new(sched **out, const eng_model *m, const sched_opts *o) {
  const eng_model_info *in = eng_model_get_info(m);
  if (!o || o->max_num_seqs < 1 || o->max_num_batched_tokens < 1 || o->max_queued < 0 || o->block_size < 1 ||
      o->spec_tokens < 0 || o->spec_tokens > SCHED_MAX_SPEC ||
      (o->spec_tokens && (o->spec_ngram_min < 1 || o->spec_ngram_max < o->spec_ngram_min || !(o->spec_row_cost >= 0))))
    return MFS_EINVAL;
  sched *s = calloc(1, sizeof *s);
  if (!s) return MFS_ENOMEM;
  s->m = m;
  s->info = in;
  s->o = *o;
  if (s->o.spec_row_cost == 0) s->o.spec_row_cost = 0.3;
  if (s->o.max_model_len <= 0 || s->o.max_model_len > in->max_pos) s->o.max_model_len = in->max_pos;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  pthread_mutex_init(&s->ev_mu, NULL);
  pthread_cond_init(&s->ev_space, NULL);
  pthread_mutex_init(&s->snap_mu, NULL);
  int rc = MFS_ENOMEM;
  kvc_geom g;
  eng_model_kv_geom(m, o->block_size, o->kv_dtype, &g);
  if ((rc = kvc_pool_new(&s->kv, &g, o->kv_bytes))) goto fail;
  kvc_pool_set_event_fn(s->kv, o->kv_event_fn, o->kv_event_u);
  eng_ctx_opts eo = {o->n_threads, o->max_num_batched_tokens, o->max_num_seqs, s->o.max_model_len};
  if ((rc = eng_ctx_new(&s->eng, m, &eo))) goto fail;
  rc = MFS_ENOMEM;
  if (smp_scratch_init(&s->smp, in->vocab)) goto fail;
  s->logits = malloc((size_t)o->max_num_batched_tokens * in->vocab * sizeof *s->logits);
  s->argmax = malloc((size_t)o->max_num_batched_tokens * sizeof *s->argmax);
  s->steps = calloc((size_t)o->max_num_seqs, sizeof *s->steps);
  s->step_seqs = calloc((size_t)o->max_num_seqs, sizeof *s->step_seqs);
  s->step_row = calloc((size_t)o->max_num_seqs, sizeof *s->step_row);
  s->step_n = calloc((size_t)o->max_num_seqs, sizeof *s->step_n);
  s->step_tokens = malloc((size_t)o->max_num_batched_tokens * sizeof *s->step_tokens);
  s->suppress = malloc((SCHED_MAX_STOP_IDS + 8) * sizeof *s->suppress);
  s->gmask = malloc(((size_t)in->vocab + 31) / 32 * sizeof *s->gmask);
  s->step_draft_n = calloc((size_t)o->max_num_seqs, sizeof *s->step_draft_n);
  s->step_draft = malloc((size_t)o->max_num_seqs * SCHED_MAX_SPEC * sizeof *s->step_draft);
  if (!s->step_draft_n || !s->step_draft) goto fail;
  s->ev_cap = o->event_capacity > 0 ? o->event_capacity : MFS_MAX(4096, 4 * o->max_num_batched_tokens);
  s->ring = malloc((size_t)s->ev_cap * sizeof *s->ring);
  kvc_stats ks;
  kvc_pool_stats(s->kv, &ks);
  s->snap_state = malloc((size_t)ks.blocks_total);
  s->snap_refs = malloc((size_t)ks.blocks_total * sizeof *s->snap_refs);
  s->snap_max_table = (s->o.max_model_len + o->block_size - 1) / o->block_size;
  s->snap_seqs = malloc((size_t)o->max_num_seqs * sizeof *s->snap_seqs);
  s->snap_tables = malloc((size_t)o->max_num_seqs * s->snap_max_table * sizeof *s->snap_tables);
  s->snap_hashes = malloc((size_t)ks.blocks_total * sizeof *s->snap_hashes);
  if (!s->snap_hashes) goto fail;
  if (!s->logits || !s->argmax || !s->steps || !s->step_seqs || !s->step_row || !s->step_n || !s->step_tokens || !s->suppress || !s->gmask || !s->ring ||
      !s->snap_state || !s->snap_refs || !s->snap_seqs || !s->snap_tables)
    goto fail;
  s->st.max_model_len = s->o.max_model_len;
  s->st.max_num_seqs = o->max_num_seqs;
  s->st.block_size = o->block_size;
  s->st.spec_tokens = o->spec_tokens;
  publish_stats(s, 1);
  if (pthread_create(&s->th, NULL, sched_main, s)) goto fail;
  s->th_started = 1;
  *out = s;
  return 0;
fail:
  sched_free(s);
  return rc;
}
