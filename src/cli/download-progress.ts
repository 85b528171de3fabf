/** One line per download event for a person watching a TTY: bytes, speed and ETA. */
import {type DownloadEvent} from '../hub/download.js'
import {bytes} from './render.js'

export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

export function downloadLine(event: DownloadEvent): string {
  const size = event.total === undefined ? bytes(event.bytes) : `${bytes(event.bytes)}/${bytes(event.total)}`
  const percent = event.total ? ` ${Math.floor((100 * event.bytes) / event.total)}%` : ''
  const resumed = event.resumedFrom > 0 ? ` (resumed at ${bytes(event.resumedFrom)})` : ''
  const speed = event.bytesPerSecond > 0 ? ` ${bytes(event.bytesPerSecond)}/s` : ''
  const tail = event.done ? ' done' : event.etaSeconds === undefined ? '' : ` ETA ${duration(event.etaSeconds)}`
  return `downloading ${event.file}${percent} ${size}${speed}${tail}${resumed}`
}
