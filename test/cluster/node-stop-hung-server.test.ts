/**
 * A node's stop ends within its bounds when the NATS server has stopped answering (a frozen
 * process: the TCP connection stays up, and nothing comes back on it). The waits on the server
 * that a stop makes (the API service's drain, each host's drain, the node's own) each have a
 * deadline; without them the stop waited for the client's ping check to give the connection
 * up, minutes later.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { StrataNode } from '../../cluster/node';

describe('StrataNode stop with a NATS server that does not answer', function () {
  this.timeout(30_000);
  let nats: NatsServerHandle | undefined;
  let root: string | undefined;
  let frozen = false;

  after(async () => {
    if (nats && frozen) process.kill(nats.pid, 'SIGCONT');
    await nats?.stop();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('stops within seconds, not at the client\'s ping check', async () => {
    nats = await startNatsServer({ jetstream: false });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-stop-hung-'));
    const node = await StrataNode.start({
      nodeId: 'n1', cluster: 'stophung', natsUrl: nats.url, dataDir: path.join(root, 'n1'), hosts: 1, controller: true, heartbeatMs: 200,
    });
    process.kill(nats.pid, 'SIGSTOP');
    frozen = true;
    const t0 = Date.now();
    const stopped = await Promise.race([
      node.stop().then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), 15_000).unref()),
    ]);
    const tookMs = Date.now() - t0;
    if (!stopped) node.kill();
    assert.ok(stopped, `stop did not end within 15 s (took ${tookMs} ms so far)`);
  });
});
