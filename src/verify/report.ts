/** The readable form of a verification report (lines of text; the command prints them). */
import {table} from '../cli/render.js'
import {fmt} from './compare.js'
import {divergenceText, type VerifyReport} from './index.js'

export function reportLines(report: VerifyReport): string[] {
  const lines: string[] = []
  const side = (label: string, s: VerifyReport['model']): string =>
    `${label}: ${s.path} (${s.format}, ${s.dtype}${s.quantization ? `, ${s.quantization.bits}-bit ${s.quantization.mode} g${s.quantization.groupSize}` : ''}, vocab ${s.vocab}) ${s.seconds.toFixed(2)} s`
  lines.push(side('model', report.model))
  if (report.against) lines.push(side('against', report.against))
  lines.push(`backend ${report.backend} (device ${report.device}), ${report.tokens.length} tokens: ${report.tokens.slice(0, 12).join(',')}${report.tokens.length > 12 ? ',…' : ''}`)
  if (report.summary) {
    lines.push(`logits ${report.summary.finite ? 'finite' : 'contain NaN/Inf'}, range [${fmt(report.summary.logitMin)}, ${fmt(report.summary.logitMax)}]`)
    lines.push(`top-1 per position: ${report.summary.top1.join(' ')}`)
  }
  if (report.logits && report.thresholds) {
    const m = report.logits
    const t = report.thresholds
    const row = (name: string, value: number, limit: string, ok: boolean): string[] => [name, fmt(value), limit, ok ? 'ok' : 'FAIL']
    const rows = [
      row('max abs diff', m.maxAbs, t.maxAbs === undefined ? '-' : `≤ ${fmt(t.maxAbs)}`, t.maxAbs === undefined || m.maxAbs <= t.maxAbs),
      row('mean abs diff', m.meanAbs, '-', true),
      row('cosine similarity', m.cosine, '-', true),
      row('top-1 agreement', m.top1, t.minTop1 === undefined ? '-' : `≥ ${fmt(t.minTop1)}`, t.minTop1 === undefined || m.top1 >= t.minTop1),
      row('mean KL (nats)', m.meanKl, t.maxMeanKl === undefined ? '-' : `≤ ${fmt(t.maxMeanKl)}`, t.maxMeanKl === undefined || m.meanKl <= t.maxMeanKl),
    ]
    if (report.weights) {
      const w = report.weights
      rows.push(['weights', `${w.identical}/${w.tensors} identical`, w.mode === 'exact' ? 'bit-exact' : 'within bound', w.failing.length === 0 ? 'ok' : 'FAIL'])
    }
    lines.push(`path: ${report.path}`)
    lines.push(table(['check', 'value', 'threshold', 'result'], rows))
  }
  if (report.savedLogits) lines.push(`logits saved to ${report.savedLogits}`)
  if (report.pass) {
    lines.push('PASS')
  } else {
    lines.push(`FAIL: ${report.failures.join('; ')}`)
    const where = divergenceText(report)
    if (where) lines.push(where)
    if (report.layers) lines.push(`per-layer max |Δh|: ${report.layers.map((l) => fmt(l.maxAbs)).join(' ')}`)
  }
  return lines
}
