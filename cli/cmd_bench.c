/* cmd_bench.c: `mfaserve bench engine`: prefill and batch-1 decode speed,
 * each beside ceilings measured in the same run; `bench batch`: aggregate
 * decode at several concurrencies, beside the same compute ceilings.
 * Ceilings: the running kernel level's FMA peak (no memory traffic), OpenBLAS
 * sgemm (whatever kernels OPENBLAS_CORETYPE lets it pick: named in the
 * output), read bandwidth over a buffer larger than the caches (DRAM) and
 * over one the size of the weights a decode step reads (what a cache that
 * holds much of the model makes of it). Medians of --reps. */
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

/* OpenBLAS sgemm FLOP/s on the context's threads, 512 x 2048 x max(d, 512) */
static double sgemm_rate(eng_ctx *c, int d) {
  int m = 512, n = 2048, k = MFS_MAX(d, 512);
  return 2.0 * m * n * k / eng_bench_sgemm(c, m, n, k, 3);
}

/* Attention FLOPs per query token, layer and cached key: QK and PV over
 * every head, 2 per multiply-add. MLA attends in the absorbed form: keys of
 * kv_rank + rope_dim, values of kv_rank (the latent). */
static double attn_flops_per_key(const eng_model_info *in) {
  int mla = in->attn == ENG_ATTN_MLA;
  double kd = mla ? in->kv_k_elems : in->head_dim, vd = mla ? in->kv_rank : in->head_dim;
  return 2.0 * in->n_heads * (kd + vd);
}

static int bench_engine(int argc, char **argv) {
  cli_session_opts o = {0};
  o.block_size = 16;
  o.model = cli_default_model();
  const char *kv = "f16";
  int prompt = 512, gen = 128, reps = 3, json = 0;
  cli_flag flags[] = {
      {"model", "MFASERVE_MODEL", CLI_STR, &o.model, "model directory"},
      {"threads", "MFASERVE_THREADS", CLI_INT, &o.threads, "worker threads (0: all cores)"},
      {"kv-dtype", "MFASERVE_KV_CACHE_DTYPE", CLI_STR, &kv, "KV-cache storage: f16, f32 or int8"},
      {"prompt-len", NULL, CLI_INT, &prompt, "prefill length in tokens"},
      {"gen-len", NULL, CLI_INT, &gen, "decode steps"},
      {"reps", NULL, CLI_INT, &reps, "repetitions (medians are reported)"},
      {"json", NULL, CLI_BOOL, &json, "print one JSON object"},
      CLI_ISA_FLAG(o.isa),
      CLI_MMAP_FLAG(o.mmap),
      CLI_QUANT_FLAG(o.quantize),
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
  double *pk = calloc((size_t)reps, sizeof *pk), *bww = calloc((size_t)reps, sizeof *bww);
  size_t ws_bytes = (size_t)in->weight_bytes_per_token;
  for (int i = 0; i < prompt + gen; i++) toks[i] = (int32_t)((i * 7919u + 13) % (unsigned)V);
  /* FLOPs per prefill token: 2 per weight of the matrices (not lm_head for
   * all but the last), plus attention (QK and PV over the causal half). */
  double mat_flops = 2.0 * ((double)in->matmul_params - (double)V * in->d);
  double attn_flops = attn_flops_per_key(in) * (prompt / 2.0) * in->n_layers;
  double flops_tok = mat_flops + attn_flops;
  for (int r = 0; r < reps && !rc; r++) {
    /* ceilings first, in the same run */
    bw[r] = eng_bench_bandwidth(s.c, (size_t)512 << 20, 3);
    bww[r] = eng_bench_bandwidth(s.c, ws_bytes, 3);
    pk[r] = eng_bench_fma_peak(s.c, 3);
    sg[r] = sgemm_rate(s.c, in->d);
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
  double peak = median(pk, reps), bwws = median(bww, reps);
  const char *isa = eng_isa_name(), *blas = eng_bench_blas_core();
  /* bytes per decode step: weights + the KV read at the mean context */
  kvc_geom g = *kvc_pool_geom(s.kv);
  double kv_bytes = (double)kvc_bytes_per_token(&g) * (prompt + gen / 2.0);
  double bytes_tok = (double)in->weight_bytes_per_token + kv_bytes;
  double decode_ceiling = bwm / bytes_tok, decode_ceiling_ws = bwws / bytes_tok;
  double prefill_gflops = prefill * flops_tok / 1e9;
  if (json) {
    printf("{\"model\":\"%s\",\"attention\":\"%s\",\"weights\":\"%s\",\"kv_dtype\":\"%s\",\"isa\":\"%s\","
           "\"threads\":%d,\"params\":%lld,\"prompt_len\":%d,\"gen_len\":%d,\"prefill_tokens_per_s\":%.2f,\"prefill_gflops\":%.2f,"
           "\"fma_peak_gflops\":%.2f,\"prefill_vs_peak\":%.4f,\"blas_core\":\"%s\",\"sgemm_gflops\":%.2f,"
           "\"prefill_vs_sgemm\":%.4f,\"decode_tokens_per_s\":%.2f,\"decode_bytes_per_token\":%.0f,"
           "\"bandwidth_gbs\":%.3f,\"decode_ceiling_tokens_per_s\":%.2f,\"decode_vs_bandwidth\":%.4f,"
           "\"bandwidth_weights_size_gbs\":%.3f,\"decode_vs_bandwidth_weights_size\":%.4f}\n",
           o.model, eng_attn_name(in->attn), in->weight_dtype, kvc_dtype_name(o.kv_dtype), isa, nth,
           (long long)in->n_params, prompt, gen, prefill,
           prefill_gflops, peak / 1e9, prefill_gflops * 1e9 / peak, blas, sgm / 1e9, prefill_gflops * 1e9 / sgm,
           decode, bytes_tok, bwm / 1e9, decode_ceiling, decode / decode_ceiling, bwws / 1e9,
           decode / decode_ceiling_ws);
  } else {
    printf("model %s: %s attention, %.1fM parameters (%s), KV %s, kernel level %s, %d threads, medians of %d runs\n",
           o.model, eng_attn_name(in->attn), in->n_params / 1e6, in->weight_dtype, kvc_dtype_name(o.kv_dtype), isa,
           nth, reps);
    printf("prefill (%d tokens):  %8.1f tokens/s = %6.1f GFLOP/s   ceilings: %s FMA peak %6.1f GFLOP/s -> %5.1f%%;"
           " OpenBLAS sgemm (%s) %6.1f -> %5.1f%%\n",
           prompt, prefill, prefill_gflops, isa, peak / 1e9, 100 * prefill_gflops * 1e9 / peak, blas, sgm / 1e9,
           100 * prefill_gflops * 1e9 / sgm);
    printf("decode (batch 1):     %8.1f tokens/s                    ceilings: %.1f MB per token at %.1f GB/s (DRAM) ="
           " %.1f tokens/s -> %5.1f%%; at %.1f GB/s (a buffer of that size) = %.1f -> %5.1f%%\n",
           decode, bytes_tok / 1e6, bwm / 1e9, decode_ceiling, 100 * decode / decode_ceiling, bwws / 1e9,
           decode_ceiling_ws, 100 * decode / decode_ceiling_ws);
  }
  free(logits);
  free(toks);
  free(pf);
  free(dc);
  free(bw);
  free(sg);
  free(pk);
  free(bww);
  cli_session_close(&s);
  return 0;
}

/* Batched decode: N sequences, each with a prefilled prompt, decoding one
 * token per step together, as GFLOP/s beside the level's FMA peak and
 * OpenBLAS's sgemm measured in the same run; and how many ctx-token
 * sequences a pool of --pool-bytes really holds (sequences are reserved
 * until the pool says full). */
static int bench_batch(int argc, char **argv) {
  const char *model = cli_default_model(), *kv = "f16", *conc_s = "1,4,16,64";
  int threads = 0, prompt = 128, steps = 32, reps = 3, json = 0, block = 16, ctx = 1024;
  uint64_t pool_bytes = 1ull << 30;
  const char *isa = NULL;
  int use_mmap = 0;
  const char *quant = "none";
  cli_flag flags[] = {
      {"model", "MFASERVE_MODEL", CLI_STR, &model, "model directory"},
      {"threads", "MFASERVE_THREADS", CLI_INT, &threads, "worker threads (0: all cores)"},
      {"kv-dtype", "MFASERVE_KV_CACHE_DTYPE", CLI_STR, &kv, "KV-cache storage: f16, f32 or int8"},
      {"block-size", "MFASERVE_BLOCK_SIZE", CLI_INT, &block, "KV-cache block size"},
      {"concurrency", NULL, CLI_STR, &conc_s, "comma-separated sequence counts"},
      {"prompt-len", NULL, CLI_INT, &prompt, "tokens in each sequence before decoding"},
      {"steps", NULL, CLI_INT, &steps, "decode steps timed per concurrency"},
      {"reps", NULL, CLI_INT, &reps, "repetitions (medians are reported)"},
      {"pool-bytes", NULL, CLI_BYTES, &pool_bytes, "pool size for the capacity count"},
      {"capacity-ctx", NULL, CLI_INT, &ctx, "sequence length for the capacity count"},
      {"json", NULL, CLI_BOOL, &json, "print one JSON object"},
      CLI_ISA_FLAG(isa),
      CLI_MMAP_FLAG(use_mmap),
      CLI_QUANT_FLAG(quant),
  };
  int rc = cli_parse("bench batch", "Measures aggregate decode at several concurrencies and KV capacity.", flags,
                     sizeof flags / sizeof flags[0], argc, argv, NULL, NULL);
  if (rc) return rc == CLI_HELP ? 0 : 2;
  if ((rc = cli_isa_apply(isa))) return rc;
  eng_weights_use_mmap(use_mmap);
  if (cli_quant_apply(quant)) return 2;
  kvc_dtype dt;
  int32_t *conc;
  int nconc;
  if (cli_parse_kv_dtype(kv, &dt) || cli_parse_ids(conc_s, &conc, &nconc) || nconc < 1 || prompt < 1 || steps < 1 ||
      reps < 1 || block < 1 || ctx < 1) {
    fprintf(stderr, "mfaserve bench batch: bad flag values (see --help)\n");
    return 2;
  }
  if (!model) {
    fprintf(stderr, "mfaserve bench batch: pass --model DIR or set MFASERVE_MODEL\n");
    free(conc);
    return 2;
  }
  eng_model *m;
  char err[1024];
  if ((rc = eng_model_load(&m, model, NULL, NULL, err, sizeof err))) {
    fprintf(stderr, "mfaserve: cannot load model: %s\n", err);
    free(conc);
    return rc == MFS_ENOMEM ? 1 : 2;
  }
  const eng_model_info *in = eng_model_get_info(m);
  int maxc = 0;
  for (int i = 0; i < nconc; i++) maxc = MFS_MAX(maxc, conc[i]);
  if (prompt + steps + 1 > in->max_pos) {
    fprintf(stderr, "mfaserve bench batch: prompt-len + steps exceed the model's context\n");
    eng_model_free(m);
    free(conc);
    return 2;
  }
  /* capacity: reserve ctx-token sequences in a pool of pool_bytes */
  kvc_geom g;
  eng_model_kv_geom(m, block, dt, &g);
  kvc_pool *cap_pool;
  long capacity = -1;
  if (kvc_pool_new(&cap_pool, &g, pool_bytes) == 0) {
    capacity = 0;
    for (;;) {
      kvc_seq *q;
      if (kvc_seq_new(cap_pool, &q)) break;
      if (kvc_seq_reserve(cap_pool, q, ctx) != 0) {
        kvc_seq_free(cap_pool, q);
        break;
      }
      capacity++;
    }
    kvc_pool_free(cap_pool); /* frees its sequences too */
  }
  eng_ctx *c = NULL;
  eng_ctx_opts eo = {threads, MFS_MAX(prompt, maxc), maxc, prompt + steps + 1};
  kvc_pool *pool = NULL;
  uint64_t need = (uint64_t)maxc * ((prompt + steps + block) / block + 1) * kvc_block_bytes(&g);
  kvc_seq **seqs = calloc((size_t)maxc, sizeof *seqs);
  eng_seq_step *st = calloc((size_t)maxc, sizeof *st);
  int32_t *toks = malloc((size_t)MFS_MAX(prompt, maxc) * sizeof *toks);
  float *logits = malloc((size_t)maxc * in->vocab * sizeof *logits);
  double *tps = calloc((size_t)nconc, sizeof *tps), *runs = calloc((size_t)reps, sizeof *runs);
  if (!seqs || !st || !toks || !logits || !tps || !runs || eng_ctx_new(&c, m, &eo) || kvc_pool_new(&pool, &g, need)) {
    fprintf(stderr, "mfaserve bench batch: out of memory\n");
    rc = 1;
    goto out;
  }
  for (int i = 0; i < MFS_MAX(prompt, maxc); i++) toks[i] = (int32_t)((i * 7919u + 13) % (unsigned)in->vocab);
  /* ceilings, in the same run */
  double peak = eng_bench_fma_peak(c, 3), sgemm = sgemm_rate(c, in->d);
  /* FLOPs per decoded token: 2 per matrix weight (lm_head included), plus
   * attention (QK and PV) at the mean context of the timed steps */
  double flops_tok = 2.0 * (double)in->matmul_params +
                     attn_flops_per_key(in) * (prompt + steps / 2.0) * in->n_layers;
  for (int ci = 0; ci < nconc; ci++) {
    int n = conc[ci];
    for (int r = -1; r < reps; r++) { /* r = -1 warms up (page faults, sleeping workers) */
      for (int i = 0; i < n; i++) { /* prefill each sequence alone */
        kvc_seq_new(pool, &seqs[i]);
        kvc_seq_reserve(pool, seqs[i], prompt);
        int nb;
        eng_seq_step one = {0, prompt, kvc_seq_blocks(seqs[i], &nb), ENG_LOGITS_NONE};
        eng_batch b = {1, &one, toks, pool, NULL, NULL};
        if ((rc = eng_forward(c, &b))) goto out;
        kvc_seq_commit(pool, seqs[i], toks, prompt);
      }
      double t0 = mfs_now();
      for (int k = 0; k < steps; k++) {
        for (int i = 0; i < n; i++) {
          int len = kvc_seq_len(seqs[i]), nb;
          kvc_seq_reserve(pool, seqs[i], len + 1);
          st[i] = (eng_seq_step){len, 1, kvc_seq_blocks(seqs[i], &nb), ENG_LOGITS_LAST};
        }
        eng_batch b = {n, st, toks, pool, logits, NULL};
        if ((rc = eng_forward(c, &b))) goto out;
        for (int i = 0; i < n; i++) kvc_seq_commit(pool, seqs[i], toks + i, 1);
      }
      if (r >= 0) runs[r] = (double)n * steps / (mfs_now() - t0);
      for (int i = 0; i < n; i++) kvc_seq_free(pool, seqs[i]);
    }
    tps[ci] = median(runs, reps);
  }
  const char *blas = eng_bench_blas_core();
  isa = eng_isa_name();
  if (json) {
    printf("{\"model\":\"%s\",\"attention\":\"%s\",\"weights\":\"%s\",\"kv_dtype\":\"%s\",\"isa\":\"%s\","
           "\"threads\":%d,\"kv_bytes_per_token\":%zu,"
           "\"pool_bytes\":%llu,\"capacity_ctx\":%d,\"capacity_sequences\":%ld,\"fma_peak_gflops\":%.2f,"
           "\"blas_core\":\"%s\",\"sgemm_gflops\":%.2f,\"flops_per_token\":%.0f,\"decode\":[",
           model, eng_attn_name(in->attn), in->weight_dtype, kvc_dtype_name(dt), isa, eng_ctx_threads(c),
           kvc_bytes_per_token(&g),
           (unsigned long long)pool_bytes, ctx, capacity, peak / 1e9, blas, sgemm / 1e9, flops_tok);
    for (int ci = 0; ci < nconc; ci++)
      printf("%s{\"concurrency\":%d,\"tokens_per_s\":%.2f,\"vs_batch1\":%.3f,\"gflops\":%.2f,"
             "\"vs_peak\":%.4f,\"vs_sgemm\":%.4f}",
             ci ? "," : "", conc[ci], tps[ci], tps[ci] / tps[0] * conc[0], tps[ci] * flops_tok / 1e9,
             tps[ci] * flops_tok / peak, tps[ci] * flops_tok / sgemm);
    printf("]}\n");
  } else {
    printf("model %s: %s attention, %zu KV bytes per token (%s), kernel level %s, %d threads\n", model,
           eng_attn_name(in->attn), kvc_bytes_per_token(&g), kv, isa, eng_ctx_threads(c));
    printf("capacity: %ld sequences of %d tokens in a %.2f GiB pool\n", capacity, ctx, pool_bytes / 1073741824.0);
    printf("ceilings: %s FMA peak %.1f GFLOP/s; OpenBLAS sgemm (%s) %.1f GFLOP/s; %.1f MFLOP per token\n", isa,
           peak / 1e9, blas, sgemm / 1e9, flops_tok / 1e6);
    for (int ci = 0; ci < nconc; ci++)
      printf("decode at %3d sequences: %9.1f tokens/s aggregate (%.2fx the first row) = %6.1f GFLOP/s -> %5.1f%% of"
             " peak, %5.1f%% of sgemm\n",
             conc[ci], tps[ci], tps[ci] / tps[0], tps[ci] * flops_tok / 1e9, 100 * tps[ci] * flops_tok / peak,
             100 * tps[ci] * flops_tok / sgemm);
  }
out:
  if (rc > 0 || rc < 0) fprintf(stderr, "mfaserve bench batch: failed: %s\n", mfs_strerror(rc));
  free(seqs);
  free(st);
  free(toks);
  free(logits);
  free(tps);
  free(runs);
  free(conc);
  kvc_pool_free(pool);
  eng_ctx_free(c);
  eng_model_free(m);
  return rc ? 1 : 0;
}

int cmd_bench(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "batch")) return bench_batch(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "engine")) return bench_engine(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "serve")) return bench_serve_main(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "mask")) return cmd_bench_mask(argc - 1, argv + 1);
  if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("usage: mfaserve bench engine|batch|serve|mask [flags]   (mfaserve bench engine --help)\n");
    return 0;
  }
  fprintf(stderr, "usage: mfaserve bench engine|batch|serve|mask [flags]\n");
  return 2;
}
