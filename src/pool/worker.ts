/**
 * A pool worker: runs tasks (src/pool/tasks.ts) posted by the pool and posts the results back,
 * moving (transferring) the result buffers rather than copying them.
 */
import {parentPort} from 'node:worker_threads'
import {OpenElmError} from '../errors.js'
import {type AnyResult, buffersOf, resultViews, runTask, spentBuffers, type Task, taskViews} from './tasks.js'

export interface TaskMessage {
  id: number
  task: Task
}

export type ReplyMessage =
  /** `spent`: the task's input buffers that the result does not use, moved back for the pool to reuse (src/pool/index.ts). */
  | {id: number; ok: true; result: AnyResult; spent: ArrayBuffer[]}
  | {id: number; ok: false; error: {name: string; kind?: string; code?: string; message: string; details?: Record<string, unknown>}}

if (!parentPort) throw new Error('src/pool/worker is a worker_threads entry point')
const port = parentPort
port.on('message', ({id, task}: TaskMessage) => {
  let reply: ReplyMessage
  let transfer: ArrayBuffer[] = []
  try {
    // A task with `into` wrote its result in place (shared memory): nothing of it is moved back.
    const result = runTask(task)
    const spent = spentBuffers(task, result)
    reply = {id, ok: true, result, spent}
    transfer = [...buffersOf(resultViews(result)), ...spent]
  } catch (error) {
    const e = error as Error
    reply = {id, ok: false, error: e instanceof OpenElmError ? {name: e.name, kind: e.kind, code: e.code, message: e.message, details: e.details} : {name: e?.name ?? 'Error', message: String(e?.message ?? e)}}
  }
  port.postMessage(reply, transfer)
})
