/**
 * A lost catalog recovered from the nodes: the controller's node loses its data directory, so
 * its catalog starts again empty; `recoverCatalog` (strata catalog recover) finds the volumes
 * the other nodes hold and adds them back, and the controller's node is given its replicas back
 * by their peers.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { connect as natsConnect } from 'nats';
import { connect, type StrataClient } from '../../cluster/client';
import { encode } from '../../messages/codec';
import { controllerSubject, nodeSubject } from '../../messages/control';
import { ProtocolError } from '../../messages/errors';
import { runCli } from '../support/cli';
import { waitFor } from '../support/wait';

const page = (b: number): Uint8Array => new Uint8Array(4096).fill(b);


describe('a lost catalog recovered from the nodes', function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  let fresh: StrataClient | undefined;

  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 5000 });
  });
  after(async () => {
    await fresh?.close();
    await c?.stop();
  });

  it('finds the volumes the live nodes hold, adds them with apply, and the wiped node gets its replicas back', async () => {
    const kept = await c.client.createVolume({ name: 'kept', pageCount: 64, shards: 2, stripePages: 4, replicas: 3 });
    await c.client.volume('kept').writePages([{ page: 0, data: page(1) }, { page: 4, data: page(2) }]);
    const gone = await c.client.createVolume({ name: 'gone', pageCount: 16, replicas: 3 });
    await c.client.deleteVolume('gone');
    // The controller's node (n1) loses its data directory: its catalog starts again empty.
    c.kill(0);
    fs.rmSync(c.dataDirs[0]!, { recursive: true, force: true });
    await c.restart(0);
    fresh = await connect({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 10_000 });
    await waitFor('the controller hears from every node', async () => (await fresh!.recoverCatalog()).nodesAsked === 3, 20_000);
    assert.deepEqual(await fresh.listVolumes(), []);

    // A new volume takes an old one's name meanwhile: that old one is left out, with why.
    await fresh.createVolume({ name: 'other', pageCount: 8, replicas: 1 });

    const dry = await fresh.recoverCatalog();
    assert.equal(dry.applied, false);
    assert.equal(dry.nodesAsked, 3);
    assert.deepEqual(dry.nodesFailed, []);
    assert.deepEqual(dry.recovered, [{ id: kept.id, name: 'kept', shards: 2, replicas: 3 }]);
    assert.equal(dry.recoveredCount, 1);
    // The deleted volume's replicas are gone from every node: nothing of it is found.
    assert.ok(!dry.recovered.concat(dry.skipped).some((v) => v.id === gone.id));
    assert.deepEqual((await fresh.listVolumes()).map((v) => v.name), ['other'], 'a dry run changes nothing');

    const applied = await fresh.recoverCatalog({ apply: true });
    assert.equal(applied.applied, true);
    assert.deepEqual(applied.recovered, dry.recovered);
    assert.ok(applied.epoch > dry.epoch);
    assert.deepEqual((await fresh.listVolumes()).map((v) => v.name).sort(), ['kept', 'other']);
    const { replicaSets, ...recovered } = await fresh.volume('kept').info();
    assert.deepEqual(recovered, { ...kept });
    assert.deepEqual(replicaSets?.map((r) => [...r.members].sort()), [['n1', 'n2', 'n3'], ['n1', 'n2', 'n3']]);

    // The pages are there, and writes go on.
    const vol = fresh.volume('kept');
    await waitFor('the pages readable', async () => {
      try {
        const r = await vol.readPages([0, 4]);
        return r.pages[0]![0] === 1 && r.pages[1]![0] === 2;
      } catch (e) {
        if (e instanceof ProtocolError && (e.code === 'unavailable' || e.code === 'timeout' || e.code === 'not_leader')) return false;
        throw e;
      }
    }, 30_000);
    await vol.writePages([{ page: 0, data: page(3) }]);
    // n1 reopened its replicas of the volume (lost storage) and its peers gave them back.
    type ShardView = { volumeId: string; repairing: boolean; appliedLsn: number };
    await waitFor('n1 holds both shards of kept again, repaired', async () => {
      const mine = ((await c.nodes[0]!.status()) as unknown as { shards: ShardView[] }).shards.filter((x) => x.volumeId === kept.id);
      return mine.length === 2 && mine.every((x) => !x.repairing && x.appliedLsn > 0);
    }, 60_000);

    // Again: nothing left to recover.
    const again = await fresh.recoverCatalog({ apply: true });
    assert.equal(again.recoveredCount, 0);
    assert.equal(again.epoch, applied.epoch, 'nothing to add changes nothing');
  });

  it('strata catalog recover says what it would add, and adds it with --apply', async () => {
    const flags = ['--nats', c.natsUrl, '--cluster', c.cluster];
    const dry = await runCli(['catalog', 'recover', ...flags]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^asked 3 live nodes for their records\nno volume to recover: the catalog lists every volume the nodes hold\n$/);
    const json = await runCli(['catalog', 'recover', '--json', ...flags]);
    assert.equal(json.code, 0, json.stderr);
    assert.equal(JSON.parse(json.stdout).recoveredCount, 0);
    const bad = await runCli(['catalog', 'recover', '--force', ...flags]);
    assert.equal(bad.code, 2);
    const noSub = await runCli(['catalog']);
    assert.equal(noSub.code, 2);
    assert.match(noSub.stderr, /catalog: expected recover/);
  });

  it("a node that does not give its records is named in the answer, which comes within the requester's timeout", async () => {
    // A node the controller hears heartbeats from but whose records never come.
    const nc = await natsConnect({ servers: c.natsUrl });
    const quick = await connect({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 2500 });
    const beat = (): void => void nc.request(controllerSubject(c.cluster, 'heartbeat'), encode({ nodeId: 'silent', hosts: 1 }), { timeout: 1000 }).catch(() => undefined);
    const beats = setInterval(beat, 200);
    try {
      nc.subscribe(nodeSubject(c.cluster, 'silent', 'records'));
      beat();
      await nc.flush();
      await new Promise((r) => setTimeout(r, 500));
      // Answered within this client's 2.5 s (it would fail `timeout` otherwise): the controller's
      // wait for the silent node's records ended within the call's deadline.
      const r = await quick.recoverCatalog();
      assert.deepEqual(r.nodesFailed.map((f) => f.node), ['silent']);
      assert.equal(r.nodesAsked, 4);
      // The command says so, and does not claim that the catalog lists every volume.
      const out = await runCli(['catalog', 'recover', '--timeout', '2500', '--nats', c.natsUrl, '--cluster', c.cluster]);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /^asked 4 live nodes for their records; 1 did not answer \(what only they hold is not found\)\n  silent: .*\nno volume to recover\n$/);
    } finally {
      clearInterval(beats);
      await quick.close();
      await nc.close();
    }
  });
});
