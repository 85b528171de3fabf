/**
 * Progress for a person watching a terminal, drawn in one place: one live line at a time — a
 * spinner with the phase's name and its elapsed time, or a byte bar with throughput and ETA —
 * redrawn from a timer (so it moves while the work is silent), and one final line per finished
 * step saying what it was and how long it took. Commands build it disabled under --json or when
 * stdout is not a TTY: then it writes nothing at all.
 */
import {type ProgressEvent} from '../formats/types.js'
import {duration} from './download-progress.js'
import {bytes} from './render.js'

/** How often the live line is redrawn (the spinner turns, the elapsed time and rate move). */
export const REDRAW_MS = 200

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']
const BAR_WIDTH = 20
/** A bar's rate and ETA are shown once this much time has passed (earlier figures are noise). */
const RATE_AFTER_MS = 500

interface Live {
  label: string
  started: number
  /** Byte bars only. */
  totalBytes?: number
  bytesDone?: number
  /** Phases that count what they go through: `45/130 tensors`. */
  count?: string
}

export interface RendererOptions {
  enabled: boolean
  /** Where the lines go (stderr: stdout stays the command's answer). */
  stream?: {write(text: string): unknown; columns?: number}
  now?: () => number
}

/** Seconds as a person reads them: 0.4s, 12.3s, 2m05s. */
export function elapsed(ms: number): string {
  return ms < 60_000 ? `${(ms / 1000).toFixed(1)}s` : duration(ms / 1000)
}

/** A byte bar's text: label, bar, percent, done/total, rate, ETA. */
export function barLine(label: string, done: number, total: number, ms: number): string {
  const fraction = total > 0 ? Math.min(1, done / total) : 1
  const filled = Math.round(fraction * BAR_WIDTH)
  const rate = ms >= RATE_AFTER_MS ? done / (ms / 1000) : 0
  const tail = rate > 0 ? ` ${bytes(rate)}/s ETA ${duration((total - done) / rate)}` : ''
  return `${label} [${'█'.repeat(filled)}${'░'.repeat(BAR_WIDTH - filled)}] ${Math.floor(fraction * 100)}% ${bytes(done)}/${bytes(total)}${tail}`
}

/** The final line of a finished step. */
export function doneLine(live: Live, ms: number, failed = false): string {
  const mark = failed ? '✗' : '✓'
  if (live.totalBytes === undefined) return `${mark} ${live.label} ${failed ? 'stopped after' : 'in'} ${elapsed(ms)}`
  const rate = ms > 0 ? ` (${bytes((live.bytesDone ?? 0) / (ms / 1000))}/s)` : ''
  return `${mark} ${live.label} ${bytes(live.bytesDone ?? 0)}${failed ? ` of ${bytes(live.totalBytes)}, stopped after` : ' in'} ${elapsed(ms)}${rate}`
}

export class ProgressRenderer {
  private live: Live | undefined
  private timer: NodeJS.Timeout | undefined
  private frame = 0
  private drawn = false
  private readonly stream: NonNullable<RendererOptions['stream']>
  private readonly now: () => number

  constructor(private readonly options: RendererOptions) {
    this.stream = options.stream ?? process.stderr
    this.now = options.now ?? (() => performance.now())
  }

  get enabled(): boolean {
    return this.options.enabled
  }

  /**
   * Start a phase (ending the one before, with its final line); no label just ends it. A step of
   * the live phase (`torch reference: load`) takes its place without a line for the phase itself:
   * its steps' lines say what it did.
   */
  phase(label?: string): void {
    if (!this.options.enabled) return
    if (label !== undefined && this.live && this.live.totalBytes === undefined && label.startsWith(`${this.live.label}: `)) this.live = undefined
    else this.finish()
    if (label !== undefined) this.begin({label, started: this.now()})
  }

  /** How far the live phase is: `done` of `total` `unit` (shown until the phase ends). */
  count(done: number, total: number, unit: string): void {
    if (!this.options.enabled || !this.live || this.live.totalBytes !== undefined) return
    this.live.count = `${done}/${total} ${unit}`
  }

  /** Render one library event (notes are the command's to print, through `log`). */
  event(event: ProgressEvent): void {
    if (!this.options.enabled) return
    switch (event.type) {
      case 'start': {
        // A write inside a phase (a roundtrip hop's "write mlx") is that phase, now with bytes.
        const within = this.live?.totalBytes === undefined ? this.live : undefined
        if (within) this.live = undefined
        else this.finish()
        const label = within ? `${within.label}: ${event.label}` : event.label
        this.begin({label, started: within?.started ?? this.now(), totalBytes: event.totalBytes, bytesDone: 0})
        break
      }
      case 'bytes':
      case 'tensor':
        if (this.live?.totalBytes !== undefined) {
          const wasDone = (this.live.bytesDone ?? 0) >= this.live.totalBytes
          this.live.bytesDone = event.bytesDone
          this.live.totalBytes = Math.max(this.live.totalBytes, event.totalBytes)
          // The full bar is drawn when the last byte lands, not only if a timer tick falls before the step ends.
          if (!wasDone && this.live.totalBytes > 0 && event.bytesDone >= this.live.totalBytes) this.draw()
        }
        break
      case 'phase':
        this.phase(event.label)
        break
      case 'count':
        this.count(event.done, event.total, event.unit)
        break
      case 'note':
        break
    }
  }

  /** Print a whole line above the live one (which is redrawn below it). */
  log(line: string): void {
    if (!this.options.enabled) return
    this.stream.write(`${this.drawn ? '\r\x1b[2K' : ''}${line}\n`)
    this.drawn = false
    this.draw()
  }

  /** End whatever is live (its final line says whether it completed) and stop the timer. */
  stop(failed = false): void {
    if (!this.options.enabled) return
    this.finish(failed)
  }

  private begin(live: Live): void {
    this.live = live
    this.frame = 0
    this.draw()
    if (!this.timer) {
      this.timer = setInterval(() => this.draw(), REDRAW_MS)
      this.timer.unref()
    }
  }

  private finish(failed = false): void {
    const live = this.live
    if (!live) return
    this.live = undefined
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    this.stream.write(`${this.drawn ? '\r\x1b[2K' : ''}${this.fit(doneLine(live, this.now() - live.started, failed))}\n`)
    this.drawn = false
  }

  /** A line never wraps: \r could not take a wrapped line back. */
  private fit(text: string): string {
    const columns = this.stream.columns && this.stream.columns > 10 ? this.stream.columns : 80
    return text.length < columns ? text : `${text.slice(0, columns - 2)}…`
  }

  private draw(): void {
    const live = this.live
    if (!live) return
    const ms = this.now() - live.started
    const spinner = FRAMES[this.frame++ % FRAMES.length]!
    const text = live.totalBytes === undefined
      ? `${spinner} ${live.label}… ${live.count ? `${live.count} ` : ''}${elapsed(ms)}`
      : `${spinner} ${barLine(live.label, live.bytesDone ?? 0, live.totalBytes, ms)}`
    this.stream.write(`${this.drawn ? '\r\x1b[2K' : ''}${this.fit(text)}`)
    this.drawn = true
  }
}
