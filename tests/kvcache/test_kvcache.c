/* test_kvcache.c: unit tests of kvcache/kvcache.c.
 *
 * Each kvc_* function gets direct cases (bad input, KVC_FULL leaving state
 * unchanged, prefix reuse, copy-on-write after fork, LRU eviction order,
 * hash collisions forced through the internal hash hook), and a randomized
 * operation sequence runs kvc_pool_check after every operation against a
 * shadow model: each token's K and V slots get bytes derived from the hash
 * of the whole prefix ending at that token, so reading a sequence back
 * proves that matched, forked and copied blocks hold the right data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kvcache.h"
#include "kvcache_int.h"

static int g_fail;
static const char *g_test;

#define T(c)                                                                \
  do {                                                                      \
    if (!(c)) {                                                             \
      fprintf(stderr, "%s:%d: [%s] failed: %s\n", __FILE__, __LINE__, g_test, #c); \
      g_fail++;                                                             \
      return;                                                               \
    }                                                                       \
  } while (0)

#define T_OK(p)                                                             \
  do {                                                                      \
    char e_[256];                                                           \
    if (kvc_pool_check((p), e_, sizeof e_) != 0) {                          \
      fprintf(stderr, "%s:%d: [%s] kvc_pool_check: %s\n", __FILE__, __LINE__, g_test, e_); \
      g_fail++;                                                             \
      return;                                                               \
    }                                                                       \
  } while (0)

/* ---- data pattern ------------------------------------------------------ */

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/* ph[i]: hash of tokens[0..i], the "KV" a token gets depends on its prefix. */
static void prefix_hashes(const int32_t *toks, int n, uint64_t *ph) {
  uint64_t h = 12345;
  for (int i = 0; i < n; i++) {
    h = mix(h ^ ((uint64_t)(uint32_t)toks[i] << 1) ^ (uint64_t)i << 40);
    ph[i] = h;
  }
}

static uint8_t pat(uint64_t ph, int layer, int kv, size_t j) {
  return (uint8_t)((ph >> ((j & 7) * 8)) ^ (uint64_t)(layer * 31 + kv * 17 + (int)(j >> 3) * 13));
}


/* Writes the pattern of positions [from, to) of a sequence's tokens. */
static void write_pos(kvc_pool *p, kvc_seq *s, const int32_t *toks, int from, int to) {
  const kvc_geom *g = kvc_pool_geom(p);
  uint64_t *ph = malloc(sizeof(uint64_t) * (size_t)(to > 0 ? to : 1));
  prefix_hashes(toks, to, ph);
  int nt;
  const int32_t *tab = kvc_seq_blocks(s, &nt);
  size_t kb = kvc_k_row_bytes(g), vb = kvc_v_row_bytes(g);
  for (int pos = from; pos < to; pos++) {
    int32_t b = tab[pos / g->block_size];
    int slot = pos % g->block_size;
    for (int l = 0; l < g->n_layers; l++) {
      uint8_t *k = (uint8_t *)kvc_block_k(p, b, l) + (size_t)slot * kb;
      for (size_t j = 0; j < kb; j++) k[j] = pat(ph[pos], l, 0, j);
      if (vb) {
        uint8_t *v = (uint8_t *)kvc_block_v(p, b, l) + (size_t)slot * vb;
        for (size_t j = 0; j < vb; j++) v[j] = pat(ph[pos], l, 1, j);
      }
    }
  }
  free(ph);
}

/* Do positions [0, n) of s hold the pattern of toks? */
static int data_ok(const kvc_pool *p, const kvc_seq *s, const int32_t *toks, int n) {
  const kvc_geom *g = kvc_pool_geom(p);
  uint64_t ph[1024];
  if (n > 1024) return 0;
  prefix_hashes(toks, n, ph);
  int nt;
  const int32_t *tab = kvc_seq_blocks(s, &nt);
  if (nt * g->block_size < n) return 0;
  size_t kb = kvc_k_row_bytes(g), vb = kvc_v_row_bytes(g);
  for (int pos = 0; pos < n; pos++) {
    int32_t b = tab[pos / g->block_size];
    int slot = pos % g->block_size;
    for (int l = 0; l < g->n_layers; l++) {
      const uint8_t *k = (const uint8_t *)kvc_block_k(p, b, l) + (size_t)slot * kb;
      for (size_t j = 0; j < kb; j++)
        if (k[j] != pat(ph[pos], l, 0, j)) return 0;
      if (vb) {
        const uint8_t *v = (const uint8_t *)kvc_block_v(p, b, l) + (size_t)slot * vb;
        for (size_t j = 0; j < vb; j++)
          if (v[j] != pat(ph[pos], l, 1, j)) return 0;
      }
    }
  }
  return 1;
}

/* Reserves, "computes" and commits toks[len, n) of s. Returns reserve's rc. */
static int extend(kvc_pool *p, kvc_seq *s, const int32_t *toks, int n) {
  int len = kvc_seq_len(s);
  int rc = kvc_seq_reserve(p, s, n);
  if (rc != 0) return rc;
  write_pos(p, s, toks, len, n);
  return kvc_seq_commit(p, s, toks + len, n - len);
}

static const kvc_geom G4 = {.n_layers = 2, .block_size = 4, .k_elems = 3, .v_elems = 2,
                            .dtype = KVC_F32};

static kvc_pool *mkpool(const kvc_geom *g, int n_blocks) {
  kvc_pool *p = NULL;
  if (kvc_pool_new(&p, g, (uint64_t)n_blocks * kvc_block_bytes(g)) != 0) return NULL;
  return p;
}

static int refs_of(const kvc_pool *p, int32_t b) { return p->blocks[b].ref; }

static int same_stats(const kvc_stats *a, const kvc_stats *b) { return memcmp(a, b, sizeof *a) == 0; }

/* ---- unit tests -------------------------------------------------------- */

static void test_geometry(void) {
  g_test = "geometry";
  T(kvc_block_bytes(&G4) == 2 * 128); /* 4 tokens * 5 elems * 4 B = 80 -> 128 */
  T(kvc_bytes_per_token(&G4) == 40);
  kvc_geom f16 = {.n_layers = 3, .block_size = 16, .k_elems = 64, .v_elems = 0, .dtype = KVC_F16};
  T(kvc_block_bytes(&f16) == 3 * 2048);
  T(kvc_bytes_per_token(&f16) == 3 * 128);
  /* int8: a row is the values, then one F16 scale per group */
  kvc_geom i8 = {.n_layers = 8, .block_size = 16, .k_elems = 64, .v_elems = 0, .dtype = KVC_I8, .qgroup = 32};
  T(kvc_k_row_bytes(&i8) == 64 + 2 * 2 && kvc_v_row_bytes(&i8) == 0);
  T(kvc_bytes_per_token(&i8) == 8 * 68); /* the bundled MFA-KR model at group 32: 544 B, 53% of F16 */
  T(kvc_block_bytes(&i8) == 8 * MFS_ALIGN_UP(16 * 68, 32));
  i8.qgroup = 64; /* one scale per head: 16 x 66 bytes = 33 x 32, no padding (64 would pad it to 1088) */
  T(kvc_bytes_per_token(&i8) == 8 * 66 && kvc_block_bytes(&i8) == 8 * 16 * 66);
  i8.v_elems = 128;
  i8.qgroup = 64;
  T(kvc_v_row_bytes(&i8) == 128 + 2 * 2 && kvc_bytes_per_token(&i8) == 8 * (66 + 132));
  T(strcmp(kvc_dtype_name(KVC_I8), "int8") == 0 && strcmp(kvc_dtype_name(KVC_F16), "f16") == 0);
  kvc_geom badq[4] = {i8, i8, i8, i8};
  badq[0].qgroup = 0;  /* no group */
  badq[1].qgroup = 48; /* does not divide 64 */
  badq[2].v_elems = 100; /* nor 100 */
  badq[3].qgroup = 1, badq[3].k_elems = 63; /* odd: the scales would be misaligned */
  for (int i = 0; i < 4; i++) {
    T(kvc_block_bytes(&badq[i]) == 0 && kvc_bytes_per_token(&badq[i]) == 0 && kvc_k_row_bytes(&badq[i]) == 0);
    kvc_pool *q = NULL;
    T(kvc_pool_new(&q, &badq[i], 1 << 20) == MFS_EINVAL && q == NULL);
  }

  kvc_geom bad[5] = {G4, G4, G4, G4, G4};
  bad[0].n_layers = 0;
  bad[1].block_size = 0;
  bad[2].k_elems = 0;
  bad[3].v_elems = -1;
  bad[4].dtype = (kvc_dtype)7;
  kvc_pool *p = (kvc_pool *)&g_fail; /* must stay untouched on failure */
  for (int i = 0; i < 5; i++) {
    T(kvc_block_bytes(&bad[i]) == 0);
    T(kvc_pool_new(&p, &bad[i], 1 << 20) == MFS_EINVAL);
  }
  T(kvc_pool_new(&p, &G4, kvc_block_bytes(&G4) - 1) == MFS_EINVAL);
  T(kvc_pool_new(&p, &G4, 0) == MFS_EINVAL);
  T(p == (kvc_pool *)&g_fail);
  T(kvc_pool_new(NULL, &G4, 1 << 20) == MFS_EINVAL);

  T(kvc_pool_new(&p, &G4, 3 * kvc_block_bytes(&G4) + 100) == 0);
  kvc_stats st;
  kvc_pool_stats(p, &st);
  T(st.blocks_total == 3 && st.blocks_free == 3 && st.blocks_used == 0 &&
    st.blocks_cached_free == 0);
  T(st.tokens_capacity == 12 && st.bytes_per_token == 40 && st.n_seqs == 0);
  T(st.prefix_queries_tokens == 0 && st.prefix_hits_tokens == 0);
  T(kvc_pool_geom(p)->k_elems == 3);
  for (int b = 0; b < 3; b++)
    for (int l = 0; l < 2; l++) {
      uint8_t *k = kvc_block_k(p, b, l), *v = kvc_block_v(p, b, l);
      T(((uintptr_t)k & 63) == 0);
      T(v == k + 4 * 3 * 4);
      if (b || l) T(k != kvc_block_k(p, 0, 0));
    }
  T((uint8_t *)kvc_block_k(p, 1, 0) - (uint8_t *)kvc_block_k(p, 0, 0) == 256);
  T(kvc_block_k(p, 3, 0) == NULL && kvc_block_k(p, 0, 2) == NULL);
  T_OK(p);
  kvc_pool_free(p);

  p = mkpool(&f16, 2);
  T(p);
  T(kvc_block_v(p, 0, 0) == NULL);
  T(((uintptr_t)kvc_block_k(p, 1, 2) & 63) == 0);
  kvc_pool_free(p);
  kvc_pool_free(NULL);
}

static void test_reserve_commit(void) {
  g_test = "reserve_commit";
  kvc_pool *p = mkpool(&G4, 8);
  T(p);
  kvc_seq *s;
  T(kvc_seq_new(p, &s) == 0);
  int n;
  kvc_seq_blocks(s, &n);
  T(n == 0 && kvc_seq_len(s) == 0);
  T(kvc_seq_reserve(p, s, 0) == 0);
  T(kvc_seq_reserve(p, s, 5) == 0);
  kvc_seq_blocks(s, &n);
  T(n == 2 && kvc_seq_len(s) == 0);
  kvc_stats st;
  kvc_pool_stats(p, &st);
  T(st.blocks_used == 2 && st.blocks_free == 6 && st.n_seqs == 1);
  T_OK(p);

  int32_t toks[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  T(kvc_seq_commit(p, s, toks, 6) == MFS_EINVAL); /* beyond the reservation */
  T(kvc_seq_commit(p, s, toks, -1) == MFS_EINVAL);
  T(kvc_seq_len(s) == 0);
  write_pos(p, s, toks, 0, 3);
  T(kvc_seq_commit(p, s, toks, 3) == 0);
  T(kvc_seq_len(s) == 3 && p->n_indexed == 0);
  write_pos(p, s, toks, 3, 5);
  T(kvc_seq_commit(p, s, toks + 3, 2) == 0);
  T(kvc_seq_len(s) == 5 && p->n_indexed == 1); /* block 0 became full */
  T(kvc_seq_commit(p, s, toks, 1) == MFS_EINVAL);
  T(kvc_seq_commit(p, s, toks, 0) == 0);
  T(kvc_seq_reserve(p, s, 4) == MFS_EINVAL); /* below len */
  T(kvc_seq_reserve(p, s, 3) == MFS_EINVAL);
  T(kvc_seq_reserve(p, s, 5) == 0);
  T(kvc_seq_reserve(p, s, 6) == 0); /* within the reservation: no new block */
  kvc_seq_blocks(s, &n);
  T(n == 2);
  T(extend(p, s, toks, 16) == 0);
  kvc_seq_blocks(s, &n);
  T(n == 4 && kvc_seq_len(s) == 16 && p->n_indexed == 4);
  T(data_ok(p, s, toks, 16));
  T_OK(p);

  T(kvc_seq_reserve(p, s, 18) == 0); /* one more block, partly reserved */
  kvc_pool_stats(p, &st);
  T(st.blocks_used == 5);
  kvc_seq_free(p, s);
  kvc_pool_stats(p, &st);
  T(st.blocks_used == 0 && st.blocks_cached_free == 4 && st.blocks_free == 4 && st.n_seqs == 0);
  T_OK(p);
  kvc_seq_free(p, NULL);

  /* kvc_pool_free takes live sequences with it (ASan checks the leak). */
  T(kvc_seq_new(p, &s) == 0);
  T(extend(p, s, toks, 7) == 0);
  kvc_pool_free(p);
}

static void test_full_unchanged(void) {
  g_test = "full_unchanged";
  kvc_pool *p = mkpool(&G4, 4);
  T(p);
  int32_t a[16] = {1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4};
  kvc_seq *s, *t, *f;
  T(kvc_seq_new(p, &s) == 0 && kvc_seq_new(p, &t) == 0);
  T(extend(p, s, a, 10) == 0); /* 3 blocks, last partial */
  kvc_stats before, after;
  kvc_pool_stats(p, &before);
  T(kvc_seq_reserve(p, t, 8) == KVC_FULL);
  kvc_pool_stats(p, &after);
  T(same_stats(&before, &after));
  int n;
  kvc_seq_blocks(t, &n);
  T(n == 0);
  T_OK(p);
  T(kvc_seq_reserve(p, s, 17) == KVC_FULL); /* needs 2 more */
  kvc_pool_stats(p, &after);
  T(same_stats(&before, &after));
  kvc_seq_blocks(s, &n);
  T(n == 3 && kvc_seq_len(s) == 10);
  T_OK(p);

  /* Fork sharing the partial block; the fork's write needs a copy (1 block)
   * plus one new block, only 1 free: KVC_FULL, nothing changed. */
  T(kvc_seq_fork(p, s, &f) == 0);
  int32_t tab_before[8];
  const int32_t *tb = kvc_seq_blocks(f, &n);
  memcpy(tab_before, tb, sizeof(int32_t) * (size_t)n);
  kvc_pool_stats(p, &before);
  T(kvc_seq_reserve(p, f, 13) == KVC_FULL);
  kvc_pool_stats(p, &after);
  T(same_stats(&before, &after));
  int n2;
  tb = kvc_seq_blocks(f, &n2);
  T(n2 == n && memcmp(tb, tab_before, sizeof(int32_t) * (size_t)n) == 0);
  T(refs_of(p, tab_before[2]) == 2);
  T_OK(p);
  /* Exactly enough: the copy uses the last free block. */
  T(kvc_seq_reserve(p, f, 12) == 0);
  tb = kvc_seq_blocks(f, &n2);
  T(tb[2] != tab_before[2] && refs_of(p, tab_before[2]) == 1);
  T(data_ok(p, f, a, 10) && data_ok(p, s, a, 10));
  kvc_pool_stats(p, &after);
  T(after.blocks_free == 0 && after.blocks_used == 4);
  T(kvc_seq_reserve(p, t, 1) == KVC_FULL);
  T_OK(p);
  kvc_pool_free(p);
}

static void test_prefix_reuse(void) {
  g_test = "prefix_reuse";
  kvc_pool *p = mkpool(&G4, 16);
  T(p);
  int32_t a[20] = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24};
  kvc_seq *s1, *s2, *s3, *s4;
  T(kvc_seq_new(p, &s1) == 0);
  T(kvc_seq_match_prefix(p, s1, a, 10) == 0); /* empty cache */
  T(extend(p, s1, a, 10) == 0);
  const int32_t *t1 = kvc_seq_blocks(s1, &(int){0});
  int32_t b0 = t1[0], b1 = t1[1];
  T(kvc_seq_match_prefix(p, s1, a, 10) == MFS_ESTATE);
  kvc_seq_free(p, s1); /* finished: blocks 0,1 cached */
  kvc_stats st;
  kvc_pool_stats(p, &st);
  T(st.blocks_cached_free == 2 && st.blocks_used == 0);
  T(st.prefix_queries_tokens == 10 && st.prefix_hits_tokens == 0);

  T(kvc_seq_new(p, &s2) == 0);
  T(kvc_seq_match_prefix(p, s2, a, 14) == 8);
  int n;
  const int32_t *t2 = kvc_seq_blocks(s2, &n);
  T(n == 2 && t2[0] == b0 && t2[1] == b1 && kvc_seq_len(s2) == 8);
  T(data_ok(p, s2, a, 8));
  kvc_pool_stats(p, &st);
  T(st.blocks_cached_free == 0 && st.blocks_used == 2);
  T(st.prefix_queries_tokens == 24 && st.prefix_hits_tokens == 8);
  T_OK(p);
  T(extend(p, s2, a, 16) == 0); /* running, 4 full blocks */
  T(data_ok(p, s2, a, 16));

  /* Reuse across a running sequence: s3 shares s2's blocks. */
  T(kvc_seq_new(p, &s3) == 0);
  T(kvc_seq_match_prefix(p, s3, a, 20) == 16);
  const int32_t *t3 = kvc_seq_blocks(s3, &n);
  T(n == 4 && refs_of(p, t3[3]) == 2 && refs_of(p, t3[0]) == 2);
  T(data_ok(p, s3, a, 16));
  T(extend(p, s3, a, 20) == 0);
  T(data_ok(p, s3, a, 20) && data_ok(p, s2, a, 16));
  T_OK(p);

  /* Only whole blocks; a prompt shorter than a block never hits. */
  T(kvc_seq_new(p, &s4) == 0);
  T(kvc_seq_match_prefix(p, s4, a, 3) == 0);
  T(kvc_seq_match_prefix(p, s4, a, 0) == 0);
  T(kvc_seq_match_prefix(p, s4, a, 7) == 4);
  T(kvc_seq_match_prefix(p, s4, a, 7) == MFS_ESTATE);
  kvc_seq_free(p, s4);
  /* One token differs in the second block: only the first block hits. */
  int32_t b[20];
  memcpy(b, a, sizeof b);
  b[6] = 99;
  T(kvc_seq_new(p, &s4) == 0);
  T(kvc_seq_match_prefix(p, s4, b, 20) == 4);
  kvc_seq_free(p, s4);
  b[6] = a[6];
  b[0] = 99; /* first differs: nothing hits even though later blocks equal */
  T(kvc_seq_new(p, &s4) == 0);
  T(kvc_seq_match_prefix(p, s4, b, 20) == 0);
  T(extend(p, s4, b, 20) == 0); /* same tokens 4..20 under another parent */
  T(data_ok(p, s4, b, 20));
  T(kvc_seq_match_prefix(p, s4, b, 4) == MFS_ESTATE);
  T(kvc_seq_match_prefix(p, s4, NULL, 4) == MFS_EINVAL);
  T_OK(p);

  /* A duplicate computed while the original is indexed stays unindexed and
   * goes to the free list on release. */
  kvc_seq *s5;
  T(kvc_seq_new(p, &s5) == 0);
  T(extend(p, s5, a, 8) == 0);
  int64_t idx = p->n_indexed;
  const int32_t *t5 = kvc_seq_blocks(s5, &n);
  T(!p->blocks[t5[0]].indexed && !p->blocks[t5[1]].indexed);
  kvc_pool_stats(p, &st);
  int64_t free_before = st.blocks_free;
  kvc_seq_free(p, s5);
  kvc_pool_stats(p, &st);
  T(st.blocks_free == free_before + 2 && p->n_indexed == idx);
  T_OK(p);
  kvc_pool_free(p);
}

static void test_cow_fork(void) {
  g_test = "cow_fork";
  kvc_geom g = G4;
  g.dtype = KVC_F16;
  kvc_pool *p = mkpool(&g, 12);
  T(p);
  int32_t a[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  int32_t b[12] = {1, 2, 3, 4, 5, 6, 70, 80, 90, 100, 110, 120};
  kvc_seq *s, *f;
  T(kvc_seq_new(p, &s) == 0);
  T(extend(p, s, a, 6) == 0);
  T(kvc_seq_fork(p, s, &f) == 0);
  int n, nf;
  const int32_t *ts = kvc_seq_blocks(s, &n), *tf = kvc_seq_blocks(f, &nf);
  T(n == 2 && nf == 2 && ts[0] == tf[0] && ts[1] == tf[1]);
  T(refs_of(p, ts[0]) == 2 && refs_of(p, ts[1]) == 2 && kvc_seq_len(f) == 6);
  int32_t shared = ts[1];
  kvc_stats st;
  kvc_pool_stats(p, &st);
  T(st.n_seqs == 2 && st.blocks_used == 2);
  T_OK(p);

  /* The fork writes: its partial block is copied (all layers, K and V). */
  T(extend(p, f, b, 8) == 0);
  tf = kvc_seq_blocks(f, &nf);
  ts = kvc_seq_blocks(s, &n);
  T(tf[0] == ts[0] && tf[1] != shared && ts[1] == shared);
  T(refs_of(p, shared) == 1 && refs_of(p, tf[1]) == 1);
  T(data_ok(p, f, b, 8));
  T(data_ok(p, s, a, 6));
  /* The source writes in place now (its block is private again). */
  T(extend(p, s, a, 8) == 0);
  ts = kvc_seq_blocks(s, &n);
  T(ts[1] == shared);
  T(data_ok(p, s, a, 8) && data_ok(p, f, b, 8));
  T_OK(p);
  kvc_seq_free(p, f);

  /* Fork at a block boundary: no copy, the next write takes a new block. */
  int32_t ab[12];
  memcpy(ab, a, sizeof ab);
  ab[8] = 66;
  ab[9] = 67;
  T(kvc_seq_fork(p, s, &f) == 0);
  T(extend(p, f, ab, 10) == 0);
  tf = kvc_seq_blocks(f, &nf);
  T(nf == 3 && tf[1] == shared);
  T(data_ok(p, f, ab, 10) && data_ok(p, s, a, 8));
  kvc_seq_free(p, f);
  T_OK(p);

  /* A fork whose source is freed owns the partial block: no copy. */
  kvc_seq *s2;
  T(kvc_seq_new(p, &s2) == 0);
  T(extend(p, s2, b, 5) == 0);
  T(kvc_seq_fork(p, s2, &f) == 0);
  int32_t part = kvc_seq_blocks(s2, &n)[1];
  kvc_seq_free(p, s2);
  T(extend(p, f, b, 7) == 0);
  T(kvc_seq_blocks(f, &nf)[1] == part);
  T(data_ok(p, f, b, 7));
  kvc_seq_free(p, f);
  T_OK(p);

  /* The source reserved before the fork and commits without reserving
   * again: it writes past what the fork reads; the block fills and is
   * indexed while shared; the fork's next write must copy it (indexed
   * blocks are never written). */
  int32_t c[12] = {31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42};
  int32_t d[12] = {31, 32, 33, 34, 35, 36, 87, 88, 89, 90, 91, 92};
  kvc_seq *s3;
  T(kvc_seq_new(p, &s3) == 0);
  T(kvc_seq_reserve(p, s3, 8) == 0);
  write_pos(p, s3, c, 0, 6);
  T(kvc_seq_commit(p, s3, c, 6) == 0);
  T(kvc_seq_fork(p, s3, &f) == 0);
  write_pos(p, s3, c, 6, 8);
  T(kvc_seq_commit(p, s3, c + 6, 2) == 0);
  int32_t full = kvc_seq_blocks(s3, &n)[1];
  T(p->blocks[full].indexed && refs_of(p, full) == 2);
  T(data_ok(p, f, d, 6));
  kvc_seq_free(p, s3); /* the fork alone holds an indexed block */
  T(refs_of(p, full) == 1);
  T_OK(p);
  T(extend(p, f, d, 9) == 0);
  T(kvc_seq_blocks(f, &nf)[1] != full);
  T(data_ok(p, f, d, 9));
  kvc_seq *m;
  T(kvc_seq_new(p, &m) == 0);
  T(kvc_seq_match_prefix(p, m, c, 8) == 8); /* still c's data */
  T(kvc_seq_blocks(m, &n)[1] == full);
  T(data_ok(p, m, c, 8));
  T_OK(p);
  kvc_pool_free(p);
}

static void test_lru_order(void) {
  g_test = "lru_order";
  kvc_pool *p = mkpool(&G4, 6);
  T(p);
  int32_t a[8] = {1, 1, 1, 1, 2, 2, 2, 2};
  int32_t b[8] = {3, 3, 3, 3, 4, 4, 4, 4};
  int32_t c[12] = {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7};
  kvc_seq *sa, *sb, *sc, *sd;
  T(kvc_seq_new(p, &sa) == 0 && kvc_seq_new(p, &sb) == 0);
  T(extend(p, sa, a, 8) == 0 && extend(p, sb, b, 8) == 0);
  int32_t a0 = kvc_seq_blocks(sa, &(int){0})[0], a1 = kvc_seq_blocks(sa, &(int){0})[1];
  int32_t b0 = kvc_seq_blocks(sb, &(int){0})[0], b1 = kvc_seq_blocks(sb, &(int){0})[1];
  kvc_seq_free(p, sa);
  kvc_seq_free(p, sb);
  /* Released back to front: LRU is a1, a0, b1, b0. */
  T(p->lru.head == a1 && p->blocks[a1].next == a0 && p->blocks[a0].next == b1 &&
    p->lru.tail == b0);
  kvc_stats st;
  kvc_pool_stats(p, &st);
  T(st.blocks_free == 2 && st.blocks_cached_free == 4);

  /* Free blocks go first, then a1 is evicted. */
  T(kvc_seq_new(p, &sc) == 0);
  T(extend(p, sc, c, 12) == 0);
  const int32_t *tc = kvc_seq_blocks(sc, &(int){0});
  T(tc[2] == a1);
  kvc_pool_stats(p, &st);
  T(st.blocks_free == 0 && st.blocks_cached_free == 3);
  T_OK(p);
  /* a's chain is cut after a0; b is whole. A match pulls a0 off the LRU. */
  T(kvc_seq_new(p, &sd) == 0);
  T(kvc_seq_match_prefix(p, sd, a, 8) == 4);
  T(p->lru.head == b1 && p->lru.n == 2);
  kvc_seq_free(p, sd); /* a0 is now the most recently released */
  T(p->lru.tail == a0 && p->lru.head == b1);
  T(kvc_seq_new(p, &sd) == 0);
  T(kvc_seq_reserve(p, sd, 4) == 0);
  T(kvc_seq_blocks(sd, &(int){0})[0] == b1);
  T(kvc_seq_reserve(p, sd, 8) == 0);
  T(kvc_seq_blocks(sd, &(int){0})[1] == b0);
  T(p->lru.n == 1 && p->lru.head == a0);
  T(kvc_seq_reserve(p, sd, 16) == KVC_FULL); /* needs 2, only a0 left */
  T(p->lru.n == 1);
  T_OK(p);
  kvc_seq_free(p, sd);
  kvc_seq_free(p, sc);
  T_OK(p);
  kvc_pool_free(p);
}

static uint64_t hash_const(uint64_t ph, const int32_t *t, int n) {
  (void)ph;
  (void)t;
  (void)n;
  return 42;
}

static void test_collisions(void) {
  g_test = "collisions";
  kvc_pool *p = mkpool(&G4, 3);
  T(p);
  kvc_pool_set_hash_fn(p, hash_const); /* every block collides */
  int32_t a[8] = {1, 1, 1, 1, 2, 2, 2, 2};
  int32_t x[8] = {1, 1, 1, 1, 2, 2, 9, 2};
  int32_t b[8] = {3, 3, 3, 3, 2, 2, 2, 2};
  int32_t e[8] = {5, 5, 5, 5, 2, 2, 2, 2};
  kvc_seq *s, *t;
  T(kvc_seq_new(p, &s) == 0);
  T(extend(p, s, a, 8) == 0);
  kvc_seq_free(p, s);
  T(kvc_seq_new(p, &s) == 0);
  T(kvc_seq_match_prefix(p, s, x, 8) == 4); /* one token differs */
  T(data_ok(p, s, x, 4));
  kvc_seq_free(p, s);
  T(kvc_seq_new(p, &s) == 0);
  T(kvc_seq_match_prefix(p, s, b, 8) == 0); /* same 2nd block, other parent */
  kvc_seq_free(p, s);
  T_OK(p);

  /* A parent evicted and reused for other tokens must not chain to its old
   * child. a0 is cached; d computes a again: d0 is a duplicate (unindexed),
   * d1 is indexed with parent a0. Then a0 is evicted and reused for e0. */
  kvc_pool_free(p);
  p = mkpool(&G4, 3);
  T(p);
  kvc_pool_set_hash_fn(p, hash_const);
  T(kvc_seq_new(p, &s) == 0);
  T(extend(p, s, a, 4) == 0);
  int32_t a0 = kvc_seq_blocks(s, &(int){0})[0];
  kvc_seq_free(p, s);
  kvc_seq *d;
  T(kvc_seq_new(p, &d) == 0);
  T(kvc_seq_reserve(p, d, 8) == 0); /* the two free blocks, no match */
  write_pos(p, d, a, 0, 8);
  T(kvc_seq_commit(p, d, a, 8) == 0);
  int32_t d1 = kvc_seq_blocks(d, &(int){0})[1];
  T(!p->blocks[kvc_seq_blocks(d, &(int){0})[0]].indexed);
  T(p->blocks[d1].indexed && p->blocks[d1].parent == a0);
  T(kvc_seq_new(p, &t) == 0);
  T(extend(p, t, e, 4) == 0); /* evicts a0 */
  T(kvc_seq_blocks(t, &(int){0})[0] == a0 && p->blocks[a0].indexed);
  kvc_seq_free(p, t);
  T_OK(p);
  T(kvc_seq_new(p, &t) == 0);
  T(kvc_seq_match_prefix(p, t, e, 8) == 4);
  T(data_ok(p, t, e, 4));
  kvc_seq_free(p, t);
  /* d's canonical parent is gone: what it commits next is not indexed. */
  int64_t idx = p->n_indexed;
  T(kvc_seq_new(p, &t) == 0);
  T(kvc_seq_match_prefix(p, t, a, 8) == 0);
  kvc_seq_free(p, t);
  T(p->n_indexed == idx);
  T_OK(p);
  kvc_pool_free(p);

  /* Default hash: blocks differing in one position do not match. */
  p = mkpool(&G4, 8);
  T(p);
  T(kvc_seq_new(p, &s) == 0);
  T(extend(p, s, a, 8) == 0);
  for (int i = 0; i < 8; i++) {
    int32_t y[8];
    memcpy(y, a, sizeof y);
    y[i] += 1;
    T(kvc_seq_new(p, &t) == 0);
    T(kvc_seq_match_prefix(p, t, y, 8) == (i < 4 ? 0 : 4));
    kvc_seq_free(p, t);
  }
  T_OK(p);
  kvc_pool_free(p);
}

/* ---- randomized operations against a shadow model ---------------------- */

#define MAX_SEQ 8
#define MAX_TOK 64
#define N_HIST 12

typedef struct {
  kvc_seq *s;
  int32_t toks[MAX_TOK + 32]; /* computed tokens, then pending prompt */
  int len, n_prompt, reserved;
} shadow;

static uint64_t g_rng;
static uint32_t rnd(uint32_t n) {
  g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(g_rng >> 33) % n;
}

static uint64_t hash_weak(uint64_t ph, const int32_t *t, int n) { return kvc_hash_tokens(ph, t, n) & 3; }

/* The prefix-cache events replayed into a set of hashes: it must always be
 * the pool's set of distinct indexed hashes (kvc_pool_prefix_hashes), each
 * STORED hash must be its tokens' hash chained on its parent, and a parent
 * must already be known when its child is announced. */
typedef struct ev_shadow {
  kvc_pool *p;
  uint64_t set[64];
  int n;
  int64_t n_stored, n_removed;
  char err[160];
} ev_shadow;

static int ev_find(const ev_shadow *e, uint64_t h) {
  for (int i = 0; i < e->n; i++)
    if (e->set[i] == h) return i;
  return -1;
}

static void ev_record(void *ctx, const kvc_event *ev) {
  ev_shadow *e = ctx;
  if (e->err[0]) return;
  if (ev->kind == KVC_EV_STORED) {
    e->n_stored++;
    if (ev_find(e, ev->hash) >= 0) snprintf(e->err, sizeof e->err, "STORED %llx twice", (unsigned long long)ev->hash);
    else if (ev->n_tokens != kvc_pool_geom(e->p)->block_size) snprintf(e->err, sizeof e->err, "STORED with %d tokens", ev->n_tokens);
    else if (e->p->hash_fn(ev->parent_hash, ev->tokens, ev->n_tokens) != ev->hash)
      snprintf(e->err, sizeof e->err, "STORED hash is not its tokens' hash on its parent");
    else if (!ev->has_parent && ev->parent_hash != KVC_HASH_SEED)
      snprintf(e->err, sizeof e->err, "first block's parent hash is not the seed");
    else if (ev->has_parent && ev_find(e, ev->parent_hash) < 0)
      snprintf(e->err, sizeof e->err, "STORED before its parent %llx", (unsigned long long)ev->parent_hash);
    else if (e->n == 64) snprintf(e->err, sizeof e->err, "more than 64 hashes");
    else e->set[e->n++] = ev->hash;
  } else {
    e->n_removed++;
    int i = ev_find(e, ev->hash);
    if (i < 0) snprintf(e->err, sizeof e->err, "REMOVED %llx, never stored", (unsigned long long)ev->hash);
    else e->set[i] = e->set[--e->n];
  }
}

static int cmp_h(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int ev_ok(ev_shadow *e, char *why, size_t wl) {
  if (e->err[0]) {
    snprintf(why, wl, "events: %s", e->err);
    return 0;
  }
  uint64_t got[64], want[64];
  int n = kvc_pool_prefix_hashes(e->p, got, 64);
  memcpy(want, e->set, sizeof(uint64_t) * (size_t)e->n);
  qsort(want, (size_t)e->n, sizeof *want, cmp_h);
  if (n != e->n || memcmp(got, want, sizeof(uint64_t) * (size_t)n)) {
    snprintf(why, wl, "events replay to %d hashes, the pool indexes %d distinct", e->n, n);
    return 0;
  }
  return 1;
}

/* The table must be unchanged and everything readable back. */
static int shadow_ok(kvc_pool *p, shadow *sh, int nsh, int64_t q, int64_t h, char *why, size_t wl) {
  if (kvc_pool_check(p, why, wl) != 0) return 0;
  kvc_stats st;
  kvc_pool_stats(p, &st);
  if (st.n_seqs != nsh || st.prefix_queries_tokens != q || st.prefix_hits_tokens != h) {
    snprintf(why, wl, "stats: n_seqs %lld/%d queries %lld/%lld hits %lld/%lld",
             (long long)st.n_seqs, nsh, (long long)st.prefix_queries_tokens, (long long)q,
             (long long)st.prefix_hits_tokens, (long long)h);
    return 0;
  }
  int bs = kvc_pool_geom(p)->block_size;
  for (int i = 0; i < nsh; i++) {
    int n;
    kvc_seq_blocks(sh[i].s, &n);
    if (kvc_seq_len(sh[i].s) != sh[i].len || n != (sh[i].reserved + bs - 1) / bs) {
      snprintf(why, wl, "seq %d: len %d/%d, table %d for %d reserved", i, kvc_seq_len(sh[i].s),
               sh[i].len, n, sh[i].reserved);
      return 0;
    }
    if (!data_ok(p, sh[i].s, sh[i].toks, sh[i].len)) {
      snprintf(why, wl, "seq %d: data differs from what was written", i);
      return 0;
    }
  }
  return 1;
}

static void run_random(uint64_t seed, int n_ops) {
  g_test = "random";
  g_rng = seed * 0x9e3779b97f4a7c15ull + 1;
  kvc_geom g = {.n_layers = 1 + (int)rnd(2), .block_size = 1 + (int)rnd(4),
                .k_elems = 1 + (int)rnd(3), .v_elems = (int)rnd(3),
                .dtype = (kvc_dtype)rnd(3), .qgroup = 1};
  if (g.dtype == KVC_I8) g.k_elems = 2 * g.k_elems, g.v_elems = 2 * g.v_elems; /* int8 rows: even */
  int n_blocks = 6 + (int)rnd(20);
  kvc_pool *p = mkpool(&g, n_blocks);
  T(p);
  if (seed % 4 == 2) kvc_pool_set_hash_fn(p, hash_const);
  if (seed % 4 == 3) kvc_pool_set_hash_fn(p, hash_weak);
  static ev_shadow evs;
  memset(&evs, 0, sizeof evs);
  evs.p = p;
  kvc_pool_set_event_fn(p, ev_record, &evs);
  int bs = g.block_size;
  int vocab = 2 + (int)rnd(3);

  static shadow sh[MAX_SEQ];
  int nsh = 0;
  static int32_t hist[N_HIST][MAX_TOK];
  static int hist_len[N_HIST];
  int n_hist = 0;
  int64_t q = 0, h = 0;
  char why[256];
  int n_full = 0, n_hit = 0, n_cow = 0;

  for (int op = 0; op < n_ops; op++) {
    uint32_t r = rnd(100);
    int i = nsh ? (int)rnd((uint32_t)nsh) : 0;
    if (r < 15 || nsh == 0) { /* new request with a prompt, matched */
      if (nsh == MAX_SEQ) continue;
      shadow *x = &sh[nsh];
      int n = (int)rnd(MAX_TOK / 2);
      int base = 0;
      if (n_hist && rnd(3)) { /* repeat part of an earlier prompt */
        int k = (int)rnd((uint32_t)n_hist);
        base = MFS_MIN(hist_len[k], n);
        memcpy(x->toks, hist[k], sizeof(int32_t) * (size_t)base);
      } else if (nsh && rnd(2)) { /* or of a running one */
        shadow *y = &sh[rnd((uint32_t)nsh)];
        base = MFS_MIN(y->len, n);
        memcpy(x->toks, y->toks, sizeof(int32_t) * (size_t)base);
      }
      for (int j = base; j < n; j++) x->toks[j] = (int32_t)rnd((uint32_t)vocab);
      T(kvc_seq_new(p, &x->s) == 0);
      int got = kvc_seq_match_prefix(p, x->s, x->toks, n);
      T(got >= 0 && got <= n && got % bs == 0);
      q += n;
      h += got;
      n_hit += got > 0;
      x->len = x->reserved = got;
      x->n_prompt = n;
      nsh++;
    } else if (r < 55) { /* a step: reserve, compute, commit */
      shadow *x = &sh[i];
      int k = 1 + (int)rnd(6);
      if (x->len + k > MAX_TOK) continue;
      for (int j = MFS_MAX(x->len, x->n_prompt); j < x->len + k; j++)
        x->toks[j] = (int32_t)rnd((uint32_t)vocab);
      if (x->len + k > x->n_prompt) x->n_prompt = x->len + k;
      int skip_reserve = x->reserved >= x->len + k && rnd(2);
      if (!skip_reserve) {
        kvc_stats before, after;
        kvc_pool_stats(p, &before);
        int nb0;
        const int32_t *t0 = kvc_seq_blocks(x->s, &nb0);
        int32_t last0 = nb0 ? t0[(x->len) / bs < nb0 ? x->len / bs : nb0 - 1] : -1;
        int rc = kvc_seq_reserve(p, x->s, x->len + k);
        T(rc == 0 || rc == KVC_FULL);
        if (rc == KVC_FULL) {
          kvc_pool_stats(p, &after);
          T(same_stats(&before, &after));
          n_full++;
          if (!shadow_ok(p, sh, nsh, q, h, why, sizeof why)) {
            fprintf(stderr, "seed %llu op %d (full): %s\n", (unsigned long long)seed, op, why);
            T(0);
          }
          if (rnd(2)) { /* preempt: drop it */
            kvc_seq_free(p, x->s);
            sh[i] = sh[--nsh];
          }
          continue;
        }
        int nb1;
        const int32_t *t1 = kvc_seq_blocks(x->s, &nb1);
        if (x->len % bs && last0 >= 0 && t1[x->len / bs] != last0) n_cow++;
        if (x->len + k > x->reserved) x->reserved = x->len + k;
      }
      write_pos(p, x->s, x->toks, x->len, x->len + k);
      T(kvc_seq_commit(p, x->s, x->toks + x->len, k) == 0);
      x->len += k;
    } else if (r < 63) { /* reserve ahead */
      shadow *x = &sh[i];
      int want = x->len + (int)rnd(7);
      if (want > MAX_TOK) continue;
      int rc = kvc_seq_reserve(p, x->s, want);
      T(rc == 0 || rc == KVC_FULL);
      if (rc == 0 && want > x->reserved) x->reserved = want;
    } else if (r < 73) { /* fork */
      if (nsh == MAX_SEQ) continue;
      shadow *x = &sh[nsh];
      *x = sh[i];
      T(kvc_seq_fork(p, sh[i].s, &x->s) == 0);
      x->reserved = x->len;
      x->n_prompt = x->len;
      nsh++;
    } else if (r < 90) { /* finish or cancel */
      shadow *x = &sh[i];
      if (x->len && n_hist < N_HIST) {
        memcpy(hist[n_hist], x->toks, sizeof(int32_t) * (size_t)x->len);
        hist_len[n_hist++] = x->len;
      } else if (x->len) {
        int k = (int)rnd(N_HIST);
        memcpy(hist[k], x->toks, sizeof(int32_t) * (size_t)x->len);
        hist_len[k] = x->len;
      }
      kvc_seq_free(p, x->s);
      sh[i] = sh[--nsh];
    } else { /* calls that must fail without changing anything */
      shadow *x = &sh[i];
      int32_t z[8] = {0};
      T(kvc_seq_commit(p, x->s, z, x->reserved - x->len + 1) == MFS_EINVAL);
      if (x->len > 0) T(kvc_seq_reserve(p, x->s, x->len - 1) == MFS_EINVAL);
      if (x->len > 0 || x->reserved > 0)
        T(kvc_seq_match_prefix(p, x->s, z, 8) == MFS_ESTATE);
    }
    if (!shadow_ok(p, sh, nsh, q, h, why, sizeof why) || !ev_ok(&evs, why, sizeof why)) {
      fprintf(stderr, "seed %llu op %d (r=%u): %s\n", (unsigned long long)seed, op, r, why);
      T(0);
    }
  }
  /* The run exercised what it is for. */
  printf("seed %2llu: bs %d, %d blocks, %d layers, hash %s: %d matches hit, %d full, %d copies, "
         "%lld/%lld prefix tokens hit\n",
         (unsigned long long)seed, bs, n_blocks, g.n_layers,
         seed % 4 == 2 ? "const" : seed % 4 == 3 ? "weak" : "full", n_hit, n_full, n_cow,
         (long long)h, (long long)q);
  T(n_hit > 0 && n_full > 0 && (n_cow > 0 || bs == 1));
  T(evs.n_stored > 0 && (evs.n_removed > 0 || seed % 4 == 2)); /* const: one hash, rarely all evicted */
  while (nsh) kvc_seq_free(p, sh[--nsh].s);
  T_OK(p);
  kvc_stats st;
  kvc_pool_stats(p, &st);
  T(st.blocks_used == 0 && st.n_seqs == 0);
  kvc_pool_free(p);
}

int main(void) {
  test_geometry();
  test_reserve_commit();
  test_full_unchanged();
  test_prefix_reuse();
  test_cow_fork();
  test_lru_order();
  test_collisions();
  for (uint64_t seed = 1; seed <= 20; seed++) run_random(seed, 5000);
  if (g_fail) {
    fprintf(stderr, "test_kvcache: %d failure(s)\n", g_fail);
    return 1;
  }
  printf("test_kvcache: ok\n");
  return 0;
}
