/**
 * `npx tsx bench/simd-paths.ts --src <hf folder> [--before <checkout with dist/>] [--rounds N] [--work DIR] [--threads a,b] [--only TEXT]`
 *
 * Issue 15 items 2–3, before/after: each conversion path run with the `before` checkout's CLI and with
 * this one's (each at the given --threads values; without --before, this one's only), and `cp -r` of the same source, alternating, N rounds,
 * best wall of each kept with its CPU (user+sys) and peak RSS (/usr/bin/time). The outputs of every run
 * of a path are compared by sha256 (the bytes must not change). Prints a Markdown table.
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {mkdirSync, readdirSync, readFileSync, rmSync, statSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const arg = (name: string, fallback?: string) => {
  const i = process.argv.indexOf(name)
  const v = i >= 0 ? process.argv[i + 1] : fallback
  if (v === undefined) throw new Error(`${name} is required`)
  return v
}
const src = path.resolve(arg('--src'))
const before = process.argv.includes('--before') ? path.resolve(arg('--before')) : undefined
const rounds = Number(arg('--rounds', '2'))
const work = path.resolve(arg('--work', path.join(os.tmpdir(), 'simd-paths')))
const threads = arg('--threads', '1,2').split(',')
const only = process.argv.includes('--only') ? arg('--only') : undefined
const after = path.resolve(import.meta.dirname, '..')

const PATHS: Array<[string, string[]]> = [
  ['→ hf bf16', ['--to', 'hf', '--dtype', 'bf16']],
  ['→ gguf f16', ['--to', 'gguf', '--dtype', 'f16']],
  ['→ gguf q8_0', ['--to', 'gguf', '--dtype', 'q8_0']],
  ['→ mlx 4-bit', ['--to', 'mlx', '--quantize', '4']],
  ['→ gguf q4_k_m', ['--to', 'gguf', '--dtype', 'q4_k_m']],
  ['→ gguf q6_k', ['--to', 'gguf', '--dtype', 'q6_k']],
  ['→ gguf q4_0', ['--to', 'gguf', '--dtype', 'q4_0']],
]

interface Run {wall: number; cpu: number; rss: number; sha?: string}

function run(argv: string[]): Run {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', ...argv], {stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', maxBuffer: 1 << 26})
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`)
  const last = r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number)
  return {wall: last[0]!, cpu: last[1]! + last[2]!, rss: last[3]! / 1024}
}
function shaOf(dir: string): string {
  const h = createHash('sha256')
  for (const f of readdirSync(dir).sort()) {
    const p = path.join(dir, f)
    if (statSync(p).isFile()) h.update(f).update(readFileSync(p))
  }
  return h.digest('hex').slice(0, 12)
}

mkdirSync(work, {recursive: true})
const variants: Array<[string, string, string[]]> = [
  ...(before ? threads.map((t): [string, string, string[]] => [`before, --threads ${t}`, before, ['--threads', t]]) : []),
  ...threads.map((t): [string, string, string[]] => [`after, --threads ${t}`, after, ['--threads', t]]),
]
console.log(`source ${src}; ${rounds} rounds alternating; load average at start ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; ${os.cpus().length} × ${os.cpus()[0]?.model}; Node ${process.version}`)
const rows: string[] = []
for (const [label, flags] of PATHS) {
  if (only && !label.includes(only)) continue
  const best = new Map<string, Run>()
  const shas = new Set<string>()
  for (let r = 0; r < rounds; r++) {
    for (const [name, root, extra] of [...variants, ['cp -r', '', []] as [string, string, string[]]]) {
      const out = path.join(work, 'out')
      rmSync(out, {recursive: true, force: true})
      execFileSync('sync')
      const argv = root === '' ? ['cp', '-r', src, out] : [process.execPath, path.join(root, 'bin', 'run.js'), 'convert', src, ...flags, ...extra, '--out', out]
      const m = run(argv)
      if (root !== '') shas.add(shaOf(out))
      const prev = best.get(name)
      if (!prev || m.wall < prev.wall) best.set(name, m)
    }
  }
  const cp = best.get('cp -r')!
  const cell = (m: Run) => `${m.wall.toFixed(2)} s (${(m.wall / cp.wall).toFixed(2)} × cp), ${m.cpu.toFixed(2)} s CPU, ${m.rss.toFixed(0)} MB`
  rows.push(`| ${label} | ${variants.map(([name]) => cell(best.get(name)!)).join(' | ')} | ${cp.wall.toFixed(2)} s | ${shas.size === 1 ? 'yes' : `**NO** (${[...shas].join(', ')})`} |`)
  console.error(rows.at(-1))
}
console.log(`| path | ${variants.map(([n]) => n).join(' | ')} | cp -r | same bytes |`)
console.log(`|---|${variants.map(() => '---|').join('')}---|---|`)
for (const row of rows) console.log(row)
console.log(`load average at end ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`)
rmSync(path.join(work, 'out'), {recursive: true, force: true})
