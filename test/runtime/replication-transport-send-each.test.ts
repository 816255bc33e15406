import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ActorHost } from '../../runtime/actor-host';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';

type T = {
  send(to: string, msg: unknown, timeoutMs: number): Promise<unknown>;
  sendEach(to: readonly string[], msg: unknown, timeoutMs: number): Promise<unknown>[];
};

describe('replication transport: one append to all followers on a host that is stopping', function () {
  this.timeout(60_000);
  let server: NatsServerHandle;
  let dir: string;
  before(async () => {
    server = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-send-each-'));
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('fails each follower\'s promise as send does, instead of throwing at the caller (the replica has already counted the message in each window)', async () => {
    const host = new ActorHost();
    await host.init({ hostId: 0, nodeId: 'n1', cluster: 'rv', natsUrl: server.url, deviceDir: path.join(dir, 'dev0'), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
    const spec = { volumeId: 'v1', volumeName: 'v1', shard: 0, shards: 1, pageCount: 64, pageSize: 4096 as const, stripePages: 16, members: ['n1', 'n2', 'n3'] };
    const transport = (host as unknown as { transport(s: typeof spec): T }).transport(spec);
    const stopped = host.stop(); // stopping: the replicas still run until the device closes
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
