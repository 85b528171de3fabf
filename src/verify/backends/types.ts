/**
 * A logits backend runs the reference forward pass (or an artifact's own runtime) over a token
 * sequence. Adding one is a module implementing LogitsBackend plus one line in BACKENDS (index.ts).
 */
import {type Checkpoint} from '../../formats/types.js'

export interface BackendInput {
  /** The model's path as the user gave it (runtimes that load the artifact themselves use it). */
  path: string
  /** The opened checkpoint (canonical tensors), for backends that take weights. */
  checkpoint: Checkpoint
}

export interface BackendOptions {
  /** auto | cpu | cuda (backends without devices ignore it). */
  device?: string
  /** Python interpreter for Python-based backends. */
  python?: string
  /** Also return each layer's output (backends that cannot leave `hidden` undefined). */
  collectHidden?: boolean
  /** Told each step as it starts (`load`, `forward`), so a command can show it. */
  onPhase?: (step: string) => void
}

export interface BackendResult {
  /** [T, vocab] row-major. */
  logits: Float32Array
  vocab: number
  /** Output of each layer, [T, model_dim] each. */
  hidden?: Float32Array[]
}

export interface LogitsBackend {
  name: string
  run(input: BackendInput, tokens: number[], options: BackendOptions): Promise<BackendResult>
}
