import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { StrataNode } from '../../cluster/node';
import { connect } from '../../cluster/client';
import { NATS_PASSWORD_FILE_BYTES_MAX, natsPermissions, readNatsPassword, renderNatsAuthorization } from '../../cluster/nats-auth';
import { natsAuthText } from '../../cluster/cli';
import { CatalogShard } from '../../cluster/catalog-shard';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { encode, decode } from '../../messages/codec';
import { ProtocolError } from '../../messages/errors';
import { replicaSubject } from '../../messages/raft';
import { clientInboxPrefix } from '../../messages/subjects';
import type { VolumeInfo } from '../../messages/api';
import { waitFor } from '../support/wait';

type ShardView = { leader?: string; term: number; state: string; replicas: Array<{ node: string }> };

describe('cluster/nats-auth', () => {
  describe('permissions and the authorization block', () => {
    it('gives applications the API and the shards, never a subject the nodes trust each other on', () => {
      const client = natsPermissions('prod', 'client');
      assert.deepEqual(client, {
        publish: ['strata.prod.api.>', 'strata.prod.shard.*.*', 'strata.prod.shard.*.*.leaders', '$SRV.>'],
        publishDeny: ['strata.prod.shard.v0-catalog.*', 'strata.prod.shard.v0-catalog.*.leaders'],
        subscribe: ['_INBOX.strata-client.>'],
      });
      assert.deepEqual(natsPermissions('prod', 'client', 'app-7').subscribe, ['_INBOX.app-7.>'], 'a client user reads the replies to its own requests only');
      const operator = natsPermissions('prod', 'operator');
      assert.deepEqual(operator.publish, [...client.publish, 'strata.prod.node.*.shard.forceVote', 'strata.prod.node.*.shard.handover', 'strata.prod.node.*.shard.digest', 'strata.prod.controller.catalog.recover', 'strata.prod.controller.shard.move', 'strata.prod.controller.node.drain', 'strata.prod.controller.rebalance', 'strata.prod.controller.controllers']);
      assert.deepEqual(operator.subscribe, ['_INBOX.strata-operator.>']);
      assert.deepEqual(operator.publishDeny, ['strata.prod.shard.v0-catalog.*', 'strata.prod.shard.v0-catalog.*.leaders'], 'nor may an operator write the catalog shard');
      assert.equal(natsPermissions('prod', 'node').publishDeny, undefined);
      assert.deepEqual(natsPermissions('prod', 'node').subscribe, ['strata.prod.>', '_INBOX.>', '$SRV.>']);
      assert.throws(() => natsPermissions('a.b', 'node'), ProtocolError);
    });

    it('volume.branch may be sent by exactly the users that may send volume.create: any on the API subject, nodes only on the controller\'s', () => {
      // nats-server's subject match: `*` one token, `>` one or more at the end.
      const matches = (pattern: string, subject: string): boolean => {
        const p = pattern.split('.');
        const s = subject.split('.');
        for (let i = 0; i < p.length; i++) {
          if (p[i] === '>') return s.length > i;
          if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
        }
        return p.length === s.length;
      };
      const may = (role: 'node' | 'client' | 'operator', subject: string): boolean => natsPermissions('prod', role).publish.some((p) => matches(p, subject));
      assert.equal(matches('strata.prod.api.>', 'strata.prod.api.volume.branch'), true);
      assert.equal(matches('strata.prod.shard.*.*', 'strata.prod.shard.v1.0.x'), false);
      for (const role of ['node', 'client', 'operator'] as const) {
        assert.equal(may(role, 'strata.prod.api.volume.branch'), may(role, 'strata.prod.api.volume.create'), role);
        assert.equal(may(role, 'strata.prod.controller.volume.branch'), may(role, 'strata.prod.controller.volume.create'), role);
      }
      assert.deepEqual((['node', 'client', 'operator'] as const).filter((r) => may(r, 'strata.prod.api.volume.branch')), ['node', 'client', 'operator']);
      assert.deepEqual((['node', 'client', 'operator'] as const).filter((r) => may(r, 'strata.prod.controller.volume.branch')), ['node'], 'the controller\'s subject: nodes only');
    });

    it('renders users with a password as text or from the environment, and refuses names that are not plain tokens', () => {
      const text = renderNatsAuthorization('c1', [
        { user: 'n', role: 'node', password: { text: 'p"w' } },
        { user: 'app', role: 'client', password: { env: 'APP_PW' } },
      ]);
      assert.match(text, /\{ user: "n", password: "p\\"w",\n {6}permissions: \{ publish: \["strata\.c1\.>", "_INBOX\.>", "\$SRV\.>"\]/);
      assert.match(text, /\{ user: "app", password: \$APP_PW,/);
      assert.match(text, /permissions: \{ publish: \{ allow: \["strata\.c1\.api\.>", "strata\.c1\.shard\.\*\.\*", "strata\.c1\.shard\.\*\.\*\.leaders", "\$SRV\.>"\], deny: \["strata\.c1\.shard\.v0-catalog\.\*", "strata\.c1\.shard\.v0-catalog\.\*\.leaders"\] \}, subscribe: \["_INBOX\.app\.>"\] \} \}/);
      assert.throws(() => renderNatsAuthorization('c1', [{ user: 'a b', role: 'node', password: { text: 'x' } }]), /user: expected 1\.\.64 characters/);
      assert.throws(() => renderNatsAuthorization('c1', [{ user: 'a', role: 'node', password: { env: 'A-B' } }]), /password variable: expected a name/);
      assert.throws(
        () => renderNatsAuthorization('c1', [{ user: 'a', role: 'node', password: { text: 'x' } }, { user: 'a', role: 'client', password: { text: 'y' } }]),
        /user a given twice/,
      );
      assert.match(natsAuthText('prod'), /user: "strata-operator", password: \$STRATA_OPERATOR_PASSWORD,/);
    });

    it('the block `strata nats-auth` prints works in a nats-server that reads the passwords from its environment', async () => {
      const names = ['STRATA_NODE_PASSWORD', 'STRATA_CLIENT_PASSWORD', 'STRATA_OPERATOR_PASSWORD'];
      const saved = names.map((n) => process.env[n]);
      names.forEach((n) => (process.env[n] = `${n.toLowerCase()}-x`));
      let server: NatsServerHandle | undefined;
      try {
        server = await startNatsServer({ jetstream: false, extraConfig: natsAuthText('dev') });
        const nc = await natsConnect({ servers: server.url, user: 'strata-client', pass: 'strata_client_password-x' });
        await nc.close();
        await assert.rejects(natsConnect({ servers: server.url, user: 'strata-client', pass: '$STRATA_CLIENT_PASSWORD' }), /Authorization Violation/);
      } finally {
        names.forEach((n, i) => (saved[i] === undefined ? delete process.env[n] : (process.env[n] = saved[i])));
        await server?.stop();
      }
    });

    it('reads a password file: one line, its newline dropped; refuses an empty, a missing, a multi-line or a huge one', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-pw-'));
      try {
        const file = (name: string, text: string): string => {
          fs.writeFileSync(path.join(dir, name), text);
          return path.join(dir, name);
        };
        assert.equal(readNatsPassword(file('a', 's3cret\n')), 's3cret');
        assert.equal(readNatsPassword(file('b', 's3cret\r\n')), 's3cret');
        assert.throws(() => readNatsPassword(file('c', '\n')), /is empty/);
        assert.throws(() => readNatsPassword(file('d', 'a\nb\n')), /holds more than one line/);
        // A regular file is refused by its size, before it is read.
        assert.throws(() => readNatsPassword(file('e', 'x'.repeat(NATS_PASSWORD_FILE_BYTES_MAX + 1))), /e holds 4097 bytes, more than a password's 4096$/);
        assert.throws(() => readNatsPassword(path.join(dir, 'missing')), /can not read .*missing: ENOENT/);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
    it('reads at most a password\'s bytes from a file that is not a regular one (a pipe, a device), and refuses more', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-pw-'));
      const fifo = path.join(dir, 'pw');
      try {
        execFileSync('mkfifo', [fifo]);
        // A pipe reports no size: what it holds is only known by reading it.
        const writer = spawn('sh', ['-c', `head -c ${NATS_PASSWORD_FILE_BYTES_MAX + 904} /dev/zero | tr '\\0' a > "$0"`, fifo], { stdio: 'ignore' });
        const exited = new Promise((resolve) => writer.once('exit', resolve));
        try {
          assert.throws(() => readNatsPassword(fifo), /more than a password's 4096 bytes/);
        } finally {
          writer.kill('SIGKILL');
          await exited;
        }
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('a cluster whose nats-server admits only its users', function () {
    this.timeout(90_000);
    let c: InProcessCluster;
    let app: NatsConnection;
    let peer: NatsConnection;
    let info: VolumeInfo;

    const shard = async (): Promise<ShardView> =>
      ((await c.client.status()) as unknown as { volumes: Array<{ name: string; shards: ShardView[] }> }).volumes.find((v) => v.name === 'v-auth')!.shards[0]!;
    const led = async (): Promise<ShardView> => {
      let s: ShardView | undefined;
      await waitFor('the shard has a leader', async () => (s = await shard()).state === 'up' && s.leader !== undefined);
      return s!;
    };

    before(async () => {
      c = await startCluster({ nodes: 3, hosts: 1, natsAuth: true, clientTimeoutMs: 5000 });
      app = await natsConnect({ servers: c.natsUrl, ...c.natsUsers!.client, inboxPrefix: clientInboxPrefix(c.natsUsers!.client.user) });
      peer = await natsConnect({ servers: c.natsUrl, ...c.natsUsers!.node });
      info = await c.client.createVolume({ name: 'v-auth', pageCount: 64, shards: 1, replicas: 3 });
    });
    after(async () => {
      await app?.close();
      await peer?.close();
      await c?.stop();
    });

    it('serves: the nodes\' main and host threads connect as the node user, the application as the client user', async () => {
      const vol = c.client.volume('v-auth');
      const data = new Uint8Array(4096).fill(7);
      await vol.write(3, data);
      assert.deepEqual(Buffer.from(await vol.read(3)), Buffer.from(data));
      assert.equal((await led()).replicas.length, 3);
      // The shard's leaders subject too (where every write goes), not the catalog shard's.
      const again = new Uint8Array(4096).fill(8);
      await vol.writePages([{ page: 3, data: again }]);
      assert.deepEqual(Buffer.from(await vol.read(3)), Buffer.from(again));
      await assert.rejects(c.client.rawRequest('strata.test.shard.v0-catalog.0.leaders', new Uint8Array(0)), (e: unknown) => e instanceof ProtocolError && e.code === 'forbidden' && /publish to strata\.test\.shard\.v0-catalog\.0\.leaders/.test(e.message));
    });

    it('a request the client user may not send fails forbidden at once, not at its deadline; the operator user may send it', async () => {
      await assert.rejects(c.client.forceVote('v-auth', 0, 'n1'), (e: unknown) => {
        assert.ok(e instanceof ProtocolError && e.code === 'forbidden', String(e));
        assert.match(e.message, /does not let this connection's user publish to strata\.test\.node\.n1\.shard\.forceVote/);
        return true;
      });
      await assert.rejects(c.client.recoverCatalog(), (e: unknown) => e instanceof ProtocolError && e.code === 'forbidden' && /publish to strata\.test\.controller\.catalog\.recover/.test(e.message));
      await assert.rejects(c.client.moveReplica('v-auth', 0, { from: 'n1', to: 'n2' }), (e: unknown) => e instanceof ProtocolError && e.code === 'forbidden' && /publish to strata\.test\.controller\.shard\.move/.test(e.message));
      await assert.rejects(c.client.drainNode('n9'), (e: unknown) => e instanceof ProtocolError && e.code === 'forbidden' && /publish to strata\.test\.controller\.node\.drain/.test(e.message));
      await assert.rejects(c.client.rebalance(), (e: unknown) => e instanceof ProtocolError && e.code === 'forbidden' && /publish to strata\.test\.controller\.rebalance/.test(e.message));
      await assert.rejects(c.client.controllers(), (e: unknown) => e instanceof ProtocolError && e.code === 'forbidden' && /publish to strata\.test\.controller\.controllers/.test(e.message));
      await assert.rejects(c.client.handOver('v-auth', 0), (e: unknown) => e instanceof ProtocolError && e.code === 'forbidden' && /publish to strata\.test\.node\.n\d\.shard\.handover/.test(e.message));
      // Each replica's node refuses the client's digest request: none answered, nothing compared.
      const check = await c.client.checkShard('v-auth', 0);
      assert.equal(check.range, undefined);
      assert.ok(check.replicas.length === 3 && check.replicas.every((r) => /does not let this connection's user publish to strata\.test\.node\.n\d\.shard\.digest/.test(r.error ?? '')), JSON.stringify(check.replicas));
      // The catalog shard's subject: neither the client nor the operator (only the controller writes the catalog).
      await assert.rejects(new CatalogShard(c.client, { term: 1, timeoutMs: 5000 }).load(), (e: unknown) => e instanceof ProtocolError && e.code === 'forbidden' && /publish to strata\.test\.shard\.v0-catalog\.0/.test(e.message));
      const operator = await connect({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 5000, ...c.natsUsers!.operator });
      try {
        const reply = await operator.forceVote('v-auth', 0, 'n1');
        assert.equal(reply.wasRepairing, false);
        assert.equal((await operator.recoverCatalog()).recoveredCount, 0);
        // A move reaches the controller, which answers it (every node holds the shard already).
        await assert.rejects(operator.moveReplica('v-auth', 0, { from: 'n1', to: 'n2' }), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /node 'n2' holds a replica of shard 0 of volume 'v-auth' already/.test(e.message));
        // The controller answers a drain: of a node the cluster does not have, refused; a mark taken off any node.
        await assert.rejects(operator.drainNode('n9'), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /'n9' is not a node of cluster 'test'/.test(e.message));
        assert.deepEqual(await operator.drainNode('n9', { undo: true }), { node: 'n9', draining: false, replicas: 0 });
        assert.equal((await operator.rebalance({ stop: true })).rebalancing, false);
        // The controller answers (this cluster's is a single controller node, whose set does not change).
        await assert.rejects(operator.controllers(['n1', 'n2', 'n3']), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /single controller node/.test(e.message));
        // A check of the shard's replicas: the operator may ask the nodes for their digests; the client may not.
        assert.equal((await operator.checkShard('v-auth', 0)).replicas.filter((r) => r.error === undefined).length, 3);
        // The shard's leader hands it over; its new leader is another of the three nodes. (A
        // target not elected within the election timeout, on a loaded machine, is answered
        // `timeout` and the old leader leads on: the operator asks again.)
        let handed: Awaited<ReturnType<typeof operator.handOver>> | undefined;
        for (let i = 0; handed === undefined; i++) {
          try {
            handed = await operator.handOver('v-auth', 0);
          } catch (e) {
            if (!(e instanceof ProtocolError && e.code === 'timeout' && i < 4)) throw e;
          }
        }
        assert.notEqual(handed.to, handed.node);
        await assert.rejects(new CatalogShard(operator, { term: 1, timeoutMs: 5000 }).write({ version: 1, epoch: 1, nextId: 1, volumes: [], tombstones: [] }), (e: unknown) => e instanceof ProtocolError && e.code === 'forbidden');
      } finally {
        await operator.close();
      }
    });

    it('one user cannot read the replies another user\'s requests get (the pages it reads): each has inboxes of its own', async () => {
      const page = new Uint8Array(4096).fill(0x5a);
      await c.client.volume('v-auth').write(5, page);
      const other = await natsConnect({ servers: c.natsUrl, ...c.natsUsers!.operator, inboxPrefix: clientInboxPrefix(c.natsUsers!.operator.user) });
      try {
        for (const subject of ['_INBOX.>', `${clientInboxPrefix(c.natsUsers!.client.user)}.>`]) {
          const refused = new Promise<Error | null>((resolve) => other.subscribe(subject, { callback: (err) => resolve(err) }));
          await other.flush();
          assert.match(String(await refused), /Permissions Violation for Subscription/, subject);
        }
        // Its own inboxes work: the client library takes them for a user.
        const operator = await connect({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 5000, ...c.natsUsers!.operator });
        try {
          assert.deepEqual(Buffer.from(await operator.volume('v-auth').read(5)), Buffer.from(page));
        } finally {
          await operator.close();
        }
        assert.deepEqual(Buffer.from(await c.client.volume('v-auth').read(5)), Buffer.from(page));
      } finally {
        await other.close();
      }
    });

    it('refuses a connection without a user, or with a wrong password', async () => {
      const hints: Array<[Record<string, string>, RegExp]> = [
        [{}, /Authorization Violation' \(the server admits only its users: give one and its password, --nats-user and --nats-password-file\)$/],
        [{ user: 'strata-client', pass: 'wrong' }, /Authorization Violation' \(user strata-client refused: a wrong password, or a user the server does not have\)$/],
      ];
      for (const [auth, message] of hints) {
        await assert.rejects(connect({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 3000, ...auth }), (e: unknown) => {
          assert.ok(e instanceof ProtocolError && e.code === 'unavailable', String(e));
          assert.match(e.message, message);
          return true;
        });
      }
    });

    it('an append forged in a member\'s name: the server refuses it from the client user; from a node it is taken', async () => {
      const s = await led();
      const [a, b] = s.replicas.map((r) => r.node).filter((n) => n !== s.leader);
      // In the name of follower b, a term ahead: follower a would take b as its leader.
      const forged = encode({ type: 'append', term: s.term + 1, leader: b, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0 });
      const subject = replicaSubject(c.cluster, info.id, 0, a!);
      await assert.rejects(app.request(subject, forged, { timeout: 3000 }), (e: unknown) => {
        assert.equal((e as { code?: string }).code, 'PERMISSIONS_VIOLATION', String(e));
        return true;
      });
      // Nor may it take the shard's requests for itself.
      const refused = new Promise<Error | null>((resolve) => app.subscribe(`strata.${c.cluster}.shard.*.*`, { callback: (err) => resolve(err) }));
      await app.flush();
      assert.match(String(await refused), /Permissions Violation for Subscription/);
      assert.equal((await led()).term, s.term, 'no replica took the forged term');
      // What the permissions keep out: the same message from a connection allowed to send it
      // is taken, and the shard's term moves on.
      const reply = decode((await peer.request(subject, forged, { timeout: 5000 })).data) as { error?: unknown };
      assert.equal(reply.error, undefined, JSON.stringify(reply));
      await waitFor('the shard moved past the forged term', async () => (await led()).term > s.term);
    });

    it('a client user that watches its inboxes sees no node\'s replies, and cannot answer a node\'s claim for it', async () => {
      // Every answer seen on the inboxes a client user may read is sent back to its subject, by
      // way of a request any node answers ($SRV.PING with that reply subject): a node that took
      // such an answer to its claim for another node's would refuse to start.
      const claims: string[] = [];
      const watcher = app.subscribe(`${clientInboxPrefix(c.natsUsers!.client.user)}.>`, {
        callback: (_err, m) => {
          let body: unknown;
          try {
            body = decode(m.data);
          } catch {
            return;
          }
          if (body !== null && typeof body === 'object' && 'instance' in body) {
            claims.push(m.subject);
            app.publish('$SRV.PING', new Uint8Array(0), { reply: m.subject });
          }
        },
      });
      await app.flush();
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-auth-n9-'));
      try {
        const node = await StrataNode.start({ nodeId: 'n9', cluster: c.cluster, natsUrl: c.natsUrl, natsAuth: c.natsUsers!.node, dataDir, hosts: 1, controller: false });
        await node.stop();
      } finally {
        watcher.unsubscribe();
        fs.rmSync(dataDir, { recursive: true, force: true });
      }
      assert.deepEqual(claims, [], 'the client user saw a node\'s answer to a claim');
    });
  });
});

describe('cluster/nats-auth: a node whose server refuses its user for a while', function () {
  this.timeout(90_000);

  it('connects again once the server admits it again, however many times it was refused meanwhile', async () => {
    const cluster = 'reauth';
    const users = (nodePass: string): string =>
      renderNatsAuthorization(cluster, [
        { user: 'strata-node', role: 'node', password: { text: nodePass } },
        { user: 'strata-client', role: 'client', password: { text: 'client-pw' } },
      ]);
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-reauth-'));
    let server: NatsServerHandle | undefined = await startNatsServer({ jetstream: false, extraConfig: users('node-pw') });
    const port = server.port;
    let node: StrataNode | undefined;
    let client: Awaited<ReturnType<typeof connect>> | undefined;
    try {
      node = await StrataNode.start({ nodeId: 'n1', cluster, natsUrl: server.url, natsAuth: { user: 'strata-node', pass: 'node-pw' }, dataDir, hosts: 1, controller: true });
      client = await connect({ servers: server.url, cluster, timeoutMs: 3000, user: 'strata-client', pass: 'client-pw' });
      await client.createVolume({ name: 'v', pageCount: 16, shards: 1, replicas: 1 });
      await client.volume('v').write(0, new Uint8Array(4096).fill(5));
      // The server comes back with a configuration that refuses the node's and the client's
      // passwords (a password being changed, an environment variable missing): both are refused
      // at every try.
      await server.stop();
      server = await startNatsServer({ jetstream: false, port, extraConfig: users('another-pw').replace('"client-pw"', '"another-pw"') });
      await new Promise((r) => setTimeout(r, 2000));
      await server.stop();
      server = await startNatsServer({ jetstream: false, port, extraConfig: users('node-pw') });
      const c = client;
      await waitFor('the node (main and host threads) serves again, and the client connected before asks it', async () => {
        try {
          await c.listVolumes();
          assert.equal((await c.volume('v').read(0))[0], 5);
          return true;
        } catch {
          return false;
        }
      }, 20_000);
    } finally {
      await client?.close();
      await node?.stop();
      await server?.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
