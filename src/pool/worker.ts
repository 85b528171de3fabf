/**
 * A pool worker: runs tasks (src/pool/tasks.ts) posted by the pool and posts the results back,
 * moving (transferring) the result buffers rather than copying them.
 */
import {parentPort} from 'node:worker_threads'
import {OpenElmError} from '../errors.js'
import {type Encoded} from '../quant/types.js'
import {type AnyResult, buffersOf, freeBuffers, resultViews, runTask, spentBuffers, type Task, taskViews} from './tasks.js'

export interface TaskMessage {
  id: number
  task: Task
  /** Result buffers the caller is done with (src/pool/index.ts recycleResult), moved here for this worker's results. */
  spare?: ArrayBuffer[]
}

export type ReplyMessage =
  /** `spent`: the task's input buffers that the result does not use, moved back for the pool to reuse (src/pool/index.ts). */
  | {id: number; ok: true; result: AnyResult; spent: ArrayBuffer[]}
  | {id: number; ok: false; error: {name: string; kind?: string; code?: string; message: string; details?: Record<string, unknown>}}

/** Result buffers moved here by the pool, the newest last; the oldest beyond MAX_SPARES are dropped. */
const spares: ArrayBuffer[] = []
const MAX_SPARES = 8

/**
 * An encode's parts copied into buffers the pool gave back (each fitting a part: as large, at most
 * twice), so that the buffers moved to the calling thread are the same few ones again and again
 * (src/pool/index.ts recycleResult); parts that no spare fits go as they are. The kernel's own
 * arrays that were copied are freed at once (freeBuffers): left to the GC, a worker held tens of MB
 * of them (1.1B → MLX 8-bit on 2 workers: peak RSS 277 MB).
 */
function intoSpares(task: Task, result: Encoded): Encoded {
  const copied = new Set<ArrayBuffer>()
  for (const [name, part] of Object.entries(result)) {
    let i = spares.length - 1
    while (i >= 0 && !(spares[i]!.byteLength >= part.byteLength && spares[i]!.byteLength <= 2 * part.byteLength)) i--
    if (i < 0) continue
    const view = new Uint8Array(spares.splice(i, 1)[0]!, 0, part.byteLength)
    view.set(part)
    result[name] = view
    if (part.buffer instanceof ArrayBuffer) copied.add(part.buffer)
  }
  // Not a buffer some part still uses, nor one of the task's inputs (moved back as spent, or the caller's).
  const kept = new Set([...buffersOf(resultViews(result)), ...buffersOf(taskViews(task))])
  const free = [...copied].filter((b) => !kept.has(b))
  freeBuffers(free)
  return result
}

if (!parentPort) throw new Error('src/pool/worker is a worker_threads entry point')
const port = parentPort
port.on('message', ({id, task, spare}: TaskMessage) => {
  let reply: ReplyMessage
  let transfer: ArrayBuffer[] = []
  if (spare) {
    spares.push(...spare)
    spares.splice(0, Math.max(0, spares.length - MAX_SPARES))
  }
  try {
    let result = runTask(task)
    // A task with `into` wrote its result in place (shared memory): nothing to move back.
    if ((task.kind === 'encode' || task.kind === 'encodeFile') && !task.into) result = intoSpares(task, result as Encoded)
    const spent = spentBuffers(task, result)
    reply = {id, ok: true, result, spent}
    transfer = [...buffersOf(resultViews(result)), ...spent]
  } catch (error) {
    const e = error as Error
    reply = {id, ok: false, error: e instanceof OpenElmError ? {name: e.name, kind: e.kind, code: e.code, message: e.message, details: e.details} : {name: e?.name ?? 'Error', message: String(e?.message ?? e)}}
  }
  port.postMessage(reply, transfer)
})
