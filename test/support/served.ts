/** Writes in cluster tests that wait out a shard's moment without a leader. */
import type { Volume } from '../../cluster/client';
import { ProtocolError } from '../../messages/errors';
import { waitFor } from './wait';

/** True for the errors a request may meet while a shard has no leader for a moment. */
export const transient = (e: unknown): boolean => e instanceof ProtocolError && ['unavailable', 'timeout', 'not_leader', 'overloaded'].includes(e.code);

/** Writes page `p` (4 KiB filled with `value`) once its shard serves it, within 30 s: transient errors are waited out. */
export async function writeOnceServed(vol: Volume, p: number, value: number, what: string): Promise<void> {
  await waitFor(what, async () => {
    try {
      await vol.writePages([{ page: p, data: new Uint8Array(4096).fill(value) }]);
      return true;
    } catch (e) {
      if (transient(e)) return false;
      throw e;
    }
  }, 30_000);
}
