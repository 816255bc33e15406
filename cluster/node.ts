/**
 * StrataNode: one Strata node (the `strata node` process, or one node of an in-process cluster).
 *
 * Main thread only: it starts the actor hosts (one per device), answers the public API as the
 * NATS service `strata` (queue group `strata-api`, so any node can answer), hosts the controller
 * when it is the controller node, and keeps its shards in line with the controller's catalog
 * (heartbeats + reconciliation). Page data never passes through here on the client's direct
 * path; `api.page.*` requests are routed to shard subjects like the client does.
 *
 * Node-local durable state (atomic metadata in `<dataDir>/node`): the node id, cluster and host
 * count it was created with, and the shards it hosts, so a restarted node serves its shards
 * even before it reaches the controller.
 *
 * Telemetry (when the process runs it, see observability/telemetry.ts): the node adds a stats
 * source to the process's metrics (its hosts' stats and its API request durations) while it
 * runs, and every API request gets a SERVER span and a duration by verb and outcome.
 */
import { LOCAL_CATALOG_DIR, NODE_META, deviceDirName, localCatalogStore, nodeMetaStore, type NodeMeta } from './data-dir-layout';
import * as crypto from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import { DataDirLock } from './data-dir-lock';
import { withTimeout } from '../runtime/timeout';
import { Notice, NOTICED } from '../runtime/notice';
import { natsConnectError } from '../runtime/nats-connect-hint';
import { withNatsTls } from '../runtime/nats-tls';
import { connect, Events, headers as natsHeaders, type NatsConnection, type Msg, type MsgHdrs, type Subscription } from 'nats';
import { DEADLINE_AHEAD_MS_MAX, HEADER_DEADLINE, parseDeadline, readHeaders } from '../messages/headers';
import { NAME_LENGTH_MAX, REQUEST_ITEMS_MAX, VOLUMES_PER_LIST_MAX, type ApiVerb, type MessageType, type VolumeInfo, type VolumeResizeRequest } from '../messages/api';
import type { Service } from 'nats';
import { messageHeaders, REPLY_HEADERS, wellFormed } from '../runtime/nats-headers';
import { ConnectionState, encodeReplyWithin, fromNatsError, natsErrorCode, replyBytesWithin, newInbox, NoRespondersError, serverMaxPayload, watchDenials } from '../runtime/request-mux';
import { encode, decode, pageWithin, MESSAGE_BYTES_MAX } from '../messages/codec';
import { errorReply, isErrorCode, ProtocolError, toProtocolError, throwIfError, type ErrorCode } from '../messages/errors';
import {
  validateVolumeBranchRequest,
  validateVolumeCreateRequest,
  validateVolumeNameRequest,
  validateVolumeDeleteRequest,
  validateVolumeResizeRequest,
  validateVolumeListRequest,
  validateStatusRequest,
} from '../messages/validate';
import {
  controllerSubject,
  nodeSubject,
  validateHeartbeat,
  validateLeaving,
  DOWN_REPLICAS_PER_HEARTBEAT_MAX,
  validateAssignmentsRequest,
  validateAssignmentsReply,
  ASSIGNMENTS_PAGE_MAX,
  ASSIGNMENTS_PER_NODE_MAX,
  ASSIGNMENTS_TOMBSTONES_MAX,
  validateShardsOpen,
  validateShardsDestroy,
  validateVolumeGrow,
  validateVolumeGrowReply,
  type VolumeGrowReply,
  type VolumeGrowRequest,
  validateShardDigest,
  validateShardForceVote,
  validateShardHandover,
  validateShardHandoverReply,
  type ShardHandoverReply,
  type ShardAssignment,
  type ShardDigestReply,
  type ShardForceVoteReply,
  type AssignmentsReply,
  type ClaimReply,
  validateClaimReply,
  validateHeartbeatReply,
  validateNodeStatusRequest,
  validateClaimQuestion,
  validateNodeRecordsRequest,
  validateCatalogRecoverRequest,
  validateShardReconfigure,
  validateShardReconfigureReply,
  validateShardMove,
  validateNodeDrain,
  validateRebalance,
  REBALANCE_NODES_MAX,
  type RecoveredVolume,
  type ShardMoveRequest,
  type ShardMoveReply,
  type ShardReconfigureReply,
  validateControllers,
  validateCatalogJoin,
  validateCatalogLeave,
  validateCatalogMembershipReply,
  type CatalogMembershipReply,
  type ControllersReply,
  type ControllersRequest,
  validateShardsOpenReply,
  NOT_COPIED_REASON_MAX,
  type NotCopied,
  type ShardsOpenReply,
} from '../messages/control';
import { readNodeRecords, recordsPage, recoverReply } from './catalog-recovery';
import { apiEverySubject, nodeInboxPrefix } from '../messages/subjects';
import { sameNodeSet as sameSet } from '../messages/raft';
import { RealDisk } from '../storage-engine/real-disk';
import { fsyncDirectory, makeDirectory } from '../storage-engine/make-directory';
import { MetaStore } from '../storage-engine/metadata';
import { shardKey } from '../messages/volume-id';
import { CATALOG, CATALOG_REPLICAS_MAX, Controller, branchNotCopied, idNumber, idTag, seedOf, volumeInfo, type NodeMember, type RepairMove, type AssignmentRole, type CatalogState, type ShardMove, type VolumeRecord } from '../actors/controller';
import { HOST_OPENS_AT_ONCE, HostPool } from '../runtime/host-pool';
import { inLanes } from '../runtime/lanes';
import type { HostConfig, ReplicaConfigState, TransportFaults } from '../runtime/actor-host';
import type { ReconfigureResult, ReplicaTiming } from '../actors/replica';
import { createLogger, type Logger } from '../observability/log';
import { currentTelemetry } from '../observability/telemetry';
import { RequestRecorder } from '../observability/request-recorder';
import { OutcomeCounts, type ControllerSnapshot, type NodeStartInfo } from '../observability/metrics';
import { ATTR, recordSpanError, serverSpan } from '../observability/tracing';
import { ApiRouter, splitNodeStatus } from './api-router';
import { CATALOG_BYTES_MAX, CATALOG_VOLUME_ID, CatalogShard, catalogAssignment } from './catalog-shard';

export const STRATA_VERSION = '0.1.0';

export interface StrataNodeOptions {
  nodeId: string;
  cluster: string;
  natsUrl: string;
  /** The NATS user and password of the cluster's nodes (cluster/nats-auth.ts), if the server asks for one. */
  natsAuth?: { user: string; pass: string };
  /** TLS files to connect to the NATS server with (cluster/nats-auth.ts `NatsTlsFiles`). */
  natsTls?: { caFile?: string; certFile?: string; keyFile?: string };
  dataDir: string;
  /** Actor hosts (= devices) of this node; default 2. */
  hosts?: number;
  /** This node's failure domain (a rack, a zone), sent with its heartbeats (HeartbeatRequest.zone); default none. */
  zone?: string;
  /** This node keeps the volume catalog (alone, without `controllers`; ignored with them). */
  controller: boolean;
  /**
   * The controller nodes of a replicated controller (cluster/catalog-shard.ts): the catalog is a
   * shard replicated on them, and the node whose replica leads it runs the controller. The same
   * list on every node; undefined: `controller` alone decides.
   */
  controllers?: string[];
  /**
   * The cluster is new (`--new-cluster`): this controller node's replica of the catalog shard,
   * when it has no storage, is taken for a new one once a majority of the controller nodes
   * answer with none either (ReplicaOptions.newIfMajorityEmpty), not only once all have.
   */
  newCluster?: boolean;
  cacheBytesMaxPerShard?: number;
  segmentBytesMax?: number;
  checkpointEveryRecords?: number;
  /** Free space each device keeps: page writes are refused under it (default 5 % of the device, at most 1 GiB; docs/replication.md, "A device short of space"). */
  spaceReserveBytes?: number;
  /** Records of history each replica keeps readable behind its newest image (default 0; runtime/device-host.ts). */
  retainRecords?: number;
  /** Background scrub per device, bytes per second (0 = off; default in runtime/device-host.ts). */
  scrubBytesPerSecond?: number;
  mailboxRequestsMax?: number;
  mailboxBytesMax?: number;
  /** Initial old space of each host thread's heap, MiB (runtime/host-pool.ts). */
  hostHeapInitialMiB?: number;
  /** Election and heartbeat timing of the shard replicas (defaults in actors/replica.ts). */
  timing?: Partial<ReplicaTiming>;
  /** Heartbeat period to the controller; default 1000 ms. */
  heartbeatMs?: number;
  /** Deadline of requests this node makes to others; default 10 s. */
  requestTimeoutMs?: number;
  /** API requests handled at once at most; default API_REQUESTS_IN_FLIGHT_MAX. */
  apiRequestsInFlightMax?: number;
  /** Bytes of the API requests handled at once at most; default API_BYTES_IN_FLIGHT_MAX. */
  apiBytesInFlightMax?: number;
  /** Control requests (controller and node subjects) handled at once at most; default CONTROL_IN_FLIGHT_MAX. */
  controlInFlightMax?: number;
  /** Moves of replicas the controller runs at once at most; default MOVES_IN_FLIGHT_MAX. */
  movesInFlightMax?: number;
  /**
   * The controller replaces the replicas of a node silent this long (docs/replication.md,
   * "Replacing a dead node's replicas"); 0 = never (an operator moves them). Default
   * REPAIR_AFTER_MS_DEFAULT.
   */
  repairAfterMs?: number;
  /** Told when the node stopped itself for a reason it cannot run on (its data directory's lock was taken). */
  onFatal?: (err: Error) => void;
  /** Period of the claim's check while the node runs; default CLAIM_RECHECK_MS. */
  claimRecheckMs?: number;
}

/**
 * Control requests (heartbeats, assignments, status, shard open and destroy, catalog reads and
 * changes) a node handles at once at most, by default: one more is answered `overloaded` at
 * once. They come from nodes and operators, not clients, but the subjects are open to anyone on
 * the NATS server, and a status fans out to every host.
 */
export const CONTROL_IN_FLIGHT_MAX = 1024;

/**
 * CBOR data items of one control request at most, checked before it is decoded (as the API's
 * REQUEST_ITEMS_MAX): the largest, a shards.open of SHARDS_PER_CONTROL_MAX assignments, holds
 * about 110,000 (one a volume.create sends, of one volume's shards, about 7,000).
 */
export const CONTROL_REQUEST_ITEMS_MAX = 131_072;

/**
 * API requests (strata.<c>.api.*) a node handles at once at most, by default: one more is
 * answered `overloaded` at once. Each holds at most one request's pages (about 1 MiB) and the
 * routing work; with API_BYTES_IN_FLIGHT_MAX, this bounds what a burst of API requests costs the
 * main thread.
 */
export const API_REQUESTS_IN_FLIGHT_MAX = 4096;

/**
 * Bytes of the API requests (their messages) a node handles at once at most, by default: one
 * more that would pass it is answered `overloaded` at once. A page.write of about 1 MiB held
 * about 4 MiB of the node's memory while its shards answered (its message, its pages re-encoded
 * for each shard, the buffers of the send): without this bound, API_REQUESTS_IN_FLIGHT_MAX of
 * them, to a shard that was slow to answer, could hold 16 GiB.
 */
export const API_BYTES_IN_FLIGHT_MAX = 64 * 1024 * 1024;

/**
 * Catalog operations (volume.create, volume.delete) queued or running on the controller at
 * most: one more is answered `overloaded` at once. They run one at a time, each up to a round of
 * shard opens or destroys on the nodes (requestTimeoutMs).
 */
export const CONTROL_QUEUE_MAX = 64;

/** What an API handler gets besides the decoded body. */
interface ApiRequest {
  /** The request's bytes as they came. */
  data: Uint8Array;
  /** Its deadline: the caller's Strata-Deadline, at most the node's request timeout away. */
  deadlineMs: number;
}

/**
 * How long the status (and a metrics scrape) waits for each host's stats and health: a host that
 * does not answer in time is shown not answering, under the cluster status's own 2 s gather.
 */
export const HOST_STATUS_TIMEOUT_MS = 1000;
/** Longest a replicated controller waits to confirm its seat before it answers a read (confirmSeat). */
const CONFIRM_SEAT_MS_MAX = 1000;

/**
 * A volume.delete answers at the latest this long (or a tenth of the time it had, if less) before
 * its requester's deadline, whether or not every node has answered its destroy; a volume.create
 * stops waiting for the nodes' opens as long before it.
 */
const CATALOG_REPLY_ROOM_MS_MAX = 250;

/** The host of a controller node that holds its replica of the catalog shard. */
const CATALOG_HOST_ID = 0;

/** Of the `leftMs` a catalog operation has before its requester's deadline, what it may wait for the nodes (room left to answer). */
function catalogWaitMs(leftMs: number): number {
  return leftMs - Math.min(CATALOG_REPLY_ROOM_MS_MAX, Math.max(0, leftMs) / 10);
}

/**
 * Moves of replicas (controller.shard.move) the controller runs at once at most: one more is
 * answered `overloaded` at once. Each waits for a node's open and a shard leader's change of
 * its set, within its requester's deadline.
 */
export const MOVES_IN_FLIGHT_MAX = 64;

/**
 * A node silent this long has its replicas replaced by the controller, by default (10 minutes):
 * long enough for a restart or a reboot, after which its replicas would only have to catch up,
 * short enough that a second failure is unlikely to come first.
 */
export const REPAIR_AFTER_MS_DEFAULT = 10 * 60 * 1000;
/** Moves replacing dead nodes' replicas the controller runs at once at most (each copies a shard). */
export const REPAIRS_IN_FLIGHT_MAX = 4;
/** The deadline of one such move. */
const REPAIR_MOVE_DEADLINE_MS = 60_000;
/** After a failed repair of a shard, the next waits this long, doubling on each failure up to the max. */
export const REPAIR_BACKOFF_MS_MIN = 5000;
export const REPAIR_BACKOFF_MS_MAX = 5 * 60 * 1000;
/** Period of the controller's check for replicas to replace: at most this, and at most half the wait before a repair. */
const REPAIR_CHECK_MS_MAX = 5000;
/**
 * How often a node asks its hosts which of its replicas are down and which lead
 * (HostPool.replicaRoles), to report them in its heartbeats (HeartbeatRequest.down and
 * `leading`): at most this often, from a heartbeat.
 */
const ROLES_CHECK_MS = 2000;
/** How long a rebalance waits after a handover of leadership for the nodes' heartbeats to count it (two checks and a heartbeat). */
const LEADER_SETTLE_MS = 2 * ROLES_CHECK_MS + 1000;
/** Deadline of a rebalance's request to a node to hand a shard's leadership over (a handover takes at most a maximum election timeout). */
const LEADER_HANDOVER_TIMEOUT_MS = 5000;

/** Requests to the shard's nodes a move makes at most to find the leader that changes its set. */
const MOVE_LEADER_TRIES_MAX = 512;
/** A move's pause after asking every node of the shard without finding its leader: doubling from the min to the max. */
const MOVE_RETRY_MS_MIN = 100;
const MOVE_RETRY_MS_MAX = 1000;

/** Destroys of shards a node remembers, for its reconciliations (StrataNode `destroyedAt`). */
const DESTROYS_REMEMBERED_MAX = 65_536;

/** After a failed reconciliation the next waits this long, doubling on each failure up to the max. */
export const RECONCILE_BACKOFF_MS_MIN = 1000;
export const RECONCILE_BACKOFF_MS_MAX = 30_000;
/** Reads of the assignments (all pages) before a reconciliation gives up for its back-off. */
const ASSIGNMENTS_FETCH_TRIES = 3;
/** Longest wait for the host threads of a node whose start failed to exit. */
const NODE_KILL_WAIT_MS = 5000;
/** Longest wait for the NATS connection to drain at a stop. */
const NATS_DRAIN_MS = 5000;
/**
 * Longest wait of a clean stop, its hosts stopped, for the API and control requests this node
 * still answers (a catalog change its API router forwarded waits for the controller's answer)
 * before its connection closes: an answer not sent by then is never sent.
 */
const STOP_ANSWERS_WAIT_MS = 3000;
/** checkAlone: probes of each subject, the pause between them, and each one's deadline. */
const CHECK_ALONE_TRIES = 3;
const CHECK_ALONE_PAUSE_MS = 300;
const CHECK_ALONE_TIMEOUT_MS = 2000;
/** Period of a controller node's check of its replica of the catalog shard (`checkSeat`). */
const SEAT_CHECK_MS = 200;
/**
 * A node that joined the catalog shard (`catalog.join`) does not leave it on a controller's word
 * (`controllers` of its assignments) for this long after, while its replica's log holds no change
 * naming it: the change that adds it is made after the join, and a controller may answer the set
 * before it meanwhile.
 */
const CATALOG_JOIN_GRACE_MS = 60_000;
/** How long the controller waits for a node taken out of the controller nodes to destroy its replica of the catalog shard (it does so later otherwise). */
const CATALOG_LEAVE_ASK_MS = 2000;
/**
 * Longest wait of a controller giving its seat up before a handover of the catalog shard
 * (`releaseSeat`) for the catalog operation it runs and its catalog writes. Meanwhile it answers
 * every other catalog operation `notController`, which a client sends again until its deadline.
 */
const SEAT_RELEASE_WAIT_MS = 5000;
/** Longest wait of a node that stops for the controller's answer to its `controller.leaving`. */
const LEAVING_TIMEOUT_MS = 1000;
/** Period of the controller's check that a node it waits for still serves its subjects (`askNode`). */
const NODE_PROBE_MS = 1000;
/**
 * A node the controller waited for that is gone without closing its connection: frozen (SIGSTOP,
 * a paused VM) or cut off from the controller. Its heartbeats stopped (it is not live) and its
 * claim went unanswered (`askNode`); NATS would route requests to its subscriptions until the
 * server's ping check dropped them, minutes later.
 */
class NodeSilentError extends ProtocolError {
  constructor(nodeId: string, subject: string) {
    super('unavailable', `node '${nodeId}' is silent: no heartbeat within the controller's live window and its claim unanswered within ${NODE_PROBE_MS} ms (frozen, or cut off); request on ${subject} not waited for any longer`, { subject, silent: nodeId });
  }
}
/** A node of a cluster with a replicated controller does not report failed heartbeats this long after its start. */
const CONTROLLER_ELECTION_GRACE_MS = 10_000;
/** A heartbeat's wait for its answer, at least (and two periods, at most a request's timeout). */
const HEARTBEAT_TIMEOUT_MS_MIN = 2000;
/** A heartbeat is sent at most this many times: again when a controller is seated while its answer is awaited. */
const HEARTBEAT_SENDS_MAX = 3;
/**
 * A controller just started or taken over waits this long at most for the nodes' heartbeats before
 * it places a volume (`heardFromNodes`); it asks every node for one as it starts (`seated`).
 */
const MEMBERS_WARMUP_MS = 1000;
/** Volumes whose placement a node's controller remembers as done (`placedHere`): the catalog's bound on volumes. */
const PLACED_HERE_MAX = 4096;
/**
 * ...and this long at most while it has heard from fewer nodes than the placement needs: longer
 * than a heartbeat waits for a controller that died with it (HEARTBEAT_TIMEOUT_MS_MIN) and the
 * next period.
 */
const MEMBERS_WANTED_WAIT_MS = 4000;
/** Each read or write of the catalog shard, at most. */
const CATALOG_IO_TIMEOUT_MS = 10_000;

/** claimAlone: answers taken after a node has heard its own claim, and answers read at most. */
const CLAIM_GRACE_MS = 200;
const CLAIM_ANSWERS_MAX = 64;
/** Period of the claim's check while a node runs (`recheckClaim`). */
const CLAIM_RECHECK_MS = 5_000;
/** Between the two rounds of a claim on a NATS cluster: longer than a subscription takes to cross the routes. */
const CLAIM_CLUSTER_PAUSE_MS = 1500;

export type { NodeStartInfo };

/** Longest wait of a start for the NATS server to confirm the node's subscriptions. */
const START_FLUSH_MS = 5000;

/**
 * The server's confirmation of what this connection sent (`what`, for the error), within
 * START_FLUSH_MS: else ProtocolError('unavailable'). A server that does not answer (a frozen
 * process) held a start until the client's ping check gave the connection up, minutes later.
 */
async function flushWithin(nc: NatsConnection, what: string): Promise<void> {
  await withTimeout(nc.flush(), START_FLUSH_MS, () => new ProtocolError('unavailable', `the NATS server did not confirm ${what} within ${START_FLUSH_MS} ms; not starting`));
}

/** True when the NATS server this connection reached is one of a cluster (its subscriptions spread over routes). */
function natsIsCluster(nc: NatsConnection): boolean {
  const info = nc.info;
  return info !== undefined && (info.cluster !== undefined || (info.connect_urls?.length ?? 0) > 0);
}

/**
 * Logs a failure that repeats (every heartbeat, every retry) quietly: at warn the first time
 * and whenever its message changes, at info once when the operation works again. A failure that
 * says the controller may be moving (`controllerMoving`: nobody serves its subjects, a deposed
 * controller answered, or none in time) is expected for a moment: during the first
 * CONTROLLER_MOVE_QUIET_MS of a run of failures it is logged at debug only, and at warn once it
 * lasts longer.
 */
class FailureLog {
  private lastMessage: string | undefined;
  private failingSinceMs: number | undefined;

  constructor(
    private readonly log: Logger,
    private readonly what: string,
  ) {}

  failed(err: unknown, fields: Record<string, unknown> = {}): void {
    const now = Date.now();
    this.failingSinceMs ??= now;
    const message = err instanceof Error ? err.message : String(err);
    if (message === this.lastMessage) return;
    if (controllerMoving(err) && now - this.failingSinceMs < CONTROLLER_MOVE_QUIET_MS) {
      this.log.debug(`${this.what} failed (the controller may be moving)`, { ...fields, err });
      return;
    }
    this.lastMessage = message;
    this.log.warn(`${this.what} failed`, { ...fields, ...(now > this.failingSinceMs ? { failingForMs: now - this.failingSinceMs } : {}), err });
  }

  succeeded(): void {
    this.failingSinceMs = undefined;
    if (this.lastMessage === undefined) return;
    this.log.info(`${this.what} works again`, { lastErr: this.lastMessage });
    this.lastMessage = undefined;
  }
}

/**
 * How long a run of failures that say the controller is moving is logged at debug only
 * (FailureLog): a planned move leaves the controller's subjects unserved from the handover of the
 * catalog shard to the next node's check of its seat (SEAT_CHECK_MS) and takeover, a few hundred
 * ms; a killed controller's successor is elected within a few hundred ms after its lease runs out.
 */
export const CONTROLLER_MOVE_QUIET_MS = 3000;

/**
 * What a request to the controller meets while it moves: no responders on its subject, a node's
 * answer that it does not run the controller (any more), or no answer in time (sent to a
 * controller killed with it).
 */
function controllerMoving(err: unknown): boolean {
  return err instanceof NoRespondersError || (err instanceof ProtocolError && (err.code === 'timeout' || (err.code === 'unavailable' && err.details?.['notController'] === true)));
}

type ApiHandler = (body: unknown, req: ApiRequest) => Promise<unknown>;

/**
 * The node's metadata in `dataDir` (created on first start, checked against the options after)
 * and the controller's catalog, when the node runs one.
 */
function openDataDir(dataDir: string, opts: StrataNodeOptions, hosts: number): { meta: MetaStore; nodeMeta: NodeMeta; controller: Controller | undefined; created: boolean } {
  const disk = new RealDisk(dataDir);
  const meta = nodeMetaStore(disk);
  const existing = meta.read<NodeMeta>(NODE_META);
  let nodeMeta: NodeMeta;
  if (existing) {
    if (existing.nodeId !== opts.nodeId || existing.cluster !== opts.cluster) {
      throw new ProtocolError('bad_request', `data dir ${dataDir} belongs to node '${existing.nodeId}' of cluster '${existing.cluster}', not '${opts.nodeId}' of '${opts.cluster}'`);
    }
    if (existing.hosts !== hosts) {
      throw new ProtocolError('bad_request', `data dir ${dataDir} was created with hosts=${existing.hosts}; start the node with the same --hosts (devices cannot be remapped yet)`);
    }
    nodeMeta = existing;
  } else {
    nodeMeta = { version: 1, nodeId: opts.nodeId, cluster: opts.cluster, hosts, shards: [] };
    meta.write(NODE_META, nodeMeta);
  }
  let controller: Controller | undefined;
  // A replicated controller's catalog is in the catalog shard: the node runs one while its replica leads it (takeSeat).
  if (opts.controller && opts.controllers === undefined) {
    disk.mkdirp(LOCAL_CATALOG_DIR);
    disk.fsyncDir('');
    controller = new Controller({
      meta: localCatalogStore(disk),
      // Used only if no catalog exists yet: volume ids of a catalog created again never repeat.
      newCatalogTag: crypto.randomBytes(4).toString('hex'),
    });
  }
  return { meta, nodeMeta, controller, created: existing === undefined };
}

function shardId(a: { volumeId: string; shard: number }): string {
  return shardKey(a.volumeId, a.shard);
}

/** `not_found` for volume `name` whose create (or branch) has not been answered yet (`path`: the field that named it). */
function notAnsweredYet(name: string, path?: string): ProtocolError {
  return new ProtocolError('not_found', `${path === undefined ? '' : `${path}: `}volume '${name}' does not exist (its create has not been answered yet)`, { name, ...(path === undefined ? {} : { path }) });
}

/** A node's record of a shard and its assignment name the same members (and set moved from). */
function sameMembers(rec: ShardAssignment, a: ShardAssignment): boolean {
  return rec.members.join(',') === a.members.join(',') && (rec.priorMembers ?? []).join(',') === (a.priorMembers ?? []).join(',');
}

/** Where each shard of a volume has its replicas, and the move under way, for volume.info. */
function replicaSets(v: VolumeRecord): NonNullable<VolumeInfo['replicaSets']> {
  return v.placements.map((p) => ({
    shard: p.shard,
    members: p.replicas.map((r) => r.nodeId),
    ...(p.adding === undefined ? {} : { moving: { from: p.removing!, to: p.adding.nodeId } }),
  }));
}

export class StrataNode {
  readonly nodeId: string;
  readonly cluster: string;
  readonly dataDir: string;
  private readonly opts: StrataNodeOptions;
  private readonly hosts: number;
  private readonly meta: MetaStore;
  private nodeMeta: NodeMeta;
  /** This start created the node's record in its data directory: a first start, or one after the directory was lost. */
  private dataDirCreated = false;
  private pool: HostPool | undefined;
  private nc: NatsConnection | undefined;
  private controller: Controller | undefined;
  /**
   * A replicated controller (`controllers`): the term of the catalog shard this node runs the
   * controller in (undefined: it does not), the subscriptions of its subjects, a takeover under
   * way, a seat given up for a handover of the catalog shard (`releaseSeat`: not taken again
   * meanwhile), the check of the replica's role (`checkSeat`), and whether the replica is open.
   */
  private seat: { term: number; subs: Subscription[]; sinceMs: number } | undefined;
  /** The catalog writes of the controller this node last gave up (Controller.retire): ended before the seat is taken again. */
  private retiredCatalogWrites: Promise<void> = Promise.resolve();
  private seatTaking = false;
  private seatReleasing = false;
  private seatTimer: NodeJS.Timeout | undefined;
  private catalogReplicaOpen = false;
  /**
   * With `controllers`: whether this node is a controller node now, holding a replica of the
   * catalog shard, and the controller nodes it last knew. From its record (NodeMeta.catalog, once
   * a change of the controller nodes added it or took it out), else from `controllers`.
   */
  private catalogMember = false;
  private catalogMembers: string[] = [];
  /** When this node last joined the catalog shard (CATALOG_JOIN_GRACE_MS). */
  private catalogJoinedMs = Number.NEGATIVE_INFINITY;
  /** Opens, joins and leaves of the catalog shard's replica, one at a time. */
  private catalogChain: Promise<unknown> = Promise.resolve();
  /** The catalog shard's leader term and set in force, as this node's replica had them at the last seat check (undefined: it did not lead). */
  private catalogConfig: ReplicaConfigState | undefined;
  /** This node's controller is changing the controller nodes: it names none to the nodes meanwhile. */
  private controllersChanging = false;
  /** The replacement of a controller node the controller makes by itself (`replaceControllerNode`): running, and its back-off. */
  private readonly controllerRepair: { running: boolean; notBeforeMs: number; waitMs: number; message?: string } = { running: false, notBeforeMs: 0, waitMs: 0 };
  private readonly seatFailures: FailureLog;
  /** This node's hold on its data directory (released by stop, abandoned by kill). */
  private readonly lock: DataDirLock;
  private service: Service | undefined;
  /** The API's `every` subjects (`apiEverySubject`), served beside the service's. */
  private readonly apiEverySubs: Subscription[] = [];
  private router: ApiRouter | undefined;
  private readonly subs: Subscription[] = [];
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private controllerChain: Promise<unknown> = Promise.resolve();
  /** The node's shard opens and destroys, one at a time (`shardOp`). */
  private shardOps: Promise<unknown> = Promise.resolve();
  /** Catalog operations queued or running (see CONTROL_QUEUE_MAX). */
  private controlQueued = 0;
  /**
   * The names of the volumes whose create runs: in the catalog already (the nodes' reconciliations
   * open what they find missing), but neither described nor listed until the create is answered,
   * since it may still be undone (a node that cannot open its shards).
   */
  private readonly creating = new Set<string>();
  /** The controller's undo of a create nobody finished is queued or running (`undoAbandoned`): one at a time. */
  private undoingAbandoned = false;
  /** Volumes (ids) whose create this node's controller placed on every node, the newest PLACED_HERE_MAX (`madeAgain`). */
  private readonly placedHere = new Set<string>();
  /** Control requests being handled (CONTROL_IN_FLIGHT_MAX). */
  private controlInFlight = 0;
  /** The moves of replicas this controller runs, by shard (`<volumeId>.<shard>`): one at a time each. */
  private readonly moving = new Map<string, Promise<ShardMoveReply>>();
  /** The controller's periodic check for dead nodes' replicas to replace (`repairTick`). */
  private repairTimer: NodeJS.Timeout | undefined;
  /**
   * This node's replicas that are down (`checkReplicaRoles`), by `<volumeId>.<shard>`: since when,
   * by this node's clock, without a break in the checks.
   */
  private readonly replicasDown = new Map<string, { volumeId: string; shard: number; sinceMs: number }>();
  /** How many shards this node's replicas lead, as the last check found (`checkReplicaRoles`). */
  private leadingCount = 0;
  /**
   * The controller's rebalance of leaders (`balanceLeaders`): a handover asked for is running; the
   * next waits until `notBeforeMs` (the nodes' heartbeats counting the last handover or move);
   * `exhausted`, the pairs `from>to` where `from` leads no shard with a replica on `to`, found so
   * with the leaders and sets `exhaustedBasis` (Controller.leaderBalanceBasis) and kept while they
   * hold: a rebalance asked for again does not take up such a pair again.
   */
  private readonly leaderBalance = { running: false, notBeforeMs: 0, exhausted: new Set<string>(), exhaustedBasis: '', lastError: '' };
  /** The check of the replicas' roles (`checkReplicaRoles`) is running. */
  private rolesCheck: Promise<void> | undefined;
  private rolesCheckedMs = 0;
  /** The shards (`<volumeId>.<shard>`) whose replica on a dead node this controller is replacing. */
  private readonly repairing = new Set<string>();
  /**
   * Shards whose last repair failed: no other is tried before `notBeforeMs`; `waitMs` doubles on
   * each failure (REPAIR_BACKOFF_MS_MIN to _MAX). At most CATALOG_REPLICAS_MAX, oldest dropped.
   */
  private readonly repairBackoff = new Map<string, { notBeforeMs: number; waitMs: number; message: string }>();
  /**
   * Runs of moves this controller ended, by trigger, then outcome (`done` or the error code):
   * strata_replica_moves. `done` is there from the start, so that its series start at 0.
   */
  private readonly movesEnded = new OutcomeCounts();
  /** Changes of the controller nodes this node's controller ended, by trigger and outcome (ControllerSnapshot.controllerNodeChanges). */
  private readonly controllerChangesEnded = new OutcomeCounts();
  private readonly startedAt = Date.now();
  private started: NodeStartInfo | undefined;
  private readonly log: Logger;
  private stopped = false;
  /** Given when a clean stop begins: waits that end early then (a delete's for its destroys). */
  private readonly stopping = new Notice(true);
  /** A controller took its seat (`seated`): a heartbeat awaiting its answer is sent again, to it. */
  private readonly controllerSeated = new Notice();
  private reconciledEpoch = -1;
  /** The tag of the catalog reconciled with (HeartbeatReply.catalog). */
  private reconciledCatalog: string | undefined;
  /**
   * The `version` of this node's records' pages (`records`): one more at each change of
   * `nodeMeta`, from the clock at start, so that a restart between two pages is seen too.
   */
  private recordsVersion = Date.now();
  /** A heartbeat is waiting for its answer: the timer's tick is skipped. */
  private heartbeatRunning = false;
  /**
   * Opens of shards counted (`openSeq`), and the count at each shard's last open: a
   * reconciliation destroys no replica opened after it read the catalog (a move that adds the
   * node again, recorded meanwhile).
   */
  private openSeq = 0;
  private readonly openedAt = new Map<string, number>();
  /**
   * Destroys of shards counted (`destroySeq`), and the count at each shard's last destroy (the
   * newest DESTROYS_REMEMBERED_MAX): a reconciliation opens no replica destroyed after it read
   * the catalog (a volume deleted meanwhile, whose tombstone the next reconciliation reads).
   */
  private destroySeq = 0;
  private readonly destroyedAt = new Map<string, number>();
  /** The reconciliation running, if any (one at a time). */
  private reconciling: Promise<void> | undefined;
  /** Back-off of reconciliation: 0 after a success, else the wait after the last failure. */
  private reconcileBackoffMs = 0;
  /** The controller's catalog storage failure was logged. */
  private catalogFailureLogged = false;
  /** No reconciliation is tried before this time (ms since the Unix epoch). */
  private reconcileNotBeforeMs = 0;
  /** API requests being handled (see API_REQUESTS_IN_FLIGHT_MAX), and their bytes (API_BYTES_IN_FLIGHT_MAX). */
  private apiInFlight = 0;
  private apiBytesInFlight = 0;
  private readonly heartbeatFailures: FailureLog;
  /** The periodic claim check (`recheckClaim`), and whether one runs. */
  private claimTimer: NodeJS.Timeout | undefined;
  private claimChecking = false;
  private readonly claimFailures: FailureLog;
  /** Why the node stopped itself (its claim answered by another node), for a start that was under way. */
  private stoppedBecause: ProtocolError | undefined;
  /** The claim subjects' subscriptions: the last a stop lets go of. */
  private readonly claimSubs: Subscription[] = [];
  /** This start's claim (claimAlone): asked again after every reconnection. */
  private claim:
    | { instance: string; sinceMs: number; questions: { first: Uint8Array; recheck: Uint8Array }; subjects: string[]; idInUse: (whose: string) => string; controllerInUse: string }
    | undefined;
  private readonly reconcileFailures: FailureLog;
  /** API request durations by verb and outcome; only when the process runs telemetry. */
  private recorder: RequestRecorder | undefined;
  private removeStatsSource: (() => void) | undefined;

  private constructor(opts: StrataNodeOptions) {
    this.opts = opts;
    this.nodeId = opts.nodeId;
    this.cluster = opts.cluster;
    this.dataDir = path.resolve(opts.dataDir);
    this.hosts = opts.hosts ?? 2;
    this.log = createLogger({ component: 'node', node: opts.nodeId });
    this.heartbeatFailures = new FailureLog(this.log, 'heartbeat to the controller');
    this.reconcileFailures = new FailureLog(this.log, 'reconciliation with the catalog');
    this.claimFailures = new FailureLog(this.log, 'periodic check of the claim');
    this.seatFailures = new FailureLog(this.log, 'taking over as the controller');
    makeDirectory(this.dataDir);
    // One node process per data directory: two would write the same shard logs.
    this.lock = DataDirLock.acquire(this.dataDir, opts.nodeId, {
      // Taken over while this node ran (it was frozen longer than a takeover watches, say): it
      // stops at once, as a crash would, rather than write beside the new holder.
      onLost: (why) =>
        this.stopSelf('the data directory lock was taken by another node; stopping', { dataDir: this.dataDir, why }, new ProtocolError('unavailable', `data dir ${this.dataDir}: lock lost (${why})`)),
    });
    try {
      ({ meta: this.meta, nodeMeta: this.nodeMeta, controller: this.controller, created: this.dataDirCreated } = openDataDir(this.dataDir, opts, this.hosts));
      // The data directory and its devices' directories durable in their parents before a host
      // writes in them: a power cut must not take a directory whose files were fsynced (a
      // device's own files are made durable up to its directory by its host).
      for (let i = 0; i < this.hosts; i++) makeDirectory(path.join(this.dataDir, deviceDirName(i)));
      fsyncDirectory(this.dataDir);
      fsyncDirectory(path.dirname(this.dataDir));
    } catch (e) {
      this.lock.release();
      throw e;
    }
    if (opts.controllers !== undefined) {
      const rec = this.nodeMeta.catalog;
      this.catalogMember = rec !== undefined ? rec.member : opts.controllers.includes(opts.nodeId);
      this.catalogMembers = rec !== undefined ? [...rec.members] : [...opts.controllers];
    }
  }

  /** Starts a node: hosts, NATS, controller (if any), API service, heartbeats. */
  static async start(opts: StrataNodeOptions): Promise<StrataNode> {
    const node = new StrataNode(opts);
    try {
      await node.boot();
    } catch (e) {
      node.kill();
      // Once nothing of it runs on (bounded: a thread stuck in a disk call is not waited for
      // long), the directory is free again.
      await withTimeout(node.threadsGone, NODE_KILL_WAIT_MS, () => new Error('host threads still exiting')).catch(() => undefined);
      node.lock.release();
      throw e;
    }
    return node;
  }

  get natsConnection(): NatsConnection {
    if (!this.nc) throw new Error('node not started');
    return this.nc;
  }

  get hostPool(): HostPool {
    if (!this.pool) throw new Error('node not started');
    return this.pool;
  }

  /** What this node's start did, once it returned (logged by `strata node`). */
  get startInfo(): NodeStartInfo | undefined {
    return this.started;
  }

  private async boot(): Promise<void> {
    const bootAt = performance.now();
    const hostConfigs: HostConfig[] = [];
    for (let i = 0; i < this.hosts; i++) {
      hostConfigs.push({
        hostId: i,
        hostCount: this.hosts,
        nodeId: this.nodeId,
        cluster: this.cluster,
        natsUrl: this.opts.natsUrl,
        ...(this.opts.natsAuth ? { natsAuth: this.opts.natsAuth } : {}),
        ...(this.opts.natsTls ? { natsTls: this.opts.natsTls } : {}),
        deviceDir: path.join(this.dataDir, deviceDirName(i)),
        device: {
          ...(this.opts.cacheBytesMaxPerShard ? { cacheBytesMaxPerShard: this.opts.cacheBytesMaxPerShard } : {}),
          ...(this.opts.segmentBytesMax ? { segmentBytesMax: this.opts.segmentBytesMax } : {}),
          ...(this.opts.checkpointEveryRecords !== undefined ? { checkpointEveryRecords: this.opts.checkpointEveryRecords } : {}),
          ...(this.opts.scrubBytesPerSecond !== undefined ? { scrubBytesPerSecond: this.opts.scrubBytesPerSecond } : {}),
          ...(this.opts.retainRecords !== undefined ? { retainRecords: this.opts.retainRecords } : {}),
          ...(this.opts.spaceReserveBytes !== undefined ? { spaceReserveBytes: this.opts.spaceReserveBytes } : {}),
          // The catalog's writes go on short of space: deleting a volume writes it, and frees space.
          spaceExemptVolumes: [CATALOG_VOLUME_ID],
        },
        ...(this.opts.timing ? { timing: this.opts.timing } : {}),
        ...(this.opts.mailboxRequestsMax ? { mailboxRequestsMax: this.opts.mailboxRequestsMax } : {}),
        ...(this.opts.mailboxBytesMax ? { mailboxBytesMax: this.opts.mailboxBytesMax } : {}),
      });
    }
    const telemetry = currentTelemetry();
    if (telemetry) this.recorder = new RequestRecorder();
    this.nc = await connect({
      servers: this.opts.natsUrl,
      ...(this.opts.natsAuth ?? {}),
      // A `tls://` URL requires TLS (runtime/nats-tls.ts).
      ...withNatsTls(this.opts.natsUrl, this.opts.natsTls),
      inboxPrefix: nodeInboxPrefix(this.cluster),
      name: `strata-${this.nodeId}`,
      maxReconnectAttempts: -1,
      // A server that refuses the user on two tries in a row (restarted without its password,
      // say) would otherwise end the reconnections, and the node would run on without NATS.
      ignoreAuthErrorAbort: true,
      reconnectTimeWait: 250,
      timeout: 10_000,
      // Failures become typed errors where they are handled; no stack trace per request.
      noAsyncTraces: true,
    }).catch(async (err: unknown) => {
      throw await natsConnectError(err, {
        servers: [this.opts.natsUrl],
        ...(this.opts.natsAuth ? { user: this.opts.natsAuth.user } : {}),
        ...withNatsTls(this.opts.natsUrl, this.opts.natsTls),
      });
    });
    // Listening for reconnections from here: one while the node starts counts too (its claim
    // is asked again once it exists, and a refusal ends the start).
    void this.watchReconnects(this.nc);
    watchDenials(new ConnectionState(this.nc), (denied, unreported) =>
      this.log.error('the NATS server refuses this node\'s user (its permissions: strata nats-auth)', { ...denied, unreported }),
    );
    // Before any host subscribes in this node's name.
    await this.checkAlone(this.nc);
    this.checkStarting();
    this.pool = await HostPool.start({
      hosts: hostConfigs,
      ...(this.opts.hostHeapInitialMiB !== undefined ? { heapInitialMiB: this.opts.hostHeapInitialMiB } : {}),
      onHostExit: (hostId, code, restarting, err, hung) => {
        // A hung host's exit is its termination, said already (onHostHung): once is enough.
        if (restarting && hung) return;
        if (restarting) this.log.warn('actor host exited; restarting it', { hostId, code, ...(err ? { err } : {}) });
        else this.log.error('actor host exited too often; starting it again after a back-off', { hostId, code, ...(err ? { err } : {}) });
      },
      onHostHung: (hostId, silentMs) => this.log.error('actor host does not answer; terminating and restarting it', { hostId, silentMs }),
      onHostStopTimedOut: (hostId, err) => this.log.warn('actor host did not stop in time; terminating it (its device recovers when opened again)', { hostId, err }),
      onShardReopenFailed: (hostId, spec, err, retrying) =>
        this.log.warn(retrying ? 'host could not open a shard; trying again' : 'restarted host refused a shard; forgotten', {
          hostId, volume: spec.volumeId, shard: spec.shard, err,
        }),
    });
    this.checkStarting();
    // Serve the shards this node had before it reaches anyone. One that cannot be opened does
    // not keep the others from serving: the pool tries it again with a back-off. The hosts open
    // theirs side by side, each in the node's order, HOST_OPENS_AT_ONCE asked at a time.
    const pool = this.pool;
    const opensAt = performance.now();
    let opensFailed = 0;
    const byHost = new Map<number, ShardAssignment[]>();
    for (const a of this.nodeMeta.shards) {
      const list = byHost.get(a.hostId);
      if (list === undefined) byHost.set(a.hostId, [a]);
      else list.push(a);
    }
    await Promise.all([...byHost.values()].map((list) => inLanes(list, HOST_OPENS_AT_ONCE, async (a) => {
      this.checkStarting();
      await pool.openShard(a.hostId, { ...a, existing: true }).catch((err: unknown) => {
        opensFailed++;
        // A start given up (the node stopped meanwhile) fails the opens still asked: nothing to say.
        if (!this.stopped) this.log.warn('could not open a shard; trying again', { hostId: a.hostId, volume: a.volumeId, shard: a.shard, err });
      });
    })));
    const opensMs = performance.now() - opensAt;
    this.router = new ApiRouter(this.nc, this.cluster, this.opts.requestTimeoutMs ?? 10_000);
    if (this.controller) {
      this.serveController();
      this.nc.publish(controllerSubject(this.cluster, 'seated'), encode({ node: this.nodeId }));
    }
    if (this.opts.controllers !== undefined) await this.startAsControllerNode(this.opts.controllers);
    this.serveNode();
    this.checkStarting();
    await this.serveApi();
    await flushWithin(this.nc, 'its subscriptions');
    await this.heartbeat();
    await this.reconciling;
    this.checkStarting();
    this.heartbeatTimer = setInterval(() => this.beatNow(), this.opts.heartbeatMs ?? 1000);
    this.heartbeatTimer.unref();
    this.claimTimer = setInterval(() => {
      if (this.claimChecking || this.stopped) return;
      this.claimChecking = true;
      // Never rejected unhandled: a check that failed is logged, and the next one comes.
      void this.recheckClaim()
        .catch((e: unknown) => this.claimFailures.failed(e))
        .finally(() => (this.claimChecking = false));
    }, this.opts.claimRecheckMs ?? CLAIM_RECHECK_MS);
    this.claimTimer.unref();
    if (this.controller !== undefined) this.startRepairs();
    if (this.catalogMember) this.startSeatChecks();
    this.started = {
      shards: this.nodeMeta.shards.length,
      shardsFailed: opensFailed,
      shardsOpenMs: Math.round(opensMs),
      startMs: Math.round(performance.now() - bootAt),
    };
    if (telemetry && !this.stopped) {
      const recorder = this.recorder!;
      const pool = this.pool;
      this.removeStatsSource = telemetry.metrics.addStatsSource(async () => {
        const controller = this.controllerStats();
        return {
          node: this.nodeId,
          hosts: await pool.stats({ timeoutMs: HOST_STATUS_TIMEOUT_MS }),
          requests: recorder.snapshot(),
          catalogChangesSentAgain: this.router?.changesSentAgain ?? 0,
          ...(controller ? { controller } : {}),
          ...(this.started ? { start: this.started } : {}),
        };
      });
    }
  }

  /**
   * Throws when the node was stopped while it started (its claim was answered by another node
   * after a reconnection, say): the start then fails with why, and kills what it started.
   */
  private checkStarting(): void {
    if (this.stopped) throw this.stoppedBecause ?? new ProtocolError('unavailable', `node '${this.nodeId}' was stopped while it started`);
  }

  /** Forwards the spans every host thread finished to the process's exporters now (tests). */
  async flushTelemetry(): Promise<void> {
    await this.pool?.flushTelemetry();
  }

  /** Fault injection: replication messages to and from these nodes are lost (and other faults). */
  async setFaults(faults: TransportFaults): Promise<void> {
    await this.hostPool.setFaults(faults);
  }

  /** Fault injection: the next `times` fdatasyncs of a host's device fail (Infinity: for good). */
  async failFsync(hostId: number, times: number): Promise<void> {
    await this.hostPool.failFsync(hostId, times);
  }

  /** Fault injection: host `hostId`'s device says it has `bytes` free (undefined: what it has). */
  async setFreeBytes(hostId: number, bytes: number | undefined): Promise<void> {
    await this.hostPool.setFreeBytes(hostId, bytes);
  }

  /**
   * Refuses to start beside another node of the same id (both would answer for its replicas,
   * and a candidate could count a vote the other had given to someone else), and, with a
   * controller, beside another controller (two catalogs: a volume created in one is not found
   * in the other). Two checks, before any host subscribes in this node's name:
   *
   * 1. **Claims** (claimAlone): another node answers on the claim subjects, running or starting.
   *    This catches two nodes started at the same moment.
   * 2. **Probes**: someone answers on the node's status subject or the controller's members
   *    subject, in CHECK_ALONE_TRIES tries, each with a deadline of its own: a running node
   *    that stalls through the claim's short window answers one of them. Only an answer
   *    counts: a subscription that takes the request and never answers is a node that died
   *    without closing its connection.
   */
  private async checkAlone(nc: NatsConnection): Promise<void> {
    const idInUse = (whose: string): string => `node id '${this.nodeId}' is in use in cluster '${this.cluster}': another node of that id ${whose}`;
    const controllerInUse = `cluster '${this.cluster}' has a controller already: start this node with --no-controller (one controller per cluster)`;
    await this.claimAlone(nc, idInUse, controllerInUse);
    const probes: Array<{ subject: string; message: string }> = [
      { subject: nodeSubject(this.cluster, this.nodeId, 'status'), message: idInUse('answers') },
    ];
    if (this.controller) probes.push({ subject: controllerSubject(this.cluster, 'members'), message: controllerInUse });
    // A controller node that keeps the catalog alone answers its claim; replicated controllers do not claim.
    if (this.opts.controllers !== undefined) {
      probes.push({ subject: controllerSubject(this.cluster, 'claim'), message: `cluster '${this.cluster}' has a controller node that keeps the catalog alone (started with --controller, without --controllers): a cluster has one or the other` });
    }
    for (const { subject, message } of probes) {
      for (let i = 0; i < CHECK_ALONE_TRIES; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, CHECK_ALONE_PAUSE_MS));
        try {
          await nc.request(subject, encode({}), { timeout: CHECK_ALONE_TIMEOUT_MS });
          // An answer: that node runs (one that died cannot answer).
          throw new ProtocolError('bad_request', message, { subject });
        } catch (e) {
          if (e instanceof ProtocolError) throw e;
          // No subscriber at all (the server says so at once): nobody there.
          if (natsErrorCode(e) === '503') break;
          // Taken without an answer: a node that stalls, or one whose machine died (the server
          // keeps its subscriptions until its ping check drops them, minutes later). Asked
          // again; never answered, it is taken for dead, so that its replacement can start.
        }
      }
    }
  }

  /**
   * Subscribes to this node's claim subjects (`node.<id>.claim`, and `controller.claim` with a
   * controller), which answer with this start's random instance for as long as the node runs,
   * then asks them and refuses to start when another instance answers.
   *
   * Of two nodes that claim at the same moment, at least one refuses: each subscription is in
   * the server before its node asks (flush), so whichever asks last reaches the other's. Both
   * may refuse; started again one after the other, the first starts. With NATS servers in a
   * cluster, a subscription reaches the other servers over their routes a moment later, and a
   * question published meanwhile on another server misses it: there the claim is asked again
   * after CLAIM_CLUSTER_PAUSE_MS. After every reconnection it is asked again too (`watchReconnects`),
   * and every CLAIM_RECHECK_MS while the node runs (`recheckClaim`).
   */
  private async claimAlone(nc: NatsConnection, idInUse: (whose: string) => string, controllerInUse: string): Promise<void> {
    const instance = crypto.randomBytes(8).toString('hex');
    const claim: ClaimReply = { instance, nodeId: this.nodeId, hostname: os.hostname(), pid: process.pid, sinceMs: Date.now() };
    const answer = encode(claim);
    const subjects = [nodeSubject(this.cluster, this.nodeId, 'claim')];
    if (this.controller) subjects.push(controllerSubject(this.cluster, 'claim'));
    for (const subject of subjects) {
      this.claimSubs.push(nc.subscribe(subject, {
        callback: (err, msg) => {
          if (err || !msg.reply) return;
          try {
            msg.respond(answer);
          } catch {
            // The connection is closing: this node is going away anyway.
          }
          this.claimAsked(nc, subject, subject === subjects[0] ? idInUse : null, controllerInUse, claim, msg.data);
        },
      }));
    }
    await flushWithin(nc, 'its claim subscriptions');
    this.claim = {
      instance, sinceMs: claim.sinceMs, subjects, idInUse, controllerInUse,
      questions: { first: encode({ ...claim, recheck: false }), recheck: encode({ ...claim, recheck: true }) },
    };
    const refusal = await this.askClaims(nc);
    if (refusal !== undefined) throw refusal;
  }

  /**
   * Asks the claim subjects (twice on a NATS cluster, CLAIM_CLUSTER_PAUSE_MS apart): the error
   * to refuse with when another instance answers, or when this node's own claim did not come back.
   */
  private async askClaims(nc: NatsConnection, recheck = false): Promise<ProtocolError | undefined> {
    const rounds = natsIsCluster(nc) ? 2 : 1;
    for (let round = 0; round < rounds; round++) {
      if (round > 0) await new Promise((r) => setTimeout(r, CLAIM_CLUSTER_PAUSE_MS));
      const refusal = await this.askClaimsOnce(nc, recheck);
      if (refusal !== undefined) return refusal;
    }
    return undefined;
  }

  /**
   * One round: the answers are taken until this node has heard its own on every subject (the
   * server has delivered the question to every subscriber it knows by then) and CLAIM_GRACE_MS
   * more, for another node's answer to come back; at most CHECK_ALONE_TIMEOUT_MS.
   */
  private async askClaimsOnce(nc: NatsConnection, recheck = false): Promise<ProtocolError | undefined> {
    const { instance, subjects, idInUse, controllerInUse } = this.claim!;
    const inbox = newInbox(nc);
    const heard = new Set<string>();
    let other: { subject: string; reply: ClaimReply | undefined } | undefined;
    let answers = 0;
    let resolveDone: () => void = () => undefined;
    const done = new Promise<void>((r) => (resolveDone = r));
    let graceTimer: NodeJS.Timeout | undefined;
    const replies = nc.subscribe(`${inbox}.*`, {
      callback: (err, msg) => {
        if (err || ++answers > CLAIM_ANSWERS_MAX) return;
        // The answer's subject is not in it; the question's subject goes in the inbox's last token.
        const subject = subjects[Number(msg.subject.slice(inbox.length + 1))] ?? msg.subject;
        let reply: ClaimReply | undefined;
        try {
          reply = validateClaimReply(decode(msg.data));
        } catch {
          // Someone answers on the subject, but not as a Strata node does: still someone.
        }
        if (reply?.instance === instance) {
          heard.add(subject);
          if (heard.size === subjects.length && !graceTimer) graceTimer = setTimeout(resolveDone, CLAIM_GRACE_MS);
          return;
        }
        other ??= { subject, reply };
        resolveDone();
      },
    });
    const deadline = setTimeout(resolveDone, CHECK_ALONE_TIMEOUT_MS);
    try {
      // The question is this node's claim: at a periodic check, a later instance that it reaches stops (claimAsked).
      const question = recheck ? this.claim!.questions.recheck : this.claim!.questions.first;
      subjects.forEach((subject, i) => nc.publish(subject, question, { reply: `${inbox}.${i}` }));
      await done;
    } finally {
      clearTimeout(deadline);
      if (graceTimer) clearTimeout(graceTimer);
      replies.unsubscribe();
    }
    if (other) {
      const r = other.reply;
      const who = r ? describeClaim(r) : 'a subscriber that is not a Strata node';
      const message = other.subject === subjects[0] ? idInUse(`runs or is starting: ${who}`) : `${controllerInUse}: ${who} runs one or is starting with one`;
      return new ProtocolError('bad_request', message, { subject: other.subject, ...(r ? { other: r } : {}) });
    }
    if (heard.size < subjects.length) {
      return new ProtocolError('unavailable', `NATS did not deliver this node's claim back to it within ${CHECK_ALONE_TIMEOUT_MS} ms; not starting without knowing it is alone`);
    }
    return undefined;
  }

  /**
   * After every reconnection to NATS, the claim is asked again: while this node was cut off, a
   * node of its id (or another controller) may have started, hearing nobody. Of the two, as at
   * the periodic check, the later start stops: this node, as a crash would (`onFatal`), when the
   * other answers and started first; the other, when this question reaches it (claimAsked). An
   * answer that is not a Strata node's stops this node. A round that cannot tell (its own claim
   * did not come back) is logged and waits for the next reconnection.
   */
  private async watchReconnects(nc: NatsConnection): Promise<void> {
    try {
      for await (const s of nc.status()) {
        const claim = this.claim;
        if (s.type !== Events.Reconnect || this.stopped || claim === undefined) continue;
        const refusal = await this.askClaims(nc, true);
        if (this.stopped || refusal === undefined) continue;
        if (refusal.code !== 'bad_request') {
          this.log.warn('could not ask the claim again after a reconnection', { err: refusal });
          continue;
        }
        const other = refusal.details?.['other'] as ClaimReply | undefined;
        if (other !== undefined && !startedFirst(other, claim)) continue; // It stops on this question.
        this.stopForClaim('after a reconnection to NATS another node answers this node\'s claim; stopping', refusal);
        return;
      }
    } catch {
      // The status stream ends with the connection.
    }
  }

  /**
   * Every `claimRecheckMs` (CLAIM_RECHECK_MS) the claim is asked again: on a NATS cluster, a node
   * of this id started on another server while the route between the servers was down heard
   * nobody, and no client reconnects when the route heals. Of two such nodes the one that started
   * later stops (as a crash would, `onFatal`); the other runs on. A round that cannot tell, or an
   * answer that is not a Strata node's, is logged and changes nothing.
   */
  private async recheckClaim(): Promise<void> {
    const nc = this.nc;
    const claim = this.claim;
    if (nc === undefined || claim === undefined || this.stopped) return;
    const refusal = await this.askClaimsOnce(nc, true);
    if (refusal === undefined || this.stopped) return;
    const other = refusal.details?.['other'] as ClaimReply | undefined;
    if (refusal.code !== 'bad_request' || other === undefined) {
      this.claimFailures.failed(refusal);
      return;
    }
    // The later one stops: here, or there when this question reached it (claimAsked).
    if (!startedFirst(other, claim)) return;
    this.stopForClaim('another node answers this node\'s claim and started first; stopping', refusal);
  }

  /**
   * Another instance asked this node's claim while it runs, at its periodic check or after a
   * reconnection (`question`, a ClaimQuestion with `recheck`). When the asker started first, this
   * node is the later of two and stops, once its answer is on its way: without this, of two
   * nodes that found each other it would be only at the later one's own check (up to
   * claimRecheckMs). A question at a start is only answered (that asker refuses to start on the
   * answer, whatever the clocks say), and so is one that is not a claim (a probe, a node of an
   * older version).
   */
  private claimAsked(nc: NatsConnection, subject: string, idInUse: ((whose: string) => string) | null, controllerInUse: string, own: ClaimReply, question: Uint8Array): void {
    let asker: ClaimReply & { recheck: boolean };
    try {
      asker = validateClaimQuestion(decode(question));
    } catch {
      return;
    }
    if (!asker.recheck || asker.instance === own.instance || this.stopped || !startedFirst(asker, own)) return;
    const { recheck: _, ...other } = asker;
    const message = idInUse !== null ? idInUse(`runs, started first, and asked its claim: ${describeClaim(other)}`) : `${controllerInUse}: ${describeClaim(other)} runs one, started first, and asked its claim`;
    const refusal = new ProtocolError('bad_request', message, { subject, other });
    void withTimeout(nc.flush(), CLAIM_GRACE_MS, () => new Error('flush'))
      .catch(() => undefined)
      .then(() => {
        if (!this.stopped) this.stopForClaim('another node that started first asks this node\'s claim; stopping', refusal);
      });
  }

  /** Another node answered this node's claim: it stops, and a start under way fails with `refusal`. */
  private stopForClaim(why: string, refusal: ProtocolError): void {
    this.stoppedBecause = refusal;
    this.stopSelf(why, { err: refusal }, new ProtocolError('unavailable', `node '${this.nodeId}' stopped: ${refusal.message}`));
  }

  /** Stops as a crash would, for a reason it cannot run on: logged at error, told to `onFatal`. */
  private stopSelf(why: string, fields: Record<string, unknown>, fatal: ProtocolError): void {
    this.log.error(why, fields);
    this.kill();
    this.opts.onFatal?.(fatal);
  }

  /** Clean stop: stops answering, drains hosts and NATS. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.stopping.notify();
    this.removeStatsSource?.();
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.claimTimer) clearInterval(this.claimTimer);
    if (this.repairTimer) clearInterval(this.repairTimer);
    if (this.seatTimer) clearInterval(this.seatTimer);
    await this.sayLeaving();
    // The service's stop drains its subscriptions, which waits for the server's answer to a
    // ping: bounded, as the drain below is. A server that does not answer (hung) held it until
    // the client's own ping check gave the connection up, minutes later.
    let serverAnswers = true;
    try {
      if (this.service) await withTimeout(this.service.stop(), NATS_DRAIN_MS, () => new Error('service stop timed out'));
    } catch {
      // Already stopped, or the server does not answer: the connection's close ends it.
      serverAnswers = false;
    }
    for (const sub of this.apiEverySubs.splice(0)) sub.unsubscribe();
    // The controller first: its catalog shard is handed over as the hosts stop (`releaseSeat`).
    await this.releaseSeat('the node stops');
    // The claim last (`claimSubs`): until its hosts have stopped, the node still acts in its name.
    for (const s of this.subs) s.unsubscribe();
    await this.pool?.stop();
    for (const s of this.claimSubs) s.unsubscribe();
    this.lock.release();
    if (serverAnswers) await this.answersSent(STOP_ANSWERS_WAIT_MS);
    try {
      // Bounded: a server that does not answer (hung) would hold the stop for a minute. One
      // that did not answer the service's stop is not waited for a second time.
      if (!serverAnswers) throw new Error('the server does not answer');
      if (this.nc) await withTimeout(this.nc.drain(), NATS_DRAIN_MS, () => new Error('drain timed out'));
    } catch {
      // Already closed, or the server does not answer: closed without draining.
      await this.nc?.close().catch(() => undefined);
    }
  }

  /**
   * Resolves once this node answers no API or control request (each counted from its arrival to
   * its answer), or after `ms`.
   */
  private async answersSent(ms: number): Promise<void> {
    const untilMs = Date.now() + ms;
    while ((this.apiInFlight > 0 || this.controlInFlight > 0) && Date.now() < untilMs) await new Promise((r) => setTimeout(r, 10));
    if (this.apiInFlight > 0 || this.controlInFlight > 0) this.log.warn('stops with requests unanswered: their requesters meet their deadlines', { api: this.apiInFlight, control: this.controlInFlight, waitedMs: ms });
  }

  /**
   * Tells the controller that this node stops (controller.leaving), so that it places nothing
   * more on it, within LEAVING_TIMEOUT_MS. A controller that does not answer finds the node gone
   * by its silence, as after a crash: said at debug only.
   */
  private async sayLeaving(): Promise<void> {
    const nc = this.nc;
    if (nc === undefined || nc.isClosed()) return;
    const subject = controllerSubject(this.cluster, 'leaving');
    try {
      throwIfError(decode((await nc.request(subject, encode({ nodeId: this.nodeId }), { timeout: LEAVING_TIMEOUT_MS })).data));
    } catch (e) {
      this.log.debug('could not tell the controller that this node stops', { err: fromNatsError(e, subject, LEAVING_TIMEOUT_MS) });
    }
  }

  /** As a crash: threads terminated, connections dropped, nothing drained or flushed. */
  kill(): void {
    this.stopped = true;
    this.removeStatsSource?.();
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.claimTimer) clearInterval(this.claimTimer);
    if (this.repairTimer) clearInterval(this.repairTimer);
    if (this.seatTimer) clearInterval(this.seatTimer);
    this.threadsGone = this.pool?.kill() ?? Promise.resolve();
    // Its handlers answer nothing more, also before the connection's close completes (a node
    // started again at once must not hear this one answer its start-up probe).
    for (const sub of [...this.subs, ...(this.seat?.subs ?? []), ...this.claimSubs]) sub.unsubscribe();
    void this.nc?.close().catch(() => undefined);
    // The lock file stays, as after a crash; a node started on the directory takes it over.
    this.lock.abandon();
  }

  /** Resolves once the host threads a kill() ended have exited. */
  private threadsGone: Promise<void> = Promise.resolve();

  // ---------------------------------------------------------------------------------------------
  // Heartbeats and reconciliation with the controller's catalog
  // ---------------------------------------------------------------------------------------------

  /**
   * One heartbeat to the controller. When the catalog epoch it answers is not the one this node
   * reconciled with, and no reconciliation runs or backs off, it starts one (`reconciling`),
   * which runs on while heartbeats keep their period: the controller tells live nodes by them.
   * Never rejects.
   */
  private async heartbeat(): Promise<void> {
    const nc = this.nc!;
    // Shorter than a request's: one sent to a controller that died just then is never answered,
    // and no heartbeat goes out while it waits, so the next controller would not hear of this
    // node for that long.
    const timeout = Math.min(this.opts.requestTimeoutMs ?? 10_000, Math.max(HEARTBEAT_TIMEOUT_MS_MIN, 2 * (this.opts.heartbeatMs ?? 1000)));
    let epoch: number;
    let catalog: string | undefined;
    let controllers: string[] | undefined;
    this.checkReplicaRoles();
    const now = Date.now();
    // The longest down first: those the controller replaces first once past its wait.
    const down = [...this.replicasDown.values()]
      .sort((a, b) => a.sinceMs - b.sinceMs)
      .slice(0, DOWN_REPLICAS_PER_HEARTBEAT_MAX)
      .map((d) => ({ volumeId: d.volumeId, shard: d.shard, forMs: Math.max(0, now - d.sinceMs) }));
    try {
      const body = {
        nodeId: this.nodeId,
        hosts: this.hosts,
        ...(this.opts.zone === undefined ? {} : { zone: this.opts.zone }),
        ...(down.length > 0 ? { down } : {}),
        ...(this.leadingCount > 0 ? { leading: this.leadingCount } : {}),
      };
      // A controller seated while the answer is awaited (`seated`) is sent the heartbeat at once:
      // the one before may have died with it, and the next one places nothing until it has heard
      // from the nodes (`heardFromNodes`). At most HEARTBEAT_SENDS_MAX sends.
      let r: Msg | undefined;
      for (let sent = 1; r === undefined; sent++) {
        const request = nc.request(controllerSubject(this.cluster, 'heartbeat'), encode(body), { timeout });
        const answer = sent < HEARTBEAT_SENDS_MAX ? await this.controllerSeated.race(request) : await request;
        if (answer !== NOTICED) r = answer;
      }
      ({ epoch, catalog, controllers } = validateHeartbeatReply(throwIfError(decode(r.data))));
      this.heartbeatFailures.succeeded();
    } catch (e) {
      // A NATS error ("503" when no controller runs) as the protocol error it means.
      // With a replicated controller, nobody answers until the controller nodes have elected the
      // catalog shard's leader: not a failure while the cluster starts.
      const starting = this.opts.controllers !== undefined && Date.now() - this.startedAt < CONTROLLER_ELECTION_GRACE_MS;
      if (!this.stopped && !starting) this.heartbeatFailures.failed(fromNatsError(e, controllerSubject(this.cluster, 'heartbeat'), timeout));
      return;
    }
    // The same epoch of another catalog (one created again after its controller lost its data,
    // whose epochs start over) is a catalog this node has not reconciled with.
    // A controller that names the controller nodes otherwise than this node holds itself: the
    // assignments say for sure (`followControllers`).
    const controllersDiffer = controllers !== undefined && this.opts.controllers !== undefined && controllers.includes(this.nodeId) !== this.catalogMember;
    if ((epoch === this.reconciledEpoch && catalog === this.reconciledCatalog && !controllersDiffer) || this.reconciling !== undefined || Date.now() < this.reconcileNotBeforeMs) return;
    this.reconciling = this.reconcileWithCatalog(epoch, catalog).finally(() => (this.reconciling = undefined));
  }

  /**
   * Starts a check of this node's replicas (HostPool.replicaRoles, each host within
   * HOST_STATUS_TIMEOUT_MS) unless one runs or one ended less than ROLES_CHECK_MS ago; its
   * outcome updates `replicasDown` (the replicas this node holds for the catalog only) and
   * `leadingCount`, which the next heartbeat reports. It runs beside the heartbeats, never
   * holding one up.
   */
  private checkReplicaRoles(): void {
    if (this.rolesCheck !== undefined || this.pool === undefined || Date.now() - this.rolesCheckedMs < ROLES_CHECK_MS) return;
    this.rolesCheck = this.pool
      .replicaRoles({ timeoutMs: HOST_STATUS_TIMEOUT_MS })
      .then(({ down, leading }) => {
        const now = Date.now();
        this.rolesCheckedMs = now;
        // The catalog shard's leader runs the controller: not a shard a rebalance hands over.
        this.leadingCount = leading.filter((l) => l.volumeId !== CATALOG_VOLUME_ID).length;
        const held = new Set(this.nodeMeta.shards.map(shardId));
        const keys = new Set<string>();
        for (const d of down) {
          const key = shardId(d);
          if (!held.has(key)) continue;
          keys.add(key);
          if (!this.replicasDown.has(key)) this.replicasDown.set(key, { volumeId: d.volumeId, shard: d.shard, sinceMs: now });
        }
        for (const key of [...this.replicasDown.keys()]) if (!keys.has(key)) this.replicasDown.delete(key);
      })
      .catch((e: unknown) => this.log.debug("could not check the replicas' roles", { err: e }))
      .finally(() => (this.rolesCheck = undefined));
  }

  /**
   * Fetches this node's assignments and reconciles with them. Never rejects: a failure is
   * logged (FailureLog) and the next try waits a back-off, RECONCILE_BACKOFF_MS_MIN doubling to
   * RECONCILE_BACKOFF_MS_MAX.
   */
  private async reconcileWithCatalog(epoch: number, catalog: string | undefined): Promise<void> {
    try {
      const seq = { opens: this.openSeq, destroys: this.destroySeq };
      const a = await this.fetchAssignments();
      // A replicated catalog's epochs only grow: assignments of an older epoch of the catalog this
      // node reconciled with come from a controller that was deposed and has not noticed yet. They
      // are not acted on (they could have this node destroy a replica a later change gave it).
      if (this.opts.controllers !== undefined && a.catalog !== undefined && a.catalog === this.reconciledCatalog && a.epoch < this.reconciledEpoch) {
        throw new ProtocolError('unavailable', `the controller answered catalog epoch ${a.epoch}, older than epoch ${this.reconciledEpoch} this node reconciled with (a controller deposed a moment ago); asked again`);
      }
      await this.reconcile(a, seq);
      if (a.controllers !== undefined) await this.followControllers(a.controllers);
      // Of the catalog the heartbeat named: if another answered the assignments meanwhile, the
      // next heartbeat differs again, and the node reconciles once more.
      this.reconciledCatalog = catalog;
      this.reconcileBackoffMs = 0;
      this.reconcileFailures.succeeded();
    } catch (e) {
      if (this.stopped) return;
      this.reconcileBackoffMs = Math.min(RECONCILE_BACKOFF_MS_MAX, Math.max(RECONCILE_BACKOFF_MS_MIN, this.reconcileBackoffMs * 2));
      this.reconcileNotBeforeMs = Date.now() + this.reconcileBackoffMs;
      this.reconcileFailures.failed(e, { epoch, retryInMs: this.reconcileBackoffMs });
    }
  }

  /**
   * This node's assignments, page by page, all of one catalog epoch: a catalog that changed
   * between two pages is read again from the first (at most ASSIGNMENTS_FETCH_TRIES times). The
   * tombstones the first page did not hold come in pages of their own (`tombstonesFrom`).
   */
  private async fetchAssignments(): Promise<AssignmentsReply> {
    const timeout = this.opts.requestTimeoutMs ?? 10_000;
    const subject = controllerSubject(this.cluster, 'assignments');
    const fetchPage = async (ask: { from?: number; tombstonesFrom?: number } = {}): Promise<AssignmentsReply> => {
      // A NATS error ("503": no controller serves now) as the protocol error it means.
      const reply = await this.nc!.request(subject, encode({ nodeId: this.nodeId, ...ask }), { timeout }).catch((e: unknown) => Promise.reject(fromNatsError(e, subject, timeout)));
      return validateAssignmentsReply(throwIfError(decode(reply.data)));
    };
    for (let attempt = 0; attempt < ASSIGNMENTS_FETCH_TRIES; attempt++) {
      const first = await fetchPage();
      const shards = [...first.shards];
      const tombstones = [...first.tombstones];
      let next = first.next;
      let changed = false;
      let tombstonesNext = first.tombstonesNext;
      while (tombstonesNext !== undefined && !changed) {
        if (tombstonesNext !== tombstones.length || tombstones.length >= ASSIGNMENTS_TOMBSTONES_MAX) {
          throw new ProtocolError('internal', `assignments: tombstones at ${tombstonesNext} after ${tombstones.length}`, { tombstonesNext });
        }
        const page = await fetchPage({ tombstonesFrom: tombstonesNext });
        if (page.tombstones.length === 0) {
          throw new ProtocolError('internal', `assignments: an empty page of tombstones at ${tombstonesNext}`, { tombstonesNext });
        }
        changed = page.epoch !== first.epoch;
        tombstones.push(...page.tombstones);
        tombstonesNext = page.tombstonesNext;
      }
      while (next !== undefined && !changed) {
        if (next !== shards.length || shards.length >= ASSIGNMENTS_PER_NODE_MAX) {
          throw new ProtocolError('internal', `assignments: page at ${next} after ${shards.length} assignments`, { next });
        }
        const page = await fetchPage({ from: next });
        if (page.shards.length === 0 && page.next !== undefined) {
          throw new ProtocolError('internal', `assignments: an empty page at ${next} names a next one`, { next });
        }
        changed = page.epoch !== first.epoch;
        shards.push(...page.shards);
        next = page.next;
      }
      if (!changed) {
        return {
          epoch: first.epoch,
          shards,
          tombstones,
          ...(first.catalog === undefined ? {} : { catalog: first.catalog }),
          ...(first.issuedBelow === undefined ? {} : { issuedBelow: first.issuedBelow }),
          ...(first.controllers === undefined ? {} : { controllers: first.controllers }),
        };
      }
    }
    throw new ProtocolError('unavailable', `the catalog changed while its assignments were read, ${ASSIGNMENTS_FETCH_TRIES} times`);
  }

  /**
   * Deleted volumes first, then the shards to open, then leftovers: each part, and each shard,
   * goes on when another fails (a host that is down), so that one shard that cannot be opened
   * does not keep a deleted volume's replica serving writes. The first failure is thrown at the
   * end (the reconciliation is tried again after a back-off).
   */
  private async reconcile(a: AssignmentsReply, seq = { opens: this.openSeq, destroys: this.destroySeq }): Promise<void> {
    const failures: unknown[] = [];
    const dead = new Set(a.tombstones);
    for (const s of this.nodeMeta.shards.filter((x) => dead.has(x.volumeId))) {
      await this.destroyShards(s.volumeId, [s.shard]).catch((e: unknown) => failures.push(e));
    }
    const held = a.shards.filter((s) => s.removed !== true && !dead.has(s.volumeId));
    const heldIds = new Set(held.map(shardId));
    // Replicas a finished move took off this node (never one the catalog still places here, as a
    // member or as the node a move adds): destroyed. The catalog names them only once the
    // shard's leader has committed the set without this node.
    const movedOff = new Set(a.shards.filter((s) => s.removed === true && !heldIds.has(shardId(s)) && !dead.has(s.volumeId)).map(shardId));
    for (const s of this.nodeMeta.shards.filter((x) => movedOff.has(shardId(x)))) {
      await this.destroyShards(s.volumeId, [s.shard], seq.opens)
        .then((n) => (n > 0 ? this.log.info('destroyed a replica a move took off this node', { volume: s.volumeId, shard: s.shard }) : undefined))
        .catch((e: unknown) => failures.push(e));
    }
    // Replicas of volumes this catalog issued the ids of that it places here no more, and no
    // tombstone or moved-off record named (those are bounded: a node down while more volumes
    // were deleted, or more moves made, than they keep would hold them for ever). A volume is in
    // the catalog before any replica of it is opened, and leaves it only once deleted (or its
    // create undone); a replica leaves a shard's placement only once its leader committed a set
    // without it. Never one of another catalog's ids (a catalog created again: `strata catalog
    // recover` adds those), nor one the catalog has not issued yet (a catalog older than the
    // node's records, restored from a copy, must not destroy newer volumes).
    if (a.catalog !== undefined && a.issuedBelow !== undefined) {
      const tag = a.catalog;
      const below = a.issuedBelow;
      const gone = this.nodeMeta.shards.filter((x) => {
        const n = idNumber(x.volumeId);
        return !heldIds.has(shardId(x)) && !dead.has(x.volumeId) && !movedOff.has(shardId(x)) && idTag(x.volumeId) === tag && n !== undefined && n < below;
      });
      for (const x of gone) {
        await this.destroyShards(x.volumeId, [x.shard], seq.opens)
          .then((n) => (n > 0 ? this.log.info('destroyed a replica the catalog no longer places on this node', { volume: x.volumeId, shard: x.shard }) : undefined))
          .catch((e: unknown) => failures.push(e));
      }
    }
    const have = new Set(this.nodeMeta.shards.map(shardId));
    const missing = held.filter((s) => !have.has(shardId(s)));
    // Opened as replicas that existed (ShardSpec.existing): one that finds no storage lost it.
    // The catalog records a volume just before the create's opens, so a reconciliation between
    // the two may open a new replica first: it then counts as lost until its peers answer that
    // none of them ever campaigned (Replica.probeTerms), and votes from then on. A create whose
    // controller died before every node opened its replicas (a peer that never answers) is
    // undone by the next one (`undoUnplaced`, `undoAbandoned`), not left to this.
    const existing = missing.filter((s) => s.priorMembers === undefined);
    if (existing.length > 0) await this.openShards(existing, true, seq.destroys).catch((e: unknown) => failures.push(e));
    // The replica a move adds to this node is new (it never held the shard, so it cannot have
    // voted or acknowledged anything): opened as such, under the move's joint configuration.
    const joining = missing.filter((s) => s.priorMembers !== undefined);
    if (joining.length > 0) await this.openShards(joining, false, seq.destroys).catch((e: unknown) => failures.push(e));
    // Records whose members a finished move changed: what a restart opens and a lost catalog is
    // recovered from; and those of a volume whose create the catalog has recorded answered since
    // (`placing` taken off: `localVolumeInfo` describes it from then on), or not.
    const stale = held.filter((s) => {
      const rec = this.nodeMeta.shards.find((x) => x.volumeId === s.volumeId && x.shard === s.shard);
      return rec !== undefined && (!sameMembers(rec, s) || rec.pageCount < s.pageCount || (rec.placing === true) !== (s.placing === true));
    });
    if (stale.length > 0) await this.updateRecords(stale).catch((e: unknown) => failures.push(e));
    // Replicas of deleted volumes still open on a host (their destroy failed half-way), and files
    // this node forgot but did not destroy (a crash between the two): of deleted volumes, and of
    // any volume this catalog issued that the node neither records nor is assigned (the same rule
    // as for the records above; never a shard open on its host, and with `below` as of these
    // assignments, never one of a volume created since they were read).
    const forgotten = a.catalog !== undefined && a.issuedBelow !== undefined
      ? { tag: a.catalog, below: a.issuedBelow, keep: [...new Set([...heldIds, ...this.nodeMeta.shards.map(shardId)])] }
      : undefined;
    if (dead.size > 0 || forgotten !== undefined) {
      const { destroyed, hostsFailed } = await this.pool!.destroyLeftovers([...dead], forgotten);
      if (destroyed.length > 0) this.log.info('destroyed leftover replica files: of deleted volumes, or forgotten by this node', { shards: destroyed });
      // A host down or stuck says so elsewhere; its leftovers go at a later reconciliation, so
      // this one does not count as done: the epoch reconciled would not come back to them (a
      // host that is down when its replica's destroy comes, and back later, kept its files).
      // (Forgotten files alone do not hold the epoch back: the next reconciliation looks again.)
      if (hostsFailed > 0 && dead.size > 0) failures.push(new ProtocolError('unavailable', `leftover files of deleted volumes not checked on ${hostsFailed} host(s); tried again later`, { hosts: hostsFailed }));
    }
    if (failures.length > 0) throw failures[0];
    this.reconciledEpoch = a.epoch;
  }

  /**
   * Opens each shard (a failure does not stop the others) and records durably the ones opened,
   * also when another failed: a create that failed part-way destroys what this node records,
   * so nothing it opened stays open unknown. Throws the first failure. Resolves with the new
   * replicas of branches that could not copy their parent's pages here (ShardOpened).
   */
  private openShards(list: ShardAssignment[], existing = false, unlessDestroyedAfter?: number): Promise<NotCopied[]> {
    return this.shardOp(() => {
      // A reconciliation's opens: not of a shard destroyed since it read the catalog (a delete
      // that came meanwhile; the reconciliation of its catalog comes next).
      const open = unlessDestroyedAfter === undefined ? list : list.filter((a) => (this.destroyedAt.get(shardId(a)) ?? 0) <= unlessDestroyedAfter);
      return this.openShardsNow(open, existing);
    });
  }

  /** `existing`: the shards existed on this node before (ShardSpec.existing); not for a create's open. */
  private async openShardsNow(list: ShardAssignment[], existing: boolean): Promise<NotCopied[]> {
    const recorded = new Map(this.nodeMeta.shards.map((r) => [shardId(r), r]));
    const known = new Set(recorded.keys());
    const added: ShardAssignment[] = [];
    // Shards recorded already whose mark of a create not answered the open changes (ShardAssignment.placing).
    const marked = new Map<string, boolean>();
    const notCopied: NotCopied[] = [];
    let failure: { error: unknown } | undefined;
    for (const placed of list) {
      // A shard this node records already is opened where its record (its files) is, whatever
      // host the catalog names: a move back to this node before it closed the replica a move
      // took away gives the catalog another host for it. Opened on that host too, two replicas
      // would answer for this node, each with its own log and votes.
      const host = recorded.get(shardId(placed))?.hostId;
      const a = host === undefined || host === placed.hostId ? placed : { ...placed, hostId: host };
      try {
        if (a.hostId >= this.hosts) {
          throw new ProtocolError('bad_request', `shard ${shardId(a)} is placed on host ${a.hostId}, this node has ${this.hosts}`);
        }
        const opened = await this.pool!.openShard(a.hostId, existing ? { ...a, existing: true } : a);
        if (opened.notCopied !== undefined) {
          notCopied.push({ volumeId: a.volumeId, shard: a.shard, reason: opened.notCopied.reason.slice(0, NOT_COPIED_REASON_MAX), noSpace: opened.notCopied.noSpace });
        }
        this.openedAt.set(shardId(a), ++this.openSeq);
        const rec = recorded.get(shardId(a));
        if (rec !== undefined && (rec.placing === true) !== (a.placing === true)) marked.set(shardId(a), a.placing === true);
        if (!known.has(shardId(a))) {
          known.add(shardId(a));
          added.push(a);
        }
      } catch (e) {
        failure ??= { error: e };
      }
    }
    if (added.length > 0 || marked.size > 0) {
      const remark = (r: ShardAssignment): ShardAssignment => {
        const placing = marked.get(shardId(r));
        if (placing === undefined) return r;
        const { placing: _, ...rest } = r;
        return placing ? { ...rest, placing: true } : rest;
      };
      this.persist({ ...this.nodeMeta, shards: [...this.nodeMeta.shards.map(remark), ...added] });
    }
    if (failure !== undefined) throw failure.error;
    return notCopied;
  }

  /**
   * Takes the members (and, for a replica a move adds, the set it moves from) and the `placing`
   * mark of `list` into this node's records of those shards, durably, then into its hosts' specs
   * (what a restarted host reopens them with) where the members or the size changed. The files
   * stay where they are (the record's host).
   */
  private updateRecords(list: ShardAssignment[]): Promise<void> {
    return this.shardOp(async () => {
      const byId = new Map(list.map((a) => [shardId(a), a]));
      const reopen: ShardAssignment[] = [];
      const next = this.nodeMeta.shards.map((rec) => {
        const a = byId.get(shardId(rec));
        if (a === undefined) return rec;
        const { priorMembers: _, removed: __, placing: ___, ...base } = rec;
        // A volume grows and never shrinks: a catalog that has not recorded a resize yet (its
        // nodes take the size first) does not take the size back.
        const updated: ShardAssignment = {
          ...base,
          members: [...a.members],
          pageCount: Math.max(rec.pageCount, a.pageCount),
          ...(a.priorMembers !== undefined ? { priorMembers: [...a.priorMembers] } : {}),
          ...(a.placing === true ? { placing: true as const } : {}),
        };
        if (!sameMembers(rec, updated) || updated.pageCount !== rec.pageCount) reopen.push(updated);
        return updated;
      });
      this.persist({ ...this.nodeMeta, shards: next });
      await this.reopenOnHosts(reopen);
    });
  }

  /**
   * Gives each record's replica, open on its host, the record as it is now (its members, its
   * size): an open of a shard open already (HostPool.openShard, `existing`), which a restarted
   * host reopens it with too. A failure does not stop the others; the first is thrown.
   */
  private async reopenOnHosts(records: readonly ShardAssignment[]): Promise<void> {
    let failure: { error: unknown } | undefined;
    for (const rec of records) {
      await this.pool!.openShard(rec.hostId, { ...rec, existing: true }).catch((e: unknown) => (failure ??= { error: e }));
    }
    if (failure !== undefined) throw failure.error;
  }

  /**
   * Destroys this node's replicas of `shards` of a volume; with `unlessOpenedAfter`, not those
   * opened after that count of opens (`openSeq`). Resolves with how many it destroyed.
   */
  private destroyShards(volumeId: string, shards: number[], unlessOpenedAfter?: number): Promise<number> {
    return this.shardOp(() => {
      const keep = unlessOpenedAfter === undefined ? [] : shards.filter((s) => (this.openedAt.get(`${volumeId}.${s}`) ?? 0) > unlessOpenedAfter);
      return this.destroyShardsNow(volumeId, shards.filter((s) => !keep.includes(s)));
    });
  }

  /**
   * Runs a change of this node's shards (an open or a destroy of some) after those before it,
   * one at a time: a destroy that arrives while an open of the same shards runs (the controller
   * undoing a create whose open it stopped waiting for, a reconciliation with an older catalog)
   * would otherwise find them not yet recorded, destroy nothing, and the open would then record
   * and serve them; two opens of the same shards at once would record each twice.
   */
  private shardOp<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.shardOps.then(fn, fn);
    this.shardOps = run.catch(() => undefined);
    return run;
  }

  private async destroyShardsNow(volumeId: string, shards: number[]): Promise<number> {
    const drop = new Set(shards.map((s) => `${volumeId}.${s}`));
    // Also when this node does not hold it yet: an open a reconciliation decided before is not made.
    for (const id of drop) {
      this.destroyedAt.delete(id);
      this.destroyedAt.set(id, ++this.destroySeq);
      if (this.destroyedAt.size > DESTROYS_REMEMBERED_MAX) this.destroyedAt.delete(this.destroyedAt.keys().next().value!);
    }
    const victims = this.nodeMeta.shards.filter((a) => drop.has(shardId(a)));
    if (victims.length === 0) return 0;
    for (const a of victims) this.openedAt.delete(shardId(a));
    // Forget them durably first: a crash half-way leaves files that nothing references (the next
    // reconciliation destroys them: destroyLeftovers), never a catalog entry pointing at
    // destroyed files.
    this.persist({ ...this.nodeMeta, shards: this.nodeMeta.shards.filter((a) => !drop.has(shardId(a))) });
    for (const a of victims) await this.pool!.closeShard(a.hostId, a.volumeId, a.shard, true);
    return victims.length;
  }

  private persist(next: NodeMeta): void {
    this.meta.write(NODE_META, next);
    this.nodeMeta = next;
    this.recordsVersion++;
  }

  // ---------------------------------------------------------------------------------------------
  // Subjects served
  // ---------------------------------------------------------------------------------------------

  private subscribe(subject: string, handler: (body: unknown, msg: Msg) => Promise<unknown>, queue?: string, opts: { unbounded?: boolean; into?: Subscription[] } = {}): void {
    // Heartbeats are answered whatever else is in flight: refused, they would make live nodes
    // look dead to placement and status. (They are cheap, and the membership is bounded.)
    const inFlightMax = opts.unbounded === true ? Number.POSITIVE_INFINITY : (this.opts.controlInFlightMax ?? CONTROL_IN_FLIGHT_MAX);
    const sub = this.nc!.subscribe(subject, {
      ...(queue ? { queue } : {}),
      callback: (err, msg) => {
        if (err || !msg.reply) return;
        if (this.controlInFlight >= inFlightMax) {
          this.respondControl(msg, subject, errorReply(new ProtocolError('overloaded', `${inFlightMax} control requests in flight on node ${this.nodeId}, its limit; retry after a back-off`)));
          return;
        }
        let body: unknown;
        try {
          body = decode(msg.data, { itemsMax: CONTROL_REQUEST_ITEMS_MAX });
        } catch (e) {
          this.respondControl(msg, subject, errorReply(e));
          return;
        }
        this.controlInFlight++;
        handler(body, msg)
          .then(
            (reply) => this.respondControl(msg, subject, reply),
            (e: unknown) => {
              const pe = toProtocolError(e);
              if (pe.code === 'internal') this.log.error('control request failed', { subject, err: e });
              this.respondControl(msg, subject, errorReply(e));
            },
          )
          .finally(() => this.controlInFlight--);
      },
    });
    (opts.into ?? this.subs).push(sub);
  }

  /**
   * Answers a control request. A reply over the server's max_payload (a volume list of more
   * volumes than one message holds) is answered too_large; nothing here may throw, since a
   * rejection nobody handles would end the process.
   */
  private respondControl(msg: Msg, subject: string, reply: unknown): void {
    const { bytes } = encodeReplyWithin(this.nc, reply, (err) => this.log.error('control reply encoding failed', { subject, err }));
    try {
      msg.respond(bytes);
    } catch (e) {
      // The connection is closing: the requester's deadline answers for this reply.
      this.log.debug('control reply not sent', { subject, err: e });
    }
  }

  /**
   * Runs the catalog operation requested by `msg` after those before it, one at a time, in
   * arrival order. Beyond CONTROL_QUEUE_MAX queued or running it is refused `overloaded` at
   * once; when its Strata-Deadline (the API router forwards its caller's) passed while it waited,
   * it is not run but answered `timeout`: its requester has given up.
   */
  private serial<T>(msg: Msg, fn: (deadlineMs: number | undefined) => Promise<T>): Promise<T> {
    // At most DEADLINE_AHEAD_MS_MAX ahead, as on the API (a request can come here directly):
    // waits derived from a deadline years away overflow Node's timers, which then fire at once.
    const asked = parseDeadline(wellFormed(messageHeaders(msg)).get(HEADER_DEADLINE));
    return this.serialUntil(asked === undefined ? undefined : Math.min(asked, Date.now() + DEADLINE_AHEAD_MS_MAX), fn);
  }

  /** `serial` of an operation with deadline `deadlineMs` (undefined: none). */
  private async serialUntil<T>(deadlineMs: number | undefined, fn: (deadlineMs: number | undefined) => Promise<T>): Promise<T> {
    if (this.controlQueued >= CONTROL_QUEUE_MAX) {
      throw new ProtocolError('overloaded', `the controller has ${CONTROL_QUEUE_MAX} catalog operations queued, its limit; retry after a back-off`, { queueMax: CONTROL_QUEUE_MAX });
    }
    // Replicated: the seat it was queued under. Given up before its turn, the operation is not
    // run (its catalog write would be refused, or its outcome unknown): the next controller runs it.
    const seat = this.seat;
    const queuedAtMs = Date.now();
    const run = (): Promise<T> => {
      const nowMs = Date.now();
      if (seat !== undefined && (this.seat !== seat || this.seatReleasing)) {
        return Promise.reject(new ProtocolError('unavailable', `node '${this.nodeId}' gave up running the controller (or is giving it up) before the operation's turn; it was not run; retry`, { notController: true }));
      }
      if (deadlineMs !== undefined && nowMs >= deadlineMs) {
        return Promise.reject(new ProtocolError('timeout', `the deadline passed while the operation waited ${nowMs - queuedAtMs} ms in the controller's queue; it was not run`));
      }
      return fn(deadlineMs);
    };
    this.controlQueued++;
    const next = this.controllerChain.then(run, run).finally(() => {
      // A catalog write whose outcome on disk is unknown: said once, where it is found.
      // (Replicated, the node gives its seat up instead, and says so: `leaveSeat`.)
      const failure = this.seat === undefined ? this.controller?.storageFailure : undefined;
      if (failure !== undefined && !this.catalogFailureLogged) {
        this.catalogFailureLogged = true;
        this.log.error('the catalog\'s storage failed: it takes no change (create, delete, recover) until this node restarts', { err: failure });
      }
    });
    this.controllerChain = next.catch(() => undefined);
    try {
      return await next;
    } finally {
      this.controlQueued--;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // A replicated controller: the node whose replica leads the catalog shard runs it
  // ---------------------------------------------------------------------------------------------

  /**
   * Opens this node's replica of the catalog shard, on its first host. Always as a replica that
   * existed: a controller node cannot tell a first start from one after its data directory was
   * lost, and one that lost it must not vote as new (docs/replication.md, "A replica whose
   * storage was lost"); a new cluster's first election needs every controller node's answer.
   * A failure is logged, and the open tried again at the next check of the seat.
   */
  private async openCatalogReplica(): Promise<void> {
    try {
      await this.catalogSerial(async () => {
        if (!this.catalogMember || this.catalogReplicaOpen) return;
        await this.pool!.openShard(CATALOG_HOST_ID, {
          ...catalogAssignment(this.catalogMembers),
          existing: true,
          ...(this.opts.newCluster === true ? { newCluster: true } : {}),
          ...(this.dataDirCreated ? { dataDirCreated: true } : {}),
        });
        this.catalogReplicaOpen = true;
      });
    } catch (e) {
      this.seatFailures.failed(e, { step: 'opening its replica of the catalog shard' });
    }
  }

  /** Runs `fn` after the opens, joins and leaves of the catalog shard's replica before it. */
  private catalogSerial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.catalogChain.then(fn, fn);
    this.catalogChain = next.catch(() => undefined);
    return next;
  }

  /**
   * At the start of a node of a cluster with a replicated controller: a controller node opens
   * its replica of the catalog shard; a node a change took out destroys what a crash may have
   * left of its replica. Where its record and `controllers` disagree (a change of the controller
   * nodes made since the list was written), the record holds, and the node says so once.
   */
  private async startAsControllerNode(listed: readonly string[]): Promise<void> {
    const rec = this.nodeMeta.catalog;
    if (rec !== undefined && rec.member !== listed.includes(this.nodeId)) {
      this.log.warn(
        rec.member
          ? 'a change of the controller nodes made this node one, although --controllers does not list it: it holds a replica of the catalog shard (list the controller nodes in force on every node: strata controllers)'
          : 'a change of the controller nodes took this node out, although --controllers lists it: it holds no replica of the catalog shard (list the controller nodes in force on every node: strata controllers)',
        { controllers: rec.members, listed },
      );
    }
    if (this.catalogMember) {
      await this.openCatalogReplica();
    } else if (rec?.member === false) {
      await this.pool!.closeShard(CATALOG_HOST_ID, CATALOG_VOLUME_ID, 0, true).catch((e: unknown) =>
        this.log.warn('could not destroy what is left of its replica of the catalog shard; tried again at the next start', { err: e }),
      );
    }
  }

  private startSeatChecks(): void {
    if (this.seatTimer !== undefined || this.stopped) return;
    this.seatTimer = setInterval(() => {
      if (this.seatTaking || this.stopped) return;
      this.seatTaking = true;
      void this.checkSeat().finally(() => (this.seatTaking = false));
    }, SEAT_CHECK_MS);
    this.seatTimer.unref();
  }

  /**
   * Makes this node a controller node (`catalog.join` from a controller changing the set to
   * `members` from `prior`; or, without `prior`, a controller's assignments listing it while it
   * holds no replica): recorded durably first, then its replica of the catalog shard is opened,
   * new and joining the change (with `prior`) or as one whose storage was lost (without: it
   * may have held one, and acknowledged records with it). False when it is one already.
   */
  private joinCatalog(members: string[], prior: string[] | undefined): Promise<boolean> {
    return this.catalogSerial(async () => {
      if (this.stopped) throw new ProtocolError('unavailable', `node '${this.nodeId}' stops`);
      if (this.catalogMember) {
        if (prior !== undefined) this.catalogJoinedMs = Date.now();
        return false;
      }
      const left = this.nodeMeta.catalog?.member === false;
      this.persist({ ...this.nodeMeta, catalog: { member: true, members: [...members] } });
      this.catalogMember = true;
      this.catalogMembers = [...members];
      this.catalogJoinedMs = Date.now();
      // What a leave left (a crash between its record and its destroy) is no replica of this set,
      // nor is an older replica under a new one. (One found without such a record, of a node
      // that was a controller node by its --controllers, is opened as it is.)
      if (left || prior !== undefined) await this.pool!.closeShard(CATALOG_HOST_ID, CATALOG_VOLUME_ID, 0, true);
      // Before the open: an open that fails is tried again by the seat checks (as one that existed).
      this.startSeatChecks();
      await this.pool!.openShard(CATALOG_HOST_ID, { ...catalogAssignment(members), ...(prior !== undefined ? { priorMembers: [...prior] } : { existing: true }) });
      this.catalogReplicaOpen = true;
      this.log.info('is a controller node now: opened a replica of the catalog shard', { controllers: members, ...(prior !== undefined ? { prior } : { asLost: true }) });
      return true;
    });
  }

  /**
   * Takes this node out of the controller nodes (`catalog.leave` once a change that took it out
   * is committed; or a controller's assignments leaving it out): recorded durably first, then the
   * seat is given up and its replica of the catalog shard destroyed (a crash between the two
   * leaves a directory the next start destroys). False when it is not one.
   */
  private leaveCatalog(members: string[], why: string): Promise<boolean> {
    return this.catalogSerial(async () => {
      if (!this.catalogMember) return false;
      this.persist({ ...this.nodeMeta, catalog: { member: false, members: [...members] } });
      this.catalogMember = false;
      this.catalogMembers = [...members];
      if (this.seatTimer !== undefined) clearInterval(this.seatTimer);
      this.seatTimer = undefined;
      this.leaveSeat(`this node is no longer a controller node (${why})`);
      this.catalogReplicaOpen = false;
      await this.pool!.closeShard(CATALOG_HOST_ID, CATALOG_VOLUME_ID, 0, true);
      this.log.info('is no longer a controller node: destroyed its replica of the catalog shard', { controllers: members, why });
      return true;
    });
  }

  /** Whether a change of the set that this node's replica of the catalog shard has from its log (one a leader wrote) names this node. */
  private async catalogReplicaNamed(): Promise<boolean> {
    return (await this.catalogReplicaConfig())?.namedByLog === true;
  }

  /**
   * Acts on the controller nodes a controller's assignments name (AssignmentsReply.controllers,
   * from a controller known to lead the catalog shard, with no change under way): this node
   * leaves the catalog shard when left out (within CATALOG_JOIN_GRACE_MS of a join, only once
   * its replica's log holds a change naming it), and joins it, as a replica whose storage was
   * lost, when listed and holding none (its data directory was lost, or it was down when told).
   */
  private async followControllers(controllers: string[]): Promise<void> {
    if (this.opts.controllers === undefined) return;
    const listed = controllers.includes(this.nodeId);
    if (listed === this.catalogMember) return;
    if (!listed) {
      // Within its grace after a join, only once its replica's log holds a change naming it (the
      // change that adds it was made: it is taken out since).
      if (Date.now() - this.catalogJoinedMs <= CATALOG_JOIN_GRACE_MS && !(await this.catalogReplicaNamed())) return;
      await this.leaveCatalog(controllers, 'the controller nodes in force do not name it');
    } else {
      await this.joinCatalog(controllers, undefined);
    }
  }

  /**
   * Every SEAT_CHECK_MS: takes the controller's seat when this node's replica of the catalog shard
   * leads it (`takeSeat`), and gives it up when it no longer does, or leads in another term (the
   * seat is of one term: a controller whose writes name a term no longer led would be refused),
   * or when a write of the catalog failed (its outcome is unknown: the catalog is read again).
   */
  private async checkSeat(): Promise<void> {
    if (!this.catalogMember) return;
    if (!this.catalogReplicaOpen) return this.openCatalogReplica();
    if (this.seatReleasing) return;
    const term = await this.catalogTerm();
    if (this.stopped) return;
    const seat = this.seat;
    if (seat !== undefined) {
      const failure = this.controller?.storageFailure;
      if (term !== seat.term) this.leaveSeat(term === undefined ? 'its replica of the catalog shard no longer leads it' : `its replica of the catalog shard leads it in another term (${term})`);
      else if (failure !== undefined) this.leaveSeat(`a write of the catalog failed: ${failure}`);
      else return;
    }
    if (term === undefined) return;
    try {
      await this.takeSeat(term);
      this.seatFailures.succeeded();
    } catch (e) {
      this.seatFailures.failed(e, { term });
    }
  }

  /**
   * Runs the controller in `term`: the catalog shard's leader (this node's replica) is asked to
   * commit everything its log holds (a flush: also what a controller before wrote that had not
   * committed), the catalog is read, and the controller serves from it, writing every change
   * to the shard with `term` (CatalogShard). No catalog yet: an empty one, with a new tag.
   */
  private async takeSeat(term: number): Promise<void> {
    // A node started with --controller alone (while no controller ran, say) keeps a catalog of
    // its own: this node does not run a second one beside it.
    const alone = await this.nc!.request(controllerSubject(this.cluster, 'claim'), encode({}), { timeout: HOST_STATUS_TIMEOUT_MS }).then(
      (m) => m,
      () => undefined,
    );
    if (alone !== undefined) {
      let who = 'a subscriber that is not a Strata node';
      try {
        who = describeClaim(validateClaimReply(decode(alone.data)));
      } catch {
        // As said.
      }
      throw new ProtocolError('unavailable', `a controller node that keeps the catalog alone runs in cluster '${this.cluster}' (${who}): stop it; this node runs the controller once it is gone`);
    }
    // The write of the controller this node ran before, if one is under way, ends first: the
    // catalog shard takes writes of the term from either.
    await withTimeout(this.retiredCatalogWrites, CATALOG_IO_TIMEOUT_MS, () => new ProtocolError('unavailable', 'a catalog write of the controller this node ran before has not ended'));
    // The API router's client: every catalog request carries its own deadline.
    const shard = new CatalogShard(this.router!.client, { term, timeoutMs: CATALOG_IO_TIMEOUT_MS });
    await shard.flush();
    let state = await shard.load();
    // The catalog this node kept alone before the cluster had a replicated controller: written to
    // the empty shard, then set aside (never read again: a catalog read twice would issue ids
    // twice). Read only for an empty shard: one that cannot be read then stops the takeover, and
    // the error says which file.
    const hasLocal = new RealDisk(this.dataDir).exists(LOCAL_CATALOG_DIR);
    const local = state === undefined && hasLocal ? this.localCatalog() : undefined;
    if (local !== undefined) {
      await shard.write(local);
      state = local;
      this.log.info('wrote the catalog this node kept alone into the catalog shard', { term, epoch: local.epoch, volumes: local.volumes.length });
    }
    if (hasLocal && state !== undefined) this.setLocalCatalogAside();
    // Still leading in that term, and nobody took the seat meanwhile.
    const still = await this.catalogTerm();
    if (still !== term || this.stopped || this.seat !== undefined) return;
    this.controller = new Controller({
      replicated: { state, write: (next, encoded) => shard.write(next, encoded), bytesMax: CATALOG_BYTES_MAX },
      newCatalogTag: crypto.randomBytes(4).toString('hex'),
    });
    this.seat = { term, subs: [], sinceMs: Date.now() };
    this.serveController();
    this.startRepairs();
    this.nc!.publish(controllerSubject(this.cluster, 'seated'), encode({ node: this.nodeId, term }));
    this.log.info('runs the controller: its replica leads the catalog shard', { term, epoch: this.controller.epoch, volumes: this.controller.list().length, ...(state === undefined ? { catalog: 'new' } : {}) });
  }

  /**
   * The term this node's replica of the catalog shard leads in; undefined when it does not lead,
   * or its host does not answer (it leads nothing this node can act for). Keeps its set in force
   * (`catalogConfig`).
   */
  private async catalogTerm(): Promise<number | undefined> {
    const config = await this.catalogLeaderConfig();
    this.catalogConfig = config;
    return config?.term;
  }

  /** This node's replica of the catalog shard: its term, role and set in force (undefined: not open, or its host does not answer). */
  private catalogReplicaConfig(): Promise<ReplicaConfigState | undefined> {
    return this.pool!.replicaConfig(CATALOG_HOST_ID, CATALOG_VOLUME_ID, 0, { timeoutMs: HOST_STATUS_TIMEOUT_MS }).catch(() => undefined);
  }

  /** `catalogReplicaConfig` while it leads; undefined otherwise. */
  private async catalogLeaderConfig(): Promise<ReplicaConfigState | undefined> {
    const config = await this.catalogReplicaConfig();
    return config?.leading === true ? config : undefined;
  }

  /**
   * The controller nodes as this seat's replica has them, for the nodes (HeartbeatReply and
   * AssignmentsReply `controllers`): the set in force of the seat's term, none while it changes.
   */
  private controllersFor(config: ReplicaConfigState | undefined): { controllers?: string[] } {
    const seat = this.seat;
    if (seat === undefined || config === undefined || config.term !== seat.term || config.prior !== undefined || this.controllersChanging) return {};
    return { controllers: [...config.members] };
  }

  /** The catalog this node kept alone (`dataDir/controller`, as a controller node without `controllers`), if any. */
  private localCatalog(): CatalogState | undefined {
    return localCatalogStore(new RealDisk(this.dataDir)).read<CatalogState>(CATALOG);
  }

  /** Renames `dataDir/controller` away (`controller.imported`, then `.2`…), durably (a failure is a typed StorageError). */
  private setLocalCatalogAside(): void {
    const disk = new RealDisk(this.dataDir);
    let to = `${LOCAL_CATALOG_DIR}.imported`;
    for (let i = 2; disk.exists(to); i++) to = `${LOCAL_CATALOG_DIR}.imported.${i}`;
    disk.rename(LOCAL_CATALOG_DIR, to);
    disk.fsyncDir('');
    this.log.info('set the catalog this node kept alone aside: the catalog shard holds the catalog', { dir: path.join(this.dataDir, to) });
  }

  /**
   * Gives the seat up: the controller's subjects are no longer served here, its repairs stop, and
   * the catalog operations queued and not started are refused `notController` (`serial`). Said as
   * a warning, or (`planned`: a handover of the catalog shard) as information.
   */
  private leaveSeat(why: string, planned = false): void {
    const seat = this.seat;
    if (seat === undefined) return;
    this.seat = undefined;
    // What still holds this controller (a move finishing, a resize, a queued write) changes and
    // writes the catalog no more: the seat may be taken again in the same term, by a controller
    // of its own (takeSeat waits for the write under way).
    if (this.controller !== undefined) this.retiredCatalogWrites = this.controller.retire(`node '${this.nodeId}' gave up the seat of term ${seat.term}: ${why}`);
    this.controller = undefined;
    // Drained, not dropped: a request the server already routed here is still answered (that this
    // node no longer runs the controller, `notController`: sent again to the next one) instead of
    // vanishing, which would leave its requester waiting out its timeout.
    for (const sub of seat.subs) {
      void sub.drain().catch(() => {
        try {
          sub.unsubscribe();
        } catch {
          // The connection is closed: nothing is delivered any more.
        }
      });
    }
    if (this.repairTimer) clearInterval(this.repairTimer);
    this.repairTimer = undefined;
    this.log[planned ? 'info' : 'warn']('no longer runs the controller', { term: seat.term, why });
  }

  /**
   * Before this node's replica hands the catalog shard over (an operator's handover, a clean
   * stop): from now on every catalog operation not started is refused `notController` (`serial`;
   * a client sends it again, to the next controller), and the one it runs, with its catalog
   * writes, is waited for, at most SEAT_RELEASE_WAIT_MS. Those then find the catalog shard still
   * led here and are answered done, not refused by a leader handing over (an outcome unknown).
   * Then the seat is given up (`leaveSeat`). The seat is not taken again until `seatReleasing`
   * is cleared (the caller's, once the handover is done or refused). Never rejects.
   */
  private async releaseSeat(why: string): Promise<void> {
    const c = this.controller;
    if (this.seat === undefined || c === undefined) return;
    this.seatReleasing = true;
    const finished = this.controllerChain.then(() => c.settled()).catch(() => undefined);
    await withTimeout(finished, SEAT_RELEASE_WAIT_MS, () => new Error('still running')).catch(() => undefined);
    this.leaveSeat(why, true);
  }

  /**
   * Resolves once this node's replica of the catalog shard is known to lead it in `seat`'s term
   * now (Replica.confirmLeads: its lease, or a quorum round), within CONFIRM_SEAT_MS_MAX and
   * `deadlineMs`; otherwise `unavailable` (retryable: the next controller answers), and, when the
   * replica no longer leads that term, the seat is given up at once.
   */
  private async confirmSeat(seat: { term: number }, deadlineMs: number): Promise<void> {
    try {
      await this.pool!.confirmLeads(0, CATALOG_VOLUME_ID, 0, seat.term, Math.min(deadlineMs, Date.now() + CONFIRM_SEAT_MS_MAX));
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if ((code === 'not_leader' || code === 'closed') && this.seat === seat) this.leaveSeat(`its replica no longer leads the catalog shard in term ${seat.term}`);
      // Nothing was done (a read): a client asks again, and may reach the next controller.
      throw new ProtocolError('unavailable', `node '${this.nodeId}' could not confirm that it still runs the controller (${(e as Error).message}); retry`, { notController: true });
    }
  }

  /** Waits until `c`'s changes so far are durable; when a write failed, this node gives its seat up. */
  private async settle(c: Controller): Promise<void> {
    try {
      await c.settled();
    } catch (e) {
      if (this.controller === c) this.leaveSeat(`a write of the catalog failed: ${(e as Error).message}`);
      throw e;
    }
  }

  /**
   * A controller that just took its seat knows the nodes once they beat: waits until `ready`, or
   * MEMBERS_WARMUP_MS after the seat was taken, or `endMs`, whichever comes first.
   */
  private async membersWarm(endMs: number, ready: () => boolean): Promise<void> {
    const warmMs = Math.min(this.controllerSinceMs() + MEMBERS_WARMUP_MS, endMs);
    while (Date.now() < warmMs && !ready()) await new Promise((r) => setTimeout(r, 50));
  }

  /** The controller this node runs now, or `unavailable` (a replicated controller's seat was given up). */
  private seated(): Controller {
    const c = this.controller;
    if (c === undefined) throw new ProtocolError('unavailable', `node '${this.nodeId}' no longer runs the controller; retry`, { notController: true });
    return c;
  }

  /**
   * Membership is soft state, rebuilt from heartbeats: a controller that just took over (or
   * started) knows none of the nodes until they next beat. A placement waits, within
   * `deadlineMs`, until every node the catalog places replicas on, and at least `want` nodes,
   * have been heard from, or MEMBERS_WARMUP_MS after the start (a node placed on may be the one
   * whose death moved the controller); fewer than `want` nodes heard from, it waits on until
   * MEMBERS_WANTED_WAIT_MS after the start (a node's heartbeat may have been waiting for the dead
   * controller's answer). Then it places on the nodes it knows.
   */
  private async heardFromNodes(c: Controller, want: number, deadlineMs: number | undefined): Promise<void> {
    const sinceMs = this.controllerSinceMs();
    const endMs = deadlineMs ?? Number.POSITIVE_INFINITY;
    for (;;) {
      const now = Date.now();
      const live = new Set(c.liveNodes(now).map((m) => m.nodeId));
      const untilMs = Math.min(endMs, sinceMs + (live.size >= want ? MEMBERS_WARMUP_MS : MEMBERS_WANTED_WAIT_MS));
      if (now >= untilMs || this.stopped || (live.size >= want && [...c.placedNodes()].every((n) => live.has(n)))) return;
      await new Promise((r) => setTimeout(r, Math.min(50, untilMs - now)));
    }
  }

  /** Since when this node runs the controller: a node silent since then may be dead. */
  private controllerSinceMs(): number {
    return this.seat?.sinceMs ?? this.startedAt;
  }

  /** The controller's periodic check for replicas to replace, also with repairs off (the replicas of draining nodes are moved by the same check). */
  private startRepairs(): void {
    const repairAfterMs = this.opts.repairAfterMs ?? REPAIR_AFTER_MS_DEFAULT;
    if (this.repairTimer) clearInterval(this.repairTimer);
    this.repairTimer = setInterval(() => this.repairTick(), repairAfterMs > 0 ? Math.max(1, Math.min(REPAIR_CHECK_MS_MAX, repairAfterMs / 2)) : REPAIR_CHECK_MS_MAX);
    this.repairTimer.unref();
  }

  private serveController(): void {
    const c = this.controller!;
    const subj = (v: string): string => controllerSubject(this.cluster, v);
    // Replicated: the seat's subscriptions, each answer once its changes are durable. Not in a
    // queue group: a controller node that is frozen (SIGSTOP, a paused VM) keeps its connection,
    // and its subscriptions with it, while the next controller takes the seat; in a queue group
    // it took half of the catalog's requests (heartbeats too) and answered none. Every seat
    // takes each request, and the first answer is the requester's. A deposed controller that
    // has not noticed yet cannot act on one: its catalog writes name a term no longer led (the
    // catalog shard refuses them), and it answers a read only once it confirms its seat
    // (`confirmSeat`), which it cannot; its refusal (`notController`) is sent again.
    const seat = this.seat;
    // A read (`read`) is answered from memory only once this node's replica is known to lead the
    // catalog shard in the seat's term still: a deposed controller that has not noticed yet
    // would answer with a catalog that misses its successor's changes.
    const sub = (subject: string, handler: (body: unknown, msg: Msg) => Promise<unknown>, opts: { unbounded?: boolean; read?: boolean } = {}): void =>
      this.subscribe(
        subject,
        async (body, msg) => {
          // A request the seat's subscriptions still deliver once the seat is given up (they are
          // drained: `leaveSeat`) is refused, not run on this seat's controller. That one is no
          // longer the catalog's: its change would be written in a term no longer led (a leader
          // handing over refuses it, or the write waits until the node's connection closes and
          // the requester hears nothing), or, the seat taken again in the same term, beside the
          // next seat's controller, whose changes it would overwrite.
          if (seat !== undefined && this.seat !== seat) {
            throw new ProtocolError('unavailable', `node '${this.nodeId}' no longer runs the controller (it gave its seat of term ${seat.term} up); retry`, { notController: true });
          }
          const reply = await handler(body, msg);
          await this.settle(c);
          if (seat !== undefined && opts.read === true) await this.confirmSeat(seat, this.controlDeadline(msg));
          return reply;
        },
        undefined,
        { ...(opts.unbounded === true ? { unbounded: true } : {}), ...(seat === undefined ? {} : { into: seat.subs }) },
      );
    sub(
      subj('heartbeat'),
      async (body) => {
        const hb = validateHeartbeat(body);
        c.heartbeat(hb.nodeId, hb.hosts, Date.now(), hb.zone, hb);
        return { epoch: c.epoch, ...(c.tag === undefined ? {} : { catalog: c.tag }), ...this.controllersFor(this.catalogConfig) };
      },
      { unbounded: true },
    );
    sub(subj('assignments'), async (body) => {
      const { nodeId, from = 0, tombstonesFrom } = validateAssignmentsRequest(body);
      const a = c.assignments(nodeId);
      const bytesMax = this.controlReplyBytesMax();
      if (tombstonesFrom !== undefined) {
        // A page of tombstones alone: those the first page did not hold.
        const room = bytesMax - encode({ epoch: a.epoch, tombstones: [], shards: [], tombstonesNext: ASSIGNMENTS_TOMBSTONES_MAX }).length;
        const page = pageWithin(a.tombstones, tombstonesFrom, room);
        const after = tombstonesFrom + page.length;
        return { epoch: a.epoch, tombstones: page, shards: [], ...(after < a.tombstones.length ? { tombstonesNext: after } : {}) };
      }
      // With the first page (later ones would repeat them), as many as half of it holds: the
      // tombstones are kept by the thousand and a server's max_payload may be small (the rest
      // come in pages of their own, `tombstonesNext`).
      const tombstones = from === 0 ? pageWithin(a.tombstones, 0, Math.floor(bytesMax / 2)) : [];
      const tombstonesNext = tombstones.length < (from === 0 ? a.tombstones.length : 0) ? { tombstonesNext: tombstones.length } : {};
      // As many as the server's max_payload holds (a server with a small one takes more pages), at
      // most ASSIGNMENTS_PAGE_MAX, at least one (which, too large alone, is answered too_large).
      const room = bytesMax - encode({ epoch: a.epoch, tombstones, shards: [], next: ASSIGNMENTS_PER_NODE_MAX, ...tombstonesNext }).length;
      const candidates = a.shards.slice(from, from + ASSIGNMENTS_PAGE_MAX).map(({ volume, placement, hostId, role }) => this.assignmentOf(volume, placement.shard, hostId, role));
      const shards = pageWithin(candidates, 0, room);
      const next = from + shards.length;
      const issued = from === 0 ? { ...(c.tag === undefined ? {} : { catalog: c.tag }), issuedBelow: c.nextId, ...this.controllersFor(await this.catalogLeaderConfig()) } : {};
      return { epoch: a.epoch, tombstones, shards, ...(next < a.shards.length ? { next } : {}), ...tombstonesNext, ...issued };
    }, { read: true });
    sub(subj('members'), async () => ({ members: this.allMembers() }), { read: true });
    sub(subj('leaving'), async (body) => {
      const { nodeId } = validateLeaving(body);
      if (c.markGone(nodeId)) this.log.info('a node stops: nothing new is placed on it until it beats again', { stopping: nodeId });
      return {};
    });
    // One at a time with creates and deletes: none changes the catalog while it is rebuilt.
    sub(subj('catalog.recover'), (body, msg) => this.serial(msg, (deadlineMs) => this.recoverCatalog(c, validateCatalogRecoverRequest(body).apply === true, deadlineMs)));
    sub(subj('volume.create'), (body, msg) => this.serial(msg, (deadlineMs) => this.createVolume(c, validateVolumeCreateRequest(body), deadlineMs)));
    sub(subj('volume.branch'), (body, msg) => this.serial(msg, (deadlineMs) => this.branchVolume(c, validateVolumeBranchRequest(body), deadlineMs)));
    // The catalog's change in its queue; the nodes' destroys after it, out of the queue (a node
    // that died with a destroy in hand holds the requester up to its deadline, not the catalog).
    // One sent again (its `requestId` in the catalog: its answer was lost) is answered done
    // without deleting a volume of that name made since.
    sub(subj('volume.delete'), async (body, msg) => {
      const { name, requestId } = validateVolumeDeleteRequest(body);
      const { v, deadlineMs } = await this.serial(msg, async (deadlineMs) => ({ v: c.deletedBy(requestId, name) ? undefined : await this.deleteVolume(c, name, requestId), deadlineMs }));
      if (v !== undefined) await this.destroyDeleted(c, v, deadlineMs);
      return { deleted: true };
    });
    sub(subj('volume.resize'), (body, msg) => this.serial(msg, (deadlineMs) => this.resizeVolume(c, validateVolumeResizeRequest(body), deadlineMs)));
    sub(subj('volume.info'), async (body) => {
      const { name } = validateVolumeNameRequest(body);
      if (this.creating.has(name) || c.unplaced(name) !== undefined) throw notAnsweredYet(name);
      const v = c.get(name);
      // With where each shard's replicas are, and the moves under way.
      return { ...volumeInfo(v), replicaSets: replicaSets(v) };
    }, { read: true });
    // Not in the catalog's queue: a move waits for a node and a shard's leader, and its catalog
    // changes are made at once (one move per shard, recorded in the catalog).
    sub(subj('shard.move'), async (body, msg) => this.moveShard(validateShardMove(body), this.controlDeadline(msg)));
    // In the catalog's queue: a durable change of the catalog, answered at once; the moves
    // follow from the next check, made now.
    sub(subj('rebalance'), (body, msg) =>
      this.serial(msg, async () => {
        const req = validateRebalance(body);
        const was = c.rebalancing;
        // Nothing to move (and no move or handover running, nor one whose change of leaders the
        // nodes' heartbeats may not count yet): done at once.
        const now = Date.now();
        const lb = this.leaderBalance;
        const settling = this.moving.size > 0 || lb.running || now < lb.notBeforeMs;
        c.setRebalance(req.stop !== true && (settling || c.balancePlan(now) !== undefined || c.leaderBalancePlan(now, this.leaderPairsExhausted(c, now)) !== undefined));
        if (was !== c.rebalancing) this.log.info(c.rebalancing ? 'rebalance asked for' : 'rebalance called off', {});
        if (c.rebalancing) setImmediate(() => this.repairTick());
        const leaders = c.leaders(Date.now());
        const nodes = [...c.spread(Date.now())].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).slice(0, REBALANCE_NODES_MAX).map(([node, replicas]) => ({ node, replicas, leaders: leaders.get(node) ?? 0 }));
        return { rebalancing: c.rebalancing, nodes };
      }),
    );
    sub(subj('node.drain'), (body, msg) =>
      this.serial(msg, async (deadlineMs) => {
        const req = validateNodeDrain(body);
        // A node the cluster does not have (a typo) is refused, not marked and reported empty:
        // "empty" reads as safe to stop. A controller that just took its seat knows the nodes
        // once they beat (MEMBERS_WARMUP_MS). A mark is taken off any node; a node marked
        // already is answered (run again, a drain says how many replicas are left).
        if (req.undo !== true) {
          // Marked already (emptied and stopped since, say): answered as it stands, not refused.
          const known = (): boolean => c.knownNodes().some((m) => m.nodeId === req.node) || c.placedNodes().has(req.node) || c.draining().includes(req.node);
          await this.membersWarm(deadlineMs ?? Infinity, known);
          if (!known()) throw new ProtocolError('bad_request', `node: '${req.node}' is not a node of cluster '${this.cluster}' (the controller has not heard from it, and no replica is placed on it; strata status lists the nodes)`, { path: 'node', node: req.node });
        }
        const r = c.drain(req.node, req.undo === true);
        this.log.info(r.draining ? 'node marked draining: its replicas are moved off' : 'node no longer marked draining', { drained: req.node, replicas: r.replicas });
        if (r.draining) setImmediate(() => this.repairTick());
        return { node: req.node, ...r };
      }),
    );
    // In the catalog's queue: one change of the controller nodes at a time, none beside a catalog change.
    sub(subj('controllers'), (body, msg) => {
      const req = validateControllers(body);
      if (seat === undefined) throw new ProtocolError('bad_request', `cluster '${this.cluster}' has a single controller node ('${this.nodeId}', started with --controller): its controller nodes can not be changed; a cluster with a replicated controller is started with --controllers`);
      const done = this.serial(msg, () => this.changeControllers(c, seat, req, this.controlDeadline(msg)));
      if (req.members !== undefined) {
        void done.then(
          () => this.controllerChangesEnded.count('operator', 'done'),
          (e: unknown) => this.controllerChangesEnded.count('operator', toProtocolError(e).code),
        );
      }
      return done;
    });
    sub(subj('volume.list'), async (body) => {
      const req = validateVolumeListRequest(body);
      const listed = c.list().filter((v) => !this.creating.has(v.name) && v.placing !== true);
      if (req.after === undefined && req.limit === undefined) return { volumes: listed.map(volumeInfo) };
      // A page: in name order from after `after`, at most `limit`, and what fits one message.
      const sorted = listed.filter((v) => req.after === undefined || v.name > req.after).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map(volumeInfo);
      const room = this.controlReplyBytesMax() - encode({ volumes: [], next: 'n'.repeat(NAME_LENGTH_MAX), epoch: Number.MAX_SAFE_INTEGER }).length;
      const page = pageWithin(sorted, 0, room, req.limit ?? VOLUMES_PER_LIST_MAX);
      return { volumes: page, ...(page.length < sorted.length ? { next: page[page.length - 1]!.name } : {}), epoch: c.epoch };
    }, { read: true });
  }

  /**
   * The members, live or not, and the nodes the catalog places replicas on that this controller
   * has not heard from since it started (not live, last seen unknown): a node that died before a
   * restart of the controller is still shown, as dead.
   */
  private allMembers(): Array<{ nodeId: string; hosts?: number; lastSeenMs?: number; silentMs?: number; live: boolean; repairInMs?: number; draining?: true; replicasDown?: number; replicasDownRepairInMs?: number }> {
    const now = Date.now();
    const c = this.seated();
    const live = new Set(c.liveNodes(now).map((m) => m.nodeId));
    // For a node that is not live and holds replicas: when the controller replaces them (0: it
    // does so now), with repairs on.
    const afterMs = this.opts.repairAfterMs ?? REPAIR_AFTER_MS_DEFAULT;
    const placed = afterMs > 0 ? c.placedNodes() : new Set<string>();
    const repairIn = (nodeId: string, silentMs: number): { repairInMs?: number } =>
      live.has(nodeId) || !placed.has(nodeId) ? {} : { repairInMs: Math.max(0, afterMs - silentMs) };
    const draining = new Set(c.draining());
    const drain = (nodeId: string): { draining?: true } => (draining.has(nodeId) ? { draining: true } : {});
    // A live node's replicas it reports down: how many, and when the first is replaced (with repairs on).
    let soleCopies: Set<string> | undefined;
    const sole = (key: string): boolean => {
      soleCopies ??= new Set(c.list().flatMap((v) => v.placements.filter((p) => p.replicas.length === 1 && p.adding === undefined).map((p) => `${v.id}.${p.shard}`)));
      return soleCopies.has(key);
    };
    const down = ({ nodeId, down }: NodeMember): { replicasDown?: number; replicasDownRepairInMs?: number } =>
      live.has(nodeId) && down !== undefined ? downReplicasView(down, now, afterMs, sole) : {};
    const heard = c.knownNodes().map((member) => {
      // The map of replicas down is summed (`down`), not sent.
      const { down: _, ...m } = member;
      return { ...m, silentMs: Math.max(0, now - m.lastSeenMs), live: live.has(m.nodeId), ...repairIn(m.nodeId, now - m.lastSeenMs), ...drain(m.nodeId), ...down(member) };
    });
    const unheard = c.placedUnheard().map((nodeId) => ({ nodeId, live: false, ...repairIn(nodeId, now - this.controllerSinceMs()), ...drain(nodeId) }));
    return [...heard, ...unheard];
  }

  /** The controller's view for the metrics (StatsSnapshot.controller); undefined on a node that runs no controller. */
  private controllerStats(): ControllerSnapshot | undefined {
    const c = this.controller;
    if (c === undefined) return undefined;
    const now = Date.now();
    const members = this.allMembers();
    const live = members.filter((m) => m.live).length;
    let backingOff = 0;
    for (const b of this.repairBackoff.values()) if (b.notBeforeMs > now) backingOff++;
    return {
      nodesLive: live,
      nodesDead: members.length - live,
      shardsUnderReplicated: c.underReplicated(now),
      movesRunning: this.moving.size,
      repairsBackingOff: backingOff,
      nodesDraining: c.draining().length,
      rebalancing: c.rebalancing,
      ...(this.seat !== undefined ? { term: this.seat.term } : {}),
      moves: this.movesEnded.snapshot(),
      ...(this.seat !== undefined ? this.controllerNodesStats(c, now) : {}),
    };
  }

  /** ControllerSnapshot's controller nodes (live and dead, as the seat's replica has the set in force) and their changes. */
  private controllerNodesStats(c: Controller, now: number): Pick<ControllerSnapshot, 'controllerNodes' | 'controllerNodeChanges'> {
    const config = this.catalogConfig;
    const set = config === undefined ? [] : [...new Set([...config.members, ...(config.prior ?? [])])];
    const live = set.filter((n) => c.isLive(n, now)).length;
    return {
      ...(config === undefined ? {} : { controllerNodes: { live, dead: set.length - live } }),
      controllerNodeChanges: this.controllerChangesEnded.snapshot(),
    };
  }

  /**
   * The geometry of volume `name` as this node's assignments record it (it hosts a replica of
   * one of its shards), or undefined: not hosted here, two volumes of that name recorded (one
   * deleted and created again while this node missed it), which only the catalog can tell apart,
   * or a volume whose create had not been answered when the node last heard from the catalog
   * (ShardAssignment.placing: it may be undone, and nobody may write to it before it is answered).
   */
  localVolumeInfo(name: string): VolumeInfo | undefined {
    const mine = this.nodeMeta.shards.filter((a) => a.volumeName === name);
    const a = mine[0];
    if (a === undefined || mine.some((b) => b.volumeId !== a.volumeId || b.placing === true)) return undefined;
    return {
      name, id: a.volumeId, pageCount: a.pageCount, pageSize: a.pageSize, shards: a.shards, stripePages: a.stripePages,
      replicas: a.members.length as VolumeInfo['replicas'], createdAt: a.createdAt ?? 0,
    };
  }

  /**
   * A shard's assignment to a node: as a member, with the shard's replicas; as the node a move
   * adds (`adding`), with the set the move makes and the one it changes from; as a node a move
   * took off (`removed`), with the shard's replicas now.
   */
  private assignmentOf(v: VolumeRecord, shard: number, hostId: number, role: AssignmentRole = 'member'): ShardAssignment {
    const p = v.placements.find((x) => x.shard === shard)!;
    const members = p.replicas.map((r) => r.nodeId);
    const seed = seedOf(v, shard);
    const base = {
      volumeId: v.id, volumeName: v.name, shard, shards: v.shards, pageCount: v.pageCount,
      pageSize: v.pageSize, stripePages: v.stripePages, hostId, createdAt: v.createdAt,
      ...(seed !== undefined ? { seed } : {}),
      // Its create not answered yet: its nodes do not describe it from their records (`localVolumeInfo`).
      ...(v.placing === true ? { placing: true as const } : {}),
    };
    // The new set in the order the catalog gives it once the move is done (`to` where `from` was).
    if (role === 'adding') return { ...base, members: members.map((m) => (m === p.removing ? p.adding!.nodeId : m)), priorMembers: members };
    if (role === 'removed') return { ...base, members, removed: true };
    return { ...base, members };
  }

  /** A control request's deadline: its Strata-Deadline, at most DEADLINE_AHEAD_MS_MAX ahead; without one, the node's request timeout. */
  private controlDeadline(msg: Msg): number {
    const now = Date.now();
    const asked = parseDeadline(wellFormed(messageHeaders(msg)).get(HEADER_DEADLINE));
    return asked === undefined ? now + (this.opts.requestTimeoutMs ?? 10_000) : Math.min(asked, now + DEADLINE_AHEAD_MS_MAX);
  }

  /**
   * controller.shard.move: records the move in the catalog (Controller.beginMove), has node `to`
   * open the new replica, has the shard's leader change its set (`reconfigureShard`), and
   * records the move finished. A move of a shard this controller runs already is joined (the
   * same one) or refused (another, by beginMove). Every wait is within `deadlineMs`, less room
   * for the answer; a move cut short stays recorded, and asked again, goes on from there.
   */
  private async moveShard(req: ShardMoveRequest, deadlineMs: number, repair?: { withoutOpen: boolean; reason: RepairMove['reason'] }): Promise<ShardMoveReply> {
    const c = this.seated();
    if (this.creating.has(req.volume)) throw notAnsweredYet(req.volume);
    const v = c.get(req.volume);
    if (v.placing === true) throw notAnsweredYet(req.volume);
    const key = `${v.id}.${req.shard}`;
    const running = this.moving.get(key);
    const movesMax = this.opts.movesInFlightMax ?? MOVES_IN_FLIGHT_MAX;
    if (running === undefined && this.moving.size >= movesMax) {
      throw new ProtocolError('overloaded', `the controller runs ${movesMax} moves of replicas, its limit; retry after a back-off`, { movesMax });
    }
    // Validated (and, for a new move, recorded durably) before anything is asked of a node.
    const move = c.beginMove(req.volume, req.shard, req.from, req.to, Date.now());
    const waitMs = catalogWaitMs(deadlineMs - Date.now());
    const late = (): ProtocolError => new ProtocolError('timeout', `the move of shard ${req.shard} of volume '${req.volume}' from node '${req.from}' to node '${req.to}' did not finish within the deadline; it is recorded: run it again to finish it`, { from: req.from, to: req.to });
    if (running !== undefined) {
      if (move.resumed) return withTimeout(running, Math.max(1, waitMs), late);
      // Another move of the shard, recorded done while its run finishes (its catalog write), and
      // this one recorded since: it is run once that run has ended, not answered with its outcome.
      await withTimeout(running.catch(() => undefined), Math.max(1, waitMs), late);
      return this.moveShard(req, deadlineMs, repair);
    }
    if (!move.resumed) this.log.info(repair === undefined ? 'moving a replica' : repair.reason === 'draining' ? "moving a draining node's replica" : repair.reason === 'balance' ? 'moving a replica to even out the nodes' : repair.reason === 'failed' ? 'replacing a replica its node reports down' : "replacing a dead node's replica", { volume: v.id, shard: req.shard, from: req.from, to: req.to, hostId: move.to.hostId });
    if (repair?.withoutOpen === true) this.log.warn("finishing a move without the node it adds, which is dead: its replica is replaced next", { volume: v.id, shard: req.shard, from: req.from, to: req.to });
    const run = this.settle(c)
      .then(() => this.runMove(c, move, { endMs: Date.now() + Math.max(1, waitMs), withoutOpen: repair?.withoutOpen === true }))
      .finally(() => this.moving.delete(key));
    this.moving.set(key, run);
    // Counted once, when the run ends: requests that join it are not counted again.
    const trigger = repair !== undefined ? 'repair' : 'operator';
    const count = (outcome: string): void => this.movesEnded.count(trigger, outcome);
    run.then(
      () => count('done'),
      (e: unknown) => {
        const code = (e as { code?: unknown } | null | undefined)?.code;
        count(isErrorCode(code) ? code : 'error');
      },
    );
    return run;
  }

  /**
   * The controller's check for replicas to replace (docs/replication.md, "Replacing a dead
   * node's replicas", "Draining a node"): starts the moves `Controller.repairPlan` proposes, REPAIRS_IN_FLIGHT_MAX
   * at once at most, none of a shard another move of this controller runs or whose last repair
   * failed less than its back-off ago. Each is the move an operator would run, within
   * REPAIR_MOVE_DEADLINE_MS; one cut short stays recorded, and the next check resumes it.
   */
  private repairTick(): void {
    const afterMs = this.opts.repairAfterMs ?? REPAIR_AFTER_MS_DEFAULT;
    const c = this.controller;
    if (c === undefined || this.stopped || c.storageFailure !== undefined) return;
    this.undoAbandoned(c);
    const room = REPAIRS_IN_FLIGHT_MAX - this.repairing.size;
    if (room <= 0) return;
    const now = Date.now();
    const plan = c.repairPlan(now, {
      afterMs,
      sinceMs: this.controllerSinceMs(),
      max: room,
      skip: (volumeId, shard) => {
        const key = `${volumeId}.${shard}`;
        return this.moving.has(key) || this.repairing.has(key) || (this.repairBackoff.get(key)?.notBeforeMs ?? 0) > now;
      },
    });
    // A rebalance an operator asked for: one move at a time, once nothing else is to be done.
    if (plan.length === 0 && c.rebalancing && this.moving.size === 0) {
      const skip = (volumeId: string, shard: number): boolean => (this.repairBackoff.get(`${volumeId}.${shard}`)?.notBeforeMs ?? 0) > now;
      const m = c.balancePlan(now, skip);
      if (m !== undefined) plan.push(m);
      else if (c.balancePlan(now) === undefined && !this.balanceLeaders(now)) {
        // None left, not even one waiting for its back-off, and the leaders even: done.
        try {
          c.setRebalance(false);
          this.log.info('rebalanced the replicas and their leaders', { nodes: Object.fromEntries(c.spread(now)), leaders: Object.fromEntries(c.leaders(now)) });
        } catch (e) {
          this.log.warn('could not record the rebalance done', { err: e });
        }
      }
    }
    this.replaceControllerNode(c, now, afterMs);
    for (const m of plan) {
      if (this.creating.has(m.volume) || c.unplaced(m.volume) !== undefined) continue;
      const key = `${m.volumeId}.${m.shard}`;
      this.repairing.add(key);
      const fields = { volume: m.volumeId, shard: m.shard, from: m.from, to: m.to };
      void this.moveShard({ volume: m.volume, shard: m.shard, from: m.from, to: m.to }, Date.now() + REPAIR_MOVE_DEADLINE_MS, { withoutOpen: m.withoutOpen === true, reason: m.reason })
        .then(() => {
          // A set changed may change its shard's leader: the leaders are evened out once the
          // nodes' heartbeats count it.
          this.leaderBalance.notBeforeMs = Math.max(this.leaderBalance.notBeforeMs, Date.now() + LEADER_SETTLE_MS);
          if (this.repairBackoff.delete(key)) this.log.info("moved a dead or draining node's replica after failed tries", fields);
          // The next move of a drain or a rebalance starts now rather than at the next check.
          setImmediate(() => this.repairTick());
        })
        .catch((e: unknown) => {
          if (this.stopped) return;
          const prev = this.repairBackoff.get(key);
          const waitMs = prev === undefined ? REPAIR_BACKOFF_MS_MIN : Math.min(REPAIR_BACKOFF_MS_MAX, prev.waitMs * 2);
          const message = e instanceof Error ? e.message : String(e);
          // Once per shard and message: a repair that keeps failing the same way is not logged again.
          if (message !== prev?.message) this.log.warn("could not move a dead or draining node's replica; trying again after a back-off", { ...fields, retryInMs: waitMs, err: e });
          this.repairBackoff.delete(key);
          if (this.repairBackoff.size >= CATALOG_REPLICAS_MAX) this.repairBackoff.delete(this.repairBackoff.keys().next().value!);
          this.repairBackoff.set(key, { notBeforeMs: Date.now() + waitMs, waitMs, message });
        })
        .finally(() => this.repairing.delete(key));
    }
  }

  /**
   * The controller's check for a create nobody finished (docs/replication.md, "A create its
   * controller did not finish"): a volume still marked placing (Controller.unplaced) whose name
   * no create or branch of this controller is placing now (`creating`), once the controller knows
   * the live nodes (MEMBERS_WARMUP_MS after it took its seat), is undone as a create sent again
   * would undo it (`undoUnplaced`), one at a time, in the catalog's queue (`serialUntil`): never
   * beside a create or branch of its name. The mark is set only by a create or branch that this
   * queue runs, and taken off before it ends, so one found between two operations of the queue is
   * one whose controller stopped before its answer.
   */
  private undoAbandoned(c: Controller): void {
    if (this.undoingAbandoned || Date.now() < this.controllerSinceMs() + MEMBERS_WARMUP_MS) return;
    const found = c.unplacedVolumes().find((v) => !this.creating.has(v.name));
    if (found === undefined) return;
    this.undoingAbandoned = true;
    void this.serialUntil(undefined, async () => {
      // Checked again at its turn: a create of its name may have undone it, or made it anew, meanwhile.
      if (this.controller !== c || this.creating.has(found.name) || c.unplaced(found.name)?.id !== found.id) return;
      await this.undoUnplaced(c, found.name, undefined, 'abandoned');
    })
      .catch((e: unknown) => {
        if (!this.stopped) this.log.warn('could not undo a create nobody finished; tried again at the next check', { name: found.name, volume: found.id, err: e });
      })
      .finally(() => (this.undoingAbandoned = false));
  }

  /**
   * With a replicated controller: a controller node marked draining, or (repairs on) silent for
   * `afterMs`, as a dead node's replicas are replaced, is replaced by a live node that is not one
   * and is not draining: first one of a failure domain the other controller nodes are not in, then
   * the one of fewest replicas (`changeControllers`, in the catalog's queue). One at a time, and
   * after a failure not before a back-off (REPAIR_BACKOFF_MS_MIN doubling to REPAIR_BACKOFF_MS_MAX).
   * Without such a node, nothing is done (the controller nodes stay as they are).
   */
  private replaceControllerNode(c: Controller, now: number, afterMs: number): void {
    const seat = this.seat;
    const config = this.catalogConfig;
    const cr = this.controllerRepair;
    if (seat === undefined || cr.running || now < cr.notBeforeMs || config === undefined || config.term !== seat.term || config.prior !== undefined || this.controllersChanging) return;
    const known = new Map(c.knownNodes().map((m) => [m.nodeId, m]));
    const sinceMs = this.controllerSinceMs();
    const draining = new Set(c.draining());
    const silentMs = (n: string): number => now - (known.get(n)?.lastSeenMs ?? sinceMs);
    const out = config.members.find((n) => draining.has(n) || (afterMs > 0 && n !== this.nodeId && !c.isLive(n, now) && silentMs(n) >= afterMs));
    if (out === undefined) return;
    const zone = (n: string): string => known.get(n)?.zone ?? `node:${n}`;
    const zonesKept = new Set(config.members.filter((n) => n !== out).map(zone));
    const spread = c.spread(now);
    const into = c
      .liveNodes(now)
      .map((m) => m.nodeId)
      .filter((n) => !config.members.includes(n) && !draining.has(n))
      .sort((a, b) => Number(zonesKept.has(zone(a))) - Number(zonesKept.has(zone(b))) || (spread.get(a) ?? 0) - (spread.get(b) ?? 0) || (a < b ? -1 : a > b ? 1 : 0))[0];
    if (into === undefined) return;
    const target = config.members.map((n) => (n === out ? into : n));
    const fields = { out, into, why: draining.has(out) ? 'draining' : `silent for ${silentMs(out)} ms` };
    cr.running = true;
    const endMs = now + REPAIR_MOVE_DEADLINE_MS;
    void this.serialUntil(endMs, (deadlineMs) => this.changeControllers(c, seat, { members: target }, deadlineMs ?? endMs))
      .then((r) => {
        this.controllerChangesEnded.count('repair', 'done');
        cr.waitMs = 0;
        cr.message = undefined;
        this.log.info('replaced a controller node', { ...fields, controllers: r.members, term: r.term, lsn: r.lsn });
      })
      .catch((e: unknown) => {
        this.controllerChangesEnded.count('repair', toProtocolError(e).code);
        if (this.stopped) return;
        cr.waitMs = cr.waitMs === 0 ? REPAIR_BACKOFF_MS_MIN : Math.min(REPAIR_BACKOFF_MS_MAX, cr.waitMs * 2);
        cr.notBeforeMs = Date.now() + cr.waitMs;
        const message = e instanceof Error ? e.message : String(e);
        // Once per message: a replacement that keeps failing the same way is not logged again.
        if (message !== cr.message) this.log.warn('could not replace a controller node; trying again after a back-off', { ...fields, retryInMs: cr.waitMs, err: e });
        cr.message = message;
      })
      .finally(() => (cr.running = false));
  }

  /**
   * A rebalance's step for the leaders, once the replicas are even (docs/replication.md,
   * "Rebalancing"): asks the node that leads the most shards to hand one with a replica on the node
   * that leads the fewest over to it (`node.<id>.shard.handover`), one at a time, the next once
   * the nodes' heartbeats count the last (LEADER_SETTLE_MS). False when there is nothing left to
   * do (the leaders differ by at most one, or no pair has a shard to hand over).
   */
  private balanceLeaders(now: number): boolean {
    const c = this.controller!;
    const lb = this.leaderBalance;
    if (lb.running || now < lb.notBeforeMs) return true;
    const pair = c.leaderBalancePlan(now, this.leaderPairsExhausted(c, now));
    if (pair === undefined) return false;
    const basis = lb.exhaustedBasis;
    lb.running = true;
    const subject = nodeSubject(this.cluster, pair.from, 'shard.handover');
    const timeout = LEADER_HANDOVER_TIMEOUT_MS;
    this.nc!.request(subject, encode({ to: pair.to }), { timeout })
      .then((r) => {
        const done = validateShardHandoverReply(throwIfError(decode(r.data)));
        this.log.info('handed a shard\'s leadership over to even out the leaders', { from: pair.from, ...done });
        lb.lastError = '';
        lb.notBeforeMs = Date.now() + LEADER_SETTLE_MS;
      })
      .catch((e: unknown) => {
        const pe = fromNatsError(e, subject, timeout);
        if (pe.code === 'not_found') {
          // Found with the leaders and sets it was planned with (not a pair of ones since changed).
          if (lb.exhaustedBasis === basis) lb.exhausted.add(`${pair.from}>${pair.to}`);
        } else {
          // Once per message: a handover that keeps failing the same way is not logged again.
          if (pe.message !== lb.lastError) this.log.warn('could not hand a shard\'s leadership over to even out the leaders; trying again after a back-off', { from: pair.from, to: pair.to, err: pe });
          lb.lastError = pe.message;
          lb.notBeforeMs = Date.now() + REPAIR_BACKOFF_MS_MIN;
        }
      })
      .finally(() => {
        lb.running = false;
        setImmediate(() => this.repairTick());
      });
    return true;
  }

  /**
   * The pairs of a rebalance of leaders found with no shard to hand over (`leaderBalance.exhausted`)
   * while the leaders' counts and the shards' sets they were found with hold; none once these changed.
   */
  private leaderPairsExhausted(c: Controller, now: number): ReadonlySet<string> {
    const lb = this.leaderBalance;
    const basis = c.leaderBalanceBasis(now);
    if (basis !== lb.exhaustedBasis) {
      lb.exhausted.clear();
      lb.exhaustedBasis = basis;
    }
    return lb.exhausted;
  }

  /**
   * Runs a move `beginMove` recorded: opens the new replica on its node (but `withoutOpen`: that
   * node is dead, see RepairMove), has the shard's leader change its set, records it finished.
   */
  private async runMove(c: Controller, move: ShardMove, { endMs, withoutOpen }: { endMs: number; withoutOpen: boolean }): Promise<ShardMoveReply> {
    const { volume: v, shard, from } = move;
    const to = move.to.nodeId;
    const again = `; the move is recorded: run it again to finish it (strata shard move ${v.name} ${shard} --from ${from} --to ${to})`;
    if (!move.done && !withoutOpen) {
      // Now rather than at `to`'s next reconciliation (which opens it too, if this fails).
      const openMs = Math.min(this.opts.requestTimeoutMs ?? 10_000, endMs - Date.now());
      const subject = nodeSubject(this.cluster, to, 'shards.open');
      try {
        if (openMs <= 0) throw new ProtocolError('timeout', 'no time left');
        const r = await this.askNode(c, to, subject, encode({ shards: [this.assignmentOf(v, shard, move.to.hostId, 'adding')] }), openMs);
        throwIfError(decode(r.data));
      } catch (e) {
        const pe = fromNatsError(e, subject, Math.max(0, openMs));
        throw new ProtocolError(pe.code === 'timeout' ? 'timeout' : 'unavailable', `node '${to}' did not open the new replica: ${pe.message}${again}`, { node: to });
      }
    }
    let r: ShardReconfigureReply;
    try {
      r = await this.reconfigureShard(c, v.id, shard, move.priorMembers, move.members, endMs);
    } catch (e) {
      const pe = toProtocolError(e);
      throw new ProtocolError(pe.code, `${pe.message}${again}`, pe.details);
    }
    if (!sameSet(r.members, move.members)) {
      throw new ProtocolError('unavailable', `the leader of shard ${shard} of volume '${v.name}' (node '${r.node}') holds the set ${r.members.join(', ')}, not ${move.members.join(', ')}${again}`, { members: r.members });
    }
    const done = c.finishMove(v.name, shard, from, to);
    await this.settle(c);
    if (!move.done) this.log.info('moved a replica', { volume: v.id, shard, from, to, term: r.term, lsn: r.lsn, changed: r.changed });
    const members = done.placements.find((p) => p.shard === shard)!.replicas.map((x) => x.nodeId);
    return { volume: v.name, shard, members, term: r.term, lsn: r.lsn };
  }

  /**
   * Asks the leader of a shard to change its set to `members` (`node.<id>.shard.reconfigure`), in
   * rounds: each asks the nodes of both sets once at most, the node a `not_leader` names first
   * (the last one named, at the next round's start), and is followed by a pause
   * (MOVE_RETRY_MS_MIN doubling to MOVE_RETRY_MS_MAX): two nodes that name each other do not make
   * it ask in a loop. At most MOVE_LEADER_TRIES_MAX requests, each and all within `endMs`. A
   * refusal (`bad_request`) ends it at once. The nodes `c` counts live are asked first, and a node
   * found gone while asked (`askNode`: stopped, dead, or frozen) is waited for no longer: a move
   * off a frozen node, which takes requests and answers none, would otherwise spend its whole
   * time on that node's answer whenever it is asked first.
   */
  private async reconfigureShard(c: Controller, volumeId: string, shard: number, prior: readonly string[], members: readonly string[], endMs: number): Promise<ShardReconfigureReply> {
    const all = [...prior, ...members.filter((m) => !prior.includes(m))];
    const nowMs = Date.now();
    const nodes = [...all.filter((n) => c.isLive(n, nowMs)), ...all.filter((n) => !c.isLive(n, nowMs))];
    let hint: string | undefined;
    let last: ProtocolError | undefined;
    let tries = 0;
    for (let round = 0; tries < MOVE_LEADER_TRIES_MAX; round++) {
      const asked = new Set<string>();
      const queue = hint === undefined ? [...nodes] : [hint, ...nodes.filter((n) => n !== hint)];
      while (queue.length > 0) {
        const node = queue.shift()!;
        const leftMs = endMs - Date.now();
        if (leftMs <= 0 || tries >= MOVE_LEADER_TRIES_MAX) break;
        if (asked.has(node)) continue;
        asked.add(node);
        tries++;
        const subject = nodeSubject(this.cluster, node, 'shard.reconfigure');
        const headers = natsHeaders();
        headers.set(HEADER_DEADLINE, String(endMs));
        try {
          const reply = await this.askNode(c, node, subject, encode({ volumeId, shard, members: [...members] }), leftMs, headers);
          return validateShardReconfigureReply(throwIfError(decode(reply.data)));
        } catch (e) {
          last = fromNatsError(e, subject, leftMs);
          if (last.code === 'bad_request') throw last;
          const leader = last.code === 'not_leader' ? last.details?.['leader'] : undefined;
          if (typeof leader === 'string' && nodes.includes(leader)) {
            hint = leader;
            // Asked next, unless this round asked it already (it then waits for the next round).
            if (!asked.has(leader)) queue.unshift(leader);
          }
        }
      }
      const leftMs = endMs - Date.now();
      if (leftMs <= 0) break;
      await new Promise((res) => setTimeout(res, Math.min(leftMs, MOVE_RETRY_MS_MIN * 2 ** Math.min(round, 10), MOVE_RETRY_MS_MAX)));
    }
    const why = last === undefined ? '' : `: ${last.message}`;
    throw new ProtocolError(last?.code === 'timeout' || Date.now() >= endMs ? 'timeout' : 'unavailable', `no leader of shard ${shard} of volume ${volumeId} changed its set to ${members.join(', ')} in time${why}`, {
      ...(last === undefined ? {} : { last: last.code }),
    });
  }

  /**
   * `controller.controllers`: the controller nodes, changed to `req.members` (docs/replication.md,
   * "Changing the controller nodes"). Each node added must be live, and so must a majority of the
   * new set; each opens a new replica of the catalog shard (`catalog.join`) before this node's
   * replica, the catalog shard's leader, changes its set through a joint configuration. Once that
   * is committed, each node taken out is told to destroy its replica (`catalog.leave`); one that
   * cannot be told, and this node when taken out (its replica hands its leadership over), does so
   * once a controller's heartbeat answer leaves it out. Without `members`: the set in force.
   */
  private async changeControllers(c: Controller, seat: { term: number }, req: ControllersRequest, endMs: number): Promise<ControllersReply> {
    const config = await this.catalogLeaderConfig();
    if (config === undefined || config.term !== seat.term || this.seat !== seat) {
      throw new ProtocolError('unavailable', `node '${this.nodeId}' no longer leads the catalog shard in term ${seat.term}; retry`, { notController: true });
    }
    const prior = config.prior ?? config.members;
    const target = req.members ?? config.members;
    if (config.prior !== undefined && !sameSet(config.members, target)) {
      throw new ProtocolError('unavailable', `the controller nodes are changing from ${config.prior.join(',')} to ${config.members.join(',')}; retry once that is done`, { members: config.members, prior: config.prior });
    }
    const added = target.filter((n) => !prior.includes(n));
    const removed = prior.filter((n) => !target.includes(n));
    if (added.length > 0 || removed.length > 0) {
      await this.membersWarm(endMs, () => added.every((n) => c.isLive(n, Date.now())));
      const nowMs = Date.now();
      const known = new Map(this.allMembers().map((m) => [m.nodeId, m]));
      for (const n of added) {
        const m = known.get(n);
        if (m === undefined) throw new ProtocolError('bad_request', `members: node '${n}' is not a node of cluster '${this.cluster}' (the controller has not heard from it; strata status lists the nodes)`, { path: 'members', node: n });
        if (!c.isLive(n, nowMs)) throw new ProtocolError('unavailable', `node '${n}' is not live (no heartbeat for ${m.silentMs ?? '?'} ms): a node added to the controller nodes must be live; nothing was changed`, { node: n });
        // The controller would replace it again at once.
        if (m.draining === true) throw new ProtocolError('bad_request', `members: node '${n}' is draining (strata drain): a node added to the controller nodes must not be; take the mark off first (strata drain ${n} --undo)`, { path: 'members', node: n });
      }
      const live = target.filter((n) => c.isLive(n, nowMs));
      const majority = Math.floor(target.length / 2) + 1;
      if (live.length < majority) {
        throw new ProtocolError('unavailable', `${live.length} of the new controller nodes are live (${live.join(', ') || 'none'}), a majority of ${target.length} is ${majority}: the catalog shard would have no leader; nothing was changed`, { live });
      }
    }
    // The nodes added open their replicas first: the joint configuration needs them.
    const askMs = (): number => Math.min(this.opts.requestTimeoutMs ?? 10_000, endMs - Date.now());
    await Promise.all(
      added.map(async (n) => {
        const subject = nodeSubject(this.cluster, n, 'catalog.join');
        const ms = askMs();
        try {
          if (ms <= 0) throw new ProtocolError('timeout', 'no time left');
          validateCatalogMembershipReply(throwIfError(decode((await this.askNode(c, n, subject, encode({ members: target, prior }), ms)).data)));
        } catch (e) {
          const pe = fromNatsError(e, subject, Math.max(0, ms));
          throw new ProtocolError(pe.code === 'bad_request' || pe.code === 'timeout' ? pe.code : 'unavailable', `node '${n}' did not open a replica of the catalog shard: ${pe.message}; the controller nodes were not changed`, { node: n });
        }
      }),
    );
    let done: ReconfigureResult;
    this.controllersChanging = added.length > 0 || removed.length > 0;
    try {
      done = await this.pool!.reconfigure(CATALOG_HOST_ID, CATALOG_VOLUME_ID, 0, target, endMs);
    } catch (e) {
      const pe = toProtocolError(e);
      // Its replica no longer leads (deposed, or one the change takes out that lost contact with
      // the new set): the next controller is asked, which finishes the change (its leader does,
      // once elected) or answers it done.
      if (pe.code === 'not_leader') throw new ProtocolError('unavailable', `the catalog shard's leader on node '${this.nodeId}' stepped down during the change to ${target.join(',')} (${pe.message}); retry: the next controller finishes it`, { notController: true });
      throw new ProtocolError(pe.code, `the catalog shard's set was not changed to ${target.join(',')}: ${pe.message}${pe.code === 'timeout' ? ' (the change may still be made: strata controllers shows the set in force)' : ''}`, pe.details);
    } finally {
      this.controllersChanging = false;
    }
    if (done.changed) this.log.info('changed the controller nodes', { controllers: done.members, prior, term: done.term, lsn: done.lsn });
    const left: string[] = [];
    const leaving: string[] = [];
    await Promise.all(
      removed.map(async (n) => {
        const ms = Math.min(CATALOG_LEAVE_ASK_MS, endMs - Date.now());
        if (n === this.nodeId || ms <= 0) return leaving.push(n);
        const subject = nodeSubject(this.cluster, n, 'catalog.leave');
        try {
          validateCatalogMembershipReply(throwIfError(decode((await this.askNode(c, n, subject, encode({ members: done.members }), ms)).data)));
          left.push(n);
        } catch (e) {
          this.log.info('a node taken out of the controller nodes was not told: it destroys its replica of the catalog shard once a controller leaves it out', { taken: n, err: fromNatsError(e, subject, ms) });
          leaving.push(n);
        }
      }),
    );
    return { node: this.nodeId, members: done.members, prior, changed: done.changed, term: done.term, lsn: done.lsn, left: left.sort(), leaving: leaving.sort() };
  }

  private async createVolume(c: Controller, req: ReturnType<typeof validateVolumeCreateRequest>, deadlineMs: number | undefined): Promise<unknown> {
    const { requestId, ...spec } = req;
    await this.heardFromNodes(c, spec.replicas ?? 3, deadlineMs);
    await this.undoUnplaced(c, spec.name, deadlineMs);
    const again = this.madeAgain(c, requestId, spec.name, deadlineMs);
    if (again !== undefined) return again;
    try {
      return await this.placeNew(c, c.create(spec, Date.now(), requestId), deadlineMs);
    } catch (e) {
      // Placed on a node that no longer answers (stopped, dead or frozen since its last
      // heartbeat, and now not live: `placeVolume`): undone, and placed once more, on the live
      // nodes.
      const unreachable = e instanceof ProtocolError ? e.details?.['unreachable'] : undefined;
      if (!Array.isArray(unreachable) || (deadlineMs !== undefined && Date.now() >= deadlineMs)) throw e;
      this.log.info('a create placed replicas on nodes that do not answer: placed again on the live nodes', { name: spec.name, unreachable });
      return this.placeNew(c, c.create(spec, Date.now(), requestId), deadlineMs);
    }
  }

  /**
   * The volume called `name` whose create or branch was never answered (Controller.unplaced: a
   * controller stopped before every node had opened its replicas, or before it recorded that
   * they had), undone before a create or branch of that name: the request sent again then makes
   * it anew, on the live nodes, and a new request of that name finds the name free. Its replicas
   * are not opened again: a node that did not open its replica before the controller stopped
   * opens it at its reconciliation as one that existed (it cannot tell a replica never opened
   * from one whose storage was lost), and such a replica votes only once every peer answered its
   * term (docs/replication.md, "A replica whose storage was lost"), so that a shard with a
   * replica on a dead node would have no leader for as long as that node stays dead. Undone,
   * nothing is lost: the volume was neither answered, described nor listed, so nothing was
   * written to it (its nodes do not describe it either: ShardAssignment.placing). The destroys
   * of its replicas are not waited for (those of a node that does not answer come through the
   * tombstone). `abandoned`: no request asked for it, the controller's own check did
   * (`undoAbandoned`).
   */
  private async undoUnplaced(c: Controller, name: string, deadlineMs: number | undefined, why: 'asked' | 'abandoned' = 'asked'): Promise<void> {
    const v = c.unplaced(name);
    if (v === undefined) return;
    if (why === 'asked') this.log.info('a create that was never answered, whose replicas its controller may not have opened on every node: undone, and made anew', { name, volume: v.id, requestId: v.requestId });
    else this.log.info('a create that was never answered, whose replicas its controller may not have opened on every node, and that nobody sent again: undone', { name, volume: v.id, requestId: v.requestId });
    c.delete(v.name, undefined, { undo: true });
    // Durable before the destroys, and before the volume is made anew.
    await this.settle(c);
    this.router?.forget(name);
    void this.destroyDeleted(c, v, deadlineMs);
  }

  /**
   * A create or branch sent again, whose volume the catalog holds placed (Controller.madeBy; one
   * not placed was undone first, `undoUnplaced`): its replicas are opened again (a node opens
   * only what it lacks: a volume of a catalog written before Controller.placed existed may have
   * lost its controller before every node had), and it is answered with the volume, as the first one
   * would have been; an open that fails now does not undo it (`placeVolume`). Undefined when the
   * request is not one sent again.
   */
  private madeAgain(c: Controller, requestId: string | undefined, name: string, deadlineMs: number | undefined): Promise<unknown> | undefined {
    const v = c.madeBy(requestId, name);
    if (v === undefined) {
      // Its volume made and deleted since: a try queued behind the delete must not bring it back.
      if (c.deletedSince(requestId, name)) {
        return Promise.reject(new ProtocolError('not_found', `volume '${name}' was made by this request and deleted since: not made again (a new request, with another request id, makes it)`, { name }));
      }
      return undefined;
    }
    // Placed by this node's controller already (its nodes opened every replica): answered as it
    // was, at once. A client sends a create again to every node's API router, each of which
    // forwards it; placed again, the volume read as not yet created (`creating`) to a requester
    // that already had its answer.
    if (this.placedHere.has(v.id)) return this.settle(c).then(() => volumeInfo(v));
    this.log.info('a create sent again: its volume is in the catalog already, its replicas opened again', { name, volume: v.id, requestId });
    return this.placeNew(c, v, deadlineMs, true);
  }

  /** `placeVolume` of a volume just added to the catalog (or `again`: `madeAgain`), counted as being created meanwhile (`creating`). */
  private async placeNew(c: Controller, v: VolumeRecord, deadlineMs: number | undefined, again = false): Promise<unknown> {
    this.creating.add(v.name);
    try {
      return await this.placeVolume(c, v, deadlineMs, again);
    } finally {
      this.creating.delete(v.name);
    }
  }

  /**
   * controller.volume.branch: adds the branch to the catalog (Controller.branch: the parent's
   * geometry, its replicas' nodes and hosts) and has its nodes open its shards, each new replica
   * copying the parent's pages at the branch point on its device (DeviceHost.seedShard). The API
   * router fills in `lsns` when the requester left them out.
   */
  private async branchVolume(c: Controller, req: ReturnType<typeof validateVolumeBranchRequest>, deadlineMs: number | undefined): Promise<unknown> {
    if (req.lsns === undefined) throw new ProtocolError('bad_request', 'lsns: the controller needs the branch point of every shard (the API router fills them in)', { path: 'lsns' });
    // A parent whose create was not answered does not exist yet (`creating`, Controller.unplaced).
    if (this.creating.has(req.parent) || c.unplaced(req.parent) !== undefined) throw notAnsweredYet(req.parent, 'parent');
    await this.heardFromNodes(c, 1, deadlineMs);
    await this.undoUnplaced(c, req.name, deadlineMs);
    const again = this.madeAgain(c, req.requestId, req.name, deadlineMs);
    if (again !== undefined) return again;
    return this.placeNew(c, c.branch({ name: req.name, parent: req.parent, lsns: req.lsns, ...(req.requestId === undefined ? {} : { requestId: req.requestId }) }, Date.now()), deadlineMs);
  }

  /**
   * How long the controller waits for its requests to nodes on a catalog change: as long as the
   * requester waits, less room for the answer (catalogWaitMs); without a deadline, requestTimeoutMs.
   */
  private nodesWaitMs(deadlineMs: number | undefined): number {
    return deadlineMs === undefined ? (this.opts.requestTimeoutMs ?? 10_000) : Math.max(1, catalogWaitMs(deadlineMs - Date.now()));
  }

  /** The assignments of volume `v`'s replicas, by the node that holds them (what `shards.open` is sent each). */
  private assignmentsByNode(v: VolumeRecord): Map<string, ShardAssignment[]> {
    const byNode = new Map<string, ShardAssignment[]>();
    for (const p of v.placements) {
      for (const r of p.replicas) byNode.set(r.nodeId, [...(byNode.get(r.nodeId) ?? []), this.assignmentOf(v, p.shard, r.hostId)]);
    }
    return byNode;
  }

  /** The opens of a volume just added to the catalog on its nodes, or its undo when one fails. */
  private async placeVolume(c: Controller, v: VolumeRecord, deadlineMs: number | undefined, again = false): Promise<unknown> {
    // Durable before any node opens a replica of it.
    await this.settle(c);
    const byNode = this.assignmentsByNode(v);
    // The nodes' opens are waited for as long as the requester waits, less room for the answer
    // (opening a shard costs a few fsyncs: a node of many shards takes seconds); without a
    // deadline, requestTimeoutMs.
    const timeout = this.nodesWaitMs(deadlineMs);
    const waitEndMs = Date.now() + timeout;
    // Every node's answer is waited for before an undo: a destroy sent while another node's
    // open still runs could come first there, and leave that node's shard open.
    // A node found gone (no responders: stopped or dead since its last heartbeat; or silent:
    // frozen or cut off, `askNode`) is not live from now until its next heartbeat
    // (Controller.markGone): nothing more is placed on it.
    const unreachable = new Set<string>();
    const notCopied = new Map<string, NotCopied[]>();
    const opened = await Promise.allSettled(
      [...byNode].map(async ([nodeId, shards]) => {
        const subject = nodeSubject(this.cluster, nodeId, 'shards.open');
        try {
          const reply = decode((await this.askNode(c, nodeId, subject, encode({ shards }), timeout)).data);
          throwIfError(reply);
          notCopied.set(nodeId, validateShardsOpenReply(reply).notCopied ?? []);
        } catch (e) {
          const err = fromNatsError(e, subject, timeout);
          if ((err instanceof NoRespondersError || err instanceof NodeSilentError) && c.markGone(nodeId)) unreachable.add(nodeId);
          throw new ProtocolError(err.code, `node '${nodeId}': ${err.message}`, err.details);
        }
      }),
    );
    const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    // A branch none of whose replicas of a shard could copy the parent's pages would never serve
    // that shard (no replica has them to send the others): refused now, and undone.
    const refused = failed === undefined && !again ? branchNotCopied(v, notCopied) : undefined;
    if (failed !== undefined && again) {
      // A create sent again (`madeAgain`): the volume was made, and may be in use already (listed
      // since its first controller stopped). Not undone: the node opens its replicas when it next
      // reconciles with the catalog.
      this.log.info('a create sent again: a node did not open its replicas now; it opens them when it reconciles', { volume: v.id, err: failed.reason });
    } else if (failed !== undefined || refused !== undefined) {
      // Undo: the volume is answered as not created. Nodes that opened shards destroy them now
      // or, if unreachable, through the tombstone when they next reconcile. Their destroys are
      // waited for until the opens' wait would have ended, as a delete's are within its
      // deadline: a node that takes the request and does not answer (frozen) must not turn this
      // answer into a `timeout`, nor hold the catalog's queue for another requestTimeoutMs.
      c.delete(v.name, undefined, { undo: true });
      // Durable before the destroys: a delete whose write failed may not be kept.
      await this.settle(c);
      const waitMs = Math.max(0, waitEndMs - Date.now());
      await withTimeout(this.destroyEverywhere(c, v, unreachable), waitMs, () => new ProtocolError('timeout', `the nodes did not all answer the destroy within ${Math.round(waitMs)} ms`))
        .catch((e: unknown) => this.log.warn('shard destruction of a volume whose create was undone deferred to reconciliation', { volume: v.id, err: e }));
      if (refused !== undefined) throw refused;
      throw new ProtocolError('unavailable', `volume '${v.name}' could not be placed: ${(failed!.reason as Error).message}`, unreachable.size > 0 ? { unreachable: [...unreachable].sort() } : undefined);
    }
    if (failed === undefined) {
      // Recorded placed before it is answered: a controller that takes over later neither undoes
      // it nor hides it (`undoUnplaced`).
      if (v.placing === true) {
        const placed = c.placed(v.id);
        await this.settle(c);
        await this.tellPlaced(c, placed, Math.max(1, waitEndMs - Date.now()));
      }
      this.placedHere.add(v.id);
      if (this.placedHere.size > PLACED_HERE_MAX) this.placedHere.delete(this.placedHere.values().next().value!);
    }
    return volumeInfo(v);
  }

  /**
   * Has the nodes of volume `v`, just recorded placed (Controller.placed), take the mark off
   * their records of its shards (an open of what they hold already, without ShardAssignment.placing),
   * waiting for them up to `waitMs`, before its create is answered: a node then describes it from
   * its records when the controller cannot be reached (`localVolumeInfo`). A node that does not
   * answer keeps the mark until it reconciles with the catalog: it answers `unavailable` for the
   * volume meanwhile, never describes one that may be undone.
   */
  private async tellPlaced(c: Controller, v: VolumeRecord, waitMs: number): Promise<void> {
    const told = await Promise.allSettled(
      [...this.assignmentsByNode(v)].map(async ([nodeId, shards]) => {
        throwIfError(decode((await this.askNode(c, nodeId, nodeSubject(this.cluster, nodeId, 'shards.open'), encode({ shards }), waitMs)).data));
      }),
    );
    const failed = told.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) this.log.info('a node did not hear that a volume is placed; it does so when it reconciles', { volume: v.id, err: failed.reason });
  }

  /**
   * Reads the records of every live node (this one's from memory) and adds to the catalog the
   * volumes they hold that it lacks (`apply`), or only says which (cluster/catalog-recovery.ts).
   * Nodes that do not answer within the requester's deadline are named in the reply; what they
   * alone hold is not found.
   */
  private async recoverCatalog(c: Controller, apply: boolean, deadlineMs: number | undefined): Promise<unknown> {
    const timeoutMs = this.opts.requestTimeoutMs ?? 10_000;
    const endMs = Date.now() + Math.max(1, catalogWaitMs(deadlineMs === undefined ? timeoutMs : deadlineMs - Date.now()));
    const live = c.liveNodes(Date.now()).filter((m) => m.nodeId !== this.nodeId);
    const nodes = [{ nodeId: this.nodeId, hosts: this.hosts, shards: this.nodeMeta.shards }];
    const nodesFailed: { node: string; error: unknown }[] = [];
    const read = await Promise.allSettled(live.map((m) => readNodeRecords(this.nc!, this.cluster, m.nodeId, timeoutMs, endMs)));
    read.forEach((r, i) => (r.status === 'fulfilled' ? nodes.push(r.value) : nodesFailed.push({ node: live[i]!.nodeId, error: r.reason })));
    const plan = c.planRecovery(nodes, Date.now());
    if (apply) {
      c.addRecovered(plan.add);
      // Durable before it is said or answered.
      await this.settle(c);
    }
    if (apply && plan.add.length > 0) {
      this.log.warn('catalog recovered from the nodes\' records', { volumes: plan.add.map((v) => `${v.name} (${v.id})`), skipped: plan.skipped.length, nodesFailed: nodesFailed.map((f) => f.node) });
    }
    const moves = plan.add.flatMap((v) => v.placements.filter((p) => p.adding !== undefined).map((p) => `strata shard move ${v.name} ${p.shard} --from ${p.removing!} --to ${p.adding!.nodeId}`));
    if (apply && moves.length > 0) this.log.warn('recovered moves of replicas that were under way: run each again to finish it', { moves });
    const summary = (v: { id: string; name: string; shards: number; replicas: number }): RecoveredVolume => ({ id: v.id, name: v.name, shards: v.shards, replicas: v.replicas });
    return recoverReply(
      { applied: apply, epoch: c.epoch, nodesAsked: live.length + 1, nodesFailed, recovered: plan.add.map(summary), skipped: plan.skipped.map((v) => ({ ...summary(v), reason: v.reason })) },
      this.controlReplyBytesMax(),
    );
  }

  private async deleteVolume(c: Controller, name: string, requestId?: string): Promise<VolumeRecord> {
    const v = c.delete(name, requestId);
    await this.settle(c);
    this.router?.forget(name);
    return v;
  }

  /**
   * The destroys of a deleted volume's replicas (deleted durably already: `deleteVolume`), waited
   * for within the requester's deadline, with room for the answer to reach it: a node that takes
   * the request and does not answer (a frozen process, one killed with it) must not turn a done
   * delete into a `timeout` for the requester, and it destroys its replicas through the tombstone
   * when it reconciles anyway. A node not live is not asked, and one found gone meanwhile is
   * waited for no longer (`destroyEverywhere`). Nor is the answer held past the start of this
   * node's clean stop, whose connection then closes within NATS_DRAIN_MS.
   */
  private async destroyDeleted(c: Controller, v: VolumeRecord, deadlineMs: number | undefined): Promise<void> {
    const timeoutMs = this.opts.requestTimeoutMs ?? 10_000;
    const leftMs = deadlineMs === undefined ? timeoutMs : deadlineMs - Date.now();
    const waitMs = Math.max(0, Math.min(timeoutMs, catalogWaitMs(leftMs)));
    // The stop's notice is latched: a delete whose change was made after the stop began (the one
    // the controller ran as its node began to stop) does not wait either.
    const destroyed = withTimeout(this.destroyEverywhere(c, v), waitMs, () => new ProtocolError('timeout', `the nodes did not all answer the destroy within ${Math.round(waitMs)} ms`));
    // At a clean stop, expected: said as information.
    try {
      if ((await this.stopping.race(destroyed)) === NOTICED) this.log.info('shard destruction deferred to reconciliation', { volume: v.id, why: `node '${this.nodeId}' stops` });
    } catch (e) {
      this.log[this.stopped ? 'info' : 'warn']('shard destruction deferred to reconciliation', { volume: v.id, err: e });
    }
  }

  /**
   * controller.volume.resize: grows a volume (docs/protocol.md, "volume.resize"). The nodes that
   * hold its replicas take the new size first (volume.grow: their records, durably, then their
   * hosts), and only then does the catalog record it: no page the catalog admits is one a
   * replica would refuse as past the end. Every live node holding a replica must answer within
   * the requester's deadline, or nothing is recorded (`unavailable`: the nodes that answered keep
   * the larger size, which admits nothing the catalog does not, and a retry finishes). A node
   * that is not live takes the size from its assignments when it next reconciles.
   */
  private async resizeVolume(c: Controller, req: VolumeResizeRequest, deadlineMs: number | undefined): Promise<unknown> {
    // Sent again (its answer lost) after the volume grew further: answered done, not refused as a shrink.
    const again = c.resizedBy(req.requestId, req.name);
    if (again !== undefined) return volumeInfo(again);
    if (c.unplaced(req.name) !== undefined) throw notAnsweredYet(req.name);
    const v = c.checkResize(req.name, req.pageCount);
    if (v.pageCount === req.pageCount) return volumeInfo(v);
    const holders = new Set<string>();
    for (const p of v.placements) {
      for (const r of p.replicas) holders.add(r.nodeId);
      if (p.adding !== undefined) holders.add(p.adding.nodeId);
    }
    const live = new Set(c.liveNodes(Date.now()).map((m) => m.nodeId));
    const asked = [...holders].filter((n) => live.has(n)).sort();
    const timeout = this.nodesWaitMs(deadlineMs);
    const body = encode({ volumeId: v.id, pageCount: req.pageCount } satisfies VolumeGrowRequest);
    const answers = await Promise.allSettled(
      asked.map(async (nodeId) => {
        const r = await this.askNode(c, nodeId, nodeSubject(this.cluster, nodeId, 'volume.grow'), body, timeout);
        return validateVolumeGrowReply(throwIfError(decode(r.data)));
      }),
    );
    const failed = asked.flatMap((nodeId, i) => {
      const a = answers[i]!;
      return a.status === 'rejected' ? [`${nodeId} (${a.reason instanceof Error ? a.reason.message : String(a.reason)})`] : [];
    });
    if (failed.length > 0) {
      throw new ProtocolError('unavailable', `volume '${v.name}' was not resized: not every node holding a replica of it took the new size: ${failed.join('; ')}; retry`, { nodes: failed.length });
    }
    const next = c.resize(req.name, req.pageCount, req.requestId);
    await this.settle(c);
    this.log.info('volume resized', { volume: v.name, id: v.id, pageCount: next.pageCount, from: v.pageCount, nodesNotLive: [...holders].filter((n) => !live.has(n)) });
    return volumeInfo(next);
  }

  /**
   * node.volume.grow: this node's replicas of a volume take `pageCount` pages (never fewer than
   * they have): its records first, durably (what a restarted host reopens them with), then its
   * hosts. Every replica of the volume is given its size again, also one its record had already:
   * a host that failed a grow before takes it now. Resolves with the replicas it holds of it.
   */
  private growVolume(volumeId: string, pageCount: number): Promise<number> {
    return this.shardOp(async () => {
      const grows = (r: ShardAssignment): boolean => r.volumeId === volumeId && r.pageCount < pageCount;
      if (this.nodeMeta.shards.some(grows)) this.persist({ ...this.nodeMeta, shards: this.nodeMeta.shards.map((r) => (grows(r) ? { ...r, pageCount } : r)) });
      const held = this.nodeMeta.shards.filter((r) => r.volumeId === volumeId);
      // Not one a move took off: it is destroyed when this node reconciles.
      await this.reopenOnHosts(held.filter((r) => r.removed !== true));
      return held.length;
    });
  }

  /**
   * A request to node `nodeId` on `subject`, answered or timed out as NATS does, but failed as
   * soon as the node is found gone, which would otherwise hold the caller (a catalog operation,
   * in the controller's queue, or a delete's answer) until `timeoutMs`. Checked every
   * NODE_PROBE_MS on the node's claim subject, which every node answers:
   * - no responders: it stopped or died with the request in hand (NoRespondersError);
   * - no answer within NODE_PROBE_MS while the controller `c` no longer counts it live (no
   *   heartbeat within its live window): it is frozen (SIGSTOP, a paused VM) or cut off, and is
   *   waited for no longer (NodeSilentError). A node whose claim goes unanswered but whose
   *   heartbeats still come is slow, not gone: it is waited for.
   */
  private async askNode(c: Controller, nodeId: string, subject: string, data: Uint8Array, timeoutMs: number, headers?: MsgHdrs): Promise<Msg> {
    const nc = this.nc!;
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const gone = new Promise<never>((_, reject) => {
      const probeLater = (): void => {
        timer = setTimeout(() => {
          nc.request(nodeSubject(this.cluster, nodeId, 'claim'), encode({}), { timeout: NODE_PROBE_MS }).then(
            () => done || probeLater(),
            (e: unknown) => {
              if (done) return;
              if (fromNatsError(e, subject, NODE_PROBE_MS) instanceof NoRespondersError) reject(new NoRespondersError(subject));
              else if (!c.isLive(nodeId, Date.now())) reject(new NodeSilentError(nodeId, subject));
              else probeLater();
            },
          );
        }, NODE_PROBE_MS);
      };
      probeLater();
    });
    try {
      return await Promise.race([nc.request(subject, data, { timeout: timeoutMs, ...(headers === undefined ? {} : { headers }) }), gone]);
    } finally {
      done = true;
      clearTimeout(timer);
    }
  }

  /**
   * Has the node of each replica of `v` destroy it, but the nodes `except` (those that opened
   * none) and those `c` does not count live: they destroy it through the catalog's tombstone when
   * they next reconcile, and a frozen one would take the request and hold the caller. A node
   * found gone meanwhile (`askNode`) fails it at once.
   */
  private async destroyEverywhere(c: Controller, v: VolumeRecord, except: ReadonlySet<string> = new Set()): Promise<void> {
    const nowMs = Date.now();
    const byNode = new Map<string, number[]>();
    const notLive = new Set<string>();
    for (const p of v.placements) {
      for (const r of p.replicas) {
        if (except.has(r.nodeId)) continue;
        if (!c.isLive(r.nodeId, nowMs)) notLive.add(r.nodeId);
        else byNode.set(r.nodeId, [...(byNode.get(r.nodeId) ?? []), p.shard]);
      }
    }
    if (notLive.size > 0) this.log.info('shard destruction on nodes that are not live deferred to their reconciliation', { volume: v.id, nodes: [...notLive].sort() });
    const timeout = this.opts.requestTimeoutMs ?? 10_000;
    await Promise.all(
      [...byNode].map(async ([nodeId, shards]) => {
        const r = await this.askNode(c, nodeId, nodeSubject(this.cluster, nodeId, 'shards.destroy'), encode({ volumeId: v.id, shards }), timeout);
        throwIfError(decode(r.data));
      }),
    );
  }

  /** A heartbeat now, unless one is under way. */
  private beatNow(): void {
    if (this.heartbeatRunning || this.stopped) return;
    this.heartbeatRunning = true;
    void this.heartbeat().finally(() => (this.heartbeatRunning = false));
  }

  private serveNode(): void {
    const subj = (v: string): string => nodeSubject(this.cluster, this.nodeId, v);
    // A controller that starts or takes over asks every node for a heartbeat at once: it knows
    // no member until then (`heardFromNodes`). Its content does not matter; a flood of them
    // makes one heartbeat at a time, as the timer does.
    // And a catalog change this node's API router forwarded goes to it if its predecessor had not
    // answered (ApiRouter.forwardToController).
    this.subs.push(this.nc!.subscribe(controllerSubject(this.cluster, 'seated'), {
      callback: () => {
        this.controllerSeated.notify();
        this.beatNow();
        this.router?.controllerSeated();
      },
    }));
    this.subscribe(subj('shards.open'), async (body): Promise<ShardsOpenReply> => {
      const notCopied = await this.openShards(validateShardsOpen(body).shards);
      return notCopied.length === 0 ? { ok: true } : { ok: true, notCopied };
    });
    // This node's record of its replicas, page by page: what a lost catalog is recovered from.
    this.subscribe(subj('records'), async (body) =>
      recordsPage(this.nodeId, this.hosts, this.nodeMeta.shards, validateNodeRecordsRequest(body).from ?? 0, this.controlReplyBytesMax(), this.recordsVersion),
    );
    this.subscribe(subj('volume.grow'), async (body): Promise<VolumeGrowReply> => {
      const r = validateVolumeGrow(body);
      const shards = await this.growVolume(r.volumeId, r.pageCount);
      if (shards > 0) this.log.info('replicas of a volume grown', { volume: r.volumeId, pageCount: r.pageCount, shards });
      return { node: this.nodeId, shards };
    });
    this.subscribe(subj('shards.destroy'), async (body) => {
      const r = validateShardsDestroy(body);
      await this.destroyShards(r.volumeId, r.shards);
      this.router?.forgetId(r.volumeId);
      return { ok: true };
    });
    // A change of the controller nodes (docs/replication.md, "Changing the controller nodes").
    this.subscribe(subj('catalog.join'), async (body): Promise<CatalogMembershipReply> => {
      const r = validateCatalogJoin(body);
      if (this.opts.controllers === undefined) {
        throw new ProtocolError('bad_request', `node '${this.nodeId}' was started without --controllers: only a node of a cluster with a replicated controller can be a controller node`, { node: this.nodeId });
      }
      if (!r.members.includes(this.nodeId)) throw new ProtocolError('bad_request', `members: ${r.members.join(',')} do not name node '${this.nodeId}'`, { path: 'members' });
      return { node: this.nodeId, done: await this.joinCatalog(r.members, r.prior) };
    });
    this.subscribe(subj('catalog.leave'), async (body): Promise<CatalogMembershipReply> => {
      const r = validateCatalogLeave(body);
      if (r.members.includes(this.nodeId)) throw new ProtocolError('bad_request', `members: ${r.members.join(',')} name node '${this.nodeId}': it stays a controller node`, { path: 'members' });
      return { node: this.nodeId, done: await this.leaveCatalog(r.members, 'a change of the controller nodes took it out') };
    });
    // `strata shard check`: where this node's replica of a shard has its log, and the digest of its records in a range.
    this.subscribe(subj('shard.digest'), async (body): Promise<ShardDigestReply> => {
      const r = validateShardDigest(body);
      let hostId: number;
      if (r.volumeId === CATALOG_VOLUME_ID && r.shard === 0 && this.catalogMember) {
        hostId = CATALOG_HOST_ID;
      } else {
        const a = this.nodeMeta.shards.find((s) => s.volumeId === r.volumeId && s.shard === r.shard);
        if (!a) throw new ProtocolError('not_found', `node '${this.nodeId}' holds no replica of shard ${r.shard} of volume ${r.volumeId}`, { volumeId: r.volumeId, shard: r.shard });
        hostId = a.hostId;
      }
      const d = await this.pool!.shardDigest(hostId, r.volumeId, r.shard, r.fromLsn !== undefined ? { fromLsn: r.fromLsn, toLsn: r.toLsn! } : undefined, r.pages);
      return {
        node: this.nodeId,
        volumeId: r.volumeId,
        shard: r.shard,
        role: d.role,
        term: d.term,
        firstLsn: d.firstLsn,
        lastLsn: d.lastLsn,
        commitLsn: d.commitLsn,
        appliedLsn: d.appliedLsn,
        oldestLsn: d.oldestLsn,
        ...(d.digest !== undefined ? { fromLsn: d.digest.fromLsn, toLsn: d.digest.toLsn, records: d.digest.records, digest: d.digest.digest } : {}),
        ...(d.pages !== undefined ? { pages: d.pages } : {}),
      };
    });
    this.subscribe(subj('shard.forceVote'), async (body): Promise<ShardForceVoteReply> => {
      const r = validateShardForceVote(body);
      // The catalog shard's replica, on a controller node, is not among the node's shards.
      const a = r.volumeId === CATALOG_VOLUME_ID && r.shard === 0 && this.catalogMember
        ? { hostId: CATALOG_HOST_ID }
        : this.nodeMeta.shards.find((s) => s.volumeId === r.volumeId && s.shard === r.shard);
      if (!a) throw new ProtocolError('not_found', `node '${this.nodeId}' holds no replica of shard ${r.shard} of volume ${r.volumeId}`, { ...r });
      const { wasRepairing, term, discarded } = await this.pool!.forceVote(a.hostId, r.volumeId, r.shard);
      if (discarded !== undefined) {
        this.log.warn('operator override: the only copy of a shard discarded the damage of its log and what followed it, and serves again; those records are lost', {
          volume: r.volumeId,
          shard: r.shard,
          term,
          lostFromLsn: discarded.fromLsn,
          keptLsn: discarded.keptLsn,
        });
      } else if (wasRepairing) {
        this.log.warn('operator override: a repairing replica votes again; records only it had acknowledged, and lost, stay lost', {
          volume: r.volumeId,
          shard: r.shard,
          term,
        });
      }
      return { node: this.nodeId, volumeId: r.volumeId, shard: r.shard, wasRepairing, term, ...(discarded !== undefined ? { discarded } : {}) };
    });
    // A handover of a shard's leadership (an operator's, or a rebalance's for any shard led here with a replica on `to`).
    this.subscribe(subj('shard.handover'), async (body): Promise<ShardHandoverReply> => {
      const r = validateShardHandover(body);
      let target: { hostId: number; volumeId: string; shard: number };
      if (r.volumeId === CATALOG_VOLUME_ID && r.shard === 0 && this.catalogMember) {
        // The catalog shard of a replicated controller: handed over, the controller moves to the
        // node of its new leader.
        target = { hostId: CATALOG_HOST_ID, volumeId: CATALOG_VOLUME_ID, shard: 0 };
      } else if (r.volumeId !== undefined) {
        const a = this.nodeMeta.shards.find((s) => s.volumeId === r.volumeId && s.shard === r.shard);
        if (!a) throw new ProtocolError('not_found', `node '${this.nodeId}' holds no replica of shard ${r.shard} of volume ${r.volumeId}`, { volumeId: r.volumeId, shard: r.shard });
        target = { hostId: a.hostId, volumeId: a.volumeId, shard: a.shard };
      } else {
        const { leading } = await this.pool!.replicaRoles({ timeoutMs: HOST_STATUS_TIMEOUT_MS });
        const pick = leading.find((l) => l.volumeId !== CATALOG_VOLUME_ID && l.members.includes(r.to!));
        if (pick === undefined) throw new ProtocolError('not_found', `node '${this.nodeId}' leads no shard with a replica on node '${r.to}'`, { to: r.to });
        target = pick;
      }
      // The catalog shard led here: the controller gives its seat up first (not to itself: nothing is done).
      const seatGoes = target.volumeId === CATALOG_VOLUME_ID && r.to !== this.nodeId && this.seat !== undefined;
      if (seatGoes) {
        await this.releaseSeat(`its replica hands the catalog shard over${r.to === undefined ? '' : ` to '${r.to}'`}`);
      }
      // Not handed over after all: the next check takes the seat again.
      const done = await this.pool!.handOver(target.hostId, target.volumeId, target.shard, r.to).finally(() => seatGoes && (this.seatReleasing = false));
      // Asked to hand it to this node, which leads it: nothing was done.
      if (done.to !== this.nodeId) this.log.info("handed a shard's leadership over", { volume: target.volumeId, shard: target.shard, term: done.term, to: done.to });
      return { node: this.nodeId, volumeId: target.volumeId, shard: target.shard, term: done.term, to: done.to };
    });
    // A move of a replica: this node's replica of the shard, if it leads, changes the shard's set.
    this.subscribe(subj('shard.reconfigure'), async (body, msg): Promise<ShardReconfigureReply> => {
      const r = validateShardReconfigure(body);
      const a = this.nodeMeta.shards.find((s) => s.volumeId === r.volumeId && s.shard === r.shard);
      if (!a) throw new ProtocolError('not_found', `node '${this.nodeId}' holds no replica of shard ${r.shard} of volume ${r.volumeId}`, { volumeId: r.volumeId, shard: r.shard });
      try {
        const done = await this.pool!.reconfigure(a.hostId, r.volumeId, r.shard, r.members, this.controlDeadline(msg));
        if (done.changed) this.log.info('changed a shard\'s replica set', { volume: r.volumeId, shard: r.shard, members: done.members, term: done.term, lsn: done.lsn });
        return { node: this.nodeId, volumeId: r.volumeId, shard: r.shard, ...done };
      } catch (e) {
        // A replica closed or down (storage codes) is one to ask elsewhere.
        const code = (e as { code?: unknown }).code;
        if (code === 'closed' || code === 'device_failed' || code === 'fsync_failed' || code === 'io_error') {
          throw new ProtocolError('unavailable', `node '${this.nodeId}': ${(e as Error).message}`, { refused: code });
        }
        throw e;
      }
    });
    // Every field; a status over one message in parts, asked for one at a time (nodeStatusPart).
    this.subscribe(subj('status'), async (body) => {
      const { part = 0 } = validateNodeStatusRequest(body);
      return nodeStatusPart(await this.status(), part, this.controlReplyBytesMax());
    });
    // Every node answers the cluster-wide status scatter (no queue group).
    // The cluster status's gather: what its merge reads of each shard, so that a node of many
    // shards still fits one message (a full entry is about 390 bytes, this one about 120).
    // A node of more shards than one message holds answers in parts (joined by the gather).
    const gather = `strata.${this.cluster}.nodes.status`;
    this.subscribe(gather, async (_body, msg) => {
      const parts = splitNodeStatus(compactStatus(await this.status()), this.controlReplyBytesMax());
      for (const part of parts.slice(0, -1)) this.respondControl(msg, gather, part);
      return parts[parts.length - 1];
    });
  }

  /** Bytes a control reply made to fit (a status part, a page of assignments) may take: the server's max_payload less room for its headers. */
  private controlReplyBytesMax(): number {
    return (serverMaxPayload(this.nc) ?? MESSAGE_BYTES_MAX) - STATUS_PART_ROOM_BYTES;
  }

  /** This node's view: hosts, devices and the shards it hosts. */
  async status(): Promise<Record<string, unknown>> {
    // A host that does not answer at once is shown as such; it does not hold the whole reply.
    const [hosts, health] = await Promise.all([
      this.pool!.stats({ timeoutMs: HOST_STATUS_TIMEOUT_MS }),
      this.pool!.health({ timeoutMs: HOST_STATUS_TIMEOUT_MS }),
    ]);
    // One lookup a shard: a node may hold tens of thousands.
    const names = new Map(this.nodeMeta.shards.map((a) => [shardId(a), a.volumeName]));
    const shards = hosts.flatMap((h) =>
      (h.device?.shards ?? []).map((s) => ({
        ...s,
        hostId: h.hostId,
        volumeName: names.get(shardId(s)) ?? '',
      })),
    );
    return {
      node: {
        id: this.nodeId,
        cluster: this.cluster,
        version: STRATA_VERSION,
        uptimeMs: Date.now() - this.startedAt,
        controller: this.controller !== undefined,
        // A replicated controller: the term of the catalog shard this node runs it in.
        ...(this.seat !== undefined ? { controllerTerm: this.seat.term } : {}),
        healthy: health.every((h) => h.ok),
      },
      hosts: hosts.map((h, i) => ({
        hostId: h.hostId,
        ok: health[i]?.ok ?? false,
        reason: health[i]?.reason,
        restarts: h.restarts,
        ...(h.lastExit ? { lastExit: h.lastExit } : {}),
        queue: h.device?.queue,
        deviceRestarts: h.device?.restarts ?? 0,
        // Replicas reopened because they found their storage damaged; the background scrub's progress.
        damageReopens: h.device?.damageReopens ?? 0,
        ...(h.device?.scrub ? { scrub: h.device.scrub } : {}),
        // Background removals of files let go (trimmed segments, old images, destroyed shards) that failed.
        discardFailures: h.device?.discardFailures ?? 0,
        // The worst hold of the host's event loop in the last 10 s (its tick ran that late).
        ...(h.loopDelay ? { loopDelayMaxMs: Math.round(h.loopDelay.recentMaxMs * 10) / 10 } : {}),
        // The server's max_payload its replication messages are sized to (learnt again at each reconnection).
        ...(h.maxPayload !== undefined ? { maxPayload: h.maxPayload } : {}),
        mailbox: h.mailbox,
      })),
      shards,
    };
  }

  /**
   * Answers one API request unless API_REQUESTS_IN_FLIGHT_MAX are being handled already, or
   * their bytes and its own would pass API_BYTES_IN_FLIGHT_MAX, then `overloaded` at once;
   * resolves with its outcome: 'ok' or the error code answered.
   */
  private async admitApi(verb: string, fn: ApiHandler, msg: Msg): Promise<'ok' | ErrorCode> {
    const max = this.opts.apiRequestsInFlightMax ?? API_REQUESTS_IN_FLIGHT_MAX;
    const bytesMax = this.opts.apiBytesInFlightMax ?? API_BYTES_IN_FLIGHT_MAX;
    const bytes = msg.data.length;
    if (this.apiInFlight >= max || this.apiBytesInFlight + bytes > bytesMax) {
      const e = this.apiInFlight >= max
        ? new ProtocolError('overloaded', `node '${this.nodeId}' is handling ${max} API requests, its limit; retry after a back-off`, { requestsMax: max })
        : new ProtocolError('overloaded', `node '${this.nodeId}' is handling ${this.apiBytesInFlight} bytes of API requests, at most ${bytesMax} with this one's ${bytes}; retry after a back-off`, { bytes: this.apiBytesInFlight, bytesMax });
      msg.respond(encode(errorReply(e)), { headers: REPLY_HEADERS });
      return e.code;
    }
    this.apiInFlight++;
    this.apiBytesInFlight += bytes;
    try {
      return await this.handleApi(verb, fn, msg);
    } finally {
      this.apiInFlight--;
      this.apiBytesInFlight -= bytes;
    }
  }

  /** Answers one API request; resolves with its outcome: 'ok' or the error code answered. */
  private async handleApi(verb: string, fn: ApiHandler, msg: Msg): Promise<'ok' | ErrorCode> {
    let body: unknown;
    let deadlineMs: number;
    try {
      // Strata-Type must name this subject's verb, as docs/protocol.md says; schema and deadline
      // are checked with it.
      const headers = readHeaders(wellFormed(messageHeaders(msg)), { expectType: verb as MessageType });
      deadlineMs = this.router!.deadline(headers.deadlineMs, Date.now(), verb);
      // Within the bound on its items too: decoded on the node's thread, which answers the
      // controller's heartbeats and the catalog meanwhile.
      body = decode(msg.data, { itemsMax: REQUEST_ITEMS_MAX });
    } catch (e) {
      msg.respond(encode(errorReply(e)), { headers: REPLY_HEADERS });
      return toProtocolError(e).code;
    }
    let reply: unknown;
    try {
      reply = await fn(body, { data: msg.data, deadlineMs });
    } catch (e) {
      const pe = toProtocolError(e);
      if (pe.code === 'internal') this.log.error('api request failed', { verb, err: e });
      msg.respond(encode(errorReply(e)), { headers: REPLY_HEADERS });
      return pe.code;
    }
    // A reply over the server's max_payload (a page.read of more pages than one reply holds
    // through this server; a volume.list of the controller's, forwarded as it came, that fits
    // only without the reply's headers) is answered too_large: the requester can ask for fewer.
    const { bytes, code } = reply instanceof Uint8Array
      ? replyBytesWithin(this.nc, reply)
      : encodeReplyWithin(this.nc, reply, (err) => this.log.error('api reply encoding failed', { verb, err }));
    msg.respond(bytes, { headers: REPLY_HEADERS });
    return code;
  }

  private async serveApi(): Promise<void> {
    const nc = this.nc!;
    const router = this.router!;
    this.service = await nc.services.add({
      name: 'strata',
      version: STRATA_VERSION,
      description: 'Strata page storage: volumes of fixed-size pages',
      queue: 'strata-api',
      metadata: { cluster: this.cluster, node: this.nodeId },
    });
    const group = this.service.addGroup(`strata.${this.cluster}.api`);
    const spanAttrs = { [ATTR.node]: this.nodeId };
    const endpoint = (verb: ApiVerb, fn: ApiHandler): void => {
      const handler = (err: Error | null, msg: Msg): void => {
        if (err) return;
        const recorder = this.recorder;
        if (recorder === undefined) {
          this.admitApi(verb, fn, msg).catch((e: unknown) => this.log.error('api reply failed', { verb, err: e }));
          return;
        }
        const t0 = performance.now();
        const done = serverSpan(msg.subject, verb, messageHeaders(msg), (span) =>
          this.admitApi(verb, fn, msg).then((outcome) => {
            if (outcome !== 'ok') recordSpanError(span, new ProtocolError(outcome, `answered ${outcome}`));
            return outcome;
          }), msg.data.length, spanAttrs);
        done.then(
          (outcome) => recorder.requestDuration(verb, outcome, (performance.now() - t0) / 1000),
          (e: unknown) => this.log.error('api reply failed', { verb, err: e }),
        );
      };
      // One node's router of the queue group ('strata-api') takes each request; every node's
      // takes those on the verb's `every` subject (apiEverySubject), not in a queue group: a
      // client sends a request again there after a try without an answer. A frozen node keeps
      // its share of the queue group while it is frozen, and answers none of it.
      group.addEndpoint(verb.replace(/\./g, '_'), { subject: verb, metadata: { verb }, handler });
      this.apiEverySubs.push(nc.subscribe(apiEverySubject(this.cluster, verb), { callback: handler }));
    };
    // Catalog verbs go to the controller as they came (it validates them), a change given a
    // request id when it has none (ApiRouter.forwardChange). A volume's info is
    // also known to the nodes that host its replicas: answered from there when the controller
    // cannot be reached, so that page requests go on without it (localVolumeInfo).
    endpoint('volume.list', async (_body, req) => router.forwardToController('volume.list', req.data, req.deadlineMs));
    for (const verb of ['volume.create', 'volume.delete', 'volume.resize'] as const) {
      endpoint(verb, async (body, req) => router.forwardChange(verb, body, req.data, req.deadlineMs));
    }
    endpoint('volume.branch', (body, req) => router.branch(body, req.data, req.deadlineMs));
    endpoint('volume.info', async (body, req) => router.volumeInfo(body, req.data, req.deadlineMs, (name) => this.localVolumeInfo(name)));
    endpoint('page.write', (body, req) => router.pageWrite(body, req.deadlineMs));
    endpoint('page.zero', (body, req) => router.pageZero(body, req.deadlineMs));
    endpoint('page.map', (body, req) => router.pageMap(body, req.deadlineMs));
    endpoint('page.read', (body, req) => router.pageRead(body, req.deadlineMs));
    endpoint('volume.flush', (body, req) => router.flush(body, req.deadlineMs));
    // Read strictly like every request (docs/protocol.md): `{}`, anything else bad_request.
    endpoint('status', async (body, req) => {
      validateStatusRequest(body);
      return router.clusterStatus(await this.status(), req.deadlineMs);
    });
  }
}

/** Of two claims, whether `a` started before `b` (ties broken by instance): the other one stops. */
function startedFirst(a: ClaimReply, b: { sinceMs: number; instance: string }): boolean {
  return a.sinceMs < b.sinceMs || (a.sinceMs === b.sinceMs && a.instance < b.instance);
}

/** A claim's node, process, host and start, for a refusal's message. */
function describeClaim(r: ClaimReply): string {
  return `node '${r.nodeId}' (process ${r.pid} on host '${r.hostname}', started at ${new Date(r.sinceMs).toISOString()})`;
}

/** Room left in a control reply made to fit the server's max_payload (a status part, a page of assignments) for its headers. */
const STATUS_PART_ROOM_BYTES = 4096;

/** The fields of a shard's status that the cluster status merges (mergeClusterStatus, cluster/api-router.ts). */
const MERGED_SHARD_FIELDS = ['volumeId', 'shard', 'role', 'state', 'term', 'commitLsn', 'appliedLsn', 'lag', 'downReason', 'repairing', 'awaitingTerms', 'storage'] as const;

/**
 * What the controller's members say of a live node's replicas it reports down (`down`: by
 * `volumeId.shard`, since when): how many, and, with repairs on (`afterMs` > 0), when the first
 * the controller would replace is replaced. The only copy of a shard (`sole`) is never replaced
 * (no majority of its set serves without it: docs/replication.md), so it counts as down without
 * a time.
 */
export function downReplicasView(
  down: ReadonlyMap<string, number>,
  nowMs: number,
  afterMs: number,
  sole: (key: string) => boolean,
): { replicasDown?: number; replicasDownRepairInMs?: number } {
  if (down.size === 0) return {};
  let since = Infinity;
  if (afterMs > 0) for (const [key, t] of down) if (t < since && !sole(key)) since = t;
  return { replicasDown: down.size, ...(since !== Infinity ? { replicasDownRepairInMs: Math.max(0, afterMs - (nowMs - since)) } : {}) };
}

/**
 * Part `part` of a node's own status (`node.<id>.status`) in messages of at most `bytesMax`
 * bytes. A status that fits is answered whole (part 0), as it is. One that does not is split
 * the way the gather splits (splitNodeStatus: `part`, `parts`, the node's fields in each and a
 * run of its shards), every field of each shard kept; each host's per-shard mailbox list, which
 * grows with the shards too, is summed into `mailboxes` (as compactStatus does) and each shard's
 * own entry goes with the shard (`mailbox`). A part past the last is `out_of_range`, naming how
 * many there are. Each part is computed when asked: a shard opened or closed between two asks
 * may be missed or listed twice.
 */
export function nodeStatusPart(status: Record<string, unknown>, part: number, bytesMax: number): Record<string, unknown> {
  if (part === 0 && encode(status).length <= bytesMax) return status;
  const mailboxes = new Map<string, Record<string, unknown>>();
  for (const h of Array.isArray(status.hosts) ? (status.hosts as Array<Record<string, unknown>>) : []) {
    if (!Array.isArray(h.mailbox)) continue;
    for (const { volumeId, shard, ...m } of h.mailbox as Array<Record<string, unknown>>) mailboxes.set(`${String(volumeId)}/${String(shard)}`, m);
  }
  const summed = compactStatus({ ...status, shards: [] });
  const shards = (status.shards as Array<Record<string, unknown>>).map((sh) => {
    const m = mailboxes.get(`${String(sh.volumeId)}/${String(sh.shard)}`);
    return m === undefined ? sh : { ...sh, mailbox: m };
  });
  const parts = splitNodeStatus({ ...summed, shards }, bytesMax);
  const out = parts[part];
  if (out === undefined) {
    throw new ProtocolError('out_of_range', `node status part ${part} asked for; it has ${parts.length} part(s) now, from 0`, { part, parts: parts.length });
  }
  return parts.length === 1 ? { ...out, part: 0, parts: 1 } : out;
}

/**
 * A node's status with only the merged fields of each shard, and each host's per-shard mailbox
 * list summed (`mailboxes`: how many, their depth, bytes, refusals and errors): both lists grow
 * with the shards, and the merge reads neither's detail.
 */
export function compactStatus(status: Record<string, unknown>): Record<string, unknown> {
  const shards = (status.shards as Array<Record<string, unknown>>).map((sh) => {
    const out: Record<string, unknown> = {};
    for (const k of MERGED_SHARD_FIELDS) if (sh[k] !== undefined) out[k] = sh[k];
    // A leader's lag by follower, and `repairing` when it is: nothing to say for the others.
    if (out.lag !== undefined && Object.keys(out.lag as object).length === 0) delete out.lag;
    if (out.repairing === false) delete out.repairing;
    // A leader's replica set (whose members a move changes), and any replica's during a change;
    // every replica's of the catalog shard, whose set no catalog lists (so that a status taken
    // while it has no leader still knows its members).
    const config = sh.config as { members?: unknown; prior?: unknown } | undefined;
    if (config !== undefined && (sh.role === 'leader' || config.prior !== undefined || sh.volumeId === CATALOG_VOLUME_ID)) out.config = config;
    return out;
  });
  const hosts = Array.isArray(status.hosts)
    ? (status.hosts as Array<Record<string, unknown>>).map(({ mailbox, ...h }) => {
        if (!Array.isArray(mailbox)) return h;
        const sum = (k: string): number => (mailbox as Array<Record<string, unknown>>).reduce((t, m) => t + (Number(m[k]) || 0), 0);
        return { ...h, mailboxes: { count: mailbox.length, depth: sum('depth'), bytes: sum('bytes'), rejectedOverloaded: sum('rejectedOverloaded'), errors: sum('errors') } };
      })
    : status.hosts;
  return { ...status, ...(hosts !== undefined ? { hosts } : {}), shards };
}
