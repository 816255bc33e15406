import { strict as assert } from 'node:assert';
import { connect } from 'nats';
import { ConnectionState, RequestMux } from '../../runtime/request-mux';
import { startNatsServer } from '../../runtime/nats-server';
import { waitFor } from '../support/wait';
import { ManualClock, settledSoFar } from '../support/manual-clock';

describe('RequestMux pendingMax while the connection is down (whileDisconnected: wait)', function () {
  this.timeout(60_000);

  it('refuses with overloaded at once the requests beyond pendingMax that would wait for the reconnect', async () => {
    const server = await startNatsServer({ jetstream: false });
    const nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100, noAsyncTraces: true });
    try {
      const connection = new ConnectionState(nc);
      const mux = new RequestMux(nc, { connection, whileDisconnected: 'wait', pendingMax: 4 });
      await server.stop();
      await waitFor('the client to see the disconnect', () => !connection.connected, 10_000);
      // Their timeouts on a manual clock: those that wait do so until the test moves it.
      const clock = new ManualClock();
      let phase = 'once';
      const outcomes: string[] = [];
      const requests = clock.run(() => Array.from({ length: 100 }, () =>
        mux.request('echo', new Uint8Array(1024), { timeoutMs: 1500 }).then(
          () => 'ok',
          (e: { code?: string }) => {
            const code = `${e.code}@${phase}`;
            outcomes.push(code);
            return code;
          },
        ),
      ));
      // Refused at once: settled before any timer or I/O.
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(countOf(outcomes), { 'overloaded@once': 96 }, 'at most pendingMax (4) requests may wait');
      phase = 'at their timeout';
      clock.advance(1500);
      await Promise.all(requests);
      assert.deepEqual(countOf(outcomes), { 'overloaded@once': 96, 'unavailable@at their timeout': 4 });
    } finally {
      await nc.close();
      await server.stop();
    }
  });

  it('closing the mux fails at once the requests that wait for the reconnect, as it fails those waiting for a reply', async () => {
    const server = await startNatsServer({ jetstream: false });
    const nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100, noAsyncTraces: true });
    try {
      const connection = new ConnectionState(nc);
      const mux = new RequestMux(nc, { connection, whileDisconnected: 'wait' });
      await server.stop();
      await waitFor('the client to see the disconnect', () => !connection.connected, 10_000);
      // Its timeout on a manual clock that does not move: only the close can fail it.
      const clock = new ManualClock();
      const request = clock.run(() => mux.request('echo', Uint8Array.of(1), { timeoutMs: 5000 }));
      const waiting = request.then(
        () => 'answered',
        (e: { code?: string; message?: string; details?: Record<string, unknown> }) => `${e.code}: ${e.message} (notSent ${String(e.details?.['notSent'])})`,
      );
      assert.equal(await settledSoFar(request), 'pending', 'waits for the reconnect');
      mux.close();
      assert.equal(await settledSoFar(request), 'rejected', 'failed at the close');
      assert.equal(await waiting, 'unavailable: request on echo not sent: the request multiplexer is closed (notSent true)');
    } finally {
      await nc.close();
      await server.stop();
    }
  });

  it('a connection closed for good while requests wait for the reconnect fails them at once, not at their deadline', async () => {
    const server = await startNatsServer({ jetstream: false });
    const nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100, noAsyncTraces: true });
    try {
      const connection = new ConnectionState(nc);
      const mux = new RequestMux(nc, { connection, whileDisconnected: 'wait' });
      await server.stop();
      await waitFor('the client to see the disconnect', () => !connection.connected, 10_000);
      // Its timeout on a manual clock that does not move: only the close can fail it.
      const clock = new ManualClock();
      const request = clock.run(() => mux.request('echo', Uint8Array.of(1), { timeoutMs: 10_000 }));
      const waiting = request.then(
        () => assert.fail('nothing can answer'),
        (e: { code?: string; message?: string; details?: Record<string, unknown> }) => e,
      );
      assert.equal(await settledSoFar(request), 'pending', 'waits for the reconnect');
      await nc.close();
      await waitFor('the connection state to see the close', () => connection.closed, 10_000);
      assert.equal(await settledSoFar(request), 'rejected', 'failed as the connection closed, not at its deadline');
      const e = await waiting;
      assert.equal(e.code, 'unavailable', e.message);
      assert.match(e.message ?? '', /not sent: the connection is closed/);
      assert.equal(e.details?.['notSent'], true);
      assert.equal(connection.closed, true, 'the connection state knows it is closed for good');
      assert.equal(connection.connected, false);
    } finally {
      await nc.close();
      await server.stop();
    }
  });
});

function countOf(xs: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}
