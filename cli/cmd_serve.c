/* cmd_serve.c: `mfaserve serve`: the OpenAI-compatible HTTP server. Every
 * flag has an MFASERVE_* environment twin; exit status 0 after a clean
 * drain, 1 when the model cannot be loaded or the port cannot be bound, 2
 * for bad flags. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "common.h"
#include "engine.h"
#include "scheduler.h"
#include "server.h"
#include "session.h"

/* Memory this process may use: physical memory, or the cgroup's limit when
 * lower (a container). 0 if unknown. */
static uint64_t usable_memory(void) {
  uint64_t total = 0;
  long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
  if (pages > 0 && psz > 0) total = (uint64_t)pages * (uint64_t)psz;
  FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");
  if (f) {
    unsigned long long lim;
    if (fscanf(f, "%llu", &lim) == 1 && lim > 0 && (total == 0 || lim < total)) total = lim;
    fclose(f);
  }
  return total;
}

/* The default KV pool: a tenth of usable memory, at least 256 MiB and at
 * most 8 GiB (MFA-KR's pool of 1 GiB already holds a million tokens of the
 * bundled model). */
static uint64_t default_kv_bytes(void) {
  uint64_t m = usable_memory() / 10;
  if (m < (256ull << 20)) m = 256ull << 20;
  if (m > (8ull << 30)) m = 8ull << 30;
  return m;
}

int cmd_serve(int argc, char **argv) {
  const char *model = cli_default_model(), *host = "127.0.0.1", *served = NULL, *api_key = NULL;
  const char *kv_dtype = "f16", *chat_template = "auto", *log_level = "info", *metrics_compat = "vllm";
  /* 512 tokens per step (vLLM's chunked-prefill default before V1): on a few
   * CPU cores a 2048-token step takes ~0.45 s (74M model, 2 cores), every
   * running stream stalls that long, and prompts arriving together finish
   * together and keep arriving together; at 512 a step's prefill stays near
   * its peak rate (BENCHMARKS.md, issue 17) */
  int port = 8000, max_num_seqs = 64, max_batched = 512, max_queued = 256, max_model_len = 0, block_size = 16;
  int threads = 0, use_mmap = 0;
  const char *quant = "none";
  const char *isa = NULL;
  /* a JSON body is parsed into a tree of several times its size: 4 MiB
   * bounds one request to a few hundred MiB of parsing */
  uint64_t kv_bytes = default_kv_bytes(), max_body = 4ull << 20;
  int max_connections = 1000;
  double receive_timeout = 30;
  double shutdown_timeout = 30;
  const char *kv_events_endpoint = NULL, *kv_events_topic = "", *kv_events_replay = NULL;
  int kv_events_queue = 65536;
  const char *speculative = "none", *spec_config = NULL;
  int spec_tokens = 4, ngram_max = 4, ngram_min = 2;
  cli_flag flags[] = {
      {"model", "MFASERVE_MODEL", CLI_STR, &model, "model directory (config.json, safetensors, tokenizer.json)"},
      {"host", "MFASERVE_HOST", CLI_STR, &host, "address to listen on (numeric IPv4 or IPv6)"},
      {"port", "MFASERVE_PORT", CLI_INT, &port, "port to listen on (0: any free port)"},
      {"served-model-name", "MFASERVE_SERVED_MODEL_NAME", CLI_STR, &served,
       "model id in the API (default: the model directory's name)"},
      {"api-key", "MFASERVE_API_KEY", CLI_STR, &api_key, "require 'Authorization: Bearer KEY' on /v1/"},
      {"max-num-seqs", "MFASERVE_MAX_NUM_SEQS", CLI_INT, &max_num_seqs, "sequences in the running batch at most"},
      {"max-num-batched-tokens", "MFASERVE_MAX_NUM_BATCHED_TOKENS", CLI_INT, &max_batched,
       "tokens per engine step at most (prefills are chunked to it)"},
      {"max-queued-requests", "MFASERVE_MAX_QUEUED_REQUESTS", CLI_INT, &max_queued,
       "waiting requests at most; beyond them 429 with Retry-After"},
      {"max-model-len", "MFASERVE_MAX_MODEL_LEN", CLI_INT, &max_model_len,
       "prompt + output tokens at most (0: the model's)"},
      {"kv-cache-memory", "MFASERVE_KV_CACHE_MEMORY", CLI_BYTES, &kv_bytes, "bytes for the KV-cache pool (K/M/G; default: 10% of memory, 256M..8G)"},
      {"kv-cache-dtype", "MFASERVE_KV_CACHE_DTYPE", CLI_STR, &kv_dtype, "KV-cache storage: f16, f32 or int8"},
      {"block-size", "MFASERVE_BLOCK_SIZE", CLI_INT, &block_size, "tokens per KV-cache block"},
      {"threads", "MFASERVE_THREADS", CLI_INT, &threads, "engine worker threads (0: all CPUs)"},
      {"max-body-bytes", "MFASERVE_MAX_BODY_BYTES", CLI_BYTES, &max_body, "request bodies beyond this get 413"},
      {"max-connections", "MFASERVE_MAX_CONNECTIONS", CLI_INT, &max_connections,
       "open HTTP connections at most (idle ones close after 5 s); more wait to be accepted"},
      {"receive-timeout", "MFASERVE_RECEIVE_TIMEOUT", CLI_DOUBLE, &receive_timeout,
       "seconds a request's headers and body may take to arrive, however slowly they trickle"},
      {"shutdown-timeout", "MFASERVE_SHUTDOWN_TIMEOUT", CLI_DOUBLE, &shutdown_timeout,
       "seconds running requests get to finish after SIGTERM/SIGINT"},
      {"chat-template", "MFASERVE_CHAT_TEMPLATE", CLI_STR, &chat_template,
       "auto (tokenizer_config.json's if recognised, else ChatML), chatml, llama3, mistral or plain"},
      {"log-level", "MFASERVE_LOG_LEVEL", CLI_STR, &log_level, "debug, info, warn or error"},
      {"metrics-compat", "MFASERVE_METRICS_COMPAT", CLI_STR, &metrics_compat,
       "vllm: /metrics also under vLLM's names (vllm:..., what routers such as the Gateway API Inference "
       "Extension read); none: mfaserve: names only"},
      {"kv-events-endpoint", "MFASERVE_KV_EVENTS_ENDPOINT", CLI_STR, &kv_events_endpoint,
       "publish KV-cache block stored/removed events in vLLM's format (ZMQ PUB, msgpack) for llm-d's prefix-aware "
       "routing: host * binds (tcp:" "//*:5557), another host is connected to (docs/kv-events.md); off when unset"},
      {"kv-events-topic", "MFASERVE_KV_EVENTS_TOPIC", CLI_STR, &kv_events_topic,
       "first frame of every KV-event message (llm-d reads kv@POD@MODEL)"},
      {"kv-events-queue", "MFASERVE_KV_EVENTS_QUEUE", CLI_INT, &kv_events_queue,
       "KV events waiting for the publisher thread at most; beyond them events are dropped and counted"},
      {"kv-events-replay-endpoint", "MFASERVE_KV_EVENTS_REPLAY_ENDPOINT", CLI_STR, &kv_events_replay,
       "bind a ZMQ ROUTER there that re-sends the last 10000 KV-event batches from a sequence number on "
       "(vLLM's replay protocol); off when unset"},
      {"speculative", "MFASERVE_SPECULATIVE", CLI_STR, &speculative,
       "none, or ngram: speculative decoding by prompt lookup (drafts copied from the sequence's own prompt and "
       "output, verified in one step; outputs distributed as without it; docs/speculative-decoding.md)"},
      {"num-speculative-tokens", "MFASERVE_NUM_SPECULATIVE_TOKENS", CLI_INT, &spec_tokens,
       "draft tokens per sequence and step at most (1..16)"},
      {"ngram-prompt-lookup-max", "MFASERVE_NGRAM_PROMPT_LOOKUP_MAX", CLI_INT, &ngram_max,
       "longest n-gram matched (tried first)"},
      {"ngram-prompt-lookup-min", "MFASERVE_NGRAM_PROMPT_LOOKUP_MIN", CLI_INT, &ngram_min,
       "shortest n-gram matched"},
      {"speculative-config", "MFASERVE_SPECULATIVE_CONFIG", CLI_STR, &spec_config,
       "vLLM's form, JSON: {\"method\":\"ngram\",\"num_speculative_tokens\":K,\"prompt_lookup_max\":N,"
       "\"prompt_lookup_min\":M} (overrides the four flags above)"},
      CLI_ISA_FLAG(isa),
      CLI_MMAP_FLAG(use_mmap),
      CLI_QUANT_FLAG(quant),
  };
  int rc = cli_parse("serve", "Serves the model over an OpenAI-compatible HTTP API.", flags,
                     (int)(sizeof flags / sizeof flags[0]), argc, argv, NULL, NULL);
  if (rc) return rc == CLI_HELP ? 0 : 2;
  mfs_log_level lvl;
  if (mfs_log_level_parse(log_level, &lvl)) {
    fprintf(stderr, "mfaserve serve: --log-level '%s': expected debug, info, warn or error\n", log_level);
    return 2;
  }
  mfs_log_set_level(lvl);
  int metrics_vllm = !strcmp(metrics_compat, "vllm");
  if (!metrics_vllm && strcmp(metrics_compat, "none")) {
    fprintf(stderr, "mfaserve serve: --metrics-compat '%s': expected vllm or none\n", metrics_compat);
    return 2;
  }
  if ((rc = cli_isa_apply(isa))) return rc;
  mfs_log(MFS_LOG_INFO, "engine", "kernels: %s (built: %s; this CPU supports: %s; CPU features: %s)", eng_isa_name(),
          eng_isa_built(), eng_isa_supported(), eng_cpu_features());
  eng_weights_use_mmap(use_mmap);
  if (cli_quant_apply(quant)) return 2;
  mfs_log(MFS_LOG_INFO, "engine", "weights: %s", use_mmap ? "mapped from the files (--mmap)"
                                                          : "read into memory, advised for 2 MiB pages (--mmap maps them instead)");
  kvc_dtype kv_dt;
  if (cli_parse_kv_dtype(kv_dtype, &kv_dt)) {
    fprintf(stderr, "mfaserve serve: --kv-cache-dtype '%s': expected f16, f32 or int8\n", kv_dtype);
    return 2;
  }
  if (kv_events_queue < 2) {
    fprintf(stderr, "mfaserve serve: --kv-events-queue must be >= 2\n");
    return 2;
  }
  if (max_num_seqs < 1 || max_batched < 1 || max_queued < 0 || block_size < 1 || max_model_len < 0) {
    fprintf(stderr, "mfaserve serve: --max-num-seqs, --max-num-batched-tokens and --block-size must be >= 1, "
                    "--max-queued-requests and --max-model-len >= 0\n");
    return 2;
  }
  if (spec_config && cli_parse_spec_config(spec_config, &speculative, &spec_tokens, &ngram_max, &ngram_min)) return 2;
  if (strcmp(speculative, "none") && strcmp(speculative, "ngram")) {
    fprintf(stderr, "mfaserve serve: --speculative '%s': expected none or ngram (prompt lookup; no draft models)\n",
            speculative);
    return 2;
  }
  int spec_on = !strcmp(speculative, "ngram");
  if (spec_on && (spec_tokens < 1 || spec_tokens > SCHED_MAX_SPEC || ngram_min < 1 || ngram_max < ngram_min)) {
    fprintf(stderr, "mfaserve serve: speculative decoding needs 1 <= --num-speculative-tokens <= %d and "
                    "1 <= --ngram-prompt-lookup-min <= --ngram-prompt-lookup-max (got %d, %d, %d)\n",
            SCHED_MAX_SPEC, spec_tokens, ngram_min, ngram_max);
    return 2;
  }
  if (!model) {
    fprintf(stderr, "mfaserve serve: no model: pass --model DIR or set MFASERVE_MODEL (models/default, the bundled "
                    "model, is not next to this binary or in the current directory)\n");
    return 2;
  }
  srv_opts o = {
      .model_dir = model,
      .host = host,
      .port = port,
      .served_model_name = served,
      .api_key = api_key,
      .max_num_seqs = max_num_seqs,
      .max_num_batched_tokens = max_batched,
      .max_queued_requests = max_queued,
      .max_model_len = max_model_len,
      .kv_cache_bytes = kv_bytes,
      .kv_cache_dtype = kv_dt,
      .block_size = block_size,
      .threads = threads,
      .max_body_bytes = max_body,
      .max_connections = max_connections,
      .receive_timeout = receive_timeout,
      .shutdown_timeout = shutdown_timeout,
      .chat_template = chat_template,
      .metrics_vllm = metrics_vllm,
      .kv_events_endpoint = kv_events_endpoint,
      .kv_events_topic = kv_events_topic,
      .kv_events_queue = kv_events_queue,
      .kv_events_replay_endpoint = kv_events_replay,
      .spec_tokens = spec_on ? spec_tokens : 0,
      .spec_ngram_min = ngram_min,
      .spec_ngram_max = ngram_max,
  };
  srv *s;
  char err[512];
  if ((rc = srv_new(&s, &o, err, sizeof err))) {
    fprintf(stderr, "mfaserve serve: %s\n", err);
    return rc == MFS_EINVAL ? 2 : 1;
  }
  rc = srv_run(s);
  srv_free(s);
  return rc ? 1 : 0;
}
