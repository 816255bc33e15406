/**
 * An NBD server exporting Strata volumes over TCP, so that block clients (qemu, nbdcopy, fio's
 * nbd engine, the kernel's nbd-client) can use a volume as a disk. docs/nbd.md says what is
 * supported; in short:
 *
 * - fixed newstyle negotiation only (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES): options
 *   EXPORT_NAME, INFO, GO, LIST, ABORT, STRUCTURED_REPLY, LIST_META_CONTEXT and
 *   SET_META_CONTEXT (one context, `base:allocation`); every other option is answered
 *   NBD_REP_ERR_UNSUP;
 * - with structured replies, READ is answered with one NBD_REPLY_TYPE_OFFSET_DATA chunk, and
 *   every error with an NBD_REPLY_TYPE_ERROR chunk that says why; a success without data keeps
 *   its simple reply (the protocol allows it for every command but READ);
 * - commands READ, WRITE (FUA accepted), FLUSH, TRIM (the whole pages of the range made zeros),
 *   WRITE_ZEROES (FAST_ZERO advertised and met: whole pages are made zeros without page data; ENOTSUP with NO_HOLE),
 *   BLOCK_STATUS (with `base:allocation` selected: which pages may hold data and which read as
 *   zeros, page-granular, REQ_ONE honoured) and DISC; anything else is EINVAL;
 * - byte-granular offsets: a write that covers part of a page reads the page, patches it and
 *   writes it whole (read-modify-write); every write holds the pages it touches until it is
 *   answered, so that two writes to one page, on any connection, do not lose each other's bytes.
 *
 * Every Strata write is answered only once it is durable on a majority of the shard's replicas,
 * so a write is answered when it is durable: FUA and FLUSH cost nothing beyond waiting for the
 * writes received before the FLUSH.
 *
 * Bounds: connections (`connectionsMax`), requests in flight per connection and their bytes
 * (`requestsInFlightMax`, `inFlightBytesMax`: the socket is not read while at either; a WRITE's
 * bytes are counted before its payload is read), option
 * data (OPTION_BYTES_MAX), meta context queries (META_CONTEXT_QUERIES_MAX), extents per block
 * status reply (BLOCK_STATUS_EXTENTS_MAX), error messages (ERROR_MESSAGE_BYTES_MAX), request
 * length (BLOCK_BYTES_MAX for READ and WRITE), the handshake's time (`handshakeTimeoutMs`), the
 * time a reply may wait for the client to read it (`replyTimeoutMs`: a client that stops reading
 * is closed, its slot and payloads let go), the time `stop` waits for requests in flight
 * (`stopTimeoutMs`). A peer gone without a word (a host powered off) is found by TCP keepalive. Each Strata call covers at most
 * CALL_PAGES_MAX pages (a block status call: the shards bound their answers) and is bounded by
 * the client's deadline.
 */
import * as net from 'node:net';
import { CALL_PAGES_MAX, type StrataClient, type Volume } from './client';
import { ProtocolError } from '../messages/errors';
import type { VolumeInfo } from '../messages/api';
import { createLogger, type Logger } from '../observability/log';
import { inTries, withTimeout } from '../runtime/timeout';

// ---------------------------------------------------------------------------------------------
// Protocol constants (the NBD protocol's own names)
// ---------------------------------------------------------------------------------------------

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
const NBD_FLAG_NO_ZEROES = 1 << 1;
const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
const NBD_FLAG_C_NO_ZEROES = 1 << 1;

export const NBD_OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

export const NBD_REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_TOO_BIG: 0x80000009,
} as const;

export const NBD_INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const NBD_FLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  CAN_MULTI_CONN: 1 << 8,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const NBD_CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;

const NBD_CMD_NAMES: Readonly<Record<number, string>> = { 0: 'read', 1: 'write', 2: 'disc', 3: 'flush', 4: 'trim', 5: 'cache', 6: 'write_zeroes', 7: 'block_status' };

/** Command flags. */
export const NBD_CMD_FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

/** Structured reply chunk flags and types. */
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: (1 << 15) + 1, ERROR_OFFSET: (1 << 15) + 2 } as const;

/** Extent flags of the `base:allocation` context. */
export const NBD_STATE = { HOLE: 1 << 0, ZERO: 1 << 1 } as const;

/** The one metadata context served, and the id it is given when selected. */
export const BASE_ALLOCATION = 'base:allocation';
export const BASE_ALLOCATION_ID = 1;

export const NBD_ERR = { EPERM: 1, EIO: 5, EINVAL: 22, ENOSPC: 28, ENOTSUP: 95 } as const;

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

/** Default TCP port of NBD. */
export const NBD_PORT_DEFAULT = 10809;
/** Most bytes of one READ or WRITE (NBD_INFO_BLOCK_SIZE maximum). TRIM and WRITE_ZEROES may be longer. */
export const BLOCK_BYTES_MAX = 32 * 1024 * 1024;
/** Most bytes of an option's data; a longer option is answered NBD_REP_ERR_TOO_BIG (its data skipped). */
export const OPTION_BYTES_MAX = 4096;
/** Most queries in one NBD_OPT_LIST_META_CONTEXT or NBD_OPT_SET_META_CONTEXT; more are NBD_REP_ERR_TOO_BIG. Each query, like the export name, is bounded by OPTION_BYTES_MAX. */
export const META_CONTEXT_QUERIES_MAX = 32;
/** Most extents in one NBD_CMD_BLOCK_STATUS reply: a longer answer ends early (the client asks again from where it ends). */
export const BLOCK_STATUS_EXTENTS_MAX = 4096;
/** Most bytes of the message of a structured error chunk (the protocol's strings are at most 4096). */
const ERROR_MESSAGE_BYTES_MAX = 1024;
/** Default bound on connections served at once. */
export const CONNECTIONS_MAX_DEFAULT = 16;
/** Default bound on requests in flight per connection. */
export const REQUESTS_IN_FLIGHT_MAX_DEFAULT = 64;
/** Default bound on the data bytes (write payloads, read replies) in flight per connection. */
export const IN_FLIGHT_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;
/** Default time a client has from connecting to entering transmission. */
export const HANDSHAKE_TIMEOUT_MS_DEFAULT = 10_000;
/** Default time a reply may wait for the client to read it before the connection is closed. */
export const REPLY_TIMEOUT_MS_DEFAULT = 60_000;
/** Idle time before TCP keepalive probes a connection's peer. */
const KEEPALIVE_MS = 30_000;
/** Default time `stop` waits for requests in flight before closing the sockets. */
export const STOP_TIMEOUT_MS_DEFAULT = 10_000;
/** Bytes the socket reader buffers ahead of what is asked before it pauses the socket. */
const READ_AHEAD_BYTES = 256 * 1024;
/** Most volumes answered to NBD_OPT_LIST (the catalog's own list bound). */
const LIST_EXPORTS_MAX = 4096;
/** Most time a look-up of the catalog during the handshake leaves for its answer (Connection.lookUpDeadline). */
const LOOKUP_MARGIN_MS_MAX = 1000;
/** First and longest wait before a Strata call answered `overloaded` is made again. */
const OVERLOADED_BACKOFF_MS_MIN = 5;
const OVERLOADED_BACKOFF_MS_MAX = 250;

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

export interface NbdServerOptions {
  client: StrataClient;
  /** The volume exported (also the default export, the empty name); omitted: every volume, by export name. */
  volume?: string;
  /** Address to listen on; default 127.0.0.1. */
  host?: string;
  /** TCP port; default 10809 (0: any free port, see `address`). */
  port?: number;
  /** Refuse writes (EPERM) and advertise NBD_FLAG_READ_ONLY. */
  readOnly?: boolean;
  connectionsMax?: number;
  requestsInFlightMax?: number;
  inFlightBytesMax?: number;
  handshakeTimeoutMs?: number;
  /** Time a reply may wait for the client to read it; past it the connection is closed. Default REPLY_TIMEOUT_MS_DEFAULT. */
  replyTimeoutMs?: number;
  stopTimeoutMs?: number;
  logger?: Logger;
}

export interface NbdServer {
  /** The address listened on (the port chosen when 0 was asked). */
  readonly address: { host: string; port: number };
  /** Connections served now (in negotiation or transmission). */
  connectionCount(): number;
  /**
   * Stops listening, stops reading requests, lets the requests in flight finish and answers them
   * (at most `stopTimeoutMs`), then closes every socket. Idempotent.
   */
  stop(): Promise<void>;
}

/** `nbd://HOST:PORT/NAME` of an export (an IPv6 host in brackets). */
export function nbdUri(host: string, port: number, name: string): string {
  return `nbd://${host.includes(':') ? `[${host}]` : host}:${port}/${encodeURIComponent(name)}`;
}

/**
 * Starts an NBD server. With `volume`, checks that the volume exists first (its `not_found`
 * or other failure is thrown). Resolves once listening.
 */
export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  const server = new Server(options);
  if (options.volume !== undefined) await options.client.volume(options.volume).info();
  await server.listen(options.host ?? '127.0.0.1', options.port ?? NBD_PORT_DEFAULT);
  return server;
}

// ---------------------------------------------------------------------------------------------
// Socket reading
// ---------------------------------------------------------------------------------------------

/** The peer closed the connection or broke the protocol: the connection ends, nothing to answer. */
class ConnectionEnded extends Error {
  override readonly name = 'ConnectionEnded';
}

/**
 * A request's client is gone (its connection closed, reset or ended by the server): its next
 * Strata call is not made, and it is not answered.
 */
class ClientGone extends Error {
  override readonly name = 'ClientGone';
}

/**
 * Reads exact byte counts from a socket. It buffers at most what is asked plus READ_AHEAD_BYTES
 * (and one chunk): past that the socket is paused until the buffer is read.
 *
 * The peer's end of its side (FIN: a half close) leaves what it sent before readable: a client
 * may send its last requests and shut its side down, and still expects their answers. A socket
 * closed (the peer reset it, a write to it failed, or the server destroyed it) drops what is
 * buffered: nothing read from it could be answered.
 */
class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { bytes: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private ended: Error | undefined;
  /** Closed: buffered bytes dropped, every read fails. */
  private aborted = false;

  constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      if (this.aborted) return;
      this.chunks.push(chunk);
      this.buffered += chunk.byteLength;
      this.serve();
      if (this.buffered >= (this.waiter?.bytes ?? 0) + READ_AHEAD_BYTES) socket.pause();
    });
    socket.on('end', () => this.end(new ConnectionEnded('the peer closed its side of the connection')));
    socket.on('close', () => this.abort(new ConnectionEnded('the connection was closed')));
  }

  /** Fails the read waiting now, and every later one once the bytes buffered are read. */
  end(reason: Error): void {
    if (this.ended !== undefined) return;
    this.ended = reason;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(reason);
  }

  /** Drops the bytes buffered and fails the read waiting now and every later one. */
  abort(reason: Error): void {
    this.aborted = true;
    this.chunks = [];
    this.buffered = 0;
    this.end(reason);
  }

  /** The next `bytes` bytes; rejects with ConnectionEnded if the connection ends first. */
  read(bytes: number): Promise<Buffer> {
    if (this.waiter !== undefined) throw new Error('SocketReader: one read at a time');
    if (this.aborted) return Promise.reject(this.ended!);
    if (this.buffered >= bytes) return Promise.resolve(this.take(bytes));
    if (this.ended !== undefined) return Promise.reject(this.ended);
    return new Promise<Buffer>((resolve, reject) => {
      this.waiter = { bytes, resolve, reject };
      this.socket.resume();
    });
  }

  /** Reads and drops `bytes` bytes, holding at most READ_AHEAD_BYTES of them at a time. */
  async skip(bytes: number): Promise<void> {
    for (let left = bytes; left > 0; ) {
      const n = Math.min(left, READ_AHEAD_BYTES);
      await this.read(n);
      left -= n;
    }
  }

  private serve(): void {
    const w = this.waiter;
    if (w === undefined || this.buffered < w.bytes) return;
    this.waiter = undefined;
    w.resolve(this.take(w.bytes));
  }

  /** The first `bytes` buffered bytes: a view of one chunk when they lie in it, else a copy of only those. */
  private take(bytes: number): Buffer {
    const head = this.chunks[0];
    let out: Buffer;
    if (head !== undefined && head.byteLength >= bytes) {
      out = head.subarray(0, bytes);
      if (head.byteLength === bytes) this.chunks.shift();
      else this.chunks[0] = head.subarray(bytes);
    } else {
      out = Buffer.allocUnsafe(bytes);
      for (let filled = 0; filled < bytes; ) {
        const chunk = this.chunks[0]!;
        const n = Math.min(chunk.byteLength, bytes - filled);
        chunk.copy(out, filled, 0, n);
        filled += n;
        if (n === chunk.byteLength) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(n);
      }
    }
    this.buffered -= bytes;
    if (this.buffered < READ_AHEAD_BYTES) this.socket.resume();
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Per-volume state shared by the connections
// ---------------------------------------------------------------------------------------------

/**
 * Exclusive locks on page ranges, granted in the order asked: a lock waits for every earlier
 * one whose range overlaps its own. Entries are the locks held or waited for; their number is
 * bounded by the requests in flight on every connection (a closed connection counts until its
 * requests have ended: NbdServer's accounting).
 */
class RangeLocks {
  private readonly held = new Set<{ first: number; last: number; done: Promise<void> }>();

  /**
   * Resolves with the release function once pages first..last are this caller's; rejects
   * `timeout` at `deadlineMs` if an earlier overlapping lock is still held then (its request
   * stuck on a shard without a leader, say), giving up its place: so a request waits behind the
   * others on its pages at most until its own deadline, not theirs added up.
   */
  async lock(first: number, last: number, deadlineMs: number): Promise<() => void> {
    const earlier = [...this.held].filter((h) => h.first <= last && first <= h.last).map((h) => h.done);
    let release!: () => void;
    const entry = { first, last, done: new Promise<void>((r) => (release = r)) };
    this.held.add(entry);
    const unlock = (): void => {
      this.held.delete(entry);
      release();
    };
    if (earlier.length === 0) return unlock;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), Math.max(0, deadlineMs - Date.now()))));
    try {
      if ((await Promise.race([Promise.all(earlier), late])) === 'late') {
        unlock();
        throw new ProtocolError('timeout', `pages ${first}..${last} were still held by an earlier write of them (it has not ended) when this request's time ran out; nothing of it was written`);
      }
    } finally {
      clearTimeout(timer);
    }
    return unlock;
  }
}

interface Export {
  name: string;
  locks: RangeLocks;
  /** Connections in transmission on it. */
  refs: number;
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/**
 * A Strata error as an NBD errno: out of range is ENOSPC for a write, EINVAL otherwise; a write
 * refused `no_space` (its shard's devices under their reserve) is ENOSPC, which a hypervisor can
 * pause its guest on until space is freed, as on a thin disk; the rest EIO.
 */
function errnoOf(err: unknown, write: boolean): number {
  if (err instanceof ProtocolError && err.code === 'out_of_range') return write ? NBD_ERR.ENOSPC : NBD_ERR.EINVAL;
  if (err instanceof ProtocolError && err.code === 'no_space' && write) return NBD_ERR.ENOSPC;
  return NBD_ERR.EIO;
}

/**
 * Runs a Strata call, making it again after a back-off while it is answered `overloaded` (a
 * bounded queue of the cluster was full: nothing was done, or, for a write split over shards,
 * some of its pages were written, which writing them again under the same page locks repeats),
 * for at most `budgetMs` in all; then the last failure is thrown. Other failures are thrown at
 * once: `timeout` (outcome unknown) among them.
 */
export async function retryOverloaded<T>(call: () => Promise<T>, budgetMs: number, sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms))): Promise<T> {
  const endMs = Date.now() + budgetMs;
  for (let waitMs = OVERLOADED_BACKOFF_MS_MIN; ; waitMs = Math.min(OVERLOADED_BACKOFF_MS_MAX, waitMs * 2)) {
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof ProtocolError && err.code === 'overloaded')) throw err;
      // Spread over [waitMs/2, waitMs): the connections that met a full queue together do not come back together.
      const jittered = Math.ceil(waitMs / 2 + (Math.random() * waitMs) / 2);
      if (Date.now() + jittered >= endMs) throw err;
      await sleep(jittered);
    }
  }
}

/**
 * Runs a block write (a Strata page write or range of zeros) in tries within `budgetMs`, made
 * again when its outcome is unknown (`timeout`): the shard's leader was killed or frozen with
 * it, say, and the next try reaches the shard's next leader; or when no leader took it within
 * the try (`unavailable`: the next one is being elected). `call` gets the try's deadline:
 * each try waits its part of the time left (at least WRITE_TRY_MS_MIN), up to WRITE_TRIES
 * tries, the last one until the end. Writing a block again with the same bytes is what a block
 * device may do: NBD gives a client's requests in flight no order among themselves, so no
 * request sent while this one is unanswered may count on this one's bytes, or on them not
 * landing. And an earlier try that still commits does so before this one: a later leader
 * settles the records of earlier terms before it writes anything, and in one term the log keeps
 * the order of arrival. `call` also gets the try's number (from 1). Each try is a call of
 * Strata's client, which sends its own tries within it, to every leader of the shard, with the
 * write's id. Other failures are thrown at once.
 */
export async function writeInTries<T>(
  call: (deadlineMs: number, attempt: number) => Promise<T>,
  budgetMs: number,
  opts: { nowMs?: () => number; onUnknown?: (err: ProtocolError, attempt: number) => void } = {},
): Promise<T> {
  const nowMs = opts.nowMs ?? Date.now;
  return inTries(
    nowMs() + budgetMs,
    {
      tries: WRITE_TRIES,
      tryMsMin: WRITE_TRY_MS_MIN,
      nowMs,
      again: (err) => err instanceof ProtocolError && WRITE_TRIED_AGAIN.has(err.code),
      onAgain: (err, attempt) => opts.onUnknown?.(err as ProtocolError, attempt),
    },
    call,
  );
}

/**
 * The failures of a try after which a block write is made again (`writeInTries`): its outcome
 * unknown (`timeout`), or no leader of a shard taking it within the try (`unavailable`: an
 * election, a handover or the catalog's failover under way).
 */
const WRITE_TRIED_AGAIN: ReadonlySet<string> = new Set(['timeout', 'unavailable']);

/** Tries of a block write whose outcome is unknown (`writeInTries`), and the shortest try. */
export const WRITE_TRIES = 3;
export const WRITE_TRY_MS_MIN = 1000;

function checkCount(value: number | undefined, name: string, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${name}: expected a positive integer, got ${String(value)}`);
  return v;
}

class Server implements NbdServer {
  readonly client: StrataClient;
  readonly volumeName: string | undefined;
  readonly readOnly: boolean;
  readonly connectionsMax: number;
  readonly requestsInFlightMax: number;
  readonly inFlightBytesMax: number;
  readonly handshakeTimeoutMs: number;
  readonly replyTimeoutMs: number;
  readonly stopTimeoutMs: number;
  /** How long a Strata call answered `overloaded` is made again: the client's timeout. */
  readonly overloadedRetryMs: number;
  readonly log: Logger;
  address = { host: '', port: 0 };
  private readonly tcp: net.Server;
  private readonly connections = new Set<Connection>();
  /** Sockets refused for the connection bound, until they are closed. */
  private readonly refused = new Set<Connection>();
  private readonly exports = new Map<string, Export>();
  private stopping: Promise<void> | undefined;

  constructor(options: NbdServerOptions) {
    this.client = options.client;
    this.volumeName = options.volume;
    this.readOnly = options.readOnly === true;
    this.connectionsMax = checkCount(options.connectionsMax, 'connectionsMax', CONNECTIONS_MAX_DEFAULT);
    this.requestsInFlightMax = checkCount(options.requestsInFlightMax, 'requestsInFlightMax', REQUESTS_IN_FLIGHT_MAX_DEFAULT);
    this.inFlightBytesMax = checkCount(options.inFlightBytesMax, 'inFlightBytesMax', IN_FLIGHT_BYTES_MAX_DEFAULT);
    this.handshakeTimeoutMs = checkCount(options.handshakeTimeoutMs, 'handshakeTimeoutMs', HANDSHAKE_TIMEOUT_MS_DEFAULT);
    this.replyTimeoutMs = checkCount(options.replyTimeoutMs, 'replyTimeoutMs', REPLY_TIMEOUT_MS_DEFAULT);
    this.stopTimeoutMs = checkCount(options.stopTimeoutMs, 'stopTimeoutMs', STOP_TIMEOUT_MS_DEFAULT);
    this.overloadedRetryMs = typeof options.client.timeoutMs === 'number' ? options.client.timeoutMs : 10_000;
    this.log = options.logger ?? createLogger({ component: 'nbd' });
    // Half-open: a client that shuts down its side after its last request still gets the answers.
    this.tcp = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.tcp.once('error', reject);
      this.tcp.listen(port, host, () => {
        this.tcp.off('error', reject);
        this.tcp.on('error', (err) => this.log.warn('nbd listener error', { err }));
        const a = this.tcp.address() as net.AddressInfo;
        this.address = { host, port: a.port };
        resolve();
      });
    });
  }

  connectionCount(): number {
    return this.connections.size;
  }

  private accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    socket.on('error', (err) => this.log.debug('nbd socket error', { err, remote: socket.remoteAddress }));
    // A peer gone without closing (its host powered off, a partition) is found and the socket ended.
    socket.setKeepAlive(true, KEEPALIVE_MS);
    if (this.stopping !== undefined) {
      socket.destroy();
      return;
    }
    if (this.connections.size >= this.connectionsMax) {
      // Refused: the greeting, then NBD_REP_ERR_SHUTDOWN to the first option, so that the client
      // can say why. Sockets in that state are bounded too; past that they are dropped at once.
      if (this.refused.size >= this.connectionsMax) {
        socket.destroy();
        return;
      }
      this.log.warn('nbd connection refused: too many connections', { remote: socket.remoteAddress, connectionsMax: this.connectionsMax });
      const c = new Connection(this, socket, true);
      this.refused.add(c);
      void c.run().finally(() => this.refused.delete(c));
      return;
    }
    const c = new Connection(this, socket, false);
    this.connections.add(c);
    // Counted until its requests have ended too, past its drain's bound: a client that closes
    // with requests queued and connects again cannot pile up requests beyond connectionsMax ×
    // requestsInFlightMax (each ends by its Strata call's deadline, or at once once it has its
    // lock: a closed connection's writes are not made).
    void c
      .run()
      .catch(() => undefined)
      .then(() => c.settled())
      .finally(() => this.connections.delete(c));
  }

  /** The volume an export name names: the exported one (also for ''), or any with `--all`; undefined if none. */
  exportName(name: string): string | undefined {
    if (this.volumeName !== undefined) return name === '' || name === this.volumeName ? this.volumeName : undefined;
    return name === '' ? undefined : name;
  }

  /** Names of the exports, for NBD_OPT_LIST; the catalog's answer awaited until `deadlineMs` (ms since the epoch). */
  async listExports(deadlineMs: number): Promise<string[]> {
    if (this.volumeName !== undefined) return [this.volumeName];
    return (await this.client.listVolumes({ deadlineMs })).map((v) => v.name).slice(0, LIST_EXPORTS_MAX);
  }

  /** Takes a reference on a volume's shared state (its locks). */
  acquire(name: string): Export {
    let e = this.exports.get(name);
    if (e === undefined) {
      e = { name, locks: new RangeLocks(), refs: 0 };
      this.exports.set(name, e);
    }
    e.refs++;
    return e;
  }

  release(e: Export): void {
    if (--e.refs === 0) this.exports.delete(e.name);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const closed = new Promise<void>((resolve) => this.tcp.close(() => resolve()));
      await Promise.all([...this.connections, ...this.refused].map((c) => c.stop()));
      await closed;
    })();
    return this.stopping;
  }
}

/** A parsed transmission request. */
interface Request {
  flags: number;
  type: number;
  cookie: Buffer;
  /** The offset as a number: exact once the range is checked within the export (below 2^53). */
  offset: number;
  /** The offset as sent (up to 2^64 - 1), for the checks and messages before that. */
  offsetSent: bigint;
  length: number;
}

class Connection {
  private readonly reader: SocketReader;
  private readonly log: Logger;
  private noZeroes = false;
  /**
   * NBD_OPT_STRUCTURED_REPLY was acknowledged: READ is answered in chunks, and errors as error
   * chunks with a message.
   */
  private structured = false;
  /**
   * The volume of the export the last NBD_OPT_SET_META_CONTEXT selected `base:allocation` for;
   * undefined when it selected nothing (or failed, or none was sent).
   */
  private allocationFor: string | undefined;
  /** `base:allocation` is selected for the export in transmission: NBD_CMD_BLOCK_STATUS is served. */
  private allocation = false;
  private exp: Export | undefined;
  private info: VolumeInfo | undefined;
  /** The export's volume, held to the id it had when opened (`open`). */
  private volume: Volume | undefined;
  private inFlight = 0;
  private inFlightBytes = 0;
  /** Resolves the wait of the request loop for room (inFlight below its bounds) or for stop. */
  private wake: (() => void) | undefined;
  /** Writes in flight (WRITE, TRIM, WRITE_ZEROES), for FLUSH. */
  private readonly writes = new Set<Promise<void>>();
  /** Every request in flight, for DISC and stop. */
  private readonly requests = new Set<Promise<void>>();
  private stopping = false;
  private transmitting = false;
  /** Why the last `open` failed: no such export, or the cluster's failure. */
  private openError: 'unknown' | 'failed' = 'unknown';
  private finished: Promise<void> | undefined;
  /** When the handshake's time (`handshakeTimeoutMs`) runs out, ms since the Unix epoch. */
  private handshakeEndMs = Number.MAX_SAFE_INTEGER;

  constructor(
    private readonly server: Server,
    private readonly socket: net.Socket,
    private readonly refuse: boolean,
  ) {
    this.reader = new SocketReader(socket);
    this.log = server.log.child({ remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}` });
    // Its requests already received are still answered (SocketReader).
    socket.on('end', () => this.log.debug('nbd client ended its side of the connection', { volume: this.exp?.name }));
  }

  run(): Promise<void> {
    this.finished ??= this.serve();
    return this.finished;
  }

  private async serve(): Promise<void> {
    try {
      this.handshakeEndMs = Date.now() + this.server.handshakeTimeoutMs;
      const timer = setTimeout(() => {
        this.log.info('nbd handshake not completed in time: closing', { handshakeTimeoutMs: this.server.handshakeTimeoutMs });
        this.reader.end(new ConnectionEnded('handshake timeout'));
        // Also ends a reply the client does not read.
        this.socket.destroy();
      }, this.server.handshakeTimeoutMs);
      let entered: boolean;
      try {
        entered = await this.handshake();
      } finally {
        clearTimeout(timer);
      }
      if (entered) await this.transmission();
    } catch (err) {
      if (!(err instanceof ConnectionEnded)) this.log.warn('nbd connection failed', { err, volume: this.exp?.name });
    } finally {
      await this.drain(this.server.stopTimeoutMs);
      // The volume's locks are let go only once no request of this connection holds one, even
      // past the drain's bound.
      const exp = this.exp;
      if (exp !== undefined) void Promise.allSettled([...this.requests]).then(() => this.server.release(exp));
      this.socket.end();
      // A peer that does not read what is left is not waited for.
      setTimeout(() => this.socket.destroy(), 1000).unref();
    }
  }

  /** Stop: no more requests are read; in-flight ones finish (bounded by the server's stopTimeoutMs). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    // The negotiation or the request loop's wait for the next request ends; the requests in
    // flight are still answered.
    this.reader.end(new ConnectionEnded('server stopping'));
    if (!this.transmitting) this.socket.destroy();
    await this.run();
  }

  /** Nothing more can be sent to the client (it closed, or the connection was ended). */
  private get clientGone(): boolean {
    return this.socket.destroyed || !this.socket.writable;
  }

  /** Resolves once every request of this connection has ended. */
  settled(): Promise<void> {
    return Promise.allSettled([...this.requests]).then(() => undefined);
  }

  private async drain(timeoutMs: number): Promise<void> {
    if (this.requests.size === 0) return;
    // Past the bound, the requests left go on; their locks are let go when they end (serve).
    await withTimeout(Promise.allSettled([...this.requests]), timeoutMs, () => new Error('drain timed out')).catch(() => undefined);
  }

  private send(...parts: Buffer[]): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed || !this.socket.writable) return resolve();
      // A client that does not read its replies would hold this one (its request, its payload,
      // the connection's slot) for ever: past replyTimeoutMs the connection is closed.
      const timer = setTimeout(() => {
        this.log.info('nbd client did not read a reply in time: closing', { replyTimeoutMs: this.server.replyTimeoutMs, volume: this.exp?.name });
        this.reader.end(new ConnectionEnded('reply not read'));
        this.socket.destroy();
        resolve();
      }, this.server.replyTimeoutMs);
      this.socket.cork();
      for (let i = 0; i < parts.length - 1; i++) this.socket.write(parts[i]!);
      this.socket.write(parts[parts.length - 1]!, () => {
        clearTimeout(timer);
        resolve();
      });
      this.socket.uncork();
    });
  }

  // -- negotiation ------------------------------------------------------------------------------

  private optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Promise<void> {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type >>> 0, 12);
    h.writeUInt32BE(data.byteLength, 16);
    return this.send(h, data);
  }

  private optionError(option: number, type: number, message: string): Promise<void> {
    return this.optionReply(option, type, Buffer.from(message, 'utf8'));
  }

  /** Negotiation; true once in transmission, false when the connection is to end. */
  private async handshake(): Promise<boolean> {
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(NBDMAGIC, 0);
    greeting.writeBigUInt64BE(IHAVEOPT, 8);
    greeting.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
    await this.send(greeting);
    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if ((clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE) === 0 || (clientFlags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) {
      this.log.warn('nbd client refused: not fixed newstyle, or unknown client flags', { clientFlags });
      return false;
    }
    this.noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
    for (;;) {
      const head = await this.reader.read(16);
      if (head.readBigUInt64BE(0) !== IHAVEOPT) {
        this.log.warn('nbd client refused: bad option magic');
        return false;
      }
      const option = head.readUInt32BE(8);
      const length = head.readUInt32BE(12);
      if (length > OPTION_BYTES_MAX) {
        if (option === NBD_OPT.EXPORT_NAME) {
          // No reply of any kind exists for this option but the export's size and flags, which
          // the client reads next: an option reply here would be taken for them. Closed.
          this.log.info('nbd export refused', { reason: `export name of ${length} bytes is over the limit of ${OPTION_BYTES_MAX}` });
          return false;
        }
        await this.reader.skip(length);
        await this.optionError(option, NBD_REP.ERR_TOO_BIG, `option data of ${length} bytes is over the limit of ${OPTION_BYTES_MAX}`);
        continue;
      }
      const data = await this.reader.read(length);
      if (this.refuse || this.stopping) {
        // ABORT is acknowledged as always (the protocol asks it); EXPORT_NAME has no error reply.
        if (option === NBD_OPT.ABORT) await this.optionReply(option, NBD_REP.ACK);
        else if (option !== NBD_OPT.EXPORT_NAME) await this.optionError(option, NBD_REP.ERR_SHUTDOWN, this.refuse ? `the server serves at most ${this.server.connectionsMax} connections` : 'the server is stopping');
        return false;
      }
      switch (option) {
        case NBD_OPT.EXPORT_NAME: {
          const info = await this.open(data.toString('utf8'));
          if (typeof info === 'string') {
            // No error reply exists for this option: the connection is closed.
            this.log.info('nbd export refused', { reason: info });
            return false;
          }
          const reply = Buffer.alloc(this.noZeroes ? 10 : 134);
          reply.writeBigUInt64BE(BigInt(info.pageCount * info.pageSize), 0);
          reply.writeUInt16BE(this.transmissionFlags(), 8);
          await this.send(reply);
          return true;
        }
        case NBD_OPT.ABORT:
          await this.optionReply(option, NBD_REP.ACK);
          return false;
        case NBD_OPT.LIST: {
          if (length !== 0) {
            await this.optionError(option, NBD_REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
            break;
          }
          let names: string[];
          try {
            names = await this.server.listExports(this.lookUpDeadline());
          } catch (err) {
            this.log.warn('nbd list of volumes failed', { err });
            await this.optionError(option, NBD_REP.ERR_PLATFORM, `the volumes could not be listed: ${(err as Error).message}`);
            break;
          }
          for (const name of names) {
            const n = Buffer.from(name, 'utf8');
            const len = Buffer.alloc(4);
            len.writeUInt32BE(n.byteLength, 0);
            await this.optionReply(option, NBD_REP.SERVER, Buffer.concat([len, n]));
          }
          await this.optionReply(option, NBD_REP.ACK);
          break;
        }
        case NBD_OPT.INFO:
        case NBD_OPT.GO:
          if (await this.infoOrGo(option, data)) return true;
          break;
        case NBD_OPT.STRUCTURED_REPLY:
          if (length !== 0) {
            await this.optionError(option, NBD_REP.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
            break;
          }
          // Asked again, acknowledged again: nothing changes.
          this.structured = true;
          await this.optionReply(option, NBD_REP.ACK);
          break;
        case NBD_OPT.LIST_META_CONTEXT:
        case NBD_OPT.SET_META_CONTEXT:
          await this.metaContext(option, data);
          break;
        default:
          await this.optionError(option, NBD_REP.ERR_UNSUP, `option ${option} is not supported`);
      }
    }
  }

  /** NBD_OPT_INFO and NBD_OPT_GO; true when GO succeeded (transmission starts). */
  private async infoOrGo(option: number, data: Buffer): Promise<boolean> {
    const nameLength = data.byteLength >= 4 ? data.readUInt32BE(0) : -1;
    const infoCount = nameLength >= 0 && data.byteLength >= 4 + nameLength + 2 ? data.readUInt16BE(4 + nameLength) : -1;
    if (infoCount < 0 || data.byteLength !== 4 + nameLength + 2 + 2 * infoCount) {
      await this.optionError(option, NBD_REP.ERR_INVALID, 'malformed NBD_OPT_INFO/GO data');
      return false;
    }
    const name = data.subarray(4, 4 + nameLength).toString('utf8');
    const asked = new Set(Array.from({ length: infoCount }, (_, i) => data.readUInt16BE(4 + nameLength + 2 + 2 * i)));
    const info = await this.open(name, option === NBD_OPT.INFO);
    if (typeof info === 'string') {
      await this.optionError(option, this.openError === 'unknown' ? NBD_REP.ERR_UNKNOWN : NBD_REP.ERR_PLATFORM, info);
      return false;
    }
    const exportInfo = Buffer.alloc(12);
    exportInfo.writeUInt16BE(NBD_INFO.EXPORT, 0);
    exportInfo.writeBigUInt64BE(BigInt(info.pageCount * info.pageSize), 2);
    exportInfo.writeUInt16BE(this.transmissionFlags(), 10);
    await this.optionReply(option, NBD_REP.INFO, exportInfo);
    // Sent whether asked or not: a minimum of 1 asks nothing of the client.
    const blockSize = Buffer.alloc(14);
    blockSize.writeUInt16BE(NBD_INFO.BLOCK_SIZE, 0);
    blockSize.writeUInt32BE(1, 2);
    blockSize.writeUInt32BE(info.pageSize, 6);
    blockSize.writeUInt32BE(BLOCK_BYTES_MAX, 10);
    await this.optionReply(option, NBD_REP.INFO, blockSize);
    if (asked.has(NBD_INFO.NAME)) {
      const n = Buffer.from(info.name, 'utf8');
      const head = Buffer.alloc(2);
      head.writeUInt16BE(NBD_INFO.NAME, 0);
      await this.optionReply(option, NBD_REP.INFO, Buffer.concat([head, n]));
    }
    if (asked.has(NBD_INFO.DESCRIPTION)) {
      const text = `Strata volume ${info.name}: ${info.pageCount} pages of ${info.pageSize} bytes, ${info.shards} shard(s), ${info.replicas} replica(s)`;
      const head = Buffer.alloc(2);
      head.writeUInt16BE(NBD_INFO.DESCRIPTION, 0);
      await this.optionReply(option, NBD_REP.INFO, Buffer.concat([head, Buffer.from(text, 'utf8')]));
    }
    await this.optionReply(option, NBD_REP.ACK);
    if (option === NBD_OPT.INFO) {
      this.server.release(this.exp!);
      this.exp = undefined;
      this.info = undefined;
      return false;
    }
    return true;
  }

  /**
   * NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. The only context is `base:allocation`:
   * LIST answers it for no query, `base:` or `base:allocation`; SET selects it for
   * `base:allocation` only (`base:` selects nothing there). Queries of other namespaces, or other
   * names of `base:`, match nothing and are not answered.
   */
  private async metaContext(option: number, data: Buffer): Promise<void> {
    const set = option === NBD_OPT.SET_META_CONTEXT;
    const what = set ? 'NBD_OPT_SET_META_CONTEXT' : 'NBD_OPT_LIST_META_CONTEXT';
    // A SET replaces the selection, also when it fails.
    if (set) this.allocationFor = undefined;
    // LIST is answered without them too (the protocol lets the server choose): it selects nothing.
    if (set && !this.structured) return this.optionError(option, NBD_REP.ERR_INVALID, `${what} before NBD_OPT_STRUCTURED_REPLY`);
    const parsed = parseMetaContextData(data);
    if (typeof parsed === 'string') return this.optionError(option, NBD_REP.ERR_INVALID, `malformed ${what} data: ${parsed}`);
    if (parsed.queries.length > META_CONTEXT_QUERIES_MAX) {
      return this.optionError(option, NBD_REP.ERR_TOO_BIG, `${parsed.queries.length} queries are over the limit of ${META_CONTEXT_QUERIES_MAX}`);
    }
    const volume = await this.lookUp(parsed.name);
    if (typeof volume !== 'string') return this.optionError(option, volume.error, volume.message);
    const matched = set
      ? parsed.queries.includes(BASE_ALLOCATION)
      : parsed.queries.length === 0 || parsed.queries.some((q) => q === 'base:' || q === BASE_ALLOCATION);
    if (matched) {
      const reply = Buffer.concat([Buffer.alloc(4), Buffer.from(BASE_ALLOCATION, 'utf8')]);
      // The id of a listed context is reserved (zero); a selected one has its id.
      reply.writeUInt32BE(set ? BASE_ALLOCATION_ID : 0, 0);
      await this.optionReply(option, NBD_REP.META_CONTEXT, reply);
    }
    if (set && matched) this.allocationFor = volume;
    await this.optionReply(option, NBD_REP.ACK);
  }

  /**
   * The deadline of a look-up of the catalog during the handshake: a quarter of the handshake's
   * time (at most 1 s) before it runs out, so that a catalog that does not answer (no majority of
   * its replicas, say) is answered NBD_REP_ERR_PLATFORM saying why, not a connection closed
   * with no word.
   */
  private lookUpDeadline(): number {
    return Math.max(0, this.handshakeEndMs - Math.min(LOOKUP_MARGIN_MS_MAX, Math.floor(this.server.handshakeTimeoutMs / 4)));
  }

  /**
   * The volume an export name names, checked in the catalog (as INFO and GO check it), without
   * taking it; or the option error to answer.
   */
  private async lookUp(name: string): Promise<string | { error: number; message: string }> {
    const volumeName = this.server.exportName(name);
    if (volumeName === undefined) return { error: NBD_REP.ERR_UNKNOWN, message: name === '' ? 'no default export: name a volume' : `no export named ${JSON.stringify(name)}` };
    try {
      await this.catalogInfo(volumeName);
      return volumeName;
    } catch (err) {
      if (err instanceof ProtocolError && (err.code === 'not_found' || err.code === 'bad_request')) {
        return { error: NBD_REP.ERR_UNKNOWN, message: `no export named ${JSON.stringify(name)}: ${err.message}` };
      }
      this.log.warn('nbd export could not be looked up', { volume: volumeName, err });
      return { error: NBD_REP.ERR_PLATFORM, message: `volume ${volumeName} could not be looked up: ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  /**
   * The volume's info as the catalog answers it now, by the look-up's deadline. Fetched through a
   * handle of its own, which has no geometry cached: a refresh of a handle that has one falls
   * back to it when the catalog does not answer, and the option would be answered from it, late,
   * instead of NBD_REP_ERR_PLATFORM saying that the catalog could not be reached.
   */
  private catalogInfo(volumeName: string): Promise<VolumeInfo> {
    return this.server.client.volume(volumeName).info({ deadlineMs: this.lookUpDeadline() });
  }

  /** Looks the export up and takes it (`this.exp`, `this.info`); a string says why it cannot be. */
  private async open(name: string, infoOnly = false): Promise<VolumeInfo | string> {
    const volumeName = this.server.exportName(name);
    if (volumeName === undefined) {
      this.openError = 'unknown';
      return name === '' ? 'no default export: name a volume' : `no export named ${JSON.stringify(name)}`;
    }
    let exp: Export | undefined;
    try {
      exp = this.server.acquire(volumeName);
      // The catalog's answer, not a geometry cached: the volume may have been created again.
      const info = await this.catalogInfo(volumeName);
      this.exp = exp;
      this.info = info;
      // Held to this volume: one created again under its name (another geometry, maybe) fails
      // this connection's calls `not_found` (EIO) instead of being read with this one's.
      this.volume = this.server.client.volume(volumeName, { id: info.id });
      if (!infoOnly) this.log.info('nbd export opened', { volume: volumeName });
      return info;
    } catch (err) {
      if (exp !== undefined) this.server.release(exp);
      // bad_request: not a volume name at all.
      if (err instanceof ProtocolError && (err.code === 'not_found' || err.code === 'bad_request')) {
        this.openError = 'unknown';
        return `no export named ${JSON.stringify(name)}: ${err.message}`;
      }
      this.openError = 'failed';
      this.log.warn('nbd export could not be opened', { volume: volumeName, err });
      return `volume ${volumeName} could not be opened: ${err instanceof Error ? err.message : String(err)}`;
    }
  }

  private transmissionFlags(): number {
    let flags = NBD_FLAG.HAS_FLAGS | NBD_FLAG.SEND_FLUSH | NBD_FLAG.SEND_FUA | NBD_FLAG.CAN_MULTI_CONN;
    flags |= this.server.readOnly ? NBD_FLAG.READ_ONLY : NBD_FLAG.SEND_TRIM | NBD_FLAG.SEND_WRITE_ZEROES | NBD_FLAG.SEND_FAST_ZERO;
    return flags;
  }

  // -- transmission -----------------------------------------------------------------------------

  private async transmission(): Promise<void> {
    this.transmitting = true;
    // Only for the export the selection was made for (the protocol asks the last SET to name
    // the export GO or EXPORT_NAME enters); any other export has no context selected.
    this.allocation = this.allocationFor !== undefined && this.allocationFor === this.exp!.name;
    for (;;) {
      await this.roomFor(() => this.inFlight < this.server.requestsInFlightMax && this.inFlightBytes < this.server.inFlightBytesMax);
      if (this.stopping) return;
      const head = await this.reader.read(28);
      if (head.readUInt32BE(0) !== REQUEST_MAGIC) {
        this.log.warn('nbd request with a bad magic: closing the connection', { volume: this.exp!.name });
        return;
      }
      const request: Request = {
        flags: head.readUInt16BE(4),
        type: head.readUInt16BE(6),
        cookie: Buffer.from(head.subarray(8, 16)),
        offset: Number(head.readBigUInt64BE(16)),
        offsetSent: head.readBigUInt64BE(16),
        length: head.readUInt32BE(24),
      };
      if (request.type === NBD_CMD.DISC) return;
      if (request.type === NBD_CMD.WRITE && request.length > BLOCK_BYTES_MAX) {
        // Read and dropped to stay in step with the stream (READ_AHEAD_BYTES at a time).
        await this.reader.skip(request.length);
        // Answered as every request is, not awaited here: a client that reads no replies
        // cannot hold this loop (and so a stop) in this answer's send.
        this.track(this.fail(request, NBD_ERR.EINVAL, `a write of ${request.length} bytes is over the limit of ${BLOCK_BYTES_MAX}`), 0, false);
        continue;
      }
      // The data bytes it holds: a WRITE's payload, a READ's reply (one over the limit holds none).
      const bytes = (request.type === NBD_CMD.READ || request.type === NBD_CMD.WRITE) && request.length <= BLOCK_BYTES_MAX ? request.length : 0;
      // Counted before a WRITE's payload is read: the bytes held stay within inFlightBytesMax (a
      // request larger than that is taken alone).
      await this.roomFor(() => this.inFlightBytes === 0 || this.inFlightBytes + bytes <= this.server.inFlightBytesMax);
      if (this.stopping) return;
      const payload = request.type === NBD_CMD.WRITE ? await this.reader.read(request.length) : undefined;
      const isWrite = request.type === NBD_CMD.WRITE || request.type === NBD_CMD.TRIM || request.type === NBD_CMD.WRITE_ZEROES;
      this.track(this.handle(request, payload), bytes, isWrite);
    }
  }

  /** Resolves once `room()` holds (requests ending make room), or the connection stops. */
  private async roomFor(room: () => boolean): Promise<void> {
    while (!this.stopping && !room()) {
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  /** Counts a request's handling (`handling`, its answer included) among those in flight until it ends. */
  private track(handling: Promise<void>, bytes: number, isWrite: boolean): void {
    this.inFlight++;
    this.inFlightBytes += bytes;
    const done: Promise<void> = handling.finally(() => {
      this.inFlight--;
      this.inFlightBytes -= bytes;
      this.requests.delete(done);
      this.writes.delete(done);
      this.wake?.();
    });
    this.requests.add(done);
    if (isWrite) this.writes.add(done);
  }

  /**
   * A simple reply. Without structured replies, every answer; with them, the answer of a success
   * that carries no data (the protocol lets every command but READ keep simple replies).
   */
  private reply(request: Request, error: number, data?: Buffer): Promise<void> {
    const h = Buffer.alloc(16);
    h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(error, 4);
    request.cookie.copy(h, 8);
    return data === undefined || error !== 0 ? this.send(h) : this.send(h, data);
  }

  /** One structured reply chunk (only once structured replies are negotiated). */
  private chunk(request: Request, flags: number, type: number, ...payload: Buffer[]): Promise<void> {
    const h = Buffer.alloc(20);
    h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    request.cookie.copy(h, 8);
    h.writeUInt32BE(payload.reduce((n, p) => n + p.byteLength, 0), 16);
    return this.send(h, ...payload);
  }

  /** READ's bytes: one final NBD_REPLY_TYPE_OFFSET_DATA chunk with structured replies, else a simple reply. */
  private replyData(request: Request, data: Buffer): Promise<void> {
    if (!this.structured) return this.reply(request, 0, data);
    const offset = Buffer.alloc(8);
    offset.writeBigUInt64BE(BigInt(request.offset), 0);
    // Final at once: every byte is read before the chunk is sent, so no error can follow it.
    return this.chunk(request, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE.OFFSET_DATA, offset, data);
  }

  /**
   * Answers a request with an error. With structured replies, a final NBD_REPLY_TYPE_ERROR chunk
   * with the message (a READ may not have a simple reply then, and the message lets the client
   * say why); without them, a simple reply, which has room for the errno only.
   */
  private fail(request: Request, errno: number, message: string): Promise<void> {
    if (!this.structured) return this.reply(request, errno);
    const text = utf8Prefix(message, ERROR_MESSAGE_BYTES_MAX);
    const head = Buffer.alloc(6);
    head.writeUInt32BE(errno, 0);
    head.writeUInt16BE(text.byteLength, 4);
    return this.chunk(request, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE.ERROR, head, text);
  }

  /**
   * The export's page calls, each made again while answered `overloaded` (`retryOverloaded`),
   * the writes also when their outcome is unknown (`writeInTries`; the client sends a read
   * again itself), all within the client's timeout. No call, and no try of one, is made once
   * the connection's client is gone (ClientGone is thrown instead): a request of many calls (a
   * read over several, a write of zeros with NO_HOLE over a large range) stops there, so that a
   * client that went away holds neither the cluster nor its connection's slot with it.
   */
  private pageCalls(deadlineMs: number | undefined): PageCalls {
    const volume = this.volume!;
    const untilMs = (d: number): number => d - Date.now();
    // Each call within the request's deadline, or, without one, within the client's timeout from its start.
    const ownMs = (): number => deadlineMs ?? Date.now() + this.server.overloadedRetryMs;
    const tries = {
      onUnknown: (err: ProtocolError, attempt: number) =>
        this.log.info('nbd write made again: its try was not answered, or found no leader', { volume: this.exp?.name, attempt, code: err.code, err: err.message }),
    };
    const live = <T>(call: () => Promise<T>): Promise<T> => (this.clientGone ? Promise.reject(new ClientGone('the client is gone')) : call());
    // A call until deadline `d`, made again while answered overloaded.
    const until = <T>(call: (d: number) => Promise<T>, d: number): Promise<T> => retryOverloaded(() => live(() => call(d)), untilMs(d));
    const read = <T>(call: (d: number) => Promise<T>): Promise<T> => until(call, ownMs());
    const write = <T>(call: (d: number) => Promise<T>): Promise<T> => writeInTries((d) => until(call, d), untilMs(ownMs()), tries);
    return {
      readPages: (pages) => read((d) => volume.readPages(pages, { deadlineMs: d })),
      writePages: (pages) => write((d) => volume.writePages(pages, { deadlineMs: d })),
      zeroPages: (first, count) => write((d) => volume.zeroPages(first, count, { deadlineMs: d })),
      pagesWithData: (first, count) => read((d) => volume.pagesWithData(first, count, { deadlineMs: d })),
    };
  }

  /** Answers one request; never rejects. */
  private async handle(request: Request, payload: Buffer | undefined): Promise<void> {
    // The request's whole time (the client's timeout), waits for its pages included.
    const deadlineMs = Date.now() + this.server.overloadedRetryMs;
    const name = NBD_CMD_NAMES[request.type];
    const isWrite = request.type === NBD_CMD.WRITE || request.type === NBD_CMD.TRIM || request.type === NBD_CMD.WRITE_ZEROES;
    try {
      if (name === undefined || request.type === NBD_CMD.CACHE) return await this.fail(request, NBD_ERR.EINVAL, `command ${request.type} is not supported`);
      if (request.type === NBD_CMD.BLOCK_STATUS && !this.allocation) {
        return await this.fail(request, NBD_ERR.EINVAL, `block status without the ${BASE_ALLOCATION} context selected for this export (NBD_OPT_SET_META_CONTEXT)`);
      }
      // FUA on any command (every write is durable when answered; clients set it on others
      // too); NO_HOLE and FAST_ZERO on WRITE_ZEROES only, REQ_ONE on BLOCK_STATUS only; no
      // other flag was negotiated.
      const known =
        NBD_CMD_FLAG.FUA |
        (request.type === NBD_CMD.WRITE_ZEROES ? NBD_CMD_FLAG.NO_HOLE | NBD_CMD_FLAG.FAST_ZERO : 0) |
        (request.type === NBD_CMD.BLOCK_STATUS ? NBD_CMD_FLAG.REQ_ONE : 0);
      if ((request.flags & ~known) !== 0) return await this.fail(request, NBD_ERR.EINVAL, `command flags 0x${request.flags.toString(16)} are not all for ${name}`);
      const noHole = request.type === NBD_CMD.WRITE_ZEROES && (request.flags & NBD_CMD_FLAG.NO_HOLE) !== 0;
      // FAST_ZERO asks for zeros only if they are fast; with NO_HOLE the whole pages are written
      // as pages of zeros, which takes as long as writing them: refused at once, as the client
      // asked, so that it writes them itself if it wants to.
      if (noHole && (request.flags & NBD_CMD_FLAG.FAST_ZERO) !== 0) {
        return await this.fail(request, NBD_ERR.ENOTSUP, 'NO_HOLE with FAST_ZERO: the pages would be written as pages of zeros, which is not fast');
      }
      if (request.type === NBD_CMD.FLUSH) {
        // Every write is durable once answered: FLUSH waits for the writes received before it.
        await Promise.allSettled([...this.writes]);
        return await this.reply(request, 0);
      }
      // FAST_ZERO is met: whole pages are made zeros with one small record per shard, whatever
      // the length; only the pages a range covers in part are read and written.
      const info = this.info!;
      const size = info.pageCount * info.pageSize;
      if (request.length === 0) return await this.fail(request, NBD_ERR.EINVAL, 'length 0');
      if ((request.type === NBD_CMD.READ || request.type === NBD_CMD.WRITE) && request.length > BLOCK_BYTES_MAX) {
        return await this.fail(request, NBD_ERR.EINVAL, `a ${name} of ${request.length} bytes is over the limit of ${BLOCK_BYTES_MAX}`);
      }
      if (isWrite && this.server.readOnly) return await this.fail(request, NBD_ERR.EPERM, 'the export is read-only');
      // In bigint: an offset past 2^53 is not rounded, in the check or in the message.
      const rangeEnd = request.offsetSent + BigInt(request.length);
      if (rangeEnd > BigInt(size)) {
        const errno = request.type === NBD_CMD.WRITE || request.type === NBD_CMD.WRITE_ZEROES ? NBD_ERR.ENOSPC : NBD_ERR.EINVAL;
        return await this.fail(request, errno, `bytes ${request.offsetSent}..${rangeEnd - 1n} are past the end of the export (${size} bytes)`);
      }
      // The range is not needed (the client may assume nothing of its bytes until it writes
      // them): its whole pages are made zeros, so that their space is given back at the shards'
      // next checkpoints (an image stores no page of zeros). The pages it covers in part keep
      // their bytes. One small record per shard, also for a whole-device discard as mkfs sends.
      if (request.type === NBD_CMD.TRIM) {
        const first = Math.ceil(request.offset / info.pageSize);
        const end = Math.floor((request.offset + request.length) / info.pageSize);
        if (end > first) {
          const release = await this.exp!.locks.lock(first, end - 1, deadlineMs);
          try {
            if (this.clientGone) return; // Its client is gone: not made, never answered.
            await this.pageCalls(deadlineMs).zeroPages(first, end - first);
          } finally {
            release();
          }
        }
        return await this.reply(request, 0);
      }
      if (request.type === NBD_CMD.READ) {
        const data = await readBytes(this.pageCalls(deadlineMs), info.pageSize, request.offset, request.length);
        return await this.replyData(request, data);
      }
      if (request.type === NBD_CMD.BLOCK_STATUS) {
        const extents = await allocationExtents(this.pageCalls(deadlineMs), info.pageSize, request.offset, request.length, (request.flags & NBD_CMD_FLAG.REQ_ONE) !== 0);
        const payload = Buffer.alloc(4 + 8 * extents.length);
        payload.writeUInt32BE(BASE_ALLOCATION_ID, 0);
        extents.forEach((e, i) => {
          payload.writeUInt32BE(e.length, 4 + 8 * i);
          payload.writeUInt32BE(e.flags, 8 + 8 * i);
        });
        // One chunk for the one context selected, final.
        return await this.chunk(request, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE.BLOCK_STATUS, payload);
      }
      const release = await this.exp!.locks.lock(Math.floor(request.offset / info.pageSize), Math.floor((request.offset + request.length - 1) / info.pageSize), deadlineMs);
      try {
        // Its client closed while it waited for its pages: nobody can be answered, so it is not
        // made (its outcome was unknown to the client either way).
        if (this.clientGone) return;
        // A range written as zeros (NO_HOLE) may take many calls, one after another: each has its own time.
        await writeBytes(this.pageCalls(noHole ? undefined : deadlineMs), info.pageSize, request.offset, request.length, payload, noHole);
      } finally {
        release();
      }
      return await this.reply(request, 0);
    } catch (err) {
      // Its client is gone: the rest of it is not made, and nobody is there to answer.
      if (err instanceof ClientGone) return;
      const errno = errnoOf(err, isWrite);
      this.log.warn('nbd request failed', {
        volume: this.exp?.name,
        command: name ?? request.type,
        offset: request.offset,
        length: request.length,
        code: err instanceof ProtocolError ? err.code : 'internal',
        errno,
        err,
      });
      await this.fail(request, errno, err instanceof ProtocolError ? `${name ?? request.type} failed: ${err.code}: ${err.message}` : `${name ?? request.type} failed: internal error`);
    }
  }
}

/** The longest prefix of `text` that is at most `bytes` bytes of UTF-8, not cutting a character. */
function utf8Prefix(text: string, bytes: number): Buffer {
  const b = Buffer.from(text, 'utf8');
  if (b.byteLength <= bytes) return b;
  let end = bytes;
  // Back to the first byte of the character cut (continuation bytes are 0b10xxxxxx).
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

// ---------------------------------------------------------------------------------------------
// Metadata contexts
// ---------------------------------------------------------------------------------------------

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: u32 name length, the export
 * name, u32 query count, then each query as u32 length and string. Every length must lie within
 * the data and the queries must end it exactly; a query must be a UTF-8 string without NUL that
 * starts with a namespace and a colon. A string says what is wrong. The data is at most
 * OPTION_BYTES_MAX bytes, and each query takes at least 4 of them: the loop is bounded.
 */
function parseMetaContextData(data: Buffer): { name: string; queries: string[] } | string {
  if (data.byteLength < 8) return `${data.byteLength} bytes, fewer than a name length and a query count`;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.byteLength - 8) return `an export name of ${nameLength} bytes runs past the data`;
  const name = data.subarray(4, 4 + nameLength).toString('utf8');
  const count = data.readUInt32BE(4 + nameLength);
  const queries: string[] = [];
  let at = 8 + nameLength;
  for (let i = 0; i < count; i++) {
    if (data.byteLength - at < 4) return `${count} queries, but the data ends after ${i}`;
    const length = data.readUInt32BE(at);
    at += 4;
    if (length > data.byteLength - at) return `query ${i} of ${length} bytes runs past the data`;
    let query: string;
    try {
      query = UTF8.decode(data.subarray(at, at + length));
    } catch {
      return `query ${i} is not UTF-8`;
    }
    at += length;
    if (query.includes('\0')) return `query ${i} holds a NUL`;
    if (query.indexOf(':') < 1) return `query ${i} does not start with a namespace and a colon`;
    queries.push(query);
  }
  if (at !== data.byteLength) return `${data.byteLength - at} bytes after the last query`;
  return { name, queries };
}

// ---------------------------------------------------------------------------------------------
// Byte ranges over pages
// ---------------------------------------------------------------------------------------------

/** The page calls of a volume that reads and writes of byte ranges make. */
type PageCalls = {
  readPages(pages: number[]): Promise<{ pages: Uint8Array[] }>;
  writePages(pages: Array<{ page: number; data: Uint8Array }>): Promise<unknown>;
  zeroPages(first: number, count: number): Promise<unknown>;
  /**
   * Which of pages first..first+count-1 may hold data: the answer covers pages first..end-1
   * (end in (first, first+count]); there, pages not in `ranges` read as zeros.
   */
  pagesWithData(first: number, count: number): Promise<{ end: number; ranges: Array<{ first: number; count: number }> }>;
};

/** One extent of a block status reply: `length` bytes whose `base:allocation` flags are `flags`. */
interface Extent {
  length: number;
  flags: number;
}

/**
 * The `base:allocation` extents of bytes offset..offset+length-1 (a range within the export, as
 * checked for a READ), in order from `offset`: data (flags 0) for the pages that may hold data,
 * NBD_STATE_HOLE | NBD_STATE_ZERO for the pages that read as zeros (never written, or made
 * zeros). The page that holds a byte decides its flags, so an unaligned range starts or ends with
 * part of a page. Adjacent extents with the same flags are one. They cover at most the range:
 * less when the cluster's answer ends early (a shard bounds its answer), when there would be
 * more than BLOCK_STATUS_EXTENTS_MAX, or, with `one` (REQ_ONE), past the first extent; always at
 * least one byte.
 */
async function allocationExtents(volume: PageCalls, pageSize: number, offset: number, length: number, one: boolean): Promise<Extent[]> {
  const first = Math.floor(offset / pageSize);
  const count = Math.floor((offset + length - 1) / pageSize) - first + 1;
  const { end, ranges } = await volume.pagesWithData(first, count);
  // Checked, not trusted: extents built from a wrong answer would tell the client that data is
  // zeros, and a copy that skips them would lose it.
  if (!Number.isSafeInteger(end) || end <= first || end > first + count) throw new Error(`pagesWithData(${first}, ${count}) answered end ${end}`);
  let at = first;
  for (const r of ranges) {
    if (!Number.isSafeInteger(r.first) || !Number.isSafeInteger(r.count) || r.count < 1 || r.first < at || r.first + r.count > end) {
      throw new Error(`pagesWithData(${first}, ${count}) answered a range ${r.first}+${r.count} not ascending within ${first}..${end - 1}`);
    }
    at = r.first + r.count;
  }
  const limit = one ? 1 : BLOCK_STATUS_EXTENTS_MAX;
  const stop = Math.min(offset + length, end * pageSize);
  const extents: Extent[] = [];
  /** Adds pages from..to-1 with `flags`, cut to the range, merged with the last extent when it has the same flags. */
  const add = (from: number, to: number, flags: number): void => {
    const a = Math.max(from * pageSize, offset);
    const b = Math.min(to * pageSize, stop);
    if (b <= a) return;
    const last = extents[extents.length - 1];
    if (last !== undefined && last.flags === flags) last.length += b - a;
    else extents.push({ length: b - a, flags });
  };
  at = first;
  // Past `limit` extents the last one kept is whole (the next has other flags): the rest is dropped.
  for (const r of ranges) {
    if (extents.length > limit) break;
    add(at, r.first, NBD_STATE.HOLE | NBD_STATE.ZERO);
    add(r.first, r.first + r.count, 0);
    at = r.first + r.count;
  }
  add(at, end, NBD_STATE.HOLE | NBD_STATE.ZERO);
  return extents.slice(0, limit);
}

/** Reads pages first..first+count-1 into one buffer, in calls of at most CALL_PAGES_MAX pages. */
async function readRange(volume: PageCalls, pageSize: number, first: number, count: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(count * pageSize);
  for (let at = 0; at < count; at += CALL_PAGES_MAX) {
    const n = Math.min(CALL_PAGES_MAX, count - at);
    const { pages } = await volume.readPages(Array.from({ length: n }, (_, i) => first + at + i));
    pages.forEach((p, i) => {
      // Every byte of `out` is written (it is not zeroed): a page of another size is refused.
      if (p.byteLength !== pageSize) throw new ProtocolError('internal', `page ${first + at + i} came with ${p.byteLength} bytes, not the export's ${pageSize}`);
      out.set(p, (at + i) * pageSize);
    });
  }
  return out;
}

/** Bytes offset..offset+length-1 of a volume. */
async function readBytes(volume: PageCalls, pageSize: number, offset: number, length: number): Promise<Buffer> {
  const first = Math.floor(offset / pageSize);
  const last = Math.floor((offset + length - 1) / pageSize);
  const pages = await readRange(volume, pageSize, first, last - first + 1);
  const start = offset - first * pageSize;
  return pages.subarray(start, start + length);
}

/**
 * Writes `data` (or zeros, without it) at offset..offset+length-1. Whole pages are written as
 * they are, or made zeros with one `zeroPages` call; a page covered in part is read, patched and
 * written whole (the caller holds its lock). Calls of at most CALL_PAGES_MAX pages, one after
 * another.
 */
async function writeBytes(volume: PageCalls, pageSize: number, offset: number, length: number, data: Buffer | undefined, noHole = false): Promise<void> {
  const first = Math.floor(offset / pageSize);
  const last = Math.floor((offset + length - 1) / pageSize);
  const end = offset + length;
  // The edge pages covered in part, read once (both in one call).
  const partial = [first, last].filter((p, i, all) => all.indexOf(p) === i && (offset > p * pageSize || end < (p + 1) * pageSize));
  const edges = new Map<number, Uint8Array>();
  if (partial.length > 0) {
    const { pages } = await volume.readPages(partial);
    partial.forEach((p, i) => edges.set(p, Uint8Array.from(pages[i]!)));
  }
  if (data === undefined) {
    for (const [p, edge] of edges) {
      const pageStart = p * pageSize;
      edge.fill(0, Math.max(offset, pageStart) - pageStart, Math.min(end, pageStart + pageSize) - pageStart);
    }
    if (edges.size > 0) await volume.writePages([...edges].map(([page, edge]) => ({ page, data: edge })));
    // The whole pages: those between the edges covered in part.
    const from = edges.has(first) ? first + 1 : first;
    const to = edges.has(last) ? last - 1 : last;
    if (to < from) return;
    if (!noHole) return void (await volume.zeroPages(from, to - from + 1));
    // NBD_CMD_FLAG_NO_HOLE: the range stays allocated, so its pages are written, as zeros.
    const zeros = new Uint8Array(pageSize);
    for (let at = from; at <= to; at += CALL_PAGES_MAX) {
      const upTo = Math.min(to, at + CALL_PAGES_MAX - 1);
      await volume.writePages(Array.from({ length: upTo - at + 1 }, (_, i) => ({ page: at + i, data: zeros })));
    }
    return;
  }
  for (let at = first; at <= last; at += CALL_PAGES_MAX) {
    const upTo = Math.min(last, at + CALL_PAGES_MAX - 1);
    const pages = [];
    for (let p = at; p <= upTo; p++) {
      const pageStart = p * pageSize;
      const edge = edges.get(p);
      if (edge !== undefined) {
        const from = Math.max(offset, pageStart);
        const to = Math.min(end, pageStart + pageSize);
        edge.set(data.subarray(from - offset, to - offset), from - pageStart);
        pages.push({ page: p, data: edge });
      } else {
        pages.push({ page: p, data: data.subarray(pageStart - offset, pageStart - offset + pageSize) });
      }
    }
    await volume.writePages(pages);
  }
}
