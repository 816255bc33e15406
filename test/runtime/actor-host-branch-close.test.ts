/**
 * A branch's new replica closed (its volume deleted) while it waits to be copied from its
 * parent's: the open that was copying it does not open it after all, and leaves no subscription
 * behind.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ActorHost } from '../../runtime/actor-host';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { ProtocolError } from '../../messages/errors';
import { waitFor } from '../support/wait';

const CLUSTER = 'branchclose';
const shardSpec = { volumeName: 'v', shard: 0, shards: 1, pageCount: 64, pageSize: 4096 as const, stripePages: 16, members: ['b1'] };

describe('a host closing a branch replica while it is copied from its parent', function () {
  this.timeout(60_000);
  let server: NatsServerHandle;
  let dir: string;
  let host: ActorHost;
  before(async () => {
    server = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-branch-close-'));
    host = new ActorHost();
    await host.init({ hostId: 0, hostCount: 1, nodeId: 'b1', cluster: CLUSTER, natsUrl: server.url, deviceDir: path.join(dir, 'b1'), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
  });
  after(async () => {
    await host?.stop();
    await server?.stop();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the open fails unavailable, the shard is not open, and its subscriptions are gone', async () => {
    await host.openShard({ ...shardSpec, volumeId: 'p1' });
    const parentOf = async () => (await host.stats()).device?.shards.find((x) => x.volumeId === 'p1');
    await waitFor('the parent leads', async () => (await parentOf())?.role === 'leader', 10_000);
    // A branch point past what the parent applied: the copy waits for it (SEED_WAIT_MS).
    const seedLsn = (await parentOf())!.appliedLsn + 1000;
    const mailboxes = (host as unknown as { mailboxes: Map<string, unknown> }).mailboxes;
    const opening = host.openShard({ ...shardSpec, volumeId: 'c1', seed: { volumeId: 'p1', lsn: seedLsn } });
    const failed = opening.then(() => undefined, (e: unknown) => e);
    await waitFor('the branch replica is being copied', () => mailboxes.has('c1.0'), 5000);
    await host.closeShard('c1', 0, true);
    const err = await failed;
    assert.ok(err instanceof ProtocolError && err.code === 'unavailable', String(err));
    assert.match(err.message, /shard c1\/0 was closed while its replica was copied from its parent's/);
    assert.equal(mailboxes.has('c1.0'), false, 'no mailbox (and so no subscription) left behind');
    assert.equal((await host.stats()).device?.shards.some((x) => x.volumeId === 'c1'), false, 'not opened after its close');
  });
});
