/**
 * Issue 17: the fuzzing findings, each as a regression test on a minimal hostile file made by a
 * generator (test/helpers/hostile.ts) from a valid seed, next to that seed opening cleanly.
 * Every refusal is a typed error with one short line naming the field/tensor; memory and time stay bounded.
 */
import {spawn} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {ConfigError, FormatError, OpenElmError} from '../src/errors.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {onnx} from '../src/formats/onnx/builder.js'
import {readChunks} from '../src/tensor/record.js'
import {type Seed} from '../scripts/fuzz/seeds.js'
import {
  configField, ggufF64Item, ggufFloat, ggufTensorType, npzDamagedStream, npzOverlongMember, npzZeroBomb, safetensorsHeader, seedsIn,
  torchPickle, torchShiftedRecord, variant,
} from './helpers/hostile.js'

const ROOT = path.resolve(import.meta.dirname, '..')
let work: string
let seeds: Map<string, Seed>
let n = 0

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-hostile17-'))
  seeds = await seedsIn(path.join(work, 'seeds'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

function make(seed: string, file: string, edit: (b: Buffer) => Buffer | string): Promise<string> {
  return variant(seeds.get(seed)!, path.join(work, `case-${n++}`), file, edit)
}

/** Open and read every tensor (what convert does); returns the checkpoint's config on success. */
async function readAll(p: string): Promise<void> {
  const c = await openCheckpoint(p)
  try {
    for (const t of c.tensors) for await (const _ of readChunks(t)) { /* drain */ }
  } finally {
    await c.close()
  }
}

/** The error contract: typed, one short line, no placeholder words; bounded time and memory. */
async function refusal(p: string): Promise<OpenElmError> {
  const rss = process.memoryUsage().rss
  const start = performance.now()
  let caught: unknown
  try {
    await readAll(p)
  } catch (error) {
    caught = error
  }
  expect(caught).toBeInstanceOf(OpenElmError)
  const error = caught as OpenElmError
  expect(error.message).not.toContain('\n')
  expect(error.message.length).toBeLessThan(400)
  expect(error.message).not.toMatch(/\bundefined\b|\[object /)
  expect(performance.now() - start).toBeLessThan(5000)
  expect(process.memoryUsage().rss - rss).toBeLessThan(100 * 2 ** 20)
  return error
}

describe('controls', () => {
  it('every seed opens and reads', async () => {
    for (const seed of seeds.values()) await readAll(path.join(seed.dir, seed.open))
    expect(seeds.size).toBe(12)
  })
})

describe('1. memory: deflated npz members are inflated as a bounded stream', () => {
  it('a member declaring 1 GiB (inflating to 16 MiB of zeros) is refused after inflating only its header', async () => {
    // The finding: a 1.6 MB file drove inspect to 3.39 GB RSS. The declared size is never allocated.
    const p = await make('npz-deflated', 'weights.npz', npzZeroBomb(2 ** 30, 16 * 2 ** 20))
    const stat = await fs.stat(path.join(p, 'weights.npz'))
    expect(stat.size).toBeLessThan(2 * 2 ** 20)
    const error = await refusal(p)
    expect(error.code).toBe('npy.header')
    expect(error.message).toMatch(/bad magic/)
  })
  it('a member that inflates past its declared size stops at the first byte beyond', async () => {
    const p = await make('npz-deflated', 'weights.npz', npzOverlongMember(64 * 2 ** 20))
    const error = await refusal(p)
    expect(error.code).toBe('npz.inflate')
    expect(error.message).toMatch(/inflates past the \d+ bytes its directory entry and \.npy header declare/)
  })
  it('fuzz finding: a damaged deflate stream that still inflates to the right size fails the CRC', async () => {
    const p = await make('npz-deflated', 'weights.npz', npzDamagedStream(40))
    const error = await refusal(p)
    expect(error.code).toBe('npz.inflate')
    expect(error.message).toMatch(/CRC-32|does not inflate|inflates to/)
  })
})

describe('2. impossible models are refused, naming the field and the allowed range', () => {
  const cases: [string, string, string, RegExp][] = [
    ['rope_freq_constant', '0', 'rope_freq_constant', /rope_freq_constant = 0 is out of range \(allowed > 1/],
    ['rope_freq_constant', '-1', 'rope_freq_constant', /rope_freq_constant = -1 is out of range/],
    ['rope_freq_constant', '-10000', 'rope_freq_constant', /rope_freq_constant = -10000 is out of range/],
    ['bos_token_id', '0.5', 'bos_token_id', /bos_token_id = 0.5 is out of range \(allowed an integer 0\.\.63/],
    ['bos_token_id', '2147483648', 'bos_token_id', /bos_token_id = 2147483648 is out of range/],
    ['eos_token_id', '1000000000', 'eos_token_id', /eos_token_id = 1000000000 is out of range/],
    ['max_context_length', '9007199254740992', 'max_context_length', /max_context_length = 9007199254740992 is out of range \(allowed 1\.\.16777216\)/],
    ['rope_max_length', '18446744073709551616', 'rope_max_length', /rope_max_length = 18446744073709552000 is out of range/],
    ['qkv_multipliers', '[0.5, 2.0]', 'qkv_multipliers', /qkv_multipliers \[0.5,2\] give layer 1 8 query heads, but num_query_heads\[1\] = 4 in config.json/],
  ]
  for (const [field, raw, named, message] of cases) {
    it(`config.json ${field} = ${raw}`, async () => {
      const error = await refusal(await make('hf-single', 'config.json', configField(field, raw)))
      expect(error).toBeInstanceOf(ConfigError)
      expect(error.details.field).toBe(named)
      expect(error.message).toMatch(message)
    })
  }
  it('the same validator guards GGUF metadata: rope.freq_base 0', async () => {
    const error = await refusal(await make('gguf-f16', 'model.gguf', ggufFloat('openelm.rope.freq_base', 0)))
    expect(error.details.field).toBe('rope_freq_constant')
    expect(error.message).toMatch(/rope_freq_constant = 0 is out of range/)
  })
  it('GGUF qkv_multipliers that contradict the per-layer head counts', async () => {
    const error = await refusal(await make('gguf-f16', 'model.gguf', ggufF64Item('openelm.qkv_multipliers', 1, 2.0)))
    expect(error.code).toBe('config.contradiction')
    expect(error.message).toMatch(/qkv_multipliers \[0.5,2\] give layer 1 \d+ query heads, but num_query_heads\[1\] = \d+/)
  })
  it('ONNX external data with offset "" is not read as offset 0', async () => {
    const p = await make('onnx-external', 'onnx/model.onnx', (b) => {
      const model = onnx.ModelProto.decode(b)
      const entry = model.graph!.initializer![3]!.externalData!.find((e) => e.key === 'offset')!
      entry.value = ''
      return Buffer.from(onnx.ModelProto.encode(model).finish())
    })
    const error = await refusal(p)
    expect(error.code).toBe('onnx.external')
    expect(error.message).toMatch(/external data offset "" is not a decimal byte count/)
  })
  it('a CoreNet FloatStorage relabelled HalfStorage is refused (record size ≠ numel × itemsize)', async () => {
    const p = await make('torch-pt', 'state_dict_f32.pt', torchPickle((pkl) => pkl.replaceAll('FloatStorage', 'HalfStorage')))
    const error = await refusal(p)
    expect(error.code).toBe('corenet.storage_size')
    expect(error.message).toMatch(/record has (\d+) bytes, but its \d+ F16 elements take exactly \d+/)
  })
})

describe('3. messages', () => {
  it('a safetensors entry without shape names the missing field', async () => {
    const p = await make('hf-single', 'model.safetensors', safetensorsHeader((h) => {
      const name = Object.keys(h).find((k) => k !== '__metadata__')!
      const {shape: _, ...rest} = h[name]!
      return {...h, [name]: rest}
    }))
    const error = await refusal(p)
    expect(error.message).toMatch(/tensor transformer\.\S+ lacks the field shape|tensor "transformer\.\S+" lacks the field shape/)
    expect(error.details.field).toBe('shape')
  })
  it('config.json with NaN is one line with line:column and no file snippet', async () => {
    const error = await refusal(await make('hf-single', 'config.json', configField('rope_freq_constant', 'NaN')))
    expect(error.code).toBe('json.invalid')
    expect(error.message).toMatch(/is not valid JSON: Unexpected token 'N' at line \d+ column \d+ \(NaN and Infinity are not JSON numbers\)$/)
    expect(error.message).not.toContain('head_dim')
  })
  it('fuzz finding: a long config.json with NaN (V8 abbreviates its snippet with "...") stays clean', async () => {
    const error = await refusal(await make('npz-stored', 'config.json', (b) => b.toString().replace(/"head_dim": \d+/, '"head_dim": NaN').replace(/\s+/g, '')))
    expect(error.message).toMatch(/Unexpected token 'N' at line 1 column \d+/)
    expect(error.message).not.toMatch(/\.\.\./)
  })
  it('a 70 KB tensor name is quoted as a short escaped prefix with its length', async () => {
    const long = `transformer.${'x'.repeat(70_000)}\nrm -rf`
    const p = await make('hf-single', 'model.safetensors', safetensorsHeader((h) => {
      const name = Object.keys(h).find((k) => k !== '__metadata__')!
      const {[name]: entry, ...rest} = h
      return {...rest, [long]: entry}
    }))
    const error = await refusal(p)
    expect(error.message).toMatch(/^unknown tensor "x{80}"… \(70007 characters\): not part of an OpenELM model/)
    expect(error.details.tensor).toBe(long.slice('transformer.'.length))
  })
  it('fuzz finding: a CoreNet MLX config with max_context_length {} says what it got', async () => {
    const error = await refusal(await make('corenet-mlx', 'config.json', configField('max_context_length', '{}')))
    expect(error.message).toBe('config field max_context_length must be a positive integer (got {})')
  })
  it('fuzz finding: model_type {} is shown as JSON, not [object Object]', async () => {
    const error = await refusal(await make('onnx-single', 'config.json', configField('model_type', '{}')))
    expect(error.message).toMatch(/config.json has model_type \{\}, not "openelm"/)
  })
})

describe('fuzz findings: structural changes that used to read shifted or relabelled bytes', () => {
  it('a GGUF tensor relabelled F32 → F16 leaves unexplained bytes and is refused', async () => {
    const error = await refusal(await make('gguf-f16', 'model.gguf', ggufTensorType('blk.0.attn_norm.weight', 1)))
    expect(error.code).toBe('gguf.gap')
    expect(error.message).toMatch(/bytes unaccounted for/)
  })
  it('fuzz finding: an F32 norm relabelled F16 inside its alignment padding is refused (padding must be zero)', async () => {
    const error = await refusal(await make('gguf-f16', 'model.gguf', ggufTensorType('blk.0.attn_q_norm.weight', 1)))
    expect(error.code).toBe('gguf.padding')
    expect(error.message).toMatch(/the 16 padding bytes after tensor "blk.0.attn_q_norm.weight" are not zero/)
  })
  it('the same relabel of the last tensor leaves unexplained bytes at the end and is refused', async () => {
    const error = await refusal(await make('gguf-f16', 'model.gguf', ggufTensorType('output_norm.weight', 1)))
    expect(error.code).toBe('gguf.gap')
    expect(error.message).toMatch(/after the last tensor/)
  })
  it('a .pt local header whose extra length grew (data shifted) is refused', async () => {
    const error = await refusal(await make('corenet-pt', 'model.pt', torchShiftedRecord(/\/data\/\d+$/, 5)))
    expect(error.code).toBe('corenet.storage_alignment')
  })
  it('a .pt local header name that does not match the directory is quoted short', async () => {
    const error = await refusal(await make('corenet-pt', 'model.pt', (b) => {
      const c = Buffer.from(b)
      const at = c.indexOf(Buffer.from('model/byteorder'))
      c.writeUInt16LE(0xffff, at - 4) // the local header's name length
      return c
    }))
    expect(error.code).toBe('zip.name_mismatch')
    expect(error.message).toMatch(/… \(\d+ characters\)/)
  })
})

describe('fuzz findings of the 5,000-case run', () => {
  it('an ONNX external data location naming the model file itself is refused', async () => {
    const p = await make('onnx-external', 'onnx/model.onnx', (b) => {
      const model = onnx.ModelProto.decode(b)
      model.graph!.initializer![0]!.externalData!.find((e) => e.key === 'location')!.value = 'model.onnx'
      return Buffer.from(onnx.ModelProto.encode(model).finish())
    })
    const error = await refusal(p)
    expect(error.message).toMatch(/external data location "model.onnx" is the model file itself/)
  })
  it('two ONNX initializers sharing external bytes are refused', async () => {
    const p = await make('onnx-external', 'onnx/model.onnx', (b) => {
      const model = onnx.ModelProto.decode(b)
      const [a, c] = model.graph!.initializer!.filter((i) => (i.externalData?.length ?? 0) > 0 && Number(i.dims?.at(-1)) === 32)
      c!.externalData!.find((e) => e.key === 'offset')!.value = a!.externalData!.find((e) => e.key === 'offset')!.value
      return Buffer.from(onnx.ModelProto.encode(model).finish())
    })
    const error = await refusal(p)
    expect(error.code).toBe('onnx.external_overlap')
  })
  it('a pickled tensor size that is not an integer names its type', async () => {
    const p = await make('torch-pt', 'state_dict_f32.pt', torchPickle((pkl) => {
      // The first size tuple: BININT1 n, BININT1 m, TUPLE2 → None, BININT1 m, TUPLE2.
      const at = pkl.search(/K.K.\x86/s)
      return `${pkl.slice(0, at)}N${pkl.slice(at + 2)}`
    }))
    const error = await refusal(p)
    expect(error.message).toMatch(/_rebuild_tensor_v2: size of type None is not a non-negative integer$/)
    expect(error.message).not.toMatch(/object Object/)
  })
})

describe('fuzz findings of the third 5,000-case run (seed 3)', () => {
  it('num_transformer_layers = 10^9 is refused by its range before any per-layer list is built (was a hang)', async () => {
    const error = await refusal(await make('hf-single', 'config.json', configField('num_transformer_layers', '1000000000')))
    expect(error.message).toBe('config field num_transformer_layers = 1000000000 is out of range (allowed 1..1024)')
  })
  it('the same for GGUF block_count', async () => {
    const p = await make('gguf-f16', 'model.gguf', (b) => {
      const c = Buffer.from(b)
      const key = Buffer.from('openelm.block_count')
      const at = c.indexOf(key) + key.length
      expect(c.readUInt32LE(at)).toBe(4) // UINT32
      c.writeUInt32LE(1_000_000_000, at + 4)
      return c
    })
    const error = await refusal(p)
    expect(error.message).toBe('config field num_transformer_layers = 1000000000 is out of range (allowed 1..1024)')
  })
})

describe('4. --json output is complete through a slow pipe', () => {
  it('inspect --json of a file whose error carries a 1 MB name gives valid, complete JSON', async () => {
    const long = `transformer.${'y'.repeat(2 ** 20)}`
    const p = await make('hf-single', 'model.safetensors', safetensorsHeader((h) => {
      const name = Object.keys(h).find((k) => k !== '__metadata__')!
      const {[name]: entry, ...rest} = h
      return {...rest, [long]: entry}
    }))
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'dev.js'), 'inspect', p, '--json'], {stdio: ['ignore', 'pipe', 'pipe']})
    // A slow reader: nothing is read until the process has tried to exit.
    child.stdout.pause()
    child.stderr.resume()
    const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? -1)))
    const closed = new Promise((resolve) => child.stdout.on('close', resolve))
    await new Promise((resolve) => setTimeout(resolve, 1500))
    const chunks: Buffer[] = []
    child.stdout.on('data', (d: Buffer) => chunks.push(d))
    child.stdout.resume()
    const code = await exited
    await closed
    const text = Buffer.concat(chunks).toString('utf8')
    expect(text.length).toBeGreaterThan(2 ** 20)
    const json = JSON.parse(text) as {error: {code: string; tensor: string; message: string}}
    expect(json.error.code).toBe('tensor.unknown')
    expect(json.error.tensor).toBe(long.slice('transformer.'.length))
    expect(code).toBe(3)
  })
})

describe('the error type of each refusal', () => {
  it('format damage is a FormatError, config damage a ConfigError', async () => {
    expect(await refusal(await make('npz-deflated', 'weights.npz', npzZeroBomb(2 ** 20, 2 ** 20)))).toBeInstanceOf(FormatError)
    expect(await refusal(await make('hf-single', 'config.json', configField('rope_freq_constant', '0')))).toBeInstanceOf(ConfigError)
  })
})
