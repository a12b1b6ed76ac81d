/* srv_metrics.c: /metrics in Prometheus text format (prefix "mfaserve:",
 * vLLM's names and meanings; with srv_opts.metrics_vllm the series routers
 * and autoscalers read are exported again under vLLM's own prefix "vllm:",
 * with vLLM's info gauges) and the /v1/cache/stats JSON for the cache
 * dashboard. Counts come from sched_get_stats; finished requests by reason
 * and the latency histograms are kept here, from event timestamps, because
 * the reason a user sees (a stop string) is decided here. Loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srv_int.h"

static void hist_init(srv_hist *h, const char *name, const char *help, const double *le, int n) {
  memset(h, 0, sizeof *h);
  h->name = name;
  h->help = help;
  h->n = n;
  memcpy(h->le, le, (size_t)n * sizeof *le);
}

void srv_metrics_init(srv *s) {
  static const double ttft[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
  static const double itl[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                               0.4,   0.5,    0.75,  1.0,  2.5,   5.0,  7.5,   10.0, 20.0, 40.0, 80.0};
  static const double e2e[] = {0.01, 0.05, 0.1, 0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,
                               10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0};
  hist_init(&s->h_ttft, "time_to_first_token_seconds", "Time from arrival to the first generated token.", ttft,
            (int)(sizeof ttft / sizeof ttft[0]));
  hist_init(&s->h_itl, "inter_token_latency_seconds", "Time between consecutive generated tokens of a sequence.", itl,
            (int)(sizeof itl / sizeof itl[0]));
  hist_init(&s->h_e2e, "e2e_request_latency_seconds", "Time from arrival to the last token.", e2e,
            (int)(sizeof e2e / sizeof e2e[0]));
  hist_init(&s->h_queue, "request_queue_time_seconds", "Time a request waited before it was first scheduled.", e2e,
            (int)(sizeof e2e / sizeof e2e[0]));
  /* the first token's phases: most take well under a millisecond */
  static const double fine[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08,
                                0.1,    0.15,    0.2,    0.3,   0.5,    1.0,   2.5,  5.0,  10.0, 40.0, 160.0};
  const int nf = (int)(sizeof fine / sizeof fine[0]);
  hist_init(&s->h_tokenize, "request_tokenize_time_seconds",
            "Time from the HTTP request's arrival to its prompt tokenized (worker queue, JSON, template, tokenizer).",
            fine, nf);
  hist_init(&s->h_submit_wait, "request_submit_wait_time_seconds",
            "Time from the prompt tokenized (worker) to its submission to the scheduler (loop thread).", fine, nf);
  hist_init(&s->h_prefill, "request_prefill_time_seconds",
            "Time from a request's first scheduling to its first token (the prompt's computation).", fine, nf);
  hist_init(&s->h_first_byte, "request_first_byte_time_seconds",
            "Time from a stream's first token sampled to its chunk handed to the connection.", fine, nf);
  hist_init(&s->h_http_ttft, "http_time_to_first_token_seconds",
            "Time from the HTTP request's arrival to its first token's chunk handed to the connection (streams).",
            fine, nf);
}

/* every series is written under a prefix: "mfaserve:" or "vllm:" */
static void metric(sb *o, const char *pfx, const char *type, const char *name, const char *help) {
  sb_printf(o, "# HELP %s%s %s\n# TYPE %s%s %s\n", pfx, name, help, pfx, name, type);
}

static void label_model(sb *o, const srv *s) {
  sb_puts(o, "model_name=");
  sb_json_str(o, s->served, strlen(s->served)); /* a JSON string is a valid label value here */
}

static void sample(sb *o, const char *pfx, const char *type, const srv *s, const char *name, const char *help,
                   double v) {
  metric(o, pfx, type, name, help);
  sb_printf(o, "%s%s{", pfx, name);
  label_model(o, s);
  sb_printf(o, "} %.17g\n", v);
}
#define gauge(o, pfx, s, name, help, v) sample(o, pfx, "gauge", s, name, help, v)
#define counter(o, pfx, s, name, help, v) sample(o, pfx, "counter", s, name, help, v)

/* h under its own name, or as `name` when not NULL */
static void hist(sb *o, const char *pfx, const srv *s, const srv_hist *h, const char *name) {
  if (!name) name = h->name;
  metric(o, pfx, "histogram", name, h->help);
  uint64_t cum = 0;
  for (int i = 0; i < h->n; i++) {
    cum += h->count[i];
    sb_printf(o, "%s%s_bucket{", pfx, name);
    label_model(o, s);
    sb_printf(o, ",le=\"%g\"} %llu\n", h->le[i], (unsigned long long)cum);
  }
  sb_printf(o, "%s%s_bucket{", pfx, name);
  label_model(o, s);
  sb_printf(o, ",le=\"+Inf\"} %llu\n", (unsigned long long)h->total);
  sb_printf(o, "%s%s_sum{", pfx, name);
  label_model(o, s);
  sb_printf(o, "} %.17g\n", h->sum);
  sb_printf(o, "%s%s_count{", pfx, name);
  label_model(o, s);
  sb_printf(o, "} %llu\n", (unsigned long long)h->total);
}

static const char *const finish_reasons[] = {"stop", "length", "abort", "error"};

static void finished(sb *o, const char *pfx, const srv *s) {
  metric(o, pfx, "counter", "request_success_total", "Finished choices by finish reason.");
  for (int i = 0; i < 4; i++) {
    sb_printf(o, "%srequest_success_total{", pfx);
    label_model(o, s);
    sb_printf(o, ",finished_reason=\"%s\"} %llu\n", finish_reasons[i], (unsigned long long)s->finished[i]);
  }
}

/* Speculative decoding, with vLLM's (v1) counters and meanings; only when
 * it is on (--speculative ngram), as vLLM exports them. */
static void spec_decode(sb *o, const char *pfx, const srv *s, const sched_stats *st) {
  if (st->spec_tokens <= 0) return;
  counter(o, pfx, s, "spec_decode_num_drafts_total", "Number of spec decoding drafts (sequence steps that carried one).",
          (double)st->spec_drafts_total);
  counter(o, pfx, s, "spec_decode_num_draft_tokens_total", "Number of draft tokens.", (double)st->spec_draft_tokens_total);
  counter(o, pfx, s, "spec_decode_num_accepted_tokens_total", "Number of accepted tokens.",
          (double)st->spec_accepted_tokens_total);
  metric(o, pfx, "counter", "spec_decode_num_accepted_tokens_per_pos_total", "Accepted tokens per draft position.");
  for (int i = 0; i < st->spec_tokens && i < SCHED_MAX_SPEC; i++) {
    sb_printf(o, "%sspec_decode_num_accepted_tokens_per_pos_total{", pfx);
    label_model(o, s);
    sb_printf(o, ",position=\"%d\"} %lld\n", i, (long long)st->spec_accepted_per_pos_total[i]);
  }
}

/* What routers and autoscalers read from vLLM, under vLLM's names and
 * labels: the Gateway API Inference Extension's endpoint picker
 * (num_requests_waiting, kv_cache_usage_perc or the older
 * gpu_cache_usage_perc, lora_requests_info, cache_config_info), vLLM's
 * production-stack router and the usual dashboards (the counters and
 * latency histograms). Same values as the mfaserve: series. */
static void vllm_compat(srv *s, sb *o, const sched_stats *st) {
  const char *P = "vllm:";
  const kvc_stats *kv = &st->kv;
  double usage = kv->blocks_total ? (double)kv->blocks_used / (double)kv->blocks_total : 0.0;
  gauge(o, P, s, "num_requests_running", "Number of requests in the model execution batch.", st->running);
  gauge(o, P, s, "num_requests_waiting", "Number of requests waiting to be processed.", st->waiting);
  gauge(o, P, s, "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage);
  gauge(o, P, s, "gpu_cache_usage_perc", "KV-cache usage (vLLM's older name). 1 means 100 percent usage.", usage);
  counter(o, P, s, "prompt_tokens_total", "Number of prefill tokens processed.", (double)st->prompt_tokens_total);
  counter(o, P, s, "generation_tokens_total", "Number of generation tokens processed.",
          (double)st->generation_tokens_total);
  counter(o, P, s, "num_preemptions_total", "Cumulative number of preemptions.", (double)st->preemptions_total);
  counter(o, P, s, "prefix_cache_queries_total", "Prefix-cache queries, in tokens.", (double)kv->prefix_queries_tokens);
  counter(o, P, s, "prefix_cache_hits_total", "Prefix-cache hits, in tokens.", (double)kv->prefix_hits_tokens);
  finished(o, P, s);
  hist(o, P, s, &s->h_ttft, NULL);
  hist(o, P, s, &s->h_itl, NULL);
  hist(o, P, s, &s->h_itl, "time_per_output_token_seconds"); /* vLLM's older name of the same interval */
  hist(o, P, s, &s->h_e2e, NULL);
  hist(o, P, s, &s->h_queue, NULL);
  spec_decode(o, P, s, st);
  hist(o, P, s, &s->h_prefill, NULL);
  metric(o, P, "gauge", "cache_config_info", "Information of the KV-cache configuration (always 1).");
  sb_printf(o, "vllm:cache_config_info{block_size=\"%d\",cache_dtype=\"%s\",enable_prefix_caching=\"True\","
               "num_cpu_blocks=\"0\",num_gpu_blocks=\"%lld\"} 1\n",
            st->block_size,             s->o.kv_cache_dtype == KVC_F32   ? "float32"
            : s->o.kv_cache_dtype == KVC_F16 ? "float16"
                                             : "int8",
            (long long)kv->blocks_total);
  metric(o, P, "gauge", "lora_requests_info", "Running stats on LoRA requests (none: no adapters); the time of the scrape.");
  sb_printf(o, "vllm:lora_requests_info{max_lora=\"0\",running_lora_adapters=\"\",waiting_lora_adapters=\"\"} %.17g\n",
            (double)time(NULL));
}

void srv_metrics_text(srv *s, sb *o) {
  sched_stats st;
  memset(&st, 0, sizeof st);
  if (s->sched) sched_get_stats(s->sched, &st);
  const kvc_stats *kv = &st.kv;
  gauge(o, "mfaserve:", s, "num_requests_running", "Requests in the running batch.", st.running);
  gauge(o, "mfaserve:", s, "num_requests_waiting", "Requests waiting to be scheduled.", st.waiting);
  gauge(o, "mfaserve:", s, "kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1).",
        kv->blocks_total ? (double)kv->blocks_used / (double)kv->blocks_total : 0.0);
  gauge(o, "mfaserve:", s, "kv_cache_num_blocks", "KV-cache blocks in the pool (total).", (double)kv->blocks_total);
  gauge(o, "mfaserve:", s, "kv_cache_used_blocks", "KV-cache blocks referenced by sequences.", (double)kv->blocks_used);
  gauge(o, "mfaserve:", s, "kv_cache_cached_blocks", "KV-cache blocks free but still holding a reusable prefix.",
        (double)kv->blocks_cached_free);
  gauge(o, "mfaserve:", s, "kv_cache_bytes_per_token", "KV-cache bytes one token takes over all layers.",
        (double)kv->bytes_per_token);
  metric(o, "mfaserve:", "gauge", "engine_info", "Always 1; the label isa names the kernel level the engine runs (mfaserve info --cpu).");
  sb_puts(o, "mfaserve:engine_info{");
  label_model(o, s);
  sb_printf(o, ",isa=\"%s\"} 1\n", eng_isa_name());
  metric(o, "mfaserve:", "gauge", "kv_cache_info",
         "Always 1; the label dtype is the KV pool's storage (f32, f16, int8: --kv-cache-dtype).");
  sb_puts(o, "mfaserve:kv_cache_info{");
  label_model(o, s);
  sb_printf(o, ",dtype=\"%s\"} 1\n", kvc_dtype_name(s->o.kv_cache_dtype));
  gauge(o, "mfaserve:", s, "server_ready", "1 when serving, 0 while loading or draining.", s->state == SRV_READY);
  counter(o, "mfaserve:", s, "prompt_tokens_total", "Prompt tokens computed (prefix-cache hits excluded).",
          (double)st.prompt_tokens_total);
  counter(o, "mfaserve:", s, "generation_tokens_total", "Generated tokens.", (double)st.generation_tokens_total);
  counter(o, "mfaserve:", s, "num_preemptions_total", "Sequences preempted (blocks freed, recomputed later).",
          (double)st.preemptions_total);
  counter(o, "mfaserve:", s, "engine_steps_total", "Engine steps (forward passes over a batch) run.",
          (double)st.steps_total);
  counter(o, "mfaserve:", s, "engine_step_seconds_total",
          "Wall time of those steps on the scheduler thread, from planning the batch to sampling its tokens.",
          st.step_seconds_total);
  counter(o, "mfaserve:", s, "engine_forward_seconds_total",
          "The engine's part of engine_step_seconds_total (the forward pass alone).", st.forward_seconds_total);
  counter(o, "mfaserve:", s, "prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
          (double)kv->prefix_queries_tokens);
  counter(o, "mfaserve:", s, "prefix_cache_hits_total", "Prompt tokens found in the prefix cache.", (double)kv->prefix_hits_tokens);
  finished(o, "mfaserve:", s);
  counter(o, "mfaserve:", s, "http_requests_total", "HTTP requests received.", (double)s->http_requests);
  gauge(o, "mfaserve:", s, "http_connections", "Open client connections.", (double)s->n_socks);
  counter(o, "mfaserve:", s, "http_idle_connections_closed_total",
          "Idle connections closed near --max-connections to admit new clients.", (double)s->n_evicted);
  kve_stats ks = {0};
  if (s->kvev) kve_publisher_stats(s->kvev, &ks);
  counter(o, "mfaserve:", s, "kv_events_published_total",
          "KV-cache events sent to --kv-events-endpoint (one per block stored or removed, and per AllBlocksCleared).",
          (double)ks.published_events);
  counter(o, "mfaserve:", s, "kv_events_dropped_total",
          "KV-cache events dropped because the publisher's queue was full (subscribers see a sequence gap).",
          (double)ks.dropped_events);
  hist(o, "mfaserve:", s, &s->h_ttft, NULL);
  hist(o, "mfaserve:", s, &s->h_itl, NULL);
  hist(o, "mfaserve:", s, &s->h_e2e, NULL);
  hist(o, "mfaserve:", s, &s->h_queue, NULL);
  spec_decode(o, "mfaserve:", s, &st);
  hist(o, "mfaserve:", s, &s->h_tokenize, NULL);
  hist(o, "mfaserve:", s, &s->h_submit_wait, NULL);
  hist(o, "mfaserve:", s, &s->h_prefill, NULL);
  hist(o, "mfaserve:", s, &s->h_first_byte, NULL);
  hist(o, "mfaserve:", s, &s->h_http_ttft, NULL);
  if (s->o.metrics_vllm) vllm_compat(s, o, &st);
}

void srv_cache_stats_json(srv *s, sb *o, int with_hashes) {
  sched_stats st;
  sched_get_stats(s->sched, &st);
  const kvc_stats *kv = &st.kv;
  int nb = (int)kv->blocks_total, max_seqs = st.max_num_seqs > 0 ? st.max_num_seqs : 256;
  int max_table = (s->max_model_len + st.block_size - 1) / (st.block_size > 0 ? st.block_size : 1) + 1;
  uint8_t *state = malloc((size_t)(nb ? nb : 1));
  uint16_t *refs = malloc((size_t)(nb ? nb : 1) * sizeof *refs);
  sched_seq_view *seqs = malloc((size_t)max_seqs * sizeof *seqs);
  int32_t *tables = malloc((size_t)max_seqs * (size_t)max_table * sizeof *tables);
  int n_seqs = 0, n = 0;
  if (state && refs && seqs && tables)
    n = sched_cache_snapshot(s->sched, state, refs, nb, seqs, max_seqs, &n_seqs, tables, max_table);
  const char *attn = s->info ? eng_attn_name(s->info->attn) : "";
  sb_puts(o, "{\"model\":");
  sb_json_str(o, s->served, strlen(s->served));
  sb_printf(o,
            ",\"attention\":\"%s\",\"kv_dtype\":\"%s\",\"block_size\":%d,\"kv_bytes_per_token\":%lld,"
            "\"max_model_len\":%d",
            attn, kvc_dtype_name(s->o.kv_cache_dtype), st.block_size, (long long)kv->bytes_per_token, s->max_model_len);
  sb_printf(o, ",\"blocks\":{\"total\":%lld,\"used\":%lld,\"cached\":%lld,\"free\":%lld,\"indexed\":%lld}",
            (long long)kv->blocks_total, (long long)kv->blocks_used, (long long)kv->blocks_cached_free,
            (long long)kv->blocks_free, (long long)kv->blocks_indexed);
  if (with_hashes) { /* hex strings: JSON numbers lose 64-bit precision in many readers */
    uint64_t *hs = malloc((size_t)(nb ? nb : 1) * sizeof *hs);
    int nh = hs ? sched_cache_hashes(s->sched, hs, nb) : 0;
    sb_puts(o, ",\"prefix_hashes\":[");
    for (int i = 0; i < nh; i++) sb_printf(o, i ? ",\"%016llx\"" : "\"%016llx\"", (unsigned long long)hs[i]);
    sb_puts(o, "]");
    if (!hs) o->oom = 1;
    free(hs);
  }
  sb_puts(o, ",\"usage\":");
  sb_json_num(o, kv->blocks_total ? (double)kv->blocks_used / (double)kv->blocks_total : 0.0);
  sb_puts(o, ",\"block_states\":\"");
  for (int i = 0; i < n; i++) {
    char ch = state[i] == 0 ? '0' : state[i] == 1 ? '1' : (char)('0' + MFS_MAX(2, MFS_MIN(9, (int)refs[i] + 1)));
    sb_put(o, &ch, 1);
  }
  sb_puts(o, "\",\"sequences\":[");
  for (int i = 0; i < n_seqs; i++) {
    if (i) sb_puts(o, ",");
    sb_printf(o, "{\"request_id\":%llu,\"choice\":%d,\"tokens\":%d,\"blocks\":[", (unsigned long long)seqs[i].req,
              seqs[i].choice, seqs[i].n_tokens);
    int nt = MFS_MIN(seqs[i].n_blocks, max_table);
    for (int k = 0; k < nt; k++) sb_printf(o, k ? ",%d" : "%d", (int)tables[(size_t)i * max_table + k]);
    sb_puts(o, "]}");
  }
  sb_printf(o, "],\"requests\":{\"running\":%d,\"waiting\":%d}", st.running, st.waiting);
  sb_printf(o, ",\"prefix_cache\":{\"queries\":%lld,\"hits\":%lld}", (long long)kv->prefix_queries_tokens,
            (long long)kv->prefix_hits_tokens);
  sb_printf(o, ",\"tokens\":{\"prompt_total\":%lld,\"generation_total\":%lld}", (long long)st.prompt_tokens_total,
            (long long)st.generation_tokens_total);
  sb_printf(o, ",\"preemptions\":%lld,\"time\":%.3f}", (long long)st.preemptions_total, (double)time(NULL));
  free(state);
  free(refs);
  free(seqs);
  free(tables);
}
