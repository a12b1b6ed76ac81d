/* cmd_tokenize.c: `mfaserve tokenize`: standard input -> token ids as a
 * JSON array (or, with --decode, ids -> text), using the model directory's
 * tokenizer.json and tokenizer_config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "tokenizer.h"

static char *read_all(FILE *f, size_t *len) {
  size_t cap = 1 << 16, n = 0, r;
  char *b = malloc(cap + 1);
  if (!b) return NULL;
  while ((r = fread(b + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      char *nb = realloc(b, (cap *= 2) + 1);
      if (!nb) {
        free(b);
        return NULL;
      }
      b = nb;
    }
  }
  b[n] = 0;
  *len = n;
  return b;
}


int cmd_tokenize(int argc, char **argv) {
  const char *model = cli_default_model(), *add_bos = "auto";
  int no_special = 0, decode = 0, skip_special = 0;
  cli_flag flags[] = {
      {"model", "MFASERVE_MODEL", CLI_STR, &model, "model directory (tokenizer.json, tokenizer_config.json)"},
      {"add-bos", NULL, CLI_STR, &add_bos, "prepend BOS: auto (the model's add_bos_token), true, false"},
      {"no-special", NULL, CLI_BOOL, &no_special, "tokenize special-token text such as <|eot_id|> as plain text"},
      {"decode", NULL, CLI_BOOL, &decode, "read ids (JSON array) and print the text instead"},
      {"skip-special", NULL, CLI_BOOL, &skip_special, "with --decode: leave special tokens out"},
  };
  int rc = cli_parse("tokenize",
                     "Reads text on standard input and prints its token ids as a JSON array\n"
                     "(with --decode: reads ids, prints the text).",
                     flags, 5, argc, argv, NULL, NULL);
  if (rc) return rc == CLI_HELP ? 0 : 2;
  if (!model) {
    fprintf(stderr, "mfaserve tokenize: pass --model DIR or set MFASERVE_MODEL\n");
    return 2;
  }
  int bos;
  if (!strcmp(add_bos, "auto")) bos = -1;
  else if (!strcmp(add_bos, "true") || !strcmp(add_bos, "1")) bos = 1;
  else if (!strcmp(add_bos, "false") || !strcmp(add_bos, "0")) bos = 0;
  else {
    fprintf(stderr, "mfaserve tokenize: --add-bos is '%s', expected auto, true or false\n", add_bos);
    return 2;
  }
  tok_tokenizer *t;
  char err[1024];
  if ((rc = tok_new(model, &t, err, sizeof err))) {
    fprintf(stderr, "mfaserve: cannot load tokenizer: %s\n", err);
    return rc == MFS_ENOMEM ? 1 : 2;
  }
  size_t len;
  char *in = read_all(stdin, &len);
  if (!in) {
    fprintf(stderr, "mfaserve tokenize: cannot read standard input\n");
    tok_free(t);
    return 1;
  }
  int status = 0;
  if (decode) {
    int32_t *ids;
    int n;
    char *out;
    size_t ol;
    if (cli_parse_ids(in, &ids, &n)) status = 2;
    else {
      rc = tok_decode(t, ids, (size_t)n, skip_special ? TOK_SKIP_SPECIAL : 0, &out, &ol);
      if (rc) {
        fprintf(stderr, "mfaserve tokenize: %s (vocab size %d)\n", mfs_strerror(rc), tok_vocab_size(t));
        status = rc == MFS_ERANGE ? 2 : 1;
      } else {
        fwrite(out, 1, ol, stdout);
        free(out);
      }
      free(ids);
    }
  } else {
    if (bos < 0) bos = tok_add_bos_default(t);
    unsigned f = (bos ? TOK_ADD_BOS : 0) | (no_special ? 0 : TOK_PARSE_SPECIAL);
    int32_t *ids;
    size_t n;
    if ((rc = tok_encode(t, in, len, f, &ids, &n))) {
      fprintf(stderr, "mfaserve tokenize: %s\n", mfs_strerror(rc));
      status = 1;
    } else {
      putchar('[');
      for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
      printf("]\n");
      free(ids);
    }
  }
  free(in);
  tok_free(t);
  return status;
}
