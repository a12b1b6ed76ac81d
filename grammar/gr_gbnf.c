/* gr_gbnf.c: llama.cpp's GBNF -> builder rules.
 *
 *   name ::= alternatives      names [a-zA-Z0-9_-]+; the start symbol is root
 *   "lit"  [a-z]  [^"\\]  .    literals, classes (ranges, ^ negation), any
 *                              character; escapes \n \r \t \\ \" \[ \] \xHH
 *                              \uHHHH \UHHHHHHHH (code points)
 *   ( ... )  a | b             grouping, alternation
 *   x*  x+  x?  x{m}  x{m,}  x{m,n}
 *   # comment                  to the end of the line
 *
 * Layout, as llama.cpp reads it: a rule's body may continue on the next
 * lines inside parentheses and after `|` or `::=`. Beyond that, a line
 * that does not start a new rule (`name ::=`) continues the previous one,
 * so a grammar llama.cpp accepts reads the same here, and an alternative
 * may also start a line with `|`. Characters are code points (a class or
 * `.` matches the UTF-8 bytes of one). llama.cpp's token references
 * (<[id]>, <name>, !<...>) have no meaning without its vocabulary and are
 * refused (MFS_EUNSUPPORTED); rules used but never defined, rules defined
 * twice, a missing root and malformed text are MFS_EINVAL with the byte
 * offset. Left recursion is left to gb_finish. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gr_int.h"

#define GP_MAX_COUNT 10000 /* larger repetition counts are refused */
#define GP_MAX_DEPTH 200   /* parenthesis nesting */

typedef struct {
  gr_builder *b;
  const uint8_t *s;
  size_t n, i;
  int depth;
  size_t *first_use; /* [b->n_rules] offset of the first reference (malloc) */
  uint8_t *defined;  /* [b->n_rules] */
  int cap;
  int code; /* the error reported, 0 if none */
} gp;

static int gp_err(gp *p, int code, size_t off, const char *what, const char *fmt, const char *arg) {
  char w[32], m[200];
  snprintf(w, sizeof w, "offset %zu", off);
  snprintf(m, sizeof m, fmt, arg);
  if (!p->code) p->code = code;
  if (code == MFS_EUNSUPPORTED)
    return gb_fail(p->b, code, w, what, "GBNF: %s at offset %zu is not supported (%s)", what, off, m);
  return gb_fail(p->b, code, w, what, "GBNF: %s at offset %zu: %s", what, off, m);
}
#define BAD(p, off, what, fmt, arg) gp_err(p, MFS_EINVAL, off, what, fmt, arg)

static int peek(const gp *p, size_t k) { return p->i + k < p->n ? p->s[p->i + k] : -1; }
static int is_word(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Blanks and comments; with nl, line breaks too. */
static void blanks(gp *p, int nl) {
  while (p->i < p->n) {
    int c = p->s[p->i];
    if (c == '#') {
      while (p->i < p->n && p->s[p->i] != '\n' && p->s[p->i] != '\r') p->i++;
    } else if (c == ' ' || c == '\t' || (nl && (c == '\n' || c == '\r'))) {
      p->i++;
    } else {
      break;
    }
  }
}

/* `name ::=` at p->i? */
static int rule_start(const gp *p) {
  size_t j = p->i;
  while (j < p->n && is_word(p->s[j])) j++;
  if (j == p->i) return 0;
  while (j < p->n && (p->s[j] == ' ' || p->s[j] == '\t')) j++;
  return j + 3 <= p->n && !memcmp(p->s + j, "::=", 3);
}

/* Space after an element. Nested (inside parentheses): line breaks are
 * space. At the top: a line break ends the rule if the next line starts a
 * rule (or the text ends); p->i then stays on the break. */
static void space(gp *p, int nested) {
  for (;;) {
    blanks(p, nested);
    if (p->i >= p->n || (p->s[p->i] != '\n' && p->s[p->i] != '\r')) return;
    size_t save = p->i;
    blanks(p, 1);
    if (p->i >= p->n || rule_start(p)) {
      p->i = save;
      return;
    }
  }
}

/* The rule index for a name, made on first sight. */
static int rule_of(gp *p, size_t at, size_t len) {
  char name[128];
  if (len >= sizeof name) return BAD(p, at, "rule name", "%s", "the name is longer than 127 characters"), -1;
  memcpy(name, p->s + at, len);
  name[len] = 0;
  int r = gb_find_rule(p->b, name), made = r < 0;
  if (made) r = gb_rule(p->b, name);
  if (r < 0) return -1;
  if (r >= p->cap) {
    int cap = p->cap ? 2 * p->cap : 64;
    while (cap <= r) cap *= 2;
    size_t *fu = realloc(p->first_use, (size_t)cap * sizeof *fu);
    if (fu) p->first_use = fu;
    uint8_t *df = realloc(p->defined, (size_t)cap);
    if (df) p->defined = df;
    if (!fu || !df) return p->b->oom = 1, -1;
    memset(p->defined + p->cap, 0, (size_t)(cap - p->cap));
    for (int k = p->cap; k < cap; k++) p->first_use[k] = 0;
    p->cap = cap;
  }
  if (made) p->first_use[r] = at;
  return r;
}

static int hexval(int c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* One character of a literal or class (escape or UTF-8): 0 or error. */
static int character(gp *p, uint32_t *cp) {
  size_t at = p->i;
  int c = peek(p, 0);
  if (c == '\\') {
    int e = peek(p, 1), k = 0;
    p->i += 2;
    switch (e) {
    case 'x':
      k = 2;
      break;
    case 'u':
      k = 4;
      break;
    case 'U':
      k = 8;
      break;
    case 't':
      return *cp = '\t', 0;
    case 'r':
      return *cp = '\r', 0;
    case 'n':
      return *cp = '\n', 0;
    case '\\':
    case '"':
    case '[':
    case ']':
      return *cp = (uint32_t)e, 0;
    default:
      return BAD(p, at, "escape", "%s", "unknown escape (\\n \\r \\t \\\\ \\\" \\[ \\] \\x \\u \\U are known)");
    }
    uint32_t v = 0;
    for (int j = 0; j < k; j++) {
      int h = hexval(peek(p, 0));
      if (h < 0) return BAD(p, at, "escape", "%s", "too few hex digits");
      v = v << 4 | (uint32_t)h;
      p->i++;
    }
    if (v > GR_MAX_CP || (v >= 0xD800 && v <= 0xDFFF))
      return BAD(p, at, "escape", "%s", "not a Unicode scalar value (a surrogate or past U+10FFFF)");
    return *cp = v, 0;
  }
  const uint8_t *s = p->s + p->i;
  size_t left = p->n - p->i;
  uint32_t v = s[0];
  int len = v < 0x80 ? 1 : (v & 0xE0) == 0xC0 ? 2 : (v & 0xF0) == 0xE0 ? 3 : (v & 0xF8) == 0xF0 ? 4 : 0;
  if (!len || (size_t)len > left) return BAD(p, at, "UTF-8", "%s", "the grammar is not valid UTF-8");
  if (len > 1) v &= 0x3Fu >> (len - 1);
  for (int j = 1; j < len; j++) {
    if ((s[j] & 0xC0) != 0x80) return BAD(p, at, "UTF-8", "%s", "the grammar is not valid UTF-8");
    v = v << 6 | (s[j] & 0x3F);
  }
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < min[len] || v > GR_MAX_CP || (v >= 0xD800 && v <= 0xDFFF))
    return BAD(p, at, "UTF-8", "%s", "the grammar is not valid UTF-8");
  p->i += (size_t)len;
  *cp = v;
  return 0;
}

static gx *literal(gp *p) {
  size_t at = p->i++;
  size_t n = 0, e = p->i;
  while (e < p->n && p->s[e] != '"') e += p->s[e] == '\\' ? 2 : 1;
  char *buf = gb_alloc(p->b, e - p->i + 4); /* no escape encodes longer than it is written */
  if (!buf) return NULL;
  for (;;) {
    if (p->i >= p->n) return BAD(p, at, "unterminated string", "%s", "'\"' without its closing '\"'"), NULL;
    if (peek(p, 0) == '"') break;
    uint32_t cp = 0;
    if (character(p, &cp)) return NULL;
    n += (size_t)gr_utf8_put(cp, (uint8_t *)buf + n);
  }
  p->i++;
  return gx_lit(p->b, buf, n);
}

static gx *char_class(gp *p) {
  size_t at = p->i++;
  int neg = 0;
  if (peek(p, 0) == '^') neg = 1, p->i++;
  uint32_t *r = NULL;
  int n = 0, cap = 0;
  for (;;) {
    if (p->i >= p->n) return BAD(p, at, "unterminated class", "%s", "'[' without its ']'"), NULL;
    if (peek(p, 0) == ']') break;
    uint32_t lo = 0, hi;
    size_t ia = p->i;
    if (character(p, &lo)) return NULL;
    hi = lo;
    if (peek(p, 0) == '-' && peek(p, 1) != ']' && peek(p, 1) != -1) {
      p->i++;
      if (character(p, &hi)) return NULL;
      if (hi < lo) return BAD(p, ia, "class range", "%s", "the range is out of order"), NULL;
    }
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      uint32_t *nr = gb_alloc(p->b, (size_t)cap * 2 * sizeof *nr);
      if (!nr) return NULL;
      if (n) memcpy(nr, r, (size_t)n * 2 * sizeof *nr);
      r = nr;
    }
    r[2 * n] = lo, r[2 * n + 1] = hi, n++;
  }
  p->i++;
  if (!n) /* llama.cpp reads [] and [^] as the empty string */
    return BAD(p, at, "empty class", "%s", "a class needs at least one character"), NULL;
  return neg ? gx_chars_not(p->b, r, n) : gx_chars(p->b, r, n);
}

static long number(gp *p) {
  long v = 0;
  size_t at = p->i;
  while (peek(p, 0) >= '0' && peek(p, 0) <= '9') {
    if (v <= 1000000) v = v * 10 + (peek(p, 0) - '0');
    p->i++;
  }
  return p->i == at ? -1 : v;
}

static gx *alternatives(gp *p, int nested);

static gx *sequence(gp *p, int nested) {
  gx **items = NULL;
  int n = 0, cap = 0;
  while (p->i < p->n) {
    size_t at = p->i;
    int c = peek(p, 0);
    gx *x = NULL;
    int mn = -2, mx = -2;
    if (c == '"') {
      x = literal(p);
    } else if (c == '[') {
      x = char_class(p);
    } else if (c == '.') {
      p->i++;
      x = gx_chars_not(p->b, NULL, 0);
    } else if (c == '(') {
      if (++p->depth > GP_MAX_DEPTH) return gp_err(p, MFS_EUNSUPPORTED, at, "nesting", "%s", "too deep"), NULL;
      p->i++;
      blanks(p, 1);
      x = alternatives(p, 1);
      p->depth--;
      if (x && peek(p, 0) != ')') return BAD(p, at, "unbalanced '('", "%s", "the group is not closed"), NULL;
      p->i++;
    } else if (is_word(c)) {
      size_t e = p->i;
      while (e < p->n && is_word(p->s[e])) e++;
      int r = rule_of(p, p->i, e - p->i);
      if (r < 0) return NULL;
      p->i = e;
      x = gx_ref(p->b, r);
    } else if (c == '<' || (c == '!' && peek(p, 1) == '<')) {
      return gp_err(p, MFS_EUNSUPPORTED, at, "token reference", "%s",
                    "token references (<[id]>, <token>) depend on one model's vocabulary"),
             NULL;
    } else if (c == '*') {
      mn = 0, mx = -1, p->i++;
    } else if (c == '+') {
      mn = 1, mx = -1, p->i++;
    } else if (c == '?') {
      mn = 0, mx = 1, p->i++;
    } else if (c == '{') {
      p->i++;
      blanks(p, nested);
      mn = (int)number(p);
      if (mn < 0) return BAD(p, at, "repetition", "%s", "expected {m}, {m,} or {m,n}"), NULL;
      blanks(p, nested);
      mx = mn;
      if (peek(p, 0) == ',') {
        p->i++;
        blanks(p, nested);
        mx = (int)number(p);
        blanks(p, nested);
      }
      if (peek(p, 0) != '}') return BAD(p, at, "repetition", "%s", "expected {m}, {m,} or {m,n}"), NULL;
      p->i++;
      if (mn > GP_MAX_COUNT || mx > GP_MAX_COUNT)
        return gp_err(p, MFS_EUNSUPPORTED, at, "repetition count", "%s", "counts above 10000"), NULL;
      if (mx >= 0 && mx < mn) return BAD(p, at, "repetition", "%s", "{m,n} with n < m"), NULL;
    } else {
      break;
    }
    if (mn != -2) { /* a quantifier: applies to the item before it */
      if (!n) return BAD(p, at, "quantifier", "%s", "nothing to repeat"), NULL;
      x = items[n - 1] = gx_rep(p->b, items[n - 1], mn, mx);
      if (!x) return NULL;
    } else {
      if (!x) return NULL;
      if (n == cap) {
        cap = cap ? 2 * cap : 8;
        gx **ni = gb_alloc(p->b, (size_t)cap * sizeof *ni);
        if (!ni) return NULL;
        if (n) memcpy(ni, items, (size_t)n * sizeof *ni);
        items = ni;
      }
      items[n++] = x;
    }
    space(p, nested);
  }
  return gx_seq(p->b, items, n);
}

static gx *alternatives(gp *p, int nested) {
  gx **alts = NULL;
  int n = 0, cap = 0;
  for (;;) {
    gx *x = sequence(p, nested);
    if (!x) return NULL;
    if (n == cap) {
      cap = cap ? 2 * cap : 4;
      gx **na = gb_alloc(p->b, (size_t)cap * sizeof *na);
      if (!na) return NULL;
      if (n) memcpy(na, alts, (size_t)n * sizeof *na);
      alts = na;
    }
    alts[n++] = x;
    if (peek(p, 0) != '|') break;
    p->i++;
    blanks(p, 1);
  }
  return gx_alt(p->b, alts, n);
}

static int parse(gp *p, int *root) {
  blanks(p, 1);
  while (p->i < p->n) {
    size_t at = p->i;
    if (!is_word(peek(p, 0))) return BAD(p, at, "rule", "%s", "expected a rule name");
    size_t e = p->i;
    while (e < p->n && is_word(p->s[e])) e++;
    int r = rule_of(p, at, e - at);
    if (r < 0) return p->code ? p->code : MFS_ENOMEM;
    if (p->defined[r]) return BAD(p, at, p->b->rule_name[r], "rule '%s' is defined twice", p->b->rule_name[r]);
    p->defined[r] = 1;
    p->i = e;
    blanks(p, 0);
    if (p->i + 3 > p->n || memcmp(p->s + p->i, "::=", 3)) return BAD(p, p->i, "rule", "%s", "expected '::='");
    p->i += 3;
    blanks(p, 1);
    gx *body = alternatives(p, 0);
    if (!body) return p->code ? p->code : MFS_ENOMEM;
    gb_set(p->b, r, body);
    if (p->i < p->n && p->s[p->i] != '\n' && p->s[p->i] != '\r')
      return BAD(p, p->i, "rule", "%s", p->s[p->i] == ')' ? "')' without its '('" : "unexpected character");
    blanks(p, 1);
  }
  for (int r = 0; r < p->b->n_rules; r++)
    if (!p->defined[r])
      return BAD(p, p->first_use[r], p->b->rule_name[r], "rule '%s' is used but never defined", p->b->rule_name[r]);
  int rt = gb_find_rule(p->b, "root");
  if (rt < 0) return p->code = MFS_EINVAL, gb_fail(p->b, MFS_EINVAL, "", "root", "GBNF: grammar has no 'root' rule");
  *root = rt;
  return 0;
}

int gr_gbnf_parse(gr_builder *b, const char *src, size_t len, int *root) {
  gp p = {b, (const uint8_t *)src, len, 0, 0, NULL, NULL, 0, 0};
  int rc = parse(&p, root);
  free(p.first_use);
  free(p.defined);
  return rc;
}
