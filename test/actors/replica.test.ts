import { strict as assert } from 'node:assert';
import { FIRST_ELECTION_WAIT, QUIESCED_WAIT_BEATS, Replica, type AppendTooLarge, SCRUB_STEP_BYTES, type ReplicaTiming, type ReplicaTransport, type ScrubStepResult } from '../../actors/replica';
import { DeviceQueue } from '../../actors/device-queue';
import { WRITE_IDS_READ_AT_OPEN, WRITE_ID_KEEP_MS } from '../../actors/write-ids';
import { SimDisk } from '../../storage-engine/sim-disk';
import type { Disk } from '../../storage-engine/disk';
import { Slab } from '../../storage-engine/slab';
import { IMAGE_BYTES_MIN, ImageReader } from '../../storage-engine/image';
import { pageDataCrc } from '../../storage-engine/page-data-crc';
import { ShardStorage } from '../../storage-engine/shard-storage';
import { encodePageWrite } from '../../storage-engine/page-write';
import { crc32c } from '../../storage-engine/crc32c';
import { RecordKind } from '../../storage-engine/record';
import { ProtocolError } from '../../messages/errors';
import { WRITE_SENT_SKEW_MS } from '../../messages/api';
import { decode, encode } from '../../messages/codec';
import { StorageError, type CorruptionError, type CorruptionReport } from '../../storage-engine/errors';
import type { AppendRequest, RaftRequest, RaftReply } from '../../messages/raft';
import { DiskGates, geometry, page } from '../support/replica-harness';
import { flipInSlab } from '../support/slab';

const timing = { electionTimeoutMinMs: 60, electionTimeoutMaxMs: 120, heartbeatMs: 10, rpcTimeoutMs: 100 };
/** Most the replicas' clock moves in one tick of the shard's 2 ms timer (see TestShard.now). */
const TICK_STEP_MAX_MS = 5;


interface Member {
  id: string;
  disk: SimDisk;
  storage: ShardStorage;
  queue: DeviceQueue;
  replica: Replica;
}

/** `sim` with an fdatasyncAsync that takes 5 ms (a slow flush: other work of the thread runs meanwhile). */
function withAsyncFlush(sim: SimDisk): Disk {
  return new Proxy(sim, {
    get(target, prop) {
      if (prop === 'fdatasyncAsync') return (fh: number) => new Promise<void>((resolve) => setTimeout(resolve, 5)).then(() => target.fdatasync(fh));
      const v = (target as unknown as Record<string | symbol, unknown>)[prop];
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** `m`'s disk says it has `free()` bytes free of 100 MiB (a reserve of 5 MiB by default). */
function saysFree(m: Member, free: () => number): void {
  Object.assign(m.disk, { space: () => ({ freeBytes: free(), sizeBytes: 100 * 1024 * 1024 }) });
}

/** Replicas of one shard on simulated disks, linked by an in-memory network that can be cut. */
class TestShard {
  readonly members = new Map<string, Member>();
  private readonly cut = new Set<string>();
  /** Members whose device queue starts each batch late (a slow disk). */
  readonly slow = new Set<string>();
  /** Members whose device queue starts no batch until the test releases it (a stuck disk). */
  private readonly diskGates = new DiskGates();
  /** Members whose clock the test drives itself (not ticked by the shard's timer). */
  readonly paused = new Set<string>();
  private readonly timer: NodeJS.Timeout | undefined;
  /** Set by `stopClock`: the shard's timer neither moves the clock nor ticks. */
  private clockStopped = false;
  /**
   * The replicas' clock. With `manualClock` the test moves it (`at`); otherwise the shard's timer
   * moves it with real time, but by at most TICK_STEP_MAX_MS a tick: a stall of the test process
   * (a loaded machine, a collection) is not seen by the replicas as time in which their leader
   * went silent, so it cannot start an election the test did not ask for.
   */
  now = 0;
  private readonly slab = new Slab({ slotBytes: 8192, slotCount: 4096 });

  /** Largest replication message sent, encoded (with `messageBytesMax` or `transportBytesMax`: larger ones are refused, as NATS does). */
  largestMessage = 0;

  /**
   * When set, the transport refuses messages larger than this (`too_large`, as nats.js does once
   * connected to a server with a smaller max_payload), whatever the replicas were told.
   */
  transportBytesMax: number | undefined;

  /** What leaders reported of appends refused as too large (Replica `onAppendTooLarge`), in order. */
  readonly tooLarge: Array<{ id: string } & AppendTooLarge> = [];

  /** What replicas reported of their checkpoints failing and succeeding again (onCheckpointFailing), in order. */
  readonly checkpointsFailing: Array<{ id: string; failures: number; err?: Error }> = [];

  constructor(
    readonly ids: string[],
    private readonly opts: {
      checkpointEveryRecords?: number;
      timing?: Partial<ReplicaTiming>;
      messageBytesMax?: number;
      /** The disks flush off the thread (fdatasyncAsync, 5 ms later), as RealDisk does. */
      asyncFlush?: boolean;
      /** The test moves the clock and ticks replicas itself (`at`): a replica not ticked is a stalled thread. */
      manualClock?: boolean;
      /** Per member, the value of its election timeout's random draw (0..1). */
      randoms?: Record<string, number>;
      /** false: the transport has no `sendEach` (every follower is sent its own appends). */
      sendEach?: boolean;
      /** The shard's number in its volume (default 0). */
      shard?: number;
      /** Replicas hand what they cannot go on after to `failures` (Replica `onFailure`), as on a host; without, it is thrown. */
      onFailure?: boolean;
      /** Write ids a replica reads back from its log at open (ShardStorage `writeIdsKept`; default WRITE_IDS_READ_AT_OPEN, as on a host). */
      writeIdsKept?: number;
      /** The wall clock of the replicas' checkpoint pointers (default Date.now). */
      wallClock?: () => number;
      /**
       * The members whose transport tells when a peer's node was last heard from
       * (ReplicaTransport.seenMs; true: every member): a node is heard from while its replica
       * runs, or it is in `nodesUp`, and the link from it is not cut. Without, no shard quiesces.
       */
      liveness?: boolean | string[];
      /**
       * As a host's device ticks its replicas (DeviceHost.tick): every replica at the first tick
       * of each period of this length, and between those only the replicas that were not quiet
       * (Replica.quiet) then, or woke since (Replica `onAwake`).
       */
      quietTickMs?: number;
    } = {},
  ) {
    for (const id of ids) this.start(id, new SimDisk());
    if (opts.manualClock) return;
    let real = performance.now();
    let quietTickAt = 0;
    this.timer = setInterval(() => {
      const t = performance.now();
      if (this.clockStopped) {
        real = t;
        return;
      }
      this.now += Math.min(t - real, TICK_STEP_MAX_MS);
      real = t;
      const quietDue = opts.quietTickMs === undefined || this.now >= quietTickAt;
      if (quietDue && opts.quietTickMs !== undefined) {
        quietTickAt = (Math.floor(this.now / opts.quietTickMs) + 1) * opts.quietTickMs;
        this.awake.clear();
      }
      for (const m of this.members.values()) {
        if (this.paused.has(m.id) || (!quietDue && !this.awake.has(m.id))) continue;
        if (m.replica.quiet) this.quietTicks++;
        m.replica.tick(this.now);
        m.replica.expireWaiters(Date.now());
        if (quietDue && !m.replica.quiet) this.awake.add(m.id);
      }
    }, 2);
  }

  /** Ticks of replicas that were quiet (Replica.quiet) when ticked by the shard's timer. */
  quietTicks = 0;
  /** With `quietTickMs`: the members ticked at every tick until the next quiet tick. */
  private readonly awake = new Set<string>();

  /** Every replica's role changes (onRoleChange), in order. */
  readonly roleChanges: Array<{ id: string; role: string; term: number; reason: string | undefined }> = [];

  /** What replicas reported as damage of their own storage found while running (onDamage). */
  readonly damage: Array<{ id: string; err: CorruptionError }> = [];

  /** What replicas handed to their host as failures (with the `onFailure` option). */
  readonly failures: Array<{ id: string; err: Error }> = [];

  /** When set, the transport's `sendEach` throws it (a transport with a bug). */
  sendEachThrows: Error | undefined;

  /**
   * Opens a replica on `disk`; with `damaged`, as its host does after it reported damage; with
   * `existing`, as its node reopens a replica it held (ShardStorage `expectExisting`).
   */
  start(id: string, sim: SimDisk, opts: { damaged?: readonly CorruptionReport[]; existing?: boolean; newCluster?: boolean; members?: string[]; priorMembers?: string[]; seedLsn?: number } = {}): Member {
    const disk: Disk = this.opts.asyncFlush === true ? withAsyncFlush(sim) : sim;
    const storage = ShardStorage.open(disk, {
      dir: 'shard', pageSize: 4096, pageCount: 256, cacheBytesMax: 1 << 20, slab: this.slab, segmentBytesMax: 64 * 1024, repairFromPeers: this.ids.length > 1,
      ...(opts.damaged ? { damaged: opts.damaged } : {}),
      ...(opts.existing === true ? { expectExisting: true } : {}),
      writeIdsKept: this.opts.writeIdsKept ?? WRITE_IDS_READ_AT_OPEN,
      ...(this.opts.wallClock !== undefined ? { wallClock: this.opts.wallClock } : {}),
    });
    const queue = new DeviceQueue({
      disk,
      name: id,
      schedule: (run) => {
        const start = (): void => this.diskGates.start(id, run);
        if (this.slow.has(id)) setTimeout(start, 30);
        else setImmediate(start);
      },
    });
    const replica = new Replica({
      geometry: { ...geometry, shard: this.opts.shard ?? 0, shards: Math.max(1, (this.opts.shard ?? 0) + 1) }, self: id, members: opts.members ?? this.ids, log: storage.log,
      ...(opts.priorMembers !== undefined ? { priorMembers: opts.priorMembers } : {}), store: storage.store, queue, hardState: storage,
      ...(opts.seedLsn !== undefined ? { seedLsn: opts.seedLsn } : {}),
      ...(opts.newCluster === true ? { newIfMajorityEmpty: true } : {}),
      transport: this.transport(id), snapshots: storage, timing: { ...timing, ...(this.opts.timing ?? {}) },
      nowMs: this.now,
      clock: () => this.now,
      writeIdsAtOpen: storage.takeWriteIdsAtOpen(Date.now()),
      ...(this.opts.randoms?.[id] !== undefined ? { random: () => this.opts.randoms![id]! } : {}),
      ...(this.opts.checkpointEveryRecords ? { checkpointEveryRecords: this.opts.checkpointEveryRecords } : {}),
      ...(this.opts.messageBytesMax ? { messageBytesMax: this.opts.messageBytesMax } : {}),
      onDamage: (err) => void this.damage.push({ id, err }),
      ...(this.opts.onFailure === true ? { onFailure: (err: Error) => void this.failures.push({ id, err }) } : {}),
      onRoleChange: (role, term, reason) => void this.roleChanges.push({ id, role, term, reason }),
      onAwake: () => void this.awake.add(id),
      onAppendTooLarge: (info) => void this.tooLarge.push({ id, ...info }),
      onCheckpointFailing: (info) => void this.checkpointsFailing.push({ id, ...info }),
    });
    const m = { id, disk: sim, storage, queue, replica };
    this.members.set(id, m);
    this.awake.add(id);
    return m;
  }

  /** Holds every batch of `id`'s device queue until the returned release is called: unlike `slow`, no timing can let one through. */
  stallDisk(id: string): () => void {
    return this.diskGates.stall(id);
  }

  /** Crash: the replica stops, unsynced data is lost; restart reopens from the same disk. */
  async crash(id: string): Promise<SimDisk> {
    const m = this.members.get(id)!;
    this.members.delete(id);
    m.replica.close();
    await m.queue.drain().catch(() => undefined);
    m.storage.close();
    m.disk.powerCut();
    return m.disk;
  }

  /** Messages lost on the way (from, to, message), besides cut links. */
  readonly drops: Array<(from: string, to: string, msg: RaftRequest) => boolean> = [];
  /** Answers held back until released: each holds the first answer it matches. */
  private readonly holds: Array<{ match: (from: string, to: string, msg: RaftRequest) => boolean; gate: Promise<void>; used: boolean }> = [];

  /** Holds the first answer to a message matching `match` (handled, not yet returned) until `release`. */
  hold(match: (from: string, to: string, msg: RaftRequest) => boolean): { release: () => void; held: () => boolean } {
    let release!: () => void;
    const h = { match, gate: new Promise<void>((r) => (release = r)), used: false };
    this.holds.push(h);
    return { release, held: () => h.used };
  }

  /** Changes made to answers on the way back (a copy). */
  readonly replyTampers: Array<(from: string, to: string, reply: RaftReply) => void> = [];

  /** Changes made to messages on the way (a copy; the sender's stays as it was). */
  readonly tampers: Array<(from: string, to: string, msg: RaftRequest) => void> = [];

  /** Append messages that carried records: sender, receiver, record count. */
  readonly appendsSent: Array<{ from: string; to: string; records: number }> = [];

  /** Appends sent to every follower as one message (`sendEach`): sender, receivers, record count. */
  readonly appendsToAll: Array<{ from: string; to: string[]; records: number }> = [];

  /** Appends without records sent (heartbeats, probes): sender, receiver, whether they asked to quiesce, when. */
  readonly emptyAppends: Array<{ from: string; to: string; quiesce: boolean; at: number }> = [];

  /** Nodes heard from although their replica is not running (its node is up: `liveness`). */
  readonly nodesUp = new Set<string>();

  private transport(from: string): ReplicaTransport {
    const send = async (to: string, msg: RaftRequest, timeoutMs: number): Promise<RaftReply> => {
      if (msg.type === 'append' && msg.records.length > 0) this.appendsSent.push({ from, to, records: msg.records.length });
      if (msg.type === 'append' && msg.records.length === 0) this.emptyAppends.push({ from, to, quiesce: msg.quiesce === true, at: this.now });
      const bytesMax = this.transportBytesMax ?? this.opts.messageBytesMax;
      if (bytesMax !== undefined) {
        const bytes = encode(msg).length;
        this.largestMessage = Math.max(this.largestMessage, bytes);
        if (bytes > bytesMax) throw new ProtocolError('too_large', `message of ${bytes} bytes exceeds ${bytesMax}`);
      }
      const target = this.members.get(to);
      if (!target || this.cut.has(`${from}>${to}`) || this.drops.some((d) => d(from, to, msg))) {
        await new Promise((r) => setTimeout(r, Math.min(timeoutMs, 5)));
        throw new ProtocolError('timeout', `${from} cannot reach ${to}`);
      }
      const delivered = structuredClone(msg);
      for (const t of this.tampers) t(from, to, delivered);
      // A refusal comes back as the host's transport gives it (ReplicaTransport): unavailable,
      // with the follower's code in details.refused.
      const reply = await target.replica.handle(delivered).catch((e: unknown) => {
        const code = (e as { code?: unknown }).code;
        throw new ProtocolError('unavailable', `replica ${to} refused: ${(e as Error).message}`, typeof code === 'string' ? { refused: code } : undefined);
      });
      const h = this.holds.find((x) => !x.used && x.match(from, to, msg));
      if (h) {
        h.used = true;
        await h.gate;
      }
      if (this.cut.has(`${to}>${from}`)) throw new ProtocolError('timeout', `${to} cannot answer ${from}`);
      const answered = structuredClone(reply);
      for (const t of this.replyTampers) t(from, to, answered);
      return answered;
    };
    const live = this.opts.liveness === true || (Array.isArray(this.opts.liveness) && this.opts.liveness.includes(from));
    const seenMs = (id: string): number | undefined => ((this.members.has(id) || this.nodesUp.has(id)) && !this.cut.has(`${id}>${from}`) ? this.now : undefined);
    if (this.opts.sendEach === false) return { send, ...(live ? { seenMs } : {}) };
    return {
      send,
      ...(live ? { seenMs } : {}),
      // One message to each receiver (each its own copy, with the same cuts, drops and holds).
      sendEach: (to: readonly string[], msg: AppendRequest, timeoutMs: number): Promise<RaftReply>[] => {
        if (this.sendEachThrows !== undefined) throw this.sendEachThrows;
        this.appendsToAll.push({ from, to: [...to], records: msg.records.length });
        return to.map((id) => send(id, msg, timeoutMs));
      },
    };
  }

  /** Cuts every link between `group` and the others, both ways. */
  isolate(group: string[]): void {
    for (const a of group) for (const b of this.ids) if (!group.includes(b)) {
      this.cut.add(`${a}>${b}`);
      this.cut.add(`${b}>${a}`);
    }
  }

  /** Cuts the one link between `a` and `b`, both ways; each still reaches the others. */
  cutLink(a: string, b: string): void {
    this.cut.add(`${a}>${b}`);
    this.cut.add(`${b}>${a}`);
  }

  /** Cuts one direction: what `from` sends to `to`, requests and answers, is lost. */
  cutFrom(from: string, to: string): void {
    this.cut.add(`${from}>${to}`);
  }

  healLink(a: string, b: string): void {
    this.cut.delete(`${a}>${b}`);
    this.cut.delete(`${b}>${a}`);
  }

  heal(): void {
    this.cut.clear();
  }

  leaders(among: string[] = [...this.members.keys()]): Member[] {
    return among.map((id) => this.members.get(id)).filter((m): m is Member => m !== undefined && m.replica.isLeader);
  }

  async waitFor(cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** Waits until the replicas' clock (moved by the shard's timer) has run `ms` further. */
  async elapse(ms: number): Promise<void> {
    const until = this.now + ms;
    await this.waitFor(() => this.now >= until, `${ms} ms on the replicas' clock`);
  }

  async leader(among?: string[]): Promise<Member> {
    await this.waitFor(() => this.leaders(among).length === 1, 'one leader');
    return this.leaders(among)[0]!;
  }

  /** From now on the test moves the clock (`at`), as with `manualClock`, until `resumeClock`. */
  stopClock(): void {
    this.clockStopped = true;
  }

  /** The shard's timer moves the clock again, from where the test left it. */
  resumeClock(): void {
    this.clockStopped = false;
  }

  /** Manual clock: moves it to `t` and ticks `ids` (default all), then lets their messages run. */
  async at(t: number, ids: string[] = [...this.members.keys()]): Promise<void> {
    this.now = t;
    for (const id of ids) this.members.get(id)?.replica.tick(t);
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  }

  /** A replica reopened in this process from its intact disk, as its host does after a failure. */
  async restart(id: string, opts: { damaged?: readonly CorruptionReport[] } = {}): Promise<Member> {
    const m = this.members.get(id)!;
    m.replica.close();
    await m.queue.drain().catch(() => undefined);
    m.storage.close();
    return this.start(id, m.disk, opts);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.diskGates.releaseAll();
    for (const m of this.members.values()) {
      m.replica.close();
      await m.queue.drain().catch(() => undefined);
      m.storage.close();
    }
  }
}

describe('Replica (quorum replication of a shard log)', function () {
  this.timeout(30_000);
  let shard: TestShard | undefined;
  afterEach(async () => {
    await shard?.stop();
    shard = undefined;
  });

  it('a deposed leader\'s divergent suffix is found in a few probes without records, not one LSN per round trip of full batches', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const old = await shard.leader();
    await old.replica.write([{ page: 1, data: page(1) }]);
    // Cut off, the old leader puts 400 writes in its log that never commit.
    shard.isolate([old.id]);
    const lost = Array.from({ length: 400 }, (_, i) => old.replica.write([{ page: 1, data: page(100 + (i % 100)) }]).catch(() => undefined));
    const others = shard.ids.filter((id) => id !== old.id);
    const x = await shard.leader(others);
    await Promise.all(Array.from({ length: 400 }, (_, i) => x.replica.write([{ page: 2, data: page(i % 100) }])));
    await Promise.all(lost);
    const y = others.find((id) => id !== x.id)!;
    await shard.waitFor(() => shard!.members.get(y)!.replica.appliedLsn >= x.replica.appliedLsn, "y has x's writes");
    await shard.crash(x.id);
    shard.heal();
    const sent = shard.appendsSent.length;
    const leader = await shard.leader([y, old.id]);
    const w = await leader.replica.write([{ page: 3, data: page(3) }]);
    await shard.waitFor(() => old.replica.appliedLsn >= w.lsn, 'the deposed leader catches up');
    const toOld = shard.appendsSent.slice(sent).filter((m) => m.from === leader.id && m.to === old.id);
    const records = toOld.reduce((n, m) => n + m.records, 0);
    // Its log holds every record of the new leader's, once: a few batches, not 400 probes of batches.
    assert.ok(toOld.length < 20, `${toOld.length} appends with records, ${records} records`);
    assert.ok(records < 3 * w.lsn, `${records} records sent for ${w.lsn} LSNs`);
    const r = await leader.replica.read([1, 2, 3], { deadlineMs: Date.now() + 1000, nowMs: Date.now() });
    assert.deepEqual(r.pages, [page(1), page(99), page(3)]);
  });

  it('elects exactly one leader; a write commits on a majority and every replica applies it', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    const w = await l.replica.write([{ page: 3, data: page(7) }]);
    assert.equal(shard.leaders().length, 1);
    const r = await l.replica.read([3], { deadlineMs: Date.now() + 1000, nowMs: Date.now() });
    assert.deepEqual(r.pages[0], page(7));
    await shard.waitFor(() => [...shard!.members.values()].every((m) => m.replica.appliedLsn >= w.lsn), 'followers apply');
    for (const m of shard.members.values()) assert.deepEqual(m.storage.store.getPage(3), page(7));
  });

  it('answers that reach a leader after it was closed (its volume deleted) change nothing and throw nowhere', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      // The followers' disks are stuck until the leader is closed: their answers come back after it.
      const releases = shard.ids.filter((id) => id !== l.id).map((id) => shard!.stallDisk(id));
      const sent = shard.appendsSent.length;
      const failures: StorageError[] = [];
      const writes = [1, 2, 3].map((i) =>
        l.replica.write([{ page: 10 + i, data: page(i) }]).then(
          () => 'committed',
          (e: StorageError) => {
            failures.push(e);
            return e.code;
          },
        ),
      );
      await shard.waitFor(() => shard!.appendsSent.length > sent, 'appends on their way');
      await shard.crash(l.id);
      assert.deepEqual(await Promise.all(writes), ['closed', 'closed', 'closed']);
      // Their records went to the followers and may commit under the next leader: each is named.
      for (const e of failures) assert.ok(Number.isSafeInteger(e.details?.['recordLsn']) && e.details?.['recordTerm'] === l.replica.currentTerm, JSON.stringify(e.details));
      for (const release of releases) release();
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    assert.deepEqual(unhandled, [], 'an answer to a closed leader made it throw');
  });

  it('a partitioned leader cannot commit: its write fails, never succeeds; the majority elects a new leader', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const old = await shard.leader();
    await old.replica.write([{ page: 1, data: page(1) }]);
    shard.isolate([old.id]);
    const lost = old.replica.write([{ page: 1, data: page(66) }]).then(
      () => 'committed',
      (e: ProtocolError) => e.code,
    );
    const others = shard.ids.filter((x) => x !== old.id);
    const neu = await shard.leader(others);
    assert.notEqual(neu.id, old.id);
    assert.ok(neu.replica.currentTerm > old.replica.currentTerm || !old.replica.isLeader);
    const w2 = await neu.replica.write([{ page: 1, data: page(2) }]);
    assert.equal(await lost, 'not_leader', 'the old leader gave up: the write is not acknowledged');
    assert.equal(old.replica.isLeader, false, 'a leader without a majority steps down');
    await assert.rejects(old.replica.read([1], { deadlineMs: Date.now() + 200, nowMs: Date.now() }), (e: ProtocolError) => e.code === 'not_leader');
    shard.heal();
    // The old leader's uncommitted record is replaced by the new leader's log.
    await shard.waitFor(() => old.replica.appliedLsn >= w2.lsn, 'old leader catches up');
    assert.deepEqual(old.storage.store.getPage(1), page(2));
    const lastA = old.storage.log.lastLsn;
    for (let lsn = 1; lsn <= lastA; lsn++) assert.equal(old.storage.log.termAt(lsn), neu.storage.log.termAt(lsn), `term at ${lsn}`);
  });

  it('a follower cut off from the leader alone cannot depose it: the other follower, still hearing the leader, votes for no one', async () => {
    // Without this, the other follower would vote for the candidate at once: a second leader
    // would commit writes while the first still served reads from its lease (stale reads).
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    const [f, g] = shard.ids.filter((x) => x !== l.id) as [string, string];
    const termBefore = l.replica.currentTerm;
    shard.cutLink(l.id, f);
    // f's election timer (60–120 ms) fires several times in 600 ms (of the replicas' clock); it
    // reaches g every time.
    const until = shard.now + 600;
    const seen = new Set<string>();
    while (shard.now < until) {
      for (const m of shard.leaders()) seen.add(m.id);
      await new Promise((r) => setTimeout(r, 2));
    }
    const cutOff = shard.members.get(f)!.replica;
    assert.ok(cutOff.stats().preVotes >= 3, 'the cut-off follower did ask, several times');
    assert.equal(cutOff.currentTerm, termBefore, 'its prevotes lost: it never raised its term');
    assert.deepEqual([...seen], [l.id], 'only the first leader ever led');
    assert.equal(shard.members.get(g)!.replica.currentTerm, termBefore, 'the other follower kept the leader\'s term');
    assert.equal(l.replica.currentTerm, termBefore);
    // The leader still commits with g, and serves a latest read.
    await l.replica.write([{ page: 1, data: page(2) }]);
    const r = await l.replica.read([1], { deadlineMs: Date.now() + 1000, nowMs: Date.now() });
    assert.deepEqual(r.pages[0], page(2));
    // Healed, the follower takes the leader's appends in the same term: nobody is deposed.
    shard.heal();
    await shard.waitFor(() => cutOff.appliedLsn >= l.replica.appliedLsn, 'the cut-off follower catches up');
    assert.equal(l.replica.isLeader, true);
    assert.equal(l.replica.currentTerm, termBefore);
  });

  it('a replica cut off from every other keeps its term (its prevotes fail), and rejoins without deposing the leader', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    const f = shard.members.get(shard.ids.find((x) => x !== l.id)!)!;
    const termBefore = l.replica.currentTerm;
    const before = f.replica.stats();
    shard.isolate([f.id]);
    await shard.elapse(500);
    assert.ok(f.replica.stats().preVotes >= before.preVotes + 3, 'it asked');
    assert.equal(f.replica.currentTerm, termBefore, 'no election: its term did not move');
    assert.equal(f.replica.stats().elections, before.elections);
    const w = await l.replica.write([{ page: 2, data: page(2) }]);
    shard.heal();
    await shard.waitFor(() => f.replica.appliedLsn >= w.lsn, 'it catches up');
    assert.equal(l.replica.isLeader, true, 'the leader was not deposed');
    assert.equal(l.replica.currentTerm, termBefore);
  });

  it('prevotes: a replica says whether it would vote, and changes nothing', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    await l.replica.write([{ page: 2, data: page(2) }]);
    const voter = shard.members.get(shard.ids.find((x) => x !== l.id)!)!;
    await shard.waitFor(() => voter.replica.appliedLsn >= 2, 'voter has the write');
    const term = voter.replica.currentTerm;
    const ask = (candidate: string, t: number, lastLsn: number, lastTerm: number): Promise<unknown> =>
      voter.replica.handle({ type: 'prevote', term: t, candidate, lastLsn, lastTerm });
    // The third member asks. While the voter hears its leader: no, to anyone else.
    const other = shard.ids.find((x) => x !== l.id && x !== voter.id)!;
    assert.deepEqual(await ask(other, term + 1, 1000, term), { term, granted: false });
    shard.paused.add(voter.id);
    shard.isolate([voter.id]);
    voter.replica.tick(shard.now + 10_000); // its leader is silent past an election timeout
    const saved = voter.storage.load();
    assert.deepEqual(await ask(other, term + 1, 1000, term), { term, granted: true }, 'a candidate as up to date, in a newer term');
    assert.deepEqual(await ask(other, term + 1, 0, 0), { term, granted: false }, 'a candidate behind');
    assert.deepEqual(await ask(other, term, 1000, term), { term, granted: false }, 'not a newer term');
    assert.equal(voter.replica.currentTerm, term, 'its term did not move');
    assert.deepEqual(voter.storage.load(), saved, 'nothing saved');
  });

  it('a crashed follower restarts from its disk and catches up without stopping writes', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    const f = shard.ids.find((x) => x !== l.id)!;
    await l.replica.write([{ page: 5, data: page(5) }]);
    const disk = await shard.crash(f);
    let last = 0;
    for (let i = 0; i < 20; i++) last = (await l.replica.write([{ page: 10 + i, data: page(i) }])).lsn;
    const back = shard.start(f, disk);
    await shard.waitFor(() => back.replica.appliedLsn >= last, 'restarted follower catches up');
    for (let i = 0; i < 20; i++) assert.deepEqual(back.storage.store.getPage(10 + i), page(i));
  });

  it('a follower behind the trimmed log installs the leader\'s newest image, then follows', async () => {
    // Elections slower than the default 60–120 ms: a pause of the test process (a checkpoint,
    // a collection) must not move the leadership while the writes go on; this test is about
    // catching up from an image, not about failover.
    shard = new TestShard(['a', 'b', 'c'], { checkpointEveryRecords: 10, timing: { electionTimeoutMinMs: 400, electionTimeoutMaxMs: 600 } });
    const l = await shard.leader();
    const lagging = shard.ids.find((x) => x !== l.id)!;
    shard.isolate([lagging]);
    for (let i = 0; i < 60; i++) await l.replica.write([{ page: i, data: page(i + 1) }]);
    await shard.waitFor(() => l.storage.log.firstLsn > 1, 'the leader trims its log after checkpoints');
    shard.heal();
    const m = shard.members.get(lagging)!;
    const target = l.replica.appliedLsn;
    await shard.waitFor(() => m.replica.stats().snapshotsInstalled >= 1 && m.replica.appliedLsn >= target, 'image installed and caught up', 10_000);
    for (let i = 0; i < 60; i++) assert.deepEqual(m.storage.store.getPage(i), page(i + 1), `page ${i}`);
    const w = await l.replica.write([{ page: 200, data: page(9) }]);
    await shard.waitFor(() => m.replica.appliedLsn >= w.lsn, 'follows after the image');
    // And the installed state survives a restart.
    const disk = await shard.crash(lagging);
    const again = shard.start(lagging, disk);
    await shard.waitFor(() => again.replica.appliedLsn >= w.lsn, 'restart after install');
    assert.deepEqual(again.storage.store.getPage(200), page(9));
  });

  it('a follower behind takes no image that would take its device under half its reserve: the leader sends it again, and it is installed once there is room', async () => {
    shard = new TestShard(['a', 'b', 'c'], { checkpointEveryRecords: 10, timing: { electionTimeoutMinMs: 400, electionTimeoutMaxMs: 600 } });
    const l = await shard.leader();
    const lagging = shard.ids.find((x) => x !== l.id)!;
    const m = shard.members.get(lagging)!;
    // Its disk says how much it has free: a reserve of 5 % of 100 MiB, 5 MiB.
    const MIB = 1024 * 1024;
    const free = { bytes: 50 * MIB };
    saysFree(m, () => free.bytes);
    shard.isolate([lagging]);
    for (let i = 0; i < 60; i++) await l.replica.write([{ page: i, data: page(i + 1) }]);
    await shard.waitFor(() => l.storage.log.firstLsn > 1, 'the leader trims its log after checkpoints');
    // Over half the reserve (appends of page writes would be taken), not by an image of 60 pages.
    free.bytes = 2.5 * MIB + 64 * 1024;
    m.queue.forgetSpace();
    shard.heal();
    await shard.waitFor(() => m.queue.stats().rejectedNoSpace >= 3, 'the image refused, sent again and refused again');
    assert.equal(m.replica.stats().snapshotsInstalled, 0);
    const target = l.replica.appliedLsn;
    free.bytes = 50 * MIB;
    m.queue.forgetSpace();
    await shard.waitFor(() => m.replica.stats().snapshotsInstalled >= 1 && m.replica.appliedLsn >= target, 'image installed once there is room', 10_000);
    for (let i = 0; i < 60; i++) assert.deepEqual(m.storage.store.getPage(i), page(i + 1), `page ${i}`);
  });

  it('a leader refuses page writes no_space, not appending them, while followers that refuse page data for space leave no majority; one that catches up counts again', async () => {
    shard = new TestShard(['a', 'b', 'c'], { checkpointEveryRecords: 10, timing: { electionTimeoutMinMs: 400, electionTimeoutMaxMs: 600 } });
    const l = await shard.leader();
    const [x, y] = shard.ids.filter((id) => id !== l.id) as [string, string];
    // The followers' disks say how much they have free: a reserve of 5 % of 100 MiB, 5 MiB.
    const MIB = 1024 * 1024;
    const free = new Map([[x, 50 * MIB], [y, 50 * MIB]]);
    for (const id of [x, y]) saysFree(shard.members.get(id)!, () => free.get(id)!);
    const setFree = (id: string, bytes: number): void => {
      free.set(id, bytes);
      shard!.members.get(id)!.queue.forgetSpace();
    };
    // x under half its reserve: the writes commit with y, and x falls behind the leader's trimmed log.
    setFree(x, 2 * MIB);
    for (let i = 0; i < 40; i++) await l.replica.write([{ page: i, data: page(i + 1) }]);
    const xm = shard.members.get(x)!;
    await shard.waitFor(() => l.storage.log.firstLsn > xm.replica.stats().lastLsn + 1, 'x behind the leader\'s trimmed log');
    // y too: the next write is appended before the leader hears y refuse it, and times out.
    setFree(y, 2 * MIB);
    await assert.rejects(l.replica.write([{ page: 100, data: page(7) }], { deadlineMs: Date.now() + 500 }), (e: ProtocolError) => e.code === 'timeout' && /followers without it/.test(e.message));
    // From then on: refused at once, not appended.
    const last = l.storage.log.lastLsn;
    await assert.rejects(l.replica.write([{ page: 101, data: page(8) }]), (e: StorageError) => e.code === 'no_space' && e.message.includes(`followers ${x}, ${y} take no page data`));
    assert.equal(l.storage.log.lastLsn, last, 'not appended');
    // x has room again: it is sent the leader's image and what follows, and counts again; y still refuses.
    setFree(x, 50 * MIB);
    await shard.waitFor(() => xm.replica.stats().snapshotsInstalled >= 1, 'x installs the leader\'s image');
    let lsn = 0;
    for (let tries = 0; lsn === 0; tries++) {
      assert.ok(tries < 100, 'a page write committed by the leader and x within 100 tries, 50 ms apart');
      lsn = await l.replica.write([{ page: 102, data: page(9) }]).then((r) => r.lsn, (e: StorageError) => (e.code === 'no_space' ? 0 : Promise.reject(e)));
      if (lsn === 0) await new Promise((r) => setTimeout(r, 50));
    }
    await shard.waitFor(() => xm.replica.appliedLsn >= lsn, 'x applies it');
    for (let i = 0; i < 40; i += 7) assert.deepEqual(xm.storage.store.getPage(i), page(i + 1), `page ${i}`);
    assert.deepEqual(xm.storage.store.getPage(102), page(9));
  });

  it('with small messages (transport max 32 KiB), appends and image chunks fit, and a write that cannot is too_large', async () => {
    const messageBytesMax = 32 * 1024;
    shard = new TestShard(['a', 'b', 'c'], { messageBytesMax, checkpointEveryRecords: 20, timing: { electionTimeoutMinMs: 400, electionTimeoutMaxMs: 600 } });
    const l = await shard.leader();
    const lagging = shard.ids.find((x) => x !== l.id)!;
    shard.isolate([lagging]);
    // Concurrent writes of 2 pages: appends to the other follower batch many records.
    await Promise.all(Array.from({ length: 80 }, (_, i) => l.replica.write([{ page: i, data: page(i + 1) }, { page: 100 + i, data: page(i + 2) }])));
    await shard.waitFor(() => l.storage.log.firstLsn > 1, 'the leader trims its log after checkpoints');
    shard.heal();
    const m = shard.members.get(lagging)!;
    const target = l.replica.appliedLsn;
    // The image of 160 pages (over 640 KiB) crosses in chunks that fit 32 KiB messages.
    await shard.waitFor(() => m.replica.stats().snapshotsInstalled >= 1 && m.replica.appliedLsn >= target, 'image installed and caught up', 15_000);
    for (let i = 0; i < 80; i += 7) assert.deepEqual(m.storage.store.getPage(100 + i), page(i + 2), `page ${100 + i}`);
    assert.ok(shard.largestMessage > messageBytesMax / 2 && shard.largestMessage <= messageBytesMax, `largest message ${shard.largestMessage} bytes`);
    // 8 pages: a record of 32,848 bytes, more than a message holds.
    await assert.rejects(
      l.replica.write(Array.from({ length: 8 }, (_, i) => ({ page: 200 + i, data: page(i) }))),
      (e: StorageError) => e.code === 'too_large' && /replication message/.test(e.message),
    );
    // 7 pages fit (28,744 bytes) and commit.
    await l.replica.write(Array.from({ length: 7 }, (_, i) => ({ page: 200 + i, data: page(i) })));
  });

  /** A shard of three whose follower `lagging` missed `writes` records of 2 pages (over 8 KiB each), written 20 at a time. */
  async function lagging(writes: number, opts: { checkpointEveryRecords?: number } = {}): Promise<{ s: TestShard; l: Member; m: Member }> {
    const s = (shard = new TestShard(['a', 'b', 'c'], { ...opts, timing: { electionTimeoutMinMs: 400, electionTimeoutMaxMs: 600 } }));
    const l = await s.leader();
    const m = s.members.get(s.ids.find((x) => x !== l.id)!)!;
    s.isolate([m.id]);
    for (let k = 0; k < writes; k += 20) {
      await Promise.all(Array.from({ length: Math.min(20, writes - k) }, (_, j) => k + j).map((i) => l.replica.write([{ page: i, data: page(i + 1) }, { page: 100 + i, data: page(i + 2) }])));
    }
    return { s, l, m };
  }

  for (const image of [false, true]) {
    it(`messages bounded smaller while a follower lags (a NATS server restarted with a smaller max_payload): told the bound, the leader sizes its ${image ? 'image chunks' : 'appends'} to it and the follower catches up, nothing refused`, async () => {
      // 80 records (over 640 KiB): one append of the default bound, or an image of 160 pages.
      const { s, l, m } = await lagging(80, image ? { checkpointEveryRecords: 20 } : {});
      if (image) await s.waitFor(() => l.storage.log.firstLsn > 1, 'the leader trims its log after checkpoints');
      const bytesMax = 32 * 1024;
      s.transportBytesMax = bytesMax;
      s.largestMessage = 0;
      for (const x of s.members.values()) x.replica.setMessageBytesMax(bytesMax);
      s.heal();
      const target = l.replica.appliedLsn;
      await s.waitFor(() => m.replica.appliedLsn >= target && (!image || m.replica.stats().snapshotsInstalled >= 1), 'the lagging follower catches up', 15_000);
      for (let i = 0; i < 80; i += 7) assert.deepEqual(m.storage.store.getPage(100 + i), page(i + 2), `page ${100 + i}`);
      assert.deepEqual(s.tooLarge, [], 'no append refused as too large');
      assert.equal(l.replica.stats().appendsTooLarge, 0);
      assert.ok(s.largestMessage > bytesMax / 2 && s.largestMessage <= bytesMax, `largest message ${s.largestMessage} bytes`);
      // A write whose record does not fit the new bound is refused, not appended.
      await assert.rejects(
        l.replica.write(Array.from({ length: 8 }, (_, i) => ({ page: 200 + i, data: page(i) }))),
        (e: StorageError) => e.code === 'too_large' && /replication message of 32768 bytes/.test(e.message),
      );
    });
  }

  it('appends a follower\'s transport refuses as too large, its leader not told why: each next append to it is half as large, the follower catches up, reported once', async () => {
    const { s, l, m } = await lagging(80);
    s.transportBytesMax = 32 * 1024;
    s.heal();
    const target = l.replica.appliedLsn;
    await s.waitFor(() => m.replica.appliedLsn >= target, 'the lagging follower catches up', 15_000);
    for (let i = 0; i < 80; i += 7) assert.deepEqual(m.storage.store.getPage(100 + i), page(i + 2), `page ${100 + i}`);
    // From about 107 records (896 KiB) to 3 (under 32 KiB): five halvings, not one refusal after another.
    const refused = l.replica.stats().appendsTooLarge;
    assert.ok(refused >= 1 && refused <= 8, `${refused} appends refused`);
    assert.deepEqual(s.tooLarge.map((t) => [t.id, t.follower, t.oneRecord]), [[l.id, m.id, false]]);
    assert.ok(s.tooLarge[0]!.records > 1 && s.tooLarge[0]!.batchBytesMax < s.tooLarge[0]!.bytes, JSON.stringify(s.tooLarge[0]));
  });

  it('a record larger than the transport takes: refused again as one record, reported once as such; told a bound that holds it, the follower catches up', async () => {
    // Records of 2 pages (over 8 KiB), refused by a transport of 6 KiB even one at a time.
    const { s, l, m } = await lagging(10);
    s.transportBytesMax = 6 * 1024;
    s.heal();
    await s.waitFor(() => l.replica.stats().appendsTooLarge >= 6, 'one-record appends refused again and again');
    assert.deepEqual(s.tooLarge.map((t) => [t.follower, t.oneRecord]), [[m.id, false], [m.id, true]]);
    assert.equal(s.tooLarge[1]!.records, 1);
    assert.ok(m.replica.appliedLsn < l.replica.appliedLsn, 'the follower has not caught up');
    // The server allows more again, and the replicas are told.
    s.transportBytesMax = 32 * 1024;
    for (const x of s.members.values()) x.replica.setMessageBytesMax(32 * 1024);
    const target = l.replica.appliedLsn;
    await s.waitFor(() => m.replica.appliedLsn >= target, 'the lagging follower catches up', 15_000);
    assert.equal(s.tooLarge.length, 2, 'nothing more reported');
  });

  it('refuses a message bound too small for one page, or an append bound the messages cannot carry', () => {
    const disk = new SimDisk();
    const slab = new Slab({ slotBytes: 8192, slotCount: 16 });
    const storage = ShardStorage.open(disk, { dir: 'shard', pageSize: 4096, pageCount: 256, cacheBytesMax: 1 << 16, slab });
    try {
      const base = {
        geometry, self: 'a', members: ['a'], log: storage.log, store: storage.store, queue: new DeviceQueue({ disk, name: 'a' }), hardState: storage,
        transport: { send: () => Promise.reject(new Error('unused')) }, nowMs: 0, clock: () => 0,
      };
      for (const bad of [{ messageBytesMax: 8 * 1024 }, { messageBytesMax: 65536.5 }, { messageBytesMax: 64 * 1024, appendBytesMax: 64 * 1024 }, { appendBytesMax: 0 }]) {
        assert.throws(() => new Replica({ ...base, ...bad }), (e: StorageError) => e.code === 'bad_request', JSON.stringify(bad));
      }
    } finally {
      storage.close();
    }
  });

  it('a leader whose own disk is slower than its followers\' still applies and answers every write', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    // The followers make the records durable first, so they commit before the leader's own
    // fdatasync returns; the leader must apply them once it has them on disk too.
    shard.slow.add(l.id);
    const writes = Array.from({ length: 8 }, (_, i) => l.replica.write([{ page: 40 + i, data: page(i + 1) }]));
    // Unanswered writes would wait forever: a generous bound tells them from slow ones.
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      Promise.all(writes).then(() => 'all answered'),
      new Promise((r) => (timer = setTimeout(() => r('stuck'), 15_000))),
    ]);
    clearTimeout(timer);
    assert.equal(done, 'all answered');
    const st = l.replica.stats();
    assert.equal(st.appliedLsn, st.commitLsn, 'the leader applied everything committed');
    for (let i = 0; i < 8; i++) assert.deepEqual(l.storage.store.getPage(40 + i), page(i + 1));
  });

  it('replication is pipelined: a slow follower gets several appends before its fdatasync and batches them', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    const f = shard.members.get(shard.ids.find((x) => x !== l.id)!)!;
    // f's disk is stuck until the test releases it (however long the writes take to go out).
    const releaseF = shard.stallDisk(f.id);
    const sent = shard.appendsSent.length;
    const writes: Array<Promise<unknown>> = [];
    for (let i = 0; i < 8; i++) {
      writes.push(l.replica.write([{ page: 60 + i, data: page(i) }]));
      // Each write leaves in its own append message.
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(writes);
    // The leader did not wait for f's fdatasync to send it the next append.
    await shard.waitFor(() => shard!.appendsSent.slice(sent).filter((m) => m.to === f.id).length >= 2, 'several appends on their way to the stuck follower');
    releaseF();
    await shard.waitFor(() => f.replica.appliedLsn >= l.replica.appliedLsn, 'the slow follower catches up');
    const hist = f.queue.stats().batchOpsHistogram;
    assert.ok(hist.slice(1).some((n) => n > 0), `some fdatasync batch of the follower held several append messages: ${JSON.stringify(hist)}`);
  });

  it('writes that arrive in one turn of the event loop go to each follower in one append message', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]); // the term's no-op and a first write are out of the way
    const before = shard.appendsSent.length;
    const writes: Array<Promise<unknown>> = [];
    for (let i = 0; i < 12; i++) writes.push(l.replica.write([{ page: 20 + i, data: page(i) }]));
    await Promise.all(writes);
    const sent = shard.appendsSent.slice(before).filter((m) => m.from === l.id);
    const followers = shard.ids.filter((x) => x !== l.id);
    for (const f of followers) {
      const toF = sent.filter((m) => m.to === f);
      // Sent at once, the first write would leave alone and the window fill with the next ones.
      assert.deepEqual(toF.map((m) => m.records), [12], `append messages to ${f}`);
    }
  });

  it('followers in step are sent each append as one message to all of them; without sendEach, each its own', async () => {
    for (const sendEach of [true, false]) {
      shard = new TestShard(['a', 'b', 'c'], { sendEach });
      const l = await shard.leader();
      await l.replica.write([{ page: 1, data: page(1) }]);
      const [toAll, each] = [shard.appendsToAll.length, shard.appendsSent.length];
      for (let i = 0; i < 20; i++) await l.replica.write([{ page: 30 + i, data: page(i) }]);
      const all = shard.appendsToAll.slice(toAll);
      const sent = shard.appendsSent.slice(each);
      const followers = shard.ids.filter((x) => x !== l.id).sort();
      if (sendEach) {
        // Every record went out once, to both followers together.
        assert.equal(all.reduce((n, m) => n + m.records, 0), 20, JSON.stringify(all));
        for (const m of all) assert.deepEqual([...m.to].sort(), followers);
      } else {
        assert.equal(all.length, 0);
        for (const f of followers) assert.equal(sent.filter((m) => m.to === f).reduce((n, m) => n + m.records, 0), 20, `records sent to ${f}`);
      }
      await shard.waitFor(() => [...shard!.members.values()].every((m) => m.replica.appliedLsn === l.replica.appliedLsn), 'every replica applies every write');
      for (const m of shard.members.values()) assert.deepEqual(m.storage.store.getPage(49), page(19));
      await shard.stop();
      shard = undefined;
    }
  });

  it('a follower that fell behind is sent what it lacks in its own message, and the next records go to both followers in one', async () => {
    // The test moves the clock: no heartbeat catches the follower up behind the test's back.
    shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 600, heartbeatMs: 50, rpcTimeoutMs: 1000 }, randoms: { a: 0, b: 0.99, c: 0.99 } });
    await shard.at(0);
    await shard.at(300, ['a']);
    await shard.at(350);
    const a = shard.members.get('a')!.replica;
    assert.equal(shard.leaders()[0]?.id, 'a');
    await a.write([{ page: 1, data: page(1) }]);
    // c's answers to four appends are held: its window is full, and the last writes reach b alone.
    const held = Array.from({ length: 4 }, () => shard!.hold((from, to, msg) => from === 'a' && to === 'c' && msg.type === 'append' && msg.records.length > 0));
    for (let i = 0; i < 6; i++) await a.write([{ page: 10 + i, data: page(i) }]);
    assert.ok(held.every((h) => h.held()), 'c took four appends');
    // (The answer to the first write's append may be among the held ones: then c lacks three.)
    const behind = a.stats().lastLsn - shard.members.get('c')!.replica.stats().lastLsn;
    assert.ok(behind === 2 || behind === 3, `c lacks ${behind} records`);
    const [toAll, each] = [shard.appendsToAll.length, shard.appendsSent.length];
    // c's answers come back in the turn of a new write.
    for (const h of held) h.release();
    const w = await a.write([{ page: 20, data: page(20) }]);
    // c was sent the records it lacked in a message of its own, and the new record went to b and
    // c in one. (appendsSent lists each receiver of a message to all too.)
    assert.deepEqual(shard.appendsToAll.slice(toAll).map((m) => ({ to: [...m.to].sort(), records: m.records })), [{ to: ['b', 'c'], records: 1 }]);
    assert.deepEqual(shard.appendsSent.slice(each).filter((m) => m.to === 'c').map((m) => m.records), [behind, 1]);
    for (let t = 360; t <= 500; t += 10) await shard.at(t);
    await shard.waitFor(() => shard!.members.get('c')!.replica.appliedLsn >= w.lsn, 'c applies every write');
    assert.deepEqual(shard.members.get('c')!.storage.store.getPage(15), page(5));
    assert.deepEqual(shard.members.get('c')!.storage.store.getPage(20), page(20));
  });

  it('a follower whose messages are lost is sent nothing for a heartbeat interval, then probes without records, not its records on every turn', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    const [, f2] = shard.ids.filter((x) => x !== l.id) as [string, string];
    await l.replica.write([{ page: 1, data: page(1) }]);
    // f2 is down: every message to it fails.
    let down = true;
    shard.drops.push((_from, to) => down && to === f2);
    const each = shard.appendsSent.length;
    const t0 = shard.now;
    // 64 writers for 300 ms of the replicas' clock.
    let n = 0;
    await Promise.all(Array.from({ length: 64 }, async (_, i) => {
      while (shard!.now - t0 < 300) await l.replica.write([{ page: 30 + (i % 64), data: page(n++) }]);
    }));
    const toF2 = shard.appendsSent.slice(each).filter((m) => m.to === f2);
    const elapsed = shard.now - t0;
    // The messages in flight before the first loss is known (5 ms later, at most the window of 4)
    // may carry records; after it only probes (no records), one a heartbeat interval. (Without
    // the pause, about 200 carry records here; how many are in flight first depends on the
    // machine's load, so the bound is the window, not fewer.)
    assert.ok(toF2.length <= 4, `${toF2.length} messages with records to the follower that is down (${n} writes in ${elapsed.toFixed(0)} ms)`);
    down = false;
    await shard.waitFor(() => shard!.members.get(f2)!.replica.appliedLsn === l.replica.appliedLsn, 'f2, back, catches up');
    assert.deepEqual(shard.members.get(f2)!.storage.store.getPage(1), page(1));
  });

  it('an error the transport throws while a leader sends its appends (from a timer) goes to the host (onFailure), not out of the timer', async () => {
    shard = new TestShard(['a', 'b', 'c'], { onFailure: true });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    shard.sendEachThrows = new TypeError('transport bug');
    const write = l.replica.write([{ page: 2, data: page(2) }], { deadlineMs: Date.now() + 300 }).then(() => 'acknowledged', (e: ProtocolError) => e.code);
    await shard.waitFor(() => shard!.failures.length > 0, 'the failure reaches the host');
    assert.deepEqual(shard.failures.map((f) => `${f.id}: ${f.err.message}`), [`${l.id}: transport bug`], 'handed over once, by the leader');
    // Not acknowledged: its deadline passes, or the followers, hearing nothing, elect another leader.
    assert.ok(['timeout', 'not_leader'].includes(await write), 'the write is not acknowledged');
  });

  it('an error thrown while a leader handles an append\'s answer goes to the host (onFailure), not out of the promise', async () => {
    shard = new TestShard(['a', 'b', 'c'], { onFailure: true });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    // An answer that throws when read (what a bug in handling it would do).
    shard.replyTampers.push((from, _to, reply) => {
      if (from === l.id && 'success' in reply) Object.defineProperty(reply, 'success', { get: () => { throw new TypeError('answer handler bug'); } });
    });
    void l.replica.write([{ page: 2, data: page(2) }], { deadlineMs: Date.now() + 300 }).catch(() => undefined);
    await shard.waitFor(() => shard!.failures.length > 0, 'the failure reaches the host');
    assert.deepEqual(shard.failures.map((f) => `${f.id}: ${f.err.message}`), [`${l.id}: answer handler bug`], 'handed over once, by the leader');
  });

  it('a write that cannot commit before its deadline is answered timeout (outcome unknown), not left waiting', async () => {
    // Long election timeouts: the cut-off leader keeps leading for over 2 s, so only the
    // deadline can end the wait.
    shard = new TestShard(['a', 'b', 'c'], { timing: { electionTimeoutMinMs: 2000, electionTimeoutMaxMs: 2500 } });
    const l = await shard.leader(undefined);
    shard.isolate([l.id]);
    // A deadline the wall clock the shard's timer passes (expireWaiters) does not reach in this
    // test: the test passes the host's wall-clock time itself.
    const deadlineMs = Date.now() + 3_600_000;
    let outcome: ProtocolError | undefined;
    void l.replica.write([{ page: 7, data: page(7) }], { deadlineMs }).then(
      () => assert.fail('a write that no majority holds must not be acknowledged'),
      (e: ProtocolError) => (outcome = e),
    );
    const settled = async (): Promise<boolean> => {
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      return outcome !== undefined;
    };
    await shard.elapse(50);
    l.replica.expireWaiters(deadlineMs - 1);
    assert.equal(await settled(), false, 'waiting before its deadline');
    l.replica.expireWaiters(deadlineMs);
    assert.equal(await settled(), true, 'answered at its deadline');
    const err = outcome!;
    assert.equal(err.code, 'timeout', err.message);
    assert.match(err.message, /may or may not be committed/);
    assert.equal(err.details?.deadlineMs, deadlineMs, 'the deadline it was answered at');
    assert.equal(l.replica.isLeader, true, 'still leading: the deadline, not a step-down, ended the wait');
  });

  it('a replica set of one leads at once and serves', async () => {
    shard = new TestShard(['solo']);
    const l = await shard.leader();
    const w = await l.replica.write([{ page: 0, data: page(3) }]);
    assert.deepEqual((await l.replica.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() })).pages[0], page(3));
    assert.deepEqual((await l.replica.read([0], { lsn: w.lsn - 1, deadlineMs: Date.now() + 1000, nowMs: Date.now() })).pages[0], new Uint8Array(4096));
  });

  it('a voter refuses a candidate whose log is behind, and votes once per term, durably', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    await l.replica.write([{ page: 2, data: page(2) }]);
    const voter = shard.members.get(shard.ids.find((x) => x !== l.id)!)!;
    await shard.waitFor(() => voter.replica.appliedLsn >= 2, 'voter has the write');
    // A follower that hears its leader votes for no one; this one stops hearing it: its clock
    // jumps past its election timeout, it campaigns alone, and then no timer of its own runs.
    shard.paused.add(voter.id);
    shard.isolate([voter.id]);
    voter.replica.tick(shard.now + 10_000);
    const t = voter.replica.currentTerm + 5;
    const other = shard.ids.find((x) => x !== l.id && x !== voter.id)!;
    const stale = await voter.replica.handle({ type: 'vote', term: t, candidate: other, lastLsn: 0, lastTerm: 0 });
    assert.deepEqual(stale, { term: t, granted: false });
    const ok = await voter.replica.handle({ type: 'vote', term: t + 1, candidate: other, lastLsn: 1000, lastTerm: t });
    assert.equal((ok as { granted: boolean }).granted, true);
    const second = await voter.replica.handle({ type: 'vote', term: t + 1, candidate: l.id, lastLsn: 2000, lastTerm: t });
    assert.equal((second as { granted: boolean }).granted, false, 'one vote per term');
    assert.deepEqual(voter.storage.load(), { term: t + 1, votedFor: other }, 'the vote is durable');
  });

  it('an append from an old term is refused (fencing)', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    const f = shard.members.get(shard.ids.find((x) => x !== l.id)!)!;
    const other = shard.ids.find((x) => x !== l.id && x !== f.id)!;
    const reply = await f.replica.handle({ type: 'append', term: 0, leader: other, prevLsn: 0, prevTerm: 0, records: [{ term: 0, kind: 1, payload: encodePageWrite(4096, [{ page: 0, data: new Uint8Array(4096) }]) }], commitLsn: 0 });
    assert.equal((reply as { success: boolean }).success, false);
    assert.equal(f.replica.stats().leader, l.id, 'the follower still follows the real leader');
  });
});

describe('Replica (more cases)', function () {
  this.timeout(30_000);
  let shard: TestShard | undefined;
  afterEach(async () => {
    await shard?.stop();
    shard = undefined;
  });

  it('a read at an LSN committed but not applied by its deadline (the leader\'s own disk late) fails timeout, to be tried again, not future_lsn', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    const release = shard.stallDisk(l.id);
    // Committed by the followers; applied once the leader's own record is durable.
    const lsn = l.replica.stats().lastLsn + 1;
    const written = l.replica.write([{ page: 2, data: page(2) }]);
    await shard.waitFor(() => l.replica.stats().commitLsn >= lsn, 'committed by the followers');
    assert.ok(l.replica.appliedLsn < lsn, 'not applied: the leader\'s disk is stuck');
    const read = l.replica.read([2], { lsn, deadlineMs: Date.now() + 20, nowMs: Date.now() });
    await assert.rejects(read, (e: ProtocolError) => e.code === 'timeout' && new RegExp(`committed ${lsn}`).test(e.message));
    // One past the last LSN: future_lsn at once, as before.
    await assert.rejects(l.replica.read([2], { lsn: lsn + 1, deadlineMs: Date.now() + 20, nowMs: Date.now() }), (e: ProtocolError) => e.code === 'future_lsn');
    release();
    assert.equal((await written).lsn, lsn);
    assert.deepEqual((await l.replica.read([2], { lsn, deadlineMs: Date.now() + 1000, nowMs: Date.now() })).pages, [page(2)]);
  });

  describe('on a clock the test moves (leader stickiness and the lease under stalls and restarts)', function () {
    // The default timing before 5354581 (heartbeats 50 ms, now 100): 300–600 ms elections, a lease of 0.75 × 300 ms.
    const slow = { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 600, heartbeatMs: 50, rpcTimeoutMs: 1000 };

    /** a leads from 300 ms, its link to c is cut at 450 ms; everyone ticks every 10 ms until `until`. */
    async function cutFollower(until: number): Promise<TestShard> {
      const s = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { a: 0, b: 0.99, c: 0 } });
      await s.at(0);
      await s.at(300, ['a']);
      await s.at(350);
      assert.equal(s.leaders()[0]?.id, 'a');
      await s.members.get('a')!.replica.write([{ page: 0, data: page(1) }]);
      s.cutLink('a', 'c');
      for (let t = 360; t <= until; t += 10) await s.at(t);
      return s;
    }

    it('a follower whose thread stalled between two ticks dates the leader\'s message by its clock, not by its last tick', async () => {
      shard = await cutFollower(1000);
      // b stalls from 1000 ms (no tick); a's heartbeat of 1100 ms reaches it all the same.
      await shard.at(1100, ['a']);
      shard.isolate(['a']);
      // c campaigns (its timer fired long ago); b heard a 205–215 ms ago: it must say no.
      for (const t of [1305, 1310, 1315]) await shard.at(t, ['b', 'c']);
      assert.deepEqual(shard.leaders().map((m) => m.id), ['a'], 'no second leader while a may still serve reads from its lease');
      const a = shard.members.get('a')!.replica;
      await shard.at(1320, ['a']);
      const r = await a.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() });
      assert.deepEqual(r.pages[0], page(1));
    });

    it('a late answer to its own prevote (a newer term) does not end a follower\'s stickiness: the leader it just answered keeps its lease alone', async () => {
    shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { a: 0, b: 0.5, c: 0 } });
    for (let t = 0; t <= 400; t += 10) await shard.at(t);
    assert.equal(shard.leaders()[0]?.id, 'a');
    const a = shard.members.get('a')!.replica;
    await a.write([{ page: 0, data: page(1) }]);
    shard.isolate(['a']);
    // c wins a prevote but its votes are lost; c's "no" (term 2) to b's prevote is held back.
    let dropVotes = true;
    shard.drops.push((from, to, msg) => dropVotes && from === 'c' && to === 'b' && msg.type === 'vote');
    const late = shard.hold((from, to, msg) => from === 'b' && to === 'c' && msg.type === 'prevote');
    for (let t = 410; t <= 850; t += 10) await shard.at(t, ['b', 'c']);
    assert.ok(late.held(), 'b asked c, and c\'s answer waits');
    // a reaches b again (a–c stays cut): b follows a, and its acknowledgements give a its lease.
    shard.healLink('a', 'b');
    for (let t = 860; t <= 990; t += 10) await shard.at(t, ['a', 'b']);
    assert.equal(a.isLeader, true);
    late.release(); // c's "no, I am at term 2" reaches b now
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    dropVotes = false;
    for (let t = 995; t <= 1035; t += 5) await shard.at(t, ['b', 'c']);
    assert.deepEqual(shard.leaders(['b', 'c']), [], 'b voted for no one within a minimum election timeout of a\'s message');
    const r = await a.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() });
    assert.deepEqual(r.pages[0], page(1));
  });

  it('confirmLeads: under the lease at once; a deposed leader that has not noticed (its thread stalled) cannot pass it, nor can another term', async () => {
    const slow = { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 600, heartbeatMs: 50, rpcTimeoutMs: 1000 };
    shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { a: 0, b: 0.5, c: 0.99 } });
    for (let t = 0; t <= 100; t += 10) await shard.at(t);
    const a = shard.members.get('a')!.replica;
    assert.ok(a.isLeader);
    const term = a.currentTerm;
    const written = await a.write([{ page: 0, data: page(1) }]);
    await a.confirmLeads(term, Date.now() + 1000);
    await assert.rejects(a.confirmLeads(term + 1, Date.now() + 1000), (e: ProtocolError) => e.code === 'not_leader');
    const b = shard.members.get('b')!.replica;
    await assert.rejects(b.confirmLeads(term, Date.now() + 1000), (e: ProtocolError) => e.code === 'not_leader');
    // a is cut off and ticks no more (a stalled thread): b and c elect a leader of their own.
    shard.isolate(['a']);
    for (let t = 110; t <= 1500 && shard.leaders(['b', 'c']).length === 0; t += 10) await shard.at(t, ['b', 'c']);
    const neu = (await shard.leader(['b', 'c'])).replica;
    await neu.write([{ page: 0, data: page(2) }]);
    // a still takes itself for the leader of its term: only the lease check stops it.
    assert.equal(a.isLeader, true);
    assert.equal(a.currentTerm, term);
    const code = await a.confirmLeads(term, Date.now() + 1000).then(() => 'confirmed', (e: ProtocolError) => e.code);
    assert.ok(code === 'timeout' || code === 'not_leader', code);
    // A read at the latest LSN is not answered from a's stale state; one at an LSN a knows
    // committed is, at once (those records never change): page 0 as its first write left it.
    const latest = await a.read([0], { deadlineMs: Date.now() + 300, nowMs: Date.now() }).then((r) => r.pages[0], (e: ProtocolError) => e.code);
    assert.ok(latest === 'timeout' || latest === 'not_leader', `a latest read of the deposed leader: ${String(latest)}`);
    const old = await a.read([0], { lsn: written.lsn, deadlineMs: Date.now() + 300, nowMs: Date.now() });
    assert.deepEqual([old.lsn, old.pages[0]], [written.lsn, page(1)]);
    await neu.confirmLeads(neu.currentTerm, Date.now() + 1000);
    // Healed, a's round meets the newer term: not_leader, and a steps down.
    shard.heal();
    await assert.rejects(a.confirmLeads(term, Date.now() + 1000), (e: ProtocolError) => e.code === 'not_leader');
    assert.equal(a.isLeader, false);
  });

  it('an answer to a quorum round of an earlier term does not count toward the lease of the term the leader leads now', async () => {
    const slow = { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 600, heartbeatMs: 50, rpcTimeoutMs: 1000 };
    shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { a: 0, b: 0.99, c: 0.99 } });
    for (let t = 0; t <= 100; t += 10) await shard.at(t);
    const a = shard.members.get('a')!.replica;
    assert.ok(a.isLeader);
    const first = a.currentTerm;
    await a.write([{ page: 0, data: page(1) }]);
    // The quorum rounds a reads start (empty appends from LSN 0 that carry no commit), by term.
    const rounds: number[] = [];
    shard.drops.push((from, _to, msg) => {
      if (from === 'a' && msg.type === 'append' && msg.prevLsn === 0 && msg.commitLsn === 0 && msg.records.length === 0) rounds.push(msg.term);
      return false;
    });
    // a ticks no more (no heartbeats): at 450 ms its lease has run out, and a read starts a round.
    // b's answer (of the first term) is held; c hears nothing of a from here.
    const held = shard.hold((from, to, msg) => from === 'a' && to === 'b' && msg.type === 'append' && msg.prevLsn === 0 && msg.commitLsn === 0);
    shard.drops.push((from, to) => from === 'a' && to === 'c');
    await shard.at(450, ['b', 'c']);
    const firstRead = a.read([0], { deadlineMs: Date.now() + 5000, nowMs: Date.now() }).catch((err: ProtocolError) => err.code);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(rounds, [first, first]);
    assert.ok(held.held());
    // A candidate's vote request in a newer term moves a to it (a no longer heard a majority
    // within an election timeout); its log is behind, so a does not vote for it.
    await a.handle({ type: 'vote', term: first + 1, candidate: 'c', lastLsn: 0, lastTerm: 0 });
    assert.equal(a.isLeader, false);
    // a is elected again, with b's vote (b answered a's round: a was its last leader); b takes
    // none of a's appends of the new term, so nothing b answers in it is an acknowledgement.
    shard.drops.push((from, to, msg) => from === 'a' && to === 'b' && msg.type === 'append' && msg.term > first && !(msg.prevLsn === 0 && msg.commitLsn === 0));
    for (let t = 460; t <= 480 && !a.isLeader; t += 10) await shard.at(t, ['a', 'b']);
    assert.ok(a.isLeader && a.currentTerm > first + 1, 'a leads a newer term');
    // b's answer of the first term comes now: the first read's round is over (a no longer leads that term).
    held.release();
    assert.equal(await firstRead, 'not_leader');
    // A read in the new term: nobody acknowledged a message of it, so a asks a majority first.
    rounds.length = 0;
    const read = a.read([0], { deadlineMs: Date.now() + 60_000, nowMs: Date.now() }).catch((err: ProtocolError) => err.code);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(rounds, [a.currentTerm, a.currentTerm], 'the read confirms a\'s leadership with a round of the new term');
    a.expireWaiters(Date.now() + 60_000);
    await read;
  });

  it('elections that fail in a row wait longer each time (up to 8 times the timeout), and a leader is elected once votes get through', async () => {
    const slow = { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 600, heartbeatMs: 50, rpcTimeoutMs: 1000 };
    shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { a: 0, b: 0.99, c: 0.99 } });
    // Votes are lost (prevotes pass): every election fails, as on a device too busy to save votes in time.
    let lose = true;
    shard.drops.push((_from, _to, msg) => lose && msg.type === 'vote');
    for (let t = 0; t <= 10_000; t += 10) await shard.at(t);
    const elections = shard.members.get('a')!.replica.stats().elections;
    // Without the back-off a's timer (300 ms) fires about 33 times in 10 s; with it: 300, 600,
    // 1,200, then 2,400 ms apart.
    assert.ok(elections >= 4 && elections <= 7, `a started ${elections} elections in 10 s`);
    lose = false;
    for (let t = 10_010; t <= 15_000 && shard.leaders().length === 0; t += 10) await shard.at(t);
    assert.equal(shard.leaders().length, 1, 'a leader once votes get through');
  });

  it('a follower that stalled past its election timeout does not depose a leader a majority follows, also when it led before that leader', async () => {
    shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { a: 0, b: 0.3, c: 0.99 } });
    let t = 0;
    const run = async (until: number, ids?: string[]): Promise<void> => {
      for (; t <= until; t += 10) await shard!.at(t, ids);
    };
    // Until `done`, 10 ms of the clock a step, letting real time pass too (a lost message is
    // answered after a few real ms).
    const runUntil = async (done: () => boolean, what: string): Promise<void> => {
      for (const end = t + 5000; !done(); t += 10) {
        assert.ok(t < end, what);
        await shard!.at(t);
        await new Promise((r) => setTimeout(r, 1));
      }
    };
    await run(400);
    assert.equal(shard.leaders()[0]?.id, 'a');
    await shard.members.get('a')!.replica.write([{ page: 0, data: page(1) }]);
    // a goes away for a while: b is elected; a comes back and follows b (b's last leader was a).
    shard.isolate(['a']);
    await run(1400, ['b', 'c']);
    assert.equal(shard.leaders(['b', 'c'])[0]?.id, 'b');
    shard.heal();
    const b = shard.members.get('b')!.replica;
    await runUntil(() => b.isLeader && shard!.members.get('a')!.replica.stats().leader === 'b', 'a follows b');
    const term = b.currentTerm;
    // Every message of that time answered: a is in contact with b, as a follower is.
    await new Promise((r) => setTimeout(r, 20));
    await run(t + 100);
    // a's thread stalls 700 ms: b's heartbeats do not reach it (c answers b all along).
    let stalled = true;
    shard.drops.push((from, to) => stalled && from === 'b' && to === 'a');
    await run(t + 700, ['b', 'c']);
    stalled = false;
    assert.ok(b.isLeader);
    // a wakes up with its election timer long fired, and campaigns.
    await run(t + 100);
    assert.deepEqual(shard.leaders().map((m) => `${m.id}@${m.replica.currentTerm}`), [`b@${term}`]);
  });

  it('a new shard is first led by its chosen member (the sorted members\' one at shard mod count), at its first ticks, with one election', async () => {
    for (const [index, chosen] of [[0, 'a'], [1, 'b'], [2, 'c'], [3, 'a']] as const) {
      // The chosen member's random draw would be the latest: only the choice makes it first.
      const randoms = { a: 0, b: 0, c: 0, [chosen]: 0.99 };
      shard = new TestShard(['c', 'a', 'b'], { manualClock: true, timing: slow, shard: index, randoms });
      for (let t = 0; t <= 20; t += 10) await shard.at(t);
      assert.deepEqual(shard.leaders().map((m) => m.id), [chosen], `shard ${index}`);
      assert.deepEqual([...shard.members.values()].map((m) => `${m.id}:${m.replica.stats().elections}`).sort(), ['a', 'b', 'c'].map((id) => `${id}:${id === chosen ? 1 : 0}`));
      await shard.stop();
      shard = undefined;
    }
  });

  it('a new shard whose chosen member is down: the others wait FIRST_ELECTION_WAIT election timeouts, then elect one of them', async () => {
    shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { b: 0, c: 0.99 } });
    shard.isolate(['a']);
    const firstMs = slow.electionTimeoutMinMs * FIRST_ELECTION_WAIT;
    for (let t = 0; t < firstMs; t += 10) await shard.at(t, ['b', 'c']);
    const b = shard.members.get('b')!.replica;
    assert.equal(b.stats().preVotes + b.stats().elections, 0, 'b did not campaign before its first wait');
    assert.deepEqual(shard.leaders(), []);
    for (let t = firstMs; t <= firstMs + 100; t += 10) await shard.at(t, ['b', 'c']);
    assert.deepEqual(shard.leaders().map((m) => m.id), ['b']);
  });

  it('a follower whose leader\'s messages wait behind the save of a new term does not campaign while they keep coming', async () => {
    shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { b: 0.99 } });
    for (let t = 0; t <= 20; t += 10) await shard.at(t);
    assert.equal(shard.leaders()[0]?.id, 'a');
    const b = shard.members.get('b')!.replica;
    for (let t = 30; t <= 100 && b.stats().lastLsn < 1; t += 10) await shard.at(t);
    assert.equal(b.stats().lastLsn, 1, 'b holds the leader\'s first record');
    // b alone from here: a leader of term 2 (c, say) reaches it while its disk is stuck, so the
    // save of term 2 waits, and every later message of c waits behind it.
    shard.isolate(['b']);
    const release = shard.stallDisk('b');
    const append = { type: 'append' as const, term: 2, leader: 'c', prevLsn: 1, prevTerm: 1, records: [], commitLsn: 1 };
    const answers: Array<Promise<unknown>> = [];
    for (let t = 110; t <= 2000; t += 10) {
      if (t % 50 === 0) answers.push(b.handle(append).catch(() => undefined));
      await shard.at(t, ['b']);
    }
    assert.equal(b.currentTerm, 2);
    assert.equal(b.stats().preVotes, 0, 'b did not campaign while its leader\'s messages kept coming');
    // Once they stop, it does.
    for (let t = 2010; t <= 2700; t += 10) await shard.at(t, ['b']);
    assert.ok(b.stats().preVotes > 0, 'b campaigns once its leader is silent');
    release();
    await Promise.all(answers);
  });

  it('a follower whose disk is slow to make an append durable still gets heartbeats, and does not campaign', async () => {
    shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { b: 0, c: 0.99 } });
    for (let t = 0; t <= 20; t += 10) await shard.at(t);
    assert.equal(shard.leaders()[0]?.id, 'a');
    const a = shard.members.get('a')!.replica;
    const b = shard.members.get('b')!.replica;
    for (let t = 30; t <= 100 && b.stats().lastLsn < 1; t += 10) await shard.at(t);
    // b's disk holds every batch: the append of the next write waits for its answer (c's commits it).
    const release = shard.stallDisk('b');
    await a.write([{ page: 0, data: page(1) }]);
    for (let t = 110; t <= 2000; t += 10) await shard.at(t);
    assert.equal(b.stats().preVotes, 0, 'b heard its leader all along');
    assert.deepEqual(shard.leaders().map((m) => `${m.id}@${m.replica.currentTerm}`), ['a@1']);
    release();
    for (let t = 2010; t <= 2100 && b.stats().lastLsn < 2; t += 10) await shard.at(t);
    assert.equal(b.stats().lastLsn, 2);
  });

  it('a leader that steps down says why', async () => {
    shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow });
    for (let t = 0; t <= 20; t += 10) await shard.at(t);
    assert.equal(shard.leaders()[0]?.id, 'a');
    shard.isolate(['a']);
    for (let t = 30; t <= 700; t += 10) await shard.at(t, ['a']);
    assert.equal(shard.leaders().length, 0);
    assert.deepEqual(shard.roleChanges.filter((c) => c.id === 'a').map((c) => `${c.role}@${c.term}:${c.reason ?? '-'}`), ['leader@1:-', 'follower@1:lost contact with a majority']);
  });

  it('a follower restarted in place votes for no one for a minimum election timeout (it may have just answered the leader)', async () => {
      shard = await cutFollower(1100); // b answered a's heartbeat of 1100 ms
      shard.isolate(['a']);
      shard.now = 1110;
      await shard.restart('b');
      for (let t = 1110; t <= 1400; t += 10) await shard.at(t, ['b', 'c']);
      assert.deepEqual(shard.leaders().map((m) => m.id), ['a'], 'no second leader within a\'s lease');
      // Past the quiet time, b and c elect one of themselves: the shard is not stuck.
      for (let t = 1410; t <= 2600 && shard.leaders(['b', 'c']).length === 0; t += 10) await shard.at(t, ['b', 'c']);
      assert.equal(shard.leaders(['b', 'c']).length, 1);
    });
  });

  describe('whose log is being cut', function () {
    it('does not campaign while a truncation waits in its device queue (its last LSN still counts the records being cut)', async () => {
      shard = new TestShard(['a', 'b', 'c'], { manualClock: true });
      const b = shard.members.get('b')!;
      const noop = (term: number) => ({ term, kind: 2, payload: new Uint8Array(0) });
      // Two records of term 1 from a leader 'a' (never committed), then a leader 'c' of term 2
      // whose record 2 conflicts: b must cut its record 2, behind its slow device queue.
      await b.replica.handle({ type: 'append', term: 1, leader: 'a', prevLsn: 0, prevTerm: 0, records: [noop(1), noop(1)], commitLsn: 0 });
      // c's term first (saved at once), so that its next append goes straight to the cut.
      await b.replica.handle({ type: 'append', term: 2, leader: 'c', prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0 });
      const releaseB = shard.stallDisk('b');
      const cut = b.replica.handle({ type: 'append', term: 2, leader: 'c', prevLsn: 1, prevTerm: 1, records: [noop(2)], commitLsn: 0 });
      await new Promise((r) => setImmediate(r));
      const before = b.replica.stats().preVotes;
      await shard.at(10_000, ['b']); // far past its election timeout
      assert.equal(b.replica.stats().preVotes, before, 'no prevote while the cut is pending');
      releaseB();
      assert.equal(((await cut) as { success: boolean }).success, true);
      await shard.at(20_000, ['b']);
      assert.equal(b.replica.stats().preVotes, before + 1, 'once the log is cut, it campaigns again');
    });
  });

  describe('in a set of one', function () {
    it('keeps no records in memory once they are durable (nobody to send them to)', async () => {
      shard = new TestShard(['a']);
      const l = await shard.leader();
      for (let i = 0; i < 300; i++) await l.replica.write([{ page: i % 200, data: page(i) }]);
      await shard.waitFor(() => l.replica.stats().heldRecords === 0, 'held records dropped');
      assert.equal(l.replica.stats().heldBytes, 0);
    });
  });

  describe('a follower applying what it appended', function () {
    const statsOf = (id: string) => shard!.members.get(id)!.replica.stats();
    // Elections slower than the default: a pause of the test process must not move the leadership.
    const steady = { timing: { electionTimeoutMinMs: 400, electionTimeoutMaxMs: 600 } };

    it('applies it from memory, none read back from its log, and holds none once applied; restarted, it reads them back', async () => {
      shard = new TestShard(['a', 'b', 'c'], steady);
      const l = await shard.leader();
      const followers = shard.ids.filter((id) => id !== l.id);
      const readBefore = followers.map((id) => shard!.members.get(id)!.disk.counters.bytesRead);
      let last = 0;
      for (let i = 0; i < 30; i++) last = (await l.replica.write([{ page: i, data: page(i + 1) }])).lsn;
      // Heartbeats carry the commit LSN: each follower applies the last write and lets go of it.
      await shard.waitFor(() => followers.every((id) => statsOf(id).appliedLsn >= last && statsOf(id).heldRecords === 0), 'the followers apply every write');
      followers.forEach((id, k) => {
        assert.equal(shard!.members.get(id)!.disk.counters.bytesRead - readBefore[k]!, 0, `${id} read nothing from its disk`);
        assert.equal(statsOf(id).appliedFromLog, 0, `${id} counts none read back`);
        assert.equal(statsOf(id).heldBytes, 0);
        for (let i = 0; i < 30; i++) assert.deepEqual(shard!.members.get(id)!.storage.store.getPage(i), page(i + 1), `${id} page ${i}`);
      });
      // Reopened from its disk, a follower holds nothing: it applies the committed records from its log.
      const f = await shard.restart(followers[0]!);
      await shard.waitFor(() => f.replica.appliedLsn >= last, 'the restarted follower applies them again');
      assert.ok(f.replica.stats().appliedFromLog >= 30, `${f.replica.stats().appliedFromLog} records read back`);
      for (let i = 0; i < 30; i++) assert.deepEqual(f.storage.store.getPage(i), page(i + 1), `page ${i}`);
    });

    it('whose commit LSN stops moving holds at most 8 MiB of them; the rest it reads back from its log once they commit', async () => {
      shard = new TestShard(['a', 'b', 'c'], steady);
      const l = await shard.leader();
      const b = shard.ids.find((id) => id !== l.id)!;
      // b is told nothing commits: it appends every record and applies none.
      let stalled = true;
      shard.tampers.push((_from, to, msg) => {
        if (stalled && to === b && msg.type === 'append') msg.commitLsn = 0;
      });
      const applied = statsOf(b).appliedLsn;
      let last = 0;
      // 48 writes of 64 pages: 12 MiB of records.
      for (let i = 0; i < 48; i++) {
        const pages = Array.from({ length: 64 }, (_, k) => ({ page: ((i % 4) * 64 + k) % 256, data: page(i + k) }));
        last = (await l.replica.write(pages)).lsn;
      }
      await shard.waitFor(() => statsOf(b).lastLsn >= last, 'b appends every record');
      assert.equal(statsOf(b).appliedLsn, applied, 'b applied nothing meanwhile');
      assert.ok(statsOf(b).heldBytes <= 8 * 1024 * 1024, `${statsOf(b).heldBytes} bytes held`);
      assert.ok(statsOf(b).heldBytes >= 7 * 1024 * 1024, `the newest are held: ${statsOf(b).heldBytes} bytes`);
      stalled = false;
      await shard.waitFor(() => statsOf(b).appliedLsn >= last && statsOf(b).heldRecords === 0, 'b applies every record');
      const fromLog = statsOf(b).appliedFromLog;
      assert.ok(fromLog > 0 && fromLog < 48, `${fromLog} records read back`);
      const want = shard.members.get(l.id)!.storage.store;
      for (let p = 0; p < 256; p++) assert.deepEqual(shard.members.get(b)!.storage.store.getPage(p), want.getPage(p), `page ${p}`);
    });

    it("cuts the records it holds where its log is cut: it applies the new leader's records at those LSNs, not the deposed leader's", async () => {
      shard = new TestShard(['a', 'b', 'c', 'd', 'e']);
      const old = await shard.leader();
      const w0 = await old.replica.write([{ page: 1, data: page(1) }]);
      await shard.waitFor(() => [...shard!.members.values()].every((m) => m.replica.appliedLsn >= w0.lsn), 'every replica applies the first write');
      const [b, ...others] = shard.ids.filter((id) => id !== old.id) as [string, ...string[]];
      // The old leader's next record reaches b alone, and b's answer is lost: it never commits.
      for (const o of others) shard.cutLink(old.id, o);
      shard.cutFrom(b, old.id);
      // (Page 3: no other write has it, so a record applied that should not have been shows.)
      const lost = old.replica.write([{ page: 3, data: page(50) }]).catch(() => undefined);
      await shard.waitFor(() => statsOf(b).lastLsn > w0.lsn, 'b appends the record that will not commit');
      assert.ok(statsOf(b).heldRecords >= 1, 'b holds it');
      // The others elect a leader without it (b, whose log is ahead of theirs, is kept away meanwhile).
      shard.isolate([old.id]);
      shard.isolate([b]);
      const x = await shard.leader(others);
      const y = await x.replica.write([{ page: 1, data: page(60) }]);
      const z = await x.replica.write([{ page: 2, data: page(61) }]);
      await lost;
      for (const o of others) shard.healLink(b, o);
      await shard.waitFor(() => statsOf(b).appliedLsn >= z.lsn, 'b takes the new leader\'s records and applies them');
      assert.ok(y.lsn > w0.lsn, 'the new leader wrote over the LSN b held');
      const store = shard.members.get(b)!.storage.store;
      assert.deepEqual(store.getPage(1), page(60));
      assert.deepEqual(store.getPage(2), page(61));
      assert.deepEqual(store.getPage(3), new Uint8Array(4096), "the deposed leader's record was not applied");
    });

    it('drops what it holds when it installs an image: it then follows from the image, and applies the records after it', async () => {
      shard = new TestShard(['a', 'b', 'c'], { ...steady, checkpointEveryRecords: 10 });
      const l = await shard.leader();
      const b = shard.ids.find((id) => id !== l.id)!;
      // b is told nothing commits (it holds what it appends), then is cut off while the leader
      // writes on, checkpoints and trims its log: b needs the leader's image.
      let stalled = true;
      shard.tampers.push((_from, to, msg) => {
        if (stalled && to === b && msg.type === 'append') msg.commitLsn = 0;
      });
      for (let i = 0; i < 5; i++) await l.replica.write([{ page: i, data: page(i + 1) }]);
      await shard.waitFor(() => statsOf(b).lastLsn >= l.replica.stats().lastLsn, 'b appends them');
      assert.ok(statsOf(b).heldRecords >= 5, `b holds ${statsOf(b).heldRecords} records`);
      shard.isolate([b]);
      for (let i = 5; i < 60; i++) await l.replica.write([{ page: i, data: page(i + 1) }]);
      await shard.waitFor(() => l.storage.log.firstLsn > statsOf(b).lastLsn + 1, 'the leader trims past what b has');
      stalled = false;
      shard.heal();
      const w = await l.replica.write([{ page: 200, data: page(9) }]);
      await shard.waitFor(() => statsOf(b).snapshotsInstalled >= 1 && statsOf(b).appliedLsn >= w.lsn, 'b installs the image and applies what follows it', 10_000);
      await shard.waitFor(() => statsOf(b).heldRecords === 0, 'b lets go of what it applied');
      const store = shard.members.get(b)!.storage.store;
      for (let i = 0; i < 60; i++) assert.deepEqual(store.getPage(i), page(i + 1), `page ${i}`);
      assert.deepEqual(store.getPage(200), page(9));
    });
  });

  describe('whose checkpoints fail', function () {
    it('tries again after as many records again, not at every record', async () => {
      shard = new TestShard(['a'], { checkpointEveryRecords: 20 });
      const l = await shard.leader();
      // Every image write fails (a full disk, for the images only).
      l.disk.failWrite({ path: 'shard/image-', times: 1_000_000, errno: 'ENOSPC' });
      let attempts = 0;
      const open = l.disk.open.bind(l.disk);
      l.disk.open = (path, opts) => {
        if (path.endsWith('.img.tmp')) attempts++;
        return open(path, opts);
      };
      for (let i = 0; i < 100; i++) await l.replica.write([{ page: i % 256, data: page(i) }]);
      await shard.waitFor(() => attempts >= 4, 'the checkpoints tried');
      assert.ok(attempts <= 6, `${attempts} checkpoints tried for 100 records, one per 20 expected`);
      assert.equal(l.replica.stats().checkpoints, 0);
      await shard.waitFor(() => l.replica.stats().checkpointFailures === attempts, 'every failed checkpoint counted');
    });

    it('are counted and told to the host once when they start failing and once when one succeeds again', async () => {
      shard = new TestShard(['a'], { checkpointEveryRecords: 10 });
      const l = await shard.leader();
      l.disk.failWrite({ path: 'shard/image-', times: 1_000_000, errno: 'ENOSPC' });
      for (let i = 0; i < 35; i++) await l.replica.write([{ page: i % 256, data: page(i) }]);
      await shard.waitFor(() => l.replica.stats().checkpointFailures === 3, 'three checkpoints failed');
      assert.equal(shard.checkpointsFailing.length, 1, 'told once while they fail');
      const first = shard.checkpointsFailing[0]!;
      assert.equal(first.failures, 1);
      assert.ok(first.err instanceof StorageError && first.err.code === 'io_error' && first.err.message.includes('ENOSPC'), `the first failure's error: ${String(first.err)}`);
      // An explicit checkpoint fails too, and is counted, not told again.
      await assert.rejects(l.replica.checkpoint(), (e: StorageError) => e.code === 'io_error');
      assert.equal(l.replica.stats().checkpointFailures, 4);
      assert.equal(shard.checkpointsFailing.length, 1);
      l.disk.clearFaults();
      await l.replica.checkpoint();
      assert.deepEqual(shard.checkpointsFailing.slice(1), [{ id: 'a', failures: 4 }], 'the success after four failures');
      assert.equal(l.replica.stats().checkpoints, 1);
      // Failing again is a new run, told again.
      l.disk.failWrite({ path: 'shard/image-', times: 1, errno: 'EIO' });
      await l.replica.write([{ page: 1, data: page(1) }]);
      await assert.rejects(l.replica.checkpoint());
      assert.equal(shard.checkpointsFailing.length, 3);
      assert.equal(shard.checkpointsFailing[2]!.failures, 1);
      assert.equal(l.replica.stats().checkpointFailures, 5);
    });
  });

  describe('records applied while a checkpoint is built', function () {
    it('count toward the next checkpoint, which starts once the image is done if they are enough, with no later record', async () => {
      shard = new TestShard(['a'], { checkpointEveryRecords: 8, asyncFlush: true });
      const l = await shard.leader();
      // The eighth record applied starts a checkpoint; ten more come while its image is built.
      for (let i = 0; i < 8; i++) await l.replica.write([{ page: i, data: page(i) }]);
      const more = await Promise.all(Array.from({ length: 10 }, (_, i) => l.replica.write([{ page: 8 + i, data: page(8 + i) }])));
      const last = Math.max(...more.map((w) => w.lsn));
      await shard.waitFor(() => l.replica.stats().checkpoints >= 2 && l.storage.store.stats().imageLsn >= last, 'a second image, with every record');
    });
  });

  it('a read from disk comes with the checksum its pages were checked against: a page changed after its check fails it', async () => {
    shard = new TestShard(['a']);
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(11) }]);
    await l.replica.checkpoint();
    await l.replica.write([{ page: 3, data: page(33) }]);
    const store = l.storage.store as unknown as { cache: { dropBelow(lsn: number): number } };
    const read = async (): Promise<{ pages: Uint8Array[]; crc: number }> => {
      store.cache.dropBelow(Number.MAX_SAFE_INTEGER);
      const misses = l.storage.store.stats().cache.misses;
      const r = await l.replica.read([1, 3, 4], { deadlineMs: Date.now() + 1000, nowMs: Date.now() });
      assert.equal(l.storage.store.stats().cache.misses - misses, 3, 'pages 1 and 4 looked up in the image (4 is not in it: zeros), 3 in the log');
      return r;
    };
    const r = await read();
    assert.deepEqual(r.pages, [page(11), page(33), new Uint8Array(4096)]);
    assert.equal(r.crc, pageDataCrc(r.pages));
    // One bit of each page read from the image changes after the image's check of it.
    const readPages = ImageReader.prototype.readPages;
    ImageReader.prototype.readPages = function (this: ImageReader, ...args: Parameters<ImageReader['readPages']>): boolean[] {
      const found = readPages.apply(this, args);
      args[1].forEach((out, i) => found[i] && (out[9] ^= 0x20));
      return found;
    };
    try {
      const changed = await read();
      assert.notDeepEqual(changed.pages[0], page(11));
      assert.deepEqual(changed.pages.slice(1), r.pages.slice(1), 'only the page the image holds');
      assert.notEqual(changed.crc, pageDataCrc(changed.pages), 'its reader refuses the reply');
      assert.equal(changed.crc, pageDataCrc(r.pages), 'the pages\' as stored');
    } finally {
      ImageReader.prototype.readPages = readPages;
    }
  });

  describe('on a disk that flushes off the thread', function () {
    it("a checkpoint waits for each of its image's flushes between its steps; the image reads right", async () => {
      shard = new TestShard(['a'], { asyncFlush: true });
      const l = await shard.leader();
      for (let i = 0; i < 300; i++) await l.replica.write([{ page: i % 256, data: page(i) }]);
      const { lsn } = await l.replica.checkpoint();
      assert.equal(lsn, l.replica.appliedLsn);
      assert.equal(l.storage.store.stats().imageLsn, lsn);
      const r = await shard.restart('a');
      await shard.leader();
      const got = await r.replica.read([0, 43, 255], { deadlineMs: Date.now() + 1000, nowMs: Date.now() });
      assert.deepEqual(got.pages, [page(256), page(43), page(255)]);
    });
  });

  describe('a write retried after its leader stepped down (shard.write earlier)', function () {
    /**
     * A write the leader put in its log but could not commit: the followers' answers never reach
     * it (and with `reachFollowers` false, neither do its appends). It steps down and names the
     * record; the followers elect a new leader.
     */
    async function deposedWrite(reachFollowers: boolean, opts: ConstructorParameters<typeof TestShard>[1] = {}) {
      shard = new TestShard(['a', 'b', 'c'], opts);
      const old = await shard.leader();
      await old.replica.write([{ page: 5, data: page(1) }]);
      const followers = shard.ids.filter((id) => id !== old.id);
      for (const f of followers) shard.cutFrom(f, old.id);
      if (!reachFollowers) for (const f of followers) shard.cutFrom(old.id, f);
      const err = await old.replica.write([{ page: 5, data: page(0xa) }]).then(
        () => assert.fail('a leader that hears from no follower cannot commit'),
        (e: ProtocolError) => e,
      );
      assert.equal(err.code, 'not_leader');
      assert.match(err.message, /may or may not be committed \(its record: lsn \d+, term \d+\)/);
      const record = { lsn: err.details?.['recordLsn'] as number, term: err.details?.['recordTerm'] as number };
      assert.ok(Number.isSafeInteger(record.lsn) && Number.isSafeInteger(record.term), JSON.stringify(err.details));
      const neu = await shard.leader(followers);
      return { old, neu, record };
    }

    const at = (m: Member, p: number) => m.replica.read([p], { deadlineMs: Date.now() + 1000, nowMs: Date.now() }).then((r) => r.pages[0]);

    it('the new leader holds the earlier record: it answers with it and does not write the pages over a newer write', async () => {
      const { neu, record } = await deposedWrite(true);
      assert.equal(neu.replica.currentTerm > record.term, true);
      // The earlier attempt committed with the new leader's term; another writer then wrote the page.
      assert.deepEqual(await at(neu, 5), page(0xa));
      const newer = await neu.replica.write([{ page: 5, data: page(0xb) }]);
      const lastBefore = neu.replica.stats().lastLsn;
      const r = await neu.replica.write([{ page: 5, data: page(0xa) }], { earlier: [{ lsn: record.lsn + 1000, term: record.term }, record] });
      assert.equal(r.lsn, record.lsn, 'answered with the earlier attempt\'s record');
      assert.ok(r.lsn < newer.lsn);
      assert.equal(neu.replica.stats().lastLsn, lastBefore, 'nothing written');
      assert.equal(neu.replica.stats().retriesMatched, 1);
      assert.deepEqual(await at(neu, 5), page(0xb), 'the newer write stays');
    });

    it('the new leader does not hold it: the pages are written once its own term has started', async () => {
      const { neu, record } = await deposedWrite(false);
      const r = await neu.replica.write([{ page: 5, data: page(0xa) }], { earlier: [record] });
      assert.notEqual(neu.replica.stats().retriesMatched, 1);
      assert.ok(r.lsn > 0 && neu.replica.stats().lastLsn === r.lsn);
      assert.deepEqual(await at(neu, 5), page(0xa));
    });

    it('an earlier attempt of a newer term: this leader is deposed, nothing is written', async () => {
      shard = new TestShard(['a', 'b', 'c']);
      const l = await shard.leader();
      await l.replica.write([{ page: 5, data: page(1) }]);
      const lastBefore = l.replica.stats().lastLsn;
      const err = await l.replica.write([{ page: 5, data: page(2) }], { earlier: [{ lsn: lastBefore, term: l.replica.currentTerm + 1 }] }).then(
        () => assert.fail('written although a newer leader may hold the write'),
        (e: ProtocolError) => e,
      );
      assert.equal(err.code, 'not_leader');
      assert.equal(err.details?.['recordLsn'], undefined, 'nothing of this attempt is in the log');
      assert.equal(l.replica.stats().lastLsn, lastBefore);
    });

    it('an earlier record already folded into an image: the outcome is unknown (timeout), nothing is written', async () => {
      const { neu, record } = await deposedWrite(true, { checkpointEveryRecords: 4 });
      for (let i = 0; i < 40; i++) await neu.replica.write([{ page: 20 + (i % 8), data: page(i) }]);
      await shard!.waitFor(() => neu.storage.log.firstLsn > record.lsn + 1, 'the log trimmed past the earlier record');
      const lastBefore = neu.replica.stats().lastLsn;
      const err = await neu.replica.write([{ page: 5, data: page(0xa) }], { earlier: [record] }).then(
        () => assert.fail('answered although the earlier record\'s term is forgotten'),
        (e: ProtocolError) => e,
      );
      assert.equal(err.code, 'timeout');
      assert.match(err.message, /below the log's first LSN .*may or may not be committed/);
      assert.equal(neu.replica.stats().lastLsn, lastBefore);
    });
  });

  describe('a write sent again with its write id (shard.write writeId, sentMs)', function () {
    const id = (n: number): Uint8Array => new Uint8Array(16).fill(n);
    /**
     * A try sent again just now, from a client whose clock is WRITE_SENT_SKEW_MS ahead of the
     * replicas' (which start at 0 in these tests): the latest a try can say it was first sent.
     */
    const justNow = -WRITE_SENT_SKEW_MS;
    const at = (m: Member, p: number) => m.replica.read([p], { deadlineMs: Date.now() + 1000, nowMs: Date.now() }).then((r) => r.pages[0]);

    it('the leader that has it answers a try with its record, writing nothing; a newer write of the page stays', async () => {
      shard = new TestShard(['a', 'b', 'c']);
      const l = await shard.leader();
      const first = await l.replica.write([{ page: 5, data: page(1) }], { writeId: id(1) });
      await l.replica.write([{ page: 5, data: page(2) }]);
      const zeros = await l.replica.zero({ first: 8, count: 4 }, { writeId: id(2) });
      const last = l.replica.stats().lastLsn;
      assert.equal((await l.replica.write([{ page: 5, data: page(1) }], { writeId: id(1), sentAgoMs: justNow })).lsn, first.lsn);
      // A first try that comes late (after a try sent again) is answered the same way.
      assert.equal((await l.replica.write([{ page: 5, data: page(1) }], { writeId: id(1) })).lsn, first.lsn);
      assert.equal((await l.replica.zero({ first: 8, count: 4 }, { writeId: id(2), sentAgoMs: justNow })).lsn, zeros.lsn);
      assert.equal(l.replica.stats().lastLsn, last, 'nothing written');
      assert.equal(l.replica.stats().retriesMatched, 3);
      assert.deepEqual(await at(l, 5), page(2), 'the newer write stays');
    });

    it('two tries of one write at the same leader at once make one record', async () => {
      shard = new TestShard(['a', 'b', 'c']);
      const l = await shard.leader();
      const last = l.replica.stats().lastLsn;
      const tries = await Promise.all([
        l.replica.write([{ page: 7, data: page(7) }], { writeId: id(3) }),
        l.replica.write([{ page: 7, data: page(7) }], { writeId: id(3), sentAgoMs: justNow }),
        l.replica.write([{ page: 7, data: page(7) }], { writeId: id(3), sentAgoMs: justNow }),
      ]);
      assert.deepEqual(tries.map((t) => t.lsn), [last + 1, last + 1, last + 1]);
      assert.equal(l.replica.stats().lastLsn, last + 1);
    });

    /**
     * A write its leader put in its log and sent to its followers, whose answers never reach it
     * (it never answers the client, as if frozen); the followers elect a new leader. With
     * `reachFollowers` false its appends do not reach them either.
     */
    async function unanswered(reachFollowers: boolean) {
      shard = new TestShard(['a', 'b', 'c']);
      const old = await shard.leader();
      await old.replica.write([{ page: 5, data: page(1) }]);
      const followers = shard.ids.filter((x) => x !== old.id);
      for (const f of followers) shard.cutFrom(f, old.id);
      if (!reachFollowers) for (const f of followers) shard.cutFrom(old.id, f);
      const lastBefore = old.replica.stats().lastLsn;
      const never = old.replica.write([{ page: 5, data: page(0xa) }], { writeId: id(4) }).then(() => assert.fail('answered without its followers'), (e: ProtocolError) => e);
      if (reachFollowers) {
        await shard.waitFor(() => followers.every((f) => shard!.members.get(f)!.replica.stats().lastLsn > lastBefore), 'the record reaches the followers');
      }
      const neu = await shard.leader(followers);
      return { old, neu, never, recordLsn: lastBefore + 1 };
    }

    it('its leader never answered, the record reached the next: the next leader answers a try with that record', async () => {
      const { neu, never, recordLsn } = await unanswered(true);
      const last = (await neu.replica.write([{ page: 6, data: page(6) }])).lsn;
      const r = await neu.replica.write([{ page: 5, data: page(0xa) }], { writeId: id(4), sentAgoMs: justNow });
      assert.equal(r.lsn, recordLsn, 'the first try\'s record');
      assert.equal(neu.replica.stats().lastLsn, last, 'nothing written');
      assert.equal(neu.replica.stats().retriesMatched, 1);
      assert.deepEqual(await at(neu, 5), page(0xa));
      assert.equal((await never).code, 'not_leader');
    });

    it('its leader never answered, the record did not reach the next: written once, after the next leader\'s term started', async () => {
      const { neu, recordLsn } = await unanswered(false);
      const r = await neu.replica.write([{ page: 5, data: page(0xa) }], { writeId: id(4), sentAgoMs: justNow });
      assert.equal(neu.replica.stats().retriesMatched, 0);
      assert.equal(r.lsn, neu.replica.stats().lastLsn);
      assert.ok(r.lsn > recordLsn, 'after the new term\'s first record');
      assert.deepEqual(await at(neu, 5), page(0xa));
      // A try after that one finds the new record.
      assert.equal((await neu.replica.write([{ page: 5, data: page(0xa) }], { writeId: id(4), sentAgoMs: justNow })).lsn, r.lsn);
    });

    it('a leader restarted since the first try reads the ids of its log back: a try is answered with its record; one of a write its log never held is written', async () => {
      shard = new TestShard(['a']);
      const l = await shard.leader();
      const first = await l.replica.write([{ page: 5, data: page(1) }], { writeId: id(5) });
      const zeros = await l.replica.zero({ first: 8, count: 4 }, { writeId: id(2) });
      const r = await shard.restart(l.id);
      await shard.leader();
      const last = r.replica.stats().lastLsn;
      assert.equal((await r.replica.write([{ page: 5, data: page(1) }], { writeId: id(5), sentAgoMs: 3000 })).lsn, first.lsn);
      assert.equal((await r.replica.zero({ first: 8, count: 4 }, { writeId: id(2), sentAgoMs: 3000 })).lsn, zeros.lsn);
      assert.equal(r.replica.stats().lastLsn, last, 'nothing written');
      assert.equal(r.replica.stats().retriesMatched, 2);
      // Its log still starts at LSN 1: it holds every record it ever had, and so every id.
      assert.equal((await r.replica.write([{ page: 6, data: page(6) }], { writeId: id(6), sentAgoMs: 3000 })).lsn, last + 1);
      assert.equal(r.replica.stats().retriesUnknown, 0);
      assert.deepEqual([r.replica.stats().writeIdsHeld, r.replica.stats().writeIdsKnownMs], [3, WRITE_ID_KEEP_MS], 'every id, ever (shown as the longest an id is kept)');
    });

    it('a leader that cannot know every id since the first try (its log held more than it reads back at open) answers timeout, outcomeUnknown, and writes nothing; a first try is written', async () => {
      shard = new TestShard(['a'], { writeIdsKept: 1 });
      const l = await shard.leader();
      await l.replica.write([{ page: 5, data: page(1) }], { writeId: id(5) });
      const kept = await l.replica.write([{ page: 7, data: page(7) }], { writeId: id(7) });
      const r = await shard.restart(l.id);
      await shard.leader();
      const last = r.replica.stats().lastLsn;
      const err = await r.replica.write([{ page: 5, data: page(1) }], { writeId: id(5), sentAgoMs: 3000 }).then(
        () => assert.fail('written again although its record may be in the log'),
        (e: ProtocolError) => e,
      );
      assert.equal(err.code, 'timeout');
      assert.equal(err.details?.['outcomeUnknown'], true);
      assert.match(err.message, /first sent 3000 ms ago, and its leader knows the write ids of its log for the last \d+ ms only .*may or may not be committed$/);
      assert.equal(r.replica.stats().lastLsn, last, 'nothing written');
      assert.equal(r.replica.stats().retriesUnknown, 1);
      assert.equal(r.replica.stats().writeIdsHeld, 1);
      assert.ok(r.replica.stats().writeIdsKnownMs < 3000, 'known since the restart only, not since the first try');
      // The newest id it read back: answered with its record.
      assert.equal((await r.replica.write([{ page: 7, data: page(7) }], { writeId: id(7), sentAgoMs: 3000 })).lsn, kept.lsn);
      // A first try has nothing to be told apart from: written.
      assert.equal((await r.replica.write([{ page: 6, data: page(6) }], { writeId: id(6) })).lsn, last + 1);
      // A try sent again after the restart, and the id noted since: answered with it.
      assert.equal((await r.replica.write([{ page: 6, data: page(6) }], { writeId: id(6), sentAgoMs: justNow })).lsn, last + 1);
    });

    it('a leader short of space that cannot know every id since the first try answers outcomeUnknown, not no_space (which would say it was not done)', async () => {
      shard = new TestShard(['a'], { writeIdsKept: 1 });
      const l = await shard.leader();
      await l.replica.write([{ page: 5, data: page(1) }], { writeId: id(5) });
      await l.replica.write([{ page: 7, data: page(7) }], { writeId: id(7) });
      const r = await shard.restart(l.id);
      await shard.leader();
      // Under its reserve of 5 MiB: page writes are refused no_space.
      saysFree(r, () => 1024 * 1024);
      r.queue.forgetSpace();
      await assert.rejects(r.replica.write([{ page: 6, data: page(6) }], { writeId: id(6) }), (e: StorageError) => e.code === 'no_space');
      const err = await r.replica.write([{ page: 5, data: page(1) }], { writeId: id(5), sentAgoMs: 3000 }).then(
        () => assert.fail('written again although its record may be in the log'),
        (e: ProtocolError) => e,
      );
      assert.equal(err.code, 'timeout');
      assert.equal(err.details?.['outcomeUnknown'], true);
      // The newest id it read back: answered with its record, short of space or not.
      assert.ok((await r.replica.write([{ page: 7, data: page(7) }], { writeId: id(7), sentAgoMs: 3000 })).lsn > 0);
    });

    it('a leader restarted after a checkpoint trimmed its log knows every id since the checkpoint: a try first sent before it is answered outcomeUnknown, one sent after is written', async () => {
      // The checkpoint pointers say they were written a minute before they were.
      shard = new TestShard(['a'], { checkpointEveryRecords: 4, wallClock: () => Date.now() - 60_000 });
      const l = await shard.leader();
      for (let i = 0; i < 40; i++) await l.replica.write([{ page: 20 + (i % 8), data: page(i) }]);
      await shard.waitFor(() => l.storage.log.firstLsn > 1, 'the log trimmed behind an image');
      const r = await shard.restart(l.id);
      await shard.leader();
      assert.ok(r.storage.log.firstLsn > 1);
      const last = r.replica.stats().lastLsn;
      const err = await r.replica.write([{ page: 5, data: page(1) }], { writeId: id(8), sentAgoMs: 70_000 }).then(
        () => assert.fail('written although a record of it may have been folded into the image'),
        (e: ProtocolError) => e,
      );
      assert.equal(err.details?.['outcomeUnknown'], true);
      assert.ok((err.details?.['writeIdsKnownMs'] as number) >= 60_000, JSON.stringify(err.details));
      assert.equal(r.replica.stats().lastLsn, last, 'nothing written');
      assert.equal((await r.replica.write([{ page: 5, data: page(1) }], { writeId: id(9), sentAgoMs: 3000 })).lsn, last + 1);
    });
  });

  /** Three replicas; `count` one-page writes (page i holds i + 1) applied by a follower `f`. */
  async function writtenEverywhere(count: number, opts: ConstructorParameters<typeof TestShard>[1] = {}) {
    shard = new TestShard(['a', 'b', 'c'], opts);
    const l = await shard.leader();
    let last = 0;
    for (let i = 0; i < count; i++) last = (await l.replica.write([{ page: i, data: page(i + 1) }])).lsn;
    const f = shard.ids.find((id) => id !== l.id)!;
    await shard.waitFor(() => shard!.members.get(f)!.replica.appliedLsn >= last, 'the follower applies everything');
    return { l, f, last };
  }

  describe('a follower whose log or images rotted', function () {
    /** Three replicas, 40 writes everywhere; then a follower crashes (its disk is returned). */
    async function crashedFollower(opts: ConstructorParameters<typeof TestShard>[1] = {}) {
      const { l, f, last } = await writtenEverywhere(40, opts);
      return { l, f, disk: await shard!.crash(f), last };
    }

    /** As crashedFollower, and a record in the middle of the follower's log rots. */
    async function rotted() {
      const { l, f, disk, last } = await crashedFollower();
      const segments = disk.list('shard/log').filter((n) => n.endsWith('.log')).sort();
      assert.ok(segments.length >= 2, `several segments (${segments.length})`);
      disk.flipBits(`shard/log/${segments[0]}`, 20_000, 1);
      return { l, f, disk, last };
    }

    it('repairs its log at open and votes for no one, nor campaigns, until it holds the lost records again', async () => {
      const { f, disk, last } = await rotted();
      for (const id of shard!.ids) if (id !== f) shard!.cutLink(f, id);
      const m = shard!.start(f, disk);
      assert.equal(m.storage.repaired.length, 1, 'the damage is reported');
      assert.deepEqual(m.storage.log.corruption, []);
      assert.ok(m.storage.log.lastLsn < last, 'the damaged records and those after them are gone');
      assert.equal(m.replica.stats().repairing, true);
      // Cut off, past its quiet time and several election timeouts (of the replicas' clock, which
      // a loaded machine may move slower than real time): no prevote, and no vote even for a
      // candidate far ahead.
      await shard!.elapse(400);
      assert.equal(m.replica.stats().preVotes, 0, 'a replica that lost records does not campaign');
      const other = shard!.ids.find((id) => id !== f)!;
      const ahead = { candidate: other, lastLsn: 1_000_000, lastTerm: 1_000_000 };
      const pre = (await m.replica.handle({ type: 'prevote', term: m.replica.currentTerm + 1, ...ahead })) as { granted: boolean };
      assert.equal(pre.granted, false, 'no prevote granted');
      const vote = (await m.replica.handle({ type: 'vote', term: m.replica.currentTerm + 1, ...ahead })) as { granted: boolean };
      assert.equal(vote.granted, false, 'no vote granted');
      // Asked for its term by a replica whose storage was lost, it does not give its last LSN: it
      // may have held committed records it lost (counted as holding records).
      const probe = (await m.replica.handle({ type: 'prevote', term: 0, candidate: other, lastLsn: 0, lastTerm: 0 }));
      assert.deepEqual(probe, { term: m.replica.currentTerm, granted: false, members: ['a', 'b', 'c'] });
    });

    it('with every image of a follower damaged it starts over from nothing, and is sent the leader\'s image and records', async () => {
      const { f, disk, last } = await crashedFollower({ checkpointEveryRecords: 8 });
      const images = disk.list('shard').filter((n) => n.startsWith('image-'));
      assert.ok(images.length >= 1, 'the follower has images');
      for (const name of images) disk.flipBits(`shard/${name}`, 3, 1);
      const m = shard!.start(f, disk);
      assert.ok(m.storage.repaired.length >= 1);
      assert.equal(m.replica.stats().repairing, true);
      assert.equal(m.storage.log.lastLsn, 0);
      await shard!.waitFor(() => m.replica.appliedLsn >= last && !m.replica.stats().repairing, 'the follower holds everything again', 10_000);
      for (let i = 0; i < 40; i++) assert.deepEqual(m.storage.store.getPage(i), page(i + 1), `page ${i}`);
    });

    it('the leader sends it the lost records again; repaired, it votes, and the shard survives the loss of the leader', async () => {
      const { l, f, disk, last } = await rotted();
      const m = shard!.start(f, disk);
      assert.equal(m.replica.stats().repairing, true);
      await shard!.waitFor(() => m.replica.appliedLsn >= last && !m.replica.stats().repairing, 'the follower holds everything again', 10_000);
      for (let i = 0; i < 40; i++) assert.deepEqual(m.storage.store.getPage(i), page(i + 1), `page ${i}`);
      // The repair is durable: reopened, it does not start over.
      const again = await shard!.restart(f);
      assert.equal(again.replica.stats().repairing, false);
      assert.equal(again.storage.repaired.length, 0);
      // Without the old leader, the two others elect one: the repaired follower votes.
      await shard!.crash(l.id);
      const neu = await shard!.leader(shard!.ids.filter((id) => id !== l.id));
      for (let i = 0; i < 40; i += 7) assert.deepEqual((await neu.replica.read([i], { deadlineMs: Date.now() + 1000, nowMs: Date.now() })).pages[0], page(i + 1));
    });
  });

  describe('a follower whose storage was lost (a wiped or replaced disk)', function () {
    /** Three replicas, 20 writes everywhere; then a follower crashes and its disk is gone. */
    async function wiped(opts: ConstructorParameters<typeof TestShard>[1] = {}) {
      const { l, f, last } = await writtenEverywhere(20, opts);
      const other = shard!.ids.find((id) => id !== l.id && id !== f)!;
      await shard!.crash(f);
      return { l, f, other, last, term: l.replica.currentTerm };
    }

    it('opens marked, votes in no term it may have voted in, learns its peers\' terms, and is given everything back', async () => {
      const { l, f, other, last, term } = await wiped();
      for (const id of shard!.ids) if (id !== f) shard!.cutLink(f, id);
      const m = shard!.start(f, new SimDisk(), { existing: true });
      assert.equal(m.storage.storageLost, true);
      assert.deepEqual(m.storage.load(), { term: 0, votedFor: null, repairTerm: 0, lost: true }, 'marked before anything else');
      assert.equal(m.replica.stats().repairing, true);
      // Cut off, past its quiet time: it heard from no leader, yet grants nothing in the term it
      // voted in before it lost its disk (as a new replica would), and does not campaign.
      await shard!.elapse(400);
      const ahead = { candidate: other, lastLsn: 1_000_000, lastTerm: term };
      assert.equal(((await m.replica.handle({ type: 'prevote', term, ...ahead })) as { granted: boolean }).granted, false, 'no prevote granted');
      assert.equal(((await m.replica.handle({ type: 'vote', term, ...ahead })) as { granted: boolean }).granted, false, 'no vote granted');
      assert.equal(m.replica.stats().preVotes, 0, 'no campaign');
      assert.equal(m.replica.stats().repairing, true, 'its peers\' terms are still unknown');
      shard!.heal();
      await shard!.waitFor(() => m.replica.appliedLsn >= last && !m.replica.stats().repairing, 'the follower holds everything again', 10_000);
      for (let i = 0; i < 20; i++) assert.deepEqual(m.storage.store.getPage(i), page(i + 1), `page ${i}`);
      assert.equal(m.replica.currentTerm, term);
      // Reopened and cut off again, past its quiet time: still no vote in that term (it may have
      // given it before), and the mark is gone durably.
      const again = await shard!.restart(f);
      assert.equal(again.storage.storageLost, false);
      assert.equal(again.replica.stats().repairing, false);
      for (const id of shard!.ids) if (id !== f) shard!.cutLink(f, id);
      await shard!.elapse(400);
      const vote = (await again.replica.handle({ type: 'vote', term, ...ahead })) as { granted: boolean; term: number };
      assert.deepEqual(vote, { term, granted: false }, 'no second vote in the term it took from its peers');
      shard!.heal();
      // Without the old leader, the two others elect one: the repaired follower votes.
      await shard!.crash(l.id);
      const neu = await shard!.leader([f, other]);
      assert.ok(neu.replica.currentTerm > term);
      for (let i = 0; i < 20; i += 3) assert.deepEqual((await neu.replica.read([i], { deadlineMs: Date.now() + 1000, nowMs: Date.now() })).pages[0], page(i + 1));
    });

    it('a new shard its operator says is new (newIfMajorityEmpty): two of three replicas, every storage absent, elect without the third; without the flag they wait for it', async () => {
      for (const newCluster of [false, true]) {
        shard = new TestShard(['a', 'b', 'c']);
        // Every replica opened as one that existed, as a controller node opens the catalog
        // shard's: c never starts.
        for (const id of shard.ids) await shard.crash(id);
        shard.start('a', new SimDisk(), { existing: true, newCluster });
        shard.start('b', new SimDisk(), { existing: true, newCluster });
        if (!newCluster) {
          await shard.elapse(1500);
          assert.deepEqual(shard.leaders(), [], 'no leader while c has not answered');
          assert.deepEqual(shard.members.get('a')!.replica.stats().awaitingTerms, ['c']);
        } else {
          const l = await shard.leader(['a', 'b']);
          const w = await l.replica.write([{ page: 0, data: page(7) }]);
          assert.ok(w.lsn > 0);
        }
        await shard.stop();
        shard = undefined;
      }
    });

    it('the flag does not make a replica new where a peer holds the shard: it waits for every peer, and is given the shard back', async () => {
      const { l, f, other, last } = await wiped();
      // The other follower is down too: only the leader answers, and it holds records.
      const otherDisk = await shard!.crash(other);
      const m = shard!.start(f, new SimDisk(), { existing: true, newCluster: true });
      await shard!.elapse(1500);
      assert.deepEqual(m.replica.stats().awaitingTerms, [other], 'still waiting for the peer that is down');
      assert.equal(m.replica.stats().repairing, true);
      shard!.start(other, otherDisk);
      await shard!.waitFor(() => m.replica.appliedLsn >= last && !m.replica.stats().repairing, 'given everything back', 10_000);
      assert.ok(l.replica.isLeader || shard!.leaders().length === 1);
    });

    it('with a peer that does not answer, it does not vote: records it alone acknowledged with the leader are not lost', async () => {
      shard = new TestShard(['a', 'b', 'c']);
      const l = await shard.leader();
      const [f, behind] = shard.ids.filter((id) => id !== l.id) as [string, string];
      await shard.waitFor(() => shard!.members.get(behind)!.replica.currentTerm === l.replica.currentTerm, 'both followers follow');
      // `behind` misses the writes: they are committed by the leader and `f` alone.
      shard.isolate([behind]);
      let last = 0;
      for (let i = 0; i < 20; i++) last = (await l.replica.write([{ page: i, data: page(i + 1) }])).lsn;
      await shard.waitFor(() => shard!.members.get(f)!.replica.appliedLsn >= last, 'f applies everything');
      await shard.crash(f);
      const leaderDisk = await shard.crash(l.id);
      shard.heal();
      const m = shard.start(f, new SimDisk(), { existing: true });
      // `behind` and the wiped `f` are a majority, but `f` knows nothing of the old leader's term
      // and records: it does not vote, so no leader without the writes is elected.
      await shard.elapse(1000);
      assert.deepEqual(shard.leaders().map((x) => x.id), [], 'no leader while the old leader is down');
      assert.equal(m.replica.stats().repairing, true);
      assert.ok(shard.members.get(behind)!.replica.stats().preVotes > 0, 'the other follower did campaign');
      // The old leader comes back: a leader with the writes is elected, and `f` is repaired.
      shard.start(l.id, leaderDisk);
      const neu = await shard.leader();
      for (let i = 0; i < 20; i++) assert.deepEqual((await neu.replica.read([i], { deadlineMs: Date.now() + 1000, nowMs: Date.now() })).pages[0], page(i + 1), `page ${i}`);
      await shard.waitFor(() => m.replica.appliedLsn >= last && !m.replica.stats().repairing, 'f is repaired', 10_000);
    });

    it('a replica marked lost whose peers never campaigned is a new replica (a reconciliation before the create\'s open)', async () => {
      shard = new TestShard(['a', 'b', 'c'], { manualClock: true });
      await shard.crash('c');
      const m = shard.start('c', new SimDisk(), { existing: true });
      assert.equal(m.replica.stats().repairing, true);
      // Only c is ticked: it asks a and b, which never campaigned.
      await shard.at(1, ['c']);
      assert.equal(m.replica.stats().repairing, false, 'a new replica after all');
      await shard.waitFor(() => m.storage.load()?.lost === undefined, 'the mark is gone durably');
      assert.deepEqual(m.storage.load(), { term: 0, votedFor: null });
      const vote = (await m.replica.handle({ type: 'vote', term: 1, candidate: 'a', lastLsn: 0, lastTerm: 0 })) as { granted: boolean };
      assert.equal(vote.granted, true, 'it votes at once, as a new replica does');
    });

    it('while its peers\' terms are unknown it acknowledges no leader: a stale leader does not commit with it (the write would be lost)', async () => {
      const slow = { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 600, heartbeatMs: 50, rpcTimeoutMs: 1000 };
      shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { a: 0, b: 0.99, c: 0 } });
      let t = 0;
      const run = async (until: number, ids?: string[]): Promise<void> => {
        for (; t <= until; t += 10) await shard!.at(t, ids);
      };
      await run(400);
      const a = shard.members.get('a')!.replica;
      assert.equal(shard.leaders()[0]?.id, 'a');
      const w0 = await a.write([{ page: 0, data: page(1) }]);
      await run(450);
      await shard.waitFor(() => ['b', 'c'].every((id) => shard!.members.get(id)!.replica.appliedLsn >= w0.lsn), 'b and c apply');
      // a's thread stalls (no tick: it still believes it leads term 1); b votes c in at term 2.
      shard.isolate(['a']);
      await run(1500, ['b', 'c']);
      const c = shard.members.get('c')!.replica;
      assert.equal(c.isLeader, true);
      assert.equal(c.currentTerm, 2);
      await shard.waitFor(() => shard!.members.get('b')!.replica.stats().lastLsn === c.stats().lastLsn, 'b holds c\'s no-op');
      // b's disk is wiped; c is cut off; a reaches b again.
      await shard.crash('b');
      shard.heal();
      shard.isolate(['c']);
      const b = shard.start('b', new SimDisk(), { existing: true });
      await run(1600, ['b']);
      assert.equal(b.replica.stats().repairing, true, 'c has not answered: b does not know term 2');
      // The stale leader writes: b must not acknowledge it (it voted in term 2 in its former life).
      const w1 = a.write([{ page: 0, data: page(2) }]).then(() => 'committed', () => 'failed');
      await run(1700, ['b']);
      const outcome = await Promise.race([w1, new Promise((r) => setTimeout(() => r('pending'), 50))]);
      // Everyone is back: c (last term 2) is elected without a's record of term 1.
      shard.heal();
      await run(4000, ['a', 'b', 'c']);
      const l = await shard.leader();
      const r = await l.replica.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() });
      if (outcome === 'committed') assert.deepEqual(r.pages[0], page(2), `the write committed in term 1 is lost under ${l.id}'s term ${l.replica.currentTerm}`);
      assert.notEqual(outcome, 'committed', 'a stale leader committed a write with the acknowledgement of a replica that did not know its term');
    });

    it('a whole shard restarted before any vote was saved (only the first candidate saved its term) elects a leader', async () => {
      // A new volume's chosen member campaigns at once and saves term 1; the votes of the others
      // are lost (their device queues hundreds of operations deep, say) and every node stops.
      const slow = { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 600, heartbeatMs: 50, rpcTimeoutMs: 1000 };
      shard = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow });
      let lose = true;
      shard.drops.push((_f, _t, msg) => lose && msg.type === 'vote');
      await shard.at(0, ['a']);
      assert.equal(shard.members.get('a')!.replica.currentTerm, 1, 'a saved its candidacy');
      const disks = new Map<string, SimDisk>();
      for (const id of ['a', 'b', 'c']) disks.set(id, await shard.crash(id));
      lose = false;
      // Every node reopens the replicas it held: b and c find nothing saved (nothing lost either).
      for (const id of ['a', 'b', 'c']) shard.start(id, disks.get(id)!, { existing: true });
      assert.equal(shard.members.get('b')!.storage.storageLost, true);
      for (let t = 10; t <= 20_000 && shard.leaders().length === 0; t += 10) await shard.at(t);
      assert.equal(shard.leaders().length, 1, 'no leader: b and c wait to be repaired by a leader only they could elect');
    });

    it('a sole copy whose storage was lost does not lead until an operator accepts the loss', async () => {
      shard = new TestShard(['a']);
      const l = await shard.leader();
      await l.replica.write([{ page: 0, data: page(7) }]);
      await shard.crash('a');
      const m = shard.start('a', new SimDisk(), { existing: true });
      assert.equal(m.storage.storageLost, true);
      await shard.elapse(400);
      assert.equal(m.replica.isLeader, false, 'it does not serve its lost pages as never written');
      assert.equal(m.replica.stats().repairing, true);
      assert.deepEqual(await m.replica.forceVote(), { wasRepairing: true, term: 0 });
      await shard.leader();
      const r = await m.replica.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() });
      assert.deepEqual(r.pages[0], new Uint8Array(4096), 'accepted: the lost page reads as never written');
      // The acceptance is durable: reopened, it leads at once.
      const again = await shard.restart('a');
      assert.equal(again.replica.stats().repairing, false);
      await shard.leader();
    });

    it('a term-0 probe is answered with the term and last LSN; while probing, it answers 0 and refuses a leader\'s image', async () => {
      const { l, f, other, last, term } = await wiped();
      const probe = { type: 'prevote' as const, term: 0, candidate: f, lastLsn: 0, lastTerm: 0 };
      assert.deepEqual(await l.replica.handle(probe), { term, granted: false, lastLsn: last, members: ['a', 'b', 'c'] });
      for (const id of shard!.ids) if (id !== f) shard!.cutLink(f, id);
      const m = shard!.start(f, new SimDisk(), { existing: true });
      assert.deepEqual(await m.replica.handle({ ...probe, candidate: other }), { term: 0, granted: false, lastLsn: 0, members: ['a', 'b', 'c'] }, 'a lost replica holds nothing since');
      const image = { type: 'snapshot' as const, term, leader: l.id, lsn: last, lastTerm: term, bytes: IMAGE_BYTES_MIN, offset: 0, data: new Uint8Array(0), done: false };
      await assert.rejects(m.replica.handle(image), (e: ProtocolError) => e.code === 'unavailable' && /has not learned every peer's term/.test(e.message));
      assert.equal(m.replica.currentTerm, 0, 'the image\'s term is not taken either');
    });

    it('forceVote lets it vote before its peers answered (operator override)', async () => {
      const { f, other, term } = await wiped();
      for (const id of shard!.ids) if (id !== f) shard!.cutLink(f, id);
      const m = shard!.start(f, new SimDisk(), { existing: true });
      await shard!.elapse(400);
      assert.deepEqual(await m.replica.forceVote(), { wasRepairing: true, term: 0 });
      assert.equal(m.replica.stats().repairing, false);
      assert.equal(m.storage.load()!.lost, undefined, 'the mark is gone durably');
      const vote = (await m.replica.handle({ type: 'vote', term: term + 1, candidate: other, lastLsn: 1_000_000, lastTerm: term })) as { granted: boolean };
      assert.equal(vote.granted, true);
    });
  });

  describe('damage of its own storage found while it runs', function () {
    // Elections slower than the default: a pause of the test process must not move the leadership.
    const steady = { timing: { electionTimeoutMinMs: 400, electionTimeoutMaxMs: 600 } };

    /** 40 one-page writes (page i holds i + 1) with an image after 20 and after 40; returns the newest image's file. */
    async function imaged(l: Member): Promise<string> {
      for (let i = 0; i < 40; i++) {
        await l.replica.write([{ page: i, data: page(i + 1) }]);
        if (i === 19 || i === 39) await l.replica.checkpoint();
      }
      const images = l.disk.list('shard').filter((n) => /^image-[0-9a-f]+\.img$/.test(n)).sort();
      assert.equal(images.length, 2, `two images (${images.join(', ')})`);
      return `shard/${images[1]!}`;
    }
    /**
     * Flips a bit of page 0's data in an image (its offset is table entry 0's). Page 0 was written
     * before both images, so a read at the newest LSN finds it in the newest image, not in the log.
     */
    const damagePage0 = (disk: SimDisk, path: string): void => {
      const bytes = disk.fileBytes(path);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      assert.equal(Number(view.getBigUint64(40, true)), 0, 'table entry 0 is page 0');
      disk.flipBits(path, Number(view.getBigUint64(48, true)) + 100, 1);
    };
    const readAt = (m: Member, p: number) => m.replica.read([p], { deadlineMs: Date.now() + 2000, nowMs: Date.now() });

    /** Reads pages 0..39 one by one (none cached: a write does not cache its page); the failures by page. */
    async function readAll(m: Member): Promise<Map<number, ProtocolError | StorageError>> {
      const failed = new Map<number, ProtocolError | StorageError>();
      for (let p = 0; p < 40; p++) {
        try {
          assert.deepEqual((await readAt(m, p)).pages[0], page(p + 1), `page ${p}`);
        } catch (e) {
          if (e instanceof assert.AssertionError) throw e;
          failed.set(p, e as ProtocolError);
        }
      }
      return failed;
    }

    it('a leader reading a damaged image page reports it once and answers not_leader; reopened without the damaged image, it reads every page right', async () => {
      shard = new TestShard(['a', 'b', 'c'], steady);
      const l = await shard.leader();
      damagePage0(l.disk, await imaged(l));
      const failed = await readAll(l);
      assert.deepEqual([...failed.keys()], [0], 'page 0 is damaged');
      const [p, err] = [...failed][0]!;
      assert.ok(err instanceof ProtocolError && err.code === 'not_leader' && err.details?.['damaged'] === true, String(err));
      assert.deepEqual(shard.damage.map((d) => [d.id, d.err.code]), [[l.id, 'corruption']]);
      await assert.rejects(readAt(l, p), (e: ProtocolError) => e.code === 'not_leader');
      assert.equal(shard.damage.length, 1, 'reported once');

      const again = await shard.restart(l.id, { damaged: shard.damage[0]!.err.reports });
      assert.equal(again.storage.repaired.length, 1, 'reopened without the damaged image');
      assert.equal(again.replica.stats().repairing, false, 'nothing was lost: it votes');
      for (let q = 0; q < 40; q++) assert.deepEqual(again.storage.store.getPage(q), page(q + 1), `page ${q}`);
      const leader = await shard.leader();
      assert.equal((await readAll(leader)).size, 0);
    });

    it('a sole replica reports a damaged image (it may rebuild it from an older one and its log), not a damaged record of its log', async () => {
      shard = new TestShard(['a'], steady);
      const l = await shard.leader();
      damagePage0(l.disk, await imaged(l));
      assert.deepEqual([...(await readAll(l)).values()].map((e) => e.code), ['not_leader']);
      assert.deepEqual(shard.damage.map((d) => d.id), ['a']);
      // Its log: nobody could give the records back. The scrub finds a rotten record, and reports nothing.
      shard.damage.length = 0;
      for (let i = 0; i < 40; i++) await l.replica.write([{ page: 100 + i, data: page(i) }]);
      const segments = l.disk.list('shard/log').filter((n) => n.endsWith('.log')).sort();
      l.disk.flipBits(`shard/log/${segments[segments.length - 1]!}`, 20_000, 1);
      const found: ScrubStepResult[] = [];
      for (let i = 0; i < 1000 && found.length === 0; i++) {
        const r = await l.replica.scrubStep();
        if (r.damage !== undefined && r.damage.reports.every((d) => d.file.includes('/log/'))) found.push(r);
      }
      assert.deepEqual(found.map((r) => [r.damage!.code, r.reported]), [['corruption', false]]);
      assert.deepEqual(shard.damage, []);
    });

    it('a checkpoint that meets a damaged page of the image it folds reports it', async () => {
      shard = new TestShard(['a', 'b', 'c'], steady);
      const l = await shard.leader();
      damagePage0(l.disk, await imaged(l));
      await l.replica.write([{ page: 100, data: page(100) }]);
      await assert.rejects(l.replica.checkpoint(), (e: StorageError) => e.code === 'corruption');
      assert.deepEqual(shard.damage.map((d) => d.id), [l.id]);
    });

    it('a leader applying a damaged record of its log reports it, and throws nowhere', async () => {
      // 'a' draws the shortest election timeout: it leads, and leads again after its restart.
      shard = new TestShard(['a', 'b', 'c'], { ...steady, randoms: { a: 0, b: 0.99, c: 0.99 } });
      const l = await shard.leader();
      assert.equal(l.id, 'a');
      for (let i = 0; i < 40; i++) await l.replica.write([{ page: i, data: page(i + 1) }]);
      const unhandled: unknown[] = [];
      const onUnhandled = (e: unknown): void => void unhandled.push(e);
      process.on('unhandledRejection', onUnhandled);
      try {
        // Reopened without an image, it applies its records again once it leads, reading them back
        // from its log; a bit of an early one rots meanwhile.
        const m = await shard.restart('a');
        const first = m.disk.list('shard/log').filter((n) => n.endsWith('.log')).sort()[0]!;
        m.disk.flipBits(`shard/log/${first}`, 20_000, 1);
        await shard.waitFor(() => shard!.damage.length > 0, 'the damage is reported');
        assert.deepEqual(shard.damage.map((d) => [d.id, d.err.code]), [['a', 'corruption']]);
        assert.ok(m.replica.isLeader, 'it found the damage as the leader');
        await shard.elapse(100);
      } finally {
        process.off('unhandledRejection', onUnhandled);
      }
      assert.deepEqual(unhandled, [], 'the damage escaped an answer\'s handler');
    });

    it('a record damaged on the way to a follower (not the checksum the leader sent) is refused, taken whole when sent again, and not reported as damage', async () => {
      shard = new TestShard(['a', 'b', 'c'], steady);
      const l = await shard.leader();
      const fid = shard.ids.find((id) => id !== l.id)!;
      const f = shard.members.get(fid)!;
      let damaged = 0;
      shard.tampers.push((_from, to, msg) => {
        if (to === fid && msg.type === 'append' && msg.records.length > 0 && damaged === 0) {
          damaged++;
          // One bit of the page's data, in the follower's copy of the message (the checksum as sent).
          const p = msg.records[msg.records.length - 1]!.payload;
          p[p.length - 1] ^= 0x01;
        }
      });
      const w = await l.replica.write([{ page: 1, data: page(7) }]);
      assert.equal(damaged, 1, 'the write\'s append to the follower was damaged');
      // In the logs (written, not only queued) of the follower, sent again, and of the leader.
      await shard.waitFor(() => f.storage.log.lastLsn >= w.lsn && l.storage.log.lastLsn >= w.lsn, 'the follower appends the record, sent again');
      const sent = [...l.storage.log.read(w.lsn, w.lsn)][0]!;
      const kept = [...f.storage.log.read(w.lsn, w.lsn)][0]!;
      assert.deepEqual(kept.payload, sent.payload, 'the follower holds the bytes the leader wrote');
      assert.deepEqual(shard.damage, [], 'not damage of the follower\'s storage');

      // Refused outright, before anything changes: the record's checksum is not its payload's.
      const before = f.replica.stats().lastLsn;
      const payload = encodePageWrite(4096, [{ page: 2, data: page(9) }]);
      const record = { term: l.replica.stats().term, kind: RecordKind.PageWrite, payload, crc: (crc32c(payload) ^ 1) >>> 0 };
      await assert.rejects(
        f.replica.handle({ type: 'append', term: record.term, leader: l.id, prevLsn: before, prevTerm: l.replica.stats().term, records: [record], commitLsn: 0 }),
        (e: ProtocolError) => e.code === 'corruption' && e.details?.['inTransit'] === true && /records\[0\]: its data does not match the checksum/.test(e.message),
      );
      assert.equal(f.replica.stats().lastLsn, before, 'nothing appended');
    });

    it('a record damaged in the leader\'s memory after its write (every follower refuses it): the leader hands itself to its host to be opened again from its log', async () => {
      shard = new TestShard(['a', 'b', 'c'], { ...steady, onFailure: true });
      const l = await shard.leader();
      const [b, c] = shard.ids.filter((id) => id !== l.id) as [string, string];
      shard.isolate([b]);
      const w = await l.replica.write([{ page: 3, data: page(3) }]);
      // Held for b, which lacks it; a bit of it changes in the leader's memory.
      const held = (l.replica as unknown as { recent: Array<{ lsn: number; payload: Uint8Array }> }).recent.find((r) => r.lsn === w.lsn)!;
      held.payload[held.payload.length - 1] ^= 0x01;
      shard.heal();
      await shard.waitFor(() => shard!.failures.length > 0, 'the leader reports itself');
      assert.deepEqual(shard.failures.map((f) => f.id), [l.id]);
      assert.match(shard.failures[0]!.err.message, new RegExp(`record ${w.lsn} of .* held in memory no longer matches its checksum`));
      assert.equal(shard.members.get(c)!.replica.stats().lastLsn >= w.lsn, true, 'c took it before the damage');
    });

    /**
     * A write of page `p` whose pages were checked against their checksum (WriteAttempt.dataCrc)
     * and whose copy on the leader then changed (one bit); its outcome once settled.
     */
    function writeChangedAfterCheck(leader: Replica, p: number): { outcome(): unknown } {
      const changed = page(p);
      changed[100] ^= 0x01;
      let outcome: unknown;
      void leader.write([{ page: p, data: changed }], { dataCrc: crc32c(page(p)), deadlineMs: Date.now() + 60_000 }).then(
        (r) => (outcome = r),
        (e: unknown) => (outcome = e),
      );
      return { outcome: () => outcome };
    }

    it('a page changed in the leader\'s memory after its write\'s checksum was checked (WriteAttempt.dataCrc): the record\'s checksum is not its copy\'s, every follower refuses it, and it never commits', async () => {
      shard = new TestShard(['a', 'b', 'c'], { ...steady, onFailure: true });
      const l = await shard.leader();
      const before = await l.replica.write([{ page: 3, data: page(3) }], { dataCrc: crc32c(page(3)) });
      const w = writeChangedAfterCheck(l.replica, 4);
      await shard.waitFor(() => shard!.failures.length > 0, 'the leader reports itself');
      assert.deepEqual(shard.failures.map((f) => f.id), [l.id]);
      assert.match(shard.failures[0]!.err.message, new RegExp(`record ${before.lsn + 1} of .* held in memory no longer matches its checksum`));
      for (const id of shard.ids.filter((x) => x !== l.id)) {
        assert.equal(shard.members.get(id)!.storage.log.lastLsn, before.lsn, `${id} took no record of it`);
      }
      assert.equal((w.outcome() as { lsn?: number } | undefined)?.lsn, undefined, 'not answered as written');
    });

    it('on a shard of one replica, a page changed in the leader\'s memory after its write\'s checksum was checked is not applied: the leader reports itself, the write is not answered, the page is not served as changed', async () => {
      shard = new TestShard(['a'], { ...steady, onFailure: true });
      const l = await shard.leader();
      await l.replica.write([{ page: 4, data: page(1) }]);
      const w = writeChangedAfterCheck(l.replica, 4);
      await shard.waitFor(() => shard!.failures.length > 0, 'the leader reports itself');
      assert.match(shard.failures[0]!.err.message, /record \d+ held in memory no longer matches its checksum .*: not applied/);
      assert.equal((w.outcome() as { lsn?: number } | undefined)?.lsn, undefined, 'not answered as written');
      const cache = (l.replica as unknown as { store: { cache: { has(page: number, lsn: number): boolean } } }).store.cache;
      assert.equal(cache.has(4, l.replica.stats().lastLsn), false, 'not in the page cache');
    });

    it('a page changed in the leader\'s page cache is not served: the read gives the page as written, from its log, and the checksum of what it gives', async () => {
      shard = new TestShard(['a', 'b', 'c'], steady);
      const l = await shard.leader();
      await l.replica.write([{ page: 4, data: page(4) }, { page: 5, data: page(5) }]);
      const first = await l.replica.read([4, 5], { deadlineMs: Date.now() + 10_000, nowMs: Date.now() });
      assert.equal(first.crc, crc32c(Buffer.concat([page(4), page(5)])), 'from the cache, with the checksum the pages were cached with');
      const slab = (l.replica as unknown as { store: { cache: { slab: Slab } } }).store.cache.slab;
      const changed = flipInSlab(slab, page(5), 4000, 0x01);
      assert.ok(changed >= 1, 'page 5 found in the slab');
      const r = await l.replica.read([4, 5], { deadlineMs: Date.now() + 10_000, nowMs: Date.now() });
      assert.deepEqual(r.pages.map((p) => Uint8Array.from(p)), [page(4), page(5)], 'as written');
      assert.equal(r.crc, crc32c(Buffer.concat([page(4), page(5)])), 'read from disk: the checksum its pages were checked against there');
      assert.equal(l.replica.stats().cache.damaged, 1);
    });

    it('a record that arrives malformed with a valid checksum is not damage of the follower\'s storage: not reported', async () => {
      shard = new TestShard(['a', 'b', 'c'], steady);
      const l = await shard.leader();
      const f = shard.ids.find((id) => id !== l.id)!;
      let mangled = 0;
      shard.tampers.push((_from, to, msg) => {
        if (to === f && msg.type === 'append' && msg.records.length > 0 && mangled === 0) {
          mangled++;
          msg.records[0]!.payload = msg.records[0]!.payload.subarray(0, 10); // not a page write any more
        }
      });
      const w = await l.replica.write([{ page: 1, data: page(1) }]);
      await shard.waitFor(() => l.replica.stats().commitLsn >= w.lsn && mangled === 1, 'the write commits on the others');
      await shard.elapse(200); // heartbeats carry the commit LSN: the follower tries to apply it
      assert.deepEqual(shard.damage, [], 'a reopen would not make it go away');
    });

    it('a leader reading a damaged record of its log to send it to a follower reports it', async () => {
      // 'a' draws the shortest election timeout: it leads, and leads again after its restart.
      shard = new TestShard(['a', 'b', 'c'], { ...steady, randoms: { a: 0, b: 0.99, c: 0.99 } });
      const l = await shard.leader();
      assert.equal(l.id, 'a');
      shard.isolate(['b']);
      for (let i = 0; i < 40; i++) await l.replica.write([{ page: i, data: page(i + 1) }]);
      // One image, at the last record: the log still starts at 1. Reopened, 'a' holds no record
      // in memory and has nothing left to apply from its log: what it sends 'b' it reads back.
      await l.replica.checkpoint();
      const m = await shard.restart('a');
      const first = m.disk.list('shard/log').filter((n) => n.endsWith('.log')).sort()[0]!;
      m.disk.flipBits(`shard/log/${first}`, 20_000, 1);
      assert.equal((await shard.leader()).id, 'a');
      shard.heal();
      await shard.waitFor(() => shard!.damage.length > 0, 'the damage is reported');
      assert.deepEqual(shard.damage.map((d) => [d.id, d.err.code]), [['a', 'corruption']]);
      assert.ok(m.replica.appliedLsn >= 40, 'it applied nothing from its log: the image covered it');
    });

    describe('the background scrub', () => {
      /** Runs scrub steps of `m` until a pass ends; the steps' results. */
      async function scrubPass(m: Member): Promise<ScrubStepResult[]> {
        const steps: ScrubStepResult[] = [];
        for (let i = 0; i < 1000; i++) {
          const r = await m.replica.scrubStep();
          steps.push(r);
          if (r.passDone) return steps;
        }
        throw new Error('no pass ended in 1000 steps');
      }

      it('checks the newest image and the durable log in bounded steps; intact, it reports nothing', async () => {
        shard = new TestShard(['a', 'b', 'c'], steady);
        const l = await shard.leader();
        await imaged(l);
        for (let i = 0; i < 10; i++) await l.replica.write([{ page: 100 + i, data: page(i) }]);
        const steps = await scrubPass(l);
        const bytes = steps.reduce((n, r) => n + r.bytes, 0);
        // The image holds 40 pages; the log from the older image on holds ~30 records of 4 KiB.
        assert.ok(bytes >= 40 * 4096 + 25 * 4096, `checked ${bytes} bytes`);
        assert.ok(steps.every((r) => r.bytes <= SCRUB_STEP_BYTES), 'each step is bounded');
        assert.ok(steps.length >= 2, `${steps.length} steps`);
        assert.ok(steps.every((r) => r.damage === undefined));
        assert.deepEqual(shard.damage, []);
        // And again: passes go on.
        assert.equal((await scrubPass(l)).some((r) => r.damage !== undefined), false);
      });

      it('finds a damaged page of a follower\'s image, which nothing else reads, and the follower reports it', async () => {
        shard = new TestShard(['a', 'b', 'c'], steady);
        const l = await shard.leader();
        await imaged(l);
        const f = shard.members.get(shard.ids.find((id) => id !== l.id)!)!;
        await shard.waitFor(() => f.replica.appliedLsn >= l.replica.appliedLsn, 'the follower applied everything');
        await f.replica.checkpoint();
        const images = f.disk.list('shard').filter((n) => /^image-[0-9a-f]+\.img$/.test(n)).sort();
        damagePage0(f.disk, `shard/${images[images.length - 1]!}`);
        const steps = await scrubPass(f);
        const found = steps.find((r) => r.damage !== undefined);
        assert.ok(found && found.damage!.code === 'corruption' && /page 0 checksum mismatch/.test(found.damage!.message), JSON.stringify(steps));
        assert.deepEqual(shard.damage.map((d) => d.id), [f.id]);
      });

      it('a pass ends while the log grows faster than the scrub reads it', async () => {
        shard = new TestShard(['a'], steady);
        const l = await shard.leader();
        for (let i = 0; i < 40; i++) await l.replica.write([{ page: i, data: page(i + 1) }]);
        let steps = 0;
        for (;;) {
          const r = await l.replica.scrubStep();
          steps++;
          if (r.passDone) break;
          assert.ok(steps < 20, 'the pass did not end');
          // 80 records of 4 KiB: more than a step reads.
          await Promise.all(Array.from({ length: 80 }, (_, i) => l.replica.write([{ page: 100 + (i % 50), data: page(i) }])));
        }
      });

      it('a replica closed in the middle of an image lets go of it', async () => {
        shard = new TestShard(['a'], steady);
        const l = await shard.leader();
        await imaged(l);
        for (let i = 0; i < 200; i++) await l.replica.write([{ page: 40 + i, data: page(i) }]);
        await l.replica.checkpoint(); // an image of 240 pages: several steps
        const first = await l.replica.scrubStep();
        assert.equal(first.passDone, false, 'in the middle of the image');
        l.replica.close();
        await l.queue.drain().catch(() => undefined);
        l.storage.close();
        assert.equal(l.disk.openFiles, 0, 'no file left open');
        shard.members.delete('a');
      });

      it('a replica closed in the middle of an image whose file fails to close still closes: its waiting write is told, its leadership given up', async () => {
        shard = new TestShard(['a'], steady);
        const l = await shard.leader();
        await imaged(l);
        for (let i = 0; i < 200; i++) await l.replica.write([{ page: 40 + i, data: page(i) }]);
        await l.replica.checkpoint();
        assert.equal((await l.replica.scrubStep()).passDone, false, 'in the middle of the image');
        const release = shard.stallDisk('a');
        const waiting = l.replica.write([{ page: 7, data: page(7) }]).then(() => 'acknowledged', (e: StorageError) => e.code);
        // close(2) fails (EIO): the image reader's file cannot be closed.
        const close = l.disk.close.bind(l.disk);
        l.disk.close = (): void => {
          throw new StorageError('io_error', 'EIO: i/o error, close');
        };
        try {
          assert.doesNotThrow(() => l.replica.close());
        } finally {
          l.disk.close = close;
        }
        assert.equal(await waiting, 'closed');
        assert.deepEqual(shard.roleChanges.at(-1), { id: 'a', role: 'follower', term: l.replica.stats().term, reason: 'closed' });
        release();
        await l.queue.drain().catch(() => undefined);
        l.storage.close();
        shard.members.delete('a');
      });

      it('finds a record of the log that rotted after the open', async () => {
        shard = new TestShard(['a', 'b', 'c'], steady);
        const l = await shard.leader();
        for (let i = 0; i < 40; i++) await l.replica.write([{ page: i, data: page(i + 1) }]);
        const first = l.disk.list('shard/log').filter((n) => n.endsWith('.log')).sort()[0]!;
        l.disk.flipBits(`shard/log/${first}`, 20_000, 1);
        const steps = await scrubPass(l);
        assert.ok(steps.some((r) => r.damage?.code === 'corruption'), JSON.stringify(steps));
        assert.deepEqual(shard.damage.map((d) => d.id), [l.id]);
      });
    });

    describe('a follower sent an image that fails its check', () => {
      /** A follower cut off while the leader writes 40 pages and trims its log behind two images; returns it and the newest image. */
      async function behindTheImages(): Promise<{ l: Member; f: Member; image: string }> {
        shard = new TestShard(['a', 'b', 'c'], steady);
        const l = await shard.leader();
        const f = shard.members.get(shard.ids.find((id) => id !== l.id)!)!;
        shard.isolate([f.id]);
        const image = await imaged(l);
        assert.ok(l.storage.log.firstLsn > f.replica.appliedLsn + 1, 'the follower needs the image');
        return { l, f, image };
      }

      it('the leader\'s image is damaged: the leader checks it and reports it; once it is reopened without it, the follower catches up', async () => {
        const { l, f, image } = await behindTheImages();
        damagePage0(l.disk, image);
        shard!.heal();
        await shard!.waitFor(() => shard!.damage.length > 0, 'the leader reports its damaged image');
        assert.equal(l.replica.stats().imageChecks, 1);
        assert.deepEqual(shard!.damage.map((d) => d.id), [l.id], 'the follower reports nothing of its own');
        assert.equal(f.replica.stats().snapshotsInstalled, 0);
        const target = l.replica.appliedLsn;
        await shard!.restart(l.id, { damaged: shard!.damage[0]!.err.reports });
        // From the scrubbed replica's image, or from the log of the other follower if it leads now.
        await shard!.waitFor(() => f.replica.appliedLsn >= target, 'the follower catches up', 15_000);
        assert.deepEqual(shard!.damage.map((d) => d.id), [l.id]);
        for (let q = 0; q < 40; q++) assert.deepEqual(f.storage.store.getPage(q), page(q + 1), `page ${q}`);
      });

      it('the image was damaged on the way, twice: the leader checks its own once, finds it intact, reports nothing, and sends it again', async () => {
        const { l, f } = await behindTheImages();
        let flipped = 0;
        shard!.tampers.push((_from, _to, msg) => {
          if (msg.type === 'snapshot' && msg.done && flipped < 2) {
            flipped++;
            msg.data[msg.data.length - 100]! ^= 0x04;
          }
        });
        shard!.heal();
        await shard!.waitFor(() => f.replica.stats().snapshotsInstalled >= 1 && f.replica.appliedLsn >= l.storage.log.lastLsn, 'the follower installs the image sent again', 15_000);
        assert.equal(flipped, 2);
        assert.deepEqual(shard!.damage, []);
        assert.equal(l.replica.stats().imageChecks, 1, 'the leader checked its own image once, not at each complaint');
        for (let q = 0; q < 40; q++) assert.deepEqual(f.storage.store.getPage(q), page(q + 1), `page ${q}`);
      });
    });
  });
});

/**
 * Five replicas under lost appends, cut links and crashes, with appends to all followers in one
 * message: every acknowledged write is on every replica once the faults end.
 */
describe('Replica (membership change by joint consensus)', function () {
  this.timeout(30_000);
  let shard: TestShard | undefined;
  afterEach(async () => {
    await shard?.stop();
    shard = undefined;
  });
  const deadline = (ms = 10_000): number => Date.now() + ms;
  const read = async (m: Member, p: number): Promise<number> => (await m.replica.read([p], { deadlineMs: deadline(), nowMs: Date.now() })).pages[0]![0]!;
  /**
   * A set of a, b and c whose leader has written page 5, and the set a change to `target` makes:
   * the other two and a new member d (started under the joint configuration), the leader left out.
   */
  async function leaderLeftOut(): Promise<{ s: TestShard; l: Member; target: string[] }> {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    await l.replica.write([{ page: 5, data: page(5) }]);
    const target = ['a', 'b', 'c', 'd'].filter((id) => id !== l.id).sort();
    shard.ids.push('d');
    shard.start('d', new SimDisk(), { members: target, priorMembers: ['a', 'b', 'c'] });
    return { s: shard, l, target };
  }

  it('a dead member replaced by a new one: the new one is given the shard (by image) and votes; the shard then survives losing another original member', async () => {
    shard = new TestShard(['a', 'b', 'c'], { checkpointEveryRecords: 20 });
    const l = await shard.leader(['a', 'b']);
    for (let i = 0; i < 60; i++) await l.replica.write([{ page: i % 8, data: page(i) }]);
    const dead = ['a', 'b', 'c'].find((id) => id !== l.id && id !== 'a' && id !== 'b') ?? 'c';
    await shard.crash(dead);
    const target = ['a', 'b', 'd'];
    shard.ids.push('d');
    shard.start('d', new SimDisk(), { members: target, priorMembers: ['a', 'b', 'c'] });
    const leader = await shard.leader();
    const r = await leader.replica.reconfigure(['d', 'b', 'a'], { deadlineMs: deadline() });
    assert.ok(leader.replica.appliedLsn >= r.lsn, `answered once the new set is committed (applied ${leader.replica.appliedLsn}, lsn ${r.lsn})`);
    assert.deepEqual(r.members, target);
    assert.equal(r.changed, true);
    for (const id of target) {
      await shard.waitFor(() => shard!.members.get(id)!.replica.appliedLsn >= r.lsn, `${id} applied the change`);
      assert.deepEqual(shard.members.get(id)!.replica.configuration(), { members: target }, id);
    }
    const d = shard.members.get('d')!;
    assert.ok(d.replica.stats().snapshotsInstalled > 0, 'the new member was sent an image: the log was trimmed');
    // Again: nothing to do.
    const again = await leader.replica.reconfigure(target, { deadlineMs: deadline() });
    assert.equal(again.changed, false);
    // The other original follower goes too: the leader and d are a majority of {a, b, d}.
    const other = ['a', 'b'].find((id) => id !== leader.id)!;
    const otherDisk = await shard.crash(other);
    await leader.replica.write([{ page: 3, data: page(200) }]);
    // The leader goes, the other comes back: it and d are a majority of {a, b, d}, and d, which
    // holds the last write, leads.
    await shard.crash(leader.id);
    shard.start(other, otherDisk, { members: target, existing: true });
    const next = await shard.leader([other, 'd']);
    assert.equal(await read(next, 3), 200);
  });

  it('a change needs a majority of both sets: with the new members down it does not complete, and does once they come', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    const others = ['a', 'b', 'c'].filter((id) => id !== l.id);
    const target = [l.id, 'd', 'e'].sort();
    shard.ids.push('d', 'e');
    await assert.rejects(l.replica.reconfigure(target, { deadlineMs: deadline(600) }), (e: ProtocolError) => e.code === 'timeout' || e.code === 'not_leader');
    assert.deepEqual(l.replica.configuration(), { members: target, prior: ['a', 'b', 'c'] }, 'the joint configuration is in force, not committed');
    // Writes need both majorities too: the new set's is missing.
    await assert.rejects(l.replica.write([{ page: 2, data: page(2) }], { deadlineMs: deadline(300) }), (e: ProtocolError) => e.code === 'timeout' || e.code === 'not_leader');
    // Without a majority of the new set the leader steps down, and no one can be elected.
    await shard.waitFor(() => shard!.leaders().length === 0, 'no leader');
    await shard.elapse(300);
    assert.equal(shard.leaders().length, 0);
    shard.start('d', new SimDisk(), { members: target, priorMembers: ['a', 'b', 'c'] });
    // With d, a majority of both: a leader is elected, and it finishes the change (one of the old
    // set that was elected hands the shard to a member of the new set once the change commits).
    await shard.waitFor(() => shard!.leaders().some((m) => target.includes(m.id) && m.replica.configuration().prior === undefined && m.replica.appliedLsn >= m.replica.stats().lastLsn), 'a leader of the new set under it');
    const n = shard.leaders()[0]!;
    assert.deepEqual(n.replica.configuration(), { members: target });
    await n.replica.write([{ page: 2, data: page(3) }]);
    for (const id of others) await shard.crash(id);
    // {l, d} is a majority of the new set: the shard goes on without the old members.
    await n.replica.write([{ page: 2, data: page(4) }]);
    assert.equal(await read(n, 2), 4);
  });

  it('a leader that is not in the new set hands its leadership to a member of it once it is committed, and campaigns no more', async () => {
    const { s, l, target } = await leaderLeftOut();
    const r = await l.replica.reconfigure(target, { deadlineMs: deadline() });
    assert.deepEqual(r.members, target);
    await s.waitFor(() => !l.replica.isLeader, 'the old leader steps down');
    assert.ok(s.roleChanges.some((c) => c.id === l.id && /^handed its leadership to '.'$/.test(c.reason ?? '')), JSON.stringify(s.roleChanges));
    assert.equal(l.replica.stats().handovers, 1);
    const next = await s.leader(target);
    assert.equal(next.replica.stats().electionsHandedOver, 1, 'the new leader was handed the shard, not elected after a timeout');
    await next.replica.write([{ page: 5, data: page(6) }]);
    assert.equal(await read(next, 5), 6);
    const elections = l.replica.stats().preVotes;
    await s.elapse(400);
    assert.equal(l.replica.stats().preVotes, elections, 'a removed replica does not campaign');
    assert.ok(!l.replica.isLeader);
  });

  it('a leader left out of the new set commits it also when its followers hold it already and were not opened knowing it: their answers to the append carrying it lost, they take its appends again', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const s = shard;
    const first0 = await s.leader();
    // d joins in place of a member that does not lead, then leads: the others were opened with a, b, c.
    const gone = ['a', 'b', 'c'].find((id) => id !== first0.id)!;
    const first = ['a', 'b', 'c', 'd'].filter((id) => id !== gone).sort();
    s.ids.push('d');
    s.start('d', new SimDisk(), { members: first, priorMembers: ['a', 'b', 'c'] });
    await first0.replica.reconfigure(first, { deadlineMs: deadline() });
    await first0.replica.transferLeadership('d');
    const l = await s.leader(['d']);
    await l.replica.write([{ page: 5, data: page(5) }]);
    const target = first.filter((id) => id !== 'd').concat('e').sort();
    s.ids.push('e');
    s.start('e', new SimDisk(), { members: target, priorMembers: first });
    const carriesNewSet = (msg: RaftRequest): boolean =>
      msg.type === 'append' &&
      msg.records.some((r) => {
        try {
          const c = decode(r.payload) as { members?: unknown; prior?: unknown };
          return Array.isArray(c.members) && c.prior === undefined && [...c.members].sort().join() === target.join();
        } catch {
          return false;
        }
      });
    // The followers of the old set that stay take the new set alone, and their answers are lost:
    // the leader must send them again, and they, holding a set without it, take its appends.
    const stay = target.filter((id) => id !== 'e');
    const lost = new Set<string>();
    s.tampers.push((from, to, msg) => {
      if (from === l.id && stay.includes(to) && carriesNewSet(msg) && !lost.has(to)) {
        lost.add(to);
        s.cutFrom(to, l.id);
      }
    });
    const change = l.replica.reconfigure(target, { deadlineMs: deadline(3000) });
    await s.waitFor(() => lost.size === stay.length, 'the answers to the append carrying the new set lost');
    await new Promise((r) => setTimeout(r, 20));
    s.heal();
    const r = await change;
    assert.deepEqual(r.members, target);
    assert.equal(r.changed, true);
    await s.waitFor(() => !l.replica.isLeader, 'the old leader steps down');
    const next = await s.leader(target);
    await next.replica.write([{ page: 5, data: page(6) }]);
    assert.equal(await read(next, 5), 6);
  });

  it('a leader left out of the new set whose handover is not taken steps down all the same; the new set elects', async () => {
    const { s, l, target } = await leaderLeftOut();
    // No timeoutNow gets through.
    s.drops.push((_from, _to, msg) => msg.type === 'timeoutNow');
    await l.replica.reconfigure(target, { deadlineMs: deadline() });
    await s.waitFor(() => !l.replica.isLeader, 'the old leader steps down');
    assert.ok(s.roleChanges.some((c) => c.id === l.id && c.reason === 'removed from the replica set'), JSON.stringify(s.roleChanges));
    assert.equal(l.replica.stats().handovers, 0);
    const next = await s.leader(target);
    assert.equal(next.replica.stats().electionsHandedOver, 0);
    await next.replica.write([{ page: 5, data: page(6) }]);
    assert.equal(await read(next, 5), 6);
  });

  it('the set in force is kept across a restart, whatever set the node opens it with', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    const target = ['a', 'b', 'c', 'd'].filter((id) => id !== 'c' || l.id === 'c').slice(0, 2).concat('d').sort();
    shard.ids.push('d');
    shard.start('d', new SimDisk(), { members: target, priorMembers: ['a', 'b', 'c'] });
    await l.replica.reconfigure(target, { deadlineMs: deadline() });
    const f = target.find((id) => id !== l.id && id !== 'd')!;
    await shard.waitFor(() => shard!.members.get(f)!.replica.configuration().prior === undefined && shard!.members.get(f)!.replica.configuration().members.includes('d'), `${f} took the change`);
    const m = shard.members.get(f)!;
    m.replica.close();
    await m.queue.drain().catch(() => undefined);
    m.storage.close();
    // Opened with the set of the volume's creation: the saved change wins.
    const back = shard.start(f, m.disk, { members: ['a', 'b', 'c'] });
    assert.deepEqual(back.replica.configuration(), { members: target });
  });

  it('a change cut from a follower\'s log with its record (a deposed leader\'s) is no longer in force, also after a restart', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const old = await shard.leader();
    await old.replica.write([{ page: 1, data: page(1) }]);
    shard.isolate([old.id]);
    const others = ['a', 'b', 'c'].filter((id) => id !== old.id);
    const target = [...others, 'd'].sort();
    const change = old.replica.reconfigure(target, { deadlineMs: deadline(2000) }).catch((e: unknown) => e);
    await shard.waitFor(() => old.replica.configuration().prior !== undefined, 'the deposed leader appended the joint set');
    const x = await shard.leader(others);
    await x.replica.write([{ page: 1, data: page(2) }]);
    shard.heal();
    await shard.waitFor(() => old.replica.configuration().prior === undefined && !old.replica.isLeader, 'the old leader cut the change');
    assert.equal(((await change) as ProtocolError).code, 'not_leader');
    assert.deepEqual(old.replica.configuration(), { members: ['a', 'b', 'c'] });
    await shard.waitFor(() => old.replica.appliedLsn >= x.replica.appliedLsn, 'caught up');
    const m = shard.members.get(old.id)!;
    m.replica.close();
    await m.queue.drain().catch(() => undefined);
    m.storage.close();
    const back = shard.start(old.id, m.disk);
    assert.deepEqual(back.replica.configuration(), { members: ['a', 'b', 'c'] });
  });

  it('a change needs a majority of the old set too: with only the leader left of it, it does not complete', async () => {
    // Slow elections: the leader keeps leading while it waits.
    shard = new TestShard(['a', 'b', 'c'], { timing: { electionTimeoutMinMs: 2000, electionTimeoutMaxMs: 3000 } });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    const target = [l.id, 'd', 'e'].sort();
    shard.ids.push('d', 'e');
    shard.start('d', new SimDisk(), { members: target, priorMembers: ['a', 'b', 'c'] });
    shard.start('e', new SimDisk(), { members: target, priorMembers: ['a', 'b', 'c'] });
    for (const id of ['a', 'b', 'c'].filter((x) => x !== l.id)) shard.isolate([id]);
    await assert.rejects(l.replica.reconfigure(target, { deadlineMs: deadline(500) }), (e: ProtocolError) => e.code === 'timeout' || e.code === 'not_leader');
    assert.deepEqual(l.replica.configuration(), { members: target, prior: ['a', 'b', 'c'] }, 'the joint set did not commit without a majority of the old one');
  });

  it('a follower that missed the change (down) and is sent an image takes the set the image was made under', async () => {
    shard = new TestShard(['a', 'b', 'c'], { checkpointEveryRecords: 20 });
    const l = await shard.leader(['a', 'b']);
    await l.replica.write([{ page: 1, data: page(1) }]);
    const down = ['a', 'b', 'c'].find((id) => id !== l.id && id !== 'a') ?? 'c';
    const disk = await shard.crash(down);
    const target = ['a', 'b', 'c', 'd', 'e'];
    shard.ids.push('d', 'e');
    shard.start('d', new SimDisk(), { members: target, priorMembers: ['a', 'b', 'c'] });
    shard.start('e', new SimDisk(), { members: target, priorMembers: ['a', 'b', 'c'] });
    const r = await l.replica.reconfigure(target, { deadlineMs: deadline() });
    assert.deepEqual(r.members, target);
    // Enough writes that the log is trimmed past the change's records.
    for (let i = 0; i < 80; i++) await l.replica.write([{ page: i % 8, data: page(i) }]);
    await shard.waitFor(() => l.replica.stats().firstLsn > r.lsn, 'the log trimmed past the change');
    const back = shard.start(down, disk, { members: ['a', 'b', 'c'], existing: true });
    await shard.waitFor(() => back.replica.stats().snapshotsInstalled > 0 && back.replica.appliedLsn >= l.replica.appliedLsn, 'the returning follower installed an image');
    assert.deepEqual(back.replica.configuration(), { members: target });
  });

  it('a replica whose storage was lost, opened with the set before a change, asks the members its peers name for their term too', async () => {
    shard = new TestShard(['a', 'b', 'c']);
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    const target = ['a', 'b', 'd'];
    shard.ids.push('d');
    shard.start('d', new SimDisk(), { members: target, priorMembers: ['a', 'b', 'c'] });
    const r = await (await shard.leader()).replica.reconfigure(target, { deadlineMs: deadline() });
    await shard.waitFor(() => ['a', 'b', 'c'].every((id) => shard!.members.get(id)!.replica.configuration().members.includes('d')), 'every replica knows d');
    // d alone learns of a newer term (a candidate's vote request it refused): b may have voted
    // in it before it lost its storage.
    shard.isolate(['d']);
    const d = shard.members.get('d')!;
    await shard.elapse(200);
    const high = r.term + 5;
    await d.replica.handle({ type: 'vote', term: high, candidate: 'a', lastLsn: 0, lastTerm: 0 });
    assert.equal(d.replica.currentTerm, high);
    await shard.crash('b');
    // Its node still knows the set before the change (a move not finished in its catalog).
    const b = shard.start('b', new SimDisk(), { members: ['a', 'b', 'c'], existing: true });
    shard.healLink('b', 'd');
    await shard.waitFor(() => b.replica.stats().awaitingTerms === undefined, 'b learned its peers\' terms');
    assert.ok(b.replica.currentTerm >= high, `b took d's term ${high} (it has ${b.replica.currentTerm}): d was asked, named by its peers`);
  });

  it('a sole replica moved to another node: both hold the shard through the joint set, then the new one leads alone', async () => {
    shard = new TestShard(['a'], { checkpointEveryRecords: 20 });
    const a = await shard.leader();
    for (let i = 0; i < 50; i++) await a.replica.write([{ page: i % 8, data: page(i) }]);
    shard.ids.push('b');
    shard.start('b', new SimDisk(), { members: ['b'], priorMembers: ['a'] });
    const r = await a.replica.reconfigure(['b'], { deadlineMs: deadline() });
    assert.deepEqual(r.members, ['b']);
    const b = await shard.leader(['b']);
    // a handed the shard to b: it hears of b's term a moment after b leads.
    await shard.waitFor(() => !a.replica.isLeader, 'a no longer leads');
    assert.equal(b.replica.stats().electionsHandedOver, 1);
    assert.equal(await read(b, 7), 47);
    await b.replica.write([{ page: 7, data: page(99) }]);
    assert.equal(await read(b, 7), 99);
  });

  it('a leader the change removes, asked again as the answer that commits the change comes in, answers the change done (not not_leader)', async () => {
    // Slow elections: the leader keeps leading while a follower's answers are held back.
    shard = new TestShard(['a', 'b', 'c'], { sendEach: false, timing: { electionTimeoutMinMs: 2000, electionTimeoutMaxMs: 3000 } });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    const [b, c] = ['a', 'b', 'c'].filter((id) => id !== l.id) as [string, string];
    // The new set without the leader; d is not there: b and c are the new set's majority.
    const target = [b, c, 'd'].sort();
    shard.ids.push('d');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let held = false;
    let again: Promise<unknown> | undefined;
    const transport = (l.replica as unknown as { transport: ReplicaTransport }).transport;
    const send = transport.send;
    transport.send = (to, msg, timeoutMs) => {
      const inForce = l.replica.configuration();
      if (to !== b || inForce.prior !== undefined || inForce.members.join(',') !== target.join(',')) return send(to, msg, timeoutMs);
      // Under the new set alone: b's answers are lost but the first to an append of the set
      // alone, held until the test lets it through.
      if (held || msg.type !== 'append' || msg.records.length === 0) {
        return new Promise((_, reject) => setTimeout(() => reject(new ProtocolError('timeout', `${l.id} cannot reach ${b}`)), 5));
      }
      held = true;
      const answer = (async () => {
        const r = await send(to, msg, timeoutMs);
        await gate;
        return r;
      })();
      // The change asked again as the answer arrives: before the leader takes the answer in.
      void answer.then(() => {
        again = l.replica.reconfigure(target, { deadlineMs: deadline() }).catch((e: unknown) => e);
      });
      return answer;
    };
    const first = l.replica.reconfigure(target, { deadlineMs: deadline() });
    await shard.waitFor(() => held && l.replica.stats().lag[c] === 0, `the set alone appended, ${c} has it, ${b}'s answer held`);
    assert.ok(l.replica.isLeader);
    release();
    const r = await first;
    assert.equal(r.changed, true);
    await shard.waitFor(() => again !== undefined, 'asked again');
    const second = await again!;
    await shard.waitFor(() => !l.replica.isLeader, 'the leader stepped down once the change was committed (having handed the shard over)');
    assert.ok(!(second instanceof Error), `answered ${String(second)}`);
    assert.deepEqual(second, { members: target, term: r.term, lsn: r.lsn, changed: false });
    transport.send = send;
  });

  it('refuses: a change asked of a follower, a set with a duplicate, another change while one is under way; a Config record that is not a set', async () => {
    // Slow elections: the leader keeps leading through a change that cannot commit.
    shard = new TestShard(['a', 'b', 'c'], { timing: { electionTimeoutMinMs: 2000, electionTimeoutMaxMs: 3000 } });
    const l = await shard.leader();
    const f = shard.members.get(['a', 'b', 'c'].find((id) => id !== l.id)!)!;
    await assert.rejects(f.replica.reconfigure(['a', 'b', 'd']), (e: ProtocolError) => e.code === 'not_leader');
    await assert.rejects(l.replica.reconfigure(['a', 'a', 'b']), (e: ProtocolError) => e.code === 'bad_request' && /members/.test(e.message));
    await assert.rejects(l.replica.reconfigure([]), (e: ProtocolError) => e.code === 'bad_request');
    // A change to a set two of whose members are not there: its joint configuration cannot commit.
    const pending = l.replica.reconfigure([l.id, 'x', 'y'], { deadlineMs: deadline(400) }).catch((e: unknown) => e);
    await shard.waitFor(() => l.replica.configuration().prior !== undefined, 'joint');
    await assert.rejects(l.replica.reconfigure(['a', 'b', 'y'], { deadlineMs: deadline(500) }), (e: ProtocolError) => e.code === 'unavailable' && /changing its replica set/.test(e.message));
    assert.equal(((await pending) as ProtocolError).code, 'timeout');
    const bad = await f.replica.handle({ type: 'append', term: l.replica.currentTerm, leader: l.id, prevLsn: f.replica.stats().lastLsn, prevTerm: l.replica.currentTerm, records: [{ term: l.replica.currentTerm, kind: 3, payload: encode({ members: 'a' }) }], commitLsn: 0 }).catch((e: unknown) => e);
    assert.equal((bad as ProtocolError).code, 'bad_request');
    assert.match((bad as ProtocolError).message, /not a replica set/);
  });
});

describe('Replica (five replicas under random faults, appends to all followers)', function () {
  this.timeout(120_000);
  // With `wiped`, a crashed replica comes back on an empty disk (its storage lost, opened as existing).
  for (const [seed, wiped] of [[1, false], [2, false], [3, true], [4, true]] as const) {
    it(`seed ${seed}: drops, cuts, crashes${wiped ? ' that wipe the disk' : ''}; every acknowledged write is on every replica at the end`, async () => {
      let s = seed * 2654435761 % 2 ** 32;
      const rnd = (): number => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const ids = ['a', 'b', 'c', 'd', 'e'];
      const shard = new TestShard(ids, { timing: { electionTimeoutMinMs: 60, electionTimeoutMaxMs: 120, heartbeatMs: 10, rpcTimeoutMs: 60 } });
      try {
        let dropRate = 0.15;
        shard.drops.push((_f, _t, msg) => msg.type === 'append' && rnd() < dropRate);
        const acked = new Map<number, number>();
        let stopWriting = false;
        const writer = async (w: number): Promise<void> => {
          for (let i = 0; !stopWriting; i++) {
            const p = (w * 50 + (i % 50));
            const v = (i * 7 + w) % 250 + 1;
            const l = shard.leaders()[0];
            if (!l) { await new Promise((r) => setTimeout(r, 5)); continue; }
            try {
              await l.replica.write([{ page: p, data: page(v) }]);
              acked.set(p, v);
            } catch {
              // Unknown outcome: the page is not checked.
              acked.delete(p);
              await new Promise((r) => setTimeout(r, 2));
            }
          }
        };
        const writers = [0, 1, 2, 3].map((w) => writer(w));
        const disks = new Map<string, SimDisk>();
        let wipes = 0;
        const restart = (id: string, d: SimDisk): void => {
          // One replica without its storage at a time: more, with a second one crashed, would be
          // more than a set of five can lose (no majority of whole replicas to elect a leader).
          if (!wiped || [...shard.members.values()].some((m) => m.replica.stats().repairing)) {
            shard.start(id, d);
            return;
          }
          wipes++;
          assert.equal(shard.start(id, new SimDisk(), { existing: true }).storage.storageLost, true);
        };
        for (let step = 0; step < 40; step++) {
          await new Promise((r) => setTimeout(r, 25));
          const x = rnd();
          const a = ids[Math.floor(rnd() * 5)]!;
          const b = ids[Math.floor(rnd() * 5)]!;
          if (x < 0.3 && a !== b) shard.cutLink(a, b);
          else if (x < 0.5) shard.heal();
          else if (x < 0.6 && !disks.has(a) && disks.size < 1) disks.set(a, await shard.crash(a));
          else if (x < 0.75 && disks.size > 0) { const [id, d] = [...disks][0]!; disks.delete(id); restart(id, d); }
        }
        stopWriting = true;
        // A writer with a write in flight may still be writing: its outcome is unknown, its page forgotten.
        await Promise.race([Promise.all(writers), new Promise((r) => setTimeout(r, 5000))]);
        dropRate = 0;
        shard.heal();
        for (const [id, d] of disks) restart(id, d);
        // The faults' timing varies (the drops draw from the same random sequence): a run that
        // wiped no disk wipes one now.
        if (wiped && wipes === 0) restart('e', await shard.crash('e'));
        const l = await shard.leader();
        const w = await l.replica.write([{ page: 255, data: page(255) }]);
        await shard.waitFor(() => [...shard.members.values()].every((m) => m.replica.appliedLsn >= w.lsn), 'every replica applies everything', 30_000);
        for (const m of shard.members.values()) {
          for (const [p, v] of acked) assert.deepEqual(m.storage.store.getPage(p), page(v), `${m.id} page ${p}`);
        }
        assert.ok(acked.size > 0 && shard.appendsToAll.length > 0, `${acked.size} pages checked, ${shard.appendsToAll.length} appends to all`);
        if (wiped) {
          assert.ok(wipes > 0, 'a replica came back on an empty disk');
          await shard.waitFor(() => [...shard.members.values()].every((m) => !m.replica.stats().repairing), 'every replica repaired', 30_000);
        }
      } finally {
        await shard.stop();
      }
    });
  }
});

describe('Replica handing its leadership over (transferLeadership, timeoutNow)', function () {
  this.timeout(30_000);
  // Elections of 300–600 ms on a clock only the test moves: whatever happens while it stands
  // still happened without waiting for an election timeout.
  const slow = { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 600, heartbeatMs: 50, rpcTimeoutMs: 1000 };
  let shard: TestShard | undefined;
  afterEach(async () => {
    await shard?.stop();
    shard = undefined;
  });

  /** a leads from 300 ms and has written page 0; every replica ticked up to 400 ms. */
  async function aLeads(): Promise<TestShard> {
    const s = new TestShard(['a', 'b', 'c'], { manualClock: true, timing: slow, randoms: { a: 0, b: 0.5, c: 0.99 } });
    for (let t = 0; t <= 400; t += 10) await s.at(t);
    assert.equal(s.leaders()[0]?.id, 'a');
    await s.members.get('a')!.replica.write([{ page: 0, data: page(1) }]);
    await s.at(400);
    return s;
  }

  it('the follower it names leads the next term at once, without a prevote, elected by a follower that knows the old leader live; the old one follows', async () => {
    shard = await aLeads();
    const [a, b, c] = ['a', 'b', 'c'].map((id) => shard!.members.get(id)!.replica) as [Replica, Replica, Replica];
    const term = a.currentTerm;
    const preVotes = b.stats().preVotes;
    // a's vote never reaches b: b is elected only if c votes, which c, having heard a less than
    // a minimum election timeout ago, does only for a candidate a handed its leadership to.
    shard.drops.push((from, to, msg) => from === 'b' && to === 'a' && msg.type === 'vote');
    const handed = a.transferLeadership('b');
    // The clock stands still: no election timeout runs out, no heartbeat is due.
    await shard.waitFor(() => b.isLeader, 'b leads', 5000);
    assert.deepEqual(await handed, { term, to: 'b' });
    assert.equal(b.currentTerm, term + 1);
    assert.equal(b.stats().preVotes, preVotes, 'no prevote');
    assert.equal(b.stats().electionsHandedOver, 1);
    assert.equal(a.stats().handovers, 1);
    assert.equal(a.isLeader, false);
    assert.deepEqual(shard.leaders().map((m) => m.id), ['b']);
    assert.equal(c.currentTerm, term + 1);
    // Every write of a's is b's: read at once, and b takes writes.
    assert.deepEqual((await b.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() })).pages[0], page(1));
    await b.write([{ page: 0, data: page(2) }]);
    await assert.rejects(a.write([{ page: 0, data: page(3) }]), (e: ProtocolError) => e.code === 'not_leader');
  });

  it('while it runs, requests are refused unavailable; a target that cannot catch up: given up after a maximum election timeout, and the leader takes requests again in its term', async () => {
    shard = await aLeads();
    const a = shard.members.get('a')!.replica;
    const term = a.currentTerm;
    // c hears nothing more from a: the write commits with b, and c lacks it.
    shard.cutLink('a', 'c');
    await a.write([{ page: 0, data: page(2) }]);
    // (Their outcomes taken at once: they fail, later.)
    const handed = a.transferLeadership('c').then(() => undefined, (e: unknown) => e as ProtocolError);
    // Joined by a second call for the same target; refused for another.
    const again = a.transferLeadership('c').then(() => undefined, (e: unknown) => e as ProtocolError);
    assert.throws(() => a.transferLeadership('b'), (e: ProtocolError) => e.code === 'unavailable' && /handing its leadership to 'c' already/.test(e.message));
    await assert.rejects(a.write([{ page: 0, data: page(3) }]), (e: ProtocolError) => e.code === 'unavailable' && /handing its leadership to 'c'/.test(e.message));
    await assert.rejects(a.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() }), (e: ProtocolError) => e.code === 'unavailable');
    // c's election timer fires meanwhile; b knows a live, so c's prevotes fail.
    for (let t = 410; t <= 990; t += 10) await shard.at(t);
    assert.equal(a.isLeader, true, 'not given up before a maximum election timeout');
    await shard.at(1010);
    const [e1, e2] = [await handed, await again];
    assert.ok(e1?.code === 'timeout' && /did not take the leadership over within 600 ms/.test(e1.message), String(e1));
    assert.equal(e2?.code, 'timeout');
    assert.equal(a.isLeader, true);
    assert.equal(a.currentTerm, term);
    assert.equal(a.stats().handovers, 0);
    await a.write([{ page: 0, data: page(4) }]);
    assert.deepEqual((await a.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() })).pages[0], page(4));
  });

  it('once it sent timeoutNow it serves nothing from its lease in that term: not while the handover runs, nor after it failed and it leads on (the target may lead a newer term meanwhile)', async () => {
    for (const when of ['failed', 'running'] as const) {
      shard = await aLeads();
      const [a, b] = ['a', 'b'].map((id) => shard!.members.get(id)!.replica) as [Replica, Replica];
      const term = a.currentTerm;
      // b holds every record of a's, so a asks it at once. From then on nothing of b's reaches
      // a: its answer to the timeoutNow, its vote request, its appends as leader. c, which
      // answered a within the lease (the clock stands still), votes for b all the same.
      if (when === 'running') shard.hold((from, to, msg) => from === 'a' && to === 'b' && msg.type === 'timeoutNow');
      shard.cutFrom('b', 'a');
      const handed = a.transferLeadership('b').then(() => undefined, (e: unknown) => e as ProtocolError);
      await shard.waitFor(() => b.isLeader, 'b leads', 5000);
      await b.write([{ page: 0, data: page(2) }]);
      if (when === 'failed') {
        assert.equal((await handed)?.code, 'unavailable', 'the timeoutNow went unanswered: a leads on');
        assert.ok(a.isLeader && a.currentTerm === term);
        // A read at the latest LSN after b's write was answered: not page(1) from the lease.
        await assert.rejects(a.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() }), (e: ProtocolError) => e.code === 'not_leader');
      } else {
        assert.ok(a.isLeader && a.currentTerm === term, 'a has not heard of b\'s term');
        await assert.rejects(a.confirmLeads(term, Date.now() + 1000), (e: ProtocolError) => e.code === 'not_leader');
      }
      assert.equal(a.isLeader, false, 'the round that confirms a read found the newer term');
      await shard.stop();
      shard = undefined;
    }
  });

  it("a branch's replica without the branch point's pages neither campaigns nor takes a handover, until a peer sends it the shard", async () => {
    shard = await aLeads();
    const a = shard.members.get('a')!.replica;
    const seedLsn = a.stats().lastLsn;
    // c's host had no copy of the parent to give it: c starts empty, its branch point ahead.
    await shard.crash('c');
    shard.cutLink('a', 'c');
    shard.cutLink('b', 'c');
    const c = shard.start('c', new SimDisk(), { seedLsn }).replica;
    for (let t = 410; t <= 4000; t += 10) await shard.at(t);
    assert.equal(c.stats().preVotes + c.stats().elections, 0, 'c never campaigned, its leader silent for many election timeouts');
    await assert.rejects(a.transferLeadership('c'), (e: ProtocolError) => e.code === 'unavailable' && /'c' did not take the leadership over/.test(e.message));
    assert.equal(a.isLeader, true);
    // Given the shard by its leader, it may lead.
    shard.heal();
    for (let t = 4010; t <= 4400; t += 10) await shard.at(t);
    assert.ok(c.stats().lastLsn >= seedLsn, `c holds the shard (${c.stats().lastLsn})`);
    const term = a.currentTerm;
    assert.deepEqual(await a.transferLeadership('c'), { term, to: 'c' });
    await shard.waitFor(() => c.isLeader, 'c leads', 5000);
    assert.deepEqual((await c.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() })).pages[0], page(1));
  });

  it('a target that does not answer ends it at once, and the leader leads on; bad targets, a follower and a set of one are refused', async () => {
    shard = await aLeads();
    const a = shard.members.get('a')!.replica;
    const term = a.currentTerm;
    // c holds every record, but a's timeoutNow does not reach it.
    shard.drops.push((from, to, msg) => from === 'a' && to === 'c' && msg.type === 'timeoutNow');
    await assert.rejects(a.transferLeadership('c'), (e: ProtocolError) => e.code === 'unavailable' && /'c' did not take the leadership over/.test(e.message));
    assert.equal(a.isLeader, true);
    assert.equal(a.currentTerm, term);
    await a.write([{ page: 0, data: page(5) }]);
    assert.throws(() => a.transferLeadership('z'), (e: ProtocolError) => e.code === 'bad_request' && /to: 'z' is not another member/.test(e.message));
    // To itself: nothing to do, answered at once; it leads on in its term and takes writes.
    assert.deepEqual(await a.transferLeadership('a'), { term, to: 'a' });
    assert.equal(a.isLeader, true);
    assert.equal(a.stats().handovers, 0);
    await a.write([{ page: 0, data: page(6) }]);
    assert.throws(() => shard!.members.get('b')!.replica.transferLeadership('c'), (e: ProtocolError) => e.code === 'not_leader');
    const one = new TestShard(['s']);
    try {
      const s = await one.leader();
      assert.throws(() => s.replica.transferLeadership(), (e: ProtocolError) => e.code === 'unavailable' && /no other replica/.test(e.message));
    } finally {
      await one.stop();
    }
  });

  it('a follower whose leader\'s messages came late, and that began a prevote (it knows no leader of the term), takes the handover', async () => {
    shard = await aLeads();
    const [a, c] = ['a', 'c'].map((id) => shard!.members.get(id)!.replica) as [Replica, Replica];
    const term = a.currentTerm;
    // c hears nothing of a for longer than an election timeout: it asks for prevotes, which b
    // (hearing a) refuses. It is still at a's term, and knows no leader of it.
    shard.cutLink('a', 'c');
    const preVotes = c.stats().preVotes;
    for (let t = 410; t <= 1400; t += 10) await shard.at(t);
    assert.ok(c.stats().preVotes > preVotes, 'c asked for prevotes');
    assert.equal(c.currentTerm, term);
    assert.equal(a.isLeader, true);
    // a's timeoutNow reaching it now: it starts the election a handed it.
    const reply = (await c.handle({ type: 'timeoutNow', term, leader: 'a' })) as { term: number; ok: boolean };
    assert.equal(reply.ok, true);
    assert.equal(c.stats().electionsHandedOver, 1);
    assert.equal(c.currentTerm, term + 1, 'its election is of the next term');
  });

  it('without a target named, the follower whose log holds the most; a timeoutNow not from the leader of the term is refused and changes nothing', async () => {
    shard = await aLeads();
    const [a, b, c] = ['a', 'b', 'c'].map((id) => shard!.members.get(id)!.replica) as [Replica, Replica, Replica];
    const term = a.currentTerm;
    // Of another member, or of an older term: no election.
    assert.deepEqual(await c.handle({ type: 'timeoutNow', term, leader: 'b' }), { term, ok: false });
    assert.deepEqual(await c.handle({ type: 'timeoutNow', term: term - 1, leader: 'a' }), { term, ok: false });
    assert.deepEqual(await a.handle({ type: 'timeoutNow', term, leader: 'b' }), { term, ok: false }, 'the leader itself');
    assert.equal(c.stats().elections + b.stats().elections, 0);
    assert.equal(c.currentTerm, term);
    // b lacks a's last write (its link cut): c holds the most.
    shard.cutLink('a', 'b');
    await a.write([{ page: 0, data: page(6) }]);
    shard.healLink('a', 'b');
    assert.deepEqual(await a.transferLeadership(), { term, to: 'c' });
    await shard.waitFor(() => c.isLeader, 'c leads', 5000);
    assert.deepEqual((await c.read([0], { deadlineMs: Date.now() + 1000, nowMs: Date.now() })).pages[0], page(6));
  });
});

describe('Replica: idle shards quiesce (heartbeats once a quiesced period; followers wait while the leader\'s node is heard from)', function () {
  this.timeout(60_000);
  // Quiesced after 100 ms idle; a quiesced leader's heartbeat every 400 ms; its followers wait up
  // to QUIESCED_WAIT_BEATS × 400 = 1200 ms for its own next message while its node is heard from.
  const quiet = { quiesceAfterMs: 100, quiescedHeartbeatMs: 400 };
  let shard: TestShard | undefined;
  afterEach(async () => {
    await shard?.stop();
    shard = undefined;
  });

  const others = (s: TestShard, id: string): Member[] => [...s.members.values()].filter((m) => m.id !== id);
  /** Waits until the leader and every follower say they are quiesced. */
  const quiesced = (s: TestShard, l: Member): Promise<void> =>
    s.waitFor(() => l.replica.stats().quiesced && others(s, l.id).every((m) => m.replica.stats().quiesced), 'the shard quiesces');
  /**
   * When the first of `l`'s followers stops waiting for a quiesced `l` whose node it hears from:
   * QUIESCED_WAIT_BEATS quiesced periods after the last message `l` sent it (it heard it then or
   * later).
   */
  const quiescedWaitEnds = (s: TestShard, l: Member): number =>
    Math.min(...others(s, l.id).map((f) => Math.max(...s.emptyAppends.filter((x) => x.from === l.id && x.to === f.id).map((x) => x.at)))) +
    QUIESCED_WAIT_BEATS * quiet.quiescedHeartbeatMs;
  /** Heartbeats (appends without records) the leader sent over `ms` of the replicas' clock. */
  const heartbeatsOver = async (s: TestShard, l: Member, ms: number): Promise<number> => {
    const from = s.emptyAppends.length;
    await s.elapse(ms);
    return s.emptyAppends.slice(from).filter((x) => x.from === l.id).length;
  };

  it('an idle shard quiesces: one heartbeat a quiesced period, no election while the leader is quiet; a write wakes it, and a read after confirms the leadership', async () => {
    shard = new TestShard(['a', 'b', 'c'], { liveness: true, timing: quiet });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    // Awake: a heartbeat each 10 ms to each follower.
    assert.ok((await heartbeatsOver(shard, l, 50)) >= 4, 'heartbeats while not idle');
    await quiesced(shard, l);
    assert.equal(l.replica.stats().quiesces, 1);
    const term = l.replica.currentTerm;
    const changes = shard.roleChanges.length;
    // 2 s quiesced: one heartbeat each 400 ms to each of 2 followers (~10), where awake would send ~400.
    const sent = await heartbeatsOver(shard, l, 2000);
    assert.ok(sent >= 6 && sent <= 14, `${sent} heartbeats in 2 s quiesced`);
    assert.equal(l.replica.isLeader, true);
    assert.equal(l.replica.currentTerm, term, 'no election while the leader was quiet');
    assert.equal(shard.roleChanges.length, changes);
    // Its lease lapsed meanwhile: a read confirms the leadership with a round of its followers.
    const r = await l.replica.read([1], { deadlineMs: Date.now() + 2000, nowMs: Date.now() });
    assert.deepEqual(r.pages[0], page(1));
    assert.equal(l.replica.stats().quiesced, false, 'the read woke it');
    const w = await l.replica.write([{ page: 2, data: page(2) }]);
    assert.equal(l.replica.stats().quiesced, false);
    await shard.waitFor(() => others(shard!, l.id).every((m) => m.replica.appliedLsn >= w.lsn && !m.replica.stats().quiesced), 'followers apply it and are awake');
    assert.ok((await heartbeatsOver(shard, l, 50)) >= 4, 'heartbeats each period again');
    // Idle again: quiesced again.
    await quiesced(shard, l);
    assert.equal(l.replica.stats().quiesces, 2);
  });

  it('a quiesced replica is quiet (ticked once a heartbeat period, as on a host) while nothing waits on it: a heartbeat a quiesced period, no election; a write wakes it, and its followers are given an election timeout from the wake', async () => {
    // Quiet replicas ticked once every 50 ms of the clock, against every 2 ms for the others.
    shard = new TestShard(['a', 'b', 'c'], { liveness: true, timing: quiet, quietTickMs: 50 });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    assert.equal(l.replica.quiet, false, 'awake');
    await quiesced(shard, l);
    await shard.waitFor(() => [...shard!.members.values()].every((m) => m.replica.quiet), 'all quiet');
    const term = l.replica.currentTerm;
    const changes = shard.roleChanges.length;
    const ticks = shard.quietTicks;
    const sent = await heartbeatsOver(shard, l, 2000);
    // 3 replicas ticked once each 50 ms over 2 s: ~120 ticks, where ticked each time ~3,000.
    const quietTicks = shard.quietTicks - ticks;
    assert.ok(quietTicks >= 60 && quietTicks <= 200, `${quietTicks} ticks of quiet replicas in 2 s`);
    assert.ok(sent >= 6 && sent <= 14, `${sent} heartbeats in 2 s quiet`);
    assert.equal(l.replica.currentTerm, term, 'no election while quiet');
    assert.equal(shard.roleChanges.length, changes);
    // Woken in the middle of a quiesced period (its followers' last answers older than an
    // election timeout): it keeps leading.
    // Just after a quiet tick (every 50 ms), in the middle of a quiesced period.
    await shard.waitFor(() => shard!.now % quiet.quiescedHeartbeatMs >= 252 && shard!.now % quiet.quiescedHeartbeatMs < 258 && l.replica.quiet, 'the middle of a quiesced period');
    const wokeAt = shard.now;
    const woken = shard.emptyAppends.length;
    const w = await l.replica.write([{ page: 2, data: page(2) }]);
    assert.equal(l.replica.quiet, false, 'the write woke it');
    // Told so (onAwake), it is ticked every tick again at once: its heartbeats go each 10 ms
    // from the wake, not from the next quiet tick 42–48 ms later.
    await shard.waitFor(() => shard!.emptyAppends.slice(woken).some((x) => x.from === l.id), 'a heartbeat after the wake');
    const beatAt = shard.emptyAppends.slice(woken).find((x) => x.from === l.id)!.at;
    assert.ok(beatAt - wokeAt < 35, `the first heartbeat ${(beatAt - wokeAt).toFixed(1)} ms after the wake`);
    await shard.elapse(300);
    assert.deepEqual(shard.roleChanges.slice(changes), [], 'no step-down, no election');
    assert.equal(l.replica.currentTerm, term);
    await shard.waitFor(() => others(shard!, l.id).every((m) => m.replica.appliedLsn >= w.lsn), 'followers apply it');
  });

  it('a quiesced leader woken by a write whose followers last answered a quiesced period ago keeps leading: it gives them an election timeout to answer', async () => {
    shard = new TestShard(['a', 'b', 'c'], { liveness: true, timing: quiet });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    await quiesced(shard, l);
    // Its last heartbeats (and their answers) 250 ms old: more than a maximum election timeout (120 ms).
    await shard.waitFor(() => shard!.now % quiet.quiescedHeartbeatMs >= 250 && shard!.now % quiet.quiescedHeartbeatMs < 300 && l.replica.stats().quiesced, 'the middle of a quiesced period');
    const term = l.replica.currentTerm;
    const changes = shard.roleChanges.length;
    const w = await l.replica.write([{ page: 2, data: page(2) }]);
    await shard.elapse(300);
    assert.deepEqual(shard.roleChanges.slice(changes), [], 'no step-down, no election');
    assert.equal(l.replica.isLeader, true);
    assert.equal(l.replica.currentTerm, term);
    await shard.waitFor(() => others(shard!, l.id).every((m) => m.replica.appliedLsn >= w.lsn), 'followers apply it');
  });

  it('followers of a quiesced leader whose node is no longer heard from elect a new leader at once, not after the quiesced wait', async () => {
    shard = new TestShard(['a', 'b', 'c'], { liveness: true, timing: quiet });
    const l = await shard.leader();
    const w = await l.replica.write([{ page: 1, data: page(1) }]);
    await quiesced(shard, l);
    // From here the test moves the clock, 5 ms a step, and lets the messages of each step run.
    shard.stopClock();
    const waitEnds = quiescedWaitEnds(shard, l);
    await shard.crash(l.id);
    // Its node not heard from for the minimum election timeout (60 ms), the next election
    // timeout runs out: a new leader before the followers' wait for a quiesced leader whose node
    // is up would have ended (the clock stops short of that).
    let t = shard.now;
    while (shard.leaders().length === 0 && t + 5 < waitEnds) await shard.at((t += 5));
    assert.equal(shard.leaders().length, 1, `a new leader by ${t}, before the quiesced wait ends at ${waitEnds}`);
    shard.resumeClock();
    const nl = shard.leaders()[0]!;
    assert.notEqual(nl.id, l.id);
    assert.deepEqual((await nl.replica.read([1], { deadlineMs: Date.now() + 2000, nowMs: Date.now() })).pages[0], page(1));
    assert.ok(nl.replica.appliedLsn >= w.lsn);
  });

  it('followers of a quiesced leader whose replica is gone and whose node is up wait QUIESCED_WAIT_BEATS quiesced periods, then elect', async () => {
    shard = new TestShard(['a', 'b', 'c'], { liveness: true, timing: quiet });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    await quiesced(shard, l);
    // From here the test moves the clock, 5 ms a step, and lets the messages of each step run.
    shard.stopClock();
    const waitEnds = quiescedWaitEnds(shard, l);
    const terms = others(shard, l.id).map((m) => m.replica.currentTerm);
    // The replica gone with its node up.
    shard.nodesUp.add(l.id);
    await shard.crash(l.id);
    let t = shard.now;
    while (t + 5 < waitEnds) await shard.at((t += 5));
    assert.deepEqual(shard.leaders(), [], `no leader by ${t}: the followers wait for their leader's next message`);
    assert.deepEqual(others(shard, l.id).map((m) => m.replica.currentTerm), terms, 'no election was held');
    // Then they elect (within a few election timeouts).
    while (shard.leaders().length === 0 && t < waitEnds + 1000) await shard.at((t += 5));
    assert.equal(shard.leaders().length, 1, `a new leader by ${t}, once the quiesced wait ended at ${waitEnds}`);
  });

  it('a follower restarted (not quiesced) does not depose a quiesced leader: its prevotes fail, and the leader wakes', async () => {
    shard = new TestShard(['a', 'b', 'c'], { liveness: true, timing: quiet });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    await quiesced(shard, l);
    const term = l.replica.currentTerm;
    const f = others(shard, l.id)[0]!;
    const restarted = await shard.restart(f.id);
    const w = await (async () => {
      await shard!.elapse(1500);
      return l.replica.write([{ page: 2, data: page(2) }]);
    })();
    assert.equal(l.replica.isLeader, true, 'still leading');
    assert.equal(l.replica.currentTerm, term, 'no election');
    await shard.waitFor(() => restarted.replica.appliedLsn >= w.lsn, 'the restarted follower follows');
  });

  it('a follower whose host does not tell of its peers\' nodes (an older node) keeps its leader from quiescing', async () => {
    shard = new TestShard(['a', 'b', 'c'], { liveness: ['a', 'b'], timing: quiet, randoms: { a: 0, b: 0.5, c: 0.9 } });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    await shard.elapse(1000);
    assert.equal(l.replica.stats().quiesced, false);
    assert.equal(l.replica.stats().quiesces, 0);
    assert.ok((await heartbeatsOver(shard, l, 100)) >= 10, 'heartbeats each period');
    assert.ok(shard.emptyAppends.some((x) => x.from === l.id && x.quiesce), 'it asked');
  });

  it('a quiesced leader cut off from its followers is replaced at once, and steps down at its next quiesced heartbeat', async () => {
    shard = new TestShard(['a', 'b', 'c'], { liveness: true, timing: quiet });
    const l = await shard.leader();
    await l.replica.write([{ page: 1, data: page(1) }]);
    await quiesced(shard, l);
    shard.isolate([l.id]);
    await shard.waitFor(() => shard!.leaders(others(shard!, l.id).map((m) => m.id)).length === 1, 'a new leader among the others');
    await shard.waitFor(() => !l.replica.isLeader, 'the old leader steps down');
    assert.ok(shard.roleChanges.some((c) => c.id === l.id && c.role !== 'leader' && c.reason === 'lost contact with a majority'), JSON.stringify(shard.roleChanges.filter((c) => c.id === l.id)));
    shard.heal();
    const nl = shard.leaders()[0]!;
    const w = await nl.replica.write([{ page: 2, data: page(2) }]);
    await shard.waitFor(() => l.replica.appliedLsn >= w.lsn, 'the old leader follows');
  });
});
