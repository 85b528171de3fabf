/**
 * `verify`: is this artifact the faithful conversion of its source, and what did the conversion
 * cost? Three separate answers (DESIGN §5):
 *
 * 1. Correctness, exact. Every transformation the tool applies is deterministic, so the reference
 *    applies the same transformation to REF with its own implementation (src/quant in the `ts`
 *    engine, src/verify/python/quant_ref.py in the `torch` one), compares what MODEL stores code
 *    for code (exact.ts), and runs both through the reference forward pass: logits must agree to
 *    the lossless threshold. A MODEL that is a sibling of REF rather than a conversion of it (an
 *    f16 GGUF against a bf16 folder of the same source) is recognised and gets quality only.
 * 2. The artifact's own runtime (runtime.ts): llama.cpp for GGUF, onnxruntime for ONNX, against
 *    the engine on the same artifact, with a tolerance for the runtime's arithmetic.
 * 3. Quality (quality.ts): KL, top-1 and perplexity against the float REF, gated only on request.
 *
 * Library code: returns a typed report; `assertPassed` turns a failed one into a VerificationError.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {DependencyError, UsageError, VerificationError} from '../errors.js'
import {openCheckpoint} from '../formats/registry.js'
import {schemeCensus} from '../formats/stored.js'
import {type Checkpoint, type FormatName, type ReadOptions} from '../formats/types.js'
import {writeSafetensors} from '../formats/safetensors/write.js'
import {atomicFile} from '../io/atomic.js'
import {writeJsonFile} from '../io/file.js'
import {drain} from '../progress.js'
import {f32Record} from '../tensor/record.js'
import {torchExact, torchSingle} from './backends/torch.js'
import {compareHidden, compareLogits, firstDivergentLayer, fmt, type LayerDivergence} from './compare.js'
import {checkTokens, MatmulPool, matmulThreads, runForward} from './engine/index.js'
import {closeSharedPool, requestedThreads, threadCount} from '../pool/index.js'
import {compareStored, decideRelation, expectedCheckpoint, type ExactWeights, type Relation} from './exact.js'
import {verifyPeft} from './peft.js'
import {measureQuality, type QualityGates, type QualityReport} from './quality.js'
import {type PromptInfo, type PromptOptions, resolvePrompt} from './prompt.js'
import {checkRuntimeApplies, FORMAT_RUNTIME, RUNTIMES, type RuntimeCheck, runtimeAvailable, runtimeCheck, type RuntimeName} from './runtime.js'

/** The reference engines: who computes the reference transformation and the forward passes. */
export const ENGINES = ['ts', 'torch'] as const
export type EngineName = (typeof ENGINES)[number]
/** What `--backend` accepts: an engine, or a runtime (the artifact then must run there; the engine is ts). */
export const BACKEND_NAMES = [...ENGINES, ...RUNTIMES] as const

/** Logits of MODEL and of REF transformed must agree this closely, relative to max(1, max |logit|). */
export const EXACT_LOGITS_REL = 1e-4
/** Hidden states: a layer diverges when max|Δh| / max(1, max|h|) exceeds this (same lossless spirit). */
const EXACT_HIDDEN_REL = 1e-5

export interface VerifyOptions {
  /** Reference model (any format) to compare against. */
  against?: string | Checkpoint
  /** How to open `against` when it is a path (--format, --ema, --config, LoRA/DoRA settings). */
  againstRead?: ReadOptions & {format?: FormatName}
  /** ts (default) or torch; onnxruntime / llama.cpp force that runtime (engine ts). */
  backend?: string
  /** The artifact's runtime: auto (its format's, when installed), none, or one by name. */
  runtime?: string
  /** auto | cpu | cuda: the torch engine's and the runtimes' device; the ts engine is CPU only. */
  device?: string
  python?: string
  /** Explicit token ids. */
  tokens?: number[]
  /** Text to tokenize with the model's tokenizer (or `tokenizer`), or a file of it. */
  text?: string
  textFile?: string
  tokenizer?: string
  /** Tokens of held-out corpus text (when a tokenizer is found) or of seeded ids (default 32). */
  promptLength?: number
  seed?: number
  /** Opt-in quality gates. */
  gates?: QualityGates
  /** Compare stored weights code for code (default true with a reference). */
  weights?: boolean
  /** Write the model's logits [T, vocab] as a safetensors file (one F32 tensor `logits`). */
  saveLogits?: string
  force?: boolean
  /**
   * Called when a phase starts (commands render it), with a step inside one as `phase: step`
   * (a backend's load and forward), and with no label when it ends.
   */
  onPhase?: (phase: string | undefined) => void
  /** Called as the current phase advances: `done` of `total` `unit` (tensors compared, layers run). */
  onCount?: (done: number, total: number, unit: string) => void
  /** The folder's other model files are verified too (convert --variants): no "name a file to read another" note. */
  variantsVerified?: boolean
  /**
   * The ts engine's forward pass of the reference itself, by prompt: verifies of several files against
   * one reference (convert --variants) share it instead of running the same pass once per file.
   */
  sourceForwards?: Map<string, {logits: Float32Array; vocab: number}>
}

export interface SideInfo {
  path: string
  format: string
  dtype: string
  /** Storage schemes and how many tensors use each (e.g. {"mlx_affine(4-bit g64 F16)": 113, "f16": 17}). */
  storage: Record<string, number>
  vocab: number
  seconds: number
}

export interface ExactLogits {
  maxAbs: number
  /** maxAbs / max(1, max |expected logit|). */
  relMaxAbs: number
  threshold: number
  meanAbs: number
  top1: number
  pass: boolean
}

export interface PeftCheck {
  pass: boolean
  relMaxAbs: number
  threshold: number
  firstDivergentTensor: string | null
  failures: string[]
  kind: string
  modules: number
  device: string
}

export interface VerifyReport {
  pass: boolean
  /**
   * What the verdict rests on: `exact` (MODEL is REF's transformation: codes and logits),
   * `quality-only` (MODEL is a sibling of REF, not a conversion of it), `finite` (no REF: the model
   * runs and its logits are finite, and its runtime agrees with the engine when one ran; nothing
   * was compared with a reference, so it is not called a pass of a conversion).
   */
  verdict: 'exact' | 'quality-only' | 'finite'
  /** The checks that ran, in words. */
  checks: string[]
  /** Who computed the reference side, and where. */
  /** The engine that ran; for ts, its matmul worker threads. */
  engine: {name: EngineName; device: string; threads?: number}
  tokens: number[]
  prompt: PromptInfo
  model: SideInfo
  against?: SideInfo
  relation?: Relation
  relationReason?: string
  weights?: ExactWeights
  logits?: ExactLogits
  layers?: LayerDivergence[]
  firstDivergentLayer: number | null
  firstDivergentTensor: string | null
  quality?: QualityReport
  runtime?: RuntimeCheck
  /** REF is a LoRA/DoRA checkpoint: its merge against the adapters applied unmerged. */
  peft?: PeftCheck
  /** Without a reference: argmax per position and whether every logit is finite. */
  summary?: {top1: number[]; finite: boolean; logitMin: number; logitMax: number}
  failures: string[]
  notes: string[]
  savedLogits?: string
  seconds: Record<string, number>
  /**
   * The output folder's other model files (an ONNX export's `--variants`), each verified against the
   * same source: `pass` above holds only when every one passed, and `failures` names the variant.
   */
  variants?: VariantReport[]
}

/** One more model file of the output folder, verified against the same source. */
export interface VariantReport {
  variant: string
  report: VerifyReport
}

/** The tokens: from MODEL's tokenizer, else REF's (a MODEL folder without tokenizer files, a REF with them). */
async function promptFor(model: Checkpoint, modelPath: string, ref: Checkpoint | undefined, refPath: string | undefined, options: VerifyOptions): Promise<{tokens: number[]; prompt: PromptInfo}> {
  const p: PromptOptions = {tokens: options.tokens, text: options.text, textFile: options.textFile, tokenizer: options.tokenizer, promptLength: options.promptLength, seed: options.seed}
  let own
  try {
    own = await resolvePrompt(model, modelPath, p)
  } catch (error) {
    if (!(error instanceof UsageError && error.code === 'verify.tokenizer' && ref && refPath)) throw error
    return resolvePrompt(ref, refPath, p)
  }
  if (own.prompt.source !== 'seeded' || !ref || !refPath) return own
  return resolvePrompt(ref, refPath, p)
}

async function open(model: string | Checkpoint, read?: ReadOptions & {format?: FormatName}): Promise<{checkpoint: Checkpoint; owned: boolean}> {
  return typeof model === 'string' ? {checkpoint: await openCheckpoint(model, read), owned: true} : {checkpoint: model, owned: false}
}

function vocabOf(checkpoint: Checkpoint): number {
  return checkpoint.tensors.find((t) => t.name === 'token_embeddings.weight')?.shape[0] ?? checkpoint.config.vocab_size
}

function sideInfo(checkpoint: Checkpoint, p: string, vocab: number, seconds: number): SideInfo {
  return {path: p, format: checkpoint.format, dtype: checkpoint.extras.dtype, storage: schemeCensus(checkpoint), vocab, seconds}
}

/** Settle engine, runtime and device from the options, refusing what cannot apply (before any work). */
export function resolveBackends(options: Pick<VerifyOptions, 'backend' | 'runtime' | 'device'>, model: Checkpoint): {engine: EngineName; runtime?: RuntimeName; forcedRuntime: boolean; device: string} {
  const backend = options.backend ?? 'ts'
  if (!(BACKEND_NAMES as readonly string[]).includes(backend)) throw new UsageError('verify.backend', `unknown backend "${backend}" (expected one of ${BACKEND_NAMES.join(', ')})`)
  const device = options.device ?? 'auto'
  if (!['auto', 'cpu', 'cuda'].includes(device)) throw new UsageError('verify.device', `unknown device "${device}" (expected auto, cpu or cuda)`)
  const runtimeOption = options.runtime ?? 'auto'
  if (runtimeOption !== 'auto' && runtimeOption !== 'none' && !(RUNTIMES as readonly string[]).includes(runtimeOption)) {
    throw new UsageError('verify.runtime', `unknown runtime "${runtimeOption}" (expected auto, none, ${RUNTIMES.join(', ')})`)
  }
  let engine: EngineName = 'ts'
  let runtime: RuntimeName | undefined
  let forcedRuntime = false
  if ((RUNTIMES as readonly string[]).includes(backend)) {
    runtime = backend as RuntimeName
    forcedRuntime = true
    if (runtimeOption !== 'auto' && runtimeOption !== backend) throw new UsageError('verify.runtime', `--backend ${backend} runs the artifact in ${backend}; --runtime ${runtimeOption} contradicts it`)
  } else {
    engine = backend as EngineName
    if (runtimeOption === 'auto') runtime = FORMAT_RUNTIME[model.format]
    else if (runtimeOption !== 'none') {
      runtime = runtimeOption as RuntimeName
      forcedRuntime = true
    }
  }
  if (runtime && (forcedRuntime || FORMAT_RUNTIME[model.format] === runtime)) checkRuntimeApplies(runtime, model)
  if (device === 'cuda' && engine === 'ts' && !runtime) {
    throw new UsageError('verify.device', '--device cuda: the ts engine runs on the CPU only; use --backend torch (PyTorch on CUDA), or a runtime with CUDA')
  }
  if (device === 'cuda' && engine === 'ts' && runtime && !forcedRuntime) {
    throw new UsageError('verify.device', `--device cuda: the ts engine runs on the CPU only; pass --backend torch for the reference on CUDA, or --backend ${runtime} to run only the artifact's runtime on CUDA`)
  }
  return {engine, ...(runtime ? {runtime} : {}), forcedRuntime, device}
}

/** The engine's logits (and hidden states) for one checkpoint, on `matmul`'s workers (a pool, or a count of its own). */
async function engineForward(checkpoint: Checkpoint, tokens: number[], collectHidden: boolean, onCount: VerifyOptions['onCount'], matmul: {pool: MatmulPool} | {threads: number}): Promise<{logits: Float32Array; vocab: number; hidden?: Float32Array[]}> {
  const r = await runForward(checkpoint, tokens, {collectHidden, ...matmul, ...(onCount ? {onLayer: (done: number, total: number) => onCount(done, total, 'layers')} : {})})
  return {logits: r.logits, vocab: r.vocab, ...(r.hidden ? {hidden: r.hidden} : {})}
}

function exactLogits(expected: Float32Array, model: Float32Array, T: number, expectedWidth: number, modelWidth: number, threshold = EXACT_LOGITS_REL): ExactLogits {
  const m = compareLogits(expected, model, T, expectedWidth, modelWidth)
  let scale = 1
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]!))
  const relMaxAbs = m.maxAbs / scale
  return {maxAbs: m.maxAbs, relMaxAbs, threshold, meanAbs: m.meanAbs, top1: m.top1, pass: relMaxAbs <= threshold}
}

export async function verify(model: string | Checkpoint, options: VerifyOptions = {}): Promise<VerifyReport> {
  const phase = options.onPhase ?? (() => undefined)
  const seconds: Record<string, number> = {}
  const timed = async <T>(name: string, work: (step: (label: string) => void) => Promise<T>): Promise<T> => {
    phase(name)
    const t0 = performance.now()
    try {
      return await work((label) => phase(`${name}: ${label}`))
    } finally {
      seconds[name] = (seconds[name] ?? 0) + (performance.now() - t0) / 1000
      phase(undefined)
    }
  }
  const opened = [await timed('open model', () => open(model))]
  try {
    const cand = opened[0]!.checkpoint
    const modelPath = typeof model === 'string' ? model : cand.path
    const {engine, runtime, forcedRuntime, device} = resolveBackends(options, cand)
    // The ts engine's matmul workers (--threads, OPENELM_THREADS), named in the report.
    const matmulWorkers = matmulThreads(requestedThreads())
    const engineInfo = (where: string) => ({name: engine, device: where, ...(engine === 'ts' ? {threads: matmulWorkers} : {})})
    const ref = options.against === undefined ? undefined : (opened.push(await timed('open reference', () => open(options.against!, options.againstRead))), opened[1]!.checkpoint)
    const refPath = ref ? (typeof options.against === 'string' ? options.against : ref.path) : undefined
    const vocab = Math.min(vocabOf(cand), ref ? vocabOf(ref) : Infinity)
    const {tokens, prompt} = await timed('tokens', () => promptFor(cand, modelPath, ref, refPath, options))
    checkTokens(tokens, vocab)
    const isText = prompt.source === 'text' || prompt.source === 'file' || prompt.source === 'corpus'
    const notes: string[] = []
    // A multi-variant ONNX folder reads as one file (its config's default): say which, and how to check another.
    const variants = cand.extras.info?.variantNote
    if (typeof variants === 'string' && !options.variantsVerified) notes.push(variants)
    const failures: string[] = []
    const checks: string[] = []
    let runtimeReady = runtime !== undefined
    if (runtime && !(await runtimeAvailable(runtime))) {
      if (forcedRuntime) throw new DependencyError('runtime.missing', `the ${runtime} runtime is not installed here (npm install ${runtime === 'llama.cpp' ? 'node-llama-cpp' : 'onnxruntime-node'})`)
      notes.push(`runtime ${runtime} is not installed here: the artifact's own runtime was not run (npm install ${runtime === 'llama.cpp' ? 'node-llama-cpp' : 'onnxruntime-node'})`)
      runtimeReady = false
    }

    // ---- single model -----------------------------------------------------------------------
    if (!ref) {
      const run = engine === 'torch'
        ? await timed('model forward', (step) => torchSingle(cand, tokens, {device, python: options.python, onPhase: step}))
        : {...(await timed('model forward', () => engineForward(cand, tokens, false, options.onCount, {threads: matmulWorkers}))), device: 'cpu'}
      const logits = run.logits
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
      checks.push(`logits finite (${engine} engine, ${run.device})`)
      if (!finite) failures.push('logits contain NaN or Inf')
      let runtimeReport: RuntimeCheck | undefined
      if (runtime && runtimeReady) {
        runtimeReport = await timed(runtime, (step) => runtimeCheck(runtime, cand, modelPath, tokens, {name: engine, logits, vocab: run.vocab}, device, undefined, step))
        checks.push(`${runtime} (${runtimeReport.device}) agrees with the ${engine} engine on the same file (${runtimeReport.storage} tolerance)`)
        failures.push(...runtimeReport.failures)
      }
      const savedLogits = options.saveLogits ? await saveLogits(options.saveLogits, logits, tokens.length, run.vocab, options.force ?? false) : undefined
      const top1 = compareLogits(logits, logits, tokens.length, run.vocab).top1Reference
      return {
        pass: failures.length === 0, verdict: 'finite', checks, engine: engineInfo(run.device), tokens, prompt,
        model: sideInfo(cand, modelPath, run.vocab, seconds['model forward'] ?? 0),
        firstDivergentLayer: null, firstDivergentTensor: null,
        ...(runtimeReport ? {runtime: runtimeReport} : {}),
        summary: {top1, finite, logitMin, logitMax}, failures, notes, ...(savedLogits ? {savedLogits} : {}), seconds,
      }
    }

    // ---- against a reference ----------------------------------------------------------------
    const compareWeights = options.weights ?? true
    let weights: ExactWeights | undefined
    let modelRun: {logits: Float32Array; vocab: number; hidden?: Float32Array[]}
    let expectedRun: {logits: Float32Array; vocab: number; hidden?: Float32Array[]}
    let refRun: {logits: Float32Array; vocab: number}
    let engineDevice = 'cpu'
    if (engine === 'torch') {
      const r = await timed('torch reference', (step) => torchExact(ref, cand, tokens, {device, python: options.python, weights: compareWeights, onPhase: step}))
      weights = r.weights
      modelRun = r.model
      expectedRun = r.expected
      refRun = r.reference
      engineDevice = r.device
      checks.push(`weights: ${cand.tensors.length} tensors compared code for code with the PyTorch reference's own transformation of REF`)
    } else {
      // One set of matmul workers for the three passes (started now, ready by the first).
      const pool = new MatmulPool(matmulWorkers)
      try {
        if (compareWeights) {
          weights = await timed('compare weights', () => compareStored(ref, cand, options.onCount && ((_name, index, total) => options.onCount!(index, total, 'tensors'))))
          const workers = threadCount()
          checks.push(`weights: ${cand.tensors.length} tensors compared code for code with the ts reference transformation of REF (${workers > 1 ? `${workers} worker threads` : 'in the main thread'})`)
          // The forward passes do not use the weight check's workers: their memory goes now (3B: ~70 MB).
          await closeSharedPool()
        }
        modelRun = await timed('model forward', () => engineForward(cand, tokens, true, options.onCount, {pool}))
        expectedRun = await timed('reference forward (transformed)', () => engineForward(expectedCheckpoint(ref, cand, weights), tokens, true, options.onCount, {pool}))
        const key = tokens.join(',')
        const known = options.sourceForwards?.get(key)
        if (known) notes.push('the reference\'s own forward pass was reused from the folder\'s first model file (same source, same tokens)')
        refRun = known ?? await timed('reference forward (source)', () => engineForward(ref, tokens, false, options.onCount, {pool}))
        options.sourceForwards?.set(key, refRun)
      } finally {
        await pool.close()
      }
    }
    const decision = weights ? await decideRelation(ref, cand, weights) : {relation: 'derived' as Relation, reason: 'weights not compared (--skip-weights): logits only'}
    const logits = exactLogits(expectedRun.logits, modelRun.logits, tokens.length, expectedRun.vocab, modelRun.vocab)
    const layers = expectedRun.hidden && modelRun.hidden ? compareHidden(expectedRun.hidden, modelRun.hidden) : undefined
    const quality = measureQuality(refRun.logits, modelRun.logits, tokens, refRun.vocab, modelRun.vocab, {text: isText, gates: options.gates})
    checks.push(`logits: MODEL vs REF transformed, ${engine} engine (${engineDevice}), max |Δ| ≤ ${fmt(EXACT_LOGITS_REL)} of the logit scale`)
    checks.push(`quality against REF${isText ? ' on text' : ''}: KL, top-1${isText ? ', perplexity' : ''}${Object.keys(options.gates ?? {}).length > 0 ? ' (gated)' : ' (reported)'}`)
    let verdict: VerifyReport['verdict'] = 'exact'
    if (decision.relation === 'sibling') {
      verdict = 'quality-only'
      notes.push(`not a conversion of REF: ${decision.reason}; quality figures only`)
    } else {
      if (decision.relation === 'mismatch' && weights) {
        const first = weights.first
        failures.push(`${weights.mismatching.length} of ${weights.tensors.length} tensors are not REF's transformation, first ${first ? `${first.tensor} (${first.label}: row ${first.row}, block ${first.block}, ${first.part})` : weights.mismatching[0]}`)
      }
      if (!logits.pass) failures.push(`logits differ from REF transformed: max |Δ| ${fmt(logits.maxAbs)} is ${fmt(logits.relMaxAbs)} of the logit scale > ${fmt(EXACT_LOGITS_REL)}`)
    }
    failures.push(...quality.failures)
    const hiddenLayer = layers ? firstDivergentLayer(layers, EXACT_HIDDEN_REL) : null
    let runtimeReport: RuntimeCheck | undefined
    if (runtime && runtimeReady) {
      runtimeReport = await timed(runtime, (step) => runtimeCheck(runtime, cand, modelPath, tokens, {name: engine, logits: modelRun.logits, vocab: modelRun.vocab}, device, undefined, step))
      checks.push(`${runtime} (${runtimeReport.device}) agrees with the ${engine} engine on the same file (${runtimeReport.storage} tolerance)`)
      failures.push(...runtimeReport.failures)
    }
    // A LoRA/DoRA REF is read merged (in f32): the merge itself is checked against CoreNet's
    // definitions applied unmerged by the PyTorch reference, so MODEL = T(merge(REF)) ≡ REF unmerged.
    let peft: PeftCheck | undefined
    if (ref.extras.peft) {
      const r = await timed('adapters (unmerged PyTorch reference)', () => verifyPeft(ref, ref, {tokens, device: device === 'cuda' ? 'cuda' : 'cpu', python: options.python}))
      peft = {pass: r.pass, relMaxAbs: r.logits.maxAbs / r.logitScale, threshold: r.maxAbsAllowed / r.logitScale, firstDivergentTensor: r.firstDivergentTensor, failures: r.failures, kind: ref.extras.peft.kind, modules: ref.extras.peft.modules.length, device: r.device}
      checks.push(`adapters: REF's ${ref.extras.peft.kind} merge vs its adapters applied unmerged (PyTorch, ${r.device}), max |Δ| ≤ ${fmt(peft.threshold)} of the logit scale, every adapted weight probed`)
      failures.push(...r.failures.map((f) => `adapters: ${f}`))
    }
    if (weights && Object.keys(weights.accepted).length > 0) {
      notes.push(`documented alternative roundings accepted: ${Object.entries(weights.accepted).map(([k, n]) => `${n} block${n === 1 ? '' : 's'} ${k}`).join(', ')}`)
    }
    const extra = weights?.tensors.find((t) => t.extraRows)
    if (extra) notes.push(`${extra.name}: ${Math.abs(extra.extraRows!)} rows ${extra.extraRows! > 0 ? 'MODEL has beyond REF\'s' : 'REF has beyond MODEL\'s'} (CoreNet's padded vocabulary) not compared`)
    const savedLogits = options.saveLogits ? await saveLogits(options.saveLogits, modelRun.logits, tokens.length, modelRun.vocab, options.force ?? false) : undefined
    const failed = failures.length > 0
    return {
      pass: !failed, verdict, checks, engine: engineInfo(engineDevice), tokens, prompt,
      model: sideInfo(cand, modelPath, modelRun.vocab, seconds['model forward'] ?? 0),
      against: sideInfo(ref, refPath!, refRun.vocab, seconds['reference forward (source)'] ?? 0),
      relation: decision.relation, relationReason: decision.reason,
      ...(weights ? {weights} : {}), logits, ...(layers ? {layers} : {}),
      firstDivergentLayer: failed && verdict === 'exact' ? hiddenLayer ?? (layers && !logits.pass ? layers.length : null) : null,
      firstDivergentTensor: verdict === 'exact' ? weights?.first?.tensor ?? null : null,
      quality, ...(runtimeReport ? {runtime: runtimeReport} : {}), ...(peft ? {peft} : {}),
      failures, notes, ...(savedLogits ? {savedLogits} : {}), seconds,
    }
  } finally {
    for (const o of opened) if (o.owned) await o.checkpoint.close()
  }
}

/** The report file `convert --verify` leaves in folder outputs (read by `push` for the model card). */
export const REPORT_FILE = 'openelm-verify.json'

/**
 * Verify a conversion's output against its source; for folder outputs the report is written to
 * `<out>/openelm-verify.json` (atomically). Returns the report (pass or fail).
 */
export async function verifyConversion(
  source: string, out: string, options: Omit<VerifyOptions, 'against' | 'variantsVerified' | 'sourceForwards'> & {
    /** An ONNX export's model files, the default first (read as OUT itself): each is verified against the source. */
    variants?: Array<{variant: string; path: string}>
  } = {},
  sourceRead: ReadOptions & {format?: FormatName} = {},
): Promise<VerifyReport & {reportFile?: string}> {
  // The source is read as the conversion read it (--format, --ema, --config).
  const reference = await openCheckpoint(source, sourceRead)
  const {variants: [first, ...others] = [], ...given} = options
  const rest = others.length > 0 ? {...given, sourceForwards: new Map()} : given
  const bySource = (r: VerifyReport): VerifyReport => ({...r, against: {...r.against!, path: source}})
  let report: VerifyReport
  try {
    report = bySource(await verify(out, {...rest, against: reference, variantsVerified: others.length > 0}))
    const variants: VariantReport[] = []
    for (const other of others) {
      const onPhase = rest.onPhase && ((phase: string | undefined) => rest.onPhase!(phase === undefined ? undefined : `${other.variant}: ${phase}`))
      variants.push({variant: other.variant, report: bySource(await verify(other.path, {...rest, ...(onPhase ? {onPhase} : {}), against: reference, variantsVerified: true}))})
    }
    if (first && variants.length > 0) report = withVariants(report, first.variant, variants)
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

/** The default file's report, passing only when every variant passed, with each variant's failures by name. */
function withVariants(report: VerifyReport, first: string, variants: VariantReport[]): VerifyReport {
  const failed = variants.filter((v) => !v.report.pass)
  return {
    ...report,
    pass: report.pass && failed.length === 0,
    failures: [...report.failures, ...failed.flatMap((v) => v.report.failures.map((f) => `${v.variant}: ${f}`))],
    notes: [...report.notes, `the folder's ${variants.length + 1} model files were each verified against the source: ${first} (the default) above, ${variants.map((v) => `${v.variant} (${path.basename(v.report.model.path)})`).join(', ')} below`],
    variants,
  }
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
  const what = report.verdict === 'finite' ? 'no reference' : report.verdict === 'quality-only' ? 'quality gates' : 'exact'
  throw new VerificationError('verify.failed', `verification failed (${what}): ${report.failures.join('; ')}${where ? `; ${where}` : ''}`, {report})
}

export {DEFAULT_PROMPT_LENGTH, type PromptInfo, promptTokens} from './prompt.js'
