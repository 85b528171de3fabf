/**
 * `npx tsx bench/simd-kernels.ts [--mb N] [--only TEXT]`: MB/s of f32 input through each kernel of
 * src/simd/kernels.ts and src/simd/ggml.ts against the scalar code it replaces (issue 15 item 2), in this
 * thread, best of 7 after warm-up, with the outputs compared byte for byte; MB per CPU-second beside
 * wall MB/s (on a shared machine the CPU figure is the steadier one). Prints a Markdown table.
 */
import os from 'node:os'
import {seededRandom} from '../src/generate/sampler.js'
import {quantizeInto, quantizeIntoScalar} from '../src/quant/mlx-affine.js'
import {quantizeQ8_0, quantizeQ8_0Scalar} from '../src/quant/q8_0.js'
import * as K from '../src/quant/gguf-k.js'
import {Q4_0, Q4_1, Q5_0, Q5_1, quantizeLegacyScalar} from '../src/quant/gguf-legacy.js'
import {resetSimdKernels} from '../src/simd/kernels.js'
import {resetQuant2Kernels} from '../src/simd/quant2.js'
import {fpEncode, MLX_FP_MODES, type MlxFpMode, roundTo} from '../src/quant/mlx-fp.js'
import {quantizeInt8Rows, quantizeInt8RowsScalar} from '../src/quant/onnx-int8.js'
import {quantizeQ4Rows, quantizeQ4RowsScalar} from '../src/quant/onnx-q4.js'
import {fromFloat32} from '../src/tensor/dtype.js'

const mbAt = process.argv.indexOf('--mb')
const mb = mbAt > 0 ? Number(process.argv[mbAt + 1]) : 64
const n = Math.floor((mb * 1e6) / 4 / 4096) * 4096
const random = seededRandom(1)
const values = Float32Array.from({length: n}, () => (random() - 0.5) * 0.2)

function best(fn: () => Uint8Array, runs = 7): {mbps: number; cpuMbps: number; out: Buffer} {
  let out = Buffer.from(fn())
  let ms = Infinity
  let cpuMs = Infinity
  for (let r = 0; r < runs; r++) {
    const t = performance.now()
    const c = process.cpuUsage()
    out = Buffer.from(fn())
    const u = process.cpuUsage(c)
    ms = Math.min(ms, performance.now() - t)
    cpuMs = Math.min(cpuMs, (u.user + u.system) / 1000)
  }
  return {mbps: (n * 4) / 1e6 / (ms / 1000), cpuMbps: (n * 4) / 1e6 / (cpuMs / 1000), out}
}

function mlx(fn: typeof quantizeInto, bits: number): Uint8Array {
  const packed = new Uint32Array((n * bits) / 32)
  fn(values, n, bits, 64, packed, new Float32Array(n / 64), new Float32Array(n / 64))
  return new Uint8Array(packed.buffer)
}

// The kernels are made again only when the setting changes: a thread makes them once (the fp
// kernels' group tables included), so the timed rounds leave that out.
const withSimd = (on: boolean, fn: () => Uint8Array) => () => {
  if (process.env.OPENELM_SIMD !== (on ? '1' : '0')) {
    process.env.OPENELM_SIMD = on ? '1' : '0'
    resetSimdKernels()
    resetQuant2Kernels()
  }
  return fn()
}

const bytesOf = (v: ArrayBufferView) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
const int8 = (fn: typeof quantizeInt8Rows) => () => bytesOf(fn(values, n / 2048, 2048).codes)
const q4 = (fn: typeof quantizeQ4Rows) => () => fn(values, n / 2048, 2048, 'F32').blocks
// MLX fp from f16 weights (mlx-lm's default dtype): the values rounded to f16 once, outside the timing.
const f16Values = Float32Array.from(values, (v) => roundTo(v, 'F16'))
const fp = (mode: MlxFpMode) => () => fpEncode(mode, f16Values, n, 'F16').weight!

const rows: Array<[string, () => Uint8Array, () => Uint8Array]> = [
  ['f32 → f16 (fromFloat32)', withSimd(false, () => fromFloat32(values, 'F16')), withSimd(true, () => fromFloat32(values, 'F16'))],
  ['f32 → bf16 (fromFloat32)', withSimd(false, () => fromFloat32(values, 'BF16')), withSimd(true, () => fromFloat32(values, 'BF16'))],
  ['Q8_0 blocks', () => quantizeQ8_0Scalar(values), () => quantizeQ8_0(values)],
  ...[2, 3, 4, 5, 6, 8].map((bits): [string, () => Uint8Array, () => Uint8Array] => [`MLX affine ${bits}-bit, group 64`, () => mlx(quantizeIntoScalar, bits), () => mlx(quantizeInto, bits)]),
  ...(
    [['Q2_K', K.quantizeQ2_KScalar, K.quantizeQ2_K], ['Q3_K', K.quantizeQ3_KScalar, K.quantizeQ3_K], ['Q4_K', K.quantizeQ4_KScalar, K.quantizeQ4_K], ['Q5_K', K.quantizeQ5_KScalar, K.quantizeQ5_K], ['Q6_K', K.quantizeQ6_KScalar, K.quantizeQ6_K]] as const
  ).map(([type, scalar, simd]): [string, () => Uint8Array, () => Uint8Array] => [`GGUF ${type} (ggml.ts search lanes)`, () => scalar(values), () => simd(values)]),
  ...[Q4_0, Q4_1, Q5_0, Q5_1].map((t): [string, () => Uint8Array, () => Uint8Array] => [`GGUF ${t.type} (ggml.ts block lanes)`, () => quantizeLegacyScalar(t.type as 'Q4_0', values), () => t.quantize(values)]),
  ['ONNX int8 codes + scales, rows of 2048', int8(quantizeInt8RowsScalar), int8(quantizeInt8Rows)],
  ['ONNX q4 (MatMulNBits) blocks, F32 scales', q4(quantizeQ4RowsScalar), q4(quantizeQ4Rows)],
  ...(Object.keys(MLX_FP_MODES) as MlxFpMode[]).map((mode): [string, () => Uint8Array, () => Uint8Array] => [`MLX ${mode} from F16`, withSimd(false, fp(mode)), withSimd(true, fp(mode))]),
]
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1]! : undefined

console.log(`${((n * 4) / 1e6).toFixed(0)} MB of f32 per kernel; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; Node ${process.version}`)
console.log('| kernel | scalar MB/s | SIMD MB/s | × | scalar MB/CPU-s | SIMD MB/CPU-s | × CPU | same bytes |')
console.log('|---|---|---|---|---|---|---|---|')
for (const [label, scalar, simd] of rows) {
  if (only && !label.includes(only)) continue
  const slow = label.includes('_K') // the scalar K-quant searches run at 10-30 MB/s: fewer rounds
  const a = best(scalar, slow ? 2 : 7)
  const b = best(simd, slow ? 3 : 7)
  console.log(`| ${label} | ${a.mbps.toFixed(0)} | ${b.mbps.toFixed(0)} | ${(b.mbps / a.mbps).toFixed(1)} | ${a.cpuMbps.toFixed(0)} | ${b.cpuMbps.toFixed(0)} | ${(b.cpuMbps / a.cpuMbps).toFixed(1)} | ${a.out.equals(b.out) ? 'yes' : '**NO**'} |`)
}
console.log(`load average after: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`)
