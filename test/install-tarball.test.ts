/**
 * The install path the CI example uses, run as written: `npm pack` the clone, then
 * `npm install -g --prefix TMP --offline TARBALL` (dependencies from the local npm cache, no
 * network), and `openelm --version` from PATH in another folder. npm prints no "Unknown project
 * config" warning (the project skips onnxruntime-node's CUDA download through package.json's
 * `allowScripts`, a field npm knows, not an .npmrc key it does not).
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {existsSync, mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'

const ROOT = path.resolve('.')
const work = mkdtempSync(path.join(tmpdir(), 'openelm-tarball-'))
afterAll(() => rmSync(work, {recursive: true, force: true}))

/** npm without vitest's NODE_ENV=test (oclif would look for TypeScript sources). */
function npm(args: string[], cwd: string, env: Record<string, string> = {}) {
  return spawnSync('npm', args, {cwd, encoding: 'utf8', env: {...process.env, NODE_ENV: 'production', ...env}, timeout: 300_000})
}

describe('install from a packed tarball', () => {
  it('the project skips onnxruntime-node\'s download with a setting npm knows: no .npmrc key, allowScripts denies it', () => {
    expect(existsSync(path.join(ROOT, '.npmrc')) && readFileSync(path.join(ROOT, '.npmrc'), 'utf8').includes('onnxruntime-node-install')).toBe(false)
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {allowScripts?: Record<string, boolean>}
    expect(pkg.allowScripts?.['onnxruntime-node']).toBe(false)
  })

  it('npm pack, npm install -g --prefix TMP --offline TARBALL, then `openelm --version` on PATH', () => {
    if (!existsSync(path.join(ROOT, 'dist', 'commands'))) execFileSync('npm', ['run', 'build'], {cwd: ROOT, stdio: 'ignore'})
    // The clone is already built (prepare ran at npm ci): pack what is there.
    const pack = npm(['pack', '--ignore-scripts', '--json', '--pack-destination', work], ROOT)
    expect(pack.status, pack.stderr).toBe(0)
    expect(pack.stderr).not.toMatch(/Unknown (project|user|global) config/)
    const [packed] = JSON.parse(pack.stdout) as {filename: string; files: {path: string}[]}[]
    const files = packed!.files.map((f) => f.path)
    for (const needed of ['bin/run.js', 'dist/commands/convert.js', 'oclif.manifest.json', 'package.json']) expect(files).toContain(needed)
    const tarball = path.join(work, packed!.filename)
    // The README and the CI example name the file npm pack really makes.
    expect(readFileSync(path.join(ROOT, 'README.md'), 'utf8')).toContain(`npm pack && ONNXRUNTIME_NODE_INSTALL=skip npm install -g ./${packed!.filename}`)
    expect(readFileSync(path.join(ROOT, 'examples/github-actions-roundtrip.yml'), 'utf8')).toContain(`OPENELM_PACKAGE: ./${packed!.filename}\n`)

    const prefix = path.join(work, 'prefix')
    // Outside this project, onnxruntime-node's own switch (what the README tells installers to set).
    const install = npm(['install', '-g', '--prefix', prefix, '--offline', '--no-audit', '--no-fund', tarball], work, {ONNXRUNTIME_NODE_INSTALL: 'skip'})
    expect(install.status, install.stderr).toBe(0)
    expect(install.stderr).not.toMatch(/Unknown (project|user|global) config/)

    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {version: string}
    const elsewhere = mkdtempSync(path.join(work, 'elsewhere-'))
    const run = spawnSync('openelm', ['--version'], {cwd: elsewhere, encoding: 'utf8', env: {...process.env, PATH: `${path.join(prefix, 'bin')}${path.delimiter}${process.env.PATH}`, NODE_ENV: 'production'}})
    expect(run.status, run.stderr).toBe(0)
    expect(run.stdout).toMatch(new RegExp(`^openelm/${pkg.version.replaceAll('.', '\\.')} `))
    // The installed copy, not the clone: its package lives under the prefix.
    expect(existsSync(path.join(prefix, 'lib', 'node_modules', 'openelm', 'dist', 'commands', 'convert.js'))).toBe(true)
  }, 300_000)
})
