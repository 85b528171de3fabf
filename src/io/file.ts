/** Random-access and sequential file helpers with bounded buffers. */
import {promises as fs} from 'node:fs'
import {FormatError, IoError} from '../errors.js'

/** A file opened for positional reads; reads past the end are a FormatError (truncated file). */
export class RandomAccessFile {
  private constructor(readonly path: string, private readonly handle: fs.FileHandle, readonly size: number) {}

  static async open(p: string): Promise<RandomAccessFile> {
    let handle: fs.FileHandle
    try {
      handle = await fs.open(p, 'r')
    } catch (error) {
      throw new IoError('file.open', `cannot open ${p}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {path: p})
    }
    const stat = await handle.stat()
    if (!stat.isFile()) {
      await handle.close()
      throw new IoError('file.not_file', `${p} is not a regular file`, {path: p})
    }
    return new RandomAccessFile(p, handle, stat.size)
  }

  /** The open descriptor (for reads by other threads of this process: src/tensor/record.ts FileRange). */
  get fd(): number {
    return this.handle.fd
  }

  /** Read exactly `length` bytes at `position`. */
  async read(position: number, length: number): Promise<Uint8Array> {
    if (position < 0 || length < 0 || position + length > this.size) {
      throw new FormatError('file.truncated', `${this.path}: read of ${length} bytes at offset ${position} runs past the end of the file (${this.size} bytes)`, {path: this.path})
    }
    const buffer = Buffer.allocUnsafe(length)
    let done = 0
    while (done < length) {
      const {bytesRead} = await this.handle.read(buffer, done, length - done, position + done)
      if (bytesRead === 0) throw new FormatError('file.truncated', `${this.path}: unexpected end of file at offset ${position + done}`, {path: this.path})
      done += bytesRead
    }
    return new Uint8Array(buffer.buffer, buffer.byteOffset, length)
  }

  /**
   * Fill `target` with the bytes at `position` (no allocation: streaming copies reuse one buffer,
   * which keeps them at memory speed instead of paying a page fault per fresh chunk).
   */
  async readInto(target: Uint8Array, position: number): Promise<void> {
    const length = target.byteLength
    if (position < 0 || position + length > this.size) {
      throw new FormatError('file.truncated', `${this.path}: read of ${length} bytes at offset ${position} runs past the end of the file (${this.size} bytes)`, {path: this.path})
    }
    let done = 0
    while (done < length) {
      const {bytesRead} = await this.handle.read(target, done, length - done, position + done)
      if (bytesRead === 0) throw new FormatError('file.truncated', `${this.path}: unexpected end of file at offset ${position + done}`, {path: this.path})
      done += bytesRead
    }
  }

  async close(): Promise<void> {
    await this.handle.close()
  }
}

/** Writes at or above this size go straight to the file; smaller ones are coalesced. */
const DIRECT_WRITE_BYTES = 256 * 1024

/**
 * Sequential writer. Small writes (headers, norm vectors) are copied into one preallocated
 * buffer and flushed together; large chunks are written directly. Either way the caller may
 * reuse its buffer as soon as `write` resolves.
 */
export class FileWriter {
  private readonly pending: Uint8Array
  private pendingBytes = 0
  /** File offset of the first pending byte. */
  private pendingAt = 0
  /** Where the next write goes (the end of the file unless `seek` moved it). */
  position = 0

  private constructor(private readonly handle: fs.FileHandle, flushBytes: number) {
    this.pending = new Uint8Array(flushBytes)
  }

  static async create(p: string, flushBytes = 1024 * 1024): Promise<FileWriter> {
    return new FileWriter(await fs.open(p, 'wx'), flushBytes)
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (bytes.byteLength === 0) return
    const at = this.position
    this.position += bytes.byteLength
    if (bytes.byteLength >= DIRECT_WRITE_BYTES || bytes.byteLength > this.pending.byteLength - this.pendingBytes) {
      await this.flush()
      if (bytes.byteLength >= DIRECT_WRITE_BYTES || bytes.byteLength > this.pending.byteLength) {
        await this.writeAll(bytes, at)
        return
      }
    }
    if (this.pendingBytes === 0) this.pendingAt = at
    this.pending.set(bytes, this.pendingBytes)
    this.pendingBytes += bytes.byteLength
  }

  /** Make the next write go to `position` (what is pending is written first, where it belongs). */
  async seek(position: number): Promise<void> {
    await this.flush()
    this.position = position
  }

  private async writeAll(bytes: Uint8Array, at: number): Promise<void> {
    let done = 0
    while (done < bytes.byteLength) {
      const {bytesWritten} = await this.handle.write(bytes, done, bytes.byteLength - done, at + done)
      done += bytesWritten
    }
  }

  async flush(): Promise<void> {
    if (this.pendingBytes === 0) return
    const n = this.pendingBytes
    this.pendingBytes = 0
    await this.writeAll(this.pending.subarray(0, n), this.pendingAt)
  }

  async close(): Promise<void> {
    await this.flush()
    await this.handle.close()
  }

  /** Close without flushing (on failure). */
  async abort(): Promise<void> {
    this.pendingBytes = 0
    await this.handle.close().catch(() => undefined)
  }
}

/** The largest JSON file read whole (configs, shard indexes, tokenizer.json are kilobytes to a few MB). */
export const MAX_JSON_BYTES = 64 * 1024 * 1024

/**
 * JSON.parse's complaint as one line: V8 quotes the whole input (newlines included) in some
 * messages; keep the reason, turn a position into line:column, and never echo the file.
 */
export function jsonErrorSummary(text: string, error: Error): string {
  const message = error.message
  const reason = message.split(/, (?:\.\.\.)?"|\n| in JSON at position| at position/)[0]!.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 120)
  const at = /at position (\d+)/.exec(message)
  const token = /^Unexpected token '(.)'/.exec(message)?.[1]
  const pos = at ? Number(at[1]) : token !== undefined ? firstOutsideStrings(text, token) : -1
  let where = ''
  if (pos >= 0) {
    const before = text.slice(0, pos)
    const line = before.split('\n').length
    where = ` at line ${line} column ${pos - before.lastIndexOf('\n')}`
  }
  const hint = /Unexpected token '?(N|I|-I)/.test(message) ? ' (NaN and Infinity are not JSON numbers)' : ''
  return `${reason}${where}${hint}`
}

/** Index of the first `char` outside JSON strings (where V8's "Unexpected token" points), or -1. */
function firstOutsideStrings(text: string, char: string): number {
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (inString) {
      if (c === '\\') i++
      else if (c === '"') inString = false
    } else if (c === '"') inString = true
    else if (c === char) return i
  }
  return -1
}

export async function readJsonFile(p: string): Promise<unknown> {
  let text: string
  try {
    const size = (await fs.stat(p)).size
    if (size > MAX_JSON_BYTES) throw new FormatError('json.too_large', `${p} is ${size} bytes, above the ${MAX_JSON_BYTES}-byte limit for a JSON file`, {path: p})
    text = await fs.readFile(p, 'utf8')
  } catch (error) {
    if (error instanceof FormatError) throw error
    throw new IoError('file.open', `cannot read ${p}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {path: p})
  }
  try {
    return JSON.parse(text)
  } catch (error) {
    throw new FormatError('json.invalid', `${p} is not valid JSON: ${jsonErrorSummary(text, error as Error)}`, {path: p})
  }
}

export async function writeJsonFile(p: string, value: unknown): Promise<number> {
  const text = `${JSON.stringify(value, null, 2)}\n`
  await fs.writeFile(p, text)
  return Buffer.byteLength(text)
}
