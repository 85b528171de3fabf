/**
 * Our GGUF reader and an independent one (test/python/gguf_read.py, written from the GGUF spec,
 * run with Debian's python3 + numpy) agree on every key, every tensor info and every tensor's
 * bytes and values, for F32, F16, BF16 and Q8_0 files and a file with every value type.
 */
import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {openGguf} from '../src/formats/gguf/read.js'
import {type GgufKv, type GgufValue} from '../src/formats/gguf/types.js'
import {planGguf, writeGguf} from '../src/formats/gguf/write.js'
import {toFloat32} from '../src/tensor/dtype.js'
import {f32Record} from '../src/tensor/record.js'
import {drain} from '../src/progress.js'

const repo = path.resolve(import.meta.dirname, '..')
const script = path.join(repo, 'test/python/gguf_read.py')
let work: string

/** Our value in the Python reader's JSON spelling (64-bit integers as strings). */
function jsonValue(value: GgufValue): unknown {
  if (typeof value === 'bigint') return value.toString()
  if (typeof value === 'object') return {itemType: value.itemType, items: value.items.map(jsonValue)}
  return value
}

interface PyTensor {name: string; type: number; dims: number[]; offset: number; raw_sha256: string; f32_sha256: string}
interface PyFile {version: number; alignment: number; data_offset: number; metadata: {key: string; type: string; value: unknown}[]; tensors: PyTensor[]}

async function compare(file: string): Promise<number> {
  const py = JSON.parse(execFileSync('/usr/bin/python3', [script, file], {encoding: 'utf8', maxBuffer: 1 << 28})) as PyFile
  const ours = await openGguf(file)
  try {
    expect(py.version).toBe(ours.header.version)
    expect(py.alignment).toBe(ours.header.alignment)
    expect(py.data_offset).toBe(ours.header.dataOffset)
    expect(py.metadata.map((kv) => kv.key)).toEqual(ours.header.metadata.map((kv) => kv.key))
    ours.header.metadata.forEach((kv: GgufKv, i) => {
      expect(py.metadata[i], kv.key).toEqual({key: kv.key, type: kv.type, value: jsonValue(kv.value)})
    })
    expect(py.tensors.length).toBe(ours.tensors.length)
    for (const [i, t] of ours.tensors.entries()) {
      const p = py.tensors[i]!
      expect({name: p.name, type: p.type, dims: p.dims, offset: p.offset}).toEqual({name: t.info.name, type: t.info.type, dims: t.info.dimensions.map(Number), offset: Number(t.info.offset)})
      const raw = await ours.readRaw(t)
      expect(createHash('sha256').update(raw).digest('hex'), t.info.name).toBe(p.raw_sha256)
      const record = ours.record(t)
      const values = toFloat32(await record.read(), record.dtype)
      expect(createHash('sha256').update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength)).digest('hex'), t.info.name).toBe(p.f32_sha256)
    }
    return ours.tensors.length
  } finally {
    await ours.close()
  }
}

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'gguf-py-'))
  await fs.cp(path.join(repo, 'fixtures/tiny-hf'), path.join(work, 'tiny'), {recursive: true})
  await fs.copyFile(path.join(repo, 'fixtures/tiny-spm/tokenizer.model'), path.join(work, 'tiny/tokenizer.model'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('independent Python reader agrees with ours', () => {
  for (const dtype of ['f32', 'f16', 'bf16', 'q8_0'] as const) {
    it(`tiny fixture, ${dtype}`, async () => {
      const out = path.join(work, `tiny-${dtype}.gguf`)
      const options = dtype === 'q8_0'
        ? {dtype: 'F16' as const, quantization: {bits: 8, groupSize: 32, mode: 'q8_0' as const}}
        : {dtype: dtype.toUpperCase() as 'F32' | 'F16' | 'BF16'}
      await drain(convert(path.join(work, 'tiny'), 'gguf', out, {}, options))
      expect(await compare(out)).toBe(38)
    })
  }

  it('every metadata value type, nested arrays, 64-bit extremes, non-default alignment', async () => {
    const metadata: GgufKv[] = [
      {key: 'general.alignment', type: 'UINT32', value: 64},
      {key: 'u8', type: 'UINT8', value: 200},
      {key: 'i8', type: 'INT8', value: -100},
      {key: 'u16', type: 'UINT16', value: 60000},
      {key: 'i16', type: 'INT16', value: -30000},
      {key: 'u32', type: 'UINT32', value: 4000000000},
      {key: 'i32', type: 'INT32', value: -2000000000},
      {key: 'f32', type: 'FLOAT32', value: Math.fround(0.1)},
      {key: 'b', type: 'BOOL', value: false},
      {key: 's', type: 'STRING', value: 'ünïcode ▁ text'},
      {key: 'u64', type: 'UINT64', value: 18446744073709551615n},
      {key: 'i64', type: 'INT64', value: -9223372036854775808n},
      {key: 'f64', type: 'FLOAT64', value: 1 / 3},
      {key: 'nested', type: 'ARRAY', value: {itemType: 'ARRAY', items: [{itemType: 'UINT64', items: [1n, 2n ** 60n]}, {itemType: 'BOOL', items: [true, false]}]}},
    ]
    const out = path.join(work, 'types.gguf')
    const tensors = [
      {name: 'a', type: 'F32' as const, source: f32Record('a', [2, 3], Float32Array.from([1, 2, 3, 4, 5, 6]))},
      {name: 'b', type: 'Q8_0' as const, source: f32Record('b', [32], Float32Array.from({length: 32}, (_, i) => i / 7 - 2))},
    ]
    await drain(writeGguf(out, planGguf(metadata, tensors)))
    expect(await compare(out)).toBe(2)
  })
})
