/* gr_match.c: the matcher, its index and the per-step token mask.
 *
 * A matcher position is a set of stacks. A stack is a chain of nodes
 * (pos, parent): the top node's pos is a byte-class element the next byte
 * must match; a lower node's pos is where to resume once the rule called
 * from there ends. Nodes are hash-consed, so a stack is one node id and
 * equal stacks are equal ids; a set of stacks plus a "complete" flag is
 * interned as a state id. Stepping a state by a byte (advance every top
 * whose class holds the byte, then expand: enter referenced rules, return
 * from ended ones, a reference in last position replacing its frame
 * instead of pushing one) gives another state; the result is kept in the
 * state's 256-entry transition row, so each (state, byte) is computed once
 * per index: the index grows a DFA lazily over the grammar's stacks.
 *
 * The mask: the vocabulary's token bytes as a trie in depth-first order
 * (each node: its byte, depth, where its subtree ends, the tokens ending
 * there). One linear pass steps the state along the trie and skips a
 * subtree as soon as the state dies. Masks are cached per state.
 *
 * Memory: transition rows and cached masks are caches; past GR_CACHE_BYTES
 * they are all dropped (states and nodes stay, so matchers stay valid). */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gr_int.h"

#define GR_CACHE_BYTES ((size_t)512 << 20)
#define PLAIN_BYTE(c) ((c) >= 0x20 && (c) <= 0x7E && (c) != '"' && (c) != '\\')
#define NX_UNKNOWN (-1)
#define NX_DEAD (-2)
#define NX_NOMEM (-3)
#define NX_TOO_AMBIGUOUS (-4)
/* Parse stacks one position may hold: a grammar that can read the same text
 * in more ways than this (nested unbounded-ish repetitions such as
 * (x{0,1000}){0,1000}) is stopped with MFS_ERANGE instead of stalling. */
#define GR_MAX_STACKS 4096

/* ---- vocabulary trie ---- */
struct gr_vocab {
  int V;
  int n_nodes;        /* node 0 is the root */
  uint8_t *byte;      /* [n_nodes] */
  uint16_t *depth;    /* [n_nodes] */
  int32_t *end;       /* [n_nodes] first index after the subtree */
  int32_t *tok_off;   /* [n_nodes + 1] tokens ending at node i: toks[tok_off[i] .. tok_off[i+1]) */
  int32_t *toks;
  int max_depth;
  uint8_t *plain;            /* [n_nodes] 1: every edge of node i's subtree (its own included) is a
                                printable ASCII byte other than " and \ (PLAIN_BYTE) */
  uint16_t *height;          /* [n_nodes] depth of node i's subtree (1: a leaf) */
  int32_t *eos;
  int n_eos;
  uint32_t *id_off, *id_len; /* [V] token i's bytes: pool[id_off[i] ..), id_len 0: never allowed */
  char *pool;
};

typedef struct {
  const char *s;
  uint32_t n;
  int32_t id;
} vtok;

static int vtok_cmp(const void *a, const void *b) {
  const vtok *x = a, *y = b;
  uint32_t n = x->n < y->n ? x->n : y->n;
  int c = memcmp(x->s, y->s, n);
  if (c) return c;
  if (x->n != y->n) return x->n < y->n ? -1 : 1;
  return x->id - y->id;
}

int gr_vocab_new(int n_vocab, const char *const *bytes, const uint32_t *lens, const int32_t *eos, int n_eos,
                 gr_vocab **out) {
  *out = NULL;
  if (n_vocab <= 0) return MFS_EINVAL;
  vtok *t = malloc((size_t)n_vocab * sizeof *t);
  gr_vocab *v = calloc(1, sizeof *v);
  if (!t || !v) {
    free(t);
    free(v);
    return MFS_ENOMEM;
  }
  int n = 0;
  size_t total = 1;
  for (int i = 0; i < n_vocab; i++)
    if (bytes[i] && lens[i] && lens[i] < 65535) {
      t[n].s = bytes[i];
      t[n].n = lens[i];
      t[n].id = i;
      total += lens[i];
      n++;
    }
  qsort(t, (size_t)n, sizeof *t, vtok_cmp);
  v->V = n_vocab;
  v->byte = malloc(total);
  v->depth = malloc(total * sizeof *v->depth);
  v->end = malloc(total * sizeof *v->end);
  v->tok_off = calloc(total + 1, sizeof *v->tok_off);
  v->toks = malloc((size_t)(n ? n : 1) * sizeof *v->toks);
  v->eos = malloc((size_t)(n_eos ? n_eos : 1) * sizeof *v->eos);
  int32_t *path = malloc((size_t)(65536 + 1) * sizeof *path);
  int32_t *parent = malloc(total * sizeof *parent);
  v->plain = malloc(total);
  v->height = calloc(total, sizeof *v->height);
  int32_t *ntok = calloc(total + 1, sizeof *ntok);
  v->id_off = calloc((size_t)n_vocab, sizeof *v->id_off);
  v->id_len = calloc((size_t)n_vocab, sizeof *v->id_len);
  v->pool = malloc(total);
  if (!parent || !v->plain || !v->height || !v->id_off || !v->id_len || !v->pool || !v->byte || !v->depth || !v->end || !v->tok_off || !v->toks || !v->eos || !path || !ntok) {
    free(t), free(path), free(ntok), free(parent);
    gr_vocab_free(v);
    return MFS_ENOMEM;
  }
  size_t po = 0;
  for (int k = 0; k < n; k++) {
    memcpy(v->pool + po, t[k].s, t[k].n);
    v->id_off[t[k].id] = (uint32_t)po;
    v->id_len[t[k].id] = t[k].n;
    po += t[k].n;
  }
  for (int i = 0; i < n_eos; i++)
    if (eos[i] >= 0 && eos[i] < n_vocab) v->eos[v->n_eos++] = eos[i];
  /* build in DFS order from the sorted tokens */
  int nn = 1, depth = 0; /* current path length */
  v->byte[0] = 0;
  v->depth[0] = 0;
  path[0] = 0;
  const vtok *prev = NULL;
  for (int k = 0; k < n; k++) {
    const vtok *c = &t[k];
    uint32_t common = 0;
    if (prev) {
      uint32_t m = prev->n < c->n ? prev->n : c->n;
      while (common < m && prev->s[common] == c->s[common]) common++;
    }
    while ((uint32_t)depth > common) { /* close nodes below the common prefix */
      v->end[path[depth]] = nn;
      depth--;
    }
    while ((uint32_t)depth < c->n) {
      int id = nn++;
      v->byte[id] = (uint8_t)c->s[depth];
      v->depth[id] = (uint16_t)(depth + 1);
      parent[id] = path[depth];
      path[++depth] = id;
    }
    ntok[path[depth]]++;
    if (depth > v->max_depth) v->max_depth = depth;
    prev = c;
  }
  while (depth > 0) {
    v->end[path[depth]] = nn;
    depth--;
  }
  v->end[0] = nn;
  v->n_nodes = nn;
  /* token lists: a node is made by the first token that has its bytes as
   * a prefix, which is the token with exactly those bytes when there is
   * one (it sorts first); so the sorted tokens end at nodes in increasing
   * order, and their ids in that order are the lists already */
  for (int i = 0; i < nn; i++) v->tok_off[i + 1] = v->tok_off[i] + ntok[i];
  for (int k = 0; k < n; k++) v->toks[k] = t[k].id;
  /* subtree facts, children before parents (DFS order reversed) */
  memset(v->plain, 1, (size_t)nn);
  for (int i = nn - 1; i >= 1; i--) {
    if (!PLAIN_BYTE(v->byte[i])) v->plain[i] = 0;
    v->plain[parent[i]] &= v->plain[i];
    if (!v->height[i]) v->height[i] = 1;
    if (v->height[i] + 1 > v->height[parent[i]]) v->height[parent[i]] = (uint16_t)(v->height[i] + 1);
  }
  free(t);
  free(path);
  free(ntok);
  free(parent);
  *out = v;
  return 0;
}

void gr_vocab_free(gr_vocab *v) {
  if (!v) return;
  free(v->byte);
  free(v->depth);
  free(v->end);
  free(v->tok_off);
  free(v->toks);
  free(v->eos);
  free(v->id_off);
  free(v->id_len);
  free(v->pool);
  free(v->plain);
  free(v->height);
  free(v);
}

int gr_vocab_size(const gr_vocab *v) { return v->V; }

/* ---- index ---- */
struct gr_index {
  int refs; /* atomic */
  gr_grammar *g;
  const gr_vocab *v;
  /* nodes */
  int32_t *npos, *npar;
  int n_nodes, cap_nodes;
  int32_t *nhash; /* open addressing: node id or -1 */
  size_t nhash_cap;
  /* states */
  int32_t *soff, *slen; /* into spool */
  uint8_t *sacc;
  int32_t **snext;      /* [256] rows, NULL until needed */
  uint32_t **smask;     /* cached masks */
  int32_t *smask_n;
  int n_states, cap_states;
  int32_t *spool;
  size_t spool_n, spool_cap;
  int32_t *shash;
  size_t shash_cap;
  int32_t start;
  /* scratch for expansion */
  int32_t *work;        /* (pos, parent) pairs */
  size_t work_cap;
  uint64_t *seen;       /* visited (pos, parent) keys, stamped */
  uint32_t *seen_stamp;
  size_t seen_cap;
  uint32_t stamp;
  int32_t *tops;
  size_t tops_n, tops_cap;
  int32_t *walk;        /* [max_depth + 1] */
  int32_t *chain;       /* [max_depth + 1] the mask walk's uniform chain (see gr_matcher_mask) */
  size_t cache_bytes;
  gr_index_stats st;
  int oom;
};

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * elem);
  if (!q) return -1;
  *p = q;
  *cap = c;
  return 0;
}

/* An open-addressing table of cap slots (-1: empty) holding ids 0..n-1,
 * placed by key(ix, id); NULL when out of memory. */
static int32_t *rehash(const gr_index *ix, int n, size_t cap, size_t (*key)(const gr_index *, int)) {
  int32_t *h = malloc(cap * sizeof *h);
  if (!h) return NULL;
  memset(h, 0xff, cap * sizeof *h);
  for (int i = 0; i < n; i++) {
    size_t j = key(ix, i) & (cap - 1);
    while (h[j] >= 0) j = (j + 1) & (cap - 1);
    h[j] = i;
  }
  return h;
}

static size_t node_key(const gr_index *ix, int i) {
  return (size_t)mix64(((uint64_t)(uint32_t)ix->npos[i] << 32) | (uint32_t)ix->npar[i]);
}

static int rehash_nodes(gr_index *ix, size_t cap) {
  int32_t *h = rehash(ix, ix->n_nodes, cap, node_key);
  if (!h) return -1;
  free(ix->nhash);
  ix->nhash = h;
  ix->nhash_cap = cap;
  return 0;
}

/* The node (pos, parent), made if new; -1 out of memory. */
static int32_t node_get(gr_index *ix, int32_t pos, int32_t par) {
  uint64_t key = ((uint64_t)(uint32_t)pos << 32) | (uint32_t)par;
  size_t j = mix64(key) & (ix->nhash_cap - 1);
  for (;; j = (j + 1) & (ix->nhash_cap - 1)) {
    int32_t id = ix->nhash[j];
    if (id < 0) break;
    if (ix->npos[id] == pos && ix->npar[id] == par) return id;
  }
  if (ix->n_nodes == ix->cap_nodes) {
    int cap = ix->cap_nodes * 2;
    int32_t *a = realloc(ix->npos, (size_t)cap * sizeof *a);
    if (a) ix->npos = a;
    int32_t *b = realloc(ix->npar, (size_t)cap * sizeof *b);
    if (b) ix->npar = b;
    if (!a || !b) return -1;
    ix->cap_nodes = cap;
  }
  int32_t id = ix->n_nodes++;
  ix->npos[id] = pos;
  ix->npar[id] = par;
  ix->nhash[j] = id;
  if ((size_t)ix->n_nodes * 2 > ix->nhash_cap && rehash_nodes(ix, ix->nhash_cap * 2)) return -1;
  ix->st.nodes = ix->n_nodes;
  return id;
}

static uint64_t state_key(const int32_t *v, int n, int acc) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)(n * 2 + acc);
  for (int i = 0; i < n; i++) h = mix64(h ^ (uint32_t)v[i]) + (uint64_t)i;
  return h;
}

static size_t state_key_of(const gr_index *ix, int i) {
  return (size_t)state_key(ix->spool + ix->soff[i], ix->slen[i], ix->sacc[i]);
}

static int rehash_states(gr_index *ix, size_t cap) {
  int32_t *h = rehash(ix, ix->n_states, cap, state_key_of);
  if (!h) return -1;
  free(ix->shash);
  ix->shash = h;
  ix->shash_cap = cap;
  return 0;
}

static int cmp_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return x < y ? -1 : x > y;
}

/* Interns the sorted, deduplicated top set; NX_DEAD for the empty
 * incomplete state; -3 out of memory. */
static int32_t state_get(gr_index *ix, int32_t *tops, int n, int acc) {
  if (n == 0 && !acc) return NX_DEAD;
  if (n) qsort(tops, (size_t)n, sizeof *tops, cmp_i32);
  int m = 0;
  for (int i = 0; i < n; i++)
    if (!m || tops[m - 1] != tops[i]) tops[m++] = tops[i];
  n = m;
  size_t j = state_key(tops, n, acc) & (ix->shash_cap - 1);
  for (;; j = (j + 1) & (ix->shash_cap - 1)) {
    int32_t id = ix->shash[j];
    if (id < 0) break;
    if (ix->slen[id] == n && ix->sacc[id] == acc && !memcmp(ix->spool + ix->soff[id], tops, (size_t)n * 4))
      return id;
  }
  if (ix->n_states == ix->cap_states) {
    int cap = ix->cap_states * 2;
    int ok = 1;
#define G(f) do { void *q = realloc(ix->f, (size_t)cap * sizeof *ix->f); if (q) ix->f = q; else ok = 0; } while (0)
    G(soff); G(slen); G(sacc); G(snext); G(smask); G(smask_n);
#undef G
    if (!ok) return -3;
    ix->cap_states = cap;
  }
  if (grow((void **)&ix->spool, &ix->spool_cap, ix->spool_n + (size_t)n + 1, sizeof *ix->spool)) return -3;
  int32_t id = ix->n_states++;
  ix->soff[id] = (int32_t)ix->spool_n;
  ix->slen[id] = n;
  ix->sacc[id] = (uint8_t)acc;
  ix->snext[id] = NULL;
  ix->smask[id] = NULL;
  ix->smask_n[id] = 0;
  if (n) memcpy(ix->spool + ix->spool_n, tops, (size_t)n * 4);
  ix->spool_n += (size_t)n;
  ix->shash[j] = id;
  if ((size_t)ix->n_states * 2 > ix->shash_cap && rehash_states(ix, ix->shash_cap * 2)) return -3;
  ix->st.states = ix->n_states;
  return id;
}

/* Expansion from pre-stacks in work[0..2*nw): collects tops, sets *acc. */
static int expand(gr_index *ix, size_t nw, int *acc) {
  const gr_grammar *g = ix->g;
  if (++ix->stamp == 0) {
    memset(ix->seen_stamp, 0, ix->seen_cap * sizeof *ix->seen_stamp);
    ix->stamp = 1;
  }
  size_t seen_n = 0;
  while (nw) {
    nw--;
    int32_t pos = ix->work[2 * nw], par = ix->work[2 * nw + 1];
    uint64_t key = ((uint64_t)(uint32_t)pos << 32) | (uint32_t)par;
    /* visited set (per expansion): a reference cycle through tail calls ends here */
    if ((seen_n + 1) * 2 > ix->seen_cap) {
      size_t cap = ix->seen_cap * 2;
      uint64_t *k2 = malloc(cap * sizeof *k2);
      uint32_t *s2 = calloc(cap, sizeof *s2);
      if (!k2 || !s2) return free(k2), free(s2), -1;
      for (size_t i = 0; i < ix->seen_cap; i++)
        if (ix->seen_stamp[i] == ix->stamp) {
          size_t j = mix64(ix->seen[i]) & (cap - 1);
          while (s2[j] == ix->stamp) j = (j + 1) & (cap - 1);
          k2[j] = ix->seen[i];
          s2[j] = ix->stamp;
        }
      free(ix->seen);
      free(ix->seen_stamp);
      ix->seen = k2;
      ix->seen_stamp = s2;
      ix->seen_cap = cap;
    }
    size_t j = mix64(key) & (ix->seen_cap - 1);
    int dup = 0;
    for (; ix->seen_stamp[j] == ix->stamp; j = (j + 1) & (ix->seen_cap - 1))
      if (ix->seen[j] == key) {
        dup = 1;
        break;
      }
    if (dup) continue;
    ix->seen[j] = key;
    ix->seen_stamp[j] = ix->stamp;
    seen_n++;
    int32_t e = g->elems[pos];
    if (e >= 0) {
      int32_t t = node_get(ix, pos, par);
      if (t < 0 || grow((void **)&ix->tops, &ix->tops_cap, ix->tops_n + 1, sizeof *ix->tops)) return -1;
      ix->tops[ix->tops_n++] = t;
    } else if (e == GR_END) {
      if (par == 0) *acc = 1;
      else {
        if (grow((void **)&ix->work, &ix->work_cap, 2 * nw + 2, sizeof *ix->work)) return -1;
        ix->work[2 * nw] = ix->npos[par];
        ix->work[2 * nw + 1] = ix->npar[par];
        nw++;
      }
    } else {
      int r = GR_REF_RULE(e);
      int32_t ret = par;
      if (g->elems[pos + 1] != GR_END) { /* not a tail call: push the return frame */
        ret = node_get(ix, pos + 1, par);
        if (ret < 0) return -1;
      }
      int a0 = g->rule_alt[r], a1 = g->rule_alt[r + 1];
      if (grow((void **)&ix->work, &ix->work_cap, 2 * (nw + (size_t)(a1 - a0)), sizeof *ix->work)) return -1;
      for (int a = a1 - 1; a >= a0; a--) {
        ix->work[2 * nw] = g->alt_start[a];
        ix->work[2 * nw + 1] = ret;
        nw++;
      }
    }
  }
  return 0;
}

static int32_t compute_next(gr_index *ix, int32_t s, int byte) {
  size_t nw = 0;
  int n = ix->slen[s];
  for (int i = 0; i < n; i++) {
    int32_t t = ix->spool[ix->soff[s] + i];
    int32_t pos = ix->npos[t];
    const uint32_t *c = ix->g->cls[ix->g->elems[pos]];
    if (!(c[byte >> 5] >> (byte & 31) & 1)) continue;
    if (grow((void **)&ix->work, &ix->work_cap, 2 * nw + 2, sizeof *ix->work)) return -3;
    ix->work[2 * nw] = pos + 1;
    ix->work[2 * nw + 1] = ix->npar[t];
    nw++;
  }
  if (!nw) return NX_DEAD;
  int acc = 0;
  ix->tops_n = 0;
  if (expand(ix, nw, &acc)) return NX_NOMEM;
  if (ix->tops_n > GR_MAX_STACKS) return NX_TOO_AMBIGUOUS;
  return state_get(ix, ix->tops, (int)ix->tops_n, acc);
}

static void flush_caches(gr_index *ix) {
  for (int i = 0; i < ix->n_states; i++) {
    free(ix->snext[i]);
    free(ix->smask[i]);
    ix->snext[i] = NULL;
    ix->smask[i] = NULL;
  }
  ix->cache_bytes = 0;
  ix->st.cache_flushes++;
}

/* next(s, byte): cached; NX_DEAD; -3 out of memory. */
static inline int32_t step(gr_index *ix, int32_t s, int byte) {
  int32_t *row = ix->snext[s];
  if (row && row[byte] != NX_UNKNOWN) return row[byte];
  if (!row) {
    row = malloc(256 * sizeof *row);
    if (!row) return -3;
    for (int i = 0; i < 256; i++) row[i] = NX_UNKNOWN;
    ix->snext[s] = row;
    ix->cache_bytes += 256 * sizeof *row;
  }
  int32_t r = compute_next(ix, s, byte);
  if (r <= NX_NOMEM) return r;
  ix->snext[s][byte] = r; /* snext may have moved: index again */
  return r;
}

int gr_index_new(gr_grammar *g, const gr_vocab *v, gr_index **out) {
  *out = NULL;
  gr_index *ix = calloc(1, sizeof *ix);
  if (!ix) return MFS_ENOMEM;
  ix->refs = 1;
  ix->g = g;
  gr_grammar_ref(g);
  ix->v = v;
  ix->cap_nodes = 1024;
  ix->npos = malloc((size_t)ix->cap_nodes * sizeof *ix->npos);
  ix->npar = malloc((size_t)ix->cap_nodes * sizeof *ix->npar);
  ix->cap_states = 256;
  ix->soff = malloc((size_t)ix->cap_states * sizeof *ix->soff);
  ix->slen = malloc((size_t)ix->cap_states * sizeof *ix->slen);
  ix->sacc = malloc((size_t)ix->cap_states);
  ix->snext = malloc((size_t)ix->cap_states * sizeof *ix->snext);
  ix->smask = malloc((size_t)ix->cap_states * sizeof *ix->smask);
  ix->smask_n = malloc((size_t)ix->cap_states * sizeof *ix->smask_n);
  ix->seen_cap = 256;
  ix->seen = malloc(ix->seen_cap * sizeof *ix->seen);
  ix->seen_stamp = calloc(ix->seen_cap, sizeof *ix->seen_stamp);
  ix->walk = malloc((size_t)((v ? v->max_depth : 0) + 2) * sizeof *ix->walk);
  ix->chain = malloc((size_t)((v ? v->max_depth : 0) + 2) * sizeof *ix->chain);
  if (!ix->npos || !ix->npar || !ix->soff || !ix->slen || !ix->sacc || !ix->snext || !ix->smask || !ix->smask_n ||
      !ix->seen || !ix->seen_stamp || !ix->walk || !ix->chain || rehash_nodes(ix, 2048) || rehash_states(ix, 512)) {
    gr_index_unref(ix);
    return MFS_ENOMEM;
  }
  /* node 0: the bottom sentinel */
  ix->npos[0] = -1;
  ix->npar[0] = -1;
  ix->n_nodes = 1;
  /* start state: expand the root rule's alternatives */
  int r = g->root, a0 = g->rule_alt[r], a1 = g->rule_alt[r + 1];
  size_t nw = 0;
  if (grow((void **)&ix->work, &ix->work_cap, 2 * (size_t)(a1 - a0 + 1), sizeof *ix->work)) {
    gr_index_unref(ix);
    return MFS_ENOMEM;
  }
  for (int a = a1 - 1; a >= a0; a--) {
    ix->work[2 * nw] = g->alt_start[a];
    ix->work[2 * nw + 1] = 0;
    nw++;
  }
  int acc = 0;
  ix->tops_n = 0;
  if (expand(ix, nw, &acc) || (ix->start = state_get(ix, ix->tops, (int)ix->tops_n, acc)) == -3) {
    gr_index_unref(ix);
    return MFS_ENOMEM;
  }
  *out = ix;
  return 0;
}

void gr_index_ref(gr_index *ix) {
  if (ix) __atomic_add_fetch(&ix->refs, 1, __ATOMIC_RELAXED);
}

void gr_index_unref(gr_index *ix) {
  if (!ix || __atomic_sub_fetch(&ix->refs, 1, __ATOMIC_ACQ_REL)) return;
  for (int i = 0; i < ix->n_states; i++) {
    free(ix->snext[i]);
    free(ix->smask[i]);
  }
  free(ix->npos), free(ix->npar), free(ix->nhash);
  free(ix->soff), free(ix->slen), free(ix->sacc), free(ix->snext), free(ix->smask), free(ix->smask_n);
  free(ix->spool), free(ix->shash);
  free(ix->work), free(ix->seen), free(ix->seen_stamp), free(ix->tops), free(ix->walk), free(ix->chain);
  gr_grammar_unref(ix->g);
  free(ix);
}

void gr_index_stats_get(const gr_index *ix, gr_index_stats *out) {
  *out = ix->st;
  out->bytes = ix->cache_bytes + (size_t)ix->cap_nodes * 8 + (size_t)ix->cap_states * 40 + ix->spool_cap * 4 +
               (ix->nhash_cap + ix->shash_cap) * 4;
}

/* ---- matcher ---- */
int gr_matcher_init(gr_matcher *m, gr_index *ix) {
  m->ix = ix;
  m->state = ix->start;
  return 0;
}

int gr_matcher_complete(const gr_matcher *m) { return m->state >= 0 && m->ix->sacc[m->state]; }

int gr_matcher_finished(gr_matcher *m) {
  gr_index *ix = m->ix;
  if (m->state < 0 || !ix->sacc[m->state]) return 0;
  return ix->slen[m->state] == 0; /* no stack left: nothing can follow */
}

int gr_matcher_accept_bytes(gr_matcher *m, const char *s, size_t n) {
  int32_t st = m->state;
  for (size_t i = 0; i < n; i++) {
    if (st < 0) return MFS_EINVAL;
    st = step(m->ix, st, (uint8_t)s[i]);
    if (st == NX_NOMEM) return MFS_ENOMEM;
    if (st == NX_TOO_AMBIGUOUS) return MFS_ERANGE;
    if (st < 0) return MFS_EINVAL;
  }
  m->state = st;
  return 0;
}

int gr_matcher_mask(gr_matcher *m, uint32_t *mask) {
  gr_index *ix = m->ix;
  const gr_vocab *v = ix->v;
  size_t words = ((size_t)v->V + 31) / 32;
  int32_t s = m->state;
  if (s < 0) {
    memset(mask, 0, words * 4);
    return 0;
  }
  if (ix->smask[s]) {
    memcpy(mask, ix->smask[s], words * 4);
    ix->st.masks_cached++;
    return ix->smask_n[s];
  }
  if (ix->cache_bytes > GR_CACHE_BYTES) flush_caches(ix);
  memset(mask, 0, words * 4);
  int32_t *walk = ix->walk;
  walk[0] = s;
  const uint8_t *byte = v->byte;
  const uint16_t *depth = v->depth;
  const int32_t *end = v->end, *toff = v->tok_off, *toks = v->toks;
  int count = 0;
  /* The uniform chain: u0 = s, and u(j+1) the state every plain byte
   * (PLAIN_BYTE: a JSON string's ordinary characters) leads to from u(j),
   * as long as they all lead to one state (inside a string, free or counted
   * by maxLength, they do). A subtree of only plain edges entered on the
   * chain and ending within it is allowed whole, unwalked: every path in it
   * walks the chain. */
  const int max_d = v->max_depth < 24 ? v->max_depth : 24; /* deeper subtrees are entered further down */
  int32_t *chain = ix->chain;
  int len = 0;
  chain[0] = s;
  while (len < max_d) {
    int32_t u = chain[len], t = step(ix, u, 'e');
    if (t == NX_NOMEM) return MFS_ENOMEM;
    if (t < 0) break;
    int same = 1;
    for (int c = 0x20; c <= 0x7E && same; c++) {
      if (!PLAIN_BYTE(c)) continue;
      int32_t ns = step(ix, u, c);
      if (ns == NX_NOMEM) return MFS_ENOMEM;
      same = ns == t;
    }
    if (!same) break;
    chain[++len] = t;
  }
  const uint8_t *plain = v->plain;
  const uint16_t *height = v->height;
  for (int32_t i = 1; i < v->n_nodes;) {
    int d = depth[i];
    int32_t ps = walk[d - 1];
    if (plain[i] && d + height[i] - 1 <= len && ps == chain[d - 1]) {
      for (int32_t k = toff[i]; k < toff[end[i]]; k++) {
        int32_t t = toks[k];
        mask[t >> 5] |= 1u << (t & 31);
        count++;
      }
      i = end[i];
      continue;
    }
    int32_t ns = step(ix, ps, byte[i]);
    if (ns < 0) {
      if (ns == NX_NOMEM) return MFS_ENOMEM;
      if (ns == NX_TOO_AMBIGUOUS) return MFS_ERANGE;
      i = end[i];
      continue;
    }
    walk[depth[i]] = ns;
    for (int32_t k = toff[i]; k < toff[i + 1]; k++) {
      int32_t t = toks[k];
      mask[t >> 5] |= 1u << (t & 31);
      count++;
    }
    i++;
  }
  if (ix->sacc[s])
    for (int i = 0; i < v->n_eos; i++) {
      int32_t t = v->eos[i];
      if (!(mask[t >> 5] >> (t & 31) & 1)) count++;
      mask[t >> 5] |= 1u << (t & 31);
    }
  ix->st.masks_computed++;
  uint32_t *c = malloc(words * 4);
  if (c) {
    memcpy(c, mask, words * 4);
    ix->smask[s] = c;
    ix->smask_n[s] = count;
    ix->cache_bytes += words * 4;
  }
  return count;
}

int gr_matcher_accept_token(gr_matcher *m, int32_t tok) {
  gr_index *ix = m->ix;
  const gr_vocab *v = ix->v;
  if (tok < 0 || tok >= v->V || m->state < 0) return MFS_EINVAL;
  for (int i = 0; i < v->n_eos; i++)
    if (v->eos[i] == tok) return ix->sacc[m->state] ? 0 : MFS_EINVAL;
  if (!v->id_len[tok]) return MFS_EINVAL;
  return gr_matcher_accept_bytes(m, v->pool + v->id_off[tok], v->id_len[tok]);
}
