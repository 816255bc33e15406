/**
 * Branches (docs/branches.md): a volume created from another at a branch point, each shard's
 * replicas copying the parent's pages at that LSN on their own devices. The branch reads what
 * the parent held then, whatever the parent takes afterwards; writes to either are the other's
 * business no more; the branch outlives its parent and a restart of a node; a branch point no
 * longer retained is refused, and leaves no volume behind.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import type { Volume } from '../../cluster/client';
import { ProtocolError } from '../../messages/errors';
import { transient } from '../support/served';
import { waitFor } from '../support/wait';
import { runDemo } from '../../cluster/dev';

const PAGES = 64;

/** Page `p` of a volume, filled with `value`. */
function page(value: number): Uint8Array {
  return new Uint8Array(4096).fill(value);
}

/** The first byte of every page of the volume (each page is filled with one value). */
async function firstBytes(vol: Volume): Promise<number[]> {
  const all = Array.from({ length: PAGES }, (_, p) => p);
  for (;;) {
    try {
      const r = await vol.readPages(all);
      return r.pages.map((d, i) => {
        assert.ok(d.every((b) => b === d[0]), `page ${i} is filled with one value`);
        return d[0]!;
      });
    } catch (e) {
      if (!transient(e)) throw e;
    }
  }
}

describe('branches', function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 2, clientTimeoutMs: 15_000 });
  });
  after(async () => {
    await c?.stop();
  });

  it("reads the parent as of the branch point; each side's writes stay its own; outlives its parent and a node's restart", async () => {
    const parentInfo = await c.client.createVolume({ name: 'base', pageCount: PAGES, shards: 4, stripePages: 4, replicas: 3 });
    const parent = c.client.volume('base');
    // Every page 1, then pages 0..31 2: the state of the first branch point.
    await parent.writePages(Array.from({ length: PAGES }, (_, p) => ({ page: p, data: page(1) })));
    const at = await parent.writePages(Array.from({ length: 32 }, (_, p) => ({ page: p, data: page(2) })));
    const expectedAt = Array.from({ length: PAGES }, (_, p) => (p < 32 ? 2 : 1));
    // More writes after it, then a branch of now and one at the LSNs of the earlier write.
    await parent.writePages(Array.from({ length: 16 }, (_, p) => ({ page: 16 + p, data: page(3) })));
    const expectedNow = expectedAt.map((v, p) => (p >= 16 && p < 32 ? 3 : v));
    const past = await c.client.branchVolume('past', 'base', { lsns: Array.from({ length: 4 }, (_, s) => at.lsns.find((x) => x.shard === s)!.lsn) });
    await c.client.branchVolume('now', 'base');
    assert.equal(past.pageCount, PAGES);
    assert.equal(past.shards, 4);
    assert.equal(past.replicas, 3);
    assert.equal(past.branch?.parent, 'base');
    assert.equal(past.branch?.parentId, parentInfo.id);
    assert.deepEqual(past.branch?.lsns, Array.from({ length: 4 }, (_, s) => at.lsns.find((x) => x.shard === s)!.lsn));
    assert.equal((await c.client.volumeInfo('now')).branch?.parent, 'base');
    assert.deepEqual(await firstBytes(c.client.volume('past')), expectedAt);
    assert.deepEqual(await firstBytes(c.client.volume('now')), expectedNow);
    // Reads of a branch below its branch point: not its history.
    await assert.rejects(c.client.volume('past').readPages([0], { lsns: [{ shard: 0, lsn: past.branch!.lsns[0]! - 1 }] }), (e: ProtocolError) => e.code === 'trimmed');

    // Writes to the parent after the branch, and to the branch: each its own.
    await parent.writePages([{ page: 40, data: page(4) }]);
    const w = await c.client.volume('past').writePages([{ page: 0, data: page(5) }, { page: 63, data: page(5) }]);
    assert.ok(w.lsns.every((x) => x.lsn > past.branch!.lsns[x.shard]!), 'the branch\'s log continues after its branch point');
    const parentNow = expectedNow.map((v, p) => (p === 40 ? 4 : v));
    const pastNow = expectedAt.map((v, p) => (p === 0 || p === 63 ? 5 : v));
    assert.deepEqual(await firstBytes(parent), parentNow);
    assert.deepEqual(await firstBytes(c.client.volume('past')), pastNow);
    assert.deepEqual(await firstBytes(c.client.volume('now')), expectedNow);

    // A branch of a branch.
    await c.client.branchVolume('past2', 'past');
    assert.deepEqual(await firstBytes(c.client.volume('past2')), pastNow);

    // The parent deleted: the branches hold their own copies.
    await c.client.deleteVolume('base');
    assert.deepEqual(await firstBytes(c.client.volume('past')), pastNow);
    assert.deepEqual(await firstBytes(c.client.volume('now')), expectedNow);

    // A node restarted: its replicas of the branches open from their own files.
    await c.stopNode(2);
    await c.restart(2);
    await c.waitForMembers(3);
    await waitFor('every replica of the branch serves again', async () => {
      let open = 0;
      for (const n of c.nodes) for (const h of (await n?.hostPool.stats()) ?? []) for (const r of h.device?.shards ?? []) if (r.volumeId === past.id && r.state === 'up') open++;
      return open === 12;
    }, 30_000);
    assert.deepEqual(await firstBytes(c.client.volume('past')), pastNow);
    await c.client.volume('now').writePages([{ page: 1, data: page(6) }]);
    assert.deepEqual(await firstBytes(c.client.volume('now')), expectedNow.map((v, p) => (p === 1 ? 6 : v)));
  });

  it("the demo's workload (npm run demo) passes every check, its branch, its resize and its map among them, and leaves no volume", async () => {
    const before = (await c.client.listVolumes()).map((v) => v.name);
    const r = await runDemo(c.client, { pages: 512, shards: 2, batchPages: 16, replicas: 3 });
    assert.ok(r.ok, r.lines.join('\n'));
    assert.ok(r.lines.some((l) => /^branched demo-.*-gen1 .*: all as first written$/.test(l)), r.lines.join('\n'));
    assert.ok(r.lines.some((l) => /^grew demo-\S+ to 1024 pages in \d+ ms, .*: new pages zero until written, old ones kept$/.test(l)), r.lines.join('\n'));
    assert.ok(r.lines.some((l) => /^made pages 256\.\.511 zeros and mapped the volume in \d+ ms: they read as zeros; pages 0\.\.255 and 1023 hold data$/.test(l)), r.lines.join('\n'));
    assert.ok(r.lines.some((l) => /^compared the 3 replicas of every shard in \d+ ms \(strata shard check\): the same committed records, \d+ LSNs$/.test(l)), r.lines.join('\n'));
    assert.deepEqual((await c.client.listVolumes()).map((v) => v.name), before);
  });

  it('refuses a branch point below what the parent retains, a count of LSNs other than its shards, an unknown parent or a taken name, and creates nothing', async () => {
    await c.client.createVolume({ name: 'old', pageCount: PAGES, shards: 2, stripePages: 4, replicas: 3 });
    const old = c.client.volume('old');
    const first = await old.writePages([{ page: 0, data: page(1) }, { page: 4, data: page(1) }]);
    // Two checkpoints later, the first write's LSNs are below every replica's oldest readable LSN.
    for (let k = 0; k < 2; k++) {
      await old.writePages([{ page: 0, data: page(2 + k) }, { page: 4, data: page(2 + k) }]);
      for (const n of c.nodes) await n!.hostPool.checkpointAll();
    }
    const lsns = [0, 1].map((s) => first.lsns.find((x) => x.shard === s)!.lsn);
    await assert.rejects(c.client.branchVolume('gone', 'old', { lsns }), (e: ProtocolError) => e.code === 'trimmed' && /lsn/.test(e.message));
    await assert.rejects(c.client.branchVolume('gone', 'old', { lsns: [lsns[0]!] }), (e: ProtocolError) => e.code === 'bad_request' && /lsns/.test(e.message));
    await assert.rejects(c.client.branchVolume('gone', 'nothing'), (e: ProtocolError) => e.code === 'not_found');
    await assert.rejects(c.client.branchVolume('old', 'old'), (e: ProtocolError) => e instanceof ProtocolError && e.code !== 'unavailable' && e.code !== 'timeout');
    assert.ok(!(await c.client.listVolumes()).some((v) => v.name === 'gone'));
  });
});

describe('a branch whose replica has no copy of the parent on its device', function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 4, hosts: 1, clientTimeoutMs: 15_000 });
  });
  after(async () => {
    await c?.stop();
  });

  it('is placed on another node, stays out of leadership, and is sent the shard by a replica that copied it', async () => {
    const info = await c.client.createVolume({ name: 'p4', pageCount: PAGES, shards: 1, stripePages: 4, replicas: 3 });
    const parent = c.client.volume('p4');
    await parent.writePages(Array.from({ length: PAGES }, (_, p) => ({ page: p, data: page(p % 7 + 1) })));
    const placed = (await c.client.volumeInfo('p4')).replicaSets![0]!.members;
    const outside = [0, 1, 2, 3].find((i) => !placed.includes(`n${i + 1}`))!;
    // A node of the parent's set other than the controller's (n1) goes down.
    const down = [1, 2, 3].find((i) => placed.includes(`n${i + 1}`))!;
    c.kill(down);
    await c.waitForMembers(3, 30_000);
    const b = await c.client.branchVolume('b4', 'p4');
    const members = (await c.client.volumeInfo('b4')).replicaSets![0]!.members;
    assert.ok(members.includes(`n${outside + 1}`) && !members.includes(`n${down + 1}`), `the branch's replicas ${members.join(', ')}`);
    // The replica on the node without the parent's replica holds the shard once its leader sent it.
    const lsn = b.branch!.lsns[0]!;
    const stateOn = async (i: number): Promise<{ lastLsn: number; role: string } | undefined> => {
      for (const h of (await c.nodes[i]!.hostPool.stats())) for (const r of h.device?.shards ?? []) if (r.volumeId === b.id) return r;
      return undefined;
    };
    await waitFor('the replica without a copy is sent the shard', async () => ((await stateOn(outside))?.lastLsn ?? 0) >= lsn, 30_000);
    // Handed the leadership, it serves the branch's reads itself: the pages the parent held.
    await waitFor(`n${outside + 1} leads the branch`, async () => {
      if ((await stateOn(outside))?.role === 'leader') return true;
      await c.client.handOver('b4', 0, { to: `n${outside + 1}` }).catch(() => undefined);
      return false;
    }, 30_000);
    assert.deepEqual(await firstBytes(c.client.volume('b4')), Array.from({ length: PAGES }, (_, p) => p % 7 + 1));
    assert.deepEqual(await firstBytes(parent), Array.from({ length: PAGES }, (_, p) => p % 7 + 1));
    assert.notEqual(info.id, b.id);
  });
});
