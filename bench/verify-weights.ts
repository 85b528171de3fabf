/**
 * Time `verify`'s exact weight comparison alone (src/verify/exact.ts compareStored) on 1 and on N
 * threads, with the process CPU (all threads) next to the wall time.
 *   npx tsx bench/verify-weights.ts MODEL REF [threads...]
 */
import {performance} from 'node:perf_hooks'
import {openCheckpoint} from '../src/formats/registry.js'
import {closeSharedPool, setThreads} from '../src/pool/index.js'
import {compareStored} from '../src/verify/exact.js'

const [model, ref, ...threadArgs] = process.argv.slice(2)
if (!model || !ref) {
  console.error('usage: npx tsx bench/verify-weights.ts MODEL REF [threads...]')
  process.exit(2)
}
const threads = threadArgs.length > 0 ? threadArgs.map(Number) : [1, 2]
for (const n of threads) {
  setThreads(n)
  const m = await openCheckpoint(model, {})
  const r = await openCheckpoint(ref, {})
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const exact = await compareStored(r, m)
  const wall = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  console.log(JSON.stringify({threads: n, wall_s: +wall.toFixed(2), cpu_s: +((cpu.user + cpu.system) / 1e6).toFixed(2), tensors: exact.tensors.length, matching: exact.matching, mismatching: exact.mismatching.length}))
  await m.close()
  await r.close()
  await closeSharedPool()
}
