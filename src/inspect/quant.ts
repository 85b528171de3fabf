/**
 * How each tensor of a checkpoint is stored: its storage type (scheme and parameters), stored bytes
 * and bits per weight, for every format from one place — the stored-segment declarations the
 * readers make (src/formats/stored.ts: MLX affine and fp modes, GGUF block types, plain floats of
 * any format), sized by each scheme's parts (src/quant). Grouped, it is `inspect`'s storage summary
 * ("Q8_0 ×17 (8.5 bpw) 1.2 MiB, F32 ×17 …").
 */
import {storedTensor} from '../formats/stored.js'
import {type Checkpoint} from '../formats/types.js'
import {schemeFor} from '../quant/index.js'
import {type SchemeParams} from '../quant/types.js'
import {dtypeSize, isFloatDType} from '../tensor/dtype.js'

export interface TensorStorage {
  /** Canonical name. */
  name: string
  shape: number[]
  /** Storage type, e.g. `F16`, `Q8_0`, `affine 4-bit g64`, `mxfp4` (segments of two types: joined with `+`). */
  type: string
  /** Scheme name(s) and parameters, per stored segment. */
  segments: {scheme: string; params: SchemeParams; rows: number; label: string}[]
  elements: number
  /** Bytes of every stored part (codes, scales, biases, block headers). */
  storedBytes: number
  bitsPerWeight: number
}

export interface StorageGroup {
  type: string
  tensors: number
  elements: number
  storedBytes: number
  bitsPerWeight: number
}

/** The short name of a storage scheme with its parameters. */
export function storageType(scheme: string, params: SchemeParams): string {
  if (scheme === 'f32' || scheme === 'f16' || scheme === 'bf16') return scheme.toUpperCase()
  if (scheme === 'mlx_affine') return `affine ${params.bits}-bit g${params.group_size}`
  if (scheme.startsWith('mlx_')) return scheme.slice(4)
  if (scheme.startsWith('gguf_')) return scheme.slice(5).toUpperCase()
  if (scheme === 'onnx_q4' && params.dtype === 'F16') return 'q4 (f16 scales)'
  if (scheme.startsWith('onnx_')) return scheme.slice(5)
  return scheme
}

/** Bits per weight rounded for display (two decimals). */
function round2(x: number): number {
  return Math.round(x * 100) / 100
}

/** Every tensor's storage, in the checkpoint's canonical order. */
export function tensorStorage(checkpoint: Checkpoint): TensorStorage[] {
  const out: TensorStorage[] = []
  for (const t of checkpoint.tensors) {
    const elements = t.shape.reduce((a, b) => a * b, 1)
    if (!checkpoint.stored?.has(t.name) && !isFloatDType(t.dtype)) {
      // Not a float and no stored form declared (no reader does this today): its own bytes.
      out.push({name: t.name, shape: [...t.shape], type: t.dtype, segments: [], elements, storedBytes: t.byteLength, bitsPerWeight: round2((t.byteLength * 8) / elements)})
      continue
    }
    const stored = storedTensor(checkpoint, t.name)
    if (!stored) continue
    const cols = t.shape.length === 1 ? t.shape[0]! : t.shape.slice(1).reduce((a, b) => a * b, 1)
    let storedBytes = 0
    const segments: TensorStorage['segments'] = []
    for (const s of stored.segments) {
      const parts = schemeFor(s.scheme).parts(s.params, cols)
      storedBytes += parts.reduce((a, p) => a + p.perRow * dtypeSize(p.dtype), 0) * s.rows
      segments.push({scheme: s.scheme, params: s.params, rows: s.rows, label: s.label})
    }
    const types = [...new Set(segments.map((s) => storageType(s.scheme, s.params)))]
    out.push({name: t.name, shape: [...t.shape], type: types.join('+'), segments, elements, storedBytes, bitsPerWeight: round2((storedBytes * 8) / elements)})
  }
  return out
}

/** Tensors grouped by storage type, the largest stored share first. */
export function storageSummary(tensors: readonly TensorStorage[]): StorageGroup[] {
  const groups = new Map<string, StorageGroup>()
  for (const t of tensors) {
    const g = groups.get(t.type) ?? {type: t.type, tensors: 0, elements: 0, storedBytes: 0, bitsPerWeight: 0}
    g.tensors++
    g.elements += t.elements
    g.storedBytes += t.storedBytes
    groups.set(t.type, g)
  }
  for (const g of groups.values()) g.bitsPerWeight = round2((g.storedBytes * 8) / g.elements)
  return [...groups.values()].sort((a, b) => b.storedBytes - a.storedBytes || a.type.localeCompare(b.type))
}
