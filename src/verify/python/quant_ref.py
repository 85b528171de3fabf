#!/usr/bin/env python3
"""Reference quantizers for the exact check of quantized artifacts (issue 12), written from the
runtimes' own definitions, not from the TypeScript writers:

  f32, f16, bf16  IEEE 754 round to nearest even (torch's own casts); a NaN is quieted with its sign
                  and top payload bits kept (what x86 F16C/AVX512-BF16 and ARM FCVT/BFCVT do)
  mlx_affine      MLX's CPU `affine_quantize` (mlx/backend/cpu/quantized.cpp, `quantize`); its
                  Metal/CUDA kernel (round half away from zero, w_max starting at 0) is the second,
                  documented rule that `compare` accepts
  gguf_q8_0       ggml's `quantize_row_q8_0_ref` (ggml/src/ggml-quants.c), the rule llama-quantize
                  and gguf-py's quants.py write files with
  gguf_q4_0 … gguf_q5_1  ggml's `quantize_row_q4_0_ref` … `quantize_row_q5_1_ref` (ggml-quants.c),
                  what llama-quantize writes without an importance matrix
  gguf_q2_k … gguf_q6_k  ggml's `quantize_row_q2_K_ref` … `quantize_row_q6_K_ref`: the K-quants'
                  searches (make_qx_quants, make_q3_quants, make_qkx2_quants) step by step in f32
  onnx_int8       onnxruntime's quantizer rule for QInt8 symmetric per-channel weights (quant_utils
                  compute_scale_zp / quantize_nparray): weight-only int8 of model_quantized.onnx

Canonical encoding (the contract with the TS side). Every tensor is 2-D [rows, cols] (a 1-D
tensor is [1, n]); a scheme turns it into named parts, each a little-endian array with `rows`
leading rows. Here a part is a numpy array of each element's raw bits: uint8 (U8), uint16 (F16,
BF16), uint32 (U32, F32).
  f32 / f16 / bf16   data    [rows, cols]                  the values, cast
  mlx_affine         weight  U32 [rows, cols*bits/32]      codes, LSB-first, one bit stream per row
                     scales  dtype [rows, cols/group_size]
                     biases  dtype [rows, cols/group_size]
      params {bits: 2|3|4|5|6|8, group_size: 32|64|128, dtype: F32|F16|BF16}; the source is cast to
      dtype first (mlx-lm casts, then quantizes); dequantized f32(f32(scale*q) + bias), cast to dtype
  gguf_q8_0          blocks  U8 [rows, cols/32*34]          per 32 values: f16 d (LE), 32 int8 codes
  onnx_int8          weight  U8 [rows, cols] (int8 bits)   scales F32 [rows, 1]; x = q * scale

Arithmetic. Each step of a rule is one f32 operation, in torch (CPU or CUDA, torch 1.13 and 2.x):
  * every division is by a tensor: for `cuda_tensor / python_number` torch multiplies by the
    reciprocal (one more rounding), so divisors are made with `_like`;
  * torch.round is half to even (C rint); C roundf and Metal round (half away from zero) are built
    from trunc, exactly (the fraction x - trunc(x) of an f32 is exact);
  * no a*b+c in one kernel (FMA): dequantization multiplies, then adds;
  * numpy only moves bits (packing, comparing): no float arithmetic there, so no silent f64.

Use: `quantize`, `dequantize`, `compare`, `take_accepted`, `exact` (the worker's `op: "exact"`), or
  python3 quant_ref.py quantize   --in SRC.safetensors --out STORED.safetensors (--plan PLAN.json | --scheme S [--params JSON])
                                  [--dequantized VALUES.safetensors]
  python3 quant_ref.py dequantize --in STORED.safetensors --out VALUES.safetensors
  python3 quant_ref.py compare    --expected STORED --actual STORED --source SRC.safetensors
SRC holds F32/F16/BF16 tensors; PLAN is {name: {"scheme", "params"}}; STORED holds `<name>::<part>`
tensors in their raw dtypes and __metadata__["openelm.plan"] = {name: {scheme, params, shape}}
(the `stored` file of the exact op); VALUES holds each tensor dequantized, F32, in its own shape;
compare prints {name: result} as JSON. Errors print one line `quant_ref: <kind>: <message>`, exit 2.
"""
import json
import os
import struct
import sys
import time

import numpy as np

SCHEMES = ("f32", "f16", "bf16", "mlx_affine", "gguf_q8_0", "onnx_int8", "onnx_q4",
           "gguf_q4_0", "gguf_q4_1", "gguf_q5_0", "gguf_q5_1",
           "gguf_q2_k", "gguf_q3_k", "gguf_q4_k", "gguf_q5_k", "gguf_q6_k")
Q4_BLOCK = 32
FLOAT_SCHEMES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
MLX_BITS = (2, 3, 4, 5, 6, 8)
MLX_GROUP_SIZES = (32, 64, 128)
MLX_DTYPES = ("F32", "F16", "BF16")
MLX_EPS = 1e-7  # MLX's `float eps = 1e-7`: the tensors it is put in are f32, so it is f32(1e-7)
# The largest finite value of T, where MLX's Metal kernel starts its running minimum.
FINITE_MAX = {"F32": 3.4028234663852886e38, "F16": 65504.0, "BF16": 3.3895313892515355e38}
Q8_0_BLOCK = 32
Q8_0_BYTES = 2 + Q8_0_BLOCK
# Accepted documented differences per scheme (compare): `kind` names in the order they are tried.
ACCEPTED_KINDS = {"mlx_affine": ("tie-half-away", "mlx-metal-rule"), **{k: ("ggml-fma",) for k in
                  ("gguf_q2_k", "gguf_q3_k", "gguf_q4_k", "gguf_q5_k", "gguf_q6_k")}}
BITS_DTYPE = {"U8": np.uint8, "U32": np.uint32, "F32": np.uint32, "F16": np.uint16, "BF16": np.uint16}
CHUNK_ELEMENTS = 1 << 22  # values per row block: bounds the f32 temporaries to ~16 MiB each
PLAN_KEY = "openelm.plan"
PART_SEP = "::"


class SchemeError(ValueError):
    """A scheme, its params, a plan or a stored part that does not fit the contract."""


def _torch():
    import torch
    return torch


# ---------------------------------------------------------------------------------------------
# schemes and their parts


def canonical_shape(shape):
    """[rows, cols] of a tensor shape: 1-D tensors are one row."""
    shape = [int(d) for d in shape]
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    raise SchemeError("shape %s is not 1-D or 2-D" % (shape,))


def check_params(scheme, params, cols):
    """The params of `scheme` (validated, with nothing extra) for rows of `cols` values."""
    params = dict(params or {})
    if scheme in MLX_FP:
        return _fp_check_params(scheme, params, cols)
    if scheme in FLOAT_SCHEMES:
        if params:
            raise SchemeError("scheme %s takes no params, got %s" % (scheme, json.dumps(params, sort_keys=True)))
        return {}
    if scheme == "onnx_q4":
        extra = sorted(set(params) - {"dtype"})
        if extra or params.get("dtype", "F32") not in ("F32", "F16"):
            raise SchemeError("onnx_q4 takes only dtype F32 or F16, got %s" % json.dumps(params, sort_keys=True))
        return {"dtype": params.get("dtype", "F32")}
    if scheme == "onnx_int8":
        if params:
            raise SchemeError("scheme onnx_int8 takes no params, got %s" % json.dumps(params, sort_keys=True))
        return {}
    if scheme in GGML_K:
        if params:
            raise SchemeError("scheme %s takes no params, got %s" % (scheme, json.dumps(params, sort_keys=True)))
        if cols % QK_K:
            raise SchemeError("%s needs rows of a multiple of %d values, got %d" % (scheme, QK_K, cols))
        return {}
    if scheme in GGML_LEGACY:
        if params:
            raise SchemeError("scheme %s takes no params, got %s" % (scheme, json.dumps(params, sort_keys=True)))
        if cols % LEGACY_BLOCK:
            raise SchemeError("%s needs rows of a multiple of %d values, got %d" % (scheme, LEGACY_BLOCK, cols))
        return {}
    if scheme == "gguf_q8_0":
        if params:
            raise SchemeError("scheme gguf_q8_0 takes no params, got %s" % json.dumps(params, sort_keys=True))
        if cols % Q8_0_BLOCK:
            raise SchemeError("gguf_q8_0 needs rows of a multiple of %d values, got %d" % (Q8_0_BLOCK, cols))
        return {}
    if scheme == "mlx_affine":
        extra = sorted(set(params) - {"bits", "group_size", "dtype"})
        if extra:
            raise SchemeError("mlx_affine: unknown params %s" % ", ".join(extra))
        bits, group_size, dtype = params.get("bits"), params.get("group_size"), params.get("dtype")
        if bits not in MLX_BITS:
            raise SchemeError("mlx_affine: bits must be one of %s, got %r" % (MLX_BITS, bits))
        if group_size not in MLX_GROUP_SIZES:
            raise SchemeError("mlx_affine: group_size must be one of %s, got %r" % (MLX_GROUP_SIZES, group_size))
        if dtype not in MLX_DTYPES:
            raise SchemeError("mlx_affine: dtype must be one of %s, got %r" % (MLX_DTYPES, dtype))
        if cols % group_size:
            raise SchemeError("mlx_affine: rows of %d values do not split into groups of %d" % (cols, group_size))
        return {"bits": bits, "group_size": group_size, "dtype": dtype}
    raise SchemeError("unknown scheme %r (expected one of %s)" % (scheme, ", ".join(SCHEMES)))


def layout(scheme, params, rows, cols):
    """{part: (dtype, [rows, n])} of a [rows, cols] tensor under `scheme`."""
    params = check_params(scheme, params, cols)
    if scheme in MLX_FP:
        return _fp_layout(scheme, params, rows, cols)
    if scheme in FLOAT_SCHEMES:
        return {"data": (FLOAT_SCHEMES[scheme], [rows, cols])}
    if scheme == "gguf_q8_0":
        return {"blocks": ("U8", [rows, cols // Q8_0_BLOCK * Q8_0_BYTES])}
    if scheme in GGML_LEGACY:
        return {"blocks": ("U8", [rows, cols // LEGACY_BLOCK * _legacy_layout(scheme)[0]])}
    if scheme in GGML_K:
        return {"blocks": ("U8", [rows, cols // QK_K * GGML_K[scheme][0]])}
    if scheme == "onnx_int8":
        return {"weight": ("U8", [rows, cols]), "scales": ("F32", [rows, 1])}
    if scheme == "onnx_q4":
        nb = -(-cols // Q4_BLOCK)
        return {"blocks": ("U8", [rows, nb * Q4_BLOCK // 2]), "scales": (params["dtype"], [rows, nb])}
    groups = cols // params["group_size"]
    return {
        "weight": ("U32", [rows, cols * params["bits"] // 32]),
        "scales": (params["dtype"], [rows, groups]),
        "biases": (params["dtype"], [rows, groups]),
    }


# ---------------------------------------------------------------------------------------------
# f32 <-> 16-bit bits, on torch tensors


def cast_bits(x, dtype):
    """The bits of f32 tensor `x` cast to `dtype` with round to nearest even: int16 (F16, BF16) or
    int32 (F32) tensor. Finite values and infinities are torch's own casts; a NaN keeps its sign and
    top payload bits and gets the quiet bit (torch would give its one canonical NaN instead)."""
    torch = _torch()
    x = x.float().contiguous()
    xb = x.view(torch.int32)
    if dtype == "F32":
        return xb.clone()
    if dtype not in ("F16", "BF16"):
        raise SchemeError("unknown float dtype %r" % dtype)
    bits = x.to(torch.float16 if dtype == "F16" else torch.bfloat16).view(torch.int16)
    nan = torch.isnan(x)
    if not bool(nan.any()):
        return bits
    if dtype == "F16":
        quiet = ((xb >> 16) & 0x8000) | 0x7E00 | ((xb >> 13) & 0x03FF)
    else:
        quiet = ((xb >> 16) & 0xFFFF) | 0x0040
    return torch.where(nan, quiet.to(torch.int16), bits)


def widen(bits, dtype):
    """f32 tensor of the values whose `dtype` bits are `bits` (as cast_bits returns them); exact."""
    torch = _torch()
    if dtype == "F32":
        return bits.to(torch.int32).view(torch.float32)
    if dtype == "F16":
        return bits.to(torch.int16).view(torch.float16).float()
    if dtype == "BF16":
        return bits.to(torch.int16).view(torch.bfloat16).float()
    raise SchemeError("unknown float dtype %r" % dtype)


def round_to(x, dtype):
    """`x` rounded to `dtype` (nearest even) and widened back to f32."""
    return widen(cast_bits(x, dtype), dtype)


def _to_numpy_bits(t, dtype):
    a = t.cpu().numpy()
    return a.view(np.uint32) if dtype in ("F32", "U32") else a.view(np.uint16)


def _from_numpy_bits(a, device):
    """A torch int tensor with the same bits as numpy uint16/uint32 array `a`."""
    torch = _torch()
    a = np.ascontiguousarray(a)
    signed = a.view(np.int16) if a.dtype == np.uint16 else a.view(np.int32)
    return torch.from_numpy(signed.copy()).to(device)


# ---------------------------------------------------------------------------------------------
# rounding


def _rint(x):
    """Half to even (C rint in the default rounding mode)."""
    return _torch().round(x)


def _round_away(x):
    """Half away from zero (C roundf, Metal round); NaN and infinities pass through."""
    torch = _torch()
    t = torch.trunc(x)
    return torch.where((x - t).abs() >= 0.5, t + torch.sign(x), t)


def _like(t, value):
    return _torch().full_like(t, value)


# ---------------------------------------------------------------------------------------------
# MLX affine


def _mlx_params(g, bits, rule, dtype):
    """f32 (scale, bias) per group (rows of `g`, f32 values already rounded to `dtype`) under MLX's
    CPU rule ('cpu') or its Metal/CUDA kernel ('metal'). NaNs are skipped by the min/max (std::max
    and Metal's max keep the running value when the new one is NaN)."""
    torch = _torch()
    nan = torch.isnan(g)
    inf = _like(g, float("inf"))
    w_max = torch.where(nan, -inf, g).amax(dim=1)
    w_min = torch.where(nan, inf, g).amin(dim=1)
    if rule == "metal":
        w_max = torch.clamp(w_max, min=0.0)  # `float w_max = 0`
        w_min = torch.clamp(w_min, max=FINITE_MAX[dtype])  # `float w_min = Limits<T>::max`
    n_bins = _like(w_max, float((1 << bits) - 1))
    span = (w_max - w_min) / n_bins
    # CPU: std::max(span, eps) returns span when it is NaN; Metal's max returns the non-NaN one.
    scale = torch.maximum(span, _like(span, MLX_EPS)) if rule == "cpu" else torch.fmax(span, _like(span, MLX_EPS))
    side = w_min.abs() > w_max.abs()
    scale = torch.where(side, scale, -scale)
    edge = torch.where(side, w_min, w_max)
    q0 = (_rint if rule == "cpu" else _round_away)(edge / scale)
    moved = q0 != 0
    scale = torch.where(moved, edge / q0, scale)
    bias = torch.where(moved, edge, torch.zeros_like(edge))
    return scale, bias


def _mlx_codes(g, scale, bias, bits, rule):
    """uint8 codes of each group's values: clip(round((w - bias) / scale), 0, 2^bits - 1). A NaN
    quotient gives 0 under the CPU rule (float-to-int of NaN on arm64, and on x86-64 after the shift
    into the word) and 2^bits - 1 under Metal's (its min returns the non-NaN operand)."""
    torch = _torch()
    n = float((1 << bits) - 1)
    x = (g - bias[:, None]) / scale[:, None]
    q = _rint(x) if rule == "cpu" else torch.fmin(_round_away(x), _like(x, n))
    return torch.nan_to_num(torch.clamp(q, 0.0, n), nan=0.0).to(torch.uint8)


def pack_codes(codes, bits):
    """uint32 words [rows, cols*bits/32] of uint8 codes [rows, cols]: one LSB-first bit stream per
    row (element 0 in the lowest bits of word 0; 3/5/6-bit codes may straddle two words)."""
    rows, cols = codes.shape
    planes = np.unpackbits(codes.reshape(rows, cols, 1), axis=2, bitorder="little")[:, :, :bits]
    stream = np.packbits(planes.reshape(rows, cols * bits), axis=1, bitorder="little")
    return np.ascontiguousarray(stream).view("<u4").astype(np.uint32).reshape(rows, cols * bits // 32)


def unpack_codes(words, bits, cols):
    """uint8 codes [rows, cols] of packed words [rows, cols*bits/32] (inverse of pack_codes)."""
    words = np.ascontiguousarray(words, dtype="<u4")
    rows = words.shape[0]
    stream = words.view(np.uint8).reshape(rows, -1)
    planes = np.unpackbits(stream, axis=1, bitorder="little").reshape(rows, cols, bits)
    byte = np.zeros((rows, cols, 8), np.uint8)
    byte[:, :, :bits] = planes
    return np.packbits(byte, axis=2, bitorder="little").reshape(rows, cols)


def _mlx_quantize(x, params, rule="cpu"):
    bits, group_size, dtype = params["bits"], params["group_size"], params["dtype"]
    rows, cols = x.shape
    g = round_to(x, dtype).reshape(-1, group_size)
    scale, bias = _mlx_params(g, bits, rule, dtype)
    codes = _mlx_codes(g, scale, bias, bits, rule).reshape(rows, cols).cpu().numpy()
    groups = cols // group_size
    return {
        "weight": pack_codes(codes, bits),
        "scales": _to_numpy_bits(cast_bits(scale, dtype), dtype).reshape(rows, groups),
        "biases": _to_numpy_bits(cast_bits(bias, dtype), dtype).reshape(rows, groups),
    }


def _mlx_dequantize(parts, rows, cols, params, device):
    torch = _torch()
    bits, group_size, dtype = params["bits"], params["group_size"], params["dtype"]
    groups = cols // group_size
    codes = torch.from_numpy(unpack_codes(parts["weight"], bits, cols)).to(device).float()
    scale = widen(_from_numpy_bits(parts["scales"], device), dtype).reshape(rows, groups, 1)
    bias = widen(_from_numpy_bits(parts["biases"], device), dtype).reshape(rows, groups, 1)
    v = torch.add(torch.mul(scale, codes.reshape(rows, groups, group_size)), bias)  # two f32 roundings
    return round_to(v.reshape(rows, cols), dtype)


# ---------------------------------------------------------------------------------------------
# GGUF Q8_0


def _int8_low_byte(q):
    """uint8 bit patterns of the int8 codes: ggml stores `roundf(x)` into int8_t, which compilers do
    as a 32-bit conversion keeping the low byte; out of range (NaN, infinities, |q| >= 2^31) that
    conversion is x86-64's 0x80000000, low byte 0. (In range q always is: |x * id| <= 127.) A q that
    is not an integer is truncated toward zero, as C's conversion is (the legacy blocks rely on it)."""
    torch = _torch()
    if bool((q.abs() <= 127).all()):  # the usual case (NaN fails the test)
        return q.to(torch.int8).view(torch.uint8)
    ok = torch.isfinite(q) & (q.abs() < 2.0 ** 31)
    qi = torch.where(ok, q, torch.zeros_like(q)).to(torch.int64)
    return (qi & 0xFF).to(torch.uint8)


def _ggml_f16_bits(d):
    """ggml's GGML_FP32_TO_FP16: round to nearest even; any NaN becomes sign | 0x7E00."""
    torch = _torch()
    sign = (d.view(torch.int32) >> 16) & 0x8000
    return torch.where(torch.isnan(d), (sign | 0x7E00).to(torch.int16), cast_bits(d, "F16"))


def _q8_0_quantize(x):
    torch = _torch()
    rows, cols = x.shape
    b = x.float().reshape(-1, Q8_0_BLOCK)
    # amax = MAX(amax, fabsf(v)) in order, with MAX(a, b) = a > b ? a : b: a NaN is taken (and then
    # replaced by the next value), exactly as the C loop does.
    if bool(torch.isnan(b).any()):
        amax = torch.zeros(b.shape[0], dtype=torch.float32, device=b.device)
        for j in range(Q8_0_BLOCK):
            v = b[:, j].abs()
            amax = torch.where(amax > v, amax, v)
    else:
        amax = b.abs().amax(dim=1)  # the same without NaNs (fabsf makes every zero +0)
    d = amax / _like(amax, 127.0)
    inv = torch.where(d != 0, _like(d, 1.0) / d, torch.zeros_like(d))  # `d ? 1.0f/d : 0.0f`
    codes = _int8_low_byte(_round_away(b * inv[:, None])).cpu().numpy()
    dbits = _ggml_f16_bits(d).cpu().numpy().view(np.uint16)
    out = np.empty((b.shape[0], Q8_0_BYTES), np.uint8)
    out[:, 0] = dbits & 0xFF
    out[:, 1] = dbits >> 8
    out[:, 2:] = codes
    return {"blocks": out.reshape(rows, cols // Q8_0_BLOCK * Q8_0_BYTES)}


def _q8_0_dequantize(parts, rows, cols, device):
    torch = _torch()
    blocks = np.ascontiguousarray(parts["blocks"], dtype=np.uint8).reshape(-1, Q8_0_BYTES)
    dbits = blocks[:, 0].astype(np.uint16) | (blocks[:, 1].astype(np.uint16) << 8)
    d = widen(_from_numpy_bits(dbits, device), "F16")
    q = torch.from_numpy(blocks[:, 2:].view(np.int8).copy()).to(device).float()
    return torch.mul(d[:, None], q).reshape(rows, cols)


# ---------------------------------------------------------------------------------------------
# onnx_int8: ONNX weight-only int8 (model_quantized.onnx), from onnxruntime's quantizer rule for
# QInt8 symmetric per-channel weights (onnxruntime/python/tools/quantization/quant_utils.py:
# compute_scale_zp with symmetric=True, qmin/qmax -127/127, quantize_nparray), not from our TS.


def _onnx_int8_quantize(x):
    torch = _torch()
    # rmin = min(min(x), 0), rmax = max(max(x), 0); absmax = max(|rmin|, |rmax|) per output row.
    rmin = torch.clamp(x.amin(dim=1), max=0.0)
    rmax = torch.clamp(x.amax(dim=1), min=0.0)
    absmax = torch.maximum(rmin.abs(), rmax)
    # scale = (rmax' - rmin') / (qmax - qmin) = 2 absmax / 254, correctly rounded to f32 (computed
    # in f64 as onnxruntime's Python does, then cast), and 1 where it would be below f32's tiny.
    a2 = absmax.double() * 2.0
    scale = (a2 / _like(a2, 254.0)).float()
    scale = torch.where(scale < torch.finfo(torch.float32).tiny, torch.ones_like(scale), scale)
    # numpy (x.astype(f32) / scale).round(): f32 division, half to even; then clip to [-127, 127].
    q = torch.clamp(torch.round(x / scale[:, None]), -127.0, 127.0).to(torch.int8)
    return {"weight": q.cpu().numpy().view(np.uint8), "scales": scale.cpu().numpy().view(np.uint32)[:, None]}


def _onnx_int8_dequantize(parts, device):
    torch = _torch()
    q = torch.from_numpy(np.ascontiguousarray(parts["weight"]).view(np.int8).copy()).to(device).float()
    scale = _from_numpy_bits(np.ascontiguousarray(parts["scales"], dtype=np.uint32), device).view(torch.float32)
    return q * scale  # DequantizeLinear: (q - 0) * scale in f32


def _compare_onnx_int8(e, a):
    s_eq = (e["scales"] == a["scales"])[:, 0]
    elem = (e["weight"] == a["weight"]) & s_eq[:, None]
    block_eq = elem.all(axis=1, keepdims=True)
    part = np.where(~s_eq, 0, 1).astype(np.int8)[:, None]
    return elem, block_eq, part


# ---------------------------------------------------------------------------------------------
# onnx_q4: MatMulNBits 4-bit blocks of 32, symmetric (no zero-point input: the runtime's default 8),
# from onnxruntime's MLAS BlockwiseQuantizer::quantizeAndTranspose + range2scale (q4_dq.cpp).


def _onnx_q4_quantize(x, dtype):
    torch = _torch()
    rows, cols = x.shape
    nb = -(-cols // Q4_BLOCK)
    g = torch.zeros((rows, nb * Q4_BLOCK), dtype=torch.float32, device=x.device)
    g[:, :cols] = x  # the quantizer zero-pads K to whole blocks
    g = g.reshape(rows, nb, Q4_BLOCK)
    mn, mx = g.amin(dim=2), g.amax(dim=2)
    m = torch.where(mx.abs() > mn.abs(), mx, mn)  # `fabsf(max) > fabsf(min) ? max : min`
    scale = -m / _like(m, 8.0)  # ScaleT(-max / 8): exact in f32, then rounded to the scale type
    if dtype == "F16":
        scale = round_to(scale, "F16")
    rs = torch.where(scale != 0, _like(scale, 1.0) / scale, torch.zeros_like(scale))
    y = g * rs[:, :, None]
    y = y + _like(y, 8.0)
    q = torch.nan_to_num(torch.clamp(_round_away(y), 0.0, 15.0), nan=0.0).to(torch.uint8).cpu().numpy()
    packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).reshape(rows, nb * Q4_BLOCK // 2)
    return {"blocks": packed, "scales": _to_numpy_bits(cast_bits(scale, dtype) if dtype == "F16" else scale, dtype)}


def _onnx_q4_dequantize(parts, cols, dtype, device):
    torch = _torch()
    b = np.ascontiguousarray(parts["blocks"], dtype=np.uint8)
    rows = b.shape[0]
    nb = -(-cols // Q4_BLOCK)
    codes = np.empty((rows, nb * Q4_BLOCK), np.uint8)
    codes[:, 0::2] = b & 0x0F
    codes[:, 1::2] = b >> 4
    q = torch.from_numpy(codes.astype(np.int16)).to(device).float().reshape(rows, nb, Q4_BLOCK)
    bits = _from_numpy_bits(np.ascontiguousarray(parts["scales"]), device)
    scale = widen(bits, dtype) if dtype == "F16" else bits.view(torch.float32)
    return ((q - 8.0) * scale[:, :, None]).reshape(rows, nb * Q4_BLOCK)[:, :cols]


def _compare_onnx_q4(e, a, cols):
    n, nb = e["scales"].shape
    ec = np.empty((n, nb * Q4_BLOCK), np.uint8)
    ac = np.empty((n, nb * Q4_BLOCK), np.uint8)
    ec[:, 0::2], ec[:, 1::2] = e["blocks"] & 0x0F, e["blocks"] >> 4
    ac[:, 0::2], ac[:, 1::2] = a["blocks"] & 0x0F, a["blocks"] >> 4
    s_eq = e["scales"] == a["scales"]
    codes_eq = (ec == ac).reshape(n, nb, Q4_BLOCK)
    elem = (codes_eq & s_eq[:, :, None]).reshape(n, nb * Q4_BLOCK)[:, :cols]
    block_eq = s_eq & codes_eq.all(axis=2)
    part = np.where(~s_eq, 0, 1).astype(np.int8)
    return elem, block_eq, part


# ---------------------------------------------------------------------------------------------
# the three entry points


# ---------------------------------------------------------------------------------------------
# gguf_q4_0, gguf_q4_1, gguf_q5_0, gguf_q5_1: ggml's 32-value legacy blocks, from ggml-quants.c's
# `quantize_row_*_ref` and `dequantize_row_*` (not from our TS). Block: f16 d, [f16 m (affine)],
# [u32 qh: bit j = fifth bit of code j (5-bit)], 16 bytes qs: code j in the low nibble of qs[j],
# code j+16 in the high nibble.
#   symmetric (q4_0, q5_0): m = the first value of largest |v| (0 when all are 0), d = m / -8 (-16),
#     code = min(15 (31), (int8_t)(x*id + 8.5 (16.5))), value = (code - 8 (16)) * d
#   affine (q4_1, q5_1): d = (max - min) / 15 (31), code = (int8_t)((x - min)*id + 0.5) capped at 15
#     for q4_1, (uint8_t)(...) uncapped for q5_1; value = code * d + m (multiply, then add)
# `(int8_t)f` is the x86-64 conversion: truncate to int32 and keep the low byte.
LEGACY_BLOCK = 32
GGML_LEGACY = {"gguf_q4_0": (4, False), "gguf_q4_1": (4, True), "gguf_q5_0": (5, False), "gguf_q5_1": (5, True)}


def _legacy_layout(scheme):
    """(block bytes, header bytes, qh offset or None, qs offset)."""
    bits, affine = GGML_LEGACY[scheme]
    header = 4 if affine else 2
    qs = header + (4 if bits == 5 else 0)
    return qs + LEGACY_BLOCK // 2, header, (header if bits == 5 else None), qs


def _legacy_quantize(x, scheme):
    torch = _torch()
    bits, affine = GGML_LEGACY[scheme]
    nbytes, _, qh_at, qs_at = _legacy_layout(scheme)
    rows, cols = x.shape
    b = x.float().reshape(-1, LEGACY_BLOCK)
    n = b.shape[0]
    levels = (1 << bits) - 1
    if affine:
        lo = b.amin(dim=1)
        hi = b.amax(dim=1)
        d = (hi - lo) / _like(hi, float(levels))
        inv = torch.where(d != 0, _like(d, 1.0) / d, torch.zeros_like(d))
        q = ((b - lo[:, None]) * inv[:, None]) + _like(b, 0.5)
        codes = _int8_low_byte(q).to(torch.int64)  # the cast truncates, as C's does
        if bits == 4:
            codes = torch.clamp(torch.where(codes >= 128, codes - 256, codes), max=15) & 0xFF
    else:
        a = b.abs()
        a = torch.where(torch.isnan(a), _like(a, -1.0), a)
        idx = torch.argmax(a, dim=1)  # first of the largest (C keeps the first: `amax < fabsf(v)`)
        m = b.gather(1, idx[:, None])[:, 0]
        m = torch.where(a.gather(1, idx[:, None])[:, 0] > 0, m, torch.zeros_like(m))
        offset = 8.0 if bits == 4 else 16.0
        d = m / _like(m, -offset)
        inv = torch.where(d != 0, _like(d, 1.0) / d, torch.zeros_like(d))
        codes = _int8_low_byte((b * inv[:, None]) + _like(b, offset + 0.5)).to(torch.int64)
        codes = torch.clamp(torch.where(codes >= 128, codes - 256, codes), max=levels) & 0xFF
    c = codes.cpu().numpy().astype(np.uint32)
    out = np.zeros((n, nbytes), np.uint8)
    dbits = _ggml_f16_bits(d).cpu().numpy().view(np.uint16)
    out[:, 0] = dbits & 0xFF
    out[:, 1] = dbits >> 8
    if affine:
        mbits = _ggml_f16_bits(lo).cpu().numpy().view(np.uint16)
        out[:, 2] = mbits & 0xFF
        out[:, 3] = mbits >> 8
    half = LEGACY_BLOCK // 2
    out[:, qs_at:qs_at + half] = ((c[:, :half] & 0x0F) | ((c[:, half:] & 0x0F) << 4)).astype(np.uint8)
    if qh_at is not None:
        qh = np.zeros(n, np.uint32)
        for j in range(LEGACY_BLOCK):
            qh |= ((c[:, j] >> 4) & 1) << np.uint32(j)
        out[:, qh_at:qh_at + 4] = qh.astype("<u4").view(np.uint8).reshape(n, 4)
    return {"blocks": out.reshape(rows, cols // LEGACY_BLOCK * nbytes)}


def _legacy_codes(blocks, scheme):
    """[n, 32] int codes of [n, block bytes] legacy blocks."""
    bits, _ = GGML_LEGACY[scheme]
    _, _, qh_at, qs_at = _legacy_layout(scheme)
    half = LEGACY_BLOCK // 2
    qs = blocks[:, qs_at:qs_at + half].astype(np.int32)
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=1)
    if qh_at is not None:
        qh = np.ascontiguousarray(blocks[:, qh_at:qh_at + 4]).view("<u4")[:, 0].astype(np.int64)
        codes |= (((qh[:, None] >> np.arange(LEGACY_BLOCK)) & 1) << 4).astype(np.int32)
    return codes


def _legacy_dequantize(parts, rows, cols, scheme, device):
    torch = _torch()
    bits, affine = GGML_LEGACY[scheme]
    nbytes = _legacy_layout(scheme)[0]
    blocks = np.ascontiguousarray(parts["blocks"], dtype=np.uint8).reshape(-1, nbytes)
    d = widen(_from_numpy_bits(blocks[:, 0].astype(np.uint16) | (blocks[:, 1].astype(np.uint16) << 8), device), "F16")
    codes = _legacy_codes(blocks, scheme)
    if not affine:
        codes = codes - (8 if bits == 4 else 16)
    q = torch.from_numpy(codes.astype(np.float32)).to(device)
    v = torch.mul(q, d[:, None])
    if affine:
        m = widen(_from_numpy_bits(blocks[:, 2].astype(np.uint16) | (blocks[:, 3].astype(np.uint16) << 8), device), "F16")
        v = torch.add(v, m[:, None])
    return v.reshape(rows, cols)


def _legacy_compare(e, a, scheme):
    nbytes, header = _legacy_layout(scheme)[:2]
    n = e["blocks"].shape[0]
    eb = e["blocks"].reshape(-1, nbytes)
    ab = a["blocks"].reshape(-1, nbytes)
    header_eq = (eb[:, :header] == ab[:, :header]).all(axis=1)
    codes_eq = _legacy_codes(eb, scheme) == _legacy_codes(ab, scheme)
    elem = (codes_eq & header_eq[:, None]).reshape(n, -1)
    block_eq = (eb == ab).all(axis=1).reshape(n, -1)
    part = np.where(header_eq, 0, 1).astype(np.int8).reshape(n, -1)
    return elem, block_eq, part


# ---------------------------------------------------------------------------------------------
# gguf_q2_k … gguf_q6_k: ggml's K-quants, from ggml-quants.c's `quantize_row_*_ref` and
# `dequantize_row_*` (not from our TS). 256-value super-blocks; every search runs on all sub-blocks
# at once (torch f32 tensors, one elementwise op per C operation), sums accumulate column by column
# in the C's order, and `nearest_int` is ggml's: add 1.5*2^23 in f32, keep the low mantissa bits.
QK_K = 256
# scheme: (block bytes, scale byte ranges for compare)
GGML_K = {"gguf_q2_k": (84, ((0, 16), (80, 84))), "gguf_q3_k": (110, ((96, 110),)), "gguf_q4_k": (144, ((0, 16),)),
          "gguf_q5_k": (176, ((0, 16),)), "gguf_q6_k": (210, ((192, 210),))}
GROUP_MAX_EPS = np.float32(1e-15)


def _f32(t, value):
    return _torch().full_like(t, float(np.float32(value)))


def _fmaf(a, b, c):
    """f32 a*b + c rounded once (C's fmaf), elementwise: a*b is exact in f64; the f64 sum is made
    round-to-odd (TwoSum error e; e != 0 and an even last bit: one ulp toward e), so rounding it to
    f32 is rounding the exact value once."""
    torch = _torch()
    p = a.double() * b.double()
    c = c.double() if torch.is_tensor(c) else torch.full_like(p, float(c))
    s = p + c
    bb = s - p
    e = (p - (s - bb)) + (c - bb)
    bits = s.view(torch.int64)
    odd = (e != 0) & ((bits & 1) == 0) & torch.isfinite(s)
    bits = torch.where(odd, torch.where((e > 0) == (s > 0), bits + 1, bits - 1), bits)
    return bits.view(torch.float64).float()


def _mad(fused, a, b, c):
    """C's `c + a*b` (`s += a*b`; `c - a*b` is _mad(fused, -a, b, c)): two f32 roundings, or one
    when `fused` (what a build that contracts it into an FMA computes: rule ggml-fma)."""
    return _fmaf(a, b, c) if fused else c + a * b


def _nearest_int(t):
    """int64 tensor: ggml's nearest_int of f32 tensor `t`."""
    torch = _torch()
    v = (t + _f32(t, 12582912.0)).contiguous().view(torch.int32).to(torch.int64)
    return (v & 0x007FFFFF) - 0x00400000


def _half_f32(bits_u16, device):
    return widen(_from_numpy_bits(np.ascontiguousarray(bits_u16, dtype=np.uint16), device), "F16")


def _first_absmax(X):
    """(value, |value|) of the first element of largest magnitude per row (C: `if (ax > amax)`)."""
    torch = _torch()
    ax = X.abs()
    idx = torch.argmax(torch.where(torch.isnan(ax), torch.full_like(ax, -1.0), ax), dim=1, keepdim=True)  # C skips NaN
    mx, amax = X.gather(1, idx)[:, 0], ax.gather(1, idx)[:, 0]
    none = ~(amax > 0)  # nothing beat the starting 0: C keeps max = amax = +0
    return torch.where(none, torch.zeros_like(mx), mx), torch.where(none, torch.zeros_like(amax), amax)


def _make_qx_quants(X, nmax, fused=False):
    """make_qx_quants(n, nmax, x, L, rmse_type=1, NULL) on each row of X: (scale, L int64 0..2*nmax-1)."""
    torch = _torch()
    n = X.shape[1]
    mx, amax = _first_absmax(X)
    zero = amax < _f32(amax, GROUP_MAX_EPS)
    mx_safe = torch.where(zero, torch.ones_like(mx), mx)
    w = X * X
    wx = w * X

    def trial(iscale):
        l = torch.clamp(_nearest_int(iscale[:, None] * X), -nmax, nmax - 1)
        lf = l.to(torch.float32)
        sumlx = torch.zeros_like(mx)
        suml2 = torch.zeros_like(mx)
        for i in range(n):
            sumlx = _mad(fused, wx[:, i], lf[:, i], sumlx)
            suml2 = _mad(fused, w[:, i] * lf[:, i], lf[:, i], suml2)
        return l, sumlx, suml2

    l, sumlx, suml2 = trial(_f32(mx, -nmax) / mx_safe)
    L = l + nmax
    scale = torch.where(suml2 != 0, sumlx / torch.where(suml2 != 0, suml2, torch.ones_like(suml2)), torch.zeros_like(suml2))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        k = _mad(fused, _f32(mx, 0.1), _f32(mx, step), _f32(mx, nmax))
        l, sumlx, suml2 = trial(-k / mx_safe)
        upd = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = torch.where(upd[:, None], l + nmax, L)
        new_scale = sumlx / torch.where(suml2 > 0, suml2, torch.ones_like(suml2))
        scale = torch.where(upd, new_scale, scale)
        best = torch.where(upd, new_scale * sumlx, best)
    L = torch.where(zero[:, None], torch.zeros_like(L), L)
    return torch.where(zero, torch.zeros_like(scale), scale), L


def _make_q3_quants(X, nmax, fused=False):
    """make_q3_quants(n, nmax, x, L, do_rmse=true) on each row: (scale, L int64 0..2*nmax-1)."""
    torch = _torch()
    n = X.shape[1]
    mx, amax = _first_absmax(X)
    zero = amax < _f32(amax, GROUP_MAX_EPS)
    mx_safe = torch.where(zero, torch.ones_like(mx), mx)
    iscale = _f32(mx, -nmax) / mx_safe
    L = torch.clamp(_nearest_int(iscale[:, None] * X), -nmax, nmax - 1)
    Lf = L.to(torch.float32)
    w = X * X
    wx = w * X
    sumlx = torch.zeros_like(mx)
    suml2 = torch.zeros_like(mx)
    for i in range(n):
        sumlx = _mad(fused, wx[:, i], Lf[:, i], sumlx)
        suml2 = _mad(fused, w[:, i] * Lf[:, i], Lf[:, i], suml2)
    # Up to 5 passes of one-code moves; a pass that changes nothing leaves the state as it was, so
    # running all 5 on every row equals the C's early exit.
    for _ in range(5):
        for i in range(n):
            li = Lf[:, i]
            slx = _mad(fused, -wx[:, i], li, sumlx)
            pos = slx > 0
            sl2 = _mad(fused, -(w[:, i] * li), li, suml2)
            nl = torch.clamp(_nearest_int((X[:, i] * sl2) / torch.where(pos, slx, torch.ones_like(slx))), -nmax, nmax - 1)
            nlf = nl.to(torch.float32)
            moved = pos & (nl != L[:, i])
            slx2 = _mad(fused, wx[:, i], nlf, slx)
            sl22 = _mad(fused, w[:, i] * nlf, nlf, sl2)
            take = moved & (sl22 > 0) & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22)
            L[:, i] = torch.where(take, nl, L[:, i])
            Lf[:, i] = torch.where(take, nlf, li)
            sumlx = torch.where(take, slx2, sumlx)
            suml2 = torch.where(take, sl22, suml2)
    scale = torch.where(suml2 > 0, sumlx / torch.where(suml2 > 0, suml2, torch.ones_like(suml2)), torch.zeros_like(suml2))
    L = torch.where(zero[:, None], torch.zeros_like(L), L + nmax)
    return torch.where(zero, torch.zeros_like(scale), scale), L


def _make_qkx2_quants(X, W, nmax, rmin, rdelta, nstep, use_mad, fused=False):
    """make_qkx2_quants on each row of X with weights W: (scale, the_min, L int64 0..nmax)."""
    torch = _torch()
    n = X.shape[1]
    mn = X[:, 0].clone()
    mx = X[:, 0].clone()
    sum_w = W[:, 0].clone()
    sum_x = sum_w * X[:, 0]
    for i in range(1, n):
        mn = torch.where(X[:, i] < mn, X[:, i], mn)
        mx = torch.where(X[:, i] > mx, X[:, i], mx)
        sum_w = sum_w + W[:, i]
        sum_x = _mad(fused, W[:, i], X[:, i], sum_x)
    mn = torch.where(mn > 0, torch.zeros_like(mn), mn)
    flat = mx == mn

    def codes(iscale, m):
        return torch.clamp(_nearest_int(iscale[:, None] * (X - m[:, None])), 0, nmax)

    def error(scale, m, L):
        Lf = L.to(torch.float32)
        err = torch.zeros_like(scale)
        for i in range(n):
            diff = _mad(fused, scale, Lf[:, i], m) - X[:, i]
            diff = diff.abs() if use_mad else diff * diff
            err = _mad(fused, W[:, i], diff, err)
        return err

    rng = torch.where(flat, torch.ones_like(mx), mx - mn)
    iscale = _f32(mx, nmax) / rng
    scale = _f32(iscale, 1.0) / iscale
    L = codes(iscale, mn)
    best = error(scale, mn, L)
    for step in range(nstep + 1):
        k = _mad(fused, _f32(mx, rdelta), _f32(mx, step), _f32(mx, rmin)) + _f32(mx, nmax)
        rng = torch.where(flat, torch.ones_like(mx), mx - mn)
        laux = codes(k / rng, mn)
        lf = laux.to(torch.float32)
        sum_l = torch.zeros_like(mx)
        sum_l2 = torch.zeros_like(mx)
        sum_xl = torch.zeros_like(mx)
        for i in range(n):
            wl = W[:, i] * lf[:, i]
            sum_l = _mad(fused, W[:, i], lf[:, i], sum_l)
            sum_l2 = _mad(fused, wl, lf[:, i], sum_l2)
            sum_xl = _mad(fused, wl, X[:, i], sum_xl)
        # a*b - c*d: clang fuses the left product, fma(a, b, -(c*d))
        D = _mad(fused, sum_w, sum_l2, -(sum_l * sum_l))
        ok = D > 0
        Ds = torch.where(ok, D, torch.ones_like(D))
        this_scale = _mad(fused, sum_w, sum_xl, -(sum_x * sum_l)) / Ds
        this_min = _mad(fused, sum_l2, sum_x, -(sum_l * sum_xl)) / Ds
        pos = this_min > 0
        this_scale = torch.where(pos, sum_xl / torch.where(pos, sum_l2, torch.ones_like(sum_l2)), this_scale)
        this_min = torch.where(pos, torch.zeros_like(this_min), this_min)
        cur = error(this_scale, this_min, laux)
        upd = ok & (cur < best) & ~flat
        L = torch.where(upd[:, None], laux, L)
        best = torch.where(upd, cur, best)
        scale = torch.where(upd, this_scale, scale)
        mn = torch.where(upd, this_min, mn)
    L = torch.where(flat[:, None], torch.zeros_like(L), L)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    return scale, -mn, L


def _positive_max(v):
    """C's `float m = 0; if (v > m) m = v;` over each row: the largest positive value, else +0 (never -0)."""
    torch = _torch()
    m = v.amax(dim=1)
    return torch.where(m > 0, m, torch.zeros_like(m))


def _requantize(X, d, lo, hi, offset, dm=None):
    """Codes clamp(nearest_int((x + dm) / d), lo, hi) + offset per row; rows with d == 0 are None-masked by the caller."""
    torch = _torch()
    ds = torch.where(d != 0, d, torch.ones_like(d))
    num = X if dm is None else X + dm[:, None]
    return torch.clamp(_nearest_int(num / ds[:, None]), lo, hi) + offset


def _k_quantize(x, scheme, fused=False):
    torch = _torch()
    rows, cols = x.shape
    b = x.float().reshape(-1, QK_K)
    nb = b.shape[0]
    nbytes = GGML_K[scheme][0]
    out = np.zeros((nb, nbytes), np.uint8)
    dev = b.device
    if scheme == "gguf_q6_k":
        X = b.reshape(nb * 16, 16)
        scales, L = _make_qx_quants(X, 32, fused)
        scales = scales.reshape(nb, 16)
        mscale, mabs = _first_absmax(scales)
        zero = mabs < _f32(mabs, GROUP_MAX_EPS)
        iscale = _f32(mscale, -128.0) / torch.where(zero, torch.ones_like(mscale), mscale)
        dbits = _ggml_f16_bits(_f32(iscale, 1.0) / iscale).cpu().numpy().view(np.uint16)
        sc = torch.clamp(_nearest_int(iscale[:, None] * scales), max=127)
        d = _half_f32(dbits, dev)[:, None] * sc.to(torch.float32)
        d = d.reshape(-1)
        req = _requantize(X, d, -32, 31, 32)
        L = torch.where((d != 0)[:, None], req, L).reshape(nb, QK_K).cpu().numpy()
        sc = sc.cpu().numpy()
        zero = zero.cpu().numpy()
        for h in range(2):
            Lh = L[:, 128 * h:128 * (h + 1)]
            q1, q2, q3, q4 = Lh[:, 0:32], Lh[:, 32:64], Lh[:, 64:96], Lh[:, 96:128]
            out[:, 64 * h:64 * h + 32] = (q1 & 0xF) | ((q3 & 0xF) << 4)
            out[:, 64 * h + 32:64 * h + 64] = (q2 & 0xF) | ((q4 & 0xF) << 4)
            out[:, 128 + 32 * h:128 + 32 * (h + 1)] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
        out[:, 192:208] = (sc & 0xFF).astype(np.uint8)
        out[:, 208] = dbits & 0xFF
        out[:, 209] = dbits >> 8
        out[zero] = 0
    elif scheme in ("gguf_q4_k", "gguf_q5_k"):
        bits = 4 if scheme == "gguf_q4_k" else 5
        X = b.reshape(nb * 8, 32)
        sum_x2 = torch.zeros(X.shape[0], dtype=torch.float32, device=dev)
        for i in range(32):
            sum_x2 = _mad(fused, X[:, i], X[:, i], sum_x2)
        av_x = torch.sqrt(sum_x2 / _f32(sum_x2, 32.0))
        W = av_x[:, None] + X.abs()
        if bits == 4:
            scales, mins, L = _make_qkx2_quants(X, W, 15, -1.0, 0.1, 20, False, fused)
        else:
            scales, mins, L = _make_qkx2_quants(X, W, 31, -0.5, 0.1, 15, False, fused)
        scales = scales.reshape(nb, 8)
        mins = mins.reshape(nb, 8)
        max_scale = _positive_max(scales)
        max_min = _positive_max(mins)
        inv_scale = torch.where(max_scale > 0, _f32(max_scale, 63.0) / torch.where(max_scale > 0, max_scale, torch.ones_like(max_scale)), torch.zeros_like(max_scale))
        inv_min = torch.where(max_min > 0, _f32(max_min, 63.0) / torch.where(max_min > 0, max_min, torch.ones_like(max_min)), torch.zeros_like(max_min))
        ls = torch.clamp(_nearest_int(inv_scale[:, None] * scales) & 0xFF, max=63).cpu().numpy().astype(np.uint8)
        lm = torch.clamp(_nearest_int(inv_min[:, None] * mins) & 0xFF, max=63).cpu().numpy().astype(np.uint8)
        s = np.zeros((nb, 12), np.uint8)
        s[:, 0:4] = ls[:, 0:4]
        s[:, 4:8] = lm[:, 0:4]
        s[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
        s[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
        s[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
        dbits = _ggml_f16_bits(max_scale / _f32(max_scale, 63.0)).cpu().numpy().view(np.uint16)
        mbits = _ggml_f16_bits(max_min / _f32(max_min, 63.0)).cpu().numpy().view(np.uint16)
        d = (_half_f32(dbits, dev)[:, None] * torch.from_numpy(ls.astype(np.float32)).to(dev)).reshape(-1)
        dm = (_half_f32(mbits, dev)[:, None] * torch.from_numpy(lm.astype(np.float32)).to(dev)).reshape(-1)
        req = _requantize(X, d, 0, (1 << bits) - 1, 0, dm)
        L = torch.where((d != 0)[:, None], req, L).reshape(nb, QK_K).cpu().numpy()
        out[:, 0] = dbits & 0xFF
        out[:, 1] = dbits >> 8
        out[:, 2] = mbits & 0xFF
        out[:, 3] = mbits >> 8
        out[:, 4:16] = s
        if bits == 4:
            for c in range(4):
                out[:, 16 + 32 * c:48 + 32 * c] = L[:, 64 * c:64 * c + 32] | (L[:, 64 * c + 32:64 * c + 64] << 4)
        else:
            qh = np.zeros((nb, 32), np.int64)
            for c in range(4):
                l1 = L[:, 64 * c:64 * c + 32]
                l2 = L[:, 64 * c + 32:64 * c + 64]
                qh |= ((l1 > 15).astype(np.int64) << (2 * c)) | ((l2 > 15).astype(np.int64) << (2 * c + 1))
                out[:, 48 + 32 * c:80 + 32 * c] = (l1 & 0xF) | ((l2 & 0xF) << 4)
            out[:, 16:48] = qh
    elif scheme == "gguf_q3_k":
        X = b.reshape(nb * 16, 16)
        scales, L = _make_q3_quants(X, 4, fused)
        scales = scales.reshape(nb, 16)
        mscale, _ = _first_absmax(scales)
        has = mscale != 0
        iscale = _f32(mscale, -32.0) / torch.where(has, mscale, torch.ones_like(mscale))
        l8 = _nearest_int(iscale[:, None] * scales) & 0xFF
        l8 = torch.where(l8 >= 128, l8 - 256, l8)  # int8_t
        l6 = (torch.clamp(l8, -32, 31) + 32).cpu().numpy()
        has_np = has.cpu().numpy()
        l6[~has_np] = 0
        s = np.zeros((nb, 12), np.int64)
        s[:, 0:8] = l6[:, 0:8] & 0xF
        s[:, 0:8] |= (l6[:, 8:16] & 0xF) << 4
        for j in range(16):
            s[:, 8 + j % 4] |= (l6[:, j] >> 4) << (2 * (j // 4))
        s[~has_np] = 0
        dbits = _ggml_f16_bits(torch.where(has, _f32(iscale, 1.0) / iscale, torch.zeros_like(iscale))).cpu().numpy().view(np.uint16)
        sc = torch.from_numpy((l6 - 32).astype(np.float32)).to(dev)
        d = (_half_f32(dbits, dev)[:, None] * sc).reshape(-1)
        req = _requantize(X, d, -4, 3, 4)
        L = torch.where((d != 0)[:, None], req, L).reshape(nb, QK_K).cpu().numpy()
        hmask = np.zeros((nb, 32), np.int64)
        for j in range(8):
            hmask |= (L[:, 32 * j:32 * (j + 1)] > 3).astype(np.int64) << j
        L = np.where(L > 3, L - 4, L)
        out[:, 0:32] = hmask
        for h in range(2):
            Lh = L[:, 128 * h:128 * (h + 1)]
            out[:, 32 + 32 * h:64 + 32 * h] = Lh[:, 0:32] | (Lh[:, 32:64] << 2) | (Lh[:, 64:96] << 4) | (Lh[:, 96:128] << 6)
        out[:, 96:108] = s
        out[:, 108] = dbits & 0xFF
        out[:, 109] = dbits >> 8
    else:  # gguf_q2_k
        X = b.reshape(nb * 16, 16)
        scales, mins, L = _make_qkx2_quants(X, X.abs(), 3, -0.5, 0.1, 15, True, fused)
        scales = scales.reshape(nb, 16)
        mins = mins.reshape(nb, 16)
        max_scale = _positive_max(scales)
        max_min = _positive_max(mins)
        hs = max_scale > 0
        hm = max_min > 0
        isc = _f32(max_scale, 15.0) / torch.where(hs, max_scale, torch.ones_like(max_scale))
        imn = _f32(max_min, 15.0) / torch.where(hm, max_min, torch.ones_like(max_min))
        lsc = torch.where(hs[:, None], _nearest_int(isc[:, None] * scales), torch.zeros_like(scales, dtype=torch.int64)) & 0xFF
        lmn = torch.where(hm[:, None], _nearest_int(imn[:, None] * mins), torch.zeros_like(mins, dtype=torch.int64))
        sbytes = (lsc | (lmn << 4)) & 0xFF
        dbits = _ggml_f16_bits(torch.where(hs, max_scale / _f32(max_scale, 15.0), torch.zeros_like(max_scale))).cpu().numpy().view(np.uint16)
        mbits = _ggml_f16_bits(torch.where(hm, max_min / _f32(max_min, 15.0), torch.zeros_like(max_min))).cpu().numpy().view(np.uint16)
        d = (_half_f32(dbits, dev)[:, None] * (sbytes & 0xF).to(torch.float32)).reshape(-1)
        dm = (_half_f32(mbits, dev)[:, None] * (sbytes >> 4).to(torch.float32)).reshape(-1)
        req = _requantize(X, d, 0, 3, 0, dm)
        L = torch.where((d != 0)[:, None], req, L).reshape(nb, QK_K).cpu().numpy()
        out[:, 0:16] = sbytes.cpu().numpy()
        for h in range(2):
            Lh = L[:, 128 * h:128 * (h + 1)]
            out[:, 16 + 32 * h:48 + 32 * h] = Lh[:, 0:32] | (Lh[:, 32:64] << 2) | (Lh[:, 64:96] << 4) | (Lh[:, 96:128] << 6)
        out[:, 80] = dbits & 0xFF
        out[:, 81] = dbits >> 8
        out[:, 82] = mbits & 0xFF
        out[:, 83] = mbits >> 8
    return {"blocks": out.reshape(rows, cols // QK_K * nbytes)}


def _k_accepted(source, a, block_eq, scheme):
    """Kind per super-block ([rows, blocks] int8): 1 (ggml-fma) where a differing block of `a` is
    what the fused quantizer makes of its 256 source values, else 0. Runs on differing blocks only."""
    kind = np.zeros(block_eq.shape, np.int8)
    rows_i, blocks_j = np.nonzero(~block_eq)
    if len(rows_i) == 0:
        return kind
    nbytes = GGML_K[scheme][0]
    X = source.reshape(source.shape[0], -1, QK_K)[_torch().from_numpy(rows_i).to(source.device), _torch().from_numpy(blocks_j).to(source.device)]
    fused = _k_quantize(X, scheme, fused=True)["blocks"]
    theirs = np.asarray(a["blocks"]).reshape(block_eq.shape[0], -1, nbytes)[rows_i, blocks_j]
    kind[rows_i[(fused == theirs).all(axis=1)], blocks_j[(fused == theirs).all(axis=1)]] = 1
    return kind


def _k_codes_scales(blocks, scheme):
    """(codes [n, 256] int64, per-value scale int64 [n, 256], per-value min or None, d, dmin or None) of K blocks."""
    n = blocks.shape[0]
    B = blocks.astype(np.int64)
    e = np.arange(QK_K)
    if scheme == "gguf_q6_k":
        nn, quarter, l = e >> 7, (e >> 5) & 3, e & 31
        ql = B[:, nn * 64 + (quarter & 1) * 32 + l]
        low = np.where(quarter >= 2, ql >> 4, ql & 0xF)
        codes = low | (((B[:, 128 + nn * 32 + l] >> (2 * quarter)) & 3) << 4)
        sc = B[:, 192 + (e >> 4)]
        sc = np.where(sc >= 128, sc - 256, sc)
        return codes - 32, sc, None, B[:, 208] | (B[:, 209] << 8), None
    if scheme in ("gguf_q4_k", "gguf_q5_k"):
        s = B[:, 4:16]
        j = np.arange(8)
        sc = np.where(j < 4, s[:, np.minimum(j, 3)] & 63, (s[:, np.minimum(j + 4, 11)] & 0xF) | ((s[:, np.maximum(j - 4, 0)] >> 6) << 4))
        mn = np.where(j < 4, s[:, np.minimum(j + 4, 11)] & 63, (s[:, np.minimum(j + 4, 11)] >> 4) | ((s[:, j] >> 6) << 4))
        nn, upper = e >> 6, (e >> 5) & 1
        if scheme == "gguf_q4_k":
            q = B[:, 16 + nn * 32 + (e & 31)]
            codes = np.where(upper == 1, q >> 4, q & 0xF)
        else:
            q = B[:, 48 + nn * 32 + (e & 31)]
            codes = np.where(upper == 1, q >> 4, q & 0xF) | (((B[:, 16 + (e & 31)] >> (2 * nn + upper)) & 1) << 4)
        return codes, sc[:, e >> 5], mn[:, e >> 5], B[:, 0] | (B[:, 1] << 8), B[:, 2] | (B[:, 3] << 8)
    if scheme == "gguf_q3_k":
        nn, r = e >> 7, e & 127
        q = (B[:, 32 + nn * 32 + (r & 31)] >> (2 * (r >> 5))) & 3
        codes = q | (((B[:, e & 31] >> (e >> 5)) & 1) << 2)
        j = np.arange(16)
        low = np.where(j < 8, B[:, 96 + np.minimum(j, 7)] & 0xF, B[:, 96 + np.maximum(j - 8, 0)] >> 4)
        sc = low | (((B[:, 104 + (j % 4)] >> (2 * (j // 4))) & 3) << 4)
        return codes - 4, (sc - 32)[:, e >> 4], None, B[:, 108] | (B[:, 109] << 8), None
    r = e & 127
    codes = (B[:, 16 + (e >> 7) * 32 + (r & 31)] >> (2 * (r >> 5))) & 3
    sb = B[:, e >> 4]
    return codes, sb & 0xF, sb >> 4, B[:, 80] | (B[:, 81] << 8), B[:, 82] | (B[:, 83] << 8)


def _k_dequantize(parts, rows, cols, scheme, device):
    torch = _torch()
    nbytes = GGML_K[scheme][0]
    blocks = np.ascontiguousarray(parts["blocks"], dtype=np.uint8).reshape(-1, nbytes)
    codes, sc, mn, dbits, mbits = _k_codes_scales(blocks, scheme)
    d = _half_f32(dbits.astype(np.uint16), device)[:, None]
    t = lambda a: torch.from_numpy(a.astype(np.float32)).to(device)
    dl = torch.mul(d, t(sc))
    v = torch.mul(dl, t(codes))
    if mn is not None:
        ml = torch.mul(_half_f32(mbits.astype(np.uint16), device)[:, None], t(mn))
        v = torch.sub(v, ml)
    return v.reshape(rows, cols)


def _k_compare(e, a, scheme):
    nbytes, ranges = GGML_K[scheme]
    n = e["blocks"].shape[0]
    eb = e["blocks"].reshape(-1, nbytes)
    ab = a["blocks"].reshape(-1, nbytes)
    header_eq = np.ones(eb.shape[0], bool)
    for s0, s1 in ranges:
        header_eq &= (eb[:, s0:s1] == ab[:, s0:s1]).all(axis=1)
    codes_eq = _k_codes_scales(eb, scheme)[0] == _k_codes_scales(ab, scheme)[0]
    elem = (codes_eq & header_eq[:, None]).reshape(n, -1)
    block_eq = (eb == ab).all(axis=1).reshape(n, -1)
    part = np.where(header_eq, 0, 1).astype(np.int8).reshape(n, -1)
    return elem, block_eq, part


def _row_blocks(rows, cols):
    step = max(1, CHUNK_ELEMENTS // max(1, cols))
    for r0 in range(0, rows, step):
        yield r0, min(rows, r0 + step)


def _as_f32_tensor(values):
    torch = _torch()
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    if values.dim() != 2:
        raise SchemeError("values must be 2-D [rows, cols], got shape %s" % (list(values.shape),))
    return values


def quantize(scheme, values, params=None, device=None):
    """{part: numpy bits} of `values` ([rows, cols] f32 tensor or array) under `scheme`, computed on
    `device` (default: where `values` are), one row block at a time."""
    values = _as_f32_tensor(values)
    rows, cols = values.shape
    params = check_params(scheme, params, cols)
    parts = {name: np.empty(shape, BITS_DTYPE[dt]) for name, (dt, shape) in layout(scheme, params, rows, cols).items()}
    for r0, r1 in _row_blocks(rows, cols):
        x = values[r0:r1].to(device or values.device).float()
        if scheme in FLOAT_SCHEMES:
            dt = FLOAT_SCHEMES[scheme]
            out = {"data": _to_numpy_bits(cast_bits(x, dt), dt)}
        elif scheme == "mlx_affine":
            out = _mlx_quantize(x, params)
        elif scheme in MLX_FP:
            out = _fp_quantize(x, scheme, params)
        elif scheme == "onnx_int8":
            out = _onnx_int8_quantize(x)
        elif scheme == "onnx_q4":
            out = _onnx_q4_quantize(x, params["dtype"])
        elif scheme in GGML_LEGACY:
            out = _legacy_quantize(x, scheme)
        elif scheme in GGML_K:
            out = _k_quantize(x, scheme)
        else:
            out = _q8_0_quantize(x)
        for name, bits in out.items():
            parts[name][r0:r1] = bits
    return parts


def dequantize(scheme, parts, rows, cols, params=None, device="cpu"):
    """f32 tensor [rows, cols] on `device` of the values `parts` stand for."""
    torch = _torch()
    params = check_params(scheme, params, cols)
    _check_parts(scheme, params, parts, rows, cols, "parts")
    out = torch.empty((rows, cols), dtype=torch.float32, device=device)
    for r0, r1 in _row_blocks(rows, cols):
        block = {name: p[r0:r1] for name, p in parts.items()}
        if scheme in FLOAT_SCHEMES:
            out[r0:r1] = widen(_from_numpy_bits(block["data"], device), FLOAT_SCHEMES[scheme])
        elif scheme == "mlx_affine":
            out[r0:r1] = _mlx_dequantize(block, r1 - r0, cols, params, device)
        elif scheme in MLX_FP:
            out[r0:r1] = _fp_dequantize(block, r1 - r0, cols, scheme, params, device)
        elif scheme == "onnx_int8":
            out[r0:r1] = _onnx_int8_dequantize(block, device)
        elif scheme == "onnx_q4":
            out[r0:r1] = _onnx_q4_dequantize(block, cols, params["dtype"], device)
        elif scheme in GGML_LEGACY:
            out[r0:r1] = _legacy_dequantize(block, r1 - r0, cols, scheme, device)
        elif scheme in GGML_K:
            out[r0:r1] = _k_dequantize(block, r1 - r0, cols, scheme, device)
        else:
            out[r0:r1] = _q8_0_dequantize(block, r1 - r0, cols, device)
    return out


def _check_parts(scheme, params, parts, rows, cols, what):
    want = layout(scheme, params, rows, cols)
    if set(parts) != set(want):
        raise SchemeError("%s of a %s tensor: parts %s, expected %s" % (what, scheme, sorted(parts), sorted(want)))
    for name, (dt, shape) in want.items():
        got = parts[name]
        if list(got.shape) != shape or got.dtype != BITS_DTYPE[dt]:
            raise SchemeError("%s: part %s is %s %s, expected %s bits %s" % (what, name, got.dtype, list(got.shape), dt, shape))


def _blocking(scheme, params, cols):
    """(blocks per row, columns per block, part names in the order a difference is reported)."""
    if scheme in FLOAT_SCHEMES:
        return 1, cols, ("data",)
    if scheme == "gguf_q8_0":
        return cols // Q8_0_BLOCK, Q8_0_BLOCK, ("blocks",)
    if scheme in GGML_LEGACY:
        return cols // LEGACY_BLOCK, LEGACY_BLOCK, ("blocks", "scales")
    if scheme in GGML_K:
        return cols // QK_K, QK_K, ("blocks", "scales")
    if scheme in MLX_FP:
        return cols // MLX_FP[scheme][2], MLX_FP[scheme][2], ("scales", "weight")
    if scheme == "onnx_int8":
        return 1, cols, ("scales", "weight")
    if scheme == "onnx_q4":
        return -(-cols // Q4_BLOCK), Q4_BLOCK, ("scales", "blocks")
    return cols // params["group_size"], params["group_size"], ("scales", "biases", "weight")


def _compare_floats(e, a):
    eq = e["data"] == a["data"]
    return eq, eq.all(axis=1, keepdims=True), np.zeros((eq.shape[0], 1), np.int8)


def _compare_q8_0(e, a):
    n = e["blocks"].shape[0]
    eb = e["blocks"].reshape(n, -1, Q8_0_BYTES)
    ab = a["blocks"].reshape(n, -1, Q8_0_BYTES)
    same = eb == ab
    d_eq = same[:, :, :2].all(axis=2)
    elem = (same[:, :, 2:] & d_eq[:, :, None]).reshape(n, -1)
    return elem, same.all(axis=2), np.zeros(d_eq.shape, np.int8)


def _compare_mlx(e, a, params):
    bits, group_size = params["bits"], params["group_size"]
    n, groups = e["scales"].shape
    cols = groups * group_size
    scales_eq = e["scales"] == a["scales"]
    biases_eq = e["biases"] == a["biases"]
    if np.array_equal(e["weight"], a["weight"]):  # the usual case: no codes to unpack
        ec = ac = None
        codes_eq = np.ones((n, groups, group_size), bool)
    else:
        ec = unpack_codes(e["weight"], bits, cols)
        ac = unpack_codes(a["weight"], bits, cols)
        codes_eq = (ec == ac).reshape(n, groups, group_size)
    params_eq = scales_eq & biases_eq
    elem = (codes_eq & params_eq[:, :, None]).reshape(n, cols)
    part = np.where(~scales_eq, 0, np.where(~biases_eq, 1, 2)).astype(np.int8)
    return elem, params_eq & codes_eq.all(axis=2), part, ec, ac


def _mlx_accepted(source, ec, ac, a, block_eq, params):
    """Kind per group (0 none, 1 tie-half-away, 2 mlx-metal-rule) for the groups that differ."""
    torch = _torch()
    bits, group_size, dtype = params["bits"], params["group_size"], params["dtype"]
    n, groups = block_eq.shape
    kind = np.zeros((n, groups), np.int8)
    rows_i, groups_j = np.nonzero(~block_eq)
    if len(rows_i) == 0:
        return kind
    w = round_to(source, dtype).reshape(n, groups, group_size)
    ri, gj = torch.from_numpy(rows_i).to(w.device), torch.from_numpy(groups_j).to(w.device)
    g = w[ri, gj]
    if ec is None:  # only scales or biases differ
        ec = ac = unpack_codes(a["weight"], bits, groups * group_size)
    exp_codes = ec.reshape(n, groups, group_size)[rows_i, groups_j]
    act_codes = ac.reshape(n, groups, group_size)[rows_i, groups_j]
    # tie-half-away: the expected scale and bias, and each differing code is the half-away-from-zero
    # neighbour of an f32 quotient that is exactly k + 0.5 (MLX's Metal kernel rounds with `round`).
    scale, bias = _mlx_params(g, bits, "cpu", dtype)
    x = (g - bias[:, None]) / scale[:, None]
    tie = ((x - torch.floor(x)) == 0.5).cpu().numpy()
    n_bins = float((1 << bits) - 1)
    away = torch.nan_to_num(torch.clamp(_round_away(x), 0.0, n_bins), nan=0.0).to(torch.uint8).cpu().numpy()
    same_params = (a["scales"][rows_i, groups_j] == _to_numpy_bits(cast_bits(scale, dtype), dtype)) & \
                  (a["biases"][rows_i, groups_j] == _to_numpy_bits(cast_bits(bias, dtype), dtype))
    is_tie = same_params & ((act_codes == exp_codes) | (tie & (act_codes == away))).all(axis=1)
    # mlx-metal-rule: scale, bias and every code exactly what the Metal kernel computes.
    ms, mb = _mlx_params(g, bits, "metal", dtype)
    metal_codes = _mlx_codes(g, ms, mb, bits, "metal").cpu().numpy()
    is_metal = (a["scales"][rows_i, groups_j] == _to_numpy_bits(cast_bits(ms, dtype), dtype)) & \
               (a["biases"][rows_i, groups_j] == _to_numpy_bits(cast_bits(mb, dtype), dtype)) & \
               (act_codes == metal_codes).all(axis=1)
    kind[rows_i, groups_j] = np.where(is_tie, 1, np.where(is_metal, 2, 0))
    return kind


def _location(r0, elem, block_eq, part, names, block_cols, where):
    """{row, block, col, part} of the first block in `where` (row-major), or None."""
    hits = np.argwhere(where)
    if len(hits) == 0:
        return None
    i, j = (int(v) for v in hits[0])
    cols = elem[i, j * block_cols:(j + 1) * block_cols]
    off = int(np.argmin(cols)) if not cols.all() else 0
    return {"row": r0 + i, "block": j, "col": j * block_cols + off, "part": names[int(part[i, j])]}


def compare(scheme, expected_parts, actual_parts, source_values, params=None):
    """How `actual_parts` (the artifact) match `expected_parts` (this reference's quantization of
    `source_values`, [rows, cols] f32). An element is identical when its code or value and its
    block's scale/bias/d are; a block is a group (mlx_affine), a 32-value block (gguf_q8_0) or a row
    (floats). Differences of the documented kinds (ACCEPTED_KINDS) are counted per kind, and
    `accepted_mask` ([rows, blocks] bool, or None) marks those blocks for take_accepted."""
    source = _as_f32_tensor(source_values)
    rows, cols = source.shape
    params = check_params(scheme, params, cols)
    _check_parts(scheme, params, expected_parts, rows, cols, "expected")
    _check_parts(scheme, params, actual_parts, rows, cols, "actual")
    per_row, block_cols, names = _blocking(scheme, params, cols)
    kinds = ACCEPTED_KINDS.get(scheme, ())
    result = {
        "elements": rows * cols, "identical_elements": 0, "blocks": rows * per_row, "identical_blocks": 0,
        "mismatched_blocks": 0, "first_difference": None, "first_mismatch": None,
        "accepted": {k: 0 for k in kinds}, "accepted_mask": None,
    }
    for r0, r1 in _row_blocks(rows, cols):
        e = {k: np.asarray(v[r0:r1]) for k, v in expected_parts.items()}
        a = {k: np.asarray(v[r0:r1]) for k, v in actual_parts.items()}
        if scheme in FLOAT_SCHEMES:
            elem, block_eq, part = _compare_floats(e, a)
        elif scheme == "gguf_q8_0":
            elem, block_eq, part = _compare_q8_0(e, a)
        elif scheme in MLX_FP:
            elem, block_eq, part = _fp_compare(e, a, scheme)
        elif scheme == "onnx_int8":
            elem, block_eq, part = _compare_onnx_int8(e, a)
        elif scheme == "onnx_q4":
            elem, block_eq, part = _compare_onnx_q4(e, a, cols)
        elif scheme in GGML_LEGACY:
            elem, block_eq, part = _legacy_compare(e, a, scheme)
        elif scheme in GGML_K:
            elem, block_eq, part = _k_compare(e, a, scheme)
        else:
            elem, block_eq, part, ec, ac = _compare_mlx(e, a, params)
        result["identical_elements"] += int(elem.sum())
        result["identical_blocks"] += int(block_eq.sum())
        if block_eq.all():
            continue
        if scheme == "mlx_affine":
            kind = _mlx_accepted(source[r0:r1], ec, ac, a, block_eq, params)
        elif scheme in MLX_FP:
            kind = _fp_accepted(source[r0:r1], a, block_eq, scheme, params)
        elif scheme in GGML_K:
            kind = _k_accepted(source[r0:r1], a, block_eq, scheme)
        else:
            kind = np.zeros(block_eq.shape, np.int8)
        for k, label in enumerate(kinds):
            result["accepted"][label] += int((kind == k + 1).sum())
        mismatch = ~block_eq & (kind == 0)
        result["mismatched_blocks"] += int(mismatch.sum())
        if result["first_difference"] is None:
            result["first_difference"] = _location(r0, elem, block_eq, part, names, block_cols, ~block_eq)
        if result["first_mismatch"] is None:
            result["first_mismatch"] = _location(r0, elem, block_eq, part, names, block_cols, mismatch)
        if (kind != 0).any():
            if result["accepted_mask"] is None:
                result["accepted_mask"] = np.zeros((rows, per_row), bool)
            result["accepted_mask"][r0:r1] = kind != 0
    return result


def take_accepted(scheme, expected_parts, actual_parts, accepted_mask, params=None):
    """`expected_parts` with the blocks marked in `accepted_mask` taken from `actual_parts`."""
    if accepted_mask is None:
        return expected_parts
    if scheme in MLX_FP:
        _, bits, group_size = MLX_FP[scheme]
        words = group_size * bits // 32
        return {
            "weight": np.where(np.repeat(accepted_mask, words, axis=1), actual_parts["weight"], expected_parts["weight"]),
            "scales": np.where(accepted_mask, actual_parts["scales"], expected_parts["scales"]),
        }
    if scheme in GGML_K:
        nbytes = GGML_K[scheme][0]
        return {"blocks": np.where(np.repeat(accepted_mask, nbytes, axis=1), actual_parts["blocks"], expected_parts["blocks"])}
    if scheme != "mlx_affine":
        raise SchemeError("scheme %s has no accepted differences" % scheme)
    words = params["group_size"] * params["bits"] // 32  # a group is whole words (group_size >= 32)
    return {
        "weight": np.where(np.repeat(accepted_mask, words, axis=1), actual_parts["weight"], expected_parts["weight"]),
        "scales": np.where(accepted_mask, actual_parts["scales"], expected_parts["scales"]),
        "biases": np.where(accepted_mask, actual_parts["biases"], expected_parts["biases"]),
    }


def public(result):
    """A compare result without its numpy mask (for JSON / msgpack)."""
    return {k: v for k, v in result.items() if k != "accepted_mask"}


# ---------------------------------------------------------------------------------------------
# stored files: `<name>::<part>` tensors plus __metadata__["openelm.plan"]


def _ref_module():
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import openelm_ref
    return openelm_ref


def canonical_name(name):
    """A tensor name without the HF `transformer.` prefix."""
    return name[len("transformer."):] if name.startswith("transformer.") else name


def read_plan(metadata, tensors, path):
    """{canonical: {scheme, params, shape, rows, cols, parts}} of a stored file (validated)."""
    text = metadata.get(PLAN_KEY)
    if text is None:
        raise SchemeError("%s: no __metadata__[%r] (the plan of schemes)" % (path, PLAN_KEY))
    try:
        plan = json.loads(text)
    except ValueError as e:
        raise SchemeError("%s: __metadata__[%r] is not JSON (%s)" % (path, PLAN_KEY, e))
    if not isinstance(plan, dict):
        raise SchemeError("%s: __metadata__[%r] is not a JSON object" % (path, PLAN_KEY))
    out = {}
    for name, entry in plan.items():
        if not isinstance(entry, dict) or "scheme" not in entry or "shape" not in entry:
            raise SchemeError("%s: plan entry %s needs scheme and shape" % (path, name))
        try:
            rows, cols = canonical_shape(entry["shape"])
            scheme = entry["scheme"]
            params = check_params(scheme, entry.get("params"), cols)
        except SchemeError as e:
            raise SchemeError("%s: plan entry %s: %s" % (path, name, e))
        parts = {}
        for part, (dt, shape) in layout(scheme, params, rows, cols).items():
            key = name + PART_SEP + part
            if key not in tensors:
                raise SchemeError("%s: plan names %s (%s) but the file has no tensor %s" % (path, name, scheme, key))
            got_dt, got_shape, bits = tensors[key]
            if got_dt != dt or got_shape != shape:
                raise SchemeError("%s: %s is %s %s, expected %s %s for %s %s" % (path, key, got_dt, got_shape, dt, shape, scheme, json.dumps(params, sort_keys=True)))
            parts[part] = bits
        if canonical_name(name) in out:
            raise SchemeError("%s: plan names %s twice (with and without the transformer. prefix)" % (path, canonical_name(name)))
        out[canonical_name(name)] = {"scheme": scheme, "params": params, "shape": [int(d) for d in entry["shape"]], "rows": rows, "cols": cols, "parts": parts}
    known = {n + PART_SEP + p for n, e in plan.items() for p in layout(e["scheme"], e.get("params"), *canonical_shape(e["shape"]))}
    extra = sorted(set(tensors) - known)
    if extra:
        raise SchemeError("%s: tensors not in the plan: %s" % (path, ", ".join(extra[:5])))
    return out


def read_stored(path):
    metadata, tensors = _ref_module().read_safetensors_raw(path)
    return read_plan(metadata, tensors, path)


def _float_tensor(dt, bits):
    """f32 torch tensor [rows, cols] of a raw F32/F16/BF16 tensor (exact)."""
    if dt not in FLOAT_SCHEMES.values():
        raise SchemeError("expected a float tensor, got %s" % dt)
    return widen(_from_numpy_bits(np.asarray(bits), "cpu"), dt)


def write_stored(path, entries):
    """Write {name: (scheme, params, shape, parts)} as a stored file, via a temporary sibling."""
    plan, tensors = {}, {}
    for name, (scheme, params, shape, parts) in sorted(entries.items()):
        rows, cols = canonical_shape(shape)
        params = check_params(scheme, params, cols)
        plan[name] = {"scheme": scheme, "params": params, "shape": list(shape)}
        for part, (dt, pshape) in layout(scheme, params, rows, cols).items():
            tensors[name + PART_SEP + part] = (dt, pshape, parts[part])
    write_raw_safetensors(path, tensors, {PLAN_KEY: json.dumps(plan, sort_keys=True, separators=(",", ":"))})


def write_raw_safetensors(path, tensors, metadata=None):
    """Write {name: (dtype, shape, numpy bits)} (sorted by name) via a temporary sibling + rename."""
    header, offset = {}, 0
    order = sorted(tensors)
    for name in order:
        dt, shape, bits = tensors[name]
        n = int(np.asarray(bits).size) * np.dtype(BITS_DTYPE[dt]).itemsize
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for name in order:
                dt, _, bits = tensors[name]
                f.write(np.ascontiguousarray(bits, dtype=np.dtype(BITS_DTYPE[dt]).newbyteorder("<")).tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------------------------
# the worker op


def exact(request):
    """`op: "exact"`: quantize REF (`reference`, float safetensors) with this module, compare with
    MODEL's stored parts (`stored`), and run MODEL (its parts dequantized), EXPECTED (REF quantized
    here, accepted groups and MODEL's extra rows taken from MODEL, dequantized) and REFERENCE (REF's
    floats) through the f32 forward pass."""
    torch = _torch()
    ref = _ref_module()
    device = ref.resolve_device(torch, request.get("device"))
    config = request["config"]
    tokens = [int(t) for t in request["tokens"]]
    collect = bool(request.get("collect_hidden"))
    t0 = time.perf_counter()
    plan = read_stored(request["stored"])
    _, ref_raw = ref.read_safetensors_raw(request["reference"])
    ref_tensors = {}
    for name, value in ref_raw.items():
        canonical = canonical_name(name)
        if canonical in ref_tensors:
            raise SchemeError("%s: tensor %s appears twice (with and without the transformer. prefix)" % (request["reference"], canonical))
        ref_tensors[canonical] = value
    missing = sorted(set(plan) - set(ref_tensors))
    unused = sorted(set(ref_tensors) - set(plan))
    if missing or unused:
        raise SchemeError("the reference and the stored model hold different tensors: only in MODEL: %s; only in REF: %s"
                          % (", ".join(missing[:5]) or "-", ", ".join(unused[:5]) or "-"))
    reports, model_w, expected_parts = [], {}, {}
    for name in sorted(plan):
        entry = plan[name]
        scheme, params, rows, cols = entry["scheme"], entry["params"], entry["rows"], entry["cols"]
        dt, shape, bits = ref_tensors[name]
        ref_rows, ref_cols = canonical_shape(shape)
        if ref_cols != cols or (ref_rows != rows and name != "token_embeddings.weight"):
            raise SchemeError("tensor %s: MODEL shape %s, REF shape %s" % (name, entry["shape"], shape))
        common = min(rows, ref_rows)
        source = _float_tensor(dt, np.asarray(bits).reshape(ref_rows, ref_cols)[:common])
        actual = {p: v[:common] for p, v in entry["parts"].items()}
        expected = quantize(scheme, source, params, device=device)
        result = compare(scheme, expected, actual, source, params)
        merged = take_accepted(scheme, expected, actual, result["accepted_mask"], params)
        if rows > common:
            merged = {p: np.concatenate([merged[p], entry["parts"][p][common:]]) for p in merged}
        expected_parts[name] = merged
        model_w[name] = dequantize(scheme, entry["parts"], rows, cols, params, device).reshape(entry["shape"])
        report = public(result)
        report.update({"name": name, "scheme": scheme, "params": params, "extra_rows": rows - ref_rows})
        reports.append(report)
        del source, expected, actual
    t1 = time.perf_counter()
    logits_model, hidden_model = ref.forward(config, model_w, tokens, collect)
    del model_w
    t2 = time.perf_counter()
    expected_w = {name: dequantize(plan[name]["scheme"], parts, plan[name]["rows"], plan[name]["cols"], plan[name]["params"], device).reshape(plan[name]["shape"])
                  for name, parts in expected_parts.items()}
    del expected_parts
    t3 = time.perf_counter()
    logits_expected, hidden_expected = ref.forward(config, expected_w, tokens, collect)
    del expected_w
    reference_w = {name: _float_tensor(dt, np.asarray(bits)).reshape(shape).to(device) for name, (dt, shape, bits) in ref_tensors.items()}
    logits_reference, _ = ref.forward(config, reference_w, tokens, False)
    del reference_w
    t4 = time.perf_counter()

    def f32_bytes(t):
        return t.float().cpu().numpy().astype("<f4").tobytes()

    reply = {
        "ok": True, "device": device, "tensors": reports,
        "vocab_model": int(logits_model.shape[1]), "vocab_reference": int(logits_reference.shape[1]),
        "logits_model": f32_bytes(logits_model), "logits_expected": f32_bytes(logits_expected),
        "logits_reference": f32_bytes(logits_reference),
        "seconds": {"quantize": (t1 - t0) + (t3 - t2), "forward": (t2 - t1) + (t4 - t3)},
    }
    if collect:
        reply["hidden_model"] = [f32_bytes(h) for h in hidden_model]
        reply["hidden_expected"] = [f32_bytes(h) for h in hidden_expected]
    return reply


# ---------------------------------------------------------------------------------------------
# MLX floating-point modes: mlx_mxfp4, mlx_nvfp4, mlx_mxfp8 (mx.quantize(w, mode=...) on MLX's CPU
# device, i.e. the op graph of `fp_quantize` in mlx/ops.cpp), written from that graph: every op in
# the weight dtype D (computed in f32 and rounded to D: one op's double rounding is innocuous),
#   s = D(max|w| / M)                      M = 6 (fp4 elements) or 448 (fp8 elements)
#   mx (group 32): e = where(s == 0, 0, round(D(log2 s))), scale byte e + 127, q = D(w / D(2^e))
#   nv (group 16): scale byte = to_fp8(s), q = D(w / from_fp8(byte))
#   fp4: argmin |q - lut| over MLX's 16-entry table (first index on ties; in D for mx, f32 for nv)
#   fp8: to_fp8(q): e4m3fn, nearest even, |q| >= 448 (and NaN/Inf) saturate to 0x7E | sign
# Parts: weight U32 [rows, cols*bits/32] (fp4: element 2j in the low nibble of byte j), scales U8
# [rows, cols/group]; no biases. params {dtype}. Dequantized: lut/e4m3 value x scale (exact in f32),
# rounded to D.

MLX_FP = {"mlx_mxfp4": ("mxfp4", 4, 32), "mlx_nvfp4": ("nvfp4", 4, 16), "mlx_mxfp8": ("mxfp8", 8, 32)}
MLX_FP4_LUT = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def _fp_check_params(scheme, params, cols):
    mode, bits, group_size = MLX_FP[scheme]
    extra = sorted(set(params) - {"dtype"})
    if extra:
        raise SchemeError("%s: unknown params %s (bits %d and group_size %d are fixed by the mode)" % (scheme, ", ".join(extra), bits, group_size))
    if params.get("dtype") not in MLX_DTYPES:
        raise SchemeError("%s: dtype must be one of %s, got %r" % (scheme, MLX_DTYPES, params.get("dtype")))
    if cols % group_size:
        raise SchemeError("%s: rows of %d values do not split into groups of %d" % (scheme, cols, group_size))
    return {"dtype": params["dtype"]}


def _fp_layout(scheme, params, rows, cols):
    _, bits, group_size = MLX_FP[scheme]
    return {"weight": ("U32", [rows, cols * bits // 32]), "scales": ("U8", [rows, cols // group_size])}


def _e4m3_bytes(v):
    """uint8 e4m3fn codes of f32 tensor `v`: the nearest of the format's values (ties to the even
    code), computed on the value grid: exponent E (at least -6, the subnormal range), step 2^(E-3),
    n = rint(|v| / step), code = 8(E + 6) + n."""
    torch = _torch()
    a = v.abs()
    _, ex = torch.frexp(a)
    e = torch.where(a == 0, _like(a, -6.0), torch.clamp(ex.float() - 1, min=-6.0))
    n = torch.round(a / torch.pow(_like(a, 2.0), e - 3))
    code = 8 * (e + 6) + n
    code = torch.where(a < 448.0, code, _like(code, 126.0)).to(torch.int64)  # NaN fails a < 448
    return (code | (torch.signbit(v).to(torch.int64) << 7)).to(torch.uint8)


def _e4m3_values(b):
    """f32 values of e4m3 codes (uint8/int tensor); 0x7F / 0xFF read as +-480, as MLX's FromFP8."""
    torch = _torch()
    b = b.to(torch.int64)
    e, m = (b >> 3) & 0xF, (b & 7).float()
    v = torch.where(e == 0, m * 2.0 ** -9, (m + 8) * torch.pow(torch.full_like(m, 2.0), (e - 10).float()))
    return torch.where((b & 0x80) != 0, -v, v)


def _fp_quantize(x, scheme, params):
    torch = _torch()
    mode, bits, group_size = MLX_FP[scheme]
    dtype = params["dtype"]
    rows, cols = x.shape
    g = round_to(x, dtype).reshape(-1, group_size)
    amax = g.abs().amax(dim=1)
    s = round_to(amax / _like(amax, 6.0 if bits == 4 else 448.0), dtype)
    finite = torch.isfinite(s)
    if mode == "nvfp4":
        scale_bytes = _e4m3_bytes(s)
        q = round_to(g / _e4m3_values(scale_bytes)[:, None], dtype)
    else:
        e = torch.where(s == 0, torch.zeros_like(s), torch.round(round_to(torch.log2(s), dtype)))
        e = torch.where(finite, e, torch.zeros_like(e))
        scale_bytes = torch.where(finite, (e.to(torch.int64) + 127) & 0xFF, torch.full_like(e, 255, dtype=torch.int64)).to(torch.uint8)
        q = round_to(g / round_to(torch.pow(_like(e, 2.0), e), dtype)[:, None], dtype)
    # A non-finite scale (Inf/NaN weights; MLX's exponent conversion is undefined there): codes 0.
    q = torch.where(finite[:, None], q, torch.zeros_like(q))
    if bits == 4:
        lut = torch.tensor(MLX_FP4_LUT, dtype=torch.float32, device=q.device)
        dist = q[:, :, None] - lut
        if mode != "nvfp4":  # mx: the subtraction is in D; nv: q was promoted to f32 (x 1.0f)
            dist = round_to(dist.reshape(-1, 16), dtype).reshape(dist.shape)
        codes = torch.argmin(dist.abs(), dim=2).to(torch.uint8).reshape(rows, cols).cpu().numpy()
        weight = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    else:
        weight = _e4m3_bytes(q).reshape(rows, cols).cpu().numpy()
    return {
        "weight": np.ascontiguousarray(weight).view("<u4").astype(np.uint32).reshape(rows, cols * bits // 32),
        "scales": scale_bytes.reshape(rows, cols // group_size).cpu().numpy(),
    }


def _fp_codes(weight, bits, cols):
    """uint8 codes [rows, cols] of a weight part."""
    b = np.ascontiguousarray(weight, dtype="<u4").view(np.uint8).reshape(weight.shape[0], -1)
    if bits == 8:
        return b
    out = np.empty((b.shape[0], cols), np.uint8)
    out[:, 0::2] = b & 0xF
    out[:, 1::2] = b >> 4
    return out


def _fp_dequantize(parts, rows, cols, scheme, params, device):
    torch = _torch()
    mode, bits, group_size = MLX_FP[scheme]
    codes = torch.from_numpy(_fp_codes(parts["weight"], bits, cols).astype(np.int64)).to(device)
    if bits == 4:
        v = torch.tensor(MLX_FP4_LUT, dtype=torch.float32, device=device)[codes]
    else:
        v = _e4m3_values(codes)
    sb = torch.from_numpy(np.asarray(parts["scales"]).astype(np.int64)).to(device)
    if mode == "nvfp4":
        scale = _e4m3_values(sb)
    else:
        scale = torch.where(sb == 0, torch.full_like(sb, 0, dtype=torch.float32) + 2.0 ** -127,
                            torch.pow(torch.full_like(sb, 2, dtype=torch.float32), (sb - 127).float()))
    out = torch.mul(v.reshape(rows, -1, group_size), scale.reshape(rows, -1, 1)).reshape(rows, cols)
    return round_to(out, params["dtype"])


def _fp4_gpu_codes(q):
    """uint8 codes of MLX's GPU kernel's fp4 conversion (`fp4_e2m1`, kernels/fp4.h): thresholds with
    ties to the even code, the sign bit kept (so -0 is 8), NaN -> 7."""
    torch = _torch()
    x = q.abs()
    bits = torch.zeros_like(x)
    for threshold, code, strict in ((0.25, 1, True), (0.75, 2, False), (1.25, 3, True), (1.75, 4, False),
                                    (2.5, 5, True), (3.5, 6, False), (5.0, 7, True)):
        bits = torch.where((x > threshold) if strict else (x >= threshold), _like(x, float(code)), bits)
    codes = bits.to(torch.int64) | (torch.signbit(q).to(torch.int64) << 3)
    return torch.where(torch.isnan(q), torch.full_like(codes, 7), codes).to(torch.uint8)


def _fp_gpu(g, scheme):
    """(scale bytes, codes) per group (rows of `g`, f32 values already rounded to the dtype) under MLX's
    Metal/CUDA kernel (`fp_quantize`, kernels/fp_quantized.h): all in f32, the e8m0 exponent
    round-half-away of log2 clamped to +-127 (0xFF when not finite; a zero amax gives byte 0), and
    q = w * f32(1 / scale)."""
    torch = _torch()
    mode, bits, _ = MLX_FP[scheme]
    amax = g.abs().amax(dim=1)
    x = amax / _like(amax, 6.0 if bits == 4 else 448.0)
    if mode == "nvfp4":
        scale_bytes = _e4m3_bytes(x)
        value = _e4m3_values(scale_bytes)
    else:
        n = torch.clamp(_round_away(torch.log2(x)), -127.0, 127.0)
        n = torch.where(x == 0, _like(n, -127.0), n)
        b = torch.where(torch.isfinite(x), n + 127, _like(n, 255.0)).to(torch.int64)
        scale_bytes = b.to(torch.uint8)
        value = torch.where(b == 0, _like(x, 2.0 ** -127), torch.pow(_like(x, 2.0), (b - 127).float()))
    enc = torch.where(value == 0, torch.zeros_like(value), _like(value, 1.0) / value)
    q = g * enc[:, None]
    codes = _fp4_gpu_codes(q) if bits == 4 else _e4m3_bytes(q)
    return scale_bytes, codes


def _fp_accepted(source, a, block_eq, scheme, params):
    """Kind per group (0 none, 1 mlx-gpu-rule) for the groups that differ."""
    _, bits, group_size = MLX_FP[scheme]
    n, groups = block_eq.shape
    kind = np.zeros((n, groups), np.int8)
    rows_i, groups_j = np.nonzero(~block_eq)
    if len(rows_i) == 0:
        return kind
    torch = _torch()
    w = round_to(source, params["dtype"]).reshape(n, groups, group_size)
    g = w[torch.from_numpy(rows_i).to(w.device), torch.from_numpy(groups_j).to(w.device)]
    sb, codes = _fp_gpu(g, scheme)
    act_codes = _fp_codes(a["weight"], bits, groups * group_size).reshape(n, groups, group_size)[rows_i, groups_j]
    ok = (a["scales"][rows_i, groups_j] == sb.cpu().numpy()) & (act_codes == codes.cpu().numpy()).all(axis=1)
    kind[rows_i, groups_j] = np.where(ok, 1, 0)
    return kind


def _fp_compare(e, a, scheme):
    _, bits, group_size = MLX_FP[scheme]
    n, groups = e["scales"].shape
    cols = groups * group_size
    scales_eq = e["scales"] == a["scales"]
    codes_eq = (_fp_codes(e["weight"], bits, cols) == _fp_codes(a["weight"], bits, cols)).reshape(n, groups, group_size)
    elem = (codes_eq & scales_eq[:, :, None]).reshape(n, cols)
    part = np.where(~scales_eq, 0, 1).astype(np.int8)
    return elem, scales_eq & codes_eq.all(axis=2), part


SCHEMES = SCHEMES + tuple(MLX_FP)
ACCEPTED_KINDS.update({name: ("mlx-gpu-rule",) for name in MLX_FP})


# ---------------------------------------------------------------------------------------------
# command line (for tests)


def _read_sources(path):
    _, tensors = _ref_module().read_safetensors_raw(path)
    out = {}
    for name, (dt, shape, bits) in tensors.items():
        rows, cols = canonical_shape(shape)
        out[name] = (shape, _float_tensor(dt, np.asarray(bits).reshape(rows, cols)))
    return out


def _write_dequantized(path, plan):
    out = {}
    for name, e in plan.items():
        v = dequantize(e["scheme"], e["parts"], e["rows"], e["cols"], e["params"])
        out[name] = ("F32", e["shape"], _to_numpy_bits(v, "F32").reshape(e["shape"]))
    write_raw_safetensors(path, out)


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="quant_ref.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quantize", help="quantize each tensor of a float safetensors file into a stored file")
    q.add_argument("--in", dest="src", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--plan", help="JSON file {name: {scheme, params}} (else every tensor gets --scheme/--params)")
    q.add_argument("--scheme", choices=SCHEMES)
    q.add_argument("--params", default="{}", help="JSON object of the scheme's params")
    q.add_argument("--device", default="cpu")
    q.add_argument("--dequantized", help="also write each tensor dequantized from the parts just made (as `dequantize` does)")
    d = sub.add_parser("dequantize", help="dequantize every tensor of a stored file (F32 out)")
    d.add_argument("--in", dest="src", required=True)
    d.add_argument("--out", required=True)
    c = sub.add_parser("compare", help="compare two stored files of the same plan; prints {name: result} JSON")
    c.add_argument("--expected", required=True)
    c.add_argument("--actual", required=True)
    c.add_argument("--source", required=True, help="the float safetensors file both were made from")
    args = ap.parse_args(argv)
    try:
        if args.command == "quantize":
            sources = _read_sources(args.src)
            if args.plan:
                with open(args.plan) as f:
                    plan = json.load(f)
            elif args.scheme:
                plan = {name: {"scheme": args.scheme, "params": json.loads(args.params)} for name in sources}
            else:
                raise SchemeError("give --plan or --scheme")
            entries = {}
            for name, entry in sorted(plan.items()):
                if name not in sources:
                    raise SchemeError("%s: no tensor %s" % (args.src, name))
                shape, values = sources[name]
                try:
                    parts = quantize(entry["scheme"], values, entry.get("params"), device=args.device)
                except SchemeError as e:
                    raise SchemeError("tensor %s: %s" % (name, e))
                entries[name] = (entry["scheme"], entry.get("params"), shape, parts)
            write_stored(args.out, entries)
            if args.dequantized:
                _write_dequantized(args.dequantized, read_stored(args.out))
        elif args.command == "dequantize":
            _write_dequantized(args.out, read_stored(args.src))
        else:
            expected, actual = read_stored(args.expected), read_stored(args.actual)
            sources = _read_sources(args.source)
            report = {}
            for name, e in sorted(expected.items()):
                if name not in actual or name not in sources:
                    raise SchemeError("tensor %s is not in all three files" % name)
                report[name] = public(compare(e["scheme"], e["parts"], actual[name]["parts"], sources[name][1], e["params"]))
            sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    except (ValueError, KeyError, OSError) as e:
        sys.stderr.write("quant_ref: %s: %s\n" % (type(e).__name__, e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
