/* cmd_bench.c: `mfaserve bench engine`: prefill and batch-1 decode speed,
 * each beside a ceiling measured in the same run (sgemm rate for prefill,
 * read bandwidth / weight bytes per token for decode). Medians of --reps. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "session.h"

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int bench_engine(int argc, char **argv) {
  cli_session_opts o = {0};
  o.block_size = 16;
  const char *kv = "f16";
  int prompt = 512, gen = 128, reps = 3, json = 0;
  cli_flag flags[] = {
      {"model", "MFASERVE_MODEL", CLI_STR, &o.model, "model directory"},
      {"threads", "MFASERVE_THREADS", CLI_INT, &o.threads, "worker threads (0: all cores)"},
      {"kv-dtype", "MFASERVE_KV_CACHE_DTYPE", CLI_STR, &kv, "KV-cache storage: f16 or f32"},
      {"prompt-len", NULL, CLI_INT, &prompt, "prefill length in tokens"},
      {"gen-len", NULL, CLI_INT, &gen, "decode steps"},
      {"reps", NULL, CLI_INT, &reps, "repetitions (medians are reported)"},
      {"json", NULL, CLI_BOOL, &json, "print one JSON object"},
  };
  int rc = cli_parse("bench engine", "Measures prefill and batch-1 decode against this machine's ceilings.",
                     flags, sizeof flags / sizeof flags[0], argc, argv, NULL, NULL);
  if (rc) return rc == CLI_HELP ? 0 : 2;
  if (cli_parse_kv_dtype(kv, &o.kv_dtype) || prompt < 1 || gen < 1 || reps < 1) {
    fprintf(stderr, "mfaserve bench engine: bad --kv-dtype, --prompt-len, --gen-len or --reps\n");
    return 2;
  }
  o.chunk = prompt;
  o.quiet = json;
  cli_session s;
  if ((rc = cli_session_open(&s, &o))) return rc;
  const eng_model_info *in = s.info;
  if (prompt + gen > s.max_ctx) {
    fprintf(stderr, "mfaserve bench engine: prompt-len + gen-len exceed the context (%d)\n", s.max_ctx);
    cli_session_close(&s);
    return 2;
  }
  int V = in->vocab, nth = eng_ctx_threads(s.c);
  float *logits = malloc((size_t)V * sizeof *logits);
  int32_t *toks = malloc((size_t)(prompt + gen) * sizeof *toks);
  double *pf = calloc((size_t)reps, sizeof *pf), *dc = calloc((size_t)reps, sizeof *dc);
  double *bw = calloc((size_t)reps, sizeof *bw), *sg = calloc((size_t)reps, sizeof *sg);
  for (int i = 0; i < prompt + gen; i++) toks[i] = (int32_t)((i * 7919u + 13) % (unsigned)V);
  /* FLOPs per prefill token: 2 per weight of the matrices (not lm_head for
   * all but the last), plus attention (QK and PV over the causal half). */
  double mat_flops = 2.0 * ((double)in->weight_bytes_per_token / 4 - (double)V * in->d);
  double attn_flops = 4.0 * in->n_heads * in->head_dim * (prompt / 2.0) * in->n_layers;
  double flops_tok = mat_flops + attn_flops;
  for (int r = 0; r < reps && !rc; r++) {
    /* ceilings first, in the same run */
    bw[r] = eng_bench_bandwidth(s.c, (size_t)512 << 20, 3);
    int m = 512, n = 2048, k = MFS_MAX(in->d, 512);
    double t = eng_bench_sgemm(s.c, m, n, k, 3);
    sg[r] = 2.0 * m * n * k / t;
    cli_session_reset(&s);
    double t0 = mfs_now();
    rc = cli_session_feed(&s, toks, prompt, ENG_LOGITS_LAST, logits);
    double t1 = mfs_now();
    pf[r] = prompt / (t1 - t0);
    for (int i = 0; i < gen && !rc; i++) rc = cli_session_feed(&s, toks + prompt + i, 1, ENG_LOGITS_LAST, logits);
    dc[r] = gen / (mfs_now() - t1);
  }
  if (rc) {
    fprintf(stderr, "mfaserve bench engine: step failed: %s\n", mfs_strerror(rc));
    cli_session_close(&s);
    return 1;
  }
  double prefill = median(pf, reps), decode = median(dc, reps), bwm = median(bw, reps), sgm = median(sg, reps);
  /* bytes per decode step: weights + the KV read at the mean context */
  kvc_geom g = *kvc_pool_geom(s.kv);
  double kv_bytes = (double)kvc_bytes_per_token(&g) * (prompt + gen / 2.0);
  double bytes_tok = (double)in->weight_bytes_per_token + kv_bytes;
  double decode_ceiling = bwm / bytes_tok;
  double prefill_gflops = prefill * flops_tok / 1e9;
  if (json) {
    printf("{\"model\":\"%s\",\"attention\":\"%s\",\"threads\":%d,\"params\":%lld,\"prompt_len\":%d,\"gen_len\":%d,"
           "\"prefill_tokens_per_s\":%.2f,\"prefill_gflops\":%.2f,\"sgemm_gflops\":%.2f,\"prefill_vs_sgemm\":%.4f,"
           "\"decode_tokens_per_s\":%.2f,\"decode_bytes_per_token\":%.0f,\"bandwidth_gbs\":%.3f,"
           "\"decode_ceiling_tokens_per_s\":%.2f,\"decode_vs_bandwidth\":%.4f}\n",
           o.model, eng_attn_name(in->attn), nth, (long long)in->n_params, prompt, gen, prefill, prefill_gflops,
           sgm / 1e9, prefill_gflops * 1e9 / sgm, decode, bytes_tok, bwm / 1e9, decode_ceiling,
           decode / decode_ceiling);
  } else {
    printf("model %s: %s attention, %.1fM parameters, %d threads, medians of %d runs\n", o.model,
           eng_attn_name(in->attn), in->n_params / 1e6, nth, reps);
    printf("prefill (%d tokens):  %8.1f tokens/s = %6.1f GFLOP/s   ceiling: sgemm %6.1f GFLOP/s -> %5.1f%%\n",
           prompt, prefill, prefill_gflops, sgm / 1e9, 100 * prefill_gflops * 1e9 / sgm);
    printf("decode (batch 1):     %8.1f tokens/s                    ceiling: %.1f GB/s / %.1f MB per token = "
           "%.1f tokens/s -> %5.1f%%\n",
           decode, bwm / 1e9, bytes_tok / 1e6, decode_ceiling, 100 * decode / decode_ceiling);
  }
  free(logits);
  free(toks);
  free(pf);
  free(dc);
  free(bw);
  free(sg);
  cli_session_close(&s);
  return 0;
}

int cmd_bench(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "engine")) return bench_engine(argc - 1, argv + 1);
  if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("usage: mfaserve bench engine [flags]   (mfaserve bench engine --help)\n");
    return 0;
  }
  fprintf(stderr, "usage: mfaserve bench engine [flags]\n");
  return 2;
}
