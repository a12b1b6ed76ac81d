/* gr_schema.c: JSON Schema -> grammar expression, and the JSON grammar
 * itself.
 *
 * The value is written compactly (no whitespace), strings with JSON's
 * required escapes only (", \, control characters, as JSON.stringify
 * writes them), numbers without exponent when bounded, object members in
 * the schema's order (see grammar.h). Within that form the grammar accepts
 * exactly the instances the schema accepts, or the schema is refused with
 * the keyword and its location: keywords whose meaning a context-free
 * grammar cannot carry exactly (`not`, `if`, `uniqueItems`, `contains`,
 * `patternProperties`, `multipleOf`, ...) and combinations of them
 * (`pattern` with `minLength`, overlapping `oneOf` branches, conflicting
 * `allOf` branches) are errors, never silently dropped.
 *
 * Keywords: type (and arrays of types, OpenAPI's nullable), enum, const,
 * properties, required, additionalProperties, items, prefixItems (draft-07
 * array `items` and additionalItems too), minItems, maxItems, minLength,
 * maxLength, pattern, format (date, time, date-time, uuid, email), minimum,
 * maximum, exclusiveMinimum, exclusiveMaximum, anyOf, oneOf (disjoint
 * branches), allOf (merged keyword by keyword), $ref to "#..." pointers
 * ($defs, definitions, recursion), booleans as schemas. Annotations are
 * ignored; so are keywords JSON Schema does not define (as the
 * specification says). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gr_int.h"

#define MAX_DEPTH 48
#define GR_NUM_INT_DIGITS 21
#define GR_NUM_FRAC_DIGITS 24

/* ---- the JSON grammar ---- */
typedef struct jprim {
  gr_builder *b;
  gx *chr;      /* one character of a string's content, canonical escapes */
  gx *str;      /* a whole string */
  gx *num;      /* any number */
  gx *value;    /* reference to the any-value rule */
  gx *object, *array;
} jprim;

/* One code point class, written as a JSON string's content: members that
 * need escaping become their escapes (as JSON.stringify writes them). */
gx *gr_json_chars(gr_builder *b, const gx *cls);

static int in_cls(const gx *c, uint32_t cp) {
  for (int i = 0; i < c->n; i++)
    if (cp >= c->r[2 * i] && cp <= c->r[2 * i + 1]) return 1;
  return 0;
}

gx *gr_json_chars(gr_builder *b, const gx *c) {
  if (!c) return NULL;
  if (c->k != GX_CHARS) return (gx *)c;
  /* the members that are written raw: all but controls, " and \ */
  uint32_t *r = gb_alloc(b, (size_t)(c->n + 2) * 2 * sizeof *r);
  if (!r) return NULL;
  int n = 0;
  for (int i = 0; i < c->n; i++) {
    uint32_t lo = c->r[2 * i], hi = c->r[2 * i + 1];
    uint32_t cut[2] = {'"', '\\'};
    if (hi < 0x20) continue;
    if (lo < 0x20) lo = 0x20;
    /* split around " and \ */
    uint32_t a = lo;
    for (int k = 0; k < 2; k++)
      if (cut[k] >= a && cut[k] <= hi) {
        if (cut[k] > a) r[2 * n] = a, r[2 * n + 1] = cut[k] - 1, n++;
        a = cut[k] + 1;
      }
    if (a <= hi) r[2 * n] = a, r[2 * n + 1] = hi, n++;
    /* keep room: at most 3 pieces per range */
    if (n + 3 > c->n + 2) {
      uint32_t *r2 = gb_alloc(b, (size_t)(n + 3 + c->n) * 2 * sizeof *r2);
      if (!r2) return NULL;
      memcpy(r2, r, (size_t)n * 2 * sizeof *r);
      r = r2;
    }
  }
  gx *alts[40];
  int na = 0;
  if (n) alts[na++] = gx_chars(b, r, n);
  if (in_cls(c, '"')) alts[na++] = gx_lits(b, "\\\"");
  if (in_cls(c, '\\')) alts[na++] = gx_lits(b, "\\\\");
  static const char *const short_esc[32] = {['\b'] = "\\b", ['\f'] = "\\f", ['\n'] = "\\n", ['\r'] = "\\r",
                                            ['\t'] = "\\t"};
  /* controls: \uXXXX except the five with short forms; grouped */
  uint32_t ctl[64];
  int nctl = 0;
  for (uint32_t cp = 0; cp < 0x20; cp++) {
    if (!in_cls(c, cp)) continue;
    if (short_esc[cp]) alts[na++] = gx_lits(b, short_esc[cp]);
    else ctl[nctl++] = cp;
  }
  if (nctl) {
    /* \u00 then [01] then hex digit: group by the high nibble */
    for (int hi = 0; hi < 2; hi++) {
      uint32_t lows[32];
      int nl = 0;
      for (int i = 0; i < nctl; i++)
        if ((ctl[i] >> 4) == (uint32_t)hi) {
          uint32_t lo = ctl[i] & 15;
          lows[2 * nl] = lows[2 * nl + 1] = lo < 10 ? '0' + lo : 'a' + lo - 10;
          nl++;
        }
      if (nl) {
        char pre[6] = {'\\', 'u', '0', '0', (char)('0' + hi), 0};
        alts[na++] = gx_seq2(b, gx_lits(b, pre), gx_chars(b, lows, nl));
      }
    }
  }
  return gx_alt(b, alts, na);
}

static void prim_init(jprim *p, gr_builder *b) {
  memset(p, 0, sizeof *p);
  p->b = b;
  uint32_t any[2] = {0, GR_MAX_CP};
  p->chr = gr_json_chars(b, gx_chars(b, any, 1));
  int rs = gb_rule(b, "json_string");
  gb_set(b, rs, gx_seq3(b, gx_lits(b, "\""), gx_star(b, p->chr), gx_lits(b, "\"")));
  p->str = gx_ref(b, rs);
  gx *digit = gx_range(b, '0', '9'), *d19 = gx_range(b, '1', '9');
  /* digit counts bounded so that a generated number ends: 21 integer and
   * 24 fraction digits cover every double as JSON.stringify writes it */
  gx *intp = gx_alt2(b, gx_lits(b, "0"), gx_seq2(b, d19, gx_rep(b, digit, 0, GR_NUM_INT_DIGITS - 1)));
  gx *frac = gx_opt(b, gx_seq2(b, gx_lits(b, "."), gx_rep(b, digit, 1, GR_NUM_FRAC_DIGITS)));
  uint32_t eE[4] = {'e', 'e', 'E', 'E'}, pm[4] = {'+', '+', '-', '-'};
  gx *ex = gx_opt(b, gx_seq3(b, gx_chars(b, eE, 2), gx_opt(b, gx_chars(b, pm, 2)), gx_rep(b, digit, 1, 3)));
  gx *k[4] = {gx_opt(b, gx_lits(b, "-")), intp, frac, ex};
  int rn = gb_rule(b, "json_number");
  gb_set(b, rn, gx_seq(b, k, 4));
  p->num = gx_ref(b, rn);
  int rv = gb_rule(b, "json_value"), ro = gb_rule(b, "json_object"), ra = gb_rule(b, "json_array");
  p->value = gx_ref(b, rv);
  p->object = gx_ref(b, ro);
  p->array = gx_ref(b, ra);
  gx *pair = gx_seq3(b, p->str, gx_lits(b, ":"), p->value);
  gb_set(b, ro, gx_seq3(b, gx_lits(b, "{"), gx_opt(b, gx_seq2(b, pair, gx_star(b, gx_seq2(b, gx_lits(b, ","), pair)))),
                        gx_lits(b, "}")));
  gb_set(b, ra, gx_seq3(b, gx_lits(b, "["),
                        gx_opt(b, gx_seq2(b, p->value, gx_star(b, gx_seq2(b, gx_lits(b, ","), p->value)))),
                        gx_lits(b, "]")));
  gx *v[7] = {p->object, p->array, p->str, p->num, gx_lits(b, "true"), gx_lits(b, "false"), gx_lits(b, "null")};
  gb_set(b, rv, gx_alt(b, v, 7));
}

gx *gr_json_value_gx(gr_builder *b) {
  jprim p;
  prim_init(&p, b);
  return p.value;
}

gx *gr_json_object_gx(gr_builder *b) {
  jprim p;
  prim_init(&p, b);
  return p.object;
}

/* ---- canonical serialisation (as JSON.stringify writes values) ---- */
typedef struct {
  char *p;
  size_t n, cap;
  int oom;
} sbuf;

static void sput(sbuf *s, const char *x, size_t n) {
  if (s->oom) return;
  if (s->n + n + 1 > s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 128;
    while (cap < s->n + n + 1) cap *= 2;
    char *q = realloc(s->p, cap);
    if (!q) {
      s->oom = 1;
      return;
    }
    s->p = q;
    s->cap = cap;
  }
  memcpy(s->p + s->n, x, n);
  s->n += n;
  s->p[s->n] = 0;
}
static void sputs(sbuf *s, const char *x) { sput(s, x, strlen(x)); }

/* ECMAScript Number::toString for finite doubles. */
static void js_number(double v, char *out, size_t cap) {
  if (v == 0) {
    snprintf(out, cap, "0");
    return;
  }
  char tmp[40];
  int p;
  for (p = 1; p <= 17; p++) {
    snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
    if (strtod(tmp, NULL) == v) break;
  }
  /* tmp: [-]d[.ddd]e[+-]xx */
  char digits[24];
  int nd = 0, neg = tmp[0] == '-';
  const char *q = tmp + neg;
  for (; *q && *q != 'e'; q++)
    if (*q >= '0' && *q <= '9') digits[nd++] = *q;
  digits[nd] = 0;
  while (nd > 1 && digits[nd - 1] == '0') digits[--nd] = 0;
  int e = atoi(q + 1), n = e + 1, k = nd;
  char *o = out;
  size_t left = cap;
#define EMIT(...) do { int w_ = snprintf(o, left, __VA_ARGS__); if (w_ < 0 || (size_t)w_ >= left) return; o += w_; left -= (size_t)w_; } while (0)
  if (neg) EMIT("-");
  if (k <= n && n <= 21) {
    EMIT("%s", digits);
    for (int i = 0; i < n - k; i++) EMIT("0");
  } else if (0 < n && n <= 21) {
    EMIT("%.*s.%s", n, digits, digits + n);
  } else if (-6 < n && n <= 0) {
    EMIT("0.");
    for (int i = 0; i < -n; i++) EMIT("0");
    EMIT("%s", digits);
  } else {
    if (k == 1) EMIT("%c", digits[0]);
    else EMIT("%c.%s", digits[0], digits + 1);
    EMIT("e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
  }
#undef EMIT
}

static void canon_str(sbuf *s, const char *x) {
  sputs(s, "\"");
  for (const unsigned char *p = (const unsigned char *)x; *p; p++) {
    char e[8];
    switch (*p) {
    case '"': sputs(s, "\\\""); break;
    case '\\': sputs(s, "\\\\"); break;
    case '\b': sputs(s, "\\b"); break;
    case '\f': sputs(s, "\\f"); break;
    case '\n': sputs(s, "\\n"); break;
    case '\r': sputs(s, "\\r"); break;
    case '\t': sputs(s, "\\t"); break;
    default:
      if (*p < 0x20) {
        snprintf(e, sizeof e, "\\u%04x", *p);
        sputs(s, e);
      } else
        sput(s, (const char *)p, 1);
    }
  }
  sputs(s, "\"");
}

static void canon(sbuf *s, const cJSON *v) {
  if (cJSON_IsNull(v)) sputs(s, "null");
  else if (cJSON_IsTrue(v)) sputs(s, "true");
  else if (cJSON_IsFalse(v)) sputs(s, "false");
  else if (cJSON_IsNumber(v)) {
    char t[64];
    js_number(v->valuedouble, t, sizeof t);
    sputs(s, t);
  } else if (cJSON_IsString(v)) canon_str(s, v->valuestring);
  else if (cJSON_IsArray(v)) {
    sputs(s, "[");
    for (const cJSON *c = v->child; c; c = c->next) {
      canon(s, c);
      if (c->next) sputs(s, ",");
    }
    sputs(s, "]");
  } else if (cJSON_IsObject(v)) {
    sputs(s, "{");
    for (const cJSON *c = v->child; c; c = c->next) {
      canon_str(s, c->string);
      sputs(s, ":");
      canon(s, c);
      if (c->next) sputs(s, ",");
    }
    sputs(s, "}");
  }
}

/* ---- the compiler ---- */
enum { T_NULL = 1, T_BOOL = 2, T_OBJ = 4, T_ARR = 8, T_STR = 16, T_NUM = 32, T_INT = 64, T_ALL = 127 };

typedef struct memo_ent {
  const cJSON *node;
  int rule;
} memo_ent;

typedef struct sc {
  gr_builder *b;
  const cJSON *root;
  unsigned flags;
  jprim p;
  memo_ent *memo;
  int n_memo, cap_memo;
  cJSON *owned; /* merged schemas made here (freed at the end) */
  int depth;
} sc;

static gx *compile(sc *c, const cJSON *s, const char *path);

static gx *fail(sc *c, int code, const char *path, const char *kw, const char *fmt, const char *detail) {
  char msg[300];
  snprintf(msg, sizeof msg, fmt, detail ? detail : "");
  gb_fail(c->b, code, path[0] ? path : "#", kw, "%s (at %s)", msg, path[0] ? path : "#");
  return NULL;
}

static void subpath(char *out, size_t cap, const char *path, const char *a, const char *b) {
  snprintf(out, cap, "%s/%s%s%s", path[0] ? path : "#", a, b ? "/" : "", b ? b : "");
}

static int is_annotation(const char *k) {
  static const char *const ann[] = {"title", "description", "default", "examples", "$comment", "deprecated",
                                    "readOnly", "writeOnly", "$schema", "$defs", "definitions",
                                    "contentMediaType", "contentEncoding", "contentSchema", "$anchor",
                                    "$vocabulary", "$id", "strict", "name", "discriminator", "example",
                                    "xml", "externalDocs", NULL};
  for (int i = 0; ann[i]; i++)
    if (!strcmp(k, ann[i])) return 1;
  return k[0] == 'x' && k[1] == '-';
}

/* Keywords of JSON Schema whose meaning this module cannot carry. */
static int is_refused(const char *k) {
  static const char *const bad[] = {"not", "if", "then", "else", "contains", "minContains", "maxContains",
                                    "patternProperties", "propertyNames", "dependentRequired",
                                    "dependentSchemas", "dependencies", "unevaluatedProperties",
                                    "unevaluatedItems", "multipleOf", "minProperties", "maxProperties",
                                    "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor",
                                    "uniqueItems", NULL};
  for (int i = 0; bad[i]; i++)
    if (!strcmp(k, bad[i])) return 1;
  return 0;
}

/* Resolves a local reference ("#", "#/a/b", percent- and ~-escaped). */
static const cJSON *resolve(sc *c, const char *ref) {
  if (ref[0] != '#') return NULL;
  const cJSON *cur = c->root;
  const char *p = ref + 1;
  if (!*p) return cur;
  if (*p != '/') return NULL;
  while (*p == '/') {
    p++;
    char tok[256];
    size_t n = 0;
    while (*p && *p != '/' && n + 1 < sizeof tok) {
      if (*p == '~' && p[1] == '0') tok[n++] = '~', p += 2;
      else if (*p == '~' && p[1] == '1') tok[n++] = '/', p += 2;
      else if (*p == '%' && p[1] && p[2]) {
        char h[3] = {p[1], p[2], 0};
        tok[n++] = (char)strtol(h, NULL, 16);
        p += 3;
      } else
        tok[n++] = *p++;
    }
    tok[n] = 0;
    if (cJSON_IsArray(cur)) {
      char *e;
      long i = strtol(tok, &e, 10);
      if (*e || i < 0) return NULL;
      cur = cJSON_GetArrayItem(cur, (int)i);
    } else if (cJSON_IsObject(cur))
      cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    else
      return NULL;
    if (!cur) return NULL;
  }
  return cur;
}

/* The JSON types a schema can accept (for oneOf disjointness). */
static int value_type(const cJSON *v) {
  if (cJSON_IsNull(v)) return T_NULL;
  if (cJSON_IsBool(v)) return T_BOOL;
  if (cJSON_IsObject(v)) return T_OBJ;
  if (cJSON_IsArray(v)) return T_ARR;
  if (cJSON_IsString(v)) return T_STR;
  if (cJSON_IsNumber(v)) return v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 9e15 ? T_NUM | T_INT : T_NUM;
  return 0;
}

static int type_bit(const char *t) {
  static const char *const n[] = {"null", "boolean", "object", "array", "string", "number", "integer"};
  for (int i = 0; i < 7; i++)
    if (!strcmp(t, n[i])) return 1 << i;
  return -1;
}

static int types_of(sc *c, const cJSON *s, int depth) {
  if (cJSON_IsTrue(s)) return T_ALL;
  if (!cJSON_IsObject(s) || depth > 16) return cJSON_IsFalse(s) ? 0 : T_ALL;
  int t = T_ALL;
  const cJSON *ty = cJSON_GetObjectItemCaseSensitive(s, "type");
  if (cJSON_IsString(ty)) t = type_bit(ty->valuestring);
  else if (cJSON_IsArray(ty)) {
    t = 0;
    for (const cJSON *e = ty->child; e; e = e->next)
      if (cJSON_IsString(e) && type_bit(e->valuestring) > 0) t |= type_bit(e->valuestring);
  }
  if (t < 0) t = T_ALL;
  if (t & T_NUM) t |= T_INT;
  const cJSON *nl = cJSON_GetObjectItemCaseSensitive(s, "nullable");
  if (cJSON_IsTrue(nl)) t |= T_NULL;
  const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum"), *co = cJSON_GetObjectItemCaseSensitive(s, "const");
  if (co) t &= value_type(co);
  if (cJSON_IsArray(en)) {
    int u = 0;
    for (const cJSON *e = en->child; e; e = e->next) u |= value_type(e);
    t &= u;
  }
  const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
  if (cJSON_IsString(ref)) {
    const cJSON *r = resolve(c, ref->valuestring);
    if (r) t &= types_of(c, r, depth + 1);
  }
  const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
  if (!any) any = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
  if (cJSON_IsArray(any)) {
    int u = 0;
    for (const cJSON *e = any->child; e; e = e->next) u |= types_of(c, e, depth + 1);
    t &= u;
  }
  const cJSON *all = cJSON_GetObjectItemCaseSensitive(s, "allOf");
  if (cJSON_IsArray(all))
    for (const cJSON *e = all->child; e; e = e->next) t &= types_of(c, e, depth + 1);
  /* integer only when number is not allowed as such */
  return t;
}

/* The discriminating constant of property `name` in an object schema, or NULL. */
static const cJSON *disc_const(sc *c, const cJSON *s, const char *name) {
  const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
  if (cJSON_IsString(ref)) s = resolve(c, ref->valuestring);
  if (!cJSON_IsObject(s)) return NULL;
  const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required"), *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
  int is_req = 0;
  for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
    if (cJSON_IsString(r) && !strcmp(r->valuestring, name)) is_req = 1;
  if (!is_req || !props) return NULL;
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(props, name);
  if (!cJSON_IsObject(p)) return NULL;
  const cJSON *k = cJSON_GetObjectItemCaseSensitive(p, "const");
  if (k) return k;
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(p, "enum");
  if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 1) return e->child;
  return NULL;
}

/* 1 if no instance can satisfy both a and b (by type, or by a required
 * property with different constants). */
static int disjoint(sc *c, const cJSON *a, const cJSON *b) {
  int ta = types_of(c, a, 0), tb = types_of(c, b, 0);
  int ia = ta & (T_NUM | T_INT) ? (ta & T_NUM ? ta | T_INT : ta) : ta;
  int ib = tb & (T_NUM | T_INT) ? (tb & T_NUM ? tb | T_INT : tb) : tb;
  if (!(ia & ib)) return 1;
  if ((ia & ib) == T_OBJ) { /* a shared required property with different constants */
    const cJSON *ra = cJSON_IsObject(a) ? a : NULL;
    const cJSON *pr = ra ? cJSON_GetObjectItemCaseSensitive(ra, "properties") : NULL;
    const cJSON *ref = ra ? cJSON_GetObjectItemCaseSensitive(ra, "$ref") : NULL;
    if (cJSON_IsString(ref)) {
      const cJSON *r = resolve(c, ref->valuestring);
      pr = r ? cJSON_GetObjectItemCaseSensitive(r, "properties") : NULL;
    }
    for (const cJSON *p = pr ? pr->child : NULL; p; p = p->next) {
      const cJSON *x = disc_const(c, a, p->string), *y = disc_const(c, b, p->string);
      if (x && y && !cJSON_Compare(x, y, 1)) return 1;
    }
  }
  /* both plain enums/consts with no common value */
  const cJSON *ea = cJSON_IsObject(a) ? cJSON_GetObjectItemCaseSensitive(a, "enum") : NULL;
  const cJSON *eb = cJSON_IsObject(b) ? cJSON_GetObjectItemCaseSensitive(b, "enum") : NULL;
  const cJSON *ca = cJSON_IsObject(a) ? cJSON_GetObjectItemCaseSensitive(a, "const") : NULL;
  const cJSON *cb = cJSON_IsObject(b) ? cJSON_GetObjectItemCaseSensitive(b, "const") : NULL;
  if ((ea || ca) && (eb || cb)) {
    const cJSON *la = ca ? NULL : ea, *lb = cb ? NULL : eb;
    for (const cJSON *x = ca ? ca : la->child; x; x = ca ? NULL : x->next)
      for (const cJSON *y = cb ? cb : lb->child; y; y = cb ? NULL : y->next)
        if (cJSON_Compare(x, y, 1)) return 0;
    return 1;
  }
  return 0;
}

/* ---- numbers: bounds as a small DFA over the number's characters ---- */
typedef struct nbound {
  int neg;          /* bound < 0 */
  char ip[400];     /* integer digits of |bound|, no leading zeros ("0" for < 1) */
  char fp[400];     /* fraction digits, no trailing zeros */
  int zero;         /* bound == 0 */
  int op;           /* 0: >=, 1: >, 2: <=, 3: < */
} nbound;

static int bound_of(double v, int op, nbound *b) {
  if (!isfinite(v)) return -1;
  memset(b, 0, sizeof *b);
  b->op = op;
  b->neg = v < 0;
  b->zero = v == 0;
  char t[64];
  js_number(fabs(v), t, sizeof t);
  /* expand an exponent form into plain digits */
  char digs[40];
  int nd = 0, e10 = 0, point = -1;
  const char *q = t;
  for (; *q && *q != 'e'; q++) {
    if (*q == '.') point = nd;
    else digs[nd++] = *q;
  }
  if (point < 0) point = nd;
  if (*q == 'e') e10 = atoi(q + 1);
  point += e10; /* digits before the point */
  int ii = 0, fi = 0;
  for (int i = 0; i < point; i++) b->ip[ii++] = i < nd ? digs[i] : '0';
  for (int i = point < 0 ? point : point; i < nd; i++) b->fp[fi++] = i < 0 ? '0' : digs[i];
  b->ip[ii] = 0;
  b->fp[fi] = 0;
  /* normalise */
  char *ip = b->ip;
  while (ip[0] == '0' && ip[1]) memmove(ip, ip + 1, strlen(ip));
  if (!ip[0]) strcpy(ip, "0");
  size_t fl = strlen(b->fp);
  while (fl && b->fp[fl - 1] == '0') b->fp[--fl] = 0;
  return 0;
}

#define NB_MAX 4
typedef struct nstate {
  uint8_t phase; /* 0 start, 1 after '-', 2 int "0", 3 int digits, 4 after '.', 5 frac digits */
  uint8_t neg, nonzero;
  uint16_t len;  /* integer digits read, capped */
  uint8_t ilen, flen; /* digits read (bounded: see GR_NUM_*_DIGITS) */
  int8_t icmp[NB_MAX]; /* lexicographic compare of the digits so far with the bound's first len digits */
  uint16_t fj[NB_MAX];
  int8_t fcmp[NB_MAX]; /* fraction compare so far */
} nstate;

typedef struct ndfa {
  nstate *s;
  int n, cap;
  int (*tr)[13]; /* per state: '-', '0'..'9', '.', index -> target or -1 */
  int32_t *h;    /* open addressing over the states' bytes */
  size_t hcap;
} ndfa;

static void nd_free(ndfa *d) {
  free(d->s);
  free(d->tr);
  free(d->h);
}

static size_t ns_hash(const nstate *x) {
  const unsigned char *p = (const unsigned char *)x; /* padding is zero: every state descends from a memset one */
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < sizeof *x; i++) h = (h ^ p[i]) * 1099511628211ull;
  return (size_t)(h ^ (h >> 29));
}

static int ns_find(ndfa *d, const nstate *x) {
  if (2 * (size_t)(d->n + 1) > d->hcap) {
    size_t cap = d->hcap ? 2 * d->hcap : 256;
    int32_t *h = malloc(cap * sizeof *h);
    if (!h) return -1;
    memset(h, 0xff, cap * sizeof *h);
    for (int i = 0; i < d->n; i++) {
      size_t j = ns_hash(&d->s[i]) & (cap - 1);
      while (h[j] >= 0) j = (j + 1) & (cap - 1);
      h[j] = i;
    }
    free(d->h);
    d->h = h;
    d->hcap = cap;
  }
  size_t j = ns_hash(x) & (d->hcap - 1);
  for (; d->h[j] >= 0; j = (j + 1) & (d->hcap - 1))
    if (!memcmp(&d->s[d->h[j]], x, sizeof *x)) return d->h[j];
  if (d->n == d->cap) {
    int cap = d->cap ? 2 * d->cap : 64;
    nstate *s = realloc(d->s, (size_t)cap * sizeof *s);
    if (!s) return -1;
    d->s = s;
    int(*t)[13] = realloc(d->tr, (size_t)cap * sizeof *t);
    if (!t) return -1;
    d->tr = t;
    d->cap = cap;
  }
  d->s[d->n] = *x;
  for (int k = 0; k < 13; k++) d->tr[d->n][k] = -1;
  d->h[j] = d->n;
  return d->n++;
}

/* Magnitude comparison of x (as read so far, finished) with bound i. */
static int mag_cmp(const nstate *x, const nbound *b, int i) {
  int bl = (int)strlen(b->ip);
  int xl = x->phase == 2 || (x->phase >= 4 && x->len == 0) ? 1 : x->len;
  int c;
  if (x->phase == 2 || x->len == 0) c = b->ip[0] == '0' ? 0 : -1; /* x's integer part is 0 */
  else if (xl != bl) c = xl < bl ? -1 : 1;
  else c = x->icmp[i];
  if (c) return c;
  if (x->fcmp[i]) return x->fcmp[i];
  /* fraction equal so far: x's fraction ended; bound has more nonzero digits? */
  return x->fj[i] < strlen(b->fp) ? -1 : 0;
}

static int accepts(const nstate *x, const nbound *bs, int nb) {
  if (x->phase != 2 && x->phase != 3 && x->phase != 5) return 0;
  for (int i = 0; i < nb; i++) {
    const nbound *b = &bs[i];
    int m = mag_cmp(x, b, i), cmp;
    int xzero = !x->nonzero;
    if (xzero && b->zero) cmp = 0;
    else if (x->neg && !xzero) cmp = b->neg ? -m : -1;
    else cmp = b->neg ? 1 : m;
    int ok = b->op == 0 ? cmp >= 0 : b->op == 1 ? cmp > 0 : b->op == 2 ? cmp <= 0 : cmp < 0;
    if (!ok) return 0;
  }
  return 1;
}

static gx *number_bounded(sc *c, const nbound *bs, int nb, int integer) {
  gr_builder *b = c->b;
  ndfa d = {0};
  nstate s0;
  memset(&s0, 0, sizeof s0);
  if (ns_find(&d, &s0) < 0) return b->oom = 1, NULL;
  size_t maxlen = 0;
  for (int i = 0; i < nb; i++)
    if (strlen(bs[i].ip) > maxlen) maxlen = strlen(bs[i].ip);
  for (int si = 0; si < d.n; si++) {
    if (d.n > 20000) {
      nd_free(&d);
      return fail(c, MFS_EUNSUPPORTED, "", "minimum", "the numeric bounds are too detailed%s", "");
    }
    for (int k = 0; k < 12; k++) {
      nstate x = d.s[si];
      int ch = k == 0 ? '-' : k == 11 ? '.' : '0' + (k - 1);
      int ok = 1;
      switch (x.phase) {
      case 0:
      case 1:
        if (ch == '-' && x.phase == 0) x.phase = 1, x.neg = 1;
        else if (ch == '0') x.phase = 2;
        else if (ch >= '1' && ch <= '9') {
          x.phase = 3;
          x.nonzero = 1;
          x.len = 1;
          x.ilen = 1;
          for (int i = 0; i < nb; i++) x.icmp[i] = (int8_t)(ch < bs[i].ip[0] ? -1 : ch > bs[i].ip[0]);
        } else
          ok = 0;
        break;
      case 2:
      case 3:
        if (ch == '.' && !integer) x.phase = 4;
        else if (x.phase == 3 && ch >= '0' && ch <= '9' && x.ilen < GR_NUM_INT_DIGITS) {
          x.ilen++;
          for (int i = 0; i < nb; i++)
            if (!x.icmp[i] && x.len < strlen(bs[i].ip))
              x.icmp[i] = (int8_t)(ch < bs[i].ip[x.len] ? -1 : ch > bs[i].ip[x.len]);
          if (x.len <= maxlen) x.len++;
        } else
          ok = 0;
        break;
      case 4:
      case 5:
        if (ch >= '0' && ch <= '9' && x.flen < GR_NUM_FRAC_DIGITS) {
          x.phase = 5;
          x.flen++;
          if (ch != '0') x.nonzero = 1;
          for (int i = 0; i < nb; i++) {
            size_t fl = strlen(bs[i].fp);
            if (x.fcmp[i]) continue;
            int bd = x.fj[i] < fl ? bs[i].fp[x.fj[i]] : '0';
            x.fcmp[i] = (int8_t)(ch < bd ? -1 : ch > bd);
            if (x.fj[i] <= fl) x.fj[i]++;
          }
        } else
          ok = 0;
        break;
      }
      if (!ok) continue;
      int t = ns_find(&d, &x);
      if (t < 0) {
        nd_free(&d);
        return b->oom = 1, NULL;
      }
      d.tr[si][k] = t;
    }
  }
  /* prune states from which no accepting state is reachable */
  uint8_t *live = calloc((size_t)(unsigned)d.n + 1, 1);
  if (!live) {
    nd_free(&d);
    return b->oom = 1, NULL;
  }
  for (int i = 0; i < d.n; i++) live[i] = (uint8_t)accepts(&d.s[i], bs, nb);
  for (int ch = 1; ch;) {
    ch = 0;
    for (int i = 0; i < d.n; i++)
      if (!live[i])
        for (int k = 0; k < 12; k++)
          if (d.tr[i][k] >= 0 && live[d.tr[i][k]]) {
            live[i] = 1;
            ch = 1;
            break;
          }
  }
  gx *res;
  if (!live[0]) res = gx_none(b);
  else {
    int base = b->n_rules;
    for (int i = 0; i < d.n; i++) gb_rule(b, "number_bound");
    for (int i = 0; i < d.n; i++) {
      if (!live[i]) {
        gb_set(b, base + i, gx_none(b));
        continue;
      }
      gx *alts[14];
      int na = 0;
      for (int k = 0; k < 12; k++) {
        int t = d.tr[i][k];
        if (t < 0 || !live[t]) continue;
        char ch = (char)(k == 0 ? '-' : k == 11 ? '.' : '0' + (k - 1));
        alts[na++] = gx_seq2(b, gx_lit(b, &ch, 1), gx_ref(b, base + t));
      }
      if (accepts(&d.s[i], bs, nb)) alts[na++] = gx_empty(b);
      gb_set(b, base + i, gx_alt(b, alts, na));
    }
    res = gx_ref(b, base);
  }
  free(live);
  nd_free(&d);
  return res;
}

static gx *number_gx(sc *c, const cJSON *s, int integer, const char *path) {
  gr_builder *b = c->b;
  nbound bs[NB_MAX];
  int nb = 0;
  static const char *const kw[4] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
  for (int i = 0; i < 4; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, kw[i]);
    if (!v) continue;
    char p[200];
    subpath(p, sizeof p, path, kw[i], NULL);
    int op = i;
    if (cJSON_IsBool(v)) { /* draft-04: a flag on minimum / maximum */
      if (i == 0 || i == 2) return fail(c, MFS_EINVAL, p, kw[i], "'%s' must be a number", kw[i]);
      continue;
    }
    if (!cJSON_IsNumber(v)) return fail(c, MFS_EINVAL, p, kw[i], "'%s' must be a number", kw[i]);
    if (i == 0 || i == 2) {
      const cJSON *ex = cJSON_GetObjectItemCaseSensitive(s, kw[i + 1]);
      if (cJSON_IsTrue(ex)) op = i + 1;
    }
    if (bound_of(v->valuedouble, op, &bs[nb])) return fail(c, MFS_EINVAL, p, kw[i], "'%s' must be finite", kw[i]);
    nb++;
  }
  if (!nb) {
    if (!integer) return c->p.num;
    /* integers: plain, or (as JSON.stringify writes large ones) in exponent
     * form whose exponent exceeds its fraction digits */
    gx *digit = gx_range(b, '0', '9'), *d19 = gx_range(b, '1', '9');
    gx *plain = gx_seq2(b, gx_opt(b, gx_lits(b, "-")),
                        gx_alt2(b, gx_lits(b, "0"), gx_seq2(b, d19, gx_rep(b, digit, 0, GR_NUM_INT_DIGITS - 1))));
    uint32_t e2[4] = {'2', '9', 0, 0};
    gx *big_e = gx_alt2(b, gx_seq2(b, gx_chars(b, e2, 1), digit), gx_seq3(b, d19, digit, gx_rep(b, digit, 0, 1)));
    gx *k[5] = {gx_opt(b, gx_lits(b, "-")), d19, gx_opt(b, gx_seq2(b, gx_lits(b, "."), gx_rep(b, digit, 1, 19))),
                gx_lits(b, "e+"), big_e};
    return gx_alt2(b, plain, gx_seq(b, k, 5));
  }
  return number_bounded(c, bs, nb, integer);
}

/* ---- strings ---- */
static int get_count(sc *c, const cJSON *s, const char *key, int def, int *out, const char *path) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
  *out = def;
  if (!v) return 0;
  char p[200];
  subpath(p, sizeof p, path, key, NULL);
  if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble)) {
    fail(c, MFS_EINVAL, p, key, "'%s' must be a non-negative integer", key);
    return -1;
  }
  if (v->valuedouble > 100000) {
    fail(c, MFS_EUNSUPPORTED, p, key, "'%s' over 100000 is not supported", key);
    return -1;
  }
  *out = (int)v->valuedouble;
  return 0;
}

static gx *digits(gr_builder *b, int n) { return gx_rep(b, gx_range(b, '0', '9'), n, n); }

static gx *two_digit_range(gr_builder *b, int lo, int hi) { /* "lo".."hi" as two digits, 0 <= lo <= hi <= 99 */
  gx *alts[100];
  int na = 0;
  for (int v = lo; v <= hi; v++) {
    char t[3] = {(char)('0' + v / 10), (char)('0' + v % 10), 0};
    alts[na++] = gx_lits(b, t);
  }
  return gx_alt(b, alts, na);
}

static gx *format_gx(sc *c, const char *fmt, const char *path) {
  gr_builder *b = c->b;
  if (!strcmp(fmt, "date") || !strcmp(fmt, "date-time")) {
    /* full-date with the days of each month; 02-29 only in leap years */
    gx *year = digits(b, 4);
    gx *md31 = gx_seq2(b, gx_alt(b, (gx *[]){gx_lits(b, "01"), gx_lits(b, "03"), gx_lits(b, "05"), gx_lits(b, "07"),
                                            gx_lits(b, "08"), gx_lits(b, "10"), gx_lits(b, "12")}, 7),
                       gx_seq2(b, gx_lits(b, "-"), two_digit_range(b, 1, 31)));
    gx *md30 = gx_seq2(b, gx_alt(b, (gx *[]){gx_lits(b, "04"), gx_lits(b, "06"), gx_lits(b, "09"), gx_lits(b, "11")}, 4),
                       gx_seq2(b, gx_lits(b, "-"), two_digit_range(b, 1, 30)));
    gx *feb = gx_seq2(b, gx_lits(b, "02-"), two_digit_range(b, 1, 28));
    gx *common = gx_seq3(b, year, gx_lits(b, "-"), gx_alt(b, (gx *[]){md31, md30, feb}, 3));
    /* leap: YY divisible by 4 and not 00, or CC divisible by 4 and YY 00 */
    gx *yy4 = gx_alt(b, (gx *[]){gx_seq2(b, gx_lits(b, "0"), gx_chars(b, (uint32_t[]){'4', '4', '8', '8'}, 2)),
                                 gx_seq2(b, gx_chars(b, (uint32_t[]){'2', '2', '4', '4', '6', '6', '8', '8'}, 4),
                                         gx_chars(b, (uint32_t[]){'0', '0', '4', '4', '8', '8'}, 3)),
                                 gx_seq2(b, gx_chars(b, (uint32_t[]){'1', '1', '3', '3', '5', '5', '7', '7', '9', '9'}, 5),
                                         gx_chars(b, (uint32_t[]){'2', '2', '6', '6'}, 2))},
                     3);
    gx *cc4 = gx_alt(b, (gx *[]){gx_seq2(b, gx_chars(b, (uint32_t[]){'0', '0', '2', '2', '4', '4', '6', '6', '8', '8'}, 5),
                                         gx_chars(b, (uint32_t[]){'0', '0', '4', '4', '8', '8'}, 3)),
                                 gx_seq2(b, gx_chars(b, (uint32_t[]){'1', '1', '3', '3', '5', '5', '7', '7', '9', '9'}, 5),
                                         gx_chars(b, (uint32_t[]){'2', '2', '6', '6'}, 2))},
                     2);
    gx *leap = gx_seq2(b, gx_alt2(b, gx_seq2(b, digits(b, 2), yy4), gx_seq2(b, cc4, gx_lits(b, "00"))),
                       gx_lits(b, "-02-29"));
    gx *date = gx_alt2(b, common, leap);
    if (!strcmp(fmt, "date")) return date;
    return gx_seq3(b, date, gx_lits(b, "T"), format_gx(c, "time", path));
  }
  if (!strcmp(fmt, "time")) {
    gx *hh = two_digit_range(b, 0, 23), *mm = two_digit_range(b, 0, 59);
    gx *frac = gx_opt(b, gx_seq2(b, gx_lits(b, "."), gx_rep(b, gx_range(b, '0', '9'), 1, 9)));
    gx *off = gx_alt2(b, gx_lits(b, "Z"),
                      gx_seq(b, (gx *[]){gx_chars(b, (uint32_t[]){'+', '+', '-', '-'}, 2), hh, gx_lits(b, ":"), mm}, 4));
    gx *k[7] = {hh, gx_lits(b, ":"), mm, gx_lits(b, ":"), two_digit_range(b, 0, 59), frac, off};
    return gx_seq(b, k, 7);
  }
  if (!strcmp(fmt, "uuid")) {
    gx *h = gx_chars(b, (uint32_t[]){'0', '9', 'a', 'f', 'A', 'F'}, 3);
    gx *k[9] = {gx_rep(b, h, 8, 8), gx_lits(b, "-"), gx_rep(b, h, 4, 4), gx_lits(b, "-"), gx_rep(b, h, 4, 4),
                gx_lits(b, "-"), gx_rep(b, h, 4, 4), gx_lits(b, "-"), gx_rep(b, h, 12, 12)};
    return gx_seq(b, k, 9);
  }
  if (!strcmp(fmt, "email")) {
    /* dot-atom local part @ a domain of LDH labels (RFC 5321's common form) */
    uint32_t atext[] = {'a', 'z', 'A', 'Z', '0', '9', '!', '!', '#', '\'', '*', '+', '-', '-', '/', '/',
                        '=', '=', '?', '?', '^', '`', '{', '~'};
    /* bounded (RFC 5321: local part <= 64 octets) so a generation ends */
    gx *atom = gx_rep(b, gx_chars(b, atext, (int)(sizeof atext / sizeof atext[0] / 2)), 1, 20);
    gx *local = gx_seq2(b, atom, gx_rep(b, gx_seq2(b, gx_lits(b, "."), atom), 0, 2));
    gx *an = gx_chars(b, (uint32_t[]){'a', 'z', 'A', 'Z', '0', '9'}, 3);
    gx *ldh = gx_chars(b, (uint32_t[]){'a', 'z', 'A', 'Z', '0', '9', '-', '-'}, 4);
    gx *label = gx_seq2(b, an, gx_opt(b, gx_seq2(b, gx_rep(b, ldh, 0, 61), an)));
    gx *domain = gx_seq2(b, label, gx_rep(b, gx_seq2(b, gx_lits(b, "."), label), 1, 4));
    return gx_seq3(b, local, gx_lits(b, "@"), domain);
  }
  return fail(c, MFS_EUNSUPPORTED, path, "format",
              "format '%s' is not supported (date, time, date-time, uuid and email are)", fmt);
}

static gx *string_gx(sc *c, const cJSON *s, const char *path) {
  gr_builder *b = c->b;
  int mn, mx;
  if (get_count(c, s, "minLength", 0, &mn, path) || get_count(c, s, "maxLength", -1, &mx, path)) return NULL;
  const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
  const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(s, "format");
  int len_kw = mn > 0 || mx >= 0;
  char p[200];
  if (pat) {
    subpath(p, sizeof p, path, "pattern", NULL);
    if (!cJSON_IsString(pat)) return fail(c, MFS_EINVAL, p, "pattern", "'pattern' must be a string%s", "");
    if (len_kw || fmt)
      return fail(c, MFS_EUNSUPPORTED, p, "pattern",
                  "'pattern' together with %s is not supported (a grammar cannot intersect them exactly)",
                  fmt ? "'format'" : "'minLength'/'maxLength'");
    gr_error *saved = c->b->err;
    gx *x = gr_regex_gx(b, pat->valuestring, strlen(pat->valuestring), 1, 1);
    if (!x) {
      if (saved) { /* put the schema location in front of the regex's own */
        char w[sizeof p + sizeof saved->where + 8], m[sizeof saved->msg + sizeof p + 8];
        snprintf(w, sizeof w, "%s (%s)", p, saved->where);
        snprintf(m, sizeof m, "%s (at %s)", saved->msg, p);
        size_t nw = strnlen(w, sizeof saved->where - 1), nm = strnlen(m, sizeof saved->msg - 1); /* cut to fit */
        memcpy(saved->where, w, nw);
        saved->where[nw] = 0;
        memcpy(saved->msg, m, nm);
        saved->msg[nm] = 0;
      }
      return NULL;
    }
    return gx_seq3(b, gx_lits(b, "\""), x, gx_lits(b, "\""));
  }
  if (fmt) {
    subpath(p, sizeof p, path, "format", NULL);
    if (!cJSON_IsString(fmt)) return fail(c, MFS_EINVAL, p, "format", "'format' must be a string%s", "");
    if (len_kw) return fail(c, MFS_EUNSUPPORTED, p, "format", "'format' together with '%s' is not supported", mn > 0 ? "minLength" : "maxLength");
    gx *f = format_gx(c, fmt->valuestring, p);
    return f ? gx_seq3(b, gx_lits(b, "\""), f, gx_lits(b, "\"")) : NULL;
  }
  if (!len_kw) return c->p.str;
  return gx_seq3(b, gx_lits(b, "\""), gx_rep(b, c->p.chr, mn, mx), gx_lits(b, "\""));
}

/* ---- object keys not among a set (canonical encoding), on code points ---- */
typedef struct knode {
  uint32_t cp;
  int n_kids, is_name;
  struct knode **kids;
} knode;

static uint32_t utf8_next(const char **p) {
  const unsigned char *s = (const unsigned char *)*p;
  uint32_t c = s[0];
  int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (n > 1) {
    c &= (uint32_t)(0xFF >> (n + 1));
    for (int i = 1; i < n; i++) {
      if (!s[i]) { n = i; break; }
      c = c << 6 | (s[i] & 63);
    }
  }
  *p += n;
  return c;
}

static gx *key_other(sc *c, const knode *k) {
  /* from trie node k: the closing quote (if the prefix is not a name), a
   * child's character, or any other character followed by anything */
  gr_builder *b = c->b;
  gx **alts = gb_alloc(b, (size_t)(k->n_kids + 2) * sizeof *alts);
  uint32_t *ex = gb_alloc(b, (size_t)(k->n_kids + 1) * 2 * sizeof *ex);
  if (!alts || !ex) return NULL;
  int na = 0;
  if (!k->is_name) alts[na++] = gx_lits(b, "\"");
  for (int i = 0; i < k->n_kids; i++) {
    alts[na++] = gx_seq2(b, gr_json_chars(b, gx_char(b, k->kids[i]->cp)), key_other(c, k->kids[i]));
    ex[2 * i] = ex[2 * i + 1] = k->kids[i]->cp;
  }
  gx *other = gr_json_chars(b, gx_chars_not(b, ex, k->n_kids));
  alts[na++] = gx_seq3(b, other, gx_star(b, c->p.chr), gx_lits(b, "\""));
  return gx_alt(b, alts, na);
}

static gx *key_not_in(sc *c, const char *const *names, int n) {
  gr_builder *b = c->b;
  if (!n) return c->p.str;
  knode *root = gb_alloc(b, sizeof *root);
  if (!root) return NULL;
  for (int i = 0; i < n; i++) {
    knode *cur = root;
    for (const char *p = names[i]; *p;) {
      uint32_t cp = utf8_next(&p);
      knode *nx = NULL;
      for (int j = 0; j < cur->n_kids; j++)
        if (cur->kids[j]->cp == cp) nx = cur->kids[j];
      if (!nx) {
        nx = gb_alloc(b, sizeof *nx);
        knode **kids = gb_alloc(b, (size_t)(cur->n_kids + 1) * sizeof *kids);
        if (!nx || !kids) return NULL;
        if (cur->n_kids) memcpy(kids, cur->kids, (size_t)cur->n_kids * sizeof *kids);
        nx->cp = cp;
        kids[cur->n_kids++] = nx;
        cur->kids = kids;
      }
      cur = nx;
    }
    cur->is_name = 1;
  }
  return gx_seq2(b, gx_lits(b, "\""), key_other(c, root));
}

/* ---- objects ---- */
static gx *lit_key(sc *c, const char *name) {
  sbuf s = {0};
  canon_str(&s, name);
  sputs(&s, ":");
  gx *x = s.oom ? NULL : gx_lit(c->b, s.p, s.n);
  free(s.p);
  if (!x) c->b->oom = 1;
  return x;
}

static gx *object_gx(sc *c, const cJSON *s, const char *path) {
  gr_builder *b = c->b;
  const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
  const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
  const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
  char p[200];
  if (props && !cJSON_IsObject(props)) {
    subpath(p, sizeof p, path, "properties", NULL);
    return fail(c, MFS_EINVAL, p, "properties", "'properties' must be an object%s", "");
  }
  if (req && !cJSON_IsArray(req)) {
    subpath(p, sizeof p, path, "required", NULL);
    return fail(c, MFS_EINVAL, p, "required", "'required' must be an array of strings%s", "");
  }
  int np = cJSON_GetArraySize(props) + cJSON_GetArraySize(req);
  const char **names = gb_alloc(b, (size_t)(np + 1) * sizeof *names);
  gx **vals = gb_alloc(b, (size_t)(np + 1) * sizeof *vals);
  int *reqd = gb_alloc(b, (size_t)(np + 1) * sizeof *reqd);
  if (!names || !vals || !reqd) return NULL;
  /* additional members: schema, or none */
  gx *addv = NULL;
  if (addl) {
    subpath(p, sizeof p, path, "additionalProperties", NULL);
    if (!cJSON_IsFalse(addl)) {
      addv = compile(c, addl, p);
      if (!addv) return NULL;
      if (addv->k == GX_NONE) addv = NULL;
    }
  } else if (!(c->flags & GR_SCHEMA_STRICT_OBJECTS))
    addv = c->p.value;
  int n = 0;
  for (const cJSON *e = props ? props->child : NULL; e; e = e->next) {
    char kp[200];
    subpath(kp, sizeof kp, path, "properties", e->string);
    names[n] = e->string;
    vals[n] = compile(c, e, kp);
    if (!vals[n]) return NULL;
    n++;
  }
  for (const cJSON *r = req ? req->child : NULL; r; r = r->next) {
    if (!cJSON_IsString(r)) {
      subpath(p, sizeof p, path, "required", NULL);
      return fail(c, MFS_EINVAL, p, "required", "'required' must be an array of strings%s", "");
    }
    int found = -1;
    for (int i = 0; i < n; i++)
      if (!strcmp(names[i], r->valuestring)) found = i;
    if (found >= 0) {
      reqd[found] = 1;
      continue;
    }
    /* required but not listed: its value follows additionalProperties */
    names[n] = r->valuestring;
    vals[n] = addv ? addv : gx_none(b);
    reqd[n] = 1;
    n++;
  }
  /* members that can never appear drop out; a required one empties the object */
  for (int i = 0; i < n; i++)
    if (vals[i]->k == GX_NONE && reqd[i]) return gx_none(b);
  gx *kv_add = NULL;
  if (addv) kv_add = gx_seq3(b, key_not_in(c, names, n), gx_lits(b, ":"), addv);
  /* R(i, nc): members from i on; nc: a comma is needed before the next */
  gx *r0 = NULL, *r1 = NULL; /* R(i+1, 0), R(i+1, 1) */
  if (kv_add) {
    gx *more = gx_star(b, gx_seq2(b, gx_lits(b, ","), kv_add));
    r0 = gx_opt(b, gx_seq2(b, kv_add, more));
    r1 = more;
  } else {
    r0 = gx_empty(b);
    r1 = gx_empty(b);
  }
  for (int i = n - 1; i >= 0; i--) {
    if (vals[i]->k == GX_NONE) continue;
    gx *kv = gx_seq2(b, lit_key(c, names[i]), vals[i]);
    gx *with0 = gx_seq2(b, kv, r1);                        /* first member */
    gx *with1 = gx_seq3(b, gx_lits(b, ","), kv, r1);       /* after another */
    gx *n0 = reqd[i] ? with0 : gx_alt2(b, with0, r0);
    gx *n1 = reqd[i] ? with1 : gx_alt2(b, with1, r1);
    r0 = n0;
    r1 = n1;
  }
  return gx_seq3(b, gx_lits(b, "{"), r0, gx_lits(b, "}"));
}

/* ---- arrays ---- */
static gx *array_gx(sc *c, const cJSON *s, const char *path) {
  gr_builder *b = c->b;
  const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
  const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(s, "prefixItems");
  const cJSON *addi = cJSON_GetObjectItemCaseSensitive(s, "additionalItems");
  char p[200];
  int mn, mx;
  if (get_count(c, s, "minItems", 0, &mn, path) || get_count(c, s, "maxItems", -1, &mx, path)) return NULL;
  const cJSON *rest = items;
  const char *rest_kw = "items";
  if (cJSON_IsArray(items)) { /* draft-07 tuple form */
    if (prefix) {
      subpath(p, sizeof p, path, "items", NULL);
      return fail(c, MFS_EINVAL, p, "items", "array-form 'items' together with 'prefixItems'%s", "");
    }
    prefix = items;
    rest = addi;
    rest_kw = "additionalItems";
  }
  int k = cJSON_GetArraySize(prefix);
  gx **pre = gb_alloc(b, (size_t)(k + 1) * sizeof *pre);
  if (!pre) return NULL;
  int i = 0;
  for (const cJSON *e = prefix ? prefix->child : NULL; e; e = e->next, i++) {
    char ip[32];
    snprintf(ip, sizeof ip, "%d", i);
    subpath(p, sizeof p, path, cJSON_IsArray(items) && prefix == items ? "items" : "prefixItems", ip);
    pre[i] = compile(c, e, p);
    if (!pre[i]) return NULL;
  }
  gx *item = c->p.value;
  if (rest) {
    subpath(p, sizeof p, path, rest_kw, NULL);
    item = compile(c, rest, p);
    if (!item) return NULL;
  }
  if (mx >= 0 && mx < mn) return gx_none(b);
  /* A(i): the elements from index i on (i > 0: a comma comes first) */
  int fixed = k > mn ? k : mn; /* positions handled one by one */
  if (mx >= 0 && fixed > mx) fixed = mx;
  gx *tail;
  {
    /* from index `fixed` on: the repeated item, up to mx */
    int room = mx < 0 ? -1 : mx - fixed;
    if (item->k == GX_NONE || room == 0) tail = gx_empty(b);
    else if (fixed > 0) tail = gx_rep(b, gx_seq2(b, gx_lits(b, ","), item), 0, room);
    else tail = gx_opt(b, gx_seq2(b, item, gx_rep(b, gx_seq2(b, gx_lits(b, ","), item), 0, room < 0 ? -1 : room - 1)));
  }
  gx *a = tail;
  for (int j = fixed - 1; j >= 0; j--) {
    gx *el = j < k ? pre[j] : item;
    gx *step = gx_seq3(b, j > 0 ? gx_lits(b, ",") : gx_empty(b), el, a);
    a = j < mn ? step : gx_opt(b, step);
  }
  return gx_seq3(b, gx_lits(b, "["), a, gx_lits(b, "]"));
}

/* ---- allOf: merge branches keyword by keyword into one schema ---- */
static int merge_into(sc *c, cJSON *dst, const cJSON *src, const char *path, int depth);

static int merge_branch(sc *c, cJSON *dst, const cJSON *br, const char *path, int depth) {
  if (depth > MAX_DEPTH) return fail(c, MFS_EUNSUPPORTED, path, "allOf", "allOf nesting too deep%s", ""), -1;
  if (cJSON_IsTrue(br)) return 0;
  if (cJSON_IsFalse(br)) {
    cJSON_AddItemToObject(dst, "enum", cJSON_CreateArray()); /* nothing */
    return 0;
  }
  if (!cJSON_IsObject(br)) return fail(c, MFS_EINVAL, path, "allOf", "a schema must be an object or a boolean%s", ""), -1;
  return merge_into(c, dst, br, path, depth + 1);
}

static int merge_into(sc *c, cJSON *dst, const cJSON *src, const char *path, int depth) {
  for (const cJSON *e = src->child; e; e = e->next) {
    const char *k = e->string;
    char p[200];
    subpath(p, sizeof p, path, k, NULL);
    if (is_annotation(k)) continue;
    cJSON *cur = cJSON_GetObjectItemCaseSensitive(dst, k);
    if (!strcmp(k, "allOf")) {
      if (!cJSON_IsArray(e)) return fail(c, MFS_EINVAL, p, k, "'allOf' must be an array%s", ""), -1;
      int i = 0;
      for (const cJSON *br = e->child; br; br = br->next, i++) {
        char bp[220];
        snprintf(bp, sizeof bp, "%s/%d", p, i);
        if (merge_branch(c, dst, br, bp, depth)) return -1;
      }
      continue;
    }
    if (!strcmp(k, "$ref")) {
      const cJSON *r = cJSON_IsString(e) ? resolve(c, e->valuestring) : NULL;
      if (!r) return fail(c, MFS_EUNSUPPORTED, p, "$ref", "only local references ('#/...') that resolve are supported%s", ""), -1;
      if (merge_branch(c, dst, r, p, depth)) return -1;
      continue;
    }
    if (!cur) {
      cJSON_AddItemToObject(dst, k, cJSON_Duplicate(e, 1));
      continue;
    }
    if (cJSON_Compare(cur, e, 1)) continue;
    if (!strcmp(k, "required")) {
      for (const cJSON *r = e->child; r; r = r->next) cJSON_AddItemToArray(cur, cJSON_Duplicate(r, 1));
    } else if (!strcmp(k, "properties") && cJSON_IsObject(e) && cJSON_IsObject(cur)) {
      for (const cJSON *pe = e->child; pe; pe = pe->next) {
        cJSON *have = cJSON_GetObjectItemCaseSensitive(cur, pe->string);
        if (!have) cJSON_AddItemToObject(cur, pe->string, cJSON_Duplicate(pe, 1));
        else if (!cJSON_Compare(have, pe, 1)) { /* both constrain it: allOf of the two */
          cJSON *all = cJSON_CreateObject(), *arr = cJSON_CreateArray();
          cJSON_AddItemToArray(arr, cJSON_Duplicate(have, 1));
          cJSON_AddItemToArray(arr, cJSON_Duplicate(pe, 1));
          cJSON_AddItemToObject(all, "allOf", arr);
          cJSON_ReplaceItemInObjectCaseSensitive(cur, pe->string, all);
        }
      }
    } else if (!strcmp(k, "type")) {
      int t1 = types_of(c, dst, 0);
      cJSON *tmp = cJSON_CreateObject();
      cJSON_AddItemToObject(tmp, "type", cJSON_Duplicate(e, 1));
      int t2 = types_of(c, tmp, 0);
      cJSON_Delete(tmp);
      int t = t1 & t2;
      cJSON *arr = cJSON_CreateArray();
      static const char *const tn[] = {"null", "boolean", "object", "array", "string", "number", "integer"};
      if (t & T_NUM) t &= ~T_INT;
      for (int i = 0; i < 7; i++)
        if (t & (1 << i)) cJSON_AddItemToArray(arr, cJSON_CreateString(tn[i]));
      cJSON_ReplaceItemInObjectCaseSensitive(dst, "type", arr);
    } else if (cJSON_IsNumber(cur) && cJSON_IsNumber(e) &&
               (!strcmp(k, "minimum") || !strcmp(k, "exclusiveMinimum") || !strcmp(k, "minLength") ||
                !strcmp(k, "minItems"))) {
      if (e->valuedouble > cur->valuedouble) cJSON_SetNumberValue(cur, e->valuedouble);
    } else if (cJSON_IsNumber(cur) && cJSON_IsNumber(e) &&
               (!strcmp(k, "maximum") || !strcmp(k, "exclusiveMaximum") || !strcmp(k, "maxLength") ||
                !strcmp(k, "maxItems"))) {
      if (e->valuedouble < cur->valuedouble) cJSON_SetNumberValue(cur, e->valuedouble);
    } else {
      return fail(c, MFS_EUNSUPPORTED, p, k, "allOf branches with different '%s' cannot be merged exactly", k), -1;
    }
  }
  return 0;
}

/* ---- the main dispatch ---- */
static int only_annotations_besides(const cJSON *s, const char *k1, const char *k2) {
  for (const cJSON *e = s->child; e; e = e->next)
    if (!is_annotation(e->string) && strcmp(e->string, k1) && (!k2 || strcmp(e->string, k2))) return 0;
  return 1;
}

static gx *literal_values(sc *c, const cJSON *vals, int types) {
  gr_builder *b = c->b;
  int n = cJSON_GetArraySize(vals);
  gx **alts = gb_alloc(b, (size_t)(n + 1) * sizeof *alts);
  if (!alts) return NULL;
  int na = 0;
  for (const cJSON *v = vals->child; v; v = v->next) {
    int vt = value_type(v);
    if (!(vt & types)) continue;
    if (vt == T_NUM && !(types & T_NUM)) continue; /* a non-integer where only integers are allowed */
    sbuf s = {0};
    canon(&s, v);
    if (s.oom) return b->oom = 1, NULL;
    alts[na++] = gx_lit(b, s.p, s.n);
    free(s.p);
  }
  return gx_alt(b, alts, na);
}

static int memo_find(sc *c, const cJSON *node) {
  for (int i = 0; i < c->n_memo; i++)
    if (c->memo[i].node == node) return c->memo[i].rule;
  return -1;
}

static gx *compile_ref(sc *c, const cJSON *ref, const char *path) {
  char p[200];
  subpath(p, sizeof p, path, "$ref", NULL);
  if (!cJSON_IsString(ref)) return fail(c, MFS_EINVAL, p, "$ref", "'$ref' must be a string%s", "");
  const cJSON *t = resolve(c, ref->valuestring);
  if (!t)
    return fail(c, MFS_EUNSUPPORTED, p, "$ref",
                "reference '%s' does not resolve (only local references '#/...' are supported)", ref->valuestring);
  int r = memo_find(c, t);
  if (r >= 0) return gx_ref(c->b, r);
  if (c->n_memo == c->cap_memo) {
    int cap = c->cap_memo ? 2 * c->cap_memo : 16;
    memo_ent *m = realloc(c->memo, (size_t)cap * sizeof *m);
    if (!m) return c->b->oom = 1, NULL;
    c->memo = m;
    c->cap_memo = cap;
  }
  r = gb_rule(c->b, ref->valuestring);
  if (r < 0) return NULL;
  c->memo[c->n_memo].node = t;
  c->memo[c->n_memo].rule = r;
  c->n_memo++;
  gx *body = compile(c, t, ref->valuestring);
  if (!body) return NULL;
  gb_set(c->b, r, body);
  return gx_ref(c->b, r);
}

static gx *compile_obj(sc *c, const cJSON *s, const char *path);

static gx *compile(sc *c, const cJSON *s, const char *path) {
  gr_builder *b = c->b;
  if (c->b->failed) return NULL;
  if (cJSON_IsTrue(s)) return c->p.value;
  if (cJSON_IsFalse(s)) return gx_none(b);
  if (!cJSON_IsObject(s)) return fail(c, MFS_EINVAL, path, "schema", "a schema must be an object or a boolean%s", "");
  if (++c->depth > MAX_DEPTH) {
    c->depth--;
    return fail(c, MFS_EUNSUPPORTED, path, "depth", "the schema nests deeper than %s levels", "48");
  }
  gx *x = compile_obj(c, s, path);
  c->depth--;
  return x;
}

static gx *with_rest(sc *c, const cJSON *s, const char *drop, const cJSON *branch, const char *path) {
  /* merge(s without `drop`, branch) and compile it */
  cJSON *m = cJSON_CreateObject();
  if (!m) return c->b->oom = 1, NULL;
  cJSON_AddItemToArray(c->owned, m);
  for (const cJSON *e = s->child; e; e = e->next)
    if (strcmp(e->string, drop) && !is_annotation(e->string)) cJSON_AddItemToObject(m, e->string, cJSON_Duplicate(e, 1));
  if (merge_branch(c, m, branch, path, 0)) return NULL;
  return compile(c, m, path);
}

static gx *compile_obj(sc *c, const cJSON *s, const char *path) {
  gr_builder *b = c->b;
  char p[200];
  for (const cJSON *e = s->child; e; e = e->next) {
    if (is_refused(e->string)) {
      if (!strcmp(e->string, "uniqueItems") && cJSON_IsFalse(e)) continue;
      if (!strcmp(e->string, "minProperties") && cJSON_IsNumber(e) && e->valuedouble == 0) continue;
      if (!strcmp(e->string, "uniqueItems")) {
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(s, "maxItems");
        if (cJSON_IsNumber(mx) && mx->valuedouble <= 1) continue;
      }
      subpath(p, sizeof p, path, e->string, NULL);
      return fail(c, MFS_EUNSUPPORTED, p, e->string,
                  "keyword '%s' is not supported in structured outputs (it cannot be enforced exactly)", e->string);
    }
    if (!strcmp(e->string, "$id") && path[0] && strcmp(path, "#")) {
      subpath(p, sizeof p, path, "$id", NULL);
      return fail(c, MFS_EUNSUPPORTED, p, "$id", "'$id' below the root is not supported%s", "");
    }
  }
  const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
  const cJSON *all = cJSON_GetObjectItemCaseSensitive(s, "allOf");
  const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
  const cJSON *one = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
  if (ref && only_annotations_besides(s, "$ref", NULL)) return compile_ref(c, ref, path);
  if (ref || all) { /* flatten: merge every allOf branch and the referenced schema into one */
    cJSON *m = cJSON_CreateObject();
    if (!m) return b->oom = 1, NULL;
    cJSON_AddItemToArray(c->owned, m);
    if (merge_into(c, m, s, path, 0)) return NULL;
    return compile(c, m, path);
  }
  if (any || one) {
    const cJSON *list = any ? any : one;
    const char *kw = any ? "anyOf" : "oneOf";
    subpath(p, sizeof p, path, kw, NULL);
    if (any && one) return fail(c, MFS_EUNSUPPORTED, p, kw, "'anyOf' together with 'oneOf' is not supported%s", "");
    if (!cJSON_IsArray(list) || !list->child) return fail(c, MFS_EINVAL, p, kw, "'%s' must be a non-empty array", kw);
    int n = cJSON_GetArraySize(list);
    int plain = only_annotations_besides(s, kw, NULL);
    if (one) { /* exact only when no instance can match two branches */
      int i = 0;
      for (const cJSON *x = list->child; x; x = x->next, i++) {
        int j = i + 1;
        for (const cJSON *y = x->next; y; y = y->next, j++)
          if (!disjoint(c, x, y)) {
            char d[64];
            snprintf(d, sizeof d, "%d and %d", i, j);
            return fail(c, MFS_EUNSUPPORTED, p, "oneOf",
                        "oneOf branches %s may both match a value (oneOf is honoured only for branches of different "
                        "types or with different constants of a required property); use anyOf",
                        d);
          }
      }
    }
    gx **alts = gb_alloc(b, (size_t)n * sizeof *alts);
    if (!alts) return NULL;
    int i = 0;
    for (const cJSON *x = list->child; x; x = x->next, i++) {
      char bp[220];
      snprintf(bp, sizeof bp, "%s/%d", p, i);
      alts[i] = plain ? compile(c, x, bp) : with_rest(c, s, kw, x, bp);
      if (!alts[i]) return NULL;
    }
    return gx_alt(b, alts, n);
  }
  /* types */
  int types = T_ALL;
  const cJSON *ty = cJSON_GetObjectItemCaseSensitive(s, "type");
  if (ty) {
    subpath(p, sizeof p, path, "type", NULL);
    types = 0;
    if (cJSON_IsString(ty)) {
      types = type_bit(ty->valuestring);
      if (types < 0) return fail(c, MFS_EINVAL, p, "type", "unknown type '%s'", ty->valuestring);
    } else if (cJSON_IsArray(ty)) {
      for (const cJSON *e = ty->child; e; e = e->next) {
        int t = cJSON_IsString(e) ? type_bit(e->valuestring) : -1;
        if (t < 0) return fail(c, MFS_EINVAL, p, "type", "'type' must name JSON Schema types%s", "");
        types |= t;
      }
    } else
      return fail(c, MFS_EINVAL, p, "type", "'type' must be a string or an array of strings%s", "");
  }
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "nullable"))) types |= T_NULL;
  const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum"), *co = cJSON_GetObjectItemCaseSensitive(s, "const");
  if (en || co) {
    const char *kw = co ? "const" : "enum";
    subpath(p, sizeof p, path, kw, NULL);
    if (en && !cJSON_IsArray(en)) return fail(c, MFS_EINVAL, p, "enum", "'enum' must be an array%s", "");
    static const char *const ok[] = {"enum", "const", "type", "nullable", NULL};
    for (const cJSON *e = s->child; e; e = e->next) {
      int fine = is_annotation(e->string);
      for (int i = 0; ok[i]; i++) fine |= !strcmp(e->string, ok[i]);
      if (!fine) {
        char d[96];
        snprintf(d, sizeof d, "'%s' together with '%s'", kw, e->string);
        return fail(c, MFS_EUNSUPPORTED, p, kw, "%s is not supported (list only the allowed values)", d);
      }
    }
    if (co && en) { /* both: the const if the enum has it */
      int has = 0;
      for (const cJSON *v = en->child; v; v = v->next) has |= cJSON_Compare(v, co, 1);
      if (!has) return gx_none(b);
    }
    if (co) {
      cJSON *arr = cJSON_CreateArray();
      cJSON_AddItemToArray(arr, cJSON_Duplicate(co, 1));
      cJSON_AddItemToArray(c->owned, arr);
      return literal_values(c, arr, types);
    }
    return literal_values(c, en, types);
  }
  gx *alts[7];
  int na = 0;
  if (types & T_NULL) alts[na++] = gx_lits(b, "null");
  if (types & T_BOOL) alts[na++] = gx_alt2(b, gx_lits(b, "true"), gx_lits(b, "false"));
  if (types & (T_NUM | T_INT)) {
    gx *x = number_gx(c, s, !(types & T_NUM), path);
    if (!x) return NULL;
    alts[na++] = x;
  }
  if (types & T_STR) {
    gx *x = string_gx(c, s, path);
    if (!x) return NULL;
    alts[na++] = x;
  }
  if (types & T_ARR) {
    gx *x = array_gx(c, s, path);
    if (!x) return NULL;
    alts[na++] = x;
  }
  if (types & T_OBJ) {
    gx *x = object_gx(c, s, path);
    if (!x) return NULL;
    alts[na++] = x;
  }
  return gx_alt(b, alts, na);
}

gx *gr_schema_gx(gr_builder *b, const cJSON *root, unsigned flags) {
  sc c = {0};
  c.b = b;
  c.root = root;
  c.flags = flags;
  c.owned = cJSON_CreateArray();
  if (!c.owned) return b->oom = 1, NULL;
  prim_init(&c.p, b);
  gx *x = compile(&c, root, "#");
  free(c.memo);
  cJSON_Delete(c.owned);
  if (!x && !b->failed) gb_fail(b, b->oom ? MFS_ENOMEM : MFS_EINVAL, "#", "schema", "the schema could not be compiled");
  return x;
}
