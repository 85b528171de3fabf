#!/usr/bin/env python3
"""Golden logits for the committed fixtures, computed by the PyTorch reference (src/verify/python).

Run with Debian's interpreter (torch, numpy):  /usr/bin/python3 scripts/make-golden.py
Writes fixtures/golden/<name>.logits.safetensors (one F32 tensor `logits` [T, vocab]) and
fixtures/golden/<name>.tokens.json (the token ids). Deterministic: same fixture, same bytes.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src", "verify", "python"))
import openelm_ref as ref  # noqa: E402

# BOS, then ids spread over the tiny vocabulary (128), repeats included, 24 positions.
TOKENS = [1, 5, 17, 99, 3, 64, 127, 0, 42, 42, 2, 88, 31, 100, 7, 64, 19, 120, 55, 5, 76, 11, 93, 1]

FIXTURES = {"tiny-hf": os.path.join(ROOT, "fixtures", "tiny-hf")}


def main():
    torch = ref.import_torch()
    torch.set_num_threads(1)  # deterministic reductions
    out_dir = os.path.join(ROOT, "fixtures", "golden")
    os.makedirs(out_dir, exist_ok=True)
    for name, folder in FIXTURES.items():
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        weights = ref.load_safetensors(os.path.join(folder, "model.safetensors"), "cpu", torch.float32)
        logits, _ = ref.forward(config, weights, TOKENS)
        ref.save_safetensors(os.path.join(out_dir, name + ".logits.safetensors"), {"logits": logits})
        with open(os.path.join(out_dir, name + ".tokens.json"), "w") as f:
            json.dump({"fixture": "fixtures/" + name, "tokens": TOKENS, "torch": torch.__version__.split("+")[0]}, f, indent=2)
            f.write("\n")
        print("%s: logits %s, first %s" % (name, list(logits.shape), [round(v, 4) for v in logits[0, :4].tolist()]))


if __name__ == "__main__":
    main()
