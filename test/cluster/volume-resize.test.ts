/**
 * Growing a volume (volume.resize, docs/protocol.md): the pages added read as zeros until
 * written, at the latest LSN and at LSNs from before the resize; a handle that read the size
 * before takes the new one; a node down while the volume grew takes the size from the catalog
 * when it comes back, catches up with the pages written meanwhile and leads with them; a volume
 * never shrinks, and every bad request gets its error.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import type { Volume } from '../../cluster/client';
import { ProtocolError } from '../../messages/errors';
import { goneFromServer, transient } from '../support/served';
import { waitFor } from '../support/wait';

const SHARDS = 4;

function page(value: number): Uint8Array {
  return new Uint8Array(4096).fill(value);
}

/** Writes `value` to pages [from, to), waiting out a shard's moment without a leader. */
async function fill(vol: Volume, from: number, to: number, value: number): Promise<void> {
  for (let p = from; p < to; p += 64) {
    const pages = Array.from({ length: Math.min(64, to - p) }, (_, i) => ({ page: p + i, data: page(value) }));
    await waitFor(`pages ${p}.. written`, async () => {
      try {
        await vol.writePages(pages);
        return true;
      } catch (e) {
        if (transient(e)) return false;
        throw e;
      }
    }, 30_000);
  }
}

/** The first byte of pages [0, count) (each page is filled with one value). */
async function firstBytes(vol: Volume, count: number): Promise<number[]> {
  const out: number[] = [];
  for (let p = 0; p < count; p += 128) {
    const want = Array.from({ length: Math.min(128, count - p) }, (_, i) => p + i);
    for (;;) {
      try {
        const r = await vol.readPages(want);
        r.pages.forEach((d, i) => {
          assert.ok(d.every((b) => b === d[0]), `page ${p + i} is filled with one value`);
          out.push(d[0]!);
        });
        break;
      } catch (e) {
        if (!transient(e)) throw e;
      }
    }
  }
  return out;
}

describe('growing a volume (volume.resize)', function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 3, clientTimeoutMs: 15_000 });
  });
  after(async () => {
    await c?.stop();
  });

  it('takes pages past the old end at once, which read as zeros until written, also at LSNs from before', async () => {
    await c.client.createVolume({ name: 'grow', pageCount: 64, shards: SHARDS, stripePages: 4, replicas: 3 });
    const vol = c.client.volume('grow');
    await fill(vol, 0, 64, 1);
    // The LSN of every shard now (a page of each).
    const before = await vol.readPages([0, 4, 8, 12]);
    assert.equal(before.lsns.length, SHARDS);
    await assert.rejects(vol.writePages([{ page: 64, data: page(2) }]), (e: ProtocolError) => e.code === 'out_of_range');

    const info = await c.client.resizeVolume('grow', 256);
    assert.equal(info.pageCount, 256);
    assert.equal((await c.client.volumeInfo('grow')).pageCount, 256);
    assert.equal((await c.client.listVolumes()).find((v) => v.name === 'grow')?.pageCount, 256);
    // The same handle, which cached 64 pages: refused by its cache, it reads the size again.
    assert.deepEqual(await firstBytes(vol, 256), [...new Array(64).fill(1), ...new Array(192).fill(0)]);
    await fill(vol, 64, 256, 2);
    assert.deepEqual(await firstBytes(vol, 256), [...new Array(64).fill(1), ...new Array(192).fill(2)]);
    // As of before the resize: the old pages as they were, the new ones zeros.
    const old = await vol.readPages([0, 63, 64, 255], { lsns: before.lsns });
    assert.deepEqual(old.pages.map((d) => d[0]), [1, 1, 0, 0]);
    // Through the API's page verbs (the router's cached geometry is refreshed the same way).
    const viaApi = await c.client.apiRequest('page.read', { volume: 'grow', pages: [255] });
    assert.equal(viaApi.pages[0]![0], 2);
    // Past the new end: refused, as any page past the end is.
    await assert.rejects(vol.writePages([{ page: 256, data: page(3) }]), (e: ProtocolError) => e.code === 'out_of_range');
  });

  it('never shrinks; the same size changes nothing; an unknown volume or a malformed size is refused', async () => {
    await c.client.createVolume({ name: 'fixed', pageCount: 32, shards: 2, stripePages: 4, replicas: 3 });
    await assert.rejects(c.client.resizeVolume('fixed', 16), (e: ProtocolError) => e.code === 'bad_request' && /does not shrink/.test(e.message));
    assert.equal((await c.client.resizeVolume('fixed', 32)).pageCount, 32);
    assert.equal((await c.client.volumeInfo('fixed')).pageCount, 32);
    await assert.rejects(c.client.resizeVolume('nope', 64), (e: ProtocolError) => e.code === 'not_found');
    for (const bad of [0, -1, 1.5, 2 ** 32]) {
      await assert.rejects(c.client.resizeVolume('fixed', bad), (e: ProtocolError) => e.code === 'bad_request' || e.code === 'out_of_range', `pageCount ${bad}`);
    }
    // The server's own check, past the client's.
    await assert.rejects(c.client.apiRequest('volume.resize', { name: 'fixed', pageCount: 0 }), (e: ProtocolError) => e.code === 'bad_request' || e.code === 'out_of_range');
    await assert.rejects(c.client.apiRequest('volume.resize', { name: 'fixed', pageCount: 64, extra: 1 } as never), (e: ProtocolError) => e.code === 'bad_request');
  });

  it('a resize sent again with its request id after the volume grew further is answered with the volume, not refused as a shrink; another request to that size is', async () => {
    await c.client.createVolume({ name: 'again', pageCount: 32, shards: 2, stripePages: 4, replicas: 3 });
    assert.equal((await c.client.resizeVolume('again', 64, { requestId: 'grow-to-64' })).pageCount, 64);
    // Grown further by another resize; then the first is sent again (its answer lost, say).
    assert.equal((await c.client.resizeVolume('again', 128)).pageCount, 128);
    assert.equal((await c.client.resizeVolume('again', 64, { requestId: 'grow-to-64' })).pageCount, 128, 'answered with the volume as it is');
    assert.equal((await c.client.volumeInfo('again')).pageCount, 128);
    await assert.rejects(c.client.resizeVolume('again', 64, { requestId: 'another' }), (e: ProtocolError) => e.code === 'bad_request' && /does not shrink/.test(e.message));
  });

  it('a node that does not answer: nothing recorded; once it is not live, the resize goes on; back, it takes the size, catches up with the new pages, and leads with them', async () => {
    await c.client.createVolume({ name: 'later', pageCount: 64, shards: SHARDS, stripePages: 4, replicas: 3 });
    const vol = c.client.volume('later');
    await fill(vol, 0, 64, 1);
    c.kill(2);
    await goneFromServer(c, 'n3');
    // n3 is still live to the controller (it heard from it within its live window), and does not
    // answer: nothing is recorded, and the catalog still refuses the new pages.
    await assert.rejects(c.client.resizeVolume('later', 512), (e: ProtocolError) => e.code === 'unavailable' && /not every node holding a replica of it took the new size: n3 /.test(e.message));
    assert.equal((await c.client.volumeInfo('later')).pageCount, 64, 'nothing recorded');
    await assert.rejects(vol.writePages([{ page: 100, data: page(9) }]), (e: ProtocolError) => e.code === 'out_of_range');
    // Once the controller no longer counts n3 live, the resize goes on without it.
    await waitFor('the resize without n3', async () => {
      try {
        await c.client.resizeVolume('later', 512);
        return true;
      } catch (e) {
        if (e instanceof ProtocolError && e.code === 'unavailable') return false;
        throw e;
      }
    }, 60_000);
    await fill(vol, 64, 512, 3);
    await c.restart(2);
    // Every shard handed to n3: its replicas must hold, and take, pages past the size they had.
    for (let s = 0; s < SHARDS; s++) {
      await waitFor(`shard ${s} led by n3`, async () => {
        try {
          return (await c.client.handOver('later', s, { to: 'n3' })).to === 'n3';
        } catch (e) {
          if (transient(e)) return false;
          throw e;
        }
      }, 60_000);
    }
    assert.deepEqual(await firstBytes(vol, 512), [...new Array(64).fill(1), ...new Array(448).fill(3)]);
    await fill(vol, 500, 512, 4);
    assert.deepEqual((await firstBytes(vol, 512)).slice(496), [...new Array(4).fill(3), ...new Array(12).fill(4)]);
  });
});
