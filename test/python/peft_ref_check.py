#!/usr/bin/python3
"""peft_ref.py called as a module: its unmerged forward against openelm_ref.forward on weights merged
the way CoreNet's Linear.merge does (and the embedding row-wise). Prints JSON max |Δ| per case.

usage: peft_ref_check.py LORA.pt LORA_ALPHA DORA.pt DORA_ALPHA
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'src', 'verify', 'python'))
import openelm_ref  # noqa: E402
import peft_ref  # noqa: E402


def config_of(weights):
    dims = openelm_ref.PRESETS['tiny']
    cfg = openelm_ref.derive_config(dims['layers'], dims['model_dim'], dims['head_dim'], weights['token_embeddings.weight'].shape[0],
                                    num_gqa_groups=dims['num_gqa_groups'], ffn_dim_divisor=dims['ffn_dim_divisor'])
    return cfg


def merged(weights, adapters, embedding):
    out = dict(weights)
    for module, a in adapters.items():
        name = module + '.weight'
        delta = (a.B @ a.A) * a.scaling
        if module == 'token_embeddings':
            if embedding == 'tied':
                out[name] = weights[name] + delta.t()
        elif a.kind == 'lora':
            out[name] = weights[name] + delta
        else:
            norm = torch.linalg.norm(weights[name] + delta, dim=1)
            out[name] = (a.magnitude / norm).view(-1, 1) * (weights[name] + delta)
    return out


def main(argv):
    tokens = [1, 5, 17, 42, 99, 150, 3, 77]
    result = {}
    for path, alpha, label in ((argv[0], float(argv[1]), 'lora'), (argv[2], float(argv[3]), 'dora')):
        sd = peft_ref.load_state_dict(path)
        modules = sorted({k.split('.lora_')[0] for k in sd if '.lora_' in k})
        weights, adapters = peft_ref.load_peft([(path, '')], {m: alpha for m in modules})
        config = config_of(weights)
        for embedding in ('tied', 'none', 'corenet'):
            mine, _ = peft_ref.forward_peft(config, weights, adapters, tokens, embedding)
            ref, _ = openelm_ref.forward(config, merged(weights, adapters, 'tied' if embedding == 'tied' else 'none'), tokens)
            result['%s/%s' % (label, embedding)] = float((mine - ref).abs().max())
            result['%s/scale' % label] = float(ref.abs().max())
        result['%s/adapters' % label] = len(adapters)
    print(json.dumps(result))


if __name__ == '__main__':
    main(sys.argv[1:])
