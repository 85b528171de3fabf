/**
 * Shared memory the pool's encode tasks write their results into (EncodeTask.into, a scheme's
 * encodeInto), reused by the calling thread once it has read them. A result buffer per task, made
 * in a worker and moved here (or made and dropped in this thread), is freed only at that thread's
 * next collection, which V8 puts off until tens of MB have piled up, and glibc's heap keeps what it
 * gave (3B `--variants fp16,q8,q4,q4f16` on 2 workers: 285–289 MB at the end). Written in place,
 * the same few slots circulate and nothing is moved or copied.
 */
import {dtypeSize} from '../tensor/dtype.js'
import {schemeFor} from '../quant/index.js'
import {type Encoded, type Scheme, type SchemeParams} from '../quant/types.js'
import {type EncodeFileTask, type EncodeTask} from './tasks.js'

/** A slot taken for one task: its index (give it back) and a view of each part of the result. */
export interface Slot {
  index: number
  into: Encoded
}

/**
 * `count` slots of `slotBytes` in one SharedArrayBuffer, made on the first take. A slot is taken
 * for one task and given back (`give`) once its bytes were read; none free (or a result too big):
 * the task gets buffers of its own (`take` says undefined), so running out costs memory, never bytes.
 */
export class SharedSlots {
  private buffer: SharedArrayBuffer | undefined
  private readonly free: number[]
  /** Takes that found no slot free (tests, the bench: each one a task with buffers of its own). */
  misses = 0
  constructor(readonly slotBytes: number, readonly count: number) {
    this.free = Array.from({length: count}, (_, i) => count - 1 - i)
  }

  /** A free slot's first `bytes` bytes and its index (give it back with `give`), or undefined. */
  take(bytes: number): {index: number; bytes: Uint8Array} | undefined {
    if (bytes > this.slotBytes) return undefined
    if (this.free.length === 0) {
      this.misses++
      return undefined
    }
    this.buffer ??= new SharedArrayBuffer(this.slotBytes * this.count)
    const index = this.free.pop()!
    return {index, bytes: new Uint8Array(this.buffer, index * this.slotBytes, bytes)}
  }

  give(index: number): void {
    if (this.free.includes(index)) throw new Error(`internal error: slot ${index} given back twice`)
    this.free.push(index)
  }

  /** Slots free now (tests). */
  freeCount(): number {
    return this.free.length
  }

  /** Let the buffer go (the file is written; a later step makes a new one). */
  release(): void {
    this.buffer = undefined
  }

  /**
   * The parts of an encode task's result (bytes by part name), laid out one after another in a
   * slot, each from a multiple of `align` bytes (a kernel's Uint32Array or Float32Array view of
   * its part); undefined when no slot is free or they do not fit.
   */
  parts(sizes: Record<string, number>, align: number): Slot | undefined {
    const offsets: Array<[string, number, number]> = []
    let at = 0
    for (const [part, n] of Object.entries(sizes)) {
      at = Math.ceil(at / align) * align
      offsets.push([part, at, n])
      at += n
    }
    const slot = this.take(at)
    if (!slot) return undefined
    const into: Encoded = {}
    for (const [part, offset, n] of offsets) into[part] = slot.bytes.subarray(offset, offset + n)
    return {index: slot.index, into}
  }
}

/**
 * The slots of the MLX and GGUF quantizers' tasks (one row block of CHUNK_BYTES of f32 each, src/tensor/record.ts: at
 * most ~1/3 of it comes back, 8-bit codes with F32 scales and biases), one set for the process:
 * the blocks in flight on the pool (2 per worker), those computed ahead of a reader and the ones it
 * holds. 24 slots of 512 KiB: 12 MiB, made on the first quantizing task.
 */
let blockSlots: SharedSlots | undefined
export const BLOCK_SLOT_BYTES = 512 * 1024
export const BLOCK_SLOT_COUNT = 24

export function quantizerSlots(): SharedSlots {
  return (blockSlots ??= new SharedSlots(BLOCK_SLOT_BYTES, BLOCK_SLOT_COUNT))
}

/** A slot of `slots` for the result of `rows` rows of `cols` values encoded by `scheme` (parts aligned for the kernels' word views), or undefined. */
export function resultSlot(slots: SharedSlots, scheme: Scheme, params: SchemeParams, rows: number, cols: number): Slot | undefined {
  if (!scheme.encodeInto) return undefined
  const sizes: Record<string, number> = {}
  for (const p of scheme.parts(params, cols)) sizes[p.name] = rows * p.perRow * dtypeSize(p.dtype)
  return slots.parts(sizes, 8)
}

/** `task` with a slot of `slots` for its result (its index, to give back once the result was read), or as it is when none is free. */
export function withSlot<T extends EncodeTask | EncodeFileTask>(slots: SharedSlots, task: T): {task: T; slot: number | undefined} {
  const slot = resultSlot(slots, schemeFor(task.scheme), task.params, task.rows, task.cols)
  return slot ? {task: {...task, into: slot.into}, slot: slot.index} : {task, slot: undefined}
}
