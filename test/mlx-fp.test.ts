/**
 * MLX's floating-point modes (mxfp4, nvfp4, mxfp8): the TS schemes (src/quant/mlx-fp.ts) and the
 * PyTorch reference's own implementation (quant_ref.py, written from MLX's `fp_quantize` op graph)
 * agree bit for bit on random matrices and hand-built edge groups, for every mode × weight dtype;
 * and the hand-built groups really hit the rule's edges (fp4 ties, e4m3 ties and saturation, the
 * e8m0 exponent at log2 = k + ½, a zero scale). End to end on the trained fixture: `convert --to
 * mlx --q-mode M` writes what mlx-lm's loader reads (config, tensor names, dtypes), reads back, and
 * `verify --against SRC` proves it exactly (TS and torch engines); a wrong rounding injected into
 * one tensor fails with exit 5 and names that tensor; bad flag combinations are usage errors.
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {existsSync, promises as fs, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {openSafetensors} from '../src/formats/safetensors/read.js'
import {writeSafetensors} from '../src/formats/safetensors/write.js'
import {drain} from '../src/progress.js'
import {schemeFor} from '../src/quant/index.js'
import {e4m3Code, e4m3Value, fp4Code, gpuGroup, MLX_FP_MODE_NAMES, MLX_FP_MODES, type MlxFpMode, packFp, roundTo} from '../src/quant/mlx-fp.js'
import {type FloatDType} from '../src/tensor/dtype.js'
import {f32Record, memoryRecord, readFloat32} from '../src/tensor/record.js'
import {verify} from '../src/verify/index.js'
import {seededRandom as prng} from '../src/generate/sampler.js'

const PYTHON = '/usr/bin/python3'
const QUANT_REF = path.join(import.meta.dirname, '..', 'src', 'verify', 'python', 'quant_ref.py')
const DTYPES: FloatDType[] = ['F32', 'F16', 'BF16']

interface Case {name: string; rows: number; cols: number; values: Float32Array; scheme: string; dtype: FloatDType}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-mlx-fp-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))

function randomMatrix(seed: number, rows: number, cols: number): Float32Array {
  const u = prng(seed)
  const scale = [0.02, 0.5, 3, 1e-3][seed % 4]!
  return Float32Array.from({length: rows * cols}, () => {
    const g = Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u())
    return u() < 0.01 ? g * scale * 20 : g * scale
  })
}

/** Hand-built groups of 32 values (two groups of 16 for nvfp4), one 32-value row each. */
function edgeRows(mode: MlxFpMode): number[][] {
  const top = mode === 'mxfp8' ? 448 : 6 // amax giving scale 1 (e = 0, or e4m3 1.0)
  const row = (fn: (i: number) => number) => Array.from({length: 32}, (_, i) => fn(i))
  const fp4Ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, 0.1, 0.5, 5.5]
  const e4m3Ties = [1 + 1 / 16, 1 + 3 / 16, 3 * 2 ** -10, 5 * 2 ** -10, 2 ** -6 - 2 ** -10, 440, 232, 1e-4]
  const ties = mode === 'mxfp8' ? e4m3Ties : fp4Ties
  return [
    // every tie of the element format, both signs, with amax = top in both halves (scale 1)
    row((i) => (i % 16 === 0 ? top : i % 16 === 1 ? -top : (i % 2 ? -1 : 1) * ties[(i >> 1) % ties.length]!)),
    // the same ties at scale 2^5 and 2^-7
    row((i) => 32 * (i % 16 === 0 ? top : (i % 2 ? -1 : 1) * ties[(i >> 1) % ties.length]!)),
    row((i) => 2 ** -7 * (i % 16 === 0 ? top : (i % 2 ? -1 : 1) * ties[(i >> 1) % ties.length]!)),
    row(() => 0), // a zero group: scale 0 → e = 0 (mx), e4m3 0 (nv: 0/0 codes)
    row((i) => (i % 2 ? -0 : 0)),
    // amax / M near 2^k · √2: log2 of the scale near k + ½ (the e8m0 exponent's tie)
    row((i) => (i % 16 === 0 ? top * Math.SQRT2 : (i - 16) * 0.01 * top)),
    row((i) => (i % 16 === 0 ? top * 1.4140 * 4 : (i - 16) * 0.02)),
    row((i) => (i % 16 === 0 ? top * 1.4145 / 8 : (i - 16) * 0.001)),
    row((i) => (i % 16 === 0 ? top * 1.41421 * 2 ** 10 : i)),
    row((i) => (i % 2 ? 1 : -1) * (i + 1) * 1e-8), // tiny: f16 subnormals, scales underflow
    row((i) => (i % 2 ? 1 : -1) * (i + 1) * 3e-6),
    row((i) => (i % 2 ? 1 : -1) * (i + 1) * 1e-40), // f32 subnormals
    row((i) => (i % 3 - 1) * 6.0e4 + i), // near the f16 maximum: nvfp4 scale saturates at 448
    row((i) => (i % 5 - 2) * 1e5 + i), // overflows f16
    row((i) => (i === 3 ? 1e30 : i * 0.1)),
    row((i) => 0.37 * (i % 7) - 1.1),
  ]
}

function buildCases(): Case[] {
  const cases: Case[] = []
  for (const mode of MLX_FP_MODE_NAMES) {
    for (const dtype of DTYPES) {
      const scheme = `mlx_${mode}`
      const seed = MLX_FP_MODE_NAMES.indexOf(mode) * 10 + DTYPES.indexOf(dtype)
      cases.push({name: `${mode}.${dtype}.random.a`, rows: 8, cols: 256, values: randomMatrix(seed, 8, 256), scheme, dtype})
      cases.push({name: `${mode}.${dtype}.random.b`, rows: 4, cols: 96, values: randomMatrix(seed + 101, 4, 96), scheme, dtype})
      cases.push({name: `${mode}.${dtype}.random.c`, rows: 16, cols: 64, values: randomMatrix(seed + 202, 16, 64), scheme, dtype})
      cases.push({name: `${mode}.${dtype}.random.d`, rows: 16, cols: 64, values: randomMatrix(seed + 303, 16, 64), scheme, dtype})
      const edges = edgeRows(mode)
      cases.push({name: `${mode}.${dtype}.edge`, rows: edges.length, cols: 32, values: Float32Array.from(edges.flat()), scheme, dtype})
    }
  }
  return cases
}

const cases = buildCases()
let stored: Map<string, Uint8Array>
let dequantized: Map<string, Uint8Array>
let gpuReport: Record<string, {blocks: number; identical_blocks: number; mismatched_blocks: number; accepted: Record<string, number>}>
const gpuParts = new Map<string, {weight: Uint8Array; scales: Uint8Array}>()

/** A case's parts as MLX's GPU kernel would write them (every group by `gpuGroup`). */
function gpuEncode(c: Case): {weight: Uint8Array; scales: Uint8Array} {
  const mode = c.scheme.slice(4) as MlxFpMode
  const {bits, groupSize} = MLX_FP_MODES[mode]
  const values = c.values.map((v) => roundTo(v, c.dtype))
  const codes = new Uint8Array(values.length)
  const scales = new Uint8Array(values.length / groupSize)
  for (let g = 0; g < scales.length; g++) {
    const r = gpuGroup(mode, values, g * groupSize)
    scales[g] = r.scale
    codes.set(r.codes, g * groupSize)
  }
  return {weight: packFp(codes, bits), scales}
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

beforeAll(async () => {
  const src = path.join(tmp, 'cases.safetensors')
  await drain(writeSafetensors(src, cases.map((c) => f32Record(c.name, [c.rows, c.cols], c.values))))
  writeFileSync(path.join(tmp, 'plan.json'), JSON.stringify(Object.fromEntries(cases.map((c) => [c.name, {scheme: c.scheme, params: {dtype: c.dtype}}]))))
  execFileSync(PYTHON, [QUANT_REF, 'quantize', '--in', src, '--plan', path.join(tmp, 'plan.json'), '--out', path.join(tmp, 'stored.safetensors'), '--dequantized', path.join(tmp, 'deq.safetensors')], {encoding: 'utf8'})
  stored = await readAll(path.join(tmp, 'stored.safetensors'))
  dequantized = await readAll(path.join(tmp, 'deq.safetensors'))
  // The GPU kernel's encoding of every case, classified by the reference's compare.
  const records = []
  const plan: Record<string, unknown> = {}
  for (const c of cases) {
    const parts = gpuEncode(c)
    gpuParts.set(c.name, parts)
    const bits = MLX_FP_MODES[c.scheme.slice(4) as MlxFpMode].bits
    records.push(memoryRecord(`${c.name}::weight`, 'U32', [c.rows, (c.cols * bits) / 32], parts.weight), memoryRecord(`${c.name}::scales`, 'U8', [c.rows, parts.scales.length / c.rows], parts.scales))
    plan[c.name] = {scheme: c.scheme, params: {dtype: c.dtype}, shape: [c.rows, c.cols]}
  }
  const gpuFile = path.join(tmp, 'gpu.safetensors')
  await drain(writeSafetensors(gpuFile, records, {'openelm.plan': JSON.stringify(plan)}))
  gpuReport = JSON.parse(execFileSync(PYTHON, [QUANT_REF, 'compare', '--expected', path.join(tmp, 'stored.safetensors'), '--actual', gpuFile, '--source', src], {encoding: 'utf8'}))
}, 120_000)

function firstByteDifference(a: Uint8Array, b: Uint8Array): string | undefined {
  if (a.byteLength !== b.byteLength) return `${a.byteLength} bytes vs ${b.byteLength}`
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return `byte ${i}: ${a[i]} vs ${b[i]}`
  return undefined
}

describe('MLX fp modes: TS and the PyTorch reference agree bit for bit', () => {
  for (const mode of MLX_FP_MODE_NAMES) {
    it(`${mode}: random matrices and edge groups, F32/F16/BF16 weights: codes, scales and dequantized values`, () => {
      const selected = cases.filter((c) => c.name.startsWith(`${mode}.`))
      expect(selected.length).toBe(15)
      const failures: string[] = []
      let groups = 0
      for (const c of selected) {
        const scheme = schemeFor(c.scheme)
        const ts = scheme.encode(c.values, c.rows, c.cols, {dtype: c.dtype})
        expect(Object.keys(ts).sort()).toEqual(['scales', 'weight'])
        for (const [part, bytes] of Object.entries(ts)) {
          const diff = firstByteDifference(bytes, stored.get(`${c.name}::${part}`) ?? new Uint8Array(0))
          if (diff) failures.push(`${c.name} ${part}: ${diff}`)
        }
        groups += ts.scales!.length
        const tv = scheme.decode(ts, c.rows, c.cols, {dtype: c.dtype})
        const pv = new Float32Array(dequantized.get(c.name)!.slice().buffer)
        const tb = new Uint32Array(tv.buffer, tv.byteOffset, tv.length)
        const pb = new Uint32Array(pv.buffer)
        const at = tb.findIndex((b, i) => b !== pb[i])
        if (at >= 0) failures.push(`${c.name} dequantized value ${at}: ${tv[at]} vs ${pv[at]}`)
      }
      expect(failures).toEqual([])
      expect(groups).toBeGreaterThan(200)
    })
  }

  it('a tensor written by MLX\'s GPU kernel rule: every group identical or accepted as mlx-gpu-rule, never a mismatch, by TS and by the reference alike', () => {
    let accepted = 0
    let edgeAccepted = 0
    for (const c of cases) {
      const scheme = schemeFor(c.scheme)
      const diff = scheme.compare(scheme.encode(c.values, c.rows, c.cols, {dtype: c.dtype}), gpuParts.get(c.name)!, c.values, c.rows, c.cols, {dtype: c.dtype})
      const tsAccepted = diff.accepted['mlx-gpu-rule'] ?? 0
      expect(diff.identicalBlocks + tsAccepted, c.name).toBe(diff.blocks)
      expect(diff.first, c.name).toBeUndefined()
      const py = gpuReport[c.name]!
      expect([py.blocks, py.identical_blocks, py.mismatched_blocks, py.accepted['mlx-gpu-rule']], c.name).toEqual([diff.blocks, diff.identicalBlocks, 0, tsAccepted])
      accepted += tsAccepted
      if (c.name.endsWith('.edge')) edgeAccepted += tsAccepted
    }
    // The two rules really differ (fp4 ties, -0, zero groups, exponent ties): the acceptance is exercised.
    expect(edgeAccepted).toBeGreaterThan(20)
    expect(accepted).toBeGreaterThan(edgeAccepted)
  })

  it('the edge groups hit the edges: fp4 ties go to the smaller magnitude, e4m3 ties to the even code, saturation, zero', () => {
    expect([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5].map((q) => fp4Code(q))).toEqual([0, 1, 2, 3, 4, 5, 6])
    expect([-0.25, -0.75, -5, -5.01, -0.0, -1e-9].map((q) => fp4Code(q))).toEqual([0, 9, 14, 15, 0, 0])
    expect([Infinity, NaN].map((q) => fp4Code(q))).toEqual([0, 0])
    // Beyond 6 the rounded differences decide: 7 → 6, but q = 1e30/448 (a saturated nvfp4 scale) is
    // absorbed by every f32 subtraction, all 16 distances tie and argmin takes code 0.
    expect([fp4Code(7), fp4Code(-7), fp4Code(1e30 / 448, 'F32')]).toEqual([7, 15, 0])
    expect(e4m3Code(1 + 1 / 16)).toBe(0x38) // tie between 1 and 1.125 → 1 (even)
    expect(e4m3Code(1 + 3 / 16)).toBe(0x3a) // tie between 1.125 and 1.25 → 1.25 (even)
    expect(e4m3Code(3 * 2 ** -10)).toBe(0x02) // subnormal tie → 2·2^-9
    expect(e4m3Code(2 ** -6 - 2 ** -10)).toBe(0x08) // rounds up into the smallest normal
    expect([448, 460, 1e9, Infinity, NaN].map(e4m3Code)).toEqual([0x7e, 0x7e, 0x7e, 0x7e, 0x7e])
    expect(e4m3Code(-1e9)).toBe(0xfe)
    expect(e4m3Code(-0)).toBe(0x80)
    for (let c = 0; c < 0x7f; c++) expect(e4m3Code(e4m3Value(c))).toBe(c)
    // Through the scheme: the scale-1 edge row of mxfp4 keeps the ties' codes, the zero row gets e = 0.
    const rows = edgeRows('mxfp4')
    const parts = schemeFor('mlx_mxfp4').encode(Float32Array.from(rows.flat()), rows.length, 32, {dtype: 'F32'})
    expect(parts.scales![0]).toBe(127)
    expect(parts.scales![1]).toBe(127 + 5)
    expect(parts.scales![3]).toBe(127) // zero group
    expect(parts.weight![0]).toBe(0xf7) // elements 0, 1: +6 (code 7), -6 (code 15)
    expect(parts.weight![1]).toBe(0x91) // elements 2, 3: +0.75 → 0.5 (code 1), -0.75 → -0.5 (code 9)
  })
})

describe('MLX fp schemes: layout, bits per weight and compare', () => {
  for (const [mode, bpw] of [['mxfp4', 4.25], ['nvfp4', 4.5], ['mxfp8', 8.25]] as const) {
    it(`${mode}: parts have their declared sizes; a changed code and a changed scale are named by row, group, column and part`, () => {
      const scheme = schemeFor(`mlx_${mode}`)
      expect(scheme.bitsPerWeight({dtype: 'F16'})).toBe(bpw)
      const rows = 3
      const cols = 96
      const values = randomMatrix(5, rows, cols)
      const params = {dtype: 'BF16' as FloatDType}
      const parts = scheme.encode(values, rows, cols, params)
      for (const part of scheme.parts(params, cols)) expect(parts[part.name]!.byteLength, part.name).toBe(rows * part.perRow * (part.dtype === 'U32' ? 4 : 1))
      const same = scheme.compare(parts, parts, values, rows, cols, params)
      expect([same.identicalElements, same.identicalBlocks, same.blocks, same.first]).toEqual([rows * cols, same.blocks, (rows * cols) / MLX_FP_MODES_GROUP[mode], undefined])
      const group = MLX_FP_MODES_GROUP[mode]
      const edited = {weight: parts.weight!.slice(), scales: parts.scales!.slice()}
      const col = group + 3 // row 1, group 1, element 3 of the group
      const byteAt = mode === 'mxfp8' ? cols + col : (cols + col) >> 1
      edited.weight[byteAt] ^= mode === 'mxfp8' ? 1 : (col & 1 ? 0x10 : 0x01)
      const code = scheme.compare(parts, edited, values, rows, cols, params)
      expect(code.first).toEqual({row: 1, block: 1, col, part: 'weight'})
      expect(code.identicalBlocks).toBe(code.blocks - 1)
      expect(code.identicalElements).toBe(rows * cols - 1)
      const scale = {weight: parts.weight!, scales: parts.scales!.slice()}
      scale.scales[(2 * cols) / group + 2]! ^= 1 // row 2, group 2
      expect(scheme.compare(parts, scale, values, rows, cols, params).first).toEqual({row: 2, block: 2, col: 2 * group, part: 'scales'})
      expect(() => scheme.check({dtype: 'F16', group_size: 64}, 128)).toThrow(/groups of/)
      expect(() => scheme.check({dtype: 'F16'}, group + 8)).toThrow(/not whole groups/)
    })
  }
})

const MLX_FP_MODES_GROUP = {mxfp4: 32, nvfp4: 16, mxfp8: 32} as const

// ---- end to end ----------------------------------------------------------------------------------

const repo = path.resolve(import.meta.dirname, '..')
const TRAINED = path.join(repo, 'fixtures/trained')
const TENSOR = 'layers.1.attn.qkv_proj.weight'

function cli(...args: string[]): {code: number; stdout: string; stderr: string} {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), ...args], {cwd: repo, encoding: 'utf8', timeout: 120_000})
  return {code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr}
}

/** The safetensors header and data of a single-file mlx-lm folder. */
function readFolder(dir: string): {header: Record<string, {dtype: string; shape: number[]; data_offsets: [number, number]}>; bytes: Buffer; dataStart: number} {
  const bytes = readFileSync(path.join(dir, 'model.safetensors'))
  const n = Number(bytes.readBigUInt64LE(0))
  return {header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')), bytes, dataStart: 8 + n}
}

/** e4m3 magnitudes by code 0..126, ascending (an independent restatement for the injected bug). */
const E4M3 = Array.from({length: 127}, (_, c) => ((c >> 3) === 0 ? (c & 7) / 512 : (8 + (c & 7)) * 2 ** ((c >> 3) - 10)))
const FP4 = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
/** Index of the last value of ascending `table` that is at most `m`. */
const lastAtMost = (table: number[], m: number) => table.reduce((k, v, i) => (v <= m ? i : k), 0)

/**
 * Rewrite the codes of `canonical` as a broken writer would: each quotient rounded toward zero
 * instead of to nearest, with the file's own scales. The model is F32 (no dtype rounding), so the
 * quotient is fround(w / scale).
 */
async function injectRoundDown(dir: string, canonical: string, mode: MlxFpMode): Promise<number> {
  const {header, bytes, dataStart} = readFolder(dir)
  const base = `transformer.${canonical.replace(/\.weight$/, '')}`
  const w = header[`${base}.weight`]!
  const s = header[`${base}.scales`]!
  const ck = await openCheckpoint(TRAINED)
  const values = await readFloat32(ck.tensors.find((t) => t.name === canonical)!)
  await ck.close()
  const group = mode === 'nvfp4' ? 16 : 32
  let changed = 0
  const codes: number[] = []
  for (let i = 0; i < values.length; i++) {
    const byte = bytes[dataStart + s.data_offsets[0] + Math.floor(i / group)]!
    const scale = mode === 'nvfp4' ? E4M3[byte & 0x7f]! : 2 ** (byte - 127)
    const q = Math.fround(values[i]! / scale)
    const m = Math.abs(q)
    let code: number
    if (mode === 'mxfp8') {
      code = m >= 448 ? 126 : lastAtMost(E4M3, m)
      if (q < 0 || Object.is(q, -0)) code |= 0x80
    } else {
      const k = lastAtMost(FP4, m)
      code = k === 0 ? 0 : q < 0 ? 8 + k : k
    }
    codes.push(code)
  }
  const out = Buffer.from(bytes)
  const at = dataStart + w.data_offsets[0]
  if (mode === 'mxfp8') {
    codes.forEach((c, i) => { if (out[at + i] !== c) changed++; out[at + i] = c })
  } else {
    for (let j = 0; j < codes.length / 2; j++) {
      const b = codes[2 * j]! | (codes[2 * j + 1]! << 4)
      if (out[at + j] !== b) changed++
      out[at + j] = b
    }
  }
  writeFileSync(path.join(dir, 'model.safetensors'), out)
  return changed
}

describe.skipIf(!existsSync(TRAINED))('convert --to mlx --q-mode on the trained fixture', () => {
  let dir: string
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-mlx-fp-e2e-'))
  })
  afterAll(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  for (const mode of MLX_FP_MODE_NAMES) {
    it(`${mode}: mlx-lm's layout and config, read back, verified exactly; a wrong rounding fails with exit 5`, async () => {
      const out = path.join(dir, mode)
      const r = cli('convert', TRAINED, '--to', 'mlx', '--q-mode', mode, '--dtype', 'f32', '--out', out, '--json')
      expect(r.code, r.stderr).toBe(0)
      const result = JSON.parse(r.stdout) as {target: {quantization: {mode: string; bits: number; groupSize: number}}}
      const {bits, groupSize} = {mxfp4: {bits: 4, groupSize: 32}, nvfp4: {bits: 4, groupSize: 16}, mxfp8: {bits: 8, groupSize: 32}}[mode]
      expect(result.target.quantization).toEqual({bits, groupSize, mode})
      const config = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>
      expect(config.quantization).toEqual({bits, group_size: groupSize, mode})
      expect(config.quantization_config).toEqual({bits, group_size: groupSize, mode})
      const {header} = readFolder(out)
      const names = Object.keys(header).filter((n) => n !== '__metadata__')
      expect(names.filter((n) => n.endsWith('.biases'))).toEqual([])
      const qkv = 'transformer.layers.1.attn.qkv_proj'
      const ck = await openCheckpoint(TRAINED)
      const [rows, cols] = ck.tensors.find((t) => t.name === TENSOR)!.shape as [number, number]
      await ck.close()
      expect(header[`${qkv}.weight`]).toMatchObject({dtype: 'U32', shape: [rows, (cols * bits) / 32]})
      expect(header[`${qkv}.scales`]).toMatchObject({dtype: 'U8', shape: [rows, cols / groupSize]})
      expect(header['transformer.token_embeddings.scales']?.dtype).toBe('U8') // the tied embedding/head is quantized too
      expect(names.filter((n) => n.endsWith('.scales')).length).toBe(17)

      const good = await verify(out, {against: TRAINED})
      expect(good.relation).toBe('derived')
      expect(good.weights!.mismatching).toEqual([])
      expect(good.weights!.tensors.every((t) => t.identicalElements === t.elements)).toBe(true)
      expect(good.logits!.pass).toBe(true)
      expect(good.model.storage[`mlx_${mode}`]).toBe(17)

      expect(await injectRoundDown(out, TENSOR, mode)).toBeGreaterThan(0)
      const bad = cli('verify', out, '--against', TRAINED)
      expect(bad.code).toBe(5)
      const line = bad.stderr.trim().split('\n').at(-1)!
      expect(line).toMatch(/^Error: verification failed \(exact\)/)
      expect(line).toContain(TENSOR)
      const report = await verify(out, {against: TRAINED})
      expect(report.weights!.mismatching).toEqual([TENSOR])
    }, 120_000)
  }

  it('the torch engine proves an nvfp4 F16 conversion exactly, with the embedding kept in float', async () => {
    const out = path.join(dir, 'nvfp4-f16')
    await drain(convert(TRAINED, 'mlx', out, {}, {quantization: {bits: 4, groupSize: 16, mode: 'nvfp4'}, mlxQuant: {embedding: 'none'}}))
    const config = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as {quantization: Record<string, unknown>}
    expect(config.quantization).toEqual({bits: 4, group_size: 16, mode: 'nvfp4', 'transformer.token_embeddings': false})
    const report = await verify(out, {against: TRAINED, backend: 'torch'})
    expect(report.relation).toBe('derived')
    expect(report.weights!.mismatching).toEqual([])
    expect(report.logits!.pass).toBe(true)
    expect(report.model.storage).toEqual({mlx_nvfp4: 16, f16: 18})
  }, 120_000)

  it('a tensor quantized by MLX\'s GPU kernel rule (as mlx_lm.convert on a Mac) passes: its differing groups are accepted and named, on both engines', async () => {
    const out = path.join(dir, 'mxfp4-gpu')
    await drain(convert(TRAINED, 'mlx', out, {}, {quantization: {bits: 4, groupSize: 32, mode: 'mxfp4'}}))
    const {header, bytes, dataStart} = readFolder(out)
    const base = `transformer.${TENSOR.replace(/\.weight$/, '')}`
    const ck = await openCheckpoint(TRAINED)
    const values = (await readFloat32(ck.tensors.find((t) => t.name === TENSOR)!)).map((v) => roundTo(v, 'F16'))
    await ck.close()
    const codes = new Uint8Array(values.length)
    const edited = Buffer.from(bytes)
    for (let g = 0; g < values.length / 32; g++) {
      const r = gpuGroup('mxfp4', values, g * 32)
      edited[dataStart + header[`${base}.scales`]!.data_offsets[0] + g] = r.scale
      codes.set(r.codes, g * 32)
    }
    const weight = packFp(codes, 4)
    const w0 = dataStart + header[`${base}.weight`]!.data_offsets[0]
    let changed = 0
    weight.forEach((b, i) => { if (edited[w0 + i] !== b) changed++; edited[w0 + i] = b })
    expect(changed).toBeGreaterThan(0)
    writeFileSync(path.join(out, 'model.safetensors'), edited)
    for (const backend of ['ts', 'torch'] as const) {
      const report = await verify(out, {against: TRAINED, backend})
      expect(report.pass, backend).toBe(true)
      expect(report.weights!.mismatching, backend).toEqual([])
      expect(report.weights!.accepted['mlx-gpu-rule'], backend).toBeGreaterThan(0)
      expect(report.logits!.pass, backend).toBe(true)
    }
  }, 120_000)

  it('the reader refuses fp folders that do not hold together: a wrong group size or mode in config.json, biases on an fp module, float scales', async () => {
    const good = path.join(dir, 'mxfp4') // written by the first test of this block
    const variant = async (name: string, edit: (config: Record<string, unknown>) => void, from = good) => {
      const out = path.join(dir, name)
      await fs.cp(from, out, {recursive: true})
      const file = path.join(out, 'config.json')
      const config = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>
      edit(config)
      writeFileSync(file, JSON.stringify(config))
      return out
    }
    const withQ = (q: Record<string, unknown>) => (c: Record<string, unknown>) => {
      c.quantization = q
      c.quantization_config = q
    }
    await expect(openCheckpoint(await variant('bad-group', withQ({bits: 4, group_size: 64, mode: 'mxfp4'})))).rejects.toThrow(/MLX's mxfp4 is 4 bits in groups of 32/)
    await expect(openCheckpoint(await variant('bad-mode', withQ({bits: 4, group_size: 32, mode: 'fp3'})))).rejects.toThrow(/quantization mode "fp3"; supported: "affine", "mxfp4", "nvfp4", "mxfp8"/)
    // An affine folder (scales and biases) whose config claims mxfp4.
    const affine = path.join(dir, 'affine-g32')
    await drain(convert(TRAINED, 'mlx', affine, {}, {quantization: {bits: 4, groupSize: 32, mode: 'affine'}}))
    await expect(openCheckpoint(await variant('claims-mxfp4', withQ({bits: 4, group_size: 32, mode: 'mxfp4'}), affine))).rejects.toThrow(/is mxfp4, which stores no biases/)
    // An mxfp4 folder whose config claims affine: no biases, and scales that are not floats.
    await expect(openCheckpoint(await variant('claims-affine', withQ({bits: 4, group_size: 32, mode: 'affine'})))).rejects.toThrow(/has scales but no biases/)
  }, 120_000)

  it('bad combinations are usage errors (exit 2) before any work', () => {
    const out = path.join(dir, 'never')
    for (const [args, message] of [
      [['--q-mode', 'mxfp4', '--group-size', '64'], /--q-mode mxfp4 uses groups of 32/],
      [['--q-mode', 'nvfp4', '--quantize', '8'], /--q-mode nvfp4 stores 4-bit elements/],
      [['--q-mode', 'mxfp8', '--q-recipe', 'mixed_3_6'], /does not apply to --q-mode mxfp8/],
      [['--q-mode', 'mxfp4', '--quantize-embedding', '6'], /--quantize-embedding 6 with --q-mode mxfp4/],
      [['--q-mode', 'mxfp4', '--layout', 'corenet-mlx'], /needs the mlx-lm layout/],
    ] as const) {
      const r = cli('convert', TRAINED, '--to', 'mlx', '--out', out, ...args)
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toMatch(message)
    }
    const gguf = cli('convert', TRAINED, '--to', 'gguf', '--q-mode', 'mxfp4', '--out', `${out}.gguf`)
    expect(gguf.code).toBe(2)
    expect(gguf.stderr).toMatch(/--q-mode mxfp4 applies to --to mlx/)
    expect(existsSync(out) || existsSync(`${out}.gguf`)).toBe(false)
  }, 120_000)

  it('--dtype q8_0 from the command line still writes Q8_0 (the quantization flags no longer drop it)', () => {
    const out = path.join(dir, 'q8.gguf')
    const r = cli('convert', TRAINED, '--to', 'gguf', '--dtype', 'q8_0', '--out', out, '--json')
    expect(r.code, r.stderr).toBe(0)
    expect((JSON.parse(r.stdout) as {target: {quantization?: unknown}}).target.quantization).toEqual({bits: 8, groupSize: 32, mode: 'q8_0'})
  }, 60_000)
})
