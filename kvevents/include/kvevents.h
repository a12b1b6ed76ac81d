/* kvevents.h: publishes the KV pool's prefix-cache events (kvcache.h's
 * kvc_event) in vLLM's KV-event wire format, for KV-cache-aware routers such
 * as llm-d's precise prefix-cache scorer: ZMQ PUB, each message the three
 * frames [topic, sequence number (8 bytes, big-endian), msgpack payload],
 * the payload a KVEventBatch [ts, [events...], data_parallel_rank] whose
 * events are vLLM's tagged positional arrays
 *   ["BlockStored", [hash...], parent_hash | nil, [token...], block_size, nil, "GPU", nil]
 *   ["BlockRemoved", [hash...], "GPU"]
 *   ["AllBlocksCleared"]
 * docs/kv-events.md is the full contract (hash scheme, gaps, resync).
 *
 * The pool's thread (the scheduler) hands events to kve_publisher_on_event,
 * which only copies them into a bounded queue: it never waits for the
 * network. A publisher thread owns the ZMQ socket, takes whatever is queued
 * and sends it as one batch (consecutive stored blocks of one chain, and
 * consecutive removals, share an event as vLLM's do). When the queue is
 * full the event is dropped and counted; the next batch then starts with
 * AllBlocksCleared and its sequence number skips one, so a subscriber sees
 * both the gap and the reset. The first batch (sequence 0) is an
 * AllBlocksCleared (a fresh pool), and so is the last, sent by
 * kve_publisher_free (the pool is going away).
 */
#ifndef MFS_KVEVENTS_H
#define MFS_KVEVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "kvcache.h"

typedef struct kve_opts {
  /* ZMQ endpoint. As vLLM decides: one with '*' or "::", or ipc:// or
   * inproc://, is bound (subscribers connect to it: host '*', port 5557);
   * any other is connected to (a router that binds, e.g. tcp://epp:5557). */
  const char *endpoint;
  const char *topic;    /* first frame of every message; NULL or "": empty */
  int block_size;       /* tokens per block of the pool whose events come */
  int queue_events;     /* events the queue holds; <= 0: 65536 */
  int max_batch_events; /* queue entries per batch at most; <= 0: 1024 */
  /* NULL or "": none. Else a ROUTER socket bound there answers vLLM's
   * replay requests: a client (DEALER, or REQ for one reply) sends
   * ["", start seq as 8 bytes big-endian] and gets ["", seq, payload] for
   * each kept batch from start on, then ["", -1 as 8 bytes, ""]. */
  const char *replay_endpoint;
  int replay_batches;   /* batches kept for replay; <= 0: 10000 (vLLM's buffer_steps) */
} kve_opts;

typedef struct kve_publisher kve_publisher;

/* Opens the socket (bind or connect) and starts the publisher thread.
 * Returns 0, MFS_EINVAL (bad options or an endpoint ZMQ rejects as
 * malformed), MFS_EIO (a well-formed endpoint that cannot be bound now:
 * address in use or not available, permission) or MFS_ENOMEM; err says why.
 * *out is set only on success. */
int kve_publisher_new(kve_publisher **out, const kve_opts *o, char *err, size_t errlen);

/* Sends what is queued, then a last AllBlocksCleared, waits up to 1 s for
 * the socket to pass them on, stops the thread and frees everything. The
 * pool must no longer call kve_publisher_on_event. NULL: no-op. */
void kve_publisher_free(kve_publisher *p);

/* A kvc_event_fn (ctx is the publisher): queues the event, or counts it
 * dropped when the queue is full. One producer thread at a time; never
 * blocks on I/O (a mutex shared with the publisher thread's brief copies). */
void kve_publisher_on_event(void *ctx, const kvc_event *ev);

typedef struct kve_stats {
  uint64_t published_events; /* events sent, AllBlocksCleared included */
  uint64_t dropped_events;   /* pool events dropped because the queue was full */
  uint64_t batches;          /* messages sent */
} kve_stats;

/* Any thread. */
void kve_publisher_stats(kve_publisher *p, kve_stats *out);

#endif
