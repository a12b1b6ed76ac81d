/* tok_load.c: builds a tok_tokenizer from tokenizer.json (+ optional
 * tokenizer_config.json). Everything unsupported is refused at load with a
 * message naming the file and the item, so encode never meets a surprise.
 * After tok_new returns, the object is never written again. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "common.h"
#include "tok_internal.h"

#define GPT2_PATTERN \
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

typedef struct loader {
  const char *file; /* for messages */
  char *err;
  size_t errlen;
} loader;

static int fail(loader *L, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(loader *L, int rc, const char *fmt, ...) {
  if (L->err && L->errlen) {
    int k = snprintf(L->err, L->errlen, "%s: ", L->file);
    if (k < 0) k = 0;
    if ((size_t)k < L->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(L->err + k, L->errlen - (size_t)k, fmt, ap);
      va_end(ap);
    }
  }
  return rc;
}

static int read_file(const char *path, char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return MFS_EIO;
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  if (!b) {
    fclose(f);
    return MFS_ENOMEM;
  }
  for (;;) {
    if (n + 1 >= cap) {
      char *nb = realloc(b, cap *= 2);
      if (!nb) {
        free(b);
        fclose(f);
        return MFS_ENOMEM;
      }
      b = nb;
    }
    size_t r = fread(b + n, 1, cap - n - 1, f);
    n += r;
    if (r == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(b);
    return MFS_EIO;
  }
  b[n] = 0;
  *buf = b;
  *len = n;
  return 0;
}

/* tokenizer.json's text: mapped read-only when it is a regular file (no
 * copy, no zeroed pages: a 10 MB file costs neither), else read. */
typedef struct file_text {
  char *p;
  size_t len;
  int mapped;
} file_text;

static int text_open(const char *path, file_text *ft) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  ft->mapped = 0;
  if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m != MAP_FAILED) {
      close(fd);
      madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
      ft->p = m;
      ft->len = (size_t)st.st_size;
      ft->mapped = 1;
      return 0;
    }
  }
  if (fd >= 0) close(fd);
  return read_file(path, &ft->p, &ft->len);
}

static void text_close(file_text *ft) {
  if (!ft->p) return;
  if (ft->mapped) munmap(ft->p, ft->len);
  else free(ft->p);
  ft->p = NULL;
}

/* ---- GPT-2 byte <-> char table ---- */

static int g_char_byte[324]; /* code point -> byte, -1 none */
static uint32_t g_byte_char[256];

static pthread_once_t g_table_once = PTHREAD_ONCE_INIT;

static void bytelevel_table_init(void) {
  int n = 0;
  for (int i = 0; i < 324; i++) g_char_byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    uint32_t c = keep ? (uint32_t)b : 256u + (uint32_t)n++;
    g_byte_char[b] = c;
    g_char_byte[c] = b;
  }
}

static void bytelevel_table(void) { pthread_once(&g_table_once, bytelevel_table_init); }

/* Decodes a byte-level string into raw bytes (out has room for len bytes).
 * Returns the length, or -1 if a character is not in the table. */
static long bytelevel_decode(const char *s, size_t len, char *out) {
  size_t i = 0, k = 0;
  while (i < len) {
    unsigned c = (unsigned char)s[i];
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i++;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < len) {
      cp = (c & 0x1F) << 6 | ((unsigned char)s[i + 1] & 0x3F);
      i += 2;
    } else
      return -1;
    if (cp >= 324 || g_char_byte[cp] < 0) return -1;
    out[k++] = (char)g_char_byte[cp];
  }
  return (long)k;
}

/* ---- small JSON helpers ---- */

static const char *jstr(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *key, int def) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
  return def;
}

static int is_null(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* cJSON strings end at a NUL, so before parsing, every \u0000 escape in the
 * file becomes \uDBFF\uDFFF (U+10FFFF, F4 8F BF BF) and token strings are
 * copied back with unnul(). Returns a new buffer, or buf when there is
 * none (or NULL when out of memory). */
static char *nul_escapes(char *buf, size_t len, size_t *outlen) {
  size_t hits = 0; /* counted over all len bytes: raw NULs must not end the count early */
  for (char *p = buf; (p = memmem(p, len - (size_t)(p - buf), "\\u0000", 6)); p += 6) hits++;
  *outlen = len;
  if (!hits) return buf;
  char *o = malloc(len + hits * 6 + 1), *q = o;
  if (!o) return NULL;
  for (size_t i = 0; i < len;) {
    if (buf[i] == '\\') {
      if (!strncmp(buf + i, "\\u0000", 6)) {
        memcpy(q, "\\uDBFF\\uDFFF", 12);
        q += 12;
        i += 6;
      } else { /* any other escape pair, so an escaped backslash before "u0000" is no NUL */
        *q++ = buf[i++];
        if (i < len) *q++ = buf[i++];
      }
    } else {
      *q++ = buf[i++];
    }
  }
  *q = 0;
  *outlen = (size_t)(q - o);
  return o;
}

/* Copies n bytes of s into out turning U+10FFFF back into NUL; returns the
 * new length (never longer). */
static size_t unnul(const char *s, size_t n, char *out) {
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    if (i + 4 <= n && !memcmp(s + i, "\xF4\x8F\xBF\xBF", 4)) {
      out[k++] = 0;
      i += 4;
    } else {
      out[k++] = s[i++];
    }
  }
  return k;
}

static int compile_re(loader *L, const char *what, const char *pat, size_t len, int literal,
                      pcre2_code **out) {
  int ec;
  PCRE2_SIZE off;
  uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &ec, &off, NULL);
  if (!re) {
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(ec, msg, sizeof msg);
    return fail(L, MFS_EUNSUPPORTED, "%s: regex '%.80s' does not compile at offset %zu: %s", what,
                pat, (size_t)off, (char *)msg);
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: interpreter otherwise */
  *out = re;
  return 0;
}

/* ---- normalizer ---- */

static int add_norm(loader *L, tok_tokenizer *t, const cJSON *n) {
  const char *type = jstr(n, "type");
  if (!type) return fail(L, MFS_EFORMAT, "normalizer without a \"type\"");
  if (!strcmp(type, "Sequence")) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *c;
    if (!cJSON_IsArray(arr)) return fail(L, MFS_EFORMAT, "normalizer Sequence without \"normalizers\"");
    cJSON_ArrayForEach(c, arr) {
      int rc = add_norm(L, t, c);
      if (rc) return rc;
    }
    return 0;
  }
  tok_norm nm = {0};
  if (!strcmp(type, "NFC")) {
    nm.kind = NORM_NFC;
  } else if (!strcmp(type, "Prepend")) {
    const char *p = jstr(n, "prepend");
    if (!p) return fail(L, MFS_EFORMAT, "normalizer Prepend without \"prepend\"");
    nm.kind = NORM_PREPEND;
    nm.a = strdup(p);
    nm.alen = strlen(p);
  } else if (!strcmp(type, "Replace")) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
    const char *s = jstr(pat, "String"), *content = jstr(n, "content");
    if (!s || !*s || !content)
      return fail(L, MFS_EUNSUPPORTED, "normalizer Replace: only a non-empty {\"String\": ...} pattern is supported");
    nm.kind = NORM_REPLACE;
    nm.a = strdup(s);
    nm.alen = strlen(s);
    nm.b = strdup(content);
    nm.blen = strlen(content);
  } else {
    return fail(L, MFS_EUNSUPPORTED, "normalizer type \"%s\" is not supported (supported: NFC, Prepend, Replace, Sequence)", type);
  }
  if ((nm.kind != NORM_NFC && !nm.a) || (nm.kind == NORM_REPLACE && !nm.b)) {
    free(nm.a);
    free(nm.b);
    return MFS_ENOMEM;
  }
  tok_norm *nn = realloc(t->norms, (size_t)(t->nnorms + 1) * sizeof *nn);
  if (!nn) {
    free(nm.a);
    free(nm.b);
    return MFS_ENOMEM;
  }
  t->norms = nn;
  t->norms[t->nnorms++] = nm;
  return 0;
}

/* ---- pre-tokenizer ---- */

static int add_pre(loader *L, tok_tokenizer *t, const cJSON *p) {
  const char *type = jstr(p, "type");
  if (!type) return fail(L, MFS_EFORMAT, "pre_tokenizer without a \"type\"");
  if (!strcmp(type, "Sequence")) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"), *c;
    if (!cJSON_IsArray(arr)) return fail(L, MFS_EFORMAT, "pre_tokenizer Sequence without \"pretokenizers\"");
    cJSON_ArrayForEach(c, arr) {
      int rc = add_pre(L, t, c);
      if (rc) return rc;
    }
    return 0;
  }
  tok_pre pr = {0};
  int rc;
  if (!strcmp(type, "ByteLevel")) {
    pr.kind = PRE_BYTELEVEL;
    pr.add_prefix_space = jbool(p, "add_prefix_space", 1);
    if (jbool(p, "use_regex", 1) &&
        (rc = compile_re(L, "pre_tokenizer ByteLevel", GPT2_PATTERN, strlen(GPT2_PATTERN), 0, &pr.re)))
      return rc;
    pr.behavior = SPLIT_ISOLATED;
    t->byte_level = 1;
  } else if (!strcmp(type, "Split")) {
    pr.kind = PRE_SPLIT;
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
    const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
    const char *beh = jstr(p, "behavior");
    if (!re && !lit) return fail(L, MFS_EFORMAT, "pre_tokenizer Split: \"pattern\" needs \"Regex\" or \"String\"");
    if (!beh) return fail(L, MFS_EFORMAT, "pre_tokenizer Split without \"behavior\"");
    if (!strcmp(beh, "Removed")) pr.behavior = SPLIT_REMOVED;
    else if (!strcmp(beh, "Isolated")) pr.behavior = SPLIT_ISOLATED;
    else if (!strcmp(beh, "MergedWithPrevious")) pr.behavior = SPLIT_PREV;
    else if (!strcmp(beh, "MergedWithNext")) pr.behavior = SPLIT_NEXT;
    else if (!strcmp(beh, "Contiguous")) pr.behavior = SPLIT_CONTIGUOUS;
    else return fail(L, MFS_EUNSUPPORTED, "pre_tokenizer Split: behavior \"%s\" is not supported", beh);
    pr.invert = jbool(p, "invert", 0);
    if (lit && !*lit) return fail(L, MFS_EUNSUPPORTED, "pre_tokenizer Split: empty String pattern");
    if ((rc = compile_re(L, "pre_tokenizer Split", re ? re : lit, strlen(re ? re : lit), !re, &pr.re)))
      return rc;
  } else if (!strcmp(type, "Digits")) {
    pr.kind = PRE_DIGITS;
    pr.individual = jbool(p, "individual_digits", 0);
  } else {
    return fail(L, MFS_EUNSUPPORTED, "pre_tokenizer type \"%s\" is not supported (supported: ByteLevel, Split, Digits, Sequence)", type);
  }
  tok_pre *np = realloc(t->pres, (size_t)(t->npres + 1) * sizeof *np);
  if (!np) {
    if (pr.re) pcre2_code_free(pr.re);
    return MFS_ENOMEM;
  }
  t->pres = np;
  t->pres[t->npres++] = pr;
  return 0;
}

/* ---- decoder: per-token steps baked into id_dec; stream-level strip ---- */

typedef enum { DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_STRIP } dec_kind;
typedef struct dec_step {
  dec_kind kind;
  const char *a, *b; /* replace a -> b; strip content (point into the JSON) */
  int start, stop;
} dec_step;

typedef struct dec_plan {
  dec_step steps[16];
  int n;
  int fused;
} dec_plan;

static int add_dec(loader *L, tok_tokenizer *t, dec_plan *d, const cJSON *j) {
  const char *type = jstr(j, "type");
  if (!type) return fail(L, MFS_EFORMAT, "decoder without a \"type\"");
  if (!strcmp(type, "Sequence")) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "decoders"), *c;
    if (!cJSON_IsArray(arr)) return fail(L, MFS_EFORMAT, "decoder Sequence without \"decoders\"");
    cJSON_ArrayForEach(c, arr) {
      int rc = add_dec(L, t, d, c);
      if (rc) return rc;
    }
    return 0;
  }
  if (!strcmp(type, "Fuse")) {
    d->fused = 1;
    return 0;
  }
  if (d->n == 16) return fail(L, MFS_EUNSUPPORTED, "decoder: more than 16 steps");
  dec_step st = {0};
  if (!strcmp(type, "ByteLevel")) {
    st.kind = DEC_BYTELEVEL;
  } else if (!strcmp(type, "ByteFallback")) {
    st.kind = DEC_BYTEFALLBACK;
  } else if (!strcmp(type, "Replace")) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
    st.kind = DEC_REPLACE;
    st.a = jstr(pat, "String");
    st.b = jstr(j, "content");
    if (!st.a || !*st.a || !st.b)
      return fail(L, MFS_EUNSUPPORTED, "decoder Replace: only a non-empty {\"String\": ...} pattern is supported");
  } else if (!strcmp(type, "Strip")) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "start"), *e = cJSON_GetObjectItemCaseSensitive(j, "stop");
    st.kind = DEC_STRIP;
    st.a = jstr(j, "content");
    st.start = cJSON_IsNumber(s) ? s->valueint : 0;
    st.stop = cJSON_IsNumber(e) ? e->valueint : 0;
    if (!st.a || strlen(st.a) >= sizeof t->dec_strip_char || st.start < 0 || st.stop < 0)
      return fail(L, MFS_EFORMAT, "decoder Strip: bad \"content\"/\"start\"/\"stop\"");
    if (d->fused) { /* acts on the whole text: the stream strips its start */
      if (st.stop)
        return fail(L, MFS_EUNSUPPORTED, "decoder Strip after Fuse with stop > 0 is not supported");
      t->dec_strip_start = st.start;
      strcpy(t->dec_strip_char, st.a);
      t->dec_strip_len = strlen(st.a);
      return 0;
    }
  } else {
    return fail(L, MFS_EUNSUPPORTED, "decoder type \"%s\" is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Sequence)", type);
  }
  d->steps[d->n++] = st;
  return 0;
}

/* Applies the per-token steps to one token string. buf has room for cap
 * bytes; returns the length (or a larger number: the room needed). */
static size_t dec_token(const dec_plan *d, const char *tok, size_t len, char *buf, char *tmp, size_t cap) {
  if (len > cap) return len * 4 + 64;
  memcpy(buf, tok, len);
  for (int i = 0; i < d->n; i++) {
    const dec_step *st = &d->steps[i];
    switch (st->kind) {
    case DEC_BYTELEVEL: {
      long k = bytelevel_decode(buf, len, tmp);
      if (k >= 0) { /* else HF keeps the token's own bytes */
        memcpy(buf, tmp, (size_t)k);
        len = (size_t)k;
      }
      break;
    }
    case DEC_BYTEFALLBACK: {
      unsigned v;
      char c;
      if (len == 6 && !memcmp(buf, "<0x", 3) && buf[5] == '>') {
        char hex[3] = {buf[3], buf[4], 0};
        if (sscanf(hex, "%2x%c", &v, &c) == 1) {
          buf[0] = (char)v;
          len = 1;
        }
      }
      break;
    }
    case DEC_REPLACE: {
      size_t al = strlen(st->a), bl = strlen(st->b), k = 0;
      for (size_t p = 0; p < len;) {
        if (p + al <= len && !memcmp(buf + p, st->a, al)) {
          if (k + bl > cap) return len * 4 + bl * len + 64;
          memcpy(tmp + k, st->b, bl);
          k += bl;
          p += al;
        } else {
          if (k + 1 > cap) return len * 4 + bl * len + 64;
          tmp[k++] = buf[p++];
        }
      }
      memcpy(buf, tmp, k);
      len = k;
      break;
    }
    case DEC_STRIP: {
      size_t cl = strlen(st->a), s = 0, e = len;
      for (int j = 0; j < st->start && s + cl <= e && !memcmp(buf + s, st->a, cl); j++) s += cl;
      for (int j = 0; j < st->stop && e >= s + cl && !memcmp(buf + e - cl, st->a, cl); j++) e -= cl;
      memmove(buf, buf + s, e - s);
      len = e - s;
      break;
    }
    }
  }
  return len;
}

/* ---- model ---- */

/* Converts a vocab string into the unit alphabet (raw bytes when byte
 * level). Returns the length written into out, or -1. */
static long unit_key(const tok_tokenizer *t, const char *s, size_t len, char *out) {
  if (t->byte_level) return bytelevel_decode(s, len, out);
  memcpy(out, s, len);
  return (long)len;
}

/* The vocab and merges members come as spans of the file's text (end 0:
 * absent or not an object / array, which cJSON's view of model tells
 * apart); see tok_json.c for why they skip cJSON. */
typedef struct big_members {
  const char *text;
  tok_json_span vocab, merges;
} big_members;

typedef struct vocab_entry {
  uint32_t len; /* decoded length; the string itself is the next one in str_pool */
  int32_t id;
} vocab_entry;

/* Reads model.vocab ({"token": id, ...}) into t->str_pool, one
 * NUL-terminated string after another, and their ids and lengths into
 * *out (malloc'd). The pool has room for every string: a decoded string
 * and its NUL never outgrow the quoted text. */
static int read_vocab(loader *L, tok_tokenizer *t, const big_members *bm, vocab_entry **out, size_t *n,
                      int32_t *maxid) {
  tok_json j = {bm->text, bm->vocab.end, bm->vocab.start, NULL, 0};
  size_t cap = (bm->vocab.end - bm->vocab.start) / 16 + 16, k = 0;
  vocab_entry *e = malloc(cap * sizeof *e);
  char *sp = t->str_pool;
  int first = 1, r;
  if (!e) return MFS_ENOMEM;
  tok_json_expect(&j, '{'); /* the span starts with it */
  while ((r = tok_json_next(&j, '}', &first)) > 0) {
    size_t len;
    int64_t id;
    if (tok_json_string(&j, sp, SIZE_MAX, &len) || tok_json_expect(&j, ':')) break;
    sp[len] = 0;
    if (tok_json_int(&j, 0, 16777216, &id)) {
      free(e);
      return fail(L, MFS_EFORMAT, "model.vocab: id of \"%.60s\" is not an id", sp);
    }
    if (k == cap) {
      vocab_entry *ne = realloc(e, (cap *= 2) * sizeof *e);
      if (!ne) {
        free(e);
        return MFS_ENOMEM;
      }
      e = ne;
    }
    e[k++] = (vocab_entry){(uint32_t)len, (int32_t)id};
    if ((int32_t)id > *maxid) *maxid = (int32_t)id;
    sp += len + 1;
  }
  if (j.err) { /* cannot happen: tok_json_find_model checked the syntax */
    free(e);
    return fail(L, MFS_EFORMAT, "model.vocab: %s at byte %zu", j.err, j.err_at);
  }
  *out = e;
  *n = k;
  return 0;
}

/* One merge's two halves in the unit alphabet, looked up: 0 and the ids of
 * a, b and a+b, or 1 when a half is too long or not a token (HF refuses
 * such files; leaving the merge out is safe). */
static int merge_ids(const tok_tokenizer *t, const char *a, size_t al, const char *b, size_t bl,
                     int32_t ids[3]) {
  char kab[8192];
  if (al >= 4096 || bl >= 4096) return 1;
  long la = unit_key(t, a, al, kab), lb = la > 0 ? unit_key(t, b, bl, kab + la) : -1;
  if (la <= 0 || lb <= 0) return 1;
  ids[0] = tok_smap_get(&t->enc, kab, (size_t)la);
  ids[1] = tok_smap_get(&t->enc, kab + la, (size_t)lb);
  ids[2] = tok_smap_get(&t->enc, kab, (size_t)(la + lb));
  return ids[0] < 0 || ids[1] < 0 || ids[2] < 0;
}

/* Reads model.merges ("a b" or ["a", "b"] each, rank = position) into
 * t->merges, sized once for the merges that resolve to tokens. */
static int read_merges(loader *L, tok_tokenizer *t, const big_members *bm) {
  tok_json j = {bm->text, bm->merges.end, bm->merges.start, NULL, 0};
  size_t cap = 1024, n = 0;
  tok_merge_slot *m = malloc(cap * sizeof *m); /* key, rank and id of each, before the map exists */
  char a[8192], b[4096];
  const char *bp;
  int first = 1, r, rc = 0;
  int32_t rank = 0;
  if (!m) return MFS_ENOMEM;
  tok_json_expect(&j, '['); /* the span starts with it */
  for (; (r = tok_json_next(&j, ']', &first)) > 0; rank++) {
    size_t al, bl;
    int c = tok_json_peek(&j), more = 1;
    if (c == '"') {
      size_t at = j.i;
      if (tok_json_string(&j, a, sizeof a, &al)) break;
      const char *space = memchr(a, ' ', al < sizeof a ? al : sizeof a);
      if (!space && al > sizeof a) { /* only partly decoded: is there a space further on? */
        char *whole = malloc(al);
        if (!whole) {
          rc = MFS_ENOMEM;
          break;
        }
        j.i = at;
        tok_json_string(&j, whole, al, NULL);
        int spaced = memchr(whole, ' ', al) != NULL;
        free(whole);
        if (spaced) continue; /* a half of 4 KiB or more: no such token */
      }
      if (!space) {
        rc = fail(L, MFS_EFORMAT, "model.merges[%d] \"%.*s\" is not \"a b\"", rank, (int)(al < 60 ? al : 60), a);
        break;
      }
      bl = al - (size_t)(space + 1 - a);
      al = (size_t)(space - a);
      if (al + 1 + bl > sizeof a) continue; /* b only partly decoded: 4 KiB or more */
      bp = space + 1;
    } else if (c == '[') {
      j.i++;
      int ok = tok_json_next(&j, ']', &more) > 0 && tok_json_peek(&j) == '"' &&
               !tok_json_string(&j, a, sizeof b, &al) && tok_json_next(&j, ']', &more) > 0 &&
               tok_json_peek(&j) == '"' && !tok_json_string(&j, b, sizeof b, &bl) &&
               tok_json_next(&j, ']', &more) == 0;
      if (!ok) {
        rc = fail(L, MFS_EFORMAT, "model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", rank);
        break;
      }
      bp = b;
    } else {
      rc = fail(L, MFS_EFORMAT, "model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", rank);
      break;
    }
    int32_t ids[3];
    if (merge_ids(t, a, al, bp, bl, ids)) continue;
    if (n == cap) {
      tok_merge_slot *nm = realloc(m, (cap *= 2) * sizeof *m);
      if (!nm) {
        rc = MFS_ENOMEM;
        break;
      }
      m = nm;
    }
    m[n++] = (tok_merge_slot){(uint64_t)(uint32_t)ids[0] << 32 | (uint32_t)ids[1], rank, ids[2]};
  }
  if (!rc && j.err) rc = fail(L, MFS_EFORMAT, "model.merges: %s at byte %zu", j.err, j.err_at);
  if (!rc) rc = tok_mmap_init(&t->merges, n);
  for (size_t i = 0; !rc && i < n; i++)
    tok_mmap_put(&t->merges, (int32_t)(m[i].key >> 32), (int32_t)(uint32_t)m[i].key, m[i].rank, m[i].id);
  free(m);
  return rc;
}

static int load_model(loader *L, tok_tokenizer *t, const cJSON *model, const cJSON *added,
                      const big_members *bm) {
  const char *type = jstr(model, "type");
  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
  if (!type && merges) type = "BPE"; /* files older than the "type" field */
  if (!type) return fail(L, MFS_EFORMAT, "model without a \"type\"");
  if (strcmp(type, "BPE"))
    return fail(L, MFS_EUNSUPPORTED, "model type \"%s\" is not supported (only BPE)", type);
  if (!cJSON_IsObject(vocab) || !bm->vocab.end) return fail(L, MFS_EFORMAT, "model.vocab is not an object");
  if (!is_null(merges) && !cJSON_IsArray(merges)) return fail(L, MFS_EFORMAT, "model.merges is not an array");
  const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
  if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0.0 && dropout->valuedouble != 1.0)
    return fail(L, MFS_EUNSUPPORTED, "model.dropout %g is not supported", dropout->valuedouble);
  const char *csp = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
  if ((csp && *csp) || (eow && *eow))
    return fail(L, MFS_EUNSUPPORTED, "model.%s is not supported", csp && *csp ? "continuing_subword_prefix" : "end_of_word_suffix");
  t->byte_fallback = jbool(model, "byte_fallback", 0);
  t->ignore_merges = jbool(model, "ignore_merges", 0);
  t->fuse_unk = jbool(model, "fuse_unk", 0);

  /* sizes: the vocab's text bounds its strings; added tokens come on top */
  int32_t maxid = -1;
  size_t nvocab = 0, nadded = 0, pool = bm->vocab.end - bm->vocab.start;
  const cJSON *c;
  cJSON_ArrayForEach(c, added) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
    const char *content = jstr(c, "content");
    if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 16777216.0 || !content || !*content)
      return fail(L, MFS_EFORMAT, "added_tokens: entry without a valid \"id\" and \"content\"");
    if (id->valueint > maxid) maxid = id->valueint;
    pool += strlen(content) + 1;
    nadded++;
  }
  t->str_pool = malloc(pool + 1);
  t->enc_pool = malloc(pool + 1);
  if (!t->str_pool || !t->enc_pool) return MFS_ENOMEM;
  vocab_entry *ve = NULL;
  int rc = read_vocab(L, t, bm, &ve, &nvocab, &maxid);
  if (rc) return rc;
  if (maxid < 0) {
    free(ve);
    return fail(L, MFS_EFORMAT, "model.vocab is empty");
  }
  t->vocab_size = maxid + 1;
  size_t V = (size_t)t->vocab_size;
  t->id_str = calloc(V, sizeof *t->id_str);
  t->id_strlen = calloc(V, sizeof *t->id_strlen);
  t->id_dec = calloc(V, sizeof *t->id_dec);
  t->id_declen = calloc(V, sizeof *t->id_declen);
  t->id_flags = calloc(V, 1);
  if (!t->id_str || !t->id_strlen || !t->id_dec || !t->id_declen || !t->id_flags ||
      (rc = tok_smap_init(&t->strs, nvocab + nadded)) || (rc = tok_smap_init(&t->enc, nvocab))) {
    free(ve);
    return rc ? rc : MFS_ENOMEM;
  }
  char *sp = t->str_pool, *ep = t->enc_pool;
  for (size_t i = 0; i < nvocab; i++) {
    size_t len = ve[i].len;
    int32_t id = ve[i].id;
    t->id_str[id] = sp;
    t->id_strlen[id] = (uint32_t)len;
    t->id_flags[id] |= 4;
    tok_smap_put(&t->strs, sp, len, id);
    long k = unit_key(t, sp, len, ep);
    if (k > 0) {
      tok_smap_put(&t->enc, ep, (size_t)k, id);
      ep += k;
    }
    sp += len + 1;
  }
  free(ve);
  /* added tokens */
  t->added = calloc(nadded ? nadded : 1, sizeof *t->added);
  if (!t->added) return MFS_ENOMEM;
  cJSON_ArrayForEach(c, added) {
    const char *content = jstr(c, "content");
    int32_t id = cJSON_GetObjectItemCaseSensitive(c, "id")->valueint;
    tok_added *a = &t->added[t->nadded++];
    if (!(a->content = malloc(strlen(content) + 1))) return MFS_ENOMEM;
    size_t len = unnul(content, strlen(content), a->content);
    a->content[len] = 0;
    content = a->content;
    a->len = len;
    a->id = id;
    a->special = jbool(c, "special", 0);
    a->lstrip = jbool(c, "lstrip", 0);
    a->rstrip = jbool(c, "rstrip", 0);
    a->single_word = jbool(c, "single_word", 0);
    if (!t->id_str[id]) {
      memcpy(sp, content, len + 1);
      t->id_str[id] = sp;
      t->id_strlen[id] = (uint32_t)len;
      sp += len + 1;
    }
    t->id_flags[id] |= 4 | 2 | (a->special ? 1 : 0);
    tok_smap_put(&t->strs, content, len, id);
  }

  /* unk, byte fallback, single units */
  const char *unk = jstr(model, "unk_token");
  t->unk_id = unk ? tok_smap_get(&t->strs, unk, strlen(unk)) : -1;
  for (int b = 0; b < 256; b++) {
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    t->byte_ids[b] = t->byte_fallback ? tok_smap_get(&t->strs, name, 6) : -1;
    char u = (char)b;
    t->unit_ids[b] = tok_smap_get(&t->enc, &u, 1);
  }

  /* where sentencepiece-style text may be cut (see tok_internal.h) */
  t->meta_split = !t->byte_level && !t->ignore_merges && tok_smap_get(&t->enc, "\xE2\x96\x81", 3) >= 0;
  for (size_t i = 0; t->meta_split && i < t->enc.cap; i++) {
    if (t->enc.slots[i].val < 0) continue;
    const char *k = t->enc.slots[i].key;
    size_t kl = t->enc.slots[i].len;
    for (size_t p = 1; p + 3 <= kl && t->meta_split; p++) {
      if (memcmp(k + p, "\xE2\x96\x81", 3)) continue;
      size_t q = p - 1;
      while (q > 0 && ((unsigned char)k[q] & 0xC0) == 0x80) q--;
      size_t cl = p - q;
      if (cl > 4 || (cl == 3 && !memcmp(k + q, "\xE2\x96\x81", 3))) continue;
      int seen = 0;
      for (int m = 0; m < t->nmeta_left && !seen; m++)
        seen = !memcmp(t->meta_left[m], k + q, cl) && (cl == 4 || !t->meta_left[m][cl]);
      if (seen) continue;
      if (t->nmeta_left == 32) t->meta_split = 0; /* too many: do not cut at all */
      else {
        memset(t->meta_left[t->nmeta_left], 0, 4);
        memcpy(t->meta_left[t->nmeta_left++], k + q, cl);
      }
    }
  }

  return bm->merges.end ? read_merges(L, t, bm) : tok_mmap_init(&t->merges, 0);
}

static int cmp_added(const void *x, const void *y) {
  const tok_added *a = x, *b = y;
  if (a->len != b->len) return a->len > b->len ? -1 : 1;
  return a->id - b->id;
}

static int index_added(tok_tokenizer *t) {
  qsort(t->added, (size_t)t->nadded, sizeof *t->added, cmp_added);
  int count[256] = {0};
  for (int i = 0; i < t->nadded; i++) count[(unsigned char)t->added[i].content[0]]++;
  for (int b = 0; b < 256; b++) {
    if (!count[b]) continue;
    t->added_first[b] = malloc((size_t)(count[b] + 1) * sizeof(int16_t));
    if (!t->added_first[b]) return MFS_ENOMEM;
    int k = 0;
    for (int i = 0; i < t->nadded && i < 32767; i++)
      if ((unsigned char)t->added[i].content[0] == b) t->added_first[b][k++] = (int16_t)i;
    t->added_first[b][k] = -1;
  }
  return 0;
}

static int build_decoded(tok_tokenizer *t, const dec_plan *d) {
  size_t total = 0, cap = 256;
  for (int32_t i = 0; i < t->vocab_size; i++)
    if (t->id_str[i]) {
      size_t l = t->id_strlen[i];
      total += l * 4 + 1;
      if (l * 4 + 64 > cap) cap = l * 4 + 64;
    }
  char *buf = malloc(cap), *tmp = malloc(cap);
  char *pool = malloc(total + 1);
  if (!buf || !tmp || !pool) {
    free(buf);
    free(tmp);
    free(pool);
    return MFS_ENOMEM;
  }
  char *p = pool;
  for (int32_t i = 0; i < t->vocab_size; i++) {
    if (!t->id_str[i]) continue;
    size_t l = dec_token(d, t->id_str[i], t->id_strlen[i], buf, tmp, cap);
    if (l > cap) l = 0; /* cannot happen: cap is 4x the longest token */
    memcpy(p, buf, l);
    p[l] = 0;
    t->id_dec[i] = p;
    t->id_declen[i] = (uint32_t)l;
    if (l > t->max_declen) t->max_declen = (uint32_t)l;
    p += l + 1;
  }
  free(buf);
  free(tmp);
  t->dec_pool = pool;
  return 0;
}

static int load_config(loader *L, tok_tokenizer *t, const char *path) {
  char *buf;
  size_t len;
  int rc = read_file(path, &buf, &len);
  if (rc == MFS_EIO) return 0; /* optional */
  if (rc) return rc;
  L->file = path;
  cJSON *j = cJSON_ParseWithLength(buf, len);
  free(buf);
  if (!j) return fail(L, MFS_EFORMAT, "not valid JSON");
  const char *keys[2] = {"bos_token", "eos_token"};
  int32_t *dst[2] = {&t->bos, &t->eos};
  for (int i = 0; i < 2; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
    const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
    if (!s) continue;
    int32_t id = tok_smap_get(&t->strs, s, strlen(s));
    if (id < 0) {
      int rc2 = fail(L, MFS_EFORMAT, "%s \"%.60s\" is not a token of tokenizer.json", keys[i], s);
      cJSON_Delete(j);
      return rc2;
    }
    *dst[i] = id;
  }
  const cJSON *ab = cJSON_GetObjectItemCaseSensitive(j, "add_bos_token");
  if (cJSON_IsBool(ab)) t->add_bos = cJSON_IsTrue(ab);
  cJSON_Delete(j);
  return 0;
}

/* Parses tokenizer.json's text: model.vocab and model.merges are only
 * located (bm; tok_json.c), and cJSON parses the rest, with {} and [] in
 * their place. On success *out is the tree (cJSON_Delete). */
static int parse_file(loader *L, const char *buf, size_t len, big_members *bm, cJSON **out) {
  tok_json j;
  if (tok_json_find_model(buf, len, &bm->vocab, &bm->merges, &j))
    return fail(L, MFS_EFORMAT, "not valid JSON: %s at byte %zu", j.err, j.err_at);
  const tok_json_span *cut[2] = {&bm->vocab, &bm->merges};
  if (bm->merges.end && bm->merges.start < bm->vocab.start) cut[0] = &bm->merges, cut[1] = &bm->vocab;
  char *rest = malloc(len + 5), *q = rest;
  if (!rest) return fail(L, MFS_ENOMEM, "out of memory");
  size_t at = 0;
  for (int k = 0; k < 2; k++) {
    if (!cut[k]->end) continue;
    memcpy(q, buf + at, cut[k]->start - at);
    q += cut[k]->start - at;
    memcpy(q, cut[k] == &bm->vocab ? "{}" : "[]", 2);
    q += 2;
    at = cut[k]->end;
  }
  memcpy(q, buf + at, len - at);
  q += len - at;
  *q = 0;
  size_t flen;
  char *fixed = nul_escapes(rest, (size_t)(q - rest), &flen);
  *out = fixed ? cJSON_ParseWithLength(fixed, flen) : NULL;
  if (fixed != rest) free(fixed);
  free(rest);
  if (!fixed) return fail(L, MFS_ENOMEM, "out of memory");
  if (!*out) return fail(L, MFS_EFORMAT, "not valid JSON");
  return 0;
}

int tok_new_files(const char *tokenizer_json, const char *config_json, tok_tokenizer **out,
                  char *err, size_t errlen) {
  loader L = {tokenizer_json, err, errlen};
  if (err && errlen) err[0] = 0;
  if (!out || !tokenizer_json) return MFS_EINVAL;
  *out = NULL;
  bytelevel_table();
  file_text ft = {NULL, 0, 0};
  int rc = text_open(tokenizer_json, &ft);
  if (rc) return fail(&L, rc, "cannot read: %s", rc == MFS_EIO ? "no such file or unreadable" : mfs_strerror(rc));
  big_members bm = {ft.p, {0, 0}, {0, 0}};
  cJSON *j = NULL;
  if ((rc = parse_file(&L, ft.p, ft.len, &bm, &j))) {
    text_close(&ft);
    return rc;
  }
  tok_tokenizer *t = calloc(1, sizeof *t);
  if (!t) {
    cJSON_Delete(j);
    text_close(&ft);
    return MFS_ENOMEM;
  }
  t->bos = t->eos = t->unk_id = -1;
  t->add_bos = -1;
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
  const cJSON *norm = cJSON_GetObjectItemCaseSensitive(j, "normalizer");
  const cJSON *pre = cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer");
  const cJSON *dec = cJSON_GetObjectItemCaseSensitive(j, "decoder");
  const cJSON *post = cJSON_GetObjectItemCaseSensitive(j, "post_processor");
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
  dec_plan plan = {0};
  if (!cJSON_IsObject(model)) {
    rc = fail(&L, MFS_EFORMAT, "no \"model\" object");
    goto out;
  }
  if (!is_null(added) && !cJSON_IsArray(added)) {
    rc = fail(&L, MFS_EFORMAT, "\"added_tokens\" is not an array");
    goto out;
  }
  if (!is_null(norm) && (rc = add_norm(&L, t, norm))) goto out;
  if (!is_null(pre) && (rc = add_pre(&L, t, pre))) goto out;
  rc = load_model(&L, t, model, is_null(added) ? NULL : added, &bm);
  text_close(&ft); /* nothing points into it */
  if (rc) goto out;
  if ((rc = index_added(t))) goto out;
  if (is_null(dec)) t->dec_join_space = 1;
  else if ((rc = add_dec(&L, t, &plan, dec))) goto out;
  if ((rc = build_decoded(t, &plan))) goto out;
  if (config_json && (rc = load_config(&L, t, config_json))) goto out;
  if (t->add_bos < 0) { /* no add_bos_token: does the template start with BOS? */
    t->add_bos = 0;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(post, "single");
    const cJSON *first = cJSON_IsArray(single) ? single->child : NULL;
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    const char *sid = jstr(sp, "id");
    if (sid && t->bos >= 0 && !strcmp(sid, t->id_str[t->bos])) t->add_bos = 1;
  }
  rc = 0;
out:
  cJSON_Delete(j);
  text_close(&ft);
  if (rc) {
    if (rc == MFS_ENOMEM && err && errlen && !err[0]) fail(&L, rc, "out of memory");
    tok_free(t);
    return rc;
  }
  *out = t;
  return 0;
}

int tok_new(const char *model_dir, tok_tokenizer **out, char *err, size_t errlen) {
  if (!model_dir || !out) return MFS_EINVAL;
  size_t n = strlen(model_dir) + 32;
  char *a = malloc(n), *b = malloc(n);
  if (!a || !b) {
    free(a);
    free(b);
    return MFS_ENOMEM;
  }
  snprintf(a, n, "%s/tokenizer.json", model_dir);
  snprintf(b, n, "%s/tokenizer_config.json", model_dir);
  int rc = tok_new_files(a, b, out, err, errlen);
  free(a);
  free(b);
  return rc;
}

void tok_free(tok_tokenizer *t) {
  if (!t) return;
  free(t->id_str);
  free(t->id_strlen);
  free(t->id_dec);
  free(t->id_declen);
  free(t->id_flags);
  free(t->dec_pool);
  tok_smap_free(&t->enc);
  tok_smap_free(&t->strs);
  tok_mmap_free(&t->merges);
  free(t->enc_pool);
  free(t->str_pool);
  for (int i = 0; i < t->nnorms; i++) {
    free(t->norms[i].a);
    free(t->norms[i].b);
  }
  free(t->norms);
  for (int i = 0; i < t->npres; i++)
    if (t->pres[i].re) pcre2_code_free(t->pres[i].re);
  free(t->pres);
  for (int i = 0; i < t->nadded; i++) free(t->added[i].content);
  free(t->added);
  for (int b = 0; b < 256; b++) free(t->added_first[b]);
  free(t);
}

int32_t tok_vocab_size(const tok_tokenizer *t) { return t ? t->vocab_size : 0; }
const char *tok_token_str(const tok_tokenizer *t, int32_t id) {
  return t && id >= 0 && id < t->vocab_size ? t->id_str[id] : NULL;
}
int32_t tok_token_id(const tok_tokenizer *t, const char *s) {
  return t && s ? tok_smap_get(&t->strs, s, strlen(s)) : -1;
}
int32_t tok_bos(const tok_tokenizer *t) { return t ? t->bos : -1; }
int32_t tok_eos(const tok_tokenizer *t) { return t ? t->eos : -1; }
int tok_add_bos_default(const tok_tokenizer *t) { return t && t->add_bos > 0 && t->bos >= 0; }
int tok_is_special(const tok_tokenizer *t, int32_t id) {
  return t && id >= 0 && id < t->vocab_size && (t->id_flags[id] & 1);
}
