/* kvevents.c: the KV-event publisher (kvevents.h): a bounded queue filled
 * by the pool's thread, a publisher thread that owns the ZMQ PUB socket and
 * encodes batches with msgpack-c.
 *
 * Queue: a ring of fixed-size entries (kind, hashes) with a parallel ring of
 * block_size token ids each, both allocated at start; pushing copies, never
 * allocates. A push that finds no room drops the event and sets `dropping`;
 * the next push that fits first queues a GAP entry (room for both is
 * needed), so the gap sits exactly where the events were lost. The
 * publisher thread encodes a GAP as AllBlocksCleared at the head of a new
 * batch whose sequence number skips one.
 *
 * Batches: the thread takes up to max_batch_events entries at once (a GAP
 * only as the first of a batch) under the mutex, then encodes and sends
 * outside it. It sleeps in zmq_poll on an eventfd (written by a push that
 * finds the queue empty, by unpausing and by stopping) and, with a replay
 * endpoint, on the ROUTER socket, so it both sends and answers replays.
 *
 * Replay (vLLM's replay_endpoint): the last replay_batches payloads are
 * kept (copies, from malloc). A request [identity, "", start (8 bytes
 * big-endian)] is answered with [identity, "", seq, payload] for each kept
 * batch whose seq >= start, then [identity, "", -1 (8 bytes), ""]. A STORED entry whose parent is the previous STORED entry's
 * hash joins its BlockStored event (vLLM sends a request's new blocks as one
 * event); consecutive REMOVED entries share one BlockRemoved.
 */
#include "kvevents_int.h"

#include <errno.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "common.h"

enum { E_STORED = 0, E_REMOVED = 1, E_CLEARED = 2, E_GAP = 3 };

typedef struct kve_ent {
  uint64_t hash, parent;
  uint8_t kind, has_parent;
} kve_ent;

typedef struct kve_kept {
  uint64_t seq;
  char *data; /* from malloc; owned */
  size_t len;
} kve_kept;

struct kve_publisher {
  int block_size, cap, max_batch;
  char *topic; /* from malloc; owned */
  size_t topic_len;
  void *zctx, *sock, *replay; /* replay: ROUTER or NULL */
  int efd;                    /* eventfd waking the thread, -1 before it exists */

  pthread_mutex_t mu;
  pthread_t th;
  int th_started;
  /* under mu */
  kve_ent *q;    /* [cap], from malloc; owned */
  int32_t *qtok; /* [cap][block_size] */
  int head, n;
  int dropping; /* events were dropped since the last queued entry */
  int stop, paused;
  kve_stats st;

  /* publisher thread only */
  kve_ent *b;    /* [max_batch] */
  int32_t *btok; /* [max_batch][block_size] */
  uint64_t seq;
  msgpack_sbuffer sbuf;
  kve_kept *kept; /* [n_keep] ring of sent payloads, for replay */
  int n_keep, keep_head, keep_n;
};

static void wake(kve_publisher *p) {
  uint64_t one = 1;
  if (write(p->efd, &one, sizeof one) < 0) { /* EAGAIN: a wake-up is already pending */
  }
}

/* ---- queue (producer side) -------------------------------------------- */

static void ring_put(kve_publisher *p, const kve_ent *e, const int32_t *tokens) {
  int i = (p->head + p->n) % p->cap;
  p->q[i] = *e;
  if (tokens) memcpy(p->qtok + (size_t)i * p->block_size, tokens, (size_t)p->block_size * sizeof *tokens);
  p->n++;
}

void kve_publisher_on_event(void *ctx, const kvc_event *ev) {
  kve_publisher *p = ctx;
  kve_ent e = {ev->hash, ev->parent_hash, ev->kind == KVC_EV_STORED ? E_STORED : E_REMOVED,
               (uint8_t)(ev->kind == KVC_EV_STORED && ev->has_parent)};
  const int32_t *tokens = ev->kind == KVC_EV_STORED ? ev->tokens : NULL;
  if (tokens && ev->n_tokens != p->block_size) tokens = NULL; /* not this pool's: kept, without tokens */
  pthread_mutex_lock(&p->mu);
  int was_empty = p->n == 0;
  if (p->cap - p->n < (p->dropping ? 2 : 1)) {
    p->st.dropped_events++;
    p->dropping = 1;
  } else {
    if (p->dropping) {
      kve_ent gap = {0, 0, E_GAP, 0};
      ring_put(p, &gap, NULL);
      p->dropping = 0;
    }
    ring_put(p, &e, tokens);
    if (!tokens && e.kind == E_STORED) /* zero ids rather than stale ones */
      memset(p->qtok + (size_t)((p->head + p->n - 1) % p->cap) * p->block_size, 0,
             (size_t)p->block_size * sizeof(int32_t));
    if (was_empty) wake(p);
  }
  pthread_mutex_unlock(&p->mu);
}

/* ---- encoding ---------------------------------------------------------- */

static void pack_cstr(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

/* Does entry i continue the event that entry i-1 is part of? */
static int joins(const kve_ent *b, int i) {
  if (i == 0) return 0;
  if (b[i].kind == E_REMOVED) return b[i - 1].kind == E_REMOVED;
  return b[i].kind == E_STORED && b[i - 1].kind == E_STORED && b[i].has_parent && b[i].parent == b[i - 1].hash;
}

/* The KVEventBatch of entries b[0..k) into p->sbuf; returns the number of
 * wire events. */
static int encode(kve_publisher *p, int k, double ts) {
  int n_events = 0;
  for (int i = 0; i < k; i++) n_events += !joins(p->b, i);
  msgpack_sbuffer_clear(&p->sbuf);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &p->sbuf, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 3);
  msgpack_pack_double(&pk, ts);
  msgpack_pack_array(&pk, (size_t)n_events);
  for (int i = 0; i < k;) {
    int j = i + 1;
    while (j < k && joins(p->b, j)) j++;
    const kve_ent *e = &p->b[i];
    if (e->kind == E_STORED) {
      msgpack_pack_array(&pk, 8);
      pack_cstr(&pk, "BlockStored");
      msgpack_pack_array(&pk, (size_t)(j - i));
      for (int x = i; x < j; x++) msgpack_pack_uint64(&pk, p->b[x].hash);
      if (e->has_parent)
        msgpack_pack_uint64(&pk, e->parent);
      else
        msgpack_pack_nil(&pk);
      msgpack_pack_array(&pk, (size_t)(j - i) * (size_t)p->block_size);
      for (int x = i; x < j; x++)
        for (int t = 0; t < p->block_size; t++) msgpack_pack_int32(&pk, p->btok[(size_t)x * p->block_size + t]);
      msgpack_pack_int32(&pk, p->block_size);
      msgpack_pack_nil(&pk); /* lora_id */
      pack_cstr(&pk, "GPU"); /* medium: the engine's own pool (docs/kv-events.md) */
      msgpack_pack_nil(&pk); /* lora_name */
    } else if (e->kind == E_REMOVED) {
      msgpack_pack_array(&pk, 3);
      pack_cstr(&pk, "BlockRemoved");
      msgpack_pack_array(&pk, (size_t)(j - i));
      for (int x = i; x < j; x++) msgpack_pack_uint64(&pk, p->b[x].hash);
      pack_cstr(&pk, "GPU");
    } else { /* CLEARED, GAP */
      msgpack_pack_array(&pk, 1);
      pack_cstr(&pk, "AllBlocksCleared");
    }
    i = j;
  }
  msgpack_pack_int32(&pk, 0); /* data_parallel_rank */
  return n_events;
}

static double wall_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Encodes and sends b[0..k) as one message. */
static void send_batch(kve_publisher *p, int k) {
  if (p->b[0].kind == E_GAP) p->seq++; /* the lost events' batch: a gap a subscriber sees */
  encode(p, k, wall_now());
  uint8_t seq[8];
  for (int i = 0; i < 8; i++) seq[i] = (uint8_t)(p->seq >> (56 - 8 * i));
  int rc = zmq_send(p->sock, p->topic, p->topic_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  if (rc >= 0) rc = zmq_send(p->sock, seq, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  if (rc >= 0) rc = zmq_send(p->sock, p->sbuf.data, p->sbuf.size, ZMQ_DONTWAIT);
  if (rc < 0) mfs_log(MFS_LOG_WARN, "kvevents", "sending batch %llu: %s", (unsigned long long)p->seq,
                      zmq_strerror(zmq_errno()));
  if (p->replay) {
    kve_kept *k = &p->kept[(p->keep_head + p->keep_n) % p->n_keep];
    if (p->keep_n == p->n_keep) { /* full: the oldest goes */
      k = &p->kept[p->keep_head];
      p->keep_head = (p->keep_head + 1) % p->n_keep;
      p->keep_n--;
      free(k->data);
      k->data = NULL;
    }
    k->data = malloc(p->sbuf.size ? p->sbuf.size : 1);
    if (k->data) {
      memcpy(k->data, p->sbuf.data, p->sbuf.size);
      k->len = p->sbuf.size;
      k->seq = p->seq;
      p->keep_n++;
    }
  }
  p->seq++;
  pthread_mutex_lock(&p->mu);
  p->st.published_events += (uint64_t)k;
  p->st.batches++;
  pthread_mutex_unlock(&p->mu);
}

static void be64(uint8_t *out, uint64_t v) {
  for (int i = 0; i < 8; i++) out[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* Answers one replay request, if a well-formed one is waiting. */
static void serve_replay(kve_publisher *p) {
  zmq_msg_t f[3];
  int n = 0, total = 0, more = 1; /* f keeps the first 3 of total frames */
  while (more) {
    zmq_msg_t x;
    zmq_msg_init(&x);
    if (zmq_msg_recv(&x, p->replay, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&x);
      break;
    }
    more = zmq_msg_more(&x);
    total++;
    if (n < 3)
      f[n++] = x;
    else
      zmq_msg_close(&x);
  }
  if (total == 3 && zmq_msg_size(&f[1]) == 0 && zmq_msg_size(&f[2]) == 8) {
    const uint8_t *b = zmq_msg_data(&f[2]);
    uint64_t start = 0;
    for (int i = 0; i < 8; i++) start = start << 8 | b[i];
    for (int i = 0; i < p->keep_n; i++) {
      const kve_kept *k = &p->kept[(p->keep_head + i) % p->n_keep];
      if (k->seq < start) continue;
      uint8_t seq[8];
      be64(seq, k->seq);
      zmq_send(p->replay, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), ZMQ_SNDMORE | ZMQ_DONTWAIT);
      zmq_send(p->replay, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
      zmq_send(p->replay, seq, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
      zmq_send(p->replay, k->data, k->len, ZMQ_DONTWAIT);
    }
    uint8_t end[8];
    be64(end, UINT64_MAX); /* -1 as a signed 8-byte big-endian integer */
    zmq_send(p->replay, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(p->replay, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(p->replay, end, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(p->replay, "", 0, ZMQ_DONTWAIT);
  } else if (total) {
    mfs_log(MFS_LOG_WARN, "kvevents", "replay: ignored a request of %d frame(s) after the identity; want "
            "[\"\", 8-byte big-endian start]", total - 1);
  }
  for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
}

static void *publisher_main(void *arg) {
  kve_publisher *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    if (p->stop && p->n == 0) {
      pthread_mutex_unlock(&p->mu);
      break;
    }
    int k = 0;
    while ((!p->paused || p->stop) && k < p->max_batch && p->n > 0) {
      const kve_ent *e = &p->q[p->head];
      if (e->kind == E_GAP && k > 0) break; /* a gap starts the next batch */
      p->b[k] = *e;
      memcpy(p->btok + (size_t)k * p->block_size, p->qtok + (size_t)p->head * p->block_size,
             (size_t)p->block_size * sizeof(int32_t));
      p->head = (p->head + 1) % p->cap;
      p->n--;
      k++;
    }
    pthread_mutex_unlock(&p->mu);
    if (k) send_batch(p, k);
    zmq_pollitem_t it[2] = {{NULL, p->efd, ZMQ_POLLIN, 0}, {p->replay, 0, ZMQ_POLLIN, 0}};
    /* with something sent, only a look at the replay socket, then on */
    if (zmq_poll(it, p->replay ? 2 : 1, k ? 0 : -1) < 0 && zmq_errno() != EINTR) {
      mfs_log(MFS_LOG_WARN, "kvevents", "zmq_poll: %s", zmq_strerror(zmq_errno()));
      usleep(10000);
    }
    if (it[0].revents & ZMQ_POLLIN) {
      uint64_t v;
      if (read(p->efd, &v, sizeof v) < 0) { /* EAGAIN: read by an earlier round */
      }
    }
    if (p->replay && (it[1].revents & ZMQ_POLLIN)) serve_replay(p);
  }
  p->b[0] = (kve_ent){0, 0, E_CLEARED, 0}; /* the pool is going away */
  send_batch(p, 1);
  return NULL;
}

/* ---- lifecycle --------------------------------------------------------- */

/* vLLM's rule (ZmqEventPublisher._socket_setup): bind a wildcard or local
 * transport, connect to anything else. */
static int wants_bind(const char *ep) {
  return strchr(ep, '*') || strstr(ep, "::") || !strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9);
}

/* A tcp:// endpoint's port is '*' or 1..65535 (libzmq takes 99999 modulo
 * 2^16 without a word). Other transports are left to libzmq. */
static int port_ok(const char *ep) {
  if (strncmp(ep, "tcp://", 6)) return 1;
  const char *c = strrchr(ep + 6, ':');
  if (!c || !c[1]) return 0;
  if (!strcmp(c + 1, "*")) return 1;
  long v = 0;
  for (const char *d = c + 1; *d; d++) {
    if (*d < '0' || *d > '9' || (v = v * 10 + (*d - '0')) > 65535) return 0;
  }
  return v >= 1;
}

static int publisher_new(kve_publisher **out, const kve_opts *o, int paused, char *err, size_t errlen) {
  if (!o || !o->endpoint || !*o->endpoint || o->block_size < 1) {
    snprintf(err, errlen, "--kv-events-endpoint: empty endpoint or no block size");
    return MFS_EINVAL;
  }
  if (!port_ok(o->endpoint)) {
    snprintf(err, errlen, "--kv-events-endpoint '%s': a tcp:// endpoint needs host:port with a port of 1..65535 "
             "(or *)", o->endpoint);
    return MFS_EINVAL;
  }
  kve_publisher *p = calloc(1, sizeof *p);
  if (!p) return MFS_ENOMEM;
  pthread_mutex_init(&p->mu, NULL);
  p->efd = -1;
  msgpack_sbuffer_init(&p->sbuf);
  p->block_size = o->block_size;
  p->cap = o->queue_events > 0 ? o->queue_events : 65536;
  if (p->cap < 2) p->cap = 2; /* room for a gap and an event */
  p->max_batch = o->max_batch_events > 0 ? o->max_batch_events : 1024;
  const char *topic = o->topic ? o->topic : "";
  p->topic_len = strlen(topic);
  p->topic = malloc(p->topic_len + 1);
  p->q = malloc((size_t)p->cap * sizeof *p->q);
  p->qtok = malloc((size_t)p->cap * (size_t)p->block_size * sizeof *p->qtok);
  p->b = malloc((size_t)p->max_batch * sizeof *p->b);
  p->btok = malloc((size_t)p->max_batch * (size_t)p->block_size * sizeof *p->btok);
  int rc = MFS_ENOMEM;
  if (!p->topic || !p->q || !p->qtok || !p->b || !p->btok) goto fail;
  if (o->replay_endpoint && *o->replay_endpoint) {
    p->n_keep = o->replay_batches > 0 ? o->replay_batches : 10000;
    if (!(p->kept = calloc((size_t)p->n_keep, sizeof *p->kept))) goto fail;
  }
  if ((p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
    snprintf(err, errlen, "--kv-events-endpoint: eventfd: %s", strerror(errno));
    rc = MFS_EIO;
    goto fail;
  }
  memcpy(p->topic, topic, p->topic_len + 1);
  rc = MFS_EINVAL;
  p->zctx = zmq_ctx_new();
  if (!p->zctx || !(p->sock = zmq_socket(p->zctx, ZMQ_PUB))) {
    snprintf(err, errlen, "--kv-events-endpoint: cannot create a ZMQ socket: %s", zmq_strerror(zmq_errno()));
    goto fail;
  }
  int hwm = 100000, linger = 1000;
  zmq_setsockopt(p->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger);
  int bind = wants_bind(o->endpoint);
  if ((bind ? zmq_bind(p->sock, o->endpoint) : zmq_connect(p->sock, o->endpoint)) != 0) {
    int e = zmq_errno();
    snprintf(err, errlen, "--kv-events-endpoint '%s': cannot %s: %s", o->endpoint, bind ? "bind" : "connect",
             zmq_strerror(e));
    if (e == EADDRINUSE || e == EADDRNOTAVAIL || e == EACCES) rc = MFS_EIO; /* a good endpoint, not now */
    goto fail;
  }
  if (p->kept) { /* always bound, as vLLM does */
    if (!port_ok(o->replay_endpoint)) {
      snprintf(err, errlen, "--kv-events-replay-endpoint '%s': a tcp:// endpoint needs host:port with a port of "
               "1..65535 (or *)", o->replay_endpoint);
      goto fail;
    }
    if (!(p->replay = zmq_socket(p->zctx, ZMQ_ROUTER)) || zmq_bind(p->replay, o->replay_endpoint) != 0) {
      int e = zmq_errno();
      snprintf(err, errlen, "--kv-events-replay-endpoint '%s': cannot bind: %s", o->replay_endpoint,
               zmq_strerror(e));
      if (e == EADDRINUSE || e == EADDRNOTAVAIL || e == EACCES) rc = MFS_EIO;
      goto fail;
    }
    int linger = 0;
    zmq_setsockopt(p->replay, ZMQ_LINGER, &linger, sizeof linger);
  }
  kve_ent clear = {0, 0, E_CLEARED, 0}; /* sequence 0: a fresh pool */
  ring_put(p, &clear, NULL);
  p->paused = paused;
  rc = MFS_ENOMEM;
  if (pthread_create(&p->th, NULL, publisher_main, p)) goto fail;
  p->th_started = 1;
  mfs_log(MFS_LOG_INFO, "kvevents", "KV events: %s %s, topic '%s', queue of %d events%s%s%s",
          bind ? "bound to" : "connecting to", o->endpoint, p->topic, p->cap, p->replay ? "; replay on " : "",
          p->replay ? o->replay_endpoint : "", p->replay ? "" : "; no replay endpoint");
  *out = p;
  return 0;
fail:
  kve_publisher_free(p);
  return rc;
}

int kve_publisher_new(kve_publisher **out, const kve_opts *o, char *err, size_t errlen) {
  return publisher_new(out, o, 0, err, errlen);
}

int kve_publisher_new_paused(kve_publisher **out, const kve_opts *o, char *err, size_t errlen) {
  return publisher_new(out, o, 1, err, errlen);
}

void kve_publisher_free(kve_publisher *p) {
  if (!p) return;
  if (p->th_started) {
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_mutex_unlock(&p->mu);
    wake(p);
    pthread_join(p->th, NULL);
  }
  if (p->replay) zmq_close(p->replay);
  if (p->sock) zmq_close(p->sock); /* lingers up to 1 s for what is unsent */
  if (p->zctx) zmq_ctx_term(p->zctx);
  if (p->efd >= 0) close(p->efd);
  for (int i = 0; i < p->n_keep; i++) free(p->kept[i].data);
  free(p->kept);
  msgpack_sbuffer_destroy(&p->sbuf);
  pthread_mutex_destroy(&p->mu);
  free(p->topic);
  free(p->q);
  free(p->qtok);
  free(p->b);
  free(p->btok);
  free(p);
}

void kve_publisher_stats(kve_publisher *p, kve_stats *out) {
  pthread_mutex_lock(&p->mu);
  *out = p->st;
  pthread_mutex_unlock(&p->mu);
}

void kve_publisher_pause(kve_publisher *p, int paused) {
  pthread_mutex_lock(&p->mu);
  p->paused = paused;
  pthread_mutex_unlock(&p->mu);
  wake(p);
}
