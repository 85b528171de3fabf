"""Build the `stored` file of quant_ref's exact op from an mlx-lm folder (for test/quant-agreement.test.ts).

  mlx_stored.py MLX_DIR OUT.safetensors

Every `X.weight` with `X.scales` beside it becomes an mlx_affine entry (bits and group_size from
config.json's `quantization`, per-path overrides honoured; dtype = the scales' dtype) with parts
weight/scales/biases; every other tensor a float entry (f32/f16/bf16 by its dtype) with part data.
Names lose the `transformer.` prefix. Prints {canonical: scheme} as JSON.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src", "verify", "python"))

import openelm_ref  # noqa: E402
import quant_ref  # noqa: E402


def main(mlx_dir, out):
    with open(os.path.join(mlx_dir, "config.json")) as f:
        config = json.load(f)
    quant = config.get("quantization") or {}
    _, tensors = openelm_ref.read_safetensors_raw(os.path.join(mlx_dir, "model.safetensors"))
    entries, schemes = {}, {}
    for name in sorted(tensors):
        if not name.endswith(".weight"):
            continue
        base = name[: -len(".weight")]
        canonical = quant_ref.canonical_name(name)
        dt, shape, bits = tensors[name]
        if base + ".scales" in tensors:
            spec = quant.get(base) if isinstance(quant.get(base), dict) else quant
            s_dt, s_shape, scales = tensors[base + ".scales"]
            params = {"bits": spec["bits"], "group_size": spec["group_size"], "dtype": s_dt}
            cols = shape[1] * 32 // params["bits"]
            entries[canonical] = ("mlx_affine", params, [shape[0], cols],
                                  {"weight": bits, "scales": scales, "biases": tensors[base + ".biases"][2]})
        else:
            scheme = {"F32": "f32", "F16": "f16", "BF16": "bf16"}[dt]
            rows, cols = quant_ref.canonical_shape(shape)
            entries[canonical] = (scheme, {}, shape, {"data": bits.reshape(rows, cols)})
        schemes[canonical] = entries[canonical][0]
    quant_ref.write_stored(out, entries)
    print(json.dumps(schemes, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
