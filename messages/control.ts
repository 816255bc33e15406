/**
 * Control messages between nodes and the controller (not part of the public API).
 *
 * Subjects:
 *   strata.<cluster>.controller.<verb>   heartbeat, leaving, assignments, volume.create|delete|info|list|resize,
 *                                        catalog.recover, shard.move, node.drain, rebalance, controllers
 *   strata.<cluster>.node.<nodeId>.<verb> shards.open, shards.destroy, volume.grow, status, shard.forceVote,
 *                                        shard.handover, shard.reconfigure, shard.digest, records,
 *                                        catalog.join, catalog.leave
 *
 * Like every Strata message they are CBOR maps, validated on receipt; a message that does not
 * validate is answered with a bad_request error reply.
 */
import { ProtocolError } from './errors';
import { expectArray, expectBoolean, expectCounter, expectId, expectInteger, expectMap, expectName, expectString } from './validate';
import { PAGE_COUNT_MAX, SHARDS_MAX, STRIPE_PAGES_MAX } from './api';

/** Hosts per node at most. */
export const HOSTS_PER_NODE_MAX = 64;
/** Shards in one shards.open / shards.destroy message at most. */
export const SHARDS_PER_CONTROL_MAX = 4096;

export interface HeartbeatRequest {
  nodeId: string;
  hosts: number;
  /**
   * The node's failure domain (a rack, a zone; `strata node --zone`): the controller places a
   * shard's replicas in distinct ones first, and replaces a dead node's replica in one its other
   * replicas are not in. Absent: the node is a domain of its own.
   */
  zone?: string;
  /**
   * Replicas the node holds that do not serve (docs/replication.md, "Replacing a replica its
   * node reports down"): its host or device failed, or the replica was left down after failing
   * again and again; the longest down first, at most DOWN_REPLICAS_PER_HEARTBEAT_MAX. Absent: none.
   */
  down?: DownReplica[];
  /** How many shards the node's replicas lead (a rebalance evens them out over the nodes). Absent: 0. */
  leading?: number;
}
/** A replica a node reports down in its heartbeat, and for how long without a break (ms, by the node's clock). */
export interface DownReplica {
  volumeId: string;
  shard: number;
  forMs: number;
}
/** Replicas a heartbeat reports down at most: more than the controller replaces at once, and a heartbeat stays small. */
export const DOWN_REPLICAS_PER_HEARTBEAT_MAX = 64;
export interface HeartbeatReply {
  epoch: number;
  /**
   * The catalog's tag (absent for a catalog without one): a catalog created again (its
   * controller's data lost) counts its epochs from 0 again, so an epoch alone does not tell it
   * from the one a node last reconciled with.
   */
  catalog?: string;
  /**
   * With a replicated controller: the controller nodes, the catalog shard's replica set in force
   * on the controller's replica, when no change of it is under way. A hint (a deposed controller
   * may answer it): a node that finds itself listed or left out against what it holds asks its
   * assignments, whose `controllers` it acts on.
   */
  controllers?: string[];
}

/** Controller nodes of a replicated controller at least (a catalog shard of fewer survives no failure) and at most. */
export const CONTROLLERS_MIN = 3;
export const CONTROLLERS_MAX = 7;

/**
 * A page of a node's assignments: the ones from index `from` (default 0) of the catalog's list
 * for the node. A node with more than fit in one message reads them page by page
 * (`AssignmentsReply.next`), all of one epoch.
 */
export interface AssignmentsRequest {
  nodeId: string;
  from?: number;
  /**
   * Asks for the tombstones from this index on instead (a page of them alone, `shards` empty):
   * the ones the first page did not hold (`AssignmentsReply.tombstonesNext`).
   */
  tombstonesFrom?: number;
}

/** One shard a node must host, with the geometry of its volume. */
export interface ShardAssignment {
  volumeId: string;
  volumeName: string;
  shard: number;
  shards: number;
  pageCount: number;
  pageSize: 4096 | 8192;
  stripePages: number;
  hostId: number;
  /** Node ids of all the shard's replicas, this node's among them. */
  members: string[];
  /** The volume's creation time (ms since the Unix epoch); absent in assignments of older controllers. */
  createdAt?: number;
  /**
   * A move of one of the shard's replicas is under way and this node is the one it adds: the set
   * the shard changes from (`members` is the set it changes to). The node opens the replica as a
   * new one that joins under the joint configuration (ReplicaOptions.priorMembers).
   */
  priorMembers?: string[];
  /**
   * This node no longer holds a replica of the shard: a move took it off, and finished. The node
   * destroys its replica (`members` is the shard's set now, without it).
   */
  removed?: boolean;
  /**
   * The shard is one of a branch volume (volume.branch): the parent's volume id, and the LSN of
   * the parent's shard (this same shard number) that the branch starts from. The node opens a
   * new replica of this shard from the parent's replica on the same host at that LSN (its log
   * then goes on from `lsn + 1`); if it cannot (the parent's replica is not there, or no longer
   * holds that LSN), the replica stays out of elections until a peer sends it the shard.
   */
  seed?: ShardSeed;
  /**
   * The volume's create (or branch) has not been answered: the catalog marks it placing until
   * every node answered the opens of its replicas (Controller.placed). The node keeps the mark in
   * its record of the shard until an assignment without it, and does not describe such a volume
   * from its own records (StrataNode.localVolumeInfo): it may yet be undone. Absent (assignments
   * of older controllers, records written before it existed): placed.
   */
  placing?: true;
}

/** Where a new replica of a branch volume's shard copies its pages from (ShardAssignment.seed). */
export interface ShardSeed {
  volumeId: string;
  lsn: number;
}

export interface AssignmentsReply {
  epoch: number;
  shards: ShardAssignment[];
  /**
   * Ids of deleted volumes: a node destroys any shard of these it still holds. In the first page
   * (as many as half of it holds) and in the pages asked with `tombstonesFrom`.
   */
  tombstones: string[];
  /** Where the next page starts; absent on the last page. */
  next?: number;
  /** Where the tombstones this page did not hold start (ask with `tombstonesFrom`); absent when it held the last. */
  tombstonesNext?: number;
  /**
   * In the first page: the catalog's tag (absent for a catalog without one) and the number of
   * the next volume id it will issue. A replica of a volume whose id this catalog issued
   * (`v<n>-<tag>`, n below `issuedBelow`) that the shards of the reply do not place on the node
   * is a leftover (a volume deleted, a create undone, a move finished) whether or not a
   * tombstone names it: the node destroys it.
   */
  catalog?: string;
  issuedBelow?: number;
  /**
   * In the first page, with a replicated controller and no change of its nodes under way: the
   * controller nodes (HeartbeatReply.controllers), as the catalog shard's leader has them while
   * it is known to lead. A node left out destroys its replica of the catalog shard; a node
   * listed that holds none opens it (as one whose storage was lost).
   */
  controllers?: string[];
}

/** Tombstones in one catalog's assignments at most (all pages). */
export const ASSIGNMENTS_TOMBSTONES_MAX = 65536;

/** Assignments in one page of the reply: at most ~700 bytes each, so a page stays well under 1 MiB with the tombstones. */
export const ASSIGNMENTS_PAGE_MAX = 512;
/** Most assignments of one node (all pages). */
export const ASSIGNMENTS_PER_NODE_MAX = 65536;

export interface ShardsOpenRequest {
  shards: ShardAssignment[];
}
/** Longest reason a shards.open reply gives for a branch's replica not copied. */
export const NOT_COPIED_REASON_MAX = 1024;
/**
 * A node's answer to shards.open: `notCopied`, the new replicas of a branch whose copy of the
 * parent's pages the node tried and could not make (they wait for a peer to send the shard), and
 * why; `noSpace` when the device had no room for it over its reserve.
 */
export interface ShardsOpenReply {
  ok: true;
  notCopied?: NotCopied[];
}
/** A branch's new replica not copied from its parent on a node (ShardsOpenReply). */
export interface NotCopied {
  volumeId: string;
  shard: number;
  reason: string;
  noSpace: boolean;
}
export interface ShardsDestroyRequest {
  volumeId: string;
  shards: number[];
}

/**
 * volume.grow: the node's replicas of the volume take `pageCount` pages (a volume.resize), in its
 * records first, durably, then on their hosts. A replica never shrinks: a smaller count changes
 * nothing. Answered with the replicas the node holds of the volume.
 */
export interface VolumeGrowRequest {
  volumeId: string;
  pageCount: number;
}
export interface VolumeGrowReply {
  node: string;
  shards: number;
}

/**
 * shard.handover: the node's replica of a shard, which leads it, hands its leadership to another
 * replica (docs/replication.md, "Handing leadership over"): to `to`, or the follower whose log
 * holds the most. Without `volumeId` and `shard` (a rebalance of leaders), any shard the node leads
 * that has a replica on `to` (then required).
 */
export interface ShardHandoverRequest {
  volumeId?: string;
  shard?: number;
  to?: string;
}
export interface ShardHandoverReply {
  node: string;
  volumeId: string;
  shard: number;
  /** The term the node's replica led, and the replica it handed the leadership to. */
  term: number;
  to: string;
}

/** The catalog shard's volume id: of the form of a volume id, with a tag no catalog chooses (theirs are hex). */
export const CATALOG_VOLUME_ID = 'v0-catalog';
/** The catalog shard's volume name, as the status and the operator commands name it. */
export const CATALOG_VOLUME_NAME = 'strata-catalog';

/** shard.forceVote: the node's replica of a shard votes again although it is repairing (operator override). */
export interface ShardForceVoteRequest {
  volumeId: string;
  shard: number;
}
export interface ShardForceVoteReply {
  node: string;
  volumeId: string;
  shard: number;
  /** The replica was repairing (false: it voted already; nothing changed). */
  wasRepairing: boolean;
  term: number;
  /**
   * The only copy of the shard held its damaged log: the damage is discarded with every record
   * after it; its log now ends at `keptLsn`, the records from `fromLsn` (keptLsn + 1) on are lost.
   */
  discarded?: { fromLsn: number; keptLsn: number };
}

// The field checks are messages/validate.ts's, so control messages fail like API ones.
const obj = expectMap;

function int(v: unknown, path: string, min: number, max: number): number {
  return expectInteger(v, path, { min, max, maxCode: 'out_of_range' });
}

function str(v: unknown, path: string): string {
  return expectId(v, path);
}

function list(v: unknown, path: string, max: number): unknown[] {
  return expectArray(v, path, { lengthMin: 0, lengthMax: max, maxCode: 'too_large' });
}

/**
 * controller.leaving: a node that stops cleanly says so (`nodeId`) before it goes, so that the
 * controller places nothing more on it; it is live again at its next heartbeat. Answered `{}`.
 */
export interface LeavingRequest {
  nodeId: string;
}

export function validateLeaving(body: unknown): LeavingRequest {
  const o = obj(body, '');
  return { nodeId: str(o.nodeId, 'nodeId') };
}

/** A controller's answer to a heartbeat. */
export function validateHeartbeatReply(body: unknown): HeartbeatReply {
  const o = obj(body, '');
  return {
    epoch: int(o.epoch, 'epoch', 0, Number.MAX_SAFE_INTEGER),
    ...(o.catalog === undefined ? {} : { catalog: str(o.catalog, 'catalog') }),
    ...(o.controllers === undefined ? {} : { controllers: controllerList(o.controllers, 'controllers') }),
  };
}

export function validateHeartbeat(body: unknown): HeartbeatRequest {
  const o = obj(body, '');
  const down =
    o.down === undefined
      ? undefined
      : list(o.down, 'down', DOWN_REPLICAS_PER_HEARTBEAT_MAX).map((d, i): DownReplica => {
          const e = obj(d, `down[${i}]`);
          return { volumeId: str(e.volumeId, `down[${i}].volumeId`), shard: int(e.shard, `down[${i}].shard`, 0, SHARDS_MAX - 1), forMs: int(e.forMs, `down[${i}].forMs`, 0, Number.MAX_SAFE_INTEGER) };
        });
  return {
    nodeId: str(o.nodeId, 'nodeId'),
    hosts: int(o.hosts, 'hosts', 1, HOSTS_PER_NODE_MAX),
    ...(o.zone === undefined ? {} : { zone: str(o.zone, 'zone') }),
    ...(down === undefined ? {} : { down }),
    ...(o.leading === undefined ? {} : { leading: int(o.leading, 'leading', 0, ASSIGNMENTS_PER_NODE_MAX) }),
  };
}

export function validateAssignmentsRequest(body: unknown): AssignmentsRequest {
  const o = obj(body, '');
  return {
    nodeId: str(o.nodeId, 'nodeId'),
    ...(o.from === undefined ? {} : { from: int(o.from, 'from', 0, ASSIGNMENTS_PER_NODE_MAX) }),
    ...(o.tombstonesFrom === undefined ? {} : { tombstonesFrom: int(o.tombstonesFrom, 'tombstonesFrom', 0, ASSIGNMENTS_TOMBSTONES_MAX) }),
  };
}

/**
 * A node's own status (`node.<id>.status`): the whole of it when it fits one message; else part
 * `part` (default 0) of `parts`, each with the node's and its hosts' fields and a run of its
 * shards (see `nodeStatusPart`, cluster/node.ts).
 */
export interface NodeStatusRequest {
  part?: number;
}

/** Parts a node's own status is split into at most (one per shard at worst). */
export const NODE_STATUS_PARTS_MAX = ASSIGNMENTS_PER_NODE_MAX;

export function validateNodeStatusRequest(body: unknown): NodeStatusRequest {
  const o = obj(body, '');
  return o.part === undefined ? {} : { part: int(o.part, 'part', 0, NODE_STATUS_PARTS_MAX - 1) };
}

export function validateShardAssignment(v: unknown, path: string): ShardAssignment {
  const o = obj(v, path);
  const shards = int(o.shards, `${path}.shards`, 1, SHARDS_MAX);
  const pageSize = int(o.pageSize, `${path}.pageSize`, 4096, 8192);
  if (pageSize !== 4096 && pageSize !== 8192) {
    throw new ProtocolError('bad_request', `${path}.pageSize: expected 4096 or 8192`, { path: `${path}.pageSize` });
  }
  const members = memberList(o.members, `${path}.members`);
  const priorMembers = o.priorMembers === undefined ? undefined : memberList(o.priorMembers, `${path}.priorMembers`);
  return {
    volumeId: str(o.volumeId, `${path}.volumeId`),
    volumeName: expectName(o.volumeName, `${path}.volumeName`),
    shard: int(o.shard, `${path}.shard`, 0, shards - 1),
    shards,
    pageCount: int(o.pageCount, `${path}.pageCount`, 1, PAGE_COUNT_MAX),
    pageSize,
    stripePages: int(o.stripePages, `${path}.stripePages`, 1, STRIPE_PAGES_MAX),
    hostId: int(o.hostId, `${path}.hostId`, 0, HOSTS_PER_NODE_MAX - 1),
    members,
    ...(o.createdAt === undefined ? {} : { createdAt: int(o.createdAt, `${path}.createdAt`, 0, Number.MAX_SAFE_INTEGER) }),
    ...(priorMembers === undefined ? {} : { priorMembers }),
    ...(o.removed === undefined ? {} : { removed: expectBoolean(o.removed, `${path}.removed`) }),
    ...(o.seed === undefined ? {} : { seed: validateShardSeed(o.seed, `${path}.seed`) }),
    ...(o.placing === undefined ? {} : { placing: expectTrue(o.placing, `${path}.placing`) }),
  };
}

/** ShardAssignment.placing: present only as `true`. */
function expectTrue(v: unknown, path: string): true {
  if (v !== true) throw new ProtocolError('bad_request', `${path}: expected true or absent`, { path });
  return true;
}

/** ShardAssignment.seed: `{ volumeId, lsn }`, an id and an LSN (0..LSN_MAX). */
export function validateShardSeed(v: unknown, path: string): ShardSeed {
  const o = obj(v, path);
  return { volumeId: str(o.volumeId, `${path}.volumeId`), lsn: expectCounter(o.lsn, `${path}.lsn`) };
}

/** Replicas of a shard at most (a set of 5 during a change: the two sets together). */
export const SHARD_MEMBERS_MAX = 7;

/** A replica set: 1..SHARD_MEMBERS_MAX distinct node ids. */
function memberList(v: unknown, path: string): string[] {
  const members = list(v, path, SHARD_MEMBERS_MAX).map((m, i) => str(m, `${path}[${i}]`));
  if (members.length === 0 || new Set(members).size !== members.length) {
    throw new ProtocolError('bad_request', `${path}: expected 1..${SHARD_MEMBERS_MAX} distinct node ids`, { path });
  }
  return members;
}

export function validateAssignmentsReply(body: unknown): AssignmentsReply {
  const o = obj(body, '');
  return {
    epoch: int(o.epoch, 'epoch', 0, Number.MAX_SAFE_INTEGER),
    shards: list(o.shards, 'shards', ASSIGNMENTS_PAGE_MAX).map((s, i) => validateShardAssignment(s, `shards[${i}]`)),
    tombstones: list(o.tombstones, 'tombstones', ASSIGNMENTS_TOMBSTONES_MAX).map((t, i) => str(t, `tombstones[${i}]`)),
    ...(o.next === undefined ? {} : { next: int(o.next, 'next', 1, ASSIGNMENTS_PER_NODE_MAX) }),
    ...(o.tombstonesNext === undefined ? {} : { tombstonesNext: int(o.tombstonesNext, 'tombstonesNext', 1, ASSIGNMENTS_TOMBSTONES_MAX) }),
    ...(o.catalog === undefined ? {} : { catalog: str(o.catalog, 'catalog') }),
    ...(o.issuedBelow === undefined ? {} : { issuedBelow: int(o.issuedBelow, 'issuedBelow', 1, Number.MAX_SAFE_INTEGER) }),
    ...(o.controllers === undefined ? {} : { controllers: controllerList(o.controllers, 'controllers') }),
  };
}

export function validateShardsOpen(body: unknown): ShardsOpenRequest {
  const o = obj(body, '');
  return { shards: list(o.shards, 'shards', SHARDS_PER_CONTROL_MAX).map((s, i) => validateShardAssignment(s, `shards[${i}]`)) };
}

export function validateShardsOpenReply(body: unknown): ShardsOpenReply {
  const o = obj(body, '');
  if (o.ok !== true) throw new ProtocolError('bad_request', 'ok: expected true', { path: 'ok' });
  if (o.notCopied === undefined) return { ok: true };
  return {
    ok: true,
    notCopied: list(o.notCopied, 'notCopied', SHARDS_PER_CONTROL_MAX).map((v, i) => {
      const n = obj(v, `notCopied[${i}]`);
      return {
        volumeId: str(n.volumeId, `notCopied[${i}].volumeId`),
        shard: int(n.shard, `notCopied[${i}].shard`, 0, SHARDS_MAX - 1),
        reason: expectString(n.reason, `notCopied[${i}].reason`, NOT_COPIED_REASON_MAX),
        noSpace: expectBoolean(n.noSpace, `notCopied[${i}].noSpace`),
      };
    }),
  };
}

export function validateShardsDestroy(body: unknown): ShardsDestroyRequest {
  const o = obj(body, '');
  return {
    volumeId: str(o.volumeId, 'volumeId'),
    shards: list(o.shards, 'shards', SHARDS_PER_CONTROL_MAX).map((s, i) => int(s, `shards[${i}]`, 0, 255)),
  };
}

export function validateVolumeGrow(body: unknown): VolumeGrowRequest {
  const o = obj(body, '');
  for (const k of Object.keys(o)) if (k !== 'volumeId' && k !== 'pageCount') throw new ProtocolError('bad_request', `${k}: not a field of volume.grow`, { path: k });
  return { volumeId: str(o.volumeId, 'volumeId'), pageCount: int(o.pageCount, 'pageCount', 1, PAGE_COUNT_MAX) };
}

export function validateVolumeGrowReply(body: unknown): VolumeGrowReply {
  const o = obj(body, '');
  return { node: str(o.node, 'node'), shards: int(o.shards, 'shards', 0, Number.MAX_SAFE_INTEGER) };
}

export function validateShardHandover(body: unknown): ShardHandoverRequest {
  const o = obj(body, '');
  for (const k of Object.keys(o)) if (k !== 'volumeId' && k !== 'shard' && k !== 'to') throw new ProtocolError('bad_request', `${k}: not a field of shard.handover`, { path: k });
  if ((o.volumeId === undefined) !== (o.shard === undefined)) throw new ProtocolError('bad_request', 'volumeId and shard: both or neither', { path: o.volumeId === undefined ? 'volumeId' : 'shard' });
  if (o.volumeId === undefined && o.to === undefined) throw new ProtocolError('bad_request', 'to: required without volumeId and shard', { path: 'to' });
  return {
    ...(o.volumeId === undefined ? {} : { volumeId: str(o.volumeId, 'volumeId'), shard: int(o.shard, 'shard', 0, SHARDS_MAX - 1) }),
    ...(o.to === undefined ? {} : { to: str(o.to, 'to') }),
  };
}

export function validateShardHandoverReply(body: unknown): ShardHandoverReply {
  const o = obj(body, '');
  return { node: str(o.node, 'node'), volumeId: str(o.volumeId, 'volumeId'), shard: int(o.shard, 'shard', 0, SHARDS_MAX - 1), term: int(o.term, 'term', 0, Number.MAX_SAFE_INTEGER), to: str(o.to, 'to') };
}

export function validateShardForceVote(body: unknown): ShardForceVoteRequest {
  const o = obj(body, '');
  return { volumeId: str(o.volumeId, 'volumeId'), shard: int(o.shard, 'shard', 0, 255) };
}

export function validateShardForceVoteReply(body: unknown): ShardForceVoteReply {
  const o = obj(body, '');
  if (typeof o.wasRepairing !== 'boolean') throw new ProtocolError('bad_request', 'wasRepairing: expected a boolean');
  return {
    node: str(o.node, 'node'),
    volumeId: str(o.volumeId, 'volumeId'),
    shard: int(o.shard, 'shard', 0, 255),
    wasRepairing: o.wasRepairing,
    term: int(o.term, 'term', 0, Number.MAX_SAFE_INTEGER),
    ...(o.discarded !== undefined ? { discarded: discardedOf(obj(o.discarded, 'discarded')) } : {}),
  };
}

function discardedOf(d: Record<string, unknown>): { fromLsn: number; keptLsn: number } {
  return { fromLsn: int(d.fromLsn, 'discarded.fromLsn', 1, Number.MAX_SAFE_INTEGER), keptLsn: int(d.keptLsn, 'discarded.keptLsn', 0, Number.MAX_SAFE_INTEGER) };
}

/**
 * shard.digest (`node.<id>.shard.digest`, `strata shard check`): where the node's replica of a
 * shard has its log, and with `fromLsn` and `toLsn` the digest of its records there
 * (storage-engine/log-digest.ts), cut after 16 MiB of payloads.
 */
export interface ShardDigestRequest {
  volumeId: string;
  shard: number;
  fromLsn?: number;
  toLsn?: number;
  /** The shard's pages among volume pages `first`..`first + count - 1` as of `lsn`, digested. */
  pages?: { lsn: number; first: number; count: number };
}
export interface ShardDigestReply {
  node: string;
  volumeId: string;
  shard: number;
  role: 'follower' | 'candidate' | 'leader';
  term: number;
  firstLsn: number;
  lastLsn: number;
  commitLsn: number;
  /** With a range asked: the LSNs digested (`toLsn` may be below the one asked), how many, and the digest. */
  fromLsn?: number;
  toLsn?: number;
  records?: number;
  digest?: number;
  /** The last LSN applied to its pages, and the oldest its pages are readable at (absent from older nodes). */
  appliedLsn?: number;
  oldestLsn?: number;
  /** With pages asked: the shard's own pages among them (`pages`) and their digest. */
  pages?: { lsn: number; first: number; count: number; pages: number; digest: number };
}

const LSN_MAX = Number.MAX_SAFE_INTEGER;
const DIGEST_FIELDS = new Set(['volumeId', 'shard', 'fromLsn', 'toLsn', 'pages']);
const DIGEST_PAGES_FIELDS = new Set(['lsn', 'first', 'count']);
/** Most volume pages one page digest covers (of which the shard's own are bounded by bytes, PAGE_DIGEST_BYTES_MAX). */
export const DIGEST_PAGES_RANGE_MAX = 1 << 20;
/** Most bytes of a shard's own pages one page digest reads (on its host's thread, as the records' digest does). */
export const PAGE_DIGEST_BYTES_MAX = 16 * 1024 * 1024;

export function validateShardDigest(body: unknown): ShardDigestRequest {
  const o = obj(body, '');
  for (const k of Object.keys(o)) if (!DIGEST_FIELDS.has(k)) throw new ProtocolError('bad_request', `${k}: not a field of shard.digest`, { path: k });
  const r: ShardDigestRequest = { volumeId: str(o.volumeId, 'volumeId'), shard: int(o.shard, 'shard', 0, SHARDS_MAX - 1) };
  const given = (v: unknown): boolean => v !== undefined && v !== null;
  if (given(o.fromLsn) !== given(o.toLsn)) throw new ProtocolError('bad_request', `${given(o.fromLsn) ? 'toLsn' : 'fromLsn'}: fromLsn and toLsn go together`, { path: given(o.fromLsn) ? 'toLsn' : 'fromLsn' });
  if (given(o.fromLsn)) {
    r.fromLsn = int(o.fromLsn, 'fromLsn', 1, LSN_MAX);
    r.toLsn = int(o.toLsn, 'toLsn', 1, LSN_MAX);
    if (r.toLsn < r.fromLsn) throw new ProtocolError('bad_request', `toLsn: ${r.toLsn} is below fromLsn ${r.fromLsn}`, { path: 'toLsn' });
  }
  if (given(o.pages)) {
    const p = obj(o.pages, 'pages');
    for (const k of Object.keys(p)) if (!DIGEST_PAGES_FIELDS.has(k)) throw new ProtocolError('bad_request', `pages.${k}: not a field of shard.digest pages`, { path: `pages.${k}` });
    r.pages = { lsn: int(p.lsn, 'pages.lsn', 0, LSN_MAX), first: int(p.first, 'pages.first', 0, LSN_MAX), count: int(p.count, 'pages.count', 1, DIGEST_PAGES_RANGE_MAX) };
  }
  return r;
}

export function validateShardDigestReply(body: unknown): ShardDigestReply {
  const o = obj(body, '');
  const role = o.role;
  if (role !== 'follower' && role !== 'candidate' && role !== 'leader') throw new ProtocolError('bad_request', 'role: expected follower, candidate or leader');
  const r: ShardDigestReply = {
    node: str(o.node, 'node'),
    volumeId: str(o.volumeId, 'volumeId'),
    shard: int(o.shard, 'shard', 0, SHARDS_MAX - 1),
    role,
    term: int(o.term, 'term', 0, LSN_MAX),
    firstLsn: int(o.firstLsn, 'firstLsn', 0, LSN_MAX),
    lastLsn: int(o.lastLsn, 'lastLsn', 0, LSN_MAX),
    commitLsn: int(o.commitLsn, 'commitLsn', 0, LSN_MAX),
  };
  if (o.digest !== undefined && o.digest !== null) {
    r.fromLsn = int(o.fromLsn, 'fromLsn', 1, LSN_MAX);
    r.toLsn = int(o.toLsn, 'toLsn', r.fromLsn, LSN_MAX);
    r.records = int(o.records, 'records', 1, LSN_MAX);
    r.digest = int(o.digest, 'digest', 0, 0xffff_ffff);
    if (r.records !== r.toLsn - r.fromLsn + 1) throw new ProtocolError('bad_request', `records: ${r.records} is not the count of LSNs ${r.fromLsn}..${r.toLsn}`);
  }
  if (o.appliedLsn !== undefined && o.appliedLsn !== null) r.appliedLsn = int(o.appliedLsn, 'appliedLsn', 0, LSN_MAX);
  if (o.oldestLsn !== undefined && o.oldestLsn !== null) r.oldestLsn = int(o.oldestLsn, 'oldestLsn', 0, LSN_MAX);
  if (o.pages !== undefined && o.pages !== null) {
    const p = obj(o.pages, 'pages');
    r.pages = {
      lsn: int(p.lsn, 'pages.lsn', 0, LSN_MAX),
      first: int(p.first, 'pages.first', 0, LSN_MAX),
      count: int(p.count, 'pages.count', 1, DIGEST_PAGES_RANGE_MAX),
      pages: int(p.pages, 'pages.pages', 0, DIGEST_PAGES_RANGE_MAX),
      digest: int(p.digest, 'pages.digest', 0, 0xffff_ffff),
    };
  }
  return r;
}

/**
 * shard.reconfigure (`node.<id>.shard.reconfigure`): the node's replica of a shard, if it leads
 * it, changes the shard's replica set to `members` (Replica.reconfigure). The request's
 * Strata-Deadline header bounds the wait (default: the node's request timeout). Fails as
 * Replica.reconfigure does (`not_leader` with `details.leader` when it knows the leader);
 * `not_found` when the node holds no replica of the shard.
 */
export interface ShardReconfigureRequest {
  volumeId: string;
  shard: number;
  members: string[];
}
export interface ShardReconfigureReply {
  node: string;
  volumeId: string;
  shard: number;
  /** The replica set in force now, committed. */
  members: string[];
  term: number;
  lsn: number;
  /** False when the set already was `members` (a move asked again after it was done). */
  changed: boolean;
}

export function validateShardReconfigure(body: unknown): ShardReconfigureRequest {
  const o = obj(body, '');
  return { volumeId: str(o.volumeId, 'volumeId'), shard: int(o.shard, 'shard', 0, SHARDS_MAX - 1), members: memberList(o.members, 'members') };
}

export function validateShardReconfigureReply(body: unknown): ShardReconfigureReply {
  const o = obj(body, '');
  return {
    node: str(o.node, 'node'),
    volumeId: str(o.volumeId, 'volumeId'),
    shard: int(o.shard, 'shard', 0, SHARDS_MAX - 1),
    members: memberList(o.members, 'members'),
    term: int(o.term, 'term', 0, Number.MAX_SAFE_INTEGER),
    lsn: int(o.lsn, 'lsn', 0, Number.MAX_SAFE_INTEGER),
    changed: expectBoolean(o.changed, 'changed'),
  };
}

/**
 * `controller.shard.move` (operator): moves shard `shard` of volume `volume`'s replica on node
 * `from` to node `to` (docs/replication.md, "Moving a replica"). The request's Strata-Deadline
 * bounds it; asked again with the same nodes, it resumes a move that did not finish (or answers
 * one that did).
 */
export interface ShardMoveRequest {
  volume: string;
  shard: number;
  from: string;
  to: string;
}
export interface ShardMoveReply {
  volume: string;
  shard: number;
  /** The shard's replica set now. */
  members: string[];
  /** The term and LSN of the leader that made the change (or found it made). */
  term: number;
  lsn: number;
}

const MOVE_FIELDS = new Set(['volume', 'shard', 'from', 'to']);

export function validateShardMove(body: unknown): ShardMoveRequest {
  const o = obj(body, '');
  for (const key of Object.keys(o)) if (!MOVE_FIELDS.has(key)) throw new ProtocolError('bad_request', `${key}: unknown field`, { path: key });
  const r = { volume: expectName(o.volume, 'volume'), shard: int(o.shard, 'shard', 0, SHARDS_MAX - 1), from: str(o.from, 'from'), to: str(o.to, 'to') };
  if (r.from === r.to) throw new ProtocolError('bad_request', `from and to are the same node '${r.from}': name the node to take the replica off and another to put it on`, { path: 'to' });
  return r;
}

export function validateShardMoveReply(body: unknown): ShardMoveReply {
  const o = obj(body, '');
  return {
    volume: expectName(o.volume, 'volume'),
    shard: int(o.shard, 'shard', 0, SHARDS_MAX - 1),
    members: memberList(o.members, 'members'),
    term: int(o.term, 'term', 0, Number.MAX_SAFE_INTEGER),
    lsn: int(o.lsn, 'lsn', 0, Number.MAX_SAFE_INTEGER),
  };
}

/**
 * `controller.node.drain` (operator): marks node `node` as draining, durably in the catalog
 * (docs/replication.md, "Draining a node"): the controller moves each of its replicas to
 * another node, as it replaces a dead node's, and places nothing new on it. With `undo`, the
 * mark is taken off (moves already done stay done). Answered at once, with what is left.
 */
export interface NodeDrainRequest {
  node: string;
  undo?: boolean;
}
export interface NodeDrainReply {
  node: string;
  /** The node is marked draining now. */
  draining: boolean;
  /** Shard replicas the catalog still places on the node (a move under way that adds one to it counted). */
  replicas: number;
}

/** Nodes marked draining at once at most. */
export const DRAINING_NODES_MAX = 64;

const DRAIN_FIELDS = new Set(['node', 'undo']);

export function validateNodeDrain(body: unknown): NodeDrainRequest {
  const o = obj(body, '');
  for (const key of Object.keys(o)) if (!DRAIN_FIELDS.has(key)) throw new ProtocolError('bad_request', `${key}: unknown field`, { path: key });
  return { node: str(o.node, 'node'), ...(o.undo === undefined ? {} : { undo: expectBoolean(o.undo, 'undo') }) };
}

export function validateNodeDrainReply(body: unknown): NodeDrainReply {
  const o = obj(body, '');
  return { node: str(o.node, 'node'), draining: expectBoolean(o.draining, 'draining'), replicas: int(o.replicas, 'replicas', 0, Number.MAX_SAFE_INTEGER) };
}

/**
 * `controller.rebalance` (operator): asks the controller to even out the replicas over the live
 * nodes that are not draining, one move at a time, until the most and the least loaded differ by
 * at most one (docs/replication.md, "Rebalancing"); durable in the catalog until done. With
 * `stop`, it is called off (the move running finishes). Answered at once, with each node's count.
 */
export interface RebalanceRequest {
  stop?: boolean;
}
export interface RebalanceReply {
  /** A rebalance is asked for and not done. */
  rebalancing: boolean;
  /** Shard replicas on each live node that is not draining, by node id, and the shards it leads (absent from older controllers). */
  nodes: Array<{ node: string; replicas: number; leaders?: number }>;
}

const REBALANCE_FIELDS = new Set(['stop']);
/** Nodes in a rebalance reply at most. */
export const REBALANCE_NODES_MAX = 1024;

export function validateRebalance(body: unknown): RebalanceRequest {
  const o = obj(body, '');
  for (const key of Object.keys(o)) if (!REBALANCE_FIELDS.has(key)) throw new ProtocolError('bad_request', `${key}: unknown field`, { path: key });
  return o.stop === undefined ? {} : { stop: expectBoolean(o.stop, 'stop') };
}

export function validateRebalanceReply(body: unknown): RebalanceReply {
  const o = obj(body, '');
  return {
    rebalancing: expectBoolean(o.rebalancing, 'rebalancing'),
    nodes: list(o.nodes, 'nodes', REBALANCE_NODES_MAX).map((n, i) => {
      const m = obj(n, `nodes[${i}]`);
      return {
        node: str(m.node, `nodes[${i}].node`),
        replicas: int(m.replicas, `nodes[${i}].replicas`, 0, Number.MAX_SAFE_INTEGER),
        ...(m.leaders === undefined ? {} : { leaders: int(m.leaders, `nodes[${i}].leaders`, 0, Number.MAX_SAFE_INTEGER) }),
      };
    }),
  };
}

/**
 * The answer on a claim subject (`node.<id>.claim`, `controller.claim`): a node subscribes to
 * them before it starts anything else, answers for as long as it runs, and refuses to start
 * when another instance answers (docs/cli.md, `strata node`).
 */
export interface ClaimReply {
  /** Random, one per node process start: tells a node's own answer from another's. */
  instance: string;
  nodeId: string;
  hostname: string;
  pid: number;
  /** When that node began to start (its clock; for the operator). */
  sinceMs: number;
}

export function validateClaimReply(body: unknown): ClaimReply {
  const o = obj(body, '');
  return {
    instance: str(o.instance, 'instance'),
    nodeId: str(o.nodeId, 'nodeId'),
    hostname: expectString(o.hostname, 'hostname', 255),
    pid: int(o.pid, 'pid', 0, Number.MAX_SAFE_INTEGER),
    // At most the last millisecond a Date holds: it is shown as a date.
    sinceMs: int(o.sinceMs, 'sinceMs', 0, DATE_MS_MAX),
  };
}

/** The largest time in ms since the epoch that a Date holds (8.64e15, year 275760). */
export const DATE_MS_MAX = 8.64e15;

/**
 * A claim's question: the asking node's own claim, and whether it asks while it runs
 * (`recheck`, its periodic check or after a reconnection: of two nodes that find each other the
 * later start stops, so one that hears this question from a node that started before it stops)
 * or at its start (the asker refuses on any other answer; the answerer runs on). A question that
 * does not validate is only answered.
 */
export interface ClaimQuestion extends ClaimReply {
  recheck: boolean;
}

export function validateClaimQuestion(body: unknown): ClaimQuestion {
  const o = obj(body, '');
  return { ...validateClaimReply(o), recheck: expectBoolean(o.recheck, 'recheck') };
}

export function controllerSubject(cluster: string, verb: string): string {
  return `strata.${cluster}.controller.${verb}`;
}

export function nodeSubject(cluster: string, nodeId: string, verb: string): string {
  return `strata.${cluster}.node.${nodeId}.${verb}`;
}

/**
 * A page of a node's own record of the replicas it holds (`node.<id>.records`), from index
 * `from` (default 0): what `strata catalog recover` rebuilds a lost catalog from.
 */
export interface NodeRecordsRequest {
  from?: number;
}

export interface NodeRecordsReply {
  nodeId: string;
  hosts: number;
  shards: ShardAssignment[];
  /** Index of the next page, when there is one. */
  next?: number;
  /**
   * How many times the node's records changed (since it started): the pages of one read carry
   * the same, or the records changed between them (an index may then name another record).
   */
  version?: number;
}

export function validateNodeRecordsRequest(body: unknown): NodeRecordsRequest {
  const o = obj(body, '');
  return o.from === undefined ? {} : { from: int(o.from, 'from', 0, ASSIGNMENTS_PER_NODE_MAX) };
}

export function validateNodeRecordsReply(body: unknown): NodeRecordsReply {
  const o = obj(body, '');
  return {
    nodeId: str(o.nodeId, 'nodeId'),
    hosts: int(o.hosts, 'hosts', 1, HOSTS_PER_NODE_MAX),
    shards: list(o.shards, 'shards', ASSIGNMENTS_PAGE_MAX).map((s, i) => validateShardAssignment(s, `shards[${i}]`)),
    ...(o.next === undefined ? {} : { next: int(o.next, 'next', 1, ASSIGNMENTS_PER_NODE_MAX) }),
    ...(o.version === undefined ? {} : { version: int(o.version, 'version', 0, Number.MAX_SAFE_INTEGER) }),
  };
}

/**
 * `controller.catalog.recover`: the controller asks every live node for its records and adds to
 * the catalog the volumes they hold that it lacks (docs/replication.md, "A lost catalog");
 * `apply: false` (the default) only says what it would add.
 */
export interface CatalogRecoverRequest {
  apply?: boolean;
}

/** A volume found on the nodes, and what became of it. */
export interface RecoveredVolume {
  id: string;
  name: string;
  shards: number;
  replicas: number;
  /** Why it was not (or would not be) added; absent for one added. */
  reason?: string;
}

export interface CatalogRecoverReply {
  applied: boolean;
  /** The catalog's epoch after the recovery. */
  epoch: number;
  /** Live nodes asked, and those that did not answer (with why). */
  nodesAsked: number;
  nodesFailed: { node: string; error: string }[];
  /** Volumes added (or that would be), and those left out with their reason; as many as fit. */
  recovered: RecoveredVolume[];
  skipped: RecoveredVolume[];
  /** How many of each there were in all (the lists may be cut to fit one message). */
  recoveredCount: number;
  skippedCount: number;
}

/** Volumes a recovery may report at most (the catalog's bound on volumes, twice). */
export const RECOVER_VOLUMES_MAX = 8192;
/** Longest reason or error text in a recovery's reply. */
export const RECOVER_TEXT_MAX = 512;

export function validateCatalogRecoverRequest(body: unknown): CatalogRecoverRequest {
  const o = obj(body, '');
  for (const key of Object.keys(o)) if (key !== 'apply') throw new ProtocolError('bad_request', `${key}: unknown field`, { path: key });
  return o.apply === undefined ? {} : { apply: expectBoolean(o.apply, 'apply') };
}

function recoveredVolume(v: unknown, path: string): RecoveredVolume {
  const o = obj(v, path);
  return {
    id: str(o.id, `${path}.id`),
    name: expectName(o.name, `${path}.name`),
    shards: int(o.shards, `${path}.shards`, 1, SHARDS_MAX),
    replicas: int(o.replicas, `${path}.replicas`, 1, 7),
    ...(o.reason === undefined ? {} : { reason: text(o.reason, `${path}.reason`) }),
  };
}

function text(v: unknown, path: string): string {
  return expectString(v, path, RECOVER_TEXT_MAX);
}

export function validateCatalogRecoverReply(body: unknown): CatalogRecoverReply {
  const o = obj(body, '');
  return {
    applied: expectBoolean(o.applied, 'applied'),
    epoch: int(o.epoch, 'epoch', 0, Number.MAX_SAFE_INTEGER),
    nodesAsked: int(o.nodesAsked, 'nodesAsked', 0, ASSIGNMENTS_PER_NODE_MAX),
    nodesFailed: list(o.nodesFailed, 'nodesFailed', ASSIGNMENTS_PER_NODE_MAX).map((f, i) => {
      const e = obj(f, `nodesFailed[${i}]`);
      return { node: str(e.node, `nodesFailed[${i}].node`), error: text(e.error, `nodesFailed[${i}].error`) };
    }),
    recovered: list(o.recovered, 'recovered', RECOVER_VOLUMES_MAX).map((v, i) => recoveredVolume(v, `recovered[${i}]`)),
    skipped: list(o.skipped, 'skipped', RECOVER_VOLUMES_MAX).map((v, i) => recoveredVolume(v, `skipped[${i}]`)),
    recoveredCount: int(o.recoveredCount, 'recoveredCount', 0, RECOVER_VOLUMES_MAX),
    skippedCount: int(o.skippedCount, 'skippedCount', 0, RECOVER_VOLUMES_MAX),
  };
}

/** A set of controller nodes: CONTROLLERS_MIN..CONTROLLERS_MAX distinct node ids. */
function controllerList(v: unknown, path: string): string[] {
  const ids = list(v, path, CONTROLLERS_MAX).map((m, i) => str(m, `${path}[${i}]`));
  if (ids.length < CONTROLLERS_MIN || new Set(ids).size !== ids.length) {
    throw new ProtocolError('bad_request', `${path}: expected ${CONTROLLERS_MIN}..${CONTROLLERS_MAX} distinct node ids, got ${ids.length}${new Set(ids).size !== ids.length ? ' with one listed twice' : ''}`, { path });
  }
  return ids;
}

/**
 * `controller.controllers` (operator): the controller nodes of a cluster with a replicated
 * controller, changed to `members` (docs/replication.md, "Changing the controller nodes"): the
 * catalog shard's replica set, changed through a joint configuration. Each node added must be
 * live; it opens a new replica of the catalog shard before the change. Each node taken out
 * destroys its replica once the change is committed. Without `members`: the set in force,
 * unchanged. Asked again with the same set, it answers the change done (`changed: false`).
 */
export interface ControllersRequest {
  members?: string[];
}
export interface ControllersReply {
  /** The node that runs the controller and answered. */
  node: string;
  /** The controller nodes now: the catalog shard's set in force, committed. */
  members: string[];
  /** The set before (`members` when nothing changed). */
  prior: string[];
  changed: boolean;
  /** The term and LSN of the catalog shard's leader that made the change (or found it made). */
  term: number;
  lsn: number;
  /** Nodes taken out that destroyed their replica of the catalog shard when told. */
  left: string[];
  /**
   * Nodes taken out that could not be told (down, or the controller's own node, which steps
   * down): each destroys its replica once the next controller's heartbeat answer leaves it out.
   */
  leaving: string[];
}

const CONTROLLERS_FIELDS = new Set(['members']);

export function validateControllers(body: unknown): ControllersRequest {
  const o = obj(body, '');
  for (const key of Object.keys(o)) if (!CONTROLLERS_FIELDS.has(key)) throw new ProtocolError('bad_request', `${key}: unknown field`, { path: key });
  return o.members === undefined ? {} : { members: controllerList(o.members, 'members') };
}

export function validateControllersReply(body: unknown): ControllersReply {
  const o = obj(body, '');
  return {
    node: str(o.node, 'node'),
    members: controllerList(o.members, 'members'),
    prior: controllerList(o.prior, 'prior'),
    changed: expectBoolean(o.changed, 'changed'),
    term: int(o.term, 'term', 0, Number.MAX_SAFE_INTEGER),
    lsn: int(o.lsn, 'lsn', 0, Number.MAX_SAFE_INTEGER),
    left: list(o.left, 'left', CONTROLLERS_MAX).map((m, i) => str(m, `left[${i}]`)),
    leaving: list(o.leaving, 'leaving', CONTROLLERS_MAX).map((m, i) => str(m, `leaving[${i}]`)),
  };
}

/**
 * `node.<id>.catalog.join` (the controller, during a change of the controller nodes): the node
 * opens a new replica of the catalog shard, joining the set `members` changing from `prior`,
 * and counts itself a controller node from then on (durably, in its record). Answered
 * CatalogMembershipReply: `done` false when it held its replica already.
 */
export interface CatalogJoinRequest {
  members: string[];
  prior: string[];
}
/**
 * `node.<id>.catalog.leave` (the controller, once a change of the controller nodes that took
 * the node out is committed; `members` is the set now): the node destroys its replica of the
 * catalog shard and is no longer a controller node (durably). Answered CatalogMembershipReply:
 * `done` false when it held none.
 */
export interface CatalogLeaveRequest {
  members: string[];
}
export interface CatalogMembershipReply {
  node: string;
  /** The replica was opened (join) or destroyed (leave); false: nothing was to do. */
  done: boolean;
}

export function validateCatalogJoin(body: unknown): CatalogJoinRequest {
  const o = obj(body, '');
  return { members: controllerList(o.members, 'members'), prior: controllerList(o.prior, 'prior') };
}

export function validateCatalogLeave(body: unknown): CatalogLeaveRequest {
  const o = obj(body, '');
  return { members: controllerList(o.members, 'members') };
}

export function validateCatalogMembershipReply(body: unknown): CatalogMembershipReply {
  const o = obj(body, '');
  return { node: str(o.node, 'node'), done: expectBoolean(o.done, 'done') };
}
