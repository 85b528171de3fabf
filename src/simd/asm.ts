/**
 * A few lines of WebAssembly assembler, the same mechanism as the verify engine's matmul kernel
 * (src/verify/engine/simd.ts): modules are written here as bytes, so no toolchain is needed and the
 * bytes are part of the source. Only what the kernels in src/simd/kernels.ts use.
 */

export const u32 = (n: number): number[] => {
  const out: number[] = []
  do {
    let b = n & 0x7f
    n >>>= 7
    if (n) b |= 0x80
    out.push(b)
  } while (n)
  return out
}
export const s32 = (n: number): number[] => {
  const out: number[] = []
  n |= 0
  for (;;) {
    const b = n & 0x7f
    n >>= 7
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) return [...out, b]
    out.push(b | 0x80)
  }
}
export const name = (s: string): number[] => [...u32(s.length), ...Buffer.from(s, 'utf8')]
export const section = (id: number, body: number[]): number[] => [id, ...u32(body.length), ...body]
export const vec = (items: number[][]): number[] => [...u32(items.length), ...items.flat()]

export const I32 = 0x7f
export const F32 = 0x7d
export const V128 = 0x7b

// ---- scalar instructions
export const get = (i: number) => [0x20, ...u32(i)]
export const set = (i: number) => [0x21, ...u32(i)]
export const tee = (i: number) => [0x22, ...u32(i)]
export const i32c = (n: number) => [0x41, ...s32(n)]
export const f32c = (x: number) => [0x43, ...new Uint8Array(new Float32Array([x]).buffer)]
export const I32_ADD = [0x6a]
export const I32_SUB = [0x6b]
export const I32_MUL = [0x6c]
export const I32_SHL = [0x74]
export const I32_SHR_U = [0x76]
export const I32_LT_U = [0x49]
export const I32_GE_U = [0x4f]
export const F32_ABS = [0x8b]
export const F32_NE = [0x5c]
export const F32_GT = [0x5e]
export const F32_DIV = [0x95]
export const F32_MAX = [0x97]
export const F32_MIN = [0x96]
export const SELECT = [0x1b]
export const i32Load = (offset = 0) => [0x28, 0x02, ...u32(offset)]
export const f32Load = (offset = 0) => [0x2a, 0x02, ...u32(offset)]
export const f32Store = (offset = 0) => [0x38, 0x02, ...u32(offset)]
export const i32Store16 = (offset = 0) => [0x3b, 0x01, ...u32(offset)]
export const BLOCK = [0x02, 0x40]
export const LOOP = [0x03, 0x40]
export const IF = [0x04, 0x40]
export const ELSE = [0x05]
export const END = [0x0b]
export const br = (depth: number) => [0x0c, ...u32(depth)]
export const brIf = (depth: number) => [0x0d, ...u32(depth)]

// ---- SIMD instructions (prefix 0xfd, LEB128 opcode)
const simd = (op: number) => [0xfd, ...u32(op)]
export const v128Load = (offset = 0) => [...simd(0x00), 0x00, ...u32(offset)]
export const v128Store = (offset = 0) => [...simd(0x0b), 0x00, ...u32(offset)]
/** v128.const with four i32 lanes. */
export const i32x4c = (a: number, b = a, c = a, d = a) => [...simd(0x0c), ...new Uint8Array(new Int32Array([a, b, c, d]).buffer)]
export const f32x4c = (x: number) => [...simd(0x0c), ...new Uint8Array(new Float32Array([x, x, x, x]).buffer)]
export const I32X4_SPLAT = simd(0x11)
export const F32X4_SPLAT = simd(0x13)
export const i32x4Lane = (l: number) => [...simd(0x1b), l]
export const f32x4Lane = (l: number) => [...simd(0x1f), l]
export const I32X4_EQ = simd(0x37)
export const I32X4_NE = simd(0x38)
export const I32X4_LT_S = simd(0x39)
export const I32X4_GT_S = simd(0x3b)
export const I32X4_GE_S = simd(0x3f)
export const F32X4_LT = simd(0x43)
export const F32X4_GE = simd(0x46)
export const V128_AND = simd(0x4e)
export const V128_OR = simd(0x50)
export const V128_BITSELECT = simd(0x52)
export const I8X16_NARROW_I16X8_S = simd(0x65)
export const I8X16_NARROW_I16X8_U = simd(0x66)
export const F32X4_TRUNC = simd(0x69)
export const F32X4_NEAREST = simd(0x6a)
export const I16X8_SHR_U = simd(0x8d)
export const I16X8_NARROW_I32X4_S = simd(0x85)
export const I16X8_NARROW_I32X4_U = simd(0x86)
export const I32X4_SHL = simd(0xab)
export const I32X4_SHR_U = simd(0xad)
export const I32X4_ADD = simd(0xae)
export const I32X4_SUB = simd(0xb1)
export const F32X4_ABS = simd(0xe0)
export const F32X4_ADD = simd(0xe4)
export const F32X4_SUB = simd(0xe5)
export const F32X4_MUL = simd(0xe6)
export const F32X4_DIV = simd(0xe7)
export const F32X4_PMIN = simd(0xea)
export const F32X4_PMAX = simd(0xeb)
export const I32X4_TRUNC_SAT_F32X4_S = simd(0xf8)
export const F32X4_CONVERT_I32X4_S = simd(0xfa)

export interface Func {
  name: string
  /** Number of i32 parameters (all parameters are i32). */
  params: number
  /** Local declarations after the parameters: [count, type]. */
  locals: Array<[number, number]>
  /** No result. */
  body: number[]
}

/** A module exporting `funcs` (each `(i32 …) → ()`) and its own memory of `pages` 64 KiB pages as `mem`. */
export function assemble(funcs: Func[], pages: number): Uint8Array {
  const types = funcs.map((f) => [0x60, ...vec(new Array<number[]>(f.params).fill([I32])), 0x00])
  const bodies = funcs.map((f) => {
    const code = [...vec(f.locals.map(([n, t]) => [...u32(n), t])), ...f.body, ...END]
    return [...u32(code.length), ...code]
  })
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(3, vec(funcs.map((_, i) => u32(i)))),
    ...section(5, vec([[0x01, ...u32(pages), ...u32(pages)]])),
    ...section(7, vec([...funcs.map((f, i) => [...name(f.name), 0x00, ...u32(i)]), [...name('mem'), 0x02, 0x00]])),
    ...section(10, vec(bodies)),
  ])
}

// ---- appended for src/simd/ggml.ts
export const F32X4_EQ = simd(0x41)
export const F32X4_NE = simd(0x42)
export const F32X4_GT = simd(0x44)
export const V128_NOT = simd(0x4d)
export const V128_ANDNOT = simd(0x4f)
export const V128_ANY_TRUE = simd(0x53)
export const F32X4_NEG = simd(0xe1)
export const I32X4_MIN_S = simd(0xb6)
export const I32X4_MAX_S = simd(0xb8)

/** `for (I = from; I < N; I += step) body`, I and N i32 locals. */
export const forRange = (I: number, from: number, N: number, step: number, body: number[]) => [
  ...i32c(from), ...set(I),
  ...BLOCK, ...get(I), ...get(N), ...I32_LT_U, 0x45 /* i32.eqz */, ...brIf(0),
  ...LOOP, ...body,
  ...get(I), ...i32c(step), ...I32_ADD, ...tee(I), ...get(N), ...I32_LT_U, ...brIf(0),
  ...END, ...END,
]
export const I32X4_SHR_S = simd(0xac)
export const i32Store = (offset = 0) => [0x36, 0x02, ...u32(offset)]
/** i8x16.shuffle of two vectors by f32 lanes: lanes[i] in 0 … 7 picks lane i of the result (4 … 7: the second vector). */
export const f32x4Shuffle = (lanes: [number, number, number, number]) => [...simd(0x0d), ...lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3])]
export const F32X4_SQRT = simd(0xe3)
export const I32X4_ALL_TRUE = simd(0xa3)

// ---- appended for the fused MLX fp kernels (src/simd/quant2.ts)
export const I32_AND = [0x71]
export const I32_OR = [0x72]
export const I32_SHR_S = [0x75]
export const I32_GT_U = [0x4b]
export const i32Store8 = (offset = 0) => [0x3a, 0x00, ...u32(offset)]

interface WasmApi {
  validate(bytes: Uint8Array): boolean
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object, imports: object) => {exports: Record<string, unknown>}
}

/**
 * The exports of an instance of the module `bytes()` makes (assembled only when it will be used),
 * or undefined without WebAssembly (SIMD), or with OPENELM_SIMD=0.
 */
export function instantiateSimd(bytes: () => Uint8Array): Record<string, unknown> | undefined {
  const wasm = (globalThis as unknown as {WebAssembly?: WasmApi}).WebAssembly
  if (process.env.OPENELM_SIMD === '0' || !wasm) return undefined
  try {
    const module = bytes()
    return wasm.validate(module) ? new wasm.Instance(new wasm.Module(module), {}).exports : undefined
  } catch {
    return undefined
  }
}

/**
 * A kernel module for this thread, assembled and instantiated on first use (not at import: every
 * command's start-up imports the kernel files): `get()` is undefined without WebAssembly SIMD (or
 * with OPENELM_SIMD=0); `reset()` forgets the choice (tests switch OPENELM_SIMD).
 */
export function lazyKernels<T>(bytes: () => Uint8Array, make: (exports: Record<string, unknown>) => T): {get(): T | undefined; reset(): void} {
  let kernels: T | null | undefined
  return {
    get() {
      if (kernels === undefined) {
        const exports = instantiateSimd(bytes)
        kernels = exports ? make(exports) : null
      }
      return kernels ?? undefined
    },
    reset() {
      kernels = undefined
    },
  }
}
