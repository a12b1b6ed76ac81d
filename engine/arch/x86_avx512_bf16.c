/* x86_avx512_bf16.c: the top x86 level, AVX-512 F/BW/VL + AVX512_BF16 +
 * AVX512_VNNI: x86_avx512.c's kernels compiled with the wider target (see
 * engine/CMakeLists.txt), as k_table_avx512bf16. */
#define MFS_AVX512_BF16 1
#include "x86_avx512.c"
