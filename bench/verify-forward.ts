/**
 * Time `verify`'s three forward passes (src/verify/engine runForward) on a MODEL and its REF, each
 * alone, and the reading of their weights alone (no matmul), with the process CPU (all threads).
 *   npx tsx bench/verify-forward.ts MODEL REF
 */
import {performance} from 'node:perf_hooks'
import {openCheckpoint} from '../src/formats/registry.js'
import {type Checkpoint} from '../src/formats/types.js'
import {closeSharedPool} from '../src/pool/index.js'
import {runForward} from '../src/verify/engine/index.js'
import {compareStored, expectedCheckpoint} from '../src/verify/exact.js'
import {promptTokens} from '../src/verify/index.js'

const [model, ref] = process.argv.slice(2)
if (!model || !ref) {
  console.error('usage: npx tsx bench/verify-forward.ts MODEL REF')
  process.exit(2)
}

async function timed(label: string, work: () => Promise<unknown>): Promise<void> {
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await work()
  const wall = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  console.log(JSON.stringify({step: label, wall_s: +wall.toFixed(2), cpu_s: +((cpu.user + cpu.system) / 1e6).toFixed(2)}))
}

/** Every 2-D weight read whole, block by block, as the engine reads them (no matmul). */
async function readAll(checkpoint: Checkpoint): Promise<void> {
  for (const t of checkpoint.tensors) {
    if (t.shape.length !== 2) continue
    const rowBytes = t.byteLength / t.shape[0]!
    const rows = Math.max(4, Math.floor((4 << 20) / (t.shape[1]! * 4) / 4) * 4)
    for (let r0 = 0; r0 < t.shape[0]!; r0 += rows) await t.read(r0 * rowBytes, Math.min(t.shape[0]!, r0 + rows) * rowBytes)
  }
}

const m = await openCheckpoint(model, {})
const r = await openCheckpoint(ref, {})
const tokens = promptTokens(32, 0, m.config.vocab_size)
let weights
await timed('compare weights', async () => { weights = await compareStored(r, m) })
const expected = expectedCheckpoint(r, m, weights)
await timed('read model', () => readAll(m))
await timed('read transformed', () => readAll(expected))
await timed('read source', () => readAll(r))
await timed('model forward', () => runForward(m, tokens, {collectHidden: true}))
await timed('reference forward (transformed)', () => runForward(expected, tokens, {collectHidden: true}))
await timed('reference forward (source)', () => runForward(r, tokens))
await timed('model forward (again: warm JIT, page cache)', () => runForward(m, tokens, {collectHidden: true}))
await m.close()
await r.close()
await closeSharedPool()
