/* grammar.h: structured-output constraints. JSON Schema, regular
 * expressions, llama.cpp's GBNF, fixed choices and tool calls all compile to
 * one grammar form (a context-free grammar over bytes); a matcher walks it
 * byte by byte, and per step computes which tokens of the vocabulary may
 * come next (a bit mask) by walking a trie of the tokens' bytes.
 *
 * Threads:
 * - gr_grammar and gr_vocab are immutable once made: share them freely.
 *   A grammar is reference-counted (gr_grammar_ref / gr_grammar_unref, any
 *   thread).
 * - gr_index is the runtime of one grammar over one vocabulary: it interns
 *   matcher states and caches their byte transitions and token masks, so it
 *   is mutable: one thread at a time (the scheduler's). Every gr_matcher of
 *   an index belongs to that thread too.
 *
 * Errors: compile functions return 0 or a negative MFS_* value;
 * MFS_EUNSUPPORTED (a keyword, construct or value this module cannot honour
 * exactly), MFS_EINVAL (malformed input) or MFS_ENOMEM, and fill *err with
 * what and where (e.g. keyword "patternProperties" at "#/properties/a").
 * A constraint is either honoured exactly or refused: never loosened.
 */
#ifndef MFS_GRAMMAR_H
#define MFS_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

typedef struct gr_grammar gr_grammar;
typedef struct gr_vocab gr_vocab;
typedef struct gr_index gr_index;

typedef struct gr_error {
  char where[160]; /* JSON pointer into the schema ("#/properties/a"), a
                      regex/grammar offset ("offset 12"), or "" */
  char what[64];   /* the keyword or construct ("patternProperties", "lookahead") */
  char msg[320];   /* one sentence, with where and what in it */
} gr_error;

/* ---- compiling ---- */

/* JSON Schema (draft 2020-12 keywords; draft-07 `definitions` and
 * array-form `items` are read too). The value is written compactly: no
 * whitespace between tokens, object members in the order the schema lists
 * them (`properties`, then `required` names that are not among them), any
 * others after those where additional properties are allowed.
 * flags: GR_SCHEMA_STRICT_OBJECTS treats an absent `additionalProperties`
 * as false (OpenAI's strict mode; what generation wants); without it the
 * JSON Schema default (true) holds. */
#define GR_SCHEMA_STRICT_OBJECTS 1u
int gr_compile_json_schema(const char *json, size_t len, unsigned flags, gr_grammar **out, gr_error *err);
/* Any JSON value (object_only: a JSON object, as response_format
 * json_object asks), written compactly. */
int gr_compile_json_any(int object_only, gr_grammar **out, gr_error *err);
/* The whole output matches the regular expression (ECMAScript / PCRE2
 * syntax subset: literals, escapes, classes, ., groups, |, * + ? {m,n},
 * lazy quantifiers; ^ and $ at the ends only). */
int gr_compile_regex(const char *re, size_t len, gr_grammar **out, gr_error *err);
/* llama.cpp GBNF; the start symbol is `root`. */
int gr_compile_gbnf(const char *src, size_t len, gr_grammar **out, gr_error *err);
/* Exactly one of the n strings. */
int gr_compile_choice(const char *const *choices, const size_t *lens, int n, gr_grammar **out, gr_error *err);

/* Tool calls: one call (or, with parallel, one or more) written as
 *   open {"name":"NAME","arguments":ARGS} close
 * (calls separated by sep), where NAME is one of the tools' names and ARGS
 * a value of that tool's parameters schema (compiled with
 * GR_SCHEMA_STRICT_OBJECTS). Schemas are JSON texts; NULL: any object. */
typedef struct gr_tool {
  const char *name;
  const char *params_json;
  size_t params_len;
} gr_tool;
int gr_compile_tool_calls(const gr_tool *tools, int n, const char *open, const char *close, const char *sep,
                          int parallel, gr_grammar **out, gr_error *err);

void gr_grammar_ref(gr_grammar *g);
void gr_grammar_unref(gr_grammar *g); /* NULL: no-op */
/* Rules, alternatives and byte classes after lowering (for logs and tests). */
void gr_grammar_size(const gr_grammar *g, int *rules, int *elems, int *classes);

/* ---- vocabulary ---- */

/* bytes[i] / lens[i]: token i's raw bytes; NULL (or len 0) for ids that
 * are special or have no token: those are never allowed by a mask. eos:
 * the ids allowed once the grammar is complete (n_eos may be 0). */
int gr_vocab_new(int n_vocab, const char *const *bytes, const uint32_t *lens, const int32_t *eos, int n_eos,
                 gr_vocab **out);
void gr_vocab_free(gr_vocab *v);
int gr_vocab_size(const gr_vocab *v);

/* ---- runtime ---- */

/* The index holds a reference to g; v must outlive it. The index is
 * reference-counted (one reference from gr_index_new): ref/unref from any
 * thread (atomic), the last unref frees it; everything else on it belongs
 * to one thread at a time. */
int gr_index_new(gr_grammar *g, const gr_vocab *v, gr_index **out);
void gr_index_ref(gr_index *ix);
void gr_index_unref(gr_index *ix); /* NULL: no-op */
#define gr_index_free gr_index_unref

typedef struct gr_matcher {
  gr_index *ix;
  int32_t state;
} gr_matcher;

/* Starts at the beginning of the grammar. 0 or MFS_ENOMEM. */
int gr_matcher_init(gr_matcher *m, gr_index *ix);
/* Writes the allowed-token mask (bit i of mask[i/32] set: token i may come
 * next; ceil(n_vocab/32) words), EOS ids included exactly when the text so
 * far is a complete match. Returns the number of allowed ids (0: nothing
 * can follow, which a grammar that was not complete cannot reach),
 * MFS_ENOMEM, or MFS_ERANGE when the grammar reads the text so far in more
 * than 4096 ways at once (nested repetitions such as (x{0,1000}){0,1000}):
 * stopped rather than stalling the caller's thread. */
int gr_matcher_mask(gr_matcher *m, uint32_t *mask);
/* Advances by one token (an EOS id is accepted when complete and leaves the
 * state unchanged). 0, or MFS_EINVAL if the token is not allowed (state
 * unchanged), MFS_ENOMEM. */
int gr_matcher_accept_token(gr_matcher *m, int32_t tok);
/* Advances by bytes (no vocabulary needed). 0, or MFS_EINVAL at the first
 * byte the grammar rejects (state unchanged), MFS_ENOMEM, MFS_ERANGE (as
 * for gr_matcher_mask). */
int gr_matcher_accept_bytes(gr_matcher *m, const char *s, size_t n);
/* 1 if the text so far is a complete match. */
int gr_matcher_complete(const gr_matcher *m);
/* 1 if nothing more can be appended (complete, and no byte continues it). */
int gr_matcher_finished(gr_matcher *m);

/* Counters for logs and metrics (index-wide). */
typedef struct gr_index_stats {
  int64_t states, nodes, masks_computed, masks_cached, cache_flushes;
  size_t bytes;
} gr_index_stats;
void gr_index_stats_get(const gr_index *ix, gr_index_stats *out);

#endif
