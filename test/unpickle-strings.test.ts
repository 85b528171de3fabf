/**
 * Strings in a pickle are exactly the characters Python wrote: a leading U+FEFF is a character
 * (SentencePiece vocabularies and state-dict keys can start with one), not a byte-order mark to drop.
 */
import {execFileSync} from 'node:child_process'
import {describe, expect, it} from 'vitest'
import {unpickle} from '../src/formats/corenet/unpickle.js'
import {PyDict} from '../src/formats/corenet/values.js'

const PY = '/usr/bin/python3'

function pickled(protocol: number): Uint8Array {
  const script = `import pickle, sys; sys.stdout.buffer.write(pickle.dumps({"\\ufeffhead": 1, "mid\\ufeff": 2, "\\ufeff": 3, "plain": 4}, protocol=${protocol}))`
  return new Uint8Array(execFileSync(PY, ['-c', script]))
}

describe('unpickle strings', () => {
  for (const protocol of [2, 4]) {
    it(`keeps a leading U+FEFF in protocol ${protocol} strings`, () => {
      const {value} = unpickle(pickled(protocol))
      expect(value).toBeInstanceOf(PyDict)
      expect([...(value as PyDict).map.keys()]).toEqual(['\ufeffhead', 'mid\ufeff', '\ufeff', 'plain'])
      expect((value as PyDict).get('\ufeffhead')).toBe(1n)
    })
  }
})
