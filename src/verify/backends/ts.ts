/** The built-in TypeScript engine: CPU, no Python. */
import {runForward} from '../engine/index.js'
import {type LogitsBackend} from './types.js'

export const tsBackend: LogitsBackend = {
  name: 'ts',
  async run(input, tokens, options) {
    const r = await runForward(input.checkpoint, tokens, {collectHidden: options.collectHidden})
    return {logits: r.logits, vocab: r.vocab, ...(r.hidden ? {hidden: r.hidden} : {})}
  },
}
