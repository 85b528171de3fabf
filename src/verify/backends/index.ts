/** Every logits backend `verify --backend` accepts. One line per backend. */
import {UsageError} from '../../errors.js'
import {onnxruntimeBackend} from './onnxruntime.js'
import {torchBackend} from './torch.js'
import {tsBackend} from './ts.js'
import {type LogitsBackend} from './types.js'

export const BACKENDS: Record<string, LogitsBackend> = {
  ts: tsBackend,
  torch: torchBackend,
  onnxruntime: onnxruntimeBackend,
}

export function backendFor(name: string): LogitsBackend {
  const backend = BACKENDS[name]
  if (!backend) throw new UsageError('verify.backend', `unknown backend "${name}" (expected one of ${Object.keys(BACKENDS).join(', ')})`)
  return backend
}

export type {BackendInput, BackendOptions, BackendResult, LogitsBackend} from './types.js'
