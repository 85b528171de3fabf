/**
 * The uncompressed ZIP container `torch.save` writes (PyTorch's miniz-based stream writer):
 * stored entries, 64-byte aligned data (padded with an "FB" extra field of 'Z' bytes), a data
 * descriptor after each entry, ZIP64 records past 4 GiB. The reader validates every structure
 * before trusting it; the writer mirrors torch's layout byte for byte where it can.
 */
import {crc32} from 'node:zlib'
import {FormatError, quote} from '../../errors.js'
import {FileWriter, RandomAccessFile} from '../../io/file.js'

/** Spec field names, kept as the ZIP APPNOTE spells them. */
const SIG_LOCAL = 0x04034b50
const SIG_CENTRAL = 0x02014b50
const SIG_EOCD = 0x06054b50
const SIG_EOCD64 = 0x06064b50
const SIG_LOCATOR64 = 0x07064b50
const SIG_DESCRIPTOR = 0x08074b50
const LOCAL_HEADER_BYTES = 30
const CENTRAL_HEADER_BYTES = 46
const EOCD_BYTES = 22
const EOCD64_BYTES = 56
const LOCATOR64_BYTES = 20
const ZIP64_EXTRA_ID = 0x0001
/** torch's padding extra field id ("FB") and fill byte ('Z'). */
const PAD_EXTRA_ID = 0x4246
const PAD_BYTE = 0x5a
/** torch aligns record data to 64 bytes (for mmap and AVX-512 loads). */
export const RECORD_ALIGNMENT = 64
const U32_MAX = 0xffffffff
const U16_MAX = 0xffff
/** Longest EOCD comment the format allows; bounds the backwards scan for the EOCD. */
const MAX_COMMENT_BYTES = 0xffff
/** A torch archive has a handful of records per tensor; more than this is not a checkpoint. */
export const MAX_ENTRIES = 1_000_000
/** Central directories of real checkpoints are kilobytes to a few MB; refuse absurd ones before reading. */
export const MAX_CENTRAL_DIRECTORY_BYTES = 256 * 1024 * 1024
/** Flags torch sets: bit 3 (sizes in a data descriptor) and bit 11 (UTF-8 names). */
const TORCH_FLAGS = 0x0808
/** "version made by" of torch's ZIP64 end record (3.0, Unix) and "version needed" (4.5, ZIP64). */
const ZIP64_MADE_BY = 0x031e
const ZIP64_NEEDED = 0x002d

export interface ZipEntry {
  name: string
  /** Offset of the local header. */
  headerOffset: number
  /** Offset of the first data byte. */
  dataOffset: number
  size: number
  crc32: number
}

function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8)
}

function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 0x1000000
}

/** u64 as a number, refusing values past 2^53 (no real file is that large). */
function u64(b: Uint8Array, o: number, what: string, file: string): number {
  const value = BigInt(u32(b, o)) + (BigInt(u32(b, o + 4)) << 32n)
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError('zip.range', `${file}: ${what} ${value} is out of range`, {path: file})
  return Number(value)
}

/** An opened archive: validated entries with random access to their bytes. */
export class ZipReader {
  private constructor(readonly file: RandomAccessFile, readonly entries: Map<string, ZipEntry>) {}

  get path(): string {
    return this.file.path
  }

  static async open(p: string): Promise<ZipReader> {
    const file = await RandomAccessFile.open(p)
    try {
      return new ZipReader(file, await readDirectory(file))
    } catch (error) {
      await file.close()
      throw error
    }
  }

  entry(name: string): ZipEntry {
    const e = this.entries.get(name)
    if (!e) throw new FormatError('zip.missing_record', `${this.path}: the archive has no record ${quote(name)}`, {path: this.path, record: name})
    return e
  }

  /** Bytes [start, end) of a record. */
  async read(entry: ZipEntry, start = 0, end = entry.size): Promise<Uint8Array> {
    if (start < 0 || end > entry.size || start > end) {
      throw new FormatError('zip.range', `${this.path}: read [${start}, ${end}) outside record ${quote(entry.name)} (${entry.size} bytes)`, {path: this.path})
    }
    return this.file.read(entry.dataOffset + start, end - start)
  }

  /** Fill `target` with bytes [start, start + target.byteLength) of a record: one positional read, no allocation. */
  async readInto(entry: ZipEntry, target: Uint8Array, start = 0): Promise<void> {
    const end = start + target.byteLength
    if (start < 0 || end > entry.size) {
      throw new FormatError('zip.range', `${this.path}: read [${start}, ${end}) outside record ${quote(entry.name)} (${entry.size} bytes)`, {path: this.path})
    }
    await this.file.readInto(target, entry.dataOffset + start)
  }

  /** A whole (small) record, CRC-checked. */
  async readChecked(entry: ZipEntry): Promise<Uint8Array> {
    const bytes = await this.read(entry)
    if (crc32(bytes) !== entry.crc32) {
      throw new FormatError('zip.crc', `${this.path}: record ${quote(entry.name)} fails its CRC-32 check (corrupt archive)`, {path: this.path, record: entry.name})
    }
    return bytes
  }

  close(): Promise<void> {
    return this.file.close()
  }
}

/** True when the first bytes look like a ZIP local header. */
export function isZipMagic(head: Uint8Array): boolean {
  return head.byteLength >= 4 && u32(head, 0) === SIG_LOCAL
}

async function findEocd(file: RandomAccessFile): Promise<{offset: number; bytes: Uint8Array}> {
  const name = file.path
  if (file.size < EOCD_BYTES) throw new FormatError('zip.truncated', `${name}: ${file.size} bytes is too short for a ZIP archive`, {path: name})
  const tailLength = Math.min(file.size, EOCD_BYTES + MAX_COMMENT_BYTES)
  const tail = await file.read(file.size - tailLength, tailLength)
  for (let i = tailLength - EOCD_BYTES; i >= 0; i--) {
    if (u32(tail, i) === SIG_EOCD && i + EOCD_BYTES + u16(tail, i + 20) === tailLength) {
      return {offset: file.size - tailLength + i, bytes: tail.subarray(i, i + EOCD_BYTES)}
    }
  }
  throw new FormatError('zip.no_eocd', `${name}: no end of central directory record (truncated or not a ZIP archive)`, {path: name})
}

async function readDirectory(file: RandomAccessFile): Promise<Map<string, ZipEntry>> {
  const name = file.path
  const eocd = await findEocd(file)
  let count = u16(eocd.bytes, 10)
  let cdSize = u32(eocd.bytes, 12)
  let cdOffset = u32(eocd.bytes, 16)
  if (u16(eocd.bytes, 4) !== 0 || u16(eocd.bytes, 6) !== 0 || u16(eocd.bytes, 8) !== count) {
    throw new FormatError('zip.multi_disk', `${name}: multi-disk archives are not supported`, {path: name})
  }
  let cdEnd = eocd.offset
  const locatorOffset = eocd.offset - LOCATOR64_BYTES
  if (locatorOffset >= 0) {
    const locator = await file.read(locatorOffset, LOCATOR64_BYTES)
    if (u32(locator, 0) === SIG_LOCATOR64) {
      const eocd64Offset = u64(locator, 8, 'ZIP64 end record offset', name)
      if (eocd64Offset + EOCD64_BYTES > locatorOffset) {
        throw new FormatError('zip.bad_eocd64', `${name}: ZIP64 end record offset ${eocd64Offset} is past the locator`, {path: name})
      }
      const e64 = await file.read(eocd64Offset, EOCD64_BYTES)
      if (u32(e64, 0) !== SIG_EOCD64) throw new FormatError('zip.bad_eocd64', `${name}: no ZIP64 end record at offset ${eocd64Offset}`, {path: name})
      count = u64(e64, 32, 'entry count', name)
      cdSize = u64(e64, 40, 'central directory size', name)
      cdOffset = u64(e64, 48, 'central directory offset', name)
      cdEnd = eocd64Offset
    }
  }
  if (count > MAX_ENTRIES) throw new FormatError('zip.too_many_entries', `${name}: ${count} entries exceeds the limit of ${MAX_ENTRIES}`, {path: name})
  if (cdSize > MAX_CENTRAL_DIRECTORY_BYTES) {
    throw new FormatError('zip.directory_size', `${name}: central directory of ${cdSize} bytes exceeds the limit of ${MAX_CENTRAL_DIRECTORY_BYTES}`, {path: name})
  }
  if (cdOffset + cdSize > cdEnd) {
    throw new FormatError('zip.bad_directory', `${name}: central directory [${cdOffset}, ${cdOffset + cdSize}) runs past its end record at ${cdEnd} (truncated archive?)`, {path: name})
  }
  const cd = await file.read(cdOffset, cdSize)
  const entries = new Map<string, ZipEntry>()
  let p = 0
  for (let i = 0; i < count; i++) {
    if (p + CENTRAL_HEADER_BYTES > cd.byteLength || u32(cd, p) !== SIG_CENTRAL) {
      throw new FormatError('zip.bad_directory', `${name}: central directory entry ${i} is malformed`, {path: name})
    }
    const method = u16(cd, p + 10)
    const crc = u32(cd, p + 16)
    let compressed = u32(cd, p + 20)
    let size = u32(cd, p + 24)
    const nameLength = u16(cd, p + 28)
    const extraLength = u16(cd, p + 30)
    const commentLength = u16(cd, p + 32)
    let headerOffset = u32(cd, p + 42)
    const next = p + CENTRAL_HEADER_BYTES + nameLength + extraLength + commentLength
    if (next > cd.byteLength) throw new FormatError('zip.bad_directory', `${name}: central directory entry ${i} runs past the directory`, {path: name})
    let entryName: string
    try {
      entryName = new TextDecoder('utf-8', {fatal: true}).decode(cd.subarray(p + CENTRAL_HEADER_BYTES, p + CENTRAL_HEADER_BYTES + nameLength))
    } catch {
      throw new FormatError('zip.bad_name', `${name}: entry ${i} has a name that is not valid UTF-8`, {path: name})
    }
    // ZIP64 extended information: only the fields whose 32-bit slot is saturated, in this order.
    const extra = cd.subarray(p + CENTRAL_HEADER_BYTES + nameLength, p + CENTRAL_HEADER_BYTES + nameLength + extraLength)
    for (let q = 0; q + 4 <= extra.byteLength;) {
      const id = u16(extra, q)
      const len = u16(extra, q + 2)
      if (q + 4 + len > extra.byteLength) throw new FormatError('zip.bad_extra', `${name}: entry ${quote(entryName)} has a malformed extra field`, {path: name})
      if (id === ZIP64_EXTRA_ID) {
        let f = q + 4
        const take = (what: string): number => {
          if (f + 8 > q + 4 + len) throw new FormatError('zip.bad_extra', `${name}: entry ${quote(entryName)} ZIP64 field lacks ${what}`, {path: name})
          const v = u64(extra, f, what, name)
          f += 8
          return v
        }
        if (size === U32_MAX) size = take('uncompressed size')
        if (compressed === U32_MAX) compressed = take('compressed size')
        if (headerOffset === U32_MAX) headerOffset = take('local header offset')
      }
      q += 4 + len
    }
    if (method !== 0) throw new FormatError('zip.compressed', `${name}: record ${quote(entryName)} is compressed (method ${method}); torch archives store records uncompressed`, {path: name, record: entryName})
    if (compressed !== size) throw new FormatError('zip.bad_sizes', `${name}: record ${quote(entryName)} has compressed size ${compressed} ≠ size ${size} for a stored record`, {path: name})
    if (entries.has(entryName)) throw new FormatError('zip.duplicate', `${name}: record ${quote(entryName)} appears twice`, {path: name, record: entryName})
    entries.set(entryName, {name: entryName, headerOffset, dataOffset: -1, size, crc32: crc})
    p = next
  }
  // Local headers: check each against the directory and find where its data starts.
  for (const entry of entries.values()) {
    if (entry.headerOffset + LOCAL_HEADER_BYTES > cdOffset) {
      throw new FormatError('zip.bad_offset', `${name}: record ${quote(entry.name)} header offset ${entry.headerOffset} is outside the archive data`, {path: name})
    }
    const h = await file.read(entry.headerOffset, LOCAL_HEADER_BYTES)
    if (u32(h, 0) !== SIG_LOCAL) throw new FormatError('zip.bad_local_header', `${name}: no local header for ${quote(entry.name)} at offset ${entry.headerOffset}`, {path: name})
    const nameLength = u16(h, 26)
    const extraLength = u16(h, 28)
    const localName = await file.read(entry.headerOffset + LOCAL_HEADER_BYTES, nameLength)
    if (Buffer.from(localName).toString('utf8') !== entry.name) {
      throw new FormatError('zip.name_mismatch', `${name}: local header at ${entry.headerOffset} names ${quote(Buffer.from(localName).toString('utf8'))}, the directory says ${quote(entry.name)}`, {path: name})
    }
    if (u16(h, 8) !== 0) throw new FormatError('zip.compressed', `${name}: record ${quote(entry.name)} is compressed`, {path: name})
    entry.dataOffset = entry.headerOffset + LOCAL_HEADER_BYTES + nameLength + extraLength
    if (entry.dataOffset + entry.size > cdOffset) {
      throw new FormatError('zip.bad_offset', `${name}: record ${quote(entry.name)} data [${entry.dataOffset}, ${entry.dataOffset + entry.size}) runs past the archive data (truncated?)`, {path: name})
    }
  }
  const sorted = [...entries.values()].sort((a, b) => a.headerOffset - b.headerOffset)
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!
    const cur = sorted[i]!
    if (cur.headerOffset < prev.dataOffset + prev.size) {
      throw new FormatError('zip.overlap', `${name}: records ${quote(prev.name)} and ${quote(cur.name)} overlap`, {path: name})
    }
  }
  return entries
}

// ---------------------------------------------------------------------------------------------
// Writer

/** What the writer needs to know about a record before its bytes arrive. */
export interface PlannedRecord {
  name: string
  size: number
}

interface Written {
  name: Uint8Array
  headerOffset: number
  size: number
  crc: number
}

function le16(v: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16LE(v)
  return b
}

/** The local header (with torch's alignment padding) of a record starting at `offset`. */
export function localHeader(name: Uint8Array, offset: number, size: number): Uint8Array {
  const zip64: Buffer[] = []
  if (size >= U32_MAX) {
    const b = Buffer.alloc(16)
    b.writeBigUInt64LE(BigInt(size), 0)
    b.writeBigUInt64LE(BigInt(size), 8)
    zip64.push(b)
  }
  if (offset >= U32_MAX) {
    const b = Buffer.alloc(8)
    b.writeBigUInt64LE(BigInt(offset))
    zip64.push(b)
  }
  const zip64Bytes = zip64.length ? Buffer.concat([le16(ZIP64_EXTRA_ID), le16(zip64.reduce((a, b) => a + b.byteLength, 0)), ...zip64]) : Buffer.alloc(0)
  const before = offset + LOCAL_HEADER_BYTES + name.byteLength + zip64Bytes.byteLength + 4
  const pad = (RECORD_ALIGNMENT - (before % RECORD_ALIGNMENT)) % RECORD_ALIGNMENT
  const padBytes = Buffer.concat([le16(PAD_EXTRA_ID), le16(pad), Buffer.alloc(pad, PAD_BYTE)])
  const h = Buffer.alloc(LOCAL_HEADER_BYTES)
  h.writeUInt32LE(SIG_LOCAL, 0)
  h.writeUInt16LE(0, 4) // version needed: torch writes 0
  h.writeUInt16LE(TORCH_FLAGS, 6)
  // method 0, time/date 0, crc and sizes 0: they follow in the data descriptor (flag bit 3).
  h.writeUInt16LE(name.byteLength, 26)
  h.writeUInt16LE(zip64Bytes.byteLength + padBytes.byteLength, 28)
  return Buffer.concat([h, name, zip64Bytes, padBytes])
}

/**
 * Streams records into an archive in order. `begin` a record, `write` its bytes, `end` it; the
 * central directory and end records are written by `finish`. Memory: one chunk at a time.
 */
export class ZipWriter {
  private readonly done: Written[] = []
  private current?: {name: Uint8Array; headerOffset: number; size: number; written: number; crc: number}

  private constructor(private readonly out: FileWriter) {}

  static async create(p: string): Promise<ZipWriter> {
    return new ZipWriter(await FileWriter.create(p))
  }

  get position(): number {
    return this.out.position
  }

  async begin(name: string, size: number): Promise<void> {
    if (this.current) throw new FormatError('zip.writer_state', `record ${quote(name)} begun before the previous one ended`)
    const nameBytes = Buffer.from(name, 'utf8')
    const headerOffset = this.out.position
    await this.out.write(localHeader(nameBytes, headerOffset, size))
    this.current = {name: nameBytes, headerOffset, size, written: 0, crc: 0}
  }

  async write(bytes: Uint8Array): Promise<void> {
    const c = this.current
    if (!c) throw new FormatError('zip.writer_state', 'write outside a record')
    if (c.written + bytes.byteLength > c.size) {
      throw new FormatError('zip.writer_size', `record ${quote(Buffer.from(c.name).toString())} got more than its planned ${c.size} bytes`)
    }
    c.crc = crc32(bytes, c.crc)
    c.written += bytes.byteLength
    await this.out.write(bytes)
  }

  async end(): Promise<void> {
    const c = this.current
    if (!c) throw new FormatError('zip.writer_state', 'end outside a record')
    if (c.written !== c.size) throw new FormatError('zip.writer_size', `record ${quote(Buffer.from(c.name).toString())} got ${c.written} bytes, planned ${c.size}`)
    // Data descriptor: 64-bit sizes when the record needed ZIP64 (as miniz does).
    const wide = c.size >= U32_MAX || c.headerOffset >= U32_MAX
    const d = Buffer.alloc(wide ? 24 : 16)
    d.writeUInt32LE(SIG_DESCRIPTOR, 0)
    d.writeUInt32LE(c.crc >>> 0, 4)
    if (wide) {
      d.writeBigUInt64LE(BigInt(c.size), 8)
      d.writeBigUInt64LE(BigInt(c.size), 16)
    } else {
      d.writeUInt32LE(c.size, 8)
      d.writeUInt32LE(c.size, 12)
    }
    await this.out.write(d)
    this.done.push({name: c.name, headerOffset: c.headerOffset, size: c.size, crc: c.crc >>> 0})
    this.current = undefined
  }

  async record(name: string, bytes: Uint8Array): Promise<void> {
    await this.begin(name, bytes.byteLength)
    await this.write(bytes)
    await this.end()
  }

  /** Central directory, ZIP64 end record and locator (torch always writes them), end record. */
  async finish(): Promise<number> {
    if (this.current) throw new FormatError('zip.writer_state', 'finish inside a record')
    const cdOffset = this.out.position
    for (const w of this.done) {
      const fields: Buffer[] = []
      const bigSize = w.size >= U32_MAX
      const bigOffset = w.headerOffset >= U32_MAX
      if (bigSize) {
        const b = Buffer.alloc(16)
        b.writeBigUInt64LE(BigInt(w.size), 0)
        b.writeBigUInt64LE(BigInt(w.size), 8)
        fields.push(b)
      }
      if (bigOffset) {
        const b = Buffer.alloc(8)
        b.writeBigUInt64LE(BigInt(w.headerOffset))
        fields.push(b)
      }
      const extra = fields.length ? Buffer.concat([le16(ZIP64_EXTRA_ID), le16(fields.reduce((a, b) => a + b.byteLength, 0)), ...fields]) : Buffer.alloc(0)
      const h = Buffer.alloc(CENTRAL_HEADER_BYTES)
      h.writeUInt32LE(SIG_CENTRAL, 0)
      h.writeUInt16LE(TORCH_FLAGS, 8)
      h.writeUInt32LE(w.crc, 16)
      h.writeUInt32LE(bigSize ? U32_MAX : w.size, 20)
      h.writeUInt32LE(bigSize ? U32_MAX : w.size, 24)
      h.writeUInt16LE(w.name.byteLength, 28)
      h.writeUInt16LE(extra.byteLength, 30)
      h.writeUInt32LE(bigOffset ? U32_MAX : w.headerOffset, 42)
      await this.out.write(Buffer.concat([h, w.name, extra]))
    }
    const cdSize = this.out.position - cdOffset
    const eocd64Offset = this.out.position
    const e64 = Buffer.alloc(EOCD64_BYTES)
    e64.writeUInt32LE(SIG_EOCD64, 0)
    e64.writeBigUInt64LE(BigInt(EOCD64_BYTES - 12), 4)
    e64.writeUInt16LE(ZIP64_MADE_BY, 12)
    e64.writeUInt16LE(ZIP64_NEEDED, 14)
    e64.writeBigUInt64LE(BigInt(this.done.length), 24)
    e64.writeBigUInt64LE(BigInt(this.done.length), 32)
    e64.writeBigUInt64LE(BigInt(cdSize), 40)
    e64.writeBigUInt64LE(BigInt(cdOffset), 48)
    const loc = Buffer.alloc(LOCATOR64_BYTES)
    loc.writeUInt32LE(SIG_LOCATOR64, 0)
    loc.writeBigUInt64LE(BigInt(eocd64Offset), 8)
    loc.writeUInt32LE(1, 16)
    const e = Buffer.alloc(EOCD_BYTES)
    e.writeUInt32LE(SIG_EOCD, 0)
    e.writeUInt16LE(Math.min(this.done.length, U16_MAX), 8)
    e.writeUInt16LE(Math.min(this.done.length, U16_MAX), 10)
    e.writeUInt32LE(Math.min(cdSize, U32_MAX), 12)
    e.writeUInt32LE(Math.min(cdOffset, U32_MAX), 16)
    await this.out.write(Buffer.concat([e64, loc, e]))
    const total = this.out.position
    await this.out.close()
    return total
  }

  async abort(): Promise<void> {
    await this.out.abort()
  }
}
