import { strict as assert } from 'node:assert';
import { execFile, spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startDevCluster, type DevCluster } from '../../cluster/dev';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import {
  BLOCK_BYTES_MAX,
  NBD_CMD,
  NBD_CMD_FLAG,
  NBD_ERR,
  NBD_FLAG,
  NBD_INFO,
  NBD_OPT,
  NBD_REP,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE,
  NBD_STATE,
  BASE_ALLOCATION_ID,
  BLOCK_STATUS_EXTENTS_MAX,
  META_CONTEXT_QUERIES_MAX,
  OPTION_BYTES_MAX,
  nbdUri,
  WRITE_TRIES,
  WRITE_TRY_MS_MIN,
  retryOverloaded,
  startNbdServer,
  writeInTries,
  type NbdServer,
} from '../../cluster/nbd';
import { NatsTransport, createClient, type ClientTransport, type StrataClient } from '../../cluster/client';
import { connect as natsConnect } from 'nats';
import { ProtocolError } from '../../messages/errors';
import type { VolumeInfo } from '../../messages/api';
import type { Logger } from '../../observability/log';
import { waitFor } from '../support/wait';
import { timerDelaysDuring } from '../support/manual-clock';
import { IHAVEOPT, Peer, Session, goData, greet, metaData, option, u16, u32, type OptionReply, type Reply } from '../support/nbd-client';

const TOOLS: ReadonlyArray<[string, string]> = [
  ['qemu-io', 'qemu-utils'],
  ['qemu-img', 'qemu-utils'],
  ['nbdinfo', 'libnbd-bin'],
  ['nbdcopy', 'libnbd-bin'],
];

/** Fails (does not skip) when an NBD client tool is missing, saying how to install it. */
function requireTools(): void {
  const missing = TOOLS.filter(([tool]) => spawnSync(tool, ['--version'], { stdio: 'ignore' }).error !== undefined);
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map(([, pkg]) => pkg))].join(' ');
  assert.fail(
    `missing NBD client tools: ${missing.map(([tool]) => tool).join(', ')}. Install them with ` +
      `"bash scripts/ensure-nats-server.sh --with-nbd-tools" as root (npm test does), or "sudo apt-get install -y ${packages}"`,
  );
}

/** Runs a tool; resolves with its exit code and output (never rejects). */
function tool(cmd: string, args: string[], timeoutMs = 20_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
  });
}

/** qemu-io commands on an export; fails the test if any of them fails. */
async function qemuIo(uri: string, commands: string[]): Promise<string> {
  const r = await tool('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), uri]);
  const out = r.stdout + r.stderr;
  assert.equal(r.code, 0, out);
  assert.doesNotMatch(out, /fail|error|Pattern verification/i, out);
  return out;
}

/** NBD_REP_META_CONTEXT replies as [id, name], then the last reply's type. */
function contexts(replies: OptionReply[]): { contexts: Array<[number, string]>; last: number } {
  return {
    contexts: replies.filter((r) => r.type === NBD_REP.META_CONTEXT).map((r) => [r.data.readUInt32BE(0), r.data.subarray(4).toString('utf8')]),
    last: replies.at(-1)!.type,
  };
}

const HOLE_ZERO = NBD_STATE.HOLE | NBD_STATE.ZERO;

/** The 28 bytes of a transmission request's header. */
function requestHead(type: number, cookie: number, offset: bigint | number, length: number, flags = 0): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(0x25609513, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(BigInt(cookie), 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

/** The extents of a successful block status reply ([length, flags]), checking its one final chunk and context id. */
function extentsOf(r: Reply): Array<[number, number]> {
  assert.equal(r.error, 0, r.message);
  assert.deepEqual(r.chunks.map((c) => [c.type, c.flags]), [[NBD_REPLY_TYPE.BLOCK_STATUS, NBD_REPLY_FLAG_DONE]]);
  const p = r.chunks[0]!.payload;
  assert.equal(p.readUInt32BE(0), BASE_ALLOCATION_ID);
  assert.equal((p.byteLength - 4) % 8, 0);
  return Array.from({ length: (p.byteLength - 4) / 8 }, (_, i) => [p.readUInt32BE(4 + 8 * i), p.readUInt32BE(8 + 8 * i)]);
}

/** A logger that keeps its lines. */
function captureLogger(lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }>): Logger {
  const at =
    (level: string) =>
    (msg: string, fields: Record<string, unknown> = {}): void =>
      void lines.push({ level, msg, fields });
  const logger: Logger = { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), child: () => logger };
  return logger;
}

type PagesWithData = (first: number, count: number) => { end: number; ranges: Array<{ first: number; count: number }> };

/** Holds the stand-in's calls (stubClient) at `gate` until the returned function opens it. */
function closeGate(stub: { gate: Promise<void> | undefined }): () => void {
  let open!: () => void;
  stub.gate = new Promise((r) => (open = r));
  return open;
}

/**
 * A stand-in for the Strata client: one volume of 16 pages of 4 KiB whose calls wait on
 * `gate` (when set) and fail with `failWith` (when set).
 */
function stubClient(pageCount = 16): {
  client: StrataClient;
  calls: number;
  active: number;
  /** The most calls under way at once. */
  activeMax: number;
  gate: Promise<void> | undefined;
  failWith: Error | undefined;
  /** The catalog's failure of volume.info (after the server started). */
  infoFailWith: Error | undefined;
  /** volume.info gets no answer: it fails `timeout` at the call's deadline (never, without one). */
  infoSilent: boolean;
  /** The answer of pagesWithData: by default, every page zeros. */
  pagesWithData: PagesWithData;
} {
  const info: VolumeInfo = { name: 'stub', id: 'stub-id', pageCount, pageSize: 4096, shards: 1, stripePages: 256, replicas: 1, createdAt: 0 };
  const state = {
    client: undefined as unknown as StrataClient,
    calls: 0,
    active: 0,
    activeMax: 0,
    gate: undefined as Promise<void> | undefined,
    failWith: undefined as Error | undefined,
    infoFailWith: undefined as Error | undefined,
    infoSilent: false,
    pagesWithData: ((first, count) => ({ end: first + count, ranges: [] })) as PagesWithData,
  };
  const call = async <T>(value: T): Promise<T> => {
    state.calls++;
    state.active++;
    state.activeMax = Math.max(state.activeMax, state.active);
    try {
      await state.gate;
      if (state.failWith !== undefined) throw state.failWith;
      return value;
    } finally {
      state.active--;
    }
  };
  const volume = {
    info: async (options: { deadlineMs?: number } = {}) => {
      if (state.infoSilent) {
        const { deadlineMs } = options;
        await new Promise((r) => (deadlineMs === undefined ? undefined : setTimeout(r, Math.max(0, deadlineMs - Date.now()))));
        throw new ProtocolError('timeout', 'the info of volume stub did not come before the deadline');
      }
      if (state.infoFailWith !== undefined) throw state.infoFailWith;
      return info;
    },
    pagesWithData: async (first: number, count: number) => call(state.pagesWithData(first, count)),
    readPages: (pages: number[]) => call({ pages: pages.map(() => new Uint8Array(4096)), lsn: 1, lsns: [] }),
    writePages: () => call({ lsn: 1, lsns: [] }),
    zeroPages: () => call({ lsn: 1, lsns: [] }),
  };
  state.client = { volume: () => volume, listVolumes: async () => [info] } as unknown as StrataClient;
  return state;
}

// ---------------------------------------------------------------------------------------------

describe('cluster/nbd: NBD export of Strata volumes', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  let all: NbdServer;
  let single: NbdServer;
  let readOnly: NbdServer;
  const logLines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
  const uri = (name: string): string => nbdUri('127.0.0.1', all.address.port, name);

  before(async function () {
    this.timeout(60_000);
    requireTools();
    c = await startCluster({ nodes: 1, hosts: 1 });
    await c.client.createVolume({ name: 'v', pageCount: 1024, shards: 2, stripePages: 4 });
    await c.client.createVolume({ name: 'big', pageCount: 4096, pageSize: 8192 });
    await c.client.createVolume({ name: 'copy', pageCount: 256, shards: 2, stripePages: 16 });
    all = await startNbdServer({ client: c.client, port: 0, logger: captureLogger(logLines) });
    single = await startNbdServer({ client: c.client, volume: 'v', port: 0, logger: captureLogger(logLines) });
    readOnly = await startNbdServer({ client: c.client, volume: 'v', port: 0, readOnly: true, logger: captureLogger(logLines) });
  });

  after(async () => {
    await Promise.all([all, single, readOnly].map((s) => s?.stop()));
    await c?.stop();
  });

  describe('with the NBD client tools', () => {
    it('nbdinfo sees the size, the block sizes (1, the page size, 32 MiB) and the flags', async () => {
      const r = await tool('nbdinfo', ['--json', uri('v')]);
      assert.equal(r.code, 0, r.stderr);
      const e = (JSON.parse(r.stdout) as { exports: Array<Record<string, unknown>> }).exports[0]!;
      assert.equal(e['export-size'], 1024 * 4096);
      assert.equal(e['block_size_minimum'], 1);
      assert.equal(e['block_size_preferred'], 4096);
      assert.equal(e['block_size_maximum'], BLOCK_BYTES_MAX);
      assert.equal(e['is_read_only'], false);
      assert.equal(e['can_flush'], true);
      assert.equal(e['can_fua'], true);
      assert.equal(e['can_multi_conn'], true);
      assert.equal(e['can_zero'], true);
      assert.equal(e['can_fast_zero'], true);
      assert.equal(e['can_trim'], true);
      const big = JSON.parse((await tool('nbdinfo', ['--json', uri('big')])).stdout) as { exports: Array<Record<string, unknown>> };
      assert.equal(big.exports[0]!['export-size'], 4096 * 8192);
      assert.equal(big.exports[0]!['block_size_preferred'], 8192);
      const ro = JSON.parse((await tool('nbdinfo', ['--json', nbdUri('127.0.0.1', readOnly.address.port, '')])).stdout) as { exports: Array<Record<string, unknown>> };
      assert.equal(ro.exports[0]!['is_read_only'], true);
      assert.equal(ro.exports[0]!['export-size'], 1024 * 4096, 'the empty name is the exported volume');
    });

    it('nbdinfo --list lists the cluster\'s volumes; an unknown export is refused by name', async () => {
      const r = await tool('nbdinfo', ['--list', '--json', nbdUri('127.0.0.1', all.address.port, '')]);
      assert.equal(r.code, 0, r.stderr);
      const names = (JSON.parse(r.stdout) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']).sort();
      assert.deepEqual(names, ['big', 'copy', 'v']);
      const nope = await tool('nbdinfo', [uri('nope')]);
      assert.notEqual(nope.code, 0);
      assert.match(nope.stderr, /unknown|nope/i);
    });

    it('qemu-img info reads the virtual size', async () => {
      const r = await tool('qemu-img', ['info', '-f', 'raw', uri('v')]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /virtual size: 4 MiB \(4194304 bytes\)/);
    });

    it('qemu-io writes and reads patterns, writes zeroes, discards (whole pages made zeros) and flushes', async () => {
      await qemuIo(uri('v'), ['write -P 0xab 0 64k', 'read -P 0xab 0 64k', 'write -P 0xcd 1M 128k', 'write -z 1M 64k', 'read -P 0 1M 64k', 'read -P 0xcd 1088k 64k']);
      await qemuIo(uri('v'), ['discard 0 4k', 'read -P 0 0 4k', 'read -P 0xab 4k 60k', 'flush', 'write -f -P 0x5a 2M 4k', 'read -P 0x5a 2M 4k']);
      const pages = await c.client.volume('v').read([0, 1, 256, 272, 512]);
      assert.ok(pages[0]!.every((b) => b === 0), 'a discarded page is made zeros');
      assert.ok(pages[1]!.every((b) => b === 0xab));
      assert.ok(pages[2]!.every((b) => b === 0), 'write zeroes landed');
      assert.ok(pages[3]!.every((b) => b === 0xcd));
      assert.ok(pages[4]!.every((b) => b === 0x5a));
    });

    it('an unaligned qemu-io write keeps the bytes around it (read-modify-write of the edge pages)', async () => {
      const vol = c.client.volume('v');
      await vol.writePages([0, 1, 2].map((page) => ({ page: 600 + page, data: new Uint8Array(4096).fill(0x77) })));
      const base = 600 * 4096;
      await qemuIo(uri('v'), [`write -P 0x11 ${base + 100} 1000`, `write -P 0x22 ${base + 4000} 5000`, `read -P 0x11 ${base + 100} 1000`]);
      const [p0, p1, p2] = await vol.read([600, 601, 602]);
      const bytes = Buffer.concat([p0!, p1!, p2!]);
      const expected = Buffer.alloc(3 * 4096, 0x77);
      expected.fill(0x11, 100, 1100);
      expected.fill(0x22, 4000, 9000);
      assert.ok(bytes.equals(expected), 'only the written bytes changed');
    });

    it('nbdcopy copies a random 1 MiB file in and back out, byte for byte', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-nbd-'));
      try {
        const input = path.join(dir, 'in.bin');
        const output = path.join(dir, 'out.bin');
        const data = crypto.randomBytes(1024 * 1024);
        fs.writeFileSync(input, data);
        const w = await tool('nbdcopy', [input, uri('copy')]);
        assert.equal(w.code, 0, w.stderr);
        const r = await tool('nbdcopy', [uri('copy'), output]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(fs.readFileSync(output).equals(data));
        const first = await c.client.volume('copy').read(0);
        assert.ok(Buffer.from(first).equals(data.subarray(0, 4096)), 'the volume holds the file');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('negotiation', () => {
    it('refuses a client that is not fixed newstyle, and one with unknown flags, by closing', async () => {
      for (const flags of [0, 2, 1 | 4]) {
        const p = await greet(all.address.port, flags);
        await p.expectClosed();
      }
    });

    it('closes on a bad option magic', async () => {
      const p = await greet(all.address.port);
      p.write(Buffer.from('IHAVEOPX'), u32(NBD_OPT.LIST), u32(0));
      await p.expectClosed();
    });

    it('closes on an EXPORT_NAME over the option limit: that option has no reply but the export\'s size and flags', async () => {
      const p = await greet(all.address.port);
      // The head alone: the server decides on its length, without the data.
      p.write(IHAVEOPT, u32(NBD_OPT.EXPORT_NAME), u32(OPTION_BYTES_MAX + 1));
      await p.expectClosed();
    });

    it('answers an unknown option, and STARTTLS, NBD_REP_ERR_UNSUP, and goes on', async () => {
      const p = await greet(all.address.port);
      assert.deepEqual((await option(p, 99, Buffer.from('xyz'))).map((r) => r.type), [NBD_REP.ERR_UNSUP]);
      assert.deepEqual((await option(p, NBD_OPT.STARTTLS)).map((r) => r.type), [NBD_REP.ERR_UNSUP]);
      const list = await option(p, NBD_OPT.LIST);
      assert.equal(list.at(-1)!.type, NBD_REP.ACK);
      assert.deepEqual((await option(p, NBD_OPT.ABORT)).map((r) => r.type), [NBD_REP.ACK]);
      await p.expectClosed();
    });

    it('answers an unknown export NBD_REP_ERR_UNKNOWN and goes on; EXPORT_NAME of one closes', async () => {
      const p = await greet(all.address.port);
      const r = await option(p, NBD_OPT.GO, goData('nope'));
      assert.deepEqual(r.map((x) => x.type), [NBD_REP.ERR_UNKNOWN]);
      assert.match(r[0]!.data.toString(), /nope/);
      assert.deepEqual((await option(p, NBD_OPT.INFO, goData(''))).map((x) => x.type), [NBD_REP.ERR_UNKNOWN], 'no default export when every volume is exported');
      assert.deepEqual((await option(p, NBD_OPT.GO, goData('Bad Name!'))).map((x) => x.type), [NBD_REP.ERR_UNKNOWN]);
      const ok = await option(p, NBD_OPT.GO, goData('v'));
      assert.equal(ok.at(-1)!.type, NBD_REP.ACK);
      p.close();

      const q = await greet(single.address.port);
      q.write(IHAVEOPT, u32(NBD_OPT.EXPORT_NAME), u32(4), Buffer.from('nope'));
      await q.expectClosed();
    });

    it('acknowledges NBD_OPT_STRUCTURED_REPLY (again when asked again); with data it is NBD_REP_ERR_INVALID and not negotiated', async () => {
      const p = await greet(all.address.port);
      const invalid = await option(p, NBD_OPT.STRUCTURED_REPLY, Buffer.from('x'));
      assert.deepEqual(invalid.map((r) => r.type), [NBD_REP.ERR_INVALID]);
      assert.match(invalid[0]!.data.toString(), /takes no data/);
      const plain = await Session.go(p, 'v');
      const r = await plain.request(NBD_CMD.READ, 0, 512);
      assert.ok(r.simple, 'the refused option negotiated nothing: simple replies');
      p.close();

      const q = await greet(all.address.port);
      assert.deepEqual((await option(q, NBD_OPT.STRUCTURED_REPLY)).map((r) => r.type), [NBD_REP.ACK]);
      assert.deepEqual((await option(q, NBD_OPT.STRUCTURED_REPLY)).map((r) => r.type), [NBD_REP.ACK]);
      const s = await Session.go(q, 'v');
      assert.equal((await s.request(NBD_CMD.READ, 0, 512)).simple, false);
      q.close();
    });

    it('LIST_META_CONTEXT lists base:allocation (id 0) for no query, base: and base:allocation, once; other queries match nothing', async () => {
      const p = await greet(all.address.port);
      // Before structured replies too: listing selects nothing.
      assert.deepEqual(contexts(await option(p, NBD_OPT.LIST_META_CONTEXT, metaData('v', []))), { contexts: [[0, 'base:allocation']], last: NBD_REP.ACK });
      assert.deepEqual((await option(p, NBD_OPT.STRUCTURED_REPLY)).map((r) => r.type), [NBD_REP.ACK]);
      for (const queries of [[], ['base:'], ['base:allocation'], ['base:', 'base:allocation', 'x-other:thing']]) {
        assert.deepEqual(contexts(await option(p, NBD_OPT.LIST_META_CONTEXT, metaData('v', queries))), { contexts: [[0, 'base:allocation']], last: NBD_REP.ACK }, JSON.stringify(queries));
      }
      for (const queries of [['base:nope'], ['qemu:dirty-bitmap:x', 'x-foo:'], ['base:allocation:more', 'base:Allocation']]) {
        assert.deepEqual(contexts(await option(p, NBD_OPT.LIST_META_CONTEXT, metaData('v', queries))), { contexts: [], last: NBD_REP.ACK }, JSON.stringify(queries));
      }
      p.close();
    });

    it('SET_META_CONTEXT selects base:allocation (id 1) for base:allocation only; base: and unknown queries select nothing', async () => {
      const p = await greet(all.address.port);
      assert.deepEqual((await option(p, NBD_OPT.STRUCTURED_REPLY)).map((r) => r.type), [NBD_REP.ACK]);
      const one = [[BASE_ALLOCATION_ID, 'base:allocation']];
      assert.deepEqual(contexts(await option(p, NBD_OPT.SET_META_CONTEXT, metaData('v', ['base:allocation']))), { contexts: one, last: NBD_REP.ACK });
      assert.deepEqual(contexts(await option(p, NBD_OPT.SET_META_CONTEXT, metaData('v', ['x-a:b', 'base:allocation', 'base:allocation']))), { contexts: one, last: NBD_REP.ACK }, 'once');
      for (const queries of [[], ['base:'], ['base:nope', 'qemu:allocation-depth']]) {
        assert.deepEqual(contexts(await option(p, NBD_OPT.SET_META_CONTEXT, metaData('v', queries))), { contexts: [], last: NBD_REP.ACK }, JSON.stringify(queries));
      }
      p.close();
    });

    it('refuses SET_META_CONTEXT before structured replies, malformed meta context data (NBD_REP_ERR_INVALID), too many queries (TOO_BIG), an unknown export (UNKNOWN); the negotiation goes on', async () => {
      const p = await greet(all.address.port);
      const before = await option(p, NBD_OPT.SET_META_CONTEXT, metaData('v', ['base:allocation']));
      assert.deepEqual(before.map((r) => r.type), [NBD_REP.ERR_INVALID]);
      assert.match(before[0]!.data.toString(), /before NBD_OPT_STRUCTURED_REPLY/);
      assert.deepEqual((await option(p, NBD_OPT.STRUCTURED_REPLY)).map((r) => r.type), [NBD_REP.ACK]);
      const good = metaData('v', ['base:allocation']);
      const str = (x: Buffer): Buffer => Buffer.concat([u32(x.byteLength), x]);
      const malformed: Array<[string, Buffer, RegExp]> = [
        ['no data', Buffer.alloc(0), /0 bytes/],
        ['a name length only', u32(0), /4 bytes/],
        ['a name past the data', Buffer.concat([u32(9), Buffer.from('v'), u32(0)]), /export name of 9 bytes runs past/],
        ['fewer queries than counted', Buffer.concat([str(Buffer.from('v')), u32(2), str(Buffer.from('base:allocation'))]), /2 queries, but the data ends after 1/],
        ['a query past the data', Buffer.concat([str(Buffer.from('v')), u32(1), u32(100), Buffer.from('base:allocation')]), /query 0 of 100 bytes runs past/],
        ['bytes after the queries', Buffer.concat([good, Buffer.from('zz')]), /2 bytes after the last query/],
        ['a query without a namespace', metaData('v', ['allocation']), /query 0 does not start with a namespace/],
        ['an empty namespace', metaData('v', ['base:allocation', ':allocation']), /query 1 does not start with a namespace/],
        ['a query that is not UTF-8', Buffer.concat([str(Buffer.from('v')), u32(1), str(Buffer.from([0x62, 0x3a, 0xff, 0xfe]))]), /query 0 is not UTF-8/],
        ['a query with a NUL', metaData('v', ['base:alloc\0ation']), /query 0 holds a NUL/],
      ];
      for (const opt of [NBD_OPT.LIST_META_CONTEXT, NBD_OPT.SET_META_CONTEXT]) {
        for (const [what, data, message] of malformed) {
          const r = await option(p, opt, data);
          assert.deepEqual(r.map((x) => x.type), [NBD_REP.ERR_INVALID], `${opt}: ${what}`);
          assert.match(r[0]!.data.toString(), message, `${opt}: ${what}`);
        }
        const many = await option(p, opt, metaData('v', Array.from({ length: META_CONTEXT_QUERIES_MAX + 1 }, () => 'base:allocation')));
        assert.deepEqual(many.map((x) => x.type), [NBD_REP.ERR_TOO_BIG], `${opt}: too many queries`);
        assert.match(many[0]!.data.toString(), /33 queries are over the limit of 32/);
        assert.equal(contexts(await option(p, opt, metaData('v', Array.from({ length: META_CONTEXT_QUERIES_MAX }, () => 'base:allocation')))).last, NBD_REP.ACK, `${opt}: as many queries as the limit`);
        for (const [name, message] of [['nope', /no export named "nope": .*does not exist/], ['', /^no default export: name a volume$/], ['Bad Name!', /no export named "Bad Name!"/]] as const) {
          const unknown = await option(p, opt, metaData(name, ['base:allocation']));
          assert.deepEqual(unknown.map((x) => x.type), [NBD_REP.ERR_UNKNOWN], `${opt}: export ${JSON.stringify(name)}`);
          assert.match(unknown[0]!.data.toString(), message);
        }
      }
      assert.equal((await option(p, NBD_OPT.GO, goData('v'))).at(-1)!.type, NBD_REP.ACK, 'the negotiation went on to GO');
      p.close();
      // The one volume of a single-volume server is also the default export.
      const q = await greet(single.address.port);
      assert.deepEqual(contexts(await option(q, NBD_OPT.LIST_META_CONTEXT, metaData('', []))), { contexts: [[0, 'base:allocation']], last: NBD_REP.ACK });
      assert.deepEqual((await option(q, NBD_OPT.LIST_META_CONTEXT, metaData('big', []))).map((r) => r.type), [NBD_REP.ERR_UNKNOWN]);
      q.close();
    });

    it('EXPORT_NAME enters transmission with the size and flags (124 zero bytes unless NO_ZEROES)', async () => {
      for (const [flags, tail] of [[3, 0], [1, 124]] as const) {
        const p = await greet(single.address.port, flags);
        p.write(IHAVEOPT, u32(NBD_OPT.EXPORT_NAME), u32(1), Buffer.from('v'));
        const r = await p.read(10 + tail);
        assert.equal(r.readBigUInt64BE(0), BigInt(1024 * 4096));
        assert.ok((r.readUInt16BE(8) & NBD_FLAG.SEND_FLUSH) !== 0);
        assert.ok(r.subarray(10).every((b) => b === 0));
        const s = new Session(p, 1024 * 4096, r.readUInt16BE(8));
        assert.equal((await s.request(NBD_CMD.READ, 0, 512)).error, 0);
        p.close();
      }
    });

    it('refuses option data over the limit (NBD_REP_ERR_TOO_BIG), skips it and goes on; LIST with data is ERR_INVALID', async () => {
      const p = await greet(all.address.port);
      assert.deepEqual((await option(p, NBD_OPT.GO, Buffer.alloc(OPTION_BYTES_MAX + 1000, 1))).map((r) => r.type), [NBD_REP.ERR_TOO_BIG]);
      assert.deepEqual((await option(p, NBD_OPT.LIST, Buffer.from('x'))).map((r) => r.type), [NBD_REP.ERR_INVALID]);
      assert.deepEqual((await option(p, NBD_OPT.GO, Buffer.from([0, 0, 0, 9, 1]))).map((r) => r.type), [NBD_REP.ERR_INVALID], 'a name longer than the data');
      const info = await option(p, NBD_OPT.INFO, goData('v', [NBD_INFO.NAME, NBD_INFO.DESCRIPTION, NBD_INFO.BLOCK_SIZE]));
      assert.equal(info.at(-1)!.type, NBD_REP.ACK);
      const kinds = info.filter((r) => r.type === NBD_REP.INFO).map((r) => r.data.readUInt16BE(0));
      assert.deepEqual(kinds.sort(), [NBD_INFO.EXPORT, NBD_INFO.NAME, NBD_INFO.DESCRIPTION, NBD_INFO.BLOCK_SIZE].sort());
      assert.equal((await option(p, NBD_OPT.GO, goData('v'))).at(-1)!.type, NBD_REP.ACK, 'the session went on to GO');
      p.close();
    });

    it('the catalog not answering: INFO and GO are NBD_REP_ERR_PLATFORM within the negotiation\'s time, though a connection open on the export holds its geometry; the open one serves on', async () => {
      // The export's own client, whose requests to the catalog for a volume's info can be made to
      // go unanswered (they fail `timeout` at their deadline, as over NATS).
      const nc = await natsConnect({ servers: c.natsUrl });
      const nats = new NatsTransport(nc);
      const catalog = { silent: false };
      const transport: ClientTransport = {
        maxPayloadBytes: nats.maxPayloadBytes,
        request: (subject, data, options) => {
          if (!(catalog.silent && subject.includes('.volume.info'))) return nats.request(subject, data, options);
          return new Promise((_, reject) => setTimeout(() => reject(new ProtocolError('timeout', `no reply on ${subject}`)), options.timeoutMs).unref());
        },
        close: () => nats.close(),
      };
      const client = createClient(transport, { cluster: c.cluster, timeoutMs: 10_000 });
      const server = await startNbdServer({ client, volume: 'v', port: 0, handshakeTimeoutMs: 2000, logger: captureLogger([]) });
      try {
        const open = await Session.open(server.address.port, 'v');
        // Its first call learns the volume's geometry (from the catalog).
        assert.equal((await open.request(NBD_CMD.READ, 0, 4096)).error, 0);
        catalog.silent = true;
        for (const opt of [NBD_OPT.INFO, NBD_OPT.GO]) {
          const p = await greet(server.address.port);
          // Answered before the negotiation's 2 s run out (the connection would close without a reply).
          const replies = await option(p, opt, goData('v'));
          assert.deepEqual(replies.map((r) => r.type), [NBD_REP.ERR_PLATFORM]);
          assert.match(replies[0]!.data.toString(), /^volume v could not be opened: /);
          p.close();
        }
        assert.equal((await open.request(NBD_CMD.READ, 0, 4096)).error, 0, 'the open connection reads without the catalog');
        catalog.silent = false;
        (await Session.open(server.address.port, 'v')).peer.close();
        open.peer.close();
      } finally {
        await server.stop();
        await client.close();
      }
    });
  });

  describe('structured replies', () => {
    it('a READ is one final OFFSET_DATA chunk at its offset; a success without data keeps its simple reply', async () => {
      const s = await Session.open(all.address.port, 'v', { structured: true });
      const data = crypto.randomBytes(3 * 4096);
      const w = await s.request(NBD_CMD.WRITE, 40 * 4096 + 123, data.byteLength, { data });
      assert.deepEqual([w.error, w.simple], [0, true], 'WRITE: a simple reply');
      const f = await s.request(NBD_CMD.FLUSH, 0, 0);
      assert.deepEqual([f.error, f.simple], [0, true], 'FLUSH: a simple reply');
      const r = await s.request(NBD_CMD.READ, 40 * 4096 + 123, data.byteLength);
      assert.equal(r.simple, false);
      assert.deepEqual(r.chunks.map((c) => [c.type, c.flags]), [[NBD_REPLY_TYPE.OFFSET_DATA, NBD_REPLY_FLAG_DONE]]);
      assert.equal(r.chunks[0]!.payload.readBigUInt64BE(0), BigInt(40 * 4096 + 123), 'the chunk\'s offset is the request\'s');
      assert.ok(r.data.equals(data));
      s.peer.close();
    });

    it('errors are final NBD_REPLY_TYPE_ERROR chunks with a message, READ\'s early ones among them; the connection goes on', async () => {
      const s = await Session.open(all.address.port, 'v', { structured: true });
      const size = 1024 * 4096;
      const cases: Array<[string, Promise<Reply>, number, RegExp]> = [
        ['read of length 0', s.request(NBD_CMD.READ, 0, 0), NBD_ERR.EINVAL, /length 0/],
        ['read past the end', s.request(NBD_CMD.READ, size - 100, 200), NBD_ERR.EINVAL, /past the end of the export \(4194304 bytes\)/],
        ['read over the maximum', s.request(NBD_CMD.READ, 0, BLOCK_BYTES_MAX + 1), NBD_ERR.EINVAL, /over the limit/],
        ['read with an unknown flag', s.request(NBD_CMD.READ, 0, 4096, { flags: 1 << 9 }), NBD_ERR.EINVAL, /command flags 0x200/],
        ['write past the end', s.request(NBD_CMD.WRITE, size - 100, 200, { data: Buffer.alloc(200) }), NBD_ERR.ENOSPC, /past the end/],
        ['write over the maximum', s.request(NBD_CMD.WRITE, 0, BLOCK_BYTES_MAX + 1, { data: Buffer.alloc(BLOCK_BYTES_MAX + 1) }), NBD_ERR.EINVAL, /over the limit/],
        ['an unknown command', s.request(99, 0, 4096), NBD_ERR.EINVAL, /command 99 is not supported/],
        ['CACHE', s.request(NBD_CMD.CACHE, 0, 4096), NBD_ERR.EINVAL, /not supported/],
      ];
      for (const [what, reply, errno, message] of cases) {
        const r = await reply;
        assert.equal(r.simple, false, `${what}: structured`);
        assert.deepEqual(r.chunks.map((c) => [c.type, c.flags]), [[NBD_REPLY_TYPE.ERROR, NBD_REPLY_FLAG_DONE]], what);
        assert.equal(r.error, errno, what);
        assert.match(r.message!, message, what);
      }
      const ro = await Session.open(readOnly.address.port, 'v', { structured: true });
      const denied = await ro.request(NBD_CMD.TRIM, 0, 4096);
      assert.deepEqual([denied.simple, denied.error], [false, NBD_ERR.EPERM]);
      assert.match(denied.message!, /read-only/);
      ro.peer.close();
      const ok = await s.request(NBD_CMD.READ, size - 4096, 4096);
      assert.deepEqual([ok.error, ok.data.byteLength], [0, 4096], 'the connection goes on');
      s.peer.close();
    });

    it('an offset past 2^53 is named exactly in its error, not rounded', async () => {
      const s = await Session.open(all.address.port, 'v', { structured: true });
      const size = 1024 * 4096;
      for (const [type, offset, errno] of [
        [NBD_CMD.READ, 2n ** 63n + 1n, NBD_ERR.EINVAL],
        [NBD_CMD.WRITE_ZEROES, 2n ** 64n - 4096n, NBD_ERR.ENOSPC],
      ] as const) {
        s.peer.write(requestHead(type, 7, offset, 4096));
        const h = await s.peer.read(20);
        assert.deepEqual([h.readUInt16BE(4), h.readUInt16BE(6), h.readBigUInt64BE(8)], [NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE.ERROR, 7n]);
        const payload = await s.peer.read(h.readUInt32BE(16));
        assert.equal(payload.readUInt32BE(0), errno);
        assert.equal(payload.subarray(6, 6 + payload.readUInt16BE(4)).toString('utf8'), `bytes ${offset}..${offset + 4095n} are past the end of the export (${size} bytes)`);
      }
      s.peer.close();
    });

    it('EXPORT_NAME after structured replies: READ is structured', async () => {
      const p = await greet(single.address.port);
      assert.deepEqual((await option(p, NBD_OPT.STRUCTURED_REPLY)).map((r) => r.type), [NBD_REP.ACK]);
      p.write(IHAVEOPT, u32(NBD_OPT.EXPORT_NAME), u32(1), Buffer.from('v'));
      const r = await p.read(10);
      const s = new Session(p, Number(r.readBigUInt64BE(0)), r.readUInt16BE(8));
      const read = await s.request(NBD_CMD.READ, 4096, 100);
      assert.deepEqual(read.chunks.map((c) => c.type), [NBD_REPLY_TYPE.OFFSET_DATA]);
      assert.equal(read.data.byteLength, 100);
      p.close();
    });
  });

  describe('block status (base:allocation)', () => {
    // Volume 'map': 256 pages of 4 KiB over 2 shards. The pages written are 3-4, 10, 20-21 and
    // 25-29 (20-29 written, 22-24 trimmed), 40 (40-41 written, 41 zeroed by WRITE_ZEROES with unmap allowed), 50
    // (100 bytes of it) and 255; the rest was never written.
    const DATA: ReadonlyArray<[number, number]> = [[3, 2], [10, 1], [20, 2], [25, 5], [40, 1], [50, 1], [255, 1]];
    const PAGES = 256;
    const SIZE = PAGES * 4096;
    /** The map expected of bytes from..to-1: [offset, length, flags], adjacent runs of equal flags merged. */
    const expected = (from = 0, to = SIZE): Array<[number, number, number]> => {
      const out: Array<[number, number, number]> = [];
      const add = (a: number, b: number, flags: number): void => {
        const [x, y] = [Math.max(a, from), Math.min(b, to)];
        if (y <= x) return;
        const last = out.at(-1);
        if (last !== undefined && last[2] === flags) last[1] += y - x;
        else out.push([x, y - x, flags]);
      };
      let at = 0;
      for (const [first, count] of DATA) {
        add(at * 4096, first * 4096, HOLE_ZERO);
        add(first * 4096, (first + count) * 4096, 0);
        at = first + count;
      }
      add(at * 4096, SIZE, HOLE_ZERO);
      return out;
    };
    /** Runs of [offset, length, flags] with adjacent equal flags merged (a client may get a map in several replies). */
    const merged = (runs: Array<[number, number, number]>): Array<[number, number, number]> =>
      runs.reduce<Array<[number, number, number]>>((out, [o, l, f]) => {
        const last = out.at(-1);
        if (last !== undefined && last[2] === f && last[0] + last[1] === o) last[1] += l;
        else out.push([o, l, f]);
        return out;
      }, []);
    /** A session's map of bytes from..to-1, asking again from where each reply ends. */
    const mapOf = async (s: Session, from: number, to: number): Promise<Array<[number, number, number]>> => {
      const out: Array<[number, number, number]> = [];
      for (let at = from; at < to; ) {
        for (const [length, flags] of extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, at, to - at))) {
          out.push([at, length, flags]);
          at += length;
        }
      }
      assert.equal(out.reduce((n, [, l]) => n + l, 0), to - from, 'the extents cover the range, not more');
      return merged(out);
    };

    before(async function () {
      this.timeout(60_000);
      await c.client.createVolume({ name: 'map', pageCount: PAGES, shards: 2, stripePages: 4 });
      await qemuIo(uri('map'), ['write -P 0x11 12k 8k', 'write -P 0x22 80k 40k', 'discard 88k 12k', 'write -P 0x33 160k 8k', 'write -z -u 164k 4k', `write -P 0x44 ${50 * 4096 + 10} 100`, 'write -P 0x55 1020k 4k']);
      await c.client.volume('map').write(10, new Uint8Array(4096).fill(0x66));
    });

    it('nbdinfo --map shows data exactly at the pages written, hole,zero elsewhere', async () => {
      const r = await tool('nbdinfo', ['--map', '--json', uri('map')]);
      assert.equal(r.code, 0, r.stderr);
      const map = (JSON.parse(r.stdout) as Array<{ offset: number; length: number; type: number }>).map((e): [number, number, number] => [e.offset, e.length, e.type]);
      assert.deepEqual(merged(map), expected());
    });

    it('qemu-img map (one extent per request: REQ_ONE) shows the same map', async () => {
      const r = await tool('qemu-img', ['map', '--output=json', '-f', 'raw', uri('map')]);
      assert.equal(r.code, 0, r.stderr);
      const map = (JSON.parse(r.stdout) as Array<{ start: number; length: number; data: boolean; zero: boolean }>).map((e): [number, number, number] => {
        assert.equal(e.data, !e.zero, JSON.stringify(e));
        return [e.start, e.length, e.data ? 0 : HOLE_ZERO];
      });
      assert.deepEqual(merged(map), expected());
    });

    it('nbdinfo lists base:allocation among the contexts of an export, with structured replies', async () => {
      for (const args of [['--json', uri('map')], ['--list', '--json', nbdUri('127.0.0.1', single.address.port, '')]]) {
        const r = await tool('nbdinfo', args);
        assert.equal(r.code, 0, r.stderr);
        const info = JSON.parse(r.stdout) as { structured: boolean; exports: Array<{ contexts: string[] }> };
        assert.equal(info.structured, true, args.join(' '));
        assert.deepEqual(info.exports[0]!.contexts, ['base:allocation'], args.join(' '));
      }
    });

    it('nbdcopy and qemu-img convert, which skip what block status says is zeros, copy the volume byte for byte', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-nbd-map-'));
      try {
        const pages = await c.client.volume('map').read(Array.from({ length: PAGES }, (_, i) => i));
        const bytes = Buffer.concat(pages);
        const copy = path.join(dir, 'copy.img');
        const n = await tool('nbdcopy', [uri('map'), copy]);
        assert.equal(n.code, 0, n.stderr);
        assert.ok(fs.readFileSync(copy).equals(bytes), 'nbdcopy');
        const converted = path.join(dir, 'converted.img');
        const q = await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri('map'), converted]);
        assert.equal(q.code, 0, q.stderr);
        assert.ok(fs.readFileSync(converted).equals(bytes), 'qemu-img convert');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('BLOCK_STATUS: extents from the offset, merged, covering at most the length; a byte has its page\'s flags', async () => {
      const s = await Session.open(all.address.port, 'map', { meta: ['base:allocation'] });
      assert.deepEqual(await mapOf(s, 0, SIZE), expected());
      // One reply for the whole volume (2 shards of 128 pages answer it whole).
      assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 0, SIZE)), expected().map(([, l, f]) => [l, f]));
      // Unaligned: the page holding each byte decides; the first and last extents are parts of pages.
      for (const [from, to] of [[3 * 4096 - 100, 3 * 4096 + 100], [4096 + 1, 11 * 4096 - 1], [50 * 4096 + 4095, 50 * 4096 + 4097], [SIZE - 4097, SIZE]]) {
        assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, from, to - from)), expected(from, to).map(([, l, f]) => [l, f]), `${from}..${to}`);
      }
      assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 0, 1)), [[1, HOLE_ZERO]]);
      s.peer.close();
    });

    it('WRITE_ZEROES with NO_HOLE writes pages of zeros (the range stays allocated); without it, the range becomes a hole', async () => {
      await c.client.createVolume({ name: 'nohole', pageCount: 16 });
      const s = await Session.open(all.address.port, 'nohole', { meta: ['base:allocation'] });
      assert.equal((await s.request(NBD_CMD.WRITE, 0, 8 * 4096, { data: Buffer.alloc(8 * 4096, 5) })).error, 0);
      assert.equal((await s.request(NBD_CMD.WRITE_ZEROES, 0, 4 * 4096, { flags: NBD_CMD_FLAG.NO_HOLE })).error, 0);
      assert.equal((await s.request(NBD_CMD.WRITE_ZEROES, 4 * 4096, 4 * 4096)).error, 0);
      const read = await s.request(NBD_CMD.READ, 0, 8 * 4096);
      assert.ok(read.data!.every((b) => b === 0), 'zeros either way');
      assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 0, 8 * 4096)), [[4 * 4096, 0], [4 * 4096, HOLE_ZERO]]);
      s.peer.close();
      await c.client.deleteVolume('nohole');
    });

    it('BLOCK_STATUS with REQ_ONE: one extent, at most the length', async () => {
      const s = await Session.open(all.address.port, 'map', { meta: ['base:allocation'] });
      const one = NBD_CMD_FLAG.REQ_ONE;
      assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 0, SIZE, { flags: one })), [[3 * 4096, HOLE_ZERO]]);
      assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 3 * 4096, SIZE - 3 * 4096, { flags: one })), [[2 * 4096, 0]]);
      assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 100, 20_000, { flags: one })), [[3 * 4096 - 100, HOLE_ZERO]]);
      assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 100, 500, { flags: one | NBD_CMD_FLAG.FUA })), [[500, HOLE_ZERO]], 'cut to the length; FUA accepted');
      assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 25 * 4096 + 7, 4096, { flags: one })), [[4096, 0]]);
      s.peer.close();
    });

    it('BLOCK_STATUS is EINVAL without base:allocation selected for the export, and for the ranges and flags a READ refuses', async () => {
      const refused = async (s: Session, what: string, offset = 0, length = 4096, flags = 0, message = /base:allocation context selected/): Promise<void> => {
        const r = await s.request(NBD_CMD.BLOCK_STATUS, offset, length, { flags });
        assert.equal(r.error, NBD_ERR.EINVAL, what);
        assert.match(r.message!, message, what);
        assert.ok(r.chunks.every((c) => c.type !== NBD_REPLY_TYPE.BLOCK_STATUS), `${what}: no status`);
      };
      // No structured replies: a simple EINVAL.
      const plain = await Session.open(all.address.port, 'map');
      const r = await plain.request(NBD_CMD.BLOCK_STATUS, 0, 4096);
      assert.deepEqual([r.simple, r.error], [true, NBD_ERR.EINVAL]);
      plain.peer.close();
      const none = await Session.open(all.address.port, 'map', { structured: true });
      await refused(none, 'structured replies, no SET_META_CONTEXT');
      none.peer.close();
      const baseOnly = await Session.open(all.address.port, 'map', { meta: ['base:'] });
      await refused(baseOnly, 'a SET that selected nothing');
      baseOnly.peer.close();
      for (const [what, steps] of [
        ['a later SET with no query', [['base:allocation'], []]],
        ['a later SET that failed', [['base:allocation'], 'malformed']],
        ['a SET for another export', 'other'],
      ] as const) {
        const p = await greet(all.address.port);
        await option(p, NBD_OPT.STRUCTURED_REPLY);
        if (steps === 'other') {
          assert.equal(contexts(await option(p, NBD_OPT.SET_META_CONTEXT, metaData('v', ['base:allocation']))).contexts.length, 1);
        } else {
          for (const step of steps) {
            const data = step === 'malformed' ? Buffer.from('xx') : metaData('map', [...step]);
            await option(p, NBD_OPT.SET_META_CONTEXT, data);
          }
        }
        const s = await Session.go(p, 'map');
        await refused(s, what);
        s.peer.close();
      }
      const s = await Session.open(all.address.port, 'map', { meta: ['base:allocation'] });
      await refused(s, 'length 0', 0, 0, 0, /length 0/);
      await refused(s, 'past the end', SIZE - 100, 200, 0, /past the end of the export/);
      await refused(s, 'at the end', SIZE, 1, 0, /past the end of the export/);
      await refused(s, 'a flag not for it', 0, 4096, NBD_CMD_FLAG.NO_HOLE, /command flags 0x2/);
      await refused(s, 'an unknown flag', 0, 4096, 1 << 9, /command flags 0x200/);
      assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 0, 4096)), [[4096, HOLE_ZERO]], 'the connection goes on');
      s.peer.close();
      // The selection made before INFO, and GO to the default export of a single-volume server, which is that volume.
      const q = await greet(single.address.port);
      await option(q, NBD_OPT.STRUCTURED_REPLY);
      assert.equal(contexts(await option(q, NBD_OPT.SET_META_CONTEXT, metaData('v', ['base:allocation']))).contexts.length, 1);
      assert.equal((await option(q, NBD_OPT.INFO, goData('v'))).at(-1)!.type, NBD_REP.ACK);
      const d = await Session.go(q, '');
      assert.equal(extentsOf(await d.request(NBD_CMD.BLOCK_STATUS, 0, 4096)).length, 1);
      q.close();
    });
  });

  describe('transmission', () => {
    it('a volume grown (volume.resize): a connection made before keeps its size; one made after has the new size and its last block', async () => {
      await c.client.createVolume({ name: 'grows', pageCount: 256, shards: 2, stripePages: 4 });
      const before = await Session.open(all.address.port, 'grows');
      assert.equal(before.size, 256 * 4096);
      await c.client.resizeVolume('grows', 512);
      // The size a client was given stands for its connection (NBD tells no size change).
      assert.equal((await before.request(NBD_CMD.WRITE, 256 * 4096, 4096, { data: Buffer.alloc(4096, 5) })).error, NBD_ERR.ENOSPC);
      before.peer.close();
      const after = await Session.open(all.address.port, 'grows');
      assert.equal(after.size, 512 * 4096);
      assert.equal((await after.request(NBD_CMD.WRITE, 512 * 4096 - 4096, 4096, { data: Buffer.alloc(4096, 6) })).error, 0);
      const read = await after.request(NBD_CMD.READ, 256 * 4096 - 512, 1024);
      assert.equal(read.error, 0);
      assert.ok(read.data.every((b) => b === 0), 'the old end and the new pages after it, zeros as never written');
      assert.ok((await after.request(NBD_CMD.READ, 512 * 4096 - 4096, 4096)).data.every((b) => b === 6));
      after.peer.close();
      await c.client.deleteVolume('grows');
    });

    it('out of range: a read or trim is EINVAL, a write or write-zeroes ENOSPC; the connection goes on', async () => {
      const s = await Session.open(all.address.port, 'v');
      const size = 1024 * 4096;
      assert.equal((await s.request(NBD_CMD.READ, size - 100, 200)).error, NBD_ERR.EINVAL);
      assert.equal((await s.request(NBD_CMD.WRITE, size - 100, 200, { data: Buffer.alloc(200, 1) })).error, NBD_ERR.ENOSPC);
      assert.equal((await s.request(NBD_CMD.TRIM, size, 4096)).error, NBD_ERR.EINVAL);
      assert.equal((await s.request(NBD_CMD.WRITE_ZEROES, 2 ** 60, 4096)).error, NBD_ERR.ENOSPC);
      assert.equal((await s.request(NBD_CMD.READ, 0, 0)).error, NBD_ERR.EINVAL, 'length 0');
      assert.equal((await s.request(NBD_CMD.READ, 0, BLOCK_BYTES_MAX + 1)).error, NBD_ERR.EINVAL, 'longer than the maximum');
      assert.equal((await s.request(NBD_CMD.WRITE, 0, BLOCK_BYTES_MAX + 1, { data: Buffer.alloc(BLOCK_BYTES_MAX + 1, 9) })).error, NBD_ERR.EINVAL, 'its payload skipped');
      const r = await s.request(NBD_CMD.READ, size - 4096, 4096);
      assert.equal(r.error, 0, 'the connection goes on');
      assert.equal(r.data.byteLength, 4096);
      s.peer.close();
    });

    it('a device short of space: a write is ENOSPC (not EIO), while reads and trims go on; space freed, the write is taken', async () => {
      const s = await Session.open(all.address.port, 'v');
      await c.setFreeBytes(0, 0);
      try {
        assert.equal((await s.request(NBD_CMD.WRITE, 0, 4096, { data: Buffer.alloc(4096, 3) })).error, NBD_ERR.ENOSPC);
        assert.equal((await s.request(NBD_CMD.READ, 0, 4096)).error, 0);
        assert.equal((await s.request(NBD_CMD.TRIM, 4096, 4096)).error, 0);
      } finally {
        await c.setFreeBytes(0, undefined);
      }
      assert.equal((await s.request(NBD_CMD.WRITE, 0, 4096, { data: Buffer.alloc(4096, 3) })).error, 0);
      assert.ok((await s.request(NBD_CMD.READ, 0, 4096)).data.every((b) => b === 3));
      s.peer.close();
    });

    it('answers an unknown command, CACHE, and a flag not for the command (NO_HOLE on a write, FAST_ZERO on a trim, REQ_ONE on a read, any but FUA on a flush) EINVAL; FUA anywhere and FAST_ZERO on a write-zeroes are accepted', async () => {
      const s = await Session.open(all.address.port, 'v');
      assert.equal((await s.request(99, 0, 4096)).error, NBD_ERR.EINVAL);
      assert.equal((await s.request(NBD_CMD.CACHE, 0, 4096)).error, NBD_ERR.EINVAL);
      assert.equal((await s.request(NBD_CMD.READ, 0, 4096, { flags: 1 << 9 })).error, NBD_ERR.EINVAL, 'an unknown flag');
      assert.equal((await s.request(NBD_CMD.WRITE, 0, 10, { data: Buffer.alloc(10), flags: NBD_CMD_FLAG.NO_HOLE })).error, NBD_ERR.EINVAL, 'NO_HOLE on a write');
      assert.equal((await s.request(NBD_CMD.WRITE, 8192, 8192, { data: Buffer.alloc(8192, 9) })).error, 0);
      assert.equal((await s.request(NBD_CMD.WRITE_ZEROES, 8192, 4096, { flags: NBD_CMD_FLAG.FAST_ZERO })).error, 0);
      // With NO_HOLE it would write pages of zeros, not fast: ENOTSUP at once, nothing changed.
      assert.equal((await s.request(NBD_CMD.WRITE, 0, 4096, { data: Buffer.alloc(4096, 7) })).error, 0);
      assert.equal((await s.request(NBD_CMD.WRITE_ZEROES, 0, 4096, { flags: NBD_CMD_FLAG.FAST_ZERO | NBD_CMD_FLAG.NO_HOLE })).error, NBD_ERR.ENOTSUP);
      assert.deepEqual((await s.request(NBD_CMD.READ, 0, 4096)).data, Buffer.alloc(4096, 7));
      assert.deepEqual((await s.request(NBD_CMD.READ, 8192, 8192)).data, Buffer.concat([Buffer.alloc(4096), Buffer.alloc(4096, 9)]));
      assert.equal((await s.request(NBD_CMD.TRIM, 0, 4096, { flags: NBD_CMD_FLAG.FAST_ZERO })).error, NBD_ERR.EINVAL, 'FAST_ZERO on a trim');
      assert.equal((await s.request(NBD_CMD.READ, 0, 4096, { flags: NBD_CMD_FLAG.REQ_ONE })).error, NBD_ERR.EINVAL, 'REQ_ONE on a read');
      assert.equal((await s.request(NBD_CMD.READ, 0, 4096, { flags: NBD_CMD_FLAG.FUA })).error, 0);
      assert.equal((await s.request(NBD_CMD.FLUSH, 0, 0, { flags: NBD_CMD_FLAG.FUA })).error, 0);
      assert.equal((await s.request(NBD_CMD.FLUSH, 0, 0, { flags: NBD_CMD_FLAG.NO_HOLE })).error, NBD_ERR.EINVAL, 'NO_HOLE on a flush');
      assert.equal((await s.request(NBD_CMD.FLUSH, 0, 0, { flags: 0xff })).error, NBD_ERR.EINVAL, 'unknown flags on a flush');
      assert.equal((await s.request(NBD_CMD.READ, 0, 4096)).error, 0);
      s.peer.close();
    });

    it('a read-only export refuses writes, trims and write-zeroes with EPERM and serves reads', async () => {
      const s = await Session.open(readOnly.address.port, 'v');
      assert.ok((s.flags & NBD_FLAG.READ_ONLY) !== 0);
      assert.equal((await s.request(NBD_CMD.WRITE, 0, 100, { data: Buffer.alloc(100, 3) })).error, NBD_ERR.EPERM);
      assert.equal((await s.request(NBD_CMD.TRIM, 0, 4096)).error, NBD_ERR.EPERM);
      assert.equal((await s.request(NBD_CMD.WRITE_ZEROES, 0, 4096)).error, NBD_ERR.EPERM);
      assert.equal((await s.request(NBD_CMD.READ, 0, 100)).error, 0);
      assert.equal((await s.request(NBD_CMD.FLUSH, 0, 0)).error, 0);
      s.peer.close();
    });

    it('concurrent unaligned writes to one page, on two connections to one server, all land', async () => {
      const page = 700;
      await c.client.volume('v').write(page, new Uint8Array(4096).fill(0xee));
      const a = await Session.open(all.address.port, 'v');
      const b = await Session.open(all.address.port, 'v');
      const replies = Array.from({ length: 32 }, (_, i) =>
        (i % 2 === 0 ? a : b).request(NBD_CMD.WRITE, page * 4096 + 1 + i * 100, 50, { data: Buffer.alloc(50, i + 1) }),
      );
      for (const r of await Promise.all(replies)) assert.equal(r.error, 0);
      const got = await c.client.volume('v').read(page);
      const expected = Buffer.alloc(4096, 0xee);
      for (let i = 0; i < 32; i++) expected.fill(i + 1, 1 + i * 100, 1 + i * 100 + 50);
      assert.ok(Buffer.from(got).equals(expected), 'every write kept the others\' bytes');
      a.peer.close();
      b.peer.close();
    });

    it('an unaligned write-zeroes zeroes only its bytes, a trim only its whole pages; writes over several calls land; a whole-export trim zeros it all', async () => {
      const s = await Session.open(all.address.port, 'big');
      const data = crypto.randomBytes(20 * 1024 * 1024);
      assert.equal((await s.request(NBD_CMD.WRITE, 8192 * 3 + 5, data.byteLength, { data })).error, 0, 'more pages than one client call takes');
      assert.equal((await s.request(NBD_CMD.WRITE_ZEROES, 8192 * 3 + 10, 20, { flags: NBD_CMD_FLAG.NO_HOLE | NBD_CMD_FLAG.FUA })).error, 0);
      // Covers no whole page: nothing changes.
      assert.equal((await s.request(NBD_CMD.TRIM, 8192 * 3 + 40, 8192)).error, 0);
      // Pages 10..12 whole, and parts of pages 9 and 13, which keep their bytes.
      assert.equal((await s.request(NBD_CMD.TRIM, 8192 * 10 - 100, 8192 * 3 + 200)).error, 0);
      // Pages 20..2,000 whole with the edges: a write-zeroes of about 16 MiB (more pages than one
      // client call takes), made of the two edge pages and one range.
      assert.equal((await s.request(NBD_CMD.WRITE_ZEROES, 8192 * 20 - 7, 8192 * 1981 + 14)).error, 0);
      const back = await s.request(NBD_CMD.READ, 8192 * 3 + 5, data.byteLength);
      const expected = Buffer.from(data);
      expected.fill(0, 5, 25);
      expected.fill(0, 8192 * 7 - 5, 8192 * 10 - 5);
      expected.fill(0, 8192 * 17 - 12, 8192 * 17 - 12 + 8192 * 1981 + 14);
      assert.ok(back.data.equals(expected));
      // The whole export: answered, once its pages are zeros (one small record per shard).
      assert.equal((await s.request(NBD_CMD.TRIM, 0, s.size)).error, 0);
      const after = await s.request(NBD_CMD.READ, 8192 * 3 + 5, data.byteLength);
      assert.ok(after.data.equals(Buffer.alloc(data.byteLength)), 'every page is zeros');
      s.peer.close();
    });

    it('FLUSH is answered after the writes received before it', async () => {
      const s = await Session.open(all.address.port, 'v');
      const writes = Array.from({ length: 4 }, (_, i) => s.send(NBD_CMD.WRITE, (300 + i * 64) * 4096, 256 * 1024, { data: Buffer.alloc(256 * 1024, i) }));
      const flush = s.send(NBD_CMD.FLUSH, 0, 0);
      assert.equal((await flush.reply).error, 0);
      for (const w of writes) assert.equal((await w.reply).error, 0);
      assert.equal(s.order.at(-1), flush.cookie, `replies in order ${s.order.join(',')}`);
      s.peer.close();
    });

    it('DISC answers the requests before it, then closes', async () => {
      const s = await Session.open(all.address.port, 'v');
      // In one segment: the DISC is read while the write is in flight.
      s.peer.socket.cork();
      const w = s.send(NBD_CMD.WRITE, 900 * 4096, 4096, { data: Buffer.alloc(4096, 0x42) });
      s.send(NBD_CMD.DISC, 0, 0);
      s.peer.socket.uncork();
      assert.equal((await w.reply).error, 0);
      await s.peer.closed;
      assert.ok((await c.client.volume('v').read(900)).every((b) => b === 0x42));
    });

    it('a request with a bad magic closes its connection, after answering the ones before it; the server serves on', async () => {
      const s = await Session.open(all.address.port, 'v');
      s.peer.socket.cork();
      const r = s.send(NBD_CMD.READ, 0, 4096);
      s.peer.write(Buffer.alloc(28, 0x55));
      s.peer.socket.uncork();
      assert.equal((await r.reply).error, 0);
      await s.peer.closed;
      const again = await Session.open(all.address.port, 'v');
      assert.equal((await again.request(NBD_CMD.READ, 0, 4096)).error, 0);
      again.peer.close();
    });

    it('a volume created again under a connection\'s name, with another page size: EIO, never its pages read with the old geometry', async () => {
      await c.client.createVolume({ name: 'again', pageCount: 16, pageSize: 8192 });
      const s = await Session.open(all.address.port, 'again');
      assert.equal((await s.request(NBD_CMD.READ, 0, 8192)).error, 0);
      await c.client.deleteVolume('again');
      await c.client.createVolume({ name: 'again', pageCount: 32, pageSize: 4096 });
      // Pages of 4 KiB placed in a buffer of 8 KiB strides would leave half of it as it was
      // allocated (not zeroed): whatever memory held before.
      const r = await s.request(NBD_CMD.READ, 0, 8 * 8192);
      assert.equal(r.error, NBD_ERR.EIO);
      assert.equal((await s.request(NBD_CMD.WRITE, 0, 8192, { data: Buffer.alloc(8192, 7) })).error, NBD_ERR.EIO);
      s.peer.close();
      // A connection opened now exports the new volume.
      const fresh = await Session.open(all.address.port, 'again');
      const read = await fresh.request(NBD_CMD.READ, 0, 4 * 4096);
      assert.equal(read.error, 0);
      assert.ok(read.data!.every((b) => b === 0));
      // Created again with the same geometry: the connection's writes do not reach the new volume.
      await c.client.deleteVolume('again');
      await c.client.createVolume({ name: 'again', pageCount: 32, pageSize: 4096 });
      assert.equal((await fresh.request(NBD_CMD.WRITE, 0, 4096, { data: Buffer.alloc(4096, 9) })).error, NBD_ERR.EIO);
      assert.ok((await c.client.volume('again').read(0)).every((b) => b === 0), 'the new volume untouched');
      fresh.peer.close();
      await c.client.deleteVolume('again');
    });

    it('a volume deleted under a connection: EIO, logged once at warn with the volume and command, and the connection goes on', async () => {
      await c.client.createVolume({ name: 'gone', pageCount: 16 });
      const s = await Session.open(all.address.port, 'gone');
      assert.equal((await s.request(NBD_CMD.READ, 0, 4096)).error, 0);
      await c.client.deleteVolume('gone');
      logLines.length = 0;
      assert.equal((await s.request(NBD_CMD.READ, 0, 4096)).error, NBD_ERR.EIO);
      const warned = logLines.filter((l) => l.level === 'warn');
      assert.equal(warned.length, 1, JSON.stringify(logLines));
      assert.equal(warned[0]!.fields['volume'], 'gone');
      assert.equal(warned[0]!.fields['command'], 'read');
      assert.equal(warned[0]!.fields['code'], 'not_found');
      assert.equal((await s.request(NBD_CMD.FLUSH, 0, 0)).error, 0, 'the connection goes on');
      s.peer.close();
    });
  });

  describe('bounds and stopping (a stand-in client)', () => {
    it('a list of the volumes that fails (no controller answers) is NBD_REP_ERR_PLATFORM naming why, logged once, and the session goes on', async () => {
      const stub = stubClient();
      const listing = { fail: true };
      const client = {
        volume: stub.client.volume,
        listVolumes: async () => {
          if (listing.fail) throw new ProtocolError('unavailable', 'the controller did not answer');
          return stub.client.listVolumes();
        },
      } as unknown as StrataClient;
      const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const server = await startNbdServer({ client, port: 0, logger: captureLogger(lines) });
      try {
        const p = await greet(server.address.port);
        const failed = await option(p, NBD_OPT.LIST);
        assert.deepEqual(failed.map((r) => r.type), [NBD_REP.ERR_PLATFORM]);
        assert.match(failed[0]!.data.toString('utf8'), /the volumes could not be listed: the controller did not answer/);
        assert.deepEqual(lines.filter((l) => l.level === 'warn').map((l) => l.msg), ['nbd list of volumes failed']);
        listing.fail = false;
        const list = await option(p, NBD_OPT.LIST);
        assert.deepEqual(list.map((r) => r.type), [NBD_REP.SERVER, NBD_REP.ACK]);
        p.close();
      } finally {
        await server.stop();
      }
    });

    it('a Strata timeout is EIO: a write\'s after WRITE_TRIES tries, a read\'s at once (the client made its tries)', async () => {
      const stub = stubClient();
      const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, logger: captureLogger(lines) });
      try {
        const s = await Session.open(server.address.port, 'stub');
        stub.failWith = new ProtocolError('timeout', 'no reply before the deadline: the write may or may not be committed');
        assert.equal((await s.request(NBD_CMD.WRITE, 0, 4096, { data: Buffer.alloc(4096) })).error, NBD_ERR.EIO);
        assert.equal(stub.calls, WRITE_TRIES);
        assert.equal((await s.request(NBD_CMD.READ, 0, 4096)).error, NBD_ERR.EIO);
        assert.equal(stub.calls, WRITE_TRIES + 1);
        assert.deepEqual(lines.filter((l) => l.level === 'warn').map((l) => [l.fields['command'], l.fields['code']]), [['write', 'timeout'], ['read', 'timeout']]);
        s.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('a write waiting for its pages behind an earlier write that does not end is EIO at its own deadline, without a call; the earlier one is answered when it ends', async () => {
      const stub = stubClient();
      // The client's timeout: each request's whole time, its wait for its pages included.
      (stub.client as unknown as { timeoutMs: number }).timeoutMs = 1500;
      const volume = stub.client.volume('stub') as unknown as { writePages: (...args: unknown[]) => Promise<unknown> };
      let releaseFirst!: () => void;
      const firstHeld = new Promise<void>((r) => (releaseFirst = r));
      let writeCalls = 0;
      volume.writePages = async () => {
        // The first write's call ends only when the test lets it (a shard whose leader is frozen).
        if (writeCalls++ === 0) await firstHeld;
        return { lsn: 1, lsns: [] };
      };
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, logger: captureLogger([]) });
      try {
        const s = await Session.open(server.address.port, 'stub', { structured: true });
        const order: string[] = [];
        const sent = (what: string, p: Promise<Reply>): Promise<Reply> => p.then((r) => (order.push(what), r));
        const first = sent('first', s.request(NBD_CMD.WRITE, 0, 4096, { data: Buffer.alloc(4096, 1) }));
        await waitFor('the first write under way', () => writeCalls === 1, 5000);
        const second = sent('second', s.request(NBD_CMD.WRITE, 0, 4096, { data: Buffer.alloc(4096, 2) }));
        const third = sent('third', s.request(NBD_CMD.WRITE, 100, 10, { data: Buffer.alloc(10, 3) }));
        // A bound for the build without the deadline, where they would wait for the first forever.
        const safety = setTimeout(releaseFirst, 8000);
        const [r2, r3] = await Promise.all([second, third]);
        releaseFirst();
        clearTimeout(safety);
        const r1 = await first;
        assert.deepEqual(order, ['second', 'third', 'first'], 'the waiting writes answered while the first still runs');
        for (const r of [r2, r3]) {
          assert.equal(r.error, NBD_ERR.EIO);
          assert.match(r.message!, /timeout: pages 0\.\.0 were still held by an earlier write of them .*nothing of it was written/);
        }
        assert.equal(r1.error, 0);
        assert.equal(writeCalls, 1, 'no call made for the writes that gave up');
        assert.equal(stub.calls, 0, 'nor a read of their edge page');
        // The pages free again: the next write is made.
        assert.equal((await s.request(NBD_CMD.WRITE, 0, 4096, { data: Buffer.alloc(4096, 4) })).error, 0);
        assert.equal(writeCalls, 2);
        s.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('a Strata failure of a structured READ is an error chunk naming the code; a long message is cut at 1024 bytes, on a character', async () => {
      const stub = stubClient();
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, logger: captureLogger([]) });
      try {
        const s = await Session.open(server.address.port, 'stub', { structured: true });
        stub.failWith = new ProtocolError('unavailable', 'no leader for shard 0');
        const r = await s.request(NBD_CMD.READ, 0, 4096);
        assert.deepEqual([r.simple, r.error, r.chunks.length], [false, NBD_ERR.EIO, 1]);
        assert.equal(r.message, 'read failed: unavailable: no leader for shard 0');
        // 'é' is 2 bytes: the cut falls inside one unless it is moved back to a character's start.
        // The prefix 'read failed: timeout: x' is 23 bytes: the 1024th byte is the first of an 'é'.
        stub.failWith = new ProtocolError('timeout', `x${'é'.repeat(3000)}`);
        const long = await s.request(NBD_CMD.READ, 0, 4096);
        assert.equal(long.error, NBD_ERR.EIO);
        const bytes = Buffer.from(long.message!, 'utf8');
        assert.equal(bytes.byteLength, 1023, 'cut before the character the limit falls in');
        assert.equal(long.chunks[0]!.payload.readUInt16BE(4), long.chunks[0]!.payload.byteLength - 6, 'the message length is the rest of the chunk');
        assert.ok(!long.message!.includes('\ufffd'), 'no character cut');
        s.peer.close();
      } finally {
        await server.stop();
      }
    });

    it(`a BLOCK_STATUS reply holds at most ${BLOCK_STATUS_EXTENTS_MAX} extents; it ends where the cluster's answer ends`, async () => {
      const stub = stubClient(20_000);
      // Every other page holds data: 20,000 extents.
      stub.pagesWithData = (first, count) => ({ end: first + count, ranges: Array.from({ length: count }, (_, i) => first + i).filter((p) => p % 2 === 1).map((p) => ({ first: p, count: 1 })) });
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, logger: captureLogger([]) });
      try {
        const s = await Session.open(server.address.port, 'stub', { meta: ['base:allocation'] });
        const extents = extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 0, 20_000 * 4096));
        assert.equal(extents.length, BLOCK_STATUS_EXTENTS_MAX);
        assert.deepEqual(extents.slice(0, 3), [[4096, HOLE_ZERO], [4096, 0], [4096, HOLE_ZERO]]);
        assert.deepEqual(extents.at(-1), [4096, 0], 'the last extent kept is whole');
        // A shard answered up to page 7 only: the reply stops there, at the last range's end.
        stub.pagesWithData = (first) => ({ end: 7, ranges: [{ first: first + 1, count: 2 }, { first: first + 3, count: 2 }] });
        assert.deepEqual(extentsOf(await s.request(NBD_CMD.BLOCK_STATUS, 100, 100 * 4096)), [[4096 - 100, HOLE_ZERO], [4 * 4096, 0], [2 * 4096, HOLE_ZERO]], 'adjacent ranges merged');
        s.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('a BLOCK_STATUS whose Strata call fails, or answers out of its range, is an EIO error chunk, logged; overloaded is made again', async () => {
      const stub = stubClient();
      const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, logger: captureLogger(lines) });
      try {
        const s = await Session.open(server.address.port, 'stub', { meta: ['base:allocation'] });
        stub.failWith = new ProtocolError('unavailable', 'no leader for shard 0');
        const failed = await s.request(NBD_CMD.BLOCK_STATUS, 0, 16 * 4096);
        assert.deepEqual([failed.error, failed.chunks.map((c) => c.type)], [NBD_ERR.EIO, [NBD_REPLY_TYPE.ERROR]]);
        assert.equal(failed.message, 'block_status failed: unavailable: no leader for shard 0');
        stub.failWith = new ProtocolError('out_of_range', 'page 16 is past the volume (16 pages)');
        assert.equal((await s.request(NBD_CMD.BLOCK_STATUS, 0, 4096)).error, NBD_ERR.EINVAL, 'out of range: as a read');
        stub.failWith = undefined;
        const wrong: PagesWithData[] = [
          (first) => ({ end: first, ranges: [] }),
          (first, count) => ({ end: first + count + 1, ranges: [] }),
          (first, count) => ({ end: first + count, ranges: [{ first: first + 3, count: 1 }, { first: first + 1, count: 1 }] }),
          (first, count) => ({ end: first + 2, ranges: [{ first: first + 1, count: 2 }] }),
          (first, count) => ({ end: first + count, ranges: [{ first: first + 1, count: 0 }] }),
        ];
        for (const answer of wrong) {
          stub.pagesWithData = answer;
          const r = await s.request(NBD_CMD.BLOCK_STATUS, 4096, 8 * 4096);
          assert.equal(r.error, NBD_ERR.EIO, answer.toString());
          assert.match(r.message!, /block_status failed: internal error/);
        }
        assert.deepEqual(lines.filter((l) => l.level === 'warn').map((l) => [l.fields['command'], l.fields['code']]), [
          ['block_status', 'unavailable'],
          ['block_status', 'out_of_range'],
          ...wrong.map(() => ['block_status', 'internal']),
        ]);
        stub.pagesWithData = (first, count) => ({ end: first + count, ranges: [] });
        stub.failWith = new ProtocolError('overloaded', 'device queue is full; retry after a back-off');
        const retried = s.request(NBD_CMD.BLOCK_STATUS, 0, 4096);
        await waitFor('refused calls', () => stub.calls >= 10);
        stub.failWith = undefined;
        assert.deepEqual(extentsOf(await retried), [[4096, HOLE_ZERO]]);
        s.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('LIST and SET_META_CONTEXT look the export up: not there is NBD_REP_ERR_UNKNOWN, the catalog failing NBD_REP_ERR_PLATFORM', async () => {
      const stub = stubClient();
      const server = await startNbdServer({ client: stub.client, port: 0, logger: captureLogger([]) });
      try {
        const p = await greet(server.address.port);
        await option(p, NBD_OPT.STRUCTURED_REPLY);
        for (const opt of [NBD_OPT.LIST_META_CONTEXT, NBD_OPT.SET_META_CONTEXT]) {
          stub.infoFailWith = new ProtocolError('not_found', "volume 'stub' does not exist");
          const unknown = await option(p, opt, metaData('stub', ['base:allocation']));
          assert.deepEqual(unknown.map((r) => r.type), [NBD_REP.ERR_UNKNOWN]);
          assert.match(unknown[0]!.data.toString(), /does not exist/);
          stub.infoFailWith = new ProtocolError('unavailable', 'the catalog has no leader');
          const platform = await option(p, opt, metaData('stub', ['base:allocation']));
          assert.deepEqual(platform.map((r) => r.type), [NBD_REP.ERR_PLATFORM]);
          assert.match(platform[0]!.data.toString(), /no leader/);
          stub.infoFailWith = undefined;
          assert.deepEqual(contexts(await option(p, opt, metaData('stub', ['base:allocation']))).last, NBD_REP.ACK);
        }
        p.close();
      } finally {
        await server.stop();
      }
    });

    it('INFO and GO: malformed data is NBD_REP_ERR_INVALID; an export not there NBD_REP_ERR_UNKNOWN, the catalog failing NBD_REP_ERR_PLATFORM; the negotiation goes on', async () => {
      const stub = stubClient();
      const server = await startNbdServer({ client: stub.client, port: 0, logger: captureLogger([]) });
      try {
        const p = await greet(server.address.port);
        const name = Buffer.from('stub', 'utf8');
        // A byte past the requests of information; two requests announced, none there.
        for (const data of [Buffer.concat([goData('stub'), Buffer.alloc(1)]), Buffer.concat([u32(name.byteLength), name, u16(2)])]) {
          const malformed = await option(p, NBD_OPT.INFO, data);
          assert.deepEqual(malformed.map((r) => [r.type, r.data.toString()]), [[NBD_REP.ERR_INVALID, 'malformed NBD_OPT_INFO/GO data']]);
        }
        for (const opt of [NBD_OPT.INFO, NBD_OPT.GO]) {
          stub.infoFailWith = new ProtocolError('not_found', "volume 'stub' does not exist");
          const unknown = await option(p, opt, goData('stub'));
          assert.deepEqual(unknown.map((r) => r.type), [NBD_REP.ERR_UNKNOWN]);
          assert.match(unknown[0]!.data.toString(), /does not exist/);
          stub.infoFailWith = new ProtocolError('unavailable', 'the catalog has no leader');
          const platform = await option(p, opt, goData('stub'));
          assert.deepEqual(platform.map((r) => r.type), [NBD_REP.ERR_PLATFORM]);
          assert.match(platform[0]!.data.toString(), /^volume stub could not be opened: the catalog has no leader$/);
        }
        stub.infoFailWith = undefined;
        assert.equal((await option(p, NBD_OPT.INFO, goData('stub'))).at(-1)!.type, NBD_REP.ACK);
        p.close();
      } finally {
        await server.stop();
      }
    });

    it('a list of the volumes the catalog does not answer: NBD_REP_ERR_PLATFORM before the handshake\'s time runs out, not a connection closed without a word', async () => {
      const deadlines: Array<number | undefined> = [];
      const client = {
        listVolumes: async (options: { deadlineMs?: number } = {}) => {
          deadlines.push(options.deadlineMs);
          // Silent until its deadline (the client's own timeout when none is given).
          await new Promise((r) => setTimeout(r, Math.max(0, (options.deadlineMs ?? Date.now() + 10_000) - Date.now())));
          throw new ProtocolError('timeout', 'the volume list did not come before the deadline');
        },
      } as unknown as StrataClient;
      const server = await startNbdServer({ client, port: 0, handshakeTimeoutMs: 2000, logger: captureLogger([]) });
      try {
        const t0 = Date.now();
        const p = await greet(server.address.port);
        const replies = await option(p, NBD_OPT.LIST);
        assert.deepEqual(replies.map((r) => r.type), [NBD_REP.ERR_PLATFORM]);
        assert.match(replies[0]!.data.toString(), /^the volumes could not be listed: the volume list did not come before the deadline$/);
        assert.equal(deadlines.length, 1);
        assert.ok(deadlines[0] !== undefined && deadlines[0] < t0 + 2000, 'the list is asked within the handshake\'s time');
        p.close();
      } finally {
        await server.stop();
      }
    });

    it('a catalog that does not answer during the handshake: INFO, GO and SET_META_CONTEXT are answered NBD_REP_ERR_PLATFORM saying so before the handshake\'s time runs out, not closed without a word', async () => {
      const stub = stubClient();
      const server = await startNbdServer({ client: stub.client, port: 0, handshakeTimeoutMs: 2000, logger: captureLogger([]) });
      try {
        stub.infoSilent = true;
        for (const opt of [NBD_OPT.INFO, NBD_OPT.GO]) {
          const p = await greet(server.address.port);
          // Answered, with a quarter of the handshake's 2 s left (without a deadline of its own the
          // look-up outlasts the handshake, and the connection closes with no reply).
          const replies = await option(p, opt, goData('stub'));
          assert.deepEqual(replies.map((r) => r.type), [NBD_REP.ERR_PLATFORM]);
          assert.match(replies[0]!.data.toString(), /^volume stub could not be opened: the info of volume stub did not come before the deadline$/);
          p.close();
        }
        const p = await greet(server.address.port);
        assert.deepEqual((await option(p, NBD_OPT.STRUCTURED_REPLY)).map((r) => r.type), [NBD_REP.ACK]);
        const set = await option(p, NBD_OPT.SET_META_CONTEXT, metaData('stub', ['base:allocation']));
        assert.deepEqual(set.map((r) => r.type), [NBD_REP.ERR_PLATFORM]);
        assert.match(set[0]!.data.toString(), /^volume stub could not be looked up: the info of volume stub did not come before the deadline$/);
        p.close();
      } finally {
        await server.stop();
      }
    });

    it('a Strata call is made again only while it is answered overloaded: another failure is thrown at once', async () => {
      let calls = 0;
      const sleeps: number[] = [];
      const sleep = async (ms: number): Promise<void> => void sleeps.push(ms);
      const timeout = new ProtocolError('timeout', 'no reply before the deadline');
      await assert.rejects(retryOverloaded(async () => { calls++; throw timeout; }, 1000, sleep), (e: unknown) => e === timeout);
      assert.deepEqual({ calls, sleeps: sleeps.length }, { calls: 1, sleeps: 0 });
      calls = 0;
      assert.equal(await retryOverloaded(async () => { if (++calls < 3) throw new ProtocolError('overloaded', 'queue full'); return 'done'; }, 60_000, sleep), 'done');
      assert.deepEqual({ calls, sleeps: sleeps.length }, { calls: 3, sleeps: 2 });
    });

    it('a block write is made again while its outcome is unknown (timeout) or no leader took it (unavailable), each try with its part of the time left, up to WRITE_TRIES; another failure is thrown at once', async () => {
      let now = 0;
      const deadlines: number[] = [];
      const unknown = new ProtocolError('timeout', 'no reply before the deadline: the write may or may not be committed');
      const timingOut = async (deadlineMs: number): Promise<string> => {
        deadlines.push(deadlineMs);
        now = deadlineMs;
        throw unknown;
      };
      await assert.rejects(writeInTries(timingOut, 9000, { nowMs: () => now }), (e: unknown) => e === unknown);
      // A third of 9 s, half of the 6 s left, then the rest.
      assert.deepEqual(deadlines, [3000, 6000, 9000]);
      deadlines.length = 0;
      now = 0;
      let calls = 0;
      const unknowns: Array<[string, number]> = [];
      assert.equal(await writeInTries(async (d) => (++calls < 2 ? timingOut(d) : 'done'), 9000, { nowMs: () => now, onUnknown: (e, attempt) => void unknowns.push([e.code, attempt]) }), 'done');
      assert.equal(calls, 2);
      assert.deepEqual(unknowns, [['timeout', 1]], 'the try without an answer is reported');
      calls = 0;
      const leaderless = new ProtocolError('unavailable', 'no host answers shard 0 of volume blk');
      // Each try is given its number: the export sends those after the first to every leader.
      const numbers: number[] = [];
      assert.equal(await writeInTries(async (_d, n) => { numbers.push(n); if (++calls < WRITE_TRIES) throw leaderless; return 'done'; }, 9000, { nowMs: () => now }), 'done');
      assert.equal(calls, WRITE_TRIES);
      assert.deepEqual(numbers, Array.from({ length: WRITE_TRIES }, (_, i) => i + 1));
      // Too little time for two tries: one, until the end.
      deadlines.length = 0;
      now = 0;
      await assert.rejects(writeInTries(timingOut, 2 * WRITE_TRY_MS_MIN - 1, { nowMs: () => now }), (e: unknown) => e === unknown);
      assert.deepEqual(deadlines, [2 * WRITE_TRY_MS_MIN - 1]);
      // A failure that is not an unknown outcome: once.
      calls = 0;
      const refused = new ProtocolError('device_failed', 'the device failed');
      await assert.rejects(writeInTries(async () => { calls++; throw refused; }, 9000, { nowMs: () => now }), (e: unknown) => e === refused);
      assert.equal(calls, 1);
    });

    it('a Strata call answered overloaded is made again after a back-off, not answered EIO', async () => {
      const stub = stubClient();
      const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, logger: captureLogger(lines) });
      try {
        const s = await Session.open(server.address.port, 'stub');
        stub.failWith = new ProtocolError('overloaded', 'device queue is full; retry after a back-off');
        // A partial page (read, then written) and a read, both refused until the queue drains.
        const write = s.request(NBD_CMD.WRITE, 100, 1000, { data: Buffer.alloc(1000, 7) });
        const read = s.request(NBD_CMD.READ, 8192, 4096);
        await waitFor('several refused calls', () => stub.calls >= 6);
        stub.failWith = undefined;
        assert.equal((await write).error, 0);
        assert.equal((await read).error, 0);
        assert.deepEqual(lines.filter((l) => l.level === 'warn'), []);
        s.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('a Strata call still answered overloaded after the client\'s timeout is EIO', async () => {
      const stub = stubClient();
      (stub.client as unknown as { timeoutMs: number }).timeoutMs = 300;
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, logger: captureLogger([]) });
      try {
        const s = await Session.open(server.address.port, 'stub');
        stub.failWith = new ProtocolError('overloaded', 'device queue is full; retry after a back-off');
        assert.equal((await s.request(NBD_CMD.WRITE, 0, 4096, { data: Buffer.alloc(4096) })).error, NBD_ERR.EIO);
        // Made again within the client's timeout of 300 ms, not longer: its back-offs (at least
        // 3, 5, 10, 20, 40, 80, then 125 ms) leave room for 8 calls at most, however fast each.
        assert.ok(stub.calls > 1 && stub.calls <= 8, `${stub.calls} calls`);
        s.peer.close();
      } finally {
        await server.stop();
      }
    });

    for (const [bound, options] of [
      ['requestsInFlightMax requests', { requestsInFlightMax: 3 }],
      ['inFlightBytesMax bytes', { inFlightBytesMax: 3 * 4096 }],
    ] as const) {
      it(`reads no more requests while ${bound} are in flight`, async () => {
        const stub = stubClient();
        const open = closeGate(stub);
        const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, ...options });
        try {
          const s = await Session.open(server.address.port, 'stub');
          const replies = Array.from({ length: 10 }, (_, i) => s.request(NBD_CMD.READ, i * 4096, 4096));
          await waitFor('3 calls', () => stub.active === 3);
          await new Promise((r) => setTimeout(r, 100));
          assert.equal(stub.calls, 3, 'no fourth request taken');
          open();
          for (const r of await Promise.all(replies)) assert.equal(r.error, 0);
          assert.equal(stub.calls, 10);
          s.peer.close();
        } finally {
          await server.stop();
        }
      });
    }

    it('a WRITE\'s payload is counted against inFlightBytesMax before it is read: the bytes held never pass the bound', async () => {
      const stub = stubClient();
      const open = closeGate(stub);
      // Room for one write of 8 KiB, not two.
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, inFlightBytesMax: 3 * 4096, logger: captureLogger([]) });
      try {
        const s = await Session.open(server.address.port, 'stub');
        const replies = [0, 2].map((page) => s.request(NBD_CMD.WRITE, page * 4096, 2 * 4096, { data: Buffer.alloc(2 * 4096, page + 1) }));
        await waitFor('the first write under way', () => stub.active === 1);
        // Time for a server that took the second write too to make its call: that is what is
        // checked (a server that does not take it never makes it before the first ends).
        await new Promise((r) => setTimeout(r, 100));
        open();
        for (const r of await Promise.all(replies)) assert.equal(r.error, 0);
        assert.equal(stub.calls, 2);
        assert.equal(stub.activeMax, 1, 'the second write was taken only once the first had ended');
        s.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('stop waits at most stopTimeoutMs for requests that do not finish, then closes', async () => {
      const stub = stubClient();
      stub.gate = new Promise(() => undefined);
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, stopTimeoutMs: 200 });
      const s = await Session.open(server.address.port, 'stub');
      void s.request(NBD_CMD.READ, 0, 4096);
      await waitFor('1 call', () => stub.active === 1);
      // The request never ends: the stop ends by its wait of stopTimeoutMs, the one timer of 200 ms set meanwhile.
      const { delays } = await timerDelaysDuring(async () => {
        await server.stop();
        await s.peer.closed;
      });
      assert.ok(delays.includes(200), `timers set: ${delays.join(', ')}`);
      assert.equal(stub.active, 1, 'the call still runs: the stop did not wait for it');
    });

    it('a stop ends though a client that reads no replies sent a write over the limit (its EINVAL is not awaited by the request loop)', async () => {
      const stub = stubClient(2 * BLOCK_BYTES_MAX / 4096);
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, stopTimeoutMs: 200 });
      const s = await Session.open(server.address.port, 'stub');
      s.peer.socket.pause();
      const head = (type: number, cookie: number, length: number): Buffer => {
        const b = Buffer.alloc(28);
        b.writeUInt32BE(0x25609513, 0);
        b.writeUInt16BE(type, 6);
        b.writeBigUInt64BE(BigInt(cookie), 8);
        b.writeUInt32BE(length, 24);
        return b;
      };
      // A read whose reply fills the socket's buffers (nobody reads it), then a write over the limit.
      s.peer.socket.write(head(NBD_CMD.READ, 1, BLOCK_BYTES_MAX));
      await waitFor('the read answered', () => stub.calls > 0);
      s.peer.socket.write(Buffer.concat([head(NBD_CMD.WRITE, 2, BLOCK_BYTES_MAX + 1), Buffer.alloc(BLOCK_BYTES_MAX + 1)]));
      await new Promise((r) => setTimeout(r, 500));
      const stopped = server.stop().then(() => 'stopped');
      const outcome = await Promise.race([stopped, new Promise((r) => setTimeout(() => r('still stopping after 10 s'), 10_000))]);
      s.peer.close();
      assert.equal(outcome, 'stopped');
    });

    it('a client that stops reading its replies is closed after replyTimeoutMs: its slot is free again for another client', async () => {
      const stub = stubClient(2 * BLOCK_BYTES_MAX / 4096);
      const logs: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, connectionsMax: 1, replyTimeoutMs: 500, stopTimeoutMs: 200, logger: captureLogger(logs) });
      try {
        const s = await Session.open(server.address.port, 'stub');
        s.peer.socket.pause();
        const head = Buffer.alloc(28);
        head.writeUInt32BE(0x25609513, 0);
        head.writeUInt16BE(NBD_CMD.READ, 6);
        head.writeBigUInt64BE(1n, 8);
        head.writeUInt32BE(BLOCK_BYTES_MAX, 24);
        // Replies of 32 MiB nobody reads: the socket's buffers fill, a reply's write never ends.
        for (let i = 0; i < 4; i++) s.peer.socket.write(head);
        await waitFor('the connection closed', () => server.connectionCount() === 0, 20_000);
        assert.ok(logs.some((l) => l.msg === 'nbd client did not read a reply in time: closing'), JSON.stringify(logs));
        s.peer.close();
        // The slot is free: another client is served.
        const next = await Session.open(server.address.port, 'stub');
        assert.equal((await next.request(NBD_CMD.READ, 0, 4096)).error, 0);
        next.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('a client that closes with writes queued on a page and connects again cannot pile requests up past connectionsMax × requestsInFlightMax; the queued writes of a closed connection are not made', async () => {
      const stub = stubClient();
      // Each write call takes 300 ms: the writes to one page queue behind each other on its lock.
      Object.defineProperty(stub, 'gate', { get: () => new Promise((r) => setTimeout(r, 300)) });
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, connectionsMax: 1, requestsInFlightMax: 4, stopTimeoutMs: 200, logger: captureLogger([]) });
      try {
        const head = (cookie: number): Buffer => {
          const b = Buffer.alloc(28);
          b.writeUInt32BE(0x25609513, 0);
          b.writeUInt16BE(NBD_CMD.WRITE, 6);
          b.writeBigUInt64BE(BigInt(cookie), 8);
          b.writeBigUInt64BE(100n, 16);
          b.writeUInt32BE(1000, 24);
          return b;
        };
        let sent = 0;
        let heldMax = 0;
        for (let round = 0; round < 6; round++) {
          const s = await Session.open(server.address.port, 'stub');
          for (let i = 0; i < 3; i++) {
            s.peer.socket.write(Buffer.concat([head(i + 1), Buffer.alloc(1000, round)]));
            sent++;
          }
          await new Promise((r) => setTimeout(r, 20));
          s.peer.close();
          await waitFor('the connection gone, its requests ended', () => server.connectionCount() === 0, 10_000);
          heldMax = Math.max(heldMax, stub.active);
        }
        assert.equal(heldMax, 0, 'nothing of a closed connection left running once its slot is free');
        // Each write reads its edge page and writes it: calls of writes made. Of 3 queued per
        // connection, the first was under way when its client closed; the others were not made.
        assert.ok(stub.calls <= 6 * 2, `${stub.calls} calls for ${sent} writes sent`);
      } finally {
        await server.stop();
      }
    });

    it('a client that resets its connection with requests queued: those not yet taken are never made, and its slot is free for the next client', async () => {
      const stub = stubClient();
      const open = closeGate(stub);
      const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, connectionsMax: 1, requestsInFlightMax: 2, stopTimeoutMs: 200, logger: captureLogger(lines) });
      try {
        const s = await Session.open(server.address.port, 'stub');
        // 50 reads in one segment: 2 taken (their calls wait), 48 left in the server's buffer.
        s.peer.write(Buffer.concat(Array.from({ length: 50 }, (_, i) => requestHead(NBD_CMD.READ, i + 1, (i % 16) * 4096, 4096))));
        await waitFor('2 reads taken', () => stub.active === 2);
        s.peer.socket.resetAndDestroy();
        await waitFor('the reset seen by the server', () => lines.some((l) => l.msg === 'nbd socket error'));
        // From here on a Strata call never ends: a request of the reset client taken after this
        // would hold its slot for good.
        stub.gate = new Promise(() => undefined);
        open();
        await waitFor('the reset connection gone, its requests ended', () => server.connectionCount() === 0);
        assert.equal(stub.calls, 2, 'only the reads taken before the reset were made');
        stub.gate = undefined;
        // The one slot is free: another client is served.
        const next = await Session.open(server.address.port, 'stub');
        assert.equal((await next.request(NBD_CMD.READ, 0, 4096)).error, 0);
        next.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('a reset connection takes no more requests from its buffer: a write queued there never waits for its pages behind another connection\'s', async () => {
      const stub = stubClient();
      const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, requestsInFlightMax: 1, stopTimeoutMs: 200, logger: captureLogger(lines) });
      try {
        // Another client's write holds page 0 for good (its Strata call never ends).
        stub.gate = new Promise(() => undefined);
        const holder = await Session.open(server.address.port, 'stub');
        void holder.request(NBD_CMD.WRITE, 0, 4096, { data: Buffer.alloc(4096) });
        await waitFor('the holder\'s write under way', () => stub.active === 1);
        const open = closeGate(stub);
        const s = await Session.open(server.address.port, 'stub');
        // A read taken (its call waits), then a write to page 0 left in the server's buffer.
        s.peer.write(requestHead(NBD_CMD.READ, 1, 4096, 4096), requestHead(NBD_CMD.WRITE, 2, 0, 4096), Buffer.alloc(4096));
        await waitFor('the read taken', () => stub.active === 2);
        s.peer.socket.resetAndDestroy();
        await waitFor('the reset seen by the server', () => lines.some((l) => l.msg === 'nbd socket error'));
        open();
        // Taken after the reset, the write would wait behind the holder's for ever, and the reset
        // connection would keep its slot.
        await waitFor('the reset connection gone', () => server.connectionCount() === 1);
        holder.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('a read over several Strata calls, and a write of zeros with NO_HOLE over several, make no call after their client is gone', async () => {
      // 48 MiB of 4 KiB pages: a READ of 32 MiB is 2 calls of CALL_PAGES_MAX pages, a WRITE_ZEROES
      // with NO_HOLE of the whole export 3.
      const stub = stubClient(3 * 4096);
      const open = closeGate(stub);
      const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, stopTimeoutMs: 200, logger: captureLogger(lines) });
      try {
        const s = await Session.open(server.address.port, 'stub');
        s.peer.write(requestHead(NBD_CMD.READ, 1, 0, BLOCK_BYTES_MAX), requestHead(NBD_CMD.WRITE_ZEROES, 2, 0, 3 * 4096 * 4096, NBD_CMD_FLAG.NO_HOLE));
        await waitFor('the first call of each made', () => stub.active === 2);
        s.peer.socket.resetAndDestroy();
        await waitFor('the reset seen by the server', () => lines.some((l) => l.msg === 'nbd socket error'));
        open();
        await waitFor('the reset connection gone, its requests ended', () => server.connectionCount() === 0);
        assert.equal(stub.calls, 2, 'no call of either made after the reset');
        assert.deepEqual(lines.filter((l) => l.level === 'warn'), [], 'a request of a client gone is not a failure');
      } finally {
        await server.stop();
      }
    });

    it('a client that shuts its side down (FIN) after sending requests still gets every answer, those still in the server\'s buffer among them', async () => {
      const stub = stubClient();
      const open = closeGate(stub);
      const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, requestsInFlightMax: 2, logger: captureLogger(lines) });
      try {
        const s = await Session.open(server.address.port, 'stub');
        // A request the server drops is answered -1 when the connection closes, not waited for.
        s.failRequestsOnError = true;
        const replies = Array.from({ length: 6 }, (_, i) => s.request(NBD_CMD.READ, i * 4096, 4096));
        await waitFor('2 reads taken', () => stub.active === 2);
        s.peer.socket.end();
        await waitFor('the end of the client\'s side seen by the server', () => lines.some((l) => l.msg === 'nbd client ended its side of the connection'));
        open();
        for (const r of await Promise.all(replies)) assert.equal(r.error, 0);
        assert.equal(stub.calls, 6);
        await s.peer.closed;
      } finally {
        await server.stop();
      }
    });

    it('refuses connections over connectionsMax (NBD_REP_ERR_SHUTDOWN; NBD_OPT_ABORT is acknowledged) and serves again once one closes', async () => {
      const stub = stubClient();
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, connectionsMax: 2, logger: captureLogger([]) });
      try {
        const a = await Session.open(server.address.port, 'stub');
        const b = await greet(server.address.port);
        const refused = await greet(server.address.port);
        const r = await option(refused, NBD_OPT.GO, goData('stub'));
        assert.deepEqual(r.map((x) => x.type), [NBD_REP.ERR_SHUTDOWN]);
        assert.match(r[0]!.data.toString(), /at most 2 connections/);
        await refused.expectClosed();
        // NBD_OPT_ABORT from a refused client is acknowledged, then the connection closed.
        const aborting = await greet(server.address.port);
        assert.deepEqual((await option(aborting, NBD_OPT.ABORT)).map((x) => x.type), [NBD_REP.ACK]);
        await aborting.expectClosed();
        a.peer.close();
        b.close();
        await waitFor('connections closed', () => server.connectionCount() === 0);
        const again = await Session.open(server.address.port, 'stub');
        again.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('refuses to start with a bound or a wait that is not a positive integer, naming it', async () => {
      const stub = stubClient();
      const bad: Array<[string, number]> = [['connectionsMax', 0], ['requestsInFlightMax', 1.5], ['inFlightBytesMax', -1], ['handshakeTimeoutMs', Number.NaN], ['stopTimeoutMs', 0]];
      for (const [name, value] of bad) {
        const started = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, [name]: value }).then(
          (server) => server,
          (e: unknown) => e,
        );
        if (!(started instanceof Error)) await (started as NbdServer).stop();
        assert.ok(started instanceof RangeError, `${name}: ${String(value)} refused`);
        assert.equal(started.message, `${name}: expected a positive integer, got ${String(value)}`);
      }
    });

    it('past connectionsMax connections refused and still open, drops the next at once, without a greeting', async () => {
      const stub = stubClient();
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, connectionsMax: 1, logger: captureLogger([]) });
      try {
        const served = await Session.open(server.address.port, 'stub');
        const refused = await greet(server.address.port);
        const dropped = await Peer.connect(server.address.port);
        await dropped.expectClosed();
        refused.close();
        served.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('closes a connection whose handshake does not complete by the deadline', async () => {
      const stub = stubClient();
      const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, handshakeTimeoutMs: 200, logger: captureLogger(lines) });
      try {
        // Closed by the handshake's timer, of handshakeTimeoutMs.
        const { delays } = await timerDelaysDuring(async () => {
          const p = await greet(server.address.port);
          await p.closed;
        });
        assert.ok(delays.includes(200), `timers set: ${delays.join(', ')}`);
        assert.ok(lines.some((l) => l.msg === 'nbd handshake not completed in time: closing'), JSON.stringify(lines));
        const s = await Session.open(server.address.port, 'stub');
        await new Promise((r) => setTimeout(r, 400));
        assert.equal((await s.request(NBD_CMD.READ, 0, 4096)).error, 0, 'a connection in transmission is not closed by the handshake deadline');
        s.peer.close();
      } finally {
        await server.stop();
      }
    });

    it('a write of zeros with NO_HOLE over many calls is bounded by a stop: past stopTimeoutMs it makes no further call', async () => {
      const stub = stubClient(3 * 4096);
      const open = closeGate(stub);
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0, stopTimeoutMs: 200, logger: captureLogger([]) });
      const s = await Session.open(server.address.port, 'stub');
      void s.request(NBD_CMD.WRITE_ZEROES, 0, 3 * 4096 * 4096, { flags: NBD_CMD_FLAG.NO_HOLE });
      await waitFor('its first call under way', () => stub.active === 1);
      await server.stop();
      open();
      await waitFor('the connection gone, its request ended', () => server.connectionCount() === 0);
      assert.equal(stub.calls, 1, 'none of its 2 other calls made');
      s.peer.close();
    });

    it('stop answers the requests in flight, closes the connections and stops listening', async () => {
      const stub = stubClient();
      const open = closeGate(stub);
      const server = await startNbdServer({ client: stub.client, volume: 'stub', port: 0 });
      const s = await Session.open(server.address.port, 'stub');
      const pending = [s.request(NBD_CMD.READ, 0, 4096), s.request(NBD_CMD.WRITE, 4096, 10, { data: Buffer.alloc(10) })];
      await waitFor('2 calls', () => stub.active === 2);
      const stopped = server.stop();
      setTimeout(open, 100);
      for (const r of await Promise.all(pending)) assert.equal(r.error, 0);
      await stopped;
      await s.peer.closed;
      await assert.rejects(Peer.connect(server.address.port), /ECONNREFUSED/);
    });
  });

  describe('strata nbd', () => {
    it('serves a volume until SIGINT, printing its URI, then exits 0', async () => {
      const bin = path.join(__dirname, '..', '..', '..', 'bin', 'strata');
      const child = spawn(process.execPath, [bin, 'nbd', 'v', '--nats', c.natsUrl, '--cluster', c.cluster, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      try {
        await waitFor('the URI printed', () => /nbd:\/\/127\.0\.0\.1:\d+\/v\n/.test(out), 15_000);
        const served = /nbd:\/\/127\.0\.0\.1:(\d+)\/v/.exec(out)![0];
        assert.match(out, /qemu-img info/);
        assert.match(out, /nbdcopy/);
        assert.match(out, /nbd-client/);
        const r = await tool('nbdinfo', ['--size', served]);
        assert.equal(r.stdout.trim(), String(1024 * 4096), r.stderr);
        child.kill('SIGINT');
        assert.equal(await exited, 0, err);
      } finally {
        child.kill('SIGKILL');
      }
    });
  });
});

describe('cluster/nbd: a volume of 3 replicas', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  let server: NbdServer;

  before(async () => {
    requireTools();
    c = await startCluster({ nodes: 3, hosts: 1 });
    await c.client.createVolume({ name: 'r3', pageCount: 256, shards: 2, stripePages: 8, replicas: 3 });
    server = await startNbdServer({ client: c.client, volume: 'r3', port: 0 });
  });

  after(async () => {
    await server?.stop();
    await c?.stop();
  });

  it('qemu-io writes, an unaligned one among them, are answered once on a majority and read back', async () => {
    const uri = nbdUri('127.0.0.1', server.address.port, 'r3');
    await qemuIo(uri, ['write -P 0x3c 0 256k', 'write -P 0x11 1000 10', 'flush', 'read -P 0x3c 0 1000', 'read -P 0x11 1000 10', 'read -P 0x3c 1010 255k']);
    const page = await c.client.volume('r3').read(0);
    assert.equal(page[999], 0x3c);
    assert.equal(page[1000], 0x11);
    assert.equal(page[1010], 0x3c);
  });
});

describe('cluster/nbd: the node leading a shard killed with writes in flight (strata dev)', function () {
  this.timeout(120_000);
  let c: DevCluster | undefined;
  let server: NbdServer | undefined;
  let client: StrataClient | undefined;

  after(async () => {
    await server?.stop();
    await client?.close().catch(() => undefined);
    await c?.client.close().catch(() => undefined);
    await c?.stop();
  });

  it('the writes it took and never answered are made again at the next leader within the timeout: no EIO, and every byte reads back', async () => {
    c = await startDevCluster({ nodes: 3, hosts: 1 });
    await c.client.createVolume({ name: 'blk', pageCount: 64, shards: 1, replicas: 3 });
    const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
    // The export's client counts the requests it sends to the shard.
    const nc = await natsConnect({ servers: c.natsUrl });
    const nats = new NatsTransport(nc);
    let shardRequests = 0;
    const counting: ClientTransport = {
      maxPayloadBytes: nats.maxPayloadBytes,
      request: (subject, data, options) => {
        if (subject.includes('.shard.')) shardRequests++;
        return nats.request(subject, data, options);
      },
      close: () => nats.close(),
    };
    // 20 s: tries of 6.7 s, time for the next leader's election on a loaded machine.
    client = createClient(counting, { cluster: 'dev', timeoutMs: 20_000 });
    server = await startNbdServer({ client, volume: 'blk', port: 0, logger: captureLogger(lines) });
    const s = await Session.open(server.address.port, 'blk');
    const block = (i: number): Buffer => Buffer.alloc(4096, i + 1);
    assert.equal((await s.request(NBD_CMD.WRITE, 0, 4096, { data: block(0) })).error, 0);
    // Shard 0 led by n3. It is stopped (SIGSTOP) before the requests are sent, so that they all
    // reach it (the shard's only subscriber until another replica is elected, which takes at
    // least an election timeout), then killed once the server has them: their answers never
    // come, and from then on the shard's subject reaches only the next leader.
    await waitFor('n3 leads shard 0', async () => {
      await c!.client.handOver('blk', 0, { to: 'n3' }).catch(() => undefined);
      const status = await c!.client.status().catch(() => undefined);
      const shards = status?.volumes?.find((v) => v.name === 'blk')?.shards ?? [];
      return shards.some((sh) => sh.role === 'leader' && sh.leader === 'n3');
    }, 30_000);
    const n3 = c.nodes.find((n) => n.id === 'n3')!.pid;
    process.kill(n3, 'SIGSTOP');
    const sentBefore = shardRequests;
    const writes = Promise.all(Array.from({ length: 8 }, (_, i) => s.request(NBD_CMD.WRITE, (i + 1) * 4096, 4096, { data: block(i + 1) })));
    const zeros = s.request(NBD_CMD.WRITE_ZEROES, 9 * 4096, 4096);
    // A read too: Strata's client sends it again itself.
    const read = s.request(NBD_CMD.READ, 0, 4096);
    await waitFor('the 10 requests sent to the shard', () => shardRequests >= sentBefore + 10, 30_000);
    await nc.flush(); // the server has them, and gave them to n3
    process.kill(n3, 'SIGKILL');
    assert.deepEqual((await writes).map((w) => w.error), new Array(8).fill(0), `every write answered without an error: ${JSON.stringify(lines)}`);
    assert.equal((await zeros).error, 0, 'a write of zeros too');
    const early = await read;
    assert.equal(early.error, 0, `the read sent to the killed leader: ${JSON.stringify(lines)}`);
    assert.ok(early.data.equals(block(0)));
    // The writes were sent again, after a try without an answer: by the client itself (its next
    // try, with the write's id, to every leader of the shard), within the export's first try.
    assert.ok(shardRequests >= sentBefore + 10 + 9, `${shardRequests - sentBefore} requests sent to the shard: every write and the zeros sent again`);
    for (let i = 0; i < 10; i++) {
      const r = await s.request(NBD_CMD.READ, i * 4096, 4096);
      assert.equal(r.error, 0);
      assert.ok(r.data.equals(i < 9 ? block(i) : Buffer.alloc(4096)), `block ${i} reads back`);
    }
    s.peer.close();
  });
});
