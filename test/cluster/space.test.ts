/**
 * A device short of space: under its reserve the shards it leads refuse page writes `no_space`
 * (reads, ranges made zeros and deletes go on, and status says why); under half of it, it takes
 * no page data from other leaders either, so a shard whose majority is short stops writing
 * instead of failing its devices; space freed, everything goes on, and no acknowledged write is
 * lost. The disks' free space is what the test tells them (fault injection), the rest is real.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import type { Volume } from '../../cluster/client';
import { ProtocolError } from '../../messages/errors';
import { formatStatus } from '../../observability/status';
import { rejectsWith } from '../support/expect';
import { eventually } from '../support/wait';

const MIB = 1024 * 1024;
const node = { spaceReserveBytes: 64 * MIB, checkpointEveryRecords: 40, timing: { electionTimeoutMinMs: 150, electionTimeoutMaxMs: 300, heartbeatMs: 25, rpcTimeoutMs: 500 } };

function page(n: number): Uint8Array {
  return new Uint8Array(4096).fill(n);
}

/** The hosts' device queues as a node reports them in its status. */
type HostView = { queue?: { space?: { freeBytes: number; reserveBytes: number; state: string }; rejectedNoSpace?: number } };

describe('a device short of space', function () {
  this.timeout(120_000);
  let c: InProcessCluster;

  before(async () => {
    c = await startCluster({ nodes: 3, controllers: 3, hosts: 1, node });
  });
  after(async () => {
    await c?.stop();
  });

  /** The index of the node whose replica leads shard 0 of `volume`. */
  async function leaderOf(volume: string): Promise<number> {
    return eventually('a leader', async () => {
      const st = await c.client.status();
      const leader = st.volumes.find((v) => v.name === volume)?.shards[0]?.leader;
      if (leader === undefined) throw new ProtocolError('unavailable', 'no leader yet');
      return Number(leader.slice(1)) - 1;
    });
  }

  it('a leader under its reserve hands its leadership to a follower with space: writes, reads and zeros go on; none is handed back to it; status says so', async () => {
    await c.client.createVolume({ name: 's', pageCount: 64, shards: 1, replicas: 3 });
    const v = c.client.volume('s');
    await v.writePages([{ page: 1, data: page(1) }, { page: 2, data: page(2) }]);
    const i = await leaderOf('s');
    await c.setFreeBytes(i, 40 * MIB);
    try {
      await eventually('the leadership off the node short of space', async () => {
        if ((await leaderOf('s')) === i) throw new ProtocolError('unavailable', 'not yet');
      });
      await v.write(3, page(3));
      assert.deepEqual(await v.read([1, 2, 3]), [page(1), page(2), page(3)]);
      await v.zeroPages(2, 1);
      assert.deepEqual(await v.read(2), new Uint8Array(4096), 'a range made zeros goes on');
      // Refused by the replica short of space; on a loaded machine its refusal may come after
      // the leader's wait for it (`timeout`): either way the leader leads on. A handover also
      // ends, answered, when an election it did not cause (a loaded machine's) deposes the
      // leader meanwhile: asked again then (the replica short of space would take every one).
      let refused: unknown;
      for (let tries = 0; tries < 3 && refused === undefined; tries++) {
        refused = await c.client.handOver('s', 0, { to: `n${i + 1}` }).then(() => undefined, (e: unknown) => e);
      }
      assert.ok(refused instanceof ProtocolError && ['unavailable', 'timeout'].includes(refused.code), `the handover was refused: ${String(refused)}`);
      // Elected meanwhile on a loaded machine, it would hand the leadership over again at once.
      await eventually('the node short of space not leading', async () => {
        if ((await leaderOf('s')) === i) throw new ProtocolError('unavailable', 'the node short of space leads');
      });
      // The node says so: its device's space, and the status text names it.
      const st = (await c.client.status()) as unknown as { nodes: Array<{ node: { id: string }; hosts: HostView[] }> };
      const mine = st.nodes.find((n) => n.node.id === `n${i + 1}`)!;
      assert.equal(mine.hosts[0]!.queue!.space!.state, 'low');
      // What the disk said less what the device wrote since: at most what it said.
      const free = mine.hosts[0]!.queue!.space!.freeBytes;
      assert.ok(free <= 40 * MIB && free > 39.9 * MIB, `${free} bytes free`);
      assert.match(formatStatus(st), new RegExp(`n${i + 1} +degraded .*40\\.0 MiB \\(\\d+%\\).*host 0: writes refused, 40\\.0 MiB free`));
    } finally {
      await c.setFreeBytes(i, undefined);
    }
  });

  it("the pages made zeros leave the replicas' images at their next checkpoints: each replica reports its files' bytes", async () => {
    const info = await c.client.createVolume({ name: 'g', pageCount: 1024, shards: 1, replicas: 3 });
    const v = c.client.volume('g');
    for (let p = 0; p < 512; p += 128) await v.writePages(Array.from({ length: 128 }, (_, k) => ({ page: p + k, data: page(1 + ((p + k) % 200)) })));
    type Storage = { logBytes: number; imageBytes: number; imagePages: number };
    /** Each replica's storage as its node reports it, once every replica's satisfies `ok`. */
    const storageOnceAll = (what: string, ok: (s: Storage) => boolean): Promise<Storage[]> =>
      eventually(what, async () => {
        const all: Storage[] = [];
        for (const n of c.nodes) {
          const st = (await n!.status()) as unknown as { shards: Array<{ volumeId: string; storage?: Storage }> };
          all.push(...st.shards.filter((s) => s.volumeId === info.id).map((s) => s.storage!));
        }
        if (all.length !== 3 || !all.every(ok)) throw new ProtocolError('unavailable', `not yet: ${JSON.stringify(all)}`);
        return all;
      });
    // Records enough for a checkpoint on every replica (every 40).
    for (let k = 0; k < 45; k++) await v.write(1000, page(k));
    const full = await storageOnceAll('every replica checkpointed the 512 pages', (s) => s.imagePages === 513);
    for (const s of full) assert.ok(s.imageBytes >= 513 * 4096 && s.logBytes > 0, JSON.stringify(s));
    await v.zeroPages(0, 512);
    for (let k = 0; k < 90; k++) await v.write(1000, page(k));
    // Two checkpoints later, the images before the zeros are let go too.
    const after = await storageOnceAll('the images without the pages made zeros', (s) => s.imagePages === 1 && s.imageBytes < 64 * 1024);
    assert.equal(after.length, 3);
    // The cluster's status (strata status --json) gives each replica's bytes too.
    // A status lists no volume when the controller did not answer its node in time (under load).
    const reps = await eventually('the volume in the status', async () => {
      const st = (await c.client.status()) as unknown as { volumes: Array<{ name: string; shards: Array<{ replicas: Array<{ storage?: Storage }> }> }> };
      const found = st.volumes.find((x) => x.name === 'g')?.shards[0]?.replicas;
      if (found === undefined || found.length < 3) throw new ProtocolError('unavailable', `the status lists ${found?.length ?? 'no'} replicas of g/0`);
      return found;
    });
    assert.equal(reps.length, 3);
    for (const r of reps) assert.ok(r.storage !== undefined && r.storage.imagePages === 1 && r.storage.logBytes > 0, JSON.stringify(r));
    assert.deepEqual(await v.read([0, 511, 1000]), [new Uint8Array(4096), new Uint8Array(4096), page(89)]);
  });

  it('every device under half its reserve: page writes refused no_space, reads and zeros go on, and the catalog takes changes (a volume created and deleted, which frees space)', async () => {
    const v = c.client.volume('s');
    for (let k = 0; k < 3; k++) await c.setFreeBytes(k, 10 * MIB);
    try {
      // Every follower refuses the leadership: the leader keeps it, refusing page writes.
      const err = await rejectsWith(v.write(4, page(4)), 'no_space');
      assert.match(err.message, /has 10\.0 MiB free, under half of its reserve of 64\.0 MiB: page writes are refused until space is freed/);
      assert.deepEqual(await v.read([3, 4]), [page(3), new Uint8Array(4096)], 'reads go on; the refused write left nothing');
      await v.zeroPages(3, 1);
      await c.client.createVolume({ name: 'scratch', pageCount: 16, replicas: 3 });
      await c.client.deleteVolume('scratch');
      await rejectsWith(c.client.volumeInfo('scratch'), 'not_found');
    } finally {
      for (let k = 0; k < 3; k++) await c.setFreeBytes(k, undefined);
    }
    await v.write(4, page(4));
    assert.deepEqual(await v.read([3, 4]), [new Uint8Array(4096), page(4)]);
  });

  it('followers under half their reserve take no page data: one such follower leaves a majority, two stop the writes until space is freed; nothing acknowledged is lost', async () => {
    await c.client.createVolume({ name: 'f', pageCount: 64, shards: 1, replicas: 3 });
    const v = c.client.volume('f');
    await v.write(0, page(10));
    const leader = await leaderOf('f');
    const [a, b] = [0, 1, 2].filter((k) => k !== leader) as [number, number];
    await c.setFreeBytes(a, 10 * MIB);
    await v.write(1, page(11));
    await c.setFreeBytes(b, 10 * MIB);
    try {
      await majorityShort(v, a, b);
    } finally {
      await c.setFreeBytes(a, undefined);
      await c.setFreeBytes(b, undefined);
    }
    // Until the leader hears its followers take the records they refused (sent again a
    // heartbeat interval apart), a page write is still refused no_space.
    await eventually('writes go on', () => v.write(3, page(13)), 30_000, ['unavailable', 'timeout', 'not_leader', 'stale_term', 'no_space']);
    const got = await v.read([0, 1, 3]);
    assert.deepEqual(got, [page(10), page(11), page(13)]);
    // The write that timed out may or may not have been applied, but its page holds nothing else.
    const two = await v.read(2);
    assert.ok(two.every((x) => x === 0) || two.every((x) => x === 12));
  });

  /** The last LSN of node `k`'s replica of volume f's shard 0. */
  async function lastLsnOf(k: number): Promise<number> {
    const id = (await c.client.volumeInfo('f')).id;
    for (const h of await c.nodes[k]!.hostPool.stats()) for (const r of h.device?.shards ?? []) if (r.volumeId === id && r.shard === 0) return r.lastLsn;
    throw new Error(`no replica of f on n${k + 1}`);
  }

  /** With both followers `a` and `b` of volume f's shard under half their reserve. */
  async function majorityShort(v: Volume, a: number, b: number): Promise<void> {
    // No majority takes the page: not committed by its deadline.
    // The leader's answer says why: its followers' refusals.
    await rejectsWith(v.writePages([{ page: 2, data: page(12) }], { deadlineMs: Date.now() + 1500 }), 'timeout', /followers without it: n\d no_space \(device .* under half of its reserve .*\); n\d no_space/);
    const refused = async (k: number): Promise<number> => {
      const st = (await c.client.status()) as unknown as { nodes: Array<{ node: { id: string }; hosts: HostView[] }> };
      return st.nodes.find((n) => n.node.id === `n${k + 1}`)!.hosts[0]!.queue!.rejectedNoSpace ?? 0;
    };
    assert.ok((await refused(a)) > 0 && (await refused(b)) > 0, 'both followers refused page data');
    // The leader knows it now: the next page write is refused no_space at once, not appended.
    const leaderOfShard = await leaderOf('f');
    const lsnBefore = await lastLsnOf(leaderOfShard);
    await rejectsWith(v.writePages([{ page: 4, data: page(14) }], { deadlineMs: Date.now() + 10_000 }), 'no_space', /followers n\d, n\d take no page data \(device .* under half of its reserve .*\), and without them no majority of its replicas does/);
    assert.equal(await lastLsnOf(leaderOfShard), lsnBefore, 'nothing appended for it');
  }
});
