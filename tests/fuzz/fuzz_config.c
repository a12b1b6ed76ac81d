/* fuzz_config.c: eng_config_load on an arbitrary config.json.
 *
 * Properties: a failure's message names config.json; a success gives a
 * usable geometry (positive sizes, even head_dim (MLA: an even rope part),
 * heads a multiple of KV heads, KV element counts as kvcache.h and engine.h
 * define them, at most 8 EOS ids). */
#include <string.h>

#include "engine_int.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_write("config.json", data, size);
  eng_config c;
  char err[512] = "";
  int rc = eng_config_load(&c, fuzz_tmpdir(), err, sizeof err);
  if (rc != 0) {
    FUZZ_CHECK(rc == MFS_EFORMAT || rc == MFS_EUNSUPPORTED || rc == MFS_EIO || rc == MFS_ENOMEM, "rc %d", rc);
    FUZZ_CHECK(strstr(err, "config.json") != NULL, "message lacks config.json: %s", err);
    return 0;
  }
  const eng_model_info *m = &c.info;
  FUZZ_CHECK(m->d >= 1 && m->n_layers >= 1 && m->n_heads >= 1 && m->n_kv_heads >= 1 && m->inter >= 1 &&
                 m->vocab >= 1 && m->max_pos >= 1,
             "non-positive size");
  /* MLA: head_dim = qk_nope + qk_rope, any sum; the rope part is even */
  FUZZ_CHECK(m->head_dim >= 2 && (m->head_dim % 2 == 0 || m->attn == ENG_ATTN_MLA), "head_dim %d", m->head_dim);
  FUZZ_CHECK(m->n_heads % m->n_kv_heads == 0, "heads %d kv %d", m->n_heads, m->n_kv_heads);
  FUZZ_CHECK(m->n_eos >= 0 && m->n_eos <= 8, "n_eos %d", m->n_eos);
  FUZZ_CHECK(m->rms_eps > 0 && m->rope_theta > 0, "eps/theta");
  FUZZ_CHECK(memchr(m->arch, 0, sizeof m->arch) != NULL, "arch not terminated");
  switch (m->attn) {
    case ENG_ATTN_MFA:
    case ENG_ATTN_MFA_KR:
      FUZZ_CHECK(m->n_kv_heads == 1 && m->q_rank >= 1 && m->kv_k_elems == m->head_dim &&
                     m->kv_v_elems == (m->attn == ENG_ATTN_MFA ? m->head_dim : 0),
                 "MFA geometry");
      break;
    case ENG_ATTN_MLA:
      FUZZ_CHECK(m->n_kv_heads == 1 && m->q_rank >= 0 && m->kv_rank >= 1 && m->nope_dim >= 1 && m->v_dim >= 1 &&
                     m->rope_dim >= 2 && m->rope_dim % 2 == 0 && m->rope_dim <= MLA_ROPE_MAX &&
                     m->head_dim == m->nope_dim + m->rope_dim && m->kv_k_elems == m->kv_rank + m->rope_dim &&
                     m->kv_v_elems == 0,
                 "MLA geometry");
      break;
    case ENG_ATTN_MHA:
    case ENG_ATTN_GQA:
    case ENG_ATTN_MQA:
      FUZZ_CHECK((int64_t)m->kv_k_elems == (int64_t)m->n_kv_heads * m->head_dim && m->kv_v_elems == m->kv_k_elems, "KV elems");
      break;
    default:
      FUZZ_CHECK(0, "attn kind %d", (int)m->attn);
  }
  return 0;
}
