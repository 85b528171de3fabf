/** Long operations are async generators of progress events; this runs one to completion. */

/** Drain `events`, handing each one to `onEvent` (if given); returns the generator's result. */
export async function drain<Y, T>(events: AsyncGenerator<Y, T>, onEvent?: (event: Y) => void): Promise<T> {
  for (;;) {
    const step = await events.next()
    if (step.done) return step.value
    onEvent?.(step.value)
  }
}
