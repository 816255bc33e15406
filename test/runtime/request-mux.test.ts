import { strict as assert } from 'node:assert';
import { connect, headers as natsHeaders, type MsgHdrs, type NatsConnection } from 'nats';
import { ConnectionState, encodeReplyWithin, frozenHeaders, NoRespondersError, REPLY_HEADER_ROOM_BYTES, replyBytesWithin, RequestMux } from '../../runtime/request-mux';
import { ProtocolError, errorReply } from '../../messages/errors';
import { REPLY_HEADERS } from '../../runtime/nats-headers';
import { NatsTransport } from '../../cluster/client';
import { MESSAGE_BYTES_MAX, decode, encode } from '../../messages/codec';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { rejectsWith } from '../support/expect';
import { startBadHeadersResponder } from '../support/bad-headers-responder';
import { waitFor } from '../support/wait';
import { ManualClock, settledSoFar } from '../support/manual-clock';

describe('RequestMux (NATS request/reply over one reply subscription)', function () {
  this.timeout(30_000);
  let server: NatsServerHandle;
  let responder: NatsConnection;
  let nc: NatsConnection;
  /** Subjects of the `slow.*` requests answered so far. */
  const slowAnswered: string[] = [];

  before(async () => {
    server = await startNatsServer({ jetstream: false, maxPayloadBytes: 64 * 1024 });
    responder = await connect({ servers: server.url });
    // Echo with the header `x` appended; `slow.*` answers after the number of ms in its subject.
    responder.subscribe('echo', { callback: (_e, m) => m.respond(Uint8Array.of(...m.data, ...new TextEncoder().encode(m.headers?.get('x') ?? ''))) });
    responder.subscribe('slow.*', {
      callback: (_e, m) =>
        setTimeout(() => {
          m.respond(m.data);
          slowAnswered.push(m.subject);
        }, Number(m.subject.split('.')[1])),
    });
    responder.subscribe('silent', { callback: () => undefined });
    await responder.flush();
  });
  beforeEach(async () => {
    nc = await connect({ servers: server.url, noAsyncTraces: true });
  });
  afterEach(async () => {
    if (!nc.isClosed()) await nc.close();
  });
  after(async () => {
    await responder?.close();
    await server?.stop();
  });

  it('routes each reply to its own request, with headers, many in flight', async () => {
    const mux = new RequestMux(nc);
    const replies = await Promise.all(
      Array.from({ length: 500 }, (_, i) => mux.request(i % 2 === 0 ? 'echo' : `slow.${i % 7}`, Uint8Array.of(i & 0xff, i >> 8), { timeoutMs: 5000, ...(i % 2 === 0 ? { headers: { x: 'h' } } : {}) })),
    );
    replies.forEach((m, i) => {
      const want = i % 2 === 0 ? [i & 0xff, i >> 8, 0x68] : [i & 0xff, i >> 8];
      assert.deepEqual([...m.data], want, `reply ${i}`);
    });
    assert.equal(mux.size, 0, 'nothing left waiting');
  });

  it('headers given as records arrive as given, repeated or not (more distinct ones than are kept prepared)', async () => {
    const mux = new RequestMux(nc);
    const replies = await Promise.all(
      Array.from({ length: 300 }, (_, i) => mux.request('echo', Uint8Array.of(1), { timeoutMs: 5000, headers: { x: `v${i % 100}`, y: 'same' } })),
    );
    replies.forEach((m, i) => assert.equal(new TextDecoder().decode(m.data.subarray(1)), `v${i % 100}`, `reply ${i}`));
  });

  it('frozen headers are sent as prepared and refuse changes', async () => {
    const h = frozenHeaders({ x: 'frozen', other: '1' });
    const mux = new RequestMux(nc);
    for (let i = 0; i < 3; i++) {
      const m = await mux.request('echo', Uint8Array.of(7), { timeoutMs: 5000, headers: h });
      assert.deepEqual([...m.data], [7, ...new TextEncoder().encode('frozen')]);
    }
    assert.equal(h.get('x'), 'frozen');
    assert.throws(() => h.set('x', 'changed'), /frozen NATS headers cannot be changed/);
    assert.throws(() => h.append('y', '1'), /frozen NATS headers cannot be changed/);
    assert.throws(() => h.delete('x'), /frozen NATS headers cannot be changed/);
    assert.equal(h.get('x'), 'frozen');
  });

  it('a request without a reply fails with timeout at its deadline; a late reply is ignored', async () => {
    const mux = new RequestMux(nc);
    // Its deadline on a manual clock: it still waits 1 ms before, and fails once the clock is past it.
    const clock = new ManualClock();
    const silent = clock.run(() => mux.request('silent', new Uint8Array(1), { timeoutMs: 100 }));
    clock.advance(99);
    assert.equal(await settledSoFar(silent), 'pending', 'still waits before its deadline');
    assert.equal(mux.size, 1);
    clock.advance(100);
    const err = await rejectsWith(silent, 'timeout', /no reply on silent within 100 ms/);
    assert.equal(err.details?.['subject'], 'silent');
    assert.equal(err.details?.['timeoutMs'], 100);
    assert.equal(mux.size, 0);
    // Shorter deadlines armed after a longer one still fire first; a reply after its deadline is dropped.
    const long = mux.request('silent', new Uint8Array(1), { timeoutMs: 3000 });
    const answered = slowAnswered.length;
    await rejectsWith(mux.request('slow.300', new Uint8Array(1), { timeoutMs: 50 }), 'timeout');
    // The late reply is sent (300 ms after the request), then has reached this connection.
    while (!slowAnswered.slice(answered).includes('slow.300')) await new Promise((r) => setTimeout(r, 10));
    await responder.flush();
    await nc.flush();
    assert.equal(mux.size, 1, 'only the long request still waits');
    await rejectsWith(long, 'timeout');
  });

  it('nobody subscribed: NoRespondersError (unavailable)', async () => {
    const mux = new RequestMux(nc);
    const err = await mux.request('nobody.here', new Uint8Array(1), { timeoutMs: 2000 }).then(
      () => assert.fail('no responder'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof NoRespondersError, String(err));
    assert.equal(err.code, 'unavailable');
  });

  it('a message over max_payload is too_large; bad timeouts are bad_request', async () => {
    const mux = new RequestMux(nc);
    await rejectsWith(mux.request('echo', new Uint8Array(64 * 1024 + 1), { timeoutMs: 1000 }), 'too_large', /max_payload/);
    await rejectsWith(mux.request('echo', new Uint8Array(1), { timeoutMs: 0 }), 'bad_request', /timeoutMs/);
    await rejectsWith(mux.request('echo', new Uint8Array(1), { timeoutMs: Number.NaN }), 'bad_request', /timeoutMs/);
    assert.throws(() => new RequestMux(nc, { pendingMax: 0 }), /pendingMax/);
  });

  it('more than pendingMax waiting requests: overloaded, and the others still complete', async () => {
    const mux = new RequestMux(nc, { pendingMax: 2 });
    const a = mux.request('slow.50', Uint8Array.of(1), { timeoutMs: 2000 });
    const b = mux.request('slow.50', Uint8Array.of(2), { timeoutMs: 2000 });
    await rejectsWith(mux.request('echo', Uint8Array.of(3), { timeoutMs: 2000 }), 'overloaded', /already wait/);
    assert.deepEqual([...(await a).data, ...(await b).data], [1, 2]);
    assert.deepEqual([...(await mux.request('echo', Uint8Array.of(4), { timeoutMs: 2000 })).data], [4]);
  });

  describe('requestEach: one message to several responders, one reply from each', () => {
    /** Responders `a`, `b` (and `c` when asked) on `group.<name>`; each answers on the reply subject + `.<id>`, after `delayMs[id]` (never if negative). */
    const group = async (name: string, delayMs: Record<string, number>): Promise<{ received: string[]; close: () => Promise<void> }> => {
      const received: string[] = [];
      const conns: NatsConnection[] = [];
      for (const id of Object.keys(delayMs)) {
        const c = await connect({ servers: server.url });
        conns.push(c);
        c.subscribe(`group.${name}`, {
          callback: (_e, m) => {
            received.push(id);
            if (delayMs[id]! < 0) return;
            setTimeout(() => c.publish(`${m.reply!}.${id}`, Uint8Array.of(...m.data, id.charCodeAt(0))), delayMs[id]);
          },
        });
        await c.flush();
      }
      return { received, close: async () => void (await Promise.all(conns.map((c) => c.close()))) };
    };

    it('sends once, and each responder\'s reply reaches its own promise, in the order of the keys; many in flight', async () => {
      const g = await group('ab', { a: 0, b: 5 });
      try {
        const mux = new RequestMux(nc);
        const all = await Promise.all(Array.from({ length: 50 }, (_, i) => Promise.all(mux.requestEach('group.ab', Uint8Array.of(i), { timeoutMs: 5000 }, ['b', 'a']))));
        all.forEach(([b, a], i) => {
          assert.deepEqual([...b!.data], [i, 0x62], `request ${i}: b's reply`);
          assert.deepEqual([...a!.data], [i, 0x61], `request ${i}: a's reply`);
        });
        assert.equal(g.received.length, 100, 'each responder got each request once');
        assert.equal(mux.size, 0, 'nothing left waiting');
      } finally {
        await g.close();
      }
    });

    it('a responder that does not answer fails its own promise with timeout at the deadline; the others resolve; a reply without the suffix is not taken', async () => {
      const g = await group('silent', { a: 0, b: -1 });
      const bare = await connect({ servers: server.url });
      // A responder that answers on the bare reply subject: not one of the keys, so not taken.
      bare.subscribe('group.silent', { callback: (_e, m) => m.respond(Uint8Array.of(9)) });
      await bare.flush();
      try {
        const mux = new RequestMux(nc);
        // The deadline on a manual clock: b waits until the clock passes it, whatever comes meanwhile.
        const clock = new ManualClock();
        const [a, b] = clock.run(() => mux.requestEach('group.silent', Uint8Array.of(1), { timeoutMs: 200 }, ['a', 'b']));
        assert.deepEqual([...(await a!).data], [1, 0x61]);
        // The bare reply has reached this connection (the responder saw the request, both flushed).
        await waitFor('the bare responder to get the request', () => g.received.length === 2);
        await bare.flush();
        await nc.flush();
        clock.advance(199);
        assert.equal(await settledSoFar(b!), 'pending', 'b waits until its deadline; the bare reply is not taken for it');
        assert.equal(mux.size, 1);
        clock.advance(100);
        const err = await rejectsWith(b!, 'timeout', /no reply on group.silent within 200 ms/);
        assert.equal(err.details?.['timeoutMs'], 200);
        assert.equal(mux.size, 0);
      } finally {
        await bare.close();
        await g.close();
      }
    });

    it('nobody subscribed fails every promise with NoRespondersError; bad keys, bad timeouts and pendingMax are refused before sending', async () => {
      const mux = new RequestMux(nc, { pendingMax: 3 });
      const none = mux.requestEach('nobody.here', Uint8Array.of(1), { timeoutMs: 2000 }, ['a', 'b']);
      for (const p of none) {
        const err = await p.then(() => assert.fail('no responder'), (e: unknown) => e);
        assert.ok(err instanceof NoRespondersError, String(err));
      }
      assert.equal(mux.size, 0);
      for (const keys of [[], ['a', 'a'], ['a.b'], [''], ['*']]) {
        const ps = mux.requestEach('echo', Uint8Array.of(1), { timeoutMs: 1000 }, keys);
        assert.equal(ps.length, keys.length);
        for (const p of ps) await rejectsWith(p, 'bad_request', /keys/);
      }
      for (const p of mux.requestEach('echo', Uint8Array.of(1), { timeoutMs: 0 }, ['a'])) await rejectsWith(p, 'bad_request', /timeoutMs/);
      // Each key counts against pendingMax.
      const waiting = mux.request('silent', Uint8Array.of(1), { timeoutMs: 300 });
      for (const p of mux.requestEach('silent', Uint8Array.of(1), { timeoutMs: 2000 }, ['a', 'b', 'c'])) await rejectsWith(p, 'overloaded', /already wait/);
      const two = mux.requestEach('silent', Uint8Array.of(1), { timeoutMs: 100 }, ['a', 'b']);
      assert.equal(mux.size, 3);
      for (const p of two) await rejectsWith(p, 'timeout');
      await rejectsWith(waiting, 'timeout');
    });

    it('closing the mux fails the promises still waiting with unavailable, at once', async () => {
      const g = await group('close', { a: 0, b: -1 });
      try {
        const mux = new RequestMux(nc);
        const [a, b] = mux.requestEach('group.close', Uint8Array.of(1), { timeoutMs: 10_000 }, ['a', 'b']);
        await a;
        mux.close();
        // Failed by the close itself, before any timer or reply could.
        assert.equal(await settledSoFar(b!), 'rejected', 'failed at the close');
        await rejectsWith(b!, 'unavailable', /closed/);
        assert.equal(mux.size, 0);
      } finally {
        await g.close();
      }
    });
  });

  it('closing the connection or the mux fails every waiting request with unavailable, at once, saying it was sent (details.disconnected: it may have reached its receiver)', async () => {
    const mux = new RequestMux(nc);
    // Its deadline on a manual clock that does not move: only the close can fail it.
    const clock = new ManualClock();
    const waiting = clock.run(() => mux.request('silent', new Uint8Array(1), { timeoutMs: 20_000 }));
    await nc.flush();
    await nc.close();
    assert.equal(await settledSoFar(waiting), 'rejected', 'failed by the close, not left to its deadline');
    const e1 = await rejectsWith(waiting, 'unavailable', /closed before the reply/);
    assert.equal(e1.details?.['disconnected'], true);
    const refused = await rejectsWith(mux.request('echo', new Uint8Array(1), { timeoutMs: 1000 }), 'unavailable', /closed/);
    assert.equal(refused.details?.['disconnected'], undefined, 'refused, never sent: not said to be possibly delivered');

    const nc2 = await connect({ servers: server.url });
    const mux2 = new RequestMux(nc2);
    const w2 = mux2.request('silent', new Uint8Array(1), { timeoutMs: 20_000 });
    await nc2.flush();
    mux2.close();
    const e2 = await rejectsWith(w2, 'unavailable', /closed before the reply/);
    assert.equal(e2.details?.['disconnected'], true);
    await nc2.close();
  });

  it('an empty reply whose header block nats.js cannot decode is handed over, and the connection keeps working', async () => {
    // A responder on a raw connection (nats.js will not send such headers) that answers every
    // request on `bad-headers` with an empty payload and a value holding a lone LF.
    const socket = await startBadHeadersResponder(server.url, 'bad-headers');
    try {
      const mux = new RequestMux(nc);
      const reply = await mux.request('bad-headers', Uint8Array.of(1), { timeoutMs: 5000 });
      assert.equal(reply.data.length, 0);
      // The reply subscription and the connection's reader are still there.
      assert.deepEqual([...(await mux.request('echo', Uint8Array.of(5), { timeoutMs: 5000 })).data], [5]);
    } finally {
      socket.destroy();
    }
  });

  it('an empty reply with a NATS error status other than 503 fails unavailable, naming the status; the mux keeps working', async () => {
    const sub = responder.subscribe('status-408', { callback: (_e, m) => m.respond(new Uint8Array(0), { headers: natsHeaders(408, 'Request Timeout') }) });
    try {
      await responder.flush();
      const mux = new RequestMux(nc);
      const err = await rejectsWith(mux.request('status-408', Uint8Array.of(1), { timeoutMs: 5000 }), 'unavailable', /request on status-408 failed: NATS status 408/);
      assert.ok(!(err instanceof NoRespondersError), 'not taken for "no responders"');
      assert.equal(err.details?.['natsCode'], '408');
      assert.equal(err.details?.['subject'], 'status-408');
      assert.equal(mux.size, 0);
      assert.deepEqual([...(await mux.request('echo', Uint8Array.of(5), { timeoutMs: 5000 })).data], [5]);
    } finally {
      sub.unsubscribe();
    }
  });

  it('NatsTransport: reply bytes, max_payload of the server, typed failures', async () => {
    const t = new NatsTransport(nc);
    assert.equal(t.maxPayloadBytes, 64 * 1024);
    assert.ok(t.maxPayloadBytes < MESSAGE_BYTES_MAX);
    assert.deepEqual([...(await t.request('echo', Uint8Array.of(9), { timeoutMs: 2000, headers: { x: 'y' } }))], [9, 0x79]);
    await rejectsWith(t.request('silent', Uint8Array.of(9), { timeoutMs: 50, headers: {} }), 'timeout', /within 50 ms/);
    await t.close();
    assert.ok(nc.isClosed());
  });
});

/** A nats-server, a client and an `echo` responder that both reconnect every 100 ms for good. */
async function reconnectingPair(): Promise<{ server: NatsServerHandle; port: number; nc: NatsConnection; responder: NatsConnection }> {
  const server = await startNatsServer({ jetstream: false });
  const nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100, noAsyncTraces: true });
  const responder = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  responder.subscribe('echo', { callback: (_e, m) => m.respond(m.data) });
  return { server, port: server.port, nc, responder };
}

describe('RequestMux with a ConnectionState: a connection that is down', function () {
  this.timeout(60_000);

  it('refuses requests at once while the server is gone, and takes them again once the client reconnected', async () => {
    let { server, port, nc, responder } = await reconnectingPair();
    try {
      await responder.flush();
      const connection = new ConnectionState(nc);
      const mux = new RequestMux(nc, { connection });
      assert.deepEqual([...(await mux.request('echo', Uint8Array.of(1), { timeoutMs: 5000 })).data], [1]);
      await server.stop();
      await waitFor('the client to see the disconnect', () => !connection.connected, 10_000);
      assert.equal(nc.isClosed(), false, 'the client reconnects: not closed');
      const refused = mux.request('echo', Uint8Array.of(2), { timeoutMs: 10_000 });
      assert.equal(await settledSoFar(refused), 'rejected', 'refused at once, not at its deadline');
      await rejectsWith(refused, 'unavailable', /disconnected from NATS/);
      assert.equal(mux.size, 0, 'nothing waits for a reply');
      server = await startNatsServer({ jetstream: false, port });
      await waitFor('the client reconnected', () => connection.connected, 20_000);
      assert.equal(connection.disconnects, 1);
      // The responder re-subscribes on its own reconnect: asked until it answers.
      await waitFor('an answer again', () => mux.request('echo', Uint8Array.of(4), { timeoutMs: 1000 }).then((m) => m.data[0] === 4, () => false), 20_000);
    } finally {
      await nc.close();
      await responder.close();
      await server.stop();
    }
  });

  it("the client's mode: a request waiting for its reply fails at once when the connection drops; one made while it is down is sent once it is back", async () => {
    let { server, port, nc, responder } = await reconnectingPair();
    try {
      responder.subscribe('silent', { callback: () => undefined });
      await responder.flush();
      const connection = new ConnectionState(nc);
      const mux = new RequestMux(nc, { connection, whileDisconnected: 'wait', failPendingOnDisconnect: true });
      // Its own echo: subscribed again by the reconnect itself, before requests go out again.
      nc.subscribe('echo.self', { callback: (_e, m) => m.respond(m.data) });
      // Waiting for a reply that will not come, its deadline on a manual clock that does not
      // move: only the drop can fail it.
      const clock = new ManualClock();
      const waiting = clock.run(() => mux.request('silent', Uint8Array.of(1), { timeoutMs: 20_000 }));
      const failure = waiting.then(
        () => assert.fail('answered'),
        (e: { code?: string; message?: string; details?: Record<string, unknown> }) => e,
      );
      await nc.flush();
      server.kill();
      // Failed as the client sees the drop (the same event tells the mux).
      await waitFor('the client to see the disconnect', () => !connection.connected, 10_000);
      assert.equal(await settledSoFar(waiting), 'rejected', 'failed at the drop');
      const e = await failure;
      assert.equal(e.code, 'unavailable');
      assert.match(e.message ?? '', /dropped before the reply/);
      assert.equal(e.details?.['disconnected'], true);
      await server.stop();
      // Made while the server is gone: sent once it is back (the responder subscribes again too).
      const later = mux.request('echo.self', Uint8Array.of(7), { timeoutMs: 15_000 });
      await new Promise((r) => setTimeout(r, 500));
      server = await startNatsServer({ jetstream: false, port });
      assert.deepEqual([...(await later).data], [7]);
      // Made while down, its timeout shorter than the outage: never sent, and says so.
      await server.stop();
      await waitFor('the client to see the disconnect', () => !connection.connected, 10_000);
      // Its timeout on a manual clock: it waits for the reconnect until the clock passes it.
      const unsentClock = new ManualClock();
      const unsent = unsentClock.run(() => mux.request('echo.self', Uint8Array.of(8), { timeoutMs: 300 }));
      unsentClock.advance(299);
      assert.equal(await settledSoFar(unsent), 'pending', 'waits for the reconnect until its timeout');
      unsentClock.advance(1);
      const notSent = await rejectsWith(unsent, 'unavailable', /not sent: disconnected from NATS for its whole 300 ms/);
      assert.equal(notSent.details?.['notSent'], true);
    } finally {
      await nc.close();
      await responder.close();
      await server.stop();
    }
  });
});

/** A connection that takes every publish (handed to `publish`) and answers nothing. */
function silentConnection(publish: (subject: string, data: Uint8Array, opts: { headers?: MsgHdrs }) => void): NatsConnection {
  return {
    options: {},
    isClosed: () => false,
    subscribe: () => ({ closed: new Promise<void>(() => undefined), unsubscribe: () => undefined }),
    publish,
  } as unknown as NatsConnection;
}

describe('RequestMux: headers given as records', () => {
  it('are prepared once while they repeat, and the prepared ones kept are bounded (each request has its own deadline header)', async () => {
    // A connection that takes every publish and answers nothing: the headers each request went out with.
    const sent: unknown[] = [];
    const nc = silentConnection((_subject: string, _data: Uint8Array, opts: { headers?: unknown }) => void sent.push(opts.headers));
    const mux = new RequestMux(nc);
    const send = (deadline: string): void => void mux.request('s', Uint8Array.of(1), { timeoutMs: 60_000, headers: { 'Strata-Deadline': deadline } }).catch(() => undefined);
    send('first');
    send('first');
    assert.equal(sent.length, 2);
    assert.equal(sent[0], sent[1], 'a record seen again is sent as prepared');
    for (let i = 0; i < 1000; i++) send(`d${i}`);
    send('first');
    assert.notEqual(sent[sent.length - 1], sent[0], 'a record seen long ago was let go, and is prepared again');
    mux.close();
  });

  it('a frozen record given again is sent as prepared without being read again; one not frozen is read each time', async () => {
    const sent: unknown[] = [];
    const nc = silentConnection((_subject: string, _data: Uint8Array, opts: { headers?: { get(name: string): string } }) => void sent.push(opts.headers?.get('Strata-Deadline')));
    const mux = new RequestMux(nc);
    const send = (headers: Record<string, string>): void => void mux.request('s', Uint8Array.of(1), { timeoutMs: 60_000, headers }).catch(() => undefined);
    let reads = 0;
    const frozen = Object.freeze({
      get 'Strata-Deadline'(): string {
        reads++;
        return '100';
      },
    });
    send(frozen);
    const afterFirst = reads;
    send(frozen);
    send(frozen);
    assert.ok(afterFirst > 0);
    assert.equal(reads, afterFirst, 'read once');
    // A record changed between two requests (not frozen) is sent as it is at each.
    const open: Record<string, string> = { 'Strata-Deadline': '200' };
    send(open);
    open['Strata-Deadline'] = '201';
    send(open);
    assert.deepEqual(sent, ['100', '100', '100', '200', '201']);
    mux.close();
  });

  it('a record NATS cannot carry (a name with a space, a value with a line break) is bad_request, and nothing is sent', async () => {
    let published = 0;
    const nc = silentConnection(() => void published++);
    const mux = new RequestMux(nc);
    const bad: Array<Record<string, string>> = [{ 'Strata Type': 'shard.read' }, { 'Strata-Type': 'shard.read\r\nX: y' }];
    for (const headers of bad) {
      await rejectsWith(mux.request('s', Uint8Array.of(1), { timeoutMs: 1000, headers }), 'bad_request', /^request headers: /);
    }
    assert.equal(published, 0);
    assert.equal(mux.size, 0);
    mux.close();
  });
});

describe('encodeReplyWithin', () => {
  const withMaxPayload = (maxPayload: number): NatsConnection => ({ info: { max_payload: maxPayload } }) as unknown as NatsConnection;
  type Reply = { error?: { code?: string; message?: string }; data?: Uint8Array };

  it("a reply within the server's max_payload is encoded as it is", () => {
    const bugs: unknown[] = [];
    const out = encodeReplyWithin(withMaxPayload(4096), { data: new Uint8Array(100) }, (e) => bugs.push(e));
    assert.equal(out.code, 'ok');
    assert.equal((decode(out.bytes) as Reply).data?.length, 100);
    assert.deepEqual(bugs, []);
  });

  it("one over the server's max_payload becomes a too_large error reply within it, not a bug", () => {
    const bugs: unknown[] = [];
    const out = encodeReplyWithin(withMaxPayload(4096), { data: new Uint8Array(8192) }, (e) => bugs.push(e));
    assert.equal(out.code, 'too_large');
    assert.ok(out.bytes.length <= 4096);
    assert.equal((decode(out.bytes) as Reply).error?.code, 'too_large');
    assert.deepEqual(bugs, []);
  });

  it('a reply that fits max_payload only without its headers is too_large: sent with REPLY_HEADERS through a real server, the one it returns reaches its requester', async () => {
    const server = await startNatsServer({ jetstream: false, maxPayloadBytes: 4096 });
    const nc = await connect({ servers: server.url });
    try {
      const sub = nc.subscribe('reply.room', {
        callback: (_e, m) => {
          const size = Number(new TextDecoder().decode(m.data));
          const { bytes } = encodeReplyWithin(nc, { data: new Uint8Array(size) }, () => undefined);
          m.respond(bytes, { headers: REPLY_HEADERS });
        },
      });
      await nc.flush();
      // About 10 bytes under max_payload encoded: over it with the headers.
      const near = decode((await nc.request('reply.room', new TextEncoder().encode(String(4096 - 20)), { timeout: 2000 })).data) as Reply;
      assert.equal(near.error?.code, 'too_large');
      const room = decode((await nc.request('reply.room', new TextEncoder().encode(String(4096 - REPLY_HEADER_ROOM_BYTES - 20)), { timeout: 2000 })).data) as Reply;
      assert.equal(room.data?.length, 4096 - REPLY_HEADER_ROOM_BYTES - 20);
      sub.unsubscribe();
    } finally {
      await nc.close();
      await server.stop();
    }
  });

  it('a reply encoded already (forwarded as it came) goes as it is, with its code, within the room its headers leave; over it, too_large', () => {
    const nc = withMaxPayload(4096);
    const fits = encode({ data: new Uint8Array(4096 - REPLY_HEADER_ROOM_BYTES - 20) });
    assert.deepEqual(replyBytesWithin(nc, fits), { bytes: fits, code: 'ok' });
    const refused = encode(errorReply(new ProtocolError('not_found', 'no such volume')));
    assert.equal(replyBytesWithin(nc, refused).code, 'not_found');
    const over = replyBytesWithin(nc, encode({ data: new Uint8Array(4096 - 20) }));
    assert.equal(over.code, 'too_large');
    assert.equal((decode(over.bytes) as Reply).error?.code, 'too_large');
    assert.ok(over.bytes.length <= 4096 - REPLY_HEADER_ROOM_BYTES);
  });

  it('any other failure to encode is handed to onBug and answered internal, never thrown', () => {
    const bugs: unknown[] = [];
    const broken = new Error('cannot encode this');
    const out = encodeReplyWithin(withMaxPayload(4096), {}, (e) => bugs.push(e), () => {
      throw broken;
    });
    assert.equal(out.code, 'internal');
    assert.deepEqual(decode(out.bytes), { error: { code: 'internal', message: 'reply encoding failed' } });
    assert.deepEqual(bugs, [broken]);
  });
});
