/**
 * `push` end to end: the real @huggingface/hub client against a local Hub on 127.0.0.1
 * (test/helpers/hub-server.ts), which stores what it receives; the committed tree is compared
 * byte for byte with the folder. Faults: 503s, 429 + Retry-After, dropped connections,
 * permanent 401/403/404, a token echoed back in an error.
 */
import {createHash} from 'node:crypto'
import {cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, afterEach, beforeAll, beforeEach, describe, expect, it} from 'vitest'
import {HubError} from '../src/errors.js'
import {push, type PushEvent, type PushOptions, type PushResult} from '../src/hub/push.js'
import {BASE_DELAY_MS, MAX_ATTEMPTS} from '../src/hub/fetch.js'
import {HubServer, startHubServer} from './helpers/hub-server.js'
import {convert} from '../src/convert.js'
import {GENERATED_CARD_MARKER} from '../src/formats/common.js'
import {drain} from '../src/progress.js'
import {verifyConversion} from '../src/verify/index.js'

const TOKEN = 'hf_localTestToken_9f8e7d6c5b4a'
const FIXTURE = path.resolve('fixtures/tiny-hf')
/** Above the server's multipart threshold (1 MiB), not a multiple of its 256 KiB chunks. */
const BIG_BYTES = 3 * 1024 * 1024 + 12_345

let root: string
let folder: string
let server: HubServer
let sleeps: number[]

function pseudoRandom(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n)
  let x = seed >>> 0
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    out[i] = x >>> 24
  }
  return out
}

/** The model folder as a user has it, plus things push must skip. */
function makeFolder(dir: string): void {
  cpSync(FIXTURE, dir, {recursive: true})
  writeFileSync(path.join(dir, 'weights-extra.bin'), pseudoRandom(BIG_BYTES, 7))
  writeFileSync(path.join(dir, 'notes.txt'), 'plain text notes\n')
  mkdirSync(path.join(dir, 'sub', 'deeper'), {recursive: true})
  writeFileSync(path.join(dir, 'sub', 'deeper', 'meta.json'), '{"a": 1}\n')
  for (const skipped of ['.git/HEAD', '__pycache__/x.pyc', '.cache/huggingface/y', '.openelm-tmp-123/model.safetensors', 'sub/.git/config']) {
    mkdirSync(path.join(dir, path.dirname(skipped)), {recursive: true})
    writeFileSync(path.join(dir, skipped), 'must not be uploaded')
  }
  writeFileSync(path.join(dir, '.openelm-tmp-file'), 'must not be uploaded')
}

const UPLOADED = ['config.json', 'generation_config.json', 'model.safetensors', 'notes.txt', 'sub/deeper/meta.json', 'weights-extra.bin']

async function run(options: Partial<PushOptions> & {dir?: string} = {}): Promise<{result: PushResult; events: PushEvent[]}> {
  const events: PushEvent[] = []
  const it = push(options.dir ?? folder, {
    repo: 'me/OpenELM-tiny',
    token: TOKEN,
    endpoint: server.url,
    env: {},
    retry: {sleep: async (ms) => void sleeps.push(ms)},
    ...options,
  })
  for (;;) {
    const step = await it.next()
    if (step.done) return {result: step.value, events}
    events.push(step.value)
  }
}

async function runError(options: Partial<PushOptions> = {}): Promise<HubError> {
  const error = await run(options).then(() => undefined, (e: unknown) => e)
  expect(error).toBeInstanceOf(HubError)
  return error as HubError
}

const requestLine = (r: {method: string; path: string}) => `${r.method} ${r.path.replace(/[0-9a-f]{64}/, '<oid>')}`

beforeAll(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'openelm-push-'))
  folder = path.join(root, 'model')
  makeFolder(folder)
})
afterAll(() => rmSync(root, {recursive: true, force: true}))
beforeEach(async () => {
  server = await startHubServer({token: TOKEN})
  sleeps = []
})
afterEach(async () => server.stop())

describe('push to a local Hub', () => {
  it('creates the repo and commits the folder in one commit, byte for byte, with a generated card', async () => {
    const {result, events} = await run()
    expect(result.createdRepo).toBe(true)
    expect(server.commits).toHaveLength(1)
    const tree = server.tree('me/OpenELM-tiny')!
    expect([...tree.keys()].sort()).toEqual(['.gitattributes', 'README.md', ...UPLOADED].sort())
    for (const file of UPLOADED) expect(tree.get(file)!.equals(readFileSync(path.join(folder, file))), file).toBe(true)
    // The card is generated in memory: uploaded, but the folder still has no README.md.
    expect(tree.get('README.md')!.toString()).toMatch(/^---\nlibrary_name: transformers\n/)
    expect(() => readFileSync(path.join(folder, 'README.md'))).toThrow()
    // LFS as the Hub decided it at preupload, and as the dry-run listing predicted.
    expect(server.commits[0]!.lfsPaths.sort()).toEqual(['model.safetensors', 'weights-extra.bin'])
    expect(result.files.filter((f) => f.lfs).map((f) => f.path)).toEqual(['model.safetensors', 'weights-extra.bin'])
    expect(result.commitOid).toBe(server.commits[0]!.oid)
    expect(result.commitUrl).toBe(`${server.url}/me/OpenELM-tiny/commit/${server.commits[0]!.oid}`)
    expect(result.user).toBe('me')
    expect(server.commits[0]!.summary).toBe('Upload OpenELM-tiny with openelm')
    // Per-file upload progress for the big file, ending at its full size.
    const big = events.filter((e): e is Extract<PushEvent, {type: 'file'}> => e.type === 'file' && e.path === 'weights-extra.bin' && e.state === 'uploading')
    expect(big.length).toBeGreaterThan(3)
    expect(big.at(-1)!.bytesDone).toBe(BIG_BYTES)
    expect(big.some((e) => e.bytesDone > 0 && e.bytesDone < BIG_BYTES)).toBe(true)
  })

  it('makes exactly the protocol requests, with the token only on Hub API calls', async () => {
    await run()
    const parts = Math.ceil(BIG_BYTES / (256 * 1024))
    const lines = server.requests.map(requestLine)
    expect(lines.slice(0, 4)).toEqual([
      'GET /api/whoami-v2',
      'POST /api/repos/create',
      'POST /api/models/me/OpenELM-tiny/preupload/main',
      'POST /me/OpenELM-tiny.git/info/lfs/objects/batch',
    ])
    const puts = lines.slice(4, -2)
    expect(puts.filter((l) => l === 'PUT /storage/basic/<oid>')).toHaveLength(1)
    expect(puts.filter((l) => /^PUT \/storage\/part\/<oid>\/\d+$/.test(l))).toHaveLength(parts)
    expect(puts).toHaveLength(parts + 1)
    expect(lines.slice(-2)).toEqual(['POST /storage/complete/<oid>', 'POST /api/models/me/OpenELM-tiny/commit/main'])
    for (const r of server.requests) {
      if (r.path.startsWith('/storage/')) expect(r.authorization).toBeUndefined()
      else expect(r.authorization).toBe(`Bearer ${TOKEN}`)
    }
    expect(server.requests.at(-1)!.contentType).toBe('application/x-ndjson')
  })

  it('sends the Hub the documented payloads: preupload samples, LFS batch oids, NDJSON commit lines', async () => {
    await run({commitMessage: 'title'})
    const sha256 = (file: string) => createHash('sha256').update(readFileSync(path.join(folder, file))).digest('hex')
    const body = (p: string) => server.requests.find((r) => r.path.endsWith(p))!.bodyText!
    const preupload = JSON.parse(body('/preupload/main')) as {files: {path: string; size: number; sample: string}[]}
    const config = preupload.files.find((f) => f.path === 'config.json')!
    expect(config.size).toBe(989)
    expect(Buffer.from(config.sample, 'base64').equals(readFileSync(path.join(folder, 'config.json')).subarray(0, 512))).toBe(true)
    expect(preupload.files.map((f) => f.path).sort()).toEqual(['README.md', ...UPLOADED].sort())
    const batch = JSON.parse(body('/objects/batch')) as {operation: string; transfers: string[]; hash_algo: string; ref: {name: string}; objects: {oid: string; size: number}[]}
    expect(batch).toMatchObject({operation: 'upload', transfers: ['basic', 'multipart'], hash_algo: 'sha_256', ref: {name: 'main'}})
    expect(batch.objects.sort((a, b) => a.size - b.size)).toEqual([{oid: sha256('model.safetensors'), size: 628_640}, {oid: sha256('weights-extra.bin'), size: BIG_BYTES}])
    const lines = body('/commit/main').split('\n').map((l) => JSON.parse(l) as {key: string; value: Record<string, unknown>})
    expect(lines[0]).toEqual({key: 'header', value: {summary: 'title'}})
    const byPath = new Map(lines.slice(1).map((l) => [l.value.path as string, l]))
    expect(byPath.get('weights-extra.bin')).toEqual({key: 'lfsFile', value: {path: 'weights-extra.bin', algo: 'sha256', size: BIG_BYTES, oid: sha256('weights-extra.bin')}})
    expect(byPath.get('notes.txt')).toEqual({key: 'file', value: {path: 'notes.txt', encoding: 'base64', content: Buffer.from('plain text notes\n').toString('base64')}})
    expect(lines).toHaveLength(1 + 1 + UPLOADED.length)
  })

  it('pushes again to an existing repo without re-uploading stored LFS objects', async () => {
    await run()
    const before = server.requests.length
    const {result} = await run({commitMessage: 'second push'})
    expect(result.createdRepo).toBe(false)
    const second = server.requests.slice(before).map(requestLine)
    expect(second.filter((l) => l.startsWith('PUT'))).toEqual([])
    expect(server.commits).toHaveLength(2)
    expect(server.commits[1]!.summary).toBe('second push')
  })

  it('commits to a new branch, creating it from main; an existing branch is reused', async () => {
    const first = await run({revision: 'fp16'})
    expect(first.result.createdBranch).toBe(true)
    expect(server.requests.map(requestLine)).toContain('POST /api/models/me/OpenELM-tiny/branch/fp16')
    expect([...server.tree('me/OpenELM-tiny', 'fp16')!.keys()]).toContain('weights-extra.bin')
    expect([...server.tree('me/OpenELM-tiny', 'main')!.keys()]).toEqual(['.gitattributes'])
    const second = await run({revision: 'fp16'})
    expect(second.result.createdBranch).toBe(false)
    expect(server.commits.map((c) => c.branch)).toEqual(['fp16', 'fp16'])
  })

  it('opens a pull request with --create-pr and leaves main alone', async () => {
    const {result} = await run({createPr: true})
    expect(result.pullRequestUrl).toBe(`${server.url}/me/OpenELM-tiny/discussions/1`)
    const commitRequest = server.requests.at(-1)!
    expect(commitRequest.query).toBe('?create_pr=1')
    expect(server.requests.find((r) => r.path.endsWith('/preupload/main'))!.query).toBe('?create_pr=1')
    expect([...server.tree('me/OpenELM-tiny', 'refs/pr/1')!.keys()]).toContain('model.safetensors')
    expect([...server.tree('me/OpenELM-tiny', 'main')!.keys()]).toEqual(['.gitattributes'])
  })

  it('creates the repo private with --private', async () => {
    await run({private: true})
    expect(server.repos.get('me/OpenELM-tiny')!.private).toBe(true)
    await run({repo: 'me/public-one'})
    expect(server.repos.get('me/public-one')!.private).toBe(false)
  })

  it('applies --include/--exclude globs (card included only when it matches)', async () => {
    await run({include: ['*.json', '*.safetensors'], exclude: ['sub/*']})
    expect([...server.tree('me/OpenELM-tiny')!.keys()].sort()).toEqual(['.gitattributes', 'config.json', 'generation_config.json', 'model.safetensors'])
  })

  it('uploads the folder README.md as is instead of generating one', async () => {
    const dir = path.join(root, 'with-readme')
    cpSync(FIXTURE, dir, {recursive: true})
    writeFileSync(path.join(dir, 'README.md'), '# my own card\n')
    const {result} = await run({dir})
    expect(server.tree('me/OpenELM-tiny')!.get('README.md')!.toString()).toBe('# my own card\n')
    expect(result.files.find((f) => f.path === 'README.md')!.generated).toBeUndefined()
  })

  it('extends a card that openelm generated (MLX writer) with the per-layer table and the verify report', async () => {
    const dir = path.join(root, 'mlx-card')
    await drain(convert(FIXTURE, 'mlx', dir, {}, {quantization: {bits: 4, groupSize: 64, mode: 'affine'}}))
    await verifyConversion(FIXTURE, dir)
    const written = readFileSync(path.join(dir, 'README.md'), 'utf8')
    expect(written).toContain(GENERATED_CARD_MARKER)
    await run({dir})
    const card = server.tree('me/OpenELM-tiny')!.get('README.md')!.toString()
    expect(card).toMatch(/^---\nlibrary_name: mlx\n/)
    expect(card.match(/^---$/gm)).toHaveLength(2)
    expect(card).toContain('| layer |')
    expect(card).toMatch(/[Vv]erif/)
    expect(card).toContain('mlx_lm.generate --model .')
    expect(card).not.toContain(GENERATED_CARD_MARKER)
    // The folder's own file is left as the writer made it.
    expect(readFileSync(path.join(dir, 'README.md'), 'utf8')).toBe(written)
  })

  it('makes no request at all under dryRun, and needs no token', async () => {
    let calls = 0
    const {result} = await run({dryRun: true, token: undefined, fetch: async () => {
      calls++
      throw new Error('no request expected')
    }})
    expect(calls).toBe(0)
    expect(server.requests).toHaveLength(0)
    expect(result.dryRun).toBe(true)
    expect(result.files.map((f) => [f.path, f.bytes, f.lfs])).toEqual([
      ['README.md', result.files[0]!.bytes, false],
      ['config.json', 989, false],
      ['generation_config.json', 111, false],
      ['model.safetensors', 628_640, true],
      ['notes.txt', 17, false],
      ['sub/deeper/meta.json', 9, false],
      ['weights-extra.bin', BIG_BYTES, true],
    ])
  })
})

describe('push failures', () => {
  it('retries a 503 on the first two calls with exponential backoff, then succeeds', async () => {
    server.fault = (_r, i) => (i < 2 ? {status: 503, body: {error: 'Service Unavailable'}} : undefined)
    const {events} = await run()
    expect(sleeps).toEqual([BASE_DELAY_MS, 2 * BASE_DELAY_MS])
    expect(events.filter((e) => e.type === 'retry')).toHaveLength(2)
    expect(server.requests.slice(0, 3).map(requestLine)).toEqual(['GET /api/whoami-v2', 'GET /api/whoami-v2', 'GET /api/whoami-v2'])
    expect(server.commits).toHaveLength(1)
  })

  it('waits what Retry-After asks on a 429', async () => {
    server.fault = (r, i) => (i === 2 && r.path.includes('/preupload/') ? {status: 429, headers: {'Retry-After': '7'}, body: {error: 'rate limited'}} : undefined)
    await run()
    expect(sleeps).toEqual([7000])
    expect(server.commits).toHaveLength(1)
  })

  it('retries an LFS PUT whose connection drops mid-body, and the stored object is exact', async () => {
    let dropped = 0
    server.fault = (r) => (r.method === 'PUT' && r.path.startsWith('/storage/basic/') && dropped++ === 0 ? {drop: true} : undefined)
    const {events} = await run()
    expect(dropped).toBe(2)
    expect(events.some((e) => e.type === 'retry' && /connection failed/.test(e.message))).toBe(true)
    expect(server.tree('me/OpenELM-tiny')!.get('model.safetensors')!.equals(readFileSync(path.join(folder, 'model.safetensors')))).toBe(true)
  })

  it('retries a dropped multipart part', async () => {
    let dropped = false
    server.fault = (r) => {
      if (r.method === 'PUT' && r.path.endsWith('/3') && r.path.startsWith('/storage/part/') && !dropped) {
        dropped = true
        return {drop: true}
      }
      return undefined
    }
    await run()
    expect(dropped).toBe(true)
    expect(server.tree('me/OpenELM-tiny')!.get('weights-extra.bin')!.equals(readFileSync(path.join(folder, 'weights-extra.bin')))).toBe(true)
  })

  it('stops at once on a 401 with the Hub message, no retry, no commit, no token in the message', async () => {
    const error = await runError({token: 'hf_wrongWrongWrong123'})
    expect(error.code).toBe('hub.http_401')
    expect(error.message).toMatch(/whoami.*401.*Invalid credentials in Authorization header/)
    expect(error.message).not.toContain('hf_wrongWrongWrong123')
    expect(server.requests.map(requestLine)).toEqual(['GET /api/whoami-v2'])
    expect(sleeps).toEqual([])
    expect(server.commits).toHaveLength(0)
  })

  it('stops at once on a 404 for a missing organization', async () => {
    const error = await runError({repo: 'no-such-org/model'})
    expect(error.code).toBe('hub.http_404')
    expect(error.message).toContain('Organization "no-such-org" not found')
    expect(server.requests.map(requestLine)).toEqual(['GET /api/whoami-v2', 'POST /api/repos/create'])
    expect(sleeps).toEqual([])
  })

  it('commits nothing when an LFS upload fails for good', async () => {
    server.fault = (r) => (r.method === 'PUT' && r.path.startsWith('/storage/basic/') ? {status: 403, body: '<Error><Code>AccessDenied</Code></Error>'} : undefined)
    const error = await runError()
    expect(error.code).toBe('hub.http_403')
    expect(error.message).toContain('model.safetensors')
    expect(error.message).toContain('/storage/basic/')
    expect(error.message).not.toContain('X-Signature') // pre-signed query kept out of messages
    expect(server.requests.some((r) => r.path.includes('/commit/'))).toBe(false)
    expect(server.commits).toHaveLength(0)
  })

  it('gives up after a bounded number of attempts on a persistent 503', async () => {
    server.fault = (r) => (r.path.includes('/preupload/') ? {status: 503, body: {error: 'down for maintenance'}} : undefined)
    const error = await runError()
    expect(error.code).toBe('hub.http_503')
    expect(error.message).toContain('down for maintenance')
    expect(server.requests.filter((r) => r.path.includes('/preupload/'))).toHaveLength(MAX_ATTEMPTS)
    expect(sleeps).toHaveLength(MAX_ATTEMPTS - 1)
    expect(sleeps).toEqual([...sleeps].sort((a, b) => a - b))
    expect(server.commits).toHaveLength(0)
  })

  it('scrubs the token from a Hub error that echoes it', async () => {
    server.fault = (r) => (r.path === '/api/repos/create' ? {status: 403, body: {error: `token ${TOKEN} may not write here`}} : undefined)
    const error = await runError()
    expect(error.code).toBe('hub.http_403')
    expect(error.message).toContain('token *** may not write here')
    expect(sleeps).toEqual([]) // a 403 is permanent: no retry
    expect(server.requests.map(requestLine)).toEqual(['GET /api/whoami-v2', 'POST /api/repos/create', 'GET /api/models/me/OpenELM-tiny'])
    expect(error.message).not.toContain(TOKEN)
    expect(JSON.stringify(error.details)).not.toContain(TOKEN)
  })

  it('accepts a 403 on create when the repo exists (no create rights, write rights)', async () => {
    await run()
    server.fault = (r) => (r.path === '/api/repos/create' ? {status: 403, body: {error: 'no rights in this namespace'}} : undefined)
    const {result} = await run()
    expect(result.createdRepo).toBe(false)
    expect(server.commits).toHaveLength(2)
  })

  it('refuses a token that is not a Hugging Face token before any request', async () => {
    const error = await runError({token: 'not-a-token-value'})
    expect(error.code).toBe('hub.token_format')
    expect(error.message).not.toContain('not-a-token-value')
    expect(server.requests).toHaveLength(0)
  })
})
