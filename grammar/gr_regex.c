/* gr_regex.c: placeholder until the regex front end lands */
#include "common.h"
#include "gr_int.h"
gx *gr_regex_gx(gr_builder *b, const char *re, size_t len, int as_json_string, int search) {
  (void)re, (void)len, (void)as_json_string, (void)search;
  gb_fail(b, MFS_EUNSUPPORTED, "", "regex", "regular expressions are not implemented yet");
  return NULL;
}
