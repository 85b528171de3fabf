/**
 * Wording of what `convert` prints: counts agree in number with what was written.
 */
import {spawnSync} from 'node:child_process'
import {mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {loadConfigFile} from '../src/formats/corenet/config.js'

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

describe('config typos', () => {
  const good = JSON.parse(readFileSync(path.join(FIXTURE, 'config.json'), 'utf8')) as Record<string, unknown>

  it('names the file and the near miss for a misspelt required field', async () => {
    const {num_transformer_layers: layers, ...rest} = good
    const file = path.join(tmp, 'typo.json')
    writeFileSync(file, JSON.stringify({...rest, num_transformer_layer: layers}))
    const error = await loadConfigFile(file).then(() => undefined, (e: Error & {details?: Record<string, unknown>}) => e)
    expect(error?.message).toBe(`${file} lacks the number field num_transformer_layers (it has num_transformer_layer: did you mean num_transformer_layers?)`)
    expect(error?.details).toMatchObject({path: file, field: 'num_transformer_layers', nearMiss: 'num_transformer_layer'})
  })

  it('suggests nothing when no key is close, and still names the file', async () => {
    const {num_transformer_layers: _layers, ...rest} = good
    const file = path.join(tmp, 'missing.json')
    writeFileSync(file, JSON.stringify(rest))
    await expect(loadConfigFile(file)).rejects.toThrow(new RegExp(`^${file.replaceAll('.', '\\.')} lacks the number field num_transformer_layers$`))
  })

  it('reads the correct file unchanged', async () => {
    const file = path.join(tmp, 'good.json')
    writeFileSync(file, JSON.stringify(good))
    expect((await loadConfigFile(file)).num_transformer_layers).toBe(good.num_transformer_layers)
  })
})
