/* gr_int.h: the grammar module's internals, shared by its .c files only.
 *
 * Front ends (gr_schema.c, gr_regex.c, gr_gbnf.c) build an expression tree
 * (gx) per rule with a gr_builder; gr_build.c lowers it to the flat grammar
 * the matcher runs (gr_match.c):
 *   rules -> alternatives -> elements, each element a byte class
 *   (terminal), a rule reference, or the end of the alternative.
 * Characters are Unicode code points until lowering, which turns a class of
 * them into the UTF-8 byte sequences that encode it. */
#ifndef MFS_GR_INT_H
#define MFS_GR_INT_H

#include <stddef.h>
#include <stdint.h>

#include "grammar.h"

/* ---- expressions ---- */
typedef enum {
  GX_NONE = 0, /* matches nothing */
  GX_EMPTY,    /* the empty string */
  GX_CHARS,    /* one code point from ranges r[0..2n) (lo, hi pairs, sorted, disjoint) */
  GX_BYTES,    /* one byte from the set in bset (for raw byte grammars) */
  GX_LIT,      /* the bytes s[0..n) */
  GX_SEQ,      /* kids in order */
  GX_ALT,      /* any one kid */
  GX_REP,      /* kids[0] repeated min..max times (max -1: unbounded) */
  GX_REF       /* the rule `rule` */
} gx_kind;

typedef struct gx {
  gx_kind k;
  int n;
  struct gx **kids;
  uint32_t *r;
  uint8_t *s;
  uint32_t bset[8];
  int min, max;
  int rule;
} gx;

#define GR_MAX_CP 0x10FFFF
#define GR_MAX_ELEMS (4 << 20) /* lowered size limit: a schema bigger than this is refused */

typedef struct gr_arena_chunk {
  struct gr_arena_chunk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} gr_arena_chunk;

typedef struct gr_builder {
  gr_arena_chunk *arena;
  int n_rules, cap_rules;
  char **rule_name; /* arena strings */
  gx **rule_body;   /* NULL until set */
  int oom;
  gr_error *err;    /* where front ends report (may be NULL) */
  int failed;       /* an error was reported */
  int fail_code;    /* ... with this MFS_* code */
} gr_builder;

void gb_init(gr_builder *b, gr_error *err);
void gb_deinit(gr_builder *b);
void *gb_alloc(gr_builder *b, size_t n); /* zeroed, arena (freed with the builder) */
char *gb_strdup(gr_builder *b, const char *s, size_t n);
/* Reports an error once (the first wins); returns code. */
int gb_fail(gr_builder *b, int code, const char *where, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

gx *gx_none(gr_builder *b);
gx *gx_empty(gr_builder *b);
gx *gx_chars(gr_builder *b, const uint32_t *pairs, int n); /* normalises (sorts, merges) */
gx *gx_char(gr_builder *b, uint32_t cp);
gx *gx_range(gr_builder *b, uint32_t lo, uint32_t hi);
gx *gx_bytes(gr_builder *b, const uint32_t bset[8]);
gx *gx_lit(gr_builder *b, const char *s, size_t n);
gx *gx_lits(gr_builder *b, const char *s); /* NUL-terminated */
gx *gx_seq(gr_builder *b, gx *const *kids, int n);
gx *gx_seq2(gr_builder *b, gx *a, gx *c);
gx *gx_seq3(gr_builder *b, gx *a, gx *c, gx *d);
gx *gx_alt(gr_builder *b, gx *const *kids, int n);
gx *gx_alt2(gr_builder *b, gx *a, gx *c);
gx *gx_rep(gr_builder *b, gx *x, int min, int max);
gx *gx_opt(gr_builder *b, gx *x);
gx *gx_star(gr_builder *b, gx *x);
gx *gx_plus(gr_builder *b, gx *x);
gx *gx_ref(gr_builder *b, int rule);
/* Complement of a code point class within [0, GR_MAX_CP] minus surrogates. */
gx *gx_chars_not(gr_builder *b, const uint32_t *pairs, int n);

/* Writes code point c as UTF-8 at o (room for 4 bytes); returns the length. */
int gr_utf8_put(uint32_t c, uint8_t *o);

/* A new rule (body set later with gb_set); returns its index or -1 (oom). */
int gb_rule(gr_builder *b, const char *name);
int gb_find_rule(const gr_builder *b, const char *name); /* -1 if absent */
void gb_set(gr_builder *b, int rule, gx *body);

/* Lowers every rule, checks the grammar (undefined rules, left recursion,
 * a start symbol that derives nothing) and makes the grammar. */
int gb_finish(gr_builder *b, int root, gr_grammar **out);

/* ---- the lowered grammar ---- */
/* Element encoding: >= 0: byte class index; GR_END: end of alternative;
 * <= GR_REF0: reference to rule (GR_REF0 - e). */
#define GR_END (-1)
#define GR_REF0 (-2)
#define GR_IS_REF(e) ((e) <= GR_REF0)
#define GR_REF_RULE(e) (GR_REF0 - (e))

struct gr_grammar {
  int refs; /* atomic */
  int n_rules;
  int32_t *rule_alt;  /* [n_rules + 1]: alternatives of rule r are alt_start[rule_alt[r] .. rule_alt[r+1]) */
  int32_t *alt_start; /* element index of each alternative's first element */
  int n_alts;
  int32_t *elems;
  int n_elems;
  uint32_t (*cls)[8]; /* byte classes, 256-bit sets */
  int n_cls;
  int root;
};

/* ---- front ends, on a builder ---- */
/* JSON Schema from a parsed cJSON value (the schema module's entry, also
 * used by tool calls). Returns the value's expression or NULL (error
 * reported). */
struct cJSON;
gx *gr_schema_gx(gr_builder *b, const struct cJSON *root, unsigned flags);
/* Any JSON value / object, compact. */
gx *gr_json_value_gx(gr_builder *b);
gx *gr_json_object_gx(gr_builder *b);
/* A regex over code points. as_json_string: the characters are written as
 * a JSON string's content (", \ and controls escaped as JSON.stringify
 * does), for `pattern`; search: unanchored (JSON Schema's `pattern`
 * semantics) unless the regex anchors itself. Returns NULL on error. */
gx *gr_regex_gx(gr_builder *b, const char *re, size_t len, int as_json_string, int search);
/* GBNF source -> rules on the builder; *root: the `root` rule. 0 or an
 * MFS_* error (reported through gb_fail with the offset). */
int gr_gbnf_parse(gr_builder *b, const char *src, size_t len, int *root);

#endif
