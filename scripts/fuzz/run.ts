/**
 * Running and classifying fuzz cases.
 *
 * Case k (with master seed S) takes seed k mod |seeds| and the mutation drawn from an RNG seeded
 * by (S, k): any case replays from its number alone. A case converts the mutated checkpoint to
 * HF in-process (what `openelm convert --to hf` runs), then reads the output back, runs the TS
 * forward pass on it, and compares everything with the seed's own conversion.
 *
 * Cases run in a worker process that reports each case as one JSON line; the parent watches it,
 * so a hang (no line for HANG_MS), a signal (the worker dies) or a peak RSS above the budget is
 * pinned on the case in flight, and the worker is restarted after the case.
 */
import {spawn} from 'node:child_process'
import {promises as fs, rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import {convert} from '../../src/convert.js'
import {OpenElmError} from '../../src/errors.js'
import {openCheckpoint} from '../../src/formats/registry.js'
import {linspace, makeDivisible, type OpenElmConfig, pyRound2} from '../../src/model/config.js'
import {toFloat32} from '../../src/tensor/dtype.js'
import {readChunks} from '../../src/tensor/record.js'
import {runForward} from '../../src/verify/engine/index.js'
import {caseRng, chooseMutation, type Mutation} from './mutate.js'
import {makeSeeds, type Seed} from './seeds.js'

/** The product's memory target (DESIGN §7): no input may push a run past it. */
export const MEMORY_LIMIT_BYTES = 300 * 1024 * 1024
/** A case with no answer for this long is a hang (the slowest clean case takes well under a second). */
export const HANG_MS = 30_000

/**
 * Self-test of the watchdog (test/fuzz.test.ts): `OPENELM_FUZZ_SELFTEST=hang|memory|signal:<case>`
 * makes the worker misbehave on that case, so the parent's classes are shown to fire.
 */
function selfTest(caseNo: number): void {
  const [what, at] = (process.env.OPENELM_FUZZ_SELFTEST ?? '').split(':')
  if (Number(at) !== caseNo) return
  if (what === 'hang') for (;;) { /* a synchronous loop no timer can interrupt */ }
  if (what === 'memory') (globalThis as {ballast?: Buffer}).ballast = Buffer.alloc(400 * 2 ** 20, 1)
  if (what === 'signal') process.kill(process.pid, 'SIGSEGV')
}
/** The longest error message a person should see (base.ts cuts at 2000; readers should stay far below). */
const MAX_MESSAGE_CHARS = 1000
const PROMPT = [1, 2, 3, 5, 8]

export const CLASSES = ['accept', 'reject', 'internal', 'message', 'leftover', 'hang', 'memory', 'signal', 'wrong'] as const
export type CaseClass = (typeof CLASSES)[number]
/** Classes that are findings (must be zero). */
export const FINDINGS: readonly CaseClass[] = ['internal', 'message', 'leftover', 'hang', 'memory', 'signal', 'wrong']

export interface CaseResult {
  case: number
  seed: string
  mutation: string
  kind: string
  class: CaseClass
  /** The error code of a rejection, or why the case is a finding. */
  detail: string
  ms: number
  /** Peak RSS of the process running the case, bytes. */
  maxRss?: number
}

interface Digest {
  config: OpenElmConfig
  shapes: string
  tensors: Map<string, Float32Array>
  finite: boolean
}

async function digestOf(dir: string): Promise<Digest> {
  const checkpoint = await openCheckpoint(dir)
  try {
    const tensors = new Map<string, Float32Array>()
    for (const t of checkpoint.tensors) {
      const parts: Float32Array[] = []
      for await (const chunk of readChunks(t)) parts.push(toFloat32(chunk, t.dtype))
      const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0))
      let o = 0
      for (const p of parts) {
        all.set(p, o)
        o += p.length
      }
      tensors.set(t.name, all)
    }
    const forward = await runForward(checkpoint, PROMPT.filter((t) => t < checkpoint.config.vocab_size), {threads: 0})
    return {
      config: checkpoint.config,
      shapes: checkpoint.tensors.map((t) => `${t.name}:${t.shape.join('x')}`).join(','),
      tensors,
      finite: forward.logits.every(Number.isFinite),
    }
  } finally {
    await checkpoint.close()
  }
}

function changedElements(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.max(a.length, b.length)
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length)
  let n = 0
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) n++
  return n
}

/** What Hugging Face's OpenELMConfig builds from qkv_multipliers (it ignores stored head lists). */
function hfHeads(c: OpenElmConfig): number[] {
  return linspace(c.qkv_multipliers[0], c.qkv_multipliers[1], c.num_transformer_layers).map(pyRound2)
    .map((m) => makeDivisible(c.model_dim * m, c.head_dim * c.num_gqa_groups) / c.head_dim)
}

/** Judge an accepted case against the seed's conversion; undefined when the acceptance is right. */
function judge(m: Mutation, base: Digest, got: Digest): string | undefined {
  if (got.shapes !== base.shapes) return 'accepted with different tensor names or shapes'
  if (hfHeads(got.config).some((q, i) => q !== got.config.num_query_heads[i])) return 'accepted a config whose head lists contradict qkv_multipliers'
  const configSame = JSON.stringify(got.config) === JSON.stringify(base.config)
  const changed: [string, number][] = []
  for (const [name, values] of base.tensors) {
    const n = changedElements(values, got.tensors.get(name)!)
    if (n > 0) changed.push([name, n])
  }
  const total = changed.reduce((a, [, n]) => a + n, 0)
  if (!got.finite && (m.kind === 'edit' || m.kind === 'structure')) return 'accepted a model whose logits are not finite'
  switch (m.kind) {
    case 'structure':
      if (!configSame) return 'accepted a structural change with a different config'
      if (total > 0) return `accepted a structural change that alters ${total} values (${changed[0]![0]})`
      return undefined
    case 'bytes':
      // A byte inside a metadata value can turn one valid config into another (a GGUF context
      // length, a float): then it is an edit, and the tensors must be untouched and the logits finite.
      if (!configSame) return total > 0 ? `a byte change alters the config and ${total} tensor values` : got.finite ? undefined : 'a byte change gives a config with non-finite logits'
      if (total > 64 * (m.touched ?? 1) + 64) return `a ${m.touched}-byte change alters ${total} values in ${changed.length} tensors`
      return undefined
    case 'tensor':
      if (!configSame) return 'accepted a tensor relabel with a different config'
      if (changed.length > 1) return `a one-tensor change alters ${changed.length} tensors`
      return undefined
    case 'edit':
      if (total > 0) return `a config edit alters ${total} tensor values (${changed[0]![0]})`
      return undefined
  }
}

export interface Prepared {
  seeds: Seed[]
  bytes: Map<string, Map<string, Buffer>>
  baselines: Map<string, Digest>
  work: string
}

export async function prepare(): Promise<Prepared> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-fuzz-'))
  const seeds = await makeSeeds(path.join(work, 'seeds'))
  const bytes = new Map<string, Map<string, Buffer>>()
  const baselines = new Map<string, Digest>()
  for (const seed of seeds) {
    bytes.set(seed.name, new Map(await Promise.all(seed.files.map(async (f) => [f, await fs.readFile(path.join(seed.dir, f))] as [string, Buffer]))))
    const out = path.join(work, `baseline-${seed.name}`)
    await drain(convert(path.join(seed.dir, seed.open), 'hf', out, {}, {}))
    baselines.set(seed.name, await digestOf(out))
  }
  return {seeds, bytes, baselines, work}
}

async function drain<T>(events: AsyncGenerator<unknown, T>): Promise<T> {
  for (;;) {
    const step = await events.next()
    if (step.done) return step.value
  }
}

export function describeCase(prepared: Prepared, masterSeed: number, caseNo: number): {seed: Seed; mutation: Mutation} {
  const seed = prepared.seeds[caseNo % prepared.seeds.length]!
  const mutation = chooseMutation(seed, prepared.bytes.get(seed.name)!, caseRng(masterSeed, caseNo))
  return {seed, mutation}
}

/** Run one case in this process. */
export async function runCase(prepared: Prepared, masterSeed: number, caseNo: number): Promise<CaseResult> {
  const start = performance.now()
  let seed: Seed
  let mutation: Mutation
  try {
    ;({seed, mutation} = describeCase(prepared, masterSeed, caseNo))
  } catch (error) {
    return {case: caseNo, seed: '?', mutation: `mutator failed: ${(error as Error).message}`, kind: '?', class: 'internal', detail: 'fuzzer bug', ms: 0}
  }
  const dir = path.join(prepared.work, `case-${caseNo}`)
  const files = prepared.bytes.get(seed.name)!
  let mutated: Buffer
  try {
    mutated = mutation.apply(files.get(mutation.file)!)
  } catch (error) {
    return {case: caseNo, seed: seed.name, mutation: mutation.description, kind: mutation.kind, class: 'internal', detail: `fuzzer: mutation failed: ${(error as Error).message}`, ms: 0}
  }
  await fs.mkdir(dir, {recursive: true})
  for (const [f, b] of files) {
    await fs.mkdir(path.dirname(path.join(dir, f)), {recursive: true})
    await fs.writeFile(path.join(dir, f), f === mutation.file ? mutated : b)
  }
  const result = (cls: CaseClass, detail: string): CaseResult => ({
    case: caseNo, seed: seed.name, mutation: mutation.description, kind: mutation.kind, class: cls, detail, ms: Math.round(performance.now() - start),
    maxRss: process.resourceUsage().maxRSS * 1024,
  })
  const out = path.join(dir, 'out-hf')
  try {
    try {
      await drain(convert(path.join(dir, seed.open), 'hf', out, {}, {}))
    } catch (error) {
      const before = new Set(files.keys())
      const left = (await listAll(dir)).filter((f) => !before.has(f))
      if (left.length > 0) return result('leftover', `failed convert left ${left.join(', ')}`)
      if (!(error instanceof OpenElmError)) return result('internal', `${(error as Error).name}: ${(error as Error).message.slice(0, 200)}`)
      const m = error.message
      if (m.includes('\n') || m.length > MAX_MESSAGE_CHARS || /\bundefined\b|\[object /.test(m)) return result('message', `${error.code}: ${JSON.stringify(m.slice(0, 200))}`)
      return result('reject', error.code)
    }
    const changedSource = !(await fs.readFile(path.join(dir, mutation.file))).equals(mutated)
    if (changedSource) return result('wrong', 'the source file changed')
    let got: Digest
    try {
      got = await digestOf(out)
    } catch (error) {
      return result('wrong', `the converted output does not read back: ${(error as Error).message.slice(0, 200)}`)
    }
    const verdict = judge(mutation, prepared.baselines.get(seed.name)!, got)
    return verdict ? result('wrong', verdict) : result('accept', 'valid, judged against the seed')
  } catch (error) {
    return result('internal', `fuzzer: ${(error as Error).message.slice(0, 200)}`)
  } finally {
    await fs.rm(dir, {recursive: true, force: true})
  }
}

async function listAll(dir: string, base = dir): Promise<string[]> {
  const out: string[] = []
  for (const e of await fs.readdir(dir, {withFileTypes: true})) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) {
      const inner = await listAll(p, base)
      out.push(...(inner.length > 0 ? inner : [path.relative(base, p) + '/']))
    } else out.push(path.relative(base, p))
  }
  return out
}

// ---- the worker and its watchdog -------------------------------------------------------------

const SCRIPT = path.resolve(import.meta.dirname, '..', 'fuzz.ts')
const REPO = path.resolve(import.meta.dirname, '..', '..')

export interface FuzzOptions {
  cases: number
  seed: number
  /** First case number (default 0). */
  first?: number
  /** Worker processes run side by side (default 1). */
  jobs?: number
  onResult?: (r: CaseResult) => void
  /** Override HANG_MS (the watchdog's self-test). */
  hangMs?: number
}

/** Run cases [first, first + cases) in watched worker processes. */
export async function runFuzz(options: FuzzOptions): Promise<CaseResult[]> {
  const first = options.first ?? 0
  const jobs = Math.max(1, options.jobs ?? 1)
  const all: CaseResult[] = []
  const per = Math.ceil(options.cases / jobs)
  await Promise.all(Array.from({length: jobs}, async (_, j) => {
    const from = first + j * per
    const to = Math.min(first + options.cases, from + per)
    let next = from
    while (next < to) {
      const results = await runWorker(options.seed, next, to, options.hangMs ?? HANG_MS)
      for (const r of results) {
        all.push(r)
        options.onResult?.(r)
      }
      next = results.length > 0 ? results.at(-1)!.case + 1 : next + 1
    }
  }))
  return all.sort((a, b) => a.case - b.case)
}

/** One worker from `from` until it finishes `to`, or until a case is a hang, signal or memory finding. */
function runWorker(masterSeed: number, from: number, to: number, hangMs: number): Promise<CaseResult[]> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', SCRIPT, '--worker', '--seed', String(masterSeed), '--first', String(from), '--to', String(to)], {cwd: REPO, stdio: ['ignore', 'pipe', 'pipe']})
    const results: CaseResult[] = []
    let inFlight: {case: number; seed: string; mutation: string; kind: string; at: number} | undefined
    let finished = false
    let stderr = ''
    // The worker's temp folder: removed here too, since a killed worker cannot clean up.
    let workDir: string | undefined
    child.stderr.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-2000)
    })
    const finish = (extra?: CaseResult) => {
      if (finished) return
      finished = true
      clearInterval(watch)
      if (extra) results.push(extra)
      resolve(results)
    }
    const watch = setInterval(() => {
      if (inFlight && performance.now() - inFlight.at > hangMs) {
        const c = inFlight
        inFlight = undefined
        child.kill('SIGKILL')
        finish({case: c.case, seed: c.seed, mutation: c.mutation, kind: c.kind, class: 'hang', detail: `no answer in ${hangMs / 1000} s`, ms: hangMs})
      }
    }, 500)
    readline.createInterface({input: child.stdout}).on('line', (line) => {
      let msg: {start?: boolean} & CaseResult
      try {
        msg = JSON.parse(line)
      } catch {
        return
      }
      if ((msg as {work?: string}).work) {
        workDir = (msg as {work?: string}).work
        return
      }
      if (msg.start) {
        inFlight = {case: msg.case, seed: msg.seed, mutation: msg.mutation, kind: msg.kind, at: performance.now()}
        return
      }
      inFlight = undefined
      if ((msg.maxRss ?? 0) > MEMORY_LIMIT_BYTES) {
        results.push({...msg, class: 'memory', detail: `peak RSS ${Math.round(msg.maxRss! / 2 ** 20)} MB (limit ${MEMORY_LIMIT_BYTES / 2 ** 20} MB); was ${msg.class}: ${msg.detail}`})
        child.kill('SIGKILL') // a fresh worker resets the peak
        finish()
        return
      }
      results.push(msg)
    })
    child.on('exit', (code, signal) => {
      if (workDir) rmSync(workDir, {recursive: true, force: true})
      if (inFlight) {
        const c = inFlight
        finish({case: c.case, seed: c.seed, mutation: c.mutation, kind: c.kind, class: 'signal', detail: `worker ended (${signal ?? `exit ${code}`}): ${stderr.trim().split('\n').at(-1) ?? ''}`, ms: Math.round(performance.now() - c.at)})
      } else if (!finished && results.length === 0 && code !== 0) {
        finish({case: from, seed: '?', mutation: '(worker failed to start)', kind: '?', class: 'internal', detail: stderr.trim().split('\n').slice(-3).join(' | '), ms: 0})
      } else finish()
    })
  })
}

/** The worker side: run cases, one JSON line when each starts and one when it ends. */
export async function worker(masterSeed: number, from: number, to: number): Promise<void> {
  const prepared = await prepare()
  process.stdout.write(`${JSON.stringify({work: prepared.work})}\n`)
  try {
    for (let k = from; k < to; k++) {
      let start = {case: k, seed: '?', mutation: '?', kind: '?'}
      try {
        const {seed, mutation} = describeCase(prepared, masterSeed, k)
        start = {case: k, seed: seed.name, mutation: mutation.description, kind: mutation.kind}
      } catch {
        // runCase reports the mutator's failure
      }
      process.stdout.write(`${JSON.stringify({start: true, ...start})}\n`)
      selfTest(k)
      const r = await runCase(prepared, masterSeed, k)
      process.stdout.write(`${JSON.stringify(r)}\n`)
    }
  } finally {
    await fs.rm(prepared.work, {recursive: true, force: true})
  }
}

export function classCounts(results: readonly CaseResult[]): Record<CaseClass, number> {
  const counts = Object.fromEntries(CLASSES.map((c) => [c, 0])) as Record<CaseClass, number>
  for (const r of results) counts[r.class]++
  return counts
}
