/**
 * The controller replaces the replicas of a dead node by itself (docs/replication.md, "Replacing
 * a dead node's replicas"): four nodes in three zones, a volume of 2 shards × 3 replicas placed
 * one per zone; a node that stays
 * down longer than the wait has each of its replicas moved to the node outside the shard's set,
 * and the shards then survive losing a second original member. A repair whose new replica is
 * not opened is tried again after a back-off, and one whose new node dies is finished without it
 * and then repaired in turn. With the wait set to 0 nothing is moved.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { connect as natsConnect } from 'nats';
import { decode, encode } from '../../messages/codec';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { ProtocolError, errorReply } from '../../messages/errors';
import { waitFor } from '../support/wait';
import { writeOnceServed } from '../support/served';
import { REPAIR_BACKOFF_MS_MIN } from '../../cluster/node';

const page = (b: number): Uint8Array => new Uint8Array(4096).fill(b);
const idx = (nodeId: string): number => Number(nodeId.slice(1)) - 1;

async function replicaSets(c: InProcessCluster, name: string): Promise<string[][]> {
  return (await c.client.volumeInfo(name)).replicaSets!.map((r) => [...r.members]);
}

describe("the controller replaces a dead node's replicas", function () {
  this.timeout(180_000);
  let c: InProcessCluster;
  before(async () => {
    // n1 and n2 in one failure domain: a shard has a replica on one of them only.
    c = await startCluster({ nodes: 4, hosts: 1, clientTimeoutMs: 5000, zones: ['a', 'a', 'b', 'c'], node: { repairAfterMs: 1000 } });
  });
  after(async () => {
    await c?.stop();
  });

  it('moves each replica of a node down longer than the wait to a live node; a second member down, writes and reads go on; the node back destroys its replicas', async () => {
    const info = await c.client.createVolume({ name: 'rp', pageCount: 64, shards: 2, stripePages: 4, replicas: 3 });
    const vol = c.client.volume('rp');
    // Pages 0..3 are shard 0's, 4..7 shard 1's.
    await vol.writePages([{ page: 0, data: page(1) }, { page: 4, data: page(2) }]);
    const before = await replicaSets(c, 'rp');
    for (const set of before) assert.equal(set.filter((n) => n === 'n1' || n === 'n2').length, 1, `${JSON.stringify(set)}: one replica in zone a`);
    // A node holding both shards, not n1 (the controller's).
    const dead = ['n2', 'n3', 'n4'].find((n) => before.every((set) => set.includes(n)))!;
    assert.ok(dead !== undefined, JSON.stringify(before));
    c.kill(idx(dead));

    // Within the live window (5 s), the wait (1 s) and a check: both shards moved off it.
    await waitFor(`both shards' replicas moved off ${dead}`, async () => (await replicaSets(c, 'rp')).every((set) => set.length === 3 && !set.includes(dead)), 60_000);
    const after = await replicaSets(c, 'rp');
    for (let s = 0; s < 2; s++) {
      const added = after[s]!.filter((n) => !before[s]!.includes(n));
      assert.equal(added.length, 1, `shard ${s}: ${JSON.stringify(before[s])} -> ${JSON.stringify(after[s])}`);
      assert.deepEqual(after[s]!.filter((n) => n !== added[0]).sort(), before[s]!.filter((n) => n !== dead).sort());
    }
    const status = await c.client.volumeInfo('rp');
    assert.equal(status.replicaSets!.some((r) => r.moving !== undefined), false, 'no move left under way');

    // A second original member of each shard down (not n1): each shard has its new replica and one other.
    const second = ['n2', 'n3', 'n4'].find((n) => n !== dead && after.every((set) => set.includes(n)) && before.every((set) => set.includes(n)));
    if (second !== undefined) {
      c.kill(idx(second));
      for (const [p, v] of [[1, 7], [5, 8]] as const) {
        await writeOnceServed(vol, p, v, `a write to page ${p} with one original member of its shard left`);
      }
      const r = await vol.readPages([0, 1, 4, 5]);
      assert.deepEqual(r.pages.map((x) => x[0]), [1, 7, 2, 8]);
      await c.restart(idx(second));
    } else {
      // The placement put the two shards' sets apart: the pages still read back from the new sets.
      const r = await vol.readPages([0, 4]);
      assert.deepEqual(r.pages.map((x) => x[0]), [1, 2]);
    }

    // The dead node comes back: a member of neither shard now, it destroys both its replicas.
    await c.restart(idx(dead));
    for (let s = 0; s < 2; s++) {
      const dir = path.join(c.dataDirs[idx(dead)]!, 'dev0', 'shards', `${info.id}.${s}`);
      await waitFor(`${dead} destroyed its replica of shard ${s}`, () => !fs.existsSync(dir), 30_000);
    }
    assert.deepEqual(await replicaSets(c, 'rp'), after, 'nothing moved back');
  });
});

describe('with the wait before a repair set to 0, the controller moves no replica', function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 4, hosts: 1, clientTimeoutMs: 5000, node: { repairAfterMs: 0 } });
  });
  after(async () => {
    await c?.stop();
  });

  it('a node down past the live window keeps its replicas in the catalog', async () => {
    await c.client.createVolume({ name: 'np', pageCount: 16, shards: 1, stripePages: 16, replicas: 3 });
    const before = await replicaSets(c, 'np');
    const dead = before[0]!.find((n) => n !== 'n1')!;
    c.kill(idx(dead));
    // Dead to the controller after 5 s; a repair with no wait would start at the next check.
    const nc = await natsConnect({ servers: c.natsUrl });
    try {
      await waitFor(`the controller counts ${dead} dead`, async () => {
        const r = decode((await nc.request(`strata.${c.cluster}.controller.members`, encode({}), { timeout: 1000 })).data) as { members: Array<{ nodeId: string; live: boolean; repairInMs?: number }> };
        const m = r.members.find((x) => x.nodeId === dead);
        // With repairs off, no time until its replicas are replaced is given (strata status).
        assert.equal(m?.repairInMs, undefined);
        return m !== undefined && !m.live;
      }, 30_000);
    } finally {
      await nc.close();
    }
    await new Promise((r) => setTimeout(r, 3000));
    assert.deepEqual(await replicaSets(c, 'np'), before);
    assert.equal((await c.client.volumeInfo('np')).replicaSets!.some((r) => r.moving !== undefined), false);
  });
});

describe("a repair whose new node fails: tried again after a back-off, finished without the node once it is dead, then repaired in turn", function () {
  this.timeout(180_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 5000, node: { repairAfterMs: 1000 } });
  });
  after(async () => {
    await c?.stop();
  });

  it('a node nx whose opens fail is asked again no sooner than the back-off; once nx is dead the shard is n1, n2, nx, and then n1, n2 and the dead node back', async () => {
    await c.client.createVolume({ name: 'fx', pageCount: 16, shards: 1, stripePages: 16, replicas: 3 });
    const vol = c.client.volume('fx');
    await vol.writePages([{ page: 3, data: page(7) }]);
    assert.deepEqual((await replicaSets(c, 'fx'))[0]!.sort(), ['n1', 'n2', 'n3']);
    /** Waits until the shard's set is `want` (sorted, comma-separated), with no move under way. */
    const waitSet = (want: string): Promise<void> =>
      waitFor(`the shard's set is ${want}`, async () => {
        const r = (await c.client.volumeInfo('fx')).replicaSets![0]!;
        return r.moving === undefined && [...r.members].sort().join(',') === want;
      }, 60_000);
    const nc = await natsConnect({ servers: c.natsUrl });
    // A node 'nx' the controller hears from (the only live node outside the shard once n3 is
    // down), whose opens fail.
    const opens: number[] = [];
    const beat = (): void => void nc.request(`strata.${c.cluster}.controller.heartbeat`, encode({ nodeId: 'nx', hosts: 1 }), { timeout: 1000 }).catch(() => undefined);
    let beats: NodeJS.Timeout | undefined = setInterval(beat, 200);
    const sub = nc.subscribe(`strata.${c.cluster}.node.nx.shards.open`, {
      callback: (_e, m) => {
        opens.push(Date.now());
        m.respond(encode(errorReply(new ProtocolError('device_failed', 'the disk of nx failed'))));
      },
    });
    try {
      beat();
      await nc.flush();
      c.kill(2);
      await waitFor('the repair asked nx twice to open the new replica', () => opens.length >= 2, 60_000);
      // The second try waited for the back-off after the first failure.
      assert.ok(opens[1]! - opens[0]! >= REPAIR_BACKOFF_MS_MIN - 100, `tries ${opens[1]! - opens[0]!} ms apart`);
      assert.deepEqual((await c.client.volumeInfo('fx')).replicaSets![0]!.moving, { from: 'n3', to: 'nx' });

      // nx dies: the move is finished without it (n1 and n2 are a majority of both sets).
      clearInterval(beats);
      beats = undefined;
      sub.unsubscribe();
      await waitSet('n1,n2,nx');
      const before = opens.length;
      // Served meanwhile by n1 and n2.
      await writeOnceServed(vol, 4, 8, 'a write with nx in the set');

      // n3 comes back: nx, dead, is replaced by it (n3's old replica was destroyed, it is given the shard again).
      await c.restart(2);
      await waitSet('n1,n2,n3');
      assert.equal(opens.length, before, 'nx was not asked to open once dead');
      const r = await vol.readPages([3, 4]);
      assert.deepEqual(r.pages.map((x) => x[0]), [7, 8]);
      // n3 holds the shard again and serves as a member: with n2 down, n1 and n3 carry writes.
      c.kill(1);
      await writeOnceServed(vol, 5, 9, 'a write with n1 and n3');
      assert.deepEqual((await vol.readPages([3, 4, 5])).pages.map((x) => x[0]), [7, 8, 9]);
    } finally {
      if (beats !== undefined) clearInterval(beats);
      sub.unsubscribe();
      await nc.close();
    }
  });
});
