#!/usr/bin/env python3
"""OpenELM with CoreNet LoRA / DoRA adapters applied UNMERGED in the forward pass (no CoreNet import).

Written from corenet/third_party/modeling/lora.py (CoreNet 1aa3acd), evaluation mode (dropout is the
identity), one active adapter per module:

  * `Linear.forward`:  result = base_layer(x) + lora_B(lora_A(x)) * scaling                    (LoRA)
                       result = base_layer(x) + _apply_dora(x, ...)                             (DoRA)
    `_apply_dora`:     weight_norm = ||W + scaling * (B @ A)||_dim1 (detached, no epsilon)
                       mag_norm_scale = (magnitude / weight_norm).view(1, -1)
                       (mag_norm_scale - 1) * F.linear(x, W) + mag_norm_scale * lora_B(lora_A(x)) * scaling
  * `Embedding.forward`: base_layer(x) + (F.embedding(x, Aᵀ) @ Bᵀ) * scaling
  * scaling = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), r = rows of lora_A.
  * general_gpt.py `GeneralGPTModel.forward`: tied logits F.linear(x, self.token_embeddings.weight),
    where `BaseTunerLayer.weight` is the BASE weight: the embedding adapter adapts the input only.

The embedding adapter can be applied three ways (`embedding`): "corenet" (as above), "tied" (the
adapter also adapts the tied output layer: logits += ((h @ B) @ A) * scaling, what merging it into a
tied embedding computes), or "none".

Used by the `forward_peft` op of openelm_ref.py's worker, or as a module: `load_peft`, `forward_peft`.
"""
import math

from openelm_ref import import_torch, layer_dims, load_safetensors, rms_norm, rope_tables, rotate_half

LINEAR_ROLES = ("attn.qkv_proj", "attn.out_proj", "ffn.proj_1", "ffn.proj_2")
PREFIXES = ("module.", "transformer.")


def load_state_dict(path, key=""):
    """A CoreNet `.pt` state dict (training dict: its `key` entry), read with torch.load(weights_only=True);
    `module.` / `transformer.` prefixes removed. A `.safetensors` file (canonical names) also works."""
    torch = import_torch()
    if path.endswith(".safetensors"):
        return load_safetensors(path, "cpu")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    sd = obj[key] if key else obj
    out = {}
    for name, t in sd.items():
        for prefix in PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = t
    return out


class Adapter(object):
    """One module's adapter as lora.py keeps it: A, B (and magnitude), scaling."""

    def __init__(self, module, kind, A, B, magnitude, alpha, rslora):
        self.module, self.kind, self.A, self.B, self.magnitude = module, kind, A, B, magnitude
        self.r = A.shape[0]
        self.scaling = alpha / math.sqrt(self.r) if rslora else alpha / self.r


def load_peft(sources, alphas, rslora=None, device="cpu"):
    """Base weights (canonical names, f32) and adapters ({module: Adapter}) from state dicts.

    sources: [(path, key)] read in order and combined (a base checkpoint, then an adapter file).
    alphas:  {module: lora_alpha} (not stored in CoreNet checkpoints); rslora: {module: bool}.
    """
    torch = import_torch()
    sd = {}
    for path, key in sources:
        for name, t in load_state_dict(path, key).items():
            if name in sd:
                raise ValueError("tensor %s is in two sources" % name)
            sd[name] = t
    rslora = rslora or {}
    weights, adapters, parts = {}, {}, {}
    for name, t in sd.items():
        t = t.detach().to(torch.float32).to(device)
        if name.endswith(".base_layer.weight"):
            weights[name[: -len(".base_layer.weight")] + ".weight"] = t
            continue
        for marker, role in ((".lora_A.", "A"), (".lora_B.", "B"), (".lora_magnitude_vector.", "magnitude"),
                             (".lora_embedding_A.", "A"), (".lora_embedding_B.", "B")):
            if marker in name:
                module = name.split(marker)[0]
                parts.setdefault(module, {})[role] = t
                break
        else:
            weights[name] = t
    for module, p in parts.items():
        if module not in alphas:
            raise ValueError("no lora_alpha given for %s" % module)
        kind = "dora" if "magnitude" in p else "lora"
        adapters[module] = Adapter(module, kind, p["A"], p["B"], p.get("magnitude"), float(alphas[module]), bool(rslora.get(module)))
    return weights, adapters


def peft_linear(x, W, adapter):
    """lora.py Linear.forward (eval mode) on x [..., in]."""
    torch = import_torch()
    F = torch.nn.functional
    result = F.linear(x, W)
    if adapter is None:
        return result
    lora = F.linear(F.linear(x, adapter.A), adapter.B)
    if adapter.kind == "lora":
        return result + lora * adapter.scaling
    lora_weight = adapter.B @ adapter.A
    weight_norm = torch.linalg.norm(W + adapter.scaling * lora_weight, dim=1).detach()
    mag_norm_scale = (adapter.magnitude / weight_norm).view(1, -1)
    return result + (mag_norm_scale - 1) * F.linear(x, W) + mag_norm_scale * lora * adapter.scaling


def peft_embedding(ids, W, adapter):
    """lora.py Embedding.forward: base rows + (F.embedding(ids, Aᵀ) @ Bᵀ) * scaling."""
    torch = import_torch()
    F = torch.nn.functional
    x = F.embedding(ids, W)
    if adapter is None:
        return x
    return x + (F.embedding(ids, adapter.A[:, : W.shape[0]].t()) @ adapter.B.t()) * adapter.scaling


def peft_head(h, W, adapter, embedding):
    """Tied logits: the base weight (CoreNet), or with the adapter on the output too ("tied")."""
    torch = import_torch()
    F = torch.nn.functional
    logits = F.linear(h, W)
    if adapter is not None and embedding == "tied":
        logits = logits + ((h @ adapter.B) @ adapter.A[:, : W.shape[0]]) * adapter.scaling
    return logits


def forward_peft(config, weights, adapters, tokens, embedding="corenet", collect_hidden=False):
    """Logits [T, vocab] (float32) and, on request, each layer's output, adapters unmerged."""
    torch = import_torch()
    F = torch.nn.functional
    if embedding not in ("corenet", "tied", "none"):
        raise ValueError("unknown embedding mode %r (expected corenet, tied or none)" % embedding)
    emb = weights["token_embeddings.weight"]
    emb_adapter = None if embedding == "none" else adapters.get("token_embeddings")
    device = emb.device
    hd = config["head_dim"]
    ids = torch.tensor(tokens, dtype=torch.long, device=device)
    T = len(tokens)

    def linear(x, p, role):
        return peft_linear(x, weights[p + role + ".weight"], adapters.get(p + role))

    x = peft_embedding(ids, emb, emb_adapter)
    cos, sin = rope_tables(T, hd, float(config.get("rope_freq_constant", 10000)), device)
    mask = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    hidden = []
    with torch.no_grad():
        for i, (q_heads, kv_heads, ffn_dim) in enumerate(layer_dims(config)):
            p = "layers.%d." % i
            h = rms_norm(x, weights[p + "attn_norm.weight"])
            qkv = linear(h, p, "attn.qkv_proj").view(T, q_heads + 2 * kv_heads, hd).transpose(0, 1)
            q = rms_norm(qkv[:q_heads], weights[p + "attn.q_norm.weight"])
            k = rms_norm(qkv[q_heads:q_heads + kv_heads], weights[p + "attn.k_norm.weight"])
            v = qkv[q_heads + kv_heads:]
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            groups = q_heads // kv_heads
            k = k.repeat_interleave(groups, dim=0)
            v = v.repeat_interleave(groups, dim=0)
            scores = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(hd)
            probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            attn = torch.matmul(probs, v).transpose(0, 1).reshape(T, q_heads * hd)
            x = x + linear(attn, p, "attn.out_proj")
            h = rms_norm(x, weights[p + "ffn_norm.weight"])
            y = linear(h, p, "ffn.proj_1")
            x = x + linear(F.silu(y[:, :ffn_dim]) * y[:, ffn_dim:], p, "ffn.proj_2")
            if collect_hidden:
                hidden.append(x.float())
        logits = peft_head(rms_norm(x, weights["norm.weight"]), emb, emb_adapter, embedding).float()
    return logits, hidden


def probe(weights, adapters, name, inputs, embedding="corenet"):
    """What one adapted weight computes, unmerged, on probe inputs:
    a linear module's output for inputs [n, in]; "token_embeddings.weight@input" the looked-up rows
    for ids [n]; "token_embeddings.weight@output" the tied logits for hidden states [n, dim]."""
    torch = import_torch()
    emb_adapter = None if embedding == "none" else adapters.get("token_embeddings")
    with torch.no_grad():
        if name == "token_embeddings.weight@input":
            return peft_embedding(inputs.long(), weights["token_embeddings.weight"], emb_adapter)
        if name == "token_embeddings.weight@output":
            return peft_head(inputs, weights["token_embeddings.weight"], emb_adapter, embedding)
        module = name[: -len(".weight")]
        return peft_linear(inputs, weights[name], adapters.get(module))


def handle_forward_peft(request, cache):
    """The worker op `forward_peft` (openelm_ref.py's dispatcher):
    {sources: [[path, key]], alphas: {module: alpha}, rslora: {module: bool}, config, tokens,
     embedding, collect_hidden, device, probes: [{name, shape, data: f32 bytes}]}
    → {logits, hidden?, probes: [{name, shape, data}], adapters: [{module, kind, r, scaling}], ...}."""
    import time
    import numpy as np
    from openelm_ref import _sync, resolve_device
    torch = import_torch()
    device = resolve_device(torch, request.get("device"))
    sources = [(str(p), str(k or "")) for p, k in request["sources"]]
    alphas = {str(k): float(v) for k, v in request["alphas"].items()}
    rslora = {str(k): bool(v) for k, v in (request.get("rslora") or {}).items()}
    t0 = time.perf_counter()
    key = ("peft", tuple(sources), tuple(sorted(alphas.items())), tuple(sorted(rslora.items())), device)
    if cache.get("key") != key:
        cache.clear()
        cache["peft"] = load_peft(sources, alphas, rslora, device)
        cache["key"] = key
        _sync(torch, device)
    weights, adapters = cache["peft"]
    t1 = time.perf_counter()
    embedding = request.get("embedding") or "corenet"
    tokens = [int(t) for t in request["tokens"]]
    logits, hidden = forward_peft(request["config"], weights, adapters, tokens, embedding, bool(request.get("collect_hidden")))
    probes = []
    for item in request.get("probes") or []:
        shape = [int(d) for d in item["shape"]]
        x = torch.from_numpy(np.frombuffer(item["data"], dtype="<f4").copy().reshape(shape)).to(device)
        y = probe(weights, adapters, item["name"], x, embedding).float()
        probes.append({"name": item["name"], "shape": list(y.shape), "data": y.cpu().numpy().astype("<f4").tobytes()})
    _sync(torch, device)
    t2 = time.perf_counter()
    reply = {
        "ok": True, "device": device, "vocab": int(logits.shape[1]), "tokens": len(tokens),
        "logits": logits.cpu().numpy().astype("<f4").tobytes(), "probes": probes,
        "adapters": [{"module": a.module, "kind": a.kind, "r": int(a.r), "scaling": float(a.scaling)} for a in adapters.values()],
        "load_s": t1 - t0, "forward_s": t2 - t1,
    }
    if request.get("collect_hidden"):
        reply["hidden"] = [h.cpu().numpy().astype("<f4").tobytes() for h in hidden]
    return reply
