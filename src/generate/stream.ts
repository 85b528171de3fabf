/**
 * Text as tokens arrive. Each call returns the text the new token adds to the decoded sequence,
 * so the chunks joined are exactly SentencePiece's decoding of the prompt and the generated ids,
 * minus the prompt's own text: a leading "▁" is a space (the first piece after BOS loses it, as
 * SentencePiece decodes), byte-fallback pieces are joined into UTF-8 characters, and a character
 * whose bytes are still arriving is held back until it is complete (or known to be invalid).
 */
import {BYTE_PIECE, PIECE_TYPE} from '../tokenizer/model.js'
import {type Tokenizer} from '../tokenizer/tokenizer.js'

/** Length of the UTF-8 sequence a lead byte starts (0: not a valid lead). */
function utf8Length(b: number): number {
  if (b < 0x80) return 1
  if (b >= 0xc2 && b <= 0xdf) return 2
  if ((b & 0xf0) === 0xe0) return 3
  if (b >= 0xf0 && b <= 0xf4) return 4
  return 0
}

export class StreamDecoder {
  private readonly ids: number[]
  private emitted: number

  constructor(private readonly tokenizer: Tokenizer, prompt: readonly number[]) {
    this.ids = [...prompt]
    this.emitted = tokenizer.decode(this.ids).length
  }

  /** The byte value of a byte-fallback piece, or -1. */
  private byteOf(id: number): number {
    if (this.tokenizer.model.types[id] !== PIECE_TYPE.BYTE) return -1
    const m = BYTE_PIECE.exec(this.tokenizer.model.pieces[id]!)
    return m ? Number.parseInt(m[1]!, 16) : -1
  }

  /** Trailing byte pieces that may still become one character with the bytes to come. */
  private heldBack(): number {
    const bytes: number[] = []
    for (let i = this.ids.length - 1; i >= 0 && bytes.length < 4; i--) {
      const b = this.byteOf(this.ids[i]!)
      if (b < 0) break
      bytes.unshift(b)
    }
    // The last lead byte among the trailing ones, and whether its sequence is still incomplete.
    for (let k = bytes.length - 1; k >= 0; k--) {
      if ((bytes[k]! & 0xc0) === 0x80) continue
      const need = utf8Length(bytes[k]!)
      const have = bytes.length - k
      return need > have ? have : 0
    }
    return 0
  }

  /** The text `id` adds (possibly "", when it is held back or is a control piece). */
  push(id: number): string {
    this.ids.push(id)
    return this.pending()
  }

  /** Text not yet returned, holding back an incomplete character. */
  private pending(hold = true): string {
    const keep = hold ? this.heldBack() : 0
    const text = this.tokenizer.decode(this.ids.slice(0, this.ids.length - keep))
    const out = text.slice(this.emitted)
    this.emitted = text.length
    return out
  }

  /** Whatever is still held back (an unfinished character decodes as U+FFFD, as SentencePiece does). */
  flush(): string {
    return this.pending(false)
  }
}
