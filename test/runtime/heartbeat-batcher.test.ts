/**
 * Heartbeats coalesced per pair of nodes (runtime/heartbeat-batcher.ts), against a nats-server:
 * one message per node per turn, each answer routed to its own entry, the bounds, and every way
 * an entry fails (no answer, nobody subscribed, an answer that is not one).
 */
import { strict as assert } from 'node:assert';
import { connect, headers as natsHeaders, type Msg, type NatsConnection } from 'nats';
import {
  HEARTBEAT_BATCH_ENTRIES_MAX,
  HEARTBEAT_BATCHES_PENDING_MAX,
  HeartbeatSender,
  chunkEntries,
  heartbeatsSubject,
  validateHeartbeatBatch,
  type HeartbeatBatch,
  type HeartbeatEntry,
} from '../../runtime/heartbeat-batcher';
import { decode, encode } from '../../messages/codec';
import { ProtocolError } from '../../messages/errors';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { startBadHeadersResponder } from '../support/bad-headers-responder';
import { waitFor } from '../support/wait';

const MAX_PAYLOAD = 64 * 1024;
const codec = { bytesMax: MAX_PAYLOAD };

describe('HeartbeatSender (appends without records to one node, one message per turn)', function () {
  this.timeout(30_000);
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let node: NatsConnection;
  let sender: HeartbeatSender;
  /** The heartbeats messages node n2 received. */
  let received: HeartbeatBatch[];
  /** How n2 answers an entry: its reply (encoded), or undefined for none. */
  let answer: (volumeId: string, shard: number, body: unknown) => unknown;
  /** How n2 answers a message: as the last of its `hosts` hosts to, or not at all (a host that is down). */
  let answers: { hosts: number; silent: boolean };

  before(async () => {
    server = await startNatsServer({ jetstream: false, maxPayloadBytes: MAX_PAYLOAD });
  });
  after(async () => {
    await server?.stop();
  });
  beforeEach(async () => {
    nc = await connect({ servers: server.url });
    node = await connect({ servers: server.url });
    received = [];
    answer = (_v, _s, body) => ({ echoed: body });
    answers = { hosts: 1, silent: true };
    node.subscribe(heartbeatsSubject('t', 'n2'), {
      callback: (_e, m: Msg) => {
        const batch = validateHeartbeatBatch(decode(m.data));
        received.push(batch);
        const r: HeartbeatEntry[] = [];
        for (const [v, s, data] of batch.e) {
          const a = answer(v, s, decode(data));
          if (a !== undefined) r.push([v, s, encode(a)]);
        }
        // One host's answer; the node's other hosts (if any) answer nothing here, or nothing at all.
        m.respond(encode({ host: answers.hosts - 1, hosts: answers.hosts, r }));
        if (!answers.silent) for (let h = 0; h < answers.hosts - 1; h++) m.respond(encode({ host: h, hosts: answers.hosts, r: [] }));
      },
    });
    await node.flush();
    sender = new HeartbeatSender(nc, { cluster: 't', nodeId: 'n1', hostId: 0, codec });
  });
  afterEach(async () => {
    sender.close();
    await nc.close();
    await node.close();
  });

  it('the heartbeats of one turn to one node go as one message, and each gets its own answer', async () => {
    const sent = Array.from({ length: 50 }, (_, i) => sender.send('n2', `v${i % 5}`, i, encode({ n: i }), 2000)!);
    const replies = await Promise.all(sent);
    assert.equal(received.length, 1, 'one message');
    assert.equal(received[0]!.from, 'n1');
    assert.equal(received[0]!.host, 0, 'the message names its host');
    assert.equal(received[0]!.e.length, 50);
    replies.forEach((r, i) => assert.deepEqual(r, { echoed: { n: i } }));
    assert.equal(sender.pending, 0, 'nothing left waiting');
    // The next turn: a message of its own.
    await sender.send('n2', 'v0', 0, encode({ n: 'again' }), 2000);
    assert.equal(received.length, 2);
    assert.deepEqual(sender.stats(), { messages: 2, entries: 51, declined: 0, pings: 0 });
  });

  it('a second heartbeat of the same shard in one turn starts a new message (answers are matched by shard)', async () => {
    const a = sender.send('n2', 'v', 0, encode({ n: 1 }), 2000)!;
    const b = sender.send('n2', 'v', 0, encode({ n: 2 }), 2000)!;
    assert.deepEqual(await Promise.all([a, b]), [{ echoed: { n: 1 } }, { echoed: { n: 2 } }]);
    assert.equal(received.length, 2);
  });

  it('messages stay within a quarter of max_payload and HEARTBEAT_BATCH_ENTRIES_MAX entries', async () => {
    const big = encode('x'.repeat(1000));
    const sent = Array.from({ length: 100 }, (_, i) => sender.send('n2', 'v', i, big, 5000)!);
    await Promise.all(sent);
    assert.ok(received.length >= 6, `${received.length} messages for 100 kB`);
    for (const b of received) assert.ok(encode(b).length <= MAX_PAYLOAD / 4 + 64, String(encode(b).length));
    assert.equal(received.reduce((n, b) => n + b.e.length, 0), 100);
    received.length = 0;
    // With room for more bytes (a larger max_payload), the entries' bound.
    const roomy = new HeartbeatSender(nc, { cluster: 't', nodeId: 'n1', hostId: 0, codec: { bytesMax: 8 * 1024 * 1024 } });
    const many = Array.from({ length: HEARTBEAT_BATCH_ENTRIES_MAX + 5 }, (_, i) => roomy.send('n2', 'v', i, encode(1), 5000)!);
    await Promise.all(many);
    roomy.close();
    assert.deepEqual(received.map((b) => b.e.length), [HEARTBEAT_BATCH_ENTRIES_MAX, 5]);
  });

  it('a sender sized for a larger max_payload than its server\'s (the server restarted with a smaller one): refused too_large; told the server\'s, its messages fit again', async () => {
    const stale = new HeartbeatSender(nc, { cluster: 't', nodeId: 'n1', hostId: 0, codec: { bytesMax: 1024 * 1024 } });
    try {
      const big = encode('x'.repeat(1000));
      // 100 kB in one message: more than the server's 64 KiB.
      const refused = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => stale.send('n2', 'v', i, big, 5000)!));
      assert.ok(refused.every((r) => r.status === 'rejected' && (r.reason as ProtocolError).code === 'too_large'), JSON.stringify(refused[0]));
      assert.equal(received.length, 0);
      stale.setCodec(codec);
      await Promise.all(Array.from({ length: 100 }, (_, i) => stale.send('n2', 'v', i, big, 5000)!));
      assert.ok(received.length >= 6, `${received.length} messages for 100 kB`);
      for (const b of received) assert.ok(encode(b).length <= MAX_PAYLOAD / 4 + 64, String(encode(b).length));
    } finally {
      stale.close();
    }
  });

  it('an entry none of its node\'s hosts answers fails at once once they all have (no replica there); the others of its message are answered', async () => {
    answer = (_v, s, body) => (s === 1 ? undefined : { echoed: body });
    for (const hosts of [1, 3]) {
      answers = { hosts, silent: false };
      const [a, b] = [sender.send('n2', 'v', 0, encode(0), 5000)!, sender.send('n2', 'v', 1, encode(1), 5000)!];
      assert.deepEqual(await a, { echoed: 0 });
      // unavailable, once every host answered: at its timeout it would be `timeout`.
      await assert.rejects(b, (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && /no replica of v\/1 on n2/.test(e.message));
      assert.equal(sender.pending, 0);
    }
  });

  it('a host that answers in several messages (more) has answered in full only with its last: an entry none answered fails then, not before', async () => {
    const parts = await connect({ servers: server.url });
    try {
      let last: (() => void) | undefined;
      parts.subscribe(heartbeatsSubject('t', 'n4'), {
        callback: (_e, m) => {
          const batch = validateHeartbeatBatch(decode(m.data));
          const reply = (i: number): HeartbeatEntry => [batch.e[i]![0], batch.e[i]![1], encode({ part: i })];
          m.respond(encode({ host: 0, hosts: 1, r: [reply(0)], more: true }));
          // Its last answer (entry 1; entry 2 none) comes when the test says.
          last = () => m.respond(encode({ host: 0, hosts: 1, r: [reply(1)] }));
        },
      });
      await parts.flush();
      const [a, b, c] = [0, 1, 2].map((i) => sender.send('n4', 'v', i, encode(i), 5000)!) as [Promise<unknown>, Promise<unknown>, Promise<unknown>];
      let cSettled = false;
      c.then(() => (cSettled = true), () => (cSettled = true));
      assert.deepEqual(await a, { part: 0 });
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(cSettled, false, 'not failed while its host may still answer it');
      last!();
      assert.deepEqual(await b, { part: 1 });
      await assert.rejects(c, (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable');
      assert.equal(sender.pending, 0);
    } finally {
      await parts.close();
    }
  });

  it('an entry its node does not answer, a host of it silent (down), fails with timeout; the others of its message are answered', async () => {
    answers = { hosts: 2, silent: true };
    answer = (_v, s, body) => (s === 1 ? undefined : { echoed: body });
    const [a, b] = [sender.send('n2', 'v', 0, encode(0), 300)!, sender.send('n2', 'v', 1, encode(1), 300)!];
    assert.deepEqual(await a, { echoed: 0 });
    // At the deadline its message waited for (not `unavailable` when one of the two hosts answered).
    await assert.rejects(b, (e: unknown) => e instanceof ProtocolError && e.code === 'timeout' && e.details?.timeoutMs === 300 && /within 300 ms/.test(e.message));
    assert.equal(sender.pending, 0);
  });

  for (const shortFirst of [false, true]) {
    it(shortFirst
      ? 'an entry with a shorter timeout than its message fails at its own also when it came first (a later entry raised the message\'s)'
      : 'an entry with a shorter timeout than its message fails at its own', async () => {
      answers = { hosts: 2, silent: true };
      answer = () => undefined;
      const sendShort = (): Promise<unknown> => sender.send('n2', 'v', 1, encode(1), 200)!;
      const short = shortFirst ? sendShort() : undefined;
      const long = sender.send('n2', 'v', 0, encode(0), 3000)!;
      const shortOne = short ?? sendShort();
      let longSettled = false;
      long.then(() => (longSettled = true), () => (longSettled = true));
      // At its own timeout, not its message's: the message (and the other entry) still waits then.
      await assert.rejects(shortOne, (e: unknown) => e instanceof ProtocolError && e.code === 'timeout' && e.details?.timeoutMs === 200 && /within 200 ms/.test(e.message));
      assert.equal(longSettled, false, 'the other entry still waits');
      assert.equal(sender.pending, 1, 'the message still waits for its other entry');
      await assert.rejects(long, (e: unknown) => e instanceof ProtocolError && e.code === 'timeout' && e.details?.timeoutMs === 3000);
      assert.equal(sender.pending, 0);
    });
  }

  it('nobody subscribed for that node: every entry fails at once (no responders), and the node is declined for a while (its replicas send on their own)', async () => {
    const sent = [sender.send('n9', 'v', 0, encode(0), 10_000)!, sender.send('n9', 'v', 1, encode(1), 10_000)!];
    // The server's "no responders" (503): at their timeout they would fail `timeout`.
    for (const p of sent) await assert.rejects(p, (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && /^heartbeats to n9: status 503$/.test(e.message));
    assert.equal(sender.pending, 0);
    assert.equal(sender.send('n9', 'v', 0, encode(0), 1000), undefined, 'declined: a node that takes no heartbeats messages');
    assert.equal(sender.stats().declined, 1);
    assert.notEqual(sender.send('n2', 'v', 0, encode(0), 1000), undefined, 'the other nodes are not');
  });

  it('an answer that is not one is ignored: its entries time out', async () => {
    const liar = await connect({ servers: server.url });
    try {
      // Not an answer, and answers of a host that is not one of the node's.
      liar.subscribe(heartbeatsSubject('t', 'n3'), {
        callback: (_e, m) => {
          m.respond(encode({ nope: true }));
          m.respond(encode({ host: 3, hosts: 2, r: [] }));
          m.respond(encode({ host: 0, hosts: 0, r: [] }));
        },
      });
      await liar.flush();
      await assert.rejects(sender.send('n3', 'v', 0, encode(0), 300)!, (e: unknown) => e instanceof ProtocolError && e.code === 'timeout');
    } finally {
      await liar.close();
    }
  });

  it('an entry whose answer does not decode fails bad_request, naming its shard and node; the others of its message are answered', async () => {
    const liar = await connect({ servers: server.url });
    try {
      liar.subscribe(heartbeatsSubject('t', 'n4'), {
        // Shard 1's answer is not CBOR (a reserved initial byte); shard 0's is.
        callback: (_e, m) => m.respond(encode({ host: 0, hosts: 1, r: [['v', 0, encode({ ok: true })], ['v', 1, new Uint8Array([0x1c])]] })),
      });
      await liar.flush();
      const good = sender.send('n4', 'v', 0, encode(0), 2000)!;
      const bad = sender.send('n4', 'v', 1, encode(1), 2000)!;
      assert.deepEqual(await good, { ok: true });
      await assert.rejects(bad, (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /heartbeat reply of v\/1 from n4 does not decode/.test(e.message));
    } finally {
      await liar.close();
    }
  });

  it('heartbeats that cannot be sent (the connection closed) fail at once with unavailable, not at their timeout', async () => {
    const a = sender.send('n2', 'v', 0, encode(0), 60_000)!;
    const b = sender.send('n2', 'v', 1, encode(1), 60_000)!;
    await nc.close(); // before the turn ends and the message goes
    for (const p of [a, b]) await assert.rejects(p, (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && /^heartbeats to n2 not sent: /.test(e.message));
    assert.equal(sender.stats().messages, 0);
  });

  it('a status other than 503 fails the message\'s entries at once with timeout, naming it; the node is not declined', async () => {
    const refuser = await connect({ servers: server.url });
    try {
      refuser.subscribe(heartbeatsSubject('t', 'n5'), { callback: (_e, m) => m.respond(new Uint8Array(0), { headers: natsHeaders(408, 'Request Timeout') }) });
      await refuser.flush();
      // The status's failure, not the 20 s deadline's (which names no status, and its timeout).
      await assert.rejects(sender.send('n5', 'v', 0, encode(0), 20_000)!, (e: unknown) => e instanceof ProtocolError && e.code === 'timeout' && /^heartbeats to n5: status 408$/.test(e.message) && e.details === undefined);
      assert.equal(sender.pending, 0);
      const again = sender.send('n5', 'v', 0, encode(0), 20_000);
      assert.notEqual(again, undefined, 'not declined: only "no responders" declines a node');
      await assert.rejects(again!, /status 408/);
      assert.deepEqual(sender.stats(), { messages: 2, entries: 2, declined: 0, pings: 0 });
    } finally {
      await refuser.close();
    }
  });

  it('an empty answer whose header block nats.js cannot decode is ignored (its entries time out), and the sender keeps working', async () => {
    // A responder on a raw connection (nats.js sends no such headers): an empty payload and a
    // header value holding a lone LF. Read unguarded, it would throw in the connection's reader.
    const socket = await startBadHeadersResponder(server.url, heartbeatsSubject('t', 'n6'));
    try {
      await assert.rejects(sender.send('n6', 'v', 0, encode(0), 500)!, (e: unknown) => e instanceof ProtocolError && e.code === 'timeout');
      assert.equal(sender.pending, 0);
      // The reply subscription and the connection's reader are still there.
      assert.deepEqual(await sender.send('n2', 'v', 0, encode('after'), 5000), { echoed: 'after' });
    } finally {
      socket.destroy();
    }
  });

  it('declines (the caller sends on its own) while HEARTBEAT_BATCHES_PENDING_MAX messages wait, and once closed', async () => {
    answers = { hosts: 2, silent: true };
    answer = () => undefined;
    // Each message waits: one per shard sent twice in a turn.
    const waiting: Array<Promise<unknown>> = [];
    for (let i = 0; i <= HEARTBEAT_BATCHES_PENDING_MAX; i++) {
      const p = sender.send('n2', 'v', 0, encode(i), 1000);
      if (p === undefined) break;
      waiting.push(p.catch(() => undefined));
    }
    assert.equal(sender.pending, HEARTBEAT_BATCHES_PENDING_MAX);
    assert.equal(sender.send('n2', 'v', 0, encode('more'), 1000), undefined);
    await Promise.all(waiting);
    await waitFor('nothing waiting', () => sender.pending === 0, 5000);
    assert.notEqual(sender.send('n2', 'w', 0, encode(1), 1000), undefined);
    const open = sender.send('n2', 'w', 1, encode(1), 1000)!;
    sender.close();
    await assert.rejects(open, (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable');
    assert.equal(sender.send('n2', 'v', 0, encode(1), 1000), undefined);
  });
});

describe('heartbeats messages: form and chunks', () => {
  it('validateHeartbeatBatch takes { from, host?, e: [[volumeId, shard, bytes]...] } only, and bounds the entries', () => {
    const ok = { from: 'n1', e: [['v', 0, Uint8Array.of(1)]] };
    assert.deepEqual(validateHeartbeatBatch(ok), ok);
    // The sending host (a node of an older version names none).
    const withHost = { from: 'n1', host: 3, e: [] };
    assert.deepEqual(validateHeartbeatBatch(withHost), withHost);
    for (const host of [-1, 1.5, '0', 1024, null]) {
      assert.throws(() => validateHeartbeatBatch({ from: 'n1', host, e: [] }), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /host is an integer in \[0, 1024\)/.test(e.message), String(host));
    }
    for (const bad of [null, {}, { from: '', e: [] }, { from: 'n1', e: {} }, { from: 'n1', e: [['v', -1, Uint8Array.of(1)]] }, { from: 'n1', e: [['v', 0, 'x']] }, { from: 'n1', e: [[1, 0, Uint8Array.of(1)]] }, { from: 'n1', e: [['v', 0]] }]) {
      assert.throws(() => validateHeartbeatBatch(bad), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request', JSON.stringify(bad));
    }
    const tooMany = { from: 'n1', e: Array.from({ length: HEARTBEAT_BATCH_ENTRIES_MAX + 1 }, (_, i) => ['v', i, Uint8Array.of(1)]) };
    assert.throws(() => validateHeartbeatBatch(tooMany), /at most/);
  });

  it('chunkEntries keeps each group within its bytes (an entry larger alone is a group of its own)', () => {
    const e = (n: number, bytes: number): HeartbeatEntry => ['v', n, new Uint8Array(bytes)];
    const groups = chunkEntries([e(0, 100), e(1, 100), e(2, 100), e(3, 1000), e(4, 10)], 300);
    assert.deepEqual(groups.map((g) => g.map((x) => x[1])), [[0, 1], [2], [3], [4]]);
    assert.deepEqual(chunkEntries([], 300), []);
  });
});
