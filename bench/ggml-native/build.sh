#!/bin/sh
# Build bench/ggml-native/ggml-quantize against a ggml source tree, three ways:
#   strict    gcc -O3 -march=native -ffp-contract=off   (IEEE: what llama.cpp's ggml-base is on x86-64,
#             which gets no arch flags)
#   gcc-fma   gcc -O3 -march=native                    (GCC's default -ffp-contract=fast: contracts a*b+c
#             across statements; also GCC on arm64)
#   clang-fma clang -O3 -mfma -ffp-contract=on          (clang's default: within one expression; what Apple
#             clang does on Apple Silicon, where FMA is always there)
# usage: bench/ggml-native/build.sh GGML_SRC OUT_DIR   (GGML_SRC holds src/ggml-quants.c and include/)
set -eu
src=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
build() {
  name=$1; shift
  "$@" -std=gnu11 -I"$src/include" -I"$src/src" -c "$src/src/ggml-quants.c" -o "$out/ggml-quants-$name.o" 2>/dev/null
  "$@" -std=gnu11 -I"$src/include" -I"$src/src" "$here/ggml-quantize.c" "$out/ggml-quants-$name.o" -lm -lpthread -o "$out/ggml-quantize-$name"
  echo "$out/ggml-quantize-$name"
}
build strict gcc -O3 -march=native -ffp-contract=off
build gcc-fma gcc -O3 -march=native
if command -v clang >/dev/null; then build clang-fma clang -O3 -mfma -ffp-contract=on; fi
