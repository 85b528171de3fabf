/**
 * `npx tsx bench/simd-kernels.ts [--mb N]`: MB/s of f32 input through each kernel of src/simd/kernels.ts
 * against the scalar code it replaces (issue 15 item 2), in this thread, best of 7 after warm-up, with the
 * outputs compared byte for byte. Prints a Markdown table.
 */
import os from 'node:os'
import {seededRandom} from '../src/generate/sampler.js'
import {quantizeInto, quantizeIntoScalar} from '../src/quant/mlx-affine.js'
import {quantizeQ8_0, quantizeQ8_0Scalar} from '../src/quant/q8_0.js'
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

function best(fn: () => Uint8Array): {mbps: number; out: Buffer} {
  let out = Buffer.from(fn())
  let ms = Infinity
  for (let r = 0; r < 7; r++) {
    const t = performance.now()
    out = Buffer.from(fn())
    ms = Math.min(ms, performance.now() - t)
  }
  return {mbps: (n * 4) / 1e6 / (ms / 1000), out}
}

function mlx(fn: typeof quantizeInto, bits: number): Uint8Array {
  const packed = new Uint32Array((n * bits) / 32)
  fn(values, n, bits, 64, packed, new Float32Array(n / 64), new Float32Array(n / 64))
  return new Uint8Array(packed.buffer)
}

const withSimd = (on: boolean, fn: () => Uint8Array) => () => {
  process.env.OPENELM_SIMD = on ? '1' : '0'
  resetSimdKernels()
  resetQuant2Kernels()
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
  ['ONNX int8 codes + scales, rows of 2048', int8(quantizeInt8RowsScalar), int8(quantizeInt8Rows)],
  ['ONNX q4 (MatMulNBits) blocks, F32 scales', q4(quantizeQ4RowsScalar), q4(quantizeQ4Rows)],
  ...(Object.keys(MLX_FP_MODES) as MlxFpMode[]).map((mode): [string, () => Uint8Array, () => Uint8Array] => [`MLX ${mode} from F16`, withSimd(false, fp(mode)), withSimd(true, fp(mode))]),
]

console.log(`${((n * 4) / 1e6).toFixed(0)} MB of f32 per kernel; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; Node ${process.version}`)
console.log('| kernel | scalar MB/s | SIMD MB/s | × | same bytes |')
console.log('|---|---|---|---|---|')
for (const [label, scalar, simd] of rows) {
  const a = best(scalar)
  const b = best(simd)
  console.log(`| ${label} | ${a.mbps.toFixed(0)} | ${b.mbps.toFixed(0)} | ${(b.mbps / a.mbps).toFixed(1)} | ${a.out.equals(b.out) ? 'yes' : '**NO**'} |`)
}
console.log(`load average after: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`)
