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
