import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect } from 'nats';
import { ActorHost } from '../../runtime/actor-host';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { encode } from '../../messages/codec';
import { ProtocolError, errorReply } from '../../messages/errors';
import { replicaSubject } from '../../messages/raft';
import { timersHeld } from '../support/manual-clock';

/** What a host gives a replica to reach its peers (ActorHost.transport, private). */
interface Transport {
  send(to: string, msg: unknown, timeoutMs: number): Promise<unknown>;
  sendEach(to: readonly string[], msg: unknown, timeoutMs: number): Promise<unknown>[];
}
const spec = { volumeId: 'v1', volumeName: 'v1', shard: 0, shards: 1, pageCount: 64, pageSize: 4096 as const, stripePages: 16, members: ['n1', 'n2', 'n3'] };
const transportOf = (host: ActorHost, s: typeof spec): Transport => (host as unknown as { transport(s: typeof spec): Transport }).transport(s);

describe('replication transport of a host', function () {
  this.timeout(60_000);
  let server: NatsServerHandle;
  let dir: string;
  let host: ActorHost | undefined;
  before(async () => {
    server = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-transport-'));
  });
  after(async () => {
    await host?.stop();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a send whose delay is longer than its timeout fails with timeout at its timeout, as over a slow network', async () => {
    host = new ActorHost();
    await host.init({ hostId: 0, hostCount: 1, nodeId: 'n1', cluster: 'delay', natsUrl: server.url, deviceDir: path.join(dir, 'dev0'), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
    await host.setFaults({ delayMs: 3000 });
    const transport = transportOf(host, spec);
    // The timers the send sets are held here, and fire when the test says: a manual clock.
    const { value: sent, timers } = timersHeld((): Promise<unknown> => transport.send('n2', { type: 'prevote', term: 1, candidate: 'n1', lastLsn: 0, lastTerm: 0 }, 200));
    const outcome = sent.then(() => 'answered', (e: unknown) => e);
    // It waits its timeout, not the delay.
    assert.deepEqual(timers.map((t) => t.ms), [200], 'one wait, of its timeout');
    timers[0]!.fire();
    const err = await outcome;
    assert.ok(err instanceof ProtocolError && err.code === 'timeout' && err.message === 'replica n2 did not answer within 200 ms (delayed 3000 ms)', String(err));
  });

  /** A started host of node n1 on the cluster `cluster` (its device under `deviceDir`). */
  async function started(cluster: string, deviceDir: string): Promise<ActorHost> {
    const h = new ActorHost();
    await h.init({ hostId: 0, hostCount: 1, nodeId: 'n1', cluster, natsUrl: server.url, deviceDir: path.join(dir, deviceDir), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
    return h;
  }

  const prevote = { type: 'prevote', term: 1, candidate: 'n1', lastLsn: 0, lastTerm: 0 };

  it('a send to a peer made unreachable, or dropped, fails with timeout naming it, and nothing reaches the peer', async () => {
    const h = await started('unreachable', 'dev2');
    const nc = await natsConnect({ servers: server.url });
    try {
      let heard = 0;
      nc.subscribe(replicaSubject('unreachable', 'v1', 0, 'n2'), { callback: () => heard++ });
      nc.subscribe(replicaSubject('unreachable', 'v1', 0, 'n3'), { callback: () => heard++ });
      await nc.flush();
      const transport = transportOf(h, spec);
      const outcome = (to: string): Promise<unknown> => transport.send(to, prevote, 2000).then(() => 'answered', (e: unknown) => e);
      await h.setFaults({ unreachable: ['n2'] });
      const cut = await outcome('n2');
      assert.ok(cut instanceof ProtocolError && cut.code === 'timeout' && /^replica n2 did not answer \(unreachable\)$/.test(cut.message), String(cut));
      await h.setFaults({ dropRate: 1 });
      const dropped = await outcome('n3');
      assert.ok(dropped instanceof ProtocolError && dropped.code === 'timeout' && /^replica n3 did not answer \(unreachable\)$/.test(dropped.message), String(dropped));
      await nc.flush();
      assert.equal(heard, 0, 'no message was sent');
    } finally {
      await nc.close();
      await h.stop();
    }
  });

  it('a peer\'s error reply fails the send with unavailable, the peer\'s code in details.refused and its message in details.refusedMessage', async () => {
    const h = await started('refused', 'dev3');
    const nc = await natsConnect({ servers: server.url });
    try {
      nc.subscribe(replicaSubject('refused', 'v1', 0, 'n2'), {
        callback: (_e, m) => m.respond(encode(errorReply(new ProtocolError('stale_term', 'term 1 is behind term 5')))),
      });
      await nc.flush();
      const refused = await transportOf(h, spec).send('n2', prevote, 5000).then(() => 'answered', (e: unknown) => e);
      assert.ok(refused instanceof ProtocolError, String(refused));
      assert.equal(refused.code, 'unavailable', refused.message);
      assert.match(refused.message, /^replica n2 refused: .*stale_term.*term 1 is behind term 5/);
      assert.deepEqual(refused.details, { refused: 'stale_term', refusedMessage: 'term 1 is behind term 5' });
    } finally {
      await nc.close();
      await h.stop();
    }
  });

  it('one append to all followers, while the host stops: fails each follower\'s promise as send does, instead of throwing at the caller (the replica has already counted the message in each window)', async () => {
    const stopping = new ActorHost();
    await stopping.init({ hostId: 0, hostCount: 1, nodeId: 'n1', cluster: 'rv', natsUrl: server.url, deviceDir: path.join(dir, 'dev1'), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
    const transport = transportOf(stopping, spec);
    const stopped = stopping.stop(); // stopping: the replicas still run until the device closes
    const append = { type: 'append', term: 1, leader: 'n1', prevLsn: 0, prevTerm: 0, records: [{ term: 1, kind: 0, payload: new Uint8Array(1) }], commitLsn: 0, leaderLastLsn: 1 };
    const single = await transport.send('n2', append, 200).then(() => 'answered', (e: { code?: string }) => `rejected ${String(e.code)}`);
    assert.equal(single, 'rejected unavailable');
    let each: string[];
    try {
      each = await Promise.all(transport.sendEach(['n2', 'n3'], append, 200).map((p) => p.then(() => 'answered', (e: { code?: string }) => `rejected ${String(e.code)}`)));
    } catch (e) {
      each = [`threw ${String(e)}`];
    }
    await stopped;
    assert.deepEqual(each, ['rejected unavailable', 'rejected unavailable']);
  });

  it('faults out of range, and a stall out of range, are refused bad_request', async () => {
    const h = await started('faults', 'dev4');
    try {
      const badRequest = (message: RegExp) => (e: unknown): boolean => e instanceof ProtocolError && e.code === 'bad_request' && message.test(e.message);
      for (const faults of [{ dropRate: 1.5 }, { dropRate: -0.1 }, { dropRate: Number.NaN }, { delayMs: 60_001 }, { delayMs: -1 }]) {
        await assert.rejects(h.setFaults(faults), badRequest(/^dropRate must be in \[0, 1\] and delayMs in \[0, 60000\]$/), JSON.stringify(faults));
      }
      await assert.rejects(h.stall(-1), badRequest(/^stall: ms must be in \[0, 60000\]$/));
    } finally {
      await h.stop();
    }
  });

  it('a host refuses the calls that need its device before it is initialized, and once it stopped (unavailable)', async () => {
    const h = new ActorHost();
    await assert.rejects(h.checkpoint(), (e: unknown) => e instanceof Error && e.message === 'host not initialized');
    await assert.rejects(h.failFsync(1), (e: unknown) => e instanceof Error && e.message === 'host not initialized');
    const stopped = await started('stopped', 'dev5');
    await stopped.stop();
    for (const call of [() => stopped.checkpoint(), () => stopped.setFreeBytes(0)]) {
      await assert.rejects(call(), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && e.message === 'host is stopping');
    }
  });
});
