import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { InspectError, compareReplicas, inspect, inspectText, pageRanges } from '../../cluster/inspect';
import { crc32c } from '../../storage-engine/crc32c';
import { SegmentLog } from '../../storage-engine/log';
import { IMAGE_PAGE_COUNT_MAX, imageFileName } from '../../storage-engine/image';
import { encodePageWrite } from '../../storage-engine/page-write';
import { RealDisk } from '../../storage-engine/real-disk';
import { META_PAYLOAD_BYTES_MAX_DEFAULT, encodeMeta } from '../../storage-engine/metadata';
import { NODE_META, nodeMetaStore } from '../../cluster/data-dir-layout';
import { RecordKind } from '../../storage-engine/record';
import { encodeConfig } from '../../actors/replica';
import { runCli } from '../support/cli';
import { waitFor } from '../support/wait';
import { compareEveryShard } from '../support/replicas';

/** Every file under `dir`: size, mtime and content hash, by relative path. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        out.set(path.relative(dir, p) + '/', 'dir');
        walk(p);
      } else {
        const st = fs.statSync(p);
        out.set(path.relative(dir, p), `${st.size} ${st.mtimeMs} ${crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`);
      }
    }
  };
  walk(dir);
  return out;
}

function page(fill: number): Uint8Array {
  const p = new Uint8Array(4096);
  for (let i = 0; i < p.length; i++) p[i] = (fill + i * 7) & 0xff;
  return p;
}

/** A copy of the data directory `from` that a test may damage. */
function copyDir(from: string): string {
  const to = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-inspect-copy-'));
  fs.cpSync(from, to, { recursive: true });
  return to;
}

function lastSegment(replicaDir: string): string {
  const names = fs.readdirSync(path.join(replicaDir, 'log')).filter((n) => n.endsWith('.log')).sort();
  return path.join(replicaDir, 'log', names[names.length - 1]!);
}

/** An InspectError of `code` whose message matches `message`. */
function inspectError(code: InspectError['code'], message: RegExp): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof InspectError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  };
}

describe('strata inspect (a data directory read offline)', function () {
  this.timeout(60_000);
  let root: string;
  let c: InProcessCluster | undefined;
  let dataDir: string;
  let volumeId: string;
  /** LSN of each write to shard 0, and what it wrote on page 3. */
  const writes: Array<{ lsn: number; fill: number }> = [];
  /** LSN of the record that made pages 301..302 zeros (shard 1). */
  let zeroLsn: number;
  const copies: string[] = [];

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-inspect-'));
    // Images every 8 records: the replica reads from an image and the log after it.
    c = await startCluster({ nodes: 1, dataDir: root, node: { checkpointEveryRecords: 8 } });
    const info = await c.client.createVolume({ name: 'db', pageCount: 512, shards: 2, stripePages: 256, replicas: 1 });
    volumeId = info.id;
    const vol = c.client.volume('db');
    for (let k = 1; k <= 20; k++) {
      const r = await vol.writePages([{ page: 3, data: page(k) }, { page: 4, data: page(100 + k) }]);
      writes.push({ lsn: r.lsns.find((x) => x.shard === 0)!.lsn, fill: k });
    }
    await vol.write(300, page(200)); // shard 1
    zeroLsn = (await vol.zeroPages(301, 2)).lsns.find((x) => x.shard === 1)!.lsn;
    dataDir = c.dataDirs[0]!;
    await c.stopNode(0);
  });

  after(async () => {
    await c?.stop();
    for (const d of [root, ...copies]) fs.rmSync(d, { recursive: true, force: true });
  });

  /** A copy of the node's data directory whose shard 0 log has the records `make` gives (of its last term) appended. */
  function copyWithRecords(make: (term: number) => Array<{ term: number; kind: number; payload: Uint8Array }>): { copy: string; first: number; term: number } {
    const copy = copyDir(dataDir);
    copies.push(copy);
    const disk = new RealDisk(path.join(copy, 'dev0', 'shards', `${volumeId}.0`));
    const log = SegmentLog.open(disk, { dir: 'log' });
    const first = log.lastLsn + 1;
    const term = log.lastTerm;
    log.write(make(term));
    log.sync();
    log.close();
    disk.closeAll();
    return { copy, first, term };
  }

  it('lists every replica of the node, as it would open, and changes nothing', async () => {
    const before = snapshot(dataDir);
    const r = await runCli(['inspect', dataDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^node n1 of cluster test, /);
    assert.doesNotMatch(r.stdout, /directory: /, 'a node\'s directory, not named a replica\'s or a device\'s');
    assert.match(r.stdout, new RegExp(`${volumeId}/0 +db +dev0 .* ok\\n`));
    assert.match(r.stdout, new RegExp(`${volumeId}/1 +db +dev0 .* ok\\n`));
    const report = inspect(dataDir);
    assert.equal(report.kind, 'node');
    assert.deepEqual(report.node, { nodeId: 'n1', cluster: 'test', hosts: report.node!.hosts });
    const s0 = report.replicas.find((x) => x.volumeId === volumeId && x.shard === 0)!;
    assert.equal(s0.state, 'ok');
    assert.equal(s0.pageSize, 4096);
    assert.equal(s0.pageCount, 512);
    assert.deepEqual(s0.members, ['n1']);
    assert.equal(s0.votedFor, 'n1');
    assert.ok(s0.term! >= 1);
    assert.equal(s0.log!.lastLsn, writes[writes.length - 1]!.lsn, 'the log ends at the last write');
    assert.ok(s0.imageLsn! > 0, 'a checkpoint image was written');
    assert.ok(s0.images.length > 0 && s0.images.every((i) => i.damage === undefined));
    assert.deepEqual(s0.damage, []);
    assert.deepEqual(snapshot(dataDir), before, 'nothing under the data directory changed');
  });

  it('reads a device directory, and one replica’s directory alone', async () => {
    const device = inspect(path.join(dataDir, 'dev0'));
    assert.equal(device.kind, 'device');
    assert.deepEqual(device.replicas.map((x) => `${x.volumeId}/${x.shard}`).sort(), [`${volumeId}/0`, `${volumeId}/1`]);
    const dir = path.join(dataDir, 'dev0', 'shards', `${volumeId}.0`);
    // In its node's data directory: named from the node's record.
    const inNode = inspect(dir).replicas[0]!;
    assert.deepEqual([inNode.volumeName, inNode.pageCount, inNode.device], ['db', 512, 'dev0']);
    // Alone (a copy of the directory), with nothing but its own files.
    const loneRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-inspect-lone-'));
    copies.push(loneRoot);
    const lone = path.join(loneRoot, `${volumeId}.0`);
    fs.cpSync(dir, lone, { recursive: true });
    const alone = inspect(lone, { page: { page: 3 } });
    assert.equal(alone.kind, 'replica');
    const rep = alone.replicas[0]!;
    assert.deepEqual([rep.volumeId, rep.shard, rep.state, rep.volumeName], [volumeId, 0, 'ok', undefined]);
    assert.equal(rep.pageSize, 4096, 'the page size, from its images');
    assert.deepEqual(alone.page!.data, page(writes[writes.length - 1]!.fill));
    // Without its node's record there is no volume geometry: a page past what a replica can hold is refused by the store.
    assert.throws(() => inspect(lone, { page: { page: IMAGE_PAGE_COUNT_MAX } }), inspectError('out_of_range', new RegExp(`^--page ${IMAGE_PAGE_COUNT_MAX}: `)));
    const r = await runCli(['inspect', lone]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^replica directory: ${lone}\n`));
  });

  it('lists a replica’s log records', async () => {
    const r = await runCli(['inspect', dataDir, '--shard', 'db/0', '--records']);
    assert.equal(r.code, 0, r.stderr);
    const report = inspect(dataDir, { shard: `${volumeId}/0`, records: {} });
    const records = report.records!;
    const log = report.replicas[0]!.log!;
    assert.equal(records.length, log.lastLsn - log.firstLsn + 1);
    for (const w of writes.filter((x) => x.lsn >= log.firstLsn)) {
      const line = records.find((x) => x.lsn === w.lsn)!;
      assert.equal(line.kind, 'page-write');
      assert.deepEqual(line.pages, [3, 4]);
      assert.match(line.writeId ?? '', /^[0-9a-f]{32}$/, 'the write id its tries shared');
      assert.match(r.stdout, new RegExp(`\\n${w.lsn} +\\d+ +page-write +\\d+ +2 page\\(s\\): 3-4 \\(write id ${line.writeId}\\)\\n`));
    }
    // A range made zeros carries its write id too.
    const z = await runCli(['inspect', dataDir, '--shard', 'db/1', '--records']);
    assert.equal(z.code, 0, z.stderr);
    const zero = inspect(dataDir, { shard: `${volumeId}/1`, records: {} }).records!.find((x) => x.lsn === zeroLsn)!;
    assert.equal(zero.kind, 'page-zero');
    assert.deepEqual(zero.zeros, { first: 301, count: 2 });
    assert.match(zero.writeId ?? '', /^[0-9a-f]{32}$/, 'the write id of the range made zeros');
    assert.match(z.stdout, new RegExp(`\\n${zeroLsn} +\\d+ +page-zero +\\d+ +the shard's pages of 301\\.\\.302 made zeros \\(write id ${zero.writeId}\\)\\n`));
    // A range, and a limit: the rest is named.
    const last = writes[writes.length - 1]!.lsn;
    const some = inspect(dataDir, { shard: 'db/0', records: { fromLsn: last - 3, limit: 2 } });
    assert.deepEqual(some.records!.map((x) => x.lsn), [last - 3, last - 2]);
    assert.equal(some.recordsNext, last - 1);
  });

  it('reads a page as of an LSN, as the replica would serve it', async () => {
    const out = path.join(root, 'page.bin');
    for (const w of [writes[writes.length - 1]!, writes[writes.length - 3]!]) {
      const r = await runCli(['inspect', dataDir, '--shard', 'db/0', '--page', '3', '--lsn', String(w.lsn), '--out', out]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(new Uint8Array(fs.readFileSync(out)), page(w.fill));
      assert.match(r.stdout, new RegExp(`page 3 as of LSN ${w.lsn}: written by LSN ${w.lsn} `));
    }
    // Without --lsn: the log's end. A page never written: zeros.
    const latest = inspect(dataDir, { shard: 'db/0', page: { page: 3 } }).page!;
    assert.deepEqual(latest.data, page(writes[writes.length - 1]!.fill));
    const never = inspect(dataDir, { shard: 'db/0', page: { page: 9 } }).page!;
    assert.deepEqual(never.source, { kind: 'zeros' });
    assert.ok(never.data.every((b) => b === 0));
    // As JSON, the bytes in hex.
    // Pages by the volume's numbers: page 300 is on shard 1.
    const j = await runCli(['inspect', dataDir, '--shard', 'db/1', '--page', '300', '--json']);
    assert.equal(j.code, 0, j.stderr);
    const parsed = JSON.parse(j.stdout) as { page: { dataHex: string; source: { kind: string } } };
    assert.equal(parsed.page.dataHex, Buffer.from(page(200)).toString('hex'));
    assert.equal(parsed.page.source.kind, 'record');
  });

  it('refuses what it cannot answer, each with its reason', async () => {
    const oldest = inspect(dataDir, { shard: 'db/0' }).replicas[0]!.oldestReadableLsn!;
    const end = writes[writes.length - 1]!.lsn;
    const cases: Array<[string[], number, RegExp]> = [
      [['inspect', path.join(root, 'nope')], 1, /^strata: not_found: .*nope: ENOENT/],
      [['inspect', os.tmpdir() + '/'], 1, /^strata: bad_request: .* is not a Strata data directory/],
      [['inspect', path.join(dataDir, NODE_META)], 1, /^strata: bad_request: .*\/node is not a directory\n$/],
      [['inspect', dataDir, '--records'], 1, /^strata: bad_request: .* holds \d+ replicas: name one with --shard/],
      [['inspect', dataDir, '--shard', 'db/7'], 1, /^strata: not_found: .* no replica of shard 7 of volume db/],
      [['inspect', dataDir, '--shard', 'db'], 1, /^strata: bad_request: --shard: expected VOLUME\/SHARD/],
      [['inspect', dataDir, '--shard', 'db/0', '--page', '3', '--lsn', String(end + 1)], 1, /^strata: future_lsn: --lsn \d+: the log ends at LSN/],
      [['inspect', dataDir, '--shard', 'db/0', '--lsn', '3'], 2, /^strata: usage: inspect: --lsn goes with --page or --catalog/],
      [['inspect', dataDir, '--out', 'x'], 2, /^strata: usage: inspect: --out goes with --page/],
      [['inspect', path.join(dataDir, 'dev0'), '--catalog'], 1, /^strata: not_found: .*dev0 holds no catalog: no replica of the catalog shard/],
      [['inspect', dataDir, '--catalog', '--shard', 'db/0'], 1, /^strata: bad_request: --catalog reads the catalog shard: --shard, --records and --page go without it/],
      [['inspect', dataDir, '--limit', '3'], 2, /^strata: usage: inspect: --from, --to and --limit go with --records/],
      [['inspect', dataDir, '--shard', 'db/0', '--records', '--limit', '0'], 1, /^strata: bad_request: --limit: 0 is out of range/],
      [['inspect', dataDir, '--shard', 'db/0', '--records', '--from', String(end + 1)], 1, /^strata: out_of_range: --from \d+: the log ends at LSN/],
      [['inspect', dataDir, '--shard', 'db/0', '--records', '--to', String(end + 1)], 1, new RegExp(`^strata: out_of_range: --to ${end + 1}: the log ends at LSN ${end}\n`)],
      [['inspect', dataDir, '--shard', 'db/0', '--records', '--from', String(end), '--to', String(end - 1)], 1, new RegExp(`^strata: bad_request: --from ${end} is above --to ${end - 1}\n`)],
      [['inspect', dataDir, '--shard', 'db/0', '--page', '512'], 1, /^strata: out_of_range: --page 512: volume db has 512 pages \(0\.\.511\)/],
      [['inspect', dataDir, '--shard', 'db/0', '--page', '300'], 1, /^strata: bad_request: --page 300: page 300 of volume db is on shard 1, not on shard 0 \(--shard db\/1\)/],
    ];
    if (oldest > 1) cases.push([['inspect', dataDir, '--shard', 'db/0', '--page', '3', '--lsn', '1'], 1, /^strata: trimmed: --lsn 1: the oldest LSN readable is/]);
    for (const [argv, code, err] of cases) {
      const r = await runCli(argv);
      assert.equal(r.code, code, `${argv.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, err, argv.join(' '));
    }
  });

  it('reports a damaged record with its LSNs, exits 1, and does not repair it', async () => {
    const copy = copyDir(dataDir);
    copies.push(copy);
    const replica = path.join(copy, 'dev0', 'shards', `${volumeId}.0`);
    const seg = lastSegment(replica);
    const bytes = fs.readFileSync(seg);
    // The term field of a record after the newest image: its checksum fails, and the records
    // after it are evidence of damage (not a torn tail). The replica opens, read-only, as a
    // node opens a sole copy.
    const damaged = writes[writes.length - 3]!.lsn;
    const at = recordOffsets(bytes).get(damaged)!;
    bytes[at + 16] = bytes[at + 16]! ^ 0xff;
    fs.writeFileSync(seg, bytes);
    const before = snapshot(copy);
    const r = await runCli(['inspect', copy]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, new RegExp(`${volumeId}/0 .* damaged\\n`));
    assert.match(r.stdout, new RegExp(`${volumeId}/0: damage: .*seg-[0-9a-f]{16}\\.log.*: record checksum mismatch`));
    // The valid records after the damaged one are not used either: said, not left to be guessed.
    assert.match(r.stdout, new RegExp(`${volumeId}/0: the log is used up to LSN ${damaged - 1}: no record after it is, valid or not, until the replica is repaired`));
    assert.match(r.stderr, new RegExp(`^strata: corruption: 1 of 2 replica\\(s\\) damaged or not opening: ${volumeId}/0\\n$`));
    const rep = inspect(copy, { shard: 'db/0' }).replicas[0]!;
    assert.equal(rep.state, 'damaged');
    assert.equal(rep.error, undefined, 'it opens');
    assert.deepEqual([rep.damage[0]!.fromLsn, rep.damage[0]!.toLsn], [damaged, damaged], JSON.stringify(rep.damage));
    assert.equal(rep.log!.lastLsn, damaged - 1, 'the log reads up to the damage');
    assert.deepEqual(snapshot(copy), before, 'the damage is reported, not cut');
  });

  it('shows a torn tail as what the next open cuts, and leaves it', async () => {
    const copy = copyDir(dataDir);
    copies.push(copy);
    const replica = path.join(copy, 'dev0', 'shards', `${volumeId}.1`);
    const seg = lastSegment(replica);
    const size = fs.statSync(seg).size;
    // A record header cut short past the last record (the zeros written ahead are overwritten).
    const at = inspectEnd(copy, volumeId);
    const fh = fs.openSync(seg, 'r+');
    fs.writeSync(fh, Buffer.from([0x10, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0x55]), 0, 9, at);
    fs.closeSync(fh);
    const before = snapshot(copy);
    const r = await runCli(['inspect', copy]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`${volumeId}/1: the node's next open changes log/seg-[0-9a-f]{16}\\.log \\(a torn tail cut\\)`));
    assert.deepEqual(snapshot(copy), before, 'the tail is still there');
    assert.equal(fs.statSync(seg).size, Math.max(size, at + 9));
  });

  it('an image whose header is damaged (found by the open) is reported damaged, and not written again by the look', () => {
    const copy = copyDir(dataDir);
    copies.push(copy);
    const imageLsn = inspect(copy, { shard: 'db/0' }).replicas[0]!.imageLsn!;
    const file = path.join(copy, 'dev0', 'shards', `${volumeId}.0`, imageFileName(imageLsn));
    const b = fs.readFileSync(file);
    b[12] = b[12]! ^ 0x01; // its header's LSN
    fs.writeFileSync(file, b);
    const rep = inspect(copy, { shard: 'db/0' }).replicas[0]!;
    assert.equal(rep.state, 'damaged');
    assert.ok(rep.damage.some((d) => d.file.endsWith(imageFileName(imageLsn))), JSON.stringify(rep.damage));
    assert.ok(!rep.nextOpen.some((p) => p.startsWith('image-')), `no image written: ${rep.nextOpen.join(', ')}`);
  });

  it('a log the next open makes anew (its directory gone) is not called a torn tail cut', () => {
    const copy = copyDir(dataDir);
    copies.push(copy);
    fs.rmSync(path.join(copy, 'dev0', 'shards', `${volumeId}.1`, 'log'), { recursive: true });
    const report = inspect(copy);
    const rep = report.replicas.find((x) => x.volumeId === volumeId && x.shard === 1)!;
    assert.ok(rep.nextOpen.some((p) => /^log\/seg-[0-9a-f]{16}\.log$/.test(p)), `the open makes a segment: ${rep.nextOpen.join(', ')}`);
    assert.equal(rep.tailCut, undefined);
    assert.doesNotMatch(inspectText(report), /torn tail cut/);
  });

  it('lists a replica set\'s records with their members (a joint one with the set it comes from), a noop, and one it cannot read as such', async () => {
    const { copy, first, term } = copyWithRecords((t) => [
      { term: t, kind: RecordKind.Config, payload: encodeConfig({ members: ['n1', 'n2', 'n4'], prior: ['n1', 'n2', 'n3'] }) },
      { term: t, kind: RecordKind.Config, payload: encodeConfig({ members: ['n1', 'n2', 'n4'] }) },
      { term: t, kind: RecordKind.Noop, payload: new Uint8Array(0) },
      { term: t, kind: RecordKind.Config, payload: new Uint8Array([1, 2, 3]) },
    ]);
    const lines = inspect(copy, { shard: 'db/0', records: { fromLsn: first } }).records!;
    assert.deepEqual(
      lines.map((l) => [l.lsn, l.kind, l.members, l.prior]),
      [[first, 'config', ['n1', 'n2', 'n4'], ['n1', 'n2', 'n3']], [first + 1, 'config', ['n1', 'n2', 'n4'], undefined], [first + 2, 'noop', undefined, undefined], [first + 3, 'config (unreadable)', undefined, undefined]],
    );
    const r = await runCli(['inspect', copy, '--shard', 'db/0', '--records', '--from', String(first)]);
    assert.match(r.stdout, new RegExp(`\\n${first} +${term} +config +\\d+ +set n1,n2,n4 \\(joint, from n1,n2,n3\\)\\n${first + 1} +${term} +config +\\d+ +set n1,n2,n4\\n${first + 2} +${term} +noop +0 *\\n${first + 3} +${term} +config \\(unreadable\\) +3 *\\n`));
  });

  it('a record that reads back but does not apply (a page write that is not one) is damage; what is before it still reads', async () => {
    const { copy, first: bad } = copyWithRecords((term) => [{ term, kind: RecordKind.PageWrite, payload: new Uint8Array(40) }]);
    const report = inspect(copy, { shard: 'db/0', page: { page: 3 } });
    const rep = report.replicas[0]!;
    assert.equal(rep.state, 'damaged');
    assert.match(rep.damage[0]!.reason, new RegExp(`^LSN ${bad} does not apply: `));
    assert.deepEqual(report.page!.data, page(writes[writes.length - 1]!.fill), 'the page as of the record before');
  });

  it('a damaged term-and-vote record (the device\'s hard-state journal) or replica set file (config) is damage, named; the replica is still read', async () => {
    for (const name of ['hard-states', 'config']) {
      const copy = copyDir(dataDir);
      copies.push(copy);
      const replica = path.join(copy, 'dev0', 'shards', `${volumeId}.0`);
      const file = name === 'config' ? path.join(replica, 'config') : path.join(copy, 'dev0', 'hard-states');
      // The replica of a set that never changed has no config file: a damaged one stands for it.
      const b = name === 'config' ? Buffer.from(encodeMeta({ base: { members: ['n1'] }, changes: [] })) : fs.readFileSync(file);
      // The journal's last record, whole: written, answered, rotted since.
      b[b.length - 2] = b[b.length - 2]! ^ 0x01;
      fs.writeFileSync(file, b);
      const rep = inspect(copy, { shard: 'db/0' }).replicas[0]!;
      assert.equal(rep.state, 'damaged', name);
      assert.deepEqual(rep.damage.map((d) => path.basename(d.file)), [name], JSON.stringify(rep.damage));
      assert.match(rep.damage[0]!.reason, name === 'config' ? /CRC-32C/ : new RegExp(`the term and vote of shards/${volumeId}\\.0 were in a damaged record`));
      assert.equal(rep.log!.lastLsn, writes[writes.length - 1]!.lsn, `${name}: the log still reads`);
      const r = await runCli(['inspect', copy]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stdout, new RegExp(`${volumeId}/0: damage: .*${name === 'config' ? `${volumeId}\\.0/config.*: payload CRC-32C` : 'dev0/hard-states.*damaged record'}`));
    }
  });

  it('a replica whose log does not open is unreadable, with the reason; exit 1', async () => {
    const loneRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-inspect-lone-'));
    copies.push(loneRoot);
    const lone = path.join(loneRoot, `${volumeId}.1`);
    fs.cpSync(path.join(dataDir, 'dev0', 'shards', `${volumeId}.1`), lone, { recursive: true });
    // A segment header of another format version, with a valid checksum.
    const seg = lastSegment(lone);
    const b = fs.readFileSync(seg);
    b.writeUInt32LE(2, 8);
    b.writeUInt32LE(crc32c(b.subarray(0, 60)), 60);
    fs.writeFileSync(seg, b);
    const rep = inspect(lone).replicas[0]!;
    assert.equal(rep.state, 'unreadable');
    assert.match(rep.error!, /unsupported segment format version/);
    assert.throws(() => inspect(lone, { records: {} }), inspectError('bad_request', /does not open \(.*unsupported segment format version.*\): its records and pages cannot be read$/));
    const r = await runCli(['inspect', lone]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /does not open: .*unsupported segment format version/);
    assert.match(r.stderr, /^strata: corruption: 1 of 1 replica\(s\) damaged or not opening/);
  });

  it('an entry named as a replica that is not a directory (a file, a link to nothing) is unreadable, named; the others are still read; exit 1', async () => {
    const copy = copyDir(dataDir);
    copies.push(copy);
    const shards = path.join(copy, 'dev0', 'shards');
    fs.writeFileSync(path.join(shards, 'v6-ff.0'), 'x');
    fs.symlinkSync(path.join(copy, 'nothing-here'), path.join(shards, 'v7-l.0'));
    const report = inspect(copy);
    const byName = new Map(report.replicas.map((r) => [`${r.volumeId}.${r.shard}`, r]));
    assert.equal(byName.get('v6-ff.0')?.state, 'unreadable');
    assert.equal(byName.get('v6-ff.0')?.error, 'not a directory');
    assert.equal(byName.get('v7-l.0')?.state, 'unreadable');
    assert.match(byName.get('v7-l.0')!.error!, /^can not be read: ENOENT/);
    assert.equal(byName.get(`${volumeId}.0`)?.state, 'ok');
    assert.equal(byName.get(`${volumeId}.1`)?.state, 'ok');
    assert.throws(() => inspect(copy, { shard: 'v6-ff/0', records: {} }), inspectError('bad_request', /v6-ff\.0 not a directory$/));
    const r = await runCli(['inspect', copy]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, new RegExp(`${volumeId}/0 +db +dev0 .* ok\\n`));
    assert.match(r.stderr, /^strata: corruption: 2 of 4 replica\(s\) damaged or not opening/);
  });

  it('--verify reads every image page against its checksum', async () => {
    const copy = copyDir(dataDir);
    copies.push(copy);
    const replica = path.join(copy, 'dev0', 'shards', `${volumeId}.0`);
    const image = fs.readdirSync(replica).filter((n) => /^image-.*\.img$/.test(n)).sort().pop()!;
    const file = path.join(replica, image);
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0x01; // In the last page's data.
    fs.writeFileSync(file, bytes);
    const plain = await runCli(['inspect', copy]);
    assert.equal(plain.code, 0, 'the header and table still check out');
    const r = await runCli(['inspect', copy, '--verify']);
    assert.equal(r.code, 1);
    assert.match(r.stdout, new RegExp(`${volumeId}/0: damage: .*${image}.*`));
    assert.match(r.stderr, /^strata: corruption: 1 of 2 replica/);
  });

  it('says so when a node runs on the directory', async () => {
    await c!.restart(0);
    const r = await runCli(['inspect', dataDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`note: the directory is in use by node n1, process ${process.pid}: what is read may be changing under it`));
    await c!.stopNode(0);
    const after = await runCli(['inspect', dataDir]);
    assert.doesNotMatch(after.stdout, /note:/);
  });

  it('--catalog reads the catalog of a controller node that keeps it alone', async () => {
    const r = await runCli(['inspect', dataDir, '--catalog']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /catalog \(the file of a controller node that keeps it alone \(controller\/catalog\)\): epoch \d+/);
    assert.match(r.stdout, new RegExp(`\ndb +${volumeId} +512 +4096 +2 +1 +- +0:n1 1:n1\n`));
    const bad = await runCli(['inspect', dataDir, '--catalog', '--lsn', '3']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^strata: bad_request: --lsn: the catalog of .* is a file/);
    // A damaged catalog file is reported as such, naming it.
    const copy = copyDir(dataDir);
    copies.push(copy);
    const file = path.join(copy, 'controller', 'catalog');
    const b = fs.readFileSync(file);
    b[b.length - 2] = b[b.length - 2]! ^ 0x01;
    fs.writeFileSync(file, b);
    assert.throws(() => inspect(copy, { catalog: {} }), inspectError('bad_request', new RegExp(`^${copy}/controller/catalog: metadata file .* is corrupt`)));
  });

  it('reads a node record as large as its node writes (over the default bound of a metadata file)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-inspect-big-'));
    try {
      const shards = Array.from({ length: 6000 }, (_, i) => ({
        volumeId: `v${i + 1}-abcdef01`, volumeName: `volume-${i}`, shard: 0, shards: 1, pageCount: 1024, pageSize: 4096, stripePages: 1024, hostId: 0, members: ['big', 'n2', 'n3'], createdAt: 1,
      }));
      nodeMetaStore(new RealDisk(dir)).write(NODE_META, { version: 1, nodeId: 'big', cluster: 'c', hosts: 1, shards });
      assert.ok(fs.statSync(path.join(dir, NODE_META)).size > META_PAYLOAD_BYTES_MAX_DEFAULT, 'the record is over the default bound');
      const r = inspect(dir);
      assert.equal(r.node?.nodeId, 'big');
      assert.equal(r.replicas.length, 0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a node record that is not one, or is damaged, is refused bad_request naming the file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-inspect-record-'));
    try {
      const file = path.join(dir, NODE_META);
      nodeMetaStore(new RealDisk(dir)).write(NODE_META, { version: 1, nodeId: 'x', cluster: 'c', hosts: 1 });
      assert.throws(() => inspect(dir), inspectError('bad_request', new RegExp(`^${file} is not a node's record$`)));
      nodeMetaStore(new RealDisk(dir)).write(NODE_META, { version: 1, nodeId: 'x', cluster: 'c', hosts: 1, shards: [] });
      assert.equal(inspect(dir).node?.nodeId, 'x');
      const b = fs.readFileSync(file);
      b[b.length - 2] = b[b.length - 2]! ^ 0x01;
      fs.writeFileSync(file, b);
      assert.throws(() => inspect(dir), inspectError('bad_request', new RegExp(`^${file}: metadata file .* is corrupt`)));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a shard named whose replica is on two devices of the node is refused: the device must be named', () => {
    const copy = copyDir(dataDir);
    copies.push(copy);
    fs.mkdirSync(path.join(copy, 'dev1', 'shards'), { recursive: true });
    fs.cpSync(path.join(copy, 'dev0', 'shards', `${volumeId}.0`), path.join(copy, 'dev1', 'shards', `${volumeId}.0`), { recursive: true });
    assert.throws(() => inspect(copy, { shard: 'db/0', records: {} }), inspectError('bad_request', /^--shard db\/0: 2 replicas match \(on dev0, dev1\); name the device's directory$/));
    assert.equal(inspect(path.join(copy, 'dev1'), { shard: `${volumeId}/0`, records: {} }).records!.length > 0, true, 'the device\'s directory names one');
  });

  it('pageRanges folds page numbers into ranges', () => {
    assert.equal(pageRanges([5, 1, 2, 3, 9, 10]), '1-3, 5, 9-10');
    assert.equal(pageRanges([1, 3, 5, 7], 2), '1, 3, … (2 more ranges)');
  });
});

/** The offset of each record of a segment's bytes, by LSN. */
function recordOffsets(b: Buffer): Map<number, number> {
  const out = new Map<number, number>();
  for (let p = 64; p + 32 <= b.length; ) {
    const len = b.readUInt32LE(p);
    const lsn = b.readUInt32LE(p + 8);
    if (len === 0 && lsn === 0 && b.readUInt32LE(p + 4) === 0) break;
    if (lsn !== 0) out.set(lsn, p);
    p += 32 + len + ((8 - ((32 + len) % 8)) % 8);
  }
  return out;
}

/** The offset just past the last record of shard 1's last segment (where a torn write would land). */
function inspectEnd(copy: string, volumeId: string): number {
  const seg = lastSegment(path.join(copy, 'dev0', 'shards', `${volumeId}.1`));
  const b = fs.readFileSync(seg);
  let p = 64;
  for (;;) {
    if (p + 32 > b.length) return p;
    const len = b.readUInt32LE(p);
    const lsnLo = b.readUInt32LE(p + 8);
    if (len === 0 && lsnLo === 0 && b.readUInt32LE(p + 4) === 0) return p; // The zeros written ahead.
    p += 32 + len + ((8 - ((32 + len) % 8)) % 8);
  }
}

describe('strata inspect --catalog (a replicated controller)', function () {
  this.timeout(60_000);
  let root: string;
  let c: InProcessCluster | undefined;

  after(async () => {
    await c?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('reads the catalog from the catalog shard, as of any LSN it holds', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-inspect-catalog-'));
    c = await startCluster({ nodes: 3, controllers: 3, dataDir: root });
    await c.client.createVolume({ name: 'a', pageCount: 64, replicas: 3 });
    await c.client.createVolume({ name: 'b', pageCount: 64, replicas: 3 });
    await c.client.deleteVolume('a');
    const dir = c.dataDirs[1]!;
    for (let i = 2; i >= 0; i--) await c.stopNode(i);

    const now = inspect(dir, { catalog: {} });
    assert.equal(now.catalog!.source, 'catalog shard');
    const state = now.catalog!.state!;
    assert.deepEqual(state.volumes.map((v) => v.name), ['b']);
    assert.equal(state.tombstones.length, 1);
    const r = await runCli(['inspect', dir, '--catalog']);
    assert.equal(r.code, 0, r.stderr);
    assert.throws(() => inspect(dir, { catalog: { lsn: now.catalog!.lsn! + 1 } }), inspectError('future_lsn', new RegExp(`^--lsn ${now.catalog!.lsn! + 1}: the log ends at LSN ${now.catalog!.lsn}$`)));
    assert.match(r.stdout, new RegExp(`catalog \\(the catalog shard as of LSN ${now.catalog!.lsn}\\): epoch ${state.epoch}, .* 1 volume\\(s\\), 1 tombstone\\(s\\)`));

    // Each write of the header page (page 0) is a catalog: their epochs grow, and the first
    // holds no volume yet or one.
    const records = inspect(dir, { shard: 'strata-catalog/0', records: {} }).records!;
    const headers = records.filter((x) => x.pages?.includes(0)).map((x) => x.lsn);
    assert.ok(headers.length >= 3, `catalog writes: ${headers.join(',')}`);
    const epochs = headers.map((lsn) => inspect(dir, { catalog: { lsn } }).catalog!.state!.epoch);
    for (let i = 1; i < epochs.length; i++) assert.ok(epochs[i]! > epochs[i - 1]!, `epochs ${epochs.join(',')}`);
    const before = inspect(dir, { catalog: { lsn: headers[0]! - 1 } }).catalog!;
    assert.equal(before.state, null, 'before its first write the shard holds no catalog');
    const withA = headers.map((lsn) => inspect(dir, { catalog: { lsn } }).catalog!.state!).find((s) => s.volumes.some((v) => v.name === 'a'));
    assert.ok(withA !== undefined, 'an earlier catalog still lists the deleted volume');
  });
});

/** Rewrites `page` in the image file `file` with other bytes, its checksums made to match: damage no checksum catches. */
function rewriteImagePage(file: string, page: number): void {
  const b = fs.readFileSync(file);
  const entries = b.readUInt32LE(36);
  let e = 0;
  while (e < entries && b.readUInt32LE(40 + 20 * e) !== page) e++;
  assert.ok(e < entries, `the image stores page ${page}`);
  const offset = b.readUInt32LE(40 + 20 * e + 8);
  const pageSize = b.readUInt32LE(28);
  for (let i = 0; i < pageSize; i++) b[offset + i] = b[offset + i]! ^ 0x5a;
  b.writeUInt32LE(crc32c(b.subarray(offset, offset + pageSize)), 40 + 20 * e + 16);
  const end = 40 + 20 * entries;
  b.writeUInt32LE(crc32c(b.subarray(0, end)), end);
  fs.writeFileSync(file, b);
}

describe('strata inspect --compare (the replicas of a shard on several nodes)', function () {
  this.timeout(60_000);
  let root: string;
  let c: InProcessCluster | undefined;
  let dirs: string[];
  let volumeId: string;
  let last: number;
  let lastTerm: number;
  const copies: string[] = [];

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-inspect-compare-'));
    // Small segments: the log is trimmed behind each image, and the pages it held are read from the image.
    c = await startCluster({ nodes: 3, dataDir: root, node: { checkpointEveryRecords: 8, segmentBytesMax: 16384 } });
    volumeId = (await c.client.createVolume({ name: 'db', pageCount: 256, shards: 2, stripePages: 128, replicas: 3 })).id;
    const vol = c.client.volume('db');
    // Pages 1..4 once, then page 0 again and again: two images (the log trimmed behind the older), the newest holding pages 1..4 as read at the end.
    for (let k = 1; k <= 20; k++) last = (await vol.writePages([{ page: k <= 4 ? k : 0, data: page(k) }])).lsn;
    // Every replica holds and has applied every record (the write was answered once a majority
    // had it; on a loaded machine a follower may be well behind).
    await vol.flush();
    await waitFor('every replica of shard 0 holds and applied every record', async () => {
      const check = await c!.client.checkShard('db', 0, { waitMs: 0 });
      return check.replicas.length === 3 && check.replicas.every((r) => r.lastLsn === last && r.appliedLsn === last);
    }, 30_000);
    // And has taken its second image and trimmed its log behind the first (the records of pages
    // 1..4 gone): the tests below read those pages from an image. Its checkpoints are built in
    // steps between the device's other work; on a loaded machine the second came after the stop.
    await waitFor('every replica of shard 0 trimmed its log behind an image', async () => {
      const firsts: number[] = [];
      for (const n of c!.nodes) for (const h of (await n?.hostPool.stats()) ?? []) for (const r of h.device?.shards ?? []) if (r.volumeId === volumeId && r.shard === 0) firsts.push(r.firstLsn);
      return firsts.length === 3 && firsts.every((f) => f > 5);
    }, 30_000);
    dirs = [...c.dataDirs];
    // The shard's leader stops last: a leader that stops hands its leadership over, and the new
    // leader's first record would follow the writes on the nodes still running.
    let leader = 0;
    for (let i = 0; i < 3; i++) if ((await c.nodes[i]!.hostPool.replicaRoles()).leading.some((r) => r.volumeId === volumeId && r.shard === 0)) leader = i;
    for (const i of [0, 1, 2].filter((x) => x !== leader)) await c.stopNode(i);
    await c.stopNode(leader);
    lastTerm = inspect(dirs[0]!, { shard: 'db/0' }).replicas[0]!.log!.lastTerm;
  });

  after(async () => {
    await c?.stop();
    for (const d of [root, ...copies]) fs.rmSync(d, { recursive: true, force: true });
  });

  /** A copy of node i's data directory whose replica of shard 0 ends, at LSN `last`, with a record of `term` (a page write of other bytes, or a no-op). */
  function withLastRecord(i: number, term: number, kind: 'page-write' | 'noop'): string {
    const copy = copyDir(dirs[i]!);
    copies.push(copy);
    replaceLastRecord(path.join(copy, 'dev0', 'shards', `${volumeId}.0`), term, kind);
    return copy;
  }

  /** Makes the replica in `dir` end, at LSN `last`, with a record of `term`. */
  function replaceLastRecord(dir: string, term: number, kind: 'page-write' | 'noop'): void {
    const disk = new RealDisk(dir);
    const log = SegmentLog.open(disk, { dir: 'log' });
    log.truncateSuffix(last);
    log.write([kind === 'noop' ? { term, kind: RecordKind.Noop, payload: new Uint8Array(0) } : { term, kind: RecordKind.PageWrite, payload: encodePageWrite(4096, [{ page: 1, data: page(99) }]) }]);
    log.sync();
    log.close();
    disk.closeAll();
  }

  it('finds the replicas the same, record for record and page for page', async () => {
    const r = await runCli(['inspect', ...dirs, '--compare', '--shard', 'db/0']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = compareReplicas(dirs, 'db/0');
    assert.equal(report.ok, true);
    for (const o of report.others) {
      assert.equal(o.agreedTo, last);
      assert.equal(o.diverged, undefined);
      assert.deepEqual([o.pages!.lsn, o.pages!.differing], [last, 0]);
      assert.equal(o.pages!.compared, 5, 'pages 0..4 were written');
    }
    assert.match(r.stdout, new RegExp(`\\nn2 +${dirs[1]} +.* ${last} +5/5 equal at ${last} +same\\n`));
  });

  it('takes a tail of another term for what a deposed leader left, not for a difference', async () => {
    const copy = withLastRecord(2, lastTerm + 1, 'noop');
    const report = compareReplicas([dirs[0]!, dirs[1]!, copy], 'db/0');
    assert.equal(report.ok, true);
    const o = report.others[1]!;
    assert.deepEqual([o.agreedTo, o.tailFrom, o.diverged], [last - 1, last, undefined]);
    const r = await runCli(['inspect', dirs[0]!, copy, '--compare', '--shard', 'db/0']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`same; its tail from LSN ${last} is of another term`));
  });

  it('reports two records of one LSN and term that differ: exit 1', async () => {
    const copy = withLastRecord(1, lastTerm, 'page-write');
    const report = compareReplicas([dirs[0]!, copy], 'db/0');
    assert.equal(report.ok, false);
    assert.equal(report.others[0]!.diverged!.lsn, last);
    const r = await runCli(['inspect', dirs[0]!, copy, '--compare', '--shard', 'db/0']);
    assert.equal(r.code, 1);
    assert.match(r.stdout, new RegExp(`DIVERGED\\n.*both hold LSN ${last} in term ${lastTerm}, with different records`));
    assert.match(r.stderr, new RegExp(`^strata: corruption: the replicas under ${copy} differ from the one under ${dirs[0]}\\n$`));
  });

  it('reports a page that differs where the records agree (an image with wrong bytes and matching checksums)', async () => {
    const copy = copyDir(dirs[1]!);
    copies.push(copy);
    const replica = path.join(copy, 'dev0', 'shards', `${volumeId}.0`);
    // The image the checkpoint pointer names: a newer file may be there too, written by a
    // checkpoint the stop came before the pointer of.
    const imageLsn = inspect(copy, { shard: 'db/0' }).replicas[0]!.imageLsn!;
    assert.ok(imageLsn > 0, 'the replica has an image');
    const changed = 3;
    rewriteImagePage(path.join(replica, imageFileName(imageLsn)), changed);
    assert.equal(inspect(copy, { shard: 'db/0', verify: true }).replicas[0]!.state, 'ok', 'no checksum finds it');
    const report = compareReplicas([dirs[0]!, copy], 'db/0');
    assert.equal(report.ok, false, JSON.stringify(report.others));
    const o = report.others[0]!;
    assert.equal(o.diverged, undefined);
    assert.equal(inspect(copy, { shard: 'db/0', page: { page: changed } }).page!.source.kind, 'image', 'as of the end, the page is read from the image');
    assert.deepEqual([o.pages!.differing, o.pages!.named], [1, [changed]]);
    const r = await runCli(['inspect', dirs[0]!, copy, '--compare', '--shard', 'db/0']);
    assert.equal(r.code, 1);
    assert.match(r.stdout, new RegExp(`PAGES DIFFER\\n.*1 page\\(s\\) differ as of LSN ${last}: ${changed}\\n`));
  });

  it('a replica whose image is damaged is reported damaged, not compared as if whole: exit 1', async () => {
    const copy = copyDir(dirs[1]!);
    copies.push(copy);
    const replica = path.join(copy, 'dev0', 'shards', `${volumeId}.0`);
    const imageLsn = inspect(copy, { shard: 'db/0' }).replicas[0]!.imageLsn!;
    const file = path.join(replica, imageFileName(imageLsn));
    const b = fs.readFileSync(file);
    b[b.length - 100] = b[b.length - 100]! ^ 0x01; // In the last page's data: its checksum fails.
    fs.writeFileSync(file, b);
    const report = compareReplicas([dirs[0]!, copy], 'db/0');
    assert.equal(report.ok, false, JSON.stringify(report.others));
    const damaged = report.others[0]!.replica;
    assert.equal(damaged.state, 'damaged', JSON.stringify(damaged.damage));
    assert.ok(damaged.damage.some((d) => d.file.endsWith(imageFileName(imageLsn)) && /checksum/.test(d.reason)), JSON.stringify(damaged.damage));
    assert.equal(report.others[0]!.pages, undefined, 'its pages are not compared');
    assert.equal(report.reference.replica.state, 'ok');
    const r = await runCli(['inspect', dirs[0]!, copy, '--compare', '--shard', 'db/0']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`damage: .*${imageFileName(imageLsn)}`));
  });

  it('the soak\'s last check compares every shard of a stopped cluster, and fails on a difference', () => {
    const problems: string[] = [];
    assert.deepEqual(compareEveryShard(root, (p) => problems.push(p)).shards, 2);
    assert.equal(problems.length, 0, problems.join('\n'));
    const copy = copyDir(root);
    copies.push(copy);
    replaceLastRecord(path.join(copy, path.basename(dirs[2]!), 'dev0', 'shards', `${volumeId}.0`), lastTerm, 'page-write');
    const counted = compareEveryShard(copy, (p) => problems.push(p));
    assert.equal(counted.shards, 2);
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0]!, new RegExp(`^the replicas of ${volumeId}\\.0 differ or do not open:\n[^]*DIVERGED`));
  });

  it('a replica trimmed behind its images: records from its log\'s first LSN, pages as of its oldest readable LSN; trimmed before', () => {
    const rep = inspect(dirs[0]!, { shard: 'db/0' }).replicas[0]!;
    const first = rep.log!.firstLsn;
    const oldest = rep.oldestReadableLsn!;
    assert.ok(first > 1 && oldest > 1, `the log was trimmed (it starts at LSN ${first}, reads from ${oldest})`);
    assert.throws(() => inspect(dirs[0]!, { shard: 'db/0', records: { fromLsn: first - 1 } }), inspectError('trimmed', new RegExp(`^--from ${first - 1}: the log starts at LSN ${first} `)));
    assert.equal(inspect(dirs[0]!, { shard: 'db/0', records: { fromLsn: first } }).records![0]!.lsn, first);
    assert.throws(() => inspect(dirs[0]!, { shard: 'db/0', page: { page: 1, lsn: oldest - 1 } }), inspectError('trimmed', new RegExp(`^--lsn ${oldest - 1}: the oldest LSN readable is ${oldest} \\(its image\\)`)));
    assert.deepEqual(inspect(dirs[0]!, { shard: 'db/0', page: { page: 1, lsn: oldest } }).page!.data, page(1));
  });

  it('refuses a comparison it cannot make', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['inspect', dirs[0]!, '--compare'], 1, /^strata: bad_request: --compare: 2\.\.16 directories, got 1/],
      [['inspect', dirs[0]!, path.join(root, 'nope'), '--compare', '--shard', 'db/0'], 1, /^strata: not_found: .*nope: not a directory\n/],
      [['inspect', dirs[0]!, dirs[1]!, '--compare'], 1, /^strata: bad_request: .* holds \d+ replicas: name the shard to compare with --shard/],
      [['inspect', dirs[0]!, dirs[1]!], 2, /^strata: usage: inspect: several PATHs go with --compare/],
      [['inspect', dirs[0]!, dirs[1]!, '--compare', '--shard', 'db/0', '--records'], 2, /^strata: usage: inspect: --records does not go with --compare/],
      [['inspect', path.join(dirs[0]!, 'dev0', 'shards', `${volumeId}.0`), path.join(dirs[1]!, 'dev0', 'shards', `${volumeId}.1`), '--compare'], 1, /^strata: bad_request: .* holds shard 1 of .*, not shard 0 of/],
    ];
    for (const [argv, code, err] of cases) {
      const r = await runCli(argv);
      assert.equal(r.code, code, `${argv.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, err, argv.join(' '));
    }
  });
});
