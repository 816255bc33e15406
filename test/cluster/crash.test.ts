import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { demoPage } from '../../cluster/dev';
import type { Volume } from '../../cluster/client';
import { HOST_STATUS_TIMEOUT_MS } from '../../cluster/node';

interface WriteLog {
  /** Pages whose write was acknowledged, with the generation written. */
  acked: Map<number, number>;
  /** Pages whose write was sent but not acknowledged (may or may not be there). */
  unsure: Set<number>;
}

/**
 * Writes distinct pages with `inFlight` concurrent writers until `stop()` is called; every page is
 * written once, so after a crash an acknowledged page must read back exactly, and any other page
 * reads as its data or as zeros.
 */
function writeLoad(vol: Volume, pageCount: number, inFlight: number): { log: WriteLog; stop: () => Promise<void>; count: () => number } {
  const log: WriteLog = { acked: new Map(), unsure: new Set() };
  let next = 0;
  let stopped = false;
  const worker = async (): Promise<void> => {
    while (!stopped && next < pageCount) {
      const page = next++;
      log.unsure.add(page);
      try {
        await vol.write(page, demoPage(4096, page, 1));
        log.unsure.delete(page);
        log.acked.set(page, 1);
      } catch {
        // Not acknowledged: the page stays "unsure". Writers keep going until stopped.
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };
  const workers = Array.from({ length: inFlight }, () => worker());
  return {
    log,
    count: () => log.acked.size,
    stop: async () => {
      stopped = true;
      await Promise.all(workers);
    },
  };
}

async function verify(vol: Volume, log: WriteLog, pageCount: number): Promise<void> {
  for (let p = 0; p < pageCount; p += 64) {
    const pages = Array.from({ length: Math.min(64, pageCount - p) }, (_, i) => p + i);
    const got = (await vol.readPages(pages)).pages;
    pages.forEach((page, i) => {
      const data = Buffer.from(got[i]!);
      const written = Buffer.from(demoPage(4096, page, 1));
      if (log.acked.has(page)) assert.ok(data.equals(written), `acknowledged page ${page} lost or changed`);
      else assert.ok(data.equals(written) || data.equals(Buffer.alloc(4096)), `page ${page} holds data never written`);
    });
  }
}

async function until(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Reads pages once the shard serves again: requests fail (no responders, timeout) while its host restarts. */
async function readWhenBack(vol: { readPages(pages: number[]): Promise<{ pages: Uint8Array[] }> }, pages: number[]): Promise<Uint8Array[]> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      return (await vol.readPages(pages)).pages;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

describe('crashes lose no acknowledged write', function () {
  this.timeout(120_000);
  let c: InProcessCluster | undefined;
  afterEach(async () => {
    await c?.stop();
    c = undefined;
  });

  it('a node killed in the middle of writes and restarted keeps every acknowledged write', async () => {
    c = await startCluster({ nodes: 1, hosts: 2, clientTimeoutMs: 2000 });
    await c.client.createVolume({ name: 'v-crash', pageCount: 8192, shards: 4, stripePages: 16 });
    const vol = c.client.volume('v-crash');
    const load = writeLoad(vol, 8192, 32);
    await until(() => load.count() >= 300, 30_000);
    c.kill(0);
    await load.stop();
    const ackedAtKill = load.log.acked.size;
    assert.ok(ackedAtKill >= 300);
    await c.restart(0);
    await c.waitForMembers(1);
    await verify(vol, load.log, Math.min(8192, ackedAtKill + load.log.unsure.size + 64));
    // And it takes writes again.
    await vol.write(8191, demoPage(4096, 8191, 1));
  });

  it('in a three-node cluster, killing a data node and the controller node loses nothing', async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 2000 });
    await c.client.createVolume({ name: 'v-multi', pageCount: 4096, shards: 6, stripePages: 8 });
    const vol = c.client.volume('v-multi');
    const load = writeLoad(vol, 4096, 16);
    await until(() => load.count() >= 200, 30_000);
    c.kill(2);
    await until(() => load.count() >= 260, 30_000);
    c.kill(0);
    await load.stop();
    await c.restart(0);
    await c.restart(2);
    await c.waitForMembers(3);
    const upto = Math.min(4096, load.log.acked.size + load.log.unsure.size + 64);
    await verify(vol, load.log, upto);
  });

  it('a host thread that dies is restarted with its shards', async () => {
    c = await startCluster({ nodes: 1, hosts: 2 });
    await c.client.createVolume({ name: 'v-host', pageCount: 256, shards: 2, stripePages: 4 });
    const vol = c.client.volume('v-host');
    const pages = Array.from({ length: 64 }, (_, i) => ({ page: i, data: demoPage(4096, i, 5) }));
    await vol.writePages(pages);
    await c.nodes[0]!.hostPool.crashHost(0);
    const got = await readWhenBack(vol, pages.map((p) => p.page));
    got.forEach((d, i) => assert.ok(Buffer.from(d).equals(Buffer.from(pages[i]!.data)), `page ${i}`));
    const stats = await c.nodes[0]!.hostPool.stats();
    assert.equal(stats.find((s) => s.hostId === 0)?.restarts, 1, 'the restart is counted');
  });

  it('one failed fdatasync under 16 writes in flight reopens the device\'s shards once; they serve again', async () => {
    c = await startCluster({ nodes: 1, hosts: 1 });
    await c.client.createVolume({ name: 'v-fsync', pageCount: 256, shards: 2, stripePages: 4 });
    const vol = c.client.volume('v-fsync');
    await vol.writePages([{ page: 0, data: demoPage(4096, 0, 1) }, { page: 4, data: demoPage(4096, 4, 1) }]);
    await c.failFsync(0, 1);
    // Pages of shard 0 (stripes of 4 pages alternate between the two shards).
    const pages = Array.from({ length: 16 }, (_, i) => 8 * i + 1);
    // The client tries a write again after a device failure: the writes may all succeed.
    await Promise.all(pages.map((p) => vol.write(p, demoPage(4096, p, 2)).catch(() => undefined)));
    // Every shard of the device came back up, each reopened once (not once per failed request,
    // which left them all down for good after five).
    const host = (await c.nodes[0]!.hostPool.stats())[0]!;
    assert.equal(host.device?.restarts, 2, `restarts: ${host.device?.restarts}`);
    assert.deepEqual(host.device?.shards.map((x) => x.state), ['up', 'up']);
    const again = (await readWhenBack(vol, [0, 4])).map((d) => Buffer.from(d));
    assert.ok(again[0]!.equals(Buffer.from(demoPage(4096, 0, 1))) && again[1]!.equals(Buffer.from(demoPage(4096, 4, 1))), 'acknowledged pages intact');
    await vol.writePages([{ page: 2, data: demoPage(4096, 2, 3) }, { page: 6, data: demoPage(4096, 6, 3) }]);
  });

  it('a shard spec the host refuses is answered bad_request and forgotten: the host restarts with its other shards', async () => {
    c = await startCluster({ nodes: 1, hosts: 1 });
    const info = await c.client.createVolume({ name: 'v-refused', pageCount: 64, shards: 1, stripePages: 4 });
    const vol = c.client.volume('v-refused');
    const page = demoPage(4096, 5, 3);
    await vol.writePages([{ page: 5, data: page }]);
    const pool = c.nodes[0]!.hostPool;
    const bad = { volumeId: 'not-mine', volumeName: 'not-mine', shard: 0, shards: 1, pageCount: 64, pageSize: 4096 as const, stripePages: 4, members: ['n9'] };
    await assert.rejects(pool.openShard(0, bad), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'bad_request', 'the host\'s error code reaches the main thread');
      assert.match(e.message, /not one of its replicas/);
      return true;
    });
    const refusedBy = (await pool.stats()).find((s) => s.hostId === 0)!;
    assert.deepEqual(refusedBy.mailbox.map((m) => m.volumeId), [info.id], 'the running host keeps no mailbox of the refused spec');
    await pool.crashHost(0);
    const got = (await readWhenBack(vol, [5]))[0]!;
    assert.ok(Buffer.from(got).equals(Buffer.from(page)), `volume ${info.id} serves after the restart`);
    const host = (await pool.stats()).find((s) => s.hostId === 0)!;
    assert.equal(host.down, undefined, 'the restart did not fail on the refused spec');
    assert.equal(host.mailbox.length, 1, 'only the volume\'s shard is open: nothing was left of the refused one');
  });

  it('a host that does not answer is shown not answering in the node status, which does not wait for it', async () => {
    c = await startCluster({ nodes: 1, hosts: 2 });
    const node = c.nodes[0]!;
    const stalled = node.hostPool.stallHost(1, 4000);
    let stallOver = false;
    void stalled.then(() => (stallOver = true));
    // The stall reaches the host before the status's requests, which wait behind it.
    await new Promise((r) => setTimeout(r, 300));
    const status = (await node.status()) as { hosts: Array<{ hostId: number; ok: boolean; reason?: string }> };
    // It gave up on the host while the host still stalled, after the wait its reason names.
    assert.equal(stallOver, false, 'answered while the host still stalled');
    assert.equal(status.hosts[0]!.ok, true);
    assert.equal(status.hosts[1]!.ok, false);
    assert.equal(status.hosts[1]!.reason, `not answering: host 1 timed out after ${HOST_STATUS_TIMEOUT_MS} ms`);
    // Once the stall is over the host is healthy again.
    await stalled;
    const deadline = Date.now() + 10_000;
    while (!((await node.status()) as typeof status).hosts[1]!.ok) {
      assert.ok(Date.now() < deadline, 'the host answers again after its stall');
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  it('a host thread ended by an uncaught error is restarted, and the error is kept for the operator', async () => {
    c = await startCluster({ nodes: 1, hosts: 1 });
    await c.client.createVolume({ name: 'v-throw', pageCount: 64, shards: 1, stripePages: 4 });
    const vol = c.client.volume('v-throw');
    const page = demoPage(4096, 3, 9);
    await vol.writePages([{ page: 3, data: page }]);
    await c.nodes[0]!.hostPool.crashHost(0, { uncaught: 'host bug for the test' });
    const got = (await readWhenBack(vol, [3]))[0]!;
    assert.ok(Buffer.from(got).equals(Buffer.from(page)), 'the page survives the restart');
    const host = (await c.nodes[0]!.hostPool.stats()).find((s) => s.hostId === 0)!;
    assert.equal(host.restarts, 1);
    assert.equal(host.lastExit?.error, 'Error: host bug for the test', 'the error that ended the thread');
    assert.equal(host.lastExit?.code, 1);
    const status = await c.nodes[0]!.status();
    assert.equal((status.hosts as Array<{ lastExit?: { error?: string } }>)[0]!.lastExit?.error, 'Error: host bug for the test', 'the node status shows it');
  });
});
