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
    """{canonical name: tensor} from a safetensors file (F32/F16/BF16), moved to `device`, cast to
    `dtype` if given. The file is memory-mapped, so only one tensor at a time is copied."""
    torch = import_torch()
    import numpy as np
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len).decode("utf-8"))
    data = np.memmap(path, dtype=np.uint8, mode="r")
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise ValueError("tensor %s has dtype %s (expected F32, F16 or BF16)" % (name, dt))
        start, end = info["data_offsets"]
        raw = np.array(data[base + start:base + end])  # a private copy of this tensor's bytes
        if dt == "F32":
            t = torch.from_numpy(raw.view("<f4"))
        elif dt == "F16":
            t = torch.from_numpy(raw.view("<f2"))
        else:
            t = torch.from_numpy(raw.view("<i2")).view(torch.bfloat16)
        t = t.reshape(info["shape"])
        if dtype is not None:
            t = t.to(dtype)
        # HF files prefix the canonical names with "transformer."; the TS side writes canonical ones.
        out[name[len("transformer."):] if name.startswith("transformer.") else name] = t.to(device)
    del data
    return out


# Raw element types of the quantized parts (quant_ref.py): the little-endian bits of each element.
_ST_RAW = {"F32": "<u4", "F16": "<u2", "BF16": "<u2", "U32": "<u4", "U8": "u1"}


class SafetensorsError(ValueError):
    pass


def read_safetensors_raw(path):
    """(metadata, {name: (dtype, shape, bits)}) of a safetensors file holding F32/F16/BF16/U32/U8
    tensors; `bits` is a read-only numpy view of each element's raw bits (uint32/uint16/uint8) on a
    memory map, so nothing is copied until used. Sizes and offsets are checked against the file."""
    import numpy as np
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError("%s: %d bytes, fewer than the 8-byte header length" % (path, len(head)))
        (header_len,) = struct.unpack("<Q", head)
        if header_len > 100000000 or 8 + header_len > size:
            raise SafetensorsError("%s: header length %d does not fit the file (%d bytes)" % (path, header_len, size))
        try:
            header = json.loads(f.read(header_len).decode("utf-8"))
        except ValueError as e:
            raise SafetensorsError("%s: header is not JSON (%s)" % (path, e))
    metadata = header.pop("__metadata__", None) or {}
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > 8 + header_len else np.zeros(0, np.uint8)
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        dt = info.get("dtype") if isinstance(info, dict) else None
        if dt not in _ST_RAW:
            raise SafetensorsError("%s: tensor %s has dtype %s (expected one of %s)" % (path, name, dt, ", ".join(sorted(_ST_RAW))))
        shape = [int(d) for d in info["shape"]]
        start, end = (int(v) for v in info["data_offsets"])
        item = np.dtype(_ST_RAW[dt]).itemsize
        count = 1
        for d in shape:
            count *= d
        if start < 0 or end != start + count * item or base + end > size:
            raise SafetensorsError("%s: tensor %s: data_offsets [%d, %d] do not hold %s %s in a %d-byte file"
                                   % (path, name, start, end, dt, shape, size))
        out[name] = (dt, shape, data[base + start:base + end].view(_ST_RAW[dt]).reshape(shape))
    return metadata, out


def save_safetensors(path, tensors, keep_dtype=False):
    """Write {name: tensor} as a safetensors file (sorted names): F32, or each tensor's own
    F32/F16/BF16 dtype when keep_dtype. Streams one tensor at a time."""
    torch = import_torch()
    codes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    plan = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        dt = codes.get(t.dtype) if keep_dtype else "F32"
        if dt is None:
            raise ValueError("tensor %s has dtype %s (expected float32, float16 or bfloat16)" % (name, t.dtype))
        n = t.numel() * (4 if dt == "F32" else 2)
        plan.append((name, dt, n))
        offset += n
    header = {}
    offset = 0
    for name, dt, n in plan:
        header[name] = {"dtype": dt, "shape": list(tensors[name].shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, dt, _ in plan:
            t = tensors[name].detach().to("cpu").contiguous()
            if dt == "F32":
                f.write(t.float().numpy().astype("<f4").tobytes())
            elif dt == "F16":
                f.write(t.numpy().astype("<f2").tobytes())
            else:
                f.write(t.view(torch.int16).numpy().astype("<i2").tobytes())


def synth_weights(config, seed=0, device="cpu", dtype=None):
    """Deterministic torch-generated random weights with the real shapes (for benchmarks/GPU checks).
    Generated on `device` (a CUDA generator is much faster for 3B; values differ per device type,
    but are fixed for a given seed and device type), returned in `dtype` on the CPU."""
    torch = import_torch()
    dtype = dtype or torch.float32
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    out = {}
    for name, shape in tensor_shapes(config):
        if len(shape) == 1:
            t = 1 + 0.1 * (torch.rand(shape, generator=g, device=device) * 2 - 1)
        else:
            amp = math.sqrt(3) * (2 if name == "token_embeddings.weight" else 1) / math.sqrt(shape[-1])
            t = amp * (torch.rand(shape, generator=g, device=device) * 2 - 1)
        out[name] = t.to(dtype).cpu()
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


# ---------------------------------------------------------------------------------------------
# worker protocol: 4-byte little-endian length, then one MessagePack map; one reply per request


def resolve_device(torch, device):
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DependencyProblem("CUDA is not available to torch %s in %s: install a CUDA build of PyTorch and an NVIDIA driver, or use --device cpu"
                                % (torch.__version__, sys.executable))
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError("unknown device %r (expected auto, cpu or cuda)" % device)
    return device


class DependencyProblem(Exception):
    pass


def compute_dtype(torch, name, weights_dtype):
    if name in (None, "", "f32", "float32"):
        return torch.float32
    if name == "model":
        return weights_dtype
    if name in ("bf16", "bfloat16"):
        return torch.bfloat16
    if name in ("f16", "float16"):
        return torch.float16
    raise ValueError("unknown dtype %r (expected f32, model, bf16 or f16)" % name)


def _sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def handle(request, cache):
    torch = import_torch()
    op = request.get("op")
    if op == "hello":
        return {"ok": True, "torch": torch.__version__, "python": sys.version.split()[0], "cuda": bool(torch.cuda.is_available())}
    if op == "exact":  # a quantized artifact against its source, exactly (quant_ref.py)
        here = os.path.dirname(os.path.abspath(__file__))
        if here not in sys.path:
            sys.path.insert(0, here)
        import quant_ref
        return quant_ref.exact(request)
    if op == "forward_peft":  # LoRA/DoRA adapters applied unmerged (peft_ref.py, beside this file)
        from peft_ref import handle_forward_peft
        return handle_forward_peft(request, cache)
    if op in ("decode_start", "decode_step"):  # KV-cached generation (decode_ref.py, beside this file)
        from decode_ref import handle_decode
        return handle_decode(request, cache)
    if op != "forward":
        raise ValueError("unknown op %r" % op)
    device = resolve_device(torch, request.get("device"))
    config = request["config"]
    path = request["weights"]
    t0 = time.perf_counter()
    key = (path, device, request.get("dtype"))
    if cache.get("key") != key:
        cache.clear()
        weights = load_safetensors(path, "cpu")
        first = next(iter(weights.values()))
        dt = compute_dtype(torch, request.get("dtype"), first.dtype)
        cache["weights"] = {k: v.to(dt).to(device) for k, v in weights.items()}
        cache["key"] = key
        _sync(torch, device)
    t1 = time.perf_counter()
    tokens = [int(t) for t in request["tokens"]]
    logits, hidden = forward(config, cache["weights"], tokens, bool(request.get("collect_hidden")))
    _sync(torch, device)
    t2 = time.perf_counter()
    reply = {
        "ok": True, "device": device, "dtype": str(next(iter(cache["weights"].values())).dtype).replace("torch.", ""),
        "vocab": int(logits.shape[1]), "tokens": len(tokens),
        "logits": logits.cpu().numpy().astype("<f4").tobytes(),
        "load_s": t1 - t0, "forward_s": t2 - t1,
    }
    if request.get("collect_hidden"):
        reply["hidden"] = [h.cpu().numpy().astype("<f4").tobytes() for h in hidden]
    return reply


def _read_exact(stream, n):
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def worker():
    try:
        import msgpack
    except ImportError:
        sys.stderr.write("openelm-ref: dependency: the Python module msgpack is not installed for %s: install it with `%s -m pip install msgpack` (Debian: apt install python3-msgpack)\n"
                         % (sys.executable, sys.executable))
        return 3
    try:
        torch = import_torch()
    except ImportError:
        sys.stderr.write("openelm-ref: dependency: PyTorch is not installed for %s: install it with `%s -m pip install torch` (CPU or CUDA build)\n"
                         % (sys.executable, sys.executable))
        return 3
    torch.set_grad_enabled(False)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies may reach the real stdout
    stdin = sys.stdin.buffer
    cache = {}
    while True:
        head = _read_exact(stdin, 4)
        if head is None:
            return 0
        (n,) = struct.unpack("<I", head)
        body = _read_exact(stdin, n)
        if body is None:
            return 0
        request = msgpack.unpackb(body, raw=False)
        if request.get("op") == "exit":
            return 0
        try:
            reply = handle(request, cache)
        except DependencyProblem as e:
            reply = {"ok": False, "error": "dependency", "message": str(e)}
        except Exception as e:  # reported to the TS side as one line
            reply = {"ok": False, "error": type(e).__name__, "message": str(e)}
        packed = msgpack.packb(reply, use_bin_type=True)
        out.write(struct.pack("<I", len(packed)))
        out.write(packed)
        out.flush()


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", action="store_true", help="serve length-prefixed MessagePack requests on stdin/stdout")
    ap.add_argument("--weights", help="safetensors file of canonical (or HF) tensors")
    ap.add_argument("--config", help="config.json")
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--out", help="write logits [T, vocab] (F32 tensor `logits`) to this safetensors file")
    args = ap.parse_args(argv)
    if args.worker:
        return worker()
    torch = import_torch()
    device = resolve_device(torch, args.device)
    with open(args.config) as f:
        config = json.load(f)
    weights = load_safetensors(args.weights, "cpu")
    dt = compute_dtype(torch, args.dtype, next(iter(weights.values())).dtype)
    weights = {k: v.to(dt).to(device) for k, v in weights.items()}
    tokens = [int(t) for t in args.tokens.split(",")]
    logits, _ = forward(config, weights, tokens)
    if args.out:
        save_safetensors(args.out, {"logits": logits})
    else:
        print(json.dumps({"tokens": tokens, "shape": list(logits.shape), "first": logits[0, :5].tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
