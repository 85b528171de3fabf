#!/bin/sh
# Builds ggml's CPU library (cmake, as llama.cpp does: ggml-base, where ggml-quants.c lives, gets no arch flags) from a ggml source tree and links quantize-check against it.
#   bench/ggml-native/build-quantize-check.sh GGML_SRC_DIR OUT_DIR   ->  OUT_DIR/quantize-check
set -eu
[ $# -eq 2 ] || { echo "usage: build-quantize-check.sh GGML_SRC_DIR OUT_DIR" >&2; exit 1; }
src=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cmake -S "$src" -B "$out/build" -DGGML_NATIVE=ON -DCMAKE_BUILD_TYPE=Release \
  -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >"$out/cmake.log"
cmake --build "$out/build" -j"${JOBS:-2}" --target ggml ggml-base ggml-cpu >"$out/build.log"
lib=$(dirname "$(find "$out/build" -name 'libggml-base.so' | head -1)")
gcc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I"$src/include" "$here/quantize-check.c" \
  -L"$lib" -lggml -lggml-base -lggml-cpu -lpthread -Wl,-rpath,"$lib" -o "$out/quantize-check"
echo "$out/quantize-check"
