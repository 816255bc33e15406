/** Writes in cluster tests that wait out a shard's moment without a leader, and a killed node's moment still routed to. */
import { connect as natsConnect } from 'nats';
import type { Volume } from '../../cluster/client';
import type { InProcessCluster } from '../../cluster/in-process-cluster';
import { encode } from '../../messages/codec';
import { nodeSubject } from '../../messages/control';
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

/**
 * Resolves once the NATS server no longer routes requests to a node just killed: a request to the
 * node's own subject finds no responders. (The node drops its subscriptions as it dies, its API
 * router's among them, in one write; until the server has read it, a request to the API may still
 * be given to the dead router, and its caller would wait out its whole timeout.)
 */
export async function goneFromServer(c: InProcessCluster, nodeId: string): Promise<void> {
  const nc = await natsConnect({ servers: c.natsUrl });
  try {
    await waitFor(`${nodeId} gone from the NATS server`, async () => {
      try {
        await nc.request(nodeSubject(c.cluster, nodeId, 'status'), encode({}), { timeout: 1000 });
        return false;
      } catch (e) {
        return (e as { code?: unknown }).code === '503';
      }
    }, 5000);
  } finally {
    await nc.close();
  }
}
