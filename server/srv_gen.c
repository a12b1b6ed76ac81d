/* srv_gen.c: one completion / chat request on the loop thread, from submit
 * to the last byte: token events become text through tok_stream (UTF-8
 * safe), stop strings are cut from the text (that choice is cancelled in
 * the scheduler at once; usage counts the tokens received up to the stop),
 * and the result is written as OpenAI JSON or as
 * Server-Sent Events.
 *
 * Streams hold back the tail of a choice's text that could still become a
 * stop string, so a stop string is never sent. Chunks are written once per
 * drain of the scheduler's events (several tokens may share one chunk), and
 * new tokens get a chunk even when their text is empty or held back (as
 * vLLM's streams do), so a client sees when each token came.
 *
 * The first token's time is split into phases for /metrics: HTTP arrival
 * -> tokenized (worker) -> submitted (loop) -> scheduled -> first token
 * sampled -> its chunk handed to MHD (srv_gen_read). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv_int.h"

#define LOG(lvl, ...) mfs_log(lvl, "server", __VA_ARGS__)

void srv_gen_link(srv_gen *g) {
  srv *s = g->s;
  g->linked = 1;
  g->prev = NULL;
  g->next = s->gens;
  if (s->gens) s->gens->prev = g;
  s->gens = g;
}

void srv_gen_free(srv_gen *g) {
  if (!g) return;
  gr_index_unref(g->sp.constraint);
  g->sp.constraint = NULL;
  srv *s = g->s;
  if (g->linked) {
    if (g->prev) g->prev->next = g->next;
    else s->gens = g->next;
    if (g->next) g->next->prev = g->prev;
    g->linked = 0;
  }
  if (g->cc && g->cc->gen == g) g->cc->gen = NULL;
  for (int i = 0; i < g->n_prompts; i++) {
    srv_prompt *p = &g->prompts[i];
    if (p->live) {
      srv_idmap_del(&s->map, p->req);
      if (s->sched) sched_request_cancel(s->sched, p->req);
    }
    free(p->ids);
    free(p->text);
    free(p->plp);
  }
  if (g->choices)
    for (int i = 0; i < g->n_prompts * g->n; i++) {
      tok_stream_free(g->choices[i].ts);
      sb_free(&g->choices[i].text);
      free(g->choices[i].recs);
    }
  for (int i = 0; i < g->n_stop; i++) free(g->stop[i]);
  free(g->prompts);
  free(g->choices);
  sb_free(&g->out);
  free(g);
}

static void finish_now(srv_gen *g) {
  g->done = 1;
  for (int i = 0; i < g->n_prompts * g->n; i++) {
    srv_choice *c = &g->choices[i];
    if (!c->finished) {
      c->finished = 1;
      c->finish = "length";
    }
  }
}

int srv_gen_submit(srv_gen *g, srv_error *e) {
  srv *s = g->s;
  g->t_submit = mfs_now();
  if (g->n > s->o.max_num_seqs) { /* every choice runs as its own sequence */
    srv_error_set(e, SRV_E_INVALID, "n", "'n' is %d but this server runs at most %d sequences at once (--max-num-seqs).",
                  g->n, s->o.max_num_seqs);
    return -1;
  }
  int want = g->sp.max_tokens > 0 || g->sp.prompt_logprobs >= 0;
  for (int i = 0; want && i < g->n_prompts; i++) {
    srv_prompt *p = &g->prompts[i];
    sched_request_params sp = g->sp;
    sp.prompt = p->ids;
    sp.n_prompt = p->n_ids;
    uint64_t id = 0;
    int rc = sched_request_submit(s->sched, &sp, &id);
    if (rc == 0 && srv_idmap_put(&s->map, id, g)) {
      sched_request_cancel(s->sched, id);
      rc = MFS_ENOMEM;
    }
    if (rc) {
      for (int k = 0; k < i; k++) {
        srv_idmap_del(&s->map, g->prompts[k].req);
        sched_request_cancel(s->sched, g->prompts[k].req);
        g->prompts[k].live = 0;
      }
      g->n_live = 0;
      if (rc == SCHED_QUEUE_FULL)
        srv_error_set(e, SRV_E_QUEUE_FULL, NULL, "Too many requests are waiting (--max-queued-requests %d); retry later.",
                      s->o.max_queued_requests);
      else if (rc == SCHED_DRAINING)
        srv_error_set(e, SRV_E_UNAVAILABLE, NULL, "The server is shutting down.");
      else if (rc == MFS_EINVAL || rc == MFS_ERANGE)
        srv_error_set(e, SRV_E_INVALID, NULL, "The scheduler rejected the request: %s.", mfs_strerror(rc));
      else
        srv_error_set(e, SRV_E_INTERNAL, NULL, "Cannot queue the request: %s.", mfs_strerror(rc));
      return -1;
    }
    p->req = id;
    p->live = 1;
    g->n_live++;
  }
  srv_gen_link(g);
  if (g->t_http > 0 && g->t_tokenized >= g->t_http) {
    srv_hist_observe(&s->h_tokenize, g->t_tokenized - g->t_http);
    srv_hist_observe(&s->h_submit_wait, g->t_submit - g->t_tokenized);
  }
  if (!want) finish_now(g);
  return 0;
}

/* ---- events ---- */

static int hidden_token(const srv_gen *g, int32_t id) {
  for (int i = 0; i < g->n_stop_tok; i++)
    if (g->stop_tok[i] == id) return 1;
  return 0;
}

/* Choice `choice` of prompt pi stopped on a string: the scheduler ends that
 * choice now (the others go on); the finish reason stays "stop". */
static void stop_choice(srv_gen *g, int pi, int choice) {
  srv_prompt *p = &g->prompts[pi];
  if (p->live) sched_request_cancel_choice(g->s->sched, p->req, choice);
}

static void append_text(srv_gen *g, srv_choice *c, const char *s, size_t n) {
  size_t old = c->text.len;
  sb_put(&c->text, s, n);
  if (!g->n_stop || c->text.oom) return;
  size_t from = old + 1 > g->max_stop_len ? old + 1 - g->max_stop_len : 0;
  size_t best = (size_t)-1, blen = 0;
  for (int i = 0; i < g->n_stop; i++) {
    const char *hit = memmem(c->text.p + from, c->text.len - from, g->stop[i], g->stop_len[i]);
    if (hit && (size_t)(hit - c->text.p) < best) {
      best = (size_t)(hit - c->text.p);
      blen = g->stop_len[i];
    }
  }
  if (best == (size_t)-1) return;
  c->text.len = best + (g->include_stop ? blen : 0);
  c->text.p[c->text.len] = 0;
  c->finished = 1;
  c->finish = "stop";
  c->stop_matched = 1;
}

static void push_rec(srv_choice *c, const sched_event *ev) {
  if (c->n_recs == c->cap_recs) {
    int cap = c->cap_recs ? c->cap_recs * 2 : 16;
    srv_tokrec *r = realloc(c->recs, (size_t)cap * sizeof *r);
    if (!r) return;
    c->recs = r;
    c->cap_recs = cap;
  }
  srv_tokrec *r = &c->recs[c->n_recs++];
  r->id = ev->token;
  r->lp = ev->logprob;
  r->n_top = ev->n_top;
  memcpy(r->top_ids, ev->top_ids, sizeof r->top_ids);
  memcpy(r->top_lps, ev->top_logprobs, sizeof r->top_lps);
}

void srv_gen_event(srv_gen *g, const sched_event *ev) {
  srv *s = g->s;
  int pi = 0;
  while (pi < g->n_prompts && g->prompts[pi].req != ev->req) pi++;
  if (pi == g->n_prompts) return;
  srv_prompt *p = &g->prompts[pi];
  if (ev->choice < 0 || ev->choice >= g->n) return;
  srv_choice *c = &g->choices[pi * g->n + ev->choice];
  const char *o;
  size_t on;
  switch (ev->type) {
  case SCHED_EV_PROMPT_LOGPROB:
    if (p->plp && ev->index >= 0 && ev->index < p->n_ids) {
      srv_tokrec *r = &p->plp[ev->index];
      r->id = p->ids[ev->index];
      r->lp = ev->index == 0 ? NAN : ev->logprob;
      r->n_top = ev->index == 0 ? 0 : ev->n_top;
      memcpy(r->top_ids, ev->top_ids, sizeof r->top_ids);
      memcpy(r->top_lps, ev->top_logprobs, sizeof r->top_lps);
      p->n_plp++;
    }
    break;
  case SCHED_EV_TOKEN:
    if (!p->first_seen) {
      p->first_seen = 1;
      if (ev->t_first_token > 0 && ev->t_scheduled > 0)
        srv_hist_observe(&s->h_prefill, ev->t_first_token - ev->t_scheduled);
      if (!g->t_first_token) g->t_first_token = ev->t;
    }
    if (c->finished) break; /* after a stop string */
    c->n_tokens++;
    if (c->last_t > 0) srv_hist_observe(&s->h_itl, ev->t - c->last_t);
    c->last_t = ev->t;
    if (g->logprobs >= 0) push_rec(c, ev);
    if (!hidden_token(g, ev->token) && tok_stream_feed(c->ts, ev->token, &o, &on) == 0 && on) append_text(g, c, o, on);
    if (c->finished) stop_choice(g, pi, ev->choice);
    break;
  case SCHED_EV_FINISHED:
    if (!c->finished) {
      if (tok_stream_flush(c->ts, &o, &on) == 0 && on) append_text(g, c, o, on);
      if (!c->finished) {
        c->finished = 1;
        switch (ev->finish) {
        case SCHED_FINISH_STOP: c->finish = "stop"; break;
        case SCHED_FINISH_LENGTH: c->finish = "length"; break;
        case SCHED_FINISH_ERROR:
          c->finish = "error";
          g->failed = 1;
          g->err_code = ev->err;
          break;
        default:
          c->finish = "abort";
          g->aborted = 1;
          break;
        }
      }
    }
    if (ev->last) {
      p->live = 0;
      p->cached_tokens = ev->cached_tokens;
      srv_idmap_del(&s->map, p->req);
      g->n_live--;
      if (ev->t_first_token > 0 && ev->t_arrival > 0) srv_hist_observe(&s->h_ttft, ev->t_first_token - ev->t_arrival);
      if (ev->t_scheduled > 0 && ev->t_arrival > 0) srv_hist_observe(&s->h_queue, ev->t_scheduled - ev->t_arrival);
      if (ev->t_arrival > 0) srv_hist_observe(&s->h_e2e, ev->t - ev->t_arrival);
      if (g->n_live == 0) {
        g->done = 1;
        for (int i = 0; i < g->n_prompts * g->n; i++) {
          const char *f = g->choices[i].finish;
          int k = !f ? 2 : !strcmp(f, "stop") ? 0 : !strcmp(f, "length") ? 1 : !strcmp(f, "error") ? 3 : 2;
          s->finished[k]++;
        }
      }
    }
    break;
  }
}

/* Cancels the requests still running (their blocks are freed within a step). */
static void gen_cancel(srv_gen *g) {
  for (int i = 0; i < g->n_prompts; i++)
    if (g->prompts[i].live) sched_request_cancel(g->s->sched, g->prompts[i].req);
}

void srv_gen_detach(srv_gen *g) {
  if (g->cc && g->cc->gen == g) g->cc->gen = NULL;
  g->cc = NULL;
  if (g->done) {
    srv_gen_free(g);
    return;
  }
  gen_cancel(g);
  if (!g->linked) srv_gen_free(g);
}

/* ---- output ---- */

static void tok_text(const srv_gen *g, int32_t id, sb *out) {
  if (g->return_ids) {
    char t[32];
    int n = snprintf(t, sizeof t, "token_id:%d", (int)id);
    sb_json_str(out, t, (size_t)n);
    return;
  }
  char *txt = NULL;
  size_t n = 0;
  if (tok_decode(g->s->tok, &id, 1, 0, &txt, &n) == 0) sb_json_str(out, txt, n);
  else sb_puts(out, "\"\"");
  free(txt);
}

static void tok_bytes(const srv_gen *g, int32_t id, sb *out) {
  char *txt = NULL;
  size_t n = 0;
  sb_puts(out, "[");
  if (tok_decode(g->s->tok, &id, 1, 0, &txt, &n) == 0)
    for (size_t i = 0; i < n; i++) sb_printf(out, i ? ",%u" : "%u", (unsigned char)txt[i]);
  free(txt);
  sb_puts(out, "]");
}

static size_t utf8_chars(const char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
  return k;
}

/* completions "logprobs" for records [recs, recs+n), text_offset running in *off */
static void completion_logprobs(const srv_gen *g, const srv_tokrec *pre, int npre, const srv_tokrec *recs, int n,
                                size_t *off, sb *out) {
  sb_puts(out, "{\"tokens\":[");
  for (int k = 0; k < npre + n; k++) {
    const srv_tokrec *r = k < npre ? &pre[k] : &recs[k - npre];
    if (k) sb_puts(out, ",");
    tok_text(g, r->id, out);
  }
  sb_puts(out, "],\"token_logprobs\":[");
  for (int k = 0; k < npre + n; k++) {
    const srv_tokrec *r = k < npre ? &pre[k] : &recs[k - npre];
    if (k) sb_puts(out, ",");
    sb_json_num(out, r->lp);
  }
  sb_puts(out, "],\"top_logprobs\":[");
  for (int k = 0; k < npre + n; k++) {
    const srv_tokrec *r = k < npre ? &pre[k] : &recs[k - npre];
    if (k) sb_puts(out, ",");
    if (k < npre && isnan(r->lp)) {
      sb_puts(out, "null");
      continue;
    }
    sb_puts(out, "{");
    int nt = MFS_MIN(r->n_top, g->logprobs);
    if (nt < 1) { /* logprobs 0: the chosen token only */
      tok_text(g, r->id, out);
      sb_puts(out, ":");
      sb_json_num(out, r->lp);
    }
    for (int t = 0; t < nt; t++) {
      if (t) sb_puts(out, ",");
      tok_text(g, r->top_ids[t], out);
      sb_puts(out, ":");
      sb_json_num(out, r->top_lps[t]);
    }
    sb_puts(out, "}");
  }
  sb_puts(out, "],\"text_offset\":[");
  for (int k = 0; k < npre + n; k++) {
    const srv_tokrec *r = k < npre ? &pre[k] : &recs[k - npre];
    if (k) sb_puts(out, ",");
    sb_printf(out, "%zu", *off);
    char *txt = NULL;
    size_t tn = 0;
    if (tok_decode(g->s->tok, &r->id, 1, g->decode_flags, &txt, &tn) == 0) *off += utf8_chars(txt, tn);
    free(txt);
  }
  sb_puts(out, "]}");
}

static void chat_logprobs(const srv_gen *g, const srv_tokrec *recs, int n, sb *out) {
  sb_puts(out, "{\"content\":[");
  for (int k = 0; k < n; k++) {
    const srv_tokrec *r = &recs[k];
    if (k) sb_puts(out, ",");
    sb_puts(out, "{\"token\":");
    tok_text(g, r->id, out);
    sb_puts(out, ",\"logprob\":");
    sb_json_num(out, r->lp);
    sb_puts(out, ",\"bytes\":");
    tok_bytes(g, r->id, out);
    sb_puts(out, ",\"top_logprobs\":[");
    int nt = MFS_MIN(r->n_top, g->logprobs);
    for (int t = 0; t < nt; t++) {
      if (t) sb_puts(out, ",");
      sb_puts(out, "{\"token\":");
      tok_text(g, r->top_ids[t], out);
      sb_puts(out, ",\"logprob\":");
      sb_json_num(out, r->top_lps[t]);
      sb_puts(out, ",\"bytes\":");
      tok_bytes(g, r->top_ids[t], out);
      sb_puts(out, "}");
    }
    sb_puts(out, "]}");
  }
  sb_puts(out, "],\"refusal\":null}"); /* OpenAI's schema requires it: null, as nothing is ever refused */
}

static void usage_json(const srv_gen *g, sb *out) {
  long long pt = 0, ct = 0, cached = 0;
  for (int i = 0; i < g->n_prompts; i++) {
    pt += g->prompts[i].n_ids;
    cached += g->prompts[i].cached_tokens;
  }
  for (int i = 0; i < g->n_prompts * g->n; i++) ct += g->choices[i].n_tokens;
  sb_printf(out, "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld", pt, ct, pt + ct);
  if (cached > 0) sb_printf(out, ",\"prompt_tokens_details\":{\"cached_tokens\":%lld}", cached);
  sb_puts(out, "}");
}

static void head_json(const srv_gen *g, sb *out, const char *object) {
  sb_printf(out, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", g->id, object, (long long)g->created);
  sb_json_str(out, g->s->served, strlen(g->s->served));
}

/* tool_calls entries (OpenAI's form; streamed ones carry their index) */
static void tool_calls_json(const srv_gen *g, int choice, const cJSON *calls, int streamed, sb *out) {
  const char *hex = strchr(g->id, '-');
  hex = hex ? hex + 1 : g->id;
  sb_puts(out, ",\"tool_calls\":[");
  int k = 0;
  for (const cJSON *c = calls->child; c; c = c->next, k++) {
    const char *nm = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "name"));
    const char *ar = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "arguments"));
    if (k) sb_puts(out, ",");
    sb_puts(out, "{");
    if (streamed) sb_printf(out, "\"index\":%d,", k);
    sb_printf(out, "\"id\":\"call_%s_%d_%d\",\"type\":\"function\",\"function\":{\"name\":", hex, choice, k);
    sb_json_str(out, nm, strlen(nm));
    sb_puts(out, ",\"arguments\":");
    sb_json_str(out, ar, strlen(ar));
    sb_puts(out, "}}");
  }
  sb_puts(out, "]");
}

/* Where streamed content must stop while tools are in use: at a
 * <tool_call> tag, or at a tail that may be the start of one. */
static size_t tool_cut(const srv_choice *c) {
  static const char tag[] = SRV_TOOL_OPEN;
  const char *t = c->text.p;
  size_t n = c->text.len;
  if (!t) return 0;
  const char *m = memmem(t, n, tag, sizeof tag - 1);
  if (m) return (size_t)(m - t);
  for (size_t k = MFS_MIN(n, sizeof tag - 2); k > 0; k--)
    if (!memcmp(t + n - k, tag, k)) return n - k;
  return n;
}

static void final_body(srv_gen *g, sb *out) {
  int chat = g->kind == SRV_KIND_CHAT;
  head_json(g, out, chat ? "chat.completion" : "text_completion");
  sb_puts(out, ",\"choices\":[");
  for (int i = 0; i < g->n_prompts * g->n; i++) {
    srv_choice *c = &g->choices[i];
    srv_prompt *p = &g->prompts[c->prompt];
    if (i) sb_puts(out, ",");
    sb_printf(out, "{\"index\":%d,", i);
    const char *fr = c->finish ? c->finish : "length";
    if (chat) {
      sb content = {0};
      cJSON *calls = NULL;
      int nc = g->tools_on ? srv_tools_split(c->text.p ? c->text.p : "", c->text.len, &content, &calls) : 0;
      sb_puts(out, "\"message\":{\"role\":\"assistant\",\"content\":");
      if (!nc) sb_json_str(out, c->text.p ? c->text.p : "", c->text.len);
      else if (content.len) sb_json_str(out, content.p, content.len);
      else sb_puts(out, "null");
      if (nc) {
        tool_calls_json(g, i, calls, 0, out);
        if (!strcmp(fr, "stop")) fr = "tool_calls";
      }
      sb_free(&content);
      cJSON_Delete(calls);
      sb_puts(out, ",\"refusal\":null},\"logprobs\":"); /* required by OpenAI's schema */
      if (g->logprobs >= 0) chat_logprobs(g, c->recs, c->n_recs, out);
      else sb_puts(out, "null");
    } else {
      sb_puts(out, "\"text\":");
      if (g->echo && p->text) {
        sb tmp = {0};
        sb_puts(&tmp, p->text);
        sb_put(&tmp, c->text.p ? c->text.p : "", c->text.len);
        sb_json_str(out, tmp.p, tmp.len);
        sb_free(&tmp);
      } else {
        sb_json_str(out, c->text.p ? c->text.p : "", c->text.len);
      }
      sb_puts(out, ",\"logprobs\":");
      if (g->logprobs >= 0) {
        size_t off = 0;
        int npre = g->echo && p->plp ? p->n_ids : 0;
        completion_logprobs(g, p->plp, npre, c->recs, c->n_recs, &off, out);
      } else {
        sb_puts(out, "null");
      }
    }
    sb_printf(out, ",\"finish_reason\":\"%s\",\"stop_reason\":null}", fr);
  }
  sb_puts(out, "],\"usage\":");
  usage_json(g, out);
  sb_puts(out, "}");
}

static size_t holdback(const srv_gen *g, const srv_choice *c) {
  if (c->finished || !g->n_stop) return 0;
  size_t avail = c->text.len - c->sent;
  size_t kmax = MFS_MIN(g->max_stop_len - 1, avail);
  for (size_t k = kmax; k > 0; k--)
    for (int i = 0; i < g->n_stop; i++)
      if (g->stop_len[i] > k && !memcmp(c->text.p + c->text.len - k, g->stop[i], k)) return k;
  return 0;
}

/* The error a failed (engine) or aborted (shutdown) request ends with. */
static void gen_error(const srv_gen *g, srv_error *e) {
  if (g->failed)
    srv_error_set(e, SRV_E_INTERNAL, NULL, "The request failed in the engine: %s.", mfs_strerror(g->err_code));
  else
    srv_error_set(e, SRV_E_UNAVAILABLE, NULL, "The server shut down before the request finished.");
}

static void stream_chunks(srv_gen *g) {
  int chat = g->kind == SRV_KIND_CHAT;
  sb *out = &g->out;
  /* test hook: the stream's buffer failing to grow at its Nth flush (the
   * general srv_buf hook rarely lands inside a stream: its buffer is reused) */
  if (!out->oom && mfs_fault("srv_sse")) out->oom = 1;
  for (int i = 0; i < g->n_prompts * g->n; i++) {
    srv_choice *c = &g->choices[i];
    srv_prompt *p = &g->prompts[c->prompt];
    /* a failed or aborted request ends with an error event instead ("error" and
     * "abort" are no finish_reason of OpenAI's) */
    if (c->finish && (!strcmp(c->finish, "error") || !strcmp(c->finish, "abort"))) continue;
    int new_toks = c->n_tokens > c->tok_sent;
    if (c->started && c->sent == c->text.len && !c->n_recs && !new_toks && !(g->done && c->finished)) continue;
    if (c->started == 2) continue; /* final chunk sent */
    /* the echo chunk carries the prompt's logprobs: wait for all of them */
    if (!c->started && p->plp && p->n_plp < p->n_ids && !(g->done && c->finished)) continue;
    size_t end = c->text.len - holdback(g, c);
    int fin = g->done && c->finished;
    if (fin) end = c->text.len;
    /* tools: content stops at a <tool_call> tag; the calls go out with the last chunk */
    cJSON *calls = NULL;
    int nc = 0;
    const char *fr = c->finish ? c->finish : "length";
    if (chat && g->tools_on) {
      size_t cut = tool_cut(c);
      if (fin) {
        sb tmp = {0};
        nc = srv_tools_split(c->text.p ? c->text.p : "", c->text.len, &tmp, &calls);
        sb_free(&tmp);
        if (nc) {
          end = cut;
          if (!strcmp(fr, "stop")) fr = "tool_calls";
        }
      } else if (end > cut)
        end = cut;
      if (end < c->sent) end = c->sent;
    }
    if (c->started && end == c->sent && !c->n_recs && !new_toks && !fin) continue;
    /* completions have no role chunk: nothing to say before the first token */
    if (!chat && !c->started && end == c->sent && !c->n_recs && !new_toks && !fin && !(g->echo && p->text)) continue;
    sb_puts(out, "data: ");
    head_json(g, out, chat ? "chat.completion.chunk" : "text_completion");
    sb_printf(out, ",\"choices\":[{\"index\":%d,", i);
    if (chat) {
      sb_puts(out, "\"delta\":{");
      if (!c->started) sb_puts(out, "\"role\":\"assistant\",");
      sb_puts(out, "\"content\":");
      sb_json_str(out, c->text.p ? c->text.p + c->sent : "", end - c->sent);
      if (nc) tool_calls_json(g, i, calls, 1, out);
      cJSON_Delete(calls);
      sb_puts(out, "},\"logprobs\":");
      if (g->logprobs >= 0 && c->n_recs) chat_logprobs(g, c->recs, c->n_recs, out);
      else sb_puts(out, "null");
    } else {
      sb_puts(out, "\"text\":");
      if (!c->started && g->echo && p->text) {
        sb tmp = {0};
        sb_puts(&tmp, p->text);
        sb_put(&tmp, c->text.p ? c->text.p + c->sent : "", end - c->sent);
        sb_json_str(out, tmp.p, tmp.len);
        sb_free(&tmp);
      } else {
        sb_json_str(out, c->text.p ? c->text.p + c->sent : "", end - c->sent);
      }
      sb_puts(out, ",\"logprobs\":");
      int npre = !c->started && g->echo && p->plp ? p->n_ids : 0;
      if (g->logprobs >= 0 && (c->n_recs || npre)) completion_logprobs(g, p->plp, npre, c->recs, c->n_recs, &c->text_off, out);
      else sb_puts(out, "null");
    }
    if (fin) sb_printf(out, ",\"finish_reason\":\"%s\",\"stop_reason\":null}]", fr);
    else sb_puts(out, ",\"finish_reason\":null}]");
    if (g->include_usage) {
      if (g->continuous_usage) {
        sb_puts(out, ",\"usage\":");
        usage_json(g, out);
      } else {
        sb_puts(out, ",\"usage\":null");
      }
    }
    sb_puts(out, "}\n\n");
    c->sent = end;
    c->n_recs = 0;
    c->started = fin ? 2 : 1;
    c->tok_sent = c->n_tokens;
    if (c->n_tokens && !g->first_byte) g->first_byte = 1;
  }
  if (g->done && !g->final_written) {
    g->final_written = 1;
    if (g->failed || g->aborted) {
      srv_error e = {0};
      gen_error(g, &e);
      sb_puts(out, "data: ");
      srv_error_json(out, &e);
      sb_puts(out, "\n\n");
    } else if (g->include_usage) {
      sb_puts(out, "data: ");
      head_json(g, out, chat ? "chat.completion.chunk" : "text_completion");
      sb_puts(out, ",\"choices\":[],\"usage\":");
      usage_json(g, out);
      sb_puts(out, "}\n\n");
    }
    sb_puts(out, "data: [DONE]\n\n");
  }
}

void srv_gen_flush(srv_gen *g) {
  srv_conn *cc = g->cc;
  if (!cc) {
    if (g->done) srv_gen_free(g);
    return;
  }
  if (g->stream) {
    stream_chunks(g);
    /* new bytes, the end, or a failed buffer (srv_gen_read ends the stream at once) */
    if (cc->streaming && (g->out.len > g->out_off || g->done || g->out.oom)) srv_conn_resume(cc);
    return;
  }
  if (!g->done) return;
  sb body = {0};
  if (g->failed || g->aborted) {
    srv_error e = {0};
    gen_error(g, &e);
    srv_conn_set_error(cc, &e);
  } else {
    final_body(g, &body);
    if (body.oom) {
      srv_error e = {0};
      srv_error_set(&e, SRV_E_INTERNAL, NULL, "out of memory");
      srv_conn_set_error(cc, &e);
    } else {
      srv_conn_set_json(cc, 200, &body);
    }
  }
  sb_free(&body);
  cc->gen = NULL;
  g->cc = NULL;
  srv_gen_free(g);
  srv_conn_resume(cc);
}

/* A stream whose buffer failed to grow ends with this error event, which
 * needs no allocation (same shape as srv_error_json's SRV_E_INTERNAL). */
static const char oom_tail[] =
    "data: {\"error\":{\"message\":\"The server ran out of memory; the rest of this response was lost.\","
    "\"type\":\"server_error\",\"param\":null,\"code\":\"internal_error\"}}\n\ndata: [DONE]\n\n";

ssize_t srv_gen_read(srv_gen *g, char *buf, size_t max) {
  if (g->out.oom && !g->oom_cut) {
    /* output lost to a failed allocation: keep the complete events (up to
     * the last blank line), then the error event; if part of an incomplete
     * event already left, only breaking the connection tells the client */
    size_t end = 0;
    for (size_t i = g->out.len; i >= 2; i--)
      if (g->out.p[i - 1] == '\n' && g->out.p[i - 2] == '\n') {
        end = i;
        break;
      }
    if (end < g->out_off) return MHD_CONTENT_READER_END_WITH_ERROR;
    g->out.len = end;
    g->oom_cut = 1;
    gen_cancel(g); /* nobody will read the rest: free its sequences now */
  }
  if (g->oom_cut && g->out_off >= g->out.len) {
    size_t left = sizeof oom_tail - 1 - g->oom_off;
    if (!left) return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = MFS_MIN(left, max);
    memcpy(buf, oom_tail + g->oom_off, n);
    g->oom_off += n;
    return (ssize_t)n;
  }
  size_t avail = g->out.len - g->out_off;
  if (!avail) {
    g->out.len = g->out_off = 0;
    return g->done && g->final_written ? MHD_CONTENT_READER_END_OF_STREAM : 0;
  }
  size_t n = MFS_MIN(avail, max);
  memcpy(buf, g->out.p + g->out_off, n);
  g->out_off += n;
  if (g->first_byte == 1) { /* the first token's chunk is in these bytes */
    g->first_byte = 2;
    double now = mfs_now();
    if (g->t_first_token > 0) srv_hist_observe(&g->s->h_first_byte, now - g->t_first_token);
    if (g->t_http > 0) srv_hist_observe(&g->s->h_http_ttft, now - g->t_http);
  }
  return (ssize_t)n;
}
