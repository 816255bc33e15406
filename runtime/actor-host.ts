/**
 * Actor host: the worker thread that owns one device and serves the shard replicas on it.
 *
 * The main thread starts it (HostPool) and drives it over comlink with the `HostApi` below.
 * The host has its own NATS connection. Every replica it opens subscribes to its replication
 * mailbox `strata.<cluster>.replica.<volumeId>.<shard>.<nodeId>` and to the appends each other
 * member sends, as leader, to all its followers (`strata.<cluster>.followers.<volumeId>.<shard>.
 * <member>`, answered on the reply subject followed by `.<nodeId>`); while a replica is its shard's
 * leader it also subscribes to the shard's subject `strata.<cluster>.shard.<volumeId>.<shard>`
 * (so a failover only changes who subscribes). A request is admitted to the shard's mailbox,
 * which is bounded in requests and bytes (a full mailbox answers `overloaded` at once), decoded,
 * validated, handed to the replica, and answered with a CBOR reply or a typed error. Requests
 * whose deadline (Strata-Deadline header) has passed are answered `timeout` unread.
 *
 * Telemetry: when the main thread runs telemetry it passes `workerData.telemetry`, and this thread
 * starts its tracing at load (spans go to the main thread, which exports them). Shard requests
 * and replication messages then get a SERVER span (parent: the request's traceparent header)
 * and a duration in the host's RequestRecorder, whose snapshot travels with `stats()`; the
 * replicas' work, their messages to peers and the device queue's batches get spans too. Without
 * telemetry none of this runs.
 *
 * Fault injection (tests of a running cluster): the replication transport can be told to act as
 * if some nodes were unreachable (a partition), to delay or drop a fraction of messages, and the
 * device to fail fdatasync.
 */
import * as fs from 'node:fs';
import { parentPort, isMainThread, workerData } from 'node:worker_threads';
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/umd/node-adapter';
import { connect, type NatsConnection, type Msg, type Subscription, type MsgHdrs } from 'nats';
import { encode, decode, encodeShardReadReply, MESSAGE_BYTES_MAX, type CodecOptions } from '../messages/codec';
import { checkPageDataCrc, pageWritesCrc } from '../storage-engine/page-data-crc';
import { REQUEST_ITEMS_MAX, type ShardReadReply, type ShardWriteRequest, type ShardZeroRequest } from '../messages/api';
import { allocRequestBytes } from '../storage-engine/arena';
import { assert, type CorruptionReport } from '../storage-engine/errors';
import { LoopDelay, type LoopDelayStats } from '../observability/loop-delay';
import { errorReply, toProtocolError, ProtocolError, type ErrorCode } from '../messages/errors';
import { validateRequest } from '../messages/validate';
import { messageHeaders, REPLY_HEADERS, wellFormed, type ReceivedHeaders } from './nats-headers';
import { HEADER_DEADLINE, HEADER_TYPE, HEADER_SCHEMA, SCHEMA_VERSION, checkSchemaHeader, deadlineRemainingMs, parseDeadline } from '../messages/headers';
import { nodeInboxPrefix, shardLeadersSubject, shardSubject } from '../messages/subjects';
import { validateRaftRequest, validateRaftReply, replicaSubject, followersSubject, type AppendRequest, type RaftRequest, type RaftReply } from '../messages/raft';
import type { NotCopied } from '../messages/control';
import { DEFAULT_TIMING, MESSAGE_BYTES_FLOOR, MESSAGE_BYTES_MIN, type ForceVoteResult, type ReconfigureResult, type ReplicaConfig, type ReplicaDigest, type ReplicaTransport, type ReplicaTiming, type TransferResult, type WriteAttempt } from '../actors/replica';
import { DeviceHost, deviceProblem, shardKey, type ShardSpec, type ReplicaRoles, type ForgottenRule, type DeviceHostOptions, type DeviceHostStats, type ReplicaErrorOutcome } from './device-host';
import { createLogger, throttled, type Logger } from '../observability/log';
import type { WorkerTelemetryInit, WorkerTracing } from '../observability/worker-tracing';
import { ATTR, batchSendTracer, captureSpanContext, carriesTrace, clientSpan, deviceQueueTracer, serverSpan, withSpan } from '../observability/tracing';
import { HeartbeatSender, chunkEntries, heartbeatsSubject, validateHeartbeatBatch, type HeartbeatBatch, type HeartbeatBatchReply, type HeartbeatEntry, type HeartbeatStats } from './heartbeat-batcher';
import { ConnectionState, encodeReplyWithin, frozenHeaders, RequestMux, serverMaxPayload, watchDenials } from './request-mux';
import { withTimeout } from './timeout';
import { RequestRecorder, type RequestStatsSnapshot } from '../observability/request-recorder';
import type { Attributes } from '@opentelemetry/api';
import { withNatsTls } from './nats-tls';
import { natsConnectError } from './nats-connect-hint';

/** What the main thread passes in workerData (HostPool). */
export interface HostWorkerData {
  hostId: number;
  /** Present when the process runs telemetry. */
  telemetry?: WorkerTelemetryInit;
  /** One Int32 in shared memory: the device's blocking file calls running now (the pool's watchdog reads it). */
  ioMarker?: Int32Array;
}

// Started once, when the thread loads, before any request can arrive.
const telemetryInit: WorkerTelemetryInit | undefined = isMainThread ? undefined : (workerData as HostWorkerData | undefined)?.telemetry;
/** The device's blocking disk calls in progress, for the pool's watchdog (HostWorkerData.ioMarker). */
const ioMarker: Int32Array | undefined = isMainThread ? undefined : (workerData as HostWorkerData | undefined)?.ioMarker;
// The trace SDK is loaded only when the process runs telemetry.
const workerTracing: WorkerTracing | undefined = telemetryInit === undefined
  ? undefined
  : (require('../observability/worker-tracing') as typeof import('../observability/worker-tracing')).startWorkerTracing(telemetryInit);

/** Message types a shard subject serves; anything else is named `unknown` in spans and metrics. */
const SHARD_TYPES = new Set(['shard.write', 'shard.zero', 'shard.read', 'shard.flush', 'shard.map']);
const RAFT_OPS: Record<RaftRequest['type'], string> = {
  vote: 'replica.vote', prevote: 'replica.prevote', append: 'replica.append', snapshot: 'replica.snapshot', timeoutNow: 'replica.timeoutNow',
};

export interface HostConfig {
  hostId: number;
  nodeId: string;
  cluster: string;
  natsUrl: string;
  /** The NATS user and password the host connects as (the node's; cluster/nats-auth.ts), if the server asks for one. */
  natsAuth?: { user: string; pass: string };
  /** TLS files to connect with (the node's). */
  natsTls?: { caFile?: string; certFile?: string; keyFile?: string };
  /** Directory of the device this host owns. */
  deviceDir: string;
  device?: Omit<DeviceHostOptions, 'dir' | 'disk' | 'nowMs' | 'self' | 'transportFor' | 'onRoleChange'>;
  timing?: Partial<ReplicaTiming>;
  /** Requests admitted to one shard's mailbox at once (queued or in progress); default 1024. */
  mailboxRequestsMax?: number;
  /** Request bytes admitted to one shard's mailbox at once; default 64 MiB. */
  mailboxBytesMax?: number;
  /** Deadline applied to requests that carry none; default 30 s. */
  defaultDeadlineMs?: number;
  /** Period of the replicas' clock (elections, heartbeats); default 10 ms. */
  tickMs?: number;
  /** Hosts of this node: each answers every heartbeats message sent to the node, naming their number (HeartbeatBatchReply). */
  hostCount: number;
}

/** Faults of the replication transport, as seen from this node. */
export interface TransportFaults {
  /** Nodes this node cannot exchange replication messages with (both directions). */
  unreachable?: string[];
  /** Delay added to every outgoing replication message, in ms. */
  delayMs?: number;
  /** Fraction (0..1) of outgoing replication messages silently dropped. */
  dropRate?: number;
}

export interface MailboxStats {
  volumeId: string;
  shard: number;
  leader: boolean;
  depth: number;
  bytes: number;
  admitted: number;
  rejectedOverloaded: number;
  errors: number;
}

export interface HostStats {
  hostId: number;
  device: DeviceHostStats | undefined;
  natsConnected: boolean;
  /**
   * The NATS server's max_payload this host sizes replication messages to, as learnt at connect
   * and at its last reconnection; absent before init.
   */
  maxPayload?: number;
  mailbox: MailboxStats[];
  /** Request durations and errors on this host (only with telemetry). */
  requests?: RequestStatsSnapshot;
  /** How late the host's tick ran (its event loop held); absent before init. */
  loopDelay?: LoopDelayStats;
  /** The heartbeats it sent per pair of nodes (runtime/heartbeat-batcher.ts); absent before init. */
  heartbeats?: HeartbeatStats;
  /**
   * How long ago each node was last heard from (a heartbeats message or a ping), in ms, by node:
   * what the followers of a quiesced leader on that node go by (docs/replication.md, "Idle shards").
   */
  peersHeardMsAgo?: Record<string, number>;
  /**
   * The same by host of each node (`<node>/<host>`): the followers of a quiesced leader go by its
   * own host's, once a heartbeat of the leader told them which host it is on.
   */
  peerHostsHeardMsAgo?: Record<string, number>;
}

export interface HostHealth {
  hostId: number;
  ok: boolean;
  natsConnected: boolean;
  deviceFailed: boolean;
  shardsDown: number;
  reason?: string;
}

/**
 * HostApi.replicaConfig: a replica's term, whether it leads in it, its replica set in force
 * (`prior` during a change), and whether a change of the set its log holds names it
 * (`namedByLog`, Replica.namedByLog).
 */
export type ReplicaConfigState = ReplicaConfig & { term: number; leading: boolean; namedByLog: boolean };

/**
 * What an open of a shard did besides opening it: `notCopied`, a branch's new replica whose copy
 * of the parent's pages was tried here and not made (DeviceHost.seedShard): it waits for a peer
 * to send it the shard; `noSpace` when its device had no room for the copy over its reserve.
 */
export interface ShardOpened {
  notCopied?: Pick<NotCopied, 'reason' | 'noSpace'>;
}

export interface HostApi {
  init(config: HostConfig): Promise<void>;
  /** Answers at once: the pool's watchdog tells a thread that answers from one that hangs. */
  ping(): Promise<void>;
  openShard(spec: ShardSpec): Promise<ShardOpened>;
  closeShard(volumeId: string, shard: number, destroy: boolean): Promise<void>;
  /** DeviceHost.destroyLeftovers: shard directories of deleted volumes, or forgotten by the node (`forgotten`), that no replica uses. */
  destroyLeftovers(volumeIds: string[], forgotten?: ForgottenRule): Promise<string[]>;
  /** Replica.forceVote of this host's replica of a shard (operator override of a repair). */
  forceVote(volumeId: string, shard: number): Promise<ForceVoteResult>;
  /** Replica.digest of this host's replica of a shard (`strata shard check`). */
  shardDigest(volumeId: string, shard: number, range?: { fromLsn: number; toLsn: number }, pages?: { lsn: number; first: number; count: number }): Promise<ReplicaDigest>;
  /**
   * Replica.reconfigure of this host's replica of a shard (a move of a replica): the shard's set
   * becomes `members`, if this replica leads it; `deadlineMs` is a wall-clock time.
   */
  reconfigure(volumeId: string, shard: number, members: string[], deadlineMs: number): Promise<ReconfigureResult>;
  checkpoint(): Promise<void>;
  stats(): Promise<HostStats>;
  health(): Promise<HostHealth>;
  /** DeviceHost.replicaRoles: this host's replicas that are down, and those that lead. */
  replicaRoles(): Promise<ReplicaRoles>;
  /** This host's replica of a shard: its term, whether it leads, and its replica set in force; undefined when it is not open or up here. */
  replicaConfig(volumeId: string, shard: number): Promise<ReplicaConfigState | undefined>;
  /** Replica.confirmLeads of this host's replica of a shard: resolves once it is known to lead in `term` now (its lease, or a quorum round before `deadlineMs`). */
  confirmLeads(volumeId: string, shard: number, term: number, deadlineMs: number): Promise<void>;
  /** Replica.transferLeadership of this host's replica of a shard: hands its leadership over (to `to`, or the follower holding the most). */
  handOver(volumeId: string, shard: number, to?: string): Promise<TransferResult>;
  setFaults(faults: TransportFaults): Promise<void>;
  failFsync(times: number): Promise<void>;
  /** Fault injection: the device's disk says it has `bytes` free (undefined: what it has). */
  setFreeBytes(bytes: number | undefined): Promise<void>;
  /** Fault injection: throws an error with this message outside any handler, ending the thread. */
  throwUncaught(message: string): Promise<void>;
  /**
   * Fault injection: the thread stops answering anything for `ms` (a long synchronous stall);
   * answered after it. With `inDisk`, counted as a blocking disk call (a disk that stalls).
   */
  stall(ms: number, opts?: { inDisk?: boolean; fifo?: string }): Promise<void>;
  /** Forwards the spans this thread finished to the main thread now (a no-op without telemetry). */
  flushTelemetry(): Promise<void>;
  /** Drains: stops taking requests, finishes those admitted, closes the device, closes NATS. */
  stop(): Promise<void>;
}

interface Mailbox {
  spec: ShardSpec;
  /** Replication mailbox (always). */
  replicaSub: Subscription;
  /**
   * The appends each other member sends, as leader, to all its followers at once (always), by
   * member: every node of the shard's set and, during a move, of the set it changes from
   * (`syncPeers`), so that whichever of them leads reaches this replica.
   */
  followerSubs: Map<string, Subscription>;
  /** The peers `followerSubs` were last synced with, joined (a cheap check of a change). */
  peersKey: string;
  /** What `peersKey` was computed from: the spec and the replica's peers (Replica.peerIds, a new array at each change of its set). */
  peersFrom?: { spec: ShardSpec; replicaPeers: readonly string[] | undefined };
  /** Shard subject (while leader), in the leaders' queue group. */
  leaderSub: Subscription | undefined;
  /** The shard's leaders subject (while leader): every leader takes each request (`shardLeadersSubject`). */
  leadersSub: Subscription | undefined;
  depth: number;
  bytes: number;
  admitted: number;
  rejectedOverloaded: number;
  errors: number;
  /** Span attributes of its requests, made on first use. */
  spanAttrs?: Attributes;
  /**
   * Logs a write of this shard not committed before its deadline: the first at once, then at
   * most one line every COMMIT_TIMEOUT_REPORT_MS with how many more there were (a shard that
   * cannot commit, its followers stalled or cut off, fails every write it is sent).
   */
  reportCommitTimeout: (pe: ProtocolError) => void;
  /**
   * The node and host the shard's last heartbeat came from (a heartbeats message names its
   * host): what this replica, quiesced as a follower, goes by to know its leader is up.
   */
  leaderHost?: { node: string; host: number };
}

/** Storage codes that are not protocol codes, mapped to what a client should do about them. */
const STORAGE_TO_PROTOCOL: Record<string, ErrorCode> = {
  closed: 'unavailable',
  fsync_failed: 'device_failed',
  io_error: 'device_failed',
  invariant: 'internal',
};

function wireError(err: unknown): ProtocolError {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && code in STORAGE_TO_PROTOCOL) {
    const e = err as Error & { details?: Record<string, unknown> };
    return new ProtocolError(STORAGE_TO_PROTOCOL[code]!, e.message, e.details);
  }
  return toProtocolError(err);
}

function unsubscribeAll(mb: Mailbox): void {
  mb.replicaSub.unsubscribe();
  for (const sub of mb.followerSubs.values()) sub.unsubscribe();
  mb.followerSubs.clear();
  mb.leaderSub?.unsubscribe();
  mb.leadersSub?.unsubscribe();
}

/** A `not_leader` refusal of a request that named a later term than the replica's own (Replica.checkTerm: `expectedTerm`). */
function laterTermAsked(pe: ProtocolError): boolean {
  const asked = pe.details?.['expectedTerm'];
  const term = pe.details?.['term'];
  return pe.code === 'not_leader' && typeof asked === 'number' && typeof term === 'number' && asked > term;
}

/**
 * How a client's shard.write or shard.zero reached this node, for the replica (`WriteAttempt`):
 * `sentMs`, the client's clock, becomes how long ago the first try was sent by this node's.
 */
function writeAttempt(req: ShardWriteRequest | ShardZeroRequest, deadlineMs: number, nowMs: number): WriteAttempt {
  return {
    deadlineMs,
    ...(req.earlier === undefined ? {} : { earlier: req.earlier }),
    ...(req.writeId === undefined ? {} : { writeId: req.writeId }),
    ...(req.writeId === undefined || req.sentMs === undefined ? {} : { sentAgoMs: nowMs - req.sentMs }),
  };
}

function senderOf(req: RaftRequest): string {
  return 'candidate' in req ? req.candidate : req.leader;
}

export class ActorHost implements HostApi {
  private config: HostConfig | undefined;
  private nc: NatsConnection | undefined;
  private device: DeviceHost | undefined;
  private readonly mailboxes = new Map<string, Mailbox>();
  /**
   * Opens of a shard under way, by shard key: a second open of the shard waits for the first (a
   * branch's new replica copies its parent's pages before its storage opens, and an open meanwhile
   * would find the directory half made).
   */
  private readonly opening = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  /** How late the tick runs: the event loop held (LoopDelay). */
  private loopDelay: LoopDelay | undefined;
  private stopping = false;
  /** `stop` is handing the leadership of its shards over (DeviceHost.handOffLeadership): it takes none over meanwhile. */
  private handingOff = false;
  private log: Logger = createLogger({ component: 'host' });
  private inFlight = 0;
  /** Replies to send at the end of this event-loop turn: reply subject, bytes, reply subject, bytes… */
  private replies: Array<string | Uint8Array> = [];
  /** Replication requests (one reply subscription, one deadline timer). */
  private mux: RequestMux | undefined;
  /** Appends without records to one node, made in one turn, go as one message (heartbeat-batcher.ts). */
  private heartbeats: HeartbeatSender | undefined;
  /** The nodes `pingPeers` pings (those of every mailbox's `followerSubs`), until any of those changes. */
  private pingNodes: string[] | undefined;
  private heartbeatsSub: Subscription | undefined;
  /** Whether the connection is up (it reconnects for ever: closed says nothing while it tries). */
  private connection: ConnectionState | undefined;
  /**
   * Bounds of the messages this host encodes and decodes: the server's max_payload (learnt at
   * connect). Replication messages are sized to it, so a server allowing more than
   * MESSAGE_BYTES_MAX carries appends larger than that.
   */
  private codec: CodecOptions = { bytesMax: MESSAGE_BYTES_MAX };
  /** Those of a client's request on a shard subject: within REQUEST_ITEMS_MAX CBOR items too. */
  private requestCodec: CodecOptions = { bytesMax: MESSAGE_BYTES_MAX, itemsMax: REQUEST_ITEMS_MAX };
  private idle: Array<() => void> = [];
  private faults: { unreachable: Set<string>; delayMs: number; dropRate: number } = { unreachable: new Set(), delayMs: 0, dropRate: 0 };
  /**
   * When a heartbeats message (or ping) of each node last came (performance.now(), the replicas'
   * clock): a quiesced follower campaigns once its leader's node is not heard from
   * (ReplicaTransport.seenMs). At most PEERS_SEEN_MAX nodes.
   */
  private readonly peerSeen = new Map<string, number>();
  /**
   * The same by host (`<node>/<host>`, from the messages that name their host): a host thread
   * stuck while the other hosts of its node run is not heard from, and the followers of the
   * quiesced leaders on it campaign as if its node were down. At most PEERS_SEEN_MAX.
   */
  private readonly peerHostSeen = new Map<string, number>();
  /** Request durations and errors; only with telemetry. */
  private readonly recorder: RequestRecorder | undefined = telemetryInit !== undefined ? new RequestRecorder() : undefined;
  /** Spans (server, shard work, replication sends) are made only with telemetry. */
  private readonly traced = telemetryInit !== undefined;
  /** Attributes of every span of this host: node and device (set in init). */
  private spanAttrs: Attributes = {};

  /**
   * The server's max_payload as this host last learnt it (at connect, then at each reconnection);
   * whether it was found below MESSAGE_BYTES_MIN (logged once, until it is enough again).
   */
  private maxPayload: number | undefined;
  private maxPayloadShort = false;

  /**
   * After a reconnection: the server may be another, or restarted with another max_payload
   * (nats.js refuses to publish more than the server it is connected to takes). A changed bound
   * is passed to everything that sizes messages by it: this host's codecs, its heartbeats and
   * every replica of its device (appends, image chunks, the writes they take), and the replicas
   * opened later. Below MESSAGE_BYTES_MIN (what a replica needs to open) it is logged at error,
   * once: writes whose record does not fit are refused `too_large`, and replicas opened from then
   * on refuse to open, as at start.
   */
  private onMaxPayload(): void {
    const maxPayload = serverMaxPayload(this.nc);
    if (maxPayload === undefined || maxPayload === this.maxPayload || this.stopping) return;
    const before = this.maxPayload;
    this.maxPayload = maxPayload;
    this.codec = { bytesMax: maxPayload };
    this.requestCodec = { ...this.codec, itemsMax: REQUEST_ITEMS_MAX };
    this.heartbeats?.setCodec(this.codec);
    this.device?.setMessageBytesMax(Math.max(maxPayload, MESSAGE_BYTES_FLOOR));
    const short = maxPayload < MESSAGE_BYTES_MIN;
    if (short && !this.maxPayloadShort) {
      this.log.error('the NATS server\'s max_payload is below what Strata needs: writes whose record does not fit a message are refused too_large, and replicas do not open until the server allows more', { maxPayload, before, needed: MESSAGE_BYTES_MIN });
    } else if (!short) {
      this.log.info('the NATS server\'s max_payload changed: replication messages are sized to it', { maxPayload, before });
    }
    this.maxPayloadShort = short;
  }

  private natsConnected(): boolean {
    return this.nc !== undefined && !this.nc.isClosed() && this.connection?.connected === true;
  }

  async init(config: HostConfig): Promise<void> {
    this.config = config;
    this.log = createLogger({ component: 'host', node: config.nodeId, host: config.hostId });
    const device = `dev${config.hostId}`;
    this.spanAttrs = { [ATTR.node]: config.nodeId, [ATTR.device]: device };
    // Batches and replication sends are related to the requests they serve only when spans can
    // be recorded at all (with sampling off, nothing is captured, so nothing is to relate).
    const recording = telemetryInit !== undefined && telemetryInit.sampling !== 'off';
    this.nc = await connect({
      servers: config.natsUrl,
      ...(config.natsAuth ?? {}),
      // A `tls://` URL requires TLS (runtime/nats-tls.ts).
      ...withNatsTls(config.natsUrl, config.natsTls),
      inboxPrefix: nodeInboxPrefix(config.cluster),
      name: `strata-${config.nodeId}-host${config.hostId}`,
      maxReconnectAttempts: -1,
      // As the node's: refusals of the user while the server is misconfigured do not end them.
      ignoreAuthErrorAbort: true,
      reconnectTimeWait: 250,
      timeout: 10_000,
      // Failures become typed errors where they are handled; no stack trace per request.
      noAsyncTraces: true,
    }).catch(async (err: unknown) => {
      // As the node's own connect reports it, naming this host: NATS went away while it started.
      throw await natsConnectError(err, {
        servers: [config.natsUrl],
        ...(config.natsAuth ? { user: config.natsAuth.user } : {}),
        ...withNatsTls(config.natsUrl, config.natsTls),
        who: `host ${config.hostId} of node '${config.nodeId}'`,
      });
    });
    // Replication requests share one reply subscription and one deadline timer; while the
    // connection is down they fail at once instead of piling up in the client's buffer.
    this.connection = new ConnectionState(this.nc);
    watchDenials(this.connection, (denied, unreported) =>
      this.log.error('the NATS server refuses this node\'s user (its permissions: strata nats-auth)', { ...denied, unreported }),
    );
    this.mux = new RequestMux(this.nc, { connection: this.connection });
    // Replication messages are sized to the server's max_payload, learnt at connect and again at
    // every reconnection (a server restarted with another one: `onMaxPayload`).
    const maxPayload = serverMaxPayload(this.nc);
    this.maxPayload = maxPayload;
    this.codec = { bytesMax: maxPayload ?? MESSAGE_BYTES_MAX };
    this.requestCodec = { ...this.codec, itemsMax: REQUEST_ITEMS_MAX };
    this.connection.onChange((up) => {
      if (up) this.onMaxPayload();
    });
    this.heartbeats = new HeartbeatSender(this.nc, { cluster: config.cluster, nodeId: config.nodeId, hostId: config.hostId, codec: this.codec });
    // Every host of the node takes the heartbeats sent to it and answers those of its own shards.
    this.heartbeatsSub = this.nc.subscribe(heartbeatsSubject(config.cluster, config.nodeId), {
      callback: (err, msg) => {
        if (!err) this.onHeartbeats(msg);
      },
    });
    this.device = new DeviceHost({
      ...(config.device ?? {}),
      ...(ioMarker ? { ioMarker } : {}),
      ...(config.timing ? { timing: config.timing } : {}),
      ...(maxPayload !== undefined ? { messageBytesMax: maxPayload } : {}),
      ...(recording ? { queueTracer: deviceQueueTracer(device, { [ATTR.node]: config.nodeId }), replicaTracer: batchSendTracer() } : {}),
      dir: config.deviceDir,
      self: config.nodeId,
      transportFor: (spec) => this.transport(spec),
      onRoleChange: (spec, role, term, reason) => this.onRoleChange(spec, role === 'leader', term, reason),
      onTickError: (spec, err, outcome) =>
        outcome.restarted
          ? this.log.error('replica failed on its clock tick; restarted from durable state', { volume: spec.volumeId, shard: spec.shard, err })
          : this.log.error('replica failed on its clock tick; shard left down: its replica could not be restarted', { volume: spec.volumeId, shard: spec.shard, err, downReason: outcome.downReason }),
      onRepaired: (spec, damage, lost) =>
        this.log.warn(lost ? 'replica storage was damaged: the damage is discarded and the peers give the lost records back (no vote until then)' : 'replica image or checkpoint pointer was damaged: the newest image or the pointer written again from the older image and the log, damaged older images removed (no record lost; reads before the oldest image left are trimmed)', {
          volume: spec.volumeId,
          shard: spec.shard,
          damage: damageFields(damage),
        }),
      onStorageLost: (spec) =>
        spec.dataDirCreated === true
          ? this.log.info('replica opened without a saved term and vote in a data directory this start created (a first start, or one after the directory was lost); it takes no part in elections until it has learned its peers\' terms and been given the shard', { volume: spec.volumeId, shard: spec.shard })
          : spec.members.length > 1
          ? this.log.warn('replica opened without its saved term and vote although this node held it: a wiped or replaced disk (or its hard state alone lost), or a replica that had saved nothing yet; it takes no part in elections until it has learned its peers\' terms and been given the shard back', { volume: spec.volumeId, shard: spec.shard })
          : this.log.error('the only copy of a shard opened without its saved term and vote although this node held it: a wiped or replaced disk, or a copy that had saved nothing yet; it serves nothing until an operator accepts the loss (strata shard force-vote), after which pages it no longer holds read as never written', { volume: spec.volumeId, shard: spec.shard }),
      onDamagedLogHeld: (spec, damage, validLsn) =>
        this.log.error('the only copy of a shard opened with its log damaged: it keeps the log as it is and serves nothing until an operator accepts the loss (strata shard force-vote), after which its log is cut after the valid records and its pages read as of that LSN', {
          volume: spec.volumeId,
          shard: spec.shard,
          validLsn,
          damage: damageFields(damage),
        }),
      onUnrepairable: (spec, err) =>
        this.log.error('replica storage is damaged and no peer holds a copy: reads of the damaged data fail with corruption', {
          volume: spec.volumeId,
          shard: spec.shard,
          err: err.message,
        }),
      onDamage: (spec, err) =>
        this.log.warn('replica found its storage damaged while running: reopened without the damaged images, repaired from what is left or from its peers', {
          volume: spec.volumeId,
          shard: spec.shard,
          err: err.message,
        }),
      // As a request's fatal error is: once, at warn when restarted, at error when left down.
      onFailure: (spec, err, outcome) => this.logReplicaError(spec, outcome, wireError(err)),
      // Once per follower until it is sized again (Replica `onAppendTooLarge`).
      onAppendTooLarge: (spec, info) =>
        info.oneRecord
          ? this.log.error('a follower\'s transport refuses even one record as larger than the NATS server\'s max_payload: that follower can not catch up while the server allows so little', { volume: spec.volumeId, shard: spec.shard, ...info, maxPayload: this.maxPayload })
          : this.log.warn('a follower\'s transport refused an append as larger than the NATS server\'s max_payload: the next appends to it are smaller', { volume: spec.volumeId, shard: spec.shard, ...info, maxPayload: this.maxPayload }),
      // Once when they start failing, once when one succeeds again (Replica `onCheckpointFailing`).
      onCheckpointFailing: (spec, info) =>
        info.err !== undefined
          ? this.log.error('a replica\'s checkpoint failed: its log is not let go behind the newest image while they fail (tried again after as many records; strata_checkpoint_failures_total counts them)', { volume: spec.volumeId, shard: spec.shard, err: info.err })
          : this.log.info('a replica\'s checkpoint succeeded after failing', { volume: spec.volumeId, shard: spec.shard, failures: info.failures }),
    });
    const tickMs = config.tickMs ?? 10;
    this.loopDelay = new LoopDelay(tickMs);
    let peersSyncedAt = performance.now();
    const pingEveryMs = config.timing?.heartbeatMs ?? DEFAULT_TIMING.heartbeatMs;
    let pingedAt = Number.NEGATIVE_INFINITY;
    this.timer = setInterval(() => {
      const now = performance.now();
      this.loopDelay?.record(now);
      if (now - pingedAt >= pingEveryMs) {
        pingedAt = now;
        this.pingPeers();
      }
      this.device?.tick(now, Date.now());
      if (now - peersSyncedAt >= PEERS_SYNC_MS) {
        peersSyncedAt = now;
        for (const mb of this.mailboxes.values()) this.syncPeers(mb);
      }
    }, tickMs);
    this.timer.unref();
  }

  async openShard(spec: ShardSpec): Promise<ShardOpened> {
    const key = shardKey(spec.volumeId, spec.shard);
    const before = this.opening.get(key);
    const run = (before ?? Promise.resolve()).catch(() => undefined).then(() => this.openShardNow(spec));
    const settled = run.then(() => undefined, () => undefined);
    this.opening.set(key, settled);
    try {
      return await run;
    } finally {
      if (this.opening.get(key) === settled) this.opening.delete(key);
    }
  }

  private async openShardNow(spec: ShardSpec): Promise<ShardOpened> {
    let opened: ShardOpened = {};
    const { device, nc, config } = this.ready();
    const key = shardKey(spec.volumeId, spec.shard);
    let created: Mailbox | undefined;
    if (!this.mailboxes.has(key)) {
      const mailbox: Mailbox = {
        spec, replicaSub: undefined as unknown as Subscription, followerSubs: new Map(), peersKey: '', leaderSub: undefined, leadersSub: undefined,
        depth: 0, bytes: 0, admitted: 0, rejectedOverloaded: 0, errors: 0,
        reportCommitTimeout: throttled<ProtocolError>(
          (pe, unreported) => this.log.warn('write not committed before its deadline', { volume: spec.volumeId, shard: spec.shard, ...pe.details, unreported }),
          COMMIT_TIMEOUT_REPORT_MS,
        ),
      };
      mailbox.replicaSub = nc.subscribe(replicaSubject(config.cluster, spec.volumeId, spec.shard, config.nodeId), {
        callback: (err, msg) => {
          if (!err) this.onReplication(mailbox, msg);
        },
      });
      this.mailboxes.set(key, mailbox);
      created = mailbox;
    }
    const mailbox = this.mailboxes.get(key)!;
    try {
      if (spec.seed !== undefined && spec.seed.lsn > 0 && created !== undefined) {
        // A branch's new replica: the parent's pages at the branch point, copied on this device.
        const seeded = await device.seedShard(spec);
        // Closed while it was copied (its volume deleted, the host stopping): not opened after all.
        if (this.mailboxes.get(key) !== mailbox) {
          throw new ProtocolError('unavailable', `shard ${spec.volumeId}/${spec.shard} was closed while its replica was copied from its parent's`);
        }
        if (seeded.seeded) this.log.info('branch replica copied from its parent', { volume: spec.volumeId, shard: spec.shard, parent: spec.seed.volumeId, lsn: seeded.lsn });
        else if (spec.existing !== true) this.log.warn('branch replica not copied from its parent here: it waits for a peer to send it the shard', { volume: spec.volumeId, shard: spec.shard, parent: spec.seed.volumeId, lsn: spec.seed.lsn, reason: seeded.reason });
        if (!seeded.seeded && seeded.waits !== undefined) opened = { notCopied: { reason: seeded.reason, noSpace: seeded.waits.noSpace } };
      }
      device.openShard(spec);
      // An open of a shard open already takes its spec (the node's record after a move).
      mailbox.spec = spec;
      this.syncPeers(mailbox);
    } catch (e) {
      // A spec the device refuses (this node not among the members…) leaves nothing behind.
      if (created) {
        unsubscribeAll(created);
        if (this.mailboxes.get(key) === created) this.mailboxes.delete(key);
        this.pingNodes = undefined;
      }
      throw e;
    }
    // A replica whose storage could not be opened: the shard stays known (requests are answered
    // why it is down), and the caller hears why, to log it and open it again later.
    const down = device.downReason(spec.volumeId, spec.shard);
    if (down !== undefined) {
      // Its subscriptions reach the server first all the same: the leaders are answered why.
      await withTimeout(nc.flush(), OPEN_FLUSH_MS, () => new Error('flush not confirmed')).catch(() => undefined);
      throw down;
    }
    if (spec.members.length === 1 && opened.notCopied === undefined) {
      // A replica set of one elects itself on its first tick: report the shard open once it
      // serves, so a request sent right after creation finds it. (Not one waiting for a copy
      // of its branch's parent: it does not lead.)
      const deadline = Date.now() + 5000;
      while (this.mailboxes.get(key)?.leaderSub === undefined && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 2));
      }
    }
    // The server knows of the subscriptions before the shard is reported open. Bounded: while
    // the connection is down the shard is open all the same, and the subscriptions reach the
    // server when it reconnects.
    await withTimeout(nc.flush(), OPEN_FLUSH_MS, () => new Error('flush not confirmed')).catch(() => undefined);
    return opened;
  }

  async closeShard(volumeId: string, shard: number, destroy: boolean): Promise<void> {
    const { device } = this.ready();
    const key = shardKey(volumeId, shard);
    const mb = this.mailboxes.get(key);
    if (mb) {
      unsubscribeAll(mb);
      this.mailboxes.delete(key);
      this.pingNodes = undefined;
    }
    device.closeShard(volumeId, shard, { destroy });
  }

  /**
   * Replicas of deleted volumes still open here are closed and destroyed (with their
   * subscriptions), then DeviceHost.destroyLeftovers: the shards destroyed.
   */
  async destroyLeftovers(volumeIds: string[], forgotten?: ForgottenRule): Promise<string[]> {
    const { device } = this.ready();
    const dead = new Set(volumeIds);
    const closed: string[] = [];
    for (const { volumeId, shard } of device.openShardsOf(dead)) {
      await this.closeShard(volumeId, shard, true);
      closed.push(shardKey(volumeId, shard));
    }
    return [...closed, ...device.destroyLeftovers(dead, forgotten)];
  }

  async forceVote(volumeId: string, shard: number): Promise<ForceVoteResult> {
    return this.ready().device.forceVote(volumeId, shard);
  }

  async shardDigest(volumeId: string, shard: number, range?: { fromLsn: number; toLsn: number }, pages?: { lsn: number; first: number; count: number }): Promise<ReplicaDigest> {
    return this.ready().device.replica(volumeId, shard).digest(range, pages);
  }

  async reconfigure(volumeId: string, shard: number, members: string[], deadlineMs: number): Promise<ReconfigureResult> {
    try {
      return await this.ready().device.replica(volumeId, shard).reconfigure(members, { deadlineMs });
    } finally {
      // The new members' appends are heard from now on, not at the next periodic sync (also
      // after a failure: the joint configuration may be in the log).
      const mb = this.mailboxes.get(shardKey(volumeId, shard));
      if (mb !== undefined && !this.stopping) this.syncPeers(mb);
    }
  }

  /**
   * Subscribes a shard's mailbox to the appends of every node that may lead it and unsubscribes
   * from the others: the members of its spec (and, for a replica a move creates, the set it
   * moves from), and those of its replica's configuration, which a move changes while it runs
   * (both sets during the change). Cheap when nothing changed; run at an open, after a
   * reconfigure and every PEERS_SYNC_MS.
   */
  private syncPeers(mb: Mailbox): void {
    const nc = this.nc;
    const config = this.config;
    if (nc === undefined || config === undefined || nc.isClosed() || this.stopping) return;
    const replica = this.device?.currentReplica(mb.spec.volumeId, mb.spec.shard);
    const replicaPeers = replica?.peerIds;
    // Nothing changed since the last sync (checked 4 times a second for every shard).
    if (mb.peersFrom !== undefined && mb.peersFrom.spec === mb.spec && mb.peersFrom.replicaPeers === replicaPeers) return;
    mb.peersFrom = { spec: mb.spec, replicaPeers };
    const peers = new Set<string>([...mb.spec.members, ...(mb.spec.priorMembers ?? []), ...(replicaPeers ?? [])]);
    peers.delete(config.nodeId);
    const key = [...peers].sort().join(',');
    if (key === mb.peersKey) return;
    mb.peersKey = key;
    this.pingNodes = undefined;
    for (const [peer, sub] of mb.followerSubs) {
      if (peers.has(peer)) continue;
      sub.unsubscribe();
      mb.followerSubs.delete(peer);
    }
    for (const peer of peers) {
      if (mb.followerSubs.has(peer)) continue;
      mb.followerSubs.set(peer, nc.subscribe(followersSubject(config.cluster, mb.spec.volumeId, mb.spec.shard, peer), {
        callback: (err, msg) => {
          if (!err) this.onReplication(mb, msg, peer);
        },
      }));
    }
  }

  /**
   * A ping (HeartbeatSender.ping) to each node the peers of this host's replicas are on: a
   * follower of a quiesced leader on this node hears from it so. Not to a node cut off by the
   * faults of a test (a partition cuts both ways), and dropped as often as their messages are.
   */
  private pingPeers(): void {
    const hb = this.heartbeats;
    if (hb === undefined || this.stopping) return;
    const f = this.faults;
    if (this.pingNodes === undefined) {
      const nodes = new Set<string>();
      for (const mb of this.mailboxes.values()) for (const peer of mb.followerSubs.keys()) nodes.add(peer);
      this.pingNodes = [...nodes];
    }
    for (const node of this.pingNodes) {
      if (f.unreachable.has(node) || (f.dropRate > 0 && Math.random() < f.dropRate)) continue;
      hb.ping(node);
    }
  }

  async checkpoint(): Promise<void> {
    await this.ready().device.checkpointAll();
  }

  async setFaults(faults: TransportFaults): Promise<void> {
    const dropRate = faults.dropRate ?? 0;
    const delayMs = faults.delayMs ?? 0;
    if (!(dropRate >= 0 && dropRate <= 1) || !(delayMs >= 0 && delayMs <= 60_000)) {
      throw new ProtocolError('bad_request', 'dropRate must be in [0, 1] and delayMs in [0, 60000]');
    }
    this.faults = { unreachable: new Set(faults.unreachable ?? []), delayMs, dropRate };
  }

  async failFsync(times: number): Promise<void> {
    this.ready().device.failFsync(times);
  }

  async setFreeBytes(bytes: number | undefined): Promise<void> {
    this.ready().device.setFreeBytes(bytes);
  }

  async stall(ms: number, opts: { inDisk?: boolean; fifo?: string } = {}): Promise<void> {
    if (!(ms >= 0 && ms <= 60_000)) throw new ProtocolError('bad_request', 'stall: ms must be in [0, 60000]');
    const marker = opts.inDisk === true || opts.fifo !== undefined ? ioMarker : undefined;
    if (marker) Atomics.add(marker, 0, 1);
    try {
      // A system call that does not return until another opens the FIFO for writing (a disk
      // that hangs): unlike a wait, not even a termination of the thread ends it.
      if (opts.fifo !== undefined) fs.closeSync(fs.openSync(opts.fifo, 'r'));
      else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    } finally {
      if (marker) Atomics.sub(marker, 0, 1);
    }
  }

  async throwUncaught(message: string): Promise<void> {
    setImmediate(() => {
      throw new Error(message);
    });
  }

  async flushTelemetry(): Promise<void> {
    await workerTracing?.forceFlush();
  }

  async stats(): Promise<HostStats> {
    const mailbox: MailboxStats[] = [];
    for (const m of this.mailboxes.values()) {
      mailbox.push({
        volumeId: m.spec.volumeId, shard: m.spec.shard, leader: m.leaderSub !== undefined, depth: m.depth, bytes: m.bytes,
        admitted: m.admitted, rejectedOverloaded: m.rejectedOverloaded, errors: m.errors,
      });
    }
    return {
      hostId: this.config?.hostId ?? -1,
      device: this.device?.stats(),
      natsConnected: this.natsConnected(),
      ...(this.maxPayload !== undefined ? { maxPayload: this.maxPayload } : {}),
      mailbox,
      ...(this.recorder ? { requests: this.recorder.snapshot() } : {}),
      ...(this.loopDelay ? { loopDelay: this.loopDelay.stats(performance.now()) } : {}),
      ...(this.heartbeats ? { heartbeats: this.heartbeats.stats() } : {}),
      peersHeardMsAgo: msAgo(this.peerSeen),
      peerHostsHeardMsAgo: msAgo(this.peerHostSeen),
    };
  }

  async replicaRoles(): Promise<ReplicaRoles> {
    return this.device?.replicaRoles() ?? { down: [], leading: [] };
  }

  async replicaConfig(volumeId: string, shard: number): Promise<ReplicaConfigState | undefined> {
    let replica;
    try {
      replica = this.device?.replica(volumeId, shard);
    } catch {
      return undefined; // Not open here, or down.
    }
    return replica === undefined ? undefined : { term: replica.currentTerm, leading: replica.isLeader, namedByLog: replica.namedByLog, ...replica.configuration() };
  }

  async confirmLeads(volumeId: string, shard: number, term: number, deadlineMs: number): Promise<void> {
    await this.ready().device.replica(volumeId, shard).confirmLeads(term, deadlineMs);
  }

  async handOver(volumeId: string, shard: number, to?: string): Promise<TransferResult> {
    return this.ready().device.replica(volumeId, shard).transferLeadership(to);
  }

  async ping(): Promise<void> {
    // Answered by the thread's event loop, between its tasks.
  }

  async health(): Promise<HostHealth> {
    const st = this.device?.stats();
    const natsConnected = this.natsConnected();
    const deviceFailed = st?.queue.state === 'failed';
    const shardsDown = st?.shards.filter((s) => s.state === 'down').length ?? 0;
    const problem = st ? deviceProblem(st) : 'no device';
    const ok = natsConnected && problem === undefined;
    const reason = ok ? undefined : !natsConnected ? 'NATS disconnected' : problem;
    return { hostId: this.config?.hostId ?? -1, ok, natsConnected, deviceFailed, shardsDown, ...(reason ? { reason } : {}) };
  }

  async stop(): Promise<void> {
    if (this.stopping || this.handingOff) return;
    // Its shards' leadership to their other replicas first, while replication still flows (its
    // clients are refused `unavailable` meanwhile, and retry): no shard waits an election
    // timeout for a leader because this host stopped.
    this.handingOff = true;
    const handOff = await this.device?.handOffLeadership(LEADERSHIP_HANDOFF_MS).catch(() => undefined);
    if (handOff !== undefined && handOff.handed + handOff.kept > 0) this.log.info('handed the leadership of its shards over before stopping', handOff);
    this.stopping = true;
    for (const m of this.mailboxes.values()) unsubscribeAll(m);
    this.heartbeatsSub?.unsubscribe();
    this.heartbeats?.close();
    if (this.inFlight > 0) {
      await Promise.race([
        new Promise<void>((r) => this.idle.push(r)),
        new Promise<void>((r) => setTimeout(r, 10_000).unref()),
      ]);
    }
    if (this.timer) clearInterval(this.timer);
    this.flushReplies();
    await this.device?.close();
    this.mux?.close();
    try {
      // Bounded: the drain waits for the server's answer to a ping, which a server that does
      // not answer (hung) never gives; the pool would wait its whole call deadline for it.
      if (this.nc) await withTimeout(this.nc.drain(), HOST_NATS_DRAIN_MS, () => new Error('drain timed out'));
    } catch {
      // Already closed, or the server does not answer: closed without draining.
      await this.nc?.close().catch(() => undefined);
    }
    // The thread ends after this: what it traced goes to the main thread first.
    await workerTracing?.forceFlush().catch(() => undefined);
  }

  private ready(): { device: DeviceHost; nc: NatsConnection; mux: RequestMux; config: HostConfig } {
    if (!this.device || !this.nc || !this.mux || !this.config) throw new Error('host not initialized');
    if (this.stopping) throw new ProtocolError('unavailable', 'host is stopping');
    return { device: this.device, nc: this.nc, mux: this.mux, config: this.config };
  }

  // ---------------------------------------------------------------------------------------------
  // Replication between replicas
  // ---------------------------------------------------------------------------------------------

  private transport(spec: ShardSpec): ReplicaTransport {
    const spanAttrs = { ...this.spanAttrs, [ATTR.volume]: spec.volumeId, [ATTR.shard]: spec.shard };
    // A follower's reply: its error reply becomes `unavailable`, with the follower's code in
    // `details.refused` and its message in `details.refusedMessage` (ReplicaTransport); anything
    // else is validated.
    const answerOf = (to: string, msg: RaftRequest, r: Msg): RaftReply => answerOfBody(to, msg, decode(r.data, this.codec));
    const answerOfBody = (to: string, msg: RaftRequest, body: unknown): RaftReply => {
      if (typeof body === 'object' && body !== null && 'error' in body) {
        const error = (body as { error: unknown }).error;
        const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
        const message = typeof error === 'object' && error !== null ? (error as { message?: unknown }).message : undefined;
        throw new ProtocolError(
          'unavailable',
          `replica ${to} refused: ${JSON.stringify(error)}`,
          typeof code === 'string' ? { refused: code, ...(typeof message === 'string' ? { refusedMessage: message } : {}) } : undefined,
        );
      }
      return validateRaftReply(msg.type, body);
    };
    const send = async (to: string, msg: RaftRequest, timeoutMs: number): Promise<RaftReply> => {
      const { mux, config } = this.ready();
      const f = this.faults;
      if (f.unreachable.has(to) || (f.dropRate > 0 && Math.random() < f.dropRate)) {
        // As the network would: nothing comes back before the deadline.
        await new Promise((r) => setTimeout(r, Math.min(timeoutMs, 50)));
        throw new ProtocolError('timeout', `replica ${to} did not answer (unreachable)`);
      }
      if (f.delayMs > 0) {
        // The delay is part of the send's time, as on a slow network: a message later than the
        // send's timeout times out at its timeout.
        await new Promise((r) => setTimeout(r, Math.min(f.delayMs, timeoutMs)));
        if (f.delayMs >= timeoutMs) throw new ProtocolError('timeout', `replica ${to} did not answer within ${timeoutMs} ms (delayed ${f.delayMs} ms)`);
        timeoutMs -= f.delayMs;
      }
      const subject = replicaSubject(config.cluster, spec.volumeId, spec.shard, to);
      const data = encode(msg, this.codec);
      // An append without records (a heartbeat, a probe, a read's quorum round) that is not part
      // of a trace goes with the other such messages to that node (heartbeat-batcher.ts).
      if (msg.type === 'append' && msg.records.length === 0 && !(this.traced && captureSpanContext() !== undefined)) {
        const batched = this.heartbeats?.send(to, spec.volumeId, spec.shard, data, timeoutMs);
        if (batched !== undefined) return answerOfBody(to, msg, await batched);
      }
      // A message that is part of a trace (a write's append, a read's quorum round) gets a
      // CLIENT span and carries its traceparent; heartbeats and elections are not traced.
      // The reply read inside the span: a refusal ends it with the error.
      return this.traced && captureSpanContext() !== undefined
        ? await clientSpan(subject, RAFT_OPS[msg.type], async (inject) => {
          const h = raftHeaderEntries(msg.type);
          inject({ set: (name, value) => void (h[name] = value) });
          return answerOf(to, msg, await mux.request(subject, data, { timeoutMs, headers: h }));
        }, data.length, spanAttrs)
        : answerOf(to, msg, await mux.request(subject, data, { timeoutMs, headers: RAFT_HEADERS[msg.type] }));
    };
    // With faults injected (tests) every follower gets its own message, which `send` delays,
    // drops or cuts: the replica is then shown no `sendEach`, so that it sends and counts
    // (appendsSent, appendsToAll) each message itself.
    const key = shardKey(spec.volumeId, spec.shard);
    const faulty = (): boolean => {
      const f = this.faults;
      if (f.delayMs > 0 || f.dropRate > 0) return true;
      if (f.unreachable.size === 0) return false;
      // The peers of the replica now (a move changes them), as its mailbox follows them.
      const peers = this.mailboxes.get(key)?.followerSubs.keys() ?? spec.members.values();
      for (const id of peers) if (f.unreachable.has(id)) return true;
      return false;
    };
    const sendEach = (to: readonly string[], msg: AppendRequest, timeoutMs: number): Promise<RaftReply>[] => {
      // A host stopping (or not started) fails each follower's promise, as `send` does: thrown
      // here, it would escape the replica (which already counted the message in each window).
      let ready: ReturnType<ActorHost['ready']>;
      try {
        ready = this.ready();
      } catch (e) {
        return to.map(() => Promise.reject(e));
      }
      const { mux, config } = ready;
      const subject = followersSubject(config.cluster, spec.volumeId, spec.shard, config.nodeId);
      // A message that cannot be encoded fails each follower's promise too (never thrown).
      let data: Uint8Array;
      try {
        data = encode(msg, this.codec);
      } catch (e) {
        return to.map(() => Promise.reject(e));
      }
      const answers = (replies: Promise<Msg>[]): Promise<RaftReply>[] => replies.map((p, i) => p.then((r) => answerOf(to[i]!, msg, r)));
      if (!this.traced || captureSpanContext() === undefined) return answers(mux.requestEach(subject, data, { timeoutMs, headers: RAFT_HEADERS.append }, to));
      // One CLIENT span for the message, ended when every follower answered (failed if one
      // did not); `clientSpan` runs its function at once, so `slots` is set when it returns.
      let slots: Promise<RaftReply>[] = [];
      void clientSpan(subject, RAFT_OPS.append, async (inject) => {
        const h = raftHeaderEntries('append');
        inject({ set: (name, value) => void (h[name] = value) });
        slots = answers(mux.requestEach(subject, data, { timeoutMs, headers: h }, to));
        const failed = (await Promise.allSettled(slots)).find((r) => r.status === 'rejected');
        if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
      }, data.length, spanAttrs).catch(() => undefined);
      return slots;
    };
    return {
      send,
      get sendEach() {
        return faulty() ? undefined : sendEach;
      },
      seenMs: (id) => {
        // The leader's own host when a heartbeat named it, else its node.
        const lh = this.mailboxes.get(key)?.leaderHost;
        return lh !== undefined && lh.node === id ? this.peerHostSeen.get(`${id}/${lh.host}`) : this.peerSeen.get(id);
      },
    };
  }

  /**
   * A replication message: on the replica's own subject, or (`allFrom`) an append the member
   * `allFrom` sends, as leader, to all its followers, answered on its reply subject followed by
   * `.<this node>`.
   */
  private onReplication(mb: Mailbox, msg: Msg, allFrom?: string): void {
    if (!msg.reply) return;
    const replyTo = allFrom === undefined ? msg.reply : `${msg.reply}.${this.config!.nodeId}`;
    let req: RaftRequest;
    try {
      req = validateRaftRequest(decode(msg.data, this.codec));
      // Only a leader's append goes to all followers, and only from the member it names.
      if (allFrom !== undefined && (req.type !== 'append' || req.leader !== allFrom)) {
        throw new ProtocolError('bad_request', `${msg.subject} takes appends from ${allFrom} only`, { subject: msg.subject });
      }
      // A stopping host takes no shard's leadership over: it is handing its own away.
      if (req.type === 'timeoutNow' && (this.stopping || this.handingOff)) throw new ProtocolError('unavailable', `host ${this.config!.hostId} of node '${this.config!.nodeId}' is stopping`);
    } catch (e) {
      this.respond(replyTo, errorReply(e));
      return;
    }
    // A partition cuts both directions: what comes from an unreachable node is never seen.
    if (this.faults.unreachable.has(senderOf(req))) return;
    void this.answerRaft(mb, req, msg).then((answer) => {
      if (answer !== undefined) this.respond(replyTo, answer);
    });
  }

  /**
   * The answer of this host's replica of `mb` to a replication message `req` (carried by `msg`):
   * its reply, or an error reply; undefined when it must go unanswered (its sender was made
   * unreachable meanwhile, tests).
   */
  private answerRaft(mb: Mailbox, req: RaftRequest, msg: Msg): Promise<unknown> {
    let replica: ReturnType<DeviceHost['replica']>;
    try {
      replica = this.device!.replica(mb.spec.volumeId, mb.spec.shard);
    } catch (e) {
      return Promise.resolve(errorReply(wireError(e)));
    }
    const op = RAFT_OPS[req.type];
    const t0 = this.recorder ? performance.now() : 0;
    // Only a message sent inside a trace (a traced write's append) gets a span: heartbeats,
    // votes and catch-up carry none, and each would otherwise start a trace of its own.
    const headers = this.traced ? messageHeaders(msg) : undefined;
    const handled = headers !== undefined && carriesTrace(headers)
      ? serverSpan(msg.subject, op, headers, () => replica.handle(req), msg.data.length, this.shardAttrs(mb))
      : replica.handle(req);
    return handled.then(
      (reply) => {
        this.recorder?.requestDuration(op, 'ok', (performance.now() - t0) / 1000);
        return this.faults.unreachable.has(senderOf(req)) ? undefined : reply;
      },
      (err: unknown) => {
        const pe = wireError(err);
        this.recorder?.requestDuration(op, pe.code, (performance.now() - t0) / 1000);
        const restart = this.device!.onReplicaError(mb.spec.volumeId, mb.spec.shard, err, replica);
        // Logged once: by the restart it caused, else here when it is a bug (as a request's is).
        if (restart !== undefined) this.logReplicaError(mb.spec, restart, pe, err);
        else if (pe.code === 'internal') this.log.error('replication message failed', { volume: mb.spec.volumeId, shard: mb.spec.shard, type: req.type, err });
        return errorReply(pe);
      },
    );
  }

  /**
   * A heartbeats message (heartbeat-batcher.ts): each entry of a shard this host holds is
   * handled as the same message on the replica's own subject would be, and the answers go back
   * together (in as many messages as the server's max_payload needs). Entries of shards this host
   * does not hold are left to the node's other hosts; every host answers, with none of them if it
   * holds none (HeartbeatBatchReply). A message that is not well formed is answered `bad_request`
   * by host 0.
   */
  private onHeartbeats(msg: Msg): void {
    if (this.stopping) return;
    const { hostId } = this.config!;
    const hosts = this.config!.hostCount;
    let batch: HeartbeatBatch;
    try {
      batch = validateHeartbeatBatch(decode(msg.data, this.codec));
    } catch (e) {
      if (hostId === 0 && msg.reply) this.respond(msg, errorReply(e));
      return;
    }
    if (this.faults.unreachable.has(batch.from)) return;
    const now = performance.now();
    heard(this.peerSeen, batch.from, now);
    if (batch.host !== undefined) heard(this.peerHostSeen, `${batch.from}/${batch.host}`, now);
    // A ping: nothing to answer.
    if (!msg.reply) return;
    // Answers go out at the end of the turn in which they are ready: one that waits (a new term
    // saved first, behind the device's queue) does not hold the others back, which would keep
    // their leaders from sending more (their windows full) and let their followers campaign.
    const replyTo = msg.reply;
    const ready: HeartbeatEntry[] = [];
    let left = 0;
    let scheduled = false;
    const flush = (): void => {
      scheduled = false;
      const last = left === 0;
      // Within the server's max_payload, with room for the message's own heads.
      const chunks = chunkEntries(ready.splice(0), Math.floor((this.codec.bytesMax ?? MESSAGE_BYTES_MAX) / 2));
      if (chunks.length === 0) {
        if (!last) return;
        chunks.push([]);
      }
      chunks.forEach((r, i) => this.respond(replyTo, { host: hostId, hosts, r, ...(last && i === chunks.length - 1 ? {} : { more: true as const }) } satisfies HeartbeatBatchReply));
    };
    const settled = (entry: HeartbeatEntry | undefined): void => {
      left--;
      if (entry !== undefined) ready.push(entry);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    };
    for (const [volumeId, shard, data] of batch.e) {
      const mb = this.mailboxes.get(shardKey(volumeId, shard));
      if (mb === undefined) continue;
      let answer: Promise<unknown>;
      try {
        const req = validateRaftRequest(decode(data, this.codec));
        // Appends without records only, each from the node that sent the message.
        if (req.type !== 'append' || req.records.length > 0 || req.leader !== batch.from) {
          throw new ProtocolError('bad_request', `${msg.subject} takes appends without records from their leader only`, { subject: msg.subject });
        }
        if (batch.host !== undefined && (mb.leaderHost?.node !== batch.from || mb.leaderHost.host !== batch.host)) mb.leaderHost = { node: batch.from, host: batch.host };
        answer = this.answerRaft(mb, req, msg);
      } catch (e) {
        answer = Promise.resolve(errorReply(e));
      }
      left++;
      void answer
        .then((a): HeartbeatEntry | undefined => (a === undefined ? undefined : [volumeId, shard, encode(a, this.codec)]))
        .catch(() => undefined)
        .then(settled);
    }
    // None of its shards here: this host's answer says so at once.
    if (left === 0) flush();
  }

  /** Span attributes of a shard's requests (made once per mailbox). */
  private shardAttrs(mb: Mailbox): Attributes {
    return (mb.spanAttrs ??= { ...this.spanAttrs, [ATTR.volume]: mb.spec.volumeId, [ATTR.shard]: mb.spec.shard });
  }

  /** The leader serves the shard's subject; other replicas do not subscribe to it. */
  private onRoleChange(spec: ShardSpec, leader: boolean, term: number, reason: string | undefined): void {
    const mb = this.mailboxes.get(shardKey(spec.volumeId, spec.shard));
    if (!mb || !this.nc || this.stopping) return;
    if (leader && mb.leaderSub === undefined) {
      // A queue group: while a deposed leader has not noticed yet, each request still reaches
      // only one of the two, and the deposed one answers not_leader (the client retries).
      mb.leaderSub = this.nc.subscribe(shardSubject(this.config!.cluster, spec.volumeId, spec.shard), {
        queue: 'leader',
        callback: (err, msg) => {
          if (!err) this.admit(mb, msg, false);
        },
      });
      // Not a queue group: a write, and a read sent again after a try without an answer, reach
      // every leader, so a deposed one that is frozen (and still subscribed) does not swallow them.
      mb.leadersSub = this.nc.subscribe(shardLeadersSubject(this.config!.cluster, spec.volumeId, spec.shard), {
        callback: (err, msg) => {
          if (!err) this.admit(mb, msg, true);
        },
      });
      this.log.info('leading shard', { volume: spec.volumeId, shard: spec.shard, term });
    } else if (!leader && mb.leaderSub !== undefined) {
      // Drained, not dropped: requests the server already routed here are still answered (with
      // not_leader, which the client retries on the new leader) instead of vanishing into a
      // closed subscription and leaving their clients to time out.
      for (const sub of [mb.leaderSub, mb.leadersSub]) if (sub !== undefined) void sub.drain().catch(() => sub.unsubscribe());
      mb.leaderSub = undefined;
      mb.leadersSub = undefined;
      this.log.info('no longer leading shard', { volume: spec.volumeId, shard: spec.shard, term, ...(reason !== undefined ? { reason } : {}) });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Client requests on the shard subject
  // ---------------------------------------------------------------------------------------------

  /**
   * A client request to the shard. `everyLeader`: it came on the shard's leaders subject, which
   * every replica that believes it leads takes; one that finds the request names a later term
   * than its own (a newer leader exists, `laterTermAsked`) leaves it to that one, unanswered, as
   * the first answer is the requester's.
   */
  private admit(mb: Mailbox, msg: Msg, everyLeader: boolean): void {
    if (!msg.reply) return; // A request with nowhere to answer: nothing to do.
    const cfg = this.config!;
    const size = msg.data.length;
    const recorder = this.recorder;
    const t0 = recorder ? performance.now() : 0;
    // Bounded label: a type this subject does not serve is `unknown` (handle() answers it).
    const headers = messageHeaders(msg);
    const typeHeader = headers.get(HEADER_TYPE);
    const op = SHARD_TYPES.has(typeHeader) ? typeHeader : 'unknown';
    const requestsMax = cfg.mailboxRequestsMax ?? 1024;
    const bytesMax = cfg.mailboxBytesMax ?? 64 * 1024 * 1024;
    if (mb.depth + 1 > requestsMax || mb.bytes + size > bytesMax) {
      mb.rejectedOverloaded++;
      recorder?.requestDuration(op, 'overloaded', 0);
      // Which bound: an operator raising one needs to know which.
      const full = mb.depth + 1 > requestsMax ? `${mb.depth} requests of at most ${requestsMax}` : `${mb.bytes} bytes of at most ${bytesMax}, this request ${size}`;
      this.respond(msg, errorReply(new ProtocolError('overloaded', `shard ${mb.spec.volumeId}/${mb.spec.shard} mailbox is full (${full}); retry after a back-off`, {
        depth: mb.depth,
        bytes: mb.bytes,
        requestsMax,
        bytesMax,
      })));
      return;
    }
    mb.depth++;
    mb.bytes += size;
    mb.admitted++;
    this.inFlight++;
    // The replica that handles it (handle takes it before its first await): an error is a reason
    // to restart that one, not one that replaced it meanwhile.
    const replica = this.device!.currentReplica(mb.spec.volumeId, mb.spec.shard);
    const handled = this.traced
      ? serverSpan(msg.subject, op, headers, () => this.handle(mb, msg, headers), size, this.shardAttrs(mb))
      : this.handle(mb, msg, headers);
    handled
      .then(
        (reply) => {
          recorder?.requestDuration(op, 'ok', (performance.now() - t0) / 1000);
          // handle() answered the type in the same header: a read's reply is a ShardReadReply.
          this.respond(msg, reply, op === 'shard.read' ? encodeReadReply : encode);
        },
        (err: unknown) => {
          mb.errors++;
          const pe = wireError(err);
          recorder?.requestDuration(op, pe.code, (performance.now() - t0) / 1000);
          const restart = this.device!.onReplicaError(mb.spec.volumeId, mb.spec.shard, err, replica);
          // Logged once: by the restart it caused (logReplicaError), else here.
          if (restart !== undefined) this.logReplicaError(mb.spec, restart, pe, err);
          else if (pe.code === 'internal') this.log.error('request failed', { volume: mb.spec.volumeId, shard: mb.spec.shard, err });
          // A write the shard could not commit in time: worth an operator's look (with where
          // replication stood), and logged here only, where it is answered.
          else if (pe.code === 'timeout' && pe.details?.['commitLsn'] !== undefined) mb.reportCommitTimeout(pe);
          if (everyLeader && laterTermAsked(pe)) return;
          this.respond(msg, errorReply(pe));
        },
      )
      .finally(() => {
        mb.depth--;
        mb.bytes -= size;
        this.inFlight--;
        if (this.inFlight === 0 && this.idle.length > 0) for (const r of this.idle.splice(0)) r();
      });
  }

  private async handle(mb: Mailbox, msg: Msg, headerView: ReceivedHeaders): Promise<unknown> {
    checkSchemaHeader(wellFormed(headerView));
    const now = Date.now();
    // The same rules as the public API's: a decimal integer of ms since the Unix epoch
    // (bad_request otherwise), already passed gives timeout, at most DEADLINE_AHEAD_MS_MAX ahead.
    const asked = parseDeadline(headerView.get(HEADER_DEADLINE) ?? '');
    const deadlineMs = now + (asked === undefined ? (this.config!.defaultDeadlineMs ?? 30_000) : deadlineRemainingMs(asked, now));
    // The shard gives up a little before the client does, so that its typed answer (a timeout
    // with where replication stood, not_leader…) reaches the client before the client's own
    // deadline turns the request into a bare transport timeout.
    const answerByMs = deadlineMs - Math.min(ANSWER_MARGIN_MS_MAX, Math.floor((deadlineMs - now) / 10));
    const type = headerView.get(HEADER_TYPE);
    // Within the bound on its items too: a client's request is decoded on this thread, whose
    // replicas' heartbeats wait meanwhile.
    const body = decode(msg.data, this.requestCodec);
    const replica = this.device!.replica(mb.spec.volumeId, mb.spec.shard);
    switch (type) {
      case 'shard.write': {
        const req = validateRequest('shard.write', body);
        // Before anything is taken: pages damaged on the way are not written (with a record
        // checksum of their own, they would then read back as if sent so).
        if (req.crc !== undefined) checkPageDataCrc(req.crc, pageWritesCrc(req.pages), `shard.write to ${mb.spec.volumeId}/${mb.spec.shard}`);
        replica.checkTerm(req.term);
        // The checksum checked, from which the record's is made (WriteAttempt.dataCrc).
        const opts = { ...writeAttempt(req, answerByMs, now), ...(req.crc === undefined ? {} : { dataCrc: req.crc }) };
        if (!this.traced) return replica.write(req.pages, opts);
        return withSpan('shard.write', { ...this.shardAttrs(mb), [ATTR.pages]: req.pages.length }, (span) =>
          replica.write(req.pages, opts).then((r) => {
            span.setAttribute(ATTR.lsn, r.lsn);
            span.setAttribute(ATTR.term, r.term);
            return r;
          }),
        );
      }
      case 'shard.zero': {
        const req = validateRequest('shard.zero', body);
        replica.checkTerm(req.term);
        const range = { first: req.first, count: req.count };
        const opts = writeAttempt(req, answerByMs, now);
        if (!this.traced) return replica.zero(range, opts);
        return withSpan('shard.zero', { ...this.shardAttrs(mb), [ATTR.pages]: req.count }, (span) =>
          replica.zero(range, opts).then((r) => {
            span.setAttribute(ATTR.lsn, r.lsn);
            span.setAttribute(ATTR.term, r.term);
            return r;
          }),
        );
      }
      case 'shard.read': {
        const req = validateRequest('shard.read', body);
        replica.checkTerm(req.term);
        const opts = { ...(req.lsn !== undefined ? { lsn: req.lsn } : {}), deadlineMs: answerByMs, nowMs: now };
        if (!this.traced) return replica.read(req.pages, opts);
        return withSpan('shard.read', { ...this.shardAttrs(mb), [ATTR.pages]: req.pages.length }, () => replica.read(req.pages, opts));
      }
      case 'shard.flush': {
        replica.checkTerm(validateRequest('shard.flush', body).term);
        if (!this.traced) return replica.flush(answerByMs, now);
        return withSpan('shard.flush', this.shardAttrs(mb), () => replica.flush(answerByMs, now));
      }
      case 'shard.map': {
        const req = validateRequest('shard.map', body);
        replica.checkTerm(req.term);
        const opts = { deadlineMs: answerByMs, nowMs: now };
        if (!this.traced) return replica.map(req.first, req.count, opts);
        return withSpan('shard.map', { ...this.shardAttrs(mb), [ATTR.pages]: req.count }, () => replica.map(req.first, req.count, opts));
      }
      default:
        throw new ProtocolError('bad_request', `${HEADER_TYPE}: unknown message type '${type}' for a shard`, {
          supported: [...SHARD_TYPES],
        });
    }
  }

  /**
   * The log line of a request failure that restarted its shard (or the device): at warn when the
   * replica came back, at error, with why, when the shard is left down.
   */
  private logReplicaError(spec: ShardSpec, outcome: ReplicaErrorOutcome | undefined, pe: ProtocolError, err?: unknown): void {
    if (outcome === undefined) return;
    const fields = {
      volume: spec.volumeId,
      shard: spec.shard,
      code: pe.code,
      err: pe.message,
      // A broken invariant or a bug (an error without a code): where it was thrown.
      ...(pe.code === 'internal' && err instanceof Error && err.stack !== undefined ? { stack: err.stack } : {}),
    };
    if (outcome.restarted) this.log.warn('replica restarted from durable state', fields);
    else this.log.error('shard left down: its replica could not be restarted', { ...fields, downReason: outcome.downReason });
  }

  /** Answers a request on `to`: its message's reply subject, or that subject itself. */
  private respond(to: Msg | string, reply: unknown, encodeReply: (reply: unknown, options: CodecOptions) => Uint8Array = encode): void {
    const subject = typeof to === 'string' ? to : to.reply;
    if (!subject) return;
    const { bytes } = encodeReplyWithin(this.nc, reply, (err) => this.log.error('reply encoding failed', { err }), encodeReply);
    // Replies wait for the end of this turn of the event loop and go out together: the requests
    // a device batch committed are answered with one socket write, not one each.
    this.replies.push(subject, bytes);
    if (this.replies.length === 2) setImmediate(this.flushReplies);
  }

  /** Sends the replies queued by `respond` (in order) and empties the queue. */
  private readonly flushReplies = (): void => {
    const q = this.replies;
    if (q.length === 0) return;
    this.replies = [];
    for (let i = 0; i < q.length; i += 2) {
      try {
        this.nc?.publish(q[i] as string, q[i + 1] as Uint8Array, { headers: REPLY_HEADERS });
      } catch {
        // The connection is closing: the requester's deadline answers for this reply.
      }
    }
  };
}

/**
 * Period of the check of each shard's peers against its replica's configuration (`syncPeers`):
 * a move changes who may lead the shard.
 */
const PEERS_SYNC_MS = 250;
/** Nodes (and hosts of nodes) whose last message a host remembers (ActorHost.peerSeen, peerHostSeen); beyond, it starts over. */
const PEERS_SEEN_MAX = 4096;

/** Notes that `key` was heard from at `now`, within PEERS_SEEN_MAX keys. */
function heard(seen: Map<string, number>, key: string, now: number): void {
  if (seen.size >= PEERS_SEEN_MAX && !seen.has(key)) seen.clear();
  seen.set(key, now);
}

/** How long ago each key was heard from, in whole ms. */
function msAgo(seen: ReadonlyMap<string, number>): Record<string, number> {
  const now = performance.now();
  const out: Record<string, number> = {};
  for (const [key, at] of seen) out[key] = Math.round(now - at);
  return out;
}

/** Longest wait for the host's NATS connection to drain at a stop. */
const HOST_NATS_DRAIN_MS = 2000;
/**
 * How long a stopping host waits for its shards' followers to take their leadership over
 * (DeviceHost.handOffLeadership): about a maximum election timeout with the default timing, after
 * which a handover that has not happened is given up anyway.
 */
export const LEADERSHIP_HANDOFF_MS = 1000;

/** Longest wait for the server to confirm a new shard's subscriptions (openShard). */
const OPEN_FLUSH_MS = 2000;

/**
 * A read's reply, in a buffer from the request arena: it lives until the replies of this turn
 * are sent, when the NATS client has copied it.
 */
const encodeReadReply = (reply: unknown, options: CodecOptions): Uint8Array => {
  const r = reply as ShardReadReply;
  // The checksum of the pages, for the client to check what it receives, comes with them
  // (Replica.read: made from those each page was checked against, not from the pages here).
  assert(r.crc !== undefined, 'a shard.read reply carries its pages\' checksum');
  return encodeShardReadReply(r, { ...options, alloc: allocRequestBytes });
};

/** Shortest time between two lines about a shard's writes not committed before their deadline, ms. */
const COMMIT_TIMEOUT_REPORT_MS = 60_000;

/** Most a shard answers ahead of a request's deadline (at most a tenth of the time it was given). */
const ANSWER_MARGIN_MS_MAX = 250;

/** The Strata headers of a replication message of `type`. */
function raftHeaderEntries(type: RaftRequest['type']): Record<string, string> {
  return { [HEADER_SCHEMA]: String(SCHEMA_VERSION), [HEADER_TYPE]: `raft.${type}` };
}

/** Headers of an untraced replication message, by type (encoded once). */
const RAFT_HEADERS = Object.fromEntries(
  (Object.keys(RAFT_OPS) as Array<RaftRequest['type']>).map((type) => [type, frozenHeaders(raftHeaderEntries(type))]),
) as Record<RaftRequest['type'], MsgHdrs>;

/**
 * Errors thrown to the main thread keep their Strata error code: comlink sends an Error's name,
 * message and stack only, and the main thread tells a refused request (bad_request) from a
 * failure worth retrying by its code.
 */
function keepErrorCodes(): void {
  const base = Comlink.transferHandlers.get('throw')!;
  Comlink.transferHandlers.set('throw', {
    canHandle: base.canHandle,
    deserialize: base.deserialize,
    serialize: (thrown: unknown) => {
      const [wire, transfer] = base.serialize(thrown);
      const value = (thrown as { value?: unknown }).value;
      const code = value instanceof Error ? (value as { code?: unknown }).code : undefined;
      if (typeof code === 'string') ((wire as { value: Record<string, unknown> }).value).code = code;
      // And their details (the leader a `not_leader` names), when they are plain data.
      const details = value instanceof Error ? (value as { details?: unknown }).details : undefined;
      if (typeof details === 'object' && details !== null) {
        try {
          ((wire as { value: Record<string, unknown> }).value).details = structuredClone(details);
        } catch {
          // Not cloneable: the code and message go alone.
        }
      }
      return [wire, transfer];
    },
  });
}

if (!isMainThread && parentPort) {
  keepErrorCodes();
  Comlink.expose(new ActorHost(), nodeEndpoint(parentPort as never));
}

/** The fields of damage reports a log line names. */
function damageFields(damage: readonly CorruptionReport[]): CorruptionReport[] {
  return damage.map((d) => ({ file: d.file, offset: d.offset, fromLsn: d.fromLsn, toLsn: d.toLsn, reason: d.reason }));
}
