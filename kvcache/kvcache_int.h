/* kvcache_int.h: the KV pool's internal layout. Only kvcache.c and the
 * kvcache tests include this; other modules use kvcache.h.
 *
 * One allocation (kvc_pool_new, from aligned_alloc) holds, in order: the
 * block data (64-byte aligned; layer regions 64- or, int8, 32-byte aligned; block stride kvc_block_bytes), the block
 * metadata array, the token ids of every block slot, and the hash index.
 * The pool struct itself and each sequence (with its block table) are
 * separate heap objects; tables grow geometrically, so no call allocates
 * per token.
 *
 * Invariants (kvc_pool_check verifies them all):
 * - each block is in exactly one state: free (ref 0, not indexed, on the
 *   free list), cached (ref 0, indexed, on the LRU list) or used (ref >= 1,
 *   on no list); ref equals the number of table entries naming the block
 *   over all live sequences (the pool keeps them on an intrusive list);
 * - only full blocks are indexed; an indexed block is never written into
 *   (kvc_seq_reserve copies it first), so its data, token ids and hash stay
 *   what they were when it was indexed;
 * - each indexed block is in the index exactly once, reachable by linear
 *   probing from its hash's home slot, and its hash is hash_fn(parent_hash,
 *   its token ids);
 * - an indexed block links to its parent by (id, gen): the link is live only
 *   while the parent is indexed with that same gen, so a parent evicted and
 *   reused for other tokens never chains to the old child. A lookup compares
 *   hash, parent link and token ids, so a hash collision cannot return a
 *   block with other contents or another prefix.
 * - n_free + n_cached + (blocks with ref >= 1) == n_blocks.
 */
#ifndef MFS_KVCACHE_INT_H
#define MFS_KVCACHE_INT_H

#include "kvcache.h"

#define KVC_NIL (-1)
/* A sequence's canonical chain is broken: its parent was evicted (see
 * kvc_seq.canon_id). */
#define KVC_BROKEN (-2)

typedef uint64_t (*kvc_hash_fn)(uint64_t parent_hash, const int32_t *tokens, int n);

typedef struct kvc_block {
  uint64_t hash;        /* valid while indexed */
  uint64_t parent_hash; /* chain input: the previous block's hash or KVC_HASH_SEED */
  uint64_t gen;         /* bumped each time the block is indexed */
  uint64_t parent_gen;  /* parent's gen when this block was indexed */
  int32_t parent;       /* parent block id, KVC_NIL for a first block */
  int32_t ref;
  int32_t prev, next; /* free list or LRU list links, KVC_NIL at the ends */
  uint8_t indexed;
} kvc_block;

typedef struct kvc_list {
  int32_t head, tail; /* LRU: head is least recently released */
  int64_t n;
} kvc_list;

struct kvc_seq {
  kvc_seq *prev, *next; /* pool's list of live sequences */
  int32_t *table;       /* block ids; from malloc/realloc, owned */
  int n_table;          /* == ceil(n_reserved / block_size) */
  int cap_table;
  int len;        /* tokens written and committed */
  int n_reserved; /* tokens the table covers; len <= n_reserved */
  /* The index's view of this sequence's last full block: its chain hash,
   * and the indexed block holding the same prefix (which may be another
   * sequence's block when ours was a duplicate). canon_id is KVC_NIL before
   * the first full block, KVC_BROKEN when that block was evicted, after
   * which this sequence indexes no more blocks. */
  uint64_t last_hash;
  int32_t canon_id;
  uint64_t canon_gen;
};

struct kvc_pool {
  kvc_geom g;
  size_t k_bytes;      /* one layer's K region: block_size * kvc_k_row_bytes */
  size_t layer_stride; /* K + V regions rounded up to 64 */
  size_t block_stride; /* n_layers * layer_stride == kvc_block_bytes */
  int32_t n_blocks;

  void *mem;          /* the one allocation, from aligned_alloc; owned */
  uint8_t *data;      /* [n_blocks][n_layers][layer_stride] */
  kvc_block *blocks;  /* [n_blocks] */
  int32_t *tokens;    /* [n_blocks][block_size] token ids */
  int32_t *index;     /* [index_cap] block ids, KVC_NIL empty */
  uint64_t index_mask; /* index_cap - 1; index_cap is a power of two >= 2*n_blocks */
  int64_t n_indexed;

  kvc_list free_list;
  kvc_list lru;
  kvc_seq *seqs; /* live sequences, intrusive list */
  int64_t n_seqs;
  int64_t prefix_queries_tokens;
  int64_t prefix_hits_tokens;
  kvc_hash_fn hash_fn;
  kvc_event_fn event_fn; /* NULL: none */
  void *event_ctx;
};

/* Tests only: replaces the block hash (e.g. with a weak one to force
 * collisions). Call right after kvc_pool_new, before any commit. */
void kvc_pool_set_hash_fn(kvc_pool *p, kvc_hash_fn fn);
/* The default block hash. */
uint64_t kvc_hash_tokens(uint64_t parent_hash, const int32_t *tokens, int n);

#endif
