/**
 * Replica: one copy of a shard's log, and — when elected — the shard's leader (ShardActor role).
 *
 * The protocol is Raft's, per shard (see docs/replication.md):
 * - Acceptor role (every replica): durable term and vote (saved before any reply that depends on
 *   them), appends accepted only from the current term with log matching on (prevLsn, prevTerm),
 *   a divergent uncommitted suffix truncated, fdatasync (group commit through the device queue)
 *   before acknowledging.
 * - Election: after a randomized timeout without a leader, a replica asks for votes; a voter grants
 *   at most one vote per term and only to a candidate whose log is at least as up to date as its
 *   own. With a majority the candidate leads, appends a no-op record of its term, and serves reads
 *   only once that record is committed and applied (so it has every committed write).
 * - Leader: assigns LSNs, appends locally through the device queue and to each follower (one append
 *   message in flight per follower, carrying everything accumulated meanwhile), commits an LSN once
 *   a majority holds it durably and it is of the leader's term, applies in LSN order, and only then
 *   answers (output gating). A leader that has not heard from a majority for an election timeout
 *   steps down; reads at the latest LSN are served under a lease (majority contact within the
 *   election timeout, minus a clock-drift margin) or after a quorum round.
 * - Catch-up: a follower that is behind is sent records from the leader's log; one that needs
 *   records the leader has trimmed is sent the leader's newest checkpoint image first.
 *
 * Logic only: messages go through `transport`, durable state through the device queue and the
 * injected stores, time arrives as `tick(nowMs)` and `nowMs` arguments.
 */
import type { DeviceQueue } from './device-queue';
import type { SegmentLog } from '../storage-engine/log';
import { digestRecords, type LogDigest } from '../storage-engine/log-digest';
import { crc32c } from '../storage-engine/crc32c';
import { checkPageDataCrc } from '../storage-engine/page-data-crc';
import { GET_PAGES_MAX, type CachedPages, type CheckpointStep, type PageStore } from '../storage-engine/page-store';
import { encodePageWrite, pageWriteBytes, pageWritePayloadCrc, pagesOfPageWrite } from '../storage-engine/page-write';
import { decodePageZero, encodePageZero, type PageRange } from '../storage-engine/page-zero';
import { requestArena } from '../storage-engine/arena';
import { RecordKind, type LogRecord, type LogRecordInput } from '../storage-engine/record';
import { RECORD_HEADER_BYTES } from '../storage-engine/log-segment';
import { IMAGE_BYTES_MIN, imagePageCountOf, isImagePath } from '../storage-engine/image';
import type { StateSink } from '../storage-engine/hard-state-journal';
import { CorruptionError, StorageError, assert } from '../storage-engine/errors';
import { ProtocolError } from '../messages/errors';
import { PAGE_DIGEST_BYTES_MAX } from '../messages/control';
import { checkReadReplyBytes, expectCrc } from '../messages/validate';
import { SHARD_MAP_RANGES_MAX, WRITE_SENT_SKEW_MS, type WriteRecordRef } from '../messages/api';
import { MESSAGE_BYTES_MAX, decode, encode } from '../messages/codec';
import type {
  RaftRequest, RaftReply, VoteRequest, VoteReply, AppendRequest, AppendReply, SnapshotRequest, SnapshotReply, WireRecord, TimeoutNowRequest, TimeoutNowReply,
} from '../messages/raft';
import { sameNodeSet as sameSet, validateConfig } from '../messages/raft';
import { shardOfPage, type ShardGeometry, type PageData, type PayloadOffload } from './shard';
import { WRITE_ID_KEEP_MS, WriteIds, type WriteIdRecord } from './write-ids';
import { writeIdOfRecord, type LogWriteIdList } from '../storage-engine/log-write-ids';

export type Role = 'follower' | 'candidate' | 'leader';

/** Sends a request to another replica of this shard; rejects on timeout or when unreachable. */
export interface ReplicaTransport {
  /**
   * Sends a message to a peer and resolves with its answer. A peer that refuses it (answers an
   * error) rejects with ProtocolError `unavailable` whose `details.refused` is the peer's error
   * code (and `details.refusedMessage` its message): the peer's failure is not this replica's,
   * and must not be taken for one of its own.
   */
  send(to: string, msg: RaftRequest, timeoutMs: number): Promise<RaftReply>;
  /**
   * Sends one append to several followers as one message (the leader's bytes leave it once) and
   * returns each one's answer, in the order of `to`, each failing on its own as `send` would.
   * Optional: without it every follower is sent its own message.
   */
  sendEach?(to: readonly string[], msg: AppendRequest, timeoutMs: number): Promise<RaftReply>[];
  /**
   * When a message from node `id` last reached this replica's host, on the replica's clock
   * (undefined: never): from the host of `id` this shard's heartbeats come from, where the
   * transport knows it, else from any of its hosts. Optional: without it, no shard of this
   * replica quiesces (a follower could not tell that its quiesced leader's node is gone).
   */
  seenMs?(id: string): number | undefined;
}

/**
 * Tracing of replication, injected by the host (this module knows nothing of the tracing
 * library). `capture()` is called when a client write is sequenced, and its value is kept with
 * the write's record while the leader holds it in memory; every message to a follower is sent
 * inside `send(values of the writes it carries, run)`, so the host can relate one append to the
 * many writes it replicates. Values are opaque here. Without a tracer nothing of this runs.
 */
export interface ReplicaTracer {
  capture(): unknown;
  send<T>(tags: readonly unknown[], run: () => T): T;
}

export interface HardState {
  term: number;
  votedFor: string | null;
  /**
   * Set when this replica's log lost records it may have acknowledged (damage repaired at open,
   * at this term): it neither votes nor campaigns until it holds everything that may have been
   * committed with those acknowledgements (see Replica.checkRepaired).
   */
  repairTerm?: number;
  /**
   * Set when this replica's term and vote were lost (its node held the replica, and the open
   * found none saved, or found them unreadable: a wiped or replaced disk, or the hard state alone;
   * its records, if any, are kept). It may have voted, and acknowledged records, in terms it no
   * longer knows of; with `repairTerm` also set, it neither votes nor campaigns. It first learns
   * the term of every peer (Replica.probeTerms): each term it voted in was saved by its candidate
   * first, so the highest of them bounds those terms. It then takes that term, as if it had voted
   * in it, and is repaired as a replica that lost records; unless no peer holds a record (it votes
   * at once) or no peer ever campaigned (a new replica). A sole copy has no peer to ask: it waits
   * for forceVote.
   */
  lost?: boolean;
}

/** Durable term and vote; `save` returns once they are on disk. */
export interface HardStateStore {
  load(): HardState | undefined;
  save(state: HardState): void;
  /**
   * Where the device queue may save them in one batch with other replicas' (DeviceQueue.saveState:
   * one write and fdatasync for all; the device's hard-state journal), the key of this replica
   * there, and the check that refuses a save once the store is closed; absent: each is saved on
   * its own (`save`, as a task of the queue).
   */
  readonly stateSink?: { sink: StateSink; key: string; check: () => void } | undefined;
  /**
   * The replica-set configurations its log recorded (ConfigState), kept beside the term and vote
   * in their own file; absent from a store that keeps none (the set given at creation holds).
   */
  loadConfig?(): ConfigState | undefined;
  /** Replaces them atomically; returns once they are on disk. */
  saveConfig?(state: ConfigState): void;
}

/**
 * A replica set: its `members`, and during a change (joint consensus) the set it is changing
 * from, `prior`. A decision (a vote, a commit, a lease) then needs a majority of each.
 */
export interface ReplicaConfig {
  members: string[];
  prior?: string[];
}

/**
 * The configurations of a replica's log: `base`, in force up to the first of `changes`, and
 * each change with the LSN and term of its Config record. The configuration in force is the
 * last one (a record counts from the moment it is in the log, committed or not, as Raft's
 * configuration entries do). Saved before a Config record is appended, so a change the log
 * holds is always known; one whose record the log does not hold (cut, or never written) is
 * dropped at the next open.
 */
export interface ConfigState {
  base: ReplicaConfig;
  changes: ConfigChange[];
}

/**
 * The configuration in force from the record at (`lsn`, `term`) on: a Config record's, or, with
 * `image`, the one an installed image was sent with (the record at its LSN is of any kind).
 */
export interface ConfigChange {
  lsn: number;
  term: number;
  config: ReplicaConfig;
  image?: boolean;
}

/** Whether `config` names node `id`, in its set or (during a change) in the set it changes from. */
function namesNode(config: ReplicaConfig, id: string): boolean {
  return config.members.includes(id) || (config.prior?.includes(id) ?? false);
}

/** Replicas a replica whose storage was lost asks for their term at most (its peers, and the members they name). */
const TERMS_PROBED_MAX = 16;

/** How long a membership change may take when the caller gives no deadline. */
const RECONFIGURE_DEADLINE_MS = 30_000;

/** Turns of a change of the replica set before it is answered `unavailable` (each moves it a step: begun, joint committed, the set alone appended, done). */
const RECONFIGURE_STEPS = 6;

/** Changes a replica keeps at most; older committed ones fold into the base. */
const CONFIG_CHANGES_KEPT = 16;

function sameConfig(a: ReplicaConfig, b: ReplicaConfig): boolean {
  return sameSet(a.members, b.members) && sameSet(a.prior ?? [], b.prior ?? []);
}

/** The payload of a Config record: the CBOR of the replica set. */
export function encodeConfig(config: ReplicaConfig): Uint8Array {
  return encode(config.prior !== undefined ? { members: config.members, prior: config.prior } : { members: config.members });
}

/** Reads a Config record's payload; ProtocolError `bad_request` when it is not a replica set. */
export function decodeConfig(payload: Uint8Array): ReplicaConfig {
  return validateConfig(decode(payload));
}

/** The two ends of a promise someone waits on. */
interface Settle<T> {
  resolve(value: T): void;
  reject(e: Error): void;
}

/** What Replica.transferLeadership did: the term this replica led, and the follower it handed it to. */
export interface TransferResult {
  term: number;
  to: string;
}

/** What Replica.reconfigure did. */
export interface ReconfigureResult {
  /** The replica set in force now, committed. */
  members: string[];
  term: number;
  /** LSN of the record that made it (or of the leader's last record when nothing changed). */
  lsn: number;
  /** False when the set already was `members` and nothing was written. */
  changed: boolean;
}

/** Newest checkpoint image of this replica, to send to a follower that needs it. */
export interface SnapshotSource {
  lsn: number;
  term: number;
  bytes: number;
}

/** Checkpoint-image transfer: reading ours, installing one received from the leader. */
export interface SnapshotIO {
  newest(): SnapshotSource | undefined;
  read(lsn: number, offset: number, length: number): Uint8Array;
  /** Starts receiving an image (discarding any partial one). */
  begin(lsn: number, term: number, bytes: number): void;
  write(offset: number, data: Uint8Array): void;
  /** Validates the image, makes it this replica's state (log continues at lsn+1), and returns the new log and store. */
  install(): { log: SegmentLog; store: PageStore };
  /** Drops the image being received, if any (not installed: this replica's log caught up meanwhile). */
  discardIncoming(): void;
  /**
   * Checks every page of our image at `lsn`, one bounded read per step (CorruptionError when one
   * is damaged): asked when a follower found the copy it was sent damaged, and by the scrub.
   */
  verifySteps(lsn: number): Iterator<void, void, void>;
  /** LSN of our newest image (0 if none), without opening it. */
  newestLsn(): number;
}

export interface ReplicaTiming {
  /** Election timeout, randomized in [min, max); default 300..600 ms. */
  electionTimeoutMinMs: number;
  electionTimeoutMaxMs: number;
  /**
   * Heartbeat period of a leader; default 100 ms: 3 within the minimum election timeout, and the
   * lease (0.75 of it) is renewed twice within its span. Before idle shards quiesced
   * (quiescedHeartbeatMs), an idle shard cost its heartbeats: 50 ms cost a cluster with an idle
   * volume of 256 shards × 3 0.78–0.92 of a core (100 ms: 0.50–0.54) (docs/replication.md).
   */
  heartbeatMs: number;
  /** Deadline of one message to a peer; default 1000 ms. */
  rpcTimeoutMs: number;
  /** Fraction of the election timeout a leader may serve reads from its lease; default 0.75. */
  leaseFraction: number;
  /**
   * An idle shard quiesces after this long without a request (docs/replication.md, "Idle
   * shards"); default 2000 ms.
   */
  quiesceAfterMs: number;
  /**
   * Heartbeat period of a quiesced leader; default 1000 ms. Its followers wait for its next
   * message up to QUIESCED_WAIT_BEATS of these while they hear from its host.
   */
  quiescedHeartbeatMs: number;
}

/** Election timeouts a new replica other than its shard's chosen first candidate waits before its first election. */
export const FIRST_ELECTION_WAIT = 3;

export const DEFAULT_TIMING: ReplicaTiming = {
  electionTimeoutMinMs: 300,
  electionTimeoutMaxMs: 600,
  heartbeatMs: 100,
  rpcTimeoutMs: 1000,
  leaseFraction: 0.75,
  quiesceAfterMs: 2000,
  quiescedHeartbeatMs: 1000,
};

/**
 * A quiesced follower whose leader's host it hears from waits this many quiesced heartbeat
 * periods for the leader's own next message before it campaigns: the bound when the leader's
 * replica is gone and its host is not (a replica restarted in place), or when the transport
 * knows the leader's node only (a leader of an older version, whose heartbeats name no host).
 */
export const QUIESCED_WAIT_BEATS = 3;

export interface ReplicaOptions {
  geometry: ShardGeometry;
  /** This replica's id (its node id) and every replica's id, itself included. */
  self: string;
  members: readonly string[];
  /**
   * For a replica that joins a shard whose set changes from `priorMembers` to `members` (it is
   * created on a new node): it starts under that joint configuration, until its log or an image
   * it is sent says otherwise. `members` must then hold `self`. Ignored when its storage
   * recorded a configuration.
   */
  priorMembers?: readonly string[];
  log: SegmentLog;
  store: PageStore;
  queue: DeviceQueue;
  hardState: HardStateStore;
  transport: ReplicaTransport;
  snapshots?: SnapshotIO;
  timing?: Partial<ReplicaTiming>;
  /** Random numbers in [0, 1) for election timeouts (injected for deterministic tests). */
  random?: () => number;
  /** Told when this replica becomes leader or stops being leader (with why it stopped). */
  onRoleChange?: (role: Role, term: number, reason?: string) => void;
  /**
   * Told when a quiesced leader wakes (a request, a handover, a candidate's message): a host
   * that ticks its quiet replicas once a heartbeat period only (`quiet`) ticks it every tick
   * again from then on.
   */
  onAwake?: () => void;
  /**
   * Told, once, when this replica finds its own storage damaged while it runs: an image page or a log record failed its checksum on a read, a checkpoint, a
   * catch-up or a scrub step, or a follower found the image it was sent damaged and ours is too.
   * The error's reports name the damaged file. The host reopens the replica without the damaged
   * images (ShardStorage `damaged`): they are rebuilt from what is left, or the peers give back
   * what was lost. A sole replica is told only of damaged images, which it can rebuild from an
   * older image and its log, and not of files in `unrepairable`; otherwise (nobody could give
   * back what was lost) its reads of the damaged data fail with `corruption`.
   */
  onDamage?: (err: CorruptionError) => void;
  /**
   * Told, once, when this replica cannot go on and the error reached no request that could carry
   * it to the host: a committed record it cannot apply (a malformed page write, or one past the
   * shard's pages; only a bug, or a forged append before followers checked their records, puts
   * one in a log). The host restarts the replica, and leaves it down with this reason once it
   * failed too often; the host's other replicas go on. Without it the error is thrown, which
   * ends the thread.
   */
  onFailure?: (err: Error) => void;
  /**
   * Told when a follower's transport refused an append of this leader as larger than a message
   * may be (`too_large`: the NATS server's max_payload is below what this replica was told):
   * once when its appends to that follower are first made smaller, and once more (`oneRecord`)
   * when even one record is refused, until the follower's bound is reset (`setMessageBytesMax`,
   * a new term).
   */
  onAppendTooLarge?: (info: AppendTooLarge) => void;
  /**
   * Told when a checkpoint failed for a reason other than damage (which `onDamage` is told):
   * once when they start failing (`failures` 1), and once when one succeeds after failing
   * (`failures`: how many failed in between, `err` undefined).
   */
  onCheckpointFailing?: (info: { failures: number; err?: Error }) => void;
  /** Files whose damage the host found it cannot repair (a sole copy): not reported again. */
  unrepairable?: readonly string[];
  offload?: PayloadOffload;
  checkpointEveryRecords?: number;
  /**
   * Page writes go on when its device is short of space (DeviceQueue.checkWriteSpace): the
   * catalog shard's, whose writes are small and are how volumes are deleted, which frees space.
   */
  spaceExempt?: boolean;
  /**
   * For a replica of a branch's shard (docs/branches.md): the branch point, the LSN at which the
   * shard's history starts (its first image, a copy of the parent shard's pages at that LSN). A
   * replica whose log ends below it was not given that copy (its host had none to take it from):
   * it votes, but neither campaigns nor takes a handed-over leadership until a peer sends it the
   * shard. Otherwise an empty replica could lead the branch, and serve a volume without its data.
   */
  seedLsn?: number;
  /**
   * Its operator says the shard is new (the catalog shard of a cluster started with
   * `--new-cluster`): when its storage was lost (absent although expected), a majority of its set,
   * itself included, answering the probe of their terms with term 0 and no record is enough to
   * take it for a new replica; without, every peer must answer (probeTerms). Wrong, when a
   * majority's storage is gone, it may vote twice in a term.
   */
  newIfMajorityEmpty?: boolean;
  /**
   * The most one replication message may hold, in bytes: the NATS server's max_payload (default
   * MESSAGE_BYTES_MAX, 1 MiB; at least MESSAGE_BYTES_MIN). Appends, snapshot chunks and the
   * writes a leader accepts are sized to fit it: a message the transport refuses for its size
   * would be sent again and again, and replication would stall. A server restarted with another
   * max_payload changes it while the replica runs (`setMessageBytesMax`).
   */
  messageBytesMax?: number;
  /**
   * Bytes of records in one append message at most, counting APPEND_RECORD_OVERHEAD_BYTES per
   * record; default 7/8 of messageBytesMax (896 KiB of 1 MiB), at most messageBytesMax −
   * MESSAGE_OVERHEAD_BYTES.
   */
  appendBytesMax?: number;
  /** Client writes waiting for commit at most; default 4096. */
  pendingWritesMax?: number;
  /** Traces replication (see ReplicaTracer); default none. */
  tracer?: ReplicaTracer;
  /**
   * Runs `run` once the writes that arrived together have been sequenced; default setImmediate.
   * New records go to the followers then, all of them in one append message, rather than one
   * message for the first write of a burst and another for the rest.
   */
  schedule?: (run: () => void) => void;
  /** Time of creation on the replica's monotonic clock (the clock `tick` is given). */
  nowMs: number;
  /**
   * Reads that clock now (the runtime's; this module reads none). Ticks come every few ms, and a
   * thread can stall between two: what leader stickiness and the lease measure is read fresh here.
   */
  clock: () => number;
  /**
   * The write ids of the records its log holds, as found when it was opened (ShardStorage
   * `takeWriteIdsAtOpen`), and how long before `nowMs` they are every id of a record it holds
   * (`completeAgoMs`; Infinity: ever; undefined: not known). Without it the replica knows no id
   * of its log, and every one since it was created (`nowMs`) unless the log holds no record.
   */
  writeIdsAtOpen?: { ids: LogWriteIdList; completeAgoMs: number | undefined };
}

export interface ReplicaStats {
  volumeId: string;
  shard: number;
  self: string;
  role: Role;
  term: number;
  leader: string | null;
  commitLsn: number;
  appliedLsn: number;
  firstLsn: number;
  lastLsn: number;
  /** Per follower (leader only): how far behind the leader's last LSN its durable log is. */
  lag: Record<string, number>;
  /**
   * Records (and their payload bytes) held in memory: a leader's for followers that may not have
   * them yet, a follower's appended and not applied yet.
   */
  heldRecords: number;
  heldBytes: number;
  /** Its log lost records to damage and is being given them back: it does not vote until then (HardState.repairTerm). */
  repairing: boolean;
  /** Its storage was lost (HardState.lost) and these peers have not answered with their term yet (probeTerms); absent otherwise. */
  awaitingTerms?: string[];
  /** The replica set in force in its log (with `prior` during a change). */
  config: ReplicaConfig;
  /** Prevote rounds started (an election follows only when a majority would vote). */
  preVotes: number;
  elections: number;
  /** Leader: handovers of its leadership that the follower took (it was asked `timeoutNow` and answered yes). */
  handovers: number;
  /** Elections this replica started because its leader handed leadership to it (`timeoutNow`). */
  electionsHandedOver: number;
  writes: number;
  pagesWritten: number;
  /** Retried writes answered with the record of an earlier attempt instead of written again. */
  retriesMatched: number;
  /**
   * Tries of a write sent again that this leader could not tell apart from a new write (it
   * restarted or installed an image since the first try and could not read every write id back,
   * or forgot them): answered `timeout` with `details.outcomeUnknown`, not written.
   */
  retriesUnknown: number;
  /** Write ids this replica remembers (actors/write-ids.ts). */
  writeIdsHeld: number;
  /**
   * How far back it knows every write id of its log, in ms, at most WRITE_ID_KEEP_MS: a try of a
   * write first sent longer ago than this (less the clocks' skew) that it does not find is
   * answered `outcomeUnknown`.
   */
  writeIdsKnownMs: number;
  reads: number;
  pagesRead: number;
  checkpoints: number;
  /**
   * Of them, those its device being short of space started (`checkpointForSpace`), and those it
   * did not start because the image might not fit in half the free space.
   */
  spaceCheckpoints: number;
  spaceCheckpointsSkipped: number;
  /**
   * Checkpoints that failed (an image's write or flush refused, the device full or failing, damage
   * found on the way): the log behind the newest image is not let go until one succeeds.
   */
  checkpointFailures: number;
  snapshotsSent: number;
  snapshotsInstalled: number;
  /** Leader: append messages with records sent, one per follower or one to all of them at once. */
  appendsSent: number;
  /** Of them, those sent to every follower as one message (ReplicaTransport.sendEach). */
  appendsToAll: number;
  /** Checks of its own image after a follower found the copy it was sent damaged. */
  imageChecks: number;
  offloaded: number;
  /**
   * Committed records applied from the log, read back (and their checksums checked), because
   * they were no longer held in memory: after an open, past the bound of what is held, records
   * a leader wrote before it stepped down, or a follower appended before it was elected. The
   * rest are applied from memory.
   */
  appliedFromLog: number;
  /**
   * Answers to this leader's appends that acknowledged more than the append held (a match past
   * prevLsn + its records): no follower answers so, and they are taken as no answer.
   */
  repliesIgnored: number;
  /**
   * Leader: appends a follower's transport refused as larger than a message may be (`too_large`):
   * each makes the next appends to that follower half as large, down to one record.
   */
  appendsTooLarge: number;
  /**
   * Idle (docs/replication.md, "Idle shards"): as leader, every follower answered that it is
   * quiesced and heartbeats go once a quiesced period; as follower, quiesced under its leader.
   */
  quiesced: boolean;
  /** Leader: times its shard quiesced. */
  quiesces: number;
  /** This replica's page cache (cumulative counters, bytes held now). */
  cache: { hits: number; misses: number; evictions: number; damaged: number; bytes: number };
  /**
   * The replica's files: its log's bytes in use, its retained images' bytes, and the pages its
   * newest image stores (pages made zeros are not stored: they leave it at the next checkpoint).
   */
  storage?: { logBytes: number; imageBytes: number; imagePages: number };
}

/** The cumulative counters of ReplicaStats, but for its page cache's (CACHE_COUNTERS). */
export const REPLICA_COUNTERS = [
  'preVotes', 'elections', 'handovers', 'electionsHandedOver', 'writes', 'pagesWritten', 'retriesMatched', 'retriesUnknown', 'reads', 'pagesRead', 'checkpoints', 'spaceCheckpoints', 'spaceCheckpointsSkipped',
  'checkpointFailures', 'snapshotsSent', 'snapshotsInstalled', 'appendsSent', 'appendsToAll', 'imageChecks', 'offloaded', 'appliedFromLog', 'repliesIgnored', 'quiesces', 'appendsTooLarge',
] as const satisfies ReadonlyArray<keyof ReplicaStats>;

/** The cumulative counters of ReplicaStats' `cache` (its `bytes` is what it holds now). */
export const CACHE_COUNTERS = ['hits', 'misses', 'evictions', 'damaged'] as const satisfies ReadonlyArray<keyof ReplicaStats['cache']>;

export type ReplicaCounters = Record<(typeof REPLICA_COUNTERS)[number], number>;
export type CacheCounters = Record<(typeof CACHE_COUNTERS)[number], number>;

/** Every counter of REPLICA_COUNTERS at 0. */
export function noReplicaCounters(): ReplicaCounters {
  return Object.fromEntries(REPLICA_COUNTERS.map((k) => [k, 0])) as ReplicaCounters;
}

/** A record the leader holds in memory, with its write's tracer value (only with a tracer). */
type HeldRecord = LogRecord & { tag?: unknown };

interface Waiter {
  lsn: number;
  /** Wall-clock deadline (reads); writes wait for commit or leadership loss. */
  deadlineMs?: number;
  /** A write's own record (at `lsn`) was appended in this term: a step-down names it to the client. */
  recordTerm?: number;
  /**
   * A read or flush waiting for `lsn` to be applied: the code it fails with at its deadline,
   * `future_lsn` for a read at an LSN it asked for, `timeout` otherwise (it asked for no LSN).
   */
  expiredCode?: 'future_lsn' | 'timeout';
  /** A read's: the LSN it asked for. Committed by its deadline but not applied yet, it fails `timeout` (to be tried again), not `future_lsn`. */
  askedLsn?: number;
  resolve(): void;
  reject(e: Error): void;
}

/** Longest message of a follower's refusal kept for a write's `timeout` (FollowerState.refused). */
const REFUSAL_MESSAGE_MAX = 240;

/** A follower's refusal of an append, or the transport's failure to get its answer, as FollowerState.refused keeps it. */
function refusalOf(err: unknown): { code: string; message: string } {
  const e = err as { code?: unknown; message?: unknown; details?: Record<string, unknown> } | null | undefined;
  const code = e?.details?.['refused'] ?? e?.code;
  const message = e?.details?.['refusedMessage'] ?? e?.message ?? String(err);
  return { code: typeof code === 'string' ? code : 'error', message: String(message).slice(0, REFUSAL_MESSAGE_MAX) };
}

interface FollowerState {
  /** Next LSN to send (advanced when an append is sent, moved back on a mismatch or a loss). */
  next: number;
  match: number;
  /** Append or snapshot messages sent and not answered yet (at most APPEND_WINDOW). */
  inFlight: number;
  lastSentMs: number;
  /** Send time of the newest request this follower acknowledged (for the read lease). */
  ackedSentMs: number;
  snapshot: { lsn: number; term: number; bytes: number; offset: number } | undefined;
  /**
   * Its log did not match at `next - 1`, or a message to it was lost: appends without records
   * are sent until one matches (a divergent suffix is found without sending records it then
   * refuses; a follower that is down is not sent records it cannot take).
   */
  probing?: boolean;
  /**
   * A message to it was lost or refused (down, unreachable, too slow): nothing is sent to it
   * before this time, a heartbeat interval later. A follower that is down answers nothing, or
   * NATS answers "no responders" at once; sent to again at once, it was sent its records, up to
   * a whole message, on every turn of the event loop (about 200 MB/s at 64 writes in flight).
   */
  retryAtMs?: number;
  /** It answered an append with `quiesce` that it is quiesced (see Replica.quiesced). */
  quiesceAcked?: boolean;
  /**
   * Bytes of records in one append to it at most, when less than the replica's appendBytesMax:
   * halved each time an append to it is refused `too_large` (down to one record), until the
   * replica learns its messages' new bound (`setMessageBytesMax`) or a new term starts.
   */
  batchBytesMax?: number;
  /** `onAppendTooLarge` was called for it, and with `oneRecord` (once each until reset with batchBytesMax). */
  tooLargeSaid?: boolean;
  oneRecordTooLargeSaid?: boolean;
  /**
   * Its last answer to an append was an error (short of space, a full queue…), until it next
   * takes records (or an image, or holds every record): named in the `timeout` of a write not
   * committed (expireWaiters); `no_space` keeps page writes out of the log while it leaves no
   * majority (checkFollowersSpace).
   */
  refused?: { code: string; message: string };
}

/**
 * Most records a follower steps back over, in one answer to a mismatch, to the start of the
 * conflicting term's run (its records need not be the leader's).
 */
const MISMATCH_STEP_BACK_MAX = 65_536;

/** Records a leader keeps in memory for followers, at most (older ones are read from its log). */
const RECENT_BYTES_MAX = 64 * 1024 * 1024;
/**
 * Records a follower keeps in memory until it applies them, at most (older ones are applied from
 * its log). A follower applies a record once the next message tells it the record is committed,
 * so a few appends' worth are held; the bound is for a follower whose commit LSN stops moving.
 */
const FOLLOWER_HELD_BYTES_MAX = 8 * 1024 * 1024;
/** Image bytes in one snapshot message at most (less when messages hold less). */
const SNAPSHOT_CHUNK_BYTES = 512 * 1024;
/** Smallest `messageBytesMax` a replica opens with: a page write of one 8 KiB page, with room to spare. */
export const MESSAGE_BYTES_MIN = 16 * 1024;
/**
 * Smallest bound `setMessageBytesMax` takes (a server restarted with a max_payload below
 * MESSAGE_BYTES_MIN): an append of one small record still fits.
 */
export const MESSAGE_BYTES_FLOOR = 1024;
/** CBOR bytes of a record in an append beyond its payload (map, keys, term, kind, crc, length: 44), at most. */
export const APPEND_RECORD_OVERHEAD_BYTES = 48;
/**
 * Bytes of an append or snapshot message beyond its records or image chunk (type, term, leader
 * id of at most ID_LENGTH_MAX characters, LSNs), at most: under 200 as cbor-x writes them.
 */
export const MESSAGE_OVERHEAD_BYTES = 256;
/**
 * Log bytes one background scrub step reads at most (an image step reads at most
 * IMAGE_READ_BYTES_MAX, the same 256 KiB).
 */
export const SCRUB_STEP_BYTES = 256 * 1024;

/** An append a follower's transport refused as too large (Replica `onAppendTooLarge`). */
export interface AppendTooLarge {
  follower: string;
  /** Records the refused append held, and their bytes (APPEND_RECORD_OVERHEAD_BYTES each included). */
  records: number;
  bytes: number;
  /** Bytes of records the next appends to that follower hold at most (at least one record). */
  batchBytesMax: number;
  /** The refused append held one record: that record can not reach this follower while messages are so bounded. */
  oneRecord: boolean;
  /** LSN of the refused append's first record. */
  firstLsn: number;
}

/** What Replica.forceVote did: whether the replica was repairing (if not, nothing changed), and its term then. */
export interface ForceVoteResult {
  wasRepairing: boolean;
  term: number;
  /**
   * A sole copy that held its damaged log (its host's forceVote): the damage is discarded with
   * every record after it; the log now ends at `keptLsn`, the records from `fromLsn` (keptLsn + 1)
   * on are lost.
   */
  discarded?: { fromLsn: number; keptLsn: number };
}

/** What Replica.digest answers: where its log stands, and the digest of the records asked for. */
export interface ReplicaDigest {
  role: Role;
  term: number;
  firstLsn: number;
  /** The last record of its log (written; maybe not fsync'd yet). */
  lastLsn: number;
  commitLsn: number;
  /** The last LSN applied to its pages, and the oldest LSN its pages are readable at (GetPage@LSN). */
  appliedLsn: number;
  oldestLsn: number;
  /** With a range asked: the records digested (LogDigest; cut after DIGEST_BYTES_MAX of payloads). */
  digest?: LogDigest;
  /** With pages asked: the digest of the shard's pages of a range of volume pages as of an LSN. */
  pages?: PageDigest;
}

/** How often a leader whose device is short of space tries to hand its leadership over (`handOverShortOfSpace`). */
export const SPACE_HANDOVER_EVERY_MS = 2000;
/** How often a replica looks at whether its device is short of space, for a checkpoint that gives some back (`checkpointForSpace`). */
export const SPACE_CHECKPOINT_EVERY_MS = 5000;

/** The pages of a shard in a range of volume pages, as of an LSN, digested (`Replica.digest`). */
export interface PageDigest {
  lsn: number;
  first: number;
  count: number;
  /** The shard's own pages in the range: those digested. */
  pages: number;
  /** CRC-32C over each of them in ascending order: its number (u32, little-endian), then its bytes. */
  digest: number;
}


/** What one background scrub step did (Replica.scrubStep). */
export interface ScrubStepResult {
  /** Bytes read and checked (image pages, log records with their headers). */
  bytes: number;
  /** This step ended a pass over the newest image and the durable log. */
  passDone: boolean;
  /** Damage the step found. */
  damage?: CorruptionError;
  /** The damage was reported to the host (onDamage), which reopens the replica to repair it. */
  reported?: boolean;
}

/** Append messages in flight to one follower at most (pipelining on top of batching). */
const APPEND_WINDOW = 4;
/** Doublings of the election timeout after elections that failed in a row, at most (8 times the timeout). */
const ELECTION_BACKOFF_MAX = 3;

const NO_TAGS: readonly unknown[] = [];

/**
 * `not_leader`, naming the leader and term this replica knows, and `more`: the record a waiting
 * write had (`recordLsn`, `recordTerm`), or the later term a request named (`expectedTerm`).
 */
function notLeader(leader: string | null, term: number, more?: { recordLsn: number; recordTerm: number } | { expectedTerm: number }): ProtocolError {
  return new ProtocolError('not_leader', leader ? `not the leader; the leader is ${leader}` : 'not the leader; no leader is known', {
    ...(leader ? { leader } : {}),
    term,
    ...(more ?? {}),
  });
}

/**
 * The error a waiting write fails with when its leader stops (closed, its device failed): the
 * same code, naming the write's record when it has one (it may still commit under the next
 * leader; the client sends the write again with `earlier`).
 */
function namingRecord(err: StorageError, w: Waiter): StorageError {
  if (w.recordTerm === undefined) return err;
  return new StorageError(err.code, `${err.message}; ${recordNote(w.lsn, w.recordTerm)}`, { ...(err.details ?? {}), recordLsn: w.lsn, recordTerm: w.recordTerm }, err);
}

/** What an error naming a write's record says of it. */
function recordNote(lsn: number, term: number): string {
  return `the write may or may not be committed (its record: lsn ${lsn}, term ${term})`;
}

/** How a client's write reached this leader (`Replica.write`, `Replica.zero`). */
export interface WriteAttempt {
  /** Deadline, ms since the Unix epoch: the write fails `timeout` if not committed by then. */
  deadlineMs?: number;
  /**
   * A retry, naming the records earlier attempts left with deposed leaders: the one this log
   * holds is the write's (answered once applied), and the pages are written again only when none
   * of them can commit any more (`earlierAttempt`).
   */
  earlier?: readonly WriteRecordRef[];
  /**
   * The write's id (WRITE_ID_BYTES), kept in its record: a try of the same write whose id this
   * log holds is answered with that record, once applied, instead of being written again.
   */
  writeId?: Uint8Array;
  /**
   * With `writeId`, on a try after the first: how long ago the first was sent (ms, the node's
   * wall clock against the client's). Written only once no earlier record of it can commit, and
   * only if this replica knows every write id its log got since then; otherwise `timeout` with
   * `details.outcomeUnknown`.
   */
  sentAgoMs?: number;
  /**
   * Of a write: the CRC-32C of its pages' data in order, which its caller checked the pages
   * against (the host, a `shard.write`'s `crc`: PAGE_DATA_CRC). The record's checksum is made from
   * it (`pageWritePayloadCrc`) rather than from the record's copy of the pages, so a page changed
   * in this process between that check and the copy fails the record's checksum: at each
   * follower, which refuses the record, and when read back, rather than being written with a
   * checksum of its own. Saves the pass over the pages the checksum would take.
   */
  dataCrc?: number;
}

export class Replica {
  /** Its pageCount grows (`grow`). */
  private shape: ShardGeometry;
  readonly self: string;
  /** The configurations of its log (see ConfigState); `config` is the one in force. */
  private configState!: ConfigState;
  private config!: ReplicaConfig;
  /** Every member of `config` but itself (both sets during a change). */
  private peerList: string[] = [];
  /** Nodes whose messages as a leader it takes besides its configuration's (setKnownMembers). */
  private knownMembers: ReadonlySet<string> = new Set();
  /** A leader's Config record being saved and appended: client writes wait for it (appendConfig). */
  private configAppending: Promise<void> | undefined;
  /** The term in which this leader, left out of the set by a committed change, tried to hand its leadership over (`leaveSet`). */
  private leftSetTerm = -1;
  /**
   * A handover of this leader's leadership under way (`transferLeadership`): to `to`, given up at
   * `untilMs` (this replica's clock) if no other leader came; `asked` once `timeoutNow` was sent;
   * `done`, whoever waits for its outcome. While it runs, requests of clients are refused
   * `unavailable` and no read is served from the lease.
   */
  private handover: { to: string; term: number; untilMs: number; asked: boolean; done: Array<Settle<TransferResult>> } | undefined;
  /**
   * The term in which this leader sent a `timeoutNow` (`askToTakeOver`): from then on the others
   * may vote for its target despite knowing it live, however late that target's vote comes, so
   * it serves nothing from its lease in that term again (`hasLease`), also if the handover
   * fails and it leads on: each read is confirmed by a majority.
   */
  private leaseGivenUpTerm = 0;
  private log: SegmentLog;
  private store: PageStore;
  private readonly queue: DeviceQueue;
  private readonly hard: HardStateStore;
  private readonly transport: ReplicaTransport;
  private readonly snapshots: SnapshotIO | undefined;
  private readonly timing: ReplicaTiming;
  private readonly random: () => number;
  private readonly onRoleChange: ((role: Role, term: number, reason?: string) => void) | undefined;
  private readonly onAwake: (() => void) | undefined;
  private readonly onDamage: ((err: CorruptionError) => void) | undefined;
  private readonly unrepairable: ReadonlySet<string>;
  private damageReported = false;
  private readonly onFailure: ((err: Error) => void) | undefined;
  private failureReported = false;
  /** A check of our own image is running (a follower found its copy damaged). */
  private checkingImage = false;
  /** LSN of our image last checked whole and found intact: not checked again for another complaint. */
  private imageCheckedIntact = 0;
  /**
   * Background scrub: the image being checked (its steps); in the log phase, the next LSN to
   * check and the end of this pass (the durable end when the phase began: a log that grows
   * faster than the scrub reads must not keep a pass from ending).
   */
  private scrubImage: Iterator<void, void, void> | undefined;
  private scrubPhase: 'image' | 'log' = 'image';
  private scrubLogNext = 0;
  private scrubLogEnd = 0;
  private scrubbing = false;
  private readonly offload: PayloadOffload | undefined;
  private readonly checkpointEveryRecords: number;
  private readonly spaceExempt: boolean;
  /** A leader short of space: when it may next try to hand its leadership over, and how many times it tried (the follower asked goes in turn). */
  private spaceHandoverAtMs = 0;
  private spaceHandovers = 0;
  /** When it next looks at its device's space for a checkpoint (`checkpointForSpace`). */
  private spaceCheckpointAtMs = 0;
  private readonly seedLsn: number;
  private messageBytesMax: number;
  private appendBytesMax: number;
  /** The `appendBytesMax` option (undefined: 7/8 of messageBytesMax, whatever it becomes). */
  private readonly appendBytesMaxGiven: number | undefined;
  private snapshotChunkBytes: number;
  private readonly onAppendTooLarge: ((info: AppendTooLarge) => void) | undefined;
  private readonly onCheckpointFailing: ((info: { failures: number; err?: Error }) => void) | undefined;
  /** Checkpoints failed since the last one that succeeded. */
  private checkpointsFailing = 0;
  private checkpointFailingTold = false;
  private readonly schedule: (run: () => void) => void;
  private replicateScheduled = false;
  private readonly pendingWritesMax: number;
  private readonly tracer: ReplicaTracer | undefined;

  private term: number;
  private votedFor: string | null;
  private role: Role = 'follower';
  private leader: string | null = null;
  private commitLsn: number;
  /** Last LSN assigned (leader) or accepted into the queue (follower): ahead of log.lastLsn while appends are queued. */
  private lastLsn: number;
  private lastTerm: number;
  /** Highest LSN of this replica known durable. */
  private durableLsn: number;
  private electionDeadlineMs = 0;
  /**
   * Elections in a row that ended without a leader (the candidate's timer fired again): each
   * doubles the next election timeout, up to ELECTION_BACKOFF_MAX times. Every election saves a
   * term and a vote on each replica (fsyncs); hundreds of shards of one device electing at once
   * otherwise keep its queue too busy for any of them to finish within a timeout, and elect
   * again, for good (256 shards of 3 replicas on three nodes sharing a disk never elected most of
   * their leaders).
   */
  private failedElections = 0;
  /**
   * When this replica last accepted a message of a leader (its clock), and which leader: kept
   * across term changes, since a leader's lease counts that acknowledgement whatever this
   * replica learns afterwards. Set to the creation time at start (see knowsLiveLeader).
   */
  private leaderContactMs: number;
  private lastLeader: string | null = null;
  private nowMs: number;
  private readonly clock: () => number;
  /** The write ids of this log's records, to recognize a write sent again (write-ids.ts). */
  private readonly writeIds: WriteIds;
  /** Truncations of the log waiting in the device queue: no campaign meanwhile. */
  private truncating = 0;
  private closed = false;
  private applying = false;
  private checkpointing = false;
  private recordsSinceCheckpoint = 0;
  /** LSN of the leader's no-op of its term: reads wait until it is applied. */
  private termStartLsn = 0;
  /** When this replica last became leader (a majority had just voted for it). */
  private leaderSinceMs = 0;
  /**
   * Idle shards (docs/replication.md, "Idle shards"). As leader: `quiesceAsked` once the shard
   * has been idle for quiesceAfterMs (its heartbeats then ask the followers to quiesce),
   * `quiesced` once every follower answered that it is; a quiesced leader sends a heartbeat every
   * quiescedHeartbeatMs only. Any request, any message of a candidate, any answer that is not
   * "quiesced" wakes it (`wake`).
   */
  private quiesced = false;
  private quiesceAsked = false;
  /** Quiesced: when its next heartbeats are due (the start of the next quiesced period). */
  private quiescedBeatMs = 0;
  /** When it last woke from quiesced (its clock). */
  private wokeMs = 0;
  /** When it last had a request or became leader (its clock). */
  private busyMs = 0;
  /**
   * As follower: the leader it is quiesced under (it answered that leader's `quiesce`). While it
   * hears from that leader's node, it does not campaign for up to QUIESCED_WAIT_BEATS quiesced
   * heartbeat periods since the leader's last message.
   */
  private quiescedUnder: string | undefined;
  private readonly followers = new Map<string, FollowerState>();
  /**
   * The log's newest records, held in memory, contiguous up to lastLsn (or none), bounded in
   * bytes. Leader: those not yet known durable everywhere, sent to followers from here. Follower:
   * those it appended and has not applied yet, applied from here, not read back from its log.
   */
  private recent: HeldRecord[] = [];
  private recentBytes = 0;
  private commitWaiters: Waiter[] = [];
  private applyWaiters: Waiter[] = [];
  /** Follower: append and snapshot messages are handled one at a time, in arrival order. */
  private inbound: Promise<unknown> = Promise.resolve();
  private inboundDepth = 0;
  private votes = new Set<string>();
  /** The prevote round in progress, if any: the term it asks about and the yes so far. */
  private preVote: { term: number; votes: Set<string> } | undefined;
  private readonly counters = noReplicaCounters();

  /** The shard's volume, shard number and address space. */
  get geometry(): ShardGeometry {
    return this.shape;
  }

  /**
   * Its volume grew to `pageCount` pages (volume.resize): pages up to `pageCount - 1` are taken
   * from now on, in writes, reads and the records of appends. Fewer pages than it has change
   * nothing. The host grows the replica's storage first (ShardStorage.grow), so that what this
   * replica takes, its store can apply.
   */
  grow(pageCount: number): void {
    if (pageCount > this.shape.pageCount) this.shape = { ...this.shape, pageCount };
  }

  /**
   * Its messages may hold `bytes` at most from now on (the NATS server was restarted with another
   * max_payload): appends (7/8 of it, or the `appendBytesMax` option when less), image chunks and
   * the writes it takes are sized to it. At least MESSAGE_BYTES_FLOOR: below MESSAGE_BYTES_MIN a
   * write of one large page may be refused `too_large`, as any whose record does not fit. Every
   * follower's own smaller bound (after a `too_large`) is forgotten: sized to this, the next
   * appends fit.
   */
  setMessageBytesMax(bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < MESSAGE_BYTES_FLOOR) {
      throw new StorageError('bad_request', `messageBytesMax (the NATS server's max_payload) must be an integer >= ${MESSAGE_BYTES_FLOOR}, got ${String(bytes)}`);
    }
    this.messageBytesMax = bytes;
    this.appendBytesMax = Math.min(this.appendBytesMaxGiven ?? Math.floor((bytes * 7) / 8), bytes - MESSAGE_OVERHEAD_BYTES);
    this.snapshotChunkBytes = Math.min(SNAPSHOT_CHUNK_BYTES, bytes - MESSAGE_OVERHEAD_BYTES);
    for (const f of this.followers.values()) {
      f.batchBytesMax = undefined;
      f.tooLargeSaid = undefined;
      f.oneRecordTooLargeSaid = undefined;
    }
  }

  /** Bytes of records in one append to `f` at most. */
  private batchBytesOf(f: FollowerState): number {
    return Math.min(this.appendBytesMax, f.batchBytesMax ?? Number.POSITIVE_INFINITY);
  }

  constructor(opts: ReplicaOptions) {
    assert(opts.members.includes(opts.self), 'a replica is a member of its own replica set');
    assert(new Set(opts.members).size === opts.members.length, 'replica set members are distinct');
    this.shape = { ...opts.geometry };
    this.self = opts.self;
    this.log = opts.log;
    this.store = opts.store;
    this.queue = opts.queue;
    this.hard = opts.hardState;
    this.transport = opts.transport;
    this.snapshots = opts.snapshots;
    this.timing = { ...DEFAULT_TIMING, ...(opts.timing ?? {}) };
    this.random = opts.random ?? Math.random;
    this.onRoleChange = opts.onRoleChange;
    this.onAwake = opts.onAwake;
    this.onDamage = opts.onDamage;
    this.onFailure = opts.onFailure;
    this.unrepairable = new Set(opts.unrepairable ?? []);
    this.offload = opts.offload;
    this.checkpointEveryRecords = opts.checkpointEveryRecords ?? 0;
    this.spaceExempt = opts.spaceExempt === true;
    this.seedLsn = opts.seedLsn ?? 0;
    this.messageBytesMax = opts.messageBytesMax ?? MESSAGE_BYTES_MAX;
    if (!Number.isSafeInteger(this.messageBytesMax) || this.messageBytesMax < MESSAGE_BYTES_MIN) {
      throw new StorageError('bad_request', `messageBytesMax (the NATS server's max_payload) must be an integer >= ${MESSAGE_BYTES_MIN}, got ${String(opts.messageBytesMax)}`);
    }
    this.appendBytesMax = opts.appendBytesMax ?? Math.floor((this.messageBytesMax * 7) / 8);
    if (!Number.isSafeInteger(this.appendBytesMax) || this.appendBytesMax < 1 || this.appendBytesMax > this.messageBytesMax - MESSAGE_OVERHEAD_BYTES) {
      throw new StorageError('bad_request', `appendBytesMax must be an integer in 1..${this.messageBytesMax - MESSAGE_OVERHEAD_BYTES}, got ${String(opts.appendBytesMax)}`);
    }
    this.appendBytesMaxGiven = opts.appendBytesMax;
    this.snapshotChunkBytes = Math.min(SNAPSHOT_CHUNK_BYTES, this.messageBytesMax - MESSAGE_OVERHEAD_BYTES);
    this.onAppendTooLarge = opts.onAppendTooLarge;
    this.onCheckpointFailing = opts.onCheckpointFailing;
    this.schedule = opts.schedule ?? ((run) => void setImmediate(run));
    this.pendingWritesMax = opts.pendingWritesMax ?? 4096;
    this.newIfMajorityEmpty = opts.newIfMajorityEmpty === true;
    this.tracer = opts.tracer;
    const members = [...opts.members].sort();
    const prior = opts.priorMembers !== undefined ? [...opts.priorMembers].sort() : undefined;
    assert(prior === undefined || (prior.length > 0 && new Set(prior).size === prior.length), 'prior members are distinct');
    this.setConfigState(this.loadConfigState(prior !== undefined && !sameSet(prior, members) ? { members, prior } : { members }));
    this.knownMembers = new Set([...members, ...(prior ?? [])]);
    const saved = this.hard.load();
    const hs: HardState = saved ?? { term: 0, votedFor: null };
    this.term = Math.max(hs.term, this.log.lastTerm);
    this.votedFor = hs.term === this.term ? hs.votedFor : null;
    this.repairTerm = hs.repairTerm;
    if (hs.lost === true) {
      // A sole copy has no peer to ask or to be given its pages by: it does not lead until an
      // operator accepts the loss (forceVote), rather than serve its lost pages as never written.
      if (this.peerIds.length > 0) this.termsUnknown = new Set(this.peerIds);
      this.repairTerm ??= 0;
    }
    this.lastLsn = this.log.lastLsn;
    this.lastTerm = this.log.lastTerm;
    this.durableLsn = this.log.syncedLsn;
    // Applied state is only what is known committed: the store replayed up to its image.
    this.commitLsn = this.store.appliedLsn;
    this.nowMs = opts.nowMs;
    this.clock = opts.clock;
    // A log that holds no record yet (a new replica) hides no write id: it knows them all.
    const atOpen = opts.writeIdsAtOpen;
    const knownSinceMs = atOpen?.completeAgoMs === undefined ? opts.nowMs : opts.nowMs - atOpen.completeAgoMs;
    this.writeIds = new WriteIds(this.lastLsn === 0 && this.store.appliedLsn === 0 ? -Infinity : knownSinceMs, undefined, undefined, this.random);
    atOpen?.ids.forEach((id, lsn, term) => this.writeIds.note(id, lsn, term, opts.nowMs));
    // Just (re)started, it may have acknowledged a leader a moment ago, in its former life: it
    // votes for no one for a minimum election timeout, as after a leader's message.
    this.leaderContactMs = this.now();
    this.resetElectionDeadline();
    // A replica set of one needs nobody's vote: it leads at once.
    if (this.peerIds.length === 0) this.electionDeadlineMs = this.nowMs;
    else if (saved === undefined && this.log.lastLsn === 0 && this.store.appliedLsn === 0) this.firstElection();
  }

  /**
   * A new replica (no term ever saved, no record): its shard's first election is led by one
   * chosen member, so that the shards of a new volume elect their leaders at once and without
   * competing candidates, spread over the members (the member at `shard mod count` of the sorted
   * set). The others wait FIRST_ELECTION_WAIT election timeouts for their first election, in case
   * the chosen one is down.
   *
   * Such a replica has acknowledged no leader and voted for no one (both save the term first), so
   * no leader's lease rests on it: it votes without waiting a minimum election timeout. Before
   * this, the 768 replicas of a new volume of 256 shards × 3 all campaigned within the same
   * 300–600 ms, and the saves of their votes (fsyncs, through device queues hundreds of
   * operations deep) outlasted the next timeouts: leaders came and went for 15–60 s on one
   * machine (docs/replication.md, "A new shard").
   */
  private firstElection(): void {
    this.leaderContactMs = Number.NEGATIVE_INFINITY;
    const members = this.config.members;
    if (members[this.geometry.shard % members.length] === this.self) {
      this.electionDeadlineMs = this.nowMs;
      return;
    }
    this.electionDeadlineMs = this.nowMs + this.electionTimeoutMs() * FIRST_ELECTION_WAIT;
  }

  // ---------------------------------------------------------------------------------------------
  // Queries
  // ---------------------------------------------------------------------------------------------

  get isLeader(): boolean {
    return this.role === 'leader';
  }

  /**
   * Quiesced (a leader whose followers all answered so, or a follower quiesced under its leader;
   * docs/replication.md, "Idle shards") with no handover and no write or read waiting on it.
   * Nothing of its tick is then due more often than once a heartbeat period: a quiesced leader
   * heartbeats once a quiesced period and a quiesced follower waits for longer than an election
   * timeout. Its device ticks it once a heartbeat period only (DeviceHost.tick) until it wakes
   * (`onAwake`); a follower whose quiet ends is ticked every tick from the next period on.
   */
  get quiet(): boolean {
    if (this.closed || this.commitWaiters.length > 0 || this.applyWaiters.length > 0) return false;
    if (this.role === 'leader') return this.quiesced && this.handover === undefined;
    return this.role === 'follower' && this.quiescedUnder !== undefined && this.leader === this.quiescedUnder;
  }

  get currentTerm(): number {
    return this.term;
  }

  /** The replica set in force in this replica's log (see ConfigState), with `prior` during a change. */
  configuration(): ReplicaConfig {
    const c = this.config;
    return c.prior !== undefined ? { members: [...c.members], prior: [...c.prior] } : { members: [...c.members] };
  }

  /** Whether a change of the replica set this replica keeps from its log (not the set it was opened with) names it. */
  get namedByLog(): boolean {
    return this.configState.changes.some((ch) => namesNode(ch.config, this.self));
  }

  /** The members of the replica set in force (both sets during a change). */
  get members(): readonly string[] {
    return this.config.prior === undefined ? this.config.members : [...new Set([...this.config.members, ...this.config.prior])].sort();
  }

  /**
   * Nodes whose messages as a leader this replica takes although its configuration does not
   * name them (the host gives the catalog's members of the shard): a replica cut off through a
   * change of its set learns the new set from the new set's leader, which it would refuse as no
   * member. Votes are still asked and given within the configuration only.
   */
  setKnownMembers(ids: readonly string[]): void {
    this.knownMembers = new Set(ids);
  }

  /**
   * Leader only: changes the replica set to `members` through a joint configuration (a Config
   * record of both sets, then one of `members` alone once the first is committed); resolves
   * once the second is committed. A leader that is not in `members` then steps down. Fails
   * `not_leader` (with the leader it knows), `bad_request` for a set that is not 1..7 distinct
   * ids, `unavailable` while another change is under way or when the set alone was not appended
   * within the change's steps (its save failed each time: a tick takes it up again), `timeout`
   * past `deadlineMs` (the change may still be made: its records are in the log).
   */
  async reconfigure(members: readonly string[], opts: { deadlineMs?: number } = {}): Promise<ReconfigureResult> {
    this.checkLeader();
    this.wake();
    let target: string[];
    try {
      target = validateConfig({ members }, 'members').members;
    } catch (e) {
      throw e instanceof ProtocolError ? new ProtocolError('bad_request', e.message.replace(/^members\.members/, 'members'), { path: 'members' }) : e;
    }
    const deadlineMs = opts.deadlineMs ?? Date.now() + RECONFIGURE_DEADLINE_MS;
    // Its term's first record applied: every record of earlier terms is decided, a change an
    // earlier leader began among them.
    await this.waitApplied(this.termStartLsn, deadlineMs);
    let changed = false;
    // Why the set alone was not appended the last time this change appended it (its save failed).
    let refused: unknown;
    // Each turn moves the change one step: begun, joint committed (the set alone appended), done.
    for (let step = 0; step < RECONFIGURE_STEPS; step++) {
      const c = this.config;
      const lastLsn = this.lastConfigChange()?.lsn ?? 0;
      // Done and committed: answered so also by a leader the change removed, which finished it
      // meanwhile (a leader elected during it) and has stepped down since.
      if (c.prior === undefined && sameSet(c.members, target) && this.store.appliedLsn >= lastLsn && (changed || !this.isVoter() || this.role === 'leader')) {
        return { members: target, term: this.term, lsn: lastLsn, changed };
      }
      this.checkLeader();
      if (c.prior === undefined && sameSet(c.members, target)) {
        // Answered once committed (a leader not in the set steps down after that: not checked again).
        if (this.store.appliedLsn < lastLsn) await this.waitApplied(lastLsn, deadlineMs);
        return { members: target, term: this.term, lsn: lastLsn, changed };
      }
      if (c.prior !== undefined && !sameSet(c.members, target)) {
        const g = this.geometry;
        throw new ProtocolError('unavailable', `shard ${g.volumeId}/${g.shard} is changing its replica set from ${c.prior.join(',')} to ${c.members.join(',')}; retry once that is done`, {
          members: c.members,
          prior: c.prior,
        });
      }
      if (this.store.appliedLsn < lastLsn) {
        // A change not committed yet: the joint one toward this set (the leader then appends the
        // set alone), or an earlier one.
        changed ||= c.prior !== undefined;
        await this.waitApplied(lastLsn, deadlineMs);
        while (this.configAppending !== undefined) await this.configAppending;
        continue;
      }
      if (c.prior !== undefined) {
        // Joint and committed: the set alone is being appended (afterConfigCommitted).
        changed = true;
        const appending = this.afterConfigCommitted();
        if (appending !== undefined) refused = await appending;
        while (this.configAppending !== undefined) await this.configAppending;
        continue;
      }
      await this.appendConfig({ members: target, prior: c.members });
      changed = true;
    }
    // The set alone failed to be appended turn after turn (its device refuses it; a tick takes it
    // up again), or the set kept changing: the change is not done yet.
    const g = this.geometry;
    const why = refused !== undefined ? `appending the set alone failed: ${(refused as Error).message}` : 'the replica set kept changing';
    throw new ProtocolError('unavailable', `shard ${g.volumeId}/${g.shard} did not finish changing its replica set to ${target.join(',')} in ${RECONFIGURE_STEPS} steps (${why}); retry`, {
      members: target,
    });
  }

  /**
   * Leader only: hands its leadership to follower `to` (default: the one whose log holds the
   * most, the first by id among equals; docs/replication.md, "Handing leadership over"). From
   * now on it refuses requests of clients (`unavailable`, to be retried) and serves no read from
   * its lease; once every record it wrote is committed and held by `to`, it sends `to` a
   * `timeoutNow`, on which `to` starts an election at once that the others vote in despite
   * knowing this leader live. Resolves when this replica is no longer leader (a newer term came).
   * Fails, and this replica leads on, taking requests again: `unavailable` with no other member
   * to hand to, during a change of the replica set, or when `to` refused; `timeout` when no
   * other leader came within a maximum election timeout; `bad_request` for a `to` that is not
   * a member of the set in force. Asked to hand it to itself (`to` is this replica), it has
   * nothing to do: it resolves at once with its term, and leads on.
   */
  transferLeadership(to?: string): Promise<TransferResult> {
    const g = this.geometry;
    this.checkLeading();
    this.wake();
    if (to === this.self && this.handover === undefined) return Promise.resolve({ term: this.term, to });
    if (this.handover !== undefined) {
      if (to !== undefined && to !== this.handover.to) {
        throw new ProtocolError('unavailable', `shard ${g.volumeId}/${g.shard} is handing its leadership to '${this.handover.to}' already`, { to: this.handover.to });
      }
      const h = this.handover;
      return new Promise((resolve, reject) => h.done.push({ resolve, reject }));
    }
    if (this.config.prior !== undefined || this.configAppending !== undefined) {
      throw new ProtocolError('unavailable', `shard ${g.volumeId}/${g.shard} is changing its replica set; hand its leadership over once that is done`);
    }
    const candidates = this.config.members.filter((id) => id !== this.self);
    if (to !== undefined && !candidates.includes(to)) {
      throw new ProtocolError('bad_request', `to: '${to}' is not another member of shard ${g.volumeId}/${g.shard} (members: ${this.config.members.join(', ')})`, { path: 'to' });
    }
    const match = (id: string): number => this.followers.get(id)?.match ?? 0;
    const target = to ?? [...candidates].sort((a, b) => match(b) - match(a) || (a < b ? -1 : a > b ? 1 : 0))[0];
    if (target === undefined) throw new ProtocolError('unavailable', `shard ${g.volumeId}/${g.shard} has no other replica to hand its leadership to`);
    const h = { to: target, term: this.term, untilMs: this.nowMs + this.timing.electionTimeoutMaxMs, asked: false, done: [] as Array<Settle<TransferResult>> };
    this.handover = h;
    const result = new Promise<TransferResult>((resolve, reject) => h.done.push({ resolve, reject }));
    this.replicateTo(target, false);
    this.askToTakeOver();
    return result;
  }

  /**
   * Sends the `timeoutNow` of the handover under way, once: when every record this leader wrote
   * is committed and its target holds them all (the target then wins any election it starts).
   */
  private askToTakeOver(): void {
    const h = this.handover;
    if (h === undefined || h.asked || this.role !== 'leader' || this.term !== h.term) return;
    if (this.commitLsn < this.lastLsn || (this.followers.get(h.to)?.match ?? 0) < this.lastLsn) return;
    h.asked = true;
    this.leaseGivenUpTerm = h.term;
    const req: TimeoutNowRequest = { type: 'timeoutNow', term: h.term, leader: this.self };
    this.transport.send(h.to, req, this.timing.rpcTimeoutMs).then(
      (r) => {
        const reply = r as TimeoutNowReply;
        if (this.handover !== h) return;
        if (reply.ok) {
          this.counters.handovers++;
          return;
        }
        if (reply.term > this.term) this.stepDown(reply.term, null, 'a follower is at a newer term');
        else this.endHandover(new ProtocolError('unavailable', `'${h.to}' did not take the leadership over (it is not a follower of this term that may vote)`));
      },
      (e: unknown) => {
        if (this.handover === h) this.endHandover(new ProtocolError('unavailable', `'${h.to}' did not take the leadership over: ${(e as Error).message}`));
      },
    );
  }

  /** Ends the handover under way: failed with `err` (this replica leads on), or done (it no longer leads). */
  private endHandover(err?: Error): void {
    const h = this.handover;
    if (h === undefined) return;
    this.handover = undefined;
    for (const d of h.done) {
      if (err !== undefined) d.reject(err);
      else d.resolve({ term: h.term, to: h.to });
    }
  }

  /**
   * A follower whose leader hands its leadership over (`timeoutNow`): starts an election at once,
   * without a prevote, when the message comes from the leader it follows in its term and it may
   * vote and lead (a voter, not repairing its log, no cut of its log queued).
   */
  private handleTimeoutNow(req: TimeoutNowRequest): TimeoutNowReply {
    // A follower that knows no leader of the term (the leader's messages came late, and it began
    // a prevote, which leaves its term as it is) takes it too: a term has one leader.
    // Nor a replica whose device is short of space: as leader it would refuse page writes.
    const ok = req.term === this.term && this.role === 'follower' && (this.leader === req.leader || this.leader === null) && this.isVoter() &&
      this.repairTerm === undefined && this.termsUnknown === undefined && this.truncating === 0 && !this.awaitingSeed() && !this.shortOfSpace();
    if (!ok) return { term: this.term, ok: false };
    this.counters.electionsHandedOver++;
    void this.startElection(true);
    return { term: this.term, ok: true };
  }

  /** At most the bytes an image of this replica's pages would take now (PageStore.imageBytesBound): what a copy of it, a branch's, needs. */
  imageBytesBound(): number {
    return this.store.imageBytesBound();
  }

  get appliedLsn(): number {
    return this.store.appliedLsn;
  }

  stats(): ReplicaStats {
    const lag: Record<string, number> = {};
    if (this.role === 'leader') for (const [id, f] of this.followers) lag[id] = Math.max(0, this.lastLsn - f.match);
    const ps = this.store.stats();
    const c = ps.cache;
    return {
      volumeId: this.geometry.volumeId,
      shard: this.geometry.shard,
      self: this.self,
      role: this.role,
      term: this.term,
      leader: this.leader,
      commitLsn: this.commitLsn,
      appliedLsn: this.store.appliedLsn,
      firstLsn: this.log.firstLsn,
      lastLsn: this.lastLsn,
      lag,
      heldRecords: this.recent.length,
      heldBytes: this.recentBytes,
      writeIdsHeld: this.writeIds.size,
      writeIdsKnownMs: Math.round(Math.max(0, Math.min(WRITE_ID_KEEP_MS, this.clock() - this.writeIds.completeSinceMs))),
      repairing: this.repairTerm !== undefined,
      quiesced: this.role === 'leader' ? this.quiesced : this.quiescedUnder !== undefined && this.leader === this.quiescedUnder,
      config: this.configuration(),
      ...(this.termsUnknown !== undefined ? { awaitingTerms: [...this.termsUnknown].sort() } : {}),
      ...this.counters,
      cache: { hits: c.hits, misses: c.misses, evictions: c.evictions, damaged: c.damaged, bytes: c.bytes },
      storage: { logBytes: this.log.stats().bytes, imageBytes: ps.imageBytes, imagePages: ps.imagePages },
    };
  }

  /** The other members of the set in force (both sets during a change), sorted: a new array at each change of the set. */
  get peerIds(): readonly string[] {
    return this.peerList;
  }

  /** The sets a decision needs a majority of: the members, and the prior set during a change. */
  private sets(): readonly string[][] {
    return this.config.prior !== undefined ? [this.config.members, this.config.prior] : [this.config.members];
  }

  /**
   * Refuses (`no_space`) a page write that could not commit: without the followers whose last
   * answer to records was `no_space` (their devices under half their reserve; until they take
   * records again), this leader and the others are not a majority. So it is not appended: it
   * neither waits its deadline out (`timeout`, outcome unknown) nor holds up what comes after it
   * in the log. The records those followers refused are sent to them again a heartbeat interval
   * apart; once space is freed and one takes them, page writes go on.
   */
  private checkFollowersSpace(): void {
    const short = (id: string): boolean => id !== this.self && this.followers.get(id)?.refused?.code === 'no_space';
    if (this.quorumOf((id) => !short(id))) return;
    const named = [...this.followers].filter(([id]) => short(id));
    throw new StorageError(
      'no_space',
      `shard ${this.geometry.shard}: followers ${named.map(([id]) => id).join(', ')} take no page data (${named[0]![1].refused!.message}), and without them no majority of its replicas does: page writes are refused until space is freed`,
      { followers: named.map(([id]) => id) },
    );
  }

  /** Whether the replicas `has` names hold a majority of every set of the configuration in force. */
  private quorumOf(has: (id: string) => boolean): boolean {
    for (const set of this.sets()) {
      let n = 0;
      for (const id of set) if (has(id)) n++;
      if (n < Math.floor(set.length / 2) + 1) return false;
    }
    return true;
  }

  /** A branch's replica whose log ends below the branch point (ReplicaOptions.seedLsn): it does not lead. */
  private awaitingSeed(): boolean {
    return this.lastLsn < this.seedLsn;
  }

  /** Whether this replica is a member of the configuration in force (one that is not never campaigns). */
  private isVoter(): boolean {
    return this.sets().some((set) => set.includes(this.self));
  }

  // ---------------------------------------------------------------------------------------------
  // The replica set (membership change by joint consensus)
  // ---------------------------------------------------------------------------------------------

  /**
   * The configurations saved beside the log, less the changes the log does not hold (saved
   * before a record that was never written, or cut since): a change counts only while the log
   * holds its record, at its LSN and term (a Config record of that set; for an image's, any
   * record). Nothing saved, or a file that no longer reads: the set given at creation.
   */
  private loadConfigState(initial: ReplicaConfig): ConfigState {
    let saved: ConfigState | undefined;
    try {
      saved = this.hard.loadConfig?.();
    } catch {
      saved = undefined;
    }
    if (saved === undefined) return { base: initial, changes: [] };
    return { base: saved.base, changes: saved.changes.filter((c) => this.logHolds(c)) };
  }

  private logHolds(c: ConfigChange): boolean {
    const log = this.log;
    if (c.lsn > log.lastLsn) return false;
    // Folded into the image: committed, and kept as the base of what follows.
    if (c.lsn < log.firstLsn - 1) return true;
    try {
      if (log.termAt(c.lsn) !== c.term) return false;
      if (c.image === true || c.lsn < log.firstLsn) return true;
      const r = log.read(c.lsn, c.lsn)[0];
      return r !== undefined && r.kind === RecordKind.Config && sameConfig(decodeConfig(r.payload), c.config);
    } catch {
      return false;
    }
  }

  /** Makes `state` the configurations in force in memory (the caller saved it, or saves it). */
  private setConfigState(state: ConfigState): void {
    // Changes at or below the commit LSN beyond the newest such one fold into the base.
    let changes = state.changes;
    let base = state.base;
    while (changes.length > CONFIG_CHANGES_KEPT && changes[1]!.lsn <= (this.commitLsn ?? 0)) {
      base = changes[0]!.config;
      changes = changes.slice(1);
    }
    this.configState = { base, changes };
    this.config = changes.length > 0 ? changes[changes.length - 1]!.config : base;
    const all = new Set([...this.config.members, ...(this.config.prior ?? [])]);
    all.delete(this.self);
    this.peerList = [...all].sort();
    if (this.role !== 'leader') return;
    // A leader replicates to the members of the configuration in force, and to them only.
    for (const id of [...this.followers.keys()]) if (!all.has(id)) this.followers.delete(id);
    for (const id of this.peerList) {
      if (!this.followers.has(id)) {
        this.followers.set(id, { next: this.lastLsn + 1, match: 0, inFlight: 0, lastSentMs: 0, ackedSentMs: Number.NEGATIVE_INFINITY, snapshot: undefined, probing: true });
      }
    }
  }

  /** Saves the configurations through the device queue (in order with its appends). */
  private saveConfigState(state: ConfigState): Promise<void> {
    const save = this.hard.saveConfig;
    if (save === undefined) return Promise.resolve();
    return this.queue.task(() => save.call(this.hard, state));
  }

  /** The configuration in force at `lsn`: of the last change at or below it. */
  private configAt(lsn: number): ReplicaConfig {
    const changes = this.configState.changes;
    for (let i = changes.length - 1; i >= 0; i--) if (changes[i]!.lsn <= lsn) return changes[i]!.config;
    return this.configState.base;
  }

  /** Whether `id` is a member of a configuration this replica keeps (its base, or a change since). */
  private inKeptConfig(id: string): boolean {
    return namesNode(this.configState.base, id) || this.configState.changes.some((ch) => namesNode(ch.config, id));
  }

  /** The newest change, if any. */
  private lastConfigChange(): ConfigChange | undefined {
    const changes = this.configState.changes;
    return changes[changes.length - 1];
  }

  /**
   * Leader: appends a Config record of `config`, in force from then on. The change is saved
   * first, so a log that holds the record always knows it; client writes wait meanwhile, so the
   * record takes the LSN the change was saved with. Returns its LSN.
   */
  private async appendConfig(config: ReplicaConfig): Promise<number> {
    while (this.configAppending !== undefined) await this.configAppending;
    this.checkLeader();
    const term = this.term;
    const lsn = this.lastLsn + 1;
    const change: ConfigChange = { lsn, term, config };
    const state: ConfigState = { base: this.configState.base, changes: [...this.configState.changes, change] };
    let done!: () => void;
    this.configAppending = new Promise<void>((resolve) => (done = resolve));
    try {
      await this.saveConfigState(state);
      this.checkLeader();
      // Writes waited; only a new term (a step-down and an election) moves the log meanwhile.
      if (this.term !== term || this.lastLsn + 1 !== lsn) throw notLeader(this.leader, this.term);
      this.appendLocal([{ term, kind: RecordKind.Config, payload: encodeConfig(config) }]);
      this.setConfigState(state);
      return lsn;
    } finally {
      this.configAppending = undefined;
      done();
    }
  }

  /**
   * Leader: once the joint configuration in force is committed, appends the new set alone (a
   * leader elected during a change finishes it); once that is committed, a leader that is not
   * in it steps down. Returns what the append of the set alone it starts resolves to: why it
   * failed, or undefined once appended (undefined when it starts none).
   */
  private afterConfigCommitted(): Promise<unknown> | undefined {
    if (this.role !== 'leader' || this.configAppending !== undefined) return undefined;
    const last = this.lastConfigChange();
    if (last === undefined || last.lsn > this.store.appliedLsn) return undefined;
    if (this.config.prior !== undefined) {
      // Resolves to why the append failed (taken up again at a tick), undefined once appended.
      return this.appendConfig({ members: this.config.members }).then(() => undefined, (e: unknown) => e);
    }
    if (!this.config.members.includes(this.self)) this.leaveSet();
    return undefined;
  }

  /**
   * A leader the committed change left out of the set: hands its leadership to a member of the
   * new set ("Handing leadership over"), so that the shard need not wait an election timeout for
   * a leader; steps down when that cannot be done or does not happen. Once per term.
   */
  private leaveSet(): void {
    if (this.handover !== undefined) return;
    const removed = (): void => {
      if (this.role === 'leader' && !this.config.members.includes(this.self)) this.stepDown(this.term, null, 'removed from the replica set');
    };
    if (this.leftSetTerm === this.term) {
      removed();
      return;
    }
    this.leftSetTerm = this.term;
    try {
      this.transferLeadership().catch(removed);
    } catch {
      removed();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Time
  // ---------------------------------------------------------------------------------------------

  /** Advances time: elections for followers and candidates, heartbeats and lease checks for leaders. */
  tick(nowMs: number): void {
    if (this.closed) return;
    this.nowMs = Math.max(this.nowMs, nowMs);
    nowMs = this.nowMs;
    this.writeIds.expire(nowMs);
    if (nowMs >= this.spaceCheckpointAtMs) this.checkpointForSpace(nowMs);
    if (this.termsUnknown !== undefined && nowMs >= this.termsProbeDueMs) this.probeTerms();
    if (this.role === 'leader') {
      if (this.handover !== undefined && nowMs >= this.handover.untilMs) {
        this.endHandover(new ProtocolError('timeout', `'${this.handover.to}' did not take the leadership over within ${this.timing.electionTimeoutMaxMs} ms; this replica leads on`));
      }
      // Quiesced: nothing to do between its heartbeats (a device short of space is looked at
      // with them, and a write wakes it).
      if (this.quiesced && nowMs < this.quiescedBeatMs) return;
      // Quiesced, its followers answer one heartbeat a quiesced period: the contact it needs is
      // that much older. Woken, their last answers may be as old: they are given an election
      // timeout of heartbeats each period to answer before its contact counts as lost.
      const contactMs = this.timing.electionTimeoutMaxMs + (this.quiesced ? this.timing.quiescedHeartbeatMs : 0);
      if (nowMs - Math.max(this.leaderSinceMs, this.wokeMs) > this.timing.electionTimeoutMaxMs && !this.hasMajorityContact(contactMs)) {
        // Cut off from a majority for a whole election timeout: another leader may exist.
        this.stepDown(this.term, null, 'lost contact with a majority');
        return;
      }
      if (!this.quiesced && !this.quiesceAsked && this.idle(nowMs)) this.quiesceAsked = true;
      this.replicateAll(true);
      if (this.quiesced) this.quiescedBeatMs = this.nextQuiescedPeriodMs(nowMs);
      // A change whose next step failed (the device refused it) is taken up again.
      this.afterConfigCommitted();
      this.handOverShortOfSpace();
      return;
    }
    if (nowMs >= this.electionDeadlineMs) {
      // Quiesced under a leader whose node it hears from: it waits on.
      if (this.quiescedStill(nowMs)) this.resetElectionDeadline();
      else {
        this.quiescedUnder = undefined;
        this.startPreVote();
      }
    }
  }

  /**
   * As leader: whether the shard may quiesce. Idle for quiesceAfterMs, everything committed and
   * every follower holding every record and answering (a follower that is down keeps its leader
   * awake), no change of the set, no handover, and a transport that tells of its peers' nodes.
   */
  private idle(nowMs: number): boolean {
    if (this.transport.seenMs === undefined || nowMs - this.busyMs < this.timing.quiesceAfterMs) return false;
    if (this.handover !== undefined || this.config.prior !== undefined || this.configAppending !== undefined) return false;
    if (this.commitLsn !== this.lastLsn || this.commitWaiters.length > 0 || this.store.appliedLsn !== this.commitLsn) return false;
    for (const id of this.peerIds) {
      const f = this.followers.get(id);
      if (f === undefined || f.match !== this.lastLsn || f.inFlight > 0 || f.probing === true || f.snapshot !== undefined || this.pausing(f)) return false;
    }
    return true;
  }

  /** The start of the next quiesced period of the clock, when a quiesced leader's heartbeats are next due (sendNext). */
  private nextQuiescedPeriodMs(nowMs: number): number {
    const p = this.timing.quiescedHeartbeatMs;
    return (Math.floor(nowMs / p) + 1) * p;
  }

  /** A request or a candidate's message: a quiesced (or quiescing) leader wakes; the shard counts as busy from now. */
  private wake(): void {
    this.busyMs = this.nowMs;
    if (!this.quiesced && !this.quiesceAsked) return;
    // A quiet replica's clock moves on once a heartbeat period only (its ticks): read it now, so
    // that its followers are given a whole election timeout from the wake to answer.
    this.busyMs = this.now();
    if (this.quiesced) this.wokeMs = this.busyMs;
    this.quiesced = false;
    this.quiesceAsked = false;
    for (const f of this.followers.values()) f.quiesceAcked = false;
    this.onAwake?.();
  }

  /**
   * As follower: quiesced under its leader, whose node it heard from within the minimum election
   * timeout, and whose own last message is at most QUIESCED_WAIT_BEATS quiesced periods old.
   */
  private quiescedStill(nowMs: number): boolean {
    const leader = this.quiescedUnder;
    if (leader === undefined || this.role !== 'follower' || this.leader !== leader) return false;
    const seen = this.transport.seenMs?.(leader);
    return seen !== undefined && nowMs - seen < this.timing.electionTimeoutMinMs && nowMs - this.leaderContactMs < QUIESCED_WAIT_BEATS * this.timing.quiescedHeartbeatMs;
  }

  /** Its device is short of space (under its reserve): it refuses page writes, and takes no leadership handed to it. */
  private shortOfSpace(): boolean {
    if (this.spaceExempt) return false;
    const s = this.queue.space();
    return s !== undefined && s.state !== 'ok';
  }

  /**
   * A leader whose device is short of space refuses page writes (`no_space`): it hands its
   * leadership to a follower instead, which takes it only when its own device is not short
   * (`handleTimeoutNow`); so a shard with a replica on a device with space goes on taking writes.
   * One follower at a time, in turn, at most every SPACE_HANDOVER_EVERY_MS; a handover refused
   * leaves it leading, refusing page writes, until the next try.
   */
  private handOverShortOfSpace(): void {
    if (this.handover !== undefined || this.nowMs < this.spaceHandoverAtMs || this.config.prior !== undefined || this.configAppending !== undefined) return;
    if (!this.shortOfSpace()) return;
    this.spaceHandoverAtMs = this.nowMs + SPACE_HANDOVER_EVERY_MS;
    const others = this.config.members.filter((id) => id !== this.self).sort();
    if (others.length === 0) return;
    const to = others[this.spaceHandovers++ % others.length]!;
    this.transferLeadership(to).catch(() => undefined);
  }

  /** The clock read now (never behind the last tick): for what stickiness and the lease measure. */
  private now(): number {
    const t = this.clock();
    if (t > this.nowMs) this.nowMs = t;
    return this.nowMs;
  }

  private resetElectionDeadline(): void {
    const backoff = 2 ** Math.min(this.failedElections, ELECTION_BACKOFF_MAX);
    this.electionDeadlineMs = this.nowMs + this.electionTimeoutMs() * backoff;
  }

  /** A randomized election timeout, in [min, max) of the timing. */
  private electionTimeoutMs(): number {
    const { electionTimeoutMinMs: min, electionTimeoutMaxMs: max } = this.timing;
    return min + this.random() * (max - min);
  }

  // ---------------------------------------------------------------------------------------------
  // Durable term and vote
  // ---------------------------------------------------------------------------------------------

  /**
   * Saves term and vote through the device queue (so it is ordered with the device's other IO),
   * in one batch with other replicas' saves queued with it when the store allows (`stateSink`).
   */
  private async persistHardState(): Promise<void> {
    const state: HardState = {
      term: this.term, votedFor: this.votedFor,
      ...(this.repairTerm !== undefined ? { repairTerm: this.repairTerm } : {}),
      ...(this.termsUnknown !== undefined ? { lost: true } : {}),
    };
    const batched = this.hard.stateSink;
    if (batched !== undefined) await this.queue.saveState(batched.sink, batched.key, state, batched.check);
    else await this.queue.task(() => this.hard.save(state));
  }

  /** See HardState.repairTerm; undefined when the log lost nothing. */
  private repairTerm: number | undefined;

  /** Its storage was lost (HardState.lost): the peers whose term it has not learned yet. */
  private termsUnknown: Set<string> | undefined;
  /** The highest term its peers answered so far (probeTerms). */
  private termsFloor = 0;
  /** When the peers still unknown are asked again. */
  private termsProbeDueMs = Number.NEGATIVE_INFINITY;
  /** The peers that answered with their term (probeTerms). */
  private readonly termsAnswered = new Set<string>();
  /** Every peer that answered had no record (VoteReply.lastLsn 0; probeTerms). */
  private termsPeersEmpty = true;
  /** ReplicaOptions.newIfMajorityEmpty. */
  private readonly newIfMajorityEmpty: boolean;

  /**
   * A replica whose storage was lost (HardState.lost) asks each peer whose term it does not know
   * yet for it, every minimum election timeout until all have answered: a prevote for term 0,
   * which no replica grants and which changes nothing anywhere, and whose answer carries the
   * peer's term. Every peer is needed: a term it voted in may be known to its candidate alone
   * (a candidate saves its term before it asks for votes, so the candidate knows it for good).
   */
  private probeTerms(): void {
    const unknown = this.termsUnknown;
    if (unknown === undefined) return;
    this.termsProbeDueMs = this.nowMs + this.timing.electionTimeoutMinMs;
    const req: VoteRequest = { type: 'prevote', term: 0, candidate: this.self, lastLsn: 0, lastTerm: 0 };
    for (const id of unknown) {
      this.transport.send(id, req, this.timing.rpcTimeoutMs).then(
        (reply) => this.onTermsProbeReply(id, reply as VoteReply),
        () => undefined,
      );
    }
  }

  private onTermsProbeReply(from: string, reply: VoteReply): void {
    if (this.closed || this.termsUnknown?.delete(from) !== true) return;
    this.termsAnswered.add(from);
    this.termsFloor = Math.max(this.termsFloor, reply.term);
    if (reply.lastLsn !== 0) this.termsPeersEmpty = false; // (absent from an older version's answer)
    // A member its peer knows of and it does not (its set changed while its storage was lost:
    // it may have voted for that one, in a term only that one knows): asked too, at once.
    for (const id of reply.members ?? []) {
      if (id === this.self || this.termsAnswered.has(id) || this.termsUnknown.has(id) || this.termsAnswered.size + this.termsUnknown.size >= TERMS_PROBED_MAX) continue;
      this.termsUnknown.add(id);
      this.termsProbeDueMs = Number.NEGATIVE_INFINITY;
    }
    // A shard its operator says is new: a majority at term 0 without a record will do (the
    // peers still silent are taken for new ones too).
    if (this.termsUnknown.size > 0 && this.newIfMajorityEmpty && this.termsFloor === 0 && this.termsPeersEmpty && this.term === 0 && this.lastLsn === 0 && this.commitLsn === 0 && this.quorumOf((id) => id === this.self || this.termsAnswered.has(id))) {
      this.termsUnknown.clear();
    }
    if (this.termsUnknown.size > 0) return;
    this.termsUnknown = undefined;
    const floor = this.termsFloor;
    if (floor === 0 && this.term === 0 && this.lastLsn === 0 && this.commitLsn === 0) {
      // No replica of the shard ever campaigned (a candidate saves its term first): none ever
      // had a vote or an acknowledgement of this one. It is a new replica after all.
      this.repairTerm = undefined;
      this.firstElection();
    } else if (this.termsPeersEmpty && this.lastLsn === 0 && this.commitLsn === 0) {
      // No peer holds a record: none was ever committed (a majority holds each committed record,
      // and at most a minority lost its storage), so no acknowledgement of this one counts. Only
      // its votes matter: it takes the highest term, as if it had voted in it, and votes after.
      // (Else the replicas of a shard restarted before any vote was saved, all but the first
      // candidate finding nothing, would all wait for a leader only they could elect.)
      if (floor > this.term) this.adoptTerm(floor);
      if (this.term === floor && this.votedFor === null) this.votedFor = this.self;
      this.repairTerm = undefined;
      this.repairTarget = undefined;
    } else {
      if (floor > this.term) this.adoptTerm(floor);
      // It may have voted in `floor` before it lost its storage: it votes no more in it.
      if (this.term === floor && this.votedFor === null) this.votedFor = this.self;
      // Repaired as a replica that lost records at its term: by a leader of a later term, or
      // one of this term once it holds that leader's last LSN (checkRepaired).
      this.repairTerm = this.term;
      this.repairTarget = undefined;
    }
    void this.persistHardState().catch(() => undefined);
  }

  /**
   * While repairing, under a leader of the repair's own term: the leader's last LSN in the first
   * message this replica took from it after the restart (see checkRepaired).
   */
  private repairTarget: number | undefined;

  private noteRepairTarget(leaderTerm: number, leaderLastLsn: number | undefined): void {
    if (this.repairTerm === undefined || leaderTerm !== this.repairTerm || this.repairTarget !== undefined) return;
    if (leaderLastLsn !== undefined) this.repairTarget = leaderLastLsn;
  }

  /**
   * Ends the repair once this replica holds every record that may have been committed with an
   * acknowledgement it lost. Its commit point (a record it holds durably, below which its log
   * matches the leader's) must be a record of the current leader's term, which follows every
   * record committed in earlier terms (the leader's log holds them all). Then:
   * - a leader of a term after the repair's was elected without this replica, and counts only
   *   acknowledgements it gave since: nothing more is needed;
   * - a leader of the repair's own term may have counted acknowledgements this replica gave
   *   before it lost them, but only of records it had sent, so at or below its last LSN in its
   *   first message after the restart: the commit point must reach that (`repairTarget`). A
   *   leader counts those old acknowledgements only until this replica's first answer, which
   *   tells it the log is shorter (onAppendReply lowers what it counts).
   */
  private checkRepaired(leaderTerm: number): void {
    const repairTerm = this.repairTerm;
    if (repairTerm === undefined || this.commitLsn === 0 || this.termsUnknown !== undefined) return;
    if (leaderTerm === repairTerm && (this.repairTarget === undefined || this.commitLsn < this.repairTarget)) return;
    let term: number;
    try {
      term = this.termOf(this.commitLsn);
    } catch {
      return; // Not readable now; the next commit asks again.
    }
    if (term !== leaderTerm) return;
    this.repairTerm = undefined;
    this.repairTarget = undefined;
    void this.persistHardState().catch(() => undefined);
  }

  /**
   * Where this replica's log stands and, with `range`, the digest of its records there
   * (`strata shard check`: the committed records every replica holds must be the same). Reads
   * the log on the caller's thread, at most DIGEST_BYTES_MAX of payloads. Errors: those of
   * digestRecords (`trimmed`, `out_of_range`, `corruption`, `bad_request`), `closed`.
   */
  digest(range?: { fromLsn: number; toLsn: number }, pages?: { lsn: number; first: number; count: number }): ReplicaDigest {
    if (this.closed) throw new StorageError('closed', `replica ${this.geometry.volumeId}/${this.geometry.shard} closed`);
    const out: ReplicaDigest = {
      role: this.role, term: this.term, firstLsn: this.log.firstLsn, lastLsn: this.log.lastLsn, commitLsn: this.commitLsn,
      appliedLsn: this.store.appliedLsn, oldestLsn: this.store.oldestReadableLsn,
    };
    if (range !== undefined) out.digest = digestRecords(this.log, range.fromLsn, range.toLsn);
    if (pages !== undefined) out.pages = this.digestPages(pages.lsn, pages.first, pages.count);
    return out;
  }

  /**
   * The digest of this shard's pages among volume pages `first`..`first + count - 1` as of `lsn`
   * (`strata shard check --pages`: replicas that applied the same records must read the same
   * pages, whatever their images and caches). At most PAGE_DIGEST_BYTES_MAX of its own pages
   * (`too_large`). Errors of GetPage@LSN: `future_lsn` (not applied yet), `trimmed`,
   * `corruption`; `out_of_range` for pages past the volume.
   */
  private digestPages(lsn: number, first: number, count: number): PageDigest {
    const g = this.geometry;
    if (!Number.isSafeInteger(first) || first < 0 || !Number.isSafeInteger(count) || count < 1) {
      throw new StorageError('bad_request', `pages ${String(first)} + ${String(count)} is not a range`);
    }
    if (first + count > g.pageCount) throw new StorageError('out_of_range', `pages ${first}..${first + count - 1} are not all in the volume (0..${g.pageCount - 1})`, { first, count });
    const most = Math.floor(PAGE_DIGEST_BYTES_MAX / g.pageSize);
    const own: number[] = [];
    for (let p = first; p < first + count; ) {
      const stripeEnd = Math.min(first + count, (Math.floor(p / g.stripePages) + 1) * g.stripePages);
      if (shardOfPage(p, g) === g.shard) {
        if (own.length + (stripeEnd - p) > most) throw new StorageError('too_large', `more than ${most} pages of shard ${g.shard} in pages ${first}..${first + count - 1}`, { pagesMax: most });
        for (let q = p; q < stripeEnd; q++) own.push(q);
      }
      p = stripeEnd;
    }
    const head = new Uint8Array(4);
    const view = new DataView(head.buffer);
    let crc = 0;
    for (let i = 0; i < own.length; i += GET_PAGES_MAX) {
      const batch = own.slice(i, i + GET_PAGES_MAX);
      const data = this.store.getPages(batch, lsn);
      for (let k = 0; k < batch.length; k++) {
        view.setUint32(0, batch[k]!, true);
        crc = crc32c(data[k]!, crc32c(head, crc));
      }
    }
    return { lsn, first, count, pages: own.length, digest: crc };
  }

  /**
   * Operator override (`strata shard force-vote`): a repairing replica (HardState.repairTerm)
   * votes and campaigns again at once, accepting that records only it had acknowledged, and then
   * lost, stay lost. For a shard left without a majority of whole replicas: a repairing replica
   * and a second one down, or two repairing at once. Resolves once the cleared mark is durable,
   * with whether the replica was repairing (if not, nothing changes) and its term.
   */
  async forceVote(): Promise<ForceVoteResult> {
    if (this.closed) throw new StorageError('closed', `replica ${this.geometry.volumeId}/${this.geometry.shard} closed`);
    if (this.repairTerm === undefined) return { wasRepairing: false, term: this.term };
    this.repairTerm = undefined;
    this.repairTarget = undefined;
    this.termsUnknown = undefined;
    // The term of the override: while it is saved, the replica may already campaign (a set of
    // one elects itself at once), in a later term.
    const term = this.term;
    await this.persistHardState();
    return { wasRepairing: true, term };
  }

  /** Moves to a newer term as a follower (vote cleared); the caller persists. */
  private adoptTerm(term: number): void {
    assert(term > this.term, 'terms only grow', { term, current: this.term });
    const wasLeader = this.role === 'leader';
    this.term = term;
    this.votedFor = null;
    this.role = 'follower';
    this.leader = null;
    this.quiescedUnder = undefined;
    if (wasLeader) this.leaderStopped('a newer term exists');
  }

  private stepDown(term: number, leader: string | null, reason: string): void {
    const wasLeader = this.role === 'leader';
    if (term > this.term) {
      this.term = term;
      this.votedFor = null;
      void this.persistHardState().catch(() => undefined);
    }
    this.role = 'follower';
    this.leader = leader;
    this.resetElectionDeadline();
    if (wasLeader) this.leaderStopped(reason);
  }

  private leaderStopped(reason: string): void {
    // Deposed by the term of the follower it handed its leadership to: said so.
    if (this.handover !== undefined && this.term > this.handover.term) reason = `handed its leadership to '${this.handover.to}'`;
    this.endHandover();
    this.quiesced = false;
    this.quiesceAsked = false;
    this.followers.clear();
    this.recent = [];
    this.recentBytes = 0;
    const err = notLeader(this.leader, this.term);
    for (const w of this.commitWaiters) {
      if (w.recordTerm === undefined) {
        w.reject(err);
        continue;
      }
      // Its record may still be committed by the next leader: the client retries naming it
      // (shard.write `earlier`), so that the next leader does not write the pages twice.
      const e = notLeader(this.leader, this.term, { recordLsn: w.lsn, recordTerm: w.recordTerm });
      e.message = `${e.message} (${reason}); ${recordNote(w.lsn, w.recordTerm)}`;
      w.reject(e);
    }
    this.commitWaiters = [];
    for (const w of this.applyWaiters) {
      const e = notLeader(this.leader, this.term);
      e.message = `${e.message} (${reason})`;
      w.reject(e);
    }
    this.applyWaiters = [];
    this.onRoleChange?.('follower', this.term, reason);
  }

  // ---------------------------------------------------------------------------------------------
  // Elections
  // ---------------------------------------------------------------------------------------------

  /**
   * PreVote: before raising its term, a replica whose election timer fired asks the others
   * whether they would vote for it in the next term. Only with a majority of yes does it start
   * the election. A replica cut off from the others, or behind them, thus keeps its term, and
   * cannot depose a leader when it comes back.
   */
  private startPreVote(): void {
    if (this.closed || this.role === 'leader') return;
    // A candidate whose timer fired: its election ended without a leader.
    if (this.role === 'candidate') this.failedElections++;
    this.resetElectionDeadline();
    // Its last LSN still counts records a queued truncation is cutting: it waits for the cut.
    if (this.truncating > 0) return;
    // A log that lost records could make a leader without them: it waits to be given them back.
    // (A sole copy is marked only when its storage was lost: it waits for an operator.)
    if (this.repairTerm !== undefined) return;
    // Removed from the replica set (the change committed without it): it waits to be destroyed.
    if (!this.isVoter()) return;
    // A branch's replica without the branch point's pages: it waits to be sent the shard.
    if (this.awaitingSeed()) return;
    this.leader = null;
    if (this.quorumOf((id) => id === this.self)) {
      void this.startElection();
      return;
    }
    const term = this.term + 1;
    const round = { term, votes: new Set([this.self]) };
    this.preVote = round;
    this.counters.preVotes++;
    const req: VoteRequest = { type: 'prevote', term, candidate: this.self, lastLsn: this.lastLsn, lastTerm: this.lastTerm };
    this.askPeers(req, (id, reply) => this.onPreVoteReply(id, round, reply));
  }

  private onPreVoteReply(from: string, round: { term: number; votes: Set<string> }, reply: VoteReply): void {
    if (this.closed || this.preVote !== round) return;
    if (!reply.granted) {
      // A replica at a newer term: follow it (this is no vote of ours, only its term).
      if (reply.term > this.term) {
        this.preVote = undefined;
        this.stepDown(reply.term, null, 'a voter is at a newer term');
      }
      return;
    }
    // Still the round of this term, with nothing heard from a leader since it started.
    if (this.role === 'leader' || this.term + 1 !== round.term || this.leader !== null || this.truncating > 0) return;
    round.votes.add(from);
    if (this.quorumOf((id) => round.votes.has(id))) {
      this.preVote = undefined;
      void this.startElection();
    }
  }

  /** Sends a (pre)vote request to every peer; an answer that does not come is a no. */
  private askPeers(req: VoteRequest, onReply: (id: string, reply: VoteReply) => void): void {
    for (const id of this.peerIds) {
      this.transport.send(id, req, this.timing.rpcTimeoutMs).then(
        (reply) => onReply(id, reply as VoteReply),
        () => undefined,
      );
    }
  }

  private async startElection(handedOver = false): Promise<void> {
    if (this.closed || this.role === 'leader') return;
    this.role = 'candidate';
    this.term += 1;
    this.votedFor = this.self;
    this.leader = null;
    this.votes = new Set([this.self]);
    this.counters.elections++;
    this.resetElectionDeadline();
    const term = this.term;
    try {
      await this.persistHardState();
    } catch {
      return; // The device failed: the host restarts this replica from disk.
    }
    // Closed meanwhile (restarted): the replica that took its place campaigns for itself.
    if (this.closed || this.term !== term || this.role !== 'candidate') return;
    if (this.quorumOf((id) => this.votes.has(id))) {
      this.becomeLeader();
      return;
    }
    const req: VoteRequest = { type: 'vote', term, candidate: this.self, lastLsn: this.lastLsn, lastTerm: this.lastTerm, ...(handedOver ? { transfer: true as const } : {}) };
    this.askPeers(req, (id, reply) => this.onVoteReply(id, term, reply));
  }

  private onVoteReply(from: string, term: number, reply: VoteReply): void {
    if (this.closed) return;
    if (reply.term > this.term) {
      this.stepDown(reply.term, null, 'a voter is at a newer term');
      return;
    }
    if (this.role !== 'candidate' || this.term !== term || !reply.granted) return;
    this.votes.add(from);
    if (this.quorumOf((id) => this.votes.has(id))) this.becomeLeader();
  }

  /**
   * True while this replica knows of a live leader: as a follower, it heard from its leader less
   * than the minimum election timeout ago; as the leader, a majority answered within that time.
   * Such a replica ignores candidates (leader stickiness): a leader's lease rests on its
   * followers voting for no one until a whole minimum election timeout after its message.
   */
  private knowsLiveLeader(): boolean {
    const min = this.timing.electionTimeoutMinMs;
    // A quiesced leader's followers wait for it (ignoring a candidate is never unsafe).
    if (this.role === 'leader') return this.quiesced || this.hasMajorityContact(min);
    // Measured from the last message of a leader alone: learning of a newer term afterwards (a
    // late answer to a prevote, say) does not end it, since the lease counts that message.
    const now = this.now();
    return now - this.leaderContactMs < min || this.quiescedStill(now);
  }

  /**
   * Leader stickiness: a candidate other than this replica's last leader, while it knows of a
   * live one. (A follower hears its leader campaign again after a restart; a leader's last leader
   * is itself, so no candidate is exempt while a majority follows it.)
   */
  private ignoresCandidate(req: VoteRequest): boolean {
    // A candidate a leader handed its leadership to: that leader gave up its lease first.
    if (req.type === 'vote' && req.transfer === true) return false;
    return req.candidate !== this.lastLeader && this.knowsLiveLeader();
  }

  /** True if the candidate's log is at least as up to date as this replica's (higher last term, or same and at least as long). */
  private candidateUpToDate(req: VoteRequest): boolean {
    return req.lastTerm > this.lastTerm || (req.lastTerm === this.lastTerm && req.lastLsn >= this.lastLsn);
  }

  /**
   * Answers a prevote: whether this replica would vote for the candidate in `req.term`. Nothing
   * changes here (neither term nor vote), so nothing is saved.
   */
  private handlePreVote(req: VoteRequest): VoteReply {
    const granted = req.term > this.term && this.repairTerm === undefined && this.candidateUpToDate(req) && !this.ignoresCandidate(req);
    // To the probe of a replica whose storage was lost (term 0, probeTerms), its last LSN too,
    // unless it is repairing a log that lost records (it may have held committed ones). One whose
    // storage was lost too held nothing since.
    if (req.term !== 0) return { term: this.term, granted };
    // Its members too: the prober asks each of them (a set changed while its storage was lost).
    const members = [...this.members];
    if (this.repairTerm !== undefined && this.termsUnknown === undefined) return { term: this.term, granted, members };
    return { term: this.term, granted, lastLsn: this.lastLsn, members };
  }

  /** Answers a vote request; the vote is durable before the reply. */
  async handleVote(req: VoteRequest): Promise<VoteReply> {
    // Neither a vote nor the candidate's term: a candidate cut off from the leader alone (or
    // whose timer fired during a pause) must not depose a leader that a majority still follows.
    if (this.ignoresCandidate(req)) return { term: this.term, granted: false };
    if (req.term > this.term) this.adoptTerm(req.term);
    let granted = false;
    // A replica whose log lost records (repairTerm) could vote for a candidate without them.
    if (req.term === this.term && this.repairTerm === undefined && (this.votedFor === null || this.votedFor === req.candidate) && this.candidateUpToDate(req)) {
      this.votedFor = req.candidate;
      granted = true;
      this.resetElectionDeadline();
    }
    await this.persistHardState();
    // Closed meanwhile: its save was refused or came first, and the replica that took its place
    // answers from what is durable.
    if (this.closed) throw new StorageError('closed', `replica ${this.geometry.volumeId}/${this.geometry.shard} closed`);
    return { term: this.term, granted };
  }

  private becomeLeader(): void {
    const noop: LogRecordInput = { term: this.term, kind: RecordKind.Noop, payload: new Uint8Array(0) };
    try {
      // A leader's term starts with a record of its own (below): a device that refuses it now
      // (its queue full, or failed) leaves this replica a candidate, whose timer campaigns again.
      this.queue.checkAppend([noop]);
    } catch {
      return;
    }
    this.failedElections = 0;
    this.role = 'leader';
    this.leaderSinceMs = this.nowMs;
    this.busyMs = this.nowMs;
    this.quiesced = false;
    this.quiesceAsked = false;
    this.leader = this.self;
    this.lastLeader = this.self;
    this.followers.clear();
    for (const id of this.peerIds) {
      this.followers.set(id, { next: this.lastLsn + 1, match: 0, inFlight: 0, lastSentMs: 0, ackedSentMs: Number.NEGATIVE_INFINITY, snapshot: undefined, probing: false });
    }
    this.recent = [];
    this.recentBytes = 0;
    // A record of our own term: once it commits, every earlier record is committed too.
    this.termStartLsn = this.appendLocal([noop]);
    this.onRoleChange?.('leader', this.term);
    this.replicateAll(true);
  }

  // ---------------------------------------------------------------------------------------------
  // Leader: local appends, replication, commit
  // ---------------------------------------------------------------------------------------------

  /** Notes the write id of a record put in this log, if it has one (write-ids.ts). */
  private noteWriteId(r: { lsn: number; term: number; kind: number; payload: Uint8Array }): void {
    const id = writeIdOfRecord(r.kind, r.payload);
    if (id !== undefined) this.writeIds.note(id, r.lsn, r.term, this.clock());
  }

  /**
   * Assigns LSNs and queues the records locally; returns the last LSN. `tag`: the write's tracer
   * value. Throws, having changed nothing, when the device would refuse the append (its queue is
   * full, say): LSNs given to records the log never gets would be given again to others.
   */
  private appendLocal(records: LogRecordInput[], tag?: unknown): number {
    this.queue.checkAppend(records, this.spaceExempt);
    this.wake();
    const first = this.lastLsn + 1;
    const stored: HeldRecord[] = records.map((r, i) => {
      const held: HeldRecord = { term: r.term, kind: r.kind, payload: r.payload, lsn: first + i };
      // Kept for the appends to the followers, which carry it (WireRecord.crc).
      if (r.payloadCrc !== undefined) held.payloadCrc = r.payloadCrc;
      if (tag !== undefined) held.tag = tag;
      return held;
    });
    this.lastLsn += records.length;
    this.lastTerm = this.term;
    for (const r of stored) {
      this.recent.push(r);
      this.recentBytes += r.payload.length;
      // Known even if this replica stops leading before the device writes it.
      this.queuedTerms.set(r.lsn, r.term);
      this.noteWriteId(r);
    }
    const term = this.term;
    // Scheduled before the device batch: the records leave for the followers first, so their
    // round trip overlaps this replica's own flush even when that flush blocks the thread.
    if (this.role === 'leader') this.replicateSoon();
    this.queue
      .append(this.log, records)
      .then(({ firstLsn, lastLsn }) => {
        assert(firstLsn === first, 'the log assigns the LSNs the leader assigned', { firstLsn, first });
        for (let k = firstLsn; k <= lastLsn; k++) this.queuedTerms.delete(k);
        this.durableLsn = Math.max(this.durableLsn, lastLsn);
        if (this.role === 'leader' && this.term === term) {
          this.advanceCommit();
          // A majority of followers may have committed these records before this replica's own
          // fdatasync returned; they are applied only now that they are durable here too.
          this.applyCommitted();
          // Without followers (a replica set of one) this is the only place records leave memory.
          this.trimRecent();
        }
      })
      // A failed append, or a broken invariant above: every waiter fails with it, and the host
      // restarts this replica from disk.
      .catch((e: unknown) => this.failAll(e));
    return this.lastLsn;
  }

  /**
   * A device failure: every waiter fails; the host restarts this replica from disk. A write's
   * record may already be with the followers and commit under the next leader: its error names
   * it, as a step-down's does.
   */
  private failAll(e: unknown): void {
    const err = e instanceof Error ? e : new Error(String(e));
    for (const w of this.commitWaiters) w.reject(err instanceof StorageError ? namingRecord(err, w) : err);
    this.commitWaiters = [];
    for (const w of this.applyWaiters) w.reject(err);
    this.applyWaiters = [];
  }

  /**
   * Records from `fromLsn` on (at least one when there is one), within `bytesMax` counting
   * APPEND_RECORD_OVERHEAD_BYTES for each: what one append message carries. Of those not held,
   * none past `lastLsnMax` is read from the log.
   */
  private recordsFrom(fromLsn: number, bytesMax: number, lastLsnMax = Number.POSITIVE_INFINITY): HeldRecord[] {
    const out: HeldRecord[] = [];
    let bytes = 0;
    const head = this.recent.length > 0 ? this.recent[0]!.lsn : this.lastLsn + 1;
    if (fromLsn < head) {
      // Older than the in-memory window: from the log (durable part only).
      const upto = Math.min(head - 1, this.log.lastLsn, lastLsnMax);
      if (fromLsn <= upto) {
        for (const r of this.log.read(fromLsn, upto, { bytesMax })) {
          const b = r.payload.length + APPEND_RECORD_OVERHEAD_BYTES;
          if (out.length > 0 && bytes + b > bytesMax) return out;
          out.push(r);
          bytes += b;
        }
      }
      if (out.length === 0 || out[out.length - 1]!.lsn < head - 1) return out;
    }
    for (let i = Math.max(0, fromLsn - head); i < this.recent.length; i++) {
      const r = this.recent[i]!;
      const b = r.payload.length + APPEND_RECORD_OVERHEAD_BYTES;
      if (out.length > 0 && bytes + b > bytesMax) break;
      out.push(r);
      bytes += b;
    }
    return out;
  }

  /** Replicates the records appended in this turn of the event loop together, once it ends. */
  private replicateSoon(): void {
    if (this.replicateScheduled) return;
    this.replicateScheduled = true;
    this.schedule(() => {
      this.replicateScheduled = false;
      if (this.role === 'leader' && !this.closed) this.replicateAll(false);
    });
  }

  /**
   * Sends every follower what it lacks: first as messages to all of them (`sendToAll`), then
   * each its own, with a heartbeat where one is due.
   */
  private replicateAll(heartbeat: boolean): void {
    const peers = this.peerIds;
    this.upToWindow(() => this.sendToAll(peers));
    for (const id of peers) this.replicateTo(id, heartbeat);
  }

  /**
   * Runs `sendOne` up to APPEND_WINDOW times, until it sends nothing: the next batch is on its way
   * while a follower writes the previous one. A record not readable yet or a log error stops it:
   * the next tick retries; a device failure reaches the host through the failed append, damage
   * through reportDamage, any other error through reportFailure.
   */
  private upToWindow(sendOne: (k: number) => boolean): void {
    try {
      for (let k = 0; k < APPEND_WINDOW; k++) if (!sendOne(k)) break;
    } catch (e) {
      if (e instanceof StorageError) {
        this.reportDamage(e);
        return;
      }
      // Anything else is a bug (or a transport that throws): the host restarts this replica. It
      // runs from a timer or an answer's handler, where thrown it would end the thread.
      if (!this.reportFailure(e)) throw e;
    }
  }

  /**
   * Sends the next records to every follower in one message, when the transport can and every
   * follower has room in its window. A follower behind the one furthest ahead (it was sent less
   * while its window was full) is first sent, in a message of its own, the records up to there,
   * when they fit in one message: so the followers come back to one position and stay there.
   * Each follower's answer is taken as from its own message. False when nothing could be sent
   * this way (each follower is then sent its own messages).
   */
  private sendToAll(peers: readonly string[]): boolean {
    if (this.transport.sendEach === undefined || peers.length < 2 || this.role !== 'leader') return false;
    const fs: FollowerState[] = [];
    let ahead = 0;
    for (const id of peers) {
      const f = this.followers.get(id);
      if (!f || f.inFlight >= APPEND_WINDOW || f.snapshot !== undefined || f.probing === true || f.next < this.log.firstLsn || this.pausing(f)) return false;
      fs.push(f);
      ahead = Math.max(ahead, f.next);
    }
    if (ahead > this.lastLsn) return false;
    // Each follower's append holds what the smallest bound among them allows (after a `too_large`).
    const bytesMax = Math.min(...fs.map((f) => this.batchBytesOf(f)));
    const catchUp: Array<HeldRecord[] | undefined> = [];
    for (const f of fs) {
      if (f.next === ahead) {
        catchUp.push(undefined);
        continue;
      }
      if (f.inFlight + 2 > APPEND_WINDOW) return false;
      const records = this.recordsFrom(f.next, bytesMax);
      if (records.length === 0 || records[records.length - 1]!.lsn < ahead - 1) return false;
      catchUp.push(records.slice(0, ahead - f.next));
    }
    const records = this.recordsFrom(ahead, bytesMax);
    if (records.length === 0) return false;
    fs.forEach((f, i) => {
      const behind = catchUp[i];
      if (behind !== undefined) this.sendAppend([peers[i]!], [f], f.next - 1, behind);
    });
    this.sendAppend(peers, fs, ahead - 1, records);
    this.counters.appendsToAll++;
    return true;
  }

  /** Sends the next append (or heartbeat, or snapshot chunk) to a follower if none is in flight. */
  private replicateTo(id: string, heartbeat: boolean): void {
    this.upToWindow((k) => this.sendNext(id, heartbeat && k === 0));
  }

  /** Sends one message to a follower if the window allows and there is something to send. */
  private sendNext(id: string, heartbeat: boolean): boolean {
    const f = this.followers.get(id);
    if (!f || f.inFlight >= APPEND_WINDOW || this.role !== 'leader' || this.pausing(f)) return false;
    // A heartbeat goes also while appends wait for their answers (within the window): a follower
    // whose disk is slow to make them durable still hears its leader, and does not campaign.
    // Due at the first tick of each period of the clock, when nothing was sent in it: the
    // heartbeats of every shard a host leads go out in the same turn, so that the transport can
    // carry those to one node in one message (runtime/heartbeat-batcher.ts). A follower then
    // hears its leader at least every period and a tick.
    // Quiesced: one a quiesced period, as aligned to the clock.
    const hb = this.quiesced ? this.timing.quiescedHeartbeatMs : this.timing.heartbeatMs;
    const due = Math.floor(this.nowMs / hb) > Math.floor(f.lastSentMs / hb);
    if (f.next > this.lastLsn && !(heartbeat && due) && f.snapshot === undefined) return false;
    if (f.snapshot !== undefined || f.next < this.log.firstLsn) {
      if (f.inFlight === 0) this.sendSnapshotChunk(id, f);
      return false;
    }
    if (f.probing === true && f.inFlight > 0) return false; // One probe at a time.
    const prevLsn = f.next - 1;
    const records = f.next <= this.lastLsn && f.probing !== true ? this.recordsFrom(f.next, this.batchBytesOf(f)) : [];
    if (f.next <= this.lastLsn && records.length === 0 && f.probing !== true) return false; // Not readable yet; the next tick retries.
    this.sendAppend([id], [f], prevLsn, records);
    return records.length > 0;
  }

  /**
   * Sends the append of `records` after `prevLsn` to the followers `ids` (states `fs`): one
   * message to each, or one to all of them through the transport's `sendEach`.
   */
  private sendAppend(ids: readonly string[], fs: readonly FollowerState[], prevLsn: number, records: readonly HeldRecord[]): void {
    const req: AppendRequest = {
      type: 'append',
      term: this.term,
      leader: this.self,
      prevLsn,
      prevTerm: this.termOf(prevLsn),
      // Each with its payload's checksum, for the follower to check what it receives: computed
      // once per record held (its write computed it already), per read for those from the log.
      records: records.map((r): WireRecord => ({ term: r.term, kind: r.kind, payload: r.payload, crc: (r.payloadCrc ??= crc32c(r.payload)) })),
      commitLsn: this.commitLsn,
      leaderLastLsn: this.lastLsn,
    };
    if (records.length === 0 && (this.quiesced || this.quiesceAsked)) req.quiesce = true;
    const sentMs = this.nowMs;
    const term = this.term;
    if (records.length > 0) this.counters.appendsSent++;
    for (const f of fs) {
      f.inFlight++;
      f.next = prevLsn + records.length + 1;
      f.lastSentMs = sentMs;
    }
    const timeoutMs = this.timing.rpcTimeoutMs;
    const replies = ids.length === 1
      ? [this.traced(records, () => this.transport.send(ids[0]!, req, timeoutMs))]
      : this.traced(records, () => this.transport.sendEach!(ids, req, timeoutMs));
    ids.forEach((id, i) => {
      const f = fs[i]!;
      replies[i]!.then(
        (reply) => {
          try {
            this.onAppendReply(id, f, term, sentMs, prevLsn, records.length, reply as AppendReply, req.quiesce === true);
          } catch (e) {
            // Nothing awaits an answer's handler: what it throws goes to the host, not the thread.
            if (!(this.reportDamage(e) || this.reportFailure(e))) throw e;
          }
        },
        (err: unknown) => {
          // Refused (the follower's error answer), lost or unanswered: send again from here (never
          // below what the follower acknowledged), a heartbeat interval later, first without
          // records; what it said is kept for the writes that wait on it.
          if (this.followers.get(id) === f) this.wake();
          f.refused = refusalOf(err);
          f.inFlight = Math.max(0, f.inFlight - 1);
          f.next = Math.max(f.match + 1, Math.min(f.next, prevLsn + 1));
          this.pause(f);
          f.probing = true;
          if (records.length > 0 && f.refused.code === 'corruption') this.checkSentRecords(records);
          if (records.length > 0 && f.refused.code === 'too_large' && this.followers.get(id) === f) this.onTooLarge(id, f, records);
        },
      );
    });
  }

  /**
   * An append of `records` to follower `id` was refused as larger than a message may be: the
   * next ones to it hold half as many bytes (at least one record). Sent again the same size, it
   * would be refused again and again, and the follower would never catch up.
   */
  private onTooLarge(id: string, f: FollowerState, records: readonly HeldRecord[]): void {
    this.counters.appendsTooLarge++;
    let bytes = 0;
    for (const r of records) bytes += r.payload.length + APPEND_RECORD_OVERHEAD_BYTES;
    // Halved from what was sent (a short batch may have been sent under a larger bound); a bound
    // below one record's bytes still sends one record (recordsFrom).
    f.batchBytesMax = Math.max(1, Math.floor(Math.min(this.batchBytesOf(f), bytes) / 2));
    const oneRecord = records.length === 1;
    if (oneRecord ? f.oneRecordTooLargeSaid === true : f.tooLargeSaid === true) return;
    if (oneRecord) f.oneRecordTooLargeSaid = true;
    f.tooLargeSaid = true;
    this.onAppendTooLarge?.({ follower: id, records: records.length, bytes, batchBytesMax: f.batchBytesMax, oneRecord, firstLsn: records[0]!.lsn });
  }

  /** After a message to `f` was lost or refused: nothing to it for a heartbeat interval (then an append without records, with `probing`). */
  private pause(f: FollowerState): void {
    f.retryAtMs = this.nowMs + this.timing.heartbeatMs;
  }

  /** Whether nothing is sent to `f` now (`pause`). */
  private pausing(f: FollowerState): boolean {
    return this.nowMs < (f.retryAtMs ?? 0);
  }

  /** Runs a send; with a tracer, inside its `send` with the tracer values of the records' writes. */
  private traced<T>(records: readonly HeldRecord[], run: () => T): T {
    const tracer = this.tracer;
    if (tracer === undefined) return run();
    let tags = NO_TAGS;
    for (const r of records) {
      if (r.tag === undefined) continue;
      if (tags === NO_TAGS) tags = [];
      (tags as unknown[]).push(r.tag);
    }
    return tracer.send(tags, run);
  }

  private onAppendReply(id: string, f: FollowerState, term: number, sentMs: number, prevLsn: number, count: number, reply: AppendReply, askedQuiesce = false): void {
    // An answer that arrives after close (its volume deleted, its host stopping) is too late:
    // the store is closed, and applying would throw where nobody catches it.
    if (this.closed) return;
    // Counted against the state it was sent from (an answer from an earlier term leaves the
    // window of this term's state alone).
    f.inFlight = Math.max(0, f.inFlight - 1);
    if (this.followers.get(id) !== f && reply.term <= this.term) return;
    if (reply.term > this.term) {
      this.stepDown(reply.term, null, 'a follower is at a newer term');
      return;
    }
    if (this.role !== 'leader' || this.term !== term) return;
    // No follower acknowledges more than the message held (its match is at most prevLsn + count):
    // such an answer did not come from one (replication is not authenticated), and is taken as
    // none. Counted as an acknowledgement, it would commit records the leader does not have.
    if (reply.success && reply.matchLsn !== undefined && reply.matchLsn > prevLsn + count) {
      this.counters.repliesIgnored++;
      return;
    }
    f.ackedSentMs = Math.max(f.ackedSentMs, sentMs);
    if (reply.success) {
      f.match = Math.max(f.match, reply.matchLsn ?? prevLsn + count);
      f.next = Math.max(f.next, prevLsn + count + 1);
      f.probing = false;
      // It took records, which come in order: those it refused first. Or it holds all there is.
      if (count > 0 || f.match >= this.lastLsn) f.refused = undefined;
      this.advanceCommit();
      this.trimRecent();
      if (askedQuiesce) this.onQuiesceAnswer(f, reply);
    } else {
      if (this.quiesced) this.wake();
      // A follower whose log ends below what it acknowledged lost records to damage (it repaired
      // its log at open): its acknowledgement no longer counts, and it is sent them again. (A
      // conflict's hint may go below what it acknowledged: where to continue, not its log's end.)
      if (reply.conflict !== true && reply.lastLsn < f.match) f.match = reply.lastLsn;
      // Log mismatch: continue from what the follower has (never below what it acknowledged),
      // with probes that carry no records until its log matches.
      f.next = Math.max(f.match + 1, Math.min(f.next, prevLsn, reply.lastLsn + 1));
      f.probing = true;
    }
    // What this follower lacks goes at the end of this turn, with the other followers' (one
    // message to all of them when they stand together): sent now, the records written in this
    // turn would reach it alone, and the followers would part.
    if (this.transport.sendEach !== undefined && this.peerIds.length >= 2) this.replicateSoon();
    else this.replicateTo(id, false);
  }

  /**
   * A follower's answer to a heartbeat that asked it to quiesce: once every follower answered
   * that it is quiesced, holding every record, the leader is. A quiesced leader whose follower
   * answers otherwise (restarted since, say) wakes.
   */
  private onQuiesceAnswer(f: FollowerState, reply: AppendReply): void {
    if (reply.quiesced !== true || reply.matchLsn !== this.lastLsn) {
      if (this.quiesced) this.wake();
      return;
    }
    f.quiesceAcked = true;
    if (!this.quiesceAsked) return;
    for (const id of this.peerIds) if (this.followers.get(id)?.quiesceAcked !== true) return;
    this.quiesced = true;
    this.quiesceAsked = false;
    this.quiescedBeatMs = this.nextQuiescedPeriodMs(this.nowMs);
    this.counters.quiesces++;
  }

  private sendSnapshotChunk(id: string, f: FollowerState): void {
    if (!this.snapshots) return;
    if (f.snapshot === undefined) {
      const src = this.snapshots.newest();
      if (!src) return;
      f.snapshot = { lsn: src.lsn, term: src.term, bytes: src.bytes, offset: 0 };
    }
    const s = f.snapshot;
    const length = Math.min(this.snapshotChunkBytes, s.bytes - s.offset);
    let data: Uint8Array;
    try {
      data = this.snapshots.read(s.lsn, s.offset, length);
    } catch {
      f.snapshot = undefined; // The image went away (a newer checkpoint): start over with the newest.
      return;
    }
    const done = s.offset + length >= s.bytes;
    const req: SnapshotRequest = {
      type: 'snapshot', term: this.term, leader: this.self, lsn: s.lsn, lastTerm: s.term, bytes: s.bytes,
      offset: s.offset, data, done, ...(done ? { config: this.configAt(s.lsn) } : {}),
    };
    f.inFlight++;
    const sentMs = this.nowMs;
    f.lastSentMs = sentMs;
    const term = this.term;
    this.traced([], () => this.transport.send(id, req, this.timing.rpcTimeoutMs * 5)).then(
      (r) => {
        if (this.closed) return; // too late, as in onAppendReply
        f.inFlight = Math.max(0, f.inFlight - 1);
        const reply = r as SnapshotReply;
        if (reply.term > this.term) {
          this.stepDown(reply.term, null, 'a follower is at a newer term');
          return;
        }
        if (this.role !== 'leader' || this.term !== term || f.snapshot !== s) return;
        f.ackedSentMs = Math.max(f.ackedSentMs, sentMs);
        if (!reply.ok) {
          f.snapshot = undefined;
          return;
        }
        s.offset = reply.nextOffset;
        if (req.done) {
          f.snapshot = undefined;
          f.match = Math.max(f.match, s.lsn);
          f.next = s.lsn + 1;
          this.counters.snapshotsSent++;
          // It took the image: what it refused before is in it.
          f.refused = undefined;
        }
        this.replicateTo(id, false);
      },
      (err: unknown) => {
        f.inFlight = Math.max(0, f.inFlight - 1);
        this.pause(f);
        // The follower checked the whole image it was sent and found it damaged: a transfer
        // error, or our image is damaged. Ours is checked; the next transfer starts again.
        if (req.done && (err as ProtocolError | undefined)?.details?.['refused'] === 'corruption' && f.snapshot === s) {
          f.snapshot = undefined;
          void this.checkOwnImage(s.lsn);
        }
      },
    );
  }

  private advanceCommit(): void {
    if (this.role !== 'leader') return;
    // The highest LSN a majority of every set holds (both sets during a change).
    let candidate = Number.POSITIVE_INFINITY;
    for (const set of this.sets()) {
      const matches = set.map((id) => (id === this.self ? this.durableLsn : this.followers.get(id)?.match ?? 0)).sort((a, b) => b - a);
      candidate = Math.min(candidate, matches[Math.floor(set.length / 2)]!);
    }
    // Only a record of the current term commits by counting (earlier ones commit with it).
    if (candidate > this.commitLsn && this.termOf(candidate) === this.term) {
      this.commitLsn = candidate;
      this.applyCommitted();
    }
    // A handover waits for every record committed and held by its target: maybe now.
    if (this.handover !== undefined) this.askToTakeOver();
  }

  /**
   * Drops the held records up to `lsn`, and then the oldest while more than `bytesMax` are held,
   * none past `lastLsnMax` (they stay in the log, or are queued for it; what is applied is durable).
   */
  private dropHeld(lsn: number, bytesMax: number, lastLsnMax = Number.POSITIVE_INFINITY): void {
    let drop = 0;
    while (drop < this.recent.length && (this.recent[drop]!.lsn <= lsn || this.recentBytes > bytesMax) && this.recent[drop]!.lsn <= lastLsnMax) {
      this.recentBytes -= this.recent[drop]!.payload.length;
      drop++;
    }
    if (drop > 0) this.recent = this.recent.slice(drop);
  }

  /** Drops the held records from `lsn` on (the log is cut there, or replaced). */
  private cutHeld(lsn: number): void {
    const head = this.recent.length > 0 ? this.recent[0]!.lsn : lsn;
    const keep = Math.max(0, lsn - head);
    if (keep >= this.recent.length) return;
    for (let i = keep; i < this.recent.length; i++) this.recentBytes -= this.recent[i]!.payload.length;
    this.recent = this.recent.slice(0, keep);
  }

  /** Drops in-memory records every follower has durably (they stay in the log). */
  private trimRecent(): void {
    let minMatch = this.durableLsn;
    for (const f of this.followers.values()) minMatch = Math.min(minMatch, f.match);
    // A record not in the log yet stays: a follower may still need it, and it can be read nowhere else.
    this.dropHeld(minMatch, RECENT_BYTES_MAX, this.log.lastLsn);
  }

  // ---------------------------------------------------------------------------------------------
  // Applying committed records
  // ---------------------------------------------------------------------------------------------

  private applyCommitted(): void {
    // Closed: the store is too (a flush of this replica that ends after close lands here).
    if (this.applying || this.closed) return;
    this.applying = true;
    try {
      const upto = Math.min(this.commitLsn, this.durableLsn);
      while (this.store.appliedLsn < upto) {
        const from = this.store.appliedLsn + 1;
        // Held records are applied from memory; older ones are read back from the log.
        const held = this.recent.length > 0 ? this.recent[0]!.lsn : Number.POSITIVE_INFINITY;
        const batch = this.recordsFrom(from, 4 * 1024 * 1024, upto);
        if (batch.length === 0) break;
        for (const r of batch) {
          if (r.lsn > upto) break;
          this.store.apply(r);
          this.recordsSinceCheckpoint++;
          if (r.lsn < held) this.counters.appliedFromLog++;
        }
      }
    } catch (e) {
      // A record read back from the log failed its checksum: the host reopens this replica,
      // which is let be until then. A record that cannot be applied (it would fail again after a
      // reopen): the host restarts this replica, then leaves it down. Either way the replica
      // stops applying here. (Thrown out of an answer's handler, it would end the thread.)
      if (this.reportDamage(e) || this.reportFailure(e)) return;
      throw e;
    } finally {
      this.applying = false;
    }
    const applied = this.store.appliedLsn;
    if (this.role !== 'leader') this.dropHeld(applied, Number.POSITIVE_INFINITY);
    this.commitWaiters = this.release(this.commitWaiters, applied);
    this.applyWaiters = this.release(this.applyWaiters, applied);
    this.afterConfigCommitted();
    this.maybeCheckpoint();
  }

  private release(waiters: Waiter[], applied: number): Waiter[] {
    if (waiters.length === 0) return waiters;
    const keep: Waiter[] = [];
    for (const w of waiters) {
      if (w.lsn <= applied) w.resolve();
      else keep.push(w);
    }
    return keep;
  }

  /**
   * On a device short of space (under its reserve), a checkpoint that lets the whole history
   * behind it go (the older images and the log up to it; `retainRecords` still holds): page
   * writes are refused there, so the checkpoint every checkpointEveryRecords records may never
   * come, and the space that pages made zeros or written over hold would not come back. It
   * looks at most every SPACE_CHECKPOINT_EVERY_MS, and starts one only when records were applied
   * since the newest image, and when the image could not take more than half the free space
   * (it is written before the space it frees is let go).
   */
  private checkpointForSpace(nowMs: number): void {
    this.spaceCheckpointAtMs = nowMs + SPACE_CHECKPOINT_EVERY_MS;
    if (this.checkpointEveryRecords <= 0 || this.checkpointing) return;
    const s = this.queue.space();
    if (s === undefined || s.state === 'ok' || this.store.appliedLsn <= this.store.stats().imageLsn) return;
    if (this.store.imageBytesBound() > s.freeBytes / 2) {
      this.counters.spaceCheckpointsSkipped++;
      return;
    }
    this.counters.spaceCheckpoints++;
    // A failure is tried again at the next look (checkpoint counts and reports it).
    void this.checkpoint({ imagesKeep: 1, sealLog: true }).catch(() => undefined);
  }

  private maybeCheckpoint(): void {
    if (this.checkpointEveryRecords <= 0 || this.checkpointing || this.recordsSinceCheckpoint < this.checkpointEveryRecords) return;
    // A failure is tried again after as many records (checkpoint counts and reports it).
    void this.checkpoint().catch(() => undefined);
  }

  /**
   * Writes a checkpoint image at the applied LSN (through the device queue); the log behind it
   * may be trimmed. The records applied while the image was built count toward the next one,
   * which starts at once if they are enough: no later record may come to start it.
   */
  async checkpoint(opts: { imagesKeep?: number; sealLog?: boolean } = {}): Promise<{ lsn: number }> {
    if (this.checkpointing) return { lsn: this.store.appliedLsn };
    this.checkpointing = true;
    let lsn: number;
    try {
      lsn = (await this.runImageSteps(this.store.checkpointSteps({ flushOffThread: true, ...opts }))).lsn;
      this.counters.checkpoints++;
      this.recordsSinceCheckpoint = Math.max(0, this.store.appliedLsn - lsn);
      if (this.checkpointsFailing > 0) {
        if (this.checkpointFailingTold) this.onCheckpointFailing?.({ failures: this.checkpointsFailing });
        this.checkpointsFailing = 0;
        this.checkpointFailingTold = false;
      }
    } catch (e) {
      // Tried again after as many records again, not at the next apply: a checkpoint that
      // keeps failing (a full disk, say) would otherwise build an image after every record.
      this.recordsSinceCheckpoint = 0;
      // Ended by this replica's close, it did not fail.
      if (!this.closed) {
        this.counters.checkpointFailures++;
        this.checkpointsFailing++;
        // Told at the first failure of a run that is not damage (damage is told as damage).
        if (!this.checkpointFailingTold && !(e instanceof CorruptionError)) {
          this.checkpointFailingTold = true;
          this.onCheckpointFailing?.({ failures: this.checkpointsFailing, err: e instanceof Error ? e : new Error(String(e)) });
        }
      }
      throw e;
    } finally {
      this.checkpointing = false;
    }
    if (!this.closed) this.maybeCheckpoint();
    return { lsn };
  }

  /**
   * Writes an image of this replica's pages as of `lsn` into `destDir` (`image-<lsn>.img`, term 0),
   * through the device queue in bounded steps like a checkpoint, for a branch's replica on the
   * same device (docs/branches.md). `lsn` must be applied here and not below the oldest readable
   * LSN (StorageError `future_lsn`, `trimmed`); a checkpoint running refuses it (`unavailable`,
   * asked again by the caller), and none starts while it runs. Changes nothing of this replica.
   * `pageCount`: the branch's size, for its image's header, when this replica has more pages
   * (its volume grew after the branch's size was taken; `out_of_range` if a page past it is held).
   */
  async exportImage(lsn: number, destDir: string, pageCount?: number): Promise<{ lsn: number; path: string }> {
    if (this.closed) throw new StorageError('closed', `replica ${this.geometry.volumeId}/${this.geometry.shard} is closed`);
    if (this.checkpointing) throw new ProtocolError('unavailable', 'a checkpoint is running: asked again once it ends');
    this.checkpointing = true;
    try {
      return await this.runImageSteps(this.store.exportImageSteps(lsn, destDir, { term: 0, flushOffThread: true, ...(pageCount === undefined ? {} : { pageCount }) }));
    } finally {
      this.checkpointing = false;
    }
  }

  /**
   * Runs the steps of an image the store builds (a checkpoint's, an export's), one device task
   * each: writes, flushes and reads of the shards on this device go on between the steps,
   * instead of waiting for the whole image. The image's buffers are flushed off the thread: the
   * queue runs other work meanwhile, and the next step waits for the flush a step yields. Damage
   * found on the way is reported (the fold reads the pages of an image and records of the log);
   * ended early (the queue refused a step, a step failed), the half-written image goes.
   */
  private async runImageSteps<T>(steps: Generator<CheckpointStep, T, void>): Promise<T> {
    try {
      for (;;) {
        const r = await this.queue.task(() => steps.next());
        if (r.done === true) return r.value;
        if (r.value !== undefined) await r.value;
      }
    } catch (e) {
      this.reportDamage(e);
      throw e;
    } finally {
      steps.return(undefined as never);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Follower: appends and snapshots from the leader
  // ---------------------------------------------------------------------------------------------

  /** Queues an inbound append or snapshot so they are handled one at a time, in order (bounded). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    if (this.inboundDepth >= 64) return Promise.reject(new ProtocolError('overloaded', 'replica inbound queue is full'));
    this.inboundDepth++;
    const p = this.inbound.then(fn, fn);
    this.inbound = p.then(
      () => undefined,
      () => undefined,
    );
    return p.finally(() => {
      this.inboundDepth--;
    });
  }

  /**
   * Handles an append in two steps: in arrival order (one at a time) the records are checked and
   * queued on the device; the answer is sent once they are durable. So several messages of a
   * pipelining leader share one fdatasync, and no answer claims a record before it is on disk.
   */
  handleAppend(req: AppendRequest): Promise<AppendReply> {
    return this.serial(() => this.acceptAppend(req)).then((finish) => finish());
  }

  private acceptLeader(term: number, leader: string): boolean {
    if (term < this.term) return false;
    if (term > this.term) this.adoptTerm(term);
    if (this.role === 'leader') {
      // Two leaders in one term cannot happen (one vote per replica per term): the message is
      // wrong, not this replica's state, so it is refused (a restart would repair nothing).
      throw new ProtocolError('bad_request', `leader: '${leader}' claims term ${term}, which this replica leads`, { path: 'leader', term, leader });
    }
    this.role = 'follower';
    this.leader = leader;
    this.leaderContactMs = this.now();
    this.lastLeader = leader;
    // Quiesced again only by this message's answer (acceptAppend).
    this.quiescedUnder = undefined;
    this.failedElections = 0;
    // A prevote round of this replica is over: it has a leader again.
    this.preVote = undefined;
    this.resetElectionDeadline();
    return true;
  }

  /** Term of any LSN this replica has accepted, queued or written (0 for LSN 0). */
  private termOf(lsn: number): number {
    if (lsn === 0) return 0;
    const queued = this.queuedTerms.get(lsn);
    if (queued !== undefined) return queued;
    const head = this.recent.length > 0 ? this.recent[0]!.lsn : Number.POSITIVE_INFINITY;
    if (lsn >= head) return this.recent[lsn - head]!.term;
    return this.log.termAt(lsn);
  }

  /** Terms of records queued on the device but maybe not written yet (follower appends). */
  private readonly queuedTerms = new Map<number, number>();

  /**
   * Its storage was lost and its peers' terms are not all known yet (probeTerms): it answers no
   * leader, not even with a refusal. In its former life it may have voted in a term after this
   * leader's (its candidate not heard from yet): an acknowledgement, or any answer the leader
   * counts as contact, could let a deposed leader commit a write, or renew its lease, next to a
   * leader that term elected with that vote.
   */
  private refuseWhileTermsUnknown(): void {
    if (this.termsUnknown === undefined) return;
    const g = this.geometry;
    throw new ProtocolError('unavailable', `replica ${g.volumeId}/${g.shard} lost its storage and has not learned every peer's term yet`);
  }

  /**
   * Refuses (bad_request) an append carrying a record no leader of this shard writes: a page
   * write that is malformed, of another page size, or writes a page outside this shard; a range
   * made zeros that is malformed or past the volume's end; a no-op
   * with a payload; a record of any other kind. Checked before the append changes anything, its
   * term included: appended and committed, such a record could not be applied, and each reopen
   * of the replica would fail on it again. Replication is not authenticated, so a forged append
   * can carry one; a leader checked its own records when its clients' writes made them.
   */
  private checkRecords(records: readonly WireRecord[]): void {
    const g = this.geometry;
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      const path = `records[${i}]`;
      // Damaged on the way: refused, so that the leader sends it again (after a heartbeat
      // interval), rather than written with a checksum of the damaged bytes.
      if (r.crc !== undefined) checkPageDataCrc(r.crc, crc32c(r.payload), `append to ${g.volumeId}/${g.shard}, ${path}`);
      if (r.kind === RecordKind.PageWrite) {
        let pages: number[];
        try {
          pages = pagesOfPageWrite(r.payload, g.pageSize);
        } catch (e) {
          throw new ProtocolError('bad_request', `${path}: ${e instanceof Error ? e.message : String(e)}`, { path });
        }
        for (const page of pages) {
          if (page >= g.pageCount) throw new ProtocolError('bad_request', `${path}: writes page ${page}, outside 0..${g.pageCount - 1}`, { path, page });
          const shard = shardOfPage(page, g);
          if (shard !== g.shard) throw new ProtocolError('bad_request', `${path}: writes page ${page}, of shard ${shard}, not ${g.shard}`, { path, page });
        }
      } else if (r.kind === RecordKind.PageZero) {
        let range: PageRange;
        try {
          range = decodePageZero(r.payload);
        } catch (e) {
          throw new ProtocolError('bad_request', `${path}: ${e instanceof Error ? e.message : String(e)}`, { path });
        }
        if (range.first + range.count > g.pageCount) {
          throw new ProtocolError('bad_request', `${path}: zeros pages ${range.first}..${range.first + range.count - 1}, outside 0..${g.pageCount - 1}`, { path, ...range });
        }
      } else if (r.kind === RecordKind.Noop) {
        if (r.payload.length > 0) throw new ProtocolError('bad_request', `${path}: a no-op record carries no payload, this one ${r.payload.length} bytes`, { path });
      } else if (r.kind === RecordKind.Config) {
        try {
          decodeConfig(r.payload);
        } catch (e) {
          throw new ProtocolError('bad_request', `${path}: not a replica set: ${e instanceof Error ? e.message : String(e)}`, { path });
        }
      } else {
        throw new ProtocolError('bad_request', `${path}.kind: ${r.kind} is not a kind of record a leader writes (${RecordKind.PageWrite}: page write, ${RecordKind.Noop}: no-op, ${RecordKind.Config}: replica set, ${RecordKind.PageZero}: pages made zeros)`, { path: `${path}.kind` });
      }
    }
  }

  private async acceptAppend(req: AppendRequest): Promise<() => Promise<AppendReply>> {
    this.refuseWhileTermsUnknown();
    this.checkRecords(req.records);
    const now = (reply: AppendReply) => () => Promise.resolve(reply);
    const termBefore = this.term;
    if (!this.acceptLeader(req.term, req.leader)) return now({ term: this.term, success: false, lastLsn: this.lastLsn });
    if (this.term !== termBefore) await this.persistHardState();
    this.noteRepairTarget(req.term, req.leaderLastLsn);
    // Log matching on (prevLsn, prevTerm).
    if (req.prevLsn > this.lastLsn) return now({ term: this.term, success: false, lastLsn: this.lastLsn });
    if (req.prevLsn >= this.log.firstLsn - 1 && req.prevLsn > 0 && this.termOf(req.prevLsn) !== req.prevTerm) {
      // The records of that term before prevLsn came with it (from a leader of that term that
      // did not commit them): the leader goes on from before them, not one record at a time.
      const conflict = this.termOf(req.prevLsn);
      const floor = Math.max(this.commitLsn, this.log.firstLsn - 1, req.prevLsn - MISMATCH_STEP_BACK_MAX);
      let lsn = req.prevLsn - 1;
      while (lsn > floor && this.termOf(lsn) === conflict) lsn--;
      return now({ term: this.term, success: false, lastLsn: Math.max(this.commitLsn, lsn), conflict: true });
    }
    // Skip records already present (same LSN and term); truncate at the first conflict.
    let i = 0;
    let lsn = req.prevLsn + 1;
    while (i < req.records.length) {
      if (lsn < this.log.firstLsn) {
        // Below our trimmed prefix: committed, and so the same as the leader's.
        i++;
        lsn++;
        continue;
      }
      if (lsn > this.lastLsn) break;
      if (this.termOf(lsn) !== req.records[i]!.term) {
        // A committed record is never overwritten: an append that would is wrong, not this
        // replica's log, so it is refused (a restart would repair nothing).
        if (lsn <= this.commitLsn) {
          throw new ProtocolError('bad_request', `records: the record at LSN ${lsn} is committed with term ${this.termOf(lsn)}, not ${req.records[i]!.term}`, { path: 'records', lsn, commitLsn: this.commitLsn });
        }
        const from = lsn;
        // Queued after the appends before it, so it cuts what they write.
        this.truncating++;
        try {
          await this.queue.task(() => this.log.truncateSuffix(from));
        } finally {
          this.truncating--;
        }
        for (const k of [...this.queuedTerms.keys()]) if (k >= from) this.queuedTerms.delete(k);
        this.cutHeld(from);
        this.writeIds.cut(from);
        this.lastLsn = from - 1;
        this.lastTerm = this.termOf(this.lastLsn);
        this.durableLsn = Math.min(this.durableLsn, this.lastLsn);
        if (this.configState.changes.some((c) => c.lsn >= from)) {
          // A change cut with its record: the set before it is in force again.
          const state: ConfigState = { base: this.configState.base, changes: this.configState.changes.filter((c) => c.lsn < from) };
          this.setConfigState(state);
          await this.saveConfigState(state);
        }
        break;
      }
      i++;
      lsn++;
    }
    const matchLsn = req.prevLsn + req.records.length;
    const commitLsn = req.commitLsn;
    const fresh = req.records.slice(i);
    const changes: ConfigChange[] = [];
    fresh.forEach((r, k) => {
      if (r.kind === RecordKind.Config) changes.push({ lsn: this.lastLsn + 1 + k, term: r.term, config: decodeConfig(r.payload) });
    });
    let configState: ConfigState | undefined;
    if (changes.length > 0) {
      // Saved before the records are written: a log that holds a Config record knows its set.
      configState = { base: this.configState.base, changes: [...this.configState.changes, ...changes] };
      const lastLsn = this.lastLsn;
      await this.saveConfigState(configState);
      // A newer term meanwhile (a vote), or an election of its own: this leader's message is stale.
      if (this.term !== req.term || this.role !== 'follower' || this.lastLsn !== lastLsn) return now({ term: this.term, success: false, lastLsn: this.lastLsn });
    }
    let durable: Promise<void>;
    if (fresh.length > 0) {
      // Written with the checksum the leader sent (checked in checkRecords): the record's CRC on
      // this disk is then that of the bytes the leader holds, not of whatever arrived.
      const inputs: LogRecordInput[] = fresh.map((r) => (r.crc === undefined ? { term: r.term, kind: r.kind, payload: r.payload } : { term: r.term, kind: r.kind, payload: r.payload, payloadCrc: r.crc }));
      // Refused (the device's queue is full, say), the leader is answered so, and this log's
      // position is unchanged: LSNs given to records the device never got would shift the next.
      this.queue.checkAppend(inputs, this.spaceExempt);
      const first = this.lastLsn + 1;
      inputs.forEach((r, k) => {
        this.queuedTerms.set(first + k, r.term);
        const held: HeldRecord = { lsn: first + k, term: r.term, kind: r.kind, payload: r.payload };
        if (r.payloadCrc !== undefined) held.payloadCrc = r.payloadCrc;
        this.recent.push(held);
        this.recentBytes += r.payload.length;
        this.noteWriteId(held);
      });
      this.dropHeld(0, FOLLOWER_HELD_BYTES_MAX);
      this.lastLsn += inputs.length;
      this.lastTerm = inputs[inputs.length - 1]!.term;
      // In force from now on, committed or not (as Raft's configuration entries are).
      if (configState !== undefined) this.setConfigState(configState);
      durable = this.queue.append(this.log, inputs).then(({ firstLsn, lastLsn }) => {
        assert(firstLsn === first, 'follower log position', { firstLsn, expected: first });
        this.durableLsn = Math.max(this.durableLsn, lastLsn);
        for (let k = firstLsn; k <= lastLsn; k++) this.queuedTerms.delete(k);
      });
    } else {
      // Nothing to write (a heartbeat, or records already here): answered at once, with what is
      // durable so far as its match. Records still queued are answered for by the append that
      // brought them, once durable. (Waiting for them here, as before, held a heartbeat's answer
      // behind a slow device: the leader's window filled with heartbeats, it sent nothing more,
      // and the follower, hearing nothing, campaigned.)
      durable = Promise.resolve();
    }
    return async () => {
      await durable;
      // Durable and matching the leader's log: the records below durableLsn were written by
      // appends this replica took (a cut lowers it), and its log matches the leader's to matchLsn.
      const durableMatch = Math.min(matchLsn, this.durableLsn);
      const newCommit = Math.min(commitLsn, durableMatch);
      if (newCommit > this.commitLsn) {
        this.commitLsn = newCommit;
        this.applyCommitted();
      }
      this.checkRepaired(req.term);
      // Asked to quiesce, holding every record of the leader, committed, on a host that tells
      // whether the leader's node is heard from: it waits for the leader without campaigning.
      const quiesce = req.quiesce === true && fresh.length === 0 && this.transport.seenMs !== undefined && this.term === req.term && this.leader === req.leader &&
        req.leaderLastLsn === this.lastLsn && durableMatch === this.lastLsn && this.commitLsn === this.lastLsn;
      if (!quiesce) return { term: this.term, success: true, matchLsn: durableMatch, lastLsn: this.lastLsn };
      this.quiescedUnder = req.leader;
      return { term: this.term, success: true, matchLsn: durableMatch, lastLsn: this.lastLsn, quiesced: true };
    };
  }

  /** Whether this log holds a record at `lsn` of `term`, durably (at or after the log's trimmed prefix). */
  private holdsDurably(lsn: number, term: number): boolean {
    if (lsn > this.durableLsn || lsn > this.lastLsn || lsn < this.log.firstLsn - 1) return false;
    try {
      return this.termOf(lsn) === term;
    } catch {
      return false; // Not readable: the image is installed as before.
    }
  }

  handleSnapshot(req: SnapshotRequest): Promise<SnapshotReply> {
    return this.serial(() => this.doSnapshot(req));
  }

  private pendingSnapshot: { lsn: number; term: number; bytes: number; next: number } | undefined;

  private async doSnapshot(req: SnapshotRequest): Promise<SnapshotReply> {
    // Shorter than an image's header and checksum: no leader sends that (refused before it can
    // move the term; an install would only find it short).
    if (req.bytes < IMAGE_BYTES_MIN) {
      throw new ProtocolError('bad_request', `bytes: an image is at least ${IMAGE_BYTES_MIN} bytes, got ${req.bytes}`, { path: 'bytes' });
    }
    this.refuseWhileTermsUnknown();
    const termBefore = this.term;
    if (!this.acceptLeader(req.term, req.leader)) return { term: this.term, ok: false, nextOffset: 0 };
    if (this.term !== termBefore) await this.persistHardState();
    if (!this.snapshots) return { term: this.term, ok: false, nextOffset: 0 };
    if (req.lsn <= this.commitLsn) return { term: this.term, ok: true, nextOffset: req.bytes }; // Nothing to gain.
    if (this.holdsDurably(req.lsn, req.lastTerm)) {
      // Its log holds the image's last record durably, and so (log matching) everything the image
      // holds: it goes on from its log. Installing would cut the records after it, which it may
      // have acknowledged to an earlier leader that committed them: with them gone from its log,
      // it could vote for a candidate without them (a leader's conflict hint steps back over a
      // whole run of one term, to the follower's commit LSN, and so can fall below an image
      // whose last record the follower holds).
      return { term: this.term, ok: true, nextOffset: req.bytes };
    }
    if (req.offset === 0) {
      // An image of the volume as it grew since this replica took its size: refused until its
      // node gives it the new size (volume.grow, or its next reconciliation); the leader sends again.
      const pages = imagePageCountOf(req.data);
      if (pages !== undefined && pages > this.geometry.pageCount) {
        const g = this.geometry;
        throw new ProtocolError('unavailable', `replica ${g.volumeId}/${g.shard} has ${g.pageCount} pages, the image sent ${pages}: its volume grew, and this replica has not taken the new size yet`, { pageCount: g.pageCount, imagePageCount: pages });
      }
      // An image that would take the device under half its reserve, where appends of page
      // writes stop too: refused, and the leader sends it again after a pause.
      if (!this.spaceExempt) this.queue.checkRoomFor(req.bytes, `replica ${this.geometry.volumeId}/${this.geometry.shard}: an image sent by its leader`);
      await this.queue.task(() => this.snapshots!.begin(req.lsn, req.lastTerm, req.bytes));
      this.pendingSnapshot = { lsn: req.lsn, term: req.lastTerm, bytes: req.bytes, next: 0 };
    }
    const p = this.pendingSnapshot;
    if (!p || p.lsn !== req.lsn || p.next !== req.offset) return { term: this.term, ok: false, nextOffset: 0 };
    if (req.done && p.next + req.data.length !== p.bytes) {
      // A last chunk that does not end the image: the message is wrong, not this replica (a
      // failed invariant would restart it); the transfer starts over.
      this.pendingSnapshot = undefined;
      throw new ProtocolError('bad_request', `done: the image is ${p.bytes} bytes, this chunk ends at ${p.next + req.data.length}`, { path: 'done' });
    }
    await this.queue.task(() => this.snapshots!.write(req.offset, req.data));
    p.next += req.data.length;
    if (req.done) {
      // The image's set, saved first as a change at its LSN: kept if the install is, dropped at
      // the next open if not (the log then does not hold that LSN and term).
      const config = req.config ?? this.configAt(req.lsn);
      const imageChange: ConfigChange = { lsn: req.lsn, term: req.lastTerm, config, image: true };
      await this.saveConfigState({ base: this.configState.base, changes: [...this.configState.changes, imageChange] });
      // Looked at again, with the install, after the waits above: an append queued before the
      // image came may have become durable meanwhile, and committed and applied past the image.
      // Installed now, the image would cut records this replica applied (and may have
      // acknowledged): it goes on from its log instead.
      const installed = await this.queue.task(() => (req.lsn <= this.commitLsn || this.holdsDurably(req.lsn, req.lastTerm) ? undefined : this.snapshots!.install()));
      if (installed === undefined) {
        this.snapshots!.discardIncoming();
        this.pendingSnapshot = undefined;
        // The image's set, saved above, is dropped: the log holds what the image held.
        await this.saveConfigState(this.configState);
        return { term: this.term, ok: true, nextOffset: p.next };
      }
      const { log, store } = installed;
      this.log = log;
      this.store = store;
      this.cutHeld(0);
      // The records the image holds came without their write ids.
      this.writeIds.reset(this.clock());
      this.lastLsn = log.lastLsn;
      this.lastTerm = log.lastTerm;
      this.durableLsn = log.syncedLsn;
      this.commitLsn = Math.max(this.commitLsn, store.appliedLsn);
      this.pendingSnapshot = undefined;
      this.counters.snapshotsInstalled++;
      const state: ConfigState = { base: config, changes: [] };
      this.setConfigState(state);
      await this.saveConfigState(state);
      this.checkRepaired(req.term);
    }
    return { term: this.term, ok: true, nextOffset: p.next };
  }

  /** Dispatches any replication message. */
  handle(msg: RaftRequest): Promise<RaftReply> {
    if (this.closed) return Promise.reject(new StorageError('closed', 'replica closed'));
    // Only another member of this replica set sends replication messages. One naming anyone
    // else (a forged or misrouted message) is refused before it can move the term, the leader or
    // the log: adopted, a term of 2^53 - 1 left the shard without a leader for good (no
    // election can go past it), and an append "from another leader" in the leader's own term
    // restarted the replica, five times a minute leaving it down.
    const path = msg.type === 'vote' || msg.type === 'prevote' ? 'candidate' : 'leader';
    const sender = (msg as { candidate?: string; leader?: string })[path]!;
    // A leader's message is taken also from a node the host knows as a member (setKnownMembers):
    // one elected in a set this replica has not learned of yet; and from a member of a set this
    // replica's log still holds: a leader that a change took out leads until the new set alone is
    // committed, and its followers hold that set before it is.
    const member = this.peerList.includes(sender) || (path === 'leader' && (this.knownMembers.has(sender) || this.inKeptConfig(sender)));
    if (sender === this.self || !member) {
      const g = this.geometry;
      return Promise.reject(new ProtocolError('bad_request', `${path}: '${sender}' is not another member of shard ${g.volumeId}/${g.shard} (members: ${this.members.join(', ')})`, { path }));
    }
    // A candidate wakes a quiesced leader, once answered as quiesced (a quiesced leader ignores
    // candidates: its followers wait for it): its heartbeats resume, and the candidate hears it.
    switch (msg.type) {
      case 'vote': {
        const answer = this.handleVote(msg);
        this.wake();
        return answer;
      }
      case 'prevote': {
        const answer = this.handlePreVote(msg);
        this.wake();
        return Promise.resolve(answer);
      }
      case 'append':
        this.heardLeader(msg.term);
        return this.handleAppend(msg);
      case 'snapshot':
        this.heardLeader(msg.term);
        return this.handleSnapshot(msg);
      case 'timeoutNow':
        this.wake();
        return Promise.resolve(this.handleTimeoutNow(msg));
    }
  }

  /**
   * A leader's message arrived, to be taken in turn: after the messages before it, which may wait
   * for a save of a new term on a busy device. A follower at its term or behind it waits a whole
   * election timeout again before campaigning, as when it takes the message: its leader is alive.
   * (Only its own election waits: it votes, and counts its leader's contact, as before, from the
   * messages it has taken.) Before this, a term's first message waiting for its save on a device
   * queue hundreds of operations deep (a new volume of 256 shards × 3 electing on one disk) held
   * the leader's next messages past the follower's timeout, and the follower deposed its leader.
   */
  private heardLeader(term: number): void {
    if (term >= this.term && this.role !== 'leader') this.resetElectionDeadline();
  }

  // ---------------------------------------------------------------------------------------------
  // Client requests (leader only)
  // ---------------------------------------------------------------------------------------------

  /**
   * The fence of a shard request that names the leader term its sender expects (`term`): a
   * sender behind this replica's term is answered `stale_term`, one ahead of it (a newer leader
   * exists that this replica has not heard of) `not_leader`; both with this replica's term and
   * the leader it knows. Nothing is done for either.
   */
  checkTerm(expected: number | undefined): void {
    if (expected === undefined || expected === this.term) return;
    if (expected < this.term) {
      throw new ProtocolError('stale_term', `the request expects term ${expected}; the shard is at term ${this.term}`, { term: this.term, ...(this.leader ? { leader: this.leader } : {}) });
    }
    // A later term than its own: a newer leader exists, which this replica has not heard of.
    throw notLeader(this.leader, this.term, { expectedTerm: expected });
  }

  /** Open and leading (a handover under way or not). */
  private checkLeading(): void {
    if (this.closed) throw new StorageError('closed', `shard ${this.geometry.volumeId}/${this.geometry.shard} is closed`);
    if (this.role !== 'leader') throw notLeader(this.leader, this.term);
  }

  /** Open, leading, and taking requests: no handover of its leadership under way. */
  private checkLeader(): void {
    this.checkLeading();
    if (this.handover !== undefined) {
      // Nothing of the request was taken: a client sends it again, to the new leader (client.ts, handingOver).
      throw new ProtocolError('unavailable', `shard ${this.geometry.volumeId}/${this.geometry.shard} is handing its leadership to '${this.handover.to}'; retry`, { to: this.handover.to, handingOver: true });
    }
  }

  private checkPage(page: number, path: string): void {
    const g = this.geometry;
    if (!Number.isSafeInteger(page) || page < 0 || page >= g.pageCount) {
      throw new StorageError('out_of_range', `${path}: page ${page} is outside the volume (0..${g.pageCount - 1})`, { path, page });
    }
    if (shardOfPage(page, g) !== g.shard) {
      throw new StorageError('bad_request', `${path}: page ${page} belongs to shard ${shardOfPage(page, g)}, not ${g.shard}`, { path, page });
    }
  }

  /**
   * Writes pages atomically (one record); resolves once committed on a majority and applied.
   * A write sent again is answered with its record if this log holds one (`WriteAttempt`).
   */
  async write(pages: readonly PageData[], opts: WriteAttempt = {}): Promise<{ lsn: number; term: number }> {
    this.checkLeader();
    if (pages.length === 0) throw new StorageError('bad_request', 'write of zero pages');
    for (let i = 0; i < pages.length; i++) this.checkPage(pages[i]!.page, `pages[${i}].page`);
    for (let i = 0; i < pages.length; i++) {
      const n = pages[i]!.data.length;
      if (n !== this.geometry.pageSize) {
        throw new StorageError('bad_request', `pages[${i}].data: expected ${this.geometry.pageSize} bytes, got ${n}`, { path: `pages[${i}].data` });
      }
    }
    // The record goes to the followers in one message (alone if need be): it must fit one.
    const recordBytes = pageWriteBytes(this.geometry.pageSize, pages.length, opts.writeId !== undefined);
    if (recordBytes + APPEND_RECORD_OVERHEAD_BYTES + MESSAGE_OVERHEAD_BYTES > this.messageBytesMax) {
      throw new StorageError('too_large', `a write of ${pages.length} pages makes a record of ${recordBytes} bytes, more than a replication message of ${this.messageBytesMax} bytes holds`, {
        bytes: recordBytes,
        bytesMax: this.messageBytesMax - APPEND_RECORD_OVERHEAD_BYTES - MESSAGE_OVERHEAD_BYTES,
      });
    }
    if (opts.dataCrc !== undefined) expectCrc(opts.dataCrc, 'dataCrc');
    return this.commitRecord(RecordKind.PageWrite, () => this.encode(pages, opts.writeId, opts.dataCrc), opts, pages.length);
  }

  /**
   * Makes the pages of this shard in `first`..`first + count - 1` zeros, atomically, with one
   * PageZero record (no page data, whatever the range's length); resolves once committed on a
   * majority and applied. The range is of volume pages: the volume's other shards' pages in it
   * are theirs to zero. Sent again, as a write (`WriteAttempt`): zeros written twice could
   * overwrite a newer write.
   */
  async zero(range: PageRange, opts: WriteAttempt = {}): Promise<{ lsn: number; term: number }> {
    this.checkLeader();
    const { first, count } = range;
    const g = this.geometry;
    if (!Number.isSafeInteger(first) || first < 0) throw new StorageError('bad_request', `first: ${String(first)} is not a non-negative integer`, { path: 'first' });
    if (!Number.isSafeInteger(count) || count < 1) throw new StorageError('bad_request', `count: ${String(count)} is not a positive integer`, { path: 'count' });
    if (first + count > g.pageCount) {
      throw new StorageError('out_of_range', `pages ${first}..${first + count - 1} are not all in the volume (0..${g.pageCount - 1})`, { first, count, pageCount: g.pageCount });
    }
    return this.commitRecord(RecordKind.PageZero, () => Promise.resolve({ payload: encodePageZero(range, opts.writeId), crc: undefined, release: () => undefined }), opts, 0);
  }

  /**
   * Appends a record of a client's write (its payload from `encode`) and resolves once it is
   * committed and applied; a write sent again is first looked for (`priorRecord`), and a write
   * id found in the log just before the append is waited for instead (another try of the same
   * write got there first). `pages`: the pages of data it carries, for the counters.
   */
  private async commitRecord(
    kind: RecordKind.PageWrite | RecordKind.PageZero,
    encode: () => Promise<{ payload: Uint8Array; crc: number | undefined; release(): void }>,
    opts: WriteAttempt,
    pages: number,
  ): Promise<{ lsn: number; term: number }> {
    const id = opts.writeId;
    // When the first try was sent, on this replica's clock, at the earliest the clocks' skew allows.
    const sentAtMs = id !== undefined && opts.sentAgoMs !== undefined ? this.clock() - opts.sentAgoMs - WRITE_SENT_SKEW_MS : undefined;
    const found = id === undefined ? undefined : this.writeIds.find(id);
    // A first try of a write this log does not hold (nearly every write) goes on without a wait.
    if (found !== undefined || sentAtMs !== undefined || (opts.earlier !== undefined && opts.earlier.length > 0)) {
      const prior = await this.priorRecord(opts, found);
      if (prior !== undefined) {
        this.counters.retriesMatched++;
        return { lsn: prior, term: this.term };
      }
      this.checkLeader();
      // A try sent again that this leader cannot tell apart from a write its log may hold:
      // outcome unknown, before any refusal that would say it was not done (overloaded, no_space).
      if (sentAtMs !== undefined && !this.writeIds.covers(sentAtMs)) throw this.outcomeUnknown(opts.sentAgoMs!);
    }
    // Refusals that say the write was not done, once it is known not to be in this log (a try
    // sent again whose record this log holds was answered above, even from a full queue).
    if (this.commitWaiters.length >= this.pendingWritesMax) {
      throw new StorageError('overloaded', `shard ${this.geometry.shard}: ${this.commitWaiters.length} writes wait for commit`);
    }
    // A device short of space takes no new page data; a range made zeros, which frees space, goes on.
    if (kind === RecordKind.PageWrite && !this.spaceExempt) {
      this.queue.checkWriteSpace();
      this.checkFollowersSpace();
    }
    const term = this.term;
    const tag = this.tracer?.capture();
    const payload = await encode();
    let lsn: number;
    try {
      // A Config record is being saved: it takes the next LSN first (appendConfig).
      while (this.configAppending !== undefined) await this.configAppending;
      // Deposed while the payload was checksummed: its slot goes back all the same.
      this.checkLeader();
      if (this.term !== term) throw notLeader(this.leader, this.term);
      if (id !== undefined) {
        // Checked with the append, no wait between: two tries of one write give one record.
        const there = this.writeIds.find(id);
        if (there !== undefined) return await this.answerWith(there, opts.deadlineMs);
        if (sentAtMs !== undefined && !this.writeIds.covers(sentAtMs)) throw this.outcomeUnknown(opts.sentAgoMs!);
      }
      // The payload's checksum, computed here when no thread of the pool did: the log makes the
      // record's CRC from it, and the appends to the followers carry it.
      lsn = this.appendLocal([{ term, kind, payload: payload.payload, payloadCrc: payload.crc ?? crc32c(payload.payload) }], tag);
    } finally {
      payload.release();
    }
    await new Promise<void>((resolve, reject) =>
      this.commitWaiters.push({ lsn, recordTerm: term, ...(opts.deadlineMs !== undefined ? { deadlineMs: opts.deadlineMs } : {}), resolve, reject }),
    );
    this.counters.writes++;
    this.counters.pagesWritten += pages;
    return { lsn, term };
  }

  /**
   * For a write that may have reached a leader before: the LSN of its record in this log,
   * resolved once applied, or undefined if it is to be written. It may have if it names earlier
   * attempts (`earlier`), if its write id is in this log (`found`), or if it is a try sent
   * again; each waits until the records of earlier terms are decided (`earlierAttempt`).
   */
  private async priorRecord(opts: WriteAttempt, found: WriteIdRecord | undefined): Promise<number | undefined> {
    // Folded into an image since: committed (the ids of records cut from the log are forgotten).
    if (found !== undefined && found.lsn < this.log.firstLsn) return found.lsn;
    return this.earlierAttempt([...(found === undefined ? [] : [found]), ...(opts.earlier ?? [])], opts.deadlineMs);
  }

  /** The answer to a try of a write whose record this log holds (`there`, from its write id). */
  private async answerWith(there: WriteIdRecord, deadlineMs: number | undefined): Promise<{ lsn: number; term: number }> {
    const lsn = await this.priorRecord(deadlineMs === undefined ? {} : { deadlineMs }, there);
    // In this log, and kept there while this replica leads: it commits, unless deposed meanwhile.
    if (lsn === undefined) throw notLeader(this.leader, this.term);
    this.counters.retriesMatched++;
    return { lsn, term: this.term };
  }

  /**
   * A try sent again (first sent `sentAgoMs` ago) whose write id this log does not hold, when
   * this replica cannot know every id of its log since then: it restarted and could not read
   * them all back (more than it keeps, or its records trimmed behind an image since then),
   * installed an image, or forgot the oldest ids (WRITE_IDS_MAX, WRITE_ID_KEEP_MS). Writing the
   * pages could apply the write twice, over a newer write of them.
   */
  private outcomeUnknown(sentAgoMs: number): ProtocolError {
    this.counters.retriesUnknown++;
    const knownMs = Math.max(0, Math.round(this.clock() - this.writeIds.completeSinceMs));
    return new ProtocolError(
      'timeout',
      `shard ${this.geometry.shard}: this write was first sent ${Math.round(sentAgoMs)} ms ago, and its leader knows the write ids of its log for the last ${knownMs} ms only (it restarted or installed an image since, or forgot older ones): the write may or may not be committed`,
      { outcomeUnknown: true, sentAgoMs: Math.round(sentAgoMs), writeIdsKnownMs: knownMs },
    );
  }

  /**
   * For a retried write: the LSN of the earlier attempt's record if this log holds it (resolved
   * once applied), or undefined once none of them can ever commit (the pages must be written).
   *
   * A record is named by (lsn, term): two logs holding a record with the same LSN and term hold
   * the same record. Once this leader's first record (its term start) is applied, every record
   * of an earlier term is decided: the ones in this log are committed, and any other can never
   * commit, since every later leader's log holds this term's start instead. A record named with
   * this term is one this leader wrote for another try of the same write (found by its write
   * id): it is waited for itself. An attempt of a newer term means this replica is deposed:
   * `not_leader`.
   */
  private async earlierAttempt(earlier: readonly WriteRecordRef[], deadlineMs: number | undefined): Promise<number | undefined> {
    const term = this.term;
    if (earlier.some((e) => e.term > term)) throw notLeader(this.leader, term);
    // (A record named with this term but not in this log was never written here: it is ignored below.)
    const decided = Math.max(this.termStartLsn, ...earlier.filter((e) => e.term === term && e.lsn <= this.lastLsn).map((e) => e.lsn));
    if (this.store.appliedLsn < decided) {
      await new Promise<void>((resolve, reject) =>
        this.commitWaiters.push({ lsn: decided, ...(deadlineMs !== undefined ? { deadlineMs } : {}), resolve, reject }),
      );
    }
    this.checkLeader();
    if (this.term !== term) throw notLeader(this.leader, this.term);
    for (const e of earlier) {
      if (e.lsn > this.lastLsn) continue; // Not in this log: it can no longer commit.
      if (e.lsn < this.log.firstLsn - 1) {
        // Folded into an image with its term forgotten: whether it was this write is unknown.
        throw new ProtocolError(
          'timeout',
          `an earlier attempt of this write (lsn ${e.lsn}, term ${e.term}) is below the log's first LSN ${this.log.firstLsn}; the write may or may not be committed`,
          { recordLsn: e.lsn, recordTerm: e.term, firstLsn: this.log.firstLsn },
        );
      }
      if (this.termOf(e.lsn) === e.term) return e.lsn;
    }
    return undefined;
  }

  /**
   * Encodes a PageWrite payload (with the write's id, if any) and its checksum: made from
   * `dataCrc` when given (WriteAttempt.dataCrc); else large ones are checksummed off-thread (slab
   * handle), small ones by the caller.
   */
  private async encode(pages: readonly PageData[], writeId: Uint8Array | undefined, dataCrc?: number): Promise<{ payload: Uint8Array; crc: number | undefined; release(): void }> {
    const off = this.offload;
    const bytes = pageWriteBytes(this.geometry.pageSize, pages.length, writeId !== undefined);
    const slot = dataCrc === undefined && off !== undefined && bytes >= off.bytesMin && bytes <= off.slab.slotBytes ? off.slab.tryAlloc() : -1;
    if (slot < 0) {
      // The payload lives until the record is written and sent to the followers: from the arena.
      const payload = encodePageWrite(this.geometry.pageSize, pages as PageData[], requestArena.alloc(bytes), writeId);
      return { payload, crc: dataCrc === undefined ? undefined : pageWritePayloadCrc(payload, this.geometry.pageSize, pages.length, dataCrc), release: () => undefined };
    }
    const inSlot = encodePageWrite(this.geometry.pageSize, pages as PageData[], off!.slab.view(slot), writeId);
    let crc: number | undefined;
    try {
      crc = await off!.crc32c(off!.slab.sab, inSlot.byteOffset, inSlot.length);
      this.counters.offloaded++;
    } catch {
      crc = undefined;
    }
    // The leader keeps the record in memory for its followers: it gets its own copy, and the
    // slot goes back to the slab once the record is queued.
    const payload = inSlot.slice();
    return { payload, crc, release: () => off!.slab.free(slot) };
  }

  /**
   * Reads pages at the latest committed LSN (linearizable: under the leader's lease or after a
   * quorum round) or at a given retained LSN. A read at an LSN not applied yet waits until it is,
   * or until `deadlineMs`.
   */
  async read(pages: readonly number[], opts: { lsn?: number; deadlineMs: number; nowMs: number }): Promise<{ pages: Uint8Array[]; lsn: number; term: number; crc: number }> {
    this.checkLeader();
    if (pages.length === 0) throw new StorageError('bad_request', 'read of zero pages');
    // The reply must fit one message, as a page.read's does.
    checkReadReplyBytes(pages.length, this.geometry.pageSize);
    for (let i = 0; i < pages.length; i++) this.checkPage(pages[i]!, `pages[${i}]`);
    const ready = this.readyToRead(opts);
    if (ready !== undefined) await ready;
    const lsn = opts.lsn ?? this.store.appliedLsn;
    // Pages in memory are copied out at once; only a read that needs the disk waits its turn in
    // the device's queue (behind flushes and other IO).
    const cached = this.store.getPagesCached(pages, lsn);
    this.counters.reads++;
    this.counters.pagesRead += pages.length;
    // The reply's checksum is made from those each page was checked against (in the cache, its
    // image or its record), not from the pages as they leave: a page changed in memory after its
    // check fails it at the reader.
    const read = cached ?? (await this.readStored(pages, lsn));
    return { pages: read.pages, lsn, term: this.term, crc: read.crc };
  }

  /**
   * Which of this shard's pages in `first`..`first + count - 1` may hold data as of the latest
   * commit (PageStore.pagesWithData, at most SHARD_MAP_RANGES_MAX ranges: the answer may end
   * before the range does). Answered by the leader as a read at the latest commit is (its lease,
   * or a round of its followers, and what was committed before its term applied); from memory.
   */
  async map(first: number, count: number, opts: { deadlineMs: number; nowMs: number }): Promise<{ end: number; ranges: number[]; lsn: number; term: number }> {
    this.checkLeader();
    const g = this.geometry;
    if (first + count > g.pageCount) {
      throw new StorageError('out_of_range', `pages ${first}..${first + count - 1} are not all in the volume (0..${g.pageCount - 1})`, { first, count });
    }
    const ready = this.readyToRead(opts);
    if (ready !== undefined) await ready;
    return { ...this.store.pagesWithData(first, first + count, SHARD_MAP_RANGES_MAX), lsn: this.store.appliedLsn, term: this.term };
  }

  /**
   * Reads pages from the images and the log, through the device queue. Damage found on the way
   * that a reopen can repair (reportDamage): the replica is reopened (`onDamage`), and the reader
   * gets `not_leader`, so that it asks the shard again and is served by a good copy.
   */
  private async readStored(pages: readonly number[], lsn: number): Promise<CachedPages> {
    try {
      return await this.queue.task(() => this.store.getPagesChecked(pages, lsn));
    } catch (e) {
      if (!this.reportDamage(e)) throw e;
      throw new ProtocolError('not_leader', `${(e as Error).message}; this replica is reopened to repair the damage, and a good copy serves the shard`, {
        term: this.term,
        damaged: true,
      });
    }
  }

  /**
   * True if `e` is damage of this replica's own storage that a reopen can make good (with a host
   * that reopens it); the host is told the first time. Only a checksum or structure failure of
   * what this replica stored (CorruptionError, naming the file) counts: other `corruption`
   * errors (a malformed record that arrived with a valid checksum, an index inconsistency) would
   * not go away with a reopen. A replica of several is given back by its peers whatever it lost;
   * a sole copy can only rebuild a damaged image from an older one and its log.
   */
  private reportDamage(e: unknown): boolean {
    if (!(e instanceof CorruptionError) || !this.onDamage || this.closed) return false;
    if (this.members.length < 2) {
      const files = e.reports.map((r) => r.file);
      if (files.length === 0 || !files.every(isImagePath) || files.some((f) => this.unrepairable.has(f))) return false;
    }
    if (!this.damageReported) {
      this.damageReported = true;
      this.onDamage(e);
    }
    return true;
  }

  /** Hands `e` to the host (onFailure), once; false when there is no host to take it, or this replica is closed. */
  private reportFailure(e: unknown): boolean {
    if (!this.onFailure || this.closed) return false;
    if (!this.failureReported) {
      this.failureReported = true;
      this.onFailure(e instanceof Error ? e : new Error(String(e)));
    }
    return true;
  }

  /**
   * A follower refused records of an append as damaged on the way (their payloads did not match
   * the checksums sent with them): each is checked against its checksum here. One that no longer
   * matches was damaged in this replica's memory after its write made it, and every follower
   * would refuse it each time it is sent, the shard committing nothing more: the replica is handed
   * to its host (onFailure), which opens it again from its log, whose records are checked.
   */
  private checkSentRecords(records: readonly HeldRecord[]): void {
    for (const r of records) {
      if (r.payloadCrc === undefined) continue;
      const now = crc32c(r.payload);
      if (now !== r.payloadCrc) {
        this.reportFailure(new StorageError('invariant', `record ${r.lsn} of ${this.geometry.volumeId}/${this.geometry.shard} held in memory no longer matches its checksum (CRC-32C ${r.payloadCrc}, now ${now}): a follower refused it`, { lsn: r.lsn }));
        return;
      }
    }
  }

  /** A follower found the image it was sent damaged: checks ours, in steps through the device queue. */
  private async checkOwnImage(lsn: number): Promise<void> {
    // Checked intact already: the copies are damaged on the way or at the follower; each
    // complaint must not cost a whole read of the image again.
    if (this.checkingImage || !this.snapshots || lsn === this.imageCheckedIntact || this.damageReported) return;
    this.checkingImage = true;
    const steps = this.snapshots.verifySteps(lsn);
    try {
      this.counters.imageChecks++;
      for (;;) {
        if (this.closed) break;
        if ((await this.queue.task(() => steps.next())).done === true) {
          this.imageCheckedIntact = lsn;
          break;
        }
      }
    } catch (e) {
      // Damage is reported. Anything else (the image went away with a newer checkpoint, the
      // queue refused) is let be: the next transfer sends the newest image, checked again.
      this.reportDamage(e);
    } finally {
      steps.return?.();
      this.checkingImage = false;
    }
  }

  /**
   * One step of the background scrub, which its host paces: checks at most 256 KiB of this
   * replica's storage against its checksums (the first step of an image also reads its table),
   * through the device queue: the pages of its newest image, then its log's records up to the
   * durable end when the log phase began, then the image again. Opening checks every log record
   * but only the header and the table of an image, and nothing checks a follower's images until
   * it needs them: the scrub finds damage while a good copy is still around. Damage is reported
   * as any other (`onDamage`) and returned. Never rejects.
   */
  async scrubStep(): Promise<ScrubStepResult> {
    if (this.closed || this.scrubbing) return { bytes: 0, passDone: false };
    this.scrubbing = true;
    try {
      return await this.queue.task(() => this.scrubNext());
    } catch (e) {
      // The queue refused the step (full): nothing was done; the same step comes again.
      if (e instanceof StorageError && e.code === 'overloaded') return { bytes: 0, passDone: false };
      const inImage = this.scrubPhase === 'image';
      this.releaseScrub();
      // Damage in the image: reported, and the pass goes on with the log. Anything else (damage
      // in the log, an image removed by a checkpoint meanwhile, an IO error, the replica closed):
      // the pass ends, so that the device's other replicas get their turn.
      if (e instanceof CorruptionError) {
        const reported = this.reportDamage(e);
        if (inImage) this.startScrubOfLog();
        return { bytes: 0, passDone: !inImage, damage: e, reported };
      }
      return { bytes: 0, passDone: true };
    } finally {
      this.scrubbing = false;
    }
  }

  /** Lets go of the image the scrub reads (its file handle) and starts the next pass from the image. */
  private releaseScrub(): void {
    const image = this.scrubImage;
    this.scrubImage = undefined;
    this.scrubPhase = 'image';
    try {
      image?.return?.();
    } catch {
      // Closing the image's file failed (EIO from close(2)): the descriptor is released all the
      // same, and nothing else is to be done with it. Thrown, it would stop close() half way
      // (its waiters never told, its leadership kept) and escape to whoever closed it.
    }
  }

  private startScrubOfLog(): void {
    this.scrubPhase = 'log';
    this.scrubLogNext = this.log.firstLsn;
    this.scrubLogEnd = Math.min(this.log.syncedLsn, this.log.lastLsn);
  }

  private scrubNext(): ScrubStepResult {
    if (this.closed) {
      this.releaseScrub();
      return { bytes: 0, passDone: false };
    }
    if (this.scrubPhase === 'image') {
      if (this.scrubImage === undefined) {
        const lsn = this.snapshots?.newestLsn() ?? 0;
        if (lsn > 0) this.scrubImage = this.snapshots!.verifySteps(lsn);
      }
      if (this.scrubImage !== undefined && this.scrubImage.next().done !== true) return { bytes: SCRUB_STEP_BYTES, passDone: false };
      this.scrubImage = undefined;
      this.startScrubOfLog();
    }
    const from = Math.max(this.scrubLogNext, this.log.firstLsn);
    // A log truncated meanwhile (a new leader's) ends the pass earlier.
    const upto = Math.min(this.scrubLogEnd, this.log.syncedLsn, this.log.lastLsn);
    if (from > upto) {
      this.scrubPhase = 'image';
      return { bytes: 0, passDone: true };
    }
    const records = this.log.read(from, upto, { bytesMax: SCRUB_STEP_BYTES });
    let bytes = 0;
    for (const r of records) bytes += r.payload.length + RECORD_HEADER_BYTES;
    this.scrubLogNext = records[records.length - 1]!.lsn + 1;
    return { bytes, passDone: false };
  }

  /**
   * Resolves with the commit LSN once everything accepted before is committed and applied.
   * Like a read at the latest LSN, it is answered only by a leader no other can have replaced
   * (its lease, or a quorum round): a deposed leader that has not noticed yet would answer with
   * its own last LSN, before writes the new leader acknowledged, and a read at the flush's LSN
   * would not see them.
   */
  async flush(deadlineMs: number, nowMs: number = Date.now()): Promise<{ lsn: number; term: number }> {
    this.checkLeader();
    this.wake();
    if (!this.hasLease()) await this.confirmLeadership(deadlineMs - nowMs);
    const target = this.lastLsn;
    await this.waitApplied(target, deadlineMs);
    return { lsn: target, term: this.term };
  }

  /**
   * Resolves once this replica is known to lead in `term` now: under its lease, or after a quorum
   * round (as a read at the latest LSN). Otherwise `not_leader` (another term, or a round that
   * found a newer one) or `timeout` (no majority answered before the deadline). A replicated
   * controller asks this before it answers a read of the catalog it holds in memory: a deposed
   * leader that has not noticed yet cannot pass it, so neither can a deposed controller.
   */
  async confirmLeads(term: number, deadlineMs: number, nowMs: number = Date.now()): Promise<void> {
    this.checkLeading();
    if (this.term !== term) throw notLeader(this.leader, this.term);
    if (!this.hasLease()) await this.confirmLeadership(deadlineMs - nowMs);
  }

  /**
   * A read's wait, as the leader (checked by the caller): its leadership confirmed (nothing to
   * wait for under a valid lease), then every record committed, and `lsn` if given, applied.
   */
  private readyToRead(opts: { lsn?: number; deadlineMs: number; nowMs: number }): Promise<void> | undefined {
    this.wake();
    // Every committed record of earlier terms is applied once our own term's first record is.
    const applied = (): Promise<void> | undefined => {
      const needed = Math.max(this.termStartLsn, opts.lsn ?? 0, this.commitLsn);
      return this.store.appliedLsn < needed ? this.waitApplied(needed, opts.deadlineMs, opts.lsn) : undefined;
    };
    // A read at a committed LSN needs no confirmation: records up to it never change, whoever
    // leads now (a deposed leader that has not noticed yet answers it as its successor would).
    if (opts.lsn !== undefined && opts.lsn <= this.commitLsn) return this.store.appliedLsn < opts.lsn ? this.waitApplied(opts.lsn, opts.deadlineMs, opts.lsn) : undefined;
    // Under a valid lease, with everything needed applied (the common case): undefined, so that
    // the caller does not await at all.
    if (this.hasLease()) return applied();
    return this.confirmLeadership(opts.deadlineMs - opts.nowMs).then(applied);
  }

  private waitApplied(lsn: number, deadlineMs: number, askedLsn?: number): Promise<void> {
    if (this.store.appliedLsn >= lsn) return Promise.resolve();
    if (askedLsn !== undefined && askedLsn > this.lastLsn) {
      return Promise.reject(new StorageError('future_lsn', `lsn ${askedLsn} is newer than the last LSN ${this.lastLsn}`, { lsn: askedLsn }));
    }
    if (this.applyWaiters.length >= this.pendingWritesMax) return Promise.reject(new StorageError('overloaded', 'too many reads wait'));
    const expiredCode = askedLsn !== undefined ? 'future_lsn' : 'timeout';
    return new Promise<void>((resolve, reject) => {
      this.applyWaiters.push({ lsn, deadlineMs, expiredCode, ...(askedLsn !== undefined ? { askedLsn } : {}), resolve, reject });
    });
  }

  /**
   * Fails waiting writes and reads whose deadline passed (the host calls this with wall-clock
   * time): a write with `timeout` (its outcome is unknown), a read at an LSN it asked for with
   * `future_lsn`, a read at the latest LSN or a flush with `timeout`.
   */
  expireWaiters(wallMs: number): void {
    if (this.commitWaiters.length > 0) {
      const keepWrites: Waiter[] = [];
      for (const w of this.commitWaiters) {
        if (w.deadlineMs !== undefined && w.deadlineMs <= wallMs) {
          // Its record may still commit later: the client learns the outcome is unknown, and
          // why, as far as the followers said (short of space, say).
          const refused = [...this.followers].filter(([, f]) => f.refused !== undefined && f.match < w.lsn).map(([id, f]) => `${id} ${f.refused!.code} (${f.refused!.message})`);
          w.reject(new ProtocolError('timeout', `lsn ${w.lsn} was not committed before the deadline; the write may or may not be committed${refused.length > 0 ? `; followers without it: ${refused.join('; ')}` : ''}`, {
            lsn: w.lsn,
            deadlineMs: w.deadlineMs,
            commitLsn: this.commitLsn,
            appliedLsn: this.store.appliedLsn,
            durableLsn: this.durableLsn,
            term: this.term,
            role: this.role,
            followers: Object.fromEntries([...this.followers].map(([id, f]) => [id, { next: f.next, match: f.match, inFlight: f.inFlight, ...(f.refused !== undefined ? { refused: f.refused.code } : {}) }])),
          }));
        } else keepWrites.push(w);
      }
      this.commitWaiters = keepWrites;
    }
    if (this.applyWaiters.length === 0) return;
    const keep: Waiter[] = [];
    for (const w of this.applyWaiters) {
      if (w.deadlineMs !== undefined && w.deadlineMs <= wallMs) {
        // An LSN asked for that is committed already exists: only its application is late (a
        // leader applying a backlog, or waiting for its own disk), which a try later may see.
        const code = w.askedLsn !== undefined && w.askedLsn <= this.commitLsn ? 'timeout' : (w.expiredCode ?? 'future_lsn');
        w.reject(new ProtocolError(code, `lsn ${w.lsn} was not applied before the deadline (applied ${this.store.appliedLsn}, committed ${this.commitLsn})`, { lsn: w.lsn }));
      } else keep.push(w);
    }
    this.applyWaiters = keep;
  }

  private hasMajorityContact(windowMs: number): boolean {
    if (this.peerIds.length === 0) return true;
    const now = this.now();
    return this.quorumOf((id) => {
      if (id === this.self) return true;
      const f = this.followers.get(id);
      return f !== undefined && now - f.ackedSentMs < windowMs;
    });
  }

  /**
   * A majority answered within the lease: no other leader can have been elected meanwhile. Not in
   * a term whose leadership this leader offered to a follower (`leaseGivenUpTerm`).
   */
  private hasLease(): boolean {
    if (this.leaseGivenUpTerm === this.term) return false;
    return this.hasMajorityContact(this.timing.electionTimeoutMinMs * this.timing.leaseFraction);
  }

  /**
   * Makes sure no other leader can have been elected: either a majority acknowledged a message
   * sent within the lease (a fraction of the minimum election timeout), or a new round of
   * heartbeats is acknowledged by a majority before the deadline.
   */
  private async confirmLeadership(budgetMs: number): Promise<void> {
    if (this.hasLease()) return;
    const term = this.term;
    const req = (): AppendRequest => ({ type: 'append', term, leader: this.self, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: this.lastLsn });
    const wait = Math.max(1, Math.min(this.timing.rpcTimeoutMs, budgetMs));
    const acks = new Set([this.self]);
    const sentMs = this.nowMs;
    await new Promise<void>((resolve, reject) => {
      let pending = this.peerIds.length;
      const done = (): void => {
        if (this.role !== 'leader' || this.term !== term) reject(notLeader(this.leader, this.term));
        else if (this.quorumOf((id) => acks.has(id))) resolve();
        else if (--pending === 0) reject(new ProtocolError('timeout', 'leadership could not be confirmed by a majority'));
      };
      for (const id of this.peerIds) {
        // A heartbeat with prevLsn 0 always matches; it carries no records and no commit.
        this.transport.send(id, req(), wait).then(
          (r) => {
            const reply = r as AppendReply;
            if (reply.term > this.term) this.stepDown(reply.term, null, 'a follower is at a newer term');
            else if (reply.term === term && this.role === 'leader' && this.term === term) {
              // Only while this replica still leads the round's term: the followers' states
              // are then that term's. Counted toward the lease of a later term of its own, the
              // answer would vouch for a term its follower had not heard of.
              acks.add(id);
              const f = this.followers.get(id);
              if (f) f.ackedSentMs = Math.max(f.ackedSentMs, sentMs);
            }
            done();
          },
          () => done(),
        );
      }
    });
    if (this.role !== 'leader' || this.term !== term) throw notLeader(this.leader, this.term);
  }

  /** Stops: pending requests fail with `closed`; the host unsubscribes. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.releaseScrub();
    const err = new StorageError('closed', `replica ${this.geometry.volumeId}/${this.geometry.shard} closed`);
    for (const w of this.commitWaiters) w.reject(namingRecord(err, w));
    for (const w of this.applyWaiters) w.reject(err);
    this.commitWaiters = [];
    this.applyWaiters = [];
    this.endHandover(err);
    if (this.role === 'leader') this.onRoleChange?.('follower', this.term, 'closed');
  }

}
