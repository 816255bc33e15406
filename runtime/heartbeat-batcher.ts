/**
 * Heartbeats coalesced per pair of nodes.
 *
 * A shard's leader sends each follower an append without records every heartbeat period (and
 * the same message probes a follower whose place in the log is unknown, and confirms a
 * leadership before a read). Sent one by one, an idle cluster of S shards costs 4·S·(R−1)
 * NATS messages per heartbeat period (a request and a reply each way), whatever the shards do.
 * Here a host's appends without records to one node, made in one turn of its event loop, go as
 * one message, `strata.<cluster>.heartbeats.<node>`, which every host of that node receives;
 * each host answers the entries of the shards it holds, in one message (or a few, within the
 * server's max_payload), and every host answers, so that an entry of a shard the node does not
 * hold fails at once, as a message on a subject nobody takes does. What each replica sends and
 * receives is unchanged: the same append, handled by the same code, its answer routed back to
 * the replica's own promise.
 *
 * Bounded: entries per message (HEARTBEAT_BATCH_ENTRIES_MAX), bytes per message (a quarter of
 * the server's max_payload, so that the answers, error replies included, fit), batches waiting
 * for their answers (HEARTBEAT_BATCHES_PENDING_MAX; beyond it `send` declines and the caller
 * sends on its own), and each entry's wait (its own timeout, as a request's). A node whose
 * hosts do not take these messages (nobody subscribed: a node of an older version, or one that
 * is down) is declined for HEARTBEAT_DECLINE_MS, so that a cluster upgraded one node at a time
 * keeps its heartbeats.
 *
 * A message without entries and without a reply subject is a ping (`ping`): a host sends one to
 * each node its replicas' peers are on every heartbeat period, so that a follower of a quiesced
 * leader, which hears from that leader once a quiesced period only, knows the leader's host is up
 * (every heartbeats message names its host; docs/replication.md, "Idle shards"). Nobody answers
 * it; a node of an older version drops it.
 */
import type { Msg, NatsConnection, Subscription } from 'nats';
import { decode, encode, MESSAGE_BYTES_MAX, type CodecOptions } from '../messages/codec';
import { ProtocolError } from '../messages/errors';
import { natsErrorCode, newInbox, statusCode } from './request-mux';

/** Entries of one heartbeats message at most. */
export const HEARTBEAT_BATCH_ENTRIES_MAX = 1024;
/** Messages of heartbeats a host waits for answers to at most; beyond, `send` declines. */
export const HEARTBEAT_BATCHES_PENDING_MAX = 256;
/**
 * After a node's hosts were found not to take heartbeats messages (nobody subscribed: a node
 * of a version before them, or down), `send` declines for it this long: its replicas' own
 * subjects carry the heartbeats meanwhile, as before.
 */
export const HEARTBEAT_DECLINE_MS = 10_000;
/** Nodes remembered as declining at most. */
const DECLINED_NODES_MAX = 1024;

/** Subject of the heartbeats (appends without records) sent to the replicas of node `nodeId`. */
export function heartbeatsSubject(cluster: string, nodeId: string): string {
  return `strata.${cluster}.heartbeats.${nodeId}`;
}

/** One entry: the shard, and its replication message as encoded for the replica's own subject. */
export type HeartbeatEntry = [volumeId: string, shard: number, message: Uint8Array];

/**
 * A heartbeats message: from node `from`, entries of distinct shards. `host`: the sending host
 * of that node, whose replicas' followers go by when it was last heard from (absent from a node
 * of an older version: they go by the node's).
 */
export interface HeartbeatBatch {
  from: string;
  host?: number;
  e: HeartbeatEntry[];
}

/**
 * A host's answer: entries `[volumeId, shard, reply]`, each reply encoded on its own (a RaftReply
 * or an error reply), from host `host` of the node's `hosts`; `more` on every answer of a host
 * but its last. Every host answers every message, so that once all have, an entry none answered
 * (its shard is not open on that node) fails at once, as a message to nobody does.
 */
export interface HeartbeatBatchReply {
  host: number;
  hosts: number;
  r: HeartbeatEntry[];
  more?: true;
}

/** Hosts of one node at most, as a heartbeats answer names them. */
const HOSTS_MAX = 1024;

/** A heartbeats message as received, checked for form (each entry's message is checked by its handler). */
export function validateHeartbeatBatch(body: unknown): HeartbeatBatch {
  const o = body as { from?: unknown; host?: unknown; e?: unknown };
  if (typeof o !== 'object' || o === null || typeof o.from !== 'string' || o.from === '' || !Array.isArray(o.e)) {
    throw new ProtocolError('bad_request', 'a heartbeats message is { from, host?, e: [[volumeId, shard, message]...] }');
  }
  if (o.host !== undefined && !(Number.isSafeInteger(o.host) && (o.host as number) >= 0 && (o.host as number) < HOSTS_MAX)) {
    throw new ProtocolError('bad_request', `a heartbeats message's host is an integer in [0, ${HOSTS_MAX}), got ${String(o.host)}`);
  }
  if (o.e.length > HEARTBEAT_BATCH_ENTRIES_MAX) throw new ProtocolError('bad_request', `a heartbeats message holds at most ${HEARTBEAT_BATCH_ENTRIES_MAX} entries, got ${o.e.length}`);
  for (const x of o.e as unknown[]) checkEntry(x);
  return { from: o.from, ...(o.host === undefined ? {} : { host: o.host as number }), e: o.e as HeartbeatEntry[] };
}

function checkEntry(x: unknown): void {
  if (!Array.isArray(x) || x.length !== 3 || typeof x[0] !== 'string' || !Number.isSafeInteger(x[1]) || (x[1] as number) < 0 || !(x[2] instanceof Uint8Array)) {
    throw new ProtocolError('bad_request', 'a heartbeats entry is [volumeId, shard, message bytes]');
  }
}

/** Splits encoded entries into groups of at most `bytesMax` bytes each (an entry larger alone is a group of its own). */
export function chunkEntries(entries: readonly HeartbeatEntry[], bytesMax: number): HeartbeatEntry[][] {
  const out: HeartbeatEntry[][] = [];
  let cur: HeartbeatEntry[] = [];
  let bytes = 0;
  for (const e of entries) {
    const size = entryBytes(e);
    if (cur.length > 0 && (bytes + size > bytesMax || cur.length >= HEARTBEAT_BATCH_ENTRIES_MAX)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(e);
    bytes += size;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/** An entry's encoded size, bounded above (CBOR heads and the shard number). */
function entryBytes(e: HeartbeatEntry): number {
  return e[0].length + e[2].length + 16;
}

/** What a host's HeartbeatSender did since it started (cumulative). */
export interface HeartbeatStats {
  /** Heartbeats messages sent. */
  messages: number;
  /** Entries they carried (each an append without records of one shard to one node). */
  entries: number;
  /** Appends without records it declined, sent on the replicas' own subjects instead. */
  declined: number;
  /** Pings sent (messages without entries, unanswered). */
  pings: number;
}

interface Slot {
  resolve(body: unknown): void;
  reject(err: Error): void;
  /** The entry's own timeout; its message waits for the longest of its entries'. */
  timeoutMs: number;
  /** Set once its message is sent, for an entry whose timeout is shorter than its message's. */
  timer?: NodeJS.Timeout;
}

interface OpenBatch {
  entries: HeartbeatEntry[];
  slots: Map<string, Slot>;
  bytes: number;
  timeoutMs: number;
}

interface WaitingBatch {
  slots: Map<string, Slot>;
  timer: NodeJS.Timeout;
  to: string;
  /** Hosts of the node that have answered in full. */
  done: Set<number>;
  /** How long it waits for its answers: the longest of its entries' timeouts. */
  timeoutMs: number;
}

const keyOf = (volumeId: string, shard: number): string => `${volumeId}\u0000${shard}`;

/**
 * The sending side, one per host: `send` adds a message to the batch for its node, sent at the
 * end of this turn of the event loop, and resolves with the replica's decoded reply.
 */
export class HeartbeatSender {
  private readonly prefix: string;
  private readonly sub: Subscription;
  private readonly open = new Map<string, OpenBatch>();
  private readonly waiting = new Map<string, WaitingBatch>();
  /** Nodes whose hosts did not take a heartbeats message, until when `send` declines for them. */
  private readonly declined = new Map<string, number>();
  private nextToken = 0;
  private scheduled = false;
  private closed = false;
  private readonly counts: HeartbeatStats = { messages: 0, entries: 0, declined: 0, pings: 0 };

  constructor(
    private readonly nc: NatsConnection,
    private readonly opts: { cluster: string; nodeId: string; hostId: number; codec: CodecOptions },
  ) {
    this.prefix = `${newInbox(nc)}.`;
    this.sub = nc.subscribe(`${this.prefix}*`, { callback: (err, msg) => err === null && this.onReply(msg) });
  }

  /** Batches sent and not yet fully answered (tests, stats). */
  get pending(): number {
    return this.waiting.size;
  }

  stats(): HeartbeatStats {
    return { ...this.counts };
  }

  /**
   * Sends `message` (an encoded append without records of shard `volumeId`/`shard`) to node `to`
   * with the other heartbeats of this turn; resolves with the decoded reply, or fails with
   * `timeout` after `timeoutMs` (`unavailable` when no host of that node holds the shard, or
   * nobody takes the message). Undefined when it cannot take it now (closed, too many batches
   * waiting): the caller sends the message on its own.
   */
  send(to: string, volumeId: string, shard: number, message: Uint8Array, timeoutMs: number): Promise<unknown> | undefined {
    const p = this.add(to, volumeId, shard, message, timeoutMs);
    if (p === undefined) this.counts.declined++;
    return p;
  }

  private add(to: string, volumeId: string, shard: number, message: Uint8Array, timeoutMs: number): Promise<unknown> | undefined {
    if (this.closed || this.nc.isClosed() || this.waiting.size >= HEARTBEAT_BATCHES_PENDING_MAX) return undefined;
    const until = this.declined.get(to);
    if (until !== undefined) {
      if (performance.now() < until) return undefined;
      this.declined.delete(to);
    }
    const key = keyOf(volumeId, shard);
    const entry: HeartbeatEntry = [volumeId, shard, message];
    const size = entryBytes(entry);
    let b = this.open.get(to);
    // One entry per shard per message (answers are matched by shard), within the bounds.
    if (b !== undefined && (b.slots.has(key) || b.entries.length >= HEARTBEAT_BATCH_ENTRIES_MAX || b.bytes + size > this.bytesMax())) {
      this.flush(to, b);
      b = undefined;
      if (this.waiting.size >= HEARTBEAT_BATCHES_PENDING_MAX) return undefined;
    }
    if (b === undefined) {
      b = { entries: [], slots: new Map(), bytes: 64, timeoutMs };
      this.open.set(to, b);
    }
    const batch = b;
    batch.entries.push(entry);
    batch.bytes += size;
    batch.timeoutMs = Math.max(batch.timeoutMs, timeoutMs);
    const p = new Promise<unknown>((resolve, reject) => batch.slots.set(key, { resolve, reject, timeoutMs }));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushAll);
    }
    return p;
  }

  /** Sends node `to` a ping: this host is up. Nothing when closed, or when the connection refuses it (the next period sends another). */
  ping(to: string): void {
    if (this.closed || this.nc.isClosed()) return;
    try {
      this.nc.publish(heartbeatsSubject(this.opts.cluster, to), encode({ from: this.opts.nodeId, host: this.opts.hostId, e: [] } satisfies HeartbeatBatch, this.opts.codec));
      this.counts.pings++;
    } catch {
      // The connection is closing or down: the node's peers stop hearing from it, as they should.
    }
  }

  /** Fails every heartbeat waiting (the host is stopping); later sends decline. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const err = new ProtocolError('unavailable', 'host is stopping');
    for (const b of this.open.values()) for (const s of b.slots.values()) s.reject(err);
    this.open.clear();
    for (const [token, w] of [...this.waiting]) {
      this.drop(token, w);
      for (const s of w.slots.values()) s.reject(err);
    }
    this.sub.unsubscribe();
  }

  /**
   * Messages are encoded and decoded within `codec` from now on (the server was restarted with
   * another max_payload): the next messages are sized to it.
   */
  setCodec(codec: CodecOptions): void {
    this.opts.codec = codec;
  }

  private bytesMax(): number {
    return Math.max(1024, Math.floor((this.opts.codec.bytesMax ?? MESSAGE_BYTES_MAX) / 4));
  }

  private readonly flushAll = (): void => {
    this.scheduled = false;
    for (const [to, b] of [...this.open]) this.flush(to, b);
  };

  private flush(to: string, b: OpenBatch): void {
    this.open.delete(to);
    if (b.entries.length === 0) return;
    const token = (this.nextToken++).toString(36);
    let data: Uint8Array;
    try {
      data = encode({ from: this.opts.nodeId, host: this.opts.hostId, e: b.entries } satisfies HeartbeatBatch, this.opts.codec);
      this.nc.publish(heartbeatsSubject(this.opts.cluster, to), data, { reply: `${this.prefix}${token}` });
    } catch (e) {
      // More than the server takes (its max_payload, smaller than this sender was told) is too_large.
      const err = e instanceof ProtocolError
        ? e
        : natsErrorCode(e) === 'MAX_PAYLOAD_EXCEEDED'
        ? new ProtocolError('too_large', `heartbeats to ${to} not sent: more than the server's max_payload (${(e as Error).message})`)
        : new ProtocolError('unavailable', `heartbeats to ${to} not sent: ${(e as Error).message}`);
      for (const s of b.slots.values()) s.reject(err);
      return;
    }
    this.counts.messages++;
    this.counts.entries += b.entries.length;
    const timer = setTimeout(() => this.expire(token), b.timeoutMs);
    const w: WaitingBatch = { slots: b.slots, timer, to, done: new Set(), timeoutMs: b.timeoutMs };
    this.waiting.set(token, w);
    // An entry whose own timeout is shorter than its message's (a later entry raised it) fails at its own.
    for (const [key, slot] of b.slots) {
      if (slot.timeoutMs >= b.timeoutMs) continue;
      slot.timer = setTimeout(() => {
        if (!w.slots.delete(key)) return;
        slot.reject(new ProtocolError('timeout', `replica on ${to} did not answer its heartbeat within ${slot.timeoutMs} ms`, { timeoutMs: slot.timeoutMs }));
        if (w.slots.size === 0) this.drop(token, w);
      }, slot.timeoutMs);
    }
  }

  /** Forgets a sent message: its timer and those of its entries left. */
  private drop(token: string, w: WaitingBatch): void {
    clearTimeout(w.timer);
    for (const slot of w.slots.values()) clearTimeout(slot.timer);
    this.waiting.delete(token);
  }

  private expire(token: string): void {
    const w = this.waiting.get(token);
    if (w === undefined) return;
    this.drop(token, w);
    for (const s of w.slots.values()) s.reject(new ProtocolError('timeout', `replica on ${w.to} did not answer its heartbeat within ${w.timeoutMs} ms`, { timeoutMs: w.timeoutMs }));
  }

  private onReply(msg: Msg): void {
    const token = msg.subject.slice(this.prefix.length);
    const w = this.waiting.get(token);
    if (w === undefined) return; // Late: its entries timed out already.
    if (msg.data.length === 0) {
      // A status: nobody on that node subscribes (503), or another refusal; every entry fails.
      // (A header block nats.js cannot decode reads as 0, rather than end the reader.)
      const code = statusCode(msg);
      if (code >= 400) {
        this.drop(token, w);
        if (code === 503) {
          if (this.declined.size >= DECLINED_NODES_MAX) this.declined.clear();
          this.declined.set(w.to, performance.now() + HEARTBEAT_DECLINE_MS);
        }
        for (const s of w.slots.values()) s.reject(new ProtocolError(code === 503 ? 'unavailable' : 'timeout', `heartbeats to ${w.to}: status ${code}`));
      }
      return;
    }
    let reply: HeartbeatBatchReply;
    try {
      const body = decode(msg.data, this.opts.codec) as Partial<Record<keyof HeartbeatBatchReply, unknown>>;
      if (typeof body !== 'object' || body === null || !Array.isArray(body.r)) throw new Error('not { r: [...] }');
      const { host, hosts } = body;
      if (!Number.isSafeInteger(hosts) || (hosts as number) < 1 || (hosts as number) > HOSTS_MAX || !Number.isSafeInteger(host) || (host as number) < 0 || (host as number) >= (hosts as number)) throw new Error('no host of hosts');
      for (const x of body.r as unknown[]) checkEntry(x);
      reply = body as HeartbeatBatchReply;
    } catch {
      return; // Not an answer to what this host sent: its entries time out.
    }
    for (const [volumeId, shard, bytes] of reply.r) {
      const key = keyOf(volumeId, shard);
      const s = w.slots.get(key);
      if (s === undefined) continue;
      w.slots.delete(key);
      clearTimeout(s.timer);
      try {
        s.resolve(decode(bytes, this.opts.codec));
      } catch (e) {
        s.reject(new ProtocolError('bad_request', `heartbeat reply of ${volumeId}/${shard} from ${w.to} does not decode: ${(e as Error).message}`));
      }
    }
    if (reply.more !== true) w.done.add(reply.host);
    // Every host of the node answered: the entries none answered have no replica there.
    if (w.slots.size > 0 && w.done.size >= reply.hosts) {
      this.drop(token, w);
      for (const [key, s] of w.slots) s.reject(new ProtocolError('unavailable', `no replica of ${key.replace('\u0000', '/')} on ${w.to} took its heartbeat`));
      w.slots.clear();
    }
    if (w.slots.size === 0) this.drop(token, w);
  }
}
