"""Quantize raw f32 [rows, cols] matrices with quant_ref (one process for all cases).
Usage: onnx_quant_ref.py QUANT_REF_DIR SCHEME PARAMS_JSON (IN.f32 ROWS COLS OUT.bin DEQ_OUT.f32)...
OUT.bin gets each part's raw bytes in the order of the scheme's layout; DEQ_OUT.f32 the
dequantized values."""
import json
import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
import quant_ref  # noqa: E402

scheme, params = sys.argv[2], json.loads(sys.argv[3])
args = sys.argv[4:]
for i in range(0, len(args), 5):
    src, rows, cols, out, deq = args[i], int(args[i + 1]), int(args[i + 2]), args[i + 3], args[i + 4]
    x = np.fromfile(src, dtype=np.float32).reshape(rows, cols)
    parts = quant_ref.quantize(scheme, x, params)
    with open(out, "wb") as f:
        for name in quant_ref.layout(scheme, params, rows, cols):
            f.write(np.ascontiguousarray(parts[name]).tobytes())
    quant_ref.dequantize(scheme, parts, rows, cols, params).numpy().astype(np.float32).tofile(deq)
