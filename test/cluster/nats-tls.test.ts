import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect } from '../../cluster/client';
import { StrataNode } from '../../cluster/node';
import { checkNatsTlsFiles } from '../../cluster/nats-auth';
import { loadNodeConfig, ConfigError } from '../../cluster/config';
import { ProtocolError } from '../../messages/errors';
import { runBench } from '../../bench/strata-bench';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { runCli } from '../support/cli';

/** A CA, a certificate for 127.0.0.1 (and localhost, the name nats.js checks for it) and a client certificate, signed by it (openssl). */
function makeCertificates(dir: string): { ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string } {
  const at = (name: string): string => path.join(dir, name);
  const openssl = (...args: string[]): void => void execFileSync('openssl', args, { stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', at('ca.key'), '-out', at('ca.pem'), '-days', '2', '-subj', '/CN=strata-test-ca');
  for (const [name, ext] of [['server', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], ['client', 'extendedKeyUsage=clientAuth']] as const) {
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', at(`${name}.key`), '-out', at(`${name}.csr`), '-subj', `/CN=strata-test-${name}`);
    fs.writeFileSync(at(`${name}.ext`), `${ext}\n`);
    openssl('x509', '-req', '-in', at(`${name}.csr`), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial', '-out', at(`${name}.pem`), '-days', '2', '-extfile', at(`${name}.ext`));
  }
  return { ca: at('ca.pem'), serverCert: at('server.pem'), serverKey: at('server.key'), clientCert: at('client.pem'), clientKey: at('client.key') };
}

describe('a tls:// NATS URL requires TLS', function () {
  this.timeout(30_000);
  let plain: NatsServerHandle;
  let dir: string;
  before(async () => {
    plain = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-tls-url-'));
  });
  after(async () => {
    await plain?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a server that does not offer TLS before sending it anything (a user\'s password in the clear), a client and a node alike', async () => {
    const url = plain.url.replace(/^nats:/, 'tls:');
    assert.match(url, /^tls:\/\/127\.0\.0\.1:\d+$/);
    await assert.rejects(connect({ servers: url, cluster: 'c', timeoutMs: 3000, user: 'someone', pass: 'the-secret' }), (e: unknown) => {
      assert.ok(e instanceof ProtocolError && e.code === 'unavailable', String(e));
      assert.match(e.message, /: tls \(the URL asks for TLS, tls:\/\/ or wss:\/\/, and the server does not offer it: nothing was sent; use nats:\/\/ for a server without TLS\)$/);
      return true;
    });
    await assert.rejects(
      StrataNode.start({ nodeId: 'u1', cluster: 'c', natsUrl: url, dataDir: path.join(dir, 'u1'), hosts: 1, controller: true }),
      /the URL asks for TLS, tls:\/\/ or wss:\/\/, and the server does not offer it/,
    );
    // The same server as nats:// is a plain connection, as before.
    const client = await connect({ servers: plain.url, cluster: 'c', timeoutMs: 3000 });
    await client.close();
  });
});

describe('a cluster behind a NATS server that speaks only TLS and verifies its clients', function () {
  this.timeout(60_000);
  let dir: string;
  let certs: ReturnType<typeof makeCertificates>;
  let nats: NatsServerHandle;
  let node: StrataNode | undefined;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-tls-'));
    certs = makeCertificates(dir);
    nats = await startNatsServer({
      jetstream: false,
      extraConfig: `tls {\n  cert_file: ${JSON.stringify(certs.serverCert)}\n  key_file: ${JSON.stringify(certs.serverKey)}\n  ca_file: ${JSON.stringify(certs.ca)}\n  verify: true\n}\n`,
    });
  });
  after(async () => {
    await node?.stop();
    await nats?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a node (main and host threads) and a client connect with the CA and their certificate; without them they are refused', async () => {
    const tls = { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey };
    node = await StrataNode.start({ nodeId: 't1', cluster: 'tls', natsUrl: nats.url, natsTls: tls, dataDir: path.join(dir, 't1'), hosts: 1, controller: true });
    const client = await connect({ servers: nats.url, cluster: 'tls', timeoutMs: 5000, tls });
    try {
      await client.createVolume({ name: 'secret', pageCount: 16 });
      const page = new Uint8Array(4096).fill(9);
      await client.volume('secret').write(2, page);
      assert.deepEqual(Buffer.from(await client.volume('secret').read(2)), Buffer.from(page));
    } finally {
      await client.close();
    }
    // Refused, with what to give: nats.js itself says only "unable to verify the first
    // certificate" for the first, and "TIMEOUT" for a server that refuses a client's handshake.
    const refusals: [{ caFile?: string } | undefined, RegExp][] = [
      [undefined, /: unable to verify the first certificate \(the server's certificate is not signed by a CA this machine trusts: give the CA that signed it, --nats-ca-file\)$/],
      [{}, /: unable to verify the first certificate \(the server's certificate is not signed by a CA this machine trusts: give the CA that signed it, --nats-ca-file\)$/],
      [{ caFile: certs.ca }, /: TIMEOUT \(the server verifies its clients' certificates: give one it trusts, --nats-cert-file and --nats-key-file\)$/],
    ];
    for (const [without, message] of refusals) {
      await assert.rejects(connect({ servers: nats.url, cluster: 'tls', timeoutMs: 3000, ...(without === undefined ? {} : { tls: without }) }), (e: unknown) => {
        assert.ok(e instanceof ProtocolError && e.code === 'unavailable', String(e));
        assert.match(e.message, /^can not connect to NATS at /);
        assert.match(e.message, message);
        return true;
      });
    }
    // A tls:// URL with the files: the same connection.
    const overTls = await connect({ servers: nats.url.replace(/^nats:/, 'tls:'), cluster: 'tls', timeoutMs: 5000, tls });
    await overTls.close();
    // A node says the same when it can not start.
    await assert.rejects(
      StrataNode.start({ nodeId: 't2', cluster: 'tls', natsUrl: nats.url, natsTls: { caFile: certs.ca }, dataDir: path.join(dir, 't2'), hosts: 1, controller: false }),
      /TIMEOUT \(the server verifies its clients' certificates: give one it trusts, --nats-cert-file and --nats-key-file\)$/,
    );
  });

  it('strata bench measures it with the same files, the NATS echo baseline too', async () => {
    const tls = { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey };
    const r = await runBench({
      workload: 'randwrite', queueDepth: 2, ops: 20, rounds: 1, warmupMs: 0, volumePages: 16, shards: 1,
      baselines: ['nats-echo'], target: { natsUrl: nats.url, cluster: 'tls', tls }, resultsDir: null, quiet: true,
    });
    const subject = r.groups[0]!.subjects[0]!;
    assert.ok(subject.available, subject.unavailableReason);
    assert.equal(subject.ops, 20);
    const echo = r.groups[0]!.baselines[0]!;
    assert.ok(echo.available, echo.unavailableReason);
  });

  it('checks the files before connecting: each readable, a certificate with its key', () => {
    const names = { caFile: '--nats-ca-file', certFile: '--nats-cert-file', keyFile: '--nats-key-file' };
    assert.deepEqual(checkNatsTlsFiles({ caFile: certs.ca }, names), { caFile: certs.ca });
    assert.throws(() => checkNatsTlsFiles({ caFile: path.join(dir, 'none.pem') }, names), /^Error: --nats-ca-file: can not read .*none\.pem: ENOENT$/);
    assert.throws(() => checkNatsTlsFiles({ caFile: dir }, names), /^Error: --nats-ca-file: can not read .*: not a regular file$/);
    assert.throws(() => checkNatsTlsFiles({ certFile: certs.clientCert }, names), /--nats-cert-file needs --nats-key-file/);
    assert.throws(() => checkNatsTlsFiles({ keyFile: certs.clientKey }, names), /--nats-key-file needs --nats-cert-file/);
    const config = loadNodeConfig(['--data-dir', dir, '--nats-ca-file', certs.ca, '--nats-cert-file', certs.clientCert, '--nats-key-file', certs.clientKey], {});
    assert.deepEqual(config.natsTls, { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey });
    assert.throws(() => loadNodeConfig(['--data-dir', dir, '--nats-cert-file', certs.clientCert], {}), (e: unknown) => e instanceof ConfigError && /natsCertFile \(--nats-cert-file\) needs natsKeyFile/.test(e.message));
    assert.throws(() => loadNodeConfig(['--data-dir', dir], { STRATA_NATS_CA_FILE: path.join(dir, 'none.pem') }), (e: unknown) => e instanceof ConfigError && /can not read .*none\.pem: ENOENT/.test(e.message));
  });

  it('loads the files before connecting: a key not the certificate\'s, a file that is not PEM, a CA file without a certificate are each named with OpenSSL\'s reason', async () => {
    const names = { caFile: '--nats-ca-file', certFile: '--nats-cert-file', keyFile: '--nats-key-file' };
    const garbage = path.join(dir, 'garbage.pem');
    fs.writeFileSync(garbage, 'not a certificate\n');
    // A CA file whose one block is cut short: its base64 does not decode.
    const corrupt = path.join(dir, 'corrupt-ca.pem');
    const ca = fs.readFileSync(certs.ca, 'latin1');
    fs.writeFileSync(corrupt, ca.replace(/^(-----BEGIN CERTIFICATE-----\n[^\n]*\n)[\s\S]*(-----END CERTIFICATE-----)/, '$1@@@@\n$2'));
    const client = { certFile: certs.clientCert, keyFile: certs.clientKey };
    assert.deepEqual(checkNatsTlsFiles({ caFile: certs.ca, ...client }, names), { caFile: certs.ca, ...client });
    const refused: Array<[Parameters<typeof checkNatsTlsFiles>[0], RegExp]> = [
      [{ certFile: certs.clientCert, keyFile: certs.serverKey }, /^--nats-key-file: .*server\.key is not the key of --nats-cert-file .*client\.pem: key values mismatch \(ERR_OSSL_X509_KEY_VALUES_MISMATCH\)$/],
      [{ certFile: garbage, keyFile: certs.clientKey }, /^--nats-cert-file: .*garbage\.pem is not a PEM certificate: no start line \(ERR_OSSL_PEM_NO_START_LINE\)$/],
      [{ certFile: certs.clientKey, keyFile: certs.clientKey }, /^--nats-cert-file: .*client\.key is not a PEM certificate: /],
      [{ certFile: certs.clientCert, keyFile: garbage }, /^--nats-key-file: .*garbage\.pem is not a PEM private key without a passphrase: /],
      [{ caFile: garbage }, /^--nats-ca-file: .*garbage\.pem holds no PEM certificate \(-----BEGIN CERTIFICATE-----\)$/],
      [{ caFile: certs.clientKey }, /^--nats-ca-file: .*client\.key holds no PEM certificate/],
      [{ caFile: corrupt }, /^--nats-ca-file: .*corrupt-ca\.pem holds a certificate that can not be read: .*\(ERR_OSSL_/],
    ];
    for (const [files, message] of refused) assert.throws(() => checkNatsTlsFiles(files, names), (e: unknown) => (assert.match((e as Error).message, message), true));
    // The CLI (a usage error) and a node's configuration (a configuration error) say the same.
    const cli = await runCli(['--nats-ca-file', garbage, 'status']);
    assert.equal(cli.code, 2, cli.stderr);
    assert.match(cli.stderr, /--nats-ca-file: .*garbage\.pem holds no PEM certificate/);
    assert.throws(
      () => loadNodeConfig(['--data-dir', dir, '--nats-cert-file', certs.clientCert, '--nats-key-file', certs.serverKey], {}),
      (e: unknown) => e instanceof ConfigError && /^natsKeyFile \(--nats-key-file\): .* is not the key of natsCertFile \(--nats-cert-file\) .*: key values mismatch/.test(e.message),
    );
  });

  it('a connect that fails setting up TLS says why, not only "TLS"', async () => {
    // Past the check (the library's connect takes the files as given): OpenSSL's reason is in the error.
    await assert.rejects(connect({ servers: nats.url, cluster: 'tls', timeoutMs: 3000, tls: { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.serverKey } }), (e: unknown) => {
      assert.ok(e instanceof ProtocolError && e.code === 'unavailable', String(e));
      assert.match(e.message, /^can not connect to NATS at .*: TLS: .*key values mismatch/);
      return true;
    });
  });
});
