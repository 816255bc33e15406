/**
 * A volume is in the catalog from the start of its volume.create (its nodes' reconciliations
 * open what they find missing), but it exists for clients only once the create is answered: a
 * create undone after a node failed to open its shards must not have let anyone write to it.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, type Msg, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { StrataNode } from '../../cluster/node';
import { createClient, NatsTransport } from '../../cluster/client';
import { encode, decode } from '../../messages/codec';
import { errorReply, ProtocolError } from '../../messages/errors';
import { controllerSubject, nodeSubject } from '../../messages/control';
import { waitFor } from '../support/wait';

const CLUSTER = 'createvis';

describe('a volume whose create is still running', function () {
  this.timeout(60_000);
  let nats: NatsServerHandle;
  let fake: NatsConnection;
  let root: string;
  let node: StrataNode | undefined;
  let timer: NodeJS.Timeout | undefined;

  before(async () => {
    nats = await startNatsServer({ jetstream: false });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-create-vis-'));
    fake = await natsConnect({ servers: nats.url });
  });
  after(async () => {
    clearInterval(timer);
    await node?.stop();
    await fake?.close();
    await nats?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('is neither described nor listed, so that nobody writes to it before it is known to exist', async () => {
    // A second node that heartbeats and holds its shards.open until told to fail it.
    const opens: Msg[] = [];
    fake.subscribe(nodeSubject(CLUSTER, 'ghost', 'shards.open'), { callback: (_e, msg) => void opens.push(msg) });
    fake.subscribe(nodeSubject(CLUSTER, 'ghost', 'shards.destroy'), { callback: (_e, msg) => msg.respond(encode({ ok: true })) });
    const beat = (): void => void fake.request(controllerSubject(CLUSTER, 'heartbeat'), encode({ nodeId: 'ghost', hosts: 1 })).catch(() => undefined);
    beat();
    timer = setInterval(beat, 200);
    node = await StrataNode.start({ nodeId: 'ctl', cluster: CLUSTER, natsUrl: nats.url, dataDir: path.join(root, 'ctl'), hosts: 1, controller: true, heartbeatMs: 100 });
    await waitFor('2 live members', async () => {
      const r = decode((await fake.request(controllerSubject(CLUSTER, 'members'), encode({}))).data) as { members?: Array<{ live: boolean }> };
      return Array.isArray(r.members) && r.members.filter((m) => m.live).length === 2;
    });
    const creator = createClient(new NatsTransport(fake), { cluster: CLUSTER, timeoutMs: 10_000 });
    const other = createClient(new NatsTransport(fake), { cluster: CLUSTER, timeoutMs: 3000 });
    // Two shards of one replica: shard 0 on this node (opened at once), shard 1 on the ghost.
    const created = creator.createVolume({ name: 'early', pageCount: 64, shards: 2, stripePages: 1, replicas: 1 }).then(
      () => 'created',
      (e: ProtocolError) => e.code,
    );
    await waitFor('the ghost asked to open its shard', () => opens.length === 1);
    await waitFor('this node\'s shard open', async () => (await node!.hostPool.stats()).some((h) => (h.device?.shards.length ?? 0) > 0));
    const seen = await other.volume('early').info().then(
      (v) => `described as ${v.id}`,
      (e: ProtocolError) => e.code,
    );
    const listed = (await other.listVolumes()).map((v) => v.name);
    const wrote = await other.volume('early').write(0, new Uint8Array(4096).fill(1)).then(
      () => 'acknowledged',
      (e: ProtocolError) => e.code,
    );
    // The ghost cannot open its shard: the create is undone.
    opens[0]!.respond(encode(errorReply(new ProtocolError('unavailable', 'ghost cannot open it'))));
    assert.equal(await created, 'unavailable');
    assert.equal(seen, 'not_found', 'a volume whose create was running (and was then undone) was described to a client');
    assert.deepEqual(listed, []);
    assert.equal(wrote, 'not_found', 'a write to a volume whose create was then undone was acknowledged');
  });
});
