import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { connect as natsConnect } from 'nats';
import { startDevCluster, demoPage, type DevCluster } from '../../cluster/dev';
import { main } from '../../cluster/cli';

describe('strata dev: nodes as processes, one killed with SIGKILL while writing, its replicas then replaced', function () {
  this.timeout(120_000);
  let c: DevCluster | undefined;
  after(async () => {
    await c?.client.close().catch(() => undefined);
    await c?.stop();
  });

  it('every acknowledged write is read back after a node process is killed -9 mid-stream, and again once the controller moved its replicas to the fourth node (--repair-after-seconds 1)', async () => {
    c = await startDevCluster({ nodes: 4, hosts: 1, nodeArgs: ['--repair-after-seconds', '1'] });
    await c.client.createVolume({ name: 'k9', pageCount: 4096, shards: 3, stripePages: 16, replicas: 3 });
    // A new cluster is quiet: its nodes (at the default level, warn) have logged nothing so far.
    // (Its controller nodes' replicas of the catalog shard open without saved state in their new
    // data directories: said at info.)
    const loud = c.nodes.flatMap((n) => fs.readFileSync(n.log, 'utf8').split('\n').filter((l) => /"level":"(warn|error)"/.test(l)));
    assert.deepEqual(loud, [], 'no warning or error from a new cluster');
    const vol = c.client.volume('k9');
    const acked = new Set<number>();
    let next = 0;
    let stop = false;
    const writer = async (): Promise<void> => {
      while (!stop && next < 4096) {
        const page = next++;
        try {
          await vol.write(page, demoPage(4096, page, 1));
          acked.add(page);
        } catch {
          // Not acknowledged (the shard was electing a leader past the deadline): may or may not be there.
        }
      }
    };
    const writers = Array.from({ length: 8 }, () => writer());
    while (acked.size < 200) await new Promise((r) => setTimeout(r, 10));
    const victim = c.nodes[2]!;
    process.kill(victim.pid, 'SIGKILL');
    await new Promise<void>((r) => victim.process.once('exit', () => r()));
    const atKill = acked.size;
    while (acked.size < atKill + 300) await new Promise((r) => setTimeout(r, 10));
    stop = true;
    await Promise.all(writers);
    const pages = [...acked].sort((a, b) => a - b);
    const readBack = async (): Promise<void> => {
      for (let i = 0; i < pages.length; i += 64) {
        const chunk = pages.slice(i, i + 64);
        const got = (await vol.readPages(chunk)).pages;
        got.forEach((d, j) => assert.ok(Buffer.from(d).equals(Buffer.from(demoPage(4096, chunk[j]!, 1))), `acknowledged page ${chunk[j]} lost`));
      }
    };
    await readBack();
    // The killed node stays down: past the controller's live window (5 s) and the second
    // configured, each of its replicas is moved to a live node outside its shard's set.
    const client = c.client;
    const victimHeld = async (): Promise<number> => (await client.volumeInfo('k9')).replicaSets!.filter((r) => r.members.includes(victim.id) || r.moving !== undefined).length;
    const deadline = Date.now() + 60_000;
    while ((await victimHeld()) > 0) {
      assert.ok(Date.now() < deadline, `the replicas of ${victim.id} were not replaced within 60 s: ${JSON.stringify((await client.volumeInfo('k9')).replicaSets)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await readBack();
    process.stdout.write(`      (${acked.size} writes acknowledged, ${atKill} before node ${victim.id} was killed)\n`);
  });
});

describe('strata dev --auth: a nats-server that admits only the cluster\'s users', function () {
  this.timeout(60_000);
  let c: DevCluster | undefined;
  after(async () => {
    await c?.client.close().catch(() => undefined);
    await c?.stop();
  });

  it('the nodes and the client connect as their users with the password files it wrote; anyone else is refused', async () => {
    c = await startDevCluster({ nodes: 1, hosts: 1, auth: true });
    const users = c.natsUsers!;
    for (const u of Object.values(users)) assert.equal(fs.statSync(u.passwordFile).mode & 0o777, 0o600, `${u.passwordFile} is the owner's only`);
    await c.client.createVolume({ name: 'locked', pageCount: 16 });
    await c.client.volume('locked').write(3, demoPage(4096, 3, 1));
    assert.deepEqual(Buffer.from(await c.client.volume('locked').read(3)), Buffer.from(demoPage(4096, 3, 1)));
    await assert.rejects(natsConnect({ servers: c.natsUrl, timeout: 3000 }), /Authorization Violation/);
    // The CLI, as `strata dev` tells its user to run it.
    const out: string[] = [];
    const stdout = new Writable({ write: (chunk, _enc, done) => done(void out.push(String(chunk))) });
    const code = await main(['--nats', c.natsUrl, '--nats-user', users.client.user, '--nats-password-file', users.client.passwordFile, 'volume', 'list'], { stdout, env: {} });
    assert.equal(code, 0);
    assert.match(out.join(''), /^locked\t/m);
    // A node is started again only once it has stopped, and only one the cluster has.
    await assert.rejects(c.restart(0), (e: Error) => /^node n1 \(pid \d+\) is still running$/.test(e.message));
    await assert.rejects(c.restart(1), (e: Error) => e.message === 'no node 1: the cluster has 1');
  });
});

describe('strata dev: a node process that cannot be spawned', function () {
  this.timeout(30_000);

  it('fails the start at once with an error naming the node, and this process carries on', async () => {
    // The spawn failure ends the start (its message), not the 30 s wait for live nodes (whose
    // failure says so, and comes at this test's own timeout).
    await assert.rejects(
      startDevCluster({ nodes: 2, hosts: 1, execPath: '/nonexistent/strata-test-node' }),
      (e: Error) => /node n1: could not run \/nonexistent\/strata-test-node: .*ENOENT/.test(e.message),
    );
  });
});

describe('strata dev: a start that does not finish', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-dev-test-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Processes whose command line names `text`. */
  const processesWith = (text: string): string[] =>
    execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(text) && !l.includes('ps -eo'));

  it('a node process that exits during the start fails it at once, naming the node', async () => {
    // The exit ends the start (its message), not the 30 s wait for live nodes.
    await assert.rejects(startDevCluster({ nodes: 2, hosts: 1, dataDir: dir, execPath: '/bin/false' }), (e: Error) => /node n1 exited during the start \(code 1\)/.test(e.message));
  });

  it('a node process that never comes up fails the start at its deadline, and is stopped', async () => {
    // Runs as a node process and never serves (for a minute at most).
    const hang = path.join(dir, 'hang');
    fs.writeFileSync(hang, '#!/bin/sh\ni=0\nwhile [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done\n', { mode: 0o755 });
    await assert.rejects(
      startDevCluster({ nodes: 1, hosts: 1, dataDir: path.join(dir, 'data'), execPath: hang, startTimeoutMs: 1_000 }),
      (e: Error) => /^the cluster did not reach 1 live nodes within 1000 ms\n/.test(e.message),
    );
    assert.deepEqual(processesWith(dir), [], 'no node process left');
  });

  it('refuses a node count outside 1..16 before starting anything', async () => {
    const data = path.join(dir, 'data');
    for (const nodes of [0, 17, 1.5]) {
      await assert.rejects(startDevCluster({ nodes, hosts: 1, dataDir: data, startTimeoutMs: 1_000 }), (e: Error) => e.message === `--nodes must be 1..16, got ${nodes}`);
    }
    assert.equal(fs.existsSync(data), false, 'no data directory made');
  });

  it('refuses fewer than 3 nodes on a data directory a cluster of 3 or more left (its catalog replicated on n1..n3), before starting anything', async () => {
    const data = path.join(dir, 'data');
    fs.mkdirSync(path.join(data, 'n3'), { recursive: true });
    fs.writeFileSync(path.join(data, 'n3', 'node.meta'), 'a node record');
    for (const nodes of [1, 2]) {
      await assert.rejects(startDevCluster({ nodes, hosts: 1, dataDir: data, startTimeoutMs: 1_000 }), (e: Error) =>
        e.message === `${data} holds the data of a dev cluster of 3 nodes or more (n3 too), whose catalog is replicated on n1, n2 and n3: start it with --nodes 3 or more, or give another --data-dir`);
    }
    assert.deepEqual(fs.readdirSync(data), ['n3'], 'nothing started or written');
    assert.deepEqual(processesWith(dir), []);
    // A cluster of 2 started again on what it left (n1 and n2, no n3): not refused, its nodes
    // started (a program that exits at once here: the start fails naming the node).
    const two = path.join(dir, 'two');
    for (const id of ['n1', 'n2']) {
      fs.mkdirSync(path.join(two, id), { recursive: true });
      fs.writeFileSync(path.join(two, id, 'node.meta'), 'a node record');
    }
    await assert.rejects(startDevCluster({ nodes: 2, hosts: 1, dataDir: two, execPath: '/bin/false' }), (e: Error) => /node n\d exited during the start \(code 1\)/.test(e.message));
    assert.deepEqual(processesWith(dir), [], 'no node process left');
  });

  it('interrupted during the start, it stops the nats-server and the nodes it started', async () => {
    const interrupt = new AbortController();
    setTimeout(() => interrupt.abort(), 500);
    await assert.rejects(startDevCluster({ nodes: 2, hosts: 1, dataDir: dir, signal: interrupt.signal }), /interrupted/);
    assert.deepEqual(processesWith(dir), [], 'no node process left');
  });

  it('interrupted before the start, it spawns no node', async () => {
    const r = await startDevCluster({ nodes: 1, hosts: 1, dataDir: dir, signal: AbortSignal.abort() }).catch((e: Error) => e);
    if (!(r instanceof Error)) {
      await r.client.close().catch(() => undefined);
      await r.stop();
    }
    assert.ok(r instanceof Error && /^interrupted\n/.test(r.message), String(r));
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.endsWith('.log')), [], 'no node log: none was spawned');
  });

  it('strata dev stopped by SIGTERM while it starts leaves no process and no temporary directory', async () => {
    const bin = path.join(__dirname, '..', '..', '..', 'bin', 'strata');
    // A temporary directory of its own: other processes on the machine start nats-servers too.
    const tmp = path.join(dir, 'tmp');
    fs.mkdirSync(tmp);
    const natsDirs = (): string[] => fs.readdirSync(tmp).filter((n) => n.startsWith('strata-nats-'));
    const child = spawn(process.execPath, [bin, 'dev', '--nodes', '2', '--data-dir', path.join(dir, 'data')], { stdio: 'ignore', env: { ...process.env, TMPDIR: tmp } });
    // Once the nats-server's directory is there (strata dev handles signals from before it starts
    // the server): the server or the nodes are starting. A fixed wait could end before the
    // process had loaded its modules on a busy machine, and the signal then ended it untouched.
    const until = Date.now() + 30_000;
    while (natsDirs().length === 0 && child.exitCode === null) {
      assert.ok(Date.now() < until, 'strata dev started no nats-server within 30 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    assert.ok(code === 130 || code === 0, `exit code ${String(code)}: interrupted (130), or stopped once up (0)`);
    assert.deepEqual(processesWith(dir), [], 'no node process left');
    assert.deepEqual(natsDirs(), [], 'the nats-server\'s directory removed');
  });
});

describe('strata dev: a NATS user or controller nodes named in the environment (for the commands and nodes of another cluster)', function () {
  this.timeout(60_000);
  const names = ['STRATA_NATS_USER', 'STRATA_NATS_PASSWORD_FILE', 'STRATA_CONTROLLERS'] as const;
  const saved = names.map((n) => process.env[n]);
  after(() => names.forEach((n, i) => (saved[i] === undefined ? delete process.env[n] : (process.env[n] = saved[i]))));

  it('is not the nodes\': they connect to the server strata dev runs, which asks for none, and node 1 alone of one runs the controller', async () => {
    process.env.STRATA_NATS_USER = 'strata-client';
    process.env.STRATA_NATS_PASSWORD_FILE = path.join(os.tmpdir(), 'strata-dev-test-no-such-password-file');
    // Three controller nodes, two of which this cluster of one does not have: n1 would wait for them.
    process.env.STRATA_CONTROLLERS = 'n1,n2,n3';
    const c = await startDevCluster({ nodes: 1, hosts: 1 });
    try {
      assert.deepEqual(await c.client.listVolumes(), []);
    } finally {
      await c.client.close().catch(() => undefined);
      await c.stop();
    }
  });
});
