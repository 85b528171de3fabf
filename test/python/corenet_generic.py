#!/usr/bin/python3
"""make FILE: torch.save a dict exercising every value kind; compare A B: deep-compare two files.

Compare prints "same" or the first difference (types included: 1 vs 1.0, tuple vs list,
dict vs OrderedDict, Parameter vs Tensor, dtype, strides and storage sharing).
"""
import collections
import sys

import torch


def make(path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = collections.OrderedDict()
    sd['a'] = base
    sd['t'] = base.t()
    sd['slice'] = base[1:3, ::2]
    sd['bf16'] = torch.linspace(-3, 3, 7).to(torch.bfloat16)
    sd['f16'] = torch.tensor([65504.0, -0.0, 1e-7], dtype=torch.float16)
    sd['i64'] = torch.tensor([1, -2, 2 ** 40])
    sd['scalar'] = torch.tensor(3.5)
    sd['empty'] = torch.zeros(0, 3)
    sd['param'] = torch.nn.Parameter(torch.ones(2, 2))
    sd['frozen'] = torch.nn.Parameter(torch.ones(3), requires_grad=False)
    sd['bool'] = torch.tensor([True, False])
    sd['bf16_t'] = torch.arange(12, dtype=torch.float32).reshape(3, 4).to(torch.bfloat16).t()
    sd['i64_t'] = torch.arange(12).reshape(2, 6)[:, 1::2].t()
    sd['u8_t'] = torch.arange(20, dtype=torch.uint8).reshape(4, 5).t()[1:, ::2]
    sd['f64_3d'] = torch.randn(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).permute(2, 0, 1)
    sd._metadata = collections.OrderedDict([('', {'version': 1}), ('layer', {'version': 2})])
    obj = {
        'sd': sd,
        'ints': [0, 1, 255, 256, 65535, 65536, -1, -2 ** 31, 2 ** 31, 2 ** 63, -2 ** 70],
        'floats': (0.0, -0.0, 1.5, 1e-300, float('inf')),
        'mixed': [None, True, False, 'ünïcode', (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], {}, {3: 'int key'}],
        'shared': [sd['a'], sd['a']],
        'many': list(range(2500)),
    }
    torch.save(obj, path)


def same(a, b, where='root'):
    if type(a) is not type(b):
        return f'{where}: type {type(a).__name__} vs {type(b).__name__}'
    if torch.is_tensor(a):
        if a.dtype != b.dtype or a.shape != b.shape or a.stride() != b.stride() or a.storage_offset() != b.storage_offset():
            return f'{where}: tensor layout {a.dtype}{tuple(a.shape)}{a.stride()} vs {b.dtype}{tuple(b.shape)}{b.stride()}'
        if a.requires_grad != b.requires_grad:
            return f'{where}: requires_grad'
        raw = lambda t: t.detach().contiguous().reshape(-1).view(torch.uint8)
        if not torch.equal(raw(a), raw(b)):
            return f'{where}: values differ'
        return None
    if isinstance(a, dict):
        if list(a.keys()) != list(b.keys()):
            return f'{where}: keys {list(a.keys())[:5]} vs {list(b.keys())[:5]}'
        for k in a:
            d = same(a[k], b[k], f'{where}[{k!r}]')
            if d:
                return d
        return same(getattr(a, '_metadata', None), getattr(b, '_metadata', None), f'{where}._metadata')
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f'{where}: length {len(a)} vs {len(b)}'
        for i, (x, y) in enumerate(zip(a, b)):
            d = same(x, y, f'{where}[{i}]')
            if d:
                return d
        return None
    if isinstance(a, float) and str(a) == str(b):
        return None
    return None if a == b else f'{where}: {a!r} vs {b!r}'


def main():
    if sys.argv[1] == 'make':
        make(sys.argv[2])
        return
    if sys.argv[1] == 'digests':
        import hashlib, json
        sd = torch.load(sys.argv[2])['sd']
        print(json.dumps({k: hashlib.sha256(v.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest() for k, v in sd.items()}))
        return
    a = torch.load(sys.argv[2])
    b = torch.load(sys.argv[3])
    diff = same(a, b)
    # Storage sharing: the two entries of 'shared' and sd['a'] / sd['t'] / sd['slice'] share one storage.
    if diff is None:
        ptr = lambda t: t.storage().data_ptr()
        if not (ptr(b['shared'][0]) == ptr(b['shared'][1]) == ptr(b['sd']['a']) == ptr(b['sd']['t']) == ptr(b['sd']['slice'])):
            diff = 'storage sharing lost'
    print(diff or 'same')


if __name__ == '__main__':
    main()
