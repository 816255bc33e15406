/**
 * The typed TypeScript client of Strata.
 *
 * ```ts
 * const client = await connect({ servers: 'nats://127.0.0.1:4222' });
 * await client.createVolume({ name: 'db', pageCount: 1024 });
 * const db = client.volume('db');
 * const { lsn } = await db.write(7, page);
 * const same = await db.read(7);
 * await client.close();
 * ```
 *
 * Volume-level calls (create, branch, list, info, delete, status) go to the public API
 * (`strata.<cluster>.api.<verb>`). Page calls go straight to the shards
 * (`strata.<cluster>.shard.<volumeId>.<shard>`): a `Volume` fetches the volume's geometry once
 * (volume.info), splits a call by shard and by message size, sends the pieces concurrently and
 * merges the replies in request order. That is one NATS round trip per call; `apiRequest`
 * reaches the generic `api.page.*` path, which costs a second hop inside the cluster.
 *
 * Every request carries the Strata-Type, Strata-Schema and Strata-Deadline headers. A call's
 * deadline is `now + timeoutMs`, taken when the call starts, or the call's own `deadlineMs` when
 * that is earlier (a node routing a request passes its caller's); every NATS request of the call
 * waits at most until that deadline. Every failure is a `ProtocolError` with a protocol error code:
 * - an error reply keeps its code (`throwIfError`);
 * - no reply before the deadline is `timeout` (a write may or may not have been applied);
 * - no responder on a shard subject makes the volume refresh its geometry (volume.info: the
 *   volume may have been deleted, giving `not_found`, or moved) and retry once; a second miss is
 *   `unavailable`;
 * - `not_leader` is retried with back-off until the deadline; a write the deposed leader had
 *   put in its log is retried naming that record (`earlier`), so that it takes effect once, and
 *   fails with `timeout` (outcome unknown) if no leader answers it by the deadline;
 * - a read of the API (volume.info, volume.list, status), or a change with a request id, with
 *   no reply is asked again, up to API_READ_TRIES times within the deadline, to every node's
 *   API router (`apiEverySubject`: a node that hangs, frozen, keeps its share of the API's
 *   queue group); so is a shard read, map or flush, to every leader of the shard
 *   (`shardLeadersSubject`: a leader killed or frozen with it never answers; the next try
 *   reaches the next leader); so is a write, with the same write id in every try, which the
 *   shard keeps in the write's record: a leader whose log already holds it answers with that
 *   record instead of writing the pages twice, and one that cannot tell answers `timeout` with
 *   `details.outcomeUnknown`;
 * - a request of the API, or an operator's request to the controller (a move, a drain, a
 *   rebalance, a catalog recovery), that a node answered as no longer (or not surely) the
 *   controller, having done nothing (`unavailable` with `details.notController`), is sent again
 *   with back-off until the deadline: while the controller moves, the deposed one may take a
 *   request before it notices; so is one that found no controller (the router's
 *   `details.noController`, or no responders on the controller's subject), for CONTROLLER_GAP_MS;
 * - a reply that does not decode or validate is `internal` ("malformed reply …"); to a write
 *   (shard.write, shard.zero) it is `timeout` with `details.outcomeUnknown`: its leader took it;
 * - arguments are checked with the validators of messages/ before anything is sent.
 *
 * The NATS calls go through the small `ClientTransport` interface, so tests can run the client
 * over a fake transport (`createClient`).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { connect as natsConnect } from 'nats';
import type { NatsConnection } from 'nats';
import { MESSAGE_BYTES_MAX, decode, encode, encodeShardWriteRequest } from '../messages/codec';
import { allocRequestBytes } from '../storage-engine/arena';
import { crc32c, crc32cCombine } from '../storage-engine/crc32c';
import { checkPageDataCrc, combinePageCrcs, damagedInTransit, eachPageCrc } from '../storage-engine/page-data-crc';
import { ProtocolError, throwIfError } from '../messages/errors';
import { DEADLINE_AHEAD_MS_MAX, HEADER_DEADLINE, writeHeaders } from '../messages/headers';
import { clientSpan } from '../observability/tracing';
import { ConnectionState, NoRespondersError, RequestMux, fromNatsError, serverMaxPayload } from '../runtime/request-mux';
import { inTries, withTimeout } from '../runtime/timeout';
import { natsConnectError } from '../runtime/nats-connect-hint';
import { redactNatsUrl } from '../runtime/nats-url';
import { natsTlsOption } from '../runtime/nats-tls';
import { apiEverySubject, apiSubject, checkToken, clientInboxPrefix, shardLeadersSubject, shardSubject } from '../messages/subjects';
import {
  controllerSubject,
  nodeSubject,
  validateCatalogRecoverReply,
  validateShardDigestReply,
  validateShardForceVoteReply,
  validateShardHandoverReply,
  validateShardMoveReply,
  validateNodeDrainReply,
  validateControllersReply,
  type ControllersReply,
  CATALOG_VOLUME_ID,
  CATALOG_VOLUME_NAME,
  CONTROLLERS_MAX,
  CONTROLLERS_MIN,
  PAGE_DIGEST_BYTES_MAX,
  type NodeDrainReply,
  validateRebalanceReply,
  type RebalanceReply,
  type CatalogRecoverReply,
  type ShardDigestReply,
  type ShardForceVoteReply,
  type ShardHandoverReply,
  type ShardMoveReply,
} from '../messages/control';
import {
  EARLIER_ATTEMPTS_MAX,
  WRITE_ID_BYTES,
  PAGES_PER_REQUEST_MAX,
  PAGE_COUNT_MAX,
  REQUEST_DATA_BYTES_MAX,
  VOLUMES_PER_LIST_MAX,
  shardOfPage,
} from '../messages/api';
import type {
  ApiVerb,
  MessageType,
  PageWrite,
  ReplyMap,
  RequestMap,
  ShardFlushRequest,
  ShardLsn,
  ShardReadReply,
  ShardReadRequest,
  ShardVerb,
  ShardWriteRequest,
  ShardZeroRequest,
  ShardMapRequest,
  WriteRecordRef,
  StatusReply,
  VolumeCreateRequest,
  VolumeInfo,
  VolumeListReply,
} from '../messages/api';
import {
  expectArray,
  expectBytes,
  expectInteger,
  expectMap,
  expectName,
  fail,
  field,
  checkReadLsnShards,
  validateReadAt,
  validateReply,
  validateShardFlushReply,
  validateShardMapReply,
  validateShardReadReply,
  validateShardWriteReply,
  validateVolumeBranchRequest,
  validateVolumeCreateRequest,
  validateVolumeDeleteRequest,
  validateVolumeListRequest,
  validateVolumeResizeRequest,
  hasRequestId,
  requestIdIn,
  validatePageWrite,
  validatePageZero,
} from '../messages/validate';

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

/** Default bound on one client call (connect, API request, page call), in ms. */
export const TIMEOUT_MS_DEFAULT = 10_000;
/** Cluster name used when none is given. */
export const CLUSTER_DEFAULT = 'dev';
/**
 * Most pages in one `writePages` / `read` call. The client splits a call into requests of at most
 * PAGES_PER_REQUEST_MAX pages; this bounds how many requests one call may fan out to
 * (16 MiB of 4 KiB pages). Split bigger transfers into several calls.
 */
export const CALL_PAGES_MAX = 16 * PAGES_PER_REQUEST_MAX;
/** Most requests of one call in flight at a time. */
export const REQUESTS_IN_FLIGHT_MAX = 64;
/**
 * Bytes a shard message takes beyond its page data: fixed part (map, keys, lsn, term) and per
 * page (entry map, `page`/`data` keys, page number, byte-string header). Measured upper bounds
 * with a margin; `encode` still checks the real size against max_payload. The fixed part also
 * leaves room for what a leader adds when it sends the write's record to its followers (the
 * append message's fields, under 256 bytes), so that a write sized here fits that message too.
 */
const ENVELOPE_BYTES_FIXED = 512;
const ENVELOPE_BYTES_PER_PAGE = 32;

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

/** Options of one transport request. */
export interface TransportRequestOptions {
  /** Bound on the wait for the reply, in ms (> 0). */
  timeoutMs: number;
  /** Message headers, name → value. */
  headers: Readonly<Record<string, string>>;
}

/**
 * What the client needs of NATS. Contract of `request`: resolve with the reply's bytes, or reject
 * with ProtocolError('timeout') when no reply came within `timeoutMs`, with `NoRespondersError`
 * when nobody subscribes to `subject`, and with another ProtocolError for any other failure
 * (`unavailable` when the connection is gone, `too_large` when the server refuses the size).
 */
export interface ClientTransport {
  /** The server's max_payload in bytes: no message may be larger. */
  readonly maxPayloadBytes: number;
  request(subject: string, data: Uint8Array, options: TransportRequestOptions): Promise<Uint8Array>;
  /** Closes the connection; resolves when closed. */
  close(): Promise<void>;
  /** When (Date.now()) the connection last came back after a drop; undefined if it never dropped. */
  readonly reconnectedAtMs?: number | undefined;
}

export { NoRespondersError };

/**
 * A `ClientTransport` over a connected `NatsConnection`: requests go through one RequestMux
 * (one reply subscription, one deadline timer) rather than `nc.request` each. While the
 * connection is down (the NATS server restarting, say), a request waits for the reconnect within
 * its timeout; the requests waiting for a reply when it drops fail at once (`unavailable`,
 * `details.disconnected`: their replies are lost) instead of at their deadline; a write then
 * fails `timeout` (its outcome is unknown), a read is sent again. The requests waiting for a
 * reply when the transport is closed fail so too (a write `timeout`), but nothing is sent again.
 */
export class NatsTransport implements ClientTransport {
  private readonly mux: RequestMux;
  reconnectedAtMs: number | undefined;

  constructor(private readonly nc: NatsConnection) {
    const connection = new ConnectionState(nc);
    connection.onChange((up) => {
      if (up) this.reconnectedAtMs = Date.now();
    });
    this.mux = new RequestMux(nc, { connection, whileDisconnected: 'wait', failPendingOnDisconnect: true });
  }

  get maxPayloadBytes(): number {
    return serverMaxPayload(this.nc) ?? MESSAGE_BYTES_MAX;
  }

  async request(subject: string, data: Uint8Array, options: TransportRequestOptions): Promise<Uint8Array> {
    return (await this.mux.request(subject, data, options)).data;
  }

  async close(): Promise<void> {
    this.mux.close();
    if (this.nc.isClosed()) return;
    await this.nc.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/** Pause between the client's attempts to reconnect to NATS (plus the library's jitter). */
export const RECONNECT_WAIT_MS = 250;

/** Options of `connect`. */
export interface ConnectOptions {
  /** NATS server URL(s), e.g. `nats://127.0.0.1:4222`. */
  servers: string | string[];
  /** Strata cluster name (a subject token). Default `dev`. */
  cluster?: string;
  /** Bound on every call, in ms: 1..DEADLINE_AHEAD_MS_MAX. Default 10 000. Also bounds connecting. */
  timeoutMs?: number;
  /** Connection name shown by the NATS server. */
  name?: string;
  /** NATS user, for a server that asks for one (cluster/nats-auth.ts: a `client` or `operator`); with `pass`. */
  user?: string;
  /** That user's password. */
  pass?: string;
  /**
   * TLS files: the CA of the server's certificate when the system does not trust it, and this
   * client's certificate and key for a server that verifies its clients (cluster/nats-auth.ts).
   */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

/** Options of `createClient`. */
export interface ClientOptions {
  /** Strata cluster name. Default `dev`. */
  cluster?: string;
  /** Bound on every call, in ms: 1..DEADLINE_AHEAD_MS_MAX. Default 10 000. */
  timeoutMs?: number;
  /** Clock, ms since the Unix epoch (for deadlines). Default `Date.now`. */
  nowMs?: () => number;
}

/** Most digest requests one `checkShard` sends to each replica (steps of 16 MiB of payloads, and the halvings of one). */
export const SHARD_CHECK_STEPS_MAX = 4096;

/** Most times `checkShard` compares the records, or the pages, again after a replica's checkpoint let them go meanwhile. */
export const SHARD_CHECK_RESTARTS_MAX = 5;

/** How long `checkShard` waits by default for its replicas to reach the commit LSN (ms). */
export const SHARD_CHECK_WAIT_MS_DEFAULT = 5_000;
/** Most `checkShard` may be told to wait for its replicas (ms). */
export const SHARD_CHECK_WAIT_MS_MAX = 60_000;
/** How often `checkShard` asks a replica behind the commit LSN where it stands while it waits (ms). */
const SHARD_CHECK_POLL_MS = 100;

/** What `checkShard` found. */
export interface ShardCheck {
  volume: string;
  volumeId: string;
  shard: number;
  /**
   * Each replica's node, as it answered (its role and term, the LSNs its log holds, the commit
   * LSN it knows, and the digest of the LSNs compared when they were the same), or why it did not.
   */
  replicas: Array<{ node: string; role?: string; term?: number; firstLsn?: number; lastLsn?: number; commitLsn?: number; appliedLsn?: number; oldestLsn?: number; digest?: number; error?: string }>;
  /**
   * The wait for the replicas behind the highest commit LSN any of them knew at first (`target`):
   * how long it took, and the replicas still behind it then (holding less of the log, or with
   * `pages`, having applied less). Absent when none was behind, or the wait was 0.
   */
  waited?: { ms: number; target: number; behind: string[] };
  /** The committed LSNs every replica that answered holds, compared; absent when fewer than two answered or they hold none in common. */
  range?: { fromLsn: number; toLsn: number };
  /** The first LSN whose record differs between replicas, and each one's digest of it. */
  differs?: { lsn: number; digests: Record<string, number> };
  /** Digest requests sent to each replica. */
  steps: number;
  /**
   * Times a comparison began again, from the replicas' new positions, because a replica's
   * checkpoint let go of what was being compared: its log trimmed past the LSNs of the records,
   * or, with `pages`, its oldest readable LSN moved past the one of the pages (each at most
   * SHARD_CHECK_RESTARTS_MAX times; then the check fails `trimmed`). Absent when none did.
   */
  restarts?: number;
  /**
   * With `pages`: the shard's pages compared as of `lsn` (one every replica that answered has
   * applied and still reads), how many, and the first page that differs with each replica's
   * digest of it; or why they were not compared (`skipped`).
   */
  pages?: { lsn?: number; compared: number; steps: number; differs?: { page: number; digests: Record<string, number> }; skipped?: string };
}

/** Most digest requests to each replica for the pages of one shard (1 TiB of 4 KiB pages at 16 MiB a request). */
export const SHARD_CHECK_PAGE_STEPS_MAX = 65_536;

/** The volume of a shard, as `shardMembers` finds it: its page layout unless it is the catalog shard. */
interface ShardOwner {
  id: string;
  shards: number;
  layout?: { pageCount: number; pageSize: number; stripePages: number };
}

/** A replica's position in `ShardCheck.replicas`, from its digest without a range. */
function replicaPosition(node: string, d: ShardDigestReply): ShardCheck['replicas'][number] {
  return {
    node, role: d.role, term: d.term, firstLsn: d.firstLsn, lastLsn: d.lastLsn, commitLsn: d.commitLsn,
    ...(d.appliedLsn !== undefined ? { appliedLsn: d.appliedLsn } : {}),
    ...(d.oldestLsn !== undefined ? { oldestLsn: d.oldestLsn } : {}),
  };
}

/**
 * True if `e` is a replica's `trimmed` answer to a comparison of `what` (its checkpoint let
 * records or an LSN go while they were compared) and it may begin again (`restarts` below
 * SHARD_CHECK_RESTARTS_MAX). Past that, throws it with what happened.
 */
function trimmedMeanwhile(e: unknown, restarts: number, what: string): boolean {
  if (!(e instanceof ProtocolError && e.code === 'trimmed')) return false;
  if (restarts < SHARD_CHECK_RESTARTS_MAX) return true;
  throw new ProtocolError('trimmed', `${what}: compared ${restarts + 1} times, and each time a replica's checkpoint let go of what was being compared; run the check again (${e.message})`, e.details);
}

/** A u32, little-endian. */
function u32le(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}

/** Result of a write or flush: the highest LSN among the shards touched, and each shard's LSN. */
export interface LsnResult {
  lsn: number;
  /** One entry per shard touched, by shard number. */
  lsns: ShardLsn[];
}

/** Result of `Volume.readPages`. */
/** Volume.pagesWithData's answer. */
export interface PagesWithData extends LsnResult {
  /** The answer covers pages up to `end - 1`. */
  end: number;
  /** The pages that may hold data, ascending and apart; the others before `end` read as zeros. */
  ranges: Array<{ first: number; count: number }>;
}

/** A page to write (`Volume.writePages`). */
export interface PageToWrite extends PageWrite {
  /**
   * The CRC-32C of `data` (an unsigned 32-bit integer), made where the caller made or received
   * the data; optional. The shard.write's checksum is then made from it instead of from `data`,
   * so a page that changes in memory after it (the caller's or the client's) is refused by its
   * shard's leader, which writes none of that shard's pages: the call fails `corruption` with
   * `details.inTransit`.
   */
  crc?: number;
}

export interface ReadResult extends LsnResult {
  /** One page per requested page number, in request order. */
  pages: Uint8Array[];
  /**
   * The CRC-32C of `pages`, one after the other (PAGE_DATA_CRC), made from each page's checksum
   * as its shard's reply was checked on arrival, not from `pages` now: whoever passes the pages
   * on (the API router's page.read reply) passes on a checksum that a page changed in memory
   * since then fails.
   */
  crc: number;
}

/** Options of a page call. */
export interface CallOptions {
  /**
   * An earlier deadline of this call, ms since the Unix epoch; the call still waits at most
   * `timeoutMs`. One already passed fails the call with `timeout` before anything is sent.
   */
  deadlineMs?: number;
}

/**
 * Options of a page write or a range made zeros. Each is sent to every replica that leads its
 * shard, as far as each knows (`shardLeadersSubject`), with its write id (`Volume.sendWrite`).
 */
export type WriteOptions = CallOptions;

/** Options of a read. */
export interface ReadOptions extends CallOptions {
  /** Read as of this LSN (GetPage@LSN) on every shard touched; default the latest commit. */
  lsn?: number;
  /**
   * Read each named shard as of its own LSN, e.g. the `lsns` a write or an earlier read returned
   * (an entry's `term` is ignored); the shards touched that are not named are read at the latest
   * commit. One entry per shard; not with `lsn`.
   */
  lsns?: readonly ShardLsn[];
}

/** Options of `rawRequest`. */
export interface RawRequestOptions {
  /** Bound on the wait, in ms; default the client's timeoutMs. */
  timeoutMs?: number;
}

function checkTimeoutMs(value: unknown): number {
  return expectInteger(value, 'timeoutMs', { min: 1, max: DEADLINE_AHEAD_MS_MAX });
}

/** Turns a failure to decode or validate a reply into `internal`: the request was fine, the reply is not. */
function malformedReply(err: unknown, type: string, subject: string): ProtocolError {
  const reason = err instanceof Error ? err.message : String(err);
  const details = err instanceof ProtocolError ? err.details : undefined;
  return new ProtocolError('internal', `malformed reply to ${type} from ${subject}: ${reason}`, {
    ...details,
    subject,
    type,
  });
}

/**
 * Decodes and validates the reply to a `type` request: an error reply is thrown as the
 * answerer's error, a reply that does not decode or validate as `internal` (malformedReply), as
 * is an error reply this client cannot read (malformed, or a code it does not know). To a write
 * (shard.write, shard.zero) such a reply is `timeout` with `details.outcomeUnknown` instead: its
 * leader took the write and may have committed it (unreadableWriteReply). The bytes are read
 * through a plain Uint8Array view (no copy): decoding a Buffer would give Buffer pages, and the
 * client promises plain Uint8Arrays.
 */
function readReply<T>(replyBytes: Uint8Array, type: string, subject: string, validate: (value: unknown) => T, bytesMax?: number): T {
  let reply: unknown;
  try {
    reply = decode(new Uint8Array(replyBytes.buffer, replyBytes.byteOffset, replyBytes.byteLength), bytesMax === undefined ? undefined : { bytesMax });
  } catch (err) {
    throw unreadableWriteReply(malformedReply(err, type, subject), type);
  }
  let value: unknown;
  try {
    value = throwIfError(reply);
  } catch (err) {
    // An error reply it could not read is `internal` with `remoteCode` (a code this version does
    // not know) or `path` 'error' (no code and message).
    const unreadable = err instanceof ProtocolError && err.code === 'internal' && (err.details?.['remoteCode'] !== undefined || err.details?.['path'] === 'error');
    throw unreadable ? unreadableWriteReply(err, type) : err;
  }
  try {
    return validate(value) as T;
  } catch (err) {
    throw unreadableWriteReply(malformedReply(err, type, subject), type);
  }
}

/**
 * A reply that could not be read (`unreadable`, `internal`) to a write's request: its leader took
 * the request, so the write may have been committed, and `internal` would say it was not:
 * `timeout` with `details.outcomeUnknown`, the original code and message in `details.code` and
 * `details.reason`. Final: not tried again. Any other request's stays `internal`.
 */
function unreadableWriteReply(unreadable: ProtocolError, type: string): ProtocolError {
  if (type !== 'shard.write' && type !== 'shard.zero') return unreadable;
  return new ProtocolError('timeout', `${unreadable.message}: the write may or may not be committed`, {
    ...(unreadable.details ?? {}),
    code: unreadable.code,
    reason: unreadable.message,
    outcomeUnknown: true,
  });
}

/** Writes the Strata headers of a request into a plain record. */
function requestHeaders(type: MessageType, deadlineMs: number): Record<string, string> {
  const out: Record<string, string> = {};
  writeHeaders({ set: (name: string, value: string) => void (out[name] = value) }, { type, deadlineMs });
  return out;
}

/**
 * A connection to a Strata cluster. Create it with `connect` (or `createClient` over another
 * transport); close it with `close`.
 */
export class StrataClient {
  /** The cluster this client talks to. */
  readonly cluster: string;
  /** Bound on every call, in ms. */
  readonly timeoutMs: number;
  /** @internal Clock of the deadlines (ms since the Unix epoch). */
  readonly nowMs: () => number;
  private closed = false;
  /** The headers last made for each message type (`headersOf`): one entry per type. */
  private readonly lastHeaders = new Map<MessageType, { deadlineMs: number; headers: Readonly<Record<string, string>> }>();
  /** Write ids: this client's random first half, then a count (`writeId`). */
  private readonly writeIdPrefix = randomBytes(WRITE_ID_BYTES / 2);
  private writesMade = 0;

  /** Use `connect` or `createClient`. */
  constructor(
    private readonly transport: ClientTransport,
    clientOptions: ClientOptions | null = {},
  ) {
    const options = optionsOf(clientOptions);
    this.cluster = checkToken(options.cluster ?? CLUSTER_DEFAULT, 'cluster');
    this.timeoutMs = checkTimeoutMs(options.timeoutMs ?? TIMEOUT_MS_DEFAULT);
    this.nowMs = options.nowMs ?? Date.now;
  }

  /**
   * Creates a volume (volume.create). Arguments are validated before sending. Every node opens
   * its replicas of the new shards (a few fsyncs each) before the answer, so the call waits the
   * client's timeout or CREATE_MS_PER_SHARD_REPLICA for each shard replica, whichever is longer
   * (30.7 s for 256 shards of 3 replicas), or until an earlier `options.deadlineMs`.
   *
   * The request goes with a request id (`request.requestId`, a new random one when absent): the
   * same call made again with it after a `timeout` (its outcome unknown) is answered as the
   * first was made, not `already_exists` (docs/protocol.md, "Sent again").
   */
  async createVolume(request: VolumeCreateRequest, options: CallOptions | null = {}): Promise<VolumeInfo> {
    const spec = validateVolumeCreateRequest(request);
    const body: Record<string, unknown> = { requestId: newRequestId() };
    for (const [key, value] of Object.entries(request)) if (value !== undefined) body[key] = value;
    const sizedMs = Math.min(DEADLINE_AHEAD_MS_MAX, CREATE_MS_PER_SHARD_REPLICA * spec.shards * spec.replicas);
    const deadlineMs = this.deadline(optionsOf(options).deadlineMs, Math.max(this.timeoutMs, sizedMs));
    return this.api('volume.create', body as unknown as VolumeCreateRequest, deadlineMs);
  }

  /**
   * Creates volume `name` as a branch of volume `parent` (volume.branch): a volume of the
   * parent's geometry whose shard `i` starts as the parent's shard `i` was at `opts.lsns[i]`
   * (default: each shard's commit LSN when the request is served). Arguments are validated
   * before sending (`bad_request` naming the field). The parent's geometry is read first
   * (volume.info: `not_found` when there is no such volume), so that the call waits as a
   * `createVolume` of that geometry would, plus the time to copy the parent's pages once per
   * replica at BRANCH_COPY_BYTES_PER_MS (12.6 s more for a 256 MiB volume of 3 replicas): the
   * client's timeout or that, whichever is longer (at most DEADLINE_AHEAD_MS_MAX), or until an
   * earlier `opts.deadlineMs`. The controller checks the rest (one LSN per shard of the parent:
   * `bad_request`, path `lsns`; the name taken: `already_exists`). With a request id as
   * `createVolume`'s (`opts.requestId`).
   */
  async branchVolume(name: string, parent: string, opts: ({ lsns?: number[]; requestId?: string } & CallOptions) | null = {}): Promise<VolumeInfo> {
    const { lsns, requestId, deadlineMs: earlierMs } = optionsOf(opts);
    const request = validateVolumeBranchRequest({ name, parent, ...(lsns === undefined ? {} : { lsns }), requestId: requestId ?? newRequestId() });
    const info = await this.api('volume.info', { name: request.parent }, this.deadline(earlierMs));
    const copyMs = Math.ceil((info.pageCount * info.pageSize * info.replicas) / BRANCH_COPY_BYTES_PER_MS);
    const sizedMs = Math.min(DEADLINE_AHEAD_MS_MAX, CREATE_MS_PER_SHARD_REPLICA * info.shards * info.replicas + copyMs);
    const deadlineMs = this.deadline(earlierMs, Math.max(this.timeoutMs, sizedMs));
    return this.api('volume.branch', request, deadlineMs);
  }

  /**
   * Every volume of the cluster (volume.list), within one deadline. Asked whole first; a list
   * larger than one message (`too_large`) is read in pages (`listVolumesPage`), in name order.
   * Pages read at different catalog epochs (the catalog changed between two) start the list
   * again, at most LIST_RESTARTS_MAX times; after that the list is the pages as read, each volume
   * as its page found it (one created or deleted meanwhile may be missing, or listed).
   */
  async listVolumes(opts: CallOptions | null = {}): Promise<VolumeInfo[]> {
    const deadlineMs = this.deadline(optionsOf(opts).deadlineMs);
    try {
      return (await this.api('volume.list', {}, deadlineMs)).volumes;
    } catch (e) {
      if (!(e instanceof ProtocolError && e.code === 'too_large')) throw e;
    }
    for (let restarts = 0; ; restarts++) {
      const volumes: VolumeInfo[] = [];
      let epoch: number | undefined;
      let after: string | undefined;
      // Each page holds names after the last one's: at most one page per volume.
      for (let pages = 1; ; pages++) {
        // Its `next`, if any, is its last volume's name (validateVolumeListReply).
        const page = await this.listVolumesPage({ ...(after === undefined ? {} : { after }), deadlineMs });
        if (epoch !== undefined && page.epoch !== epoch && restarts < LIST_RESTARTS_MAX) break;
        epoch ??= page.epoch;
        volumes.push(...page.volumes);
        // A catalog holds at most VOLUMES_PER_LIST_MAX volumes (twice that: room for the changes
        // between pages read at different epochs). More is no catalog's answer (anyone on the
        // server may answer the controller's subjects), and is not gathered on.
        if (volumes.length > 2 * VOLUMES_PER_LIST_MAX) throw new ProtocolError('unavailable', `volume.list: more than ${2 * VOLUMES_PER_LIST_MAX} volumes in its pages, more than a catalog holds`);
        if (page.next === undefined) return volumes;
        if (pages >= VOLUMES_PER_LIST_MAX) throw new ProtocolError('unavailable', `volume.list: more than ${VOLUMES_PER_LIST_MAX} pages`);
        after = page.next;
      }
    }
  }

  /**
   * A page of the volume list (volume.list with `after` and `limit`): the volumes named after
   * `after` (from the first without it), in name order, at most `limit` (default, and at most,
   * VOLUMES_PER_LIST_MAX) and as many as fit one message; `next` is the `after` of the next page,
   * absent on the last; `epoch` the catalog's when the page was read.
   */
  async listVolumesPage(opts: ({ after?: string; limit?: number } & CallOptions) | null = {}): Promise<VolumeListReply> {
    const { after, limit, deadlineMs } = optionsOf(opts);
    const request = validateVolumeListRequest({ ...(after === undefined ? {} : { after }), limit: limit ?? VOLUMES_PER_LIST_MAX });
    return this.api('volume.list', request, this.deadline(deadlineMs));
  }

  /** The volume called `name` (volume.info); `not_found` if there is none. */
  async volumeInfo(name: string): Promise<VolumeInfo> {
    return this.api('volume.info', { name: expectName(name, 'name') }, this.deadline());
  }

  /**
   * Deletes the volume called `name` (volume.delete); `not_found` if there is none. With a request
   * id as `createVolume`'s (`options.requestId`): made again with it, the call is answered done,
   * and deletes no volume of that name created since.
   */
  async deleteVolume(name: string, options: ({ requestId?: string } & CallOptions) | null = {}): Promise<void> {
    const { requestId, deadlineMs } = optionsOf(options);
    const request = validateVolumeDeleteRequest({ name, requestId: requestId ?? newRequestId() });
    await this.api('volume.delete', request, this.deadline(deadlineMs));
  }

  /**
   * Grows the volume called `name` to `pageCount` pages (volume.resize); resolves with its info.
   * The pages added read as zeros until written. `not_found` if there is no such volume,
   * `bad_request` for fewer pages than it has (a volume never shrinks), `unavailable` when a
   * node holding a replica of it did not take the new size (nothing is recorded: retry). A
   * `Volume` handle that read the size before takes the new one when it is first refused by it.
   * With a request id as `createVolume`'s (`options.requestId`): made again with it after the
   * volume grew further, the call is answered with the volume, not `bad_request`.
   */
  async resizeVolume(name: string, pageCount: number, options: ({ requestId?: string } & CallOptions) | null = {}): Promise<VolumeInfo> {
    const { requestId, deadlineMs } = optionsOf(options);
    const request = validateVolumeResizeRequest({ name, pageCount, requestId: requestId ?? newRequestId() });
    return this.api('volume.resize', request, this.deadline(deadlineMs));
  }

  /** Status of the node that answers (status). */
  async status(): Promise<StatusReply> {
    return this.api('status', {}, this.deadline());
  }

  /**
   * Operator override of a repair (docs/replication.md): node `node`'s replica of shard `shard`
   * of the volume called `name` votes again although it is repairing, accepting that records
   * only it had acknowledged, and then lost, stay lost. For a shard left without a majority of
   * whole replicas. Sent to that node's control subject, not through the API; `unavailable`
   * when no such node answers, `not_found` when it holds no replica of the shard.
   */
  async forceVote(name: string, shard: number, node: string): Promise<ShardForceVoteReply> {
    // The catalog shard (`strata-catalog`, shard 0, as the status names it) is no volume of the
    // catalog, and when it needs this there is no controller to ask: it is sent as it is.
    const info = name === CATALOG_VOLUME_NAME ? { id: CATALOG_VOLUME_ID, shards: 1 } : await this.volumeInfo(name);
    if (!Number.isSafeInteger(shard) || shard < 0 || shard >= info.shards) {
      throw new ProtocolError('out_of_range', `shard ${shard}: volume ${name} has shards 0..${info.shards - 1}`, { shard });
    }
    const subject = nodeSubject(this.cluster, checkToken(node, 'node'), 'shard.forceVote');
    const replyBytes = await this.request(subject, encode({ volumeId: info.id, shard }), { timeoutMs: this.timeoutMs, headers: {} });
    // An error reply is the node's answer (not_found: it holds no replica of the shard…).
    return readReply(replyBytes, 'shard.forceVote', subject, validateShardForceVoteReply);
  }

  /**
   * Operator action (docs/replication.md, "Handing leadership over"): the leader of shard `shard`
   * of the volume called `name` hands its leadership to the replica on node `to` (default: the
   * one whose log holds the most). Asked of each member's node at once: the one whose replica
   * leads answers; the others refuse (`not_leader`). `unavailable` when none leads now (an
   * election under way: retry), `bad_request` for a `to` that holds no replica of the shard.
   * With a replicated controller, the catalog shard (`strata-catalog`, shard 0, as the status
   * names it) is handed over the same way, and the controller moves with it.
   */
  async handOver(name: string, shard: number, opts: { to?: string } = {}): Promise<ShardHandoverReply> {
    const { info, members } = await this.shardMembers(name, shard);
    if (opts.to !== undefined && !members.includes(checkToken(opts.to, 'to'))) {
      throw new ProtocolError('bad_request', `to: node '${opts.to}' holds no replica of shard ${shard} of volume ${name} (${members.join(', ')})`, { path: 'to' });
    }
    const body = encode({ volumeId: info.id, shard, ...(opts.to === undefined ? {} : { to: opts.to }) });
    // The first answer that is not a refusal settles it: a member's node that is down is not waited for.
    return new Promise<ShardHandoverReply>((resolve, reject) => {
      const refusals: unknown[] = [];
      for (const m of members) {
        const subject = nodeSubject(this.cluster, m, 'shard.handover');
        this.request(subject, body, { timeoutMs: this.timeoutMs, headers: {} })
          .then((bytes) => readReply(bytes, 'shard.handover', subject, validateShardHandoverReply))
          .then(resolve, (e: unknown) => {
            refusals.push(e);
            if (refusals.length < members.length) return;
            // The leader's refusal says why (a change of its set under way, its follower not
            // taking over); the others only that they do not lead.
            const telling = refusals.find((x) => !(x instanceof ProtocolError && x.code === 'not_leader'));
            reject(telling ?? new ProtocolError('unavailable', `no replica of shard ${shard} of volume ${name} leads it now (an election may be under way); retry`, { shard }));
          });
      }
    });
  }

  /**
   * The volume id of shard `shard` of the volume called `name`, and the nodes of its replicas
   * (the controller's answer; with `adding`, the one a move under way adds too); for the catalog shard of a replicated controller, which no catalog
   * lists, the status's (its replicas are the controller nodes). `out_of_range` for no such
   * shard, `unavailable` when nobody says where it is.
   */
  private async shardMembers(name: string, shard: number, opts: { adding?: boolean } = {}): Promise<{ info: ShardOwner; members: string[] }> {
    let info: ShardOwner & { members?: string[] };
    try {
      const v = await this.placedVolumeInfo(name, this.deadline());
      const set = v.replicaSets?.find((r) => r.shard === shard);
      // With `adding`, the replica a move under way adds too.
      const adding = opts.adding === true && set?.moving !== undefined && !set.members.includes(set.moving.to) ? [set.moving.to] : [];
      const members = set === undefined ? undefined : [...set.members, ...adding];
      info = { id: v.id, shards: v.shards, layout: { pageCount: v.pageCount, pageSize: v.pageSize, stripePages: v.stripePages }, ...(members === undefined ? {} : { members }) };
    } catch (e) {
      const catalog = e instanceof ProtocolError && e.code === 'not_found' ? await this.catalogShardOf(name) : undefined;
      if (catalog === undefined) throw e;
      info = catalog;
    }
    if (!Number.isSafeInteger(shard) || shard < 0 || shard >= info.shards) {
      throw new ProtocolError('out_of_range', `shard ${shard}: volume ${name} has shards 0..${info.shards - 1}`, { shard });
    }
    // (None at all: a catalog shard no controller node reports now. Asked of nobody, it would never be answered.)
    if (info.members === undefined || info.members.length === 0) throw new ProtocolError('unavailable', `the controller did not say where shard ${shard} of volume ${name} is`, { shard });
    return { info: { id: info.id, shards: info.shards, ...(info.layout !== undefined ? { layout: info.layout } : {}) }, members: info.members };
  }

  /**
   * volume.info with where each shard's replicas are. A router that could not reach the
   * controller (an election of the catalog shard under way) answers with what its node knows of
   * the volume, without them (`replicaSets`): asked again with back-off until `deadlineMs` (at
   * most CONTROLLER_RETRIES_MAX times), and the last answer returned as it is (the caller says
   * nobody told where a shard is), also when a try after it fails.
   */
  private async placedVolumeInfo(name: string, deadlineMs: number): Promise<VolumeInfo> {
    let pauseMs = CONTROLLER_RETRY_MS_MIN;
    let last: VolumeInfo | undefined;
    for (let attempt = 1; ; attempt++) {
      let v: VolumeInfo;
      try {
        v = await this.api('volume.info', { name: expectName(name, 'name') }, deadlineMs);
      } catch (e) {
        // A try after the first that fails (the deadline reached as it went out, say): the
        // answer before it stands.
        if (last !== undefined) return last;
        throw e;
      }
      last = v;
      if (v.replicaSets !== undefined || attempt > CONTROLLER_RETRIES_MAX || this.nowMs() + pauseMs >= deadlineMs) return v;
      await new Promise((r) => setTimeout(r, pauseMs));
      pauseMs = Math.min(2 * pauseMs, CONTROLLER_RETRY_MS_MAX);
    }
  }

  /** The digest request of `shard.digest` to `node` (the node's replica of a shard; with `range`, the digest of its records there). */
  async shardDigest(node: string, volumeId: string, shard: number, range?: { fromLsn: number; toLsn: number }, pages?: { lsn: number; first: number; count: number }): Promise<ShardDigestReply> {
    const subject = nodeSubject(this.cluster, checkToken(node, 'node'), 'shard.digest');
    const bytes = await this.request(subject, encode({ volumeId, shard, ...(range ?? {}), ...(pages !== undefined ? { pages } : {}) }), { timeoutMs: this.timeoutMs, headers: {} });
    return readReply(bytes, 'shard.digest', subject, validateShardDigestReply);
  }

  /**
   * Operator check (`strata shard check`): do the replicas of shard `shard` of the volume called
   * `name` hold the same committed records? Each replica's node is asked where its log stands;
   * the LSNs every replica that answered holds, up to the highest commit LSN any knows, are then
   * digested on each (storage-engine/log-digest.ts) in steps of at most 16 MiB of payloads, and
   * the digests compared. A step that differs is halved until one LSN is left: the first record
   * that differs. By Raft's log matching rule committed records never differ; one that does is
   * damage the checksums did not catch, or a bug. Replicas that do not answer are named and left
   * out. At most SHARD_CHECK_STEPS_MAX steps.
   */
  async checkShard(name: string, shard: number, options: { pages?: boolean; waitMs?: number } = {}): Promise<ShardCheck> {
    const waitMs = expectInteger(options.waitMs ?? SHARD_CHECK_WAIT_MS_DEFAULT, 'waitMs', { min: 0, max: SHARD_CHECK_WAIT_MS_MAX });
    const out = await this.checkShardRecords(name, shard, waitMs, options.pages === true);
    // Also where records differ: which pages that left different is worth knowing. A replica's
    // checkpoint may move its oldest readable LSN past the one compared meanwhile: compared again
    // as of the replicas' new positions.
    let positions = out;
    for (let restarts = 0; options.pages === true; restarts++) {
      try {
        out.pages = await this.checkShardPages(name, shard, positions);
        break;
      } catch (e) {
        if (!trimmedMeanwhile(e, restarts, `the pages of shard ${shard} of volume ${name}`)) throw e;
        out.restarts = (out.restarts ?? 0) + 1;
        positions = { ...out, replicas: await this.positionsNow(out) };
      }
    }
    return out;
  }

  /** The positions of the replicas of `check` that answered, asked again (`checkShard`, after a trim). */
  private async positionsNow(check: ShardCheck): Promise<ShardCheck['replicas']> {
    return Promise.all(check.replicas.map(async (r) => {
      if (r.error !== undefined) return r;
      try {
        return replicaPosition(r.node, await this.shardDigest(r.node, check.volumeId, check.shard));
      } catch (err) {
        return { node: r.node, error: err instanceof Error ? err.message : String(err) };
      }
    }));
  }

  /** `checkShard` of the records. */
  private async checkShardRecords(name: string, shard: number, waitMs: number, pages: boolean): Promise<ShardCheck> {
    const { info, members } = await this.shardMembers(name, shard, { adding: true });
    const first = await Promise.allSettled(members.map((m) => this.shardDigest(m, info.id, shard)));
    const replicas: ShardCheck['replicas'] = members.map((node, i) => {
      const r = first[i]!;
      if (r.status === 'rejected') return { node, error: r.reason instanceof Error ? r.reason.message : String(r.reason) };
      return replicaPosition(node, r.value);
    });
    const out: ShardCheck = { volume: name, volumeId: info.id, shard, replicas, steps: 0 };
    if (replicas.filter((r) => r.error === undefined).length < 2) return out;
    // A replica behind what is committed (a follower just restarted, or cut off for a while)
    // would limit what is compared: it is waited for, up to waitMs, to hold the records
    // committed when the check began (and with pages, to have applied them).
    const target = Math.max(...replicas.filter((r) => r.error === undefined).map((r) => r.commitLsn!));
    const behind = (r: ShardCheck['replicas'][number]): boolean =>
      r.error === undefined && (r.lastLsn! < target || (pages && r.appliedLsn !== undefined && r.appliedLsn < target));
    if (waitMs > 0 && replicas.some(behind)) {
      const startMs = this.nowMs();
      while (replicas.some(behind) && this.nowMs() - startMs < waitMs) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(SHARD_CHECK_POLL_MS, Math.max(1, waitMs - (this.nowMs() - startMs)))));
        await Promise.all(replicas.map(async (r, i) => {
          if (!behind(r)) return;
          // One that does not answer now keeps what it said before (it is compared as it was).
          const d = await this.shardDigest(r.node, info.id, shard).catch(() => undefined);
          if (d !== undefined) replicas[i] = replicaPosition(r.node, d);
        }));
      }
      out.waited = { ms: this.nowMs() - startMs, target, behind: replicas.filter(behind).map((r) => r.node) };
    }
    // A replica's checkpoint may trim its log past the LSNs compared while they are: compared
    // again from the replicas' new positions, at most SHARD_CHECK_RESTARTS_MAX times.
    for (let restarts = 0; ; restarts++) {
      try {
        await this.compareShardRecords(name, info.id, shard, out);
        return out;
      } catch (e) {
        if (!trimmedMeanwhile(e, restarts, `the records of shard ${shard} of volume ${name}`)) throw e;
        out.restarts = restarts + 1;
        out.replicas = await this.positionsNow(out);
        delete out.range;
        if (out.replicas.filter((r) => r.error === undefined).length < 2) return out;
      }
    }
  }

  /**
   * The records of `out.replicas` that answered compared (`checkShardRecords`): over the
   * committed LSNs they all hold, sets `out.range`, and `out.differs` or each one's digest.
   */
  private async compareShardRecords(name: string, volumeId: string, shard: number, out: ShardCheck): Promise<void> {
    const answered = out.replicas.filter((r) => r.error === undefined);
    const commit = Math.max(...answered.map((r) => r.commitLsn!));
    const lo = Math.max(1, ...answered.map((r) => r.firstLsn!));
    const hi = Math.min(commit, ...answered.map((r) => r.lastLsn!));
    if (lo > hi) return;
    out.range = { fromLsn: lo, toLsn: hi };
    const nodes = answered.map((r) => r.node);
    const digests = new Map(nodes.map((n) => [n, 0]));
    const ask = (from: number, to: number): Promise<ShardDigestReply[]> => Promise.all(nodes.map((n) => this.shardDigest(n, volumeId, shard, { fromLsn: from, toLsn: to })));
    const same = (rs: readonly ShardDigestReply[]): boolean => rs.every((r) => r.digest === rs[0]!.digest && r.toLsn === rs[0]!.toLsn);
    for (let from = lo; from <= hi; ) {
      if (++out.steps > SHARD_CHECK_STEPS_MAX) throw new ProtocolError('too_large', `shard ${shard} of volume ${name}: more than ${SHARD_CHECK_STEPS_MAX} steps to compare LSNs ${lo}..${hi}`);
      let rs = await ask(from, hi);
      const end = Math.min(...rs.map((r) => r.toLsn!));
      // Cut at different LSNs (by payload bytes): asked again to the same end.
      if (rs.some((r) => r.toLsn !== end)) rs = await ask(from, end);
      if (!same(rs)) {
        // Halved until one LSN: [from, a) is the same everywhere, [a, b] holds a difference.
        let a = from;
        let b = end;
        while (a < b) {
          if (++out.steps > SHARD_CHECK_STEPS_MAX) throw new ProtocolError('too_large', `shard ${shard} of volume ${name}: more than ${SHARD_CHECK_STEPS_MAX} steps to compare LSNs ${lo}..${hi}`);
          const m = Math.floor((a + b) / 2);
          if (same(await ask(a, m))) a = m + 1;
          else b = m;
        }
        const one = await ask(a, a);
        out.differs = { lsn: a, digests: Object.fromEntries(one.map((r, i) => [nodes[i]!, r.digest!])) };
        return;
      }
      for (const [i, n] of nodes.entries()) digests.set(n, crc32c(u32le(rs[i]!.digest!), digests.get(n)!));
      from = end + 1;
    }
    for (const r of out.replicas) if (r.error === undefined) r.digest = digests.get(r.node)!;
  }

  /**
   * The pages of a shard compared (`checkShard` with `pages`): as of the highest LSN every
   * replica that answered has applied, each replica digests its pages of the volume in steps of
   * at most PAGE_DIGEST_BYTES_MAX of them (Replica.digest), and the digests are compared; a
   * step that differs is halved down to one page. Replicas that applied the same records must
   * read the same pages, whatever their images, caches and ranges made zeros: a page that
   * differs is damage the checksums did not catch, or a bug.
   */
  private async checkShardPages(name: string, shard: number, records: ShardCheck): Promise<NonNullable<ShardCheck['pages']>> {
    const { info } = await this.shardMembers(name, shard);
    const answered = records.replicas.filter((r) => r.error === undefined);
    if (info.layout === undefined) return { compared: 0, steps: 0, skipped: 'the catalog shard holds no volume pages' };
    if (answered.length < 2) return { compared: 0, steps: 0, skipped: 'fewer than two replicas answered' };
    if (answered.some((r) => r.appliedLsn === undefined || r.oldestLsn === undefined)) return { compared: 0, steps: 0, skipped: 'a replica did not say which LSNs its pages are readable at' };
    const lsn = Math.min(...answered.map((r) => r.appliedLsn!));
    const floor = Math.max(...answered.map((r) => r.oldestLsn!));
    if (lsn < floor) return { compared: 0, steps: 0, skipped: `no LSN every replica reads its pages at (applied: ${lsn} at least; readable from ${floor} at most)` };
    const { pageCount, pageSize, stripePages } = info.layout;
    // A step of whole rounds of stripes holds as many of the shard's pages as a replica digests at most.
    const own = Math.floor(PAGE_DIGEST_BYTES_MAX / pageSize);
    const step = stripePages >= own ? own : Math.floor(own / stripePages) * stripePages * info.shards;
    const nodes = answered.map((r) => r.node);
    const out: NonNullable<ShardCheck['pages']> = { lsn, compared: 0, steps: 0 };
    const ask = async (first: number, count: number): Promise<ShardDigestReply[]> => {
      if (++out.steps > SHARD_CHECK_PAGE_STEPS_MAX) throw new ProtocolError('too_large', `shard ${shard} of volume ${name}: more than ${SHARD_CHECK_PAGE_STEPS_MAX} steps to compare its pages`);
      return Promise.all(nodes.map((n) => this.shardDigest(n, info.id, shard, undefined, { lsn, first, count })));
    };
    const same = (rs: readonly ShardDigestReply[]): boolean => rs.every((r) => r.pages!.digest === rs[0]!.pages!.digest && r.pages!.pages === rs[0]!.pages!.pages);
    for (let first = 0; first < pageCount; first += step) {
      const count = Math.min(step, pageCount - first);
      const rs = await ask(first, count);
      if (same(rs)) {
        out.compared += rs[0]!.pages!.pages;
        continue;
      }
      // Halved until one page: [a, b) holds a difference (a range without pages of the shard is the same everywhere).
      let a = first;
      let b = first + count;
      while (b - a > 1) {
        const m = Math.floor((a + b) / 2);
        if (same(await ask(a, m - a))) a = m;
        else b = m;
      }
      const one = await ask(a, 1);
      out.differs = { page: a, digests: Object.fromEntries(one.map((r, i) => [nodes[i]!, r.pages!.digest])) };
      return out;
    }
    return out;
  }

  /**
   * The catalog shard of a replicated controller when it is called `name` (the status names it,
   * with the nodes of its replicas: the controller nodes that report it, and its leader's set),
   * else undefined.
   */
  private async catalogShardOf(name: string): Promise<{ id: string; shards: number; members: string[] } | undefined> {
    const entry = (await this.status()).catalogShard as { id?: unknown; name?: unknown; shards?: unknown } | undefined;
    if (entry === undefined || entry.name !== name || typeof entry.id !== 'string' || !Array.isArray(entry.shards)) return undefined;
    const members = new Set<string>();
    for (const sh of entry.shards as Array<{ members?: unknown; replicas?: unknown }>) {
      for (const m of Array.isArray(sh.members) ? sh.members : []) if (typeof m === 'string') members.add(m);
      for (const r of Array.isArray(sh.replicas) ? (sh.replicas as Array<{ node?: unknown }>) : []) if (typeof r.node === 'string') members.add(r.node);
    }
    return { id: entry.id, shards: entry.shards.length, members: [...members].sort() };
  }

  /**
   * Operator action (docs/replication.md, "Moving a replica"): moves the replica of shard
   * `shard` of the volume called `name` from node `from` to node `to` (a live node that holds
   * none of the shard), to replace a dead node's replica or to drain a node. Resolves once the
   * shard's leader has committed the new set and the catalog records it: the new replica is
   * then a member (it is given the shard by its leader), and `from` destroys its replica. Asked
   * again with the same nodes, it resumes a move that was cut short (a deadline, a restart of the
   * controller) or answers one that is done. Sent to the controller's control subject, not
   * through the API. Waits at least MOVE_TIMEOUT_MS_MIN unless `options.deadlineMs` says less.
   * Fails `not_found` (no such volume), `out_of_range` (no such shard), `bad_request` (`from`
   * holds no replica of the shard, or `to` does), `unavailable` (`to` not live, another move of
   * the shard under way, no leader found), `timeout` (the move stays recorded).
   */
  async moveReplica(name: string, shard: number, move: { from: string; to: string }, options: CallOptions | null = {}): Promise<ShardMoveReply> {
    this.checkOpen();
    const m = expectMap(move, 'move');
    const body = {
      volume: expectName(name, 'name'),
      shard: expectInteger(shard, 'shard', { min: 0, max: Number.MAX_SAFE_INTEGER }),
      from: checkToken(m.from as string, 'from'),
      to: checkToken(m.to as string, 'to'),
    };
    const deadlineMs = this.deadline(optionsOf(options).deadlineMs, Math.max(this.timeoutMs, MOVE_TIMEOUT_MS_MIN));
    return this.controlRequest('shard.move', body, deadlineMs, validateShardMoveReply);
  }

  /**
   * Operator action (docs/replication.md, "Draining a node"): marks node `node` draining, durably
   * in the catalog (with `undo`: no longer). The controller then moves each of its replicas to
   * another node, one shard at a time, and places nothing new on it; the answer comes at once,
   * with the replicas still placed on the node (`strata status` and `volume info` show the moves;
   * the node is empty once `replicas` reads 0). Sent to the controller's control subject.
   * Fails `too_large` (64 nodes draining already), `unavailable` (no controller).
   */
  async drainNode(node: string, options: { undo?: boolean } & CallOptions = {}): Promise<NodeDrainReply> {
    this.checkOpen();
    const body = { node: checkToken(node, 'node'), ...(options.undo === true ? { undo: true } : {}) };
    return this.controlRequest('node.drain', body, this.deadline(options.deadlineMs), validateNodeDrainReply);
  }

  /**
   * Operator action (docs/replication.md, "Changing the controller nodes"): with a replicated
   * controller, changes the controller nodes (the catalog shard's replica set) to `members`,
   * CONTROLLERS_MIN..CONTROLLERS_MAX node ids; without `members`, answers the set in force. Each
   * node added must be live, and so must a majority of the new set. Answered once the change is
   * committed, with the nodes taken out that destroyed their replica of the catalog shard (`left`)
   * and those that will once they hear from the controller (`leaving`). Asked again with the same
   * set, it answers the change done. Waits at least MOVE_TIMEOUT_MS_MIN unless
   * `options.deadlineMs` says less (the nodes added catch up on the catalog first). Fails
   * `bad_request` (a node not in the cluster, a cluster with a single controller node),
   * `unavailable` (a node added not live, a change under way, no controller).
   */
  async controllers(members?: readonly string[], options: CallOptions = {}): Promise<ControllersReply> {
    this.checkOpen();
    let body = {};
    if (members !== undefined) {
      const ids = members.map((m, i) => checkToken(m, `members[${i}]`));
      if (ids.length < CONTROLLERS_MIN || ids.length > CONTROLLERS_MAX || new Set(ids).size !== ids.length) {
        throw new ProtocolError('bad_request', `members: expected ${CONTROLLERS_MIN}..${CONTROLLERS_MAX} distinct node ids, got ${ids.join(',') || 'none'}`, { path: 'members' });
      }
      body = { members: ids };
    }
    const deadlineMs = this.deadline(options.deadlineMs, members === undefined ? this.timeoutMs : Math.max(this.timeoutMs, MOVE_TIMEOUT_MS_MIN));
    return this.controlRequest('controllers', body, deadlineMs, validateControllersReply);
  }

  /**
   * A request to the controller's control subject `verb`, with deadline `deadlineMs`; sent again
   * while the controller moves (`whileControllerMoves`), when its reply was lost with the NATS
   * connection (`details.disconnected`), and, for TRIED_CONTROL_VERBS, when a try of it got no
   * answer (a controller that died holding it): each of these verbs may be asked again, a move
   * resumes or answers the one done, a drain or a rebalance sets what it set, a change of the
   * controller nodes answers the change done. Not a catalog recovery that applies what it finds:
   * asked again, it would answer that nothing was left to recover; its lost reply is `timeout`
   * with `details.outcomeUnknown` (`strata catalog recover` without `--apply` tells what is left).
   */
  private async controlRequest<T>(verb: string, body: unknown, deadlineMs: number, validate: (b: unknown) => T): Promise<T> {
    this.checkOpen();
    const subject = controllerSubject(this.cluster, verb);
    const repeatable = !(verb === 'catalog.recover' && (body as { apply?: unknown }).apply === true);
    const sendAgain = (e: unknown): boolean =>
      e instanceof ProtocolError && ((e.code === 'unavailable' && e.details?.['disconnected'] === true) || (e.code === 'timeout' && e.details?.['tryUnanswered'] === true));
    const arrived = { maybe: false };
    const once = async (): Promise<T> => {
      this.checkOpen();
      const nowMs = this.nowMs();
      // A move, a drain or a rebalance is sent in tries: a controller that dies holding a request
      // never answers it, and the next one, seated within seconds, answers the try after (a
      // move asked again joins the run under way, or resumes it).
      const tryEndMs = TRIED_CONTROL_VERBS.has(verb) ? Math.min(deadlineMs, nowMs + Math.min(CONTROL_TRY_MS_MAX, Math.max(CONTROL_TRY_MS_MIN, Math.floor((deadlineMs - nowMs) / 3)))) : deadlineMs;
      let replyBytes: Uint8Array;
      try {
        replyBytes = await this.request(subject, encode(body), { timeoutMs: Math.max(1, tryEndMs - nowMs), headers: { [HEADER_DEADLINE]: String(deadlineMs) } });
      } catch (err) {
        if (err instanceof NoRespondersError) {
          throw new ProtocolError('unavailable', `the controller is not reachable (no responders on ${subject}): is the controller node running?`, { subject, noController: true });
        }
        if (tryEndMs < deadlineMs && err instanceof ProtocolError && err.code === 'timeout' && !notSent(err)) {
          arrived.maybe = true;
          throw new ProtocolError('timeout', `${err.message} (a try: sent again)`, { ...(err.details ?? {}), tryUnanswered: true });
        }
        noteArrival(err, arrived);
      }
      return readReply(replyBytes, verb, subject, validate);
    };
    try {
      return await (repeatable ? this.whileControllerMoves(deadlineMs, once, sendAgain) : this.whileControllerMoves(deadlineMs, once));
    } catch (e) {
      // A try that may have reached the controller: whatever the last one met, unless the
      // controller answered, the request may have been carried out.
      throw changeFailure(e, body, arrived.maybe);
    }
  }

  /**
   * Operator action (docs/replication.md, "Rebalancing"): asks the controller to even out the
   * replicas over the live nodes that are not draining, one move at a time, until the most and
   * the least loaded differ by at most one (with `stop`: calls it off). Answered at once with
   * each node's count and whether the rebalance is still under way (asked again, it says).
   */
  async rebalance(options: { stop?: boolean } & CallOptions = {}): Promise<RebalanceReply> {
    return this.controlRequest('rebalance', options.stop === true ? { stop: true } : {}, this.deadline(options.deadlineMs), validateRebalanceReply);
  }

  /**
   * Operator action after the controller lost its catalog (docs/replication.md, "A lost
   * catalog"): the controller reads the records of every live node and adds to its catalog the
   * volumes they hold that it lacks; with `apply: false` (the default) it only says which. Sent
   * to the controller's control subject, not through the API.
   */
  async recoverCatalog(options: { apply?: boolean } = {}): Promise<CatalogRecoverReply> {
    // With this call's deadline, as the API's catalog verbs: the controller reads the nodes'
    // records within it (less room for its answer), and does not start a recovery, `apply` or
    // not, that has waited past it in its queue.
    return this.controlRequest('catalog.recover', { apply: options.apply === true }, this.deadline(), validateCatalogRecoverReply);
  }

  /**
   * A handle on the volume called `name` for page calls. Nothing is sent until the first call,
   * which fetches the volume's geometry (once; again after a shard stops answering).
   */
  volume(name: string, options: { id?: string } | null = {}): Volume {
    const id = optionsOf(options).id;
    if (id !== undefined && (typeof id !== 'string' || id.length === 0)) throw new ProtocolError('bad_request', 'id: expected the id of a volume (a string)', { path: 'id' });
    return new Volume(this, expectName(name, 'name'), id);
  }

  /**
   * Sends any API request: the escape hatch for the generic `api.page.*` path and for tests. The
   * body is sent as given (not validated here, so the server's checks can be exercised); the
   * reply is checked (`throwIfError`, then the reply validator of `verb`).
   */
  async apiRequest<V extends ApiVerb>(verb: V, body: RequestMap[V]): Promise<ReplyMap[V]> {
    return this.api(verb, body, this.deadline());
  }

  /**
   * Sends raw bytes with raw headers and returns the raw reply bytes (no decoding, no error
   * mapping of the reply): for tests that send malformed messages. Transport failures are still
   * ProtocolErrors (`timeout`, `unavailable`).
   */
  async rawRequest(
    subject: string,
    data: Uint8Array,
    headers: Readonly<Record<string, string>> = {},
    rawOptions: RawRequestOptions | null = {},
  ): Promise<Uint8Array> {
    this.checkOpen();
    const options = optionsOf(rawOptions);
    const timeoutMs = checkTimeoutMs(options.timeoutMs ?? this.timeoutMs);
    return this.request(subject, data, { timeoutMs, headers });
  }

  /** Closes the connection. Later calls fail with `unavailable`. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.timeoutMs);
      timer.unref();
    });
    try {
      await Promise.race([this.transport.close(), bound]);
    } finally {
      clearTimeout(timer);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Internals shared with Volume
  // ------------------------------------------------------------------------------------------

  /**
   * A new write id (`ShardWriteRequest.writeId`): this client's 8 random bytes, then a count of
   * the ids it made. Two clients share a first half with a chance of 1 in 2^64. @internal
   */
  writeId(): Uint8Array {
    const id = new Uint8Array(WRITE_ID_BYTES);
    id.set(this.writeIdPrefix);
    // The count, little-endian (below 2^53).
    let n = ++this.writesMade;
    for (let i = 8; i < WRITE_ID_BYTES; i++, n = Math.floor(n / 256)) id[i] = n % 256;
    return id;
  }

  /** The deadline of a call starting now: `aheadMs` (default `timeoutMs`) away, or `earlierMs` if sooner. @internal */
  deadline(earlierMs?: number, aheadMs: number = this.timeoutMs): number {
    const ownMs = this.nowMs() + aheadMs;
    if (earlierMs === undefined) return ownMs;
    return Math.min(ownMs, expectInteger(earlierMs, 'deadlineMs', { min: 0, max: Number.MAX_SAFE_INTEGER }));
  }

  /** The server's max_payload. @internal */
  get maxPayloadBytes(): number {
    return this.transport.maxPayloadBytes;
  }

  /** A transport request; a failure outside the transport contract becomes `unavailable`. */
  private async request(subject: string, data: Uint8Array, options: TransportRequestOptions): Promise<Uint8Array> {
    try {
      return await this.transport.request(subject, data, options);
    } catch (err) {
      throw fromNatsError(err, subject, options.timeoutMs);
    }
  }

  /**
   * The headers of an untraced request of `type` with deadline `deadlineMs`, frozen: the last
   * ones made for its type, when their deadline is the same (requests sent in the same
   * millisecond), else new ones. A transport may keep them by identity (RequestMux does).
   */
  private headersOf(type: MessageType, deadlineMs: number): Readonly<Record<string, string>> {
    const last = this.lastHeaders.get(type);
    if (last !== undefined && last.deadlineMs === deadlineMs) return last.headers;
    const headers = Object.freeze(requestHeaders(type, deadlineMs));
    this.lastHeaders.set(type, { deadlineMs, headers });
    return headers;
  }

  private checkOpen(): void {
    if (this.closed) throw new ProtocolError('unavailable', 'the client is closed');
  }

  /**
   * One request: encode, send with headers and the time left before `deadlineMs`, decode,
   * `throwIfError`, validate the reply. @internal
   */
  async send<T>(
    subject: string,
    type: MessageType,
    body: unknown,
    deadlineMs: number,
    validate: (value: unknown) => T,
    waitUntilMs = deadlineMs,
  ): Promise<T> {
    for (let resends = 0; ; resends++) {
      try {
        const reply = await this.sendOnce(subject, type, body, deadlineMs, validate, waitUntilMs);
        if (type === 'shard.read') checkReadReply(reply as ShardReadReply, `shard.read reply from ${subject}`);
        return reply;
      } catch (e) {
        // A node of a version before page data checksums refuses the field, having taken
        // nothing: the write goes again without it (a cluster upgraded node by node).
        if (type === 'shard.write' && refusesCrc(e) && (body as ShardWriteRequest).crc !== undefined) {
          delete (body as ShardWriteRequest).crc;
          resends--;
          continue;
        }
        // Page data damaged on the way, either way: nothing was taken (a write's leader refused
        // it before anything) or the reply is dropped (a read), so the same request goes again
        // within the time it has, TRANSIT_RESENDS_MAX times at most.
        if (!damagedInTransit(e) || resends >= TRANSIT_RESENDS_MAX || this.nowMs() >= Math.min(deadlineMs, waitUntilMs)) throw e;
      }
    }
  }

  /** One request of `send`: encode, send, decode, `throwIfError`, validate the reply. */
  private async sendOnce<T>(
    subject: string,
    type: MessageType,
    body: unknown,
    deadlineMs: number,
    validate: (value: unknown) => T,
    waitUntilMs: number,
  ): Promise<T> {
    this.checkOpen();
    const bytesMax = this.transport.maxPayloadBytes;
    // A write's pages go into an exact-size buffer from the request arena (it lives until the
    // NATS client has copied it out), not through cbor-x's growing buffer.
    const data = type === 'shard.write' ? encodeShardWriteRequest(body as ShardWriteRequest, { bytesMax, alloc: allocRequestBytes }) : encode(body, { bytesMax });
    const timeoutMs = Math.min(deadlineMs, waitUntilMs) - this.nowMs();
    if (timeoutMs <= 0) {
      throw new ProtocolError('timeout', `deadline passed before ${type} was sent to ${subject}`, { subject, deadlineMs, notSent: true });
    }
    // A CLIENT span `send <type>` whose traceparent goes in the headers (an OpenTelemetry API
    // no-op, headers unchanged, when no tracing is set up in this process). An error reply
    // marks it failed with its code. Untraced, the request's headers are those of every request
    // of its type and deadline (`headersOf`).
    return clientSpan(
      subject,
      type,
      async (inject) => {
        let traced: Record<string, string> | undefined;
        inject({ set: (name: string, value: string) => void ((traced ??= requestHeaders(type, deadlineMs))[name] = value) });
        const headers = traced ?? this.headersOf(type, deadlineMs);
        return readReply(await this.request(subject, data, { timeoutMs, headers }), type, subject, validate, bytesMax);
      },
      data.length,
    );
  }

  /**
   * An API request with a typed, validated reply. @internal
   *
   * The API is served by every node (a queue group): a node that takes requests without
   * answering them (hung, or killed with them) gets its share. A read (volume.info, volume.list,
   * status) is therefore asked up to API_READ_TRIES times within the call's deadline, each try
   * waiting a part of the time left (at least API_READ_TRY_MS_MIN; the first try of volume.info
   * and volume.list at most that: API_QUICK_READ_VERBS), and the server picks a node for each. So
   * is a change with a request id (hasRequestId: the catalog answers it sent again as it was
   * made), its Strata-Deadline the call's each time (a create's nodes take the time it gives
   * them); a change without one is sent once (asked again it could be made twice). Either is sent
   * again, with back-off until the deadline, when a node answered that it did nothing as it no
   * longer (or not surely) runs the controller (`notController`): the controller is moving, and
   * the next one will answer. Also for CONTROLLER_GAP_MS when no node served the controller's
   * subjects (`noController`), and for API_RECONNECT_GAP_MS after this client's NATS connection
   * came back when no node serves the API's (no responders: the NATS server restarted, and the
   * nodes have not subscribed again yet; nothing was delivered, so any request may go again).
   */
  async api<V extends ApiVerb>(verb: V, body: RequestMap[V], deadlineMs: number): Promise<ReplyMap[V]> {
    const nodesResubscribing = (e: unknown): boolean => {
      const at = this.transport.reconnectedAtMs;
      return e instanceof NoRespondersError && at !== undefined && Date.now() - at < API_RECONNECT_GAP_MS;
    };
    // A change one try of which may have reached a node ends, whatever its last try met, as
    // `timeout`, outcome unknown (changeFailure), unless a node answered it.
    const arrived = { maybe: false };
    try {
      return await this.whileControllerMoves(deadlineMs, () => this.apiOnce(verb, body, deadlineMs, arrived), nodesResubscribing);
    } catch (e) {
      throw API_READ_VERBS.has(verb) ? e : changeFailure(e, body, arrived.maybe);
    }
  }

  /**
   * `once` (a request served by the controller), tried again with back-off within `deadlineMs`
   * when the answer says the controller is moving and nothing was done: `notController`, at most
   * CONTROLLER_RETRIES_MAX times; `noController`, for CONTROLLER_GAP_MS; a failure `alsoAgain`
   * accepts, at most CONTROLLER_RETRIES_MAX times. Any other answer, or the last of these, is the
   * call's.
   */
  private async whileControllerMoves<T>(deadlineMs: number, once: () => Promise<T>, alsoAgain?: (e: unknown) => boolean): Promise<T> {
    let pauseMs = CONTROLLER_RETRY_MS_MIN;
    // Since when no node has served the controller's subjects, as the answers say (undefined: a
    // node answered since). Counted from the first such answer, not from the call: a call whose
    // earlier tries met the deposed controller still waits the whole gap for the next one.
    let gapSinceMs: number | undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        return await once();
      } catch (e) {
        const gap = unavailableSaying(e, 'noController');
        if (gap) gapSinceMs ??= this.nowMs();
        else gapSinceMs = undefined;
        const moving = unavailableSaying(e, 'notController') || (gap && this.nowMs() - gapSinceMs! < CONTROLLER_GAP_MS) || alsoAgain?.(e) === true;
        if (!moving || attempt > CONTROLLER_RETRIES_MAX || this.nowMs() + pauseMs >= deadlineMs) throw e;
        await new Promise((r) => setTimeout(r, pauseMs));
        // A clock that went past the deadline meanwhile: the node's answer, not a bare timeout.
        if (this.nowMs() >= deadlineMs) throw e;
      }
      pauseMs = Math.min(2 * pauseMs, CONTROLLER_RETRY_MS_MAX);
    }
  }

  private async apiOnce<V extends ApiVerb>(verb: V, body: RequestMap[V], deadlineMs: number, arrived: { maybe: boolean }): Promise<ReplyMap[V]> {
    const subject = apiSubject(this.cluster, verb);
    const validate = (value: unknown): ReplyMap[V] => validateReply(verb, value);
    const read = API_READ_VERBS.has(verb);
    if (!read && !hasRequestId(body)) return this.send(subject, verb, body, deadlineMs, validate).catch((e: unknown) => noteArrival(e, arrived));
    // The catalog's quick reads: their first try is short (a node that takes requests and does
    // not answer, frozen, costs that much), the next ones their part of what is left, sent to
    // every node's API router (a frozen one keeps its share of the API's queue group).
    return this.sendInTries(subject, verb, body, deadlineMs, validate, {
      tryDeadlineInHeader: read,
      quickFirst: API_QUICK_READ_VERBS.has(verb),
      againSubject: apiEverySubject(this.cluster, verb),
      arrived,
    });
  }

  /**
   * A request sent again when a try gets no answer: up to `tries` (default API_READ_TRIES) tries
   * within `deadlineMs`, each waiting its part of the time left (at least API_READ_TRY_MS_MIN;
   * the first at most that with `quickFirst`), the last one until the deadline. For requests that
   * may be answered twice: reads, and changes the server recognizes when sent again. With
   * `tryDeadlineInHeader` each try's Strata-Deadline is its own (a read: the server stops working
   * on it when the requester stops waiting), otherwise the call's. With `againSubject`, the tries
   * after the first go there (a shard's: `shardLeadersSubject`). Any answer, or a failure other
   * than `timeout`, one of a try never sent (`notSent`: the NATS connection was down for the
   * whole try, so the next try waits for the reconnect in its turn) or one whose reply was lost
   * with the connection (`disconnected`: sent again once it is back), ends it. @internal
   */
  async sendInTries<T>(
    subject: string,
    type: MessageType,
    body: unknown,
    deadlineMs: number,
    validate: (value: unknown) => T,
    opts: { tryDeadlineInHeader: boolean; quickFirst?: boolean; tries?: number; againSubject?: string; arrived?: { maybe: boolean } },
  ): Promise<T> {
    return inTries(
      deadlineMs,
      {
        tries: opts.tries ?? API_READ_TRIES,
        tryMsMin: API_READ_TRY_MS_MIN,
        ...(opts.quickFirst !== undefined ? { quickFirst: opts.quickFirst } : {}),
        nowMs: () => this.nowMs(),
        again: (e) => e instanceof ProtocolError && (e.code === 'timeout' || notSent(e) || e.details?.['disconnected'] === true),
      },
      (tryDeadlineMs, n) =>
        this.send(n > 1 ? (opts.againSubject ?? subject) : subject, type, body, opts.tryDeadlineInHeader ? tryDeadlineMs : deadlineMs, validate, tryDeadlineMs).catch((e: unknown) =>
          noteArrival(e, opts.arrived),
        ),
    );
  }
}

/**
 * What `createVolume` allows by default for each shard replica of the new volume: opening one
 * takes 14–20 ms on one node of a 2-core machine (nearly all of it fsyncs), more when loaded.
 */
export const CREATE_MS_PER_SHARD_REPLICA = 40;
/**
 * Bytes of a branch's copy a `branchVolume` allows a millisecond for, over the parent's whole
 * size once per replica (its pages are copied on each replica's device; a 256 MiB volume of 3
 * replicas took 3 s here with every page written).
 */
export const BRANCH_COPY_BYTES_PER_MS = 64_000;

/**
 * Least time a move of a replica (`moveReplica`) is given without a deadline of its own: a node
 * opens the new replica and the shard's leader changes its set, which waits for the new replica
 * to take the shard's log.
 */
export const MOVE_TIMEOUT_MS_MIN = 60_000;

/** A new request id (RequestId) for a catalog change: a random UUID. */
export function newRequestId(): string {
  return randomUUID();
}

/**
 * Notes in `arrived` a try's failure after which its request may have reached its receiver (it
 * went out and got no answer in time, or its reply was lost with the connection); rethrows it.
 */
function noteArrival(e: unknown, arrived: { maybe: boolean } | undefined): never {
  if (arrived !== undefined && e instanceof ProtocolError && !notSent(e) && (e.code === 'timeout' || e.details?.['disconnected'] === true)) arrived.maybe = true;
  throw e;
}

/**
 * The last failure of a change (an API change, an operator's request) as its caller should see
 * it. When a try of it may have reached a node (`arrived`: noteArrival), a failure that is not a
 * node's answer to it (`unavailable`: its reply lost with the connection, a try never sent, no
 * responders, the client closed; `timeout`) says nothing of that try, so the change may have
 * been made: `timeout` with `details.outcomeUnknown`, naming its request id (the original code in
 * `details.code`). Any `timeout` of a change names its request id, with which it may be made
 * again and answered as the first was ("Sent again", docs/protocol.md). A node's answer
 * (`not_found`, `bad_request`, …) stays.
 */
function changeFailure(e: unknown, body: unknown, arrived: boolean): unknown {
  if (!(e instanceof ProtocolError)) return e;
  const requestId = requestIdIn(body);
  const withId = requestId === undefined ? {} : { requestId };
  if (arrived && (e.code === 'unavailable' || e.code === 'timeout') && e.details?.['outcomeUnknown'] !== true) {
    return new ProtocolError('timeout', `${e.message}; a try of it may have reached a node: the change may or may not have been made`, {
      ...(e.details ?? {}),
      code: e.code,
      outcomeUnknown: true,
      ...withId,
    });
  }
  if (e.code === 'timeout' && requestId !== undefined && e.details?.['requestId'] === undefined) return new ProtocolError('timeout', e.message, { ...(e.details ?? {}), ...withId });
  return e;
}

/** Times `listVolumes` starts a paged list again when the catalog changed between its pages. */
export const LIST_RESTARTS_MAX = 3;

/** API verbs that change nothing: asked again when a try gets no answer (`StrataClient.api`). */
export const API_READ_VERBS: ReadonlySet<ApiVerb> = new Set<ApiVerb>(['volume.info', 'volume.list', 'status']);
/**
 * Reads the controller answers from memory (volume.info, volume.list): their first try waits
 * API_READ_TRY_MS_MIN at most. A status gathers every node's answer within its try's deadline,
 * so its tries keep their even parts.
 */
export const API_QUICK_READ_VERBS: ReadonlySet<ApiVerb> = new Set<ApiVerb>(['volume.info', 'volume.list']);
/** Tries of a read API verb within its call's deadline, and the shortest try. */
export const API_READ_TRIES = 3;
export const API_READ_TRY_MS_MIN = 1000;

/**
 * The operator's verbs sent in tries (`controlRequest`): a copy asked again joins the run under
 * way (a move) or sets what the first set. Not a change of the controller nodes nor a catalog
 * recovery, which the controller runs one after another: a copy would wait behind the first and
 * answer `unchanged`, or late.
 */
const TRIED_CONTROL_VERBS: ReadonlySet<string> = new Set(['shard.move', 'node.drain', 'rebalance']);
/**
 * A try of one of them: a third of the time left, within these bounds. The shortest is well
 * above what the controller takes to answer (moves answer when done, and are joined when asked
 * again while running).
 */
const CONTROL_TRY_MS_MIN = 5000;
const CONTROL_TRY_MS_MAX = 10_000;

/**
 * First and largest pause before an API request is sent again after a node answered that it no
 * longer runs the controller (`notController`): a new controller takes its seat within an
 * election timeout and a check of the seat (200 ms). At most CONTROLLER_RETRIES_MAX times.
 */
const CONTROLLER_RETRY_MS_MIN = 50;
const CONTROLLER_RETRY_MS_MAX = 500;
const CONTROLLER_RETRIES_MAX = 40;

/**
 * An `unavailable` whose details say what it is (`mark`: true), and that nothing was done:
 * - `notController`: a node's answer that it does not run the controller (any more, or surely);
 * - `noController`: the API router's answer that no node serves the controller's subjects now;
 * - `handingOver`: a shard leader's refusal while it hands its leadership over.
 */
function unavailableSaying(error: unknown, mark: 'notController' | 'noController' | 'handingOver'): boolean {
  return error instanceof ProtocolError && error.code === 'unavailable' && error.details?.[mark] === true;
}

/**
 * How long an API request is sent again while no node serves the controller's subjects (the
 * router's `noController`), from the first such answer: between a controller giving its seat up
 * and the next taking it (an election of the catalog shard's leader after a kill, then the seat's
 * check, flush and load of the catalog: a few hundred milliseconds on an idle machine, seconds
 * on a loaded one). Past that, no controller runs (a majority of the controller nodes down, say),
 * which is the answer.
 */
const CONTROLLER_GAP_MS = 5000;

/**
 * How long after its NATS connection came back the client sends an API request again that found
 * no node serving the API's subjects: the nodes reconnect to a restarted server in their own
 * time (every 250 ms, as the client, plus jitter), and subscribe again then.
 */
const API_RECONNECT_GAP_MS = 5000;

/** Connects to the NATS servers and returns a client of the Strata cluster `cluster`. */
export async function connect(options: ConnectOptions): Promise<StrataClient> {
  const cluster = checkToken(options.cluster ?? CLUSTER_DEFAULT, 'cluster');
  const timeoutMs = checkTimeoutMs(options.timeoutMs ?? TIMEOUT_MS_DEFAULT);
  const servers = Array.isArray(options.servers) ? options.servers : [options.servers];
  if (servers.length === 0 || servers.some((s) => typeof s !== 'string' || s === '')) {
    throw new ProtocolError('bad_request', 'servers: expected one or more NATS URLs', { path: 'servers' });
  }
  let nc: NatsConnection;
  // A `tls://` URL requires TLS (runtime/nats-tls.ts).
  const tls = natsTlsOption(servers, options.tls);
  try {
    nc = await natsConnect({
      servers,
      timeout: timeoutMs,
      // The client maps every failure to a typed error with its subject; the stack trace nats.js
      // would capture for each request costs more CPU than the rest of a request's client work.
      noAsyncTraces: true,
      // A server restarting: back within a quarter second of it, for as long as the client is
      // open (each call stays bounded by its deadline). The library's default, every 2 s and 10
      // times, held calls a further 2 s after a restart and then gave up for good.
      reconnectTimeWait: RECONNECT_WAIT_MS,
      maxReconnectAttempts: -1,
      // Nor do two refusals of the user in a row (a server restarted without its password, say):
      // the library would otherwise close the connection for good.
      ignoreAuthErrorAbort: true,
      ...(options.name === undefined ? {} : { name: options.name }),
      // A user's replies come to inboxes only it may read (messages/subjects.ts clientInboxPrefix).
      ...(options.user === undefined ? {} : { user: options.user, inboxPrefix: clientInboxPrefix(options.user) }),
      ...(options.pass === undefined ? {} : { pass: options.pass }),
      ...(tls === undefined ? {} : { tls }),
    });
  } catch (err) {
    // With what to give: a user (docs/replication.md, "Locking the subjects"), a CA, a certificate.
    throw await natsConnectError(err, { servers, ...(options.user === undefined ? {} : { user: options.user }), ...(tls === undefined ? {} : { tls }), details: { servers: servers.map(redactNatsUrl) } });
  }
  return new StrataClient(new NatsTransport(nc), { cluster, timeoutMs });
}

/** A client over any transport (tests use a fake one). */
export function createClient(transport: ClientTransport, options?: ClientOptions | null): StrataClient {
  return new StrataClient(transport, options);
}

// ---------------------------------------------------------------------------------------------
// Volume
// ---------------------------------------------------------------------------------------------

/** One request to one shard, planned from a volume's geometry. */
interface ShardCall {
  shard: number;
  type: ShardVerb;
  body: ShardWriteRequest | ShardZeroRequest | ShardReadRequest | ShardFlushRequest | ShardMapRequest;
  /** For reads: the position in the caller's list of each requested page. */
  indices: number[];
  /** A write's: when its first try was sent (`ShardWriteRequest.sentMs`), once it was. */
  sentMs?: number;
  /**
   * A write's: a try of it got no answer (or `timeout`): it may have reached a leader and been
   * committed, so no later refusal of it can say that it was not done (`mayStillCommit`).
   */
  unanswered?: boolean;
}

/** Where a shard's requests go (`Volume.routeOf`). */
interface ShardRoute {
  subject: string;
  /** Every replica that leads the shard, as far as each knows: a write's tries, a read's after the first. */
  leaders: string;
  readTries: typeof READ_TRIES & { againSubject: string };
}

/** Each page's CRC-32C of a shard.read reply, made as the reply was checked (`checkReadReply`). */
const readReplyPageCrcs = new WeakMap<object, number[]>();

/**
 * Checks a shard.read reply's pages against its `crc` (one without is a node's of a version
 * before the field), keeping each page's checksum for `pageCrcsOf`: one pass over the pages.
 * Throws `corruption` with `details.inTransit` on a mismatch (checkPageDataCrc).
 */
function checkReadReply(r: ShardReadReply, what: string): void {
  const { crcs, crc } = eachPageCrc(r.pages);
  if (r.crc !== undefined) checkPageDataCrc(r.crc, crc, what);
  readReplyPageCrcs.set(r, crcs);
}

/** The page checksums `checkReadReply` kept of a shard.read reply. */
function pageCrcsOf(outcome: ShardOutcome): number[] {
  const crcs = readReplyPageCrcs.get(outcome);
  if (crcs === undefined) throw new ProtocolError('internal', 'a shard.read reply not checked on arrival');
  return crcs;
}

interface ShardOutcome {
  lsn: number;
  term?: number;
  pages?: Uint8Array[];
  /** Of a shard.map. */
  end?: number;
  ranges?: number[];
}

type Settled = { ok: true; value: ShardOutcome } | { ok: false; error: unknown };

/**
 * Whether requests planned by `a` still address the same pages of the same volume under `b`.
 * The page count is not compared: a volume keeps its id when it is resized, and only grows
 * (volume.resize), so a request planned by its smaller size is still in range, and one already
 * answered must not be planned again with another write id (it would be written twice, over
 * any write to its pages answered meanwhile).
 */
function sameLayout(a: VolumeInfo, b: VolumeInfo): boolean {
  return (
    a.id === b.id &&
    a.pageSize === b.pageSize &&
    a.shards === b.shards &&
    a.stripePages === b.stripePages
  );
}

/**
 * Pages per shard request for a page size: within PAGES_PER_REQUEST_MAX, REQUEST_DATA_BYTES_MAX
 * and the server's max_payload. `too_large` if not even one page fits in a message.
 */
export function pagesPerRequest(pageSize: number, maxPayloadBytes: number): number {
  const byPayload = Math.floor((maxPayloadBytes - ENVELOPE_BYTES_FIXED) / (pageSize + ENVELOPE_BYTES_PER_PAGE));
  if (byPayload < 1) {
    throw new ProtocolError(
      'too_large',
      `a page of ${pageSize} bytes does not fit in a message of at most ${maxPayloadBytes} bytes (the server's max_payload)`,
      { pageSize, maxPayloadBytes },
    );
  }
  return Math.min(PAGES_PER_REQUEST_MAX, Math.floor(REQUEST_DATA_BYTES_MAX / pageSize), byPayload);
}

/** Groups caller positions by shard (shards ascending, positions in caller order), then chunks them. */
function planChunks(pages: readonly number[], info: VolumeInfo, chunkPages: number): Array<{ shard: number; indices: number[] }> {
  if (pages.length === 1) return [{ shard: shardOfPage(pages[0]!, info), indices: [0] }];
  const byShard = new Map<number, number[]>();
  for (let i = 0; i < pages.length; i++) {
    const shard = shardOfPage(pages[i]!, info);
    let list = byShard.get(shard);
    if (list === undefined) byShard.set(shard, (list = []));
    list.push(i);
  }
  const chunks: Array<{ shard: number; indices: number[] }> = [];
  for (const shard of [...byShard.keys()].sort((a, b) => a - b)) {
    const list = byShard.get(shard)!;
    for (let at = 0; at < list.length; at += chunkPages) chunks.push({ shard, indices: list.slice(at, at + chunkPages) });
  }
  return chunks;
}

/** Highest LSN overall and per shard. */
function mergeLsns(calls: readonly ShardCall[], outcomes: readonly ShardOutcome[]): LsnResult {
  if (calls.length === 1) {
    const { lsn, term } = outcomes[0]!;
    const shard = calls[0]!.shard;
    return { lsn, lsns: [term === undefined ? { shard, lsn } : { shard, lsn, term }] };
  }
  const byShard = new Map<number, ShardLsn>();
  let lsn = 0;
  calls.forEach((call, i) => {
    const outcome = outcomes[i]!;
    lsn = Math.max(lsn, outcome.lsn);
    const prev = byShard.get(call.shard);
    if (prev === undefined || outcome.lsn > prev.lsn) {
      byShard.set(call.shard, outcome.term === undefined ? { shard: call.shard, lsn: outcome.lsn } : { shard: call.shard, lsn: outcome.lsn, term: outcome.term });
    }
  });
  return { lsn, lsns: [...byShard.values()].sort((a, b) => a.shard - b.shard) };
}

/** Runs `tasks` with at most `limit` in flight; results in task order, never rejects. */
async function settleBounded(tasks: ReadonlyArray<() => Promise<ShardOutcome>>, limit: number): Promise<Settled[]> {
  if (tasks.length === 1) {
    // The common call (one shard request): no worker pool.
    try {
      return [{ ok: true, value: await tasks[0]!() }];
    } catch (error) {
      return [{ ok: false, error }];
    }
  }
  const results = new Array<Settled>(tasks.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const i = next++;
      try {
        results[i] = { ok: true, value: await tasks[i]!() };
      } catch (error) {
        results[i] = { ok: false, error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

/**
 * Page calls on one volume, routed straight to its shards. Get one with `client.volume(name)`.
 * The volume's geometry is fetched once (volume.info) and cached; it is fetched again when a
 * shard subject has no responders.
 */
export class Volume {
  private infoPromise: Promise<VolumeInfo> | undefined;
  /** The info fetch that last succeeded, with its value (read without a timer). */
  private infoSettled: { promise: Promise<VolumeInfo>; value: VolumeInfo } | undefined;
  /** The options of a write's tries (`sendWrite`), made once. */
  private readonly writeTries = { ...WRITE_TRIES, nowMs: (): number => this.client.nowMs(), again: writeTriedAgain };
  /** The subjects of the shards of the info last sent to (`routeOf`). */
  private routes: { info: VolumeInfo; byShard: Array<ShardRoute | undefined> } | undefined;

  /** Use `client.volume(name)`. */
  constructor(
    private readonly client: StrataClient,
    /** The volume's name. */
    readonly name: string,
    /**
     * The volume's id, when the caller holds it to one volume (`client.volume(name, { id })`): a
     * volume created again under the name is another, and every call fails `not_found` instead
     * of reaching it (whose geometry the caller may not expect).
     */
    readonly pinnedId?: string,
  ) {}

  /**
   * The volume's geometry (cached after the first fetch). With `refresh`, fetched again from the
   * catalog (the cached one is kept when the catalog cannot be reached).
   */
  async info(options: (CallOptions & { refresh?: boolean }) | null = {}): Promise<VolumeInfo> {
    const o = optionsOf(options);
    const deadlineMs = this.client.deadline(o.deadlineMs);
    return o.refresh === true ? this.refreshInfo(this.currentInfo(), deadlineMs) : this.cachedInfo(deadlineMs);
  }

  /** Writes one page (exactly pageSize bytes). Resolves once the write is committed. */
  async write(page: number, data: Uint8Array): Promise<LsnResult> {
    return this.writePages([{ page, data }]);
  }

  /**
   * Writes 1..CALL_PAGES_MAX distinct pages, each exactly pageSize bytes (vectored): one request
   * per shard, split further to fit the message limits, all sent concurrently. Resolves once every
   * page is committed, with the highest LSN and each shard's LSN. On failure some shards may have
   * applied their pages.
   */
  async writePages(pages: readonly PageToWrite[], options: WriteOptions | null = {}): Promise<LsnResult> {
    const opts = optionsOf(options);
    const deadlineMs = this.client.deadline(opts.deadlineMs);
    const list = expectArray(pages, 'pages', { lengthMin: 1, lengthMax: CALL_PAGES_MAX, maxCode: 'too_large' });
    const seen = new Map<number, number>();
    const numbers: number[] = [];
    const entries: PageWrite[] = [];
    const crcs: (number | undefined)[] = [];
    for (let i = 0; i < list.length; i++) {
      const path = `pages[${i}]`;
      const entry = expectMap(list[i], path);
      const page = expectInteger(field(entry, 'page'), `${path}.page`, { min: 0, max: PAGE_COUNT_MAX - 1, maxCode: 'out_of_range' });
      const data = expectBytes(field(entry, 'data'), `${path}.data`);
      const crc = field(entry, 'crc');
      crcs.push(crc === undefined ? undefined : expectInteger(crc, `${path}.crc`, { min: 0, max: 0xffffffff }));
      const first = seen.get(page);
      if (first !== undefined) fail('bad_request', `${path}.page`, `duplicate page ${page} (also at pages[${first}])`);
      seen.set(page, i);
      numbers.push(page);
      entries.push({ page, data });
    }
    const { calls, outcomes } = await this.run(deadlineMs, (info) => {
      validatePageWrite({ pages: entries }, info.pageSize, info.pageCount);
      const chunkPages = pagesPerRequest(info.pageSize, this.client.maxPayloadBytes);
      return planChunks(numbers, info, chunkPages).map(({ shard, indices }) => ({
        shard,
        type: 'shard.write' as const,
        body: writeBody(indices.map((i) => entries[i]!), this.client.writeId(), indices.map((i) => crcs[i])),
        indices,
      }));
    });
    return mergeLsns(calls, outcomes);
  }

  /**
   * Makes pages `first`..`first + count - 1` zeros: one small request to each shard holding a
   * page of the range (no page data, whatever its length; each shard's part atomic), all sent
   * concurrently. Resolves once every part is committed, with the highest LSN and each shard's
   * LSN. On failure some shards may have made their part zeros (`details.partial`).
   */
  async zeroPages(first: number, count: number, options: WriteOptions | null = {}): Promise<LsnResult> {
    const { calls, outcomes } = await this.runOverRange('shard.zero', first, count, options);
    return mergeLsns(calls, outcomes);
  }

  /**
   * `type` with the range `first`..`first + count - 1` (checked against the volume) sent to each
   * shard holding a page of it, concurrently; a body per request (a write's retry notes its
   * earlier attempts on it).
   */
  private runOverRange(type: 'shard.zero' | 'shard.map', first: number, count: number, options: WriteOptions | null): ReturnType<Volume['run']> {
    const opts = optionsOf(options);
    const deadlineMs = this.client.deadline(opts.deadlineMs);
    const range = {
      first: expectInteger(first, 'first', { min: 0, max: PAGE_COUNT_MAX - 1, maxCode: 'out_of_range' }),
      count: expectInteger(count, 'count', { min: 1, max: PAGE_COUNT_MAX, maxCode: 'out_of_range' }),
    };
    return this.run(deadlineMs, (info) => {
      validatePageZero(range, info.pageCount);
      return shardsOfRange(range.first, range.count, info).map((shard) => ({
        shard,
        type,
        body: type === 'shard.zero' ? { ...range, writeId: this.client.writeId() } : { ...range },
        indices: [],
      }));
    });
  }

  /**
   * Which pages of `first`..`first + count - 1` may hold data: one shard.map to each shard
   * holding a page of the range, concurrently, each answered by its leader as of its latest
   * commit (`lsns`). The answer covers pages `first`..`end - 1` (`end` more than `first`, at
   * most `first + count`): a shard whose pages there make more than SHARD_MAP_RANGES_MAX ranges
   * cuts its answer short, and the answer ends where the shortest one does. In it, the pages
   * outside `ranges` read as zeros (never written, or made zeros); those in `ranges` (ascending,
   * apart, adjacent shards' merged) were written since, some maybe with zeros. For block
   * clients that skip what reads as zeros (the NBD export's block status).
   */
  async pagesWithData(first: number, count: number, options: CallOptions | null = {}): Promise<PagesWithData> {
    const { calls, outcomes } = await this.runOverRange('shard.map', first, count, options);
    const end = Math.min(...outcomes.map((o) => o.end!));
    const pairs: Array<[number, number]> = [];
    for (const o of outcomes) {
      for (let i = 0; i < o.ranges!.length; i += 2) {
        const from = o.ranges![i]!;
        if (from < end) pairs.push([from, Math.min(o.ranges![i + 1]!, end - from)]);
      }
    }
    pairs.sort((a, b) => a[0] - b[0]);
    const ranges: Array<{ first: number; count: number }> = [];
    for (const [from, n] of pairs) appendRange(ranges, from, n);
    return { end, ranges, ...mergeLsns(calls, outcomes) };
  }

  /** Reads one page. */
  read(page: number, options?: ReadOptions | null): Promise<Uint8Array>;
  /** Reads pages (repeats allowed); one entry per page, in request order. */
  read(pages: readonly number[], options?: ReadOptions | null): Promise<Uint8Array[]>;
  async read(pages: number | readonly number[], options?: ReadOptions | null): Promise<Uint8Array | Uint8Array[]> {
    if (typeof pages === 'number') return (await this.readPages([pages], options)).pages[0]!;
    return (await this.readPages(pages, options)).pages;
  }

  /**
   * Reads 1..CALL_PAGES_MAX pages (repeats allowed) and the LSNs they reflect: one request per
   * shard, split to fit the message limits, all sent concurrently, merged in request order.
   */
  async readPages(pages: readonly number[], readOptions: ReadOptions | null = {}): Promise<ReadResult> {
    const options = optionsOf(readOptions);
    const deadlineMs = this.client.deadline(options.deadlineMs);
    const list = expectArray(pages, 'pages', { lengthMin: 1, lengthMax: CALL_PAGES_MAX, maxCode: 'too_large' });
    const numbers = list.map((page, i) =>
      expectInteger(page, `pages[${i}]`, { min: 0, max: PAGE_COUNT_MAX - 1, maxCode: 'out_of_range' }),
    );
    const { lsn, lsns } = validateReadAt(options.lsn, options.lsns);
    const lsnOf = lsns === undefined ? undefined : new Map(lsns.map((entry) => [entry.shard, entry.lsn]));
    const plan = (info: VolumeInfo): ShardCall[] => {
      numbers.forEach((page, i) =>
        expectInteger(page, `pages[${i}]`, { min: 0, max: info.pageCount - 1, maxCode: 'out_of_range' }),
      );
      if (lsns !== undefined) checkReadLsnShards(lsns, info.shards, 'lsns');
      const chunkPages = pagesPerRequest(info.pageSize, this.client.maxPayloadBytes);
      return planChunks(numbers, info, chunkPages).map(({ shard, indices }) => {
        const body: ShardReadRequest = { pages: indices.map((i) => numbers[i]!) };
        const at = lsnOf?.get(shard) ?? lsn;
        if (at !== undefined) body.lsn = at;
        return { shard, type: 'shard.read' as const, body, indices };
      });
    };
    let read = await this.run(deadlineMs, plan);
    // The volume deleted and created again under its name between the reads: read again, all of
    // it from the volume as it is now.
    while (!(await this.oneLsnPerShard(read, deadlineMs))) read = await this.run(deadlineMs, plan);
    const { calls, outcomes } = read;
    const out = new Array<Uint8Array>(numbers.length);
    const crcs = new Array<number>(numbers.length);
    calls.forEach((call, c) => {
      const got = outcomes[c]!.pages!;
      const gotCrcs = pageCrcsOf(outcomes[c]!);
      call.indices.forEach((at, j) => {
        out[at] = got[j]!;
        crcs[at] = gotCrcs[j]!;
      });
    });
    return { pages: out, crc: combinePageCrcs(crcs, read.info.pageSize), ...mergeLsns(calls, outcomes) };
  }

  /**
   * A shard's pages read in several requests (more than one message holds) must reflect one
   * LSN, the one the result reports: the requests answered at an older LSN than the shard's
   * newest are read again at that LSN (GetPage@LSN), in place in `outcomes`. (A shard read at an
   * LSN the caller gave is answered at that LSN by every request: none is read again.)
   * False, with nothing read again, if the volume's geometry is no longer the one `read` was
   * planned by (the volume was created again under its name): its pages and LSNs are not the
   * new volume's.
   */
  private async oneLsnPerShard(
    read: { info: VolumeInfo; calls: ShardCall[]; outcomes: ShardOutcome[] },
    deadlineMs: number,
  ): Promise<boolean> {
    const { calls, outcomes } = read;
    if (calls.length === 1) return true;
    const newest = new Map<number, number>();
    calls.forEach((call, c) => newest.set(call.shard, Math.max(newest.get(call.shard) ?? 0, outcomes[c]!.lsn)));
    const older = calls.flatMap((call, c) => (outcomes[c]!.lsn < newest.get(call.shard)! ? [c] : []));
    if (older.length === 0) return true;
    const again = await this.run(deadlineMs, (info) =>
      sameLayout(info, read.info)
        ? older.map((c) => ({ ...calls[c]!, body: { pages: (calls[c]!.body as ShardReadRequest).pages, lsn: newest.get(calls[c]!.shard)! } }))
        : [],
    );
    if (!sameLayout(again.info, read.info)) return false;
    older.forEach((c, j) => (outcomes[c] = again.outcomes[j]!));
    return true;
  }

  /** Makes every acknowledged write durable on every shard (shard.flush to each, concurrently). */
  async flush(options: CallOptions | null = {}): Promise<LsnResult> {
    const { calls, outcomes } = await this.run(this.client.deadline(optionsOf(options).deadlineMs), (info) =>
      Array.from({ length: info.shards }, (_, shard) => ({ shard, type: 'shard.flush' as const, body: {}, indices: [] })),
    );
    return mergeLsns(calls, outcomes);
  }

  // ------------------------------------------------------------------------------------------

  /**
   * Fetches the volume's info once for every call that needs it meanwhile: with the client's
   * own timeout, not the deadline of the call that happened to start it (a call with a short
   * deadline would fail the others, one with a long one would hold them past theirs).
   */
  private fetchInfo(): Promise<VolumeInfo> {
    const fetched = this.client.api('volume.info', { name: this.name }, this.client.deadline());
    const pinned = this.pinnedId;
    const promise =
      pinned === undefined
        ? fetched
        : fetched.then((info) => {
            if (info.id !== pinned) {
              throw new ProtocolError('not_found', `volume ${this.name} (id ${pinned}) was deleted: the volume of that name now is another (id ${info.id})`, { name: this.name, id: pinned });
            }
            return info;
          });
    this.infoPromise = promise;
    promise.then(
      (value) => void (this.infoSettled = { promise, value }),
      () => {
        if (this.infoPromise === promise) this.infoPromise = undefined;
      },
    );
    return promise;
  }

  /** `info`, or a `timeout` at `deadlineMs` if it has not come by then (it goes on for the others). */
  private within(info: Promise<VolumeInfo>, deadlineMs: number): Promise<VolumeInfo> {
    // The common case, info already here: no timer.
    if (this.infoSettled?.promise === info) return Promise.resolve(this.infoSettled.value);
    const leftMs = deadlineMs - this.client.nowMs();
    if (leftMs <= 0) return Promise.reject(new ProtocolError('timeout', `the deadline passed before the info of volume ${this.name} came`));
    return withTimeout(info, leftMs, () => new ProtocolError('timeout', `the info of volume ${this.name} did not come before the deadline`));
  }

  /** The info fetch in flight or done, or a new one. */
  private currentInfo(): Promise<VolumeInfo> {
    return this.infoPromise ?? this.fetchInfo();
  }

  private cachedInfo(deadlineMs: number): Promise<VolumeInfo> {
    return this.within(this.currentInfo(), deadlineMs);
  }

  /**
   * Fetches the volume's info again, unless another call already did since `stale` was used.
   * When the catalog cannot be reached (its node is down or re-electing), the cached info is
   * kept: the shards may still be served, and a deleted volume is still recognized by
   * `not_found` once the catalog answers again.
   */
  private async refreshInfo(stale: Promise<VolumeInfo>, deadlineMs: number): Promise<VolumeInfo> {
    // Another call's fetch since is waited for as this call's own would be: one that does not
    // come in time leaves this call with the cached info too.
    const fetching = this.infoPromise !== undefined && this.infoPromise !== stale ? this.infoPromise : this.fetchInfo();
    try {
      return await this.within(fetching, deadlineMs);
    } catch (e) {
      if (e instanceof ProtocolError && (e.code === 'unavailable' || e.code === 'timeout')) {
        // The newest info the handle had (another call may have learned a newer one, a resize,
        // since this call's `stale`), never an older one. `stale` may itself not have come (a
        // refresh asked before any info did): not waited for past the deadline either.
        const kept = this.infoSettled !== undefined && this.infoSettled.promise !== fetching ? this.infoSettled.promise : stale;
        const info = await withTimeout(kept, Math.max(0, deadlineMs - this.client.nowMs()), () => e);
        this.keepInfo(kept, fetching);
        return info;
      }
      throw e;
    }
  }

  /**
   * `stale` is the cached info again after `fetching` failed or did not come in a call's time:
   * unless another fetch has started since (its info is newer). A fetch still in flight then
   * replaces it when it answers after all (it goes on with the client's own timeout).
   */
  private keepInfo(stale: Promise<VolumeInfo>, fetching: Promise<VolumeInfo>): void {
    if (this.infoPromise !== undefined && this.infoPromise !== fetching) return;
    this.infoPromise = stale;
    fetching.then(
      () => {
        if (this.infoPromise === stale) this.infoPromise = fetching;
      },
      () => undefined,
    );
  }

  /**
   * Shard `shard`'s subjects under `info` and its reads' tries (a read's tries after the first
   * go to every leader of the shard): made once per volume info, not for every request.
   */
  private routeOf(info: VolumeInfo, shard: number): ShardRoute {
    if (this.routes?.info !== info) this.routes = { info, byShard: new Array<ShardRoute | undefined>(info.shards) };
    let route = this.routes.byShard[shard];
    if (route === undefined) {
      const leaders = shardLeadersSubject(this.client.cluster, info.id, shard);
      route = { subject: shardSubject(this.client.cluster, info.id, shard), leaders, readTries: { ...READ_TRIES, againSubject: leaders } };
      this.routes.byShard[shard] = route;
    }
    return route;
  }

  private async sendCalls(info: VolumeInfo, calls: readonly ShardCall[], deadlineMs: number): Promise<Settled[]> {
    const tasks = calls.map((call) => async (): Promise<ShardOutcome> => {
      const { subject, leaders, readTries } = this.routeOf(info, call.shard);
      switch (call.type) {
        case 'shard.write':
        case 'shard.zero':
          return this.sendWrite(call, leaders, deadlineMs);
        // Reads and flushes are sent again when a try gets no answer (StrataClient.sendInTries):
        // a leader killed with the request, or frozen, never answers it, and the next try,
        // sent to every leader, reaches the shard's next one.
        case 'shard.read':
          return this.client.sendInTries(subject, call.type, call.body, deadlineMs, (value) =>
            validateShardReadReply(value, { count: call.indices.length, pageSize: info.pageSize }),
          readTries);
        case 'shard.flush':
          return this.client.sendInTries(subject, call.type, call.body, deadlineMs, validateShardFlushReply, readTries);
        case 'shard.map':
          return this.client.sendInTries(subject, call.type, call.body, deadlineMs, (value) => validateShardMapReply(value, call.body as ShardMapRequest), readTries);
      }
    });
    const settled = await settleBounded(tasks, REQUESTS_IN_FLIGHT_MAX);
    settled.forEach((s, i) => {
      if (!s.ok && isWrite(calls[i]!)) settled[i] = noteEarlierAttempt(calls[i]!, s);
    });
    return settled;
  }

  /**
   * A write's request (shard.write, shard.zero) in tries within the call's deadline
   * (WRITE_TRIES), each sent to every replica that leads the shard, as far as it knows
   * (`leaders`, the shard's leaders subject): a leader frozen while the shard elected the next
   * one takes it too, and cannot commit it (a majority has a later term), and a leader killed
   * with it never answers; the next leader answers it, or the next try. Each try carries the
   * write's id: a leader whose log holds a record of it answers with that record, once
   * committed, instead of writing the pages again. Every send after the call's first (a try, or
   * a request sent again after `not_leader`) names when that was (`sentMs`). A try answered
   * `timeout` with `details.outcomeUnknown` ends the call: no leader can tell. A first send that
   * found no responders reached no leader: the next is a first send too.
   */
  private sendWrite(call: ShardCall, leaders: string, deadlineMs: number): Promise<ShardOutcome> {
    const body = call.body as ShardWriteRequest | ShardZeroRequest;
    return inTries(
      deadlineMs,
      this.writeTries,
      (tryDeadlineMs) => {
        const first = call.sentMs === undefined;
        if (first) call.sentMs = this.client.nowMs();
        const sent = this.client.send(leaders, call.type, first ? body : { ...body, sentMs: call.sentMs }, deadlineMs, validateShardWriteReply, tryDeadlineMs);
        return sent.catch((e: unknown) => {
          // Not sent at all (its deadline passed before it went out, or the NATS connection was
          // down for the whole try): nothing may commit from it.
          const unsent = notSent(e);
          if (first && (e instanceof NoRespondersError || unsent)) delete call.sentMs;
          if (e instanceof ProtocolError && !unsent && (e.code === 'timeout' || e.details?.['disconnected'] === true)) call.unanswered = true;
          throw e;
        });
      },
    );
  }

  /**
   * Plans a call from the volume's geometry, sends it, and on "no responders" refreshes the
   * geometry once: only the missed requests are sent again if the geometry is unchanged, the
   * whole call is re-planned if the volume changed (re-created under the same name). Requests
   * that still meet no leader (no responders while a shard elects one, or `not_leader` from a
   * deposed leader) are sent again with a growing back-off until the call's deadline. A request
   * that no try of `sendCalls` got an answer to is not sent again here: a write's outcome is then
   * unknown to the client. A write that a deposed leader had already put in its log is sent
   * again naming that record (`earlier`), so that the next leader answers with it if it holds it
   * rather than writing the pages a second time.
   */
  private async run(
    deadlineMs: number,
    plan: (info: VolumeInfo) => ShardCall[],
  ): Promise<{ info: VolumeInfo; calls: ShardCall[]; outcomes: ShardOutcome[] }> {
    let calls: ShardCall[] = [];
    let settled: Settled[] = [];
    try {
      return await this.runCalls(deadlineMs, plan, (c, s) => {
        calls = c;
        settled = s;
      });
    } catch (e) {
      throw partlyWritten(stillCommitting(e, calls, settled), calls, settled);
    }
  }

  private async runCalls(
    deadlineMs: number,
    plan: (info: VolumeInfo) => ShardCall[],
    progress: (calls: ShardCall[], settled: Settled[]) => void,
  ): Promise<{ info: VolumeInfo; calls: ShardCall[]; outcomes: ShardOutcome[] }> {
    const infoPromise = this.currentInfo();
    let info = await this.within(infoPromise, deadlineMs);
    let calls: ShardCall[];
    try {
      calls = plan(info);
    } catch (e) {
      // Refused by the cached geometry (a page past its end, data not of its page size): the
      // volume may have been deleted and created again, larger. Checked once more against its
      // info as the catalog has it now.
      // Bounded (GEOMETRY_RECHECK_MS): a catalog that does not answer leaves the refusal as it was.
      if (!(e instanceof ProtocolError) || !(e.code === 'out_of_range' || (e.code === 'bad_request' && /\.data: expected \d+ bytes/.test(e.message)))) throw e;
      const fresh = await this.refreshInfo(infoPromise, Math.min(deadlineMs, this.client.nowMs() + GEOMETRY_RECHECK_MS));
      if (fresh === info) throw e;
      info = fresh;
      calls = plan(info);
    }
    let settled = await this.sendCalls(info, calls, deadlineMs);
    progress(calls, settled);
    /** The whole call planned again and sent under `fresh` (the volume made again under its name). */
    const replan = async (fresh: VolumeInfo): Promise<void> => {
      info = fresh;
      calls = plan(info);
      settled = await this.sendCalls(info, calls, deadlineMs);
      progress(calls, settled);
    };
    // The common call: every request answered.
    if (settled.every((s) => s.ok)) return { info, calls, outcomes: settled.map((s) => (s as { ok: true; value: ShardOutcome }).value) };
    throwFinal(calls, settled);
    if (settled.some((s) => !s.ok && s.error instanceof NoRespondersError)) {
      const fresh = await this.refreshInfo(infoPromise, deadlineMs);
      if (sameLayout(info, fresh)) {
        const missed = settled.flatMap((s, i) => (s.ok ? [] : [i]));
        takeRetried(settled, missed, await this.sendCalls(fresh, missed.map((i) => calls[i]!), deadlineMs));
      } else await replan(fresh);
      throwFinal(calls, settled);
    }
    let backoffMs = LEADER_RETRY_MS_MIN;
    // The info that `info` came from, and when it may be fetched again in this loop.
    let known = this.infoPromise ?? infoPromise;
    let recheckAtMs = 0;
    for (let attempt = 0; attempt < LEADER_RETRIES_MAX && settled.some((s) => !s.ok) && this.client.nowMs() + backoffMs < deadlineMs; attempt++) {
      await new Promise((r) => setTimeout(r, backoffMs));
      if (this.client.nowMs() >= deadlineMs) break;
      backoffMs = Math.min(backoffMs * 2, LEADER_RETRY_MS_MAX);
      const missed = settled.flatMap((s, i) => (s.ok ? [] : [i]));
      const overtaken = takeRetried(settled, missed, await this.sendCalls(info, missed.map((i) => calls[i]!), deadlineMs));
      throwFinal(calls, settled);
      if (overtaken) break;
      // No host serves a shard (after a first answer that was not that: a leader that closed its
      // replica): the volume may have been deleted meanwhile (`not_found` from the catalog ends
      // the call) or made again; fetched at most every INFO_RECHECK_MS, each fetch bounded.
      if (this.client.nowMs() < recheckAtMs || !settled.some((s) => !s.ok && s.error instanceof NoRespondersError)) continue;
      recheckAtMs = this.client.nowMs() + INFO_RECHECK_MS;
      const fresh = await this.refreshInfo(known, Math.min(deadlineMs, this.client.nowMs() + GEOMETRY_RECHECK_MS));
      known = this.infoPromise ?? known;
      if (sameLayout(info, fresh)) continue;
      await replan(fresh);
      throwFinal(calls, settled);
    }
    // A request whose earlier attempt may still commit is the one to report, if any.
    const failing = settled.flatMap((s, i) => (s.ok ? [] : [i]));
    const still = failing.find((i) => mayStillCommit(calls[i]!)) ?? failing[0] ?? -1;
    if (still >= 0) {
      const failed = settled[still] as { ok: false; error: unknown };
      if (mayStillCommit(calls[still]!)) {
        throw new ProtocolError(
          'timeout',
          `no leader of shard ${calls[still]!.shard} answered the write before its deadline; ${earlierOf(calls[still]!).length > 0 ? 'an earlier attempt left with a deposed leader' : 'a try of it that got no answer'} may still commit: the write may or may not be committed`,
          { ...(failed.error instanceof ProtocolError ? { ...(failed.error.details ?? {}), code: failed.error.code } : {}), ...earlierDetails(calls[still]!) },
        );
      }
      if (failed.error instanceof ProtocolError && (failed.error.code === 'not_leader' || handingOver(failed.error))) throw failed.error;
      const shard = calls[still]!.shard;
      throw new ProtocolError(
        'unavailable',
        `no host answers shard ${shard} of volume ${this.name} (${shardSubject(this.client.cluster, info.id, shard)})`,
        { volume: this.name, volumeId: info.id, shard },
      );
    }
    return { info, calls, outcomes: settled.map((s) => (s as { ok: true; value: ShardOutcome }).value) };
  }
}

/** Options as given: undefined or null is none; anything but a map is `bad_request`. */
function optionsOf<T extends object>(options: T | null | undefined): Partial<T> {
  if (options === undefined || options === null) return {};
  return expectMap(options, 'options') as Partial<T>;
}

/** Longest wait for the catalog when a request the cached geometry refuses is checked again (the API router's too). */
export const GEOMETRY_RECHECK_MS = 2000;

/** How often a call whose shards meet no responders while it retries fetches its volume's info again. */
const INFO_RECHECK_MS = 1000;

/**
 * Tries of a shard request that changes nothing (shard.read, shard.map, shard.flush) within its
 * call's deadline (StrataClient.sendInTries): the first of at most API_READ_TRY_MS_MIN (a shard
 * answers in milliseconds; one killed with the request costs the call that second), the next
 * ones their part of what is left. A frozen leader keeps its share of the shard's queue group
 * while it is frozen (docs/replication.md, "A node that goes"): the first try may reach it; the
 * next ones go to every leader (`shardLeadersSubject`), and the next leader answers them.
 */
export const SHARD_READ_TRIES = 5;
const READ_TRIES = { tryDeadlineInHeader: true, quickFirst: true, tries: SHARD_READ_TRIES } as const;

/**
 * Tries of a write (shard.write, shard.zero) within its call's deadline (`Volume.sendWrite`):
 * the first of at most WRITE_TRY_MS_MIN (a write commits in milliseconds; one whose leader was
 * killed with it costs the call that second), the next ones their part of what is left, at
 * least that. A try given up on while its leader still works on it costs that leader a lookup
 * when it comes again (its write id), not a second record. Each try's Strata-Deadline is the
 * call's: the leader goes on with a try while the next is sent.
 */
export const SHARD_WRITE_TRIES = 3;
export const WRITE_TRY_MS_MIN = 1000;
const WRITE_TRIES = { tries: SHARD_WRITE_TRIES, tryMsMin: WRITE_TRY_MS_MIN, quickFirst: true } as const;

/**
 * Times a request whose page data was damaged on the way (`corruption` with `details.inTransit`:
 * a write the shard's leader refused, or a read reply whose checksum did not match) is sent
 * again at once, within its time, before the damage is the call's answer.
 */
export const TRANSIT_RESENDS_MAX = 2;

/** The answer of a node that does not know a write's `crc` field (a version before it). */
function refusesCrc(e: unknown): boolean {
  return e instanceof ProtocolError && e.code === 'bad_request' && e.details?.['path'] === 'crc' && /unknown field/.test(e.message);
}

/**
 * A shard.write's body: the pages, the write's id, and the checksum of the pages' data
 * (`PAGE_DATA_CRC`), made from `crcs[i]` for a page whose checksum the caller gave
 * (`PageToWrite.crc`), from its data otherwise.
 */
export function writeBody(pages: PageWrite[], writeId: Uint8Array, crcs?: readonly (number | undefined)[]): ShardWriteRequest {
  let crc = 0;
  for (let i = 0; i < pages.length; i++) {
    const given = crcs?.[i];
    const data = pages[i]!.data;
    crc = given === undefined ? crc32c(data, crc) : crc32cCombine(crc, given, data.length);
  }
  return { pages, writeId, crc };
}

/**
 * A write's try that failed so is sent again (`Volume.sendWrite`): one without an answer, one
 * whose reply was lost with the NATS connection (`disconnected`: sent again once it is back, with
 * its write id and `sentMs`, so that a leader that took it answers with its record), or one never
 * sent (`notSent`: the NATS connection was down for the whole try; the next waits for the
 * reconnect within its own). A leader's answer that it cannot tell (`outcomeUnknown`, or an
 * earlier record folded into an image, `recordLsn`) is final.
 */
function writeTriedAgain(e: unknown): boolean {
  if (notSent(e)) return true;
  if (e instanceof ProtocolError && e.code === 'unavailable' && e.details?.['disconnected'] === true) return true;
  return e instanceof ProtocolError && e.code === 'timeout' && e.details?.['outcomeUnknown'] !== true && e.details?.['recordLsn'] === undefined;
}

/**
 * A request that never went out: its deadline passed first (`timeout`), or the NATS connection
 * was down for the whole of its time (`unavailable`, RequestMux's wait for the reconnect), both
 * with `details.notSent`. Nothing may have been done of it.
 */
function notSent(e: unknown): boolean {
  return e instanceof ProtocolError && e.details?.['notSent'] === true;
}

/** First and largest pause between attempts to reach a shard that has no leader right now. */
const LEADER_RETRY_MS_MIN = 20;
const LEADER_RETRY_MS_MAX = 250;
/**
 * Attempts after the first at most: enough for the longest deadline (DEADLINE_AHEAD_MS_MAX) at
 * the largest pause, so that the deadline is what ends them.
 */
const LEADER_RETRIES_MAX = Math.ceil(DEADLINE_AHEAD_MS_MAX / LEADER_RETRY_MS_MAX) + 8;

/**
 * The record a failed write's attempt left in a leader's log that may still commit, when the
 * shard names it: `not_leader` from a leader that stepped down, `device_failed` from one whose
 * device failed, `unavailable` from one that was closed (restarted), each with `recordLsn` and
 * `recordTerm`.
 */
function recordOf(error: unknown): WriteRecordRef | undefined {
  // Not a `timeout` naming one: a leader that cannot tell whether a record was this write's
  // answers so, and that answer is final (sent again, it is answered the same).
  if (!(error instanceof ProtocolError) || !RECORD_NAMING_CODES.has(error.code)) return undefined;
  const lsn = error.details?.['recordLsn'];
  const term = error.details?.['recordTerm'];
  return typeof lsn === 'number' && typeof term === 'number' ? { lsn, term } : undefined;
}

/** The codes of a failed write whose `recordLsn` and `recordTerm` name a record that may still commit. */
const RECORD_NAMING_CODES: ReadonlySet<string> = new Set(['not_leader', 'device_failed', 'unavailable']);

/**
 * Puts the outcomes of the requests sent again (`retried`, of the calls at `missed`) in
 * `settled`, but for a request the deadline overtook before it went out (`send`'s `timeout`
 * with `details.notSent`: the time went on a slow turn of the event loop, or on fetching the
 * volume's info again), whose failure before is kept: the call ends saying why it failed, not
 * that its deadline came. True if the deadline overtook any.
 */
function takeRetried(settled: Settled[], missed: readonly number[], retried: readonly Settled[]): boolean {
  let overtaken = false;
  missed.forEach((at, j) => {
    const r = retried[j]!;
    if (!r.ok && r.error instanceof ProtocolError && r.error.code === 'timeout' && r.error.details?.['notSent'] === true) overtaken = true;
    else settled[at] = r;
  });
  return overtaken;
}

/**
 * Failures after which a request is sent again: no leader answered it (none did, one that does
 * not lead, one handing its leadership over), or its record was named
 * (sent with `earlier`); a read also when its reply was lost with a dropped NATS connection (a
 * write then has an unknown outcome, final).
 */
function sendAgain(error: unknown, call: ShardCall | undefined): boolean {
  if ((call?.type === 'shard.read' || call?.type === 'shard.map') && error instanceof ProtocolError && error.code === 'unavailable' && error.details?.['disconnected'] === true) return true;
  return leaderless(error) || recordOf(error) !== undefined;
}

/**
 * Notes on a failed write request the record its attempt left in a leader's log (`recordOf`),
 * for the next attempt's `earlier`. Once a write has an earlier attempt, or a try of it got no
 * answer (`unanswered`), any failure that is not sent again is `timeout` (outcome unknown): a
 * caller retrying a plain write after a code such as `overloaded` could apply it twice. So is a
 * write that met more leader changes than a request may name.
 */
function noteEarlierAttempt(call: ShardCall, failed: { ok: false; error: unknown }): Settled {
  const body = call.body as ShardWriteRequest | ShardZeroRequest;
  const e = failed.error;
  const record = recordOf(e);
  const earlier = body.earlier ?? [];
  if (record === undefined && e instanceof ProtocolError && e.code === 'unavailable' && e.details?.['disconnected'] === true) {
    // Its reply was lost with the connection: it may have been committed. `unavailable` would
    // read as "not done, retry", and a retry could write the pages over a newer write of them.
    return { ok: false, error: new ProtocolError('timeout', `${e.message}: the write may or may not be committed`, { ...(e.details ?? {}), code: e.code, ...earlierDetails(call) }) };
  }
  if (record === undefined) {
    if (!mayStillCommit(call) || leaderless(e) || (e instanceof ProtocolError && e.code === 'timeout')) return failed;
    const message = e instanceof Error ? e.message : String(e);
    const code = e instanceof ProtocolError ? e.code : undefined;
    const error = new ProtocolError('timeout', `${message}; ${earlierWhat(call)} may still commit: the write may or may not be committed`, {
      ...(e instanceof ProtocolError ? (e.details ?? {}) : {}),
      ...(code !== undefined ? { code } : {}),
      ...earlierDetails(call),
    });
    return { ok: false, error };
  }
  const { lsn, term } = record;
  if (!earlier.some((r) => r.lsn === lsn && r.term === term)) {
    if (earlier.length >= EARLIER_ATTEMPTS_MAX) {
      const error = new ProtocolError(
        'timeout',
        `the write met more than ${EARLIER_ATTEMPTS_MAX} leader changes; the write may or may not be committed`,
        // Without the record: this failure is final, not one to send again.
        { outcomeUnknown: true, earlier: [...earlier, record] },
      );
      return { ok: false, error };
    }
    body.earlier = [...earlier, { lsn, term }];
  }
  return failed;
}

/**
 * Errors that mean "no leader answered": no responders, or `not_leader` from a deposed leader (a
 * write it had accepted may still commit under the next leader). Sending the request again is
 * safe: a page write's effect does not depend on how often it is applied.
 */
function leaderless(error: unknown): boolean {
  return error instanceof NoRespondersError || (error instanceof ProtocolError && error.code === 'not_leader') || handingOver(error);
}

/**
 * A leader handing its leadership to a follower (a clean stop, a rebalance, an operator's
 * handover) refuses requests until the follower leads, within an election timeout: `unavailable`
 * with `details.handingOver`. It took nothing of the request, so the request is sent again like
 * one that found no leader, and reaches the new leader.
 */
function handingOver(error: unknown): boolean {
  return unavailableSaying(error, 'handingOver') && (error as ProtocolError).details!['recordLsn'] === undefined;
}

/**
 * The error a write fails with, saying so when some of its requests were committed before (a
 * write split over several shards, or over several messages to one shard): the same code, with
 * `details.partial` true and how many of its pages were committed. Retrying the whole write
 * writes the committed pages again (over any newer write of them by another client).
 */
function partlyWritten(error: unknown, calls: readonly ShardCall[], settled: readonly Settled[]): unknown {
  if (!(error instanceof ProtocolError) || calls[0] === undefined || !isWrite(calls[0]) || !settled.some((s) => s.ok)) return error;
  if (calls[0].type === 'shard.zero') {
    const done = settled.filter((s) => s.ok).length;
    return new ProtocolError(
      error.code,
      `${error.message} (the range was partly made zeros: ${done} of the ${calls.length} shards holding its pages committed their part; retrying it zeros those again)`,
      { ...(error.details ?? {}), partial: true, shardsCommitted: done, shards: calls.length },
    );
  }
  const pagesOf = (c: ShardCall): number => (c.body as ShardWriteRequest).pages.length;
  let committed = 0;
  let total = 0;
  calls.forEach((c, i) => {
    total += pagesOf(c);
    if (settled[i]?.ok) committed += pagesOf(c);
  });
  return new ProtocolError(
    error.code,
    `${error.message} (the write was partly applied: ${committed} of its ${total} pages were committed; retrying it whole writes them again)`,
    { ...(error.details ?? {}), partial: true, pagesCommitted: committed, pages: total },
  );
}

/**
 * A write's failure that is not its requests' own (the volume's info fetched again failed,
 * `overloaded` from the catalog, say), while a request of it may still commit: `timeout` (outcome
 * unknown, the original code in `details.code`), not a code that says it was not done.
 */
function stillCommitting(error: unknown, calls: readonly ShardCall[], settled: readonly Settled[]): unknown {
  // The volume is gone (deleted, or another made under its name for a pinned handle): no
  // attempt's outcome matters any more.
  if (error instanceof ProtocolError && (error.code === 'timeout' || error.code === 'not_found')) return error;
  const at = calls.findIndex((c, i) => settled[i]?.ok !== true && mayStillCommit(c));
  return at < 0 ? error : writeMayCommit(error, calls[at]!);
}

/**
 * `error`, the failure of a write one request of which (`call`, to its shard) may still commit,
 * as its caller should see it: `timeout` with `details.outcomeUnknown`, the original code in
 * `details.code`.
 */
function writeMayCommit(error: unknown, call: ShardCall): ProtocolError {
  const message = error instanceof Error ? error.message : String(error);
  return new ProtocolError('timeout', `${message}; ${earlierWhat(call, ` to shard ${call.shard}`)} may still commit: the write may or may not be committed`, {
    ...(error instanceof ProtocolError ? { ...(error.details ?? {}), code: error.code } : {}),
    ...earlierDetails(call),
  });
}

/**
 * A write request that may have been committed though it failed: sent again naming records that
 * its earlier attempts left with deposed leaders, or a try of it got no answer.
 */
function mayStillCommit(call: ShardCall): boolean {
  return isWrite(call) && (earlierOf(call).length > 0 || call.unanswered === true);
}

/** The records a write's earlier attempts left with deposed leaders, as its body names them (none for a read). */
function earlierOf(call: ShardCall): readonly WriteRecordRef[] {
  return (call.body as Partial<ShardWriteRequest>).earlier ?? [];
}

/** The details of a write's failure whose outcome is unknown: `outcomeUnknown`, and `earlier`, its earlier records, if it has any. */
function earlierDetails(call: ShardCall): { outcomeUnknown: true; earlier?: readonly WriteRecordRef[] } {
  const earlier = earlierOf(call);
  return earlier.length > 0 ? { outcomeUnknown: true, earlier } : { outcomeUnknown: true };
}

/** What of a write `mayStillCommit` (for messages); `to`: ' to shard N', or ''. */
function earlierWhat(call: ShardCall, to = ''): string {
  return earlierOf(call).length > 0 ? `an earlier attempt of this write${to}` : `a try of this write${to} that got no answer`;
}

/** A request that writes (pages, or zeros over a range): sent again only naming its earlier attempts. */
function isWrite(call: ShardCall): boolean {
  return call.type === 'shard.write' || call.type === 'shard.zero';
}

/**
 * The shards holding a page of `first`..`first + count - 1`, ascending: those of the stripes it
 * touches, every shard once it touches as many stripes.
 */
/** Appends pages `first`..`first + count - 1` to ascending `ranges`, one with the last range it adjoins. */
export function appendRange(ranges: Array<{ first: number; count: number }>, first: number, count: number): void {
  const last = ranges[ranges.length - 1];
  if (last !== undefined && last.first + last.count === first) last.count += count;
  else ranges.push({ first, count });
}

export function shardsOfRange(first: number, count: number, layout: Pick<VolumeInfo, 'shards' | 'stripePages'>): number[] {
  const firstStripe = Math.floor(first / layout.stripePages);
  const lastStripe = Math.floor((first + count - 1) / layout.stripePages);
  if (lastStripe - firstStripe + 1 >= layout.shards) return Array.from({ length: layout.shards }, (_, i) => i);
  const shards = new Set<number>();
  for (let stripe = firstStripe; stripe <= lastStripe; stripe++) shards.add(stripe % layout.shards);
  return [...shards].sort((a, b) => a - b);
}

/**
 * Throws the first failure (in request order) that is not sent again. Of a write, while another
 * of its requests failed with an earlier attempt that may still commit, it is thrown as `timeout`
 * (outcome unknown, the code in `details.code`): a caller retrying a plain write after, say,
 * `overloaded` could apply that request's pages twice.
 */
function throwFinal(calls: readonly ShardCall[], settled: readonly Settled[]): void {
  const at = settled.findIndex((s, i) => !s.ok && !sendAgain(s.error, calls[i]));
  if (at < 0) return;
  const error = (settled[at] as { ok: false; error: unknown }).error;
  const pending = calls.findIndex((c, i) => i !== at && !settled[i]!.ok && mayStillCommit(c));
  if (pending < 0 || (error instanceof ProtocolError && error.code === 'timeout')) throw error;
  throw writeMayCommit(error, calls[pending]!);
}
