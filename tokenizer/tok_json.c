/* tok_json.c: a small pull scanner for the two big members of
 * tokenizer.json, model.vocab and model.merges (over 95% of a 150k-token
 * file). cJSON would build a node per string and per number for them,
 * which is most of a load's time and memory; the loader reads them with
 * this scanner straight into its own pools instead and leaves everything
 * else to cJSON (tok_json_find_model).
 *
 * Strict RFC 8259 grammar, as serde_json (which writes and reads these
 * files for Hugging Face) applies it: no raw control characters in
 * strings, no lone surrogate escapes, no leading zeros or bare '-'. Any
 * error records the first byte offset it was found at. Nesting is bounded
 * (TOK_JSON_DEPTH) so skipping a hostile value cannot exhaust the stack. */
#include <string.h>

#include "tok_internal.h"

#define TOK_JSON_DEPTH 512

static int bad(tok_json *j, const char *what) {
  if (!j->err) {
    j->err = what;
    j->err_at = j->i;
  }
  return -1;
}

void tok_json_ws(tok_json *j) {
  while (j->i < j->n) {
    char c = j->s[j->i];
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') break;
    j->i++;
  }
}

int tok_json_peek(tok_json *j) {
  tok_json_ws(j);
  return j->i < j->n ? (unsigned char)j->s[j->i] : -1;
}

int tok_json_expect(tok_json *j, char c) {
  if (tok_json_peek(j) != (unsigned char)c) return bad(j, c == ':' ? "expected ':'" : "unexpected character");
  j->i++;
  return 0;
}

int tok_json_next(tok_json *j, char close, int *first) {
  int c = tok_json_peek(j);
  if (c == (unsigned char)close) {
    j->i++;
    return 0;
  }
  if (!*first) {
    if (c != ',') return bad(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    j->i++;
    c = tok_json_peek(j);
  }
  *first = 0;
  if (c < 0) return bad(j, "unexpected end");
  return 1;
}

static int hex4(const char *p, uint32_t *v) {
  uint32_t x = 0;
  for (int k = 0; k < 4; k++) {
    char c = p[k];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    x = x << 4 | (uint32_t)d;
  }
  *v = x;
  return 0;
}

static size_t utf8_put(char *o, uint32_t cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12);
    o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18);
  o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

int tok_json_string(tok_json *j, char *out, size_t cap, size_t *len) {
  if (tok_json_peek(j) != '"') return bad(j, "expected a string");
  const char *s = j->s;
  size_t i = j->i + 1, n = j->n, k = 0;
  for (;;) {
    size_t run = i; /* the plain bytes up to the next quote, escape or control character */
    while (i < n && s[i] != '"' && s[i] != '\\' && (unsigned char)s[i] >= 0x20) i++;
    if (out && k < cap) memcpy(out + k, s + run, i - run < cap - k ? i - run : cap - k);
    k += i - run;
    if (i >= n) {
      j->i = i;
      return bad(j, "unterminated string");
    }
    if (s[i] == '"') break;
    if (s[i] != '\\') {
      j->i = i;
      return bad(j, "control character in a string");
    }
    if (i + 1 >= n) {
      j->i = i;
      return bad(j, "unterminated string");
    }
    char e = s[i + 1], one = 0, u[4];
    size_t ul = 1;
    switch (e) {
    case '"': one = '"'; break;
    case '\\': one = '\\'; break;
    case '/': one = '/'; break;
    case 'b': one = '\b'; break;
    case 'f': one = '\f'; break;
    case 'n': one = '\n'; break;
    case 'r': one = '\r'; break;
    case 't': one = '\t'; break;
    case 'u': {
      uint32_t cp, lo;
      if (i + 6 > n || hex4(s + i + 2, &cp)) {
        j->i = i;
        return bad(j, "bad \\u escape");
      }
      i += 6;
      if (cp >= 0xDC00 && cp <= 0xDFFF) {
        j->i = i - 6;
        return bad(j, "lone low surrogate escape");
      }
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (i + 6 > n || s[i] != '\\' || s[i + 1] != 'u' || hex4(s + i + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
          j->i = i - 6;
          return bad(j, "high surrogate escape without its low half");
        }
        i += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      ul = utf8_put(u, cp);
      break;
    }
    default:
      j->i = i;
      return bad(j, "bad escape");
    }
    if (e != 'u') {
      u[0] = one;
      i += 2;
    }
    for (size_t m = 0; m < ul; m++, k++)
      if (out && k < cap) out[k] = u[m];
  }
  j->i = i + 1;
  if (len) *len = k;
  return 0;
}

int tok_json_int(tok_json *j, int64_t lo, int64_t hi, int64_t *v) {
  tok_json_peek(j);
  const char *s = j->s;
  size_t i = j->i, n = j->n;
  int neg = i < n && s[i] == '-';
  if (neg) i++;
  if (i >= n || s[i] < '0' || s[i] > '9') return bad(j, "expected a number");
  if (s[i] == '0' && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9') return bad(j, "number with a leading zero");
  int64_t x = 0;
  for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
    if (x > hi) continue; /* out of range anyway: stop growing */
    x = x * 10 + (s[i] - '0');
  }
  if (i < n && (s[i] == '.' || s[i] == 'e' || s[i] == 'E')) return bad(j, "expected an integer");
  if (neg) x = -x;
  if (x < lo || x > hi) return bad(j, "integer out of range");
  j->i = i;
  *v = x;
  return 0;
}

static int skip_number(tok_json *j) {
  const char *s = j->s;
  size_t i = j->i, n = j->n;
#define DIGIT(k) ((k) < n && s[k] >= '0' && s[k] <= '9')
  if (i < n && s[i] == '-') i++;
  if (!DIGIT(i)) return bad(j, "bad number");
  if (s[i] == '0') i++;
  else
    while (DIGIT(i)) i++;
  if (i < n && s[i] == '.') {
    if (!DIGIT(i + 1)) return bad(j, "bad number");
    for (i++; DIGIT(i); i++) {}
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    if (!DIGIT(i)) return bad(j, "bad number");
    while (DIGIT(i)) i++;
  }
#undef DIGIT
  j->i = i;
  return 0;
}

static int skip_value(tok_json *j, int depth) {
  int c = tok_json_peek(j), first = 1, r;
  if (c < 0) return bad(j, "unexpected end");
  if (depth > TOK_JSON_DEPTH) return bad(j, "nested too deeply");
  switch (c) {
  case '"': return tok_json_string(j, NULL, 0, NULL);
  case '{':
    j->i++;
    while ((r = tok_json_next(j, '}', &first)) > 0)
      if (tok_json_string(j, NULL, 0, NULL) || tok_json_expect(j, ':') || skip_value(j, depth + 1)) return -1;
    return r;
  case '[':
    j->i++;
    while ((r = tok_json_next(j, ']', &first)) > 0)
      if (skip_value(j, depth + 1)) return -1;
    return r;
  case 't':
  case 'f':
  case 'n': {
    const char *w = c == 't' ? "true" : c == 'f' ? "false" : "null";
    size_t wl = strlen(w);
    if (j->n - j->i < wl || memcmp(j->s + j->i, w, wl)) return bad(j, "bad literal");
    j->i += wl;
    return 0;
  }
  default: return skip_number(j);
  }
}

int tok_json_skip(tok_json *j) { return skip_value(j, 0); }

/* Reads an object key and the ':' after it into buf (truncated to cap
 * bytes); returns its full length, or -1. */
static long key(tok_json *j, char *buf, size_t cap) {
  size_t len;
  if (tok_json_string(j, buf, cap, &len) || tok_json_expect(j, ':')) return -1;
  return (long)len;
}

int tok_json_find_model(const char *s, size_t n, tok_json_span *vocab, tok_json_span *merges,
                        tok_json *j) {
  *j = (tok_json){s, n, 0, NULL, 0};
  *vocab = *merges = (tok_json_span){0, 0};
  int first = 1, r, seen_model = 0;
  char buf[8];
  if (n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) j->i = 3; /* a UTF-8 BOM, which cJSON skips too */
  if (tok_json_peek(j) != '{') return 0; /* not an object: cJSON says what it is */
  j->i++;
  while ((r = tok_json_next(j, '}', &first)) > 0) {
    long kl = key(j, buf, sizeof buf);
    if (kl < 0) return -1;
    int is_model = kl == 5 && !memcmp(buf, "model", 5);
    /* cJSON's lookups take the first member of a name: only that one counts */
    if (!is_model || seen_model++ || tok_json_peek(j) != '{') {
      if (tok_json_skip(j)) return -1;
      continue;
    }
    j->i++;
    int mfirst = 1, seen_vocab = 0, seen_merges = 0;
    while ((r = tok_json_next(j, '}', &mfirst)) > 0) {
      if ((kl = key(j, buf, sizeof buf)) < 0) return -1;
      tok_json_span *sp = NULL;
      int want = 0;
      if (kl == 5 && !memcmp(buf, "vocab", 5) && !seen_vocab++) sp = vocab, want = '{';
      if (kl == 6 && !memcmp(buf, "merges", 6) && !seen_merges++) sp = merges, want = '[';
      int c = tok_json_peek(j);
      size_t start = j->i;
      if (tok_json_skip(j)) return -1;
      if (sp && c == want) *sp = (tok_json_span){start, j->i}; /* another type stays with cJSON */
    }
    if (r < 0) return -1;
  }
  return r < 0 ? -1 : 0;
}
