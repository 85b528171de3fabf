/** The readable form of a verification report (lines of text; the command prints them). */
import {table} from '../cli/render.js'
import {fmt} from './compare.js'
import {divergenceText, type SideInfo, type VariantReport, type VerifyReport} from './index.js'

function storage(s: SideInfo): string {
  return Object.entries(s.storage).map(([k, n]) => `${k} ×${n}`).join(', ')
}

function percent(part: number, whole: number): string {
  if (whole === 0) return '-'
  const p = (100 * part) / whole
  return p === 100 ? '100%' : `${p >= 99.99 ? p.toFixed(4) : p.toFixed(2)}%`
}

function promptLine(report: VerifyReport): string {
  const p = report.prompt
  const n = `${report.tokens.length} tokens`
  const ids = `${report.tokens.slice(0, 12).join(',')}${report.tokens.length > 12 ? ',…' : ''}`
  switch (p.source) {
    case 'seeded': return `${n}: seeded ids (seed ${p.seed ?? 0}) ${ids}`
    case 'tokens': return `${n}: given ids ${ids}`
    default: {
      const text = p.text ? ` "${p.text.length > 60 ? `${p.text.slice(0, 60).replaceAll('\n', ' ')}…` : p.text.replaceAll('\n', ' ')}"` : ''
      const from = p.source === 'corpus' ? 'held-out Brown corpus text' : p.source === 'file' ? 'text file' : 'prompt'
      return `${n} of ${from}${p.tokenizer ? ` (tokenizer: ${p.tokenizer})` : ''}${text}: ${ids}`
    }
  }
}

/** The verdict line without a reference: what was checked, never PASS (nothing was compared with a source). */
function finiteLine(report: VerifyReport): string {
  const r = report.runtime
  const runtime = r ? `; ${r.runtime} (${r.device}) agrees with the ${r.against} engine on the same file` : ''
  return `FINITE — logits finite on ${report.tokens.length} tokens (${report.engine.name} engine, ${report.engine.device})${runtime}; no reference (pass --against SRC to prove a conversion)`
}

/** The verdict in a word or two: FAIL, PASS (exact), PASS (quality only), FINITE. */
export function resultWord(r: VerifyReport): string {
  return !r.pass ? 'FAIL' : r.verdict === 'exact' ? 'PASS (exact)' : r.verdict === 'quality-only' ? 'PASS (quality only)' : r.verdict.toUpperCase()
}

/** One more model file of the folder (ONNX --variants): what was read, its checks, its quality, its verdict. */
function variantLines({variant, report}: VariantReport): string[] {
  const lines = [`variant ${variant}: ${report.model.path} (${report.model.dtype}; ${storage(report.model)})`]
  const rows = checkRows(report)
  if (rows.length > 0) lines.push(table(['check', 'value', 'threshold', 'result'], rows))
  const qrows = qualityRows(report)
  if (qrows) lines.push(table(['metric', 'value', 'gate', 'result'], qrows))
  lines.push(`variant ${variant}: ${resultWord(report)}${report.pass ? '' : `: ${report.failures.join('; ')}`}`)
  return lines
}

/** The gated checks as table rows: check, value, threshold, result (the terminal report and the model card share them). */
export function checkRows(report: VerifyReport): string[][] {
  const rows: string[][] = []
  const w = report.weights
  if (w && report.verdict === 'exact') {
    const elements = w.tensors.reduce((a, t) => a + t.elements, 0)
    const same = w.tensors.reduce((a, t) => a + t.identicalElements, 0)
    const accepted = Object.values(w.accepted).reduce((a, b) => a + b, 0)
    const value = `${w.matching}/${w.tensors.length} tensors, ${percent(same, elements)} of values${accepted > 0 ? `, ${accepted} documented` : ''}`
    rows.push(['weights vs REF transformed', value, 'identical', w.mismatching.length === 0 ? 'ok' : 'FAIL'])
  }
  if (report.logits && report.verdict === 'exact') {
    const l = report.logits
    rows.push(['logits vs REF transformed', `max |Δ| ${fmt(l.maxAbs)} (${fmt(l.relMaxAbs)} of scale)`, `≤ ${fmt(l.threshold)} of scale`, l.pass ? 'ok' : 'FAIL'])
  }
  const pe = report.peft
  if (pe) rows.push([`${pe.kind} merge vs unmerged (torch)`, `${fmt(pe.relMaxAbs)} of scale, ${pe.modules} modules`, `≤ ${fmt(pe.threshold)} of scale`, pe.pass ? 'ok' : 'FAIL'])
  const r = report.runtime
  if (r) {
    rows.push([`${r.runtime} (${r.device}) vs ${r.against}`, `${fmt(r.relMaxAbs)} of scale, KL ${fmt(r.meanKl)}`, `≤ ${fmt(r.tolerance.maxRelAbs)}, ≤ ${fmt(r.tolerance.maxMeanKl)}`, r.pass ? 'ok' : 'FAIL'])
  }
  return rows
}

/** The quality metrics against REF as table rows: metric, value, gate, result; undefined when none were measured. */
export function qualityRows(report: VerifyReport): string[][] | undefined {
  const q = report.quality
  if (!q) return undefined
  const gated = (limit: number | undefined, text: string) => (limit === undefined ? '-' : text)
  const qrows: string[][] = [
    ['mean KL (nats)', fmt(q.meanKl), gated(q.gates.maxKl, `≤ ${fmt(q.gates.maxKl ?? 0)}`), q.gates.maxKl === undefined ? '' : q.meanKl <= q.gates.maxKl ? 'ok' : 'FAIL'],
    [q.nearTies > 0 ? `top-1 agreement (+${q.nearTies} near-tie${q.nearTies > 1 ? 's' : ''})` : 'top-1 agreement', fmt(q.top1WithTies), gated(q.gates.minTop1, `≥ ${fmt(q.gates.minTop1 ?? 0)}`), q.gates.minTop1 === undefined ? '' : q.top1WithTies >= q.gates.minTop1 ? 'ok' : 'FAIL'],
  ]
  if (q.perplexity) {
    const p = q.perplexity
    qrows.push(['perplexity MODEL / REF', `${fmt(p.model)} / ${fmt(p.reference)} (×${p.ratio.toFixed(4)})`, gated(q.gates.maxPplRatio, `≤ ×${q.gates.maxPplRatio}`), q.gates.maxPplRatio === undefined ? '' : p.ratio <= q.gates.maxPplRatio ? 'ok' : 'FAIL'])
  }
  return qrows
}

export function reportLines(report: VerifyReport): string[] {
  const lines: string[] = []
  const side = (label: string, s: SideInfo): string => `${label}: ${s.path} (${s.format}, ${s.dtype}; ${storage(s)}; vocab ${s.vocab})`
  lines.push(side('model', report.model))
  if (report.against) lines.push(side('against', report.against))
  lines.push(`engine ${report.engine.name} (${report.engine.device}); ${promptLine(report)}`)
  const pieces = report.prompt.pieces
  if (pieces) lines.push(`prompt tokens: ${pieces.slice(0, 48).map((piece, i) => `${JSON.stringify(piece).slice(1, -1)}=${report.tokens[i]}`).join(' ')}${pieces.length > 48 ? ' …' : ''}`)
  if (report.summary) {
    lines.push(`logits ${report.summary.finite ? 'finite' : 'contain NaN/Inf'}, range [${fmt(report.summary.logitMin)}, ${fmt(report.summary.logitMax)}]`)
    lines.push(`top-1 per position: ${report.summary.top1.join(' ')}`)
  }
  if (report.relationReason && report.verdict !== 'finite') {
    lines.push(report.verdict === 'quality-only' ? `relation: sibling — ${report.relationReason}` : `relation: ${report.relation === 'derived' ? 'conversion' : 'NOT the conversion'} — ${report.relationReason}`)
  }
  const rows = checkRows(report)
  if (rows.length > 0) lines.push(table(['check', 'value', 'threshold', 'result'], rows))
  const q = report.quality
  const qrows = qualityRows(report)
  if (q && qrows) {
    lines.push(`quality against REF (${Object.keys(q.gates).length > 0 ? 'gated' : 'reported, not gated'}):`)
    lines.push(table(['metric', 'value', 'gate', 'result'], qrows))
  }
  for (const v of report.variants ?? []) lines.push(...variantLines(v))
  for (const note of report.notes) lines.push(`note: ${note}`)
  if (report.savedLogits) lines.push(`logits saved to ${report.savedLogits}`)
  if (report.pass) {
    lines.push(report.verdict === 'exact' ? 'PASS (exact)' : report.verdict === 'quality-only' ? 'PASS (quality only: not a conversion of REF)' : finiteLine(report))
  } else {
    lines.push(`FAIL: ${report.failures.join('; ')}`)
    const where = divergenceText(report)
    if (where) lines.push(where)
    if (report.layers && report.verdict === 'exact') lines.push(`per-layer max |Δh|: ${report.layers.map((l) => fmt(l.maxAbs)).join(' ')}`)
  }
  return lines
}
