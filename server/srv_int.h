/* srv_int.h: the server's internal types, shared by its .c files only.
 *
 * Ownership and threads:
 * - srv, srv_conn and srv_gen belong to the loop thread. The one exception
 *   is a srv_job running on libuv's worker pool: it reads its own copy of the
 *   body and the immutable model/tokenizer, and builds a srv_gen that nobody
 *   else can see until the job's after-work callback runs on the loop.
 * - srv_conn is one HTTP request (MHD's *con_cls). It is reference-counted:
 *   MHD holds one reference until its request-completed callback, a job in
 *   flight one, a streaming response one (until MHD frees the response) and
 *   the disconnect watcher one (until its close callback).
 * - srv_gen is one completion or chat request; it lives in the id map from
 *   submit until the scheduler's last event of each of its requests, and is
 *   freed then (its connection may be gone already: gen->cc is NULL then).
 */
#ifndef MFS_SRV_INT_H
#define MFS_SRV_INT_H

#include <microhttpd.h>
#include <stdint.h>
#include <uv.h>

#include "common.h"
#include "engine.h"
#include "grammar.h"
#include "kvevents.h"
#include "scheduler.h"
#include "server.h"
#include "tokenizer.h"

#define SRV_VERSION "0.1.0"
#define SRV_MAX_STOP 4
#define SRV_MAX_CHOICES 1024 /* prompts x n in one request */
#define SRV_IDLE_TIMEOUT 5      /* s: waiting for a request's headers (keep-alive idle too) */
#define SRV_REQUEST_TIMEOUT 300 /* s: inactivity once a request started (suspension pauses it) */
#define SRV_RECEIVE_DEADLINE 30 /* s, default of --receive-timeout: a request's headers and body must all
                                   arrive within this of the connection starting to wait for it, however
                                   slowly bytes trickle */
/* Lingering close (srv_loop.c): after an answer that left input unread, the
 * rest is read and thrown away until the client closes, at most this long in
 * all / this long without a byte / this many bytes, for this many sockets at
 * once (nginx: lingering_time 30 s, lingering_timeout 5 s). */
#define SRV_LINGER_TIME 30
#define SRV_LINGER_IDLE 5
#define SRV_LINGER_BYTES (256ull << 20)
#define SRV_LINGER_MAX 64

/* One open socket, for the receive deadline (MHD's timeouts count only
 * inactivity). Allocated when MHD reports the connection, freed when it
 * closes; loop thread only. */
typedef struct srv_sock {
  int fd;
  int waiting;   /* between requests, or receiving one: the deadline runs */
  int killed;
  int linger;    /* answered before its body was read: linger when it closes */
  double t_wait; /* mfs_now() when it started waiting */
  struct srv_sock *next, *prev;
} srv_sock;

/* A closed connection's socket kept open to read and discard what its
 * client still sends (lingering close); fd is a dup() of MHD's. */
typedef struct srv_linger {
  uv_poll_t poll;
  struct srv *s;
  int fd;
  uint64_t bytes;
  double t_start, t_last;
  struct srv_linger *next, *prev;
} srv_linger;

/* ---- growable byte buffer ---- */
typedef struct sb {
  char *p;
  size_t len, cap;
  int oom;
} sb;
void sb_put(sb *b, const void *s, size_t n);
void sb_puts(sb *b, const char *s);
void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_json_str(sb *b, const char *s, size_t n); /* quoted, escaped JSON string */
void sb_json_num(sb *b, double v);                /* -inf -> -9999.0, NaN -> null */
void sb_free(sb *b);
char *sb_take(sb *b); /* NUL-terminated; the buffer becomes empty */

/* ---- errors: the one table of HTTP statuses (srv_http.c) ---- */
typedef enum {
  SRV_E_NONE = 0,
  SRV_E_INVALID,         /* 400 invalid_request_error */
  SRV_E_UNSUPPORTED,     /* 400 */
  SRV_E_CONTEXT,         /* 400 context_length_exceeded */
  SRV_E_AUTH,            /* 401 */
  SRV_E_NOT_FOUND,       /* 404 unknown route */
  SRV_E_MODEL_NOT_FOUND, /* 404 */
  SRV_E_METHOD,          /* 405 */
  SRV_E_TOO_LARGE,       /* 413 */
  SRV_E_QUEUE_FULL,      /* 429 + Retry-After */
  SRV_E_INTERNAL,        /* 500 */
  SRV_E_UNAVAILABLE,     /* 503: loading or draining */
  SRV_E_N
} srv_err;

typedef struct srv_error {
  srv_err kind;
  char param[64];
  char msg[512];
} srv_error;
void srv_error_set(srv_error *e, srv_err kind, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int srv_error_status(srv_err kind);
/* {"error":{...}} JSON (and, in streams, the same object after "data: "). */
void srv_error_json(sb *out, const srv_error *e);

/* ---- id map: scheduler request id -> gen ---- */
typedef struct srv_idmap {
  uint64_t *keys; /* 0: empty, UINT64_MAX: deleted */
  void **vals;
  size_t cap, n, used;
} srv_idmap;
int srv_idmap_put(srv_idmap *m, uint64_t k, void *v);
void *srv_idmap_get(const srv_idmap *m, uint64_t k);
void srv_idmap_del(srv_idmap *m, uint64_t k);
void srv_idmap_free(srv_idmap *m);

/* ---- histograms (seconds) ---- */
#define SRV_HIST_MAX 24
typedef struct srv_hist {
  const char *name, *help;
  int n;
  double le[SRV_HIST_MAX];
  uint64_t count[SRV_HIST_MAX]; /* per bucket, not cumulative */
  uint64_t total;
  double sum;
} srv_hist;
void srv_hist_observe(srv_hist *h, double v);

/* ---- chat templates ---- */
/* plain: "role: content\n\n" per message, then "assistant: " (the bundled
 * mfa-kr-29m's tokenizer_config.json template) */
typedef enum { SRV_TMPL_CHATML = 0, SRV_TMPL_LLAMA3, SRV_TMPL_MISTRAL, SRV_TMPL_PLAIN } srv_tmpl;

/* ---- one generation ---- */
typedef struct srv_tokrec { /* one token with its logprobs (only kept when asked for) */
  int32_t id;
  float lp;
  int n_top;
  int32_t top_ids[SCHED_MAX_LOGPROBS];
  float top_lps[SCHED_MAX_LOGPROBS];
} srv_tokrec;

typedef struct srv_choice {
  int prompt;         /* which prompt */
  tok_stream *ts;
  sb text;            /* generated text, stop strings already cut */
  size_t sent;        /* bytes of text already streamed */
  int n_tokens;       /* tokens counted in usage */
  int finished;
  const char *finish; /* "stop", "length", NULL while running */
  int stop_matched;   /* a stop string ended it (server-side) */
  double last_t;      /* time of the previous token, for inter-token latency */
  srv_tokrec *recs;   /* logprob records not yet written out */
  int n_recs, cap_recs;
  size_t text_off;    /* completions text_offset running position */
  int started;        /* stream: first chunk (role / echo) written */
  int tok_sent;       /* stream: tokens whose chunk is written (a chunk goes out for new tokens even
                         when their text is empty or held back, as vLLM's delta_token_ids do) */
} srv_choice;

typedef struct srv_prompt {
  int32_t *ids; /* malloc'd */
  int n_ids;
  char *text;   /* for echo: the prompt's text (malloc'd), else NULL */
  uint64_t req; /* scheduler id, 0 until submitted */
  int live;     /* submitted, last event not seen */
  int cached_tokens;
  srv_tokrec *plp; /* [n_ids] prompt logprobs (echo + logprobs), or NULL */
  int n_plp;       /* prompt logprobs received so far (they come with the prefill, maybe over several steps) */
  int first_seen;  /* its first token event came (the prefill histogram has it) */
} srv_prompt;

typedef enum { SRV_KIND_COMPLETION = 0, SRV_KIND_CHAT } srv_kind;

typedef struct srv_conn srv_conn;
typedef struct srv srv;

typedef struct srv_gen {
  srv *s;
  srv_conn *cc; /* NULL once the connection is gone */
  srv_kind kind;
  char id[48];
  int64_t created;
  int stream, include_usage, continuous_usage;
  int echo;
  int tools_on;      /* chat with tools in use: <tool_call> blocks in the output become tool_calls */
  int logprobs;      /* -1: none; completions 0..20, chat top_logprobs 0..20 */
  int return_ids;    /* return_tokens_as_token_ids */
  int include_stop;  /* include_stop_str_in_output */
  unsigned decode_flags;
  int n_stop;
  char *stop[SRV_MAX_STOP];
  size_t stop_len[SRV_MAX_STOP];
  size_t max_stop_len;
  int32_t stop_tok[SCHED_MAX_STOP_IDS + 16]; /* ids whose text is never shown */
  int n_stop_tok;
  sched_request_params sp; /* prompt fields filled per prompt at submit */
  int n_prompts, n;
  srv_prompt *prompts;
  srv_choice *choices; /* [n_prompts * n], index = prompt * n + j */
  int n_live;          /* submitted requests whose last event has not come */
  int failed;          /* a FINISH_ERROR came */
  int aborted;         /* shutdown or cancel ended it */
  int done;            /* every request ended; final output written */
  int err_code;
  sb out;              /* stream: SSE bytes not yet taken by MHD; else the final body */
  size_t out_off;
  int status;          /* final HTTP status for non-streaming */
  struct srv_gen *next, *prev; /* srv's list of gens in the scheduler */
  int linked;                  /* in srv's list (submitted) */
  int final_written;           /* stream: finish chunks and [DONE] written */
  int oom_cut;                 /* stream: out failed to grow; ends with oom_tail (srv_gen.c) */
  size_t oom_off;              /* bytes of oom_tail sent */
  int dirty;                   /* in srv's list of gens with new events */
  struct srv_gen *dnext;
  /* first-token breakdown (mfs_now() times): the HTTP request's arrival, its
   * prompt tokenized (worker), submitted (loop), the first token sampled */
  double t_http, t_tokenized, t_submit, t_first_token;
  int first_byte;              /* stream: 1 once the first token's chunk is written, 2 once it was read by MHD */
} srv_gen;

/* ---- worker job ---- */
typedef enum {
  SRV_R_NONE = 0, SRV_R_COMPLETIONS, SRV_R_CHAT, SRV_R_TOKENIZE, SRV_R_DETOKENIZE,
  SRV_R_MODELS, SRV_R_HEALTH, SRV_R_VERSION, SRV_R_METRICS, SRV_R_CACHE_STATS, SRV_R_UI, SRV_R_MODEL_ONE
} srv_route;

typedef struct srv_job {
  uv_work_t w;
  srv *s;
  srv_conn *cc;
  srv_route route;
  char *body;
  size_t len;
  srv_error err;
  srv_gen *gen;   /* prepared generation (COMPLETIONS / CHAT) */
  sb resp;        /* ready JSON (TOKENIZE / DETOKENIZE) */
  double t0, t1;  /* work start/end: the log, and t1 is when the prompt was tokenized */
} srv_job;

struct srv_conn {
  srv *s;
  struct MHD_Connection *mc;
  int refs;
  srv_route route;
  int post;
  sb body;
  int too_large;
  int started;     /* the access handler saw the end of the body */
  int suspended;
  int closed;      /* MHD's request-completed callback ran */
  int gone;        /* the client went away */
  int watching;
  uv_poll_t watch;
  /* a complete response waiting to be queued after resume */
  int resp_ready;
  int resp_status;
  char *resp_body;
  size_t resp_len;
  const char *resp_ctype;
  int retry_after;
  srv_gen *gen;    /* streaming or non-streaming generation */
  int streaming;   /* SSE response queued */
  double t_arrival; /* mfs_now() when its headers were in */
  srv_conn *next, *prev; /* srv's list of live connections */
};

typedef enum { SRV_LOADING = 0, SRV_READY, SRV_DRAINING, SRV_STOPPING, SRV_FAILED } srv_state;

struct srv {
  srv_opts o;
  char *host, *model_dir, *api_key, *chat_template_name;
  char served[256];
  uv_loop_t loop;
  uv_poll_t mhd_poll;
  uv_timer_t mhd_timer, drain_timer, stop_timer;
  srv_sock *socks;            /* open sockets (receive deadline, idle eviction) */
  int n_socks;                /* connections MHD reported open */
  long long n_evicted;        /* idle connections closed near the connection limit */
  srv_linger *lingers;        /* sockets in a lingering close */
  int n_lingers, linger_on;   /* linger_on: linger_timer exists (srv_run until close_all) */
  uv_timer_t linger_timer;    /* enforces SRV_LINGER_TIME / SRV_LINGER_IDLE while any linger */
  double t_evict_log;
  double t_deadline_check;
  uv_async_t ev_async;
  uv_signal_t sig_term, sig_int;
  uv_work_t load_work;
  struct MHD_Daemon *mhd;
  int port;
  srv_state state;
  int load_err;
  char load_msg[1024];
  double load_frac_logged;
  eng_model *model;
  const eng_model_info *info;
  tok_tokenizer *tok;
  sched *sched;
  kve_publisher *kvev;  /* NULL without --kv-events-endpoint; freed after sched */
  int max_model_len;
  srv_tmpl tmpl;
  int32_t tmpl_stop[4]; /* end-of-turn ids the template adds as stop ids */
  int n_tmpl_stop;
  int32_t eos[10];      /* EOS ids (model config + tokenizer) */
  int n_eos;
  gr_vocab *gvocab;     /* the tokens' bytes, for structured outputs (srv_struct.c) */
  sched_event *evbuf;
  int evcap;
  srv_idmap map;
  srv_gen *gens;        /* in the scheduler */
  srv_gen *dirty;       /* gens that got events in this drain */
  srv_conn *conns;      /* live HTTP requests */
  int n_conns;
  int jobs;             /* worker jobs in flight */
  uint64_t next_id;
  double t_drain;
  /* metrics counted here (what the user saw) */
  uint64_t finished[4]; /* stop, length, abort, error */
  uint64_t http_requests;
  srv_hist h_ttft, h_itl, h_e2e, h_queue;
  /* the first token's time by phase (srv_metrics.c names them) */
  srv_hist h_tokenize, h_submit_wait, h_prefill, h_first_byte, h_http_ttft;
};

/* srv_loop.c */
void srv_conn_unref(srv_conn *cc);
void srv_conn_resume(srv_conn *cc);  /* resumes if suspended; MHD runs soon */
void srv_conn_suspend(srv_conn *cc); /* and starts watching for a disconnect */
void srv_kick(srv *s);               /* run MHD on the next loop iteration */
int srv_accepting(const srv *s);     /* READY and not draining */
void srv_check_drained(srv *s);      /* while draining: stop once nothing runs */
/* The request on mc is fully received (its receive deadline stops) / was
 * answered (the connection waits for the next one: the deadline restarts). */
void srv_sock_received(struct MHD_Connection *mc);
void srv_sock_waiting(struct MHD_Connection *mc);
/* mc was answered before its request body was read: when MHD closes it,
 * the rest of the body is read and discarded first (lingering close). */
void srv_sock_linger(struct MHD_Connection *mc);

/* srv_http.c */
enum MHD_Result srv_http_access(void *cls, struct MHD_Connection *mc, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_size, void **con_cls);
void srv_http_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                        enum MHD_RequestTerminationCode toe);
void srv_conn_set_error(srv_conn *cc, const srv_error *e);
void srv_conn_set_json(srv_conn *cc, int status, sb *body); /* takes body */

/* srv_openai.c (worker thread: reads s's immutable parts only) */
void srv_job_run(srv_job *j);
int srv_tmpl_pick(srv *s, char *msg, size_t msglen); /* after load */

/* srv_struct.c (worker thread): structured outputs */
int srv_grammar_init(srv *s); /* after load: the vocabulary the masks run over */
void srv_grammar_deinit(srv *s);
/* Reads response_format / structured_outputs / guided_*; sets
 * g->sp.constraint (a reference g owns). 0 or -1 with j->err set. */
struct cJSON;
int srv_constraint_parse(srv_job *j, srv_gen *g, const struct cJSON *root);
/* The tool-call format (docs/structured-outputs.md): what the prompt asks
 * for, what a required call is constrained to, what past calls are written
 * as, and what the output is parsed for, from these two tags. */
#define SRV_TOOL_OPEN "<tool_call>"
#define SRV_TOOL_CLOSE "</tool_call>"
int srv_tools_parse(srv_job *j, srv_gen *g, const struct cJSON *root, char **block);
int srv_tools_split(const char *text, size_t len, sb *content, struct cJSON **calls);
int srv_constraint_compile(srv_job *j, char kind, const char *src, size_t len, const char *const *choices,
                           const size_t *clens, int nchoices, const gr_tool *tools, int ntools, int parallel,
                           const char *param, gr_index **out);

/* srv_gen.c (loop thread) */
int srv_gen_submit(srv_gen *g, srv_error *e); /* 0 or fills e (state unchanged on failure) */
void srv_gen_event(srv_gen *g, const sched_event *ev);
void srv_gen_free(srv_gen *g); /* also unlinks it from the server's list */
void srv_gen_link(srv_gen *g);
void srv_gen_detach(srv_gen *g); /* the connection went away: cancel */
void srv_gen_flush(srv_gen *g);  /* after a batch of events: stream out and resume */
ssize_t srv_gen_read(srv_gen *g, char *buf, size_t max); /* stream content reader */

/* srv_metrics.c */
void srv_metrics_init(srv *s);
void srv_metrics_text(srv *s, sb *out);
/* with_hashes: add "prefix_hashes", the distinct hashes of indexed blocks */
void srv_cache_stats_json(srv *s, sb *out, int with_hashes);

/* srv_ui.c (generated) */
extern const unsigned char srv_ui_index[];
extern const size_t srv_ui_index_len;

#endif
