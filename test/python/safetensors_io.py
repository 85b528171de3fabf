"""An independent safetensors writer and reader, written from the spec with numpy only
(python3-safetensors is not installed), for test/safetensors.test.ts.

  safetensors_io.py write OUT   -> writes a file with several dtypes, prints {name: sha256} as JSON
  safetensors_io.py read FILE   -> validates FILE and prints its header facts and per-tensor sha256
"""
import hashlib
import json
import struct
import sys

import numpy as np

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
         "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1}


def write(out):
    rng = np.random.default_rng(1234)
    f32 = rng.standard_normal((7, 5)).astype("<f4")
    f32[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    tensors = {
        "transformer.a.f32": ("F32", f32.tobytes(), [7, 5]),
        "transformer.b.f16": ("F16", rng.standard_normal((3, 4)).astype("<f2").tobytes(), [3, 4]),
        # bf16 has no numpy type: the top 16 bits of f32 (truncation is fine for a data file)
        "transformer.c.bf16": ("BF16", (rng.standard_normal(9).astype("<f4").view("<u4") >> 16).astype("<u2").tobytes(), [9]),
        "z.i64": ("I64", np.array([-(2**62), 1, 2**40], dtype="<i8").tobytes(), [3]),
        "y.i32": ("I32", np.arange(-3, 3, dtype="<i4").reshape(2, 3).tobytes(), [2, 3]),
        "x.u8": ("U8", bytes(range(250, 256)) + bytes([0]), [7]),
        "w.scalar": ("F64", np.array(3.25, dtype="<f8").tobytes(), []),
        "v.empty": ("F32", b"", [0, 4]),
    }
    # Data deliberately not in the reference order, header keys in yet another order.
    names = ["y.i32", "transformer.c.bf16", "v.empty", "transformer.a.f32", "z.i64", "x.u8", "w.scalar", "transformer.b.f16"]
    header, data, offset = {}, b"", 0
    for name in names:
        dtype, raw, shape = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    header = dict(sorted(header.items(), reverse=True))
    header["__metadata__"] = {"format": "np", "note": "written by hand \u00e9"}
    text = json.dumps(header, ensure_ascii=False).encode("utf-8")  # unpadded: padding is optional
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)
    print(json.dumps({name: hashlib.sha256(t[1]).hexdigest() for name, t in tensors.items()}))


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    raw = blob[8:8 + n]
    text = raw.decode("utf-8")
    header = json.loads(text)
    metadata = header.pop("__metadata__", None)
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    cursor = 0
    out = {}
    for name, e in entries:
        begin, end = e["data_offsets"]
        assert begin == cursor, f"{name}: gap or overlap at {begin}"
        numel = int(np.prod(e["shape"], dtype=np.int64)) if e["shape"] else 1
        assert end - begin == numel * SIZES[e["dtype"]], f"{name}: size"
        cursor = end
        data = blob[8 + n + begin:8 + n + end]
        out[name] = {"dtype": e["dtype"], "shape": e["shape"], "sha256": hashlib.sha256(data).hexdigest()}
    assert 8 + n + cursor == len(blob), "file length"
    print(json.dumps({
        "n": n,
        "padding": len(raw) - len(raw.rstrip(b" ")),
        "endsWithBrace": raw.rstrip(b" ").endswith(b"}"),
        "keyOrder": [k for k in json.loads(text)],
        "dataOrder": [name for name, _ in entries],
        "metadata": metadata,
        "tensors": out,
    }))


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](sys.argv[2])
