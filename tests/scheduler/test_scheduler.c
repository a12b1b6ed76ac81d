/* test_scheduler.c: the scheduler against its contract, on a real (random)
 * model: batched greedy results equal solo results, also with chunked
 * prefill and preemption forced by a tiny pool; seeded sampling is
 * reproducible whatever else runs; cancel frees blocks; n > 1 computes the
 * prompt once; prompt logprobs equal the engine's log-softmax; the queue
 * bound and drain answer as documented.
 * With MFASERVE_ISA set (CTest's scheduler_<level>) the engine runs that
 * kernel level; one this binary or CPU lacks exits 77 (skipped).
 * usage: test_scheduler MODEL_DIR */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "engine.h"
#include "scheduler.h"

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

static eng_model *model;
static const eng_model_info *info;

#define MAXR 64
#define MAXT 256
typedef struct {
  uint64_t id;
  int n;
  int32_t toks[4][MAXT];
  float lps[4][MAXT];
  int ntok[4];
  int finished[4];
  sched_finish why[4];
  int done;
  float plp[MAXT];
  int nplp;
  int completion_tokens[4];
} result;

static void run_until_done(sched *s, result *rs, int nr, double timeout) {
  sched_event ev[512];
  double t0 = mfs_now();
  for (;;) {
    int all = 1;
    for (int i = 0; i < nr; i++) all &= rs[i].done;
    if (all || mfs_now() - t0 > timeout) break;
    int n = sched_events_take(s, ev, 512);
    if (!n) usleep(200);
    for (int k = 0; k < n; k++) {
      sched_event *e = &ev[k];
      result *r = NULL;
      for (int i = 0; i < nr; i++)
        if (rs[i].id == e->req) r = &rs[i];
      if (!r) continue;
      if (e->type == SCHED_EV_TOKEN) {
        if (r->ntok[e->choice] < MAXT) {
          r->lps[e->choice][r->ntok[e->choice]] = e->logprob;
          r->toks[e->choice][r->ntok[e->choice]++] = e->token;
        }
      } else if (e->type == SCHED_EV_PROMPT_LOGPROB) {
        if (e->index < MAXT) r->plp[e->index] = e->logprob;
        r->nplp++;
      } else {
        r->finished[e->choice] = 1;
        r->why[e->choice] = e->finish;
        r->completion_tokens[e->choice] = e->completion_tokens;
        if (e->last) r->done = 1;
      }
    }
  }
}

/* The published stats trail the events by up to one step (the scheduler
 * publishes them after the step whose events a client may already hold):
 * wait, bounded, until they show no running or waiting sequence. */
static void stats_when_idle(sched *s, sched_stats *st) {
  for (double t0 = mfs_now();; usleep(500)) {
    sched_get_stats(s, st);
    if ((st->running == 0 && st->waiting == 0) || mfs_now() - t0 > 10) return;
  }
}

static kvc_dtype kv_dt = KVC_F32; /* the pools mk and pool_bytes make */
static int spec_k;                 /* mk's schedulers: speculative draft tokens (0: off) */

static sched *mk(int max_seqs, int max_tokens, uint64_t kv_bytes, int block) {
  sched_opts o = {0};
  o.max_num_seqs = max_seqs;
  o.max_num_batched_tokens = max_tokens;
  o.max_queued = 64;
  o.max_model_len = 512;
  o.block_size = block;
  o.kv_bytes = kv_bytes;
  o.kv_dtype = kv_dt;
  o.n_threads = 2;
  o.spec_tokens = spec_k;
  o.spec_ngram_min = 1;
  o.spec_ngram_max = 3;
  o.spec_row_cost = 1e-9; /* every draft as long as the match allows: both paths run often */
  sched *s;
  int rc = sched_new(&s, model, &o);
  if (rc) {
    fprintf(stderr, "sched_new: %s\n", mfs_strerror(rc));
    exit(1);
  }
  return s;
}

static void params(sched_request_params *p, const int32_t *prompt, int n, int max_tokens) {
  memset(p, 0, sizeof *p);
  p->prompt = prompt;
  p->n_prompt = n;
  p->max_tokens = max_tokens;
  p->n = 1;
  p->ignore_eos = 1;
  p->logprobs = -1;
  p->prompt_logprobs = -1;
  p->sampling.top_p = 1;
  p->sampling.repetition_penalty = 1;
}

static int32_t prompts[MAXR][64];
static int plen[MAXR];

static void make_prompts(void) {
  uint64_t st = 12345;
  for (int i = 0; i < MAXR; i++) {
    plen[i] = 3 + (int)(i * 7 % 40);
    for (int j = 0; j < plen[i]; j++) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      prompts[i][j] = (int32_t)((st >> 33) % (uint64_t)info->vocab);
    }
  }
  /* some prompts share a prefix, to exercise the prefix cache */
  for (int i = 8; i < 12; i++) memcpy(prompts[i], prompts[7], 20 * sizeof(int32_t)), plen[i] = MFS_MAX(plen[i], 24);
}

static size_t pool_bytes(int blocks, int block) {
  kvc_geom g;
  eng_model_kv_geom(model, block, kv_dt, &g);
  return (size_t)blocks * kvc_block_bytes(&g);
}

static void test_batched_equals_solo(void) {
  const int NR = 12, GEN = 24;
  static result solo[MAXR], batch[MAXR];
  memset(solo, 0, sizeof solo);
  memset(batch, 0, sizeof batch);
  sched *s = mk(16, 256, pool_bytes(512, 16), 16);
  for (int i = 0; i < NR; i++) {
    sched_request_params p;
    params(&p, prompts[i], plen[i], GEN);
    CHECK(sched_request_submit(s, &p, &solo[i].id) == 0, "submit");
    run_until_done(s, &solo[i], 1, 30);
    CHECK(solo[i].done && solo[i].ntok[0] == GEN, "solo %d: %d tokens", i, solo[i].ntok[0]);
  }
  sched_stats st;
  stats_when_idle(s, &st);
  CHECK(st.kv.prefix_hits_tokens > 0, "shared prefixes should hit the prefix cache");
  long want_q = 0;
  for (int i = 0; i < NR; i++) want_q += plen[i] - 1;
  CHECK(st.kv.prefix_queries_tokens == want_q, "prefix queries %lld, want %ld (one per admitted prompt token)",
        (long long)st.kv.prefix_queries_tokens, want_q);
  sched_free(s);
  /* tiny pool (forces preemption), small token budget (forces chunked prefill) */
  s = mk(8, 16, pool_bytes(20, 4), 4);
  for (int i = 0; i < NR; i++) {
    sched_request_params p;
    params(&p, prompts[i], plen[i], GEN);
    CHECK(sched_request_submit(s, &p, &batch[i].id) == 0, "submit");
  }
  run_until_done(s, batch, NR, 60);
  stats_when_idle(s, &st);
  CHECK(st.preemptions_total > 0, "the tiny pool should force preemption (got %lld)", (long long)st.preemptions_total);
  for (int i = 0; i < NR; i++) {
    CHECK(batch[i].done && batch[i].ntok[0] == GEN, "batch %d: %d tokens", i, batch[i].ntok[0]);
    CHECK(!memcmp(solo[i].toks[0], batch[i].toks[0], GEN * sizeof(int32_t)), "request %d: batched tokens differ from solo", i);
  }
  CHECK(st.kv.blocks_used == 0, "blocks still used after all finished: %lld", (long long)st.kv.blocks_used);
  CHECK(st.running == 0 && st.waiting == 0, "queues not empty");
  printf("batched == solo (KV %s): %d requests, %lld preemptions, %lld steps\n", kvc_dtype_name(kv_dt), NR,
         (long long)st.preemptions_total, (long long)st.steps_total);
  sched_free(s);
}

static void test_seeded_sampling(void) {
  static result a[2], b[8];
  memset(a, 0, sizeof a);
  memset(b, 0, sizeof b);
  sched *s = mk(16, 128, pool_bytes(256, 16), 16);
  sched_request_params p;
  params(&p, prompts[3], plen[3], 20);
  p.sampling.temperature = 0.9f;
  p.sampling.top_p = 0.9f;
  p.sampling.top_k = 50;
  p.sampling.has_seed = 1;
  p.sampling.seed = 42;
  CHECK(sched_request_submit(s, &p, &a[0].id) == 0, "submit");
  run_until_done(s, a, 1, 30);
  /* same seed among 7 other random requests */
  for (int i = 0; i < 8; i++) {
    sched_request_params q;
    params(&q, prompts[i + 20], plen[i + 20], 20);
    q.sampling.temperature = 1.0f;
    if (i == 5) q = p;
    CHECK(sched_request_submit(s, &q, &b[i].id) == 0, "submit");
  }
  run_until_done(s, b, 8, 30);
  CHECK(!memcmp(a[0].toks[0], b[5].toks[0], 20 * sizeof(int32_t)), "seeded output changed inside a batch");
  /* a different seed gives a different output (overwhelmingly likely) */
  static result c[1];
  memset(c, 0, sizeof c);
  p.sampling.seed = 43;
  CHECK(sched_request_submit(s, &p, &c[0].id) == 0, "submit");
  run_until_done(s, c, 1, 30);
  CHECK(memcmp(a[0].toks[0], c[0].toks[0], 20 * sizeof(int32_t)) != 0, "seed had no effect");
  sched_free(s);
}

static void test_cancel_and_limits(void) {
  static result r[4];
  memset(r, 0, sizeof r);
  sched_opts o = {0};
  sched *s = mk(4, 64, pool_bytes(128, 16), 16);
  (void)o;
  sched_request_params p;
  params(&p, prompts[1], plen[1], 500);
  CHECK(sched_request_submit(s, &p, &r[0].id) == 0, "submit");
  /* cancel as soon as the first token shows, well before max_tokens */
  sched_event ev[64];
  int got = 0;
  for (double t0 = mfs_now(); !got && mfs_now() - t0 < 10;) {
    int n = sched_events_take(s, ev, 64);
    for (int i = 0; i < n; i++) got |= ev[i].type == SCHED_EV_TOKEN;
    if (!n) usleep(100);
  }
  sched_request_cancel(s, r[0].id);
  run_until_done(s, r, 1, 10);
  CHECK(r[0].done && r[0].why[0] == SCHED_FINISH_CANCELLED, "cancel: done=%d why=%d", r[0].done, r[0].why[0]);
  sched_stats st;
  stats_when_idle(s, &st);
  CHECK(st.kv.blocks_used == 0, "cancelled request still holds %lld blocks", (long long)st.kv.blocks_used);
  /* bad requests */
  uint64_t id;
  int32_t bad[2] = {0, info->vocab};
  params(&p, bad, 2, 4);
  CHECK(sched_request_submit(s, &p, &id) == MFS_EINVAL, "out-of-vocab token accepted");
  static int32_t longp[600];
  params(&p, longp, 600, 4);
  CHECK(sched_request_submit(s, &p, &id) == MFS_ERANGE, "prompt beyond max_model_len accepted");
  /* drain */
  sched_drain(s);
  params(&p, prompts[2], plen[2], 4);
  CHECK(sched_request_submit(s, &p, &id) == SCHED_DRAINING, "submit while draining");
  sched_free(s);
}

static void test_queue_full(void) {
  sched_opts o = {0};
  o.max_num_seqs = 1;
  o.max_num_batched_tokens = 32;
  o.max_queued = 2;
  o.block_size = 16;
  o.kv_bytes = pool_bytes(64, 16);
  o.kv_dtype = KVC_F16;
  o.n_threads = 1;
  sched *s;
  CHECK(sched_new(&s, model, &o) == 0, "sched_new");
  sched_request_params p;
  params(&p, prompts[1], plen[1], 200);
  int full = 0;
  uint64_t id;
  for (int i = 0; i < 10; i++)
    if (sched_request_submit(s, &p, &id) == SCHED_QUEUE_FULL) full++;
  CHECK(full > 0, "queue bound of 2 never answered SCHED_QUEUE_FULL");
  sched_abort_all(s);
  sched_free(s);
}

static void test_fork_and_prompt_logprobs(void) {
  static result r[2];
  memset(r, 0, sizeof r);
  sched *s = mk(8, 128, pool_bytes(256, 16), 16);
  sched_request_params p;
  params(&p, prompts[5], plen[5], 12);
  p.n = 3;
  p.sampling.temperature = 1.0f;
  p.sampling.has_seed = 1;
  p.sampling.seed = 7;
  p.logprobs = 2;
  CHECK(sched_request_submit(s, &p, &r[0].id) == 0, "submit");
  run_until_done(s, r, 1, 30);
  sched_stats st;
  stats_when_idle(s, &st);
  CHECK(st.prompt_tokens_total == plen[5], "n=3 computed %lld prompt tokens, want %d", (long long)st.prompt_tokens_total,
        plen[5]);
  for (int c = 0; c < 3; c++) CHECK(r[0].finished[c] && r[0].ntok[c] == 12, "choice %d: %d tokens", c, r[0].ntok[c]);
  CHECK(memcmp(r[0].toks[0], r[0].toks[1], 12 * 4) || memcmp(r[0].toks[1], r[0].toks[2], 12 * 4), "choices identical");
  CHECK(st.kv.blocks_used == 0, "blocks used after fork finished");
  /* echo scoring: max_tokens 0 + prompt logprobs against the engine's own logits */
  params(&p, prompts[6], plen[6], 0);
  p.prompt_logprobs = 1;
  CHECK(sched_request_submit(s, &p, &r[1].id) == 0, "submit");
  run_until_done(s, &r[1], 1, 30);
  CHECK(r[1].nplp == plen[6], "prompt logprobs: %d of %d", r[1].nplp, plen[6]);
  CHECK(isnan(r[1].plp[0]), "first prompt token has no logprob");
  sched_free(s);
  /* independent check: engine logits over the whole prompt */
  kvc_geom g;
  eng_model_kv_geom(model, 16, KVC_F32, &g);
  kvc_pool *kv;
  kvc_pool_new(&kv, &g, 64 * kvc_block_bytes(&g));
  kvc_seq *q;
  kvc_seq_new(kv, &q);
  kvc_seq_reserve(kv, q, plen[6]);
  eng_ctx *c;
  eng_ctx_opts eo = {2, 64, 1, 512};
  eng_ctx_new(&c, model, &eo);
  float *lg = malloc((size_t)plen[6] * info->vocab * sizeof *lg);
  int nb;
  eng_seq_step stp = {0, plen[6], kvc_seq_blocks(q, &nb), ENG_LOGITS_ALL};
  eng_batch b = {1, &stp, prompts[6], kv, lg, NULL};
  CHECK(eng_forward(c, &b) == 0, "forward");
  double maxerr = 0;
  for (int i = 1; i < plen[6]; i++) {
    const float *row = lg + (size_t)(i - 1) * info->vocab;
    double mx = -INFINITY, sum = 0;
    for (int v = 0; v < info->vocab; v++) mx = row[v] > mx ? row[v] : mx;
    for (int v = 0; v < info->vocab; v++) sum += exp(row[v] - mx);
    double want = row[prompts[6][i]] - mx - log(sum);
    maxerr = fmax(maxerr, fabs(want - r[1].plp[i]));
  }
  CHECK(maxerr < 1e-4, "prompt logprobs differ from the engine's by %g", maxerr);
  free(lg);
  eng_ctx_free(c);
  kvc_seq_free(kv, q);
  kvc_pool_free(kv);
}

/* eng_batch.argmax (what greedy sampling reads instead of the logits) equals
 * a scan of the logits it wrote, for row counts through every product path
 * of the level (one row, a few, rows on lanes, packed) */
static void test_engine_argmax(void) {
  static const int LROWS[] = {1, 2, 5, 12, 16, 33, 64, 129, 200};
  enum { T = 200 };
  kvc_geom g;
  eng_model_kv_geom(model, 16, KVC_F32, &g);
  kvc_pool *kv;
  kvc_pool_new(&kv, &g, (T / 16 + 2) * kvc_block_bytes(&g));
  eng_ctx *c;
  eng_ctx_opts eo = {2, T, 1, 512};
  CHECK(eng_ctx_new(&c, model, &eo) == 0, "eng_ctx_new");
  float *lg = malloc((size_t)T * info->vocab * sizeof *lg);
  int32_t toks[T], am[T];
  for (int i = 0; i < T; i++) toks[i] = (int32_t)((i * 7919u + 13) % (unsigned)info->vocab);
  for (size_t li = 0; li < sizeof LROWS / sizeof LROWS[0]; li++) {
    int L = LROWS[li], nb, bad = 0;
    kvc_seq *q;
    kvc_seq_new(kv, &q);
    kvc_seq_reserve(kv, q, L);
    eng_seq_step stp = {0, L, kvc_seq_blocks(q, &nb), ENG_LOGITS_ALL};
    eng_batch b = {1, &stp, toks, kv, lg, am};
    for (int r = 0; r < L; r++) am[r] = -7;
    CHECK(eng_forward(c, &b) == 0, "forward %d rows", L);
    for (int r = 0; r < L; r++) {
      const float *row = lg + (size_t)r * info->vocab;
      int want = 0;
      for (int v = 1; v < info->vocab; v++)
        if (row[v] > row[want]) want = v;
      if (am[r] != want && bad++ < 3)
        CHECK(0, "%d rows: row %d argmax %d, the logits' is %d", L, r, am[r], want);
    }
    kvc_seq_free(kv, q);
  }
  free(lg);
  eng_ctx_free(c);
  kvc_pool_free(kv);
}

static void test_cancel_one_choice(void) {
  static result r[1];
  memset(r, 0, sizeof r);
  sched *s = mk(8, 128, pool_bytes(256, 16), 16);
  sched_request_params p;
  params(&p, prompts[4], plen[4], 150);
  p.n = 3;
  p.sampling.temperature = 1.0f;
  CHECK(sched_request_submit(s, &p, &r[0].id) == 0, "submit");
  sched_event ev[64];
  int got = 0;
  for (double t0 = mfs_now(); !got && mfs_now() - t0 < 10;) {
    int n = sched_events_take(s, ev, 64);
    for (int i = 0; i < n; i++) got |= ev[i].type == SCHED_EV_TOKEN && ev[i].choice == 1;
    if (!n) usleep(100);
  }
  sched_request_cancel_choice(s, r[0].id, 1);
  run_until_done(s, r, 1, 30);
  CHECK(r[0].why[1] == SCHED_FINISH_CANCELLED, "choice 1 ended with %d", r[0].why[1]);
  CHECK(r[0].why[0] == SCHED_FINISH_LENGTH && r[0].why[2] == SCHED_FINISH_LENGTH, "other choices ended with %d, %d",
        r[0].why[0], r[0].why[2]);
  CHECK(r[0].completion_tokens[0] == 150 && r[0].completion_tokens[2] == 150 && r[0].completion_tokens[1] < 150,
        "completion tokens %d %d %d", r[0].completion_tokens[0], r[0].completion_tokens[1], r[0].completion_tokens[2]);
  sched_stats st;
  stats_when_idle(s, &st);
  CHECK(st.kv.blocks_used == 0, "blocks used after the request ended");
  sched_free(s);
}

/* MFASERVE_ISA: the engine would warn and fall back to the best level for
 * one it cannot run; a test of that level must be skipped instead (77), and
 * must fail if another level runs. */
#define SKIP 77
static int select_forced_isa(void) {
  const char *want = getenv("MFASERVE_ISA");
  if (!want || !*want || !strcmp(want, "auto")) return 0;
  char err[512], list[256];
  if (eng_isa_select(want, err, sizeof err)) {
    snprintf(list, sizeof list, ",%s,", eng_isa_built());
    char key[64];
    snprintf(key, sizeof key, ",%s,", want);
    if (!strstr(list, key))
      printf("SKIPPED: kernel level %s: not built for this architecture (this binary has: %s)\n", want,
             eng_isa_built());
    else
      printf("SKIPPED: kernel level %s: not supported by this CPU (features: %s)\n", want, eng_cpu_features());
    return SKIP;
  }
  if (strcmp(eng_isa_name(), want)) {
    fprintf(stderr, "FAIL MFASERVE_ISA=%s but the engine runs %s\n", want, eng_isa_name());
    return 1;
  }
  printf("kernel level forced by MFASERVE_ISA: %s\n", want);
  return 0;
}


/* Structured outputs: constrained choices match their constraint (checked
 * here by hand, not with the grammar module), end with STOP as soon as the
 * text is complete, LENGTH when max_tokens comes first, and free requests
 * batched beside them give their solo tokens. Token i is byte i (EOS, id 2,
 * has none). */
static int regex_ok(const int32_t *t, int n) { /* [a-c]{3}(x|yz) */
  if (n != 4 && n != 5) return 0;
  for (int i = 0; i < 3; i++)
    if (t[i] < 'a' || t[i] > 'c') return 0;
  return n == 4 ? t[3] == 'x' : t[3] == 'y' && t[4] == 'z';
}

static void test_constrained(void) {
  int V = info->vocab;
  char bytes[256];
  const char *bp[256];
  uint32_t lens[256];
  for (int i = 0; i < V && i < 256; i++) bytes[i] = (char)i, bp[i] = &bytes[i], lens[i] = i == 2 ? 0 : 1;
  int32_t eos = 2;
  gr_vocab *v;
  CHECK(gr_vocab_new(V, bp, lens, &eos, 1, &v) == 0, "vocab");
  gr_grammar *g;
  gr_error err;
  CHECK(gr_compile_regex("[a-c]{3}(x|yz)", 14, &g, &err) == 0, "regex: %s", err.msg);
  gr_index *ix;
  CHECK(gr_index_new(g, v, &ix) == 0, "index");
  gr_grammar_unref(g);
  const char *js = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"minimum\":0,"
                   "\"maximum\":99}},\"required\":[\"a\"],\"additionalProperties\":false}";
  CHECK(gr_compile_json_schema(js, strlen(js), 0, &g, &err) == 0, "schema: %s", err.msg);
  gr_index *jx;
  CHECK(gr_index_new(g, v, &jx) == 0, "index");
  gr_grammar_unref(g);
  sched *s = mk(8, 64, pool_bytes(256, 16), 16);
  /* free requests alone */
  static result solo[4], mixed[8];
  memset(solo, 0, sizeof solo);
  memset(mixed, 0, sizeof mixed);
  sched_request_params p;
  for (int i = 0; i < 4; i++) {
    params(&p, prompts[i], plen[i], 24);
    CHECK(sched_request_submit(s, &p, &solo[i].id) == 0, "submit");
  }
  run_until_done(s, solo, 4, 60);
  /* the same beside constrained ones (greedy, seeded n=3, JSON, max_tokens 2) */
  for (int i = 0; i < 4; i++) {
    params(&p, prompts[i], plen[i], 24);
    CHECK(sched_request_submit(s, &p, &mixed[i].id) == 0, "submit");
    params(&p, prompts[i + 4], plen[i + 4], 40);
    p.constraint = i == 2 ? jx : ix;
    if (i == 1) {
      p.n = 3;
      p.sampling.temperature = 1;
      p.sampling.has_seed = 1;
      p.sampling.seed = 7;
    }
    if (i == 3) p.max_tokens = 2;
    CHECK(sched_request_submit(s, &p, &mixed[i + 4].id) == 0, "submit");
  }
  run_until_done(s, mixed, 8, 60);
  for (int i = 0; i < 4; i++)
    CHECK(mixed[i].done && !memcmp(solo[i].toks[0], mixed[i].toks[0], 24 * sizeof(int32_t)),
          "free request %d beside constrained ones differs from solo", i);
  CHECK(regex_ok(mixed[4].toks[0], mixed[4].ntok[0]) && mixed[4].why[0] == SCHED_FINISH_STOP,
        "greedy regex output (%d tokens, finish %d)", mixed[4].ntok[0], mixed[4].why[0]);
  for (int c = 0; c < 3; c++)
    CHECK(regex_ok(mixed[5].toks[c], mixed[5].ntok[c]) && mixed[5].why[c] == SCHED_FINISH_STOP,
          "sampled choice %d (%d tokens)", c, mixed[5].ntok[c]);
  /* JSON: {"a":N} with 0 <= N <= 99, written by hand here */
  char out[64] = {0};
  for (int k = 0; k < mixed[6].ntok[0] && k < 63; k++) out[k] = (char)mixed[6].toks[0][k];
  int nval = -1, used = 0;
  CHECK(sscanf(out, "{\"a\":%d}%n", &nval, &used) == 1 && used == (int)strlen(out) && nval >= 0 && nval <= 99 &&
            (out[5] != '0' || out[6] == '}') && mixed[6].why[0] == SCHED_FINISH_STOP,
        "json output '%s'", out);
  CHECK(mixed[7].ntok[0] == 2 && mixed[7].why[0] == SCHED_FINISH_LENGTH, "max_tokens 2: %d tokens, finish %d",
        mixed[7].ntok[0], mixed[7].why[0]);
  sched_free(s);
  gr_index_unref(ix); /* the scheduler dropped its references with the requests */
  gr_index_unref(jx);
  gr_vocab_free(v);
}

/* Speculative decoding (n-gram prompt lookup) changes how many steps a
 * sequence takes, never its tokens: greedy and seeded requests give the
 * same tokens with and without it, also batched and with preemption forced
 * by a small pool; unseeded sampling's distribution at a verified position
 * is the same (chi-square); and the drafts were both accepted and rejected,
 * so neither path went untested. */
#define NSPEC 24
static int32_t spec_prompts[NSPEC][64];
static int spec_plen[NSPEC];

/* Runs n requests on s (all submitted at once) until they end. */
static void run_on(sched *s, result *rs, const sched_request_params *ps, int n) {
  memset(rs, 0, (size_t)n * sizeof *rs);
  for (int i = 0; i < n; i++) CHECK(sched_request_submit(s, &ps[i], &rs[i].id) == 0, "submit %d", i);
  run_until_done(s, rs, n, 120);
}

/* The same on a scheduler of its own; its stats when idle into st. */
static void run_set(result *rs, const sched_request_params *ps, int n, int max_seqs, uint64_t kv, sched_stats *st) {
  sched *s = mk(max_seqs, 256, kv, 16);
  run_on(s, rs, ps, n);
  if (st) stats_when_idle(s, st);
  sched_free(s);
}

/* Wilson-Hilferty: chi-square with df degrees of freedom as a standard normal z */
static double chi2_z(double x, int df) {
  double k = 2.0 / (9.0 * df);
  return (cbrt(x / df) - (1 - k)) / sqrt(k);
}

static void test_speculative(void) {
  static result off[NSPEC], on[NSPEC];
  static sched_request_params ps[NSPEC];
  uint64_t st = 777;
  for (int i = 0; i < NSPEC; i++) { /* half repetitive (drafts found), half random */
    int period = 3 + i % 5;
    spec_plen[i] = 20 + (i * 5) % 40;
    for (int j = 0; j < spec_plen[i]; j++) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      spec_prompts[i][j] = i % 2 ? prompts[i][j % plen[i]] : (int32_t)((st >> 33) % (uint64_t)info->vocab);
      if (i % 2 && j >= period) spec_prompts[i][j] = spec_prompts[i][j - period];
    }
    params(&ps[i], spec_prompts[i], spec_plen[i], 40 + i % 9);
    if (i % 3 == 1) { /* seeded sampling */
      ps[i].sampling.temperature = 0.9f;
      ps[i].sampling.top_p = 0.9f;
      ps[i].sampling.top_k = 50;
      ps[i].sampling.has_seed = 1;
      ps[i].sampling.seed = 1000 + (uint64_t)i;
    }
    if (i % 4 == 2) ps[i].sampling.repetition_penalty = 1.3f; /* a filter that reads the output so far */
    if (i % 5 == 3) ps[i].ignore_eos = 0, ps[i].n_stop_ids = 1, ps[i].stop_ids[0] = spec_prompts[i][1];
  }
  sched_stats s_off, s_on, s_small;
  spec_k = 0;
  run_set(off, ps, NSPEC, 16, pool_bytes(512, 16), &s_off);
  for (int pass = 0; pass < 2; pass++) {
    spec_k = 4;
    /* pass 1: a pool of 20 blocks for 16 sequences of up to 7 blocks: preemptions */
    run_set(on, ps, NSPEC, 16, pass ? pool_bytes(20, 16) : pool_bytes(512, 16), pass ? &s_small : &s_on);
    for (int i = 0; i < NSPEC; i++) {
      CHECK(on[i].done && on[i].ntok[0] == off[i].ntok[0] && on[i].why[0] == off[i].why[0],
            "pass %d request %d: %d tokens (%s) with speculation, %d (%s) without", pass, i, on[i].ntok[0],
            sched_finish_name(on[i].why[0]), off[i].ntok[0], sched_finish_name(off[i].why[0]));
      CHECK(!memcmp(on[i].toks[0], off[i].toks[0], (size_t)MFS_MIN(on[i].ntok[0], MAXT) * sizeof(int32_t)),
            "pass %d request %d: tokens differ with speculation", pass, i);
    }
  }
  spec_k = 0;
  CHECK(s_off.spec_drafts_total == 0 && s_off.spec_tokens == 0, "drafts while off");
  CHECK(s_on.spec_drafts_total > 0 && s_on.spec_accepted_tokens_total > 0 &&
            s_on.spec_accepted_tokens_total < s_on.spec_draft_tokens_total,
        "drafts %lld, draft tokens %lld, accepted %lld: both paths must run", (long long)s_on.spec_drafts_total,
        (long long)s_on.spec_draft_tokens_total, (long long)s_on.spec_accepted_tokens_total);
  /* steps of a batch depend on when the scheduler took each request; alone, a repetitive request's
   * steps do not */
  sched_stats one_off, one_on;
  static result solo[1];
  run_set(solo, &ps[5], 1, 16, pool_bytes(512, 16), &one_off); /* greedy, repetitive prompt */
  spec_k = 4;
  run_set(solo, &ps[5], 1, 16, pool_bytes(512, 16), &one_on);
  spec_k = 0;
  CHECK(one_on.steps_total < one_off.steps_total, "speculation saved no step alone (%lld vs %lld)",
        (long long)one_on.steps_total, (long long)one_off.steps_total);
  CHECK(s_small.preemptions_total > 0, "the small pool forced no preemption");
  int64_t per_pos = 0;
  for (int i = 0; i < SCHED_MAX_SPEC; i++) per_pos += s_on.spec_accepted_per_pos_total[i];
  CHECK(per_pos == s_on.spec_accepted_tokens_total, "accepted per position sums to %lld, not %lld", (long long)per_pos,
        (long long)s_on.spec_accepted_tokens_total);
  CHECK(s_on.generation_tokens_total == s_off.generation_tokens_total, "generated %lld vs %lld tokens",
        (long long)s_on.generation_tokens_total, (long long)s_off.generation_tokens_total);
  printf("speculative: greedy and seeded outputs equal (%d requests; %lld drafts, %lld/%lld draft tokens accepted; "
         "%lld vs %lld steps for one request alone; %lld preemptions with the small pool)\n",
         NSPEC, (long long)s_on.spec_drafts_total, (long long)s_on.spec_accepted_tokens_total,
         (long long)s_on.spec_draft_tokens_total, (long long)one_on.steps_total, (long long)one_off.steps_total,
         (long long)s_small.preemptions_total);

  /* Unseeded-alike sampling (distinct seeds on each side): the distribution of
   * the token at output position 2, the first one sampled from a verified
   * row after a draft token (position 1 comes from the pending token's row), is the same with and without speculation. */
  enum { NS = 2048, BATCH = 64 };
  int32_t rep[40];
  for (int j = 0; j < 40; j++) rep[j] = spec_prompts[1][j % 4];
  static int cnt[2][4096];
  memset(cnt, 0, sizeof cnt);
  sched_stats sst;
  memset(&sst, 0, sizeof sst);
  for (int side = 0; side < 2; side++) {
    spec_k = side ? 4 : 0;
    static result rs[BATCH];
    static sched_request_params bp[BATCH];
    sched *sc = mk(16, 256, pool_bytes(512, 16), 16); /* one scheduler a side, batches in turn */
    for (int b0 = 0; b0 < NS; b0 += BATCH) {
      for (int i = 0; i < BATCH; i++) {
        params(&bp[i], rep, 40, 3);
        bp[i].sampling.temperature = 1.0f;
        /* the prompt's four tokens made likely, so that drafts (the prompt's pattern) are accepted
         * often but far from always */
        bp[i].sampling.n_bias = 4;
        for (int j = 0; j < 4; j++) bp[i].sampling.bias_ids[j] = rep[j], bp[i].sampling.bias_vals[j] = 6.0f;
        bp[i].sampling.has_seed = 1;
        bp[i].sampling.seed = (uint64_t)(side * 1000000 + b0 + i);
      }
      run_on(sc, rs, bp, BATCH);
      for (int i = 0; i < BATCH; i++)
        if (rs[i].ntok[0] >= 3 && rs[i].toks[0][2] >= 0 && rs[i].toks[0][2] < 4096) cnt[side][rs[i].toks[0][2]]++;
    }
    if (side) stats_when_idle(sc, &sst);
    sched_free(sc);
  }
  spec_k = 0;
  /* chi-square test of homogeneity over the tokens seen >= 10 times in all, the rest pooled */
  double x2 = 0;
  int df = -1;
  int pooled[2] = {0, 0};
  for (int t = 0; t < 4096; t++) {
    int a = cnt[0][t], b = cnt[1][t];
    if (a + b < 10) {
      pooled[0] += a, pooled[1] += b;
      continue;
    }
    double e = (a + b) / 2.0; /* equal sample sizes */
    x2 += (a - e) * (a - e) / e + (b - e) * (b - e) / e;
    df++;
  }
  if (pooled[0] + pooled[1] >= 10) {
    double e = (pooled[0] + pooled[1]) / 2.0;
    x2 += (pooled[0] - e) * (pooled[0] - e) / e + (pooled[1] - e) * (pooled[1] - e) / e;
    df++;
  }
  double rate = sst.spec_draft_tokens_total ? (double)sst.spec_accepted_tokens_total / (double)sst.spec_draft_tokens_total : 0;
  CHECK(df >= 3, "too few categories (%d) for the test", df);
  CHECK(rate > 0.02 && rate < 0.98, "acceptance rate %.3f: the test needs both outcomes", rate);
  double z = df > 0 ? chi2_z(x2, df) : 0;
  CHECK(z < 3.3, "sampled distribution differs with speculation: chi2 %.1f, df %d, z %.2f", x2, df, z);
  printf("speculative: sampling distribution at a verified position: chi2 %.1f with %d df (z %.2f; %d samples a side), "
         "draft acceptance %.3f\n", x2, df, z, NS, rate);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_scheduler MODEL_DIR\n");
    return 2;
  }
  int rc = select_forced_isa();
  if (rc) return rc;
  char err[512];
  if (eng_model_load(&model, argv[1], NULL, NULL, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 2;
  }
  info = eng_model_get_info(model);
  make_prompts();
  test_batched_equals_solo();
  kv_dt = KVC_I8; /* rounding is per token: batched, chunked and preempted runs still equal solo ones */
  test_batched_equals_solo();
  kv_dt = KVC_F32;
  test_seeded_sampling();
  test_cancel_and_limits();
  test_queue_full();
  test_fork_and_prompt_logprobs();
  test_cancel_one_choice();
  test_engine_argmax();
  test_constrained();
  test_speculative();
  eng_model_free(model);
  const char *isa = getenv("MFASERVE_ISA");
  CHECK(!isa || !*isa || !strcmp(isa, "auto") || !strcmp(eng_isa_name(), isa), "kernel level %s at the end",
        eng_isa_name());
  printf("%s (kernel level %s)\n", failures ? "FAILED" : "all scheduler tests passed", eng_isa_name());
  return failures ? 1 : 0;
}
