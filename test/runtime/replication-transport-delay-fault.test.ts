import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ActorHost } from '../../runtime/actor-host';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';

describe('replication transport with an injected delay', function () {
  this.timeout(60_000);
  let server: NatsServerHandle;
  let dir: string;
  let host: ActorHost | undefined;
  before(async () => {
    server = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-delay-'));
  });
  after(async () => {
    await host?.stop();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a send whose delay is longer than its timeout fails with timeout at its timeout, as over a slow network', async () => {
    host = new ActorHost();
    await host.init({ hostId: 0, nodeId: 'n1', cluster: 'delay', natsUrl: server.url, deviceDir: path.join(dir, 'dev0'), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
    await host.setFaults({ delayMs: 3000 });
    const spec = { volumeId: 'v1', volumeName: 'v1', shard: 0, shards: 1, pageCount: 64, pageSize: 4096 as const, stripePages: 16, members: ['n1', 'n2'] };
    const transport = (host as unknown as { transport(s: typeof spec): { send(to: string, msg: unknown, timeoutMs: number): Promise<unknown> } }).transport(spec);
    const t0 = performance.now();
    const outcome = await transport.send('n2', { type: 'prevote', term: 1, candidate: 'n1', lastLsn: 0, lastTerm: 0 }, 200).then(
      () => 'answered',
      (e: { code?: string }) => String(e.code),
    );
    const ms = Math.round(performance.now() - t0);
    console.log(`      ${outcome} after ${ms} ms (timeout 200 ms, delay 3000 ms)`);
    assert.equal(outcome, 'timeout');
    assert.ok(ms < 1000, `settled after ${ms} ms, its timeout was 200 ms`);
  });
});
