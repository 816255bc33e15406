import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { waitFor } from '../support/wait';

type ReplicaView = { node: number; role: string; lastLsn: number; appliedLsn: number; appendsTooLarge: number };

/**
 * The NATS server restarted with a smaller max_payload while a follower was down: once the hosts
 * reconnect they size replication messages to the new server's bound, so the follower, back,
 * catches up (before: the leader built appends of the bound learnt at its first connect, every
 * one refused too_large, and the follower stayed behind for good).
 */
describe('a NATS server restarted with a smaller max_payload', function () {
  this.timeout(180_000);
  let c: InProcessCluster | undefined;
  let restarted: NatsServerHandle | undefined;

  after(async () => {
    await c?.stop();
    await restarted?.stop();
  });

  it('a follower that was down catches up through appends of the new bound, none refused, and writes go on with a majority', async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 20_000 });
    const cluster = c;
    const info = await cluster.client.createVolume({ name: 'v-mp', pageCount: 1024, shards: 1, replicas: 3 });
    const vol = cluster.client.volume('v-mp');
    const replicas = async (): Promise<ReplicaView[]> => {
      const out: ReplicaView[] = [];
      for (const [i, n] of cluster.nodes.entries()) {
        if (n === undefined) continue;
        for (const h of await n.hostPool.stats()) for (const r of h.device?.shards ?? []) if (r.volumeId === info.id) out.push({ ...r, node: i });
      }
      return out;
    };
    await vol.write(0, new Uint8Array(4096).fill(1));
    let leader = -1;
    await waitFor('the shard has a leader', async () => (leader = (await replicas()).find((r) => r.role === 'leader')?.node ?? -1) >= 0);
    const follower = (leader + 1) % 3;
    await cluster.stopNode(follower);
    // 400 writes of one page while it is down: about 1.6 MB, two appends of the bound of 1 MiB.
    const fill = (p: number): number => (p * 7 + 3) & 0xff;
    for (let k = 0; k < 400; k += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => vol.write(k + j, new Uint8Array(4096).fill(fill(k + j)))));
    }
    const port = cluster.nats.port;
    await cluster.nats.stop();
    restarted = await startNatsServer({ jetstream: false, port, maxPayloadBytes: 64 * 1024 });
    await cluster.restart(follower);
    await waitFor('the follower that was down holds and applied every write', async () => {
      const rs = await replicas();
      const l = rs.find((r) => r.role === 'leader');
      const f = rs.find((r) => r.node === follower);
      return l !== undefined && f !== undefined && f.lastLsn >= l.lastLsn && f.appliedLsn >= l.lastLsn;
    }, 60_000);
    assert.deepEqual((await replicas()).map((r) => r.appendsTooLarge), [0, 0, 0], 'no append was refused as larger than the server takes');
    // With another follower stopped, the two left still commit writes.
    const rs = await replicas();
    const other = rs.find((r) => r.role !== 'leader' && r.node !== follower)!.node;
    await cluster.stopNode(other);
    await vol.write(500, new Uint8Array(4096).fill(9));
    const { pages } = await vol.readPages([0, 7, 399, 500]);
    assert.deepEqual(pages.map((p) => p![0]), [fill(0), fill(7), fill(399), 9]);
  });
});
