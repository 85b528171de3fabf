/**
 * A WebAssembly SIMD (f32x4) matmul kernel, assembled here byte by byte (no toolchain needed):
 *   kernel(x, T, K, w, r0, r1, out, outStride, outOffset)
 * with x, w, out byte addresses in a shared memory imported as env.mem, for rows t in [0, T) of x
 * (T even) and rows r in [r0, r1) of w ((r1 − r0) a multiple of 4, K a multiple of 4):
 *   out[t·outStride + outOffset + r] = Σ_k x[t·K + k] · w[r·K + k]
 * Two rows of x against four rows of w per step: 8 f32x4 accumulators, 6 loads per 8 mul-adds.
 * Accumulates in f32 (4 lanes, summed at the end), like PyTorch's CPU kernels.
 */
import {get, i32c as i32, name, section, set, tee, u32, vec} from '../../simd/asm.js'

// opcodes beyond the shared encoders (src/simd/asm.ts)
const ADD = [0x6a]
const MUL = [0x6c]
const SHL = [0x74]
const LT_S = [0x48]
const GT_S = [0x4a]
const V128_LOAD = [0xfd, 0x00, 0x02, 0x00] // align 2^2, offset 0 (unaligned loads are fine)
const F32X4_MUL = [0xfd, ...u32(0xe6)]
const F32X4_ADD = [0xfd, ...u32(0xe4)]
const V128_ZERO = [0xfd, 0x0c, ...new Array<number>(16).fill(0)]
const lane = (l: number) => [0xfd, 0x1f, l]
const F32_ADD = [0x92]
const F32_STORE = [0x38, 0x02, 0x00]
const BLOCK = [0x02, 0x40]
const LOOP = [0x03, 0x40]
const END = [0x0b]
const br = (depth: number) => [0x0c, depth]
const brIf = (depth: number) => [0x0d, depth]

// params 0..8: x, T, K, w, r0, r1, out, outStride, outOffset
const [X, T, K, W, R0, R1, OUT, STRIDE, OFFSET] = [0, 1, 2, 3, 4, 5, 6, 7, 8]
// i32 locals 9..19, v128 locals 20..30
const [KB, R, TT, KK, PX0, PX1, PW0, PW1, PW2, PW3, O] = [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
const ACC = [20, 21, 22, 23, 24, 25, 26, 27]
const [XV0, XV1, WV] = [28, 29, 30]

const hsum = (a: number) => [...get(a), ...lane(0), ...get(a), ...lane(1), ...F32_ADD, ...get(a), ...lane(2), ...F32_ADD, ...get(a), ...lane(3), ...F32_ADD]
const mulAdd = (acc: number, xv: number) => [...get(acc), ...get(xv), ...get(WV), ...F32X4_MUL, ...F32X4_ADD, ...set(acc)]
const loadW = (pw: number, j: number) => [...get(pw), ...get(KK), ...ADD, ...V128_LOAD, ...set(WV), ...mulAdd(ACC[j]!, XV0), ...mulAdd(ACC[j + 4]!, XV1)]
const store = (rowAcc: number) => [0, 1, 2, 3].flatMap((j) => [...get(O), ...i32(4 * j), ...ADD, ...hsum(rowAcc + j), ...F32_STORE])

const body = [
  ...get(K), ...i32(2), ...SHL, ...set(KB),
  ...get(R0), ...set(R),
  ...BLOCK, ...LOOP, // over groups of 4 rows of w
  ...get(R), ...i32(4), ...ADD, ...get(R1), ...GT_S, ...brIf(1),
  ...i32(0), ...set(TT),
  ...BLOCK, ...LOOP, // over pairs of rows of x
  ...get(TT), ...i32(2), ...ADD, ...get(T), ...GT_S, ...brIf(1),
  ...ACC.flatMap((a) => [...V128_ZERO, ...set(a)]),
  ...get(X), ...get(TT), ...get(KB), ...MUL, ...ADD, ...tee(PX0), ...get(KB), ...ADD, ...set(PX1),
  ...get(W), ...get(R), ...get(KB), ...MUL, ...ADD, ...tee(PW0), ...get(KB), ...ADD, ...tee(PW1), ...get(KB), ...ADD, ...tee(PW2), ...get(KB), ...ADD, ...set(PW3),
  ...i32(0), ...set(KK),
  ...LOOP, // over k, 4 floats at a time
  ...get(PX0), ...get(KK), ...ADD, ...V128_LOAD, ...set(XV0),
  ...get(PX1), ...get(KK), ...ADD, ...V128_LOAD, ...set(XV1),
  ...loadW(PW0, 0), ...loadW(PW1, 1), ...loadW(PW2, 2), ...loadW(PW3, 3),
  ...get(KK), ...i32(16), ...ADD, ...tee(KK), ...get(KB), ...LT_S, ...brIf(0),
  ...END,
  // O = out + ((t·outStride + outOffset + r) << 2); row t, then row t + 1
  ...get(OUT), ...get(TT), ...get(STRIDE), ...MUL, ...get(OFFSET), ...ADD, ...get(R), ...ADD, ...i32(2), ...SHL, ...ADD, ...set(O),
  ...store(ACC[0]!),
  ...get(O), ...get(STRIDE), ...i32(2), ...SHL, ...ADD, ...set(O),
  ...store(ACC[4]!),
  ...get(TT), ...i32(2), ...ADD, ...set(TT), ...br(0),
  ...END, ...END,
  ...get(R), ...i32(4), ...ADD, ...set(R), ...br(0),
  ...END, ...END,
]

/** Largest shared memory the engine may use (2 GiB): 32768 pages of 64 KiB. */
export const MAX_PAGES = 32768

const func = [...vec([[...u32(11), 0x7f], [...u32(11), 0x7b]]), ...body, ...END]

export const SIMD_KERNEL_BYTES = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  ...section(1, vec([[0x60, ...vec(new Array<number[]>(9).fill([0x7f])), 0x00]])),
  ...section(2, vec([[...name('env'), ...name('mem'), 0x02, 0x03, ...u32(1), ...u32(MAX_PAGES)]])),
  ...section(3, vec([[0x00]])),
  ...section(7, vec([[...name('kernel'), 0x00, 0x00]])),
  ...section(10, vec([[...u32(func.length), ...func]])),
])

/** The slice of the WebAssembly API used here (the project's TS lib has no DOM types). */
export interface WasmModule {
  readonly kind?: 'module'
}
export interface WasmMemory {
  readonly buffer: ArrayBufferLike
  grow(pages: number): number
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean
  Module: new (bytes: Uint8Array) => WasmModule
  Instance: new (module: WasmModule, imports: object) => {exports: Record<string, unknown>}
  Memory: new (descriptor: {initial: number; maximum: number; shared: boolean}) => WasmMemory
}
export const wasm = (globalThis as unknown as {WebAssembly: WasmApi}).WebAssembly

/** The compiled module, or undefined where this runtime lacks WebAssembly SIMD. */
export function simdModule(): WasmModule | undefined {
  try {
    return wasm.validate(SIMD_KERNEL_BYTES) ? new wasm.Module(SIMD_KERNEL_BYTES) : undefined
  } catch {
    return undefined
  }
}
