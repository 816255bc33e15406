import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect } from '../../cluster/client';
import { ConfigError, loadNodeConfig, type NodeConfig } from '../../cluster/config';
import { runNode } from '../../cluster/node-main';
import { parseBenchArgs } from '../../bench/strata-bench';
import { natsEchoBaseline } from '../../bench/baselines';
import { ProtocolError } from '../../messages/errors';
import { redactNatsUrl } from '../../runtime/nats-url';
import { startNatsServer } from '../../runtime/nats-server';
import { runCli } from '../support/cli';
import { stderrOf } from '../support/stderr';

const SECRET = 'the-secret';
const REFUSED = /a user, password or token in the URL is not used to connect: give the user with --nats-user and its password in a file with --nats-password-file/;

describe('NATS URLs with credentials in them', function () {
  this.timeout(30_000);
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-nats-url-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('redactNatsUrl hides the user info of each URL, and only that', () => {
    const cases: Array<[string, string]> = [
      ['nats://127.0.0.1:4222', 'nats://127.0.0.1:4222'],
      [`nats://u:${SECRET}@h:4222`, 'nats://***@h:4222'],
      [`nats://${SECRET}@h`, 'nats://***@h'],
      [`tls://h1:4222,nats://u:${SECRET}@h2:4222`, 'tls://h1:4222,nats://***@h2:4222'],
      [`nats://a:${SECRET}@h1,nats://b:${SECRET}@h2`, 'nats://***@h1,nats://***@h2'],
      // A password holding ',', '/' or '@': all of it hidden.
      [`nats://u:${SECRET},x/y@z@h:1`, 'nats://***@h:1'],
      [`u:${SECRET}@h:4222`, '***@h:4222'],
    ];
    for (const [url, shown] of cases) assert.equal(redactNatsUrl(url), shown, url);
  });

  it('a node refuses one from a flag, the environment or its config file, naming the flags to use and showing no password', () => {
    const config = path.join(dir, 'node.json');
    fs.writeFileSync(config, JSON.stringify({ natsUrl: `nats://strata-node:${SECRET}@h:4222` }));
    const sources: Array<[() => NodeConfig, RegExp]> = [
      [() => loadNodeConfig(['--data-dir', dir, '--nats', `nats://strata-node:${SECRET}@h:4222`], {}), /^--nats: .*, got "nats:\/\/\*\*\*@h:4222"$/],
      [() => loadNodeConfig(['--data-dir', dir, '--nats-url', `nats://${SECRET}@h`], {}), /^--nats-url: .*, got "nats:\/\/\*\*\*@h"$/],
      [() => loadNodeConfig(['--data-dir', dir], { STRATA_NATS_URL: `nats://h1:4222,nats://u:${SECRET}@h2:4222` }), /^STRATA_NATS_URL: .*, got "nats:\/\/h1:4222,nats:\/\/\*\*\*@h2:4222"$/],
      [() => loadNodeConfig(['--data-dir', dir, '--config', config], {}), /^node\.json: natsUrl: .*, got "nats:\/\/\*\*\*@h:4222"$/],
    ];
    for (const [load, message] of sources) {
      assert.throws(load, (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.match(e.message, REFUSED);
        assert.match(e.message, message);
        assert.ok(!e.message.includes(SECRET), e.message);
        return true;
      });
    }
  });

  it('the CLI and strata bench refuse one as a usage error, showing no password', async () => {
    for (const argv of [['--nats', `nats://u:${SECRET}@127.0.0.1:1`, 'status'], ['--nats', `nats://${SECRET}@127.0.0.1:1`, 'volume', 'list']]) {
      const r = await runCli(argv);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, REFUSED);
      assert.ok(!r.stderr.includes(SECRET) && !r.stdout.includes(SECRET), r.stderr);
    }
    assert.throws(() => parseBenchArgs(['--nats', `nats://u:${SECRET}@h:4222`, '--cluster', 'c']), (e: unknown) => {
      assert.match((e as Error).message, REFUSED);
      assert.ok(!(e as Error).message.includes(SECRET), (e as Error).message);
      return true;
    });
  });

  it('a connect error of the client or of a baseline shows no password, should one reach them', async () => {
    const url = `nats://u:${SECRET}@127.0.0.1:1`;
    await assert.rejects(connect({ servers: url, cluster: 'c', timeoutMs: 2000 }), (e: unknown) => {
      assert.ok(e instanceof ProtocolError && e.code === 'unavailable', String(e));
      assert.match(e.message, /^can not connect to NATS at nats:\/\/\*\*\*@127\.0\.0\.1:1: /);
      assert.ok(!JSON.stringify({ message: e.message, details: e.details }).includes(SECRET), JSON.stringify(e.details));
      return true;
    });
    await assert.rejects(natsEchoBaseline({ url, payloadBytes: 16, inFlight: 1, ops: 1, connectTimeoutMs: 2000 }), (e: unknown) => {
      assert.match((e as Error).message, /cannot connect to nats:\/\/\*\*\*@127\.0\.0\.1:1 /);
      assert.ok(!(e as Error).message.includes(SECRET), (e as Error).message);
      return true;
    });
  });

  it('a node started with one (past the check) logs its URL without the password', async () => {
    const nats = await startNatsServer({ jetstream: false });
    const signals = { SIGINT: process.listeners('SIGINT'), SIGTERM: process.listeners('SIGTERM') };
    let node: { stop(): Promise<void> } | undefined;
    const level = process.env.STRATA_LOG_LEVEL;
    process.env.STRATA_LOG_LEVEL = 'info';
    try {
      const config: NodeConfig = {
        nodeId: 'r1', cluster: 'redact', natsUrl: nats.url.replace('nats://', `nats://u:${SECRET}@`),
        dataDir: path.join(dir, 'r1'), hosts: 1, controller: true, metricsPort: 0, traceExporters: [],
      };
      const written = (await stderrOf(async () => {
        node = await runNode(config);
      })).join('');
      const started = written.split('\n').find((line) => line.includes('node started'));
      assert.ok(started !== undefined, written);
      assert.match(started, /"nats":"nats:\/\/\*\*\*@127\.0\.0\.1:\d+"/);
      assert.ok(!written.includes(SECRET), started);
    } finally {
      if (level === undefined) delete process.env.STRATA_LOG_LEVEL;
      else process.env.STRATA_LOG_LEVEL = level;
      if (node !== undefined) await stderrOf(() => node!.stop());
      for (const signal of ['SIGINT', 'SIGTERM'] as const) {
        for (const listener of process.listeners(signal)) if (!signals[signal].includes(listener)) process.removeListener(signal, listener);
      }
      await nats.stop();
    }
  });
});
