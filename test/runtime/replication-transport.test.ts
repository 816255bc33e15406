import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ActorHost } from '../../runtime/actor-host';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';

/** What a host gives a replica to reach its peers (ActorHost.transport, private). */
interface Transport {
  send(to: string, msg: unknown, timeoutMs: number): Promise<unknown>;
  sendEach(to: readonly string[], msg: unknown, timeoutMs: number): Promise<unknown>[];
}
const spec = { volumeId: 'v1', volumeName: 'v1', shard: 0, shards: 1, pageCount: 64, pageSize: 4096 as const, stripePages: 16, members: ['n1', 'n2', 'n3'] };
const transportOf = (host: ActorHost, s: typeof spec): Transport => (host as unknown as { transport(s: typeof spec): Transport }).transport(s);

describe('replication transport of a host', function () {
  this.timeout(60_000);
  let server: NatsServerHandle;
  let dir: string;
  let host: ActorHost | undefined;
  before(async () => {
    server = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-transport-'));
  });
  after(async () => {
    await host?.stop();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a send whose delay is longer than its timeout fails with timeout at its timeout, as over a slow network', async () => {
    host = new ActorHost();
    await host.init({ hostId: 0, hostCount: 1, nodeId: 'n1', cluster: 'delay', natsUrl: server.url, deviceDir: path.join(dir, 'dev0'), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
    await host.setFaults({ delayMs: 3000 });
    const transport = transportOf(host, spec);
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

  it('one append to all followers, while the host stops: fails each follower\'s promise as send does, instead of throwing at the caller (the replica has already counted the message in each window)', async () => {
    const stopping = new ActorHost();
    await stopping.init({ hostId: 0, hostCount: 1, nodeId: 'n1', cluster: 'rv', natsUrl: server.url, deviceDir: path.join(dir, 'dev1'), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
    const transport = transportOf(stopping, spec);
    const stopped = stopping.stop(); // stopping: the replicas still run until the device closes
    const append = { type: 'append', term: 1, leader: 'n1', prevLsn: 0, prevTerm: 0, records: [{ term: 1, kind: 0, payload: new Uint8Array(1) }], commitLsn: 0, leaderLastLsn: 1 };
    const single = await transport.send('n2', append, 200).then(() => 'answered', (e: { code?: string }) => `rejected ${String(e.code)}`);
    assert.equal(single, 'rejected unavailable');
    let each: string[];
    try {
      each = await Promise.all(transport.sendEach(['n2', 'n3'], append, 200).map((p) => p.then(() => 'answered', (e: { code?: string }) => `rejected ${String(e.code)}`)));
    } catch (e) {
      each = [`threw ${String(e)}`];
    }
    await stopped;
    assert.deepEqual(each, ['rejected unavailable', 'rejected unavailable']);
  });
});
