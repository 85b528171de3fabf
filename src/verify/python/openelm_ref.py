#!/usr/bin/env python3
"""The OpenELM reference forward pass in PyTorch, written from DESIGN.md section 3 (no transformers).

Two ways to use it:
  * as a worker process for `openelm verify --backend torch`: `python3 openelm_ref.py --worker`
    reads length-prefixed MessagePack requests (4-byte little-endian length + msgpack map) from
    stdin and writes replies the same way to stdout;
  * as a module (bench/gpu/gpu_check.py, scripts/make-golden.py): `load_safetensors`, `forward`,
    `synth_weights`, `layer_dims`.

Works with torch 1.13 and 2.x. Compute dtype is the model's (bf16/f16 on cuda) or f32.
"""
import json
import math
import os
import struct
import sys
import time

RMS_NORM_EPS = 1e-6

# ---------------------------------------------------------------------------------------------
# dependencies: import lazily so a missing one becomes a one-line message, not a traceback


def _missing(what, install):
    return {"ok": False, "error": "dependency", "message": "%s is not available to %s: %s" % (what, sys.executable, install)}


def import_torch():
    import torch  # noqa: F401 (raises ImportError when missing)
    return torch


# ---------------------------------------------------------------------------------------------
# config


def make_divisible(v, d):
    n = max(d, int(v + d / 2) // d * d)
    if n < 0.9 * v:
        n += d
    return n


def layer_dims(config):
    """[(q_heads, kv_heads, ffn_dim)] per layer, from the config's per-layer lists."""
    out = []
    ffn = config["ffn_multipliers"]
    n = config["num_transformer_layers"]
    if len(ffn) == 2 and n != 2:
        ffn = _linspace_round(ffn[0], ffn[1], n)
    for i in range(n):
        out.append((int(config["num_query_heads"][i]), int(config["num_kv_heads"][i]),
                    make_divisible(ffn[i] * config["model_dim"], config["ffn_dim_divisor"])))
    return out


def _linspace_round(a, b, n):
    if n == 1:
        return [round(a, 2)]
    return [round(a + (b - a) * i / (n - 1), 2) for i in range(n)]


def derive_config(layers, model_dim, head_dim, vocab_size, num_gqa_groups=4, qkv=(0.5, 1.0), ffn=(0.5, 4.0),
                  ffn_dim_divisor=256, rope_freq_constant=10000):
    """A config derived exactly like CoreNet (used by the GPU check to build real shapes)."""
    qkv_mult = _linspace_round(qkv[0], qkv[1], layers)
    ffn_mult = _linspace_round(ffn[0], ffn[1], layers)
    q_heads = [make_divisible(model_dim * m, head_dim * num_gqa_groups) // head_dim for m in qkv_mult]
    kv_heads = [q // num_gqa_groups for q in q_heads]
    return {
        "num_transformer_layers": layers, "model_dim": model_dim, "head_dim": head_dim,
        "num_gqa_groups": num_gqa_groups, "ffn_multipliers": ffn_mult, "ffn_dim_divisor": ffn_dim_divisor,
        "num_query_heads": q_heads, "num_kv_heads": kv_heads, "vocab_size": vocab_size,
        "rope_freq_constant": rope_freq_constant,
    }


PRESETS = {
    # name: (layers, model_dim, head_dim, ffn_dim_divisor)
    "270M": dict(layers=16, model_dim=1280, head_dim=64, vocab_size=32000),
    "450M": dict(layers=20, model_dim=1536, head_dim=64, vocab_size=32000),
    "1.1B": dict(layers=28, model_dim=2048, head_dim=64, vocab_size=32000),
    "3B": dict(layers=36, model_dim=3072, head_dim=128, vocab_size=32000),
    "tiny": dict(layers=4, model_dim=64, head_dim=8, vocab_size=128, num_gqa_groups=2, ffn_dim_divisor=16),
}


def tensor_shapes(config):
    d, hd = config["model_dim"], config["head_dim"]
    shapes = [("token_embeddings.weight", (config["vocab_size"], d))]
    for i, (q, kv, f) in enumerate(layer_dims(config)):
        p = "layers.%d." % i
        shapes += [
            (p + "attn_norm.weight", (d,)),
            (p + "attn.qkv_proj.weight", ((q + 2 * kv) * hd, d)),
            (p + "attn.q_norm.weight", (hd,)),
            (p + "attn.k_norm.weight", (hd,)),
            (p + "attn.out_proj.weight", (d, q * hd)),
            (p + "ffn_norm.weight", (d,)),
            (p + "ffn.proj_1.weight", (2 * f, d)),
            (p + "ffn.proj_2.weight", (d, f)),
        ]
    shapes.append(("norm.weight", (d,)))
    return shapes


# ---------------------------------------------------------------------------------------------
# safetensors, parsed by hand

_ST_DTYPES = {"F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2)}


def load_safetensors(path, device="cpu", dtype=None):
    """{name: tensor} from a safetensors file (F32/F16/BF16), moved to `device`, cast to `dtype` if given."""
    torch = import_torch()
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len].decode("utf-8"))
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise ValueError("tensor %s has dtype %s (expected F32, F16 or BF16)" % (name, dt))
        start, end = info["data_offsets"]
        raw = bytearray(data[base + start:base + end])
        flat = torch.frombuffer(raw, dtype=torch.int16 if _ST_DTYPES[dt][1] == 2 else torch.float32) if len(raw) else None
        if flat is None:
            t = torch.zeros(info["shape"], dtype=getattr(torch, _ST_DTYPES[dt][0]))
        elif dt == "F32":
            t = flat.reshape(info["shape"])
        else:
            t = flat.view(getattr(torch, _ST_DTYPES[dt][0])).reshape(info["shape"])
        if dtype is not None:
            t = t.to(dtype)
        # HF files prefix the canonical names with "transformer."; the TS side writes canonical ones.
        out[name[len("transformer."):] if name.startswith("transformer.") else name] = t.to(device)
    return out


def save_safetensors(path, tensors):
    """Write {name: float32 tensor} as a safetensors file (sorted names)."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").float().contiguous()
        b = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def synth_weights(config, seed=0, device="cpu", dtype=None):
    """Deterministic torch-generated random weights with the real shapes (for benchmarks/GPU checks)."""
    torch = import_torch()
    dtype = dtype or torch.float32
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    out = {}
    for name, shape in tensor_shapes(config):
        if len(shape) == 1:
            t = 1 + 0.1 * (torch.rand(shape, generator=g) * 2 - 1)
        else:
            amp = math.sqrt(3) * (2 if name == "token_embeddings.weight" else 1) / math.sqrt(shape[-1])
            t = amp * (torch.rand(shape, generator=g) * 2 - 1)
        out[name] = t.to(dtype).to(device)
    return out


# ---------------------------------------------------------------------------------------------
# the forward pass (DESIGN section 3)


def rms_norm(x, weight):
    torch = import_torch()
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + RMS_NORM_EPS)
    return y.to(x.dtype) * weight


def rotate_half(x):
    torch = import_torch()
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_tables(T, head_dim, theta, device):
    torch = import_torch()
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    pos = torch.arange(T, dtype=torch.float32, device=device)
    angles = torch.outer(pos, inv_freq)
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()


def forward(config, weights, tokens, collect_hidden=False):
    """Logits [T, vocab] (float32) and, on request, each layer's output [T, model_dim] (float32)."""
    torch = import_torch()
    F = torch.nn.functional
    emb = weights["token_embeddings.weight"]
    device = emb.device
    hd = config["head_dim"]
    ids = torch.tensor(tokens, dtype=torch.long, device=device)
    T = len(tokens)
    x = emb[ids]
    cos, sin = rope_tables(T, hd, float(config.get("rope_freq_constant", 10000)), device)
    mask = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    hidden = []
    with torch.no_grad():
        for i, (q_heads, kv_heads, ffn_dim) in enumerate(layer_dims(config)):
            p = "layers.%d." % i
            h = rms_norm(x, weights[p + "attn_norm.weight"])
            qkv = F.linear(h, weights[p + "attn.qkv_proj.weight"])
            qkv = qkv.view(T, q_heads + 2 * kv_heads, hd).transpose(0, 1)  # [heads, T, hd]
            q = qkv[:q_heads]
            k = qkv[q_heads:q_heads + kv_heads]
            v = qkv[q_heads + kv_heads:]
            q = rms_norm(q, weights[p + "attn.q_norm.weight"])
            k = rms_norm(k, weights[p + "attn.k_norm.weight"])
            q = (q.float() * cos + rotate_half(q.float()) * sin).to(x.dtype)
            k = (k.float() * cos + rotate_half(k.float()) * sin).to(x.dtype)
            groups = q_heads // kv_heads
            k = k.repeat_interleave(groups, dim=0)
            v = v.repeat_interleave(groups, dim=0)
            scores = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(hd)
            scores = scores.masked_fill(~mask, float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
            attn = torch.matmul(probs, v).transpose(0, 1).reshape(T, q_heads * hd)
            x = x + F.linear(attn, weights[p + "attn.out_proj.weight"])
            h = rms_norm(x, weights[p + "ffn_norm.weight"])
            y = F.linear(h, weights[p + "ffn.proj_1.weight"])
            gate, up = y[:, :ffn_dim], y[:, ffn_dim:]
            x = x + F.linear(F.silu(gate) * up, weights[p + "ffn.proj_2.weight"])
            if collect_hidden:
                hidden.append(x.float())
        h = rms_norm(x, weights["norm.weight"])
        logits = F.linear(h, emb).float()
    return logits, hidden
