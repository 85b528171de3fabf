/**
 * Logit-agreement thresholds for MLX outputs against their source (TS reference forward pass,
 * next-token distributions over a fixed prompt). Set from measurements on random-weight models
 * (the tiny fixture and a 270M-shape synth; docs/mlx.md has the table). Random weights give
 * flat next-token distributions with many near-ties, the hardest case for top-1 agreement; a
 * trained model's peaked distributions agree more.
 */
export interface AgreementThreshold {
  /** Fraction of positions whose argmax matches the source's. */
  minTop1: number
  /** Mean KL(source ‖ converted) of the next-token distributions, in nats. */
  maxMeanKl: number
}

/** DESIGN §5: 16-bit casts and 8-bit quantization. */
export const FLOAT16_THRESHOLD: AgreementThreshold = {minTop1: 0.99, maxMeanKl: 1e-3}
export const Q8_THRESHOLD: AgreementThreshold = {minTop1: 0.99, maxMeanKl: 1e-3}

/**
 * 4-bit (group 64 or 32). Measured: tiny fixture (128 positions) top-1 0.68–0.71, mean KL
 * 0.12–0.14; 270M-shape synth (32 / 64 positions) top-1 0.44, mean KL 0.25 / 0.30. Deliberately
 * broken quantization: MSB-first packing KL 3.1 / top-1 0.04, swapped scales and biases KL 54 /
 * top-1 0. The KL bound is 1.7× the worst good value and six times below the best broken one; the
 * top-1 floor is 3/4 of the lowest good value.
 */
export const Q4_THRESHOLD: AgreementThreshold = {minTop1: 0.33, maxMeanKl: 0.5}

export function mlxThreshold(bits: number | undefined): AgreementThreshold {
  if (bits === undefined) return FLOAT16_THRESHOLD
  if (bits >= 8) return Q8_THRESHOLD
  if (bits === 4) return Q4_THRESHOLD
  // 2, 3, 5, 6 bits: not characterised as a supported verify path; only a sanity floor.
  return {minTop1: 0.1, maxMeanKl: 2}
}
