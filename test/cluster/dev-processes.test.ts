import { strict as assert } from 'node:assert';
import { startDevCluster, demoPage, type DevCluster } from '../../cluster/dev';

describe('strata dev: nodes as processes, one killed with SIGKILL while writing', function () {
  this.timeout(120_000);
  let c: DevCluster | undefined;
  after(async () => {
    await c?.client.close().catch(() => undefined);
    await c?.stop();
  });

  it('every acknowledged write is read back after a node process is killed -9 mid-stream', async () => {
    c = await startDevCluster({ nodes: 3, hosts: 1 });
    await c.client.createVolume({ name: 'k9', pageCount: 4096, shards: 3, stripePages: 16, replicas: 3 });
    const vol = c.client.volume('k9');
    const acked = new Set<number>();
    let next = 0;
    let stop = false;
    const writer = async (): Promise<void> => {
      while (!stop && next < 4096) {
        const page = next++;
        try {
          await vol.write(page, demoPage(4096, page, 1));
          acked.add(page);
        } catch {
          // Not acknowledged (the shard was electing a leader past the deadline): may or may not be there.
        }
      }
    };
    const writers = Array.from({ length: 8 }, () => writer());
    while (acked.size < 200) await new Promise((r) => setTimeout(r, 10));
    const victim = c.nodes[2]!;
    process.kill(victim.pid, 'SIGKILL');
    await new Promise<void>((r) => victim.process.once('exit', () => r()));
    const atKill = acked.size;
    while (acked.size < atKill + 300) await new Promise((r) => setTimeout(r, 10));
    stop = true;
    await Promise.all(writers);
    const pages = [...acked].sort((a, b) => a - b);
    for (let i = 0; i < pages.length; i += 64) {
      const chunk = pages.slice(i, i + 64);
      const got = (await vol.readPages(chunk)).pages;
      got.forEach((d, j) => assert.ok(Buffer.from(d).equals(Buffer.from(demoPage(4096, chunk[j]!, 1))), `acknowledged page ${chunk[j]} lost`));
    }
    process.stdout.write(`      (${acked.size} writes acknowledged, ${atKill} before node ${victim.id} was killed)\n`);
  });
});

describe('strata dev: a node process that cannot be spawned', function () {
  this.timeout(30_000);

  it('fails the start at once with an error naming the node, and this process carries on', async () => {
    const t0 = Date.now();
    await assert.rejects(
      startDevCluster({ nodes: 2, hosts: 1, execPath: '/nonexistent/strata-test-node' }),
      (e: Error) => /node n1: could not run \/nonexistent\/strata-test-node: .*ENOENT/.test(e.message),
    );
    // Not the 30 s wait for live nodes: the spawn failure ends the start.
    assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
  });
});
