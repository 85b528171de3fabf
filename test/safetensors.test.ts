import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {FormatError} from '../src/errors.js'
import {openSafetensors} from '../src/formats/safetensors/read.js'
import {MAX_HEADER_BYTES} from '../src/formats/safetensors/types.js'
import {planSafetensors, writeSafetensors} from '../src/formats/safetensors/write.js'
import {type DType} from '../src/tensor/dtype.js'
import {castRecord, memoryRecord, readIntoOf, renamed, sliceRows, type TensorRecord} from '../src/tensor/record.js'

const PYTHON = '/usr/bin/python3'
const HELPER = path.join(import.meta.dirname, 'python', 'safetensors_io.py')
const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-st-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))

let counter = 0
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

/** A safetensors file built byte by byte: u64 length, header text, data, optional tail. */
function build(header: string | object, data: Uint8Array | number = 0, options: {n?: bigint; tail?: Uint8Array; headerBytes?: Uint8Array} = {}): string {
  const text = options.headerBytes ?? Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8')
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(options.n ?? BigInt(text.byteLength))
  const body = typeof data === 'number' ? new Uint8Array(data) : data
  const file = path.join(tmp, `f${counter++}.safetensors`)
  writeFileSync(file, Buffer.concat([len, text, body, options.tail ?? new Uint8Array(0)]))
  return file
}

async function failure(file: string): Promise<FormatError> {
  try {
    const st = await openSafetensors(file)
    await st.close()
  } catch (error) {
    expect(error).toBeInstanceOf(FormatError)
    expect((error as Error).message).not.toContain('\n')
    expect((error as Error).message).toContain(file)
    return error as FormatError
  }
  throw new Error(`${file} was accepted`)
}

async function accepted(file: string): Promise<string[]> {
  const st = await openSafetensors(file)
  await st.close()
  return st.tensors.map((t) => t.name)
}

const A = {dtype: 'F32', shape: [2, 2], data_offsets: [0, 16]}
const B = {dtype: 'F16', shape: [4], data_offsets: [16, 24]}

describe('safetensors validation: each rule has its own error, next to a valid control', () => {
  it('valid control: two tensors tiling 24 bytes', async () => {
    expect(await accepted(build({a: A, b: B}, 24))).toEqual(['a', 'b'])
    expect(await accepted(build({}, 0))).toEqual([])
    expect(await accepted(build({__metadata__: {format: 'pt'}, a: A}, 16))).toEqual(['a'])
  })

  const cases: [string, string, () => string, () => string][] = [
    ['truncated data', 'safetensors.truncated', () => build({a: A, b: B}, 24), () => build({a: A, b: B}, 23)],
    ['trailing bytes after the data (file length)', 'safetensors.file_length', () => build({a: A}, 16), () => build({a: A}, 16, {tail: new Uint8Array(1)})],
    ['header length 2^62', 'safetensors.header_too_large', () => build({a: A}, 16), () => build({a: A}, 16, {n: 2n ** 62n})],
    ['header length 2^64 - 1', 'safetensors.header_too_large', () => build({a: A}, 16), () => build({a: A}, 16, {n: 2n ** 64n - 1n})],
    ['header length just over the 100 MB cap', 'safetensors.header_too_large', () => build({a: A}, 16), () => build({a: A}, 16, {n: BigInt(MAX_HEADER_BYTES + 1)})],
    ['header length past the end of the file', 'safetensors.header_length', () => build({a: A}, 16), () => build({a: A}, 0, {n: 1000n})],
    ['file shorter than the 8-byte length', 'safetensors.header_too_small', () => build({}, 0), () => {
      const f = path.join(tmp, `short${counter++}.safetensors`)
      writeFileSync(f, Buffer.from([2, 0, 0, 0, 0]))
      return f
    }],
    ['header not UTF-8', 'safetensors.header_utf8', () => build({'é': A}, 16), () => build('', 16, {headerBytes: Buffer.concat([Buffer.from('{"'), Buffer.from([0xc3, 0x28]), Buffer.from(`":${JSON.stringify(A)}}`)])})],
    ['header not starting with "{"', 'safetensors.header_start', () => build(`{"a":${JSON.stringify(A)}}`, 16), () => build(` {"a":${JSON.stringify(A)}}`, 16)],
    ['header not JSON', 'safetensors.header_json', () => build(`{"a":${JSON.stringify(A)}}`, 16), () => build(`{"a":${JSON.stringify(A)},}`, 16)],
    ['header not a JSON object of entries', 'safetensors.header_entry', () => build({a: A}, 16), () => build({a: A, b: [1, 2]}, 16)],
    ['__metadata__ with a non-string value', 'safetensors.metadata', () => build({__metadata__: {format: 'pt'}, a: A}, 16), () => build({__metadata__: {format: 1}, a: A}, 16)],
    ['unknown dtype', 'safetensors.dtype', () => build({a: A}, 16), () => build({a: {...A, dtype: 'F8_E9M9'}}, 16)],
    ['lower-case dtype', 'safetensors.dtype', () => build({a: A}, 16), () => build({a: {...A, dtype: 'f32'}}, 16)],
    ['negative dimension', 'safetensors.shape', () => build({a: A}, 16), () => build({a: {...A, shape: [-2, -2]}}, 16)],
    ['end before begin', 'safetensors.offsets', () => build({a: A}, 16), () => build({a: {...A, data_offsets: [16, 0]}}, 16)],
    ['offsets beyond 2^53', 'safetensors.offsets', () => build({a: A}, 16), () => build(`{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,18446744073709551615]}}`, 16)],
    ['shape overflowing the size computation', 'safetensors.overflow', () => build({a: A}, 16), () => build({a: {...A, shape: [2 ** 31, 2 ** 31, 2 ** 31]}}, 16)],
    ['span not numel × dtype size', 'safetensors.size_mismatch', () => build({a: A}, 16), () => build({a: {...A, shape: [2, 3]}}, 16)],
    ['overlapping offsets', 'safetensors.overlap', () => build({a: A, b: B}, 24), () => build({a: A, b: {...B, data_offsets: [8, 16]}}, 16)],
    ['gap between tensors', 'safetensors.gap', () => build({a: A, b: B}, 24), () => build({a: A, b: {...B, data_offsets: [24, 32]}}, 32)],
    ['data not starting at 0', 'safetensors.gap', () => build({b: {...B, data_offsets: [0, 8]}}, 8), () => build({b: {...B, data_offsets: [8, 16]}}, 16)],
    ['duplicate tensor name', 'safetensors.duplicate_key', () => build(`{"a":${JSON.stringify(A)},"b":${JSON.stringify(B)}}`, 24), () => build(`{"a":${JSON.stringify(A)},"a":${JSON.stringify({...A, data_offsets: [16, 32]})}}`, 32)],
  ]
  for (const [label, code, control, bad] of cases) {
    it(`${label} → ${code}`, async () => {
      await accepted(control())
      const error = await failure(bad())
      expect(error.code).toBe(code)
    })
  }

  it('messages name the tensor and the numbers', async () => {
    expect((await failure(build({a: A, b: {...B, data_offsets: [8, 16]}}, 16))).message).toMatch(/tensor "b" at bytes 8\.\.16 overlaps the previous tensor \(ending at 16\)/)
    expect((await failure(build({a: A}, 16, {n: 2n ** 62n}))).message).toMatch(/header length 4611686018427387904 exceeds the 100000000-byte limit/)
    expect((await failure(build({a: {...A, dtype: 'Q4'}}, 16))).message).toMatch(/tensor "a" has unknown dtype "Q4"/)
    const truncated = build({a: A, b: B}, 23)
    const size = readFileSync(truncated).byteLength
    expect((await failure(truncated)).message).toContain(`file is truncated: the header describes ${size + 1} bytes but the file has ${size}`)
  })

  it('does not read a huge header before checking its length', async () => {
    // 2^62 would need exabytes; a quick, typed failure proves nothing was allocated for it.
    const start = Date.now()
    await failure(build({a: A}, 16, {n: 2n ** 62n}))
    expect(Date.now() - start).toBeLessThan(1000)
  })
})

describe('reading', () => {
  it('reads byte ranges of a tensor lazily', async () => {
    const data = Uint8Array.from({length: 24}, (_, i) => i)
    const st = await openSafetensors(build({a: A, b: B}, data))
    try {
      const [a, b] = st.tensors as [TensorRecord, TensorRecord]
      expect([...(await a.read())]).toEqual([...data.subarray(0, 16)])
      expect([...(await b.read(2, 6))]).toEqual([18, 19, 20, 21])
      expect(b.byteLength).toBe(8)
      expect(st.entries.get('b')).toEqual(B)
      await expect(b.read(4, 12)).rejects.toThrow(RangeError)
      await expect(readIntoOf(b)!(new Uint8Array(4), 6)).rejects.toThrow(/outside the tensor/)
    } finally {
      await st.close()
    }
  })

  it('reads a file written by an independent numpy writer bit-exact', async () => {
    const file = path.join(tmp, 'numpy.safetensors')
    const hashes = JSON.parse(execFileSync(PYTHON, [HELPER, 'write', file]).toString()) as Record<string, string>
    const st = await openSafetensors(file)
    try {
      expect(st.metadata).toEqual({format: 'np', note: 'written by hand é'})
      const got: Record<string, string> = {}
      for (const t of st.tensors) got[t.name] = sha256(await t.read())
      expect(got).toEqual(hashes)
      const byName = new Map(st.tensors.map((t) => [t.name, t]))
      expect(byName.get('w.scalar')!.shape).toEqual([])
      expect(byName.get('v.empty')!.shape).toEqual([0, 4])
      expect(byName.get('z.i64')!.dtype).toBe('I64')
      const i64 = await byName.get('z.i64')!.read()
      expect([...new BigInt64Array(i64.slice().buffer)]).toEqual([-(2n ** 62n), 1n, 2n ** 40n])
    } finally {
      await st.close()
    }
  })
})

describe('the no-allocation read path', () => {
  it('file records, renames, slices and casts read the same bytes through readInto as through read', async () => {
    const values = Float32Array.from({length: 3 * 1000}, (_, i) => Math.sin(i) * 1000)
    const file = path.join(tmp, 'fast.safetensors')
    const gen = writeSafetensors(file, [memoryRecord('w', 'F32', [3, 1000], new Uint8Array(values.buffer))])
    while (!(await gen.next()).done);
    const st = await openSafetensors(file)
    try {
      const base = st.tensors[0]!
      for (const record of [base, renamed(base, 'x'), sliceRows(base, 1, 3), castRecord(base, 'BF16'), castRecord(base, 'F16'), castRecord(castRecord(base, 'BF16'), 'F32')]) {
        const fast = readIntoOf(record)
        expect(fast).toBeDefined()
        const whole = await record.read()
        const target = new Uint8Array(record.byteLength - 8)
        await fast!(target, 4)
        expect(sha256(target)).toBe(sha256(whole.subarray(4, record.byteLength - 4)))
      }
    } finally {
      await st.close()
    }
  })

  it('a record copied with a new read() loses the fast path, so writers see the new bytes', async () => {
    const file = path.join(tmp, 'spread.safetensors')
    const gen = writeSafetensors(file, [memoryRecord('w', 'U8', [4], Uint8Array.of(1, 2, 3, 4))])
    while (!(await gen.next()).done);
    const st = await openSafetensors(file)
    const patched: TensorRecord = {...st.tensors[0]!, read: async () => Uint8Array.of(9, 9, 9, 9)}
    expect(readIntoOf(patched)).toBeUndefined()
    const out = path.join(tmp, 'spread-out.safetensors')
    const gen2 = writeSafetensors(out, [patched])
    while (!(await gen2.next()).done);
    await st.close()
    const back = await openSafetensors(out)
    expect([...(await back.tensors[0]!.read())]).toEqual([9, 9, 9, 9])
    await back.close()
  })
})

describe('writing', () => {
  const rand = (n: number, seed: number) => Uint8Array.from({length: n}, (_, i) => (Math.imul(i + 1, 2654435761) >>> (seed % 24)) & 0xff)
  const records: TensorRecord[] = [
    memoryRecord('transformer.zeta', 'F16', [3, 5], rand(30, 1)),
    memoryRecord('transformer.alpha', 'F16', [2], rand(4, 2)),
    memoryRecord('transformer.mid', 'BF16', [4, 4], rand(32, 3)),
    memoryRecord('B.upper', 'F32', [3], rand(12, 4)),
    memoryRecord('a.lower', 'F32', [1, 3], rand(12, 5)),
    memoryRecord('ids', 'I64', [2], rand(16, 6)),
    memoryRecord('mask', 'U8', [5], rand(5, 7)),
    memoryRecord('scalar', 'F32', [], rand(4, 8)),
  ]

  async function write(file: string, recs: TensorRecord[], metadata?: Record<string, string>): Promise<number> {
    const gen = writeSafetensors(file, recs, metadata)
    for (;;) {
      const step = await gen.next()
      if (step.done) return step.value
    }
  }

  it('is read back by an independent Python reader bit-exact, padded with spaces, ordered by dtype then name', async () => {
    const file = path.join(tmp, 'ours.safetensors')
    const size = await write(file, records, {format: 'pt'})
    expect(size).toBe(readFileSync(file).byteLength)
    const facts = JSON.parse(execFileSync(PYTHON, [HELPER, 'read', file]).toString())
    expect(facts.n % 8).toBe(0)
    expect(facts.endsWithBrace).toBe(true)
    expect(facts.padding).toBeLessThan(8)
    expect(facts.metadata).toEqual({format: 'pt'})
    // The reference crate sorts by dtype (I64 > F32 > BF16 > F16 > U8), then by name bytes.
    const order = ['ids', 'B.upper', 'a.lower', 'scalar', 'transformer.mid', 'transformer.alpha', 'transformer.zeta', 'mask']
    expect(facts.dataOrder).toEqual(order)
    expect(facts.keyOrder).toEqual(['__metadata__', ...order])
    for (const r of records) {
      expect(facts.tensors[r.name]).toEqual({dtype: r.dtype, shape: r.shape, sha256: sha256(await r.read())})
    }
    // And by our own reader.
    const st = await openSafetensors(file)
    expect(st.tensors.map((t) => t.name)).toEqual(order)
    await st.close()
  })

  it('pads the header with spaces to a multiple of 8 for every header length', () => {
    for (let len = 1; len <= 9; len++) {
      const plan = planSafetensors([memoryRecord('x'.repeat(len), 'U8', [1], new Uint8Array(1))], {format: 'pt'})
      const n = Number(Buffer.from(plan.header).readBigUInt64LE(0))
      expect(n % 8).toBe(0)
      expect(plan.header.byteLength).toBe(8 + n)
      const text = Buffer.from(plan.header.subarray(8)).toString('utf8')
      expect(text.trimEnd()).toBe(`{"__metadata__":{"format":"pt"},"${'x'.repeat(len)}":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`)
      expect(/^ *$/.test(text.slice(text.trimEnd().length))).toBe(true)
    }
  })

  it('gives byte-identical files for the same records, whatever their input order', async () => {
    const f1 = path.join(tmp, 'det1.safetensors')
    const f2 = path.join(tmp, 'det2.safetensors')
    await write(f1, records, {format: 'pt'})
    await write(f2, [...records].reverse(), {format: 'pt'})
    expect(sha256(readFileSync(f1))).toBe(sha256(readFileSync(f2)))
  })

  it('inGivenOrder: the records are read in the order given (a big one across several chunks) and the file is byte-identical', async () => {
    const big = memoryRecord('zz.big', 'U32', [600_000], rand(2_400_000, 9))
    const given = [records[6]!, big, ...records.slice(0, 6), records[7]!]
    const reads: string[] = []
    const spied = given.map((r): TensorRecord => ({...r, read: (s, e) => {
      reads.push(r.name)
      return r.read(s, e)
    }}))
    const inFileOrder = path.join(tmp, 'order-file.safetensors')
    const inGiven = path.join(tmp, 'order-given.safetensors')
    await write(inFileOrder, given, {format: 'pt'})
    const gen = writeSafetensors(inGiven, spied, {format: 'pt'}, undefined, {inGivenOrder: true})
    const names: string[] = []
    for (let step = await gen.next(); !step.done; step = await gen.next()) if (step.value.type === 'tensor') names.push(step.value.name)
    expect(names).toEqual(given.map((r) => r.name))
    expect([...new Set(reads)]).toEqual(given.map((r) => r.name))
    expect(reads.filter((n) => n === 'zz.big').length).toBeGreaterThan(1)
    expect(sha256(readFileSync(inGiven))).toBe(sha256(readFileSync(inFileOrder)))
  })

  it('streams a tensor larger than one chunk in pieces', async () => {
    const big = new Uint8Array(20 * 1024 * 1024 + 12)
    for (let i = 0; i < big.length; i += 4093) big[i] = i & 0xff
    const reads: number[] = []
    const rec = memoryRecord('big', 'F32', [big.length / 4], big)
    const spy: TensorRecord = {...rec, read: (s, e) => {
      reads.push((e ?? rec.byteLength) - (s ?? 0))
      return rec.read(s, e)
    }}
    const file = path.join(tmp, 'big.safetensors')
    await write(file, [spy])
    expect(reads.length).toBeGreaterThan(1)
    expect(Math.max(...reads)).toBeLessThanOrEqual(16 * 1024 * 1024)
    const st = await openSafetensors(file)
    expect(sha256(await st.tensors[0]!.read())).toBe(sha256(big))
    await st.close()
  })

  it('refuses duplicate names and records whose size does not match their shape', () => {
    expect(() => planSafetensors([records[0]!, records[0]!])).toThrow(/tensor "transformer.zeta" would be written twice/)
    const wrong: TensorRecord = {...records[1]!, byteLength: 6}
    expect(() => planSafetensors([wrong])).toThrow(FormatError)
  })

  it('fails when a record yields fewer bytes than it declares, and leaves the caller to clean up', async () => {
    const liar: TensorRecord = {name: 'short', dtype: 'F32' as DType, shape: [4], byteLength: 16, read: async () => new Uint8Array(4)}
    const file = path.join(tmp, 'short.safetensors')
    await expect(write(file, [liar])).rejects.toThrow(/produced 4 bytes, expected 16/)
  })
})
