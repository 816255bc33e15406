/**
 * DeviceHost: everything that lives on one device, on the thread that owns it.
 *
 * It opens the device's disk and its DeviceQueue, and for every shard replica placed on the
 * device its ShardStorage (log, page store, term and vote) and its Replica actor. It is their
 * supervisor: when the device fails (a write or fdatasync error) or a replica breaks an
 * invariant, it closes them and reopens them from their durable state, counting the restart; a
 * replica that keeps failing is left down (it stops acknowledging; its peers carry on). Layout:
 *
 *   <device>/shards/<volumeId>.<shard>/...   one replica's ShardStorage (see storage-engine/shard-storage.ts)
 *   <device>/shards/<volumeId>.<shard>.<n>.discard/...   a destroyed one, being removed in the background
 */
import type { Disk } from '../storage-engine/disk';
import { discardTree, isDiscardedName, joinPath, removeDiscarded, removeInBackground, type Discarded } from '../storage-engine/disk';
import { RealDisk } from '../storage-engine/real-disk';
import { Slab } from '../storage-engine/slab';
import { SlabWarmer, type SlabWarmerStats } from './slab-warmer';
import { ShardStorage } from '../storage-engine/shard-storage';
import { HardStateJournal, type HardStateJournalStats } from '../storage-engine/hard-state-journal';
import { CorruptionError, StorageError, type CorruptionReport } from '../storage-engine/errors';
import { pageWriteBytes, PAGE_WRITE_PAGES_MAX } from '../storage-engine/page-write';
import { DeviceQueue, type DeviceQueueOptions, type DeviceQueueStats, type QueueTracer } from '../actors/device-queue';
import { WRITE_IDS_READ_AT_OPEN } from '../actors/write-ids';
import { CACHE_COUNTERS, DEFAULT_TIMING, REPLICA_COUNTERS, Replica, noReplicaCounters, type AppendTooLarge, type CacheCounters, type ForceVoteResult, type ReplicaCounters, type ReplicaTransport, type ScrubStepResult, type ReplicaStats, type ReplicaTiming, type ReplicaTracer, type Role } from '../actors/replica';
import type { ShardGeometry, PayloadOffload } from '../actors/shard';
import { CpuPool, type CpuPoolStats } from './cpu-pool';
import { FaultyDisk } from './faulty-disk';
import { withTimeout } from './timeout';
import { ProtocolError } from '../messages/errors';
import { idNumber, idTag, parseShardKey, shardKey } from '../messages/volume-id';

export { parseShardKey, shardKey };

export interface ShardSpec extends ShardGeometry {
  volumeName: string;
  /** Node ids of the shard's replicas (this node among them). */
  members: string[];
  /**
   * A replica created on this node by a move (docs/replication.md, "Moving a replica"): the set
   * the shard changes from, `members` being the set it changes to. The replica starts under that
   * joint configuration (ReplicaOptions.priorMembers) until its log says otherwise.
   */
  priorMembers?: string[];
  /**
   * The replica existed on this node before this open (it is reopened from the node's record of
   * its shards, or by a reconciliation with the catalog): an open that finds no term and vote
   * saved means its storage (or its hard state alone) was lost (ShardStorageOptions.expectExisting). Absent for the open
   * of a volume's creation.
   */
  existing?: boolean;
  /**
   * A shard of a branch (docs/branches.md): the parent volume's id and the branch point, the
   * LSN of the parent's shard the branch starts from. A new replica copies the parent's pages at
   * that LSN from the parent's replica on this device (`seedShard`); its log continues after it.
   */
  seed?: { volumeId: string; lsn: number };
  /** The catalog shard of a cluster its operator starts new (`--new-cluster`): ReplicaOptions.newIfMajorityEmpty. */
  newCluster?: boolean;
  /**
   * The node's data directory was created by this start (its first, or one after the directory
   * was lost: the node cannot tell them apart). An `existing` replica found without saved state
   * is then said at info, not as a loss (`onStorageLost` reads it).
   */
  dataDirCreated?: boolean;
}

/** How long `seedShard` waits for the parent's replica to apply the branch point, or to end a checkpoint. */
export const SEED_WAIT_MS = 5_000;

/**
 * What `seedShard` did: copied the parent's pages, or why not. `waits`: the replica opens
 * without them and waits for a peer to send it the shard (a copy that was tried here and could
 * not be made; `noSpace` when the device had no room for it over its reserve); without it, no
 * copy was wanted (the replica holds its shard already, or another open is copying it).
 */
export type SeedResult = { seeded: true; lsn: number } | { seeded: false; reason: string; waits?: { noSpace: boolean } };

/** A copy of a branch's parent tried and not made (SeedResult.waits). */
function notCopied(reason: string, noSpace = false): SeedResult {
  return { seeded: false, reason, waits: { noSpace } };
}

export interface DeviceHostOptions {
  /** Directory of the device (created if missing). */
  dir: string;
  /** This node's id (the replica id of every replica on this device). */
  self: string;
  /** A disk to use instead of the real one under `dir` (tests). */
  disk?: Disk;
  /** Counts the real disk's blocking calls while they run (RealDisk `ioMarker`; the host pool's watchdog reads it). */
  ioMarker?: Int32Array;
  /** How a replica of `spec` reaches its peers. */
  transportFor?: (spec: ShardSpec) => ReplicaTransport;
  /** Told when a replica becomes or stops being its shard's leader. */
  onRoleChange?: (spec: ShardSpec, role: Role, term: number, reason?: string) => void;
  /**
   * Told when a replica threw on its clock tick (a bug), once its restart from durable state was
   * made or refused (past restartsMax the shard is left down: `outcome` says which); the device's
   * other replicas go on. For logging by the host.
   */
  onTickError?: (spec: ShardSpec, err: unknown, outcome: ReplicaErrorOutcome) => void;
  /**
   * Told when a replica's storage was found damaged at open and repaired: with `lost`, records
   * were discarded (the peers give them back, and it votes again once they have); without, a
   * damaged image was written again from what is left. For logging by the host.
   */
  onRepaired?: (spec: ShardSpec, damage: readonly CorruptionReport[], lost: boolean) => void;
  /**
   * Told when a replica that existed on this node opened with no term and vote saved (a wiped or
   * replaced disk, or its hard state alone lost): a replica of several learns its peers' terms
   * (and is repaired by them) before it votes again; a sole copy waits for strata shard force-vote. For logging by the host.
   */
  onStorageLost?: (spec: ShardSpec) => void;
  /**
   * Told when a sole copy opened with its log damaged (ShardStorage `holdDamagedLog`): it keeps
   * the log as it is, readable up to `validLsn`, and neither leads nor serves until an operator
   * accepts the loss (strata shard force-vote). For logging by the host.
   */
  onDamagedLogHeld?: (spec: ShardSpec, damage: readonly CorruptionReport[], validLsn: number) => void;
  /**
   * Told when a running replica found its own storage damaged in a way a reopen can repair: it is
   * reopened without the damaged images (ShardStorage `damaged`), which counts as a restart. For
   * logging by the host.
   */
  onDamage?: (spec: ShardSpec, err: CorruptionError) => void;
  /**
   * Told when a running replica cannot go on (Replica `onFailure`: a committed record it cannot
   * apply): it is restarted, and left down once it failed `restartsMax` times in the window; the
   * device's other replicas go on. For logging by the host.
   */
  onFailure?: (spec: ShardSpec, err: Error, outcome: ReplicaErrorOutcome) => void;
  /** A follower's transport refused an append of a leader here as too large (Replica `onAppendTooLarge`). For logging by the host. */
  onAppendTooLarge?: (spec: ShardSpec, info: AppendTooLarge) => void;
  /** A replica's checkpoints started failing, or one succeeded after failing (Replica `onCheckpointFailing`). For logging by the host. */
  onCheckpointFailing?: (spec: ShardSpec, info: { failures: number; err?: Error }) => void;
  /**
   * Background scrub: bytes of image pages and log records read and checked per second on this
   * device, one replica after another (Replica.scrubStep); default SCRUB_BYTES_PER_SECOND_DEFAULT;
   * 0 turns it off.
   */
  scrubBytesPerSecond?: number;
  /**
   * Told when damage was found in a replica that no peer can repair (a replica set of one): by
   * the scrub (its reads of the damaged data fail with `corruption`), or by a reopen whose log
   * ended below what it held durably before. For logging by the host.
   */
  onUnrepairable?: (spec: ShardSpec, err: StorageError) => void;
  /** Page cache bytes per shard; default 32 MiB. */
  cacheBytesMaxPerShard?: number;
  /** Log segment size; default 64 MiB. */
  segmentBytesMax?: number;
  /** Checkpoint a shard after this many records applied; default 65536 (0 = never). */
  checkpointEveryRecords?: number;
  /** Free space the device keeps: page writes are refused under it (DeviceQueue `spaceReserveBytes`). */
  spaceReserveBytes?: number;
  /**
   * Volumes whose page writes a device short of space still takes (ReplicaOptions.spaceExempt):
   * the catalog's, whose writes are how volumes are deleted, which frees space.
   */
  spaceExemptVolumes?: readonly string[];
  /**
   * Records of history each replica keeps readable at least, behind its newest image (reads at
   * an LSN, branch points): PageStore `retainLsns`. Default 0: the history since the second
   * newest image (between one and two checkpoints' worth).
   */
  retainRecords?: number;
  queue?: Omit<DeviceQueueOptions, 'disk' | 'name' | 'tracer'>;
  /** Traces the device queue's batches and fdatasyncs (actor hosts pass one when tracing is on). */
  queueTracer?: QueueTracer;
  /** Traces replication between the replicas on this device and their peers. */
  replicaTracer?: ReplicaTracer;
  /**
   * Write batches whose payload is at least this many bytes are checksummed on the CPU pool from
   * a slab handle; default 256 KiB; 0 turns the CPU pool off (everything on this thread).
   */
  crcOffloadBytesMin?: number;
  timing?: Partial<ReplicaTiming>;
  /**
   * The most one replication message may hold (the NATS server's max_payload); default 1 MiB.
   * Changed while the device runs by `setMessageBytesMax`.
   */
  messageBytesMax?: number;
  /** Restarts allowed per shard within restartWindowMs before it stays down; default 5. */
  restartsMax?: number;
  restartWindowMs?: number;
  nowMs?: () => number;
}

interface ShardEntry {
  spec: ShardSpec;
  storage: ShardStorage | undefined;
  replica: Replica | undefined;
  /** Why the replica is down, when it is. */
  downReason: StorageError | undefined;
  restarts: number[];
  /** Damage the replica found while it ran: its next open does not use the images named there. */
  damaged: CorruptionReport[] | undefined;
  /** How far its log was durable when the replica was last stopped (ShardStorage `durableLsn`). */
  durableLsn: number | undefined;
  /** Stopped because its device failed, not reopened since: its log is cut back to durableLsn (ShardStorage `afterDeviceFailure`). */
  afterDeviceFailure: boolean;
  /** Damage the scrub found that cannot be repaired (a set of one), as last reported. */
  lastUnrepairable?: string;
  /** Image files of a sole copy that a reopen could not rebuild (no older image and log left): not reported again. */
  unrepairable: string[];
  /** Its storage was opened before (on this node, or on this device since the host started): see ShardSpec.existing. */
  existed: boolean;
  /** An operator accepted the loss of a sole copy's damaged log (forceVote): its next open discards the damage. */
  acceptLoss?: boolean;
  /** In DeviceHost's list of replicas ticked every tick (not quiet at the last quiet tick, opened or woken since). */
  awake?: boolean;
  /**
   * The cumulative counters of the replicas this entry closed (to open again, or left down), as
   * they last were: added to its replica's own (stateOf), so that they never go down while the
   * host runs.
   */
  closed?: ShardCounters;
}

/** ReplicaStats' cumulative counters, with its page cache's. */
type ShardCounters = ReplicaCounters & { cache: CacheCounters };

/** The counters of `st`, alone. */
function countersOf(st: ShardCounters): ShardCounters {
  return {
    ...(Object.fromEntries(REPLICA_COUNTERS.map((k) => [k, st[k]])) as ReplicaCounters),
    cache: Object.fromEntries(CACHE_COUNTERS.map((k) => [k, st.cache[k]])) as CacheCounters,
  };
}

/** `st` with the counters of `closed` added. */
function addShardCounters<T extends ShardCounters>(closed: ShardCounters | undefined, st: T): T {
  if (closed === undefined) return st;
  const out = { ...st, cache: { ...st.cache } };
  for (const k of REPLICA_COUNTERS) out[k] += closed[k];
  for (const k of CACHE_COUNTERS) out.cache[k] += closed.cache[k];
  return out;
}

/**
 * The second rule of DeviceHost.destroyLeftovers: a shard directory of a volume whose id catalog
 * `tag` issued (number below `below`), not among `keep` (the shards the node records or is
 * assigned, by `shardKey`), is a leftover of the node's own.
 */
export interface ForgottenRule {
  tag: string;
  below: number;
  keep: readonly string[];
}

/** DeviceHost.replicaRoles: the replicas of a device that are down, and those that lead (with their set's members). */
export interface ReplicaRoles {
  down: Array<{ volumeId: string; shard: number }>;
  leading: Array<{ volumeId: string; shard: number; members: string[] }>;
}

export type ReplicaState = ReplicaStats & { state: 'up' | 'down'; downReason?: string; members: string[] };

/** A batch (writes and fdatasync) running longer than this makes its host unhealthy. */
export const DEVICE_STALL_MS = 10_000;

/**
 * What keeps a device from serving, for its host's health: failed, stalled in a batch longer than
 * `stallMs` (a disk that hangs: nothing is written or acknowledged meanwhile), or shards down.
 * Undefined when it serves.
 */
export function deviceProblem(st: DeviceHostStats, stallMs = DEVICE_STALL_MS): string | undefined {
  if (st.queue.state === 'failed') return 'device failed';
  if (st.queue.batchRunningMs > stallMs) return `device stalled: a write and flush have run for ${(st.queue.batchRunningMs / 1000).toFixed(1)} s`;
  const down = st.shards.filter((s) => s.state === 'down').length;
  return down > 0 ? `${down} shard(s) down` : undefined;
}

export interface DeviceHostStats {
  dir: string;
  /** The device's queue now, its counters summed over the queues before it (a failure replaces the queue). */
  queue: DeviceQueueStats;
  /** Times the device failed (a write or fdatasync failed): each reopened its replicas with a fresh queue. */
  failures: number;
  cpu: CpuPoolStats | undefined;
  /** The page caches' slab memory made resident ahead of use on the CPU pool (none without a pool). */
  slabWarm: SlabWarmerStats | undefined;
  restarts: number;
  /** Reopens of a running replica that found its storage damaged (counted in restarts too). */
  damageReopens: number;
  /** The background scrub: bytes checked, passes over a replica completed, damage found (a sole copy's counted once per change). */
  scrub: { bytes: number; passes: number; damage: number };
  fsyncFaultsInjected: number;
  /**
   * Background removals on this device that failed (trimmed log segments, images a checkpoint let
   * go, destroyed shards); each leftover is removed when its directory is next opened.
   */
  discardFailures: number;
  /** New replicas of branches that copied their parent's pages here (`seedShard`), and that could not (sent the shard by a peer instead). */
  branchCopies: { copied: number; notCopied: number };
  /** The hard-state journal: its size, the directories it holds, its batches and saves, its rewrites. */
  hardStates: HardStateJournalStats;
  shards: ReplicaState[];
}

/**
 * Default pace of the background scrub per device: a 1 GiB shard is checked in about 4.5 minutes,
 * at a CPU cost (checksums) of about 0.3 % of a core.
 */
export const SCRUB_BYTES_PER_SECOND_DEFAULT = 4 * 1024 * 1024;
/**
 * What a scrub step that checked less counts as, for pacing: at the default pace a device of
 * many small replicas (a step for the image, a step for the log of each) takes at most 4 such
 * steps a second. Each reads its replica's checkpoint pointer and runs a device task: at 64 KiB
 * they were a third of an idle host thread's CPU (docs/replication.md, "Known limits").
 */
const SCRUB_IDLE_STEP_BYTES = 1024 * 1024;

/** The counters of a DeviceQueue (its stats less its gauges and state). */
type QueueCounters = Pick<DeviceQueueStats, 'batches' | 'appendOps' | 'appendRecords' | 'appendBytes' | 'syncs' | 'syncMsSum' | 'syncMsMax' | 'batchOpsHistogram' | 'syncMsHistogram' | 'readOps' | 'diskReads' | 'readBytes' | 'tasks' | 'stateSaves' | 'stateBatches' | 'rejectedOverloaded' | 'rejectedNoSpace'>;

const QUEUE_SUMS = ['batches', 'appendOps', 'appendRecords', 'appendBytes', 'syncs', 'syncMsSum', 'readOps', 'diskReads', 'readBytes', 'tasks', 'stateSaves', 'stateBatches', 'rejectedOverloaded', 'rejectedNoSpace'] as const;

/** `current` with the counters of the queues before it added (`retired`: their sum so far). */
function addQueueCounters<T extends QueueCounters>(retired: QueueCounters | undefined, current: T): T {
  if (retired === undefined) return current;
  const out = { ...current };
  for (const k of QUEUE_SUMS) out[k] += retired[k];
  out.syncMsMax = Math.max(out.syncMsMax, retired.syncMsMax);
  out.batchOpsHistogram = current.batchOpsHistogram.map((n, i) => n + (retired.batchOpsHistogram[i] ?? 0));
  out.syncMsHistogram = current.syncMsHistogram.map((n, i) => n + (retired.syncMsHistogram[i] ?? 0));
  return out;
}

/** What `onReplicaError` did with the shard whose request failed. */
export interface ReplicaErrorOutcome {
  /** Reopened from durable state; else left down, for `downReason`. */
  restarted: boolean;
  downReason?: string;
}

/** Errors after which a replica's in-memory state cannot be trusted and is rebuilt from disk. */
const FATAL_CODES = new Set(['device_failed', 'fsync_failed', 'invariant']);

/** After a restart of `entry`'s replica: reopened, or left down with why. */
function outcomeOf(entry: ShardEntry | undefined): ReplicaErrorOutcome {
  const downReason = entry?.downReason?.message;
  return downReason === undefined ? { restarted: true } : { restarted: false, downReason };
}

/** The other nodes a replica of `spec` may hold the shard with: both sets of a move. */
function peersOf(spec: ShardSpec): number {
  return new Set([...spec.members, ...(spec.priorMembers ?? [])]).size - 1;
}

const unreachable: ReplicaTransport = {
  send: () => Promise.reject(new StorageError('closed', 'no transport to peers')),
};

export class DeviceHost {
  readonly dir: string;
  readonly self: string;
  private readonly faulty: FaultyDisk;
  private readonly disk: Disk;
  private readonly opts: DeviceHostOptions;
  private queue: DeviceQueue;
  /** The terms and votes of the device's replicas (one write and fdatasync for a batch of saves). */
  private readonly journal: HardStateJournal;
  private readonly shards = new Map<string, ShardEntry>();
  private readonly slab: Slab;
  private restartsTotal = 0;
  /** Times the device failed (a write or fdatasync), each followed by a fresh queue. */
  private deviceFailuresTotal = 0;
  /** The counters of the queues a device failure replaced. */
  private retiredQueue: QueueCounters | undefined;
  private damageReopensTotal = 0;
  /** Background scrub: a step is running; when the next may start; whose turn it is. */
  private scrubRunning = false;
  private scrubNextAtMs = 0;
  private scrubTurn = 0;
  private readonly scrubCounters = { bytes: 0, passes: 0, damage: 0 };
  private readonly branchCopies = { copied: 0, notCopied: 0 };
  /**
   * Shards whose new replica `seedShard` is copying from its parent now: not opened meanwhile,
   * and their directories not destroyed under the copy (`destroyLeftovers` leaves them;
   * `closeShard` with destroy marks them in `destroyAfterSeed`, for the copy's end).
   */
  private readonly seeding = new Set<string>();
  private readonly destroyAfterSeed = new Set<string>();
  private readonly nowMs: () => number;
  /** Quiet replicas are ticked once in each period of this length (the heartbeat period), at the first tick from quietTickAtMs. */
  private readonly quietTickMs: number;
  private quietTickAtMs = 0;
  /** The replicas ticked at every tick: not quiet at the last quiet tick, or opened or woken since. */
  private awake: ShardEntry[] = [];
  private readonly cpu: CpuPool | undefined;
  private readonly offload: PayloadOffload | undefined;
  private readonly warmer: SlabWarmer | undefined;

  constructor(opts: DeviceHostOptions) {
    this.opts = opts;
    this.dir = opts.dir;
    this.self = opts.self;
    this.faulty = new FaultyDisk(opts.disk ?? new RealDisk(opts.dir, opts.ioMarker ? { ioMarker: opts.ioMarker } : {}));
    this.disk = this.faulty;
    this.nowMs = opts.nowMs ?? (() => performance.now());
    this.quietTickMs = Math.max(1, opts.timing?.heartbeatMs ?? DEFAULT_TIMING.heartbeatMs);
    this.queue = this.newQueue();
    // One slab per device for the page caches of its shards. Slots hold the largest page size.
    const cacheBytes = opts.cacheBytesMaxPerShard ?? 32 * 1024 * 1024;
    const slotCount = Math.max(64, Math.ceil(cacheBytes / 8192) * 8);
    this.slab = new Slab({ slotBytes: 8192, slotCount: Math.min(slotCount, 1 << 20) });
    const offloadMin = opts.crcOffloadBytesMin ?? 256 * 1024;
    if (offloadMin > 0) {
      this.cpu = new CpuPool();
      // Slots for whole PageWrite payloads of the largest request (with its write id), a few per device.
      const payloadBytes = Math.ceil(pageWriteBytes(4096, PAGE_WRITE_PAGES_MAX, true) / 8) * 8;
      const payloads = new Slab({ slotBytes: payloadBytes, slotCount: 16 });
      const cpu = this.cpu;
      this.offload = { bytesMin: offloadMin, slab: payloads, crc32c: (sab, offset, length) => cpu.crc32c(sab, offset, length) };
      this.warmer = new SlabWarmer({ slab: this.slab, touch: (...args) => cpu.touch(...args) });
    }
    this.disk.mkdirp('shards');
    // Destroyed shards whose removal in the background a crash cut short.
    // (A failed removal is counted by the disk wrapper, in stats().discardFailures.)
    removeDiscarded(this.disk, 'shards', this.disk.list('shards'));
    this.journal = HardStateJournal.open(this.disk, {
      dirs: () => this.disk.list('shards').filter((name) => !isDiscardedName(name)).map((name) => joinPath('shards', name)),
    });
  }

  /**
   * Opens (creating or recovering) a replica on this device. Idempotent; an open of a replica
   * already open takes the spec's members (the node's record after a move) for its next reopen,
   * and its page count when larger (a volume that grew), at once.
   */
  openShard(spec: ShardSpec): ReplicaState {
    if (!spec.members.includes(this.self)) {
      throw new StorageError('bad_request', `shard ${spec.volumeId}/${spec.shard}: node ${this.self} is not one of its replicas`);
    }
    if (spec.priorMembers !== undefined && spec.priorMembers.includes(this.self)) {
      throw new StorageError('bad_request', `shard ${spec.volumeId}/${spec.shard}: node ${this.self} joins the shard in a move, so it is not one of the set it moves from`);
    }
    const key = shardKey(spec.volumeId, spec.shard);
    if (this.seeding.has(key)) {
      throw new ProtocolError('unavailable', `shard ${spec.volumeId}/${spec.shard}: its replica is being copied from its parent's here; open it once that is done`);
    }
    let entry = this.shards.get(key);
    if (!entry) {
      entry = { spec, storage: undefined, replica: undefined, downReason: undefined, restarts: [], damaged: undefined, durableLsn: undefined, afterDeviceFailure: false, unrepairable: [], existed: spec.existing === true };
      this.shards.set(key, entry);
    } else {
      if (spec.existing === true) entry.existed = true;
      // A volume grows and never shrinks (volume.resize): its storage first, so that whatever the
      // replica then takes, the store can apply.
      const pageCount = Math.max(entry.spec.pageCount, spec.pageCount);
      entry.spec = { ...spec, pageCount, existing: entry.existed };
      entry.storage?.grow(pageCount);
      entry.replica?.grow(pageCount);
      // The node's record after a move names the new set: a replica that missed the change (down
      // while it was made) takes the new set's leader's messages, and learns the change from them.
      entry.replica?.setKnownMembers([...new Set([...spec.members, ...(spec.priorMembers ?? [])])]);
    }
    if (!entry.replica) this.start(entry);
    return this.stateOf(entry);
  }

  /**
   * Before the first open of a branch's replica (`spec.seed`, not `existing`, not joining in a
   * move, not open here): writes the parent shard's pages as of the branch point into the new
   * replica's directory, from the parent's replica on this device, and marks them its state
   * (ShardStorage.seedFromImage): the open then starts the replica at that LSN. Waits up to
   * SEED_WAIT_MS for the parent's replica to apply the branch point (a follower behind) or to
   * end a checkpoint. Nothing is written when it cannot copy: no replica of the parent here
   * (down, or placed elsewhere), the branch point no longer readable (`trimmed`), the wait ran
   * out, or the copy could take the device under its reserve of free space (its size bounded by
   * the parent's `imageBytesBound`); the replica then opens empty and waits for a peer to send it
   * the shard (ReplicaOptions.seedLsn keeps it from leading meanwhile).
   */
  async seedShard(spec: ShardSpec, clock: () => number = Date.now): Promise<SeedResult> {
    const seed = spec.seed;
    if (seed === undefined || seed.lsn === 0) return { seeded: false, reason: 'nothing to copy' };
    const key = shardKey(spec.volumeId, spec.shard);
    if (spec.existing === true || spec.priorMembers !== undefined || this.shards.has(key)) return { seeded: false, reason: 'not a new replica of the branch' };
    const dir = joinPath('shards', key);
    if (ShardStorage.heldState(this.disk, dir, this.journal).length > 0) return { seeded: false, reason: 'its directory holds a replica already' };
    if (this.seeding.has(key)) return { seeded: false, reason: 'a copy of it is under way already' };
    this.seeding.add(key);
    try {
      const r = await this.copyFromParent(spec, seed, dir, clock);
      if (r.seeded) this.branchCopies.copied++;
      else this.branchCopies.notCopied++;
      return r;
    } finally {
      this.seeding.delete(key);
      // Closed with destroy while it was copied (its volume deleted meanwhile): destroyed now.
      if (this.destroyAfterSeed.delete(key)) this.destroyDir(key);
    }
  }

  /** seedShard's copy, once it is known to be wanted. */
  private async copyFromParent(spec: ShardSpec, seed: { volumeId: string; lsn: number }, dir: string, clock: () => number): Promise<SeedResult> {
    const endMs = clock() + SEED_WAIT_MS;
    for (;;) {
      const parent = this.shards.get(shardKey(seed.volumeId, spec.shard))?.replica;
      if (parent === undefined) return notCopied(`no replica of shard ${spec.shard} of volume ${seed.volumeId} on this device`);
      try {
        if (parent.appliedLsn >= seed.lsn) {
          // Not a copy that could take the device under its reserve: every shard on it would
          // then refuse page writes.
          const space = this.queue.space();
          const need = parent.imageBytesBound();
          if (space !== undefined && space.freeBytes - need < space.reserveBytes) {
            return notCopied(`the copy could take ${need} bytes, and the device has ${space.freeBytes} free, with a reserve of ${space.reserveBytes}`, true);
          }
          this.disk.mkdirp(dir);
          // In the branch's size, which its storage opens with (the parent's replica may have
          // grown past it: a resize whose nodes took the size and whose catalog did not yet).
          await parent.exportImage(seed.lsn, dir, Math.min(spec.pageCount, parent.geometry.pageCount));
          ShardStorage.seedFromImage(this.disk, dir, seed.lsn, 0, this.journal);
          return { seeded: true, lsn: seed.lsn };
        }
      } catch (e) {
        // A checkpoint running on the parent's replica: asked again. Anything else is final.
        if (!(e instanceof ProtocolError && e.code === 'unavailable')) return notCopied((e as Error).message);
      }
      if (clock() >= endMs) return notCopied(`the parent's replica did not reach LSN ${seed.lsn} (applied ${parent.appliedLsn}) within ${SEED_WAIT_MS} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** The replica of a shard, or a typed error saying why there is none. */
  replica(volumeId: string, shard: number): Replica {
    const entry = this.shards.get(shardKey(volumeId, shard));
    if (!entry) throw new StorageError('closed', `shard ${volumeId}/${shard} is not open on this device`);
    if (!entry.replica) throw entry.downReason ?? new StorageError('device_failed', `shard ${volumeId}/${shard} is down`);
    return entry.replica;
  }

  /**
   * Operator override (`strata shard force-vote`) for this device's replica of a shard: a
   * repairing replica votes again (Replica.forceVote). A sole copy holding its damaged log
   * (ShardStorage `holdDamagedLog`) is first opened again with the damage discarded, and what
   * followed it: its pages then read as of the log's valid prefix.
   */
  async forceVote(volumeId: string, shard: number): Promise<ForceVoteResult> {
    const entry = this.shards.get(shardKey(volumeId, shard));
    let discarded: ForceVoteResult['discarded'];
    if (entry !== undefined && peersOf(entry.spec) === 0 && (entry.storage?.log.corruption.length ?? 0) > 0) {
      entry.acceptLoss = true;
      try {
        // Not `restart`: an operator's reopen is no failure, and counts toward no limit.
        this.stop(entry);
        this.start(entry);
      } finally {
        entry.acceptLoss = false;
      }
      // (A reopen that failed leaves the shard down: replica() throws why.)
      const kept = entry.storage?.log.lastLsn;
      if (kept !== undefined) discarded = { fromLsn: kept + 1, keptLsn: kept };
    }
    const result = await this.replica(volumeId, shard).forceVote();
    return discarded !== undefined ? { ...result, discarded } : result;
  }

  /** Why an open shard has no replica (its storage could not be opened, or it failed too often), or undefined. */
  downReason(volumeId: string, shard: number): StorageError | undefined {
    const entry = this.shards.get(shardKey(volumeId, shard));
    return entry === undefined || entry.replica !== undefined ? undefined : (entry.downReason ?? new StorageError('device_failed', `shard ${volumeId}/${shard} is down`));
  }

  /** The replica serving a shard now, or undefined (not open, or down). Never throws. */
  currentReplica(volumeId: string, shard: number): Replica | undefined {
    return this.shards.get(shardKey(volumeId, shard))?.replica;
  }

  /**
   * Called when a request on a shard failed, with the replica that handled it (`currentReplica`
   * when the request came in; undefined if the shard had none): on a device or invariant failure
   * the device's replicas are restarted from durable state. Returns true if a restart happened.
   *
   * A failure restarts once. The requests a failed batch held all fail with it, and one that
   * reached a replica already replaced, or a shard that is down, restarts nothing: each restart
   * counts against the shard's restartsMax, and one failed fdatasync under 16 writes in flight
   * left every shard of the device down for good before this rule.
   */
  onReplicaError(volumeId: string, shard: number, err: unknown, replica: Replica | undefined): ReplicaErrorOutcome | undefined {
    // An error without a code is a bug (TypeError…), treated like a broken invariant.
    const code = (err as { code?: unknown } | undefined)?.code;
    const codeText = typeof code === 'string' ? code : 'invariant';
    if (!FATAL_CODES.has(codeText)) return undefined;
    const entry = this.shards.get(shardKey(volumeId, shard));
    if (this.queue.failed) {
      // The device's state after a failed write or fdatasync is unknown: reopen every replica on
      // it from what is durable, with a fresh queue.
      this.restartAll();
    } else {
      if (entry === undefined || replica === undefined || entry.replica !== replica) return undefined;
      if (codeText === 'invariant') this.restart(entry);
      else this.restartAll();
    }
    // Reopened, or left down (its open failed, or it failed too often): the caller says which.
    return outcomeOf(entry);
  }

  /** Closes a replica; with destroy, removes its files durably. */
  closeShard(volumeId: string, shard: number, opts: { destroy?: boolean } = {}): void {
    const key = shardKey(volumeId, shard);
    const entry = this.shards.get(key);
    if (entry) {
      this.stop(entry);
      this.shards.delete(key);
    }
    if (!opts.destroy) return;
    if (this.seeding.has(key)) this.destroyAfterSeed.add(key);
    else this.destroyDir(key);
  }

  /** Removes a shard's directory durably. */
  private destroyDir(key: string): void {
    // Renamed away here, removed in the background: a shard of a few GiB is tens of 64 MiB
    // segments, 20–30 ms each to free, which would stall every other shard of the thread.
    const gone = discardTree(this.disk, joinPath('shards', key));
    this.disk.fsyncDir('shards');
    if (gone !== undefined) removeInBackground(this.disk, [gone]);
  }

  /** The shards open on this device (up or down) of the volumes `volumeIds`. */
  openShardsOf(volumeIds: ReadonlySet<string>): Array<{ volumeId: string; shard: number }> {
    return [...this.shards.values()].filter((e) => volumeIds.has(e.spec.volumeId)).map((e) => ({ volumeId: e.spec.volumeId, shard: e.spec.shard }));
  }

  /**
   * Destroys the shard directories that no open replica of this device uses and that are
   * leftovers of a destroy a crash cut short (the node forgets a shard durably before it
   * destroys its files): of deleted volumes (`volumeIds`), and, with `forgotten`, of a volume
   * whose id the catalog `forgotten.tag` issued (its number below `forgotten.below`) that the node
   * neither records nor is assigned (`forgotten.keep`, by `shardKey`). Renamed away and removed in
   * the background, as `closeShard` with destroy does. Returns the directories destroyed.
   */
  destroyLeftovers(volumeIds: ReadonlySet<string>, forgotten?: ForgottenRule): string[] {
    const keep = new Set(forgotten?.keep);
    const gone: Discarded[] = [];
    const names: string[] = [];
    try {
      for (const name of this.disk.list('shards')) {
        if (isDiscardedName(name)) continue;
        const key = parseShardKey(name);
        // Not one open, nor one a copy is writing (closeShard destroys it at the copy's end).
        if (key === undefined || this.shards.has(name) || this.seeding.has(name)) continue;
        const forgot = forgotten !== undefined && !keep.has(name) && idTag(key.volumeId) === forgotten.tag && (idNumber(key.volumeId) ?? Number.POSITIVE_INFINITY) < forgotten.below;
        if (!volumeIds.has(key.volumeId) && !forgot) continue;
        const g = discardTree(this.disk, joinPath('shards', name));
        if (g !== undefined) gone.push(g);
        names.push(name);
      }
      if (names.length > 0) this.disk.fsyncDir('shards');
    } finally {
      // Whatever was renamed away goes (a failure part-way leaves the rest for the next call).
      removeInBackground(this.disk, gone);
    }
    return names;
  }

  /**
   * Advances the replicas' clocks (elections, heartbeats) and expires waiting reads. A quiet
   * replica (Replica.quiet: quiesced, nothing waiting) is ticked once a heartbeat period only:
   * every replica is ticked at the first tick of each period of the clock (so that the
   * heartbeats quiesced leaders send together still travel together), and between those only
   * the replicas that were not quiet then, or were opened or woke since (Replica `onAwake`). A
   * quiet follower is not told when its quiet ends: it is ticked every tick from the next period.
   */
  tick(nowMs: number, wallMs: number): void {
    if (this.queue.failed) {
      this.restartAll();
      return;
    }
    if (nowMs >= this.quietTickAtMs) {
      this.quietTickAtMs = (Math.floor(nowMs / this.quietTickMs) + 1) * this.quietTickMs;
      for (const e of this.awake) e.awake = false;
      this.awake = [];
      for (const e of this.shards.values()) {
        this.tickReplica(e, nowMs, wallMs);
        if (e.replica !== undefined && !e.replica.quiet) this.markAwake(e);
      }
    } else {
      // Replicas woken by these ticks are added at the end, and ticked too.
      const awake = this.awake;
      for (let i = 0; i < awake.length; i++) this.tickReplica(awake[i]!, nowMs, wallMs);
    }
    this.scrubTick(nowMs);
    this.warmer?.poke();
  }

  private tickReplica(e: ShardEntry, nowMs: number, wallMs: number): void {
    const replica = e.replica;
    if (replica === undefined) return;
    try {
      replica.tick(nowMs);
      replica.expireWaiters(wallMs);
    } catch (err) {
      // Thrown out of a timer it would end the thread and every shard on it. Told once the
      // restart is made or refused, so that what is said is what happened.
      this.restart(e, err instanceof Error ? err : new Error(String(err)));
      this.opts.onTickError?.(e.spec, err, outcomeOf(e));
    }
  }

  /** Ticks `e`'s replica at every tick until the next quiet tick finds it quiet. */
  private markAwake(e: ShardEntry): void {
    if (e.awake === true) return;
    e.awake = true;
    this.awake.push(e);
  }

  /**
   * Starts the next background scrub step when it is due: one step at a time per device, the
   * replicas in turn (a replica's whole pass, then the next one's), paced so that the bytes
   * checked stay within `scrubBytesPerSecond`.
   */
  private scrubTick(nowMs: number): void {
    const rate = this.opts.scrubBytesPerSecond ?? SCRUB_BYTES_PER_SECOND_DEFAULT;
    if (rate <= 0 || this.scrubRunning || nowMs < this.scrubNextAtMs) return;
    const open = [...this.shards.values()].filter((e) => e.replica !== undefined);
    if (open.length === 0) return;
    const entry = open[this.scrubTurn % open.length]!;
    const replica = entry.replica!;
    this.scrubRunning = true;
    // scrubStep never rejects; should it ever, the scrub goes on rather than stopping for good.
    void replica.scrubStep().catch((): ScrubStepResult => ({ bytes: 0, passDone: true })).then((r) => {
      this.scrubRunning = false;
      this.scrubCounters.bytes += r.bytes;
      if (r.passDone) {
        this.scrubCounters.passes++;
        this.scrubTurn++;
      }
      // A step that checked little or nothing costs as much time as SCRUB_IDLE_STEP_BYTES, so
      // that a device of small replicas is not read in a loop.
      this.scrubNextAtMs = nowMs + (Math.max(r.bytes, SCRUB_IDLE_STEP_BYTES) / rate) * 1000;
      if (r.damage === undefined) return;
      if (r.reported === true) {
        this.scrubCounters.damage++; // It reported it itself (onDamage): reopened without the damage.
      } else if (entry.lastUnrepairable !== r.damage.message) {
        // Damage a sole copy keeps: each pass finds it again, reported when it changes.
        entry.lastUnrepairable = r.damage.message;
        this.scrubCounters.damage++;
        this.opts.onUnrepairable?.(entry.spec, r.damage);
      }
    });
  }

  /** Runs checkpoints of every open replica (through the queue). */
  async checkpointAll(): Promise<void> {
    for (const e of this.shards.values()) if (e.replica) await e.replica.checkpoint();
  }

  /** Fault injection: the device's next `times` fdatasyncs fail (Infinity: for good). */
  failFsync(times: number): void {
    this.faulty.failFsync(times);
  }

  /** Fault injection: the device's disk says it has `bytes` free (undefined: what it has), from its queue's next read of it. */
  setFreeBytes(bytes: number | undefined): void {
    this.faulty.setFreeBytes(bytes);
    this.queue.forgetSpace();
  }

  clearFaults(): void {
    this.faulty.clearFaults();
  }

  /**
   * Replication messages may hold `bytes` at most from now on (the NATS server was restarted with
   * another max_payload): every replica open now is told (Replica.setMessageBytesMax), and those
   * opened later are built with it (below MESSAGE_BYTES_MIN they refuse to open, as at start).
   */
  setMessageBytesMax(bytes: number): void {
    this.opts.messageBytesMax = bytes;
    for (const e of this.shards.values()) e.replica?.setMessageBytesMax(bytes);
  }

  stats(): DeviceHostStats {
    return {
      dir: this.dir,
      queue: addQueueCounters(this.retiredQueue, this.queue.stats()),
      failures: this.deviceFailuresTotal,
      cpu: this.cpu?.stats(),
      slabWarm: this.warmer?.stats(),
      restarts: this.restartsTotal,
      damageReopens: this.damageReopensTotal,
      scrub: { ...this.scrubCounters },
      fsyncFaultsInjected: this.faulty.injected,
      discardFailures: this.faulty.backgroundRemoveFailures,
      hardStates: this.journal.stats(),
      branchCopies: { ...this.branchCopies },
      shards: [...this.shards.values()].map((e) => this.stateOf(e)),
    };
  }

  /**
   * Hands the leadership of every shard led here to another of its replicas, all at once
   * (Replica.transferLeadership; docs/replication.md, "Handing leadership over"), waiting at most
   * `waitMs`: before the host stops, so that the shards do not wait an election timeout for a
   * leader. How many the followers took over, and how many did not (those lead on until the stop,
   * then elect as after any leader's end).
   */
  async handOffLeadership(waitMs: number): Promise<{ handed: number; kept: number }> {
    const leading = [...this.shards.values()].flatMap((e) => (e.replica !== undefined && e.replica.isLeader && e.replica.members.length > 1 ? [e.replica] : []));
    if (leading.length === 0) return { handed: 0, kept: 0 };
    let handed = 0;
    const all = Promise.all(
      leading.map(async (r) => {
        try {
          await r.transferLeadership();
          handed++;
        } catch {
          // Leads on: it refused (a change of its set under way, say) or its follower did not take over.
        }
      }),
    );
    // Those not handed over by then lead on until the stop.
    await withTimeout(all, waitMs, () => new Error('handovers not done')).catch(() => undefined);
    return { handed, kept: leading.length - handed };
  }

  /**
   * Without the cost of `stats()`: the shards whose replica is down (opened, not running: failed
   * to open, or left down), and those whose replica leads, with the members of its set in force.
   */
  replicaRoles(): ReplicaRoles {
    const out: ReplicaRoles = { down: [], leading: [] };
    for (const e of this.shards.values()) {
      if (!e.replica) out.down.push({ volumeId: e.spec.volumeId, shard: e.spec.shard });
      else if (e.replica.isLeader) out.leading.push({ volumeId: e.spec.volumeId, shard: e.spec.shard, members: [...e.replica.members] });
    }
    return out;
  }

  /** Drains the queue and closes every replica. */
  async close(): Promise<void> {
    for (const e of this.shards.values()) e.replica?.close();
    await this.queue.drain();
    for (const e of this.shards.values()) this.stop(e);
    this.shards.clear();
    this.journal.close();
    this.warmer?.close();
    await this.cpu?.close();
  }

  private stateOf(e: ShardEntry): ReplicaState {
    // Up, the replica's own configuration: after a move, the set its log holds.
    // Its counters go on from those of the replicas it replaced.
    if (e.replica) {
      const st = addShardCounters(e.closed, e.replica.stats());
      return { ...st, state: 'up', members: st.config.members };
    }
    return addShardCounters(e.closed, {
      volumeId: e.spec.volumeId, shard: e.spec.shard, self: this.self, role: 'follower', term: 0, leader: null,
      commitLsn: 0, appliedLsn: 0, firstLsn: 0, lastLsn: 0, lag: {}, heldRecords: 0, heldBytes: 0, writeIdsHeld: 0, writeIdsKnownMs: 0, repairing: false, config: { members: [...e.spec.members] },
      ...noReplicaCounters(), quiesced: false,
      cache: { hits: 0, misses: 0, evictions: 0, damaged: 0, bytes: 0 }, state: 'down', members: e.spec.members, ...(e.downReason ? { downReason: e.downReason.message } : {}),
    });
  }

  private newQueue(): DeviceQueue {
    return new DeviceQueue({
      ...(this.opts.queue ?? {}),
      ...(this.opts.spaceReserveBytes !== undefined ? { spaceReserveBytes: this.opts.spaceReserveBytes } : {}),
      disk: this.disk,
      name: this.dir,
      ...(this.opts.queueTracer ? { tracer: this.opts.queueTracer } : {}),
    });
  }

  /** Opens the storage of a shard's replica on this device. */
  private openStorage(entry: ShardEntry, damaged: readonly CorruptionReport[] | undefined): ShardStorage {
    const spec = entry.spec;
    return ShardStorage.open(this.disk, {
      dir: joinPath('shards', shardKey(spec.volumeId, spec.shard)),
      pageSize: spec.pageSize,
      pageCount: spec.pageCount,
      cacheBytesMax: this.opts.cacheBytesMaxPerShard ?? 32 * 1024 * 1024,
      slab: this.slab,
      ...(this.opts.segmentBytesMax ? { segmentBytesMax: this.opts.segmentBytesMax } : {}),
      ...(this.opts.retainRecords ? { retainLsns: this.opts.retainRecords } : {}),
      // A sole copy keeps damage of its log (read-only, reported), waiting for an operator:
      // nobody could give the records back. Once the operator accepted the loss, it is discarded.
      repairFromPeers: peersOf(spec) > 0 || entry.acceptLoss === true,
      holdDamagedLog: peersOf(spec) === 0,
      ...(damaged ? { damaged } : {}),
      ...(entry.durableLsn !== undefined ? { durableLsn: entry.durableLsn } : {}),
      ...(entry.afterDeviceFailure ? { afterDeviceFailure: true } : {}),
      expectExisting: entry.existed,
      writeIdsKept: WRITE_IDS_READ_AT_OPEN,
      journal: this.journal,
    });
  }

  private start(entry: ShardEntry): void {
    const spec = entry.spec;
    try {
      let storage: ShardStorage;
      const sole = peersOf(spec) === 0;
      const damaged = entry.damaged;
      try {
        storage = this.openStorage(entry, damaged);
      } catch (e) {
        // A sole copy whose damaged image cannot be rebuilt (no older image and log hold what it
        // held), or whose rebuild failed otherwise: it opens as it was, serving what is not
        // damaged, and that damage is not reported again. (A replica of several starts over
        // instead, and is given everything.)
        if (damaged === undefined || !sole) throw e;
        entry.unrepairable.push(...damaged.map((d) => d.file));
        this.opts.onUnrepairable?.(spec, e instanceof CorruptionError ? e : new CorruptionError(`rebuilding a damaged image failed: ${(e as Error).message}`, [...damaged]));
        storage = this.openStorage(entry, undefined);
      }
      if (sole && damaged !== undefined) {
        // Damaged images the open did not act on (it did not need them: a log that ends below
        // them) are still there: not reported again, or the copy would be reopened in a loop.
        const actedOn = new Set(storage.repaired.map((r) => r.file));
        for (const d of damaged) if (!actedOn.has(d.file) && !entry.unrepairable.includes(d.file)) entry.unrepairable.push(d.file);
      }
      entry.storage = storage;
      entry.damaged = undefined;
      entry.afterDeviceFailure = false;
      entry.existed = true;
      if (storage.storageLost) this.opts.onStorageLost?.(spec);
      if (sole && storage.log.corruption.length > 0) this.opts.onDamagedLogHeld?.(spec, storage.log.corruption, storage.log.lastLsn);
      // An operator's acceptance of a sole copy's loss (forceVote) is logged by whoever asked.
      if (storage.repaired.length > 0 && entry.acceptLoss !== true) {
        if (!sole || !storage.lostRecords) this.opts.onRepaired?.(spec, storage.repaired, storage.lostRecords);
        else this.opts.onUnrepairable?.(spec, new CorruptionError(`shard ${spec.volumeId}/${spec.shard}: ${storage.repaired.map((r) => r.reason).join('; ')}`, [...storage.repaired]));
      }
      const replica: Replica = new Replica({
        geometry: spec,
        self: this.self,
        members: spec.members,
        ...(spec.priorMembers !== undefined ? { priorMembers: spec.priorMembers } : {}),
        log: storage.log,
        store: storage.store,
        queue: this.queue,
        hardState: storage,
        snapshots: storage,
        transport: this.opts.transportFor?.(spec) ?? unreachable,
        nowMs: this.nowMs(),
        clock: this.nowMs,
        writeIdsAtOpen: storage.takeWriteIdsAtOpen(Date.now()),
        checkpointEveryRecords: this.opts.checkpointEveryRecords ?? 65536,
        ...(this.opts.spaceExemptVolumes?.includes(spec.volumeId) === true ? { spaceExempt: true } : {}),
        ...(spec.seed !== undefined ? { seedLsn: spec.seed.lsn } : {}),
        ...(spec.newCluster === true ? { newIfMajorityEmpty: true } : {}),
        ...(this.opts.messageBytesMax !== undefined ? { messageBytesMax: this.opts.messageBytesMax } : {}),
        ...(this.opts.timing ? { timing: this.opts.timing } : {}),
        ...(this.offload ? { offload: this.offload } : {}),
        ...(this.opts.replicaTracer ? { tracer: this.opts.replicaTracer } : {}),
        onRoleChange: (role, term, reason) => this.opts.onRoleChange?.(spec, role, term, reason),
        onAwake: () => {
          if (entry.replica === replica) this.markAwake(entry);
        },
        unrepairable: entry.unrepairable,
        // Reopened after the call that found the damage has unwound.
        onDamage: (err) => queueMicrotask(() => this.repairDamage(entry, replica, err)),
        onFailure: (err) => queueMicrotask(() => this.replicaFailed(entry, replica, err)),
        ...(this.opts.onAppendTooLarge ? { onAppendTooLarge: (info: AppendTooLarge) => this.opts.onAppendTooLarge?.(spec, info) } : {}),
        ...(this.opts.onCheckpointFailing ? { onCheckpointFailing: (info: { failures: number; err?: Error }) => this.opts.onCheckpointFailing?.(spec, info) } : {}),
      });
      entry.replica = replica;
      entry.downReason = undefined;
      this.markAwake(entry);
    } catch (e) {
      entry.replica = undefined;
      entry.storage = undefined;
      entry.downReason =
        e instanceof StorageError ? e : new StorageError('device_failed', `cannot open shard: ${(e as Error).message}`, undefined, e);
    }
  }

  private stop(entry: ShardEntry): void {
    if (entry.replica) {
      entry.closed = addShardCounters(entry.closed, countersOf(entry.replica.stats()));
      entry.replica.close();
    }
    entry.replica = undefined;
    if (entry.storage) entry.durableLsn = Math.min(entry.storage.log.syncedLsn, entry.storage.log.lastLsn);
    try {
      entry.storage?.close();
    } catch {
      // Closing after a device failure may fail again; the state is rebuilt from disk anyway.
    }
    entry.storage = undefined;
  }

  /** Stops the replica of `entry` and opens it again; left down (`downReason`) once it failed restartsMax times in the window. `cause`: what made it fail, named in that reason. */
  private restart(entry: ShardEntry, cause?: Error): void {
    const now = this.nowMs();
    const windowMs = this.opts.restartWindowMs ?? 60_000;
    entry.restarts = entry.restarts.filter((t) => now - t < windowMs);
    this.stop(entry);
    if (entry.restarts.length >= (this.opts.restartsMax ?? 5)) {
      entry.downReason = new StorageError(
        'device_failed',
        `shard ${entry.spec.volumeId}/${entry.spec.shard} failed ${entry.restarts.length} times in ${windowMs} ms; left down${cause ? `; last: ${cause.message}` : ''}`,
      );
      return;
    }
    entry.restarts.push(now);
    this.restartsTotal++;
    this.start(entry);
  }

  /**
   * A running replica found its storage damaged: it is reopened without the damaged images
   * (ShardStorage `damaged`; damage of its log is found by the open itself).
   */
  private repairDamage(entry: ShardEntry, replica: Replica, err: CorruptionError): void {
    if (entry.replica !== replica || this.shards.get(shardKey(entry.spec.volumeId, entry.spec.shard)) !== entry) return;
    this.opts.onDamage?.(entry.spec, err);
    this.damageReopensTotal++;
    entry.damaged = [...(entry.damaged ?? []), ...err.reports];
    this.restart(entry);
  }

  /** A running replica cannot go on (Replica `onFailure`): restarted, or left down, as after a request's fatal error. */
  private replicaFailed(entry: ShardEntry, replica: Replica, err: Error): void {
    if (entry.replica !== replica || this.shards.get(shardKey(entry.spec.volumeId, entry.spec.shard)) !== entry) return;
    this.restart(entry, err);
    this.opts.onFailure?.(entry.spec, err, outcomeOf(entry));
  }

  private restartAll(): void {
    for (const e of this.shards.values()) this.stop(e);
    if (this.queue.failed) {
      this.deviceFailuresTotal++;
      // What a log holds after its durable LSN came from the failed batch (or was never flushed):
      // its reopen cuts it. Only on a failed queue: no flush of it can still end, and answer,
      // after the cut.
      for (const e of this.shards.values()) e.afterDeviceFailure = true;
    }
    // The device's counters go on across its queues: only a host restart starts them over.
    this.retiredQueue = addQueueCounters(this.retiredQueue, this.queue.stats());
    this.queue = this.newQueue();
    for (const e of this.shards.values()) {
      if (e.downReason && e.restarts.length >= (this.opts.restartsMax ?? 5)) continue;
      this.restart(e);
    }
  }
}
