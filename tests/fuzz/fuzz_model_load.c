/* fuzz_model_load.c: eng_model_load on a whole model directory made from
 * the input, then (when the model is small) one forward step.
 *
 * Input layout: 2 bytes little-endian L, then L bytes of config.json (fewer
 * if the input is shorter), then the rest is model.safetensors. The seeds
 * are tiny valid models of each attention kind and dtype, so mutations hit
 * shape, dtype and key checks across config and tensors together.
 *
 * Properties: a failure leaves a message; a success gives the KV geometry
 * the config implies, and a 3-token prefill plus a 1-token decode over a
 * paged pool return 0 with finite-or-not logits written (no memory error;
 * NaN weights are legal input). */
#include <string.h>

#include "engine.h"
#include "common.h"
#include "fuzz_util.h"
#include "kvcache.h"

static void forward_once(const eng_model *m) {
  const eng_model_info *in = eng_model_get_info(m);
  /* Keep a step cheap: skip what would take long per input. */
  if ((int64_t)in->d * in->n_layers * (in->inter + in->n_heads * in->head_dim) > (1 << 20) ||
      (int64_t)in->n_layers * in->n_heads * (in->kv_k_elems + in->v_dim) * (in->nope_dim + in->kv_rank) > (1 << 20) ||
      (int64_t)in->vocab * in->d > (1 << 20))
    return;
  /* the step below is 3 prompt tokens then 1: a model whose context is
   * shorter refuses it, rightly (regress-max-pos-2) */
  if (in->max_pos < 4) return;
  eng_ctx_opts o = {.n_threads = 1, .max_tokens = 8, .max_seqs = 2, .max_ctx = 16};
  eng_ctx *c;
  if (eng_ctx_new(&c, m, &o) != 0) return;
  kvc_geom g;
  eng_model_kv_geom(m, 2, KVC_F32, &g);
  kvc_pool *p;
  size_t bb = kvc_block_bytes(&g);
  FUZZ_CHECK(bb > 0, "KV geometry of a loaded model is invalid");
  if (kvc_pool_new(&p, &g, (uint64_t)bb * 8) != 0) {
    eng_ctx_free(c);
    return;
  }
  kvc_seq *s;
  FUZZ_CHECK(kvc_seq_new(p, &s) == 0, "seq");
  float *logits = malloc((size_t)in->vocab * 3 * sizeof *logits); /* [3][vocab] */
  FUZZ_CHECK(logits != NULL, "malloc");
  int32_t toks[3] = {0, in->vocab - 1, in->vocab / 2};
  FUZZ_CHECK(kvc_seq_reserve(p, s, 3) == 0, "reserve");
  int nb;
  const int32_t *bt = kvc_seq_blocks(s, &nb);
  eng_seq_step st = {.n_past = 0, .n_new = 3, .block_table = bt, .logits = ENG_LOGITS_ALL};
  eng_batch b = {.n_seqs = 1, .seqs = &st, .tokens = toks, .kv = p, .logits = logits};
  int rc = eng_forward(c, &b);
  FUZZ_CHECK(rc == 0, "prefill forward: %d", rc);
  FUZZ_CHECK(kvc_seq_commit(p, s, toks, 3) == 0, "commit");
  FUZZ_CHECK(kvc_seq_reserve(p, s, 4) == 0, "reserve");
  bt = kvc_seq_blocks(s, &nb);
  eng_seq_step st2 = {.n_past = 3, .n_new = 1, .block_table = bt, .logits = ENG_LOGITS_LAST};
  b.seqs = &st2;
  rc = eng_forward(c, &b);
  FUZZ_CHECK(rc == 0, "decode forward: %d", rc);
  int32_t bad = in->vocab;
  b.tokens = &bad;
  FUZZ_CHECK(eng_forward(c, &b) == MFS_EINVAL, "token id == vocab accepted");
  free(logits);
  kvc_seq_free(p, s);
  kvc_pool_free(p);
  eng_ctx_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t L = (size_t)data[0] | (size_t)data[1] << 8;
  if (L > size - 2) L = size - 2;
  fuzz_write("config.json", data + 2, L);
  fuzz_write("model.safetensors", data + 2 + L, size - 2 - L);
  eng_model *m = NULL;
  char err[512] = "";
  int rc = eng_model_load(&m, fuzz_tmpdir(), NULL, NULL, err, sizeof err);
  if (rc != 0) {
    FUZZ_CHECK(rc < 0 && m == NULL, "rc %d", rc);
    FUZZ_CHECK(err[0] != 0, "failure without a message");
    return 0;
  }
  const eng_model_info *in = eng_model_get_info(m);
  kvc_geom g;
  eng_model_kv_geom(m, 16, KVC_F16, &g);
  FUZZ_CHECK(g.n_layers == in->n_layers && g.k_elems == in->kv_k_elems && g.v_elems == in->kv_v_elems,
             "kv geometry");
  FUZZ_CHECK(in->n_params > 0, "n_params %lld", (long long)in->n_params);
  forward_once(m);
  eng_model_free(m);
  return 0;
}
