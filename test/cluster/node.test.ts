import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, headers as natsHeaders, type Msg, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { StrataNode, CONTROL_QUEUE_MAX, CONTROLLER_MOVE_QUIET_MS, RECONCILE_BACKOFF_MS_MIN, type StrataNodeOptions } from '../../cluster/node';
import { createClient, NatsTransport, type StrataClient } from '../../cluster/client';
import { encode, decode } from '../../messages/codec';
import { errorReply, ProtocolError, type ErrorReply } from '../../messages/errors';
import { controllerSubject, nodeSubject } from '../../messages/control';
import { HEADER_DEADLINE } from '../../messages/headers';
import { shardLeadersSubject, shardSubject } from '../../messages/subjects';
import type { ApiVerb, VolumeInfo } from '../../messages/api';
import { waitFor } from '../support/wait';
import { apiRequestOnce } from '../support/api';
import { startTcpProxy } from '../support/tcp-proxy';
import { settledSoFar } from '../support/manual-clock';
import type { ShardSpec } from '../../runtime/device-host';

const CLUSTER = 'nodetest';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));


/** The nodes' log lines (JSON on stderr) written while `fn` runs (it sees them come); other lines pass through. */
async function nodeLogLines(fn: (lines: ReadonlyArray<Record<string, unknown>>) => Promise<void>): Promise<Array<Record<string, unknown>>> {
  const lines: Array<Record<string, unknown>> = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array): boolean => {
    for (const line of String(chunk).split('\n')) {
      try {
        const o = JSON.parse(line) as Record<string, unknown>;
        if (o.component === 'node') {
          lines.push(o);
          continue;
        }
      } catch {
        // Not a log line.
      }
      if (line !== '') write(`${line}\n`);
    }
    return true;
  }) as typeof process.stderr.write;
  try {
    await fn(lines);
  } finally {
    process.stderr.write = write;
  }
  return lines;
}

describe('StrataNode', function () {
  this.timeout(60_000);
  let nats: NatsServerHandle;
  let fake: NatsConnection;
  let root: string;
  const nodes: StrataNode[] = [];

  before(async () => {
    nats = await startNatsServer({ jetstream: false });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-node-test-'));
  });
  beforeEach(async () => {
    fake = await natsConnect({ servers: nats.url });
  });
  afterEach(async () => {
    for (const n of nodes.splice(0)) await n.stop();
    await fake.close();
  });
  after(async () => {
    await nats?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  /** A node without a controller of its own, at info log level (the fake controller is the test's). */
  async function startNode(id: string, opts: Partial<StrataNodeOptions> = {}): Promise<StrataNode> {
    const level = process.env.STRATA_LOG_LEVEL;
    process.env.STRATA_LOG_LEVEL = 'info';
    try {
      const n = await StrataNode.start({
        nodeId: id, cluster: CLUSTER, natsUrl: nats.url, dataDir: path.join(root, id), hosts: 1, controller: false, heartbeatMs: 50, ...opts,
      });
      nodes.push(n);
      return n;
    } finally {
      if (level === undefined) delete process.env.STRATA_LOG_LEVEL;
      else process.env.STRATA_LOG_LEVEL = level;
    }
  }

  /** Serves a controller subject on the fake controller's connection. */
  function serveFake(verb: string, handler: (msg: Msg) => void): void {
    fake.subscribe(controllerSubject(CLUSTER, verb), { callback: (_err, msg) => handler(msg) });
  }

  /** A fake controller that takes heartbeats and assigns nothing. */
  function serveFakeMembership(): void {
    serveFake('heartbeat', (msg) => msg.respond(encode({ epoch: 0 })));
    serveFake('assignments', (msg) => msg.respond(encode({ epoch: 0, shards: [], tombstones: [] })));
  }

  /** Sends an API request with the Strata headers and `deadlineMs`; waits for the reply up to 5 s. */
  function apiRequest(client: StrataClient, verb: ApiVerb, body: unknown, deadlineMs: number): Promise<unknown> {
    return apiRequestOnce(client, CLUSTER, verb, body, deadlineMs, 5000);
  }

  function errorCode(reply: unknown): string | undefined {
    return (reply as Partial<ErrorReply>).error?.code;
  }

  it('a NATS server that refuses the connection fails the start with the URL; the data directory is free after it', async () => {
    await assert.rejects(startNode('cr1', { natsUrl: 'nats://127.0.0.1:1' }), (e: ProtocolError) => {
      assert.equal(e.code, 'unavailable');
      assert.match(e.message, /^can not connect to NATS at nats:\/\/127\.0\.0\.1:1: CONNECTION_REFUSED: connect ECONNREFUSED 127\.0\.0\.1:1$/);
      return true;
    });
    serveFakeMembership();
    await startNode('cr1');
  });

  it('a node whose data directory lock is taken from it stops, and says so', async function () {
    this.timeout(30_000);
    serveFakeMembership();
    const fatal: Error[] = [];
    const node = await startNode('lost1', { onFatal: (e) => fatal.push(e) });
    // Another node took it over (this one was frozen through the takeover, say).
    fs.writeFileSync(path.join(root, 'lost1', 'lock'), JSON.stringify({ pid: 1, hostname: 'elsewhere', nodeId: 'lost1', sinceMs: Date.now() }));
    const lines = await nodeLogLines(async () => {
      await waitFor('the node to stop itself', () => fatal.length > 0, 15_000);
    });
    assert.match(fatal[0]!.message, /lock lost .*now names node 'lost1' \(process 1 on host 'elsewhere'\)/);
    assert.ok(lines.some((l) => l.level === 'error' && l.msg === 'the data directory lock was taken by another node; stopping'), JSON.stringify(lines));
    await waitFor('its host threads gone', async () => (await node.hostPool.stats()).every((h) => h.device === undefined), 10_000);
  });

  it('a node killed as a crash can be started again at once on its directory (its lock and its id are free)', async () => {
    serveFakeMembership();
    const first = await startNode('rk1');
    first.kill();
    nodes.splice(nodes.indexOf(first), 1);
    type Lock = { nodeId: string; pid: number; sinceMs: number; token: string };
    const lockFile = path.join(root, 'rk1', 'lock');
    const left = JSON.parse(fs.readFileSync(lockFile, 'utf8')) as Lock; // the crash left it in place
    const restartedAt = Date.now();
    await startNode('rk1');
    // The new node took the lock over: the file names it, not the killed one.
    const taken = JSON.parse(fs.readFileSync(lockFile, 'utf8')) as Lock;
    assert.equal(taken.nodeId, 'rk1');
    assert.equal(taken.pid, process.pid);
    assert.notEqual(taken.token, left.token);
    assert.ok(taken.sinceMs >= restartedAt, `locked since ${taken.sinceMs}, started again at ${restartedAt}`);
    // It answers under its id over NATS, with its own status (started after the kill), healthy.
    const reply = await fake.request(nodeSubject(CLUSTER, 'rk1', 'status'), encode({}), { timeout: 5000 });
    const status = decode(reply.data) as { node: { id: string; uptimeMs: number; healthy: boolean }; hosts: Array<{ ok: boolean }> };
    assert.equal(status.node.id, 'rk1');
    assert.ok(status.node.uptimeMs <= Date.now() - restartedAt, `uptime ${status.node.uptimeMs} ms: the killed node answered`);
    assert.equal(status.node.healthy, true);
    assert.deepEqual(status.hosts.map((h) => h.ok), [true]);
  });

  it('a data directory in use by a running node is refused to a second one; free again after a stop', async () => {
    serveFakeMembership();
    const first = await startNode('lk1');
    await assert.rejects(startNode('lk1'), (e: ProtocolError) => {
      assert.equal(e.code, 'bad_request');
      assert.match(e.message, /is in use by node 'lk1' \(process \d+, since /);
      return true;
    });
    await first.stop();
    nodes.splice(nodes.indexOf(first), 1);
    await startNode('lk1');
  });

  it("a data directory is refused to a node of another id or cluster, and to another count of hosts than it was created with; its own node starts on it after", async () => {
    serveFakeMembership();
    const first = await startNode('dd1');
    await first.stop();
    nodes.splice(nodes.indexOf(first), 1);
    const dataDir = path.join(root, 'dd1');
    const refused = (message: RegExp) => (e: ProtocolError) => {
      assert.equal(e.code, 'bad_request');
      assert.match(e.message, message);
      return true;
    };
    await assert.rejects(startNode('dd2', { dataDir }), refused(/^data dir .*dd1 belongs to node 'dd1' of cluster 'nodetest', not 'dd2' of 'nodetest'$/));
    await assert.rejects(startNode('dd1', { cluster: 'other' }), refused(/^data dir .*dd1 belongs to node 'dd1' of cluster 'nodetest', not 'dd1' of 'other'$/));
    await assert.rejects(startNode('dd1', { hosts: 2 }), refused(/^data dir .*dd1 was created with hosts=1; start the node with the same --hosts/));
    await startNode('dd1');
  });

  it('refuses to start beside a running node of the same id, and a second controller beside the cluster\'s', async () => {
    serveFakeMembership();
    await startNode('al1');
    await assert.rejects(startNode('al1', { dataDir: path.join(root, 'al1-elsewhere') }), (e: ProtocolError) => {
      assert.equal(e.code, 'bad_request');
      assert.match(e.message, /node id 'al1' is in use in cluster 'nodetest'/);
      return true;
    });
    // The fake controller answers the members subject, as a controller does.
    serveFake('members', (msg) => msg.respond(encode({ members: [] })));
    await assert.rejects(startNode('al2', { controller: true }), (e: ProtocolError) => {
      assert.equal(e.code, 'bad_request');
      assert.match(e.message, /cluster 'nodetest' has a controller already: start this node with --no-controller/);
      return true;
    });
    // Refused before anything ran: the data directory is free for a node that starts right.
    await startNode('al2');
  });

  it('of two nodes of one id started at the same moment, at most one starts', async () => {
    serveFakeMembership();
    for (let round = 0; round < 3; round++) {
      const id = `sim${round}`;
      const results = await Promise.allSettled([startNode(id), startNode(id, { dataDir: path.join(root, `${id}-elsewhere`) })]);
      const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.ok(refused.length >= 1, `round ${round}: both started`);
      for (const r of refused) {
        assert.equal((r.reason as ProtocolError).code, 'bad_request', String(r.reason));
        assert.match((r.reason as ProtocolError).message, new RegExp(`node id '${id}' is in use in cluster 'nodetest': another node of that id (runs or is starting: node '${id}' \\(process ${process.pid} on host '[^']+', started at \\d{4}-|answers)`));
      }
      for (const n of nodes.splice(0)) await n.stop();
    }
  });

  it('of two controllers started at the same moment, at most one starts', async () => {
    for (let round = 0; round < 2; round++) {
      const results = await Promise.allSettled([startNode(`sc${round}a`, { controller: true }), startNode(`sc${round}b`, { controller: true })]);
      const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.ok(refused.length >= 1, `round ${round}: both started`);
      for (const r of refused) assert.match(String(r.reason), /cluster 'nodetest' has a controller already: start this node with --no-controller/);
      for (const n of nodes.splice(0)) await n.stop();
    }
  });

  it('a claim taken without an answer (a node whose machine died) does not stop a start; any other answer does', async () => {
    serveFakeMembership();
    fake.subscribe(nodeSubject(CLUSTER, 'cl1', 'claim'), { callback: () => undefined });
    await fake.flush();
    await startNode('cl1');
    fake.subscribe(nodeSubject(CLUSTER, 'cl2', 'claim'), { callback: (_err, msg) => msg.respond(encode('not a claim')) });
    await fake.flush();
    await assert.rejects(startNode('cl2'), /node id 'cl2' is in use in cluster 'nodetest': another node of that id runs or is starting: a subscriber that is not a Strata node/);
  });

  it('a node whose claim another instance of its id, started first, asks at its periodic check stops at once; asked otherwise, it runs on', async () => {
    serveFakeMembership();
    const fatal: Error[] = [];
    const node = await startNode('asked', { onFatal: (e) => fatal.push(e), claimRecheckMs: 3_600_000 });
    const ask = async (question: unknown): Promise<unknown> => {
      const r = await fake.request(nodeSubject(CLUSTER, 'asked', 'claim'), encode(question), { timeout: 2000 });
      await sleep(300);
      return decode(r.data);
    };
    const other = (sinceMs: number, recheck: unknown): Record<string, unknown> => ({ instance: 'aaaaaaaaaaaaaaaa', nodeId: 'asked', hostname: 'elsewhere', pid: 4242, sinceMs, recheck });
    const earlier = Date.now() - 60_000;
    // Not a claim; a later start; an earlier one asking at its start or after a reconnection (it
    // stops on the answer); a malformed flag.
    for (const q of [{}, { instance: 'x' }, other(Date.now() + 60_000, true), other(earlier, false), other(earlier, 'yes')]) {
      const answer = (await ask(q)) as { nodeId?: unknown };
      assert.equal(answer.nodeId, 'asked', 'answered');
      assert.equal(fatal.length, 0, `asked ${JSON.stringify(q)}: it runs on`);
    }
    // An earlier start asking at its periodic check: it is answered (the answer is flushed first), then stops.
    assert.equal(((await ask(other(earlier, true))) as { nodeId?: unknown }).nodeId, 'asked');
    await waitFor('the node to stop itself', () => fatal.length > 0, 5000);
    assert.match(fatal[0]!.message, /node 'asked' stopped: node id 'asked' is in use in cluster 'nodetest': another node of that id runs, started first, and asked its claim: node 'asked' \(process 4242 on host 'elsewhere'/);
    nodes.splice(nodes.indexOf(node), 1);
    await assert.rejects(fake.request(nodeSubject(CLUSTER, 'asked', 'claim'), encode({}), { timeout: 1000 }), 'nobody answers its claim any more');
  });

  it('a node cut off from NATS while another of its id starts: once it is back, its question stops the later one, which runs no more', async () => {
    serveFakeMembership();
    const proxy = await startTcpProxy(nats.port);
    try {
      const fatalFirst: Error[] = [];
      const fatalSecond: Error[] = [];
      // Neither checks on its own while the test runs: only the reconnection's question can tell.
      await startNode('twin', { natsUrl: proxy.url, onFatal: (e) => fatalFirst.push(e), claimRecheckMs: 3_600_000 });
      await proxy.cut();
      // Its replacement starts elsewhere: it hears nobody, and starts.
      const second = await startNode('twin', { dataDir: path.join(root, 'twin-elsewhere'), onFatal: (e) => fatalSecond.push(e), claimRecheckMs: 3_600_000 });
      const lines = await nodeLogLines(async () => {
        await proxy.restore();
        await waitFor('the later node to stop itself', () => fatalSecond.length > 0, 20_000);
      });
      assert.match(fatalSecond[0]!.message, /node 'twin' stopped: node id 'twin' is in use in cluster 'nodetest': another node of that id runs, started first, and asked its claim: node 'twin' \(process \d+/);
      assert.ok(lines.some((l) => l.level === 'error' && l.msg === "another node that started first asks this node's claim; stopping"), JSON.stringify(lines));
      assert.equal(fatalFirst.length, 0, 'the first runs on');
      nodes.splice(nodes.indexOf(second), 1);
      // One instance answers the claim now.
      const it = await fake.requestMany(nodeSubject(CLUSTER, 'twin', 'claim'), encode({}), { maxWait: 500, maxMessages: 10 });
      const instances = new Set<string>();
      for await (const m of it) instances.add((decode(m.data) as { instance: string }).instance);
      assert.equal(instances.size, 1);
    } finally {
      await proxy.cut();
    }
  });

  it('the later of two nodes of one id, cut off from NATS and back, stops itself on the earlier one\'s answer', async () => {
    serveFakeMembership();
    const p1 = await startTcpProxy(nats.port);
    const p2 = await startTcpProxy(nats.port);
    try {
      const fatalFirst: Error[] = [];
      const fatalSecond: Error[] = [];
      await startNode('twin3', { natsUrl: p1.url, onFatal: (e) => fatalFirst.push(e), claimRecheckMs: 3_600_000 });
      await p1.cut();
      const second = await startNode('twin3', { natsUrl: p2.url, dataDir: path.join(root, 'twin3-elsewhere'), onFatal: (e) => fatalSecond.push(e), claimRecheckMs: 3_600_000 });
      // The later one is cut off before the first is back: the first's question reaches nobody.
      await p2.cut();
      await p1.restore();
      await sleep(1500);
      assert.deepEqual([fatalFirst.length, fatalSecond.length], [0, 0]);
      const lines = await nodeLogLines(async () => {
        await p2.restore();
        await waitFor('the later node to stop itself', () => fatalSecond.length > 0, 20_000);
      });
      assert.match(fatalSecond[0]!.message, /node 'twin3' stopped: node id 'twin3' is in use in cluster 'nodetest': another node of that id runs or is starting: node 'twin3' \(process \d+/);
      assert.ok(lines.some((l) => l.level === 'error' && String(l.msg).startsWith('after a reconnection to NATS another node answers')), JSON.stringify(lines));
      assert.equal(fatalFirst.length, 0, 'the first runs on');
      nodes.splice(nodes.indexOf(second), 1);
    } finally {
      await p1.cut();
      await p2.cut();
    }
  });

  it('a node cut off from NATS while it starts, and a node of its id started meanwhile: at most one runs on', async function () {
    this.timeout(60_000);
    serveFakeMembership();
    // A dead node's status subscription (takes the probe, never answers): the start's probes
    // take about 6.6 s, and the first node is cut off and back within them.
    fake.subscribe(nodeSubject(CLUSTER, 'twin2', 'status'), { callback: () => undefined });
    await fake.flush();
    const proxy = await startTcpProxy(nats.port);
    try {
      const first = startNode('twin2', { natsUrl: proxy.url, onFatal: () => undefined });
      await sleep(1000);
      await proxy.cut();
      const second = startNode('twin2', { dataDir: path.join(root, 'twin2-elsewhere') });
      await sleep(1000);
      await proxy.restore();
      const results = await Promise.allSettled([first, second]);
      assert.ok(results.some((r) => r.status === 'rejected'), 'one of them refused or stopped');
      await sleep(1000);
      const it = await fake.requestMany(nodeSubject(CLUSTER, 'twin2', 'claim'), encode({}), { maxWait: 1000, maxMessages: 10 });
      const instances = new Set<string>();
      for await (const m of it) instances.add((decode(m.data) as { instance: string }).instance);
      assert.equal(instances.size, 1, `${instances.size} instances answer the claim`);
    } finally {
      await proxy.cut();
    }
  });

  describe('API requests', () => {
    let client: StrataClient;
    beforeEach(() => {
      client = createClient(new NatsTransport(fake), { cluster: CLUSTER, timeoutMs: 5000 });
    });

    it('answers overloaded at once beyond apiRequestsInFlightMax requests in flight, and serves again once they end', async () => {
      serveFakeMembership();
      const held: Msg[] = [];
      serveFake('volume.info', (msg) => held.push(msg));
      await startNode('api1', { apiRequestsInFlightMax: 2 });
      const deadlineMs = Date.now() + 4000;
      const first = [apiRequest(client, 'volume.info', { name: 'a' }, deadlineMs), apiRequest(client, 'volume.info', { name: 'b' }, deadlineMs)];
      await waitFor('two requests at the controller', () => held.length === 2);
      const third = await apiRequest(client, 'volume.info', { name: 'c' }, deadlineMs);
      assert.equal(errorCode(third), 'overloaded', JSON.stringify(third));
      assert.match((third as ErrorReply).error.message, /handling 2 API requests, its limit/);
      assert.deepEqual((third as ErrorReply).error.details, { requestsMax: 2 });
      // Answered at once: while the two it counted are still held at the controller (a node that
      // waited for one of them to end would answer them first, with timeout at their deadline),
      // and without being forwarded itself.
      assert.equal(await settledSoFar(Promise.race(first)), 'pending', 'the two held requests are unanswered');
      assert.equal(held.length, 2);
      for (const m of held.splice(0)) m.respond(encode(errorReply(new ProtocolError('not_found', 'no such volume'))));
      assert.deepEqual((await Promise.all(first)).map(errorCode), ['not_found', 'not_found']);
      serveFake('volume.info', (msg) => msg.respond(encode(errorReply(new ProtocolError('not_found', 'no such volume')))));
      assert.equal(errorCode(await apiRequest(client, 'volume.info', { name: 'd' }, Date.now() + 4000)), 'not_found');
    });

    it('answers overloaded at once beyond apiBytesInFlightMax bytes of requests in flight, and serves again once they end', async () => {
      serveFakeMembership();
      const info: VolumeInfo = { name: 'v', id: 'vb', pageCount: 256, pageSize: 4096, shards: 1, stripePages: 16, replicas: 1, createdAt: 1 };
      serveFake('volume.info', (msg) => msg.respond(encode(info)));
      // The shard's leader takes the writes (on its leaders subject), and answers them when the test says so.
      const held: Msg[] = [];
      fake.subscribe(shardLeadersSubject(CLUSTER, 'vb', 0), { callback: (_err, msg) => held.push(msg) });
      await fake.flush();
      const bytesMax = 1.5 * 1024 * 1024;
      await startNode('api4', { apiBytesInFlightMax: bytesMax });
      // About 800 KiB each: one is admitted, a second with it would pass the bound.
      const pages = Array.from({ length: 200 }, (_, page) => ({ page, data: new Uint8Array(4096).fill(page) }));
      const deadlineMs = Date.now() + 4000;
      const first = apiRequest(client, 'page.write', { volume: 'v', pages }, deadlineMs);
      await waitFor('the first write at the shard', () => held.length === 1);
      const second = await apiRequest(client, 'page.write', { volume: 'v', pages }, deadlineMs);
      assert.equal(errorCode(second), 'overloaded', JSON.stringify(second));
      assert.match((second as ErrorReply).error.message, new RegExp(`bytes of API requests, at most ${bytesMax} with this one's`));
      assert.equal((second as ErrorReply).error.details?.['bytesMax'], bytesMax);
      // Answered at once: while the first is still held at the shard (a node that waited for it to
      // end would answer it first, with timeout at its deadline), and without being forwarded itself.
      assert.equal(await settledSoFar(first), 'pending', 'the held write is unanswered');
      assert.equal(held.length, 1);
      // A small request is admitted meanwhile.
      assert.deepEqual(await apiRequest(client, 'volume.info', { name: 'v' }, deadlineMs), info);
      held.splice(0)[0]!.respond(encode({ lsn: 1, term: 1 }));
      assert.equal(errorCode(await first), undefined);
      // Its bytes are let go with it: the next write is admitted.
      const third = apiRequest(client, 'page.write', { volume: 'v', pages }, Date.now() + 4000);
      await waitFor('the third write at the shard', () => held.length === 1);
      held.splice(0)[0]!.respond(encode({ lsn: 2, term: 1 }));
      assert.equal(errorCode(await third), undefined, JSON.stringify(await third));
    });

    it("forwards a catalog request with the caller's Strata-Deadline and answers timeout when it passes", async () => {
      serveFakeMembership();
      const seen: string[] = [];
      serveFake('volume.info', (msg) => seen.push(msg.headers?.get(HEADER_DEADLINE) ?? ''));
      // The node's own timeout (10 s) is longer than the caller's 1.5 s, and than the 5 s the test
      // waits. The 1.5 s leave the request time to reach the node before its deadline, loaded or not.
      await startNode('api2');
      const deadlineMs = Date.now() + 1500;
      // Waited for as long as the node could take (its own timeout and more): the reply says which
      // wait the node used.
      const reply = await apiRequestOnce(client, CLUSTER, 'volume.info', { name: 'a' }, deadlineMs);
      assert.equal(errorCode(reply), 'timeout', JSON.stringify(reply));
      const waitedMs = (reply as ErrorReply).error.details?.['timeoutMs'] as number;
      assert.ok(waitedMs > 0 && waitedMs <= 1500, `the node waited for the controller ${waitedMs} ms, the caller's deadline was 1500 ms away`);
      assert.deepEqual(seen, [String(deadlineMs)]);
      // A deadline already passed is answered at once, not forwarded.
      assert.equal(errorCode(await apiRequest(client, 'volume.info', { name: 'a' }, Date.now() - 1)), 'timeout');
      assert.equal(seen.length, 1);
    });

    it("routes a page request within the caller's Strata-Deadline", async () => {
      serveFakeMembership();
      const info: VolumeInfo = { name: 'v', id: 'vx', pageCount: 64, pageSize: 4096, shards: 1, stripePages: 16, replicas: 1, createdAt: 1 };
      serveFake('volume.info', (msg) => msg.respond(encode(info)));
      // The shard's leader takes the request and never answers.
      const seen: string[] = [];
      fake.subscribe(shardSubject(CLUSTER, 'vx', 0), { callback: (_err, msg) => seen.push(msg.headers?.get(HEADER_DEADLINE) ?? '') });
      await startNode('api3');
      const deadlineMs = Date.now() + 1500;
      // Waited for as long as the node could take (its own timeout and more): the reply says which
      // wait the node used.
      const reply = await apiRequestOnce(client, CLUSTER, 'page.read', { volume: 'v', pages: [1] }, deadlineMs);
      assert.equal(errorCode(reply), 'timeout', JSON.stringify(reply));
      const waitedMs = (reply as ErrorReply).error.details?.['timeoutMs'] as number;
      assert.ok(waitedMs > 0 && waitedMs <= 1500, `the node waited for the shard ${waitedMs} ms, the caller's deadline was 1500 ms away`);
      assert.deepEqual(seen, [String(deadlineMs)]);
    });
  });

  describe("the controller's catalog queue", () => {
    let client: StrataClient;
    let ghostTimer: NodeJS.Timeout | undefined;
    afterEach(() => clearInterval(ghostTimer));

    /**
     * A controller node and two fake nodes that heartbeat and hold every shards.open until
     * `release()`: a volume.create with 3 replicas then runs until released.
     */
    async function controllerWithSlowNodes(id: string, opts: Partial<StrataNodeOptions> = {}): Promise<{ opens: Msg[]; release(): void; queued(): number }> {
      const opens: Msg[] = [];
      let released = false;
      const ghosts = ['ghost1', 'ghost2'];
      for (const g of ghosts) {
        fake.subscribe(nodeSubject(CLUSTER, g, 'shards.open'), {
          callback: (_err, msg) => (released ? msg.respond(encode({ ok: true })) : opens.push(msg)),
        });
      }
      const beat = (): void => {
        for (const g of ghosts) fake.request(controllerSubject(CLUSTER, 'heartbeat'), encode({ nodeId: g, hosts: 1 })).catch(() => undefined);
      };
      beat();
      ghostTimer = setInterval(beat, 200);
      const node = await startNode(id, { controller: true, requestTimeoutMs: 5000, ...opts });
      await waitFor('3 live members', async () => {
        // An `overloaded` answer (a small controlInFlightMax, its own reconciliation in flight) is asked again.
        const r = decode((await fake.request(controllerSubject(CLUSTER, 'members'), encode({}))).data) as { members?: Array<{ live: boolean }> };
        return Array.isArray(r.members) && r.members.filter((m) => m.live).length === 3;
      });
      client = createClient(new NatsTransport(fake), { cluster: CLUSTER, timeoutMs: 5000 });
      return {
        opens,
        release: () => {
          released = true;
          for (const m of opens.splice(0)) m.respond(encode({ ok: true }));
        },
        // Catalog operations queued or running on the controller (what CONTROL_QUEUE_MAX bounds).
        queued: () => (node as unknown as { controlQueued: number }).controlQueued,
      };
    }

    const create = (name: string, deadlineMs: number): Promise<unknown> =>
      apiRequest(client, 'volume.create', { name, pageCount: 64, replicas: 3 }, deadlineMs);

    it('a create that fails on one node is undone only once every node answered: a slow node\'s shard is not left open', async () => {
      const events: string[] = [];
      // ghost1 refuses its shard at once; ghost2 opens its own after 500 ms.
      fake.subscribe(nodeSubject(CLUSTER, 'ghost1', 'shards.open'), {
        callback: (_err, msg) => msg.respond(encode(errorReply(new ProtocolError('unavailable', 'ghost1 cannot open it')))),
      });
      fake.subscribe(nodeSubject(CLUSTER, 'ghost2', 'shards.open'), {
        callback: (_err, msg) =>
          setTimeout(() => {
            events.push('ghost2 opened');
            msg.respond(encode({ ok: true }));
          }, 500),
      });
      for (const g of ['ghost1', 'ghost2']) {
        fake.subscribe(nodeSubject(CLUSTER, g, 'shards.destroy'), {
          callback: (_err, msg) => {
            events.push(`${g} destroy`);
            msg.respond(encode({ ok: true }));
          },
        });
      }
      const beat = (): void => {
        for (const g of ['ghost1', 'ghost2']) fake.request(controllerSubject(CLUSTER, 'heartbeat'), encode({ nodeId: g, hosts: 1 })).catch(() => undefined);
      };
      beat();
      ghostTimer = setInterval(beat, 200);
      const node = await startNode('ctl0', { controller: true, requestTimeoutMs: 5000 });
      await waitFor('3 live members', async () => {
        // An `overloaded` answer (a small controlInFlightMax, its own reconciliation in flight) is asked again.
        const r = decode((await fake.request(controllerSubject(CLUSTER, 'members'), encode({}))).data) as { members?: Array<{ live: boolean }> };
        return Array.isArray(r.members) && r.members.filter((m) => m.live).length === 3;
      });
      client = createClient(new NatsTransport(fake), { cluster: CLUSTER, timeoutMs: 5000 });
      const reply = await apiRequest(client, 'volume.create', { name: 'undone', pageCount: 64, replicas: 3 }, Date.now() + 4000);
      assert.equal(errorCode(reply), 'unavailable');
      assert.match(JSON.stringify(reply), /could not be placed: .*ghost1 cannot open it/);
      assert.equal(events[0], 'ghost2 opened', `the destroys came after ghost2's open: ${events.join(', ')}`);
      assert.deepEqual(events.slice(1).sort(), ['ghost1 destroy', 'ghost2 destroy']);
      assert.equal(errorCode(await apiRequest(client, 'volume.info', { name: 'undone' }, Date.now() + 4000)), 'not_found');
      // This node's own replica was destroyed too.
      assert.deepEqual((await node.hostPool.stats()).flatMap((h) => h.device?.shards ?? []), []);
    });

    it(`answers overloaded at once beyond CONTROL_QUEUE_MAX (${CONTROL_QUEUE_MAX}) operations queued or running`, async () => {
      const slow = await controllerWithSlowNodes('ctl1');
      const deadlineMs = Date.now() + 2500;
      const queued = Array.from({ length: CONTROL_QUEUE_MAX }, (_, i) => create(`q${i}`, deadlineMs));
      await waitFor('the first create to run', () => slow.opens.length > 0);
      // Every create has reached the controller's queue (each stays counted until it runs, after the release).
      await waitFor(`${CONTROL_QUEUE_MAX} operations queued or running`, () => slow.queued() === CONTROL_QUEUE_MAX);
      const over = await create('one-more', Date.now() + 4000);
      assert.equal(errorCode(over), 'overloaded', JSON.stringify(over));
      assert.match((over as ErrorReply).error.message, /64 catalog operations queued, its limit/);
      assert.deepEqual((over as ErrorReply).error.details, { queueMax: CONTROL_QUEUE_MAX });
      // Answered at once: while every queued create is still unanswered (a controller that waited
      // for a place in its queue would answer them first, with timeout at their deadline).
      assert.equal(await settledSoFar(Promise.race(queued)), 'pending', 'the queued creates are unanswered');
      assert.equal(slow.queued(), CONTROL_QUEUE_MAX);
      slow.release();
      await Promise.all(queued);
      // The queue drained: the controller takes operations again.
      assert.equal(errorCode(await create('after', Date.now() + 5000)), undefined);
    });

    it('answers overloaded at once beyond controlInFlightMax control requests in flight, and serves again after', async () => {
      const slow = await controllerWithSlowNodes('ctl3', { controlInFlightMax: 3 });
      // Deadlines far enough that none expires in the queue on a loaded machine before the three are counted.
      const held: Array<Promise<unknown>> = [];
      let overloaded = 0;
      const hold = (): void => {
        held.push(create(`h${held.length + 1}`, Date.now() + 30_000).then((r) => ((overloaded += errorCode(r) === 'overloaded' ? 1 : 0), r)));
      };
      for (let i = 0; i < 3; i++) hold();
      await waitFor('the first create to run', () => slow.opens.length > 0);
      // A create that met the controller's own reconciliation in flight (a control request too)
      // was answered overloaded: another is sent in its place, until three are in flight.
      await waitFor('three creates in flight', () => {
        if (slow.queued() < 3 && held.length - overloaded < 3 && held.length < 12) hold();
        return slow.queued() === 3;
      }, 30_000);
      const over = decode((await fake.request(controllerSubject(CLUSTER, 'members'), encode({}))).data);
      assert.equal(errorCode(over), 'overloaded', JSON.stringify(over));
      assert.match((over as ErrorReply).error.message, /3 control requests in flight on node ctl3, its limit/);
      // Heartbeats are answered all the same: nodes do not look dead while the controller is busy.
      const beat = decode((await fake.request(controllerSubject(CLUSTER, 'heartbeat'), encode({ nodeId: 'ghost1', hosts: 1 }))).data);
      assert.equal(errorCode(beat), undefined, JSON.stringify(beat));
      slow.release();
      await Promise.all(held);
      // Served again (its own reconciliation, also a control request, may hold a place a moment).
      await waitFor('members answered again', async () => errorCode(decode((await fake.request(controllerSubject(CLUSTER, 'members'), encode({}))).data)) === undefined);
    });

    /** A controller request sent directly (as a node or the CLI sends it); the decoded answer. */
    const askController = async (verb: string, body: unknown): Promise<unknown> => decode((await fake.request(controllerSubject(CLUSTER, verb), encode(body), { timeout: 10_000 })).data);

    it('a volume whose create has not been answered yet is not_found to volume.info and shard.move, and not listed; answered, it is', async () => {
      const slow = await controllerWithSlowNodes('ctl4');
      const created = create('pending', Date.now() + 20_000);
      await waitFor('the create to run', () => slow.opens.length > 0);
      const info = await askController('volume.info', { name: 'pending' });
      assert.equal(errorCode(info), 'not_found', JSON.stringify(info));
      assert.match((info as ErrorReply).error.message, /^volume 'pending' does not exist \(its create has not been answered yet\)$/);
      const move = await askController('shard.move', { volume: 'pending', shard: 0, from: 'ghost1', to: 'ctl4' });
      assert.equal(errorCode(move), 'not_found', JSON.stringify(move));
      assert.match((move as ErrorReply).error.message, /^volume 'pending' does not exist \(its create has not been answered yet\)$/);
      assert.deepEqual((await askController('volume.list', {}) as { volumes: VolumeInfo[] }).volumes, []);
      slow.release();
      assert.equal(errorCode(await created), undefined);
      assert.equal((await askController('volume.info', { name: 'pending' }) as VolumeInfo).name, 'pending');
      assert.deepEqual((await askController('volume.list', {}) as { volumes: VolumeInfo[] }).volumes.map((v) => v.name), ['pending']);
    });

    it('refuses a change of the controller nodes where one controller node keeps the catalog, and a branch without its branch point, bad_request', async () => {
      await controllerWithSlowNodes('ctl5');
      const controllers = await askController('controllers', {});
      assert.equal(errorCode(controllers), 'bad_request', JSON.stringify(controllers));
      assert.match((controllers as ErrorReply).error.message, /^cluster 'nodetest' has a single controller node \('ctl5', started with --controller\): its controller nodes can not be changed/);
      const branch = await askController('volume.branch', { name: 'kid', parent: 'par' });
      assert.equal(errorCode(branch), 'bad_request', JSON.stringify(branch));
      assert.match((branch as ErrorReply).error.message, /^lsns: the controller needs the branch point of every shard/);
    });

    it('a resize that a node holding a replica refuses is not recorded: unavailable, naming the node; the volume keeps its size', async () => {
      const slow = await controllerWithSlowNodes('ctl6');
      slow.release();
      assert.equal(errorCode(await create('grown', Date.now() + 10_000)), undefined);
      fake.subscribe(nodeSubject(CLUSTER, 'ghost1', 'volume.grow'), {
        callback: (_err, msg) => msg.respond(encode(errorReply(new ProtocolError('unavailable', 'ghost1 cannot grow it')))),
      });
      fake.subscribe(nodeSubject(CLUSTER, 'ghost2', 'volume.grow'), { callback: (_err, msg) => msg.respond(encode({ node: 'ghost2', shards: 1 })) });
      await fake.flush();
      const reply = await apiRequest(client, 'volume.resize', { name: 'grown', pageCount: 128 }, Date.now() + 10_000);
      assert.equal(errorCode(reply), 'unavailable', JSON.stringify(reply));
      assert.match((reply as ErrorReply).error.message, /^volume 'grown' was not resized: not every node holding a replica of it took the new size: ghost1 \(ghost1 cannot grow it\); retry$/);
      assert.equal((await askController('volume.info', { name: 'grown' }) as VolumeInfo).pageCount, 64);
    });

    it('runs an operation sent with a Strata-Deadline a year ahead within DEADLINE_AHEAD_MS_MAX: a create waits for its nodes\' opens and is done', async () => {
      const slow = await controllerWithSlowNodes('ctl7');
      // Sent to the controller directly: the API router's own cap does not apply.
      const headers = natsHeaders();
      headers.set(HEADER_DEADLINE, String(Date.now() + 365 * 24 * 3600_000));
      const reply = fake.request(controllerSubject(CLUSTER, 'volume.create'), encode({ name: 'far', pageCount: 64, replicas: 3 }), { headers, timeout: 20_000 });
      await waitFor('both slow nodes asked to open its replicas', () => slow.opens.length === 2);
      slow.release();
      const created = decode((await reply).data);
      assert.equal(errorCode(created), undefined, JSON.stringify(created));
      assert.equal((created as VolumeInfo).name, 'far');
      assert.deepEqual((await askController('volume.list', {}) as { volumes: VolumeInfo[] }).volumes.map((v) => v.name), ['far']);
    });

    it('does not run a queued operation whose deadline passed while it waited: its requester gave up', async () => {
      const slow = await controllerWithSlowNodes('ctl2');
      const first = create('first', Date.now() + 5000);
      await waitFor('the first create to run', () => slow.opens.length > 0);
      const late = create('late', Date.now() + 300);
      // Sent to the controller directly, its answer is the controller's own.
      const lateHeaders = natsHeaders();
      lateHeaders.set(HEADER_DEADLINE, String(Date.now() + 300));
      const direct = fake.request(controllerSubject(CLUSTER, 'volume.create'), encode({ name: 'late2', pageCount: 64, replicas: 3 }), { headers: lateHeaders, timeout: 20_000 });
      const third = create('third', Date.now() + 5000);
      await sleep(600);
      slow.release();
      assert.equal(errorCode(await first), undefined);
      assert.equal(errorCode(await late), 'timeout');
      const directReply = decode((await direct).data);
      assert.equal(errorCode(directReply), 'timeout', JSON.stringify(directReply));
      assert.match((directReply as ErrorReply).error.message, /^the deadline passed while the operation waited \d+ ms in the controller's queue; it was not run$/);
      assert.equal(errorCode(await third), undefined);
      const list = (await apiRequest(client, 'volume.list', {}, Date.now() + 5000)) as { volumes: VolumeInfo[] };
      assert.deepEqual(list.volumes.map((v) => v.name).sort(), ['first', 'third']);
    });
  });

  describe('heartbeats and reconciliation', () => {
    /** A fake controller whose catalog is at `catalog.epoch`; it counts the heartbeats it answers. */
    function serveFakeHeartbeats(): { epoch: number; heartbeats: number } {
      const catalog = { epoch: 1, heartbeats: 0 };
      serveFake('heartbeat', (msg) => {
        catalog.heartbeats++;
        msg.respond(encode({ epoch: catalog.epoch }));
      });
      return catalog;
    }

    it('runs one heartbeat at a time: a tick while one is in flight is skipped', async () => {
      let inFlight = 0;
      let inFlightMax = 0;
      const arrivedAtMs: number[] = [];
      serveFake('heartbeat', (msg) => {
        arrivedAtMs.push(performance.now());
        inFlightMax = Math.max(inFlightMax, ++inFlight);
        // The controller answers slowly: 300 ms, six heartbeat periods.
        setTimeout(() => {
          inFlight--;
          msg.respond(encode({ epoch: 0 }));
        }, 300);
      });
      serveFake('assignments', (msg) => msg.respond(encode({ epoch: 0, shards: [], tombstones: [] })));
      await startNode('hb1');
      // The heartbeats go on after each slow answer...
      await waitFor('four heartbeats', () => arrivedAtMs.length >= 4);
      // ...never two at once: each waited for the answer to the one before (300 ms), however
      // many ticks (50 ms) came meanwhile.
      assert.equal(inFlightMax, 1);
      const gaps = arrivedAtMs.slice(1).map((t, i) => t - arrivedAtMs[i]!);
      assert.ok(gaps.every((g) => g >= 290), `ms between heartbeats: ${gaps.map((g) => g.toFixed(0)).join(', ')}`);
    });

    it('keeps the heartbeat period while a reconciliation runs, and runs one reconciliation at a time', async () => {
      const catalog = serveFakeHeartbeats();
      let fetches = 0;
      // The fetch at boot is answered at once; the next waits until the test answers it.
      const held: Msg[] = [];
      serveFake('assignments', (msg) => {
        fetches++;
        if (fetches === 1) msg.respond(encode({ epoch: catalog.epoch, shards: [], tombstones: [] }));
        else held.push(msg);
      });
      await startNode('hb3');
      assert.equal(fetches, 1);
      catalog.epoch = 2;
      await waitFor('the reconciliation with epoch 2 to start', () => fetches >= 2);
      // While it runs, the heartbeats go on (each answering epoch 2, newer than the node's), and
      // none of them starts a second reconciliation.
      const before = catalog.heartbeats;
      await waitFor('8 heartbeats during the reconciliation', () => catalog.heartbeats - before >= 8);
      assert.equal(fetches, 2);
      assert.equal(held.length, 1);
      held[0]!.respond(encode({ epoch: catalog.epoch, shards: [], tombstones: [] }));
    });

    it('a deleted volume\'s replica is destroyed even when a shard to open fails, and one still open on a host after its forget is closed', async () => {
      const catalog = serveFakeHeartbeats();
      const shard = (volumeId: string, hostId: number): ShardSpec & { hostId: number } => ({
        volumeId, volumeName: volumeId, shard: 0, shards: 1, pageCount: 64, pageSize: 4096, stripePages: 16, hostId, members: ['rc1'],
      });
      // Epoch 1: va on host 0. Epoch 2: va deleted, and vb placed on a host this node does not have.
      // Epoch 3: vc deleted too.
      const assignments = (): unknown =>
        catalog.epoch === 1
          ? { epoch: 1, shards: [shard('va', 0)], tombstones: [] }
          : catalog.epoch === 2
            ? { epoch: 2, shards: [shard('vb', 3)], tombstones: ['va'] }
            : { epoch: 3, shards: [], tombstones: ['va', 'vc'] };
      serveFake('assignments', (msg) => msg.respond(encode(assignments())));
      const node = await startNode('rc1');
      const open = async (): Promise<string[]> => (await node.hostPool.stats()).flatMap((h) => (h.device?.shards ?? []).map((x) => x.volumeId));
      assert.deepEqual(await open(), ['va']);
      // A replica the node forgot, whose destroy did not reach its host: still open there.
      await node.hostPool.openShard(0, shard('vc', 0));
      assert.deepEqual((await open()).sort(), ['va', 'vc']);
      catalog.epoch = 2;
      const lines = await nodeLogLines(async (seen) => {
        await waitFor('the reconciliation with epoch 2 to fail on vb', () => seen.some((l) => l.msg === 'reconciliation with the catalog failed'));
      });
      assert.deepEqual(await open(), ['vc'], 'va destroyed although vb could not be opened');
      assert.match(JSON.stringify(lines.find((l) => l.msg === 'reconciliation with the catalog failed')), /shard vb\.0 is placed on host 3, this node has 1/);
      // vc is deleted too: the leftover check closes and destroys the replica still open.
      catalog.epoch = 3;
      await waitFor('vc closed and destroyed', async () => (await open()).length === 0, 15_000);
      const dir = path.join(root, 'rc1');
      const left = fs.readdirSync(dir, { recursive: true }).map(String).filter((n) => /(^|\/)(va|vc)\.0$/.test(n));
      assert.deepEqual(left, [], 'no shard directory of va or vc is left');
      // A restarted host does not reopen a deleted volume's replica.
      await nodeLogLines(async () => {
        await node.hostPool.crashHost(0);
        await waitFor('host 0 back', async () => (await node.hostPool.stats())[0]!.device !== undefined, 15_000);
      });
      assert.deepEqual(await open(), []);
    });

    it('reads its assignments page by page, again from the first when the catalog changed between two pages', async () => {
      const catalog = serveFakeHeartbeats();
      const shard = (volumeId: string): ShardSpec & { hostId: number } => ({
        volumeId, volumeName: volumeId, shard: 0, shards: 1, pageCount: 64, pageSize: 4096, stripePages: 16, hostId: 0, members: ['pg1'],
      });
      const all = [shard('pa'), shard('pb'), shard('pc')];
      const fetches: string[] = [];
      let changeOnce = true;
      serveFake('assignments', (msg) => {
        const from = (decode(msg.data) as { from?: number }).from ?? 0;
        if (catalog.epoch === 2 && from === 2 && changeOnce) {
          // The catalog changes between the two pages of the first read.
          changeOnce = false;
          catalog.epoch = 3;
        }
        fetches.push(`${catalog.epoch}@${from}`);
        const page = catalog.epoch === 1 ? [] : all.slice(from, from + 2);
        const next = catalog.epoch > 1 && from + 2 < all.length ? { next: from + 2 } : {};
        msg.respond(encode({ epoch: catalog.epoch, shards: page, tombstones: from === 0 ? ['gone'] : [], ...next }));
      });
      const node = await startNode('pg1');
      catalog.epoch = 2;
      const open = async (): Promise<string[]> => (await node.hostPool.stats()).flatMap((h) => (h.device?.shards ?? []).map((x) => x.volumeId)).sort();
      await waitFor('the three shards of both pages open', async () => (await open()).length === 3, 15_000);
      assert.deepEqual(await open(), ['pa', 'pb', 'pc']);
      assert.deepEqual(fetches.slice(1), ['2@0', '3@2', '3@0', '3@2'], 'the second page of another epoch: read again from the first');
    });

    it('refuses assignments whose pages do not follow on from each other, or that change at every read, and reconciles with none of them', async () => {
      serveFakeHeartbeats();
      const shard = (nodeId: string, i: number): ShardSpec & { hostId: number } => ({
        volumeId: `v${i}`, volumeName: `v${i}`, shard: 0, shards: 1, pageCount: 64, pageSize: 4096, stripePages: 16, hostId: 0, members: [nodeId],
      });
      let epoch = 1;
      const fetches = new Map<string, number>();
      // Per node, its first page and the pages after it (each followed by one more, should the node ask on).
      serveFake('assignments', (msg) => {
        const { nodeId, from, tombstonesFrom } = decode(msg.data) as { nodeId: string; from?: number; tombstonesFrom?: number };
        fetches.set(nodeId, (fetches.get(nodeId) ?? 0) + 1);
        const first = from === undefined && tombstonesFrom === undefined;
        const at = tombstonesFrom ?? from ?? 0;
        const pages: Record<string, unknown> = {
          // Tombstones from 5 after one.
          ap1: first ? { epoch: 1, shards: [], tombstones: ['t0'], tombstonesNext: 5 } : { epoch: 1, shards: [], tombstones: [`t${at}`], tombstonesNext: at + 1 },
          // An empty page of tombstones, naming itself next.
          ap2: first ? { epoch: 1, shards: [], tombstones: ['t0'], tombstonesNext: 1 } : { epoch: 1, shards: [], tombstones: [], tombstonesNext: 1 },
          // Assignments from 3 after one.
          ap3: first ? { epoch: 1, shards: [shard('ap3', 0)], tombstones: [], next: 3 } : { epoch: 1, shards: [shard('ap3', at)], tombstones: [], next: at + 1 },
          // An empty page of assignments, naming itself next.
          ap4: first ? { epoch: 1, shards: [shard('ap4', 0)], tombstones: [], next: 1 } : { epoch: 1, shards: [], tombstones: [], next: 1 },
          // Each page of another epoch: the catalog changes at every read.
          ap5: { epoch: ++epoch, shards: [shard('ap5', at)], tombstones: [], ...(first ? { next: 1 } : {}) },
        };
        msg.respond(encode(pages[nodeId] ?? { epoch: 1, shards: [], tombstones: [] }));
      });
      const expected: Record<string, string> = {
        ap1: 'assignments: tombstones at 5 after 1',
        ap2: 'assignments: an empty page of tombstones at 1',
        ap3: 'assignments: page at 3 after 1 assignments',
        ap4: 'assignments: an empty page at 1 names a next one',
        ap5: 'the catalog changed while its assignments were read, 3 times',
      };
      const started: StrataNode[] = [];
      const failed = (lines: ReadonlyArray<Record<string, unknown>>, id: string) => lines.find((l) => l.node === id && l.msg === 'reconciliation with the catalog failed');
      const lines = await nodeLogLines(async (seen) => {
        for (const id of Object.keys(expected)) started.push(await startNode(id));
        // Each node fails its reconciliation, or (were a page taken) asks on and on.
        await waitFor('every node to fail its reconciliation', () => Object.keys(expected).every((id) => failed(seen, id) !== undefined || (fetches.get(id) ?? 0) > 20), 20_000);
      });
      for (const [id, message] of Object.entries(expected)) {
        const line = failed(lines, id);
        assert.ok(line !== undefined, `${id}: ${fetches.get(id) ?? 0} fetches, no failure`);
        assert.equal((line.err as { message?: unknown } | undefined)?.message, message, JSON.stringify(line));
      }
      for (const n of started) assert.deepEqual((await n.hostPool.stats()).flatMap((h) => h.device?.shards ?? []), [], 'nothing opened');
    });

    it('backs off after a failed reconciliation while heartbeats keep their period; warns once per distinct failure, tells when it recovers', async () => {
      const catalog = serveFakeHeartbeats();
      const fetchedAtMs: number[] = [];
      serveFake('assignments', (msg) => {
        fetchedAtMs.push(Date.now());
        // The fetch at boot works, the next two fail (with the same message), then they work.
        const fails = fetchedAtMs.length === 2 || fetchedAtMs.length === 3;
        msg.respond(encode(fails ? errorReply(new ProtocolError('unavailable', 'catalog busy')) : { epoch: catalog.epoch, shards: [], tombstones: [] }));
      });
      let heartbeatsAtSecondFetch = 0;
      const lines = await nodeLogLines(async (seen) => {
        await startNode('hb2');
        assert.equal(fetchedAtMs.length, 1);
        // The catalog changes: the node reconciles again, and fails.
        catalog.epoch = 2;
        await waitFor('the second fetch', () => fetchedAtMs.length >= 2);
        heartbeatsAtSecondFetch = catalog.heartbeats;
        await waitFor('the reconciliation to work again', () => seen.some((l) => l.msg === 'reconciliation with the catalog works again'), 30_000);
        // Reconciled with epoch 2: nothing more to fetch, however long the test waits.
        await sleep(200);
      });
      // After the first failure, one back-off (1 s) later, two more (2 s) later; then the epoch is reconciled.
      assert.equal(fetchedAtMs.length, 4, `fetches at ${fetchedAtMs.map((t) => t - fetchedAtMs[0]!).join(', ')} ms`);
      assert.ok(fetchedAtMs[2]! - fetchedAtMs[1]! >= RECONCILE_BACKOFF_MS_MIN - 10);
      assert.ok(fetchedAtMs[3]! - fetchedAtMs[2]! >= 2 * RECONCILE_BACKOFF_MS_MIN - 10);
      // Heartbeats (every 50 ms) went on through the 3 s of back-off: at least one per 150 ms, even
      // on a loaded machine (a node whose heartbeats waited out the back-off would send a few).
      const duringBackoff = catalog.heartbeats - heartbeatsAtSecondFetch;
      assert.ok(duringBackoff >= 20, `heartbeats during the back-off: ${duringBackoff}`);
      const failed = lines.filter((l) => l.msg === 'reconciliation with the catalog failed');
      assert.equal(failed.length, 1, JSON.stringify(lines));
      assert.equal(failed[0]!.level, 'warn');
      assert.match(JSON.stringify(failed[0]!.err), /catalog busy/);
      const recovered = lines.filter((l) => l.msg === 'reconciliation with the catalog works again');
      assert.equal(recovered.length, 1, JSON.stringify(lines));
      assert.equal(recovered[0]!.level, 'info');
    });

    it('does not warn of a controller moving (a deposed one answering, or nobody serving its subjects) for its first seconds; lasting longer, warns once', async () => {
      let answer: 'catalog' | 'notController' = 'catalog';
      const moved = errorReply(new ProtocolError('unavailable', "node 'c1' no longer runs the controller; retry", { notController: true }));
      const serveHeartbeats = () => fake.subscribe(controllerSubject(CLUSTER, 'heartbeat'), { callback: (_err, msg) => msg.respond(encode(answer === 'catalog' ? { epoch: 0 } : moved)) });
      let heartbeats = serveHeartbeats();
      serveFake('assignments', (msg) => msg.respond(encode({ epoch: 0, shards: [], tombstones: [] })));
      await startNode('mv1');
      const failures = (lines: ReadonlyArray<Record<string, unknown>>) => lines.filter((l) => String(l.msg).startsWith('heartbeat to the controller failed') && l.level !== 'debug');
      // A move: the deposed controller answers, then nobody does for a moment, then the next one.
      const quiet = await nodeLogLines(async () => {
        answer = 'notController';
        await sleep(400);
        // Drained: a heartbeat on its way is still answered (one dropped would time out).
        await heartbeats.drain();
        await sleep(400);
        answer = 'catalog';
        heartbeats = serveHeartbeats();
        await fake.flush();
        await sleep(300);
      });
      assert.deepEqual(failures(quiet), [], 'nothing at warn for a move');
      // No controller for longer: one warning, saying for how long, then that it works again.
      const loud = await nodeLogLines(async (seen) => {
        await heartbeats.drain();
        await waitFor('the warning', () => failures(seen).length > 0, 15_000);
        heartbeats = serveHeartbeats();
        await fake.flush();
        await waitFor('heartbeats work again', () => seen.some((l) => l.msg === 'heartbeat to the controller works again'), 15_000);
      });
      const warned = failures(loud);
      assert.equal(warned.length, 1, JSON.stringify(warned));
      assert.equal(warned[0]!.level, 'warn');
      assert.ok(Number(warned[0]!.failingForMs) >= CONTROLLER_MOVE_QUIET_MS, JSON.stringify(warned[0]));
      assert.match(JSON.stringify(warned[0]!.err), /no responders/);
    });
  });
});

