/** `--tokenizer PATH` / `--no-tokenizer`: which tokenizer an output gets, checked against the target before any work. */
import {Flags} from '@oclif/core'
import {UsageError} from '../errors.js'
import {adapterFor} from '../formats/registry.js'
import {type TokenizerRequest} from '../formats/tokenizer.js'

export const tokenizerFlags = {
  tokenizer: Flags.string({description: 'tokenizer for the output: a folder, tokenizer.model, tokenizer.json or a .gguf\'s vocabulary (default: the source\'s, else the built-in LLaMA-2 tokenizer for 32000-row models)'}),
  'no-tokenizer': Flags.boolean({description: 'write no tokenizer files (GGUF keeps placeholder pieces: token ids only)', default: false}),
  'chat-template': Flags.string({description: 'chat template for tokenizer_config.json and GGUF: openelm (OpenELM-Instruct\'s, CoreNet\'s recipe) or a file holding a Jinja template (default: the source\'s, else openelm for a model named *-Instruct)'}),
  'no-chat-template': Flags.boolean({description: 'write no chat template, even for an Instruct model', default: false}),
}

interface TokenizerFlagValues {
  tokenizer?: string
  'no-tokenizer'?: boolean
  'chat-template'?: string
  'no-chat-template'?: boolean
}

export function tokenizerRequest(flags: TokenizerFlagValues, to: string, layout: string | undefined): TokenizerRequest | undefined {
  const given = ['tokenizer', 'no-tokenizer', 'chat-template', 'no-chat-template'].find((f) => {
    const v = flags[f as keyof TokenizerFlagValues]
    return v !== undefined && v !== false
  })
  if (!given) return undefined
  if (flags.tokenizer !== undefined && flags['no-tokenizer']) throw new UsageError('flag.tokenizer', '--tokenizer and --no-tokenizer exclude each other')
  if (flags['chat-template'] !== undefined && flags['no-chat-template']) throw new UsageError('flag.chat_template', '--chat-template and --no-chat-template exclude each other')
  if (flags['chat-template'] !== undefined && flags['no-tokenizer']) throw new UsageError('flag.chat_template', '--chat-template needs a tokenizer: drop --no-tokenizer')
  const kind = adapterFor(to).tokenizerKind({layout})
  if (kind === 'none') throw new UsageError('flag.target', `--${given} applies to outputs that carry a tokenizer (hf, mlx, onnx, gguf), not --to ${to}`)
  const chatFlag = flags['chat-template'] !== undefined ? '--chat-template' : flags['no-chat-template'] ? '--no-chat-template' : undefined
  if (chatFlag && kind === 'sentencepiece') throw new UsageError('flag.target', `${chatFlag} applies to outputs with tokenizer_config.json or GGUF metadata, not --layout ${layout} (tokenizer.model only)`)
  return {
    ...(flags['no-tokenizer'] ? {none: true} : {}),
    ...(flags.tokenizer !== undefined ? {from: flags.tokenizer} : {}),
    ...(flags['chat-template'] !== undefined ? {chatTemplate: flags['chat-template']} : {}),
    ...(flags['no-chat-template'] ? {noChatTemplate: true} : {}),
  }
}
