/**
 * RequestMux: NATS request/reply for many requests in flight on one connection, with less work
 * per request than `NatsConnection.request`.
 *
 * One subscription to `<inbox>.>` receives every reply; a request publishes with the reply
 * subject `<inbox>.<token>` and waits in a map (a request to several responders at once,
 * `requestEach`, takes each one's reply on `<inbox>.<token>.<responder>`). Deadlines are kept
 * by one timer, set to the earliest deadline, instead of a timer per request; a reply costs a
 * map lookup and a promise resolution. (Measured on the benchmark client: the stock request path
 * spent about 15 % of the thread in building an error object for every request it completed, and
 * more in per-request timers.)
 *
 * Failures follow the transport contract of the Strata client (`ClientTransport`): no reply
 * before the deadline → ProtocolError('timeout'); nobody subscribed (the server's 503 status) →
 * NoRespondersError; a message over the server's max_payload → 'too_large'; the connection or
 * the mux closed → 'unavailable' (a request that was sent and waited for its reply then also
 * with `details.disconnected`: it may have reached its receiver, whose answer is lost with the
 * connection); more than `pendingMax` requests waiting → 'overloaded'. With a
 * `connection` to watch: a request made while it is down is refused 'unavailable' at once, or
 * (`whileDisconnected: 'wait'`) sent once it is back, within its timeout; and with
 * `failPendingOnDisconnect` the requests waiting for a reply when it drops fail at once,
 * 'unavailable' with `details.disconnected` (their replies are lost with the connection).
 */
import { Events, createInbox, headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from 'nats';
import { ProtocolError, errorReply, toProtocolError, type ErrorCode } from '../messages/errors';
import { encode, encodedErrorCode, type CodecOptions } from '../messages/codec';
import { throttled } from '../observability/log';

/** Nobody subscribes to the subject of a request (NATS "503 no responders"); code `unavailable`. */
export class NoRespondersError extends ProtocolError {
  constructor(subject: string) {
    super('unavailable', `no responders on ${subject}`, { subject, noResponders: true });
  }
}

/** Options of one request. */
export interface MuxRequestOptions {
  /** Bound on the wait for the reply, in ms (> 0). */
  timeoutMs: number;
  /** Message headers: name → value, or prepared NATS headers. */
  headers?: Readonly<Record<string, string>> | MsgHdrs;
}

export interface RequestMuxOptions {
  /** Most requests waiting for a reply at once; more are refused with `overloaded`. Default 65 536. */
  pendingMax?: number;
  /**
   * Refuse requests at once (`unavailable`) while this says the connection is down. Without
   * it, a request sent while the client reconnects waits in the client library's buffer, which
   * has no bound, and goes out late after the reconnect: right for a caller that waits for the
   * reconnect, wrong for replication, which sends its own heartbeats and appends again.
   */
  connection?: ConnectionState;
  /**
   * With `connection`: what a request made while it is down does. `refuse` (the default): fails
   * at once. `wait`: waits for the reconnect, within its timeout, and is sent then; a request
   * still unsent at its timeout fails 'unavailable' with `details.notSent` (it never left).
   */
  whileDisconnected?: 'refuse' | 'wait';
  /**
   * With `connection`: fail the requests waiting for a reply as soon as the connection drops
   * ('unavailable', `details.disconnected`: a request may have reached its receiver, which
   * answers into the lost connection), instead of at their timeout.
   */
  failPendingOnDisconnect?: boolean;
}

/**
 * A new inbox subject under the connection's inbox prefix (nats.js `inboxPrefix`, `_INBOX` by
 * default): a node's are under its own (messages/subjects.ts `nodeInboxPrefix`).
 */
export function newInbox(nc: NatsConnection): string {
  const prefix = (nc as { options?: { inboxPrefix?: unknown } }).options?.inboxPrefix;
  return createInbox(typeof prefix === 'string' ? prefix : '');
}

/** A publish or subscription the NATS server refused this connection's user. */
export interface PermissionDenied {
  operation: 'publish' | 'subscription';
  subject: string;
}

/** Shortest time between two lines about refusals (`watchDenials`), ms. */
export const DENIAL_REPORT_MS = 60_000;

/**
 * Reports what the server refuses this connection's user: the first refusal at once, then at
 * most one every `intervalMs` with how many more came since the last (a user without the right
 * permissions is refused every message). Returns the removal.
 */
export function watchDenials(
  connection: ConnectionState,
  report: (denied: PermissionDenied, unreported: number) => void,
  intervalMs = DENIAL_REPORT_MS,
): () => void {
  return connection.onDenied(throttled(report, intervalMs));
}

/**
 * Whether a connection is up, from its status events: nats.js's `isClosed()` stays false while
 * it reconnects (for good, with maxReconnectAttempts -1), so it cannot tell.
 */
export class ConnectionState {
  private up = true;
  private ended = false;
  /** Disconnects seen so far. */
  disconnects = 0;
  private readonly listeners = new Set<(up: boolean) => void>();
  private readonly deniedListeners = new Set<(denied: PermissionDenied) => void>();

  constructor(nc: NatsConnection) {
    void this.watch(nc);
    // The status stream nats.js gives does not end when the connection closes: `closed()` tells.
    void nc.closed().then(
      () => this.end(),
      () => this.end(),
    );
  }

  get connected(): boolean {
    return this.up;
  }

  /** True once the connection is closed for good (it will not come back). */
  get closed(): boolean {
    return this.ended;
  }

  /** Calls `listener` at each change (false: dropped or closed, true: back); returns its removal. */
  onChange(listener: (up: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Calls `listener` each time the server refuses this connection's user a publish or a
   * subscription (its permissions, cluster/nats-auth.ts); returns its removal.
   */
  onDenied(listener: (denied: PermissionDenied) => void): () => void {
    this.deniedListeners.add(listener);
    return () => this.deniedListeners.delete(listener);
  }

  private set(up: boolean): void {
    this.up = up;
    for (const l of [...this.listeners]) l(up);
  }

  private async watch(nc: NatsConnection): Promise<void> {
    try {
      for await (const s of nc.status()) {
        if (s.type === Events.Disconnect) {
          this.disconnects++;
          this.set(false);
        } else if (s.type === Events.Reconnect) {
          this.set(true);
        } else if (s.type === Events.Error && s.permissionContext !== undefined) {
          const { operation, subject } = s.permissionContext;
          const denied: PermissionDenied = { operation: operation === 'publish' ? 'publish' : 'subscription', subject };
          for (const l of [...this.deniedListeners]) l(denied);
        }
      }
    } catch {
      // The status stream failed: the connection is gone.
    }
    this.end();
  }

  /** The connection is closed for good: once, down and closed. */
  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.set(false);
  }
}

interface Pending {
  subject: string;
  timeoutMs: number;
  deadline: number;
  resolve: (msg: Msg) => void;
  reject: (err: Error) => void;
}

const PENDING_MAX_DEFAULT = 65_536;
/** Timer slack: a deadline is checked at most this late (ms), so close deadlines share a wake-up. */
const TIMER_SLACK_MS = 5;

export class RequestMux {
  private readonly prefix: string;
  private readonly pending = new Map<string, Pending>();
  /** `requestEach` requests by their bare token while a slot waits (the slots are in `pending`). */
  private readonly groups = new Map<string, { keys: readonly string[]; left: number }>();
  private readonly pendingMax: number;
  private sub: Subscription | undefined;
  private nextToken = 0;
  /** Requests made while disconnected that wait for the reconnect (whileDisconnected 'wait'), by their cancel. */
  private readonly unsent = new Set<(reason: string) => void>();
  private timer: NodeJS.Timeout | undefined;
  /** When the timer fires (performance.now() ms); Infinity when it is not set. */
  private timerAt = Number.POSITIVE_INFINITY;
  private closed = false;
  private readonly connection: ConnectionState | undefined;
  private readonly whileDisconnected: 'refuse' | 'wait';

  constructor(
    private readonly nc: NatsConnection,
    opts: RequestMuxOptions = {},
  ) {
    const pendingMax = opts.pendingMax ?? PENDING_MAX_DEFAULT;
    if (!Number.isSafeInteger(pendingMax) || pendingMax < 1) {
      throw new ProtocolError('bad_request', `pendingMax must be a positive integer, got ${String(pendingMax)}`);
    }
    this.pendingMax = pendingMax;
    this.connection = opts.connection;
    this.whileDisconnected = opts.whileDisconnected ?? 'refuse';
    this.prefix = `${newInbox(nc)}.`;
    // A subject this user may not publish to: its requests fail now, not at their deadline.
    this.connection?.onDenied((denied) => {
      if (denied.operation === 'publish') this.failSubject(denied.subject);
    });
    if (opts.failPendingOnDisconnect === true) {
      this.connection?.onChange((up) => {
        if (!up) this.failAll('the connection to NATS dropped before the reply (a write may or may not have been applied)', false);
      });
    }
  }

  /** Requests waiting for their reply now. */
  get size(): number {
    return this.pending.size;
  }

  /** Sends `data` to `subject` and resolves with the reply (see the module comment for failures). */
  request(subject: string, data: Uint8Array, options: MuxRequestOptions): Promise<Msg> {
    const refused = this.refusal(subject, options.timeoutMs, 1, this.whileDisconnected === 'wait');
    if (refused !== undefined) return Promise.reject(refused);
    if (this.connection !== undefined && !this.connection.connected) return this.afterReconnect(subject, data, options);
    const token = (this.nextToken++).toString(36);
    const failed = this.publish(subject, data, options, token);
    if (failed !== undefined) return Promise.reject(failed);
    const deadline = performance.now() + options.timeoutMs;
    return new Promise<Msg>((resolve, reject) => this.track(token, { subject, timeoutMs: options.timeoutMs, deadline, resolve, reject }));
  }

  /**
   * Sends `data` once to `subject`, a subject several responders subscribe to, and waits for one
   * reply from each of `keys`: responder `k` answers to the request's reply subject followed by
   * `.k`. Returns one promise per key, in the order of `keys`, each failing as a `request` does on
   * its own (no reply from that responder by the deadline: 'timeout'); nobody subscribed at all
   * fails them all. The request counts `keys.length` against `pendingMax`. Made while the
   * connection is down it is refused at once, whatever `whileDisconnected` says (a caller of
   * this sends again on its own: replication).
   */
  requestEach(subject: string, data: Uint8Array, options: MuxRequestOptions, keys: readonly string[]): Promise<Msg>[] {
    const fail = (err: ProtocolError): Promise<Msg>[] => keys.map(() => Promise.reject(err));
    const { timeoutMs } = options;
    if (keys.length === 0 || new Set(keys).size !== keys.length || keys.some((k) => k === '' || /[.*> \t\r\n]/.test(k))) {
      return fail(new ProtocolError('bad_request', `keys must be distinct subject tokens, got ${JSON.stringify(keys)}`));
    }
    const refused = this.refusal(subject, timeoutMs, keys.length, false);
    if (refused !== undefined) return fail(refused);
    const token = (this.nextToken++).toString(36);
    const failed = this.publish(subject, data, options, token);
    if (failed !== undefined) return fail(failed);
    const deadline = performance.now() + timeoutMs;
    // A status reply to the request itself (503: nobody subscribed) comes to the bare token: it
    // fails every responder's slot still waiting. The group goes when its last slot settles.
    const group = { keys, left: keys.length };
    this.groups.set(token, group);
    const settled = (): void => {
      if (--group.left === 0) this.groups.delete(token);
    };
    return keys.map((k) => new Promise<Msg>((resolve, reject) => {
      this.track(`${token}.${k}`, {
        subject, timeoutMs, deadline,
        resolve: (msg) => {
          settled();
          resolve(msg);
        },
        reject: (err) => {
          settled();
          reject(err);
        },
      });
    }));
  }

  /**
   * Why a request for `replies` replies on `subject` is refused at once, if it is. `waitWhileDown`:
   * one made while the connection is down (not closed) is not refused for it (it waits for the
   * reconnect, `afterReconnect`).
   */
  private refusal(subject: string, timeoutMs: number, replies: number, waitWhileDown: boolean): ProtocolError | undefined {
    if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) {
      return new ProtocolError('bad_request', `timeoutMs must be a positive number, got ${String(timeoutMs)}`);
    }
    if (this.closed || this.nc.isClosed()) return closedError(subject);
    const down = this.connection !== undefined && !this.connection.connected;
    if (down && (!waitWhileDown || this.connection!.closed)) {
      return new ProtocolError('unavailable', `request on ${subject} failed: disconnected from NATS (reconnecting)`, { subject });
    }
    // Requests waiting for the reconnect count against the bound too: they hold their data.
    if (this.pending.size + this.unsent.size + replies > this.pendingMax) {
      return new ProtocolError('overloaded', `${this.pending.size + this.unsent.size} requests already wait on this connection`, {
        subject,
        pendingMax: this.pendingMax,
      });
    }
    return undefined;
  }

  /** Publishes a request with the reply subject of `token`; the error when it could not be sent. */
  private publish(subject: string, data: Uint8Array, options: MuxRequestOptions, token: string): ProtocolError | undefined {
    if (this.subscription() === undefined) return closedError(subject);
    let h: MsgHdrs | undefined;
    try {
      h = toHeaders(options.headers);
    } catch (err) {
      // A header NATS refuses (a name with a space, a value with a CR or LF): the caller's request is wrong.
      return new ProtocolError('bad_request', `request headers: ${err instanceof Error ? err.message : String(err)}`, { subject });
    }
    try {
      this.nc.publish(subject, data, { reply: this.prefix + token, ...(h === undefined ? {} : { headers: h }) });
      return undefined;
    } catch (err) {
      // Refused at once: too large for the server, or the connection is gone.
      return fromNatsError(err, subject, options.timeoutMs);
    }
  }

  /** Waits for the reply to `key` (a token, or a token and a responder), within its deadline. */
  private track(key: string, p: Pending): void {
    this.pending.set(key, p);
    if (p.deadline + TIMER_SLACK_MS < this.timerAt) this.arm(p.deadline + TIMER_SLACK_MS);
  }

  /** A request made while disconnected: sent once the connection is back, within its timeout. */
  private afterReconnect(subject: string, data: Uint8Array, options: MuxRequestOptions): Promise<Msg> {
    const start = performance.now();
    const notSent = (why: string): ProtocolError => new ProtocolError('unavailable', `request on ${subject} not sent: ${why}`, { subject, notSent: true });
    const wholeTimeout = `disconnected from NATS for its whole ${options.timeoutMs} ms`;
    return new Promise<void>((resolve, reject) => {
      // Counted against pendingMax while it waits (`unsent`); failed at once by close().
      const settle = (err?: ProtocolError): void => {
        clearTimeout(timer);
        off();
        this.unsent.delete(cancel);
        if (err === undefined) resolve();
        else reject(err);
      };
      const cancel = (reason: string): void => settle(notSent(reason));
      this.unsent.add(cancel);
      const timer = setTimeout(() => settle(notSent(wholeTimeout)), options.timeoutMs);
      timer.unref();
      const off = this.connection!.onChange((up) => {
        if (up) settle();
        else if (this.connection!.closed) settle(notSent('the connection is closed'));
      });
    }).then(() => {
      const left = options.timeoutMs - (performance.now() - start);
      if (left <= 0) throw notSent(wholeTimeout);
      return this.request(subject, data, { ...options, timeoutMs: left });
    });
  }

  /**
   * Fails every waiting request with `unavailable` and stops receiving replies: those waiting
   * for a reply with `details.disconnected` (they were sent: they may have reached their
   * receivers), those waiting for the reconnect with `details.notSent`.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const cancel of [...this.unsent]) cancel('the request multiplexer is closed');
    this.sub?.unsubscribe();
    this.failAll('the request multiplexer was closed before the reply', true);
  }

  private subscription(): Subscription | undefined {
    if (this.sub !== undefined) return this.sub;
    try {
      this.sub = this.nc.subscribe(`${this.prefix}>`, { callback: (err, msg) => this.onReply(err, msg) });
    } catch {
      return undefined;
    }
    // The connection closed (or the subscription was dropped): nothing will answer any more.
    void this.sub.closed.then(
      () => this.failAll('the connection was closed before the reply', true),
      () => this.failAll('the connection was closed before the reply', true),
    );
    return this.sub;
  }

  private onReply(err: Error | null, msg: Msg): void {
    if (err !== null) return; // A subscription error also ends `closed`, which fails the waiters.
    const token = msg.subject.slice(this.prefix.length);
    const p = this.pending.get(token);
    if (p === undefined) {
      // A status for a `requestEach` as a whole fails its slots still waiting; anything else is
      // late (its deadline passed already) or not asked for.
      const g = this.groups.get(token);
      const code = g !== undefined && msg.data.length === 0 ? statusCode(msg) : 0;
      if (g === undefined || code < 400) return;
      for (const k of g.keys) {
        const slot = this.pending.get(`${token}.${k}`);
        if (slot === undefined) continue;
        this.pending.delete(`${token}.${k}`);
        slot.reject(statusError(code, slot.subject));
      }
      return;
    }
    this.pending.delete(token);
    const code = msg.data.length === 0 ? statusCode(msg) : 0;
    if (code >= 400) p.reject(statusError(code, p.subject));
    else p.resolve(msg);
  }

  private arm(at: number): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.expire(), Math.max(0, at - performance.now()));
    // Waiting requests keep their callers' promises alive, not the process.
    this.timer.unref();
  }

  /** Fails the requests whose deadline passed and arms the timer for the next deadline. */
  private expire(): void {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const now = performance.now();
    let next = Number.POSITIVE_INFINITY;
    for (const [token, p] of this.pending) {
      if (p.deadline <= now) {
        this.pending.delete(token);
        p.reject(timeoutError(p.subject, p.timeoutMs));
      } else if (p.deadline < next) next = p.deadline;
    }
    if (next !== Number.POSITIVE_INFINITY) this.arm(next + TIMER_SLACK_MS);
  }

  /** Fails the requests waiting on `subject`: the server refuses this user publishing there. */
  private failSubject(subject: string): void {
    for (const [key, p] of [...this.pending]) {
      if (p.subject !== subject) continue;
      this.pending.delete(key);
      p.reject(deniedError(subject));
    }
  }

  /**
   * Fails every waiting request with `unavailable` and `details.disconnected`: each was sent, so
   * it may have reached its receiver (a write may have been applied), and its reply is lost.
   * When the connection or the mux closed (`closed`), the reply subscription went with it; after
   * a drop it stays: the client library subscribes it again on the reconnect.
   */
  private failAll(reason: string, closed: boolean): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const waiting = [...this.pending.values()];
    this.pending.clear();
    this.groups.clear();
    if (closed) this.sub = undefined;
    for (const p of waiting) p.reject(new ProtocolError('unavailable', `request on ${p.subject} failed: ${reason}`, { subject: p.subject, disconnected: true }));
  }
}

/**
 * NATS headers fixed at creation and encoded once. nats.js builds and encodes a message's
 * headers again at every publish; headers sent over and over (every reply of a host, every
 * request of one type and deadline) are prepared once instead. Changing them throws.
 */
export function frozenHeaders(entries: Readonly<Record<string, string>>): MsgHdrs {
  const h = natsHeaders();
  for (const name in entries) h.set(name, entries[name]!);
  // MsgHdrs does not declare it, but the headers nats.js creates have it, and publish calls it.
  const bytes = (h as MsgHdrs & { encode(): Uint8Array }).encode();
  const refuse = (): never => {
    throw new ProtocolError('internal', 'frozen NATS headers cannot be changed');
  };
  return Object.assign(h, { encode: () => bytes, set: refuse, append: refuse, delete: refuse });
}

/**
 * Headers given as a record, by their content: a request's headers mostly repeat (bounded). A
 * frozen record given again (a client's requests of one type and deadline) is found by
 * identity, without reading its content.
 */
const headerCache = new Map<string, MsgHdrs>();
const HEADER_CACHE_ENTRIES_MAX = 64;
let lastFrozen: { record: object; headers: MsgHdrs } | undefined;

function toHeaders(h: MuxRequestOptions['headers']): MsgHdrs | undefined {
  if (h === undefined) return undefined;
  if (typeof (h as MsgHdrs).get === 'function' && typeof (h as MsgHdrs).set === 'function') return h as MsgHdrs;
  const record = h as Readonly<Record<string, string>>;
  if (lastFrozen?.record === record) return lastFrozen.headers;
  const out = headersByContent(record);
  if (Object.isFrozen(record)) lastFrozen = { record, headers: out };
  return out;
}

function headersByContent(record: Readonly<Record<string, string>>): MsgHdrs {
  let key = '';
  for (const name in record) key += `${name}\n${record[name]!}\n`;
  let out = headerCache.get(key);
  if (out === undefined) {
    out = frozenHeaders(record);
    if (headerCache.size >= HEADER_CACHE_ENTRIES_MAX) headerCache.clear();
    headerCache.set(key, out);
  }
  return out;
}

/** The NATS status of a reply without payload (503: no responders); 0 when its headers are malformed. */
export function statusCode(msg: Msg): number {
  try {
    return msg.headers?.code ?? 0;
  } catch {
    // nats.js's decoder refused the header block; left uncaught, it would end the reader.
    return 0;
  }
}

/**
 * The server's max_payload once connected (undefined before): the most one message may hold.
 * Replies are encoded within it, since a message nats.js refuses to publish never arrives.
 */
export function serverMaxPayload(nc: NatsConnection | undefined): number | undefined {
  const maxPayload = nc?.info?.max_payload;
  return typeof maxPayload === 'number' && maxPayload > 0 ? maxPayload : undefined;
}

/**
 * Room a reply keeps within max_payload for its headers (REPLY_HEADERS: about 30 bytes): the
 * server counts them in the limit, and a reply that fits only without them is refused by the
 * NATS client as it is sent, never reaching its requester.
 */
export const REPLY_HEADER_ROOM_BYTES = 128;

/** The most bytes a reply's payload may take through `nc`'s server (REPLY_HEADER_ROOM_BYTES less than its max_payload); undefined if it does not say. */
function replyBytesMax(nc: NatsConnection | undefined): number | undefined {
  const max = serverMaxPayload(nc);
  return max === undefined ? undefined : max - REPLY_HEADER_ROOM_BYTES;
}

/**
 * A reply encoded already (one forwarded as it came): as it is, with its code, if it fits a
 * reply through `nc`'s server (`replyBytesMax`), else a too_large error reply.
 */
export function replyBytesWithin(nc: NatsConnection | undefined, bytes: Uint8Array): { bytes: Uint8Array; code: 'ok' | ErrorCode } {
  const bytesMax = replyBytesMax(nc);
  if (bytesMax === undefined || bytes.byteLength <= bytesMax) return { bytes, code: encodedErrorCode(bytes) ?? 'ok' };
  const pe = new ProtocolError('too_large', `the reply of ${bytes.byteLength} bytes does not fit a message of this server (max_payload ${bytesMax + REPLY_HEADER_ROOM_BYTES} bytes, its headers included)`);
  return { bytes: encode(errorReply(pe)), code: 'too_large' };
}

/**
 * Encodes a reply within the server's max_payload. One over it becomes a too_large error reply
 * (the requester asked for more than one message holds, as through a server with a small
 * max_payload); any other failure is a bug of the replier, handed to `onBug` (to log it) and
 * answered internal. Never throws. `code` is the outcome answered.
 */
export function encodeReplyWithin(
  nc: NatsConnection | undefined,
  reply: unknown,
  onBug: (err: unknown) => void,
  encodeReply: (reply: unknown, options: CodecOptions) => Uint8Array = encode,
): { bytes: Uint8Array; code: 'ok' | ErrorCode } {
  const bytesMax = replyBytesMax(nc);
  try {
    return { bytes: encodeReply(reply, bytesMax !== undefined ? { bytesMax } : {}), code: 'ok' };
  } catch (e) {
    const pe = toProtocolError(e);
    if (pe.code === 'too_large') return { bytes: encode(errorReply(pe)), code: 'too_large' };
    onBug(e);
    return { bytes: encode(errorReply(new ProtocolError('internal', 'reply encoding failed'))), code: 'internal' };
  }
}

/** The string `code` a nats package error carries, if any. */
export function natsErrorCode(err: unknown): string | undefined {
  const code: unknown = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Maps an error of the nats package to the transport contract (a ProtocolError passes through). */
export function fromNatsError(err: unknown, subject: string, timeoutMs: number): ProtocolError {
  if (err instanceof ProtocolError) return err;
  const code = natsErrorCode(err);
  const reason = err instanceof Error ? err.message : String(err);
  switch (code) {
    case '503':
      return new NoRespondersError(subject);
    case 'TIMEOUT':
      return timeoutError(subject, timeoutMs);
    case 'MAX_PAYLOAD_EXCEEDED':
      return new ProtocolError('too_large', `message to ${subject} exceeds the server's max_payload: ${reason}`, { subject });
    default:
      return new ProtocolError('unavailable', `request on ${subject} failed: ${reason}`, {
        subject,
        ...(code === undefined ? {} : { natsCode: code }),
      });
  }
}

/** The error of a NATS status reply (no payload, a code of 400 or more). */
function statusError(code: number, subject: string): ProtocolError {
  return code === 503 ? new NoRespondersError(subject) : new ProtocolError('unavailable', `request on ${subject} failed: NATS status ${code}`, { subject, natsCode: String(code) });
}

/** The NATS server does not let this connection's user publish to `subject`. */
export function deniedError(subject: string): ProtocolError {
  return new ProtocolError('forbidden', `the NATS server does not let this connection's user publish to ${subject} (its permissions)`, {
    subject,
    natsCode: 'PERMISSIONS_VIOLATION',
  });
}

function closedError(subject: string): ProtocolError {
  return new ProtocolError('unavailable', `request on ${subject} failed: the connection is closed`, { subject });
}

function timeoutError(subject: string, timeoutMs: number): ProtocolError {
  return new ProtocolError('timeout', `no reply on ${subject} within ${timeoutMs} ms`, { subject, timeoutMs });
}
