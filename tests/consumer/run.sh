#!/bin/sh
# ctest install_consumer: install the build tree into a scratch prefix, then build and run
# consumers against it: CMake find_package (shared vkla::vkla, and vkla::vkla_static next to
# the application's own volk.c) and pkg-config (cc $(pkg-config --cflags --libs vkla)).
# usage: run.sh <build dir> <consumer source dir> [cmake] [cc]
set -eu
BUILD=$1
SRC=$2
CMAKE=${3:-cmake}
CC=${4:-cc}
PREFIX=$BUILD/test-install
CBUILD=$BUILD/consumer-build

rm -rf "$PREFIX" "$CBUILD"
echo "== cmake --install $BUILD --prefix $PREFIX"
"$CMAKE" --install "$BUILD" --prefix "$PREFIX" >/dev/null

LIBDIR=$(dirname "$(find "$PREFIX" -name 'libvkla.so' | head -n 1)")
[ -n "$LIBDIR" ] && [ -d "$LIBDIR" ] || { echo "libvkla.so was not installed"; exit 1; }

echo "== find_package(vkla) consumer"
"$CMAKE" -S "$SRC" -B "$CBUILD" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_C_COMPILER="$CC" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
"$CMAKE" --build "$CBUILD" -j2
echo "-- consumer (shared vkla::vkla)"
"$CBUILD/consumer"
echo "-- consumer_volk_static (vkla::vkla_static + the application's own volk.c)"
"$CBUILD/consumer_volk_static"

echo "== pkg-config consumer"
PKG_CONFIG_PATH="$LIBDIR/pkgconfig"
export PKG_CONFIG_PATH
PC_PREFIX=$(pkg-config --variable=prefix vkla)
if [ ! -f "$PC_PREFIX/include/vkla.h" ]; then
    echo "vkla.pc is not relocatable: installed under $PREFIX it says prefix=$PC_PREFIX"
    echo "(it should derive the prefix from \${pcfiledir}, so cmake --install --prefix works)"
    exit 1
fi
FLAGS=$(pkg-config --cflags --libs vkla)
echo "pkg-config --cflags --libs vkla: $FLAGS"
# shellcheck disable=SC2086
"$CC" -std=c11 -Wall -Wextra -o "$CBUILD/consumer_pc" "$SRC/main.c" $FLAGS -lm
LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$CBUILD/consumer_pc"
echo "install_consumer: all consumers ok"
