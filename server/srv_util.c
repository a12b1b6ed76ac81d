/* srv_util.c: small helpers the server's files share: a growable byte
 * buffer with JSON string/number writers, an open-addressing map from
 * scheduler request ids to generations, and histogram observation.
 * A buffer that failed to grow keeps its old contents and sets oom; callers
 * check oom once when the response is complete. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv_int.h"

static int sb_grow(sb *b, size_t extra) {
  if (b->oom) return -1;
  if (b->len + extra + 1 <= b->cap) return 0;
  if (mfs_fault("srv_buf")) return b->oom = 1, -1; /* test hook: realloc below failing */
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return -1;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

void sb_put(sb *b, const void *s, size_t n) {
  if (sb_grow(b, n)) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

void sb_puts(sb *b, const char *s) { sb_put(b, s, strlen(s)); }

void sb_printf(sb *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char tmp[256];
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof tmp) {
    sb_put(b, tmp, (size_t)n);
    return;
  }
  if (sb_grow(b, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void sb_json_str(sb *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  if (sb_grow(b, n + 2)) return;
  b->p[b->len++] = '"';
  size_t run = 0; /* start of the pending run of plain bytes */
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    sb_put(b, s + run, i - run);
    run = i + 1;
    switch (c) {
    case '"': sb_put(b, "\\\"", 2); break;
    case '\\': sb_put(b, "\\\\", 2); break;
    case '\n': sb_put(b, "\\n", 2); break;
    case '\r': sb_put(b, "\\r", 2); break;
    case '\t': sb_put(b, "\\t", 2); break;
    default: {
      char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      sb_put(b, u, 6);
    }
    }
  }
  sb_put(b, s + run, n - run);
  sb_put(b, "\"", 1);
}

void sb_json_num(sb *b, double v) {
  if (isnan(v)) sb_puts(b, "null");
  else if (isinf(v)) sb_puts(b, v < 0 ? "-9999.0" : "9999.0");
  else sb_printf(b, "%.9g", v);
}

void sb_free(sb *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

char *sb_take(sb *b) {
  if (!b->p) sb_put(b, "", 0);
  char *p = b->p;
  memset(b, 0, sizeof *b);
  return p;
}

/* ---- id map ---- */
#define IDM_EMPTY 0
#define IDM_DEL UINT64_MAX

static size_t idm_hash(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return (size_t)k;
}

static int idm_rehash(srv_idmap *m, size_t cap) {
  uint64_t *keys = calloc(cap, sizeof *keys);
  void **vals = calloc(cap, sizeof *vals);
  if (!keys || !vals) {
    free(keys);
    free(vals);
    return MFS_ENOMEM;
  }
  for (size_t i = 0; i < m->cap; i++) {
    uint64_t k = m->keys[i];
    if (k == IDM_EMPTY || k == IDM_DEL) continue;
    size_t j = idm_hash(k) & (cap - 1);
    while (keys[j] != IDM_EMPTY) j = (j + 1) & (cap - 1);
    keys[j] = k;
    vals[j] = m->vals[i];
  }
  free(m->keys);
  free(m->vals);
  m->keys = keys;
  m->vals = vals;
  m->cap = cap;
  m->used = m->n;
  return 0;
}

int srv_idmap_put(srv_idmap *m, uint64_t k, void *v) {
  if ((m->used + 1) * 2 > m->cap) { /* grow, or just sweep tombstones */
    size_t cap = m->cap ? m->cap : 64;
    if ((m->n + 1) * 4 > cap) cap *= 2;
    if (idm_rehash(m, cap)) return MFS_ENOMEM;
  }
  size_t j = idm_hash(k) & (m->cap - 1);
  while (m->keys[j] != IDM_EMPTY && m->keys[j] != IDM_DEL && m->keys[j] != k) j = (j + 1) & (m->cap - 1);
  if (m->keys[j] != k) {
    if (m->keys[j] == IDM_EMPTY) m->used++;
    m->n++;
  }
  m->keys[j] = k;
  m->vals[j] = v;
  return 0;
}

void *srv_idmap_get(const srv_idmap *m, uint64_t k) {
  if (!m->cap) return NULL;
  size_t j = idm_hash(k) & (m->cap - 1);
  while (m->keys[j] != IDM_EMPTY) {
    if (m->keys[j] == k) return m->vals[j];
    j = (j + 1) & (m->cap - 1);
  }
  return NULL;
}

void srv_idmap_del(srv_idmap *m, uint64_t k) {
  if (!m->cap) return;
  size_t j = idm_hash(k) & (m->cap - 1);
  while (m->keys[j] != IDM_EMPTY) {
    if (m->keys[j] == k) {
      m->keys[j] = IDM_DEL;
      m->vals[j] = NULL;
      m->n--;
      return;
    }
    j = (j + 1) & (m->cap - 1);
  }
}

void srv_idmap_free(srv_idmap *m) {
  free(m->keys);
  free(m->vals);
  memset(m, 0, sizeof *m);
}

void srv_hist_observe(srv_hist *h, double v) {
  if (!(v >= 0)) v = 0;
  int i = 0;
  while (i < h->n && v > h->le[i]) i++;
  if (i < h->n) h->count[i]++;
  h->total++;
  h->sum += v;
}
