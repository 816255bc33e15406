/**
 * A node stopped cleanly hands the leadership of the shards it leads to their other replicas
 * before it goes (docs/replication.md, "Handing leadership over"): each such shard is led in the
 * next term by a follower that was handed it (no election timeout waited), with every write, and
 * takes writes at once.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import type { ReplicaState } from '../../runtime/device-host';
import { writeOnceServed } from '../support/served';
import { waitFor } from '../support/wait';

/** Every running node's replicas of volume `volumeId`, with the node's index. */
async function replicas(c: InProcessCluster, volumeId: string): Promise<Array<ReplicaState & { node: number }>> {
  const out: Array<ReplicaState & { node: number }> = [];
  for (let i = 0; i < c.nodes.length; i++) {
    const n = c.nodes[i];
    if (!n) continue;
    for (const h of await n.hostPool.stats()) for (const r of h.device?.shards ?? []) if (r.volumeId === volumeId) out.push({ ...r, node: i });
  }
  return out;
}

describe("a node stopped cleanly hands its shards' leadership over", function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 5000 });
  });
  after(async () => {
    await c?.stop();
  });

  it('each shard it led is led in the next term by a follower it handed it to, with every write; writes go on', async () => {
    const info = await c.client.createVolume({ name: 'ho', pageCount: 48, shards: 3, stripePages: 4, replicas: 3 });
    const vol = c.client.volume('ho');
    // Pages 0, 4 and 8: one in each shard.
    for (const p of [0, 4, 8]) await writeOnceServed(vol, p, p + 1, `a write to page ${p}`);
    // A node other than n1 (the controller's) that leads a shard: the first elections spread the leaders.
    let led: Array<ReplicaState & { node: number }> = [];
    let node = -1;
    for (const i of [1, 2]) {
      led = (await replicas(c, info.id)).filter((r) => r.node === i && r.role === 'leader');
      if (led.length > 0) {
        node = i;
        break;
      }
    }
    assert.ok(node > 0, 'n2 or n3 leads a shard');
    await c.stopNode(node);
    // The stop returns once each shard's old leader has stepped down; its follower's election,
    // under way then, ends a round trip later.
    let after: Array<ReplicaState & { node: number }> = [];
    await waitFor('a leader of each shard n' + (node + 1) + ' led', async () => {
      after = await replicas(c, info.id);
      return led.every((old) => after.some((r) => r.shard === old.shard && r.role === 'leader'));
    }, 10_000);
    for (const old of led) {
      const now = after.filter((r) => r.shard === old.shard && r.role === 'leader');
      assert.equal(now.length, 1, `shard ${old.shard}: one leader: ${JSON.stringify(now.map((r) => r.node))}`);
      assert.equal(now[0]!.term, old.term + 1, `shard ${old.shard}: led in the next term`);
      assert.equal(now[0]!.electionsHandedOver, 1, `shard ${old.shard}: its new leader was handed it`);
      assert.equal(now[0]!.preVotes, 0, `shard ${old.shard}: without a prevote`);
    }
    for (const p of [0, 4, 8]) assert.equal((await vol.readPages([p])).pages[0]![0], p + 1);
    for (const p of [1, 5, 9]) await writeOnceServed(vol, p, 7, `a write to page ${p} after the stop`);
    assert.deepEqual((await vol.readPages([1, 5, 9])).pages.map((d) => d[0]), [7, 7, 7]);
  });
});
