/**
 * `npm run bench [-- --only <pattern>] [--repeat N] [--keep] [--work DIR]`
 *
 * Builds dist/, loads every `bench/cases/*.ts`, and for each case: setup (untimed), the command and
 * its `cp` baseline, each a child process under `/usr/bin/time -v` (wall time, peak RSS), with
 * `sync` between runs so one run's dirty pages do not slow the next. With `--repeat N` the command
 * and the cp alternate N times and the best of each is kept. Results are merged into
 * `bench/results.json` by case name and `bench/RESULTS.md` is rewritten as one table with the
 * machine it ran on.
 */
import {execFileSync, spawn} from 'node:child_process'
import {promises as fs, readFileSync, rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {pathToFileURL} from 'node:url'
import {type BenchCase, type BenchContext, type Measurement} from './types.js'

const ROOT = path.resolve(import.meta.dirname, '..')
const RESULTS_JSON = path.join(ROOT, 'bench', 'results.json')
const RESULTS_MD = path.join(ROOT, 'bench', 'RESULTS.md')
const TIME = '/usr/bin/time'

interface Options {
  only?: string
  repeat: number
  keep: boolean
  work: string
}

function parseArgs(argv: string[]): Options {
  const options: Options = {repeat: 1, keep: false, work: path.join(os.tmpdir(), 'openelm-bench')}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--only') options.only = argv[++i]
    else if (arg === '--repeat') options.repeat = Math.max(1, Number(argv[++i]))
    else if (arg === '--keep') options.keep = true
    else if (arg === '--work') options.work = path.resolve(argv[++i]!)
    else throw new Error(`unknown argument ${arg} (expected --only <pattern>, --repeat N, --keep, --work DIR)`)
  }
  return options
}

/** A case matches `--only` by substring or, failing that, as a regular expression. */
function matches(name: string, pattern: string | undefined): boolean {
  if (!pattern) return true
  if (name.includes(pattern)) return true
  try {
    return new RegExp(pattern).test(name)
  } catch {
    return false
  }
}

async function loadCases(): Promise<BenchCase[]> {
  const dir = path.join(ROOT, 'bench', 'cases')
  // foundation.ts first: it times the synth of the shared 1.1B source that later cases reuse.
  const rank = (f: string) => (f === 'foundation.ts' ? 0 : 1)
  const files = (await fs.readdir(dir)).filter((f) => f.endsWith('.ts')).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))
  const all: BenchCase[] = []
  for (const file of files) {
    const mod = (await import(pathToFileURL(path.join(dir, file)).href)) as {cases?: BenchCase[]}
    if (!Array.isArray(mod.cases)) throw new Error(`bench/cases/${file} does not export cases: BenchCase[]`)
    all.push(...mod.cases)
  }
  const names = new Set<string>()
  for (const c of all) {
    if (names.has(c.name)) throw new Error(`two bench cases are named ${c.name}`)
    names.add(c.name)
  }
  return all
}

function execInherit(argv: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit']})
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${argv.join(' ')} exited with ${code}`))))
  })
}

/** Run argv under `/usr/bin/time -v`; parse wall time and peak RSS from its report. */
function measure(argv: string[]): Promise<Measurement> {
  // Node commands also report CPU by thread (bench/thread-cpu.cjs); other commands write nothing there.
  const threadCpuFile = path.join(os.tmpdir(), `openelm-bench-thread-cpu-${process.pid}.json`)
  rmSync(threadCpuFile, {force: true})
  const env = {...process.env, OPENELM_BENCH_THREAD_CPU: threadCpuFile, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${path.join(ROOT, 'bench', 'thread-cpu.cjs')}`.trim()}
  return new Promise((resolve, reject) => {
    const child = spawn(TIME, ['-v', ...argv], {cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'], env})
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', () => {
      const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):(\d+(?:\.\d+)?)/.exec(stderr)
      const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr)
      const user = /User time \(seconds\): (\d+(?:\.\d+)?)/.exec(stderr)
      const system = /System time \(seconds\): (\d+(?:\.\d+)?)/.exec(stderr)
      const exit = /Exit status: (\d+)/.exec(stderr)
      if (!wall || !rss) return reject(new Error(`could not parse /usr/bin/time output for ${argv.join(' ')}:\n${stderr}`))
      const exitCode = exit ? Number(exit[1]) : 1
      if (exitCode !== 0) return reject(new Error(`${argv.join(' ')} exited with ${exitCode}:\n${stderr.split('\tCommand being timed')[0]}`))
      let threadCpu: {main: number; others: number} | undefined
      try {
        threadCpu = JSON.parse(readFileSync(threadCpuFile, 'utf8')) as {main: number; others: number}
      } catch {
        threadCpu = undefined
      }
      rmSync(threadCpuFile, {force: true})
      resolve({
        wallSeconds: Number(wall[1] ?? 0) * 3600 + Number(wall[2]) * 60 + Number(wall[3]),
        cpuSeconds: Number(user?.[1] ?? 0) + Number(system?.[1] ?? 0),
        maxRssKB: Number(rss[1]),
        exitCode,
        ...(threadCpu ? {mainCpuSeconds: threadCpu.main} : {}),
      })
    })
  })
}

async function sizeOf(p: string): Promise<number> {
  const stat = await fs.stat(p)
  if (!stat.isDirectory()) return stat.size
  let total = 0
  for (const entry of await fs.readdir(p)) total += await sizeOf(path.join(p, entry))
  return total
}

/** Best of N: on a shared machine the fastest run is the one least disturbed by other jobs. */
const best = (xs: number[]) => Math.min(...xs)

interface Row {
  name: string
  description: string
  date: string
  /** The commit whose dist/ ran (rows of earlier runs keep theirs; older rows have none). */
  commit?: string
  bytes: number
  seconds: number
  cpuSeconds: number
  /** The main thread's CPU seconds in the run with the least CPU (Node commands; bench/thread-cpu.cjs). */
  mainCpuSeconds?: number
  rssMB: number
  cpSeconds?: number
  cpCpuSeconds?: number
  cpRssMB?: number
  ratio?: number
  baselineName?: string
  tokens?: number
  targets?: {ratio?: number; rssMB?: number}
  pass: boolean
  load: string
  runs: number
}

function machine(work: string): Record<string, string> {
  const sh = (cmd: string) => {
    try {
      return execFileSync('sh', ['-c', cmd], {encoding: 'utf8'}).trim()
    } catch {
      return '?'
    }
  }
  const cpus = os.cpus()
  return {
    cores: `${cpus.length} × ${cpus[0]?.model.trim() ?? '?'}`,
    ram: `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB (${(os.freemem() / 1024 ** 3).toFixed(1)} GiB free at start)`,
    disk: sh(`df -hT ${JSON.stringify(work)} | awk 'NR==2 {print $1" "$2", "$3" total, "$5" free"}'`) + `, rotational=${sh(`cat /sys/block/$(basename $(df ${JSON.stringify(work)} | awk 'NR==2{print $1}'))/queue/rotational 2>/dev/null`)}`,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    cp: sh('cp --version | head -1'),
    torch: sh(`/usr/bin/python3 -c 'import sys, torch; print("Python", sys.version.split()[0], "torch", torch.__version__, "CPU (default", torch.get_num_threads(), "thread; the engine row sets OMP_NUM_THREADS to all cores)")' 2>/dev/null`),
    commit: sh(`git -C ${JSON.stringify(ROOT)} rev-parse --short HEAD`),
  }
}

const loadavg = () => os.loadavg().map((l) => l.toFixed(1)).join(' ')

const MARKER = '<!-- Everything below this line is kept as is by `npm run bench`. -->'

function renderMarkdown(rows: Row[], info: Record<string, string>, runNote: string, kept: string): string {
  const fmtS = (s?: number) => (s === undefined ? '–' : s < 10 ? `${s.toFixed(2)} s` : `${s.toFixed(1)} s`)
  const lines = [
    '# Benchmark results',
    '',
    'The table is written by `npm run bench` (`bench/run.ts`, cases in `bench/cases/*.ts`); do not edit it by hand.',
    'Each command runs as a child process (`node bin/run.js ...`, built `dist/`) under `/usr/bin/time -v`',
    '(wall time, user+sys CPU, peak RSS), right after its baseline\'s twin: `cp -r` of the same source files in',
    'the same run (× cp), or for the engine row PyTorch on CPU with the same weights file and tokens.',
    '`sync` runs between timed commands. Targets (DESIGN §7): a lossless conversion ≤ 1.25 × cp; peak RSS ≤ 300 MB.',
    'Quantizing/casting paths (MLX 4-bit, GGUF) carry only the memory target; their × cp is reported for scale.',
    '',
    `**Machine:** ${info.cores}; RAM ${info.ram}; disk ${info.disk}; ${info.os}; Node ${info.node}; ${info.torch}; ${info.cp}; commit ${info.commit}.`,
    '',
    runNote,
    '',
    '| case | run (UTC, commit) | what | source bytes | time | baseline | baseline time | × baseline | peak RSS | baseline RSS | CPU (user+sys) | throughput | load avg 1/5/15 before → after | target | result |',
    '|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|',
  ]
  for (const r of rows) {
    const target = [r.targets?.ratio ? `≤ ${r.targets.ratio} × cp` : '', r.targets?.rssMB ? `≤ ${r.targets.rssMB} MB` : ''].filter(Boolean).join(', ') || '–'
    const result = r.targets?.ratio === undefined && r.targets?.rssMB === undefined ? '–' : r.pass ? 'pass' : '**miss**'
    const throughput = r.tokens
      ? `${(r.tokens / r.seconds).toFixed(2)} tok/s (${r.baselineName ?? 'baseline'}: ${r.cpSeconds ? (r.tokens / r.cpSeconds).toFixed(2) : '–'} tok/s)`
      : `${(r.bytes / 1e6 / r.seconds).toFixed(0)} MB/s`
    lines.push(`| \`${r.name}\` | ${r.date}${r.commit ? ` (${r.commit})` : ''} | ${r.description} | ${(r.bytes / 1e9).toFixed(2)} GB | ${fmtS(r.seconds)} | ${r.baselineName ?? 'cp'} | ${fmtS(r.cpSeconds)} | ${r.ratio === undefined ? '–' : `**${r.ratio.toFixed(2)}**`} | ${r.rssMB.toFixed(0)} MB | ${r.cpRssMB === undefined ? '–' : `${r.cpRssMB.toFixed(0)} MB`} | ${fmtS(r.cpuSeconds)}${r.mainCpuSeconds === undefined ? '' : ` (main thread ${fmtS(r.mainCpuSeconds)})`} | ${throughput} | ${r.load} | ${target} | ${result} |`)
  }
  return `${lines.join('\n')}\n\n${MARKER}\n${kept}`
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2))
  const cases = (await loadCases()).filter((c) => matches(c.name, options.only))
  if (cases.length === 0) throw new Error(`no bench case matches ${options.only}`)
  console.error(`building dist/ ...`)
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], {cwd: ROOT, stdio: 'inherit'})
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'manifest.mjs')], {cwd: ROOT, stdio: 'inherit'})
  await fs.mkdir(options.work, {recursive: true})
  const ctx: BenchContext = {
    root: ROOT,
    work: options.work,
    cli: [process.execPath, path.join(ROOT, 'bin', 'run.js')],
    exec: execInherit,
    sizeOf,
    remove: (p) => fs.rm(p, {recursive: true, force: true}),
    exists: async (p) => fs.stat(p).then(() => true, () => false),
  }
  const startedAt = new Date()
  const info = machine(options.work)
  const loadStart = loadavg()
  const previous: Row[] = await fs.readFile(RESULTS_JSON, 'utf8').then((t) => JSON.parse(t) as Row[], () => [])
  const fresh: Row[] = []
  try {
    for (const c of cases) {
      console.error(`\n== ${c.name}: ${c.description}`)
      await c.setup?.(ctx)
      const clear = async () => {
        for (const p of c.outputs(ctx)) await ctx.remove(p)
        execFileSync('sync')
      }
      const load = loadavg()
      const runs: Measurement[] = []
      const baselines: Measurement[] = []
      for (let i = 0; i < options.repeat; i++) {
        await clear()
        await c.beforeEach?.(ctx)
        const run = await measure(c.command(ctx))
        runs.push(run)
        console.error(`   command  ${run.wallSeconds.toFixed(2)} s (cpu ${run.cpuSeconds.toFixed(1)} s${run.mainCpuSeconds === undefined ? '' : `, main thread ${run.mainCpuSeconds.toFixed(1)} s`}), peak RSS ${(run.maxRssKB / 1024).toFixed(0)} MB`)
        execFileSync('sync')
        if (c.baseline) {
          const base = await measure(c.baseline(ctx))
          baselines.push(base)
          console.error(`   ${(c.baselineName ?? 'cp').padEnd(8)} ${base.wallSeconds.toFixed(2)} s (cpu ${base.cpuSeconds.toFixed(1)} s), peak RSS ${(base.maxRssKB / 1024).toFixed(0)} MB`)
        }
      }
      const bytes = await c.bytes(ctx)
      await clear()
      const seconds = best(runs.map((r) => r.wallSeconds))
      const cpuSeconds = best(runs.map((r) => r.cpuSeconds))
      const mainCpuSeconds = runs.find((r) => r.cpuSeconds === cpuSeconds)?.mainCpuSeconds
      const rssMB = Math.max(...runs.map((r) => r.maxRssKB)) / 1024
      const cpSeconds = baselines.length ? best(baselines.map((r) => r.wallSeconds)) : undefined
      const cpCpuSeconds = baselines.length ? best(baselines.map((r) => r.cpuSeconds)) : undefined
      const ratio = cpSeconds ? seconds / cpSeconds : undefined
      const pass = (c.targets?.ratio === undefined || (ratio !== undefined && ratio <= c.targets.ratio)) && (c.targets?.rssMB === undefined || rssMB <= c.targets.rssMB)
      const row: Row = {
        baselineName: c.baselineName, tokens: c.tokens,
        name: c.name, description: c.description, date: new Date().toISOString().slice(0, 16).replace('T', ' '), commit: info.commit, bytes, seconds, cpuSeconds, mainCpuSeconds, rssMB,
        cpSeconds, cpCpuSeconds, cpRssMB: baselines.length ? Math.max(...baselines.map((r) => r.maxRssKB)) / 1024 : undefined, ratio,
        targets: c.targets, pass, load: `${load} → ${loadavg()}`, runs: options.repeat,
      }
      console.error(`   ${ratio === undefined ? '' : `${ratio.toFixed(2)} × ${c.baselineName ?? 'cp'}, `}${rssMB.toFixed(0)} MB peak: ${pass ? 'pass' : 'MISS'}`)
      fresh.push(row)
    }
  } finally {
    if (!options.keep) for (const c of cases) for (const p of c.cleanup?.(ctx) ?? []) await ctx.remove(p)
    // The shared sources (bench/sources.ts) live in the work folder too: remove it whole.
    if (!options.keep) await ctx.remove(options.work)
  }
  // Merge by name: rerunning some cases keeps the other rows; order follows the case files.
  const order = (await loadCases()).map((c) => c.name)
  // Rows of cases that no longer exist are dropped.
  const byName = new Map(previous.filter((r) => order.includes(r.name)).map((r) => [r.name, r]))
  for (const r of fresh) byName.set(r.name, r)
  const rows = [...byName.values()].sort((a, b) => (order.indexOf(a.name) + 1 || 1e9) - (order.indexOf(b.name) + 1 || 1e9))
  await fs.writeFile(RESULTS_JSON, `${JSON.stringify(rows, null, 2)}\n`)
  const started = startedAt.toISOString().slice(0, 16).replace('T', ' ')
  const minutes = ((Date.now() - startedAt.getTime()) / 60000).toFixed(0)
  const note = `**Run:** ${started} UTC, ${minutes} min in all (setup included), ${fresh.length} of ${order.length} case(s) run this time, ${options.repeat} run(s) each, command and baseline alternating (best wall and CPU time, max RSS). **Load:** load average ${loadStart} at the start, ${loadavg()} at the end (1/5/15 min; per row below). This is a shared ${os.cpus().length}-core machine: other engineers' jobs ran at the same time, so wall times are noisy (CPU seconds much less so); each ratio compares two runs made back to back.`
  const existing = await fs.readFile(RESULTS_MD, 'utf8').catch(() => '')
  const at = existing.indexOf(MARKER)
  const kept = at >= 0 ? existing.slice(at + MARKER.length + 1) : ''
  await fs.writeFile(RESULTS_MD, renderMarkdown(rows, info, note, kept))
  console.error(`\nwrote ${path.relative(ROOT, RESULTS_MD)}`)
  if (fresh.some((r) => !r.pass)) process.exitCode = 1
}

await main()
