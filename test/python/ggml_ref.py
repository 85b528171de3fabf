#!/usr/bin/env python3
"""Ground truth from llama.cpp's own compiled library: node-llama-cpp's prebuilt libggml-base.so
quantizes and dequantizes rows with ggml's `quantize_row_<type>_ref` and `dequantize_row_<type>`.

  ggml_ref.py TYPES IN.f32 OUT_PREFIX   (TYPES: comma-separated q4_0, q4_1, q5_0, q5_1, q8_0, q2_K … q6_K)
reads little-endian f32 values (a multiple of the block), writes per type OUT_PREFIX.TYPE.ggml (the
blocks), OUT_PREFIX.TYPE.ggml.f32 (ggml's dequantization of them), and with --ref also OUT_PREFIX.TYPE.ref and
OUT_PREFIX.TYPE.ref.f32 from src/verify/python/quant_ref.py (scheme gguf_<type>). Exit 3 when the library
cannot be loaded (the test then says why it skipped)."""
import ctypes
import glob
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BLOCK = {"q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24), "q8_0": (32, 34),
         "q2_K": (256, 84), "q3_K": (256, 110), "q4_K": (256, 144), "q5_K": (256, 176), "q6_K": (256, 210)}


def library():
    found = glob.glob(os.path.join(ROOT, "node_modules", "@node-llama-cpp", "linux-x64", "bins", "*", "libggml-base.so"))
    if not found:
        print("libggml-base.so not found under node_modules/@node-llama-cpp/linux-x64", file=sys.stderr)
        sys.exit(3)
    try:
        return ctypes.CDLL(found[0])
    except OSError as error:
        print("cannot load %s: %s" % (found[0], error), file=sys.stderr)
        sys.exit(3)


def run(lib, kind, x, prefix, ref):
    elements, nbytes = BLOCK[kind]
    blocks = len(x) // elements
    out = np.zeros(blocks * nbytes, np.uint8)
    quantize = getattr(lib, "quantize_row_%s_ref" % kind)
    quantize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    quantize(x.ctypes.data, out.ctypes.data, len(x))
    out.tofile(prefix + ".ggml")
    back = np.zeros(len(x), np.float32)
    dequantize = getattr(lib, "dequantize_row_%s" % kind)
    dequantize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    dequantize(out.ctypes.data, back.ctypes.data, len(x))
    back.tofile(prefix + ".ggml.f32")
    if ref:
        sys.path.insert(0, os.path.join(ROOT, "src", "verify", "python"))
        import quant_ref
        scheme = "gguf_" + kind.lower()
        parts = quant_ref.quantize(scheme, x.reshape(1, -1))
        parts["blocks"].reshape(-1).tofile(prefix + ".ref")
        quant_ref.dequantize(scheme, parts, 1, len(x)).numpy().reshape(-1).tofile(prefix + ".ref.f32")


def main():
    args = [a for a in sys.argv[1:] if a != "--ref"]
    kinds, src, prefix = args
    lib = library()
    x = np.fromfile(src, dtype="<f4")
    for kind in kinds.split(","):
        run(lib, kind, x, "%s.%s" % (prefix, kind), "--ref" in sys.argv)


if __name__ == "__main__":
    main()
