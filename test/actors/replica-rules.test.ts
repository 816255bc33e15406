/**
 * Rules of the replication protocol that hold only in particular interleavings: a leader counting
 * acknowledgements of an earlier term's records, a leader answered by a follower of a newer
 * leader, a follower whose disk is stuck. Every replica is on a clock only the test moves, and
 * the test decides which messages arrive, so each case runs the same way every time.
 */
import { strict as assert } from 'node:assert';
import { decodeConfig, encodeConfig, MESSAGE_BYTES_MIN, Replica, type ReplicaConfig, type ReplicaTransport } from '../../actors/replica';
import { DeviceQueue } from '../../actors/device-queue';
import { SimDisk } from '../../storage-engine/sim-disk';
import { Slab } from '../../storage-engine/slab';
import { ShardStorage } from '../../storage-engine/shard-storage';
import { decodePageWrite, encodePageWrite } from '../../storage-engine/page-write';
import { RecordKind } from '../../storage-engine/record';
import { imageFileName } from '../../storage-engine/image';
import { ProtocolError } from '../../messages/errors';
import { StorageError } from '../../storage-engine/errors';
import type { AppendReply, AppendRequest, RaftReply, RaftRequest, SnapshotReply, VoteReply, WireRecord } from '../../messages/raft';
import { DiskGates, geometry, page } from '../support/replica-harness';
import { rejectsWith } from '../support/expect';
import type { PayloadOffload, ShardGeometry } from '../../actors/shard';

/** The default timing before 5354581 (heartbeats 50 ms, now 100): 300–600 ms elections, a lease of 0.75 × 300 ms. */
const timing = { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 600, heartbeatMs: 50, rpcTimeoutMs: 1000 };


interface Member {
  id: string;
  disk: SimDisk;
  storage: ShardStorage;
  queue: DeviceQueue;
  replica: Replica;
}

/**
 * Replicas of one shard on simulated disks, on a clock that moves only when the test says so
 * (`at`), linked by an in-memory network. A request the network loses fails at once (as a
 * timeout would, later); its answer never comes.
 */
class Cluster {
  now = 0;
  readonly members = new Map<string, Member>();
  /** Links cut, `from>to`: requests from `from` to `to` are lost. */
  private readonly cut = new Set<string>();
  /** Requests lost besides cut links. */
  readonly lost: Array<(from: string, to: string, msg: RaftRequest) => boolean> = [];
  /** Answers changed on their way back (a forged or broken peer): each returns the answer `from` gets. */
  readonly forged: Array<(from: string, to: string, msg: RaftRequest, reply: RaftReply) => RaftReply> = [];
  /** Members whose device queue starts no batch until the test releases it (a stuck disk). */
  private readonly diskGates = new DiskGates();
  private readonly slab = new Slab({ slotBytes: 8192, slotCount: 1024 });

  constructor(
    readonly ids: string[],
    opts: { randoms?: Record<string, number>; messageBytesMax?: number; offload?: Record<string, PayloadOffload>; pendingWritesMax?: number; geometry?: ShardGeometry } = {},
  ) {
    const g = opts.geometry ?? geometry;
    for (const id of ids) {
      const disk = new SimDisk();
      const storage = ShardStorage.open(disk, {
        dir: 'shard', pageSize: 4096, pageCount: g.pageCount, cacheBytesMax: 1 << 20, slab: this.slab, segmentBytesMax: 64 * 1024, repairFromPeers: ids.length > 1,
      });
      const queue = new DeviceQueue({
        disk,
        name: id,
        schedule: (run) => setImmediate(() => this.diskGates.start(id, run)),
      });
      const random = opts.randoms?.[id];
      const replica = new Replica({
        geometry: g, self: id, members: ids, log: storage.log, store: storage.store, queue, hardState: storage,
        transport: this.transport(id), snapshots: storage, timing, nowMs: this.now, clock: () => this.now,
        ...(random !== undefined ? { random: () => random } : {}),
        ...(opts.messageBytesMax !== undefined ? { messageBytesMax: opts.messageBytesMax } : {}),
        ...(opts.offload?.[id] !== undefined ? { offload: opts.offload[id] } : {}),
        ...(opts.pendingWritesMax !== undefined ? { pendingWritesMax: opts.pendingWritesMax } : {}),
      });
      this.members.set(id, { id, disk, storage, queue, replica });
    }
  }

  replica(id: string): Replica {
    return this.members.get(id)!.replica;
  }

  private transport(from: string): ReplicaTransport {
    return {
      send: async (to: string, msg: RaftRequest): Promise<RaftReply> => {
        // A message crosses the network in a turn of the event loop of its own, as it would.
        await new Promise((r) => setImmediate(r));
        if (this.cut.has(`${from}>${to}`) || this.lost.some((l) => l(from, to, msg))) throw new ProtocolError('timeout', `${from} cannot reach ${to}`);
        let reply = structuredClone(await this.replica(to).handle(structuredClone(msg)));
        for (const forge of this.forged) reply = forge(from, to, msg, reply);
        return reply;
      },
    };
  }

  /** Cuts every link between `group` and the others, both ways. */
  isolate(group: string[]): void {
    for (const x of group) for (const y of this.ids) if (!group.includes(y)) {
      this.cut.add(`${x}>${y}`);
      this.cut.add(`${y}>${x}`);
    }
  }

  heal(): void {
    this.cut.clear();
  }

  /** Holds every batch of `id`'s device queue until the returned release is called. */
  stallDisk(id: string): () => void {
    return this.diskGates.stall(id);
  }

  /** Lets messages, answers and device batches run (no time passes). */
  async settle(): Promise<void> {
    for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r));
  }

  /** Moves the clock to `t`, ticks `ids` (default all), then lets their messages run. */
  async at(t: number, ids: string[] = this.ids): Promise<void> {
    this.now = t;
    for (const id of ids) this.replica(id).tick(t);
    await this.settle();
  }

  /** Ticks `ids` every 10 ms of the clock until `done`, for at most `limitMs`. */
  async runUntil(done: () => boolean, what: string, ids: string[] = this.ids, limitMs = 3000): Promise<void> {
    const end = this.now + limitMs;
    while (!done()) {
      assert.ok(this.now < end, `${what}: not by ${end} ms of the clock`);
      await this.at(this.now + 10, ids);
    }
  }

  /** Ticks `ids` every 10 ms of the clock for `ms`. */
  async run(ms: number, ids: string[] = this.ids): Promise<void> {
    for (const end = this.now + ms; this.now < end; ) await this.at(this.now + 10, ids);
  }

  async stop(): Promise<void> {
    this.diskGates.releaseAll();
    for (const m of this.members.values()) {
      m.replica.close();
      await m.queue.drain().catch(() => undefined);
      m.storage.close();
    }
  }
}

/** A promise's outcome, once it has one, looked at without waiting. */
function watch(p: Promise<unknown>): { settled: () => boolean; error: () => unknown } {
  let settled = false;
  let error: unknown;
  p.then(
    () => {
      settled = true;
    },
    (e: unknown) => {
      settled = true;
      error = e;
    },
  );
  return { settled: () => settled, error: () => error };
}

/** A page write record of `term` (page `n` filled with n), as a leader sends it. */
function record(term: number, n: number): WireRecord {
  return { term, kind: RecordKind.PageWrite, payload: encodePageWrite(4096, [{ page: n, data: page(n) }]) };
}

/** An append of leader 'a' in term 1: `records` after `prevLsn` (all of term 1). */
function append(prevLsn: number, records: WireRecord[]): AppendRequest {
  return { type: 'append', term: 1, leader: 'a', prevLsn, prevTerm: prevLsn === 0 ? 0 : 1, records, commitLsn: 0, leaderLastLsn: prevLsn + records.length };
}

describe('Replica rules that hold only in particular interleavings', function () {
  this.timeout(20_000);
  let shard: Cluster | undefined;
  afterEach(async () => {
    await shard?.stop();
    shard = undefined;
  });

  it('a leader elected again does not commit its earlier term\'s records because a majority acknowledged them, only with a record of its new term', async () => {
    // Raft's figure 8. a leads term 1 and writes LSN 2..11 that only b gets; e leads term 2 and
    // writes another LSN 2 that only it holds; a leads term 3 and gives c and d LSN 2..7. Those
    // are then on a majority (a, c, d), but while c and d hold no record of term 3, e (last term
    // 2) can still win their votes and overwrite them: they are not committed until a's term-3
    // no-op is on a majority too.
    shard = new Cluster(['a', 'b', 'c', 'd', 'e'], {
      randoms: { a: 0, b: 0.99, c: 0.99, d: 0.99, e: 0.5 },
      // 32 KiB messages: ten records of 4 KiB take two appends, so the first carries old records only.
      messageBytesMax: 32 * 1024,
    });
    const [a, b, c, d, e] = ['a', 'b', 'c', 'd', 'e'].map((id) => shard!.replica(id)) as [Replica, Replica, Replica, Replica, Replica];
    await shard.runUntil(() => a.isLeader && [b, c, d, e].every((r) => r.stats().commitLsn === 1), 'a leads and its no-op commits');
    assert.equal(a.currentTerm, 1);

    // Term 1: a's writes reach b only; they cannot commit.
    shard.isolate(['a', 'b']);
    const lostWrites = Array.from({ length: 10 }, (_, i) => a.write([{ page: i, data: page(i + 1) }]).catch((err: ProtocolError) => err.code));
    await shard.settle();
    assert.deepEqual([a.stats().lastLsn, b.stats().lastLsn, a.stats().commitLsn], [11, 11, 1]);

    // Term 2: e is elected by c and d, and its no-op (LSN 2) reaches no one. a and b are stopped.
    shard.heal();
    shard.isolate(['a']);
    shard.isolate(['b']);
    const eAppends = (from: string, _to: string, msg: RaftRequest): boolean => from === 'e' && msg.type === 'append';
    shard.lost.push(eAppends);
    await shard.runUntil(() => e.isLeader, 'e leads', ['c', 'd', 'e']);
    await shard.settle();
    assert.deepEqual([e.currentTerm, e.stats().lastLsn, shard.members.get('e')!.storage.log.lastTerm], [2, 2, 2]);
    assert.equal(c.stats().lastLsn, 1);

    // Term 3: e and b are gone; a is elected by c and d. Its appends that would give them its
    // no-op (LSN 12, after LSN 8..11 of term 1) are lost; the first one, carrying the no-op alone,
    // is refused (they lack LSN 11), and the one after the probe carries LSN 2..7 only.
    shard.heal();
    shard.lost.splice(shard.lost.indexOf(eAppends), 1);
    shard.isolate(['b']);
    shard.isolate(['e']);
    const noopWithOldRecords = (from: string, _to: string, msg: RaftRequest): boolean =>
      from === 'a' && msg.type === 'append' && msg.records.some((r) => r.term === msg.term) && msg.records.some((r) => r.term < msg.term);
    shard.lost.push(noopWithOldRecords);
    await shard.runUntil(() => a.isLeader && a.currentTerm === 3, 'a leads term 3', ['a', 'c', 'd']);
    const acked = (id: string): number => a.stats().lastLsn - a.stats().lag[id]!;
    await shard.runUntil(() => acked('c') >= 7 && acked('d') >= 7, 'c and d acknowledge LSN 2..7', ['a', 'c', 'd']);
    await shard.run(200, ['a', 'c', 'd']);
    assert.equal(a.stats().lastLsn, 12);
    assert.deepEqual([acked('c'), acked('d')], [7, 7], 'c and d acknowledged records of term 1, none of term 3');
    assert.deepEqual([c.stats().lastLsn, d.stats().lastLsn], [7, 7]);
    assert.equal(a.stats().commitLsn, 1, 'LSN 2..7 are on a majority, but of an earlier term: not committed by counting');

    // The no-op reaches c and d: it commits, and everything before it with it.
    shard.lost.splice(shard.lost.indexOf(noopWithOldRecords), 1);
    await shard.runUntil(() => a.stats().commitLsn === 12, 'the no-op of term 3 commits', ['a', 'c', 'd']);
    assert.ok(a.stats().appliedLsn >= 12);
    for (let i = 0; i < 10; i++) assert.deepEqual(shard.members.get('a')!.storage.store.getPage(i), page(i + 1), `page ${i}`);
    assert.deepEqual(new Set(await Promise.all(lostWrites)), new Set(['not_leader']), 'term 1 ended before its writes committed: none was acknowledged');
  });

  it('a leader whose followers answer its append with a newer term steps down to that term and no longer serves reads from its lease', async () => {
    shard = new Cluster(['a', 'b', 'c'], { randoms: { a: 0, b: 0, c: 0.99 } });
    const [a, b] = ['a', 'b'].map((id) => shard!.replica(id)) as [Replica, Replica];
    await shard.runUntil(() => a.isLeader, 'a leads');
    await a.write([{ page: 0, data: page(1) }]);
    await shard.run(50);
    const term = a.currentTerm;

    // a's messages stop reaching b and c for a while (a still runs); b and c elect b.
    const fromA = (from: string): boolean => from === 'a';
    // What b and c send a never arrives: neither their votes nor b's appends can tell a of term 2.
    const toA = (_from: string, to: string): boolean => to === 'a';
    shard.lost.push(fromA, toA);
    await shard.runUntil(() => b.isLeader, 'b leads');
    assert.equal(a.isLeader, true, 'a has heard from a majority within an election timeout: it still leads');
    const newer = b.currentTerm;
    assert.ok(newer > term);
    // b's write commits with c: a's page 0 is stale from now on.
    await b.write([{ page: 0, data: page(2) }]);

    // a's heartbeats reach b and c again, and their answers reach a: the only news of term 2.
    shard.lost.splice(shard.lost.indexOf(fromA), 1);
    await shard.run(50, ['a']);
    assert.equal(a.isLeader, false, 'answered with a newer term, a stepped down');
    assert.equal(a.currentTerm, newer);
    // Else the same answers would have renewed its lease, and it would serve page 0 as it was before b's write.
    await assert.rejects(a.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() }), (err: ProtocolError) => err.code === 'not_leader');
  });

  it('a deposed leader that has not noticed yet answers no flush: its LSN would leave out a write the new leader acknowledged before it', async () => {
    shard = new Cluster(['a', 'b', 'c'], { randoms: { a: 0, b: 0, c: 0.99 } });
    const [a, b] = ['a', 'b'].map((id) => shard!.replica(id)) as [Replica, Replica];
    await shard.runUntil(() => a.isLeader, 'a leads');
    await a.write([{ page: 0, data: page(1) }]);
    await shard.run(50);

    // a's messages stop reaching b and c, and theirs stop reaching a; b and c elect b.
    const fromA = (from: string): boolean => from === 'a';
    const toA = (_from: string, to: string): boolean => to === 'a';
    shard.lost.push(fromA, toA);
    await shard.runUntil(() => b.isLeader, 'b leads');
    assert.equal(a.isLeader, true, 'a has not noticed yet: it still leads');
    // Acknowledged by b: every flush asked from now on must cover it.
    const acked = await b.write([{ page: 0, data: page(2) }]);
    assert.ok(acked.lsn > a.stats().lastLsn);

    // A flush that reaches a (both subscribe to the shard's subject until a notices).
    const flush = a.flush(Date.now() + 1000).then(
      (r) => r,
      (err: ProtocolError) => err,
    );
    await shard.settle();
    const got = await flush;
    if (!(got instanceof ProtocolError)) assert.fail(`a answered the flush with LSN ${got.lsn}, before the LSN ${acked.lsn} of a write b acknowledged`);
    assert.ok(['not_leader', 'timeout'].includes(got.code), got.code);
  });

  it('a flush whose records do not commit before its deadline is answered timeout, not future_lsn (it asked for no LSN)', async () => {
    shard = new Cluster(['a', 'b', 'c'], { randoms: { a: 0, b: 0.99, c: 0.99 } });
    const a = shard.replica('a');
    await shard.runUntil(() => a.isLeader, 'a leads');
    await a.write([{ page: 0, data: page(1) }]);
    // b's and c's disks are stuck: a's next write cannot commit (their heartbeats still renew a's lease).
    const releases = [shard.stallDisk('b'), shard.stallDisk('c')];
    const deadlineMs = Date.now() + 60_000;
    const write = a.write([{ page: 1, data: page(2) }], { deadlineMs }).catch((err: ProtocolError) => err.code);
    await shard.at(shard.now + 10);
    const flush = a.flush(deadlineMs).then(
      () => 'flushed',
      (err: ProtocolError) => err.code,
    );
    await shard.settle();
    a.expireWaiters(deadlineMs);
    assert.equal(await flush, 'timeout');
    assert.equal(await write, 'timeout');
    for (const release of releases) release();
  });

  it('a leader deposed while a write\'s payload is checksummed off its thread gives the payload\'s slab slot back', async () => {
    // One slot, a checksum that answers when the test says.
    const slab = new Slab({ slotBytes: 64 * 1024, slotCount: 1 });
    let answer: (crc: number) => void = () => undefined;
    const offload: PayloadOffload = { bytesMin: 8192, slab, crc32c: () => new Promise<number>((resolve) => (answer = resolve)) };
    shard = new Cluster(['a', 'b', 'c'], { randoms: { a: 0, b: 0.99, c: 0.99 }, offload: { a: offload } });
    const a = shard.replica('a');
    await shard.runUntil(() => a.isLeader, 'a leads');
    const write = watch(a.write([0, 1, 2, 3].map((p) => ({ page: p, data: page(p + 1) }))));
    await shard.settle();
    assert.equal(slab.tryAlloc(), -1, 'the write holds the only slot');
    // An append of b in a newer term: a steps down while the checksum runs.
    const reply = (await a.handle({ type: 'append', term: a.currentTerm + 1, leader: 'b', prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: 0 })) as AppendReply;
    assert.equal(reply.term, a.currentTerm);
    assert.equal(a.isLeader, false);
    answer(0);
    await shard.settle();
    assert.ok(write.settled());
    assert.equal((write.error() as ProtocolError).code, 'not_leader');
    const slot = slab.tryAlloc();
    assert.notEqual(slot, -1, 'the slot went back to the slab');
  });

  it('a write whose checksum off the thread fails (the pool refused it) is checksummed on the thread and commits; its slot goes back', async () => {
    const slab = new Slab({ slotBytes: 64 * 1024, slotCount: 1 });
    const offload: PayloadOffload = { bytesMin: 8192, slab, crc32c: () => Promise.reject(new Error('the CPU pool is closed')) };
    shard = new Cluster(['a', 'b', 'c'], { randoms: { a: 0, b: 0.99, c: 0.99 }, offload: { a: offload } });
    const a = shard.replica('a');
    await shard.runUntil(() => a.isLeader, 'a leads');
    const write = watch(a.write([0, 1, 2, 3].map((p) => ({ page: p, data: page(p + 1) }))));
    await shard.runUntil(() => write.settled(), 'the write is answered');
    assert.equal(write.error(), undefined);
    assert.equal(a.stats().offloaded, 0, 'not counted as checksummed off the thread');
    assert.notEqual(slab.tryAlloc(), -1, 'the slot went back to the slab');
    // The record's checksum is right: every replica reads the pages back from its log.
    await shard.settle();
    for (const id of ['a', 'b', 'c']) {
      const member: Member = shard.members.get(id)!;
      const written = member.storage.log.read(1, member.storage.log.lastLsn).filter((x) => x.kind === RecordKind.PageWrite);
      assert.deepEqual(decodePageWrite(written[0]!.payload, 4096).map((p) => p.data[0]), [1, 2, 3, 4], id);
    }
  });

  it('a follower holds at most 64 appends waiting their turn: the 65th is refused overloaded at once, and the 64 are answered once its disk is back', async () => {
    shard = new Cluster(['a', 'b', 'c']);
    const b = shard.replica('b');
    // b's disk is stuck while it saves the term of the first append: the others queue behind it.
    const release = shard.stallDisk('b');
    const sent = Array.from({ length: 64 }, (_, k) => b.handle(append(k, [record(1, k + 1)])) as Promise<AppendReply>);
    const replies = sent.map((p) => watch(p));
    const refused = watch(b.handle(append(64, [record(1, 65)])));
    await shard.settle();
    assert.ok(refused.settled(), 'the 65th is answered at once');
    assert.ok(refused.error() instanceof ProtocolError && (refused.error() as ProtocolError).code === 'overloaded', String(refused.error()));
    assert.equal(replies.filter((r) => r.settled()).length, 0, 'the 64 wait for the disk');
    release();
    assert.deepEqual(
      (await Promise.all(sent)).map((r) => [r.success, r.matchLsn]),
      sent.map((_, k) => [true, k + 1]),
    );
    assert.equal(b.stats().lastLsn, 64, 'the refused append left nothing');
  });

  it('a follower whose log holds the last record of the image it is sent keeps the records after it, which may be committed: a candidate without them does not get its vote', async () => {
    // Five replicas. a leads term 1 and writes LSN 1..6; b gets all six, d LSN 1..4 (a counts
    // LSN 1..4, and with a third replica more, committed, but b is told commit 0). d checkpoints
    // at LSN 4 and trims, leads term 3 with another record of term 2 at LSN 6, and b's answer to
    // its first probe (prevLsn 6, a mismatch) steps back over b's whole run of term 1, to b's
    // commit LSN: d sends its image (LSN 4). LSN 5 may be committed (a, b and c held it): were b
    // to cut it, d's crash would leave it on a alone, and e, whose log ends at LSN 4, could be
    // elected by b and c (whose log also ends at LSN 4) and overwrite it.
    shard = new Cluster(['a', 'b', 'c', 'd', 'e']);
    const b = shard.replica('b');
    const d = shard.members.get('d')!;
    const ofA = (prevLsn: number, records: WireRecord[], commitLsn: number): AppendRequest => ({ ...append(prevLsn, records), commitLsn });
    const records = Array.from({ length: 6 }, (_, i) => record(1, i + 1));
    assert.deepEqual(await b.handle(ofA(0, records, 0)), { term: 1, success: true, matchLsn: 6, lastLsn: 6 });
    await d.replica.handle(ofA(0, records.slice(0, 4), 4));
    await shard.settle();
    assert.equal(d.replica.appliedLsn, 4);
    await d.replica.checkpoint();
    const image = d.storage.newest()!;
    assert.deepEqual([image.lsn, image.term], [4, 1]);

    const probe: AppendRequest = { type: 'append', term: 3, leader: 'd', prevLsn: 6, prevTerm: 2, records: [], commitLsn: 5, leaderLastLsn: 7 };
    assert.deepEqual(await b.handle(probe), { term: 3, success: false, lastLsn: 0, conflict: true });
    const data = d.storage.read(image.lsn, 0, image.bytes);
    const reply = (await b.handle({ type: 'snapshot', term: 3, leader: 'd', lsn: image.lsn, lastTerm: image.term, bytes: image.bytes, offset: 0, data, done: true })) as SnapshotReply;
    assert.deepEqual([reply.ok, reply.nextOffset], [true, image.bytes]);
    assert.deepEqual([b.stats().lastLsn, shard.members.get('b')!.storage.log.lastLsn], [6, 6], 'b keeps LSN 5 and 6');

    // d is gone. Once b's stickiness to d has run out, e (log ending at LSN 4 of term 1) asks
    // for its vote: b's log is more up to date.
    shard.now += 1000;
    const vote = (await b.handle({ type: 'vote', term: 4, candidate: 'e', lastLsn: 4, lastTerm: 1 })) as VoteReply;
    assert.deepEqual([vote.term, vote.granted], [4, false]);

  });

  it('an image whose LSN the follower commits while the image is received (an append queued before it became durable) is not installed: nothing applied is cut', async () => {
    shard = new Cluster(['a', 'b', 'c']);
    const b = shard.replica('b');
    const c = shard.members.get('c')!;
    const records = Array.from({ length: 6 }, (_, i) => record(1, i + 1));
    // c holds LSN 1..4 committed, and an image of them.
    await c.replica.handle({ ...append(0, records.slice(0, 4)), commitLsn: 4 });
    await shard.settle();
    await c.replica.checkpoint();
    const image = c.storage.newest()!;
    assert.equal(image.lsn, 4);
    const data = c.storage.read(image.lsn, 0, image.bytes);
    // b's disk is late: the append of LSN 1..6 (commit 6) is queued, not durable, when the image
    // of LSN 4 (sent by a leader whose try of that append timed out) comes.
    const release = shard.stallDisk('b');
    const appended = b.handle({ ...append(0, records), commitLsn: 6 });
    await shard.settle();
    const installed = b.handle({ type: 'snapshot', term: 1, leader: 'a', lsn: image.lsn, lastTerm: image.term, bytes: image.bytes, offset: 0, data, done: true });
    await shard.settle();
    release();
    assert.equal((await appended as AppendReply).success, true);
    const reply = (await installed) as SnapshotReply;
    assert.deepEqual([reply.ok, reply.nextOffset], [true, image.bytes]);
    await shard.settle();
    const member = shard.members.get('b')!;
    assert.deepEqual([b.stats().lastLsn, member.storage.log.lastLsn], [6, 6], 'LSN 5 and 6 kept');
    assert.equal(b.appliedLsn, 6, 'applied as far as before the image came');
    assert.deepEqual(member.storage.store.getPage(6), page(6));
    assert.equal(b.stats().snapshotsInstalled, 0);
  });

  it('a volume that grew: a replica refuses the records and the image of pages past its size until it grows, then takes them', async () => {
    shard = new Cluster(['a', 'b', 'c']);
    const b = shard.replica('b');
    const c = shard.members.get('c')!;
    const records = [record(1, 1), record(1, 2), record(1, 300), record(1, 3)];
    // c grew to 512 pages (its storage first, as its host does): it takes page 300, and its image says 512.
    c.storage.grow(512);
    c.replica.grow(512);
    c.replica.grow(128); // fewer: nothing changes
    assert.equal(c.replica.geometry.pageCount, 512);
    assert.equal((await c.replica.handle({ ...append(0, records), commitLsn: 4 }) as AppendReply).success, true);
    await shard.settle();
    await c.replica.checkpoint();
    const image = c.storage.newest()!;
    const data = c.storage.read(image.lsn, 0, image.bytes);
    // b still has 256 pages: the records are refused before anything changes, and so is the image.
    await assert.rejects(b.handle(append(0, records)), (e: ProtocolError) => e.code === 'bad_request' && /page 300, outside 0\.\.255/.test(e.message));
    const snapshot = { type: 'snapshot' as const, term: 1, leader: 'a', lsn: image.lsn, lastTerm: image.term, bytes: image.bytes, offset: 0, data, done: true };
    await assert.rejects(b.handle(snapshot), (e: ProtocolError) => e.code === 'unavailable' && /has 256 pages, the image sent 512/.test(e.message));
    assert.equal(b.stats().lastLsn, 0);
    // Grown, it takes the image, and reads page 300 from it.
    shard.members.get('b')!.storage.grow(512);
    b.grow(512);
    const reply = (await b.handle(snapshot)) as SnapshotReply;
    assert.deepEqual([reply.ok, reply.nextOffset], [true, image.bytes]);
    assert.equal(b.stats().lastLsn, 4);
    assert.deepEqual(shard.members.get('b')!.storage.store.getPage(300), page(300));
  });

  it('a follower answers an append only once its records are on disk', async () => {
    shard = new Cluster(['a', 'b', 'c']);
    const b = shard.members.get('b')!;
    // The leader's term is saved first: what waits below is the records alone.
    assert.equal(((await b.replica.handle(append(0, []))) as AppendReply).success, true);
    const release = shard.stallDisk('b');
    let syncedWhenAnswered = -1;
    const answer = (b.replica.handle(append(0, [record(1, 1), record(1, 2)])) as Promise<AppendReply>).then((r) => {
      syncedWhenAnswered = b.storage.log.syncedLsn;
      return r;
    });
    const reply = watch(answer);
    await shard.settle();
    assert.equal(reply.settled(), false, 'no answer while the records are not durable');
    assert.equal(b.storage.log.syncedLsn, 0);
    release();
    const r = await answer;
    assert.deepEqual([r.success, r.matchLsn], [true, 2]);
    assert.equal(syncedWhenAnswered, 2, 'when the answer came, both records were on disk');
  });

  it('a follower refuses an append that would overwrite a record it knows committed, and keeps that record', async () => {
    shard = new Cluster(['a', 'b', 'c']);
    const b = shard.members.get('b')!;
    const first = (await b.replica.handle({ ...append(0, [record(1, 1), record(1, 2), record(1, 3)]), commitLsn: 3 })) as AppendReply;
    assert.deepEqual([first.success, first.matchLsn], [true, 3]);
    await shard.settle();
    assert.equal(b.replica.stats().commitLsn, 3);
    // A leader of term 2 whose log differs from LSN 2 on: no leader of a later term lacks a
    // committed record, so the message is wrong, not b's log.
    const forged: AppendRequest = { type: 'append', term: 2, leader: 'c', prevLsn: 1, prevTerm: 1, records: [record(2, 9)], commitLsn: 0, leaderLastLsn: 2 };
    await rejectsWith(b.replica.handle(forged) as Promise<unknown>, 'bad_request', /LSN 2 is committed with term 1/);
    await shard.settle();
    assert.equal(b.storage.log.lastLsn, 3, 'nothing was cut');
    assert.deepEqual([b.storage.log.termAt(2), b.storage.log.termAt(3)], [1, 1]);
    assert.equal(b.replica.stats().lastLsn, 3);
  });

  it('a follower whose log was trimmed behind its images takes an append that starts below its first record: the records it no longer holds are skipped as committed, the new ones written', async () => {
    shard = new Cluster(['a', 'b', 'c']);
    const b = shard.members.get('b')!;
    const recs = (from: number, to: number): WireRecord[] => Array.from({ length: to - from + 1 }, (_, i) => record(1, (from + i) % 64));
    // 48 records of 4 KiB over segments of 64 KiB, committed, with a checkpoint after each 16:
    // the log is trimmed behind the older images.
    for (let from = 1; from <= 48; from += 16) {
      const reply = (await b.replica.handle({ ...append(from - 1, recs(from, from + 15)), commitLsn: from + 15 })) as AppendReply;
      assert.deepEqual([reply.success, reply.matchLsn], [true, from + 15]);
      await shard.settle();
      await shard.runUntil(() => b.replica.stats().appliedLsn === from + 15, 'applied');
      await b.replica.checkpoint();
    }
    const first = b.storage.log.firstLsn;
    assert.ok(first > 3, `the log was trimmed (first LSN ${first})`);
    // The leader, not knowing that, sends from two records before b's first on.
    const prevLsn = first - 3;
    const late = (await b.replica.handle({ ...append(prevLsn, recs(prevLsn + 1, 50)), commitLsn: 48 })) as AppendReply;
    assert.deepEqual([late.success, late.matchLsn], [true, 50], JSON.stringify(late));
    await shard.settle();
    assert.equal(b.storage.log.lastLsn, 50);
    assert.equal(b.storage.log.firstLsn, first, 'nothing below was written again');
    assert.deepEqual([b.storage.log.termAt(49), b.storage.log.termAt(50)], [1, 1]);
  });

  /** Leader a writes pages 0..15 (round `round`'s data), lets them apply, and checkpoints: the image's LSN. */
  async function writeAndCheckpoint(c: Cluster, round: number): Promise<number> {
    const a = c.replica('a');
    for (let i = 0; i < 16; i++) await a.write([{ page: i, data: page(round * 16 + i + 1) }]);
    await c.run(20, ['a']);
    return (await a.checkpoint()).lsn;
  }

  it('a leader sending a follower its image steps down when the follower answers a chunk with a newer term', async () => {
    shard = new Cluster(['a', 'b', 'c'], { randoms: { a: 0, b: 0.99, c: 0.99 } });
    const [a, c] = ['a', 'c'].map((id) => shard!.members.get(id)!);
    await shard.runUntil(() => a.replica.isLeader, 'a leads');
    await shard.run(50);
    // c is cut off while a writes 48 pages with b, checkpointing after each 16: a's log is then
    // trimmed past what c holds, and c can only be sent an image.
    shard.isolate(['c']);
    for (let round = 0; round < 3; round++) await writeAndCheckpoint(shard, round);
    assert.ok(a.storage.log.firstLsn > c.replica.stats().lastLsn + 1, `a's log trimmed past c's (first LSN ${a.storage.log.firstLsn})`);
    const term = a.replica.currentTerm;
    // c answers the image's chunks with a newer term (a leader c has since heard of).
    let chunks = 0;
    shard.forged.push((_from, to, msg, reply) => {
      if (to !== 'c' || msg.type !== 'snapshot') return reply;
      chunks++;
      return { ...reply, term: term + 3 };
    });
    shard.heal();
    await shard.runUntil(() => !a.replica.isLeader, 'a stepped down', ['a']);
    assert.ok(chunks >= 1, 'an image chunk was answered');
    assert.equal(a.replica.currentTerm, term + 3);
  });

  it('a leader whose image goes away while it sends it (a newer checkpoint let it go) sends the newest image instead, and the follower catches up', async () => {
    shard = new Cluster(['a', 'b', 'c'], { randoms: { a: 0, b: 0.99, c: 0.99 }, messageBytesMax: MESSAGE_BYTES_MIN });
    const [a, c] = ['a', 'c'].map((id) => shard!.members.get(id)!);
    await shard.runUntil(() => a.replica.isLeader, 'a leads');
    await shard.run(50);
    shard.isolate(['c']);
    for (let round = 0; round < 3; round++) await writeAndCheckpoint(shard, round);
    assert.ok(a.storage.log.firstLsn > c.replica.stats().lastLsn + 1, 'c can only be sent an image');
    // Once the first chunk of an image reached c, nothing more reaches it for a while.
    const sent: number[] = [];
    let hold = false;
    shard.lost.push((_from, to, msg) => {
      if (to !== 'c' || msg.type !== 'snapshot') return to === 'c' && hold;
      if (hold) return true;
      sent.push(msg.lsn);
      if (sent.length === 2) hold = true; // This second chunk still reaches c.
      return false;
    });
    shard.heal();
    await shard.runUntil(() => hold, 'a sent c two chunks of an image', ['a']);
    const sending = sent[0]!;
    // Two more checkpoints: the image being sent is let go.
    const newest = Math.max(await writeAndCheckpoint(shard, 3), await writeAndCheckpoint(shard, 4));
    await shard.runUntil(() => !a.disk.exists(`shard/${imageFileName(sending)}`), 'the image being sent was removed', ['a', 'b']);
    hold = false;
    await shard.runUntil(() => c.replica.stats().appliedLsn >= newest, 'c installed the newest image and caught up');
    assert.ok(sent.includes(newest), `the newest image (LSN ${newest}) was sent: ${[...new Set(sent)].join(', ')}`);
  });

  it('a leader refuses to hand its leadership over while its replica set changes, and hands it over once the change is done', async () => {
    shard = new Cluster(['a', 'b', 'c'], { randoms: { a: 0, b: 0.99, c: 0.99 } });
    const a = shard.replica('a');
    await shard.runUntil(() => a.isLeader, 'a leads');
    await a.write([{ page: 0, data: page(1) }]);
    // b's and c's disks hold the change to {a, b}: it stays joint.
    const releases = [shard.stallDisk('b'), shard.stallDisk('c')];
    const change = watch(a.reconfigure(['a', 'b'], { deadlineMs: Date.now() + 30_000 }));
    await shard.run(30, ['a']);
    assert.equal(change.settled(), false, 'the change waits for the disks');
    assert.throws(() => a.transferLeadership('b'), (e: ProtocolError) => e.code === 'unavailable' && /is changing its replica set/.test(e.message));
    for (const release of releases) release();
    await shard.runUntil(() => change.settled(), 'the change done', ['a', 'b']);
    assert.equal(change.error(), undefined);
    const handed = a.transferLeadership('b');
    await shard.runUntil(() => shard!.replica('b').isLeader, 'b leads', ['a', 'b']);
    assert.equal((await handed).to, 'b');
  });

  /** The Config records of `m`'s log: their LSN and the set each makes. */
  function configRecords(m: Member): Array<{ lsn: number; config: ReplicaConfig }> {
    const log = m.storage.log;
    return log.read(log.firstLsn, log.lastLsn).flatMap((r, k) => (r.kind === RecordKind.Config ? [{ lsn: log.firstLsn + k, config: decodeConfig(r.payload) }] : []));
  }

  /**
   * A change of a, b, c to {a, b} whose joint configuration is committed on a while the save of
   * {a, b} alone failed on a's disk (a write of its configuration file refused `times` times):
   * the change waits, as no tick of a took it up again. The first reconfigure has ended, with a
   * timeout. Returns the joint configuration's LSN.
   */
  async function jointCommittedSetUnsaved(c: Cluster, times: number): Promise<number> {
    const a = c.members.get('a')!;
    await c.runUntil(() => a.replica.isLeader, 'a leads');
    await a.replica.write([{ page: 0, data: page(1) }]);
    // b's and c's disks hold the joint configuration: the change's first call ends before it commits.
    const releases = [c.stallDisk('b'), c.stallDisk('c')];
    const first = watch(a.replica.reconfigure(['a', 'b'], { deadlineMs: 1000 }));
    await c.settle();
    const joint = a.replica.stats().lastLsn;
    assert.deepEqual(a.replica.configuration(), { members: ['a', 'b'], prior: ['a', 'b', 'c'] });
    a.replica.expireWaiters(1000);
    await c.settle();
    assert.ok(first.error() instanceof ProtocolError && (first.error() as ProtocolError).code === 'timeout', String(first.error()));
    a.disk.failWrite({ path: 'shard/config', times });
    for (const release of releases) release();
    await c.settle();
    assert.equal(a.replica.stats().appliedLsn, joint, 'the joint configuration is committed and applied');
    assert.equal(a.replica.stats().lastLsn, joint, 'the set alone is not appended');
    assert.deepEqual(a.replica.configuration(), { members: ['a', 'b'], prior: ['a', 'b', 'c'] });
    return joint;
  }

  it('a change asked for while its joint configuration is committed but the set alone is not appended (its save failed) appends the set alone and is answered done', async () => {
    shard = new Cluster(['a', 'b', 'c'], { randoms: { a: 0, b: 0.99, c: 0.99 } });
    const a = shard.members.get('a')!;
    const joint = await jointCommittedSetUnsaved(shard, 1);
    const asked = a.replica.reconfigure(['a', 'b'], { deadlineMs: Date.now() + 30_000 });
    const change = watch(asked);
    // No tick of a: the change itself appends the set alone.
    await shard.settle();
    assert.equal(a.replica.stats().lastLsn, joint + 1, 'the set alone appended');
    await shard.runUntil(() => change.settled(), 'the change done', ['a', 'b']);
    assert.equal(change.error(), undefined);
    assert.deepEqual(await asked, { members: ['a', 'b'], term: a.replica.currentTerm, lsn: joint + 1, changed: true });
    assert.deepEqual(configRecords(a), [
      { lsn: joint, config: { members: ['a', 'b'], prior: ['a', 'b', 'c'] } },
      { lsn: joint + 1, config: { members: ['a', 'b'] } },
    ], 'one joint configuration, then the set alone');
  });

  it('a change whose set alone its leader\'s disk refuses to save turn after turn is answered unavailable with why, and is finished by a tick once the disk takes it', async () => {
    shard = new Cluster(['a', 'b', 'c'], { randoms: { a: 0, b: 0.99, c: 0.99 } });
    const a = shard.members.get('a')!;
    const joint = await jointCommittedSetUnsaved(shard, Number.POSITIVE_INFINITY);
    let saves = 0;
    const saveConfig = a.storage.saveConfig.bind(a.storage);
    a.storage.saveConfig = (state) => {
      saves++;
      saveConfig(state);
    };
    // No tick of a: each of the change's six turns tries the set alone once more, and its save fails.
    await rejectsWith(
      a.replica.reconfigure(['a', 'b'], { deadlineMs: Date.now() + 30_000 }),
      'unavailable',
      /^shard v1\/0 did not finish changing its replica set to a,b in 6 steps \(appending the set alone failed: write shard\/config\.tmp: EIO \(simulated\)\); retry$/,
    );
    assert.equal(saves, 6, 'one save of the set alone a turn');
    assert.equal(a.replica.stats().lastLsn, joint, 'the set alone is not appended');
    assert.deepEqual(a.replica.configuration(), { members: ['a', 'b'], prior: ['a', 'b', 'c'] });
    // The disk takes it again: a tick appends the set alone, and the change asked again is done.
    a.disk.clearFaults();
    await shard.at(shard.now + 10, ['a']);
    await shard.runUntil(() => a.replica.stats().appliedLsn > joint, 'the set alone committed', ['a', 'b']);
    assert.deepEqual(a.replica.configuration(), { members: ['a', 'b'] });
    assert.deepEqual(await a.replica.reconfigure(['a', 'b'], { deadlineMs: Date.now() + 30_000 }), { members: ['a', 'b'], term: a.replica.currentTerm, lsn: joint + 1, changed: false });
  });

  /** The id of the replica that leads, once one does. */
  async function elected(c: Cluster): Promise<string> {
    const lead = (): string | undefined => c.ids.find((id) => c.replica(id).stats().role === 'leader');
    await c.runUntil(() => lead() !== undefined, 'a leader');
    return lead()!;
  }

  it('a leader takes an answer that acknowledges more than its message held as no answer: nothing commits with it', async () => {
    shard = new Cluster(['a', 'b', 'c']);
    const id = await elected(shard);
    const leader = shard.replica(id);
    await leader.write([{ page: 1, data: page(1) }]);
    const [f, g] = shard.ids.filter((x) => x !== id) as [string, string];
    shard.isolate([g]);
    // f is sent no records, and answers each message as if it held the leader's whole log.
    shard.lost.push((_from, to, msg) => to === f && msg.type === 'append' && msg.records.length > 0);
    shard.forged.push((_from, to, msg, reply) =>
      to === f && msg.type === 'append' ? { ...(reply as AppendReply), success: true, matchLsn: leader.stats().lastLsn, lastLsn: leader.stats().lastLsn } : reply,
    );
    const commitBefore = leader.stats().commitLsn;
    const write = watch(leader.write([{ page: 2, data: page(2) }]));
    await shard.run(200);
    assert.ok(!(write.settled() && write.error() === undefined), 'a write only the leader holds is not acknowledged');
    assert.equal(leader.stats().commitLsn, commitBefore);
    assert.ok(leader.stats().repliesIgnored > 0, 'the answers were counted as ignored');
  });

  it('a leader with pendingWritesMax writes waiting for commit refuses the next one overloaded, without giving it an LSN', async () => {
    shard = new Cluster(['a', 'b', 'c'], { pendingWritesMax: 4 });
    const id = await elected(shard);
    const leader = shard.replica(id);
    await leader.write([{ page: 1, data: page(1) }]);
    shard.isolate([id]);
    const waiting = Array.from({ length: 4 }, (_, k) => watch(leader.write([{ page: 2 + k, data: page(k) }])));
    await shard.settle();
    const lastLsn = leader.stats().lastLsn;
    await assert.rejects(leader.write([{ page: 9, data: page(9) }]), (e: unknown) => e instanceof StorageError && e.code === 'overloaded');
    assert.equal(leader.stats().lastLsn, lastLsn, 'the refused write has no record');
    assert.equal(waiting.filter((w) => w.settled()).length, 0, 'the four still wait for commit');
  });

  it('a try sent again whose record the leader holds is answered with it though pendingWritesMax writes wait (not overloaded: that would say it was not done)', async () => {
    shard = new Cluster(['a', 'b', 'c'], { pendingWritesMax: 4 });
    const id = await elected(shard);
    const leader = shard.replica(id);
    const writeId = new Uint8Array(16).fill(7);
    const first = await leader.write([{ page: 1, data: page(1) }], { writeId });
    shard.isolate([id]);
    const waiting = Array.from({ length: 4 }, (_, k) => watch(leader.write([{ page: 2 + k, data: page(k) }])));
    await shard.settle();
    const lastLsn = leader.stats().lastLsn;
    // Sent again (its first answer lost): the record it left, committed.
    assert.equal((await leader.write([{ page: 1, data: page(1) }], { writeId, sentAgoMs: 0 })).lsn, first.lsn);
    // Another write sent again, which this log does not hold: refused overloaded, not written.
    await assert.rejects(leader.write([{ page: 9, data: page(9) }], { writeId: new Uint8Array(16).fill(8), sentAgoMs: 0 }), (e: unknown) => e instanceof StorageError && e.code === 'overloaded');
    assert.equal(leader.stats().lastLsn, lastLsn);
    assert.equal(waiting.filter((w) => w.settled()).length, 0);
  });

  it('a read at an LSN not applied yet waits only until its deadline (future_lsn), and at most pendingWritesMax such reads wait', async () => {
    shard = new Cluster(['a', 'b', 'c'], { pendingWritesMax: 4 });
    const id = await elected(shard);
    const leader = shard.replica(id);
    await leader.write([{ page: 1, data: page(1) }]);
    shard.isolate([id]);
    // A record that cannot commit: the reads at its LSN wait for it to be applied.
    const write = watch(leader.write([{ page: 2, data: page(2) }]));
    await shard.settle();
    const lsn = leader.stats().lastLsn;
    const reads = Array.from({ length: 4 }, () => watch(leader.read([1], { lsn, deadlineMs: 1000, nowMs: 0 })));
    await shard.settle();
    assert.equal(reads.filter((r) => r.settled()).length, 0, 'the reads wait');
    await assert.rejects(leader.read([1], { lsn, deadlineMs: 1000, nowMs: 0 }), (e: unknown) => e instanceof StorageError && e.code === 'overloaded');
    leader.expireWaiters(999);
    await shard.settle();
    assert.equal(reads.filter((r) => r.settled()).length, 0, 'not before the deadline');
    leader.expireWaiters(1000);
    await shard.settle();
    for (const r of reads) {
      assert.ok(r.settled(), 'answered at the deadline');
      assert.ok(r.error() instanceof ProtocolError && (r.error() as ProtocolError).code === 'future_lsn', String(r.error()));
    }
    assert.equal(write.settled(), false, 'a write without a deadline still waits');
  });

  it('a leader whose lease ran out and that is deposed while it confirms its leadership for a read answers not_leader, not the read', async () => {
    shard = new Cluster(['a', 'b', 'c']);
    const id = await elected(shard);
    const leader = shard.replica(id);
    await leader.write([{ page: 1, data: page(1) }]);
    const f = shard.ids.find((x) => x !== id)!;
    // f answers the leader's confirmation round from a newer term; the third replica acknowledges it.
    shard.forged.push((_from, to, msg, reply) =>
      to === f && msg.type === 'append' && msg.prevLsn === 0 && msg.records.length === 0 ? { ...reply, term: reply.term + 1 } : reply,
    );
    shard.now += 1000; // no answer within the lease
    await rejectsWith(leader.read([1], { deadlineMs: Date.now() + 5000, nowMs: Date.now() }), 'not_leader');
    assert.equal(leader.stats().role, 'follower');
  });

  it('a follower refuses an append writing a page outside the volume or of another shard, before it changes anything, its term included', async () => {
    shard = new Cluster(['a', 'b', 'c'], { geometry: { ...geometry, shards: 2, stripePages: 4 } });
    const b = shard.members.get('b')!;
    const of = (n: number): AppendRequest => ({ type: 'append', term: 2, leader: 'a', prevLsn: 0, prevTerm: 0, records: [record(2, n)], commitLsn: 0, leaderLastLsn: 1 });
    await rejectsWith(b.replica.handle(of(256)) as Promise<unknown>, 'bad_request', /writes page 256, outside 0\.\.255/);
    await rejectsWith(b.replica.handle(of(4)) as Promise<unknown>, 'bad_request', /writes page 4, of shard 1, not 0/);
    await shard.settle();
    assert.deepEqual([b.storage.log.lastLsn, b.replica.stats().term], [0, 0]);
    assert.equal(b.storage.load()?.term ?? 0, 0, 'no term saved either');
    // A page of its own shard is taken.
    const ok = (await b.replica.handle(of(8))) as AppendReply;
    assert.deepEqual([ok.success, ok.matchLsn], [true, 1]);
  });

  it('a follower saves the newer term of an append before it answers it', async () => {
    shard = new Cluster(['a', 'b', 'c']);
    const b = shard.members.get('b')!;
    const reply = (await b.replica.handle({ ...append(0, []), term: 3 })) as AppendReply;
    assert.deepEqual([reply.term, reply.success], [3, true]);
    assert.equal(b.storage.load()?.term, 3, 'durable when answered: a restart cannot vote in an earlier term');
  });

  it('a leader refuses an append of its own term from another leader, and goes on leading', async () => {
    shard = new Cluster(['a', 'b', 'c']);
    await shard.runUntil(() => shard!.ids.some((id) => shard!.replica(id).stats().role === 'leader'), 'a leader');
    const id = shard.ids.find((x) => shard!.replica(x).stats().role === 'leader')!;
    const leader = shard.replica(id);
    const { term, lastLsn } = leader.stats();
    const other = shard.ids.find((x) => x !== id)!;
    const forged: AppendRequest = { type: 'append', term, leader: other, prevLsn: lastLsn, prevTerm: term, records: [], commitLsn: 0, leaderLastLsn: lastLsn };
    await rejectsWith(leader.handle(forged) as Promise<unknown>, 'bad_request', /which this replica leads/);
    assert.deepEqual([leader.stats().role, leader.stats().term], ['leader', term]);
  });

  it('a voter compares logs by their last record\'s term first: a longer log of an older term does not get its vote or prevote', async () => {
    // b holds LSN 1 of term 1, then LSN 2 of term 2 (from another leader). A candidate whose log
    // ends at LSN 5 of term 1 may miss b's LSN 2, which may be committed: no vote. One whose log
    // ends at LSN 1 of term 3 is more up to date than b, however short.
    shard = new Cluster(['a', 'b', 'c']);
    const b = shard.replica('b');
    assert.equal((await b.handle(append(0, [record(1, 1)])) as AppendReply).success, true);
    const ofC: AppendRequest = { type: 'append', term: 2, leader: 'c', prevLsn: 1, prevTerm: 1, records: [record(2, 2)], commitLsn: 0, leaderLastLsn: 2 };
    assert.equal((await b.handle(ofC) as AppendReply).success, true);
    assert.deepEqual([b.stats().lastLsn, b.stats().term], [2, 2]);
    // Once b's stickiness to its leader has run out.
    shard.now += 1000;
    const pre = (await b.handle({ type: 'prevote', term: 3, candidate: 'c', lastLsn: 5, lastTerm: 1 })) as VoteReply;
    assert.equal(pre.granted, false, 'prevote of a longer log of an older term');
    const vote = (await b.handle({ type: 'vote', term: 3, candidate: 'c', lastLsn: 5, lastTerm: 1 })) as VoteReply;
    assert.deepEqual([vote.term, vote.granted], [3, false]);
    const newer = (await b.handle({ type: 'vote', term: 4, candidate: 'a', lastLsn: 1, lastTerm: 3 })) as VoteReply;
    assert.deepEqual([newer.term, newer.granted], [4, true], 'a shorter log of a newer term is more up to date');
  });

  it('a follower that voted in a newer term while it saved an append\'s replica set writes none of that append\'s records', async () => {
    // b saves the set a Config record carries before it writes the record; its disk is held
    // meanwhile, and c's vote of term 2 comes in. The append is then of a leader b no longer
    // follows: answered unsuccessful in term 2, nothing of it in b's log.
    shard = new Cluster(['a', 'b', 'c']);
    const b = shard.replica('b');
    assert.equal((await b.handle(append(0, [record(1, 1)])) as AppendReply).success, true);
    await shard.settle();
    const release = shard.stallDisk('b');
    const config: WireRecord = { term: 1, kind: RecordKind.Config, payload: encodeConfig({ members: ['a', 'b', 'c'] }) };
    const pending = b.handle(append(1, [config, record(1, 2)])) as Promise<AppendReply>;
    await shard.settle();
    // Once b's stickiness to a has run out.
    shard.now += 1000;
    const vote = b.handle({ type: 'vote', term: 2, candidate: 'c', lastLsn: 1, lastTerm: 1 }) as Promise<VoteReply>;
    await shard.settle();
    release();
    const [r, v] = await Promise.all([pending, vote]);
    assert.deepEqual([v.term, v.granted], [2, true]);
    assert.deepEqual([r.term, r.success], [2, false]);
    await shard.settle();
    assert.deepEqual([b.stats().lastLsn, shard.members.get('b')!.storage.log.lastLsn], [1, 1]);
  });

  it('a candidate counts only the votes granted: refusals in its own term do not elect it', async () => {
    // Every vote is refused in the candidate's term (as voters that voted for another would):
    // prevotes pass, candidates are made and vote for themselves, and none leads.
    shard = new Cluster(['a', 'b', 'c']);
    let refused = 0;
    shard.forged.push((_from, _to, msg, reply) => {
      if (msg.type !== 'vote') return reply;
      refused++;
      return { ...(reply as VoteReply), term: msg.term, granted: false };
    });
    await shard.run(2000);
    assert.ok(refused >= 2, `votes asked: ${refused}`);
    assert.deepEqual(shard.ids.filter((id) => shard!.replica(id).stats().role === 'leader'), []);
    assert.ok(shard.ids.every((id) => shard!.replica(id).stats().term >= 1), 'elections were held');
  });
});

describe('Replica: a term whose save failed', function () {
  this.timeout(20_000);

  it('a step-down whose save of the new term fails fences the device: no record of that term is acknowledged on it', async () => {
    const slab = new Slab({ slotBytes: 8192, slotCount: 256 });
    const disk = new SimDisk();
    const storage = ShardStorage.open(disk, {
      dir: 'shard', pageSize: 4096, pageCount: 256, cacheBytesMax: 1 << 20, slab, segmentBytesMax: 64 * 1024, repairFromPeers: true,
    });
    storage.save({ term: 1, votedFor: null });
    const queue = new DeviceQueue({ disk, name: 'a' });
    let failArmed = false;
    // Its peers grant its prevote, then refuse its vote from a newer term (7): it steps down to
    // term 7, and the save of that term hits a failing fsync.
    const transport: ReplicaTransport = {
      send: async (_to: string, msg: RaftRequest): Promise<RaftReply> => {
        await new Promise((r) => setImmediate(r));
        if (msg.type === 'prevote') return { term: 1, granted: true };
        if (msg.type === 'vote') {
          if (!failArmed) {
            failArmed = true;
            disk.failFsync({ times: 1 });
          }
          return { term: 7, granted: false };
        }
        throw new ProtocolError('timeout', 'no such peer');
      },
    };
    let now = 0;
    const a = new Replica({
      geometry, self: 'a', members: ['a', 'b', 'c'], log: storage.log, store: storage.store, queue, hardState: storage,
      transport, snapshots: storage, timing, nowMs: 0, clock: () => now, random: () => 0,
    });
    now = timing.electionTimeoutMaxMs * 2;
    a.tick(now);
    for (let i = 0; i < 100 && a.stats().term !== 7; i++) await new Promise((r) => setImmediate(r));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    assert.equal(a.stats().term, 7, 'it stepped down to term 7');
    assert.ok(storage.load()!.term < 7, 'the save of term 7 failed');
    // The leader of term 7 sends it a record of its term.
    const reply = await a
      .handle({ type: 'append', term: 7, leader: 'b', prevLsn: 0, prevTerm: 0, records: [{ term: 7, kind: RecordKind.Noop, payload: new Uint8Array(0) }], commitLsn: 0 })
      .then((r) => r as AppendReply, (e: unknown) => e);
    assert.ok(
      !(reply as AppendReply).success,
      `a record of term 7 acknowledged while term 7 is not durable (the failed fsync was swallowed): ${JSON.stringify(reply)}`,
    );
    assert.equal(queue.failed, true, 'the device is fenced: its host reopens it from what is durable');
    a.close();
  });
});
