/* fault.c: fault injection for tests (see mfs_fault in common.h).
 *
 * MFASERVE_FAULT is read once, on the first call (pthread_once), into a
 * small fixed table; afterwards a call is a string compare per entry and,
 * for counted entries, one atomic increment. Without the variable a call
 * costs one pthread_once check and returns 0. */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAULT_MAX 8

static struct fault_entry {
  char site[48];
  long nth;          /* 0: every call; else only the nth call (1-based) */
  atomic_long calls;
} g_faults[FAULT_MAX];
static int g_n_faults;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void fault_parse(void) {
  const char *v = getenv("MFASERVE_FAULT");
  if (!v || !*v) return;
  while (*v && g_n_faults < FAULT_MAX) {
    size_t n = strcspn(v, ",");
    struct fault_entry *f = &g_faults[g_n_faults];
    size_t colon = strcspn(v, ":,");
    size_t sl = MFS_MIN(colon, sizeof f->site - 1);
    if (sl > 0) {
      memcpy(f->site, v, sl);
      f->site[sl] = 0;
      f->nth = colon < n ? strtol(v + colon + 1, NULL, 10) : 0;
      if (f->nth < 0) f->nth = 0;
      atomic_init(&f->calls, 0);
      g_n_faults++;
      if (f->nth) mfs_log(MFS_LOG_WARN, "fault", "MFASERVE_FAULT: call %ld at %s fails", f->nth, f->site);
      else mfs_log(MFS_LOG_WARN, "fault", "MFASERVE_FAULT: every call at %s fails", f->site);
    }
    v += n;
    if (*v == ',') v++;
  }
}

int mfs_fault(const char *site) {
  pthread_once(&g_once, fault_parse);
  int fail = 0;
  for (int i = 0; i < g_n_faults; i++) { /* a site may be named more than once ("s:2,s:4") */
    struct fault_entry *f = &g_faults[i];
    if (strcmp(f->site, site)) continue;
    if (!f->nth) fail = 1;
    else if (atomic_fetch_add(&f->calls, 1) + 1 == f->nth) fail = 1;
  }
  return fail;
}
