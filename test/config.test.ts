import {execFileSync} from 'node:child_process'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {ConfigError, MappingError, UsageError} from '../src/errors.js'
import {
  deriveConfig, generationConfigJson, layerDims, linspace, makeDivisible, type OpenElmConfig, parameterCount, parseHfConfig, pyRound2,
  toHfConfigJson,
} from '../src/model/config.js'
import {inferConfig} from '../src/model/infer.js'
import {matchPreset, presetConfig, PRESETS} from '../src/model/presets.js'
import {checkTensors, expectedTensors} from '../src/model/tensors.js'
import {type TensorRecord} from '../src/tensor/record.js'

const PYTHON = '/usr/bin/python3'

/** DESIGN §3's table. */
const TABLE = [
  {name: '270M', layers: 16, modelDim: 1280, headDim: 64, q: [12, 20], kv: [3, 5], ffn: [768, 5120], params: 271_527_168},
  {name: '450M', layers: 20, modelDim: 1536, headDim: 64, q: [12, 24], kv: [3, 6], ffn: [768, 6144], params: 457_179_136},
  {name: '1.1B', layers: 28, modelDim: 2048, headDim: 64, q: [16, 32], kv: [4, 8], ffn: [1024, 8192], params: 1_079_891_456},
  {name: '3B', layers: 36, modelDim: 3072, headDim: 128, q: [12, 24], kv: [3, 6], ffn: [1536, 12288], params: 3_036_647_424},
]

const rep = (value: number, times: number) => Array.from({length: times}, () => value)

/** Apple's OpenELM-270M config.json (per-layer form), as published on the Hub. */
const APPLE_270M = {
  activation_fn_name: 'swish',
  architectures: ['OpenELMForCausalLM'],
  auto_map: {AutoConfig: 'configuration_openelm.OpenELMConfig', AutoModelForCausalLM: 'modeling_openelm.OpenELMForCausalLM'},
  bos_token_id: 1,
  eos_token_id: 2,
  ffn_dim_divisor: 256,
  ffn_multipliers: [0.5, 0.73, 0.97, 1.2, 1.43, 1.67, 1.9, 2.13, 2.37, 2.6, 2.83, 3.07, 3.3, 3.53, 3.77, 4.0],
  ffn_with_glu: true,
  head_dim: 64,
  initializer_range: 0.02,
  max_context_length: 2048,
  model_dim: 1280,
  model_type: 'openelm',
  normalization_layer_name: 'rms_norm',
  normalize_qk_projections: true,
  num_gqa_groups: 4,
  num_kv_heads: [3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5],
  num_query_heads: [12, 12, 12, 12, 12, 16, 16, 16, 16, 16, 16, 16, 20, 20, 20, 20],
  num_transformer_layers: 16,
  qkv_multipliers: [0.5, 1.0],
  rope_freq_constant: 10000,
  rope_max_length: 4096,
  share_input_output_layers: true,
  torch_dtype: 'float32',
  transformers_version: '4.39.3',
  use_cache: true,
  vocab_size: 32000,
}

/** Shape-only records, enough for inferConfig/checkTensors. */
function shapeRecords(config: OpenElmConfig): TensorRecord[] {
  return expectedTensors(config).map((e) => ({
    name: e.name, dtype: 'F32', shape: e.shape, byteLength: e.shape.reduce((a, b) => a * b, 4),
    read: async () => {
      throw new Error('no data')
    },
  }))
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return error as ConfigError
  }
  throw new Error('expected a ConfigError')
}

describe('CoreNet arithmetic', () => {
  it('make_divisible: nearest multiple, at least the divisor, never below 90%', () => {
    expect(makeDivisible(640, 256)).toBe(768) // 640+128 = 768 → 768
    expect(makeDivisible(934.4, 256)).toBe(1024)
    expect(makeDivisible(10, 256)).toBe(256)
    expect(makeDivisible(1100, 1024)).toBe(1024) // 1024 ≥ 0.9·1100 = 990
    expect(makeDivisible(1200, 1024)).toBe(2048) // 1024 < 0.9·1200 = 1080 → +1024
    expect(makeDivisible(128 * 1.5, 128)).toBe(256) // int(192 + 64) // 128 = 2
  })
  it('Python round(x, 2): ties to even on the exact binary value', () => {
    expect([0.125, 0.375, 2.675, 1.005, 0.5, 3.765, -0.125].map(pyRound2)).toEqual([0.12, 0.38, 2.67, 1, 0.5, 3.77, -0.12])
    const script = 'import json,sys; print(json.dumps([round(x, 2) for x in json.load(sys.stdin)]))'
    const xs = [...linspace(0.5, 4.0, 36), ...linspace(0.5, 1.0, 28), ...linspace(0.5, 4.0, 20), 0.125, 2.675, 1.005, 0.615, 0.665]
    const ref = JSON.parse(execFileSync(PYTHON, ['-c', script], {input: JSON.stringify(xs)}).toString()) as number[]
    expect(xs.map(pyRound2)).toEqual(ref)
  })
  it('linspace matches numpy exactly', () => {
    const script = 'import json,numpy as np; print(json.dumps([np.linspace(0.5, 4.0, num=n).tolist() for n in (1, 2, 16, 20, 28, 36)]))'
    const ref = JSON.parse(execFileSync(PYTHON, ['-c', script]).toString()) as number[][]
    expect([1, 2, 16, 20, 28, 36].map((n) => linspace(0.5, 4.0, n))).toEqual(ref)
  })
})

describe('presets against DESIGN §3', () => {
  for (const row of TABLE) {
    it(`${row.name}: ${row.params.toLocaleString('en-US')} parameters and the table's ranges`, () => {
      const config = presetConfig(row.name)
      const dims = layerDims(config)
      expect(parameterCount(config)).toBe(row.params)
      expect(config.num_transformer_layers).toBe(row.layers)
      expect(config.model_dim).toBe(row.modelDim)
      expect(config.head_dim).toBe(row.headDim)
      expect(config.vocab_size).toBe(32000)
      expect(config.num_gqa_groups).toBe(4)
      expect(dims).toHaveLength(row.layers)
      expect([dims[0]!.qHeads, dims.at(-1)!.qHeads]).toEqual(row.q)
      expect([dims[0]!.kvHeads, dims.at(-1)!.kvHeads]).toEqual(row.kv)
      expect([dims[0]!.ffnDim, dims.at(-1)!.ffnDim]).toEqual(row.ffn)
      expect(Math.min(...dims.map((d) => d.qHeads))).toBe(row.q[0])
      expect(Math.max(...dims.map((d) => d.ffnDim))).toBe(row.ffn[1])
      // The parameter count equals the sum over the tensors the model really has.
      expect(expectedTensors(config).reduce((a, e) => a + e.shape.reduce((x, y) => x * y, 1), 0)).toBe(row.params)
    })
  }

  it('270M per-layer lists are exactly those of DESIGN §3', () => {
    const c = presetConfig('270M')
    expect(c.num_query_heads).toEqual([...rep(12, 5), ...rep(16, 7), ...rep(20, 4)])
    expect(c.num_kv_heads).toEqual([...rep(3, 5), ...rep(4, 7), ...rep(5, 4)])
    expect(c.ffn_multipliers).toEqual([0.5, 0.73, 0.97, 1.2, 1.43, 1.67, 1.9, 2.13, 2.37, 2.6, 2.83, 3.07, 3.3, 3.53, 3.77, 4.0])
    expect(layerDims(c).map((d) => d.ffnDim)).toEqual([768, 1024, 1280, 1536, 1792, 2048, 2560, 2816, 3072, 3328, 3584, 3840, 4352, 4608, 4864, 5120])
  })

  it('every preset matches a Python re-implementation of CoreNet/HF (numpy linspace, round, make_divisible)', () => {
    const names = ['270M', '450M', '1.1B', '3B', 'tiny', 'micro']
    const configs = names.map((n) => presetConfig(n))
    const input = configs.map((c) => ({
      num_transformer_layers: c.num_transformer_layers, model_dim: c.model_dim, head_dim: c.head_dim, num_gqa_groups: c.num_gqa_groups, ffn_dim_divisor: c.ffn_dim_divisor,
    }))
    const ref = JSON.parse(execFileSync(PYTHON, [path.join(import.meta.dirname, 'python', 'openelm_dims.py')], {input: JSON.stringify(input)}).toString())
    configs.forEach((c, i) => {
      expect({name: names[i], num_query_heads: c.num_query_heads, num_kv_heads: c.num_kv_heads, ffn_multipliers: c.ffn_multipliers, ffn_dims: layerDims(c).map((d) => d.ffnDim)})
        .toEqual({name: names[i], ...ref[i]})
    })
  })

  it('tiny has layers that really differ; 1_1B and lower-case names are aliases', () => {
    const tiny = presetConfig('tiny')
    expect(tiny.num_query_heads).toEqual([4, 6, 6, 8])
    expect(layerDims(tiny).map((d) => d.ffnDim)).toEqual([32, 112, 176, 256])
    expect(presetConfig('1_1B')).toEqual(presetConfig('1.1B'))
    expect(presetConfig('270m')).toEqual(presetConfig('270M'))
    expect(() => presetConfig('7B')).toThrow(UsageError)
    expect(() => presetConfig('7B')).toThrow(/unknown preset "7B"/)
  })

  it('matchPreset names the architecture, ignoring vocab', () => {
    for (const name of Object.keys(PRESETS)) expect(matchPreset(presetConfig(name))).toBe(name)
    expect(matchPreset(presetConfig('270M', {vocab_size: 32128}))).toBe('270M')
    expect(matchPreset(presetConfig('270M', {model_dim: 1024}))).toBeUndefined()
  })
})

describe('parseHfConfig', () => {
  it('reads Apple\'s 270M config.json to exactly the 270M preset', () => {
    expect(parseHfConfig(APPLE_270M)).toEqual(presetConfig('270M'))
  })
  it('accepts ffn_multipliers as a [min, max] pair, a per-layer list, or one number', () => {
    const pair = parseHfConfig({...APPLE_270M, ffn_multipliers: [0.5, 4.0], num_query_heads: undefined, num_kv_heads: undefined})
    expect(pair).toEqual(presetConfig('270M'))
    const flat = parseHfConfig({...APPLE_270M, ffn_multipliers: 2})
    expect(flat.ffn_multipliers).toEqual(rep(2, 16))
    expect(layerDims(flat).map((d) => d.ffnDim)).toEqual(rep(2560, 16))
    const custom = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4]
    expect(layerDims(parseHfConfig({...APPLE_270M, ffn_multipliers: custom})).map((d) => d.ffnDim)).toEqual(custom.map((m) => m * 1280))
  })
  it('derives per-layer heads from qkv_multipliers when the lists are absent', () => {
    const {num_query_heads: _q, num_kv_heads: _kv, ffn_multipliers: _f, ...minimal} = APPLE_270M
    expect(parseHfConfig(minimal)).toEqual(presetConfig('270M'))
    expect(parseHfConfig({model_type: 'openelm', num_transformer_layers: 28, model_dim: 2048, head_dim: 64})).toEqual(presetConfig('1.1B'))
  })

  const bad: [string, Record<string, unknown>, string, RegExp][] = [
    ['num_query_heads of the wrong length', {num_query_heads: [12, 12]}, 'num_query_heads', /num_query_heads has 2 entries, but num_transformer_layers is 16/],
    ['num_kv_heads of the wrong length', {num_kv_heads: rep(3, 17)}, 'num_kv_heads', /num_kv_heads has 17 entries/],
    ['ffn_multipliers of the wrong length', {ffn_multipliers: [1, 2, 3]}, 'ffn_multipliers', /ffn_multipliers has 3 entries/],
    ['q heads not divisible by num_gqa_groups', {num_query_heads: [...rep(12, 5), 14, ...rep(16, 6), ...rep(20, 4)]}, 'num_query_heads', /num_query_heads\[5\] = 14 is not divisible by num_gqa_groups = 4/],
    ['kv heads ≠ q heads / groups', {num_kv_heads: [...rep(3, 5), ...rep(4, 6), 5, ...rep(5, 4)]}, 'num_kv_heads', /num_kv_heads\[11\] = 5/],
    ['a non-integer model_dim', {model_dim: 1280.5}, 'model_dim', /model_dim must be a positive integer/],
    ['zero layers', {num_transformer_layers: 0, num_query_heads: [], num_kv_heads: [], ffn_multipliers: []}, 'num_transformer_layers', /num_transformer_layers must be a positive integer/],
    ['num_gqa_groups 0', {num_gqa_groups: 0}, 'num_gqa_groups', /num_gqa_groups must be a positive integer/],
    ['a string vocab_size', {vocab_size: '32000'}, 'vocab_size', /vocab_size must be a number/],
    ['a missing head_dim', {head_dim: undefined}, 'head_dim', /lacks the number field head_dim/],
    ['another model_type', {model_type: 'llama'}, 'model_type', /model_type "llama", not "openelm"/],
    ['layer norm', {normalization_layer_name: 'layer_norm'}, 'normalization_layer_name', /normalization_layer_name = "layer_norm" is not supported/],
    ['untied embeddings', {share_input_output_layers: false}, 'share_input_output_layers', /share_input_output_layers = false/],
    ['a qkv_multipliers triple', {qkv_multipliers: [0.5, 0.75, 1]}, 'qkv_multipliers', /qkv_multipliers must be a \[min, max\] pair/],
    ['a non-numeric list', {num_query_heads: ['12']}, 'num_query_heads', /num_query_heads must be a list of numbers/],
  ]
  for (const [label, patch, field, message] of bad) {
    it(`rejects ${label}, naming ${field}`, () => {
      const error = configError(() => parseHfConfig({...APPLE_270M, ...patch}))
      expect(error.details.field).toBe(field)
      expect(error.message).toMatch(message)
      expect(error.message).toContain(field)
      expect(error.message).not.toContain('\n')
    })
  }
  it('rejects a non-object', () => {
    expect(configError(() => parseHfConfig([1, 2])).message).toMatch(/not a JSON object/)
  })
})

describe('shapes against the config', () => {
  it('checkTensors orders the records canonically and accepts the exact set', () => {
    const config = presetConfig('tiny')
    const records = shapeRecords(config).reverse()
    const checked = checkTensors(config, records)
    expect(checked.map((r) => r.name)).toEqual(expectedTensors(config).map((e) => e.name))
    expect(checked[0]!.name).toBe('token_embeddings.weight')
    expect(checked.at(-1)!.name).toBe('norm.weight')
    expect(checked[1]!.name).toBe('layers.0.attn_norm.weight')
  })
  it('rejects a shape that contradicts the config, naming the tensor and both shapes', () => {
    const config = presetConfig('tiny')
    const records = shapeRecords(config).map((r) => (r.name === 'layers.2.ffn.proj_2.weight' ? {...r, shape: [64, 112]} : r))
    expect(() => checkTensors(config, records)).toThrow(MappingError)
    expect(() => checkTensors(config, records)).toThrow('tensor layers.2.ffn.proj_2.weight has shape [64, 112], but the config needs [64, 176]')
  })
  it('rejects unknown, missing and duplicate tensors', () => {
    const config = presetConfig('micro')
    const records = shapeRecords(config)
    expect(() => checkTensors(config, [...records, {...records[1]!, name: 'lm_head.weight'}])).toThrow(/unknown tensor lm_head.weight/)
    expect(() => checkTensors(config, records.slice(1))).toThrow(/tensor token_embeddings.weight is missing/)
    expect(() => checkTensors(config, [...records, records[3]!])).toThrow(/appears twice/)
  })
})

describe('inferConfig', () => {
  for (const name of ['270M', '450M', '1.1B', '3B', 'tiny', 'micro']) {
    it(`recovers the ${name} preset from tensor shapes alone`, () => {
      // The context length is not in any shape: inference says 2048, the released models' value.
      expect(inferConfig(shapeRecords(presetConfig(name)))).toEqual({...presetConfig(name), max_context_length: 2048})
    })
  }
  it('recovers the CoreNet 32128-row vocabulary', () => {
    expect(inferConfig(shapeRecords(presetConfig('270M', {vocab_size: 32128})))).toEqual(presetConfig('270M', {vocab_size: 32128}))
  })
  it('keeps non-standard per-layer widths and heads as lists', () => {
    const base = presetConfig('tiny')
    const custom: OpenElmConfig = {...base, num_query_heads: [8, 4, 8, 4], num_kv_heads: [4, 2, 4, 2], ffn_multipliers: [1, 3, 0.5, 2]}
    const inferred = inferConfig(shapeRecords(custom))
    expect(layerDims(inferred)).toEqual(layerDims(custom))
    expect(checkTensors(inferred, shapeRecords(custom))).toHaveLength(expectedTensors(custom).length)
  })
  it('explains what is missing', () => {
    const records = shapeRecords(presetConfig('micro')).filter((r) => r.name !== 'layers.0.attn.q_norm.weight')
    expect(() => inferConfig(records)).toThrow('cannot infer the config: tensor layers.0.attn.q_norm.weight is missing')
  })
})

describe('toHfConfigJson', () => {
  it('round-trips every preset through config.json', () => {
    for (const name of Object.keys(PRESETS)) {
      const config = presetConfig(name)
      const json = JSON.parse(JSON.stringify(toHfConfigJson(config, 'BF16')))
      expect(parseHfConfig(json)).toEqual(config)
    }
  })
  it('writes Apple\'s 270M config.json field for field (keys sorted)', () => {
    const json = toHfConfigJson(presetConfig('270M'), 'F32')
    expect(json).toEqual(APPLE_270M)
    expect(Object.keys(json)).toEqual(Object.keys(json).sort())
    expect(toHfConfigJson(presetConfig('270M'), 'BF16').torch_dtype).toBe('bfloat16')
    expect(toHfConfigJson(presetConfig('270M'), 'F16').torch_dtype).toBe('float16')
  })
  it('writes the generation config with bos 1 and eos 2', () => {
    expect(generationConfigJson(presetConfig('tiny'))).toEqual({_from_model_config: true, bos_token_id: 1, eos_token_id: 2, transformers_version: '4.39.3'})
  })
  it('deriveConfig validates what it builds', () => {
    expect(() => deriveConfig({num_transformer_layers: 4, model_dim: 64, head_dim: 0, vocab_size: 10})).toThrow(/head_dim must be a positive integer/)
  })
})
