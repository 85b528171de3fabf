/**
 * The model card of each format, rendered from real conversions of the tiny fixture with a real
 * verify report: one H1, the verify table (no flattened JSON paths), a runnable usage line, the
 * convert-time text before the license. And the origin rule both ways: Apple's repo only when the
 * shape is a release *and* the source names it; a private checkpoint is named by its file.
 */
import {mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {type Checkpoint, type FormatName} from '../src/formats/types.js'
import {mlxModelCard} from '../src/formats/mlx/index.js'
import {buildModelCard, convertSection, renderModelCard} from '../src/hub/card.js'
import {repoOfCachePath} from '../src/hub/cache.js'
import {cardBaseModel, checkpointOrigin, originClaims} from '../src/hub/origin.js'
import {type InspectReport} from '../src/inspect.js'
import {layerDims, parameterCount} from '../src/model/config.js'
import {appleRelease} from '../src/model/origin.js'
import {presetConfig} from '../src/model/presets.js'
import {drain} from '../src/progress.js'
import {verify} from '../src/verify/index.js'

const FIXTURE = path.resolve('fixtures/tiny-hf')
let root: string
/** Each format's output, moved into a folder of its own (a file format: the file inside it). */
const folders = new Map<FormatName, string>()
let report: unknown

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'openelm-model-card-'))
  const targets: [FormatName, string][] = [['hf', 'hf'], ['mlx', 'mlx'], ['onnx', 'onnx'], ['gguf', 'tiny-f32.gguf'], ['corenet', 'tiny.pt']]
  for (const [format, name] of targets) {
    const dir = path.join(root, format)
    if (format === 'gguf' || format === 'corenet') {
      mkdirSync(dir)
      await drain(convert(FIXTURE, format, path.join(dir, name), {}, {}))
    } else {
      await drain(convert(FIXTURE, format, dir, {}, {}))
    }
    folders.set(format, dir)
  }
  // One real report of the hf output against its source, as `convert --verify` leaves it.
  report = JSON.parse(JSON.stringify(await verify(folders.get('hf')!, {against: FIXTURE})))
  for (const dir of folders.values()) writeFileSync(path.join(dir, 'openelm-verify.json'), JSON.stringify(report))
}, 60_000)
afterAll(() => rmSync(root, {recursive: true, force: true}))

/** The lines outside fenced code blocks (a `#` comment in a shell snippet is not a heading). */
function prose(text: string): string[] {
  let fence = false
  return text.split('\n').filter((line) => {
    if (/^\s*```/.test(line)) fence = !fence
    return !fence && !/^\s*```/.test(line)
  })
}

function frontMatterKeys(text: string): Record<string, string> {
  const block = /^---\n([\s\S]*?)\n---\n/.exec(text)![1]!
  return Object.fromEntries(block.split('\n').filter((l) => /^[a-z_]+:/.test(l)).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]))
}

const USAGE: Record<FormatName, RegExp> = {
  hf: /^model = AutoModelForCausalLM\.from_pretrained\("me\/tiny", trust_remote_code=True\)$/m,
  mlx: /^mlx_lm\.generate --model me\/tiny --prompt "Once upon a time"$/m,
  onnx: /^const generator = await pipeline\('text-generation', 'me\/tiny'\)$/m,
  gguf: /^llama-cli --hf-repo me\/tiny --hf-file tiny-f32\.gguf -p "Once upon a time" -n 64$/m,
  corenet: /^openelm generate tiny\.pt --prompt "Once upon a time"$/m,
}
const LIBRARY: Record<FormatName, string | undefined> = {hf: 'transformers', mlx: 'mlx', onnx: 'onnx', gguf: undefined, corenet: undefined}

describe('model card of each format', () => {
  for (const format of ['hf', 'mlx', 'onnx', 'gguf', 'corenet'] as const) {
    it(`${format}: front matter, one H1, the verify table, a usage line, the license last`, async () => {
      const dir = folders.get(format)!
      const existing = format === 'mlx' ? readFileSync(path.join(dir, 'README.md'), 'utf8') : undefined
      const {text, metadata} = await buildModelCard(dir, {repo: 'me/tiny', ...(existing ? {convertText: existing} : {})})
      expect(metadata.library_name).toBe(LIBRARY[format])
      expect(metadata.pipeline_tag).toBe('text-generation')
      expect(metadata.license).toBe('other')
      expect(metadata.tags).toContain('openelm')
      // tiny is no release and its source names none: no base_model, no Apple repo claimed anywhere.
      expect(metadata.base_model).toBeUndefined()
      expect(text).not.toMatch(/apple\/OpenELM-\d/)
      expect(prose(text).filter((l) => /^# /.test(l))).toEqual(['# tiny'])
      // The verify report proved it a conversion of fixtures/tiny-hf: named by its folder name.
      expect(text).toContain('\n\nConverted from `tiny-hf` to ')
      expect(text).toMatch(USAGE[format])
      const section = text.slice(text.indexOf('## Verification'), text.indexOf('## License'))
      expect(section).toContain('**Result: PASS (exact)**')
      expect(section).toMatch(/^\| check \| value \| threshold \| result \|$/m)
      expect(section).toMatch(/^\| logits vs REF transformed \| max .* \| ok \|$/m)
      expect(section).not.toMatch(/\w\[\d+\]|\w\.\w+\.\w|tokens\[/)
      const headings = prose(text).filter((l) => /^## /.test(l))
      expect(headings.at(-1)).toBe('## License')
      expect(text.trimEnd().split('\n').slice(-1)[0]).toMatch(/Apple sample code license/)
      if (format === 'mlx') {
        // The card the MLX writer left: a section before the license, its own H1 and front matter gone.
        expect(headings).toEqual(['## Model', '## Usage', '## Verification', '## Conversion', '## License'])
        const conversion = text.slice(text.indexOf('## Conversion'), text.indexOf('## License'))
        expect(conversion).toContain('Converted from `tiny-hf` to the mlx-lm layout')
        expect(conversion).not.toContain('---\nlibrary_name')
        expect(conversion).not.toContain('<!-- generated by openelm')
      } else {
        expect(headings).toEqual(['## Model', '## Usage', '## Verification', '## License'])
      }
    })
  }
})

function fakeCheckpoint(p: string, preset: string): Checkpoint {
  return {path: p, format: 'hf', config: presetConfig(preset), tensors: []} as unknown as Checkpoint
}

function fakeReport(preset: string): InspectReport {
  const config = presetConfig(preset)
  return {
    path: '/x', format: 'hf', preset, configSource: 'file', config, layers: layerDims(config), parameters: parameterCount(config),
    dtypes: {F32: 1}, dtype: 'F32', tensorCount: 1, tensorBytes: 1, tokenizerFiles: [], notes: [], info: {},
  }
}

describe('converted from: Apple only when the shape and the source agree', () => {
  it('names Apple\'s repo for a release shape whose source names it, in Apple\'s spelling', () => {
    const c270 = presetConfig('270M')
    expect(appleRelease(c270, ['apple/OpenELM-270M'])).toBe('apple/OpenELM-270M')
    expect(appleRelease(c270, ['https://huggingface.co/Apple/openelm-270m-instruct/'])).toBe('apple/OpenELM-270M-Instruct')
    expect(appleRelease(presetConfig('1.1B'), [undefined, 'apple/OpenELM-1_1B'])).toBe('apple/OpenELM-1_1B')
    // A padded vocabulary is the same release.
    expect(appleRelease(presetConfig('270M', {vocab_size: 32128}), ['apple/OpenELM-270M'])).toBe('apple/OpenELM-270M')
    // The other way: a shape alone, another release's name, a non-release shape, someone else's repo.
    expect(appleRelease(c270, [])).toBeUndefined()
    expect(appleRelease(c270, ['apple/OpenELM-450M'])).toBeUndefined()
    expect(appleRelease(presetConfig('tiny'), ['apple/OpenELM-270M'])).toBeUndefined()
    expect(appleRelease(c270, ['me/OpenELM-270M', 'apple/OpenELM-270M-extra'])).toBeUndefined()
  })

  it('reads the claims a path makes: its Hub cache repo, config.json _name_or_path, the card base_model', async () => {
    expect(repoOfCachePath('/c/hub/models--apple--OpenELM-270M/snapshots/0123abcd')).toBe('apple/OpenELM-270M')
    expect(repoOfCachePath('/c/hub/models--me--a-b/snapshots/0123/model.gguf')).toBe('me/a-b')
    expect(repoOfCachePath('/home/me/models--apple--OpenELM-270M/model.pt')).toBeUndefined()
    expect(cardBaseModel('---\nlibrary_name: mlx\nbase_model: apple/OpenELM-3B\n---\n# x')).toBe('apple/OpenELM-3B')
    expect(cardBaseModel('---\nbase_model:\n- "apple/OpenELM-450M"\ntags:\n- x\n---\n')).toBe('apple/OpenELM-450M')
    expect(cardBaseModel('# no front matter\nbase_model: apple/OpenELM-3B')).toBeUndefined()

    const snapshot = path.join(root, 'hub', 'models--apple--OpenELM-270M', 'snapshots', 'a'.repeat(40))
    mkdirSync(snapshot, {recursive: true})
    expect(await checkpointOrigin(fakeCheckpoint(snapshot, '270M'))).toEqual({appleRepo: 'apple/OpenELM-270M', source: 'apple/OpenELM-270M'})
    // The same repo id names nothing when the weights are another shape.
    expect(await checkpointOrigin(fakeCheckpoint(snapshot, 'tiny'))).toEqual({source: 'apple/OpenELM-270M'})

    const named = path.join(root, 'named-hf')
    mkdirSync(named)
    writeFileSync(path.join(named, 'config.json'), JSON.stringify({_name_or_path: 'apple/OpenELM-270M-Instruct'}))
    expect(await originClaims(named)).toEqual(['apple/OpenELM-270M-Instruct'])
    expect(await checkpointOrigin(fakeCheckpoint(named, '270M'))).toEqual({appleRepo: 'apple/OpenELM-270M-Instruct', source: 'named-hf'})

    // A private CoreNet checkpoint of the 270M shape: its file name, never Apple's repo, even beside an Apple config.
    const privateDir = path.join(root, 'private')
    mkdirSync(privateDir)
    writeFileSync(path.join(privateDir, 'config.json'), JSON.stringify({_name_or_path: 'apple/OpenELM-270M'}))
    writeFileSync(path.join(privateDir, 'my-run.pt'), 'x')
    expect(await checkpointOrigin(fakeCheckpoint(path.join(privateDir, 'my-run.pt'), '270M'))).toEqual({source: 'my-run.pt'})
  })

  it('the MLX writer\'s card: base_model and "from Apple" only when proven, else the file name', () => {
    const c = presetConfig('270M')
    const privateCard = mlxModelCard(c, 'F16', undefined, undefined, {source: 'my-run.pt'})
    expect(cardBaseModel(privateCard)).toBeUndefined()
    expect(privateCard).not.toContain('apple/OpenELM')
    expect(privateCard).toContain('Converted from `my-run.pt` to the mlx-lm layout')
    expect(prose(privateCard).filter((l) => /^# /.test(l))).toEqual(['# OpenELM-270M (MLX, float16)'])
    const apple = mlxModelCard(c, 'F16', undefined, undefined, {appleRepo: 'apple/OpenELM-270M', source: 'apple/OpenELM-270M'}, ['kept 1 matrix in F16'])
    expect(cardBaseModel(apple)).toBe('apple/OpenELM-270M')
    expect(apple).toContain('Converted from [apple/OpenELM-270M](https://huggingface.co/apple/OpenELM-270M)')
    expect(apple).toContain('- kept 1 matrix in F16')
  })

  it('the pushed card: base_model from --base-model or a proven claim, never from the shape alone', () => {
    const shapeOnly = renderModelCard(fakeReport('270M'), undefined, {repo: 'me/x'})
    expect(shapeOnly.metadata.base_model).toBeUndefined()
    expect(frontMatterKeys(shapeOnly.text).base_model).toBeUndefined()
    expect(shapeOnly.text).not.toContain('apple/OpenELM-270M')
    const claimed = renderModelCard(fakeReport('270M'), undefined, {repo: 'me/x', claims: ['apple/OpenELM-270M']})
    expect(frontMatterKeys(claimed.text).base_model).toBe('apple/OpenELM-270M')
    expect(claimed.text).toContain('Converted from [apple/OpenELM-270M](https://huggingface.co/apple/OpenELM-270M) to Hugging Face transformers (safetensors)')
    expect(renderModelCard(fakeReport('tiny'), undefined, {repo: 'me/x', claims: ['apple/OpenELM-270M']}).metadata.base_model).toBeUndefined()
    expect(renderModelCard(fakeReport('270M'), undefined, {repo: 'me/x', claims: ['apple/OpenELM-3B']}).metadata.base_model).toBeUndefined()
    // Unproven: the source's own name, never Apple's.
    const named = renderModelCard(fakeReport('270M'), undefined, {repo: 'me/x', sourceName: 'my-run.pt'}).text
    expect(named).toContain('Converted from `my-run.pt` to Hugging Face transformers (safetensors) with the `openelm` CLI.')
    expect(named).not.toContain('apple/OpenELM-270M')
  })

  it('keeps convert-time text as a section: no front matter, no second H1, headings demoted, code untouched', () => {
    const text = '---\nbase_model: x\n---\n\n# Title\n\nConverted.\n\n## Notes\n\n```sh\n# a comment\nrun\n```\n\n<!-- generated by openelm: push may extend this card -->\n'
    expect(convertSection(text)).toBe('Converted.\n\n### Notes\n\n```sh\n# a comment\nrun\n```')
    expect(convertSection('---\na: b\n---\n# Only a title\n')).toBeUndefined()
  })
})
