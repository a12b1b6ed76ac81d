/* tok_internal.h: the tokenizer's layout, shared by its .c files only.
 *
 * Alphabets: BPE runs on "units". With a ByteLevel pre-tokenizer a unit is
 * one raw byte and vocab strings are converted from the GPT-2 byte-to-char
 * table back to raw bytes at load time (so encode never builds the mapped
 * string); otherwise a unit is one UTF-8 character and vocab strings are
 * used as they are. Everything here is written once by tok_new and only read
 * afterwards. */
#ifndef MFS_TOK_INTERNAL_H
#define MFS_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* string -> int32 map, open addressing (linear probing, load <= 2/3);
 * keys point into memory owned elsewhere. A slot holds all a probe reads
 * but the key's bytes, so a lookup touches one slot's cache line. */
typedef struct tok_smap_slot {
  const char *key;
  uint32_t len;
  int32_t val; /* -1: empty */
} tok_smap_slot;

typedef struct tok_smap {
  tok_smap_slot *slots; /* [cap] */
  size_t cap, n;
} tok_smap;

/* (left id, right id) -> merge rank and result id */
typedef struct tok_merge_slot {
  uint64_t key; /* (uint64)left << 32 | right; UINT64_MAX empty */
  int32_t rank, id;
} tok_merge_slot;

typedef struct tok_mmap {
  tok_merge_slot *slots; /* [cap] */
  size_t cap, n;
} tok_mmap;

typedef enum { NORM_NFC, NORM_PREPEND, NORM_REPLACE } tok_norm_kind;
typedef struct tok_norm {
  tok_norm_kind kind;
  char *a, *b; /* prepend: a; replace: a -> b (malloc'd) */
  size_t alen, blen;
} tok_norm;

typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_DIGITS } tok_pre_kind;
typedef enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_PREV, SPLIT_NEXT, SPLIT_CONTIGUOUS } tok_split_behavior;
typedef struct tok_pre {
  tok_pre_kind kind;
  pcre2_code *re; /* split / byte-level regex (NULL: byte-level without regex) */
  tok_split_behavior behavior;
  int invert;
  int add_prefix_space; /* byte-level */
  int individual;       /* digits */
} tok_pre;

typedef struct tok_added {
  char *content; /* malloc'd */
  size_t len;
  int32_t id;
  int special, lstrip, rstrip, single_word;
} tok_added;

struct tok_tokenizer {
  int32_t vocab_size;
  char **id_str;       /* [vocab_size] token string as in the file, or NULL (into pool) */
  uint32_t *id_strlen; /* [vocab_size] its length (a token may hold a NUL) */
  char **id_dec;       /* [vocab_size] decoded bytes of the token (into pool) */
  uint32_t *id_declen; /* [vocab_size] */
  uint8_t *id_flags;   /* [vocab_size] 1 special, 2 added, 4 present */
  uint32_t max_declen;

  tok_smap enc;     /* unit-alphabet bytes -> id (BPE vocab) */
  tok_smap strs;    /* token string -> id (vocab + added) */
  tok_mmap merges;
  char *enc_pool;   /* backing store of the converted encode keys */
  char *str_pool;   /* token strings */
  char *dec_pool;   /* decoded strings */

  int byte_level;   /* units are bytes (ByteLevel pre-tokenizer) */
  int byte_fallback, ignore_merges, fuse_unk;
  int32_t unk_id;
  int32_t byte_ids[256]; /* <0xHH> tokens, -1 absent (byte_fallback) */
  int32_t unit_ids[256]; /* single-byte units when byte_level (fast path) */
  /* sentencepiece-style files (no pre-tokenizer): BPE may run on pieces cut
   * before each "▁" whose preceding character never precedes a "▁" inside a
   * token (no merge can cross such a cut). meta_left lists those characters
   * that do, as UTF-8, NUL-padded; meta_split 0: never cut. */
  int meta_split;
  int nmeta_left;
  char meta_left[32][4];

  tok_norm *norms;
  int nnorms;
  tok_pre *pres;
  int npres;

  tok_added *added; /* sorted longest first */
  int nadded;
  int16_t *added_first[256]; /* per first byte: indices into added, -1 terminated */

  /* decoder: per-token transform is baked into id_dec; these are stream level */
  int dec_join_space; /* no decoder: tokens joined with " " */
  int dec_strip_start;
  char dec_strip_char[8];
  size_t dec_strip_len;

  int32_t bos, eos;
  int add_bos;
};

/* maps */
int tok_smap_init(tok_smap *m, size_t n);
void tok_smap_free(tok_smap *m);
int tok_smap_put(tok_smap *m, const char *k, size_t len, int32_t v); /* 1 if already there */
int32_t tok_smap_get(const tok_smap *m, const char *k, size_t len);
int tok_mmap_init(tok_mmap *m, size_t n);
void tok_mmap_free(tok_mmap *m);
void tok_mmap_put(tok_mmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
const tok_merge_slot *tok_mmap_get(const tok_mmap *m, int32_t a, int32_t b);

/* tok_json.c: a pull scanner over JSON text (strict RFC 8259). Each call
 * skips leading whitespace; on failure it returns -1 and the first error's
 * description and byte offset stay in err / err_at. */
typedef struct tok_json {
  const char *s;
  size_t n, i;     /* text length, cursor */
  const char *err; /* static text, NULL while none */
  size_t err_at;
} tok_json;
typedef struct tok_json_span {
  size_t start, end; /* byte offsets of one value; end 0: none */
} tok_json_span;

void tok_json_ws(tok_json *j);
int tok_json_peek(tok_json *j); /* next byte after whitespace, -1 at the end */
int tok_json_expect(tok_json *j, char c);
/* Inside an object or array (after its '{' / '['): 1 if another member
 * follows (the ',' before it consumed), 0 after consuming close, -1 on
 * error. *first is 1 before the first call. */
int tok_json_next(tok_json *j, char close, int *first);
/* Decodes a string (\u0000 included: the bytes may hold NUL) into out,
 * writing at most cap bytes (out NULL: validate only); *len (if not NULL)
 * gets the decoded length, which may exceed cap and never exceeds the
 * escaped length in the text. */
int tok_json_string(tok_json *j, char *out, size_t cap, size_t *len);
/* An integer in [lo, hi] (no fraction or exponent). */
int tok_json_int(tok_json *j, int64_t lo, int64_t hi, int64_t *v);
int tok_json_skip(tok_json *j); /* any one value */
/* Scans a tokenizer.json for the first "model" member's first "vocab"
 * (when an object) and first "merges" (when an array). Returns 0 (spans
 * with end 0 where absent or of another type; everything 0 when the text
 * is not an object), -1 when the text is not JSON as far as the scan had
 * to read it (*j holds the error). */
int tok_json_find_model(const char *s, size_t n, tok_json_span *vocab, tok_json_span *merges,
                        tok_json *j);

/* UTF-8: length of the valid character at s (1..4); 0 if s starts an
 * invalid sequence, -1 if the n bytes are a valid but unfinished prefix;
 * for both *bad gets the length of the maximal subpart. */
int tok_utf8_char(const unsigned char *s, size_t n, size_t *bad);

#endif
