/**
 * Disk conformance: the same cases run against RealDisk (in a fresh temporary directory) and SimDisk,
 * so that code tested on SimDisk behaves the same on the real file system.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { DISCARD_SUFFIX, discardFile, discardTree, removeDiscarded, removeInBackground, type Disk } from '../../storage-engine/disk';
import { StorageError } from '../../storage-engine/errors';
import { RealDisk, REMOVE_QUEUE_MAX, REMOVE_STEP_BYTES } from '../../storage-engine/real-disk';
import { SimDisk } from '../../storage-engine/sim-disk';
import { expectStorageError } from '../support/expect';
import { bytes, readAll, text } from '../support/disk';


function writeFile(disk: Disk, path: string, content: string): void {
  const fh = disk.open(path, { create: true, truncate: true });
  disk.write(fh, bytes(content), 0);
  disk.fdatasync(fh);
  disk.close(fh);
}

interface Fixture {
  disk: Disk;
  cleanup(): void;
}

const fixtures: Array<{ name: string; make: () => Fixture }> = [
  {
    name: 'RealDisk',
    make: () => {
      const dir = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-disk-test-'));
      const disk = new RealDisk(dir);
      return {
        disk,
        cleanup: () => {
          disk.closeAll();
          fs.rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  { name: 'SimDisk', make: () => ({ disk: new SimDisk(), cleanup: () => undefined }) },
];

for (const { name, make } of fixtures) {
  describe(`Disk conformance: ${name}`, () => {
    let fx: Fixture;
    let disk: Disk;
    beforeEach(() => {
      fx = make();
      disk = fx.disk;
    });
    afterEach(() => fx.cleanup());

    it('writes and reads at offsets, growing the file with zeros', () => {
      const fh = disk.open('a', { create: true });
      disk.write(fh, bytes('hello'), 0);
      disk.write(fh, bytes('XY'), 1);
      assert.equal(disk.size(fh), 5);
      disk.write(fh, bytes('!'), 8);
      assert.equal(disk.size(fh), 9);
      const buf = new Uint8Array(9);
      assert.equal(disk.read(fh, buf, 0), 9);
      assert.deepEqual([...buf], [...bytes('hXYlo'), 0, 0, 0, ...bytes('!')]);
      const mid = new Uint8Array(3);
      assert.equal(disk.read(fh, mid, 1), 3);
      assert.equal(text(mid), 'XYl');
      disk.close(fh);
    });

    it('returns a short read at end of file and 0 past it', () => {
      const fh = disk.open('a', { create: true });
      disk.write(fh, bytes('abcdef'), 0);
      const buf = new Uint8Array(10);
      assert.equal(disk.read(fh, buf, 4), 2);
      assert.equal(text(buf.subarray(0, 2)), 'ef');
      assert.equal(disk.read(fh, buf, 6), 0);
      assert.equal(disk.read(fh, buf, 100), 0);
      disk.close(fh);
    });

    it('append returns the offset it wrote at', () => {
      const fh = disk.open('log', { create: true });
      assert.equal(disk.append(fh, bytes('abc')), 0);
      assert.equal(disk.append(fh, bytes('defg')), 3);
      assert.equal(disk.append(fh, new Uint8Array(0)), 7);
      assert.equal(disk.size(fh), 7);
      disk.close(fh);
      assert.equal(readAll(disk, 'log'), 'abcdefg');
    });

    it('truncate shrinks and grows with zeros; open with truncate empties', () => {
      const fh = disk.open('t', { create: true });
      disk.write(fh, bytes('abcdef'), 0);
      disk.truncate(fh, 2);
      assert.equal(disk.size(fh), 2);
      disk.truncate(fh, 4);
      const buf = new Uint8Array(4);
      assert.equal(disk.read(fh, buf, 0), 4);
      assert.deepEqual([...buf], [...bytes('ab'), 0, 0]);
      disk.close(fh);
      const fh2 = disk.open('t', { create: true, truncate: true });
      assert.equal(disk.size(fh2), 0);
      disk.close(fh2);
    });

    it('rename replaces the target', () => {
      writeFile(disk, 'x', 'new');
      writeFile(disk, 'y', 'old');
      disk.rename('x', 'y');
      disk.fsyncDir('');
      assert.equal(disk.exists('x'), false);
      assert.equal(readAll(disk, 'y'), 'new');
      assert.deepEqual(disk.list(''), ['y']);
    });

    it('rename of a missing file fails with ENOENT', () => {
      expectStorageError(() => disk.rename('nope', 'y'), 'io_error', 'ENOENT');
    });

    it('lists entries sorted, [] for a missing directory', () => {
      disk.mkdirp('d/sub');
      for (const n of ['c', 'a', 'b10', 'b2']) writeFile(disk, `d/${n}`, n);
      assert.deepEqual(disk.list('d'), ['a', 'b10', 'b2', 'c', 'sub']);
      assert.deepEqual(disk.list('missing'), []);
      assert.deepEqual(disk.list(''), ['d']);
      disk.mkdirp('d/sub'); // exists already: no error
      disk.fsyncDir('d');
    });

    it('remove deletes a file and ignores a missing one', () => {
      writeFile(disk, 'f', 'x');
      disk.remove('f');
      assert.equal(disk.exists('f'), false);
      disk.remove('f');
      disk.remove('no/such/file');
    });

    it('removeTree deletes a directory with its content and ignores a missing one', () => {
      disk.mkdirp('t/a/b');
      writeFile(disk, 't/a/b/f', 'x');
      writeFile(disk, 't/g', 'y');
      writeFile(disk, 'keep', 'z');
      disk.removeTree('t');
      assert.equal(disk.exists('t'), false);
      assert.equal(disk.exists('t/a/b/f'), false);
      assert.deepEqual(disk.list(''), ['keep']);
      disk.removeTree('t');
    });

    it('exists reports files and directories', () => {
      assert.equal(disk.exists(''), true);
      assert.equal(disk.exists('d'), false);
      disk.mkdirp('d');
      writeFile(disk, 'd/f', '1');
      assert.equal(disk.exists('d'), true);
      assert.equal(disk.exists('d/f'), true);
      assert.equal(disk.exists('d/g'), false);
    });

    it('open without create on a missing file fails with ENOENT', () => {
      const e = expectStorageError(() => disk.open('missing'), 'io_error', 'ENOENT');
      assert.equal(e.details?.['path'], 'missing');
      expectStorageError(() => disk.open('no-dir/f', { create: true }), 'io_error', 'ENOENT');
    });

    it('rejects "..", absolute, empty and "." paths with bad_request', () => {
      for (const p of ['..', '../x', 'a/../b', 'a/..', '/etc/passwd', '', 'a//b', './a', 'a/']) {
        expectStorageError(() => disk.open(p, { create: true }), 'bad_request');
      }
      expectStorageError(() => disk.rename('a', '../b'), 'bad_request');
      expectStorageError(() => disk.mkdirp('../x'), 'bad_request');
      expectStorageError(() => disk.list('..'), 'bad_request');
      expectStorageError(() => disk.removeTree(''), 'bad_request');
      expectStorageError(() => disk.remove('x/../../y'), 'bad_request');
      expectStorageError(() => disk.exists('/'), 'bad_request');
      expectStorageError(() => disk.fsyncDir('..'), 'bad_request');
    });

    it('rejects negative and non-integer offsets', () => {
      const fh = disk.open('o', { create: true });
      expectStorageError(() => disk.write(fh, bytes('x'), -1), 'bad_request');
      expectStorageError(() => disk.read(fh, new Uint8Array(1), 0.5), 'bad_request');
      expectStorageError(() => disk.truncate(fh, -2), 'bad_request');
      disk.close(fh);
    });

    it('calls on a closed handle fail with EBADF', () => {
      const fh = disk.open('c', { create: true });
      disk.close(fh);
      expectStorageError(() => disk.write(fh, bytes('x'), 0), 'io_error', 'EBADF');
      expectStorageError(() => disk.size(fh), 'io_error', 'EBADF');
      expectStorageError(() => disk.close(fh), 'io_error', 'EBADF');
    });

    it('opening a directory as a file fails with EISDIR', () => {
      disk.mkdirp('dir');
      expectStorageError(() => disk.open('dir'), 'io_error', 'EISDIR');
    });

    it('fsyncDir of a missing directory fails with fsync_failed ENOENT', () => {
      const e = expectStorageError(() => disk.fsyncDir('missing'), 'fsync_failed', 'ENOENT');
      assert.equal(e.details?.['path'], 'missing');
    });

    it('counts writes, reads, syncs and bytes', () => {
      const c = (disk as RealDisk | SimDisk).counters;
      const fh = disk.open('n', { create: true });
      disk.write(fh, bytes('abcd'), 0);
      disk.append(fh, bytes('ef'));
      disk.read(fh, new Uint8Array(10), 0);
      disk.fdatasync(fh);
      disk.fsyncDir('');
      disk.close(fh);
      assert.deepEqual(c, { writes: 2, reads: 1, fdatasyncs: 1, fsyncDirs: 1, bytesWritten: 6, bytesRead: 6 });
    });
  });
}

describe('RealDisk specifics', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-realdisk-test-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('keeps files under the root directory', () => {
    const disk = new RealDisk(dir);
    disk.mkdirp('a/b');
    writeFile(disk, 'a/b/c', 'data');
    assert.equal(fs.readFileSync(nodePath.join(dir, 'a', 'b', 'c'), 'utf8'), 'data');
  });

  it('counts every blocking call in ioMarker while it runs, failed ones too', () => {
    const ioMarker = new Int32Array(new SharedArrayBuffer(4));
    const disk = new RealDisk(dir, { ioMarker });
    const nodeFs = require('node:fs') as Record<string, (...a: unknown[]) => unknown>;
    const calls = ['openSync', 'closeSync', 'fstatSync', 'writeSync', 'readSync', 'fdatasyncSync', 'fsyncSync', 'ftruncateSync', 'renameSync', 'mkdirSync', 'readdirSync', 'existsSync', 'rmSync'];
    const originals = new Map(calls.map((name) => [name, nodeFs[name]!]));
    // The marker's value inside each call.
    const seen: Record<string, number[]> = {};
    for (const name of calls) {
      nodeFs[name] = (...args: unknown[]) => {
        (seen[name] ??= []).push(Atomics.load(ioMarker, 0));
        if (name === 'fdatasyncSync') throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
        return originals.get(name)!(...args);
      };
    }
    try {
      disk.mkdirp('d');
      const fh = disk.open('d/f', { create: true });
      disk.write(fh, new Uint8Array(10), 0);
      disk.read(fh, new Uint8Array(10), 0);
      assert.equal(disk.size(fh), 10);
      disk.truncate(fh, 5);
      assert.throws(() => disk.fdatasync(fh), (e: StorageError) => e.code === 'fsync_failed');
      disk.close(fh);
      disk.rename('d/f', 'd/g');
      disk.fsyncDir('d');
      assert.deepEqual(disk.list('d'), ['g']);
      assert.equal(disk.exists('d/g'), true);
      disk.remove('d/g');
    } finally {
      for (const [name, original] of originals) nodeFs[name] = original;
    }
    assert.deepEqual(Object.keys(seen).sort(), [...calls].sort(), 'every call was made');
    for (const [name, values] of Object.entries(seen)) assert.ok(values.every((v) => v === 1), `${name}: ${values.join(',')}`);
    assert.equal(Atomics.load(ioMarker, 0), 0, 'none once they returned or threw');
  });

  it('removeAsync removes files off the thread, a large one in steps, one file after another', async () => {
    const disk = new RealDisk(dir);
    const sizes = [3 * REMOVE_STEP_BYTES + 5, 100, 2 * REMOVE_STEP_BYTES];
    sizes.forEach((size, i) => {
      const fh = disk.open(`f${i}`, { create: true });
      disk.write(fh, new Uint8Array(size).fill(i + 1), 0);
      disk.close(fh);
    });
    const existing = (): boolean[] => sizes.map((_, i) => fs.existsSync(nodePath.join(dir, `f${i}`)));
    // Every cut a removal makes, and whether it was made durable before the next.
    const cuts: string[] = [];
    const open = fs.promises.open;
    fs.promises.open = (async (...args: Parameters<typeof open>) => {
      const fh = await open(...args);
      const name = nodePath.basename(String(args[0]));
      const truncate = fh.truncate.bind(fh);
      const sync = fh.sync.bind(fh);
      fh.truncate = async (len?: number) => {
        cuts.push(`${name} ${len}`);
        return truncate(len);
      };
      fh.sync = async () => {
        cuts.push(`${name} sync`);
        return sync();
      };
      return fh;
    }) as typeof open;
    const seen: boolean[][] = [];
    let all: Array<Promise<void>>;
    try {
      all = sizes.map((_, i) => disk.removeAsync(`f${i}`).then(() => void (seen[i] = existing())));
      assert.deepEqual(existing(), [true, true, true], 'nothing removed on the calling thread');
      await Promise.all(all);
    } finally {
      fs.promises.open = open;
    }
    const S = REMOVE_STEP_BYTES;
    assert.deepEqual(cuts, [`f0 ${2 * S + 5}`, 'f0 sync', `f0 ${S + 5}`, 'f0 sync', 'f0 5', 'f0 sync', `f2 ${S}`, 'f2 sync']);
    assert.deepEqual(seen[0], [false, true, true], 'the second and third wait for the first');
    assert.deepEqual(seen[1], [false, false, true]);
    assert.deepEqual(existing(), [false, false, false]);
    await disk.removeAsync('never-there');
    disk.mkdirp('a-dir');
    await assert.rejects(disk.removeAsync('a-dir'), (e: unknown) => e instanceof StorageError && e.code === 'io_error' && e.details?.['errno'] === 'EISDIR');
    assert.ok(fs.existsSync(nodePath.join(dir, 'a-dir')));
  });

  it('removeTreeAsync removes a directory tree off the thread, after the removals before it', async () => {
    const disk = new RealDisk(dir);
    disk.mkdirp('t/a/b');
    const fh = disk.open('t/a/big', { create: true });
    disk.write(fh, new Uint8Array(2 * REMOVE_STEP_BYTES + 1).fill(1), 0);
    disk.close(fh);
    fs.writeFileSync(nodePath.join(dir, 't', 'a', 'b', 'small'), 'x');
    fs.writeFileSync(nodePath.join(dir, 'first'), 'x');
    let treeGoneWhenNextDone: boolean | undefined;
    const tree = disk.removeTreeAsync('t');
    const next = disk.removeAsync('first').then(() => void (treeGoneWhenNextDone = !fs.existsSync(nodePath.join(dir, 't'))));
    assert.ok(fs.existsSync(nodePath.join(dir, 't', 'a', 'big')), 'nothing removed on the calling thread');
    await Promise.all([tree, next]);
    assert.equal(treeGoneWhenNextDone, true, 'the removal queued after the tree waited for all of it');
    assert.deepEqual(fs.readdirSync(dir), []);
    await disk.removeTreeAsync('never-there');
    fs.writeFileSync(nodePath.join(dir, 'plain'), 'x');
    await disk.removeTreeAsync('plain');
    assert.deepEqual(fs.readdirSync(dir), [], 'a file given as the tree is removed too');
  });

  it('background removals remove a symbolic link (to a file or a directory), never what it points to', async () => {
    const disk = new RealDisk(dir);
    fs.writeFileSync(nodePath.join(dir, 'target'), 'keep me');
    disk.mkdirp('kept');
    fs.writeFileSync(nodePath.join(dir, 'kept', 'file'), 'keep me too');
    fs.symlinkSync(nodePath.join(dir, 'target'), nodePath.join(dir, 'link'));
    fs.symlinkSync(nodePath.join(dir, 'kept'), nodePath.join(dir, 'dirlink'));
    disk.mkdirp('t');
    fs.symlinkSync(nodePath.join(dir, 'target'), nodePath.join(dir, 't', 'link'));
    fs.symlinkSync(nodePath.join(dir, 'kept'), nodePath.join(dir, 't', 'dirlink'));
    await disk.removeAsync('link');
    await disk.removeTreeAsync('dirlink');
    await disk.removeTreeAsync('t');
    assert.deepEqual(fs.readdirSync(dir).sort(), ['kept', 'target']);
    assert.equal(fs.readFileSync(nodePath.join(dir, 'target'), 'utf8'), 'keep me');
    assert.equal(fs.readFileSync(nodePath.join(dir, 'kept', 'file'), 'utf8'), 'keep me too');
  });

  it('a file that cannot be opened for writing is unlinked without cutting', async () => {
    const disk = new RealDisk(dir);
    fs.writeFileSync(nodePath.join(dir, 'locked'), 'x'.repeat(REMOVE_STEP_BYTES + 1));
    const open = fs.promises.open;
    fs.promises.open = (async () => {
      throw Object.assign(new Error('EACCES: permission denied (test)'), { code: 'EACCES' });
    }) as typeof open;
    try {
      await disk.removeAsync('locked');
    } finally {
      fs.promises.open = open;
    }
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it(`removeAsync removes at once beyond ${REMOVE_QUEUE_MAX} waiting removals`, async () => {
    const disk = new RealDisk(dir);
    const n = REMOVE_QUEUE_MAX + 1;
    for (let i = 0; i < n; i++) fs.writeFileSync(nodePath.join(dir, `f${i}`), 'x');
    const all: Array<Promise<void>> = [];
    for (let i = 0; i < n; i++) all.push(disk.removeAsync(`f${i}`));
    assert.ok(fs.existsSync(nodePath.join(dir, 'f0')), 'the first waits its turn');
    assert.ok(!fs.existsSync(nodePath.join(dir, `f${n - 1}`)), 'the one beyond the bound is gone already');
    await Promise.all(all);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('wraps fs errors with errno, path and the original cause', () => {
    const disk = new RealDisk(dir);
    writeFile(disk, 'file', 'x');
    const e = expectStorageError(() => disk.list('file'), 'io_error', 'ENOTDIR');
    assert.equal(e.details?.['path'], 'file');
    assert.ok(e.cause instanceof Error);
    assert.equal((e.cause as NodeJS.ErrnoException).code, 'ENOTDIR');
  });
});

describe('discardFile, discardTree and removeInBackground', () => {
  it('rename away first; the removal, handed over after, runs in the background or at once', () => {
    const disk = new SimDisk();
    disk.mkdirp('d/s/x');
    const put = (path: string): void => {
      const fh = disk.open(path, { create: true });
      disk.close(fh);
    };
    put('d/f1');
    put('d/s/x/g');
    // A disk without background removal: the file is renamed, then removed when handed over; a
    // tree is removed at once (there is nothing to hand over).
    const f1 = discardFile(disk, 'd/f1');
    assert.deepEqual(f1, { path: `d/f1${DISCARD_SUFFIX}`, tree: false });
    assert.deepEqual(disk.list('d'), [`f1${DISCARD_SUFFIX}`, 's'], 'renamed, not removed yet');
    removeInBackground(disk, [f1]);
    assert.equal(discardTree(disk, 'd/s'), undefined);
    assert.deepEqual(disk.list('d'), [], 'removed at once');
    assert.equal(discardTree(disk, 'd/never-there'), undefined);

    const handed: string[] = [];
    const background = disk as Disk;
    background.removeAsync = (path: string): Promise<void> => {
      handed.push(`file ${path}`);
      return Promise.resolve();
    };
    background.removeTreeAsync = (path: string): Promise<void> => {
      handed.push(`tree ${path}`);
      return Promise.resolve();
    };
    put('d/f1');
    disk.mkdirp('d/s/x');
    const gone = [discardFile(disk, 'd/f1'), discardTree(disk, 'd/s')!];
    disk.mkdirp('d/s');
    gone.push(discardTree(disk, 'd/s')!);
    assert.deepEqual(handed, [], 'nothing removed before it is handed over');
    removeInBackground(disk, gone);
    assert.deepEqual(handed, [`file d/f1${DISCARD_SUFFIX}`, `tree d/s.0${DISCARD_SUFFIX}`, `tree d/s.1${DISCARD_SUFFIX}`]);
    assert.deepEqual(disk.list('d'), [`f1${DISCARD_SUFFIX}`, `s.0${DISCARD_SUFFIX}`, `s.1${DISCARD_SUFFIX}`]);
    // What a crash leaves is handed over again (each as a tree) when the directory is next opened.
    handed.length = 0;
    assert.equal(removeDiscarded(disk, 'd', ['keep', ...disk.list('d')]), 3);
    assert.deepEqual(handed, [`tree d/f1${DISCARD_SUFFIX}`, `tree d/s.0${DISCARD_SUFFIX}`, `tree d/s.1${DISCARD_SUFFIX}`]);
  });
});
