/**
 * A request failure on a host that reopens its shard's replica (a broken invariant) is logged
 * once, by the restart, with where it was thrown; any other internal failure once as
 * `request failed`.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, headers as natsHeaders, type NatsConnection } from 'nats';
import { ActorHost } from '../../runtime/actor-host';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { decode, encode } from '../../messages/codec';
import { writeHeaders } from '../../messages/headers';
import { shardSubject } from '../../messages/subjects';
import { replicaSubject } from '../../messages/raft';
import { StorageError } from '../../storage-engine/errors';
import { stderrOf } from '../support/stderr';
import { waitFor } from '../support/wait';

const CLUSTER = 'errs';

describe('a host logs a request failure once', function () {
  this.timeout(60_000);
  let server: NatsServerHandle;
  let dir: string;
  let nc: NatsConnection;
  let host: ActorHost;
  before(async () => {
    server = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-host-errors-'));
    nc = await natsConnect({ servers: server.url });
    host = new ActorHost();
    await host.init({ hostId: 0, hostCount: 1, nodeId: 'e1', cluster: CLUSTER, natsUrl: server.url, deviceDir: path.join(dir, 'e1'), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
    await host.openShard({ volumeId: 'v1', volumeName: 'v1', shard: 0, shards: 1, pageCount: 64, pageSize: 4096, stripePages: 16, members: ['e1'] });
    await waitFor('v1 has its leader', async () => (await host.stats()).device?.shards.find((x) => x.volumeId === 'v1')?.role === 'leader', 10_000);
  });
  after(async () => {
    await host?.stop();
    await nc?.close();
    await server?.stop();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A shard.flush to v1/0 whose handling throws `thrown`; the lines the host logged meanwhile. */
  async function failing(thrown: Error): Promise<{ reply: { error?: { code?: string } }; lines: Array<Record<string, unknown>> }> {
    const own = host as unknown as { handle: unknown };
    own.handle = async () => {
      throw thrown;
    };
    try {
      let reply: { error?: { code?: string } } = {};
      const written = await stderrOf(async () => {
        const h = natsHeaders();
        writeHeaders(h, { type: 'shard.flush', deadlineMs: Date.now() + 5000 });
        reply = decode((await nc.request(shardSubject(CLUSTER, 'v1', 0), encode({}), { headers: h, timeout: 5000 })).data) as typeof reply;
        // The log lines of the failure are written before its reply is sent.
      });
      const lines = written.join('').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
      return { reply, lines };
    } finally {
      delete own.handle;
    }
  }

  it('a broken invariant: one line, the restart\'s, with the error\'s message and stack', async () => {
    const { reply, lines } = await failing(new StorageError('invariant', 'test: a broken invariant'));
    assert.equal(reply.error?.code, 'internal');
    const about = lines.filter((l) => JSON.stringify(l).includes('a broken invariant'));
    assert.deepEqual(about.map((l) => [l['level'], l['msg']]), [['warn', 'replica restarted from durable state']]);
    assert.match(String(about[0]!['stack']), /a broken invariant\n\s+at /);
    await waitFor('v1 leads again', async () => (await host.stats()).device?.shards.find((x) => x.volumeId === 'v1')?.role === 'leader', 10_000);
  });

  it('an internal failure that restarts nothing: one line, request failed', async () => {
    const { reply, lines } = await failing(Object.assign(new Error('test: not fatal'), { code: 'internal' }));
    assert.equal(reply.error?.code, 'internal');
    const about = lines.filter((l) => JSON.stringify(l).includes('not fatal'));
    assert.deepEqual(about.map((l) => [l['level'], l['msg']]), [['error', 'request failed']]);
  });

  it('an internal failure of a replication message that restarts nothing: one line, replication message failed', async () => {
    const replica = (host as unknown as { device: { replica(v: string, s: number): { handle: unknown } } }).device.replica('v1', 0);
    replica.handle = async () => {
      throw Object.assign(new Error('test: a replication bug'), { code: 'internal' });
    };
    try {
      let reply: { error?: { code?: string } } = {};
      const written = await stderrOf(async () => {
        const append = { type: 'append', term: 1, leader: 'e2', prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: 0 };
        reply = decode((await nc.request(replicaSubject(CLUSTER, 'v1', 0, 'e1'), encode(append), { timeout: 5000 })).data) as typeof reply;
      });
      assert.equal(reply.error?.code, 'internal');
      const lines = written.join('').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
      const about = lines.filter((l) => JSON.stringify(l).includes('a replication bug'));
      assert.deepEqual(about.map((l) => [l['level'], l['msg'], l['type']]), [['error', 'replication message failed', 'append']]);
    } finally {
      delete (replica as { handle?: unknown }).handle;
    }
  });
});
