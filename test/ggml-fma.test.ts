/**
 * Rule `ggml-fma`: a GGUF K-quant block equal to what ggml's reference quantizer computes when the
 * compiler contracts `a*b + c` into one fused multiply-add (clang -ffp-contract=on, Apple Silicon).
 * fmaf is one correctly rounded f32 fma; the fused quantizers reproduce clang-built ggml's bytes
 * (fixtures/ggml-fma, data from ggml's binary) where they differ from the strict ones; compare()
 * accepts exactly those, not gcc's other contraction nor a corrupted block.
 */
import {execFileSync} from 'node:child_process'
import {readFileSync} from 'node:fs'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {fmaf} from '../src/quant/fmaf.js'
import {GGML_ACCEPTED, type GgmlBlockType} from '../src/quant/ggml-block.js'
import {GGUF_Q2_K, GGUF_Q3_K, GGUF_Q4_K, GGUF_Q5_K, GGUF_Q6_K, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K} from '../src/quant/gguf-k.js'
import {type Scheme} from '../src/quant/types.js'
import {seededRandom as prng} from '../src/generate/sampler.js'

const fr = Math.fround
const FIX = path.join(import.meta.dirname, '..', 'fixtures', 'ggml-fma')
const f32 = (file: string) => {
  const b = readFileSync(path.join(FIX, file))
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength))
}
const u8 = (file: string) => new Uint8Array(readFileSync(path.join(FIX, file)))

/** 2^150: every finite f32 times it is an integer (the smallest subnormal is 2^-149). */
const S = 2 ** 150
const big = (v: number) => BigInt(v * S)

/** True when r is a·b + c rounded once to the nearest f32 (ties to even), by exact integer arithmetic. */
function correctlyRounded(a: number, b: number, c: number, r: number): boolean {
  const x = big(a) * big(b) + big(c) * BigInt(S) // (a·b + c)·2^300
  const at = (v: number) => big(v) * BigInt(S)
  const up = nextF32(r, 1)
  const down = nextF32(r, -1)
  const R = at(r)
  const d = x - R
  if (d === 0n) return true
  const neighbour = d > 0n ? up : down
  if (!Number.isFinite(neighbour)) return false
  const half = (d > 0n ? at(neighbour) - R : R - at(neighbour)) // the gap on x's side
  const twice = 2n * (d > 0n ? d : -d)
  if (twice < half) return true
  if (twice > half) return false
  const bits = new Uint32Array(new Float32Array([r]).buffer)[0]!
  return (bits & 1) === 0 // a tie: r must be the even one
}

function nextF32(v: number, dir: 1 | -1): number {
  const f = new Float32Array([v])
  const u = new Int32Array(f.buffer)
  if (v === 0) return dir * 2 ** -149
  u[0] = u[0]! + ((v > 0) === (dir > 0) ? 1 : -1)
  return f[0]!
}

describe('fmaf', () => {
  it('rounds once where f64 then f32 rounds twice', () => {
    // a·b + c = 1 + 2^-23 + 2^-24 - 2^-70: just below the f32 midpoint, so 1 + 2^-23; f64 lands on the midpoint, then ties to 1 + 2^-22
    const a = fr(2 ** -24 * (1 + 2 ** -23))
    const b = fr(1 - 2 ** -23)
    const c = fr(1 + 2 ** -23)
    expect(fmaf(a, b, c)).toBe(1 + 2 ** -23)
    expect(fr(a * b + c)).toBe(1 + 2 ** -22)
    // mirrored below zero, and the same with the product negative and c positive
    expect(fmaf(-a, b, -c)).toBe(-(1 + 2 ** -23))
    expect(fmaf(a, -b, -c)).toBe(-(1 + 2 ** -23))
  })

  it('keeps the single-product cases: exact cancellation, signed zeros, infinities, NaN', () => {
    expect(fmaf(3, 5, -15)).toBe(0)
    expect(Object.is(fmaf(-0, 1, -0), -0)).toBe(true)
    expect(Object.is(fmaf(0, 1, -0), 0)).toBe(true)
    expect(fmaf(fr(2 ** 100), fr(2 ** 100), 0)).toBe(Infinity) // overflows f32
    expect(fmaf(Infinity, 1, 1)).toBe(Infinity)
    expect(fmaf(Infinity, 0, 1)).toBeNaN()
    expect(fmaf(NaN, 1, 1)).toBeNaN()
    // subnormal ties: 2^-150 is half the smallest subnormal (ties to 0, even); 1.5·2^-149 ties to 2^-148
    expect(fmaf(2 ** -75, 2 ** -75, 0)).toBe(0)
    expect(fmaf(2 ** -75, 2 ** -75, 2 ** -149)).toBe(2 ** -148)
    expect(fmaf(2 ** -75, fr(2 ** -75 * (1 + 2 ** -23)), 0)).toBe(2 ** -149)
  })

  it('is a·b + c rounded once on hard random cases (near-cancellation, near ties, subnormals)', () => {
    const u = prng(7)
    const rnd = (lo: number, hi: number) => fr((u() < 0.5 ? -1 : 1) * (1 + u()) * 2 ** Math.floor(lo + u() * (hi - lo)))
    let doubleRoundingWrong = 0
    for (let i = 0; i < 40_000; i++) {
      const a = rnd(-20, 20)
      const b = rnd(-20, 20)
      const kind = i % 4
      const c = kind === 0 ? fr(-a * b) // cancellation
        : kind === 1 ? fr(fr(a * b) * (1 + (u() - 0.5) * 2 ** -20)) // same magnitude
        : kind === 2 ? rnd(-20, 20)
        : rnd(-140, -120) // subnormal results
      let [a2, b2] = [kind === 3 ? fr(a * 2 ** -70) : a, b]
      if (kind === 2) {
        // a·b = ±(half an ulp of c)·(1 - 2^-2i), i ≥ 15: within 2^-53 of c's f32 midpoint, the case f64 rounds onto the tie
        const i = 15 + Math.floor(u() * 9)
        const halfUlp = 2 ** (((new Uint32Array(new Float32Array([c]).buffer)[0]! >>> 23) & 0xff) - 127 - 24)
        a2 = fr((u() < 0.5 ? -1 : 1) * halfUlp * (1 + 2 ** -i))
        b2 = fr(1 - 2 ** -i)
      }
      const r = fmaf(a2, b2, c)
      expect(correctlyRounded(a2, b2, c, r), `fmaf(${a2}, ${b2}, ${c}) = ${r}`).toBe(true)
      if (fr(a2 * b2 + c) !== r) doubleRoundingWrong++
    }
    expect(doubleRoundingWrong).toBeGreaterThan(1000) // the naive f64 sum is wrong on many of these
  })
})

const TYPES: [string, GgmlBlockType, Scheme][] = [
  ['q2_k', Q2_K, GGUF_Q2_K], ['q3_k', Q3_K, GGUF_Q3_K], ['q4_k', Q4_K, GGUF_Q4_K], ['q5_k', Q5_K, GGUF_Q5_K], ['q6_k', Q6_K, GGUF_Q6_K],
]

describe.each(TYPES)('rule ggml-fma on %s', (name, t, scheme) => {
  const source = f32(`${name}.f32`)
  const clang = u8(`${name}.clang`)
  const n = source.length / 256
  const strict = t.quantize(source)

  it('the fused quantizer reproduces clang-built ggml on every fixture block; the strict one differs on each', () => {
    expect(clang.length).toBe(n * t.bytes)
    expect(Buffer.from(t.quantizeFused!(source)).equals(Buffer.from(clang))).toBe(true)
    for (let k = 0; k < n; k++) expect(Buffer.from(strict.subarray(k * t.bytes, (k + 1) * t.bytes)).equals(Buffer.from(clang.subarray(k * t.bytes, (k + 1) * t.bytes)))).toBe(false)
  })

  it('compare accepts every clang block under the rule and keeps strict blocks identical', () => {
    const diff = scheme.compare({blocks: strict}, {blocks: clang}, source, n, 256, {})
    expect(diff.identicalBlocks).toBe(0)
    expect(diff.accepted).toEqual({[GGML_ACCEPTED.fma]: n})
    expect(diff.acceptedBlocks).toEqual(Array.from({length: n}, (_, k) => k))
    expect(diff.first).toBeUndefined()
    const same = scheme.compare({blocks: strict}, {blocks: strict.slice()}, source, n, 256, {})
    expect(same.identicalBlocks).toBe(n)
    expect(same.accepted).toEqual({})
  })

  it('a clang block with one code changed is not accepted', () => {
    const bad = clang.slice()
    const k = n >> 1
    const o = k * t.bytes
    const before = t.code(bad, o, 100)
    // flip one bit of element 100's code wherever it lives: the first bit of the block that changes it
    search: for (let byte = o; byte < o + t.bytes; byte++) {
      for (let bit = 1; bit < 256; bit <<= 1) {
        bad[byte] ^= bit
        if (t.code(bad, o, 100) !== before) break search
        bad[byte] ^= bit
      }
    }
    expect(t.code(bad, o, 100)).not.toBe(before)
    const diff = scheme.compare({blocks: strict}, {blocks: bad}, source, n, 256, {})
    expect(diff.accepted[GGML_ACCEPTED.fma]).toBe(n - 1)
    expect(diff.acceptedBlocks).not.toContain(k)
    expect(diff.first).toMatchObject({row: k, block: 0})
  })
})

describe.each([['q4_k', Q4_K, GGUF_Q4_K], ['q5_k', Q5_K, GGUF_Q5_K]] as const)('gcc-fma blocks clang does not make (%s)', (name, t, scheme) => {
  it('are not accepted', () => {
    const source = f32(`${name}-gcc.f32`)
    const gcc = u8(`${name}-gcc.gcc`)
    const n = source.length / 256
    const diff = scheme.compare({blocks: t.quantize(source)}, {blocks: gcc}, source, n, 256, {})
    expect(diff.identicalBlocks).toBe(0)
    expect(diff.accepted).toEqual({})
    expect(diff.first).toMatchObject({row: 0})
  })
})

describe('the PyTorch reference (quant_ref.py) classifies alike', () => {
  it('accepts every clang fixture block under ggml-fma, not a corrupted one nor gcc-only blocks', () => {
    const script = `
import json, sys, numpy as np
sys.path.insert(0, sys.argv[1])
import quant_ref as q
fix, out = sys.argv[2], {}
for t, n in {"q2_k": 84, "q3_k": 110, "q4_k": 144, "q5_k": 176, "q6_k": 210}.items():
    scheme = "gguf_" + t
    def run(stem, ext):
        src = np.fromfile(f"{fix}/{stem}.f32", np.float32).reshape(-1, 256)
        theirs = np.fromfile(f"{fix}/{stem}.{ext}", np.uint8).reshape(-1, n)
        strict = q.quantize(scheme, src, {})["blocks"]
        bad = theirs.copy()
        bad[len(bad) // 2, n // 2] ^= 1
        r = q.compare(scheme, {"blocks": strict}, {"blocks": theirs}, src, {})
        c = q.compare(scheme, {"blocks": strict}, {"blocks": bad}, src, {})
        merged = q.take_accepted(scheme, {"blocks": strict}, {"blocks": theirs}, r["accepted_mask"])
        return {"blocks": r["blocks"], "identical": r["identical_blocks"], "mismatched": r["mismatched_blocks"], "accepted": r["accepted"],
                "merged": bool((merged["blocks"] == theirs).all()), "corrupted": c["accepted"], "corruptedMismatched": c["mismatched_blocks"]}
    out[t] = run(t, "clang")
    if t in ("q4_k", "q5_k"):
        out[t + "-gcc"] = run(t + "-gcc", "gcc")
print(json.dumps(out))
`
    const py = JSON.parse(execFileSync('/usr/bin/python3', ['-c', script, path.join(import.meta.dirname, '..', 'src', 'verify', 'python'), FIX], {encoding: 'utf8'}))
    for (const [name] of TYPES) {
      const n = f32(`${name}.f32`).length / 256
      expect(py[name], name).toEqual({blocks: n, identical: 0, mismatched: 0, accepted: {[GGML_ACCEPTED.fma]: n}, merged: true, corrupted: {[GGML_ACCEPTED.fma]: n - 1}, corruptedMismatched: 1})
    }
    for (const name of ['q4_k-gcc', 'q5_k-gcc']) expect(py[name], name).toMatchObject({blocks: 8, identical: 0, mismatched: 8, accepted: {[GGML_ACCEPTED.fma]: 0}})
  })
})

describe('a file that differs everywhere', () => {
  it('stops trying the fused quantizer after 8 rejected blocks of a compare call (each rejection already fails the tensor)', () => {
    const source = f32('q4_k.f32')
    const clang = u8('q4_k.clang')
    const n = source.length / 256
    const bad = clang.slice()
    for (let k = 0; k < 10; k++) bad[k * Q4_K.bytes + 100] ^= 1 // a code byte of each of the first 10 blocks
    const diff = GGUF_Q4_K.compare({blocks: Q4_K.quantize(source)}, {blocks: bad}, source, n, 256, {})
    expect(diff.accepted).toEqual({}) // blocks 10 … were never tried
    expect(diff.first).toMatchObject({row: 0, block: 0})
    expect(GGUF_Q4_K.compare({blocks: Q4_K.quantize(source)}, {blocks: bad.subarray(8 * Q4_K.bytes)}, source.subarray(8 * 256), n - 8, 256, {}).accepted).toEqual({[GGML_ACCEPTED.fma]: n - 10})
  })
})
