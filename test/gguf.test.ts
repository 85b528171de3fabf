/**
 * GGUF: Q8_0 against hand-computed blocks, header layout bytes, metadata values and types,
 * round trips (tiny fixture → GGUF → canonical / HF), the tokenizer, and malformed files built
 * byte by byte next to a valid control.
 */
import {spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {FormatError, MappingError} from '../src/errors.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {ggufFormat} from '../src/formats/gguf/index.js'
import {expandNames, joinRows, selectRows} from '../src/formats/gguf/names.js'
import {dequantizeQ8_0, quantizeQ8_0} from '../src/quant/q8_0.js'
import {openGguf, parseGgufHeader} from '../src/formats/gguf/read.js'
import {loadVocab, parseSentencePieceModel, parseTokenizerJson, placeholderVocab} from '../src/formats/gguf/tokenizer.js'
import {type GgufKv} from '../src/formats/gguf/types.js'
import {planGguf, writeGguf} from '../src/formats/gguf/write.js'
import {castBytes, f16BitsToF32, toFloat32} from '../src/tensor/dtype.js'
import {f32Record, readFloat32, readIntoOf, withReadInto} from '../src/tensor/record.js'
import {drain} from '../src/progress.js'

const repo = path.resolve(import.meta.dirname, '..')
const fixture = path.join(repo, 'fixtures/tiny-hf')
const spmModel = path.join(repo, 'fixtures/tiny-spm/tokenizer.model')
let work: string
let source: string

async function sha(p: string): Promise<string> {
  return createHash('sha256').update(await fs.readFile(p)).digest('hex')
}

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'gguf-test-'))
  source = path.join(work, 'tiny')
  await fs.cp(fixture, source, {recursive: true})
  await fs.copyFile(spmModel, path.join(source, 'tokenizer.model'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('Q8_0 blocks', () => {
  it('quantizes hand-computed blocks: f16 scale max|x|/127, int8 round half away from zero', () => {
    const a = new Float32Array(32) // all zero: d = 0, q = 0
    const b = new Float32Array(32)
    b.set([127, -127, 2.5, -2.5, 0.49, -0.5, 3]) // d = 1
    const c = new Float32Array(32)
    c.set([254, 1, 3, -5, 100.9]) // d = 2: q = 127, round(0.5) = 1, round(1.5) = 2, round(-2.5) = -3, round(50.45) = 50
    const out = quantizeQ8_0(Float32Array.from([...a, ...b, ...c]))
    expect(out.byteLength).toBe(3 * 34)
    const expected = new Uint8Array(3 * 34)
    const q = (block: number, values: number[]) => values.forEach((v, j) => (expected[block * 34 + 2 + j] = v & 0xff))
    expected.set([0x00, 0x3c], 34) // f16 1.0
    q(1, [127, -127, 3, -3, 0, -1, 3])
    expected.set([0x00, 0x40], 68) // f16 2.0
    q(2, [127, 1, 2, -3, 50])
    expect([...out]).toEqual([...expected])
    const back = dequantizeQ8_0(out)
    expect([...back.subarray(32, 39)]).toEqual([127, -127, 3, -3, 0, -1, 3])
    expect([...back.subarray(64, 69)]).toEqual([254, 2, 4, -6, 100])
  })

  it('stores the f16-rounded scale but quantizes with the unrounded one (as ggml does)', () => {
    const v = new Float32Array(32)
    v[0] = 1
    v[1] = 0.3
    const out = quantizeQ8_0(v)
    const dBits = out[0]! | (out[1]! << 8)
    expect(dBits).toBe(0x2008) // f16(1/127) = 0.0078735…
    expect(new Int8Array(out.buffer, 2, 2)[0]).toBe(127)
    expect(new Int8Array(out.buffer, 2, 2)[1]).toBe(38) // round(0.3 · 127) = round(38.1)
    expect(f16BitsToF32(dBits)).toBeCloseTo(1 / 127, 5)
  })

  it('dequantizes within half a step of every value', () => {
    let s = 7
    const values = Float32Array.from({length: 32 * 64}, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 3)
    const blocks = quantizeQ8_0(values)
    const back = dequantizeQ8_0(blocks)
    for (let b = 0; b < 64; b++) {
      const block = values.subarray(b * 32, b * 32 + 32)
      const d = Math.max(...block.map(Math.abs)) / 127
      const stored = f16BitsToF32(blocks[b * 34]! | (blocks[b * 34 + 1]! << 8))
      // Half a quantization step, plus what rounding d to f16 moves the largest quant by.
      const bound = d / 2 + 127 * Math.abs(stored - d) + 1e-7
      for (let j = 0; j < 32; j++) expect(Math.abs(back[b * 32 + j]! - block[j]!)).toBeLessThanOrEqual(bound)
    }
  })
})

describe('names', () => {
  it('maps every canonical tensor and splits proj_1 into gate (first half) and up (second half)', async () => {
    const maps = expandNames(2)
    expect(maps.ggufOrder.slice(0, 3)).toEqual(['token_embd.weight', 'blk.0.attn_norm.weight', 'blk.0.attn_qkv.weight'])
    expect(maps.ggufOrder.at(-1)).toBe('output_norm.weight')
    expect(maps.ggufOrder).not.toContain('output.weight')
    expect(maps.toGguf.get('layers.1.ffn.proj_1.weight')).toEqual([{gguf: 'blk.1.ffn_gate.weight', part: 'first-half'}, {gguf: 'blk.1.ffn_up.weight', part: 'second-half'}])
    const proj1 = f32Record('layers.0.ffn.proj_1.weight', [4, 2], Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]))
    const gate = selectRows(proj1, 'first-half', 'blk.0.ffn_gate.weight')
    const up = selectRows(proj1, 'second-half', 'blk.0.ffn_up.weight')
    expect([...(await readFloat32(gate))]).toEqual([1, 2, 3, 4])
    expect([...(await readFloat32(up))]).toEqual([5, 6, 7, 8])
    const joined = joinRows('layers.0.ffn.proj_1.weight', gate, up)
    expect(joined.shape).toEqual([4, 2])
    expect([...(await readFloat32(joined))]).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    expect([...toFloat32(await joined.read(12, 20), 'F32')]).toEqual([4, 5])
  })

  it('keeps the source\'s no-allocation reader through the row split and the renaming (same bytes as read)', async () => {
    const values = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8])
    const bytes = new Uint8Array(values.buffer)
    const proj1 = withReadInto(f32Record('layers.0.ffn.proj_1.weight', [4, 2], values), async (target, start) => target.set(bytes.subarray(start, start + target.byteLength)))
    for (const [part, expected] of [['all', [1, 2, 3, 4, 5, 6, 7, 8]], ['first-half', [1, 2, 3, 4]], ['second-half', [5, 6, 7, 8]]] as const) {
      const selected = selectRows(proj1, part, 'x')
      expect(selected.name).toBe('x')
      const fast = readIntoOf(selected)
      expect(fast).toBeDefined()
      const into = new Uint8Array(selected.byteLength - 4)
      await fast!(into, 4)
      expect([...toFloat32(into, 'F32')]).toEqual(expected.slice(1))
      expect([...toFloat32(await selected.read(4), 'F32')]).toEqual(expected.slice(1))
    }
    const plain = {name: 'p', dtype: 'F32' as const, shape: [4, 2], byteLength: 32, read: async (s = 0, e = 32) => bytes.slice(s, e)}
    expect(readIntoOf(selectRows(plain, 'all', 'x'))).toBeUndefined()
  })
})

describe('writer and reader', () => {
  it('writes the spec layout: magic, version 3, counts, reversed dims, 32-byte aligned data', async () => {
    const out = path.join(work, 'tiny-f32.gguf')
    await drain(convert(source, 'gguf', out, {}, {dtype: 'F32'}))
    const bytes = await fs.readFile(out)
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('GGUF')
    expect(bytes.readUInt32LE(4)).toBe(3)
    expect(bytes.readBigUInt64LE(8)).toBe(38n) // token_embd + 4 layers × 9 + output_norm
    const header = parseGgufHeader(bytes)
    expect(header.dataOffset % 32).toBe(0)
    const embd = header.tensorInfos[0]!
    expect(embd.name).toBe('token_embd.weight')
    expect(embd.dimensions).toEqual([64n, 128n]) // [model_dim, vocab]: ggml order
    expect(embd.type).toBe(0)
    expect(embd.offset).toBe(0n)
    for (const info of header.tensorInfos) expect(info.offset % 32n).toBe(0n)
    const gate = header.tensorInfos.find((t) => t.name === 'blk.3.ffn_gate.weight')!
    expect(gate.dimensions).toEqual([64n, 256n])
    // The data section starts right after the header padding: token_embd's first value is the fixture's.
    const file = await openCheckpoint(fixture)
    const first = new Float32Array((await file.tensors[0]!.read(0, 16)).slice().buffer)
    await file.close()
    expect(bytes.readFloatLE(header.dataOffset)).toBe(first[0])
    expect(bytes.byteLength).toBe(header.dataOffset + Number(header.tensorInfos.at(-1)!.offset) + 256)
  })

  it('writes every openelm key llama.cpp reads, with its type', async () => {
    const file = await openGguf(path.join(work, 'tiny-f32.gguf'))
    const kv = (key: string) => file.kv.get(key)
    await file.close()
    const int32s = (items: number[]) => ({itemType: 'INT32', items})
    expect(kv('general.architecture')).toEqual({key: 'general.architecture', type: 'STRING', value: 'openelm'})
    expect(kv('general.alignment')?.value).toBe(32)
    expect(kv('general.file_type')).toMatchObject({type: 'UINT32', value: 0})
    expect(kv('openelm.block_count')).toMatchObject({type: 'UINT32', value: 4})
    expect(kv('openelm.context_length')).toMatchObject({type: 'UINT32', value: 128})
    expect(kv('openelm.embedding_length')).toMatchObject({type: 'UINT32', value: 64})
    expect(kv('openelm.feed_forward_length')).toMatchObject({type: 'ARRAY', value: int32s([32, 112, 176, 256])})
    expect(kv('openelm.attention.head_count')).toMatchObject({type: 'ARRAY', value: int32s([4, 6, 6, 8])})
    expect(kv('openelm.attention.head_count_kv')).toMatchObject({type: 'ARRAY', value: int32s([2, 3, 3, 4])})
    expect(kv('openelm.rope.freq_base')).toMatchObject({type: 'FLOAT32', value: 10000})
    expect(kv('openelm.attention.layer_norm_rms_epsilon')).toMatchObject({type: 'FLOAT32', value: Math.fround(1e-6)})
    expect(kv('openelm.rope.dimension_count')).toMatchObject({type: 'UINT32', value: 8})
    expect(kv('openelm.attention.key_length')).toMatchObject({type: 'UINT32', value: 8})
    expect(kv('openelm.attention.value_length')).toMatchObject({type: 'UINT32', value: 8})
    expect(kv('tokenizer.ggml.model')?.value).toBe('llama')
    expect(kv('tokenizer.ggml.bos_token_id')).toMatchObject({type: 'UINT32', value: 1})
    expect(kv('tokenizer.ggml.eos_token_id')).toMatchObject({type: 'UINT32', value: 2})
    expect(kv('tokenizer.ggml.unknown_token_id')).toMatchObject({type: 'UINT32', value: 0})
    expect(kv('tokenizer.ggml.add_bos_token')).toMatchObject({type: 'BOOL', value: true})
    const tokens = kv('tokenizer.ggml.tokens')!.value as {itemType: string; items: string[]}
    expect(tokens.itemType).toBe('STRING')
    expect(tokens.items.length).toBe(128)
    expect(tokens.items.slice(0, 5)).toEqual(['<unk>', '<s>', '</s>', 'er', '▁o'])
    expect((kv('tokenizer.ggml.token_type')!.value as {items: number[]}).items.slice(0, 4)).toEqual([2, 3, 3, 1])
    expect((kv('tokenizer.ggml.scores')!.value as {itemType: string; items: number[]}).items.slice(3, 6)).toEqual([-0, -1, -2])
    expect(kv('openelm.vocab_placeholder')).toBeUndefined()
  })

  it('reads back the exact tensors and config (f32), and is byte-deterministic', async () => {
    const original = await openCheckpoint(source)
    const gguf = await openCheckpoint(path.join(work, 'tiny-f32.gguf'))
    expect(gguf.format).toBe('gguf')
    expect(gguf.config).toEqual(original.config)
    expect(gguf.tensors.map((t) => t.name)).toEqual(original.tensors.map((t) => t.name))
    for (let i = 0; i < original.tensors.length; i++) {
      expect(Buffer.from(await gguf.tensors[i]!.read()).equals(Buffer.from(await original.tensors[i]!.read())), original.tensors[i]!.name).toBe(true)
    }
    await gguf.close()
    await original.close()
    const again = path.join(work, 'again.gguf')
    await drain(convert(source, 'gguf', again, {}, {dtype: 'F32'}))
    expect(await sha(again)).toBe(await sha(path.join(work, 'tiny-f32.gguf')))
  })

  it('f16 and bf16: matrices cast exactly, 1-D tensors stay F32, file_type set', async () => {
    const original = await openCheckpoint(source)
    for (const [dtype, fileType] of [['F16', 1], ['BF16', 32]] as const) {
      const out = path.join(work, `tiny-${dtype}.gguf`)
      await drain(convert(source, 'gguf', out, {}, {dtype}))
      const raw = await openGguf(out)
      expect(raw.kv.get('general.file_type')?.value).toBe(fileType)
      for (const t of raw.tensors) expect(t.type, t.info.name).toBe(t.shape.length === 1 ? 'F32' : dtype)
      await raw.close()
      const back = await openCheckpoint(out)
      for (let i = 0; i < original.tensors.length; i++) {
        const o = original.tensors[i]!
        const want = o.shape.length === 1 ? await o.read() : castBytes(await o.read(), 'F32', dtype)
        expect(Buffer.from(await back.tensors[i]!.read()).equals(Buffer.from(want)), o.name).toBe(true)
      }
      await back.close()
    }
    await original.close()
  })

  it('q8_0: 2-D tensors quantized, rows not a multiple of 32 fall back to F16, reader dequantizes', async () => {
    const dir = path.join(work, 'q8dir')
    const result = await drain(convert(source, 'gguf', dir, {}, {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}}))
    const out = path.join(dir, 'model-q8_0.gguf')
    expect(result.target.path).toBe(out)
    expect(result.notes.join('\n')).toContain('blk.1.attn_output.weight')
    const raw = await openGguf(out)
    expect(raw.kv.get('general.file_type')?.value).toBe(7)
    const types = Object.fromEntries(raw.tensors.map((t) => [t.info.name, t.type]))
    expect(types['token_embd.weight']).toBe('Q8_0')
    expect(types['blk.0.attn_output.weight']).toBe('Q8_0') // 4 heads × 8 = 32 columns
    expect(types['blk.1.attn_output.weight']).toBe('F16') // 6 × 8 = 48 columns
    expect(types['blk.1.ffn_down.weight']).toBe('F16') // 112 columns
    expect(types['blk.3.ffn_down.weight']).toBe('Q8_0') // 256 columns
    expect(types['blk.0.attn_norm.weight']).toBe('F32')
    const embd = raw.tensors[0]!
    expect(embd.byteLength).toBe((128 * 64 / 32) * 34)
    await raw.close()
    const original = await openCheckpoint(source)
    const back = await openCheckpoint(out)
    expect(back.extras.quantization).toEqual({bits: 8, groupSize: 32, mode: 'q8_0'})
    const o = await readFloat32(original.tensors[0]!)
    const b = await readFloat32(back.tensors[0]!)
    // Same values as quantizing the source ourselves and dequantizing.
    expect([...b]).toEqual([...dequantizeQ8_0(quantizeQ8_0(o))])
    // A ranged read of the dequantized record matches the whole read.
    expect([...toFloat32(await back.tensors[0]!.read(4 * 40, 4 * 70), 'F32')]).toEqual([...b.subarray(40, 70)])
    await back.close()
    await original.close()
  })

  it('q8_0 GGUF → GGUF without --dtype stays Q8_0 with the same blocks', async () => {
    const first = path.join(work, 'q8dir', 'model-q8_0.gguf')
    const second = path.join(work, 'q8-again.gguf')
    await drain(convert(first, 'gguf', second, {}, {}))
    const a = await openGguf(first)
    const b = await openGguf(second)
    expect(b.kv.get('general.file_type')?.value).toBe(7)
    expect(b.tensors.map((t) => t.type)).toEqual(a.tensors.map((t) => t.type))
    for (let i = 0; i < a.tensors.length; i++) {
      expect(Buffer.from(await b.readRaw(b.tensors[i]!)).equals(Buffer.from(await a.readRaw(a.tensors[i]!))), a.tensors[i]!.info.name).toBe(true)
    }
    await a.close()
    await b.close()
  })

  it('GGUF → GGUF keeps the embedded vocabulary when no tokenizer file is next to it', async () => {
    const first = path.join(work, 'tiny-f32.gguf')
    const second = path.join(work, 'keep-vocab.gguf')
    const result = await drain(convert(first, 'gguf', second, {}, {dtype: 'F16'}))
    expect(result.notes.join('\n')).not.toMatch(/placeholder/)
    const a = await openGguf(first)
    const b = await openGguf(second)
    for (const key of ['tokenizer.ggml.tokens', 'tokenizer.ggml.scores', 'tokenizer.ggml.token_type', 'tokenizer.ggml.bos_token_id', 'tokenizer.ggml.add_bos_token']) {
      expect(b.kv.get(key), key).toEqual(a.kv.get(key))
    }
    await a.close()
    await b.close()
    const checkpoint = await openCheckpoint(first)
    expect(JSON.stringify(checkpoint.extras.info)).not.toContain('<unk>') // the vocabulary is not in reports
    await checkpoint.close()
  })

  it('gguf → hf gives back the source weights and config.json', async () => {
    const hf = path.join(work, 'back-hf')
    await drain(convert(path.join(work, 'tiny-f32.gguf'), 'hf', hf, {}, {}))
    // auto_map differs: the fixture names local modules, a folder without them names Apple's repo.
    const {auto_map: autoMap, ...written} = JSON.parse(await fs.readFile(path.join(hf, 'config.json'), 'utf8')) as Record<string, unknown>
    const {auto_map: _, ...expected} = JSON.parse(await fs.readFile(path.join(fixture, 'config.json'), 'utf8')) as Record<string, unknown>
    expect(written).toEqual(expected)
    expect(autoMap).toEqual({AutoConfig: 'apple/OpenELM-270M--configuration_openelm.OpenELMConfig', AutoModelForCausalLM: 'apple/OpenELM-270M--modeling_openelm.OpenELMForCausalLM'})
    const a = await openCheckpoint(hf)
    const b = await openCheckpoint(fixture)
    for (let i = 0; i < a.tensors.length; i++) expect(Buffer.from(await a.tensors[i]!.read()).equals(Buffer.from(await b.tensors[i]!.read()))).toBe(true)
    await a.close()
    await b.close()
  })

  it('round-trips every metadata value type, nested arrays and 64-bit values as bigint', async () => {
    const metadata: GgufKv[] = [
      {key: 'general.alignment', type: 'UINT32', value: 64},
      {key: 'u8', type: 'UINT8', value: 255},
      {key: 'i8', type: 'INT8', value: -128},
      {key: 'u16', type: 'UINT16', value: 65535},
      {key: 'i16', type: 'INT16', value: -32768},
      {key: 'u32', type: 'UINT32', value: 4294967295},
      {key: 'i32', type: 'INT32', value: -2147483648},
      {key: 'f32', type: 'FLOAT32', value: 1.5},
      {key: 'bool', type: 'BOOL', value: true},
      {key: 'str', type: 'STRING', value: 'héllo ▁'},
      {key: 'u64', type: 'UINT64', value: (1n << 64n) - 1n},
      {key: 'i64', type: 'INT64', value: -(1n << 63n)},
      {key: 'f64', type: 'FLOAT64', value: 0.1},
      {key: 'nested', type: 'ARRAY', value: {itemType: 'ARRAY', items: [{itemType: 'INT32', items: [1, -2]}, {itemType: 'STRING', items: ['a', '']}]}},
      {key: 'empty', type: 'ARRAY', value: {itemType: 'FLOAT32', items: []}},
    ]
    const plan = planGguf(metadata, [{name: 'x', type: 'F32', source: f32Record('x', [3], Float32Array.from([1, 2, 3]))}])
    const out = path.join(work, 'types.gguf')
    await drain(writeGguf(out, plan))
    const file = await openGguf(out)
    expect(file.header.metadata).toEqual(metadata)
    expect(file.header.dataOffset % 64).toBe(0)
    expect([...(await readFloat32(file.record(file.tensors[0]!)))]).toEqual([1, 2, 3])
    await file.close()
    expect(() => planGguf([{key: 'bad', type: 'UINT8', value: 256}], [])).toThrow(FormatError)
  })
})

describe('tokenizer', () => {
  it('parses the SentencePiece fixture: pieces, scores, types, special ids', async () => {
    const vocab = parseSentencePieceModel(await fs.readFile(spmModel))
    expect(vocab.tokens.length).toBe(128)
    expect(vocab.tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', 'er'])
    expect(vocab.types.slice(0, 4)).toEqual([2, 3, 3, 1])
    expect(vocab.tokens[127]).toBe('<0x0A>')
    expect(vocab.types[127]).toBe(4)
    expect(vocab.scores.slice(4, 6)).toEqual([-1, -2])
    expect([vocab.unk, vocab.bos, vocab.eos]).toEqual([0, 1, 2])
  })

  it('pads a short vocabulary and rejects one longer than the embedding', async () => {
    const padded = await loadVocab([spmModel], 130, {bos: 1, eos: 2})
    expect(padded.tokens.slice(128)).toEqual(['[PAD128]', '[PAD129]'])
    expect(padded.types.slice(128)).toEqual([5, 5])
    await expect(loadVocab([spmModel], 100, {bos: 1, eos: 2})).rejects.toThrow(MappingError)
    await expect(loadVocab([spmModel], 100, {bos: 1, eos: 2})).rejects.toThrow(/128 pieces but the model has 100/)
  })

  it('reads tokenizer.json (BPE) with byte and special pieces', () => {
    const v = parseTokenizerJson({
      model: {type: 'BPE', unk_token: '<unk>', vocab: {'<unk>': 0, '<s>': 1, '</s>': 2, '<0x0A>': 3, '▁a': 4}},
      added_tokens: [{id: 1, content: '<s>', special: true}, {id: 2, content: '</s>', special: true}],
    })
    expect(v.tokens).toEqual(['<unk>', '<s>', '</s>', '<0x0A>', '▁a'])
    expect(v.types).toEqual([2, 3, 3, 6, 1])
    expect(v.scores).toEqual([-0, -1, -2, -3, -4])
  })

  it('synthesises a placeholder vocabulary with unique pieces, bytes and ▁ when there is no tokenizer', async () => {
    const v = placeholderVocab(300, 1, 2)
    expect(new Set(v.tokens).size).toBe(300)
    expect(v.tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>'])
    expect(v.tokens[13]).toBe('<0x0A>')
    expect(v.tokens[258]).toBe('<0xFF>')
    expect(v.tokens[259]).toBe('▁')
    expect(v.tokens[299]).toBe('[PLACEHOLDER_299]')
    const small = placeholderVocab(128, 1, 2)
    expect(small.tokens[127]).toBe('▁')
    expect(small.tokens[13]).toBe('<0x0A>')
    const out = path.join(work, 'placeholder.gguf')
    const result = await drain(convert(fixture, 'gguf', out, {}, {dtype: 'F16'}))
    expect(result.notes.join('\n')).toMatch(/placeholder vocabulary of 128 pieces/)
    const file = await openGguf(out)
    expect(file.kv.get('openelm.vocab_placeholder')?.value).toBe(true)
    await file.close()
  })
})

// ---- malformed files, built byte by byte ------------------------------------------------------

/** A minimal valid GGUF: one KV (general.alignment = 32) and one F32 tensor "t" of 8 values. */
function buildGguf(edit: {magic?: string; version?: number; tensorCount?: bigint; kvCount?: bigint; keyLength?: bigint; nDims?: number; dims?: bigint[]; type?: number; offset?: bigint; truncateTo?: number; alignment?: number} = {}): Buffer {
  const parts: Buffer[] = []
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); parts.push(b) }
  const u64 = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(v); parts.push(b) }
  const str = (s: string, length?: bigint) => { u64(length ?? BigInt(Buffer.byteLength(s))); parts.push(Buffer.from(s)) }
  parts.push(Buffer.from(edit.magic ?? 'GGUF', 'latin1'))
  u32(edit.version ?? 3)
  u64(edit.tensorCount ?? 1n)
  u64(edit.kvCount ?? 1n)
  str('general.alignment', edit.keyLength)
  u32(4) // UINT32
  u32(edit.alignment ?? 32)
  str('t')
  const dims = edit.dims ?? [8n]
  u32(edit.nDims ?? dims.length)
  for (const d of dims) u64(d)
  u32(edit.type ?? 0)
  u64(edit.offset ?? 0n)
  const header = Buffer.concat(parts)
  const padded = Math.ceil(header.byteLength / 32) * 32
  const data = Buffer.alloc(32)
  for (let i = 0; i < 8; i++) data.writeFloatLE(i + 1, i * 4)
  const file = Buffer.concat([header, Buffer.alloc(padded - header.byteLength), data])
  return edit.truncateTo === undefined ? file : file.subarray(0, edit.truncateTo)
}

describe('malformed GGUF files', () => {
  it('the control file parses and reads', async () => {
    const p = path.join(work, 'control.gguf')
    await fs.writeFile(p, buildGguf())
    const file = await openGguf(p)
    expect([...(await readFloat32(file.record(file.tensors[0]!)))]).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    await file.close()
  })

  const cases: [string, Parameters<typeof buildGguf>[0], string, RegExp][] = [
    ['bad magic', {magic: 'GGML'}, 'gguf.magic', /not a GGUF file/],
    ['version 2', {version: 2}, 'gguf.version', /version 2 is not supported/],
    ['tensor_count past the end', {tensorCount: 1n << 40n}, 'gguf.count', /tensor_count 1099511627776/],
    ['metadata_kv_count past the end', {kvCount: 1n << 62n}, 'gguf.count', /metadata_kv_count/],
    ['string length past the end', {keyLength: 1n << 50n}, 'gguf.count', /metadata key #0 length/],
    ['dims overflow', {dims: [1n << 40n, 1n << 40n]}, 'gguf.dims_overflow', /overflow/],
    ['dimension above INT64_MAX', {dims: [1n << 63n]}, 'gguf.dims_overflow', /INT64_MAX/],
    ['too many dimensions', {nDims: 5, dims: [1n, 1n, 1n, 1n, 8n]}, 'gguf.dims', /5 dimensions/],
    ['unknown ggml type', {type: 99}, 'gguf.unknown_type', /unknown ggml type 99/],
    ['known but unsupported type', {type: 16}, 'gguf.unsupported_type', /IQ2_XXS \(16\), which this tool cannot decode \(supported: F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0/],
    ['misaligned offset', {offset: 4n}, 'gguf.misaligned', /not a multiple of the alignment 32/],
    ['data past the end', {dims: [16n]}, 'gguf.out_of_bounds', /runs past the end of the data section/],
    ['alignment not a power of two', {alignment: 24}, 'gguf.alignment', /power of two/],
    ['truncated header', {truncateTo: 12}, 'gguf.truncated', /runs past the end of the file/],
    ['truncated data', {truncateTo: 100}, 'gguf.out_of_bounds', /runs past the end/],
  ]
  for (const [label, edit, code, message] of cases) {
    it(`${label} → ${code}`, async () => {
      const p = path.join(work, `bad-${code}-${label.replace(/\W+/g, '-')}.gguf`)
      await fs.writeFile(p, buildGguf(edit))
      const error = await openGguf(p).then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(FormatError)
      expect((error as FormatError).code).toBe(code)
      expect((error as FormatError).message).toMatch(message)
      expect((error as FormatError).message).not.toContain('\n')
    })
  }

  it('the CLI reports a malformed file in one line with the format exit code', async () => {
    const p = path.join(work, 'cli-bad.gguf')
    await fs.writeFile(p, buildGguf({dims: [1n << 40n, 1n << 40n]}))
    const run = spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), 'inspect', p], {cwd: repo, encoding: 'utf8'})
    expect(run.status).toBe(3)
    expect(run.stderr.trim().split('\n')).toHaveLength(1)
    expect(run.stderr).toMatch(/^Error: .*tensor t dimensions \[1099511627776, 1099511627776\] overflow/)
  })

  it('detects GGUF by magic and rejects a non-OpenELM architecture', async () => {
    const p = path.join(work, 'control-noext')
    await fs.writeFile(p, buildGguf())
    expect(await ggufFormat.detect(p)).toBe(true)
    expect(await ggufFormat.detect(fixture)).toBe(false)
    await expect(ggufFormat.read(p)).rejects.toThrow(/general.architecture is missing|metadata key general.architecture/)
  })
})
