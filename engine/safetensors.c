/* safetensors.c: validating reader for .safetensors files and the HF
 * sharded layout (model.safetensors.index.json).
 *
 * A file is read once into anonymous memory advised for huge pages (or, with
 * eng_weights_use_mmap(1), mapped), then made read-only; tensors point into
 * it. Every length and offset in the header is checked against the file before any
 * pointer is formed, so a malformed or truncated file is an error message,
 * never an out-of-bounds read. Invariant after a successful open: each
 * tensor's [data, data + nbytes) lies inside the mapping, and no two
 * tensors overlap. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine_int.h"

static int fail(char *err, size_t errlen, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return code;
}

const char *st_dtype_name(st_dtype dt) {
  static const char *n[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "I8", "U8"};
  return (unsigned)dt < sizeof n / sizeof n[0] ? n[dt] : "?";
}

static int dtype_parse(const char *s, st_dtype *dt, size_t *size) {
  if (!strcmp(s, "F32")) { *dt = ST_F32; *size = 4; return 0; }
  if (!strcmp(s, "F16")) { *dt = ST_F16; *size = 2; return 0; }
  if (!strcmp(s, "BF16")) { *dt = ST_BF16; *size = 2; return 0; }
  if (!strcmp(s, "I8")) { *dt = ST_I8; *size = 1; return 0; }
  if (!strcmp(s, "U8")) { *dt = ST_U8; *size = 1; return 0; }
  return -1;
}

typedef struct { uint64_t b, e; int idx; } span;
static int span_cmp(const void *a, const void *b) {
  const span *x = a, *y = b;
  return x->b < y->b ? -1 : x->b > y->b ? 1 : (x->e < y->e ? -1 : x->e > y->e);
}

static int weights_mmap; /* eng_weights_use_mmap */
void eng_weights_use_mmap(int on) { weights_mmap = on != 0; }

#define HUGE_PAGE ((size_t)2 << 20)

/* The whole of fd (size bytes) in anonymous memory at a 2 MiB boundary,
 * advised for transparent huge pages, read-only once filled; *len: the
 * length to munmap. NULL with errno set on failure (EIO: a short read). */
static void *read_whole(int fd, size_t size, size_t *len) {
  size_t want = (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  uint8_t *raw = mmap(NULL, want + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  /* trim to the aligned part, so that munmap(map, want) releases it all */
  uint8_t *a = (uint8_t *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  if (a > raw) munmap(raw, (size_t)(a - raw));
  if (raw + HUGE_PAGE > a) munmap(a + want, (size_t)(raw + HUGE_PAGE - a));
#ifdef MADV_HUGEPAGE
  madvise(a, want, MADV_HUGEPAGE); /* advice: without THP the copy still works */
#endif
  for (size_t got = 0; got < size;) {
    ssize_t r = pread(fd, a + got, size - got, (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      int e = r < 0 ? errno : EIO;
      munmap(a, want);
      errno = e;
      return NULL;
    }
    got += (size_t)r;
  }
  mprotect(a, want, PROT_READ);
  *len = want;
  return a;
}

void st_file_close(st_file *f) {
  if (!f) return;
  for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
  free(f->tensors);
  if (f->map && f->map != MAP_FAILED) munmap(f->map, f->map_len);
  free(f->path);
  memset(f, 0, sizeof *f);
}

int st_file_open(st_file *f, const char *path, char *err, size_t errlen) {
  memset(f, 0, sizeof *f);
  int rc = 0;
  cJSON *hdr = NULL;
  span *spans = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(err, errlen, MFS_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return fail(err, errlen, MFS_EIO, "%s: not a regular file", path);
  }
  f->size = (size_t)st.st_size;
  f->path = strdup(path);
  if (f->size < 8) {
    close(fd);
    rc = fail(err, errlen, MFS_EFORMAT,
              "%s: file is %zu bytes, too short for a safetensors header (8-byte length + JSON)",
              path, f->size);
    goto out;
  }
  if (weights_mmap) {
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    f->map_len = f->size;
  } else {
    /* a large file from a cold disk takes a while: say what is happening */
    int loud = f->size >= ((size_t)256 << 20);
    double t0 = mfs_now();
    if (loud)
      mfs_log(MFS_LOG_INFO, "engine", "reading %s (%.2f GB) into memory (--mmap maps it instead)", path,
              (double)f->size / 1e9);
    f->map = read_whole(fd, f->size, &f->map_len);
    if (!f->map) f->map = MAP_FAILED;
    else if (loud) {
      double dt = MFS_MAX(mfs_now() - t0, 1e-9);
      mfs_log(MFS_LOG_INFO, "engine", "read %s in %.1f s (%.2f GB/s)", path, dt, (double)f->size / 1e9 / dt);
    }
  }
  int map_errno = errno;
  close(fd);
  if (f->map == MAP_FAILED) {
    f->map = NULL;
    rc = weights_mmap ? fail(err, errlen, MFS_EIO, "%s: mmap failed: %s", path, strerror(map_errno))
         : map_errno == ENOMEM
             ? fail(err, errlen, MFS_ENOMEM, "%s: no memory for its %zu bytes (--mmap maps the file instead)", path,
                    f->size)
             : fail(err, errlen, MFS_EIO, "%s: cannot read: %s", path, strerror(map_errno));
    goto out;
  }
  const uint8_t *base = f->map;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
  if (hlen > f->size - 8) {
    rc = fail(err, errlen, MFS_EFORMAT,
              "%s: header length %llu is larger than the file (%zu bytes): truncated or not safetensors",
              path, (unsigned long long)hlen, f->size);
    goto out;
  }
  hdr = cJSON_ParseWithLength((const char *)base + 8, (size_t)hlen);
  if (!cJSON_IsObject(hdr)) {
    rc = fail(err, errlen, MFS_EFORMAT, "%s: header is not a JSON object", path);
    goto out;
  }
  const uint8_t *data = base + 8 + hlen;
  uint64_t data_size = f->size - 8 - hlen;
  int cap = cJSON_GetArraySize(hdr);
  f->tensors = calloc((size_t)(cap > 0 ? cap : 1), sizeof *f->tensors);
  spans = calloc((size_t)(cap > 0 ? cap : 1), sizeof *spans);
  if (!f->tensors || !spans) {
    rc = fail(err, errlen, MFS_ENOMEM, "%s: out of memory reading header", path);
    goto out;
  }
  cJSON *it;
  cJSON_ArrayForEach(it, hdr) {
    const char *name = it->string;
    if (!strcmp(name, "__metadata__")) continue;
    if (!cJSON_IsObject(it)) {
      rc = fail(err, errlen, MFS_EFORMAT, "%s: tensor '%s': entry is not an object", path, name);
      goto out;
    }
    cJSON *jd = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "shape");
    cJSON *jo = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    st_tensor *t = &f->tensors[f->n];
    size_t esize;
    if (!cJSON_IsString(jd)) {
      rc = fail(err, errlen, MFS_EFORMAT, "%s: tensor '%s': 'dtype' missing or not a string", path, name);
      goto out;
    }
    if (dtype_parse(jd->valuestring, &t->dtype, &esize) < 0) {
      rc = fail(err, errlen, MFS_EUNSUPPORTED,
                "%s: tensor '%s': dtype %s is not supported (expected F32, F16 or BF16; I8 or U8 in a quantized directory)", path, name,
                jd->valuestring);
      goto out;
    }
    int nd = cJSON_GetArraySize(js);
    if (!cJSON_IsArray(js) || nd > 4) {
      rc = fail(err, errlen, MFS_EFORMAT, "%s: tensor '%s': 'shape' must be an array of at most 4 sizes",
                path, name);
      goto out;
    }
    uint64_t numel = 1;
    for (int d = 0; d < nd; d++) {
      cJSON *x = cJSON_GetArrayItem(js, d);
      if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 1e12 ||
          x->valuedouble != (double)(int64_t)x->valuedouble) {
        rc = fail(err, errlen, MFS_EFORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                  path, name, d);
        goto out;
      }
      t->shape[d] = (int64_t)x->valuedouble;
      numel *= (uint64_t)t->shape[d];
      if (numel > (1ull << 40)) {
        rc = fail(err, errlen, MFS_EFORMAT, "%s: tensor '%s': shape too large", path, name);
        goto out;
      }
    }
    t->ndim = nd;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2) {
      rc = fail(err, errlen, MFS_EFORMAT, "%s: tensor '%s': 'data_offsets' must be [begin, end]", path, name);
      goto out;
    }
    double b = cJSON_GetArrayItem(jo, 0)->valuedouble, e = cJSON_GetArrayItem(jo, 1)->valuedouble;
    if (!cJSON_IsNumber(cJSON_GetArrayItem(jo, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(jo, 1)) ||
        b < 0 || e < b || e >= 18446744073709551616.0 /* 2^64 */ || b != floor(b) || e != floor(e)) {
      rc = fail(err, errlen, MFS_EFORMAT, "%s: tensor '%s': data_offsets must be integers 0 <= begin <= end",
                path, name);
      goto out;
    }
    if ((uint64_t)e > data_size) {
      rc = fail(err, errlen, MFS_EFORMAT,
                "%s: tensor '%s': data_offsets [%.0f, %.0f] lie outside the file's data area (%llu bytes): "
                "the file is truncated or corrupt",
                path, name, b, e, (unsigned long long)data_size);
      goto out;
    }
    if ((uint64_t)(e - b) != numel * esize) {
      rc = fail(err, errlen, MFS_EFORMAT,
                "%s: tensor '%s': data_offsets span %.0f bytes but shape x %s size needs %llu", path,
                name, e - b, jd->valuestring, (unsigned long long)(numel * esize));
      goto out;
    }
    t->name = strdup(name);
    t->data = data + (uint64_t)b;
    t->nbytes = (size_t)(e - b);
    spans[f->n] = (span){(uint64_t)b, (uint64_t)e, f->n};
    f->n++;
  }
  qsort(spans, (size_t)f->n, sizeof *spans, span_cmp);
  for (int i = 1; i < f->n; i++)
    if (spans[i].b < spans[i - 1].e) {
      rc = fail(err, errlen, MFS_EFORMAT, "%s: tensors '%s' and '%s' overlap in the data area", path,
                f->tensors[spans[i - 1].idx].name, f->tensors[spans[i].idx].name);
      goto out;
    }
out:
  free(spans);
  cJSON_Delete(hdr);
  if (rc) st_file_close(f);
  return rc;
}

const st_tensor *st_file_find(const st_file *f, const char *name) {
  for (int i = 0; i < f->n; i++)
    if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
  return NULL;
}

void st_set_close(st_set *s) {
  for (int i = 0; i < s->n_files; i++) st_file_close(&s->files[i]);
  free(s->files);
  for (int i = 0; i < s->n_map; i++) free(s->map_names[i]);
  free(s->map_names);
  free(s->map_file);
  memset(s, 0, sizeof *s);
}

static char *read_text(const char *path, size_t max, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  char *buf = malloc(max + 1);
  size_t n = buf ? fread(buf, 1, max + 1, fp) : 0;
  fclose(fp);
  if (!buf || n > max) {
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

static int open_sharded(st_set *s, const char *dir, const char *idx_path, char *err, size_t errlen) {
  size_t len;
  char *txt = read_text(idx_path, 64u << 20, &len);
  if (!txt) return fail(err, errlen, MFS_EIO, "%s: cannot read (or larger than 64 MiB)", idx_path);
  cJSON *j = cJSON_ParseWithLength(txt, len);
  free(txt);
  int rc = 0;
  cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
  if (!cJSON_IsObject(j)) {
    rc = fail(err, errlen, MFS_EFORMAT, "%s: not valid JSON", idx_path);
    goto out;
  }
  if (!cJSON_IsObject(wm)) {
    rc = fail(err, errlen, MFS_EFORMAT, "%s: 'weight_map' missing or not an object of name -> file",
              idx_path);
    goto out;
  }
  int n = cJSON_GetArraySize(wm);
  s->map_names = calloc((size_t)n + 1, sizeof *s->map_names);
  s->map_file = calloc((size_t)n + 1, sizeof *s->map_file);
  s->files = calloc((size_t)n + 1, sizeof *s->files);
  if (!s->map_names || !s->map_file || !s->files) {
    rc = fail(err, errlen, MFS_ENOMEM, "%s: out of memory", idx_path);
    goto out;
  }
  cJSON *it;
  cJSON_ArrayForEach(it, wm) {
    if (!cJSON_IsString(it) || strchr(it->valuestring, '/') || !it->valuestring[0]) {
      rc = fail(err, errlen, MFS_EFORMAT, "%s: weight_map['%s'] must be a file name in the model directory",
                idx_path, it->string);
      goto out;
    }
    int fi = -1;
    for (int k = 0; k < s->n_files; k++) {
      const char *p = strrchr(s->files[k].path, '/');
      if (!strcmp(p + 1, it->valuestring)) fi = k;
    }
    if (fi < 0) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", dir, it->valuestring);
      if ((rc = st_file_open(&s->files[s->n_files], path, err, errlen))) goto out;
      fi = s->n_files++;
    }
    s->map_names[s->n_map] = strdup(it->string);
    s->map_file[s->n_map++] = fi;
    if (!st_file_find(&s->files[fi], it->string)) {
      rc = fail(err, errlen, MFS_EFORMAT, "%s: weight_map puts tensor '%s' in %s, which does not contain it",
                idx_path, it->string, s->files[fi].path);
      goto out;
    }
  }
out:
  cJSON_Delete(j);
  if (rc) st_set_close(s);
  return rc;
}

int st_set_open(st_set *s, const char *dir, char *err, size_t errlen) {
  memset(s, 0, sizeof *s);
  char path[4096];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (access(path, F_OK) == 0) {
    s->files = calloc(1, sizeof *s->files);
    if (!s->files) return fail(err, errlen, MFS_ENOMEM, "out of memory");
    int rc = st_file_open(&s->files[0], path, err, errlen);
    if (rc) {
      free(s->files);
      s->files = NULL;
      return rc;
    }
    s->n_files = 1;
    return 0;
  }
  char idx[4096];
  snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
  if (access(idx, F_OK) == 0) return open_sharded(s, dir, idx, err, errlen);
  return fail(err, errlen, MFS_EIO,
              "%s: neither model.safetensors nor model.safetensors.index.json (+ shards) found", dir);
}

const st_tensor *st_set_find(const st_set *s, const char *name, const char **file) {
  if (s->map_names) {
    for (int i = 0; i < s->n_map; i++)
      if (!strcmp(s->map_names[i], name)) {
        *file = s->files[s->map_file[i]].path;
        return st_file_find(&s->files[s->map_file[i]], name);
      }
    *file = "model.safetensors.index.json";
    return NULL;
  }
  *file = s->files[0].path;
  return st_file_find(&s->files[0], name);
}
