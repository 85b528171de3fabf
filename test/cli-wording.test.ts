/**
 * Wording of what `convert` prints: counts agree in number with what was written.
 */
import {spawnSync} from 'node:child_process'
import {mkdtempSync, readdirSync, rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'

const ROOT = path.resolve(import.meta.dirname, '..')
const DEV = path.join(ROOT, 'bin', 'dev.js')
const FIXTURE = path.join(ROOT, 'fixtures', 'tiny-hf')
const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-wording-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))

describe('convert summary wording', () => {
  it('says "1 file" for a single-file output, not "1 files"', () => {
    const out = path.join(tmp, 'one.gguf')
    const run = spawnSync(process.execPath, [DEV, 'convert', FIXTURE, '--to', 'gguf', '--out', out], {cwd: tmp, encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}})
    expect(run.status, run.stderr).toBe(0)
    expect(readdirSync(tmp)).toContain('one.gguf')
    expect(run.stdout).toMatch(/^ {2}1 file, /m)
    expect(run.stdout).not.toMatch(/\b1 files\b/)
  }, 60_000)
})
