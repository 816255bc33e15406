/** SimDisk: the power-cut durability model and each injected fault, checked precisely. */
import { strict as assert } from 'node:assert';
import { SimDisk, SimulatedCrash } from '../../storage-engine/sim-disk';
import { expectStorageError } from '../support/expect';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** Creates `path` with `content`, fully durable (data synced, parent directory synced). */
function durableFile(disk: SimDisk, path: string, content: string): void {
  const fh = disk.open(path, { create: true, truncate: true });
  disk.write(fh, bytes(content), 0);
  disk.fdatasync(fh);
  disk.close(fh);
  const i = path.lastIndexOf('/');
  disk.fsyncDir(i < 0 ? '' : path.slice(0, i));
}

describe('SimDisk power-cut model', () => {
  it('loses an unsynced write', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'old');
    const fh = disk.open('f');
    disk.write(fh, bytes('NEW!'), 0);
    assert.equal(text(disk.fileBytes('f')), 'NEW!');
    assert.equal(text(disk.durableBytes('f')), 'old');
    disk.powerCut();
    assert.equal(text(disk.fileBytes('f')), 'old');
  });

  it('keeps a synced write', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'old');
    const fh = disk.open('f');
    disk.write(fh, bytes('NEW!'), 0);
    disk.fdatasync(fh);
    disk.append(fh, bytes('-lost'));
    disk.powerCut();
    assert.equal(text(disk.fileBytes('f')), 'NEW!');
  });

  it('loses an unsynced truncate', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'abcdef');
    const fh = disk.open('f');
    disk.truncate(fh, 2);
    disk.powerCut();
    assert.equal(text(disk.fileBytes('f')), 'abcdef');
  });

  it('a file created but whose directory was not fsync\'d vanishes, even with its data synced', () => {
    const disk = new SimDisk();
    disk.mkdirp('d');
    disk.fsyncDir('');
    const fh = disk.open('d/f', { create: true });
    disk.write(fh, bytes('data'), 0);
    disk.fdatasync(fh);
    assert.equal(disk.exists('d/f'), true);
    disk.powerCut();
    assert.equal(disk.exists('d/f'), false);
    assert.deepEqual(disk.list('d'), []);
    assert.equal(disk.exists('d'), true);
  });

  it('a directory created by mkdirp vanishes unless its parent was fsync\'d', () => {
    const disk = new SimDisk();
    disk.mkdirp('a/b');
    disk.fsyncDir('a'); // b is durable in a, but a itself is not durable in the root
    disk.powerCut();
    assert.equal(disk.exists('a'), false);
    disk.mkdirp('a/b');
    disk.fsyncDir('');
    disk.fsyncDir('a');
    disk.powerCut();
    assert.equal(disk.exists('a/b'), true);
  });

  it('a rename not fsync\'d reverts; once fsync\'d it stays', () => {
    const disk = new SimDisk();
    durableFile(disk, 'target', 'old');
    durableFile(disk, 'tmp', 'new');
    disk.rename('tmp', 'target');
    assert.equal(text(disk.fileBytes('target')), 'new');
    disk.powerCut();
    assert.equal(text(disk.fileBytes('target')), 'old');
    assert.equal(text(disk.fileBytes('tmp')), 'new');
    disk.rename('tmp', 'target');
    disk.fsyncDir('');
    disk.powerCut();
    assert.equal(text(disk.fileBytes('target')), 'new');
    assert.equal(disk.exists('tmp'), false);
  });

  it('a remove not fsync\'d reverts, with the file\'s durable content', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'keep');
    disk.remove('f');
    disk.removeTree('nothing');
    assert.equal(disk.exists('f'), false);
    disk.powerCut();
    assert.equal(text(disk.fileBytes('f')), 'keep');
  });

  it('removeTree not fsync\'d reverts the whole tree', () => {
    const disk = new SimDisk();
    disk.mkdirp('t/u');
    disk.fsyncDir('');
    disk.fsyncDir('t');
    durableFile(disk, 't/u/f', 'x');
    disk.removeTree('t');
    disk.powerCut();
    assert.equal(text(disk.fileBytes('t/u/f')), 'x');
  });

  it('invalidates every open handle', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'x');
    const fh = disk.open('f');
    disk.powerCut();
    expectStorageError(() => disk.size(fh), 'io_error', 'EBADF');
    expectStorageError(() => disk.write(fh, bytes('y'), 0), 'io_error', 'EBADF');
    const fh2 = disk.open('f');
    assert.notEqual(fh2, fh);
    assert.equal(disk.size(fh2), 1);
  });

  it('tear keeps exactly keepBytes of the last write on top of the durable content', () => {
    const disk = new SimDisk();
    durableFile(disk, 'log', 'AAAA');
    const fh = disk.open('log');
    disk.append(fh, bytes('first')); // unsynced and not the last write: lost
    disk.append(fh, bytes('0123456789'));
    const report = disk.powerCut({ tear: { path: 'log', keepBytes: 3 } });
    assert.equal(report.tornBytes, 3);
    // The second append was at offset 9; the lost first append leaves zeros in between.
    const got = disk.fileBytes('log');
    assert.equal(got.length, 12);
    assert.equal(text(got.subarray(0, 4)), 'AAAA');
    assert.deepEqual([...got.subarray(4, 9)], [0, 0, 0, 0, 0]);
    assert.equal(text(got.subarray(9)), '012');
    // The torn bytes reached the platter: they survive a second power cut.
    disk.powerCut();
    assert.equal(disk.fileBytes('log').length, 12);
  });

  it('tear of an overwrite inside the durable content changes only keepBytes bytes', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'abcdefgh');
    const fh = disk.open('f');
    disk.write(fh, bytes('XYZW'), 2);
    disk.powerCut({ tear: { path: 'f', keepBytes: 2 } });
    assert.equal(text(disk.fileBytes('f')), 'abXYefgh');
  });

  it('tear with keepBytes past the write keeps the whole write; tear of a vanished file does nothing', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', '');
    const fh = disk.open('f');
    disk.write(fh, bytes('abc'), 0);
    assert.equal(disk.powerCut({ tear: { path: 'f', keepBytes: 100 } }).tornBytes, 3);
    assert.equal(text(disk.fileBytes('f')), 'abc');
    const fh2 = disk.open('new', { create: true });
    disk.write(fh2, bytes('abc'), 0);
    assert.equal(disk.powerCut({ tear: { path: 'new', keepBytes: 2 } }).tornBytes, 0);
    assert.equal(disk.exists('new'), false);
    // No write since the last cut: nothing to tear.
    assert.equal(disk.powerCut({ tear: { path: 'f', keepBytes: 2 } }).tornBytes, 0);
    assert.equal(text(disk.fileBytes('f')), 'abc');
  });
});

describe('SimDisk faults', () => {
  it('failFsync once: the fsync throws, nothing becomes durable, the next one succeeds', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'old');
    const fh = disk.open('f');
    disk.write(fh, bytes('new'), 0);
    disk.failFsync();
    const e = expectStorageError(() => disk.fdatasync(fh), 'fsync_failed', 'EIO');
    assert.equal(e.details?.['path'], 'f');
    assert.equal(text(disk.durableBytes('f')), 'old');
    disk.fdatasync(fh);
    assert.equal(text(disk.durableBytes('f')), 'new');
  });

  it('with fsyncFailureDropsData, what a failed fdatasync left out is never written by a later one, unless written again', () => {
    const disk = new SimDisk({ fsyncFailureDropsData: true });
    durableFile(disk, 'f', 'old');
    const fh = disk.open('f');
    disk.write(fh, bytes('new!'), 0);
    disk.failFsync();
    expectStorageError(() => disk.fdatasync(fh), 'fsync_failed', 'EIO');
    assert.equal(text(disk.fileBytes('f')), 'new!', 'reads still see it');
    disk.fdatasync(fh);
    assert.deepEqual([...disk.durableBytes('f')], [...bytes('old'), 0], 'the later fdatasync succeeds and writes none of it');
    disk.write(fh, bytes('N'), 0);
    disk.write(fh, bytes('tail'), 4);
    disk.fdatasync(fh);
    assert.deepEqual([...disk.durableBytes('f')], [...bytes('Nld'), 0, ...bytes('tail')], 'bytes written again are written');
    disk.truncate(fh, 2);
    disk.truncate(fh, 4);
    disk.fdatasync(fh);
    assert.deepEqual([...disk.durableBytes('f')], [...bytes('Nl'), 0, 0], 'a cut and regrown range is zeros, written');
    disk.powerCut();
    assert.deepEqual([...disk.fileBytes('f')], [...bytes('Nl'), 0, 0]);
  });

  it('failFsync for good keeps failing, on files and directories', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'old');
    disk.failFsync({ times: Infinity });
    const fh = disk.open('f');
    disk.write(fh, bytes('new'), 0);
    for (let i = 0; i < 5; i++) expectStorageError(() => disk.fdatasync(fh), 'fsync_failed', 'EIO');
    const fh2 = disk.open('g', { create: true });
    expectStorageError(() => disk.fdatasync(fh2), 'fsync_failed', 'EIO');
    expectStorageError(() => disk.fsyncDir(''), 'fsync_failed', 'EIO');
    assert.equal(text(disk.durableBytes('f')), 'old');
    disk.powerCut();
    assert.equal(disk.exists('g'), false);
  });

  it('failFsync counts: times 2 fails twice, then succeeds', () => {
    const disk = new SimDisk();
    const fh = disk.open('f', { create: true });
    disk.failFsync({ times: 2 });
    expectStorageError(() => disk.fdatasync(fh), 'fsync_failed');
    expectStorageError(() => disk.fsyncDir(''), 'fsync_failed');
    disk.fdatasync(fh);
    disk.fsyncDir('');
  });

  it('failFsync on a directory leaves its entries not durable', () => {
    const disk = new SimDisk();
    const fh = disk.open('f', { create: true });
    disk.fdatasync(fh);
    disk.failFsync({ path: '' });
    expectStorageError(() => disk.fsyncDir(''), 'fsync_failed', 'EIO');
    disk.powerCut();
    assert.equal(disk.exists('f'), false);
  });

  it('failFsync with a path prefix only hits matching paths', () => {
    const disk = new SimDisk();
    disk.mkdirp('a');
    disk.mkdirp('b');
    const fa = disk.open('a/f', { create: true });
    const fb = disk.open('b/f', { create: true });
    disk.failFsync({ path: 'b/' });
    disk.fdatasync(fa);
    disk.fsyncDir('a');
    expectStorageError(() => disk.fdatasync(fb), 'fsync_failed');
    disk.fdatasync(fb);
  });

  it('failWrite throws io_error with the errno and writes nothing', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'abc');
    const fh = disk.open('f');
    disk.failWrite({ errno: 'ENOSPC' });
    const e = expectStorageError(() => disk.append(fh, bytes('def')), 'io_error', 'ENOSPC');
    assert.equal(e.details?.['path'], 'f');
    assert.equal(text(disk.fileBytes('f')), 'abc');
    disk.failWrite({ path: 'f', times: 2 });
    expectStorageError(() => disk.write(fh, bytes('X'), 0), 'io_error', 'EIO');
    expectStorageError(() => disk.write(fh, bytes('X'), 0), 'io_error', 'EIO');
    assert.equal(text(disk.fileBytes('f')), 'abc');
    disk.write(fh, bytes('X'), 0);
    assert.equal(text(disk.fileBytes('f')), 'Xbc');
  });

  it('failWrite with a path prefix spares other files; clearFaults removes pending rules', () => {
    const disk = new SimDisk();
    const a = disk.open('a', { create: true });
    const b = disk.open('b', { create: true });
    disk.failWrite({ path: 'b', times: Infinity });
    disk.write(a, bytes('1'), 0);
    expectStorageError(() => disk.write(b, bytes('1'), 0), 'io_error');
    disk.clearFaults();
    disk.write(b, bytes('1'), 0);
  });

  it('writes past fileBytesMax fail with ENOSPC', () => {
    const disk = new SimDisk({ fileBytesMax: 8 });
    const fh = disk.open('f', { create: true });
    disk.write(fh, new Uint8Array(8), 0);
    expectStorageError(() => disk.append(fh, new Uint8Array(1)), 'io_error', 'ENOSPC');
    expectStorageError(() => disk.truncate(fh, 9), 'io_error', 'ENOSPC');
    assert.equal(disk.size(fh), 8);
  });

  it('flipBits XORs 0xff into both the current and the durable content', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'abcd');
    disk.flipBits('f', 1, 2);
    const expected = bytes('abcd');
    expected[1] = expected[1]! ^ 0xff;
    expected[2] = expected[2]! ^ 0xff;
    assert.deepEqual(disk.fileBytes('f'), expected);
    assert.deepEqual(disk.durableBytes('f'), expected);
    disk.powerCut();
    assert.deepEqual(disk.fileBytes('f'), expected);
    disk.flipBits('f', 1, 2);
    assert.equal(text(disk.fileBytes('f')), 'abcd');
    expectStorageError(() => disk.flipBits('f', 3, 2), 'out_of_range');
    expectStorageError(() => disk.flipBits('missing', 0, 1), 'io_error', 'ENOENT');
  });

  it('zeroBytes writes zeros into both the current and the durable content', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'abcd');
    disk.zeroBytes('f', 1, 2);
    const expected = bytes('abcd');
    expected[1] = 0;
    expected[2] = 0;
    assert.deepEqual(disk.fileBytes('f'), expected);
    assert.deepEqual(disk.durableBytes('f'), expected);
    disk.powerCut();
    assert.deepEqual(disk.fileBytes('f'), expected);
    expectStorageError(() => disk.zeroBytes('f', 3, 2), 'out_of_range');
    expectStorageError(() => disk.zeroBytes('f', 1, 0), 'out_of_range');
    expectStorageError(() => disk.zeroBytes('missing', 0, 1), 'io_error', 'ENOENT');
  });

  it('crashAfter(n): n mutating calls happen, the next throws SimulatedCrash and does not happen', () => {
    const disk = new SimDisk();
    durableFile(disk, 'f', 'old');
    const before = disk.mutatingOps;
    disk.crashAfter(2);
    const fh = disk.open('f'); // not mutating
    disk.write(fh, bytes('new'), 0); // 1
    disk.read(fh, new Uint8Array(3), 0); // not mutating
    disk.append(fh, bytes('!')); // 2
    assert.throws(() => disk.fdatasync(fh), SimulatedCrash); // 3: does not happen
    assert.equal(disk.mutatingOps - before, 2);
    assert.equal(disk.crashed, true);
    assert.equal(text(disk.durableBytes('f')), 'old');
    // Every call now throws, mutating or not.
    assert.throws(() => disk.read(fh, new Uint8Array(1), 0), SimulatedCrash);
    assert.throws(() => disk.exists('f'), SimulatedCrash);
    assert.throws(() => disk.list(''), SimulatedCrash);
    assert.throws(() => disk.close(fh), SimulatedCrash);
    disk.powerCut();
    assert.equal(disk.crashed, false);
    assert.equal(text(disk.fileBytes('f')), 'old');
    // The crash is disarmed: calls work again.
    const fh2 = disk.open('f');
    disk.write(fh2, bytes('x'), 0);
    disk.fdatasync(fh2);
  });

  it('crashAfter(0) stops the very next mutating call, including open with create', () => {
    const disk = new SimDisk();
    disk.crashAfter(0);
    assert.throws(() => disk.open('f', { create: true }), SimulatedCrash);
    disk.powerCut();
    assert.equal(disk.exists('f'), false);
    disk.crashAfter(0);
    assert.throws(() => disk.mkdirp('d'), SimulatedCrash);
    disk.powerCut();
    assert.equal(disk.exists('d'), false);
  });

  it('counts each kind of mutating call once', () => {
    const disk = new SimDisk();
    const start = disk.mutatingOps;
    disk.mkdirp('d'); // 1
    const fh = disk.open('d/f', { create: true }); // 2
    disk.write(fh, bytes('a'), 0); // 3
    disk.append(fh, bytes('b')); // 4
    disk.truncate(fh, 1); // 5
    disk.fdatasync(fh); // 6
    disk.fsyncDir('d'); // 7
    disk.rename('d/f', 'd/g'); // 8
    disk.close(fh);
    const fh2 = disk.open('d/g', { truncate: true }); // 9
    disk.close(fh2);
    disk.open('d/g'); // not mutating
    disk.remove('d/g'); // 10
    disk.removeTree('d'); // 11
    assert.equal(disk.mutatingOps - start, 11);
  });

  it('a crash loop over a procedure sees every prefix of its effects', () => {
    // Procedure: create f, write, sync, fsyncDir. After a cut, f is durable only when all four ran.
    const run = (disk: SimDisk): void => {
      const fh = disk.open('f', { create: true }); // 1
      disk.write(fh, bytes('v'), 0); // 2
      disk.fdatasync(fh); // 3
      disk.fsyncDir(''); // 4
      disk.close(fh);
    };
    const probe = new SimDisk();
    const start = probe.mutatingOps;
    run(probe);
    const steps = probe.mutatingOps - start;
    assert.equal(steps, 4);
    for (let n = 0; n <= steps; n++) {
      const disk = new SimDisk();
      disk.crashAfter(n);
      let crashed = false;
      try {
        run(disk);
      } catch (e) {
        assert.ok(e instanceof SimulatedCrash);
        crashed = true;
      }
      assert.equal(crashed, n < steps);
      disk.powerCut();
      assert.equal(disk.exists('f'), n === steps, `after ${n} steps`);
    }
  });

  it('rejects bad fault arguments', () => {
    const disk = new SimDisk();
    expectStorageError(() => disk.failFsync({ times: 0 }), 'bad_request');
    expectStorageError(() => disk.failWrite({ times: -1 }), 'bad_request');
    expectStorageError(() => disk.crashAfter(-1), 'bad_request');
    expectStorageError(() => disk.powerCut({ tear: { path: '../x', keepBytes: 1 } }), 'bad_request');
  });
});
