import { strict as assert } from 'node:assert';
import {
  API_READ_TRIES,
  API_READ_TRY_MS_MIN,
  API_READ_VERBS,
  CREATE_MS_PER_SHARD_REPLICA,
  LIST_RESTARTS_MAX,
  BRANCH_COPY_BYTES_PER_MS,
  MOVE_TIMEOUT_MS_MIN,
  CALL_PAGES_MAX,
  CLUSTER_DEFAULT,
  GEOMETRY_RECHECK_MS,
  NoRespondersError,
  REQUESTS_IN_FLIGHT_MAX,
  SHARD_CHECK_PAGE_STEPS_MAX,
  SHARD_READ_TRIES,
  SHARD_WRITE_TRIES,
  WRITE_TRY_MS_MIN,
  SHARD_CHECK_RESTARTS_MAX,
  SHARD_CHECK_STEPS_MAX,
  connect,
  createClient,
  pagesPerRequest,
  type ClientTransport,
  type TransportRequestOptions,
} from '../../cluster/client';
import { MESSAGE_BYTES_MAX, decode, encode } from '../../messages/codec';
import { ProtocolError, errorReply } from '../../messages/errors';
import { HEADER_DEADLINE, HEADER_SCHEMA, HEADER_TYPE, SCHEMA_VERSION, readHeaders } from '../../messages/headers';
import { PAGES_PER_REQUEST_MAX, REQUEST_DATA_BYTES_MAX, VOLUMES_PER_LIST_MAX, shardOfPage } from '../../messages/api';
import type { ApiVerb, VolumeInfo } from '../../messages/api';
import { waitFor } from '../support/wait';
import { timerDelaysDuring } from '../support/manual-clock';
import {
  validateShardFlushRequest,
  validateShardRead,
  validateShardReadRequest,
  validateShardWrite,
  validateShardWriteRequest,
} from '../../messages/validate';
import { SHARD_LEADERS_TOKEN, parseShardSubject } from '../../messages/subjects';
import { rejectsWith } from '../support/expect';

const CLUSTER = 'test';
/** Shard requests sent again when a try gets no answer: they change nothing. */
const SHARD_READ_TYPES: ReadonlySet<string> = new Set(['shard.read', 'shard.map', 'shard.flush']);
const NOW = 1_700_000_000_000;
/** A request id the client makes (newRequestId): a random UUID. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Seen {
  subject: string;
  body: unknown;
  headers: Record<string, string>;
  /** The headers object the client gave, as given. */
  given: Readonly<Record<string, string>>;
  timeoutMs: number;
  bytes: number;
}

type Handler = (subject: string, body: unknown, seen: Seen) => unknown | Promise<unknown>;

/**
 * Runs `fn` on a clock that only its timers move: each timer set while it runs fires at once,
 * having first moved the clock (`move`) by its delay; one cleared before (a bound on a wait that
 * ended) never fires and moves nothing. Returns the timers that fired: when (`clock()` as each
 * was set) and for how long.
 */
async function timersFiredAtOnce(clock: () => number, move: (ms: number) => void, fn: () => Promise<unknown>): Promise<Array<{ atMs: number; ms: number }>> {
  const fired: Array<{ atMs: number; ms: number }> = [];
  const real = globalThis.setTimeout;
  globalThis.setTimeout = ((cb: () => void, ms?: number) => {
    const atMs = clock();
    return real(() => {
      fired.push({ atMs, ms: ms ?? 0 });
      move(ms ?? 0);
      cb();
    }, 0);
  }) as typeof globalThis.setTimeout;
  try {
    await fn();
  } finally {
    globalThis.setTimeout = real;
  }
  return fired;
}

/** A transport that decodes every request, records it and answers through `handler`. */
class FakeTransport implements ClientTransport {
  maxPayloadBytes = MESSAGE_BYTES_MAX;
  seen: Seen[] = [];
  inFlight = 0;
  inFlightMax = 0;
  closed = false;
  closeHangs = false;
  reconnectedAtMs: number | undefined;
  constructor(public handler: Handler) {}

  async request(subject: string, data: Uint8Array, options: TransportRequestOptions): Promise<Uint8Array> {
    const seen: Seen = { subject, body: decode(data), headers: { ...options.headers }, given: options.headers, timeoutMs: options.timeoutMs, bytes: data.byteLength };
    this.seen.push(seen);
    this.inFlight++;
    this.inFlightMax = Math.max(this.inFlightMax, this.inFlight);
    try {
      const reply = await this.handler(subject, seen.body, seen);
      return reply instanceof Uint8Array ? reply : encode(reply);
    } finally {
      this.inFlight--;
    }
  }

  close(): Promise<void> {
    this.closed = true;
    return this.closeHangs ? new Promise<void>(() => undefined) : Promise.resolve();
  }

  shardRequests(): Seen[] {
    return this.seen.filter((s) => s.subject.includes('.shard.'));
  }
  apiRequests(verb?: string): Seen[] {
    // The verb's subject, or its `every` subject (a try after the first).
    return this.seen.filter((s) => s.subject.includes('.api.') && (verb === undefined || s.subject.endsWith(`.api.${verb}`) || s.subject.endsWith(`.api.${verb}.every`)));
  }
}

function volume(overrides: Partial<VolumeInfo> = {}): VolumeInfo {
  return {
    name: 'vol',
    id: 'v1',
    pageCount: 1000,
    pageSize: 4096,
    shards: 4,
    stripePages: 2,
    replicas: 1,
    createdAt: NOW,
    ...overrides,
  };
}

/**
 * An in-memory cluster behind the fake transport: answers volume.info from `volumes` and shard
 * requests from a page map, checking every request with the server's validators (so a misrouted
 * page, a bad header or an oversize request fails the test).
 */
class FakeCluster {
  volumes = new Map<string, VolumeInfo>();
  pages = new Map<string, Uint8Array>();
  lsns = new Map<string, number>();
  transport: FakeTransport;
  /** Called before a shard request is answered; may throw or return an error reply. */
  shardHook: ((shard: number, seen: Seen) => unknown) | undefined;

  constructor(info: VolumeInfo = volume()) {
    this.volumes.set(info.name, info);
    this.transport = new FakeTransport((subject, body, seen) => this.handle(subject, body, seen));
  }

  private handle(subject: string, body: unknown, seen: Seen): unknown {
    const headers = readHeaders({ get: (name: string) => seen.headers[name] ?? '' });
    // A read of the API or of a shard, and a flush, are tried with a part of the call's time
    // (StrataClient.sendInTries); the rest carry the call's deadline.
    if (API_READ_VERBS.has(headers.type as ApiVerb) || SHARD_READ_TYPES.has(headers.type!)) {
      assert.ok(headers.deadlineMs! >= NOW + API_READ_TRY_MS_MIN && headers.deadlineMs! <= NOW + 10_000, `deadline ${headers.deadlineMs}`);
    } else assert.equal(headers.deadlineMs, NOW + 10_000);
    const apiPrefix = `strata.${CLUSTER}.api.`;
    if (subject.startsWith(apiPrefix)) {
      assert.equal(headers.type, subject.slice(apiPrefix.length));
      if (headers.type === 'volume.info') {
        const info = this.volumes.get((body as { name: string }).name);
        return info === undefined ? errorReply(new ProtocolError('not_found', 'no such volume')) : info;
      }
      return errorReply(new ProtocolError('internal', `fake cluster does not answer ${subject}`));
    }
    // A shard's subject, or its leaders subject (every leader takes the request).
    const { cluster, volumeId, shard } = parseShardSubject(subject.endsWith(`.${SHARD_LEADERS_TOKEN}`) ? subject.slice(0, -SHARD_LEADERS_TOKEN.length - 1) : subject);
    assert.equal(cluster, CLUSTER);
    const info = [...this.volumes.values()].find((v) => v.id === volumeId);
    if (info === undefined) throw new NoRespondersError(subject);
    const hooked = this.shardHook?.(shard, seen);
    if (hooked !== undefined) return hooked;
    const key = `${volumeId}.${shard}`;
    const lsn = (this.lsns.get(key) ?? 0) + 1;
    switch (headers.type) {
      case 'shard.write': {
        const req = validateShardWrite(validateShardWriteRequest(body), { ...info, shard });
        for (const { page, data } of req.pages) this.pages.set(`${volumeId}:${page}`, Uint8Array.from(data));
        this.lsns.set(key, lsn);
        return { lsn, term: 1 };
      }
      case 'shard.read': {
        const req = validateShardRead(validateShardReadRequest(body), { ...info, shard });
        return {
          pages: req.pages.map((page) => this.pages.get(`${volumeId}:${page}`) ?? new Uint8Array(info.pageSize)),
          lsn: this.lsns.get(key) ?? 0,
        };
      }
      case 'shard.flush':
        validateShardFlushRequest(body);
        return { lsn: this.lsns.get(key) ?? 0 };
      case 'shard.zero': {
        const { first, count } = body as { first: number; count: number };
        for (let page = first; page < first + count; page++) this.pages.delete(`${volumeId}:${page}`);
        this.lsns.set(key, lsn);
        return { lsn, term: 1 };
      }
      default:
        throw new Error(`unexpected type ${headers.type}`);
    }
  }

  client(timeoutMs = 10_000) {
    return createClient(this.transport, { cluster: CLUSTER, timeoutMs, nowMs: () => NOW });
  }
}

/** Shard 1 of `fc` reaches no leader once (no responders); `meanwhile` runs then (the catalog changing, say). */
function noLeaderOnce(fc: FakeCluster, meanwhile: () => void = () => undefined): void {
  let misses = 1;
  fc.shardHook = (shard, seen) => {
    if (shard === 1 && misses-- > 0) {
      meanwhile();
      throw new NoRespondersError(seen.subject);
    }
    return undefined;
  };
}

/** The controller's answers to each operator's verb, for the tests of how those requests are sent. */
const OPERATOR_ANSWERS: Record<string, unknown> = {
  'shard.move': { volume: 'db', shard: 1, members: ['n1', 'n3', 'n4'], term: 3, lsn: 17 },
  'node.drain': { node: 'n2', draining: true, replicas: 4 },
  rebalance: { rebalancing: false, nodes: [] },
  controllers: { node: 'n1', members: ['n1', 'n2', 'n4'], prior: ['n1', 'n2', 'n3'], changed: true, term: 5, lsn: 40, left: ['n3'], leaving: [] },
  'catalog.recover': { applied: false, epoch: 4, nodesAsked: 3, nodesFailed: [], recovered: [], skipped: [], recoveredCount: 0, skippedCount: 0 },
};

function pageData(page: number, size = 4096): Uint8Array {
  const data = new Uint8Array(size);
  data.fill(page % 251);
  data[0] = page & 0xff;
  data[1] = (page >> 8) & 0xff;
  return data;
}

function throwsWith(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => err instanceof ProtocolError && err.code === code);
}

describe('cluster/client (fake transport)', () => {
  describe('a reply lost with a dropped NATS connection', () => {
    const dropped = (): unknown => {
      throw new ProtocolError('unavailable', 'request failed: the connection to NATS dropped before the reply', { disconnected: true });
    };

    it('a read is sent again (reads have no effect to repeat)', async () => {
      const fc = new FakeCluster();
      let drops = 1;
      fc.shardHook = () => (drops-- > 0 ? dropped() : undefined);
      const got = await fc.client().volume('vol').readPages([3]);
      assert.equal(got.pages.length, 1);
      assert.equal(fc.transport.shardRequests().length, 2, 'the read went twice');
    });

    it('a write is sent again with its write id and sentMs (a leader that took it answers with its record); lost in every try, its outcome is unknown: timeout, not unavailable (which reads as "retry")', async () => {
      const once = new FakeCluster(volume({ shards: 1 }));
      let drops = 1;
      once.shardHook = () => (drops-- > 0 ? dropped() : undefined);
      assert.equal((await once.client().volume('vol').write(3, pageData(3))).lsn, 1);
      const [first, again] = once.transport.shardRequests().map((x) => x.body as { writeId: Uint8Array; sentMs?: number });
      assert.equal(once.transport.shardRequests().length, 2, 'the write went twice');
      assert.deepEqual([first!.sentMs, again!.writeId], [undefined, first!.writeId]);
      assert.equal(typeof again!.sentMs, 'number', 'the try after the lost one names when the first went');
      const fc = new FakeCluster(volume({ shards: 1 }));
      fc.shardHook = () => dropped();
      await assert.rejects(fc.client().volume('vol').write(3, pageData(3)), (e: ProtocolError) =>
        e.code === 'timeout' && e.details?.['disconnected'] === true && e.details?.['code'] === 'unavailable' && /may or may not be committed/.test(e.message));
      assert.equal(fc.transport.shardRequests().length, SHARD_WRITE_TRIES, 'each of its tries went');
    });
  });

  describe('a try never sent: the NATS connection down for the whole of its time', () => {
    /** What the transport answers a request it waited with for the reconnect, in vain (RequestMux, whileDisconnected 'wait'). */
    const unsent = (seen: Seen): never => {
      throw new ProtocolError('unavailable', `request on ${seen.subject} not sent: disconnected from NATS for its whole ${seen.timeoutMs} ms`, { subject: seen.subject, notSent: true });
    };

    it('a write is tried again within its deadline, as a first send (no sentMs: nothing of it went out)', async () => {
      const fc = new FakeCluster(volume({ shards: 1 }));
      let down = 1;
      fc.shardHook = (_shard, seen) => (down-- > 0 ? unsent(seen) : undefined);
      const r = await fc.client().volume('vol').write(3, pageData(3));
      assert.equal(r.lsn, 1);
      const sent = fc.transport.shardRequests();
      assert.equal(sent.length, 2, 'the try after the unsent one went out');
      assert.deepEqual(sent.map((x) => (x.body as { sentMs?: number }).sentMs), [undefined, undefined], 'the try that went out is a first send');
      assert.deepEqual(sent.map((x) => x.timeoutMs), [WRITE_TRY_MS_MIN, 5000]);
    });

    it('a write never sent by its deadline fails unavailable with details.notSent (nothing went out), after its tries', async () => {
      const fc = new FakeCluster(volume({ shards: 1 }));
      fc.shardHook = (_shard, seen) => unsent(seen);
      const e = await rejectsWith(fc.client().volume('vol').write(3, pageData(3)), 'unavailable', /not sent/);
      assert.equal(e.details?.['notSent'], true);
      assert.equal(fc.transport.shardRequests().length, SHARD_WRITE_TRIES);
    });

    it('a write one try of which got no answer, its later tries never sent: timeout (outcome unknown)', async () => {
      const fc = new FakeCluster(volume({ shards: 1 }));
      let silent = 1;
      fc.shardHook = (_shard, seen) => {
        if (silent-- > 0) throw new ProtocolError('timeout', `no reply on ${seen.subject} within ${seen.timeoutMs} ms`);
        return unsent(seen);
      };
      await assert.rejects(fc.client().volume('vol').write(3, pageData(3)), (e: ProtocolError) => e.code === 'timeout' && e.details?.['notSent'] === true && /may or may not be committed/.test(e.message));
    });

    it('a shard read, an API read and a change with a request id are tried again within the deadline', async () => {
      const fc = new FakeCluster(volume({ shards: 1 }));
      await fc.client().volume('vol').write(3, pageData(3));
      let down = 1;
      fc.shardHook = (_shard, seen) => (down-- > 0 ? unsent(seen) : undefined);
      assert.deepEqual((await fc.client().volume('vol').readPages([3])).pages[0], pageData(3));
      assert.equal(fc.transport.shardRequests().filter((r) => r.headers[HEADER_TYPE] === 'shard.read').length, 2);
      const tries = new Map<string, number>();
      const t = new FakeTransport((subject, _body, seen) => {
        const n = (tries.get(subject.replace(/\.every$/, '')) ?? 0) + 1;
        tries.set(subject.replace(/\.every$/, ''), n);
        return n === 1 ? unsent(seen) : volume({ name: 'db' });
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 9000, nowMs: () => NOW });
      assert.equal((await client.volumeInfo('db')).name, 'db');
      assert.equal((await client.createVolume({ name: 'db', pageCount: 10 })).name, 'db');
      assert.equal(t.apiRequests('volume.info').length, 2);
      const creates = t.apiRequests('volume.create');
      assert.equal(creates.length, 2);
      assert.deepEqual(creates[1]!.body, creates[0]!.body, 'the same request id');
    });
  });

  describe('an API request whose reply was lost with a dropped NATS connection', () => {
    const dropped = (subject: string): never => {
      throw new ProtocolError('unavailable', `request on ${subject} failed: the connection to NATS dropped before the reply`, { subject, disconnected: true });
    };

    it('a change whose first reply was lost ends timeout, outcome unknown, naming its request id, whatever its later tries met: never sent, or the client closed', async () => {
      // Its later tries never went out (the connection down for their whole time).
      const unsent = new FakeTransport((subject) => {
        if (unsent.apiRequests('volume.create').length === 1) dropped(subject);
        throw new ProtocolError('unavailable', `request on ${subject} not sent: disconnected from NATS for its whole try`, { subject, notSent: true });
      });
      const client = createClient(unsent, { cluster: CLUSTER, timeoutMs: 9000, nowMs: () => NOW });
      const e = await rejectsWith(client.createVolume({ name: 'db', pageCount: 10 }), 'timeout', /the change may or may not have been made/);
      const first = unsent.apiRequests('volume.create')[0]!.body as { requestId: string };
      assert.deepEqual([e.details?.['outcomeUnknown'], e.details?.['code'], e.details?.['requestId']], [true, 'unavailable', first.requestId]);
      assert.ok(unsent.apiRequests('volume.create').length > 1, 'it was tried again');
      // The client closed while its first try waited: not tried again, and not said undone.
      let closing: () => void = () => undefined;
      const closed = new Promise<void>((resolve) => (closing = resolve));
      const pending = new FakeTransport(async (subject) => {
        await closed;
        return dropped(subject);
      });
      const other = createClient(pending, { cluster: CLUSTER, timeoutMs: 9000, nowMs: () => NOW });
      const create = other.createVolume({ name: 'db', pageCount: 10 });
      const moving = other.moveReplica('db', 1, { from: 'n2', to: 'n4' });
      await waitFor('both sent', () => pending.seen.length === 2);
      const closeDone = other.close();
      closing();
      await closeDone;
      for (const call of [create, moving]) {
        const err = await rejectsWith(call, 'timeout', /may or may not have been made/);
        assert.equal(err.details?.['outcomeUnknown'], true);
      }
      assert.equal(pending.seen.length, 2, 'nothing sent after the close');
    });

    it('an operator\'s request whose reply was lost, then never sent again, ends timeout, outcome unknown (not unavailable: the move may be under way)', async () => {
      let tries = 0;
      const t = new FakeTransport((subject) => {
        if (++tries === 1) dropped(subject);
        throw new ProtocolError('unavailable', `request on ${subject} not sent: disconnected from NATS for its whole try`, { subject, notSent: true });
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 9000, nowMs: () => NOW });
      const e = await rejectsWith(client.moveReplica('db', 1, { from: 'n2', to: 'n4' }), 'timeout', /may or may not have been made/);
      assert.deepEqual([e.details?.['outcomeUnknown'], e.details?.['code'], tries], [true, 'unavailable', 2]);
    });

    it('a read and a change with a request id are sent again (the change with the same request id)', async () => {
      const tries = new Map<string, number>();
      const t = new FakeTransport((subject) => {
        const verb = subject.replace(/\.every$/, '');
        const n = (tries.get(verb) ?? 0) + 1;
        tries.set(verb, n);
        if (n === 1) dropped(subject);
        return verb.endsWith('.volume.delete') ? { deleted: true } : volume({ name: 'db' });
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 9000, nowMs: () => NOW });
      assert.equal((await client.volumeInfo('db')).name, 'db');
      assert.equal((await client.createVolume({ name: 'db', pageCount: 10 })).name, 'db');
      await client.deleteVolume('db');
      for (const verb of ['volume.info', 'volume.create', 'volume.delete']) assert.equal(t.apiRequests(verb).length, 2, verb);
      for (const verb of ['volume.create', 'volume.delete']) {
        const [first, again] = t.apiRequests(verb);
        assert.deepEqual(again!.body, first!.body, `${verb}: the same request id`);
      }
    });

    it('a change lost so in its every try is timeout (outcome unknown) naming its request id; one without a request id, sent once, is timeout too', async () => {
      const t = new FakeTransport((subject) => dropped(subject));
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 9000, nowMs: () => NOW });
      const e = await rejectsWith(client.createVolume({ name: 'db', pageCount: 10 }), 'timeout', /may or may not have been made/);
      assert.equal(e.details?.['outcomeUnknown'], true);
      assert.equal(e.details?.['code'], 'unavailable');
      assert.match(String(e.details?.['requestId']), UUID);
      assert.equal(e.details?.['requestId'], (t.apiRequests('volume.create')[0]!.body as { requestId: string }).requestId);
      assert.equal(t.apiRequests('volume.create').length, API_READ_TRIES);
      const once = await rejectsWith(client.api('volume.delete', { name: 'db' }, NOW + 9000), 'timeout', /may or may not have been made/);
      assert.equal(once.details?.['outcomeUnknown'], true);
      assert.equal(once.details?.['requestId'], undefined);
      assert.equal(t.apiRequests('volume.delete').length, 1, 'without a request id: sent once');
      // A read is not a change: its failure stays as it was.
      await rejectsWith(client.volumeInfo('db'), 'unavailable');
    });

    it('a change no try of which was answered names its request id in the timeout', async () => {
      const t = new FakeTransport((subject) => {
        throw new ProtocolError('timeout', `no reply on ${subject}`);
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 9000, nowMs: () => NOW });
      const e = await rejectsWith(client.deleteVolume('db', { requestId: 'drop-db' }), 'timeout');
      assert.equal(e.details?.['requestId'], 'drop-db');
    });
  });

  describe('a reply to a write that cannot be read (its leader took the write)', () => {
    const unreadable: Record<string, () => Uint8Array> = {
      'bad CBOR': () => Uint8Array.of(0xff, 0x00, 0x13, 0x37),
      empty: () => new Uint8Array(0),
      'a reply that does not validate': () => encode({ lsn: 'seven' }),
      'an error code this client does not know': () => encode({ error: { code: 'commit_lost', message: 'from a newer server' } }),
      'a malformed error reply': () => encode({ error: 5 }),
    };
    for (const [what, reply] of Object.entries(unreadable)) {
      it(`${what}: a write or a range of zeros is timeout (outcome unknown), the original error in details, not internal; sent once`, async () => {
        const fc = new FakeCluster(volume({ shards: 1 }));
        fc.shardHook = () => reply();
        const vol = fc.client().volume('vol');
        for (const call of [() => vol.write(3, pageData(3)), () => vol.zeroPages(0, 4)]) {
          const before = fc.transport.shardRequests().length;
          const e = await rejectsWith(call(), 'timeout', /may or may not be committed/);
          assert.equal(e.details?.['outcomeUnknown'], true);
          assert.equal(e.details?.['code'], 'internal');
          assert.equal(typeof e.details?.['reason'], 'string');
          assert.equal(fc.transport.shardRequests().length - before, 1, 'final: not sent again');
        }
        // A read's is internal, as before: it changed nothing.
        await rejectsWith(vol.readPages([3]), 'internal');
      });
    }

    it('a well-formed error reply to a write keeps its code', async () => {
      const fc = new FakeCluster(volume({ shards: 1 }));
      fc.shardHook = () => errorReply(new ProtocolError('internal', 'a bug'));
      await rejectsWith(fc.client().volume('vol').write(3, pageData(3)), 'internal', /a bug/);
    });
  });

  describe('a shard request that gets no answer (its leader killed or frozen with it)', () => {
    const noReply = (shard: number, seen: Seen): unknown => {
      throw new ProtocolError('timeout', `no reply on ${seen.subject} within ${seen.timeoutMs} ms`);
    };

    it('a read or a flush is sent again within the call\'s deadline, each try waiting its part, and the next leader answers it', async () => {
      const fc = new FakeCluster(volume({ shards: 1 }));
      await fc.client().volume('vol').write(3, pageData(3));
      let silent = 1;
      fc.shardHook = (shard, seen) => (silent-- > 0 ? noReply(shard, seen) : undefined);
      const got = await fc.client().volume('vol').readPages([3]);
      assert.deepEqual(got.pages[0], pageData(3));
      const reads = fc.transport.shardRequests().filter((r) => r.headers[HEADER_TYPE] === 'shard.read');
      // The first try 1 s, the second a quarter of what is left (the fake clock stands still),
      // each its own Strata-Deadline: the shard stops waiting when the client does.
      assert.deepEqual(reads.map((r) => [Number(r.headers[HEADER_DEADLINE]) - NOW, r.timeoutMs]), [[1000, 1000], [2500, 2500]]);
      // The first try to one leader (the shard's queue group), the second to every leader: a
      // frozen one keeps its share of the queue group while the shard elects the next one.
      assert.deepEqual(reads.map((r) => r.subject), ['strata.test.shard.v1.0', 'strata.test.shard.v1.0.leaders']);
      silent = 1;
      assert.equal((await fc.client().volume('vol').flush()).lsn, 1);
      const flushes = fc.transport.shardRequests().filter((r) => r.headers[HEADER_TYPE] === 'shard.flush');
      assert.deepEqual(flushes.map((r) => r.subject), ['strata.test.shard.v1.0', 'strata.test.shard.v1.0.leaders'], 'the flush went twice, the second time to every leader');
    });

    it('a write or a range of zeros goes to every leader of its shards (the shards\' leaders subjects)', async () => {
      const fc = new FakeCluster(volume({ shards: 2 }));
      const vol = fc.client().volume('vol');
      await vol.writePages([{ page: 3, data: pageData(3) }, { page: 20, data: pageData(20) }]);
      await vol.zeroPages(0, 40);
      assert.deepEqual(fc.transport.shardRequests().map((r) => `${r.headers[HEADER_TYPE]} ${r.subject}`).sort(), [
        'shard.write strata.test.shard.v1.0.leaders',
        'shard.write strata.test.shard.v1.1.leaders',
        'shard.zero strata.test.shard.v1.0.leaders',
        'shard.zero strata.test.shard.v1.1.leaders',
      ]);
      assert.deepEqual((await vol.readPages([3, 20])).pages, [new Uint8Array(4096), new Uint8Array(4096)], 'made zeros after');
    });

    it('a read no try gets an answer to is timeout after SHARD_READ_TRIES tries, the last until the deadline', async () => {
      const fc = new FakeCluster(volume({ shards: 1 }));
      fc.shardHook = noReply;
      await rejectsWith(fc.client(9000).volume('vol').readPages([3]), 'timeout');
      const reads = fc.transport.shardRequests();
      assert.equal(reads.length, SHARD_READ_TRIES);
      assert.deepEqual(reads.map((r) => Number(r.headers[HEADER_DEADLINE]) - NOW), [1000, 2250, 3000, 4500, 9000]);
    });

    it('a write no try gets an answer to is timeout after SHARD_WRITE_TRIES tries, all to every leader with its write id and the call\'s deadline, the ones after the first naming when the first was sent', async () => {
      const fc = new FakeCluster(volume({ shards: 1 }));
      fc.shardHook = noReply;
      const client = fc.client();
      await rejectsWith(client.volume('vol').write(3, pageData(3)), 'timeout');
      await rejectsWith(client.volume('vol').zeroPages(0, 4), 'timeout');
      const sent = fc.transport.shardRequests();
      assert.equal(sent.length, 2 * SHARD_WRITE_TRIES);
      // The first try waits WRITE_TRY_MS_MIN, the next ones their part of what is left (the fake
      // clock stands still); the shard is given the call's deadline, to go on with a try.
      const leaders = 'strata.test.shard.v1.0.leaders';
      const tries = (type: string) => [
        [type, leaders, 10_000, WRITE_TRY_MS_MIN],
        [type, leaders, 10_000, 5000],
        [type, leaders, 10_000, 10_000],
      ];
      assert.deepEqual(sent.map((r) => [r.headers[HEADER_TYPE], r.subject, Number(r.headers[HEADER_DEADLINE]) - NOW, r.timeoutMs]), [...tries('shard.write'), ...tries('shard.zero')]);
      const bodies = sent.map((r) => r.body as { writeId: Uint8Array; sentMs?: number });
      for (const b of bodies) assert.equal(b.writeId.length, 16);
      assert.deepEqual(bodies.map((b) => b.sentMs), [undefined, NOW, NOW, undefined, NOW, NOW]);
      assert.deepEqual([bodies[1]!.writeId, bodies[2]!.writeId], [bodies[0]!.writeId, bodies[0]!.writeId], 'the same id in every try of the write');
      assert.deepEqual([bodies[4]!.writeId, bodies[5]!.writeId], [bodies[3]!.writeId, bodies[3]!.writeId]);
      assert.notDeepEqual(bodies[3]!.writeId, bodies[0]!.writeId, 'another write, another id');
    });

    it('a write the leader froze with is answered by the next leader on a later try; a try answered outcomeUnknown ends the call', async () => {
      const fc = new FakeCluster(volume({ shards: 1 }));
      let silent = 1;
      fc.shardHook = (shard, seen) => (silent-- > 0 ? noReply(shard, seen) : undefined);
      const r = await fc.client().volume('vol').write(3, pageData(3));
      assert.equal(r.lsn, 1);
      assert.deepEqual(fc.transport.shardRequests().map((x) => x.subject), ['strata.test.shard.v1.0.leaders', 'strata.test.shard.v1.0.leaders']);
      assert.deepEqual((await fc.client().volume('vol').readPages([3])).pages[0], pageData(3));
      const before = fc.transport.shardRequests().length;
      fc.shardHook = (shard, seen) => {
        if ((seen.body as { sentMs?: number }).sentMs === undefined) return noReply(shard, seen);
        throw new ProtocolError('timeout', 'its leader cannot tell: the write may or may not be committed', { outcomeUnknown: true });
      };
      await assert.rejects(fc.client().volume('vol').write(4, pageData(4)), (e: ProtocolError) => e.code === 'timeout' && e.details?.['outcomeUnknown'] === true);
      assert.equal(fc.transport.shardRequests().length - before, 2, 'the first try, and one that was answered so');
    });
  });

  describe('API calls', () => {
    it('sends volume.create to the API subject with type, schema and deadline headers', async () => {
      const t = new FakeTransport(() => volume({ name: 'db' }));
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 2500, nowMs: () => NOW });
      const info = await client.createVolume({ name: 'db', pageCount: 1000, pageSize: undefined, shards: 4 });
      assert.equal(info.name, 'db');
      assert.equal(t.seen.length, 1);
      const [seen] = t.seen;
      assert.equal(seen!.subject, 'strata.test.api.volume.create');
      const { requestId, ...rest } = seen!.body as { requestId: string };
      assert.deepEqual(rest, { name: 'db', pageCount: 1000, shards: 4 }, 'undefined fields are not sent');
      assert.match(requestId, UUID, 'a new request id');
      assert.equal(seen!.headers[HEADER_TYPE], 'volume.create');
      assert.equal(seen!.headers[HEADER_SCHEMA], String(SCHEMA_VERSION));
      assert.equal(seen!.headers[HEADER_DEADLINE], String(NOW + 2500));
      // A change with a request id may be sent again (as a read is): its first try waits a part
      // of the time left, at least API_READ_TRY_MS_MIN.
      assert.equal(seen!.timeoutMs, API_READ_TRY_MS_MIN, 'the NATS timeout is the first try\'s part of the time left');
    });

    it('gives volume.create the client\'s timeout or CREATE_MS_PER_SHARD_REPLICA for each shard replica, whichever is longer, or an earlier deadline', async () => {
      const t = new FakeTransport(() => volume({ name: 'db' }));
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      await client.createVolume({ name: 'db', pageCount: 4096, shards: 256, stripePages: 16, replicas: 3 });
      await client.createVolume({ name: 'db', pageCount: 4096, shards: 64, stripePages: 16 });
      await client.createVolume({ name: 'db', pageCount: 4096, shards: 4, stripePages: 16, replicas: 3 });
      await client.createVolume({ name: 'db', pageCount: 4096, shards: 256, stripePages: 16, replicas: 3 }, { deadlineMs: NOW + 5000 });
      assert.deepEqual(t.apiRequests('volume.create').map((r) => Number(r.headers[HEADER_DEADLINE]) - NOW), [
        256 * 3 * CREATE_MS_PER_SHARD_REPLICA, 10_000, 10_000, 5000,
      ]);
      await rejectsWith(client.createVolume({ name: 'db', pageCount: 1 }, { deadlineMs: -1 }), 'bad_request', /deadlineMs/);
    });

    it("branchVolume: reads the parent's geometry, then sends volume.branch with the deadline a create of that geometry gets", async () => {
      const parent = volume({ name: 'db', id: 'v7', shards: 256, replicas: 3, pageCount: 4096, stripePages: 16 });
      const t = new FakeTransport((subject, body) => {
        if (subject.endsWith('.volume.info')) return (body as { name: string }).name === 'db' ? parent : errorReply(new ProtocolError('not_found', `volume '${(body as { name: string }).name}' does not exist`));
        assert.equal(subject, 'strata.test.api.volume.branch');
        const b = body as { name: string; lsns?: number[] };
        return { ...parent, name: b.name, id: 'v8', branch: { parent: 'db', parentId: 'v7', lsns: b.lsns ?? new Array(256).fill(3) } };
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      const lsns = Array.from({ length: 256 }, (_, i) => i);
      const info = await client.branchVolume('db-test', 'db', { lsns });
      assert.deepEqual(info.branch, { parent: 'db', parentId: 'v7', lsns });
      await client.branchVolume('db-test2', 'db');
      await client.branchVolume('db-test3', 'db', { deadlineMs: NOW + 5000 });
      const sent = t.apiRequests('volume.branch');
      const ids = sent.map((r) => (r.body as { requestId: string }).requestId);
      assert.deepEqual(sent.map((r, i) => ({ ...(r.body as object), requestId: ids[i] })), [{ name: 'db-test', parent: 'db', lsns, requestId: ids[0] }, { name: 'db-test2', parent: 'db', requestId: ids[1] }, { name: 'db-test3', parent: 'db', requestId: ids[2] }]);
      assert.ok(ids.every((id) => UUID.test(id)) && new Set(ids).size === 3, 'a new request id for each');
      assert.deepEqual(sent.map((r) => r.headers[HEADER_TYPE]), ['volume.branch', 'volume.branch', 'volume.branch']);
      // A create's wait, and the copy of the parent's 4096 pages of 4 KiB on each of 3 replicas.
      const sized = 256 * 3 * CREATE_MS_PER_SHARD_REPLICA + Math.ceil((4096 * 4096 * 3) / BRANCH_COPY_BYTES_PER_MS);
      assert.deepEqual(sent.map((r) => Number(r.headers[HEADER_DEADLINE]) - NOW), [sized, sized, 5000]);
      assert.deepEqual(t.apiRequests('volume.info').map((r) => r.body), [{ name: 'db' }, { name: 'db' }, { name: 'db' }]);
      // A parent of few shards: the client's timeout; of many pages, the time for their copy.
      parent.shards = 2;
      await client.branchVolume('db-test4', 'db');
      assert.equal(Number(t.apiRequests('volume.branch').at(-1)!.headers[HEADER_DEADLINE]) - NOW, 10_000);
      parent.pageCount = 1 << 20;
      await client.branchVolume('db-test5', 'db');
      assert.equal(Number(t.apiRequests('volume.branch').at(-1)!.headers[HEADER_DEADLINE]) - NOW, 2 * 3 * CREATE_MS_PER_SHARD_REPLICA + Math.ceil((4096 * 2 ** 20 * 3) / BRANCH_COPY_BYTES_PER_MS));
      // No such parent: not_found, and no volume.branch sent.
      await rejectsWith(client.branchVolume('x', 'nope'), 'not_found', /volume 'nope' does not exist/);
      assert.equal(t.apiRequests('volume.branch').length, 5);
    });

    it('branchVolume validates its arguments before sending anything', async () => {
      const t = new FakeTransport(() => assert.fail('nothing may be sent'));
      const client = createClient(t, { cluster: CLUSTER, nowMs: () => NOW });
      await rejectsWith(client.branchVolume('Bad Name', 'db'), 'bad_request', /^name: /);
      await rejectsWith(client.branchVolume('ok', ''), 'bad_request', /^parent: /);
      await rejectsWith(client.branchVolume('ok', 7 as unknown as string), 'bad_request', /^parent: .*got the number 7/);
      await rejectsWith(client.branchVolume('ok', 'db', { lsns: [] }), 'bad_request', /^lsns: expected at least 1 entries/);
      await rejectsWith(client.branchVolume('ok', 'db', { lsns: [1, -1] }), 'bad_request', /^lsns\[1\]: /);
      await rejectsWith(client.branchVolume('ok', 'db', { lsns: [2 ** 53] }), 'bad_request', /^lsns\[0\]: /);
      await rejectsWith(client.branchVolume('ok', 'db', { lsns: new Array(257).fill(0) }), 'bad_request', /^lsns: expected at most 256 entries/);
      await rejectsWith(client.branchVolume('ok', 'db', { lsns: 'x' as unknown as number[] }), 'bad_request', /^lsns: expected an array/);
      await rejectsWith(client.branchVolume('ok', 'db', { deadlineMs: -1 }), 'bad_request', /deadlineMs/);
      await rejectsWith(client.branchVolume('ok', 'db', 'x' as unknown as { lsns?: number[] }), 'bad_request', /options/);
      assert.equal(t.seen.length, 0);
    });

    it('asks a read, or a change with a request id, again when a try gets no answer (a hung or killed node of the API\'s queue group), within the deadline; a change without one only once', async () => {
      let infoTries = 0;
      const t = new FakeTransport((subject) => {
        if (subject.includes('.volume.info') && ++infoTries === API_READ_TRIES) return volume({ name: 'db' });
        throw new ProtocolError('timeout', `no reply on ${subject}`);
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 9000, nowMs: () => NOW });
      assert.equal((await client.volumeInfo('db')).name, 'db');
      // A quick read's first try API_READ_TRY_MS_MIN, the next a part of the time left, the last
      // one the call's own deadline.
      assert.deepEqual(t.apiRequests('volume.info').map((r) => Number(r.headers[HEADER_DEADLINE]) - NOW), [API_READ_TRY_MS_MIN, 4500, 9000]);
      // The first try to one node's router (the API's queue group), the next ones to every node's.
      assert.deepEqual(t.apiRequests('volume.info').map((r) => r.subject), ['strata.test.api.volume.info', 'strata.test.api.volume.info.every', 'strata.test.api.volume.info.every']);
      // A status's tries: even parts (its router gathers the nodes' answers within each).
      const statusTries = new FakeTransport((subject) => {
        throw new ProtocolError('timeout', `no reply on ${subject}`);
      });
      await rejectsWith(createClient(statusTries, { cluster: CLUSTER, timeoutMs: 9000, nowMs: () => NOW }).status(), 'timeout');
      assert.deepEqual(statusTries.apiRequests('status').map((r) => Number(r.headers[HEADER_DEADLINE]) - NOW), [3000, 4500, 9000]);
      // A change with a request id: the same bytes each try, the call's deadline in each (the
      // controller gives the nodes that time), each try waiting its part of it.
      await rejectsWith(client.createVolume({ name: 'x', pageCount: 10 }), 'timeout');
      const creates = t.apiRequests('volume.create');
      assert.equal(creates.length, API_READ_TRIES, 'a change with a request id is sent again');
      assert.deepEqual(creates.map((r) => Number(r.headers[HEADER_DEADLINE]) - NOW), [9000, 9000, 9000]);
      assert.deepEqual(creates.map((r) => r.timeoutMs), [3000, 4500, 9000]);
      assert.equal(new Set(creates.map((r) => JSON.stringify(r.body))).size, 1, 'the same request each time');
      assert.deepEqual(creates.map((r) => r.subject), ['strata.test.api.volume.create', 'strata.test.api.volume.create.every', 'strata.test.api.volume.create.every']);
      await rejectsWith(client.deleteVolume('x'), 'timeout');
      assert.equal(t.apiRequests('volume.delete').length, API_READ_TRIES);
      await rejectsWith(client.resizeVolume('x', 20, { requestId: 'grow-x' }), 'timeout');
      assert.deepEqual(t.apiRequests('volume.resize').map((r) => r.body), new Array(API_READ_TRIES).fill({ name: 'x', pageCount: 20, requestId: 'grow-x' }));
      // Without a request id (sent by hand, or by a client before them): once.
      await rejectsWith(client.api('volume.delete', { name: 'x' }, NOW + 9000), 'timeout');
      assert.equal(t.apiRequests('volume.delete').length, API_READ_TRIES + 1, 'a change without a request id is not sent again');
      // A short call is tried once: no try would be shorter than API_READ_TRY_MS_MIN.
      const short = createClient(t, { cluster: CLUSTER, timeoutMs: 2 * API_READ_TRY_MS_MIN - 1, nowMs: () => NOW });
      await rejectsWith(short.listVolumes(), 'timeout');
      assert.equal(t.apiRequests('volume.list').length, 1);
    });

    it('sends a read or a change again when a node answered that it no longer runs the controller and did nothing (notController), until the next one answers', async () => {
      const moved = () => errorReply(new ProtocolError('unavailable', "node 'n1' no longer runs the controller; retry", { notController: true }));
      let refusals = 2;
      const t = new FakeTransport((subject) => {
        if (refusals-- > 0) return moved();
        return subject.endsWith('.volume.list') ? { volumes: [volume({ name: 'db' })] } : volume({ name: 'x', pageCount: 10 });
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      assert.deepEqual((await client.listVolumes()).map((v) => v.name), ['db']);
      assert.equal(t.apiRequests('volume.list').length, 3);
      refusals = 1;
      assert.equal((await client.createVolume({ name: 'x', pageCount: 10 })).name, 'x');
      assert.equal(t.apiRequests('volume.create').length, 2, 'a change that was not done is sent again');
      // Any other unavailable is the answer at once.
      const other = createClient(new FakeTransport(() => errorReply(new ProtocolError('unavailable', 'no quorum'))), { cluster: CLUSTER, nowMs: () => NOW });
      await rejectsWith(other.listVolumes(), 'unavailable', /no quorum/);
    });

    it('lists a catalog larger than one message in pages (after, limit), starting again when the catalog changed between two pages, at most LIST_RESTARTS_MAX times', async () => {
      const names = Array.from({ length: 10 }, (_, i) => `v${String(i).padStart(2, '0')}`);
      let epoch = 5;
      let changeAt: number | undefined; // the page request after which the epoch moves on
      let pageRequests = 0;
      const t = new FakeTransport((_subject, body) => {
        const { after, limit } = body as { after?: string; limit?: number };
        if (after === undefined && limit === undefined) return errorReply(new ProtocolError('too_large', 'the reply does not fit one message'));
        pageRequests++;
        const rest = names.filter((n) => after === undefined || n > after);
        const page = rest.slice(0, Math.min(3, limit ?? 3)); // 3: what "fits"
        const reply = { volumes: page.map((name) => volume({ name })), ...(page.length < rest.length ? { next: page[page.length - 1] } : {}), epoch };
        if (changeAt !== undefined && pageRequests >= changeAt) epoch++;
        return reply;
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      assert.deepEqual((await client.listVolumes()).map((v) => v.name), names);
      assert.deepEqual(t.apiRequests('volume.list').map((r) => r.body), [{}, { limit: 4096 }, { after: 'v02', limit: 4096 }, { after: 'v05', limit: 4096 }, { after: 'v08', limit: 4096 }]);
      // The catalog changes after the second page of each pass: the list starts again, and after
      // LIST_RESTARTS_MAX passes it is the pages as read.
      t.seen = [];
      pageRequests = 0;
      changeAt = 2;
      assert.deepEqual((await client.listVolumes()).map((v) => v.name), names);
      const starts = t.apiRequests('volume.list').filter((r) => (r.body as { after?: string }).after === undefined).length;
      assert.equal(starts, 1 + 1 + LIST_RESTARTS_MAX, 'asked whole once, then a first page per pass');
      // One page, by hand.
      changeAt = undefined;
      const page = await client.listVolumesPage({ after: 'v03', limit: 2 });
      assert.deepEqual(page.volumes.map((v) => v.name), ['v04', 'v05']);
      assert.equal(page.next, 'v05');
      await rejectsWith(client.listVolumesPage({ limit: 0 }), 'bad_request', /limit/);
      await rejectsWith(client.listVolumesPage({ after: 'Not A Name' }), 'bad_request', /after/);
      // A reply whose `next` is not its last volume's name is refused.
      const odd = createClient(new FakeTransport(() => ({ volumes: [volume({ name: 'a' })], next: 'b', epoch: 1 })), { cluster: CLUSTER, nowMs: () => NOW });
      await rejectsWith(odd.listVolumesPage({}), 'internal', /malformed reply to volume.list.*next/);
    });

    it('refuses an operator call it can tell is wrong before sending it: a shard past the volume\'s (force-vote), a controller set of the wrong size or with a repeat', async () => {
      const t = new FakeTransport(() => volume({ name: 'db', shards: 2 }));
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      await rejectsWith(client.forceVote('db', 2, 'n1'), 'out_of_range', /^shard 2: volume db has shards 0\.\.1$/);
      for (const members of [['n1', 'n2'], ['n1', 'n2', 'n2'], Array.from({ length: 8 }, (_, i) => `n${i}`)]) {
        await rejectsWith(client.controllers(members), 'bad_request', /^members: expected 3\.\.7 distinct node ids/);
      }
      assert.deepEqual(t.seen.map((x) => x.subject).filter((x) => !x.endsWith('.volume.info')), [], 'nothing else was sent');
    });

    it('a shard check gives up past its step bounds (too_large), not running on: records a step of one LSN each, pages of the largest volume', async function () {
      this.timeout(180_000); // 131,000 requests of the fake transport: seconds, more on a loaded machine.
      const last = SHARD_CHECK_STEPS_MAX + 10;
      let pageCount = 1024;
      let lsnsPerStep = 1;
      let digests = 0;
      const t = new FakeTransport((subject, body) => {
        if (subject.endsWith('.volume.info')) return volume({ name: 'db', id: 'v1', shards: 1, pageCount, stripePages: 256, replicaSets: [{ shard: 0, members: ['n1', 'n2'] }] });
        digests++;
        const node = subject.split('.')[3]!;
        const b = body as { fromLsn?: number; toLsn?: number; pages?: { lsn: number; first: number; count: number } };
        const at = { node, volumeId: 'v1', shard: 0, role: node === 'n1' ? 'leader' : 'follower', term: 1, firstLsn: 1, lastLsn: last, commitLsn: last, appliedLsn: last, oldestLsn: 0 };
        if (b.pages !== undefined) return { ...at, pages: { ...b.pages, pages: b.pages.count, digest: 7 } };
        // lsnsPerStep 1: each record as large as a step's payload bytes.
        if (b.fromLsn === undefined) return at;
        const toLsn = Math.min(b.toLsn!, b.fromLsn + lsnsPerStep - 1);
        return { ...at, fromLsn: b.fromLsn, toLsn, records: toLsn - b.fromLsn + 1, digest: 1 };
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      await rejectsWith(client.checkShard('db', 0), 'too_large', new RegExp(`more than ${SHARD_CHECK_STEPS_MAX} steps to compare LSNs 1\\.\\.${last}`));
      assert.equal(digests, 2 * (1 + SHARD_CHECK_STEPS_MAX), 'where they stand, then a step of each replica');
      // Pages: 4,096 of 4 KiB a step over 2^32 - 1 pages would take 1,048,576 steps.
      pageCount = 2 ** 32 - 1;
      lsnsPerStep = last;
      digests = 0;
      await rejectsWith(client.checkShard('db', 0, { pages: true }), 'too_large', new RegExp(`more than ${SHARD_CHECK_PAGE_STEPS_MAX} steps to compare its pages`));
      assert.equal(digests, 2 * (1 + 1 + SHARD_CHECK_PAGE_STEPS_MAX), 'where they stand, the records in one step, then the pages\' steps');
    });

    it('a shard check whose records or pages a replica\'s checkpoint lets go while compared compares them again from where the replicas are then, at most SHARD_CHECK_RESTARTS_MAX times', async () => {
      // n2's log starts at `first2`, and its pages are readable from `oldest2`; `trims` answers
      // to come are trimmed, each moving them on by 100 LSNs.
      let first2 = 1;
      let oldest2 = 0;
      let trims = 0;
      let trimPages = false;
      const t = new FakeTransport((subject, body) => {
        if (subject.endsWith('.volume.info')) return volume({ name: 'db', id: 'v1', shards: 1, pageCount: 64, replicaSets: [{ shard: 0, members: ['n1', 'n2'] }] });
        const node = subject.split('.')[3]!;
        const b = body as { fromLsn?: number; toLsn?: number; pages?: { lsn: number; first: number; count: number } };
        const first = node === 'n2' ? first2 : 1;
        const at = { node, volumeId: 'v1', shard: 0, role: node === 'n1' ? 'leader' : 'follower', term: 1, firstLsn: first, lastLsn: 1000, commitLsn: 1000, appliedLsn: 1000, oldestLsn: node === 'n2' ? oldest2 : 0 };
        const trimmedNow = node === 'n2' && trims > 0 && (b.pages !== undefined ? trimPages : b.fromLsn !== undefined);
        if (trimmedNow) {
          trims--;
          first2 += 100;
          oldest2 += 100;
          return errorReply(new ProtocolError('trimmed', `LSN ${b.pages?.lsn ?? b.fromLsn} is below the log's first LSN ${first2}`));
        }
        if (b.pages !== undefined) return { ...at, pages: { ...b.pages, pages: b.pages.count, digest: 7 } };
        if (b.fromLsn === undefined) return at;
        if (b.fromLsn < first) return errorReply(new ProtocolError('trimmed', `LSN ${b.fromLsn} is below the log's first LSN ${first}`));
        return { ...at, fromLsn: b.fromLsn, toLsn: b.toLsn!, records: b.toLsn! - b.fromLsn + 1, digest: 3 };
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      trims = 2;
      const check = await client.checkShard('db', 0, { waitMs: 0 });
      assert.equal(check.restarts, 2);
      assert.deepEqual(check.range, { fromLsn: 201, toLsn: 1000 }, 'compared from where n2\'s log starts after the trims');
      assert.equal(check.replicas[1]!.firstLsn, 201);
      assert.ok(check.replicas.every((r) => r.digest !== undefined), 'the same everywhere');
      // The pages: compared again as of the LSN every replica reads then.
      trims = 1;
      trimPages = true;
      const pages = await client.checkShard('db', 0, { waitMs: 0, pages: true });
      assert.equal(pages.restarts, 1);
      assert.equal(pages.pages?.compared, 64);
      assert.equal(pages.pages?.differs, undefined);
      // A checkpoint every time: the check fails, saying so.
      trimPages = false;
      trims = 100;
      await rejectsWith(client.checkShard('db', 0, { waitMs: 0 }), 'trimmed', new RegExp(`^the records of shard 0 of volume db: compared ${SHARD_CHECK_RESTARTS_MAX + 1} times, and each time a replica's checkpoint let go`));
      assert.equal(trims, 100 - (SHARD_CHECK_RESTARTS_MAX + 1), 'one trimmed answer per comparison');
    });

    it('a shard check while the controller is out of reach (a router answers volume.info without where the replicas are) asks again until told, then checks', async () => {
      let placed = false;
      const t = new FakeTransport((subject, body) => {
        if (subject.includes('.volume.info')) return volume({ name: 'db', id: 'v1', shards: 1, pageCount: 64, ...(placed ? { replicaSets: [{ shard: 0, members: ['n1', 'n2'] }] } : {}) });
        const node = subject.split('.')[3]!;
        const b = body as { fromLsn?: number; toLsn?: number };
        const at = { node, volumeId: 'v1', shard: 0, role: node === 'n1' ? 'leader' : 'follower', term: 1, firstLsn: 1, lastLsn: 10, commitLsn: 10, appliedLsn: 10, oldestLsn: 0 };
        if (b.fromLsn === undefined) return at;
        return { ...at, fromLsn: b.fromLsn, toLsn: b.toLsn!, records: b.toLsn! - b.fromLsn + 1, digest: 3 };
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 5000 });
      // The controller back after three answers without them.
      const infos = (): number => t.apiRequests('volume.info').length;
      const checking = client.checkShard('db', 0, { waitMs: 0 });
      await waitFor('three answers without where the replicas are', () => infos() >= 3, 5000);
      placed = true;
      const check = await checking;
      assert.deepEqual(check.replicas.map((r) => r.node), ['n1', 'n2']);
      assert.deepEqual(check.range, { fromLsn: 1, toLsn: 10 });
      assert.ok(infos() >= 4);
      // Never told within the call's deadline: unavailable, saying so, after asking again.
      placed = false;
      const before = infos();
      await rejectsWith(createClient(t, { cluster: CLUSTER, timeoutMs: 800 }).checkShard('db', 0, { waitMs: 0 }), 'unavailable', /did not say where shard 0 of volume db is/);
      assert.ok(infos() - before >= 3, `asked ${infos() - before} times`);
      // A try after the first that fails (here refused): the answer before it stands, not the try's error.
      let tries = 0;
      const failing = new FakeTransport((subject) => {
        if (!subject.includes('.volume.info')) return errorReply(new ProtocolError('internal', `unexpected ${subject}`));
        return ++tries === 1 ? volume({ name: 'db', id: 'v1', shards: 1, pageCount: 64 }) : errorReply(new ProtocolError('overloaded', 'busy'));
      });
      await rejectsWith(createClient(failing, { cluster: CLUSTER, timeoutMs: 5000 }).checkShard('db', 0, { waitMs: 0 }), 'unavailable', /did not say where shard 0 of volume db is/);
      assert.equal(tries, 2);
    });

    it('a write that reached no leader, whose last try its deadline overtook before it was sent, is unavailable (nothing may commit), not an unknown outcome', async () => {
      let infos = 0;
      const t = new FakeTransport(async (subject) => {
        if (subject.includes('.volume.info')) {
          // The catalog slow after the first answer (re-electing): the refresh takes the call's time.
          if (++infos > 1) await new Promise((r) => setTimeout(r, 2000));
          return volume({ name: 'db', id: 'v1', shards: 1, pageCount: 64, stripePages: 64 });
        }
        throw new NoRespondersError(subject);
      });
      const vol = createClient(t, { cluster: CLUSTER, timeoutMs: 500 }).volume('db');
      await vol.info();
      await rejectsWith(vol.writePages([{ page: 0, data: new Uint8Array(4096) }]), 'unavailable');
      assert.ok(t.shardRequests().length >= 1, 'the write was sent and reached no leader');
    });

    it('a refresh of the volume info that cannot reach the catalog keeps the newest info the handle had, never an older one a call began with', async () => {
      let pageCount = 1000;
      let catalogUp = true;
      const t = new FakeTransport((subject) => {
        if (!subject.includes('.volume.info')) return errorReply(new ProtocolError('internal', `unexpected ${subject}`));
        // Down: asked, it never answers (a catalog shard re-electing).
        return catalogUp ? volume({ name: 'db', id: 'v1', shards: 1, pageCount, stripePages: 256 }) : new Promise(() => undefined);
      });
      const vol = createClient(t, { cluster: CLUSTER, timeoutMs: 2000 }).volume('db');
      assert.equal((await vol.info()).pageCount, 1000);
      // The info a call in flight began with (before the resize).
      const before = (vol as unknown as { infoPromise: Promise<VolumeInfo> }).infoPromise;
      pageCount = 2000;
      assert.equal((await vol.info({ refresh: true })).pageCount, 2000, 'another call learned the new size');
      catalogUp = false;
      // A refresh asked meanwhile, whose answer does not come; then the call that began with the
      // info before the resize refreshes too, and waits for that one until its deadline.
      void vol.info({ refresh: true }).catch(() => undefined);
      const refresh = (vol as unknown as { refreshInfo(stale: Promise<VolumeInfo>, deadlineMs: number): Promise<VolumeInfo> }).refreshInfo.bind(vol);
      assert.equal((await refresh(before, Date.now() + 300)).pageCount, 2000);
      assert.equal((await vol.info()).pageCount, 2000, 'the handle still knows the new size');
    });

    it('gives up a list whose every page names a next one after VOLUMES_PER_LIST_MAX pages (unavailable), not running on', async () => {
      const name = (i: number): string => `v${String(i).padStart(5, '0')}`;
      const t = new FakeTransport((_subject, body) => {
        const { after, limit } = body as { after?: string; limit?: number };
        if (after === undefined && limit === undefined) return errorReply(new ProtocolError('too_large', 'the reply does not fit one message'));
        const i = after === undefined ? 0 : Number(after.slice(1)) + 1;
        return { volumes: [volume({ name: name(i) })], next: name(i), epoch: 1 };
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 60_000, nowMs: () => NOW });
      await rejectsWith(client.listVolumes(), 'unavailable', new RegExp(`volume\\.list: more than ${VOLUMES_PER_LIST_MAX} pages`));
      assert.equal(t.apiRequests('volume.list').length, 1 + VOLUMES_PER_LIST_MAX);
    });

    it('gives up a list whose pages hold more volumes than a catalog does (unavailable), after the page that passes it', async () => {
      const t = new FakeTransport((_subject, body) => {
        const { after, limit } = body as { after?: string; limit?: number };
        if (after === undefined && limit === undefined) return errorReply(new ProtocolError('too_large', 'the reply does not fit one message'));
        const from = after === undefined ? 0 : Number(after.slice(1)) + 1;
        // Pages of VOLUMES_PER_LIST_MAX volumes each, named on, each naming a next page.
        const volumes = Array.from({ length: VOLUMES_PER_LIST_MAX }, (_, k) => volume({ name: `v${String(from + k).padStart(8, '0')}` }));
        return { volumes, next: volumes[volumes.length - 1]!.name, epoch: 1 };
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 60_000, nowMs: () => NOW });
      await rejectsWith(client.listVolumes(), 'unavailable', new RegExp(`volume\\.list: more than ${2 * VOLUMES_PER_LIST_MAX} volumes in its pages`));
      assert.equal(t.apiRequests('volume.list').length, 1 + 3, 'the whole list asked, then three pages');
    });

    it('sends a request again while the router finds no controller (noController), for CONTROLLER_GAP_MS: the gap between two controllers; then that is the answer', async () => {
      const gone = () => errorReply(new ProtocolError('unavailable', 'the controller is not reachable (no responders)', { noController: true }));
      let gaps = 2;
      const t = new FakeTransport(() => (gaps-- > 0 ? gone() : { volumes: [] }));
      assert.deepEqual(await createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW }).listVolumes(), []);
      assert.equal(t.apiRequests('volume.list').length, 3);
      // No controller at all (a majority of the controller nodes down): the answer after 5 s, well before the deadline.
      const none = new FakeTransport(() => gone());
      const started = Date.now();
      let now = NOW;
      const client = createClient(none, { cluster: CLUSTER, timeoutMs: 60_000, nowMs: () => (now = NOW + Math.max(0, Date.now() - started) * 10) });
      await rejectsWith(client.listVolumes(), 'unavailable', /not reachable/);
      assert.ok(now - NOW >= 5000 && now - NOW < 60_000, `given up after ${now - NOW} ms`);
      assert.ok(none.apiRequests('volume.list').length > 2);
    });

    it('counts the gap between two controllers from its first noController answer, not from the call: a call that met the deposed controller for longer than CONTROLLER_GAP_MS still waits for the next one', async () => {
      const moved = () => errorReply(new ProtocolError('unavailable', "node 'n1' no longer runs the controller; retry", { notController: true }));
      const gone = () => errorReply(new ProtocolError('unavailable', 'the controller is not reachable (no responders)', { noController: true }));
      // Each answer takes a second: 6 s of the deposed controller's refusals, then 3 s without a controller.
      const answers = [...Array.from({ length: 6 }, () => moved), gone, gone, gone, () => ({ volumes: [] })];
      let now = NOW;
      const t = new FakeTransport(() => {
        now += 1000;
        return answers.shift()!();
      });
      assert.deepEqual(await createClient(t, { cluster: CLUSTER, timeoutMs: 60_000, nowMs: () => now }).listVolumes(), []);
      assert.equal(t.apiRequests('volume.list').length, 10);
    });

    it('still no controller at the deadline: the last node\'s answer, after a bounded number of tries', async () => {
      const t = new FakeTransport(() => errorReply(new ProtocolError('unavailable', "node 'n1' could not confirm that it still runs the controller (timeout); retry", { notController: true })));
      const started = Date.now();
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW + Math.max(0, Date.now() - started) * 20 });
      await rejectsWith(client.createVolume({ name: 'x', pageCount: 10 }), 'unavailable', /could not confirm/);
      const tries = t.apiRequests('volume.create').length;
      assert.ok(tries > 2 && tries <= 41, `${tries} tries`);
    });

    it('an operator\'s request to the controller (move, drain, rebalance, catalog recovery) is sent again while the controller moves: notController until the deadline, no responders for CONTROLLER_GAP_MS', async () => {
      const moved = () => errorReply(new ProtocolError('unavailable', "node 'n1' no longer runs the controller; retry", { notController: true }));
      const answers: Record<string, unknown> = {
        'shard.move': { volume: 'db', shard: 1, members: ['n1', 'n3', 'n4'], term: 3, lsn: 17 },
        'node.drain': { node: 'n2', draining: true, replicas: 4 },
        rebalance: { rebalancing: false, nodes: [] },
        'catalog.recover': { applied: false, epoch: 4, nodesAsked: 3, nodesFailed: [], recovered: [], skipped: [], recoveredCount: 0, skippedCount: 0 },
      };
      let refusals = 0;
      let gaps = 0;
      const t = new FakeTransport((subject) => {
        const verb = subject.slice('strata.test.controller.'.length);
        if (refusals > 0) {
          refusals--;
          return moved();
        }
        if (gaps > 0) {
          gaps--;
          throw new NoRespondersError(subject);
        }
        return answers[verb];
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['shard.move', () => client.moveReplica('db', 1, { from: 'n2', to: 'n4' })],
        ['node.drain', () => client.drainNode('n2')],
        ['rebalance', () => client.rebalance()],
        ['catalog.recover', () => client.recoverCatalog()],
      ];
      for (const [verb, call] of calls) {
        refusals = 2;
        gaps = 1;
        t.seen = [];
        assert.deepEqual(await call(), answers[verb], verb);
        assert.deepEqual(t.seen.map((s) => s.subject), Array(4).fill(`strata.test.controller.${verb}`), `${verb}: two refusals, one gap, then the answer`);
      }
      // No controller at all: `unavailable` once the gap is over, well before the deadline.
      const started = Date.now();
      let now = NOW;
      const none = new FakeTransport((subject) => {
        throw new NoRespondersError(subject);
      });
      const alone = createClient(none, { cluster: CLUSTER, timeoutMs: 60_000, nowMs: () => (now = NOW + Math.max(0, Date.now() - started) * 10) });
      await rejectsWith(alone.drainNode('n2'), 'unavailable', /not reachable \(no responders on strata\.test\.controller\.node\.drain\)/);
      assert.ok(now - NOW >= 5000 && now - NOW < 60_000, `given up after ${now - NOW} ms`);
      assert.ok(none.seen.length > 2, `${none.seen.length} tries`);
      // Another unavailable is the answer at once.
      const other = new FakeTransport(() => errorReply(new ProtocolError('unavailable', 'the move of shard 1 is under way')));
      await rejectsWith(createClient(other, { cluster: CLUSTER, nowMs: () => NOW }).moveReplica('db', 1, { from: 'n2', to: 'n4' }), 'unavailable', /under way/);
      assert.equal(other.seen.length, 1);
    });

    it('an operator\'s request whose reply was lost with the NATS connection is sent again (each may be asked again); a catalog recovery that applies is not: timeout, outcome unknown', async () => {
      const answers = OPERATOR_ANSWERS;
      let drops = 0;
      const t = new FakeTransport((subject) => {
        if (drops > 0) {
          drops--;
          throw new ProtocolError('unavailable', `request on ${subject} failed: the connection to NATS dropped before the reply`, { subject, disconnected: true });
        }
        return answers[subject.slice('strata.test.controller.'.length)];
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['shard.move', () => client.moveReplica('db', 1, { from: 'n2', to: 'n4' })],
        ['node.drain', () => client.drainNode('n2')],
        ['rebalance', () => client.rebalance()],
        ['controllers', () => client.controllers(['n1', 'n2', 'n4'])],
        ['catalog.recover', () => client.recoverCatalog()],
      ];
      for (const [verb, call] of calls) {
        drops = 2;
        t.seen = [];
        assert.deepEqual(await call(), answers[verb], verb);
        assert.deepEqual(t.seen.map((s) => s.subject), Array(3).fill(`strata.test.controller.${verb}`), `${verb}: two replies lost, then the answer`);
        assert.deepEqual(t.seen[2]!.body, t.seen[0]!.body, `${verb}: the same request`);
      }
      drops = 1;
      t.seen = [];
      const e = await rejectsWith(client.recoverCatalog({ apply: true }), 'timeout', /may or may not have been made/);
      assert.deepEqual([e.details?.['outcomeUnknown'], e.details?.['code'], t.seen.length], [true, 'unavailable', 1]);
    });

    it('an operator\'s move, drain or rebalance is sent in tries: one its controller took and never answered (it died) is sent again, and the next controller answers; a change of the controller nodes and a catalog recovery are not', async () => {
      const answers = OPERATOR_ANSWERS;
      let silent = 0;
      const t = new FakeTransport((subject, _body, seen) => {
        if (silent > 0) {
          silent--;
          throw new ProtocolError('timeout', `no reply on ${subject} within ${seen.timeoutMs} ms`);
        }
        return answers[subject.slice('strata.test.controller.'.length)];
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      // [verb, call, the call's deadline from NOW]
      const calls: Array<[string, () => Promise<unknown>, number]> = [
        ['shard.move', () => client.moveReplica('db', 1, { from: 'n2', to: 'n4' }), MOVE_TIMEOUT_MS_MIN],
        ['node.drain', () => client.drainNode('n2'), 10_000],
        ['rebalance', () => client.rebalance(), 10_000],
      ];
      for (const [verb, call, deadlineMs] of calls) {
        silent = 1;
        t.seen = [];
        assert.deepEqual(await call(), answers[verb], verb);
        assert.deepEqual(t.seen.map((s) => s.subject), Array(2).fill(`strata.test.controller.${verb}`), `${verb}: a try not answered, then the answer`);
        assert.deepEqual(t.seen[1]!.body, t.seen[0]!.body, `${verb}: the same request`);
        // Each try a third of the time left, within 5..10 s; the controller is given the call's deadline.
        const tryMs = Math.min(10_000, Math.max(5000, Math.floor(deadlineMs / 3)));
        assert.deepEqual(t.seen.map((s) => [s.timeoutMs, Number(s.headers[HEADER_DEADLINE]) - NOW]), [[tryMs, deadlineMs], [tryMs, deadlineMs]], verb);
      }
      // Those the controller runs one after another are sent once, with the call's whole time.
      for (const [call, deadlineMs] of [[() => client.recoverCatalog({ apply: true }), 10_000], [() => client.recoverCatalog(), 10_000], [() => client.controllers(['n1', 'n2', 'n4']), MOVE_TIMEOUT_MS_MIN]] as const) {
        silent = 1;
        t.seen = [];
        const e = await rejectsWith(call(), 'timeout', /may or may not have been made/);
        assert.deepEqual([e.details?.['outcomeUnknown'], t.seen.length, t.seen[0]!.timeoutMs], [true, 1, deadlineMs]);
      }
    });

    it('an API request that found no node serving the API is sent again shortly after the connection came back (the nodes subscribe again), and only then', async () => {
      let gaps = 0;
      const t = new FakeTransport((subject) => {
        if (gaps > 0) {
          gaps--;
          throw new NoRespondersError(subject);
        }
        return subject.includes('volume.resize') ? volume({ name: 'db', pageCount: 20 }) : volume({ name: 'db' });
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW });
      // Never dropped: no responders is the answer at once (no node serves the API).
      gaps = 1;
      await rejectsWith(client.volumeInfo('db'), 'unavailable', /no responders/);
      assert.equal(t.seen.length, 1);
      // Just reconnected: a read, and a change without a request id (nothing was delivered).
      t.reconnectedAtMs = Date.now();
      for (const [verb, call] of [['volume.info', () => client.volumeInfo('db')], ['volume.resize', () => client.resizeVolume('db', 20)]] as const) {
        gaps = 2;
        t.seen = [];
        assert.equal((await call()).name, 'db', verb);
        assert.equal(t.apiRequests(verb).length, 3, `${verb}: two without responders, then the answer`);
      }
      // Long after the reconnect: at once again.
      t.reconnectedAtMs = Date.now() - 60_000;
      gaps = 1;
      t.seen = [];
      await rejectsWith(client.volumeInfo('db'), 'unavailable', /no responders/);
      assert.equal(t.seen.length, 1);
    });

    it('validates createVolume, volumeInfo and deleteVolume arguments before sending', async () => {
      const t = new FakeTransport(() => assert.fail('nothing may be sent'));
      const client = createClient(t, { cluster: CLUSTER });
      await rejectsWith(client.createVolume({ name: 'Bad Name', pageCount: 1 }), 'bad_request', /name/);
      await rejectsWith(client.createVolume({ name: 'ok', pageCount: 0 }), 'bad_request', /pageCount/);
      await rejectsWith(client.createVolume({ name: 'ok', pageCount: 1, pageSize: 100 as 4096 }), 'bad_request', /pageSize/);
      await rejectsWith(client.createVolume({ name: 'ok', pageCount: 1, replicas: 2 as 1 }), 'bad_request', /replicas/);
      await rejectsWith(client.volumeInfo('a.b*'), 'bad_request');
      await rejectsWith(client.deleteVolume(''), 'bad_request');
      throwsWith(() => client.volume('UPPER'), 'bad_request');
      assert.equal(t.seen.length, 0);
    });

    it('moveReplica: to the controller\'s subject with its deadline (at least MOVE_TIMEOUT_MS_MIN), arguments checked before sending, the reply validated', async () => {
      const t = new FakeTransport((subject, body) => {
        assert.equal(subject, 'strata.test.controller.shard.move');
        assert.deepEqual(body, { volume: 'db', shard: 1, from: 'n2', to: 'n4' });
        return { volume: 'db', shard: 1, members: ['n1', 'n3', 'n4'], term: 3, lsn: 17 };
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 2500, nowMs: () => NOW });
      assert.deepEqual(await client.moveReplica('db', 1, { from: 'n2', to: 'n4' }), { volume: 'db', shard: 1, members: ['n1', 'n3', 'n4'], term: 3, lsn: 17 });
      await client.moveReplica('db', 1, { from: 'n2', to: 'n4' }, { deadlineMs: NOW + 1000 });
      // Its first try waits at most 10 s (sent again if the controller does not answer it); the controller has the call's deadline.
      assert.deepEqual(t.seen.map((r) => [Number(r.headers[HEADER_DEADLINE]) - NOW, r.timeoutMs]), [[MOVE_TIMEOUT_MS_MIN, 10_000], [1000, 1000]]);
      await rejectsWith(client.moveReplica('Bad Name', 0, { from: 'n1', to: 'n2' }), 'bad_request', /name/);
      await rejectsWith(client.moveReplica('db', -1, { from: 'n1', to: 'n2' }), 'bad_request', /shard/);
      await rejectsWith(client.moveReplica('db', 0, { from: 'a.b', to: 'n2' }), 'bad_request', /from/);
      await rejectsWith(client.moveReplica('db', 0, { from: 'n1', to: '' }), 'bad_request', /to/);
      assert.equal(t.seen.length, 2, 'nothing more was sent');
      // An answer that is not a move's is internal, naming the field; an error answer is the controller's own.
      const odd = createClient(new FakeTransport(() => ({ volume: 'db', shard: 1, members: [], term: 3, lsn: 17 })), { cluster: CLUSTER, nowMs: () => NOW });
      await rejectsWith(odd.moveReplica('db', 1, { from: 'n2', to: 'n4' }), 'internal', /members/);
      const refused = createClient(new FakeTransport(() => errorReply(new ProtocolError('unavailable', 'the move of shard 1 is under way'))), { cluster: CLUSTER, nowMs: () => NOW });
      await rejectsWith(refused.moveReplica('db', 1, { from: 'n2', to: 'n4' }), 'unavailable', /under way/);
    });

    it('lists, describes, deletes and reports status with validated replies', async () => {
      const status = { node: { id: 'n1', cluster: CLUSTER, version: '0.1.0', uptimeMs: 5 }, volumes: [], extra: 1 };
      const t = new FakeTransport((subject) => {
        if (subject.endsWith('volume.list')) return { volumes: [volume()] };
        if (subject.endsWith('volume.info')) return volume();
        if (subject.endsWith('volume.delete')) return { deleted: true };
        if (subject.endsWith('status')) return status;
        return assert.fail(subject);
      });
      const client = createClient(t, { cluster: CLUSTER });
      assert.deepEqual(await client.listVolumes(), [volume()]);
      assert.deepEqual(await client.volumeInfo('vol'), volume());
      assert.equal(await client.deleteVolume('vol'), undefined);
      assert.equal(await client.deleteVolume('vol', { requestId: 'mine-1' }), undefined);
      assert.deepEqual(await client.status(), status);
      const deleteId = (t.seen[2]!.body as { requestId: string }).requestId;
      assert.match(deleteId, UUID);
      assert.deepEqual(
        t.seen.map((s) => [s.subject, s.body]),
        [
          ['strata.test.api.volume.list', {}],
          ['strata.test.api.volume.info', { name: 'vol' }],
          ['strata.test.api.volume.delete', { name: 'vol', requestId: deleteId }],
          ['strata.test.api.volume.delete', { name: 'vol', requestId: 'mine-1' }],
          ['strata.test.api.status', {}],
        ],
      );
      // A request id that is not one is refused before anything is sent.
      await rejectsWith(client.deleteVolume('vol', { requestId: 'has space' }), 'bad_request', /requestId/);
      await rejectsWith(client.createVolume({ name: 'x', pageCount: 1, requestId: '' }), 'bad_request', /requestId/);
      assert.equal(t.seen.length, 5);
    });

    it('turns an error reply into a ProtocolError with its code and details', async () => {
      const t = new FakeTransport(() => errorReply(new ProtocolError('not_found', 'no volume "x"', { name: 'x' })));
      const err = await rejectsWith(createClient(t).volumeInfo('x'), 'not_found', /no volume/);
      assert.deepEqual(err.details, { name: 'x' });
    });

    it('turns an undecodable reply into internal', async () => {
      const t = new FakeTransport(() => Uint8Array.of(0xff, 0xff, 0x00));
      await rejectsWith(createClient(t).listVolumes(), 'internal', /malformed reply to volume.list/);
    });

    it('turns a reply that does not validate into internal naming the field', async () => {
      const t = new FakeTransport(() => ({ volumes: [{ name: 'x' }] }));
      const err = await rejectsWith(createClient(t).listVolumes(), 'internal', /volumes\[0\]\.id/);
      assert.equal(err.details?.type, 'volume.list');
    });

    it('passes a transport timeout on as timeout', async () => {
      const t = new FakeTransport((subject, _b, seen) => {
        throw new ProtocolError('timeout', `no reply on ${subject} within ${seen.timeoutMs} ms`);
      });
      const err = await rejectsWith(createClient(t, { timeoutMs: 50 }).status(), 'timeout', /^no reply on strata\.dev\.api\.status within \d+ ms$/);
      // What is left of the call's 50 ms when it reaches the transport: a busy machine may have used a little.
      const given = t.seen[0]!.timeoutMs;
      assert.ok(given > 0 && given <= 50, `transport timeout ${given} ms`);
      assert.match(err.message, new RegExp(`within ${given} ms`));
    });

    it('maps a transport failure that is not a ProtocolError to unavailable', async () => {
      const t = new FakeTransport(() => {
        throw new Error('socket went away');
      });
      await rejectsWith(createClient(t).status(), 'unavailable', /socket went away/);
    });

    it('refuses an API request bigger than max_payload before sending', async () => {
      const t = new FakeTransport(() => assert.fail('nothing may be sent'));
      t.maxPayloadBytes = 64;
      await rejectsWith(createClient(t).createVolume({ name: 'a'.repeat(60), pageCount: 1 }), 'too_large');
      assert.equal(t.seen.length, 0);
    });

    it('apiRequest sends the body as given to the API subject; rawRequest passes bytes and headers through', async () => {
      const t = new FakeTransport((subject, body) => {
        if (subject.endsWith('page.read')) return { pages: [new Uint8Array(4096)], lsn: 3 };
        return { echo: body };
      });
      const client = createClient(t, { cluster: CLUSTER, timeoutMs: 1000 });
      const reply = await client.apiRequest('page.read', { volume: 'vol', pages: [7] });
      assert.equal(reply.lsn, 3);
      assert.equal(t.seen[0]!.subject, 'strata.test.api.page.read');
      assert.equal(t.seen[0]!.headers[HEADER_TYPE], 'page.read');
      const raw = await client.rawRequest('strata.test.api.status', encode({ any: 1 }), { 'Strata-Type': 'nonsense' }, { timeoutMs: 77 });
      assert.deepEqual(decode(raw), { echo: { any: 1 } });
      assert.deepEqual(t.seen[1]!.headers, { 'Strata-Type': 'nonsense' });
      assert.equal(t.seen[1]!.timeoutMs, 77);
    });

    it('refuses calls after close, and close is bounded when the transport hangs', async () => {
      const t = new FakeTransport(() => ({ volumes: [] }));
      t.closeHangs = true;
      const client = createClient(t, { timeoutMs: 30 });
      // Bounded by the client's timeout: the one timer its close sets.
      const { delays } = await timerDelaysDuring(() => client.close());
      assert.ok(delays.includes(30), `timers set: ${delays.join(', ')}`);
      assert.ok(t.closed);
      await rejectsWith(client.listVolumes(), 'unavailable', /closed/);
      await client.close();
    });

    it('checks the cluster name and timeout', () => {
      const t = new FakeTransport(() => ({}));
      throwsWith(() => createClient(t, { cluster: 'a.b' }), 'bad_request');
      throwsWith(() => createClient(t, { timeoutMs: 0 }), 'bad_request');
      throwsWith(() => createClient(t, { timeoutMs: 1.5 }), 'bad_request');
      throwsWith(() => createClient(t, { timeoutMs: 24 * 3600 * 1000 }), 'bad_request');
    });
  });

  describe('Volume: routing, splitting, merging', () => {
    it('requests of one type and deadline share their headers, frozen; another type or deadline has its own', async () => {
      const fc = new FakeCluster();
      let now = NOW;
      const vol = createClient(fc.transport, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => now }).volume('vol');
      await vol.write(1, pageData(1));
      await vol.write(2, pageData(2));
      await vol.read(1);
      await vol.read(2);
      now += 1;
      await vol.read(1);
      const [w1, w2, r1, r2, r3] = fc.transport.shardRequests();
      assert.equal(w1!.given, w2!.given, 'two writes of one deadline');
      assert.ok(Object.isFrozen(w1!.given));
      assert.equal(w1!.headers['Strata-Type'], 'shard.write');
      assert.equal(r1!.given, r2!.given, 'two reads of one deadline');
      assert.notEqual(r1!.given, w1!.given);
      assert.equal(r1!.headers['Strata-Type'], 'shard.read');
      assert.notEqual(r3!.given, r1!.given, 'a read a millisecond later');
      assert.equal(Number(r3!.headers['Strata-Deadline']), Number(r1!.headers['Strata-Deadline']) + 1);
      assert.equal(r3!.headers['Strata-Type'], 'shard.read');
    });

    it('fetches the volume info once and routes each page to its shard subject', async () => {
      const fc = new FakeCluster();
      const vol = fc.client().volume('vol');
      const pages = [9, 0, 1, 2, 3, 4, 5, 6, 7, 8].map((page) => ({ page, data: pageData(page) }));
      const result = await vol.writePages(pages);
      await vol.write(11, pageData(11));
      assert.equal(fc.transport.apiRequests('volume.info').length, 1, 'info is cached');
      const writes = fc.transport.shardRequests();
      // pages 0-9 with stripe 2 over 4 shards: shard 0 {0,1,8,9}, 1 {2,3}, 2 {4,5}, 3 {6,7}; one request each
      assert.deepEqual(
        writes.slice(0, 4).map((s) => [s.subject, (s.body as { pages: Array<{ page: number }> }).pages.map((p) => p.page)]),
        [
          ['strata.test.shard.v1.0.leaders', [9, 0, 1, 8]],
          ['strata.test.shard.v1.1.leaders', [2, 3]],
          ['strata.test.shard.v1.2.leaders', [4, 5]],
          ['strata.test.shard.v1.3.leaders', [6, 7]],
        ],
      );
      for (const s of writes) assert.equal(s.headers[HEADER_TYPE], 'shard.write');
      assert.equal(writes[4]!.subject, 'strata.test.shard.v1.1.leaders', 'page 11 is on shard 1');
      assert.deepEqual(result, {
        lsn: 1,
        lsns: [0, 1, 2, 3].map((shard) => ({ shard, lsn: 1, term: 1 })),
      });
    });

    it('calls that share a volume-info fetch each keep their own deadline: a short one neither fails nor holds the others', async () => {
      const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
      // The catalog answers when the test lets it (at the latest after 10 s); a request given
      // less than 100 ms times out, as NATS would.
      let answerInfo!: () => void;
      const infoAnswered = new Promise<void>((r) => (answerInfo = r));
      const fallback = setTimeout(() => answerInfo(), 10_000);
      const t = new FakeTransport(async (subject, _body, seen) => {
        if (!subject.endsWith('.api.volume.info')) return { lsn: 1, term: 1 };
        if (seen.timeoutMs < 100) {
          await sleep(seen.timeoutMs);
          throw new ProtocolError('timeout', 'no answer in time');
        }
        await infoAnswered;
        return volume();
      });
      try {
        const vol = createClient(t, { cluster: CLUSTER, timeoutMs: 5000 }).volume('vol');
        let infoCame = false;
        void infoAnswered.then(() => (infoCame = true));
        const short = vol.writePages([{ page: 1, data: pageData(1) }], { deadlineMs: Date.now() + 30 });
        const long = vol.writePages([{ page: 2, data: pageData(2) }]);
        await rejectsWith(short, 'timeout', /info of volume vol/);
        assert.equal(infoCame, false, 'the short call gave up at its own deadline, not holding on for the info');
        answerInfo();
        assert.equal((await long).lsn, 1, 'the other call was not failed by the short one');
        assert.equal(t.apiRequests('volume.info').length, 1, 'one fetch for both');
      } finally {
        clearTimeout(fallback);
      }
    });

    it('a shard\'s pages read in several requests reflect one LSN: a request answered at an older LSN is read again at the newest', async () => {
      const fc = new FakeCluster(volume({ pageSize: 8192, shards: 1, stripePages: 1000 }));
      const chunk = pagesPerRequest(8192, MESSAGE_BYTES_MAX);
      const pages = Array.from({ length: chunk + 10 }, (_, i) => i);
      let reads = 0;
      fc.shardHook = (_shard, seen) => {
        const body = seen.body as { pages: number[]; lsn?: number };
        reads++;
        // The first request is answered at LSN 10, the second (a write came in between) at 11.
        const lsn = body.lsn ?? (reads === 1 ? 10 : 11);
        return { pages: body.pages.map(() => new Uint8Array(8192).fill(lsn)), lsn };
      };
      const result = await fc.client().volume('vol').readPages(pages);
      const sent = fc.transport.shardRequests().map((s) => s.body as { pages: number[]; lsn?: number });
      assert.equal(sent.length, 3);
      assert.deepEqual(sent[2], { pages: pages.slice(0, chunk), lsn: 11 }, 'the older chunk is read again at LSN 11');
      assert.ok(result.pages.every((p) => p[0] === 11), 'every page is as of LSN 11');
      assert.deepEqual(result.lsns, [{ shard: 0, lsn: 11 }]);
    });

    it('a write that fails after some of its requests committed says it was partly applied (same code, details.partial)', async () => {
      const fc = new FakeCluster();
      fc.shardHook = (shard) => (shard === 2 ? errorReply(new ProtocolError('overloaded', 'device queue is full')) : undefined);
      const vol = fc.client().volume('vol');
      // pages 0..7 with stripe 2 over 4 shards: two pages on each shard, shard 2 refuses its two.
      const err = await rejectsWith(vol.writePages(Array.from({ length: 8 }, (_, page) => ({ page, data: pageData(page) }))), 'overloaded', /partly applied: 6 of its 8 pages were committed/);
      assert.deepEqual({ partial: err.details?.partial, committed: err.details?.pagesCommitted, pages: err.details?.pages }, { partial: true, committed: 6, pages: 8 });
      // Nothing committed: the error is as it came.
      fc.shardHook = () => errorReply(new ProtocolError('overloaded', 'device queue is full'));
      const whole = await rejectsWith(vol.writePages([{ page: 4, data: pageData(4) }]), 'overloaded');
      assert.equal(whole.details?.partial, undefined);
    });

    it('a range made zeros that fails after some of its shards committed their part says so (same code, details.partial, shards counted)', async () => {
      const fc = new FakeCluster();
      fc.shardHook = (shard) => (shard === 1 ? errorReply(new ProtocolError('no_space', 'the device is under its reserve')) : undefined);
      const vol = fc.client().volume('vol');
      // Pages 0..7 with stripe 2 over 4 shards: one request to each shard, shard 1 refuses its part.
      const err = await rejectsWith(vol.zeroPages(0, 8), 'no_space', /partly made zeros: 3 of the 4 shards holding its pages committed their part/);
      assert.deepEqual({ partial: err.details?.partial, committed: err.details?.shardsCommitted, shards: err.details?.shards }, { partial: true, committed: 3, shards: 4 });
      // On one shard alone, nothing committed: the error is as it came.
      const whole = await rejectsWith(vol.zeroPages(2, 2), 'no_space');
      assert.equal(whole.details?.partial, undefined);
    });

    it('reports the highest LSN overall and per shard', async () => {
      const fc = new FakeCluster();
      const vol = fc.client().volume('vol');
      await vol.write(0, pageData(0));
      await vol.write(1, pageData(1));
      const result = await vol.writePages([{ page: 2, data: pageData(2) }, { page: 8, data: pageData(8) }]);
      assert.deepEqual(result, {
        lsn: 3,
        lsns: [
          { shard: 0, lsn: 3, term: 1 },
          { shard: 1, lsn: 1, term: 1 },
        ],
      });
    });

    it('reads pages back in request order, repeats included, across shards', async () => {
      const fc = new FakeCluster();
      const vol = fc.client().volume('vol');
      const all = Array.from({ length: 40 }, (_, page) => ({ page, data: pageData(page) }));
      await vol.writePages(all);
      const want = [17, 3, 3, 0, 39, 8, 17, 22];
      const got = await vol.read(want);
      assert.equal(got.length, want.length);
      got.forEach((data, i) => assert.deepEqual(data, pageData(want[i]!), `entry ${i} (page ${want[i]})`));
      const one = await vol.read(5);
      assert.ok(one instanceof Uint8Array);
      assert.deepEqual(one, pageData(5));
      const reads = fc.transport.shardRequests().filter((s) => s.headers[HEADER_TYPE] === 'shard.read');
      assert.equal(reads.length, 3 + 1, 'one request per shard touched (0, 1, 3), then one for page 5');
      const result = await vol.readPages([0, 2]);
      assert.equal(result.lsn, 1);
      assert.deepEqual(result.lsns, [{ shard: 0, lsn: 1 }, { shard: 1, lsn: 1 }]);
    });

    it('returns pages as plain Uint8Arrays even when the transport hands over Buffers', async () => {
      const fc = new FakeCluster();
      const base = fc.transport.handler;
      fc.transport.handler = async (subject, body, seen) => Buffer.from(encode(await base(subject, body, seen)));
      const vol = fc.client().volume('vol');
      await vol.write(3, pageData(3));
      const page = await vol.read(3);
      assert.equal(Object.getPrototypeOf(page), Uint8Array.prototype);
      assert.deepEqual(page, pageData(3));
    });

    it('passes the read LSN to every shard', async () => {
      const fc = new FakeCluster();
      const vol = fc.client().volume('vol');
      await vol.read([0, 2, 4], { lsn: 12 });
      for (const s of fc.transport.shardRequests()) assert.equal((s.body as { lsn?: number }).lsn, 12);
    });

    it('splits a shard request at the per-request data limit', async () => {
      const fc = new FakeCluster(volume({ shards: 1, stripePages: 256, pageCount: 4096 }));
      const vol = fc.client().volume('vol');
      const count = 600;
      await vol.writePages(Array.from({ length: count }, (_, page) => ({ page, data: pageData(page) })));
      const perRequest = Math.min(PAGES_PER_REQUEST_MAX, Math.floor(REQUEST_DATA_BYTES_MAX / 4096));
      const sizes = fc.transport.shardRequests().map((s) => (s.body as { pages: unknown[] }).pages.length);
      assert.deepEqual(sizes, [perRequest, perRequest, count - 2 * perRequest]);
      const got = await vol.read(Array.from({ length: count }, (_, i) => count - 1 - i));
      got.forEach((data, i) => assert.deepEqual(data, pageData(count - 1 - i)));
      const readSizes = fc.transport.shardRequests().slice(3).map((s) => (s.body as { pages: unknown[] }).pages.length);
      assert.deepEqual(readSizes, [perRequest, perRequest, count - 2 * perRequest]);
    });

    it('splits by the server max_payload and keeps every message within it', async () => {
      const fc = new FakeCluster(volume({ shards: 2, stripePages: 100 }));
      fc.transport.maxPayloadBytes = 64 * 1024;
      const vol = fc.client().volume('vol');
      await vol.writePages(Array.from({ length: 200 }, (_, page) => ({ page, data: pageData(page) })));
      const writes = fc.transport.shardRequests();
      const per = pagesPerRequest(4096, 64 * 1024);
      assert.ok(per >= 1 && per < 16, `pages per request ${per}`);
      assert.equal(writes.length, 2 * Math.ceil(100 / per));
      for (const s of writes) assert.ok(s.bytes <= 64 * 1024, `${s.bytes} bytes`);
      const got = await vol.read(Array.from({ length: 200 }, (_, i) => i));
      got.forEach((data, i) => assert.deepEqual(data, pageData(i)));
    });

    it('pagesPerRequest respects every limit and refuses a page that can not fit', () => {
      assert.equal(pagesPerRequest(4096, MESSAGE_BYTES_MAX), Math.floor(REQUEST_DATA_BYTES_MAX / 4096));
      assert.equal(pagesPerRequest(8192, MESSAGE_BYTES_MAX), Math.floor(REQUEST_DATA_BYTES_MAX / 8192));
      assert.equal(pagesPerRequest(4096, 64 * 1024 * 1024), Math.floor(REQUEST_DATA_BYTES_MAX / 4096));
      throwsWith(() => pagesPerRequest(8192, 8192), 'too_large');
    });

    it('fails a page that can not fit in one message with too_large before sending it', async () => {
      const fc = new FakeCluster();
      fc.transport.maxPayloadBytes = 4096;
      const vol = fc.client().volume('vol');
      await rejectsWith(vol.write(0, pageData(0)), 'too_large', /max_payload/);
      await rejectsWith(vol.read(0), 'too_large', /max_payload/);
      assert.equal(fc.transport.shardRequests().length, 0);
    });

    it('sends the requests of a call concurrently, bounded', async () => {
      const fc = new FakeCluster(volume({ shards: 128, stripePages: 1, pageCount: 1024 }));
      const slow = fc.transport.handler;
      fc.transport.handler = async (subject, body, seen) => {
        await new Promise((resolve) => setTimeout(resolve, 2));
        return slow(subject, body, seen);
      };
      await fc.client().volume('vol').writePages(Array.from({ length: 128 }, (_, page) => ({ page, data: pageData(page) })));
      assert.equal(fc.transport.shardRequests().length, 128);
      assert.ok(fc.transport.inFlightMax > 1, 'concurrent');
      assert.ok(fc.transport.inFlightMax <= REQUESTS_IN_FLIGHT_MAX, `at most ${REQUESTS_IN_FLIGHT_MAX} in flight`);
    });

    it('flushes every shard and reports the highest LSN', async () => {
      const fc = new FakeCluster();
      const vol = fc.client().volume('vol');
      await vol.writePages([0, 2].map((page) => ({ page, data: pageData(page) })));
      await vol.write(10, pageData(10));
      const result = await vol.flush();
      const flushes = fc.transport.shardRequests().filter((s) => s.headers[HEADER_TYPE] === 'shard.flush');
      assert.deepEqual(flushes.map((s) => s.subject), [0, 1, 2, 3].map((i) => `strata.test.shard.v1.${i}`));
      assert.deepEqual(result.lsns.map((l) => l.lsn), [1, 2, 0, 0]);
      assert.equal(result.lsn, 2);
    });

    it('info() returns the cached volume info', async () => {
      const fc = new FakeCluster();
      const vol = fc.client().volume('vol');
      assert.deepEqual(await vol.info(), volume());
      assert.deepEqual(await vol.info(), volume());
      assert.equal(fc.transport.apiRequests('volume.info').length, 1);
    });

    it('turns a read reply with the wrong number of pages into internal', async () => {
      const fc = new FakeCluster();
      fc.shardHook = () => ({ pages: [], lsn: 1 });
      await rejectsWith(fc.client().volume('vol').read([0, 1]), 'internal', /expected 2 pages/);
    });

    it('turns a read reply with a short page into internal', async () => {
      const fc = new FakeCluster();
      fc.shardHook = () => ({ pages: [new Uint8Array(10)], lsn: 1 });
      await rejectsWith(fc.client().volume('vol').read(0), 'internal', /expected 4096 bytes/);
    });

    it('fails the call with the first error reply when one shard fails (no retry)', async () => {
      const fc = new FakeCluster();
      fc.shardHook = (shard) => (shard === 2 ? errorReply(new ProtocolError('overloaded', 'mailbox full')) : undefined);
      const vol = fc.client().volume('vol');
      await rejectsWith(vol.writePages([0, 2, 4, 6].map((page) => ({ page, data: pageData(page) }))), 'overloaded', /mailbox full/);
      assert.equal(fc.transport.shardRequests().length, 4, 'no retry of a non-routing error');
      assert.equal(fc.transport.apiRequests('volume.info').length, 1);
    });

    it('fails with timeout without sending when the deadline has passed (clock moved during the info fetch)', async () => {
      const fc = new FakeCluster();
      let now = NOW;
      const base = fc.transport.handler;
      fc.transport.handler = (subject, body, seen) => {
        if (subject.endsWith('volume.info')) now = NOW + 20_000;
        return base(subject, body, seen);
      };
      const client = createClient(fc.transport, { cluster: CLUSTER, nowMs: () => now });
      await rejectsWith(client.volume('vol').write(0, pageData(0)), 'timeout', /deadline passed/);
      assert.equal(fc.transport.shardRequests().length, 0);
    });

    it('gives every shard request the same deadline and the time left as its NATS timeout', async () => {
      const fc = new FakeCluster();
      let now = NOW;
      const base = fc.transport.handler;
      fc.transport.handler = (subject, body, seen) => {
        if (subject.endsWith('volume.info')) now = NOW + 4000;
        return base(subject, body, seen);
      };
      const client = createClient(fc.transport, { cluster: CLUSTER, nowMs: () => now });
      await client.volume('vol').write(0, pageData(0));
      const [write] = fc.transport.shardRequests();
      assert.equal(write!.headers[HEADER_DEADLINE], String(NOW + 10_000));
      // The first of SHARD_WRITE_TRIES tries waits WRITE_TRY_MS_MIN of the 6 s left.
      assert.equal(write!.timeoutMs, WRITE_TRY_MS_MIN);
    });

    it("a call's deadlineMs, when earlier than timeoutMs away, is the deadline of its requests; a later one is not", async () => {
      const t = new FakeTransport((subject, _body, seen) => {
        if (subject.endsWith('.api.volume.info')) return volume({ shards: 1 });
        return seen.headers[HEADER_TYPE] === 'shard.read' ? { pages: [new Uint8Array(4096)], lsn: 1 } : { lsn: 1 };
      });
      const vol = createClient(t, { cluster: CLUSTER, nowMs: () => NOW }).volume('vol');
      await vol.writePages([{ page: 0, data: pageData(0) }], { deadlineMs: NOW + 1500 });
      await vol.readPages([0], { deadlineMs: NOW + 60_000 });
      await vol.flush({ deadlineMs: NOW + 700 });
      const sent = t.shardRequests().map((r) => [r.headers[HEADER_DEADLINE], r.timeoutMs]);
      // The read's first try: 1 s of its 10 s (sendInTries); the flush's 700 ms, too short to
      // split, is one try.
      assert.deepEqual(sent, [[String(NOW + 1500), 1500], [String(NOW + 1000), 1000], [String(NOW + 700), 700]]);
      await rejectsWith(vol.flush({ deadlineMs: NOW - 1 }), 'timeout', /deadline passed/);
      await rejectsWith(vol.flush({ deadlineMs: 1.5 }), 'bad_request', /deadlineMs/);
    });
  });

  describe('Volume: argument validation before the network', () => {
    const cases: Array<[string, (v: ReturnType<ReturnType<FakeCluster['client']>['volume']>) => Promise<unknown>, string, RegExp]> = [
      ['page ≥ pageCount (write)', (v) => v.write(1000, pageData(0)), 'out_of_range', /pages\[0\]\.page/],
      ['page ≥ pageCount (read)', (v) => v.read([1, 1000]), 'out_of_range', /pages\[1\]/],
      ['negative page', (v) => v.read(-1), 'bad_request', /pages\[0\]/],
      ['fractional page', (v) => v.write(1.5, pageData(0)), 'bad_request', /pages\[0\]\.page/],
      ['data shorter than pageSize', (v) => v.write(1, new Uint8Array(100)), 'bad_request', /expected 4096 bytes, got 100/],
      ['data of 8192 bytes on a 4096 volume', (v) => v.write(1, new Uint8Array(8192)), 'bad_request', /pages\[0\]\.data/],
      ['data not bytes', (v) => v.write(1, 'text' as unknown as Uint8Array), 'bad_request', /byte string/],
      ['duplicate page', (v) => v.writePages([{ page: 3, data: pageData(3) }, { page: 3, data: pageData(3) }]), 'bad_request', /duplicate page 3/],
      ['empty write', (v) => v.writePages([]), 'bad_request', /at least 1/],
      ['empty read', (v) => v.read([]), 'bad_request', /at least 1/],
      ['too many pages', (v) => v.read(new Array(CALL_PAGES_MAX + 1).fill(0)), 'too_large', /at most/],
      ['negative lsn', (v) => v.read(0, { lsn: -1 }), 'bad_request', /lsn/],
    ];
    for (const [name, call, code, pattern] of cases) {
      it(`rejects ${name}`, async () => {
        const fc = new FakeCluster();
        await rejectsWith(call(fc.client().volume('vol')), code, pattern);
        assert.equal(fc.transport.shardRequests().length, 0, 'no shard request sent');
      });
    }
  });

  describe('Volume: no responders', () => {
    it('refreshes the volume info and retries only the missed requests once', async () => {
      const fc = new FakeCluster();
      noLeaderOnce(fc);
      const vol = fc.client().volume('vol');
      const result = await vol.writePages([0, 2, 4].map((page) => ({ page, data: pageData(page) })));
      assert.equal(fc.transport.apiRequests('volume.info').length, 2, 'info refreshed');
      assert.deepEqual(
        fc.transport.shardRequests().map((s) => s.subject),
        ['strata.test.shard.v1.0.leaders', 'strata.test.shard.v1.1.leaders', 'strata.test.shard.v1.2.leaders', 'strata.test.shard.v1.1.leaders'],
      );
      // The first send reached no leader: the next is a first try again (no sentMs).
      assert.deepEqual(fc.transport.shardRequests().map((s) => (s.body as { sentMs?: number }).sentMs), [undefined, undefined, undefined, undefined]);
      assert.equal(result.lsns.length, 3);
    });

    it('retries only the missed requests when the volume grew meanwhile (a resize keeps its id): the answered ones are not written twice', async () => {
      const fc = new FakeCluster();
      noLeaderOnce(fc, () => fc.volumes.set('vol', volume({ pageCount: 2000 })));
      const vol = fc.client().volume('vol');
      const result = await vol.writePages([0, 2, 4].map((page) => ({ page, data: pageData(page) })));
      assert.equal(fc.transport.apiRequests('volume.info').length, 2, 'info refreshed');
      assert.deepEqual(
        fc.transport.shardRequests().map((s) => s.subject),
        ['strata.test.shard.v1.0.leaders', 'strata.test.shard.v1.1.leaders', 'strata.test.shard.v1.2.leaders', 'strata.test.shard.v1.1.leaders'],
        'shards 0 and 2 committed their pages once; only shard 1 is sent again',
      );
      const writeIds = fc.transport.shardRequests().map((s) => (s.body as { writeId: Uint8Array }).writeId);
      assert.deepEqual(writeIds[3], writeIds[1], "shard 1's retry carries its first write id");
      assert.equal(result.lsns.length, 3);
    });

    it('plans the call again when the volume was created again under its name (another id)', async () => {
      const fc = new FakeCluster();
      noLeaderOnce(fc, () => fc.volumes.set('vol', volume({ id: 'v2' })));
      await fc.client().volume('vol').writePages([0, 2, 4].map((page) => ({ page, data: pageData(page) })));
      assert.deepEqual(
        fc.transport.shardRequests().map((s) => s.subject),
        [
          'strata.test.shard.v1.0.leaders', 'strata.test.shard.v1.1.leaders', 'strata.test.shard.v1.2.leaders',
          'strata.test.shard.v2.0.leaders', 'strata.test.shard.v2.1.leaders', 'strata.test.shard.v2.2.leaders',
        ],
      );
    });

    it('retries a shard with no leader with back-off, a bounded number of times, then gives unavailable', async () => {
      const fc = new FakeCluster();
      // A clock that the requests move: it stands at NOW until the retries after the refresh of the
      // volume info (the call and the refresh start at NOW, as the fake transport checks), then
      // each request to shard 2 takes 2 s of it: the 10 s call meets its deadline after a few
      // retries, whatever the real time the back-off takes.
      let now = NOW;
      let shard2 = 0;
      fc.shardHook = (shard, seen) => {
        if (shard !== 2) return undefined;
        if (++shard2 >= 2) now += 2000;
        throw new NoRespondersError(seen.subject);
      };
      const client = createClient(fc.transport, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => now });
      const err = await rejectsWith(client.volume('vol').read([0, 4]), 'unavailable', /shard 2 of volume vol/);
      assert.ok(now >= NOW + 10_000 - 250, `gave up at the deadline, not before (clock at NOW + ${now - NOW} ms)`);
      assert.ok(!(err instanceof NoRespondersError));
      assert.equal(err.details?.shard, 2);
      const tries = fc.transport.shardRequests().filter((s) => s.subject.endsWith('.2')).length;
      assert.ok(tries > 2 && tries < 2 + 45, `retried with back-off until the deadline, not up to the bound of attempts (${tries})`);
      assert.equal(fc.transport.shardRequests().filter((s) => s.subject.endsWith('.0')).length, 1, 'the shard that answered is not asked again');
    });

    it('a shard with no leader: the call ends by its deadline, no back-off pause is slept past it', async () => {
      // A clock that only the call's timers move: the back-off pauses (20 ms doubling to 250 ms).
      const transport = new FakeTransport((subject) => {
        if (subject.includes('.api.')) return volume();
        throw new NoRespondersError(subject);
      });
      const timeoutMs = 600;
      let now = NOW;
      const client = createClient(transport, { cluster: CLUSTER, timeoutMs, nowMs: () => now });
      const pauses = await timersFiredAtOnce(() => now, (ms) => (now += ms), () =>
        rejectsWith(client.volume('vol').read([0]), 'unavailable', /no host answers shard 0 of volume vol/),
      );
      assert.ok(pauses.length > 3, `paused between tries (${JSON.stringify(pauses)})`);
      for (const p of pauses) assert.ok(p.atMs + p.ms < NOW + timeoutMs, `a pause of ${p.ms} ms at NOW + ${p.atMs - NOW} ms ends past the ${timeoutMs} ms deadline`);
      assert.ok(now < NOW + timeoutMs, `ended by its deadline (clock at NOW + ${now - NOW} ms)`);
      assert.ok(transport.shardRequests().length > pauses.length, 'asked again after each pause');
    });

    it('a request sent again that its deadline overtook before it went out (fetching the volume info again took the time): the call fails with the failure before it, not timeout', async () => {
      let now = NOW;
      let infos = 0;
      const transport = new FakeTransport((subject) => {
        if (subject.includes('.api.')) {
          if (++infos === 2) now += 20_000;
          return volume();
        }
        throw new NoRespondersError(subject);
      });
      const client = createClient(transport, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => now });
      await rejectsWith(client.volume('vol').read([0]), 'unavailable', /no host answers shard 0 of volume vol/);
      assert.equal(infos, 2, 'the info was fetched again');
      assert.equal(transport.shardRequests().length, 1, 'the request was not sent again');
    });

    it('a shard that gets a leader while the client backs off is served', async () => {
      const fc = new FakeCluster();
      let misses = 3;
      fc.shardHook = (shard, seen) => {
        if (shard === 2 && misses-- > 0) throw new NoRespondersError(seen.subject);
        return undefined;
      };
      const pages = await fc.client().volume('vol').read([0, 4]);
      assert.equal((pages as Uint8Array[]).length, 2);
    });

    it('gives not_found when the volume was deleted, and fetches the info again on the next call', async () => {
      const fc = new FakeCluster();
      const vol = fc.client().volume('vol');
      await vol.write(0, pageData(0));
      fc.volumes.clear();
      await rejectsWith(vol.write(0, pageData(0)), 'not_found');
      await rejectsWith(vol.read(0), 'not_found');
      assert.equal(fc.transport.apiRequests('volume.info').length, 3, 'a failed refresh is not cached');
      fc.volumes.set('vol', volume());
      await vol.write(0, pageData(0));
    });

    it('re-plans the whole call when the volume was re-created with another geometry', async () => {
      const fc = new FakeCluster();
      const vol = fc.client().volume('vol');
      await vol.write(0, pageData(0));
      fc.volumes.set('vol', volume({ id: 'v2', shards: 2, stripePages: 1 }));
      await vol.writePages([0, 1, 2].map((page) => ({ page, data: pageData(page) })));
      const v2 = fc.transport.shardRequests().filter((s) => s.subject.includes('.v2.'));
      assert.deepEqual(
        v2.map((s) => [s.subject, (s.body as { pages: Array<{ page: number }> }).pages.map((p) => p.page)]),
        [
          ['strata.test.shard.v2.0.leaders', [0, 2]],
          ['strata.test.shard.v2.1.leaders', [1]],
        ],
      );
      for (const page of [0, 1, 2]) assert.equal(shardOfPage(page, { shards: 2, stripePages: 1 }), page % 2);
    });

    it('a volume held to its id (client.volume(name, { id })) fails not_found once the name is another volume\'s, sending it nothing', async () => {
      const fc = new FakeCluster();
      const held = fc.client().volume('vol', { id: 'v1' });
      await held.write(0, pageData(0));
      fc.volumes.set('vol', volume({ id: 'v2' }));
      const sent = fc.transport.shardRequests().length;
      await rejectsWith(held.write(2, pageData(2)), 'not_found', /volume vol \(id v1\) was deleted: the volume of that name now is another \(id v2\)/);
      assert.ok(fc.transport.shardRequests().slice(sent).every((r) => !r.subject.includes('.v2.')), 'nothing sent to the new volume');
      await rejectsWith(fc.client().volume('vol', { id: 'v1' }).read(0), 'not_found');
      throwsWith(() => fc.client().volume('vol', { id: '' }), 'bad_request');
    });

    it('re-validates against the new geometry when the volume was re-created smaller', async () => {
      const fc = new FakeCluster();
      const vol = fc.client().volume('vol');
      await vol.write(0, pageData(0));
      fc.volumes.set('vol', volume({ id: 'v2', pageCount: 10 }));
      await rejectsWith(vol.write(500, pageData(500)), 'out_of_range');
    });
  });

  describe('Volume: a write whose leader stepped down before committing it', () => {
    const deposed = (lsn: number, term: number) =>
      errorReply(new ProtocolError('not_leader', 'not the leader (stepped down); the write may or may not be committed', { term: term + 1, recordLsn: lsn, recordTerm: term }));
    const earlierOf = (s: { body: unknown }) => (s.body as { earlier?: unknown }).earlier;

    it('is sent again naming the record the deposed leader left, and only the shard that failed', async () => {
      const fc = new FakeCluster();
      let first = true;
      fc.shardHook = (shard) => {
        if (shard !== 1 || !first) return undefined;
        first = false;
        return deposed(7, 2);
      };
      const result = await fc.client().volume('vol').writePages([0, 2].map((page) => ({ page, data: pageData(page) })));
      assert.equal(result.lsns.length, 2);
      const sent = fc.transport.shardRequests();
      // Sent again, naming when it was first sent, with its write id.
      assert.deepEqual(sent.map((s) => s.subject), ['strata.test.shard.v1.0.leaders', 'strata.test.shard.v1.1.leaders', 'strata.test.shard.v1.1.leaders']);
      assert.deepEqual(sent.map(earlierOf), [undefined, undefined, [{ lsn: 7, term: 2 }]]);
      const bodies = sent.map((s) => s.body as { writeId: Uint8Array; sentMs?: number });
      assert.deepEqual(bodies.map((b) => b.sentMs), [undefined, undefined, NOW]);
      assert.deepEqual(bodies[2]!.writeId, bodies[1]!.writeId);
      assert.notDeepEqual(bodies[1]!.writeId, bodies[0]!.writeId, 'each shard request of a call its own id');
    });

    it('a not_leader that names no record (never written) is sent again as it was', async () => {
      const fc = new FakeCluster();
      let misses = 1;
      fc.shardHook = () => (misses-- > 0 ? errorReply(new ProtocolError('not_leader', 'not the leader', { term: 3 })) : undefined);
      await fc.client().volume('vol').write(0, pageData(0));
      assert.deepEqual(fc.transport.shardRequests().map(earlierOf), [undefined, undefined]);
    });

    it('names every earlier record, and fails as unknown (timeout) after more leader changes than a request may name', async () => {
      const fc = new FakeCluster();
      let lsn = 10;
      fc.shardHook = () => deposed(lsn++, 2);
      const err = await rejectsWith(fc.client().volume('vol').write(0, pageData(0)), 'timeout', /more than 8 leader changes; the write may or may not be committed/);
      const sent = fc.transport.shardRequests();
      assert.equal(sent.length, 9);
      assert.deepEqual(earlierOf(sent[8]!), [10, 11, 12, 13, 14, 15, 16, 17].map((l) => ({ lsn: l, term: 2 })));
      assert.equal((err.details?.['earlier'] as unknown[]).length, 9, 'the eight it named and the one it could not');
    });

    it('after an earlier attempt, any other failure is timeout (outcome unknown), not a code a caller would retry', async () => {
      for (const code of ['overloaded', 'unavailable', 'device_failed'] as const) {
        const fc = new FakeCluster();
        let n = 0;
        fc.shardHook = () => (n++ === 0 ? deposed(7, 2) : errorReply(new ProtocolError(code, `${code} now`)));
        const err = await rejectsWith(fc.client().volume('vol').write(0, pageData(0)), 'timeout', new RegExp(`^${code} now; an earlier attempt of this write may still commit`));
        assert.equal(err.details?.['code'], code);
        assert.deepEqual(err.details?.['earlier'], [{ lsn: 7, term: 2 }]);
      }
    });

    it('a leader whose device failed, or that was closed, names the record too: the write is sent again with it', async () => {
      for (const code of ['device_failed', 'unavailable'] as const) {
        const fc = new FakeCluster();
        let n = 0;
        fc.shardHook = () => (n++ === 0 ? errorReply(new ProtocolError(code, 'stopped', { recordLsn: 5, recordTerm: 3 })) : undefined);
        await fc.client().volume('vol').write(0, pageData(0));
        assert.deepEqual(fc.transport.shardRequests().map(earlierOf), [undefined, [{ lsn: 5, term: 3 }]], code);
      }
    });

    it('a final timeout that names the earlier record (a leader that cannot tell) ends the call: not sent again', async () => {
      const fc = new FakeCluster();
      let n = 0;
      fc.shardHook = () =>
        n++ === 0
          ? deposed(7, 2)
          : errorReply(new ProtocolError('timeout', 'an earlier attempt of this write (lsn 7, term 2) is below the log\'s first LSN 9; the write may or may not be committed', { recordLsn: 7, recordTerm: 2, firstLsn: 9 }));
      await rejectsWith(fc.client().volume('vol').write(0, pageData(0)), 'timeout', /below the log's first LSN 9/);
      assert.equal(fc.transport.shardRequests().length, 2);
    });

    it('another shard\'s failure, while one shard\'s earlier attempt may still commit, is timeout (outcome unknown), not the retryable code', async () => {
      const fc = new FakeCluster();
      fc.shardHook = (shard) => (shard === 0 ? deposed(7, 2) : shard === 1 ? errorReply(new ProtocolError('overloaded', 'shard v1/1 mailbox is full')) : undefined);
      const err = await rejectsWith(
        fc.client().volume('vol').writePages([0, 2].map((page) => ({ page, data: pageData(page) }))),
        'timeout',
        /^shard v1\/1 mailbox is full; an earlier attempt of this write to shard 0 may still commit/,
      );
      assert.equal(err.details?.['code'], 'overloaded');
      assert.deepEqual(err.details?.['earlier'], [{ lsn: 7, term: 2 }]);
    });

    it('after a try that got no answer, a refusal of the next is timeout (outcome unknown): the first may have been committed', async () => {
      for (const code of ['overloaded', 'no_space', 'stale_term', 'device_failed', 'unavailable'] as const) {
        const fc = new FakeCluster();
        let n = 0;
        fc.shardHook = (_shard, seen) => {
          if (n++ === 0) throw new ProtocolError('timeout', `no reply on ${seen.subject} within ${seen.timeoutMs} ms`);
          return errorReply(new ProtocolError(code, `${code} now`));
        };
        const err = await rejectsWith(fc.client().volume('vol').write(0, pageData(0)), 'timeout', new RegExp(`^${code} now; a try of this write that got no answer may still commit: the write may or may not be committed$`));
        assert.equal(err.details?.['code'], code);
        assert.equal(err.details?.['earlier'], undefined);
        assert.equal(fc.transport.shardRequests().length, 2, code);
      }
      // Without a try unanswered, the refusal is the answer: nothing was done.
      const fc = new FakeCluster();
      fc.shardHook = () => errorReply(new ProtocolError('overloaded', 'overloaded now'));
      await rejectsWith(fc.client().volume('vol').write(0, pageData(0)), 'overloaded', /^overloaded now$/);
    });

    it('another shard\'s refusal, while one shard\'s write got no answer to any try, is timeout (outcome unknown), whichever shard comes first', async () => {
      for (const [refusing, silent] of [[0, 1], [1, 0]] as const) {
        const fc = new FakeCluster();
        fc.shardHook = (shard, seen) => {
          if (shard === silent) throw new ProtocolError('timeout', `no reply on ${seen.subject} within ${seen.timeoutMs} ms`);
          return shard === refusing ? errorReply(new ProtocolError('overloaded', `shard v1/${refusing} mailbox is full`)) : undefined;
        };
        const err = await rejectsWith(fc.client().volume('vol').writePages([0, 2].map((page) => ({ page, data: pageData(page) }))), 'timeout');
        if (refusing === 0) {
          assert.match(err.message, /^shard v1\/0 mailbox is full; a try of this write to shard 1 that got no answer may still commit/);
          assert.equal(err.details?.['code'], 'overloaded');
        }
      }
    });

    it('a try that got no answer, then no responders, and the catalog refuses the info fetched again (overloaded): timeout (outcome unknown), not overloaded', async () => {
      const fc = new FakeCluster(volume({ shards: 1 }));
      const vol = fc.client().volume('vol');
      await vol.info();
      let tries = 0;
      fc.shardHook = (_shard, seen) => {
        if (++tries === 1) throw new ProtocolError('timeout', `no reply on ${seen.subject} within ${seen.timeoutMs} ms`);
        throw new NoRespondersError(seen.subject);
      };
      const handle = fc.transport.handler;
      fc.transport.handler = (subject, body, seen) => {
        if (subject.includes('.api.volume.info')) throw new ProtocolError('overloaded', 'the controller queue is full');
        return handle(subject, body, seen);
      };
      const e = await rejectsWith(vol.write(3, pageData(3)), 'timeout', /may or may not be committed/);
      assert.equal(e.details?.['code'], 'overloaded');
      assert.equal(e.details?.['outcomeUnknown'], true);
      assert.ok(fc.transport.apiRequests('volume.info').length >= 1, 'the info was fetched again');
    });

    it('a try that got no answer, then no leader until the deadline: timeout (outcome unknown), not not_leader', async () => {
      const fc = new FakeCluster();
      let n = 0;
      fc.shardHook = (_shard, seen) => {
        if (n++ === 0) throw new ProtocolError('timeout', `no reply on ${seen.subject} within ${seen.timeoutMs} ms`);
        return errorReply(new ProtocolError('not_leader', 'not the leader', { term: 3 }));
      };
      const started = Date.now();
      const client = createClient(fc.transport, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW + Math.max(0, Date.now() - started - 50) * 20 });
      const err = await rejectsWith(client.volume('vol').write(0, pageData(0)), 'timeout', /^no leader of shard 0 answered the write before its deadline; a try of it that got no answer may still commit/);
      assert.equal(err.details?.['code'], 'not_leader');
    });

    it('still without a leader at its deadline: timeout (outcome unknown), not a not_leader the caller would retry', async () => {
      const fc = new FakeCluster();
      fc.shardHook = () => deposed(7, 2);
      const started = Date.now();
      const client = createClient(fc.transport, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW + Math.max(0, Date.now() - started - 50) * 20 });
      const err = await rejectsWith(client.volume('vol').write(0, pageData(0)), 'timeout', /earlier attempt left with a deposed leader may still commit/);
      assert.deepEqual(err.details?.['earlier'], [{ lsn: 7, term: 2 }]);
      assert.ok(fc.transport.shardRequests().length > 2);
    });
  });

  describe('Volume: a leader handing its leadership over', () => {
    // What a leader answers while it hands its leadership to a follower (Replica.checkLeader).
    const handing = () => errorReply(new ProtocolError('unavailable', "shard v1/0 is handing its leadership to 'n2'; retry", { to: 'n2', handingOver: true }));
    const earlierOf = (s: { body: unknown }) => (s.body as { earlier?: unknown }).earlier;

    it('a write and a read it refused are sent again, and answered by the new leader', async () => {
      const fc = new FakeCluster();
      let refusals = 2;
      fc.shardHook = () => (refusals-- > 0 ? handing() : undefined);
      const vol = fc.client().volume('vol');
      await vol.write(0, pageData(0));
      assert.deepEqual(fc.transport.shardRequests().map(earlierOf), [undefined, undefined, undefined], 'sent again as it was: nothing was written');
      refusals = 1;
      assert.deepEqual(await vol.read(0), pageData(0));
      assert.equal(fc.transport.shardRequests().length, 5);
    });

    it('a write with an earlier attempt keeps naming it when sent again, and is not made an unknown outcome', async () => {
      const fc = new FakeCluster();
      let n = 0;
      fc.shardHook = () => {
        n++;
        if (n === 1) return errorReply(new ProtocolError('not_leader', 'not the leader (stepped down)', { term: 3, recordLsn: 7, recordTerm: 2 }));
        return n === 2 ? handing() : undefined;
      };
      await fc.client().volume('vol').write(0, pageData(0));
      assert.deepEqual(fc.transport.shardRequests().map(earlierOf), [undefined, [{ lsn: 7, term: 2 }], [{ lsn: 7, term: 2 }]]);
    });

    it('still handing over at its deadline: the refusal itself, naming the follower', async () => {
      const fc = new FakeCluster();
      fc.shardHook = () => handing();
      const started = Date.now();
      const client = createClient(fc.transport, { cluster: CLUSTER, timeoutMs: 10_000, nowMs: () => NOW + Math.max(0, Date.now() - started - 50) * 20 });
      const err = await rejectsWith(client.volume('vol').read(0), 'unavailable', /handing its leadership to 'n2'/);
      assert.equal(err.details?.['to'], 'n2');
      assert.ok(fc.transport.shardRequests().length > 2);
    });

    it('an unavailable that is not a handover (no quorum) is not sent again', async () => {
      const fc = new FakeCluster();
      fc.shardHook = () => errorReply(new ProtocolError('unavailable', 'no quorum', { to: 'n2' }));
      await rejectsWith(fc.client().volume('vol').read(0), 'unavailable', /no quorum/);
      assert.equal(fc.transport.shardRequests().length, 1);
    });
  });

  describe('Volume: found again when the catalog changed it', () => {
    it('a volume deleted and created again larger under its name: a page past the old end is written and read, not refused', async () => {
      const fc = new FakeCluster(volume({ pageCount: 16, shards: 1 }));
      const vol = fc.client().volume('vol');
      await vol.write(3, pageData(3));
      fc.volumes.set('vol', volume({ id: 'v2', pageCount: 1024, shards: 1 }));
      await vol.write(500, pageData(500));
      assert.deepEqual(await vol.read(500), pageData(500));
      assert.equal(fc.transport.apiRequests('volume.info').length, 2, 'its info fetched once more');
      // A page past the end of the volume as the catalog has it is still refused.
      await rejectsWith(vol.write(5000, pageData(0)), 'out_of_range', /page 5000/);
      await rejectsWith(vol.read(5000), 'out_of_range', /pages\[0\]/);
    });
  });

  describe('Volume: deleted while a write is in flight', () => {
    /** The first try of shard 1 answered by a leader whose replica was closed (its volume being deleted, here), naming the write's record; `then` runs with it. */
    function closedOnce(fc: FakeCluster, then: () => void): void {
      let first = true;
      fc.shardHook = (shard) => {
        if (shard !== 1 || !first) return undefined;
        first = false;
        then();
        return errorReply(new ProtocolError('unavailable', 'replica v1/1 closed; the write may or may not be committed (its record: lsn 20, term 1)', { recordLsn: 20, recordTerm: 1 }));
      };
    }

    it('ends not_found once the catalog says so, not at its deadline as of unknown outcome', async () => {
      const fc = new FakeCluster();
      closedOnce(fc, () => fc.volumes.delete('vol'));
      // Pages 2 and 3: shard 1's alone.
      const err = await rejectsWith(fc.client().volume('vol').writePages([2, 3].map((page) => ({ page, data: pageData(page) }))), 'not_found', /no such volume/);
      assert.equal(err.details?.['outcomeUnknown'], undefined);
      // The first send, then one try that met no responders, then the catalog asked.
      assert.equal(fc.transport.shardRequests().length, 2);
      assert.equal(fc.transport.apiRequests('volume.info').length, 2);
    });

    it('made again under its name: the write goes to the new volume', async () => {
      const fc = new FakeCluster();
      closedOnce(fc, () => fc.volumes.set('vol', volume({ id: 'v2' })));
      const vol = fc.client().volume('vol');
      await vol.writePages([2, 3].map((page) => ({ page, data: pageData(page) })));
      assert.deepEqual(
        fc.transport.shardRequests().map((s) => s.subject),
        ['strata.test.shard.v1.1.leaders', 'strata.test.shard.v1.1.leaders', 'strata.test.shard.v2.1.leaders'],
      );
      for (const page of [2, 3]) assert.deepEqual(fc.pages.get(`v2:${page}`), pageData(page));
    });

    it('a shard electing its leader (no responders, the volume still there) is asked again without a fetch of its info each try', async () => {
      const fc = new FakeCluster();
      let misses = 6;
      fc.shardHook = (shard, seen) => {
        if (shard !== 1) return undefined;
        if (misses === 6) {
          misses--;
          return errorReply(new ProtocolError('unavailable', 'replica v1/1 closed', { recordLsn: 20, recordTerm: 1 }));
        }
        if (misses-- > 0) throw new NoRespondersError(seen.subject);
        return undefined;
      };
      await fc.client().volume('vol').writePages([0, 2, 4].map((page) => ({ page, data: pageData(page) })));
      assert.equal(fc.transport.shardRequests().filter((s) => s.subject.includes('.v1.1.')).length, 7);
      // The client's clock stands still here: fetched once for the call, once again in the loop.
      assert.equal(fc.transport.apiRequests('volume.info').length, 2);
    });
  });

  describe('Volume: a refusal of the cached geometry checked again', () => {
    it('waits at most 2 s for a catalog that does not answer, then refuses as the cached geometry did', async () => {
      const fc = new FakeCluster(volume({ pageCount: 16, shards: 1 }));
      const vol = fc.client().volume('vol');
      await vol.write(3, pageData(3));
      // The catalog stops answering.
      const handler = fc.transport.handler;
      fc.transport.handler = (subject, body, seen) => (subject.endsWith('.api.volume.info') ? new Promise(() => undefined) : handler(subject, body, seen));
      // The wait is the one timer that fires (the catalog never answers): of GEOMETRY_RECHECK_MS, not the call's 10 s.
      const waits = await timersFiredAtOnce(() => NOW, () => undefined, () => rejectsWith(vol.write(500, pageData(500)), 'out_of_range', /the volume has 16 pages/));
      assert.deepEqual(waits.map((w) => w.ms), [GEOMETRY_RECHECK_MS]);
    });
  });

  describe('Volume: the cached info while the catalog is slow', () => {
    /** Holds every volume.info reply of `fc` until `release()`. */
    function holdInfo(fc: FakeCluster): { release: () => void } {
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      const handler = fc.transport.handler;
      fc.transport.handler = async (subject, body, seen) => {
        if (subject.endsWith('.api.volume.info')) await released;
        return handler(subject, body, seen);
      };
      return { release };
    }
    const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 10));

    it('a fetch that answers after the call that started it gave up on it becomes the cached info', async () => {
      const fc = new FakeCluster(volume({ pageCount: 16, shards: 1 }));
      const vol = fc.client().volume('vol');
      assert.equal((await vol.info()).id, 'v1');
      fc.volumes.set('vol', volume({ id: 'v2', pageCount: 1024, shards: 1 }));
      const { release } = holdInfo(fc);
      // The refresh is not answered before its deadline: the cached info is kept for it.
      assert.equal((await vol.info({ refresh: true, deadlineMs: NOW + 50 })).id, 'v1');
      release();
      await settle();
      assert.equal((await vol.info()).id, 'v2', 'the answer that came later is the cached info');
      await vol.write(500, pageData(500));
      assert.equal(fc.transport.apiRequests('volume.info').length, 2, 'no fetch more');
      assert.deepEqual(fc.transport.shardRequests().map((s) => s.subject), ['strata.test.shard.v2.0.leaders']);
    });

    it('a refresh with nothing cached ends at its deadline, not when the catalog gives up', async () => {
      // The catalog takes requests without answering: only the call's own bounds can end it, on
      // a clock its timers move; none waits past its deadline, 100 ms away (not the client's 3 s).
      const t = new FakeTransport(() => new Promise(() => undefined));
      let now = NOW;
      const vol = createClient(t, { cluster: CLUSTER, timeoutMs: 3000, nowMs: () => now }).volume('vol');
      const waits = await timersFiredAtOnce(() => now, (ms) => (now += ms), () =>
        rejectsWith(vol.info({ refresh: true, deadlineMs: NOW + 100 }), 'timeout', /did not come before the deadline/),
      );
      assert.ok(waits.length > 0);
      for (const w of waits) assert.ok(w.atMs + w.ms <= NOW + 100, `a wait of ${w.ms} ms at NOW + ${w.atMs - NOW} ms ends past the deadline`);
      assert.equal(now, NOW + 100, 'ended at its deadline');
    });

    it('calls refused by the cached geometry at once, with a catalog that does not answer, are all refused as it did', async () => {
      const fc = new FakeCluster(volume({ pageCount: 16, shards: 1 }));
      const vol = fc.client().volume('vol');
      await vol.write(3, pageData(3));
      const { release } = holdInfo(fc);
      try {
        const results = await Promise.allSettled([vol.write(500, pageData(500)), vol.read(600)]);
        assert.deepEqual(
          results.map((r) => (r.status === 'rejected' && r.reason instanceof ProtocolError ? r.reason.code : r.status)),
          ['out_of_range', 'out_of_range'],
        );
      } finally {
        release();
      }
    });
  });

  describe('Volume: a shard read again at one LSN', () => {
    it('a volume deleted and created again under its name between the reads: every page is of one volume', async () => {
      const geometry: Partial<VolumeInfo> = { pageSize: 8192, shards: 1, stripePages: 1000 };
      const fc = new FakeCluster(volume(geometry));
      const chunk = pagesPerRequest(8192, MESSAGE_BYTES_MAX);
      const pages = Array.from({ length: chunk + 10 }, (_, i) => i);
      let v1Reads = 0;
      fc.shardHook = (_shard, seen) => {
        const body = seen.body as { pages: number[]; lsn?: number };
        const { volumeId } = parseShardSubject(seen.subject);
        let lsn = body.lsn ?? 20;
        if (volumeId === 'v1') {
          // v1's first request is answered at LSN 10, its second at 11; then v1 is deleted and
          // created again (v2, the same geometry, its shard at LSN 20).
          lsn = ++v1Reads === 1 ? 10 : 11;
          if (v1Reads === 2) fc.volumes.set('vol', volume({ ...geometry, id: 'v2' }));
        }
        return { pages: body.pages.map(() => new Uint8Array(8192).fill(volumeId === 'v1' ? 1 : 2)), lsn };
      };
      const result = await fc.client().volume('vol').readPages(pages);
      const from = new Set(result.pages.map((p) => p[0]));
      assert.deepEqual([...from], [2], 'every page is of the volume as it is now');
      assert.deepEqual(result.lsns, [{ shard: 0, lsn: 20 }]);
    });
  });

  describe('Volume: options', () => {
    it('null options are none; options that are not a map are bad_request', async () => {
      const fc = new FakeCluster();
      const client = fc.client();
      const vol = client.volume('vol');
      await vol.writePages([{ page: 0, data: pageData(0) }], null);
      assert.deepEqual(await vol.read(0, null), pageData(0));
      assert.equal((await vol.readPages([0], null)).pages.length, 1);
      assert.equal((await vol.info(null)).name, 'vol');
      await vol.flush(null);
      await rejectsWith(vol.flush(5 as never), 'bad_request', /options: expected a map/);
      assert.equal(createClient(fc.transport, null).cluster, CLUSTER_DEFAULT, 'null client options: the defaults');
    });
  });

  describe('connect', () => {
    it('checks its options', async () => {
      await rejectsWith(connect({ servers: 'nats://127.0.0.1:1', cluster: 'a.b' }), 'bad_request', /cluster/);
      await rejectsWith(connect({ servers: 'nats://127.0.0.1:1', timeoutMs: -1 }), 'bad_request', /timeoutMs/);
      await rejectsWith(connect({ servers: [] }), 'bad_request', /servers/);
    });

    it('gives unavailable when no NATS server listens', async () => {
      await rejectsWith(connect({ servers: 'nats://127.0.0.1:1', timeoutMs: 2000 }), 'unavailable', /can not connect/);
    });
  });
});

describe('cluster/client: handOver of the catalog shard, as the status names it', () => {
  const status = (catalogShard: unknown): unknown => ({ node: { id: 'n1', cluster: CLUSTER, version: '0.1.0', uptimeMs: 1 }, volumes: [], ...(catalogShard === undefined ? {} : { catalogShard }) });
  const catalog = (replicas: string[], members?: string[]): unknown => ({
    id: 'v0-catalog', name: 'strata-catalog', shards: [{ shard: 0, ...(members === undefined ? {} : { members }), replicas: replicas.map((node) => ({ node, role: 'follower', state: 'up' })) }],
  });
  /** A cluster whose catalog has no volume called so, whose status says `catalogShard`, and whose nodes answer a handover with `answer`. */
  const cluster = (catalogShard: unknown, answer: (node: string, body: unknown) => unknown): FakeTransport =>
    new FakeTransport((subject, body) => {
      if (subject.endsWith('.api.volume.info')) return errorReply(new ProtocolError('not_found', 'no such volume'));
      if (subject.endsWith('.api.status')) return status(catalogShard);
      const node = /^strata\.test\.node\.([^.]+)\.shard\.handover$/.exec(subject)?.[1];
      if (node !== undefined) return answer(node, body);
      return errorReply(new ProtocolError('internal', `unexpected ${subject}`));
    });
  const leaderN2 = (node: string, body: unknown): unknown =>
    node === 'n2' ? { node, volumeId: 'v0-catalog', shard: 0, term: 3, to: (body as { to?: string }).to ?? 'n1' } : errorReply(new ProtocolError('not_leader', 'not the leader'));

  it('asks each node the status names (its replicas and its leader\'s set) and answers with the leader\'s reply', async () => {
    const t = cluster(catalog(['n1', 'n2'], ['n1', 'n2', 'n3']), leaderN2);
    const r = await createClient(t, { cluster: CLUSTER, timeoutMs: 5000 }).handOver('strata-catalog', 0, { to: 'n3' });
    assert.deepEqual(r, { node: 'n2', volumeId: 'v0-catalog', shard: 0, term: 3, to: 'n3' });
    const asked = t.seen.filter((s) => s.subject.endsWith('.shard.handover')).map((s) => s.subject.split('.')[3]).sort();
    assert.deepEqual(asked, ['n1', 'n2', 'n3']);
    assert.deepEqual(t.seen.find((s) => s.subject.endsWith('.shard.handover'))!.body, { volumeId: 'v0-catalog', shard: 0, to: 'n3' });
  });

  it('refuses a shard other than 0 and a node that holds no replica, asking no node', async () => {
    const t = cluster(catalog(['n1', 'n2', 'n3']), leaderN2);
    const c = createClient(t, { cluster: CLUSTER, timeoutMs: 5000 });
    await rejectsWith(c.handOver('strata-catalog', 1), 'out_of_range');
    await rejectsWith(c.handOver('strata-catalog', 0, { to: 'n4' }), 'bad_request', /'n4' holds no replica/);
    assert.equal(t.seen.filter((s) => s.subject.endsWith('.shard.handover')).length, 0);
  });

  it('a catalog shard the status names with no replica: unavailable at once, not a wait for an answer nobody was asked for', async () => {
    const t = cluster(catalog([]), leaderN2);
    await rejectsWith(createClient(t, { cluster: CLUSTER, timeoutMs: 5000 }).handOver('strata-catalog', 0), 'unavailable', /did not say where shard 0/);
  });

  it('a name that is no volume and not the catalog shard (or no replicated controller): not_found, as before', async () => {
    const c = createClient(cluster(catalog(['n1']), leaderN2), { cluster: CLUSTER, timeoutMs: 5000 });
    await rejectsWith(c.handOver('other', 0), 'not_found');
    await rejectsWith(createClient(cluster(undefined, leaderN2), { cluster: CLUSTER, timeoutMs: 5000 }).handOver('strata-catalog', 0), 'not_found');
  });
});
