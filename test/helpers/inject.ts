/**
 * Quantizer bugs injected into real conversions, for the exact check's tests: each rewrites ONE
 * tensor of an MLX folder or a GGUF file in place, the way a broken writer would have written it.
 * These are deliberately small, independent re-statements of the rules (with the bug), not calls
 * into src/quant: a test must not share the code it checks.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {openCheckpoint} from '../../src/formats/registry.js'
import {openGguf} from '../../src/formats/gguf/read.js'
import {readFloat32} from '../../src/tensor/record.js'

export const MLX_BUGS = ['round-down', 'off-by-one', 'msb-first', 'swap-scales-biases', 'shifted-groups', 'scales-bf16'] as const
export type MlxBug = (typeof MLX_BUGS)[number]
export const GGUF_BUGS = ['q8-max-not-absmax'] as const

const f32 = Math.fround
const scratch = new Float32Array(1)
const scratchBits = new Uint32Array(scratch.buffer)

function f32Bits(x: number): number {
  scratch[0] = x
  return scratchBits[0]!
}

/** IEEE half bits of an f32 value, round to nearest even (finite inputs of model size only). */
function toF16Bits(x: number): number {
  const bits = f32Bits(x)
  const sign = (bits >>> 16) & 0x8000
  const abs = Math.abs(f32(x))
  if (abs === 0) return sign
  if (abs >= 65520) return sign | 0x7c00
  if (abs < 2 ** -14) return sign | Math.round(abs / 2 ** -24) // subnormal (ties here are irrelevant for these tests)
  const e = Math.floor(Math.log2(abs))
  let m = abs / 2 ** e - 1 // [0, 1)
  let mant = m * 1024
  const fl = Math.floor(mant)
  const frac = mant - fl
  mant = frac > 0.5 || (frac === 0.5 && fl % 2 === 1) ? fl + 1 : fl
  let exp = e + 15
  if (mant === 1024) {
    mant = 0
    exp++
  }
  m = mant
  return sign | (exp << 10) | m
}

function fromF16Bits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const exp = (h >>> 10) & 0x1f
  const mant = h & 0x3ff
  if (exp === 0) return sign * mant * 2 ** -24
  if (exp === 31) return mant ? NaN : sign * Infinity
  return sign * (1 + mant / 1024) * 2 ** (exp - 15)
}

/** bf16 rounding (nearest even) of an f32 value, as an f32. */
function roundBf16(x: number): number {
  const bits = f32Bits(x)
  const rounded = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) << 16
  const out = new Float32Array(new Uint32Array([rounded >>> 0]).buffer)
  return out[0]!
}

function rint(x: number): number {
  const f = Math.floor(x)
  const d = x - f
  return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1
}

/** MLX's CPU rule for one group (f32), for the buggy writers to share scales/biases with the right one. */
function affineParams(v: ArrayLike<number>, start: number, end: number, bits: number): {scale: number; bias: number} {
  let min = Infinity
  let max = -Infinity
  for (let i = start; i < end; i++) {
    min = Math.min(min, v[i]!)
    max = Math.max(max, v[i]!)
  }
  const nBins = (1 << bits) - 1
  const minDominates = Math.abs(min) > Math.abs(max)
  let scale = Math.max(f32(f32(max - min) / nBins), f32(1e-7))
  if (!minDominates) scale = -scale
  const edge = minDominates ? min : max
  const q0 = rint(f32(edge / scale))
  return q0 !== 0 ? {scale: f32(edge / q0), bias: edge} : {scale, bias: 0}
}

interface StEntry {dtype: string; shape: number[]; data_offsets: [number, number]}

async function readSt(file: string): Promise<{header: Record<string, StEntry | Record<string, string>>; data: Buffer}> {
  const bytes = await fs.readFile(file)
  const n = Number(bytes.readBigUInt64LE(0))
  return {header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')), data: Buffer.from(bytes.subarray(8 + n))}
}

async function writeSt(file: string, header: Record<string, unknown>, data: Buffer): Promise<void> {
  let json = JSON.stringify(header)
  json += ' '.repeat(Math.ceil(json.length / 8) * 8 - json.length)
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(json.length))
  await fs.writeFile(file, Buffer.concat([len, Buffer.from(json), data]))
}

function packLsb(codes: number[], bits: number, words: number): Uint32Array {
  const out = new Uint32Array(words)
  codes.forEach((q, i) => {
    const bit = i * bits
    out[bit >>> 5] = (out[bit >>> 5]! | (q << (bit & 31))) >>> 0
    if ((bit & 31) + bits > 32) out[(bit >>> 5) + 1] = (out[(bit >>> 5) + 1]! | (q >>> (32 - (bit & 31)))) >>> 0
  })
  return out
}

function unpackLsb(words: Uint32Array, bits: number, n: number): number[] {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const bit = i * bits
    let q = words[bit >>> 5]! >>> (bit & 31)
    if ((bit & 31) + bits > 32) q |= words[(bit >>> 5) + 1]! << (32 - (bit & 31))
    out.push(q & ((1 << bits) - 1))
  }
  return out
}

/**
 * Rewrite tensor `canonical` (e.g. `layers.1.attn.qkv_proj.weight`) of the mlx-lm folder `dir` (F16
 * scales) with `bug`; `source` is the checkpoint it was converted from.
 */
export async function injectMlxBug(dir: string, source: string, canonical: string, bug: MlxBug, bits: number, groupSize: number): Promise<void> {
  const file = path.join(dir, 'model.safetensors')
  const {header, data} = await readSt(file)
  const base = `transformer.${canonical.replace(/\.weight$/, '')}`
  const w = header[`${base}.weight`] as StEntry
  const s = header[`${base}.scales`] as StEntry
  const b = header[`${base}.biases`] as StEntry
  if (!w || !s || !b || w.dtype !== 'U32' || s.dtype !== 'F16') throw new Error(`${canonical} is not an F16-scaled quantized tensor in ${dir}`)
  const [rows, wordsPerRow] = w.shape as [number, number]
  const cols = (wordsPerRow * 32) / bits
  const groups = cols / groupSize
  const word = (r: number, k: number) => data.readUInt32LE(w.data_offsets[0] + (r * wordsPerRow + k) * 4)
  const setWord = (r: number, k: number, v: number) => data.writeUInt32LE(v >>> 0, w.data_offsets[0] + (r * wordsPerRow + k) * 4)
  const param = (e: StEntry, i: number) => data.readUInt16LE(e.data_offsets[0] + i * 2)
  const setParam = (e: StEntry, i: number, v: number) => data.writeUInt16LE(v, e.data_offsets[0] + i * 2)
  const rowWords = (r: number) => Uint32Array.from({length: wordsPerRow}, (_, k) => word(r, k))
  const values = async (): Promise<Float32Array> => {
    const ck = await openCheckpoint(source)
    try {
      const t = ck.tensors.find((x) => x.name === canonical)!
      // mlx-lm rounds to the model dtype (f16) first.
      return (await readFloat32(t)).map((v) => fromF16Bits(toF16Bits(v)))
    } finally {
      await ck.close()
    }
  }
  switch (bug) {
    case 'round-down': {
      // Same scales and biases; codes floor((w - bias) / scale) instead of rint.
      const v = await values()
      for (let r = 0; r < rows; r++) {
        const codes: number[] = []
        for (let g = 0; g < groups; g++) {
          const e0 = r * cols + g * groupSize
          const {scale, bias} = affineParams(v, e0, e0 + groupSize, bits)
          for (let i = 0; i < groupSize; i++) codes.push(Math.min(Math.max(Math.floor(f32(f32(v[e0 + i]! - bias) / scale)), 0), (1 << bits) - 1))
        }
        packLsb(codes, bits, wordsPerRow).forEach((x, k) => setWord(r, k, x))
      }
      break
    }
    case 'off-by-one': {
      // One code of one group (row 3, group 1, element 5) moved by one.
      const r = 3
      const codes = unpackLsb(rowWords(r), bits, cols)
      const i = 1 * groupSize + 5
      codes[i] = codes[i]! === (1 << bits) - 1 ? codes[i]! - 1 : codes[i]! + 1
      packLsb(codes, bits, wordsPerRow).forEach((x, k) => setWord(r, k, x))
      break
    }
    case 'msb-first': {
      // Each word's codes in reverse order (element 0 in the top bits).
      const perWord = 32 / bits
      if (!Number.isInteger(perWord)) throw new Error('msb-first is defined for 2, 4, 8 bits')
      const mask = (1 << bits) - 1
      for (let r = 0; r < rows; r++) {
        for (let k = 0; k < wordsPerRow; k++) {
          const x = word(r, k)
          let y = 0
          for (let j = 0; j < perWord; j++) y |= ((x >>> (j * bits)) & mask) << ((perWord - 1 - j) * bits)
          setWord(r, k, y)
        }
      }
      break
    }
    case 'swap-scales-biases': {
      for (let i = 0; i < rows * groups; i++) {
        const sv = param(s, i)
        setParam(s, i, param(b, i))
        setParam(b, i, sv)
      }
      break
    }
    case 'shifted-groups': {
      // Group g's scale/bias taken from columns [g·G + 1, (g+1)·G + 1) (one column late), codes from them.
      const v = await values()
      for (let r = 0; r < rows; r++) {
        const codes: number[] = []
        for (let g = 0; g < groups; g++) {
          const e0 = r * cols + g * groupSize
          const {scale, bias} = affineParams(v, e0 + 1, Math.min(r * cols + cols, e0 + groupSize + 1), bits)
          setParam(s, r * groups + g, toF16Bits(scale))
          setParam(b, r * groups + g, toF16Bits(bias))
          for (let i = 0; i < groupSize; i++) codes.push(Math.min(Math.max(rint(f32(f32(v[e0 + i]! - bias) / scale)), 0), (1 << bits) - 1))
        }
        packLsb(codes, bits, wordsPerRow).forEach((x, k) => setWord(r, k, x))
      }
      break
    }
    case 'scales-bf16': {
      // Scales and biases kept at bf16 precision but stored as F16.
      for (let i = 0; i < rows * groups; i++) {
        setParam(s, i, toF16Bits(roundBf16(fromF16Bits(param(s, i)))))
        setParam(b, i, toF16Bits(roundBf16(fromF16Bits(param(b, i)))))
      }
      break
    }
  }
  await writeSt(file, header, data)
}

/** Rewrite GGUF tensor `name` (Q8_0) with d = max/127 (signed max) instead of max|x|/127. */
export async function injectQ8MaxBug(file: string, source: string, canonical: string, ggufName: string): Promise<void> {
  const gguf = await openGguf(file)
  const t = gguf.tensors.find((x) => x.info.name === ggufName)
  await gguf.close()
  if (!t || t.type !== 'Q8_0') throw new Error(`${ggufName} is not a Q8_0 tensor in ${file}`)
  const ck = await openCheckpoint(source)
  let v: Float32Array
  try {
    v = await readFloat32(ck.tensors.find((x) => x.name === canonical)!)
  } finally {
    await ck.close()
  }
  const blocks = v.length / 32
  const out = Buffer.alloc(blocks * 34)
  for (let k = 0; k < blocks; k++) {
    let max = -Infinity
    for (let j = 0; j < 32; j++) max = Math.max(max, v[k * 32 + j]!)
    const d = f32(max / 127)
    const id = d !== 0 ? f32(1 / d) : 0
    out.writeUInt16LE(toF16Bits(d), k * 34)
    for (let j = 0; j < 32; j++) {
      const x = f32(v[k * 32 + j]! * id)
      const q = Math.max(-128, Math.min(127, x < 0 ? -Math.floor(0.5 - x) : Math.floor(x + 0.5)))
      out.writeInt8(q, k * 34 + 2 + j)
    }
  }
  const handle = await fs.open(file, 'r+')
  try {
    await handle.write(out, 0, out.length, t.fileOffset)
  } finally {
    await handle.close()
  }
}
