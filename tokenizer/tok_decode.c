/* tok_decode.c: ids -> UTF-8, whole or streamed. Each id's bytes were
 * computed at load (decoder steps applied per token); what remains is
 * stream-level: the " " join when the file has no decoder, a Strip after
 * Fuse (drops leading characters of the whole text), and turning the byte
 * stream into valid UTF-8. Both paths run the same `feed` on the same
 * state, so a stream's concatenated output equals tok_decode by
 * construction: an unfinished character is held back (at most 3 bytes), an
 * invalid sequence becomes U+FFFD as soon as it is known to be invalid. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "tok_internal.h"

struct tok_stream {
  const tok_tokenizer *t;
  unsigned flags;
  int started;       /* a token was emitted (for the " " join) */
  int strip_left;    /* leading strip characters still to drop */
  unsigned char pend[4];
  size_t npend;
  char *out;         /* [cap] output of the last call */
  size_t cap;
};

static void state_reset(tok_stream *s) {
  s->started = 0;
  s->strip_left = s->t->dec_strip_start;
  s->npend = 0;
}

/* Appends b[0..n) to the UTF-8 assembler, writing final bytes at out.
 * Returns bytes written (at most 3 * (n + 3)). */
static size_t utf8_push(tok_stream *s, const char *b, size_t n, char *out) {
  size_t k = 0, i = 0;
  while (i < n || s->npend) {
    if (s->npend) { /* complete a held-back prefix one byte at a time */
      if (i >= n) break;
      s->pend[s->npend++] = (unsigned char)b[i++];
      size_t bad;
      int c = tok_utf8_char(s->pend, s->npend, &bad);
      if (c > 0) {
        memcpy(out + k, s->pend, (size_t)c);
        k += (size_t)c;
        s->npend = 0;
      } else if (c == 0) { /* invalid: replace the maximal subpart, rescan the rest */
        memcpy(out + k, "\xEF\xBF\xBD", 3);
        k += 3;
        size_t rest = s->npend - bad;
        unsigned char tmp[4];
        memcpy(tmp, s->pend + bad, rest);
        s->npend = 0;
        k += utf8_push(s, (const char *)tmp, rest, out + k);
      }
      continue;
    }
    unsigned char c0 = (unsigned char)b[i];
    if (c0 < 0x80) {
      out[k++] = (char)c0;
      i++;
      continue;
    }
    size_t bad;
    int c = tok_utf8_char((const unsigned char *)b + i, n - i, &bad);
    if (c > 0) {
      memcpy(out + k, b + i, (size_t)c);
      k += (size_t)c;
      i += (size_t)c;
    } else if (c < 0) { /* unfinished at the end: hold back */
      memcpy(s->pend, b + i, n - i);
      s->npend = n - i;
      i = n;
    } else {
      memcpy(out + k, "\xEF\xBF\xBD", 3);
      k += 3;
      i += bad;
    }
  }
  return k;
}

/* One id's contribution; the id was checked. */
static size_t feed(tok_stream *s, int32_t id, char *out) {
  const tok_tokenizer *t = s->t;
  if ((s->flags & TOK_SKIP_SPECIAL) && (t->id_flags[id] & 1)) return 0;
  size_t k = 0;
  if (t->dec_join_space && s->started) k += utf8_push(s, " ", 1, out);
  s->started = 1;
  const char *b = t->id_dec[id];
  size_t n = t->id_declen[id], cl = t->dec_strip_len;
  while (s->strip_left > 0 && n) {
    if (n >= cl && !memcmp(b, t->dec_strip_char, cl)) {
      b += cl;
      n -= cl;
      s->strip_left--;
    } else {
      s->strip_left = 0;
    }
  }
  return k + utf8_push(s, b, n, out + k);
}

static size_t flush(tok_stream *s, char *out) {
  size_t k = 0;
  if (s->npend) {
    memcpy(out, "\xEF\xBF\xBD", 3);
    k = 3;
  }
  state_reset(s);
  return k;
}

static int id_ok(const tok_tokenizer *t, int32_t id) {
  return id >= 0 && id < t->vocab_size && t->id_str[id];
}

int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char **out,
               size_t *len) {
  if (out) *out = NULL;
  if (len) *len = 0;
  if (!t || !out || !len || (!ids && n)) return MFS_EINVAL;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (!id_ok(t, ids[i])) return MFS_ERANGE;
    total += t->id_declen[ids[i]] + 1;
  }
  if (total > (SIZE_MAX - 16) / 3) return MFS_ENOMEM;
  char *o = malloc(total * 3 + 16);
  if (!o) return MFS_ENOMEM;
  tok_stream s = {.t = t, .flags = flags};
  state_reset(&s);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += feed(&s, ids[i], o + k);
  k += flush(&s, o + k);
  o[k] = 0;
  *out = o;
  *len = k;
  return 0;
}

tok_stream *tok_stream_new(const tok_tokenizer *t, unsigned flags) {
  if (!t) return NULL;
  tok_stream *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->t = t;
  s->flags = flags;
  s->cap = 3 * ((size_t)t->max_declen + 8) + 16;
  s->out = malloc(s->cap);
  if (!s->out) {
    free(s);
    return NULL;
  }
  state_reset(s);
  return s;
}

int tok_stream_feed(tok_stream *s, int32_t id, const char **out, size_t *out_len) {
  if (!s || !out || !out_len) return MFS_EINVAL;
  *out = s->out;
  *out_len = 0;
  if (!id_ok(s->t, id)) return MFS_ERANGE;
  *out_len = feed(s, id, s->out);
  return 0;
}

int tok_stream_flush(tok_stream *s, const char **out, size_t *out_len) {
  if (!s || !out || !out_len) return MFS_EINVAL;
  *out = s->out;
  *out_len = flush(s, s->out);
  return 0;
}

void tok_stream_free(tok_stream *s) {
  if (!s) return;
  free(s->out);
  free(s);
}

const char *tok_token_bytes(const tok_tokenizer *t, int32_t id, size_t *len) {
  *len = 0;
  if (!t || id < 0 || id >= t->vocab_size || !(t->id_flags[id] & 4) || !t->id_dec[id]) return NULL;
  *len = t->id_declen[id];
  return t->id_dec[id];
}
