/**
 * The tokenizer's speed and the full agreement sweep (test/tokenizer.test.ts runs a slice of it).
 *   npx tsx bench/tokenizer.ts [--sweep]
 * Speed: the built-in LLaMA-2 tokenizer on the held-out Brown text (about 490 KB), best of 3: the
 * whole text as one string (SentencePiece treats it as one sequence), line by line, and decoding.
 * --sweep: every Brown line (held-out and training) encoded by python3-sentencepiece from our
 * tokenizer.model vs our encoder, and 20,000 whitespace-heavy random strings through a
 * tokenizer.json with Meta's merges vs tokenizer.model. Prints mismatch counts (expected 0).
 */
import {spawnSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import llamaTokenizerJs from 'llama-tokenizer-js'
import {brownDocuments, heldOutText} from '../src/text/corpus.js'
import {createTokenizer, llama2Tokenizer, modelFromTokenizerJson, tokenizerJson, writeSentencePieceModel} from '../src/tokenizer/index.js'

const root = path.resolve(import.meta.dirname, '..')
const t = await llama2Tokenizer()
const text = heldOutText()
const bytes = Buffer.byteLength(text)
const lines = text.split('\n')

/** Best of 3 wall-clock and CPU (user+sys) seconds: on a shared machine CPU time is the steadier figure. */
function best(run: () => void): {wall: number; cpu: number} {
  let wall = Infinity
  let cpu = Infinity
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now()
    const c0 = process.cpuUsage()
    run()
    const c = process.cpuUsage(c0)
    wall = Math.min(wall, (performance.now() - t0) / 1000)
    cpu = Math.min(cpu, (c.user + c.system) / 1e6)
  }
  return {wall, cpu}
}

const ids = t.encode(text)
const mb = bytes / 1e6
const show = (what: string, r: {wall: number; cpu: number}, extra = '') =>
  console.log(`${what}: ${r.wall.toFixed(3)} s wall, ${r.cpu.toFixed(3)} s CPU = ${(mb / r.wall).toFixed(2)} MB/s wall, ${(mb / r.cpu).toFixed(2)} MB/s CPU${extra}`)
console.log(`held-out Brown text: ${bytes} bytes, ${lines.length} lines, ${ids.length} tokens (${(bytes / ids.length).toFixed(2)} bytes/token); load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`)
const whole = best(() => t.encode(text))
show('encode, one string', whole, `, ${Math.round(ids.length / whole.cpu)} tokens/s CPU`)
show('encode, line by line', best(() => lines.forEach((l) => t.encode(l))))
show('decode', best(() => t.decode(ids)), `; round trip ${t.decode(ids) === text ? 'exact' : 'DIFFERS'}`)

if (process.argv.includes('--sweep')) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-tokenizer-bench-'))
  try {
    const file = path.join(dir, 'llama2.model')
    await fs.writeFile(file, writeSentencePieceModel(t.model))
    const all = brownDocuments().flatMap((d) => d.text.split('\n'))
    const r = spawnSync('/usr/bin/python3', [path.join(root, 'test/python/spm_check.py'), file], {input: JSON.stringify({encode: all}), maxBuffer: 1 << 30, encoding: 'utf8'})
    if (r.status !== 0) throw new Error(r.stderr)
    const py = JSON.parse(r.stdout) as {encode: number[][]; version: string}
    const bad = all.filter((l, i) => JSON.stringify(t.encode(l, {addBos: false})) !== JSON.stringify(py.encode[i])).length
    console.log(`python3-sentencepiece ${py.version} vs ours on all ${all.length} Brown lines (${Buffer.byteLength(all.join('\n'))} bytes): ${bad} mismatches`)

    const json = tokenizerJson(t.model) as {model: {merges: unknown}}
    json.model.merges = [...llamaTokenizerJs.merges.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k)
    const hf = createTokenizer(modelFromTokenizerJson(json), 'tokenizer.json')
    let state = 5
    const rnd = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648
    const alphabet = [' ', ' ', ' ', ' ', '\n', '\t', 'a', 'b', 'Hello', 'the', '▁', 'é', '日', '😀', '.']
    let fuzzBad = 0
    for (let i = 0; i < 20000; i++) {
      let s = ''
      for (let n = 1 + Math.floor(rnd() * 40); n > 0; n--) s += alphabet[Math.floor(rnd() * alphabet.length)]
      if (JSON.stringify(hf.encode(s)) !== JSON.stringify(t.encode(s))) fuzzBad++
    }
    console.log(`tokenizer.json (Meta's merges) vs tokenizer.model on 20000 random whitespace-heavy strings: ${fuzzBad} mismatches`)
  } finally {
    await fs.rm(dir, {recursive: true, force: true})
  }
}
