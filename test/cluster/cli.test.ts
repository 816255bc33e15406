import { strict as assert } from 'node:assert';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { HELP_TEXT, TRANSFER_PAGES_PER_CALL, UsageError, main, parseArgs, parseBranchLsns, parseListen, parseReadAt } from '../../cluster/cli';
import type { CliIo } from '../../cluster/cli';
import { NoRespondersError, createClient } from '../../cluster/client';
import type { ClientTransport, ConnectOptions, ShardCheck, StrataClient } from '../../cluster/client';
import { decode, encode } from '../../messages/codec';
import { ProtocolError, errorReply } from '../../messages/errors';
import { readHeaders } from '../../messages/headers';
import { SHARD_LEADERS_TOKEN, parseShardSubject } from '../../messages/subjects';
import { shardOfPage, type VolumeInfo } from '../../messages/api';
import {
  validateShardRead,
  validateShardReadRequest,
  validateShardWrite,
  validateShardWriteRequest,
  validateShardZeroRequest,
  validateShardMapRequest,
  validatePageZero,
  validateVolumeBranchRequest,
  validateVolumeCreateRequest,
} from '../../messages/validate';

/** A writable that keeps what is written. */
class Sink extends Writable {
  chunks: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error) => void): void {
    this.chunks.push(Buffer.from(chunk));
    done();
  }
  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/**
 * A one-node cluster in memory behind a fake transport: enough for every CLI command. Each shard
 * has its own LSN, and every version of a page is kept, so that reads at an LSN (GetPage@LSN)
 * answer as a shard does.
 */
class MemoryCluster implements ClientTransport {
  readonly maxPayloadBytes = 1024 * 1024;
  volumes = new Map<string, VolumeInfo>();
  /** `volumeId:page` → its versions, oldest first. */
  pages = new Map<string, Array<{ lsn: number; data: Uint8Array }>>();
  /** `volumeId:shard` → the shard's last LSN. */
  lsns = new Map<string, number>();
  /** Most ranges a shard.map answer lists (a shard's answer is cut short past them). */
  mapRangesMax = 4096;
  /** Called with the pages of each shard.read before it is answered. */
  beforeRead: (pages: readonly number[]) => void = () => undefined;
  requests: string[] = [];
  /** The body of each request, as `requests`. */
  bodies: unknown[] = [];
  connects: ConnectOptions[] = [];
  closes = 0;

  async request(subject: string, data: Uint8Array, options: { headers: Readonly<Record<string, string>> }): Promise<Uint8Array> {
    this.requests.push(subject);
    this.bodies.push(decode(data));
    try {
      return encode(this.answer(subject, decode(data), readHeaders({ get: (n: string) => options.headers[n] ?? '' }).type));
    } catch (err) {
      return encode(errorReply(err));
    }
  }

  private answer(subject: string, body: unknown, type: string): unknown {
    const b = body as Record<string, unknown>;
    switch (type) {
      case 'volume.create': {
        const spec = validateVolumeCreateRequest(body);
        if (this.volumes.has(spec.name)) throw new ProtocolError('already_exists', `volume ${spec.name} exists`);
        const info: VolumeInfo = { ...spec, id: `id-${spec.name}`, createdAt: 0 };
        this.volumes.set(spec.name, info);
        return info;
      }
      case 'volume.branch': {
        // As the controller answers it: the parent's geometry, one LSN per shard (default: each shard's last).
        const req = validateVolumeBranchRequest(body);
        const parent = this.volumes.get(req.parent);
        if (parent === undefined) throw new ProtocolError('not_found', `parent: volume '${req.parent}' does not exist`, { path: 'parent' });
        if (this.volumes.has(req.name)) throw new ProtocolError('already_exists', `volume '${req.name}' already exists`);
        if (req.lsns !== undefined && req.lsns.length !== parent.shards) throw new ProtocolError('bad_request', `lsns: volume '${parent.name}' has ${parent.shards} shards, got ${req.lsns.length}`, { path: 'lsns' });
        const lsns = req.lsns ?? Array.from({ length: parent.shards }, (_, i) => this.lsns.get(`${parent.id}:${i}`) ?? 0);
        const { replicaSets: _, ...geometry } = parent;
        const info: VolumeInfo = { ...geometry, name: req.name, id: `id-${req.name}`, createdAt: 0, branch: { parent: parent.name, parentId: parent.id, lsns } };
        this.volumes.set(req.name, info);
        return info;
      }
      case 'volume.list':
        return { volumes: [...this.volumes.values()] };
      case 'volume.resize': {
        const info = this.volumes.get(b.name as string);
        if (info === undefined) throw new ProtocolError('not_found', `no volume ${String(b.name)}`);
        const grown = { ...info, pageCount: b.pageCount as number };
        this.volumes.set(info.name, grown);
        return grown;
      }
      case 'volume.info':
      case 'volume.delete': {
        const info = this.volumes.get(b.name as string);
        if (info === undefined) throw new ProtocolError('not_found', `no volume ${String(b.name)}`);
        if (type === 'volume.info') return info;
        this.volumes.delete(info.name);
        return { deleted: true };
      }
      case 'status':
        return {
          node: { id: 'n1', cluster: 'dev', version: '0.1.0', uptimeMs: 4000 },
          volumes: [{ name: 'v', id: 'id-v', shards: [{ shard: 0, role: 'leader', term: 1, commitLsn: 5, appliedLsn: 5 }] }],
        };
      case 'shard.write':
      case 'shard.zero':
      case 'shard.map':
      case 'shard.read': {
        // Writes go to the shard's leaders subject, reads first to its subject.
        const { volumeId, shard } = parseShardSubject(subject.endsWith(`.${SHARD_LEADERS_TOKEN}`) ? subject.slice(0, -SHARD_LEADERS_TOKEN.length - 1) : subject);
        const info = [...this.volumes.values()].find((v) => v.id === volumeId)!;
        if (type === 'shard.map') {
          // The shard's pages whose newest version holds a byte other than zero.
          const req = validatePageZero(validateShardMapRequest(body), info.pageCount);
          const ranges: number[] = [];
          for (let p = req.first; p < req.first + req.count; p++) {
            if (shardOfPage(p, info) !== shard || !(this.pages.get(`${volumeId}:${p}`)?.at(-1)?.data.some((x) => x !== 0) ?? false)) continue;
            const n = ranges.length;
            if (n > 0 && ranges[n - 2]! + ranges[n - 1]! === p) ranges[n - 1]!++;
            else if (n / 2 === this.mapRangesMax) return { end: p, ranges, lsn: this.lsns.get(`${volumeId}:${shard}`) ?? 0 };
            else ranges.push(p, 1);
          }
          return { end: req.first + req.count, ranges, lsn: this.lsns.get(`${volumeId}:${shard}`) ?? 0 };
        }
        if (type === 'shard.zero') {
          const req = validatePageZero(validateShardZeroRequest(body), info.pageCount);
          const pages = Array.from({ length: req.count }, (_, i) => req.first + i).filter((p) => shardOfPage(p, info) === shard);
          return { lsn: this.write(volumeId, shard, pages.map((page) => ({ page, data: new Uint8Array(info.pageSize) }))) };
        }
        if (type === 'shard.write') {
          const req = validateShardWrite(validateShardWriteRequest(body), { ...info, shard });
          return { lsn: this.write(volumeId, shard, req.pages) };
        }
        const req = validateShardRead(validateShardReadRequest(body), { ...info, shard });
        this.beforeRead(req.pages);
        const last = this.lsns.get(`${volumeId}:${shard}`) ?? 0;
        if (req.lsn !== undefined && req.lsn > last) throw new ProtocolError('future_lsn', `lsn ${req.lsn} is newer than the last LSN ${last}`);
        const lsn = req.lsn ?? last;
        const pages = req.pages.map((p) => (this.pages.get(`${volumeId}:${p}`) ?? []).filter((v) => v.lsn <= lsn).pop()?.data ?? new Uint8Array(info.pageSize));
        return { pages, lsn };
      }
      default:
        throw new ProtocolError('internal', `unexpected ${type}`);
    }
  }

  async close(): Promise<void> {
    this.closes++;
  }

  /** Writes pages of one shard as one record; returns its LSN. */
  write(volumeId: string, shard: number, pages: ReadonlyArray<{ page: number; data: Uint8Array }>): number {
    const lsn = (this.lsns.get(`${volumeId}:${shard}`) ?? 0) + 1;
    for (const p of pages) {
      const versions = this.pages.get(`${volumeId}:${p.page}`) ?? [];
      versions.push({ lsn, data: Uint8Array.from(p.data) });
      this.pages.set(`${volumeId}:${p.page}`, versions);
    }
    this.lsns.set(`${volumeId}:${shard}`, lsn);
    return lsn;
  }

  /** The newest data of a page. */
  page(volumeId: string, page: number): Uint8Array | undefined {
    return this.pages.get(`${volumeId}:${page}`)?.at(-1)?.data;
  }

  /** Each shard's last LSN of a volume, as `put` and `get` report them. */
  shardLsns(volumeId: string): Array<{ shard: number; lsn: number }> {
    return [...this.lsns]
      .filter(([key]) => key.startsWith(`${volumeId}:`))
      .map(([key, lsn]) => ({ shard: Number(key.slice(volumeId.length + 1)), lsn }))
      .sort((a, b) => a.shard - b.shard);
  }

  connect = async (options: ConnectOptions): Promise<StrataClient> => {
    this.connects.push(options);
    return createClient(this, { ...(options.cluster === undefined ? {} : { cluster: options.cluster }) });
  };
}

interface Run {
  code: number;
  out: string;
  err: string;
  stdout: Sink;
}

async function run(argv: string[], mem = new MemoryCluster(), extra: Partial<CliIo> = {}): Promise<Run> {
  const stdout = new Sink();
  const stderr = new Sink();
  const code = await main(argv, { stdout, stderr, env: {}, connect: mem.connect, stdin: Readable.from([]), ...extra });
  return { code, out: stdout.text(), err: stderr.text(), stdout };
}

describe('cluster/cli', () => {
  describe('parseArgs', () => {
    it('parses commands, positionals and flags in any order', () => {
      assert.deepEqual(parseArgs(['volume', 'create', '--pages', '10', 'db', '--json', '--page-size=8192']), {
        command: 'volume create',
        positionals: ['db'],
        flags: { pages: 10, json: true, 'page-size': 8192 },
        rest: [],
      });
      assert.deepEqual(parseArgs(['get', 'db', '3', '-', '--count', '2', '--lsn=7', '--nats', 'nats://h:1', '--cluster', 'c']), {
        command: 'get',
        positionals: ['db', '3', '-'],
        flags: { count: 2, lsn: '7', nats: 'nats://h:1', cluster: 'c' },
        rest: [],
      });
      assert.deepEqual(parseReadAt('7'), { lsn: 7 });
      assert.deepEqual(parseReadAt('2:7,0:12'), { lsns: [{ shard: 2, lsn: 7 }, { shard: 0, lsn: 12 }] });
      assert.throws(() => parseReadAt(Array.from({ length: 257 }, (_, i) => `${i}:1`).join(',')), /^UsageError: --lsn: at most 256 shards, got 257$/);
      assert.deepEqual(parseArgs(['put', '--', 'db', '0', '--weird-file-name']).positionals, ['db', '0', '--weird-file-name']);
      assert.deepEqual(parseArgs(['dev', '--demo', '--nodes', '3', '--data-dir', '/tmp/x', '--metrics-port', '0']).flags, {
        demo: true,
        nodes: 3,
        'data-dir': '/tmp/x',
        'metrics-port': 0,
      });
      assert.equal(parseArgs(['status', '--timeout', '500']).flags.timeout, 500);
      assert.deepEqual(parseArgs(['shard', 'force-vote', 'db', '2', '--node', 'n3']), {
        command: 'shard force-vote',
        positionals: ['db', '2'],
        flags: { node: 'n3' },
        rest: [],
      });
    });

    it('parses nbd: a volume or --all, --listen HOST:PORT ([IPV6]:PORT), --read-only and the client flags', () => {
      assert.deepEqual(parseArgs(['nbd', 'db', '--listen', '0.0.0.0:10810', '--read-only', '--nats', 'nats://h:1']), {
        command: 'nbd',
        positionals: ['db'],
        flags: { listen: '0.0.0.0:10810', 'read-only': true, nats: 'nats://h:1' },
        rest: [],
      });
      assert.deepEqual(parseArgs(['nbd', '--all']).positionals, []);
      assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
      assert.deepEqual(parseListen('localhost:10809'), { host: 'localhost', port: 10809 });
    });

    it('keeps the arguments of node raw', () => {
      assert.deepEqual(parseArgs(['node', '--config', 'f.json', '--hosts', '2']), {
        command: 'node',
        positionals: [],
        flags: {},
        rest: ['--config', 'f.json', '--hosts', '2'],
      });
    });

    it('treats --help and -h as help', () => {
      assert.equal(parseArgs(['--help']).command, 'help');
      assert.equal(parseArgs(['-h']).command, 'help');
      assert.equal(parseArgs(['volume', 'list', '--help']).command, 'help');
      assert.equal(parseArgs(['volume', '--help']).command, 'help', 'a command with subcommands takes --help too');
      assert.equal(parseArgs(['shard', '-h']).command, 'help');
      assert.equal(parseArgs(['node', '--help']).command, 'help', 'node takes --help as the other commands do');
      assert.equal(parseArgs(['node', '--data-dir', 'd', '-h']).command, 'help');
    });

    const usage: Array<[string[], RegExp]> = [
      [[], /no command/],
      [['--json'], /expected a command before --json/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['volume'], /volume: expected create, branch, list, info, delete or resize/],
      [['volume', 'branch', 'db'], /^volume branch: missing NAME$/],
      [['volume', 'branch'], /^volume branch: missing PARENT NAME$/],
      // SHARD may be left out: only VOLUME is missing.
      [['shard', 'check'], /^shard check: missing VOLUME$/],
      [['shard', 'check', 'db', '0', '1'], /^shard check: unexpected argument "1"$/],
      [['inspect'], /^inspect: missing PATH$/],
      [['volume', 'branch', 'db', 'b', 'c'], /^volume branch: unexpected argument "c"$/],
      [['volume', 'branch', 'db', 'b', '--lsns'], /^--lsns: expected a value$/],
      [['volume', 'branch', 'db', 'b', '--lsns', '1,,2'], /^--lsns: expected LSN\[,LSN…\] \(one per shard, in shard order\), got "" in "1,,2"$/],
      [['volume', 'branch', 'db', 'b', '--lsns', '1:5'], /^--lsns: expected LSN\[,LSN…\] \(one per shard, in shard order\), got "1:5"$/],
      [['volume', 'branch', 'db', 'b', '--lsns', '-1'], /^--lsns: expected LSN\[,LSN…\] .*got "-1"$/],
      [['volume', 'branch', 'db', 'b', '--lsns=-1'], /^--lsns: expected LSN\[,LSN…\] .*got "-1"$/],
      [['volume', 'branch', 'db', 'b', '--lsns', '3,99999999999999999'], /^--lsns: 99999999999999999 is too large/],
      [['volume', 'branch', 'db', 'b', '--pages', '3'], /^volume branch: unknown flag --pages$/],
      [['volume', 'grow'], /volume: unknown subcommand "grow"/],
      [['volume', 'create', 'db'], /--pages is required/],
      [['volume', 'resize', 'db'], /--pages is required/],
      [['volume', 'resize', '--pages', '10'], /missing NAME/],
      [['volume', 'resize', 'db', '--pages', 'ten'], /--pages: expected a non-negative integer, got "ten"/],
      [['volume', 'create', '--pages', '10'], /missing NAME/],
      [['volume', 'create', 'db', '--pages', 'ten'], /--pages: expected a non-negative integer, got "ten"/],
      [['volume', 'create', 'db', '--pages', '-5'], /--pages: expected a non-negative integer, got "-5"/],
      [['volume', 'create', 'db', '--pages', '99999999999999999'], /--pages: 99999999999999999 is too large \(at most 9007199254740991\)/],
      [['volume', 'create', 'db', '--pages', '1', '--page-size', '1000'], /--page-size: expected 4096 or 8192/],
      [['volume', 'create', 'db', '--pages'], /--pages: expected a value/],
      [['volume', 'create', 'db', '--pages', '--json'], /--pages: expected a value/],
      [['volume', 'create', 'db', '--pages='], /--pages: expected a value/],
      [['volume', 'create', 'db', '--pages', '1', '--pages', '2'], /--pages given twice/],
      [['volume', 'list', 'extra'], /unexpected argument "extra"/],
      [['volume', 'info'], /missing NAME/],
      [['volume', 'delete', 'a', 'b'], /unexpected argument "b"/],
      [['volume', 'list', '--count', '1'], /unknown flag --count/],
      [['volume', 'list', '-x'], /unknown flag -x/],
      [['status', '--json=yes'], /--json takes no value/],
      [['status', '--timeout', '0'], /--timeout: expected 1\.\.300000 ms, got 0/],
      [['volume', 'list', '--timeout', '99999999'], /--timeout: expected 1\.\.300000 ms, got 99999999/],
      [['volume', 'list', '--cluster', 'BAD.NAME'], /^--cluster: expected 1\.\.64 characters/],
      // A subject token, but no node's cluster name (a node's is lower case): it would reach no cluster.
      [['volume', 'list', '--cluster', 'Prod'], /^--cluster: expected 1\.\.64 characters of \[a-z0-9_-\], got "Prod"$/],
      [['volume', 'list', '--nats', 'bogus://x'], /^--nats: expected nats\|tls\|ws\|wss URLs, got "bogus:\/\/x"$/],
      [['dev', '--nodes', '3', '--metrics-port', '65534'], /--metrics-port: the 3 nodes take ports 65534\.\.65536, past 65535/],
      [['put', 'db', '0'], /missing FILE/],
      [['put', 'db', 'zero', 'f'], /PAGE: expected a non-negative integer, got "zero"/],
      // A negative number where a number goes is a bad number, not an unknown flag.
      [['put', 'v1', '-1', 'f.bin'], /^PAGE: expected a non-negative integer, got "-1"$/],
      [['get', 'v1', '-5', '-', '--count', '2'], /^PAGE: expected a non-negative integer, got "-5"$/],
      [['map', 'v1', '-1'], /^PAGE: expected a non-negative integer, got "-1"$/],
      [['shard', 'move', 'db', '-1', '--from', 'n1', '--to', 'n2'], /^SHARD: expected a non-negative integer, got "-1"$/],
      [['shard', 'check', 'db', '-2'], /^SHARD: expected a non-negative integer, got "-2"$/],
      // Elsewhere it is still a flag.
      [['volume', 'info', '-1'], /^volume info: unknown flag -1$/],
      [['put', 'v1', '0', '-1'], /^put: unknown flag -1$/],
      [['get', 'db', '0', 'f', '--count', '0'], /--count: expected 1\.\./],
      [['zero', 'db', '0'], /^zero: --count is required$/],
      [['zero', 'db', '0', '--count', '0'], /^--count: expected 1\.\.4294967295, got 0$/],
      [['zero', 'db', '0', '--count', '4294967296'], /^--count: expected 1\.\.4294967295, got 4294967296$/],
      [['zero', 'db', 'x', '--count', '1'], /^PAGE: expected a non-negative integer, got "x"$/],
      [['zero', 'db', '0', 'f', '--count', '1'], /^zero: unexpected argument "f"$/],
      [['map'], /^map: missing VOLUME$/],
      [['map', 'db', 'x'], /^PAGE: expected a non-negative integer, got "x"$/],
      [['map', 'db', '0', '--count', '0'], /^--count: expected 1\.\.4294967295, got 0$/],
      [['get', 'db', '0', 'f', '--lsn', 'latest'], /^--lsn: expected L or SHARD:LSN\[,SHARD:LSN…\], got "latest"$/],
      [['get', 'db', '0', 'f', '--lsn', '0:5,1'], /^--lsn: expected L or SHARD:LSN\[,SHARD:LSN…\], got "1" in "0:5,1"$/],
      [['get', 'db', '0', 'f', '--lsn', '0:5,0:6'], /^--lsn: shard 0 given twice$/],
      [['get', 'db', '0', 'f', '--lsn', '256:5'], /^--lsn: shard 256 is out of range \(at most 255\)$/],
      [['get', 'db', '0', 'f', '--lsn', '0:-1'], /^--lsn: expected a non-negative integer, got "-1"$/],
      [['get', 'db', '0', 'f', '--lsn', 'x:1'], /^--lsn shard: expected a non-negative integer, got "x"$/],
      [['get', 'db', '0', 'f', '--lsn', '99999999999999999'], /^--lsn: 99999999999999999 is too large/],
      [['dev', '--nodes', '0'], /--nodes: expected 1\.\.16/],
      [['dev', '--nodes', '17'], /--nodes: expected 1\.\.16/],
      [['dev', '--metrics-port', '70000'], /--metrics-port: expected 0\.\.65535/],
      [['dev', '--nats', 'nats://x:1'], /unknown flag --nats/],
      [['help', 'me'], /unexpected argument "me"/],
      [['shard'], /shard: expected force-vote, move, handover or check/],
      [['shard', 'handover', 'db'], /missing SHARD/],
      [['shard', 'handover', 'db', 'x'], /^SHARD: expected a non-negative integer, got "x"$/],
      [['shard', 'handover', 'db', '0', '--to', 'a.b'], /^--to: expected 1\.\.64 characters .*got "a\.b"$/],
      [['shard', 'split'], /shard: unknown subcommand "split"/],
      [['shard', 'force-vote', 'db', '0'], /--node is required/],
      [['shard', 'force-vote', 'db', '--node', 'n1'], /missing SHARD/],
      [['shard', 'force-vote', 'db', 'first', '--node', 'n1'], /SHARD: expected a non-negative integer, got "first"/],
      [['shard', 'move', 'db', '0', '--from', 'n1'], /^shard move: --to is required$/],
      [['shard', 'move', 'db', '0', '--to', 'n2'], /^shard move: --from is required$/],
      [['shard', 'move', 'db', '1.5', '--from', 'n1', '--to', 'n2'], /^SHARD: expected a non-negative integer, got "1\.5"$/],
      [['shard', 'move', 'db', '99999999999999999', '--from', 'n1', '--to', 'n2'], /^SHARD: 99999999999999999 is too large/],
      [['shard', 'move', 'db', '0', '--from', 'n1', '--to', 'a.b'], /^--to: expected 1\.\.64 characters .*got "a\.b"$/],
      [['drain'], /^drain: missing NODE$/],
      [['drain', 'a.b'], /^NODE: expected 1\.\.64 characters .*got "a\.b"$/],
      [['drain', 'n1', 'n2'], /^drain: unexpected argument "n2"$/],
      [['inspect', ...Array.from({ length: 17 }, (_, i) => `p${i + 1}`)], /^inspect: unexpected argument "p17" \(at most 16\)$/],
      [['drain', 'n1', '--undo=maybe'], /^--undo takes no value$/],
      [['rebalance', 'now'], /^rebalance: unexpected argument "now"$/],
      [['controllers', 'n1,n2'], /^controllers: expected 3\.\.7 node ids, got 2 \(a single controller node is --controller\) in "n1,n2"$/],
      [['controllers', 'n1,n2,n1'], /^controllers: a node id is listed twice in "n1,n2,n1"$/],
      [['controllers', 'n1,n2,a.b'], /^controllers: "a\.b" is not a node id/],
      [['controllers', 'n1,n2,n3', 'n4'], /^controllers: unexpected argument "n4"$/],
      [['shard', 'move', 'db', '0', '--from', 'n1', '--to', 'n1'], /^shard move: --from and --to name the same node "n1"$/],
      [['nbd'], /^nbd: expected VOLUME or --all$/],
      [['nbd', 'db', '--all'], /^nbd: give VOLUME or --all, not both$/],
      [['nbd', 'db', 'other'], /unexpected argument "other"/],
      [['nbd', 'db', '--listen', '10809'], /^--listen: expected HOST:PORT or \[IPV6\]:PORT, got "10809"$/],
      [['nbd', 'db', '--listen', '::1:10809'], /^--listen: expected HOST:PORT or \[IPV6\]:PORT/],
      [['nbd', 'db', '--listen', 'localhost:70000'], /^--listen: port 70000 is out of range \(0\.\.65535\)$/],
      [['nbd', 'db', '--read-only=yes'], /--read-only takes no value/],
      [['nbd', 'db', '--connections-max', '0'], /^--connections-max: expected 1\.\.1024, got 0$/],
      [['nbd', 'db', '--connections-max', '1025'], /^--connections-max: expected 1\.\.1024, got 1025$/],
    ];
    for (const [argv, pattern] of usage) {
      it(`rejects \`${argv.join(' ')}\``, () => {
        assert.throws(() => parseArgs(argv), (err: unknown) => err instanceof UsageError && pattern.test(err.message));
      });
    }
  });

  describe('main', () => {
    it('prints help listing every command, exit 0', async () => {
      const r = await run(['help']);
      assert.equal(r.code, 0);
      assert.equal(r.out, HELP_TEXT);
      for (const command of ['dev', 'node', 'volume create', 'volume branch', 'volume list', 'volume info', 'volume delete', 'volume resize', 'put', 'get', 'nbd', 'status', 'help']) {
        assert.match(HELP_TEXT, new RegExp(`^  ${command}\\b`, 'm'), command);
      }
      assert.equal((await run(['--help'])).code, 0);
    });

    it('nbd of a volume that does not exist fails not_found before listening, exit 1', async () => {
      const r = await run(['nbd', 'nope', '--listen', '127.0.0.1:0']);
      assert.equal(r.code, 1);
      assert.match(r.err, /^strata: not_found: .*nope/);
      assert.equal(r.out, '');
    });

    it('nbd on a port in use says which and how to pick another, exit 1', async () => {
      const holder = net.createServer();
      await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
      const port = (holder.address() as net.AddressInfo).port;
      try {
        const mem = new MemoryCluster();
        mem.volumes.set('db', { name: 'db', id: 'id-db', pageCount: 16, pageSize: 4096, shards: 1, stripePages: 256, replicas: 1, createdAt: 0 });
        const r = await run(['nbd', 'db', '--listen', `127.0.0.1:${port}`], mem);
        assert.equal(r.code, 1);
        assert.equal(r.err, `strata: EADDRINUSE: 127.0.0.1:${port} is already in use (another strata nbd?): give another with --listen HOST:PORT (port 0 takes a free one)\n`);
        assert.equal(r.out, '');
      } finally {
        await new Promise<void>((resolve) => holder.close(() => resolve()));
      }
    });

    it('catalog recover with no controller running says the controller is not reachable, exit 1', async () => {
      const mem = new MemoryCluster();
      const request = mem.request.bind(mem);
      mem.request = async (subject, data, options) => {
        if (subject.endsWith('.controller.catalog.recover')) throw new NoRespondersError(subject);
        return request(subject, data, options);
      };
      const r = await run(['catalog', 'recover'], mem);
      assert.equal(r.code, 1);
      assert.equal(r.err, 'strata: unavailable: the controller is not reachable (no responders on strata.dev.controller.catalog.recover): is the controller node running?\n');
    });

    it("shard handover asks each member's node, prints the leader's answer (text and JSON), and exits 1 when no replica leads", async () => {
      const mem = new MemoryCluster();
      const created = await run(['volume', 'create', 'db', '--pages', '64', '--shards', '2', '--stripe-pages', '16'], mem);
      assert.equal(created.code, 0, created.err);
      mem.volumes.set('db', { ...mem.volumes.get('db')!, replicaSets: [{ shard: 0, members: ['n1', 'n2'] }, { shard: 1, members: ['n1', 'n2', 'n3'] }] });
      const asked: Array<{ subject: string; body: unknown }> = [];
      let leader: string | undefined = 'n2';
      const request = mem.request.bind(mem);
      mem.request = async (subject, data, options) => {
        const m = /\.node\.(\w+)\.shard\.handover$/.exec(subject);
        if (m === null) return request(subject, data, options);
        asked.push({ subject, body: decode(data) });
        const b = decode(data) as { volumeId: string; shard: number; to?: string };
        return encode(m[1] === leader ? { node: m[1], volumeId: b.volumeId, shard: b.shard, term: 4, to: b.to ?? 'n3' } : errorReply(new ProtocolError('not_leader', `node ${m[1]} does not lead`)));
      };
      let r = await run(['shard', 'handover', 'db', '1', '--to', 'n3'], mem);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'node n2 handed the leadership of shard 1 of db (term 4) to n3\n');
      assert.deepEqual(asked.map((a) => a.subject).sort(), ['strata.dev.node.n1.shard.handover', 'strata.dev.node.n2.shard.handover', 'strata.dev.node.n3.shard.handover']);
      assert.deepEqual(asked[0]!.body, { volumeId: 'id-db', shard: 1, to: 'n3' });
      r = await run(['shard', 'handover', 'db', '1', '--json'], mem);
      assert.deepEqual(JSON.parse(r.out), { node: 'n2', volumeId: 'id-db', shard: 1, term: 4, to: 'n3', volume: 'db' });
      // To the node that leads it: nothing to hand over, said so.
      r = await run(['shard', 'handover', 'db', '1', '--to', 'n2'], mem);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'node n2 leads shard 1 of db already (term 4): nothing to hand over\n');
      // A node outside the shard's set: refused before any node is asked.
      asked.length = 0;
      r = await run(['shard', 'handover', 'db', '0', '--to', 'n3'], mem);
      assert.equal(r.code, 1);
      assert.match(r.err, /^strata: bad_request: to: node 'n3' holds no replica of shard 0 of volume db \(n1, n2\)\n$/);
      assert.deepEqual(asked, []);
      // No member leads (an election under way).
      leader = undefined;
      r = await run(['shard', 'handover', 'db', '1'], mem);
      assert.equal(r.code, 1);
      assert.equal(r.err, 'strata: unavailable: no replica of shard 1 of volume db leads it now (an election may be under way); retry\n');
    });

    it('shard force-vote asks the node named and prints each answer: not repairing, voting again, a sole copy serving again with its log cut (text and JSON)', async () => {
      const mem = new MemoryCluster();
      assert.equal((await run(['volume', 'create', 'db', '--pages', '64', '--shards', '2', '--stripe-pages', '16'], mem)).code, 0);
      const asked: Array<{ subject: string; body: unknown }> = [];
      let answer: Record<string, unknown> = {};
      const request = mem.request.bind(mem);
      mem.request = async (subject, data, options) => {
        if (!subject.endsWith('.shard.forceVote')) return request(subject, data, options);
        asked.push({ subject, body: decode(data) });
        return encode(answer);
      };
      const base = { node: 'n3', volumeId: 'id-db', shard: 1, term: 7 };
      answer = { ...base, wasRepairing: false };
      let r = await run(['shard', 'force-vote', 'db', '1', '--node', 'n3'], mem);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'node n3: its replica of shard 1 of db was not repairing; nothing changed\n');
      assert.deepEqual(asked, [{ subject: 'strata.dev.node.n3.shard.forceVote', body: { volumeId: 'id-db', shard: 1 } }]);
      answer = { ...base, wasRepairing: true };
      r = await run(['shard', 'force-vote', 'db', '1', '--node', 'n3'], mem);
      assert.equal(r.out, 'node n3: its replica of shard 1 of db votes again (term 7); records only it had acknowledged, and lost, stay lost\n');
      answer = { ...base, wasRepairing: true, discarded: { fromLsn: 13, keptLsn: 12 } };
      r = await run(['shard', 'force-vote', 'db', '1', '--node', 'n3'], mem);
      assert.equal(r.out, 'node n3: the only copy of shard 1 of db serves again (term 7); its log is cut after LSN 12: the damaged records and those after them, from LSN 13 on, are lost\n');
      r = await run(['shard', 'force-vote', 'db', '1', '--node', 'n3', '--json'], mem);
      assert.deepEqual(JSON.parse(r.out), answer);
      // A shard the volume does not have: refused before any node is asked.
      asked.length = 0;
      r = await run(['shard', 'force-vote', 'db', '2', '--node', 'n3'], mem);
      assert.equal(r.code, 1);
      assert.equal(r.err, 'strata: out_of_range: shard 2: volume db has shards 0..1\n');
      assert.deepEqual(asked, []);
    });

    it('shard move prints the set the move made (text and JSON), exits 1 when the controller refuses it, and 2 for a bad SHARD before connecting', async () => {
      const mem = new MemoryCluster();
      const asked: unknown[] = [];
      let answer: unknown = { volume: 'db', shard: 1, members: ['n3', 'n1', 'n4'], term: 7, lsn: 42 };
      const request = mem.request.bind(mem);
      mem.request = async (subject, data, options) => {
        if (!subject.endsWith('.controller.shard.move')) return request(subject, data, options);
        asked.push(decode(data));
        return encode(answer);
      };
      const argv = ['shard', 'move', 'db', '1', '--from', 'n2', '--to', 'n4'];
      let r = await run(argv, mem);
      assert.equal(r.code, 0, r.err);
      // The members in the order the catalog gives them: n4 where n2 was.
      assert.equal(r.out, 'moved shard 1 of db from n2 to n4: its replicas are on n3, n1, n4 (term 7, lsn 42)\n');
      assert.deepEqual(asked, [{ volume: 'db', shard: 1, from: 'n2', to: 'n4' }]);
      r = await run([...argv, '--json'], mem);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(JSON.parse(r.out), { volume: 'db', shard: 1, members: ['n3', 'n1', 'n4'], term: 7, lsn: 42, from: 'n2', to: 'n4' });

      const refusal = "a move of shard 1 of volume 'db' from n3 to n5 is under way, one move of a shard at a time";
      answer = errorReply(new ProtocolError('unavailable', refusal));
      r = await run(argv, mem);
      assert.equal(r.code, 1);
      assert.equal(r.err, `strata: unavailable: ${refusal}\n`);
      assert.equal(r.out, '');
      assert.equal(mem.closes, mem.connects.length, 'every client is closed');

      const connects = mem.connects.length;
      r = await run(['shard', 'move', 'db', 'one', '--from', 'n2', '--to', 'n4'], mem);
      assert.equal(r.code, 2);
      assert.match(r.err, /^strata: usage: SHARD: expected a non-negative integer, got "one"\n/);
      assert.equal(mem.connects.length, connects, 'not connected');
      assert.equal(asked.length, 3);
    });

    it('drain marks a node draining and prints what is left (text and JSON), --undo takes the mark off, a refusal exits 1', async () => {
      const mem = new MemoryCluster();
      const asked: unknown[] = [];
      let answer: unknown = { node: 'n4', draining: true, replicas: 12 };
      const request = mem.request.bind(mem);
      mem.request = async (subject, data, options) => {
        if (!subject.endsWith('.controller.node.drain')) return request(subject, data, options);
        asked.push(decode(data));
        return encode(answer);
      };
      let r = await run(['drain', 'n4'], mem);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'node n4 is draining: the controller moves its 12 replicas to other nodes (strata status shows the moves; run again to see how many are left)\n');
      answer = { node: 'n4', draining: true, replicas: 0 };
      r = await run(['drain', 'n4', '--json'], mem);
      assert.deepEqual(JSON.parse(r.out), { node: 'n4', draining: true, replicas: 0 });
      r = await run(['drain', 'n4'], mem);
      assert.equal(r.out, 'node n4 is draining: it holds no replica, nothing new is placed on it\n');
      answer = { node: 'n4', draining: false, replicas: 1 };
      r = await run(['drain', 'n4', '--undo'], mem);
      assert.equal(r.out, 'node n4 is no longer draining: it holds 1 replica\n');
      assert.deepEqual(asked, [{ node: 'n4' }, { node: 'n4' }, { node: 'n4' }, { node: 'n4', undo: true }]);
      answer = errorReply(new ProtocolError('too_large', '64 nodes are draining, the limit'));
      r = await run(['drain', 'n5'], mem);
      assert.equal(r.code, 1);
      assert.equal(r.err, 'strata: too_large: 64 nodes are draining, the limit\n');
    });

    it('rebalance asks for it and prints each node\'s count (text and JSON), says when balanced, and --stop calls it off', async () => {
      const mem = new MemoryCluster();
      const asked: unknown[] = [];
      let answer: unknown = { rebalancing: true, nodes: [{ node: 'n1', replicas: 4 }, { node: 'n2', replicas: 0 }] };
      const request = mem.request.bind(mem);
      mem.request = async (subject, data, options) => {
        if (!subject.endsWith('.controller.rebalance')) return request(subject, data, options);
        asked.push(decode(data));
        return encode(answer);
      };
      let r = await run(['rebalance'], mem);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'rebalancing: replicas per node n1 4, n2 0 (one move at a time; run again to follow, --stop to call it off)\n');
      r = await run(['rebalance', '--json'], mem);
      assert.deepEqual(JSON.parse(r.out), answer);
      answer = { rebalancing: false, nodes: [{ node: 'n1', replicas: 2 }, { node: 'n2', replicas: 2 }] };
      r = await run(['rebalance'], mem);
      assert.equal(r.out, 'balanced: replicas per node n1 2, n2 2\n');
      r = await run(['rebalance', '--stop'], mem);
      assert.equal(r.out, 'no rebalance under way: replicas per node n1 2, n2 2\n');
      assert.deepEqual(asked, [{}, {}, {}, { stop: true }]);
      // A controller that counts the leaders: they follow the replicas.
      answer = { rebalancing: false, nodes: [{ node: 'n1', replicas: 2, leaders: 1 }, { node: 'n2', replicas: 2, leaders: 0 }] };
      r = await run(['rebalance'], mem);
      assert.equal(r.out, 'balanced: replicas per node n1 2, n2 2; leaders n1 1, n2 0\n');
    });

    it('controllers prints the controller nodes, or changes them and prints what changed (text and JSON); a refusal exits 1', async () => {
      const mem = new MemoryCluster();
      const asked: unknown[] = [];
      const base = { node: 'n1', term: 4, lsn: 90, left: [] as string[], leaving: [] as string[] };
      let answer: unknown = { ...base, members: ['n1', 'n2', 'n3'], prior: ['n1', 'n2', 'n3'], changed: false };
      const request = mem.request.bind(mem);
      mem.request = async (subject, data, options) => {
        if (!subject.endsWith('.controller.controllers')) return request(subject, data, options);
        asked.push(decode(data));
        return encode(answer);
      };
      let r = await run(['controllers'], mem);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'controller nodes: n1, n2, n3 (the controller runs on n1, term 4)\n');
      r = await run(['controllers', 'n1,n2,n3'], mem);
      assert.equal(r.out, 'controller nodes: n1, n2, n3, unchanged (the controller runs on n1)\n');
      answer = { ...base, members: ['n1', 'n2', 'n4'], prior: ['n1', 'n2', 'n3'], changed: true, left: ['n3'] };
      r = await run(['controllers', 'n1, n2, n4'], mem);
      assert.equal(r.out, [
        'controller nodes: n1, n2, n4, were n1, n2, n3 (committed at LSN 90 of the catalog shard, term 4)',
        'taken out, their replica of the catalog shard destroyed: n3',
        'list them in --controllers of every node: --controllers n1,n2,n4',
        '',
      ].join('\n'));
      answer = { ...base, members: ['n2', 'n4', 'n5'], prior: ['n1', 'n2', 'n4'], changed: true, leaving: ['n1'] };
      r = await run(['controllers', 'n2,n4,n5', '--json'], mem);
      assert.deepEqual(JSON.parse(r.out), answer);
      r = await run(['controllers', 'n2,n4,n5'], mem);
      assert.match(r.out, /^taken out, destroying their replica once they hear from the controller: n1$/m);
      assert.deepEqual(asked, [{}, { members: ['n1', 'n2', 'n3'] }, { members: ['n1', 'n2', 'n4'] }, { members: ['n2', 'n4', 'n5'] }, { members: ['n2', 'n4', 'n5'] }]);
      answer = errorReply(new ProtocolError('unavailable', "node 'n5' is not live (no heartbeat for 9000 ms): a node added to the controller nodes must be live; nothing was changed"));
      r = await run(['controllers', 'n1,n2,n5'], mem);
      assert.equal(r.code, 1);
      assert.equal(r.err, "strata: unavailable: node 'n5' is not live (no heartbeat for 9000 ms): a node added to the controller nodes must be live; nothing was changed\n");
    });

    it('exits 2 with a usage message on stderr for a usage error, without connecting', async () => {
      const mem = new MemoryCluster();
      for (const argv of [[], ['bogus'], ['volume', 'create', 'x'], ['get', 'v', '1', 'f', '--count', 'many']]) {
        const r = await run(argv, mem);
        assert.equal(r.code, 2, argv.join(' '));
        assert.match(r.err, /^strata: usage: .+\nRun "strata help" for the commands\.\n$/);
        assert.equal(r.out, '');
      }
      assert.equal(mem.connects.length, 0);
    });

    it('shard check exits 1 naming the page when only the pages differ, the records being the same', async () => {
      const check: ShardCheck = {
        volume: 'db',
        volumeId: 'v1',
        shard: 0,
        steps: 1,
        range: { fromLsn: 1, toLsn: 9 },
        replicas: ['n1', 'n2'].map((node, i) => ({ node, role: i === 0 ? 'leader' : 'follower', term: 2, firstLsn: 1, lastLsn: 9, commitLsn: 9, digest: 0xabc })),
        pages: { lsn: 9, compared: 16, steps: 2, differs: { page: 5, digests: { n1: 1, n2: 2 } } },
      };
      const client = { checkShard: async () => check, close: async () => undefined } as unknown as StrataClient;
      const r = await run(['shard', 'check', 'db', '0', '--pages'], undefined, { connect: async () => client });
      assert.equal(r.code, 1, r.err);
      assert.match(r.out, /: the same\n/);
      assert.match(r.out, /DIFFER at page 5: /);
      assert.equal(r.err, 'strata: corruption: the replicas of shard 0 of db read different data at page 5 as of LSN 9\n');
    });

    it('exits 2 for a shard check --wait-ms past its bound, without connecting', async () => {
      const mem = new MemoryCluster();
      const r = await run(['shard', 'check', 'db', '0', '--wait-ms', '60001'], mem);
      assert.equal(r.code, 2);
      assert.match(r.err, /^strata: usage: --wait-ms: expected 0\.\.60000, got 60001\n/);
      assert.equal(mem.connects.length, 0);
    });

    it('exits 2 for a bad node configuration, before starting anything', async () => {
      const r = await run(['node', '--hosts', '0', '--data-dir', '/tmp/never']);
      assert.equal(r.code, 2);
      assert.match(r.err, /^strata: bad_config: --hosts: expected an integer in 1\.\.64, got "0"\n$/);
      const missing = await run(['node'], undefined, { env: {} });
      assert.equal(missing.code, 2);
      assert.match(missing.err, /bad_config: dataDir: required/);
    });

    it('creates, lists, describes and deletes volumes (text and JSON)', async () => {
      const mem = new MemoryCluster();
      let r = await run(['volume', 'create', 'db', '--pages', '64', '--shards', '2', '--stripe-pages', '4'], mem);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /^created volume db \(id id-db\): 64 pages of 4096 bytes, 2 shard\(s\), stripe 4 pages, 1 replica\(s\)\n$/);
      r = await run(['volume', 'list', '--json'], mem);
      assert.equal(JSON.parse(r.out)[0].name, 'db');
      r = await run(['volume', 'list'], mem);
      assert.match(r.out, /^NAME\tID\tPAGES.*\tBRANCH_OF\ndb\tid-db\t64\t4096\t2\t4\t1\t-\n$/);
      r = await run(['volume', 'info', 'db'], mem);
      assert.match(r.out, /^name: +db\n.*pages: +64\n/s);
      r = await run(['volume', 'info', 'db', '--json'], mem);
      assert.equal(JSON.parse(r.out).id, 'id-db');
      r = await run(['volume', 'resize', 'db', '--pages', '256'], mem);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'volume db (id id-db) has 256 pages of 4096 bytes (1048576 bytes)\n');
      r = await run(['volume', 'resize', 'db', '--pages', '512', '--json'], mem);
      assert.equal(JSON.parse(r.out).pageCount, 512);
      r = await run(['volume', 'resize', 'nope', '--pages', '512'], mem);
      assert.equal(r.code, 1);
      assert.match(r.err, /not_found/);
      r = await run(['volume', 'delete', 'db'], mem);
      assert.equal(r.out, 'deleted volume db\n');
      assert.equal(mem.volumes.size, 0);
      assert.equal(mem.closes, mem.connects.length, 'every client is closed');
    });

    it('sends a create, a branch, a delete and a resize with the --request-id given, else a new one each; refuses one that is not an id', async () => {
      const mem = new MemoryCluster();
      const sent = (verb: string): Array<Record<string, unknown>> => mem.requests.flatMap((subject, i) => (subject.endsWith(`.api.${verb}`) ? [mem.bodies[i] as Record<string, unknown>] : []));
      assert.equal((await run(['volume', 'create', 'db', '--pages', '64', '--request-id', 'make-db-1'], mem)).code, 0);
      assert.equal((await run(['volume', 'create', 'db2', '--pages', '64'], mem)).code, 0);
      assert.equal((await run(['volume', 'branch', 'db', 'db-b', '--request-id', 'branch-1'], mem)).code, 0);
      assert.equal((await run(['volume', 'delete', 'db2', '--request-id', 'drop-1'], mem)).code, 0);
      assert.equal((await run(['volume', 'delete', 'db-b'], mem)).code, 0);
      assert.equal((await run(['volume', 'resize', 'db', '--pages', '128', '--request-id', 'grow-1'], mem)).code, 0);
      assert.equal(sent('volume.resize')[0]!.requestId, 'grow-1');
      const creates = sent('volume.create');
      assert.equal(creates[0]!.requestId, 'make-db-1');
      assert.match(String(creates[1]!.requestId), /^[0-9a-f-]{36}$/);
      assert.equal(sent('volume.branch')[0]!.requestId, 'branch-1');
      const deletes = sent('volume.delete');
      assert.equal(deletes[0]!.requestId, 'drop-1');
      assert.match(String(deletes[1]!.requestId), /^[0-9a-f-]{36}$/);
      const bad = await run(['volume', 'delete', 'db', '--request-id', 'not an id'], mem);
      assert.equal(bad.code, 1);
      assert.match(bad.err, /bad_request: requestId/);
      assert.equal(sent('volume.delete').length, 2, 'nothing sent');
    });

    it('branches a volume: at the LSNs given or at the latest; prints it as create does with its branch point, or the reply as JSON; volume info shows it', async () => {
      const mem = new MemoryCluster();
      await run(['volume', 'create', 'db', '--pages', '64', '--shards', '2', '--stripe-pages', '4', '--replicas', '3'], mem);
      mem.write('id-db', 0, [{ page: 0, data: new Uint8Array(4096) }]);
      mem.write('id-db', 0, [{ page: 0, data: new Uint8Array(4096) }]);
      let r = await run(['volume', 'branch', 'db', 'db-test', '--lsns', '12,40'], mem);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'created volume db-test (id id-db-test): 64 pages of 4096 bytes, 2 shard(s), stripe 4 pages, 3 replica(s)\nbranch of db (id id-db) at lsns 12, 40\n');
      r = await run(['volume', 'branch', 'db', 'db-now', '--json'], mem);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(JSON.parse(r.out), { name: 'db-now', id: 'id-db-now', pageCount: 64, pageSize: 4096, shards: 2, stripePages: 4, replicas: 3, createdAt: 0, branch: { parent: 'db', parentId: 'id-db', lsns: [2, 0] } });
      r = await run(['volume', 'info', 'db-test'], mem);
      assert.match(r.out, /\ncreated: +1970-01-01T00:00:00\.000Z\nbranch of:    db \(id id-db\) at lsns 12, 40\n$/);
      r = await run(['volume', 'info', 'db'], mem);
      assert.doesNotMatch(r.out, /branch/, 'a volume that is no branch shows none');
      r = await run(['volume', 'info', 'db-test', '--json'], mem);
      assert.deepEqual(JSON.parse(r.out).branch, { parent: 'db', parentId: 'id-db', lsns: [12, 40] });
      r = await run(['volume', 'list', '--json'], mem);
      assert.deepEqual(JSON.parse(r.out).map((v: VolumeInfo) => v.branch?.lsns ?? null), [null, [12, 40], [2, 0]]);
      r = await run(['volume', 'list'], mem);
      assert.deepEqual(r.out.trim().split('\n').map((l) => l.split('\t').at(-1)), ['BRANCH_OF', '-', 'db', 'db']);
      // The cluster's refusals: exit 1 with its code and message.
      r = await run(['volume', 'branch', 'nope', 'x'], mem);
      assert.equal(r.code, 1);
      assert.equal(r.err, "strata: not_found: no volume nope\n", 'the parent is looked up first');
      r = await run(['volume', 'branch', 'db', 'x', '--lsns', '1'], mem);
      assert.equal(r.code, 1);
      assert.equal(r.err, "strata: bad_request: lsns: volume 'db' has 2 shards, got 1\n");
      r = await run(['volume', 'branch', 'db', 'db-test'], mem);
      assert.equal(r.code, 1);
      assert.match(r.err, /^strata: already_exists: volume 'db-test' already exists\n$/);
      r = await run(['volume', 'branch', 'db', 'Bad Name'], mem);
      assert.equal(r.code, 1);
      assert.match(r.err, /^strata: bad_request: name: /);
      assert.equal(mem.closes, mem.connects.length, 'every client is closed');
    });

    it('parses --lsns of volume branch: one LSN per shard, in shard order', () => {
      assert.deepEqual(parseArgs(['volume', 'branch', 'db', 'db-test', '--lsns', '12,40', '--json']), {
        command: 'volume branch',
        positionals: ['db', 'db-test'],
        flags: { lsns: '12,40', json: true },
        rest: [],
      });
      assert.deepEqual(parseBranchLsns('12, 40,0'), [12, 40, 0]);
      assert.deepEqual(parseBranchLsns('9007199254740991'), [Number.MAX_SAFE_INTEGER]);
      assert.equal(parseBranchLsns(new Array(256).fill('7').join(',')).length, 256);
      assert.throws(() => parseArgs(['volume', 'branch', 'db', 'b', '--lsns', new Array(257).fill('1').join(',')]), /^UsageError: --lsns: at most 256 LSNs \(one per shard\), got 257$/);
    });

    it('prints `strata: <code>: <message>` and exits 1 when the operation fails', async () => {
      const mem = new MemoryCluster();
      let r = await run(['volume', 'info', 'nope'], mem);
      assert.equal(r.code, 1);
      assert.equal(r.err, 'strata: not_found: no volume nope\n');
      await run(['volume', 'create', 'db', '--pages', '1'], mem);
      r = await run(['volume', 'create', 'db', '--pages', '1'], mem);
      assert.equal(r.code, 1);
      assert.match(r.err, /^strata: already_exists: /);
      r = await run(['volume', 'create', 'Bad Name', '--pages', '1'], mem);
      assert.equal(r.code, 1);
      assert.match(r.err, /^strata: bad_request: name: /);
      assert.equal(mem.closes, mem.connects.length, 'the client is closed after a failure too');
    });

    it('reports a connection failure as unavailable, exit 1', async () => {
      const r = await run(['status'], new MemoryCluster(), {
        connect: () => Promise.reject(new ProtocolError('unavailable', 'can not connect to NATS at nats://x:1')),
      });
      assert.equal(r.code, 1);
      assert.equal(r.err, 'strata: unavailable: can not connect to NATS at nats://x:1\n');
    });

    it('connects with --nats, --cluster and --timeout, else the environment, else defaults', async () => {
      const mem = new MemoryCluster();
      await run(['status', '--nats', 'nats://a:1,nats://b:2', '--cluster', 'prod', '--timeout', '1500'], mem);
      await run(['status'], mem, { env: { STRATA_NATS_URL: 'nats://env:9', STRATA_CLUSTER: 'envc' } });
      await run(['status'], mem);
      assert.deepEqual(mem.connects, [
        { servers: ['nats://a:1', 'nats://b:2'], cluster: 'prod', name: 'strata-cli', timeoutMs: 1500 },
        { servers: ['nats://env:9'], cluster: 'envc', name: 'strata-cli' },
        { servers: ['nats://127.0.0.1:4222'], cluster: 'dev', name: 'strata-cli' },
      ]);
    });

    it('connects as a NATS user with the password in a file, and with TLS files (flags, else the environment); one without the other is a usage error', async () => {
      const mem = new MemoryCluster();
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-cli-pw-'));
      try {
        const pw = path.join(dir, 'pw');
        fs.writeFileSync(pw, 'app-secret\n');
        let r = await run(['status', '--nats-user', 'strata-client', '--nats-password-file', pw], mem);
        assert.equal(r.code, 0, r.err);
        r = await run(['status'], mem, { env: { STRATA_NATS_USER: 'env-user', STRATA_NATS_PASSWORD_FILE: pw } });
        assert.equal(r.code, 0, r.err);
        assert.deepEqual(
          mem.connects.map((o) => [o.user, o.pass]),
          [['strata-client', 'app-secret'], ['env-user', 'app-secret']],
        );
        r = await run(['status', '--nats-user', 'u'], mem);
        assert.equal(r.code, 2);
        assert.match(r.err, /--nats-user needs --nats-password-file/);
        r = await run(['status', '--nats-user', 'u', '--nats-password-file', path.join(dir, 'none')], mem);
        assert.equal(r.code, 2);
        assert.match(r.err, /--nats-password-file: can not read .*none: ENOENT/);
        r = await run(['status', '--nats-password-file', pw], mem);
        assert.equal(r.code, 2);
        assert.match(r.err, /^strata: usage: --nats-password-file needs --nats-user \(or STRATA_NATS_USER\)\n/);
        assert.equal(mem.connects.length, 2, 'nothing connects after a usage error');
        // TLS files: checked (loaded), then given to the client (flags, else the environment).
        const cert = path.join(dir, 'cert.pem');
        const key = path.join(dir, 'cert.key');
        execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=strata-test'], { stdio: 'pipe' });
        r = await run(['status', '--nats-ca-file', cert], mem, { env: { STRATA_NATS_CERT_FILE: cert, STRATA_NATS_KEY_FILE: key } });
        assert.equal(r.code, 0, r.err);
        assert.deepEqual(mem.connects[2]!.tls, { caFile: cert, certFile: cert, keyFile: key });
        r = await run(['status', '--nats-cert-file', pw], mem);
        assert.equal(r.code, 2);
        assert.match(r.err, /--nats-cert-file needs --nats-key-file/);
        r = await run(['status', '--nats-ca-file', path.join(dir, 'none')], mem);
        assert.equal(r.code, 2);
        assert.match(r.err, /--nats-ca-file: can not read .*none: ENOENT/);
        assert.equal(mem.connects.length, 3);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('prints the authorization block of a nats-server config for the cluster (nats-auth)', async () => {
      const r = await run(['nats-auth', '--cluster', 'prod']);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /^# The users of Strata cluster prod/);
      assert.match(r.out, /\{ user: "strata-client", password: \$STRATA_CLIENT_PASSWORD,\n {6}permissions: \{ publish: \{ allow: \["strata\.prod\.api\.>", "strata\.prod\.shard\.\*\.\*", "strata\.prod\.shard\.\*\.\*\.leaders", "\$SRV\.>"\], deny: \["strata\.prod\.shard\.v0-catalog\.\*", "strata\.prod\.shard\.v0-catalog\.\*\.leaders"\] \}, subscribe: \["_INBOX\.strata-client\.>"\] \} \}/);
      assert.match((await run(['nats-auth'], new MemoryCluster(), { env: { STRATA_CLUSTER: 'envc' } })).out, /"strata\.envc\.>"/);
      for (const argv of [['nats-auth'], ['status']]) {
        const bad = await run(argv, new MemoryCluster(), { env: { STRATA_CLUSTER: 'Prod' } });
        assert.equal(bad.code, 2, argv.join(' '));
        assert.match(bad.err, /^strata: usage: STRATA_CLUSTER: expected 1\.\.64 characters of \[a-z0-9_-\], got "Prod"\n/);
      }
      // STRATA_NATS_URL as --nats: a usage error, not a connection to the host the URL ends in.
      const badUrl = await run(['status'], new MemoryCluster(), { env: { STRATA_NATS_URL: 'foo://x' } });
      assert.equal(badUrl.code, 2);
      assert.match(badUrl.err, /^strata: usage: STRATA_NATS_URL: expected nats\|tls\|ws\|wss URLs, got "foo:\/\/x"\n/);
      assert.equal((await run(['nats-auth', '--nats', 'nats://x:1'])).code, 2);
      const more = await run(['nats-auth', '--clients', 'billing,ml-jobs']);
      assert.equal(more.code, 0, more.err);
      assert.match(more.out, /\{ user: "ml-jobs", password: \$ML_JOBS_PASSWORD,\n {6}permissions: \{ publish: \{ allow: \["strata\.dev\.api\.>", "strata\.dev\.shard\.\*\.\*", "strata\.dev\.shard\.\*\.\*\.leaders", "\$SRV\.>"\], deny: \["strata\.dev\.shard\.v0-catalog\.\*", "strata\.dev\.shard\.v0-catalog\.\*\.leaders"\] \}, subscribe: \["_INBOX\.ml-jobs\.>"\] \} \}/);
      assert.match(more.out, /\{ user: "billing", password: \$BILLING_PASSWORD,/);
      const tooMany = Array.from({ length: 257 }, (_, i) => `c${i}`).join(',');
      for (const [clients, message] of [['a.b', /--clients: expected user names/], ['x,x', /--clients: x given twice/], ['strata-node', /strata-node given twice/],
        ['Strata-Node', /--clients: Strata-Node and strata-node would read their password from the same variable, STRATA_NODE_PASSWORD/],
        ['foo-bar,ok,FOO_BAR', /--clients: FOO_BAR and foo-bar would read their password from the same variable, FOO_BAR_PASSWORD/],
        [tooMany, /--clients: at most 256 users, got 257/]] as const) {
        const bad = await run(['nats-auth', '--clients', clients]);
        assert.equal(bad.code, 2);
        assert.match(bad.err, message);
      }
    });

    it('prints status as text and JSON', async () => {
      let r = await run(['status']);
      // The terminal view (observability/status.ts): who answered, then the volume and its shard
      // with term, commit LSN and applied LSN.
      assert.match(r.out, /^Strata cluster dev — answered by node n1 \(version 0\.1\.0\)/);
      assert.match(r.out, /VOLUMES \(1\)\n  v  id=id-v/);
      assert.match(r.out, /\n    0 +\S+ +1 +5 +5 /, 'shard 0: term 1, commit LSN 5, applied LSN 5');
      r = await run(['status', '--json']);
      assert.equal(JSON.parse(r.out).node.id, 'n1');
    });

    describe('put and get', () => {
      let dir: string;
      beforeEach(() => {
        dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-cli-test-'));
      });
      afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

      function bytes(n: number, seed: number): Buffer {
        const b = Buffer.alloc(n);
        for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
        return b;
      }

      it('writes a file from a page on, padding the last page, in chunks; reads it back to a file and stdout', async () => {
        const mem = new MemoryCluster();
        await run(['volume', 'create', 'db', '--pages', '3000', '--shards', '3', '--stripe-pages', '16'], mem);
        const size = (TRANSFER_PAGES_PER_CALL + 5) * 4096 + 100;
        const data = bytes(size, 1);
        const input = path.join(dir, 'in.bin');
        fs.writeFileSync(input, data);
        let r = await run(['put', 'db', '10', input], mem);
        assert.equal(r.code, 0, r.err);
        const pages = TRANSFER_PAGES_PER_CALL + 6;
        // Each of the three shards has its own LSN: the highest is printed, and each one's in
        // the form `get --lsn` takes.
        const lsns = mem.shardLsns('id-db');
        assert.equal(lsns.length, 3);
        const highest = Math.max(...lsns.map((e) => e.lsn));
        assert.equal(r.out, `wrote ${size} bytes to db pages 10..${10 + pages - 1} (lsn ${highest}; shard LSNs ${lsns.map((e) => `${e.shard}:${e.lsn}`).join(',')})\n`);
        const output = path.join(dir, 'out.bin');
        r = await run(['get', 'db', '10', '--count', String(pages), output, '--json'], mem);
        assert.equal(r.code, 0, r.err);
        assert.deepEqual(JSON.parse(r.out), { volume: 'db', page: 10, pages, bytes: pages * 4096, lsn: highest, lsns, file: output });
        const back = fs.readFileSync(output);
        assert.equal(back.length, pages * 4096);
        assert.deepEqual(back.subarray(0, size), data);
        assert.ok(back.subarray(size).every((b) => b === 0), 'padded with zeros');
        r = await run(['get', 'db', '11', '-'], mem);
        assert.equal(r.code, 0, r.err);
        assert.deepEqual(r.stdout.bytes(), data.subarray(4096, 8192));
        assert.equal(r.err, '');
      });

      it('zero makes a range zeros on every shard holding a page of it, prints the LSNs (text and JSON); a range past the end exits 1', async () => {
        const mem = new MemoryCluster();
        await run(['volume', 'create', 'db', '--pages', '64', '--shards', '3', '--stripe-pages', '4'], mem);
        const input = path.join(dir, 'in.bin');
        fs.writeFileSync(input, bytes(64 * 4096, 3));
        assert.equal((await run(['put', 'db', '0', input], mem)).code, 0);
        let r = await run(['zero', 'db', '6', '--count', '4'], mem);
        assert.equal(r.code, 0, r.err);
        // Pages 6..9: stripes 1 and 2, shards 1 and 2.
        const lsns = mem.shardLsns('id-db').filter((e) => e.shard !== 0);
        assert.equal(r.out, `made db pages 6..9 zeros (lsn ${Math.max(...lsns.map((e) => e.lsn))}; shard LSNs ${lsns.map((e) => `${e.shard}:${e.lsn}`).join(',')})\n`);
        for (let p = 0; p < 12; p++) assert.equal(mem.page('id-db', p)!.every((b) => b === 0), p >= 6 && p < 10, `page ${p}`);
        r = await run(['zero', 'db', '60', '--count', '4', '--json'], mem);
        assert.equal(r.code, 0, r.err);
        assert.deepEqual(JSON.parse(r.out), { volume: 'db', page: 60, pages: 4, lsn: mem.shardLsns('id-db')[0]!.lsn, lsns: [mem.shardLsns('id-db')[0]] });
        r = await run(['zero', 'db', '60', '--count', '5'], mem);
        assert.equal(r.code, 1);
        assert.match(r.err, /^strata: out_of_range: count: pages 60\.\.64 are not all in the volume/);
      });

      it('map lists the ranges of pages holding data, merged over the shards (text and JSON), going on past a cut answer; a range past the end exits 1', async () => {
        const mem = new MemoryCluster();
        await run(['volume', 'create', 'db', '--pages', '64', '--shards', '3', '--stripe-pages', '4'], mem);
        const input = path.join(dir, 'in.bin');
        fs.writeFileSync(input, bytes(12 * 4096, 3));
        assert.equal((await run(['put', 'db', '0', input], mem)).code, 0);
        assert.equal((await run(['put', 'db', '40', input], mem)).code, 0);
        assert.equal((await run(['zero', 'db', '6', '--count', '4'], mem)).code, 0);
        let r = await run(['map', 'db'], mem);
        assert.equal(r.code, 0, r.err);
        const lines = r.out.split('\n');
        assert.match(lines[0]!, /^db pages 0\.\.63: 20 page\(s\) in 3 range\(s\) hold data \(80\.0 KiB\); the others read as zeros \(lsn \d+; shard LSNs 0:\d+,1:\d+,2:\d+\)$/);
        assert.deepEqual(lines.slice(1), ['FIRST  LAST  PAGES', '0      5     6', '10     11    2', '40     51    12', '']);
        // Every shard's answer cut short after one range: asked again from where it ended.
        mem.mapRangesMax = 1;
        r = await run(['map', 'db', '2', '--count', '48', '--json'], mem);
        assert.equal(r.code, 0, r.err);
        const json = JSON.parse(r.out);
        assert.deepEqual([json.page, json.count, json.end, json.pages, json.ranges], [2, 48, 50, 16, [{ first: 2, count: 4 }, { first: 10, count: 2 }, { first: 40, count: 10 }]]);
        r = await run(['map', 'db', '60', '--count', '5'], mem);
        assert.equal(r.code, 1);
        assert.match(r.err, /^strata: out_of_range: count: pages 60\.\.64 are not all in the volume/);
        // A PAGE past the end is named as PAGE, with --count or without (no count was given to name).
        for (const count of [[], ['--count', '1']]) {
          r = await run(['map', 'db', '64', ...count], mem);
          assert.equal(r.code, 1);
          assert.equal(r.err, 'strata: out_of_range: page 64 is past the end of db (64 pages)\n');
        }
        r = await run(['map', 'db', '63', '--json'], mem);
        assert.equal(r.code, 0, r.err);
        assert.equal(JSON.parse(r.out).count, 1);
      });

      it('writes stdin with put -', async () => {
        const mem = new MemoryCluster();
        await run(['volume', 'create', 'db', '--pages', '8'], mem);
        const data = bytes(5000, 2);
        const r = await run(['put', 'db', '0', '-', '--json'], mem, { stdin: Readable.from([data.subarray(0, 3000), data.subarray(3000)]) });
        assert.equal(r.code, 0, r.err);
        assert.deepEqual(JSON.parse(r.out), { volume: 'db', page: 0, pages: 2, bytes: 5000, lsn: 1, lsns: [{ shard: 0, lsn: 1 }] });
        assert.deepEqual(Buffer.from(mem.page('id-db', 1)!).subarray(0, 904), data.subarray(4096));
      });

      it('reads each shard at the LSNs put printed (--lsn S:L,…), after the pages were overwritten', async () => {
        const mem = new MemoryCluster();
        await run(['volume', 'create', 'db', '--pages', '64', '--shards', '3', '--stripe-pages', '4'], mem);
        const first = path.join(dir, 'first.bin');
        const second = path.join(dir, 'second.bin');
        fs.writeFileSync(first, bytes(24 * 4096, 7));
        fs.writeFileSync(second, bytes(24 * 4096, 8));
        let r = await run(['put', 'db', '0', first, '--json'], mem);
        assert.equal(r.code, 0, r.err);
        const at = JSON.parse(r.out) as { lsns: Array<{ shard: number; lsn: number }> };
        assert.equal(at.lsns.length, 3);
        // A fourth write to shard 0 only: the shards' LSNs now differ.
        mem.write('id-db', 0, [{ page: 40, data: new Uint8Array(4096) }]);
        r = await run(['put', 'db', '0', second], mem);
        assert.equal(r.code, 0, r.err);
        const output = path.join(dir, 'out.bin');
        const readAt = at.lsns.map((e) => `${e.shard}:${e.lsn}`).join(',');
        r = await run(['get', 'db', '0', '--count', '24', '--lsn', readAt, output, '--json'], mem);
        assert.equal(r.code, 0, r.err);
        assert.deepEqual(fs.readFileSync(output), fs.readFileSync(first));
        assert.deepEqual(JSON.parse(r.out).lsns, at.lsns);
        // A shard named that the read does not touch is allowed; one the volume does not have is not.
        r = await run(['get', 'db', '0', '--lsn', `0:${at.lsns[0]!.lsn},2:1`, '-'], mem);
        assert.equal(r.code, 0, r.err);
        assert.deepEqual(r.stdout.bytes(), fs.readFileSync(first).subarray(0, 4096));
        fs.writeFileSync(output, 'precious');
        r = await run(['get', 'db', '0', '--lsn', '0:1,3:1', output], mem);
        assert.equal(r.code, 1);
        assert.match(r.err, /^strata: out_of_range: lsns\[1\]\.shard: shard 3 is out of range \(the volume has 3 shards\)\n$/);
        assert.equal(fs.readFileSync(output, 'utf8'), 'precious');
      });

      it('reads every batch of a long get at the LSN its shard was first read at, though writes land in between', async () => {
        const mem = new MemoryCluster();
        const pages = TRANSFER_PAGES_PER_CALL + 64;
        await run(['volume', 'create', 'db', '--pages', String(pages), '--shards', '2', '--stripe-pages', '16'], mem);
        const input = path.join(dir, 'in.bin');
        fs.writeFileSync(input, bytes(pages * 4096, 9));
        let r = await run(['put', 'db', '0', input, '--json'], mem);
        assert.equal(r.code, 0, r.err);
        const before = (JSON.parse(r.out) as { lsns: unknown }).lsns;
        // Once the second batch is asked for, every page it covers is overwritten on both shards.
        let overwritten = false;
        mem.beforeRead = (asked) => {
          if (overwritten || !asked.some((p) => p >= TRANSFER_PAGES_PER_CALL)) return;
          overwritten = true;
          for (const shard of [0, 1]) {
            const later = Array.from({ length: 64 }, (_, i) => TRANSFER_PAGES_PER_CALL + i).filter((p) => Math.floor(p / 16) % 2 === shard);
            mem.write('id-db', shard, later.map((page) => ({ page, data: new Uint8Array(4096).fill(0xee) })));
          }
        };
        const output = path.join(dir, 'out.bin');
        r = await run(['get', 'db', '0', '--count', String(pages), output, '--json'], mem);
        assert.equal(r.code, 0, r.err);
        assert.ok(overwritten, 'the writes landed during the get');
        assert.deepEqual(fs.readFileSync(output), fs.readFileSync(input), 'the volume as of one LSN of each shard');
        assert.deepEqual(JSON.parse(r.out).lsns, before);
      });

      it('refuses a file that does not fit in the volume before writing anything', async () => {
        const mem = new MemoryCluster();
        await run(['volume', 'create', 'db', '--pages', '4'], mem);
        const input = path.join(dir, 'big.bin');
        fs.writeFileSync(input, bytes(4096 * 3 + 1, 3));
        const r = await run(['put', 'db', '1', input], mem);
        assert.equal(r.code, 1);
        assert.match(r.err, /^strata: out_of_range: .*needs 4 pages from page 1 but db has 4 pages\n$/);
        assert.equal(mem.pages.size, 0);
      });

      it('says which pages a put wrote before a batch failed, and which the failed batch may have written, keeping its code (text and --json)', async () => {
        const mem = new MemoryCluster();
        await run(['volume', 'create', 'db', '--pages', '5000'], mem);
        const input = path.join(dir, 'in.bin');
        fs.writeFileSync(input, bytes((2 * TRANSFER_PAGES_PER_CALL + 10) * 4096, 4));
        // The third batch (pages 2058.., from page 10 on) meets a timeout: the two before it were written.
        const failFrom = 10 + 2 * TRANSFER_PAGES_PER_CALL;
        const request = mem.request.bind(mem);
        mem.request = async (subject, data, options) => {
          const pages = (decode(data) as { pages?: Array<{ page?: number }> }).pages;
          if (readHeaders({ get: (n: string) => options.headers[n] ?? '' }).type === 'shard.write' && pages?.some((p) => p.page! >= failFrom)) {
            return encode(errorReply(new ProtocolError('timeout', 'no reply within 100 ms')));
          }
          return request(subject, data, options);
        };
        for (const json of [[], ['--json']]) {
          const r = await run(['put', 'db', '10', input, ...json], mem);
          assert.equal(r.code, 1);
          assert.equal(r.err, `strata: timeout: no reply within 100 ms (pages 10..${failFrom - 1} were written; pages ${failFrom}..${failFrom + 9} may be partly written)\n`);
          assert.equal(r.out, '');
        }
        assert.ok(mem.page('id-db', failFrom - 1) !== undefined && mem.page('id-db', failFrom) === undefined);
        // The first batch failing: nothing was written before it.
        const r = await run(['put', 'db', String(failFrom), input], mem);
        assert.equal(r.code, 1);
        assert.equal(r.err, `strata: timeout: no reply within 100 ms (pages ${failFrom}..${failFrom + TRANSFER_PAGES_PER_CALL - 1} may be partly written)\n`);
      });

      it('reports an empty file, a missing file, and a get past the end without touching the output file', async () => {
        const mem = new MemoryCluster();
        await run(['volume', 'create', 'db', '--pages', '4'], mem);
        const empty = path.join(dir, 'empty');
        fs.writeFileSync(empty, '');
        let r = await run(['put', 'db', '0', empty], mem);
        assert.equal(r.code, 0);
        assert.match(r.out, /wrote nothing/);
        r = await run(['put', 'db', '4', empty], mem);
        assert.equal(r.code, 1, 'a page past the end is refused, even with nothing to write');
        assert.match(r.err, /^strata: out_of_range: page 4 is past the end of db \(4 pages\)\n$/);
        // From stdin: the batch that would pass the end is refused, and says what was written.
        r = await run(['put', 'db', '1', '-'], mem, { stdin: Readable.from([bytes(4096 * 3 + 1, 5)]) });
        assert.equal(r.code, 1);
        assert.match(r.err, /^strata: out_of_range: stdin holds more than the 3 pages from page 1 to the end of db: nothing was written\n$/);
        assert.equal(mem.pages.size, 0);
        // A file whose size is not known in advance (a device, a FIFO) is named as itself, not as stdin.
        r = await run(['put', 'db', '1', '/dev/zero'], mem);
        assert.equal(r.code, 1);
        assert.match(r.err, /^strata: out_of_range: \/dev\/zero holds more than the 3 pages from page 1 to the end of db: nothing was written\n$/);
        assert.equal(mem.pages.size, 0);
        r = await run(['put', 'db', '0', path.join(dir, 'missing')], mem);
        assert.equal(r.code, 1);
        assert.match(r.err, /^strata: ENOENT: no such file or directory/);
        r = await run(['put', 'db', '0', dir], mem);
        assert.equal(r.code, 1);
        assert.equal(r.err, `strata: EISDIR: ${dir}: a directory, not a file of pages\n`);
        // So is a directory on stdin (`put db 0 - < dir`), which reads as empty: not "wrote nothing", exit 0.
        const fd = fs.openSync(dir, 'r');
        try {
          r = await run(['put', 'db', '0', '-'], mem, { stdin: Object.assign(Readable.from([]), { fd }) });
        } finally {
          fs.closeSync(fd);
        }
        assert.equal(r.code, 1);
        assert.equal(r.err, 'strata: EISDIR: stdin: a directory, not a file of pages\n');
        assert.equal(r.out, '');
        assert.equal(mem.pages.size, 0);
        const output = path.join(dir, 'keep');
        fs.writeFileSync(output, 'precious');
        r = await run(['get', 'db', '3', '--count', '2', output], mem);
        assert.equal(r.code, 1);
        assert.match(r.err, /^strata: out_of_range: pages 3\.\.4 are out of range/);
        r = await run(['get', 'db', '9007199254740990', '--count', '5', output], mem);
        assert.equal(r.code, 1);
        assert.match(r.err, /^strata: out_of_range: pages 9007199254740990\.\.9007199254740994 are out of range/);
        assert.equal(fs.readFileSync(output, 'utf8'), 'precious');
        r = await run(['get', 'nope', '0', output], mem);
        assert.match(r.err, /^strata: not_found: /);
        // Refused by the shard itself (an LSN it does not have yet): the file is not touched either.
        r = await run(['get', 'db', '0', '--lsn', '999', output], mem);
        assert.equal(r.code, 1);
        assert.match(r.err, /^strata: future_lsn: /);
        assert.equal(fs.readFileSync(output, 'utf8'), 'precious');
      });
    });
  });

  it('says nothing and exits 0 when the reader of its output goes away (EPIPE)', async () => {
    const mem = new MemoryCluster();
    await run(['volume', 'create', 'db', '--pages', '4'], mem);
    const closed = new Writable({
      write(_chunk, _enc, cb): void {
        cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE', syscall: 'write' }));
      },
    });
    const stderr = new Sink();
    const code = await main(['get', 'db', '0', '--count', '4', '-'], { stdout: closed, stderr, env: {}, connect: mem.connect, stdin: Readable.from([]) });
    assert.equal(code, 0);
    assert.equal(stderr.text(), '');
  });

  describe('bin/strata', () => {
    it('runs the built CLI', async () => {
      const bin = path.join(__dirname, '..', '..', '..', 'bin', 'strata');
      const result = await new Promise<{ code: number; stdout: string }>((resolve) => {
        execFile(process.execPath, [bin, 'help'], { timeout: 10_000 }, (err, stdout) => {
          resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? 1), stdout });
        });
      });
      assert.equal(result.code, 0);
      assert.equal(result.stdout, HELP_TEXT);
    });

    it('exits 2 on a usage error', async () => {
      const bin = path.join(__dirname, '..', '..', '..', 'bin', 'strata');
      const code = await new Promise<number>((resolve) => {
        execFile(process.execPath, [bin, 'volume', 'create'], { timeout: 10_000 }, (err) => {
          resolve(err === null ? 0 : Number((err as { code?: unknown }).code));
        });
      });
      assert.equal(code, 2);
    });

    it('ends `dev` with the error of a data directory that cannot be made, exit 1 (it used to spin on procfs)', async () => {
      const bin = path.join(__dirname, '..', '..', '..', 'bin', 'strata');
      const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
        execFile(process.execPath, [bin, 'dev', '--data-dir', '/proc/strata-no-such-dir'], { timeout: 15_000, killSignal: 'SIGKILL' }, (err, _out, stderr) => {
          resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? 1), stderr });
        });
      });
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr, "strata dev: ENOENT: no such file or directory, mkdir '/proc/strata-no-such-dir'\n");
    });

    it('ends `node` with bad_config, exit 2, when its metrics port is taken, before it starts', async () => {
      const bin = path.join(__dirname, '..', '..', '..', 'bin', 'strata');
      const taken = net.createServer();
      await new Promise<void>((resolve) => taken.listen(0, '0.0.0.0', resolve));
      const port = (taken.address() as net.AddressInfo).port;
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-cli-metrics-'));
      try {
        const { OTEL_SDK_DISABLED: _off, ...env } = process.env;
        // No NATS server listens there: the node fails before it would connect.
        const argv = [bin, 'node', '--data-dir', dir, '--hosts', '1', '--metrics-port', String(port), '--nats', 'nats://127.0.0.1:1'];
        const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
          execFile(process.execPath, argv, { timeout: 30_000, killSignal: 'SIGKILL', env }, (err, _out, stderr) => {
            resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? 1), stderr });
          });
        });
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, new RegExp(`^strata: bad_config: --metrics-port: the metrics endpoint cannot listen on port ${port}: .*EADDRINUSE`, 'm'));
      } finally {
        taken.close();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('exits after a NATS server that never answers, within the --timeout it was given (not when a socket the client library leaves open goes)', async () => {
      const bin = path.join(__dirname, '..', '..', '..', 'bin', 'strata');
      // Accepts connections and says nothing: connecting times out.
      const silent = net.createServer(() => undefined);
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      const port = (silent.address() as net.AddressInfo).port;
      try {
        const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
          execFile(process.execPath, [bin, 'volume', 'list', '--nats', `nats://127.0.0.1:${port}`, '--timeout', '300'], { timeout: 15_000 }, (err, _out, stderr) => {
            resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code), stderr });
          });
        });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /^strata: unavailable: can not connect to NATS at nats:\/\/127\.0\.0\.1:\d+: TIMEOUT\n$/);
        // (A process that hung would have been killed at 15 s by execFile: no exit code 1.)
      } finally {
        silent.close();
      }
    });
  });
});

describe('global flags before the command', () => {
  it('are accepted for client commands and checked by the same rules', () => {
    const a = parseArgs(['--nats', 'nats://127.0.0.1:4999', '--cluster=c2', 'volume', 'list']);
    assert.equal(a.command, 'volume list');
    assert.equal(a.flags.nats, 'nats://127.0.0.1:4999');
    assert.equal(a.flags.cluster, 'c2');
    assert.equal(parseArgs(['--json', 'status']).flags.json, true);
    assert.throws(() => parseArgs(['--timeout', 'soon', 'status']), UsageError);
    assert.throws(() => parseArgs(['--nats', 'x', 'dev']), UsageError);
    assert.throws(() => parseArgs(['--frobnicate', 'status']), UsageError);
  });

  it('stay flags when the command ends its flags with `--`', () => {
    assert.deepEqual(parseArgs(['--nats', 'nats://127.0.0.1:4999', '--json', 'get', 'v1', '0', '--', '-']), {
      command: 'get',
      positionals: ['v1', '0', '-'],
      flags: { nats: 'nats://127.0.0.1:4999', json: true },
      rest: [],
    });
    const a = parseArgs(['--timeout=500', 'volume', 'info', '--', '--odd-name']);
    assert.deepEqual([a.command, a.positionals, a.flags], ['volume info', ['--odd-name'], { timeout: 500 }]);
    assert.equal(parseArgs(['--json', 'volume', '--help']).command, 'help');
  });

  it('are refused before node, dev and help, which take them after the command', () => {
    for (const command of ['node', 'dev', 'help']) {
      assert.throws(
        () => parseArgs(['--nats', 'nats://127.0.0.1:4999', command]),
        (err: unknown) => err instanceof UsageError && err.message === `${command}: --nats goes after the command`,
      );
    }
  });
});
