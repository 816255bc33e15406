/**
 * A wait with a deadline: `withTimeout(p, ms, late)` settles as `p` does, or rejects with
 * `late()` once `ms` pass first. The timer never outlives the race, and `p` goes on for whoever
 * else waits on it.
 */
export function withTimeout<T>(p: Promise<T>, ms: number, late: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(late()), ms);
  });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}

/**
 * A call made in up to `tries` tries within `deadlineMs`: `attempt` gets the try's deadline, a
 * part of the time left (at least `tryMsMin`; the first at most `tryMsMin` with `quickFirst`;
 * the last try the deadline itself, also once less than two `tryMsMin` are left), and the try's
 * number, from 1. A failure that `again` accepts is reported to `onAgain` and the next try made;
 * any other failure, or the last try's, is thrown. For calls that may be made twice: a request
 * without an answer, sent again.
 */
export async function inTries<T>(
  deadlineMs: number,
  opts: {
    tries: number;
    tryMsMin: number;
    quickFirst?: boolean;
    nowMs: () => number;
    again: (err: unknown) => boolean;
    onAgain?: (err: unknown, attempt: number) => void;
  },
  attempt: (tryDeadlineMs: number, n: number) => Promise<T>,
): Promise<T> {
  for (let n = 1; ; n++) {
    const left = deadlineMs - opts.nowMs();
    const last = n >= opts.tries || left < 2 * opts.tryMsMin;
    const share = Math.max(opts.tryMsMin, Math.floor(left / (opts.tries - n + 1)));
    const tryDeadlineMs = last ? deadlineMs : opts.nowMs() + (n === 1 && opts.quickFirst === true ? Math.min(share, opts.tryMsMin) : share);
    try {
      return await attempt(tryDeadlineMs, n);
    } catch (err) {
      if (last || !opts.again(err)) throw err;
      opts.onAgain?.(err, n);
    }
  }
}
