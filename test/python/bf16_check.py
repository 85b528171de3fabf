"""Check a bf16 safetensors against torch's round-to-nearest-even of an f32 one, for test/cli.test.ts.

Usage: bf16_check.py SRC_F32.safetensors OUT_BF16.safetensors
Both files are parsed by hand (no safetensors package). Prints JSON:
{"tensors": n, "elements": n, "mismatches": [names], "nans": n}
"""
import json
import struct
import sys

import numpy as np
import torch


def load(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], blob[8 + n + begin:8 + n + end])
    return out


src, dst = load(sys.argv[1]), load(sys.argv[2])
assert sorted(src) == sorted(dst), "different tensor names"
mismatches, elements, nans = [], 0, 0
for name, (dtype, shape, raw) in src.items():
    assert dtype == "F32", f"{name}: source is {dtype}"
    out_dtype, out_shape, out_raw = dst[name]
    values = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
    want = values.to(torch.bfloat16).view(torch.int16).numpy().view("<u2")
    got = np.frombuffer(out_raw, dtype="<u2")
    nan = torch.isnan(values).numpy()
    nans += int(nan.sum())
    if out_dtype != "BF16" or out_shape != shape or got.shape != want.shape or not np.array_equal(got[~nan], want[~nan]):
        mismatches.append(name)
    elif nan.any() and not np.all(((got[nan] & 0x7F80) == 0x7F80) & ((got[nan] & 0x7F) != 0)):
        mismatches.append(name)
    elements += want.size
print(json.dumps({"tensors": len(src), "elements": elements, "mismatches": mismatches, "nans": nans}))
