/**
 * Per-module quantization for the mlx-lm layout: which bits each matrix gets.
 *
 * mlx-lm reads per-module choices from `config.json`: `quantization[<module path>]` is either
 * `{group_size, bits, mode}` (that module's parameters) or `false` (kept in float); a module with no
 * entry takes the top-level `{group_size, bits}` when its `.scales` exist (mlx_lm/utils.py,
 * `load_model`'s `class_predicate`). Module paths are the model's: `transformer.token_embeddings`,
 * `transformer.layers.N.attn.qkv_proj`, `transformer.layers.N.ffn.proj_2`, …
 *
 * mlx-lm's mixed recipes (`mixed_2_6`, `mixed_3_4`, `mixed_3_6`, `mixed_4_6`; mlx_lm/convert.py)
 * give the high width to `v_proj` and `down_proj` in the layers where
 * `i < n/8 or i >= 7n/8 or (i - n/8) % 3 == 2` (n/8 floored), and to `lm_head`; they look for
 * `down_proj` and raise on OpenELM. The OpenELM reading here: `proj_2` is the down projection,
 * `qkv_proj` holds the values (V cannot be given bits apart from Q and K in one matrix), and the
 * tied `token_embeddings` is the output head, so it takes the head's high width.
 */
import {UsageError} from '../../errors.js'
import {type OpenElmConfig} from '../../model/config.js'
import {type QuantSpec} from './quantize.js'

export const MLX_RECIPES = {
  mixed_2_6: {low: 2, high: 6},
  mixed_3_4: {low: 3, high: 4},
  mixed_3_6: {low: 3, high: 6},
  mixed_4_6: {low: 4, high: 6},
} as const
export type MlxRecipe = keyof typeof MLX_RECIPES
export const MLX_RECIPE_NAMES = Object.keys(MLX_RECIPES) as MlxRecipe[]

/** What the user asked for beyond one width: a recipe, and/or the embedding's own width. */
export interface MlxQuantChoice {
  recipe?: string
  /** Bits for the embedding (= the tied output head), or 'none' to keep it in float. */
  embedding?: number | 'none'
  /** Group size with a recipe and no base width (default 64). */
  groupSize?: number
}

/**
 * Per-tensor quantization: the spec for a canonical tensor name, or undefined to keep it in float.
 * `explicit` lists the module paths whose choice must be written per path into config.json.
 */
export interface MlxQuantPlan {
  /** The top-level `{bits, group_size}` of config.json. */
  base: QuantSpec
  specFor(canonical: string): QuantSpec | undefined
  /** Whether this tensor's choice differs from the top level (it then gets its own config entry). */
  explicit(canonical: string): boolean
  label: string
}

/** mlx-lm's `use_more_bits` for layer `i` of `n`. */
export function usesMoreBits(i: number, n: number): boolean {
  const eighth = Math.floor(n / 8)
  return i < eighth || i >= Math.floor((7 * n) / 8) || (i - eighth) % 3 === 2
}

const LAYER = /^layers\.(\d+)\.(attn\.qkv_proj|attn\.out_proj|ffn\.proj_1|ffn\.proj_2)\.weight$/

/** `text`: how the user wrote it, for the message. */
export function checkEmbeddingBits(bits: number | 'none', text = String(bits)): void {
  if (bits !== 'none' && ![2, 3, 4, 5, 6, 8].includes(bits)) throw new UsageError('flag.quantize_embedding', `--quantize-embedding ${text} is not supported (expected 2, 3, 4, 5, 6, 8 or none)`)
}

/** The plan for `base` (from --quantize/--group-size, or the recipe's low width) and the choices. */
export function mlxQuantPlan(config: OpenElmConfig, base: QuantSpec | undefined, choice: MlxQuantChoice = {}): MlxQuantPlan | undefined {
  const fpMode = base?.mode !== undefined && base.mode !== 'affine' ? base.mode : undefined
  if (fpMode && choice.recipe !== undefined) throw new UsageError('flag.q_recipe', `--q-recipe ${choice.recipe} mixes affine widths; it does not apply to --q-mode ${fpMode} (mlx-lm refuses it too)`)
  let recipe: {low: number; high: number} | undefined
  if (choice.recipe !== undefined) {
    recipe = MLX_RECIPES[choice.recipe as MlxRecipe]
    if (!recipe) throw new UsageError('flag.q_recipe', `unknown recipe "${choice.recipe}" (expected ${MLX_RECIPE_NAMES.join(', ')})`)
    if (base && base.bits !== recipe.low) throw new UsageError('flag.q_recipe', `--q-recipe ${choice.recipe} sets the widths (${recipe.low} and ${recipe.high} bits); drop --quantize ${base.bits}`)
  }
  if (choice.embedding !== undefined) checkEmbeddingBits(choice.embedding)
  if (fpMode && typeof choice.embedding === 'number') throw new UsageError('flag.quantize_embedding', `--quantize-embedding ${choice.embedding} with --q-mode ${fpMode}: the embedding can be kept in float (none), not given its own affine width`)
  const groupSize = base?.groupSize ?? choice.groupSize ?? 64
  const top: QuantSpec | undefined = base ?? (recipe ? {bits: recipe.low, groupSize} : undefined)
  if (!top) return undefined
  const n = config.num_transformer_layers
  const recipeSpec = (canonical: string): QuantSpec => {
    if (!recipe) return top
    if (canonical === 'token_embeddings.weight') return {bits: recipe.high, groupSize}
    const m = LAYER.exec(canonical)
    if (m && (m[2] === 'attn.qkv_proj' || m[2] === 'ffn.proj_2') && usesMoreBits(Number(m[1]), n)) return {bits: recipe.high, groupSize}
    return {bits: recipe.low, groupSize}
  }
  const specFor = (canonical: string): QuantSpec | undefined => {
    if (canonical === 'token_embeddings.weight' && choice.embedding !== undefined) {
      return choice.embedding === 'none' ? undefined : {bits: choice.embedding, groupSize}
    }
    return recipeSpec(canonical)
  }
  const parts = fpMode ? [fpMode] : [recipe ? `${choice.recipe} (${recipe.low}/${recipe.high}-bit)` : `${top.bits}-bit`, `group ${groupSize}`]
  if (choice.embedding !== undefined) parts.push(choice.embedding === 'none' ? 'embedding unquantized' : `embedding ${choice.embedding}-bit`)
  return {
    base: top,
    specFor,
    // mlx-lm writes an entry for every module its predicate returns a dict for: with a recipe, all of them.
    explicit: (canonical) => recipe !== undefined || (canonical === 'token_embeddings.weight' && choice.embedding !== undefined),
    label: parts.join(', '),
  }
}
