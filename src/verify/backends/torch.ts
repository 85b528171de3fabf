/**
 * The PyTorch reference (src/verify/python/openelm_ref.py) as a worker process. Requests and
 * replies are length-prefixed MessagePack (4-byte little-endian length, then one map) over the
 * child's stdin/stdout. Weights travel as a temporary safetensors file of canonical tensors.
 */
import {spawn, type ChildProcessWithoutNullStreams} from 'node:child_process'
import {existsSync, promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {decode, encode} from '@msgpack/msgpack'
import {DependencyError, VerificationError} from '../../errors.js'
import {type Checkpoint} from '../../formats/types.js'
import {writeSafetensors} from '../../formats/safetensors/write.js'
import {matrixShape, storedTensor} from '../../formats/stored.js'
import {type StoredSegment} from '../../formats/types.js'
import {schemeFor} from '../../quant/index.js'
import {type SchemeParams} from '../../quant/types.js'
import {dtypeSize, isFloatDType} from '../../tensor/dtype.js'
import {castRecord, type TensorRecord} from '../../tensor/record.js'
import {type ExactWeights, summarize, type TensorExact} from '../exact.js'
import {type BackendResult, type LogitsBackend} from './types.js'
import {drain} from '../../progress.js'

/** Debian's interpreter, which carries torch in this project's CI. */
export const DEFAULT_PYTHON = '/usr/bin/python3'

/** `--python`, then `OPENELM_PYTHON`, then /usr/bin/python3 when it exists, then `python3` on PATH. */
export function findPython(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (explicit) return explicit
  if (env.OPENELM_PYTHON) return env.OPENELM_PYTHON
  return existsSync(DEFAULT_PYTHON) ? DEFAULT_PYTHON : 'python3'
}

/** The reference script, from src/ (dev, tests) or next to dist/ (the package ships src/verify/python). */
export function referenceScript(): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  const candidates = [
    path.join(here, '..', 'python', 'openelm_ref.py'),
    path.join(here, '..', '..', '..', 'src', 'verify', 'python', 'openelm_ref.py'),
  ]
  const found = candidates.find((c) => existsSync(c))
  if (!found) throw new DependencyError('torch.script', `the PyTorch reference script is missing (looked in ${candidates.join(', ')})`)
  return found
}

export interface WorkerReply {
  ok: boolean
  error?: string
  message?: string
  [key: string]: unknown
}

/** One running reference process. */
export class TorchWorker {
  private buffer = Buffer.alloc(0)
  private stderr = ''
  private waiting?: {resolve: (r: WorkerReply) => void; reject: (e: Error) => void}
  private exited?: Error

  private constructor(private readonly child: ChildProcessWithoutNullStreams, readonly python: string) {
    child.stdout.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk])
      this.deliver()
    })
    child.stderr.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString('utf8')).slice(-8192)
    })
    child.on('error', (error: NodeJS.ErrnoException) => this.fail(error.code === 'ENOENT'
      ? new DependencyError('torch.python', `Python not found: ${python} (install python3 with torch and msgpack, or pass --python PATH / set OPENELM_PYTHON)`, {python})
      : new DependencyError('torch.spawn', `cannot start ${python}: ${error.message}`, {python})))
    child.on('exit', (code, signal) => this.fail(this.exitError(code, signal)))
    // A closed pipe after the child died is reported through 'exit'.
    child.stdin.on('error', () => undefined)
  }

  static start(python: string): TorchWorker {
    const child = spawn(python, [referenceScript(), '--worker'], {stdio: ['pipe', 'pipe', 'pipe']})
    return new TorchWorker(child, python)
  }

  private exitError(code: number | null, signal: NodeJS.Signals | null): Error {
    const lines = this.stderr.trim().split('\n').filter(Boolean)
    const dependency = lines.find((l) => l.startsWith('openelm-ref: dependency: '))
    if (dependency) return new DependencyError('torch.missing', dependency.slice('openelm-ref: dependency: '.length), {python: this.python})
    const last = lines.at(-1) ?? 'no output'
    return new DependencyError('torch.exited', `the PyTorch reference (${this.python}) exited ${signal ? `on ${signal}` : `with code ${code}`}: ${last}`, {python: this.python, code, signal})
  }

  private fail(error: Error): void {
    this.exited ??= error
    const waiting = this.waiting
    this.waiting = undefined
    waiting?.reject(this.exited)
  }

  private deliver(): void {
    if (this.buffer.length < 4 || !this.waiting) return
    const n = this.buffer.readUInt32LE(0)
    if (this.buffer.length < 4 + n) return
    const body = this.buffer.subarray(4, 4 + n)
    this.buffer = this.buffer.subarray(4 + n)
    const waiting = this.waiting
    this.waiting = undefined
    waiting.resolve(decode(body) as WorkerReply)
  }

  /** Send one request and wait for its reply (requests are sequential). */
  request(message: Record<string, unknown>): Promise<WorkerReply> {
    if (this.exited) return Promise.reject(this.exited)
    return new Promise<WorkerReply>((resolve, reject) => {
      this.waiting = {resolve, reject}
      const body = encode(message)
      const head = Buffer.alloc(4)
      head.writeUInt32LE(body.byteLength, 0)
      this.child.stdin.write(Buffer.concat([head, Buffer.from(body.buffer, body.byteOffset, body.byteLength)]))
      this.deliver()
    })
  }

  /** Like request, but a reply with ok=false becomes a typed error. */
  async call(message: Record<string, unknown>): Promise<WorkerReply> {
    const reply = await this.request(message)
    if (!reply.ok) {
      const text = `PyTorch reference: ${reply.message ?? reply.error ?? 'failed'}`
      throw reply.error === 'dependency'
        ? new DependencyError('torch.dependency', reply.message ?? text, {python: this.python})
        : new VerificationError('torch.failed', text, {python: this.python, error: reply.error})
    }
    return reply
  }

  async close(): Promise<void> {
    if (this.exited) return
    const done = new Promise<void>((resolve) => this.child.once('exit', () => resolve()))
    try {
      await this.request({op: 'exit'}).catch(() => undefined)
    } finally {
      this.child.stdin.end()
    }
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000)
    await done
    clearTimeout(timer)
  }
}

function f32FromBytes(bytes: Uint8Array): Float32Array {
  // Copy: msgpack hands out views at arbitrary offsets, f32 views need 4-byte alignment.
  const copy = new Uint8Array(bytes.byteLength)
  copy.set(bytes)
  return new Float32Array(copy.buffer)
}

/** Canonical tensors in a float dtype torch can read. */
function handoverRecords(checkpoint: Checkpoint): TensorRecord[] {
  return checkpoint.tensors.map((t) => (isFloatDType(t.dtype) ? t : castRecord(t, 'F32')))
}

/** Write the checkpoint's canonical tensors to a temporary safetensors file; returns it and a cleanup. */
export async function handoverFile(checkpoint: Checkpoint): Promise<{file: string; remove: () => Promise<void>}> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-torch-'))
  const remove = () => fs.rm(dir, {recursive: true, force: true})
  try {
    const file = path.join(dir, 'model.safetensors')
    const writing = writeSafetensors(file, handoverRecords(checkpoint))
    await drain(writing)
    return {file, remove}
  } catch (error) {
    await remove()
    throw error
  }
}

/** Run the reference on `tokens` with weights from `file`; dtype f32 unless told otherwise. */
export async function torchForward(
  worker: TorchWorker, file: string, checkpoint: Checkpoint, tokens: number[],
  options: {device?: string; collectHidden?: boolean; dtype?: string},
): Promise<BackendResult & {device: string; loadSeconds: number; forwardSeconds: number}> {
  const reply = await worker.call({
    op: 'forward', weights: file, config: checkpoint.config, tokens,
    device: options.device ?? 'auto', dtype: options.dtype ?? 'f32', collect_hidden: Boolean(options.collectHidden),
  })
  const logits = f32FromBytes(reply.logits as Uint8Array)
  const hidden = reply.hidden ? (reply.hidden as Uint8Array[]).map(f32FromBytes) : undefined
  return {
    logits, vocab: reply.vocab as number, ...(hidden ? {hidden} : {}),
    device: reply.device as string, loadSeconds: reply.load_s as number, forwardSeconds: reply.forward_s as number,
  }
}

export const torchBackend: LogitsBackend = {
  name: 'torch',
  async run(input, tokens, options) {
    const worker = TorchWorker.start(findPython(options.python))
    try {
      const hello = await worker.call({op: 'hello'})
      if (options.device?.startsWith('cuda') && !hello.cuda) {
        throw new DependencyError('torch.cuda', `CUDA is not available to torch ${String(hello.torch)} in ${worker.python}: install a CUDA build of PyTorch and an NVIDIA driver, or use --device cpu`, {python: worker.python})
      }
      options.onPhase?.('hand over weights')
      const {file, remove} = await handoverFile(input.checkpoint)
      try {
        options.onPhase?.('load, forward')
        const r = await torchForward(worker, file, input.checkpoint, tokens, options)
        return {logits: r.logits, vocab: r.vocab, ...(r.hidden ? {hidden: r.hidden} : {})}
      } finally {
        await remove()
      }
    } finally {
      await worker.close()
    }
  },
}

// ---- the exact check in the PyTorch reference ------------------------------------------------

/** The metadata key of the stored-parts handover: {canonical: {scheme, params, shape}}. */
export const PLAN_METADATA_KEY = 'openelm.plan'

/**
 * MODEL's stored parts as records named `<canonical>::<part>` (raw dtype, rows leading), and the
 * plan the Python side reads them by. Segments of one tensor must share one scheme (they are
 * concatenated by rows).
 */
export function storedHandover(model: Checkpoint): {records: TensorRecord[]; plan: Record<string, {scheme: string; params: SchemeParams; shape: readonly number[]}>} {
  const records: TensorRecord[] = []
  const plan: Record<string, {scheme: string; params: SchemeParams; shape: readonly number[]}> = {}
  for (const t of model.tensors) {
    const stored = storedTensor(model, t.name)!
    const first = stored.segments[0]!
    const key = (s: StoredSegment) => `${s.scheme}:${JSON.stringify(s.params)}`
    if (stored.segments.some((s) => key(s) !== key(first))) {
      throw new DependencyError('torch.segments', `${t.name} is stored in two schemes (${stored.segments.map((s) => `${s.label}: ${s.scheme}`).join(', ')}); the torch engine takes one scheme per tensor — use --backend ts`)
    }
    const [rows, cols] = matrixShape(t.shape)
    const scheme = schemeFor(first.scheme)
    plan[t.name] = {scheme: first.scheme, params: first.params, shape: t.shape}
    for (const part of scheme.parts(first.params, cols)) {
      const rowBytes = part.perRow * dtypeSize(part.dtype)
      const byteLength = rows * rowBytes
      records.push({
        name: `${t.name}::${part.name}`, dtype: part.dtype, shape: [rows, part.perRow], byteLength,
        async read(start = 0, end = byteLength) {
          const r0 = Math.floor(start / rowBytes)
          const r1 = Math.ceil(end / rowBytes)
          const out = new Uint8Array((r1 - r0) * rowBytes)
          for (const s of stored.segments) {
            const a = Math.max(r0, s.row0)
            const b = Math.min(r1, s.row0 + s.rows)
            if (a < b) out.set((await s.read(a - s.row0, b - s.row0))[part.name]!, (a - r0) * rowBytes)
          }
          return out.subarray(start - r0 * rowBytes, end - r0 * rowBytes)
        },
      })
    }
  }
  return {records, plan}
}

/** The Python reference's per-tensor comparison, as it replies (quant_ref.py `compare` + name/scheme). */
interface PyTensorResult {
  name: string
  scheme: string
  params: SchemeParams
  elements: number
  identical_elements: number
  blocks: number
  identical_blocks: number
  mismatched_blocks: number
  accepted?: Record<string, number>
  /** First block that differs and no documented rule explains. */
  first_mismatch?: {row: number; block: number; col: number; part: string} | null
  extra_rows?: number
}

function tensorFromPython(t: PyTensorResult): TensorExact {
  const accepted = Object.fromEntries(Object.entries(t.accepted ?? {}).filter(([, n]) => n > 0))
  const first = t.first_mismatch ?? undefined
  const segment = {
    label: t.name, scheme: t.scheme, params: t.params, row0: 0, rows: 0, comparedRows: 0,
    elements: t.elements, identicalElements: t.identical_elements, blocks: t.blocks, identicalBlocks: t.identical_blocks,
    accepted, acceptedBlocks: [], ...(first ? {first} : {}),
  }
  return {
    name: t.name, segments: [segment], elements: t.elements, identicalElements: t.identical_elements, blocks: t.blocks,
    identicalBlocks: t.identical_blocks, mismatchedBlocks: t.mismatched_blocks, accepted,
    ...(first ? {first: {label: t.name, ...first}} : {}), ...(t.extra_rows ? {extraRows: t.extra_rows} : {}),
  }
}

/** One side's logits from the reply. */
function side(reply: WorkerReply, logitsKey: string, vocabKey: string, hiddenKey?: string): {logits: Float32Array; vocab: number; hidden?: Float32Array[]} {
  const hidden = hiddenKey && reply[hiddenKey] ? (reply[hiddenKey] as Uint8Array[]).map(f32FromBytes) : undefined
  return {logits: f32FromBytes(reply[logitsKey] as Uint8Array), vocab: reply[vocabKey] as number, ...(hidden ? {hidden} : {})}
}

/**
 * The exact check run by the PyTorch reference: it quantizes REF with its own implementation,
 * compares with MODEL's stored parts, dequantizes MODEL's parts itself, and returns the logits of
 * MODEL, of REF transformed, and of REF.
 */
export async function torchExact(
  ref: Checkpoint, model: Checkpoint, tokens: number[], options: {device?: string; python?: string; weights?: boolean; onPhase?: (step: string) => void},
): Promise<{weights?: ExactWeights; model: {logits: Float32Array; vocab: number; hidden?: Float32Array[]}; expected: {logits: Float32Array; vocab: number; hidden?: Float32Array[]}; reference: {logits: Float32Array; vocab: number}; device: string}> {
  const step = options.onPhase ?? (() => undefined)
  step('start Python')
  const worker = await startChecked(options)
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-torch-'))
  try {
    const reference = path.join(dir, 'reference.safetensors')
    const stored = path.join(dir, 'stored.safetensors')
    step('hand over weights')
    await drain(writeSafetensors(reference, handoverRecords(ref)))
    const {records, plan} = storedHandover(model)
    await drain(writeSafetensors(stored, records, {[PLAN_METADATA_KEY]: JSON.stringify(plan)}))
    step('load, compare weights, forward')
    const reply = await worker.call({op: 'exact', reference, stored, config: model.config, tokens, device: options.device ?? 'auto', collect_hidden: true})
    const byName = new Map((reply.tensors as PyTensorResult[]).map((t) => [t.name, tensorFromPython(t)]))
    const tensors = model.tensors.map((t) => byName.get(t.name) ?? {name: t.name, segments: [], elements: 0, identicalElements: 0, blocks: 0, identicalBlocks: 0, mismatchedBlocks: 0, accepted: {}, problem: 'not compared by the PyTorch reference'})
    return {
      ...(options.weights === false ? {} : {weights: summarize(tensors)}),
      model: side(reply, 'logits_model', 'vocab_model', 'hidden_model'),
      expected: side(reply, 'logits_expected', 'vocab_model', 'hidden_expected'),
      reference: side(reply, 'logits_reference', 'vocab_reference'),
      device: reply.device as string,
    }
  } finally {
    await fs.rm(dir, {recursive: true, force: true})
    await worker.close()
  }
}

/** A worker that said hello, with CUDA checked when asked for by name. */
async function startChecked(options: {device?: string; python?: string}): Promise<TorchWorker> {
  const worker = TorchWorker.start(findPython(options.python))
  try {
    const hello = await worker.call({op: 'hello'})
    if (options.device?.startsWith('cuda') && !hello.cuda) {
      throw new DependencyError('torch.cuda', `CUDA is not available to torch ${String(hello.torch)} in ${worker.python}: install a CUDA build of PyTorch and an NVIDIA driver, or use --device cpu`, {python: worker.python})
    }
    return worker
  } catch (error) {
    await worker.close()
    throw error
  }
}

/** One model through the PyTorch reference (verify without --against). */
export async function torchSingle(model: Checkpoint, tokens: number[], options: {device?: string; python?: string; onPhase?: (step: string) => void}): Promise<{logits: Float32Array; vocab: number; device: string}> {
  const step = options.onPhase ?? (() => undefined)
  step('start Python')
  const worker = await startChecked(options)
  try {
    step('hand over weights')
    const {file, remove} = await handoverFile(model)
    try {
      step('load, forward')
      const r = await torchForward(worker, file, model, tokens, {device: options.device})
      return {logits: r.logits, vocab: r.vocab, device: r.device}
    } finally {
      await remove()
    }
  } finally {
    await worker.close()
  }
}
