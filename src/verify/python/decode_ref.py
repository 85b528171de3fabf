"""KV-cached decoding for `openelm generate --backend torch`, on the reference forward pass of
openelm_ref.py (same weights handover, same arithmetic; keys cached after k_norm and RoPE).

Worker ops (dispatched by openelm_ref.handle):
  decode_start {weights, config, tokens, device, dtype}: load the weights, run the prompt, reply
      with the last position's logits; the cache lives in the worker until the next decode_start;
  decode_step {tokens}: run the next token(s) against the cache, reply with the last logits.
"""
import math
import time

from openelm_ref import (compute_dtype, import_torch, layer_dims, load_safetensors, resolve_device, rms_norm,
                         rope_tables, rotate_half, _sync)


def forward_cached(config, weights, tokens, past):
    """Logits [vocab] (float32) of the last of `tokens`, run after the positions in `past`
    ([(k, v)] per layer, [kv_heads, P, hd] each, or None); returns (logits, new past)."""
    torch = import_torch()
    F = torch.nn.functional
    emb = weights["token_embeddings.weight"]
    device = emb.device
    hd = config["head_dim"]
    T = len(tokens)
    P = 0 if past is None else past[0][0].shape[1]
    x = emb[torch.tensor(tokens, dtype=torch.long, device=device)]
    cos, sin = rope_tables(P + T, hd, float(config.get("rope_freq_constant", 10000)), device)
    cos, sin = cos[P:], sin[P:]
    # query t (position P + t) sees keys 0..P + t
    mask = torch.ones(T, P + T, dtype=torch.bool, device=device).tril(diagonal=P)
    present = []
    with torch.no_grad():
        for i, (q_heads, kv_heads, ffn_dim) in enumerate(layer_dims(config)):
            p = "layers.%d." % i
            h = rms_norm(x, weights[p + "attn_norm.weight"])
            qkv = F.linear(h, weights[p + "attn.qkv_proj.weight"]).view(T, q_heads + 2 * kv_heads, hd).transpose(0, 1)
            q = rms_norm(qkv[:q_heads], weights[p + "attn.q_norm.weight"])
            k = rms_norm(qkv[q_heads:q_heads + kv_heads], weights[p + "attn.k_norm.weight"])
            v = qkv[q_heads + kv_heads:]
            q = (q.float() * cos + rotate_half(q.float()) * sin).to(x.dtype)
            k = (k.float() * cos + rotate_half(k.float()) * sin).to(x.dtype)
            if past is not None:
                k = torch.cat((past[i][0], k), dim=1)
                v = torch.cat((past[i][1], v), dim=1)
            present.append((k, v))
            groups = q_heads // kv_heads
            kr = k.repeat_interleave(groups, dim=0)
            vr = v.repeat_interleave(groups, dim=0)
            scores = torch.matmul(q, kr.transpose(1, 2)) / math.sqrt(hd)
            scores = scores.masked_fill(~mask, float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(vr.dtype)
            attn = torch.matmul(probs, vr).transpose(0, 1).reshape(T, q_heads * hd)
            x = x + F.linear(attn, weights[p + "attn.out_proj.weight"])
            h = rms_norm(x, weights[p + "ffn_norm.weight"])
            y = F.linear(h, weights[p + "ffn.proj_1.weight"])
            x = x + F.linear(F.silu(y[:, :ffn_dim]) * y[:, ffn_dim:], weights[p + "ffn.proj_2.weight"])
        h = rms_norm(x[-1:], weights["norm.weight"])
        logits = F.linear(h, emb).float()[0]
    return logits, present


def handle_decode(request, cache):
    torch = import_torch()
    op = request["op"]
    t0 = time.perf_counter()
    if op == "decode_start":
        device = resolve_device(torch, request.get("device"))
        weights = load_safetensors(request["weights"], "cpu")
        dt = compute_dtype(torch, request.get("dtype"), next(iter(weights.values())).dtype)
        cache["decode"] = {"config": request["config"], "device": device, "past": None,
                           "weights": {k: v.to(dt).to(device) for k, v in weights.items()}}
    state = cache.get("decode")
    if state is None:
        raise ValueError("decode_step before decode_start")
    t1 = time.perf_counter()
    logits, state["past"] = forward_cached(state["config"], state["weights"], [int(t) for t in request["tokens"]], state["past"])
    _sync(torch, state["device"])
    t2 = time.perf_counter()
    return {"ok": True, "device": state["device"], "vocab": int(logits.shape[0]), "position": int(state["past"][0][0].shape[1]),
            "logits": logits.cpu().numpy().astype("<f4").tobytes(), "load_s": t1 - t0, "forward_s": t2 - t1}
