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
