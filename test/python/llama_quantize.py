#!/usr/bin/env python3
"""Real llama-quantize: node-llama-cpp's prebuilt libllama's `llama_model_quantize`, called through
ctypes on a GGUF file (no importance matrix), the way the llama-quantize tool does.

  llama_quantize.py IN.gguf OUT.gguf FTYPE            (FTYPE: llama_ftype number, e.g. 2 = MOSTLY_Q4_0)
  llama_quantize.py IN.gguf OUT1:FTYPE1 OUT2:FTYPE2 …  (several file types of one input in one run)

The environment variables LQ_OUTPUT_TENSOR_TYPE and LQ_TOKEN_EMBEDDING_TYPE (ggml type numbers, e.g.
8 = Q8_0) set llama-quantize's --output-tensor-type and --token-embedding-type; LQ_DRY_RUN=1 is
its --dry-run (types and sizes logged, the tensor data never read).

Exit 3 when the library cannot be loaded; non-zero when quantization fails."""
import ctypes
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Params(ctypes.Structure):
    # llama.h `llama_model_quantize_params`, of the llama.cpp version node-llama-cpp bundles.
    _fields_ = [
        ("nthread", ctypes.c_int32), ("ftype", ctypes.c_int), ("output_tensor_type", ctypes.c_int),
        ("token_embedding_type", ctypes.c_int), ("allow_requantize", ctypes.c_bool),
        ("quantize_output_tensor", ctypes.c_bool), ("only_copy", ctypes.c_bool), ("pure", ctypes.c_bool),
        ("keep_split", ctypes.c_bool), ("dry_run", ctypes.c_bool), ("imatrix", ctypes.c_void_p),
        ("kv_overrides", ctypes.c_void_p), ("tt_overrides", ctypes.c_void_p), ("prune_layers", ctypes.c_void_p),
        ("max_buf_size", ctypes.c_size_t),
    ]


def main():
    src = sys.argv[1]
    jobs = [(sys.argv[2], int(sys.argv[3]))] if len(sys.argv) == 4 and ":" not in sys.argv[2] else [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[2:]]
    bins = glob.glob(os.path.join(ROOT, "node_modules", "@node-llama-cpp", "linux-x64", "bins", "linux-x64"))
    if not bins:
        print("node-llama-cpp's linux-x64 binaries are not installed", file=sys.stderr)
        sys.exit(3)
    try:
        for name in ("libggml-base.so", "libggml.v0.5.0.so"):
            ctypes.CDLL(os.path.join(bins[0], name), mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(os.path.join(bins[0], "libllama.v0.5.0.so"))
    except OSError as error:
        print("cannot load libllama: %s" % error, file=sys.stderr)
        sys.exit(3)
    lib.llama_backend_init()
    lib.llama_model_quantize_default_params.restype = Params
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(Params)]
    lib.llama_model_quantize.restype = ctypes.c_uint32
    for dst, ftype in jobs:
        params = lib.llama_model_quantize_default_params()
        params.ftype = ftype
        params.nthread = 1
        if os.environ.get("LQ_OUTPUT_TENSOR_TYPE"):
            params.output_tensor_type = int(os.environ["LQ_OUTPUT_TENSOR_TYPE"])
        if os.environ.get("LQ_DRY_RUN"):
            params.dry_run = True
        if os.environ.get("LQ_TOKEN_EMBEDDING_TYPE"):
            params.token_embedding_type = int(os.environ["LQ_TOKEN_EMBEDDING_TYPE"])
        if lib.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)):
            sys.exit(1)


if __name__ == "__main__":
    main()
