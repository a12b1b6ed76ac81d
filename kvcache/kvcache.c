/* kvcache.c: the paged KV-cache pool: blocks, ref counts, block tables, the
 * prefix hash index, the free and LRU lists, usage stats.
 *
 * Block life: free -> used (acquire) -> ref 0: cached if indexed (LRU tail)
 * or free otherwise. A needed block comes from the free list; only when it
 * is empty is the LRU head (least recently released) evicted: taken out of
 * the index and reused. A cached block that a prefix match attaches leaves
 * the LRU. kvc_seq_free releases a table back to front, so a sequence's
 * deeper blocks are evicted before the blocks its prefix starts with.
 *
 * Writing: the engine writes only tokens [len, n_reserved) of a sequence;
 * kvc_seq_reserve makes every block holding those positions private
 * (ref 1, not indexed), copying a shared or indexed partial block with all
 * its layers. Indexed blocks are full and never written, so a match always
 * hands out the data that was committed with those tokens. kvc_seq_fork
 * shares only the blocks holding the source's len tokens; the source's own
 * reservation beyond len stays valid (it writes past what the fork reads).
 *
 * Layout: each layer's [K][V] region is padded to a multiple of 64 bytes
 * (int8: 32), so every kvc_block_k pointer is that aligned; kvc_block_bytes
 * counts the padding. There is none when block_size * the row bytes is a
 * multiple of it, as with block_size 16 at F32/F16, and at int8 with one
 * scale per head of 64 (16 x 66 bytes = 33 x 32; 64-byte alignment would
 * pad it to 1088 and take back the bytes the per-head scale saves). A "non-empty" sequence
 * for kvc_seq_match_prefix is one with any table entry, even if len is 0.
 *
 * Events (kvc_pool_set_event_fn): index_insert announces STORED when no
 * other indexed block has the hash yet, index_remove REMOVED when the last
 * one leaves, so a subscriber's replayed set is the distinct indexed hashes.
 *
 * The invariants are listed in kvcache_int.h; kvc_pool_check verifies them.
 * Only kvc_pool_new, kvc_seq_new/fork, a growing block table and the
 * test-only kvc_pool_check allocate.
 */
#include "kvcache_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ---- geometry ---------------------------------------------------------- */

static int geom_ok(const kvc_geom *g) {
  if (!g || g->n_layers < 1 || g->block_size < 1 || g->k_elems < 1 || g->v_elems < 0) return 0;
  if (g->dtype == KVC_F32 || g->dtype == KVC_F16) return 1;
  /* int8: whole groups; even element counts keep the F16 scales after the
   * values 2-byte aligned */
  return g->dtype == KVC_I8 && g->qgroup >= 1 && g->k_elems % g->qgroup == 0 && g->v_elems % g->qgroup == 0 &&
         g->k_elems % 2 == 0 && g->v_elems % 2 == 0 && g->k_elems <= (1 << 24) && g->v_elems <= (1 << 24);
}

/* Bytes of one token's row of n elements (a geometry geom_ok accepted). */
static size_t row_bytes(const kvc_geom *g, int n) {
  switch (g->dtype) {
  case KVC_F32: return (size_t)n * 4;
  case KVC_F16: return (size_t)n * 2;
  case KVC_I8: return (size_t)n + (size_t)(n / g->qgroup) * 2;
  }
  return 0;
}

size_t kvc_k_row_bytes(const kvc_geom *g) { return geom_ok(g) ? row_bytes(g, g->k_elems) : 0; }
size_t kvc_v_row_bytes(const kvc_geom *g) { return geom_ok(g) ? row_bytes(g, g->v_elems) : 0; }

/* One layer's K+V region rounded up to 64 bytes (int8: 32), or 0 on overflow. */
static size_t layer_stride(const kvc_geom *g) {
  if ((size_t)g->k_elems > SIZE_MAX / 8 || (size_t)g->v_elems > SIZE_MAX / 8) return 0;
  size_t per_tok = row_bytes(g, g->k_elems) + row_bytes(g, g->v_elems);
  if ((size_t)g->block_size > (SIZE_MAX - 64) / per_tok) return 0;
  return MFS_ALIGN_UP((size_t)g->block_size * per_tok, g->dtype == KVC_I8 ? 32 : 64);
}

size_t kvc_block_bytes(const kvc_geom *g) {
  if (!geom_ok(g)) return 0;
  size_t ls = layer_stride(g);
  if (ls == 0 || ls > SIZE_MAX / (size_t)g->n_layers) return 0;
  return ls * (size_t)g->n_layers;
}

size_t kvc_bytes_per_token(const kvc_geom *g) {
  if (!geom_ok(g)) return 0;
  return (row_bytes(g, g->k_elems) + row_bytes(g, g->v_elems)) * (size_t)g->n_layers;
}

/* ---- hashing ----------------------------------------------------------- */

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

uint64_t kvc_hash_tokens(uint64_t parent_hash, const int32_t *tokens, int n) {
  uint64_t h = mix64(parent_hash ^ ((uint64_t)(uint32_t)n << 32));
  for (int i = 0; i < n; i++) h = mix64(h ^ (uint32_t)tokens[i]) + 0x9e3779b97f4a7c15ull;
  return mix64(h);
}

void kvc_pool_set_hash_fn(kvc_pool *p, kvc_hash_fn fn) { p->hash_fn = fn ? fn : kvc_hash_tokens; }

void kvc_pool_set_event_fn(kvc_pool *p, kvc_event_fn fn, void *ctx) {
  p->event_fn = fn;
  p->event_ctx = fn ? ctx : NULL;
}

/* ---- lists ------------------------------------------------------------- */

static void list_push_tail(kvc_pool *p, kvc_list *l, int32_t b) {
  kvc_block *bl = &p->blocks[b];
  bl->prev = l->tail;
  bl->next = KVC_NIL;
  if (l->tail != KVC_NIL)
    p->blocks[l->tail].next = b;
  else
    l->head = b;
  l->tail = b;
  l->n++;
}

static void list_remove(kvc_pool *p, kvc_list *l, int32_t b) {
  kvc_block *bl = &p->blocks[b];
  if (bl->prev != KVC_NIL)
    p->blocks[bl->prev].next = bl->next;
  else
    l->head = bl->next;
  if (bl->next != KVC_NIL)
    p->blocks[bl->next].prev = bl->prev;
  else
    l->tail = bl->prev;
  bl->prev = bl->next = KVC_NIL;
  l->n--;
}

/* ---- index (open addressing, linear probing, backward-shift delete) ----- */

static const int32_t *block_tokens(const kvc_pool *p, int32_t b) {
  return p->tokens + (size_t)b * (size_t)p->g.block_size;
}

/* Is the link (id, gen) to a parent still live? KVC_NIL (no parent) is. */
static int parent_live(const kvc_pool *p, int32_t id, uint64_t gen) {
  if (id == KVC_NIL) return 1;
  if (id < 0) return 0;
  return p->blocks[id].indexed && p->blocks[id].gen == gen;
}

/* The indexed block with this hash, parent link and token ids, or KVC_NIL. */
static int32_t index_find(const kvc_pool *p, uint64_t hash, uint64_t parent_hash, int32_t parent,
                          uint64_t parent_gen, const int32_t *tokens) {
  size_t tok_bytes = (size_t)p->g.block_size * sizeof(int32_t);
  for (uint64_t i = hash & p->index_mask;; i = (i + 1) & p->index_mask) {
    int32_t b = p->index[i];
    if (b == KVC_NIL) return KVC_NIL;
    const kvc_block *bl = &p->blocks[b];
    if (bl->hash == hash && bl->parent_hash == parent_hash && bl->parent == parent &&
        (parent == KVC_NIL || bl->parent_gen == parent_gen) &&
        memcmp(block_tokens(p, b), tokens, tok_bytes) == 0)
      return b;
  }
}

/* Is any indexed block's hash this one? (Same-hash blocks share a home
 * slot, so they all lie on its probe run.) */
static int hash_indexed(const kvc_pool *p, uint64_t hash) {
  for (uint64_t i = hash & p->index_mask; p->index[i] != KVC_NIL; i = (i + 1) & p->index_mask)
    if (p->blocks[p->index[i]].hash == hash) return 1;
  return 0;
}

static void index_insert(kvc_pool *p, int32_t b) {
  kvc_block *bl = &p->blocks[b];
  int announce = p->event_fn && !hash_indexed(p, bl->hash);
  uint64_t i = bl->hash & p->index_mask;
  while (p->index[i] != KVC_NIL) i = (i + 1) & p->index_mask;
  p->index[i] = b;
  bl->indexed = 1;
  p->n_indexed++;
  if (announce) {
    kvc_event ev = {KVC_EV_STORED, bl->hash, bl->parent_hash, bl->parent != KVC_NIL, block_tokens(p, b),
                    p->g.block_size};
    p->event_fn(p->event_ctx, &ev);
  }
}

static void index_remove(kvc_pool *p, int32_t b) {
  uint64_t m = p->index_mask;
  uint64_t i = p->blocks[b].hash & m;
  while (p->index[i] != b) i = (i + 1) & m; /* present: b is indexed */
  for (uint64_t j = (i + 1) & m; p->index[j] != KVC_NIL; j = (j + 1) & m) {
    uint64_t home = p->blocks[p->index[j]].hash & m;
    /* Move the entry at j into the hole at i unless its home lies in (i, j]. */
    int in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!in_range) {
      p->index[i] = p->index[j];
      i = j;
    }
  }
  p->index[i] = KVC_NIL;
  p->blocks[b].indexed = 0;
  p->n_indexed--;
  if (p->event_fn && !hash_indexed(p, p->blocks[b].hash)) {
    kvc_event ev = {KVC_EV_REMOVED, p->blocks[b].hash, 0, 0, NULL, 0};
    p->event_fn(p->event_ctx, &ev);
  }
}

/* ---- block acquire / release ------------------------------------------ */

static int64_t n_available(const kvc_pool *p) { return p->free_list.n + p->lru.n; }

/* A private block (ref 1, not indexed). The caller checked n_available. */
static int32_t block_acquire(kvc_pool *p) {
  int32_t b = p->free_list.head;
  if (b != KVC_NIL) {
    list_remove(p, &p->free_list, b);
  } else {
    b = p->lru.head;
    list_remove(p, &p->lru, b);
    index_remove(p, b);
  }
  p->blocks[b].ref = 1;
  return b;
}

static void block_release(kvc_pool *p, int32_t b) {
  kvc_block *bl = &p->blocks[b];
  if (--bl->ref > 0) return;
  list_push_tail(p, bl->indexed ? &p->lru : &p->free_list, b);
}

/* ---- pool -------------------------------------------------------------- */

int kvc_pool_new(kvc_pool **out, const kvc_geom *g, uint64_t bytes) {
  if (!out || !geom_ok(g)) return MFS_EINVAL;
  size_t bb = kvc_block_bytes(g);
  if (bb == 0) return MFS_EINVAL;
  uint64_t nb = bytes / bb;
  if (nb == 0) return MFS_EINVAL;
  if (nb > INT32_MAX / 4) nb = INT32_MAX / 4; /* ids are int32; index is 2-4x */

  uint64_t index_cap = 1;
  while (index_cap < 2 * nb) index_cap <<= 1;

  /* Carve: data | blocks | tokens | index, each part 64-aligned. */
  size_t bs = (size_t)g->block_size;
  if (nb > SIZE_MAX / bb || nb > SIZE_MAX / sizeof(kvc_block) / 2 || bs > SIZE_MAX / 4 / nb)
    return MFS_ENOMEM;
  size_t off_blocks = MFS_ALIGN_UP((size_t)nb * bb, 64);
  size_t off_tokens = MFS_ALIGN_UP(off_blocks + (size_t)nb * sizeof(kvc_block), 64);
  size_t off_index = MFS_ALIGN_UP(off_tokens + (size_t)nb * bs * sizeof(int32_t), 64);
  size_t total = MFS_ALIGN_UP(off_index + (size_t)index_cap * sizeof(int32_t), 64);
  if (total < off_index) return MFS_ENOMEM;

  kvc_pool *p = calloc(1, sizeof(*p));
  if (!p) return MFS_ENOMEM;
  p->mem = aligned_alloc(64, total);
  if (!p->mem) {
    free(p);
    return MFS_ENOMEM;
  }
  uint8_t *m = p->mem;
  p->g = *g;
  p->k_bytes = bs * row_bytes(g, g->k_elems);
  p->layer_stride = layer_stride(g);
  p->block_stride = bb;
  p->n_blocks = (int32_t)nb;
  p->data = m;
  p->blocks = (kvc_block *)(m + off_blocks);
  p->tokens = (int32_t *)(m + off_tokens);
  p->index = (int32_t *)(m + off_index);
  p->index_mask = index_cap - 1;
  p->hash_fn = kvc_hash_tokens;
  p->free_list = (kvc_list){KVC_NIL, KVC_NIL, 0};
  p->lru = (kvc_list){KVC_NIL, KVC_NIL, 0};
  memset(p->blocks, 0, (size_t)nb * sizeof(kvc_block));
  memset(p->tokens, 0, (size_t)nb * bs * sizeof(int32_t));
  for (uint64_t i = 0; i < index_cap; i++) p->index[i] = KVC_NIL;
  for (int32_t b = 0; b < p->n_blocks; b++) {
    p->blocks[b].parent = KVC_NIL;
    list_push_tail(p, &p->free_list, b);
  }
  *out = p;
  return 0;
}

void kvc_pool_free(kvc_pool *p) {
  if (!p) return;
  while (p->seqs) kvc_seq_free(p, p->seqs);
  free(p->mem);
  free(p);
}

const kvc_geom *kvc_pool_geom(const kvc_pool *p) { return &p->g; }

void kvc_pool_stats(const kvc_pool *p, kvc_stats *out) {
  memset(out, 0, sizeof(*out));
  out->blocks_total = p->n_blocks;
  out->blocks_cached_free = p->lru.n;
  out->blocks_free = p->free_list.n;
  out->blocks_used = p->n_blocks - p->lru.n - p->free_list.n;
  out->tokens_capacity = (int64_t)p->n_blocks * p->g.block_size;
  out->bytes_per_token = (int64_t)kvc_bytes_per_token(&p->g);
  out->prefix_queries_tokens = p->prefix_queries_tokens;
  out->prefix_hits_tokens = p->prefix_hits_tokens;
  out->n_seqs = p->n_seqs;
  out->blocks_indexed = p->n_indexed;
}

void *kvc_block_k(const kvc_pool *p, int32_t block, int layer) {
  if (block < 0 || block >= p->n_blocks || layer < 0 || layer >= p->g.n_layers) return NULL;
  return p->data + (size_t)block * p->block_stride + (size_t)layer * p->layer_stride;
}

void *kvc_block_v(const kvc_pool *p, int32_t block, int layer) {
  if (p->g.v_elems == 0) return NULL;
  uint8_t *k = kvc_block_k(p, block, layer);
  return k ? k + p->k_bytes : NULL;
}

/* ---- sequences --------------------------------------------------------- */

static void seq_link(kvc_pool *p, kvc_seq *s) {
  s->prev = NULL;
  s->next = p->seqs;
  if (p->seqs) p->seqs->prev = s;
  p->seqs = s;
  p->n_seqs++;
}

int kvc_seq_new(kvc_pool *p, kvc_seq **out) {
  kvc_seq *s = calloc(1, sizeof(*s));
  if (!s) return MFS_ENOMEM;
  s->last_hash = KVC_HASH_SEED;
  s->canon_id = KVC_NIL;
  seq_link(p, s);
  *out = s;
  return 0;
}

void kvc_seq_free(kvc_pool *p, kvc_seq *s) {
  if (!s) return;
  for (int i = s->n_table - 1; i >= 0; i--) block_release(p, s->table[i]);
  if (s->prev)
    s->prev->next = s->next;
  else
    p->seqs = s->next;
  if (s->next) s->next->prev = s->prev;
  p->n_seqs--;
  free(s->table);
  free(s);
}

/* Grows the table's capacity to at least n entries (geometrically). */
static int table_reserve(kvc_seq *s, int n) {
  if (n <= s->cap_table) return 0;
  int cap = s->cap_table ? s->cap_table : 8;
  while (cap < n) cap = cap > INT32_MAX / 2 ? n : cap * 2;
  int32_t *t = realloc(s->table, (size_t)cap * sizeof(int32_t));
  if (!t) return MFS_ENOMEM;
  s->table = t;
  s->cap_table = cap;
  return 0;
}

int kvc_seq_match_prefix(kvc_pool *p, kvc_seq *s, const int32_t *tokens, int n) {
  if (n < 0 || (n > 0 && !tokens)) return MFS_EINVAL;
  if (s->len != 0 || s->n_table != 0) return MFS_ESTATE;
  int bs = p->g.block_size;
  int n_full = n / bs;
  /* The table for the whole prompt is allocated first, so a failure
   * leaves everything as it was; kvc_seq_reserve will need it anyway. */
  if (table_reserve(s, n_full) != 0) return MFS_ENOMEM;
  uint64_t ph = KVC_HASH_SEED;
  int32_t parent = KVC_NIL;
  uint64_t pgen = 0;
  int found = 0;
  for (; found < n_full; found++) {
    const int32_t *t = tokens + (size_t)found * bs;
    uint64_t h = p->hash_fn(ph, t, bs);
    int32_t b = index_find(p, h, ph, parent, pgen, t);
    if (b == KVC_NIL) break;
    if (p->blocks[b].ref == 0) list_remove(p, &p->lru, b);
    p->blocks[b].ref++;
    s->table[found] = b;
    ph = h;
    parent = b;
    pgen = p->blocks[b].gen;
  }
  s->n_table = found;
  s->len = s->n_reserved = found * bs;
  s->last_hash = ph;
  s->canon_id = parent;
  s->canon_gen = pgen;
  p->prefix_queries_tokens += n;
  p->prefix_hits_tokens += (int64_t)found * bs;
  return found * bs;
}

/* May tokens be written into this block in place? */
static int block_writable(const kvc_pool *p, int32_t b) {
  return p->blocks[b].ref == 1 && !p->blocks[b].indexed;
}

int kvc_seq_reserve(kvc_pool *p, kvc_seq *s, int n_total) {
  if (n_total < s->len) return MFS_EINVAL;
  if (n_total == s->len) return 0;
  int bs = p->g.block_size;
  int need_table = (int)(((int64_t)n_total + bs - 1) / bs);
  int first = s->len / bs; /* the block holding position len */
  int last_old = MFS_MIN(s->n_table, need_table);
  int64_t need = need_table > s->n_table ? need_table - s->n_table : 0;
  for (int i = first; i < last_old; i++)
    if (!block_writable(p, s->table[i])) need++;
  if (need > n_available(p)) return KVC_FULL;
  if (table_reserve(s, need_table) != 0) return MFS_ENOMEM;

  for (int i = first; i < last_old; i++) {
    int32_t old = s->table[i];
    if (block_writable(p, old)) continue;
    int32_t nb = block_acquire(p);
    if ((int64_t)i * bs < s->len) { /* holds committed tokens: copy them, all layers */
      memcpy(p->data + (size_t)nb * p->block_stride, p->data + (size_t)old * p->block_stride,
             p->block_stride);
      memcpy(p->tokens + (size_t)nb * bs, block_tokens(p, old), (size_t)bs * sizeof(int32_t));
    }
    s->table[i] = nb;
    block_release(p, old);
  }
  for (int i = s->n_table; i < need_table; i++) s->table[i] = block_acquire(p);
  if (need_table > s->n_table) s->n_table = need_table;
  if (n_total > s->n_reserved) s->n_reserved = n_total;
  return 0;
}

int kvc_seq_commit(kvc_pool *p, kvc_seq *s, const int32_t *tokens, int n) {
  if (n < 0 || n > s->n_reserved - s->len || (n > 0 && !tokens)) return MFS_EINVAL;
  int bs = p->g.block_size;
  for (int i = 0; i < n; i++) {
    int pos = s->len + i;
    p->tokens[(size_t)s->table[pos / bs] * bs + pos % bs] = tokens[i];
  }
  int old_full = s->len / bs;
  s->len += n;
  int new_full = s->len / bs;
  for (int i = old_full; i < new_full; i++) {
    int32_t b = s->table[i];
    const int32_t *t = block_tokens(p, b);
    uint64_t h = p->hash_fn(s->last_hash, t, bs);
    uint64_t ph = s->last_hash;
    s->last_hash = h;
    if (!parent_live(p, s->canon_id, s->canon_gen)) {
      s->canon_id = KVC_BROKEN; /* nothing can chain to this block any more */
      continue;
    }
    int32_t same = index_find(p, h, ph, s->canon_id, s->canon_gen, t);
    if (same != KVC_NIL) { /* keep our copy unindexed; chain on through the indexed one */
      s->canon_id = same;
      s->canon_gen = p->blocks[same].gen;
      continue;
    }
    kvc_block *bl = &p->blocks[b];
    bl->hash = h;
    bl->parent_hash = ph;
    bl->parent = s->canon_id;
    bl->parent_gen = s->canon_id == KVC_NIL ? 0 : s->canon_gen;
    bl->gen++;
    index_insert(p, b);
    s->canon_id = b;
    s->canon_gen = bl->gen;
  }
  return 0;
}

int kvc_seq_fork(kvc_pool *p, const kvc_seq *src, kvc_seq **out) {
  int bs = p->g.block_size;
  int nt = (src->len + bs - 1) / bs;
  kvc_seq *s = calloc(1, sizeof(*s));
  if (!s) return MFS_ENOMEM;
  if (table_reserve(s, nt) != 0) {
    free(s);
    return MFS_ENOMEM;
  }
  for (int i = 0; i < nt; i++) {
    s->table[i] = src->table[i];
    p->blocks[src->table[i]].ref++;
  }
  s->n_table = nt;
  s->len = s->n_reserved = src->len;
  s->last_hash = src->last_hash;
  s->canon_id = src->canon_id;
  s->canon_gen = src->canon_gen;
  seq_link(p, s);
  *out = s;
  return 0;
}

int kvc_seq_len(const kvc_seq *s) { return s->len; }

const int32_t *kvc_seq_blocks(const kvc_seq *s, int *n) {
  *n = s->n_table;
  return s->table;
}

/* ---- invariant check --------------------------------------------------- */

#define CHECK(cond, ...)                        \
  do {                                          \
    if (!(cond)) {                              \
      if (err && errlen) snprintf(err, errlen, __VA_ARGS__); \
      rc = MFS_ESTATE;                          \
      goto out;                                 \
    }                                           \
  } while (0)

/* Walks a list: links consistent, no cycle, each member marked once with
 * `mark` and in the state the list requires. */
static int check_list(const kvc_pool *p, const kvc_list *l, int indexed, uint8_t *where,
                      uint8_t mark, const char *name, char *err, size_t errlen) {
  int rc = 0;
  int64_t n = 0;
  int32_t prev = KVC_NIL;
  for (int32_t b = l->head; b != KVC_NIL; b = p->blocks[b].next) {
    CHECK(b >= 0 && b < p->n_blocks, "%s: bad block id %d", name, (int)b);
    CHECK(n < p->n_blocks, "%s: cycle", name);
    CHECK(where[b] == 0, "%s: block %d on two lists or twice", name, (int)b);
    where[b] = mark;
    CHECK(p->blocks[b].prev == prev, "%s: block %d bad prev link", name, (int)b);
    CHECK(p->blocks[b].ref == 0, "%s: block %d has ref %d", name, (int)b, (int)p->blocks[b].ref);
    CHECK(p->blocks[b].indexed == indexed, "%s: block %d indexed=%d", name, (int)b,
          (int)p->blocks[b].indexed);
    prev = b;
    n++;
  }
  CHECK(l->tail == prev, "%s: tail %d, last %d", name, (int)l->tail, (int)prev);
  CHECK(l->n == n, "%s: count %lld, walked %lld", name, (long long)l->n, (long long)n);
out:
  return rc;
}

int kvc_pool_check(const kvc_pool *p, char *err, size_t errlen) {
  int rc = 0;
  int32_t nb = p->n_blocks;
  int bs = p->g.block_size;
  uint8_t *where = calloc((size_t)nb, 1); /* 1 free list, 2 LRU */
  uint8_t *in_index = calloc((size_t)nb, 1);
  int64_t *refs = calloc((size_t)nb, sizeof(int64_t));
  if (!where || !in_index || !refs) {
    rc = MFS_ENOMEM;
    if (err && errlen) snprintf(err, errlen, "out of memory");
    goto out;
  }
  if (err && errlen) err[0] = '\0';

  rc = check_list(p, &p->free_list, 0, where, 1, "free list", err, errlen);
  if (rc) goto out;
  rc = check_list(p, &p->lru, 1, where, 2, "LRU", err, errlen);
  if (rc) goto out;

  /* Tables: count references. */
  int64_t n_seqs = 0;
  const kvc_seq *prev = NULL;
  for (const kvc_seq *s = p->seqs; s; s = s->next) {
    CHECK(n_seqs < (int64_t)1 << 40, "sequence list: cycle");
    CHECK(s->prev == prev, "sequence list: bad prev link");
    CHECK(s->len >= 0 && s->len <= s->n_reserved, "seq: len %d, reserved %d", s->len, s->n_reserved);
    CHECK(s->n_table == (int)(((int64_t)s->n_reserved + bs - 1) / bs),
          "seq: %d table entries for %d reserved tokens", s->n_table, s->n_reserved);
    CHECK(s->n_table <= s->cap_table || s->n_table == 0, "seq: table over capacity");
    CHECK(s->canon_id == KVC_NIL || s->canon_id == KVC_BROKEN ||
              (s->canon_id >= 0 && s->canon_id < nb),
          "seq: bad canonical block %d", (int)s->canon_id);
    for (int i = 0; i < s->n_table; i++) {
      int32_t b = s->table[i];
      CHECK(b >= 0 && b < nb, "seq: table entry %d is %d", i, (int)b);
      refs[b]++;
    }
    prev = s;
    n_seqs++;
  }
  CHECK(n_seqs == p->n_seqs, "n_seqs %lld, list holds %lld", (long long)p->n_seqs,
        (long long)n_seqs);

  int64_t n_used = 0, n_indexed = 0;
  for (int32_t b = 0; b < nb; b++) {
    const kvc_block *bl = &p->blocks[b];
    CHECK(bl->ref >= 0, "block %d: ref %d", (int)b, (int)bl->ref);
    CHECK(bl->ref == refs[b], "block %d: ref %d, tables hold %lld", (int)b, (int)bl->ref,
          (long long)refs[b]);
    if (bl->ref > 0) {
      CHECK(where[b] == 0, "block %d: used (ref %d) but on a list", (int)b, (int)bl->ref);
      n_used++;
    } else {
      CHECK(where[b] == (bl->indexed ? 2 : 1), "block %d: ref 0, indexed=%d, not on its list",
            (int)b, (int)bl->indexed);
    }
    if (bl->indexed) {
      n_indexed++;
      uint64_t h = p->hash_fn(bl->parent_hash, block_tokens(p, b), bs);
      CHECK(h == bl->hash, "block %d: stored hash does not match its tokens", (int)b);
      if (bl->parent == KVC_NIL)
        CHECK(bl->parent_hash == KVC_HASH_SEED, "block %d: first block, parent hash not the seed",
              (int)b);
      else
        CHECK(bl->parent >= 0 && bl->parent < nb, "block %d: bad parent %d", (int)b,
              (int)bl->parent);
      if (bl->parent >= 0 && parent_live(p, bl->parent, bl->parent_gen))
        CHECK(p->blocks[bl->parent].hash == bl->parent_hash,
              "block %d: parent %d's hash differs from the chained one", (int)b, (int)bl->parent);
    }
  }
  CHECK(n_indexed == p->n_indexed, "n_indexed %lld, blocks say %lld", (long long)p->n_indexed,
        (long long)n_indexed);
  CHECK(n_used + p->free_list.n + p->lru.n == nb, "used %lld + free %lld + cached %lld != %d",
        (long long)n_used, (long long)p->free_list.n, (long long)p->lru.n, (int)nb);

  /* Index: entries name indexed blocks once each, reachable from home. */
  int64_t n_entries = 0;
  for (uint64_t i = 0; i <= p->index_mask; i++) {
    int32_t b = p->index[i];
    if (b == KVC_NIL) continue;
    CHECK(b >= 0 && b < nb, "index slot %llu: bad block %d", (unsigned long long)i, (int)b);
    CHECK(p->blocks[b].indexed, "index slot %llu: block %d not marked indexed",
          (unsigned long long)i, (int)b);
    CHECK(!in_index[b], "block %d indexed twice", (int)b);
    in_index[b] = 1;
    for (uint64_t j = p->blocks[b].hash & p->index_mask; j != i; j = (j + 1) & p->index_mask)
      CHECK(p->index[j] != KVC_NIL, "index slot %llu: block %d unreachable from its home slot",
            (unsigned long long)i, (int)b);
    n_entries++;
  }
  CHECK(n_entries == n_indexed, "index holds %lld entries, %lld blocks indexed",
        (long long)n_entries, (long long)n_indexed);
  CHECK(p->prefix_hits_tokens >= 0 && p->prefix_hits_tokens <= p->prefix_queries_tokens,
        "prefix hits %lld > queries %lld", (long long)p->prefix_hits_tokens,
        (long long)p->prefix_queries_tokens);

  kvc_stats st;
  kvc_pool_stats(p, &st);
  CHECK(st.blocks_used == n_used && st.blocks_free + st.blocks_cached_free + st.blocks_used ==
                                        st.blocks_total,
        "stats do not add up");
out:
  free(where);
  free(in_index);
  free(refs);
  return rc;
}

int kvc_pool_block_states(const kvc_pool *p, uint8_t *state, uint16_t *refs, int max) {
  int n = p->n_blocks < max ? p->n_blocks : max;
  for (int i = 0; i < n; i++) {
    const kvc_block *b = &p->blocks[i];
    state[i] = b->ref > 0 ? 2 : b->indexed ? 1 : 0;
    refs[i] = (uint16_t)(b->ref > 65535 ? 65535 : b->ref);
  }
  return n;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int kvc_pool_prefix_hashes(const kvc_pool *p, uint64_t *out, int max) {
  int n = 0;
  for (uint64_t i = 0; i <= p->index_mask && n < max; i++)
    if (p->index[i] != KVC_NIL) out[n++] = p->blocks[p->index[i]].hash;
  qsort(out, (size_t)n, sizeof *out, cmp_u64);
  int k = 0;
  for (int i = 0; i < n; i++)
    if (k == 0 || out[i] != out[k - 1]) out[k++] = out[i];
  return k;
}

const char *kvc_dtype_name(kvc_dtype d) {
  switch (d) {
  case KVC_F32: return "f32";
  case KVC_F16: return "f16";
  case KVC_I8: return "int8";
  }
  return "?";
}
