# cmake -DIN=page.html -DOUT=srv_ui.c -P embed.cmake: the page as a C array
# (srv_ui_index, srv_ui_index_len); a placeholder when the page is missing.
if(EXISTS ${IN})
  file(READ ${IN} hex HEX)
else()
  string(HEX "<!doctype html><title>mfaserve</title><p>mfaserve: the cache dashboard (server/ui/index.html) is not built into this binary.</p>\n" hex)
endif()
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
file(WRITE ${OUT}.tmp "/* generated from server/ui/index.html by server/embed.cmake */\n#include <stddef.h>\nconst unsigned char srv_ui_index[] = {${body}0};\nconst size_t srv_ui_index_len = ${len};\n")
file(RENAME ${OUT}.tmp ${OUT})
