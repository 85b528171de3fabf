/**
 * Greedy decoding on both sides of the ONNX transformers.js tests: the TS engine (KV-cached
 * session over the checkpoint's weights, as `openelm generate` runs it; its logits equal the full
 * forward pass: test/generate.test.ts) and transformers.js `generate` on an exported folder.
 * Both stop at EOS; the result is prompt + new tokens.
 */
import {AutoModelForCausalLM, Tensor} from '@huggingface/transformers'
import {type Checkpoint} from '../../src/formats/types.js'
import {EngineSession} from '../../src/verify/engine/session.js'

export async function engineGreedy(checkpoint: Checkpoint, prompt: readonly number[], steps: number): Promise<number[]> {
  const session = await EngineSession.open(checkpoint, {capacity: prompt.length + steps, threads: 0, resident: true})
  try {
    const tokens = [...prompt]
    let logits = await session.append(prompt)
    for (let s = 0; s < steps; s++) {
      let best = 0
      for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i
      tokens.push(best)
      if (best === checkpoint.config.eos_token_id || s === steps - 1) break
      logits = await session.append([best])
    }
    return tokens
  } finally {
    await session.close()
  }
}

/** transformers.js greedy generation from a folder under env.localModelPath (local files only). */
export async function tjsGreedy(name: string, prompt: readonly number[], steps: number, options: {dtype?: string; optimizations?: boolean} = {}): Promise<number[]> {
  const model = await AutoModelForCausalLM.from_pretrained(name, {
    local_files_only: true,
    ...(options.dtype ? {dtype: options.dtype as 'q4'} : {}),
    ...(options.optimizations === false ? {session_options: {graphOptimizationLevel: 'disabled'}} : {}),
  })
  try {
    const ids = new Tensor('int64', BigInt64Array.from(prompt.map(BigInt)), [1, prompt.length])
    const mask = new Tensor('int64', BigInt64Array.from(prompt.map(() => 1n)), [1, prompt.length])
    const out = (await model.generate({input_ids: ids, attention_mask: mask, max_new_tokens: steps, do_sample: false})) as Tensor
    return Array.from(out.data as BigInt64Array, Number)
  } finally {
    await model.dispose()
  }
}
