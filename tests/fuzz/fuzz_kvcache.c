/* fuzz_kvcache.c: KV-cache operation sequences on a tiny pool, checked
 * against a shadow model after every operation.
 *
 * Input: byte 0: block size (1..4), bit 2: no V elements, bit 3: a weak
 * hash function (forced collisions, through the internal hook); byte 1:
 * number of blocks (2..17). Then operations, one byte each plus operands:
 *   new | free s | fork s | match s src n | reserve s delta | commit s n mode
 *   | reserve+commit s n mode
 * Tokens come from a 3-letter alphabet or are copied from another
 * sequence, so prefixes repeat and the index gets hits.
 *
 * After every operation: kvc_pool_check passes; the stats add up; each
 * live sequence has the shadow's length and a table covering its
 * reservation; and every committed token's K and V slots in every layer
 * still hold the value written for that token's whole prefix, so a matched,
 * forked or copied block with the wrong data is caught. Documented
 * outcomes are checked too: KVC_FULL and MFS_EINVAL change nothing,
 * kvc_seq_match_prefix on a non-empty sequence is MFS_ESTATE. At the end,
 * freeing every sequence leaves no used block. */
#include <string.h>

#include "common.h"
#include "fuzz_util.h"
#include "kvcache.h"
#include "kvcache_int.h"

#define MAXSEQ 6
#define MAXLEN 96

typedef struct {
  kvc_seq *s;
  int32_t tok[MAXLEN];
  int len, res;
} shadow;

typedef struct {
  const uint8_t *p, *end;
} reader;

static int next(reader *r) { return r->p < r->end ? *r->p++ : 0; }

static uint64_t weak_hash(uint64_t parent, const int32_t *t, int n) {
  (void)n;
  return parent * 3 + (uint64_t)(t[0] & 1);
}

/* The value stored for position pos of a sequence with tokens t, layer l:
 * a hash of the whole prefix, exact in a float. */
static float val(const int32_t *t, int pos, int layer, int is_v) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i <= pos; i++) h = (h ^ (uint64_t)(uint32_t)t[i]) * 1099511628211ull;
  h ^= (uint64_t)layer * 0x9E3779B97F4A7C15ull + (uint64_t)is_v;
  h ^= h >> 29;
  return (float)(h & 0xFFFFFF);
}

static float *slot(const kvc_pool *p, const kvc_seq *s, int pos, int layer, int is_v) {
  int n;
  const int32_t *bt = kvc_seq_blocks(s, &n);
  const kvc_geom *g = kvc_pool_geom(p);
  FUZZ_CHECK(pos / g->block_size < n, "position %d beyond table of %d blocks", pos, n);
  float *base = is_v ? kvc_block_v(p, bt[pos / g->block_size], layer) : kvc_block_k(p, bt[pos / g->block_size], layer);
  int e = is_v ? g->v_elems : g->k_elems;
  return base + (size_t)(pos % g->block_size) * (size_t)e;
}

static void write_tokens(kvc_pool *p, shadow *sh, int from, int to) {
  const kvc_geom *g = kvc_pool_geom(p);
  for (int pos = from; pos < to; pos++)
    for (int l = 0; l < g->n_layers; l++) {
      float *k = slot(p, sh->s, pos, l, 0);
      for (int e = 0; e < g->k_elems; e++) k[e] = val(sh->tok, pos, l, 0);
      if (g->v_elems) {
        float *v = slot(p, sh->s, pos, l, 1);
        for (int e = 0; e < g->v_elems; e++) v[e] = val(sh->tok, pos, l, 1);
      }
    }
}

static void check_all(const kvc_pool *p, shadow *sh, const char *op) {
  char err[512];
  if (kvc_pool_check(p, err, sizeof err) != 0) {
    fprintf(stderr, "kvc_pool_check after %s: %s\n", op, err);
    abort();
  }
  const kvc_geom *g = kvc_pool_geom(p);
  kvc_stats st;
  kvc_pool_stats(p, &st);
  int live = 0;
  for (int i = 0; i < MAXSEQ; i++) live += sh[i].s != NULL;
  FUZZ_CHECK(st.n_seqs == live, "after %s: n_seqs %lld, live %d", op, (long long)st.n_seqs, live);
  FUZZ_CHECK(st.blocks_used + st.blocks_cached_free + st.blocks_free == st.blocks_total, "after %s: stats", op);
  for (int i = 0; i < MAXSEQ; i++) {
    if (!sh[i].s) continue;
    FUZZ_CHECK(kvc_seq_len(sh[i].s) == sh[i].len, "after %s: seq %d len %d, shadow %d", op, i,
               kvc_seq_len(sh[i].s), sh[i].len);
    int n;
    kvc_seq_blocks(sh[i].s, &n);
    FUZZ_CHECK(n == (sh[i].res + g->block_size - 1) / g->block_size, "after %s: seq %d table %d for %d reserved",
               op, i, n, sh[i].res);
    for (int pos = 0; pos < sh[i].len; pos++)
      for (int l = 0; l < g->n_layers; l++) {
        FUZZ_CHECK(slot(p, sh[i].s, pos, l, 0)[0] == val(sh[i].tok, pos, l, 0), "after %s: seq %d pos %d layer %d K",
                   op, i, pos, l);
        if (g->v_elems)
          FUZZ_CHECK(slot(p, sh[i].s, pos, l, 1)[g->v_elems - 1] == val(sh[i].tok, pos, l, 1),
                     "after %s: seq %d pos %d layer %d V", op, i, pos, l);
      }
  }
}

/* Picks a live sequence (or -1). */
static int pick(reader *r, shadow *sh) {
  int k = next(r) % MAXSEQ;
  for (int i = 0; i < MAXSEQ; i++) {
    int j = (k + i) % MAXSEQ;
    if (sh[j].s) return j;
  }
  return -1;
}

static int free_slot(shadow *sh) {
  for (int i = 0; i < MAXSEQ; i++)
    if (!sh[i].s) return i;
  return -1;
}

/* n tokens for positions [at, at+n) of dst: copied from another sequence
 * where it has them, else from the 3-letter alphabet. */
static void gen_tokens(reader *r, shadow *sh, int dst, int at, int n, int32_t *out) {
  int mode = next(r);
  const shadow *src = &sh[(mode >> 1) % MAXSEQ];
  for (int i = 0; i < n; i++) {
    int pos = at + i;
    if ((mode & 1) && src->s && pos < src->len && &sh[dst] != src) out[i] = src->tok[pos];
    else out[i] = next(r) % 3;
  }
}

static void snapshot(const kvc_pool *p, const kvc_seq *s, kvc_stats *st, int32_t *tab, int *n) {
  kvc_pool_stats(p, st);
  const int32_t *bt = kvc_seq_blocks(s, n);
  if (*n) memcpy(tab, bt, (size_t)*n * sizeof *tab);
}

static void unchanged(const kvc_pool *p, const kvc_seq *s, const kvc_stats *st, const int32_t *tab, int n,
                      const char *what) {
  kvc_stats st2;
  kvc_pool_stats(p, &st2);
  int n2;
  const int32_t *bt = kvc_seq_blocks(s, &n2);
  FUZZ_CHECK(st2.blocks_used == st->blocks_used && st2.blocks_free == st->blocks_free &&
                 st2.blocks_cached_free == st->blocks_cached_free,
             "%s changed the pool", what);
  FUZZ_CHECK(n2 == n && (n == 0 || !memcmp(bt, tab, (size_t)n * sizeof *tab)), "%s changed the table", what);
}

static void do_commit(kvc_pool *p, shadow *sh, int i, int n, reader *r) {
  int32_t toks[MAXLEN];
  int room = sh[i].res - sh[i].len;
  if (n > room) { /* beyond the reservation: MFS_EINVAL, nothing changes */
    kvc_stats st;
    int32_t tab[MAXLEN];
    int nt;
    snapshot(p, sh[i].s, &st, tab, &nt);
    int32_t dummy[MAXLEN + 8] = {0};
    FUZZ_CHECK(kvc_seq_commit(p, sh[i].s, dummy, n) == MFS_EINVAL, "commit beyond reservation accepted");
    unchanged(p, sh[i].s, &st, tab, nt, "rejected commit");
    return;
  }
  gen_tokens(r, sh, i, sh[i].len, n, toks);
  memcpy(sh[i].tok + sh[i].len, toks, (size_t)n * sizeof *toks);
  write_tokens(p, &sh[i], sh[i].len, sh[i].len + n);
  FUZZ_CHECK(kvc_seq_commit(p, sh[i].s, toks, n) == 0, "commit");
  sh[i].len += n;
}

static int do_reserve(kvc_pool *p, shadow *sh, int i, int n_total) {
  kvc_stats st;
  int32_t tab[MAXLEN];
  int nt;
  snapshot(p, sh[i].s, &st, tab, &nt);
  int rc = kvc_seq_reserve(p, sh[i].s, n_total);
  if (n_total < sh[i].len) {
    FUZZ_CHECK(rc == MFS_EINVAL, "reserve below len: rc %d", rc);
    unchanged(p, sh[i].s, &st, tab, nt, "rejected reserve");
    return rc;
  }
  FUZZ_CHECK(rc == 0 || rc == KVC_FULL, "reserve rc %d", rc);
  if (rc == KVC_FULL) {
    unchanged(p, sh[i].s, &st, tab, nt, "KVC_FULL reserve");
    return rc;
  }
  if (n_total > sh[i].res) sh[i].res = n_total;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  reader r = {data, data + size};
  int b0 = next(&r), b1 = next(&r);
  kvc_geom g = {.n_layers = 2, .block_size = 1 + (b0 & 3), .k_elems = 1 + (b0 >> 6),
                .v_elems = (b0 & 4) ? 0 : 2, .dtype = KVC_F32};
  int n_blocks = 2 + b1 % 16;
  kvc_pool *p;
  FUZZ_CHECK(kvc_pool_new(&p, &g, (uint64_t)kvc_block_bytes(&g) * (uint64_t)n_blocks) == 0, "pool");
  if (b0 & 8) kvc_pool_set_hash_fn(p, weak_hash);
  shadow sh[MAXSEQ];
  memset(sh, 0, sizeof sh);
  int bs = g.block_size;
  for (int ops = 0; r.p < r.end && ops < 512; ops++) {
    int op = next(&r) % 7, i;
    const char *name = "?";
    switch (op) {
      case 0:
        name = "new";
        if ((i = free_slot(sh)) < 0) break;
        FUZZ_CHECK(kvc_seq_new(p, &sh[i].s) == 0, "seq_new");
        sh[i].len = sh[i].res = 0;
        break;
      case 1:
        name = "free";
        if ((i = pick(&r, sh)) < 0) break;
        kvc_seq_free(p, sh[i].s);
        sh[i].s = NULL;
        break;
      case 2: {
        name = "fork";
        int j = free_slot(sh);
        if ((i = pick(&r, sh)) < 0 || j < 0) break;
        FUZZ_CHECK(kvc_seq_fork(p, sh[i].s, &sh[j].s) == 0, "fork");
        memcpy(sh[j].tok, sh[i].tok, sizeof sh[i].tok);
        sh[j].len = sh[j].res = sh[i].len;
        break;
      }
      case 3: {
        name = "match";
        if ((i = pick(&r, sh)) < 0) break;
        int n = next(&r) % (MAXLEN + 1);
        int32_t toks[MAXLEN];
        gen_tokens(&r, sh, i, 0, n, toks);
        int32_t tab[MAXLEN];
        int nt;
        kvc_stats st;
        snapshot(p, sh[i].s, &st, tab, &nt);
        int rc = kvc_seq_match_prefix(p, sh[i].s, toks, n);
        if (sh[i].len != 0 || nt != 0) {
          FUZZ_CHECK(rc == MFS_ESTATE, "match on a non-empty sequence: rc %d", rc);
          unchanged(p, sh[i].s, &st, tab, nt, "rejected match");
          break;
        }
        FUZZ_CHECK(rc >= 0 && rc <= n && rc % bs == 0, "match rc %d for n %d", rc, n);
        if (rc > 0) memcpy(sh[i].tok, toks, (size_t)rc * sizeof *toks);
        sh[i].len = sh[i].res = rc;
        break;
      }
      case 4: {
        name = "reserve";
        if ((i = pick(&r, sh)) < 0) break;
        int d = next(&r);
        int n_total = sh[i].len + (d % (3 * bs + 2)) - 1; /* may be len - 1: MFS_EINVAL */
        if (n_total > MAXLEN) n_total = MAXLEN;
        do_reserve(p, sh, i, n_total);
        break;
      }
      case 5: {
        name = "commit";
        if ((i = pick(&r, sh)) < 0) break;
        int n = next(&r) % (2 * bs + 2);
        if (sh[i].len + n > MAXLEN) break;
        do_commit(p, sh, i, n, &r);
        break;
      }
      case 6: {
        name = "reserve+commit";
        if ((i = pick(&r, sh)) < 0) break;
        int n = 1 + next(&r) % (2 * bs + 1);
        if (sh[i].len + n > MAXLEN) break;
        if (do_reserve(p, sh, i, sh[i].len + n) == 0) do_commit(p, sh, i, n, &r);
        break;
      }
    }
    check_all(p, sh, name);
  }
  for (int i = 0; i < MAXSEQ; i++)
    if (sh[i].s) {
      kvc_seq_free(p, sh[i].s);
      sh[i].s = NULL;
    }
  check_all(p, sh, "free all");
  kvc_stats st;
  kvc_pool_stats(p, &st);
  FUZZ_CHECK(st.blocks_used == 0 && st.n_seqs == 0, "blocks used after freeing everything: %lld",
             (long long)st.blocks_used);
  kvc_pool_free(p);
  return 0;
}
