/* fuzz_tokenizer.c: encode and decode of arbitrary bytes with three fixed
 * tokenizers (data/tok_bytelevel, tok_llama3, tok_spiece; written by
 * gen_tokenizers.py).
 *
 * Input: byte 0 picks the tokenizer (bits 0-1) and the flags (bit 2
 * TOK_ADD_BOS, bit 3 TOK_PARSE_SPECIAL, bit 4 TOK_SKIP_SPECIAL for
 * decoding); the rest is the text. The same rest, read as little-endian
 * 16-bit values, is also an id sequence for decoding (some out of range).
 *
 * Properties checked:
 *  - encode succeeds and every id is in [0, tok_vocab_size);
 *  - tok_decode output is valid UTF-8 and NUL-terminated at len;
 *  - the incremental decoder (tok_stream_feed for each id, then
 *    tok_stream_flush) concatenated equals tok_decode of the same ids, and
 *    a bad id gives MFS_ERANGE from both, leaving the stream unchanged;
 *  - byte-level tokenizer without special parsing: decode(encode(text))
 *    == text for valid UTF-8 text (the round trip is exact). */
#include <string.h>

#include "common.h"
#include "fuzz_util.h"
#include "tokenizer.h"

static tok_tokenizer *g_tok[3];
static const char *g_names[3] = {"tok_bytelevel", "tok_llama3", "tok_spiece"};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  for (int i = 0; i < 3; i++) {
    char dir[1024], err[512];
    snprintf(dir, sizeof dir, "%s/%s", fuzz_data_dir(), g_names[i]);
    if (tok_new(dir, &g_tok[i], err, sizeof err) != 0) {
      fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", dir, err);
      abort();
    }
  }
  return 0;
}

/* Decodes ids both ways and compares. Returns tok_decode's rc. */
static int decode_both(const tok_tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char **out,
                       size_t *len) {
  int rc = tok_decode(t, ids, n, flags, out, len);
  tok_stream *s = tok_stream_new(t, flags);
  FUZZ_CHECK(s != NULL, "tok_stream_new");
  /* the stream's output for the ids it accepts */
  size_t cap = 64, k = 0;
  char *acc = malloc(cap);
  int32_t *ok_ids = malloc((n ? n : 1) * sizeof *ok_ids);
  FUZZ_CHECK(acc && ok_ids, "malloc");
  size_t n_ok = 0;
  int stream_bad = 0;
  for (size_t i = 0; i <= n; i++) {
    const char *o = NULL;
    size_t ol = 0;
    int r = i < n ? tok_stream_feed(s, ids[i], &o, &ol) : tok_stream_flush(s, &o, &ol);
    if (r == MFS_ERANGE && i < n) {
      FUZZ_CHECK(ol == 0, "bad id produced output");
      stream_bad = 1;
      continue;
    }
    FUZZ_CHECK(r == 0, "stream rc %d at %zu", r, i);
    if (i < n) ok_ids[n_ok++] = ids[i];
    if (ol) {
      FUZZ_CHECK(o != NULL, "NULL output with length");
      while (k + ol + 1 > cap) acc = realloc(acc, cap *= 2);
      FUZZ_CHECK(acc, "realloc");
      memcpy(acc + k, o, ol);
      k += ol;
    }
  }
  tok_stream_free(s);
  FUZZ_CHECK(stream_bad == (rc == MFS_ERANGE), "stream and tok_decode disagree on bad ids (rc %d)", rc);
  if (rc == 0) {
    FUZZ_CHECK(*out && (*out)[*len] == 0, "output not NUL-terminated");
    FUZZ_CHECK(fuzz_utf8_valid(*out, *len), "tok_decode output is not valid UTF-8");
    FUZZ_CHECK(k == *len && memcmp(acc, *out, k) == 0,
               "incremental decode (%zu bytes) != tok_decode (%zu bytes)", k, *len);
  } else {
    FUZZ_CHECK(rc == MFS_ERANGE && *out == NULL && *len == 0, "tok_decode rc %d", rc);
    /* the ids the stream accepted must decode the same way in one call */
    char *o2;
    size_t l2;
    FUZZ_CHECK(tok_decode(t, ok_ids, n_ok, flags, &o2, &l2) == 0, "accepted ids do not decode");
    FUZZ_CHECK(l2 == k && memcmp(o2, acc, k) == 0, "incremental decode of accepted ids != tok_decode");
    free(o2);
  }
  free(acc);
  free(ok_ids);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int which = data[0] & 3;
  if (which == 3) which = 0;
  const tok_tokenizer *t = g_tok[which];
  unsigned eflags = ((data[0] & 4) ? TOK_ADD_BOS : 0) | ((data[0] & 8) ? TOK_PARSE_SPECIAL : 0);
  unsigned dflags = (data[0] & 16) ? TOK_SKIP_SPECIAL : 0;
  const char *text = (const char *)data + 1;
  size_t len = size - 1;
  int32_t vocab = tok_vocab_size(t);

  int32_t *ids;
  size_t n;
  int rc = tok_encode(t, text, len, eflags, &ids, &n);
  FUZZ_CHECK(rc == 0 && ids != NULL, "tok_encode rc %d", rc);
  for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab, "id %d out of range", ids[i]);
  char *out;
  size_t olen;
  rc = decode_both(t, ids, n, dflags, &out, &olen);
  FUZZ_CHECK(rc == 0, "decode of encoded ids: %d", rc);
  if (which == 0 && eflags == 0 && dflags == 0 && fuzz_utf8_valid(text, len))
    FUZZ_CHECK(olen == len && memcmp(out, text, len) == 0, "byte-level round trip differs (%zu -> %zu bytes)",
               len, olen);
  free(out);
  free(ids);

  /* arbitrary id sequences */
  size_t m = len / 2;
  int32_t *rid = malloc((m ? m : 1) * sizeof *rid);
  FUZZ_CHECK(rid != NULL, "malloc");
  for (size_t i = 0; i < m; i++) {
    uint16_t v = (uint16_t)(data[1 + 2 * i] | data[2 + 2 * i] << 8);
    rid[i] = (int32_t)(v % (uint32_t)(vocab + 4)) - 2; /* -2..vocab+1 */
  }
  rc = decode_both(t, rid, m, dflags, &out, &olen);
  if (rc == 0) free(out);
  free(rid);
  return 0;
}
