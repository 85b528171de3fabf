/**
 * Every (flag, target) pair of `convert`'s and `roundtrip`'s flag tables, run through the real
 * command in-process (oclif's runCommand: flag parsing, the table check, the conversion): a flag
 * either shows in what was written (config, dtype, files, tensor types) or is refused with exit 2
 * before any output exists. Never ignored.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {Plugin} from '@oclif/core'
import {runCommand as oclifRun} from '@oclif/test'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {CONVERT_FLAG_TABLE, ROUNDTRIP_FLAG_TABLE} from '../src/cli/flag-table.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {openGguf} from '../src/formats/gguf/read.js'

const repo = path.resolve(import.meta.dirname, '..')
const TINY = path.join(repo, 'fixtures/tiny-hf')
const TRAINING = path.join(repo, 'fixtures/corenet/training_checkpoint.pt')
const TARGETS = ['hf', 'mlx', 'corenet', 'gguf', 'onnx'] as const
type Target = (typeof TARGETS)[number]
let work: string
let plugins: Map<string, Plugin>

/** The command in-process on the TypeScript sources, as bin/dev.js runs them (manifest ignored: it describes dist/). */
const runCommand = (args: string[]) => oclifRun(args, {root: repo, plugins})

beforeAll(async () => {
  process.env.NODE_ENV = 'development'
  const self = new Plugin({root: repo, type: 'core', isRoot: true, ignoreManifest: true})
  await self.load()
  plugins = new Map([[self.name, self]])
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-flag-matrix-'))
  // roundtrip's work folders go under ours (test/roundtrip.test.ts counts those in the system tmp).
  process.env.TMPDIR = work
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

const exists = (p: string) => fs.stat(p).then(() => true, () => false)
const json = async <T>(p: string): Promise<T> => JSON.parse(await fs.readFile(p, 'utf8')) as T

async function ggufTypes(file: string): Promise<Record<string, string>> {
  const f = await openGguf(file)
  try {
    return Object.fromEntries(f.tensors.map((t) => [t.info.name, t.type]))
  } finally {
    await f.close()
  }
}

async function safetensorsFiles(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort()
}

/**
 * Each flag as a user would give it, and for each target it applies to: extra flags it needs and
 * what must be visible in the output. A flag/target pair missing here fails the coverage test.
 */
interface Applied {
  args?: string[]
  source?: string
  check(out: string): Promise<void>
}
const CASES: Record<string, {value: string[]; applied: Partial<Record<Target, Applied>>}> = {
  quantize: {
    value: ['-q', '4'],
    applied: {
      mlx: {check: async (out) => expect((await json<{quantization: {bits: number}}>(path.join(out, 'config.json'))).quantization.bits).toBe(4)},
      onnx: {check: async (out) => expect(await exists(path.join(out, 'onnx/model_q4.onnx'))).toBe(true)},
    },
  },
  'group-size': {
    value: ['--group-size', '32'],
    applied: {mlx: {args: ['-q', '4'], check: async (out) => expect((await json<{quantization: {group_size: number}}>(path.join(out, 'config.json'))).quantization.group_size).toBe(32)}},
  },
  dtype: {
    value: ['--dtype', 'q8_0'],
    applied: {gguf: {check: async (out) => expect((await ggufTypes(out))['blk.0.attn_qkv.weight']).toBe('Q8_0')}},
  },
  'training-checkpoint': {
    value: ['--training-checkpoint'],
    applied: {
      corenet: {
        source: TRAINING,
        check: async (out) => {
          const c = await openCheckpoint(path.join(out, (await fs.readdir(out)).find((f) => f.endsWith('.pt'))!))
          await c.close()
          expect(c.extras.training).toBeDefined()
        },
      },
    },
  },
  'token-embedding-type': {
    value: ['--token-embedding-type', 'q8_0'],
    applied: {gguf: {check: async (out) => expect((await ggufTypes(out))['token_embd.weight']).toBe('Q8_0')}},
  },
  'output-tensor-type': {
    // The tied head is token_embd: under q4_0 llama-quantize's rules give it Q8_0 here (Q6_K's fallback for 64-wide rows), the flag F16.
    value: ['--output-tensor-type', 'f16'],
    applied: {gguf: {args: ['--dtype', 'q4_0'], check: async (out) => expect((await ggufTypes(out))['token_embd.weight']).toBe('F16')}},
  },
  layout: {
    value: [],
    applied: {
      mlx: {args: ['--layout', 'npz'], check: async (out) => expect(await exists(path.join(out, 'weights.npz'))).toBe(true)},
      onnx: {args: ['--layout', 'single-file'], check: async (out) => expect((await fs.readdir(path.join(out, 'onnx'))).filter((f) => f.endsWith('_data'))).toEqual([])},
    },
  },
  'shard-size': {
    value: ['--shard-size', '64KB'],
    applied: {
      hf: {check: async (out) => expect((await safetensorsFiles(out)).length).toBeGreaterThan(1)},
      mlx: {check: async (out) => expect((await safetensorsFiles(out)).length).toBeGreaterThan(1)},
    },
  },
  variants: {
    value: ['--variants', 'q8,q4'],
    applied: {onnx: {check: async (out) => expect((await fs.readdir(path.join(out, 'onnx'))).filter((f) => f.endsWith('.onnx')).sort()).toEqual(['model_q4.onnx', 'model_quantized.onnx'])}},
  },
}

function outFor(name: string, target: Target): string {
  return path.join(work, target === 'gguf' ? `${name}.gguf` : name)
}

describe('convert: every flag of the table, every target', () => {
  it('the matrix covers every flag of the table and exactly the targets it lists', () => {
    expect(Object.keys(CASES).sort()).toEqual(Object.keys(CONVERT_FLAG_TABLE).sort())
    for (const [flag, rule] of Object.entries(CONVERT_FLAG_TABLE)) expect({flag, targets: Object.keys(CASES[flag]!.applied).sort()}).toEqual({flag, targets: [...rule.targets].sort()})
  })

  for (const [flag, c] of Object.entries(CASES)) {
    for (const target of TARGETS) {
      const applied = c.applied[target]
      it(`--${flag} --to ${target}: ${applied ? 'applied, visible in the output' : 'refused (exit 2), nothing written'}`, async () => {
        const out = outFor(`${flag}-${target}`, target)
        const value = c.value.length > 0 ? c.value : (Object.values(c.applied)[0]!.args ?? [])
        const args = ['convert', applied?.source ?? TINY, '--to', target, ...(applied ? [...c.value, ...(applied.args ?? [])] : value), '--out', out]
        const r = await runCommand(args)
        if (applied) {
          expect(r.error?.message, args.join(' ')).toBeUndefined()
          await applied.check(out)
        } else {
          expect((r.error as {oclif?: {exit?: number}} | undefined)?.oclif?.exit, args.join(' ')).toBe(2)
          expect(await exists(out)).toBe(false)
          expect((await fs.readdir(work)).filter((e) => e.includes(`${flag}-${target}`))).toEqual([])
        }
      }, 60_000)
    }
  }
})

describe('roundtrip: every flag of its table, on every hop format', () => {
  const values: Record<string, string[]> = {quantize: ['-q', '4'], 'group-size': ['-q', '4', '--group-size', '32'], dtype: ['--dtype', 'q8_0']}
  it('covers every flag of the table', () => {
    expect(Object.keys(values).sort()).toEqual(Object.keys(ROUNDTRIP_FLAG_TABLE).sort())
  })
  for (const [flag, rule] of Object.entries(ROUNDTRIP_FLAG_TABLE)) {
    for (const hop of ['hf', 'mlx', 'gguf', 'onnx'] as const) {
      const applies = rule.targets.includes(hop) && (flag !== 'group-size' || ROUNDTRIP_FLAG_TABLE.quantize!.targets.includes(hop))
      it(`--${flag} --via ${hop}: ${applies ? 'applied to the hop' : 'refused (exit 2) before the first hop'}`, async () => {
        const r = await runCommand(['roundtrip', TINY, '--via', hop, ...values[flag]!, '--json'])
        if (!applies) {
          expect((r.error as {oclif?: {exit?: number}} | undefined)?.oclif?.exit).toBe(2)
          expect(r.stdout).toBe('')
          return
        }
        expect(r.error?.message).toBeUndefined()
        // The command's result: what --json prints.
        const report = r.result as {pass: boolean; hops: {via: string; quantization?: {bits: number; groupSize: number; mode: string}}[]}
        expect(report.hops[0]!.via).toBe(hop)
        const q = report.hops[0]!.quantization
        if (flag === 'dtype') expect(q?.mode).toBe('q8_0')
        else expect(q).toMatchObject({bits: 4, ...(flag === 'group-size' ? {groupSize: 32} : {})})
      }, 60_000)
    }
  }
})
