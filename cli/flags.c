/* flags.c: the shared flag parser (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

static int set_value(const char *cmd, cli_flag *f, const char *v, const char *from) {
  char *end;
  switch (f->type) {
  case CLI_STR:
    *(const char **)f->ptr = v;
    return 0;
  case CLI_INT: {
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < -2147483647L || x > 2147483647L) break;
    *(int *)f->ptr = (int)x;
    return 0;
  }
  case CLI_DOUBLE: {
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end) break;
    *(double *)f->ptr = x;
    return 0;
  }
  case CLI_BOOL:
    if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on")) {
      *(int *)f->ptr = 1;
      return 0;
    }
    if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off")) {
      *(int *)f->ptr = 0;
      return 0;
    }
    break;
  case CLI_BYTES:
    if (mfs_parse_bytes(v, (uint64_t *)f->ptr) == 0) return 0;
    break;
  }
  static const char *what[] = {"a string", "an integer", "a number", "true or false",
                               "a byte count such as 512M or 2G"};
  fprintf(stderr, "mfaserve %s: %s for --%s is '%s', expected %s\n", cmd, from, f->name, v,
          what[f->type]);
  return -1;
}

static void usage(const char *cmd, const char *summary, const cli_flag *flags, int n) {
  printf("usage: mfaserve %s [flags]\n\n%s\n\nflags:\n", cmd, summary);
  for (int i = 0; i < n; i++) {
    const cli_flag *f = &flags[i];
    char def[64] = "";
    switch (f->type) {
    case CLI_STR:
      if (*(const char **)f->ptr) snprintf(def, sizeof def, "%s", *(const char **)f->ptr);
      break;
    case CLI_INT: snprintf(def, sizeof def, "%d", *(int *)f->ptr); break;
    case CLI_DOUBLE: snprintf(def, sizeof def, "%g", *(double *)f->ptr); break;
    case CLI_BOOL: snprintf(def, sizeof def, "%s", *(int *)f->ptr ? "true" : "false"); break;
    case CLI_BYTES: snprintf(def, sizeof def, "%llu", (unsigned long long)*(uint64_t *)f->ptr); break;
    }
    printf("  --%-22s %s", f->name, f->help);
    if (def[0]) printf(" (default: %s)", def);
    if (f->env) printf(" [env %s]", f->env);
    printf("\n");
  }
}

int cli_parse(const char *cmd, const char *summary, cli_flag *flags, int nflags, int argc,
              char **argv, char ***pos, int *npos) {
  for (int i = 0; i < nflags; i++) {
    const char *e = flags[i].env ? getenv(flags[i].env) : NULL;
    if (e && *e) {
      char from[96];
      snprintf(from, sizeof from, "environment variable %s", flags[i].env);
      if (set_value(cmd, &flags[i], e, from) < 0) return CLI_USAGE;
    }
  }
  if (npos) *npos = 0;
  for (int a = 1; a < argc; a++) {
    char *arg = argv[a];
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
      usage(cmd, summary, flags, nflags);
      return CLI_HELP;
    }
    if (strncmp(arg, "--", 2) != 0) {
      if (pos) {
        (*pos)[(*npos)++] = arg;
        continue;
      }
      fprintf(stderr, "mfaserve %s: unexpected argument '%s' (see --help)\n", cmd, arg);
      return CLI_USAGE;
    }
    char *name = arg + 2, *val = strchr(name, '=');
    size_t len = val ? (size_t)(val - name) : strlen(name);
    cli_flag *f = NULL;
    for (int i = 0; i < nflags; i++)
      if (strlen(flags[i].name) == len && !strncmp(flags[i].name, name, len)) f = &flags[i];
    if (!f) {
      fprintf(stderr, "mfaserve %s: unknown flag '--%.*s' (see mfaserve %s --help)\n", cmd, (int)len,
              name, cmd);
      return CLI_USAGE;
    }
    if (val) {
      val++;
    } else if (f->type == CLI_BOOL) {
      *(int *)f->ptr = 1;
      continue;
    } else {
      if (a + 1 >= argc) {
        fprintf(stderr, "mfaserve %s: --%s needs a value\n", cmd, f->name);
        return CLI_USAGE;
      }
      val = argv[++a];
    }
    if (set_value(cmd, f, val, "the value") < 0) return CLI_USAGE;
  }
  return 0;
}

int cli_parse_ids(const char *s, int32_t **ids, int *n) {
  size_t cap = 16, k = 0;
  int32_t *v = malloc(cap * sizeof *v);
  if (!v) return -1;
  for (const char *p = s; *p;) {
    if (strchr("[], \t\r\n", *p)) { /* "5,17,99", "[5, 17, 99]" and "5 17 99" alike */
      p++;
      continue;
    }
    char *end;
    errno = 0;
    long x = strtol(p, &end, 10);
    if (end == p || errno || x < 0 || x > 2147483647L) {
      fprintf(stderr, "mfaserve: token ids are malformed at '%.20s': expected non-negative integers "
                      "separated by commas or spaces (a JSON array is fine)\n", p);
      free(v);
      return -1;
    }
    if (k == cap) {
      int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
      if (!nv) {
        free(v);
        return -1;
      }
      v = nv;
    }
    v[k++] = (int32_t)x;
    p = end;
  }
  *ids = v;
  *n = (int)k;
  return 0;
}

const char *cli_default_model(void) {
  static char path[4096];
  /* next to the binary's source tree first (build/mfaserve -> models/default),
   * then the current directory */
  char exe[2048];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = 0;
      snprintf(path, sizeof path, "%s/../models/default/config.json", exe);
      if (access(path, R_OK) == 0) {
        snprintf(path, sizeof path, "%s/../models/default", exe);
        /* resolved, so the served name is the model's, not "default" */
        char *real = realpath(path, NULL);
        if (real) {
          snprintf(path, sizeof path, "%s", real);
          free(real);
        }
        return path;
      }
    }
  }
  if (access("models/default/config.json", R_OK) == 0) {
    char *real = realpath("models/default", NULL);
    if (real) {
      snprintf(path, sizeof path, "%s", real);
      free(real);
      return path;
    }
    return "models/default";
  }
  return NULL;
}
