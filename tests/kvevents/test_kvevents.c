/* test_kvevents.c: the KV-event publisher alone (kvevents/), subscribed to
 * over an ipc:// socket and decoded with msgpack-c:
 * - the wire format: three frames [topic, 8-byte big-endian sequence,
 *   payload], the payload [ts, events, 0] with vLLM's tagged arrays; a chain
 *   of stored blocks shares one BlockStored, removals one BlockRemoved;
 *   64-bit hashes survive (values above 2^63);
 * - the bounded queue: with the publisher paused, pushes beyond its room are
 *   dropped and counted exactly; the batch after the drop skips a sequence
 *   number and starts with AllBlocksCleared;
 * - replay: a DEALER asking from a sequence number gets the kept batches
 *   byte for byte (the lost one absent, the oldest dropped past
 *   replay_batches) and the end marker; a malformed request is ignored;
 * - kve_publisher_free sends a last AllBlocksCleared;
 * - endpoints ZMQ rejects are errors, not crashes.
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "common.h"
#include "kvevents_int.h"

static int g_fail;
#define T(c)                                                              \
  do {                                                                    \
    if (!(c)) {                                                           \
      fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #c);     \
      g_fail++;                                                           \
    }                                                                     \
  } while (0)

#define BS 2

/* One received message: its sequence number and decoded payload. */
typedef struct msg {
  int ok;
  uint64_t seq;
  char topic[64];
  char *payload; /* from malloc: the decoded strings point into it */
  size_t len;
  msgpack_unpacked up;
} msg;

static int recv_msg(void *sub, msg *m, int timeout_ms) {
  memset(m, 0, sizeof *m);
  zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&it, 1, timeout_ms) <= 0) return 0;
  zmq_msg_t part[3];
  int n = 0, more = 1;
  while (more && n < 3) {
    zmq_msg_init(&part[n]);
    if (zmq_msg_recv(&part[n], sub, 0) < 0) return 0;
    more = zmq_msg_more(&part[n]);
    n++;
  }
  T(n == 3 && !more);
  if (n == 3) {
    size_t tl = zmq_msg_size(&part[0]);
    T(tl < sizeof m->topic);
    memcpy(m->topic, zmq_msg_data(&part[0]), MFS_MIN(tl, sizeof m->topic - 1));
    T(zmq_msg_size(&part[1]) == 8);
    const uint8_t *s = zmq_msg_data(&part[1]);
    for (int i = 0; i < 8; i++) m->seq = m->seq << 8 | s[i];
    size_t len = zmq_msg_size(&part[2]);
    m->len = len;
    m->payload = malloc(len ? len : 1);
    if (m->payload) {
      memcpy(m->payload, zmq_msg_data(&part[2]), len);
      msgpack_unpacked_init(&m->up);
      size_t off = 0;
      m->ok = msgpack_unpack_next(&m->up, m->payload, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len;
      if (!m->ok) msgpack_unpacked_destroy(&m->up);
    }
  }
  for (int i = 0; i < n; i++) zmq_msg_close(&part[i]);
  return 1;
}

static void msg_free(msg *m) {
  if (m->ok) msgpack_unpacked_destroy(&m->up);
  free(m->payload);
}

static int is_str(msgpack_object o, const char *s) {
  return o.type == MSGPACK_OBJECT_STR && o.via.str.size == strlen(s) && !memcmp(o.via.str.ptr, s, o.via.str.size);
}

static int is_uint(msgpack_object o, uint64_t v) {
  return o.type == MSGPACK_OBJECT_POSITIVE_INTEGER && o.via.u64 == v;
}

/* The batch's events array (checking the envelope), or NULL. */
static const msgpack_object_array *events_of(const msg *m) {
  if (!m->ok) return NULL;
  msgpack_object b = m->up.data;
  if (b.type != MSGPACK_OBJECT_ARRAY || b.via.array.size != 3) return NULL;
  if (b.via.array.ptr[0].type != MSGPACK_OBJECT_FLOAT64 || b.via.array.ptr[0].via.f64 < 1e9) return NULL;
  if (!is_uint(b.via.array.ptr[2], 0) || b.via.array.ptr[1].type != MSGPACK_OBJECT_ARRAY) return NULL;
  return &b.via.array.ptr[1].via.array;
}

static int is_cleared(msgpack_object e) {
  return e.type == MSGPACK_OBJECT_ARRAY && e.via.array.size == 1 && is_str(e.via.array.ptr[0], "AllBlocksCleared");
}

/* ["BlockStored", hashes, parent, tokens, BS, nil, "GPU", nil] */
static int is_stored(msgpack_object e, const uint64_t *h, int nh, const uint64_t *parent, const int32_t *toks) {
  if (e.type != MSGPACK_OBJECT_ARRAY || e.via.array.size != 8) return 0;
  const msgpack_object *f = e.via.array.ptr;
  if (!is_str(f[0], "BlockStored") || f[1].type != MSGPACK_OBJECT_ARRAY || f[1].via.array.size != (uint32_t)nh)
    return 0;
  for (int i = 0; i < nh; i++)
    if (!is_uint(f[1].via.array.ptr[i], h[i])) return 0;
  if (parent ? !is_uint(f[2], *parent) : f[2].type != MSGPACK_OBJECT_NIL) return 0;
  if (f[3].type != MSGPACK_OBJECT_ARRAY || f[3].via.array.size != (uint32_t)(nh * BS)) return 0;
  for (int i = 0; i < nh * BS; i++)
    if (!is_uint(f[3].via.array.ptr[i], (uint64_t)toks[i])) return 0;
  return is_uint(f[4], BS) && f[5].type == MSGPACK_OBJECT_NIL && is_str(f[6], "GPU") &&
         f[7].type == MSGPACK_OBJECT_NIL;
}

static int is_removed(msgpack_object e, const uint64_t *h, int nh) {
  if (e.type != MSGPACK_OBJECT_ARRAY || e.via.array.size != 3) return 0;
  const msgpack_object *f = e.via.array.ptr;
  if (!is_str(f[0], "BlockRemoved") || !is_str(f[2], "GPU") || f[1].type != MSGPACK_OBJECT_ARRAY ||
      f[1].via.array.size != (uint32_t)nh)
    return 0;
  for (int i = 0; i < nh; i++)
    if (!is_uint(f[1].via.array.ptr[i], h[i])) return 0;
  return 1;
}

/* What a subscriber received, to compare with replayed copies. */
typedef struct seen {
  uint64_t seq;
  char *data;
  size_t len;
} seen;

static void keep(seen *s, const msg *m) {
  s->seq = m->seq;
  s->len = m->len;
  s->data = malloc(m->len ? m->len : 1);
  if (s->data) memcpy(s->data, m->payload, m->len);
}

/* Asks the replay socket for batches from start on (a DEALER: ["", start])
 * and checks the answer: want[0..n) byte for byte, then the end marker. */
static void replay_expect(void *dealer, uint64_t start, const seen *want, int n) {
  uint8_t sb[8];
  for (int i = 0; i < 8; i++) sb[i] = (uint8_t)(start >> (56 - 8 * i));
  T(zmq_send(dealer, "", 0, ZMQ_SNDMORE) == 0 && zmq_send(dealer, sb, 8, 0) == 8);
  for (int r = 0; r <= n; r++) {
    zmq_pollitem_t it = {dealer, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 3000) <= 0) {
      T(!"replay answered");
      return;
    }
    zmq_msg_t f[3];
    int k = 0, more = 1;
    while (more && k < 3) {
      zmq_msg_init(&f[k]);
      zmq_msg_recv(&f[k], dealer, 0);
      more = zmq_msg_more(&f[k]);
      k++;
    }
    T(k == 3 && !more && zmq_msg_size(&f[0]) == 0 && zmq_msg_size(&f[1]) == 8);
    if (k == 3 && zmq_msg_size(&f[1]) == 8) {
      const uint8_t *s = zmq_msg_data(&f[1]);
      uint64_t seq = 0;
      for (int i = 0; i < 8; i++) seq = seq << 8 | s[i];
      if (r < n) {
        T(seq == want[r].seq && zmq_msg_size(&f[2]) == want[r].len &&
          !memcmp(zmq_msg_data(&f[2]), want[r].data, want[r].len));
      } else {
        T(seq == UINT64_MAX && zmq_msg_size(&f[2]) == 0); /* the end: -1, "" */
      }
    }
    for (int i = 0; i < k; i++) zmq_msg_close(&f[i]);
  }
}

static void push_stored(kve_publisher *p, uint64_t h, const uint64_t *parent, const int32_t *toks) {
  kvc_event ev = {KVC_EV_STORED, h, parent ? *parent : KVC_HASH_SEED, parent != NULL, toks, BS};
  kve_publisher_on_event(p, &ev);
}

static void push_removed(kve_publisher *p, uint64_t h) {
  kvc_event ev = {KVC_EV_REMOVED, h, 0, 0, NULL, 0};
  kve_publisher_on_event(p, &ev);
}

static void test_wire_and_drops(void) {
  char ep[128];
  snprintf(ep, sizeof ep, "ipc:///tmp/mfs-test-kvevents-%d", (int)getpid());
  enum { CAP = 5 };
  char rep[128];
  snprintf(rep, sizeof rep, "ipc:///tmp/mfs-test-kvevents-replay-%d", (int)getpid());
  kve_opts o = {ep, "kv@pod@model", BS, CAP, 0, rep, 3};
  kve_publisher *p = NULL;
  char err[256];
  T(kve_publisher_new_paused(&p, &o, err, sizeof err) == 0);
  if (!p) return;
  void *zctx = zmq_ctx_new(), *sub = zmq_socket(zctx, ZMQ_SUB);
  T(zmq_connect(sub, ep) == 0);
  T(zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "kv@", 3) == 0);
  usleep(300 * 1000); /* a SUB gets only what is sent after it joined */

  /* The queue holds the start-up AllBlocksCleared; 4 more fit (CAP 5). */
  const uint64_t h1 = 0xfedcba9876543210ull, h2 = 0x8000000000000001ull, h3 = 7, h9 = 0x1234;
  const int32_t t1[BS] = {11, 12}, t2[BS] = {13, 2147483647}, t3[BS] = {0, 1};
  push_stored(p, h1, NULL, t1);
  push_stored(p, h2, &h1, t2); /* continues h1's chain: one event */
  push_removed(p, h9);
  push_removed(p, h3);         /* the queue is full now */
  push_stored(p, 99, NULL, t3); /* dropped */
  push_removed(p, 98);          /* dropped */
  kve_stats st;
  kve_publisher_stats(p, &st);
  T(st.dropped_events == 2 && st.published_events == 0 && st.batches == 0);

  kve_publisher_pause(p, 0);
  msg m;
  T(recv_msg(sub, &m, 3000));
  T(m.seq == 0 && !strcmp(m.topic, "kv@pod@model"));
  seen got[5] = {{0}};
  keep(&got[0], &m);
  const msgpack_object_array *ev = events_of(&m);
  T(ev && ev->size == 3);
  if (ev && ev->size == 3) {
    uint64_t hs[2] = {h1, h2}, rs[2] = {h9, h3};
    int32_t toks[2 * BS] = {11, 12, 13, 2147483647};
    T(is_cleared(ev->ptr[0]));
    T(is_stored(ev->ptr[1], hs, 2, NULL, toks));
    T(is_removed(ev->ptr[2], rs, 2));
  }
  msg_free(&m);

  /* After the drop: a gap marker goes in first, then the event. */
  push_stored(p, h3, &h2, t3); /* h2 is not this batch's: its parent stays explicit */
  T(recv_msg(sub, &m, 3000));
  T(m.seq == 2); /* 1 is the lost batch */
  keep(&got[1], &m);
  ev = events_of(&m);
  T(ev && ev->size == 2);
  if (ev && ev->size == 2) {
    T(is_cleared(ev->ptr[0]));
    T(is_stored(ev->ptr[1], &h3, 1, &h2, t3));
  }
  msg_free(&m);
  /* the thread counts a batch once zmq_send returns, maybe after we got it */
  for (int i = 0; i < 300; i++) {
    kve_publisher_stats(p, &st);
    if (st.batches >= 2) break;
    usleep(10 * 1000);
  }
  T(st.dropped_events == 2 && st.published_events == 5 + 2 && st.batches == 2);

  /* No drop since: the next batch follows on. */
  push_removed(p, h3);
  T(recv_msg(sub, &m, 3000));
  T(m.seq == 3);
  keep(&got[2], &m);
  ev = events_of(&m);
  T(ev && ev->size == 1 && is_removed(ev->ptr[0], &h3, 1));
  msg_free(&m);

  /* Replay (3 batches kept): from 1 on gives 2 and 3 (1 was lost); a
   * malformed request gets nothing and breaks nothing. */
  void *dealer = zmq_socket(zctx, ZMQ_DEALER);
  T(zmq_connect(dealer, rep) == 0);
  replay_expect(dealer, 1, &got[1], 2);
  T(zmq_send(dealer, "x", 1, 0) == 1);
  replay_expect(dealer, 0, &got[0], 3);
  push_removed(p, h1);
  T(recv_msg(sub, &m, 3000));
  T(m.seq == 4);
  keep(&got[3], &m);
  msg_free(&m);
  replay_expect(dealer, 0, &got[1], 3); /* seq 0 fell out of the 3 kept */
  replay_expect(dealer, 5, NULL, 0);

  kve_publisher_free(p);
  for (int i = 0; i < 5; i++) free(got[i].data);
  zmq_close(dealer);
  T(recv_msg(sub, &m, 3000));
  T(m.seq == 5);
  ev = events_of(&m);
  T(ev && ev->size == 1 && is_cleared(ev->ptr[0]));
  msg_free(&m);
  T(!recv_msg(sub, &m, 200));
  zmq_close(sub);
  zmq_ctx_term(zctx);
}

static void test_bad_endpoints(void) {
  const char *bad[] = {"bogus://x", "tcp://*:notaport", "tcp://*:99999", ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kve_opts o = {bad[i], NULL, BS, 16, 0, NULL, 0};
    kve_publisher *p = NULL;
    char err[256] = "";
    T(kve_publisher_new(&p, &o, err, sizeof err) == MFS_EINVAL);
    T(p == NULL && err[0]);
    printf("  '%s': %s\n", bad[i], err);
  }
  kve_opts o = {"ipc:///tmp/x", NULL, 0, 16, 0, NULL, 0}; /* no block size */
  kve_publisher *p = NULL;
  char err[256];
  T(kve_publisher_new(&p, &o, err, sizeof err) == MFS_EINVAL && !p);
  kve_publisher_free(NULL);
}

int main(void) {
  test_wire_and_drops();
  test_bad_endpoints();
  if (g_fail) {
    fprintf(stderr, "test_kvevents: %d failure(s)\n", g_fail);
    return 1;
  }
  printf("test_kvevents: ok\n");
  return 0;
}
