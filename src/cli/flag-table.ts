/**
 * Which `convert` flags apply to which targets: one line per flag, checked before any work.
 * A flag given for a target it does not list is a usage error (exit 2) naming the flag and what it
 * applies to. Other commands and engineers extend this with one line per flag.
 */
import {UsageError} from '../errors.js'
import {type FormatName} from '../formats/types.js'
import {GGUF_DTYPE_ALIASES, GGUF_DTYPES} from './options.js'

export interface FlagRule {
  /** Targets the flag applies to. */
  targets: readonly FormatName[]
  /** Only these values of the flag are restricted (e.g. `--dtype q8_0`); absent: any value. */
  values?: readonly string[]
  /** What to use instead, shown after the refusal. */
  hint?: string
}

// --q-mode, --q-recipe and --quantize-embedding (MLX only) are checked with their values in src/cli/options.ts.
export const CONVERT_FLAG_TABLE: Readonly<Record<string, FlagRule>> = {
  quantize: {targets: ['mlx', 'onnx'], hint: 'for GGUF use --dtype q8_0, q4_0, …'},
  'group-size': {targets: ['mlx']},
  dtype: {targets: ['gguf'], values: [...GGUF_DTYPES, ...Object.keys(GGUF_DTYPE_ALIASES)]},
  'training-checkpoint': {targets: ['corenet']},
  'token-embedding-type': {targets: ['gguf']},
  'output-tensor-type': {targets: ['gguf']},
  layout: {targets: ['mlx', 'onnx']},
  // Sharded safetensors: HF and MLX folders (CoreNet, GGUF and ONNX write one weights file).
  'shard-size': {targets: ['hf', 'mlx']},
  variants: {targets: ['onnx']},
}

/** `roundtrip`: the same rules, checked for every hop of --via before the first one runs. */
export const ROUNDTRIP_FLAG_TABLE: Readonly<Record<string, FlagRule>> = {
  // Roundtrip quantizes MLX hops only.
  quantize: {targets: ['mlx'], hint: 'for GGUF use --dtype q8_0, q4_0, …'},
  'group-size': CONVERT_FLAG_TABLE['group-size'],
  dtype: CONVERT_FLAG_TABLE.dtype,
}

/** Refuse (exit 2) the first given flag of `table` that does not apply to `target`. */
export function checkFlagTargets(table: Readonly<Record<string, FlagRule>>, flags: Record<string, unknown>, target: string): void {
  for (const [name, rule] of Object.entries(table)) {
    const given = flags[name]
    if (given === undefined || given === false) continue
    if (rule.values !== undefined && !rule.values.includes(String(given).toLowerCase())) continue
    if (rule.targets.includes(target as FormatName)) continue
    const flag = rule.values === undefined ? `--${name}` : `--${name} ${String(given).toLowerCase()}`
    throw new UsageError('flag.target', `${flag} is for ${rule.targets.join('/')} targets, not ${target}${rule.hint ? ` (${rule.hint})` : ''}`, {flag: name, target, appliesTo: [...rule.targets]})
  }
}
