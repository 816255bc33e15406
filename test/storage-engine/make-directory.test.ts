/** makeDirectory: `mkdir -p` that ends with the OS's error, where Node's recursive mkdir spins. */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeDirectory } from '../../storage-engine/make-directory';

describe('storage-engine/make-directory', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-mkdir-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('creates the missing parents, and accepts a directory that is already there', () => {
    const deep = path.join(root, 'a', 'b', 'c');
    makeDirectory(deep);
    assert.ok(fs.statSync(deep).isDirectory());
    makeDirectory(deep);
    makeDirectory(path.join(root, 'a'));
    assert.deepEqual(fs.readdirSync(path.join(root, 'a')), ['b']);
  });

  it('resolves a relative path against the working directory', () => {
    const cwd = process.cwd();
    process.chdir(root);
    try {
      makeDirectory('x/y');
    } finally {
      process.chdir(cwd);
    }
    assert.ok(fs.statSync(path.join(root, 'x', 'y')).isDirectory());
  });

  it('refuses with ENOTDIR when the path or one of its parents is a file, creating nothing', () => {
    const file = path.join(root, 'file');
    fs.writeFileSync(file, 'x');
    assert.throws(() => makeDirectory(file), (e: NodeJS.ErrnoException) => e.code === 'ENOTDIR' && e.path === file);
    assert.throws(() => makeDirectory(path.join(file, 'sub', 'dir')), (e: NodeJS.ErrnoException) => e.code === 'ENOTDIR' && e.path === file);
    assert.deepEqual(fs.readdirSync(root), ['file']);
  });

  it('ends with the error of mkdir where the parent exists and mkdir answers ENOENT (procfs), where Node’s recursive mkdir loops', function () {
    if (!fs.existsSync('/proc/self')) this.skip();
    assert.throws(() => makeDirectory('/proc/strata-no-such-dir/data'), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.path === '/proc/strata-no-such-dir');
  });

  it('reports the error of the directory that could not be made (no permission)', function () {
    if (process.getuid?.() === 0) {
      // root may write anywhere; a read-only file system stands in for a missing permission
      assert.throws(() => makeDirectory('/sys/strata-no-such-dir/x'), (e: NodeJS.ErrnoException) => typeof e.code === 'string' && e.path === '/sys/strata-no-such-dir');
      return;
    }
    const locked = path.join(root, 'locked');
    fs.mkdirSync(locked, { mode: 0o500 });
    assert.throws(() => makeDirectory(path.join(locked, 'x', 'y')), (e: NodeJS.ErrnoException) => e.code === 'EACCES' && e.path === path.join(locked, 'x'));
  });
});
