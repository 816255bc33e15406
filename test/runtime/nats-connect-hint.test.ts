import { strict as assert } from 'node:assert';
import * as net from 'node:net';
import { natsConnectHint, readGreeting } from '../../runtime/nats-connect-hint';
import { timersHeld } from '../support/manual-clock';

/** A TCP server that answers each connection with `greeting` (nothing when undefined); its URL. */
async function fakeServer(greeting: string | undefined): Promise<{ url: string; close: () => Promise<void>; connected: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let onConnection: (() => void) | undefined;
  const server = net.createServer((s) => {
    sockets.add(s);
    onConnection?.();
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
    if (greeting !== undefined) s.write(greeting);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `nats://127.0.0.1:${port}`,
    /** Resolves once a connection was taken (at once if one is open). */
    connected: () => (sockets.size > 0 ? Promise.resolve() : new Promise<void>((resolve) => (onConnection = resolve))),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

const withCode = (code: string): Error => Object.assign(new Error(code), { code });

describe('runtime/nats-connect-hint', () => {
  it('names what to give for a refused user, an untrusted or wrong server certificate', async () => {
    const servers = ['nats://127.0.0.1:1'];
    assert.match(await natsConnectHint(withCode('AUTHORIZATION_VIOLATION'), { servers }), /give one and its password, --nats-user and --nats-password-file/);
    assert.match(await natsConnectHint(withCode('AUTHORIZATION_VIOLATION'), { servers, user: 'u1' }), /user u1 refused/);
    for (const code of ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT']) {
      assert.match(await natsConnectHint(withCode(code), { servers }), /give the CA that signed it, --nats-ca-file/);
      assert.match(await natsConnectHint(withCode(code), { servers, tls: { caFile: '/x/ca.pem' } }), /not signed by the CA of \/x\/ca.pem/);
    }
    assert.match(await natsConnectHint(withCode('ERR_TLS_CERT_ALTNAME_INVALID'), { servers }), /does not name the host/);
    assert.match(await natsConnectHint(withCode('CERT_HAS_EXPIRED'), { servers }), /has expired/);
    // TLS required (a tls:// URL, or files given) of a server that does not offer it.
    const noTls = Object.assign(new Error('tls'), { code: 'SERVER_OPT_NA' });
    assert.match(await natsConnectHint(noTls, { servers: ['tls://127.0.0.1:1'], tls: {} }), /the URL asks for TLS, tls:\/\/ or wss:\/\/, and the server does not offer it: nothing was sent/);
    assert.match(await natsConnectHint(noTls, { servers, tls: { caFile: '/x/ca.pem' } }), /TLS files were given, and the server does not offer TLS: nothing was sent/);
    assert.equal(await natsConnectHint(Object.assign(new Error('noEcho'), { code: 'SERVER_OPT_NA' }), { servers }), '', 'another option the server lacks');
    assert.equal(await natsConnectHint(withCode('CONNECTION_REFUSED'), { servers }), '');
    assert.equal(await natsConnectHint(new Error('no code'), { servers }), '');
    assert.equal(await natsConnectHint(undefined, { servers }), '');
  });

  it('on a timeout over TLS, reads the greeting: a server that verifies its clients asks for a certificate', async () => {
    const verifying = await fakeServer('INFO {"tls_required":true,"tls_verify":true}\r\n');
    const plain = await fakeServer('INFO {"tls_required":true}\r\n');
    try {
      const timeout = withCode('TIMEOUT');
      assert.match(await natsConnectHint(timeout, { servers: [verifying.url], tls: { caFile: '/x/ca.pem' } }), /verifies its clients' certificates: give one it trusts, --nats-cert-file and --nats-key-file/);
      assert.match(await natsConnectHint(timeout, { servers: [verifying.url], tls: { certFile: '/x/c.pem', keyFile: '/x/c.key' } }), /may not trust \/x\/c.pem/);
      assert.equal(await natsConnectHint(timeout, { servers: [plain.url], tls: {} }), '');
      // Without TLS a timeout is only a timeout: nothing is probed.
      assert.equal(await natsConnectHint(timeout, { servers: [verifying.url] }), '');
    } finally {
      await verifying.close();
      await plain.close();
    }
  });

  it('reads the greeting within its bound: a silent server, a line that is not INFO, bad JSON or a flood give nothing', async function () {
    // A flood of bytes without a line's end ends the read at 16 KiB, not at the probe's 30 s.
    this.timeout(10_000);
    const silent = await fakeServer(undefined);
    const other = await fakeServer('-ERR nope\r\n');
    const badJson = await fakeServer('INFO {nope\r\n');
    const flood = await fakeServer('x'.repeat(64 * 1024));
    try {
      // A silent server: the probe ends at its bound. Its timer is held here and fired when the
      // test says (a manual clock); the server never closes the connection.
      const { value: probe, timers } = timersHeld((): Promise<Record<string, unknown> | undefined> => readGreeting(silent.url, 200));
      assert.deepEqual(timers.map((t) => t.ms), [200], 'one timer, of its bound');
      let ended = false;
      void probe.then(() => (ended = true));
      await silent.connected();
      assert.equal(ended, false, 'connected, it waits for the greeting');
      timers[0]!.fire();
      assert.equal(await probe, undefined);
      assert.equal(await readGreeting(other.url, 2000), undefined);
      assert.equal(await readGreeting(badJson.url, 2000), undefined);
      assert.equal(await readGreeting(flood.url, 30_000), undefined);
      assert.equal(await readGreeting('nats://127.0.0.1:1', 2000), undefined);
      assert.equal(await readGreeting('::not a url', 2000), undefined);
      assert.deepEqual(await readGreeting(other.url.replace('nats://', ''), 2000), undefined);
    } finally {
      await Promise.all([silent.close(), other.close(), badJson.close(), flood.close()]);
    }
  });
});
