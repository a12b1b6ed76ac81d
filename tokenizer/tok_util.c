/* tok_util.c: the tokenizer's two hash maps (token bytes -> id, id pair ->
 * merge) and the UTF-8 validator every path shares. Maps are built once at
 * load and read-only afterwards. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "tok_internal.h"

static uint64_t hash_bytes(const char *k, size_t len) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}

static size_t pow2_at_least(size_t n) {
  size_t c = 16;
  while (c < n) c <<= 1;
  return c;
}

int tok_smap_init(tok_smap *m, size_t n) {
  memset(m, 0, sizeof *m);
  m->cap = pow2_at_least(n + n / 2 + 1);
  m->slots = malloc(m->cap * sizeof *m->slots);
  if (!m->slots) return MFS_ENOMEM;
  for (size_t i = 0; i < m->cap; i++) m->slots[i] = (tok_smap_slot){NULL, 0, -1};
  return 0;
}

void tok_smap_free(tok_smap *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}

/* The caller sized the map for every key it puts (n at init). */
int tok_smap_put(tok_smap *m, const char *k, size_t len, int32_t v) {
  size_t mask = m->cap - 1, i = hash_bytes(k, len) & mask;
  for (tok_smap_slot *s; (s = &m->slots[i])->val >= 0; i = (i + 1) & mask)
    if (s->len == len && !memcmp(s->key, k, len)) {
      s->val = v;
      return 1;
    }
  if (m->n + 1 >= m->cap) return MFS_ENOMEM; /* never with a correct size */
  m->slots[i] = (tok_smap_slot){k, (uint32_t)len, v};
  m->n++;
  return 0;
}

int32_t tok_smap_get(const tok_smap *m, const char *k, size_t len) {
  if (!m->cap) return -1;
  size_t mask = m->cap - 1, i = hash_bytes(k, len) & mask;
  for (const tok_smap_slot *s; (s = &m->slots[i])->val >= 0; i = (i + 1) & mask)
    if (s->len == len && !memcmp(s->key, k, len)) return s->val;
  return -1;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

int tok_mmap_init(tok_mmap *m, size_t n) {
  m->n = 0;
  m->cap = pow2_at_least(n + n / 2 + 1);
  m->slots = malloc(m->cap * sizeof *m->slots);
  if (!m->slots) return MFS_ENOMEM;
  for (size_t i = 0; i < m->cap; i++) m->slots[i].key = UINT64_MAX;
  return 0;
}

void tok_mmap_free(tok_mmap *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}

void tok_mmap_put(tok_mmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  size_t mask = m->cap - 1, i = mix64(key) & mask;
  while (m->slots[i].key != UINT64_MAX && m->slots[i].key != key) i = (i + 1) & mask;
  if (m->slots[i].key == UINT64_MAX) {
    if (m->n + 1 >= m->cap) return;
    m->n++;
  }
  m->slots[i] = (tok_merge_slot){key, rank, id};
}

const tok_merge_slot *tok_mmap_get(const tok_mmap *m, int32_t a, int32_t b) {
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  size_t mask = m->cap - 1, i = mix64(key) & mask;
  while (m->slots[i].key != UINT64_MAX) {
    if (m->slots[i].key == key) return &m->slots[i];
    i = (i + 1) & mask;
  }
  return NULL;
}

size_t tok_utf8_valid_prefix(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0, bad;
  while (i < n) {
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    int k = tok_utf8_char(s + i, n - i, &bad);
    if (k <= 0) return i;
    i += (size_t)k;
  }
  return n;
}

/* Unicode Table 3-7 well-formed sequences; the maximal subpart of an
 * ill-formed one is its longest prefix that could still start a valid one
 * (at least 1 byte). */
int tok_utf8_char(const unsigned char *s, size_t n, size_t *bad) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  int need;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  size_t i = 1;
  for (; i <= (size_t)need; i++) {
    if (i >= n) break;
    unsigned b = s[i];
    unsigned l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) break;
  }
  if (i == (size_t)need + 1) return need + 1;
  *bad = i;
  return i >= n ? -1 : 0;
}
