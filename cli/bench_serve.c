/* bench_serve.c: `mfaserve bench serve`, a load generator for any
 * OpenAI-compatible /v1/completions server, with the semantics of vLLM's
 * `bench serve` (benchmark_serving.py) so figures compare directly: random
 * token-id prompts, Poisson / gamma arrivals, a concurrency cap, streamed
 * responses timed per chunk, and the same TTFT / TPOT / ITL / E2EL and
 * throughput definitions (see bsv_metrics_compute in bench_serve.h).
 *
 * One thread drives every transfer through one libcurl multi handle; the
 * write callback stamps SSE chunks as they arrive. Request bodies are built
 * before the clock starts, so the timed loop only sends and reads. A failed
 * request (transport error, HTTP status other than 200, an error object in
 * the stream, or no output chunk at all) is counted with its reason and the
 * run goes on. Exit status: 0, 1 when no request succeeded (or the server
 * could not be asked for its model), 2 for bad flags.
 *
 * When the server's /metrics has mfaserve's first-token phase histograms,
 * they are read before and after the timed run and the mean of each phase
 * over the run is reported too ("server_phases_ms"). */
#include "bench_serve.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "common.h"

/* ---- random source and arrivals ---- */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void bsv_rng_init(bsv_rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t bsv_rng_next(bsv_rng *r) {
  uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return out;
}

double bsv_rng_uniform(bsv_rng *r) { return ((double)(bsv_rng_next(r) >> 11) + 0.5) * 0x1.0p-53; }

int bsv_rng_int(bsv_rng *r, int lo, int hi) {
  uint64_t span = (uint64_t)((int64_t)hi - lo) + 1;
  return (int)(lo + (int64_t)(bsv_rng_next(r) % span));
}

static double rng_normal(bsv_rng *r) {
  return sqrt(-2.0 * log(bsv_rng_uniform(r))) * cos(2.0 * M_PI * bsv_rng_uniform(r));
}

double bsv_rng_gamma(bsv_rng *r, double shape, double scale) {
  if (shape == 1.0) return -log(bsv_rng_uniform(r)) * scale;
  if (shape < 1.0) return bsv_rng_gamma(r, shape + 1.0, scale) * pow(bsv_rng_uniform(r), 1.0 / shape);
  double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
  for (;;) {
    double x = rng_normal(r), v = 1.0 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    double u = bsv_rng_uniform(r);
    if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v * scale;
  }
}

void bsv_arrivals(double *t, int n, double rate, double burstiness, uint64_t seed) {
  bsv_rng r;
  bsv_rng_init(&r, seed);
  double at = 0;
  for (int i = 0; i < n; i++) {
    t[i] = at;
    if (isfinite(rate) && rate > 0) at += bsv_rng_gamma(&r, burstiness, 1.0 / (rate * burstiness));
  }
}

/* ---- SSE stream ---- */

void bsv_stream_init(bsv_stream *s) {
  memset(s, 0, sizeof *s);
  s->usage_tokens = -1;
}

void bsv_stream_deinit(bsv_stream *s) {
  free(s->line);
  free(s->itl);
  bsv_stream_init(s);
}

static int stream_stamp(bsv_stream *s, double now) {
  if (s->chunks) {
    if (s->n_itl == s->cap_itl) {
      int cap = s->cap_itl ? 2 * s->cap_itl : 64;
      double *p = realloc(s->itl, (size_t)cap * sizeof *p);
      if (!p) return MFS_ENOMEM;
      s->itl = p;
      s->cap_itl = cap;
    }
    s->itl[s->n_itl++] = now - s->t_last;
  } else {
    s->t_first = now;
  }
  s->t_last = now;
  s->chunks++;
  return 0;
}

static void stream_bad(bsv_stream *s, const char *what, const char *detail) {
  if (s->bad) return;
  s->bad = 1;
  snprintf(s->err, sizeof s->err, "%s%s%.120s", what, detail ? ": " : "", detail ? detail : "");
}

static int stream_line(bsv_stream *s, char *p, size_t len, double now) {
  if (len && p[len - 1] == '\r') p[--len] = 0;
  if (len < 5 || memcmp(p, "data:", 5)) return 0; /* blank, comment, event:, id: */
  p += 5;
  len -= 5;
  while (len && *p == ' ') p++, len--;
  if (len == 6 && !memcmp(p, "[DONE]", 6)) {
    s->done = 1;
    return 0;
  }
  cJSON *j = cJSON_ParseWithLength(p, len);
  if (!j) {
    stream_bad(s, "unparsable chunk", p);
    return 0;
  }
  int rc = 0;
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "choices");
  const cJSON *c0 = cJSON_IsArray(ch) ? cJSON_GetArrayItem(ch, 0) : NULL;
  if (c0) {
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(c0, "text");
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(c0, "delta");
    if (!text && delta) text = cJSON_GetObjectItemCaseSensitive(delta, "content");
    const cJSON *fin = cJSON_GetObjectItemCaseSensitive(c0, "finish_reason");
    int has_text = cJSON_IsString(text) && text->valuestring[0];
    if (has_text || !cJSON_IsString(fin)) rc = stream_stamp(s, now);
  }
  const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
  const cJSON *ct = cJSON_IsObject(usage) ? cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens") : NULL;
  if (cJSON_IsNumber(ct)) s->usage_tokens = (long)ct->valuedouble;
  const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
  if (err && !cJSON_IsNull(err)) {
    const cJSON *msg = cJSON_IsObject(err) ? cJSON_GetObjectItemCaseSensitive(err, "message") : err;
    stream_bad(s, "error in stream", cJSON_IsString(msg) ? msg->valuestring : NULL);
  }
  cJSON_Delete(j);
  return rc;
}

int bsv_stream_feed(bsv_stream *s, const char *data, size_t n, double now) {
  while (n) {
    const char *nl = memchr(data, '\n', n);
    size_t take = nl ? (size_t)(nl - data) : n;
    if (s->len + take + 1 > s->cap) {
      size_t cap = s->cap ? s->cap : 256;
      while (cap < s->len + take + 1) cap *= 2;
      char *p = realloc(s->line, cap);
      if (!p) return MFS_ENOMEM;
      s->line = p;
      s->cap = cap;
    }
    memcpy(s->line + s->len, data, take);
    s->len += take;
    s->line[s->len] = 0;
    if (!nl) break;
    int rc = stream_line(s, s->line, s->len, now);
    s->len = 0;
    if (rc) return rc;
    data += take + 1;
    n -= take + 1;
  }
  return 0;
}

/* ---- metrics ---- */

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double bsv_percentile(const double *v, int n, double p) {
  if (n <= 0) return 0;
  double idx = p / 100.0 * (n - 1);
  int lo = (int)floor(idx), hi = lo + 1 < n ? lo + 1 : n - 1;
  return v[lo] + (v[hi] - v[lo]) * (idx - lo);
}

/* v[n] in seconds, sorted in place; the summary in ms. */
static void dist_of(bsv_dist *d, double *v, int n, const double *pcts, int npct) {
  memset(d, 0, sizeof *d);
  if (n <= 0) return;
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  double sum = 0, sq = 0;
  for (int i = 0; i < n; i++) sum += v[i];
  double mean = sum / n;
  for (int i = 0; i < n; i++) sq += (v[i] - mean) * (v[i] - mean);
  d->mean = mean * 1e3;
  d->std = sqrt(sq / n) * 1e3;
  d->median = bsv_percentile(v, n, 50) * 1e3;
  for (int i = 0; i < npct && i < BSV_MAX_PCT; i++) d->pct[i] = bsv_percentile(v, n, pcts[i]) * 1e3;
}

int bsv_metrics_compute(bsv_metrics *m, const bsv_result *r, int n, double duration, const bsv_slo *slo,
                        const double *pcts, int npct) {
  memset(m, 0, sizeof *m);
  size_t n_itl = 0;
  for (int i = 0; i < n; i++)
    if (r[i].ok) n_itl += (size_t)r[i].n_itl;
  double *ttft = malloc(((size_t)n + 1) * sizeof *ttft), *tpot = malloc(((size_t)n + 1) * sizeof *tpot);
  double *e2el = malloc(((size_t)n + 1) * sizeof *e2el), *itl = malloc((n_itl + 1) * sizeof *itl);
  if (!ttft || !tpot || !e2el || !itl) {
    free(ttft), free(tpot), free(e2el), free(itl);
    return MFS_ENOMEM;
  }
  int nt = 0, np = 0;
  size_t ni = 0;
  for (int i = 0; i < n; i++) {
    if (!r[i].ok) {
      m->failed++;
      continue;
    }
    m->completed++;
    m->total_input += r[i].prompt_len;
    m->total_output += r[i].output_tokens;
    double tp = 0;
    if (r[i].output_tokens > 1) {
      tp = (r[i].e2el - r[i].ttft) / (r[i].output_tokens - 1);
      tpot[np++] = tp;
    }
    if (r[i].n_itl) memcpy(itl + ni, r[i].itl, (size_t)r[i].n_itl * sizeof *itl);
    ni += (size_t)r[i].n_itl;
    ttft[nt++] = r[i].ttft;
    e2el[nt - 1] = r[i].e2el;
    if (slo) {
      int good = (slo->ttft_ms <= 0 || r[i].ttft * 1e3 <= slo->ttft_ms) &&
                 (slo->tpot_ms <= 0 || tp * 1e3 <= slo->tpot_ms) && (slo->e2el_ms <= 0 || r[i].e2el * 1e3 <= slo->e2el_ms);
      m->good += good;
    }
  }
  m->duration = duration;
  if (duration > 0) {
    m->request_throughput = m->completed / duration;
    m->request_goodput = m->good / duration;
    m->output_throughput = m->total_output / duration;
    m->total_token_throughput = (m->total_input + m->total_output) / duration;
  }
  dist_of(&m->ttft, ttft, nt, pcts, npct);
  dist_of(&m->tpot, tpot, np, pcts, npct);
  dist_of(&m->itl, itl, (int)ni, pcts, npct);
  dist_of(&m->e2el, e2el, nt, pcts, npct);
  free(ttft), free(tpot), free(e2el), free(itl);
  return 0;
}

int bsv_slo_parse(bsv_slo *slo, const char *s) {
  while (*s) {
    while (*s == ' ' || *s == ',') s++;
    if (!*s) break;
    const char *colon = strchr(s, ':');
    if (!colon) return MFS_EINVAL;
    size_t klen = (size_t)(colon - s);
    char *end;
    double v = strtod(colon + 1, &end);
    if (end == colon + 1 || (*end && *end != ' ' && *end != ',') || !(v > 0) || !isfinite(v)) return MFS_EINVAL;
    if (klen == 4 && !memcmp(s, "ttft", 4)) slo->ttft_ms = v;
    else if (klen == 4 && !memcmp(s, "tpot", 4)) slo->tpot_ms = v;
    else if (klen == 4 && !memcmp(s, "e2el", 4)) slo->e2el_ms = v;
    else return MFS_EINVAL;
    s = end;
  }
  return 0;
}

/* ---- requests ---- */

typedef struct bsv_req {
  CURL *h;    /* while in flight */
  char *body; /* from malloc; JSON request */
  int prompt_len, max_tokens;
  double t_send; /* monotonic seconds */
  bsv_stream st;
  long status;
  char errbody[200]; /* start of a non-200 body */
  size_t errlen;
  int ok;
  char err[200]; /* why it failed */
} bsv_req;

typedef struct bsv_run {
  CURLM *multi;
  struct curl_slist *headers;
  const char *url;
  long timeout_ms;
  int active, peak;
} bsv_run;

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud) {
  bsv_req *q = ud;
  size_t n = size * nmemb;
  double now = mfs_now();
  if (!q->status) curl_easy_getinfo(q->h, CURLINFO_RESPONSE_CODE, &q->status);
  if (q->status != 200) {
    size_t k = MFS_MIN(n, sizeof q->errbody - 1 - q->errlen);
    memcpy(q->errbody + q->errlen, data, k);
    q->errlen += k;
    q->errbody[q->errlen] = 0;
    return n;
  }
  return bsv_stream_feed(&q->st, data, n, now) ? 0 : n;
}

static int req_start(bsv_run *run, bsv_req *q) {
  bsv_stream_init(&q->st);
  q->status = 0;
  q->errlen = 0;
  q->ok = 0;
  q->err[0] = 0;
  CURL *h = curl_easy_init();
  if (!h) return MFS_ENOMEM;
  q->h = h;
  curl_easy_setopt(h, CURLOPT_URL, run->url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, run->headers);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, q);
  curl_easy_setopt(h, CURLOPT_PRIVATE, q);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  if (run->timeout_ms > 0) curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, run->timeout_ms);
  q->t_send = mfs_now();
  if (curl_multi_add_handle(run->multi, h) != CURLM_OK) {
    curl_easy_cleanup(h);
    q->h = NULL;
    return MFS_EIO;
  }
  return 0;
}

static void req_finish(bsv_run *run, bsv_req *q, CURLcode res) {
  if (!q->status) curl_easy_getinfo(q->h, CURLINFO_RESPONSE_CODE, &q->status);
  curl_multi_remove_handle(run->multi, q->h);
  curl_easy_cleanup(q->h);
  q->h = NULL;
  if (res != CURLE_OK) {
    snprintf(q->err, sizeof q->err, "transport: %s", curl_easy_strerror(res));
  } else if (q->status != 200) {
    for (size_t i = 0; i < q->errlen; i++)
      if (q->errbody[i] == '\n' || q->errbody[i] == '\r') q->errbody[i] = ' ';
    snprintf(q->err, sizeof q->err, "HTTP %ld: %.150s", q->status, q->errbody);
  } else if (q->st.bad) {
    snprintf(q->err, sizeof q->err, "%s", q->st.err);
  } else if (!q->st.chunks) {
    snprintf(q->err, sizeof q->err, "no output chunk in the stream");
  } else {
    q->ok = 1;
  }
}

/* Sends q[i] at t0 + at[i] (or later, while `cap` are in flight) and waits
 * for all. 0, or a negative error when libcurl itself fails. */
static int run_requests(bsv_run *run, bsv_req *q, const double *at, int n, int cap, double *t0_out,
                        double *t1_out) {
  double t0 = mfs_now();
  int next = 0, finished = 0, rc = 0;
  run->active = run->peak = 0;
  while (finished < n) {
    double t = mfs_now() - t0;
    while (next < n && at[next] <= t && (cap <= 0 || run->active < cap)) {
      if ((rc = req_start(run, &q[next]))) {
        snprintf(q[next].err, sizeof q[next].err, "could not start: %s", mfs_strerror(rc));
        next++, finished++;
        continue;
      }
      next++;
      run->active++;
      if (run->active > run->peak) run->peak = run->active;
    }
    int running;
    if (curl_multi_perform(run->multi, &running) != CURLM_OK) return MFS_EIO;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(run->multi, &left))) {
      if (msg->msg != CURLMSG_DONE) continue;
      bsv_req *r = NULL;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
      req_finish(run, r, msg->data.result);
      run->active--;
      finished++;
    }
    if (finished >= n) break;
    int wait_ms = 50;
    if (next < n && (cap <= 0 || run->active < cap)) {
      double dt = at[next] - (mfs_now() - t0);
      wait_ms = dt <= 0 ? 0 : (int)MFS_MIN(50.0, ceil(dt * 1e3));
    }
    if (wait_ms && curl_multi_poll(run->multi, NULL, 0, wait_ms, NULL) != CURLM_OK) return MFS_EIO;
  }
  *t0_out = t0;
  *t1_out = mfs_now();
  return 0;
}

/* ---- dataset ---- */

typedef struct {
  char *p; /* from malloc */
  size_t len, cap;
  int oom;
} buf;

static void buf_put(buf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}
static void buf_puts(buf *b, const char *s) { buf_put(b, s, strlen(s)); }
static void buf_json_str(buf *b, const char *s) {
  buf_puts(b, "\"");
  for (; *s; s++) {
    char e[8];
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') e[0] = '\\', e[1] = (char)c, e[2] = 0;
    else if (c < 0x20) snprintf(e, sizeof e, "\\u%04x", c);
    else e[0] = (char)c, e[1] = 0;
    buf_puts(b, e);
  }
  buf_puts(b, "\"");
}

typedef struct {
  const char *model;
  int ignore_eos, nested;
  int in_len, out_len, prefix_len;
  double range;
  int vlo, vhi;
} dataset_opts;

/* Random-token prompts as vLLM's RandomDataset: prompt length
 * prefix_len + U[in*(1-r), in*(1+r)], output U[out*(1-r), out*(1+r)] (at
 * least 1), ids uniform in [vlo, vhi). The prefix is shared by all. */
static int dataset_build(bsv_req *q, int n, const dataset_opts *o, bsv_rng *rng, const int32_t *prefix) {
  int ilo = MFS_MAX(1, (int)(o->in_len * (1 - o->range))), ihi = (int)(o->in_len * (1 + o->range));
  int olo = MFS_MAX(1, (int)(o->out_len * (1 - o->range))), ohi = MFS_MAX(olo, (int)(o->out_len * (1 + o->range)));
  if (ihi < ilo) ihi = ilo;
  for (int i = 0; i < n; i++) {
    int in = bsv_rng_int(rng, ilo, ihi), out = bsv_rng_int(rng, olo, ohi);
    buf b = {0};
    char num[32];
    buf_puts(&b, "{\"model\":");
    buf_json_str(&b, o->model);
    buf_puts(&b, o->nested ? ",\"prompt\":[[" : ",\"prompt\":[");
    for (int k = 0; k < o->prefix_len + in; k++) {
      int id = k < o->prefix_len ? prefix[k] : bsv_rng_int(rng, o->vlo, o->vhi - 1);
      snprintf(num, sizeof num, k ? ",%d" : "%d", id);
      buf_puts(&b, num);
    }
    snprintf(num, sizeof num, "%d", out);
    buf_puts(&b, o->nested ? "]]" : "]");
    buf_puts(&b, ",\"max_tokens\":");
    buf_puts(&b, num);
    buf_puts(&b, ",\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    if (o->ignore_eos) buf_puts(&b, ",\"ignore_eos\":true");
    buf_puts(&b, "}");
    if (b.oom) {
      free(b.p);
      return MFS_ENOMEM;
    }
    q[i].body = b.p;
    q[i].prompt_len = o->prefix_len + in;
    q[i].max_tokens = out;
  }
  return 0;
}

/* ---- asking the server ---- */

static size_t collect(char *data, size_t size, size_t nmemb, void *ud) {
  buf *b = ud;
  if (b->len > (1u << 20)) return 0;
  buf_put(b, data, size * nmemb);
  return size * nmemb;
}

/* GET url into b (at most 1 MiB), the HTTP status into *status. */
static CURLcode http_get(const char *url, struct curl_slist *hdr, long timeout_s, buf *b, long *status) {
  CURL *h = curl_easy_init();
  if (!h) return CURLE_FAILED_INIT;
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
  CURLcode res = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
  curl_easy_cleanup(h);
  return res;
}

/* The first model GET <base>/v1/models lists, into out[cap]. 0 or -1 (printed). */
static int first_model(const char *base, struct curl_slist *hdr, char *out, size_t cap) {
  char url[2048];
  snprintf(url, sizeof url, "%s/v1/models", base);
  buf b = {0};
  long status = 0;
  CURLcode res = http_get(url, hdr, 30, &b, &status);
  int rc = -1;
  if (res != CURLE_OK) {
    fprintf(stderr, "mfaserve bench serve: GET %s: %s\n", url, curl_easy_strerror(res));
  } else if (status != 200 || !b.p) {
    fprintf(stderr, "mfaserve bench serve: GET %s: HTTP %ld\n", url, status);
  } else {
    cJSON *j = cJSON_Parse(b.p);
    const cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "data"), 0);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(d, "id");
    if (cJSON_IsString(id)) {
      snprintf(out, cap, "%s", id->valuestring);
      rc = 0;
    } else {
      fprintf(stderr, "mfaserve bench serve: GET %s: no data[0].id in the answer (pass --model)\n", url);
    }
    cJSON_Delete(j);
  }
  free(b.p);
  return rc;
}

/* ---- the server's first-token phases (mfaserve's /metrics) ---- */

static const struct {
  const char *key, *metric, *label;
} phases[] = {
    {"arrival_to_tokenized", "request_tokenize_time_seconds", "HTTP arrival -> tokenized"},
    {"tokenized_to_submitted", "request_submit_wait_time_seconds", "tokenized -> submitted"},
    {"submitted_to_scheduled", "request_queue_time_seconds", "submitted -> scheduled (queue)"},
    {"scheduled_to_first_token", "request_prefill_time_seconds", "scheduled -> first token (prefill)"},
    {"first_token_to_first_byte", "request_first_byte_time_seconds", "first token -> its chunk sent"},
    {"arrival_to_first_byte", "http_time_to_first_token_seconds", "HTTP arrival -> first token sent"},
};
#define N_PHASES (int)(sizeof phases / sizeof phases[0])

/* GET <base>/metrics: the _sum and _count of each phase histogram (NAN when
 * absent). 0 if the scrape worked, -1 if not (nothing printed). */
static int phases_scrape(const char *base, struct curl_slist *hdr, double *sum, double *cnt) {
  for (int i = 0; i < N_PHASES; i++) sum[i] = cnt[i] = NAN;
  char url[2048];
  snprintf(url, sizeof url, "%s/metrics", base);
  buf b = {0};
  long status = 0;
  CURLcode res = http_get(url, hdr, 10, &b, &status);
  int rc = res == CURLE_OK && status == 200 && b.p ? 0 : -1;
  for (char *line = rc ? NULL : b.p; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    for (int i = 0; i < N_PHASES; i++) {
      size_t ml = strlen(phases[i].metric);
      if (strncmp(line, "mfaserve:", 9) || strncmp(line + 9, phases[i].metric, ml)) continue;
      const char *rest = line + 9 + ml, *sp = strrchr(line, ' ');
      if (!sp) continue;
      if (!strncmp(rest, "_sum{", 5)) sum[i] = strtod(sp + 1, NULL);
      else if (!strncmp(rest, "_count{", 7)) cnt[i] = strtod(sp + 1, NULL);
    }
    line = nl ? nl + 1 : NULL;
  }
  free(b.p);
  return rc;
}

/* ---- report ---- */

static void pct_word(char *out, size_t cap, double p) {
  if (p == floor(p)) snprintf(out, cap, "%d", (int)p);
  else snprintf(out, cap, "%g", p);
}

static void print_dist(const char *title, const char *name, const bsv_dist *d, const double *pcts, int npct) {
  char key[64], w[32];
  int pad = 50 - (int)strlen(title);
  printf("%.*s%s%.*s\n", pad / 2, "--------------------------------------------------", title, pad - pad / 2,
         "--------------------------------------------------");
  snprintf(key, sizeof key, "Mean %s (ms):", name);
  printf("%-40s %-10.2f\n", key, d->mean);
  snprintf(key, sizeof key, "Median %s (ms):", name);
  printf("%-40s %-10.2f\n", key, d->median);
  for (int i = 0; i < npct; i++) {
    pct_word(w, sizeof w, pcts[i]);
    snprintf(key, sizeof key, "P%s %s (ms):", w, name);
    printf("%-40s %-10.2f\n", key, d->pct[i]);
  }
}

static void json_dist(cJSON *o, const char *name, const bsv_dist *d, const double *pcts, int npct) {
  char key[64], w[32];
  snprintf(key, sizeof key, "mean_%s_ms", name);
  cJSON_AddNumberToObject(o, key, d->mean);
  snprintf(key, sizeof key, "median_%s_ms", name);
  cJSON_AddNumberToObject(o, key, d->median);
  snprintf(key, sizeof key, "std_%s_ms", name);
  cJSON_AddNumberToObject(o, key, d->std);
  for (int i = 0; i < npct; i++) {
    pct_word(w, sizeof w, pcts[i]);
    snprintf(key, sizeof key, "p%s_%s_ms", w, name);
    cJSON_AddNumberToObject(o, key, d->pct[i]);
  }
}

static int parse_pcts(const char *s, double *p, int *n) {
  *n = 0;
  while (*s) {
    while (*s == ',' || *s == ' ') s++;
    if (!*s) break;
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0 && v <= 100) || *n >= BSV_MAX_PCT) return -1;
    p[(*n)++] = v;
    s = end;
    if (*s && *s != ',' && *s != ' ') return -1;
  }
  return 0;
}

static int usage_err(const char *what) {
  fprintf(stderr, "mfaserve bench serve: %s (see --help)\n", what);
  return 2;
}

int bench_serve_main(int argc, char **argv) {
  const char *base = "http://127.0.0.1:8000", *endpoint = "/v1/completions", *model = NULL, *api_key = NULL;
  const char *dataset = "random", *vocab = "1000:4000", *goodput = NULL, *pct_s = "99", *json_path = NULL;
  const char *prompt_fmt = "ids";
  int num_prompts = 1000, max_conc = 0, seed = 0, in_len = 1024, out_len = 128, prefix_len = 0, warmup = 0;
  int ignore_eos = 1, json_stdout = 0, quiet = 0;
  double rate = INFINITY, burst = 1.0, range = 0.0, timeout_s = 0;
  cli_flag flags[] = {
      {"base-url", "MFASERVE_BENCH_BASE_URL", CLI_STR, &base, "server root URL"},
      {"endpoint", NULL, CLI_STR, &endpoint, "completions path (streamed, token-id prompts)"},
      {"model", NULL, CLI_STR, &model, "served model name (default: the first of GET /v1/models)"},
      {"api-key", "OPENAI_API_KEY", CLI_STR, &api_key, "sent as 'Authorization: Bearer KEY'"},
      {"num-prompts", NULL, CLI_INT, &num_prompts, "requests to time"},
      {"request-rate", NULL, CLI_DOUBLE, &rate, "mean requests/s (inf: all at once)"},
      {"burstiness", NULL, CLI_DOUBLE, &burst, "gamma shape of the gaps (1: Poisson; <1 burstier)"},
      {"max-concurrency", NULL, CLI_INT, &max_conc, "most requests in flight (0: no cap)"},
      {"seed", NULL, CLI_INT, &seed, "seed of the prompts and arrivals"},
      {"dataset", NULL, CLI_STR, &dataset, "dataset: random"},
      {"random-input-len", NULL, CLI_INT, &in_len, "prompt tokens after the prefix"},
      {"random-output-len", NULL, CLI_INT, &out_len, "output tokens (max_tokens)"},
      {"random-range-ratio", NULL, CLI_DOUBLE, &range, "lengths uniform in len*[1-r, 1+r], 0 <= r < 1"},
      {"random-prefix-len", NULL, CLI_INT, &prefix_len, "tokens of one prefix shared by every prompt"},
      {"vocab-range", NULL, CLI_STR, &vocab, "prompt token ids drawn from LO:HI (HI excluded)"},
      {"prompt-format", NULL, CLI_STR, &prompt_fmt, "ids: \"prompt\":[ids]; nested: \"prompt\":[[ids]]"},
      {"ignore-eos", NULL, CLI_BOOL, &ignore_eos, "send ignore_eos so every request makes its full output"},
      {"warmup", NULL, CLI_INT, &warmup, "untimed requests sent first (all at once, within the cap)"},
      {"goodput", NULL, CLI_STR, &goodput, "SLOs in ms, e.g. 'ttft:500 tpot:50 e2el:5000'"},
      {"metric-percentiles", NULL, CLI_STR, &pct_s, "percentiles to report, e.g. 50,90,99"},
      {"percentiles", NULL, CLI_STR, &pct_s, "same as --metric-percentiles"},
      {"request-timeout", NULL, CLI_DOUBLE, &timeout_s, "seconds before a request fails (0: none)"},
      {"json", NULL, CLI_STR, &json_path, "also write the result as JSON to this file"},
      {"json-stdout", NULL, CLI_BOOL, &json_stdout, "print the JSON result instead of the table"},
      {"quiet", NULL, CLI_BOOL, &quiet, "no progress lines on stderr"},
  };
  char **pos = calloc((size_t)argc + 1, sizeof *pos);
  int npos = 0;
  if (!pos) return 1;
  int rc = cli_parse("bench serve",
                     "Load-tests an OpenAI-compatible server the way vLLM's `bench serve` does: random token-id\n"
                     "prompts, Poisson/gamma arrivals, streamed completions; reports throughput, goodput and\n"
                     "TTFT / TPOT / ITL / E2EL (ms). Extra 'key:ms' words after --goodput add SLOs.",
                     flags, sizeof flags / sizeof flags[0], argc, argv, &pos, &npos);
  if (rc) {
    free(pos);
    return rc == CLI_HELP ? 0 : 2;
  }
  bsv_slo slo = {0};
  int bad = goodput && bsv_slo_parse(&slo, goodput);
  for (int i = 0; i < npos && !bad; i++) bad = bsv_slo_parse(&slo, pos[i]) != 0;
  int have_slo = goodput || npos;
  free(pos);
  if (bad) return usage_err("--goodput takes ttft:MS, tpot:MS and e2el:MS with MS > 0");
  double pcts[BSV_MAX_PCT];
  int npct;
  int vlo, vhi, vn = 0;
  if (parse_pcts(pct_s, pcts, &npct)) return usage_err("--metric-percentiles takes up to 16 numbers in 0..100");
  if (sscanf(vocab, "%d:%d%n", &vlo, &vhi, &vn) != 2 || vocab[vn] || vlo < 0 || vhi <= vlo)
    return usage_err("--vocab-range takes LO:HI with 0 <= LO < HI");
  if (strcmp(dataset, "random")) return usage_err("--dataset: only 'random' is supported");
  if (strcmp(prompt_fmt, "ids") && strcmp(prompt_fmt, "nested")) return usage_err("--prompt-format: ids or nested");
  if (num_prompts < 1 || in_len < 1 || out_len < 1 || prefix_len < 0 || warmup < 0 || max_conc < 0)
    return usage_err("--num-prompts, --random-input-len and --random-output-len must be >= 1; "
                     "--random-prefix-len, --warmup and --max-concurrency >= 0");
  if (!(range >= 0 && range < 1)) return usage_err("--random-range-ratio must be in [0, 1)");
  if (!(burst > 0) || isnan(rate) || !(timeout_s >= 0)) return usage_err("bad --burstiness, --request-rate or --request-timeout");
  if (rate <= 0) rate = INFINITY;

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 1;
  struct curl_slist *hdr = NULL;
  char auth[1024];
  hdr = curl_slist_append(hdr, "Content-Type: application/json");
  hdr = curl_slist_append(hdr, "Accept: text/event-stream");
  hdr = curl_slist_append(hdr, "Expect:"); /* no 100-continue round trip on long prompts */
  if (api_key && *api_key) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", api_key);
    hdr = curl_slist_append(hdr, auth);
  }
  size_t blen = strlen(base);
  while (blen && base[blen - 1] == '/') blen--;
  char base_trim[1024], url[2048], model_buf[512];
  snprintf(base_trim, sizeof base_trim, "%.*s", (int)blen, base);
  snprintf(url, sizeof url, "%s%s", base_trim, endpoint);
  int total = warmup + num_prompts;
  bsv_req *q = calloc((size_t)total, sizeof *q);
  double *at = calloc((size_t)total, sizeof *at);
  int32_t *prefix = malloc(((size_t)prefix_len + 1) * sizeof *prefix);
  bsv_result *res = calloc((size_t)num_prompts, sizeof *res);
  CURLM *multi = curl_multi_init();
  cJSON *out = NULL;
  rc = 1;
  if (!q || !at || !prefix || !res || !multi || !hdr) {
    fprintf(stderr, "mfaserve bench serve: out of memory\n");
    goto done;
  }
  if (!model) {
    if (first_model(base_trim, hdr, model_buf, sizeof model_buf)) goto done;
    model = model_buf;
  }
  bsv_rng rng;
  bsv_rng_init(&rng, (uint64_t)(uint32_t)seed);
  for (int i = 0; i < prefix_len; i++) prefix[i] = bsv_rng_int(&rng, vlo, vhi - 1);
  dataset_opts dopt = {model, ignore_eos, !strcmp(prompt_fmt, "nested"), in_len, out_len, prefix_len, range, vlo, vhi};
  if (dataset_build(q, total, &dopt, &rng, prefix)) {
    fprintf(stderr, "mfaserve bench serve: out of memory building prompts\n");
    goto done;
  }
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
  bsv_run run = {multi, hdr, url, (long)(timeout_s * 1e3), 0, 0};
  double t0, t1;
  if (warmup) {
    if (!quiet) fprintf(stderr, "bench serve: %d warm-up requests to %s\n", warmup, url);
    if (run_requests(&run, q, at, warmup, max_conc, &t0, &t1)) goto curl_failed;
    int wok = 0, wbad = -1;
    for (int i = 0; i < warmup; i++) {
      wok += q[i].ok;
      if (!q[i].ok && wbad < 0) wbad = i;
    }
    if (!quiet)
      fprintf(stderr, "bench serve: warm-up: %d of %d succeeded%s%s\n", wok, warmup, wbad >= 0 ? "; first error: " : "",
              wbad >= 0 ? q[wbad].err : "");
  }
  bsv_req *tq = q + warmup;
  bsv_arrivals(at + warmup, num_prompts, rate, burst, (uint64_t)(uint32_t)seed ^ 0x5eed5eedull);
  if (!quiet)
    fprintf(stderr, "bench serve: %d requests to %s, model %s, rate %g req/s, burstiness %g, max concurrency %d\n",
            num_prompts, url, model, rate, burst, max_conc);
  double ph_sum0[N_PHASES], ph_cnt0[N_PHASES], ph_sum1[N_PHASES], ph_cnt1[N_PHASES], ph_ms[N_PHASES];
  int have_phases = phases_scrape(base_trim, hdr, ph_sum0, ph_cnt0) == 0;
  if (run_requests(&run, tq, at + warmup, num_prompts, max_conc, &t0, &t1)) goto curl_failed;
  have_phases = have_phases && phases_scrape(base_trim, hdr, ph_sum1, ph_cnt1) == 0;
  int n_phases = 0;
  for (int i = 0; i < N_PHASES; i++) {
    double c = ph_cnt1[i] - ph_cnt0[i];
    ph_ms[i] = have_phases && c > 0 ? 1e3 * (ph_sum1[i] - ph_sum0[i]) / c : NAN; /* NAN - x stays NAN */
    n_phases += !isnan(ph_ms[i]);
  }
  for (int i = 0; i < num_prompts; i++) {
    bsv_req *r = &tq[i];
    res[i] = (bsv_result){.ok = r->ok, .prompt_len = r->prompt_len};
    if (!r->ok) continue;
    res[i].output_tokens = r->st.usage_tokens >= 0 ? (int)r->st.usage_tokens : r->st.chunks;
    res[i].ttft = r->st.t_first - r->t_send;
    res[i].e2el = r->st.t_last - r->t_send;
    res[i].itl = r->st.itl;
    res[i].n_itl = r->st.n_itl;
  }
  bsv_metrics m;
  if (bsv_metrics_compute(&m, res, num_prompts, t1 - t0, have_slo ? &slo : NULL, pcts, npct)) {
    fprintf(stderr, "mfaserve bench serve: out of memory\n");
    goto done;
  }

  /* distinct failure reasons, most frequent first (few expected) */
  int nreason = 0, *rcount = calloc((size_t)num_prompts, sizeof *rcount), *rfirst = calloc((size_t)num_prompts, sizeof *rfirst);
  for (int i = 0; i < num_prompts && rcount && rfirst; i++) {
    if (tq[i].ok) continue;
    int k = 0;
    while (k < nreason && strcmp(tq[rfirst[k]].err, tq[i].err)) k++;
    if (k == nreason) rfirst[nreason++] = i;
    rcount[k]++;
  }
  if (!json_stdout) {
    printf("============ Serving Benchmark Result ============\n");
    printf("%-40s %-10d\n", "Successful requests:", m.completed);
    printf("%-40s %-10d\n", "Failed requests:", m.failed);
    if (max_conc) printf("%-40s %-10d\n", "Maximum request concurrency:", max_conc);
    printf("%-40s %-10.2f\n", "Benchmark duration (s):", m.duration);
    printf("%-40s %-10ld\n", "Total input tokens:", m.total_input);
    printf("%-40s %-10ld\n", "Total generated tokens:", m.total_output);
    printf("%-40s %-10.2f\n", "Request throughput (req/s):", m.request_throughput);
    if (have_slo) printf("%-40s %-10.2f\n", "Request goodput (req/s):", m.request_goodput);
    printf("%-40s %-10.2f\n", "Output token throughput (tok/s):", m.output_throughput);
    printf("%-40s %-10.2f\n", "Total Token throughput (tok/s):", m.total_token_throughput);
    printf("%-40s %-10d\n", "Peak concurrent requests:", run.peak);
    print_dist("Time to First Token", "TTFT", &m.ttft, pcts, npct);
    print_dist("Time per Output Token (excl. 1st token)", "TPOT", &m.tpot, pcts, npct);
    print_dist("Inter-token Latency", "ITL", &m.itl, pcts, npct);
    print_dist("End-to-end Latency", "E2EL", &m.e2el, pcts, npct);
    if (n_phases) {
      printf("-----First token in the server (mean ms)-----------\n");
      for (int i = 0; i < N_PHASES; i++)
        if (!isnan(ph_ms[i])) printf("%-40s %-10.3f\n", phases[i].label, ph_ms[i]);
    }
    printf("==================================================\n");
    for (int k = 0; k < nreason; k++) printf("failed x%d: %s\n", rcount[k], tq[rfirst[k]].err);
    fflush(stdout);
  }
  out = cJSON_CreateObject();
  char date[32];
  time_t now = time(NULL);
  strftime(date, sizeof date, "%Y%m%d-%H%M%S", localtime(&now));
  cJSON_AddStringToObject(out, "date", date);
  cJSON_AddStringToObject(out, "backend", "openai");
  cJSON_AddStringToObject(out, "base_url", base_trim);
  cJSON_AddStringToObject(out, "endpoint", endpoint);
  cJSON_AddStringToObject(out, "model_id", model);
  cJSON_AddNumberToObject(out, "num_prompts", num_prompts);
  if (isinf(rate)) cJSON_AddStringToObject(out, "request_rate", "inf");
  else cJSON_AddNumberToObject(out, "request_rate", rate);
  cJSON_AddNumberToObject(out, "burstiness", burst);
  if (max_conc) cJSON_AddNumberToObject(out, "max_concurrency", max_conc);
  else cJSON_AddNullToObject(out, "max_concurrency");
  cJSON_AddNumberToObject(out, "seed", seed);
  cJSON_AddNumberToObject(out, "random_input_len", in_len);
  cJSON_AddNumberToObject(out, "random_output_len", out_len);
  cJSON_AddNumberToObject(out, "random_range_ratio", range);
  cJSON_AddNumberToObject(out, "random_prefix_len", prefix_len);
  cJSON_AddNumberToObject(out, "warmup", warmup);
  cJSON_AddNumberToObject(out, "duration", m.duration);
  cJSON_AddNumberToObject(out, "completed", m.completed);
  cJSON_AddNumberToObject(out, "failed", m.failed);
  cJSON_AddNumberToObject(out, "total_input_tokens", (double)m.total_input);
  cJSON_AddNumberToObject(out, "total_output_tokens", (double)m.total_output);
  cJSON_AddNumberToObject(out, "request_throughput", m.request_throughput);
  if (have_slo) cJSON_AddNumberToObject(out, "request_goodput", m.request_goodput);
  else cJSON_AddNullToObject(out, "request_goodput");
  cJSON_AddNumberToObject(out, "output_throughput", m.output_throughput);
  cJSON_AddNumberToObject(out, "total_token_throughput", m.total_token_throughput);
  cJSON_AddNumberToObject(out, "max_concurrent_requests", run.peak);
  if (have_slo) {
    cJSON *g = cJSON_AddObjectToObject(out, "goodput_slo_ms");
    if (slo.ttft_ms > 0) cJSON_AddNumberToObject(g, "ttft", slo.ttft_ms);
    if (slo.tpot_ms > 0) cJSON_AddNumberToObject(g, "tpot", slo.tpot_ms);
    if (slo.e2el_ms > 0) cJSON_AddNumberToObject(g, "e2el", slo.e2el_ms);
  }
  json_dist(out, "ttft", &m.ttft, pcts, npct);
  json_dist(out, "tpot", &m.tpot, pcts, npct);
  json_dist(out, "itl", &m.itl, pcts, npct);
  json_dist(out, "e2el", &m.e2el, pcts, npct);
  if (n_phases) {
    cJSON *ph = cJSON_AddObjectToObject(out, "server_phases_ms");
    for (int i = 0; i < N_PHASES; i++)
      if (!isnan(ph_ms[i])) cJSON_AddNumberToObject(ph, phases[i].key, ph_ms[i]);
  }
  cJSON *il = cJSON_AddArrayToObject(out, "input_lens"), *ol = cJSON_AddArrayToObject(out, "output_lens");
  cJSON *tt = cJSON_AddArrayToObject(out, "ttfts"), *ee = cJSON_AddArrayToObject(out, "e2els");
  cJSON *it = cJSON_AddArrayToObject(out, "itls"), *er = cJSON_AddArrayToObject(out, "errors");
  for (int i = 0; i < num_prompts; i++) {
    cJSON_AddItemToArray(il, cJSON_CreateNumber(res[i].prompt_len));
    cJSON_AddItemToArray(ol, cJSON_CreateNumber(res[i].output_tokens));
    cJSON_AddItemToArray(tt, cJSON_CreateNumber(res[i].ttft));
    cJSON_AddItemToArray(ee, cJSON_CreateNumber(res[i].e2el));
    cJSON_AddItemToArray(it, cJSON_CreateDoubleArray(res[i].itl ? res[i].itl : (const double[]){0}, res[i].n_itl));
    cJSON_AddItemToArray(er, cJSON_CreateString(tq[i].err));
  }
  free(rcount);
  free(rfirst);
  char *js = cJSON_PrintUnformatted(out);
  if (!js) {
    fprintf(stderr, "mfaserve bench serve: out of memory\n");
    goto done;
  }
  if (json_stdout) printf("%s\n", js);
  if (json_path) {
    FILE *f = fopen(json_path, "w");
    if (!f || fprintf(f, "%s\n", js) < 0 || fclose(f)) {
      fprintf(stderr, "mfaserve bench serve: cannot write %s\n", json_path);
      free(js);
      goto done;
    }
  }
  free(js);
  rc = m.completed > 0 ? 0 : 1;
  if (!m.completed) fprintf(stderr, "mfaserve bench serve: no request succeeded\n");
  goto done;
curl_failed:
  fprintf(stderr, "mfaserve bench serve: libcurl failed\n");
done:
  cJSON_Delete(out);
  for (int i = 0; q && i < total; i++) {
    if (q[i].h) {
      curl_multi_remove_handle(multi, q[i].h);
      curl_easy_cleanup(q[i].h);
    }
    bsv_stream_deinit(&q[i].st);
    free(q[i].body);
  }
  if (multi) curl_multi_cleanup(multi);
  curl_slist_free_all(hdr);
  curl_global_cleanup();
  free(q);
  free(at);
  free(prefix);
  free(res);
  return rc;
}
