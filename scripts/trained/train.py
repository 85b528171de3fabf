#!/usr/bin/python3
"""Train fixtures/trained: a SentencePiece tokenizer and a tiny OpenELM on Brown's training split.

Called by scripts/trained/make.ts (which writes config.json, train.txt and heldout.txt into WORK):
    /usr/bin/python3 scripts/trained/train.py WORK [--steps N]
Writes WORK/out/{config.json, generation_config.json, tokenizer.model, model.safetensors, train.json}.

Deterministic: one CPU thread, fixed seeds, the input in a fixed order. The forward pass below is
the one in src/verify/python/openelm_ref.py (DESIGN section 3), batched and differentiable; after
training, the reference's own `forward` recomputes the held-out loss on the saved weights, so the
numbers in train.json are what `openelm verify` will see.
"""
import io
import json
import math
import os
import shutil
import sys
import time

# One BLAS thread (Debian's OpenBLAS, libopenblas0-pthread): the same sums in the same order every run.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src", "verify", "python"))

import openelm_ref as ref  # noqa: E402
import sentencepiece as spm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SEED = 20261203
SEQ = 128
BATCH = 16
LR = 3e-3
WARMUP = 50


def train_tokenizer(work, vocab_size):
    """LLaMA-style SentencePiece BPE: byte fallback, digits split, identity normalisation,
    unk 0 / bos 1 / eos 2, no pad; trained on the training paragraphs only."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        input=os.path.join(work, "train.txt"),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=1 << 16,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in f.read().split("\n\n") if d.strip()]


def token_stream(sp, docs):
    """BOS, then the document's paragraphs joined by "\\n" (a byte-fallback piece), per document."""
    ids = []
    for doc in docs:
        ids.append(1)
        ids.extend(sp.encode(doc.strip("\n")))
    return ids


def init_weights(config, g):
    """Normal(0, 0.02) matrices (out_proj/proj_2 scaled down by depth, as GPT-2/OpenELM do), norms 1."""
    std = 0.02
    depth = config["num_transformer_layers"]
    out = {}
    for name, shape in ref.tensor_shapes(config):
        if len(shape) == 1:
            out[name] = torch.ones(shape)
        else:
            s = std / math.sqrt(2 * depth) if name.endswith(("out_proj.weight", "proj_2.weight")) else std
            out[name] = torch.randn(shape, generator=g) * s
    return out


def forward(config, w, ids):
    """Logits [B, T, vocab] for token ids [B, T]: openelm_ref.forward, batched, with autograd."""
    B, T = ids.shape
    hd = config["head_dim"]
    x = w["token_embeddings.weight"][ids]
    cos, sin = ref.rope_tables(T, hd, float(config["rope_freq_constant"]), "cpu")
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i, (qh, kvh, ffn) in enumerate(ref.layer_dims(config)):
        p = "layers.%d." % i
        h = ref.rms_norm(x, w[p + "attn_norm.weight"])
        qkv = F.linear(h, w[p + "attn.qkv_proj.weight"]).view(B, T, qh + 2 * kvh, hd).transpose(1, 2)
        q, k, v = qkv[:, :qh], qkv[:, qh:qh + kvh], qkv[:, qh + kvh:]
        q = ref.rms_norm(q, w[p + "attn.q_norm.weight"])
        k = ref.rms_norm(k, w[p + "attn.k_norm.weight"])
        q = q * cos + ref.rotate_half(q) * sin
        k = k * cos + ref.rotate_half(k) * sin
        k = k.repeat_interleave(qh // kvh, dim=1)
        v = v.repeat_interleave(qh // kvh, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd)
        probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        attn = torch.matmul(probs, v).transpose(1, 2).reshape(B, T, qh * hd)
        x = x + F.linear(attn, w[p + "attn.out_proj.weight"])
        h = ref.rms_norm(x, w[p + "ffn_norm.weight"])
        y = F.linear(h, w[p + "ffn.proj_1.weight"])
        x = x + F.linear(F.silu(y[..., :ffn]) * y[..., ffn:], w[p + "ffn.proj_2.weight"])
    return F.linear(ref.rms_norm(x, w["norm.weight"]), w["token_embeddings.weight"])


def windows(stream, length):
    """Non-overlapping windows of `length` + 1 tokens (input and shifted target)."""
    n = (len(stream) - 1) // length
    return [stream[i * length:i * length + length + 1] for i in range(n)]


def heldout_loss(config, w, heldout, per_window=None):
    """Mean next-token NLL (nats) over non-overlapping 128-token windows of the held-out stream,
    computed by the reference's own single-sequence forward on the given weights."""
    total, count = 0.0, 0
    for win in windows(heldout, SEQ)[:per_window]:
        logits, _ = ref.forward(config, w, win[:-1])
        total += F.cross_entropy(logits, torch.tensor(win[1:]), reduction="sum").item()
        count += len(win) - 1
    return total / count


def unigram_loss(train, heldout, vocab):
    """Add-one unigram model fitted on the training stream, scored on the held-out targets."""
    counts = torch.bincount(torch.tensor(train), minlength=vocab).double() + 1
    logp = (counts / counts.sum()).log()
    targets = torch.tensor([t for win in windows(heldout, SEQ) for t in win[1:]])
    return -logp[targets].mean().item()


def main(argv):
    work = argv[1]
    steps = int(argv[argv.index("--steps") + 1]) if "--steps" in argv else 800
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    with open(os.path.join(work, "config.json")) as f:
        config = json.load(f)
    vocab = config["vocab_size"]

    t0 = time.time()
    sp_bytes = train_tokenizer(work, vocab)
    sp = spm.SentencePieceProcessor(model_proto=sp_bytes)
    assert sp.get_piece_size() == vocab, sp.get_piece_size()
    train = token_stream(sp, documents(os.path.join(work, "train.txt")))
    heldout = token_stream(sp, documents(os.path.join(work, "heldout.txt")))
    print("tokenizer: %d pieces, %d training tokens, %d held-out tokens (%.0f s)"
          % (vocab, len(train), len(heldout), time.time() - t0), flush=True)

    g = torch.Generator().manual_seed(SEED)
    w = init_weights(config, g)
    params = [t.requires_grad_() for t in w.values()]
    decay = [t for n, t in w.items() if t.dim() == 2]
    nodecay = [t for n, t in w.items() if t.dim() == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95))
    data = torch.tensor(train)
    log = []
    t1 = time.time()
    for step in range(steps):
        lr = LR * min(1.0, (step + 1) / WARMUP) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(train) - SEQ - 1, (BATCH,), generator=g)
        batch = torch.stack([data[s:s + SEQ + 1] for s in starts.tolist()])
        logits = forward(config, w, batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 4)})
            print("step %d loss %.3f (%.0f s)" % (step, loss.item(), time.time() - t1), flush=True)

    final = {n: t.detach().clone() for n, t in w.items()}
    with torch.no_grad():
        model_nll = heldout_loss(config, final, heldout)
    unigram_nll = unigram_loss(train, heldout, vocab)
    report = {
        "seed": SEED, "steps": steps, "batch": BATCH, "sequence": SEQ, "lr": LR,
        "torch": torch.__version__, "sentencepiece": spm.__version__,
        "training_tokens": len(train), "heldout_tokens": len(heldout),
        "heldout_perplexity": round(math.exp(model_nll), 2),
        "unigram_perplexity": round(math.exp(unigram_nll), 2),
        "train_seconds": round(time.time() - t1, 1),
        "loss_log": log,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "loss_log"}), flush=True)

    out = os.path.join(work, "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(sp_bytes)
    # Hugging Face names (OpenELMForCausalLM: "transformer." + the module path).
    ref.save_safetensors(os.path.join(out, "model.safetensors"), {"transformer." + n: t for n, t in final.items()})
    for name in ("config.json", "generation_config.json"):
        shutil.copy(os.path.join(work, name), os.path.join(out, name))
    with open(os.path.join(out, "train.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv)
