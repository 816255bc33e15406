/**
 * Answers and events that ended a node's process: an error that escapes to the main thread's top
 * level (an unhandled rejection, a throw from a timer or an event listener) ends `strata node`,
 * and every replica on the node with it. Each case was a callback of the main thread that could end it; each
 * test fails without its fix. Mocha handles unhandled rejections itself, so each test records
 * what escapes while it runs and asserts that nothing did.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { StrataNode, type StrataNodeOptions } from '../../cluster/node';
import { connect } from '../../cluster/client';
import { encode } from '../../messages/codec';
import { controllerSubject, nodeSubject } from '../../messages/control';
import { HostPool } from '../../runtime/host-pool';
import type { HostConfig } from '../../runtime/actor-host';
import { waitFor } from '../support/wait';

const CLUSTER = 'escapes';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What escapes to the top level (unhandled rejections, uncaught exceptions) while `fn` runs. */
async function escapes(fn: () => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  const saved = { rej: process.listeners('unhandledRejection'), exc: process.listeners('uncaughtException') };
  process.removeAllListeners('unhandledRejection');
  process.removeAllListeners('uncaughtException');
  const record = (e: unknown): void => void seen.push(String(e));
  process.on('unhandledRejection', record);
  process.on('uncaughtException', record);
  try {
    await fn();
  } finally {
    process.removeListener('unhandledRejection', record);
    process.removeListener('uncaughtException', record);
    for (const l of saved.rej) process.on('unhandledRejection', l as never);
    for (const l of saved.exc) process.on('uncaughtException', l as never);
  }
  return seen;
}

describe('a node\'s main thread: answers and events that ended the process', function () {
  this.timeout(60_000);
  let nats: NatsServerHandle;
  let other: NatsConnection;
  let root: string;
  const nodes: StrataNode[] = [];

  before(async () => {
    nats = await startNatsServer({ jetstream: false });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-escapes-'));
  });
  beforeEach(async () => {
    other = await natsConnect({ servers: nats.url });
  });
  afterEach(async () => {
    for (const n of nodes.splice(0)) await n.stop().catch(() => undefined);
    await other.close();
  });
  after(async () => {
    await nats?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  async function startNode(id: string, opts: Partial<StrataNodeOptions> = {}): Promise<StrataNode> {
    const n = await StrataNode.start({ nodeId: id, cluster: CLUSTER, natsUrl: nats.url, dataDir: path.join(root, id), hosts: 1, controller: false, heartbeatMs: 200, ...opts });
    nodes.push(n);
    return n;
  }

  it('an answer to the periodic claim check whose start is past what a date holds: refused as not a claim, logged; the node runs on', async () => {
    let answered = 0;
    const fatal: Error[] = [];
    const seen = await escapes(async () => {
      await startNode('c1', { claimRecheckMs: 200, onFatal: (e) => fatal.push(e) });
      other.subscribe(nodeSubject(CLUSTER, 'c1', 'claim'), {
        callback: (_e, m) => {
          answered++;
          m.respond(encode({ instance: 'other', nodeId: 'c1', hostname: 'h', pid: 1, sinceMs: Number.MAX_SAFE_INTEGER }));
        },
      });
      await other.flush();
      await waitFor('the claim was asked twice', () => answered >= 2);
      await sleep(200);
    });
    assert.deepEqual(seen, [], 'nothing escapes to the top level');
    assert.deepEqual(fatal.map(String), [], 'the node does not stop');
  });

  it('a status whose controller answers are not lists of maps: the status comes without the controller\'s part', async () => {
    const seen = await escapes(async () => {
      await startNode('s1');
      other.subscribe(controllerSubject(CLUSTER, 'members'), { callback: (_e, m) => m.respond(encode({ members: [null, 5] })) });
      other.subscribe(controllerSubject(CLUSTER, 'volume.list'), { callback: (_e, m) => m.respond(encode({ volumes: 'none' })) });
      await other.flush();
      const client = await connect({ servers: nats.url, cluster: CLUSTER, timeoutMs: 5000 });
      try {
        const status = (await client.status()) as unknown as { controllerReachable: boolean; nodes: unknown[] };
        assert.equal(status.controllerReachable, false);
        assert.equal(status.nodes.length, 1, 'the node\'s own part');
      } finally {
        await client.close();
      }
      await sleep(200);
    });
    assert.deepEqual(seen, [], 'nothing escapes to the top level');
  });

  it('a heartbeat answer whose epoch is a CBOR bignum: refused as not an answer, logged; the node runs on', async () => {
    let answered = 0;
    const seen = await escapes(async () => {
      await startNode('h1', { heartbeatMs: 100 });
      // {epoch: 1n} (CBOR tag 2); nobody answers assignments, so a reconciliation would fail and log the epoch.
      const bignumEpoch = new Uint8Array([0xa1, 0x65, ...Buffer.from('epoch'), 0xc2, 0x41, 0x01]);
      other.subscribe(controllerSubject(CLUSTER, 'heartbeat'), { callback: (_e, m) => void (answered++, m.respond(bignumEpoch)) });
      await other.flush();
      await waitFor('heartbeats were answered', () => answered >= 3);
    });
    assert.deepEqual(seen, [], 'nothing escapes to the top level');
  });
});

describe('HostPool: a thread that ends during its stop, or cannot be created again', function () {
  this.timeout(60_000);
  let server: NatsServerHandle;
  let dir: string;
  before(async () => {
    server = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-escapes-pool-'));
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a host that ends with an uncaught error while it drains for the stop: stop() resolves at its exit, not at the call deadline', async () => {
    const host: HostConfig = { hostId: 0, hostCount: 1, nodeId: 'n1', cluster: 'pool', natsUrl: server.url, deviceDir: path.join(dir, 'dev0') };
    const timedOut: number[] = [];
    const pool = await HostPool.start({ hosts: [host], callTimeoutMs: 20_000, onHostStopTimedOut: (hostId) => void timedOut.push(hostId) });
    const slot = (pool as unknown as { slots: Array<{ api: { throwUncaught(m: string): Promise<void> } }> }).slots[0]!;
    void slot.api.throwUncaught('a bug while draining').catch(() => undefined);
    const outcome = await pool.stop().then(() => 'resolved', (e: unknown) => String(e));
    assert.equal(outcome, 'resolved');
    assert.deepEqual(timedOut, [], 'the stop did not wait out its deadline');
  });

  it('a restart whose thread cannot be created (ERR_WORKER_INIT_FAILED) is tried again later: nothing escapes the exit listener', async () => {
    const host: HostConfig = { hostId: 0, hostCount: 1, nodeId: 'n1', cluster: 'pool', natsUrl: server.url, deviceDir: path.join(dir, 'dev5') };
    const pool = await HostPool.start({ hosts: [host], callTimeoutMs: 5000, startTimeoutMs: 30_000, respawnMsMin: 200 });
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const threads = require('node:worker_threads') as { Worker: unknown };
    const RealWorker = threads.Worker;
    let refused = 0;
    const seen = await escapes(async () => {
      // What Node throws when it cannot create a thread (EAGAIN: thread or memory limits).
      threads.Worker = function (): never {
        refused++;
        throw Object.assign(new Error('Worker initialization failure: EAGAIN'), { code: 'ERR_WORKER_INIT_FAILED' });
      };
      try {
        void pool.crashHost(0).catch(() => undefined);
        await waitFor('the restart was refused, and tried again', () => refused >= 2);
      } finally {
        threads.Worker = RealWorker;
      }
    });
    assert.deepEqual(seen, [], 'nothing escapes to the top level');
    await waitFor('the host runs again once threads can be created', async () => (await pool.stats({ timeoutMs: 1000 }).catch(() => [] as Array<{ up?: boolean }>)).length > 0 && (pool as unknown as { slots: Array<{ worker?: unknown; ready?: unknown }> }).slots[0]!.worker !== undefined);
    await pool.stop();
  });
});
