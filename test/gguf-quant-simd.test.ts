/**
 * The WebAssembly SIMD lanes of the ggml quantizers (src/simd/ggml.ts: the K-quant searches, lanes
 * across sub-blocks; the legacy blocks, lanes across blocks) against the scalar encoders they stand
 * in for (src/quant/gguf-k.ts, gguf-legacy.ts), byte for byte: edge sub-blocks (±NaN,
 * ±Inf, ±0, subnormals, 1e±30, f32 max, 65504, exact ties, all-equal and zero sub-blocks) mixed
 * into live super-blocks so that one lane's edge sits beside normal lanes, random bit patterns, and
 * weight-like rows over several batches (more than one wasm call), and many random super-blocks. NaNs
 * with a payload are made payload-free before the K encoders use them (canonicalNaNs; tested below):
 * ggml's nearest_int reads mantissa bits, so a payload can reach the codes, and which operand's
 * payload an op keeps follows the order the JIT emits: the scalar code itself answered differently
 * cold and warm (seen: one code byte 0 on the first call, 240 after). Random bit patterns keep
 * their NaNs but with the payload cleared.
 * test/gguf-block-quants.test.ts ties the same encoders to libggml.
 */
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {dtypeOptions} from '../src/cli/options.js'
import {convert, writeCheckpoint} from '../src/convert.js'
import {closeSharedPool, setThreads, sharedPool} from '../src/pool/index.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {seededRandom} from '../src/generate/sampler.js'
import {
  K_SEARCHES, quantizeQ2_K, quantizeQ2_KScalar, quantizeQ3_K, quantizeQ3_KScalar, quantizeQ4_K, quantizeQ4_KScalar, quantizeQ5_K, quantizeQ5_KScalar, quantizeQ6_K, quantizeQ6_KScalar,
} from '../src/quant/gguf-k.js'
import {Q4_0, Q4_1, Q5_0, Q5_1, quantizeLegacyScalar} from '../src/quant/gguf-legacy.js'
import {ggmlKernels, resetGgmlKernels} from '../src/simd/ggml.js'
import {superBlockConfig} from './helpers/shapes.js'

const TYPES: Array<[string, (v: Float32Array) => Uint8Array, (v: Float32Array) => Uint8Array]> = [
  ['Q2_K', quantizeQ2_K, quantizeQ2_KScalar],
  ['Q3_K', quantizeQ3_K, quantizeQ3_KScalar],
  ['Q4_K', quantizeQ4_K, quantizeQ4_KScalar],
  ['Q5_K', quantizeQ5_K, quantizeQ5_KScalar],
  ['Q6_K', quantizeQ6_K, quantizeQ6_KScalar],
  ...[Q4_0, Q4_1, Q5_0, Q5_1].map((t): [string, (v: Float32Array) => Uint8Array, (v: Float32Array) => Uint8Array] => [t.type, t.quantize, (v) => quantizeLegacyScalar(t.type as 'Q4_0', v)]),
]

const bitsOf = (u: number) => new Float32Array(Uint32Array.of(u).buffer)[0]!
const EDGES = [
  bitsOf(0x7fc00000), bitsOf(0xffc00000), // ±NaN without payload
  Infinity, -Infinity, 0, -0,
  bitsOf(1), bitsOf(0x80000001), bitsOf(0x007fffff), bitsOf(0x00800000), // subnormals, smallest normal
  1e30, -1e30, 1e-30, -1e-30, bitsOf(0x7f7fffff), bitsOf(0xff7fffff),
  65504, -65504, 0.5, -0.5, 1.5, 2.5, 1e-15, -1e-15, 4194303, 4194304, 12582912,
]

/**
 * Blocks of `size` (16: K-quant sub-blocks; 32: legacy blocks and Q4_K/Q5_K sub-blocks) that each
 * break one rule, each in every lane position of a group of four, then random mixtures.
 */
function edgeValues(seed: number, size: number): Float32Array {
  const r = seededRandom(seed)
  const sub = (f: (j: number) => number) => Array.from({length: size}, (_, j) => f(j))
  const subs: number[][] = [
    sub(() => 0), sub((j) => (j % 2 ? -0 : 0)), sub(() => 0.75), sub(() => -2.5), sub(() => 1e-41),
    sub((j) => j - 8), sub((j) => (j - 8) * 0.5), sub((j) => j / 15), sub((j) => j / 3), sub((j) => 2 ** (j - 8)),
    sub((j) => (j === 3 ? -3 : j === 4 ? 3 : 0.1)), sub((j) => (j === 3 ? 3 : j === 4 ? -3 : 0.1)), sub((j) => (j % 2 ? 1 : -1) * 65504),
    sub((j) => (j === 7 ? -0 : j === 9 ? 0 : 1)), sub((j) => (j === 7 ? 0 : j === 9 ? -0 : -1)), // which zero is the min
    sub((j) => (j - 8) * 0.5), sub((j) => j / 31 - 7), sub((j) => (j % 2 ? 1e-41 : -1e-41) * j), // legacy ties, grid points, subnormal scale
    // codes at exact ties of .5 (Q6_K's first iscale 1; Q4_K's first iscale 15 / 15), a range of one ulp, of the
    // smallest subnormal (iscale overflows), and one that overflows (iscale 0): the searches' guarded fast codes
    sub((j) => (j === 0 ? -32 : j - 7.5)), sub((j) => (j === 0 ? 15 : j === 1 ? 0 : (j % 15) + 0.5)),
    sub((j) => 1 + (j % 2) * 2 ** -23), sub((j) => (j % 2) * 1e-45), sub((j) => (j % 2 ? 3e38 : -3e38)),
    ...EDGES.map((e) => sub((j) => (j === 5 ? e : 0.01 * (j - 7)))),
    ...EDGES.map((e) => sub(() => e)),
  ]
  const out: number[] = []
  // Each edge sub-block once in every lane position of a group of four.
  for (const s of subs) for (let lane = 0; lane < 4; lane++) for (let k = 0; k < 4; k++) out.push(...(k === lane ? s : sub(() => (r() - 0.5) * 0.1)))
  // Random mixtures: each value an edge value 20% of the time.
  for (let i = 0; i < 256 * 64; i++) out.push(r() < 0.2 ? EDGES[Math.floor(r() * EDGES.length)]! : (r() - 0.5) * 10 ** Math.floor(r() * 8 - 4))
  while (out.length % 256) out.push(0)
  return Float32Array.from(out)
}

function weightLike(seed: number, n: number): Float32Array {
  const r = seededRandom(seed)
  const scale = [0.02, 0.5, 3, 1e-3][seed % 4]!
  return Float32Array.from({length: n}, () => {
    const g = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r())
    return (r() < 0.01 ? 20 : 1) * g * scale
  })
}

function randomBits(seed: number, n: number): Float32Array {
  const r = seededRandom(seed)
  const nanless = (u: number) => ((u & 0x7f800000) === 0x7f800000 && u & 0x7fffff ? (u & 0xff800000) | 0x400000 : u) >>> 0
  return new Float32Array(Uint32Array.from({length: n}, () => nanless((r() * 2 ** 32) >>> 0)).buffer)
}

function firstDifference(a: Uint8Array, b: Uint8Array): string | undefined {
  if (a.length !== b.length) return `${a.length} bytes vs ${b.length}`
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `byte ${i}: ${a[i]} vs ${b[i]}`
  return undefined
}

describe.skipIf(!ggmlKernels())('K-quant searches in wasm lanes == the scalar encoders', () => {
  const inputs: Array<[string, Float32Array]> = [
    ...[1, 2].flatMap((seed) => [16, 32].map((size): [string, Float32Array] => [`edge blocks of ${size}, seed ${seed}`, edgeValues(seed, size)])),
    ...[3, 4].map((seed): [string, Float32Array] => [`random f32 bit patterns (NaNs without payload), seed ${seed}`, randomBits(seed, 256 * 80)]),
    // 300 super-blocks: past one batch of 256 and, for Q2_K, several wasm calls of 1024 sub-blocks
    ...[5, 6, 7, 8].map((seed): [string, Float32Array] => [`weight-like rows, seed ${seed}`, weightLike(seed, 256 * 300)]),
  ]
  for (const [type, fast, scalar] of TYPES) {
    it(`${type}: every input, byte for byte`, () => {
      for (const [name, values] of inputs) expect(firstDifference(fast(values), scalar(values)), `${type} on ${name}`).toBeUndefined()
    })
  }
})

/** Many super-blocks: each sub-block a random scale and offset (a few of them edge values), so the searches take every kind of trial. */
function manyBlocks(seed: number, superBlocks: number): Float32Array {
  const r = seededRandom(seed)
  const out = new Float32Array(superBlocks * 256)
  for (let s = 0; s < out.length; s += 16) {
    const scale = 10 ** (r() * 12 - 8)
    const offset = r() < 0.3 ? (r() - 0.5) * scale * 4 : 0
    for (let j = s; j < s + 16; j++) out[j] = r() < 0.002 ? EDGES[Math.floor(r() * EDGES.length)]! : offset + (r() - 0.5) * scale
  }
  return out
}

describe.skipIf(!ggmlKernels())('K-quant searches in wasm lanes == the scalar encoders, randomized over many blocks', () => {
  for (const [type, fast, scalar] of TYPES.slice(0, 5)) {
    it(`${type}: 3000 super-blocks of random scales and offsets with edge values, byte for byte`, () => {
      const values = manyBlocks(type.charCodeAt(1), 3000)
      expect(firstDifference(fast(values), scalar(values))).toBeUndefined()
    })
  }
})

describe('K-quants: NaNs with a payload give the bytes of the payload-free NaN (sign kept)', () => {
  // Raw random bit patterns: ~0.4% NaNs, nearly all with a payload; and the same with payloads cleared.
  const r = seededRandom(11)
  const raw = Uint32Array.from({length: 256 * 64}, (_, i) => (i % 97 === 5 ? 0x7f800001 + Math.floor(r() * 0x7fffff) : i % 89 === 7 ? 0xffc00001 + Math.floor(r() * 0x3ffffe) : (r() * 2 ** 32) >>> 0) >>> 0)
  const payload = new Float32Array(raw.buffer)
  const cleared = new Float32Array(raw.map((u) => ((u & 0x7fffffff) > 0x7f800000 ? (u & 0x80000000) | 0x7fc00000 : u) >>> 0).buffer)
  for (const [type, fast, scalar] of TYPES.slice(0, 5)) {
    it(`${type}: scalar and lanes, cold and warm`, () => {
      const expected = scalar(cleared)
      for (let k = 0; k < 3; k++) {
        expect(firstDifference(scalar(payload), expected), `${type} scalar, call ${k}`).toBeUndefined()
        if (ggmlKernels()) expect(firstDifference(fast(payload), expected), `${type} lanes, call ${k}`).toBeUndefined()
      }
      expect([...payload.subarray(0, 8)].map(Number.isNaN)).toEqual([...cleared.subarray(0, 8)].map(Number.isNaN)) // the input is left as it was
      expect(new Uint32Array(payload.buffer)[5]).toBe(raw[5])
    })
  }
})

describe.skipIf(!ggmlKernels())('K-quant searches in wasm lanes: an odd number of groups of four sub-blocks', () => {
  // qkx2 runs two groups side by side; an odd count repeats the last group (the same results twice)
  it('each search on 1, 3, 5 groups == the same sub-blocks searched with one group more', () => {
    const simd = ggmlKernels()!
    for (const [type, spec] of Object.entries(K_SEARCHES)) {
      const values = edgeValues(12, spec.n)
      for (const groups of [1, 3, 5]) {
        const run = (count: number) => {
          const scales = new Float32Array(count)
          const mins = new Float32Array(count)
          const codes = new Uint8Array(count * spec.n)
          simd.search(spec, values, 64 * spec.n, count, scales, mins)
          simd.codes(spec, new Float32Array(2 * count), count, codes) // steps 0: the search's own codes
          return {scales, mins, codes}
        }
        const odd = run(4 * groups)
        const even = run(4 * groups + 4)
        expect(odd.scales, `${type}, ${groups} groups`).toEqual(even.scales.subarray(0, 4 * groups))
        expect(odd.mins, `${type}, ${groups} groups`).toEqual(even.mins.subarray(0, 4 * groups))
        expect(firstDifference(odd.codes, even.codes.subarray(0, odd.codes.length)), `${type}, ${groups} groups`).toBeUndefined()
      }
    }
  })
})

describe.skipIf(!ggmlKernels())('legacy blocks in wasm lanes: block counts that do not fill the last group of four', () => {
  it('Q4_0 … Q5_1 on 1 … 7 blocks and 2053 (past one call of 2048), byte for byte', () => {
    const values = edgeValues(9, 32)
    for (const t of [Q4_0, Q4_1, Q5_0, Q5_1]) {
      for (const blocks of [1, 2, 3, 4, 5, 6, 7, 2053]) {
        const v = values.subarray(values.length - 32 * blocks)
        expect(firstDifference(t.quantize(v), quantizeLegacyScalar(t.type as 'Q4_0', v)), `${t.type}, ${blocks} blocks`).toBeUndefined()
      }
    }
  })
})

describe.skipIf(!ggmlKernels())('GGUF files: OPENELM_SIMD=0 and the wasm lanes write the same bytes', () => {
  let work: string
  let source: string
  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-gguf-simd-'))
    source = path.join(work, 'src')
    // rows of whole 256-value super-blocks: every tensor takes its K type, no fallbacks
    await drain(writeCheckpoint(synthCheckpoint(superBlockConfig(2, 64), {seed: 11}), 'hf', source, {dtype: 'F32'}))
  })
  afterAll(async () => {
    setThreads(undefined)
    await closeSharedPool()
    resetGgmlKernels()
    await fs.rm(work, {recursive: true, force: true})
  })

  /** sha256 of the GGUF written with OPENELM_SIMD = simd on `threads` threads (fresh workers: they read the variable when they start). */
  async function written(dtype: string, simd: string, threads: number): Promise<string> {
    const saved = process.env.OPENELM_SIMD
    process.env.OPENELM_SIMD = simd
    resetGgmlKernels()
    expect(ggmlKernels() === undefined, `OPENELM_SIMD=${simd}`).toBe(simd === '0')
    setThreads(threads)
    try {
      const result = await drain(convert(source, 'gguf', path.join(work, `${dtype}-${simd}-${threads}.gguf`), {}, dtypeOptions(dtype)))
      if (threads > 1) expect(sharedPool()!.completed).toBeGreaterThan(0)
      return createHash('sha256').update(await fs.readFile(result.target.path)).digest('hex')
    } finally {
      await closeSharedPool()
      if (saved === undefined) delete process.env.OPENELM_SIMD
      else process.env.OPENELM_SIMD = saved
      resetGgmlKernels()
    }
  }

  for (const dtype of ['q4_k_m', 'q2_k', 'q3_k_m', 'q5_k_m', 'q6_k', 'q4_0', 'q5_1']) {
    it(`${dtype}: scalar (1 thread) == SIMD on 1 and 2 threads (sha256 of the file)`, async () => {
      const scalar = await written(dtype, '0', 1)
      expect(await written(dtype, '1', 1)).toBe(scalar)
      expect(await written(dtype, '1', 2)).toBe(scalar)
    }, 120_000)
  }
})
