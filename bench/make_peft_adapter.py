#!/usr/bin/python3
"""A CoreNet LoRA adapter file for a real OpenELM shape (bench input; Debian's torch).

usage: make_peft_adapter.py PRESET OUT.pt [--r 32] [--vocab 32128] [--seed 0]

Apple's recipe (projects/openelm/peft_configs/openelm_lora_*.yaml): adapter "lora", r 32, on
token_embeddings, qkv_proj, out_proj, proj_1, proj_2; names and shapes as lora.py saves them
(lora_A.lora.weight [r, in], lora_B.lora.weight [out, r], lora_embedding_A.lora [r, vocab],
lora_embedding_B.lora [dim, r]). Only the adapter tensors: the base comes from `openelm synth`.
Values are seeded random, B != 0.
"""
import argparse
import collections
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src', 'verify', 'python'))
from openelm_ref import PRESETS, derive_config, tensor_shapes  # noqa: E402


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument('preset', choices=sorted(PRESETS))
    ap.add_argument('out')
    ap.add_argument('--r', type=int, default=32)
    ap.add_argument('--vocab', type=int, default=32128)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    p = dict(PRESETS[args.preset])
    config = derive_config(p.pop('layers'), p.pop('model_dim'), p.pop('head_dim'), args.vocab, **{k: v for k, v in p.items() if k != 'vocab_size'})
    g = torch.Generator().manual_seed(args.seed)
    r = args.r
    sd = collections.OrderedDict()
    for name, shape in tensor_shapes(config):
        module = name[: -len('.weight')]
        if name == 'token_embeddings.weight':
            sd[module + '.lora_embedding_A.lora'] = torch.randn(r, shape[0], generator=g) * 0.01
            sd[module + '.lora_embedding_B.lora'] = torch.randn(shape[1], r, generator=g) * 0.01
        elif module.rsplit('.', 1)[-1] in ('qkv_proj', 'out_proj', 'proj_1', 'proj_2'):
            out_features, in_features = shape
            sd[module + '.lora_A.lora.weight'] = (torch.rand(r, in_features, generator=g) * 2 - 1) / math.sqrt(in_features)
            sd[module + '.lora_B.lora.weight'] = torch.randn(out_features, r, generator=g) * 0.01
    torch.save(sd, args.out)


if __name__ == '__main__':
    main(sys.argv[1:])
