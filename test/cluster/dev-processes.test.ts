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
