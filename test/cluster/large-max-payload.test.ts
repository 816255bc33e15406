import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { MESSAGE_BYTES_MAX } from '../../messages/codec';

type NodeView = { hosts: Array<{ restarts: number; deviceRestarts: number }> };

/**
 * A NATS server whose max_payload is larger than MESSAGE_BYTES_MAX (1 MiB): replication messages
 * are sized to the server's bound, so a leader sends appends larger than 1 MiB, and each host
 * encodes and decodes them within that bound. (Before: encoded within 1 MiB, such an
 * append threw out of the leader's send, from a timer, and ended its host thread.)
 */
describe('replicated writes through a NATS server with a max_payload of 4 MiB', function () {
  this.timeout(120_000);
  let c: InProcessCluster;

  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, maxPayloadBytes: 4 * MESSAGE_BYTES_MAX, clientTimeoutMs: 20_000 });
  });
  after(async () => {
    await c?.stop();
  });

  const hostRestarts = async (): Promise<number[]> =>
    Promise.all(c.nodes.map(async (n) => ((await n!.status()) as unknown as NodeView).hosts.reduce((t, h) => t + h.restarts + h.deviceRestarts, 0)));

  it('writes of 200 pages at once (appends of up to 3.5 MiB) are acknowledged and read back; no host thread exits', async () => {
    await c.client.createVolume({ name: 'v-big', pageCount: 1024, shards: 1, replicas: 3 });
    const vol = c.client.volume('v-big');
    await vol.write(1000, new Uint8Array(4096).fill(1));
    const before = await hostRestarts();
    // Four at once: the leader's next append carries the records of several (over 1 MiB).
    const fill = (w: number, j: number): number => (w * 31 + j) & 0xff;
    await Promise.all([0, 1, 2, 3].map((w) =>
      vol.writePages(Array.from({ length: 200 }, (_, j) => ({ page: w * 200 + j, data: new Uint8Array(4096).fill(fill(w, j)) })))));
    assert.deepEqual(await hostRestarts(), before, 'no host thread exited and no replica was restarted');
    for (const w of [0, 1, 2, 3]) {
      const { pages } = await vol.readPages(Array.from({ length: 200 }, (_, j) => w * 200 + j));
      pages.forEach((p, j) => assert.ok(p!.every((b) => b === fill(w, j)), `page ${w * 200 + j}`));
    }
  });
});
