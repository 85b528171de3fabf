/**
 * Evidence for the quantized-path thresholds: quantize-dequantize every matrix of a synth model
 * (MLX-style affine, group 64, scale/bias rounded to bf16; and GGUF-style symmetric q8_0 /
 * q4_0-like, group 32, f16 scale), run the TS engine on both and print the verify metrics.
 *   npx tsx bench/verify-quant-evidence.ts [--preset tiny|micro|270M] [--tokens 32] [--prompts 3]
 */
import {parseArgs} from 'node:util'
import {type Checkpoint} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits} from '../src/tensor/dtype.js'
import {f32Record, readFloat32, type TensorRecord} from '../src/tensor/record.js'
import {compareLogits, fmt} from '../src/verify/compare.js'
import {runForward} from '../src/verify/engine/index.js'
import {promptTokens} from '../src/verify/index.js'

const {values} = parseArgs({options: {
  preset: {type: 'string', default: 'tiny'},
  tokens: {type: 'string', default: '32'},
  prompts: {type: 'string', default: '3'},
  seed: {type: 'string', default: '1'},
}})

const bf16 = (v: number) => bf16BitsToF32(f32ToBf16Bits(v))
const f16 = (v: number) => f16BitsToF32(f32ToF16Bits(v))

/** MLX-style affine: w ≈ scale·q + bias, q in [0, 2^bits), per group of `group` along a row. */
function affine(values: Float32Array, bits: number, group: number): Float32Array {
  const out = new Float32Array(values.length)
  const levels = 2 ** bits - 1
  for (let g = 0; g < values.length; g += group) {
    let lo = Infinity
    let hi = -Infinity
    for (let i = g; i < g + group; i++) { lo = Math.min(lo, values[i]!); hi = Math.max(hi, values[i]!) }
    const scale = bf16(Math.max((hi - lo) / levels, 1e-12))
    const bias = bf16(lo)
    for (let i = g; i < g + group; i++) {
      const q = Math.min(levels, Math.max(0, Math.round((values[i]! - bias) / scale)))
      out[i] = scale * q + bias
    }
  }
  return out
}

/** GGUF-style symmetric: w ≈ d·q, q in [-2^(bits-1), 2^(bits-1)), d = amax / -2^(bits-1) in f16. */
function symmetric(values: Float32Array, bits: number, group: number): Float32Array {
  const out = new Float32Array(values.length)
  const half = 2 ** (bits - 1)
  for (let g = 0; g < values.length; g += group) {
    let amax = 0
    for (let i = g; i < g + group; i++) amax = Math.max(amax, Math.abs(values[i]!))
    const d = f16(amax / (bits === 8 ? 127 : half)) || 1e-12
    for (let i = g; i < g + group; i++) {
      const q = Math.min(half - 1, Math.max(-half, Math.round(values[i]! / d)))
      out[i] = d * q
    }
  }
  return out
}

async function quantized(source: Checkpoint, f: (v: Float32Array) => Float32Array): Promise<Checkpoint> {
  const tensors: TensorRecord[] = []
  for (const t of source.tensors) tensors.push(t.shape.length === 2 ? f32Record(t.name, t.shape, f(await readFloat32(t))) : t)
  return {...source, tensors}
}

const config = presetConfig(values.preset as 'tiny')
const base = synthCheckpoint(config, {seed: Number(values.seed), dtype: 'F32'})
const T = Number(values.tokens)
const schemes: [string, (v: Float32Array) => Float32Array][] = [
  ['bf16 cast', (v) => v.map(bf16)],
  ['f16 cast', (v) => v.map(f16)],
  ['q8_0 (sym 8-bit, g32)', (v) => symmetric(v, 8, 32)],
  ['affine 8-bit g64', (v) => affine(v, 8, 64)],
  ['affine 4-bit g64', (v) => affine(v, 4, 64)],
  ['affine 4-bit g32', (v) => affine(v, 4, 32)],
  ['q4_0 (sym 4-bit, g32)', (v) => symmetric(v, 4, 32)],
  ['affine 3-bit g64', (v) => affine(v, 3, 64)],
  ['affine 2-bit g64', (v) => affine(v, 2, 64)],
]
console.log(`| scheme | preset | prompts × tokens | max abs | cosine | top-1 | mean KL | max KL |`)
console.log(`|---|---|---|---|---|---|---|---|`)
const refs: Float32Array[] = []
const prompts = Array.from({length: Number(values.prompts)}, (_, i) => promptTokens(T, i, config.vocab_size))
for (const p of prompts) refs.push((await runForward(base, p)).logits)
for (const [name, f] of schemes) {
  const q = await quantized(base, f)
  let maxAbs = 0, cos = 0, top1 = 0, kl = 0, maxKl = 0
  for (const [i, p] of prompts.entries()) {
    const m = compareLogits(refs[i]!, (await runForward(q, p)).logits, T, config.vocab_size)
    maxAbs = Math.max(maxAbs, m.maxAbs); cos += m.cosine / prompts.length; top1 += m.top1 / prompts.length
    kl += m.meanKl / prompts.length; maxKl = Math.max(maxKl, m.maxKl)
  }
  console.log(`| ${name} | ${values.preset} | ${prompts.length} × ${T} | ${fmt(maxAbs)} | ${cos.toFixed(5)} | ${top1.toFixed(3)} | ${fmt(kl)} | ${fmt(maxKl)} |`)
}
