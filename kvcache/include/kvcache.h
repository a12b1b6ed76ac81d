/* kvcache.h: the paged KV-cache pool.
 *
 * One allocation, made at start-up, holds n_blocks fixed-size blocks. A
 * block stores block_size tokens for every layer. Per token and layer a
 * block holds k_elems key elements and v_elems value elements, in the
 * storage dtype (F32, F16, or int8 with scales, below):
 *   MFA-KR: k_elems = hd (the key before RoPE), v_elems = 0
 *   MFA:    k_elems = hd (rotated key), v_elems = hd
 *   Llama:  k_elems = v_elems = KV*hd (rotated keys, values)
 *   MLA:    k_elems = kv_lora_rank + qk_rope_head_dim (the normalized latent,
 *           then the rotated shared RoPE key), v_elems = 0 (docs/mla-format.md)
 * Layout: block b, layer l is one region [K: block_size][K row] followed by
 * [V: block_size][V row]; kvc_block_k/kvc_block_v return those pointers.
 * A row is a token's k_elems (v_elems) values: F32 or F16 elements, or for
 * KVC_I8 the int8 values q[n] followed by n / qgroup F16 scales s[n/qgroup]:
 * value i = q[i] * s[i / qgroup] (symmetric, |q| <= 127). kvc_k_row_bytes /
 * kvc_v_row_bytes give a row's size. An int8 geometry needs qgroup to divide
 * k_elems and v_elems, both even.
 *
 * Sequences hold block tables. Blocks are reference-counted; a full block is
 * indexed by a hash of (parent block's hash, its token ids), so a later
 * sequence whose prompt starts with the same tokens reuses it. A block whose
 * count drops to zero while indexed stays "cached" (still findable) on an
 * LRU list and is evicted only when a free block is needed.
 *
 * Every block is in exactly one state: free, cached (ref 0, indexed), or
 * used (ref >= 1, referenced exactly ref times by block tables).
 *
 * Threads: a pool and its sequences belong to one thread (the scheduler).
 * The engine reads and writes block data through kvc_block_k/v during a
 * step the scheduler runs; it never changes tables or counts.
 */
#ifndef MFS_KVCACHE_H
#define MFS_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { KVC_F32 = 0, KVC_F16 = 1, KVC_I8 = 2 } kvc_dtype;

typedef struct kvc_geom {
  int n_layers;
  int block_size; /* tokens per block, >= 1 */
  int k_elems;    /* key elements per token per layer, >= 1 */
  int v_elems;    /* value elements per token per layer, >= 0 */
  kvc_dtype dtype;
  int qgroup;     /* KVC_I8: elements per scale, dividing k_elems and v_elems; else unused */
} kvc_geom;

/* Normal outcome: not enough free or evictable blocks. */
#define KVC_FULL 1

typedef struct kvc_pool kvc_pool;
typedef struct kvc_seq kvc_seq;

typedef struct kvc_stats {
  int64_t blocks_total;
  int64_t blocks_used;        /* ref >= 1 */
  int64_t blocks_cached_free; /* ref 0, still indexed, evictable */
  int64_t blocks_free;        /* never used or evicted */
  int64_t tokens_capacity;    /* blocks_total * block_size */
  int64_t bytes_per_token;    /* (K row + V row bytes) * n_layers, scales included */
  int64_t prefix_queries_tokens; /* tokens asked for in kvc_seq_match_prefix */
  int64_t prefix_hits_tokens;    /* of those, tokens found cached */
  int64_t n_seqs;
  int64_t blocks_indexed;        /* used or cached blocks findable by a prefix match */
} kvc_stats;

/* What happens to the prefix cache, for subscribers such as a KV-event
 * publisher (kvc_pool_set_event_fn). The set of hashes announced STORED and
 * not since REMOVED is always the set of distinct hashes of indexed blocks
 * (kvc_pool_prefix_hashes): a block whose hash another indexed block already
 * has (the same tokens after an evicted and recomputed parent) is indexed
 * without a STORED, and REMOVED comes only when the last block with a hash
 * leaves the index (eviction).
 * Block hash: h = mix(parent ^ (block_size << 32)); per token t:
 * h = mix(h ^ (uint32)t) + 0x9e3779b97f4a7c15; hash = mix(h), in uint64
 * arithmetic, where mix is SplitMix64's finalizer (x ^= x >> 30;
 * x *= 0xbf58476d1ce4e5b9; x ^= x >> 27; x *= 0x94d049bb133111eb;
 * x ^= x >> 31) and parent is the previous block's hash, or
 * KVC_HASH_SEED for a sequence's first block (docs/kv-events.md). */
#define KVC_HASH_SEED 0x6d66617365727665ull
typedef enum { KVC_EV_STORED = 0, KVC_EV_REMOVED = 1 } kvc_event_kind;
typedef struct kvc_event {
  kvc_event_kind kind;
  uint64_t hash;         /* the block's hash */
  uint64_t parent_hash;  /* STORED: the previous block's hash, or KVC_HASH_SEED */
  int has_parent;        /* STORED: 0 for a sequence's first block */
  const int32_t *tokens; /* STORED: the block's block_size token ids, valid during the call */
  int n_tokens;          /* STORED: block_size */
} kvc_event;
/* Called on the pool's thread, inside the pool call that changed the index;
 * it must not call back into the pool. */
typedef void (*kvc_event_fn)(void *ctx, const kvc_event *ev);

/* Bytes of one block (all layers). */
size_t kvc_block_bytes(const kvc_geom *g);
/* (kvc_k_row_bytes + kvc_v_row_bytes) * n_layers: what a token costs. */
size_t kvc_bytes_per_token(const kvc_geom *g);
/* Bytes of one token's key (value) row in one layer; 0 for a bad geometry. */
size_t kvc_k_row_bytes(const kvc_geom *g);
size_t kvc_v_row_bytes(const kvc_geom *g);
/* "f32", "f16" or "int8". */
const char *kvc_dtype_name(kvc_dtype d);

/* Creates a pool of floor(bytes / kvc_block_bytes(g)) blocks (at least 1
 * needed, else MFS_EINVAL). Returns 0, MFS_EINVAL for a bad geometry, or
 * MFS_ENOMEM; *out is set only on success. */
int kvc_pool_new(kvc_pool **out, const kvc_geom *g, uint64_t bytes);
void kvc_pool_free(kvc_pool *p); /* NULL: no-op; all sequences go with it */
const kvc_geom *kvc_pool_geom(const kvc_pool *p);
void kvc_pool_stats(const kvc_pool *p, kvc_stats *out);

/* Block data for the engine. block must be a valid id. */
void *kvc_block_k(const kvc_pool *p, int32_t block, int layer);
void *kvc_block_v(const kvc_pool *p, int32_t block, int layer); /* NULL if v_elems == 0 */

/* A new empty sequence. 0 or MFS_ENOMEM. */
int kvc_seq_new(kvc_pool *p, kvc_seq **out);
/* Releases every block the sequence references, then the sequence. NULL: no-op. */
void kvc_seq_free(kvc_pool *p, kvc_seq *s);

/* For an empty sequence: attaches the longest run of cached full blocks
 * whose hashes chain from the start of tokens[0..n) (only whole blocks), and
 * returns the number of tokens attached (a multiple of block_size, <= n),
 * which become the sequence's length. Counts n as queried and the result as
 * hit. Returns MFS_ESTATE if the sequence is not empty. */
int kvc_seq_match_prefix(kvc_pool *p, kvc_seq *s, const int32_t *tokens, int n);

/* Makes the table cover n_total tokens (n_total >= current length) with
 * every block that tokens [len, n_total) will be written into privately
 * owned (copy-on-write of a shared partial last block). Evicts LRU cached
 * blocks when the free list is empty. Returns 0, or KVC_FULL with the
 * sequence and pool unchanged. */
int kvc_seq_reserve(kvc_pool *p, kvc_seq *s, int n_total);

/* After the engine wrote tokens [len, len+n) into the reserved blocks:
 * extends the length by n and indexes each block that became full (hash of
 * the parent's hash and the block's token ids). tokens are the n new ids.
 * If an identical block is already indexed, the sequence keeps its own copy
 * (no re-pointing). Returns 0 or MFS_EINVAL (n beyond the reservation). */
int kvc_seq_commit(kvc_pool *p, kvc_seq *s, const int32_t *tokens, int n);

/* A new sequence sharing all of src's blocks (ref counts up). Writing after
 * the fork goes through kvc_seq_reserve, which copies a shared partial last
 * block. 0 or MFS_ENOMEM. */
int kvc_seq_fork(kvc_pool *p, const kvc_seq *src, kvc_seq **out);

int kvc_seq_len(const kvc_seq *s);
/* The block table: ids of blocks covering the reserved tokens; *n set to
 * its length. Valid until the next call that changes the sequence. */
const int32_t *kvc_seq_blocks(const kvc_seq *s, int *n);

/* For the cache map: for blocks [0, min(max, total)) writes the state (0
 * free, 1 cached-free, 2 used) and the ref count (saturated at 65535).
 * Returns the number of blocks written. */
int kvc_pool_block_states(const kvc_pool *p, uint8_t *state, uint16_t *refs, int max);

/* Sets (fn NULL: clears) the prefix-cache event callback (kvc_event). */
void kvc_pool_set_event_fn(kvc_pool *p, kvc_event_fn fn, void *ctx);

/* Writes the distinct hashes of indexed blocks, ascending, into out and
 * returns how many. out needs room for every indexed block (blocks_total
 * always suffices); with less, only the first max indexed blocks count. */
int kvc_pool_prefix_hashes(const kvc_pool *p, uint64_t *out, int max);

/* Checks every invariant (states, ref counts against tables, index, LRU,
 * free list). Returns 0, or MFS_ESTATE with a description in err. For tests;
 * O(blocks + table entries). */
int kvc_pool_check(const kvc_pool *p, char *err, size_t errlen);

#endif
