/**
 * A small NBD client speaking the protocol byte by byte, for the tests of the NBD export
 * (test/cluster/nbd.test.ts) and the soak's block workload: fixed newstyle negotiation, options
 * with their replies, and a session in transmission matching simple and structured replies to
 * their requests in any order.
 */
import { strict as assert } from 'node:assert';
import * as net from 'node:net';
import { NBD_CMD, NBD_INFO, NBD_OPT, NBD_REP, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE } from '../../cluster/nbd';

export class Peer {
  readonly socket: net.Socket;
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  ended = false;
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiter?.();
    });
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.ended = true;
        this.waiter?.();
        resolve();
      }),
    );
    socket.on('error', () => undefined);
  }

  static connect(port: number): Promise<Peer> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new Peer(s)));
      s.once('error', reject);
    });
  }

  async read(n: number): Promise<Buffer> {
    while (this.buf.byteLength < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buf.byteLength} of ${n} bytes`);
      await new Promise<void>((r) => (this.waiter = r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  write(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts));
  }

  /** The connection is closed by the server within `ms`, with nothing more sent. */
  async expectClosed(ms = 3000): Promise<void> {
    const timer = setTimeout(() => this.socket.destroy(new Error('not closed')), ms);
    await this.closed;
    clearTimeout(timer);
    assert.equal(this.buf.byteLength, 0, 'nothing more sent');
    assert.ok(this.socket.destroyed && this.socket.readableEnded, 'closed by the server, not by the timeout');
  }

  close(): void {
    this.socket.destroy();
  }
}

export const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
};
export const u16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n, 0);
  return b;
};
export const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1');

/** Reads the greeting and sends the client flags (default fixed newstyle + no zeroes). */
export async function greet(port: number, clientFlags = 3): Promise<Peer> {
  const p = await Peer.connect(port);
  const g = await p.read(18);
  assert.equal(g.subarray(0, 8).toString('latin1'), 'NBDMAGIC');
  assert.equal(g.subarray(8, 16).toString('latin1'), 'IHAVEOPT', 'newstyle only: no oldstyle export size in the greeting');
  assert.equal(g.readUInt16BE(16), 3, 'FIXED_NEWSTYLE | NO_ZEROES');
  p.write(u32(clientFlags));
  return p;
}

export interface OptionReply {
  type: number;
  data: Buffer;
}

/** Sends an option and reads its replies up to the last (ACK or an error). */
export async function option(p: Peer, opt: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
  p.write(IHAVEOPT, u32(opt), u32(data.byteLength), data);
  const replies: OptionReply[] = [];
  for (;;) {
    const h = await p.read(20);
    assert.equal(h.readBigUInt64BE(0), 0x3e889045565a9n, 'option reply magic');
    assert.equal(h.readUInt32BE(8), opt, 'the option answered');
    const type = h.readUInt32BE(12);
    replies.push({ type, data: Buffer.from(await p.read(h.readUInt32BE(16))) });
    if (type !== NBD_REP.SERVER && type !== NBD_REP.INFO && type !== NBD_REP.META_CONTEXT) return replies;
  }
}

/** The data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export function metaData(name: string, queries: string[]): Buffer {
  const str = (x: string): Buffer => Buffer.concat([u32(Buffer.byteLength(x)), Buffer.from(x, 'utf8')]);
  return Buffer.concat([str(name), u32(queries.length), ...queries.map(str)]);
}

export function goData(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  return Buffer.concat([u32(n.byteLength), n, u16(infos.length), ...infos.map(u16)]);
}

export interface Chunk {
  flags: number;
  type: number;
  payload: Buffer;
}

export interface Reply {
  error: number;
  data: Buffer;
  /** A simple reply (else the chunks of a structured one). */
  simple: boolean;
  chunks: Chunk[];
  /** The message of the structured reply's error chunk. */
  message?: string;
}

/** A connection in transmission: requests with cookies, replies (simple or structured) matched to them in any order. */
export class Session {
  private cookie = 0n;
  private readonly pending = new Map<bigint, { type: number; offset: number; length: number; chunks: Chunk[]; resolve: (r: Reply) => void }>();
  readonly order: bigint[] = [];
  private reading = false;
  /**
   * Outside a test (the soak): the connection's failure (closed, or a reply that breaks the
   * protocol) answers every request waiting, and each sent after, with `error` -1 and the reason
   * as `message`, instead of failing as an unhandled rejection (which a test runner reports).
   */
  failRequestsOnError = false;
  private broken: string | undefined;

  constructor(readonly peer: Peer, readonly size: number, readonly flags: number) {}

  /**
   * GO to an export, with structured replies negotiated first when asked (or when `meta` is
   * given), and with `meta`, NBD_OPT_SET_META_CONTEXT of those queries for the export.
   */
  static async open(port: number, name: string, opts: { structured?: boolean; meta?: string[] } = {}): Promise<Session> {
    const p = await greet(port);
    if (opts.structured === true || opts.meta !== undefined) assert.deepEqual((await option(p, NBD_OPT.STRUCTURED_REPLY)).map((r) => r.type), [NBD_REP.ACK]);
    if (opts.meta !== undefined) assert.equal((await option(p, NBD_OPT.SET_META_CONTEXT, metaData(name, opts.meta))).at(-1)!.type, NBD_REP.ACK);
    return Session.go(p, name);
  }

  static async go(p: Peer, name: string): Promise<Session> {
    const replies = await option(p, NBD_OPT.GO, goData(name));
    assert.equal(replies.at(-1)!.type, NBD_REP.ACK, replies.at(-1)!.data.toString());
    const exp = replies.find((r) => r.type === NBD_REP.INFO && r.data.readUInt16BE(0) === NBD_INFO.EXPORT)!;
    return new Session(p, Number(exp.data.readBigUInt64BE(2)), exp.data.readUInt16BE(10));
  }

  send(type: number, offset: number, length: number, opts: { data?: Buffer; flags?: number } = {}): { cookie: bigint; reply: Promise<Reply> } {
    const cookie = ++this.cookie;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(opts.flags ?? 0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    const reply = new Promise<Reply>((resolve) => this.pending.set(cookie, { type, offset, length, chunks: [], resolve }));
    this.peer.write(h, opts.data ?? Buffer.alloc(0));
    if (this.broken !== undefined) {
      this.pending.get(cookie)!.resolve({ error: -1, data: Buffer.alloc(0), simple: true, chunks: [], message: this.broken });
      this.pending.delete(cookie);
    } else if (type !== NBD_CMD.DISC) {
      const reading = this.readReplies();
      if (this.failRequestsOnError) {
        reading.catch((e: unknown) => {
          this.broken = e instanceof Error ? e.message : String(e);
          for (const entry of this.pending.values()) entry.resolve({ error: -1, data: Buffer.alloc(0), simple: true, chunks: [], message: this.broken });
          this.pending.clear();
        });
      } else void reading;
    }
    return { cookie, reply };
  }

  request(type: number, offset: number, length: number, opts: { data?: Buffer; flags?: number } = {}): Promise<Reply> {
    return this.send(type, offset, length, opts).reply;
  }

  private async readReplies(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      while (this.pending.size > 0) {
        const magic = (await this.peer.read(4)).readUInt32BE(0);
        if (magic === 0x67446698) {
          const h = await this.peer.read(12);
          const cookie = h.readBigUInt64BE(4);
          const entry = this.pending.get(cookie);
          assert.ok(entry !== undefined, `a reply to cookie ${cookie}, which is not pending`);
          this.pending.delete(cookie);
          this.order.push(cookie);
          const error = h.readUInt32BE(0);
          const dataLength = entry.type === NBD_CMD.READ && error === 0 ? entry.length : 0;
          entry.resolve({ error, data: Buffer.from(await this.peer.read(dataLength)), simple: true, chunks: [] });
          continue;
        }
        assert.equal(magic, 0x668e33ef, 'a simple or structured reply magic');
        const h = await this.peer.read(16);
        const cookie = h.readBigUInt64BE(4);
        const entry = this.pending.get(cookie);
        assert.ok(entry !== undefined, `a chunk for cookie ${cookie}, which is not pending`);
        const chunk = { flags: h.readUInt16BE(0), type: h.readUInt16BE(2), payload: Buffer.from(await this.peer.read(h.readUInt32BE(12))) };
        entry.chunks.push(chunk);
        if ((chunk.flags & NBD_REPLY_FLAG_DONE) === 0) continue;
        this.pending.delete(cookie);
        this.order.push(cookie);
        const reply: Reply = { error: 0, data: Buffer.alloc(0), simple: false, chunks: entry.chunks };
        const error = entry.chunks.find((c) => (c.type & 0x8000) !== 0);
        if (error !== undefined) {
          reply.error = error.payload.readUInt32BE(0);
          reply.message = error.payload.subarray(6, 6 + error.payload.readUInt16BE(4)).toString('utf8');
        } else if (entry.type === NBD_CMD.READ) {
          // The content chunks, each within the request, put in place.
          reply.data = Buffer.alloc(entry.length);
          for (const c of entry.chunks.filter((x) => x.type === NBD_REPLY_TYPE.OFFSET_DATA)) {
            const at = Number(c.payload.readBigUInt64BE(0)) - entry.offset;
            assert.ok(at >= 0 && at + c.payload.byteLength - 8 <= entry.length, 'a content chunk within the request');
            c.payload.copy(reply.data, at, 8);
          }
        }
        entry.resolve(reply);
      }
    } finally {
      this.reading = false;
    }
  }
}
