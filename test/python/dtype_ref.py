"""Reference float conversions for test/dtype.test.ts (independent of our TypeScript code).

Usage: dtype_ref.py IN OUT_F16 OUT_BF16
IN holds little-endian f32 values; OUT_F16 gets numpy's float16 rounding of each,
OUT_BF16 gets torch's bfloat16 rounding (both round to nearest even).
"""
import sys

import numpy as np
import torch

values = np.fromfile(sys.argv[1], dtype="<f4")
with np.errstate(over="ignore"):
    values.astype("<f2").tofile(sys.argv[2])
bf16 = torch.from_numpy(values.copy()).to(torch.bfloat16)
bf16.view(torch.int16).numpy().astype("<i2").tofile(sys.argv[3])
