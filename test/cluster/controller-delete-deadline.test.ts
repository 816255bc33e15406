/**
 * The controller's catalog changes answer within their caller's deadline when a node
 * holding replicas takes requests and does not answer them (a frozen process: NATS keeps its
 * subscriptions until its ping check drops it, minutes later).
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { StrataNode } from '../../cluster/node';
import { createClient, NatsTransport, type StrataClient } from '../../cluster/client';
import { encode, decode } from '../../messages/codec';
import { controllerSubject, nodeSubject } from '../../messages/control';
import { HEADER_DEADLINE, HEADER_SCHEMA, HEADER_TYPE } from '../../messages/headers';
import { apiSubject } from '../../messages/subjects';
import type { ApiVerb } from '../../messages/api';
import type { ErrorReply } from '../../messages/errors';
import { waitFor } from '../support/wait';

const CLUSTER = 'deletedl';

async function apiRequest(client: StrataClient, verb: ApiVerb, body: unknown, deadlineMs: number): Promise<unknown> {
  const headers = { [HEADER_TYPE]: verb, [HEADER_SCHEMA]: '1', [HEADER_DEADLINE]: String(deadlineMs) };
  return decode(await client.rawRequest(apiSubject(CLUSTER, verb), encode(body), headers, { timeoutMs: 15_000 }));
}

describe('catalog changes within their deadline while a node is frozen', function () {
  this.timeout(60_000);
  let nats: NatsServerHandle;
  let fake: NatsConnection;
  let root: string;
  let node: StrataNode | undefined;
  let timer: NodeJS.Timeout | undefined;

  before(async () => {
    nats = await startNatsServer({ jetstream: false });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-delete-dl-'));
    fake = await natsConnect({ servers: nats.url });
  });
  after(async () => {
    clearInterval(timer);
    await node?.stop();
    await fake?.close();
    await nats?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('a volume.delete is answered deleted before its deadline, its destroy on the frozen node deferred to reconciliation', async () => {
    // Two nodes that heartbeat and open their shards, then freeze: they stop heartbeating and
    // take every request without answering it.
    let frozen = false;
    const ghosts = ['ghost1', 'ghost2'];
    for (const g of ghosts) {
      fake.subscribe(nodeSubject(CLUSTER, g, 'shards.open'), { callback: (_e, msg) => (frozen ? undefined : msg.respond(encode({ ok: true }))) });
      fake.subscribe(nodeSubject(CLUSTER, g, 'shards.destroy'), { callback: (_e, msg) => (frozen ? undefined : msg.respond(encode({ ok: true }))) });
    }
    const beat = (): void => {
      if (frozen) return;
      for (const g of ghosts) fake.request(controllerSubject(CLUSTER, 'heartbeat'), encode({ nodeId: g, hosts: 1 })).catch(() => undefined);
    };
    beat();
    timer = setInterval(beat, 200);
    node = await StrataNode.start({ nodeId: 'ctl', cluster: CLUSTER, natsUrl: nats.url, dataDir: path.join(root, 'ctl'), hosts: 1, controller: true, heartbeatMs: 100 });
    await waitFor('3 live members', async () => {
      const r = decode((await fake.request(controllerSubject(CLUSTER, 'members'), encode({}))).data) as { members?: Array<{ live: boolean }> };
      return Array.isArray(r.members) && r.members.filter((m) => m.live).length === 3;
    });
    const client = createClient(new NatsTransport(fake), { cluster: CLUSTER, timeoutMs: 10_000 });
    for (const name of ['a', 'b']) {
      const created = await apiRequest(client, 'volume.create', { name, pageCount: 64, replicas: 3 }, Date.now() + 8000);
      assert.equal((created as Partial<ErrorReply>).error, undefined, JSON.stringify(created));
    }
    frozen = true;
    const t0 = Date.now();
    const reply = await apiRequest(client, 'volume.delete', { name: 'a' }, Date.now() + 3000);
    const tookMs = Date.now() - t0;
    // Deleted from the catalog all the same:
    const info = await apiRequest(client, 'volume.info', { name: 'a' }, Date.now() + 3000);
    assert.equal((info as ErrorReply).error?.code, 'not_found');
    assert.deepEqual(reply, { deleted: true }, `after ${tookMs} ms: ${JSON.stringify(reply)}`);
  });
});

describe('an undone volume.create within its deadline while a node is frozen', function () {
  this.timeout(60_000);
  let nats: NatsServerHandle;
  let fake: NatsConnection;
  let root: string;
  let node: StrataNode | undefined;
  let timer: NodeJS.Timeout | undefined;

  before(async () => {
    nats = await startNatsServer({ jetstream: false });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-create-dl-'));
    fake = await natsConnect({ servers: nats.url });
  });
  after(async () => {
    clearInterval(timer);
    await node?.stop();
    await fake?.close();
    await nats?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('is answered unavailable (not created) before its deadline, the destroy of its shards on the frozen nodes deferred to reconciliation', async () => {
    // Two nodes that heartbeat, then freeze: they take every request without answering it, and
    // the controller still counts them live for a few seconds.
    let frozen = false;
    const ghosts = ['ghost3', 'ghost4'];
    for (const g of ghosts) {
      fake.subscribe(nodeSubject(CLUSTER, g, 'shards.open'), { callback: (_e, msg) => (frozen ? undefined : msg.respond(encode({ ok: true }))) });
      fake.subscribe(nodeSubject(CLUSTER, g, 'shards.destroy'), { callback: (_e, msg) => (frozen ? undefined : msg.respond(encode({ ok: true }))) });
    }
    const beat = (): void => {
      if (frozen) return;
      for (const g of ghosts) fake.request(controllerSubject(CLUSTER, 'heartbeat'), encode({ nodeId: g, hosts: 1 })).catch(() => undefined);
    };
    beat();
    timer = setInterval(beat, 200);
    node = await StrataNode.start({ nodeId: 'ctl', cluster: CLUSTER, natsUrl: nats.url, dataDir: path.join(root, 'ctl'), hosts: 1, controller: true, heartbeatMs: 100 });
    await waitFor('3 live members', async () => {
      const r = decode((await fake.request(controllerSubject(CLUSTER, 'members'), encode({}))).data) as { members?: Array<{ live: boolean }> };
      return Array.isArray(r.members) && r.members.filter((m) => m.live).length === 3;
    });
    const client = createClient(new NatsTransport(fake), { cluster: CLUSTER, timeoutMs: 10_000 });
    frozen = true;
    const t0 = Date.now();
    const reply = await apiRequest(client, 'volume.create', { name: 'c', pageCount: 64, replicas: 3 }, Date.now() + 3000);
    const tookMs = Date.now() - t0;
    assert.equal((reply as ErrorReply).error?.code, 'unavailable', `after ${tookMs} ms: ${JSON.stringify(reply)}`);
    const info = await apiRequest(client, 'volume.info', { name: 'c' }, Date.now() + 3000);
    assert.equal((info as ErrorReply).error?.code, 'not_found');
  });
});
