/**
 * Types and limits of every Strata request and reply: the public API (`strata.<cluster>.api.<verb>`)
 * and the shard mailbox messages (`strata.<cluster>.shard.<volumeId>.<shard>`).
 *
 * Conventions: page numbers are volume-wide (0-based); LSNs and terms are non-negative safe
 * integers; times are milliseconds since the Unix epoch. Runtime validators are in validate.ts.
 */
import { MESSAGE_BYTES_MAX } from './codec';

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

/** Allowed page sizes in bytes. */
export const PAGE_SIZES_BYTES = [4096, 8192] as const;
/** Page size of a volume created without `pageSize`, in bytes. */
export const PAGE_SIZE_BYTES_DEFAULT = 4096;
/**
 * Largest number of pages of a volume (2^32 - 1: 16 TiB of 4 KiB pages, 32 TiB of 8 KiB): what
 * a shard's image records (storage-engine/image.ts, IMAGE_PAGE_COUNT_MAX). A larger volume was
 * accepted and then could not open a single shard.
 */
export const PAGE_COUNT_MAX = 0xffff_ffff;
/** Largest number of shards of a volume. */
export const SHARDS_MAX = 256;
/** Shards of a volume created without `shards`. */
export const SHARDS_DEFAULT = 1;
/** Largest stripe (consecutive pages on one shard), in pages (2^20). */
export const STRIPE_PAGES_MAX = 2 ** 20;
/** Stripe of a volume created without `stripePages`, in pages. */
export const STRIPE_PAGES_DEFAULT = 256;
/** Allowed replica counts (odd, so that a majority is well defined). */
export const REPLICA_COUNTS = [1, 3, 5] as const;
/** Replicas of a volume created without `replicas`. */
export const REPLICAS_DEFAULT = 1;
/** Longest volume name, in characters. */
export const NAME_LENGTH_MAX = 64;
/** Longest id (volume id, node id, cluster name: anything used as a subject token), in characters. */
export const ID_LENGTH_MAX = 64;
/** Most pages in one page.write / page.read / shard.write / shard.read request. */
export const PAGES_PER_REQUEST_MAX = 256;
/**
 * Most CBOR data items (each map, key, value and array element) of one client request, on a
 * shard subject or the API: checked before it is decoded. The largest request that validates,
 * a page.read of PAGES_PER_REQUEST_MAX pages with an LSN for each of SHARDS_MAX shards, holds
 * about 2,100.
 */
export const REQUEST_ITEMS_MAX = 8192;
/**
 * Room kept in a message for everything but page data (keys, page numbers, names), in bytes.
 * 256 page entries take under 7 KiB of envelope; 16 KiB leaves a wide margin.
 */
export const ENVELOPE_BYTES_RESERVE = 16 * 1024;
/**
 * Most page data in one write request or one read reply, in bytes: the NATS default max_payload
 * (1 MiB) less the envelope reserve, so that every request that validates also fits in a message
 * (1,032,192 bytes: 252 pages of 4 KiB or 126 pages of 8 KiB).
 */
export const REQUEST_DATA_BYTES_MAX = MESSAGE_BYTES_MAX - ENVELOPE_BYTES_RESERVE;
/** Most volumes in one volume.list reply. */
export const VOLUMES_PER_LIST_MAX = 4096;
/** Largest LSN or term: the largest integer a JavaScript number holds exactly. */
export const LSN_MAX = Number.MAX_SAFE_INTEGER;

// ---------------------------------------------------------------------------------------------
// Verbs and message types
// ---------------------------------------------------------------------------------------------

/** Verbs of the public API; the subject is `strata.<cluster>.api.<verb>`. */
export const API_VERBS = [
  'volume.create',
  'volume.branch',
  'volume.list',
  'volume.info',
  'volume.delete',
  'volume.resize',
  'volume.flush',
  'page.write',
  'page.zero',
  'page.read',
  'page.map',
  'status',
] as const;
/** One of `API_VERBS`. */
export type ApiVerb = (typeof API_VERBS)[number];

/** Message types a shard mailbox (`strata.<cluster>.shard.<volumeId>.<shard>`) accepts. */
export const SHARD_VERBS = ['shard.write', 'shard.zero', 'shard.read', 'shard.flush', 'shard.map'] as const;
/** One of `SHARD_VERBS`. */
export type ShardVerb = (typeof SHARD_VERBS)[number];

/** Every request type: the value of the `Strata-Type` header. */
export const MESSAGE_TYPES: readonly MessageType[] = [...API_VERBS, ...SHARD_VERBS];
/** A request type; a reply carries the type of its request. */
export type MessageType = ApiVerb | ShardVerb;

const MESSAGE_TYPE_SET: ReadonlySet<string> = new Set<string>(MESSAGE_TYPES);

/** True if `value` is a known message type. */
export function isMessageType(value: unknown): value is MessageType {
  return typeof value === 'string' && MESSAGE_TYPE_SET.has(value);
}

/** True if `value` is a verb of the public API. */
export function isApiVerb(value: unknown): value is ApiVerb {
  return typeof value === 'string' && (API_VERBS as readonly string[]).includes(value);
}

// ---------------------------------------------------------------------------------------------
// Volumes
// ---------------------------------------------------------------------------------------------

/** An allowed page size in bytes. */
export type PageSize = (typeof PAGE_SIZES_BYTES)[number];
/** An allowed replica count. */
export type ReplicaCount = (typeof REPLICA_COUNTS)[number];

/** volume.create request. Omitted fields take the `*_DEFAULT` values. */
export interface VolumeCreateRequest {
  /** 1..NAME_LENGTH_MAX characters, `[a-z0-9][a-z0-9._-]*`. */
  name: string;
  /** 1..PAGE_COUNT_MAX. */
  pageCount: number;
  pageSize?: PageSize;
  /** 1..SHARDS_MAX. */
  shards?: number;
  /** 1..STRIPE_PAGES_MAX. */
  stripePages?: number;
  replicas?: ReplicaCount;
  /** The request's own id (RequestId): the same request sent again is answered, not made twice. */
  requestId?: RequestId;
}

/**
 * The id a requester gives a catalog change (volume.create, volume.branch, volume.delete):
 * 1..ID_LENGTH_MAX characters of `[A-Za-z0-9_-]`, unique to that request (Strata's client uses a
 * random UUID), the same each time the request is sent again. The catalog records it with the
 * change, so a change sent again after its answer was lost (its controller's node died, say) is
 * answered as the first one was made, and not made twice: a create or branch with the volume it
 * added, a delete `deleted` even once the name is taken again (docs/protocol.md, "Sent again").
 */
export type RequestId = string;

/**
 * volume.branch request: a new volume `name` created from volume `parent` as each of its shards
 * was at an LSN. The branch has the parent's geometry (pageCount, pageSize, shards, stripePages,
 * replicas); its shard `i` starts as the parent's shard `i` was at `lsns[i]`, and its log goes on
 * from `lsns[i] + 1`. Once created it is independent of the parent (which may be deleted).
 */
export interface VolumeBranchRequest {
  /** The new volume: as volume.create's `name`. */
  name: string;
  /** The volume branched from. */
  parent: string;
  /**
   * The branch point of each shard of the parent, by shard: one LSN (0..LSN_MAX) per shard, at
   * most SHARDS_MAX (the count must be the parent's shards: `bad_request`, path `lsns`).
   * Default: each shard's commit LSN when the request is served (the parent is flushed first).
   */
  lsns?: number[];
  /** As volume.create's. */
  requestId?: RequestId;
}

/** Where a branch volume came from (VolumeInfo.branch). */
export interface BranchPoint {
  /** The parent's name when the branch was made (the parent may be deleted or its name reused since). */
  parent: string;
  /** The parent's id: the volume whose replicas the branch's shards were copied from. */
  parentId: string;
  /** The LSN of each of the parent's shards the branch started from, by shard. */
  lsns: number[];
}

/** The geometry of a volume: a validated volume.create request with every default filled in. */
export interface VolumeSpec {
  name: string;
  pageCount: number;
  pageSize: PageSize;
  shards: number;
  stripePages: number;
  replicas: ReplicaCount;
}

/** The page layout of a volume: what is needed to map a page to its shard and check a request. */
export type VolumeLayout = Pick<VolumeSpec, 'pageCount' | 'pageSize' | 'shards' | 'stripePages'>;

/** A volume as the cluster knows it (reply of volume.create, volume.branch and volume.info). */
export interface VolumeInfo extends VolumeSpec {
  /** Cluster-assigned id, used in shard subjects: 1..ID_LENGTH_MAX of `[A-Za-z0-9_-]`. */
  id: string;
  /** Creation time, ms since the Unix epoch. */
  createdAt: number;
  /**
   * volume.info from the controller only: the nodes of each shard's replicas, and the move of
   * one of them under way (`strata shard move`), if any.
   */
  replicaSets?: ReplicaSetInfo[];
  /** A volume made by volume.branch: what it was branched from, and at which LSNs. */
  branch?: BranchPoint;
}

/** Where a shard's replicas are (VolumeInfo.replicaSets). */
export interface ReplicaSetInfo {
  shard: number;
  /** Node ids, 1..7. */
  members: string[];
  /** A move under way: the replica on `from` goes to `to`. */
  moving?: { from: string; to: string };
}

/**
 * volume.list request. Without fields: every volume, in one reply (`too_large` when they do not
 * fit one message). With `limit` or `after`: a page of the list in name order.
 */
export interface VolumeListRequest {
  /** The page starts after this volume name (the `next` of the page before). */
  after?: string;
  /** At most this many volumes in the page (1..VOLUMES_PER_LIST_MAX), fewer when they do not fit one message. */
  limit?: number;
}
/** volume.list reply. */
export interface VolumeListReply {
  /** At most VOLUMES_PER_LIST_MAX entries; a page (asked with `limit` or `after`): in name order. */
  volumes: VolumeInfo[];
  /** A page that is not the last: the name to ask the next page `after`. */
  next?: string;
  /** A page: the catalog's epoch it was read at (pages of one epoch make a list of one moment). */
  epoch?: number;
}

/** volume.info request (and the name of volume.delete's). */
export interface VolumeNameRequest {
  name: string;
}
/** volume.info request. */
export type VolumeInfoRequest = VolumeNameRequest;
/** volume.delete request. */
export interface VolumeDeleteRequest extends VolumeNameRequest {
  /** As volume.create's. */
  requestId?: RequestId;
}
/** volume.delete reply. */
export interface VolumeDeleteReply {
  deleted: true;
}

/**
 * volume.resize request: the volume called `name` grows to `pageCount` pages (never shrinks: the
 * pages past a smaller count would be lost). The pages added read as zeros until written. The
 * reply is the volume's info with the new size.
 */
export interface VolumeResizeRequest {
  name: string;
  pageCount: number;
  /** As volume.create's: sent again after the volume grew further, it is answered done, not `bad_request`. */
  requestId?: RequestId;
}

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------

/** One page of a write: its volume-wide number and exactly pageSize bytes. */
export interface PageWrite {
  page: number;
  data: Uint8Array;
}

/** The commit point of one shard. */
export interface ShardLsn {
  shard: number;
  /** Commit LSN of the shard after the request. */
  lsn: number;
  /** Term of the shard's leader that answered. */
  term?: number;
}

/** page.write request: 1..PAGES_PER_REQUEST_MAX distinct pages, ≤ REQUEST_DATA_BYTES_MAX of data. */
export interface PageWriteRequest {
  volume: string;
  pages: PageWrite[];
  /** CRC-32C of the pages' data, in order (`PAGE_DATA_CRC`): checked before anything is written. */
  crc?: number;
}
/** page.write reply, sent only once every page is committed (durable on a majority). */
export interface PageWriteReply {
  /** Highest commit LSN among the shards the write touched. */
  lsn: number;
  /** Commit LSN of each shard touched. */
  lsns?: ShardLsn[];
}

/**
 * page.zero request: pages `first`..`first + count - 1` made zeros (each shard's part of the
 * range atomically, with one small record whatever its length); all within the volume.
 */
export interface PageZeroRequest {
  volume: string;
  first: number;
  /** 1..PAGE_COUNT_MAX. */
  count: number;
}
/** page.zero reply, sent once every shard's part is committed, as a page.write's. */
export type PageZeroReply = PageWriteReply;

/** Most ranges one page.map reply lists: past them it is cut short (`end`). */
export const PAGE_MAP_RANGES_MAX = 16_384;

/** page.map request: which pages of `first`..`first + count - 1` hold data; all within the volume. */
export type PageMapRequest = PageZeroRequest;
/** page.map reply: as a shard.map's (`end`, `ranges` as pairs), over every shard of the range. */
export interface PageMapReply {
  /** The answer covers pages `first`..`end - 1`: cut short by a shard's answer, or after PAGE_MAP_RANGES_MAX ranges. */
  end: number;
  /** Pairs `[first, count, …]`, ascending and apart: the pages that may hold data; the others before `end` read as zeros. */
  ranges: number[];
  lsn: number;
  /** The LSN of each shard asked. */
  lsns?: ShardLsn[];
}

/** page.read request. Pages may repeat; they are answered in request order. */
export interface PageReadRequest {
  volume: string;
  /** 1..PAGES_PER_REQUEST_MAX page numbers. */
  pages: number[];
  /** Read as of this LSN (GetPage@LSN) on every shard touched; default: the latest commit. */
  lsn?: number;
  /**
   * Read each named shard as of its own LSN (GetPage@LSN per shard); the shards touched that are
   * not named are read at the latest commit. 1..SHARDS_MAX entries, one per shard; not with
   * `lsn`. An entry's `term` is ignored, so that the `lsns` of a reply can be given back as it is.
   */
  lsns?: ShardLsn[];
}
/** page.read reply. */
export interface PageReadReply {
  /** One entry per requested page, in request order, each pageSize bytes. */
  pages: Uint8Array[];
  /** CRC-32C of `pages`, in order (`PAGE_DATA_CRC`), for the receiver to check. */
  crc?: number;
  /** Highest LSN the read reflects among the shards touched. */
  lsn: number;
  /** LSN each shard touched was read at. */
  lsns?: ShardLsn[];
}

/** volume.flush request. */
export interface VolumeFlushRequest {
  volume: string;
}
/** volume.flush reply: every write acknowledged before the flush is durable up to `lsn`. */
export interface VolumeFlushReply {
  lsn: number;
  lsns?: ShardLsn[];
}

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

/** status request (no fields). */
export type StatusRequest = Record<string, never>;

/** Role of a node for one shard. */
export type ShardRole = 'leader' | 'follower' | 'none';

/** Status of one shard as seen by the answering node. More fields may be added. */
export interface ShardStatus {
  shard: number;
  role: ShardRole;
  /** Current term known to this node for the shard. */
  term: number;
  /** Highest LSN known committed. */
  commitLsn: number;
  /** Highest LSN applied to the page store. */
  appliedLsn: number;
  /** Node id of the leader, when known. */
  leader?: string;
  [field: string]: unknown;
}

/** Status of one volume on the answering node. More fields may be added. */
export interface VolumeStatus {
  name: string;
  id: string;
  /** The shards of this volume hosted by the answering node. */
  shards: ShardStatus[];
  [field: string]: unknown;
}

/** Status of the answering node. More fields may be added. */
export interface NodeStatus {
  id: string;
  cluster: string;
  /** Strata version string of the node. */
  version: string;
  /** Time since the node started, in ms. */
  uptimeMs: number;
  [field: string]: unknown;
}

/** status reply: the answering node, its volumes and shards. More fields may be added. */
export interface StatusReply {
  node: NodeStatus;
  volumes: VolumeStatus[];
  [field: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// Shard mailbox messages (strata.<cluster>.shard.<volumeId>.<shard>)
// ---------------------------------------------------------------------------------------------

/** Fencing fields a sender may attach to a shard request. */
export interface ShardFence {
  /** Leader term the sender expects; a shard leader at another term answers stale_term or not_leader. */
  term?: number;
}

/** The record an earlier attempt of a write left in a deposed leader's log: it may still commit. */
export interface WriteRecordRef {
  lsn: number;
  term: number;
}

/** Most earlier attempts one shard.write may name (a write that met more leader changes than this fails as unknown). */
export const EARLIER_ATTEMPTS_MAX = 8;

/** Bytes of a write id (`ShardWriteRequest.writeId`). */
export const WRITE_ID_BYTES = 16;

/**
 * How far apart a client's clock and a node's may be for a write sent again (`sentMs`): the
 * shard takes the first try to have been sent up to this much before the time it names.
 */
export const WRITE_SENT_SKEW_MS = 2_000;

/**
 * What a `crc` of page data is, in shard.write and page.write requests and in shard.read and
 * page.read replies: the CRC-32C (Castagnoli) of the data of the message's pages, one after the
 * other in their order. The sender computes it from its own copy of the pages, the receiver from
 * the bytes it received: a mismatch is data damaged on the way (`corruption` with
 * `details.inTransit`), which the sender may send again.
 */
export const PAGE_DATA_CRC = 'crc32c';

/** shard.write request: pages of this shard only. */
export interface ShardWriteRequest extends ShardFence {
  pages: PageWrite[];
  /** CRC-32C of the pages' data, in order (`PAGE_DATA_CRC`): checked before anything is written. */
  crc?: number;
  /** Absolute deadline, ms since the Unix epoch (also carried by the Strata-Deadline header). */
  deadlineMs?: number;
  /**
   * A retry: the records earlier attempts of this same write left in the logs of leaders that
   * stepped down before committing them (`details.recordLsn`/`recordTerm` of their `not_leader`).
   * The leader answers with the LSN of the one its log holds, once committed, instead of writing
   * the pages again (a second copy could overwrite a newer write of the same page); it writes
   * them only when no earlier record can commit any more.
   */
  earlier?: WriteRecordRef[];
  /**
   * WRITE_ID_BYTES random bytes, the same in every try of one write: the shard keeps it in the
   * write's record, and answers a try of a write its log already holds with that record's LSN
   * (once committed) instead of writing the pages again.
   */
  writeId?: Uint8Array;
  /**
   * On every try after the first (with `writeId`): when the first was sent, ms since the Unix
   * epoch (the client's clock). A shard that cannot tell whether its log got the write since
   * then (it restarted since, or forgot the ids of that time) answers `timeout` with
   * `details.outcomeUnknown` instead of writing the pages again.
   */
  sentMs?: number;
}
/** shard.write reply, sent only after commit. */
export interface ShardWriteReply {
  /** Commit LSN of the record holding the write. */
  lsn: number;
  /** Term of the leader that committed it. */
  term?: number;
}

/**
 * shard.zero request: the shard's own pages in `first`..`first + count - 1` (volume page
 * numbers; the volume's other pages in the range are other shards') made zeros, atomically.
 */
export interface ShardZeroRequest extends ShardFence {
  first: number;
  count: number;
  /** As a shard.write's. */
  deadlineMs?: number;
  /** As a shard.write's: zeros written a second time could overwrite a newer write. */
  earlier?: WriteRecordRef[];
  /** As a shard.write's. */
  writeId?: Uint8Array;
  /** As a shard.write's. */
  sentMs?: number;
}
/** shard.zero reply, sent only after commit. */
export type ShardZeroReply = ShardWriteReply;

/** shard.read request: pages of this shard only. */
export interface ShardReadRequest extends ShardFence {
  pages: number[];
  /** Read as of this LSN; default: the latest commit. */
  lsn?: number;
}
/** shard.read reply. */
export interface ShardReadReply {
  pages: Uint8Array[];
  /** CRC-32C of `pages`, in order (`PAGE_DATA_CRC`), for the receiver to check. */
  crc?: number;
  /** LSN the read reflects. */
  lsn: number;
  term?: number;
}

/** shard.flush request. */
export type ShardFlushRequest = ShardFence;
/** shard.flush reply: everything acknowledged is durable up to `lsn`. */
export interface ShardFlushReply {
  lsn: number;
  term?: number;
}

/** Most ranges one shard.map reply lists: a shard whose pages in the range hold more cuts its answer short (`end`). */
export const SHARD_MAP_RANGES_MAX = 4096;

/**
 * shard.map request: which of the shard's own pages in `first`..`first + count - 1` (volume page
 * numbers) hold data as of its latest commit. The pages of other shards in the range are not
 * the shard's to say.
 */
export interface ShardMapRequest extends ShardFence {
  first: number;
  count: number;
}
/** shard.map reply. */
export interface ShardMapReply {
  /**
   * The answer covers pages `first`..`end - 1` (`end` at most `first + count`, more than
   * `first`): cut short after SHARD_MAP_RANGES_MAX ranges.
   */
  end: number;
  /**
   * Pairs `[first, count, first, count, …]`, ascending and apart, within the answer: the shard's
   * pages that may hold data (written, and not made zeros since; a page written with zeros is
   * data). Its other pages there read as zeros.
   */
  ranges: number[];
  /** LSN the answer reflects. */
  lsn: number;
  term?: number;
}

// ---------------------------------------------------------------------------------------------
// Type maps (for typed clients and dispatch tables)
// ---------------------------------------------------------------------------------------------

/** Request body of each message type, as a sender writes it. */
export interface RequestMap {
  'volume.create': VolumeCreateRequest;
  'volume.branch': VolumeBranchRequest;
  'volume.list': VolumeListRequest;
  'volume.info': VolumeInfoRequest;
  'volume.delete': VolumeDeleteRequest;
  'volume.resize': VolumeResizeRequest;
  'volume.flush': VolumeFlushRequest;
  'page.write': PageWriteRequest;
  'page.zero': PageZeroRequest;
  'page.read': PageReadRequest;
  'page.map': PageMapRequest;
  status: StatusRequest;
  'shard.write': ShardWriteRequest;
  'shard.zero': ShardZeroRequest;
  'shard.read': ShardReadRequest;
  'shard.flush': ShardFlushRequest;
  'shard.map': ShardMapRequest;
}

/** Request body of each message type after validation (defaults filled in). */
export interface ValidRequestMap extends Omit<RequestMap, 'volume.create'> {
  'volume.create': VolumeSpec & { requestId?: RequestId };
}

/** Reply body of each message type. */
export interface ReplyMap {
  'volume.create': VolumeInfo;
  'volume.branch': VolumeInfo;
  'volume.list': VolumeListReply;
  'volume.info': VolumeInfo;
  'volume.delete': VolumeDeleteReply;
  'volume.resize': VolumeInfo;
  'volume.flush': VolumeFlushReply;
  'page.write': PageWriteReply;
  'page.zero': PageZeroReply;
  'page.read': PageReadReply;
  'page.map': PageMapReply;
  status: StatusReply;
  'shard.write': ShardWriteReply;
  'shard.zero': ShardZeroReply;
  'shard.read': ShardReadReply;
  'shard.flush': ShardFlushReply;
  'shard.map': ShardMapReply;
}

/**
 * The shard that holds `page`: `floor(page / stripePages) mod shards`. The caller passes a valid
 * page of the volume (0 ≤ page < pageCount).
 */
export function shardOfPage(page: number, layout: Pick<VolumeLayout, 'shards' | 'stripePages'>): number {
  return Math.floor(page / layout.stripePages) % layout.shards;
}
