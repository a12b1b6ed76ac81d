/* server.h: mfaserve's HTTP front end (OpenAI-compatible API).
 *
 * One loop thread runs libuv and drives libmicrohttpd without threads of its
 * own (MHD's epoll descriptor is watched by a uv_poll_t, its timeout kept on
 * a uv_timer_t). Request bodies are parsed and tokenized on libuv's worker
 * pool; prepared requests go to the scheduler; its events come back through
 * uv_async_send and are turned into JSON or Server-Sent Events on the loop.
 *
 * Lifecycle: srv_new binds the listening socket (so the address is known and
 * /health answers 503 while the model loads); srv_run loads the model on a
 * worker, then serves until SIGTERM/SIGINT and a drain; srv_free releases
 * everything. All three are called from one thread, which becomes the loop
 * thread.
 */
#ifndef MFS_SERVER_H
#define MFS_SERVER_H

#include <stdint.h>
#include <stddef.h>

#include "kvcache.h"

typedef struct srv_opts {
  const char *model_dir;     /* HF-style model directory (config, safetensors, tokenizer.json) */
  const char *host;          /* numeric IPv4/IPv6 address to bind, e.g. "127.0.0.1" */
  int port;                  /* 0: an ephemeral port (srv_port tells which) */
  const char *served_model_name; /* NULL: the model directory's base name */
  const char *api_key;       /* NULL or "": /v1/ is open */
  int max_num_seqs;
  int max_num_batched_tokens;
  int max_queued_requests;   /* waiting requests beyond which submit answers 429 */
  int max_model_len;         /* <= 0: the model's */
  uint64_t kv_cache_bytes;
  kvc_dtype kv_cache_dtype;  /* the pool's storage (kvcache.h) */
  int block_size;
  int threads;               /* engine workers; <= 0: all CPUs */
  uint64_t max_body_bytes;   /* request bodies beyond this get 413 */
  int max_connections;       /* open connections at most (<= 0: 1000); more wait in the kernel's queue */
  double receive_timeout;    /* s a request's headers and body may take to arrive (<= 0: 30) */
  double shutdown_timeout;   /* seconds running requests get after SIGTERM */
  const char *chat_template; /* "auto" (default), "chatml", "llama3", "mistral", "plain" */
  int metrics_vllm;          /* /metrics also under vLLM's names (vllm:..., what routers read) */
  const char *kv_events_endpoint; /* NULL or "": no KV events; else the ZMQ endpoint (kvevents.h) */
  const char *kv_events_topic;    /* first frame of each KV-event message; NULL: "" */
  int kv_events_queue;            /* KV events queued for the publisher at most; <= 0: 65536 */
  const char *kv_events_replay_endpoint; /* NULL or "": none; else where past batches are replayed */
  int spec_tokens;           /* prompt-lookup speculative decoding: draft tokens at most (0: off; scheduler.h) */
  int spec_ngram_min, spec_ngram_max;
} srv_opts;

typedef struct srv srv;

/* Copies the options, binds host:port and opens the KV-event socket if
 * asked. Returns 0, MFS_EINVAL (bad option, a malformed KV-event endpoint;
 * message in err) or MFS_EIO (cannot listen, or bind the KV-event endpoint;
 * message in err). On failure nothing is left allocated. */
int srv_new(srv **out, const srv_opts *o, char *err, size_t errlen);
/* The bound port. */
int srv_port(const srv *s);
/* Loads the model (progress logged), serves until a signal and the drain
 * that follows, then returns 0; a model that fails to load returns its
 * negative MFS_* error after logging why. */
int srv_run(srv *s);
void srv_free(srv *s); /* NULL: no-op */

#endif
