/**
 * The CI round trip: convert a checkpoint into each format and back to its own format, and
 * prove at every hop that what must be bit-exact is bit-exact and that the rest computes the
 * same logits within the thresholds of its path.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {writeCheckpoint} from './convert.js'
import {UsageError} from './errors.js'
import {openCheckpoint} from './formats/registry.js'
import {type Checkpoint, type FormatName, type ProgressEvent, type Quantization, type WriteOptions} from './formats/types.js'
import {trackTemp} from './io/atomic.js'
import {phasesOf} from './progress.js'
import {type FloatDType} from './tensor/dtype.js'
import {compareStored, type ExactWeights} from './verify/exact.js'
import {verify, type VerifyReport} from './verify/index.js'

/** A hop target: a format and, for MLX, a layout. */
export interface HopTarget {
  name: string
  format: FormatName
  layout?: string
  /** File name when the format writes a single file rather than a folder. */
  file?: string
}

export const HOP_TARGETS: Record<string, HopTarget> = {
  hf: {name: 'hf', format: 'hf'},
  corenet: {name: 'corenet', format: 'corenet', file: 'checkpoint.pt'},
  mlx: {name: 'mlx', format: 'mlx', layout: 'mlx-lm'},
  'corenet-mlx': {name: 'corenet-mlx', format: 'mlx', layout: 'corenet-mlx'},
  npz: {name: 'npz', format: 'mlx', layout: 'npz'},
  onnx: {name: 'onnx', format: 'onnx'},
  gguf: {name: 'gguf', format: 'gguf', file: 'model.gguf'},
}

export function parseVia(text: string): HopTarget[] {
  const names = text.split(',').map((s) => s.trim()).filter(Boolean)
  if (names.length === 0) throw new UsageError('flag.via', '--via needs at least one format (e.g. hf,mlx,onnx,corenet)')
  return names.map((n) => {
    const hop = HOP_TARGETS[n]
    if (!hop) throw new UsageError('flag.via', `unknown format "${n}" in --via (expected ${Object.keys(HOP_TARGETS).join(', ')})`)
    return hop
  })
}

function backTarget(source: Checkpoint): HopTarget {
  const layout = source.extras.info.layout
  if (source.format === 'mlx' && typeof layout === 'string' && HOP_TARGETS[layout]) return HOP_TARGETS[layout]!
  return Object.values(HOP_TARGETS).find((h) => h.format === source.format) ?? HOP_TARGETS.hf!
}


export interface HopReport {
  via: string
  lossless: boolean
  dtype: FloatDType
  quantization?: Quantization
  therePath: string
  backPath: string
  /** The artifact in the hop's format vs the source: the exact check (stored codes and logits). */
  there?: VerifyReport
  /**
   * The artifact converted back to the source format, checked exactly: against the source when the
   * hop is lossless (bit-exact), else against the artifact (the way back is a dequantization/cast).
   */
  back?: ExactWeights
  backAgainst?: 'source' | 'artifact'
  pass: boolean
  failure?: string
}

export interface RoundtripReport {
  source: {path: string; format: FormatName; dtype: FloatDType}
  hops: HopReport[]
  pass: boolean
  /** The first failing hop's name. */
  failedHop?: string
}

export interface RoundtripOptions {
  via: HopTarget[]
  dtype?: FloatDType
  quantization?: Quantization
  /** Keep the work folder (printed in the report) instead of deleting it. */
  keep?: boolean
  workDir?: string
  /** Token ids for the logits check (default: verify's deterministic prompt). */
  tokens?: number[]
  /** Called after each forward conversion (tests use it to corrupt an intermediate file). */
  afterWrite?: (hop: HopTarget, artifact: string) => Promise<void>
}

export async function* roundtrip(src: string, options: RoundtripOptions): AsyncGenerator<ProgressEvent, RoundtripReport> {
  const work = options.workDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-roundtrip-')))
  const untrack = options.keep ? () => undefined : trackTemp(work)
  const source = await openCheckpoint(src)
  try {
    const sourceDtype = source.extras.dtype
    const back = backTarget(source)
    const hops: HopReport[] = []
    for (const [i, hop] of options.via.entries()) {
      const dtype = options.dtype ?? sourceDtype
      const report: HopReport = {
        via: hop.name,
        lossless: !options.quantization && dtype === sourceDtype && !source.extras.quantization,
        dtype,
        quantization: options.quantization,
        therePath: path.join(work, `${i + 1}-${hop.name}`, hop.file ?? ''),
        backPath: path.join(work, `${i + 1}-${hop.name}-back`, back.file ?? ''),
        pass: false,
      }
      hops.push(report)
      yield {type: 'note', message: `hop ${i + 1}: ${source.format} → ${hop.name} → ${back.name}`}
      const hopLabel = `hop ${i + 1}/${options.via.length}`
      try {
        const forward: WriteOptions = {dtype, quantization: options.quantization, layout: hop.layout, keepPaddedVocab: true, trainingCheckpoint: true}
        await fs.mkdir(path.dirname(report.therePath), {recursive: true})
        yield {type: 'phase', label: `${hopLabel}: to ${hop.name}`}
        yield* writesOf(writeCheckpoint(source, hop.format, report.therePath, {...forward, vocabSize: source.config.vocab_size}))
        if (options.afterWrite) await options.afterWrite(hop, report.therePath)
        const artifact = await openCheckpoint(report.therePath, {format: hop.format})
        try {
          report.there = yield* phasesOf(`${hopLabel}: verify ${hop.name}: `, (onPhase, onCount) => verify(artifact, {against: source, backend: 'ts', runtime: 'none', tokens: options.tokens, onPhase, onCount}))
          await fs.mkdir(path.dirname(report.backPath), {recursive: true})
          yield {type: 'phase', label: `${hopLabel}: back to ${back.name}`}
          yield* writesOf(
            writeCheckpoint(artifact, back.format, report.backPath, {dtype: sourceDtype, layout: back.layout, keepPaddedVocab: true, trainingCheckpoint: true, vocabSize: source.config.vocab_size})
          )
          const returned = await openCheckpoint(report.backPath, {format: back.format})
          try {
            report.backAgainst = report.lossless ? 'source' : 'artifact'
            yield {type: 'phase', label: `${hopLabel}: compare ${back.name} with the ${report.lossless ? 'source' : 'artifact'}`}
            report.back = await compareStored(report.lossless ? source : artifact, returned)
            yield {type: 'phase'}
          } finally {
            await returned.close()
          }
        } finally {
          await artifact.close()
        }
        const backOk = report.back.mismatching.length === 0
        report.pass = backOk && report.there.pass
        if (!report.there.pass) report.failure = `${hop.name} artifact: ${report.there.failures[0]}`
        else if (!backOk) {
          const first = report.back.first!
          report.failure = `${report.lossless ? 'not bit-exact' : 'not the exact conversion of the artifact'} after ${hop.name} and back: ${first.tensor} (row ${first.row}, ${first.part})`
        }
      } catch (error) {
        report.pass = false
        report.failure = (error as Error).message
      }
      if (!options.keep) await fs.rm(path.join(work, `${i + 1}-${hop.name}`), {recursive: true, force: true})
      if (!options.keep) await fs.rm(path.join(work, `${i + 1}-${hop.name}-back`), {recursive: true, force: true})
      yield {type: 'phase'}
    }
    const failed = hops.find((h) => !h.pass)
    return {source: {path: src, format: source.format, dtype: sourceDtype}, hops, pass: !failed, failedHop: failed?.via}
  } finally {
    await source.close()
    if (!options.keep) await fs.rm(work, {recursive: true, force: true})
    untrack()
  }
}

/** A writer's byte progress passed on; its notes stay in its result (a hop's report), not the stream. */
async function* writesOf<T>(events: AsyncGenerator<ProgressEvent, T>): AsyncGenerator<ProgressEvent, T> {
  let finished = false
  try {
    for (;;) {
      const step = await events.next()
      if (step.done) {
        finished = true
        return step.value
      }
      if (step.value.type !== 'note') yield step.value
    }
  } finally {
    // Stopped early (the caller returned or threw): let the writer remove its temp output.
    if (!finished) await events.return(undefined as never)
  }
}
