import { strict as assert } from 'node:assert';
import { connect, type NatsConnection } from 'nats';
import { ConnectionState, RequestMux, watchDenials, type PermissionDenied } from '../../runtime/request-mux';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { ProtocolError } from '../../messages/errors';
import { waitFor } from '../support/wait';

/** A user that may publish to `open.>` only (and subscribe to its inboxes), and one that may do anything. */
const AUTHORIZATION = `authorization {
  users = [
    { user: "limited", password: "l", permissions: { publish: ["open.>"], subscribe: ["_INBOX.>"] } }
    { user: "all", password: "a" }
  ]
}
`;

describe('RequestMux: a subject the server does not let this user publish to', function () {
  this.timeout(30_000);
  let server: NatsServerHandle;
  let responder: NatsConnection;
  let nc: NatsConnection;

  before(async () => {
    server = await startNatsServer({ jetstream: false, extraConfig: AUTHORIZATION });
    responder = await connect({ servers: server.url, user: 'all', pass: 'a' });
    for (const subject of ['open.*', 'closed.*']) responder.subscribe(subject, { callback: (_e, m) => m.respond(m.data) });
    await responder.flush();
  });
  beforeEach(async () => {
    nc = await connect({ servers: server.url, user: 'limited', pass: 'l', noAsyncTraces: true });
  });
  afterEach(async () => {
    if (!nc.isClosed()) await nc.close();
  });
  after(async () => {
    await responder?.close();
    await server?.stop();
  });

  it('fails the requests on it forbidden when the server says so, long before their deadline; others go on', async () => {
    const mux = new RequestMux(nc, { connection: new ConnectionState(nc) });
    const refused = [mux.request('closed.a', Uint8Array.of(1), { timeoutMs: 20_000 }), mux.request('closed.a', Uint8Array.of(2), { timeoutMs: 20_000 })];
    const other = mux.request('closed.b', Uint8Array.of(3), { timeoutMs: 20_000 });
    const answered = await mux.request('open.a', Uint8Array.of(4), { timeoutMs: 5000 });
    assert.deepEqual([...answered.data], [4]);
    for (const r of [...refused, other]) {
      await assert.rejects(r, (e: unknown) => {
        assert.ok(e instanceof ProtocolError && e.code === 'forbidden', String(e));
        assert.match(e.message, /does not let this connection's user publish to closed\.[ab] \(its permissions\)/);
        assert.equal(e.details?.['natsCode'], 'PERMISSIONS_VIOLATION');
        return true;
      });
    }
    assert.equal(mux.size, 0);
    mux.close();
  });

  it('watchDenials reports the first refusal at once, then at most one a period with how many came between', async () => {
    const connection = new ConnectionState(nc);
    const reports: Array<[PermissionDenied, number]> = [];
    const stop = watchDenials(connection, (denied, unreported) => reports.push([denied, unreported]), 400);
    for (let i = 0; i < 5; i++) nc.publish(`closed.x${i}`, Uint8Array.of(i));
    await waitFor('the first refusal reported', () => reports.length === 1);
    assert.deepEqual(reports[0], [{ operation: 'publish', subject: 'closed.x0' }, 0]);
    await new Promise((r) => setTimeout(r, 450));
    nc.publish('closed.y', Uint8Array.of(9));
    await waitFor('the next refusal reported after the period', () => reports.length === 2);
    assert.deepEqual(reports[1], [{ operation: 'publish', subject: 'closed.y' }, 4]);
    await new Promise((r) => setTimeout(r, 450));
    nc.subscribe('open.sub');
    await waitFor('a refused subscription reported too', () => reports.length === 3);
    assert.deepEqual(reports[2], [{ operation: 'subscription', subject: 'open.sub' }, 0]);
    stop();
  });
});
