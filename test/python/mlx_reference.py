"""Independent checks of openelm's MLX output, written from the published formats (safetensors,
MLX affine quantization as stated in DESIGN section 4.3, numpy .npz), not from the TypeScript.

  decode MLX_DIR SOURCE_SAFETENSORS DTYPE GROUP BITS
      Unpack every quantized tensor of an mlx-lm folder (LSB-first bit stream per row of uint32
      words), dequantize with the stored scales/biases, and compare with the source weights
      (rounded to DTYPE first): the error must stay within the rule's bound. Also re-run MLX's
      rule in numpy on the same f32 input and compare codes, scales and biases exactly.
  npz-describe FILE            print {name: [dtype.str, shape, sum(float64), first values]} of np.load
  npz-resave IN OUT MODE       np.load IN and write OUT with np.savez (MODE=stored) or np.savez_compressed
Prints one JSON object.
"""
import json
import struct
import sys

import numpy as np

DT = {"F32": np.float32, "F16": np.float16, "U32": np.uint32, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        raw = data[8 + n + b : 8 + n + end]
        if e["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(DT[e["dtype"]]).newbyteorder("<"))
        out[name] = (e["dtype"], arr.reshape(e["shape"]))
    return meta, out


def to_dtype_f32(x, dtype):
    """Round float32 values to DTYPE (round to nearest even) and back to float32."""
    x = np.asarray(x, dtype=np.float32)
    if dtype == "F32":
        return x
    if dtype == "F16":
        return x.astype(np.float16).astype(np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint32) << 16
    return rounded.view(np.float32)


def mlx_affine_quantize(w, group_size, bits):
    """MLX's affine rule (DESIGN 4.3), every step in float32."""
    f = np.float32
    n_bins = f((1 << bits) - 1)
    eps = f(1e-7)
    g = w.astype(np.float32).reshape(w.shape[0], -1, group_size)
    w_max = g.max(axis=-1, keepdims=True)
    w_min = g.min(axis=-1, keepdims=True)
    mask = np.abs(w_min) > np.abs(w_max)
    scales = np.maximum((w_max - w_min) / n_bins, eps).astype(np.float32)
    scales = np.where(mask, scales, -scales).astype(np.float32)
    edge = np.where(mask, w_min, w_max).astype(np.float32)
    q0 = np.rint(edge / scales).astype(np.float32)
    nz = q0 != 0
    scales = np.where(nz, edge / np.where(nz, q0, f(1)), scales).astype(np.float32)
    biases = np.where(nz, edge, f(0)).astype(np.float32)
    q = np.clip(np.rint((g - biases) / scales), 0, n_bins).astype(np.uint32)
    return q.reshape(w.shape), scales[..., 0], biases[..., 0], (w_max - w_min)[..., 0] / n_bins


def unpack(words, cols, bits):
    """uint32 words [rows, cols*bits/32] -> codes [rows, cols]: one LSB-first bit stream per row."""
    rows = words.shape[0]
    stream = np.unpackbits(words.astype("<u4").view(np.uint8).reshape(rows, -1), axis=1, bitorder="little")
    stream = stream.reshape(rows, cols, bits).astype(np.uint32)
    return (stream << np.arange(bits, dtype=np.uint32)).sum(axis=-1).astype(np.uint32)


def decode(mlx_dir, source, dtype, group_size, bits):
    import os

    index = json.load(open(os.path.join(mlx_dir, "model.safetensors.index.json")))
    tensors = {}
    meta = {}
    for shard in sorted(set(index["weight_map"].values())):
        m, t = read_safetensors(os.path.join(mlx_dir, shard))
        meta = m
        tensors.update(t)
    _, src = read_safetensors(source)
    report = {"metadata": meta, "quantized": [], "float": [], "worst_error_over_bound": 0.0,
              "codes_equal": True, "scales_equal": True, "biases_equal": True, "max_abs_error": 0.0}
    tol = {"F32": 0.0, "F16": 2.0 ** -11, "BF16": 2.0 ** -8}[dtype]
    for name, (st_dtype, arr) in sorted(tensors.items()):
        if name.endswith(".scales") or name.endswith(".biases"):
            continue
        base = name[: -len(".weight")]
        w = to_dtype_f32(src[name][1], dtype)
        if base + ".scales" not in tensors:
            report["float"].append(name)
            assert st_dtype == dtype, (name, st_dtype)
            assert np.array_equal(arr.astype(np.float32), w), name
            continue
        assert st_dtype == "U32", (name, st_dtype)
        scales = tensors[base + ".scales"][1].astype(np.float32)
        biases = tensors[base + ".biases"][1].astype(np.float32)
        rows, cols = w.shape
        assert arr.shape == (rows, cols * bits // 32), (name, arr.shape)
        assert scales.shape == (rows, cols // group_size), (name, scales.shape)
        codes = unpack(arr, cols, bits)
        deq = (np.repeat(scales, group_size, axis=1) * codes + np.repeat(biases, group_size, axis=1)).astype(np.float32)
        err = np.abs(deq - w).reshape(rows, -1, group_size).max(axis=-1)
        ref_q, ref_s, ref_b, step = mlx_affine_quantize(w, group_size, bits)
        # one step of the group's range, plus the storage rounding of scale and bias
        bound = step * (1 + 1e-6) + tol * (np.abs(ref_s) * ((1 << bits) - 1) + np.abs(ref_b)) + 1e-12
        report["worst_error_over_bound"] = max(report["worst_error_over_bound"], float((err / bound).max()))
        report["max_abs_error"] = max(report["max_abs_error"], float(err.max()))
        report["codes_equal"] &= bool(np.array_equal(codes, ref_q))
        report["scales_equal"] &= bool(np.array_equal(scales, to_dtype_f32(ref_s, dtype)))
        report["biases_equal"] &= bool(np.array_equal(biases, to_dtype_f32(ref_b, dtype)))
        report["quantized"].append(name)
    return report


def npz_describe(path):
    out = {}
    with np.load(path) as z:
        for k in z.files:
            a = z[k]
            if a.dtype.kind == "V":
                vals = (a.view("<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                vals = a.astype(np.float64)
            out[k] = [a.dtype.str, list(a.shape), float(np.asarray(vals, dtype=np.float64).sum()),
                      [float(v) for v in np.asarray(vals).reshape(-1)[:4]]]
    return out


def npz_resave(src, dst, mode):
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    (np.savez if mode == "stored" else np.savez_compressed)(dst, **arrays)
    return {"written": sorted(arrays)}


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "decode":
        print(json.dumps(decode(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))))
    elif cmd == "npz-describe":
        print(json.dumps(npz_describe(sys.argv[2])))
    elif cmd == "npz-resave":
        print(json.dumps(npz_resave(sys.argv[2], sys.argv[3], sys.argv[4])))
    else:
        raise SystemExit("unknown command " + cmd)
