/**
 * Test and bench model shapes beyond the shipped fixtures.
 */
import {type OpenElmConfig} from '../../src/model/config.js'
import {presetConfig} from '../../src/model/presets.js'

/**
 * The tiny preset widened to 256 (head_dim 64, FFN widths multiples of 256): every matrix row is
 * whole 256-value K-quant super-blocks, so llama-quantize's rules apply without fallbacks.
 */
export function superBlockConfig(layers: number, context: number): OpenElmConfig {
  return presetConfig('tiny', {model_dim: 256, head_dim: 64, ffn_dim_divisor: 256, num_transformer_layers: layers, vocab_size: 256, max_context_length: context})
}
