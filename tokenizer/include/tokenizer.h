/* tokenizer.h: text <-> token ids for models that ship a Hugging Face
 * tokenizer.json (BPE: GPT-2 / Llama-3 byte-level and sentencepiece-style
 * byte-fallback files).
 *
 * Contract shared by every function:
 * - Errors are negative MFS_* values (common.h); 0 is success.
 * - A loaded tok_tokenizer is immutable: any number of threads may call
 *   tok_encode / tok_decode / tok_token_str / tok_stream_* on it at once
 *   (each tok_stream belongs to one thread at a time).
 * - Input text is bytes, not necessarily valid UTF-8: invalid sequences are
 *   replaced by U+FFFD (one per maximal invalid subpart, as WHATWG
 *   TextDecoder and Python's errors="replace" do) before tokenizing. NULs
 *   are ordinary characters. Decoded output is always valid UTF-8 (invalid
 *   byte sequences produced by byte tokens become U+FFFD the same way).
 */
#ifndef MFS_TOKENIZER_H
#define MFS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok_tokenizer tok_tokenizer;
typedef struct tok_stream tok_stream;

/* Loads dir/tokenizer.json and, when present, dir/tokenizer_config.json
 * (bos_token, eos_token, add_bos_token). On failure returns MFS_EIO (file
 * unreadable), MFS_EFORMAT (bad JSON or a required field missing),
 * MFS_EUNSUPPORTED (a model/normalizer/pre-tokenizer/decoder type or option
 * this module does not implement) or MFS_ENOMEM, writes a one-line message
 * naming the file and the offending item into err (if errlen > 0) and
 * leaves *out NULL. On success *out is owned by the caller (tok_free). */
int tok_new(const char *model_dir, tok_tokenizer **out, char *err, size_t errlen);
/* Same, from an explicit tokenizer.json path and optional config path
 * (NULL: none). */
int tok_new_files(const char *tokenizer_json, const char *config_json, tok_tokenizer **out,
                  char *err, size_t errlen);
void tok_free(tok_tokenizer *t); /* NULL: no-op */

/* tok_encode flags */
#define TOK_ADD_BOS 1u       /* prepend the BOS id (ignored when there is none) */
#define TOK_PARSE_SPECIAL 2u /* special added tokens written in the text become their
                                ids; without it they are tokenized as plain text.
                                Non-special added tokens are always matched. */

/* Tokenizes len bytes of text. On success *ids (malloc'd, caller free()s;
 * never NULL, even for 0 ids) holds *n ids. On failure (MFS_EINVAL for NULL
 * arguments, MFS_ENOMEM) *ids is NULL and *n is 0. */
int tok_encode(const tok_tokenizer *t, const char *text, size_t len, unsigned flags,
               int32_t **ids, size_t *n);

/* tok_decode / tok_stream flags */
#define TOK_SKIP_SPECIAL 1u /* drop special added tokens (BOS, EOS, ...) */

/* Decodes n ids into UTF-8. On success *out (malloc'd, NUL-terminated,
 * caller free()s) holds *len bytes. An id outside [0, tok_vocab_size) or
 * with no token gives MFS_ERANGE; then *out is NULL and *len 0. */
int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char **out,
               size_t *len);

/* Incremental decoding for streaming. Feed ids one at a time; each call
 * returns the bytes that are final now (never half a UTF-8 character).
 * The concatenation of every feed's output and the flush's output equals
 * tok_decode of all the fed ids with the same flags. No allocation after
 * tok_stream_new. Returned pointers stay valid until the next call on the
 * stream. The tokenizer must outlive the stream. */
tok_stream *tok_stream_new(const tok_tokenizer *t, unsigned flags); /* NULL: out of memory */
/* MFS_ERANGE for a bad id (stream unchanged, *out_len 0). */
int tok_stream_feed(tok_stream *s, int32_t id, const char **out, size_t *out_len);
/* Emits what was held back (an incomplete character becomes U+FFFD) and
 * resets the stream to its initial state. */
int tok_stream_flush(tok_stream *s, const char **out, size_t *out_len);
void tok_stream_free(tok_stream *s); /* NULL: no-op */

/* Number of ids: 1 + the largest id in the vocab and added tokens. */
int32_t tok_vocab_size(const tok_tokenizer *t);
/* The token's string as written in tokenizer.json (e.g. "Ġthe"), or NULL
 * for an id with no token. Lives as long as t. */
const char *tok_token_str(const tok_tokenizer *t, int32_t id);
/* The raw bytes token id decodes to on its own (before any UTF-8 repair;
 * a byte-level token may hold part of a character), or NULL for an id with
 * no token. *len gets their count. Lives as long as t. */
const char *tok_token_bytes(const tok_tokenizer *t, int32_t id, size_t *len);
/* Looks up a token string exactly (vocab or added tokens); -1 if absent. */
int32_t tok_token_id(const tok_tokenizer *t, const char *str);
/* BOS/EOS ids from tokenizer_config.json (bos_token/eos_token), -1 if none. */
int32_t tok_bos(const tok_tokenizer *t);
int32_t tok_eos(const tok_tokenizer *t);
/* Whether the model expects BOS: add_bos_token from tokenizer_config.json,
 * else 1 when the post-processor template starts with the BOS token. */
int tok_add_bos_default(const tok_tokenizer *t);
/* 1 if id is a special added token (what TOK_SKIP_SPECIAL drops). */
int tok_is_special(const tok_tokenizer *t, int32_t id);

/* Any thread: the length of the longest prefix of s[0..n) that is
 * well-formed UTF-8 (Unicode's Table 3-7: no overlong forms, no surrogates,
 * nothing past U+10FFFF); n when all of it is. A sequence cut short by the
 * end is not part of it, so the result is also the offset of the first byte
 * that does not begin or continue a well-formed sequence. */
size_t tok_utf8_valid_prefix(const char *s, size_t n);

#endif
