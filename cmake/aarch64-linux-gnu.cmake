# Cross-build for aarch64 (arm64) Linux on a Debian x86-64 host, with
# Debian's cross compiler (gcc-aarch64-linux-gnu) and the arm64 multiarch
# -dev packages (libopenblas-dev:arm64, ...; `scripts/setup.sh --arm64`
# installs them). Tests run under qemu-user: add_test(COMMAND <target>) goes
# through CMAKE_CROSSCOMPILING_EMULATOR, and tests that hand a binary to a
# script get it in MFS_TEST_EMULATOR (tests/engine/engine_util.py).
#
#   cmake -S . -B build-arm64 -G Ninja -DCMAKE_BUILD_TYPE=Release \
#         -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
#   scripts/test_arm64.sh            (configure, build, run the tests under qemu)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(MFS_CROSS_TRIPLE aarch64-linux-gnu)

set(CMAKE_C_COMPILER ${MFS_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${MFS_CROSS_TRIPLE}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${MFS_CROSS_TRIPLE})

# Libraries and headers are the arm64 multiarch ones in /usr (libc6:arm64
# puts the dynamic loader at /lib/ld-linux-aarch64.so.1 and its libraries
# under /usr/lib/aarch64-linux-gnu), so the host root is the sysroot; the
# programs CMake looks for (python3, node, sh) are the host's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
# pkg-config: only the arm64 .pc files (the host's would hand out amd64 libraries)
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${MFS_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

# qemu-user (Debian package qemu-user); no binfmt_misc needed. The arm64
# loader and libraries are in the host root, so no -L prefix is needed.
# MFS_QEMU overrides, e.g. -DMFS_QEMU="qemu-aarch64-static;-cpu;max".
if(NOT DEFINED MFS_QEMU)
  find_program(MFS_QEMU_BIN NAMES qemu-aarch64 qemu-aarch64-static)
  if(MFS_QEMU_BIN)
    set(MFS_QEMU ${MFS_QEMU_BIN})
  endif()
endif()
if(MFS_QEMU)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${MFS_QEMU})
endif()
