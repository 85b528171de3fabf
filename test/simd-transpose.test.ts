import {afterEach, describe, expect, it} from 'vitest'
import {BLOCK_BYTES, resetTransposeKernel, transposeKernel} from '../src/simd/transpose.js'

/** The element loop the kernel replaces: column c of the block as `rows` elements. */
function reference(src: Uint8Array, rows: number, stride: number, first: number, cols: number, size: number): Uint8Array {
  const out = new Uint8Array(rows * cols * size)
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      for (let b = 0; b < size; b++) out[(c * rows + r) * size + b] = src[(r * stride + first + c) * size + b]!
    }
  }
  return out
}

describe('SIMD transpose kernel', () => {
  afterEach(() => {
    delete process.env.OPENELM_SIMD
    resetTransposeKernel()
  })

  it('gives the element loop\'s bytes for 16- and 32-bit elements, whole tiles, edges and column windows', () => {
    const kernel = transposeKernel()
    expect(kernel).toBeDefined()
    const shapes: Array<[number, number, number, number]> = [
      [8, 8, 0, 8], [4, 4, 0, 4], [16, 24, 8, 16], [13, 29, 3, 21], [1, 9, 0, 9], [9, 1, 0, 1], [37, 53, 5, 40], [64, 200, 17, 150], [45, 40, 3, 36], [100, 64, 0, 64], [1024, 2048, 1024, 1024],
    ]
    for (const size of [2, 4]) {
      for (const [rows, stride, first, cols] of shapes) {
        if (rows * stride * size > BLOCK_BYTES) continue
        const src = new Uint8Array(rows * stride * size)
        for (let i = 0; i < src.length; i++) src[i] = (i * 131 + 7 + (i >> 8)) & 255
        const got = new Uint8Array(rows * cols * size)
        const seen = new Set<number>()
        expect(kernel!.columns(src, rows, stride, first, cols, size, (c, bytes) => {
          seen.add(c)
          expect(bytes.byteLength).toBe(rows * size)
          got.set(bytes, c * rows * size)
        })).toBe(true)
        expect(seen.size, `${size} ${rows}x${stride}`).toBe(cols)
        expect(Buffer.from(got).equals(Buffer.from(reference(src, rows, stride, first, cols, size))), `size ${size}, ${rows}x${stride} from ${first}, ${cols} columns`).toBe(true)
      }
    }
  })

  it('declines what it has no kernel or memory for (the caller transposes it), and is off with OPENELM_SIMD=0', () => {
    const kernel = transposeKernel()!
    expect(kernel.columns(new Uint8Array(64), 8, 8, 0, 8, 1, () => undefined)).toBe(false)
    expect(kernel.columns(new Uint8Array(BLOCK_BYTES + 16), 8, (BLOCK_BYTES + 16) / 16, 0, 8, 2, () => undefined)).toBe(false)
    process.env.OPENELM_SIMD = '0'
    resetTransposeKernel()
    expect(transposeKernel()).toBeUndefined()
  })
})
