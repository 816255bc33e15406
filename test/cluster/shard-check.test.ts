import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { SegmentLog } from '../../storage-engine/log';
import { encodePageWrite } from '../../storage-engine/page-write';
import { RealDisk } from '../../storage-engine/real-disk';
import { RecordKind } from '../../storage-engine/record';
import { ProtocolError } from '../../messages/errors';
import { runCli } from '../support/cli';
import { waitFor } from '../support/wait';

function page(fill: number): Uint8Array {
  return new Uint8Array(4096).fill(fill);
}

describe('strata shard check (a running shard\'s replicas compared by digests of their records)', function () {
  this.timeout(90_000);
  let root: string;
  let c: InProcessCluster | undefined;
  let volumeId: string;

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-shard-check-'));
    c = await startCluster({ nodes: 3, dataDir: root, clientTimeoutMs: 10_000 });
    volumeId = (await c.client.createVolume({ name: 'db', pageCount: 256, shards: 2, stripePages: 128, replicas: 3 })).id;
  });

  after(async () => {
    await c?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  /** Every replica of shard 0 has applied the leader's commit LSN. */
  async function caughtUp(): Promise<void> {
    // Holding and having applied every committed record: the pages are compared as of the lowest
    // LSN the replicas applied, and a replica just restarted applies only once its leader tells
    // it the commit LSN.
    await waitFor('every replica of shard 0 caught up', async () => {
      const r = await c!.client.checkShard('db', 0);
      const commit = Math.max(...r.replicas.map((y) => y.commitLsn!));
      return r.replicas.every((x) => x.error === undefined && x.lastLsn === commit && x.appliedLsn === commit);
    });
  }

  it('finds the replicas the same, over the committed LSNs they all hold', async () => {
    const vol = c!.client.volume('db');
    let last = 0;
    for (let k = 1; k <= 30; k++) last = (await vol.writePages([{ page: k % 7, data: page(k) }])).lsn;
    await caughtUp();
    const r = await c!.client.checkShard('db', 0);
    assert.equal(r.differs, undefined);
    assert.deepEqual(r.range, { fromLsn: 1, toLsn: last });
    assert.equal(r.replicas.length, 3);
    assert.ok(r.replicas.every((x) => x.digest === r.replicas[0]!.digest && x.digest !== undefined));
    assert.deepEqual(r.replicas.map((x) => x.role).sort(), ['follower', 'follower', 'leader']);
    const cli = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db', '0']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, new RegExp(`^shard 0 of db \\(${volumeId}\\): committed LSNs 1\\.\\.${last}, 1 step\\(s\\): the same\\n`));
    // Their pages too, as of an LSN every replica applied: shard 0's 128 pages (stripes of 128, 2 shards).
    const p = (await c!.client.checkShard('db', 0, { pages: true })).pages!;
    assert.equal(p.differs, undefined, JSON.stringify(p));
    assert.equal(p.compared, 128);
    assert.ok(p.lsn! >= 1 && p.lsn! <= last);
    const cliPages = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db', '0', '--pages']);
    assert.equal(cliPages.code, 0, cliPages.stderr);
    assert.match(cliPages.stdout, /\npages as of LSN \d+, 1 step\(s\): 128 compared, the same\n$/);
    // Of a shard no write went to: its first record (a new leader's no-op) on every replica.
    assert.equal((await c!.client.checkShard('db', 1)).differs, undefined);
    // Without SHARD: every shard of the volume.
    const all = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db']);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /^shard 0 of db .*: the same\n[^]*\nshard 1 of db .*: the same\n/);
    const json = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db', '--json']);
    assert.deepEqual((JSON.parse(json.stdout) as Array<{ shard: number }>).map((x) => x.shard), [0, 1]);
    await assert.rejects(c!.client.checkShard('db', 2), (e: unknown) => e instanceof ProtocolError && e.code === 'out_of_range');
    await assert.rejects(c!.client.checkShard('nope', 0), (e: unknown) => e instanceof ProtocolError && e.code === 'not_found');
    const bad = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db', 'x']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^strata: usage: SHARD: expected a non-negative integer, got "x"\n/);
  });

  it('finds the first committed record that differs on one replica, and exits 1', async () => {
    const vol = c!.client.volume('db');
    let last = 0;
    for (let k = 1; k <= 10; k++) last = (await vol.writePages([{ page: 100 + k, data: page(k) }])).lsn;
    await caughtUp();
    // A follower's node stopped, the record at `target` of its replica rewritten with other bytes
    // in the same term (as damage that no checksum catches would leave it), the node started.
    const before = await c!.client.checkShard('db', 0);
    const follower = c!.dataDirs.findIndex((_, i) => before.replicas.find((x) => x.node === `n${i + 1}`)?.role === 'follower');
    await c!.stopNode(follower);
    const target = last - 4;
    const disk = new RealDisk(path.join(c!.dataDirs[follower]!, 'dev0', 'shards', `${volumeId}.0`));
    const log = SegmentLog.open(disk, { dir: 'log' });
    const kept = log.read(target + 1, log.lastLsn);
    const term = log.termAt(target);
    log.truncateSuffix(target);
    log.write([{ term, kind: RecordKind.PageWrite, payload: encodePageWrite(4096, [{ page: 5, data: page(0xee) }]) }, ...kept.map((r) => ({ term: r.term, kind: r.kind, payload: r.payload }))]);
    log.sync();
    log.close();
    disk.closeAll();
    await c!.restart(follower);
    await caughtUp();
    const r = await c!.client.checkShard('db', 0);
    assert.equal(r.differs?.lsn, target, JSON.stringify(r));
    const digests = Object.values(r.differs!.digests);
    assert.equal(new Set(digests).size, 2, 'the changed replica\'s record differs from the two others');
    assert.ok(r.steps > 2, 'halved down to the LSN');
    const cli = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db', '0']);
    assert.equal(cli.code, 1);
    assert.match(cli.stdout, new RegExp(`: DIFFER at LSN ${target}: `));
    assert.match(cli.stderr, new RegExp(`^strata: corruption: the replicas of shard 0 of db hold different records at LSN ${target}\\n$`));
    // Every shard: shard 1 the same, shard 0 not: exit 1.
    const all = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db']);
    assert.equal(all.code, 1);
    assert.match(all.stdout, /\nshard 1 of db .*: the same\n/);
    assert.match(all.stderr, new RegExp(`^strata: corruption: the replicas of shard 0 of db hold different records at LSN ${target}\\n$`));
    // Their pages: the changed record wrote page 5 with other bytes on that replica.
    const p = (await c!.client.checkShard('db', 0, { pages: true })).pages!;
    assert.equal(p.differs?.page, 5, JSON.stringify(p));
    assert.equal(new Set(Object.values(p.differs!.digests)).size, 2);
    const cliPages = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db', '0', '--pages']);
    assert.equal(cliPages.code, 1);
    assert.match(cliPages.stdout, /\npages as of LSN \d+, \d+ step\(s\): DIFFER at page 5: /);
    assert.match(cliPages.stderr, /\nstrata: corruption: the replicas of shard 0 of db read different data at page 5 as of LSN \d+\n$/);
  });

  it('waits for a replica behind the commit LSN before it compares, and names one that stays behind', async () => {
    const vol = c!.client.volume('db');
    const before = await c!.client.checkShard('db', 1);
    const follower = before.replicas.find((x) => x.role === 'follower')!.node;
    const cutOff = Number(follower.slice(1)) - 1;
    await c!.partition([[cutOff]]);
    try {
      let last = 0;
      for (let k = 1; k <= 10; k++) last = (await vol.writePages([{ page: 128 + k, data: page(0x40 + k) }])).lsn;
      // Cut off for longer than the wait: compared as far as it holds and has applied, and named.
      const short = await c!.client.checkShard('db', 1, { pages: true, waitMs: 1_000 });
      assert.deepEqual(short.waited?.behind, [follower], JSON.stringify(short));
      assert.ok(short.waited!.target >= last && short.waited!.ms >= 1_000, JSON.stringify(short.waited));
      assert.ok(short.range!.toLsn < last && short.pages!.lsn! < last, JSON.stringify(short));
      assert.equal(short.differs, undefined);
      const cli = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db', '1', '--pages', '--wait-ms', '1000']);
      assert.equal(cli.code, 0, cli.stderr);
      assert.match(cli.stdout, new RegExp(`\\nwaited \\d+ ms: ${follower} still behind LSN \\d+ \\(compared as far as every replica holds and has applied\\)\\npages as of LSN \\d+, `));
      // Back while the check waits: compared up to what was committed when it began.
      const checking = c!.client.checkShard('db', 1, { pages: true, waitMs: 30_000 });
      await new Promise((resolve) => setTimeout(resolve, 500));
      await c!.heal();
      const r = await checking;
      assert.deepEqual(r.waited?.behind, [], JSON.stringify(r));
      assert.ok(r.range!.toLsn >= last && r.pages!.lsn! >= last, JSON.stringify(r));
      assert.equal(r.pages!.differs, undefined);
      assert.equal(r.pages!.compared, 128);
      // Nobody behind: no wait to tell of.
      assert.equal((await c!.client.checkShard('db', 1, { pages: true })).waited, undefined);
    } finally {
      await c!.heal();
    }
    for (const [bad, why] of [['-1', 'expected a non-negative integer, got "-1"'], ['60001', 'expected 0..60000, got 60001']]) {
      const cli = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db', '1', '--wait-ms', bad!]);
      assert.equal(cli.code, 2, bad);
      assert.ok(cli.stderr.startsWith(`strata: usage: --wait-ms: ${why}\n`), cli.stderr);
    }
    await assert.rejects(c!.client.checkShard('db', 1, { waitMs: 60_001 }), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request');
  });

  it('names a replica whose node does not answer and compares the others; with one left, exits 1', async () => {
    c!.kill(2);
    const r = await c!.client.checkShard('db', 1);
    assert.match(r.replicas.find((x) => x.node === 'n3')!.error!, /no responders on strata\.test\.node\.n3\.shard\.digest/);
    assert.ok(r.range !== undefined && r.differs === undefined);
    // The pages of the two that answer: shard 1's 128.
    assert.equal((await c!.client.checkShard('db', 1, { pages: true })).pages?.compared, 128);
    c!.kill(1);
    assert.deepEqual((await c!.client.checkShard('db', 1, { pages: true })).pages, { compared: 0, steps: 0, skipped: 'fewer than two replicas answered' });
    const cli = await runCli(['--nats', c!.natsUrl, '--cluster', c!.cluster, 'shard', 'check', 'db', '1']);
    assert.equal(cli.code, 1);
    assert.match(cli.stdout, /nothing compared/);
    assert.match(cli.stderr, /^strata: unavailable: fewer than two replicas of shard 1 of db answered: nothing compared\n$/);
  });
});
