/**
 * CoreNet `.pt` → HF bf16 benchmark, against `cp` of the same file and against the Python way
 * (Debian's torch: torch.load, cast to bf16, torch.save), all in one run on one machine.
 *
 *   npx tsc -p tsconfig.json && npx tsx bench/corenet.ts [--preset 1.1B] [--dtype f32] [--keep]
 *
 * Each command runs under `/usr/bin/time -v` (wall time, peak RSS). Files go under
 * /tmp/bench-corenet/ and are deleted afterwards unless --keep. Prints a markdown table.
 */
import {spawnSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const repo = path.resolve(import.meta.dirname, '..')
const args = process.argv.slice(2)
const option = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1]! : fallback
}
const preset = option('preset', '1.1B')
const dtype = option('dtype', 'f32')
const keep = args.includes('--keep')
const work = option('dir', path.join(os.tmpdir(), 'bench-corenet'))
const run = path.join(repo, 'bin', 'run.js')

interface Measured {
  label: string
  seconds: number
  maxRssMb: number
}

function timed(label: string, command: string[]): Measured {
  const r = spawnSync('/usr/bin/time', ['-v', ...command], {encoding: 'utf8', env: {...process.env, NODE_ENV: 'production'}, maxBuffer: 64 * 1024 * 1024})
  if (r.status !== 0) throw new Error(`${label} failed (${r.status}): ${r.stderr.slice(-2000)}`)
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)/.exec(r.stderr)!
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)!
  const seconds = Number(wall[1] ?? 0) * 3600 + Number(wall[2]) * 60 + Number(wall[3])
  return {label, seconds, maxRssMb: Number(rss[1]) / 1024}
}

const PYTHON_WAY = `
import sys, torch
sd = torch.load(sys.argv[1], map_location='cpu')
sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}
torch.save(sd, sys.argv[2])
`

async function main(): Promise<void> {
  await fs.rm(work, {recursive: true, force: true})
  await fs.mkdir(work, {recursive: true})
  try {
    const src = path.join(work, 'src')
    const made = timed('synth', ['node', run, 'synth', '--preset', preset, '--to', 'corenet', '--dtype', dtype, '--out', src])
    const pt = path.join(src, 'checkpoint_last.pt')
    const size = (await fs.stat(pt)).size
    // Warm the page cache the same way for every contender.
    spawnSync('cat', [pt], {stdio: ['ignore', 'ignore', 'ignore']})
    const cp = timed('cp', ['cp', pt, path.join(work, 'copy.pt')])
    const ours = timed('openelm convert --to hf --dtype bf16', ['node', run, 'convert', pt, '--to', 'hf', '--dtype', 'bf16', '--out', path.join(work, 'hf')])
    const same = timed('openelm convert --to hf (f32, no cast)', ['node', run, 'convert', pt, '--to', 'hf', '--out', path.join(work, 'hf32')])
    await fs.rm(path.join(work, 'hf32'), {recursive: true, force: true})
    const py = timed('python: torch.load → bf16 → torch.save', ['/usr/bin/python3', '-c', PYTHON_WAY, pt, path.join(work, 'python.pt')])
    const rows = [cp, ours, same, py]
    const gib = (size / 2 ** 30).toFixed(2)
    console.log(`\n${preset} ${dtype} .pt, ${gib} GiB (synth took ${made.seconds.toFixed(1)} s), ${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}, node ${process.version}\n`)
    console.log('| command | wall s | × cp | peak RSS MB |')
    console.log('|---|---:|---:|---:|')
    for (const r of rows) console.log(`| ${r.label} | ${r.seconds.toFixed(2)} | ${(r.seconds / cp.seconds).toFixed(2)} | ${r.maxRssMb.toFixed(0)} |`)
  } finally {
    if (!keep) await fs.rm(work, {recursive: true, force: true})
  }
}

await main()
