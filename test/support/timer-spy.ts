/**
 * Runs `fn` with setTimeout watched: the delays of the timers set meanwhile (by anything in this
 * process), so that a test can tell which bound a wait used without timing it.
 */
export async function timerDelaysDuring<T>(fn: () => Promise<T>): Promise<{ value: T; delays: number[] }> {
  const real = globalThis.setTimeout;
  const delays: number[] = [];
  globalThis.setTimeout = ((cb: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    delays.push(Number(ms ?? 0));
    return real(cb, ms, ...args);
  }) as typeof globalThis.setTimeout;
  try {
    return { value: await fn(), delays };
  } finally {
    globalThis.setTimeout = real;
  }
}
