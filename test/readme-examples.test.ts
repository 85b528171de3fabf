/**
 * The README's example outputs are the commands' real output (`npm run readme` writes them): the
 * Quick start job as the Quick start spells it, `inspect`, `roundtrip` and `push --dry-run`, run
 * in-process now and compared with the README (only the verify report's size, which holds step
 * timings, is masked).
 */
import {readFileSync} from 'node:fs'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {comparable, EXAMPLES, quickstartArgv, renderExamples, withExamples} from '../scripts/readme.js'

const README = path.resolve(import.meta.dirname, '../README.md')

describe('README examples', () => {
  it('are what the commands print today', async () => {
    const current = readFileSync(README, 'utf8')
    expect(quickstartArgv(current)).toEqual(['convert', 'fixtures/trained', '--to', 'mlx', '--quantize', '4', '--verify', '--force', '--out', '/tmp/openelm-demo'])
    const blocks = await renderExamples(current)
    expect([...blocks.keys()]).toEqual(EXAMPLES.map((e) => e.name))
    expect(blocks.get('quickstart')).toMatch(/^```\nfixtures\/trained \(hf, F32\) → \/tmp\/openelm-demo \(mlx, F16, 4-bit\)\n[\s\S]*\nPASS \(exact\)\n```$/)
    expect(blocks.get('inspect')).toMatch(/^```\n\$ openelm inspect fixtures\/corenet\/training_checkpoint\.pt\n[\s\S]*  size {8}618\.50 KiB stored, files /)
    expect(blocks.get('push')).toMatch(/dry run: \d+ files, [\d.]+ \w+ would be pushed to me\/OpenELM-tiny-mlx-4bit at https:\/\/huggingface\.co; nothing was sent\n```$/)
    // No temp path leaks into the README.
    for (const block of blocks.values()) expect(block).not.toMatch(/openelm-readme-/)
    expect(comparable(withExamples(current, blocks))).toBe(comparable(current))
  }, 120_000)

  it('masks only the verify report\'s size when comparing', () => {
    const text = 'openelm-verify.json            26.81 KiB  regular\nconfig.json                     1.18 KiB  regular'
    expect(comparable(text)).toBe('openelm-verify.json            <size>  regular\nconfig.json                     1.18 KiB  regular')
  })
})
