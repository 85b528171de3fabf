/**
 * Which files of a folder get uploaded, and how the Hub will store each one.
 *
 * Skipped always: `.git`, caches (`.cache`, `__pycache__`) and this tool's own temp outputs
 * (`.openelm-tmp-*`), at any depth. `--include`/`--exclude` are fnmatch-style globs on the path
 * relative to the folder (as `hf upload` applies them): `*` and `?` also match `/`, `[...]` is a
 * character class, a pattern ending in `/` matches everything below that folder.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {IoError, UsageError} from '../errors.js'
import {TEMP_MARKER} from '../io/atomic.js'

/** Folder names never uploaded, at any depth. */
export const SKIPPED_DIRS = new Set(['.git', '.cache', '__pycache__'])

/** The Hub refuses non-LFS files of 10 MiB or more, so larger files always go through LFS. */
export const LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
/** The Hub sniffs this many leading bytes (the preupload `sample`) to tell binary from text. */
export const SAMPLE_BYTES = 512
/**
 * Extensions tracked by LFS in the `.gitattributes` the Hub writes into every new model repo
 * (the subset a converted model can contain).
 */
export const LFS_EXTENSIONS = ['.safetensors', '.bin', '.pt', '.pth', '.ckpt', '.onnx', '.gguf', '.npz', '.npy', '.msgpack', '.h5', '.pkl', '.pickle', '.model', '.tflite', '.mlmodel', '.zip', '.tar', '.gz', '.zst']

export interface LocalFile {
  /** Path in the repo, `/`-separated, relative to the folder. */
  path: string
  /** Absolute path on disk; absent for generated files. */
  absPath?: string
  bytes: number
  /** True when the Hub will store it with LFS. */
  lfs: boolean
  /** True when this tool generated it in memory (the model card). */
  generated?: boolean
}

export interface SelectOptions {
  include?: string[]
  exclude?: string[]
}

/** Convert one fnmatch-style glob to an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  let pattern = glob.replace(/^\.\//, '')
  if (pattern.endsWith('/')) pattern += '*'
  let out = ''
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!
    if (c === '*') {
      while (pattern[i + 1] === '*') i++
      out += '.*'
    } else if (c === '?') {
      out += '.'
    } else if (c === '[') {
      const close = pattern.indexOf(']', i + 2)
      if (close < 0) {
        out += '\\['
        continue
      }
      let body = pattern.slice(i + 1, close)
      if (body.startsWith('!')) body = '^' + body.slice(1)
      out += `[${body.replace(/\\/g, '\\\\')}]`
      i = close
    } else {
      out += c.replace(/[.+^${}()|\\\]/]/g, '\\$&')
    }
  }
  return new RegExp(`^${out}$`, 's')
}

export function matchesAny(file: string, globs: string[]): boolean {
  return globs.some((g) => globToRegExp(g).test(file))
}

/** True when `--include`/`--exclude` keep this repo path. */
export function selected(file: string, options: SelectOptions): boolean {
  if (options.include && options.include.length > 0 && !matchesAny(file, options.include)) return false
  if (options.exclude && options.exclude.length > 0 && matchesAny(file, options.exclude)) return false
  return true
}

function skippedName(name: string, isDir: boolean): boolean {
  if (name.startsWith(TEMP_MARKER)) return true
  return isDir && SKIPPED_DIRS.has(name)
}

/** The Hub's rule: LFS when large, binary (a NUL byte in the sample), or an LFS-tracked extension. */
export function isLfs(file: string, bytes: number, sample: Uint8Array): boolean {
  if (bytes >= LFS_SIZE_THRESHOLD) return true
  if (sample.includes(0)) return true
  const lower = file.toLowerCase()
  return LFS_EXTENSIONS.some((ext) => lower.endsWith(ext))
}

async function readSample(absPath: string): Promise<Uint8Array> {
  const handle = await fs.open(absPath, 'r')
  try {
    const buffer = Buffer.alloc(SAMPLE_BYTES)
    const {bytesRead} = await handle.read(buffer, 0, SAMPLE_BYTES, 0)
    return buffer.subarray(0, bytesRead)
  } finally {
    await handle.close()
  }
}

/** Every uploadable file under `dir`, sorted by repo path. Symlinks to files are followed; to folders, skipped. */
export async function listFolder(dir: string, options: SelectOptions = {}): Promise<{files: LocalFile[]; skipped: string[]}> {
  let stat
  try {
    stat = await fs.stat(dir)
  } catch {
    throw new IoError('path.missing', `${dir} does not exist`, {path: dir})
  }
  if (!stat.isDirectory()) throw new UsageError('push.not_a_folder', `${dir} is not a folder (push uploads a model folder)`, {path: dir})
  const files: LocalFile[] = []
  const skipped: string[] = []
  const walk = async (abs: string, rel: string): Promise<void> => {
    const entries = await fs.readdir(abs, {withFileTypes: true})
    for (const entry of entries) {
      const entryAbs = path.join(abs, entry.name)
      const entryRel = rel ? `${rel}/${entry.name}` : entry.name
      let isDir = entry.isDirectory()
      let isFile = entry.isFile()
      if (entry.isSymbolicLink()) {
        const target = await fs.stat(entryAbs).catch(() => undefined)
        if (target?.isDirectory()) {
          skipped.push(`${entryRel}/`)
          continue
        }
        isFile = Boolean(target?.isFile())
        isDir = false
      }
      if (skippedName(entry.name, isDir)) {
        skipped.push(isDir ? `${entryRel}/` : entryRel)
        continue
      }
      if (isDir) {
        await walk(entryAbs, entryRel)
      } else if (isFile) {
        if (!selected(entryRel, options)) continue
        const {size} = await fs.stat(entryAbs)
        files.push({path: entryRel, absPath: entryAbs, bytes: size, lfs: isLfs(entryRel, size, await readSample(entryAbs))})
      }
    }
  }
  await walk(dir, '')
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  skipped.sort()
  return {files, skipped}
}
