/**
 * Deterministic random weights with the exact shapes of a config. Every element is a pure
 * function of (seed, tensor index, element index), so any range of any tensor is computed on
 * demand: a 3B model is written without ever being held in memory, and the same seed gives
 * byte-identical files.
 */
import {type Checkpoint} from '../formats/types.js'
import {type FloatDType} from '../tensor/dtype.js'
import {BlocksAhead, runOne} from '../pool/index.js'
import {dtypeSize} from '../tensor/dtype.js'
import {readingInto, type TensorRecord} from '../tensor/record.js'
import {type OpenElmConfig} from './config.js'
import {expectedTensors} from './tensors.js'

export {synthUniform} from './synth-values.js'

/** Elements per synth block (one pool task): 1 MiB of f32. */
const SYNTH_BLOCK = 1 << 18

/**
 * A synth tensor computed block by block on the worker pool (blocks ahead of a sequential reader,
 * src/pool BlocksAhead): each element depends on its index alone, so the bytes are the same for any
 * thread count and any read pattern.
 */
function synthRecord(name: string, shape: readonly number[], dtype: FloatDType, values: {seed: number; tensor: number; offset: number; amplitude: number}): TensorRecord {
  const size = dtypeSize(dtype)
  const count = shape.reduce((a, b) => a * b, 1)
  const byteLength = count * size
  const blockBytes = SYNTH_BLOCK * size
  const blocks = new BlocksAhead(Math.ceil(count / SYNTH_BLOCK), (b) => {
    const first = b * SYNTH_BLOCK
    return runOne({kind: 'synth', ...values, first, count: Math.min(SYNTH_BLOCK, count - first), dtype})
  })
  return readingInto({name, dtype, shape: [...shape], byteLength}, (target, start) => blocks.readRangeInto(target, start, blockBytes, byteLength))
}

export function synthCheckpoint(config: OpenElmConfig, options: {seed?: number; dtype?: FloatDType} = {}): Checkpoint {
  const seed = options.seed ?? 0
  const dtype = options.dtype ?? 'F32'
  const tensors = expectedTensors(config).map((e, index) => {
    const isNorm = e.kind === 'vector'
    const isEmbedding = e.name === 'token_embeddings.weight'
    const fanIn = e.shape[e.shape.length - 1]!
    // Uniform(-a, a) has std a/√3: linears get std 1/√fan_in, the (tied) embedding std 2/√d so
    // that logits spread over a few units, norms 1 ± 0.1.
    const amplitude = isNorm ? 0.1 : Math.sqrt(3) * (isEmbedding ? 2 : 1) / Math.sqrt(fanIn)
    const offset = isNorm ? 1 : 0
    return synthRecord(e.name, e.shape, dtype, {seed, tensor: index, offset, amplitude})
  })
  return {
    format: 'hf',
    path: `synth:seed=${seed}`,
    config,
    tensors,
    extras: {configSource: 'preset', dtype, tokenizerFiles: [], notes: [], info: {seed}},
    close: async () => undefined,
  }
}
