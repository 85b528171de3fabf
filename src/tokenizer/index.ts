/**
 * OpenELM's tokenizer: SentencePiece BPE (LLaMA-2's, 32,000 pieces), encoded and decoded exactly
 * as SentencePiece does, loaded from tokenizer.model, tokenizer.json, a GGUF vocabulary or the
 * built-in LLaMA-2 vocabulary, and written back as tokenizer.model or Hugging Face files.
 */
export {compileModel, decodeBytes, decodeIds, encodeIds, normalize, type CompiledModel} from './bpe.js'
export {findTokenizer, loadTokenizer, LLAMA2_ROWS, type EmbeddedVocabulary} from './find.js'
export {isPlaceholderVocabulary, modelFromGgufVocabulary, type GgufVocabulary} from './gguf.js'
export {
  MAX_TOKENIZER_JSON_BYTES, mergesFromModel, modelFromTokenizerJson, scoresFromMerges, specialTokensMap, tokenizerConfig, tokenizerJson,
  type HfTokenizerOptions,
} from './hf.js'
export {LLAMA2_NAME, LLAMA2_VOCAB_SIZE, llama2Model, llama2ModelFromVocabulary, llama2Tokenizer} from './llama2.js'
export {BYTE_PIECE, bytePiece, MODEL_TYPE, PIECE_TYPE, SPACE_SYMBOL, type PieceType, type SentencePieceModel} from './model.js'
export {MAX_TOKENIZER_MODEL_BYTES, readSentencePieceModel, writeSentencePieceModel} from './proto.js'
export {createTokenizer, type EncodeOptions, type Tokenizer} from './tokenizer.js'
export {hfTokenizerFiles} from './files.js'
export {OPENELM_CHAT_EOS, OPENELM_CHAT_TEMPLATE, renderChat, type ChatMessage, type ChatRole} from './chat.js'
