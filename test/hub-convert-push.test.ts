/**
 * One step to the Hub: `convert --push` (conversion, then push) and the removal of stale weights
 * of an earlier push (`model*.safetensors` shards, which mlx-lm would load next to the new ones),
 * `push --delete GLOB`, `--keep-stale`; against the local Hub on 127.0.0.1.
 */
import {execFile} from 'node:child_process'
import {mkdtempSync, readFileSync, rmSync, existsSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, afterEach, beforeAll, beforeEach, describe, expect, it} from 'vitest'
import {deletions, pushFolder} from '../src/hub/push.js'
import {HubServer, startHubServer} from './helpers/hub-server.js'

const TOKEN = 'hf_convertPush_0123456789abcdef'
const BIN = path.resolve('bin/dev.js')
const TINY = path.resolve('fixtures/tiny-hf')

let root: string
let home: string
let server: HubServer

function cli(args: string[], env: Record<string, string> = {}): Promise<{code: number; stdout: string; stderr: string}> {
  return new Promise((resolve) => {
    execFile(BIN, args, {env: {PATH: process.env.PATH ?? '', HOME: root, HF_HOME: home, ...env}, timeout: 120_000}, (error, stdout, stderr) => {
      resolve({code: error ? ((error as {code?: number}).code ?? 1) : 0, stdout, stderr})
    })
  })
}

const OLD = {
  'model-00001-of-00002.safetensors': Buffer.from('old shard 1'),
  'model-00002-of-00002.safetensors': Buffer.from('old shard 2'),
  'model.safetensors.index.json': Buffer.from('{"weight_map": {}}'),
  'notes.txt': Buffer.from('keep me'),
  'extra-1.bin': Buffer.from('x'),
}

beforeAll(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'openelm-convert-push-'))
  home = mkdtempSync(path.join(root, 'hf-home-'))
})
afterAll(() => rmSync(root, {recursive: true, force: true}))
beforeEach(async () => {
  server = await startHubServer({token: TOKEN})
})
afterEach(async () => server.stop())

describe('convert --push', () => {
  it('converts, verifies, pushes the folder and removes stale shards of an earlier push in the same commit', async () => {
    server.publish('me/OpenELM-tiny-mlx', new Map(Object.entries(OLD)))
    const out = path.join(root, 'mlx')
    const run = await cli(['convert', TINY, '--to', 'mlx', '--verify', '--out', out, '--push', 'me/OpenELM-tiny-mlx', '--json'], {HF_TOKEN: TOKEN, HF_ENDPOINT: server.url})
    expect(run.code, run.stderr).toBe(0)
    const json = JSON.parse(run.stdout)
    expect(json.verify.pass).toBe(true)
    // mlx-lm folders carry their own model.safetensors.index.json: it is replaced, not deleted.
    expect(existsSync(path.join(out, 'model.safetensors.index.json'))).toBe(true)
    expect(json.push.deleted).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'])
    expect(server.commits).toHaveLength(1)
    const tree = server.tree('me/OpenELM-tiny-mlx')!
    expect([...tree.keys()].filter((f) => f.startsWith('model')).sort()).toEqual(['model.safetensors', 'model.safetensors.index.json'])
    expect(tree.get('model.safetensors.index.json')!.equals(readFileSync(path.join(out, 'model.safetensors.index.json')))).toBe(true)
    expect(tree.get('model.safetensors')!.equals(readFileSync(path.join(out, 'model.safetensors')))).toBe(true)
    expect(tree.get('config.json')!.equals(readFileSync(path.join(out, 'config.json')))).toBe(true)
    expect(tree.get('notes.txt')!.toString()).toBe('keep me')
    expect(tree.has('README.md')).toBe(true)
    expect(run.stdout + run.stderr).not.toContain(TOKEN)
  }, 240_000)

  it('refuses a bad --push, --keep-stale without --push, and a missing token before converting', async () => {
    const out = path.join(root, 'never')
    const bad = await cli(['convert', TINY, '--to', 'hf', '--out', out, '--push', 'not a repo'])
    expect(bad.code).toBe(2)
    expect(bad.stderr.trim().split('\n')).toEqual(['Error: invalid --push "not a repo" (expected OWNER/NAME, e.g. me/OpenELM-270M-mlx)'])
    const keep = await cli(['convert', TINY, '--to', 'hf', '--out', out, '--keep-stale'])
    expect(keep.code).toBe(2)
    expect(keep.stderr.trim()).toBe('Error: --keep-stale applies to --push')
    const noToken = await cli(['convert', TINY, '--to', 'hf', '--out', out, '--push', 'me/x', '--endpoint', server.url])
    expect(noToken.code).toBe(6)
    expect(noToken.stderr.trim().split('\n')).toHaveLength(1)
    expect(noToken.stderr).toContain('HF_TOKEN')
    const token = await cli(['convert', TINY, '--to', 'hf', '--out', out, '--token', TOKEN])
    expect(token.code).toBe(2)
    expect(token.stderr.trim()).toMatch(/^Error: --token applies to a Hub repo id \(or convert --push\)/)
    expect(existsSync(out)).toBe(false)
    expect(server.requests).toHaveLength(0)
  }, 120_000)
})

describe('push --delete and --keep-stale', () => {
  it('--keep-stale keeps old shards; --delete GLOB removes matches but never a file being uploaded', async () => {
    server.publish('me/tiny', new Map(Object.entries(OLD)))
    const kept = await pushFolder(TINY, {repo: 'me/tiny', token: TOKEN, endpoint: server.url, keepStale: true, env: {}})
    expect(kept.deleted).toEqual([])
    expect(server.tree('me/tiny')!.has('model-00001-of-00002.safetensors')).toBe(true)
    const removed = await pushFolder(TINY, {repo: 'me/tiny', token: TOKEN, endpoint: server.url, delete: ['extra-*', 'config*'], env: {}})
    expect(removed.deleted).toEqual(['extra-1.bin', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json'])
    const tree = server.tree('me/tiny')!
    expect([...tree.keys()].sort()).toEqual(['README.md', 'config.json', 'generation_config.json', 'model.safetensors', 'notes.txt'])
    expect(server.commits.at(-1)!.files.get('config.json')!.equals(readFileSync(path.join(TINY, 'config.json')))).toBe(true)
  })

  it('push --delete from the command line', async () => {
    server.publish('me/tiny', new Map(Object.entries(OLD)))
    const run = await cli(['push', TINY, '--repo', 'me/tiny', '--delete', 'notes.txt', '--delete', 'extra-*', '--keep-stale', '--token', TOKEN, '--endpoint', server.url])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toContain('deleted extra-1.bin, notes.txt')
    const tree = server.tree('me/tiny')!
    expect(tree.has('notes.txt')).toBe(false)
    expect(tree.has('model-00002-of-00002.safetensors')).toBe(true)
  }, 120_000)

  it('push --dry-run --delete sends nothing and says the deletions are decided at push time', async () => {
    const run = await cli(['push', TINY, '--repo', 'me/tiny', '--delete', 'notes.txt', '--dry-run'])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr.trim().split('\n').at(-1)).toBe('note: which remote files --delete removes is decided at push time: a dry run makes no request')
    expect(server.requests).toHaveLength(0)
  }, 60_000)

  it('picks stale weights only', () => {
    expect(deletions(['model.safetensors', 'model-00001-of-00003.safetensors', 'weights.safetensors', 'sub/model-1.safetensors', 'model.safetensors.index.json', 'README.md'], new Set(['model.safetensors', 'README.md']), {}))
      .toEqual(['model-00001-of-00003.safetensors', 'model.safetensors.index.json'])
    expect(deletions(['model-1.safetensors'], new Set(), {keepStale: true})).toEqual([])
  })
})
