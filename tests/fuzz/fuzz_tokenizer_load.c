/* fuzz_tokenizer_load.c: tok_new_files on an arbitrary tokenizer.json (and,
 * when the input holds the separator line "\n--config--\n", what follows it
 * as tokenizer_config.json).
 *
 * Properties: a failure leaves *out NULL, returns one of the documented
 * errors and names the file; a loaded tokenizer encodes a fixed mix of
 * text (ASCII, UTF-8, invalid bytes, NUL, special-token spellings) into
 * in-range ids whose decode is valid UTF-8 and equals the incremental
 * decode. */
#include <string.h>

#include "common.h"
#include "fuzz_util.h"
#include "tokenizer.h"

static const char SEP[] = "\n--config--\n";
static const char PROBE[] = "Hello, world! 12345 caf\xC3\xA9 \xF0\x9F\x98\x80 \xFF\xC3 a\0b <s></s><|endoftext|> \t\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *d = (const char *)data;
  const char *sep = size >= sizeof SEP - 1 ? memmem(d, size, SEP, sizeof SEP - 1) : NULL;
  size_t tl = sep ? (size_t)(sep - d) : size;
  const char *tj = fuzz_write("tokenizer.json", d, tl);
  const char *cj = NULL;
  if (sep) cj = fuzz_write("tokenizer_config.json", sep + sizeof SEP - 1, size - tl - (sizeof SEP - 1));
  tok_tokenizer *t = (tok_tokenizer *)&t;
  char err[512] = "";
  int rc = tok_new_files(tj, cj, &t, err, sizeof err);
  if (rc != 0) {
    FUZZ_CHECK(rc == MFS_EIO || rc == MFS_EFORMAT || rc == MFS_EUNSUPPORTED || rc == MFS_ENOMEM, "rc %d", rc);
    FUZZ_CHECK(t == NULL, "*out not NULL after failure");
    FUZZ_CHECK(strstr(err, "tokenizer") != NULL, "message lacks the file: %s", err);
    return 0;
  }
  int32_t vocab = tok_vocab_size(t);
  FUZZ_CHECK(vocab >= 0, "vocab %d", vocab);
  for (unsigned flags = 0; flags < 4; flags++) {
    int32_t *ids;
    size_t n;
    rc = tok_encode(t, PROBE, sizeof PROBE - 1, flags, &ids, &n);
    FUZZ_CHECK(rc == 0 || rc == MFS_ENOMEM, "encode rc %d", rc);
    if (rc) continue;
    for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab, "id %d out of range", ids[i]);
    char *out;
    size_t len;
    rc = tok_decode(t, ids, n, flags & 1 ? TOK_SKIP_SPECIAL : 0, &out, &len);
    FUZZ_CHECK(rc == 0, "ids from tok_encode do not decode: rc %d", rc);
    {
      FUZZ_CHECK(fuzz_utf8_valid(out, len), "decode output not UTF-8");
      tok_stream *s = tok_stream_new(t, flags & 1 ? TOK_SKIP_SPECIAL : 0);
      FUZZ_CHECK(s != NULL, "stream");
      size_t k = 0;
      for (size_t i = 0; i <= n; i++) {
        const char *o;
        size_t ol;
        int r = i < n ? tok_stream_feed(s, ids[i], &o, &ol) : tok_stream_flush(s, &o, &ol);
        FUZZ_CHECK(r == 0, "stream rc %d", r);
        FUZZ_CHECK(k + ol <= len && memcmp(out + k, o, ol) == 0, "stream differs from tok_decode at %zu", k);
        k += ol;
      }
      FUZZ_CHECK(k == len, "stream gave %zu bytes, tok_decode %zu", k, len);
      tok_stream_free(s);
      free(out);
    }
    free(ids);
  }
  for (int32_t id = -1; id <= vocab && id < 4096; id++) {
    const char *s = tok_token_str(t, id);
    /* no round-trip property: a file may give one id two strings (vocab
     * and added_tokens), and a string holding U+0000 comes back cut */
    int32_t back = s ? tok_token_id(t, s) : -1;
    if (back >= 0) FUZZ_CHECK(tok_token_str(t, back) != NULL, "id %d from '%s' has no string", back, s);
  }
  tok_free(t);
  return 0;
}
