/* bench_tokenizer.c: single-thread encode speed. Usage:
 * bench_tokenizer MODEL_DIR FILE... : concatenates the files (to at least
 * 4 MB, repeating them), encodes it in 64 KB requests and as one request,
 * and prints MB/s for each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "tokenizer.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL_DIR FILE...\n", argv[0]);
    return 2;
  }
  tok_tokenizer *t;
  char err[512];
  if (tok_new(argv[1], &t, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 77;
  }
  size_t cap = 1 << 20, n = 0;
  char *buf = malloc(cap);
  for (int pass = 0; n < (4u << 20) && pass < 1000; pass++)
    for (int i = 2; i < argc; i++) {
      FILE *f = fopen(argv[i], "rb");
      if (!f) continue;
      size_t r;
      do {
        if (n + 65536 > cap) buf = realloc(buf, cap *= 2);
        r = fread(buf + n, 1, 65536, f);
        n += r;
      } while (r);
      fclose(f);
    }
  if (!n) return 77;
  size_t ntok = 0;
  double t0 = mfs_now();
  for (size_t off = 0; off < n; off += 65536) {
    int32_t *ids;
    size_t k, len = MFS_MIN((size_t)65536, n - off);
    if (tok_encode(t, buf + off, len, 0, &ids, &k)) return 1;
    ntok += k;
    free(ids);
  }
  double t1 = mfs_now();
  int32_t *ids;
  size_t k;
  if (tok_encode(t, buf, n, 0, &ids, &k)) return 1;
  double t2 = mfs_now();
  char *out;
  size_t ol;
  tok_decode(t, ids, k, 0, &out, &ol);
  double t3 = mfs_now();
  printf("%s: %.2f MB text, %zu tokens (%.2f bytes/token)\n", argv[1], n / 1e6, ntok, (double)n / ntok);
  printf("encode 64KB requests: %.1f MB/s\nencode one request:   %.1f MB/s\ndecode:               %.1f MB/s\n",
         n / 1e6 / (t1 - t0), n / 1e6 / (t2 - t1), ol / 1e6 / (t3 - t2));
  free(out);
  free(ids);
  free(buf);
  tok_free(t);
  return 0;
}
