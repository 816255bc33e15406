/**
 * When a replica whose log lost records to damage (repaired at open, `repairTerm`) votes again.
 * One replica driven message by message, as its leader would: each case fails if the repair
 * ended before the replica holds every record that may have been committed with an
 * acknowledgement it lost.
 */
import { strict as assert } from 'node:assert';
import { Replica, type ReplicaTransport } from '../../actors/replica';
import { DeviceQueue } from '../../actors/device-queue';
import { SimDisk } from '../../storage-engine/sim-disk';
import { Slab } from '../../storage-engine/slab';
import { ShardStorage } from '../../storage-engine/shard-storage';
import { encodePageWrite } from '../../storage-engine/page-write';
import type { AppendReply, AppendRequest, VoteReply, WireRecord } from '../../messages/raft';
import type { ShardGeometry } from '../../actors/shard';

const geometry: ShardGeometry = { volumeId: 'v1', shard: 0, shards: 1, pageCount: 256, pageSize: 4096, stripePages: 256 };
const slab = new Slab({ slotBytes: 8192, slotCount: 64 });
const nowhere: ReplicaTransport = { send: () => Promise.reject(new Error('unreachable')) };
const timing = { electionTimeoutMinMs: 60, electionTimeoutMaxMs: 120, heartbeatMs: 10, rpcTimeoutMs: 100 };

/** Leader a's log in term 1: its term start, then 39 page writes. */
const history: WireRecord[] = [
  { term: 1, kind: 2, payload: new Uint8Array(0) },
  ...Array.from({ length: 39 }, (_, i) => ({ term: 1, kind: 1, payload: encodePageWrite(4096, [{ page: i, data: new Uint8Array(4096).fill(i + 1) }]) })),
];

describe('Replica repairing a damaged log: when it votes again', function () {
  this.timeout(20_000);
  let clock = 0;
  let open: Array<{ replica: Replica; queue: DeviceQueue; storage: ShardStorage }> = [];

  function start(disk: SimDisk) {
    const storage = ShardStorage.open(disk, { dir: 'shard', pageSize: 4096, pageCount: 256, cacheBytesMax: 1 << 20, slab, segmentBytesMax: 64 * 1024, repairFromPeers: true });
    const queue = new DeviceQueue({ disk, name: 'c' });
    const replica = new Replica({
      geometry, self: 'c', members: ['a', 'b', 'c'], log: storage.log, store: storage.store, queue, hardState: storage,
      transport: nowhere, snapshots: storage, timing, nowMs: clock, clock: () => clock,
    });
    const r = { replica, queue, storage };
    open.push(r);
    return r;
  }

  async function stop(r: { replica: Replica; queue: DeviceQueue; storage: ShardStorage }): Promise<void> {
    r.replica.close();
    await r.queue.drain().catch(() => undefined);
    r.storage.close();
    open = open.filter((x) => x !== r);
  }

  afterEach(async () => {
    for (const r of [...open]) await stop(r);
  });

  const append = (c: { replica: Replica }, m: Omit<AppendRequest, 'type' | 'leader'> & { leader?: string }) =>
    c.replica.handle({ type: 'append', leader: 'a', ...m }) as Promise<AppendReply>;

  /** c acknowledged 1..40 to leader a (term 1), then crashed and a record in the middle of its log rotted. */
  async function damagedFollower(commitLsn: number) {
    const disk = new SimDisk();
    const c = start(disk);
    const r = await append(c, { term: 1, prevLsn: 0, prevTerm: 0, records: history, commitLsn, leaderLastLsn: 40 });
    assert.equal(r.matchLsn, 40, 'acknowledged 1..40');
    await stop(c);
    disk.powerCut();
    const segments = disk.list('shard/log').filter((n) => n.endsWith('.log')).sort();
    disk.flipBits(`shard/log/${segments[0]}`, 20_000, 1);
    const again = start(disk);
    const kept = again.storage.log.lastLsn;
    assert.ok(kept < 40, `records lost (${kept} kept)`);
    assert.equal(again.replica.stats().repairing, true);
    return { c: again, kept };
  }

  /**
   * Whether c would vote for b in the next term with a log ending at `lastLsn`, past any leader
   * stickiness (a prevote: it changes neither c's term nor its vote, so the leader goes on).
   */
  async function votesFor(c: { replica: Replica }, lastLsn: number, lastTerm = 1): Promise<boolean> {
    clock += 10_000;
    const reply = (await c.replica.handle({ type: 'prevote', term: c.replica.currentTerm + 1, candidate: 'b', lastLsn, lastTerm })) as VoteReply;
    return reply.granted;
  }

  it('under the leader of its own term: not before it holds the leader\'s last LSN of its first message, though a heartbeat announced commit 0', async () => {
    const { c, kept } = await damagedFollower(40);
    // First message after the restart: a leadership check (commit 0), the leader at LSN 40.
    await append(c, { term: 1, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: 40 });
    // One record back, committed: still short of 40.
    assert.equal((await append(c, { term: 1, prevLsn: kept, prevTerm: 1, records: [history[kept]!], commitLsn: 40, leaderLastLsn: 40 })).success, true);
    assert.equal(c.replica.stats().repairing, true, 'records 1..40, committed with its lost acknowledgement, are not all back');
    assert.equal(await votesFor(c, kept + 1), false);
    // The rest back: repaired, and it votes again.
    await append(c, { term: 1, prevLsn: kept + 1, prevTerm: 1, records: history.slice(kept + 1), commitLsn: 40, leaderLastLsn: 40 });
    assert.equal(c.replica.stats().repairing, false);
    assert.equal(await votesFor(c, 40), true);
  });

  it('under the leader of its own term: a commit point announced before the leader counted the lost acknowledgement does not end it', async () => {
    const { c, kept } = await damagedFollower(20);
    // The leader's flush of 21..40 is still running when it sends this (commit 20), and then
    // commits 21..40 with the follower's acknowledgement from before the damage.
    assert.equal((await append(c, { term: 1, prevLsn: 40, prevTerm: 1, records: [], commitLsn: 20, leaderLastLsn: 40 })).success, false);
    await append(c, { term: 1, prevLsn: kept, prevTerm: 1, records: history.slice(kept, 20), commitLsn: 40, leaderLastLsn: 40 });
    assert.equal(c.replica.stats().repairing, true, 'holds 20 of the 40 records that may be committed');
    await append(c, { term: 1, prevLsn: 20, prevTerm: 1, records: history.slice(20), commitLsn: 40, leaderLastLsn: 40 });
    assert.equal(c.replica.stats().repairing, false);
  });

  it('under a leader of a newer term: once its commit point is a record of that term', async () => {
    const { c, kept } = await damagedFollower(40);
    const termStart: WireRecord = { term: 2, kind: 2, payload: new Uint8Array(0) };
    await append(c, { term: 2, leader: 'b', prevLsn: kept, prevTerm: 1, records: history.slice(kept, 30), commitLsn: 0, leaderLastLsn: 41 });
    assert.equal(c.replica.stats().repairing, true);
    await append(c, { term: 2, leader: 'b', prevLsn: 30, prevTerm: 1, records: [...history.slice(30), termStart], commitLsn: 41, leaderLastLsn: 41 });
    assert.equal(c.replica.stats().repairing, false, 'b was elected without it and holds every committed record');
  });

  it('an operator override (forceVote) ends it at once, durably: it votes, though it holds only what it kept', async () => {
    const { c, kept } = await damagedFollower(40);
    assert.equal(await votesFor(c, kept), false);
    assert.deepEqual(await c.replica.forceVote(), { wasRepairing: true, term: c.replica.currentTerm });
    assert.equal(c.replica.stats().repairing, false);
    assert.equal(c.storage.load()?.repairTerm, undefined, 'the mark is gone from the hard state');
    assert.equal(await votesFor(c, kept), true, 'a candidate with no more than it kept gets its vote');
    assert.deepEqual(await c.replica.forceVote(), { wasRepairing: false, term: c.replica.currentTerm }, 'a second override changes nothing');
  });

  it('under a leader of its own term that does not say its last LSN: it stays repairing', async () => {
    const { c, kept } = await damagedFollower(40);
    await append(c, { term: 1, prevLsn: kept, prevTerm: 1, records: history.slice(kept), commitLsn: 40 });
    assert.equal(c.replica.stats().repairing, true);
    assert.equal(await votesFor(c, 40), false);
  });
});
