import { strict as assert } from 'node:assert';
import { connect } from 'nats';
import { ConnectionState, RequestMux } from '../../runtime/request-mux';
import { startNatsServer } from '../../runtime/nats-server';
import { waitFor } from '../support/wait';

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
      const outcomes: string[] = [];
      const started = performance.now();
      const requests = Array.from({ length: 100 }, () =>
        mux.request('echo', new Uint8Array(1024), { timeoutMs: 1500 }).then(
          () => 'ok',
          (e: { code?: string }) => {
            const code = `${e.code}@${performance.now() - started < 500 ? 'once' : 'later'}`;
            outcomes.push(code);
            return code;
          },
        ),
      );
      await new Promise((r) => setTimeout(r, 200));
      const refusedAtOnce = outcomes.filter((o) => o === 'overloaded@once').length;
      await Promise.all(requests);
      console.log(`      refused at once: ${refusedAtOnce}; all outcomes: ${JSON.stringify(countOf(outcomes))}`);
      assert.ok(refusedAtOnce >= 96, `at most pendingMax (4) requests may wait; ${100 - refusedAtOnce} were held`);
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
      const t0 = performance.now();
      const waiting = mux.request('echo', Uint8Array.of(1), { timeoutMs: 5000 }).then(
        () => 'answered',
        (e: { code?: string }) => `${e.code} after ${Math.round(performance.now() - t0)} ms`,
      );
      await new Promise((r) => setTimeout(r, 100));
      mux.close();
      const outcome = await waiting;
      console.log(`      ${outcome}`);
      assert.match(outcome, /^unavailable/);
      assert.ok(performance.now() - t0 < 1000, `failed at the close, not at its deadline: ${outcome}`);
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
      const t0 = performance.now();
      const waiting = mux.request('echo', Uint8Array.of(1), { timeoutMs: 10_000 }).then(
        () => assert.fail('nothing can answer'),
        (e: { code?: string; message?: string; details?: Record<string, unknown> }) => ({ e, ms: performance.now() - t0 }),
      );
      await new Promise((r) => setTimeout(r, 100));
      await nc.close();
      const { e, ms } = await waiting;
      assert.equal(e.code, 'unavailable', e.message);
      assert.match(e.message ?? '', /not sent: the connection is closed/);
      assert.equal(e.details?.['notSent'], true);
      assert.ok(ms < 3000, `failed after ${ms.toFixed(0)} ms, not at its 10 s deadline`);
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
