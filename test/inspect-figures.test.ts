/**
 * `inspect`'s figures agree with each other and with the files: stored bytes (what the file holds)
 * vs dequantized bytes (what the tensors read as), each labelled; parameters with and without
 * CoreNet's padded vocabulary rows (synth's count and the .pt's); a quantized GGUF's types as
 * stored (checked with node-llama-cpp's own GGUF reader), never the dtype it reads as.
 */
import {execFileSync} from 'node:child_process'
import {promises as fs, readFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {readGgufFileInfo} from 'node-llama-cpp'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {headLines} from '../src/commands/inspect.js'
import {convert, writeCheckpoint} from '../src/convert.js'
import {inspect} from '../src/inspect.js'
import {parameterCount} from '../src/model/config.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'

const FIXTURE = path.resolve('fixtures/tiny-hf')
const PYTHON = '/usr/bin/python3'
let tmp: string
beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-inspect-figures-'))
})
afterAll(() => fs.rm(tmp, {recursive: true, force: true}))

/** ggml type ids (ggml.h) of the types these files hold, and their bytes per block of `block` weights. */
const GGML: Record<number, {name: string; block: number; bytes: number}> = {
  0: {name: 'F32', block: 1, bytes: 4},
  1: {name: 'F16', block: 1, bytes: 2},
  8: {name: 'Q8_0', block: 32, bytes: 34},
}

describe('inspect figures', () => {
  it('a CoreNet .pt with 32128 rows: both parameter counts, labelled; synth\'s count is the one without padding', async () => {
    // synth's model (32000 rows), written as CoreNet pads it (32128), as `synth --to corenet` from HF does.
    const config = presetConfig('tiny', {vocab_size: 32000})
    const synthCount = parameterCount(config)
    const file = path.join(tmp, 'padded.pt')
    const result = await drain(writeCheckpoint(synthCheckpoint(config, {dtype: 'BF16'}), 'corenet', file, {}))
    expect(result.vocab).toMatchObject({from: 32000, to: 32128})
    const r = await inspect(file)
    expect(r.parameters).toBe(synthCount + 128 * config.model_dim)
    expect(r.parametersWithoutPadding).toBe(synthCount)
    expect(r.paddedVocabRows).toBe(128)
    // PyTorch counts the same elements in the file.
    const script = 'import sys,torch\nsd=torch.load(sys.argv[1],weights_only=True)\nsd=sd.get("model",sd) if isinstance(sd,dict) else sd\nprint(sum(v.numel() for v in sd.values() if torch.is_tensor(v)))'
    expect(Number(execFileSync(PYTHON, ['-c', script, file]).toString().trim())).toBe(r.parameters)
    // BF16 throughout: stored = dequantized = 2 bytes per parameter; the file adds only the pickle around them.
    expect(r.storedBytes).toBe(r.parameters * 2)
    expect(r.tensorBytes).toBe(r.storedBytes)
    const size = (await fs.stat(file)).size
    expect(r.fileBytes).toBe(size)
    expect(size - r.storedBytes!).toBeGreaterThan(0)
    expect(size - r.storedBytes!).toBeLessThan(64 * 1024)
    const lines = headLines(r)
    expect(lines[0]).toBe(`parameters  ${r.parameters.toLocaleString('en-US')} with 128 padded vocabulary rows (${synthCount.toLocaleString('en-US')} without them)   tensors 34`)
    expect(lines[1]).toMatch(/^size {8}[\d.]+ MiB stored, files [\d.]+ MiB$/)
    expect(lines[3]).toBe('dtypes      BF16×34')
    // The HF folder of 32000 rows: one count, no padding claimed.
    const hf = await inspect(FIXTURE)
    expect(hf.paddedVocabRows).toBeUndefined()
    expect(headLines(hf)[0]).toBe('parameters  156,288   tensors 34')
  }, 30_000)

  it('a Q8_0 GGUF: stored types and bytes as the file holds them (node-llama-cpp\'s reader), dequantized size labelled apart', async () => {
    const file = path.join(tmp, 'q8.gguf')
    await drain(convert(FIXTURE, 'gguf', file, {}, {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}}))
    const r = await inspect(file)
    const info = await readGgufFileInfo(file, {readTensorInfo: true})
    const inFile = new Map<string, {tensors: number; bytes: number}>()
    for (const t of info.tensorInfo!) {
      const type = GGML[t.ggmlType]
      expect(type, `${t.name} type ${t.ggmlType}`).toBeDefined()
      const elements = t.dimensions.reduce((a: number, b) => a * Number(b), 1)
      const e = inFile.get(type!.name) ?? {tensors: 0, bytes: 0}
      inFile.set(type!.name, {tensors: e.tensors + 1, bytes: e.bytes + (elements / type!.block) * type!.bytes})
    }
    // Stored bytes: the file's tensors sized by their own types, to the byte; inside the file.
    const fileStored = [...inFile.values()].reduce((a, e) => a + e.bytes, 0)
    expect(r.storedBytes).toBe(fileStored)
    expect(r.fileBytes).toBe((await fs.stat(file)).size)
    // The data section (from the first tensor to the end) holds exactly these bytes plus each tensor's alignment padding.
    const dataSection = r.fileBytes! - Number(info.tensorInfo![0]!.fileOffset)
    expect(dataSection).toBeGreaterThanOrEqual(r.storedBytes!)
    expect(dataSection - r.storedBytes!).toBeLessThan(32 * info.tensorInfo!.length)
    // The stored census names the file's types: as many Q8_0 pieces as the file has Q8_0 tensors.
    expect(new Set(Object.keys(r.storedTypes!).flatMap((t) => t.split('+')))).toEqual(new Set(inFile.keys()))
    const q8Pieces = r.tensorStorage!.flatMap((t) => t.segments).filter((s) => s.scheme === 'gguf_q8_0').length
    expect(q8Pieces).toBe(inFile.get('Q8_0')!.tensors)
    // Dequantized: what the tensors read as (F32/F16), far larger than what is stored.
    expect(r.tensorBytes).toBeGreaterThan(2 * r.storedBytes!)
    const lines = headLines(r)
    expect(lines[2]).toMatch(/^weights {5}Q8_0 \(8\.5 bpw\); F16, F32 for the rest$/)
    expect(lines[3]).toBe(`dtypes      ${Object.entries(r.storedTypes!).map(([t, n]) => `${t}×${n}`).join(' ')} (stored)`)
    expect(lines[3]).toMatch(/^dtypes {6}Q8_0×\d+ /)
    expect(lines.join('\n')).not.toMatch(/dtype F16|quantized 8-bit/)
    expect(lines[1]).toMatch(/^size {8}186\.50 KiB stored, 562\.50 KiB dequantized \(read as F32×30 F16×4\), files 192\.97 KiB$/)
  }, 30_000)

  it('an MLX 4-bit folder: stored bytes = the safetensors data, files = the file, dequantized = F16 elements', async () => {
    const dir = path.join(tmp, 'mlx4')
    await drain(convert(FIXTURE, 'mlx', dir, {}, {quantization: {bits: 4, groupSize: 32, mode: 'affine'}}))
    const r = await inspect(dir)
    const bytes = readFileSync(path.join(dir, 'model.safetensors'))
    const headerLength = Number(bytes.readBigUInt64LE(0))
    expect(r.storedBytes).toBe(bytes.length - 8 - headerLength)
    expect(r.fileBytes).toBe(bytes.length)
    expect(r.tensorBytes).toBe(r.parameters * 2)
    expect(r.storedTypes).toEqual({'affine 4-bit g32': 13, F16: 21})
    expect(headLines(r)[1]).toBe('size        129.25 KiB stored, 305.25 KiB dequantized (read as F16×34), files 135.24 KiB')
  }, 30_000)
})
