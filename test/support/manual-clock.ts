/**
 * A manual clock for code that reads `performance.now()` and sets timers with `setTimeout`:
 * while `run` calls its function, both are this clock's. Its timers fire only when `advance`
 * moves the clock past them (inside `run` again), never on their own, so a test can tell what
 * happens before a deadline from what happens at it whatever the speed of the machine.
 */
interface Timer {
  at: number;
  ms: number;
  fn: (...args: unknown[]) => void;
  args: unknown[];
  done: boolean;
  handle: NodeJS.Timeout;
}

export class ManualClock {
  /** The clock's time (ms, on the scale of performance.now()). */
  nowMs: number;
  private readonly timers: Timer[] = [];

  constructor(startMs = performance.now()) {
    this.nowMs = startMs;
  }

  /** Calls `fn` with performance.now(), setTimeout and clearTimeout on this clock. */
  run<T>(fn: () => T): T {
    const realNow = Object.getOwnPropertyDescriptor(performance, 'now');
    const realSet = globalThis.setTimeout;
    const realClear = globalThis.clearTimeout;
    Object.defineProperty(performance, 'now', { value: () => this.nowMs, configurable: true, writable: true });
    globalThis.setTimeout = ((cb: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
      const delay = Math.max(0, Number(ms ?? 0));
      const handle = { unref: () => handle, ref: () => handle, hasRef: () => false, refresh: () => handle } as unknown as NodeJS.Timeout;
      this.timers.push({ at: this.nowMs + delay, ms: delay, fn: cb, args, done: false, handle });
      return handle;
    }) as unknown as typeof globalThis.setTimeout;
    globalThis.clearTimeout = ((handle: NodeJS.Timeout | undefined) => {
      const t = this.timers.find((x) => x.handle === handle);
      if (t !== undefined) t.done = true;
      else realClear(handle);
    }) as typeof globalThis.clearTimeout;
    try {
      return fn();
    } finally {
      globalThis.setTimeout = realSet;
      globalThis.clearTimeout = realClear;
      if (realNow === undefined) delete (performance as { now?: unknown }).now;
      else Object.defineProperty(performance, 'now', realNow);
    }
  }

  /** Moves the clock `ms` on, firing the timers due by then, earliest first (on this clock). */
  advance(ms: number): void {
    const until = this.nowMs + ms;
    for (;;) {
      const due = this.timers.filter((t) => !t.done && t.at <= until).sort((x, y) => x.at - y.at)[0];
      if (due === undefined) break;
      due.done = true;
      this.nowMs = Math.max(this.nowMs, due.at);
      this.run(() => due.fn(...due.args));
    }
    this.nowMs = until;
  }
}

/**
 * Whether `p` has settled once the callbacks already due have run (promise reactions and
 * the I/O callbacks ready now): 'pending', or how it settled.
 */
export async function settledSoFar(p: Promise<unknown>): Promise<'pending' | 'resolved' | 'rejected'> {
  let state: 'pending' | 'resolved' | 'rejected' = 'pending';
  p.then(() => (state = 'resolved'), () => (state = 'rejected'));
  await new Promise((r) => setImmediate(r));
  return state;
}

/** A timer `timersHeld` held: its delay, and `fire` to run it when the test says. */
export interface HeldTimer {
  ms: number | undefined;
  fire: () => void;
}

/**
 * Calls `fn` with setTimeout held: the timers it sets as it runs (before its first await) are
 * returned, not started, and run only when the test fires them, so that a test tells which wait
 * a call set up, and what happens before and at its end, whatever the speed of the machine.
 */
export function timersHeld<T>(fn: () => T): { value: T; timers: HeldTimer[] } {
  const timers: HeldTimer[] = [];
  const real = globalThis.setTimeout;
  globalThis.setTimeout = ((fire: () => void, ms?: number) => {
    timers.push({ fire, ms });
    return {} as NodeJS.Timeout;
  }) as typeof globalThis.setTimeout;
  try {
    return { value: fn(), timers };
  } finally {
    globalThis.setTimeout = real;
  }
}

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
