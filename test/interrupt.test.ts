/**
 * Interrupting a conversion leaves no output folder, no half-written file, and the source as it
 * was: SIGINT removes the temp sibling at once; after SIGKILL the next run sweeps it up.
 */
import {spawn} from 'node:child_process'
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

const repo = path.resolve(import.meta.dirname, '..')
let work: string
let source: string

async function hashTree(dir: string): Promise<string> {
  const h = createHash('sha256')
  for (const name of (await fs.readdir(dir)).sort()) {
    h.update(name)
    h.update(await fs.readFile(path.join(dir, name)))
  }
  return h.digest('hex')
}

/** Start `openelm convert`, wait until its temp output exists, send `signal`, wait for the exit. */
async function interrupt(out: string, signal: NodeJS.Signals): Promise<{code: number | null; stderr: string}> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), 'convert', source, '--to', 'hf', '--dtype', 'bf16', '--out', out], {cwd: repo, stdio: ['ignore', 'ignore', 'pipe']})
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<number | null>((resolve) => child.on('close', (code, sig) => resolve(code ?? (sig ? -1 : null))))
  const deadline = Date.now() + 60_000
  for (;;) {
    const entries = await fs.readdir(path.dirname(out))
    if (entries.some((e) => e.startsWith(`.openelm-tmp-${path.basename(out)}-`))) break
    if (Date.now() > deadline) throw new Error('conversion never started writing')
    await new Promise((r) => setTimeout(r, 20))
  }
  child.kill(signal)
  return {code: await exited, stderr}
}

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-interrupt-'))
  source = path.join(work, 'source')
  // Big enough (≈540 MB f32 → bf16) that the conversion is still running when the signal lands.
  const synth = spawn(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), 'synth', '--preset', '270M', '--dtype', 'f32', '--out', source], {cwd: repo, stdio: 'ignore'})
  await new Promise((resolve) => synth.on('exit', resolve))
}, 180_000)

afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('interrupting a conversion', () => {
  it('SIGINT removes the partial output and leaves the source unchanged', async () => {
    const before = await hashTree(source)
    const out = path.join(work, 'out-int')
    const {code, stderr} = await interrupt(out, 'SIGINT')
    expect(code).toBe(130)
    expect(stderr.trim()).toBe('interrupted: partial output removed')
    const left = (await fs.readdir(work)).filter((e) => e.includes('out-int'))
    expect(left).toEqual([])
    expect(await hashTree(source)).toBe(before)
  })

  it('SIGINT in the --verify phase leaves the complete output and says it is not verified (no "partial output removed")', async () => {
    const out = path.join(work, 'out-verify')
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), 'convert', source, '--to', 'hf', '--dtype', 'bf16', '--verify', '--out', out], {cwd: repo, stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
    const exited = new Promise<number | null>((resolve) => child.on('close', (code, sig) => resolve(code ?? (sig ? -1 : null))))
    // The write summary ("N files, SIZE") is the last line before verification starts.
    const started = new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString()
      if (/^ {2}\d+ files?, /m.test(stdout)) resolve()
    }))
    await Promise.race([started, exited])
    expect(stdout).toMatch(/^ {2}\d+ files?, /m)
    child.kill('SIGINT')
    expect(await exited).toBe(130)
    expect(stderr.trim()).toBe(`interrupted: output complete at ${out}, verification interrupted — not verified`)
    expect(stderr).not.toContain('partial output removed')
    expect(stdout).not.toMatch(/PASS|FAIL/)
    // The output is complete (it loads: same tensor count as a finished conversion), with no report and no temps.
    const files = await fs.readdir(out)
    expect(files).toContain('model.safetensors')
    expect(files).toContain('config.json')
    expect(files).not.toContain('openelm-verify.json')
    expect((await fs.readdir(work)).filter((e) => e.startsWith('.openelm-tmp-'))).toEqual([])
    const header = await fs.readFile(path.join(out, 'model.safetensors'))
    const n = Number(header.readBigUInt64LE(0))
    const tensors = Object.keys(JSON.parse(header.subarray(8, 8 + n).toString('utf8'))).filter((k) => k !== '__metadata__')
    expect(tensors.length).toBeGreaterThan(100)
  }, 300_000)

  it('SIGKILL leaves no output folder, and the next run sweeps the dead temp sibling', async () => {
    const before = await hashTree(source)
    const out = path.join(work, 'out-kill')
    await interrupt(out, 'SIGKILL')
    const entries = await fs.readdir(work)
    expect(entries).not.toContain('out-kill')
    expect(entries.filter((e) => e.startsWith('.openelm-tmp-out-kill-'))).toHaveLength(1)
    expect(await hashTree(source)).toBe(before)
    // A later conversion to the same target completes and removes the stale temp sibling.
    const again = spawn(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), 'convert', path.join(repo, 'fixtures/tiny-hf'), '--to', 'hf', '--out', out], {cwd: repo, stdio: 'ignore'})
    expect(await new Promise((resolve) => again.on('exit', resolve))).toBe(0)
    const after = await fs.readdir(work)
    expect(after.filter((e) => e.startsWith('.openelm-tmp-'))).toEqual([])
    expect(after).toContain('out-kill')
  })
})
