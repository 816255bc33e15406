/**
 * Handing a shard's leadership over (docs/replication.md, "Handing leadership over"):
 * `strata shard handover` hands it to the replica named, and a rebalance evens out the leaders of
 * a volume all handed to one node. A node stopped cleanly hands the shards it leads to their
 * other replicas before it goes: each is led in the next term by a follower that was handed it
 * (no election timeout waited), with every write, and takes writes at once.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import type { ReplicaState } from '../../runtime/device-host';
import { writeOnceServed } from '../support/served';
import { waitFor } from '../support/wait';
import type { ProtocolError } from '../../messages/errors';

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

describe("handing a shard's leadership over", function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 5000 });
  });
  after(async () => {
    await c?.stop();
  });

  /** Shards of the volume each node leads (by node id), as the nodes say. */
  async function leading(volumeId: string): Promise<Record<string, number>> {
    const out: Record<string, number> = { n1: 0, n2: 0, n3: 0 };
    for (const r of await replicas(c, volumeId)) if (r.role === 'leader') out[`n${r.node + 1}`]!++;
    return out;
  }

  it('hands a shard to the node named, or refuses a node without a replica; every shard handed to n1, a rebalance spreads the leaders again', async () => {
    const info = await c.client.createVolume({ name: 'lb', pageCount: 96, shards: 6, stripePages: 4, replicas: 3 });
    const vol = c.client.volume('lb');
    for (let s = 0; s < 6; s++) await writeOnceServed(vol, s * 4, s + 1, `a write to shard ${s}`);
    await assert.rejects(c.client.handOver('lb', 0, { to: 'n9' }), (e: ProtocolError) => e.code === 'bad_request' && /'n9' holds no replica/.test(e.message));
    await assert.rejects(c.client.handOver('lb', 6), (e: ProtocolError) => e.code === 'out_of_range');
    // Each shard not led by n1 handed to it.
    for (let s = 0; s < 6; s++) {
      const leader = (await replicas(c, info.id)).find((r) => r.shard === s && r.role === 'leader');
      if (leader === undefined || leader.node === 0) continue;
      const r = await c.client.handOver('lb', s, { to: 'n1' });
      assert.deepEqual([r.node, r.shard, r.to, r.term], [`n${leader.node + 1}`, s, 'n1', leader.term]);
      await waitFor(`n1 leads shard ${s}`, async () => (await replicas(c, info.id)).some((x) => x.shard === s && x.node === 0 && x.role === 'leader' && x.term === leader.term + 1), 10_000);
    }
    // On a loaded machine a shard may elect another leader meanwhile: handed to n1 again.
    await waitFor('n1 leads every shard', async () => {
      const now = await replicas(c, info.id);
      const others = now.filter((r) => r.role === 'leader' && r.node !== 0).map((r) => r.shard);
      for (const s of others) await c.client.handOver('lb', s, { to: 'n1' }).catch(() => undefined);
      return others.length === 0 && now.filter((r) => r.role === 'leader' && r.node === 0).length === 6;
    }, 30_000);
    assert.deepEqual(await leading(info.id), { n1: 6, n2: 0, n3: 0 });
    // Asked of every member, only the leader hands over: once more, to whoever holds the most.
    const again = await c.client.handOver('lb', 5);
    assert.equal(again.node, 'n1');
    await waitFor('shard 5 led by another node', async () => (await replicas(c, info.id)).some((x) => x.shard === 5 && x.node !== 0 && x.role === 'leader'), 10_000);
    // The controller hears the counts in the heartbeats; the replicas are even, the leaders are not.
    await waitFor('the controller counts 5 leaders on n1', async () => (await c.client.rebalance({ stop: true })).nodes.find((n) => n.node === 'n1')?.leaders === 5, 20_000);
    const asked = await c.client.rebalance();
    assert.equal(asked.rebalancing, true, JSON.stringify(asked));
    await waitFor('the rebalance done', async () => !(await c.client.rebalance()).rebalancing, 60_000);
    const spread = await leading(info.id);
    assert.ok(Math.max(...Object.values(spread)) - Math.min(...Object.values(spread)) <= 1, JSON.stringify(spread));
    for (let s = 0; s < 6; s++) assert.equal((await vol.readPages([s * 4])).pages[0]![0], s + 1);
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
