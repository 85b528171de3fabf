#!/usr/bin/python3
"""Merge a CoreNet LoRA/DoRA checkpoint the way CoreNet's own layers do, and save the merged weights.

usage: peft_merge.py JOBS.json   (a list of {"checkpoint", "alpha", "out", "key"?, "adapter"?}: one process for all)

corenet/third_party/modeling/lora.py: Linear.get_delta_weight = (lora_B.weight @ lora_A.weight) * scaling,
Linear.merge = W + delta (LoRA) or (magnitude / ||W + delta||_dim1).view(-1, 1) * (W + delta) (DoRA,
_get_weight_norm with scaling=1 because delta already holds it). The embedding gets W + delta.T: that is
what Embedding.forward adds to a looked-up row (F.embedding(ids, A.T) @ B.T * scaling); CoreNet's own
Embedding.merge adds B @ A untransposed, which only runs for square tables. Output: canonical names, f32.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'src', 'verify', 'python'))
from openelm_ref import save_safetensors  # noqa: E402


def load(path, key):
    # The fixtures are our own files; torch 1.13's weights-only loader cannot read a training dict's floats.
    obj = torch.load(path, map_location='cpu')
    return obj[key] if key else obj


def main(argv):
    import json
    with open(argv[0]) as f:
        for job in json.load(f):
            merge(argparse.Namespace(checkpoint=job['checkpoint'], alpha=float(job['alpha']), out=job['out'],
                                     key=job.get('key', ''), adapter=job.get('adapter')))


def merge(args):
    sd = dict(load(args.checkpoint, args.key))
    if args.adapter:
        sd.update(load(args.adapter, ''))
    out = {}
    for name, t in sd.items():
        if '.lora_' in name:
            continue
        module = name[:-len('.base_layer.weight')] if name.endswith('.base_layer.weight') else name[:-len('.weight')]
        W = t.float()
        A = sd.get(module + '.lora_A.lora.weight')
        B = sd.get(module + '.lora_B.lora.weight')
        eA = sd.get(module + '.lora_embedding_A.lora')
        eB = sd.get(module + '.lora_embedding_B.lora')
        m = sd.get(module + '.lora_magnitude_vector.lora')
        if A is not None:
            scaling = args.alpha / A.shape[0]
            delta = (B.float() @ A.float()) * scaling
            if m is None:
                W = W + delta
            else:
                weight_norm = torch.linalg.norm(W + 1 * delta, dim=1).detach()
                W = (m.float() / weight_norm).view(-1, 1) * (W + delta)
        elif eA is not None:
            scaling = args.alpha / eA.shape[0]
            W = W + ((eB.float() @ eA.float()) * scaling).t()[: W.shape[0]]
        out[module + '.weight'] = W
    save_safetensors(args.out, out)


if __name__ == '__main__':
    main(sys.argv[1:])
