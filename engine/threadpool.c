/* threadpool.c: the engine's persistent workers (ggml's shape: threads live
 * across steps and split work by index).
 *
 * A job is published by bumping `gen`; workers spin on it for a short while
 * (decode steps come back to back) and then sleep on a condition variable.
 * The caller runs index 0 itself and spins until `done` counts every worker.
 * Invariant: fn/arg are written before gen is released, and read only
 * after a worker observes the new gen (acquire). */
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "engine_int.h"

/* Spin this many pause loops before sleeping: long enough to catch the next
 * job of a decode step, short enough not to starve other processes. */
#define TP_SPIN 20000
/* The caller yields the CPU while waiting once it has spun this long: on a
 * loaded machine the worker it waits for may need this very core. */
#define TP_YIELD_AFTER 2000

struct tp_pool {
  int n;
  pthread_t *th;
  tp_fn fn;
  void *arg;
  _Atomic unsigned gen;
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
    while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
           !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
      if (++spins < TP_SPIN) {
        _mm_pause();
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
    seen = g;
    p->fn(p->arg, ith, p->n);
    atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
  }
}

int tp_pool_new(tp_pool **out, int n) {
  if (n < 1) n = 1;
  tp_pool *p = calloc(1, sizeof *p);
  if (!p) return MFS_ENOMEM;
  p->n = n;
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

void tp_pool_run(tp_pool *p, tp_fn fn, void *arg) {
  if (p->n == 1) {
    fn(arg, 0, 1);
    return;
  }
  p->fn = fn;
  p->arg = arg;
  atomic_store_explicit(&p->done, 0, memory_order_relaxed);
  atomic_fetch_add(&p->gen, 1); /* seq_cst: pairs with the sleepers check */
  if (atomic_load(&p->sleepers) > 0) {
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
  }
  fn(arg, 0, p->n);
  for (int spins = 0; atomic_load_explicit(&p->done, memory_order_acquire) < p->n - 1; spins++) {
    if (spins < TP_YIELD_AFTER) _mm_pause();
    else sched_yield();
  }
}
