import {type ConfigShape} from '../../src/model/config.js'

/**
 * The trained fixture's architecture: CoreNet's layer-wise scaling (qkv 0.5→1.0, FFN 0.5→4.0) at a
 * size that commits (≤ 8 MB in f32). model_dim 128 and FFN widths that are multiples of 128 let
 * every MLX group size (32/64/128) and GGUF block size (32) quantize every matrix but layer 0's
 * out_proj (64 wide: groups of 32 and 64 only); head_dim 32 and
 * 2 GQA groups give 2/4/4/4 query heads and 1/2/2/2 KV heads; FFN 128/256/384/512.
 */
export const TRAINED_SHAPE: ConfigShape = {
  num_transformer_layers: 4,
  model_dim: 128,
  head_dim: 32,
  vocab_size: 8192,
  num_gqa_groups: 2,
  ffn_dim_divisor: 128,
  max_context_length: 256,
}
