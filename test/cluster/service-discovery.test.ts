import { strict as assert } from 'node:assert';
import { connect, RequestStrategy, type NatsConnection } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('the public API is a discoverable NATS service ($SRV ping, info, stats)', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  let nc: NatsConnection;
  before(async () => {
    c = await startCluster({ nodes: 2, hosts: 1 });
    nc = await connect({ servers: c.natsUrl });
  });
  after(async () => {
    await nc?.close();
    await c?.stop();
  });

  it('every node answers ping as the service "strata"', async () => {
    const pings = await collect(await nc.services.client({ maxWait: 1000, strategy: RequestStrategy.Timer }).ping('strata'));
    assert.equal(pings.length, 2);
    for (const p of pings) assert.equal(p.name, 'strata');
    assert.deepEqual(pings.map((p) => p.metadata?.node).sort(), ['n1', 'n2']);
  });

  it('info lists every API verb on its strata.<cluster>.api.<verb> subject', async () => {
    const infos = await collect(await nc.services.client({ maxWait: 1000, strategy: RequestStrategy.Timer }).info('strata'));
    assert.equal(infos.length, 2);
    const subjects = infos[0]!.endpoints.map((e) => e.subject).sort();
    for (const verb of ['page.read', 'page.write', 'status', 'volume.branch', 'volume.create', 'volume.delete', 'volume.flush', 'volume.info', 'volume.list']) {
      assert.ok(subjects.includes(`strata.${c.cluster}.api.${verb}`), `missing ${verb} in ${subjects.join(', ')}`);
    }
    for (const e of infos[0]!.endpoints) assert.equal(e.queue_group, 'strata-api');
  });

  it('stats count the requests each endpoint served', async () => {
    await c.client.createVolume({ name: 'v-srv', pageCount: 16 });
    await c.client.listVolumes();
    const stats = await collect(await nc.services.client({ maxWait: 1000, strategy: RequestStrategy.Timer }).stats('strata'));
    const served = (verb: string): number =>
      stats.flatMap((s) => s.endpoints ?? []).filter((e) => e.subject.endsWith(`.api.${verb}`)).reduce((n, e) => n + e.num_requests, 0);
    assert.ok(served('volume.create') >= 1);
    assert.ok(served('volume.list') >= 1);
  });
});
