/**
 * Sources by name: `owner/name` repo ids and checkpoint URLs, downloaded from the local Hub on
 * 127.0.0.1 (the real download protocol) into the Hugging Face cache layout, as a user runs them
 * (spawned bin/dev.js), plus the resumable download and the progress line.
 */
import {createHash} from 'node:crypto'
import {execFile} from 'node:child_process'
import {cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, afterEach, beforeAll, beforeEach, describe, expect, it} from 'vitest'
import {downloadLine} from '../src/cli/download-progress.js'
import {type DownloadEvent, downloadRepo, neededFiles, type RepoDownload} from '../src/hub/download.js'
import {isRepoId, looksLocal} from '../src/hub/source.js'
import {HubServer, startHubServer} from './helpers/hub-server.js'

const TOKEN = 'hf_downloadToken_0123456789abcdef'
const BIN = path.resolve('bin/dev.js')
const TINY = path.resolve('fixtures/tiny-hf')

let root: string
let server: HubServer
let home: string

interface Run {
  code: number
  stdout: string
  stderr: string
}

function cli(args: string[], env: Record<string, string> = {}, cwd = path.resolve('.')): Promise<Run> {
  return new Promise((resolve) => {
    const childEnv: Record<string, string> = {PATH: process.env.PATH ?? '', HOME: root, HF_HOME: home, HF_ENDPOINT: server.url, ...env}
    execFile(BIN, args, {env: childEnv, cwd, timeout: 120_000}, (error, stdout, stderr) => {
      resolve({code: error ? ((error as {code?: number}).code ?? 1) : 0, stdout, stderr})
    })
  })
}

function tinyFiles(extra: Record<string, Buffer> = {}): Map<string, Buffer> {
  const files = new Map<string, Buffer>()
  for (const name of ['config.json', 'generation_config.json', 'model.safetensors']) files.set(name, readFileSync(path.join(TINY, name)))
  files.set('README.md', Buffer.from('# tiny\n'))
  files.set('onnx/model.onnx', Buffer.from('not needed'))
  for (const [k, v] of Object.entries(extra)) files.set(k, v)
  return files
}

async function drainDownload(gen: AsyncGenerator<DownloadEvent, RepoDownload>, events: DownloadEvent[] = []): Promise<RepoDownload> {
  for (;;) {
    const step = await gen.next()
    if (step.done) return step.value
    events.push(step.value)
  }
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

beforeAll(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'openelm-hub-source-'))
})
afterAll(() => rmSync(root, {recursive: true, force: true}))
beforeEach(async () => {
  server = await startHubServer({token: TOKEN})
  home = mkdtempSync(path.join(root, 'hf-home-'))
})
afterEach(async () => server.stop())

describe('repo ids from the Hub', () => {
  it('convert owner/name --to mlx --verify downloads into the HF cache, converts and verifies; a second run downloads nothing', async () => {
    const sha = server.publish('me/OpenELM-tiny', tinyFiles())
    const out = path.join(root, 'tiny-mlx')
    const first = await cli(['convert', 'me/OpenELM-tiny', '--to', 'mlx', '--verify', '--out', out])
    expect(first.code, first.stderr).toBe(0)
    expect(first.stdout).toMatch(/PASS|pass/)
    expect(existsSync(path.join(out, 'model.safetensors'))).toBe(true)
    // Only the needed files, once each.
    expect(server.downloads().map((q) => q.path.split('/').pop()).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors'])
    const repoDir = path.join(home, 'hub', 'models--me--OpenELM-tiny')
    expect(readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8')).toBe(sha)
    const link = path.join(repoDir, 'snapshots', sha, 'model.safetensors')
    const weights = readFileSync(path.join(TINY, 'model.safetensors'))
    expect(lstatSync(link).isSymbolicLink()).toBe(true)
    expect(readlinkSync(link)).toBe(`../../blobs/${sha256(weights)}`)
    expect(sha256(readFileSync(link))).toBe(sha256(weights))
    expect(existsSync(path.join(repoDir, 'snapshots', sha, 'README.md'))).toBe(false)

    const before = server.downloads().length
    const second = await cli(['convert', 'me/OpenELM-tiny', '--to', 'mlx', '--out', path.join(root, 'tiny-mlx-2'), '--json'])
    expect(second.code, second.stderr).toBe(0)
    expect(server.downloads().length).toBe(before)
    expect(JSON.parse(second.stdout).source.path).toBe(path.join(repoDir, 'snapshots', sha))
  }, 240_000)

  it('verify MODEL --against owner/name compares a local conversion with the repo', async () => {
    server.publish('me/OpenELM-tiny', tinyFiles())
    const out = path.join(root, 'tiny-bf16')
    const conv = await cli(['convert', TINY, '--to', 'hf', '--dtype', 'bf16', '--out', out])
    expect(conv.code, conv.stderr).toBe(0)
    const run = await cli(['verify', out, '--against', 'me/OpenELM-tiny', '--json'])
    expect(run.code, run.stderr).toBe(0)
    const report = JSON.parse(run.stdout)
    expect(report.pass).toBe(true)
    expect(report.verdict).toBe('exact')
    expect(server.downloads()).toHaveLength(3)
  }, 120_000)

  it('--revision picks a branch; a missing repo or revision is one line, exit 6', async () => {
    server.publish('me/OpenELM-tiny', tinyFiles())
    const other = server.publish('me/OpenELM-tiny', tinyFiles(), {branch: 'v2'})
    const ok = await cli(['inspect', 'me/OpenELM-tiny', '--revision', 'v2', '--json'])
    expect(ok.code, ok.stderr).toBe(0)
    expect(JSON.parse(ok.stdout).path).toContain(path.join('snapshots', other))
    expect(readFileSync(path.join(home, 'hub', 'models--me--OpenELM-tiny', 'refs', 'v2'), 'utf8')).toBe(other)

    const noRepo = await cli(['inspect', 'me/nothing-here'])
    expect(noRepo.code).toBe(6)
    expect(noRepo.stderr.trim().split('\n')).toEqual([`Error: me/nothing-here is not a local path, and repository me/nothing-here not found at ${server.url} (if it is private, set HF_TOKEN)`])
    const noRev = await cli(['convert', 'me/OpenELM-tiny', '--revision', 'nope', '--to', 'hf', '--out', path.join(root, 'never')])
    expect(noRev.code).toBe(6)
    expect(noRev.stderr.trim().split('\n')).toEqual([`Error: revision "nope" not found in me/OpenELM-tiny at ${server.url}`])
    expect(existsSync(path.join(root, 'never'))).toBe(false)
  }, 120_000)

  it('a gated repo without a token fails with one line naming HF_TOKEN; with HF_TOKEN it downloads', async () => {
    server.publish('apple/OpenELM-gated', tinyFiles(), {gated: true})
    const denied = await cli(['inspect', 'apple/OpenELM-gated'])
    expect(denied.code).toBe(6)
    const lines = denied.stderr.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^Error: apple\/OpenELM-gated is gated or private at .*: set HF_TOKEN \(or pass --token\)/)
    const allowed = await cli(['inspect', 'apple/OpenELM-gated', '--json'], {HF_TOKEN: TOKEN})
    expect(allowed.code, allowed.stderr).toBe(0)
    expect(JSON.parse(allowed.stdout).parameters).toBe(156_288)
    expect(server.downloads().length).toBe(3)
    expect(server.downloads().every((q) => q.authorization === `Bearer ${TOKEN}`)).toBe(true)
    expect(allowed.stdout + allowed.stderr).not.toContain(TOKEN)
  }, 120_000)

  it('a local path wins over a repo id of the same spelling; --revision on a local path is refused', async () => {
    server.publish('me/OpenELM-tiny', tinyFiles())
    const cwd = path.join(root, 'cwd')
    mkdirSync(path.join(cwd, 'me'), {recursive: true})
    cpSync(TINY, path.join(cwd, 'me', 'OpenELM-tiny'), {recursive: true})
    const run = await cli(['inspect', 'me/OpenELM-tiny', '--json'], {}, cwd)
    expect(run.code, run.stderr).toBe(0)
    expect(JSON.parse(run.stdout).path).toBe('me/OpenELM-tiny')
    expect(server.requests).toHaveLength(0)
    const refused = await cli(['inspect', 'me/OpenELM-tiny', '--revision', 'v2'], {}, cwd)
    expect(refused.code).toBe(2)
    expect(refused.stderr.trim().split('\n')).toEqual(['Error: --revision applies to a Hub repo id, and me/OpenELM-tiny is not one'])
  }, 120_000)

  it('an https-style checkpoint URL is cached under $HF_HOME/openelm and read again without a request', async () => {
    const pt = readFileSync('fixtures/corenet/state_dict_f32.pt')
    server.publish('apple/corenet', new Map([['checkpoints/model.pt', pt]]))
    const url = `${server.url}/apple/corenet/resolve/main/checkpoints/model.pt`
    const first = await cli(['inspect', url, '--json'])
    expect(first.code, first.stderr).toBe(0)
    const cached = JSON.parse(first.stdout).path as string
    expect(cached.startsWith(path.join(home, 'openelm', 'urls'))).toBe(true)
    expect(path.basename(cached)).toBe('model.pt')
    expect(sha256(readFileSync(cached))).toBe(sha256(pt))
    expect(JSON.parse(first.stdout).parameters).toBe(158_336)
    const count = server.requests.length
    const second = await cli(['inspect', url, '--json'])
    expect(second.code, second.stderr).toBe(0)
    expect(server.requests.length).toBe(count)
    const missing = await cli(['inspect', `${server.url}/apple/corenet/resolve/main/none.pt`])
    expect(missing.code).toBe(6)
    expect(missing.stderr.trim().split('\n')).toHaveLength(1)
  }, 120_000)
})

describe('progress on a terminal only', () => {
  it('a TTY shows the download line (bytes, percent, done); a pipe shows only the closing note', async () => {
    server.publish('me/OpenELM-tiny', tinyFiles())
    // `script` gives the command a pseudo-terminal, as a person's shell would.
    const tty = await new Promise<Run>((resolve) => {
      execFile('script', ['-qec', `${BIN} inspect me/OpenELM-tiny`, '/dev/null'], {env: {PATH: process.env.PATH ?? '', HOME: root, HF_HOME: home, HF_ENDPOINT: server.url, TERM: 'xterm'}, timeout: 120_000}, (error, stdout, stderr) => {
        resolve({code: error ? ((error as {code?: number}).code ?? 1) : 0, stdout, stderr})
      })
    })
    expect(tty.code, tty.stdout).toBe(0)
    expect(tty.stdout).toMatch(/downloading model\.safetensors 100% 613\.91 KiB\/613\.91 KiB .*done/)
    expect(tty.stdout).toContain('downloading config.json')
    rmSync(home, {recursive: true, force: true})
    const piped = await cli(['inspect', 'me/OpenELM-tiny'])
    expect(piped.code, piped.stderr).toBe(0)
    expect(piped.stderr).not.toContain('downloading')
    expect(piped.stderr.trim()).toMatch(/^note: me\/OpenELM-tiny@[0-9a-f]{12}: downloaded 3 of 3 files into /)
  }, 120_000)
})

describe('resumable downloads', () => {
  it('a connection dropped after N bytes continues from N with a Range request; the blob checks out', async () => {
    const sha = server.publish('me/OpenELM-tiny', tinyFiles())
    const N = 200_000
    let cut = false
    server.truncate = (q) => {
      if (!cut && q.path.endsWith('/model.safetensors')) {
        cut = true
        return N
      }
      return undefined
    }
    const events: DownloadEvent[] = []
    const result = await drainDownload(downloadRepo('me/OpenELM-tiny', {env: {HF_HOME: home}, endpoint: server.url}), events)
    const gets = server.downloads().filter((q) => q.path.endsWith('/model.safetensors'))
    expect(gets.map((q) => q.range)).toEqual([undefined, `bytes=${N}-`])
    const weights = readFileSync(path.join(TINY, 'model.safetensors'))
    expect(sha256(readFileSync(path.join(result.path, 'model.safetensors')))).toBe(sha256(weights))
    expect(result.sha).toBe(sha)
    const done = events.filter((e) => e.file === 'model.safetensors' && e.done)
    expect(done.at(-1)).toMatchObject({bytes: weights.length, total: weights.length, resumedFrom: N})
  })

  it('a killed run leaves blobs/<etag>.incomplete; the next run asks only for the rest', async () => {
    server.publish('me/OpenELM-tiny', tinyFiles())
    const N = 300_000
    server.truncate = (q) => (q.path.endsWith('/model.safetensors') && q.range === undefined ? N : undefined)
    const env = {HF_HOME: home}
    await expect(drainDownload(downloadRepo('me/OpenELM-tiny', {env, endpoint: server.url, attempts: 1}))).rejects.toThrow(/downloading model\.safetensors failed after 1 tries.*run again to resume/)
    const weights = readFileSync(path.join(TINY, 'model.safetensors'))
    const partial = path.join(home, 'hub', 'models--me--OpenELM-tiny', 'blobs', `${sha256(weights)}.incomplete`)
    expect(statSync(partial).size).toBe(N)
    server.truncate = undefined
    const result = await drainDownload(downloadRepo('me/OpenELM-tiny', {env, endpoint: server.url}))
    expect(server.downloads().filter((q) => q.path.endsWith('/model.safetensors')).map((q) => q.range)).toEqual([undefined, `bytes=${N}-`])
    expect(result.downloaded).toEqual(['model.safetensors']) // config files were already linked by the killed run
    expect(sha256(readFileSync(path.join(result.path, 'model.safetensors')))).toBe(sha256(weights))
    expect(existsSync(partial)).toBe(false)
  })

  it('HF_HUB_OFFLINE=1 reads the cached snapshot of the revision without any request', async () => {
    const sha = server.publish('me/OpenELM-tiny', tinyFiles())
    const first = await drainDownload(downloadRepo('me/OpenELM-tiny', {env: {HF_HOME: home}, endpoint: server.url}))
    const count = server.requests.length
    const offline = await drainDownload(downloadRepo('me/OpenELM-tiny', {env: {HF_HOME: home, HF_HUB_OFFLINE: '1'}, endpoint: server.url}))
    expect(server.requests.length).toBe(count)
    expect(offline.path).toBe(first.path)
    expect(offline.sha).toBe(sha)
    expect(offline.files).toEqual(['config.json', 'generation_config.json', 'model.safetensors'])
    await expect(drainDownload(downloadRepo('me/other', {env: {HF_HOME: home, HF_HUB_OFFLINE: '1'}, endpoint: server.url}))).rejects.toThrow(/HF_HUB_OFFLINE is set and me\/other@main is not in the cache/)
  })

  it('a process killed mid-download (SIGKILL) leaves its written bytes; the next run asks for the rest with Range', async () => {
    // 20 MiB of weights: more than one 8 MiB write batch reaches the disk before the kill.
    const big = Buffer.alloc(20 << 20)
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE((i * 2654435761) >>> 0, i)
    server.publish('me/big', new Map([['config.json', readFileSync(path.join(TINY, 'config.json'))], ['model.safetensors', big]]))
    const STALL = 12 << 20
    server.stall = (q) => (q.path.endsWith('/model.safetensors') && q.range === undefined ? STALL : undefined)
    const partial = path.join(home, 'hub', 'models--me--big', 'blobs', `${sha256(big)}.incomplete`)
    const child = execFile(BIN, ['inspect', 'me/big'], {env: {PATH: process.env.PATH ?? '', HOME: root, HF_HOME: home, HF_ENDPOINT: server.url}})
    const exited = new Promise((resolve) => child.once('exit', resolve))
    const deadline = Date.now() + 60_000
    while (!(existsSync(partial) && statSync(partial).size >= 8 << 20) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    child.kill('SIGKILL')
    await exited
    const kept = statSync(partial).size
    expect(kept).toBeGreaterThanOrEqual(8 << 20) // at least one batch (a batch ends on a chunk boundary past 8 MiB)
    expect(kept).toBeLessThanOrEqual(STALL)
    server.stall = undefined
    const result = await drainDownload(downloadRepo('me/big', {env: {HF_HOME: home}, endpoint: server.url}))
    expect(server.downloads('me/big').filter((q) => q.path.endsWith('/model.safetensors')).map((q) => q.range)).toEqual([undefined, `bytes=${kept}-`])
    expect(sha256(readFileSync(path.join(result.path, 'model.safetensors')))).toBe(sha256(big))
  }, 120_000)

  it('a corrupted partial file is caught by the sha256 check and removed', async () => {
    server.publish('me/OpenELM-tiny', tinyFiles())
    const weights = readFileSync(path.join(TINY, 'model.safetensors'))
    const blobs = path.join(home, 'hub', 'models--me--OpenELM-tiny', 'blobs')
    mkdirSync(blobs, {recursive: true})
    writeFileSync(path.join(blobs, `${sha256(weights)}.incomplete`), Buffer.alloc(1000, 7))
    await expect(drainDownload(downloadRepo('me/OpenELM-tiny', {env: {HF_HOME: home}, endpoint: server.url}))).rejects.toThrow(/does not match its sha256/)
    expect(existsSync(path.join(blobs, `${sha256(weights)}.incomplete`))).toBe(false)
  })
})

describe('pieces', () => {
  it('picks config, weights (safetensors over .bin), tokenizer and remote code at the top level only', () => {
    expect(neededFiles(['README.md', 'config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'tokenizer.model', 'tokenizer_config.json', 'modeling_openelm.py', 'onnx/model.onnx', '.gitattributes']))
      .toEqual(['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'modeling_openelm.py', 'tokenizer.model', 'tokenizer_config.json'])
    expect(neededFiles(['config.json', 'pytorch_model.bin', 'generation_config.json'])).toEqual(['config.json', 'generation_config.json', 'pytorch_model.bin'])
  })

  it('tells repo ids from paths', () => {
    expect(isRepoId('apple/OpenELM-270M-Instruct')).toBe(true)
    for (const s of ['./x/y', 'a/b/c', '/abs/path', 'model.pt', '../up', 'a/..', 'a//b']) expect(isRepoId(s), s).toBe(false)
  })

  it('a missing path under a local folder, or named like a model file, stays a local path (no Hub request)', async () => {
    expect(await looksLocal('fixtures/nope')).toBe(true)
    expect(await looksLocal('someone/model.gguf')).toBe(true)
    expect(await looksLocal('apple/OpenELM-270M')).toBe(false)
    const run = await cli(['inspect', 'fixtures/nope'])
    expect(run.code).toBe(4)
    expect(run.stderr.trim()).toMatch(/^Error: fixtures\/nope does not exist/)
    expect(server.requests).toHaveLength(0)
  }, 60_000)

  it('renders bytes, speed and ETA', () => {
    expect(downloadLine({type: 'download', file: 'model.safetensors', bytes: 512 * 1024 * 1024, total: 1024 * 1024 * 1024, resumedFrom: 0, bytesPerSecond: 10 * 1024 * 1024, etaSeconds: 51.2, done: false}))
      .toBe('downloading model.safetensors 50% 512.00 MiB/1.00 GiB 10.00 MiB/s ETA 51s')
    expect(downloadLine({type: 'download', file: 'a.pt', bytes: 2048, total: 2048, resumedFrom: 1024, bytesPerSecond: 0, done: true}))
      .toBe('downloading a.pt 100% 2.00 KiB/2.00 KiB done (resumed at 1.00 KiB)')
  })
})
