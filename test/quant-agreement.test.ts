/**
 * The TS quantizers the writers use (src/formats/mlx/quantize.ts, src/formats/gguf/q8_0.ts, the
 * 16-bit casts of src/tensor/dtype.ts) and the PyTorch reference's own implementations
 * (src/verify/python/quant_ref.py, written from MLX's and ggml's definitions) agree bit for bit:
 * random matrices (several shapes and seeds) for every bits × group size × dtype, Q8_0 and the
 * casts, and hand-built edge cases. Also: `compare` classifies differences (identical, mismatch,
 * MLX's Metal rule, half-away ties), and the worker's `op: "exact"` proves a real 4-bit conversion.
 *
 * Documented divergences (unsupported input, asserted below as what each side does):
 * - signalling-NaN f32 inputs to the 16-bit casts: TS keeps the NaN signalling (payload kept
 *   verbatim), the reference quiets it (sets the quiet bit, as x86/ARM conversions and ggml do);
 *   every quiet NaN agrees bit for bit.
 * - NaN inside a Q8_0 block: ggml's `MAX(amax, fabsf(v))` takes a NaN and drops it at the next
 *   value (order-dependent; gguf-py's numpy max propagates it instead); TS skips NaNs.
 * - dequantized NaNs: the payload is not compared (those values only feed the forward pass).
 */
import {execFileSync} from 'node:child_process'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {dequantizeQ8_0, quantizeQ8_0} from '../src/quant/q8_0.js'
import {dequantizedRecord, quantizedRecords} from '../src/formats/mlx/quantize.js'
import {openSafetensors} from '../src/formats/safetensors/read.js'
import {writeSafetensors} from '../src/formats/safetensors/write.js'
import {drain} from '../src/progress.js'
import {castBytes, f32BitsToBf16Bits, f32BitsToF16Bits, f32ToF16Bits, type FloatDType, toFloat32} from '../src/tensor/dtype.js'
import {f32Record, memoryRecord} from '../src/tensor/record.js'
import {TorchWorker} from '../src/verify/backends/torch.js'
import {seededRandom as prng} from '../src/generate/sampler.js'

const PYTHON = '/usr/bin/python3'
const QUANT_REF = path.join(import.meta.dirname, '..', 'src', 'verify', 'python', 'quant_ref.py')
const MLX_STORED = path.join(import.meta.dirname, 'python', 'mlx_stored.py')
const BITS = [2, 3, 4, 5, 6, 8] as const
const GROUP_SIZES = [32, 64, 128] as const
const DTYPES: FloatDType[] = ['F32', 'F16', 'BF16']
const f32 = Math.fround

type Scheme = 'f32' | 'f16' | 'bf16' | 'mlx_affine' | 'gguf_q8_0'
interface MlxParams {bits: number; group_size: number; dtype: FloatDType}
interface Case {name: string; rows: number; cols: number; values: Float32Array; scheme: Scheme; params: MlxParams | Record<string, never>}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-quant-agreement-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))

// ---- inputs ------------------------------------------------------------------------------------

/** Weight-like values: normal(0, scale) with a few outliers, one distribution per seed. */
function randomMatrix(seed: number, rows: number, cols: number): Float32Array {
  const u = prng(seed)
  const scale = [0.02, 0.5, 3, 1e-3][seed % 4]!
  return Float32Array.from({length: rows * cols}, () => {
    const g = Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u())
    return u() < 0.01 ? g * scale * 20 : g * scale
  })
}

/** Random f32 bit patterns (every class: normals, subnormals, ±0, ±Inf, NaNs), signalling NaNs quieted. */
function randomBits(seed: number, n: number): Float32Array {
  const u = prng(seed)
  const bits = Uint32Array.from({length: n}, () => {
    const b = (u() * 2 ** 32) >>> 0
    return (b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0 ? b | 0x400000 : b
  })
  return new Float32Array(bits.buffer)
}

const f32FromBits = (...bits: number[]) => new Float32Array(Uint32Array.from(bits).buffer)

/** 32 values; with `repeat` the pattern fills a 128-column row, so groups of 32/64/128 see the same min/max. */
function row128(pattern: ArrayLike<number>): Float32Array {
  return Float32Array.from({length: 128}, (_, i) => pattern[i % pattern.length]!)
}

/** Hand-built MLX groups (one 128-value row each); `bits` picks the tie cases that are exact at that width. */
function mlxEdgeRows(bits: number): Float32Array[] {
  const n = 2 ** bits - 1
  const s = 2 ** -(bits + 1)
  const g = (fn: (i: number) => number) => row128(Array.from({length: 32}, (_, i) => fn(i)))
  return [
    // ties in (w - bias) / scale: min -1 dominates, scale s exactly, w = -1 + (k + 0.5)s
    g((i) => (i === 0 ? -1 : i === 1 ? -1 + n * s : -1 + ((i % n) + 0.5) * s)),
    // a tie in edge / scale (q0): scale 1, min -(floor(n/2)+1.5) dominates, so q0 = rint(k + 0.5)
    g((i) => (i === 0 ? -(Math.floor(n / 2) + 1.5) : i === 1 ? n - (Math.floor(n / 2) + 1.5) : -1 + (i % 5) * 0.25)),
    g((i) => -1 + i * 0.03), // all negative
    g((i) => 0.25 + i * 0.011), // all positive
    g(() => 0), // all zero
    g(() => 0.3), // constant: the 1e-7 scale floor, bias = the constant
    g((i) => -0.3 - (i % 2) * 1e-8), // near-constant: span below the floor
    g((i) => (i === 0 ? -5 : 0.1 * Math.sin(i))), // min dominates with both signs
    g((i) => (i === 0 ? 5 : 0.1 * Math.sin(i))), // max dominates
    g((i) => (i % 2 ? 1 : -1) * (i + 1) * 1e-8), // tiny (f16 subnormal/underflow)
    g((i) => (i % 2 ? 1 : -1) * (i + 1) * 1e-40), // f32 subnormals
    g((i) => (i % 3 - 1) * 6.0e4 + i), // near the f16 maximum
    g((i) => (i === 3 ? 1e5 : i === 4 ? -7e4 : i * 100)), // overflows f16 (Inf after the cast to F16)
    g((i) => (i === 0 ? 3e38 : i === 1 ? -3e38 : i)), // the f32 range overflows
    g((i) => (i === 5 ? Infinity : i * 0.1)),
    g((i) => (i === 5 ? -Infinity : i * 0.1)),
    g((i) => (i === 7 ? NaN : i * 0.1 - 1)),
    g(() => NaN),
    g((i) => (i === 0 ? Infinity : i === 1 ? -Infinity : 0)),
  ]
}

/** Hand-built Q8_0 blocks (32 values each). */
function q8EdgeBlocks(): Float32Array {
  const blocks: number[][] = [
    Array.from({length: 32}, (_, i) => (i === 0 ? 127 : i - 15.5)), // d = 1: every x.5 is a roundf tie
    Array.from({length: 32}, (_, i) => (i === 0 ? -127 : -(i + 0.5))), // negative ties
    Array.from({length: 32}, () => 0), // d = 0, id = 0
    Array.from({length: 32}, (_, i) => (i - 16) * 6e-8), // d below 2^-25: the f16 d rounds to 0
    Array.from({length: 32}, (_, i) => (i - 16) * 5e-6), // d an f16 subnormal
    Array.from({length: 32}, (_, i) => (i - 16) * 1e6), // d overflows f16 (Inf)
    Array.from({length: 32}, (_, i) => (i - 16) * 1e-39), // d an f32 subnormal: 1/d overflows to Inf
    Array.from({length: 32}, (_, i) => (i === 3 ? Infinity : i)), // amax Inf: id = 0, the Inf code is NaN
    Array.from({length: 32}, (_, i) => (i === 3 ? -Infinity : -i)),
    Array.from({length: 32}, (_, i) => 0.37 * (i % 7) - 1.1),
  ]
  return Float32Array.from(blocks.flat())
}

/** 16-bit cast edge cases: ties, subnormal and overflow boundaries, ±0, ±Inf, quiet NaNs with payloads. */
function castEdges(): Float32Array {
  return f32FromBits(
    0x3f801000, 0x3f803000, 0x3f800fff, 0x3f801001, // f16 ties (even down, odd up) and neighbours
    0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001, // bf16 ties
    0x33000000, 0x33000001, 0x33800000, 0x33c00000, 0x387fe000, 0x387ff000, 0x38800000, // f16 subnormal edges (2^-25 ties to 0)
    0x477fe000, 0x477fefff, 0x477ff000, 0x47800000, // 65504, just below 65520, 65520 (→ Inf), 65536
    0x7f7fffff, 0x7f7f7fff, 0x7f7f8000, 0xff7fffff, // bf16 overflow to ±Inf and the largest finite
    0x00000001, 0x80000001, 0x00400000, 0x00000000, 0x80000000, 0x7f800000, 0xff800000,
    0x7fc00000, 0xffc00000, 0x7fc00001, 0x7fe12345, 0xffd0beef, 0x7fffffff,
  )
}

function buildCases(): Case[] {
  const cases: Case[] = []
  const add = (c: Case) => cases.push(c)
  for (const bits of BITS) {
    for (const groupSize of GROUP_SIZES) {
      for (const dtype of DTYPES) {
        const params = {bits, group_size: groupSize, dtype}
        const tag = `${bits}b-g${groupSize}-${dtype}`
        const seed = bits * 1000 + groupSize * 10 + DTYPES.indexOf(dtype)
        add({name: `mlx.random.${tag}.a`, rows: 3, cols: 384, values: randomMatrix(seed, 3, 384), scheme: 'mlx_affine', params})
        add({name: `mlx.random.${tag}.b`, rows: 5, cols: 128, values: randomMatrix(seed + 1, 5, 128), scheme: 'mlx_affine', params})
        const edges = mlxEdgeRows(bits)
        const values = new Float32Array(edges.length * 128)
        edges.forEach((r, i) => values.set(r, i * 128))
        add({name: `mlx.edge.${tag}`, rows: edges.length, cols: 128, values, scheme: 'mlx_affine', params})
      }
    }
  }
  for (const seed of [1, 2, 3, 4]) add({name: `q8_0.random.${seed}`, rows: 4, cols: 64 * seed, values: randomMatrix(seed, 4, 64 * seed), scheme: 'gguf_q8_0', params: {}})
  const q8 = q8EdgeBlocks()
  add({name: 'q8_0.edge', rows: q8.length / 64, cols: 64, values: q8, scheme: 'gguf_q8_0', params: {}})
  for (const scheme of ['f16', 'bf16', 'f32'] as const) {
    add({name: `${scheme}.random`, rows: 128, cols: 256, values: randomBits(scheme.length, 128 * 256), scheme, params: {}})
    add({name: `${scheme}.normal`, rows: 4, cols: 256, values: randomMatrix(7, 4, 256), scheme, params: {}})
    const e = castEdges()
    add({name: `${scheme}.edge`, rows: 1, cols: e.length, values: e, scheme, params: {}})
  }
  return cases
}

// ---- the two sides -----------------------------------------------------------------------------

const bytesOf = (a: Float32Array | Uint32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)

/** The TS writers' bytes for each part of a case. */
async function tsParts(c: Case): Promise<Record<string, Uint8Array>> {
  if (c.scheme === 'mlx_affine') {
    const p = c.params as MlxParams
    const r = quantizedRecords(f32Record(c.name, [c.rows, c.cols], c.values), c.name, {bits: p.bits, groupSize: p.group_size}, p.dtype)
    return {biases: await r.biases.read(), scales: await r.scales.read(), weight: await r.weight.read()}
  }
  if (c.scheme === 'gguf_q8_0') return {blocks: quantizeQ8_0(c.values)}
  return {data: castBytes(bytesOf(c.values), 'F32', ({f32: 'F32', f16: 'F16', bf16: 'BF16'} as const)[c.scheme])}
}

/** The TS readers' dequantized f32 values of the TS parts. */
async function tsDequantized(c: Case, parts: Record<string, Uint8Array>): Promise<Float32Array> {
  if (c.scheme === 'mlx_affine') {
    const p = c.params as MlxParams
    const groups = c.cols / p.group_size
    const rec = (part: string, dtype: 'U32' | FloatDType, cols: number) => memoryRecord(`${c.name}.${part}`, dtype, [c.rows, cols], parts[part]!)
    const record = dequantizedRecord(c.name, rec('weight', 'U32', (c.cols * p.bits) / 32), rec('scales', p.dtype, groups), rec('biases', p.dtype, groups), {bits: p.bits, groupSize: p.group_size})
    return toFloat32(await record.read(), p.dtype).slice()
  }
  if (c.scheme === 'gguf_q8_0') return dequantizeQ8_0(parts.blocks!)
  return toFloat32(parts.data!, ({f32: 'F32', f16: 'F16', bf16: 'BF16'} as const)[c.scheme]).slice()
}

async function readAll(file: string): Promise<Map<string, Uint8Array>> {
  const st = await openSafetensors(file)
  try {
    const out = new Map<string, Uint8Array>()
    for (const t of st.tensors) out.set(t.name, (await t.read()).slice())
    return out
  } finally {
    await st.close()
  }
}

function firstByteDifference(a: Uint8Array, b: Uint8Array): string | undefined {
  if (a.byteLength !== b.byteLength) return `${a.byteLength} bytes vs ${b.byteLength}`
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return `byte ${i}: ${a[i]} vs ${b[i]}`
  return undefined
}

/** Index of the first value whose bits differ, NaN matching any NaN; -1 if none. */
function firstValueDifference(a: Float32Array, b: Float32Array): number {
  const ab = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const bb = new Uint32Array(b.buffer, b.byteOffset, b.length)
  for (let i = 0; i < a.length; i++) if (ab[i] !== bb[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return i
  return a.length === b.length ? -1 : Math.min(a.length, b.length)
}

function py(args: string[]): string {
  return execFileSync(PYTHON, args, {encoding: 'utf8', maxBuffer: 1 << 28})
}

async function writeInputs(file: string, cases: Case[]): Promise<void> {
  await drain(writeSafetensors(file, cases.map((c) => f32Record(c.name, [c.rows, c.cols], c.values))))
}

// ---- compare -----------------------------------------------------------------------------------

/** A stored file's bytes with `edit(tensorBytes(name))` applied to the named tensors' data in place. */
function editStored(file: string, out: string, edits: Record<string, (data: Buffer) => void>): void {
  const bytes = Buffer.from(readFileSync(file))
  const n = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, {data_offsets: [number, number]}>
  for (const [name, edit] of Object.entries(edits)) {
    const [b, e] = header[name]!.data_offsets
    edit(bytes.subarray(8 + n + b, 8 + n + e))
  }
  writeFileSync(out, bytes)
}

/** Code `col` of row `row` in LSB-first packed words (`wordsPerRow` per row): get, or set when `value` is given. */
function code(words: Buffer, wordsPerRow: number, row: number, col: number, bits: number, value?: number): number {
  const at = row * wordsPerRow * 32 + col * bits
  let q = 0
  for (let k = 0; k < bits; k++) {
    const bit = at + k
    const byte = 4 * (bit >>> 5) + ((bit & 31) >>> 3) // little-endian words
    if (value === undefined) q |= ((words[byte]! >>> (bit & 7)) & 1) << k
    else words[byte] = (words[byte]! & ~(1 << (bit & 7))) | (((value >>> k) & 1) << (bit & 7))
  }
  return value ?? q
}

const roundAway = (x: number) => Math.sign(x) * Math.floor(Math.abs(x) + 0.5)

/** One group under MLX's Metal kernel (`affine_quantize` in kernels/quantized.h), f32 values, f32 params. */
function metalGroup(w: Float32Array, bits: number): {scale: number; bias: number; codes: number[]} {
  const n = 2 ** bits - 1
  let wMin = 3.4028234663852886e38
  let wMax = 0
  for (const v of w) {
    wMin = Math.min(wMin, v)
    wMax = Math.max(wMax, v)
  }
  let scale = Math.max(f32(f32(wMax - wMin) / n), f32(1e-7))
  const side = Math.abs(wMin) > Math.abs(wMax)
  scale = side ? scale : -scale
  const edge = side ? wMin : wMax
  const q0 = roundAway(f32(edge / scale))
  let bias = 0
  if (q0 !== 0) {
    scale = f32(edge / q0)
    bias = edge
  }
  return {scale, bias, codes: Array.from(w, (v) => Math.min(roundAway(f32(f32(v - bias) / scale)), n))}
}

interface CompareResult {
  elements: number
  identical_elements: number
  blocks: number
  identical_blocks: number
  mismatched_blocks: number
  first_difference: {row: number; block: number; col: number; part: string} | null
  first_mismatch: {row: number; block: number; col: number; part: string} | null
  accepted: Record<string, number>
}

// ---- one run of the reference for everything below ----------------------------------------------

const CLASSIFY_MLX = {bits: 4, group_size: 32, dtype: 'F32' as FloatDType}
const ALL_NEGATIVE = Float32Array.from({length: 32}, (_, i) => -1 + i * 0.03)
/** Signalling NaNs (quiet bit clear): payload in the top mantissa bits (two), only in the lowest bit (one). */
const SNAN = [0x7f812345, 0xff900001, 0x7f800001]

/** Inputs the reference handles differently from TS on purpose (pinned below, not in the agreement checks). */
function divergenceCases(): Case[] {
  const q8 = (nanAt: number) => Float32Array.from({length: 32}, (_, i) => (i === nanAt ? NaN : i === 0 ? -100 : i === 31 ? 0 : i - 10))
  const blocks = new Float32Array(64)
  blocks.set(q8(31), 0)
  blocks.set(q8(5), 32)
  return [
    {name: 'diverge.f16', rows: 1, cols: 3, values: f32FromBits(...SNAN), scheme: 'f16', params: {}},
    {name: 'diverge.bf16', rows: 1, cols: 3, values: f32FromBits(...SNAN), scheme: 'bf16', params: {}},
    {name: 'diverge.q8_0', rows: 2, cols: 32, values: blocks, scheme: 'gguf_q8_0', params: {}},
  ]
}

/** The artifact side of the compare checks: each tensor quantized by the reference, then edited. */
function classifyCases(): Case[] {
  const classify = randomMatrix(11, 5, 128)
  classify.set(ALL_NEGATIVE, 1 * 128) // row 1, group 0: the artifact takes MLX's Metal rule here
  classify.set(mlxEdgeRows(4)[0]!, 2 * 128) // row 2: ties in every group; col 34 has quotient 2.5
  return [
    {name: 'classify.mlx', rows: 5, cols: 128, values: classify, scheme: 'mlx_affine', params: CLASSIFY_MLX},
    {name: 'classify.signflip', rows: 2, cols: 128, values: randomMatrix(12, 2, 128), scheme: 'mlx_affine', params: {bits: 4, group_size: 32, dtype: 'F16'}},
    {name: 'classify.q8', rows: 2, cols: 64, values: randomMatrix(13, 2, 64), scheme: 'gguf_q8_0', params: {}},
    {name: 'classify.half', rows: 3, cols: 16, values: randomMatrix(14, 3, 16), scheme: 'f16', params: {}},
    {name: 'classify.metal', rows: 8, cols: 128, values: metalInput(), scheme: 'mlx_affine', params: METAL_MLX},
  ]
}

const METAL_MLX = {bits: 3, group_size: 32, dtype: 'F16' as FloatDType}

/** Groups of every sign pattern (all negative, all positive, mixed) for a whole tensor under the Metal rule. */
function metalInput(): Float32Array {
  const v = randomMatrix(15, 8, 128)
  return v.map((x, i) => x * 0.3 + [-1, 1, 0, -0.4][Math.floor(i / 32) % 4]!)
}

/** The artifact of `classify.metal`: every group under the Metal rule, on the values rounded to F16. */
function metalArtifact(w: Buffer, scales: Buffer, biases: Buffer): void {
  const rounded = toFloat32(castBytes(bytesOf(metalInput()), 'F32', 'F16'), 'F16')
  for (let g = 0; g < rounded.length / 32; g++) {
    const {scale, bias, codes} = metalGroup(rounded.subarray(g * 32, (g + 1) * 32), METAL_MLX.bits)
    scales.writeUInt16LE(f32ToF16Bits(scale), g * 2)
    biases.writeUInt16LE(f32ToF16Bits(bias), g * 2)
    codes.forEach((q, j) => code(w, 12, Math.floor(g / 4), (g % 4) * 32 + j, METAL_MLX.bits, q))
  }
}

const cases = [...buildCases(), ...divergenceCases(), ...classifyCases()]
let stored: Map<string, Uint8Array>
let dequantized: Map<string, Uint8Array>
let report: Record<string, CompareResult>
let metalScaleOfCpuRule = 0
let tieCodeOfReference = -1

beforeAll(async () => {
  const src = path.join(tmp, 'cases.safetensors')
  const expected = path.join(tmp, 'stored.safetensors')
  const actual = path.join(tmp, 'classify.actual.safetensors')
  await writeInputs(src, cases)
  writeFileSync(path.join(tmp, 'plan.json'), JSON.stringify(Object.fromEntries(cases.map((c) => [c.name, {scheme: c.scheme, params: c.params}]))))
  py([QUANT_REF, 'quantize', '--in', src, '--plan', path.join(tmp, 'plan.json'), '--out', expected, '--dequantized', path.join(tmp, 'dequantized.safetensors')])
  stored = await readAll(expected)
  dequantized = await readAll(path.join(tmp, 'dequantized.safetensors'))

  // The artifact: the reference's own output with one edit of each kind, compared by the CLI.
  const metal = metalGroup(ALL_NEGATIVE, 4)
  const metalParts: {scales: Buffer; biases: Buffer} = {scales: Buffer.alloc(0), biases: Buffer.alloc(0)}
  editStored(expected, actual, {
    'classify.mlx::weight': (w) => {
      metal.codes.forEach((q, c) => code(w, 16, 1, c, 4, q))
      tieCodeOfReference = code(w, 16, 2, 34, 4)
      code(w, 16, 2, 34, 4, 3) // ... and away from zero by the artifact
      const q = code(w, 16, 3, 70, 4)
      code(w, 16, 3, 70, 4, q < 15 ? q + 1 : q - 1) // an ordinary code off by one
    },
    'classify.mlx::scales': (s) => {
      metalScaleOfCpuRule = s.readFloatLE(4 * 4)
      s.writeFloatLE(metal.scale, 4 * 4)
    },
    'classify.mlx::biases': (b) => b.writeFloatLE(metal.bias, 4 * 4),
    'classify.signflip::scales': (s) => s.writeUInt16LE(s.readUInt16LE((1 * 4 + 3) * 2) ^ 0x8000, (1 * 4 + 3) * 2), // row 1, group 3
    'classify.q8::blocks': (b) => b.writeInt8(b.readInt8(75) > -127 ? b.readInt8(75) - 1 : -126, 75), // row 1 (2 blocks of 34 bytes), block 0, code 5
    'classify.metal::scales': (s) => (metalParts.scales = s), // edited with the weight, below (edits run in this order)
    'classify.metal::biases': (b) => (metalParts.biases = b),
    'classify.metal::weight': (w) => metalArtifact(w, metalParts.scales, metalParts.biases),
    'classify.half::data': (h) => h.writeUInt16LE(h.readUInt16LE((2 * 16 + 7) * 2) ^ 1, (2 * 16 + 7) * 2), // row 2, col 7
  })
  // compare takes every tensor of the plan; the unedited ones must come out identical.
  report = JSON.parse(py([QUANT_REF, 'compare', '--expected', expected, '--actual', actual, '--source', src])) as Record<string, CompareResult>
})

// ---- agreement ---------------------------------------------------------------------------------

describe('TS quantizers and the PyTorch reference agree bit for bit', () => {
  const check = async (prefix: string, expectedCount: number) => {
    const selected = cases.filter((c) => c.name.startsWith(prefix))
    expect(selected.length).toBe(expectedCount)
    const failures: string[] = []
    for (const c of selected) {
      const ts = await tsParts(c)
      for (const [part, bytes] of Object.entries(ts)) {
        const diff = firstByteDifference(bytes, stored.get(`${c.name}::${part}`) ?? new Uint8Array(0))
        if (diff) failures.push(`${c.name} ${part}: ${diff}`)
      }
      const tv = await tsDequantized(c, ts)
      const pb = dequantized.get(c.name)!
      const pv = new Float32Array(pb.slice().buffer)
      const at = firstValueDifference(tv, pv)
      if (at >= 0) failures.push(`${c.name} dequantized value ${at}: ${tv[at]} vs ${pv[at]}`)
    }
    expect(failures).toEqual([])
  }

  it('mlx_affine, random matrices: every bits × group size × dtype, two shapes and seeds each', () => check('mlx.random.', 108))
  it('mlx_affine, edge groups (ties, signs, zero/constant, tiny, huge, ±Inf, NaN) at every bits × group size × dtype', () => check('mlx.edge.', 54))
  it('gguf_q8_0: random blocks and edge blocks (roundf ties, d → 0, f16 subnormal d, d → Inf, 1/d → Inf, Inf)', () => check('q8_0.', 5))
  it('f16, bf16 and f32 casts: random bit patterns of every class, ties, subnormal and overflow edges, quiet NaN payloads', async () => {
    await check('f16.', 3)
    await check('bf16.', 3)
    await check('f32.', 3)
  })
  it('the compare inputs too (every tensor the compare checks use, before the edits)', () => check('classify.', 5))

  it('the hand-built cases really hit their edges: exact ties, f16 d of 0, subnormal and Inf', () => {
    // A tie case must contain codes that rint and roundf round differently, or it tests nothing.
    const c = cases.find((x) => x.name === 'mlx.edge.4b-g32-F32')!
    const quotients = Array.from(c.values.subarray(0, 32), (w) => f32(f32(w + 1) / 2 ** -5))
    expect(quotients.filter((q) => q % 1 === 0.5 && Math.floor(q) % 2 === 0).length).toBeGreaterThan(3)
    const blocks = stored.get('q8_0.edge::blocks')!
    const d = (b: number) => blocks[b * 34]! | (blocks[b * 34 + 1]! << 8)
    expect([d(0), d(2), d(3), d(5), d(7)]).toEqual([0x3c00, 0, 0, 0x7c00, 0x7c00]) // 1.0, 0, 0 (underflow), +Inf, +Inf
    expect(d(4) & 0x7c00).toBe(0) // an f16 subnormal
    expect(d(4)).not.toBe(0)
  })
})

describe('documented divergences (unsupported input), each side pinned', () => {
  const u16 = (name: string) => Array.from(new Uint16Array(stored.get(name)!.slice().buffer))

  it('a signalling NaN: TS keeps it signalling (payload verbatim), the reference quiets it (sign and top payload kept)', () => {
    expect(SNAN.map(f32BitsToF16Bits)).toEqual([0x7c09, 0xfc80, 0x7e00]) // TS: still signalling unless the kept payload is empty
    expect(u16('diverge.f16::data')).toEqual([0x7e09, 0xfe80, 0x7e00])
    expect(SNAN.map(f32BitsToBf16Bits)).toEqual([0x7f81, 0xff90, 0x7fc0])
    expect(u16('diverge.bf16::data')).toEqual([0x7fc1, 0xffd0, 0x7fc0])
  })

  it('a NaN in a Q8_0 block: ggml\'s running max takes it and restarts at the next value; TS skips it', () => {
    const dBits = (amax: number) => f32BitsToF16Bits(new Uint32Array(Float32Array.of(f32(amax / 127)).buffer)[0]!)
    const ts = quantizeQ8_0(cases.find((c) => c.name === 'diverge.q8_0')!.values)
    expect([ts[0]! | (ts[1]! << 8), ts[34]! | (ts[35]! << 8)]).toEqual([dBits(100), dBits(100)]) // TS: amax of the other values
    const py = stored.get('diverge.q8_0::blocks')!
    expect(py[0]! | (py[1]! << 8)).toBe(0x7e00) // NaN last: amax = NaN, d = NaN (ggml's FP32_TO_FP16 NaN)
    expect(py[34]! | (py[35]! << 8)).toBe(dBits(20)) // NaN at 5: restarts at |x[6]| = 4, ends at 20; -100 is forgotten
  })
})

// ---- compare -----------------------------------------------------------------------------------

describe('compare classifies the artifact against the reference quantization', () => {
  it('unedited tensors are identical in every element and block', () => {
    for (const name of ['mlx.random.3b-g64-BF16.a', 'q8_0.edge', 'f16.random', 'mlx.edge.5b-g128-F16']) {
      const r = report[name]!
      expect({name, ...r}).toMatchObject({name, identical_elements: r.elements, identical_blocks: r.blocks, mismatched_blocks: 0, first_difference: null, first_mismatch: null})
    }
    const unexpected = Object.entries(report).filter(([name, r]) => !name.startsWith('classify.') && r.identical_elements !== r.elements)
    expect(unexpected).toEqual([])
  })

  it('a Metal-rule group and a half-away tie are accepted by kind; a code off by one is a named mismatch', () => {
    const r = report['classify.mlx']!
    expect(metalScaleOfCpuRule).not.toBe(metalGroup(ALL_NEGATIVE, 4).scale) // the Metal group really differs from the CPU rule's
    expect(tieCodeOfReference).toBe(2) // quotient 2.5: the reference rounds to even, the artifact took 3
    expect(r.blocks).toBe(20)
    expect(r.identical_blocks).toBe(17)
    expect(r.accepted).toEqual({'tie-half-away': 1, 'mlx-metal-rule': 1})
    expect(r.mismatched_blocks).toBe(1)
    expect(r.first_difference).toEqual({row: 1, block: 0, col: 0, part: 'scales'})
    expect(r.first_mismatch).toEqual({row: 3, block: 2, col: 70, part: 'weight'})
    // Row 1 group 0 (all 32 elements: another scale), row 2 col 34 and row 3 col 70 differ.
    expect(r.elements - r.identical_elements).toBe(32 + 1 + 1)
  })

  it('a whole tensor made with MLX\'s Metal rule (by a TS transcription of the kernel): every group identical or accepted, none a mismatch', () => {
    const r = report['classify.metal']!
    expect(r.mismatched_blocks).toBe(0)
    expect(r.first_mismatch).toBeNull()
    expect(r.identical_blocks + r.accepted['tie-half-away']! + r.accepted['mlx-metal-rule']!).toBe(r.blocks)
    // The two rules differ only where a group's max is below 0 (Metal starts w_max at 0) or on ties:
    // here the 16 all-negative groups (offsets -1 and -0.4); the mixed and all-positive ones are identical.
    expect([r.identical_blocks, r.accepted['mlx-metal-rule'], r.accepted['tie-half-away']]).toEqual([16, 16, 0])
  })

  it('a scale with a flipped sign, a Q8_0 code and an f16 value are mismatches named by row, block, column and part', () => {
    expect(report['classify.signflip']).toMatchObject({mismatched_blocks: 1, first_mismatch: {row: 1, block: 3, col: 96, part: 'scales'}, accepted: {'tie-half-away': 0, 'mlx-metal-rule': 0}})
    expect(report['classify.q8']).toMatchObject({blocks: 4, identical_blocks: 3, mismatched_blocks: 1, identical_elements: 127, first_mismatch: {row: 1, block: 0, col: 5, part: 'blocks'}, accepted: {}})
    expect(report['classify.half']).toMatchObject({blocks: 3, identical_blocks: 2, identical_elements: 47, first_difference: {row: 2, block: 0, col: 7, part: 'data'}})
  })
})

// ---- op "exact" end to end ---------------------------------------------------------------------

describe('op "exact" on real conversions of the tiny fixture', () => {
  const FIXTURE = 'fixtures/tiny-hf'
  const REF = path.join(FIXTURE, 'model.safetensors')
  const config = JSON.parse(readFileSync(path.join(FIXTURE, 'config.json'), 'utf8')) as Record<string, unknown>
  const TOKENS = Array.from({length: 48}, (_, i) => (i * 7919 + 13) % 128)
  type Tensor = CompareResult & {name: string; scheme: string; params: Record<string, unknown>; extra_rows: number}
  type ExactReply = {tensors: Tensor[]} & Record<string, unknown>
  const storedQ4 = path.join(tmp, 'q4.stored.safetensors')
  const brokenQ4 = path.join(tmp, 'q4.broken.safetensors')
  const padded = path.join(tmp, 'padded.safetensors')
  const storedPadded = path.join(tmp, 'padded.stored.safetensors')
  let schemes: Record<string, string>
  let worker: TorchWorker
  const request = {op: 'exact', reference: REF, config, tokens: TOKENS, device: 'cpu', collect_hidden: true}
  const exact = async (extra: Record<string, unknown>) => (await worker.call({...request, ...extra})) as unknown as ExactReply
  const bytes = (reply: ExactReply, key: string) => Buffer.from(reply[key] as Uint8Array)
  const floats = (reply: ExactReply, key: string) => new Float32Array(bytes(reply, key).buffer.slice(0))

  beforeAll(async () => {
    // A real 4-bit MLX conversion, its parts gathered into the stored file the op reads.
    const out = path.join(tmp, 'q4')
    await drain(convert(FIXTURE, 'mlx', out, {}, {dtype: 'F16', quantization: {bits: 4, groupSize: 64, mode: 'affine'}}))
    schemes = JSON.parse(py([MLX_STORED, out, storedQ4])) as Record<string, string>
    editStored(storedQ4, brokenQ4, {'token_embeddings.weight::weight': (w) => code(w, 8, 3, 0, 4, code(w, 8, 3, 0, 4) ^ 1)}) // row 3, col 0
    // The fixture with 8 more embedding rows (CoreNet pads its vocab), quantized by the reference
    // with another mix of schemes: MLX 8-bit/32/BF16, Q8_0 for proj_2 where it fits, bf16 otherwise.
    const st = await openSafetensors(REF)
    const records = []
    try {
      for (const t of st.tensors) {
        const name = t.name.replace(/^transformer\./, '')
        let values = toFloat32(await t.read(), t.dtype).slice()
        if (name === 'token_embeddings.weight') {
          const more = new Float32Array(values.length + 8 * 64)
          more.set(values)
          more.set(randomMatrix(21, 8, 64), values.length)
          values = more
        }
        records.push(f32Record(name, name === 'token_embeddings.weight' ? [136, 64] : t.shape, values))
      }
    } finally {
      await st.close()
    }
    await drain(writeSafetensors(padded, records))
    const plan = Object.fromEntries(records.map((r) => {
      const cols = r.shape.at(-1)!
      if (r.shape.length === 2 && r.name.endsWith('proj_2.weight') && cols % 32 === 0) return [r.name, {scheme: 'gguf_q8_0', params: {}}]
      if (r.shape.length === 2 && cols % 32 === 0) return [r.name, {scheme: 'mlx_affine', params: {bits: 8, group_size: 32, dtype: 'BF16'}}]
      return [r.name, {scheme: 'bf16', params: {}}]
    }))
    writeFileSync(path.join(tmp, 'padded.plan.json'), JSON.stringify(plan))
    py([QUANT_REF, 'quantize', '--in', padded, '--plan', path.join(tmp, 'padded.plan.json'), '--out', storedPadded])
    worker = TorchWorker.start(PYTHON)
  })
  afterAll(async () => {
    await worker?.close()
  })

  it('4-bit MLX: every tensor 100% identical; MODEL logits and hidden states equal EXPECTED bit for bit', async () => {
    // qkv_proj and proj_1 of 4 layers, layer 3's out_proj and proj_2, token_embeddings; the others' in-dims are not multiples of 64
    expect(Object.values(schemes).filter((s) => s === 'mlx_affine').length).toBe(11)
    expect(schemes['layers.0.attn_norm.weight']).toBe('f16')
    const good = await exact({stored: storedQ4})
    expect(good.tensors.length).toBe(34)
    for (const t of good.tensors) {
      expect({name: t.name, identical: t.identical_elements, blocks: t.identical_blocks, difference: t.first_difference, extra: t.extra_rows})
        .toEqual({name: t.name, identical: t.elements, blocks: t.blocks, difference: null, extra: 0})
    }
    expect(good.tensors.find((t) => t.name === 'token_embeddings.weight')).toMatchObject({scheme: 'mlx_affine', params: {bits: 4, group_size: 64, dtype: 'F16'}, elements: 128 * 64, blocks: 128})
    expect([good.vocab_model, good.vocab_reference]).toEqual([128, 128])
    expect(bytes(good, 'logits_model').byteLength).toBe(TOKENS.length * 128 * 4)
    expect(bytes(good, 'logits_model').equals(bytes(good, 'logits_expected'))).toBe(true)
    expect(bytes(good, 'logits_model').equals(bytes(good, 'logits_reference'))).toBe(false) // 4 bits do move the logits
    const hidden = (key: string) => (good[key] as Uint8Array[]).map((h) => Buffer.from(h))
    expect(hidden('hidden_model').length).toBe(4)
    hidden('hidden_model').forEach((h, i) => expect(h.equals(hidden('hidden_expected')[i]!)).toBe(true))
  })

  it('one code moved by one: the tensor, row, group and column are named, and only that token\'s logit moves', async () => {
    const bad = await exact({stored: brokenQ4, collect_hidden: false})
    const emb = bad.tensors.find((t) => t.name === 'token_embeddings.weight')!
    expect(emb).toMatchObject({mismatched_blocks: 1, identical_elements: 128 * 64 - 1, first_mismatch: {row: 3, block: 0, col: 0, part: 'weight'}})
    expect(bad.tensors.filter((t) => t.mismatched_blocks > 0).map((t) => t.name)).toEqual(['token_embeddings.weight'])
    // Row 3 of the tied embedding is the output row of token 3 (not an input here): its logit moves at every position.
    expect(TOKENS.includes(3)).toBe(false)
    const model = floats(bad, 'logits_model')
    const expected = floats(bad, 'logits_expected')
    const moved = [...model.keys()].filter((i) => model[i] !== expected[i]).map((i) => i % 128)
    expect(new Set(moved)).toEqual(new Set([3]))
    expect(moved.length).toBe(TOKENS.length)
  })

  it('a padded vocabulary: the common rows are compared, the extra rows reported and taken from MODEL, both ways round', async () => {
    const wider = await exact({stored: storedPadded, collect_hidden: false})
    expect(wider.tensors.find((t) => t.name === 'token_embeddings.weight')).toMatchObject({scheme: 'mlx_affine', extra_rows: 8, elements: 128 * 64, blocks: 128 * 2, identical_blocks: 256})
    const planned = JSON.parse(readFileSync(path.join(tmp, 'padded.plan.json'), 'utf8')) as Record<string, {scheme: string}>
    const q8 = Object.keys(planned).filter((name) => planned[name]!.scheme === 'gguf_q8_0')
    expect(q8.length).toBeGreaterThan(0)
    expect(wider.tensors.filter((t) => t.scheme === 'gguf_q8_0').map((t) => t.name)).toEqual(q8.sort())
    expect(wider.tensors.every((t) => t.identical_elements === t.elements && (t.name === 'token_embeddings.weight' || t.extra_rows === 0))).toBe(true)
    expect([wider.vocab_model, wider.vocab_reference]).toEqual([136, 128])
    expect(bytes(wider, 'logits_model').equals(bytes(wider, 'logits_expected'))).toBe(true)
    expect(bytes(wider, 'logits_reference').byteLength).toBe(TOKENS.length * 128 * 4)
    // REF with 136 rows against the 128-row 4-bit model: 128 common rows, -8 extra.
    const narrower = await exact({stored: storedQ4, reference: padded, collect_hidden: false})
    expect(narrower.tensors.find((t) => t.name === 'token_embeddings.weight')).toMatchObject({extra_rows: -8, identical_elements: 128 * 64})
    expect([narrower.vocab_model, narrower.vocab_reference]).toEqual([128, 136])
    expect(bytes(narrower, 'logits_model').equals(bytes(narrower, 'logits_expected'))).toBe(true)
  })

  it('bad input comes back as one line with ok: false (no plan; a plan whose shape does not fit the stored part)', async () => {
    const noPlan = await worker.request({...request, stored: REF})
    expect(noPlan).toMatchObject({ok: false, error: 'SchemeError'})
    expect(noPlan.message).toMatch(/no __metadata__\['openelm.plan'\]/)
    const misplanned = path.join(tmp, 'q4.misplanned.safetensors')
    const bytesIn = Buffer.from(readFileSync(storedQ4))
    const n = Number(bytesIn.readBigUInt64LE(0))
    const header = JSON.parse(bytesIn.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>
    const plan = JSON.parse((header.__metadata__ as Record<string, string>)['openelm.plan']!) as Record<string, {shape: number[]}>
    plan['norm.weight']!.shape = [65] // does not match the stored part [1, 64]
    ;(header.__metadata__ as Record<string, string>)['openelm.plan'] = JSON.stringify(plan)
    let text = JSON.stringify(header)
    text += ' '.repeat((8 - (text.length % 8)) % 8)
    const head = Buffer.alloc(8)
    head.writeBigUInt64LE(BigInt(text.length))
    writeFileSync(misplanned, Buffer.concat([head, Buffer.from(text), bytesIn.subarray(8 + n)]))
    const wrong = await worker.request({...request, stored: misplanned})
    expect(wrong).toMatchObject({ok: false, error: 'SchemeError'})
    expect(wrong.message).toMatch(/norm\.weight::data is F16 \[1, 64\], expected F16 \[1, 65\]/)
    expect(String(wrong.message).includes('\n')).toBe(false)
    // The worker is still serving.
    expect((await exact({stored: storedQ4, collect_hidden: false})).tensors.length).toBe(34)
  })
})
