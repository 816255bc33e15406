import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { runSoak, soakPage, soakValue, parseSoakArgs, formatSoak, failureIsProblem, SOAK_DEFAULTS } from '../soak/soak';
import { ProtocolError } from '../../messages/errors';
import { BLOCKS, BLOCK_VOLUME, startBlockWorkload } from '../soak/blocks';
import { startCluster } from '../../cluster/in-process-cluster';
import { waitFor } from '../support/wait';

describe('soak: the pages it writes and reads', () => {
  it('reads back the value a page was written with, and zeros as never written', () => {
    assert.equal(soakValue(soakPage(4096, 'w3.17.p9')), 'w3.17.p9');
    assert.equal(soakValue(new Uint8Array(4096)), '');
  });

  it('a page with one byte changed, or cut short, reads as corrupt, which no write wrote', () => {
    const page = soakPage(4096, 'w1.2.p3');
    for (const at of [0, 3, 7, 8, 2000, 4095]) {
      const bad = page.slice();
      bad[at]! ^= 0x01;
      assert.match(soakValue(bad), /^corrupt:/, `byte ${at} flipped`);
    }
    const torn = page.slice();
    torn.fill(0, 2048);
    assert.match(soakValue(torn), /^corrupt:/, 'the second half zeroed (a torn write)');
    // Another write's page with this value's head is refused too.
    const mixed = soakPage(4096, 'w1.2.p4');
    mixed.set(new TextEncoder().encode('w1.2.p3'));
    assert.match(soakValue(mixed), /^corrupt:/);
  });
});

describe('soak: which failed calls are problems of the run', () => {
  it('a code of a cluster under faults is an unknown outcome; one that says the call was wrong, or an error that is not a protocol error (a bug), is a problem', () => {
    for (const code of ['timeout', 'unavailable', 'not_leader', 'overloaded'] as const) assert.equal(failureIsProblem(new ProtocolError(code, 'x')), false, code);
    for (const code of ['corruption', 'bad_request', 'out_of_range', 'not_found'] as const) assert.equal(failureIsProblem(new ProtocolError(code, 'x')), true, code);
    assert.equal(failureIsProblem(new TypeError('cannot read properties of undefined')), true);
    assert.equal(failureIsProblem('a string thrown'), true);
  });
});

describe('soak: flags', () => {
  it('defaults, and each flag read', () => {
    assert.deepEqual(parseSoakArgs([]), SOAK_DEFAULTS);
    const o = parseSoakArgs(['--duration-ms', '5000', '--seed', '9', '--nodes', '5', '--hosts', '2', '--pages', '64', '--shards', '2', '--clients', '3', '--checkpoint-every-records', '100', '--segment-bytes-max', '65536', '--repair-after-seconds', '0', '--faults', 'kill,freeze', '--no-results', '--keep']);
    assert.deepEqual(o, { durationMs: 5000, seed: 9, nodes: 5, hosts: 2, pages: 64, shards: 2, clients: 3, checkpointEveryRecords: 100, segmentBytesMax: 65536, repairAfterSeconds: 0, faults: ['kill', 'freeze'], resultsDir: null, keep: true });
    assert.deepEqual((parseSoakArgs(['--faults', 'none']) as { faults: readonly string[] }).faults, []);
    assert.equal(parseSoakArgs(['--help']), 'help');
    assert.equal((parseSoakArgs(['--auth']) as { auth?: boolean }).auth, true);
  });

  it('refuses bad flags, naming them', () => {
    const cases: Array<[string[], RegExp]> = [
      [['--duration-ms', '999'], /--duration-ms must be an integer in 1000\.\.3600000, got 999/],
      [['--duration-ms', '1e4'], /--duration-ms must be a non-negative integer, got '1e4'/],
      [['--nodes', '2'], /--nodes must be an integer in 3\.\.5/],
      [['--hosts', '5'], /--hosts must be an integer in 1\.\.4, got 5/],
      [['--pages', '16', '--shards', '32'], /--shards \(32\) must not exceed --pages \(16\)/],
      [['--segment-bytes-max', '100'], /--segment-bytes-max must be an integer in 4096\.\./],
      [['--faults', 'kill,reboot'], /unknown fault 'reboot'/],
      [['--repair-after-seconds', '3601'], /--repair-after-seconds must be an integer in 0\.\.3600, got 3601/],
      [['--seed'], /--seed needs a value/],
      [['--seed', '--keep'], /--seed needs a value/],
      [['--verbose'], /unknown flag '--verbose'/],
    ];
    for (const [argv, re] of cases) assert.throws(() => parseSoakArgs(argv), re, argv.join(' '));
  });
});

describe('soak: a short run of node processes under kills and freezes', function () {
  this.timeout(180_000);

  it('passes every check, with faults injected and operations recorded', async () => {
    const lines: string[] = [];
    const r = await runSoak({ ...SOAK_DEFAULTS, durationMs: 10_000, seed: 3, pages: 128, shards: 2, clients: 4, faults: ['kill', 'freeze'], resultsDir: null, out: (l) => lines.push(l) });
    const summary = formatSoak(r);
    process.stdout.write(`      (${r.faults.map((f) => `${f.kind} ${f.nodes.join(',')}`).join('; ')}; ${r.operations.writesOk} writes, ${r.operations.readsOk} reads acknowledged)\n`);
    assert.ok(r.ok, summary);
    assert.ok(r.faults.length >= 1, 'the nemesis injected a fault');
    assert.ok(r.faults.every((f) => f.kind === 'kill' || f.kind === 'freeze'), 'only the faults asked for');
    assert.ok(r.operations.writesOk > 50 && r.operations.readsOk > 50, 'the clients made progress');
    assert.equal(r.finalReadPages, 128);
    // The pages written hold data (a soak page is never all zeros), checked against the final read.
    assert.ok(r.mappedPages !== undefined && r.mappedPages > 0 && r.mappedPages <= 128, `mapped ${r.mappedPages}`);
    assert.ok(r.linearizability.ok && r.linearizability.pages === 128);
    assert.ok(r.convergedMs !== undefined);
    // Every shard checked online (the two of the volume and the catalog shard), then compared once the cluster stopped (check 6).
    assert.equal(r.shardsChecked.shards, 3);
    assert.ok(r.shardsChecked.compared >= 2 && r.shardsChecked.records > 0, JSON.stringify(r.shardsChecked));
    assert.equal(r.shardsChecked.pages, 128, 'every page of the volume compared between its replicas online');
    assert.equal(r.replicasCompared.shards, 2 + 2 + 2 + 1, 'the two shards of the volume, the two of the block workload\'s, the two of the idle volume\'s, and the catalog shard');
    // The volume written before the faults and left idle reads back as written; shards quiesced meanwhile.
    assert.equal(r.idlePagesReadBack, 32);
    assert.ok(r.idleReads.ok + r.idleReads.failed >= 1, JSON.stringify(r.idleReads));
    assert.ok(r.activity.quiesces > 0, `${r.activity.quiesces} shards quiesced`);
    // The block workload wrote through NBD, and every block read back as written.
    assert.ok(r.blocks !== undefined && r.blocks.writesOk > 20, JSON.stringify(r.blocks));
    assert.equal(r.blocks.blocksChecked, BLOCKS);
    assert.ok(r.replicasCompared.replicas >= 9 && r.replicasCompared.pages > 0, JSON.stringify(r.replicasCompared));
    assert.match(summary, /soak: PASS/);
  });
});

describe('soak: its checks fail a run that lost a node', function () {
  this.timeout(120_000);

  it('a node process that exits without the nemesis is reported, and the run fails though its history is linearizable', async () => {
    let victim = '';
    const r = await runSoak({
      ...SOAK_DEFAULTS, durationMs: 3000, seed: 5, pages: 64, shards: 1, clients: 2, faults: [], resultsDir: null, out: () => undefined,
      convergeMs: 3000,
      afterStart: (c) => {
        victim = c.nodes[2]!.id;
        c.nodes[2]!.process.kill('SIGKILL');
      },
    });
    assert.equal(r.ok, false);
    assert.ok(r.problems.some((p) => p.includes(`node ${victim} (pid`) && p.includes('exited by itself (SIGKILL)')), r.problems.join('\n'));
    assert.ok(r.problems.some((p) => p === `node ${victim} is not running at the end of the faults`), r.problems.join('\n'));
    assert.ok(r.problems.some((p) => p.startsWith('the cluster did not converge within 3 s')), r.problems.join('\n'));
    // Two replicas of three still serve: every page read back, and nothing lost.
    assert.equal(r.finalReadPages, 64);
    assert.ok(r.linearizability.ok);
    assert.match(formatSoak(r), /soak: FAIL/);
    // A failed run keeps its data for inspection.
    assert.ok(fs.existsSync(r.dataDir));
    fs.rmSync(r.dataDir, { recursive: true, force: true });
  });
});

describe('soak: the block workload over NBD', function () {
  this.timeout(60_000);

  it('checks every block against its writes: a block that reads as none of them is a problem', async () => {
    const c = await startCluster({ nodes: 1, hosts: 1 });
    try {
      await c.client.createVolume({ name: BLOCK_VOLUME, pageCount: BLOCKS, shards: 2, stripePages: 8 });
      const problems: string[] = [];
      const w = await startBlockWorkload({ client: c.client, seed: 1, page: (v) => soakPage(4096, v), valueOf: soakValue, problem: (p) => problems.push(p) });
      await waitFor('writes answered', () => w.result().writesOk >= 200, 30_000);
      await w.stop();
      await w.verify();
      assert.deepEqual(problems, []);
      assert.equal(w.result().blocksChecked, BLOCKS);
      // A block written behind the workload's back, as an acknowledged write lost would look.
      await c.client.volume(BLOCK_VOLUME).write(5, soakPage(4096, 'elsewhere'));
      await w.verify();
      assert.equal(problems.length, 1, problems.join('\n'));
      assert.match(problems[0]!, /^block 5 of the NBD export reads "elsewhere": its last write answered without an error was "(b5\.\d+\.\d+)?"$/);
      await w.close();
    } finally {
      await c.stop();
    }
  });

  it('a connection that ends under the writers is a problem each writer reports, not a crash', async () => {
    const c = await startCluster({ nodes: 1, hosts: 1 });
    try {
      await c.client.createVolume({ name: BLOCK_VOLUME, pageCount: BLOCKS, shards: 1 });
      const problems: string[] = [];
      const w = await startBlockWorkload({ client: c.client, seed: 2, page: (v) => soakPage(4096, v), valueOf: soakValue, problem: (p) => problems.push(p) });
      await waitFor('writes answered', () => w.result().writesOk >= 20, 30_000);
      // The export stopped while the writers write: the requests in flight are answered or cut.
      await w.close();
      await w.stop();
      await w.verify();
      assert.ok(problems.length >= 1, 'the cut connection is reported');
      assert.ok(problems.every((p) => /the NBD connection failed|connection closed/.test(p)), problems.join('\n'));
    } finally {
      await c.stop();
    }
  });
});
