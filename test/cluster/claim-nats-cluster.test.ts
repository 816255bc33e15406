/**
 * A node's claim on a NATS cluster of two servers whose route takes 20 ms each way: two nodes of
 * one id started at the same moment, each on its own server, do not both start (a subscription
 * reaches the other server a moment after its node asked: the claim is asked twice there).
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect } from 'nats';
import { StrataNode } from '../../cluster/node';
import { encode } from '../../messages/codec';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { freePort } from '../../runtime/free-port';
import { waitFor } from '../support/wait';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy';

const ROUTE_DELAY_MS = 20;

describe('node claim on a NATS cluster of two servers', function () {
  this.timeout(120_000);
  const servers: NatsServerHandle[] = [];
  let proxy: TcpProxy | undefined;
  let root: string;
  const urls: string[] = [];
  const nodes: StrataNode[] = [];

  /** Whether a request published on server 2 reaches a subscriber on server 1 (false too while a server is not up). */
  async function routeCarries(): Promise<boolean> {
    try {
      const a = await natsConnect({ servers: urls[0]! });
      const b = await natsConnect({ servers: urls[1]! });
      try {
        a.subscribe('route.check', { callback: (_e, m) => m.respond(encode('ok')) });
        await a.flush();
        await b.request('route.check', encode({}), { timeout: 500 });
        return true;
      } finally {
        await a.close();
        await b.close();
      }
    } catch {
      return false;
    }
  }

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-claim-'));
    // Server 1 first, ready before server 2 asks for its route (through the delaying proxy); each
    // started like a cluster's own server: retried on a port taken meanwhile, its log kept to explain a failure.
    const c1 = await freePort();
    proxy = await startTcpProxy(c1, { delayMs: ROUTE_DELAY_MS });
    servers.push(await startNatsServer({ jetstream: false, extraConfig: `\ncluster { name: claim, listen: "127.0.0.1:${c1}" }\n` }));
    const c2 = await freePort();
    servers.push(
      await startNatsServer({
        jetstream: false,
        extraConfig: `\ncluster { name: claim, listen: "127.0.0.1:${c2}", routes: ["nats://127.0.0.1:${proxy.port}"] }\n`,
      }),
    );
    urls.push(servers[0]!.url, servers[1]!.url);
    try {
      await waitFor('the route between the two servers', routeCarries, 30_000);
    } catch (err) {
      const logs = servers.map((s, i) => `server ${i + 1}:\n${fs.readFileSync(s.logFile, 'utf8').split('\n').slice(-15).join('\n')}`);
      throw new Error(`${(err as Error).message}\n${logs.join('\n')}`);
    }
  });
  after(async () => {
    for (const n of nodes.splice(0)) await n.stop().catch(() => undefined);
    for (const s of servers) await s.stop();
    await proxy?.cut();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('two nodes of one id started at the same moment, each on its own server: at most one starts', async () => {
    for (let round = 0; round < 3; round++) {
      const id = `dup${round}`;
      const start = (url: string, dir: string): Promise<StrataNode> =>
        StrataNode.start({ nodeId: id, cluster: 'claimtest', natsUrl: url, dataDir: path.join(root, dir), hosts: 1, controller: false, heartbeatMs: 1000 });
      const results = await Promise.allSettled([start(urls[0]!, `${id}-a`), start(urls[1]!, `${id}-b`)]);
      const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      nodes.push(...started);
      assert.ok(started.length <= 1, `round ${round}: both started`);
      for (const r of results) {
        if (r.status === 'rejected') assert.match(String(r.reason), new RegExp(`node id '${id}' is in use`));
      }
      for (const n of nodes.splice(0)) await n.stop();
    }
  });

  it('two nodes of one id started while the route between their servers is down: once it heals, the later stops', async () => {
    const fatal = new Map<string, Error>();
    const start = (url: string, dir: string): Promise<StrataNode> =>
      StrataNode.start({
        nodeId: 'split', cluster: 'claimtest', natsUrl: url, dataDir: path.join(root, dir), hosts: 1, controller: false, heartbeatMs: 1000,
        claimRecheckMs: 300, onFatal: (e) => fatal.set(dir, e),
      });
    const first = await start(urls[0]!, 'split-a');
    nodes.push(first);
    await proxy!.cut();
    await waitFor('the route down', async () => !(await routeCarries()), 20_000);
    const second = await start(urls[1]!, 'split-b');
    nodes.push(second);
    await proxy!.restore();
    await waitFor('the later node to stop itself', () => fatal.has('split-b'), 30_000);
    assert.match(fatal.get('split-b')!.message, /node 'split' stopped: node id 'split' is in use/);
    assert.equal(fatal.has('split-a'), false, 'the first runs on');
  });

  it('the same, where only the first node checks again: its question stops the later one', async () => {
    const fatal = new Map<string, Error>();
    const start = (url: string, dir: string, claimRecheckMs: number): Promise<StrataNode> =>
      StrataNode.start({
        nodeId: 'split2', cluster: 'claimtest', natsUrl: url, dataDir: path.join(root, dir), hosts: 1, controller: false, heartbeatMs: 1000,
        claimRecheckMs, onFatal: (e) => fatal.set(dir, e),
      });
    nodes.push(await start(urls[0]!, 'split2-a', 300));
    await proxy!.cut();
    await waitFor('the route down', async () => !(await routeCarries()), 20_000);
    // The later node never checks again on its own (an hour): only the first one's question can stop it.
    nodes.push(await start(urls[1]!, 'split2-b', 3_600_000));
    await proxy!.restore();
    await waitFor('the later node to stop itself', () => fatal.has('split2-b'), 30_000);
    assert.match(fatal.get('split2-b')!.message, /node 'split2' stopped: node id 'split2' is in use in cluster 'claimtest': another node of that id runs, started first, and asked its claim: node 'split2' \(process \d+/);
    assert.equal(fatal.has('split2-a'), false, 'the first runs on');
  });
});
