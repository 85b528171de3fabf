/**
 * `verifyPeft`: does a model converted from a CoreNet LoRA/DoRA checkpoint (adapters merged)
 * compute what the PEFT model computes with its adapters UNMERGED? The model runs on the TS engine;
 * the PEFT checkpoint runs on the PyTorch reference's unmerged forward (python/peft_ref.py, op
 * `forward_peft`), which rebuilds the adapters from their stored tensors and CoreNet's definitions.
 *
 * Three checks, each naming what diverges:
 *  - logits: max |Δ| ≤ 1e-4 × the logit scale (max(1, max |reference logit|)): the lossless threshold;
 *  - per-layer hidden states: the first layer whose relative difference exceeds the lossless 1e-5;
 *  - per adapted weight: the reference runs that module alone, unmerged, on probe inputs, and the
 *    model's weight must give the same outputs (relative 1e-5); unadapted tensors must be bit-exact.
 *    The first failing one (canonical order) is the first divergent tensor.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {DependencyError, UsageError, VerificationError} from '../errors.js'
import {unmergedRecords} from '../formats/corenet/peft.js'
import {openCheckpoint} from '../formats/registry.js'
import {writeSafetensors} from '../formats/safetensors/write.js'
import {type Checkpoint, type FormatName, type PeftInfo, type ReadOptions} from '../formats/types.js'
import {expectedTensors} from '../model/tensors.js'
import {drain} from '../progress.js'
import {dtypeSize, isFloatDType, toFloat32} from '../tensor/dtype.js'
import {castRecord, type TensorRecord} from '../tensor/record.js'
import {findPython, TorchWorker} from './backends/torch.js'
import {compareHidden, compareLogits, firstDivergentLayer, fmt, type LayerDivergence, type LogitMetrics} from './compare.js'
import {compareStored} from './exact.js'
import {checkTokens, runForward} from './engine/index.js'

/** The lossless logit threshold, relative to the logit scale (max(1, max |reference logit|)). */
export const PEFT_LOGIT_REL = 1e-4
/**
 * Probe outputs of one weight: max |Δ| / max(1, max |reference output|). f32 with the adapters
 * merged (TS, f64 sums) vs unmerged (torch, f32): measured ≤ 3e-7 on the fixtures; the faults the
 * tests inject (alpha for alpha/r, a transposed delta, DoRA without its norm) give 1e-2 and more.
 */
export const PEFT_PROBE_REL = 1e-5
export const DEFAULT_PEFT_PROMPT = 32
const DEFAULT_PROBE_ROWS = 4

export interface PeftVerifyOptions {
  /** How to open the PEFT checkpoint when given as a path (its peft settings, --ema, --config...). */
  read?: ReadOptions & {format?: FormatName}
  tokens?: number[]
  promptLength?: number
  seed?: number
  /** Reference device: auto | cpu | cuda. */
  device?: string
  python?: string
  /** Relative logit threshold (default PEFT_LOGIT_REL). */
  logitRel?: number
  probeRows?: number
  /** A running reference worker to reuse (left running); by default one is started and stopped. */
  worker?: TorchWorker
}

/** How the reference applies an embedding adapter, from the choice the merge made. */
export type EmbeddingSemantics = 'corenet' | 'tied' | 'none'

export interface PeftTensorCheck {
  name: string
  /** `weight`: an unadapted tensor (bit-exact); `probe`: an adapted weight; `input` / `output`: the embedding's two uses. */
  use: 'weight' | 'probe' | 'input' | 'output'
  maxAbs: number
  relative: number
  pass: boolean
}

export interface PeftVerifyReport {
  pass: boolean
  model: {path: string; format: FormatName; dtype: string; vocab: number}
  peft: {path: string; kind: PeftInfo['kind']; modules: number; embedding: EmbeddingSemantics}
  device: string
  tokens: number[]
  logits: LogitMetrics
  logitScale: number
  /** The absolute bound applied: logitRel × logitScale. */
  maxAbsAllowed: number
  layers: LayerDivergence[]
  firstDivergentLayer: number | null
  tensors: PeftTensorCheck[]
  firstDivergentTensor: string | null
  /**
   * With an embedding adapter merged into the tied table (or dropped): how far that model is from
   * CoreNet's own forward, which adapts the input lookup only. Reported, not gated.
   */
  corenetDeviation?: {maxAbs: number; relative: number; meanKl: number; top1: number}
  failures: string[]
  seconds: {model: number; reference: number}
}

function semanticsOf(info: PeftInfo): EmbeddingSemantics {
  if (info.embedding === 'unresolved') throw new UsageError('peft.unresolved', `the embedding adapter's treatment is not chosen: ${info.unresolved.join('; ')}`)
  return info.embedding === 'merge' ? 'tied' : info.embedding === 'drop' ? 'none' : 'corenet'
}

/** xorshift32 values in [-1, 1), deterministic. */
function noise(n: number, seed: number): Float32Array {
  let s = (seed ^ 0x2545f491) >>> 0 || 1
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    out[i] = s / 2 ** 31 - 1
  }
  return out
}

/** BOS, then ids in [3, vocab) from `seed`. */
function prompt(length: number, seed: number, vocab: number): number[] {
  const span = Math.max(1, vocab - 3)
  const values = noise(length - 1, seed ^ 0x51ed)
  return [1, ...[...values].map((v) => 3 + Math.min(span - 1, Math.floor(((v + 1) / 2) * span)))]
}

/** y[n, rows] = x[n, cols] · Wᵀ with W [rows, cols] read a block of rows at a time; f64 sums. */
async function applyWeight(record: TensorRecord, x: Float32Array, n: number, rowLimit = record.shape[0]!): Promise<Float32Array> {
  const cols = record.shape[1]!
  const size = dtypeSize(record.dtype)
  const y = new Float32Array(n * rowLimit)
  const blockRows = Math.max(1, Math.floor((1 << 20) / (cols * size)))
  for (let r0 = 0; r0 < rowLimit; r0 += blockRows) {
    const r1 = Math.min(rowLimit, r0 + blockRows)
    const w = toFloat32(await record.read(r0 * cols * size, r1 * cols * size), record.dtype)
    for (let i = 0; i < n; i++) {
      for (let r = r0; r < r1; r++) {
        let acc = 0
        const wo = (r - r0) * cols
        const xo = i * cols
        for (let j = 0; j < cols; j++) acc += x[xo + j]! * w[wo + j]!
        y[i * rowLimit + r] = acc
      }
    }
  }
  return y
}

async function readRows(record: TensorRecord, ids: readonly number[]): Promise<Float32Array> {
  const cols = record.shape[1]!
  const rowBytes = cols * dtypeSize(record.dtype)
  const out = new Float32Array(ids.length * cols)
  for (const [i, id] of ids.entries()) out.set(toFloat32(await record.read(id * rowBytes, (id + 1) * rowBytes), record.dtype), i * cols)
  return out
}

/** max |a - b| and max |ref| over [n, refWidth] vs [n, candWidth], the first `width` columns. */
function difference(ref: Float32Array, refWidth: number, cand: Float32Array, candWidth: number, n: number, width: number): {maxAbs: number; relative: number} {
  let maxAbs = 0
  let scale = 0
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < width; j++) {
      const r = ref[i * refWidth + j]!
      const d = Math.abs(r - cand[i * candWidth + j]!)
      if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : d
      if (Math.abs(r) > scale) scale = Math.abs(r)
    }
  }
  return {maxAbs, relative: maxAbs / Math.max(1, scale)}
}

function f32(bytes: Uint8Array): Float32Array {
  const copy = new Uint8Array(bytes.byteLength)
  copy.set(bytes)
  return new Float32Array(copy.buffer)
}

async function open(x: string | Checkpoint, read?: ReadOptions & {format?: FormatName}): Promise<{checkpoint: Checkpoint; owned: boolean}> {
  return typeof x === 'string' ? {checkpoint: await openCheckpoint(x, read), owned: true} : {checkpoint: x, owned: false}
}

export async function verifyPeft(model: string | Checkpoint, peftCheckpoint: string | Checkpoint, options: PeftVerifyOptions = {}): Promise<PeftVerifyReport> {
  const opened: {checkpoint: Checkpoint; owned: boolean}[] = []
  const scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-peft-'))
  let worker: TorchWorker | undefined
  try {
    opened.push(await open(peftCheckpoint, options.read))
    const peft = opened[0]!.checkpoint
    const info = peft.extras.peft
    if (!info) throw new UsageError('peft.none', `${peft.path} has no LoRA/DoRA adapters: nothing to verify against an unmerged reference`, {path: peft.path})
    const unmerged = unmergedRecords(info)
    if (!unmerged) throw new UsageError('peft.none', `${peft.path}: its adapters' unmerged tensors are not available`, {path: peft.path})
    const embedding = semanticsOf(info)
    opened.push(await open(model))
    const cand = opened[1]!.checkpoint
    const embeddingName = 'token_embeddings.weight'
    const candByName = new Map(cand.tensors.map((t) => [t.name, t]))
    const candEmbedding = candByName.get(embeddingName)
    const candVocab = candEmbedding?.shape[0] ?? cand.config.vocab_size
    const refVocab = peft.tensors.find((t) => t.name === embeddingName)?.shape[0] ?? peft.config.vocab_size
    const vocab = Math.min(candVocab, refVocab)
    const tokens = options.tokens ?? prompt(options.promptLength ?? DEFAULT_PEFT_PROMPT, options.seed ?? 0, vocab)
    checkTokens(tokens, vocab)

    // The model: TS engine.
    const t0 = performance.now()
    const mine = await runForward(cand, tokens, {collectHidden: true})
    const modelSeconds = (performance.now() - t0) / 1000

    // The probes: inputs per adapted weight (the embedding: ids for its lookup, hidden states for its output use).
    const rows = options.probeRows ?? DEFAULT_PROBE_ROWS
    const probeIds = [...new Set([...tokens, 0, vocab - 1])]
    const probes: {name: string; check: PeftTensorCheck['use']; tensor: string; shape: number[]; data: Float32Array}[] = []
    for (const [index, m] of info.modules.entries()) {
      const record = candByName.get(m.tensor)
      if (!record) continue
      if (m.type === 'embedding') {
        probes.push({name: `${m.tensor}@input`, check: 'input', tensor: m.tensor, shape: [probeIds.length], data: Float32Array.from(probeIds)})
        probes.push({name: `${m.tensor}@output`, check: 'output', tensor: m.tensor, shape: [rows, record.shape[1]!], data: noise(rows * record.shape[1]!, 1000 + index)})
      } else {
        probes.push({name: m.tensor, check: 'probe', tensor: m.tensor, shape: [rows, record.shape[1]!], data: noise(rows * record.shape[1]!, 1000 + index)})
      }
    }

    // The reference: the PEFT model, adapters unmerged, in PyTorch.
    worker = options.worker ?? TorchWorker.start(findPython(options.python))
    const hello = await worker.call({op: 'hello'})
    if (options.device?.startsWith('cuda') && !hello.cuda) {
      throw new DependencyError('torch.cuda', `CUDA is not available to torch ${String(hello.torch)} in ${worker.python}: use --device cpu`, {python: worker.python})
    }
    const handover = path.join(scratch, 'peft.safetensors')
    await drain(writeSafetensors(handover, unmerged.map((t) => (isFloatDType(t.dtype) ? t : castRecord(t, 'F32')))))
    const alphas = Object.fromEntries(info.modules.map((m) => [m.module, m.alpha!]))
    const rslora = Object.fromEntries(info.modules.map((m) => [m.module, m.rslora]))
    const request = {
      op: 'forward_peft', sources: [[handover, '']], alphas, rslora, config: peft.config, tokens,
      device: options.device ?? 'auto', collect_hidden: true, embedding,
    }
    const t1 = performance.now()
    const reply = await worker.call({...request, probes: probes.map((p) => ({name: p.name, shape: p.shape, data: new Uint8Array(p.data.buffer)}))})
    const referenceSeconds = (performance.now() - t1) / 1000
    const refLogits = f32(reply.logits as Uint8Array)
    const refHidden = (reply.hidden as Uint8Array[]).map(f32)

    // Logits and hidden states.
    const logits = compareLogits(refLogits, mine.logits, tokens.length, reply.vocab as number, mine.vocab)
    let logitScale = 1
    for (let t = 0; t < tokens.length; t++) for (let i = 0; i < logits.vocab; i++) logitScale = Math.max(logitScale, Math.abs(refLogits[t * (reply.vocab as number) + i]!))
    const maxAbsAllowed = (options.logitRel ?? PEFT_LOGIT_REL) * logitScale
    const layers = compareHidden(refHidden, mine.hidden!)
    const failures: string[] = []
    if (!(logits.maxAbs <= maxAbsAllowed)) failures.push(`max abs logit difference ${fmt(logits.maxAbs)} > ${fmt(maxAbsAllowed)} (${fmt(options.logitRel ?? PEFT_LOGIT_REL)} × logit scale ${fmt(logitScale)})`)
    const layer = firstDivergentLayer(layers, PEFT_PROBE_REL)

    // Per tensor, in canonical order: probes for adapted weights, bit-exact for the rest.
    const refProbes = new Map((reply.probes as {name: string; shape: number[]; data: Uint8Array}[]).map((p) => [p.name, p]))
    const checks = new Map<string, PeftTensorCheck[]>()
    for (const p of probes) {
      const ref = refProbes.get(p.name)!
      const record = candByName.get(p.tensor)!
      const refOut = f32(ref.data)
      let d: {maxAbs: number; relative: number}
      if (p.check === 'input') {
        const mineRows = await readRows(record, probeIds)
        d = difference(refOut, record.shape[1]!, mineRows, record.shape[1]!, probeIds.length, record.shape[1]!)
      } else if (p.check === 'output') {
        const width = Math.min(ref.shape[1]!, record.shape[0]!)
        const mineOut = await applyWeight(record, p.data, rows, width)
        d = difference(refOut, ref.shape[1]!, mineOut, width, rows, width)
      } else {
        const mineOut = await applyWeight(record, p.data, rows)
        d = difference(refOut, ref.shape[1]!, mineOut, record.shape[0]!, rows, record.shape[0]!)
      }
      const list = checks.get(p.tensor) ?? []
      list.push({name: p.tensor, use: p.check, ...d, pass: d.relative <= PEFT_PROBE_REL})
      checks.set(p.tensor, list)
    }
    const adapted = new Set(probes.map((p) => p.tensor))
    const plain = peft.tensors.filter((t) => !adapted.has(t.name))
    // Unadapted tensors: exactly the base's, transformed as the model stores them (a cast, a quantizer).
    const exact = await compareStored({...peft, tensors: plain}, {...cand, tensors: cand.tensors.filter((t) => !adapted.has(t.name))})
    for (const t of plain) {
      const bad = exact.tensors.find((f) => f.name === t.name && (f.problem || f.mismatchedBlocks > 0))
      checks.set(t.name, [{name: t.name, use: 'weight', maxAbs: bad ? Infinity : 0, relative: bad ? Infinity : 0, pass: !bad}])
    }
    const tensors = expectedTensors(peft.config).flatMap((e) => checks.get(e.name) ?? [])
    const failing = tensors.filter((t) => !t.pass)
    if (failing.length > 0) {
      const first = failing[0]!
      const what = first.use === 'weight' ? 'differs from the PEFT checkpoint\'s base' : `differs from the unmerged reference${first.use === 'input' || first.use === 'output' ? ` (${first.use === 'input' ? 'input lookup' : 'tied output layer'})` : ''}`
      failures.push(`${failing.length} tensor check(s) fail, first ${first.name}: ${what}${first.use === 'weight' ? ' (not its exact transformation)' : `, max |Δ| ${fmt(first.maxAbs)}, relative ${fmt(first.relative)}`}`)
    }

    // How far the merged/dropped embedding adapter is from CoreNet's own (input-only) forward.
    let corenetDeviation: PeftVerifyReport['corenetDeviation']
    if (embedding !== 'corenet') {
      const own = await worker.call({...request, embedding: 'corenet', collect_hidden: false, probes: []})
      const m = compareLogits(f32(own.logits as Uint8Array), refLogits, tokens.length, own.vocab as number, reply.vocab as number)
      corenetDeviation = {maxAbs: m.maxAbs, relative: m.maxAbs / logitScale, meanKl: m.meanKl, top1: m.top1}
    }
    return {
      pass: failures.length === 0,
      model: {path: typeof model === 'string' ? model : cand.path, format: cand.format, dtype: cand.extras.dtype, vocab: candVocab},
      peft: {path: peft.path, kind: info.kind, modules: info.modules.length, embedding},
      device: String(reply.device), tokens, logits, logitScale, maxAbsAllowed, layers,
      firstDivergentLayer: failures.length > 0 ? layer ?? layers.length : null,
      tensors, firstDivergentTensor: failing[0]?.name ?? null,
      ...(corenetDeviation ? {corenetDeviation} : {}),
      failures, seconds: {model: modelSeconds, reference: referenceSeconds},
    }
  } finally {
    if (!options.worker) await worker?.close()
    for (const o of opened) if (o.owned) await o.checkpoint.close()
    await fs.rm(scratch, {recursive: true, force: true})
  }
}

/** Throw a VerificationError (exit code 5) naming the first divergent tensor and layer. */
export function assertPeftPassed(report: PeftVerifyReport): PeftVerifyReport {
  if (report.pass) return report
  const where = [
    report.firstDivergentTensor ? `first divergent tensor: ${report.firstDivergentTensor}` : '',
    report.firstDivergentLayer !== null ? (report.firstDivergentLayer === report.layers.length ? 'hidden states agree through the last layer' : `first divergent layer: ${report.firstDivergentLayer}`) : '',
  ].filter(Boolean).join('; ')
  throw new VerificationError('verify.peft_failed', `${report.model.path} does not compute what ${report.peft.path} computes with its adapters unmerged: ${report.failures.join('; ')}${where ? `; ${where}` : ''}`, {report})
}
