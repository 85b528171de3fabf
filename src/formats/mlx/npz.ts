/**
 * `weights.npz`: a ZIP archive of `.npy` files, one per tensor (what `np.savez` and MLX's
 * `mx.savez` write; the older mlx-examples convention).
 *
 * Writing: members are stored uncompressed (as `np.savez` does), `.npy` format 1.0 with the header
 * padded to 64 bytes, ZIP64 records only where a size or offset needs them, a fixed timestamp so
 * the same input gives the same bytes. bfloat16 has no numpy dtype; it is written as `<V2` (raw
 * 2-byte values), exactly as MLX does, so `mx.load` reads it back as bfloat16 and numpy reads the
 * raw bits (view them as `<u2` and shift left 16 to get float32).
 * Reading: stored and deflated members (`np.savez_compressed`); stored members are read in ranges.
 * A deflated member cannot be read in ranges: opening inflates only its `.npy` header, and the
 * first read inflates it as a stream into a buffer of exactly the size its header (already
 * checked against the config) implies, refusing the first byte beyond — what the ZIP directory
 * declares is never trusted for an allocation.
 */
import {promises as fs} from 'node:fs'
import {Readable} from 'node:stream'
import {crc32, createInflateRaw} from 'node:zlib'
import {FormatError} from '../../errors.js'
import {RandomAccessFile} from '../../io/file.js'
import {type DType, dtypeSize} from '../../tensor/dtype.js'
import {formatShape, numel, readChunks, type TensorRecord} from '../../tensor/record.js'
import {type ProgressEvent} from '../types.js'

const NPY_MAGIC = Uint8Array.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59])
/** numpy ≥ 1.17 pads `.npy` headers so data starts on a 64-byte boundary. */
const NPY_ALIGN = 64
/** The largest `.npy` header we parse (numpy itself refuses headers over 10,000 bytes by default). */
const MAX_NPY_HEADER = 65_536
/** How far from the end the end-of-central-directory record may start (22 bytes + a comment of at most 65,535). */
const MAX_EOCD_SEARCH = 22 + 65_535
/** ZIP sentinel meaning "see the ZIP64 extra field". */
const U32_MAX = 0xffffffff
const U16_MAX = 0xffff
/** 1980-01-01 00:00:00 in MS-DOS date/time: fixed so output bytes are deterministic. */
const DOS_TIME = 0
const DOS_DATE = (0 << 9) | (1 << 5) | 1
/** Compressed bytes fed to the inflater at a time. */
const INFLATE_INPUT_CHUNK = 1 << 20
/** Node's largest Buffer; a deflated tensor must fit one (it is held whole, the format forces it). */
const MAX_INFLATED_BYTES = 2 ** 32 - 1

const SIG_LOCAL = 0x04034b50
const SIG_CENTRAL = 0x02014b50
const SIG_EOCD = 0x06054b50
const SIG_ZIP64_EOCD = 0x06064b50
const SIG_ZIP64_LOCATOR = 0x07064b50

/** numpy array-protocol type strings; `V2` is MLX's spelling of bfloat16. */
const DESCR_OF: Partial<Record<DType, string>> = {
  F64: '<f8', F32: '<f4', F16: '<f2', BF16: '<V2', I64: '<i8', I32: '<i4', I16: '<i2', I8: '|i1', U8: '|u1', U16: '<u2', U32: '<u4', U64: '<u8', BOOL: '|b1',
}
const DTYPE_OF: Record<string, DType> = Object.fromEntries(
  Object.entries(DESCR_OF).flatMap(([dtype, descr]) => [[descr, dtype as DType], [descr.replace(/^[<|]/, ''), dtype as DType], [descr.replace(/^</, '|'), dtype as DType]]),
)

// ---- .npy ------------------------------------------------------------------------------------

export function npyHeader(dtype: DType, shape: readonly number[]): Uint8Array {
  const descr = DESCR_OF[dtype]
  if (!descr) throw new FormatError('npy.dtype', `dtype ${dtype} has no .npy spelling`)
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`
  let dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`
  const unpadded = NPY_MAGIC.length + 2 + 2 + dict.length + 1
  dict += ' '.repeat((NPY_ALIGN - (unpadded % NPY_ALIGN)) % NPY_ALIGN) + '\n'
  const out = new Uint8Array(NPY_MAGIC.length + 4 + dict.length)
  out.set(NPY_MAGIC, 0)
  out[6] = 1
  out[7] = 0
  new DataView(out.buffer).setUint16(8, dict.length, true)
  out.set(Buffer.from(dict, 'latin1'), 10)
  return out
}

export interface NpyInfo {
  dtype: DType
  shape: number[]
  /** Bytes before the data. */
  headerLength: number
}

/** Parse a `.npy` header from the first bytes of a member. */
export function parseNpyHeader(bytes: Uint8Array, where: string): NpyInfo {
  const fail = (message: string): never => {
    throw new FormatError('npy.header', `${where}: ${message}`)
  }
  if (bytes.length < 10 || !NPY_MAGIC.every((b, i) => bytes[i] === b)) fail('not a .npy array (bad magic)')
  const major = bytes[6]!
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let len: number
  let start: number
  if (major === 1) [len, start] = [view.getUint16(8, true), 10]
  else if (major === 2 || major === 3) {
    if (bytes.length < 12) fail('truncated header')
    ;[len, start] = [view.getUint32(8, true), 12]
  } else return fail(`unsupported .npy version ${major}`)
  if (len > MAX_NPY_HEADER) fail(`header of ${len} bytes exceeds the ${MAX_NPY_HEADER}-byte limit`)
  if (start + len > bytes.length) fail('truncated header')
  const text = Buffer.from(bytes.subarray(start, start + len)).toString(major === 3 ? 'utf8' : 'latin1')
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]+)['"]/.exec(text)?.[1]
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(text)?.[1]
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(text)?.[1]
  if (descr === undefined || fortran === undefined || shapeText === undefined) return fail(`header ${JSON.stringify(text.trim())} lacks descr, fortran_order or shape`)
  const dtype = DTYPE_OF[descr]
  if (!dtype) return fail(`unsupported dtype '${descr}' (big-endian, object or structured arrays are not model weights)`)
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s !== '').map((s) => {
    const n = Number(s.replace(/L$/, ''))
    if (!Number.isSafeInteger(n) || n < 0) fail(`invalid shape (${shapeText})`)
    return n
  })
  if (fortran === 'True' && shape.filter((d) => d > 1).length > 1) fail('Fortran-ordered arrays are not supported')
  return {dtype, shape, headerLength: start + len}
}

// ---- writing -----------------------------------------------------------------------------------

interface PlannedMember {
  record: TensorRecord
  name: Buffer
  header: Uint8Array
  size: number
  offset: number
  zip64: boolean
}

function localHeader(m: PlannedMember, crc: number): Buffer {
  const extra = m.zip64 ? 20 : 0
  const b = Buffer.alloc(30 + m.name.length + extra)
  b.writeUInt32LE(SIG_LOCAL, 0)
  b.writeUInt16LE(m.zip64 ? 45 : 20, 4)
  b.writeUInt16LE(0, 6) // flags
  b.writeUInt16LE(0, 8) // stored
  b.writeUInt16LE(DOS_TIME, 10)
  b.writeUInt16LE(DOS_DATE, 12)
  b.writeUInt32LE(crc, 14)
  b.writeUInt32LE(m.zip64 ? U32_MAX : m.size, 18)
  b.writeUInt32LE(m.zip64 ? U32_MAX : m.size, 22)
  b.writeUInt16LE(m.name.length, 26)
  b.writeUInt16LE(extra, 28)
  m.name.copy(b, 30)
  if (m.zip64) {
    const e = 30 + m.name.length
    b.writeUInt16LE(0x0001, e)
    b.writeUInt16LE(16, e + 2)
    b.writeBigUInt64LE(BigInt(m.size), e + 4)
    b.writeBigUInt64LE(BigInt(m.size), e + 12)
  }
  return b
}

function centralHeader(m: PlannedMember, crc: number): Buffer {
  const bigSize = m.size >= U32_MAX
  const bigOffset = m.offset >= U32_MAX
  const extraLen = (bigSize ? 16 : 0) + (bigOffset ? 8 : 0)
  const extra = extraLen > 0 ? 4 + extraLen : 0
  const b = Buffer.alloc(46 + m.name.length + extra)
  b.writeUInt32LE(SIG_CENTRAL, 0)
  b.writeUInt16LE(extra ? 45 : 20, 4) // made by (MS-DOS attributes)
  b.writeUInt16LE(extra ? 45 : 20, 6)
  b.writeUInt16LE(0, 8)
  b.writeUInt16LE(0, 10)
  b.writeUInt16LE(DOS_TIME, 12)
  b.writeUInt16LE(DOS_DATE, 14)
  b.writeUInt32LE(crc, 16)
  b.writeUInt32LE(bigSize ? U32_MAX : m.size, 20)
  b.writeUInt32LE(bigSize ? U32_MAX : m.size, 24)
  b.writeUInt16LE(m.name.length, 28)
  b.writeUInt16LE(extra, 30)
  // comment length, disk number, internal and external attributes stay 0
  b.writeUInt32LE(bigOffset ? U32_MAX : m.offset, 42)
  m.name.copy(b, 46)
  if (extra) {
    let e = 46 + m.name.length
    b.writeUInt16LE(0x0001, e)
    b.writeUInt16LE(extraLen, e + 2)
    e += 4
    if (bigSize) {
      b.writeBigUInt64LE(BigInt(m.size), e)
      b.writeBigUInt64LE(BigInt(m.size), e + 8)
      e += 16
    }
    if (bigOffset) b.writeBigUInt64LE(BigInt(m.offset), e)
  }
  return b
}

function endRecords(entries: number, cdOffset: number, cdSize: number): Buffer {
  const zip64 = entries >= U16_MAX || cdOffset >= U32_MAX || cdSize >= U32_MAX
  const parts: Buffer[] = []
  if (zip64) {
    const z = Buffer.alloc(56 + 20)
    z.writeUInt32LE(SIG_ZIP64_EOCD, 0)
    z.writeBigUInt64LE(44n, 4)
    z.writeUInt16LE(45, 12)
    z.writeUInt16LE(45, 14)
    z.writeBigUInt64LE(BigInt(entries), 24)
    z.writeBigUInt64LE(BigInt(entries), 32)
    z.writeBigUInt64LE(BigInt(cdSize), 40)
    z.writeBigUInt64LE(BigInt(cdOffset), 48)
    z.writeUInt32LE(SIG_ZIP64_LOCATOR, 56)
    z.writeBigUInt64LE(BigInt(cdOffset + cdSize), 64)
    z.writeUInt32LE(1, 72)
    parts.push(z)
  }
  const e = Buffer.alloc(22)
  e.writeUInt32LE(SIG_EOCD, 0)
  e.writeUInt16LE(Math.min(entries, U16_MAX), 8)
  e.writeUInt16LE(Math.min(entries, U16_MAX), 10)
  e.writeUInt32LE(Math.min(cdSize, U32_MAX), 12)
  e.writeUInt32LE(Math.min(cdOffset, U32_MAX), 16)
  parts.push(e)
  return Buffer.concat(parts)
}

/**
 * Stream `records` into a new `.npz` at `file` (which must not exist), one `<name>.npy` member
 * each, in the given order. Yields one event per tensor; returns the file size.
 */
export async function* writeNpz(
  file: string,
  records: readonly TensorRecord[],
  progress: {index: number; total: number; bytesDone: number; totalBytes: number},
): AsyncGenerator<ProgressEvent, number> {
  const names = new Set<string>()
  let offset = 0
  const members: PlannedMember[] = records.map((record) => {
    if (names.has(record.name)) throw new FormatError('npz.duplicate', `tensor "${record.name}" would be written twice`)
    names.add(record.name)
    const name = Buffer.from(`${record.name}.npy`, 'utf8')
    const header = npyHeader(record.dtype, record.shape)
    const size = header.length + record.byteLength
    // A member needs ZIP64 in its local header when its size does not fit 32 bits.
    const m: PlannedMember = {record, name, header, size, offset, zip64: size >= U32_MAX}
    offset += 30 + name.length + (m.zip64 ? 20 : 0) + size
    return m
  })
  const handle = await fs.open(file, 'wx')
  let position = 0
  const write = async (bytes: Uint8Array) => {
    let done = 0
    while (done < bytes.byteLength) {
      const {bytesWritten} = await handle.write(bytes, done, bytes.byteLength - done, position + done)
      done += bytesWritten
    }
    position += bytes.byteLength
  }
  let {index, bytesDone} = progress
  const crcs: number[] = []
  try {
    for (const m of members) {
      if (position !== m.offset) throw new FormatError('npz.plan', `internal: member ${m.record.name} at ${position}, planned ${m.offset}`)
      await write(localHeader(m, 0))
      let crc = crc32(m.header)
      await write(m.header)
      let written = 0
      for await (const chunk of readChunks(m.record)) {
        crc = crc32(chunk, crc)
        await write(chunk)
        written += chunk.byteLength
        yield {type: 'bytes', bytesDone: bytesDone + written, totalBytes: progress.totalBytes}
      }
      if (written !== m.record.byteLength) throw new FormatError('npz.short_read', `tensor "${m.record.name}" produced ${written} bytes, expected ${m.record.byteLength}`)
      const crcBytes = Buffer.alloc(4)
      crcBytes.writeUInt32LE(crc >>> 0, 0)
      await handle.write(crcBytes, 0, 4, m.offset + 14)
      crcs.push(crc >>> 0)
      bytesDone += written
      yield {type: 'tensor', name: m.record.name, index: ++index, total: progress.total, bytesDone, totalBytes: progress.totalBytes}
    }
    const cdOffset = position
    const central = Buffer.concat(members.map((m, i) => centralHeader(m, crcs[i]!)))
    await write(central)
    await write(endRecords(members.length, cdOffset, central.length))
    await handle.close()
  } catch (error) {
    await handle.close().catch(() => undefined)
    throw error
  }
  return position
}

// ---- reading -----------------------------------------------------------------------------------

export interface NpzFile {
  path: string
  /** Member names without `.npy`, in archive order. */
  tensors: TensorRecord[]
  /** Compression methods seen ("stored", "deflate"). */
  methods: string[]
  close(): Promise<void>
}

interface CentralEntry {
  name: string
  method: number
  crc: number
  compressedSize: number
  size: number
  localOffset: number
}

function readZip64Extra(extra: Buffer, want: {size: boolean; compressed: boolean; offset: boolean}, where: string): {size?: number; compressed?: number; offset?: number} {
  let p = 0
  while (p + 4 <= extra.length) {
    const id = extra.readUInt16LE(p)
    const len = extra.readUInt16LE(p + 2)
    if (id === 0x0001) {
      let q = p + 4
      const take = () => {
        if (q + 8 > p + 4 + len) throw new FormatError('npz.zip64', `${where}: ZIP64 extra field too short`)
        const v = extra.readBigUInt64LE(q)
        q += 8
        if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError('npz.zip64', `${where}: ZIP64 value ${v} too large`)
        return Number(v)
      }
      return {size: want.size ? take() : undefined, compressed: want.compressed ? take() : undefined, offset: want.offset ? take() : undefined}
    }
    p += 4 + len
  }
  throw new FormatError('npz.zip64', `${where}: a size or offset is 0xFFFFFFFF but there is no ZIP64 extra field`)
}

/**
 * Inflate a raw-deflate member as a stream: the first `want` bytes (`exact` false), or exactly
 * `want` bytes (`exact` true: fewer, or any byte beyond, is an error). Memory: `want` plus one chunk.
 */
async function inflateMember(file: RandomAccessFile, offset: number, compressedSize: number, want: number, exact: boolean, fail: (message: string) => never, crc?: number): Promise<Uint8Array> {
  const out = new Uint8Array(want)
  let produced = 0
  let beyond = false
  const input = Readable.from((async function* () {
    for (let p = 0; p < compressedSize; p += INFLATE_INPUT_CHUNK) yield Buffer.from(await file.read(offset + p, Math.min(INFLATE_INPUT_CHUNK, compressedSize - p)))
  })())
  const inflater = createInflateRaw()
  input.on('error', (error) => inflater.destroy(error))
  input.pipe(inflater)
  try {
    for await (const chunk of inflater as AsyncIterable<Buffer>) {
      const take = Math.min(chunk.byteLength, want - produced)
      out.set(chunk.subarray(0, take), produced)
      produced += take
      if (take < chunk.byteLength) beyond = true
      if (produced === want && (beyond || !exact)) break
    }
  } catch (error) {
    if (error instanceof FormatError) throw error
    return fail(`does not inflate: ${(error as Error).message}`)
  } finally {
    input.destroy()
    inflater.destroy()
  }
  if (exact && beyond) fail(`inflates past the ${want} bytes its directory entry and .npy header declare`)
  if (produced < want && (exact || produced === 0)) fail(`inflates to ${produced} bytes, expected ${want}`)
  // Raw deflate has no checksum of its own: the directory's CRC-32 is what catches damaged streams.
  if (exact && crc !== undefined && crc32(out) >>> 0 !== crc) fail(`fails its CRC-32 check (damaged compressed data)`)
  return produced < want ? out.subarray(0, produced) : out
}

/** Open a `.npz`: parse the central directory and each member's `.npy` header; data stays on disk. */
export async function openNpz(p: string): Promise<NpzFile> {
  const file = await RandomAccessFile.open(p)
  const fail = (code: string, message: string): never => {
    throw new FormatError(`npz.${code}`, `${p}: ${message}`, {path: p})
  }
  try {
    const tailLength = Math.min(file.size, MAX_EOCD_SEARCH)
    const tail = Buffer.from(await file.read(file.size - tailLength, tailLength))
    let eocd = -1
    for (let i = tail.length - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === SIG_EOCD) {
        eocd = i
        break
      }
    }
    if (eocd < 0) fail('not_zip', 'not a ZIP archive (no end-of-central-directory record)')
    let entries = tail.readUInt16LE(eocd + 10)
    let cdSize = tail.readUInt32LE(eocd + 12)
    let cdOffset = tail.readUInt32LE(eocd + 16)
    const eocdAbs = file.size - tailLength + eocd
    if ((entries === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) && eocdAbs >= 20) {
      const loc = Buffer.from(await file.read(eocdAbs - 20, 20))
      if (loc.readUInt32LE(0) === SIG_ZIP64_LOCATOR) {
        const z64Offset = Number(loc.readBigUInt64LE(8))
        const z = Buffer.from(await file.read(z64Offset, 56))
        if (z.readUInt32LE(0) !== SIG_ZIP64_EOCD) fail('zip64', 'ZIP64 end-of-central-directory record not found where the locator says')
        entries = Number(z.readBigUInt64LE(32))
        cdSize = Number(z.readBigUInt64LE(40))
        cdOffset = Number(z.readBigUInt64LE(48))
      }
    }
    if (cdOffset + cdSize > file.size) fail('truncated', `central directory (${cdSize} bytes at ${cdOffset}) runs past the end of the file (${file.size} bytes)`)
    const cd = Buffer.from(await file.read(cdOffset, cdSize))
    const central: CentralEntry[] = []
    let q = 0
    for (let i = 0; i < entries; i++) {
      if (q + 46 > cd.length || cd.readUInt32LE(q) !== SIG_CENTRAL) fail('central', `central directory entry ${i} is malformed`)
      const flags = cd.readUInt16LE(q + 8)
      const method = cd.readUInt16LE(q + 10)
      let compressedSize = cd.readUInt32LE(q + 20)
      let size = cd.readUInt32LE(q + 24)
      const nameLen = cd.readUInt16LE(q + 28)
      const extraLen = cd.readUInt16LE(q + 30)
      const commentLen = cd.readUInt16LE(q + 32)
      let localOffset = cd.readUInt32LE(q + 42)
      const name = cd.subarray(q + 46, q + 46 + nameLen).toString('utf8')
      if (flags & 1) fail('encrypted', `member ${name} is encrypted`)
      if (size === U32_MAX || compressedSize === U32_MAX || localOffset === U32_MAX) {
        const z = readZip64Extra(cd.subarray(q + 46 + nameLen, q + 46 + nameLen + extraLen), {size: size === U32_MAX, compressed: compressedSize === U32_MAX, offset: localOffset === U32_MAX}, `${p}: ${name}`)
        size = z.size ?? size
        compressedSize = z.compressed ?? compressedSize
        localOffset = z.offset ?? localOffset
      }
      central.push({name, method, crc: cd.readUInt32LE(q + 16), compressedSize, size, localOffset})
      q += 46 + nameLen + extraLen + commentLen
    }
    const methods = new Set<string>()
    const tensors: TensorRecord[] = []
    let inflated: {name: string; bytes: Uint8Array} | undefined
    for (const entry of central) {
      if (!entry.name.endsWith('.npy')) fail('member', `member ${entry.name} is not a .npy array`)
      if (entry.method !== 0 && entry.method !== 8) fail('method', `member ${entry.name} uses compression method ${entry.method} (only stored and deflate are supported)`)
      methods.add(entry.method === 0 ? 'stored' : 'deflate')
      const local = Buffer.from(await file.read(entry.localOffset, 30))
      if (local.readUInt32LE(0) !== SIG_LOCAL) fail('local', `member ${entry.name}: no local header at offset ${entry.localOffset}`)
      const dataOffset = entry.localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28)
      if (dataOffset + entry.compressedSize > file.size) fail('truncated', `member ${entry.name} runs past the end of the file`)
      const where = `${p}: ${entry.name}`
      const name = entry.name.slice(0, -'.npy'.length)
      let member: (start: number, end: number) => Promise<Uint8Array>
      if (entry.method === 0) {
        if (entry.size !== entry.compressedSize) fail('sizes', `stored member ${entry.name} has different compressed and uncompressed sizes`)
        member = (start, end) => file.read(dataOffset + start, end - start)
      } else {
        const inflate = (want: number, exact: boolean) => inflateMember(file, dataOffset, entry.compressedSize, want, exact, (message) => fail('inflate', `member ${entry.name} ${message}`), entry.crc)
        member = async (start, end) => {
          if (inflated?.name !== entry.name) {
            if (entry.size > MAX_INFLATED_BYTES) fail('inflate', `member ${entry.name} would inflate to ${entry.size} bytes, above the ${MAX_INFLATED_BYTES}-byte limit of one tensor`)
            inflated = undefined // drop the previous member before inflating the next
            inflated = {name: entry.name, bytes: await inflate(entry.size, true)}
          }
          return inflated.bytes.subarray(start, end)
        }
      }
      const headLength = Math.min(entry.size, 10 + MAX_NPY_HEADER)
      // A deflated member's header comes from inflating its first bytes only; reads inflate it whole.
      const headBytes = entry.method === 0 ? await member(0, headLength) : await inflateMember(file, dataOffset, entry.compressedSize, headLength, false, (message) => fail('inflate', `member ${entry.name} ${message}`))
      const info = parseNpyHeader(headBytes, where)
      const byteLength = numel(info.shape) * dtypeSize(info.dtype)
      if (info.headerLength + byteLength !== entry.size) {
        fail('size', `member ${entry.name}: ${info.dtype} ${formatShape(info.shape)} needs ${byteLength} bytes after the header, the member has ${entry.size - info.headerLength}`)
      }
      const base = info.headerLength
      tensors.push({
        name, dtype: info.dtype, shape: info.shape, byteLength,
        read: (start = 0, end = byteLength) => member(base + start, base + end),
      })
    }
    return {path: p, tensors, methods: [...methods], close: () => file.close()}
  } catch (error) {
    await file.close()
    throw error
  }
}
