/**
 * OverlayDisk: a copy-on-write `Disk` over a real directory tree, for offline inspection.
 *
 * An inspection of a shard replica opens its files with the engine's own open and recovery code
 * (SegmentLog.open, ShardStorage.open, PageStore.open), so that what it reports is what a node
 * would see. That code writes: it cuts a torn log tail, removes leftover temporaries, renames,
 * writes metadata, creates directories, syncs. Over an OverlayDisk all of it happens in memory:
 * the real tree is only read, and `changedPaths` tells which paths the open would have changed.
 *
 * - Reads see the real files except where the overlay changed them. A real file is opened with
 *   O_RDONLY only; nothing on the real file system is ever written, truncated, renamed, removed,
 *   created, synced or made.
 * - The first write, append or truncate of a real file copies its bytes into memory (copy-up),
 *   bounded by `copyUpBytesMax`; an open with `truncate` or `create` of a missing file makes an
 *   in-memory file.
 * - The namespace is a tree of nodes. A directory node lists its real directory the first time it
 *   is looked into; from then on its entries are the overlay's: a rename moves a node (a real file
 *   or directory keeps reading from where it really is), a remove drops one (the real entry is
 *   hidden, not touched), `mkdirp` adds in-memory directories.
 * - `fdatasync` and `fsyncDir` make nothing durable (there is nothing to make durable); they
 *   check their handle or directory as RealDisk's would.
 * - The optional background calls (`fdatasyncAsync`, `removeAsync`, `removeTreeAsync`) are
 *   absent, so callers take their synchronous paths.
 *
 * The real tree must not change while an OverlayDisk is over it (a replica's directory while its
 * node is stopped): a directory's entries are read once. Not thread-safe: one owner.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { diskError, joinPath, openFileOf, parentDir, type Disk, type FileHandle, type OpenOptions } from './disk';
import { assert, errnoOf, StorageError } from './errors';
import { checkDiskBuffer, checkDiskOffset, checkDiskPath, DISK_OPEN_FILES_MAX, pathUnder } from './real-disk';
import { writeBytes, zeroTo } from './mem-bytes';

/** Default largest file an OverlayDisk holds in memory: as large as a log segment can be made. */
export const OVERLAY_COPY_UP_BYTES_MAX_DEFAULT = 256 * 1024 * 1024;

export interface OverlayDiskOptions {
  /**
   * Largest file held in memory, in bytes (default OVERLAY_COPY_UP_BYTES_MAX_DEFAULT): a write to
   * a larger real file fails rather than copy it up, and no write or truncate grows an in-memory
   * file past it. Both fail with StorageError('io_error'), errno 'EFBIG'.
   */
  copyUpBytesMax?: number;
  /** Most handles open at once (default DISK_OPEN_FILES_MAX); each holds at most one real descriptor. */
  openFilesMax?: number;
}

/** A file of the overlay's namespace. */
interface FileNode {
  kind: 'file';
  /** Disk path of the real file its bytes are read from; undefined once they are in memory. */
  real: string | undefined;
  /** Set for a real entry that is not a regular file or a link to one: what opening it fails with. */
  unopenable: string | undefined;
  /** In-memory content, buf[0, len), when `real` is undefined. */
  buf: Uint8Array;
  len: number;
}

/** A directory of the overlay's namespace. */
interface DirNode {
  kind: 'dir';
  /** Disk path of the real directory its entries are first read from; undefined for one made here. */
  real: string | undefined;
  /** Entries, read from the real directory when first needed. */
  entries: Map<string, OverlayNode> | undefined;
}

type OverlayNode = FileNode | DirNode;

interface OverlayHandle {
  node: FileNode;
  path: string;
  /** O_RDONLY descriptor of the real file, open while the node was read from it when opened. */
  fd: number | undefined;
}

function memoryFile(): FileNode {
  return { kind: 'file', real: undefined, unopenable: undefined, buf: new Uint8Array(0), len: 0 };
}

/**
 * A copy-on-write view of the directory tree at `root`: reads fall through to the real files,
 * every change stays in memory. See the file comment.
 */
export class OverlayDisk implements Disk {
  private readonly rootDir: string;
  private readonly copyUpBytesMax: number;
  private readonly openFilesMax: number;
  private readonly root: DirNode;
  private readonly files = new Map<FileHandle, OverlayHandle>();
  private nextHandle: FileHandle = 1;
  private readonly changed = new Set<string>();

  /**
   * `root` is the real directory the disk paths are relative to (resolved like RealDisk's root);
   * it must exist. Nothing under it is ever changed.
   */
  constructor(root: string, opts: OverlayDiskOptions = {}) {
    if (typeof root !== 'string' || root === '') {
      throw new StorageError('bad_request', 'OverlayDisk needs a root directory');
    }
    const copyUpBytesMax = opts.copyUpBytesMax ?? OVERLAY_COPY_UP_BYTES_MAX_DEFAULT;
    checkDiskOffset(copyUpBytesMax, 'copyUpBytesMax');
    const openFilesMax = opts.openFilesMax ?? DISK_OPEN_FILES_MAX;
    if (!Number.isSafeInteger(openFilesMax) || openFilesMax < 1) {
      throw new StorageError('bad_request', `openFilesMax must be a positive integer, got ${openFilesMax}`, { openFilesMax });
    }
    this.rootDir = nodePath.resolve(root);
    this.copyUpBytesMax = copyUpBytesMax;
    this.openFilesMax = openFilesMax;
    let st: fs.Stats;
    try {
      st = fs.statSync(this.rootDir);
    } catch (e) {
      throw this.ioError('stat', this.rootDir, e);
    }
    if (!st.isDirectory()) {
      throw new StorageError('io_error', `OverlayDisk root ${this.rootDir} is not a directory`, { errno: 'ENOTDIR', path: this.rootDir });
    }
    this.root = { kind: 'dir', real: '', entries: undefined };
  }

  // ---------------------------------------------------------------- Disk

  /**
   * Opens a file. A real file is opened read-only and read through until it is first changed; with
   * `truncate` (or `create` of a missing one) the file is an in-memory one from the start.
   */
  open(path: string, opts: OpenOptions = {}): FileHandle {
    checkDiskPath(path, false);
    if (this.files.size >= this.openFilesMax) {
      throw new StorageError('overloaded', `more than ${this.openFilesMax} open files`, { path });
    }
    const dir = this.parentDirOf(path, 'open');
    const entries = this.entriesOf(dir);
    const name = path.slice(path.lastIndexOf('/') + 1);
    let node = entries.get(name);
    if (node === undefined) {
      if (opts.create !== true) throw this.ioError('open', path, 'ENOENT');
      node = memoryFile();
      entries.set(name, node);
      this.changed.add(path);
    }
    if (node.kind === 'dir') throw this.ioError('open', path, 'EISDIR');
    if (opts.truncate === true && this.sizeOfNode(node) !== 0) {
      node.real = undefined;
      node.unopenable = undefined;
      node.buf = new Uint8Array(0);
      node.len = 0;
      this.changed.add(path);
    }
    let fd: number | undefined;
    if (node.real !== undefined) {
      if (node.unopenable !== undefined) throw this.ioError('open', path, node.unopenable);
      try {
        fd = fs.openSync(this.abs(node.real), 'r');
      } catch (e) {
        throw this.ioError('open', path, e);
      }
    }
    const fh = this.nextHandle++;
    this.files.set(fh, { node, path, fd });
    return fh;
  }

  /** Closes a handle and the real descriptor it holds, if any. */
  close(fh: FileHandle): void {
    const f = this.file(fh);
    this.files.delete(fh);
    if (f.fd === undefined) return;
    try {
      fs.closeSync(f.fd);
    } catch (e) {
      throw this.ioError('close', f.path, e);
    }
  }

  size(fh: FileHandle): number {
    const f = this.file(fh);
    if (f.node.real === undefined) return f.node.len;
    return this.realSize(f);
  }

  /** Writes in memory, copying a real file up first. */
  write(fh: FileHandle, data: Uint8Array, offset: number): void {
    const f = this.file(fh);
    checkDiskBuffer(data, 'data');
    checkDiskOffset(offset, 'offset');
    checkDiskOffset(offset + data.length, 'end');
    if (data.length === 0) return; // as on the real file system: nothing written, nothing grown
    const end = offset + data.length;
    this.checkGrowth(f, end, 'write');
    this.copyUp(f, undefined);
    writeBytes(f.node, data, offset, this.copyUpBytesMax);
    this.changed.add(f.path);
  }

  append(fh: FileHandle, data: Uint8Array): number {
    const offset = this.size(fh);
    this.write(fh, data, offset);
    return offset;
  }

  read(fh: FileHandle, buf: Uint8Array, offset: number): number {
    const f = this.file(fh);
    checkDiskBuffer(buf, 'buf');
    checkDiskOffset(offset, 'offset');
    const node = f.node;
    if (node.real === undefined) {
      const n = offset >= node.len ? 0 : Math.min(buf.length, node.len - offset);
      if (n > 0) buf.set(node.buf.subarray(offset, offset + n));
      return n;
    }
    const fd = this.fdOf(f);
    let done = 0;
    try {
      while (done < buf.length) {
        const n = fs.readSync(fd, buf, done, buf.length - done, offset + done);
        if (n === 0) break; // end of file
        done += n;
      }
    } catch (e) {
      throw this.ioError('read', f.path, e);
    }
    return done;
  }

  /** Nothing to make durable: checks the handle only. */
  fdatasync(fh: FileHandle): void {
    this.file(fh);
  }

  /**
   * Sets the length in memory. A real file is copied up only as far as the new length: cutting a
   * torn tail off a large file copies what stays. A call that leaves the length as it is changes
   * nothing and copies nothing.
   */
  truncate(fh: FileHandle, length: number): void {
    const f = this.file(fh);
    checkDiskOffset(length, 'length');
    const node = f.node;
    const size = this.size(fh);
    if (length === size) return;
    this.checkGrowth(f, length, 'truncate');
    this.copyUp(f, length);
    zeroTo(node, length, this.copyUpBytesMax);
    node.len = length;
    this.changed.add(f.path);
  }

  /** Moves the entry in the overlay's namespace (replacing `to`); the real entry stays where it is. */
  rename(from: string, to: string): void {
    checkDiskPath(from, false);
    checkDiskPath(to, false);
    const srcEntries = this.entriesOf(this.parentDirOf(from, 'rename', { to }));
    const srcName = from.slice(from.lastIndexOf('/') + 1);
    const node = srcEntries.get(srcName);
    if (node === undefined) throw this.ioError('rename', from, 'ENOENT', 'io_error', { to });
    const dstEntries = this.entriesOf(this.parentDirOf(to, 'rename', { to }));
    const dstName = to.slice(to.lastIndexOf('/') + 1);
    if (from === to) return;
    if (node.kind === 'dir' && to.startsWith(from + '/')) throw this.ioError('rename', from, 'EINVAL', 'io_error', { to });
    const existing = dstEntries.get(dstName);
    if (existing !== undefined) {
      if (existing.kind === 'dir' && node.kind === 'file') throw this.ioError('rename', from, 'EISDIR', 'io_error', { to });
      if (existing.kind === 'file' && node.kind === 'dir') throw this.ioError('rename', from, 'ENOTDIR', 'io_error', { to });
      if (existing.kind === 'dir' && this.entriesOf(existing).size > 0) {
        throw this.ioError('rename', from, 'ENOTEMPTY', 'io_error', { to });
      }
    }
    srcEntries.delete(srcName);
    dstEntries.set(dstName, node);
    this.changed.add(from);
    this.changed.add(to);
  }

  /** Nothing to make durable: fails as RealDisk's would when the directory does not exist. */
  fsyncDir(dir: string): void {
    checkDiskPath(dir, true);
    const node = this.resolve(dir);
    if (typeof node === 'string') {
      throw new StorageError('fsync_failed', `fsyncDir ${dir}: ${node}`, { errno: node, path: dir });
    }
  }

  /** Adds in-memory directories for the missing parts of `dir`. */
  mkdirp(dir: string): void {
    checkDiskPath(dir, true);
    if (dir === '') return;
    let d = this.root;
    let path = '';
    for (const name of dir.split('/')) {
      path = joinPath(path, name);
      const entries = this.entriesOf(d);
      let node = entries.get(name);
      if (node === undefined) {
        node = { kind: 'dir', real: undefined, entries: new Map() };
        entries.set(name, node);
        this.changed.add(path);
      }
      if (node.kind !== 'dir') throw this.ioError('mkdir', dir, 'ENOTDIR');
      d = node;
    }
  }

  /** The merged entries: the real ones not removed or renamed away, and the overlay's own. */
  list(dir: string): string[] {
    checkDiskPath(dir, true);
    const node = this.resolve(dir);
    if (node === 'ENOENT') return [];
    if (node === 'ENOTDIR' || node.kind !== 'dir') throw this.ioError('readdir', dir, 'ENOTDIR');
    return [...this.entriesOf(node).keys()].sort();
  }

  /** Drops the entry from the overlay's namespace (a real file is hidden, not removed). */
  remove(path: string): void {
    checkDiskPath(path, false);
    const entries = this.parentEntries(path, 'remove');
    if (entries === undefined) return;
    const name = path.slice(path.lastIndexOf('/') + 1);
    const node = entries.get(name);
    if (node === undefined) return;
    if (node.kind === 'dir') throw this.ioError('remove', path, 'EISDIR');
    entries.delete(name);
    this.changed.add(path);
  }

  /** Drops the entry and everything under it from the overlay's namespace. */
  removeTree(dir: string): void {
    checkDiskPath(dir, false);
    const entries = this.parentEntries(dir, 'removeTree');
    if (entries === undefined) return;
    const name = dir.slice(dir.lastIndexOf('/') + 1);
    if (!entries.delete(name)) return;
    this.changed.add(dir);
  }

  exists(path: string): boolean {
    checkDiskPath(path, true);
    return typeof this.resolve(path) !== 'string';
  }

  // ---------------------------------------------------------------- inspection

  /**
   * The disk paths the overlay changed, sorted: files written, truncated (to another length),
   * created, renamed (both names), removed, directories made or removed. What the calls made so
   * far would have changed on the real disk.
   */
  changedPaths(): string[] {
    return [...this.changed].sort();
  }

  /** Number of handles currently open. */
  get openFiles(): number {
    return this.files.size;
  }

  /** Number of real file descriptors currently held (at most one per open handle). */
  get realFilesOpen(): number {
    let n = 0;
    for (const f of this.files.values()) if (f.fd !== undefined) n++;
    return n;
  }

  /**
   * Closes every open handle and the real descriptors they hold (errors ignored), for the end of
   * an inspection. The overlay's changes stay; the disk can still be used.
   */
  closeAll(): void {
    for (const f of this.files.values()) {
      if (f.fd === undefined) continue;
      try {
        fs.closeSync(f.fd);
      } catch {
        // Ending: nothing more to do with a read-only descriptor that fails to close.
      }
    }
    this.files.clear();
  }

  // ---------------------------------------------------------------- internals

  private abs(path: string): string {
    return pathUnder(this.rootDir, path);
  }

  private file(fh: FileHandle): OverlayHandle {
    return openFileOf(this.files, fh);
  }

  /** The real descriptor of a handle whose node is still read from its real file. */
  private fdOf(f: OverlayHandle): number {
    assert(f.fd !== undefined, 'a handle of a file read from the real disk holds its descriptor', { path: f.path });
    return f.fd;
  }

  private realSize(f: OverlayHandle): number {
    const fd = this.fdOf(f);
    try {
      return fs.fstatSync(fd).size;
    } catch (e) {
      throw this.ioError('fstat', f.path, e);
    }
  }

  /** Size of a file node without a handle (a real one is stat'ed). */
  private sizeOfNode(node: FileNode): number {
    if (node.real === undefined) return node.len;
    if (node.unopenable !== undefined) return 0;
    try {
      return fs.statSync(this.abs(node.real)).size;
    } catch {
      return -1; // unknown: taken as not empty
    }
  }

  /** A write or truncate would run the file to `end`: past `copyUpBytesMax` it fails. */
  private checkGrowth(f: OverlayHandle, end: number, op: string): void {
    if (end <= this.copyUpBytesMax) return;
    throw new StorageError(
      'io_error',
      `${op} ${f.path}: ${end} bytes would exceed the ${this.copyUpBytesMax} an OverlayDisk holds in memory`,
      { errno: 'EFBIG', path: f.path, bytes: end, copyUpBytesMax: this.copyUpBytesMax },
    );
  }

  /**
   * Brings the bytes of a real file into memory: all of them, or the first `keepBytes` when
   * given. A file larger than `copyUpBytesMax` fails with io_error (errno EFBIG).
   */
  private copyUp(f: OverlayHandle, keepBytes: number | undefined): void {
    const node = f.node;
    if (node.real === undefined) return;
    const size = this.realSize(f);
    const keep = keepBytes === undefined ? size : Math.min(size, keepBytes);
    if (keep > this.copyUpBytesMax) {
      throw new StorageError(
        'io_error',
        `copy-up of ${f.path}: ${size} bytes, more than the ${this.copyUpBytesMax} an OverlayDisk holds in memory`,
        { errno: 'EFBIG', path: f.path, real: node.real, bytes: size, copyUpBytesMax: this.copyUpBytesMax },
      );
    }
    const fd = this.fdOf(f);
    const buf = new Uint8Array(keep);
    let done = 0;
    try {
      while (done < keep) {
        const n = fs.readSync(fd, buf, done, keep - done, done);
        if (n === 0) break; // shorter than it was a moment ago: what is left reads as zeros
        done += n;
      }
    } catch (e) {
      throw this.ioError('copy-up read', f.path, e);
    }
    node.buf = buf;
    node.len = keep;
    node.real = undefined;
  }

  /** The entries of the directory holding `path`: undefined when it does not exist, ENOTDIR when it is a file. */
  private parentEntries(path: string, op: string): Map<string, OverlayNode> | undefined {
    const dir = this.resolve(parentDir(path));
    if (dir === 'ENOENT') return undefined;
    if (dir === 'ENOTDIR' || dir.kind !== 'dir') throw this.ioError(op, path, 'ENOTDIR');
    return this.entriesOf(dir);
  }

  /** The entries of a directory node, read from its real directory the first time. */
  private entriesOf(dir: DirNode): Map<string, OverlayNode> {
    if (dir.entries !== undefined) return dir.entries;
    const entries = new Map<string, OverlayNode>();
    if (dir.real !== undefined) {
      const real = dir.real;
      let dirents: fs.Dirent[];
      try {
        dirents = fs.readdirSync(this.abs(real), { withFileTypes: true });
      } catch (e) {
        throw this.ioError('readdir', real, e);
      }
      for (const d of dirents) entries.set(d.name, this.realNode(joinPath(real, d.name), d));
    }
    dir.entries = entries;
    return entries;
  }

  /** The node of a real entry. A link is followed, as RealDisk's open and exists follow it. */
  private realNode(path: string, d: fs.Dirent): OverlayNode {
    if (d.isDirectory()) return { kind: 'dir', real: path, entries: undefined };
    const file: FileNode = { kind: 'file', real: path, unopenable: undefined, buf: new Uint8Array(0), len: 0 };
    if (d.isFile()) return file;
    try {
      const st = fs.statSync(this.abs(path));
      if (st.isDirectory()) return { kind: 'dir', real: path, entries: undefined };
      // A device, pipe or socket is not a file of the engine's; opening a pipe could block.
      if (!st.isFile()) file.unopenable = 'EINVAL';
    } catch (e) {
      file.unopenable = errnoOf(e); // a dangling link
    }
    return file;
  }

  /** The node at `path`, or why there is none: ENOENT, or ENOTDIR when a parent is a file. */
  private resolve(path: string): OverlayNode | 'ENOENT' | 'ENOTDIR' {
    let node: OverlayNode = this.root;
    if (path === '') return node;
    for (const name of path.split('/')) {
      if (node.kind !== 'dir') return 'ENOTDIR';
      const next: OverlayNode | undefined = this.entriesOf(node).get(name);
      if (next === undefined) return 'ENOENT';
      node = next;
    }
    return node;
  }

  /** The directory `path` is in; io_error ENOENT or ENOTDIR when it is missing or a file. */
  private parentDirOf(path: string, op: string, extra: Record<string, unknown> = {}): DirNode {
    const dir = this.resolve(parentDir(path));
    if (typeof dir === 'string') throw this.ioError(op, path, dir, 'io_error', extra);
    if (dir.kind !== 'dir') throw this.ioError(op, path, 'ENOTDIR', 'io_error', extra);
    return dir;
  }

  /** A StorageError for `op` on `path`; `cause` is an `fs` error or an errno. */
  private ioError(op: string, path: string, cause: unknown, code: 'io_error' | 'fsync_failed' = 'io_error', extra: Record<string, unknown> = {}): StorageError {
    return diskError(op, path, cause, code, extra);
  }
}
