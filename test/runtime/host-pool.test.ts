import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { HostConfig } from '../../runtime/actor-host';
import type { ShardSpec } from '../../runtime/device-host';
import { HOST_HEAP_INITIAL_MIB_MAX, HOST_OPENS_AT_ONCE, HostPool } from '../../runtime/host-pool';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { waitFor } from '../support/wait';

describe('HostPool options', () => {
  it('rejects a host heap size outside 0..HOST_HEAP_INITIAL_MIB_MAX MiB before starting any host', async () => {
    // Never started: the options are checked first, so the config's content does not matter.
    const hosts = [{ hostId: 0 } as HostConfig];
    for (const heapInitialMiB of [-1, 1.5, HOST_HEAP_INITIAL_MIB_MAX + 1, Number.NaN]) {
      await assert.rejects(HostPool.start({ hosts, heapInitialMiB }), (e: Error) => {
        assert.ok(e instanceof RangeError, String(e));
        assert.match(e.message, /^heapInitialMiB must be an integer in 0\.\.65536/);
        return true;
      });
    }
  });

  it('refuses a node of no host', async () => {
    await assert.rejects(HostPool.start({ hosts: [] }), (e: Error) => e.message === 'a node needs at least one host');
  });
});

describe('HostPool supervision', function () {
  this.timeout(60_000);
  let server: NatsServerHandle;
  let dir: string;
  let pool: HostPool | undefined;
  before(async () => {
    server = await startNatsServer({ jetstream: false });
  });
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-pool-test-'));
  });
  afterEach(async () => {
    await pool?.stop();
    pool = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });
  after(async () => {
    await server?.stop();
  });

  const host = (deviceDir: string): HostConfig => ({ hostId: 0, hostCount: 1, nodeId: 'n1', cluster: 'pooltest', natsUrl: server.url, deviceDir });

  it('a host that cannot start is down with the reason its start failed, and is started again after a back-off once the cause is gone', async () => {
    const dev = path.join(dir, 'dev0');
    const exits: Array<{ restarting: boolean; err: string | undefined }> = [];
    pool = await HostPool.start({
      hosts: [host(dev)],
      restartsMax: 2,
      respawnMsMin: 500,
      onHostExit: (_id, _code, restarting, err) => exits.push({ restarting, err: err?.message }),
    });
    await pool.openShard(0, { volumeId: 'v8', volumeName: 'v8', shard: 1, shards: 2, pageCount: 64, pageSize: 4096, stripePages: 16, members: ['n1'] });
    assert.deepEqual((await pool.replicaRoles()).down, [], 'its replica serves');
    // Its device cannot be opened for a while: every start fails.
    fs.renameSync(dev, `${dev}.away`);
    fs.writeFileSync(dev, 'not a directory');
    await pool.crashHost(0);
    await waitFor('the host down after its restarts', async () => /starting it again in/.test((await pool!.stats())[0]!.down ?? ''), 20_000);
    const down = (await pool.stats())[0]!.down!;
    assert.match(down, /ENOTDIR/, `the reason its start failed: ${down}`);
    assert.ok(exits.some((e) => !e.restarting), 'told that it is down');
    assert.ok(exits.slice(1).every((e) => e.err !== undefined && /ENOTDIR/.test(e.err)), `each failed start's exit says why: ${JSON.stringify(exits)}`);
    assert.equal((await pool.health())[0]!.ok, false);
    assert.deepEqual((await pool.replicaRoles()).down, [{ volumeId: 'v8', shard: 1 }], 'the replica of a host that is down is down');
    // The cause goes: the next start after the back-off works, and nothing says it is down.
    fs.rmSync(dev);
    fs.renameSync(`${dev}.away`, dev);
    await waitFor('the host started again', async () => (await pool!.stats())[0]!.down === undefined && (await pool!.health())[0]!.ok, 20_000);
    await waitFor('its replica reopened', async () => (await pool!.replicaRoles()).down.length === 0, 20_000);
    await pool.checkpointAll();
  });

  it('a call naming a host the node does not have is refused, naming it', async () => {
    pool = await HostPool.start({ hosts: [host(path.join(dir, 'dev0'))] });
    const spec = { volumeId: 'v9', volumeName: 'v9', shard: 0, shards: 1, pageCount: 64, pageSize: 4096 as const, stripePages: 16, members: ['n1'] };
    for (const call of [() => pool!.openShard(1, spec), () => pool!.failFsync(1, 1), () => pool!.stallHost(1, 0)]) {
      await assert.rejects(call(), (e: Error) => e.message === 'no host 1');
    }
    assert.deepEqual((await pool.replicaRoles()).down, [], 'nothing was opened');
  });

  it('a shard whose storage cannot be opened fails its open with the reason, and is opened again with a back-off once the cause is gone', async () => {
    const dev = path.join(dir, 'dev0');
    const failures: string[] = [];
    pool = await HostPool.start({ hosts: [host(dev)], onShardReopenFailed: (_id, _spec, err, retrying) => failures.push(`${retrying}: ${err.message}`) });
    // A file where the shard's directory goes.
    const shardDir = path.join(dev, 'shards', 'v9.0');
    fs.writeFileSync(shardDir, 'in the way');
    const spec = { volumeId: 'v9', volumeName: 'v9', shard: 0, shards: 1, pageCount: 64, pageSize: 4096 as const, stripePages: 16, members: ['n1'] };
    await assert.rejects(pool.openShard(0, spec), (e: Error & { code?: string }) => {
      assert.match(e.message, /ENOTDIR|EEXIST/);
      return true;
    });
    const state = async (): Promise<string | undefined> => (await pool!.stats())[0]!.device?.shards.find((x) => x.volumeId === 'v9')?.state;
    assert.equal(await state(), 'down', 'known, and down');
    assert.deepEqual((await pool.replicaRoles()).down, [{ volumeId: 'v9', shard: 0 }]);
    await waitFor('a retry that failed too', () => failures.length > 0, 10_000);
    assert.match(failures[0]!, /^true: /, 'retried, not forgotten');
    // The retries after it fail the same way: told once, not at each (a log line a retry).
    const attempts = (): number => (pool as unknown as { slots: Array<{ reopenAttempts: number }> }).slots[0]!.reopenAttempts;
    await waitFor('two more retries', () => attempts() >= 3, 15_000);
    assert.equal(failures.length, 1, failures.join('\n'));
    fs.rmSync(shardDir);
    await waitFor('the shard opened by a later retry', async () => (await state()) === 'up', 15_000);
    // The retry's call returns once the sole copy leads: nothing is left to reopen then.
    await waitFor('the retry done', async () => (await pool!.stats())[0]!.reopensPending === 0, 15_000);
    assert.deepEqual((await pool.replicaRoles()).down, []);
    // Opened by that retry, its storage exists from then on: a restarted host that finds it gone
    // reports it lost (ShardSpec.existing), and a sole copy then waits for an operator.
    const repairing = async (): Promise<boolean | undefined> => (await pool!.stats())[0]!.device?.shards.find((x) => x.volumeId === 'v9')?.repairing;
    assert.equal(await repairing(), false);
    fs.rmSync(shardDir, { recursive: true, force: true });
    await pool.crashHost(0);
    await waitFor('reopened by the restarted host, as lost', async () => (await repairing()) === true, 15_000);
  });

  it('a shard closed while its open fails is not tried again: nothing left pending, no retry timer', async () => {
    const dev = path.join(dir, 'dev0');
    pool = await HostPool.start({ hosts: [host(dev)] });
    fs.mkdirSync(path.join(dev, 'shards'), { recursive: true });
    fs.writeFileSync(path.join(dev, 'shards', 'v8.0'), 'in the way');
    const spec = { volumeId: 'v8', volumeName: 'v8', shard: 0, shards: 1, pageCount: 64, pageSize: 4096 as const, stripePages: 16, members: ['n1'] };
    // The close goes out while the open is under way (both calls in order on the host's port);
    // the open's failure comes back after the pool forgot the shard.
    const opening = pool.openShard(0, spec).then(() => 'opened', (e: Error) => e.message);
    const closing = pool.closeShard(0, 'v8', 0, false);
    assert.match(await opening, /ENOTDIR|EEXIST/);
    await closing;
    const slot = (pool as unknown as { slots: Array<{ reopenPending: Set<string>; reopenTimer: unknown }> }).slots[0]!;
    assert.deepEqual([...slot.reopenPending], [], 'not pending');
    assert.equal(slot.reopenTimer, undefined, 'no retry armed');
    assert.equal((await pool.stats())[0]!.reopensPending, 0);
  });

  it('a host whose NATS server goes away says it is disconnected (it reconnects for ever, so it is not closed), and ok once back', async () => {
    let own = await startNatsServer({ jetstream: false });
    const port = own.port;
    try {
      pool = await HostPool.start({ hosts: [{ ...host(path.join(dir, 'dev0')), natsUrl: own.url }] });
      assert.equal((await pool.health())[0]!.natsConnected, true);
      await own.stop();
      await waitFor('the host to say so', async () => {
        const h = (await pool!.health())[0]!;
        return !h.natsConnected && !h.ok && h.reason === 'NATS disconnected';
      }, 15_000);
      own = await startNatsServer({ jetstream: false, port });
      await waitFor('connected again', async () => (await pool!.health())[0]!.ok, 20_000);
    } finally {
      await pool?.stop();
      pool = undefined;
      await own.stop();
    }
  });

  it('a restarted host reopens its shards HOST_OPENS_AT_ONCE at a time in the order it had them, the others served when one fails', async () => {
    const dev = path.join(dir, 'dev0');
    const failures: string[] = [];
    pool = await HostPool.start({ hosts: [host(dev)], onShardReopenFailed: (_id, spec, err, retrying) => failures.push(`${spec.volumeId} ${retrying}: ${err.message}`) });
    const ids = Array.from({ length: 3 * HOST_OPENS_AT_ONCE }, (_, i) => `v${i}`);
    for (const id of ids) await pool.openShard(0, { volumeId: id, volumeName: id, shard: 0, shards: 1, pageCount: 64, pageSize: 4096, stripePages: 16, members: ['n1'] });
    assert.deepEqual((await pool.replicaRoles()).down, []);
    // The storage of one shard cannot be opened once the host restarts: a file where its directory was.
    const failing = ids[5]!;
    const asked: string[] = [];
    let inFlight = 0;
    let inFlightMax = 0;
    const proto = HostPool.prototype as unknown as { reopenOne: (this: HostPool, ...args: unknown[]) => Promise<void> };
    const real = proto.reopenOne;
    proto.reopenOne = async function (this: HostPool, ...args: unknown[]) {
      asked.push(String(args[2]).split('.')[0]!);
      inFlightMax = Math.max(inFlightMax, ++inFlight);
      try {
        return await real.apply(this, args);
      } finally {
        inFlight--;
      }
    };
    try {
      await pool.crashHost(0);
      const shardDir = path.join(dev, 'shards', `${failing}.0`);
      fs.rmSync(shardDir, { recursive: true });
      fs.writeFileSync(shardDir, 'in the way');
      await waitFor('every shard asked again', () => asked.length >= ids.length, 20_000);
      await waitFor('the others served', async () => {
        const down = (await pool!.replicaRoles()).down;
        return down.length === 1 && down[0]!.volumeId === failing;
      }, 20_000);
    } finally {
      proto.reopenOne = real;
    }
    assert.deepEqual(asked.slice(0, ids.length), ids, 'in the order the host had them');
    assert.equal(inFlightMax, HOST_OPENS_AT_ONCE);
    assert.match(failures[0] ?? '', new RegExp(`^${failing} true: .*(ENOTDIR|EEXIST)`), 'the one that failed reported, and to be tried again');
    assert.equal((await pool.stats())[0]!.reopensPending, 1);
  });

  it('a close and an open asked while a restarted host reopens its shards for longer than its start deadline are done, not timed out (no shard left open but forgotten, or recorded and never opened)', async () => {
    pool = await HostPool.start({ hosts: [host(path.join(dir, 'dev0'))], startTimeoutMs: 5000 });
    const spec = (id: string): ShardSpec => ({ volumeId: id, volumeName: id, shard: 0, shards: 1, pageCount: 64, pageSize: 4096, stripePages: 16, members: ['n1'] });
    for (const id of ['slow', 'closed']) await pool.openShard(0, spec(id));
    // The reopen of shard `slow` waits until released (a struggling disk, thousands of shards
    // before it): at the latest 12 s, past the 5 s start deadline.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
      setTimeout(resolve, 12_000).unref();
    });
    let released = false;
    void gate.then(() => (released = true));
    const proto = HostPool.prototype as unknown as { reopenOne: (this: HostPool, ...args: unknown[]) => Promise<void> };
    const real = proto.reopenOne;
    proto.reopenOne = async function (this: HostPool, ...args: unknown[]) {
      if (String(args[2]).startsWith('slow.')) await gate;
      return real.apply(this, args);
    };
    try {
      await pool.crashHost(0);
      // Down until reopened: the shard not reopened yet is the one left down.
      await waitFor('shard closed reopened', async () => (await pool!.stats())[0]!.mailbox.some((m) => m.volumeId === 'closed'), 20_000);
      await waitFor('only shard slow down', async () => JSON.stringify((await pool!.replicaRoles()).down) === JSON.stringify([{ volumeId: 'slow', shard: 0 }]), 20_000);
      const health = await pool.health();
      assert.equal(health[0]!.ok, false, 'not well while it reopens');
      assert.equal(health[0]!.reason, 'reopening its shards (1 not open yet)');
      await pool.closeShard(0, 'closed', 0, false);
      await pool.openShard(0, spec('added'));
      assert.equal(released, false, 'done while the reopen still ran');
    } finally {
      release();
      proto.reopenOne = real;
    }
    await waitFor('the reopen done', async () => (await pool!.health())[0]!.ok, 20_000);
    const open = (await pool.stats())[0]!.mailbox.map((m) => m.volumeId).sort();
    assert.deepEqual(open, ['added', 'slow']);
    // The pool's list is the host's: a restart opens the same shards again.
    await pool.crashHost(0);
    await waitFor('the host back', async () => (await pool!.health())[0]!.ok, 20_000);
    assert.deepEqual((await pool.stats())[0]!.mailbox.map((m) => m.volumeId).sort(), ['added', 'slow']);
  });

  it('a host that starts and then dies again and again backs off longer each time', async () => {
    pool = await HostPool.start({ hosts: [host(path.join(dir, 'dev0'))], restartsMax: 1, respawnMsMin: 300 });
    const delays: string[] = [];
    for (let round = 0; round < 3; round++) {
      // Dies at once after each start (as one that crashes reopening a shard would).
      await waitFor('the host to be down', async () => {
        const st = (await pool!.stats())[0]!;
        if (st.down === undefined && st.device !== undefined) await pool!.crashHost(0);
        return /starting it again in/.test(st.down ?? '');
      }, 20_000);
      delays.push(/starting it again in ([\d.]+) s/.exec((await pool.stats())[0]!.down!)![1]!);
      await waitFor('the host started again', async () => (await pool!.stats())[0]!.down === undefined, 20_000);
    }
    assert.deepEqual(delays, ['0.3', '0.6', '1.2']);
  });

  it('a host thread that stops answering is terminated after hangMs and started again', async () => {
    const hung: number[] = [];
    const exits: boolean[] = [];
    pool = await HostPool.start({ hosts: [host(path.join(dir, 'dev0'))], hangMs: 1500, onHostHung: (id, ms) => hung.push(ms), onHostExit: (_id, _code, _restarting, _err, wasHung) => exits.push(wasHung) });
    await pool.openShard(0, { volumeId: 'v7', volumeName: 'v7', shard: 0, shards: 1, pageCount: 64, pageSize: 4096, stripePages: 16, members: ['n1'] });
    // Blocked for 20 s (a wait that does not return): without the watchdog, back only then.
    let stall: unknown;
    void pool.stallHost(0, 20_000).then(() => (stall = 'returned'), (e: unknown) => (stall = e));
    // Meanwhile it does not answer: its replicas count as down.
    assert.deepEqual((await pool.replicaRoles({ timeoutMs: 300 })).down, [{ volumeId: 'v7', shard: 0 }]);
    await waitFor('the host found hung', () => hung.length > 0, 10_000);
    assert.ok(hung[0]! >= 1500, `silent for ${hung[0]} ms`);
    await waitFor('the host started again and answering', async () => (await pool!.health({ timeoutMs: 500 }))[0]!.ok, 15_000);
    // Its thread was terminated in the stall (whose call never returned), not waited for.
    assert.ok(stall instanceof Error && (stall as { code?: string }).code === 'unavailable' && /host 0 exited/.test(stall.message), `the stalled call: ${String(stall)}`);
    const st = (await pool.stats())[0]!;
    // At least once: a thread started again on a loaded machine may miss a ping of its own.
    assert.ok(st.restarts >= 1, `the restart is counted (${st.restarts})`);
    assert.equal(st.down, undefined);
    // Its exit is told as the hang's (the node logs the hang, not the exit too).
    assert.equal(exits[0], true);
  });

  it('a host thread blocked in a disk call is not terminated by the watchdog: it answers once the disk does', async () => {
    const hung: number[] = [];
    pool = await HostPool.start({ hosts: [host(path.join(dir, 'dev0'))], hangMs: 1000, onHostHung: (id, ms) => hung.push(ms) });
    // 3 s inside a (simulated) disk call: three times hangMs; then a short stall outside one,
    // whose silence counts from the end of the disk call.
    await pool.stallHost(0, 3000, { inDisk: true });
    await pool.stallHost(0, 600);
    assert.deepEqual(hung, [], 'not taken for a hang');
    const st = (await pool.stats())[0]!;
    assert.equal(st.restarts, 0);
    assert.equal(st.down, undefined);
  });

  it('a stop waits at most callTimeoutMs for a host that does not answer, then terminates its thread', async () => {
    // Its start is not what is measured: a loaded machine may take more than a second for it.
    const late: Array<{ hostId: number; error: Error & { timeoutMs?: number } }> = [];
    const stopping = await HostPool.start({ hosts: [host(path.join(dir, 'dev0'))], callTimeoutMs: 1000, startTimeoutMs: 30_000, hangMs: 0, onHostStopTimedOut: (hostId, error) => late.push({ hostId, error }) });
    // Blocked for 20 s: it cannot take the stop before then.
    void stopping.stallHost(0, 20_000).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    await stopping.stop();
    // Its stop given up on at its deadline (callTimeoutMs), the thread terminated: not waited for to the end of the stall.
    assert.deepEqual(late.map((l) => [l.hostId, l.error.timeoutMs, l.error.message]), [[0, 1000, 'stop of host 0 timed out after 1000 ms']]);
  });

  it('a stop ends though a host thread is inside a disk call that does not return (a hung disk): its termination is waited for a bounded time', async () => {
    const fifo = path.join(dir, 'hung-disk');
    execFileSync('mkfifo', [fifo]);
    const stopping = await HostPool.start({ hosts: [host(path.join(dir, 'dev0'))], callTimeoutMs: 1000, startTimeoutMs: 30_000, hangMs: 0 });
    // The host opens the FIFO to read it: the call returns once a writer opens it, not before.
    void stopping.stallHost(0, 0, { fifo }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    try {
      const stopped = stopping.stop().then(() => 'stopped');
      const outcome = await Promise.race([stopped, new Promise((r) => setTimeout(() => r('still stopping after 10 s'), 10_000))]);
      assert.equal(outcome, 'stopped');
    } finally {
      // The thread's call returns (and the terminated thread ends) once a writer opens the FIFO.
      fs.closeSync(fs.openSync(fifo, 'w'));
    }
  });

  it('a start that fails at a later host ends the threads it began before it fails, with no unhandled rejection', async () => {
    const proto = HostPool.prototype as unknown as { spawn: (this: HostPool, slot: { config: HostConfig }) => Promise<void> };
    const real = proto.spawn;
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    let first: { worker?: { threadId: number } } | undefined;
    proto.spawn = function (this: HostPool, slot) {
      if (slot.config.hostId === 1) throw new Error('simulated: no thread can be created');
      first = slot as unknown as { worker?: { threadId: number } };
      return real.call(this, slot);
    };
    try {
      const hosts = [0, 1].map((hostId) => ({ ...host(path.join(dir, `dev${hostId}`)), hostId, hostCount: 2 }));
      await assert.rejects(HostPool.start({ hosts }), /simulated: no thread can be created/);
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(unhandled, []);
      assert.equal(first?.worker, undefined, 'the first host\'s thread ended before the start failed');
    } finally {
      proto.spawn = real;
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('a call in flight to a host whose thread exits fails at once, not at its deadline', async () => {
    pool = await HostPool.start({ hosts: [host(path.join(dir, 'dev0'))], callTimeoutMs: 20_000 });
    // A call the host has not answered yet (it stalls for 5 s) when its thread ends.
    const inFlight = pool.stallHost(0, 5000).then(
      () => assert.fail('a thread that was terminated answers nothing'),
      (e: Error & { code?: string }) => e,
    );
    await new Promise((r) => setTimeout(r, 100));
    await pool.crashHost(0);
    const err = await inFlight;
    // At its deadline it would fail `timeout` ("call to host 0 timed out after 20000 ms").
    assert.equal(err.code, 'unavailable', err.message);
    assert.match(err.message, /host 0 exited/);
    await waitFor('the host back', async () => (await pool!.health())[0]!.ok, 20_000);
  });
});
