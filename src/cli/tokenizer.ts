/** `--tokenizer PATH` / `--no-tokenizer`: which tokenizer an output gets, checked against the target before any work. */
import {Flags} from '@oclif/core'
import {UsageError} from '../errors.js'
import {adapterFor} from '../formats/registry.js'
import {type TokenizerRequest} from '../formats/tokenizer.js'

export const tokenizerFlags = {
  tokenizer: Flags.string({description: 'tokenizer for the output: a folder, tokenizer.model, tokenizer.json or a .gguf\'s vocabulary (default: the source\'s, else the built-in LLaMA-2 tokenizer for 32000-row models)'}),
  'no-tokenizer': Flags.boolean({description: 'write no tokenizer files (GGUF keeps placeholder pieces: token ids only)', default: false}),
}

export function tokenizerRequest(flags: {tokenizer?: string; 'no-tokenizer'?: boolean}, to: string, layout: string | undefined): TokenizerRequest | undefined {
  const given = flags.tokenizer !== undefined ? '--tokenizer' : flags['no-tokenizer'] ? '--no-tokenizer' : undefined
  if (!given) return undefined
  if (flags.tokenizer !== undefined && flags['no-tokenizer']) throw new UsageError('flag.tokenizer', '--tokenizer and --no-tokenizer exclude each other')
  if (adapterFor(to).tokenizerKind({layout}) === 'none') throw new UsageError('flag.target', `${given} applies to outputs that carry a tokenizer (hf, mlx, onnx, gguf), not --to ${to}`)
  return flags['no-tokenizer'] ? {none: true} : {from: flags.tokenizer}
}
