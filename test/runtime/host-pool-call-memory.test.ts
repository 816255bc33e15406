import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import type { HostConfig } from '../../runtime/actor-host';
import { HostPool } from '../../runtime/host-pool';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

function heapUsedAfterGc(): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

describe('HostPool control calls over a host thread\'s lifetime', function () {
  this.timeout(120_000);
  let server: NatsServerHandle;
  let dir: string;
  let pool: HostPool | undefined;
  before(async () => {
    server = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-pool-mem-'));
  });
  after(async () => {
    await pool?.stop();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps nothing of a call once it is answered (the heap does not grow with the calls a running host answered)', async () => {
    const host: HostConfig = { hostId: 0, hostCount: 1, nodeId: 'n1', cluster: 'poolmem', natsUrl: server.url, deviceDir: path.join(dir, 'dev0') };
    pool = await HostPool.start({ hosts: [host], hangMs: 0 });
    const calls = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i += 50) await Promise.all(Array.from({ length: 50 }, () => pool!.stats()));
    };
    await calls(1000); // warm up
    const before = heapUsedAfterGc();
    await calls(10_000);
    const grownMiB = (heapUsedAfterGc() - before) / (1024 * 1024);
    assert.ok(grownMiB < 8, `the heap grew ${grownMiB.toFixed(1)} MiB over 10,000 answered stats() calls`);
  });
});
