/** The README stays true: its command reference is generated from the command classes. */
import {readFileSync} from 'node:fs'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {updatedReadme} from '../scripts/readme.js'

describe('README', () => {
  it('documents every command and flag as the CLI defines them (npm run readme)', async () => {
    const {current, next} = await updatedReadme()
    expect(current).toBe(next)
    for (const command of ['inspect', 'convert', 'verify', 'roundtrip', 'push', 'synth']) expect(current).toContain(`### \`openelm ${command}`)
  })

  it('has a Quick start with exactly two commands: the main job, then the tests', () => {
    const readme = readFileSync(path.resolve(import.meta.dirname, '../README.md'), 'utf8')
    const block = /## Quick start\s+```sh\n([\s\S]*?)```/.exec(readme)
    const commands = block![1]!.trim().split('\n')
    expect(commands).toHaveLength(2)
    expect(commands[0]).toMatch(/^npm ci && npx openelm convert .+ --to mlx --quantize 4 --verify/)
    expect(commands[1]).toBe('npm test')
  })
})
