/**
 * OverlayDisk: a copy-on-write view of a real directory tree. Every case builds a real tree in a
 * temporary directory, works on it through the overlay, and checks both what the overlay shows and
 * that the real tree (every entry's content, size and mtime) is exactly as it was.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import type { Disk } from '../../storage-engine/disk';
import { SegmentLog } from '../../storage-engine/log';
import { segmentName } from '../../storage-engine/log-segment';
import { OverlayDisk } from '../../storage-engine/overlay-disk';
import { encodePageWrite } from '../../storage-engine/page-write';
import { RealDisk } from '../../storage-engine/real-disk';
import { ShardStorage, type ShardStorageOptions } from '../../storage-engine/shard-storage';
import { Slab } from '../../storage-engine/slab';
import { expectStorageError } from '../support/expect';
import { assertHistory, history } from '../support/log-history';
import { bytes, readAll, text } from '../support/disk';


/** One entry of a real tree as found on disk. */
interface RealEntry {
  kind: 'file' | 'dir';
  size: number;
  mtimeMs: number;
  content: string | undefined;
}

/** Every entry under `root` (root included, as ''), with its content for files. */
function snapshotTree(root: string): Map<string, RealEntry> {
  const out = new Map<string, RealEntry>();
  const walk = (rel: string): void => {
    const abs = rel === '' ? root : nodePath.join(root, rel);
    const st = fs.statSync(abs);
    if (st.isDirectory()) {
      out.set(rel, { kind: 'dir', size: st.size, mtimeMs: st.mtimeMs, content: undefined });
      for (const name of fs.readdirSync(abs).sort()) walk(rel === '' ? name : `${rel}/${name}`);
    } else {
      out.set(rel, { kind: 'file', size: st.size, mtimeMs: st.mtimeMs, content: fs.readFileSync(abs).toString('base64') });
    }
  };
  walk('');
  return out;
}

/** Descriptors this process holds (Linux), or undefined where /proc/self/fd is not there. */
function fdCount(): number | undefined {
  try {
    return fs.readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

describe('OverlayDisk', () => {
  let root: string;
  let before: Map<string, RealEntry>;
  let disks: OverlayDisk[];

  /** The real tree every case starts from. */
  function buildTree(): void {
    fs.mkdirSync(nodePath.join(root, 'shard-1', 'log'), { recursive: true });
    fs.mkdirSync(nodePath.join(root, 'shard-1', 'pages'), { recursive: true });
    fs.mkdirSync(nodePath.join(root, 'empty'));
    fs.writeFileSync(nodePath.join(root, 'top.txt'), 'top level');
    fs.writeFileSync(nodePath.join(root, 'shard-1', 'meta'), 'metadata-v1');
    fs.writeFileSync(nodePath.join(root, 'shard-1', 'log', 'a'), 'alpha');
    fs.writeFileSync(nodePath.join(root, 'shard-1', 'log', 'b'), 'bravo!');
    fs.writeFileSync(nodePath.join(root, 'shard-1', 'pages', 'p0'), 'page zero');
  }

  function overlay(opts?: ConstructorParameters<typeof OverlayDisk>[1]): OverlayDisk {
    const disk = new OverlayDisk(root, opts);
    disks.push(disk);
    return disk;
  }

  /** The real tree is exactly as it was built: same entries, contents, sizes and mtimes. */
  function assertRealUnchanged(): void {
    assert.deepEqual(snapshotTree(root), before);
  }

  beforeEach(() => {
    root = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-overlay-test-'));
    disks = [];
    buildTree();
    before = snapshotTree(root);
  });

  afterEach(() => {
    for (const d of disks) d.closeAll();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('reads the real files and lists the real directories', () => {
    const disk = overlay();
    assert.equal(readAll(disk, 'top.txt'), 'top level');
    assert.equal(readAll(disk, 'shard-1/log/b'), 'bravo!');
    assert.deepEqual(disk.list(''), ['empty', 'shard-1', 'top.txt']);
    assert.deepEqual(disk.list('shard-1'), ['log', 'meta', 'pages']);
    assert.deepEqual(disk.list('empty'), []);
    assert.deepEqual(disk.list('nowhere'), []);
    assert.ok(disk.exists(''));
    assert.ok(disk.exists('shard-1/log'));
    assert.ok(disk.exists('shard-1/log/a'));
    assert.ok(!disk.exists('shard-1/log/c'));
    assert.ok(!disk.exists('top.txt/x'));
    const fh = disk.open('shard-1/log/b');
    assert.equal(disk.size(fh), 6);
    const buf = new Uint8Array(10);
    assert.equal(disk.read(fh, buf, 2), 4, 'short read at the end of the file');
    assert.equal(text(buf.subarray(0, 4)), 'avo!');
    assert.equal(disk.read(fh, buf, 6), 0);
    disk.fdatasync(fh);
    disk.close(fh);
    assert.deepEqual(disk.changedPaths(), []);
    assertRealUnchanged();
  });

  it('writes, appends and truncates in memory; the real file keeps its bytes, size and mtime', () => {
    const disk = overlay();
    const real = nodePath.join(root, 'shard-1', 'log', 'a');
    const fh = disk.open('shard-1/log/a');
    disk.write(fh, bytes('ZZ'), 1);
    assert.equal(readAll(disk, 'shard-1/log/a'), 'aZZha');
    assert.equal(disk.append(fh, bytes('-tail')), 5);
    assert.equal(disk.size(fh), 10);
    disk.write(fh, bytes('!'), 12);
    const all = new Uint8Array(13);
    assert.equal(disk.read(fh, all, 0), 13);
    assert.deepEqual([...all], [...bytes('aZZha-tail'), 0, 0, ...bytes('!')]);
    disk.truncate(fh, 3);
    assert.equal(disk.size(fh), 3);
    disk.truncate(fh, 5);
    const grown = new Uint8Array(5);
    assert.equal(disk.read(fh, grown, 0), 5);
    assert.deepEqual([...grown], [...bytes('aZZ'), 0, 0]);
    disk.fdatasync(fh);
    disk.close(fh);
    // A handle opened later sees the overlay's bytes; the real file is as it was.
    assert.equal(readAll(disk, 'shard-1/log/a'), 'aZZ\0\0');
    assert.equal(fs.readFileSync(real, 'utf8'), 'alpha');
    assert.equal(fs.statSync(real).size, 5);
    assert.equal(fs.statSync(real).mtimeMs, before.get('shard-1/log/a')!.mtimeMs);
    // A truncate of a real file, with no write before it.
    const fb = disk.open('shard-1/log/b');
    disk.truncate(fb, 2);
    disk.close(fb);
    assert.equal(readAll(disk, 'shard-1/log/b'), 'br');
    assert.deepEqual(disk.changedPaths(), ['shard-1/log/a', 'shard-1/log/b']);
    assertRealUnchanged();
  });

  it('handles opened before a copy-up see the changed bytes', () => {
    const disk = overlay();
    const reader = disk.open('shard-1/meta');
    const writer = disk.open('shard-1/meta');
    disk.write(writer, bytes('M'), 0);
    const buf = new Uint8Array(11);
    assert.equal(disk.read(reader, buf, 0), 11);
    assert.equal(text(buf), 'Metadata-v1');
    disk.close(reader);
    disk.close(writer);
    assertRealUnchanged();
  });

  it('creates files in memory and lists them with the real entries', () => {
    const disk = overlay();
    const fh = disk.open('shard-1/log/aa', { create: true });
    assert.equal(disk.size(fh), 0);
    disk.write(fh, bytes('new'), 0);
    disk.close(fh);
    assert.deepEqual(disk.list('shard-1/log'), ['a', 'aa', 'b']);
    assert.ok(disk.exists('shard-1/log/aa'));
    assert.equal(readAll(disk, 'shard-1/log/aa'), 'new');
    // create on an existing file opens it as it is; truncate empties a real file in the overlay.
    const again = disk.open('shard-1/log/b', { create: true });
    assert.equal(disk.size(again), 6);
    disk.close(again);
    const emptied = disk.open('top.txt', { create: true, truncate: true });
    assert.equal(disk.size(emptied), 0);
    disk.close(emptied);
    assert.equal(readAll(disk, 'top.txt'), '');
    assert.ok(!fs.existsSync(nodePath.join(root, 'shard-1', 'log', 'aa')));
    assert.deepEqual(disk.changedPaths(), ['shard-1/log/aa', 'top.txt']);
    assertRealUnchanged();
  });

  it('renames real files and directories in the overlay only', () => {
    const disk = overlay();
    disk.rename('shard-1/log/a', 'shard-1/log/c');
    assert.deepEqual(disk.list('shard-1/log'), ['b', 'c']);
    assert.ok(!disk.exists('shard-1/log/a'));
    assert.ok(disk.exists('shard-1/log/c'));
    expectStorageError(() => disk.open('shard-1/log/a'), 'io_error', 'ENOENT');
    assert.equal(readAll(disk, 'shard-1/log/c'), 'alpha');
    // Replacing an existing real file.
    disk.rename('shard-1/log/c', 'shard-1/log/b');
    assert.deepEqual(disk.list('shard-1/log'), ['b']);
    assert.equal(readAll(disk, 'shard-1/log/b'), 'alpha');
    // A real directory, its files read from where they really are.
    disk.rename('shard-1/pages', 'shard-1/pages-old');
    assert.deepEqual(disk.list('shard-1'), ['log', 'meta', 'pages-old']);
    assert.deepEqual(disk.list('shard-1/pages'), []);
    assert.equal(readAll(disk, 'shard-1/pages-old/p0'), 'page zero');
    // A file written after its rename; the real file under its old name is untouched.
    const fh = disk.open('shard-1/pages-old/p0');
    disk.append(fh, bytes('+'));
    disk.close(fh);
    assert.equal(readAll(disk, 'shard-1/pages-old/p0'), 'page zero+');
    expectStorageError(() => disk.rename('shard-1/missing', 'shard-1/x'), 'io_error', 'ENOENT');
    expectStorageError(() => disk.rename('shard-1/meta', 'shard-1/log'), 'io_error', 'EISDIR');
    expectStorageError(() => disk.rename('shard-1', 'shard-1/log/inside'), 'io_error', 'EINVAL');
    assert.deepEqual(disk.changedPaths(), [
      'shard-1/log/a',
      'shard-1/log/b',
      'shard-1/log/c',
      'shard-1/pages',
      'shard-1/pages-old',
      'shard-1/pages-old/p0',
    ]);
    assert.ok(fs.existsSync(nodePath.join(root, 'shard-1', 'log', 'a')));
    assertRealUnchanged();
  });

  it('removes real files from the overlay only', () => {
    const disk = overlay();
    const open = disk.open('shard-1/log/a');
    disk.remove('shard-1/log/a');
    assert.deepEqual(disk.list('shard-1/log'), ['b']);
    assert.ok(!disk.exists('shard-1/log/a'));
    expectStorageError(() => disk.open('shard-1/log/a'), 'io_error', 'ENOENT');
    // As on a real file system, a handle open on a removed file still reads it.
    const buf = new Uint8Array(5);
    assert.equal(disk.read(open, buf, 0), 5);
    assert.equal(text(buf), 'alpha');
    disk.close(open);
    // Nothing there: nothing done, nothing reported.
    disk.remove('shard-1/log/a');
    disk.remove('nowhere/x');
    expectStorageError(() => disk.remove('shard-1/log'), 'io_error', 'EISDIR');
    // A file made again under the removed name is a new, empty one.
    const fh = disk.open('shard-1/log/a', { create: true });
    assert.equal(disk.size(fh), 0);
    disk.close(fh);
    assert.deepEqual(disk.changedPaths(), ['shard-1/log/a']);
    assert.equal(fs.readFileSync(nodePath.join(root, 'shard-1', 'log', 'a'), 'utf8'), 'alpha');
    assertRealUnchanged();
  });

  it('removeTree hides a whole real directory; mkdirp makes an empty one in its place', () => {
    const disk = overlay();
    disk.removeTree('shard-1');
    assert.deepEqual(disk.list(''), ['empty', 'top.txt']);
    assert.deepEqual(disk.list('shard-1'), []);
    assert.deepEqual(disk.list('shard-1/log'), []);
    assert.ok(!disk.exists('shard-1'));
    assert.ok(!disk.exists('shard-1/log/a'));
    expectStorageError(() => disk.open('shard-1/meta'), 'io_error', 'ENOENT');
    disk.removeTree('shard-1'); // gone already: nothing done
    disk.mkdirp('shard-1/log');
    assert.deepEqual(disk.list('shard-1'), ['log']);
    assert.deepEqual(disk.list('shard-1/log'), [], 'the real files stay hidden');
    // removeTree of a file removes the file.
    disk.removeTree('top.txt');
    assert.ok(!disk.exists('top.txt'));
    assert.deepEqual(disk.changedPaths(), ['shard-1', 'shard-1/log', 'top.txt']);
    assertRealUnchanged();
  });

  it('mkdirp records directories in memory', () => {
    const disk = overlay();
    disk.mkdirp('shard-1'); // exists: nothing done
    disk.mkdirp('');
    disk.mkdirp('shard-2/log/deep');
    assert.deepEqual(disk.list(''), ['empty', 'shard-1', 'shard-2', 'top.txt']);
    assert.deepEqual(disk.list('shard-2'), ['log']);
    assert.deepEqual(disk.list('shard-2/log/deep'), []);
    assert.ok(disk.exists('shard-2/log/deep'));
    disk.fsyncDir('shard-2/log');
    const fh = disk.open('shard-2/log/deep/f', { create: true });
    disk.write(fh, bytes('x'), 0);
    disk.close(fh);
    assert.equal(readAll(disk, 'shard-2/log/deep/f'), 'x');
    disk.mkdirp('empty/sub');
    assert.deepEqual(disk.list('empty'), ['sub']);
    expectStorageError(() => disk.mkdirp('top.txt/sub'), 'io_error', 'ENOTDIR');
    assert.deepEqual(disk.changedPaths(), ['empty/sub', 'shard-2', 'shard-2/log', 'shard-2/log/deep', 'shard-2/log/deep/f']);
    assert.ok(!fs.existsSync(nodePath.join(root, 'shard-2')));
    assertRealUnchanged();
  });

  it('bounds the copy-up: a real file over copyUpBytesMax is not written, a cut that keeps less is', () => {
    fs.writeFileSync(nodePath.join(root, 'big'), Buffer.alloc(3000, 7));
    before = snapshotTree(root);
    const disk = overlay({ copyUpBytesMax: 2048 });
    const fh = disk.open('big');
    const e = expectStorageError(() => disk.write(fh, bytes('x'), 0), 'io_error', 'EFBIG');
    assert.match(e.message, /big/);
    expectStorageError(() => disk.append(fh, bytes('x')), 'io_error', 'EFBIG');
    expectStorageError(() => disk.truncate(fh, 2500), 'io_error', 'EFBIG');
    assert.equal(disk.size(fh), 3000, 'nothing changed');
    assert.deepEqual(disk.changedPaths(), []);
    // Cutting to what fits copies only what stays.
    disk.truncate(fh, 1000);
    assert.equal(disk.size(fh), 1000);
    disk.write(fh, bytes('y'), 2047);
    expectStorageError(() => disk.write(fh, bytes('z'), 2048), 'io_error', 'EFBIG');
    const buf = new Uint8Array(2048);
    assert.equal(disk.read(fh, buf, 0), 2048);
    assert.ok(buf.subarray(0, 1000).every((b) => b === 7));
    assert.ok(buf.subarray(1000, 2047).every((b) => b === 0));
    assert.equal(buf[2047], 'y'.charCodeAt(0));
    disk.close(fh);
    // An in-memory file does not grow past the bound either.
    const made = disk.open('made', { create: true });
    expectStorageError(() => disk.truncate(made, 2049), 'io_error', 'EFBIG');
    disk.close(made);
    assertRealUnchanged();
  });

  it('fails as RealDisk does: ENOENT, EISDIR, ENOTDIR, bad handles, bad paths', () => {
    const disk = overlay();
    expectStorageError(() => disk.open('shard-1/log/missing'), 'io_error', 'ENOENT');
    expectStorageError(() => disk.open('nowhere/f', { create: true }), 'io_error', 'ENOENT');
    expectStorageError(() => disk.open('shard-1/log'), 'io_error', 'EISDIR');
    expectStorageError(() => disk.open('top.txt/f', { create: true }), 'io_error', 'ENOTDIR');
    expectStorageError(() => disk.list('top.txt'), 'io_error', 'ENOTDIR');
    expectStorageError(() => disk.fsyncDir('nowhere'), 'fsync_failed', 'ENOENT');
    const fh = disk.open('top.txt');
    disk.close(fh);
    expectStorageError(() => disk.close(fh), 'io_error', 'EBADF');
    expectStorageError(() => disk.fdatasync(fh), 'io_error', 'EBADF');
    expectStorageError(() => disk.read(fh, new Uint8Array(1), 0), 'io_error', 'EBADF');
    expectStorageError(() => disk.write(fh, new Uint8Array(1), 0), 'io_error', 'EBADF');
    expectStorageError(() => disk.truncate(fh, 0), 'io_error', 'EBADF');
    expectStorageError(() => disk.size(fh), 'io_error', 'EBADF');
    expectStorageError(() => disk.open(''), 'bad_request');
    expectStorageError(() => disk.open('/top.txt'), 'bad_request');
    expectStorageError(() => disk.open('shard-1/../top.txt'), 'bad_request');
    expectStorageError(() => disk.list('a//b'), 'bad_request');
    expectStorageError(() => disk.removeTree(''), 'bad_request');
    expectStorageError(() => new OverlayDisk(nodePath.join(root, 'missing')), 'io_error', 'ENOENT');
    expectStorageError(() => new OverlayDisk(nodePath.join(root, 'top.txt')), 'io_error', 'ENOTDIR');
    assert.deepEqual(disk.changedPaths(), []);
    assertRealUnchanged();
  });

  it('has none of the optional background calls', () => {
    const disk: Disk = overlay();
    assert.equal(disk.fdatasyncAsync, undefined);
    assert.equal(disk.removeAsync, undefined);
    assert.equal(disk.removeTreeAsync, undefined);
  });

  it('close and closeAll release the real descriptors; the handles are bounded', () => {
    const disk = overlay({ openFilesMax: 3 });
    const start = fdCount();
    const a = disk.open('top.txt');
    const b = disk.open('shard-1/meta');
    const c = disk.open('made', { create: true }); // in memory: no descriptor
    assert.equal(disk.openFiles, 3);
    assert.equal(disk.realFilesOpen, 2);
    if (start !== undefined) assert.equal(fdCount(), start + 2);
    expectStorageError(() => disk.open('shard-1/log/a'), 'overloaded');
    disk.close(a);
    assert.equal(disk.realFilesOpen, 1);
    if (start !== undefined) assert.equal(fdCount(), start + 1);
    disk.closeAll();
    assert.equal(disk.openFiles, 0);
    assert.equal(disk.realFilesOpen, 0);
    if (start !== undefined) assert.equal(fdCount(), start);
    expectStorageError(() => disk.size(b), 'io_error', 'EBADF');
    expectStorageError(() => disk.size(c), 'io_error', 'EBADF');
    // Still usable, changes kept.
    assert.equal(readAll(disk, 'made'), '');
    assert.equal(readAll(disk, 'shard-1/meta'), 'metadata-v1');
  });

  describe('with SegmentLog', () => {
    const DIR = 'shard-1/log';
    const SEG = `${DIR}/${segmentName(1)}`;

    /** A real log holding records 1..20, synced and closed, written with RealDisk. */
    function writeRealLog(): void {
      fs.rmSync(nodePath.join(root, 'shard-1', 'log'), { recursive: true, force: true });
      const real = new RealDisk(root);
      const log = SegmentLog.open(real, { dir: DIR });
      log.write(history(1, 20));
      log.sync();
      log.close();
      real.closeAll();
    }

    it('recovers a log with a torn tail: the tail is cut in the overlay, the real segment keeps it', () => {
      writeRealLog();
      const segPath = nodePath.join(root, ...SEG.split('/'));
      const cleanSize = fs.statSync(segPath).size;
      fs.appendFileSync(segPath, Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x13, 0x37, 0x42, 0x99]));
      const tornBytes = fs.readFileSync(segPath);
      const tornStat = fs.statSync(segPath);
      assert.equal(tornStat.size, cleanSize + 8);
      before = snapshotTree(root);

      const disk = overlay();
      const log = SegmentLog.open(disk, { dir: DIR });
      assert.deepEqual(log.corruption, []);
      assert.equal(log.lastLsn, 20);
      assert.equal(log.syncedLsn, 20);
      assertHistory(log, 1, 20);
      assert.deepEqual(disk.changedPaths(), [SEG], 'the open cut the torn tail of the segment');
      const fh = disk.open(SEG);
      const cutSize = disk.size(fh);
      disk.close(fh);
      assert.ok(cutSize < cleanSize, `cut at the end of the records (${cutSize}), before the zeros written ahead (${cleanSize})`);
      // The recovered log takes writes, in memory.
      log.write(history(21, 25));
      log.sync();
      log.close();
      const again = SegmentLog.open(disk, { dir: DIR });
      assert.deepEqual(again.corruption, []);
      assertHistory(again, 1, 25);
      again.close();

      assert.deepEqual(fs.readFileSync(segPath), tornBytes, 'the real segment keeps its torn bytes');
      const after = fs.statSync(segPath);
      assert.equal(after.size, tornStat.size);
      assert.equal(after.mtimeMs, tornStat.mtimeMs);
      assertRealUnchanged();
    });

    it('opening a clean log changes nothing', () => {
      writeRealLog();
      before = snapshotTree(root);
      const disk = overlay();
      const log = SegmentLog.open(disk, { dir: DIR });
      assert.deepEqual(log.corruption, []);
      assertHistory(log, 1, 20);
      log.close();
      assert.deepEqual(disk.changedPaths(), []);
      assert.equal(disk.realFilesOpen, 0, 'the closed log holds no descriptor');
      assertRealUnchanged();
    });

    it('creating a new log happens in memory', () => {
      const disk = overlay();
      const log = SegmentLog.open(disk, { dir: 'shard-9/log' });
      log.write(history(1, 3));
      log.sync();
      assertHistory(log, 1, 3);
      log.close();
      assert.deepEqual(disk.list('shard-9/log'), [segmentName(1)]);
      // The segment was made under a temporary name and renamed into place.
      assert.deepEqual(disk.changedPaths(), ['shard-9', 'shard-9/log', `shard-9/log/${segmentName(1)}`, `shard-9/log/${segmentName(1)}.tmp`]);
      assert.ok(!fs.existsSync(nodePath.join(root, 'shard-9')));
      assertRealUnchanged();
    });
  });

  describe('with ShardStorage', () => {
    const PAGE = 4096;
    const PAGES = 16;
    const slab = new Slab({ slotBytes: PAGE, slotCount: 256 });
    const options: ShardStorageOptions = { dir: 'shard-5', pageSize: PAGE, pageCount: PAGES, cacheBytesMax: 1 << 16, slab };
    const pageRecord = (lsn: number) => ({
      term: 1,
      kind: 1,
      payload: encodePageWrite(PAGE, [{ page: lsn % PAGES, data: new Uint8Array(PAGE).fill(lsn & 0xff) }]),
    });

    it('opens a replica with a checkpoint, a torn log tail and a leftover temporary, changing only the overlay', () => {
      const real = new RealDisk(root);
      const written = ShardStorage.open(real, options);
      written.log.write(Array.from({ length: 20 }, (_, k) => pageRecord(k + 1)));
      written.log.sync();
      for (const r of written.log.read(1, 20)) written.store.apply(r);
      written.store.checkpoint();
      written.log.write(Array.from({ length: 5 }, (_, k) => pageRecord(k + 21)));
      written.log.sync();
      written.close();
      real.closeAll();
      const seg = `shard-5/log/${segmentName(1)}`;
      fs.appendFileSync(nodePath.join(root, ...seg.split('/')), Buffer.from([9, 8, 7, 6, 5, 4, 3, 2, 1]));
      fs.writeFileSync(nodePath.join(root, ...`${seg}.tmp`.split('/')), 'half made');
      before = snapshotTree(root);

      const disk = overlay();
      const st = ShardStorage.open(disk, options);
      try {
        assert.deepEqual(st.log.corruption, []);
        assert.equal(st.log.lastLsn, 25);
        assert.equal(st.store.appliedLsn, 20);
        assert.deepEqual([...st.store.getPage(20 % PAGES)].slice(0, 4), [20, 20, 20, 20]);
      } finally {
        st.close();
      }
      assert.deepEqual(disk.changedPaths(), [seg, `${seg}.tmp`], 'the tail cut and the temporary removed');
      assert.ok(!disk.exists(`${seg}.tmp`));
      assert.ok(fs.existsSync(nodePath.join(root, ...`${seg}.tmp`.split('/'))));
      assertRealUnchanged();
    });
  });
});
