/**
 * The exact check of a converted artifact (MODEL) against its source (REF). Every transformation the
 * tool applies is deterministic — a copy, a cast with round-to-nearest-even, a quantizer — so the
 * question "is MODEL the faithful conversion of REF?" has a yes/no answer: apply the same
 * transformation to REF with the reference's own implementation (src/quant, one module per scheme;
 * the PyTorch reference has its own under the same names) and compare the result with what MODEL
 * stores, code for code. The transformation is read off MODEL itself (each tensor's storage scheme),
 * so any artifact can be checked, whoever wrote it.
 *
 * When MODEL is not reproduced, either it is broken, or it was never a conversion of REF (a sibling
 * converted from a common ancestor, e.g. an f16 GGUF against a bf16 folder of the same f32 source).
 * `decideRelation` tells the two apart from the data (see its comment); siblings get quality figures
 * only.
 */
import {MappingError} from '../errors.js'
import {matrixShape, storedTensor} from '../formats/stored.js'
import {type Checkpoint, type StoredSegment} from '../formats/types.js'
import {type CompareTask, mapOrdered, sharedPool} from '../pool/index.js'
import {schemeFor} from '../quant/index.js'
import {addDiff, type EncodingDiff, emptyDiff, type SchemeParams} from '../quant/types.js'
import {dtypeSize, type FloatDType, fromFloat32, isFloatDType, toFloat32} from '../tensor/dtype.js'
import {fileValuesOf, readIntoOf, readRowsF32Into, type TensorRecord, withReadRowsF32} from '../tensor/record.js'

/** Values per comparison chunk (whole rows): bounds memory whatever the tensor size. */
const CHUNK_VALUES = 1 << 20

export interface SegmentExact extends EncodingDiff {
  label: string
  scheme: string
  params: SchemeParams
  /** Canonical rows this segment covers (compared: the rows REF also has). */
  row0: number
  rows: number
  comparedRows: number
}

export interface TensorExact {
  name: string
  segments: SegmentExact[]
  elements: number
  identicalElements: number
  blocks: number
  identicalBlocks: number
  /** Blocks that differ and no documented rule explains. */
  mismatchedBlocks: number
  accepted: Record<string, number>
  /** First unexplained difference: segment label, canonical row, block, column, part. */
  first?: {label: string; row: number; block: number; col: number; part: string}
  /** Rows MODEL has beyond REF's (CoreNet's padded vocabulary), not compared; negative: REF has more. */
  extraRows?: number
  /** Set when the tensor cannot be compared at all (missing, other shape). */
  problem?: string
}

export type Relation = 'derived' | 'mismatch' | 'sibling'

export interface ExactWeights {
  tensors: TensorExact[]
  /** Tensors identical in every block (documented alternatives aside). */
  matching: number
  /** Tensors with an unexplained difference or a problem, in canonical order. */
  mismatching: string[]
  accepted: Record<string, number>
  first: (TensorExact['first'] & {tensor: string}) | null
}

/** REF's rows [r0, r1) of a record as an f32 array the caller may keep. */
async function readRowsF32(record: TensorRecord, cols: number, r0: number, r1: number): Promise<Float32Array> {
  const size = dtypeSize(record.dtype)
  const fast = record.dtype === 'F32' ? readIntoOf(record) : undefined
  if (fast) {
    // Straight into a fresh array (one copy, from the file), rather than a read buffer copied again.
    const values = new Float32Array((r1 - r0) * cols)
    await fast(new Uint8Array(values.buffer), r0 * cols * size)
    return values
  }
  const bytes = await record.read(r0 * cols * size, r1 * cols * size)
  const values = toFloat32(bytes, record.dtype)
  return values.buffer === bytes.buffer ? values.slice() : values
}

/**
 * Compare one segment of MODEL with the transformation of REF's rows, chunk by chunk: each chunk's
 * encode and compare run on the worker pool (src/pool; in this thread for 1 thread), the diffs
 * added in order, so the result is the same for any thread count.
 */
async function compareSegment(ref: TensorRecord, segment: StoredSegment, cols: number, commonRows: number): Promise<SegmentExact> {
  const scheme = schemeFor(segment.scheme)
  scheme.check(segment.params, cols)
  const blocksPerRow = cols / scheme.blockSize(segment.params, cols)
  const total = emptyDiff()
  const rows = Math.max(0, Math.min(segment.rows, commonRows - segment.row0))
  const step = Math.max(1, Math.floor(CHUNK_VALUES / cols))
  // In this thread each chunk is compared before the next is read: one buffer serves every chunk.
  // On the pool, REF's rows are read by the task itself where they lie in a file as they are.
  const scratch = sharedPool() === undefined ? new Float32Array(Math.min(rows, step) * cols) : undefined
  async function* tasks(): AsyncGenerator<CompareTask> {
    for (let r0 = 0; r0 < rows; r0 += step) {
      const r1 = Math.min(rows, r0 + step)
      const values: CompareTask['values'] = scratch
        ? scratch.subarray(0, (r1 - r0) * cols)
        : fileValuesOf(ref, (segment.row0 + r0) * cols) ?? await readRowsF32(ref, cols, segment.row0 + r0, segment.row0 + r1)
      if (scratch) await readRowsF32Into(ref, scratch.subarray(0, (r1 - r0) * cols), segment.row0 + r0)
      const parts = await segment.read(r0, r1)
      // On the pool the task's inputs move to a worker: the parts may be views of a reader's buffers,
      // so compact copies, and the task owns all its inputs (readRowsF32's values are the caller's
      // already). In this thread the parts are compared where they lie.
      const actual = scratch ? parts : Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, v.slice()]))
      yield {kind: 'compare', scheme: segment.scheme, params: segment.params, values, actual, rows: r1 - r0, cols, owned: true}
    }
  }
  let r0 = 0
  for await (const diff of mapOrdered(tasks())) {
    addDiff(total, diff, r0, blocksPerRow)
    r0 += step
  }
  return {...total, label: segment.label, scheme: segment.scheme, params: segment.params, row0: segment.row0, rows: segment.rows, comparedRows: rows}
}

/** Compare every canonical tensor MODEL stores with REF's, transformed as MODEL says it was. */
export async function compareStored(ref: Checkpoint, model: Checkpoint, onTensor?: (name: string, index: number, total: number) => void): Promise<ExactWeights> {
  const refByName = new Map(ref.tensors.map((t) => [t.name, t]))
  const tensors: TensorExact[] = []
  for (const [index, record] of model.tensors.entries()) {
    onTensor?.(record.name, index, model.tensors.length)
    const base: TensorExact = {name: record.name, segments: [], elements: 0, identicalElements: 0, blocks: 0, identicalBlocks: 0, mismatchedBlocks: 0, accepted: {}}
    const r = refByName.get(record.name)
    if (!r) {
      tensors.push({...base, problem: 'missing in the reference'})
      continue
    }
    const [mRows, cols] = matrixShape(record.shape)
    const [rRows, rCols] = matrixShape(r.shape)
    if (cols !== rCols || record.shape.length !== r.shape.length || (mRows !== rRows && record.name !== 'token_embeddings.weight')) {
      tensors.push({...base, problem: `shape [${record.shape.join(', ')}] vs the reference's [${r.shape.join(', ')}]`})
      continue
    }
    const stored = storedTensor(model, record.name)!
    const common = Math.min(mRows, rRows)
    const t: TensorExact = {...base, ...(mRows !== rRows ? {extraRows: mRows - rRows} : {})}
    for (const segment of stored.segments) {
      const s = await compareSegment(r, segment, cols, common)
      t.segments.push(s)
      t.elements += s.elements
      t.identicalElements += s.identicalElements
      t.blocks += s.blocks
      t.identicalBlocks += s.identicalBlocks
      const acceptedHere = Object.values(s.accepted).reduce((a, b) => a + b, 0)
      t.mismatchedBlocks += s.blocks - s.identicalBlocks - acceptedHere
      for (const [rule, n] of Object.entries(s.accepted)) t.accepted[rule] = (t.accepted[rule] ?? 0) + n
      if (!t.first && s.first) t.first = {label: s.label, row: s.row0 + s.first.row, block: s.first.block, col: s.first.col, part: s.first.part}
    }
    tensors.push(t)
  }
  return summarize(tensors)
}

/** Totals over the per-tensor results (also used for the PyTorch reference's results). */
export function summarize(tensors: TensorExact[]): ExactWeights {
  const accepted: Record<string, number> = {}
  for (const t of tensors) for (const [rule, n] of Object.entries(t.accepted)) accepted[rule] = (accepted[rule] ?? 0) + n
  const bad = tensors.filter((t) => t.problem || t.mismatchedBlocks > 0)
  const firstBad = bad[0]
  return {
    tensors,
    matching: tensors.length - bad.length,
    mismatching: bad.map((t) => t.name),
    accepted,
    first: firstBad ? (firstBad.first ? {tensor: firstBad.name, ...firstBad.first} : {tensor: firstBad.name, label: firstBad.name, row: 0, block: 0, col: 0, part: firstBad.problem ?? 'data'}) : null,
  }
}

// ---- derived or sibling ---------------------------------------------------------------------

/** Half the spacing of `dtype` values at |v| (an upper bound of its round-to-nearest error there). */
export function halfUlp(v: number, dtype: FloatDType): number {
  const mantissa = dtype === 'F32' ? 23 : dtype === 'F16' ? 10 : 7
  const minExp = dtype === 'F16' ? -14 : -126
  const a = Math.abs(v)
  const e = a === 0 || !Number.isFinite(a) ? minExp : Math.max(minExp, Math.floor(Math.log2(a)))
  return 2 ** (e - mantissa - 1)
}

export interface RelationDecision {
  relation: Relation
  /** One sentence: why the verdict is exact, failed, or quality only. */
  reason: string
}

function isFloatScheme(scheme: string): boolean {
  return scheme === 'f32' || scheme === 'f16' || scheme === 'bf16'
}

const SCHEME_DTYPE: Record<string, FloatDType> = {f32: 'F32', f16: 'F16', bf16: 'BF16'}

function storageKey(segments: readonly {scheme: string; params: SchemeParams}[]): string {
  return segments.map((s) => `${s.scheme}:${JSON.stringify(s.params)}`).join('|')
}

/**
 * Whether MODEL, not reproduced by REF's transformation, is a broken conversion of REF ('mismatch')
 * or a sibling that never came from REF ('sibling'):
 * - an f32 REF can produce any MODEL: every difference is a mismatch;
 * - a quantized REF: a mismatch when MODEL stores the same schemes (an identity conversion),
 *   otherwise a sibling (MODEL is not a re-quantization of REF's values);
 * - a 16-bit REF: when MODEL's float tensors all match the transformation, MODEL came from REF (or
 *   from a source equal to it) and its quantized differences are mismatches; when MODEL stores
 *   floats in REF's own dtype, differences are mismatches too; otherwise MODEL is a sibling exactly
 *   when every float value it stores is consistent with a common ancestor — within half a step of
 *   MODEL's dtype plus half a step of REF's of REF's value. A corrupted value, or a wrong rounding
 *   rule, moves values further than that and stays a mismatch.
 */
export async function decideRelation(ref: Checkpoint, model: Checkpoint, exact: ExactWeights): Promise<RelationDecision> {
  if (exact.mismatching.length === 0) return {relation: 'derived', reason: 'MODEL is exactly the transformation of REF its storage describes'}
  const problem = exact.tensors.find((t) => t.problem)
  if (problem) return {relation: 'mismatch', reason: `${problem.name}: ${problem.problem}`}
  const refQuantized = ref.tensors.some((t) => storedTensor(ref, t.name)!.segments.some((s) => !isFloatScheme(s.scheme)))
  if (refQuantized) {
    const same = ref.tensors.every((t) => {
      const m = storedTensor(model, t.name)
      return !m || storageKey(storedTensor(ref, t.name)!.segments) === storageKey(m.segments)
    })
    return same
      ? {relation: 'mismatch', reason: 'MODEL stores the same quantization as REF, so its codes must be REF\'s'}
      : {relation: 'sibling', reason: 'REF is quantized differently and MODEL is not a re-quantization of REF\'s values'}
  }
  const refFloat = ref.tensors.every((t) => t.dtype === 'F32')
  if (refFloat) return {relation: 'mismatch', reason: 'an f32 REF determines every value MODEL stores'}
  const floatTensors = exact.tensors.filter((t) => t.segments.length > 0 && t.segments.every((s) => isFloatScheme(s.scheme)))
  if (floatTensors.length > 0 && floatTensors.every((t) => t.mismatchedBlocks === 0)) {
    return {relation: 'mismatch', reason: 'MODEL\'s float tensors are exactly REF\'s, so MODEL was converted from REF'}
  }
  const refByName = new Map(ref.tensors.map((t) => [t.name, t]))
  const sameDtype = floatTensors.every((t) => t.segments.every((s) => SCHEME_DTYPE[s.scheme] === refByName.get(t.name)?.dtype))
  if (sameDtype) return {relation: 'mismatch', reason: 'MODEL stores floats in REF\'s own dtype, so they must be REF\'s'}
  const inconsistent = await firstInconsistent(ref, model, floatTensors.map((t) => t.name))
  if (inconsistent) return {relation: 'mismatch', reason: `${inconsistent} holds values no rounding of a common source explains`}
  const dtypes = [...new Set(floatTensors.flatMap((t) => t.segments.map((s) => SCHEME_DTYPE[s.scheme])))].join('/')
  return {
    relation: 'sibling',
    reason: `MODEL stores ${dtypes} values that are roundings of a common source, not of REF's ${[...new Set(ref.tensors.map((t) => t.dtype))].join('/')} values: it is not a conversion of REF`,
  }
}

/** The first float tensor of MODEL with a value inconsistent with a common ancestor of REF. */
async function firstInconsistent(ref: Checkpoint, model: Checkpoint, names: string[]): Promise<string | undefined> {
  const refByName = new Map(ref.tensors.map((t) => [t.name, t]))
  for (const name of names) {
    const r = refByName.get(name)!
    const stored = storedTensor(model, name)!
    const [, cols] = matrixShape(r.shape)
    const rDtype = isFloatDType(r.dtype) ? r.dtype : 'F32'
    const [rRows] = matrixShape(r.shape)
    for (const segment of stored.segments) {
      const dtype = SCHEME_DTYPE[segment.scheme]!
      const rows = Math.max(0, Math.min(segment.rows, rRows - segment.row0))
      const step = Math.max(1, Math.floor(CHUNK_VALUES / cols))
      for (let r0 = 0; r0 < rows; r0 += step) {
        const r1 = Math.min(rows, r0 + step)
        const refValues = await readRowsF32(r, cols, segment.row0 + r0, segment.row0 + r1)
        const modelValues = toFloat32((await segment.read(r0, r1)).data!, dtype)
        for (let i = 0; i < refValues.length; i++) {
          const m = modelValues[i]!
          const v = refValues[i]!
          if (Number.isNaN(m) && Number.isNaN(v)) continue
          if (!(Math.abs(m - v) <= halfUlp(m, dtype) + halfUlp(v, rDtype))) return `${name} (${segment.label})`
        }
      }
    }
  }
  return undefined
}

// ---- the expected model ------------------------------------------------------------------------

/**
 * REF transformed as MODEL says it was: each tensor of MODEL's shape reads REF's rows, encodes them
 * in the segment's scheme and decodes them (f32), taking the blocks the exact check accepted under a
 * documented rule from MODEL itself; rows beyond REF's come from MODEL. This is what the forward
 * pass compares MODEL's logits with.
 */
export function expectedCheckpoint(ref: Checkpoint, model: Checkpoint, exact?: ExactWeights): Checkpoint {
  const refByName = new Map(ref.tensors.map((t) => [t.name, t]))
  const exactByName = new Map(exact?.tensors.map((t) => [t.name, t]))
  const tensors = model.tensors.map((record): TensorRecord => {
    const r = refByName.get(record.name)
    if (!r) throw new MappingError('verify.expected', `the reference has no ${record.name}`, {tensor: record.name})
    const [mRows, cols] = matrixShape(record.shape)
    const [rRows] = matrixShape(r.shape)
    const stored = storedTensor(model, record.name)!
    const accepted = exactByName.get(record.name)?.segments
    const rowBytes = cols * 4
    const byteLength = mRows * rowBytes
    // Rows [r0, r0 + out.length / cols) into `out`: the engine's matmul has this fill its weight blocks.
    const rowsInto = async (out: Float32Array, r0: number): Promise<void> => {
      const r1 = r0 + out.length / cols
      for (const [si, segment] of stored.segments.entries()) {
        const a = Math.max(r0, segment.row0)
        const b = Math.min(r1, segment.row0 + segment.rows)
        if (a >= b) continue
        const common = Math.min(b, rRows)
        if (a < common) {
          const scheme = schemeFor(segment.scheme)
          const compared = accepted?.[si]
          // A segment whose every block matched stores exactly REF's encoding: decode it rather than encode REF again.
          const identical = compared !== undefined && compared.identicalBlocks === compared.blocks && compared.comparedRows === segment.rows
          const encoded = identical
            ? await segment.read(a - segment.row0, common - segment.row0)
            : scheme.encode(await readRowsF32(r, cols, a, common), common - a, cols, segment.params)
          const values = out.subarray((a - r0) * cols, (common - r0) * cols)
          if (scheme.decodeInto) scheme.decodeInto(encoded, common - a, cols, segment.params, values)
          else values.set(scheme.decode(encoded, common - a, cols, segment.params))
          const blocks = accepted?.[si]?.acceptedBlocks
          if (blocks && blocks.length > 0) {
            const size = scheme.blockSize(segment.params, cols)
            const perRow = cols / size
            const lo = (a - segment.row0) * perRow
            const hi = (common - segment.row0) * perRow
            const hits = blocks.filter((k) => k >= lo && k < hi)
            if (hits.length > 0) {
              const own = scheme.decode(await segment.read(a - segment.row0, common - segment.row0), common - a, cols, segment.params)
              for (const k of hits) {
                const e0 = (k - lo) * size
                values.set(own.subarray(e0, e0 + size), e0)
              }
            }
          }
        }
        if (common < b) {
          // Rows REF does not have (MODEL's padded vocabulary): MODEL's own values.
          const from = Math.max(a, common)
          await readRowsF32Into(record, out.subarray((from - r0) * cols, (b - r0) * cols), from)
        }
      }
    }
    return withReadRowsF32({
      name: record.name, dtype: 'F32', shape: record.shape, byteLength,
      async read(start = 0, end = byteLength) {
        const r0 = Math.floor(start / rowBytes)
        const r1 = Math.ceil(end / rowBytes)
        const values = new Float32Array((r1 - r0) * cols)
        await rowsInto(values, r0)
        const bytes = fromFloat32(values, 'F32')
        return bytes.subarray(start - r0 * rowBytes, end - r0 * rowBytes)
      },
    }, rowsInto)
  })
  return {...model, path: `${ref.path} (transformed as ${model.path})`, tensors, stored: undefined, close: async () => undefined}
}
