/* fuzz_util.h: helpers shared by the fuzz targets: a private temporary
 * directory per process, writing an input into a file there, and the
 * property-check macro. Every target is a libFuzzer entry point
 * (LLVMFuzzerTestOneInput); replay_main.c drives the same entry points
 * without libFuzzer. A failed property calls abort() so both drivers stop
 * with the offending input. */
#ifndef MFS_FUZZ_UTIL_H
#define MFS_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(c, ...)                                                   \
  do {                                                                       \
    if (!(c)) {                                                              \
      fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, #c); \
      fprintf(stderr, __VA_ARGS__);                                          \
      fputc('\n', stderr);                                                   \
      abort();                                                               \
    }                                                                        \
  } while (0)

/* A directory private to this process, created on first use and removed
 * (with the files written through fuzz_write) at exit. */
const char *fuzz_tmpdir(void);
/* Writes n bytes to fuzz_tmpdir()/name (replacing it) and returns the
 * path in a static buffer of its own per name slot (up to 8 names). */
const char *fuzz_write(const char *name, const void *data, size_t n);
/* Removes fuzz_tmpdir()/name if present. */
void fuzz_unlink(const char *name);
/* The checked-in data folder (tests/fuzz/data): $MFS_FUZZ_DATA or the
 * source path compiled in. */
const char *fuzz_data_dir(void);
/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int fuzz_utf8_valid(const char *s, size_t n);

#endif
