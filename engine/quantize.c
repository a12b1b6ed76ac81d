/* quantize.c: `mfaserve quantize`: writes a model directory whose matrices
 * are stored quantized (docs/quantized-weights.md), which eng_model_load
 * reads directly.
 *
 * Every 2-D float tensor named *.weight whose rows are whole blocks of 32 is
 * quantized with k_quantize_row (the same code as --quantize at load, so a
 * written directory gives bit-identical results), except MFA-KR's
 * self_attn.o_proj and self_attn.v_proj: the loader folds the value path
 * into o_proj (model.c) and quantizes the folded matrix, so those two are
 * kept as stored. Everything else (norms, v_gate, matrices with other row
 * lengths) is copied unchanged. The output is one model.safetensors with
 * the tensors in name order, written to a temporary name and renamed when
 * complete, plus the input's other files and a config.json that gains
 * quantization_config. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine_int.h"
#include "kernels.h"

static int qfail(char *err, size_t errlen, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return code;
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

typedef struct {
  const st_tensor *t;
  int quant; /* written as values + scales */
} q_item;

static int item_cmp(const void *a, const void *b) {
  return strcmp(((const q_item *)a)->t->name, ((const q_item *)b)->t->name);
}

static cJSON *shape2(int64_t a, int64_t b) {
  cJSON *s = cJSON_CreateArray();
  cJSON_AddItemToArray(s, cJSON_CreateNumber((double)a));
  cJSON_AddItemToArray(s, cJSON_CreateNumber((double)b));
  return s;
}

static void add_entry(cJSON *hdr, const char *name, const char *dt, cJSON *shape, uint64_t *off, uint64_t bytes) {
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "dtype", dt);
  cJSON_AddItemToObject(e, "shape", shape);
  cJSON *o = cJSON_CreateArray();
  cJSON_AddItemToArray(o, cJSON_CreateNumber((double)*off));
  cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(*off + bytes)));
  cJSON_AddItemToObject(e, "data_offsets", o);
  cJSON_AddItemToObject(hdr, name, e);
  *off += bytes;
}

static int copy_file(const char *src, const char *dst, char *err, size_t errlen) {
  FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
  int rc = 0;
  if (!in || !out) rc = qfail(err, errlen, MFS_EIO, "cannot copy %s to %s: %s", src, dst, strerror(errno));
  char buf[65536];
  size_t n;
  while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0)
    if (fwrite(buf, 1, n, out) != n) rc = qfail(err, errlen, MFS_EIO, "cannot write %s: %s", dst, strerror(errno));
  if (in) fclose(in);
  if (out && fclose(out) && !rc) rc = qfail(err, errlen, MFS_EIO, "cannot write %s: %s", dst, strerror(errno));
  return rc;
}

/* config.json with quantization_config added */
static int write_config(const char *in, const char *out, const char *type, char *err, size_t errlen) {
  char p[4096];
  snprintf(p, sizeof p, "%s/config.json", in);
  FILE *f = fopen(p, "rb");
  if (!f) return qfail(err, errlen, MFS_EIO, "cannot open %s: %s", p, strerror(errno));
  char *buf = malloc((1 << 20) + 1);
  size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
  fclose(f);
  cJSON *j = buf ? cJSON_ParseWithLength(buf, n) : NULL;
  free(buf);
  if (!cJSON_IsObject(j)) {
    cJSON_Delete(j);
    return qfail(err, errlen, MFS_EFORMAT, "%s: not a valid JSON object", p);
  }
  cJSON_DeleteItemFromObjectCaseSensitive(j, "quantization_config");
  cJSON *q = cJSON_CreateObject();
  cJSON_AddStringToObject(q, "quant_method", ENG_QUANT_METHOD);
  cJSON_AddNumberToObject(q, "format_version", ENG_QUANT_FORMAT_VERSION);
  cJSON_AddStringToObject(q, "weight_type", type);
  cJSON_AddNumberToObject(q, "group_size", ST_QK);
  cJSON_AddItemToObject(j, "quantization_config", q);
  char *txt = cJSON_Print(j);
  cJSON_Delete(j);
  snprintf(p, sizeof p, "%s/config.json", out);
  f = fopen(p, "wb");
  int rc = 0;
  if (!f || !txt || fputs(txt, f) < 0 || fputc('\n', f) == EOF)
    rc = qfail(err, errlen, MFS_EIO, "cannot write %s: %s", p, strerror(errno));
  if (f && fclose(f) && !rc) rc = qfail(err, errlen, MFS_EIO, "cannot write %s: %s", p, strerror(errno));
  free(txt);
  return rc;
}

int eng_quantize_dir(const char *in, const char *out, const char *type, void (*progress)(double, void *), void *u,
                     char *err, size_t errlen) {
  st_dtype qt;
  if (!strcmp(type, "q8_0")) qt = ST_Q8_0;
  else if (!strcmp(type, "q4_0")) qt = ST_Q4_0;
  else return qfail(err, errlen, MFS_EINVAL, "--type '%s': expected q8_0 or q4_0", type);
  eng_config cfg;
  int rc = eng_config_load(&cfg, in, err, errlen);
  if (rc) return rc;
  if (cfg.quant != ST_F32)
    return qfail(err, errlen, MFS_EINVAL, "%s is already quantized: quantize the original weights instead", in);
  char ip[4096], op[4096];
  if (realpath(in, ip) && realpath(out, op) && !strcmp(ip, op))
    return qfail(err, errlen, MFS_EINVAL, "the output directory must differ from the input");
  if (mkdir(out, 0755) && errno != EEXIST)
    return qfail(err, errlen, MFS_EIO, "cannot create %s: %s", out, strerror(errno));
  st_set s;
  if ((rc = st_set_open(&s, in, err, errlen))) return rc;
  int n = 0;
  for (int f = 0; f < s.n_files; f++) n += s.files[f].n;
  q_item *it = calloc((size_t)(n ? n : 1), sizeof *it);
  cJSON *hdr = cJSON_CreateObject();
  char *hs = NULL;
  FILE *fo = NULL;
  float *row = NULL;
  uint8_t *blk = NULL;
  char tmp[4096], dst[4096];
  snprintf(dst, sizeof dst, "%s/model.safetensors", out);
  snprintf(tmp, sizeof tmp, "%s/model.safetensors.partial", out);
  if (!it || !hdr) {
    rc = qfail(err, errlen, MFS_ENOMEM, "out of memory");
    goto done;
  }
  n = 0;
  int64_t maxc = 1;
  for (int f = 0; f < s.n_files; f++)
    for (int i = 0; i < s.files[f].n; i++) {
      const st_tensor *t = &s.files[f].tensors[i];
      int kr_fold = cfg.key_reuse && (ends_with(t->name, "self_attn.o_proj.weight") ||
                                      ends_with(t->name, "self_attn.v_proj.weight"));
      int q = t->ndim == 2 && ends_with(t->name, ".weight") && t->shape[1] % ST_QK == 0 && t->shape[1] > 0 &&
              !kr_fold && !st_is_quant(t->dtype);
      if (ends_with(t->name, ".weight_scale")) {
        rc = qfail(err, errlen, MFS_EFORMAT, "%s: tensor '%s' would collide with a scale tensor's name",
                   s.files[f].path, t->name);
        goto done;
      }
      it[n++] = (q_item){t, q};
      if (q && t->shape[1] > maxc) maxc = t->shape[1];
    }
  qsort(it, (size_t)n, sizeof *it, item_cmp);
  /* header */
  cJSON *meta = cJSON_CreateObject();
  cJSON_AddStringToObject(meta, "format", "pt");
  cJSON_AddStringToObject(meta, "quantized_by", "mfaserve quantize");
  cJSON_AddStringToObject(meta, "weight_type", type);
  cJSON_AddItemToObject(hdr, "__metadata__", meta);
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    const st_tensor *t = it[i].t;
    if (it[i].quant) {
      int64_t r = t->shape[0], c = t->shape[1];
      char sn[600];
      snprintf(sn, sizeof sn, "%s_scale", t->name);
      uint64_t vb = qt == ST_Q8_0 ? (uint64_t)(r * c) : (uint64_t)(r * c / 2);
      add_entry(hdr, t->name, st_dtype_name(qt == ST_Q8_0 ? ST_I8 : ST_U8), shape2(r, qt == ST_Q8_0 ? c : c / 2), &off,
                vb);
      add_entry(hdr, sn, "F16", shape2(r, c / ST_QK), &off, (uint64_t)(r * (c / ST_QK)) * 2);
    } else {
      cJSON *sh = cJSON_CreateArray();
      for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
      add_entry(hdr, t->name, st_dtype_name(t->dtype), sh, &off, t->nbytes);
    }
  }
  hs = cJSON_PrintUnformatted(hdr);
  if (!hs) {
    rc = qfail(err, errlen, MFS_ENOMEM, "out of memory");
    goto done;
  }
  size_t hl = strlen(hs), hpad = (hl + 7) / 8 * 8;
  fo = fopen(tmp, "wb");
  row = malloc((size_t)maxc * sizeof *row);
  blk = malloc((size_t)maxc * 4 + 64); /* a staged F32 row, or a row of blocks */
  if (!fo || !row || !blk) {
    rc = fo ? qfail(err, errlen, MFS_ENOMEM, "out of memory")
            : qfail(err, errlen, MFS_EIO, "cannot create %s: %s", tmp, strerror(errno));
    goto done;
  }
  uint8_t len8[8];
  for (int b = 0; b < 8; b++) len8[b] = (uint8_t)((uint64_t)hpad >> (8 * b));
  int wok = fwrite(len8, 1, 8, fo) == 8 && fwrite(hs, 1, hl, fo) == hl;
  for (size_t p = hl; p < hpad; p++) wok = wok && fputc(' ', fo) != EOF;
  for (int i = 0; i < n && wok; i++) {
    const st_tensor *t = it[i].t;
    if (!it[i].quant) {
      wok = fwrite(t->data, 1, t->nbytes, fo) == t->nbytes;
    } else {
      int64_t r = t->shape[0], c = t->shape[1];
      size_t nb = (size_t)(c / ST_QK), bs = st_bytes(qt, ST_QK), vb = qt == ST_Q8_0 ? ST_QK : ST_QK / 2;
      /* each row quantized once: its values written, its scales kept for the
       * scale tensor that follows */
      uint8_t *scales = malloc((size_t)r * nb * 2);
      if (!scales) {
        rc = qfail(err, errlen, MFS_ENOMEM, "out of memory");
        goto done;
      }
      for (int64_t rr = 0; rr < r && wok; rr++) {
        const void *src = st_at(t->data, t->dtype, (size_t)rr, (size_t)c, 0);
        if ((uintptr_t)src & 3) { /* a mapping may place a tensor at any byte: stage the row aligned */
          memcpy(blk, src, st_bytes(t->dtype, (size_t)c));
          src = blk;
        }
        K()->widen(row, src, (size_t)c, t->dtype);
        k_quantize_row(blk, row, (size_t)c, qt);
        for (size_t b = 0; b < nb && wok; b++) {
          wok = fwrite(blk + b * bs + 2, 1, vb, fo) == vb;
          memcpy(scales + ((size_t)rr * nb + b) * 2, blk + b * bs, 2);
        }
      }
      wok = wok && fwrite(scales, 1, (size_t)r * nb * 2, fo) == (size_t)r * nb * 2;
      free(scales);
    }
    if (progress) progress((double)(i + 1) / n, u);
  }
  if (!wok) {
    rc = qfail(err, errlen, MFS_EIO, "cannot write %s: %s", tmp, strerror(errno));
    goto done;
  }
  int cl = fclose(fo);
  fo = NULL;
  if (cl || rename(tmp, dst)) {
    rc = qfail(err, errlen, MFS_EIO, "cannot write %s: %s", dst, strerror(errno));
    goto done;
  }
  /* the other files: config.json rewritten; weights and their index not copied */
  if ((rc = write_config(in, out, type, err, errlen))) goto done;
  DIR *d = opendir(in);
  struct dirent *e;
  while (d && !rc && (e = readdir(d))) {
    char sp[4096], dp[4096];
    struct stat st;
    snprintf(sp, sizeof sp, "%s/%s", in, e->d_name);
    if (stat(sp, &st) || !S_ISREG(st.st_mode) || ends_with(e->d_name, ".safetensors") ||
        !strcmp(e->d_name, "model.safetensors.index.json") || !strcmp(e->d_name, "config.json") ||
        !strcmp(e->d_name, "README.md"))
      continue;
    snprintf(dp, sizeof dp, "%s/%s", out, e->d_name);
    rc = copy_file(sp, dp, err, errlen);
  }
  if (d) closedir(d);
done:
  if (fo) fclose(fo);
  if (rc) remove(tmp);
  free(row);
  free(blk);
  free(hs);
  cJSON_Delete(hdr);
  free(it);
  st_set_close(&s);
  return rc;
}
