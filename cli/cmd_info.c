/* cmd_info.c: `mfaserve info`: a model's shape and what its KV cache holds;
 * `mfaserve info --cpu`: the kernel levels and the CPU features they need. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "engine.h"
#include "kvcache.h"

int cli_isa_apply(const char *isa) {
  char err[512];
  if (eng_isa_select(isa, err, sizeof err)) {
    fprintf(stderr, "mfaserve: --isa / MFASERVE_ISA: %s\n", err);
    return 2;
  }
  return 0;
}

/* "a,b,c" as a JSON array of strings */
static void json_list(const char *csv) {
  putchar('[');
  for (const char *p = csv; *p;) {
    size_t n = strcspn(p, ",");
    printf("%s\"%.*s\"", p == csv ? "" : ",", (int)n, p);
    p += n + (p[n] == ',');
  }
  putchar(']');
}

static int print_cpu(int json) {
  if (json) {
    printf("{\"isa\":\"%s\",\"built\":", eng_isa_name());
    json_list(eng_isa_built());
    printf(",\"supported\":");
    json_list(eng_isa_supported());
    printf(",\"features\":");
    json_list(eng_cpu_features());
    printf(",\"int8_gemm\":");
    json_list(eng_isa_int8_gemm());
    printf("}\n");
  } else {
    printf("kernel level: %s\n", eng_isa_name());
    printf("built:        %s\n", eng_isa_built());
    printf("this CPU:     %s\n", eng_isa_supported());
    printf("features:     %s\n", eng_cpu_features());
    printf("int8 GEMM:    %s (products with quantized weights: activations rounded to int8 blocks)\n",
           *eng_isa_int8_gemm() ? eng_isa_int8_gemm() : "none");
  }
  return 0;
}

int cmd_info(int argc, char **argv) {
  const char *model = cli_default_model(), *isa = "auto";
  int json = 0, cpu = 0;
  cli_flag flags[] = {
      {"model", "MFASERVE_MODEL", CLI_STR, &model, "model directory"},
      {"json", NULL, CLI_BOOL, &json, "print one JSON object"},
      {"cpu", NULL, CLI_BOOL, &cpu, "print the kernel levels (built, supported, chosen) instead of a model"},
      CLI_ISA_FLAG(isa),
  };
  int rc = cli_parse("info", "Prints a model's shape and KV-cache geometry.", flags, 4, argc, argv, NULL, NULL);
  if (rc) return rc == CLI_HELP ? 0 : 2;
  if ((rc = cli_isa_apply(isa))) return rc;
  if (cpu) return print_cpu(json);
  if (!model) {
    fprintf(stderr, "mfaserve info: pass --model DIR or set MFASERVE_MODEL\n");
    return 2;
  }
  eng_model *m;
  char err[1024];
  eng_weights_use_mmap(1); /* info reads the shapes, not every weight: no need to copy the files */
  if ((rc = eng_model_load(&m, model, NULL, NULL, err, sizeof err))) {
    fprintf(stderr, "mfaserve: cannot load model: %s\n", err);
    return rc == MFS_ENOMEM ? 1 : 2;
  }
  const eng_model_info *in = eng_model_get_info(m);
  int per = in->kv_k_elems + in->kv_v_elems;
  kvc_geom g;
  eng_model_kv_geom(m, 16, KVC_F16, &g);
  size_t f16 = kvc_bytes_per_token(&g);
  eng_model_kv_geom(m, 16, KVC_I8, &g);
  size_t i8 = kvc_bytes_per_token(&g);
  char mla[160] = ""; /* MLA's own sizes (engine.h) */
  if (in->attn == ENG_ATTN_MLA)
    snprintf(mla, sizeof mla, json ? "\"kv_lora_rank\":%d,\"qk_nope_head_dim\":%d,\"qk_rope_head_dim\":%d,\"v_head_dim\":%d,"
                                   : "MLA:        kv_lora_rank=%d qk_nope_head_dim=%d qk_rope_head_dim=%d v_head_dim=%d "
                                     "(q_lora_rank is q_rank; head_dim = nope + rope)\n",
             in->kv_rank, in->nope_dim, in->rope_dim, in->v_dim);
  if (json) {
    printf("{\"architecture\":\"%s\",\"attention\":\"%s\",\"hidden_size\":%d,\"num_layers\":%d,"
           "\"num_heads\":%d,\"num_kv_heads\":%d,\"head_dim\":%d,\"q_rank\":%d,\"intermediate_size\":%d,"
           "\"vocab_size\":%d,\"max_position_embeddings\":%d,%s\"weight_dtype\":\"%s\",\"n_params\":%lld,"
           "\"kv_k_elems\":%d,\"kv_v_elems\":%d,\"kv_elems_per_token_per_layer\":%d,"
           "\"kv_bytes_per_token_f16\":%zu,\"kv_bytes_per_token_f32\":%zu,\"kv_bytes_per_token_int8\":%zu,"
           "\"kv_int8_group\":%d,\"isa\":\"%s\"}\n",
           in->arch, eng_attn_name(in->attn), in->d, in->n_layers, in->n_heads, in->n_kv_heads, in->head_dim,
           in->q_rank, in->inter, in->vocab, in->max_pos, mla, in->weight_dtype, (long long)in->n_params,
           in->kv_k_elems, in->kv_v_elems, per, f16, 2 * f16, i8, g.qgroup, eng_isa_name());
  } else {
    printf("model:      %s (%s attention)\n", model, eng_attn_name(in->attn));
    printf("shape:      d=%d layers=%d heads=%d kv_heads=%d head_dim=%d q_rank=%d inter=%d vocab=%d\n", in->d,
           in->n_layers, in->n_heads, in->n_kv_heads, in->head_dim, in->q_rank, in->inter, in->vocab);
    fputs(mla, stdout);
    printf("parameters: %.2fM (%s)\n", in->n_params / 1e6, in->weight_dtype);
    printf("kernels:    %s (this CPU supports %s)\n", eng_isa_name(), eng_isa_supported());
    printf("KV cache:   %d elements per token per layer; bytes per token: %zu in F16, %zu in F32, %zu in int8 "
           "(a scale per %d elements)\n",
           per, f16, 2 * f16, i8, g.qgroup);
  }
  eng_model_free(m);
  return 0;
}
