/**
 * Text that holds special tokens written out ("<s>", "</s>", as a chat template renders them),
 * encoded the way Hugging Face tokenizers do with `add_special_tokens=False`: each control or
 * unknown piece's text becomes its id, and the text between them is encoded on its own (with
 * SentencePiece's dummy prefix, as the legacy LlamaTokenizer and our tokenizer.json do). Plain
 * `encode` keeps SentencePiece's behaviour, where "</s>" in text is three ordinary pieces.
 */
import {PIECE_TYPE} from '../tokenizer/model.js'
import {type Tokenizer} from '../tokenizer/tokenizer.js'

export function encodeWithSpecials(tokenizer: Tokenizer, text: string): number[] {
  const {model} = tokenizer
  const specials = new Map<string, number>()
  model.pieces.forEach((piece, id) => {
    const type = model.types[id]
    if ((type === PIECE_TYPE.CONTROL || type === PIECE_TYPE.UNKNOWN) && piece !== '') specials.set(piece, id)
  })
  // Longest first, so a special that is a prefix of another never cuts it.
  const names = [...specials.keys()].sort((a, b) => b.length - a.length)
  const ids: number[] = []
  let segment = ''
  const flush = () => {
    if (segment !== '') ids.push(...tokenizer.encode(segment, {addBos: false}))
    segment = ''
  }
  for (let i = 0; i < text.length;) {
    const name = names.find((n) => text.startsWith(n, i))
    if (name === undefined) {
      segment += text[i]
      i++
      continue
    }
    flush()
    ids.push(specials.get(name)!)
    i += name.length
  }
  flush()
  return ids
}
