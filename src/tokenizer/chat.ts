/**
 * OpenELM-Instruct's chat format, from CoreNet's instruction-tuning recipe
 * (apple/corenet `projects/openelm/instruction_tuning/openelm-instruct.yaml`, `chat_template`):
 * each message is `<|role|>\n` + content + EOS, and the generation prompt is `<|assistant|>`.
 * Rendered by Hugging Face's Jinja settings (trim_blocks, lstrip_blocks), so the newline after
 * each `{{ … }}` stays and the one after each `{% … %}` goes:
 *
 *   <|system|>\nYou are …</s>\n<|user|>\nHi</s>\n<|assistant|>\n
 *
 * BOS is not part of the template: the tokenizer prepends it (`add_bos_token: true`).
 */

/** The Jinja template, written to tokenizer_config.json `chat_template` and GGUF `tokenizer.chat_template`. */
export const OPENELM_CHAT_TEMPLATE =
  "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n" +
  "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n" +
  "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n" +
  "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"

/** The EOS piece the template appends (LLaMA-2's id 2). */
export const OPENELM_CHAT_EOS = '</s>'

export type ChatRole = 'system' | 'user' | 'assistant'
export interface ChatMessage {
  role: ChatRole
  content: string
}

const ROLES: ReadonlySet<string> = new Set<ChatRole>(['system', 'user', 'assistant'])

/**
 * The text `OPENELM_CHAT_TEMPLATE` renders for `messages` (what transformers' `apply_chat_template`
 * gives with `tokenize=False`). With `addGenerationPrompt` (default true) the text ends in
 * `<|assistant|>\n`, ready for the model to answer; no messages render as "". A role outside
 * system/user/assistant is a TypeError (the template would drop the message silently).
 */
export function renderChat(messages: readonly ChatMessage[], opts: {addGenerationPrompt?: boolean; eosToken?: string} = {}): string {
  const eos = opts.eosToken ?? OPENELM_CHAT_EOS
  const addGenerationPrompt = opts.addGenerationPrompt ?? true
  let out = ''
  for (const message of messages) {
    if (!ROLES.has(message.role)) throw new TypeError(`chat message role ${JSON.stringify(message.role)} is not system, user or assistant`)
    out += `<|${message.role}|>\n${message.content}${eos}\n`
  }
  if (messages.length > 0 && addGenerationPrompt) out += '<|assistant|>\n'
  return out
}
