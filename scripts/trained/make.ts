/**
 * Rebuild fixtures/trained: a tiny OpenELM trained on the Brown corpus's training split
 * (`npm run fixtures:trained`, about 10 CPU-minutes; deterministic on one thread).
 *
 * This script fixes the architecture (CoreNet's layer-wise scaling at model_dim 128) and the text;
 * scripts/trained/train.py (Debian's torch, CPU) trains the SentencePiece tokenizer and the model.
 * The held-out documents (src/text/corpus.ts) are never seen by either.
 */
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {mkdir, rename} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {spawnSync} from 'node:child_process'
import {deriveConfig, generationConfigJson, toHfConfigJson} from '../../src/model/config.js'
import {heldOutDocuments, trainingDocuments} from '../../src/text/corpus.js'
import {TRAINED_SHAPE} from './shape.js'

const root = path.resolve(import.meta.dirname, '..', '..')
const out = path.join(root, 'fixtures', 'trained')
const work = mkdtempSync(path.join(tmpdir(), 'openelm-train-'))
try {
  const config = deriveConfig(TRAINED_SHAPE)
  writeFileSync(path.join(work, 'config.json'), JSON.stringify(toHfConfigJson(config, 'F32'), null, 2) + '\n')
  writeFileSync(path.join(work, 'generation_config.json'), JSON.stringify(generationConfigJson(config), null, 2) + '\n')
  // One document per line group: paragraphs are lines, documents separated by an empty line.
  const dump = (docs: {text: string}[]) => docs.map((d) => d.text).join('\n\n') + '\n'
  writeFileSync(path.join(work, 'train.txt'), dump(trainingDocuments()))
  writeFileSync(path.join(work, 'heldout.txt'), dump(heldOutDocuments()))
  const python = process.env.OPENELM_PYTHON ?? '/usr/bin/python3'
  const run = spawnSync(python, [path.join(import.meta.dirname, 'train.py'), work, ...process.argv.slice(2)], {stdio: 'inherit'})
  if (run.status !== 0) throw new Error(`train.py failed (exit ${run.status})`)
  await mkdir(path.dirname(out), {recursive: true})
  rmSync(out, {recursive: true, force: true})
  const staged = path.join(work, 'out')
  await rename(staged, out).catch(() => {
    // Different filesystems: copy instead.
    spawnSync('cp', ['-r', staged, out], {stdio: 'inherit'})
  })
  console.log('fixtures/trained written')
} finally {
  rmSync(work, {recursive: true, force: true})
}
