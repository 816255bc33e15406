import { strict as assert } from 'node:assert';
import { connect, type NatsConnection } from 'nats';
import { ApiRouter } from '../../cluster/api-router';
import { controllerSubject } from '../../messages/control';
import { decode, encode } from '../../messages/codec';
import { HEADER_DEADLINE } from '../../messages/headers';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';

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
