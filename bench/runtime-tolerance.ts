/**
 * Evidence for the runtime tolerances of verify (src/verify/runtime.ts): each model is converted to
 * GGUF (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, and the K file types Q2_K … Q6_K) and ONNX (f32, f16), run in its runtime (llama.cpp, onnxruntime) and on
 * the TS engine over the same file, and the difference is measured — only the runtime's arithmetic.
 *
 *   npx tsx bench/runtime-tolerance.ts [--models tiny:0,tiny:1,270M:0,fixtures/trained] [--tokens 32,128] [--targets 'gguf Q4_0,gguf Q5_1']
 *
 * A model is `preset:seed` (synth, random weights) or a path. Prints one row per (model, storage,
 * prompt) and the worst value per (runtime, storage), and writes bench/out/runtime-tolerance.json.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {parseArgs} from 'node:util'
import {writeCheckpoint} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {type Checkpoint, type FormatName, type WriteOptions} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {quantizationOf} from '../src/formats/gguf/index.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {runForward} from '../src/verify/engine/index.js'
import {fmt} from '../src/verify/compare.js'
import {resolvePrompt} from '../src/verify/prompt.js'
import {dominantStorage, type RuntimeName, runtimeCheck} from '../src/verify/runtime.js'
import {superBlockConfig} from '../test/helpers/shapes.js'

const {values} = parseArgs({options: {
  models: {type: 'string', default: 'fixtures/trained,tiny:0,tiny:1,tiny:2,270M:0'},
  tokens: {type: 'string', default: '32,128'},
  targets: {type: 'string'},
  out: {type: 'string', default: 'bench/out/runtime-tolerance.json'},
}})

const TARGETS: {label: string; to: FormatName; runtime: RuntimeName; options: WriteOptions; file?: string}[] = [
  {label: 'gguf F32', to: 'gguf', runtime: 'llama.cpp', options: {dtype: 'F32'}, file: 'model.gguf'},
  {label: 'gguf F16', to: 'gguf', runtime: 'llama.cpp', options: {dtype: 'F16'}, file: 'model.gguf'},
  {label: 'gguf BF16', to: 'gguf', runtime: 'llama.cpp', options: {dtype: 'BF16'}, file: 'model.gguf'},
  {label: 'gguf Q8_0', to: 'gguf', runtime: 'llama.cpp', options: {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}}, file: 'model.gguf'},
  ...(['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k_m', 'q4_k_m', 'q5_k_m', 'q6_k'] as const).map((mode) => ({label: `gguf ${mode.toUpperCase()}`, to: 'gguf' as const, runtime: 'llama.cpp' as const, options: {dtype: 'F16' as const, quantization: quantizationOf(mode)}, file: 'model.gguf'})),
  {label: 'onnx f32', to: 'onnx', runtime: 'onnxruntime', options: {dtype: 'F32'}},
  {label: 'onnx f16', to: 'onnx', runtime: 'onnxruntime', options: {dtype: 'F16'}},
  {label: 'onnx q4f16', to: 'onnx', runtime: 'onnxruntime', options: {dtype: 'F16', quantization: {bits: 4, groupSize: 32, mode: 'affine'}}},
]

async function source(spec: string): Promise<Checkpoint> {
  const m = /^([^:/]+):(\d+)$/.exec(spec)
  // `wide:SEED`: 8 layers whose rows are whole 256-value blocks, so K-quants run without fallbacks.
  if (m?.[1] === 'wide') return synthCheckpoint(superBlockConfig(8, 128), {seed: Number(m[2])})
  if (m) return synthCheckpoint(presetConfig(m[1]!), {seed: Number(m[2])})
  return openCheckpoint(spec)
}

interface Row {model: string; target: string; runtime: string; storage: string; tokens: number; relMaxAbs: number; meanKl: number; maxAbs: number; top1: number}
const rows: Row[] = []
const work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-runtime-tol-'))
try {
  for (const spec of values.models!.split(',')) {
    const src = await source(spec)
    // Real held-out text when the source has a tokenizer (the trained fixture), else seeded ids.
    const prompts = new Map<number, number[]>()
    for (const n of values.tokens!.split(',').map(Number)) {
      const length = Math.min(n, src.config.max_context_length - 1)
      prompts.set(n, (await resolvePrompt(src, /^[^:/]+:\d+$/.test(spec) ? '/nonexistent' : spec, {promptLength: length})).tokens)
    }
    try {
      for (const t of TARGETS.filter((x) => !values.targets || values.targets.split(',').includes(x.label))) {
        const dir = path.join(work, `${spec.replaceAll(/[/:]/g, '_')}-${t.label.replace(' ', '-')}`)
        const out = t.file ? path.join(dir, t.file) : dir
        await fs.mkdir(path.dirname(out), {recursive: true})
        await drain(writeCheckpoint(src, t.to, out, t.options))
        const model = await openCheckpoint(out)
        try {
          for (const n of values.tokens!.split(',').map(Number)) {
            const tokens = prompts.get(n)!
            const engine = await runForward(model, tokens)
            const r = await runtimeCheck(t.runtime, model, out, tokens, {name: 'ts', logits: engine.logits, vocab: engine.vocab}, 'cpu', {maxRelAbs: Infinity, maxMeanKl: Infinity, evidence: 'being measured'})
            rows.push({model: spec, target: t.label, runtime: t.runtime, storage: dominantStorage(model), tokens: tokens.length, relMaxAbs: r.relMaxAbs, meanKl: r.meanKl, maxAbs: r.maxAbs, top1: r.top1})
            console.log(`${spec.padEnd(18)} ${t.label.padEnd(10)} ${String(tokens.length).padStart(4)} tok  rel max |Δ| ${fmt(r.relMaxAbs).padStart(9)}  mean KL ${fmt(r.meanKl).padStart(9)}  top-1 ${fmt(r.top1)}`)
          }
        } finally {
          await model.close()
        }
        await fs.rm(dir, {recursive: true, force: true})
      }
    } finally {
      await src.close()
    }
  }
} finally {
  await fs.rm(work, {recursive: true, force: true})
}
const worst = new Map<string, {relMaxAbs: number; meanKl: number}>()
for (const r of rows) {
  const key = `${r.runtime} ${r.storage}`
  const w = worst.get(key) ?? {relMaxAbs: 0, meanKl: 0}
  worst.set(key, {relMaxAbs: Math.max(w.relMaxAbs, r.relMaxAbs), meanKl: Math.max(w.meanKl, r.meanKl)})
}
console.log('worst per runtime and storage:')
for (const [key, w] of worst) console.log(`  ${key.padEnd(24)} rel max |Δ| ${fmt(w.relMaxAbs)}  mean KL ${fmt(w.meanKl)}`)
await fs.mkdir(path.dirname(values.out!), {recursive: true})
await fs.writeFile(values.out!, JSON.stringify({rows, worst: Object.fromEntries(worst)}, null, 1))
