/** Flags shared by several commands. */
import {Flags} from '@oclif/core'
import {FORMAT_NAMES} from '../formats/types.js'
import {GGUF_DTYPE_ALIASES, GGUF_DTYPES} from './options.js'

export const dtypeFlag = Flags.string({
  description: `float dtype of the written weights; for GGUF also llama-quantize's file types (${GGUF_DTYPES.join(', ')}; q3_k, q4_k, q5_k are its aliases for the _m types), each tensor typed by its rules`,
  aliases: ['outtype'],
  options: ['f32', 'f16', 'bf16', 'float32', 'float16', 'bfloat16', ...GGUF_DTYPES, ...Object.keys(GGUF_DTYPE_ALIASES)],
})

export const outFlag = Flags.string({char: 'o', description: 'output folder (or file for single-file formats)', required: true})
export const threadsFlag = Flags.string({description: 'worker threads for the quantizers and float casts (default: OPENELM_THREADS, else one per core up to 2 (each worker adds ~37 MB) for the quantizers, with the casts in the main thread; 1: no workers)'})
/** convert's --threads: also --verify's (the weight check and the ts engine's matmuls). */
export const convertThreadsFlag = Flags.string({description: `${threadsFlag.description}; with --verify, also its weight check's and the ts engine's matmul workers (default one per core up to 16)`})
/** verify's --threads: the weight check's workers and the ts engine's matmul workers. */
export const verifyThreadsFlag = Flags.string({description: 'worker threads of the weight check (default: OPENELM_THREADS, else one per core up to 2; 1: none) and of the ts engine\'s matmuls (default: OPENELM_THREADS, else one per core up to 16)'})
export const forceFlag = Flags.boolean({description: 'replace the output if it exists', default: false})
export const formatOption = Flags.string({description: 'force the source format instead of detecting it', options: [...FORMAT_NAMES]})
export const toFlag = Flags.string({description: 'target format', options: [...FORMAT_NAMES], required: true})

/** Where a MODEL argument that names the Hub is read from: spread into a command's flags. */
export const hubSourceFlags = {
  revision: Flags.string({description: 'Hub source: branch, tag or commit of the repo id (default: main)'}),
  token: Flags.string({description: 'Hub source: token for gated or private repos (default: HF_TOKEN)'}),
  endpoint: Flags.string({description: 'Hub source: Hub URL (default: HF_ENDPOINT, then https://huggingface.co)'}),
}
