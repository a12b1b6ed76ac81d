/* config.c: reads config.json into eng_model_info (HF key names, see
 * model-format.md; DeepseekV2ForCausalLM's in docs/mla-format.md). Every
 * missing or mistyped key is an error that names config.json, the key, and
 * what was expected. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

typedef struct {
  const char *path;
  char *err;
  size_t errlen;
} cfg_ctx;

static int cfail(cfg_ctx *c, int code, const char *fmt, ...) {
  int n = snprintf(c->err, c->errlen, "%s: ", c->path);
  va_list ap;
  va_start(ap, fmt);
  if (n >= 0 && (size_t)n < c->errlen) vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
  va_end(ap);
  return code;
}

/* Reads an integer key. Absent: *out = def, unless def < 0 (required). */
static int get_int(cfg_ctx *c, const cJSON *j, const char *key, int def, int minv, int *out) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
  if (!x || cJSON_IsNull(x)) {
    if (def == -1) return cfail(c, MFS_EFORMAT, "key '%s' is missing (expected an integer >= %d)", key, minv);
    *out = def;
    return 0;
  }
  /* sizes this large would overflow products of them (and no model has them) */
  if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < minv ||
      x->valuedouble > 16777216.0)
    return cfail(c, MFS_EFORMAT, "key '%s' must be an integer from %d to 16777216", key, minv);
  *out = (int)x->valuedouble;
  return 0;
}

static int get_num(cfg_ctx *c, const cJSON *j, const char *key, double def, double *out) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
  if (!x || cJSON_IsNull(x)) {
    *out = def;
    return 0;
  }
  /* it is used as a float: it must stay positive and finite there */
  if (!cJSON_IsNumber(x) || !(x->valuedouble >= 1e-30 && x->valuedouble <= 1e30))
    return cfail(c, MFS_EFORMAT, "key '%s' must be a positive number from 1e-30 to 1e30", key);
  *out = x->valuedouble;
  return 0;
}

static int get_bool(cfg_ctx *c, const cJSON *j, const char *key, int def, int *out) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
  if (!x || cJSON_IsNull(x)) {
    *out = def;
    return 0;
  }
  if (!cJSON_IsBool(x)) return cfail(c, MFS_EFORMAT, "key '%s' must be true or false", key);
  *out = cJSON_IsTrue(x);
  return 0;
}

/* DeepseekV2ForCausalLM (docs/mla-format.md): the head sizes, and refusals of
 * what the engine does not run (routed experts on any layer, biases). */
static int mla_config(cfg_ctx *c, const cJSON *j, eng_model_info *m) {
  int rc, experts = 0, first_dense = 0, freq = 1, bias = 0;
  if ((rc = get_int(c, j, "q_lora_rank", 0, 0, &m->q_rank)) || (rc = get_int(c, j, "kv_lora_rank", -1, 1, &m->kv_rank)) ||
      (rc = get_int(c, j, "qk_nope_head_dim", -1, 1, &m->nope_dim)) ||
      (rc = get_int(c, j, "qk_rope_head_dim", -1, 2, &m->rope_dim)) ||
      (rc = get_int(c, j, "v_head_dim", -1, 1, &m->v_dim)) || (rc = get_int(c, j, "n_routed_experts", 0, 0, &experts)) ||
      (rc = get_int(c, j, "first_k_dense_replace", 0, 0, &first_dense)) ||
      (rc = get_int(c, j, "moe_layer_freq", 1, 1, &freq)) || (rc = get_bool(c, j, "attention_bias", 0, &bias)))
    return rc;
  if (m->rope_dim % 2 || m->rope_dim > MLA_ROPE_MAX)
    return cfail(c, MFS_EFORMAT, "qk_rope_head_dim %d must be even (RoPE rotates pairs) and at most %d", m->rope_dim,
                 MLA_ROPE_MAX);
  /* HF's DeepseekV2: layer i is MoE when n_routed_experts is set, i >= first_k_dense_replace
   * and i % moe_layer_freq == 0 */
  for (int i = first_dense; experts > 0 && i < m->n_layers; i++)
    if (i % freq == 0)
      return cfail(c, MFS_EUNSUPPORTED,
                   "key 'n_routed_experts' is %d, so layer %d is a mixture of experts (first_k_dense_replace %d, "
                   "moe_layer_freq %d); only dense DeepseekV2 layers are supported (n_routed_experts null, or "
                   "first_k_dense_replace >= num_hidden_layers)",
                   experts, i, first_dense, freq);
  if (bias)
    return cfail(c, MFS_EUNSUPPORTED, "key 'attention_bias' is true; MLA projections with biases are not supported");
  m->head_dim = m->nope_dim + m->rope_dim;
  m->n_kv_heads = 1;
  m->attn = ENG_ATTN_MLA;
  m->kv_k_elems = m->kv_rank + m->rope_dim;
  m->kv_v_elems = 0;
  return 0;
}

int eng_config_load(eng_config *cfg, const char *dir, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  cfg_ctx c = {path, err, errlen};
  memset(cfg, 0, sizeof *cfg);
  eng_model_info *m = &cfg->info;
  FILE *fp = fopen(path, "rb");
  if (!fp) return cfail(&c, MFS_EIO, "cannot open: %s (is --model a model directory?)", strerror(errno));
  char *buf = malloc((1 << 20) + 1);
  size_t n = buf ? fread(buf, 1, 1 << 20, fp) : 0;
  fclose(fp);
  if (!buf) return cfail(&c, MFS_ENOMEM, "out of memory");
  cJSON *j = cJSON_ParseWithLength(buf, n);
  free(buf);
  int rc = 0;
  if (!cJSON_IsObject(j)) {
    rc = cfail(&c, MFS_EFORMAT, "not a valid JSON object");
    goto out;
  }
  const cJSON *ar = cJSON_GetObjectItemCaseSensitive(j, "architectures");
  const cJSON *a0 = cJSON_GetArrayItem(ar, 0);
  if (!cJSON_IsArray(ar) || !cJSON_IsString(a0)) {
    rc = cfail(&c, MFS_EFORMAT,
               "key 'architectures' is missing or not a list of strings (expected [\"MFAForCausalLM\"], "
               "[\"LlamaForCausalLM\"] or [\"DeepseekV2ForCausalLM\"])");
    goto out;
  }
  snprintf(m->arch, sizeof m->arch, "%s", a0->valuestring);
  int is_mfa = !strcmp(a0->valuestring, "MFAForCausalLM");
  int is_llama = !strcmp(a0->valuestring, "LlamaForCausalLM");
  int is_mla = !strcmp(a0->valuestring, "DeepseekV2ForCausalLM");
  if (!is_mfa && !is_llama && !is_mla) {
    rc = cfail(&c, MFS_EUNSUPPORTED,
               "architecture '%s' is not supported (expected MFAForCausalLM, LlamaForCausalLM or "
               "DeepseekV2ForCausalLM)",
               a0->valuestring);
    goto out;
  }
  double eps = 0, theta = 0; /* set by get_num (gcc -O3 cannot see it) */
  if ((rc = get_int(&c, j, "hidden_size", -1, 1, &m->d)) || (rc = get_int(&c, j, "num_hidden_layers", -1, 1, &m->n_layers)) ||
      (rc = get_int(&c, j, "num_attention_heads", -1, 1, &m->n_heads)) ||
      (rc = get_int(&c, j, "intermediate_size", -1, 1, &m->inter)) ||
      (rc = get_int(&c, j, "vocab_size", -1, 1, &m->vocab)) ||
      (rc = get_num(&c, j, "rms_norm_eps", 1e-6, &eps)) || (rc = get_num(&c, j, "rope_theta", 10000.0, &theta)) ||
      (rc = get_int(&c, j, "max_position_embeddings", 2048, 1, &m->max_pos)) ||
      (rc = get_bool(&c, j, "tie_word_embeddings", 0, &m->tie_embeddings)) ||
      (rc = get_int(&c, j, "bos_token_id", -2, 0, &m->bos_id)))
    goto out;
  if (m->bos_id == -2) m->bos_id = -1;
  m->rms_eps = (float)eps;
  m->rope_theta = (float)theta;
  int hd_default = m->d % m->n_heads == 0 ? m->d / m->n_heads : -1;
  if (is_mla) { /* its own head sizes; a head_dim key, if any, is not read */
    if ((rc = mla_config(&c, j, m))) goto out;
  } else if ((rc = get_int(&c, j, "head_dim", hd_default, 2, &m->head_dim))) {
    goto out;
  } else if (m->head_dim < 0) {
    rc = cfail(&c, MFS_EFORMAT, "key 'head_dim' is missing and hidden_size %d is not a multiple of num_attention_heads %d",
               m->d, m->n_heads);
    goto out;
  } else if (m->head_dim % 2) {
    rc = cfail(&c, MFS_EFORMAT, "head_dim %d must be even for RoPE", m->head_dim);
    goto out;
  }
  const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
  if (rs && !cJSON_IsNull(rs)) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (!cJSON_IsString(ty)) ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    rc = cfail(&c, MFS_EUNSUPPORTED,
               "key 'rope_scaling' is set%s%s%s; only plain RoPE is supported (remove it or set null)",
               cJSON_IsString(ty) ? " (type '" : "", cJSON_IsString(ty) ? ty->valuestring : "",
               cJSON_IsString(ty) ? "')" : "");
    goto out;
  }
  const cJSON *eos = cJSON_GetObjectItemCaseSensitive(j, "eos_token_id");
  if (cJSON_IsNumber(eos)) {
    m->eos_ids[m->n_eos++] = eos->valueint;
  } else if (cJSON_IsArray(eos)) {
    const cJSON *e;
    cJSON_ArrayForEach(e, eos) {
      if (!cJSON_IsNumber(e) || e->valuedouble < 0) {
        rc = cfail(&c, MFS_EFORMAT, "key 'eos_token_id' must be an integer or a list of integers");
        goto out;
      }
      if (m->n_eos < 8) m->eos_ids[m->n_eos++] = e->valueint;
    }
  } else if (eos && !cJSON_IsNull(eos)) {
    rc = cfail(&c, MFS_EFORMAT, "key 'eos_token_id' must be an integer or a list of integers");
    goto out;
  }
  if (is_mla) {
    /* set by mla_config */
  } else if (is_mfa) {
    int groups;
    if ((rc = get_int(&c, j, "share_q_dim", -1, 1, &m->q_rank)) ||
        (rc = get_int(&c, j, "num_attention_groups", 1, 1, &groups)) ||
        (rc = get_bool(&c, j, "key_reuse", 0, &cfg->key_reuse)))
      goto out;
    if (groups != 1) {
      rc = cfail(&c, MFS_EUNSUPPORTED, "num_attention_groups is %d; MFA here needs exactly 1 KV head", groups);
      goto out;
    }
    m->n_kv_heads = 1;
    m->attn = cfg->key_reuse ? ENG_ATTN_MFA_KR : ENG_ATTN_MFA;
    m->kv_k_elems = m->head_dim;
    m->kv_v_elems = cfg->key_reuse ? 0 : m->head_dim;
  } else {
    if ((rc = get_int(&c, j, "num_key_value_heads", m->n_heads, 1, &m->n_kv_heads))) goto out;
    if (m->n_heads % m->n_kv_heads) {
      rc = cfail(&c, MFS_EFORMAT, "num_attention_heads %d is not a multiple of num_key_value_heads %d",
                 m->n_heads, m->n_kv_heads);
      goto out;
    }
    m->attn = m->n_kv_heads == m->n_heads ? ENG_ATTN_MHA : m->n_kv_heads == 1 ? ENG_ATTN_MQA : ENG_ATTN_GQA;
    m->kv_k_elems = m->kv_v_elems = m->n_kv_heads * m->head_dim;
  }
  /* a directory written by `mfaserve quantize` (docs/quantized-weights.md) */
  cfg->quant = ST_F32;
  const cJSON *qc = cJSON_GetObjectItemCaseSensitive(j, "quantization_config");
  if (!rc && qc && !cJSON_IsNull(qc)) {
    const cJSON *qm = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
    const cJSON *qv = cJSON_GetObjectItemCaseSensitive(qc, "format_version");
    const cJSON *qt = cJSON_GetObjectItemCaseSensitive(qc, "weight_type");
    const cJSON *qg = cJSON_GetObjectItemCaseSensitive(qc, "group_size");
    if (!cJSON_IsObject(qc) || !cJSON_IsString(qm) || strcmp(qm->valuestring, ENG_QUANT_METHOD)) {
      rc = cfail(&c, MFS_EUNSUPPORTED,
                 "quantization_config.quant_method is %s%s%s; this reader knows only \"" ENG_QUANT_METHOD
                 "\" (a directory written by `mfaserve quantize`)",
                 cJSON_IsString(qm) ? "\"" : "", cJSON_IsString(qm) ? qm->valuestring : "missing",
                 cJSON_IsString(qm) ? "\"" : "");
    } else if (!cJSON_IsNumber(qv) || qv->valuedouble != ENG_QUANT_FORMAT_VERSION) {
      char v[32];
      snprintf(v, sizeof v, cJSON_IsNumber(qv) ? "%g" : "missing", cJSON_IsNumber(qv) ? qv->valuedouble : 0.0);
      rc = cfail(&c, MFS_EUNSUPPORTED,
                 "quantization_config.format_version is %s; this reader knows version %d only (a newer mfaserve "
                 "wrote it? re-run `mfaserve quantize` from the original weights)",
                 v, ENG_QUANT_FORMAT_VERSION);
    } else if (!cJSON_IsString(qt) ||
               (strcmp(qt->valuestring, "q8_0") && strcmp(qt->valuestring, "q4_0"))) {
      rc = cfail(&c, MFS_EUNSUPPORTED, "quantization_config.weight_type must be \"q8_0\" or \"q4_0\"");
    } else if (!cJSON_IsNumber(qg) || qg->valuedouble != ST_QK) {
      rc = cfail(&c, MFS_EUNSUPPORTED, "quantization_config.group_size must be %d", ST_QK);
    } else {
      cfg->quant = strcmp(qt->valuestring, "q8_0") ? ST_Q4_0 : ST_Q8_0;
    }
  }
  if (!rc && ((int64_t)m->n_heads * m->head_dim > (1 << 24) || (int64_t)m->n_kv_heads * m->head_dim > (1 << 24)))
    rc = cfail(&c, MFS_EFORMAT, "num_attention_heads x head_dim (%lld) must be at most 16777216",
               (long long)m->n_heads * m->head_dim);
  if (!rc && is_mla &&
      ((int64_t)m->n_heads * m->kv_k_elems > (1 << 24) || (int64_t)m->n_heads * (m->nope_dim + m->v_dim) > (1 << 24)))
    rc = cfail(&c, MFS_EFORMAT,
               "num_attention_heads x (kv_lora_rank + qk_rope_head_dim) and num_attention_heads x "
               "(qk_nope_head_dim + v_head_dim) must be at most 16777216");
out:
  cJSON_Delete(j);
  return rc;
}
