/**
 * `inspect` reports each tensor's storage (type, bits per weight, stored bytes) for every format from
 * the readers' stored-segment declarations (src/inspect/quant.ts), grouped in a summary. The stored
 * bytes are checked against the files themselves: the safetensors header sizes of each MLX tensor's
 * parts, and GGUF's block size per type.
 */
import {spawnSync} from 'node:child_process'
import {existsSync, promises as fs, readFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {type WriteOptions} from '../src/formats/types.js'
import {inspect} from '../src/inspect.js'
import {drain} from '../src/progress.js'

const repo = path.resolve(import.meta.dirname, '..')
const TRAINED = path.join(repo, 'fixtures/trained')
let tmp: string

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-inspect-storage-'))
})
afterAll(async () => {
  await fs.rm(tmp, {recursive: true, force: true})
})

async function convertTo(name: string, to: 'mlx' | 'gguf', options: WriteOptions): Promise<string> {
  const out = path.join(tmp, name)
  await drain(convert(TRAINED, to, out, {}, options))
  return out
}

/** Bytes of each stored safetensors tensor of an mlx-lm folder, by name. */
function headerBytes(dir: string): Map<string, number> {
  const bytes = readFileSync(path.join(dir, 'model.safetensors'))
  const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')) as Record<string, {data_offsets: [number, number]}>
  return new Map(Object.entries(header).filter(([k]) => k !== '__metadata__').map(([k, v]) => [k, v.data_offsets[1] - v.data_offsets[0]]))
}

describe.skipIf(!existsSync(TRAINED))('inspect: storage per tensor for every format', () => {
  it('a float HF folder: one group, F32 at 32 bits per weight, stored bytes = the tensors\' bytes', async () => {
    const r = await inspect(TRAINED)
    expect(r.storage).toEqual([{type: 'F32', tensors: 34, elements: r.tensorBytes / 4, storedBytes: r.tensorBytes, bitsPerWeight: 32}])
    expect(r.tensorStorage!.every((t) => t.type === 'F32' && t.bitsPerWeight === 32)).toBe(true)
  })

  for (const [label, options, quantType, bpw] of [
    ['affine 4-bit g64, embedding f16', {quantization: {bits: 4, groupSize: 64, mode: 'affine'}, mlxQuant: {embedding: 'none'}}, 'affine 4-bit g64', 4.5],
    ['mxfp4', {quantization: {bits: 4, groupSize: 32, mode: 'mxfp4'}}, 'mxfp4', 4.25],
    ['nvfp4', {quantization: {bits: 4, groupSize: 16, mode: 'nvfp4'}}, 'nvfp4', 4.5],
  ] as const) {
    it(`MLX ${label}: each tensor's stored bytes are its parts' bytes in the file; the summary groups them`, async () => {
      const dir = await convertTo(label.replaceAll(/\W+/g, '-'), 'mlx', options as WriteOptions)
      const sizes = headerBytes(dir)
      const r = await inspect(dir)
      for (const t of r.tensorStorage!) {
        const base = `transformer.${t.name.replace(/\.weight$/, '')}`
        const inFile = ['.weight', '.scales', '.biases'].reduce((a, p) => a + (sizes.get(`${base}${p}`) ?? 0), t.name.endsWith('.weight') ? 0 : sizes.get(`transformer.${t.name}`) ?? 0)
        expect(t.storedBytes, t.name).toBe(inFile)
      }
      const total = [...sizes.values()].reduce((a, b) => a + b, 0)
      expect(r.storage!.reduce((a, g) => a + g.storedBytes, 0)).toBe(total)
      const q = r.storage!.find((g) => g.type === quantType)!
      expect(q.bitsPerWeight).toBe(bpw)
      expect(q.tensors).toBe(label.includes('embedding f16') ? 16 : 17)
      const f16 = r.storage!.find((g) => g.type === 'F16')!
      expect(f16.tensors).toBe(label.includes('embedding f16') ? 18 : 17)
      expect(r.storage![0]!.storedBytes).toBeGreaterThanOrEqual(r.storage!.at(-1)!.storedBytes) // largest first
    })
  }

  it('GGUF Q8_0: 34 bytes per 32 weights for the matrices, F32 for the norms; the data section holds exactly these bytes', async () => {
    const file = await convertTo('q8.gguf', 'gguf', {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}})
    const r = await inspect(file)
    const q8 = r.tensorStorage!.filter((t) => t.type === 'Q8_0')
    expect(q8.length).toBe(17)
    for (const t of q8) expect(t.storedBytes).toBe((t.elements / 32) * 34)
    expect(r.storage!.map((g) => [g.type, g.tensors, g.bitsPerWeight])).toEqual([['Q8_0', 17, 8.5], ['F32', 17, 32]])
    const proj1 = r.tensorStorage!.find((t) => t.name === 'layers.0.ffn.proj_1.weight')!
    expect(proj1.segments.map((s) => s.label)).toEqual(['blk.0.ffn_gate.weight', 'blk.0.ffn_up.weight'])
    // Every stored byte is in the file: the sum is at most the file size, and within the alignment padding of it.
    const size = (await fs.stat(file)).size
    const stored = r.storage!.reduce((a, g) => a + g.storedBytes, 0)
    expect(stored).toBeLessThan(size)
    expect(size - stored).toBeLessThan(200_000) // header (vocabulary) + padding
  })

  it('the command: a storage line in text, --tensors lists every tensor, --json carries both', async () => {
    const dir = path.join(tmp, 'mxfp4')
    const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), 'inspect', dir, ...args], {cwd: repo, encoding: 'utf8', timeout: 60_000})
    const text = run('--tensors')
    expect(text.status, text.stderr).toBe(0)
    expect(text.stdout).toMatch(/storage {5}mxfp4 ×17 \(4\.25 bpw\) [\d.]+ KiB, F16 ×17 \(16 bpw\)/)
    expect(text.stdout).toContain('weights     mxfp4 (4.25 bpw); F16 for the rest')
    expect(text.stdout).toMatch(/layers\.3\.ffn\.proj_2\.weight +\d+×\d+ +mxfp4 +4\.25/)
    const json = JSON.parse(run('--json').stdout) as {storage: {type: string}[]; tensorStorage: {name: string; type: string}[]}
    expect(json.storage.map((g) => g.type)).toEqual(['mxfp4', 'F16'])
    expect(json.tensorStorage.length).toBe(34)
  }, 120_000)
})
