/**
 * RealDisk: the `Disk` interface over the local file system with synchronous `fs` calls.
 *
 * A device's files are driven by one DeviceQueue on its own thread, where one `writeSync` per
 * batch is cheaper than a libuv round trip per operation (DESIGN.md, measured facts); the batch's
 * flush goes to the thread pool (`fdatasyncAsync`) so the thread serves requests meanwhile.
 * Every `fs` error becomes a `StorageError` with the OS code in `details.errno`.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { diskError, openFileOf, type Disk, type DiskSpace, type FileHandle, type OpenOptions } from './disk';
import { errnoOf, StorageError } from './errors';
import { makeDirectory } from './make-directory';

/** Longest disk path accepted, in UTF-16 code units (well below Linux PATH_MAX with any root). */
export const DISK_PATH_CHARS_MAX = 1024;
/** Longest single path segment (Linux NAME_MAX). */
export const DISK_SEGMENT_CHARS_MAX = 255;
/** Largest single write or read, in bytes (one call; batches larger than this are split by the caller). */
export const DISK_IO_BYTES_MAX = 256 * 1024 * 1024;
/** Largest file offset or length accepted (below 2^53 so that arithmetic stays exact). */
export const DISK_OFFSET_MAX = Number.MAX_SAFE_INTEGER;
/** Most files open at once on one disk. */
export const DISK_OPEN_FILES_MAX = 4096;
/** Bytes a background removal (`removeAsync`) frees per step. */
export const REMOVE_STEP_BYTES = 4 * 1024 * 1024;
/** Most background removals waiting on one disk; beyond, a file is removed at once. */
export const REMOVE_QUEUE_MAX = 1024;

/** IO counters kept by `RealDisk` and `SimDisk`. */
export interface DiskCounters {
  writes: number;
  reads: number;
  fdatasyncs: number;
  fsyncDirs: number;
  bytesWritten: number;
  bytesRead: number;
}

/** A fresh set of zeroed counters. */
export function newDiskCounters(): DiskCounters {
  return { writes: 0, reads: 0, fdatasyncs: 0, fsyncDirs: 0, bytesWritten: 0, bytesRead: 0 };
}

/**
 * Checks a disk path: relative, '/'-separated, no empty, '.' or '..' segments, bounded length.
 * The root is the empty string and is accepted only where `allowRoot` is set (directory calls).
 * Throws StorageError('bad_request') otherwise. Shared by `RealDisk` and `SimDisk`.
 */
export function checkDiskPath(path: string, allowRoot: boolean): void {
  if (typeof path !== 'string') {
    throw new StorageError('bad_request', 'disk path must be a string', { path });
  }
  if (path === '') {
    if (allowRoot) return;
    throw new StorageError('bad_request', 'empty disk path', { path });
  }
  if (path.length > DISK_PATH_CHARS_MAX) {
    throw new StorageError('bad_request', `disk path longer than ${DISK_PATH_CHARS_MAX} chars`, { path });
  }
  if (path.startsWith('/') || path.includes('\\') || path.includes('\0') || nodePath.isAbsolute(path)) {
    throw new StorageError('bad_request', `disk path must be relative with '/' separators: ${path}`, { path });
  }
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new StorageError('bad_request', `disk path has an empty, '.' or '..' segment: ${path}`, { path });
    }
    if (segment.length > DISK_SEGMENT_CHARS_MAX) {
      throw new StorageError('bad_request', `disk path segment longer than ${DISK_SEGMENT_CHARS_MAX} chars`, { path });
    }
  }
}

/** Checks a file offset or length: a non-negative safe integer. */
export function checkDiskOffset(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > DISK_OFFSET_MAX) {
    throw new StorageError('bad_request', `${what} must be a non-negative safe integer, got ${value}`, { [what]: value });
  }
}

/** Checks the size of one read or write buffer. */
export function checkDiskBuffer(buf: Uint8Array, what: string): void {
  if (!(buf instanceof Uint8Array)) {
    throw new StorageError('bad_request', `${what} must be a Uint8Array`);
  }
  if (buf.length > DISK_IO_BYTES_MAX) {
    throw new StorageError('too_large', `${what} of ${buf.length} bytes exceeds ${DISK_IO_BYTES_MAX}`, { bytes: buf.length });
  }
}

interface OpenFile {
  fd: number;
  path: string;
}

/**
 * The local file system under `rootDir`. Not thread-safe: one owner (a DeviceQueue) per instance.
 * Handles are small integers chosen by this class (not OS descriptors), so a stale handle can
 * never reach a file opened later under a reused descriptor.
 */
export class RealDisk implements Disk {
  /** IO counters since construction. */
  readonly counters: DiskCounters = newDiskCounters();
  private readonly rootDir: string;
  private readonly files = new Map<FileHandle, OpenFile>();
  private nextHandle: FileHandle = 1;
  /** Background removals (`removeAsync`) run one after another on this chain. */
  private removeChain: Promise<void> = Promise.resolve();
  private removesWaiting = 0;
  private readonly ioMarker: Int32Array | undefined;

  /**
   * `rootDir` must exist (or be creatable) and is where every disk path is resolved. With
   * `ioMarker` (one Int32 in shared memory), each blocking file call adds 1 to it while it runs:
   * another thread can then tell a thread waiting on its disk from one that hangs.
   */
  constructor(rootDir: string, opts: { ioMarker?: Int32Array } = {}) {
    if (typeof rootDir !== 'string' || rootDir === '') {
      throw new StorageError('bad_request', 'RealDisk needs a root directory');
    }
    this.rootDir = nodePath.resolve(rootDir);
    this.ioMarker = opts.ioMarker;
  }

  /** Runs a blocking file call, counted in `ioMarker` while it runs. */
  private blocking<T>(call: () => T): T {
    const m = this.ioMarker;
    if (m === undefined) return call();
    Atomics.add(m, 0, 1);
    try {
      return call();
    } finally {
      Atomics.sub(m, 0, 1);
    }
  }

  /** Number of handles currently open. */
  get openFiles(): number {
    return this.files.size;
  }

  open(path: string, opts: OpenOptions = {}): FileHandle {
    checkDiskPath(path, false);
    if (this.files.size >= DISK_OPEN_FILES_MAX) {
      throw new StorageError('overloaded', `more than ${DISK_OPEN_FILES_MAX} open files`, { path });
    }
    let flags = fs.constants.O_RDWR;
    if (opts.create === true) flags |= fs.constants.O_CREAT;
    if (opts.truncate === true) flags |= fs.constants.O_TRUNC;
    let fd: number;
    try {
      fd = this.blocking(() => fs.openSync(this.abs(path), flags, 0o644));
    } catch (e) {
      throw this.ioError('open', path, e);
    }
    const fh = this.nextHandle++;
    this.files.set(fh, { fd, path });
    return fh;
  }

  close(fh: FileHandle): void {
    const f = this.file(fh);
    this.files.delete(fh);
    try {
      this.blocking(() => fs.closeSync(f.fd));
    } catch (e) {
      throw this.ioError('close', f.path, e);
    }
  }

  size(fh: FileHandle): number {
    const f = this.file(fh);
    try {
      return this.blocking(() => fs.fstatSync(f.fd).size);
    } catch (e) {
      throw this.ioError('fstat', f.path, e);
    }
  }

  write(fh: FileHandle, data: Uint8Array, offset: number): void {
    const f = this.file(fh);
    checkDiskBuffer(data, 'data');
    checkDiskOffset(offset, 'offset');
    checkDiskOffset(offset + data.length, 'end');
    this.counters.writes++;
    let done = 0;
    try {
      while (done < data.length) {
        const n = this.blocking(() => fs.writeSync(f.fd, data, done, data.length - done, offset + done));
        if (n <= 0) {
          // A zero-byte write that is not an error would loop for ever; treat it as a device fault.
          throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
        }
        done += n;
      }
    } catch (e) {
      throw this.ioError('write', f.path, e);
    } finally {
      this.counters.bytesWritten += done;
    }
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
    this.counters.reads++;
    let done = 0;
    try {
      while (done < buf.length) {
        const n = this.blocking(() => fs.readSync(f.fd, buf, done, buf.length - done, offset + done));
        if (n === 0) break; // end of file
        done += n;
      }
    } catch (e) {
      throw this.ioError('read', f.path, e);
    } finally {
      this.counters.bytesRead += done;
    }
    return done;
  }

  fdatasync(fh: FileHandle): void {
    const f = this.file(fh);
    this.counters.fdatasyncs++;
    try {
      this.blocking(() => fs.fdatasyncSync(f.fd));
    } catch (e) {
      throw this.ioError('fdatasync', f.path, e, 'fsync_failed');
    }
  }

  fdatasyncAsync(fh: FileHandle): Promise<void> {
    const f = this.file(fh);
    this.counters.fdatasyncs++;
    return new Promise<void>((resolve, reject) => {
      fs.fdatasync(f.fd, (e) => (e ? reject(this.ioError('fdatasync', f.path, e, 'fsync_failed')) : resolve()));
    });
  }

  truncate(fh: FileHandle, length: number): void {
    const f = this.file(fh);
    checkDiskOffset(length, 'length');
    try {
      this.blocking(() => fs.ftruncateSync(f.fd, length));
    } catch (e) {
      throw this.ioError('ftruncate', f.path, e);
    }
  }

  rename(from: string, to: string): void {
    checkDiskPath(from, false);
    checkDiskPath(to, false);
    try {
      this.blocking(() => fs.renameSync(this.abs(from), this.abs(to)));
    } catch (e) {
      throw this.ioError('rename', from, e, 'io_error', { to });
    }
  }

  fsyncDir(dir: string): void {
    checkDiskPath(dir, true);
    this.counters.fsyncDirs++;
    let fd: number;
    try {
      fd = this.blocking(() => fs.openSync(this.abs(dir), 'r'));
    } catch (e) {
      throw this.ioError('open dir', dir, e, 'fsync_failed');
    }
    try {
      this.blocking(() => fs.fsyncSync(fd));
    } catch (e) {
      throw this.ioError('fsync dir', dir, e, 'fsync_failed');
    } finally {
      try {
        this.blocking(() => fs.closeSync(fd));
      } catch {
        // The fsync result is what matters; a failed close of a read-only directory descriptor loses nothing.
      }
    }
  }

  mkdirp(dir: string): void {
    checkDiskPath(dir, true);
    try {
      this.blocking(() => makeDirectory(this.abs(dir)));
    } catch (e) {
      throw this.ioError('mkdir', dir, e);
    }
  }

  list(dir: string): string[] {
    checkDiskPath(dir, true);
    try {
      return this.blocking(() => fs.readdirSync(this.abs(dir))).sort();
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return [];
      throw this.ioError('readdir', dir, e);
    }
  }

  remove(path: string): void {
    checkDiskPath(path, false);
    try {
      this.blocking(() => fs.rmSync(this.abs(path), { force: true }));
    } catch (e) {
      throw this.ioError('remove', path, e);
    }
  }

  /**
   * Removes a file in the thread pool, one file at a time per disk, and a large one in steps:
   * it is cut by REMOVE_STEP_BYTES at a time, each cut made durable (fsync) before the next,
   * then unlinked. On a file system that discards freed blocks at its journal commit (ext4's
   * `discard` mount option), freeing a 64 MiB segment at once made the next directory fsync of
   * the device's thread wait for one commit discarding all of it (16–50 ms measured); in steps,
   * a commit discards at most one step. With more than REMOVE_QUEUE_MAX removals waiting, the
   * file is removed at once instead (a bound, not a normal state).
   */
  removeAsync(path: string): Promise<void> {
    checkDiskPath(path, false);
    return this.inBackground(() => this.remove(path), () => this.removeInSteps(this.abs(path), path));
  }

  /** `removeTree` in the background: the files one after another, as `removeAsync`, then the directories. */
  removeTreeAsync(dir: string): Promise<void> {
    checkDiskPath(dir, false);
    return this.inBackground(() => this.removeTree(dir), () => this.removeTreeInSteps(this.abs(dir), dir));
  }

  /** Runs `job` after the background removals before it; `atOnce` instead when too many wait. */
  private inBackground(atOnce: () => void, job: () => Promise<void>): Promise<void> {
    if (this.removesWaiting >= REMOVE_QUEUE_MAX) {
      atOnce();
      return Promise.resolve();
    }
    this.removesWaiting++;
    const done = this.removeChain.then(job);
    // The next removal starts when this one has settled, whatever its outcome.
    this.removeChain = done.then(
      () => void this.removesWaiting--,
      () => void this.removesWaiting--,
    );
    return done;
  }

  private async removeTreeInSteps(abs: string, path: string): Promise<void> {
    let st: fs.Stats;
    try {
      st = await fs.promises.lstat(abs);
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return;
      throw this.ioError('removeTree', path, e);
    }
    // A link (to a directory too) is removed, never walked: what it points to is not ours.
    if (st.isFile()) return this.removeInSteps(abs, path);
    if (!st.isDirectory()) return this.unlink(abs, path);
    let entries: fs.Dirent[];
    try {
      entries = await fs.promises.readdir(abs, { withFileTypes: true });
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return;
      throw this.ioError('removeTree', path, e);
    }
    for (const entry of entries) {
      const child = nodePath.join(abs, entry.name);
      if (entry.isDirectory()) await this.removeTreeInSteps(child, `${path}/${entry.name}`);
      else if (entry.isFile()) await this.removeInSteps(child, `${path}/${entry.name}`);
      // A link or another special file: removed, never followed.
      else await this.unlink(child, `${path}/${entry.name}`);
    }
    try {
      await fs.promises.rmdir(abs);
    } catch (e) {
      if (errnoOf(e) !== 'ENOENT') throw this.ioError('removeTree', path, e);
    }
  }

  private async removeInSteps(abs: string, path: string): Promise<void> {
    let fh: fs.promises.FileHandle;
    try {
      // Never through a symbolic link: the link is what goes, not what it points to.
      fh = await fs.promises.open(abs, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW);
    } catch (e) {
      const errno = errnoOf(e);
      if (errno === 'ENOENT') return;
      // A link, a file we may not write or a directory: no cutting, the unlink decides.
      if (errno === 'ELOOP' || errno === 'EACCES' || errno === 'EPERM' || errno === 'EISDIR') return this.unlink(abs, path);
      throw this.ioError('remove', path, e);
    }
    try {
      let size = (await fh.stat()).size;
      while (size > REMOVE_STEP_BYTES) {
        size -= REMOVE_STEP_BYTES;
        await fh.truncate(size);
        await fh.sync();
      }
    } catch (e) {
      throw this.ioError('remove', path, e);
    } finally {
      await fh.close().catch(() => undefined);
    }
    await this.unlink(abs, path);
  }

  private unlink(abs: string, path: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      fs.unlink(abs, (e) => (e && errnoOf(e) !== 'ENOENT' ? reject(this.ioError('remove', path, e)) : resolve()));
    });
  }

  removeTree(dir: string): void {
    checkDiskPath(dir, false);
    try {
      this.blocking(() => fs.rmSync(this.abs(dir), { recursive: true, force: true }));
    } catch (e) {
      throw this.ioError('removeTree', dir, e);
    }
  }

  exists(path: string): boolean {
    checkDiskPath(path, true);
    return this.blocking(() => fs.existsSync(this.abs(path)));
  }

  bytesWritten(): number {
    return this.counters.bytesWritten;
  }

  space(): DiskSpace {
    try {
      const st = this.blocking(() => fs.statfsSync(this.rootDir));
      return { freeBytes: st.bavail * st.bsize, sizeBytes: st.blocks * st.bsize };
    } catch (e) {
      throw diskError('statfs', this.rootDir, e);
    }
  }

  /** Closes every open handle (errors ignored); for shutdown and tests. */
  closeAll(): void {
    for (const f of this.files.values()) {
      try {
        fs.closeSync(f.fd);
      } catch {
        // Shutting down: nothing more to do with a descriptor that fails to close.
      }
    }
    this.files.clear();
  }

  private abs(path: string): string {
    return pathUnder(this.rootDir, path);
  }

  private file(fh: FileHandle): OpenFile {
    return openFileOf(this.files, fh);
  }

  private ioError(op: string, path: string, cause: unknown, code: 'io_error' | 'fsync_failed' = 'io_error', extra: Record<string, unknown> = {}): StorageError {
    return diskError(op, path, cause, code, extra);
  }
}

/** The real path of disk path `path` under `rootDir` (`path` checked by checkDiskPath). */
export function pathUnder(rootDir: string, path: string): string {
  return path === '' ? rootDir : nodePath.join(rootDir, ...path.split('/'));
}
