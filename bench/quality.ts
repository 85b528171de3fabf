/**
 * The quality table of docs/verify.md: what each conversion costs on a trained model, on real text.
 * The source (default fixtures/trained, f32) is converted to bf16, f16, MLX 2/3/4/5/6/8 bits at
 * groups 32/64/128 and GGUF Q8_0; each output is verified against the source (`verify`, which also
 * proves it exact) over windows of held-out Brown text, and the quality figures are averaged over
 * the windows (KL and top-1 per position; perplexity over every prediction). Bits per weight are
 * measured on the written file: every matrix's stored parts (codes, scales, biases) over its weights.
 *
 *   npx tsx bench/quality.ts [--source fixtures/trained] [--windows 4] [--length 128] [--only LABEL_PART]
 *                            [--out bench/out/quality.json]
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {parseArgs} from 'node:util'
import {writeCheckpoint} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {type FormatName, type WriteOptions} from '../src/formats/types.js'
import {drain} from '../src/progress.js'
import {storedTensor} from '../src/formats/stored.js'
import {schemeFor} from '../src/quant/index.js'
import {dtypeSize} from '../src/tensor/dtype.js'
import {heldOutDocuments} from '../src/text/corpus.js'
import {findTokenizer} from '../src/tokenizer/index.js'
import {runForward} from '../src/verify/engine/index.js'
import {verify} from '../src/verify/index.js'
import {quantizationOf} from '../src/formats/gguf/index.js'
import {measureQuality} from '../src/verify/quality.js'

const {values} = parseArgs({options: {
  source: {type: 'string', default: 'fixtures/trained'},
  windows: {type: 'string', default: '4'},
  length: {type: 'string', default: '128'},
  out: {type: 'string', default: 'bench/out/quality.json'},
  only: {type: 'string'},
}})

interface Target {label: string; to: FormatName; options: WriteOptions; bits: number}
const TARGETS: Target[] = [
  {label: 'bf16', to: 'hf', options: {dtype: 'BF16'}, bits: 16},
  {label: 'f16', to: 'hf', options: {dtype: 'F16'}, bits: 16},
  {label: 'GGUF Q8_0', to: 'gguf', options: {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}}, bits: 8.5},
]
for (const bits of [8, 6, 5, 4, 3, 2]) {
  for (const groupSize of [32, 64, 128]) {
    TARGETS.push({label: `MLX ${bits}-bit g${groupSize}`, to: 'mlx', options: {dtype: 'F16', quantization: {bits, groupSize, mode: 'affine'}}, bits: bits + 32 / groupSize})
  }
}

// Per-module widths (issue 14): mlx-lm's recipes read for OpenELM, and the embedding (= head) apart.
TARGETS.push(
  {label: 'MLX mixed_3_6 g64', to: 'mlx', options: {dtype: 'F16', mlxQuant: {recipe: 'mixed_3_6'}}, bits: NaN},
  {label: 'MLX mixed_4_6 g64', to: 'mlx', options: {dtype: 'F16', mlxQuant: {recipe: 'mixed_4_6'}}, bits: NaN},
  {label: 'MLX 4-bit g64, emb 8', to: 'mlx', options: {dtype: 'F16', quantization: {bits: 4, groupSize: 64, mode: 'affine'}, mlxQuant: {embedding: 8}}, bits: NaN},
  {label: 'MLX 4-bit g64, emb f16', to: 'mlx', options: {dtype: 'F16', quantization: {bits: 4, groupSize: 64, mode: 'affine'}, mlxQuant: {embedding: 'none'}}, bits: NaN},
)

// MLX's floating-point modes (issue 14): mxfp4, nvfp4, mxfp8 (width and group fixed by the mode).
TARGETS.push(
  {label: 'MLX mxfp4', to: 'mlx', options: {dtype: 'F16', quantization: {bits: 4, groupSize: 32, mode: 'mxfp4'}}, bits: NaN},
  {label: 'MLX nvfp4', to: 'mlx', options: {dtype: 'F16', quantization: {bits: 4, groupSize: 16, mode: 'nvfp4'}}, bits: NaN},
  {label: 'MLX mxfp8', to: 'mlx', options: {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'mxfp8'}}, bits: NaN},
  {label: 'MLX mxfp4, emb f16', to: 'mlx', options: {dtype: 'F16', quantization: {bits: 4, groupSize: 32, mode: 'mxfp4'}, mlxQuant: {embedding: 'none'}}, bits: NaN},
)
// ONNX weight-only variants (issue 14): int8 per channel, MatMulNBits 4-bit block 32.
TARGETS.push(
  {label: 'ONNX q8 (int8 per channel)', to: 'onnx', options: {quantization: {bits: 8, groupSize: 64, mode: 'affine'}}, bits: NaN},
  {label: 'ONNX q4 (MatMulNBits b32)', to: 'onnx', options: {quantization: {bits: 4, groupSize: 64, mode: 'affine'}}, bits: NaN},
  {label: 'ONNX q4f16 (MatMulNBits b32, f16)', to: 'onnx', options: {dtype: 'F16', quantization: {bits: 4, groupSize: 64, mode: 'affine'}}, bits: NaN},
)
// llama-quantize's file types (issue 14), with its per-tensor rules. On a model whose rows are not
// whole 256-value blocks (the trained fixture: 128 wide) the K types fall back to 32-value types.
for (const ftype of ['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k_m', 'q4_k_m', 'q5_k_m', 'q6_k']) {
  TARGETS.push({label: `GGUF ${ftype.toUpperCase()}`, to: 'gguf', options: {dtype: 'F16', quantization: quantizationOf(ftype)}, bits: NaN})
}
// --only REGEX: measure a subset of the rows (e.g. --only 'mxfp|nvfp|4-bit g32', --only ONNX).
if (values.only) TARGETS.splice(0, TARGETS.length, ...TARGETS.filter((t) => new RegExp(values.only!).test(t.label)))

const source = await openCheckpoint(values.source!)
const tokenizer = await findTokenizer(values.source!, source.config.vocab_size)
if (!tokenizer) throw new Error(`${values.source} has no tokenizer: the quality table needs real text`)
const length = Number(values.length)
const stream: number[] = []
for (const d of heldOutDocuments()) stream.push(...tokenizer.encode(d.text, {addBos: true}))
const windows = Array.from({length: Number(values.windows)}, (_, w) => stream.slice(w * length, (w + 1) * length))

/** Stored bits per matrix weight: bytes of every 2-D tensor's parts (codes, scales, biases) × 8 / weights. */
async function storedBitsPerWeight(dir: string): Promise<number> {
  const m = await openCheckpoint(dir)
  try {
    let bits = 0
    let weights = 0
    for (const t of m.tensors) {
      if (t.shape.length !== 2) continue
      weights += t.shape[0]! * t.shape[1]!
      for (const s of storedTensor(m, t.name)!.segments) {
        const parts = schemeFor(s.scheme).parts(s.params, t.shape[1]!)
        bits += parts.reduce((a, p) => a + p.perRow * dtypeSize(p.dtype) * 8, 0) * s.rows
      }
    }
    return Math.round((bits / weights) * 100) / 100
  } finally {
    await m.close()
  }
}

// REF's logits per window, computed once for every target.
const refRuns = []
for (const tokens of windows) refRuns.push(await runForward(source, tokens))

interface Row {target: string; bitsPerWeight: number; exact: boolean; meanKl: number; top1: number; pplModel: number; pplRef: number; pplRatio: number}
const rows: Row[] = []
const work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-quality-'))
try {
  for (const t of TARGETS) {
    const out = path.join(work, t.label.replaceAll(/[^a-z0-9]+/gi, '-') + (t.to === 'gguf' ? '.gguf' : ''))
    await drain(writeCheckpoint(source, t.to, out, t.options))
    t.bits = await storedBitsPerWeight(out)
    let kl = 0
    let top1 = 0
    let nllModel = 0
    let nllRef = 0
    let predictions = 0
    // Exact first (codes and logits of MODEL vs REF transformed), then quality per window.
    const r = await verify(out, {against: source, tokens: windows[0], runtime: 'none'})
    const exact = r.pass && r.verdict === 'exact'
    const model = await openCheckpoint(out)
    try {
      for (const [w, tokens] of windows.entries()) {
        const a = refRuns[w]!
        const b = await runForward(model, tokens)
        const q = measureQuality(a.logits, b.logits, tokens, a.vocab, b.vocab, {text: true})
        kl += q.meanKl * tokens.length
        top1 += q.top1 * tokens.length
        const n = q.perplexity!.predictions
        nllModel += Math.log(q.perplexity!.model) * n
        nllRef += Math.log(q.perplexity!.reference) * n
        predictions += n
      }
    } finally {
      await model.close()
    }
    const positions = windows.length * length
    const row: Row = {
      target: t.label, bitsPerWeight: t.bits, exact, meanKl: kl / positions, top1: top1 / positions,
      pplModel: Math.exp(nllModel / predictions), pplRef: Math.exp(nllRef / predictions), pplRatio: Math.exp((nllModel - nllRef) / predictions),
    }
    rows.push(row)
    console.log(`${t.label.padEnd(16)} exact ${row.exact ? 'yes' : 'NO '}  KL ${row.meanKl.toExponential(2)}  top-1 ${row.top1.toFixed(3)}  ppl ${row.pplModel.toFixed(2)} / ${row.pplRef.toFixed(2)} = ${row.pplRatio.toFixed(4)}`)
    await fs.rm(out, {recursive: true, force: true})
  }
} finally {
  await fs.rm(work, {recursive: true, force: true})
  await source.close()
}
await fs.mkdir(path.dirname(values.out!), {recursive: true})
await fs.writeFile(values.out!, JSON.stringify({source: values.source, windows: windows.length, length, machine: `${os.cpus().length} × ${os.cpus()[0]?.model}`, rows}, null, 1))
console.log('| conversion | bits/weight | exact | mean KL | top-1 | perplexity (REF → MODEL) | ratio |')
console.log('|---|---|---|---|---|---|---|')
for (const r of rows) {
  console.log(`| ${r.target} | ${r.bitsPerWeight} | ${r.exact ? '✓' : '✗'} | ${r.meanKl.toExponential(2)} | ${r.top1.toFixed(3)} | ${r.pplRef.toFixed(2)} → ${r.pplModel.toFixed(2)} | ${r.pplRatio.toFixed(4)} |`)
}
