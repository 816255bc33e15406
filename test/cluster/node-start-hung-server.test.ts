/**
 * A node's start ends within its bounds when the NATS server stops answering while it starts
 * (a frozen process: the TCP connection stays up, and nothing comes back on it): it fails
 * `unavailable`, saying so, instead of waiting for the client's ping check, minutes later.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { StrataNode } from '../../cluster/node';
import { ProtocolError } from '../../messages/errors';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy';

describe('StrataNode start with a NATS server that stops answering', function () {
  this.timeout(30_000);
  let nats: NatsServerHandle;
  let root: string;
  const proxies: TcpProxy[] = [];

  before(async () => {
    nats = await startNatsServer({ jetstream: false });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-start-hung-'));
  });
  after(async () => {
    for (const p of proxies) await p.cut();
    await nats?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  /** Starts node `id` through a proxy that freezes once the node sends `marker`; how the start ended, and when. */
  async function startFreezingAt(id: string, marker: string): Promise<{ err: unknown; tookMs: number }> {
    const proxy = await startTcpProxy(nats.port, { freezeWhen: (chunk) => chunk.toString('latin1').includes(marker) });
    proxies.push(proxy);
    const t0 = Date.now();
    const outcome = await Promise.race([
      StrataNode.start({ nodeId: id, cluster: 'starthung', natsUrl: proxy.url, dataDir: path.join(root, id), hosts: 1, controller: false }).then(
        (node) => ({ node }),
        (err: unknown) => ({ err }),
      ),
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 20_000).unref()),
    ]);
    const tookMs = Date.now() - t0;
    if (outcome !== undefined && 'node' in outcome) outcome.node.kill();
    assert.ok(outcome !== undefined, `the start did not end within 20 s (took ${tookMs} ms so far)`);
    assert.ok('err' in outcome, 'the start failed');
    return { err: outcome.err, tookMs };
  }

  it('fails unavailable within seconds when the server freezes as the node subscribes to its claim', async () => {
    const { err } = await startFreezingAt('n1', '.node.n1.claim');
    assert.ok(err instanceof ProtocolError, String(err));
    assert.equal(err.code, 'unavailable', err.message);
    assert.match(err.message, /the NATS server did not confirm its claim subscriptions within 5000 ms/);
  });

  it('fails unavailable within seconds when the server freezes as the node subscribes to the API', async () => {
    const { err } = await startFreezingAt('n2', '.api.page');
    assert.ok(err instanceof ProtocolError, String(err));
    assert.equal(err.code, 'unavailable', err.message);
    assert.match(err.message, /the NATS server did not confirm its subscriptions within 5000 ms/);
  });
});
