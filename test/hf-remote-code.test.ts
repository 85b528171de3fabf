/**
 * Runnable HF folders (issue 13 item 3): the remote code `auto_map` names is either beside the
 * weights (copied from the source, byte for byte) or named on the Hub in the qualified form
 * `apple/OpenELM-<size>--modeling_openelm.OpenELMForCausalLM`, the release of the same shape
 * (270M's otherwise: Apple ships the same two files with every size).
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {remoteCodeFor} from '../src/formats/common.js'
import {type Checkpoint} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {drain} from '../src/progress.js'

const FIXTURE = path.resolve(import.meta.dirname, '..', 'fixtures', 'tiny-hf')
const CONFIGURATION = '# configuration_openelm.py (test stand-in)\nclass OpenELMConfig: pass\n'
const MODELING = '# modeling_openelm.py (test stand-in)\nfrom .configuration_openelm import OpenELMConfig\n'

let work: string
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'remote-code-'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

const autoMap = async (dir: string) => (JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8')) as {auto_map: unknown}).auto_map

describe('auto_map and remote code', () => {
  it('qualifies auto_map with the Apple repo of the matching release', () => {
    const of = (preset: string) => remoteCodeFor({config: presetConfig(preset), extras: {tokenizerFiles: [], notes: [], info: {}, configSource: 'preset', dtype: 'F32'}} as unknown as Checkpoint, true).autoMap
    expect(of('270M')).toEqual({AutoConfig: 'apple/OpenELM-270M--configuration_openelm.OpenELMConfig', AutoModelForCausalLM: 'apple/OpenELM-270M--modeling_openelm.OpenELMForCausalLM'})
    expect(of('450M').AutoModelForCausalLM).toBe('apple/OpenELM-450M--modeling_openelm.OpenELMForCausalLM')
    expect(of('1.1B').AutoConfig).toBe('apple/OpenELM-1_1B--configuration_openelm.OpenELMConfig')
    expect(of('3B').AutoModelForCausalLM).toBe('apple/OpenELM-3B--modeling_openelm.OpenELMForCausalLM')
    expect(of('tiny').AutoModelForCausalLM).toBe('apple/OpenELM-270M--modeling_openelm.OpenELMForCausalLM')
  })

  it('hf, onnx and mlx folders of a source without remote code name Apple\'s repo, and hold no .py', async () => {
    for (const to of ['hf', 'onnx', 'mlx'] as const) {
      const out = path.join(work, `plain-${to}`)
      await drain(convert(FIXTURE, to, out, {}, {}))
      expect(await autoMap(out), to).toEqual({AutoConfig: 'apple/OpenELM-270M--configuration_openelm.OpenELMConfig', AutoModelForCausalLM: 'apple/OpenELM-270M--modeling_openelm.OpenELMForCausalLM'})
      expect((await fs.readdir(out)).filter((f) => f.endsWith('.py'))).toEqual([])
    }
  })

  it('copies both .py files from the source into the hf folder, byte for byte, and auto_map names them', async () => {
    const src = path.join(work, 'with-code')
    await fs.cp(FIXTURE, src, {recursive: true})
    await fs.writeFile(path.join(src, 'configuration_openelm.py'), CONFIGURATION)
    await fs.writeFile(path.join(src, 'modeling_openelm.py'), MODELING)
    await fs.writeFile(path.join(src, 'train.py'), 'print("not remote code")\n')
    const out = path.join(work, 'copied')
    const result = await drain(convert(src, 'hf', out, {}, {}))
    expect(await fs.readFile(path.join(out, 'configuration_openelm.py'), 'utf8')).toBe(CONFIGURATION)
    expect(await fs.readFile(path.join(out, 'modeling_openelm.py'), 'utf8')).toBe(MODELING)
    expect((await fs.readdir(out)).filter((f) => f.endsWith('.py')).sort()).toEqual(['configuration_openelm.py', 'modeling_openelm.py'])
    expect(result.target.files.map((f) => path.basename(f.path))).toEqual(expect.arrayContaining(['configuration_openelm.py', 'modeling_openelm.py']))
    expect(await autoMap(out)).toEqual({AutoConfig: 'configuration_openelm.OpenELMConfig', AutoModelForCausalLM: 'modeling_openelm.OpenELMForCausalLM'})
    // And on: hf → hf keeps them.
    const again = path.join(work, 'copied-again')
    await drain(convert(out, 'hf', again, {}, {}))
    expect(await fs.readFile(path.join(again, 'modeling_openelm.py'), 'utf8')).toBe(MODELING)
  })

  it('one file alone is not runnable code: not copied, auto_map qualified', async () => {
    const src = path.join(work, 'half-code')
    await fs.cp(FIXTURE, src, {recursive: true})
    await fs.writeFile(path.join(src, 'modeling_openelm.py'), MODELING)
    const out = path.join(work, 'half')
    await drain(convert(src, 'hf', out, {}, {}))
    expect((await fs.readdir(out)).filter((f) => f.endsWith('.py'))).toEqual([])
    expect(((await autoMap(out)) as {AutoModelForCausalLM: string}).AutoModelForCausalLM).toBe('apple/OpenELM-270M--modeling_openelm.OpenELMForCausalLM')
  })
})
