/**
 * A host sizes replication messages to the max_payload of the server it is connected to, learnt
 * again at each reconnection: a server restarted with another one changes it. One below what a
 * replica needs is logged at error once, however many reconnections find it so (a change to a
 * bound that is enough is logged at info only).
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ActorHost } from '../../runtime/actor-host';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { MESSAGE_BYTES_MIN } from '../../actors/replica';
import { stderrOf } from '../support/stderr';
import { waitFor } from '../support/wait';

describe('a host reconnected to a server with another max_payload', function () {
  this.timeout(60_000);
  let server: NatsServerHandle | undefined;
  let dir: string;
  let host: ActorHost | undefined;
  after(async () => {
    await host?.stop();
    await server?.stop();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('takes the new bound at each reconnection; one too small for a replica is logged at error once, and nothing else at warn or above', async () => {
    server = await startNatsServer({ jetstream: false });
    const port = server.port;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-host-payload-'));
    host = new ActorHost();
    const h = host;
    await h.init({ hostId: 0, hostCount: 1, nodeId: 'p1', cluster: 'mp', natsUrl: server.url, deviceDir: path.join(dir, 'p1'), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
    await h.openShard({ volumeId: 'v1', volumeName: 'v1', shard: 0, shards: 1, pageCount: 64, pageSize: 4096, stripePages: 16, members: ['p1'] });
    assert.equal((await h.stats()).maxPayload, 1024 * 1024);
    const restartWith = async (maxPayloadBytes: number): Promise<void> => {
      await server!.stop();
      server = await startNatsServer({ jetstream: false, port, maxPayloadBytes });
      await waitFor(`the host reconnected to the server of ${maxPayloadBytes} bytes`, async () => (await h.stats()).maxPayload === maxPayloadBytes, 20_000);
    };
    const written = await stderrOf(async () => {
      await restartWith(8 * 1024);
      await restartWith(12 * 1024);
      await restartWith(64 * 1024);
    });
    // At warn and above (another test of the same process may have set the level lower): the one error.
    const lines = written.join('').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => String(l['msg']).includes('max_payload') && (l['level'] === 'warn' || l['level'] === 'error'));
    assert.deepEqual(lines.map((l) => [l['level'], l['maxPayload'], l['before']]), [['error', 8 * 1024, 1024 * 1024]]);
    assert.equal(lines[0]!['needed'], MESSAGE_BYTES_MIN);
    assert.equal((await h.stats()).device?.shards.find((s) => s.volumeId === 'v1')?.state, 'up');
  });
});
