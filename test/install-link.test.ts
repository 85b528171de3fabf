/**
 * The README's install-from-a-clone path, run as written: `npm link` (the same symlinks `npm install -g .`
 * makes) into a throwaway prefix, offline, then `openelm --version` found on PATH from another folder.
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {existsSync, mkdtempSync, readFileSync, realpathSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'

const ROOT = path.resolve('.')
const prefix = mkdtempSync(path.join(tmpdir(), 'openelm-link-'))
afterAll(() => rmSync(prefix, {recursive: true, force: true}))

describe('install from a clone', () => {
  it('README names the command, and `npm link` puts a working `openelm` on PATH', () => {
    const readme = readFileSync('README.md', 'utf8')
    expect(readme).toContain('npm link')
    expect(readme).toContain('ONNXRUNTIME_NODE_INSTALL=skip')
    if (!existsSync(path.join(ROOT, 'dist', 'commands'))) execFileSync('npm', ['run', 'build'], {cwd: ROOT, stdio: 'ignore'})
    const env = {...process.env, npm_config_prefix: prefix, ONNXRUNTIME_NODE_INSTALL: 'skip'}
    execFileSync('npm', ['link', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], {cwd: ROOT, env, stdio: 'ignore'})
    const bin = path.join(prefix, 'bin', 'openelm')
    expect(realpathSync(bin)).toBe(realpathSync(path.join(ROOT, 'bin', 'run.js')))
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as {version: string}
    const run = spawnSync('openelm', ['--version'], {cwd: prefix, encoding: 'utf8', env: {...process.env, PATH: `${path.join(prefix, 'bin')}${path.delimiter}${process.env.PATH}`, NODE_ENV: 'production'}})
    expect(run.status).toBe(0)
    expect(run.stdout).toMatch(new RegExp(`^openelm/${pkg.version.replaceAll('.', '\\.')} `))
  }, 180_000)
})
