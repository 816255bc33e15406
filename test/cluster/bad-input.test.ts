import { strict as assert } from 'node:assert';
import * as net from 'node:net';
import { connect as natsConnect } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { demoPage } from '../../cluster/dev';
import { encode, decode } from '../../messages/codec';
import { ProtocolError, type ErrorReply } from '../../messages/errors';
import { HEADER_DEADLINE, HEADER_SCHEMA, HEADER_TYPE } from '../../messages/headers';
import { shardSubject, apiSubject } from '../../messages/subjects';
import { controllerSubject, nodeSubject } from '../../messages/control';
import { replicaSubject } from '../../messages/raft';
import { REQUEST_ITEMS_MAX, type VolumeInfo } from '../../messages/api';
import { formatStatus } from '../../observability/status';
import { CONTROL_REQUEST_ITEMS_MAX } from '../../cluster/node';
import { waitFor } from '../support/wait';

function headers(type: string, extra: Record<string, string> = {}): Record<string, string> {
  return { [HEADER_TYPE]: type, [HEADER_SCHEMA]: '1', [HEADER_DEADLINE]: String(Date.now() + 5000), ...extra };
}

/**
 * Publishes a request whose header block nats.js's decoder refuses (a value with a lone LF), over
 * a raw NATS connection (nats.js will not send such headers), and returns the decoded reply.
 */
async function rawMalformedHeaderRequest(natsUrl: string, subject: string, body: Uint8Array, type: string): Promise<unknown> {
  const nc = await natsConnect({ servers: natsUrl });
  const inbox = `malformed.${Math.random().toString(36).slice(2)}`;
  const sub = nc.subscribe(inbox, { max: 1 });
  await nc.flush();
  const socket = net.connect(Number(new URL(natsUrl).port), '127.0.0.1');
  try {
    const hdr = `NATS/1.0\r\n${HEADER_TYPE}: ${type}\r\n${HEADER_SCHEMA}: 1\r\nx: a\nb\r\n\r\n`;
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.once('data', () => {
        socket.write('CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n');
        socket.write(`HPUB ${subject} ${inbox} ${Buffer.byteLength(hdr)} ${Buffer.byteLength(hdr) + body.length}\r\n`);
        socket.write(hdr);
        socket.write(body);
        socket.write('\r\n', () => resolve());
      });
    });
    const timer = setTimeout(() => sub.unsubscribe(), 5000);
    for await (const m of sub) {
      clearTimeout(timer);
      return decode(m.data);
    }
    throw new Error('no reply to the request with malformed headers');
  } finally {
    socket.destroy();
    await nc.close();
  }
}

/** A page.read of pages 0..count-1 of `volume` sent raw to the public API; its decoded reply. */
async function rawPageRead(c: InProcessCluster, volume: string, count: number): Promise<Partial<ErrorReply>> {
  const body = encode({ volume, pages: Array.from({ length: count }, (_, i) => i) });
  const headers = { [HEADER_TYPE]: 'page.read', [HEADER_SCHEMA]: '1', [HEADER_DEADLINE]: String(Date.now() + 5000) };
  return decode(await c.client.rawRequest(apiSubject(c.cluster, 'page.read'), body, headers)) as Partial<ErrorReply>;
}

describe('bad input over NATS gets a typed error and the node keeps serving', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  let info: VolumeInfo;
  let shard0: string;

  /** Sends raw bytes and returns the decoded error body (failing if the reply is not an error). */
  async function rawError(subject: string, data: Uint8Array, hdrs: Record<string, string>): Promise<ErrorReply['error']> {
    const reply = decode(await c.client.rawRequest(subject, data, hdrs)) as Partial<ErrorReply>;
    assert.ok(reply.error, `expected an error reply, got ${JSON.stringify(reply)}`);
    return reply.error;
  }

  async function stillServes(): Promise<void> {
    const vol = c.client.volume('v-bad');
    const data = demoPage(4096, 2, Date.now() & 0xffff);
    await vol.write(2, data);
    assert.deepEqual(Buffer.from((await vol.readPages([2])).pages[0]!), Buffer.from(data));
  }

  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 1 });
    info = await c.client.createVolume({ name: 'v-bad', pageCount: 100, shards: 1 });
    shard0 = shardSubject(c.cluster, info.id, 0);
  });
  after(async () => {
    await c?.stop();
  });
  afterEach(async () => {
    await stillServes();
  });

  it('a volume of more pages than a shard can record → bad_request at once (it was accepted, then no shard opened: unavailable); the largest one serves its last page', async () => {
    const e = await rawError(apiSubject(c.cluster, 'volume.create'), encode({ name: 'v-huge', pageCount: 2 ** 32, shards: 2 }), headers('volume.create'));
    assert.equal(e.code, 'bad_request');
    assert.match(e.message, /pageCount: expected an integer in 1\.\.4294967295, got 4294967296/);
    const largest = await c.client.createVolume({ name: 'v-largest', pageCount: 2 ** 32 - 1, shards: 2 });
    const data = demoPage(4096, 2 ** 32 - 2, 7);
    await c.client.volume(largest.name).write(2 ** 32 - 2, data);
    assert.deepEqual(Buffer.from((await c.client.volume(largest.name).readPages([2 ** 32 - 2])).pages[0]!), Buffer.from(data));
    await c.client.deleteVolume(largest.name);
  });

  it('malformed CBOR to a shard → bad_request', async () => {
    const e = await rawError(shard0, new Uint8Array([0xff, 0x00, 0x13, 0x37]), headers('shard.write'));
    assert.equal(e.code, 'bad_request');
  });

  it('truncated CBOR to the API → bad_request', async () => {
    const full = encode({ volume: 'v-bad', pages: [{ page: 1, data: new Uint8Array(4096) }] });
    const e = await rawError(apiSubject(c.cluster, 'page.write'), full.subarray(0, 100), headers('page.write'));
    assert.equal(e.code, 'bad_request');
  });

  it('missing fields → bad_request naming the field', async () => {
    const e = await rawError(shard0, encode({}), headers('shard.write'));
    assert.equal(e.code, 'bad_request');
    assert.match(JSON.stringify(e), /pages/);
  });

  it('wrong types → bad_request', async () => {
    const e = await rawError(shard0, encode({ pages: 'all of them' }), headers('shard.write'));
    assert.equal(e.code, 'bad_request');
    const e2 = await rawError(shard0, encode({ pages: [{ page: 'one', data: new Uint8Array(4096) }] }), headers('shard.write'));
    assert.equal(e2.code, 'bad_request');
  });

  it('page out of range → out_of_range', async () => {
    const e = await rawError(shard0, encode({ pages: [{ page: 100, data: new Uint8Array(4096) }] }), headers('shard.write'));
    assert.equal(e.code, 'out_of_range');
    const e2 = await rawError(shard0, encode({ pages: [100] }), headers('shard.read'));
    assert.equal(e2.code, 'out_of_range');
    await assert.rejects(
      c.client.apiRequest('page.read', { volume: 'v-bad', pages: [1000] }),
      (err: ProtocolError) => err.code === 'out_of_range',
    );
  });

  it('wrong data length → bad_request', async () => {
    const e = await rawError(shard0, encode({ pages: [{ page: 1, data: new Uint8Array(100) }] }), headers('shard.write'));
    assert.equal(e.code, 'bad_request');
    assert.match(e.message, /4096/);
  });

  it('unknown volume → not_found', async () => {
    await assert.rejects(c.client.volume('no-such-volume').readPages([0]), (err: ProtocolError) => err.code === 'not_found');
    await assert.rejects(
      c.client.apiRequest('page.write', { volume: 'no-such-volume', pages: [{ page: 0, data: new Uint8Array(4096) }] }),
      (err: ProtocolError) => err.code === 'not_found',
    );
  });

  it('a request over the server max_payload → too_large, before it is sent', async () => {
    await assert.rejects(
      c.client.rawRequest(shard0, new Uint8Array(2 * 1024 * 1024), headers('shard.write')),
      (err: ProtocolError) => err.code === 'too_large',
    );
  });

  it('a header block nats.js cannot decode, to a shard and to the API → bad_request (the host\'s and the node\'s readers survive)', async () => {
    const toShard = await rawMalformedHeaderRequest(c.natsUrl, shard0, encode({ pages: [1] }), 'shard.read') as Partial<ErrorReply>;
    assert.equal(toShard.error?.code, 'bad_request', JSON.stringify(toShard));
    assert.match(toShard.error!.message, /malformed NATS headers/);
    const toApi = await rawMalformedHeaderRequest(c.natsUrl, apiSubject(c.cluster, 'page.read'), encode({ volume: 'v-bad', pages: [1] }), 'page.read') as Partial<ErrorReply>;
    assert.equal(toApi.error?.code, 'bad_request', JSON.stringify(toApi));
    // afterEach: the shard still serves writes and reads through the client.
    const again = await c.client.volume('v-bad').readPages([1]);
    assert.equal(again.pages.length, 1);
  });

  it('more pages than a request may carry → too_large', async () => {
    const pages = Array.from({ length: 300 }, (_, i) => i % 100);
    const e = await rawError(shard0, encode({ pages }), headers('shard.read'));
    assert.equal(e.code, 'too_large');
  });

  it('a request of a million empty maps (1 MB), to a shard, the API, a node or the controller → too_large, refused before it is decoded', async () => {
    // Decoded, each item is an object: most of a second of the receiving thread's time each.
    const items = 1_000_000 - 8;
    const body = new Uint8Array(5 + items).fill(0xa0);
    body[0] = 0x9a; // an array of `items` items, its length in 4 bytes
    new DataView(body.buffer).setUint32(1, items);
    const toShard = await rawError(shard0, body, headers('shard.write'));
    assert.equal(toShard.code, 'too_large', toShard.message);
    assert.match(toShard.message, new RegExp(`more than ${REQUEST_ITEMS_MAX} CBOR items`));
    const toApi = await rawError(apiSubject(c.cluster, 'page.write'), body, headers('page.write'));
    assert.equal(toApi.code, 'too_large', toApi.message);
    // And to the node's and the controller's own subjects (open to anyone on the NATS server).
    const toNode = await rawError(nodeSubject(c.cluster, 'n1', 'status'), body, {});
    assert.equal(toNode.code, 'too_large', toNode.message);
    assert.match(toNode.message, new RegExp(`more than ${CONTROL_REQUEST_ITEMS_MAX} CBOR items`));
    const toController = await rawError(controllerSubject(c.cluster, 'heartbeat'), body, {});
    assert.equal(toController.code, 'too_large', toController.message);
  });

  it('a read of as many pages as a request may carry, whose reply would not fit a message → too_large', async () => {
    // 256 pages of 4 KiB: a valid request, but 1 MiB of page data in the reply.
    const pages = Array.from({ length: 256 }, (_, i) => i % 100);
    const e = await rawError(shard0, encode({ pages }), headers('shard.read'));
    assert.equal(e.code, 'too_large');
    assert.match(e.message, /256 pages/);
  });

  it('a request to a deleted volume → not_found', async () => {
    await c.client.createVolume({ name: 'v-gone', pageCount: 10 });
    const vol = c.client.volume('v-gone');
    await vol.write(1, new Uint8Array(4096).fill(1));
    await c.client.deleteVolume('v-gone');
    await assert.rejects(vol.write(1, new Uint8Array(4096)), (err: ProtocolError) => err.code === 'not_found');
    await assert.rejects(vol.readPages([1]), (err: ProtocolError) => err.code === 'not_found');
  });

  it('a node answering the status gather with something of another shape is left out; the cluster status still answers', async () => {
    const nc = await natsConnect({ servers: c.natsUrl });
    try {
      const hostile = [{ shards: 5 }, { node: { id: 'n9' }, shards: [null] }];
      let i = 0;
      nc.subscribe(`strata.${c.cluster}.nodes.status`, { callback: (_e, m) => m.respond(encode(hostile[i++ % hostile.length])) });
      await nc.flush();
      for (let k = 0; k < hostile.length; k++) {
        const status = (await c.client.status()) as unknown as { nodes: Array<{ node?: { id?: string } }> };
        assert.deepEqual(status.nodes.map((n) => n.node?.id), ['n1'], 'the real node is listed, and only it');
      }
    } finally {
      await nc.close();
    }
  });

  it('unknown message type, unsupported schema, or a passed deadline → typed errors', async () => {
    assert.equal((await rawError(shard0, encode({}), headers('shard.explode'))).code, 'bad_request');
    assert.equal((await rawError(shard0, encode({ pages: [1] }), headers('shard.read', { [HEADER_SCHEMA]: '99' }))).code, 'bad_request');
    assert.equal((await rawError(shard0, encode({ pages: [1] }), headers('shard.read', { [HEADER_DEADLINE]: String(Date.now() - 1) }))).code, 'timeout');
  });

  it('a malformed replication message to a replica → bad_request; the replica keeps its term and leads on, without an election or a restart', async () => {
    const node = c.nodes[0]!;
    /** The shard's replica and the host's restarts, from the node's own status. */
    const state = async (): Promise<{ term: unknown; role: unknown; leader: unknown; elections: unknown; restarts: unknown; volumeName: unknown }> => {
      const st = (await node.status()) as unknown as { shards: Array<Record<string, unknown>>; hosts: Array<Record<string, unknown>> };
      const s = st.shards.find((x) => x['volumeId'] === info.id)!;
      return { term: s['term'], role: s['role'], leader: s['leader'], elections: s['elections'], restarts: st.hosts[0]!['restarts'], volumeName: s['volumeName'] };
    };
    const before = await state();
    assert.equal(before.role, 'leader');
    assert.equal(before.volumeName, 'v-bad', 'the node names the volume of each shard it holds');
    const subject = replicaSubject(c.cluster, info.id, 0, node.nodeId);
    // A newer term and an unknown leader, with records that are not a list.
    const append = encode({ type: 'append', term: 99, leader: 'zz', prevLsn: 0, prevTerm: 0, records: 'not a list', commitLsn: 0 });
    const e = await rawError(subject, append, { [HEADER_TYPE]: 'raft.append', [HEADER_SCHEMA]: '1' });
    assert.equal(e.code, 'bad_request');
    assert.match(e.message, /records/);
    assert.deepEqual(await state(), before, 'the term did not move to the message\'s, nor the leader');
    // A write commits in the same term: no election took place, no host restarted.
    await c.client.volume('v-bad').write(3, new Uint8Array(4096).fill(3));
    assert.deepEqual(await state(), before);
  });

  it('a volume.create sent to the controller directly with a deadline years ahead is run with the API\'s longest (5 min), and creates the volume', async () => {
    // Waits derived from such a deadline overflowed Node's timers, which fired at once: the
    // create always failed, "could not be placed".
    const reply = decode(await c.client.rawRequest(controllerSubject(c.cluster, 'volume.create'), encode({ name: 'v-far', pageCount: 16, shards: 1 }), headers('volume.create', { [HEADER_DEADLINE]: '9000000000000000' }))) as { id?: string; error?: unknown };
    assert.equal(reply.error, undefined, JSON.stringify(reply));
    assert.equal(typeof reply.id, 'string');
    const data = demoPage(4096, 3, 5);
    await c.client.volume('v-far').write(3, data);
    assert.deepEqual(Buffer.from((await c.client.volume('v-far').readPages([3])).pages[0]!), Buffer.from(data));
  });

  it('a shard request naming another leader term than the shard\'s is refused: stale_term behind it, not_leader ahead; nothing written', async () => {
    const vol = c.client.volume('v-bad');
    const before = demoPage(4096, 7, 1);
    const { term } = await vol.writePages([{ page: 7, data: before }]).then((r) => ({ term: r.lsns[0]!.term! }));
    assert.ok(term >= 1);
    const other = demoPage(4096, 7, 2);
    const behind = await rawError(shard0, encode({ pages: [{ page: 7, data: other }], term: term - 1 }), headers('shard.write'));
    assert.equal(behind.code, 'stale_term');
    assert.equal((behind.details as { term?: number }).term, term);
    const ahead = await rawError(shard0, encode({ pages: [7], term: term + 1 }), headers('shard.read'));
    assert.equal(ahead.code, 'not_leader');
    assert.equal((await rawError(shard0, encode({ term: term + 5 }), headers('shard.flush'))).code, 'not_leader');
    // A range made zeros and a map, the same.
    const zeroBehind = await rawError(shard0, encode({ first: 7, count: 1, term: term - 1 }), headers('shard.zero'));
    assert.equal(zeroBehind.code, 'stale_term');
    assert.equal((zeroBehind.details as { term?: number }).term, term);
    assert.equal((await rawError(shard0, encode({ first: 0, count: 16, term: term + 1 }), headers('shard.map'))).code, 'not_leader');
    assert.equal((await rawError(shard0, encode({ first: 0, count: 16, term: term - 1 }), headers('shard.map'))).code, 'stale_term');
    assert.deepEqual(Buffer.from((await vol.readPages([7])).pages[0]!), Buffer.from(before), 'the refused write and zeros wrote nothing');
    // The shard's own term: served.
    const ok = decode(await c.client.rawRequest(shard0, encode({ pages: [{ page: 7, data: other }], term }), headers('shard.write'))) as { lsn?: number; term?: number };
    assert.equal(ok.term, term);
    assert.deepEqual(Buffer.from((await vol.readPages([7])).pages[0]!), Buffer.from(other));
  });

  it('a shard request\'s Strata-Deadline is read as the API reads it: not a decimal integer → bad_request naming the header', async () => {
    const later = Date.now() + 60_000;
    for (const value of ['x', '0x10', '1e3', '-5', `${later}.5`, `+${later}`]) {
      const err = await rawError(shard0, encode({ pages: [1] }), headers('shard.read', { [HEADER_DEADLINE]: value }));
      assert.equal(err.code, 'bad_request', `Strata-Deadline ${JSON.stringify(value)}`);
      assert.match(err.message, /Strata-Deadline/);
    }
  });
});

describe('a full mailbox answers overloaded, not a crash or a hang', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 1, node: { mailboxRequestsMax: 4 } });
  });
  after(async () => {
    await c?.stop();
  });

  it('refuses the excess with overloaded and serves again afterwards', async () => {
    const info = await c.client.createVolume({ name: 'v-load', pageCount: 4096 });
    const subject = shardSubject(c.cluster, info.id, 0);
    const data = new Uint8Array(4096).fill(7);
    // 200 writes sent at once into a mailbox that admits 4.
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        c.client.rawRequest(subject, encode({ pages: [{ page: i, data }] }), headers('shard.write')).then((b) => decode(b) as Record<string, unknown>),
      ),
    );
    const overloaded = replies.filter((r) => (r.error as { code?: string } | undefined)?.code === 'overloaded').length;
    const ok = replies.filter((r) => typeof r.lsn === 'number').length;
    assert.equal(ok + overloaded, 200, 'every request got an answer: a commit or overloaded');
    assert.ok(overloaded > 0, 'some were refused');
    assert.ok(ok >= 4, 'the admitted ones committed');
    // The refusal names the bound it met: the request count here.
    const refusal = replies.find((r) => (r.error as { code?: string } | undefined)?.code === 'overloaded')!.error as { message: string; details: Record<string, unknown> };
    assert.match(refusal.message, /mailbox is full \(4 requests of at most 4\); retry after a back-off/);
    assert.equal(refusal.details['requestsMax'], 4);
    // Every acknowledged write is readable, and the shard serves normally again.
    const vol = c.client.volume('v-load');
    const acked = replies.map((r, i) => (typeof r.lsn === 'number' ? i : -1)).filter((i) => i >= 0);
    const got = await vol.readPages(acked.slice(0, 200));
    for (const p of got.pages) assert.deepEqual(Buffer.from(p), Buffer.from(data));
    await vol.write(4000, data);
  });
});

describe('the public API checks its headers and limits (on a NATS server whose max_payload is 2 MiB)', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  before(async () => {
    // A server that carries more than a page.read may answer: the API's own limit must hold.
    c = await startCluster({ nodes: 1, hosts: 1, maxPayloadBytes: 2 * 1024 * 1024 });
  });
  after(async () => {
    await c?.stop();
  });

  it('a request without Strata-Schema, or with an unsupported one, gets bad_request naming the supported versions', async () => {
    const variants: Array<Record<string, string>> = [{}, { [HEADER_SCHEMA]: '7' }];
    for (const hdrs of variants) {
      const reply = decode(await c.client.rawRequest(apiSubject(c.cluster, 'volume.list'), encode({}), hdrs)) as { error?: { code: string; details?: { supported?: unknown } } };
      assert.equal(reply.error?.code, 'bad_request');
      assert.deepEqual(reply.error?.details?.supported, [1]);
    }
    assert.ok(Array.isArray(await c.client.listVolumes()), 'a well-formed request is served');
  });

  it('a request whose Strata-Type is not its subject\'s verb (another verb, none, an unknown one) gets bad_request naming Strata-Type', async () => {
    for (const type of ['page.write', '', 'bogus']) {
      const hdrs = { [HEADER_SCHEMA]: '1', ...(type ? { [HEADER_TYPE]: type } : {}) };
      const reply = decode(await c.client.rawRequest(apiSubject(c.cluster, 'volume.list'), encode({}), hdrs)) as Partial<ErrorReply>;
      assert.equal(reply.error?.code, 'bad_request', `Strata-Type ${JSON.stringify(type)}`);
      assert.match(reply.error?.message ?? '', /Strata-Type/);
    }
  });

  it('a page.read of more page data than a reply may carry (256 pages of 4 KiB) → too_large, though the server would carry it', async () => {
    await c.client.createVolume({ name: 'v-big-read', pageCount: 512, shards: 2, stripePages: 128 });
    const reply = await rawPageRead(c, 'v-big-read', 256);
    assert.equal(reply.error?.code, 'too_large', JSON.stringify(reply).slice(0, 200));
  });
});

describe('a NATS server with a small max_payload (256 KiB)', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  let shard0: string;

  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, maxPayloadBytes: 256 * 1024 });
    const info = await c.client.createVolume({ name: 'v-small', pageCount: 4096, shards: 1, replicas: 3 });
    shard0 = shardSubject(c.cluster, info.id, 0);
    // Through the client, which waits for the shard's leader to be elected and to subscribe.
    await c.client.volume('v-small').write(4095, demoPage(4096, 4095, 1));
  });
  after(async () => {
    await c?.stop();
  });

  it('a raw read whose reply exceeds the server max_payload → too_large (not a silent drop, not internal)', async () => {
    const pages = Array.from({ length: 100 }, (_, i) => i);
    const reply = decode(await c.client.rawRequest(shard0, encode({ pages }), {
      [HEADER_TYPE]: 'shard.read',
      [HEADER_SCHEMA]: '1',
      [HEADER_DEADLINE]: String(Date.now() + 5000),
    })) as Partial<ErrorReply>;
    assert.equal(reply.error?.code, 'too_large', JSON.stringify(reply));
  });

  it('replicated writes of 128 KiB, many in flight, all commit: appends to the followers are sized to fit', async () => {
    const vol = c.client.volume('v-small');
    // 16 writers × 4 writes of 32 pages: the leader batches records into appends, which must
    // each fit 256 KiB or the followers never get them (the writes would time out).
    const results = await Promise.all(Array.from({ length: 16 }, async (_, w) => {
      for (let i = 0; i < 4; i++) {
        const first = ((w * 4 + i) * 32) % 4096;
        await vol.writePages(Array.from({ length: 32 }, (_, j) => ({ page: first + j, data: demoPage(4096, first + j, w) })));
      }
      return w;
    }));
    assert.equal(results.length, 16);
    const back = await vol.readPages([0, 31, 2047]);
    assert.deepEqual(Buffer.from(back.pages[1]!), Buffer.from(demoPage(4096, 31, 0)));
  });

  it('a page.read through the public API whose reply exceeds the server max_payload → too_large', async () => {
    const reply = await rawPageRead(c, 'v-small', 100);
    assert.equal(reply.error?.code, 'too_large', JSON.stringify(reply).slice(0, 300));
  });

  it('the client splits the same read into replies that fit, and gets every page', async () => {
    const vol = c.client.volume('v-small');
    const data = demoPage(4096, 99, 7);
    await vol.write(99, data);
    const got = await vol.readPages(Array.from({ length: 100 }, (_, i) => i));
    assert.equal(got.pages.length, 100);
    assert.deepEqual(Buffer.from(got.pages[99]!), Buffer.from(data));
  });
});

describe('a control reply larger than the NATS server carries', function () {
  this.timeout(60_000);
  let c: InProcessCluster;

  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 1, maxPayloadBytes: 16 * 1024 });
  });
  after(async () => {
    await c?.stop();
  });

  it('a volume list over the server max_payload → too_large asked whole (the client then reads it in pages), and the node (and this process) carry on', async () => {
    // About 150 bytes per volume: 120 volumes do not fit in 16 KiB.
    for (let i = 0; i < 120; i++) await c.client.createVolume({ name: `a-rather-long-volume-name-to-fill-the-list-${String(i).padStart(4, '0')}`, pageCount: 16, shards: 1 });
    await assert.rejects(c.client.api('volume.list', {}, Date.now() + 10_000), (e: ProtocolError) => e.code === 'too_large');
    assert.equal((await c.client.listVolumes()).length, 120);
    const info = await c.client.createVolume({ name: 'after', pageCount: 16, shards: 1 });
    assert.equal((await c.client.volume('after').info()).id, info.id);
  });

  it('the cluster status then says the volumes are not listed, not that the controller is unreachable', async () => {
    const status = (await c.client.status()) as { controllerReachable?: boolean; catalogError?: string };
    assert.equal(status.controllerReachable, true);
    assert.equal(status.catalogError, 'too_large');
    const text = formatStatus(status, { nowMs: Date.now() });
    assert.match(text, /controller reachable/);
    assert.match(text, /VOLUMES \(\?\)\n {2}not listed \(too_large\)/);
  });
});

describe('a cluster status larger than the NATS server carries', function () {
  this.timeout(60_000);
  let c: InProcessCluster;

  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 1, maxPayloadBytes: 16 * 1024 });
  });
  after(async () => {
    await c?.stop();
  });

  type Status = { detail?: string; nodes: Array<Record<string, unknown>>; volumes: Array<{ name: string; shards: unknown[]; shardCount?: number; shardsUp?: number; shardsUnavailable?: number }> };

  it('lists the replicas of unhealthy shards only, then counts the shards, instead of failing too_large', async () => {
    type Shard = { state: string; replicas?: unknown[]; replicaCount?: number };
    const allUp = (s: Status): boolean =>
      s.volumes.every((v) => (v.shardCount !== undefined ? v.shardsUp === v.shardCount : (v.shards as Shard[]).every((sh) => sh.state === 'up')));
    const details: string[] = [];
    // Volumes of 16 shards, one after another, until the status is a summary (the nodes' views
    // take about 7 KiB of the 12 KiB the message holds besides its headers; a shard with its
    // replica about 250 bytes, without 90).
    for (let i = 0; i < 10 && details[details.length - 1] !== 'summary'; i++) {
      await c.client.createVolume({ name: `wide${i}`, pageCount: 4096, shards: 16, stripePages: 8, replicas: 1 });
      await waitFor('every shard led', async () => allUp((await c.client.status()) as unknown as Status));
      const status = (await c.client.status()) as unknown as Status;
      const text = formatStatus(status, { nowMs: Date.now() });
      assert.doesNotMatch(text, /not ok|degraded:/);
      assert.equal(status.nodes[0]!['shards'], undefined, "a node's own shard list is left out");
      assert.equal(status.nodes[0]!['shardCount'], 16 * (i + 1));
      details.push(status.detail!);
      const shards = status.volumes.flatMap((v) => v.shards as Shard[]);
      if (status.detail === 'full') assert.ok(shards.every((sh) => sh.replicas?.length === 1));
      if (status.detail === 'degraded-replicas') {
        assert.ok(shards.every((sh) => sh.replicas === undefined && sh.replicaCount === 1), JSON.stringify(shards[0]));
        assert.match(text, /the replicas of healthy shards are counted, not listed/);
        assert.match(text, /\n +15 +n1 +1 /, 'each shard is a row, its leader named');
      }
      if (status.detail === 'summary') {
        assert.deepEqual(status.volumes.map((v) => [v.shards.length, v.shardCount, v.shardsUnavailable]), status.volumes.map(() => [0, 16, 0]));
        assert.match(text, /shards are counted, not listed/);
        assert.match(text, new RegExp(`wide${i} +id=\\S+ +4096 pages × 4096 B +shards=16 +replicas=1\n`));
      }
    }
    assert.deepEqual([...new Set(details)], ['full', 'degraded-replicas', 'summary'], details.join(','));
  });
  it("a node of more shards than one message holds answers the gather in parts: every shard still reported", async () => {
    // 3 volumes of 100 shards more: the node's view of its ~460 shards (about 90 bytes each) is
    // over 16 KiB, so it answers in parts; in one message its shards would all go unreported.
    for (let i = 0; i < 3; i++) await c.client.createVolume({ name: `many${i}`, pageCount: 1024, shards: 100, stripePages: 8, replicas: 1 });
    const reported = (s: Status): boolean => s.volumes.every((v) => v.shardCount !== undefined && v.shardsUp === v.shardCount);
    await waitFor('every shard of every volume reported up', async () => reported((await c.client.status()) as unknown as Status));
    const status = (await c.client.status()) as unknown as Status;
    assert.equal(status.detail, 'summary');
    assert.equal(status.nodes.length, 1, "the node's parts are one node");
    assert.ok(Number(status.nodes[0]!['shardCount']) >= 300, String(status.nodes[0]!['shardCount']));
    assert.equal(status.nodes[0]!['partsMissing'], undefined);
    // A node reads its assignments from the catalog in pages that fit the server's max_payload
    // (pages of a fixed 512 assignments were refused too_large here: no reconciliation succeeded).
    const nc = await natsConnect({ servers: c.natsUrl });
    try {
      const pages: Array<{ shards: unknown[]; next?: number }> = [];
      let from: number | undefined;
      do {
        const r = await nc.request(controllerSubject(c.cluster, 'assignments'), encode({ nodeId: 'n1', ...(from === undefined ? {} : { from }) }), { timeout: 5000 });
        assert.ok(r.data.length <= 16 * 1024);
        const page = decode(r.data) as { shards: unknown[]; next?: number; error?: unknown };
        assert.equal(page.error, undefined, JSON.stringify(page.error));
        pages.push(page);
        from = page.next;
      } while (from !== undefined && pages.length < 100);
      assert.ok(pages.length > 1, 'more than one page');
      assert.equal(pages.reduce((n, p) => n + p.shards.length, 0), Number(status.nodes[0]!['shardCount']));
      // The node's own status subject answers in parts too, every field of every shard (it was
      // one message, too_large here).
      const ask = async (body: unknown): Promise<{ part?: number; parts?: number; shards: Array<Record<string, unknown>>; error?: { code: string } }> => {
        const r = await nc.request(nodeSubject(c.cluster, 'n1', 'status'), encode(body), { timeout: 5000 });
        assert.ok(r.data.length <= 16 * 1024);
        return decode(r.data) as { part?: number; parts?: number; shards: Array<Record<string, unknown>>; error?: { code: string } };
      };
      const first = await ask({});
      assert.equal(first.error, undefined, JSON.stringify(first.error));
      assert.ok(first.parts! > 1, String(first.parts));
      const all = [first];
      for (let part = 1; part < first.parts!; part++) all.push(await ask({ part }));
      assert.deepEqual(all.map((p) => p.part), all.map((_, i) => i));
      const shards = all.flatMap((p) => p.shards);
      assert.equal(shards.length, Number(status.nodes[0]!['shardCount']));
      assert.ok(shards.every((sh) => typeof sh.volumeName === 'string' && sh.hostId === 0 && typeof sh.mailbox === 'object'), JSON.stringify(shards[0]));
      assert.equal((await ask({ part: first.parts! + 5 })).error?.code, 'out_of_range');
      assert.equal((await ask({ part: 'x' })).error?.code, 'bad_request');
    } finally {
      await nc.close();
    }
  });
});

describe('a mailbox full of bytes answers overloaded, whatever its request count', function () {
  this.timeout(60_000);
  const MAILBOX_BYTES_MAX = 1024 * 1024;
  let c: InProcessCluster;
  before(async () => {
    // The stall below (10 s) holds the host's socket unread as long as the server's default
    // write deadline: on a loaded machine the server then dropped the host as a slow consumer,
    // and with it the writes it held, which were never answered.
    c = await startCluster({ nodes: 1, hosts: 1, node: { mailboxRequestsMax: 100_000, mailboxBytesMax: MAILBOX_BYTES_MAX }, natsConfig: 'write_deadline: "60s"' });
  });
  after(async () => {
    await c?.stop();
  });

  it('writes arriving while the device stalls fill the mailbox to its byte bound: the excess is refused overloaded, and the shard serves again afterwards', async () => {
    const info = await c.client.createVolume({ name: 'v-bytes', pageCount: 4096 });
    const subject = shardSubject(c.cluster, info.id, 0);
    const data = new Uint8Array(4096).fill(9);
    const vol = c.client.volume('v-bytes');
    await vol.write(0, data); // the shard is up and leading
    // The host's thread stalls in a disk call; the writes queue up at the NATS server meanwhile
    // and reach the mailbox together once it is back.
    const marker = (c.nodes[0]!.hostPool as unknown as { slots: Array<{ ioMarker: Int32Array }> }).slots[0]!.ioMarker;
    // Long enough that all the writes are sent while it lasts, on a busy machine too (a CI run
    // with the suite's other file beside it once sent them after a stall of 5 s had ended: all
    // committed, none refused).
    const stalled = c.nodes[0]!.hostPool.stallHost(0, 10_000, { inDisk: true });
    // In a disk call, and still 100 ms later: the stall, not one of the shard's own disk calls.
    const inDisk = (): boolean => Atomics.load(marker, 0) > 0;
    await waitFor('the host stalls in its disk', async () => {
      if (!inDisk()) return false;
      await new Promise((r) => setTimeout(r, 100));
      return inDisk();
    });
    // Four times the byte bound: the mailbox drains as the first batches commit (a fast disk
    // commits while the host still reads the rest), so 300 writes (1.2 times the bound) were
    // sometimes all committed, none refused.
    const total = 1000;
    const hdrs = headers('shard.write', { [HEADER_DEADLINE]: String(Date.now() + 30_000) });
    const bodies = Array.from({ length: total }, (_, i) => encode({ pages: [{ page: i, data }] }));
    const answered = Promise.all(bodies.map((body) => c.client.rawRequest(subject, body, hdrs, { timeoutMs: 30_000 }).then((b) => decode(b) as Record<string, unknown>)));
    // The test's premise: every write reached the server while the host was still stalled.
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(inDisk(), 'the host was still stalled once every write was sent (else the writes came in one by one, and the mailbox never filled)');
    const replies = await answered;
    await stalled;
    type Refusal = { code?: string; message?: string; details?: { depth?: number; bytes?: number } };
    const refused = replies
      .map((r, i) => ({ error: r.error as Refusal | undefined, bytes: bodies[i]!.length }))
      .filter((x): x is { error: Refusal; bytes: number } => x.error?.code === 'overloaded');
    const ok = replies.filter((r) => typeof r.lsn === 'number').length;
    const counts = `${ok} committed, ${refused.length} refused overloaded`;
    assert.equal(ok + refused.length, total, `every request got an answer, a commit or overloaded: ${counts}; the first other: ${JSON.stringify(replies.find((r) => typeof r.lsn !== 'number' && (r.error as { code?: string } | undefined)?.code !== 'overloaded'))}`);
    assert.ok(refused.length > 0, `some were refused: ${counts}`);
    for (const { error, bytes } of refused) {
      assert.match(error.message ?? '', new RegExp(`mailbox is full \\(\\d+ bytes of at most ${MAILBOX_BYTES_MAX}, this request ${bytes}\\)`));
      // The bytes waiting, not the request count, is what refused it.
      assert.ok(error.details!.bytes! + bytes > MAILBOX_BYTES_MAX, `a request of ${bytes} bytes refused with ${error.details!.bytes} bytes waiting`);
      assert.ok(error.details!.depth! < 100_000);
    }
    // The mailbox counted them so, and is empty again.
    const status = (await c.nodes[0]!.status()) as unknown as { hosts: Array<{ mailbox: Array<{ volumeId: string; depth: number; bytes: number; rejectedOverloaded: number }> }> };
    const mailbox = status.hosts[0]!.mailbox.find((m) => m.volumeId === info.id)!;
    assert.deepEqual([mailbox.depth, mailbox.bytes, mailbox.rejectedOverloaded], [0, 0, refused.length]);
    // Every acknowledged write is readable, and the shard serves normally again.
    const acked = replies.map((r, i) => (typeof r.lsn === 'number' ? i : -1)).filter((i) => i >= 0);
    for (const p of (await vol.readPages(acked.slice(0, 200))).pages) assert.deepEqual(Buffer.from(p), Buffer.from(data));
    await vol.write(4000, data);
    assert.deepEqual(Buffer.from((await vol.readPages([4000])).pages[0]!), Buffer.from(data));
  });
});
