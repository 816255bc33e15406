/**
 * A node reads every tombstone of the catalog, however small the NATS server's max_payload: a
 * catalog of many deleted volumes must not leave a node that missed a delete with the deleted
 * volume's replica. Without a tombstone, a replica (its record, or its files alone) of a volume
 * the catalog issued and no longer lists or places on the node is destroyed too.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { RealDisk } from '../../storage-engine/real-disk';
import { MetaStore } from '../../storage-engine/metadata';
import type { CatalogState } from '../../actors/controller';
import type { ShardAssignment } from '../../messages/control';
import { waitFor } from '../support/wait';

/** The directory of node 2's replica of shard 0 of volume `id`, in a cluster under `root`. */
function node2ShardDir(root: string, id: string): string {
  return path.join(root, 'node2', 'dev0', 'shards', `${id}.0`);
}

/** Creates volumes of one shard and one replica (`vol0`, `vol1`…) until `count` are placed on node 2. */
async function volumesOnNode2(c: InProcessCluster, root: string, count: number): Promise<Array<{ name: string; id: string }>> {
  const found: Array<{ name: string; id: string }> = [];
  for (let i = 0; i < 4 * count && found.length < count; i++) {
    const v = await c.client.createVolume({ name: `vol${i}`, pageCount: 16, shards: 1, replicas: 1 });
    if (fs.existsSync(node2ShardDir(root, v.id))) found.push({ name: v.name, id: v.id });
  }
  assert.equal(found.length, count, `volumes placed on node 2: ${found.length} of ${count}`);
  return found;
}

describe('the tombstones of a catalog larger than one control message', function () {
  this.timeout(90_000);
  let c: InProcessCluster | undefined;
  let root: string | undefined;
  afterEach(async () => {
    await c?.stop();
    c = undefined;
    if (root !== undefined) fs.rmSync(root, { recursive: true, force: true });
    root = undefined;
  });

  it('reach a node through a 16 KiB max_payload: a replica of a volume deleted while its node was down is destroyed once it is back', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-tombstones-'));
    // The controller's catalog holds 3000 tombstones of volumes deleted before (about 36 KB of
    // ids, more than a 16 KiB message holds).
    const disk = new RealDisk(path.join(root, 'node1'));
    disk.mkdirp('controller');
    const catalog: CatalogState = {
      version: 1, epoch: 3000, nextId: 1, tag: 'pre', volumes: [],
      tombstones: Array.from({ length: 3000 }, (_, i) => `vold${i}-pre`),
    };
    new MetaStore(disk, 'controller', { payloadBytesMax: 16 * 1024 * 1024 }).write('catalog', catalog);
    c = await startCluster({ nodes: 2, hosts: 1, dataDir: root, maxPayloadBytes: 16 * 1024 });
    const shardDir = (id: string): string => node2ShardDir(root!, id);
    const [{ name: doomed, id }] = await volumesOnNode2(c, root, 1);
    await c.client.volume(doomed).write(0, new Uint8Array(4096).fill(9));
    // Node 2 is down while the volume is deleted: its replica's destroy is left to its reconciliation.
    c.kill(1);
    // (Until the server has dropped its connection, a request may still be routed to it.)
    await new Promise((r) => setTimeout(r, 500));
    await c.client.deleteVolume(doomed);
    assert.ok(fs.existsSync(shardDir(id)));
    const n2 = await c.restart(1);
    const recorded = (): string[] => (n2 as unknown as { nodeMeta: { shards: ShardAssignment[] } }).nodeMeta.shards.map((a) => a.volumeId);
    await waitFor('the deleted volume\'s replica destroyed on node 2', () => !fs.existsSync(shardDir(id)) && !recorded().includes(id), 10_000);
  });

  it('a catalog created again at the epoch a running node last reconciled with is still reconciled with: the epoch alone does not tell two catalogs apart', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-tombstones-'));
    c = await startCluster({ nodes: 2, hosts: 1, dataDir: root });
    const shardDir = (id: string): string => node2ShardDir(root!, id);
    const [{ id }] = await volumesOnNode2(c, root, 1);
    type Peek = { reconciledEpoch: number; controller?: { epoch: number } };
    const epoch = (c.nodes[0] as unknown as Peek).controller!.epoch;
    await waitFor('node 2 reconciled with the catalog\'s epoch', () => (c!.nodes[1] as unknown as Peek).reconciledEpoch === epoch, 10_000);
    // The controller's node starts again on a catalog of another tag at that same epoch, which
    // deleted the volume (as a catalog created again, and changed as often, would have).
    c.kill(0);
    const catalog: CatalogState = { version: 1, epoch, nextId: 1, tag: 'again', volumes: [], tombstones: [id] };
    new MetaStore(new RealDisk(path.join(root, 'node1')), 'controller').write('catalog', catalog);
    await c.restart(0);
    await waitFor('the deleted volume\'s replica destroyed on node 2', () => !fs.existsSync(shardDir(id!)), 10_000);
  });
  it('a replica of a volume the catalog issued and no longer lists is destroyed without a tombstone (tombstones are bounded); one whose id it has not issued yet is kept, and one it lists', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-tombstones-'));
    c = await startCluster({ nodes: 2, hosts: 1, dataDir: root });
    const shardDir = (id: string): string => node2ShardDir(root!, id);
    const [listed, gone, newer] = (await volumesOnNode2(c, root, 3)).map((v) => v.id) as [string, string, string];
    const { epoch, tag } = (c.nodes[0] as unknown as { controller: { epoch: number; tag: string } }).controller;
    const before = new MetaStore(new RealDisk(path.join(root, 'node1')), 'controller').read<CatalogState>('catalog')!;
    // The controller's node starts again on a catalog that lists `listed` but neither of the
    // others and holds no tombstone of either: `gone`'s was dropped (tombstones are kept by the
    // thousand), and `newer` was issued after this catalog was written (an older copy of it, restored).
    c.kill(0);
    const issuedBelow = parseInt(newer.slice(1, newer.indexOf('-')), 36);
    assert.ok(parseInt(gone.slice(1, gone.indexOf('-')), 36) < issuedBelow);
    const volumes = before.volumes.filter((v) => v.id === listed);
    assert.equal(volumes.length, 1);
    const catalog: CatalogState = { version: 1, epoch: epoch + 1, nextId: issuedBelow, tag, volumes, tombstones: [] };
    new MetaStore(new RealDisk(path.join(root, 'node1')), 'controller').write('catalog', catalog);
    await c.restart(0);
    await waitFor(`the replica of ${gone} destroyed on node 2`, () => !fs.existsSync(shardDir(gone)), 15_000);
    // By the same reconciliation, `newer` is kept.
    type NodePeek = { reconciledEpoch: number; nodeMeta: { shards: ShardAssignment[] } };
    const n2 = c.nodes[1] as unknown as NodePeek;
    await waitFor('node 2 reconciled with the catalog', () => n2.reconciledEpoch === epoch + 1, 10_000);
    assert.ok(fs.existsSync(shardDir(newer)), `${newer} kept`);
    assert.ok(n2.nodeMeta.shards.some((a) => a.volumeId === newer));
    assert.ok(fs.existsSync(shardDir(listed)), `${listed} kept`);
    assert.ok(n2.nodeMeta.shards.some((a) => a.volumeId === listed));
    assert.equal(n2.nodeMeta.shards.some((a) => a.volumeId === gone), false);
  });

  it('files of a replica the node forgot but did not destroy (a crash between the two) are destroyed when the catalog neither lists nor places it; files of another catalog or of an id not issued yet are kept', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-tombstones-'));
    c = await startCluster({ nodes: 2, hosts: 1, dataDir: root });
    const shardDir = (id: string): string => node2ShardDir(root!, id);
    const vols = await volumesOnNode2(c, root, 2);
    const [forgot, kept] = vols.map((v) => v.id) as [string, string];
    const { epoch, tag, nextId } = (c.nodes[0] as unknown as { controller: { epoch: number; tag: string; nextId: number } }).controller;
    const before = new MetaStore(new RealDisk(path.join(root, 'node1')), 'controller').read<CatalogState>('catalog')!;
    c.kill(0);
    c.kill(1);
    // The catalog lists `kept` and no longer `forgot`, without its tombstone; node 2 has forgotten
    // `forgot` too (its record gone, its files left: a crash between the two).
    const catalog: CatalogState = { version: 1, epoch: epoch + 1, nextId, tag, volumes: before.volumes.filter((v) => v.id !== forgot), tombstones: [] };
    new MetaStore(new RealDisk(path.join(root, 'node1')), 'controller').write('catalog', catalog);
    const nodeMeta = new MetaStore(new RealDisk(path.join(root, 'node2')), '', { payloadBytesMax: 16 * 1024 * 1024 });
    const rec = nodeMeta.read<{ shards: ShardAssignment[] }>('node')!;
    nodeMeta.write('node', { ...rec, shards: rec.shards.filter((a) => a.volumeId !== forgot) });
    // Directories of the same shape: another catalog's volume, and one of an id this catalog has not issued.
    const foreign = `v1-elsewhere`;
    const notIssued = `v${nextId.toString(36)}-${tag}`;
    for (const id of [foreign, notIssued]) fs.cpSync(shardDir(forgot), shardDir(id), { recursive: true });
    await c.restart(0);
    await c.restart(1);
    await waitFor(`the forgotten files of ${forgot} destroyed on node 2`, () => !fs.existsSync(shardDir(forgot)), 15_000);
    for (const id of [kept, foreign, notIssued]) assert.ok(fs.existsSync(shardDir(id)), `${id} kept`);
    // The volume the catalog lists still serves from node 2.
    assert.equal((await c.client.volume(vols[1]!.name).readPages([0])).pages.length, 1);
  });

  it("a replica of another catalog's volume is kept, whatever ids the catalog has issued", async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-tombstones-'));
    c = await startCluster({ nodes: 2, hosts: 1, dataDir: root });
    const shardDir = (id: string): string => node2ShardDir(root!, id);
    const [{ id }] = await volumesOnNode2(c, root, 1);
    const { epoch } = (c.nodes[0] as unknown as { controller: { epoch: number } }).controller;
    // The controller's node starts again on a catalog of another tag (a catalog created again)
    // that has issued more ids than the volume's number, lists no volume and holds no tombstone:
    // the replica is left for `strata catalog recover` to add.
    c.kill(0);
    const catalog: CatalogState = { version: 1, epoch: epoch + 1, nextId: 1000, tag: 'again', volumes: [], tombstones: [] };
    new MetaStore(new RealDisk(path.join(root, 'node1')), 'controller').write('catalog', catalog);
    await c.restart(0);
    type NodePeek = { reconciledEpoch: number; nodeMeta: { shards: ShardAssignment[] } };
    const n2 = c.nodes[1] as unknown as NodePeek;
    await waitFor('node 2 reconciled with the catalog', () => n2.reconciledEpoch === epoch + 1, 15_000);
    assert.ok(fs.existsSync(shardDir(id)), `${id} kept`);
    assert.ok(n2.nodeMeta.shards.some((a) => a.volumeId === id));
  });
});
