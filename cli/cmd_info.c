/* cmd_info.c: `mfaserve info`: a model's shape and what its KV cache holds. */
#include <stdio.h>

#include "cli.h"
#include "common.h"
#include "engine.h"
#include "kvcache.h"

int cmd_info(int argc, char **argv) {
  const char *model = cli_default_model();
  int json = 0;
  cli_flag flags[] = {
      {"model", "MFASERVE_MODEL", CLI_STR, &model, "model directory"},
      {"json", NULL, CLI_BOOL, &json, "print one JSON object"},
  };
  int rc = cli_parse("info", "Prints a model's shape and KV-cache geometry.", flags, 2, argc, argv, NULL, NULL);
  if (rc) return rc == CLI_HELP ? 0 : 2;
  if (!model) {
    fprintf(stderr, "mfaserve info: pass --model DIR or set MFASERVE_MODEL\n");
    return 2;
  }
  eng_model *m;
  char err[1024];
  if ((rc = eng_model_load(&m, model, NULL, NULL, err, sizeof err))) {
    fprintf(stderr, "mfaserve: cannot load model: %s\n", err);
    return rc == MFS_ENOMEM ? 1 : 2;
  }
  const eng_model_info *in = eng_model_get_info(m);
  int per = in->kv_k_elems + in->kv_v_elems;
  kvc_geom g;
  eng_model_kv_geom(m, 16, KVC_F16, &g);
  size_t f16 = kvc_bytes_per_token(&g);
  if (json) {
    printf("{\"architecture\":\"%s\",\"attention\":\"%s\",\"hidden_size\":%d,\"num_layers\":%d,"
           "\"num_heads\":%d,\"num_kv_heads\":%d,\"head_dim\":%d,\"q_rank\":%d,\"intermediate_size\":%d,"
           "\"vocab_size\":%d,\"max_position_embeddings\":%d,\"weight_dtype\":\"%s\",\"n_params\":%lld,"
           "\"kv_k_elems\":%d,\"kv_v_elems\":%d,\"kv_elems_per_token_per_layer\":%d,"
           "\"kv_bytes_per_token_f16\":%zu,\"kv_bytes_per_token_f32\":%zu}\n",
           in->arch, eng_attn_name(in->attn), in->d, in->n_layers, in->n_heads, in->n_kv_heads, in->head_dim,
           in->q_rank, in->inter, in->vocab, in->max_pos, in->weight_dtype, (long long)in->n_params,
           in->kv_k_elems, in->kv_v_elems, per, f16, 2 * f16);
  } else {
    printf("model:      %s (%s attention)\n", model, eng_attn_name(in->attn));
    printf("shape:      d=%d layers=%d heads=%d kv_heads=%d head_dim=%d q_rank=%d inter=%d vocab=%d\n", in->d,
           in->n_layers, in->n_heads, in->n_kv_heads, in->head_dim, in->q_rank, in->inter, in->vocab);
    printf("parameters: %.2fM (%s)\n", in->n_params / 1e6, in->weight_dtype);
    printf("KV cache:   %d elements per token per layer; %zu bytes per token in F16, %zu in F32\n", per, f16,
           2 * f16);
  }
  eng_model_free(m);
  return 0;
}
