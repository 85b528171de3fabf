"""Per-layer OpenELM dims computed the way CoreNet / HF configuration_openelm.py do, for test/config.test.ts.

stdin: JSON list of {num_transformer_layers, model_dim, head_dim, num_gqa_groups, ffn_dim_divisor}
stdout: JSON list of {num_query_heads, num_kv_heads, ffn_multipliers, ffn_dims}
"""
import json
import sys

import numpy as np


def make_divisible(v, divisor=8, min_value=None):
    # corenet/utils/math_utils.py
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


out = []
for c in json.load(sys.stdin):
    n = c["num_transformer_layers"]
    qkv = [round(v, 2) for v in np.linspace(0.5, 1.0, num=n, dtype=float)]
    query_dims = [int(make_divisible(c["model_dim"] * m, divisor=c["head_dim"] * c["num_gqa_groups"])) for m in qkv]
    q_heads = [int(q // c["head_dim"]) for q in query_dims]
    ffn = [round(v, 2) for v in np.linspace(0.5, 4.0, num=n, dtype=float)]
    out.append({
        "num_query_heads": q_heads,
        "num_kv_heads": [q // c["num_gqa_groups"] for q in q_heads],
        "ffn_multipliers": ffn,
        "ffn_dims": [int(make_divisible(m * c["model_dim"], divisor=c["ffn_dim_divisor"])) for m in ffn],
    })
json.dump(out, sys.stdout)
