import { strict as assert } from 'node:assert';
import { connect, type Msg, type NatsConnection } from 'nats';
import { NatsTransport, WRITE_TRY_MS_MIN, createClient, type StrataClient } from '../../cluster/client';
import { decode, encode } from '../../messages/codec';
import type { VolumeInfo } from '../../messages/api';
import { ConnectionState } from '../../runtime/request-mux';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { waitFor } from '../support/wait';
import { rejectsWith } from '../support/expect';

/**
 * The client over a real nats-server, in front of a fake node: a NATS connection that answers
 * the cluster's subjects as each test says (or takes a request and never answers it). The
 * server is stopped and started again on its port while calls are under way.
 */

const CLUSTER = 'fk';
const INFO: VolumeInfo = { name: 'v', id: 'v1', pageCount: 256, pageSize: 4096, shards: 1, stripePages: 256, replicas: 1, createdAt: 1_700_000_000_000 };
const LEADERS = `strata.${CLUSTER}.shard.v1.0.leaders`;

/** What a fake node does with a request: answer (a reply body), or nothing (undefined). */
type Handler = (msg: Msg, body: unknown) => unknown;

interface FakeNode {
  nc: NatsConnection;
  /** The subjects of the requests it took, in order, each with its body. */
  took: Array<{ subject: string; body: unknown }>;
  handlers: Map<string, Handler>;
  close(): Promise<void>;
}

/** A fake node on its own connection, which reconnects every 100 ms for good; volume.info of `v` answered by default. */
async function fakeNode(url: string): Promise<FakeNode> {
  const nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  const node: FakeNode = { nc, took: [], handlers: new Map(), close: () => nc.close() };
  const prefix = `strata.${CLUSTER}.`;
  nc.subscribe(`${prefix}>`, {
    callback: (err, msg) => {
      if (err !== null) return;
      let body: unknown;
      try {
        body = decode(msg.data);
      } catch {
        body = undefined;
      }
      node.took.push({ subject: msg.subject, body });
      const key = msg.subject.slice(prefix.length).replace(/\.every$/, '');
      const handler = node.handlers.get(key) ?? (key === 'api.volume.info' ? () => INFO : undefined);
      const reply = handler?.(msg, body);
      if (reply !== undefined) msg.respond(reply instanceof Uint8Array ? reply : encode(reply));
    },
  });
  await nc.flush();
  return node;
}

/** A client over its own connection (reconnecting as `connect`'s does), with that connection's state to watch. */
async function clientOf(url: string, reconnectTimeWait = 100): Promise<{ client: StrataClient; connection: ConnectionState }> {
  const nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait, noAsyncTraces: true });
  return { client: createClient(new NatsTransport(nc), { cluster: CLUSTER, timeoutMs: 10_000 }), connection: new ConnectionState(nc) };
}

describe('cluster/client over NATS: calls across a closed or dropped connection', function () {
  this.timeout(60_000);
  let server: NatsServerHandle;
  let node: FakeNode;
  let client: StrataClient;
  let connection: ConnectionState;

  beforeEach(async () => {
    server = await startNatsServer({ jetstream: false });
    node = await fakeNode(server.url);
    ({ client, connection } = await clientOf(server.url));
  });
  afterEach(async () => {
    await client.close();
    await node.close();
    await server.stop();
  });

  /** Stops the server and waits for the client to see it gone. */
  async function outage(): Promise<void> {
    await server.stop();
    await waitFor('the client to see the disconnect', () => !connection.connected, 10_000);
  }

  it('a write and a read made while NATS is down wait for the reconnect within their deadline, past the time of their first try', async () => {
    const vol = client.volume('v');
    await vol.info();
    // A read's tries after its first go to the leaders' subject too (a write's body has pages
    // with data, a read's page numbers).
    const readReply = { pages: [new Uint8Array(4096).fill(7)], lsn: 1 };
    const isRead = (body: unknown): boolean => typeof (body as { pages?: unknown[] }).pages?.[0] === 'number';
    node.handlers.set('shard.v1.0.leaders', (_msg, body) => (isRead(body) ? readReply : { lsn: 1, term: 1 }));
    node.handlers.set('shard.v1.0', () => readReply);
    const port = server.port;
    await outage();
    const write = vol.write(3, new Uint8Array(4096).fill(3));
    const read = vol.read(3);
    // Down for longer than a first try waits (WRITE_TRY_MS_MIN, as a read's and an API read's).
    await new Promise((r) => setTimeout(r, WRITE_TRY_MS_MIN + 500));
    server = await startNatsServer({ jetstream: false, port });
    assert.equal((await write).lsn, 1);
    assert.deepEqual(await read, new Uint8Array(4096).fill(7));
    const writes = node.took.filter((t) => t.subject.endsWith('.leaders') && !isRead(t.body));
    assert.ok(writes.length >= 1);
    assert.equal((writes[0]!.body as { sentMs?: number }).sentMs, undefined, 'the first write that went out is a first send');
  });

  it('API reads and changes with a request id taken by a node when the connection dropped are sent again once it is back, the changes with their request ids', async () => {
    // This client reconnects after the fake node does (it waits 1 s between its attempts, the
    // node 100 ms): the node has subscribed again when the requests go out again.
    await client.close();
    ({ client, connection } = await clientOf(server.url, 1000));
    let taken = 0;
    let allTaken: () => void = () => undefined;
    const reached = new Promise<void>((resolve) => (allTaken = resolve));
    /** The first request of each verb is taken and not answered (its node dies with it); the next is answered. */
    const firstLost = (reply: (body: unknown) => unknown): Handler => {
      let seen = 0;
      return (_msg, body) => {
        if (seen++ > 0) return reply(body);
        if (++taken === 3) allTaken();
        return undefined;
      };
    };
    node.handlers.set('api.volume.create', firstLost(() => ({ ...INFO, name: 'new', id: 'v2' })));
    node.handlers.set('api.volume.delete', firstLost(() => ({ deleted: true })));
    node.handlers.set('api.volume.info', firstLost(() => INFO));
    const create = client.createVolume({ name: 'new', pageCount: 256 });
    const del = client.deleteVolume('old');
    const info = client.volumeInfo('v');
    await reached;
    const port = server.port;
    server.kill();
    await server.stop();
    await waitFor('the client to see the disconnect', () => !connection.connected, 10_000);
    server = await startNatsServer({ jetstream: false, port });
    assert.equal((await create).name, 'new');
    await del;
    assert.equal((await info).name, 'v');
    for (const verb of ['create', 'delete']) {
      const bodies = node.took.filter((t) => t.subject.startsWith(`strata.${CLUSTER}.api.volume.${verb}`)).map((t) => t.body as { requestId: string });
      assert.equal(bodies.length, 2, verb);
      assert.equal(bodies[1]!.requestId, bodies[0]!.requestId, `${verb}: sent again with its request id`);
    }
  });

  it('an API call that finds no node serving the API just after the client reconnected is sent again until a node has subscribed again', async () => {
    // The node is away when the client is back (it has not subscribed again yet), and comes a
    // moment after the call was made.
    await node.close();
    const port = server.port;
    await outage();
    server = await startNatsServer({ jetstream: false, port });
    await waitFor('the client to reconnect', () => connection.connected, 10_000);
    const info = client.volumeInfo('v');
    await new Promise((r) => setTimeout(r, 300));
    node = await fakeNode(server.url);
    assert.equal((await info).name, 'v');
    assert.ok(node.took.some((t) => t.subject.startsWith(`strata.${CLUSTER}.api.volume.info`)), 'answered by the node that came');
  });

  it('a write in flight when the client is closed is timeout (it reached the leader: it may or may not be committed), not unavailable', async () => {
    let taken: () => void = () => undefined;
    const reached = new Promise<void>((resolve) => (taken = resolve));
    node.handlers.set(LEADERS.slice(`strata.${CLUSTER}.`.length), () => void taken());
    const write = client.volume('v').write(3, new Uint8Array(4096).fill(3));
    await reached;
    await client.close();
    const e = await rejectsWith(write, 'timeout', /may or may not be committed/);
    assert.equal(e.details?.['outcomeUnknown'], true, JSON.stringify(e.details) + e.message);
    assert.equal(e.details?.['code'], 'unavailable');
    assert.equal(node.took.filter((t) => t.subject === LEADERS).length, 1, 'nothing sent after the close');
  });
});
