/**
 * Canonical ↔ GGUF tensor names (llama.cpp `LLM_ARCH_OPENELM`), as one declarative table expanded
 * once per layer count into exact-match maps. `proj_1` maps to two GGUF tensors: rows [0, I) are
 * `ffn_gate`, rows [I, 2I) `ffn_up`. There is no `output` tensor (the head is tied).
 * The row split and re-join are pure record transforms kept apart from the renaming.
 */
import {MappingError, shown} from '../../errors.js'
import {GLOBAL_TENSORS, LAYER_TENSORS} from '../../model/tensors.js'
import {renamed, sliceRows, type TensorRecord} from '../../tensor/record.js'

/** Which rows of the canonical tensor a GGUF tensor holds. */
export type RowPart = 'all' | 'first-half' | 'second-half'

export interface NameRule {
  gguf: string
  canonical: string
  part: RowPart
}

export const GGUF_TENSOR_TABLE: readonly NameRule[] = [
  {gguf: 'token_embd.weight', canonical: GLOBAL_TENSORS.token_embeddings, part: 'all'},
  {gguf: 'blk.{bid}.attn_norm.weight', canonical: LAYER_TENSORS.attn_norm, part: 'all'},
  {gguf: 'blk.{bid}.attn_qkv.weight', canonical: LAYER_TENSORS.qkv_proj, part: 'all'},
  {gguf: 'blk.{bid}.attn_q_norm.weight', canonical: LAYER_TENSORS.q_norm, part: 'all'},
  {gguf: 'blk.{bid}.attn_k_norm.weight', canonical: LAYER_TENSORS.k_norm, part: 'all'},
  {gguf: 'blk.{bid}.attn_output.weight', canonical: LAYER_TENSORS.out_proj, part: 'all'},
  {gguf: 'blk.{bid}.ffn_norm.weight', canonical: LAYER_TENSORS.ffn_norm, part: 'all'},
  {gguf: 'blk.{bid}.ffn_gate.weight', canonical: LAYER_TENSORS.proj_1, part: 'first-half'},
  {gguf: 'blk.{bid}.ffn_up.weight', canonical: LAYER_TENSORS.proj_1, part: 'second-half'},
  {gguf: 'blk.{bid}.ffn_down.weight', canonical: LAYER_TENSORS.proj_2, part: 'all'},
  {gguf: 'output_norm.weight', canonical: GLOBAL_TENSORS.norm, part: 'all'},
]

/** Names llama.cpp may carry that an OpenELM GGUF must not have, with the reason. */
export const REJECTED_GGUF_TENSORS: Record<string, string> = {
  'output.weight': 'OpenELM ties the output head to token_embd; a separate output.weight is not supported',
}

export interface NameMaps {
  /** GGUF name → the canonical tensor and the rows it holds. */
  toCanonical: Map<string, {canonical: string; part: RowPart}>
  /** Canonical name → its GGUF tensors, in file order. */
  toGguf: Map<string, {gguf: string; part: RowPart}[]>
  /** Every GGUF name in file order. */
  ggufOrder: string[]
}

export function expandNames(layers: number): NameMaps {
  const toCanonical = new Map<string, {canonical: string; part: RowPart}>()
  const toGguf = new Map<string, {gguf: string; part: RowPart}[]>()
  const ggufOrder: string[] = []
  const add = (rule: NameRule, bid?: number) => {
    const gguf = bid === undefined ? rule.gguf : rule.gguf.replace('{bid}', String(bid))
    const canonical = bid === undefined ? rule.canonical : rule.canonical.replace('{bid}', String(bid))
    toCanonical.set(gguf, {canonical, part: rule.part})
    toGguf.set(canonical, [...(toGguf.get(canonical) ?? []), {gguf, part: rule.part}])
    ggufOrder.push(gguf)
  }
  const global = GGUF_TENSOR_TABLE.filter((r) => !r.gguf.includes('{bid}'))
  const perLayer = GGUF_TENSOR_TABLE.filter((r) => r.gguf.includes('{bid}'))
  add(global[0]!)
  for (let i = 0; i < layers; i++) for (const rule of perLayer) add(rule, i)
  for (const rule of global.slice(1)) add(rule)
  return {toCanonical, toGguf, ggufOrder}
}

export function toGgufNames(canonical: string, maps: NameMaps): {gguf: string; part: RowPart}[] {
  const names = maps.toGguf.get(canonical)
  if (!names) throw new MappingError('gguf.unmapped', `tensor ${shown(canonical)} has no GGUF name`, {tensor: canonical})
  return names
}

export function fromGgufName(gguf: string, maps: NameMaps): {canonical: string; part: RowPart} {
  const rejected = REJECTED_GGUF_TENSORS[gguf]
  if (rejected) throw new MappingError('gguf.rejected_tensor', `GGUF tensor ${shown(gguf)}: ${rejected}`, {tensor: gguf})
  const hit = maps.toCanonical.get(gguf)
  if (!hit) throw new MappingError('gguf.unknown_tensor', `GGUF tensor ${shown(gguf)} is not part of an OpenELM model`, {tensor: gguf})
  return hit
}

// ---- pure row transforms --------------------------------------------------------------------

/**
 * The rows of `record` a GGUF tensor holds (`proj_1` halves are split at row `rows / 2`), with the
 * source's no-allocation reader kept (renamed, sliceRows): without it every chunk the GGUF writer
 * quantized on the pool was a fresh read plus a copy to hand over, and on 2 workers the main
 * thread's garbage ArrayBuffers set off a full GC every ~80 ms (1.1B q4_k_m: ~240 of them, ~5 CPU-s
 * of V8's helper threads).
 */
export function selectRows(record: TensorRecord, part: RowPart, name: string): TensorRecord {
  const rows = record.shape[0]!
  if (part === 'all') return renamed(record, name)
  if (rows % 2 !== 0) throw new MappingError('gguf.split', `tensor ${shown(record.name)} has ${rows} rows, which cannot split into gate and up halves`, {tensor: record.name})
  return part === 'first-half' ? sliceRows(record, 0, rows / 2, name) : sliceRows(record, rows / 2, rows, name)
}

/** Stack `first` and `second` along dim 0 (same dtype and row shape), lazily. */
export function joinRows(name: string, first: TensorRecord, second: TensorRecord): TensorRecord {
  if (first.dtype !== second.dtype || first.shape.slice(1).join() !== second.shape.slice(1).join()) {
    throw new MappingError('gguf.join', `cannot join ${first.name} (${first.dtype} [${first.shape.join(', ')}]) and ${second.name} (${second.dtype} [${second.shape.join(', ')}]) into ${name}`, {tensor: name})
  }
  const split = first.byteLength
  const byteLength = first.byteLength + second.byteLength
  return {
    name, dtype: first.dtype, shape: [first.shape[0]! + second.shape[0]!, ...first.shape.slice(1)], byteLength,
    async read(start = 0, end = byteLength) {
      if (end <= split) return first.read(start, end)
      if (start >= split) return second.read(start - split, end - split)
      const out = new Uint8Array(end - start)
      out.set(await first.read(start, split), 0)
      out.set(await second.read(0, end - split), split - start)
      return out
    },
  }
}
