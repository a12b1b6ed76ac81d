/* gr_regex.c: regular expressions -> grammar expressions.
 *
 * The syntax is the subset on which ECMAScript (JSON Schema's `pattern`)
 * and PCRE2 agree: literals, escapes (\d \w \s and their complements with
 * ECMAScript's meanings, \t \n \r \f \v \0 \cX \xHH \x{H..} \uHHHH
 * \u{H..}, escaped punctuation), classes [...] with ranges and negation,
 * `.`, groups ( ) (?: ) (?<name> ) (?P<name> ), |, the quantifiers
 * * + ? {n} {n,} {n,m} and their lazy forms (same language), ^ at the start
 * and $ at the end of a top-level alternative. The regex is read as UTF-8
 * and works on code points. Everything else is refused (MFS_EUNSUPPORTED,
 * with the construct and its byte offset) rather than approximated:
 * backreferences, lookaround, word boundaries, anchors elsewhere, inline
 * flags, possessive quantifiers, atomic groups, \p{..}, POSIX classes, and
 * the forms the two dialects read differently ([] and [^], {,n}, octal
 * escapes). Malformed regexes are MFS_EINVAL with the offset.
 *
 * search (JSON Schema semantics): the regex may match anywhere in the
 * string, so each top-level alternative is padded with "any character"*
 * on the sides it does not anchor. Otherwise the whole text must match and
 * anchors change nothing. as_json_string: every character class goes
 * through gr_json_chars, so the text is a JSON string's content (", \ and
 * controls escaped). */
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "gr_int.h"

gx *gr_json_chars(gr_builder *b, const gx *cls); /* gr_schema.c */

#define RX_MAX_COUNT 10000 /* larger repetition counts are refused */
#define RX_MAX_DEPTH 200   /* group nesting */

typedef struct {
  gr_builder *b;
  const uint8_t *s;
  size_t n, i; /* i: byte offset of the next unread character */
  int json, search, depth;
} rx;

/* A code point set under construction (pairs lo, hi; arena storage). */
typedef struct {
  uint32_t *r;
  int n, cap;
} cset;

static const uint32_t DIGIT[] = {'0', '9'};
static const uint32_t WORD[] = {'0', '9', 'A', 'Z', '_', '_', 'a', 'z'};
/* ECMAScript's WhiteSpace and LineTerminator */
static const uint32_t SPACE[] = {0x09,   0x0D,   0x20,   0x20,   0xA0,   0xA0,   0x1680, 0x1680, 0x2000, 0x200A,
                                 0x2028, 0x2029, 0x202F, 0x202F, 0x205F, 0x205F, 0x3000, 0x3000, 0xFEFF, 0xFEFF};
static const uint32_t NOT_DOT[] = {'\n', '\n', '\r', '\r', 0x2028, 0x2029};

static gx *rx_err(rx *p, int code, size_t off, const char *what, const char *why) {
  char w[32];
  snprintf(w, sizeof w, "offset %zu", off);
  if (code == MFS_EUNSUPPORTED)
    gb_fail(p->b, code, w, what, "regex: %s at offset %zu is not supported (%s)", what, off, why);
  else
    gb_fail(p->b, code, w, what, "regex: %s at offset %zu: %s", what, off, why);
  return NULL;
}
#define REFUSE(p, off, what, why) rx_err(p, MFS_EUNSUPPORTED, off, what, why)
#define BAD(p, off, what, why) rx_err(p, MFS_EINVAL, off, what, why)

static int at_end(const rx *p) { return p->i >= p->n; }
static int peek(const rx *p, size_t k) { return p->i + k < p->n ? p->s[p->i + k] : -1; }

/* Decodes one UTF-8 code point at p->i (strict: no overlongs, surrogates
 * or values past U+10FFFF). 0 and an error reported if invalid. */
static int next_cp(rx *p, uint32_t *cp) {
  const uint8_t *s = p->s + p->i;
  size_t left = p->n - p->i;
  uint32_t c = s[0];
  int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
  if (!len || (size_t)len > left) goto bad;
  if (len > 1) c &= 0x3F >> (len - 1);
  for (int k = 1; k < len; k++) {
    if ((s[k] & 0xC0) != 0x80) goto bad;
    c = c << 6 | (s[k] & 0x3F);
  }
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (c < min[len] || c > GR_MAX_CP || (c >= 0xD800 && c <= 0xDFFF)) goto bad;
  *cp = c;
  p->i += (size_t)len;
  return 1;
bad:
  BAD(p, p->i, "UTF-8", "the regex is not valid UTF-8");
  return 0;
}

/* ---- building ---- */
static gx *cls(rx *p, gx *c) { return p->json && c ? gr_json_chars(p->b, c) : c; }

static int cs_add(rx *p, cset *c, uint32_t lo, uint32_t hi) {
  if (c->n == c->cap) {
    int cap = c->cap ? 2 * c->cap : 16;
    uint32_t *r = gb_alloc(p->b, (size_t)cap * 2 * sizeof *r);
    if (!r) return -1;
    if (c->n) memcpy(r, c->r, (size_t)c->n * 2 * sizeof *r);
    c->r = r;
    c->cap = cap;
  }
  c->r[2 * c->n] = lo;
  c->r[2 * c->n + 1] = hi;
  c->n++;
  return 0;
}

/* Adds a sorted, disjoint set, or its complement. */
static int cs_add_set(rx *p, cset *c, const uint32_t *r, int n, int neg) {
  if (!neg) {
    for (int k = 0; k < n; k++)
      if (cs_add(p, c, r[2 * k], r[2 * k + 1])) return -1;
    return 0;
  }
  uint32_t next = 0;
  for (int k = 0; k < n; k++) {
    if (r[2 * k] > next && cs_add(p, c, next, r[2 * k] - 1)) return -1;
    next = r[2 * k + 1] + 1;
  }
  return next <= GR_MAX_CP ? cs_add(p, c, next, GR_MAX_CP) : 0;
}

/* ---- escapes ---- */
enum { ESC_ERR = 0, ESC_CP, ESC_SET };
typedef struct {
  const uint32_t *r;
  int n, neg;
} eset;

static int hexval(int c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Exactly k hex digits at p->i; -1 (nothing consumed) if not there. */
static long hex_fixed(rx *p, int k) {
  long v = 0;
  for (int j = 0; j < k; j++) {
    int h = hexval(peek(p, (size_t)j));
    if (h < 0) return -1;
    v = v << 4 | h;
  }
  p->i += (size_t)k;
  return v;
}

/* {H...} at p->i (the brace): the code point, or -1 with an error reported. */
static long hex_braced(rx *p, size_t at) {
  size_t j = p->i + 1;
  long v = 0;
  int nd = 0;
  for (; j < p->n && hexval(p->s[j]) >= 0; j++, nd++) {
    v = v << 4 | hexval(p->s[j]);
    if (v > GR_MAX_CP) break;
  }
  if (!nd || j >= p->n || p->s[j] != '}' || v > GR_MAX_CP) {
    BAD(p, at, "escape", "expected a code point (at most 10FFFF) in hex between { and }");
    return -1;
  }
  p->i = j + 1;
  return v;
}

/* The escape at p->i (a backslash): a code point or a set. */
static int escape(rx *p, int in_class, uint32_t *cp, eset *set) {
  size_t at = p->i;
  if (at + 1 >= p->n) return BAD(p, at, "escape", "the regex ends in a lone backslash"), ESC_ERR;
  int c = p->s[at + 1];
  p->i = at + 2;
  set->neg = c >= 'A' && c <= 'Z';
  switch (c) {
  case 'd':
  case 'D':
    set->r = DIGIT, set->n = 1;
    return ESC_SET;
  case 'w':
  case 'W':
    set->r = WORD, set->n = 4;
    return ESC_SET;
  case 's':
  case 'S':
    set->r = SPACE, set->n = 10;
    return ESC_SET;
  case 't':
    return *cp = '\t', ESC_CP;
  case 'n':
    return *cp = '\n', ESC_CP;
  case 'r':
    return *cp = '\r', ESC_CP;
  case 'f':
    return *cp = '\f', ESC_CP;
  case 'v':
    return *cp = '\v', ESC_CP;
  case 'b':
    if (in_class) return *cp = '\b', ESC_CP;
    return REFUSE(p, at, "word boundary", "\\b has no grammar equivalent"), ESC_ERR;
  case 'B':
    return REFUSE(p, at, "word boundary", "\\B has no grammar equivalent"), ESC_ERR;
  case '0':
    if (peek(p, 0) >= '0' && peek(p, 0) <= '9')
      return REFUSE(p, at, "octal escape", "ECMAScript and PCRE2 read \\0 followed by digits differently"), ESC_ERR;
    return *cp = 0, ESC_CP;
  case 'k':
    return REFUSE(p, at, "backreference", "a grammar cannot repeat what a group matched"), ESC_ERR;
  case 'p':
  case 'P':
    return REFUSE(p, at, "unicode property", "\\p{..} and \\P{..} need Unicode tables this module does not have"),
           ESC_ERR;
  case 'c': {
    int l = peek(p, 0);
    if (!((l >= 'a' && l <= 'z') || (l >= 'A' && l <= 'Z')))
      return REFUSE(p, at, "escape \\c", "\\c must be followed by a letter"), ESC_ERR;
    p->i++;
    return *cp = (uint32_t)(l & 31), ESC_CP;
  }
  case 'x': {
    long v = peek(p, 0) == '{' ? hex_braced(p, at) : hex_fixed(p, 2);
    if (v == -1 && !p->b->failed) BAD(p, at, "escape", "\\x needs two hex digits");
    return v < 0 ? ESC_ERR : (*cp = (uint32_t)v, ESC_CP);
  }
  case 'u': {
    long v = peek(p, 0) == '{' ? hex_braced(p, at) : hex_fixed(p, 4);
    if (v < 0) {
      if (!p->b->failed) BAD(p, at, "escape", "\\u needs four hex digits or {H...}");
      return ESC_ERR;
    }
    if (v >= 0xD800 && v <= 0xDBFF && peek(p, 0) == '\\' && peek(p, 1) == 'u') { /* a surrogate pair */
      size_t save = p->i;
      p->i += 2;
      long lo = hex_fixed(p, 4);
      if (lo >= 0xDC00 && lo <= 0xDFFF) v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
      else p->i = save;
    }
    if (v >= 0xD800 && v <= 0xDFFF)
      return REFUSE(p, at, "surrogate", "a lone surrogate code point cannot be written as UTF-8"), ESC_ERR;
    return *cp = (uint32_t)v, ESC_CP;
  }
  default:
    break;
  }
  if (c >= '1' && c <= '9')
    return REFUSE(p, at, "backreference", "a grammar cannot repeat what a group matched"), ESC_ERR;
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
    char what[16];
    snprintf(what, sizeof what, "escape \\%c", c);
    return REFUSE(p, at, what, "only \\d \\D \\w \\W \\s \\S \\t \\n \\r \\f \\v \\0 \\cX \\xHH \\uHHHH are read"),
           ESC_ERR;
  }
  if (c < 0x80) return *cp = (uint32_t)c, ESC_CP; /* escaped punctuation stands for itself */
  p->i = at + 1;
  return next_cp(p, cp) ? ESC_CP : ESC_ERR;
}

/* ---- quantifiers ---- */
/* {n} {n,} {n,m} at p->i: 1 (consumed; *mn, *mx set), 0 (not a quantifier:
 * a literal brace), -1 (error reported). A brace that holds only digits,
 * commas and blanks but is no quantifier ({,n}, {1, 2}) is refused: PCRE2
 * versions and ECMAScript read those differently. */
static int braces(rx *p, int *mn, int *mx) {
  size_t at = p->i, j = p->i + 1;
  long v[2] = {0, -1};
  int k = 0, digits = 0, ok = 0;
  for (; j < p->n; j++) {
    int c = p->s[j];
    if (c >= '0' && c <= '9') {
      if (k == 1 && v[1] < 0) v[1] = 0;
      if (v[k] <= 1000000) v[k] = v[k] * 10 + (c - '0');
      digits++;
    } else if (c == ',' && k == 0 && digits) {
      k = 1;
    } else {
      ok = c == '}' && digits;
      break;
    }
  }
  if (!ok) {
    size_t e = at + 1;
    while (e < p->n && ((p->s[e] >= '0' && p->s[e] <= '9') || p->s[e] == ',' || p->s[e] == ' ')) e++;
    if (e < p->n && p->s[e] == '}' && e > at + 1)
      return REFUSE(p, at, "quantifier", "a brace like {,n} or {1, 2} reads differently in ECMAScript and PCRE2"), -1;
    return 0;
  }
  if (k == 0) v[1] = v[0];
  if (v[0] > RX_MAX_COUNT || v[1] > RX_MAX_COUNT)
    return REFUSE(p, at, "repetition count", "counts above 10000 are not supported"), -1;
  if (v[1] >= 0 && v[1] < v[0]) return BAD(p, at, "quantifier", "the range is out of order ({n,m} with m < n)"), -1;
  *mn = (int)v[0];
  *mx = (int)v[1];
  p->i = j + 1;
  return 1;
}

/* A quantifier at p->i: 1 (consumed), 0 (none), -1 (error). */
static int quantifier(rx *p, int *mn, int *mx) {
  switch (peek(p, 0)) {
  case '*':
    return *mn = 0, *mx = -1, p->i++, 1;
  case '+':
    return *mn = 1, *mx = -1, p->i++, 1;
  case '?':
    return *mn = 0, *mx = 1, p->i++, 1;
  case '{':
    return braces(p, mn, mx);
  default:
    return 0;
  }
}

static gx *quantified(rx *p, gx *x) {
  int mn, mx;
  int q = quantifier(p, &mn, &mx);
  if (q <= 0) return q < 0 ? NULL : x;
  if (peek(p, 0) == '?') p->i++; /* lazy: the same language */
  else if (peek(p, 0) == '+')
    return REFUSE(p, p->i, "possessive quantifier", "it can reject strings the plain quantifier matches");
  size_t at2 = p->i;
  int mn2, mx2, q2 = quantifier(p, &mn2, &mx2);
  if (q2 < 0) return NULL;
  if (q2 > 0) return BAD(p, at2, "quantifier", "nothing to repeat (a quantifier follows a quantifier)");
  return gx_rep(p->b, x, mn, mx);
}

/* ---- atoms ---- */
static gx *alternation(rx *p, int top);

static gx *char_class(rx *p) {
  size_t at = p->i++;
  int neg = 0;
  if (peek(p, 0) == '^') neg = 1, p->i++;
  if (peek(p, 0) == ']')
    return REFUSE(p, at, "empty class", "ECMAScript reads [] and [^] as empty/any, PCRE2 as a class holding ']'");
  cset cs = {0};
  for (;;) {
    if (at_end(p)) return BAD(p, at, "unterminated class", "'[' without its ']'");
    if (peek(p, 0) == ']') {
      p->i++;
      break;
    }
    uint32_t lo[2];
    size_t item = p->i;
    for (int e = 0; e < 2; e++) { /* the item, then the end of a range */
      size_t ia = p->i;
      int kind;
      eset set;
      if (peek(p, 0) == '[')
        return REFUSE(p, ia, "nested class", "a '[' inside a class (POSIX classes, set operations); escape it");
      if (peek(p, 0) == '\\') kind = escape(p, 1, &lo[e], &set);
      else kind = next_cp(p, &lo[e]) ? ESC_CP : ESC_ERR;
      if (kind == ESC_ERR) return NULL;
      if (kind == ESC_SET) {
        if (e == 1) return BAD(p, ia, "class range", "a range cannot end in a class escape");
        if (peek(p, 0) == '-' && peek(p, 1) != ']' && peek(p, 1) != -1) /* ECMAScript: text; PCRE2: error */
          return BAD(p, ia, "class range", "a range cannot start with a class escape; escape the '-'");
        if (cs_add_set(p, &cs, set.r, set.n, set.neg)) return NULL;
        break;
      }
      if (e == 1) {
        if (lo[1] < lo[0]) return BAD(p, item, "class range", "the range is out of order");
        if (cs_add(p, &cs, lo[0], lo[1])) return NULL;
      } else if (peek(p, 0) == '-' && peek(p, 1) != ']' && peek(p, 1) != -1) {
        p->i++;
        continue;
      } else if (cs_add(p, &cs, lo[0], lo[0])) {
        return NULL;
      }
      break;
    }
  }
  return cls(p, neg ? gx_chars_not(p->b, cs.r, cs.n) : gx_chars(p->b, cs.r, cs.n));
}

static gx *group(rx *p) {
  size_t at = p->i++;
  if (peek(p, 0) == '?') {
    int c = peek(p, 1), d = peek(p, 2);
    if (c == ':') {
      p->i += 2;
    } else if (c == '=' || c == '!') {
      return REFUSE(p, at, "lookahead", "a grammar cannot look ahead");
    } else if (c == '<' && (d == '=' || d == '!')) {
      return REFUSE(p, at, "lookbehind", "a grammar cannot look behind");
    } else if (c == '<' || (c == 'P' && d == '<')) { /* a named group: just a group */
      p->i += c == '<' ? 2 : 3;
      size_t j = p->i;
      while (j < p->n && !(j == p->i && p->s[j] >= '0' && p->s[j] <= '9') && (p->s[j] == '_' || (p->s[j] >= '0' && p->s[j] <= '9') ||
                          ((p->s[j] | 32) >= 'a' && (p->s[j] | 32) <= 'z') || p->s[j] >= 0x80))
        j++;
      if (j == p->i || j >= p->n || p->s[j] != '>') return BAD(p, at, "group name", "expected (?<name>...)");
      p->i = j + 1;
    } else if (c == 'P') {
      return REFUSE(p, at, "backreference", "(?P=name) and (?P>name) are not supported");
    } else if (c == '>') {
      return REFUSE(p, at, "atomic group", "it can reject strings the plain group matches");
    } else if (c == '#') {
      return REFUSE(p, at, "comment group", "(?#...) is PCRE2-only");
    } else if (c == '-' || c == '^' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      return REFUSE(p, at, "inline flags", "(?i) and the like change how the regex reads");
    } else {
      return REFUSE(p, at, "group construct", "only ( ), (?: ) and (?<name> ) groups are read");
    }
  }
  if (++p->depth > RX_MAX_DEPTH) return REFUSE(p, at, "nesting", "groups nest too deeply");
  gx *x = alternation(p, 0);
  p->depth--;
  if (!x) return NULL;
  if (peek(p, 0) != ')') return BAD(p, at, "unbalanced '('", "the group is not closed");
  p->i++;
  return x;
}

static gx *atom(rx *p) {
  size_t at = p->i;
  uint32_t cp;
  eset set;
  switch (peek(p, 0)) {
  case '(':
    return group(p);
  case '[':
    return char_class(p);
  case '.':
    p->i++;
    return cls(p, gx_chars_not(p->b, NOT_DOT, 3));
  case '\\': {
    int k = escape(p, 0, &cp, &set);
    if (k == ESC_ERR) return NULL;
    if (k == ESC_CP) return cls(p, gx_char(p->b, cp));
    return cls(p, set.neg ? gx_chars_not(p->b, set.r, set.n) : gx_chars(p->b, set.r, set.n));
  }
  case '*':
  case '+':
  case '?':
    return BAD(p, at, "quantifier", "nothing to repeat");
  case '{': {
    int mn, mx, q = braces(p, &mn, &mx);
    if (q < 0) return NULL;
    if (q > 0) return BAD(p, at, "quantifier", "nothing to repeat");
    p->i++;
    return cls(p, gx_char(p->b, '{'));
  }
  default:
    return next_cp(p, &cp) ? cls(p, gx_char(p->b, cp)) : NULL;
  }
}

/* ---- sequences and alternatives ---- */
typedef struct {
  gx **v;
  int n, cap;
} gvec;

static int gv_push(rx *p, gvec *v, gx *x) {
  if (v->n == v->cap) {
    int cap = v->cap ? 2 * v->cap : 8;
    gx **nv = gb_alloc(p->b, (size_t)cap * sizeof *nv);
    if (!nv) return -1;
    if (v->n) memcpy(nv, v->v, (size_t)v->n * sizeof *nv);
    v->v = nv;
    v->cap = cap;
  }
  v->v[v->n++] = x;
  return 0;
}

/* Terms up to | or ) or the end; top: a top-level alternative, where ^ may
 * open it and $ close it (*a0, *a1 say which did). */
static gx *sequence(rx *p, int top, int *a0, int *a1) {
  size_t start = p->i;
  gvec items = {0};
  *a0 = *a1 = 0;
  while (!at_end(p)) {
    int c = peek(p, 0);
    if (c == '|' || c == ')') break;
    if (c == '^') {
      if (!top || p->i != start)
        return REFUSE(p, p->i, "anchor", "^ is supported only at the start of the regex or of a top-level alternative");
      *a0 = 1;
      p->i++;
      continue;
    }
    if (c == '$') {
      if (!top || (peek(p, 1) != -1 && peek(p, 1) != '|'))
        return REFUSE(p, p->i, "anchor", "$ is supported only at the end of the regex or of a top-level alternative");
      *a1 = 1;
      p->i++;
      break;
    }
    gx *x = atom(p);
    if (x) x = quantified(p, x);
    if (!x || gv_push(p, &items, x)) return NULL;
  }
  return gx_seq(p->b, items.v, items.n);
}

static gx *alternation(rx *p, int top) {
  gvec alts = {0};
  gx *pad = NULL;
  for (;;) {
    int a0, a1;
    gx *x = sequence(p, top, &a0, &a1);
    if (!x) return NULL;
    if (top && p->search && (!a0 || !a1)) {
      if (!pad) pad = gx_star(p->b, cls(p, gx_range(p->b, 0, GR_MAX_CP)));
      x = gx_seq3(p->b, a0 ? gx_empty(p->b) : pad, x, a1 ? gx_empty(p->b) : pad);
    }
    if (!x || gv_push(p, &alts, x)) return NULL;
    if (peek(p, 0) != '|') break;
    p->i++;
  }
  return gx_alt(p->b, alts.v, alts.n);
}

gx *gr_regex_gx(gr_builder *b, const char *re, size_t len, int as_json_string, int search) {
  rx p = {b, (const uint8_t *)re, len, 0, as_json_string != 0, search != 0, 0};
  gx *x = alternation(&p, 1);
  if (x && !at_end(&p)) return BAD(&p, p.i, "unbalanced ')'", "')' without its '('");
  return x;
}
