/* srv_loop.c: the loop thread. libuv owns the thread; libmicrohttpd runs
 * without threads of its own (MHD_USE_EPOLL, no internal polling thread):
 * its epoll descriptor is watched by a uv_poll_t and MHD_run is called when
 * it is readable and when MHD's own timeout (MHD_get_timeout, re-armed after
 * every run) fires on a uv_timer_t. Code that resumes a connection "kicks"
 * MHD by arming that timer at 0 so MHD_run happens in the next iteration,
 * never from inside an MHD callback.
 *
 * A suspended connection is not polled by MHD, so MHD cannot see its client
 * leave; from its first suspension to the end of its request a uv_poll_t on
 * the socket waits for UV_DISCONNECT (EPOLLRDHUP) and cancels the request.
 * It stays armed while the connection is resumed (a stream is suspended and
 * resumed once per token: stopping and starting the poll each time cost
 * two epoll_ctl calls per token).
 *
 * The model loads on a worker (uv_queue_work) while /health answers 503.
 * The scheduler wakes the loop with uv_async_send; the loop takes every
 * queued event at once and routes each to its generation by request id.
 *
 * Shutdown (SIGTERM/SIGINT, uv_signal_t): stop admitting (503), let running
 * requests finish for --shutdown-timeout, abort the rest, wait briefly for
 * their last bytes to leave, resume every suspended connection (MHD requires
 * it before MHD_stop_daemon), stop MHD and close every handle. A second
 * signal skips the wait.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "srv_int.h"

#define LOG(lvl, ...) mfs_log(lvl, "server", __VA_ARGS__)

int srv_accepting(const srv *s) { return s->state == SRV_READY; }

static void mhd_arm(srv *s);
static void linger_end(srv *s, srv_linger *l);

/* Once a second: connections whose request has not fully arrived within
 * SRV_RECEIVE_DEADLINE of their wait starting (a client trickling bytes
 * keeps MHD's inactivity timeout at bay) are shut down; MHD then sees the
 * end of the stream and closes them. */
static void check_deadlines(srv *s) {
  double now = mfs_now(), limit = s->o.receive_timeout > 0 ? s->o.receive_timeout : SRV_RECEIVE_DEADLINE;
  if (now - s->t_deadline_check < 0.25) return;
  s->t_deadline_check = now;
  for (srv_sock *k = s->socks; k; k = k->next)
    if (k->waiting && !k->killed && now - k->t_wait > limit) {
      k->killed = 1;
      shutdown(k->fd, SHUT_RDWR);
      LOG(MFS_LOG_INFO, "closing a connection whose request did not arrive within %g s (--receive-timeout)", limit);
    }
}

static void on_mhd_timer(uv_timer_t *t) {
  srv *s = t->data;
  if (!s->mhd) return;
  MHD_run(s->mhd);
  check_deadlines(s);
  mhd_arm(s);
}

static void on_mhd_poll(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  srv *s = p->data;
  if (!s->mhd) return;
  MHD_run(s->mhd);
  check_deadlines(s);
  mhd_arm(s);
}

static srv_sock *sock_of(struct MHD_Connection *mc) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? ci->socket_context : NULL;
}

void srv_sock_received(struct MHD_Connection *mc) {
  srv_sock *k = sock_of(mc);
  if (k) k->waiting = 0;
}

void srv_sock_linger(struct MHD_Connection *mc) {
  srv_sock *k = sock_of(mc);
  if (k) k->linger = 1;
}

void srv_sock_waiting(struct MHD_Connection *mc) {
  srv_sock *k = sock_of(mc);
  if (k) {
    k->waiting = 1;
    k->t_wait = mfs_now();
  }
}

static void mhd_arm(srv *s) {
  MHD_UNSIGNED_LONG_LONG to;
  if (MHD_get_timeout(s->mhd, &to) == MHD_YES)
    uv_timer_start(&s->mhd_timer, on_mhd_timer, to > 60000 ? 60000 : (uint64_t)to, 0);
  else
    uv_timer_start(&s->mhd_timer, on_mhd_timer, 1000, 0); /* housekeeping */
}

void srv_kick(srv *s) {
  if (s->mhd) uv_timer_start(&s->mhd_timer, on_mhd_timer, 0, 0);
}

/* ---- connections ---- */

void srv_conn_unref(srv_conn *cc) {
  if (--cc->refs > 0) return;
  sb_free(&cc->body);
  free(cc->resp_body);
  free(cc);
}

static void on_watch_closed(uv_handle_t *h) { srv_conn_unref(h->data); }

static void on_watch(uv_poll_t *p, int status, int events) {
  srv_conn *cc = p->data;
  if (status >= 0 && !(events & UV_DISCONNECT)) return;
  uv_poll_stop(p);
  if (cc->gone || cc->closed) return;
  cc->gone = 1;
  LOG(MFS_LOG_DEBUG, "client went away while its request was suspended");
  if (cc->gen) {
    srv_gen_detach(cc->gen);
    cc->gen = NULL;
  }
  srv_conn_resume(cc); /* MHD then ends the connection (handler/reader see gone) */
}

void srv_conn_suspend(srv_conn *cc) {
  if (cc->suspended || cc->closed) return;
  MHD_suspend_connection(cc->mc);
  cc->suspended = 1;
  if (!cc->watching) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(cc->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci && uv_poll_init(&cc->s->loop, &cc->watch, ci->connect_fd) == 0) {
      cc->watch.data = cc;
      cc->watching = 1;
      cc->refs++;
      uv_poll_start(&cc->watch, UV_DISCONNECT, on_watch);
    }
  }
}

void srv_conn_resume(srv_conn *cc) {
  if (!cc->suspended) return;
  cc->suspended = 0;
  MHD_resume_connection(cc->mc);
  srv_kick(cc->s);
}

/* Called from the request-completed callback: the socket is about to close. */
void srv_conn_unwatch(srv_conn *cc);
void srv_conn_unwatch(srv_conn *cc) {
  if (!cc->watching) return;
  cc->watching = 0;
  uv_poll_stop(&cc->watch);
  uv_close((uv_handle_t *)&cc->watch, on_watch_closed);
}

/* ---- scheduler events ---- */

static void on_events(uv_async_t *a) {
  srv *s = a->data;
  if (!s->sched) return;
  for (;;) {
    int n = sched_events_take(s->sched, s->evbuf, s->evcap);
    for (int i = 0; i < n; i++) {
      srv_gen *g = srv_idmap_get(&s->map, s->evbuf[i].req);
      if (!g) continue;
      srv_gen_event(g, &s->evbuf[i]);
      if (!g->dirty) {
        g->dirty = 1;
        g->dnext = s->dirty;
        s->dirty = g;
      }
    }
    if (n < s->evcap) break;
  }
  while (s->dirty) {
    srv_gen *g = s->dirty;
    s->dirty = g->dnext;
    g->dirty = 0;
    srv_gen_flush(g); /* may free g */
  }
  srv_check_drained(s);
}

static void notify(void *u) { uv_async_send(u); }

/* ---- model load (worker) ---- */

static void on_progress(double frac, void *u) {
  srv *s = u;
  if (frac >= s->load_frac_logged + 0.1 || (frac >= 1.0 && s->load_frac_logged < 1.0)) {
    s->load_frac_logged = frac;
    LOG(MFS_LOG_INFO, "loading model: %3.0f%%", frac * 100);
  }
}

static void do_load(uv_work_t *w) {
  srv *s = w->data;
  double t0 = mfs_now();
  char err[768] = "";
  int rc = eng_model_load(&s->model, s->model_dir, on_progress, s, err, sizeof err);
  if (rc) {
    s->load_err = rc;
    snprintf(s->load_msg, sizeof s->load_msg, "cannot load model %s: %s", s->model_dir, err);
    return;
  }
  s->info = eng_model_get_info(s->model);
  rc = tok_new(s->model_dir, &s->tok, err, sizeof err);
  if (rc) {
    s->load_err = rc;
    snprintf(s->load_msg, sizeof s->load_msg, "cannot load the tokenizer: %s", err);
    return;
  }
  if (tok_vocab_size(s->tok) > s->info->vocab) {
    s->load_err = MFS_EFORMAT;
    snprintf(s->load_msg, sizeof s->load_msg, "tokenizer has %d ids but the model's vocab is %d",
             (int)tok_vocab_size(s->tok), s->info->vocab);
    return;
  }
  sched_opts so = {
      .max_num_seqs = s->o.max_num_seqs,
      .max_num_batched_tokens = s->o.max_num_batched_tokens,
      .max_queued = s->o.max_queued_requests,
      .max_model_len = s->o.max_model_len,
      .block_size = s->o.block_size,
      .kv_bytes = s->o.kv_cache_bytes,
      .kv_dtype = s->o.kv_cache_dtype,
      .n_threads = s->o.threads,
      .event_capacity = 0,
      .notify = notify,
      .notify_u = &s->ev_async,
      .kv_event_fn = s->kvev ? kve_publisher_on_event : NULL,
      .kv_event_u = s->kvev,
      .spec_tokens = s->o.spec_tokens,
      .spec_ngram_min = s->o.spec_ngram_min,
      .spec_ngram_max = s->o.spec_ngram_max,
  };
  rc = sched_new(&s->sched, s->model, &so);
  if (rc) {
    s->load_err = rc;
    snprintf(s->load_msg, sizeof s->load_msg,
             "cannot start the scheduler (%s): check --kv-cache-memory, --block-size, --max-num-seqs, "
             "--max-num-batched-tokens, --max-model-len",
             mfs_strerror(rc));
    return;
  }
  if (s->o.spec_tokens)
    LOG(MFS_LOG_INFO, "speculative decoding: n-gram prompt lookup, up to %d draft tokens from the longest matching "
        "%d..%d-gram", s->o.spec_tokens, s->o.spec_ngram_max, s->o.spec_ngram_min);
  LOG(MFS_LOG_INFO, "model, tokenizer and KV pool ready in %.2f s", mfs_now() - t0);
}

static void begin_stop(srv *s);

static void after_load(uv_work_t *w, int status) {
  srv *s = w->data;
  if (status == UV_ECANCELED && !s->load_err) {
    s->load_err = MFS_ESTATE;
    snprintf(s->load_msg, sizeof s->load_msg, "model load cancelled");
  }
  if (s->load_err) {
    LOG(MFS_LOG_ERROR, "%s", s->load_msg);
    begin_stop(s);
    return;
  }
  sched_stats st;
  sched_get_stats(s->sched, &st);
  s->max_model_len = st.max_model_len;
  char msg[256];
  if (srv_tmpl_pick(s, msg, sizeof msg) < 0) {
    LOG(MFS_LOG_ERROR, "%s", msg);
    s->load_err = MFS_EINVAL;
    begin_stop(s);
    return;
  }
  const eng_model_info *in = s->info;
  s->n_eos = 0;
  for (int i = 0; i < in->n_eos && s->n_eos < 8; i++) s->eos[s->n_eos++] = in->eos_ids[i];
  int32_t te = tok_eos(s->tok);
  int have = 0;
  for (int i = 0; i < s->n_eos; i++) have |= s->eos[i] == te;
  if (te >= 0 && !have) s->eos[s->n_eos++] = te;
  if (!s->gvocab && srv_grammar_init(s)) {
    LOG(MFS_LOG_ERROR, "out of memory building the token trie for structured outputs");
    s->load_err = MFS_ENOMEM;
    begin_stop(s);
    return;
  }
  LOG(MFS_LOG_INFO, "model %s: %s, %s attention, d=%d layers=%d heads=%d head_dim=%d vocab=%d, %.1fM params (%s)",
      s->served, in->arch, eng_attn_name(in->attn), in->d, in->n_layers, in->n_heads, in->head_dim, in->vocab,
      in->n_params / 1e6, in->weight_dtype);
  if (strcmp(in->weight_dtype, in->source_dtype))
    LOG(MFS_LOG_INFO, "weights quantized at load: %s from %s (%lld bytes read per decoded token)%s", in->weight_dtype,
        in->source_dtype, (long long)in->weight_bytes_per_token,
        in->n_kept_unquantized ? "; some matrices kept as stored: their rows are not whole blocks of 32" : "");
  LOG(MFS_LOG_INFO,
      "KV pool: %lld blocks of %d tokens = %lld tokens, %lld bytes per token (%s), %.1f MiB; max_model_len %d, "
      "max_num_seqs %d; chat template %s",
      (long long)st.kv.blocks_total, st.block_size, (long long)st.kv.tokens_capacity,
      (long long)st.kv.bytes_per_token, kvc_dtype_name(s->o.kv_cache_dtype),
      (double)st.kv.blocks_total * st.block_size * st.kv.bytes_per_token / (1024.0 * 1024.0), st.max_model_len,
      st.max_num_seqs, msg);
  if (s->state == SRV_LOADING) {
    s->state = SRV_READY;
    LOG(MFS_LOG_INFO, "ready: serving %s on http://%s:%d", s->served, s->host, s->port);
  } else {
    begin_stop(s); /* a signal came during the load */
  }
}

/* ---- shutdown ---- */

static void close_all(srv *s);

static void on_stop_timer(uv_timer_t *t) {
  srv *s = t->data;
  /* wait (bounded) until no connection has a response still to send */
  int busy = 0;
  for (srv_conn *c = s->conns; c; c = c->next) busy |= c->gen != NULL || c->resp_ready || c->streaming;
  if ((busy || s->jobs) && mfs_now() - s->t_drain < 3.0) return;
  uv_timer_stop(t);
  close_all(s);
}

static void begin_stop(srv *s) {
  if (s->state == SRV_STOPPING || s->state == SRV_FAILED) return;
  s->state = s->load_err ? SRV_FAILED : SRV_STOPPING;
  uv_timer_stop(&s->drain_timer);
  if (s->sched) sched_abort_all(s->sched);
  s->t_drain = mfs_now();
  uv_timer_start(&s->stop_timer, on_stop_timer, 20, 20);
}

void srv_check_drained(srv *s) {
  if (s->state == SRV_DRAINING && !s->gens && !s->jobs) {
    LOG(MFS_LOG_INFO, "drained: every request finished");
    begin_stop(s);
  }
}

static void on_drain_timeout(uv_timer_t *t) {
  srv *s = t->data;
  if (s->state != SRV_DRAINING) return;
  LOG(MFS_LOG_WARN, "shutdown timeout (%.1f s): aborting the requests still running", s->o.shutdown_timeout);
  begin_stop(s);
}

static void on_signal(uv_signal_t *h, int signum) {
  srv *s = h->data;
  if (s->state == SRV_LOADING) {
    LOG(MFS_LOG_INFO, "%s during model load: stopping once it ends", signum == SIGINT ? "SIGINT" : "SIGTERM");
    s->state = SRV_DRAINING;
    return;
  }
  if (s->state == SRV_READY) {
    LOG(MFS_LOG_INFO, "%s: draining (no new requests; running ones get %.1f s)", signum == SIGINT ? "SIGINT" : "SIGTERM",
        s->o.shutdown_timeout);
    s->state = SRV_DRAINING;
    sched_drain(s->sched);
    uv_timer_start(&s->drain_timer, on_drain_timeout, (uint64_t)(s->o.shutdown_timeout * 1000), 0);
    srv_check_drained(s);
    return;
  }
  if (s->state == SRV_DRAINING) {
    LOG(MFS_LOG_INFO, "second signal: aborting now");
    begin_stop(s);
  }
}

static void close_all(srv *s) {
  /* MHD_stop_daemon must not see suspended connections */
  for (srv_conn *c = s->conns; c; c = c->next) {
    c->gone = 1;
    srv_conn_resume(c);
  }
  if (s->mhd) {
    MHD_run(s->mhd);
    struct MHD_Daemon *d = s->mhd;
    s->mhd = NULL;
    uv_poll_stop(&s->mhd_poll);
    MHD_stop_daemon(d); /* runs the completed callbacks of what is left */
  }
  if (s->sched) { /* no notify after this */
    sched_free(s->sched);
    s->sched = NULL;
  }
  kve_publisher_free(s->kvev); /* after the pool: sends what is queued, then AllBlocksCleared */
  s->kvev = NULL;
  while (s->gens) srv_gen_free(s->gens);
  while (s->lingers) linger_end(s, s->lingers);
  s->linger_on = 0;
  uv_close((uv_handle_t *)&s->linger_timer, NULL);
  uv_close((uv_handle_t *)&s->mhd_poll, NULL);
  uv_close((uv_handle_t *)&s->mhd_timer, NULL);
  uv_close((uv_handle_t *)&s->drain_timer, NULL);
  uv_close((uv_handle_t *)&s->stop_timer, NULL);
  uv_close((uv_handle_t *)&s->ev_async, NULL);
  uv_close((uv_handle_t *)&s->sig_term, NULL);
  uv_close((uv_handle_t *)&s->sig_int, NULL);
  LOG(MFS_LOG_INFO, "stopped");
}

/* ---- lifecycle ---- */

static void mhd_logger(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
  LOG(MFS_LOG_DEBUG, "microhttpd: %s", msg);
}

/* microhttpd 0.9.75 does not close a connection whose client sends part of
 * a request and closes (it stays in CLOSE_WAIT until the connection
 * timeout), so a crowd of such clients would fill the connection limit. A
 * connection therefore gets a short inactivity timeout until its first
 * request's headers are in (the access handler then lengthens it) and again
 * while it idles between keep-alive requests (srv_http_completed). */
/* Near the connection limit a newcomer would wait in the listen queue
 * behind every idle client until idle timeouts free slots; instead each
 * new connection closes the longest-idle one (waiting for a request, none
 * in progress), as nginx drops keep-alive connections when it runs out.
 * Clients with a request running are never touched. */
static void evict_idle(srv *s) {
  int limit = s->o.max_connections > 0 ? s->o.max_connections : 1000;
  int margin = MFS_MAX(2, limit / 16);
  if (s->n_socks < limit - margin) return;
  srv_sock *old = NULL;
  for (srv_sock *k = s->socks; k; k = k->next)
    if (k->waiting && !k->killed && (!old || k->t_wait < old->t_wait)) old = k;
  if (!old) return;
  old->killed = 1;
  shutdown(old->fd, SHUT_RDWR);
  s->n_evicted++;
  double now = mfs_now();
  if (now - s->t_evict_log > 5) {
    s->t_evict_log = now;
    LOG(MFS_LOG_WARN, "%d connections open, near --max-connections %d: closing the longest-idle ones to admit new "
        "clients (%lld so far)", s->n_socks, limit, (long long)s->n_evicted);
  }
}

/* ---- lingering close ----
 * microhttpd closes a connection right after an answer queued before the
 * request body was read (a 413 from Content-Length; 401, 404, 405 or 503 at
 * the headers), and close() on a socket with unread input makes the kernel
 * send a reset: a client still sending its body then gets EPIPE or
 * ECONNRESET, and the reset can destroy the answer in its receive buffer
 * before it reads it (a client that sends its whole body before reading,
 * like most HTTP libraries, never sees the 413). MHD has already sent the
 * answer and shut down the write side (FIN) when it reports the close
 * (MHD_CONNECTION_NOTIFY_CLOSED comes before its close()), so the socket is
 * kept open through a dup()ed descriptor and its input read and thrown away
 * until the client closes, as nginx's lingering_close does, within
 * SRV_LINGER_TIME / SRV_LINGER_IDLE / SRV_LINGER_BYTES. Sockets closed with
 * input left unread for another reason (pipelined bytes after an error
 * answer) linger the same way. */
static void on_linger_closed(uv_handle_t *h) {
  srv_linger *l = h->data;
  close(l->fd);
  free(l);
}

static void linger_end(srv *s, srv_linger *l) {
  if (l->prev) l->prev->next = l->next;
  else s->lingers = l->next;
  if (l->next) l->next->prev = l->prev;
  if (--s->n_lingers == 0) uv_timer_stop(&s->linger_timer);
  uv_poll_stop(&l->poll);
  uv_close((uv_handle_t *)&l->poll, on_linger_closed);
}

static void on_linger_read(uv_poll_t *p, int status, int events) {
  (void)events;
  srv_linger *l = p->data;
  srv *s = l->s;
  static char sink[1 << 16]; /* loop thread only */
  for (;;) {
    ssize_t n = status < 0 ? -1 : recv(l->fd, sink, sizeof sink, 0);
    if (n > 0) {
      l->bytes += (uint64_t)n;
      l->t_last = mfs_now();
      if (l->bytes <= SRV_LINGER_BYTES) continue;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    }
    break; /* the client closed (0), an error, or the byte budget is spent */
  }
  linger_end(s, l);
}

static void on_linger_timer(uv_timer_t *t) {
  srv *s = t->data;
  double now = mfs_now();
  for (srv_linger *l = s->lingers, *next; l; l = next) {
    next = l->next;
    if (now - l->t_start > SRV_LINGER_TIME || now - l->t_last > SRV_LINGER_IDLE) linger_end(s, l);
  }
}

/* From MHD_CONNECTION_NOTIFY_CLOSED: k's socket is about to be closed. */
static void linger_maybe(srv *s, const srv_sock *k) {
  int unread = 0;
  if (!s->linger_on || !s->mhd || k->killed || s->n_lingers >= SRV_LINGER_MAX) return;
  if (!k->linger && (ioctl(k->fd, FIONREAD, &unread) != 0 || unread <= 0)) return;
  srv_linger *l = calloc(1, sizeof *l);
  if (!l) return;
  l->fd = fcntl(k->fd, F_DUPFD_CLOEXEC, 0);
  if (l->fd < 0 || fcntl(l->fd, F_SETFL, fcntl(l->fd, F_GETFL) | O_NONBLOCK) != 0 ||
      uv_poll_init(&s->loop, &l->poll, l->fd) != 0) {
    if (l->fd >= 0) close(l->fd);
    free(l);
    return;
  }
  l->poll.data = l;
  l->s = s;
  l->t_start = l->t_last = mfs_now();
  l->next = s->lingers;
  if (s->lingers) s->lingers->prev = l;
  s->lingers = l;
  if (s->n_lingers++ == 0) uv_timer_start(&s->linger_timer, on_linger_timer, 1000, 1000);
  uv_poll_start(&l->poll, UV_READABLE | UV_DISCONNECT, on_linger_read);
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code) {
  srv *s = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    evict_idle(s); /* before this one joins the list: never itself */
    s->n_socks++;
    MHD_set_connection_option(mc, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)SRV_IDLE_TIMEOUT);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    srv_sock *k = ci ? calloc(1, sizeof *k) : NULL; /* without it only the deadline is lost */
    if (k) {
      k->fd = ci->connect_fd;
      k->waiting = 1;
      k->t_wait = mfs_now();
      k->next = s->socks;
      if (s->socks) s->socks->prev = k;
      s->socks = k;
    }
    *socket_ctx = k;
  } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    s->n_socks--;
    srv_sock *k = *socket_ctx;
    if (!k) return;
    linger_maybe(s, k);
    if (k->prev) k->prev->next = k->next;
    else s->socks = k->next;
    if (k->next) k->next->prev = k->prev;
    free(k);
    *socket_ctx = NULL;
  }
}

static char *dupstr(const char *x) { return x ? strdup(x) : NULL; }

int srv_new(srv **out, const srv_opts *o, char *err, size_t errlen) {
  *out = NULL;
  if (!o->model_dir || !*o->model_dir) {
    snprintf(err, errlen, "no model directory");
    return MFS_EINVAL;
  }
  if (o->port < 0 || o->port > 65535) {
    snprintf(err, errlen, "--port %d is not in 0..65535", o->port);
    return MFS_EINVAL;
  }
  if (o->max_body_bytes < 64) {
    snprintf(err, errlen, "--max-body-bytes must be at least 64");
    return MFS_EINVAL;
  }
  if (o->shutdown_timeout < 0) {
    snprintf(err, errlen, "--shutdown-timeout must be >= 0");
    return MFS_EINVAL;
  }
  const char *tn = o->chat_template && *o->chat_template ? o->chat_template : "auto";
  if (strcmp(tn, "auto") && strcmp(tn, "chatml") && strcmp(tn, "llama3") && strcmp(tn, "mistral") &&
      strcmp(tn, "plain")) {
    snprintf(err, errlen, "--chat-template '%s': expected auto, chatml, llama3, mistral or plain", tn);
    return MFS_EINVAL;
  }
  union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } addr;
  memset(&addr, 0, sizeof addr);
  const char *host = o->host && *o->host ? o->host : "127.0.0.1";
  int v6 = 0;
  if (inet_pton(AF_INET, host, &addr.v4.sin_addr) == 1) {
    addr.v4.sin_family = AF_INET;
    addr.v4.sin_port = htons((uint16_t)o->port);
  } else if (inet_pton(AF_INET6, host, &addr.v6.sin6_addr) == 1) {
    addr.v6.sin6_family = AF_INET6;
    addr.v6.sin6_port = htons((uint16_t)o->port);
    v6 = 1;
  } else {
    snprintf(err, errlen, "--host '%s' is not a numeric IPv4 or IPv6 address", host);
    return MFS_EINVAL;
  }
  srv *s = calloc(1, sizeof *s);
  if (!s) return MFS_ENOMEM;
  if (uv_loop_init(&s->loop)) { /* from here on srv_free undoes everything */
    snprintf(err, errlen, "cannot create the event loop");
    free(s);
    return MFS_EIO;
  }
  s->o = *o;
  s->host = dupstr(host);
  s->model_dir = dupstr(o->model_dir);
  s->api_key = o->api_key && *o->api_key ? dupstr(o->api_key) : NULL;
  s->chat_template_name = dupstr(tn);
  s->o.host = s->host;
  s->o.model_dir = s->model_dir;
  s->o.api_key = s->api_key;
  s->o.chat_template = s->chat_template_name;
  if (o->served_model_name && *o->served_model_name) {
    snprintf(s->served, sizeof s->served, "%s", o->served_model_name);
  } else {
    char rp[PATH_MAX];
    const char *p = realpath(o->model_dir, rp) ? rp : o->model_dir;
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && p[b - 1] != '/') b--;
    snprintf(s->served, sizeof s->served, "%.*s", (int)(n - b), p + b);
  }
  s->evcap = 1024;
  s->evbuf = calloc((size_t)s->evcap, sizeof *s->evbuf);
  if (!s->host || !s->model_dir || !s->chat_template_name || !s->evbuf || (o->api_key && *o->api_key && !s->api_key)) {
    srv_free(s);
    return MFS_ENOMEM;
  }
  s->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0),
                            (uint16_t)o->port, NULL, NULL, srv_http_access, s, MHD_OPTION_EXTERNAL_LOGGER,
                            mhd_logger, s, MHD_OPTION_SOCK_ADDR, &addr.sa, MHD_OPTION_NOTIFY_COMPLETED,
                            srv_http_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)SRV_REQUEST_TIMEOUT,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)(o->max_connections > 0 ? o->max_connections : 1000),
                            MHD_OPTION_END);
  if (!s->mhd) {
    snprintf(err, errlen, "cannot listen on %s:%d: %s", host, o->port, strerror(errno ? errno : EADDRINUSE));
    srv_free(s);
    return MFS_EIO;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
  s->port = di ? di->port : o->port;
  if (o->kv_events_endpoint && *o->kv_events_endpoint) {
    kve_opts ko = {o->kv_events_endpoint, o->kv_events_topic, o->block_size, o->kv_events_queue, 0,
                   o->kv_events_replay_endpoint, 0};
    int rc = kve_publisher_new(&s->kvev, &ko, err, errlen);
    if (rc) {
      srv_free(s);
      return rc;
    }
  }
  srv_metrics_init(s);
  *out = s;
  return 0;
}

int srv_port(const srv *s) { return s->port; }

int srv_run(srv *s) {
  signal(SIGPIPE, SIG_IGN);
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
  if (!di) {
    LOG(MFS_LOG_ERROR, "microhttpd gave no epoll descriptor");
    return MFS_EIO;
  }
  uv_poll_init(&s->loop, &s->mhd_poll, di->epoll_fd);
  s->mhd_poll.data = s;
  uv_poll_start(&s->mhd_poll, UV_READABLE, on_mhd_poll);
  uv_timer_init(&s->loop, &s->mhd_timer);
  uv_timer_init(&s->loop, &s->drain_timer);
  uv_timer_init(&s->loop, &s->stop_timer);
  uv_timer_init(&s->loop, &s->linger_timer);
  s->linger_on = 1;
  s->mhd_timer.data = s->drain_timer.data = s->stop_timer.data = s->linger_timer.data = s;
  uv_async_init(&s->loop, &s->ev_async, on_events);
  s->ev_async.data = s;
  uv_signal_init(&s->loop, &s->sig_term);
  uv_signal_init(&s->loop, &s->sig_int);
  s->sig_term.data = s->sig_int.data = s;
  uv_signal_start(&s->sig_term, on_signal, SIGTERM);
  uv_signal_start(&s->sig_int, on_signal, SIGINT);
  LOG(MFS_LOG_INFO, "listening on http://%s%s%s:%d (loading %s)", strchr(s->host, ':') ? "[" : "", s->host,
      strchr(s->host, ':') ? "]" : "", s->port, s->model_dir);
  s->load_work.data = s;
  uv_queue_work(&s->loop, &s->load_work, do_load, after_load);
  mhd_arm(s);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  return s->load_err;
}

void srv_free(srv *s) {
  if (!s) return;
  if (s->mhd) { /* srv_run never ran (or never got going) */
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
  }
  if (s->sched) sched_free(s->sched);
  kve_publisher_free(s->kvev);
  while (s->gens) srv_gen_free(s->gens);
  uv_run(&s->loop, UV_RUN_NOWAIT);
  uv_loop_close(&s->loop);
  srv_grammar_deinit(s);
  tok_free(s->tok);
  eng_model_free(s->model);
  srv_idmap_free(&s->map);
  free(s->evbuf);
  free(s->host);
  free(s->model_dir);
  free(s->api_key);
  free(s->chat_template_name);
  free(s);
}
