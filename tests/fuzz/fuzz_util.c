/* fuzz_util.c: see fuzz_util.h. */
#include "fuzz_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static char g_dir[256];

static void cleanup(void) {
  DIR *d = opendir(g_dir);
  if (!d) return;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(g_dir);
}

const char *fuzz_tmpdir(void) {
  if (!g_dir[0]) {
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/mfs-fuzz-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_dir)) {
      perror("mkdtemp");
      abort();
    }
    atexit(cleanup);
  }
  return g_dir;
}

const char *fuzz_write(const char *name, const void *data, size_t n) {
  static char paths[8][512];
  static const char *names[8];
  int slot = 0;
  while (slot < 8 && names[slot] && strcmp(names[slot], name)) slot++;
  if (slot == 8) abort();
  names[slot] = name;
  snprintf(paths[slot], sizeof paths[slot], "%s/%s", fuzz_tmpdir(), name);
  int fd = open(paths[slot], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    perror(paths[slot]);
    abort();
  }
  const char *p = data;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) {
      perror("write");
      abort();
    }
    p += w;
    n -= (size_t)w;
  }
  close(fd);
  return paths[slot];
}

void fuzz_unlink(const char *name) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", fuzz_tmpdir(), name);
  unlink(p);
}

const char *fuzz_data_dir(void) {
  const char *e = getenv("MFS_FUZZ_DATA");
  return e && *e ? e : MFS_FUZZ_DATA;
}

int fuzz_utf8_valid(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else
      return 0;
    if (i + (size_t)len > n) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (int k = 2; k < len; k++)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
    i += (size_t)len;
  }
  return 1;
}
