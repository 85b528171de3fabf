/**
 * TS engine vs PyTorch CPU on the same weights: OpenELM-270M shape (synth, f32, seed 1), 32 tokens.
 *   npx tsx bench/verify-bench.ts [--preset 270M] [--tokens 32] [--dir /tmp/bench-verify] [--keep]
 * Prints a markdown row for bench/RESULTS-verify.md. The model folder is deleted afterwards
 * unless --keep.
 */
import {existsSync, promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {parseArgs} from 'node:util'
import {writeCheckpoint} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {findPython, handoverFile, torchForward, TorchWorker} from '../src/verify/backends/torch.js'
import {compareLogits} from '../src/verify/compare.js'
import {runForward} from '../src/verify/engine/index.js'
import {promptTokens} from '../src/verify/index.js'

const {values} = parseArgs({options: {
  preset: {type: 'string', default: '270M'},
  tokens: {type: 'string', default: '32'},
  dir: {type: 'string', default: '/tmp/bench-verify'},
  keep: {type: 'boolean', default: false},
  'skip-torch': {type: 'boolean', default: false},
}})
const T = Number(values.tokens)
const dir = path.join(values.dir!, `${values.preset}-f32`)
if (!existsSync(dir)) {
  const events = writeCheckpoint(synthCheckpoint(presetConfig(values.preset as '270M'), {seed: 1, dtype: 'F32'}), 'hf', dir, {})
  for (;;) if ((await events.next()).done) break
}
const checkpoint = await openCheckpoint(dir)
const tokens = promptTokens(T, 0, checkpoint.config.vocab_size)
const t0 = performance.now()
const ts = await runForward(checkpoint, tokens)
const tsSeconds = (performance.now() - t0) / 1000
console.log(`ts engine: ${tsSeconds.toFixed(2)} s (${T} tokens, ${os.availableParallelism()} threads)`)

if (!values['skip-torch']) {
  const worker = TorchWorker.start(findPython())
  try {
    const hello = await worker.call({op: 'hello'})
    const {file, remove} = await handoverFile(checkpoint)
    try {
      const t1 = performance.now()
      const torch = await torchForward(worker, file, checkpoint, tokens, {device: 'cpu'})
      const torchWall = (performance.now() - t1) / 1000
      // a second, warm forward (weights already loaded in the worker)
      const warm = await torchForward(worker, file, checkpoint, tokens, {device: 'cpu'})
      const m = compareLogits(torch.logits, ts.logits, T, torch.vocab, ts.vocab)
      console.log(`torch ${String(hello.torch)} cpu: load ${torch.loadSeconds.toFixed(2)} s, forward ${torch.forwardSeconds.toFixed(2)} s (warm ${warm.forwardSeconds.toFixed(2)} s), wall ${torchWall.toFixed(2)} s`)
      console.log(`logits ts vs torch: max abs ${m.maxAbs.toExponential(2)}, top-1 ${m.top1}`)
      console.log(`| ${values.preset} f32 | ${T} | ${tsSeconds.toFixed(2)} | ${torch.loadSeconds.toFixed(2)} + ${torch.forwardSeconds.toFixed(2)} (warm ${warm.forwardSeconds.toFixed(2)}) | ${(tsSeconds / (torch.loadSeconds + torch.forwardSeconds)).toFixed(2)} | ${(tsSeconds / warm.forwardSeconds).toFixed(2)} | ${m.maxAbs.toExponential(1)} |`)
    } finally {
      await remove()
    }
  } finally {
    await worker.close()
  }
}
await checkpoint.close()
if (!values.keep) await fs.rm(dir, {recursive: true, force: true})
