/* gr_gbnf.c: placeholder until the GBNF front end lands */
#include "common.h"
#include "gr_int.h"
int gr_gbnf_parse(gr_builder *b, const char *src, size_t len, int *root) {
  (void)src, (void)len, (void)root;
  return gb_fail(b, MFS_EUNSUPPORTED, "", "gbnf", "GBNF is not implemented yet");
}
