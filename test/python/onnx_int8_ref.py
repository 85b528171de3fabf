"""Quantize raw f32 [rows, cols] matrices with quant_ref's onnx_int8 (one process for all cases).
Usage: onnx_int8_ref.py QUANT_REF_DIR (IN.f32 ROWS COLS OUT.bin DEQ_OUT.f32)...
OUT.bin gets the int8 codes then the f32 scales (raw bytes); DEQ_OUT.f32 the dequantized values."""
import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
import quant_ref  # noqa: E402

args = sys.argv[2:]
for i in range(0, len(args), 5):
    src, rows, cols, out, deq = args[i], int(args[i + 1]), int(args[i + 2]), args[i + 3], args[i + 4]
    x = np.fromfile(src, dtype=np.float32).reshape(rows, cols)
    parts = quant_ref.quantize("onnx_int8", x)
    with open(out, "wb") as f:
        f.write(parts["weight"].tobytes())
        f.write(parts["scales"].tobytes())
    quant_ref.dequantize("onnx_int8", parts, rows, cols).numpy().astype(np.float32).tofile(deq)
