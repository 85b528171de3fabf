/**
 * `fmaf`: C's single-precision fused multiply-add, a·b + c with ONE rounding to f32, for f32 inputs.
 * What a compiler that contracts `a*b + c` (clang's -ffp-contract=on, GCC's default `fast`, any
 * FMA target) computes where the C says two f32 operations.
 *
 * a·b of two f32 values is exact in f64 (24 + 24 bits). p + c in f64 is one rounding, and rounding
 * that f64 to f32 is a second one, which can land on the wrong side of an f32 tie. So the f64 sum is
 * made round-to-odd instead (TwoSum gives its exact error e; when e ≠ 0 and the sum's last bit is
 * even, it moves one ulp toward e): with 53 ≥ 2·24 + 2 bits, rounding a round-to-odd value to f32
 * equals rounding the exact value once.
 */
const fr = Math.fround
const D = new Float64Array(1)
const W = new Uint32Array(D.buffer) // little-endian: W[0] the low word, W[1] the sign and exponent

export function fmaf(a: number, b: number, c: number): number {
  const p = a * b
  const s = p + c
  if (!Number.isFinite(s)) return fr(s)
  const bb = s - p
  const e = p - (s - bb) + (c - bb)
  if (e === 0) return fr(s)
  D[0] = s
  if ((W[0]! & 1) === 0) {
    // toward e: away from zero when e has s's sign, else toward zero (s ≠ 0 here: s = 0 means e = 0)
    if (e > 0 === s > 0) W[0] = W[0]! + 1 // even: no carry
    else if (W[0] === 0) {
      W[0] = 0xffffffff
      W[1] = W[1]! - 1
    } else W[0] = W[0]! - 1
  }
  return fr(D[0]!)
}
