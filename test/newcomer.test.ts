/**
 * The tool as a new user meets it: pack it, install the tarball in an empty folder, run --help,
 * the README's Quick start job, and the commands of the shipped GitHub Actions workflow.
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {promises as fs, readFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

const repo = path.resolve(import.meta.dirname, '..')
let work: string
let project: string
let tarball: string

function sh(command: string, cwd: string, env: Record<string, string> = {}) {
  // NODE_ENV=test (set by vitest) would make oclif look for TypeScript sources.
  return spawnSync('bash', ['-c', command], {cwd, env: {...process.env, NODE_ENV: 'production', ...env}, encoding: 'utf8', timeout: 240_000})
}

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-newcomer-'))
  project = path.join(work, 'project')
  await fs.mkdir(project)
  const packed = execFileSync('npm', ['pack', '--silent', '--pack-destination', work], {cwd: repo, encoding: 'utf8'}).trim().split('\n').pop()!
  tarball = path.join(work, packed)
  await fs.writeFile(path.join(project, 'package.json'), JSON.stringify({name: 'newcomer', version: '1.0.0', private: true}))
  // onnxruntime-node's install script would try to download CUDA files (see README).
  await fs.writeFile(path.join(project, '.npmrc'), 'onnxruntime-node-install=skip\n')
  const install = sh(`npm install --no-audit --no-fund --prefer-offline ${JSON.stringify(tarball)}`, project)
  expect(install.status, install.stderr).toBe(0)
}, 300_000)

afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('a newcomer installing the packed tool', () => {
  it('shows help listing every command', () => {
    const help = sh('npx openelm --help', project)
    expect(help.status).toBe(0)
    for (const command of ['convert', 'inspect', 'roundtrip', 'synth']) expect(help.stdout).toContain(command)
  })

  it('a mistyped command through the installed bin (bin/run.js, dist/): one line with the nearest command, exit 2', () => {
    const run = sh('npx openelm conver node_modules/openelm/fixtures/tiny-hf', project)
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
    const job = commands[0]!.replace(/^npm ci && /, '').replaceAll('fixtures/', 'node_modules/openelm/fixtures/').replaceAll('/tmp/openelm-demo', path.join(work, 'demo'))
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
    await fs.writeFile(path.join(ci, '.npmrc'), 'onnxruntime-node-install=skip\n')
    await fs.writeFile(path.join(ci, 'package.json'), JSON.stringify({name: 'ci', version: '1.0.0', private: true}))
    const env = {CHECKPOINT: path.join(repo, 'fixtures/tiny-hf'), OPENELM_PACKAGE: tarball, npm_config_prefer_offline: 'true'}
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
