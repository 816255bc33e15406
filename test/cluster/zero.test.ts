/**
 * Ranges made zeros (`page.zero`, `Volume.zeroPages`, `shard.zero`) on a replicated volume: what
 * reads back, at the newest LSN and before, through the API's router too, after the leader's node
 * is killed (its followers applied the record), and every bad range refused; at the end the
 * replicas' files agree.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { shardsOfRange, type StrataClient } from '../../cluster/client';
import { shardSubject } from '../../messages/subjects';
import { ProtocolError } from '../../messages/errors';
import { SHARD_MAP_RANGES_MAX } from '../../messages/api';
import { validateShardWriteReply } from '../../messages/validate';
import { rejectsWith } from '../support/expect';
import { inspect, inspectText } from '../../cluster/inspect';
import { stopAndCompareReplicas } from '../support/replicas';
import { eventually } from '../support/wait';

const PAGE = 4096;
const ZERO = new Uint8Array(PAGE);
const node = { timing: { electionTimeoutMinMs: 150, electionTimeoutMaxMs: 300, heartbeatMs: 25, rpcTimeoutMs: 500 } };

function page(n: number, generation: number): Uint8Array {
  const data = new Uint8Array(PAGE).fill(0x5a);
  data[0] = n & 0xff;
  data[1] = (n >> 8) & 0xff;
  data[2] = generation;
  return data;
}

describe('ranges made zeros (page.zero, shard.zero) on a replicated volume', function () {
  this.timeout(120_000);
  let c: InProcessCluster | undefined;
  let client: StrataClient;
  let compared = false;
  let zVolumeId = '';

  before(async () => {
    c = await startCluster({ nodes: 3, controllers: 3, node });
    client = c.client;
  });
  after(async () => {
    if (c !== undefined && !compared) await stopAndCompareReplicas(c);
    await c?.stop();
  });

  it('shardsOfRange names the shards holding a page of the range', () => {
    const layout = { shards: 3, stripePages: 4 };
    assert.deepEqual(shardsOfRange(0, 1, layout), [0]);
    assert.deepEqual(shardsOfRange(3, 2, layout), [0, 1]);
    assert.deepEqual(shardsOfRange(8, 4, layout), [2]);
    assert.deepEqual(shardsOfRange(11, 2, layout), [0, 2]);
    assert.deepEqual(shardsOfRange(1, 12, layout), [0, 1, 2]);
    assert.deepEqual(shardsOfRange(7, 1_000_000, layout), [0, 1, 2]);
  });

  it('zeros exactly the range on every shard, keeps the pages before it readable at older LSNs, and survives its leader', async () => {
    const info = await client.createVolume({ name: 'z', pageCount: 64, shards: 3, stripePages: 4, replicas: 3 });
    zVolumeId = info.id;
    const v = client.volume('z');
    const all = Array.from({ length: 64 }, (_, i) => i);
    const written = await v.writePages(all.map((p) => ({ page: p, data: page(p, 1) })));
    const zeroed = await v.zeroPages(5, 50);
    assert.deepEqual(zeroed.lsns.map((l) => l.shard), [0, 1, 2], 'every shard holds a page of the range');
    const expected = (p: number): Uint8Array => (p >= 5 && p < 55 ? ZERO : page(p, 1));
    const after = await v.readPages(all);
    all.forEach((p) => assert.deepEqual(after.pages[p], expected(p), `page ${p}`));
    // GetPage@LSN: as of the write, the pages as written.
    const before = await v.readPages(all, { lsns: written.lsns });
    all.forEach((p) => assert.deepEqual(before.pages[p], page(p, 1), `page ${p} as of the write`));
    // A page written after the zeros holds its data; one range made zeros again stays zeros.
    await v.writePages([{ page: 20, data: page(20, 2) }]);
    await v.zeroPages(30, 2);
    assert.deepEqual(await v.read(20), page(20, 2));
    assert.deepEqual(await v.read(30), ZERO);
    // Through the API's router: the reply names the shards touched (pages 60..63: stripe 15, shard 0).
    const api = await client.apiRequest('page.zero', { volume: 'z', first: 60, count: 4 });
    assert.deepEqual(api.lsns?.map((l) => l.shard), [0]);
    assert.deepEqual(await v.readPages([59, 60, 63]).then((r) => r.pages), [page(59, 1), ZERO, ZERO]);

    // Every replica applied the records: with the leader of shard 1's node killed, its new
    // leader reads the same.
    // A status lists no volume when the controller did not answer its node in time (under load).
    const leader = await eventually('shard 1\'s leader in the status', async () => {
      const l = (await client.status()).volumes.find((x) => x.id === info.id)?.shards[1]?.leader;
      if (l === undefined) throw new ProtocolError('unavailable', 'no leader of shard 1 in the status yet');
      return l;
    });
    const i = Number(leader.slice(1)) - 1;
    c!.kill(i);
    try {
      const shard1 = all.filter((p) => Math.floor(p / 4) % 3 === 1);
      await eventually('shard 1 read from its new leader', async () => {
        const got = await v.readPages(shard1, { deadlineMs: Date.now() + 3000 });
        shard1.forEach((p, k) => assert.deepEqual(got.pages[k], p === 20 ? page(20, 2) : p === 30 || p === 31 ? ZERO : expected(p), `page ${p}`));
      }, 20_000);
    } finally {
      await c!.restart(i);
    }
  });

  it('refuses a range that is not one, or not all in the volume, before any shard changes', async () => {
    const info = await client.createVolume({ name: 'z-bad', pageCount: 40, shards: 2, stripePages: 4, replicas: 3 });
    const v = client.volume('z-bad');
    await v.writePages([{ page: 39, data: page(39, 1) }]);
    await rejectsWith(v.zeroPages(30, 11), 'out_of_range');
    await rejectsWith(v.zeroPages(40, 1), 'out_of_range');
    await rejectsWith(v.zeroPages(0, 0), 'bad_request');
    await rejectsWith(v.zeroPages(-1, 2), 'bad_request');
    await rejectsWith(v.zeroPages(1.5, 2), 'bad_request');
    await rejectsWith(client.apiRequest('page.zero', { volume: 'z-bad', first: 39, count: 2 }), 'out_of_range');
    await rejectsWith(client.apiRequest('page.zero', { volume: 'z-bad', first: 0 } as never), 'bad_request');
    await rejectsWith(client.apiRequest('page.zero', { volume: 'z-nope', first: 0, count: 1 }), 'not_found');
    // Sent to a shard directly, past the end: its leader refuses it.
    const subject = shardSubject(c!.cluster, info.id, 1);
    await rejectsWith(client.send(subject, 'shard.zero', { first: 36, count: 5 }, Date.now() + 5000, validateShardWriteReply), 'out_of_range');
    await rejectsWith(client.send(subject, 'shard.zero', { first: 0, count: 1, pages: [] }, Date.now() + 5000, validateShardWriteReply), 'bad_request');
    assert.deepEqual(await v.read(39), page(39, 1), 'nothing was made zeros');
  });

  it('pagesWithData: the pages written and not made zeros since, merged over the shards; a range within; past SHARD_MAP_RANGES_MAX ranges, cut short', async () => {
    await client.createVolume({ name: 'z-map', pageCount: 16_384, shards: 3, stripePages: 4, replicas: 3 });
    const v = client.volume('z-map');
    assert.deepEqual(await v.pagesWithData(0, 16_384).then((m) => [m.end, m.ranges]), [16_384, []], 'a new volume holds nothing');
    // Pages 0..11 over the three shards, and a page of zeros written as data.
    await v.writePages([...Array.from({ length: 12 }, (_, p) => ({ page: p, data: page(p, 1) })), { page: 100, data: ZERO }]);
    const m = await v.pagesWithData(0, 16_384);
    assert.deepEqual([m.end, m.ranges], [16_384, [{ first: 0, count: 12 }, { first: 100, count: 1 }]]);
    assert.deepEqual(m.lsns.map((l) => l.shard), [0, 1, 2]);
    await v.zeroPages(2, 5);
    assert.deepEqual((await v.pagesWithData(0, 16_384)).ranges, [{ first: 0, count: 2 }, { first: 7, count: 5 }, { first: 100, count: 1 }]);
    assert.deepEqual((await v.pagesWithData(8, 2)).ranges, [{ first: 8, count: 2 }], 'a range within: one shard asked');
    assert.deepEqual((await v.pagesWithData(2, 5)).ranges, []);
    // Through the API's router (page.map): the same ranges, as pairs.
    const api = await client.apiRequest('page.map', { volume: 'z-map', first: 0, count: 16_384 });
    assert.deepEqual([api.end, api.ranges, api.lsns?.map((l) => l.shard)], [16_384, [0, 2, 7, 5, 100, 1], [0, 1, 2]]);
    await rejectsWith(client.apiRequest('page.map', { volume: 'z-map', first: 16_000, count: 385 }), 'out_of_range');
    await rejectsWith(v.pagesWithData(16_000, 385), 'out_of_range');
    await rejectsWith(v.pagesWithData(0, 0), 'bad_request');

    // One shard whose pages make more ranges than one answer lists: every other page written.
    await client.createVolume({ name: 'z-map-1', pageCount: 16_384, shards: 1, replicas: 1 });
    const one = client.volume('z-map-1');
    const pages = Array.from({ length: SHARD_MAP_RANGES_MAX + 1 }, (_, k) => 2 * k);
    for (let i = 0; i < pages.length; i += 1024) await one.writePages(pages.slice(i, i + 1024).map((p) => ({ page: p, data: page(p, 1) })));
    const cut = await one.pagesWithData(0, 16_384);
    assert.equal(cut.end, 2 * SHARD_MAP_RANGES_MAX, 'the answer ends at the range it left out');
    assert.equal(cut.ranges.length, SHARD_MAP_RANGES_MAX);
    assert.deepEqual(cut.ranges.slice(-1), [{ first: 2 * (SHARD_MAP_RANGES_MAX - 1), count: 1 }]);
    assert.deepEqual((await one.pagesWithData(cut.end, 16_384 - cut.end)).ranges, [{ first: 2 * SHARD_MAP_RANGES_MAX, count: 1 }]);
    await client.deleteVolume('z-map-1');
  });

  it('once stopped, the replicas agree, and strata inspect lists the record and names it as a page\'s source', async () => {
    compared = true;
    await stopAndCompareReplicas(c!);
    const dataDir = c!.dataDirs[0]!;
    const report = inspect(dataDir, { shard: `${zVolumeId}/1`, records: {} });
    const line = report.records!.find((r) => r.kind === 'page-zero' && r.zeros?.first === 5);
    assert.deepEqual(line?.zeros, { first: 5, count: 50 });
    // With the write id its tries shared, which Strata's client gave it.
    assert.match(line?.writeId ?? '', /^[0-9a-f]{32}$/);
    assert.match(inspectText(report), new RegExp(`\\n${line!.lsn} +\\d+ +page-zero +40 +the shard's pages of 5\\.\\.54 made zeros \\(write id ${line!.writeId}\\)\\n`));
    const read = inspect(dataDir, { shard: `${zVolumeId}/1`, page: { page: 7 } });
    assert.deepEqual(read.page!.data, ZERO);
    assert.deepEqual(read.page!.source, { kind: 'record', lsn: line!.lsn, term: line!.term });
  });
});
