/**
 * The controller's catalog changes answer within their caller's deadline when a node
 * holding replicas takes requests and does not answer them (a frozen process: NATS keeps its
 * subscriptions until its ping check drops it, minutes later), and stop waiting for it once it
 * is silent (not live, its claim unanswered).
 */
import { strict as assert } from 'node:assert';
import type { Msg } from 'nats';
import type { StrataClient } from '../../cluster/client';
import { encode, decode } from '../../messages/codec';
import type { ApiVerb } from '../../messages/api';
import type { ErrorReply } from '../../messages/errors';
import { GhostController } from '../support/ghost-controller';
import { controllerSubject } from '../../messages/control';
import { waitFor } from '../support/wait';
import { apiRequestOnce } from '../support/api';

const CLUSTER = 'deletedl';

function apiRequest(client: StrataClient, verb: ApiVerb, body: unknown, deadlineMs: number): Promise<unknown> {
  return apiRequestOnce(client, CLUSTER, verb, body, deadlineMs);
}

/**
 * Ghosts that heartbeat and answer their shards' opens and destroys until `freeze()`; then they
 * all stop heartbeating and take every request without answering it, their claims too (the
 * controller cannot tell them from slow nodes until their heartbeats are missed).
 */
async function freezingGhosts(ghosts: readonly string[]): Promise<{ g: GhostController; freeze: () => void }> {
  const { g, freeze } = await ghostsFrozenOneByOne(CLUSTER, ghosts);
  return { g, freeze: () => ghosts.forEach(freeze) };
}

describe('catalog changes within their deadline while a node is frozen', function () {
  this.timeout(60_000);
  let g: GhostController | undefined;

  after(async () => {
    await g?.stop();
  });

  it('a volume.delete is answered deleted before its deadline, its destroy on the frozen node deferred to reconciliation; another delete sent meanwhile does not wait behind it', async () => {
    // Two nodes that heartbeat and open their shards, then freeze: they stop heartbeating and
    // take every request without answering it.
    const ghosts = await freezingGhosts(['ghost1', 'ghost2']);
    g = ghosts.g;
    const client = g.client(10_000);
    for (const name of ['a', 'b']) {
      const created = await apiRequest(client, 'volume.create', { name, pageCount: 64, replicas: 3 }, Date.now() + 8000);
      assert.equal((created as Partial<ErrorReply>).error, undefined, JSON.stringify(created));
    }
    ghosts.freeze();
    const t0 = Date.now();
    // Both wait for their destroys until near their deadline, each on its own: the catalog's
    // queue holds a delete only while it changes the catalog (b, of the shorter deadline, queued
    // behind a's wait would find its deadline passed).
    const [reply, other] = await Promise.all([
      apiRequest(client, 'volume.delete', { name: 'a' }, Date.now() + 5000),
      new Promise((r) => setTimeout(r, 50)).then(() => apiRequest(client, 'volume.delete', { name: 'b' }, Date.now() + 3000)),
    ]);
    const tookMs = Date.now() - t0;
    // Deleted from the catalog all the same:
    for (const name of ['a', 'b']) {
      const info = await apiRequest(client, 'volume.info', { name }, Date.now() + 3000);
      assert.equal((info as ErrorReply).error?.code, 'not_found');
    }
    assert.deepEqual(reply, { deleted: true }, `after ${tookMs} ms: ${JSON.stringify(reply)}`);
    assert.deepEqual(other, { deleted: true }, `after ${tookMs} ms: ${JSON.stringify(other)}`);
  });
});

describe('an undone volume.create within its deadline while a node is frozen', function () {
  this.timeout(60_000);
  let g: GhostController | undefined;

  after(async () => {
    await g?.stop();
  });

  it('is answered unavailable (not created) before its deadline, the destroy of its shards on the frozen nodes deferred to reconciliation', async () => {
    // Two nodes that heartbeat, then freeze: they take every request without answering it, and
    // the controller still counts them live for a few seconds.
    const ghosts = await freezingGhosts(['ghost3', 'ghost4']);
    g = ghosts.g;
    const client = g.client(10_000);
    ghosts.freeze();
    const t0 = Date.now();
    const reply = await apiRequest(client, 'volume.create', { name: 'c', pageCount: 64, replicas: 3 }, Date.now() + 3000);
    const tookMs = Date.now() - t0;
    assert.equal((reply as ErrorReply).error?.code, 'unavailable', `after ${tookMs} ms: ${JSON.stringify(reply)}`);
    const info = await apiRequest(client, 'volume.info', { name: 'c' }, Date.now() + 3000);
    assert.equal((info as ErrorReply).error?.code, 'not_found');
  });
});

describe('a volume.create whose open was in the hands of a node that died', function () {
  this.timeout(60_000);
  let g: GhostController | undefined;

  after(async () => {
    await g?.stop();
  });

  it('is placed again on the live nodes once the node is found gone (its claim has no responders), not failed at its deadline', async () => {
    // ghost5 takes the first open it is sent and dies with it, unanswered.
    let dies: string | undefined = 'ghost5';
    g = await GhostController.start(CLUSTER, ['ghost5', 'ghost6'], {
      open: (ghost, msg) => {
        if (ghost === dies) {
          dies = undefined;
          void g!.kill(ghost);
          return;
        }
        msg.respond(encode({ ok: true }));
      },
      destroy: (_ghost, msg) => msg.respond(encode({ ok: true })),
    });
    const client = g.client(15_000);
    // One shard on each of ctl, ghost5 and ghost6 at first.
    const created = await apiRequest(client, 'volume.create', { name: 'c', pageCount: 96, shards: 3, stripePages: 16, replicas: 1 }, Date.now() + 12_000);
    assert.equal((created as Partial<ErrorReply>).error, undefined, JSON.stringify(created));
    assert.equal(dies, undefined, 'ghost5 was sent an open');
    const info = (await apiRequest(client, 'volume.info', { name: 'c' }, Date.now() + 3000)) as { replicaSets: Array<{ members: string[] }> };
    assert.deepEqual([...new Set(info.replicaSets.flatMap((r) => r.members))].sort(), ['ctl', 'ghost6']);
  });
});

/**
 * Ghosts that heartbeat and answer their opens, destroys, grows and claims until each is frozen
 * (`freeze(ghost)`): it then stops heartbeating and takes every request without answering it.
 * `asked` counts the requests each was sent, by verb.
 */
async function ghostsFrozenOneByOne(cluster: string, ghosts: readonly string[]): Promise<{ g: GhostController; freeze: (ghost: string) => void; asked: Map<string, number> }> {
  const frozen = new Set<string>();
  const asked = new Map<string, number>();
  const answer = (verb: string) => (ghost: string, msg: Msg): void => {
    asked.set(`${ghost} ${verb}`, (asked.get(`${ghost} ${verb}`) ?? 0) + 1);
    if (!frozen.has(ghost)) msg.respond(encode(verb === 'grow' ? { node: ghost, shards: 1 } : verb === 'claim' ? {} : { ok: true }));
  };
  const g = await GhostController.start(cluster, ghosts, { open: answer('open'), destroy: answer('destroy'), grow: answer('grow'), claim: answer('claim'), beating: (ghost) => !frozen.has(ghost) });
  return { g, freeze: (ghost) => void frozen.add(ghost), asked };
}

describe('a node frozen for longer than the controller\'s live window', function () {
  this.timeout(60_000);
  let g: GhostController | undefined;

  afterEach(async () => {
    await g?.stop();
    g = undefined;
  });

  it('is not sent the destroys of a volume.delete: answered deleted, the live nodes\' destroys made, the frozen node\'s deferred to its reconciliation', async () => {
    const ghosts = await ghostsFrozenOneByOne('frozendel', ['ghost7', 'ghost8']);
    g = ghosts.g;
    const client = g.client(20_000);
    await client.createVolume({ name: 'a', pageCount: 64, replicas: 3 });
    ghosts.freeze('ghost7');
    await waitFor('ghost7 not live', async () => !(await g!.counted('ghost7')));
    // A deadline far off: asked, the frozen node would hold the answer until near it.
    assert.deepEqual(await apiRequestOnce(client, 'frozendel', 'volume.delete', { name: 'a' }, Date.now() + 18_000), { deleted: true });
    assert.equal(ghosts.asked.get('ghost7 destroy'), undefined, 'the frozen node was not asked');
    assert.equal(ghosts.asked.get('ghost8 destroy'), 1, 'the live one was');
  });

  it('holding an open of a volume.create: found silent once it is not live, and the volume placed again on the live nodes', async () => {
    const ghosts = await ghostsFrozenOneByOne('frozencreate', ['ghost9', 'ghost10']);
    g = ghosts.g;
    const client = g.client(25_000);
    // Frozen just before the create: still live when the controller places one shard on each of
    // ctl, ghost9 and ghost10, and then silent (no heartbeat within the live window, its claim
    // unanswered) while the controller waits for its open.
    ghosts.freeze('ghost9');
    const created = await apiRequestOnce(client, 'frozencreate', 'volume.create', { name: 'c', pageCount: 96, shards: 3, stripePages: 16, replicas: 1 }, Date.now() + 20_000);
    assert.equal((created as Partial<ErrorReply>).error, undefined, JSON.stringify(created));
    assert.equal(ghosts.asked.get('ghost9 open'), 1, 'ghost9 was sent an open first');
    const info = (await apiRequestOnce(client, 'frozencreate', 'volume.info', { name: 'c' }, Date.now() + 3000)) as { replicaSets: Array<{ members: string[] }> };
    assert.deepEqual([...new Set(info.replicaSets.flatMap((r) => r.members))].sort(), ['ctl', 'ghost10']);
  });

  it('holding a grow of a volume.resize: the resize is refused unavailable, naming it silent, and made when sent again (a node not live takes the size when it reconciles)', async () => {
    const ghosts = await ghostsFrozenOneByOne('frozenresize', ['ghost11', 'ghost12']);
    g = ghosts.g;
    const client = g.client(25_000);
    await client.createVolume({ name: 'r', pageCount: 64, replicas: 3 });
    ghosts.freeze('ghost11');
    const refused = (await apiRequestOnce(client, 'frozenresize', 'volume.resize', { name: 'r', pageCount: 128 }, Date.now() + 20_000)) as ErrorReply;
    assert.equal(refused.error?.code, 'unavailable', JSON.stringify(refused));
    assert.match(refused.error.message, /node 'ghost11' is silent/);
    assert.equal(ghosts.asked.get('ghost11 grow'), 1);
    const resized = (await apiRequestOnce(client, 'frozenresize', 'volume.resize', { name: 'r', pageCount: 128 }, Date.now() + 10_000)) as { pageCount?: number };
    assert.equal(resized.pageCount, 128, JSON.stringify(resized));
    assert.equal(ghosts.asked.get('ghost11 grow'), 1, 'not asked again once not live');
  });
});

describe('a volume.delete the controller makes after its node began a clean stop', function () {
  this.timeout(60_000);
  let g: GhostController | undefined;

  after(async () => {
    await g?.stop();
  });

  it('does not wait for the destroys (the stop is past): it is answered deleted before the node\'s connection closes', async () => {
    // Three nodes that answer their opens (slowly once `slowOpens`) and never their destroys;
    // the controller's node is draining, so the volumes' replicas are all on them.
    let slowOpens = false;
    const ok = (msg: Msg): void => void msg.respond(encode({ ok: true }));
    g = await GhostController.start('stopdel', ['ghost1', 'ghost2', 'ghost3'], {
      open: (_ghost, msg) => (slowOpens ? void setTimeout(() => ok(msg), 1500) : ok(msg)),
      destroy: () => undefined,
    });
    const client = g.client(10_000);
    await client.drainNode('ctl');
    const created = await client.createVolume({ name: 'a', pageCount: 64, replicas: 3 });
    assert.equal(created.name, 'a');
    // The controller's queue: a create whose opens take 1.5 s, then the delete of `a` behind it.
    slowOpens = true;
    const create = client.createVolume({ name: 'b', pageCount: 64, replicas: 3 }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 100));
    const deleted = g.fake.request(controllerSubject('stopdel', 'volume.delete'), encode({ name: 'a' }), { timeout: 12_000 }).then((m) => decode(m.data));
    await new Promise((r) => setTimeout(r, 200));
    // The clean stop begins while the delete waits its turn: its change is made after that.
    const stopped = g.node!.stop();
    assert.deepEqual(await deleted, { deleted: true });
    await stopped;
    await create;
  });
});
