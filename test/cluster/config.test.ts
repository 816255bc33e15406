import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError, defaultHostsPerNode, loadNodeConfig, nodeIdFromHostname, NODE_FLAGS } from '../../cluster/config';
import type { LoadNodeConfigOptions } from '../../cluster/config';

const OPTS: LoadNodeConfigOptions = { hostname: 'box-1.example.com', availableParallelism: 6, cwd: '/srv' };

function load(argv: string[], env: Record<string, string> = {}, opts: LoadNodeConfigOptions = OPTS) {
  return loadNodeConfig(argv, env, opts);
}

function rejects(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'bad_config');
    assert.match(err.message, pattern);
    return true;
  });
}

describe('cluster/config', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-config-test-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function file(name: string, content: unknown): string {
    const p = path.join(dir, name);
    fs.writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
    return p;
  }

  it('fills the defaults', () => {
    assert.deepEqual(load(['--data-dir', 'data']), {
      nodeId: 'box-1',
      cluster: 'dev',
      natsUrl: 'nats://127.0.0.1:4222',
      dataDir: '/srv/data',
      hosts: 5,
      controller: true,
      metricsPort: 9464,
    });
  });

  it('defaults to a host per core but one, bounded to 1..64', () => {
    assert.equal(load(['--data-dir', 'd'], {}, { ...OPTS, availableParallelism: 200 }).hosts, 64);
    assert.equal(load(['--data-dir', 'd'], {}, { ...OPTS, availableParallelism: 2 }).hosts, 1);
    assert.equal(load(['--data-dir', 'd'], {}, { ...OPTS, availableParallelism: 1 }).hosts, 1);
    assert.equal(load(['--data-dir', 'd'], {}, { ...OPTS, availableParallelism: 0 }).hosts, 1);
  });

  it('shares the cores but one among the nodes of one machine (dev and bench clusters)', () => {
    assert.equal(defaultHostsPerNode(2, 1), 1);
    assert.equal(defaultHostsPerNode(2, 3), 1);
    assert.equal(defaultHostsPerNode(8, 1), 7);
    assert.equal(defaultHostsPerNode(8, 3), 2);
    assert.equal(defaultHostsPerNode(16, 2), 7);
    assert.equal(defaultHostsPerNode(1000, 1), 64);
  });

  it('derives the node id from the host name, else n1', () => {
    assert.equal(nodeIdFromHostname('Web.Server_01.local'), 'web');
    assert.equal(nodeIdFromHostname('a b+c'), 'a-b-c');
    assert.equal(nodeIdFromHostname('...'), 'n1');
    assert.equal(nodeIdFromHostname(''), 'n1');
    assert.equal(nodeIdFromHostname('x'.repeat(100)).length, 64);
    assert.equal(load(['--data-dir', 'd'], {}, { ...OPTS, hostname: '***' }).nodeId, 'n1');
  });

  it('applies defaults < file < environment < flags', () => {
    const config = file('layers.json', {
      nodeId: 'from-file',
      cluster: 'filecluster',
      natsUrl: 'nats://file:4222',
      dataDir: 'file-data',
      hosts: 2,
      metricsPort: 1000,
      controller: false,
      segmentBytesMax: '8MiB',
      mailboxRequestsMax: 10,
    });
    const env = { STRATA_CLUSTER: 'envcluster', STRATA_HOSTS: '3', STRATA_METRICS_PORT: '2000', STRATA_NATS_URL: 'nats://env:4222' };
    const got = load(['--config', config, '--hosts', '4', '--controller', '--mailbox-bytes-max=2MiB'], env);
    assert.deepEqual(got, {
      nodeId: 'from-file',
      cluster: 'envcluster',
      natsUrl: 'nats://env:4222',
      dataDir: path.join(dir, 'file-data'),
      hosts: 4,
      controller: true,
      metricsPort: 2000,
      segmentBytesMax: 8 * 1024 * 1024,
      mailboxRequestsMax: 10,
      mailboxBytesMax: 2 * 1024 * 1024,
    });
  });

  it('resolves dataDir of the file against the file directory, of env and flags against cwd', () => {
    const config = file('rel.json', { dataDir: 'sub' });
    assert.equal(load(['--config', config]).dataDir, path.join(dir, 'sub'));
    assert.equal(load(['--config', config], { STRATA_DATA_DIR: 'envdir' }).dataDir, '/srv/envdir');
    assert.equal(load(['--config', config, '--data-dir', '/abs']).dataDir, '/abs');
  });

  it('reads every environment variable; an empty one counts as unset', () => {
    const got = load([], {
      STRATA_NATS_URL: 'nats://a:1,nats://b:2',
      STRATA_CLUSTER: 'prod',
      STRATA_DATA_DIR: '/d',
      STRATA_NODE_ID: 'N_7',
      STRATA_HOSTS: '12',
      STRATA_METRICS_PORT: '0',
    });
    assert.deepEqual(got, {
      nodeId: 'N_7',
      cluster: 'prod',
      natsUrl: 'nats://a:1,nats://b:2',
      dataDir: '/d',
      hosts: 12,
      controller: true,
      metricsPort: 0,
    });
    assert.equal(load(['--data-dir', 'd'], { STRATA_CLUSTER: '' }).cluster, 'dev');
  });

  it('accepts every flag, both --flag value and --flag=value', () => {
    const got = load([
      '--node-id=n2',
      '--cluster',
      'c1',
      '--nats-url',
      '127.0.0.1:4222',
      '--data-dir=/x',
      '--hosts=1',
      '--no-controller',
      '--metrics-port',
      '9999',
      '--cache-bytes-max-per-shard',
      '1GiB',
      '--segment-bytes-max',
      '65536',
      '--checkpoint-every-records',
      '100',
      '--retain-records',
      '500000',
      '--mailbox-requests-max',
      '5',
      '--mailbox-bytes-max',
      '1M',
      '--host-heap-initial',
      '256MiB',
      '--repair-after-seconds',
      '0',
    ]);
    assert.deepEqual(got, {
      nodeId: 'n2',
      cluster: 'c1',
      natsUrl: '127.0.0.1:4222',
      dataDir: '/x',
      hosts: 1,
      controller: false,
      metricsPort: 9999,
      cacheBytesMaxPerShard: 1024 ** 3,
      segmentBytesMax: 65536,
      checkpointEveryRecords: 100,
      retainRecords: 500000,
      mailboxRequestsMax: 5,
      mailboxBytesMax: 1024 ** 2,
      hostHeapInitial: 256 * 1024 ** 2,
      repairAfterSeconds: 0,
    });
    assert.equal(load(['--data-dir', 'd'], { STRATA_REPAIR_AFTER_SECONDS: '120' }).repairAfterSeconds, 120);
    assert.equal(load(['--data-dir', 'd', '--zone', 'rack-2']).zone, 'rack-2');
    assert.equal(load(['--data-dir', 'd'], { STRATA_ZONE: 'eu_1' }).zone, 'eu_1');
    assert.equal(load(['--data-dir', 'd']).zone, undefined);
    assert.equal(load(['--data-dir', 'd']).repairAfterSeconds, undefined);
    assert.equal(load(['--data-dir', 'd', '--controller=false']).controller, false);
    assert.equal(load(['--data-dir', 'd', '--nats', 'tls://h:1']).natsUrl, 'tls://h:1');
    assert.ok(NODE_FLAGS.includes('--mailbox-bytes-max'));
  });

  it('takes the trace exporters as a comma list (trimmed, each once) or none, from a flag, the environment or the config file', () => {
    assert.deepEqual(load(['--data-dir', 'd', '--trace-exporters', 'otlp,console']).traceExporters, ['otlp', 'console']);
    assert.deepEqual(load(['--data-dir', 'd', '--trace-exporters= console , otlp,console']).traceExporters, ['console', 'otlp']);
    assert.deepEqual(load(['--data-dir', 'd', '--trace-exporters', 'none']).traceExporters, []);
    assert.deepEqual(load(['--data-dir', 'd'], { STRATA_TRACE_EXPORTERS: 'console' }).traceExporters, ['console']);
    assert.deepEqual(load(['--config', file('traces.json', { dataDir: 'd', traceExporters: 'otlp' })]).traceExporters, ['otlp']);
    assert.equal(load(['--data-dir', 'd']).traceExporters, undefined, 'unset: the OTEL_* environment decides');
  });

  it('connects as a NATS user whose password it reads from a file (flags, environment or config file)', () => {
    const pw = file('nats-pw', 'node-secret\n');
    const byFlags = load(['--data-dir', 'd', '--nats-user', 'strata-node', '--nats-password-file', pw]);
    assert.deepEqual(byFlags.natsAuth, { user: 'strata-node', pass: 'node-secret' });
    assert.equal(byFlags.natsPasswordFile, pw);
    assert.deepEqual(load(['--data-dir', 'd'], { STRATA_NATS_USER: 'u', STRATA_NATS_PASSWORD_FILE: pw }).natsAuth, { user: 'u', pass: 'node-secret' });
    const conf = file('auth.json', { dataDir: 'd', natsUser: 'f', natsPasswordFile: 'nats-pw' });
    assert.deepEqual(load(['--config', conf]).natsAuth, { user: 'f', pass: 'node-secret' }, 'the file\'s path is relative to the config file');
    assert.equal(load(['--data-dir', 'd']).natsAuth, undefined);
    rejects(() => load(['--data-dir', 'd', '--nats-user', 'u']), /^natsUser: needs a password: pass --nats-password-file/);
    rejects(() => load(['--data-dir', 'd', '--nats-password-file', pw]), /^natsPasswordFile: needs a user: pass --nats-user/);
    rejects(() => load(['--data-dir', 'd', '--nats-user', 'u', '--nats-password-file', path.join(dir, 'none')]), /^natsPasswordFile: can not read .*none: ENOENT$/);
    rejects(() => load(['--data-dir', 'd', '--nats-user', 'u', '--nats-password-file', file('empty-pw', '')]), /^natsPasswordFile: .*empty-pw is empty$/);
    rejects(() => load(['--data-dir', 'd', '--nats-user', 'a b', '--nats-password-file', pw]), /^--nats-user: expected 1\.\.64 characters of \[A-Za-z0-9_.-\]/);
  });

  it('controllers: the controller nodes of a replicated controller; controller is whether this node is one', () => {
    const member = load(['--data-dir', 'd', '--node-id', 'b', '--controllers', 'a, b,c']);
    assert.deepEqual([member.controllers, member.controller], [['a', 'b', 'c'], true]);
    const other = load(['--data-dir', 'd', '--node-id', 'z'], { STRATA_CONTROLLERS: 'a,b,c' });
    assert.deepEqual([other.controllers, other.controller], [['a', 'b', 'c'], false]);
    assert.equal(load(['--data-dir', 'd']).controllers, undefined);
    assert.ok(NODE_FLAGS.includes('--controllers'));
    rejects(() => load(['--data-dir', 'd', '--controllers', 'a,b']), /^--controllers: expected 3\.\.7 node ids, got 2 \(a single controller node is --controller\)/);
    rejects(() => load(['--data-dir', 'd', '--controllers', 'a,b,c,d,e,f,g,h']), /expected 3\.\.7 node ids, got 8/);
    rejects(() => load(['--data-dir', 'd', '--controllers', 'a,b,a']), /a node id is listed twice/);
    rejects(() => load(['--data-dir', 'd', '--controllers', 'a,b,c.d']), /"c\.d" is not a node id/);
    // A new cluster: only with controllers.
    assert.equal(load(['--data-dir', 'd', '--node-id', 'b', '--controllers', 'a,b,c', '--new-cluster']).newCluster, true);
    assert.equal(load(['--data-dir', 'd', '--node-id', 'b', '--controllers', 'a,b,c']).newCluster, undefined);
    rejects(() => load(['--data-dir', 'd', '--new-cluster']), /^--new-cluster: needs --controllers/);
    rejects(() => load(['--data-dir', 'd', '--node-id', 'a', '--controllers', 'a,b,c', '--no-controller']), /--no-controller contradicts controllers \(a,b,c\), which list node 'a'/);
    rejects(() => load(['--data-dir', 'd', '--node-id', 'z', '--controllers', 'a,b,c', '--controller']), /--controller contradicts controllers \(a,b,c\), which do not list node 'z'/);
  });

  it('requires dataDir', () => {
    rejects(() => load([]), /dataDir: required/);
  });

  const badFlags: Array<[string[], RegExp]> = [
    [['--node-id', 'a.b'], /^--node-id: expected 1\.\.64 characters/],
    [['--node-id', 'x'.repeat(65)], /^--node-id:/],
    [['--cluster', 'Prod'], /^--cluster: expected 1\.\.64 characters of \[a-z0-9_-\], got "Prod"/],
    [['--cluster', 'a.b'], /^--cluster:/],
    [['--nats', 'http://h:1'], /^--nats: expected nats\|tls\|ws\|wss URLs, got "http:\/\/h:1"$/],
    [['--nats', 'nats://a:1,,'], /^--nats: expected one or more NATS URLs/],
    [['--nats', 'nats://[bad'], /^--nats: not a valid URL, got "nats:\/\/\[bad"$/],
    [['--hosts', '0'], /^--hosts: expected an integer in 1\.\.64, got "0"/],
    [['--hosts', '65'], /^--hosts: expected an integer in 1\.\.64/],
    [['--hosts', 'four'], /^--hosts: expected an integer/],
    [['--hosts', '1.5'], /^--hosts:/],
    [['--metrics-port', '65536'], /^--metrics-port: expected an integer in 0\.\.65535/],
    [['--metrics-port', '-1'], /^--metrics-port: expected an integer in 0\.\.65535, got "-1"/],
    [['--controller=maybe'], /^--controller: expected true or false, got "maybe"/],
    [['--no-controller=1'], /^--no-controller: takes no value/],
    [['--cache-bytes-max-per-shard', '1KiB'], /^--cache-bytes-max-per-shard: expected a size in bytes/],
    [['--cache-bytes-max-per-shard', '10 parsecs'], /^--cache-bytes-max-per-shard:/],
    [['--segment-bytes-max', '2GiB'], /^--segment-bytes-max: expected a size in bytes in 4096\.\./],
    [['--checkpoint-every-records', '0'], /^--checkpoint-every-records: expected an integer in 1\.\./],
    [['--retain-records', '-1'], /^--retain-records: expected an integer in 0\.\./],
    [['--mailbox-requests-max', '99999999'], /^--mailbox-requests-max:/],
    [['--mailbox-bytes-max', '100'], /^--mailbox-bytes-max:/],
    [['--host-heap-initial', '8MiB'], /^--host-heap-initial: expected a size in bytes in 16777216\.\./],
    [['--host-heap-initial', '20000000'], /^--host-heap-initial: expected whole MiB, got "20000000"/],
    [['--zone', 'eu.west'], /^--zone: expected 1\.\.64 characters of \[A-Za-z0-9_-\], got "eu\.west"/],
    [['--repair-after-seconds', '-1'], /^--repair-after-seconds: expected an integer in 0\.\.604800, got "-1"/],
    [['--repair-after-seconds', '604801'], /^--repair-after-seconds: expected an integer in 0\.\.604800/],
    [['--repair-after-seconds', '10m'], /^--repair-after-seconds: expected an integer/],
    [['--data-dir', ''], /^--data-dir: expected a non-empty value/],
    [['--data-dir'], /^--data-dir: expected a value/],
    [['--bogus', '1'], /^--bogus: unknown flag/],
    [['--hosts', '4', '--hosts', '5'], /^--hosts: given twice$/],
    [['--data-dir', 'e'], /^--data-dir: given twice$/],
    [['--controller', '--no-controller'], /^--no-controller: given with --controller: give one$/],
    [['--nats', 'nats://a:4222', '--nats-url', 'nats://b:4222'], /^--nats-url: given with --nats: give one$/],
    [['--config', 'a.json', '--config=b.json'], /^--config: given twice$/],
    [['stray'], /^stray: unexpected argument/],
    [['--config', ''], /^--config: expected a file path/],
    [['--sampling-ratio', '1.5'], /^--sampling-ratio: expected a number in 0\.\.1, got "1\.5"$/],
    [['--sampling-ratio', '1e-1'], /^--sampling-ratio: expected a number in 0\.\.1, got "1e-1"$/],
    [['--sampling', 'sometimes'], /^--sampling: expected off, ratio or always, got "sometimes"$/],
    [['--trace-exporters', 'otlp,jaeger'], /^--trace-exporters: expected a comma list of otlp and console, or none, got "otlp,jaeger"$/],
    [['--hosts', '0x10'], /^--hosts: expected an integer in 1\.\.64, got "0x10"$/],
    [['--data-dir', 'a\0b'], /^--data-dir: a path may not contain a NUL character/],
    [['--nats-ca-file', 'a\0b'], /^--nats-ca-file: a path may not contain a NUL character/],
    [['--nats-cert-file', 'a\0b'], /^--nats-cert-file: a path may not contain a NUL character/],
    [['--nats-key-file', 'a\0b'], /^--nats-key-file: a path may not contain a NUL character/],
    [['--nats-password-file', 'a\0b'], /^--nats-password-file: a path may not contain a NUL character/],
  ];
  for (const [argv, pattern] of badFlags) {
    it(`rejects ${argv.join(' ').replace(/\0/g, '\\0')}`, () => {
      rejects(() => load(['--data-dir', 'd', ...argv]), pattern);
    });
  }

  const badEnv: Array<[Record<string, string>, RegExp]> = [
    [{ STRATA_HOSTS: '100' }, /^STRATA_HOSTS: expected an integer in 1\.\.64, got "100"/],
    [{ STRATA_METRICS_PORT: 'x' }, /^STRATA_METRICS_PORT:/],
    [{ STRATA_CLUSTER: 'A' }, /^STRATA_CLUSTER:/],
    [{ STRATA_NODE_ID: 'a b' }, /^STRATA_NODE_ID:/],
    [{ STRATA_NATS_URL: 'ftp://x' }, /^STRATA_NATS_URL:/],
    [{ STRATA_DATA_DIR: 'a\0b' }, /^STRATA_DATA_DIR: a path may not contain a NUL/],
  ];
  for (const [env, pattern] of badEnv) {
    it(`rejects ${Object.keys(env)[0]}=${JSON.stringify(Object.values(env)[0])}`, () => {
      rejects(() => load(['--data-dir', 'd'], env), pattern);
    });
  }

  it('rejects a bad environment value even when a flag overrides it', () => {
    rejects(() => load(['--data-dir', 'd', '--hosts', '2'], { STRATA_HOSTS: 'x' }), /^STRATA_HOSTS:/);
  });

  it('rejects bad config files naming the file and key', () => {
    rejects(() => load(['--config', path.join(dir, 'missing.json')]), /--config .*missing\.json: can not read/);
    rejects(() => load(['--config', dir]), /--config .*: not a regular file/);
    rejects(() => load(['--config', file('bad.json', '{ nope')]), /^bad\.json: invalid JSON/);
    rejects(() => load(['--config', file('array.json', [1])]), /^array\.json: expected a JSON object, got an array/);
    rejects(() => load(['--config', file('unknown.json', { dataDir: 'd', colour: 'red' })]), /^unknown\.json: colour: unknown key/);
    rejects(() => load(['--config', file('hosts.json', { dataDir: 'd', hosts: '2' })]), /^hosts\.json: hosts: expected an integer/);
    rejects(() => load(['--config', file('hosts2.json', { dataDir: 'd', hosts: 2.5 })]), /^hosts2\.json: hosts:/);
    rejects(() => load(['--config', file('ctl.json', { dataDir: 'd', controller: 'yes please' })]), /^ctl\.json: controller: expected true or false/);
    // A JSON string is not a boolean or a number in a file, however it reads.
    rejects(() => load(['--config', file('ctl2.json', { dataDir: 'd', controller: 'true' })]), /^ctl2\.json: controller: expected true or false \(a JSON boolean\), got "true"$/);
    rejects(() => load(['--config', file('ratio.json', { dataDir: 'd', samplingRatio: '0.5' })]), /^ratio\.json: samplingRatio: expected a number in 0\.\.1 \(a JSON number\), got "0\.5"$/);
    rejects(() => load(['--config', file('dir.json', { dataDir: 7 })]), /^dir\.json: dataDir: expected a string, got 7/);
    rejects(() => load(['--config', file('null.json', { dataDir: null })]), /^null\.json: dataDir: expected a string, got null/);
    const big = path.join(dir, 'big.json');
    fs.writeFileSync(big, ' '.repeat(1024 * 1024 + 1));
    rejects(() => load(['--config', big]), /larger than/);
  });
});
