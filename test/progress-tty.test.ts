/**
 * What a person at a terminal sees during a long command, measured: `convert --to mlx --quantize 4
 * --verify` runs under a pseudo-terminal and the screen must change at least every 2 s from its
 * first output to its exit (byte bar, then a spinner per verify phase, each ending in one line).
 * Under --json, or when stdout is not a TTY, no progress byte is written at all.
 */
import {spawn} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {writeCheckpoint} from '../src/convert.js'
import {deriveConfig} from '../src/model/config.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {longestSilence, runUnderPty} from './helpers/pty.js'

const repo = path.resolve(import.meta.dirname, '..')
/** The longest the screen may stand still while the command works. */
const MAX_SILENCE_MS = 2000
/** Cursor moves, line erases, colours: anything a progress line draws with. */
const CONTROL = /[\r\x1b]/

let work: string
let mid: string
let tiny: string

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-progress-tty-'))
  // A mid shape (4 layers of 512, LLaMA-2's 32000 rows; 14 MiB at 4 bits, ~56 MiB f32): the
  // conversion and each verify phase take about a second or more on two cores.
  mid = path.join(work, 'mid')
  await drain(writeCheckpoint(synthCheckpoint(deriveConfig({num_transformer_layers: 4, model_dim: 512, head_dim: 64, vocab_size: 32000}), {seed: 1, dtype: 'F32'}), 'hf', mid, {}))
  tiny = path.join(work, 'tiny')
  await drain(writeCheckpoint(synthCheckpoint(presetConfig('tiny'), {seed: 1, dtype: 'F32'}), 'hf', tiny, {}))
}, 60_000)

afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

const openelm = (...args: string[]) => [process.execPath, '--import', 'tsx', path.join(repo, 'bin/dev.js'), ...args]

// The three commands run side by side (the file's time is its longest run, not their sum); the
// terminal run's gaps are measured under that load.
describe.concurrent('progress on a terminal', () => {
  it('convert --verify: the screen changes at least every 2 s, and each step ends in one line', async () => {
    const out = path.join(work, 'mid-mlx')
    const run = await runUnderPty(openelm('convert', mid, '--to', 'mlx', '--quantize', '4', '--verify', '--out', out), {cwd: repo, timeoutMs: 120_000})
    expect(run.code, run.text).toBe(0)
    const silence = longestSilence(run)
    expect(silence.ms, `silent for ${Math.round(silence.ms)} ms after ${JSON.stringify(silence.after)}`).toBeLessThanOrEqual(MAX_SILENCE_MS)
    // The write bar counts bytes, shows a rate and an ETA, and reaches 100%.
    expect(run.text).toMatch(/writing safetensors \[[█░]+\] \d+% [\d.]+ (B|KiB|MiB)\/14\.\d\d MiB [\d.]+ (KiB|MiB)\/s ETA \d+s/)
    expect(run.text).toMatch(/writing safetensors \[█{20}\] 100% 14\.\d\d MiB\/14\.\d\d MiB/)
    // Every step ends in one final line (what, how long), each exactly once.
    const finals = run.text.split(/\r\n|\r\x1b\[2K/).filter((line) => line.startsWith('✓ '))
    expect(finals.map((line) => line.replace(/ in [\d.]+s.*$/, '').replace(/ [\d.]+ MiB$/, ''))).toEqual([
      '✓ writing safetensors', '✓ verify: open model', '✓ verify: open reference', '✓ verify: tokens', '✓ verify: compare weights',
      '✓ verify: model forward', '✓ verify: reference forward (transformed)', '✓ verify: reference forward (source)',
    ])
    // Every phase that lasted a while was redrawn while it ran (the timer), not only at its ends.
    const long = finals.map((line) => /^✓ (verify: .+) in ([\d.]+)s$/.exec(line)).filter((m) => m && Number(m[2]) >= 0.6)
    for (const m of long) {
      const redraws = run.chunks.filter((c) => c.text.includes(`${m![1]}… `) && !c.text.includes(`${m![1]}… 0.0s`))
      expect(redraws.length, `${m![1]} took ${m![2]} s`).toBeGreaterThanOrEqual(1)
    }
    // The forward passes count their layers (4 + the output layer).
    if (long.some((m) => m![1] === 'verify: model forward')) expect(run.text).toMatch(/verify: model forward… [1-5]\/5 layers/)
    expect(run.text).toContain('PASS (exact)')
  }, 120_000)
})

/** Run without a terminal: stdout and stderr apart, as a script or CI sees them. */
function runPiped(argv: string[]): Promise<{code: number | null; stdout: string; stderr: string}> {
  const child = spawn(argv[0]!, argv.slice(1), {cwd: repo, stdio: ['ignore', 'pipe', 'pipe']})
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString('utf8') })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString('utf8') })
  return new Promise((resolve) => child.on('close', (code) => resolve({code, stdout, stderr})))
}

describe.concurrent('no progress output for scripts', () => {
  it('--json on a terminal: only the JSON answer, which parses', async () => {
    const run = await runUnderPty(openelm('convert', tiny, '--to', 'mlx', '--quantize', '4', '--group-size', '32', '--verify', '--json', '--out', path.join(work, 'tiny-json')), {cwd: repo, timeoutMs: 60_000})
    expect(run.code, run.text).toBe(0)
    // The pty turns \n into \r\n; any other \r, or any escape, would be progress.
    const text = run.text.replaceAll('\r\n', '\n')
    expect(text).not.toMatch(CONTROL)
    const answer = JSON.parse(text) as {target: {format: string}; verify: {pass: boolean}}
    expect(answer.target.format).toBe('mlx')
    expect(answer.verify.pass).toBe(true)
  }, 60_000)

  it('stdout not a TTY: the report on stdout, no progress bytes anywhere', async () => {
    const run = await runPiped(openelm('convert', tiny, '--to', 'mlx', '--quantize', '4', '--group-size', '32', '--verify', '--out', path.join(work, 'tiny-piped')))
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toContain('PASS (exact)')
    expect(run.stdout).not.toMatch(CONTROL)
    expect(run.stderr).not.toMatch(CONTROL)
    expect(run.stdout + run.stderr).not.toMatch(/writing safetensors|compare weights|[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✓]/)
  }, 60_000)
})
