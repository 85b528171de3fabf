/**
 * Pieces of `push` that need no server: the model card, credential/endpoint resolution, file
 * selection (skips, globs, the Hub's LFS rule) and the retry helpers.
 */
import {cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {HubError, UsageError} from '../src/errors.js'
import {buildModelCard, renderModelCard, renderVerifyReport} from '../src/hub/card.js'
import {resolveEndpoint, resolveToken, scrubToken, tokenFilePath} from '../src/hub/credentials.js'
import {globToRegExp, isLfs, LFS_SIZE_THRESHOLD, listFolder, selected} from '../src/hub/files.js'
import {hubFetch, retryAfterMs} from '../src/hub/fetch.js'
import {type InspectReport} from '../src/inspect.js'
import {layerDims, parameterCount} from '../src/model/config.js'
import {presetConfig} from '../src/model/presets.js'

let root: string
beforeAll(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'openelm-push-card-'))
})
afterAll(() => rmSync(root, {recursive: true, force: true}))

/** Front matter as key → value (scalars) or list, parsed line by line. */
function frontMatter(text: string): Record<string, string | string[]> {
  const m = /^---\n([\s\S]*?)\n---\n/.exec(text)
  expect(m).not.toBeNull()
  const out: Record<string, string | string[]> = {}
  let list: string[] | undefined
  for (const line of m![1]!.split('\n')) {
    const item = /^- (.*)$/.exec(line)
    if (item && list) list.push(item[1]!)
    else {
      const [, key, value] = /^([a-z_]+):\s?(.*)$/.exec(line)!
      if (value === '') out[key!] = list = []
      else {
        out[key!] = value!.startsWith('"') ? (JSON.parse(value!) as string) : value!
        list = undefined
      }
    }
  }
  return out
}

function fakeReport(preset: string, overrides: Partial<InspectReport> = {}): InspectReport {
  const config = presetConfig(preset)
  return {
    path: '/x', format: 'mlx', preset, configSource: 'file', config, layers: layerDims(config), parameters: parameterCount(config),
    dtypes: {BF16: 1}, dtype: 'BF16', tensorCount: 1, tensorBytes: 1, tokenizerFiles: [], notes: [], info: {}, ...overrides,
  }
}

describe('model card', () => {
  it('describes the tiny HF fixture: front matter, format, dtype, per-layer table', async () => {
    const card = await buildModelCard(path.resolve('fixtures/tiny-hf'), {repo: 'me/tiny'})
    const meta = frontMatter(card.text)
    expect(meta).toEqual({
      library_name: 'transformers',
      tags: ['openelm', 'safetensors'],
      license: 'other',
      license_name: 'apple-sample-code-license',
      license_link: 'https://huggingface.co/apple/OpenELM/blob/main/LICENSE',
      pipeline_tag: 'text-generation',
    })
    expect(card.text).toContain('- Weights: F32')
    expect(card.text).toContain('- Parameters: 156,288')
    // tiny: q heads 4/6/6/8, kv 2/3/3/4, ffn 32/112/176/256
    expect(card.text).toContain('| 0 | 4 | 2 | 32 |\n| 1 | 6 | 3 | 112 |\n| 2 | 6 | 3 | 176 |\n| 3 | 8 | 4 | 256 |')
    expect(card.text).not.toContain('## Verification')
  })

  it('takes base_model from --base-model, else from Apple\'s repo when the shape matches and the folder names it', () => {
    expect(frontMatter(renderModelCard(fakeReport('270M'), undefined, {repo: 'me/x'}).text).base_model).toBeUndefined()
    const fromPreset = renderModelCard(fakeReport('270M'), undefined, {repo: 'me/x', claims: ['apple/OpenELM-270M']})
    expect(frontMatter(fromPreset.text).base_model).toBe('apple/OpenELM-270M')
    expect(frontMatter(renderModelCard(fakeReport('1.1B'), undefined, {repo: 'me/x', claims: ['apple/OpenELM-1_1B']}).text).base_model).toBe('apple/OpenELM-1_1B')
    const flag = renderModelCard(fakeReport('270M'), undefined, {repo: 'me/x', baseModel: 'apple/OpenELM-270M-Instruct'})
    expect(frontMatter(flag.text).base_model).toBe('apple/OpenELM-270M-Instruct')
    expect(frontMatter(renderModelCard(fakeReport('tiny'), undefined, {repo: 'me/x'}).text).base_model).toBeUndefined()
  })

  it('names the library and quantization by format', () => {
    const mlx = frontMatter(renderModelCard(fakeReport('270M', {quantization: {bits: 4, groupSize: 64, mode: 'affine'}}), undefined, {repo: 'me/x', claims: ['apple/OpenELM-270M']}).text)
    expect(mlx.library_name).toBe('mlx')
    expect(mlx.tags).toEqual(['openelm', 'mlx', '4-bit'])
    expect(mlx.base_model_relation).toBe('quantized')
    expect(frontMatter(renderModelCard(fakeReport('270M', {format: 'onnx'}), undefined, {repo: 'me/x'}).text).library_name).toBe('onnx')
    const gguf = frontMatter(renderModelCard(fakeReport('270M', {format: 'gguf'}), undefined, {repo: 'me/x'}).text)
    expect(gguf.library_name).toBeUndefined()
    expect(gguf.tags).toEqual(['openelm', 'gguf'])
    expect(renderModelCard(fakeReport('270M', {quantization: {bits: 4, groupSize: 64, mode: 'affine'}}), undefined, {repo: 'me/x'}).text).toContain('- Weights: 4-bit affine, group size 64 (BF16 scales)')
  })

  it('renders the verification report left by convert --verify, whatever its shape', async () => {
    const dir = path.join(root, 'verified')
    cpSync(path.resolve('fixtures/tiny-hf'), dir, {recursive: true})
    writeFileSync(path.join(dir, 'openelm-verify.json'), JSON.stringify({passed: true, backend: 'ts', prompts: [{maxAbsDiff: 1.5e-6, top1Agreement: 1, cosine: 0.9999999}], thresholds: {maxAbs: 1e-4}}))
    const card = await buildModelCard(dir, {repo: 'me/tiny'})
    expect(card.text).toContain('## Verification')
    expect(card.text).toContain('**Result: PASS**')
    expect(card.text).toContain('- backend: `ts`')
    expect(card.text).toContain('| prompts[0].maxAbsDiff | 1.500e-6 |')
    expect(card.text).toContain('| prompts[0].top1Agreement | 1 |')
    expect(card.text).toContain('| thresholds.maxAbs | 1.000e-4 |')
  })

  it('shows FAIL / unknown verdicts and survives unreadable reports', async () => {
    expect(renderVerifyReport({status: 'failed', maxAbs: 0.5})).toContain('**Result: FAIL**')
    expect(renderVerifyReport({ok: false})).toContain('**Result: FAIL**')
    expect(renderVerifyReport({metrics: {kl: 0.0001}})).toContain('**Result: unknown**')
    expect(renderVerifyReport([1, 2])).toContain('could not be read')
    const dir = path.join(root, 'bad-verify')
    cpSync(path.resolve('fixtures/tiny-hf'), dir, {recursive: true})
    writeFileSync(path.join(dir, 'openelm-verify.json'), '{not json')
    const card = await buildModelCard(dir, {repo: 'me/tiny'})
    expect(card.text).not.toContain('## Verification')
    expect(card.notes.join('\n')).toContain('openelm-verify.json is not valid JSON')
  })

  it('writes a minimal card for a folder it cannot read as a model', async () => {
    const dir = path.join(root, 'not-a-model')
    mkdirSync(dir)
    writeFileSync(path.join(dir, 'notes.txt'), 'x')
    const card = await buildModelCard(dir, {repo: 'me/thing', baseModel: 'apple/OpenELM-3B'})
    expect(frontMatter(card.text)).toMatchObject({base_model: 'apple/OpenELM-3B', license: 'other', pipeline_tag: 'text-generation', tags: ['openelm']})
    expect(card.notes[0]).toMatch(/could not read the model/)
  })
})

describe('credentials and endpoint', () => {
  it('prefers --token, then HF_TOKEN, then $HF_TOKEN_PATH, then $HF_HOME/token', async () => {
    const home = path.join(root, 'hf-home')
    mkdirSync(home, {recursive: true})
    writeFileSync(path.join(home, 'token'), 'hf_fromHomeFile\n')
    const tokenPath = path.join(root, 'explicit-token')
    writeFileSync(tokenPath, '  hf_fromTokenPath  \n')
    expect(await resolveToken('hf_flag', {HF_TOKEN: 'hf_env', HF_HOME: home})).toEqual({token: 'hf_flag', source: 'flag'})
    expect(await resolveToken(undefined, {HF_TOKEN: 'hf_env', HF_HOME: home})).toEqual({token: 'hf_env', source: 'env'})
    expect(await resolveToken(undefined, {HF_TOKEN_PATH: tokenPath, HF_HOME: home})).toEqual({token: 'hf_fromTokenPath', source: 'file', file: tokenPath})
    expect(await resolveToken(undefined, {HF_HOME: home})).toEqual({token: 'hf_fromHomeFile', source: 'file', file: path.join(home, 'token')})
    expect(tokenFilePath({})).toBe(path.join(os.homedir(), '.cache', 'huggingface', 'token'))
  })

  it('says where a token is looked for when there is none', async () => {
    const home = path.join(root, 'empty-home')
    const error = await resolveToken(undefined, {HF_HOME: home}).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(HubError)
    expect((error as HubError).message).toBe(`no Hugging Face token found: pass --token, set HF_TOKEN, or write a token to ${path.join(home, 'token')} (run "hf auth login")`)
  })

  it('takes the endpoint from --endpoint, then HF_ENDPOINT, then the public Hub', () => {
    expect(resolveEndpoint('http://127.0.0.1:9/', {HF_ENDPOINT: 'https://hub.example'})).toBe('http://127.0.0.1:9')
    expect(resolveEndpoint(undefined, {HF_ENDPOINT: 'https://hub.example/'})).toBe('https://hub.example')
    expect(resolveEndpoint(undefined, {})).toBe('https://huggingface.co')
    expect(() => resolveEndpoint('ftp://x', {})).toThrow(UsageError)
    expect(() => resolveEndpoint('not a url', {})).toThrow(UsageError)
  })

  it('scrubs every occurrence of the token', () => {
    expect(scrubToken('a hf_x b hf_x', 'hf_x')).toBe('a *** b ***')
    expect(scrubToken('nothing', undefined)).toBe('nothing')
  })
})

describe('file selection', () => {
  it('matches fnmatch-style globs on repo paths', () => {
    expect(globToRegExp('*.json').test('config.json')).toBe(true)
    expect(globToRegExp('*.json').test('sub/meta.json')).toBe(true) // `*` crosses `/`, as in hf upload
    expect(globToRegExp('*.json').test('config.jsonl')).toBe(false)
    expect(globToRegExp('model-?????-of-*.safetensors').test('model-00001-of-00002.safetensors')).toBe(true)
    expect(globToRegExp('sub/').test('sub/a/b.bin')).toBe(true)
    expect(globToRegExp('[!m]*').test('model.bin')).toBe(false)
    expect(globToRegExp('[!m]*').test('config.json')).toBe(true)
    expect(globToRegExp('a+b(c).txt').test('a+b(c).txt')).toBe(true)
    expect(globToRegExp('**/*.bin').test('x/y/z.bin')).toBe(true)
    expect(selected('a.bin', {include: ['*.json']})).toBe(false)
    expect(selected('a.json', {include: ['*.json'], exclude: ['a.*']})).toBe(false)
    expect(selected('b.json', {include: ['*.json'], exclude: ['a.*']})).toBe(true)
  })

  it('applies the Hub LFS rule: big, binary, or an LFS extension', () => {
    const text = Buffer.from('{"a": 1}')
    expect(isLfs('config.json', 8, text)).toBe(false)
    expect(isLfs('config.json', LFS_SIZE_THRESHOLD, text)).toBe(true)
    expect(isLfs('config.json', LFS_SIZE_THRESHOLD - 1, text)).toBe(false)
    expect(isLfs('data.dat', 3, Buffer.from([1, 0, 2]))).toBe(true)
    expect(isLfs('tokenizer.model', 3, Buffer.from('abc'))).toBe(true)
    expect(isLfs('weights.SAFETENSORS', 3, Buffer.from('abc'))).toBe(true)
  })

  it('skips .git, caches and openelm temp outputs at any depth, and lists sorted paths', async () => {
    const dir = path.join(root, 'walk')
    for (const f of ['b.txt', 'a/c.json', '.git/HEAD', 'a/.git/x', '__pycache__/m.pyc', 'a/__pycache__/n.pyc', '.cache/huggingface/upload/z', '.openelm-tmp-9/w.bin', 'a/.openelm-tmp-f']) {
      mkdirSync(path.join(dir, path.dirname(f)), {recursive: true})
      writeFileSync(path.join(dir, f), 'x')
    }
    const {files, skipped} = await listFolder(dir)
    expect(files.map((f) => f.path)).toEqual(['a/c.json', 'b.txt'])
    expect(skipped).toEqual(['.cache/', '.git/', '.openelm-tmp-9/', '__pycache__/', 'a/.git/', 'a/.openelm-tmp-f', 'a/__pycache__/'])
    await expect(listFolder(path.join(dir, 'b.txt'))).rejects.toThrow(/is not a folder/)
    await expect(listFolder(path.join(dir, 'missing'))).rejects.toThrow(/does not exist/)
  })
})

describe('retrying fetch', () => {
  it('reads Retry-After as seconds or an HTTP date', () => {
    expect(retryAfterMs('3')).toBe(3000)
    expect(retryAfterMs(new Date(10_000).toUTCString(), 4_000)).toBe(6_000)
    expect(retryAfterMs('soon')).toBeUndefined()
    expect(retryAfterMs(null)).toBeUndefined()
  })

  it('does not retry 4xx other than 429, and retries thrown network errors', async () => {
    const statuses = [404]
    let calls = 0
    const f404 = hubFetch({fetch: async () => (calls++, new Response('no', {status: statuses[0]!})), retry: {sleep: async () => {}}})
    expect((await f404('http://127.0.0.1/x')).status).toBe(404)
    expect(calls).toBe(1)
    let attempts = 0
    const flaky = hubFetch({
      fetch: async () => {
        attempts++
        if (attempts < 3) throw new TypeError('fetch failed', {cause: {code: 'ECONNRESET'}})
        return new Response('ok')
      },
      retry: {sleep: async () => {}},
    })
    expect(await (await flaky('http://127.0.0.1/y', {method: 'POST', body: 'x'})).text()).toBe('ok')
    expect(attempts).toBe(3)
  })
})

describe('model card usage', () => {
  it('gives one runnable line per format in its usual runtime, after the model section and before the license', () => {
    const expected: [InspectReport['format'], RegExp][] = [
      ['mlx', /^mlx_lm\.generate --model me\/m --prompt "Once upon a time"$/m],
      ['gguf', /^llama-cli --hf-repo me\/m --hf-file m-q8_0\.gguf -p "Once upon a time" -n 64$/m],
      ['onnx', /^const generator = await pipeline\('text-generation', 'me\/m'\)$/m],
      ['hf', /^model = AutoModelForCausalLM\.from_pretrained\("me\/m", trust_remote_code=True\)$/m],
    ]
    for (const [format, line] of expected) {
      const {text} = renderModelCard(fakeReport('270M', {format, path: format === 'gguf' ? '/x/m-q8_0.gguf' : '/x'}), undefined, {repo: 'me/m'})
      expect(text.match(/^# /gm)).toHaveLength(1)
      expect(text).toMatch(line)
      expect(text.indexOf('## Usage')).toBeGreaterThan(text.indexOf('## Model'))
      expect(text.indexOf('## Usage')).toBeLessThan(text.indexOf('## License'))
    }
    const hf = renderModelCard(fakeReport('270M', {format: 'hf'}), undefined, {repo: 'me/m'}).text
    expect(hf).toContain('AutoTokenizer.from_pretrained("meta-llama/Llama-2-7b-hf")')
    const withTok = renderModelCard(fakeReport('270M', {format: 'hf', tokenizerFiles: ['tokenizer.json']}), undefined, {repo: 'me/m'}).text
    expect(withTok).toContain('AutoTokenizer.from_pretrained("me/m")')
    expect(renderModelCard(fakeReport('270M', {format: 'corenet', path: '/x/run.pt'}), undefined, {repo: 'me/m'}).text).toMatch(/^openelm generate run\.pt --prompt "Once upon a time"$/m)
  })
})

describe('model card verification section', () => {
  it('renders a real verify report as named checks with thresholds and the quality table, no JSON paths', async () => {
    const {verify} = await import('../src/verify/index.js')
    const report = await verify('fixtures/trained', {against: 'fixtures/trained'})
    expect(report.pass).toBe(true)
    const text = renderModelCard(fakeReport('270M', {format: 'hf'}), JSON.parse(JSON.stringify(report)), {repo: 'me/m'}).text
    const section = text.slice(text.indexOf('## Verification'), text.indexOf('## License'))
    expect(section).toContain('**Result: PASS (exact)**')
    expect(section).toMatch(/^\| check \| value \| threshold \| result \|$/m)
    expect(section).toMatch(/^\| logits vs REF transformed \| max \\\|Δ\\\| 0 .* \| ≤ .* of scale \| ok \|$/m)
    expect(section).toMatch(/^\| mean KL \(nats\) \| /m)
    expect(section).not.toMatch(/\w\[\d+\]|\w\.\w+\.\w/)
    expect(text.match(/^# /gm)).toHaveLength(1)
    const finite = renderVerifyReport({...JSON.parse(JSON.stringify(report)), verdict: 'finite', checks: []})
    expect(finite).toContain('**Result: FINITE**')
  }, 60_000)
})
