/**
 * `verify`: does this artifact compute what the source computes? Runs the reference forward pass
 * (a backend from ./backends) on the model — and on a reference model when given — then compares
 * weights, logits and per-layer hidden states with thresholds chosen from the conversion path.
 * Returns a typed report; `assertPassed` turns a failed report into a VerificationError.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {VerificationError} from '../errors.js'
import {openCheckpoint} from '../formats/registry.js'
import {type Checkpoint, type FormatName, type Quantization, type ReadOptions} from '../formats/types.js'
import {writeSafetensors} from '../formats/safetensors/write.js'
import {atomicFile} from '../io/atomic.js'
import {writeJsonFile} from '../io/file.js'
import {f32Record} from '../tensor/record.js'
import {backendFor} from './backends/index.js'
import {type BackendResult} from './backends/types.js'
import {
  compareHidden, compareLogits, compareWeights, conversionPath, DEFAULT_THRESHOLDS, firstDivergentLayer, fmt,
  type LayerDivergence, type LogitMetrics, type PathKind, type Thresholds, logitFailures, type WeightReport,
} from './compare.js'
import {checkTokens} from './engine/index.js'
import {drain} from '../progress.js'

export interface VerifyOptions {
  /** Reference model (any format) to compare against. */
  against?: string | Checkpoint
  /** ts (default) or torch, or any backend in BACKENDS. */
  backend?: string
  device?: string
  python?: string
  /** Explicit token ids; otherwise a prompt of `promptLength` ids drawn from `seed`. */
  tokens?: number[]
  promptLength?: number
  seed?: number
  /** Force the threshold set instead of deriving it from dtype/quantization. */
  path?: PathKind
  /** Override single thresholds of the chosen set. */
  thresholds?: Partial<Thresholds>
  /** Compare canonical weights too (default: true when `against` is given). */
  weights?: boolean
  /** Write the model's logits [T, vocab] as a safetensors file (one F32 tensor `logits`). */
  saveLogits?: string
  force?: boolean
}

export interface SideInfo {
  path: string
  format: string
  dtype: string
  quantization?: Quantization
  vocab: number
  seconds: number
}

export interface VerifyReport {
  pass: boolean
  backend: string
  device: string
  tokens: number[]
  model: SideInfo
  against?: SideInfo
  path?: PathKind
  thresholds?: Thresholds
  logits?: LogitMetrics
  layers?: LayerDivergence[]
  firstDivergentLayer: number | null
  weights?: WeightReport
  firstDivergentTensor: string | null
  /** Without a reference: argmax per position and whether every logit is finite. */
  summary?: {top1: number[]; finite: boolean; logitMin: number; logitMax: number}
  failures: string[]
  savedLogits?: string
}

/** DESIGN §7 measures verify on 32 tokens; shorter prompts make mean KL a noisy estimate. */
export const DEFAULT_PROMPT_LENGTH = 32

/** A deterministic prompt: BOS (1), then ids in [3, vocab) drawn from `seed` (xorshift32). */
export function promptTokens(length: number, seed: number, vocab: number): number[] {
  let s = (seed ^ 0x9e3779b9) >>> 0 || 1
  const out = [1]
  while (out.length < length) {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    out.push(3 + (s % Math.max(1, vocab - 3)))
  }
  return out.slice(0, length)
}

async function open(model: string | Checkpoint): Promise<{checkpoint: Checkpoint; owned: boolean}> {
  return typeof model === 'string' ? {checkpoint: await openCheckpoint(model), owned: true} : {checkpoint: model, owned: false}
}

function vocabOf(checkpoint: Checkpoint): number {
  return checkpoint.tensors.find((t) => t.name === 'token_embeddings.weight')?.shape[0] ?? checkpoint.config.vocab_size
}

export async function verify(model: string | Checkpoint, options: VerifyOptions = {}): Promise<VerifyReport> {
  const backend = backendFor(options.backend ?? 'ts')
  const device = options.device ?? 'auto'
  const opened = [await open(model)]
  try {
    const cand = opened[0]!.checkpoint
    const ref = options.against === undefined ? undefined : (opened.push(await open(options.against)), opened[1]!.checkpoint)
    const vocab = Math.min(vocabOf(cand), ref ? vocabOf(ref) : Infinity)
    const tokens = options.tokens ?? promptTokens(options.promptLength ?? DEFAULT_PROMPT_LENGTH, options.seed ?? 0, Math.min(vocab, cand.config.vocab_size))
    checkTokens(tokens, vocab)
    const run = async (checkpoint: Checkpoint, path: string): Promise<{result: BackendResult; info: SideInfo}> => {
      const t0 = performance.now()
      const result = await backend.run({path, checkpoint}, tokens, {device, python: options.python, collectHidden: Boolean(ref)})
      const info: SideInfo = {
        path, format: checkpoint.format, dtype: checkpoint.extras.dtype,
        ...(checkpoint.extras.quantization ? {quantization: checkpoint.extras.quantization} : {}),
        vocab: result.vocab, seconds: (performance.now() - t0) / 1000,
      }
      return {result, info}
    }
    const modelRun = await run(cand, typeof model === 'string' ? model : cand.path)
    let savedLogits: string | undefined
    if (options.saveLogits) savedLogits = await saveLogits(options.saveLogits, modelRun.result.logits, tokens.length, modelRun.result.vocab, options.force ?? false)
    const base = {backend: backend.name, device, tokens, model: modelRun.info, ...(savedLogits ? {savedLogits} : {})}

    if (!ref) {
      const logits = modelRun.result.logits
      let logitMin = Infinity
      let logitMax = -Infinity
      let finite = true
      for (const v of logits) {
        if (!Number.isFinite(v)) finite = false
        else {
          if (v < logitMin) logitMin = v
          if (v > logitMax) logitMax = v
        }
      }
      const top1 = compareLogits(logits, logits, tokens.length, modelRun.result.vocab).top1Reference
      return {
        ...base, pass: finite, summary: {top1, finite, logitMin, logitMax},
        firstDivergentLayer: null, firstDivergentTensor: null, failures: finite ? [] : ['logits contain NaN or Inf'],
      }
    }

    const refRun = await run(ref, typeof options.against === 'string' ? options.against : ref.path)
    const path = options.path ?? conversionPath(ref.extras, cand.extras)
    const thresholds: Thresholds = {...DEFAULT_THRESHOLDS[path], ...options.thresholds}
    const logits = compareLogits(refRun.result.logits, modelRun.result.logits, tokens.length, refRun.result.vocab, modelRun.result.vocab)
    const failures = logitFailures(logits, thresholds)
    const layers = refRun.result.hidden && modelRun.result.hidden ? compareHidden(refRun.result.hidden, modelRun.result.hidden) : undefined
    const layer = layers ? firstDivergentLayer(layers, thresholds.hiddenRel) : null

    let weights: WeightReport | undefined
    if (options.weights ?? true) {
      weights = await compareWeights(ref.tensors, cand.tensors, {
        mode: thresholds.weights, path, dtype: cand.extras.dtype, quantization: cand.extras.quantization ?? ref.extras.quantization,
      })
      if (weights.failing.length > 0) {
        const first = weights.failing[0]!
        failures.push(`${weights.failing.length} tensor(s) differ beyond the ${weights.mode === 'exact' ? 'bit-exact' : 'error-bound'} check, first ${first.name}${first.problem ? ` (${first.problem})` : ` (max |Δ| ${fmt(first.maxAbs)}, ${first.outOfBound} elements)`}`)
      }
    }
    return {
      ...base, against: refRun.info, pass: failures.length === 0, path, thresholds, logits,
      ...(layers ? {layers} : {}), firstDivergentLayer: failures.length > 0 ? layer ?? (layers ? layers.length : null) : null,
      ...(weights ? {weights} : {}), firstDivergentTensor: weights?.firstTensor ?? null, failures,
    }
  } finally {
    for (const o of opened) if (o.owned) await o.checkpoint.close()
  }
}

/** The report file `convert --verify` leaves in folder outputs (read by `push` for the model card). */
export const REPORT_FILE = 'openelm-verify.json'

/**
 * Verify a conversion's output against its source with the ts backend; for folder outputs the
 * report is written to `<out>/openelm-verify.json` (atomically). Returns the report (pass or fail).
 */
export async function verifyConversion(
  source: string, out: string, options: Omit<VerifyOptions, 'against'> = {}, sourceRead: ReadOptions & {format?: FormatName} = {},
): Promise<VerifyReport & {reportFile?: string}> {
  // The source is read as the conversion read it (--format, --ema, --config).
  const reference = await openCheckpoint(source, sourceRead)
  let report: VerifyReport
  try {
    report = await verify(out, {backend: 'ts', ...options, against: reference})
  } finally {
    await reference.close()
  }
  const stat = await fs.stat(out)
  if (!stat.isDirectory()) return report
  const reportFile = path.join(out, REPORT_FILE)
  const events = atomicFile(reportFile, true, async function* (tmp) {
    await writeJsonFile(tmp, report)
  })
  await drain(events)
  return {...report, reportFile}
}

async function saveLogits(file: string, logits: Float32Array, T: number, vocab: number, force: boolean): Promise<string> {
  const events = atomicFile(file, force, (tmp) => writeSafetensors(tmp, [f32Record('logits', [T, vocab], logits)]))
  await drain(events)
  return file
}

/** Where the report says the divergence starts, as words. */
export function divergenceText(report: VerifyReport): string {
  const parts: string[] = []
  const layerCount = report.layers?.length
  if (report.firstDivergentLayer !== null) {
    parts.push(report.firstDivergentLayer === layerCount
      ? `hidden states agree through the last layer; divergence is in the final norm / output layer`
      : `first divergent layer: ${report.firstDivergentLayer} (of ${layerCount})`)
  }
  if (report.firstDivergentTensor) parts.push(`first differing tensor: ${report.firstDivergentTensor}`)
  return parts.join('; ')
}

/** Throw a VerificationError (exit code 5) naming what failed, with the whole report in its details. */
export function assertPassed(report: VerifyReport): VerifyReport {
  if (report.pass) return report
  const where = divergenceText(report)
  throw new VerificationError('verify.failed', `verification failed (${report.path ?? 'single model'}): ${report.failures.join('; ')}${where ? `; ${where}` : ''}`, {report})
}
