/**
 * llama.cpp's LLaMA SentencePiece test material, from the llama.cpp source tree that node-llama-cpp
 * (a devDependency) ships as a git bundle: `models/ggml-vocab-llama-spm.gguf` (the vocabulary
 * converted from Meta's tokenizer.model: tokens, scores, types) and its `.inp` / `.out` test
 * vectors (strings separated by "\n__ggml_vocab_test__\n", one line of ids per string, no BOS).
 * Extracted once per bundle into os.tmpdir() and reused by later runs.
 */
import {execFileSync} from 'node:child_process'
import {existsSync, promises as fs, statSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const BUNDLE = path.resolve(import.meta.dirname, '../../node_modules/node-llama-cpp/llama/gitRelease.bundle')
const FILES = ['ggml-vocab-llama-spm.gguf', 'ggml-vocab-llama-spm.gguf.inp', 'ggml-vocab-llama-spm.gguf.out']
const SEPARATOR = '\n__ggml_vocab_test__\n'

export interface LlamaSpmMaterial {
  gguf: Uint8Array
  /** [text, ids] pairs. */
  vectors: [string, number[]][]
}

/** The extracted files' folder; throws a clear error when the bundle is missing. */
async function extract(): Promise<string> {
  if (!existsSync(BUNDLE)) {
    throw new Error(`llama.cpp's source bundle is missing (${BUNDLE}): it comes with the node-llama-cpp devDependency; run npm install`)
  }
  const stat = statSync(BUNDLE)
  const dir = path.join(os.tmpdir(), `openelm-llama-spm-${stat.size}-${Math.floor(stat.mtimeMs)}`)
  if (FILES.every((f) => existsSync(path.join(dir, f)))) return dir
  const scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-llama-spm-'))
  try {
    execFileSync('git', ['clone', '-q', '--no-checkout', BUNDLE, path.join(scratch, 'repo')], {stdio: ['ignore', 'ignore', 'pipe']})
    const out = path.join(scratch, 'out')
    await fs.mkdir(out)
    for (const f of FILES) {
      const bytes = execFileSync('git', ['-C', path.join(scratch, 'repo'), 'show', `HEAD:models/${f}`], {maxBuffer: 1 << 26})
      await fs.writeFile(path.join(out, f), bytes)
    }
    // Another test process may have finished first: then keep its copy.
    await fs.rename(out, dir).catch(async (error) => {
      if (!FILES.every((f) => existsSync(path.join(dir, f)))) throw error
    })
  } finally {
    await fs.rm(scratch, {recursive: true, force: true})
  }
  return dir
}

export async function llamaSpmMaterial(): Promise<LlamaSpmMaterial> {
  const dir = await extract()
  const inputs = (await fs.readFile(path.join(dir, FILES[1]!), 'utf8')).split(SEPARATOR)
  const outputs = (await fs.readFile(path.join(dir, FILES[2]!), 'utf8')).split('\n')
  // The input file ends with a separator: its last chunk is empty and has no output line.
  if (inputs.at(-1) === '') inputs.pop()
  const vectors = inputs.map((text, i): [string, number[]] => {
    const line = outputs[i]
    if (line === undefined) throw new Error(`${FILES[2]} has no line ${i + 1}`)
    return [text, line.trim() === '' ? [] : line.trim().split(/\s+/).map(Number)]
  })
  return {gguf: await fs.readFile(path.join(dir, FILES[0]!)), vectors}
}
