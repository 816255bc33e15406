/** Waiting in tests for something that happens in the background, bounded. */
import { strict as assert } from 'node:assert';

/** Waits until `cond()` holds, checking every 20 ms; fails the test after `timeoutMs`. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadlineMs) assert.fail(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Until `fn` succeeds, at most `timeoutMs`: an error it throws with a code of `retriable` (what
 * a controller moving answers, by default) is tried again; any other fails at once.
 */
export async function eventually<T>(what: string, fn: () => Promise<T>, timeoutMs = 30_000, retriable: readonly string[] = ['unavailable', 'timeout', 'not_leader', 'stale_term']): Promise<T> {
  let out: T | undefined;
  await waitFor(what, async () => {
    try {
      out = await fn();
      return true;
    } catch (e) {
      if (retriable.includes((e as { code?: unknown }).code as string)) return false;
      throw e;
    }
  }, timeoutMs);
  return out!;
}
