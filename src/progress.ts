/** Long operations are async generators of progress events; this runs one to completion. */

/** Drain `events`, handing each one to `onEvent` (if given); returns the generator's result. */
export async function drain<Y, T>(events: AsyncGenerator<Y, T>, onEvent?: (event: Y) => void): Promise<T> {
  for (;;) {
    const step = await events.next()
    if (step.done) return step.value
    onEvent?.(step.value)
  }
}

export type PhaseEvent = {type: 'phase'; label?: string} | {type: 'count'; done: number; total: number; unit: string}

/**
 * Run `work`, which reports its phases through callbacks (as `verify` does), as a generator of
 * `phase` events with `prefix` before each label, and `count` events; returns what `work`
 * returns. A phase ended with no label is passed on as a phase event without one.
 */
export async function* phasesOf<T>(
  prefix: string, work: (onPhase: (label: string | undefined) => void, onCount: (done: number, total: number, unit: string) => void) => Promise<T>,
): AsyncGenerator<PhaseEvent, T> {
  const queue: PhaseEvent[] = []
  let wake: (() => void) | undefined
  let settled = false
  const onPhase = (label: string | undefined) => {
    queue.push(label === undefined ? {type: 'phase'} : {type: 'phase', label: `${prefix}${label}`})
    wake?.()
  }
  const onCount = (done: number, total: number, unit: string) => {
    // Only the latest count matters: a count still queued is replaced, not piled up.
    const last = queue.at(-1)
    if (last?.type === 'count') queue.pop()
    queue.push({type: 'count', done, total, unit})
    wake?.()
  }
  const running = work(onPhase, onCount).finally(() => {
    settled = true
    wake?.()
  })
  running.catch(() => undefined) // awaited below
  for (;;) {
    while (queue.length > 0) yield queue.shift()!
    if (settled) break
    await new Promise<void>((resolve) => {
      wake = resolve
      if (queue.length > 0 || settled) resolve()
    })
    wake = undefined
  }
  return await running
}
