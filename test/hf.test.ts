import {createHash} from 'node:crypto'
import {promises as fs, mkdtempSync, readdirSync, readFileSync, rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {convert, writeCheckpoint} from '../src/convert.js'
import {ConfigError, FormatError, IoError, MappingError} from '../src/errors.js'
import {readHf} from '../src/formats/hf/index.js'
import {detectFormat, openCheckpoint} from '../src/formats/registry.js'
import {openSafetensors} from '../src/formats/safetensors/read.js'
import {writeSafetensors} from '../src/formats/safetensors/write.js'
import {parseHfConfig, qualifiedAutoMap, toHfConfigJson} from '../src/model/config.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {memoryRecord, type TensorRecord} from '../src/tensor/record.js'
import {drain} from '../src/progress.js'

const FIXTURE = path.join(import.meta.dirname, '..', 'fixtures', 'tiny-hf')
const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-hf-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))
let counter = 0
const fresh = (name: string) => path.join(tmp, `${name}-${counter++}`)
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

async function tensorHashes(dir: string): Promise<Record<string, string>> {
  const ckpt = await openCheckpoint(dir)
  try {
    const out: Record<string, string> = {}
    for (const t of ckpt.tensors) out[`${t.name} ${t.dtype} ${t.shape.join('x')}`] = sha256(await t.read())
    return out
  } finally {
    await ckpt.close()
  }
}

const readJson = (p: string) => JSON.parse(readFileSync(p, 'utf8'))

describe('reading the HF layout', () => {
  it('reads the committed fixture: tiny config from config.json, canonical names and order', async () => {
    const ckpt = await readHf(FIXTURE)
    try {
      expect(ckpt.format).toBe('hf')
      expect(ckpt.config).toEqual(presetConfig('tiny'))
      expect(ckpt.extras.configSource).toBe('file')
      expect(ckpt.extras.dtype).toBe('F32')
      expect(ckpt.extras.notes).toEqual([])
      expect(ckpt.tensors[0]!.name).toBe('token_embeddings.weight')
      expect(ckpt.tensors.at(-1)!.name).toBe('norm.weight')
      expect(ckpt.tensors).toHaveLength(2 + 8 * 4)
      expect(ckpt.extras.info.layout).toBe('single safetensors')
      expect(ckpt.extras.info.metadata).toEqual({format: 'pt'})
    } finally {
      await ckpt.close()
    }
  })

  it('the fixture holds exactly the synth weights of the tiny preset with seed 1', async () => {
    const synth = synthCheckpoint(presetConfig('tiny'), {seed: 1, dtype: 'F32'})
    const ckpt = await readHf(FIXTURE)
    try {
      for (const [i, t] of ckpt.tensors.entries()) expect(sha256(await t.read())).toBe(sha256(await synth.tensors[i]!.read()))
    } finally {
      await ckpt.close()
    }
    expect(readFileSync(path.join(FIXTURE, 'model.safetensors')).byteLength).toBeLessThan(1_000_000)
  })

  it('infers a missing config.json from the shapes and says so', async () => {
    const dir = fresh('noconfig')
    await fs.mkdir(dir)
    await fs.copyFile(path.join(FIXTURE, 'model.safetensors'), path.join(dir, 'model.safetensors'))
    const ckpt = await readHf(dir)
    await ckpt.close()
    expect(ckpt.extras.configSource).toBe('inferred')
    expect(ckpt.extras.notes).toEqual(['no config.json: config inferred from tensor shapes'])
    expect({...ckpt.config, max_context_length: 128}).toEqual(presetConfig('tiny'))
    // The inferred config is written out by a conversion.
    const out = fresh('inferred-out')
    const result = await drain(convert(dir, 'hf', out, {}, {}))
    expect(result.notes).toContain('no config.json: config inferred from tensor shapes')
    expect(parseHfConfig(readJson(path.join(out, 'config.json')))).toEqual(ckpt.config)
  })

  it('reads a .safetensors file given directly, with the config beside it', async () => {
    const ckpt = await openCheckpoint(path.join(FIXTURE, 'model.safetensors'))
    await ckpt.close()
    expect(ckpt.config).toEqual(presetConfig('tiny'))
  })

  it('rejects a Llama-style safetensors with one line saying it is not an OpenELM', async () => {
    const dir = fresh('llama')
    await fs.mkdir(dir)
    const f = new Uint8Array(4 * 8 * 4)
    const records: TensorRecord[] = [
      memoryRecord('model.embed_tokens.weight', 'F32', [8, 4], f),
      memoryRecord('model.layers.0.self_attn.q_proj.weight', 'F32', [4, 4], f.subarray(0, 64)),
      memoryRecord('model.norm.weight', 'F32', [4], f.subarray(0, 16)),
      memoryRecord('lm_head.weight', 'F32', [8, 4], f),
    ]
    await drain(writeSafetensors(path.join(dir, 'model.safetensors'), records, {format: 'pt'}))
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({model_type: 'llama', hidden_size: 4}))
    const error = await readHf(dir).then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(MappingError)
    expect((error as MappingError).code).toBe('hf.not_openelm')
    expect((error as Error).message).toMatch(/is not an OpenELM checkpoint: it has tensor (model\.embed_tokens\.weight|lm_head\.weight)/)
    expect((error as Error).message).not.toContain('\n')
  })

  it('rejects a config.json that contradicts the tensors', async () => {
    const dir = fresh('contradict')
    await fs.mkdir(dir)
    await fs.copyFile(path.join(FIXTURE, 'model.safetensors'), path.join(dir, 'model.safetensors'))
    const config = readJson(path.join(FIXTURE, 'config.json'))
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({...config, ffn_multipliers: [0.5, 1.67, 2.83, 3.5]}))
    await expect(readHf(dir)).rejects.toThrow(/tensor layers.3.ffn.proj_1.weight has shape \[512, 64\], but the config needs \[448, 64\]/)
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({...config, vocab_size: 256}))
    await expect(readHf(dir)).rejects.toThrow(ConfigError)
    await fs.writeFile(path.join(dir, 'config.json'), '{"model_dim": 64,')
    await expect(readHf(dir)).rejects.toThrow(/config.json is not valid JSON/)
  })

  it('a folder without model files is not recognised', async () => {
    const dir = fresh('empty')
    await fs.mkdir(dir)
    await expect(detectFormat(dir)).rejects.toThrow(FormatError)
    await expect(detectFormat(path.join(dir, 'nope'))).rejects.toThrow(IoError)
  })
})

describe('writing the HF layout', () => {
  it('writes config.json, generation_config.json and model.safetensors, bit-exact, and copies tokenizer files', async () => {
    const src = fresh('with-tokenizer')
    await fs.cp(FIXTURE, src, {recursive: true})
    // The source's tokenizer files are copied unchanged (tokenizer.model, read first, must be a real one).
    const tokenizer = {'tokenizer.json': '{"version":"1.0"}', 'tokenizer.model': readFileSync(path.join(FIXTURE, '../tiny-spm/tokenizer.model'), 'latin1'), 'tokenizer_config.json': '{"add_bos_token":true}', 'special_tokens_map.json': '{"bos_token":"<s>"}'}
    for (const [name, text] of Object.entries(tokenizer)) await fs.writeFile(path.join(src, name), text, 'latin1')
    await fs.writeFile(path.join(src, 'README.md'), 'not copied')
    const out = fresh('out')
    const result = await drain(convert(src, 'hf', out, {}, {}))
    expect(readdirSync(out).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', ...Object.keys(tokenizer)].sort())
    for (const [name, text] of Object.entries(tokenizer)) expect(readFileSync(path.join(out, name), 'latin1')).toBe(text)
    // No remote code beside the source: auto_map names Apple's 270M repo (the same code for every size).
    expect(readJson(path.join(out, 'config.json'))).toEqual(toHfConfigJson(presetConfig('tiny'), 'F32', {auto_map: qualifiedAutoMap('apple/OpenELM-270M')}))
    expect(readJson(path.join(out, 'generation_config.json'))).toEqual({_from_model_config: true, bos_token_id: 1, eos_token_id: 2, transformers_version: '4.39.3'})
    // Same dtype, one file: the safetensors is byte-identical to the source's.
    expect(sha256(readFileSync(path.join(out, 'model.safetensors')))).toBe(sha256(readFileSync(path.join(FIXTURE, 'model.safetensors'))))
    expect(result.target.files.map((f) => path.basename(f.path)).sort()).toEqual(readdirSync(out).sort())
    for (const f of result.target.files) expect(f.bytes).toBe(readFileSync(f.path).byteLength)
    const st = await openSafetensors(path.join(out, 'model.safetensors'))
    await st.close()
    expect(st.tensors.every((t) => t.name.startsWith('transformer.'))).toBe(true)
    expect(st.tensors.some((t) => t.name.startsWith('transformer.lm_head') || t.name === 'lm_head.weight')).toBe(false)
  })

  it('shards with --shard-size: HF names, an index matching the shard headers, same tensors bit-exact', async () => {
    const out = fresh('sharded')
    await drain(convert(FIXTURE, 'hf', out, {}, {shardSize: 200_000}))
    const files = readdirSync(out).sort()
    const shards = files.filter((f) => f.endsWith('.safetensors'))
    expect(shards.length).toBeGreaterThan(2)
    shards.forEach((f, i) => expect(f).toBe(`model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`))
    expect(files).toContain('model.safetensors.index.json')
    const index = readJson(path.join(out, 'model.safetensors.index.json'))
    let total = 0
    const fromHeaders: Record<string, string> = {}
    for (const shard of shards) {
      const st = await openSafetensors(path.join(out, shard))
      await st.close()
      // Each shard respects the limit (the embedding alone is 32 KB here).
      expect(st.tensors.reduce((a, t) => a + t.byteLength, 0)).toBeLessThanOrEqual(200_000)
      for (const t of st.tensors) {
        fromHeaders[t.name] = shard
        total += t.byteLength
      }
    }
    expect(index).toEqual({metadata: {total_size: total}, weight_map: fromHeaders})
    expect(Object.keys(index.weight_map)).toEqual(Object.keys(index.weight_map).sort())
    expect(await tensorHashes(out)).toEqual(await tensorHashes(FIXTURE))
    const ckpt = await openCheckpoint(out)
    await ckpt.close()
    expect(ckpt.extras.info.layout).toBe('sharded safetensors')
    // And back to one file: byte-identical to the original.
    const single = fresh('unsharded')
    await drain(convert(out, 'hf', single, {}, {}))
    expect(sha256(readFileSync(path.join(single, 'model.safetensors')))).toBe(sha256(readFileSync(path.join(FIXTURE, 'model.safetensors'))))
  })

  it('puts a tensor larger than the shard size in a shard of its own', async () => {
    const out = fresh('tiny-shards')
    await drain(convert(FIXTURE, 'hf', out, {}, {shardSize: 1000}))
    const index = readJson(path.join(out, 'model.safetensors.index.json'))
    const perShard = new Map<string, number>()
    for (const shard of Object.values(index.weight_map) as string[]) perShard.set(shard, (perShard.get(shard) ?? 0) + 1)
    const st = await openSafetensors(path.join(out, index.weight_map['transformer.token_embeddings.weight']))
    await st.close()
    expect(st.tensors.map((t) => t.name)).toEqual(['transformer.token_embeddings.weight'])
    expect(await tensorHashes(out)).toEqual(await tensorHashes(FIXTURE))
  })

  describe('a bad index is an error', () => {
    async function sharded(): Promise<{dir: string; index: {metadata: unknown; weight_map: Record<string, string>}}> {
      const dir = fresh('bad-index')
      await drain(convert(FIXTURE, 'hf', dir, {}, {shardSize: 200_000}))
      return {dir, index: readJson(path.join(dir, 'model.safetensors.index.json'))}
    }
    const writeIndex = (dir: string, index: unknown) => fs.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index))

    it('a tensor the index places in the wrong shard', async () => {
      const {dir, index} = await sharded()
      const shards = [...new Set(Object.values(index.weight_map))].sort()
      index.weight_map['transformer.norm.weight'] = shards.find((s) => s !== index.weight_map['transformer.norm.weight'])!
      await writeIndex(dir, index)
      const error = await readHf(dir).then(() => undefined, (e: unknown) => e as FormatError)
      expect(error?.code).toBe('index.mismatch')
      expect(error?.message).toMatch(/tensor transformer.norm.weight is in model-0000\d-of-0000\d.safetensors but the index says model-0000\d/)
    })
    it('a tensor listed in the index but in no shard', async () => {
      const {dir, index} = await sharded()
      index.weight_map['transformer.extra.weight'] = Object.values(index.weight_map)[0]!
      await writeIndex(dir, index)
      await expect(readHf(dir)).rejects.toThrow(/tensor transformer.extra.weight is listed in the index but missing/)
    })
    it('a shard tensor missing from the index', async () => {
      const {dir, index} = await sharded()
      delete index.weight_map['transformer.layers.1.ffn_norm.weight']
      await writeIndex(dir, index)
      await expect(readHf(dir)).rejects.toThrow(/tensor transformer.layers.1.ffn_norm.weight is in .* but the index says nothing/)
    })
    it('an index without weight_map, a shard path outside the folder, a missing shard', async () => {
      const {dir, index} = await sharded()
      await writeIndex(dir, {metadata: {}})
      await expect(readHf(dir)).rejects.toThrow(/weight_map must map tensor names to file names/)
      await writeIndex(dir, {...index, weight_map: {...index.weight_map, 'transformer.norm.weight': '../model.safetensors'}})
      await expect(readHf(dir)).rejects.toThrow(/is not a plain file name/)
      const first = Object.values(index.weight_map)[0]!
      await writeIndex(dir, index)
      await fs.rm(path.join(dir, first))
      await expect(readHf(dir)).rejects.toThrow(IoError)
    })
  })

  it('refuses an existing output unless forced, and leaves it untouched', async () => {
    const out = fresh('exists')
    await fs.mkdir(out)
    await fs.writeFile(path.join(out, 'keep.txt'), 'mine')
    await expect(drain(convert(FIXTURE, 'hf', out, {}, {}))).rejects.toThrow(/already exists \(pass --force to replace it\)/)
    expect(readdirSync(out)).toEqual(['keep.txt'])
    await drain(convert(FIXTURE, 'hf', out, {}, {force: true}))
    expect(readdirSync(out)).not.toContain('keep.txt')
    expect(readdirSync(tmp).filter((n) => n.startsWith('.openelm-tmp-'))).toEqual([])
  })

  it('a failing write leaves neither the output nor a temp sibling', async () => {
    const synth = synthCheckpoint(presetConfig('micro'), {seed: 3})
    const broken = {...synth, tensors: synth.tensors.map((t, i) => (i === 5 ? {...t, read: async () => {
      throw new FormatError('test.broken', 'broken tensor')
    }} : t))}
    const parent = fresh('fail-parent')
    await fs.mkdir(parent)
    await expect(drain(writeCheckpoint(broken, 'hf', path.join(parent, 'out'), {}))).rejects.toThrow('broken tensor')
    expect(readdirSync(parent)).toEqual([])
  })

  it('writes f16 and bf16 with the matching torch_dtype', async () => {
    for (const [dtype, torch] of [['F16', 'float16'], ['BF16', 'bfloat16']] as const) {
      const out = fresh(dtype)
      const result = await drain(convert(FIXTURE, 'hf', out, {}, {dtype}))
      expect(result.target.dtype).toBe(dtype)
      expect(readJson(path.join(out, 'config.json')).torch_dtype).toBe(torch)
      const ckpt = await openCheckpoint(out)
      await ckpt.close()
      expect(ckpt.tensors.every((t) => t.dtype === dtype)).toBe(true)
      expect(ckpt.extras.dtype).toBe(dtype)
    }
  })
})

describe('synth', () => {
  it('same seed gives byte-identical files; another seed differs', async () => {
    const write = async (seed: number) => {
      const out = fresh(`synth${seed}`)
      await drain(writeCheckpoint(synthCheckpoint(presetConfig('tiny'), {seed, dtype: 'BF16'}), 'hf', out, {}))
      return sha256(readFileSync(path.join(out, 'model.safetensors')))
    }
    const a = await write(7)
    expect(await write(7)).toBe(a)
    expect(await write(8)).not.toBe(a)
  })
  it('any range of a synth tensor equals the same range of the whole tensor', async () => {
    const t = synthCheckpoint(presetConfig('tiny'), {seed: 2, dtype: 'BF16'}).tensors[0]!
    const whole = await t.read()
    expect([...(await t.read(6, 1001))]).toEqual([...whole.subarray(6, 1001)])
    expect([...(await t.read(7, 8))]).toEqual([...whole.subarray(7, 8)])
  })
  it('describes the largest preset without computing it', () => {
    const ckpt = synthCheckpoint(presetConfig('3B'), {seed: 0, dtype: 'F32'})
    expect(ckpt.tensors.reduce((a, t) => a + t.byteLength, 0)).toBe(3_036_647_424 * 4)
  })
})
