/* srv_http.c: libmicrohttpd's callbacks: routing, authentication, body
 * limits, the error table (the one place HTTP statuses are decided), quick
 * GET endpoints, and the hand-off of POST bodies to a worker job.
 *
 * The access handler's calls for one request: the first (headers only)
 * creates the srv_conn and may answer at once (404, 405, 401, 413 from
 * Content-Length, 503); then body pieces; then a call with no data, where a
 * quick route answers, or a POST route suspends the connection and queues a
 * job. After the loop resumes the connection MHD calls the handler again,
 * which queues the response the job (or the generation) left in the conn. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srv_int.h"

#define LOG(lvl, ...) mfs_log(lvl, "server", __VA_ARGS__)

/* ---- the error table ---- */
static const struct {
  int status;
  const char *type, *code;
} err_tab[SRV_E_N] = {
    [SRV_E_NONE] = {200, "", NULL},
    [SRV_E_INVALID] = {400, "invalid_request_error", NULL},
    [SRV_E_UNSUPPORTED] = {400, "invalid_request_error", "unsupported_parameter"},
    [SRV_E_CONTEXT] = {400, "invalid_request_error", "context_length_exceeded"},
    [SRV_E_AUTH] = {401, "invalid_request_error", "invalid_api_key"},
    [SRV_E_NOT_FOUND] = {404, "invalid_request_error", "not_found"},
    [SRV_E_MODEL_NOT_FOUND] = {404, "invalid_request_error", "model_not_found"},
    [SRV_E_METHOD] = {405, "invalid_request_error", "method_not_allowed"},
    [SRV_E_TOO_LARGE] = {413, "invalid_request_error", "request_too_large"},
    [SRV_E_QUEUE_FULL] = {429, "rate_limit_error", "rate_limit_exceeded"},
    [SRV_E_INTERNAL] = {500, "server_error", "internal_error"},
    [SRV_E_UNAVAILABLE] = {503, "server_error", "service_unavailable"},
};

void srv_error_set(srv_error *e, srv_err kind, const char *param, const char *fmt, ...) {
  e->kind = kind;
  snprintf(e->param, sizeof e->param, "%s", param ? param : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
}

int srv_error_status(srv_err kind) { return err_tab[kind].status; }

void srv_error_json(sb *out, const srv_error *e) {
  sb_puts(out, "{\"error\":{\"message\":");
  sb_json_str(out, e->msg, strlen(e->msg));
  sb_puts(out, ",\"type\":");
  sb_json_str(out, err_tab[e->kind].type, strlen(err_tab[e->kind].type));
  sb_puts(out, ",\"param\":");
  if (e->param[0]) sb_json_str(out, e->param, strlen(e->param));
  else sb_puts(out, "null");
  sb_puts(out, ",\"code\":");
  if (err_tab[e->kind].code) sb_json_str(out, err_tab[e->kind].code, strlen(err_tab[e->kind].code));
  else sb_puts(out, "null");
  sb_printf(out, "}}");
}

/* ---- responses ---- */

static enum MHD_Result queue_buf(srv_conn *cc, int status, const char *ctype, const void *body, size_t len,
                                 int retry_after, const char *allow) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  if (retry_after > 0) {
    char v[16];
    snprintf(v, sizeof v, "%d", retry_after);
    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, v);
  }
  if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
  enum MHD_Result ret = MHD_queue_response(cc->mc, (unsigned)status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result queue_error(srv_conn *cc, const srv_error *e, const char *allow) {
  sb b = {0};
  srv_error_json(&b, e);
  if (e->kind >= SRV_E_INTERNAL || e->kind == SRV_E_QUEUE_FULL)
    LOG(MFS_LOG_WARN, "%d: %s", err_tab[e->kind].status, e->msg);
  else
    LOG(MFS_LOG_DEBUG, "%d: %s", err_tab[e->kind].status, e->msg);
  enum MHD_Result r = queue_buf(cc, err_tab[e->kind].status, "application/json", b.p ? b.p : "", b.len,
                                e->kind == SRV_E_QUEUE_FULL ? 1 : 0, allow);
  sb_free(&b);
  return r;
}

void srv_conn_set_error(srv_conn *cc, const srv_error *e) {
  sb b = {0};
  srv_error_json(&b, e);
  free(cc->resp_body);
  cc->resp_len = b.len;
  cc->resp_body = sb_take(&b);
  cc->resp_status = err_tab[e->kind].status;
  cc->resp_ctype = "application/json";
  cc->retry_after = e->kind == SRV_E_QUEUE_FULL ? 1 : 0;
  cc->resp_ready = 1;
  if (e->kind >= SRV_E_INTERNAL || e->kind == SRV_E_QUEUE_FULL)
    LOG(MFS_LOG_WARN, "%d: %s", cc->resp_status, e->msg);
  else
    LOG(MFS_LOG_DEBUG, "%d: %s", cc->resp_status, e->msg);
}

void srv_conn_set_json(srv_conn *cc, int status, sb *body) {
  free(cc->resp_body);
  cc->resp_len = body->len;
  cc->resp_body = sb_take(body);
  cc->resp_status = status;
  cc->resp_ctype = "application/json";
  cc->retry_after = 0;
  cc->resp_ready = 1;
}

/* ---- routes ---- */

static const struct {
  const char *path;
  srv_route route;
  int post; /* 1: POST, 0: GET */
  int auth; /* under /v1/: needs the API key */
} routes[] = {
    {"/v1/completions", SRV_R_COMPLETIONS, 1, 1}, {"/v1/chat/completions", SRV_R_CHAT, 1, 1},
    {"/tokenize", SRV_R_TOKENIZE, 1, 0},           {"/detokenize", SRV_R_DETOKENIZE, 1, 0},
    {"/v1/models", SRV_R_MODELS, 0, 1},            {"/health", SRV_R_HEALTH, 0, 0},
    {"/version", SRV_R_VERSION, 0, 0},             {"/metrics", SRV_R_METRICS, 0, 0},
    {"/v1/cache/stats", SRV_R_CACHE_STATS, 0, 1},  {"/", SRV_R_UI, 0, 0},
};

/* Constant-time: the time depends only on the lengths. */
static int key_ok(const srv *s, struct MHD_Connection *mc) {
  const char *h = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
  if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
  h += 7;
  while (*h == ' ') h++;
  size_t a = strlen(h), b = strlen(s->api_key);
  unsigned char diff = a != b;
  for (size_t i = 0; i < b; i++) diff |= (unsigned char)(h[i < a ? i : 0] ^ s->api_key[i]);
  return diff == 0;
}

static srv_route match(srv *s, srv_conn *cc, const char *url, const char *method, srv_error *e,
                       const char **allow) {
  int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), is_post = !strcmp(method, "POST");
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    int hit = !strcmp(url, routes[i].path);
    if (!hit && routes[i].route == SRV_R_MODELS && !strncmp(url, "/v1/models/", 11) && url[11]) hit = 2;
    if (!hit) continue;
    if (routes[i].auth && s->api_key && !key_ok(s, cc->mc)) {
      srv_error_set(e, SRV_E_AUTH, NULL, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.");
      return SRV_R_NONE;
    }
    if (routes[i].post ? !is_post : !is_get) {
      srv_error_set(e, SRV_E_METHOD, NULL, "Method %s is not allowed on %s; use %s.", method, url,
                    routes[i].post ? "POST" : "GET");
      *allow = routes[i].post ? "POST" : "GET, HEAD";
      return SRV_R_NONE;
    }
    cc->post = routes[i].post;
    return hit == 2 ? SRV_R_MODEL_ONE : routes[i].route;
  }
  if (!strncmp(url, "/v1/", 4) && s->api_key && !key_ok(s, cc->mc)) {
    srv_error_set(e, SRV_E_AUTH, NULL, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.");
    return SRV_R_NONE;
  }
  srv_error_set(e, SRV_E_NOT_FOUND, NULL, "Invalid URL (%s %s)", method, url);
  return SRV_R_NONE;
}

static void model_json(srv *s, sb *b) {
  sb_puts(b, "{\"id\":");
  sb_json_str(b, s->served, strlen(s->served));
  sb_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"mfaserve\",\"root\":", (long long)time(NULL));
  sb_json_str(b, s->model_dir, strlen(s->model_dir));
  sb_printf(b, ",\"parent\":null,\"max_model_len\":%d,\"permission\":[]}", s->max_model_len);
}

static enum MHD_Result answer_get(srv *s, srv_conn *cc, const char *url) {
  sb b = {0};
  srv_error e = {0};
  enum MHD_Result r;
  switch (cc->route) {
  case SRV_R_HEALTH:
    if (s->state == SRV_READY) return queue_buf(cc, 200, "text/plain", "", 0, 0, NULL);
    srv_error_set(&e, SRV_E_UNAVAILABLE, NULL, s->state == SRV_LOADING ? "The model is loading." : "The server is shutting down.");
    return queue_error(cc, &e, NULL);
  case SRV_R_VERSION:
    sb_printf(&b, "{\"version\":\"" SRV_VERSION "\",\"isa\":\"%s\"}", eng_isa_name());
    break;
  case SRV_R_METRICS:
    srv_metrics_text(s, &b);
    if (b.oom) break; /* answered as an error below */
    r = queue_buf(cc, 200, "text/plain; version=0.0.4; charset=utf-8", b.p ? b.p : "", b.len, 0, NULL);
    sb_free(&b);
    return r;
  case SRV_R_UI:
    return queue_buf(cc, 200, "text/html; charset=utf-8", srv_ui_index, srv_ui_index_len, 0, NULL);
  case SRV_R_MODELS:
  case SRV_R_MODEL_ONE:
  case SRV_R_CACHE_STATS:
    if (!s->sched || s->state == SRV_LOADING) {
      srv_error_set(&e, SRV_E_UNAVAILABLE, NULL, "The model is loading.");
      return queue_error(cc, &e, NULL);
    }
    if (cc->route == SRV_R_CACHE_STATS) {
      const char *hv = MHD_lookup_connection_value(cc->mc, MHD_GET_ARGUMENT_KIND, "hashes");
      srv_cache_stats_json(s, &b, hv && strcmp(hv, "0") && strcmp(hv, "false"));
    } else if (cc->route == SRV_R_MODELS) {
      sb_puts(&b, "{\"object\":\"list\",\"data\":[");
      model_json(s, &b);
      sb_puts(&b, "]}");
    } else {
      if (strcmp(url + 11, s->served)) {
        srv_error_set(&e, SRV_E_MODEL_NOT_FOUND, "model", "The model `%s` does not exist.", url + 11);
        return queue_error(cc, &e, NULL);
      }
      model_json(s, &b);
    }
    break;
  default:
    srv_error_set(&e, SRV_E_INTERNAL, NULL, "unrouted request");
    return queue_error(cc, &e, NULL);
  }
  if (b.oom) {
    sb_free(&b);
    srv_error_set(&e, SRV_E_INTERNAL, NULL, "out of memory");
    return queue_error(cc, &e, NULL);
  }
  r = queue_buf(cc, 200, "application/json", b.p ? b.p : "", b.len, 0, NULL);
  sb_free(&b);
  return r;
}

/* ---- POST jobs ---- */

static void job_work(uv_work_t *w) {
  srv_job *j = w->data;
  j->t0 = mfs_now();
  srv_job_run(j);
  j->t1 = mfs_now();
}

static void job_after(uv_work_t *w, int status) {
  srv_job *j = w->data;
  srv *s = j->s;
  srv_conn *cc = j->cc;
  s->jobs--;
  if (j->t1 - j->t0 > 0.05)
    LOG(MFS_LOG_DEBUG, "request preparation (parse + tokenize) took %.1f ms on a worker", (j->t1 - j->t0) * 1e3);
  if (status == UV_ECANCELED) srv_error_set(&j->err, SRV_E_UNAVAILABLE, NULL, "The server is shutting down.");
  if (cc->closed || cc->gone) {
    if (j->gen) srv_gen_free(j->gen);
  } else if (j->err.kind) {
    if (j->gen) srv_gen_free(j->gen);
    srv_conn_set_error(cc, &j->err);
  } else if (j->gen) {
    srv_error e = {0};
    if (!srv_accepting(s)) {
      srv_error_set(&e, SRV_E_UNAVAILABLE, NULL, "The server is shutting down.");
      srv_gen_free(j->gen);
      srv_conn_set_error(cc, &e);
    } else if ((j->gen->t_http = cc->t_arrival, j->gen->t_tokenized = j->t1, srv_gen_submit(j->gen, &e))) {
      srv_gen_free(j->gen);
      srv_conn_set_error(cc, &e);
    } else {
      cc->gen = j->gen;
      j->gen->cc = cc;
      if (j->gen->stream) srv_conn_resume(cc); /* queue the SSE response */
      srv_gen_flush(j->gen);                   /* it may be done already (max_tokens 0) */
    }
  } else {
    srv_conn_set_json(cc, 200, &j->resp);
  }
  if (cc->resp_ready) srv_conn_resume(cc);
  free(j->body);
  sb_free(&j->resp);
  free(j);
  srv_conn_unref(cc);
  srv_check_drained(s);
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  srv_conn *cc = cls;
  if (cc->gone || !cc->gen) return MHD_CONTENT_READER_END_WITH_ERROR;
  ssize_t n = srv_gen_read(cc->gen, buf, max);
  if (n == 0) srv_conn_suspend(cc);
  return n;
}

static void sse_free(void *cls) { srv_conn_unref(cls); }

static enum MHD_Result queue_sse(srv_conn *cc) {
  struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_reader, cc, sse_free);
  if (!r) return MHD_NO;
  cc->refs++;
  cc->streaming = 1;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
  MHD_add_response_header(r, "X-Accel-Buffering", "no");
  enum MHD_Result ret = MHD_queue_response(cc->mc, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return ret;
}

enum MHD_Result srv_http_access(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                const char *version, const char *upload, size_t *upload_size, void **con_cls) {
  (void)version;
  srv *s = cls;
  srv_conn *cc = *con_cls;
  if (!cc) { /* headers only */
    cc = calloc(1, sizeof *cc);
    if (!cc) return MHD_NO;
    cc->s = s;
    cc->mc = mc;
    cc->refs = 1;
    cc->t_arrival = mfs_now();
    cc->next = s->conns;
    if (s->conns) s->conns->prev = cc;
    s->conns = cc;
    s->n_conns++;
    s->http_requests++;
    *con_cls = cc;
    MHD_set_connection_option(mc, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)SRV_REQUEST_TIMEOUT);
    srv_error e = {0};
    const char *allow = NULL;
    cc->route = match(s, cc, url, method, &e, &allow);
    if (!e.kind && cc->post) {
      const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      if (cl && strtoull(cl, NULL, 10) > s->o.max_body_bytes)
        srv_error_set(&e, SRV_E_TOO_LARGE, NULL, "Request body of %s bytes exceeds --max-body-bytes (%llu).", cl,
                      (unsigned long long)s->o.max_body_bytes);
    }
    if (!e.kind && cc->post && !srv_accepting(s))
      srv_error_set(&e, SRV_E_UNAVAILABLE, NULL,
                    s->state == SRV_LOADING ? "The model is loading; retry shortly." : "The server is shutting down.");
    if (e.kind) {
      cc->started = 1;
      srv_sock_received(mc);
      const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      if ((cl && strtoull(cl, NULL, 10) > 0) ||
          MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        srv_sock_linger(mc); /* MHD closes without reading the body: read it out first */
      return queue_error(cc, &e, allow);
    }
    return MHD_YES;
  }
  if (cc->gone) return MHD_NO;
  if (*upload_size) {
    if (!cc->too_large) {
      if (cc->body.len + *upload_size > s->o.max_body_bytes) {
        cc->too_large = 1;
        sb_free(&cc->body);
      } else {
        sb_put(&cc->body, upload, *upload_size);
      }
    }
    *upload_size = 0;
    return MHD_YES;
  }
  if (cc->resp_ready) {
    cc->resp_ready = 0;
    return queue_buf(cc, cc->resp_status, cc->resp_ctype, cc->resp_body ? cc->resp_body : "", cc->resp_len,
                     cc->retry_after, NULL);
  }
  if (cc->gen && cc->gen->stream && !cc->streaming) return queue_sse(cc);
  if (cc->started) { /* resumed with nothing to say yet */
    srv_conn_suspend(cc);
    return MHD_YES;
  }
  cc->started = 1;
  srv_sock_received(mc);
  srv_error e = {0};
  if (cc->too_large) {
    srv_error_set(&e, SRV_E_TOO_LARGE, NULL, "Request body exceeds --max-body-bytes (%llu).",
                  (unsigned long long)s->o.max_body_bytes);
    return queue_error(cc, &e, NULL);
  }
  if (!cc->post) return answer_get(s, cc, url);
  if (cc->body.oom) {
    srv_error_set(&e, SRV_E_INTERNAL, NULL, "out of memory");
    return queue_error(cc, &e, NULL);
  }
  if (!srv_accepting(s)) {
    srv_error_set(&e, SRV_E_UNAVAILABLE, NULL, "The server is shutting down.");
    return queue_error(cc, &e, NULL);
  }
  srv_job *j = calloc(1, sizeof *j);
  if (!j) return MHD_NO;
  j->s = s;
  j->cc = cc;
  j->route = cc->route;
  j->len = cc->body.len;
  j->body = sb_take(&cc->body);
  j->w.data = j;
  cc->refs++;
  s->jobs++;
  srv_conn_suspend(cc);
  uv_queue_work(&s->loop, &j->w, job_work, job_after);
  return MHD_YES;
}

void srv_conn_unwatch(srv_conn *cc);

void srv_http_completed(void *cls, struct MHD_Connection *mc, void **con_cls, enum MHD_RequestTerminationCode toe) {
  srv *s = cls;
  srv_conn *cc = *con_cls;
  if (!cc) return;
  *con_cls = NULL;
  cc->closed = 1;
  if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) { /* the connection may idle for the next request */
    MHD_set_connection_option(mc, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)SRV_IDLE_TIMEOUT);
    srv_sock_waiting(mc);
  }
  if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && cc->gen && !cc->gen->done)
    LOG(MFS_LOG_INFO, "client connection ended before its response did: cancelling %s", cc->gen->id);
  if (cc->gen) {
    srv_gen *g = cc->gen;
    cc->gen = NULL;
    srv_gen_detach(g);
  }
  if (cc->prev) cc->prev->next = cc->next;
  else s->conns = cc->next;
  if (cc->next) cc->next->prev = cc->prev;
  s->n_conns--;
  srv_conn_unwatch(cc);
  srv_conn_unref(cc);
  srv_check_drained(s);
}
