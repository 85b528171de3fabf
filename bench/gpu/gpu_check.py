#!/usr/bin/env python3
"""GPU check of the PyTorch reference (src/verify/python/openelm_ref.py). Needs torch (+ CUDA), numpy;
no Node.js, no network.

For each preset it builds a model with the real OpenELM shapes and deterministic torch-generated
weights, writes it as a safetensors file in the model dtype (bf16), then times:
  * reference: the file loaded on CPU, computed in f32 (torch threads = --threads);
  * candidates: the file loaded on --device (cuda when available), computed in the model dtype and
    in f32; each forward runs twice (cold, then warm);
and compares every candidate's logits with the reference (max abs diff, top-1 agreement, mean KL).
Where the `msgpack` module is present it also runs one request through the worker protocol
(`openelm_ref.py --worker`, as `openelm verify --backend torch` does).

  python3 bench/gpu/gpu_check.py                       # 3B + 270M, 16 tokens, device auto
  python3 bench/gpu/gpu_check.py --device cpu --preset tiny   # quick local smoke test
Prints a markdown table (and writes it to --out).
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "src", "verify", "python"))
import openelm_ref as ref  # noqa: E402


def prompt(n, seed, vocab):
    s = (seed ^ 0x9E3779B9) & 0xFFFFFFFF or 1
    out = [1]
    while len(out) < n:
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        out.append(3 + s % max(1, vocab - 3))
    return out[:n]


def compare(torch, a, b):
    """max abs, top-1 agreement, mean KL(a || b) of next-token distributions (f64)."""
    a = a.double().cpu()
    b = b.double().cpu()
    max_abs = (a - b).abs().max().item()
    top1 = (a.argmax(-1) == b.argmax(-1)).double().mean().item()
    la = torch.log_softmax(a, -1)
    lb = torch.log_softmax(b, -1)
    kl = (la.exp() * (la - lb)).sum(-1).clamp_min(0).mean().item()
    return max_abs, top1, kl


def sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_run(torch, config, file, device, dtype, tokens):
    t0 = time.perf_counter()
    weights = ref.load_safetensors(file, "cpu")
    weights = {k: v.to(dtype).to(device) for k, v in weights.items()}
    sync(torch, device)
    load = time.perf_counter() - t0
    times = []
    logits = None
    for _ in range(2):
        t1 = time.perf_counter()
        logits, _ = ref.forward(config, weights, tokens)
        sync(torch, device)
        times.append(time.perf_counter() - t1)
    del weights
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return logits.float().cpu(), load, times


def worker_roundtrip(file, config, tokens, device):
    """One forward request through `openelm_ref.py --worker` (length-prefixed MessagePack)."""
    try:
        import msgpack
    except ImportError:
        return None, "msgpack not installed: worker protocol not exercised"
    script = os.path.join(ROOT, "src", "verify", "python", "openelm_ref.py")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, script, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def call(msg):
        body = msgpack.packb(msg, use_bin_type=True)
        proc.stdin.write(struct.pack("<I", len(body)) + body)
        proc.stdin.flush()
        (n,) = struct.unpack("<I", proc.stdout.read(4))
        return msgpack.unpackb(proc.stdout.read(n), raw=False)

    hello = call({"op": "hello"})
    reply = call({"op": "forward", "weights": file, "config": config, "tokens": tokens, "device": device, "dtype": "model"})
    call_exit = {"op": "exit"}
    body = msgpack.packb(call_exit, use_bin_type=True)
    proc.stdin.write(struct.pack("<I", len(body)) + body)
    proc.stdin.close()
    proc.wait(timeout=60)
    if not reply.get("ok"):
        return None, "worker error: %s" % reply.get("message")
    return (hello, reply, time.perf_counter() - t0), None


def main():
    ap = argparse.ArgumentParser(description="GPU check of the OpenELM PyTorch reference")
    ap.add_argument("--preset", default="3B,270M", help="comma-separated: 3B, 1.1B, 450M, 270M, tiny")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=16, help="torch CPU threads for the reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="bf16", help="model dtype of the written file: bf16 | f16 | f32")
    ap.add_argument("--tmp", default=None, help="folder for the temporary model files")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT") or tempfile.gettempdir(), "gpu-results.md"))
    args = ap.parse_args()

    try:
        torch = ref.import_torch()
    except ImportError:
        print("PyTorch is not installed for %s: install it with `%s -m pip install torch`" % (sys.executable, sys.executable))
        return 7
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    try:
        device = ref.resolve_device(torch, args.device)
    except ref.DependencyProblem as e:
        print(str(e))
        return 7
    model_dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    env = "torch %s, python %s, device %s%s, CPU threads %d" % (
        torch.__version__, sys.version.split()[0], device,
        " (%s)" % torch.cuda.get_device_name(0) if device.startswith("cuda") else "", torch.get_num_threads())
    print(env, flush=True)

    rows = []
    notes = []
    tmp = tempfile.mkdtemp(prefix="openelm-gpu-", dir=args.tmp)
    try:
        for preset in args.preset.split(","):
            spec = dict(ref.PRESETS[preset])
            config = ref.derive_config(**spec)
            tokens = prompt(args.tokens, args.seed, config["vocab_size"])
            file = os.path.join(tmp, preset + ".safetensors")
            t0 = time.perf_counter()
            weights = ref.synth_weights(config, seed=args.seed, dtype=model_dtype)
            params = sum(t.numel() for t in weights.values())
            ref.save_safetensors(file, weights, keep_dtype=True)
            del weights
            build = time.perf_counter() - t0
            size = os.path.getsize(file)
            print("%s: %d parameters, %s file %.2f GB, built in %.1f s" % (preset, params, args.dtype, size / 1e9, build), flush=True)

            base, load, times = timed_run(torch, config, file, "cpu", torch.float32, tokens)
            rows.append((preset, "cpu", "f32 (reference)", load, times, None))
            print("  cpu f32: load %.2f s, forward %.2f / %.2f s" % (load, times[0], times[1]), flush=True)
            for dt_name, dt in ((args.dtype, model_dtype), ("f32", torch.float32)):
                if device == "cpu" and dt == torch.float32:
                    continue  # identical to the reference run
                logits, load, times = timed_run(torch, config, file, device, dt, tokens)
                metrics = compare(torch, base, logits)
                rows.append((preset, device, dt_name, load, times, metrics))
                print("  %s %s: load %.2f s, forward %.2f / %.2f s, max abs %.3g, top-1 %.3f, mean KL %.3g"
                      % (device, dt_name, load, times[0], times[1], metrics[0], metrics[1], metrics[2]), flush=True)
            if preset == args.preset.split(",")[-1]:
                result, note = worker_roundtrip(file, config, tokens, device)
                if note:
                    notes.append(note)
                else:
                    hello, reply, wall = result
                    import numpy as np
                    w_logits = torch.from_numpy(np.frombuffer(reply["logits"], dtype="<f4").copy()).reshape(len(tokens), -1)
                    m = compare(torch, base, w_logits)
                    notes.append("worker protocol (%s, torch %s): %s %s, load %.2f s, forward %.2f s, %.1f s wall incl. start; max abs %.3g, top-1 %.3f, mean KL %.3g vs cpu f32"
                                 % (preset, hello["torch"], reply["device"], reply["dtype"], reply["load_s"], reply["forward_s"], wall, m[0], m[1], m[2]))
                    print("  " + notes[-1], flush=True)
            os.remove(file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        "GPU check: " + env + ", %d tokens, weights torch-generated (seed %d), file dtype %s" % (args.tokens, args.seed, args.dtype),
        "",
        "| model | device | compute dtype | load s | forward s (cold) | forward s (warm) | max abs vs cpu f32 | top-1 | mean KL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, dev, dt, load, times, metrics in rows:
        m = ("%.3g" % metrics[0], "%.4f" % metrics[1], "%.3g" % metrics[2]) if metrics else ("-", "-", "-")
        lines.append("| %s | %s | %s | %.2f | %.3f | %.3f | %s | %s | %s |" % ((preset, dev, dt, load, times[0], times[1]) + m))
    lines += [""] + ["- " + n for n in notes]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    try:
        with open(args.out, "w") as f:
            f.write(text)
        print("written to %s" % args.out)
    except OSError as e:
        print("could not write %s: %s" % (args.out, e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
