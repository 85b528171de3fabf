/**
 * The ONNX int8/q4 and MLX fp kernels (src/simd/quant2.ts) against the scalar loops they stand in
 * for, byte for byte: edge groups (NaN of either sign, ±Inf, ±0, subnormals, ties, f16/e4m3/e8m0
 * boundaries, all-equal and zero groups) and seeded random groups at several magnitudes, over more
 * than one kernel chunk; and lengths the kernels leave to the scalar loop.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert, writeCheckpoint} from '../src/convert.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {closeSharedPool, setThreads} from '../src/pool/index.js'
import {drain} from '../src/progress.js'
import {hashFolder} from './helpers/hash-folder.js'
import {resetSimdKernels} from '../src/simd/kernels.js'
import {bf16BitsToF32, f16BitsToF32} from '../src/tensor/dtype.js'
import {seededRandom} from '../src/generate/sampler.js'
import {quant2Kernels, resetQuant2Kernels} from '../src/simd/quant2.js'
import {quantizeInt8Rows, quantizeInt8RowsScalar} from '../src/quant/onnx-int8.js'
import {quantizeQ4Rows, quantizeQ4RowsScalar} from '../src/quant/onnx-q4.js'
import {e8m0Exponent, e8m0ExponentSlow, fpEncode, fpQuantizeInto, MLX_FP_MODE_NAMES, MLX_FP_MODES, MLX_MXFP4, MLX_MXFP8, MLX_NVFP4, packFp, roundTo} from '../src/quant/mlx-fp.js'

const k = quant2Kernels()
const f = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0]!

/** Groups of `size` values each exercising an edge, then random groups at random magnitudes, `groups` in all. */
function edgeGroups(size: number, groups: number, seed: number): Float32Array {
  const random = seededRandom(seed)
  const fill = (g: (i: number) => number) => Float32Array.from({length: size}, (_, i) => g(i))
  const list: Float32Array[] = [
    fill(() => 0),
    fill((i) => (i % 2 ? -0 : 0)),
    fill(() => -0),
    fill((i) => (i === 3 ? NaN : i - 7)),
    fill(() => NaN),
    fill((i) => (i % 2 ? f(0xffc00000) : f(0x7fc00001))), // NaN of both signs, with a payload
    fill((i) => (i === 2 ? f(0xffc00000) : 0.5 * i)),
    fill((i) => (i === 0 ? Infinity : i)),
    fill((i) => (i === 1 ? -Infinity : i)),
    fill((i) => (i === 0 ? Infinity : i === 1 ? -Infinity : 0)),
    fill(() => Infinity),
    fill(() => -Infinity),
    fill((i) => (i % 3 ? f(i + 1) : -f(i))), // f32 subnormals
    fill((i) => (i === 5 ? -f(3) : i % 2 ? f(1) : -0)), // a q4 scale m / 8 that underflows to 0
    fill((i) => f(0x00800000 + i) * (i % 2 ? 1 : -1)), // smallest normals
    fill((i) => (i === 0 ? 3e38 : i === 1 ? -3.4e38 : i * 1e37)), // near f32 max
    fill((i) => (i % 2 ? 127 : -127) * (i / size)),
    fill((i) => (i === 0 ? 127 : i - 0.5)), // int8 ties: scale 1, x = k + ½
    fill((i) => (i === 0 ? -127 : 0.5 - i)),
    fill((i) => (i === 0 ? -8 : (i % 16) - 7.5)), // q4 ties: scale 1, x + 8 = k + ½
    fill((i) => (i === 0 ? 8 : (i % 16) - 8.5)),
    fill((i) => (i === 0 ? 6 : ((i % 13) - 6) * 0.25)), // fp4 thresholds: scale 1
    fill((i) => (i === 0 ? -6 : ((i % 13) - 6) * 0.25 + (i % 2 ? 2 ** -20 : -(2 ** -20)))),
    fill((i) => (i === 0 ? 448 : ((i % 29) - 14) * 2 ** (i % 20 - 12))), // e4m3 boundaries: scale 1
    fill((i) => (i === 0 ? 448 : (i % 2 ? 1 : -1) * (1 + (2 * (i % 8) + 1) / 16) * 2 ** ((i % 14) - 6))), // e4m3 ties
    fill((i) => (i === 0 ? 448 : (i % 2 ? 1 : -1) * ((i % 8) + 0.5) * 2 ** -9)), // e4m3 subnormal ties
    fill((i) => (i === 0 ? 6 * 2 ** 0.49 : i * 0.3)), // e8m0: log2 just under ½ away
    fill((i) => (i === 0 ? 6 * 2 ** 0.51 : -i * 0.3)),
    fill((i) => (i === 0 ? 65504 : i === 1 ? -65504 : i)), // f16 max
    fill((i) => (i === 0 ? 1e-6 : 1e-9 * i)), // scales under f16's smallest subnormal
    fill((i) => (i === 0 ? 1e-30 : 1e-35 * i)), // under e4m3's smallest subnormal
    fill(() => 42.5), // constant
    fill(() => -3),
  ]
  const out = new Float32Array(size * groups)
  for (let g = 0; g < groups; g++) {
    const group = g < list.length ? list[g]! : fill(() => (random() - 0.5) * 10 ** (random() * 12 - 6))
    out.set(group, g * size)
  }
  return out
}

const same = (a: Uint8Array, b: Uint8Array): string => {
  if (a.length !== b.length) return `lengths ${a.length} vs ${b.length}`
  const i = a.findIndex((x, j) => x !== b[j])
  return i === -1 ? 'identical' : `byte ${i}: ${a[i]} vs ${b[i]}`
}
const bytes = (v: ArrayBufferView) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength)

describe.skipIf(!k)('ONNX quantizer kernels against the scalar loops', () => {
  it('int8: edge rows and random rows of several widths, codes and scales bit for bit', () => {
    for (const cols of [16, 32, 48, 2048, 65536]) {
      const rows = Math.max(40, Math.ceil((65536 * 2 + 77) / cols) + 1) // more than one kernel chunk
      const values = edgeGroups(cols, rows, cols)
      const got = quantizeInt8Rows(values, rows, cols)
      const want = quantizeInt8RowsScalar(values, rows, cols)
      expect(same(bytes(got.codes), bytes(want.codes)), `codes, ${cols} columns`).toBe('identical')
      expect(same(bytes(got.scales), bytes(want.scales)), `scales, ${cols} columns`).toBe('identical')
    }
  })

  it('q4: edge blocks and random blocks, F32 and F16 scales, bit for bit', () => {
    for (const dtype of ['F32', 'F16'] as const) {
      for (const cols of [32, 96, 4096]) {
        const rows = Math.ceil((65536 * 2 + 64) / cols) + 1
        const values = edgeGroups(32, (rows * cols) / 32, cols + 1)
        const got = quantizeQ4Rows(values, rows, cols, dtype)
        const want = quantizeQ4RowsScalar(values, rows, cols, dtype)
        expect(same(got.blocks, want.blocks), `blocks, ${dtype} ${cols} columns`).toBe('identical')
        expect(same(bytes(got.scales), bytes(want.scales)), `scales, ${dtype} ${cols} columns`).toBe('identical')
      }
    }
  })

  it('shapes the kernels leave to the scalar loop give the scalar bytes', () => {
    const values = edgeGroups(8, 50, 5)
    expect(same(bytes(quantizeInt8Rows(values, 40, 10).codes), bytes(quantizeInt8RowsScalar(values, 40, 10).codes))).toBe('identical')
    expect(same(quantizeQ4Rows(values, 10, 40, 'F32').blocks, quantizeQ4RowsScalar(values, 10, 40, 'F32').blocks)).toBe('identical')
  })
})

/** fpEncode of `source` (weights the kernel rounds to `dtype`) equals the scalar loop over the rounded weights, scales and weight bytes. */
function expectScalarBytes(mode: (typeof MLX_FP_MODE_NAMES)[number], bits: number, groupSize: number, source: Float32Array, dtype: 'F32' | 'F16' | 'BF16', what: string): void {
  const values = Float32Array.from(source, (v) => roundTo(v, dtype))
  const got = fpEncode(mode, source, source.length, dtype)
  const codes = new Uint8Array(values.length)
  const scales = new Uint8Array(values.length / groupSize)
  fpQuantizeInto(mode, values, values.length, dtype, codes, scales)
  expect(same(got.scales!, scales), `scales, ${what}`).toBe('identical')
  expect(same(got.weight!, packFp(codes, bits)), `weight, ${what}`).toBe('identical')
}

describe.skipIf(!k)('MLX fp kernels against the scalar loop', () => {
  it('mxfp4, nvfp4, mxfp8 from F32, F16 and BF16 weights: edge groups and random groups, weight and scales bit for bit', () => {
    for (const mode of MLX_FP_MODE_NAMES) {
      const {bits, groupSize} = MLX_FP_MODES[mode]
      for (const dtype of ['F32', 'F16', 'BF16'] as const) {
        const source = edgeGroups(groupSize, (65536 * 2) / groupSize + 40, groupSize + bits)
        // The scalar reference takes the weights rounded to the dtype; fpEncode rounds them itself.
        const values = Float32Array.from(source, (v) => roundTo(v, dtype))
        const got = fpEncode(mode, source, source.length, dtype)
        const codes = new Uint8Array(values.length)
        const scales = new Uint8Array(values.length / groupSize)
        fpQuantizeInto(mode, values, values.length, dtype, codes, scales)
        expect(same(got.scales!, scales), `scales, ${mode} ${dtype}`).toBe('identical')
        expect(same(got.weight!, packFp(codes, bits)), `weight, ${mode} ${dtype}`).toBe('identical')
      }
    }
  })

  it('F16 and BF16 weights (the table-driven kernel, fast and full groups): every pattern of the dtype and every midpoint between neighbours, in groups of several largest |w|, and random groups of several seeds', () => {
    // Each 16-bit pattern and the f32 halfway to the next (a rounding tie, or a NaN's payload), placed
    // after an anchor that sets the group's largest |w|: the value itself (anchor 0), 1, 6, 448,
    // 65504 (f16's largest), 3e38, a subnormal, an nvfp4 scale that underflows e4m3, and NaNs (one
    // whose payload would carry out of a bit rule's rounding).
    const anchors = [0, 1, 6, 448, 65504, 3e38, f(0x00000300), 1e-5, NaN, f(0x7fffffff), f(0xffffffff)]
    for (const dtype of ['F16', 'BF16'] as const) {
      const toF32 = dtype === 'F16' ? f16BitsToF32 : bf16BitsToF32
      const shift = dtype === 'F16' ? 13 : 16
      const patterns: number[] = []
      const bits = new Float32Array(1)
      const u = new Uint32Array(bits.buffer)
      for (let h = 0; h < 0x10000; h++) {
        const v = toF32(h)
        patterns.push(v)
        bits[0] = v
        if (!Number.isNaN(v)) {
          u[0] = u[0]! + (1 << (shift - 1)) // halfway to the next pattern up in magnitude
          patterns.push(bits[0]!)
        }
      }
      for (const mode of MLX_FP_MODE_NAMES) {
        const {bits: width, groupSize} = MLX_FP_MODES[mode]
        const per = groupSize - 1
        const groups = Math.ceil(patterns.length / per)
        for (const anchor of anchors) {
          const source = new Float32Array(groups * groupSize)
          for (let g = 0; g < groups; g++) {
            for (let j = 0; j < per; j++) source[g * groupSize + 1 + j] = patterns[(g * per + j) % patterns.length]!
            source[g * groupSize] = anchor === 0 ? source[g * groupSize + 1]! : anchor
          }
          expectScalarBytes(mode, width, groupSize, source, dtype, `${mode} ${dtype} anchor ${anchor}`)
        }
        for (const seed of [1, 2, 3, 4]) {
          const random = seededRandom(seed)
          // typical weights (|w| around 0.02–0.2), then a few magnitudes per group
          const typical = Float32Array.from({length: 65536 + 4 * groupSize}, () => (random() - 0.5) * 0.2 * (random() < 0.01 ? 20 : 1))
          expectScalarBytes(mode, width, groupSize, typical, dtype, `${mode} ${dtype} seed ${seed}`)
          expectScalarBytes(mode, width, groupSize, edgeGroups(groupSize, 2048, seed * 7), dtype, `${mode} ${dtype} edge seed ${seed}`)
        }
      }
    }
  })

  it('fp4 values beyond the kernel\'s fast range (|q| > 64, ±Inf quotients) come from the scalar rule', () => {
    // nvfp4 groups whose e4m3 scale saturates at 448 leave quotients far above 6; far past 2^24
    // the rounded distances to every entry tie and the scalar rule takes the first, code 0, not ±6.
    const values = Float32Array.from({length: 4096}, (_, i) => (i % 16 === 0 ? 1e6 : i % 16 === 1 ? 1e12 * (i % 32 === 1 ? -1 : 1) : (i % 7) * 1e4 - 3e4))
    const got = fpEncode('nvfp4', values, values.length, 'F32')
    const codes = new Uint8Array(values.length)
    const scales = new Uint8Array(values.length / 16)
    fpQuantizeInto('nvfp4', values, values.length, 'F32', codes, scales)
    expect(same(got.weight!, packFp(codes, 4))).toBe('identical')
    expect([codes[1], codes[17]]).toEqual([0, 0])
  })

  it('the schemes\' encode (the kernel rounding the weights, or roundInto without it) equals roundTo element by element and the scalar loop', () => {
    const schemes = {mxfp4: MLX_MXFP4, nvfp4: MLX_NVFP4, mxfp8: MLX_MXFP8}
    for (const mode of MLX_FP_MODE_NAMES) {
      const {bits, groupSize} = MLX_FP_MODES[mode]
      for (const dtype of ['F32', 'F16', 'BF16'] as const) {
        const source = edgeGroups(groupSize, 4096 / groupSize + 48, 3) // whole rows of 256
        const got = schemes[mode].encode(source, source.length / 256, 256, {dtype})
        const values = Float32Array.from(source, (v) => roundTo(v, dtype))
        const codes = new Uint8Array(values.length)
        const scales = new Uint8Array(values.length / groupSize)
        fpQuantizeInto(mode, values, values.length, dtype, codes, scales)
        expect(same(got.scales!, scales), `scales, ${mode} ${dtype}`).toBe('identical')
        expect(same(got.weight!, packFp(codes, bits)), `weight, ${mode} ${dtype}`).toBe('identical')
      }
    }
  })
})

describe.skipIf(!k)('whole conversions with the kernels and with OPENELM_SIMD=0 write the same files (sha256)', () => {
  let work: string
  let source: string
  const before = process.env.OPENELM_SIMD
  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-quant2-'))
    // tiny with a 20000-token vocabulary: the embedding (20000 × 64) spans several kernel chunks.
    source = path.join(work, 'source')
    await drain(writeCheckpoint(synthCheckpoint(presetConfig('tiny', {vocab_size: 20_000}), {seed: 5, dtype: 'F32'}), 'hf', source, {}))
  }, 60_000)
  afterAll(async () => {
    setThreads(undefined)
    if (before === undefined) delete process.env.OPENELM_SIMD
    else process.env.OPENELM_SIMD = before
    resetSimdKernels()
    resetQuant2Kernels()
    await closeSharedPool()
    await fs.rm(work, {recursive: true, force: true})
  })
  for (const [to, label, quantization] of [
    ['onnx', 'onnx q8 (model_quantized.onnx)', {bits: 8, groupSize: 32, mode: 'affine'}],
    ['onnx', 'onnx q4 (model_q4.onnx)', {bits: 4, groupSize: 32, mode: 'affine'}],
    ['mlx', 'mlx mxfp4', {bits: 4, groupSize: 32, mode: 'mxfp4'}],
    ['mlx', 'mlx nvfp4', {bits: 4, groupSize: 16, mode: 'nvfp4'}],
    ['mlx', 'mlx mxfp8', {bits: 8, groupSize: 32, mode: 'mxfp8'}],
  ] as const) {
    it(label, async () => {
      const folders: Array<Record<string, string>> = []
      // One thread: the tasks run in this thread, where OPENELM_SIMD is switched.
      setThreads(1)
      for (const simd of ['0', '1']) {
        process.env.OPENELM_SIMD = simd
        resetSimdKernels()
        resetQuant2Kernels()
        expect(Boolean(quant2Kernels())).toBe(simd === '1')
        const out = path.join(work, `${label.replace(/\W/g, '-')}-${simd}`)
        await drain(convert(source, to, out, {}, {quantization}))
        folders.push(await hashFolder(out))
      }
      expect(Object.keys(folders[0]!).some((f) => f.endsWith('.onnx') || f.endsWith('.safetensors'))).toBe(true)
      expect(folders[1]).toEqual(folders[0])
    }, 120_000)
  }
})

describe('the mx modes\' scale exponent by table', () => {
  it('equals rint(D(log2 s)) for every positive f16 and bf16 value (as F16, BF16 scales) and a sweep of f32 patterns (as F32, F16, BF16)', () => {
    const bad: string[] = []
    for (let h = 1; h < 0x7c00; h++) if (e8m0Exponent(f16BitsToF32(h), 'F16') !== e8m0ExponentSlow(f16BitsToF32(h), 'F16')) bad.push(`f16 0x${h.toString(16)}`)
    for (let h = 1; h < 0x7f80; h++) if (e8m0Exponent(bf16BitsToF32(h), 'BF16') !== e8m0ExponentSlow(bf16BitsToF32(h), 'BF16')) bad.push(`bf16 0x${h.toString(16)}`)
    const bits = new Uint32Array(1)
    const f = new Float32Array(bits.buffer)
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      for (let b = 1; b < 0x7f800000; b += 4099) {
        bits[0] = b
        if (e8m0Exponent(f[0]!, dtype) !== e8m0ExponentSlow(f[0]!, dtype)) bad.push(`${dtype} 0x${b.toString(16)}`)
      }
      // around each binade's 1.4142 (log2 near k + ½, where the answer turns)
      for (let k = -140; k < 128; k++) {
        bits[0] = 0
        f[0] = Math.SQRT2 * 2 ** k
        const b0 = bits[0]!
        for (let d = -300; d <= 300; d++) {
          bits[0] = b0 + d
          if (e8m0Exponent(f[0]!, dtype) !== e8m0ExponentSlow(f[0]!, dtype)) bad.push(`${dtype} 0x${bits[0]!.toString(16)}`)
        }
      }
    }
    expect(bad.slice(0, 5)).toEqual([])
  })
})
