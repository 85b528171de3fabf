/**
 * The tool as a new user meets it, installed the way the README says (`npm pack`, then
 * `npm install -g` of the tarball, here into a temporary prefix, from the npm cache where it can:
 * `--prefer-offline`, since `npm ci` may leave only abbreviated packuments there): npm prints no
 * config warning, `openelm` is on PATH in any folder, --help, a mistyped command, the README's
 * Quick start job, and the commands of the shipped GitHub Actions workflow.
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {existsSync, promises as fs, readFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

const repo = path.resolve(import.meta.dirname, '..')
let work: string
let project: string
let tarball: string
let prefix: string
let installed: string
let installStderr: string

/** A shell with the prefix's bin first on PATH (as after `npm install -g`). */
function sh(command: string, cwd: string, env: Record<string, string> = {}) {
  // NODE_ENV=test (set by vitest) would make oclif look for TypeScript sources.
  // npm_config_prefix: npx finds the globally installed package there, as it would in npm's own prefix.
  const PATH = `${path.join(prefix, 'bin')}${path.delimiter}${process.env.PATH}`
  return spawnSync('bash', ['-c', command], {cwd, env: {...process.env, NODE_ENV: 'production', PATH, npm_config_prefix: prefix, ...env}, encoding: 'utf8', timeout: 240_000})
}

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-newcomer-'))
  prefix = path.join(work, 'prefix')
  project = path.join(work, 'elsewhere')
  await fs.mkdir(project)
  const packed = execFileSync('npm', ['pack', '--silent', '--pack-destination', work], {cwd: repo, encoding: 'utf8'}).trim().split('\n').pop()!
  tarball = path.join(work, packed)
  // The README's line; onnxruntime-node's own switch skips its CUDA download (see README).
  expect(readFileSync(path.join(repo, 'README.md'), 'utf8')).toContain(`npm pack && ONNXRUNTIME_NODE_INSTALL=skip npm install -g ./${packed}`)
  const install = sh(`npm install -g --prefix ${JSON.stringify(prefix)} --prefer-offline --no-audit --no-fund ${JSON.stringify(tarball)}`, work, {ONNXRUNTIME_NODE_INSTALL: 'skip'})
  expect(install.status, install.stderr).toBe(0)
  installStderr = install.stderr
  installed = path.join(prefix, 'lib', 'node_modules', 'openelm')
}, 300_000)

afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('a newcomer installing the packed tool', () => {
  it('the clone skips onnxruntime-node\'s CUDA download with a setting npm knows (package.json allowScripts), not an .npmrc key npm 11 warns about', () => {
    const npmrc = path.join(repo, '.npmrc')
    expect(existsSync(npmrc) && readFileSync(npmrc, 'utf8').includes('onnxruntime-node-install')).toBe(false)
    const pkg = JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')) as {allowScripts?: Record<string, boolean>}
    expect(pkg.allowScripts?.['onnxruntime-node']).toBe(false)
  })

  it('npm says nothing about unknown config; `openelm --version` on PATH is the installed copy', () => {
    expect(installStderr).not.toMatch(/Unknown (project|user|global) config/)
    const pkg = JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')) as {version: string}
    const run = sh('command -v openelm && openelm --version', project)
    expect(run.status, run.stderr).toBe(0)
    expect(run.stdout.split('\n')[0]).toBe(path.join(prefix, 'bin', 'openelm'))
    expect(run.stdout.split('\n')[1]).toMatch(new RegExp(`^openelm/${pkg.version.replaceAll('.', '\\.')} `))
  })

  it('shows help listing every command', () => {
    const help = sh('openelm --help', project)
    expect(help.status).toBe(0)
    for (const command of ['convert', 'inspect', 'roundtrip', 'synth']) expect(help.stdout).toContain(command)
  })

  it('a mistyped command through the installed bin (bin/run.js, dist/): one line with the nearest command, exit 2', () => {
    const run = sh(`openelm conver ${path.join(installed, 'fixtures/tiny-hf')}`, project)
    expect(run.status).toBe(2)
    expect(run.stdout).toBe('')
    expect(run.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('npm warn'))).toEqual(['Error: unknown command "conver" — did you mean "convert"? (see openelm --help)'])
  })

  it('runs the Quick start job from the README', () => {
    const readme = readFileSync(path.join(repo, 'README.md'), 'utf8')
    const block = /## Quick start\s+```sh\n([\s\S]*?)```/.exec(readme)
    expect(block).not.toBeNull()
    const commands = block![1]!.trim().split('\n')
    expect(commands).toHaveLength(2)
    // The first command is `npm ci && <job>`: the install already happened from the tarball.
    const job = commands[0]!.replace(/^npm ci && /, '').replaceAll('fixtures/', `${installed}/fixtures/`).replaceAll('/tmp/openelm-demo', path.join(work, 'demo'))
    const run = sh(job, project)
    expect(run.status, run.stderr).toBe(0)
    expect(run.stderr).not.toMatch(/at .*\.js:\d+/)
  })

  it('runs the commands of the shipped GitHub Actions workflow', async () => {
    const workflow = readFileSync(path.join(repo, 'examples/github-actions-roundtrip.yml'), 'utf8')
    const steps = [...workflow.matchAll(/^\s+- run: (.+)$/gm)].map((m) => m[1]!)
    expect(steps.length).toBeGreaterThanOrEqual(3)
    const ci = path.join(work, 'ci')
    await fs.mkdir(ci)
    await fs.writeFile(path.join(ci, 'package.json'), JSON.stringify({name: 'ci', version: '1.0.0', private: true}))
    // The workflow's env: block (ONNXRUNTIME_NODE_INSTALL: skip, as the README says for installs outside this clone).
    expect(workflow).toMatch(/^\s+ONNXRUNTIME_NODE_INSTALL: skip$/m)
    const env = {CHECKPOINT: path.join(repo, 'fixtures/tiny-hf'), OPENELM_PACKAGE: tarball, npm_config_prefer_offline: 'true', ONNXRUNTIME_NODE_INSTALL: 'skip'}
    const outputs: string[] = []
    for (const step of steps) {
      const run = sh(step, ci, env)
      expect(run.status, `${step}\n${run.stderr}`).toBe(0)
      outputs.push(run.stdout)
    }
    const report = JSON.parse(await fs.readFile(path.join(ci, 'roundtrip.json'), 'utf8'))
    expect(report.pass).toBe(true)
    expect(report.hops.length).toBeGreaterThan(0)
    expect(outputs.at(-1)).toMatch(/ ok$/m)
  })
})
