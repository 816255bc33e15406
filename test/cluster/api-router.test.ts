import { strict as assert } from 'node:assert';
import { connect, type NatsConnection } from 'nats';
import { ApiRouter, CHANGE_RESENDS_MAX, mapReplyRanges } from '../../cluster/api-router';
import type { StrataClient } from '../../cluster/client';
import { PAGE_MAP_RANGES_MAX } from '../../messages/api';
import { NODES_MAX } from '../../actors/controller';
import { validatePageMapReply } from '../../messages/validate';
import { controllerSubject } from '../../messages/control';
import { decode, encode } from '../../messages/codec';
import { HEADER_DEADLINE } from '../../messages/headers';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { apiSubject, shardSubject } from '../../messages/subjects';
import { errorReply, ProtocolError } from '../../messages/errors';
import { hasRequestId } from '../../messages/validate';
import { waitFor } from '../support/wait';

/** Calls `fn` with Date.now() held still: the deadlines it works out from it are exact. */
function clockHeld<T>(fn: (nowMs: number) => T): T {
  const realNow = Date.now;
  const now = realNow();
  Date.now = () => now;
  try {
    return fn(now);
  } finally {
    Date.now = realNow;
  }
}

/** `nc`, with the subject and timeout of each request made through it noted in `asked`. */
function noting(nc: NatsConnection, asked: Array<{ subject: string; timeoutMs: number | undefined }>): NatsConnection {
  return new Proxy(nc, {
    get(target, key) {
      if (key === 'request') {
        return (subject: string, data?: Uint8Array, opts?: Parameters<NatsConnection['request']>[2]) => {
          asked.push({ subject, timeoutMs: opts?.timeout });
          return target.request(subject, data, opts);
        };
      }
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

describe('ApiRouter forwarding catalog requests to the controller', function () {
  this.timeout(30_000);
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let controller: NatsConnection;
  /** Strata-Deadline headers of the volume.list requests the stand-in controller received. */
  const received: string[] = [];

  before(async () => {
    server = await startNatsServer({ jetstream: false });
    nc = await connect({ servers: server.url });
    controller = await connect({ servers: server.url });
    // A stand-in controller: counts what reaches it and answers an empty list.
    controller.subscribe(controllerSubject('test', 'volume.list'), {
      callback: (_e, m) => {
        received.push(m.headers?.get(HEADER_DEADLINE) ?? '');
        m.respond(encode({ volumes: [] }));
      },
    });
    await controller.flush();
  });
  after(async () => {
    await nc?.close();
    await controller?.close();
    await server?.stop();
  });

  it("keeps the caller's deadline of a volume.create or volume.branch past the router's timeout; cuts every other verb's to it", () => {
    const router = new ApiRouter(nc, 'test', 1000);
    const now = 1_700_000_000_000;
    for (const verb of ['volume.create', 'volume.branch']) {
      assert.equal(router.deadline(now + 60_000, now, verb), now + 60_000, verb);
      assert.equal(router.deadline(undefined, now, verb), now + 1000, `${verb} without a deadline of its caller's`);
    }
    for (const verb of ['volume.info', 'volume.list', 'volume.delete', undefined]) assert.equal(router.deadline(now + 60_000, now, verb), now + 1000, String(verb));
    assert.throws(() => router.deadline(now - 1, now, 'volume.branch'), (e: unknown) => (e as { code?: unknown }).code === 'timeout');
  });

  it('a request whose deadline has passed, or is this very millisecond, is answered timeout and never reaches the controller', async () => {
    const router = new ApiRouter(nc, 'test', 5000);
    type Reply = { error?: { code?: string; message?: string } };
    const reply = decode(await router.forwardToController('volume.list', encode({}), Date.now() - 1)) as Reply;
    assert.equal(reply.error?.code, 'timeout');
    assert.match(reply.error?.message ?? '', /the deadline passed before volume\.list reached the controller/);
    // A deadline of now, to the millisecond (the clock held still while the call starts: no time
    // is left, though a request timeout of 0 would not be refused by the NATS client).
    const realNow = Date.now;
    const now = realNow();
    Date.now = () => now;
    let atNow: Promise<Uint8Array>;
    try {
      atNow = router.forwardToController('volume.list', encode({}), now);
    } finally {
      Date.now = realNow;
    }
    assert.equal((decode(await atNow) as Reply).error?.code, 'timeout');
    // Anything published would have reached the stand-in by now (both connections flushed).
    await nc.flush();
    await controller.flush();
    assert.deepEqual(received, []);
    // One within its deadline is forwarded, carrying that deadline, and its reply returned as it came.
    const deadlineMs = Date.now() + 5000;
    assert.deepEqual(decode(await router.forwardToController('volume.list', encode({}), deadlineMs)), { volumes: [] });
    assert.deepEqual(received, [String(deadlineMs)]);
  });
});

describe('ApiRouter when the controller or the catalog does not answer', function () {
  this.timeout(30_000);
  let server: NatsServerHandle;
  let nc: NatsConnection;

  before(async () => {
    server = await startNatsServer({ jetstream: false });
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc?.close();
    await server?.stop();
  });

  type Reply = { error?: { code?: string; message?: string; details?: Record<string, unknown> } };

  it('one that takes the request and never answers: timeout (the outcome is unknown), at the deadline', async () => {
    const frozen = nc.subscribe(controllerSubject('test', 'volume.create'), { callback: () => undefined });
    await nc.flush();
    try {
      // The clock held still while the call starts: its request waits the 300 ms to its deadline,
      // exactly, not the router's 5 s, and its timeout says so.
      const asked: Array<{ subject: string; timeoutMs: number | undefined }> = [];
      const router = new ApiRouter(noting(nc, asked), 'test', 5000);
      const reply = decode(await clockHeld((now) => router.forwardToController('volume.create', encode({}), now + 300))) as Reply;
      assert.deepEqual(asked, [{ subject: controllerSubject('test', 'volume.create'), timeoutMs: 300 }]);
      assert.equal(reply.error?.code, 'timeout', reply.error?.message);
      assert.equal(reply.error?.message, 'the controller did not answer within 300 ms');
      assert.equal(reply.error?.details?.['timeoutMs'], 300);
    } finally {
      frozen.unsubscribe();
    }
  });

  /**
   * A controller on `verb` that takes every change (their bodies, in `bodies`) and answers none,
   * as one whose node died with them, until `seatNext()`: from then on the next one, seated, answers
   * `answer`.
   */
  async function dyingController(verb: string, answer: unknown): Promise<{ bodies: unknown[]; seatNext: () => void; sub: { unsubscribe(): void } }> {
    const bodies: unknown[] = [];
    let dead = true;
    const sub = nc.subscribe(controllerSubject('test', verb), {
      callback: (_e, m) => {
        bodies.push(decode(m.data));
        if (!dead) m.respond(encode(answer));
      },
    });
    await nc.flush();
    return { bodies, seatNext: () => (dead = false), sub };
  }

  it('a change with a request id taken by a controller that dies with it: sent again, the same bytes, to the controller seated next, whose answer is returned; one without is not', async () => {
    // The first controller takes every change and never answers (its node died with them).
    const { bodies, seatNext, sub } = await dyingController('volume.delete', { deleted: true });
    try {
      const router = new ApiRouter(nc, 'test', 5000);
      const withId = router.forwardToController('volume.delete', encode({ name: 'a', requestId: 'r1' }), Date.now() + 4000, true);
      const without = router.forwardToController('volume.delete', encode({ name: 'b' }), Date.now() + 1500, false);
      await waitFor('both delivered', () => bodies.length === 2);
      // The next controller takes its seat.
      seatNext();
      router.controllerSeated();
      assert.deepEqual(decode(await withId), { deleted: true });
      assert.deepEqual(bodies, [{ name: 'a', requestId: 'r1' }, { name: 'b' }, { name: 'a', requestId: 'r1' }]);
      const lost = decode(await without) as Reply;
      assert.equal(lost.error?.code, 'timeout', 'a change without a request id is not sent again');
      assert.equal(bodies.length, 3);
      // Nothing of the waits is kept once they ended.
      assert.equal(router.seated.waits, 0);
      assert.equal(router.changesSentAgain, 1, 'counted (strata_catalog_changes_sent_again_total)');
    } finally {
      sub.unsubscribe();
    }
  });

  it('a change from the API without a request id is given one, sent again with it to the controller seated next; one with an id, or a body that is no map, goes as it came', async () => {
    const { bodies, seatNext, sub } = await dyingController('volume.create', { created: true });
    try {
      const router = new ApiRouter(nc, 'test', 5000);
      const body = { name: 'c', pageCount: 8 };
      const answer = router.forwardChange('volume.create', body, encode(body), Date.now() + 4000);
      await waitFor('delivered', () => bodies.length === 1);
      seatNext();
      router.controllerSeated();
      assert.deepEqual(decode(await answer), { created: true });
      assert.equal(bodies.length, 2);
      const first = bodies[0] as { requestId?: unknown };
      assert.ok(hasRequestId(first), JSON.stringify(first));
      assert.deepEqual(bodies[1], first, 'the same request id each time');
      assert.deepEqual({ ...first, requestId: undefined }, { ...body, requestId: undefined });
      // Its own id kept; a body that is not a map (the controller refuses it) unchanged.
      const own = { name: 'd', pageCount: 8, requestId: 'mine' };
      assert.deepEqual(decode(await router.forwardChange('volume.create', own, encode(own), Date.now() + 2000)), { created: true });
      assert.deepEqual(bodies[2], own);
      assert.deepEqual(decode(await router.forwardChange('volume.create', [1], encode([1]), Date.now() + 2000)), { created: true });
      assert.deepEqual(bodies[3], [1]);
    } finally {
      sub.unsubscribe();
    }
  });

  it(`a change with a request id is sent again at most CHANGE_RESENDS_MAX (${CHANGE_RESENDS_MAX}) times, then waits for that answer until its deadline`, async () => {
    let received = 0;
    const sub = nc.subscribe(controllerSubject('test', 'volume.delete'), { callback: () => void received++ });
    await nc.flush();
    try {
      const router = new ApiRouter(nc, 'test', 5000);
      const answer = router.forwardToController('volume.delete', encode({ name: 'a', requestId: 'r2' }), Date.now() + 3000, true);
      for (let i = 1; i <= CHANGE_RESENDS_MAX + 3; i++) {
        await waitFor(`send ${i}`, () => received >= Math.min(i, CHANGE_RESENDS_MAX + 1));
        router.controllerSeated();
      }
      assert.equal(((decode(await answer)) as Reply).error?.code, 'timeout');
      assert.equal(received, CHANGE_RESENDS_MAX + 1);
      assert.equal(router.changesSentAgain, CHANGE_RESENDS_MAX);
    } finally {
      sub.unsubscribe();
    }
  });

  it('a change that may have reached a controller is never answered as not made: no answer in time, or after it was sent again no responders or "no longer runs the controller", is timeout with outcomeUnknown and its request id', async () => {
    const outcome = (r: Reply): unknown[] => [r.error?.code, r.error?.details?.['outcomeUnknown'], r.error?.details?.['requestId'], r.error?.details?.['code']];
    const router = new ApiRouter(nc, 'test', 5000);
    // Taken and never answered: the request id the router gave it is told.
    const taken = await dyingController('volume.resize', {});
    try {
      const body = { name: 'v1', pageCount: 8 };
      const reply = decode(await router.forwardChange('volume.resize', body, encode(body), Date.now() + 300)) as Reply;
      assert.deepEqual(outcome(reply), ['timeout', true, (taken.bodies[0] as { requestId: string }).requestId, 'timeout']);
    } finally {
      taken.sub.unsubscribe();
    }
    // Taken; the controller seated next does not serve yet: no responders to the send again.
    const gone = await dyingController('volume.delete', {});
    const lost = { name: 'v1', requestId: 'r-gone' };
    const goneAnswer = router.forwardChange('volume.delete', lost, encode(lost), Date.now() + 3000);
    await waitFor('delivered', () => gone.bodies.length === 1);
    gone.sub.unsubscribe();
    await nc.flush();
    router.controllerSeated();
    assert.deepEqual(outcome(decode(await goneAnswer) as Reply), ['timeout', true, 'r-gone', 'unavailable']);
    // Taken; the one seated next answers that it no longer runs the controller.
    const moved = await dyingController('volume.delete', errorReply(new ProtocolError('unavailable', "node 'x' no longer runs the controller; retry", { notController: true })));
    try {
      const body = { name: 'v1', requestId: 'r-moved' };
      const answer = router.forwardChange('volume.delete', body, encode(body), Date.now() + 3000);
      await waitFor('delivered', () => moved.bodies.length === 1);
      moved.seatNext();
      router.controllerSeated();
      const reply = decode(await answer) as Reply;
      assert.deepEqual(outcome(reply), ['timeout', true, 'r-moved', 'unavailable']);
      assert.equal(reply.error?.details?.['notController'], true);
      // The same answer to a first send is passed on as it came: nothing was done.
      assert.deepEqual(outcome(decode(await router.forwardChange('volume.delete', body, encode(body), Date.now() + 2000)) as Reply), ['unavailable', undefined, undefined, undefined]);
    } finally {
      moved.sub.unsubscribe();
    }
  });

  it('none at all (no responders): unavailable, at once, marked noController (a client asks again through a gap between two controllers)', async () => {
    const router = new ApiRouter(nc, 'test', 5000);
    // Answered by the server's "no responders" status (unavailable), not by the request's
    // timeout at the deadline (which is answered timeout).
    const reply = decode(await router.forwardToController('volume.create', encode({}), Date.now() + 5000)) as Reply;
    assert.equal(reply.error?.code, 'unavailable', reply.error?.message);
    assert.match(reply.error?.message ?? '', /no responders/);
    assert.equal(reply.error?.details?.['noController'], true, JSON.stringify(reply));
  });

  it('page requests for ever new volume names keep the routing of at most 1024 volumes', async () => {
    const router = new ApiRouter(nc, 'test', 5000);
    const cached = (): Map<string, unknown> => (router as unknown as { volumes: Map<string, unknown> }).volumes;
    // Nobody answers volume.info: each flush fails unavailable, its volume's routing stays cached.
    for (let batch = 0; batch < 11; batch++) {
      const calls = Array.from({ length: 100 }, (_, i) => router.flush({ volume: `v${batch * 100 + i}` }, Date.now() + 5000));
      for (const outcome of await Promise.allSettled(calls)) {
        assert.equal(outcome.status, 'rejected');
        assert.equal((outcome as PromiseRejectedResult).reason.code, 'unavailable');
      }
    }
    assert.equal(cached().size, 1024);
    assert.equal(cached().has('v0'), false, 'the least recently used went first');
    assert.equal(cached().has('v1099'), true);
  });
});

describe('ApiRouter gathering the nodes\' status', function () {
  this.timeout(30_000);
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let others: NatsConnection;
  /** The members the stand-in controller answers (undefined: no controller). */
  let members: Array<{ nodeId: string; live: boolean; lastSeenMs?: number }> | undefined;
  let controllerSub: { unsubscribe(): void } | undefined;

  before(async () => {
    server = await startNatsServer({ jetstream: false });
    nc = await connect({ servers: server.url });
    others = await connect({ servers: server.url });
    // Stand-in nodes: n1 answers whole and at once, n2 in two parts, the second 200 ms later.
    // n2's first part goes first: a gather may end as soon as n1 (live) has answered, and a member
    // not counted live is waited for only once it has begun answering.
    others.subscribe('strata.test.nodes.status', {
      callback: (_e, m) => {
        const reply = m.reply!;
        others.publish(reply, encode({ node: { id: 'n2' }, shards: [{ volumeId: 'v', shard: 0 }], part: 0, parts: 2 }));
        m.respond(encode({ node: { id: 'n1' }, shards: [{ volumeId: 'v', shard: 0 }] }));
        // Not once the connection is closed: a gather may end before it (after the last test).
        setTimeout(() => others.isClosed() || others.publish(reply, encode({ node: { id: 'n2' }, shards: [{ volumeId: 'v', shard: 1 }], part: 1, parts: 2 })), 200);
      },
    });
    await others.flush();
  });
  afterEach(async () => {
    controllerSub?.unsubscribe();
    controllerSub = undefined;
    // The server has the unsubscribe before the next test asks (else its request could reach the
    // closed subscription, get no "no responders", and wait for its deadline).
    await others.flush();
  });
  after(async () => {
    await nc?.close();
    await others?.close();
    await server?.stop();
  });

  async function withController(list: Array<{ nodeId: string; live: boolean; lastSeenMs?: number }>): Promise<void> {
    members = list;
    controllerSub = others.subscribe(controllerSubject('test', '>'), {
      callback: (_e, m) => m.respond(encode(m.subject.endsWith('.members') ? { members } : { volumes: [] })),
    });
    await others.flush();
  }

  /** The status as n1's router answers it: the nodes' shard counts, and how its gather ended. */
  async function status(router: ApiRouter): Promise<{ nodes: string[]; gather: ApiRouter['lastStatusGather'] }> {
    const reply = (await router.clusterStatus({ node: { id: 'n1' } }, Date.now() + 25_000)) as { nodes: Array<{ node: { id: string }; shardCount: number; partsMissing?: number }> };
    const nodes = reply.nodes.map((n) => `${n.node.id}:${n.shardCount}${n.partsMissing !== undefined ? ` (${n.partsMissing} missing)` : ''}`).sort();
    return { nodes, gather: router.lastStatusGather };
  }

  it('ends once every live member has answered all its parts, not at the end of its wait', async () => {
    // n3 was heard from, and is silent now (dead): not waited for.
    await withController([{ nodeId: 'n1', live: true }, { nodeId: 'n2', live: true }, { nodeId: 'n3', live: false, lastSeenMs: 1 }]);
    // A gather of up to 15 s: the answers are all in after ~200 ms.
    const r = await status(new ApiRouter(nc, 'test', 30_000, { statusGatherMsMax: 15_000 }));
    assert.deepEqual(r.nodes, ['n1:1', 'n2:2'], 'n2\'s second part is waited for');
    assert.deepEqual(r.gather, { ended: 'answered', waitMs: 15_000 }, 'ended by the answers, not its wait');
  });

  it('waits for a member the controller has not heard from since it started (just restarted), which answers', async () => {
    // n2 is placed on but unheard by a controller that has just started: no lastSeenMs, not live.
    await withController([{ nodeId: 'n1', live: true }, { nodeId: 'n2', live: false }]);
    const r = await status(new ApiRouter(nc, 'test', 30_000, { statusGatherMsMax: 15_000 }));
    assert.deepEqual(r.nodes, ['n1:1', 'n2:2']);
    assert.deepEqual(r.gather, { ended: 'answered', waitMs: 15_000 }, 'ended by the answers, not its wait');
  });

  it('a member not counted live that has begun answering is waited for until its last part', async () => {
    await withController([{ nodeId: 'n1', live: true }, { nodeId: 'n2', live: false, lastSeenMs: 1 }]);
    const r = await status(new ApiRouter(nc, 'test', 30_000, { statusGatherMsMax: 15_000 }));
    assert.deepEqual(r.nodes, ['n1:1', 'n2:2'], 'n2 is not cut off after its first part');
    assert.deepEqual(r.gather, { ended: 'answered', waitMs: 15_000 }, 'ended by the answers, not its wait');
  });

  it('waits its whole time for a live member that does not answer, and reports the others', async () => {
    await withController([{ nodeId: 'n1', live: true }, { nodeId: 'n2', live: true }, { nodeId: 'n4', live: true }]);
    const r = await status(new ApiRouter(nc, 'test', 30_000, { statusGatherMsMax: 600 }));
    assert.deepEqual(r.nodes, ['n1:1', 'n2:2']);
    assert.deepEqual(r.gather, { ended: 'waited', waitMs: 600 }, 'ended by its whole wait');
  });

  it('with a controller that takes the requests and never answers (frozen): answers before the caller\'s deadline, without the controller\'s part', async () => {
    // Before: the controller's part waited the caller's whole time, and the answer
    // came after the caller had given up (every `strata status` timed out while it was frozen).
    const frozen = others.subscribe(controllerSubject('test', '>'), { callback: () => undefined });
    await others.flush();
    try {
      // The clock held still while the status starts: the controller's part is asked with three
      // quarters of the 2 s to its deadline, exactly (a quarter is left for the reply).
      const asked: Array<{ subject: string; timeoutMs: number | undefined }> = [];
      const router = new ApiRouter(noting(nc, asked), 'test', 30_000, { statusGatherMsMax: 600 });
      const reply = (await clockHeld((now) => router.clusterStatus({ node: { id: 'n1' } }, now + 2000))) as { controllerReachable: boolean; nodes: unknown[] };
      assert.deepEqual(asked, [
        { subject: controllerSubject('test', 'members'), timeoutMs: 1500 },
        { subject: controllerSubject('test', 'volume.list'), timeoutMs: 1500 },
      ]);
      assert.deepEqual(router.lastStatusGather, { ended: 'waited', waitMs: 600 });
      assert.equal(reply.controllerReachable, false);
      assert.equal(reply.nodes.length, 2, 'the nodes that answered');
    } finally {
      frozen.unsubscribe();
    }
  });

  it('without a controller (the live members unknown), waits its whole time and reports who answered', async () => {
    const r = await status(new ApiRouter(nc, 'test', 30_000, { statusGatherMsMax: 600 }));
    assert.deepEqual(r.nodes, ['n1:1', 'n2:2']);
    assert.deepEqual(r.gather, { ended: 'waited', waitMs: 600 }, 'ended by its whole wait');
  });

  /** While `fn` runs, one more stand-in answers every gather with `answer(reply subject)`. */
  async function withStandIn(answer: (reply: string) => void, fn: () => Promise<void>): Promise<void> {
    const sub = others.subscribe('strata.test.nodes.status', { callback: (_e, m) => answer(m.reply!) });
    await others.flush();
    try {
      await fn();
    } finally {
      sub.unsubscribe();
    }
  }

  it('leaves out answers that are not maps, and waits for a node\'s parts of the count its first part gave, a stray part of another count not among them', async () => {
    await withController([{ nodeId: 'n1', live: true }, { nodeId: 'n2', live: true }, { nodeId: 'n4', live: true }]);
    await withStandIn((reply) => {
      others.publish(reply, encode([1, 2]));
      others.publish(reply, encode(42));
      others.publish(reply, encode({ node: { id: 'n4' }, shards: [{ volumeId: 'v', shard: 0 }], part: 0, parts: 2 }));
      others.publish(reply, encode({ node: { id: 'n4' }, shards: [{ volumeId: 'v', shard: 3 }], part: 1, parts: 3 }));
      setTimeout(() => others.isClosed() || others.publish(reply, encode({ node: { id: 'n4' }, shards: [{ volumeId: 'v', shard: 1 }], part: 1, parts: 2 })), 300);
    }, async () => {
      const r = await status(new ApiRouter(nc, 'test', 30_000, { statusGatherMsMax: 15_000 }));
      assert.deepEqual(r.nodes, ['n1:1', 'n2:2', 'n4:2']);
    });
  });

  it(`takes a controller that names more than NODES_MAX (${NODES_MAX}) members for none: the status comes without the controller's part`, async () => {
    await withController(Array.from({ length: NODES_MAX + 1 }, (_, i) => ({ nodeId: `m${i}`, live: false, lastSeenMs: 1 })));
    const reply = (await new ApiRouter(nc, 'test', 30_000, { statusGatherMsMax: 600 }).clusterStatus({ node: { id: 'n1' } }, Date.now() + 25_000)) as { controllerReachable: boolean; members: unknown[] };
    assert.deepEqual({ controllerReachable: reply.controllerReachable, members: reply.members.length }, { controllerReachable: false, members: 0 });
  });

  it('ends after 1024 messages, whoever has answered', async () => {
    // Without a controller the gather would wait its whole time.
    await withStandIn((reply) => {
      for (let i = 0; i < 1024; i++) others.publish(reply, encode({ node: { id: `x${i}` } }));
    }, async () => {
      const r = await status(new ApiRouter(nc, 'test', 30_000, { statusGatherMsMax: 20_000 }));
      assert.equal(r.gather?.ended, 'replies', 'ended by the count of messages, not its wait');
      assert.ok(r.nodes.length <= 1024, `${r.nodes.length} nodes`);
    });
  });
});

describe('ApiRouter branching a volume', function () {
  this.timeout(30_000);
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let stand: NatsConnection;
  /** What the stand-in controller was sent: volume.branch bodies, names deleted. */
  const branched: Array<Record<string, unknown>> = [];
  const deleted: string[] = [];
  /** The id volume.info gives the branch 'kid': another than the branch's once a volume of its name is made since. */
  let kidId = 'vk';
  const info = (name: string, id: string): Record<string, unknown> => ({ name, id, pageCount: 16, pageSize: 4096, shards: 1, stripePages: 4, replicas: 3, createdAt: 1 });

  before(async () => {
    server = await startNatsServer({ jetstream: false });
    nc = await connect({ servers: server.url });
    stand = await connect({ servers: server.url });
    // The catalog: the parent 'par' (id vp) and, once branched, 'kid' (id vk).
    stand.subscribe(controllerSubject('test', 'volume.branch'), {
      callback: (_e, m) => {
        const body = decode(m.data) as Record<string, unknown>;
        branched.push(body);
        // A name the catalog holds already: refused.
        if (body.name === 'taken') m.respond(encode(errorReply(new ProtocolError('bad_request', "name: volume 'taken' exists", { path: 'name' }))));
        else m.respond(encode({ ...info('kid', 'vk'), branch: { parent: 'par', parentId: 'vp', lsns: [7] } }));
      },
    });
    stand.subscribe(controllerSubject('test', 'volume.delete'), {
      callback: (_e, m) => {
        deleted.push((decode(m.data) as { name: string }).name);
        m.respond(encode({}));
      },
    });
    stand.subscribe(apiSubject('test', 'volume.info'), {
      callback: (_e, m) => {
        const { name } = decode(m.data) as { name: string };
        m.respond(encode(name === 'par' ? info('par', 'vp') : info('kid', kidId)));
      },
    });
    // The parent's shard answers a flush at its commit LSN 7; nothing serves the branch's shard
    // (none of its replicas holds the copy).
    stand.subscribe(shardSubject('test', 'vp', 0), { callback: (_e, m) => m.respond(encode({ lsn: 7, term: 1 })) });
    await stand.flush();
  });
  after(async () => {
    await nc?.close();
    await stand?.close();
    await server?.stop();
  });

  it('fills in the branch point from a flush of the parent; a branch whose shard does not serve by the deadline is answered timeout (naming the branch and its request id) and left to its copy (another router may have answered it serves), not deleted', async () => {
    const router = new ApiRouter(nc, 'test', 5000);
    const body = { name: 'kid', parent: 'par' };
    // The deadlines of the router's waits for the branch (a flush of the volume it made; the
    // parent's flush, for the branch point, is not one).
    const client = (router as unknown as { client: StrataClient }).client;
    const volumeOf = client.volume.bind(client);
    const flushDeadlines: Array<number | undefined> = [];
    const branchName = 'kid';
    client.volume = ((...args: Parameters<StrataClient['volume']>) => {
      const v = volumeOf(...args);
      const flush = v.flush.bind(v);
      v.flush = (options) => {
        if (args[0] === branchName) flushDeadlines.push(options?.deadlineMs);
        return flush(options);
      };
      return v;
    }) as StrataClient['volume'];
    const t0 = Date.now();
    await assert.rejects(router.branch(body, encode(body), t0 + 3000), (e: unknown) =>
      e instanceof ProtocolError && e.code === 'timeout' && e.details?.['id'] === 'vk' && e.details?.['outcomeUnknown'] === true && typeof e.details?.['requestId'] === 'string' &&
      /^branch 'kid' \(id vk\) of 'par' was made, but a shard of it did not serve in time \(/.test(e.message) &&
      /send the request again with its request id to wait for it, or delete the branch \(strata volume delete kid\)$/.test(e.message));
    // Given a request id by the router (it had none).
    assert.equal(branched.length, 1);
    const { requestId, ...sent } = branched[0] as { requestId?: unknown };
    assert.deepEqual(sent, { name: 'kid', parent: 'par', lsns: [7] });
    assert.ok(hasRequestId({ requestId }), `a request id: ${String(requestId)}`);
    assert.deepEqual(deleted, []);
    // It waited for the branch within the request's deadline, not the router's own 5 s.
    assert.equal(flushDeadlines.length, 1);
    assert.ok(flushDeadlines[0]! <= t0 + 3000, `flushed with a deadline ${flushDeadlines[0]! - t0} ms after the request's start`);
  });

  it('waits for the volume the branch request made, by its id: one of that name made since is not answered as the branch', async () => {
    kidId = 'vk2';
    try {
      const router = new ApiRouter(nc, 'test', 5000);
      const body = { name: 'kid', parent: 'par' };
      await assert.rejects(router.branch(body, encode(body), Date.now() + 3000), (e: unknown) =>
        e instanceof ProtocolError && e.code === 'timeout' && /^branch 'kid' \(id vk\) of 'par' was made, but a shard of it did not serve in time \(volume kid \(id vk\) was deleted: the volume of that name now is another \(id vk2\)\)/.test(e.message));
      assert.deepEqual(deleted, []);
    } finally {
      kidId = 'vk';
    }
  });

  it("answers the controller's refusal of a branch as it came, and deletes nothing", async () => {
    const router = new ApiRouter(nc, 'test', 5000);
    const body = { name: 'taken', parent: 'par' };
    const reply = decode(await router.branch(body, encode(body), Date.now() + 3000)) as { error?: { code?: string; message?: string } };
    assert.deepEqual({ code: reply.error?.code, message: reply.error?.message }, { code: 'bad_request', message: "name: volume 'taken' exists" });
    assert.ok(!deleted.includes('taken'), `deleted: ${deleted.join(', ')}`);
  });

  it('refuses a branch point of another count of LSNs than the parent has shards bad_request, before the controller is asked', async () => {
    const router = new ApiRouter(nc, 'test', 5000);
    const body = { name: 'kid2', parent: 'par', lsns: [7, 8] };
    const sentBefore = branched.length;
    const reply = decode(await router.branch(body, encode(body), Date.now() + 3000)) as { error?: { code?: string; message?: string } };
    assert.equal(reply.error?.code, 'bad_request', JSON.stringify(reply));
    assert.match(reply.error?.message ?? '', /^lsns: volume 'par' has 1 shard, so a branch of it takes 1 LSN \(one per shard, in shard order\), got 2$/);
    assert.equal(branched.length, sentBefore, 'the controller was not asked');
  });
});

describe('page.map replies', () => {
  it('hold at most PAGE_MAP_RANGES_MAX ranges: past them the answer ends where the first left out begins', () => {
    assert.deepEqual(mapReplyRanges(100, [{ first: 1, count: 2 }, { first: 10, count: 5 }]), { end: 100, ranges: [1, 2, 10, 5] });
    assert.deepEqual(mapReplyRanges(100, [{ first: 1, count: 2 }, { first: 10, count: 5 }, { first: 40, count: 1 }], 2), { end: 40, ranges: [1, 2, 10, 5] });
    const many = Array.from({ length: PAGE_MAP_RANGES_MAX + 3 }, (_, k) => ({ first: 2 * k, count: 1 }));
    const cut = mapReplyRanges(1 << 20, many);
    assert.equal(cut.end, 2 * PAGE_MAP_RANGES_MAX);
    assert.equal(cut.ranges.length, 2 * PAGE_MAP_RANGES_MAX);
    // The reply a client reads back validates: within its bound.
    assert.equal(validatePageMapReply({ ...cut, lsn: 1 }).end, 2 * PAGE_MAP_RANGES_MAX);
  });
});
