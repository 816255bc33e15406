/** bench/elections.ts: time until a new volume's shards have leaders, on node processes. */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const SCRIPT = path.join(__dirname, '..', '..', 'bench', 'elections.js');

function run(args: string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SCRIPT, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? 1), stdout, stderr });
    });
  });
}

describe('bench/elections', function () {
  this.timeout(90_000);

  it('refuses a bad flag as usage (exit 2) before starting anything', async () => {
    for (const args of [['--shards', '0'], ['--shards', '300'], ['--replicas', '2'], ['--replicas', '3', '--nodes', '2'], ['--poll-ms'], ['--idle-s', '61'], ['--then', 'crash'], ['--then', 'kill', '--replicas', '1', '--nodes', '1'], ['--bogus', '1']]) {
      const r = await run(args, 15_000);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^elections: .+\nusage: /, args.join(' '));
      assert.equal(r.stdout, '');
    }
  });

  it('creates a volume on three node processes and reports when every shard had a leader, then when every shard took a write after the node leading most was killed, with a JSON result', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-elections-'));
    try {
      const r = await run(['--shards', '4', '--poll-ms', '100', '--timeout-s', '30', '--idle-s', '1', '--then', 'kill', '--results-dir', dir], 80_000);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /every shard led, after the create +\d+\.\d\d s/);
      assert.match(r.stdout, /every shard took a write again, after killing n[123] \(leading [1-4]\) +\d+\.\d\d s/);
      assert.match(r.stdout, /idle CPU over 1 s \(nodes \+ nats-server\) +\d+\.\d\d cores \(nodes \d+\.\d\d, nats-server \d+\.\d\d\)/);
      const result = JSON.parse(fs.readFileSync(path.join(dir, 'strata-elections-latest.json'), 'utf8')) as {
        leaders: number; leadersS: number | null; deposedTotal: number; idleNodeCores: number | null; idleNatsCores: number | null;
        then?: { how: string; node: string; led: number; writtenAgainS: number | null; shardsNotWritten: number };
      };
      assert.equal(result.leaders, 4);
      assert.equal(result.then?.how, 'kill');
      assert.equal(result.then?.shardsNotWritten, 0);
      assert.ok(typeof result.then?.writtenAgainS === 'number' && result.then.writtenAgainS > 0, JSON.stringify(result.then));
      // Three idle node processes heartbeat their 4 shards: some CPU, less than the 2 cores.
      assert.ok(typeof result.idleNodeCores === 'number' && result.idleNodeCores > 0 && result.idleNodeCores < 2, `idle node cores ${result.idleNodeCores}`);
      assert.ok(typeof result.idleNatsCores === 'number' && result.idleNatsCores >= 0, `idle nats-server cores ${result.idleNatsCores}`);
      assert.ok(typeof result.leadersS === 'number' && result.leadersS >= 0);
      assert.ok(Number.isSafeInteger(result.deposedTotal));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
