/**
 * Transposing blocks of 16- and 32-bit elements in WebAssembly SIMD (the ONNX writer's [out, in] →
 * [in, out] MatMul weights, src/formats/onnx/transpose.ts). A plain element loop writes each value
 * a whole output row away from the last (a cache line and often a page per element: ~20 ns an
 * element on this machine); here 8×8 (16-bit) or 4×4 (32-bit) tiles are loaded as rows, transposed
 * in registers by three (two) rounds of lane interleaving, and stored as rows. The result is a plain
 * permutation of the bytes, so it is checked against the element loop (test/simd-transpose.test.ts).
 *
 * The module owns its memory. TransposeKernel (`BLOCK_BYTES` of input and as much output): callers
 * copy a block in, run the kernel and copy the rows out, all synchronously, so one instance per
 * thread serves every record. TransposeWindow (a whole window of output rows plus two band slots,
 * an instance per window buffer): bands are read into it and transposed in place, no copies.
 * OPENELM_SIMD=0 (or no WebAssembly SIMD) leaves callers on their scalar loops.
 */
import {assemble, type Func, get, I32, I32_ADD, I32_MUL, i32c, instantiateSimd, lazyKernels, set, V128, v128Load, v128Store} from './asm.js'
import {forLoop} from './kernels.js'

/** Bytes of one input block (and of its transposed output) the module holds. */
export const BLOCK_BYTES = 4 * 1024 * 1024
const IN = 0
const OUT = BLOCK_BYTES
const PAGES = (2 * BLOCK_BYTES) >>> 16
/** Columns per kernel call: 16 rows written at a time was the fastest of 8–128 (0.25 ns an element). */
const STRIP = 16
/**
 * Tiles per step down a strip (the s16/s32 kernels): 4 tiles, one under the other, write a whole
 * 64-byte line of each of their output rows at once. One tile wrote 16 (f32) or 16 of 64 bytes of
 * 16 rows' lines per step, and with a power-of-two output stride (2048 rows of f32: 8 KiB) those 16
 * lines share one L1 set and were evicted half written: 1.1B's f32 shapes went from 7.4 / 12.2 /
 * 3.8–5.9 GB/s (2048×2048, 5632×2048, 2048×5632) to 12.8 / 12.8 / 12.7, f16's from 6.3 / 8.8 /
 * 3.5–6.8 to 7.4 / 8.2 / 9.5 (bands a multiple of 32 rows, src/formats/onnx/transpose.ts).
 */
const STACK = 4

const shuffle = (lanes: number[]) => [0xfd, 0x0d, ...lanes]
const range = (from: number, n: number) => Array.from({length: n}, (_, i) => from + i)
/** Interleave `unit`-byte pieces of the low (or high) halves of two vectors. */
const interleave = (unit: number, high: boolean) => shuffle(Array.from({length: 16 / unit / 2}, (_, i) => {
  const at = (high ? 8 : 0) + i * unit
  return [...range(at, unit), ...range(16 + at, unit)]
}).flat())
const LO16 = interleave(2, false)
const HI16 = interleave(2, true)
const LO32 = interleave(4, false)
const HI32 = interleave(4, true)
const LO64 = interleave(8, false)
const HI64 = interleave(8, true)

/**
 * tN(src, dst, rows, cols, srcStride, dstStride): element (r, c) at src + r·srcStride + c·size goes
 * to dst + c·dstStride + r·size, for r < rows and c < cols, both multiples of the tile (8 for 16-bit,
 * 4 for 32-bit); strides in bytes. `stack` tiles, one under the other, per step (rows a multiple of
 * stack tiles).
 */
function transposeFunc(fname: string, size: 2 | 4, stack = 1): Func {
  const [SRC, DST, NR, NC, SS, DS, R, C, P] = [0, 1, 2, 3, 4, 5, 6, 7, 8]
  const tile = 16 / size
  const A = range(9, tile)
  const B = range(9 + tile, tile)
  const pair = (op: number[], x: number, y: number) => [...get(x), ...get(y), ...op]
  const rounds: Array<{lo: number[]; hi: number[]}> = size === 2
    ? [{lo: LO16, hi: HI16}, {lo: LO32, hi: HI32}, {lo: LO64, hi: HI64}]
    : [{lo: LO32, hi: HI32}, {lo: LO64, hi: HI64}]
  const body: number[] = []
  for (let k = 0; k < stack; k++) {
    // P = src + (r + k·tile)·srcStride + c·size; load the tile's rows.
    body.push(...get(SRC), ...get(R), ...i32c(k * tile), ...I32_ADD, ...get(SS), ...I32_MUL, ...I32_ADD, ...get(C), ...i32c(size), ...I32_MUL, ...I32_ADD, ...set(P))
    for (const a of A) body.push(...get(P), ...v128Load(0), ...set(a), ...get(P), ...get(SS), ...I32_ADD, ...set(P))
    // Round k pairs vector j of each group of 2^k with vector j of the next group (rows, then row
    // pairs, then quads); after the last round, vector j holds column j of the tile.
    let from = A
    let to = B
    for (const [round, {lo, hi}] of rounds.entries()) {
      const group = 2 ** round
      let out = 0
      for (let g = 0; g < tile; g += 2 * group) {
        for (let j = 0; j < group; j++) {
          body.push(...pair(lo, from[g + j]!, from[g + group + j]!), ...set(to[out++]!), ...pair(hi, from[g + j]!, from[g + group + j]!), ...set(to[out++]!))
        }
      }
      ;[from, to] = [to, from]
    }
    // Store the columns as rows: P = dst + c·dstStride + (r + k·tile)·size.
    body.push(...get(DST), ...get(C), ...get(DS), ...I32_MUL, ...I32_ADD, ...get(R), ...i32c(k * tile), ...I32_ADD, ...i32c(size), ...I32_MUL, ...I32_ADD, ...set(P))
    for (const v of from) body.push(...get(P), ...get(v), ...v128Store(0), ...get(P), ...get(DS), ...I32_ADD, ...set(P))
  }
  return {
    name: fname, params: 6, locals: [[3, I32], [2 * tile, V128]],
    body: forLoop(R, NR, tile * stack, forLoop(C, NC, tile, body)),
  }
}

/** A module of `pages` pages of memory (assembled on first use). */
function transposeBytes(pages = PAGES): Uint8Array {
  return assemble([transposeFunc('t16', 2), transposeFunc('t32', 4), transposeFunc('s16', 2, STACK), transposeFunc('s32', 4, STACK)], pages)
}

type Fn = (...args: number[]) => void
interface Exports {t16: Fn; t32: Fn; s16: Fn; s32: Fn; mem: {buffer: ArrayBuffer}}

/** Transposing within one module's memory: the tile kernel in strips, the edges byte by byte. */
class InMemory {
  protected readonly u8: Uint8Array
  constructor(private readonly x: Exports) {
    this.u8 = new Uint8Array(x.mem.buffer)
  }

  /**
   * Columns [first, first + cols) of the `rows` × `stride` block at `src` (elements of `size` bytes,
   * row-major, offsets in this memory) to dst + c·dstStride + r·size.
   */
  protected transpose(src: number, rows: number, stride: number, first: number, cols: number, size: 2 | 4, dst: number, dstStride: number): void {
    const tile = 16 / size
    const u8 = this.u8
    const rowBytes = stride * size
    const mainRows = rows - (rows % tile)
    const mainCols = cols - (cols % tile)
    // In strips of columns, so that the rows being written stay few (cache lines and pages): rows by
    // STACK tiles, the rest (fewer than STACK tiles) a tile at a time.
    const run = size === 2 ? this.x.t16 : this.x.t32
    const stacked = size === 2 ? this.x.s16 : this.x.s32
    const stackRows = mainRows - (mainRows % (tile * STACK))
    for (let c = 0; mainRows > 0 && c < mainCols; c += STRIP) {
      const n = Math.min(STRIP, mainCols - c)
      if (stackRows > 0) stacked(src + (first + c) * size, dst + c * dstStride, stackRows, n, rowBytes, dstStride)
      if (stackRows < mainRows) run(src + stackRows * rowBytes + (first + c) * size, dst + c * dstStride + stackRows * size, mainRows - stackRows, n, rowBytes, dstStride)
    }
    // The edges (rows or columns past the last whole tile), byte by byte.
    const edge = (r0: number, r1: number, c0: number, c1: number) => {
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) {
          const s = src + r * rowBytes + (first + c) * size
          const d = dst + c * dstStride + r * size
          for (let b = 0; b < size; b++) u8[d + b] = u8[s + b]!
        }
      }
    }
    edge(mainRows, rows, 0, cols)
    edge(0, mainRows, mainCols, cols)
  }
}

/** This thread's transpose kernel over its own memory. */
export class TransposeKernel extends InMemory {
  /**
   * Transpose the `cols` columns from `first` of the `rows` × `stride` block `src` (elements of
   * `size` bytes, row-major) into `into(c, bytes)`: called once per column c < cols with that
   * column's `rows` elements, valid until the next call. False (nothing done) when the block does
   * not fit the module's memory or the element size has no kernel; the caller transposes it.
   */
  columns(src: Uint8Array, rows: number, stride: number, first: number, cols: number, size: number, into: (c: number, bytes: Uint8Array) => void): boolean {
    if ((size !== 2 && size !== 4) || src.byteLength > BLOCK_BYTES || rows * cols * size > BLOCK_BYTES) return false
    this.u8.set(src, IN)
    const colBytes = rows * size
    this.transpose(IN, rows, stride, first, cols, size, OUT, colBytes)
    for (let c = 0; c < cols; c++) into(c, this.u8.subarray(OUT + c * colBytes, OUT + (c + 1) * colBytes))
    return true
  }
}

/**
 * A window of transposed rows that lives in a kernel module's memory, with room for two source bands
 * after it: a band is read straight into `band(slot)` and transposed straight into the window (the
 * window is `new Uint8Array(buffer, 0, n)`, n ≤ `windowBytes`), with no copy in between; the other
 * slot takes the next band meanwhile.
 */
export class TransposeWindow extends InMemory {
  readonly buffer: ArrayBuffer
  /** Room for the window (the two bands' room comes after it). */
  readonly windowBytes: number
  constructor(x: Exports, windowBytes: number) {
    super(x)
    this.buffer = x.mem.buffer
    this.windowBytes = windowBytes
  }

  /** Whether a window of `windowBytes` built from bands of `bandElements` elements of `size` bytes fits, with a kernel. */
  fits(windowBytes: number, bandElements: number, size: number): size is 2 | 4 {
    return (size === 2 || size === 4) && windowBytes <= this.windowBytes && bandElements * size <= BLOCK_BYTES
  }

  /** The first `byteLength` bytes (at most BLOCK_BYTES) of band slot 0 or 1. */
  band(slot: number, byteLength: number): Uint8Array {
    const at = this.windowBytes + slot * BLOCK_BYTES
    return this.u8.subarray(at, at + byteLength)
  }

  /**
   * Columns [first, first + cols) of the `rows` × `stride` band in `slot` into the window as rows:
   * element (r, c) to window byte c·dstStride + dst + r·size (what `fits` allowed).
   */
  columns(slot: number, rows: number, stride: number, first: number, cols: number, size: 2 | 4, dst: number, dstStride: number): void {
    if (rows * stride * size > BLOCK_BYTES || (cols > 0 && rows > 0 && dst + (cols - 1) * dstStride + rows * size > this.windowBytes)) {
      throw new RangeError(`transpose window: a ${rows} × ${stride} band into ${cols} rows of ${dstStride} bytes does not fit`)
    }
    this.transpose(this.windowBytes + slot * BLOCK_BYTES, rows, stride, first, cols, size, dst, dstStride)
  }
}

const thisThread = lazyKernels(transposeBytes, (exports) => new TransposeKernel(exports as unknown as Exports))
const WINDOWS = new WeakMap<ArrayBuffer, TransposeWindow>()

/** This thread's transpose kernel, or undefined without WebAssembly SIMD (or with OPENELM_SIMD=0). */
export function transposeKernel(): TransposeKernel | undefined {
  return thisThread.get()
}

/**
 * A new window of `windowBytes` (plus two bands' room) in its own module memory, or undefined
 * without WebAssembly SIMD (or with OPENELM_SIMD=0). `transposeWindowOf(buffer)` finds it again.
 */
export function transposeWindow(windowBytes: number): TransposeWindow | undefined {
  if (!transposeKernel()) return undefined
  const room = Math.ceil(windowBytes / 65_536) * 65_536
  const exports = instantiateSimd(() => transposeBytes((room + 2 * BLOCK_BYTES) >>> 16))
  if (!exports) return undefined
  const window = new TransposeWindow(exports as unknown as Exports, room)
  WINDOWS.set(window.buffer, window)
  return window
}

/** The window whose memory `buffer` is, if it is one (and SIMD is still on). */
export function transposeWindowOf(buffer: ArrayBufferLike): TransposeWindow | undefined {
  return transposeKernel() ? WINDOWS.get(buffer as ArrayBuffer) : undefined
}

/** Forget the cached choice (tests switch OPENELM_SIMD). */
export function resetTransposeKernel(): void {
  thisThread.reset()
}
