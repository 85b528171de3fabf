/**
 * OpenELM-Instruct's chat template (src/tokenizer/chat.ts): the Jinja template, rendered by
 * Hugging Face's own Jinja engine (@huggingface/jinja, what transformers.js uses) with
 * transformers' settings, gives exactly renderChat's text; the text is CoreNet's recipe. Outputs
 * of an Instruct model carry it (tokenizer_config.json, GGUF tokenizer.chat_template), and
 * transformers.js' apply_chat_template on our folder gives renderChat's text and ids.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {Template} from '@huggingface/jinja'
import {AutoTokenizer, env} from '@huggingface/transformers'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert, writeCheckpoint} from '../src/convert.js'
import {openGguf} from '../src/formats/gguf/read.js'
import {isInstructPath} from '../src/formats/tokenizer.js'
import {generate} from '../src/generate/index.js'
import {encodeWithSpecials} from '../src/generate/special.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {OPENELM_CHAT_TEMPLATE, renderChat, type ChatMessage} from '../src/tokenizer/chat.js'
import {llama2Tokenizer} from '../src/tokenizer/index.js'

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

describe('chat template in outputs', () => {
  let work: string
  let instruct: string
  let base: string
  const messages: ChatMessage[] = [{role: 'system', content: 'You are brief.'}, {role: 'user', content: 'What is the capital of France?'}]

  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'chat-out-'))
    instruct = path.join(work, 'OpenELM-micro-Instruct')
    base = path.join(work, 'OpenELM-micro')
    const model = synthCheckpoint(presetConfig('micro', {vocab_size: 32000}), {seed: 9, dtype: 'F32'})
    await drain(writeCheckpoint(model, 'hf', instruct, {tokenizerRequest: {none: true}}))
    await drain(writeCheckpoint(model, 'hf', base, {tokenizerRequest: {none: true}}))
  })
  afterAll(async () => {
    await fs.rm(work, {recursive: true, force: true})
  })

  const configOf = async (dir: string) => JSON.parse(await fs.readFile(path.join(dir, 'tokenizer_config.json'), 'utf8')) as {chat_template?: string}

  it('knows Instruct models by name, also in the Hub cache layout', () => {
    expect(isInstructPath('/m/OpenELM-270M-Instruct')).toBe(true)
    expect(isInstructPath('/hf/hub/models--apple--OpenELM-270M-Instruct/snapshots/0123abcd')).toBe(true)
    expect(isInstructPath('/m/openelm-450m-instruct-f16.gguf')).toBe(true)
    expect(isInstructPath('/m/OpenELM-270M')).toBe(false)
    expect(isInstructPath('/m/instructions/OpenELM-270M')).toBe(false)
  })

  it('an -Instruct model\'s hf folder has the template; transformers.js applies it as renderChat does, text and ids', async () => {
    const out = path.join(work, 'instruct-hf')
    const result = await drain(convert(instruct, 'hf', out, {}, {}))
    expect(result.tokenizer!.chatTemplate).toMatch(/OpenELM-Instruct's \(the model's name, OpenELM-micro-Instruct, ends in -Instruct\)/)
    expect((await configOf(out)).chat_template).toBe(OPENELM_CHAT_TEMPLATE)
    env.allowRemoteModels = false
    env.localModelPath = work + path.sep
    const tok = await AutoTokenizer.from_pretrained('instruct-hf')
    const text = tok.apply_chat_template(messages, {tokenize: false, add_generation_prompt: true}) as string
    expect(text).toBe(renderChat(messages))
    expect(text).toBe('<|system|>\nYou are brief.</s>\n<|user|>\nWhat is the capital of France?</s>\n<|assistant|>\n')
    const ids = tok.apply_chat_template(messages, {add_generation_prompt: true, return_tensor: false, return_dict: false}) as number[]
    expect(ids).toEqual(encodeWithSpecials(await llama2Tokenizer(), renderChat(messages)))
    expect(ids.filter((id) => id === 2)).toHaveLength(2) // each "</s>" is EOS, not three pieces
  })

  it('GGUF gets tokenizer.chat_template, and carries it on to other formats', async () => {
    const gguf = path.join(work, 'instruct.gguf')
    await drain(convert(instruct, 'gguf', gguf, {}, {}))
    const file = await openGguf(gguf)
    expect(file.kv.get('tokenizer.chat_template')?.value).toBe(OPENELM_CHAT_TEMPLATE)
    await file.close()
    const back = path.join(work, 'from-gguf-onnx')
    const result = await drain(convert(gguf, 'onnx', back, {}, {}))
    expect(result.tokenizer!.chatTemplate).toBe('the source GGUF\'s tokenizer.chat_template')
    expect((await configOf(back)).chat_template).toBe(OPENELM_CHAT_TEMPLATE)
  })

  it('generate --chat: the prompt is BOS + the rendered template with "</s>" as EOS; the result shows the text', async () => {
    const model = path.join(work, 'instruct-hf')
    const system = 'You are brief.'
    const prompt = 'What is the capital of France?'
    const result = await drain(generate(model, {prompt, chat: {system}, maxTokens: 2}))
    const expected = renderChat([{role: 'system', content: system}, {role: 'user', content: prompt}])
    expect(result.prompt.text).toBe(expected)
    expect(result.prompt.ids).toEqual([1, ...encodeWithSpecials(await llama2Tokenizer(), expected)])
    expect(result.prompt.ids.slice(0, 6)).toEqual([1, ...(await llama2Tokenizer()).encode('<|system|>', {addBos: false})].slice(0, 6))
    expect(result.generated.ids.length).toBeGreaterThan(0)
    const plain = await drain(generate(model, {prompt, chat: {}, maxTokens: 1}))
    expect(plain.prompt.text).toBe(renderChat([{role: 'user', content: prompt}]))
    await expect(drain(generate(model, {tokens: [1, 2, 3], chat: {}}))).rejects.toThrow(/--chat wraps a text prompt/)
  }, 60_000)

  it('a base model has none unless asked (--chat-template openelm|FILE); --no-chat-template drops it', async () => {
    const plain = path.join(work, 'base-hf')
    await drain(convert(base, 'hf', plain, {}, {}))
    expect((await configOf(plain)).chat_template).toBeUndefined()
    const asked = path.join(work, 'base-asked')
    await drain(convert(base, 'mlx', asked, {}, {tokenizerRequest: {chatTemplate: 'openelm'}}))
    expect((await configOf(asked)).chat_template).toBe(OPENELM_CHAT_TEMPLATE)
    const file = path.join(work, 'template.jinja')
    await fs.writeFile(file, '{% for m in messages %}{{ m.content }}{% endfor %}')
    const custom = path.join(work, 'base-custom')
    await drain(convert(base, 'hf', custom, {}, {tokenizerRequest: {chatTemplate: file}}))
    expect((await configOf(custom)).chat_template).toBe('{% for m in messages %}{{ m.content }}{% endfor %}')
    const dropped = path.join(work, 'instruct-dropped')
    await drain(convert(instruct, 'hf', dropped, {}, {tokenizerRequest: {noChatTemplate: true}}))
    expect((await configOf(dropped)).chat_template).toBeUndefined()
    // A copied tokenizer_config.json keeps its template; --no-chat-template removes it from the copy.
    const copied = path.join(work, 'copied')
    await drain(convert(path.join(work, 'instruct-hf'), 'hf', copied, {}, {}))
    expect((await configOf(copied)).chat_template).toBe(OPENELM_CHAT_TEMPLATE)
    const removed = path.join(work, 'copied-removed')
    await drain(convert(path.join(work, 'instruct-hf'), 'hf', removed, {}, {tokenizerRequest: {noChatTemplate: true}}))
    expect(await configOf(removed)).not.toHaveProperty('chat_template')
    expect(await configOf(removed)).toMatchObject({tokenizer_class: 'LlamaTokenizer', add_bos_token: true})
  })
})
