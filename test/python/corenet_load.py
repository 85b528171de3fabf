#!/usr/bin/python3
"""Load a .pt with real PyTorch and print a JSON summary (tensor digests, counters, optimizer state).

usage: corenet_load.py [--unsafe] FILE... (prints a JSON list, one summary per file)
By default torch.load(weights_only=True). torch 1.13's weights-only loader cannot read Python
floats (BINFLOAT), which training checkpoints contain; --unsafe is for those files, all of which
the tests wrote themselves.
"""
import hashlib
import json
import sys

import torch


def digest(t):
    t = t.detach().contiguous()
    raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
    return hashlib.sha256(raw).hexdigest()


def tensors(sd):
    ptrs = {}
    out = {}
    for k, v in sorted(sd.items()):  # storages numbered in name order, whatever the dict order
        ptr = v.storage().data_ptr()
        out[k] = {'dtype': str(v.dtype).replace('torch.', ''), 'shape': list(v.shape), 'sha256': digest(v),
                  'contiguous': v.is_contiguous(), 'storage': ptrs.setdefault(ptr, len(ptrs)),
                  'offset': v.storage_offset(), 'stride': list(v.stride()), 'parameter': isinstance(v, torch.nn.Parameter)}
    return out


def plain(v):
    if torch.is_tensor(v):
        return {'tensor': digest(v), 'dtype': str(v.dtype).replace('torch.', ''), 'shape': list(v.shape)}
    if isinstance(v, dict):
        return {'dict' if type(v) is dict else type(v).__name__: [[plain(k), plain(x)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return {type(v).__name__: [plain(x) for x in v]}
    if isinstance(v, float):
        return {'float': repr(v)}
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return {'int': str(v)}
    return {type(v).__name__: repr(v)}


def summary(path, unsafe):
    obj = torch.load(path, weights_only=not unsafe)
    if 'model_state_dict' in obj:
        out = {'kind': 'training', 'tensors': tensors(obj['model_state_dict']),
               'rest': {k: plain(v) for k, v in obj.items() if k != 'model_state_dict'},
               'metadata': plain(getattr(obj['model_state_dict'], '_metadata', None))}
    else:
        out = {'kind': 'state_dict', 'type': type(obj).__name__, 'tensors': tensors(obj)}
    out['order'] = list((obj['model_state_dict'] if out['kind'] == 'training' else obj).keys())
    return out


def main():
    unsafe = '--unsafe' in sys.argv
    files = [a for a in sys.argv[1:] if a != '--unsafe']
    json.dump([summary(f, unsafe) for f in files], sys.stdout, sort_keys=True)


if __name__ == '__main__':
    main()
