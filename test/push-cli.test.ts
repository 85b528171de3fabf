/**
 * `openelm push` as a user runs it (spawned `bin/dev.js`) against the local Hub on 127.0.0.1:
 * output, exit codes, --json, --dry-run sending nothing, and the token never on stdout/stderr.
 */
import {execFile} from 'node:child_process'
import {cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, afterEach, beforeAll, beforeEach, describe, expect, it} from 'vitest'
import {HubServer, startHubServer} from './helpers/hub-server.js'

const TOKEN = 'hf_cliSecretToken_0123456789abcdef'
const BIN = path.resolve('bin/dev.js')

let root: string
let folder: string
let emptyHome: string
let server: HubServer

interface Run {
  code: number
  stdout: string
  stderr: string
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const childEnv: Record<string, string> = {PATH: process.env.PATH ?? '', HOME: root, HF_HOME: emptyHome, ...env}
    execFile(BIN, args, {env: childEnv, cwd: path.resolve('.'), timeout: 60_000}, (error, stdout, stderr) => {
      resolve({code: error ? ((error as {code?: number}).code ?? 1) : 0, stdout, stderr})
    })
  })
}

beforeAll(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'openelm-push-cli-'))
  folder = path.join(root, 'OpenELM-tiny')
  cpSync(path.resolve('fixtures/tiny-hf'), folder, {recursive: true})
  emptyHome = path.join(root, 'empty-hf-home')
  mkdirSync(emptyHome)
})
afterAll(() => rmSync(root, {recursive: true, force: true}))
beforeEach(async () => {
  server = await startHubServer({token: TOKEN})
})
afterEach(async () => server.stop())

describe('openelm push', () => {
  it('pushes with --token and prints the commit URL; the token is never printed', async () => {
    const run = await cli(['push', folder, '--repo', 'me/OpenELM-tiny', '--token', TOKEN, '--endpoint', server.url, '--commit-message', 'first'])
    expect(run.code, run.stderr).toBe(0)
    const commit = server.commits[0]!
    expect(commit.summary).toBe('first')
    expect(run.stdout).toContain(`commit: ${server.url}/me/OpenELM-tiny/commit/${commit.oid}`)
    expect(run.stdout).toMatch(/model\.safetensors\s+613\.91 KiB\s+LFS/)
    expect(run.stdout + run.stderr).not.toContain(TOKEN)
  })

  it('--json prints the commit and PR URLs and the file list, reading HF_TOKEN and HF_ENDPOINT', async () => {
    const run = await cli(['push', folder, '--repo', 'me/OpenELM-tiny', '--create-pr', '--json'], {HF_TOKEN: TOKEN, HF_ENDPOINT: server.url})
    expect(run.code, run.stderr).toBe(0)
    const json = JSON.parse(run.stdout) as {commitUrl: string; pullRequestUrl: string; files: {path: string; bytes: number; lfs: boolean}[]}
    expect(json.commitUrl).toBe(`${server.url}/me/OpenELM-tiny/commit/${server.commits[0]!.oid}`)
    expect(json.pullRequestUrl).toBe(`${server.url}/me/OpenELM-tiny/discussions/1`)
    expect(json.files.map((f) => [f.path, f.lfs])).toEqual([['README.md', false], ['config.json', false], ['generation_config.json', false], ['model.safetensors', true]])
    expect(run.stdout + run.stderr).not.toContain(TOKEN)
  })

  it('reads the token file under $HF_HOME', async () => {
    const home = path.join(root, 'hf-home-with-token')
    mkdirSync(home, {recursive: true})
    writeFileSync(path.join(home, 'token'), `${TOKEN}\n`)
    const run = await cli(['push', folder, '--repo', 'me/from-file', '--endpoint', server.url], {HF_HOME: home})
    expect(run.code, run.stderr).toBe(0)
    expect(server.repos.has('me/from-file')).toBe(true)
    expect(run.stdout + run.stderr).not.toContain(TOKEN)
  })

  it('fails fast on a rejected token: one line, exit 6, no commit, token not shown', async () => {
    const bad = 'hf_rejectedTokenValue_777'
    const run = await cli(['push', folder, '--repo', 'me/OpenELM-tiny', '--token', bad, '--endpoint', server.url])
    expect(run.code).toBe(6)
    expect(run.stderr.trim().split('\n').filter((l) => l.startsWith('Error:'))).toEqual([expect.stringMatching(/^Error: checking the token \(whoami\) failed: HTTP 401: Invalid credentials/)])
    expect(run.stdout + run.stderr).not.toContain(bad)
    expect(server.requests).toHaveLength(1)
    expect(server.commits).toHaveLength(0)
  })

  it('--dry-run lists files and sizes and sends no request', async () => {
    const run = await cli(['push', folder, '--repo', 'me/OpenELM-tiny', '--dry-run', '--endpoint', server.url, '--token', TOKEN])
    expect(run.code, run.stderr).toBe(0)
    expect(server.requests).toHaveLength(0)
    expect(run.stdout).toMatch(/README\.md \(generated\)\s+\d+(\.\d+)? (B|KiB)\s+regular/)
    expect(run.stdout).toMatch(/config\.json\s+989 B\s+regular/)
    expect(run.stdout).toContain('nothing was sent')
  })

  it('takes repeatable --include/--exclude before or after the folder', async () => {
    const run = await cli(['push', '--include', '*.json', '--include', '*.md', folder, '--repo', 'me/OpenELM-tiny', '--exclude', 'gen*', '--dry-run', '--json'])
    expect(run.code, run.stderr).toBe(0)
    expect((JSON.parse(run.stdout) as {files: {path: string}[]}).files.map((f) => f.path)).toEqual(['README.md', 'config.json'])
    expect(server.requests).toHaveLength(0)
  })

  it('says where a token is looked for when none is found', async () => {
    const run = await cli(['push', folder, '--repo', 'me/OpenELM-tiny', '--endpoint', server.url])
    expect(run.code).toBe(6)
    expect(run.stderr.trim().split('\n').filter((l) => l.startsWith('Error:'))).toEqual([
      `Error: no Hugging Face token found: pass --token, set HF_TOKEN, or write a token to ${path.join(emptyHome, 'token')} (run "hf auth login")`,
    ])
    expect(server.requests).toHaveLength(0)
  })

  it('push model.gguf uploads that one file under its name, as `hf upload` does, leaving the rest of the repo', async () => {
    const {convert} = await import('../src/convert.js')
    const {drain} = await import('../src/progress.js')
    const gguf = path.join(root, 'model-f16.gguf')
    await drain(convert(folder, 'gguf', gguf, {}, {dtype: 'F16'}))
    const readme = Buffer.from('# my card\n')
    const weights = readFileSync(path.join(folder, 'model.safetensors'))
    server.publish('me/OpenELM-tiny', new Map([['README.md', readme], ['model.safetensors', weights]]))
    const before = server.commits.length
    const run = await cli(['push', gguf, '--repo', 'me/OpenELM-tiny', '--token', TOKEN, '--endpoint', server.url])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toContain(`${gguf} is one file: uploading it as model-f16.gguf at the root of me/OpenELM-tiny`)
    expect(run.stdout).toMatch(/model-f16\.gguf\s+[\d.]+ KiB\s+LFS/)
    expect(run.stdout).toContain('pushed 1 file,')
    expect(server.commits.length).toBe(before + 1)
    const tree = server.tree('me/OpenELM-tiny')!
    expect([...tree.keys()].filter((k) => k !== '.gitattributes').sort()).toEqual(['README.md', 'model-f16.gguf', 'model.safetensors'])
    expect(tree.get('model-f16.gguf')!.equals(readFileSync(gguf))).toBe(true)
    expect(tree.get('README.md')!.equals(readme)).toBe(true)
    expect(tree.get('model.safetensors')!.equals(weights)).toBe(true)
  }, 120_000)

  it('rejects a malformed --repo as a usage error', async () => {
    const run = await cli(['push', folder, '--repo', 'just-a-name', '--dry-run'])
    expect(run.code).toBe(2)
    expect(run.stderr).toContain('invalid --repo "just-a-name" (expected OWNER/NAME')
  })
})

describe('push of a folder whose verification failed', () => {
  it('is refused (exit 5, one line, nothing sent) unless --allow-failed-verify, and then the card warns', async () => {
    const failed = path.join(root, 'OpenELM-tiny-failed')
    cpSync(folder, failed, {recursive: true})
    writeFileSync(path.join(failed, 'openelm-verify.json'), JSON.stringify({pass: false, verdict: 'exact', failures: ['layers.0.attn.qkv_proj.weight: 12 blocks differ']}))
    const refused = await cli(['push', failed, '--repo', 'me/failed', '--token', TOKEN, '--endpoint', server.url])
    expect(refused.code).toBe(5)
    expect(refused.stderr.trim().split('\n')).toHaveLength(1)
    expect(refused.stderr).toMatch(/failed verification \(openelm-verify\.json says FAIL\): not pushing it; .*--allow-failed-verify/)
    expect(server.commits).toHaveLength(0)
    const allowed = await cli(['push', failed, '--repo', 'me/failed', '--token', TOKEN, '--endpoint', server.url, '--allow-failed-verify'])
    expect(allowed.code, allowed.stderr).toBe(0)
    expect(allowed.stderr).toContain('FAILED verification: pushing it because of --allow-failed-verify')
    const card = server.commits[0]!.files.get('README.md')!.toString('utf8')
    expect(card).toContain('**Warning: this model FAILED verification**')
    expect(card).toContain('**Result: FAIL**')
    // A passing report pushes without the flag and without the warning.
    writeFileSync(path.join(failed, 'openelm-verify.json'), JSON.stringify({pass: true, verdict: 'exact'}))
    const ok = await cli(['push', failed, '--repo', 'me/failed', '--token', TOKEN, '--endpoint', server.url])
    expect(ok.code, ok.stderr).toBe(0)
    expect(server.commits[1]!.files.get('README.md')!.toString('utf8')).not.toContain('FAILED verification')
  })
})
