/**
 * Our own fuzzer: deterministic, format-aware mutations of small seeds of every format, each
 * converted to HF and classified (see scripts/fuzz/run.ts).
 *
 *   npm run fuzz -- --cases 5000 --seed 1 [--jobs 2] [--json out.json]
 *   npm run fuzz -- --case 1234 --seed 1        replay one case in this process, with its error
 */
import {promises as fs} from 'node:fs'
import {parseArgs} from 'node:util'
import {classCounts, type CaseResult, FINDINGS, prepare, runCase, runFuzz, worker} from './fuzz/run.js'

const {values} = parseArgs({
  options: {
    cases: {type: 'string', default: '300'},
    seed: {type: 'string', default: '1'},
    first: {type: 'string', default: '0'},
    to: {type: 'string'},
    case: {type: 'string'},
    jobs: {type: 'string', default: '1'},
    json: {type: 'string'},
    worker: {type: 'boolean', default: false},
    quiet: {type: 'boolean', default: false},
  },
})
const int = (name: string, text: string | undefined): number => {
  const n = Number(text)
  if (!Number.isSafeInteger(n) || n < 0) {
    process.stderr.write(`Error: --${name} must be a non-negative integer (got ${JSON.stringify(text)})\n`)
    process.exit(2)
  }
  return n
}
const seed = int('seed', values.seed)

if (values.worker) {
  await worker(seed, int('first', values.first), int('to', values.to))
} else if (values.case !== undefined) {
  const prepared = await prepare()
  try {
    const r = await runCase(prepared, seed, int('case', values.case))
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`)
    process.exitCode = FINDINGS.includes(r.class) ? 1 : 0
  } finally {
    await fs.rm(prepared.work, {recursive: true, force: true})
  }
} else {
  const cases = int('cases', values.cases)
  const start = performance.now()
  let done = 0
  const results = await runFuzz({
    cases, seed, first: int('first', values.first), jobs: int('jobs', values.jobs),
    onResult: (r: CaseResult) => {
      done++
      if (FINDINGS.includes(r.class)) process.stderr.write(`\nFINDING case ${r.case} [${r.class}] ${r.seed}: ${r.mutation} → ${r.detail}\n`)
      else if (!values.quiet && done % 100 === 0) process.stderr.write(`${done}/${cases} cases, ${((performance.now() - start) / 1000).toFixed(0)} s\n`)
    },
  })
  const counts = classCounts(results)
  const seconds = (performance.now() - start) / 1000
  const peak = Math.max(...results.map((r) => r.maxRss ?? 0))
  const summary = {seed, cases: results.length, seconds: Number(seconds.toFixed(1)), peakRssMB: Math.round(peak / 2 ** 20), counts}
  process.stdout.write(`${JSON.stringify(summary)}\n`)
  if (values.json) await fs.writeFile(values.json, `${JSON.stringify({...summary, results}, null, 1)}\n`)
  process.exitCode = FINDINGS.some((c) => counts[c] > 0) ? 1 : 0
}
