import {describe, expect, it} from 'vitest'
import {brownDocuments, detag, detagDocument, heldOutDocuments, heldOutText, isHeldOut, trainingDocuments} from '../src/text/corpus.js'

describe('Brown corpus text', () => {
  it('strips POS tags and rejoins punctuation and quotes', () => {
    expect(detag('The/at jury/nn said/vbd ``/`` no/at evidence/nn \'\'/\'\' ,/, which/wdt (/( 1-1/2/cd )/) ./.'))
      .toBe('The jury said "no evidence", which (1-1/2).')
    expect(detag("It/pps isn't/bez* not/* so/ql '/' bad/jj ?/.")).toBe("It isn't not so' bad?")
    expect(detagDocument('\n\n\tA/at b/nn ./.\n\tC/at d/nn ./.\n\n\n\tE/at ./.\n')).toBe('A b. C d.\nE.')
  })

  it('splits 500 documents into 459 for training and 41 held out, by document number', () => {
    const all = brownDocuments()
    expect(all).toHaveLength(500)
    expect(all[0]!.id).toBe('ca01')
    const held = heldOutDocuments()
    expect(held.map((d) => d.id).slice(0, 5)).toEqual(['ca10', 'ca20', 'ca30', 'ca40', 'cb10'])
    expect(held).toHaveLength(41)
    expect(trainingDocuments()).toHaveLength(459)
    expect(trainingDocuments().some((d) => isHeldOut(d.id))).toBe(false)
    expect(isHeldOut('cr09')).toBe(false)
    expect(isHeldOut('cj80')).toBe(true)
  })

  it('gives plain text: no tags left, paragraphs on lines', () => {
    const text = heldOutText()
    expect(text.length).toBeGreaterThan(400_000)
    expect(text.startsWith('Vincent G. Ierulli has been appointed temporary assistant district attorney')).toBe(true)
    expect(text).not.toMatch(/\/(at|nn|vbd|in|jj)\b/)
    expect(text).not.toMatch(/``|''/)
  })
})
