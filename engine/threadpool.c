/* threadpool.c: the engine's persistent workers (ggml's shape: threads live
 * across steps; work is split by claiming from shared counters).
 *
 * A job is published by writing fn/arg/mode, opening it (closed = 0) and
 * bumping `gen`; workers spin on gen for a short while (decode steps come
 * back to back) and then sleep on a condition variable.
 *
 * Claiming jobs (tp_pool_run): a worker that sees a new gen enters (active
 * += 1), then runs fn only if the job is still open; the caller, once its
 * own fn returned (all work claimed), closes the job and waits only for the
 * workers inside fn (active == 0). Both sides use sequentially consistent
 * operations on closed/active, so either the worker sees the job closed or
 * the caller sees it active. A worker descheduled by another process thus
 * never holds the step up.
 *
 * All-worker jobs (tp_pool_run_all): the caller waits until every worker
 * ran fn once (`done`). */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "engine_int.h"

/* a spin-wait hint to the core (frees pipeline resources for the sibling
 * thread), on every architecture this builds for */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Spin this many pause loops before sleeping: long enough to catch the next
 * job of a decode step, short enough not to starve other processes. */
#define TP_SPIN 20000
/* The caller yields the CPU while waiting once it has spun this long. */
#define TP_YIELD_AFTER 2000

struct tp_pool {
  int n;
  pthread_t *th;
  tp_fn fn;
  void *arg;
  int all; /* the current job is an all-worker job */
  _Atomic unsigned gen;
  _Atomic int closed;
  _Atomic int active;
  _Atomic int done;
  _Atomic int stop;
  _Atomic int sleepers;
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

typedef struct {
  tp_pool *p;
  int ith;
} tp_arg;

static void *worker(void *a_) {
  tp_arg *a = a_;
  tp_pool *p = a->p;
  int ith = a->ith;
  free(a);
  unsigned seen = 0;
  for (;;) {
    unsigned g;
    int spins = 0;
    while ((g = atomic_load(&p->gen)) == seen && !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
      if (++spins < TP_SPIN) {
        cpu_relax();
        continue;
      }
      pthread_mutex_lock(&p->mu);
      atomic_fetch_add(&p->sleepers, 1);
      while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->cv, &p->mu);
      atomic_fetch_sub(&p->sleepers, 1);
      pthread_mutex_unlock(&p->mu);
      spins = 0;
    }
    if (atomic_load(&p->stop)) return NULL;
    atomic_fetch_add(&p->active, 1);
    seen = atomic_load(&p->gen); /* the job this entry belongs to */
    if (!atomic_load(&p->closed)) {
      p->fn(p->arg, ith, p->n);
      if (p->all) atomic_fetch_add(&p->done, 1);
    }
    atomic_fetch_sub(&p->active, 1);
  }
}

int tp_pool_new(tp_pool **out, int n) {
  if (n < 1) n = 1;
  tp_pool *p = calloc(1, sizeof *p);
  if (!p) return MFS_ENOMEM;
  p->n = n;
  atomic_store(&p->closed, 1);
  p->th = calloc((size_t)n, sizeof *p->th);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  if (!p->th) goto fail;
  for (int i = 1; i < n; i++) {
    tp_arg *a = malloc(sizeof *a);
    if (!a) goto fail_join;
    *a = (tp_arg){p, i};
    if (pthread_create(&p->th[i], NULL, worker, a)) {
      free(a);
      p->n = i;
      goto fail_join;
    }
  }
  *out = p;
  return 0;
fail_join:
  tp_pool_free(p);
  return MFS_ENOMEM;
fail:
  free(p->th);
  free(p);
  return MFS_ENOMEM;
}

void tp_pool_free(tp_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->stop, 1);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->n; i++) pthread_join(p->th[i], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p->th);
  free(p);
}

int tp_pool_size(const tp_pool *p) { return p->n; }

static void wait_until(_Atomic int *v, int want_at_least, int want_zero) {
  for (int spins = 0;; spins++) {
    int x = atomic_load(v);
    if (want_zero ? x == 0 : x >= want_at_least) return;
    if (spins < TP_YIELD_AFTER) cpu_relax();
    else sched_yield();
  }
}

static void publish(tp_pool *p, tp_fn fn, void *arg, int all) {
  /* no worker is inside fn here (the previous job waited for active == 0),
   * so fn/arg can be replaced before the job is opened */
  p->fn = fn;
  p->arg = arg;
  p->all = all;
  atomic_store(&p->done, 0);
  atomic_store(&p->closed, 0);
  atomic_fetch_add(&p->gen, 1); /* seq_cst: pairs with the sleepers check */
  if (atomic_load(&p->sleepers) > 0) {
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
  }
}

void tp_pool_run(tp_pool *p, tp_fn fn, void *arg) {
  if (p->n == 1) {
    fn(arg, 0, 1);
    return;
  }
  publish(p, fn, arg, 0);
  fn(arg, 0, p->n);
  atomic_store(&p->closed, 1);
  wait_until(&p->active, 0, 1);
}

void tp_pool_run_all(tp_pool *p, tp_fn fn, void *arg) {
  if (p->n == 1) {
    fn(arg, 0, 1);
    return;
  }
  publish(p, fn, arg, 1);
  fn(arg, 0, p->n);
  wait_until(&p->done, p->n - 1, 0);
  atomic_store(&p->closed, 1);
  wait_until(&p->active, 0, 1);
}
