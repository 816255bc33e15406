/**
 * Replication messages between the replicas of a shard, on the subject
 * `strata.<cluster>.replica.<volumeId>.<shard>.<nodeId>` of the receiving replica. A leader sends
 * an append its followers all need as one message, on `strata.<cluster>.followers.<volumeId>.
 * <shard>.<leaderId>`, to which every other replica of the shard subscribes; each follower
 * answers it on the message's reply subject followed by `.<its nodeId>`.
 *
 * Every message carries the sender's term; a receiver at a newer term answers with its term and
 * the sender steps down (fencing). Bodies are CBOR maps validated on receipt.
 */
import { ProtocolError } from './errors';
import { expectArray, expectBoolean, expectBytes, expectCounter, expectCrc, expectId, expectInteger, expectMap, optional } from './validate';

export const RAFT_RECORDS_PER_APPEND_MAX = 65536;
export const RAFT_SNAPSHOT_CHUNK_BYTES_MAX = 4 * 1024 * 1024;

export interface WireRecord {
  term: number;
  kind: number;
  payload: Uint8Array;
  /**
   * CRC-32C of `payload` as the leader holds it (the checksum its log record was written with):
   * the follower checks the bytes it received against it before it takes the record, and writes
   * its own record with it.
   */
  crc?: number;
}

/**
 * `vote`: a candidate asks for a vote in its (new) term. `prevote`: a replica whose election timer
 * fired asks whether it would win an election in `term` (its term + 1) before it starts one; the
 * answer changes nothing on either side (no term, no vote), so a replica that cannot win (cut off,
 * or behind) never raises its term.
 */
export interface VoteRequest {
  type: 'vote' | 'prevote';
  term: number;
  candidate: string;
  lastLsn: number;
  lastTerm: number;
  /**
   * A vote asked by a candidate its leader handed leadership to (`timeoutNow`): voters that know
   * of a live leader vote all the same (leader stickiness does not apply), since that leader gave
   * up its lease before asking. Only in `vote` requests.
   */
  transfer?: true;
}

/**
 * `timeoutNow`: a leader hands its leadership to a follower whose log holds every record it
 * wrote (docs/replication.md, "Handing leadership over"): the follower starts an election at
 * once, without a prevote, asking for votes with `transfer`. `ok`: it did.
 */
export interface TimeoutNowRequest {
  type: 'timeoutNow';
  term: number;
  leader: string;
}
export interface TimeoutNowReply {
  term: number;
  ok: boolean;
}
export interface VoteReply {
  term: number;
  granted: boolean;
  /**
   * The answering replica's last LSN (queued records counted), in answers to a prevote for term 0
   * (Replica.probeTerms): 0 tells a replica whose storage was lost that this peer holds no record.
   */
  lastLsn?: number;
  /**
   * In the same answers: the members of the answering replica's replica set (both sets during a
   * change). A replica whose storage was lost asks every one of them for its term too: its node
   * may know an older set than its peers, without a member it may have voted for.
   */
  members?: string[];
}

export interface AppendRequest {
  type: 'append';
  term: number;
  leader: string;
  prevLsn: number;
  prevTerm: number;
  records: WireRecord[];
  commitLsn: number;
  /**
   * The leader's last LSN when it sent this: every record a follower acknowledged to it is at or
   * below it. A follower repairing a damaged log votes again only once it holds that far.
   */
  leaderLastLsn?: number;
  /**
   * An append without records from an idle leader that asks its followers to quiesce: to wait
   * for its next message longer than an election timeout while its node is heard from
   * (docs/replication.md, "Idle shards").
   */
  quiesce?: boolean;
}
export interface AppendReply {
  term: number;
  success: boolean;
  /** On success: the last LSN of the request, now durable on the follower. */
  matchLsn?: number;
  /** The follower's last LSN (a hint where to continue after a mismatch). */
  lastLsn: number;
  /**
   * A mismatch of terms: the follower's log holds `prevLsn` with another term, and `lastLsn` is
   * where to continue (before that term's run), not where its log ends.
   */
  conflict?: boolean;
  /** To an append with `quiesce`: the follower holds every record of the leader and is quiesced. */
  quiesced?: boolean;
}

export interface SnapshotRequest {
  type: 'snapshot';
  term: number;
  leader: string;
  /** The image's LSN and the term of the record at that LSN. */
  lsn: number;
  lastTerm: number;
  /** Size of the whole image file; chunks arrive in order. */
  bytes: number;
  offset: number;
  data: Uint8Array;
  done: boolean;
  /**
   * The replica set in force at the image's LSN (the leader's configuration as of that record):
   * the follower takes it with the image. Absent from a leader of an earlier version.
   */
  config?: WireConfig;
}

/** A replica set in a message or a Config record: `members`, and `prior` during a change (joint consensus). */
export interface WireConfig {
  members: string[];
  prior?: string[];
}

/** Members of a replica set at most (a volume has 1, 3 or 5 replicas; a change from 5 to 5 others names 10 in all). */
export const CONFIG_MEMBERS_MAX = 7;

function membersOf(v: unknown, path: string): string[] {
  const list = expectArray(v, path, { lengthMin: 1, lengthMax: CONFIG_MEMBERS_MAX }).map((m, i) => expectId(m, `${path}[${i}]`));
  if (list.length === 0 || new Set(list).size !== list.length) {
    throw new ProtocolError('bad_request', `${path}: expected 1..${CONFIG_MEMBERS_MAX} distinct node ids`, { path });
  }
  return list.sort();
}

/** Two lists of node ids hold the same ids, in any order (replica sets are a few ids). */
export function sameNodeSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/** Validates a replica set (WireConfig): members sorted, `prior` kept only when it differs. */
export function validateConfig(v: unknown, path = 'config'): WireConfig {
  const o = expectMap(v, path);
  const members = membersOf(o.members, `${path}.members`);
  if (o.prior === undefined) return { members };
  const prior = membersOf(o.prior, `${path}.prior`);
  return prior.join(',') === members.join(',') ? { members } : { members, prior };
}
export interface SnapshotReply {
  term: number;
  ok: boolean;
  nextOffset: number;
}

export type RaftRequest = VoteRequest | AppendRequest | SnapshotRequest | TimeoutNowRequest;
export type RaftReply = VoteReply | AppendReply | SnapshotReply | TimeoutNowReply;

/**
 * Largest term a replication message may carry (2^48: an election every millisecond would take
 * 8,900 years to reach it). An election goes one term past the highest it has seen, so a term
 * near 2^53 - 1 taken from a message (a forged or corrupted one) would leave no election room:
 * the shard would stay without a leader for good.
 */
export const TERM_MAX = 2 ** 48;

// The field checks are messages/validate.ts's, so replication messages fail like API ones.
const map = expectMap;
const counter = expectCounter;
const termOf = (v: unknown, path: string): number => expectInteger(v, path, { min: 0, max: TERM_MAX, maxCode: 'out_of_range' });
const id = expectId;
const bytes = expectBytes;
const bool = expectBoolean;

/** Validates any replication request. */
export function validateRaftRequest(body: unknown): RaftRequest {
  const o = map(body, '');
  switch (o.type) {
    case 'vote':
    case 'prevote':
      if (o.transfer !== undefined && (o.type !== 'vote' || o.transfer !== true)) {
        throw new ProtocolError('bad_request', 'transfer: only true, and only in a vote request', { path: 'transfer' });
      }
      return {
        type: o.type, term: termOf(o.term, 'term'), candidate: id(o.candidate, 'candidate'),
        lastLsn: counter(o.lastLsn, 'lastLsn'), lastTerm: termOf(o.lastTerm, 'lastTerm'),
        ...(o.transfer === true ? { transfer: true as const } : {}),
      };
    case 'timeoutNow':
      return { type: 'timeoutNow', term: termOf(o.term, 'term'), leader: id(o.leader, 'leader') };
    case 'append': {
      const records = expectArray(o.records, 'records', { lengthMin: 0, lengthMax: RAFT_RECORDS_PER_APPEND_MAX, maxCode: 'too_large' }).map((r, i) => {
        const m = map(r, `records[${i}]`);
        const kind = counter(m.kind, `records[${i}].kind`);
        if (kind > 255) throw new ProtocolError('bad_request', `records[${i}].kind: at most 255`, { path: `records[${i}].kind` });
        const record: WireRecord = { term: termOf(m.term, `records[${i}].term`), kind, payload: bytes(m.payload, `records[${i}].payload`) };
        const crc = optional(m.crc, (v) => expectCrc(v, `records[${i}].crc`));
        if (crc !== undefined) record.crc = crc;
        return record;
      });
      const prevLsn = counter(o.prevLsn, 'prevLsn');
      const term = termOf(o.term, 'term');
      let last = termOf(o.prevTerm, 'prevTerm');
      for (let i = 0; i < records.length; i++) {
        if (records[i]!.term < last || records[i]!.term > term) {
          throw new ProtocolError('bad_request', `records[${i}].term: terms must not decrease and not exceed the leader's`, { path: `records[${i}].term` });
        }
        last = records[i]!.term;
      }
      return {
        type: 'append', term, leader: id(o.leader, 'leader'), prevLsn, prevTerm: termOf(o.prevTerm, 'prevTerm'),
        records, commitLsn: counter(o.commitLsn, 'commitLsn'),
        ...(o.leaderLastLsn !== undefined ? { leaderLastLsn: counter(o.leaderLastLsn, 'leaderLastLsn') } : {}),
        ...(o.quiesce !== undefined ? { quiesce: bool(o.quiesce, 'quiesce') } : {}),
      };
    }
    case 'snapshot': {
      const data = bytes(o.data, 'data');
      if (data.length > RAFT_SNAPSHOT_CHUNK_BYTES_MAX) throw new ProtocolError('too_large', 'data: chunk too large', { path: 'data' });
      const total = counter(o.bytes, 'bytes');
      const offset = counter(o.offset, 'offset');
      if (offset + data.length > total) throw new ProtocolError('out_of_range', 'offset: chunk past the end of the image', { path: 'offset' });
      return {
        type: 'snapshot', term: termOf(o.term, 'term'), leader: id(o.leader, 'leader'), lsn: counter(o.lsn, 'lsn'),
        lastTerm: termOf(o.lastTerm, 'lastTerm'), bytes: total, offset, data, done: bool(o.done, 'done'),
        ...(o.config !== undefined ? { config: validateConfig(o.config) } : {}),
      };
    }
    default:
      throw new ProtocolError('bad_request', `type: expected vote, prevote, append, snapshot or timeoutNow`, { path: 'type' });
  }
}

/** Validates a reply to a request of the given type. */
export function validateRaftReply(type: RaftRequest['type'], body: unknown): RaftReply {
  const o = map(body, '');
  switch (type) {
    case 'vote':
    case 'prevote':
      return {
        term: termOf(o.term, 'term'), granted: bool(o.granted, 'granted'), ...(o.lastLsn !== undefined ? { lastLsn: counter(o.lastLsn, 'lastLsn') } : {}),
        // Both sets of a change: at most twice a set's members.
        ...(o.members !== undefined ? { members: expectArray(o.members, 'members', { lengthMin: 1, lengthMax: 2 * CONFIG_MEMBERS_MAX }).map((m, i) => expectId(m, `members[${i}]`)) } : {}),
      };
    case 'append':
      return {
        term: termOf(o.term, 'term'), success: bool(o.success, 'success'),
        ...(o.matchLsn !== undefined ? { matchLsn: counter(o.matchLsn, 'matchLsn') } : {}),
        lastLsn: counter(o.lastLsn, 'lastLsn'),
        ...(o.conflict !== undefined ? { conflict: bool(o.conflict, 'conflict') } : {}),
        ...(o.quiesced !== undefined ? { quiesced: bool(o.quiesced, 'quiesced') } : {}),
      };
    case 'snapshot':
      return { term: termOf(o.term, 'term'), ok: bool(o.ok, 'ok'), nextOffset: counter(o.nextOffset, 'nextOffset') };
    case 'timeoutNow':
      return { term: termOf(o.term, 'term'), ok: bool(o.ok, 'ok') };
  }
}

/** Subject of one replica's replication mailbox. */
export function replicaSubject(cluster: string, volumeId: string, shard: number, nodeId: string): string {
  return `strata.${cluster}.replica.${volumeId}.${shard}.${nodeId}`;
}

/**
 * Subject of the appends a replica sends, as the shard's leader, to all its followers at once:
 * every other replica of the shard subscribes to it.
 */
export function followersSubject(cluster: string, volumeId: string, shard: number, leaderId: string): string {
  return `strata.${cluster}.followers.${volumeId}.${shard}.${leaderId}`;
}
