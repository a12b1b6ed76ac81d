/* log.c: line-oriented logging to stderr, safe from any thread (each line
 * is formatted into a local buffer and written with one write(2)). */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile int g_level = MFS_LOG_INFO;

void mfs_log_set_level(mfs_log_level lvl) { g_level = lvl; }

int mfs_log_level_parse(const char *s, mfs_log_level *out) {
  static const char *names[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++)
    if (strcasecmp(s, names[i]) == 0) {
      *out = (mfs_log_level)i;
      return 0;
    }
  return MFS_EINVAL;
}

void mfs_log(mfs_log_level lvl, const char *module, const char *fmt, ...) {
  static const char *tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  if ((int)lvl < g_level) return;
  char line[2048];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, ts.tv_nsec / 1000000, tags[lvl], module);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) m = 0;
  size_t len = (size_t)n + MFS_MIN((size_t)m, sizeof line - (size_t)n - 2);
  line[len++] = '\n';
  ssize_t w = write(2, line, len);
  (void)w;
}

double mfs_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int mfs_parse_bytes(const char *s, uint64_t *out) {
  if (!s || !*s) return MFS_EINVAL;
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (end == s || errno || !(v >= 0) || !isfinite(v)) return MFS_EINVAL;
  double mul = 1;
  switch (toupper((unsigned char)*end)) {
  case 'K': mul = 1024.0; end++; break;
  case 'M': mul = 1024.0 * 1024; end++; break;
  case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
  case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
  }
  if (mul > 1 && (*end == 'i' || *end == 'I')) end++;
  if (*end == 'b' || *end == 'B') end++;
  if (*end) return MFS_EINVAL;
  double r = v * mul;
  if (r > 1.8e19) return MFS_ERANGE;
  *out = (uint64_t)r;
  return 0;
}
