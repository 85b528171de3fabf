#!/usr/bin/python3
"""An independent GGUF reader, written from the GGUF spec (ggml docs/gguf.md), for the tests.

Usage: gguf_read.py FILE  → prints JSON: {version, alignment, data_offset, metadata: [...],
tensors: [{name, type, dims, offset, raw_sha256, f32_sha256}]}. 64-bit integers are printed as
strings; f32_sha256 hashes the tensor's values as little-endian float32 (F16/BF16 widened, Q8_0
dequantized as d * q per 32-value block).
"""
import hashlib
import json
import struct
import sys

import numpy as np

VALUE_TYPES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32",
               7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64"}
SCALARS = {"UINT8": "<B", "INT8": "<b", "UINT16": "<H", "INT16": "<h", "UINT32": "<I", "INT32": "<i",
           "FLOAT32": "<f", "BOOL": "<?", "UINT64": "<Q", "INT64": "<q", "FLOAT64": "<d"}
# ggml type id → (elements per block, bytes per block)
GGML = {0: (1, 4), 1: (1, 2), 8: (32, 34), 30: (1, 2)}


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        n = self.unpack("<Q")
        return self.take(n).decode("utf-8")

    def value(self, vtype):
        name = VALUE_TYPES[vtype]
        if name == "STRING":
            return self.string()
        if name == "ARRAY":
            item = self.unpack("<I")
            n = self.unpack("<Q")
            return {"itemType": VALUE_TYPES[item], "items": [self.value(item) for _ in range(n)]}
        v = self.unpack(SCALARS[name])
        if name in ("UINT64", "INT64"):
            return str(v)
        return v


def f32_values(raw, ggml_type):
    if ggml_type == 0:
        return np.frombuffer(raw, dtype="<f4")
    if ggml_type == 1:
        return np.frombuffer(raw, dtype="<f2").astype("<f4")
    if ggml_type == 30:
        return (np.frombuffer(raw, dtype="<u2").astype("<u4") << 16).view("<f4")
    if ggml_type == 8:
        blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 34)
        d = blocks[:, :2].copy().view("<f2").astype("<f4")
        q = blocks[:, 2:].copy().view(np.int8).astype("<f4")
        return (d * q).astype("<f4").reshape(-1)
    raise ValueError(f"unsupported ggml type {ggml_type}")


def main(path):
    with open(path, "rb") as f:
        data = f.read()
    r = Reader(data)
    if r.take(4) != b"GGUF":
        raise ValueError("bad magic")
    version = r.unpack("<I")
    n_tensors = r.unpack("<Q")
    n_kv = r.unpack("<Q")
    metadata = []
    for _ in range(n_kv):
        key = r.string()
        vtype = r.unpack("<I")
        metadata.append({"key": key, "type": VALUE_TYPES[vtype], "value": r.value(vtype)})
    alignment = 32
    for kv in metadata:
        if kv["key"] == "general.alignment":
            alignment = kv["value"]
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.unpack("<I")
        dims = [r.unpack("<Q") for _ in range(n_dims)]
        ggml_type = r.unpack("<I")
        offset = r.unpack("<Q")
        infos.append((name, dims, ggml_type, offset))
    data_offset = (r.pos + alignment - 1) // alignment * alignment
    tensors = []
    for name, dims, ggml_type, offset in infos:
        if offset % alignment:
            raise ValueError(f"{name}: misaligned offset")
        per_block, block_bytes = GGML[ggml_type]
        n = int(np.prod(dims))
        size = n // per_block * block_bytes
        start = data_offset + offset
        if start + size > len(data):
            raise ValueError(f"{name}: data past the end")
        raw = data[start:start + size]
        values = f32_values(raw, ggml_type)
        assert values.size == n
        tensors.append({
            "name": name, "type": ggml_type, "dims": dims, "offset": offset,
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
            "f32_sha256": hashlib.sha256(values.astype("<f4").tobytes()).hexdigest(),
        })
    json.dump({"version": version, "alignment": alignment, "data_offset": data_offset, "metadata": metadata,
               "tensors": tensors}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
