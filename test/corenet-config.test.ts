/** `--config`: the YAML subset parser and CoreNet training configs → OpenELM configs. */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {ConfigError} from '../src/errors.js'
import {configFromCorenetYaml, loadConfigFile, presetFromModelName} from '../src/formats/corenet/config.js'
import {parseYaml} from '../src/formats/corenet/yaml.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {presetConfig} from '../src/model/presets.js'

const repo = path.resolve(import.meta.dirname, '..')

/** Shaped like corenet/projects/openelm/pretraining_configs/openelm_270M.yaml (trimmed). */
const CORENET_YAML = `
# pytest: disable
taskname: '+ OpenELM-270M'

_anchor_context_length: &_anchor_context_length 2048
# actual vocab size is 32001 after adding padding token, so we add few extra tokens
_anchor_vocab_size: &_anchor_vocab_size 32128
_anchor_padding_index: &_anchor_padding_index 32000
common:
  run_label: "train"
  log_freq: 500
  mixed_precision: true
  mixed_precision_dtype: "bfloat16"
dataset:
  root_train: ""
  disable_val: true
  language_modeling:
    sequence_length: 2048
    min_tokens_per_text: 0
    shuffle_data: true
    general_lm:
      train_data_info: [
        {
          "file_name": "$RAW_DATA/pile/train/{0..49}.jsonl.gz",
          "text_key": "text",
          "file_id_range": [0, 50],
        },
      ]
text_tokenizer:
  name: "sentence_piece"
  sentence_piece:
    enable_nfc_normalization: true
    append_sot_token: true
    model_path: "https://docs-assets.developer.apple.com/ml-research/models/corenet/v0.1.0/openelm/tokenizer.model"
loss:
  category: "language_modeling"
  language_modeling:
    name: "cross_entropy_for_kv_prediction"
optim:
  name: "adamw"
  weight_decay: 0.1
  no_decay_bn_filter_parameters: true
  adamw:
    beta1: 0.9
    beta2: 0.95
    eps: 1.e-8
scheduler:
  is_iteration_based: true
  max_iterations: 350000
  name: cosine
  cosine:
    max_lr: 0.0053
    min_lr: 0.00053
model:
  activation_checkpointing: true
  language_modeling:
    name: "general_gpt"
    general_gpt:
      model_name: "OpenELM-270M"
      vocab_size: *_anchor_vocab_size
      max_context_length: *_anchor_context_length
      padding_index: *_anchor_padding_index
stats:
  val: [ "loss"]
  train: ["loss"]
  checkpoint_metric: "loss"
  checkpoint_metric_max: false
`

let work: string
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-config-'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('YAML subset', () => {
  it('parses nested mappings, scalars, quotes, comments and lists', () => {
    const v = parseYaml([
      'a:',
      '  b: 1   # comment',
      '  c: "x # not a comment"',
      "  d: 'it''s'",
      '  e: [1, 2.5, three]',
      '  f:',
      '    - 1',
      '    - name: x',
      '      size: 2',
      '  g: true',
      '  h: ~',
      '  i: 1.e-8',
      '  j: -3',
      'k:',
      '- x',
      '- y',
      'l: plain text: no',
    ].join('\n').replace('l: plain text: no', 'l: plain text'))
    expect(v).toEqual({
      a: {b: 1, c: 'x # not a comment', d: "it's", e: [1, 2.5, 'three'], f: [1, {name: 'x', size: 2}], g: true, h: null, i: 1e-8, j: -3},
      k: ['x', 'y'],
      l: 'plain text',
    })
  })

  it('refuses what it does not understand, with the line number', () => {
    expect(() => parseYaml('a:\n  b: 1\n    c: 2')).toThrow(/YAML line 3: unexpected indentation/)
    expect(() => parseYaml('a: 1\na: 2')).toThrow(/YAML line 2: duplicate key "a"/)
    expect(() => parseYaml('a: *ref')).toThrow(ConfigError)
    expect(parseYaml('a: &x 5\nb: *x')).toEqual({a: 5, b: 5})
    expect(() => parseYaml('a: !!str 5')).toThrow(/unsupported YAML construct/)
    expect(() => parseYaml('a: "open')).toThrow(/unterminated string/)
    expect(() => parseYaml('just text')).toThrow(/expected "key: value"/)
  })

  it('reads a CoreNet training config into the preset with its vocab and context', () => {
    const parsed = parseYaml(CORENET_YAML) as Record<string, any>
    expect(parsed.dataset.language_modeling.general_lm.train_data_info).toEqual([{file_name: '$RAW_DATA/pile/train/{0..49}.jsonl.gz', text_key: 'text', file_id_range: [0, 50]}])
    expect(parsed.optim.adamw.eps).toBe(1e-8)
    expect(parsed.stats.val).toEqual(['loss'])
    const config = configFromCorenetYaml(parsed)
    expect(config).toEqual(presetConfig('270M', {vocab_size: 32128, max_context_length: 2048}))
  })

  it('maps model names to presets', () => {
    expect(['OpenELM-270M', 'openelm-450M', 'OpenELM-1_1B', 'OpenELM-3B', 'openelm-3b'].map(presetFromModelName)).toEqual(['270M', '450M', '1.1B', '3B', '3B'])
    expect(() => presetFromModelName('OpenELM-7B')).toThrow(/OpenELM-7B" is not an OpenELM model/)
    expect(() => configFromCorenetYaml(parseYaml('model:\n  name: x'))).toThrow(/no model\.language_modeling\.general_gpt\.model_name/)
  })
})

describe('--config on a .pt', () => {
  it('a YAML with a tiny-shaped model is refused when the shapes disagree; a config.json is used as given', async () => {
    const yaml = path.join(work, 'openelm_270M.yaml')
    await fs.writeFile(yaml, 'model:\n  language_modeling:\n    general_gpt:\n      model_name: "OpenELM-270M"\n      vocab_size: 32000\n')
    const config = await loadConfigFile(yaml)
    expect(config.num_transformer_layers).toBe(16)
    await expect(openCheckpoint(path.join(repo, 'fixtures/corenet/state_dict_f32.pt'), {config})).rejects.toThrow(/160 rows|tensor|missing|unknown/)
    const json = path.join(work, 'config.json')
    await fs.writeFile(json, JSON.stringify({...JSON.parse(await fs.readFile(path.join(repo, 'fixtures/tiny-hf/config.json'), 'utf8')), vocab_size: 160, max_context_length: 128}))
    const c = await openCheckpoint(path.join(repo, 'fixtures/corenet/state_dict_f32.pt'), {config: await loadConfigFile(json)})
    try {
      expect(c.extras.configSource).toBe('flag')
      expect(c.config.max_context_length).toBe(128)
    } finally {
      await c.close()
    }
  })
})
