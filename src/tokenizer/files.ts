/** The tokenizer files an output folder gets, as bytes by file name (deterministic). */
import {specialTokensMap, tokenizerConfig, tokenizerJson, type HfTokenizerOptions} from './hf.js'
import {type SentencePieceModel} from './model.js'
import {writeSentencePieceModel} from './proto.js'

const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value, null, 2) + '\n')

/**
 * `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` (what transformers,
 * transformers.js and mlx-lm load) and, unless `withModel` is false, `tokenizer.model` (what
 * SentencePiece, the slow LlamaTokenizer and CoreNet's MLX example load).
 */
export function hfTokenizerFiles(model: SentencePieceModel, options: HfTokenizerOptions & {withModel?: boolean} = {}): Record<string, Uint8Array> {
  const files: Record<string, Uint8Array> = {
    'special_tokens_map.json': json(specialTokensMap(model)),
    'tokenizer.json': json(tokenizerJson(model, options)),
    'tokenizer_config.json': json(tokenizerConfig(model, options)),
  }
  if (options.withModel !== false) files['tokenizer.model'] = writeSentencePieceModel(model)
  return files
}
