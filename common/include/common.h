/* common.h: the leaf every module may use: the one error table, logging,
 * small helpers (alignment, time, size parsing). Nothing here allocates on
 * a hot path; logging is thread-safe (one write(2) per line). */
#ifndef MFS_COMMON_H
#define MFS_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Errors are negative values from this one table; 0 is success and
 * positive values are documented normal outcomes of the function that
 * returns them. */
#define MFS_ERRNO_MAP(X)                                                 \
  X(EINVAL, -1, "invalid argument")                                      \
  X(ENOMEM, -2, "out of memory")                                         \
  X(EIO, -3, "input/output error")                                       \
  X(EFORMAT, -4, "malformed file")                                       \
  X(EUNSUPPORTED, -5, "unsupported")                                     \
  X(ERANGE, -6, "value out of range")                                    \
  X(ENOTFOUND, -7, "not found")                                          \
  X(ESTATE, -8, "wrong state for this call")

enum {
#define MFS_ERR_ENUM(name, val, msg) MFS_##name = (val),
  MFS_ERRNO_MAP(MFS_ERR_ENUM)
#undef MFS_ERR_ENUM
};

/* Returns a static string for a value from the table, "unknown error"
 * otherwise. */
const char *mfs_strerror(int err);

typedef enum { MFS_LOG_DEBUG, MFS_LOG_INFO, MFS_LOG_WARN, MFS_LOG_ERROR } mfs_log_level;

/* Lines go to stderr as "<iso time> <LEVEL> <module>: message". Any thread. */
void mfs_log(mfs_log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mfs_log_set_level(mfs_log_level lvl);
/* Parses "debug|info|warn|error"; returns 0 or MFS_EINVAL. */
int mfs_log_level_parse(const char *s, mfs_log_level *out);

/* Monotonic seconds. */
double mfs_now(void);

/* Parses a byte count "123", "64K", "512M", "1.5G" (binary units, case
 * insensitive, optional trailing "B"/"iB"). Returns 0 or MFS_EINVAL. */
int mfs_parse_bytes(const char *s, uint64_t *out);

/* Fault injection for tests. Returns 1 when the environment variable
 * MFASERVE_FAULT (read once, at the first call) names `site`, else 0.
 * MFASERVE_FAULT is a comma-separated list of "site" (every call fails) or
 * "site:N" (only the Nth call at that site fails, counted from 1 across
 * threads; a site may be listed more than once), e.g.
 * "sched_submit:3,sched_step:10". The caller treats 1 as the
 * failure the site can have (usually MFS_ENOMEM). Sites: sched_submit
 * (request allocation), sched_step (the engine step), srv_buf (the
 * server's response buffers growing), srv_sse (a stream's buffer, at its
 * Nth flush of events). Any thread. */
int mfs_fault(const char *site);

#define MFS_ALIGN_UP(x, a) (((x) + ((a)-1)) & ~((size_t)(a)-1))
#define MFS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MFS_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
