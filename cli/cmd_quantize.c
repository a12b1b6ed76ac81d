/* cmd_quantize.c: `mfaserve quantize IN_DIR OUT_DIR --type q8_0|q4_0`:
 * writes a model directory with quantized weights that loads directly
 * (eng_quantize_dir; the format is docs/quantized-weights.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "engine.h"

static void progress(double f, void *u) {
  (void)u;
  fprintf(stderr, "\rquantizing: %3.0f%%", f * 100);
  if (f >= 1) fprintf(stderr, "\n");
}

int cmd_quantize(int argc, char **argv) {
  const char *type = NULL, *isa = "auto";
  cli_flag flags[] = {
      {"type", NULL, CLI_STR, &type, "q8_0 (32 int8 weights + an F16 scale) or q4_0 (32 4-bit weights + an F16 scale)"},
      CLI_ISA_FLAG(isa),
  };
  char **pos = calloc((size_t)argc + 1, sizeof *pos);
  int npos = 0;
  if (!pos) return 1;
  int rc = cli_parse("quantize",
                     "Writes a quantized copy of a model directory: mfaserve quantize IN_DIR OUT_DIR --type q8_0|q4_0.",
                     flags, 2, argc, argv, &pos, &npos);
  if (rc) {
    free(pos);
    return rc == CLI_HELP ? 0 : 2;
  }
  if (npos != 2 || !type) {
    fprintf(stderr, "mfaserve quantize: usage: mfaserve quantize IN_DIR OUT_DIR --type q8_0|q4_0\n");
    free(pos);
    return 2;
  }
  if ((rc = cli_isa_apply(isa))) {
    free(pos);
    return rc;
  }
  eng_weights_use_mmap(1); /* each tensor is read once */
  char err[1024];
  double t0 = mfs_now();
  rc = eng_quantize_dir(pos[0], pos[1], type, progress, NULL, err, sizeof err);
  if (rc) {
    fprintf(stderr, "mfaserve quantize: %s\n", err);
    free(pos);
    return rc == MFS_ENOMEM ? 1 : 2;
  }
  fprintf(stderr, "wrote %s/model.safetensors (%s) in %.1f s; load it with --model %s\n", pos[1], type,
          mfs_now() - t0, pos[1]);
  free(pos);
  return 0;
}
