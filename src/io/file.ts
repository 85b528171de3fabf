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

  async close(): Promise<void> {
    await this.handle.close()
  }
}

/** Sequential writer with a small coalescing buffer. */
export class FileWriter {
  private pending: Uint8Array[] = []
  private pendingBytes = 0
  position = 0

  private constructor(private readonly handle: fs.FileHandle, private readonly flushBytes: number) {}

  static async create(p: string, flushBytes = 4 * 1024 * 1024): Promise<FileWriter> {
    return new FileWriter(await fs.open(p, 'wx'), flushBytes)
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (bytes.byteLength === 0) return
    this.position += bytes.byteLength
    if (bytes.byteLength >= this.flushBytes) {
      await this.flush()
      await this.handle.write(bytes)
      return
    }
    // Copy: callers may reuse their buffers.
    this.pending.push(Uint8Array.prototype.slice.call(bytes))
    this.pendingBytes += bytes.byteLength
    if (this.pendingBytes >= this.flushBytes) await this.flush()
  }

  async flush(): Promise<void> {
    if (this.pendingBytes === 0) return
    const joined = Buffer.concat(this.pending, this.pendingBytes)
    this.pending = []
    this.pendingBytes = 0
    await this.handle.write(joined)
  }

  async close(): Promise<void> {
    await this.flush()
    await this.handle.close()
  }

  /** Close without flushing (on failure). */
  async abort(): Promise<void> {
    this.pending = []
    await this.handle.close().catch(() => undefined)
  }
}

export async function readJsonFile(p: string): Promise<unknown> {
  let text: string
  try {
    text = await fs.readFile(p, 'utf8')
  } catch (error) {
    throw new IoError('file.open', `cannot read ${p}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {path: p})
  }
  try {
    return JSON.parse(text)
  } catch (error) {
    throw new FormatError('json.invalid', `${p} is not valid JSON: ${(error as Error).message}`, {path: p})
  }
}

export async function writeJsonFile(p: string, value: unknown): Promise<number> {
  const text = `${JSON.stringify(value, null, 2)}\n`
  await fs.writeFile(p, text)
  return Buffer.byteLength(text)
}
