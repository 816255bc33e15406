/**
 * A volume deleted while the host holding one of its replicas is down (it exited too
 * often and waits out its back-off) must not leave that replica's files behind once the host is
 * back, although nothing else changes in the catalog.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { waitFor } from '../support/wait';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('a volume deleted while a host is down', function () {
  this.timeout(90_000);
  let c: InProcessCluster | undefined;
  afterEach(async () => {
    await c?.stop();
    c = undefined;
  });

  it('its replica\'s files on that host are destroyed once the host is back', async () => {
    c = await startCluster({ nodes: 1 });
    const v = await c.client.createVolume({ name: 'gone', pageCount: 64 });
    await c.client.volume('gone').write(0, new Uint8Array(4096).fill(7));
    const node = c.nodes[0]!;
    const shardDirs = (): string[] =>
      fs.readdirSync(path.join(c!.dataDirs[0]!, 'dev0', 'shards')).filter((n) => n.startsWith(`${v.id}.`) && !n.includes('discard'));
    assert.deepEqual(shardDirs(), [`${v.id}.0`]);
    // Host 0 exits six times within a minute: it is down, started again after 5 s.
    for (let i = 0; i < 6; i++) {
      await node.hostPool.crashHost(0);
      if (i < 5) await waitFor('host 0 back', async () => (await node.hostPool.stats())[0]!.device !== undefined, 15_000);
    }
    await waitFor('host 0 down', async () => /exited 6 times/.test((await node.hostPool.stats())[0]!.down ?? ''), 5000);
    // The delete is answered (the replica's destroy deferred to reconciliation).
    await c.client.deleteVolume('gone');
    await waitFor('host 0 back after its back-off', async () => (await node.hostPool.stats())[0]!.device !== undefined, 30_000);
    // Nothing else changes in the catalog; the node reconciles on its heartbeats (250 ms).
    await sleep(5000);
    assert.deepEqual(shardDirs(), [], 'the deleted volume\'s shard directory is left on the device');
  });
});
