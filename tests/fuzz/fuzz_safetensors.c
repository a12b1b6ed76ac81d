/* fuzz_safetensors.c: st_file_open on arbitrary bytes (the input is the
 * whole .safetensors file: 8-byte length, JSON header, data).
 *
 * Properties beyond "no crash": on failure the st_file is zeroed (nothing
 * left mapped or allocated) and err names the file; on success every
 * tensor has a supported dtype, at most 4 dims, nbytes = numel x dtype
 * size, lies inside the data area, no two overlap, and st_file_find
 * finds each name. */
#include <string.h>

#include "engine_int.h"
#include "fuzz_util.h"

/* the file dtypes a safetensors file may hold: F32/F16/BF16, and I8/U8
 * (a quantized directory's values, docs/quantized-weights.md) */
static size_t esize(st_dtype d) { return d == ST_F32 ? 4 : d == ST_I8 || d == ST_U8 ? 1 : 2; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_write("model.safetensors", data, size);
  st_file f;
  char err[512] = "";
  int rc = st_file_open(&f, path, err, sizeof err);
  if (rc != 0) {
    FUZZ_CHECK(rc == MFS_EFORMAT || rc == MFS_EUNSUPPORTED || rc == MFS_EIO || rc == MFS_ENOMEM, "rc %d", rc);
    FUZZ_CHECK(!f.map && !f.tensors && !f.path && f.n == 0, "state left after failure");
    FUZZ_CHECK(strstr(err, "model.safetensors") != NULL, "message lacks the file: %s", err);
    return 0;
  }
  FUZZ_CHECK(f.size == size, "size %zu != %zu", f.size, size);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | data[i];
  const uint8_t *base = f.map, *lo = base + 8 + hlen, *hi = base + size;
  for (int i = 0; i < f.n; i++) {
    const st_tensor *t = &f.tensors[i];
    FUZZ_CHECK(t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16 || t->dtype == ST_I8 ||
                   t->dtype == ST_U8,
               "dtype");
    FUZZ_CHECK(t->ndim >= 0 && t->ndim <= 4, "ndim %d", t->ndim);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
      FUZZ_CHECK(t->shape[d] >= 0, "shape");
      numel *= (uint64_t)t->shape[d];
    }
    FUZZ_CHECK(t->nbytes == numel * esize(t->dtype), "nbytes %zu for numel %llu", t->nbytes,
               (unsigned long long)numel);
    const uint8_t *p = t->data;
    FUZZ_CHECK(p >= lo && p <= hi && t->nbytes <= (size_t)(hi - p), "tensor '%s' outside the data area",
               t->name);
    if (t->nbytes) { /* touch both ends: ASan sees a read past the mapping */
      volatile uint8_t x = p[0];
      x = p[t->nbytes - 1];
      (void)x;
    }
    FUZZ_CHECK(st_file_find(&f, t->name) != NULL, "find '%s'", t->name);
    for (int j = 0; j < i; j++) {
      const st_tensor *u = &f.tensors[j];
      const uint8_t *q = u->data;
      int disjoint = p + t->nbytes <= q || q + u->nbytes <= p || t->nbytes == 0 || u->nbytes == 0;
      FUZZ_CHECK(disjoint, "'%s' and '%s' overlap", t->name, u->name);
    }
  }
  st_file_close(&f);
  FUZZ_CHECK(!f.map && !f.tensors && f.n == 0, "close left state");
  return 0;
}
