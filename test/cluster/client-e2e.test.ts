import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { NoRespondersError, connect, type StrataClient } from '../../cluster/client';
import { decode, encode } from '../../messages/codec';
import { ProtocolError } from '../../messages/errors';
import { HEADER_SCHEMA, HEADER_TYPE, SCHEMA_VERSION } from '../../messages/headers';
import { MESSAGE_BYTES_MAX } from '../../messages/codec';
import { rejectsWith } from '../support/expect';
import { waitFor } from '../support/wait';

function page(n: number, generation: number, size = 4096): Uint8Array {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 8) {
    data[i] = n & 0xff;
    data[i + 1] = (n >> 8) & 0xff;
    data[i + 2] = generation & 0xff;
    data[i + 3] = (i >> 3) & 0xff;
  }
  return data;
}

describe('cluster/client end to end (in-process cluster, real NATS)', function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  let client: StrataClient;

  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 2 });
    client = await connect({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 5000, name: 'client-e2e' });
  });
  after(async () => {
    await client?.close();
    await c?.stop();
  });

  it('creates, lists, describes and deletes volumes', async () => {
    const info = await client.createVolume({ name: 'ce-admin', pageCount: 100, pageSize: 8192, shards: 2, stripePages: 5, replicas: 1 });
    assert.deepEqual(
      { name: info.name, pageCount: info.pageCount, pageSize: info.pageSize, shards: info.shards, stripePages: info.stripePages, replicas: info.replicas },
      { name: 'ce-admin', pageCount: 100, pageSize: 8192, shards: 2, stripePages: 5, replicas: 1 },
    );
    const { replicaSets, ...described } = await client.volumeInfo('ce-admin');
    assert.deepEqual(described, info);
    assert.deepEqual(replicaSets?.map((r) => r.shard), [0, 1]);
    assert.ok((await client.listVolumes()).some((v) => v.id === info.id));
    await rejectsWith(client.createVolume({ name: 'ce-admin', pageCount: 1 }), 'already_exists');
    await client.deleteVolume('ce-admin');
    await rejectsWith(client.volumeInfo('ce-admin'), 'not_found');
    await rejectsWith(client.deleteVolume('ce-admin'), 'not_found');
  });

  it('a node asked to open a shard it records on another host (a move back to it) opens it where its record is, not a second replica', async () => {
    const info = await client.createVolume({ name: 'ce-hosts', pageCount: 64, shards: 2, stripePages: 4, replicas: 1 });
    const node = c.nodes[0]! as unknown as {
      nodeMeta: { shards: Array<{ volumeId: string; shard: number; hostId: number }> };
      openShards(list: unknown[], existing?: boolean): Promise<unknown>;
    };
    const rec = node.nodeMeta.shards.find((r) => r.volumeId === info.id)!;
    const other = 1 - rec.hostId;
    await node.openShards([{ ...rec, hostId: other }], true);
    const hosts = await c.nodes[0]!.hostPool.stats();
    const holding = hosts.flatMap((h, i) => (h.device?.shards.some((x) => x.volumeId === info.id && x.shard === rec.shard) ? [i] : []));
    assert.deepEqual(holding, [rec.hostId], 'open on the host of its record only');
    assert.equal(node.nodeMeta.shards.filter((r) => r.volumeId === info.id && r.shard === rec.shard).length, 1);
    await client.volume('ce-hosts').write(rec.shard * 4, new Uint8Array(4096).fill(1));
    await client.deleteVolume('ce-hosts');
  });

  it('a reconciliation destroys the files of a deleted volume that a node forgot but did not destroy', async () => {
    const gone = await client.createVolume({ name: 'ce-leftover', pageCount: 16, shards: 1 });
    await client.deleteVolume('ce-leftover');
    // A crash between forgetting a shard and destroying its files leaves its directory behind.
    const dir = path.join(c.dataDirs[0]!, 'dev0', 'shards', `${gone.id}.5`);
    fs.mkdirSync(path.join(dir, 'log'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'log', 'seg-0000000000000001.log'), 'x');
    // Any change of the catalog makes the node reconcile.
    await client.createVolume({ name: 'ce-leftover-2', pageCount: 16 });
    await waitFor('the leftover directory destroyed', () => !fs.existsSync(dir) && !fs.readdirSync(path.dirname(dir)).some((n) => n.startsWith(`${gone.id}.`)), 15_000);
    await client.deleteVolume('ce-leftover-2');
  });

  it('reports status (validated against docs/protocol.md): every shard of a volume with its node', async () => {
    await client.createVolume({ name: 'ce-status', pageCount: 64, shards: 3, stripePages: 4 });
    const status = await client.status();
    assert.equal(status.node.cluster, c.cluster);
    const v = status.volumes.find((x) => x.name === 'ce-status');
    assert.ok(v, 'the volume is listed');
    assert.equal(v.shards.length, 3);
    for (const sh of v.shards) {
      assert.equal(sh.role, 'leader');
      assert.equal(sh.state, 'up');
      assert.equal(typeof sh.leader, 'string');
    }
    await client.deleteVolume('ce-status');
  });

  it('writes, reads, reads at an LSN and flushes through the shard subjects', async () => {
    await client.createVolume({ name: 'ce-rw', pageCount: 2048, shards: 3, stripePages: 4 });
    const vol = client.volume('ce-rw');
    const info = await vol.info();
    assert.equal(info.shards, 3);

    const first = await vol.write(7, page(7, 1));
    assert.ok(first.lsn >= 1);
    assert.deepEqual(first.lsns.map((l) => l.shard), [1]);
    assert.deepEqual(await vol.read(7), page(7, 1));

    // More pages than fit in one request, over every shard, in scrambled order.
    const numbers = Array.from({ length: 700 }, (_, i) => (i * 337) % 2048);
    const written = await vol.writePages(numbers.map((n) => ({ page: n, data: page(n, 2) })));
    assert.deepEqual(written.lsns.map((l) => l.shard), [0, 1, 2]);
    assert.equal(written.lsn, Math.max(...written.lsns.map((l) => l.lsn)));
    assert.ok(!numbers.includes(7));
    await vol.write(7, page(7, 2));
    const back = await vol.read(numbers);
    back.forEach((data, i) => assert.deepEqual(data, page(numbers[i]!, 2), `page ${numbers[i]}`));

    // GetPage@LSN: page 7 as of the LSN of its first write still shows generation 1.
    const atFirst = await vol.readPages([7], { lsn: first.lsn });
    assert.deepEqual(atFirst.pages[0], page(7, 1));
    assert.deepEqual(await vol.read(7), page(7, 2));

    const flushed = await vol.flush();
    assert.equal(flushed.lsns.length, 3);
    assert.ok(flushed.lsn >= written.lsn);
  });

  it('reads each shard at its own LSN (lsns), the point a multi-shard write left, on both paths', async () => {
    await client.createVolume({ name: 'ce-lsns', pageCount: 64, shards: 3, stripePages: 4 });
    const vol = client.volume('ce-lsns');
    const numbers = Array.from({ length: 24 }, (_, i) => i);
    // Shard 1 moves on alone first, so that the shards' LSNs differ.
    for (let i = 0; i < 3; i++) await vol.write(4, page(4, 10 + i));
    const first = await vol.writePages(numbers.map((n) => ({ page: n, data: page(n, 1) })));
    assert.equal(first.lsns.length, 3);
    // Then every page is overwritten.
    await vol.writePages(numbers.map((n) => ({ page: n, data: page(n, 2) })));
    const at = await vol.readPages(numbers, { lsns: first.lsns });
    at.pages.forEach((data, i) => assert.deepEqual(data, page(numbers[i]!, 1), `page ${numbers[i]}`));
    assert.deepEqual(at.lsns.map((l) => [l.shard, l.lsn]), first.lsns.map((l) => [l.shard, l.lsn]));
    // One LSN for all three would be refused or read another point on some shard.
    assert.notEqual(new Set(first.lsns.map((l) => l.lsn)).size, 1, 'the shards had different LSNs');
    // A shard not named is read at the latest commit.
    const mixed = await vol.readPages([0, 4], { lsns: [{ shard: 0, lsn: first.lsns[0]!.lsn }] });
    assert.deepEqual(mixed.pages, [page(0, 1), page(4, 2)]);
    // The API path (page.read through a node) takes the same field.
    const api = await client.apiRequest('page.read', { volume: 'ce-lsns', pages: [0, 4, 8], lsns: first.lsns });
    assert.deepEqual(api.pages, [page(0, 1), page(4, 1), page(8, 1)]);
    await rejectsWith(vol.readPages([0], { lsns: [{ shard: 3, lsn: 1 }] }), 'out_of_range');
    await rejectsWith(client.apiRequest('page.read', { volume: 'ce-lsns', pages: [0], lsns: [{ shard: 3, lsn: 1 }] }), 'out_of_range');
    await rejectsWith(vol.readPages([0], { lsn: 1, lsns: [{ shard: 0, lsn: 1 }] }), 'bad_request');
    await rejectsWith(vol.readPages([0], { lsns: [{ shard: 0, lsn: 1 }, { shard: 0, lsn: 2 }] }), 'bad_request');
    await client.deleteVolume('ce-lsns');
  });

  it('rejects bad arguments before the network and maps server errors', async () => {
    await client.createVolume({ name: 'ce-bad', pageCount: 16 });
    const vol = client.volume('ce-bad');
    await rejectsWith(vol.write(16, page(16, 1)), 'out_of_range');
    await rejectsWith(vol.write(0, new Uint8Array(100)), 'bad_request');
    await rejectsWith(vol.read([0, 99]), 'out_of_range');
    await rejectsWith(client.volume('ce-missing').read(0), 'not_found');
  });

  it('serves apiRequest on the generic api.page.* path', async () => {
    await client.createVolume({ name: 'ce-api', pageCount: 64, shards: 2, stripePages: 1 });
    const w = await client.apiRequest('page.write', { volume: 'ce-api', pages: [{ page: 3, data: page(3, 9) }] });
    assert.ok(w.lsn >= 1);
    const r = await client.apiRequest('page.read', { volume: 'ce-api', pages: [3, 3] });
    assert.deepEqual(r.pages, [page(3, 9), page(3, 9)]);
    assert.deepEqual(await client.volume('ce-api').read(3), page(3, 9), 'both paths see the same data');
  });

  it('rawRequest gets a typed error reply for malformed bytes', async () => {
    const headers = { [HEADER_TYPE]: 'volume.info', [HEADER_SCHEMA]: String(SCHEMA_VERSION) };
    const reply = decode(await client.rawRequest(`strata.${c.cluster}.api.volume.info`, Uint8Array.of(0xbf, 0xff, 0x01), headers)) as {
      error?: { code: string };
    };
    assert.equal(reply.error?.code, 'bad_request');
    const wrongType = decode(
      await client.rawRequest(`strata.${c.cluster}.api.volume.info`, encode({ nome: 'x' }), headers),
    ) as { error?: { code: string } };
    assert.equal(wrongType.error?.code, 'bad_request');
  });

  describe('over real NATS', () => {
    let nc: NatsConnection;
    before(async () => {
      nc = await natsConnect({ servers: c.natsUrl, timeout: 5000 });
    });
    after(async () => {
      await nc?.close();
    });

    it('reads max_payload from the server', () => {
      assert.equal((client as unknown as { maxPayloadBytes: number }).maxPayloadBytes, MESSAGE_BYTES_MAX);
    });

    it('a request header NATS refuses (a name with a space) is bad_request, the caller\'s error, not unavailable', async () => {
      const err = await rejectsWith(client.rawRequest(`strata.${c.cluster}.shard.nobody.0`, encode({}), { 'bad name': 'x' }), 'bad_request');
      assert.match(err.message, /request headers: .*header key/);
    });

    it('a force-vote answer that is not one is internal ("malformed reply"); an error answer is the node\'s own', async () => {
      await client.createVolume({ name: 'ce-fv', pageCount: 8 });
      let answer: unknown = { bogus: true };
      const sub = nc.subscribe(`strata.${c.cluster}.node.zz.shard.forceVote`, { callback: (_e, m) => m.respond(encode(answer)) });
      await nc.flush();
      try {
        const err = await rejectsWith(client.forceVote('ce-fv', 0, 'zz'), 'internal');
        assert.match(err.message, /malformed reply to shard\.forceVote/);
        answer = { error: { code: 'not_found', message: 'no replica of that shard here' } };
        await rejectsWith(client.forceVote('ce-fv', 0, 'zz'), 'not_found');
      } finally {
        sub.unsubscribe();
      }
    });

    it('maps no responders to NoRespondersError (unavailable)', async () => {
      const err = await rejectsWith(client.rawRequest(`strata.${c.cluster}.shard.nobody.0`, encode({})), 'unavailable');
      assert.ok(err instanceof NoRespondersError);
    });

    it('maps a missing reply to timeout within the client timeout', async () => {
      const subject = `strata.${c.cluster}.shard.silent.0`;
      const sub = nc.subscribe(subject);
      await nc.flush();
      try {
        const e = await rejectsWith(client.rawRequest(subject, encode({}), {}, { timeoutMs: 200 }), 'timeout');
        assert.equal(e.details?.['timeoutMs'], 200, 'it waited the timeout it was given');
      } finally {
        sub.unsubscribe();
      }
    });

    it('a stale volume id (no responders) makes the volume refresh its info and retry', async () => {
      await client.createVolume({ name: 'ce-gone', pageCount: 8 });
      const vol = client.volume('ce-gone');
      await vol.write(0, page(0, 1));
      // Make the cached geometry stale: point the handle at a volume id nobody serves.
      const stale = { ...(await vol.info()), id: 'nobody-serves-this' };
      (vol as unknown as { infoPromise: Promise<unknown> }).infoPromise = Promise.resolve(stale);
      // The refresh fetches the real geometry and the retry succeeds.
      assert.deepEqual(await vol.read(0), page(0, 1));
      assert.equal((await vol.info()).id, (await client.volumeInfo('ce-gone')).id);
    });
  });

  describe('node crash (runs last)', () => {
    it('a killed node gives unavailable or timeout; after a restart the data is back', async () => {
      await client.createVolume({ name: 'ce-crash', pageCount: 32, shards: 2, stripePages: 2 });
      const vol = client.volume('ce-crash');
      await vol.writePages([0, 1, 2, 3].map((n) => ({ page: n, data: page(n, 5) })));
      c.kill(0);
      // No responders (unavailable) or a stale subscription that never answers (timeout): both retryable.
      const err = await vol.read([0, 2]).then(
        () => assert.fail('read succeeded on a killed node'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof ProtocolError && ['unavailable', 'timeout'].includes(err.code), String(err));
      await c.restart(0);
      const deadline = Date.now() + 30_000;
      for (;;) {
        try {
          const got = await vol.read([0, 1, 2, 3]);
          got.forEach((data, i) => assert.deepEqual(data, page(i, 5)));
          break;
        } catch (err) {
          const retryable = err instanceof ProtocolError && ['unavailable', 'timeout'].includes(err.code);
          if (!retryable || Date.now() > deadline) throw err;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    });
  });
});

describe('the public API on every node after a volume is created again under its name (3 nodes)', function () {
  this.timeout(120_000);
  let c: InProcessCluster;

  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1 });
  });
  after(async () => {
    await c?.stop();
  });

  it('a page past the old end is written and read through any node: a node that cached the old geometry checks the catalog again', async () => {
    const tries = 12;
    const apiOutcome = (p: Promise<unknown>): Promise<string> =>
      p.then(
        () => 'ok',
        (e: unknown) => `${(e as ProtocolError).code}: ${(e as Error).message}`,
      );
    await c.client.createVolume({ name: 'again', pageCount: 16, shards: 1, replicas: 1 });
    // Page requests through the API, which the nodes take in turn (queue group): each caches
    // the volume's geometry.
    for (let i = 0; i < tries; i++) {
      await c.client.apiRequest('page.write', { volume: 'again', pages: [{ page: 3, data: page(3, i) }] });
      await c.client.apiRequest('page.read', { volume: 'again', pages: [3] });
    }
    await c.client.deleteVolume('again');
    await c.client.createVolume({ name: 'again', pageCount: 1024, shards: 1, replicas: 1 });
    const outcomes: string[] = [];
    for (let i = 0; i < tries; i++) {
      outcomes.push(await apiOutcome(c.client.apiRequest('page.write', { volume: 'again', pages: [{ page: 500, data: page(500, i) }] })));
      outcomes.push(await apiOutcome(c.client.apiRequest('page.read', { volume: 'again', pages: [500] })));
    }
    assert.deepEqual(outcomes.filter((o) => o !== 'ok'), []);
    // Past the end of the new volume: still refused.
    await rejectsWith(c.client.apiRequest('page.read', { volume: 'again', pages: [1024] }), 'out_of_range', /1024/);
  });
});
