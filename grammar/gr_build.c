/* gr_build.c: expressions -> the flat grammar (see gr_int.h).
 *
 * Lowering: each rule body becomes alternatives of element sequences. A
 * nested alternation or a repetition becomes a helper rule (memoised by the
 * expression node, so a shared sub-expression is lowered once):
 *   x*      R ::= x R | ()
 *   x{m,n}  x ... x (m times) then O(n-m), O(k) ::= x O(k-1) | ()
 * The recursive reference is the last element of its alternative, so the
 * matcher's tail call keeps the stack flat however long the repetition.
 * A code point class becomes the UTF-8 byte sequences that encode it (the
 * classic split of a range into ranges of equal length and shared prefix).
 *
 * Checks: every referenced rule is defined; no left recursion through a
 * reference that is not the last element (the matcher would push without
 * end); the start symbol derives at least one string. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gr_int.h"

/* ---- arena ---- */
void *gb_alloc(gr_builder *b, size_t n) {
  n = (n + 15) & ~(size_t)15;
  gr_arena_chunk *c = b->arena;
  if (!c || c->used + n > c->cap) {
    size_t cap = n > 65536 ? n : 65536;
    c = malloc(sizeof *c + cap);
    if (!c) {
      b->oom = 1;
      return NULL;
    }
    c->used = 0;
    c->cap = cap;
    c->next = b->arena;
    b->arena = c;
  }
  void *p = c->data + c->used;
  c->used += n;
  memset(p, 0, n);
  return p;
}

char *gb_strdup(gr_builder *b, const char *s, size_t n) {
  char *p = gb_alloc(b, n + 1);
  if (p) memcpy(p, s, n);
  return p;
}

void gb_init(gr_builder *b, gr_error *err) {
  memset(b, 0, sizeof *b);
  b->err = err;
  if (err) memset(err, 0, sizeof *err);
}

void gb_deinit(gr_builder *b) {
  for (gr_arena_chunk *c = b->arena, *n; c; c = n) {
    n = c->next;
    free(c);
  }
  free(b->rule_name);
  free(b->rule_body);
  memset(b, 0, sizeof *b);
}

int gb_fail(gr_builder *b, int code, const char *where, const char *what, const char *fmt, ...) {
  if (b->failed) return code;
  b->failed = 1;
  b->fail_code = code;
  if (b->err) {
    snprintf(b->err->where, sizeof b->err->where, "%s", where ? where : "");
    snprintf(b->err->what, sizeof b->err->what, "%s", what ? what : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err->msg, sizeof b->err->msg, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* ---- expression constructors ---- */
static gx *node(gr_builder *b, gx_kind k) {
  gx *x = gb_alloc(b, sizeof *x);
  if (x) x->k = k;
  return x;
}

gx *gx_none(gr_builder *b) { return node(b, GX_NONE); }
gx *gx_empty(gr_builder *b) { return node(b, GX_EMPTY); }

static int cmp_pair(const void *a, const void *c) {
  uint32_t x = ((const uint32_t *)a)[0], y = ((const uint32_t *)c)[0];
  return x < y ? -1 : x > y;
}

gx *gx_chars(gr_builder *b, const uint32_t *pairs, int n) {
  uint32_t *r = gb_alloc(b, (size_t)(n ? n : 1) * 2 * sizeof *r);
  if (!r) return NULL;
  int m = 0;
  for (int i = 0; i < n; i++) {
    uint32_t lo = pairs[2 * i], hi = pairs[2 * i + 1];
    if (hi > GR_MAX_CP) hi = GR_MAX_CP;
    if (lo > hi) continue;
    r[2 * m] = lo;
    r[2 * m + 1] = hi;
    m++;
  }
  qsort(r, (size_t)m, 2 * sizeof *r, cmp_pair);
  int k = 0;
  for (int i = 0; i < m; i++) {
    if (k && r[2 * i] <= r[2 * (k - 1) + 1] + 1) {
      if (r[2 * i + 1] > r[2 * (k - 1) + 1]) r[2 * (k - 1) + 1] = r[2 * i + 1];
    } else {
      r[2 * k] = r[2 * i];
      r[2 * k + 1] = r[2 * i + 1];
      k++;
    }
  }
  if (!k) return gx_none(b);
  gx *x = node(b, GX_CHARS);
  if (!x) return NULL;
  x->r = r;
  x->n = k;
  return x;
}

gx *gx_range(gr_builder *b, uint32_t lo, uint32_t hi) {
  uint32_t p[2] = {lo, hi};
  return gx_chars(b, p, 1);
}
gx *gx_char(gr_builder *b, uint32_t cp) { return gx_range(b, cp, cp); }

gx *gx_chars_not(gr_builder *b, const uint32_t *pairs, int n) {
  /* normalise first, then complement against [0, 10FFFF] \ surrogates */
  gx *t = gx_chars(b, pairs, n);
  if (!t) return NULL;
  uint32_t *out = gb_alloc(b, (size_t)(t->n + 2) * 2 * 2 * sizeof *out);
  if (!out) return NULL;
  int k = 0;
  uint32_t next = 0;
  for (int i = 0; t->k == GX_CHARS && i < t->n; i++) {
    if (t->r[2 * i] > next) {
      out[2 * k] = next;
      out[2 * k + 1] = t->r[2 * i] - 1;
      k++;
    }
    next = t->r[2 * i + 1] + 1;
  }
  if (next <= GR_MAX_CP) {
    out[2 * k] = next;
    out[2 * k + 1] = GR_MAX_CP;
    k++;
  }
  /* cut the surrogates out */
  uint32_t *fin = gb_alloc(b, (size_t)(2 * k + 2) * 2 * sizeof *fin);
  if (!fin) return NULL;
  int f = 0;
  for (int i = 0; i < k; i++) {
    uint32_t lo = out[2 * i], hi = out[2 * i + 1];
    if (hi < 0xD800 || lo > 0xDFFF) {
      fin[2 * f] = lo, fin[2 * f + 1] = hi, f++;
      continue;
    }
    if (lo < 0xD800) fin[2 * f] = lo, fin[2 * f + 1] = 0xD7FF, f++;
    if (hi > 0xDFFF) fin[2 * f] = 0xE000, fin[2 * f + 1] = hi, f++;
  }
  return gx_chars(b, fin, f);
}

gx *gx_bytes(gr_builder *b, const uint32_t bset[8]) {
  int any = 0;
  for (int i = 0; i < 8; i++) any |= bset[i] != 0;
  if (!any) return gx_none(b);
  gx *x = node(b, GX_BYTES);
  if (x) memcpy(x->bset, bset, sizeof x->bset);
  return x;
}

gx *gx_lit(gr_builder *b, const char *s, size_t n) {
  if (!n) return gx_empty(b);
  gx *x = node(b, GX_LIT);
  if (!x) return NULL;
  x->s = (uint8_t *)gb_strdup(b, s, n);
  x->n = (int)n;
  return x->s ? x : NULL;
}
gx *gx_lits(gr_builder *b, const char *s) { return gx_lit(b, s, strlen(s)); }

static gx *list(gr_builder *b, gx_kind k, gx *const *kids, int n) {
  for (int i = 0; i < n; i++)
    if (!kids[i]) return NULL;
  gx *x = node(b, k);
  if (!x) return NULL;
  x->kids = gb_alloc(b, (size_t)(n ? n : 1) * sizeof *x->kids);
  if (!x->kids) return NULL;
  /* flatten nested lists of the same kind; drop neutral elements */
  for (int i = 0; i < n; i++) {
    gx *c = kids[i];
    if (k == GX_SEQ && c->k == GX_EMPTY) continue;
    if (k == GX_ALT && c->k == GX_NONE) continue;
    if (k == GX_SEQ && c->k == GX_NONE) return gx_none(b);
    x->kids[x->n++] = c;
  }
  if (x->n == 0) return k == GX_SEQ ? gx_empty(b) : gx_none(b);
  if (x->n == 1) return x->kids[0];
  return x;
}

gx *gx_seq(gr_builder *b, gx *const *kids, int n) { return list(b, GX_SEQ, kids, n); }
gx *gx_alt(gr_builder *b, gx *const *kids, int n) { return list(b, GX_ALT, kids, n); }
gx *gx_seq2(gr_builder *b, gx *a, gx *c) {
  gx *k[2] = {a, c};
  return gx_seq(b, k, 2);
}
gx *gx_seq3(gr_builder *b, gx *a, gx *c, gx *d) {
  gx *k[3] = {a, c, d};
  return gx_seq(b, k, 3);
}
gx *gx_alt2(gr_builder *b, gx *a, gx *c) {
  gx *k[2] = {a, c};
  return gx_alt(b, k, 2);
}

gx *gx_rep(gr_builder *b, gx *x, int min, int max) {
  if (!x) return NULL;
  if (max >= 0 && max < min) return gx_none(b);
  if (max == 0) return gx_empty(b);
  if (min == 1 && max == 1) return x;
  if (x->k == GX_EMPTY) return x;
  if (x->k == GX_NONE) return min == 0 ? gx_empty(b) : x;
  gx *r = node(b, GX_REP);
  if (!r) return NULL;
  r->kids = gb_alloc(b, sizeof *r->kids);
  if (!r->kids) return NULL;
  r->kids[0] = x;
  r->n = 1;
  r->min = min;
  r->max = max;
  return r;
}
gx *gx_opt(gr_builder *b, gx *x) { return gx_rep(b, x, 0, 1); }
gx *gx_star(gr_builder *b, gx *x) { return gx_rep(b, x, 0, -1); }
gx *gx_plus(gr_builder *b, gx *x) { return gx_rep(b, x, 1, -1); }

gx *gx_ref(gr_builder *b, int rule) {
  gx *x = node(b, GX_REF);
  if (x) x->rule = rule;
  return x;
}

int gb_rule(gr_builder *b, const char *name) {
  if (b->n_rules == b->cap_rules) {
    int cap = b->cap_rules ? 2 * b->cap_rules : 64;
    char **nn = realloc(b->rule_name, (size_t)cap * sizeof *nn);
    if (nn) b->rule_name = nn;
    gx **nb = realloc(b->rule_body, (size_t)cap * sizeof *nb);
    if (nb) b->rule_body = nb;
    if (!nn || !nb) {
      b->oom = 1;
      return -1;
    }
    b->cap_rules = cap;
  }
  b->rule_name[b->n_rules] = gb_strdup(b, name, strlen(name));
  b->rule_body[b->n_rules] = NULL;
  if (!b->rule_name[b->n_rules]) return -1;
  return b->n_rules++;
}

int gb_find_rule(const gr_builder *b, const char *name) {
  for (int i = 0; i < b->n_rules; i++)
    if (!strcmp(b->rule_name[i], name)) return i;
  return -1;
}

void gb_set(gr_builder *b, int rule, gx *body) {
  if (rule >= 0 && rule < b->n_rules) b->rule_body[rule] = body;
}

/* ---- lowering ---- */
typedef struct {
  int32_t *v;
  int n, cap;
} ivec;

static int iv_push(ivec *a, int32_t x) {
  if (a->n == a->cap) {
    int cap = a->cap ? 2 * a->cap : 256;
    int32_t *p = realloc(a->v, (size_t)cap * sizeof *p);
    if (!p) return -1;
    a->v = p;
    a->cap = cap;
  }
  a->v[a->n++] = x;
  return 0;
}

/* Memo of lowered expressions -> rule (open addressing on the pointer). */
typedef struct {
  const gx **k;
  int *v;
  size_t cap, n;
} pmap;

static size_t phash(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return (size_t)x;
}
static int pmap_get(const pmap *m, const gx *k) {
  if (!m->cap) return -1;
  for (size_t i = phash(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (!m->k[i]) return -1;
    if (m->k[i] == k) return m->v[i];
  }
}
static int pmap_put(pmap *m, const gx *k, int v) {
  if (2 * (m->n + 1) > m->cap) {
    size_t cap = m->cap ? 2 * m->cap : 256;
    const gx **nk = calloc(cap, sizeof *nk);
    int *nv = malloc(cap * sizeof *nv);
    if (!nk || !nv) {
      free(nk);
      free(nv);
      return -1;
    }
    for (size_t i = 0; i < m->cap; i++)
      if (m->k[i]) {
        size_t j = phash(m->k[i]) & (cap - 1);
        while (nk[j]) j = (j + 1) & (cap - 1);
        nk[j] = m->k[i];
        nv[j] = m->v[i];
      }
    free(m->k);
    free(m->v);
    m->k = nk;
    m->v = nv;
    m->cap = cap;
  }
  size_t i = phash(k) & (m->cap - 1);
  while (m->k[i]) i = (i + 1) & (m->cap - 1);
  m->k[i] = k;
  m->v[i] = v;
  m->n++;
  return 0;
}

/* Lowered rules being built: alternatives as element lists. */
typedef struct {
  ivec *alts; /* per alternative: its elements */
  int n_alts, cap_alts;
  int done;
} lrule;

typedef struct {
  gr_builder *b;
  lrule *rules;
  int n_rules, cap_rules;
  pmap memo;
  uint32_t (*cls)[8];
  int n_cls, cap_cls;
  size_t total;
  int err;
} lower;

static int lr_new(lower *L) {
  if (L->n_rules == L->cap_rules) {
    int cap = L->cap_rules ? 2 * L->cap_rules : 64;
    lrule *p = realloc(L->rules, (size_t)cap * sizeof *p);
    if (!p) return -1;
    L->rules = p;
    L->cap_rules = cap;
  }
  memset(&L->rules[L->n_rules], 0, sizeof(lrule));
  return L->n_rules++;
}

static ivec *lr_alt(lower *L, int r) {
  lrule *R = &L->rules[r];
  if (R->n_alts == R->cap_alts) {
    int cap = R->cap_alts ? 2 * R->cap_alts : 4;
    ivec *p = realloc(R->alts, (size_t)cap * sizeof *p);
    if (!p) return NULL;
    R->alts = p;
    R->cap_alts = cap;
  }
  memset(&R->alts[R->n_alts], 0, sizeof(ivec));
  return &R->alts[R->n_alts++];
}

static int cls_index(lower *L, const uint32_t set[8]) {
  for (int i = L->n_cls - 1; i >= 0 && i >= L->n_cls - 64; i--) /* recent ones: cheap dedupe */
    if (!memcmp(L->cls[i], set, 32)) return i;
  for (int i = 0; i < L->n_cls - 64; i++)
    if (!memcmp(L->cls[i], set, 32)) return i;
  if (L->n_cls == L->cap_cls) {
    int cap = L->cap_cls ? 2 * L->cap_cls : 64;
    uint32_t(*p)[8] = realloc(L->cls, (size_t)cap * sizeof *p);
    if (!p) return -1;
    L->cls = p;
    L->cap_cls = cap;
  }
  memcpy(L->cls[L->n_cls], set, 32);
  return L->n_cls++;
}

static int emit(lower *L, ivec *a, int32_t e) {
  if (++L->total > GR_MAX_ELEMS) {
    L->err = MFS_EUNSUPPORTED;
    return -1;
  }
  if (iv_push(a, e)) {
    L->err = MFS_ENOMEM;
    return -1;
  }
  return 0;
}

static int emit_byte_range(lower *L, ivec *a, unsigned lo, unsigned hi) {
  uint32_t set[8] = {0};
  for (unsigned c = lo; c <= hi; c++) set[c >> 5] |= 1u << (c & 31);
  int ci = cls_index(L, set);
  if (ci < 0) {
    L->err = MFS_ENOMEM;
    return -1;
  }
  return emit(L, a, ci);
}

static int lower_into(lower *L, const gx *x, ivec *a);
static int lower_rule_of(lower *L, const gx *x); /* x as a rule of its own */

int gr_utf8_put(uint32_t c, uint8_t *o) {
  if (c < 0x80) return o[0] = (uint8_t)c, 1;
  if (c < 0x800) return o[0] = (uint8_t)(0xC0 | c >> 6), o[1] = (uint8_t)(0x80 | (c & 63)), 2;
  if (c < 0x10000)
    return o[0] = (uint8_t)(0xE0 | c >> 12), o[1] = (uint8_t)(0x80 | ((c >> 6) & 63)),
           o[2] = (uint8_t)(0x80 | (c & 63)), 3;
  return o[0] = (uint8_t)(0xF0 | c >> 18), o[1] = (uint8_t)(0x80 | ((c >> 12) & 63)),
         o[2] = (uint8_t)(0x80 | ((c >> 6) & 63)), o[3] = (uint8_t)(0x80 | (c & 63)), 4;
}

/* UTF-8: the code points [lo, hi] (same encoded length) as byte sequences,
 * appended as alternatives of rule r. */

static int utf8_split(lower *L, int r, uint32_t lo, uint32_t hi) {
  static const uint32_t lim[4] = {0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
  for (int i = 0; i < 3; i++) /* split at encoded-length boundaries */
    if (lo <= lim[i] && hi > lim[i]) return utf8_split(L, r, lo, lim[i]) || utf8_split(L, r, lim[i] + 1, hi);
  if (hi < 0x80) {
    ivec *a = lr_alt(L, r);
    return !a ? (L->err = MFS_ENOMEM, -1) : emit_byte_range(L, a, lo, hi);
  }
  /* split so that all but the last k bytes are shared and the last k span full ranges */
  for (int k = 1; k < 4; k++) {
    uint32_t m = (1u << (6 * k)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) return utf8_split(L, r, lo, lo | m) || utf8_split(L, r, (lo | m) + 1, hi);
      if ((hi & m) != m) return utf8_split(L, r, lo, (hi & ~m) - 1) || utf8_split(L, r, hi & ~m, hi);
    }
  }
  uint8_t a1[4], b1[4];
  int n = gr_utf8_put(lo, a1);
  gr_utf8_put(hi, b1);
  ivec *a = lr_alt(L, r);
  if (!a) return L->err = MFS_ENOMEM, -1;
  for (int i = 0; i < n; i++)
    if (emit_byte_range(L, a, a1[i], b1[i])) return -1;
  return 0;
}

/* The rule for a CHARS node with non-ASCII members, or the single class. */
static int lower_chars(lower *L, const gx *x, ivec *a) {
  if (x->r[2 * (x->n - 1) + 1] < 0x80) { /* ASCII only: one class */
    uint32_t set[8] = {0};
    for (int i = 0; i < x->n; i++)
      for (uint32_t c = x->r[2 * i]; c <= x->r[2 * i + 1]; c++) set[c >> 5] |= 1u << (c & 31);
    int ci = cls_index(L, set);
    if (ci < 0) return L->err = MFS_ENOMEM, -1;
    return emit(L, a, ci);
  }
  int r = pmap_get(&L->memo, x);
  if (r < 0) {
    r = lr_new(L);
    if (r < 0 || pmap_put(&L->memo, x, r)) return L->err = MFS_ENOMEM, -1;
    /* ASCII members first as one class, then each multi-byte range */
    uint32_t set[8] = {0};
    int any = 0;
    for (int i = 0; i < x->n; i++)
      for (uint32_t c = x->r[2 * i]; c <= x->r[2 * i + 1] && c < 0x80; c++) set[c >> 5] |= 1u << (c & 31), any = 1;
    if (any) {
      ivec *al = lr_alt(L, r);
      int ci = cls_index(L, set);
      if (!al || ci < 0) return L->err = MFS_ENOMEM, -1;
      if (emit(L, al, ci)) return -1;
    }
    for (int i = 0; i < x->n; i++) {
      uint32_t lo = x->r[2 * i] < 0x80 ? 0x80 : x->r[2 * i], hi = x->r[2 * i + 1];
      if (hi < 0x80) continue;
      /* surrogates never encode */
      if (lo <= 0xDFFF && hi >= 0xD800) {
        if (lo < 0xD800 && utf8_split(L, r, lo, 0xD7FF)) return -1;
        if (hi > 0xDFFF && utf8_split(L, r, 0xE000, hi)) return -1;
      } else if (utf8_split(L, r, lo, hi))
        return -1;
    }
    L->rules[r].done = 1;
  }
  return emit(L, a, GR_REF0 - r);
}

/* A sub-expression as one element: a class if it is one, else a rule. */
static int lower_elem(lower *L, const gx *x, ivec *a) {
  if (x->k == GX_BYTES || x->k == GX_REF || x->k == GX_CHARS || x->k == GX_ALT || x->k == GX_REP)
    return lower_into(L, x, a);
  int r = lower_rule_of(L, x);
  return r < 0 ? -1 : emit(L, a, GR_REF0 - r);
}

static int lower_into(lower *L, const gx *x, ivec *a) {
  switch (x->k) {
  case GX_EMPTY:
    return 0;
  case GX_NONE: { /* a reference to a rule with no alternatives */
    int r = lr_new(L);
    if (r < 0) return L->err = MFS_ENOMEM, -1;
    L->rules[r].done = 1;
    return emit(L, a, GR_REF0 - r);
  }
  case GX_BYTES: {
    int ci = cls_index(L, x->bset);
    if (ci < 0) return L->err = MFS_ENOMEM, -1;
    return emit(L, a, ci);
  }
  case GX_CHARS:
    return lower_chars(L, x, a);
  case GX_LIT:
    for (int i = 0; i < x->n; i++)
      if (emit_byte_range(L, a, x->s[i], x->s[i])) return -1;
    return 0;
  case GX_SEQ:
    for (int i = 0; i < x->n; i++)
      if (lower_into(L, x->kids[i], a)) return -1;
    return 0;
  case GX_REF:
    if (x->rule < 0 || x->rule >= L->b->n_rules) return L->err = MFS_EINVAL, -1;
    return emit(L, a, GR_REF0 - x->rule); /* builder rules keep their indices */
  case GX_ALT:
  case GX_REP: {
    int r = lower_rule_of(L, x);
    return r < 0 ? -1 : emit(L, a, GR_REF0 - r);
  }
  }
  return -1;
}

/* x lowered as a rule of its own (memoised). */
static int lower_rule_of(lower *L, const gx *x) {
  int r = pmap_get(&L->memo, x);
  if (r >= 0) return r;
  r = lr_new(L);
  if (r < 0 || pmap_put(&L->memo, x, r)) return L->err = MFS_ENOMEM, -1;
  if (x->k == GX_ALT) {
    for (int i = 0; i < x->n; i++) {
      ivec *a = lr_alt(L, r);
      if (!a) return L->err = MFS_ENOMEM, -1;
      if (lower_into(L, x->kids[i], a)) return -1;
    }
  } else if (x->k == GX_REP) {
    const gx *e = x->kids[0];
    /* the repeated item as one element */
    ivec one = {0};
    if (lower_elem(L, e, &one)) {
      free(one.v);
      return -1;
    }
    int32_t item = one.v[0];
    int n_item = one.n;
    free(one.v);
    if (n_item != 1) return L->err = MFS_EINVAL, -1;
    /* tail: star rule or chain of optionals */
    int tail = -1;
    if (x->max < 0) {
      tail = lr_new(L);
      if (tail < 0) return L->err = MFS_ENOMEM, -1;
      ivec *a1 = lr_alt(L, tail), *a2;
      if (!a1 || emit(L, a1, item) || emit(L, a1, GR_REF0 - tail)) return L->err ? -1 : (L->err = MFS_ENOMEM, -1);
      a2 = lr_alt(L, tail);
      if (!a2) return L->err = MFS_ENOMEM, -1;
      L->rules[tail].done = 1;
    } else {
      for (int k = 0; k < x->max - x->min; k++) {
        int o = lr_new(L);
        if (o < 0) return L->err = MFS_ENOMEM, -1;
        ivec *a1 = lr_alt(L, o);
        if (!a1 || emit(L, a1, item)) return L->err ? -1 : (L->err = MFS_ENOMEM, -1);
        if (tail >= 0 && emit(L, a1, GR_REF0 - tail)) return -1;
        if (!lr_alt(L, o)) return L->err = MFS_ENOMEM, -1;
        L->rules[o].done = 1;
        tail = o;
      }
    }
    ivec *a = lr_alt(L, r);
    if (!a) return L->err = MFS_ENOMEM, -1;
    for (int k = 0; k < x->min; k++)
      if (emit(L, a, item)) return -1;
    if (tail >= 0 && emit(L, a, GR_REF0 - tail)) return -1;
  } else {
    ivec *a = lr_alt(L, r);
    if (!a) return L->err = MFS_ENOMEM, -1;
    if (lower_into(L, x, a)) return -1;
  }
  L->rules[r].done = 1;
  return r;
}

/* ---- checks ---- */
static int nullable_elem(const lower *L, const uint8_t *nul, int32_t e) {
  (void)L;
  return GR_IS_REF(e) && nul[GR_REF_RULE(e)];
}

static void free_lower(lower *L) {
  for (int i = 0; i < L->n_rules; i++) {
    for (int j = 0; j < L->rules[i].n_alts; j++) free(L->rules[i].alts[j].v);
    free(L->rules[i].alts);
  }
  free(L->rules);
  free(L->memo.k);
  free(L->memo.v);
  free(L->cls);
}

/* DFS for left recursion through a non-tail reference. state: 0 new, 1 on stack, 2 done.
 * Edge r -> s when s is referenced at a position preceded by nullable
 * elements only; the cycle is harmful if any edge on it is not the last
 * element of its alternative (a tail call keeps the stack flat). */
typedef struct {
  const lower *L;
  const uint8_t *nul;
  uint8_t *st;
  int *nontail_on_path; /* prefix counts */
  int bad_rule;
} lrchk;

static int lr_dfs(lrchk *c, int r, int depth_nontail, int *stack_nt) {
  c->st[r] = 1;
  stack_nt[r] = depth_nontail;
  const lrule *R = &c->L->rules[r];
  for (int j = 0; j < R->n_alts; j++) {
    const ivec *a = &R->alts[j];
    for (int i = 0; i < a->n; i++) {
      int32_t e = a->v[i];
      if (!GR_IS_REF(e)) break;
      int s = GR_REF_RULE(e);
      int nt = depth_nontail + (i != a->n - 1);
      if (c->st[s] == 1) {
        if (nt > stack_nt[s]) { /* a non-tail edge on the cycle */
          c->bad_rule = s;
          return -1;
        }
      } else if (c->st[s] == 0) {
        if (lr_dfs(c, s, nt, stack_nt)) return -1;
      }
      if (!nullable_elem(c->L, c->nul, e)) break;
    }
  }
  c->st[r] = 2;
  return 0;
}

int gb_finish(gr_builder *b, int root, gr_grammar **out) {
  *out = NULL;
  if (b->failed) return b->oom ? MFS_ENOMEM : MFS_EINVAL;
  if (b->oom) return MFS_ENOMEM;
  lower L = {0};
  L.b = b;
  int rc = 0;
  /* builder rules keep indices 0..n-1 */
  for (int i = 0; i < b->n_rules; i++)
    if (lr_new(&L) < 0) {
      rc = MFS_ENOMEM;
      goto out;
    }
  for (int i = 0; i < b->n_rules; i++) {
    gx *body = b->rule_body[i];
    if (!body) {
      rc = gb_fail(b, MFS_EINVAL, "", b->rule_name[i], "rule '%s' is used but never defined", b->rule_name[i]);
      goto out;
    }
    if (body->k == GX_ALT) {
      for (int j = 0; j < body->n; j++) {
        ivec *a = lr_alt(&L, i);
        if (!a || lower_into(&L, body->kids[j], a)) goto lerr;
      }
    } else if (body->k != GX_NONE) {
      ivec *a = lr_alt(&L, i);
      if (!a || lower_into(&L, body, a)) goto lerr;
    }
    L.rules[i].done = 1;
  }
  /* nullable rules (fixpoint) */
  uint8_t *nul = calloc((size_t)L.n_rules, 1), *prod = calloc((size_t)L.n_rules, 1);
  uint8_t *st = calloc((size_t)L.n_rules, 1);
  int *snt = calloc((size_t)L.n_rules, sizeof *snt);
  if (!nul || !prod || !st || !snt) {
    free(nul), free(prod), free(st), free(snt);
    rc = MFS_ENOMEM;
    goto out;
  }
  for (int ch = 1; ch;) {
    ch = 0;
    for (int r = 0; r < L.n_rules; r++) {
      for (int j = 0; j < L.rules[r].n_alts; j++) {
        const ivec *a = &L.rules[r].alts[j];
        int n = 1, p = 1;
        for (int i = 0; i < a->n; i++) {
          int32_t e = a->v[i];
          if (!GR_IS_REF(e)) n = 0;
          else {
            if (!nul[GR_REF_RULE(e)]) n = 0;
            if (!prod[GR_REF_RULE(e)]) p = 0;
          }
        }
        if (n && !nul[r]) nul[r] = 1, ch = 1;
        if (p && !prod[r]) prod[r] = 1, ch = 1;
      }
    }
  }
  lrchk c = {&L, nul, st, NULL, -1};
  for (int r = 0; r < L.n_rules && c.bad_rule < 0; r++)
    if (!st[r]) lr_dfs(&c, r, 0, snt);
  int root_prod = prod[root];
  free(nul), free(prod), free(st), free(snt);
  if (c.bad_rule >= 0) {
    const char *nm = c.bad_rule < b->n_rules ? b->rule_name[c.bad_rule] : "(a repetition)";
    rc = gb_fail(b, MFS_EUNSUPPORTED, "", "left recursion",
                 "rule '%s' is left-recursive (it can reach itself before consuming any input); "
                 "rewrite it with repetition",
                 nm);
    goto out;
  }
  if (!root_prod) {
    rc = gb_fail(b, MFS_EINVAL, "", "empty language", "the constraint accepts no output at all");
    goto out;
  }
  /* flatten */
  gr_grammar *g = calloc(1, sizeof *g);
  if (!g) {
    rc = MFS_ENOMEM;
    goto out;
  }
  g->refs = 1;
  g->n_rules = L.n_rules;
  g->root = root;
  int n_alts = 0;
  size_t n_el = 0;
  for (int r = 0; r < L.n_rules; r++) {
    n_alts += L.rules[r].n_alts;
    for (int j = 0; j < L.rules[r].n_alts; j++) n_el += (size_t)L.rules[r].alts[j].n + 1;
  }
  g->rule_alt = malloc((size_t)(L.n_rules + 1) * sizeof *g->rule_alt);
  g->alt_start = malloc((size_t)(n_alts ? n_alts : 1) * sizeof *g->alt_start);
  g->elems = malloc((n_el ? n_el : 1) * sizeof *g->elems);
  g->cls = malloc((size_t)(L.n_cls ? L.n_cls : 1) * sizeof *g->cls);
  if (!g->rule_alt || !g->alt_start || !g->elems || !g->cls) {
    gr_grammar_unref(g);
    rc = MFS_ENOMEM;
    goto out;
  }
  if (L.n_cls) memcpy(g->cls, L.cls, (size_t)L.n_cls * sizeof *g->cls);
  g->n_cls = L.n_cls;
  int ai = 0;
  size_t ei = 0;
  for (int r = 0; r < L.n_rules; r++) {
    g->rule_alt[r] = ai;
    for (int j = 0; j < L.rules[r].n_alts; j++) {
      g->alt_start[ai++] = (int32_t)ei;
      const ivec *a = &L.rules[r].alts[j];
      if (a->n) memcpy(g->elems + ei, a->v, (size_t)a->n * sizeof *a->v);
      ei += (size_t)a->n;
      g->elems[ei++] = GR_END;
    }
  }
  g->rule_alt[L.n_rules] = ai;
  g->n_alts = ai;
  g->n_elems = (int)ei;
  *out = g;
  goto out;
lerr:
  if (L.err == MFS_EUNSUPPORTED)
    rc = gb_fail(b, MFS_EUNSUPPORTED, "", "size",
                 "the constraint is too large once expanded (over %d grammar elements); "
                 "lower its repetition counts or lengths",
                 GR_MAX_ELEMS);
  else
    rc = L.err ? L.err : MFS_ENOMEM;
out:
  free_lower(&L);
  return rc;
}

void gr_grammar_ref(gr_grammar *g) {
  if (g) __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
}

void gr_grammar_unref(gr_grammar *g) {
  if (!g || __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL)) return;
  free(g->rule_alt);
  free(g->alt_start);
  free(g->elems);
  free(g->cls);
  free(g);
}

void gr_grammar_size(const gr_grammar *g, int *rules, int *elems, int *classes) {
  if (rules) *rules = g->n_rules;
  if (elems) *elems = g->n_elems;
  if (classes) *classes = g->n_cls;
}
