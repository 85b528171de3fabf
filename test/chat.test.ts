/**
 * OpenELM-Instruct's chat template (src/tokenizer/chat.ts): the Jinja template, rendered by
 * Hugging Face's own Jinja engine (@huggingface/jinja, what transformers.js uses) with
 * transformers' settings, gives exactly renderChat's text; the text is CoreNet's recipe.
 */
import {Template} from '@huggingface/jinja'
import {describe, expect, it} from 'vitest'
import {OPENELM_CHAT_TEMPLATE, renderChat, type ChatMessage} from '../src/tokenizer/chat.js'

const jinja = (messages: ChatMessage[], addGenerationPrompt: boolean) =>
  new Template(OPENELM_CHAT_TEMPLATE).render({messages, add_generation_prompt: addGenerationPrompt, bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>'})

const CASES: ChatMessage[][] = [
  [],
  [{role: 'user', content: 'Hi'}],
  [{role: 'system', content: 'You are a helpful assistant.'}, {role: 'user', content: 'What is 2+2?'}],
  [
    {role: 'system', content: 'Be brief.'},
    {role: 'user', content: 'Name a colour.'},
    {role: 'assistant', content: 'Blue.'},
    {role: 'user', content: 'Another, with\ntwo lines and  spaces '},
  ],
  [{role: 'user', content: ''}],
  [{role: 'user', content: 'Hola — ¿qué tal? 日本語 🙂'}, {role: 'assistant', content: 'Bien.'}],
]

describe('chat template', () => {
  it('renders CoreNet\'s instruction-tuning format', () => {
    expect(renderChat([{role: 'system', content: 'S'}, {role: 'user', content: 'U'}])).toBe('<|system|>\nS</s>\n<|user|>\nU</s>\n<|assistant|>\n')
    expect(renderChat([{role: 'user', content: 'U'}, {role: 'assistant', content: 'A'}], {addGenerationPrompt: false})).toBe('<|user|>\nU</s>\n<|assistant|>\nA</s>\n')
    expect(renderChat([])).toBe('')
  })

  it('the Jinja template renders what renderChat renders, with and without the generation prompt', () => {
    for (const messages of CASES) {
      for (const addGenerationPrompt of [true, false]) {
        expect(jinja(messages, addGenerationPrompt), JSON.stringify({messages, addGenerationPrompt})).toBe(renderChat(messages, {addGenerationPrompt}))
      }
    }
  })

  it('refuses a role the template would drop silently', () => {
    expect(() => renderChat([{role: 'tool' as 'user', content: 'x'}])).toThrow(/role "tool"/)
  })
})
