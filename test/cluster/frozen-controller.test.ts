/**
 * A node that ran the controller, led the catalog shard and served the API, frozen (a paused VM,
 * a process stopped with SIGSTOP): its NATS connection stays open, so it keeps every
 * subscription, and answers nothing. Stood in for here by subscriptions that take requests and
 * never answer, twenty in each queue group such a node was in: the catalog shard's leaders
 * ('leader', and the shard's leaders subject), the controller's seat ('controller', as the
 * seat's subscriptions once were) and the API's routers ('strata-api'). The next controller takes its seat (a handover of the catalog
 * shard) and serves: its takeover reads the catalog on the shard's leaders subject, its seat
 * takes every request (no queue group), and a client's API request whose first try meets the
 * frozen router is sent again to every router.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { connect as natsConnect, type NatsConnection, type Subscription } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { CATALOG_VOLUME_ID, CATALOG_VOLUME_NAME } from '../../cluster/catalog-shard';
import { connect, type StrataClient } from '../../cluster/client';
import { startDevCluster, type DevCluster } from '../../cluster/dev';
import { shardLeadersSubject, shardSubject } from '../../messages/subjects';
import { controllerSubject } from '../../messages/control';
import { eventually, waitFor } from '../support/wait';
import { ProtocolError } from '../../messages/errors';

describe('a frozen node that kept the subscriptions of the controller, the catalog shard\'s leader and an API router', function () {
  this.timeout(180_000);
  let c: InProcessCluster;
  let nc: NatsConnection;
  before(async () => {
    c = await startCluster({ nodes: 3, controllers: 3, hosts: 1, clientTimeoutMs: 20_000 });
    nc = await natsConnect({ servers: c.natsUrl });
  });
  after(async () => {
    await nc?.close();
    await c?.stop();
  });

  it('the next controller takes its seat and answers; reads of the catalog, creates and their pages all done', async () => {
    await c.waitForMembers(3);
    const status = await c.client.status();
    const catalog = status.catalogShard as { name: string; shards: Array<{ leader?: string }> };
    const before = catalog.shards[0]!.leader!;
    const taken = { catalog: 0, controller: 0, api: 0 };
    const frozen: Subscription[] = [];
    for (let i = 0; i < 20; i++) {
      frozen.push(nc.subscribe(shardSubject(c.cluster, CATALOG_VOLUME_ID, 0), { queue: 'leader', callback: () => void taken.catalog++ }));
      frozen.push(nc.subscribe(controllerSubject(c.cluster, '>'), { queue: 'controller', callback: () => void taken.controller++ }));
      frozen.push(nc.subscribe(`strata.${c.cluster}.api.>`, { queue: 'strata-api', callback: () => void taken.api++ }));
    }
    // A frozen leader is subscribed to the shard's leaders subject too (every leader takes each request there).
    frozen.push(nc.subscribe(shardLeadersSubject(c.cluster, CATALOG_VOLUME_ID, 0), { callback: () => void taken.catalog++ }));
    await nc.flush();
    // The catalog shard handed to another node: the controller moves with it.
    const to = ['n1', 'n2', 'n3'].find((n) => n !== before)!;
    await eventually('the handover', () => c.client.handOver(catalog.name, 0, { to }));
    await waitFor(`${to} runs the controller`, () => (c.nodes.find((n) => n?.nodeId === to) as unknown as { seat?: unknown } | undefined)?.seat !== undefined, 30_000);

    const names = ['fz-0', 'fz-1', 'fz-2', 'fz-3'];
    const created = await Promise.all(names.map((name) => c.client.createVolume({ name, pageCount: 64, shards: 1, replicas: 3 })));
    assert.deepEqual(created.map((v) => v.name), names);
    const infos = await Promise.all(Array.from({ length: 8 }, (_, i) => c.client.volumeInfo(names[i % 4]!)));
    assert.deepEqual(infos.map((v) => v.id), Array.from({ length: 8 }, (_, i) => created[i % 4]!.id));
    const listed = (await c.client.listVolumes()).map((v) => v.name).filter((n) => n.startsWith('fz-'));
    assert.deepEqual(listed.sort(), names, 'each created once');
    const data = new Uint8Array(4096).fill(5);
    await c.client.volume('fz-0').write(1, data);
    assert.deepEqual(Buffer.from(await c.client.volume('fz-0').read(1)), Buffer.from(data));
    // The stand-ins took requests of each kind: the test exercised what it says.
    assert.ok(taken.catalog > 0 && taken.controller > 0 && taken.api > 0, JSON.stringify(taken));
    for (const sub of frozen) sub.unsubscribe();
  });

  it('a create sent again with its request id, after this controller placed its volume, is answered as it was at once: no replica opened again, the volume never hidden as being created', async () => {
    const requestId = 'again-once-placed';
    const first = await c.client.createVolume({ name: 'fz-again', pageCount: 512, shards: 2, replicas: 3, requestId });
    const opens: string[] = [];
    const spy = nc.subscribe(`strata.${c.cluster}.node.*.shards.open`, { callback: (_e, m) => void opens.push(m.subject) });
    await nc.flush();
    // As the routers that a client's try after the first reaches each forward it.
    const again = await Promise.all([1, 2, 3].map(() => c.client.createVolume({ name: 'fz-again', pageCount: 512, shards: 2, replicas: 3, requestId })));
    assert.deepEqual(again.map((v) => v.id), [first.id, first.id, first.id]);
    assert.equal((await c.client.volumeInfo('fz-again')).id, first.id);
    await nc.flush();
    spy.unsubscribe();
    assert.deepEqual(opens, [], 'no node asked to open its replicas again');
  });

  it('a create sent again after its volume was deleted (a try queued behind the delete) is refused, not made again; another request id makes it', async () => {
    const requestId = 'again-after-delete';
    await c.client.createVolume({ name: 'fz-gone', pageCount: 64, shards: 1, replicas: 3, requestId });
    await c.client.deleteVolume('fz-gone');
    await assert.rejects(c.client.createVolume({ name: 'fz-gone', pageCount: 64, shards: 1, replicas: 3, requestId }), (e: unknown) =>
      e instanceof ProtocolError && e.code === 'not_found' && /^volume 'fz-gone' was made by this request and deleted since: not made again/.test(e.message));
    await assert.rejects(c.client.volumeInfo('fz-gone'), (e: unknown) => e instanceof ProtocolError && e.code === 'not_found');
    const made = await c.client.createVolume({ name: 'fz-gone', pageCount: 64, shards: 1, replicas: 3, requestId: 'again-after-delete-2' });
    assert.equal((await c.client.volumeInfo('fz-gone')).id, made.id);
  });
});

describe('strata dev: the node that runs the controller stopped with SIGSTOP', function () {
  this.timeout(180_000);
  let c: DevCluster | undefined;
  let client: StrataClient | undefined;
  let frozen: number | undefined;
  after(async () => {
    if (frozen !== undefined) process.kill(frozen, 'SIGCONT');
    await client?.close().catch(() => undefined);
    await c?.client.close().catch(() => undefined);
    await c?.stop();
  });

  it('the next controller takes its seat: volume.info, volume.list and creates sent at once are all answered', async () => {
    c = await startDevCluster({ nodes: 3, hosts: 1 });
    await c.client.createVolume({ name: 'before', pageCount: 64, shards: 1, replicas: 3 });
    // n3 leads the catalog shard, and so runs the controller.
    const n3 = c.nodes.find((n) => n.id === 'n3')!;
    const seated = (): number => fs.readFileSync(n3.log, 'utf8').split('\n').filter((l) => l.includes('"msg":"runs the controller')).length;
    const seatsBefore = seated();
    await waitFor('n3 runs the controller', async () => {
      await c!.client.handOver(CATALOG_VOLUME_NAME, 0, { to: 'n3' }).catch(() => undefined);
      const status = await c!.client.status().catch(() => undefined);
      const leader = (status?.catalogShard as { shards?: Array<{ leader?: string; role?: string }> } | undefined)?.shards?.[0];
      return leader?.leader === 'n3' && leader.role === 'leader' && seated() > seatsBefore;
    }, 30_000);
    frozen = n3.pid;
    process.kill(n3.pid, 'SIGSTOP');
    // 20 s: an election of the catalog shard's next leader and its takeover on a loaded machine, and the tries of a request.
    client = await connect({ servers: c.natsUrl, cluster: 'dev', timeoutMs: 20_000 });
    const names = ['after-0', 'after-1', 'after-2'];
    const [infos, lists, created] = await Promise.all([
      Promise.all(Array.from({ length: 6 }, () => client!.volumeInfo('before'))),
      Promise.all(Array.from({ length: 3 }, () => client!.listVolumes())),
      Promise.all(names.map((name) => client!.createVolume({ name, pageCount: 64, shards: 1, replicas: 1 }))),
    ]);
    assert.deepEqual(new Set(infos.map((v) => v.name)), new Set(['before']));
    assert.ok(lists.every((l) => l.some((v) => v.name === 'before')));
    assert.deepEqual(created.map((v) => v.name), names);
    assert.deepEqual((await client.listVolumes()).map((v) => v.name).sort(), ['after-0', 'after-1', 'after-2', 'before']);
    process.kill(n3.pid, 'SIGCONT');
    frozen = undefined;
  });
});
