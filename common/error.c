/* error.c: the one error table's strings. */
#include "common.h"

const char *mfs_strerror(int err) {
  switch (err) {
#define MFS_ERR_CASE(name, val, msg) \
  case val:                          \
    return msg;
    MFS_ERRNO_MAP(MFS_ERR_CASE)
#undef MFS_ERR_CASE
  case 0:
    return "success";
  }
  return "unknown error";
}
