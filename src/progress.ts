/** Long operations are async generators of progress events; this runs one to completion. */

/** Drain `events`, handing each one to `onEvent` (if given); returns the generator's result. */
export async function drain<Y, T>(events: AsyncGenerator<Y, T>, onEvent?: (event: Y) => void): Promise<T> {
  for (;;) {
    const step = await events.next()
    if (step.done) return step.value
    onEvent?.(step.value)
  }
}

/**
 * Run `work`, which reports its phases through a callback (as `verify` does), as a generator of
 * `phase` events with `prefix` before each label; returns what `work` returns. A phase ended
 * with no label is passed on as a phase event without one.
 */
export async function* phasesOf<T>(
  prefix: string, work: (onPhase: (label: string | undefined) => void) => Promise<T>,
): AsyncGenerator<{type: 'phase'; label?: string}, T> {
  const queue: (string | undefined)[] = []
  let wake: (() => void) | undefined
  let settled = false
  const running = work((label) => {
    queue.push(label === undefined ? undefined : `${prefix}${label}`)
    wake?.()
  }).finally(() => {
    settled = true
    wake?.()
  })
  running.catch(() => undefined) // awaited below
  for (;;) {
    while (queue.length > 0) {
      const label = queue.shift()
      yield label === undefined ? {type: 'phase'} : {type: 'phase', label}
    }
    if (settled) break
    await new Promise<void>((resolve) => {
      wake = resolve
      if (queue.length > 0 || settled) resolve()
    })
    wake = undefined
  }
  return await running
}
