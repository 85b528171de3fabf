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
async function interrupt(out: string, signal: NodeJS.Signals): Promise<number | null> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), 'convert', source, '--to', 'hf', '--dtype', 'bf16', '--out', out], {cwd: repo, stdio: 'ignore'})
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code, sig) => resolve(code ?? (sig ? -1 : null))))
  const deadline = Date.now() + 60_000
  for (;;) {
    const entries = await fs.readdir(path.dirname(out))
    if (entries.some((e) => e.startsWith(`.openelm-tmp-${path.basename(out)}-`))) break
    if (Date.now() > deadline) throw new Error('conversion never started writing')
    await new Promise((r) => setTimeout(r, 20))
  }
  child.kill(signal)
  return exited
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
    const code = await interrupt(out, 'SIGINT')
    expect(code).toBe(130)
    const left = (await fs.readdir(work)).filter((e) => e.includes('out-int'))
    expect(left).toEqual([])
    expect(await hashTree(source)).toBe(before)
  })

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
