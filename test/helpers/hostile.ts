/**
 * Generators of minimal hostile files for the regression tests of issue 17: each starts from a
 * valid seed written by the tool's own writers (scripts/fuzz/seeds.ts) and changes exactly one
 * thing, so a test can show the valid control opening and the hostile file being refused.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {deflateRawSync, inflateRawSync} from 'node:zlib'
import {buildZip, makeSeeds, readStoredZip, type Seed, type ZipMember} from '../../scripts/fuzz/seeds.js'

export {buildZip, readStoredZip}

/** Every fuzz seed under `root`, by name. */
export async function seedsIn(root: string): Promise<Map<string, Seed>> {
  return new Map((await makeSeeds(root)).map((s) => [s.name, s]))
}

/** A copy of a seed folder at `to` with `file` replaced by `edit(bytes)`; returns the path to open. */
export async function variant(seed: Seed, to: string, file: string, edit: (b: Buffer) => Buffer | string): Promise<string> {
  await fs.cp(seed.dir, to, {recursive: true})
  const p = path.join(to, file)
  await fs.writeFile(p, edit(await fs.readFile(p)))
  return path.join(to, seed.open)
}

/** config.json with one field set to raw JSON text (so 2^64, NaN and friends are written as a file would hold them). */
export function configField(field: string, rawValue: string): (b: Buffer) => string {
  return (b) => {
    const json = JSON.parse(b.toString('utf8')) as Record<string, unknown>
    json[field] = '@@VALUE@@'
    return JSON.stringify(json, null, 2).replace('"@@VALUE@@"', rawValue)
  }
}

/** A safetensors file with its header JSON transformed (length field recomputed, data kept). */
export function safetensorsHeader(edit: (header: Record<string, Record<string, unknown>>) => unknown): (b: Buffer) => Buffer {
  return (b) => {
    const n = Number(b.readBigUInt64LE(0))
    let text = JSON.stringify(edit(JSON.parse(b.subarray(8, 8 + n).toString('utf8'))))
    text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8)
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(text)))
    return Buffer.concat([len, Buffer.from(text), b.subarray(8 + n)])
  }
}

/**
 * A deflated npz whose first member is a valid `.npy` of the size its directory declares, but
 * whose deflate stream goes on for `extraBytes` more zeros (a bomb: 64 MiB compress to ~64 KiB).
 */
export function npzOverlongMember(extraBytes: number): (b: Buffer) => Buffer {
  return (b) => {
    const members = inflatedMembers(b)
    const first = members[0]!
    const stream = deflateRawSync(Buffer.concat([first.data, Buffer.alloc(extraBytes)]))
    return replaceFirstStream(buildZip(members, true), stream, first.data.byteLength)
  }
}

/**
 * A deflated npz whose first member declares `declared` bytes and is a stream of `actual` zeros
 * (the 1.6 MB → 3.4 GB finding: the reader used to allocate and inflate what the directory declares).
 */
export function npzZeroBomb(declared: number, actual: number): (b: Buffer) => Buffer {
  return (b) => replaceFirstStream(buildZip(inflatedMembers(b), true), deflateRawSync(Buffer.alloc(actual)), declared)
}

/** A deflated npz with one byte of its first member's compressed stream changed (CRC must catch it). */
export function npzDamagedStream(offsetInStream: number): (b: Buffer) => Buffer {
  return (b) => {
    const c = Buffer.from(b)
    const at = 30 + c.readUInt16LE(26) + c.readUInt16LE(28) + offsetInStream
    c[at] = c[at]! ^ 0x10
    return c
  }
}

/** The members of an npz whose entries are deflated or stored (local headers, no data descriptors). */
export function inflatedMembers(b: Buffer): ZipMember[] {
  const out: ZipMember[] = []
  let p = 0
  while (p + 30 <= b.length && b.readUInt32LE(p) === 0x04034b50) {
    const method = b.readUInt16LE(p + 8)
    const csize = b.readUInt32LE(p + 18)
    const name = b.subarray(p + 30, p + 30 + b.readUInt16LE(p + 26)).toString('utf8')
    const start = p + 30 + b.readUInt16LE(p + 26) + b.readUInt16LE(p + 28)
    const raw = b.subarray(start, start + csize)
    out.push({name, data: method === 8 ? inflateRawSync(raw) : Buffer.from(raw)})
    p = start + csize
  }
  return out
}


/** Swap the first member's compressed stream of a single-disk ZIP, fixing sizes and offsets. */
function replaceFirstStream(zip: Buffer, stream: Buffer, declaredSize: number): Buffer {
  const nameLen = zip.readUInt16LE(26)
  const extraLen = zip.readUInt16LE(28)
  const oldLen = zip.readUInt32LE(18)
  const header = Buffer.from(zip.subarray(0, 30 + nameLen + extraLen))
  header.writeUInt32LE(stream.length, 18)
  header.writeUInt32LE(declaredSize, 22)
  const rest = Buffer.from(zip.subarray(header.length + oldLen))
  const delta = stream.length - oldLen
  const eocd = rest.length - 22
  let q = rest.readUInt32LE(eocd + 16) - header.length - oldLen
  for (let i = 0; i < rest.readUInt16LE(eocd + 10); i++) {
    if (i === 0) {
      rest.writeUInt32LE(stream.length, q + 20)
      rest.writeUInt32LE(declaredSize, q + 24)
    } else rest.writeUInt32LE(rest.readUInt32LE(q + 42) + delta, q + 42)
    q += 46 + rest.readUInt16LE(q + 28) + rest.readUInt16LE(q + 30) + rest.readUInt16LE(q + 32)
  }
  rest.writeUInt32LE(rest.readUInt32LE(eocd + 16) + delta, eocd + 16)
  return Buffer.concat([header, stream, rest])
}

/** A torch archive with data.pkl edited by `edit` (rebuilt with CRCs right and torch's 64-byte alignment). */
export function torchPickle(edit: (pkl: string) => string): (b: Buffer) => Buffer {
  return (b) => buildZip(readStoredZip(b).map((m) => (m.name.endsWith('/data.pkl') ? {name: m.name, data: Buffer.from(edit(Buffer.from(m.data).toString('latin1')), 'latin1')} : m)), false, 64)
}

/** A torch archive whose local header for `record` claims `delta` more bytes of extra field (data shifted). */
export function torchShiftedRecord(record: RegExp, delta: number): (b: Buffer) => Buffer {
  return (b) => {
    const c = Buffer.from(b)
    for (let p = 0; p + 30 <= c.length; p++) {
      if (c.readUInt32LE(p) !== 0x04034b50) continue
      const name = c.subarray(p + 30, p + 30 + c.readUInt16LE(p + 26)).toString('utf8')
      if (record.test(name)) {
        c.writeUInt16LE(c.readUInt16LE(p + 28) + delta, p + 28)
        return c
      }
    }
    throw new Error(`no record matching ${record}`)
  }
}

/** GGUF tensor-info ggml type of `tensor` set to `type` (in place: the data is unchanged). */
export function ggufTensorType(tensor: string, type: number): (b: Buffer) => Buffer {
  return (b) => {
    const c = Buffer.from(b)
    const name = Buffer.from(tensor)
    // A tensor info is: u64 name length, name, u32 n_dims, u64 dims..., u32 type, u64 offset.
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(name.length))
    const at = c.indexOf(Buffer.concat([len, name]))
    if (at < 0) throw new Error(`no tensor info ${tensor}`)
    const dimsAt = at + 8 + name.length
    const nDims = c.readUInt32LE(dimsAt)
    c.writeUInt32LE(type, dimsAt + 4 + 8 * nDims)
    return c
  }
}

/** A GGUF scalar FLOAT32 metadata value `key` overwritten in place. */
export function ggufFloat(key: string, value: number): (b: Buffer) => Buffer {
  return (b) => {
    const c = Buffer.from(b)
    const name = Buffer.from(key)
    const at = c.indexOf(name)
    if (at < 0) throw new Error(`no key ${key}`)
    if (c.readUInt32LE(at + name.length) !== 6) throw new Error(`${key} is not FLOAT32`)
    c.writeFloatLE(value, at + name.length + 4)
    return c
  }
}

/** A GGUF FLOAT64 array item `index` of `key` overwritten in place. */
export function ggufF64Item(key: string, index: number, value: number): (b: Buffer) => Buffer {
  return (b) => {
    const c = Buffer.from(b)
    const name = Buffer.from(key)
    const at = c.indexOf(name)
    if (at < 0) throw new Error(`no key ${key}`)
    // type ARRAY (9), item type FLOAT64 (12), u64 count, items
    c.writeDoubleLE(value, at + name.length + 4 + 4 + 8 + 8 * index)
    return c
  }
}
