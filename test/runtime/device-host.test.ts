import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { DeviceHost, DEVICE_STALL_MS, SEED_WAIT_MS, deviceProblem, type ShardSpec } from '../../runtime/device-host';
import { RealDisk } from '../../storage-engine/real-disk';
import { SimDisk } from '../../storage-engine/sim-disk';
import type { Disk } from '../../storage-engine/disk';
import { waitFor } from '../support/wait';
import { StorageError, type CorruptionReport } from '../../storage-engine/errors';
import { ProtocolError } from '../../messages/errors';
import { ImageReader } from '../../storage-engine/image';
import type { Replica } from '../../actors/replica';
import { ShardStorage } from '../../storage-engine/shard-storage';
import { SegmentLog } from '../../storage-engine/log';
import { Slab } from '../../storage-engine/slab';
import { RecordKind } from '../../storage-engine/record';

const spec = (shard = 0): ShardSpec => ({
  volumeId: 'v1', volumeName: 'vol', shard, shards: 2, pageCount: 64, pageSize: 4096, stripePages: 4, members: ['n1'],
});

/** The replica of a shard once it leads (a replica set of one elects itself on its first tick). */
async function leader(host: DeviceHost, shard: number): Promise<Replica> {
  for (let i = 0; i < 1000; i++) {
    host.tick(performance.now(), Date.now());
    const r = host.replica('v1', shard);
    if (r.isLeader) return r;
    await new Promise((res) => setImmediate(res));
  }
  throw new Error('no leader');
}

const soon = (): { deadlineMs: number; nowMs: number } => ({ deadlineMs: Date.now() + 5000, nowMs: Date.now() });

function page(fill: number): Uint8Array {
  return new Uint8Array(4096).fill(fill);
}

/** A write to `replica` (page 1) whose fdatasync `disk` fails: its error. */
async function writeFailingFsync(disk: SimDisk, replica: Replica): Promise<StorageError> {
  disk.failFsync({ times: 1 });
  return replica.write([{ page: 1, data: page(3) }]).then(
    () => assert.fail('a write whose fsync failed must not be acknowledged'),
    (e: StorageError) => e,
  );
}

describe('DeviceHost supervision', () => {
  it('an fsync failure fails the write, restarts the shards from durable state, and counts the restart', async () => {
    const disk = new SimDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    host.openShard(spec(0));
    host.openShard(spec(1));
    const a0 = (await leader(host, 0));
    await a0.write([{ page: 0, data: page(1) }]);
    await (await leader(host, 1)).write([{ page: 4, data: page(2) }]);

    const written = host.stats().queue.appendBytes;
    assert.ok(written > 0);
    const err = await writeFailingFsync(disk, a0);
    assert.equal(err.code, 'fsync_failed');
    assert.equal(typeof err.details?.['recordLsn'], 'number', 'the write\'s record is named (with several replicas it may still commit)');
    assert.deepEqual(host.onReplicaError('v1', 0, err, a0), { restarted: true }, 'a device failure is fatal to the in-memory state');

    const st = host.stats();
    assert.equal(st.restarts, 2, 'both shards of the failed device were reopened');
    assert.equal(st.queue.state, 'ok', 'with a fresh queue');
    assert.equal(st.failures, 1, 'the device failure is counted');
    assert.ok(st.queue.appendBytes >= written, "the old queue's counters go on in the new one's");
    assert.ok(st.queue.syncs >= 2);
    const fresh = (await leader(host, 0));
    assert.notEqual(fresh, a0, 'a new actor serves the shard');
    assert.deepEqual((await fresh.read([0], soon())).pages[0], page(1), 'acknowledged data is intact');
    assert.deepEqual((await (await leader(host, 1)).read([4], soon())).pages[0], page(2));
    await fresh.write([{ page: 1, data: page(4) }]);
    assert.deepEqual((await fresh.read([1], soon())).pages[0], page(4), 'the shard takes writes again');
    await host.close();
  });

  it('one failed fdatasync under many writes in flight restarts the device once: the errors of the replicas it replaced restart nothing', async () => {
    const disk = new SimDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    host.openShard(spec(0));
    host.openShard(spec(1));
    const a0 = await leader(host, 0);
    await a0.write([{ page: 0, data: page(1) }]);
    await (await leader(host, 1)).write([{ page: 4, data: page(2) }]);
    disk.failFsync({ times: 1 });
    // Sixteen writes in flight on shard 0, all in the batch whose flush fails.
    const pages = [1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27, 32];
    const errs = await Promise.all(pages.map((p) => a0.write([{ page: p, data: page(3) }]).then(() => undefined, (e: StorageError) => e)));
    assert.ok(errs.every((e) => e !== undefined && (e.code === 'fsync_failed' || e.code === 'device_failed')), 'none is acknowledged');
    // Each error is handed over as the actor host does, with the replica that handled it.
    const restarted = errs.map((e) => host.onReplicaError('v1', 0, e, a0));
    assert.deepEqual(restarted.filter((r) => r !== undefined).length, 1, 'one restart for one failure');
    const st = host.stats();
    assert.equal(st.restarts, 2, 'each shard of the device was reopened once');
    assert.deepEqual(st.shards.map((x) => x.state), ['up', 'up']);
    // A request that reaches a shard with no replica (down, say) restarts nothing either.
    assert.equal(host.onReplicaError('v1', 1, new StorageError('device_failed', 'shard v1/1 is down'), undefined), undefined);
    assert.equal(host.stats().restarts, 2);
    const fresh = await leader(host, 0);
    assert.deepEqual((await fresh.read([0], soon())).pages[0], page(1), 'acknowledged data is intact');
    await fresh.write([{ page: 1, data: page(4) }]);
    assert.deepEqual((await (await leader(host, 1)).read([4], soon())).pages[0], page(2));
    await host.close();
  });

  it('a failed device whose errors nobody hands over is reopened by the next tick: a fresh queue, its replicas from durable state', async () => {
    const disk = new SimDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 0 });
    host.openShard(spec(0));
    const a0 = await leader(host, 0);
    await a0.write([{ page: 0, data: page(1) }]);
    disk.failFsync({ times: 1 });
    await assert.rejects(a0.write([{ page: 1, data: page(3) }]), (e: StorageError) => e.code === 'fsync_failed');
    assert.equal(host.stats().queue.state, 'failed');
    // The error is not handed to onReplicaError (say, a follower's failed append): the tick finds the failed queue.
    host.tick(performance.now(), Date.now());
    const st = host.stats();
    assert.deepEqual([st.queue.state, st.failures, st.restarts], ['ok', 1, 1]);
    const fresh = await leader(host, 0);
    assert.notEqual(fresh, a0);
    assert.deepEqual((await fresh.read([0], soon())).pages[0], page(1));
    await host.close();
  });

  it('on a failed device, an error handed over without the replica that handled it still reopens the device', async () => {
    const disk = new SimDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 0 });
    host.openShard(spec(0));
    const a0 = await leader(host, 0);
    await a0.write([{ page: 0, data: page(1) }]);
    const err = await writeFailingFsync(disk, a0);
    // Handed over without the replica that handled it: the device failed, so it is reopened all the same.
    assert.deepEqual(host.onReplicaError('v1', 0, err, undefined), { restarted: true });
    const st = host.stats();
    assert.deepEqual([st.queue.state, st.failures, st.restarts], ['ok', 1, 1]);
    await host.close();
  });

  it('a shard\'s counters go on across the replicas it reopens, and stay while it is left down: they never go down while the host runs', async () => {
    const disk = new SimDisk();
    let now = 0;
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 0, restartsMax: 2, nowMs: () => now });
    host.openShard(spec(0));
    const a0 = await leader(host, 0);
    await a0.write([{ page: 0, data: page(1) }]);
    await a0.read([0], soon());
    const before = host.stats().shards[0]!;
    assert.deepEqual([before.elections, before.writes, before.reads], [1, 1, 1]);
    assert.ok(before.cache.hits + before.cache.misses > 0);
    const err = await writeFailingFsync(disk, a0);
    assert.deepEqual(host.onReplicaError('v1', 0, err, a0), { restarted: true });
    const fresh = await leader(host, 0);
    assert.notEqual(fresh, a0);
    await fresh.write([{ page: 1, data: page(4) }]);
    await fresh.read([0], soon());
    const after = host.stats().shards[0]!;
    assert.equal(after.elections, 2, 'the election of the reopened replica adds to the one before');
    assert.equal(after.writes, 2, 'its write adds to the one before');
    assert.equal(after.reads, 2);
    for (const k of ['preVotes', 'handovers', 'pagesWritten', 'checkpoints', 'appendsSent'] as const) assert.ok(after[k] >= before[k], k);
    for (const k of ['hits', 'misses', 'evictions', 'damaged'] as const) assert.ok(after.cache[k] >= before.cache[k], `cache ${k}`);
    assert.equal(after.cache.hits + after.cache.misses, before.cache.hits + before.cache.misses + 1);
    // Restarted twice more: left down, with the counters it had.
    const bug = new TypeError('boom');
    now += 10;
    host.onReplicaError('v1', 0, bug, host.currentReplica('v1', 0));
    now += 10;
    assert.equal(host.onReplicaError('v1', 0, bug, host.currentReplica('v1', 0))?.restarted, false);
    const down = host.stats().shards[0]!;
    assert.equal(down.state, 'down');
    assert.deepEqual([down.elections, down.writes, down.reads, down.cache.hits + down.cache.misses], [after.elections, after.writes, after.reads, after.cache.hits + after.cache.misses]);
    await host.close();
  });

  it('a reopen after a failed fdatasync starts from what was durable: the records of the failed batch, which the page cache still shows, are not served', async () => {
    // As Linux: what the failed fdatasync did not write is marked clean, and no later one writes it.
    const disk = new SimDisk({ fsyncFailureDropsData: true });
    let host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 0 });
    host.openShard(spec(0));
    const a0 = await leader(host, 0);
    await a0.write([{ page: 0, data: page(1) }]);
    const err = await writeFailingFsync(disk, a0);
    assert.deepEqual(host.onReplicaError('v1', 0, err, a0), { restarted: true });
    const fresh = await leader(host, 0);
    const served = (await fresh.read([1], soon())).pages[0]!;
    await fresh.write([{ page: 2, data: page(5) }]);
    await host.close();
    disk.powerCut();
    const log = SegmentLog.open(disk, { dir: 'shards/v1.0/log' });
    assert.deepEqual(log.corruption.map((c) => c.reason), [], 'no hole in the log where the records of the failed batch were');
    log.close();
    host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 0 });
    const st = host.openShard(spec(0));
    assert.equal(st.state, 'up', st.downReason);
    const after = await leader(host, 0);
    const pages = (await after.read([0, 1, 2], soon())).pages;
    assert.deepEqual(pages[1], served, 'what the reopened replica served of page 1 survives the power cut');
    assert.deepEqual(pages[2], page(5), 'a write acknowledged after the reopen survives the power cut');
    assert.deepEqual(pages[0], page(1));
    await host.close();
  });

  it('a vote still queued when its replica is restarted is not saved by the closed replica: one vote per term', async () => {
    const disk = new SimDisk();
    let now = 1000;
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 0, nowMs: () => now });
    host.openShard({ ...spec(0), members: ['n1', 'n2', 'n3'] });
    const old = host.currentReplica('v1', 0)!;
    now += 1000;
    // A vote in term 4, saved: the replica has a hard state (reopened without one, it would count
    // as a replica whose storage was lost, and vote for no one until its peers answered).
    assert.deepEqual(await old.handle({ type: 'vote', term: 4, candidate: 'n3', lastLsn: 0, lastTerm: 0 }), { term: 4, granted: true });
    now += 1000;
    // The vote's save waits in the device's queue; the replica is restarted before it runs.
    const first = old.handle({ type: 'vote', term: 5, candidate: 'n2', lastLsn: 0, lastTerm: 0 }).then(
      (r) => r,
      (e: StorageError) => e,
    );
    assert.deepEqual(host.onReplicaError('v1', 0, new StorageError('invariant', 'test: reopen the replica'), old), { restarted: true });
    const fresh = host.currentReplica('v1', 0)!;
    assert.notEqual(fresh, old);
    const answer = await first;
    assert.ok(answer instanceof StorageError && answer.code === 'closed', `the closed replica grants nothing: ${JSON.stringify(answer)}`);
    // Nor did it save that vote under its successor: a replica opened now reads none.
    assert.deepEqual(host.onReplicaError('v1', 0, new StorageError('invariant', 'test: reopen again'), fresh), { restarted: true });
    const third = host.currentReplica('v1', 0)!;
    now += 1000;
    const second = (await third.handle({ type: 'vote', term: 5, candidate: 'n3', lastLsn: 0, lastTerm: 0 })) as { term: number; granted: boolean };
    assert.deepEqual(second, { term: 5, granted: true }, 'n2 got no vote in term 5, so n3 may');
    await host.close();
  });

  it('keeps its replicas\' terms and votes in the device\'s hard-state journal: votes given at once share one fdatasync, survive a power cut, and a destroyed shard\'s are forgotten', async () => {
    const disk = new SimDisk();
    let now = 1000;
    const three = (shard: number): ShardSpec => ({ ...spec(shard), shards: 40, members: ['n1', 'n2', 'n3'] });
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 0, nowMs: () => now });
    for (let s = 0; s < 40; s++) host.openShard(three(s));
    now += 1000;
    const syncs = disk.counters.fdatasyncs;
    const answers = await Promise.all(Array.from({ length: 40 }, (_, s) => host.currentReplica('v1', s)!.handle({ type: 'vote', term: 4, candidate: 'n3', lastLsn: 0, lastTerm: 0 })));
    assert.ok(answers.every((a) => JSON.stringify(a) === JSON.stringify({ term: 4, granted: true })), JSON.stringify(answers));
    const st = host.stats().hardStates;
    assert.equal(st.saves, 40);
    assert.equal(st.batches, 1, 'the 40 saves queued together were written together');
    assert.equal(disk.counters.fdatasyncs - syncs, 1);
    assert.equal(host.stats().queue.stateSaves, 40);
    assert.ok(disk.list('shards/v1.7').every((n) => n !== 'raft'), 'nothing written in the replica\'s directory');
    await host.close();
    disk.powerCut();

    now += 1000;
    const again = new DeviceHost({ dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 0, nowMs: () => now });
    try {
      for (let s = 0; s < 40; s++) again.openShard({ ...three(s), existing: true });
      now += 1000;
      assert.equal(again.stats().shards.filter((r) => r.repairing).length, 0, 'none lost its term and vote');
      assert.deepEqual(await again.currentReplica('v1', 7)!.handle({ type: 'vote', term: 4, candidate: 'n2', lastLsn: 0, lastTerm: 0 }), { term: 4, granted: false }, 'it voted for n3 in term 4');
      // Destroyed, then made again here: a new replica, without the old one's term and vote.
      again.closeShard('v1', 7, { destroy: true });
      again.openShard(three(7));
      now += 1000;
      assert.equal(again.stats().shards.find((r) => r.shard === 7)?.term, 0);
      assert.deepEqual(await again.currentReplica('v1', 7)!.handle({ type: 'vote', term: 4, candidate: 'n2', lastLsn: 0, lastTerm: 0 }), { term: 4, granted: true });
    } finally {
      await again.close();
    }
  });

  it('a replica the node held (existing) that opens with no trace of its storage is reported lost, and one of several does not vote', async () => {
    const disk = new SimDisk();
    const lost: Array<{ shard: number; members: number }> = [];
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, onStorageLost: (s) => void lost.push({ shard: s.shard, members: s.members.length }) });
    const three = (shard: number): ShardSpec => ({ ...spec(shard), shards: 4, members: ['n1', 'n2', 'n3'] });
    const repairing = (shard: number): boolean | undefined => host.stats().shards.find((x) => x.shard === shard)?.repairing;
    try {
      host.openShard({ ...three(0), existing: true });
      host.openShard(three(1));
      host.openShard({ ...spec(2), shards: 4, existing: true });
      assert.deepEqual(lost, [{ shard: 0, members: 3 }, { shard: 2, members: 1 }], 'the new replica (a create\'s open) is not reported');
      assert.equal(repairing(0), true, 'no vote until its peers answered and gave it the shard back');
      assert.equal(repairing(1), false);
      assert.equal(repairing(2), true, 'a sole copy waits for an operator to accept the loss');
      // Opened once on this device, shard 1 existed from then on: its storage gone, the host's
      // restart of it finds it lost although its spec was a create's.
      disk.removeTree('shards/v1.1');
      disk.fsyncDir('shards');
      assert.deepEqual(host.onReplicaError('v1', 1, new StorageError('invariant', 'test: reopen'), host.currentReplica('v1', 1)), { restarted: true });
      assert.deepEqual(lost.at(-1), { shard: 1, members: 3 });
      assert.equal(repairing(1), true);
    } finally {
      await host.close();
    }
  });

  it('a replica a move adds opens under both sets; a replica open already takes the members of its node\'s record after a move (the new set\'s leader is heard)', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk() });
    const set = (shard: number, members: string[], priorMembers?: string[]): ShardSpec => ({ ...spec(shard), shards: 4, members, ...(priorMembers ? { priorMembers } : {}) });
    const append = (leader: string) => ({ type: 'append' as const, term: 1, leader, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: 0 });
    const state = (shard: number) => host.stats().shards.find((x) => x.shard === shard)!;
    try {
      // n1 joins {n2,n3,n4} -> {n1,n2,n3}.
      host.openShard(set(0, ['n1', 'n2', 'n3'], ['n2', 'n3', 'n4']));
      assert.deepEqual(state(0).config, { members: ['n1', 'n2', 'n3'], prior: ['n2', 'n3', 'n4'] });
      assert.deepEqual(state(0).members, ['n1', 'n2', 'n3'], 'the members reported are its own configuration\'s');
      // A node of neither set is refused; n1 cannot be of the set it moves from.
      assert.throws(() => host.openShard(set(1, ['n2', 'n3', 'n4'])), (e: unknown) => e instanceof StorageError && e.code === 'bad_request' && /^shard v1\/1: node n1 is not one of its replicas$/.test(e.message));
      assert.throws(() => host.openShard(set(1, ['n1', 'n2', 'n3'], ['n1', 'n2', 'n4'])), (e: unknown) => e instanceof StorageError && e.code === 'bad_request' && /not one of the set it moves from/.test(e.message));
      assert.equal(host.stats().shards.some((x) => x.shard === 1), false, 'neither opened a replica');

      // A replica of {n1,n2,n3} that missed a move (n3 to n5): it refuses n5 as a leader until its node's record names n5.
      host.openShard(set(2, ['n1', 'n2', 'n3']));
      await assert.rejects(host.replica('v1', 2).handle(append('n5')), (e: unknown) => (e as { code?: string }).code === 'bad_request');
      host.openShard({ ...set(2, ['n1', 'n2', 'n5']), existing: true });
      const r = await host.replica('v1', 2).handle(append('n5'));
      assert.equal((r as { success?: boolean }).success, true, JSON.stringify(r));
    } finally {
      await host.close();
    }
  });

  it('a replica open already that its node\'s record then names in a move\'s both sets takes the messages of a leader of the set before too', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk() });
    const append = (leader: string) => ({ type: 'append' as const, term: 1, leader, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: 0 });
    try {
      host.openShard({ ...spec(0), members: ['n1', 'n2', 'n3'] });
      await assert.rejects(host.replica('v1', 0).handle(append('n4')), (e: unknown) => (e as { code?: string }).code === 'bad_request');
      // The record of a move {n2,n3,n4} -> {n1,n2,n3}: n4, of the set before only, may still lead.
      host.openShard({ ...spec(0), members: ['n1', 'n2', 'n3'], priorMembers: ['n2', 'n3', 'n4'], existing: true });
      const r = await host.replica('v1', 0).handle(append('n4'));
      assert.equal((r as { success?: boolean }).success, true, JSON.stringify(r));
    } finally {
      await host.close();
    }
  });

  it('a replica a move adds keeps both sets through a restart, also once its node opened it again with its record', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk() });
    const move: ShardSpec = { ...spec(0), members: ['n1', 'n2', 'n3'], priorMembers: ['n2', 'n3', 'n4'] };
    const append = (leader: string, term: number) => ({ type: 'append' as const, term, leader, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: 0 });
    const success = (r: unknown): boolean | undefined => (r as { success?: boolean }).success;
    const config = () => host.stats().shards.find((x) => x.shard === 0)!.config;
    try {
      host.openShard(move);
      host.openShard({ ...move, existing: true });
      // A leader heard: its term is saved, so the restart finds the replica's storage as it was.
      assert.equal(success(await host.replica('v1', 0).handle(append('n2', 1))), true);
      assert.deepEqual(host.onReplicaError('v1', 0, new StorageError('invariant', 'test: reopen'), host.currentReplica('v1', 0)), { restarted: true });
      assert.equal(host.stats().restarts, 1);
      // Its log holds no Config record yet: the sets are those its node opens it with.
      assert.deepEqual(config(), { members: ['n1', 'n2', 'n3'], prior: ['n2', 'n3', 'n4'] });
      const r = await host.replica('v1', 0).handle(append('n4', 2));
      assert.equal(success(r), true, `a leader of the set before is still heard: ${JSON.stringify(r)}`);
      // A second restart, from the restarted replica.
      assert.deepEqual(host.onReplicaError('v1', 0, new StorageError('invariant', 'test: reopen again'), host.currentReplica('v1', 0)), { restarted: true });
      assert.deepEqual(config(), { members: ['n1', 'n2', 'n3'], prior: ['n2', 'n3', 'n4'] });
    } finally {
      await host.close();
    }
  });

  it('a sole replica moved to this node is not a sole copy while the move runs: a log damaged in the middle is repaired at its reopen, the node it moves from holding the records', async () => {
    const disk = new SimDisk();
    const log = 'shards/v1.0/log';
    const writer = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    writer.openShard(spec(0));
    const l = await leader(writer, 0);
    for (let i = 0; i < 30; i++) await l.write([{ page: i % 4, data: page(i) }]);
    await writer.close();
    const [segment] = disk.list(log).filter((n) => n.endsWith('.log'));
    disk.flipBits(`${log}/${segment}`, 40_000, 1);
    const before = disk.list(log).map((n) => disk.fileBytes(`${log}/${n}`));

    const repairs: boolean[] = [];
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, onRepaired: (_s, _damage, lost) => repairs.push(lost) });
    try {
      // Its node's record of the move of the shard's one replica from n2 to n1.
      host.openShard({ ...spec(0), members: ['n1'], priorMembers: ['n2'], existing: true });
      assert.deepEqual(repairs, [true], 'repaired, reported once: the records after the damage were discarded');
      assert.notDeepEqual(disk.list(log).map((n) => disk.fileBytes(`${log}/${n}`)), before, 'its log was cut');
      const st = host.stats().shards.find((x) => x.shard === 0)!;
      assert.equal(st.state, 'up');
      assert.equal(st.repairing, true, 'it waits for its peer to give the records back before it votes');
    } finally {
      await host.close();
    }
  });

  it('request errors are not fatal: no restart', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk() });
    host.openShard(spec(0));
    const err = await (await leader(host, 0)).write([{ page: 63, data: page(1) }]).then(
      () => assert.fail('page 63 is on shard 1'),
      (e: StorageError) => e,
    );
    assert.equal(err.code, 'bad_request');
    assert.equal(host.onReplicaError('v1', 0, err, host.currentReplica('v1', 0)), undefined);
    assert.equal(host.stats().restarts, 0);
    await host.close();
  });

  it('a shard that keeps failing is left down after restartsMax, with a typed reason', async () => {
    const disk = new SimDisk();
    let now = 0;
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, restartsMax: 2, nowMs: () => now });
    host.openShard(spec(0));
    const bug = new TypeError('boom');
    assert.deepEqual(host.onReplicaError('v1', 0, bug, host.currentReplica('v1', 0)), { restarted: true });
    now += 10;
    assert.deepEqual(host.onReplicaError('v1', 0, bug, host.currentReplica('v1', 0)), { restarted: true });
    now += 10;
    // The third in the window: left down, and the caller is told so, with why.
    const outcome = host.onReplicaError('v1', 0, bug, host.currentReplica('v1', 0));
    assert.equal(outcome?.restarted, false);
    assert.match(outcome?.downReason ?? '', /failed 2 times in 60000 ms; left down/);
    assert.throws(() => host.replica('v1', 0), (e: StorageError) => e.code === 'device_failed' && /left down/.test(e.message));
    assert.equal(host.stats().shards[0]?.state, 'down');
    await host.close();
  });

  it('a replica that throws on its clock tick is restarted alone, and told so once the restart is made or refused; the device\'s other shards go on', async () => {
    let now = 0;
    const failures: string[] = [];
    const host = new DeviceHost({
      dir: 'dev0', self: 'n1', disk: new SimDisk(), nowMs: () => now, restartsMax: 1,
      // A transport with a bug: it throws instead of returning a failed promise.
      transportFor: () => ({ send: () => { throw new TypeError('transport bug'); } }),
      onTickError: (s, e, outcome) => failures.push(`${s.volumeId}/${s.shard}: ${(e as Error).message}: ${outcome.restarted ? 'restarted' : `down (${outcome.downReason})`}`),
    });
    host.openShard({ ...spec(0), members: ['n1', 'n2', 'n3'] });
    host.openShard(spec(1));
    now = 1000; // past shard 0's election timeout: it asks its peers, and the transport throws
    host.tick(now, Date.now());
    assert.deepEqual(failures, ['v1/0: transport bug: restarted']);
    assert.equal(host.stats().restarts, 1, 'shard 0 was reopened from durable state');
    // Again, past restartsMax: left down, and told so (not 'restarted').
    now = 3000;
    host.tick(now, Date.now());
    assert.equal(failures.length, 2);
    assert.match(failures[1]!, /^v1\/0: transport bug: down \(shard v1\/0 failed 1 times in 60000 ms; left down; last: transport bug\)$/);
    const r1 = await leader(host, 1);
    await r1.write([{ page: 4, data: page(9) }]);
    assert.deepEqual((await r1.read([4], soon())).pages[0], page(9), 'shard 1 serves');
    await host.close();
  });

  it('ticks a quiet replica (quiesced, nothing waiting) once a heartbeat period, all of them in the first tick of the period; the others every tick, and one that wakes from the next tick', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk(), timing: { heartbeatMs: 100 } });
    for (const k of [0, 1, 2]) host.openShard({ ...spec(k), shards: 3 });
    const replicas = [0, 1, 2].map((k) => host.replica('v1', k));
    // Shards 0 and 1 quiet, shard 2 awake; each tick of each replica noted with its time.
    const quiet = [true, true, false];
    const ticked: number[][] = [[], [], []];
    replicas.forEach((r, k) => {
      Object.defineProperty(r, 'quiet', { get: () => quiet[k] });
      const tick = r.tick.bind(r);
      r.tick = (t: number) => {
        ticked[k]!.push(t);
        tick(t);
      };
    });
    for (let t = 1005; t <= 1395; t += 10) host.tick(t, Date.now());
    // Opened (awake) until the first quiet tick, at 1005, found them quiet.
    assert.deepEqual(ticked[0], [1005, 1105, 1205, 1305], 'quiet: the first tick of each period');
    assert.deepEqual(ticked[1], ticked[0], 'the quiet ones together');
    assert.equal(ticked[2]!.length, 40, 'awake: every tick');
    // Shard 1 woken without telling (a follower whose leader wakes): from the next period on.
    quiet[1] = false;
    ticked[1]!.length = 0;
    for (let t = 1405; t <= 1545; t += 10) host.tick(t, Date.now());
    assert.deepEqual(ticked[1], [1405, 1415, 1425, 1435, 1445, 1455, 1465, 1475, 1485, 1495, 1505, 1515, 1525, 1535, 1545]);
    // Shard 0 woken (a quiesced leader that takes a request tells its host): from the next tick.
    quiet[0] = false;
    (replicas[0] as unknown as { onAwake: () => void }).onAwake();
    ticked[0]!.length = 0;
    for (let t = 1555; t <= 1575; t += 10) host.tick(t, Date.now());
    assert.deepEqual(ticked[0], [1555, 1565, 1575]);
    // Quiet again: once a period, from the next period's first tick.
    quiet[0] = true;
    quiet[1] = true;
    ticked[0]!.length = 0;
    ticked[1]!.length = 0;
    for (let t = 1585; t <= 1795; t += 10) host.tick(t, Date.now());
    assert.deepEqual(ticked[0], [1585, 1595, 1605, 1705]);
    assert.deepEqual(ticked[1], ticked[0]);
    await host.close();
  });

  it('paces the background scrub of small replicas: a step that checks little counts as 1 MiB, so a device of them takes at most 4 steps a second at 4 MiB/s', async () => {
    let now = 1000;
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk(), nowMs: () => now, scrubBytesPerSecond: 4 * 1024 * 1024 });
    for (const k of [0, 1, 2, 3]) host.openShard({ ...spec(k), shards: 4 });
    for (const k of [0, 1, 2, 3]) await (await leader(host, k)).write([{ page: k * 4, data: page(k + 1) }]);
    const before = host.stats().scrub;
    // From past the times `leader` ticked at (the process's clock).
    now = Math.ceil(performance.now()) + 1000;
    // 3 s of the clock, a tick each 10 ms, the scrub's steps run between the ticks.
    for (let i = 0; i < 300; i++) {
      now += 10;
      host.tick(now, Date.now());
      await new Promise((res) => setImmediate(res));
    }
    const after = host.stats().scrub;
    // A pass over such a replica is two steps (its log's records, then the end of its log), each
    // counted as 1 MiB: 12 steps in 3 s, 6 passes (at 64 KiB a step: 96 passes).
    const passes = after.passes - before.passes;
    assert.ok(passes >= 4 && passes <= 8, `${passes} passes in 3 s`);
    assert.ok(after.bytes > before.bytes, 'the logs were read');
    await host.close();
  });

  it('a committed record its replica cannot apply restarts that replica, then leaves it down with why; the thread and the device\'s other shards go on', async () => {
    const disk = new SimDisk();
    const failures: string[] = [];
    const host = new DeviceHost({
      dir: 'dev0', self: 'n1', disk, restartsMax: 2,
      onFailure: (s, e, o) => failures.push(`${s.volumeId}/${s.shard} ${o.restarted ? 'restarted' : 'down'}: ${e.message}`),
    });
    host.openShard(spec(0));
    host.openShard(spec(1));
    const r0 = await leader(host, 0);
    await r0.write([{ page: 0, data: page(1) }]);
    const term = r0.stats().term;
    // What no leader writes, put in shard 0's log while it is closed: a page write of 6 bytes.
    host.closeShard('v1', 0);
    const storage = ShardStorage.open(disk, { dir: 'shards/v1.0', pageSize: 4096, pageCount: 64, cacheBytesMax: 1 << 20, slab: new Slab({ slotBytes: 8192, slotCount: 64 }) });
    storage.log.write([{ term, kind: RecordKind.PageWrite, payload: new Uint8Array(6) }]);
    storage.log.sync();
    storage.close();
    // Reopened, it leads again and commits the record with its no-op; applying it fails, each time.
    host.openShard(spec(0));
    await waitFor('shard 0 is left down', () => {
      host.tick(performance.now(), Date.now());
      return host.stats().shards.find((x) => x.shard === 0)?.state === 'down';
    });
    const why = /page write payload of 6 bytes is shorter than its header/;
    assert.equal(failures.length, 3, failures.join('\n'));
    assert.ok(failures.slice(0, 2).every((f) => f.startsWith('v1/0 restarted: ') && why.test(f)), failures.join('\n'));
    assert.ok(failures[2]!.startsWith('v1/0 down: ') && why.test(failures[2]!), failures[2]);
    assert.throws(() => host.replica('v1', 0), (e: StorageError) => e.code === 'device_failed' && /left down; last: page write payload of 6 bytes/.test(e.message));
    const r1 = await leader(host, 1);
    await r1.write([{ page: 4, data: page(9) }]);
    assert.deepEqual((await r1.read([4], soon())).pages[0], page(9), 'shard 1 serves');
    await host.close();
  });

  it('a device whose batch runs longer than DEVICE_STALL_MS is a problem for its host\'s health (a hung disk), as a failed one is', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk() });
    host.openShard(spec(0));
    const st = host.stats();
    assert.equal(deviceProblem(st), undefined);
    assert.match(deviceProblem({ ...st, queue: { ...st.queue, batchRunningMs: DEVICE_STALL_MS + 500 } }) ?? '', /^device stalled: a write and flush have run for 10\.5 s$/);
    assert.equal(deviceProblem({ ...st, queue: { ...st.queue, batchRunningMs: DEVICE_STALL_MS - 1 } }), undefined);
    assert.equal(deviceProblem({ ...st, queue: { ...st.queue, state: 'failed' } }), 'device failed');
    assert.equal(deviceProblem({ ...st, shards: st.shards.map((x) => ({ ...x, state: 'down' as const })) }), '1 shard(s) down');
    await host.close();
  });

  it('a log damaged in the middle is repaired at open for a replica set of several (reported), and stays read-only for a set of one, which waits for an operator to accept the loss', async () => {
    const log = 'shards/v1.0/log';
    /** A shard with 30 writes, whose log then rots in the middle. */
    const rotted = async (): Promise<SimDisk> => {
      const disk = new SimDisk();
      const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
      host.openShard({ ...spec(0), members: ['n1'] });
      const l = await leader(host, 0);
      for (let i = 0; i < 30; i++) await l.write([{ page: i % 4, data: page(i) }]);
      await host.close();
      const [segment] = disk.list(log).filter((n) => n.endsWith('.log'));
      disk.flipBits(`${log}/${segment}`, 40_000, 1);
      return disk;
    };
    const repairs: unknown[] = [];
    const several = new DeviceHost({ dir: 'dev0', self: 'n1', disk: await rotted(), onRepaired: (_s, damage, lost) => repairs.push({ damage, lost }) });
    several.openShard({ ...spec(0), members: ['n1', 'n2', 'n3'] });
    assert.equal(repairs.length, 1, 'reported once');
    assert.equal((repairs[0] as { lost: boolean }).lost, true, 'records were discarded');
    const st = several.stats().shards.find((x) => x.shard === 0)!;
    assert.equal(st.state, 'up');
    assert.equal(st.repairing, true);
    await several.close();

    const disk = await rotted();
    const files = (): Uint8Array[] => disk.list(log).map((n) => disk.fileBytes(`${log}/${n}`));
    const before = files();
    const held: Array<{ damage: readonly CorruptionReport[]; validLsn: number }> = [];
    const alone = new DeviceHost({
      dir: 'dev0', self: 'n1', disk,
      onRepaired: (_s, damage) => repairs.push(damage),
      onDamagedLogHeld: (_s, damage, validLsn) => held.push({ damage, validLsn }),
    });
    alone.openShard(spec(0));
    assert.equal(repairs.length, 1, 'a sole copy is not repaired: nobody could give the records back');
    assert.deepEqual(files(), before, 'its damaged log is left as it was');
    assert.equal(held.length, 1, 'the damage it holds is told');
    const { damage, validLsn } = held[0]!;
    assert.equal(damage[0]!.fromLsn, validLsn + 1);
    // It waits for an operator: it does not lead on a log it cannot append to, so it does not
    // fail and restart in a loop until left down.
    for (let i = 0; i < 300; i++) {
      alone.tick(performance.now(), Date.now());
      await new Promise((res) => setImmediate(res));
    }
    const waiting = alone.stats();
    assert.deepEqual([waiting.shards.find((x) => x.shard === 0)!.state, waiting.shards.find((x) => x.shard === 0)!.repairing, waiting.restarts], ['up', true, 0]);
    assert.equal(alone.replica('v1', 0).isLeader, false);
    assert.deepEqual(files(), before, 'still as it was');
    // The operator accepts the loss: the damage, and the records after it, are discarded; it leads.
    const r = await alone.forceVote('v1', 0);
    assert.equal(r.wasRepairing, true);
    assert.deepEqual(r.discarded, { fromLsn: validLsn + 1, keptLsn: validLsn });
    const l = await leader(alone, 0);
    assert.equal(l.stats().repairing, false);
    await l.write([{ page: 1, data: page(77) }]);
    const got = await l.read([1, 2], soon());
    assert.deepEqual(got.pages[0], page(77));
    assert.equal(repairs.length, 1, 'an override is not reported as a repair by peers');
    assert.equal(held.length, 1);
    assert.deepEqual((await alone.forceVote('v1', 0)).discarded, undefined, 'a second override changes nothing');
    await alone.close();
    // Its next open finds a sound log.
    const again = new DeviceHost({ dir: 'dev0', self: 'n1', disk, onDamagedLogHeld: (_s, d, v) => held.push({ damage: d, validLsn: v }) });
    again.openShard(spec(0));
    await leader(again, 0);
    assert.equal(held.length, 1);
    await again.close();
  });

  it('a failed background removal of a destroyed shard is counted, and the next open removes the leftover', async () => {
    const disk = new SimDisk();
    (disk as Disk).removeTreeAsync = (): Promise<void> => Promise.reject(new StorageError('io_error', 'EIO (test)'));
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    host.openShard(spec(0));
    await (await leader(host, 0)).write([{ page: 0, data: page(9) }]);
    host.closeShard('v1', 0, { destroy: true });
    await new Promise((r) => setImmediate(r));
    assert.equal(host.stats().discardFailures, 1);
    assert.deepEqual(disk.list('shards'), ['v1.0.0.discard']);
    await host.close();
    delete (disk as Disk).removeTreeAsync;
    const again = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    assert.deepEqual(disk.list('shards'), []);
    assert.equal(again.stats().discardFailures, 0);
    await again.close();
  });

  it('destroyLeftovers destroys the unused shard directories of deleted volumes, and nothing else', async () => {
    const disk = new SimDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    host.openShard(spec(0));
    host.openShard(spec(1));
    host.openShard({ ...spec(0), volumeId: 'v2' });
    await (await leader(host, 1)).write([{ page: 4, data: page(3) }]);
    // Forgotten by the node but not destroyed (a crash in between): closed without destroy.
    host.closeShard('v1', 1);
    host.closeShard('v2', 0);
    disk.mkdirp('shards/v1.7.0.discard');
    disk.mkdirp('shards/v1.x');
    assert.deepEqual(host.destroyLeftovers(new Set(['v1', 'v9'])), ['v1.1'], 'v1.0 is open, v2 is not deleted, other names are not shards');
    assert.deepEqual(disk.list('shards'), ['v1.0', 'v1.7.0.discard', 'v1.x', 'v2.0']);
    assert.deepEqual(host.destroyLeftovers(new Set(['v1'])), [], 'nothing left to destroy');
    assert.deepEqual((await host.replica('v1', 0).read([0], soon())).pages.length, 1, 'the open replica serves');
    await host.close();
  });

  it('closeShard with destroy removes the shard files durably', async () => {
    const disk = new SimDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    host.openShard(spec(0));
    await (await leader(host, 0)).write([{ page: 0, data: page(9) }]);
    assert.ok(disk.list('shards').includes('v1.0'));
    host.closeShard('v1', 0, { destroy: true });
    await host.close();
    disk.powerCut();
    // Renamed away durably; its removal after the rename was not made durable, so a power cut
    // may leave it: the next open of the device removes it.
    assert.deepEqual(disk.list('shards').filter((n) => !n.endsWith('.discard')), []);
    assert.throws(() => host.replica('v1', 0), (e: StorageError) => e.code === 'closed');
    const again = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    assert.deepEqual(disk.list('shards'), []);
    await again.close();
  });
});

describe('DeviceHost on the real file system', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-device-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  const shardDirs = (): string[] => fs.readdirSync(nodePath.join(root, 'shards')).sort();

  it('closeShard with destroy renames the shard away and removes it in the background; an open removes what a crash left', async () => {
    const disk = new RealDisk(root);
    const removedHere: string[] = [];
    const removeTree = disk.removeTree.bind(disk);
    disk.removeTree = (dir: string): void => {
      removedHere.push(dir);
      removeTree(dir);
    };
    const host = new DeviceHost({ dir: root, self: 'n1', disk });
    host.openShard(spec(0));
    host.openShard(spec(1));
    await (await leader(host, 0)).write([{ page: 0, data: page(9) }]);
    host.closeShard('v1', 0, { destroy: true });
    assert.deepEqual(removedHere, [], 'nothing removed on the calling thread');
    assert.ok(!shardDirs().includes('v1.0'), 'gone from its place at once');
    await waitFor('the destroyed shard removed', () => shardDirs().length === 1);
    assert.deepEqual(shardDirs(), ['v1.1']);
    assert.equal(host.stats().discardFailures, 0);
    await host.close();
    // A crash while a destroyed shard was being removed leaves it renamed: the next open removes it.
    fs.mkdirSync(nodePath.join(root, 'shards', 'v1.0.0.discard', 'log'), { recursive: true });
    fs.writeFileSync(nodePath.join(root, 'shards', 'v1.0.0.discard', 'log', 'seg'), 'x');
    const again = new DeviceHost({ dir: root, self: 'n1', disk: new RealDisk(root) });
    await waitFor('the leftover removed', () => shardDirs().length === 1);
    assert.deepEqual(shardDirs(), ['v1.1']);
    await again.close();
  });
});

/** A disk whose asynchronous flushes each wait until `open()` while `holding` (counted in `gated`). */
/** A SimDisk whose asynchronous flushes wait until `open()`, which lets every one waiting go (the logs of a batch flush at once). */
function gatedDisk(): { disk: SimDisk; gated: number; holding: boolean; open: () => void } {
  const sim = new SimDisk();
  let waiting: Array<() => void> = [];
  const g = {
    gated: 0,
    holding: true,
    open: () => {
      const go = waiting;
      waiting = [];
      for (const r of go) r();
    },
    disk: new Proxy(sim, {
      get(target, prop) {
        if (prop === 'fdatasyncAsync') {
          return (fh: number) => {
            if (!g.holding) return Promise.resolve().then(() => target.fdatasync(fh));
            g.gated++;
            return new Promise<void>((resolve) => waiting.push(resolve)).then(() => target.fdatasync(fh));
          };
        }
        const v = (target as unknown as Record<string | symbol, unknown>)[prop];
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }),
  };
  return g;
}

/** Lets the event loop turn until `done()` (at most 100 turns). */
async function turnsUntil(done: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !done(); i++) await new Promise((r) => setImmediate(r));
}

describe('DeviceHost with flushes off the thread', function () {
  this.timeout(20_000);
  it('a read of cached pages is answered while the device flushes; it does not queue behind the flush', async () => {
    const g = gatedDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: g.disk });
    try {
      host.openShard(spec(0));
      g.holding = false;
      const r = await leader(host, 0);
      // Applying the write caches its page.
      await r.write([{ page: 0, data: page(9) }]);
      g.holding = true;
      const writes = Array.from({ length: 4 }, (_, i) => r.write([{ page: 8 + i, data: page(i + 1) }]));
      await turnsUntil(() => g.gated === 1);
      assert.equal(g.gated, 1, 'a batch of writes waits in its asynchronous flush');
      let read: Uint8Array[] | undefined;
      void r.read([0, 1], soon()).then((x) => (read = x.pages));
      await turnsUntil(() => read !== undefined);
      assert.ok(read !== undefined, 'the read was answered during the flush');
      assert.deepEqual(read[0], page(9));
      assert.deepEqual(read[1], new Uint8Array(4096), 'a never-written page reads as zeros');
      g.open();
      await Promise.all(writes);
      assert.deepEqual((await r.read([8, 11], soon())).pages, [page(1), page(4)]);
    } finally {
      g.open();
      await host.close();
    }
  });

  it('closing a shard while its flush is in flight leaves the device and the other shards working', async () => {
    // The shard is closed while its flush waits.
    const g = gatedDisk();
    const gate = (): void => g.open();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: g.disk });
    try {
      host.openShard(spec(0));
      host.openShard(spec(1));
      const zero = await leader(host, 0);
      const one = await leader(host, 1);
      // Several writes in one batch: its flush goes to the (gated) asynchronous path.
      const writes = Array.from({ length: 4 }, (_, i) => zero.write([{ page: i, data: page(i + 1) }]).then(() => 'ok', (e: StorageError) => e.code));
      // (The batch may hold shard 1's records too: both logs' flushes then wait at once.)
      await turnsUntil(() => g.gated >= 1);
      assert.ok(g.gated >= 1, 'the batch waits in its asynchronous flush');
      host.closeShard('v1', 0);
      gate();
      for (const outcome of await Promise.all(writes)) assert.ok(['ok', 'closed', 'not_leader'].includes(outcome), outcome);
      assert.equal(host.stats().queue.state, 'ok', 'closing one shard does not fail the device');
      const before = g.gated;
      const w = one.write([{ page: 4, data: page(7) }]);
      await turnsUntil(() => g.gated > before);
      gate();
      await w;
      assert.equal(host.stats().restarts, 0, 'no shard was restarted');
    } finally {
      gate();
      await host.close();
    }
  });
});

describe('DeviceHost checkpoints', function () {
  this.timeout(20_000);
  it('a checkpoint runs in steps: a write issued during it is answered before it ends', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk() });
    try {
      // Shard 0 of 2 with stripes of 4 pages owns the pages p with floor(p / 4) even: 512 of 1024.
      host.openShard({ ...spec(0), pageCount: 1024 });
      const r = await leader(host, 0);
      const owned = Array.from({ length: 1024 }, (_, p) => p).filter((p) => Math.floor(p / 4) % 2 === 0);
      for (let k = 0; k < owned.length; k += 128) await r.write(owned.slice(k, k + 128).map((p) => ({ page: p, data: page(p & 0xff) })));
      const order: string[] = [];
      // 512 pages: an image of 8 steps of 64 pages.
      const cp = r.checkpoint().then((c) => {
        order.push('checkpoint');
        return c;
      });
      const w = r.write([{ page: 0, data: page(0xee) }]).then((x) => {
        order.push('write');
        return x;
      });
      const [c, x] = await Promise.all([cp, w]);
      assert.deepEqual(order, ['write', 'checkpoint'], 'the write did not wait for the whole image');
      assert.ok(c.lsn < x.lsn, `the image is of the LSN applied when the checkpoint began (${c.lsn}), before the write (${x.lsn})`);
      assert.deepEqual((await r.read([0, 4 * 2 * 100], soon())).pages, [page(0xee), page((4 * 2 * 100) & 0xff)]);
      assert.deepEqual((await r.read([0], { ...soon(), lsn: c.lsn })).pages, [page(0)], 'the image serves reads at its LSN');
    } finally {
      await host.close();
    }
  });
});

describe('DeviceHost CPU offload of large write batches', function () {
  this.timeout(20_000);
  it('checksums large batches on the CPU pool from slab slots; the records recover intact', async () => {
    const disk = new SimDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk, crcOffloadBytesMin: 16 * 1024 });
    host.openShard(spec(0));
    const pages = [0, 1, 2, 3, 8, 9, 10, 11].map((p) => ({ page: p, data: page(p + 1) }));
    await (await leader(host, 0)).write(pages); // 8 pages: 32 KiB, offloaded
    await (await leader(host, 0)).write([{ page: 16, data: page(99) }]); // 4 KiB: inline
    const st = host.stats();
    assert.equal(st.shards[0]?.offloaded, 1);
    assert.equal(st.cpu?.checksums, 1, 'one batch checksummed on the pool (its other tasks warm the slab)');
    await host.close();
    // Reopen from disk: recovery validates every record's checksum, so a wrong combined CRC
    // would show up here as a lost or corrupt record.
    const again = new DeviceHost({ dir: 'dev0', self: 'n1', disk, crcOffloadBytesMin: 0 });
    again.openShard(spec(0));
    const got = await (await leader(again, 0)).read([0, 1, 2, 3, 8, 9, 10, 11, 16], soon());
    pages.forEach((p, i) => assert.deepEqual(got.pages[i], p.data));
    assert.deepEqual(got.pages[8], page(99));
    // Two writes, and a no-op record at the start of each of the two terms of leadership.
    assert.equal(again.stats().shards[0]?.lastLsn, 4);
    assert.equal(again.stats().cpu, undefined, 'crcOffloadBytesMin 0 turns the pool off');
    await again.close();
  });

  it('warms the page caches\' slab ahead of the slots the caches reached, on the CPU pool, from its tick', async () => {
    const disk = new SimDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    host.openShard(spec(0));
    host.tick(performance.now(), Date.now());
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(host.stats().slabWarm?.steps, 0, 'nothing cached yet, nothing warmed');
    await (await leader(host, 0)).write([0, 1, 2, 3].map((p) => ({ page: p, data: page(p + 1) })));
    await waitFor('the window above the cached pages warm', () => {
      host.tick(performance.now(), Date.now());
      return (host.stats().slabWarm?.warmedSlots ?? 0) >= 4 + 256;
    });
    const warm = host.stats().slabWarm!;
    assert.equal(warm.warmedSlots, 4 + 256, 'the four cached pages and 256 slots above them');
    assert.equal(warm.failures, 0);
    assert.equal(warm.touches, 2 * 256, 'the first 4 KiB of each slot above the four in use: its first and last word');
    assert.equal(host.stats().cpu?.tasks, warm.steps, 'the steps ran on the pool');
    assert.equal(host.stats().cpu?.checksums, 0);
    await host.close();
    const off = new DeviceHost({ dir: 'dev1', self: 'n1', disk, crcOffloadBytesMin: 0 });
    assert.equal(off.stats().slabWarm, undefined, 'no pool, no warming');
    await off.close();
  });
});

/** Three device hosts in this process holding shard 0 of v1, each replica's messages going to its peer host's replica. */
function threeHosts(extra: Partial<ConstructorParameters<typeof DeviceHost>[0]> = {}) {
  const members = ['n1', 'n2', 'n3'];
  const hosts = new Map<string, DeviceHost>();
  const disks = new Map<string, SimDisk>();
  const damage: Array<{ node: string; code: string }> = [];
  const repaired: Array<{ node: string; lost: boolean }> = [];
  for (const id of members) {
    disks.set(id, new SimDisk());
    hosts.set(
      id,
      new DeviceHost({
        dir: 'dev0', self: id, disk: disks.get(id)!,
        timing: { electionTimeoutMinMs: 100, electionTimeoutMaxMs: 200, heartbeatMs: 10 },
        transportFor: (s) => ({
          send: async (to, msg) => structuredClone(await hosts.get(to)!.replica(s.volumeId, s.shard).handle(structuredClone(msg))),
        }),
        onDamage: (_s, err) => damage.push({ node: id, code: err.code }),
        onRepaired: (_s, _damage, lost) => repaired.push({ node: id, lost }),
        ...extra,
      }),
    );
  }
  const tickAll = (): void => {
    for (const h of hosts.values()) h.tick(performance.now(), Date.now());
  };
  /** Ticks every host until `cond` holds. */
  const until = async <T>(what: string, cond: () => T | undefined): Promise<T> => {
    for (let i = 0; i < 20_000; i++) {
      tickAll();
      const v = cond();
      if (v !== undefined) return v;
      await new Promise((res) => setTimeout(res, 1));
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  const leaderOf = (): Promise<{ id: string; r: Replica }> =>
    until('a leader', () => {
      for (const [id, h] of hosts) {
        const r = h.replica('v1', 0);
        if (r.isLeader) return { id, r };
      }
      return undefined;
    });
  for (const h of hosts.values()) h.openShard({ ...spec(0), members });
  const close = async (): Promise<void> => {
    for (const h of hosts.values()) await h.close();
  };
  return { hosts, disks, damage, repaired, until, leaderOf, close };
}

/** Shard 0 of 2 with stripes of 4 owns pages 0-3, 8-11…: 16 of the first 32, page 0 written first. */
const OWNED = Array.from({ length: 32 }, (_, p) => p).filter((p) => Math.floor(p / 4) % 2 === 0);
const SHARD_DIR = 'shards/v1.0';

/**
 * A host of sole copies (`spec`) on `disk`, with what it reports repaired and unrepairable, and
 * the replica of shard v1/0 once it leads.
 */
async function soleCopyLeader(disk: SimDisk): Promise<{ host: DeviceHost; r: Replica; repaired: boolean[]; unrepairable: string[] }> {
  const repaired: boolean[] = [];
  const unrepairable: string[] = [];
  const host = new DeviceHost({
    dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 0,
    onRepaired: (_s, _d, lost) => repaired.push(lost),
    onUnrepairable: (_s, err) => unrepairable.push(err.message),
  });
  try {
    host.openShard(spec(0));
    return { host, r: await leader(host, 0), repaired, unrepairable };
  } catch (e) {
    await host.close();
    throw e;
  }
}

/**
 * The last 100 bytes of the page filled with `fill` in shard v1/0's log read as zeros: at the
 * end of the log, damage that looks like a write a crash cut short.
 */
function zeroEndOfPageIn(disk: SimDisk, fill: number): void {
  const run = Buffer.alloc(4096, fill);
  const segment = disk.list(`${SHARD_DIR}/log`).find((n) => Buffer.from(disk.fileBytes(`${SHARD_DIR}/log/${n}`)).includes(run));
  assert.ok(segment, `a segment of the log holds the page of ${fill}`);
  disk.zeroBytes(`${SHARD_DIR}/log/${segment}`, Buffer.from(disk.fileBytes(`${SHARD_DIR}/log/${segment}`)).indexOf(run) + 4096 - 100, 100);
}

/** 16 one-page writes (page p holds p + 1), an image, a write of page 1 (99), an image. */
async function twoImages(r: Replica): Promise<void> {
  for (const p of OWNED) await r.write([{ page: p, data: page(p + 1) }]);
  await r.checkpoint();
  await r.write([{ page: 1, data: page(99) }]);
  await r.checkpoint();
}

/** The shard's image files, oldest first. */
const imagesOf = (disk: SimDisk): string[] => disk.list(SHARD_DIR).filter((n) => /^image-[0-9a-f]+\.img$/.test(n)).sort();

/** Flips a bit of page 0's data in the image `name` of the shard. */
function damagePage0(disk: SimDisk, name: string): void {
  const bytes = disk.fileBytes(`${SHARD_DIR}/${name}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  assert.equal(Number(view.getBigUint64(40, true)), 0, 'table entry 0 is page 0');
  disk.flipBits(`${SHARD_DIR}/${name}`, Number(view.getBigUint64(48, true)) + 100, 1);
}

/** Flips a bit of page 0's data in the newest image of the shard; returns the image's name. */
function damageNewestPage0(disk: SimDisk): string {
  const newest = imagesOf(disk).pop()!;
  damagePage0(disk, newest);
  return newest;
}

/** The image checks out whole, and holds page 0 as written. */
function assertImageGood(disk: SimDisk, name: string): void {
  const rebuilt = ImageReader.open(disk, `${SHARD_DIR}/${name}`);
  try {
    rebuilt.verifyPages();
    const out = new Uint8Array(4096);
    assert.equal(rebuilt.readPage(0, out), true);
    assert.deepEqual(out, page(1));
  } finally {
    rebuilt.close();
  }
}

/**
 * Ticks a host until something was reported unrepairable and the scrub then ended `passes` more
 * passes over its shards (bounded by the test's timeout, not by a clock of its own).
 */
async function scrubPassesAfterReport(host: DeviceHost, reports: readonly unknown[], passes: number): Promise<void> {
  let passesAtReport = 0;
  while (reports.length === 0 || host.stats().scrub.passes < passesAtReport + passes) {
    host.tick(performance.now(), Date.now());
    if (reports.length === 0) passesAtReport = host.stats().scrub.passes;
    await new Promise((res) => setTimeout(res, 1));
  }
}

describe('DeviceHost: a replica that finds its storage damaged while running', function () {
  this.timeout(30_000);
  it('is reopened without the damaged image (counted, reported once): the damaged image is rebuilt and the page reads right again', async () => {
    // No background scrub here: the read is what finds the damage.
    const t = threeHosts({ scrubBytesPerSecond: 0 });
    try {
      const { id, r } = await t.leaderOf();
      await twoImages(r);
      const disk = t.disks.get(id)!;
      const newest = damageNewestPage0(disk);

      const host = t.hosts.get(id)!;
      await assert.rejects(r.read([0], soon()), (e: { code?: string; details?: Record<string, unknown> }) => e.code === 'not_leader' && e.details?.['damaged'] === true);
      await new Promise((res) => setImmediate(res)); // the reopen runs once the read has unwound
      assert.deepEqual(t.damage, [{ node: id, code: 'corruption' }]);
      assert.deepEqual(t.repaired, [{ node: id, lost: false }], 'the scrub reported what it repaired');
      const st = host.stats();
      assert.equal(st.damageReopens, 1);
      assert.equal(st.restarts, 1);
      const shard = st.shards.find((x) => x.shard === 0)!;
      assert.equal(shard.state, 'up');
      assert.equal(shard.repairing, false, 'the older image and the log held everything: nothing was lost');
      assert.notEqual(host.replica('v1', 0), r, 'a new replica');
      assertImageGood(disk, newest); // the scrub replaced the damaged file

      const again = await t.leaderOf();
      assert.deepEqual((await again.r.read([0, 1, 8], soon())).pages, [page(1), page(99), page(9)]);
      assert.equal(host.stats().damageReopens, 1, 'reopened once');
    } finally {
      await t.close();
    }
  });

  it('records at the end of a follower\'s log damaged so as to look like a torn write (their end reads as zeros) are cut at its reopen: the host knows they were durable, and the follower is marked to repair', async () => {
    const t = threeHosts({ scrubBytesPerSecond: 0 });
    try {
      const { id, r } = await t.leaderOf();
      for (const p of OWNED) await r.write([{ page: p, data: page(p + 1) }]);
      const last = await r.write([{ page: 0, data: page(0xee) }]);
      const fid = [...t.hosts.keys()].find((x) => x !== id)!;
      const fhost = t.hosts.get(fid)!;
      // Applied: durable on the follower's disk too (a follower applies only what it flushed).
      await t.until('the follower applied every write', () => (fhost.replica('v1', 0).stats().appliedLsn >= last.lsn ? true : undefined));
      // The end of the last record's page (durable, acknowledged) reads as zeros on the
      // follower's disk: damage that looks like a write a crash cut short.
      const disk = t.disks.get(fid)!;
      zeroEndOfPageIn(disk, 0xee);
      // The host reopens the replica (as after any failure of it).
      assert.deepEqual(fhost.onReplicaError('v1', 0, new StorageError('invariant', 'test: reopen the replica'), fhost.currentReplica('v1', 0)), { restarted: true });
      const st = fhost.stats().shards.find((x) => x.shard === 0)!;
      assert.equal(st.state, 'up');
      assert.ok(st.lastLsn < last.lsn, 'the record was cut');
      assert.equal(st.repairing, true, 'it may have acknowledged the record: it votes only once given it back');
      assert.deepEqual(t.repaired, [{ node: fid, lost: true }]);
      await t.until('the follower is given the record back', () => {
        const s2 = fhost.stats().shards.find((x) => x.shard === 0)!;
        return s2.lastLsn >= last.lsn && !s2.repairing ? true : undefined;
      });
    } finally {
      await t.close();
    }
  });

  it('the background scrub finds a damaged page of a follower\'s image, which nothing reads, and the follower is repaired', async () => {
    const t = threeHosts({ scrubBytesPerSecond: 64 * 1024 * 1024, checkpointEveryRecords: 0 });
    try {
      const { id, r } = await t.leaderOf();
      for (const p of OWNED) await r.write([{ page: p, data: page(p + 1) }]);
      const fid = [...t.hosts.keys()].find((x) => x !== id)!;
      const fhost = t.hosts.get(fid)!;
      const f = await t.until('the follower applied every write', () => {
        const fr = fhost.replica('v1', 0);
        return fr.appliedLsn >= r.appliedLsn ? fr : undefined;
      });
      await f.checkpoint();
      const newest = damageNewestPage0(t.disks.get(fid)!);
      const scrubbed = await t.until('the scrub finds the damage', () => (fhost.stats().damageReopens >= 1 ? fhost.stats() : undefined));
      assert.deepEqual(t.damage, [{ node: fid, code: 'corruption' }]);
      assert.equal(scrubbed.scrub.damage, 1);
      assert.ok(scrubbed.scrub.bytes > 0);
      assert.deepEqual(t.repaired, [{ node: fid, lost: false }]);
      assertImageGood(t.disks.get(fid)!, newest);
      assert.deepEqual(t.hosts.get(id)!.stats().scrub.damage, 0, 'the leader\'s storage is intact');
    } finally {
      await t.close();
    }
  });

  it('a sole copy rebuilds a damaged image from its older image and its log: the read is answered not_leader, then right', async () => {
    const disk = new SimDisk();
    const { host, r, repaired, unrepairable } = await soleCopyLeader(disk);
    try {
      await twoImages(r);
      const newest = damageNewestPage0(disk);
      await assert.rejects(r.read([0], soon()), (e: { code?: string; details?: Record<string, unknown> }) => e.code === 'not_leader' && e.details?.['damaged'] === true);
      await new Promise((res) => setImmediate(res)); // the reopen runs once the read has unwound
      assert.equal(host.stats().damageReopens, 1);
      assert.deepEqual(repaired, [false], 'rebuilt, nothing lost');
      assert.deepEqual(unrepairable, []);
      assertImageGood(disk, newest);
      const again = await leader(host, 0);
      assert.deepEqual((await again.read([0, 1], soon())).pages, [page(1), page(99)]);
    } finally {
      await host.close();
    }
  });

  it('a sole copy whose damaged image cannot be rebuilt opens as it was: that page fails with corruption, the others are served, and the scrub does not report it again and again', async () => {
    const unrepairable: string[] = [];
    const disk = new SimDisk();
    const host = new DeviceHost({
      dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 64 * 1024 * 1024,
      onUnrepairable: (_s, err) => unrepairable.push(err.message),
    });
    try {
      host.openShard(spec(0));
      const r = await leader(host, 0);
      await twoImages(r);
      // Page 0 damaged in both images: the older one cannot give it back.
      for (const name of imagesOf(disk)) damagePage0(disk, name);
      await scrubPassesAfterReport(host, unrepairable, 4);
      assert.equal(host.stats().damageReopens, 1, 'one attempt to rebuild the image, not one a pass');
      assert.ok(unrepairable.length >= 1 && unrepairable.length <= 2, `reported at the failed rebuild and at most once more: ${unrepairable.join(' | ')}`);
      assert.ok(unrepairable.every((m) => /page 0 checksum mismatch/.test(m)));
      const again = await leader(host, 0);
      await assert.rejects(again.read([0], soon()), (e: StorageError) => e.code === 'corruption');
      assert.deepEqual((await again.read([1], soon())).pages, [page(99)]);
      assert.equal(host.stats().damageReopens, 1, 'the read did not reopen it again');
    } finally {
      await host.close();
    }
  });

  it('a sole copy reopened with its log ending below what it held durably (its last record damaged so as to look torn) reports the loss as unrepairable, not repaired', async () => {
    const disk = new SimDisk();
    const { host, r, repaired, unrepairable } = await soleCopyLeader(disk);
    try {
      await r.write([{ page: 0, data: page(1) }]);
      const last = await r.write([{ page: 1, data: page(0xee) }]);
      // The end of the last record's page (durable, acknowledged) reads as zeros: at the end of
      // the log, damage that looks like a write a crash cut short.
      zeroEndOfPageIn(disk, 0xee);
      // The host reopens the replica (as after any failure of it): it knew the record durable.
      assert.deepEqual(host.onReplicaError('v1', 0, new StorageError('invariant', 'test: reopen the replica'), host.currentReplica('v1', 0)), { restarted: true });
      assert.ok(host.stats().shards.find((x) => x.shard === 0)!.lastLsn < last.lsn, 'the record was cut');
      assert.deepEqual(repaired, [], 'not reported as repaired: no peer gives it back');
      assert.equal(unrepairable.length, 1);
      assert.match(unrepairable[0]!, new RegExp(`shard v1/0: the log ends at ${last.lsn - 1}, below the LSN ${last.lsn} it held durably before the reopen`));
      // The copy serves what it kept.
      const again = await leader(host, 0);
      assert.deepEqual((await again.read([0], soon())).pages, [page(1)]);
    } finally {
      await host.close();
    }
  });

  it('a sole copy whose log ends below its damaged newest image (its last record damaged too, so as to look torn) is reopened once, not in a loop', async () => {
    const disk = new SimDisk();
    const first = new DeviceHost({ dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 0 });
    first.openShard(spec(0));
    await twoImages(await leader(first, 0)); // the newest image is of the last record, the write of page 1 (99)
    await first.close();
    // That record's end reads as zeros: at the end of the log it looks like a torn write, and the
    // reopened log ends just below the newest image, which the store then does not use.
    zeroEndOfPageIn(disk, 99);
    damageNewestPage0(disk);
    const unrepairable: string[] = [];
    const host = new DeviceHost({
      dir: 'dev0', self: 'n1', disk, scrubBytesPerSecond: 64 * 1024 * 1024,
      onUnrepairable: (_s, err) => unrepairable.push(err.message),
    });
    try {
      host.openShard(spec(0));
      await scrubPassesAfterReport(host, unrepairable, 4);
      const st = host.stats();
      assert.equal(st.damageReopens, 1, 'the scrub found the image damaged once, and not again after the reopen left it alone');
      assert.equal(st.shards.find((x) => x.shard === 0)!.state, 'up', 'not left down after the restart limit');
    } finally {
      await host.close();
    }
  });
});

describe('DeviceHost seeding a branch replica from its parent (seedShard)', () => {
  const child = (lsn: number, extra: Partial<ShardSpec> = {}): ShardSpec => ({
    volumeId: 'v2', volumeName: 'kid', shard: 0, shards: 2, pageCount: 64, pageSize: 4096, stripePages: 4, members: ['n1'], seed: { volumeId: 'v1', lsn }, ...extra,
  });

  it('copies the parent replica on this device at the branch point: the branch replica starts there, and goes on after it', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk() });
    host.openShard(spec(0));
    const p = await leader(host, 0);
    await p.write([{ page: 0, data: page(1) }, { page: 1, data: page(1) }]);
    const at = p.stats().commitLsn;
    await p.write([{ page: 1, data: page(2) }, { page: 2, data: page(2) }]);
    // Neither opened nor copied a second time while the copy runs.
    const copying = host.seedShard(child(at));
    assert.throws(() => host.openShard(child(at)), (e: ProtocolError) => e.code === 'unavailable' && /being copied from its parent/.test(e.message));
    assert.deepEqual(await host.seedShard(child(at)), { seeded: false, reason: 'a copy of it is under way already' });
    assert.deepEqual(await copying, { seeded: true, lsn: at });
    host.openShard(child(at));
    const k = host.replica('v2', 0);
    for (let i = 0; i < 1000 && !k.isLeader; i++) {
      host.tick(performance.now(), Date.now());
      await new Promise((res) => setImmediate(res));
    }
    assert.ok(k.isLeader, 'the branch replica, holding the branch point, leads');
    assert.deepEqual((await k.read([0, 1, 2], soon())).pages, [page(1), page(1), new Uint8Array(4096)]);
    await k.write([{ page: 2, data: page(3) }]);
    assert.ok(k.stats().lastLsn > at);
    assert.deepEqual((await p.read([0, 1, 2], soon())).pages, [page(1), page(2), page(2)], 'the parent is unchanged');
    assert.deepEqual(host.stats().branchCopies, { copied: 1, notCopied: 0 }, 'the copy refused as under way already is not counted');
    await host.close();
  });

  it('a directory a copy is writing is not destroyed under it: destroyLeftovers leaves it, a close with destroy removes it once the copy ends', async () => {
    const disk = new SimDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    try {
      host.openShard(spec(0));
      const p = await leader(host, 0);
      await p.write([{ page: 0, data: page(1) }]);
      const at = p.stats().commitLsn;
      const copying = host.seedShard(child(at));
      assert.ok(disk.exists('shards/v2.0'), 'the copy has begun writing');
      assert.deepEqual(host.destroyLeftovers(new Set(['v2'])), [], 'not the directory a copy writes');
      assert.deepEqual(await copying, { seeded: true, lsn: at });
      assert.ok(disk.exists('shards/v2.0'));
      // The branch deleted while a second copy runs (its first left behind, say, then destroyed).
      host.closeShard('v2', 0, { destroy: true });
      assert.equal(disk.exists('shards/v2.0'), false);
      const again = host.seedShard(child(at));
      assert.ok(disk.exists('shards/v2.0'));
      host.closeShard('v2', 0, { destroy: true });
      assert.ok(disk.exists('shards/v2.0'), 'left to the copy while it writes');
      await again;
      assert.equal(disk.exists('shards/v2.0'), false, 'destroyed once the copy ended');
      host.openShard(child(at));
      assert.equal(host.replica('v2', 0).stats().lastLsn, 0, 'a later open starts empty: nothing of the copy is left');
    } finally {
      await host.close();
    }
  });

  it('a parent replica behind the branch point is waited for, at most SEED_WAIT_MS: then nothing is copied, saying how far it got', async () => {
    const disk = new SimDisk();
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk });
    try {
      host.openShard(spec(0));
      const p = await leader(host, 0);
      await p.write([{ page: 0, data: page(1) }]);
      const applied = p.stats().appliedLsn;
      // A branch point the parent's replica has not reached; the clock jumps 1 s a look.
      let now = 0;
      const r = await host.seedShard(child(applied + 5), () => (now += 1000));
      assert.ok(!r.seeded && r.reason === `the parent's replica did not reach LSN ${applied + 5} (applied ${applied}) within ${SEED_WAIT_MS} ms`, JSON.stringify(r));
      assert.ok(now >= SEED_WAIT_MS && now <= SEED_WAIT_MS + 3000, `looked ${now / 1000} times`);
      assert.deepEqual(host.stats().branchCopies, { copied: 0, notCopied: 1 });
      assert.equal(disk.exists('shards/v2.0'), false, 'nothing written for the branch');
    } finally {
      await host.close();
    }
  });

  it('copies nothing for a replica that is not new, or without a parent replica here, or a branch point no longer held; such a replica does not lead', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk(), checkpointEveryRecords: 1_000_000 });
    host.openShard(spec(0));
    const p = await leader(host, 0);
    await p.write([{ page: 0, data: page(1) }]);
    const first = p.stats().commitLsn;
    // Not a copy wanted: the replica does not wait for one. No parent here: it waits for a peer's.
    const existing = await host.seedShard(child(first, { existing: true }));
    assert.ok(!existing.seeded && /not a new replica/.test(existing.reason) && existing.waits === undefined, JSON.stringify(existing));
    const noParent = await host.seedShard(child(first, { shard: 1 }));
    assert.ok(!noParent.seeded && /no replica of shard 1 of volume v1 on this device/.test(noParent.reason), JSON.stringify(noParent));
    assert.deepEqual(noParent.waits, { noSpace: false });
    // Two checkpoints later the first write is below the parent's oldest readable LSN.
    for (let k = 0; k < 2; k++) {
      await p.write([{ page: 0, data: page(2 + k) }]);
      await p.checkpoint();
    }
    const r = await host.seedShard(child(first));
    assert.ok(!r.seeded && /oldest readable/.test(r.reason), JSON.stringify(r));
    assert.deepEqual(r.waits, { noSpace: false });
    // Opened all the same, empty: with its log below the branch point it never campaigns.
    host.openShard(child(first));
    const k = host.replica('v2', 0);
    for (let i = 0; i < 300; i++) {
      host.tick(performance.now(), Date.now());
      await new Promise((res) => setTimeout(res, 2));
    }
    assert.equal(k.isLeader, false);
    assert.equal(k.stats().elections, 0);
    // Counted: the two copies tried (not the replica that was not new).
    assert.deepEqual(host.stats().branchCopies, { copied: 0, notCopied: 2 });
    await host.close();
  });

  it('makes no copy that could take the device under its reserve: the replica waits for a peer, for want of space; with room, it copies', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk(), spaceReserveBytes: 1024 * 1024 });
    host.openShard(spec(0));
    const p = await leader(host, 0);
    await p.write([0, 1, 2, 3].map((n) => ({ page: n, data: page(n + 1) })));
    const at = p.stats().commitLsn;
    const need = p.imageBytesBound();
    assert.ok(need >= 4 * 4096, String(need));
    host.setFreeBytes(1024 * 1024 + need - 1);
    const r = await host.seedShard(child(at));
    assert.ok(!r.seeded && r.reason === `the copy could take ${need} bytes, and the device has ${1024 * 1024 + need - 1} free, with a reserve of ${1024 * 1024}`, JSON.stringify(r));
    assert.deepEqual(r.waits, { noSpace: true });
    assert.deepEqual(host.stats().branchCopies, { copied: 0, notCopied: 1 });
    host.setFreeBytes(1024 * 1024 + need);
    assert.deepEqual(await host.seedShard(child(at)), { seeded: true, lsn: at });
    await host.close();
  });

  it('with retainRecords, a branch point two checkpoints back is still held, and copied', async () => {
    const host = new DeviceHost({ dir: 'dev0', self: 'n1', disk: new SimDisk(), checkpointEveryRecords: 1_000_000, retainRecords: 1000 });
    host.openShard(spec(0));
    const p = await leader(host, 0);
    await p.write([{ page: 0, data: page(1) }]);
    const first = p.stats().commitLsn;
    for (let k = 0; k < 2; k++) {
      await p.write([{ page: 0, data: page(2 + k) }]);
      await p.checkpoint();
    }
    assert.deepEqual((await p.read([0], { ...soon(), lsn: first })).pages[0], page(1), 'the parent reads the old LSN');
    assert.deepEqual(await host.seedShard(child(first)), { seeded: true, lsn: first });
    host.openShard(child(first));
    const k = host.replica('v2', 0);
    for (let i = 0; i < 1000 && !k.isLeader; i++) {
      host.tick(performance.now(), Date.now());
      await new Promise((res) => setImmediate(res));
    }
    assert.deepEqual((await k.read([0], soon())).pages[0], page(1));
    await host.close();
  });
});
