/**
 * SimDisk: an in-memory `Disk` for tests, with a durability model and fault injection.
 *
 * Durability model (what a power cut keeps):
 * - A file is an inode with `data` (what reads see now) and `durable` (what survives a power cut).
 *   `write`, `append` and `truncate` change `data`; `fdatasync` copies `data` to `durable`.
 * - A directory has current entries and durable entries (name → inode or directory). `open` with
 *   `create`, `rename`, `remove`, `removeTree` and `mkdirp` change current entries; `fsyncDir`
 *   copies a directory's current entries to its durable entries.
 * - `powerCut()` sets every directory's entries to its durable entries and every reachable inode's
 *   data to its durable content: a file whose creation was never made durable vanishes, a rename
 *   that was not fsync'd reverts, unsynced writes are lost. Open handles become invalid.
 *
 * Faults: `failFsync`, `failWrite`, `flipBits`, `zeroBytes`, `crashAfter` and a torn last write on `powerCut`.
 * A failed fsync leaves the data as it was (not durable); by default a later successful fsync of
 * the same file makes it durable again, which is kinder than some kernels: callers must treat a
 * failed fsync as fatal for the device, not retry it. With `fsyncFailureDropsData` the disk is
 * as unkind as Linux: what a failed fdatasync did not write is marked clean, and no later
 * fdatasync writes it (unless it is written again), while reads still return it until a power cut.
 *
 * Deterministic: no randomness, no clock. Not thread-safe.
 */
import { diskError, openFileOf, type Disk, type FileHandle, type OpenOptions } from './disk';
import { writeBytes, zeroTo } from './mem-bytes';
import { StorageError } from './errors';
import {
  checkDiskBuffer,
  checkDiskOffset,
  checkDiskPath,
  DISK_OPEN_FILES_MAX,
  newDiskCounters,
  type DiskCounters,
} from './real-disk';

/**
 * Thrown by every SimDisk call once a `crashAfter` budget is spent, until `powerCut()`.
 * Deliberately not a StorageError: code under test must not handle it as an ordinary IO error.
 */
export class SimulatedCrash extends Error {
  override readonly name = 'SimulatedCrash';
  constructor(message = 'simulated crash') {
    super(message);
  }
}

/** OS error codes a simulated write failure can carry. */
export type SimWriteErrno = 'EIO' | 'ENOSPC';

export interface SimDiskOptions {
  /** Largest size of one file in bytes; a write past it fails with ENOSPC (default 256 MiB). */
  fileBytesMax?: number;
  /**
   * As Linux after a writeback error: the bytes of a file that a failed fdatasync did not make
   * durable are marked clean, so later fdatasyncs of the file do not write them either (what the
   * device holds there stays what it held), until they are written again. Reads see them until
   * a power cut. Default false: a later fdatasync makes them durable.
   */
  fsyncFailureDropsData?: boolean;
}

/** Options of `failFsync`. */
export interface FailFsyncOptions {
  /** Only fsyncs of paths starting with this prefix fail (default: any path). */
  path?: string;
  /** How many matching fsyncs fail (default 1; `Infinity` = for good). */
  times?: number;
}

/** Options of `failWrite`. */
export interface FailWriteOptions {
  /** Only writes to paths starting with this prefix fail (default: any path). */
  path?: string;
  /** How many matching writes fail (default 1; `Infinity` = for good). */
  times?: number;
  /** The OS error code reported (default EIO). */
  errno?: SimWriteErrno;
}

/** Options of `powerCut`. */
export interface PowerCutOptions {
  /** Tear the last write made to `path`: its first `keepBytes` bytes reached the platter. */
  tear?: { path: string; keepBytes: number };
}

/** What `powerCut` did. */
export interface PowerCutReport {
  /** Bytes of the torn write applied on top of the durable content (0 if none, e.g. the file vanished). */
  tornBytes: number;
}

/** Default largest simulated file, in bytes. */
export const SIM_FILE_BYTES_MAX_DEFAULT = 256 * 1024 * 1024;

interface LastWrite {
  offset: number;
  bytes: Uint8Array;
}

interface Inode {
  /** Current content is buf[0, len); bytes past len are garbage and zeroed before use. */
  buf: Uint8Array;
  len: number;
  durable: Uint8Array;
  lastWrite: LastWrite | undefined;
  /**
   * With `fsyncFailureDropsData`: 1 for each byte a failed fdatasync left out and nothing wrote
   * since (no fdatasync writes it); undefined when there is none.
   */
  dropped?: Uint8Array;
}

interface Dir {
  entries: Map<string, Entry>;
  durable: Map<string, Entry>;
}

type Entry = { kind: 'file'; inode: Inode } | { kind: 'dir'; dir: Dir };

interface OpenSimFile {
  inode: Inode;
  path: string;
}

interface FaultRule {
  prefix: string | undefined;
  remaining: number;
  errno: string;
}

function newInode(): Inode {
  return { buf: new Uint8Array(0), len: 0, durable: new Uint8Array(0), lastWrite: undefined };
}

function newDir(): Dir {
  return { entries: new Map(), durable: new Map() };
}

function checkTimes(times: number): void {
  if (times !== Infinity && (!Number.isSafeInteger(times) || times < 1)) {
    throw new StorageError('bad_request', `times must be a positive integer or Infinity, got ${times}`);
  }
}

/** An in-memory disk with a power-cut durability model and fault injection; see the file comment. */
export class SimDisk implements Disk {
  /** IO counters since construction (failed calls included). */
  readonly counters: DiskCounters = newDiskCounters();
  private readonly fileBytesMax: number;
  private readonly fsyncFailureDropsData: boolean;
  private readonly root: Dir = newDir();
  private readonly files = new Map<FileHandle, OpenSimFile>();
  private nextHandle: FileHandle = 1;
  private fsyncFaults: FaultRule[] = [];
  private writeFaults: FaultRule[] = [];
  private mutatingOpsCount = 0;
  private crashBudget: number | undefined = undefined;
  private crashedFlag = false;

  constructor(opts: SimDiskOptions = {}) {
    const max = opts.fileBytesMax ?? SIM_FILE_BYTES_MAX_DEFAULT;
    checkDiskOffset(max, 'fileBytesMax');
    this.fileBytesMax = max;
    this.fsyncFailureDropsData = opts.fsyncFailureDropsData === true;
  }

  // ---------------------------------------------------------------- Disk

  open(path: string, opts: OpenOptions = {}): FileHandle {
    this.enter();
    checkDiskPath(path, false);
    const create = opts.create === true;
    const truncate = opts.truncate === true;
    if (create || truncate) this.mutate();
    if (this.files.size >= DISK_OPEN_FILES_MAX) {
      throw new StorageError('overloaded', `more than ${DISK_OPEN_FILES_MAX} open files`, { path });
    }
    const { dir, name } = this.parent(path, 'open');
    let entry = dir.entries.get(name);
    if (entry === undefined) {
      if (!create) throw this.ioError('open', path, 'ENOENT');
      entry = { kind: 'file', inode: newInode() };
      dir.entries.set(name, entry);
    }
    if (entry.kind === 'dir') throw this.ioError('open', path, 'EISDIR');
    if (truncate) entry.inode.len = 0;
    const fh = this.nextHandle++;
    this.files.set(fh, { inode: entry.inode, path });
    return fh;
  }

  close(fh: FileHandle): void {
    this.enter();
    this.file(fh);
    this.files.delete(fh);
  }

  size(fh: FileHandle): number {
    this.enter();
    return this.file(fh).inode.len;
  }

  write(fh: FileHandle, data: Uint8Array, offset: number): void {
    this.enter();
    const f = this.file(fh);
    checkDiskBuffer(data, 'data');
    checkDiskOffset(offset, 'offset');
    this.doWrite(f, data, offset, 'write');
  }

  append(fh: FileHandle, data: Uint8Array): number {
    this.enter();
    const f = this.file(fh);
    checkDiskBuffer(data, 'data');
    const offset = f.inode.len;
    this.doWrite(f, data, offset, 'append');
    return offset;
  }

  read(fh: FileHandle, buf: Uint8Array, offset: number): number {
    this.enter();
    const f = this.file(fh);
    checkDiskBuffer(buf, 'buf');
    checkDiskOffset(offset, 'offset');
    this.counters.reads++;
    const inode = f.inode;
    const n = offset >= inode.len ? 0 : Math.min(buf.length, inode.len - offset);
    if (n > 0) buf.set(inode.buf.subarray(offset, offset + n));
    this.counters.bytesRead += n;
    return n;
  }

  fdatasync(fh: FileHandle): void {
    this.enter();
    const f = this.file(fh);
    this.mutate();
    this.counters.fdatasyncs++;
    const inode = f.inode;
    try {
      this.checkFault(this.fsyncFaults, f.path, 'fdatasync', 'fsync_failed');
    } catch (e) {
      if (this.fsyncFailureDropsData) this.dropUnsynced(inode);
      throw e;
    }
    const durable = inode.buf.slice(0, inode.len);
    const dropped = inode.dropped;
    if (dropped !== undefined) {
      // Marked clean by a failed fdatasync: the device keeps what it had there (zeros past it).
      for (let i = 0; i < Math.min(dropped.length, durable.length); i++) {
        if (dropped[i] === 1) durable[i] = i < inode.durable.length ? inode.durable[i]! : 0;
      }
    }
    inode.durable = durable;
  }

  /** A failed fdatasync of `inode`: its bytes that differ from the durable content are marked clean. */
  private dropUnsynced(inode: Inode): void {
    const len = inode.len;
    const dropped = new Uint8Array(Math.max(len, inode.dropped?.length ?? 0));
    if (inode.dropped !== undefined) dropped.set(inode.dropped);
    for (let i = 0; i < len; i++) {
      if (i >= inode.durable.length || inode.buf[i] !== inode.durable[i]) dropped[i] = 1;
    }
    inode.dropped = dropped;
  }

  /** Bytes [from, to) of `inode` were written (or cut): none of them is marked clean any more. */
  private undrop(inode: Inode, from: number, to: number): void {
    const dropped = inode.dropped;
    if (dropped !== undefined && from < dropped.length) dropped.fill(0, from, Math.min(to, dropped.length));
  }

  truncate(fh: FileHandle, length: number): void {
    this.enter();
    const f = this.file(fh);
    checkDiskOffset(length, 'length');
    this.mutate();
    if (length > this.fileBytesMax) throw this.ioError('truncate', f.path, 'ENOSPC');
    const inode = f.inode;
    zeroTo(inode, length, this.fileBytesMax);
    this.undrop(inode, Math.min(length, inode.len), Number.MAX_SAFE_INTEGER);
    inode.len = length;
  }

  rename(from: string, to: string): void {
    this.enter();
    checkDiskPath(from, false);
    checkDiskPath(to, false);
    this.mutate();
    const src = this.parent(from, 'rename');
    const entry = src.dir.entries.get(src.name);
    if (entry === undefined) throw this.ioError('rename', from, 'ENOENT', { to });
    const dst = this.parent(to, 'rename');
    if (from === to) return;
    if (entry.kind === 'dir' && to.startsWith(from + '/')) throw this.ioError('rename', from, 'EINVAL', { to });
    const existing = dst.dir.entries.get(dst.name);
    if (existing !== undefined) {
      if (existing.kind === 'dir' && entry.kind === 'file') throw this.ioError('rename', from, 'EISDIR', { to });
      if (existing.kind === 'file' && entry.kind === 'dir') throw this.ioError('rename', from, 'ENOTDIR', { to });
      if (existing.kind === 'dir' && existing.dir.entries.size > 0) throw this.ioError('rename', from, 'ENOTEMPTY', { to });
    }
    src.dir.entries.delete(src.name);
    dst.dir.entries.set(dst.name, entry);
  }

  fsyncDir(dir: string): void {
    this.enter();
    checkDiskPath(dir, true);
    this.mutate();
    this.counters.fsyncDirs++;
    const entry = this.lookup(dir, 'fsyncDir');
    if (entry === undefined || entry.kind !== 'dir') {
      // Same code as RealDisk, whose open of the directory for fsync fails.
      const errno = entry === undefined ? 'ENOENT' : 'ENOTDIR';
      throw new StorageError('fsync_failed', `fsyncDir ${dir}: ${errno}`, { errno, path: dir });
    }
    const d = entry.dir;
    this.checkFault(this.fsyncFaults, dir, 'fsyncDir', 'fsync_failed');
    d.durable = new Map(d.entries);
  }

  mkdirp(dir: string): void {
    this.enter();
    checkDiskPath(dir, true);
    this.mutate();
    if (dir === '') return;
    let d = this.root;
    for (const name of dir.split('/')) {
      let entry = d.entries.get(name);
      if (entry === undefined) {
        entry = { kind: 'dir', dir: newDir() };
        d.entries.set(name, entry);
      }
      if (entry.kind !== 'dir') throw this.ioError('mkdir', dir, 'ENOTDIR');
      d = entry.dir;
    }
  }

  list(dir: string): string[] {
    this.enter();
    checkDiskPath(dir, true);
    const entry = this.lookup(dir, 'list');
    if (entry === undefined) return [];
    if (entry.kind !== 'dir') throw this.ioError('readdir', dir, 'ENOTDIR');
    return [...entry.dir.entries.keys()].sort();
  }

  remove(path: string): void {
    this.enter();
    checkDiskPath(path, false);
    this.mutate();
    const p = this.parentOrUndefined(path);
    if (p === undefined) return;
    const entry = p.dir.entries.get(p.name);
    if (entry === undefined) return;
    if (entry.kind === 'dir') throw this.ioError('remove', path, 'EISDIR');
    p.dir.entries.delete(p.name);
  }

  removeTree(dir: string): void {
    this.enter();
    checkDiskPath(dir, false);
    this.mutate();
    const p = this.parentOrUndefined(dir);
    if (p === undefined) return;
    p.dir.entries.delete(p.name);
  }

  exists(path: string): boolean {
    this.enter();
    checkDiskPath(path, true);
    return this.lookup(path, 'exists') !== undefined;
  }

  // ---------------------------------------------------------------- faults and inspection

  /** Number of mutating calls that took effect (or failed with an IO fault) since construction. */
  get mutatingOps(): number {
    return this.mutatingOpsCount;
  }

  /** True once a `crashAfter` budget was spent and until `powerCut()`. */
  get crashed(): boolean {
    return this.crashedFlag;
  }

  /** Number of handles currently open. */
  get openFiles(): number {
    return this.files.size;
  }

  /**
   * The next `ops` mutating calls (write, append, truncate, fdatasync, fsyncDir, rename, remove,
   * removeTree, mkdirp, open with create or truncate) happen; the one after does not and throws
   * `SimulatedCrash`, and so does every call after it until `powerCut()`.
   */
  crashAfter(ops: number): void {
    checkDiskOffset(ops, 'ops');
    this.crashBudget = ops;
  }

  /** The next matching fdatasync/fsyncDir throws StorageError('fsync_failed') and makes nothing durable. */
  failFsync(opts: FailFsyncOptions = {}): void {
    const times = opts.times ?? 1;
    checkTimes(times);
    this.fsyncFaults.push({ prefix: opts.path, remaining: times, errno: 'EIO' });
  }

  /** The next matching write/append throws StorageError('io_error') and writes nothing. */
  failWrite(opts: FailWriteOptions = {}): void {
    const times = opts.times ?? 1;
    checkTimes(times);
    const errno = opts.errno ?? 'EIO';
    if (errno !== 'EIO' && errno !== 'ENOSPC') {
      throw new StorageError('bad_request', `unsupported errno ${String(errno)}`);
    }
    this.writeFaults.push({ prefix: opts.path, remaining: times, errno });
  }

  /** Removes every pending `failFsync` and `failWrite` rule. */
  clearFaults(): void {
    this.fsyncFaults = [];
    this.writeFaults = [];
  }

  /**
   * Bit rot: XORs 0xFF into every byte of [offset, offset+length) of the file at `path`, in both its
   * current and its durable content (bytes past the end of either are skipped there).
   */
  flipBits(path: string, offset: number, length: number): void {
    this.damage('flipBits', path, offset, length, (bytes, from, to) => {
      for (let i = from; i < to; i++) bytes[i] = bytes[i]! ^ 0xff;
    });
  }

  /**
   * Zeros over [offset, offset+length) of the file at `path`, in both its current and its durable
   * content (bytes past the end of either are skipped there): what a write that never reached
   * the device leaves where the file held zeros before, made to order.
   */
  zeroBytes(path: string, offset: number, length: number): void {
    this.damage('zeroBytes', path, offset, length, (bytes, from, to) => bytes.fill(0, from, to));
  }

  /** Applies `change` to [offset, offset+length) of both the current and the durable content of `path`. */
  private damage(what: string, path: string, offset: number, length: number, change: (bytes: Uint8Array, from: number, to: number) => void): void {
    checkDiskPath(path, false);
    checkDiskOffset(offset, 'offset');
    checkDiskOffset(length, 'length');
    const inode = this.inodeAt(path);
    const end = offset + length;
    if (length === 0 || end > Math.max(inode.len, inode.durable.length)) {
      throw new StorageError('out_of_range', `${what} range [${offset}, ${end}) outside ${path}`, { path, offset, length });
    }
    if (offset < inode.len) change(inode.buf, offset, Math.min(end, inode.len));
    if (offset < inode.durable.length) change(inode.durable, offset, Math.min(end, inode.durable.length));
  }

  /**
   * Simulates a power loss: directories revert to their durable entries, files to their durable
   * content, open handles become invalid, a pending crash is cleared. With `tear`, the first
   * `keepBytes` bytes (at most the write's length) of the last write made to the file that
   * `tear.path` names after the cut are applied on top of its durable content.
   */
  powerCut(opts: PowerCutOptions = {}): PowerCutReport {
    const tear = opts.tear;
    if (tear !== undefined) {
      checkDiskPath(tear.path, false);
      checkDiskOffset(tear.keepBytes, 'keepBytes');
    }
    const inodes = new Set<Inode>();
    const dirs = new Set<Dir>();
    const restore = (d: Dir): void => {
      if (dirs.has(d)) return;
      dirs.add(d);
      d.entries = new Map(d.durable);
      for (const e of d.entries.values()) {
        if (e.kind === 'dir') {
          restore(e.dir);
        } else if (!inodes.has(e.inode)) {
          inodes.add(e.inode);
          const inode = e.inode;
          inode.buf = inode.durable.slice();
          inode.len = inode.durable.length;
          inode.dropped = undefined;
        }
      }
    };
    restore(this.root);
    this.files.clear();
    this.crashBudget = undefined;
    this.crashedFlag = false;

    let tornBytes = 0;
    if (tear !== undefined) {
      const entry = this.lookupOrUndefined(tear.path);
      if (entry !== undefined && entry.kind === 'file' && entry.inode.lastWrite !== undefined) {
        const inode = entry.inode;
        const w = inode.lastWrite!;
        tornBytes = Math.min(tear.keepBytes, w.bytes.length);
        writeBytes(inode, w.bytes.subarray(0, tornBytes), w.offset, this.fileBytesMax);
        inode.durable = inode.buf.slice(0, inode.len);
      }
    }
    for (const inode of inodes) inode.lastWrite = undefined;
    return { tornBytes };
  }

  /** A copy of the current content of the file at `path` (for assertions). */
  fileBytes(path: string): Uint8Array {
    checkDiskPath(path, false);
    const inode = this.inodeAt(path);
    return inode.buf.slice(0, inode.len);
  }

  /** A copy of the durable content of the file now at `path` (what a power cut would leave in it). */
  durableBytes(path: string): Uint8Array {
    checkDiskPath(path, false);
    return this.inodeAt(path).durable.slice();
  }

  // ---------------------------------------------------------------- internals

  /** Every call starts here: after a simulated crash nothing works until powerCut(). */
  private enter(): void {
    if (this.crashedFlag) throw new SimulatedCrash('disk call after a simulated crash');
  }

  /** Counts one mutating call, or crashes instead of it when the crash budget is spent. */
  private mutate(): void {
    if (this.crashBudget !== undefined) {
      if (this.crashBudget === 0) {
        this.crashedFlag = true;
        this.crashBudget = undefined;
        throw new SimulatedCrash(`simulated crash before mutating call ${this.mutatingOpsCount + 1}`);
      }
      this.crashBudget--;
    }
    this.mutatingOpsCount++;
  }

  private doWrite(f: OpenSimFile, data: Uint8Array, offset: number, op: string): void {
    this.mutate();
    this.counters.writes++;
    this.checkFault(this.writeFaults, f.path, op, 'io_error');
    const end = offset + data.length;
    if (end > this.fileBytesMax) throw this.ioError(op, f.path, 'ENOSPC');
    const inode = f.inode;
    writeBytes(inode, data, offset, this.fileBytesMax);
    this.undrop(inode, offset, end);
    inode.lastWrite = { offset, bytes: data.slice() };
    this.counters.bytesWritten += data.length;
  }

  private checkFault(rules: FaultRule[], path: string, op: string, code: 'io_error' | 'fsync_failed'): void {
    for (const rule of rules) {
      if (rule.remaining <= 0) continue;
      if (rule.prefix !== undefined && !path.startsWith(rule.prefix)) continue;
      rule.remaining--;
      throw new StorageError(code, `${op} ${path}: ${rule.errno} (simulated)`, { errno: rule.errno, path });
    }
  }

  private file(fh: FileHandle): OpenSimFile {
    return openFileOf(this.files, fh);
  }

  private ioError(op: string, path: string, errno: string, extra: Record<string, unknown> = {}): StorageError {
    return diskError(op, path, errno, 'io_error', extra);
  }

  private lookupOrUndefined(path: string): Entry | undefined {
    let entry: Entry = { kind: 'dir', dir: this.root };
    if (path === '') return entry;
    for (const name of path.split('/')) {
      if (entry.kind !== 'dir') return undefined;
      const next = entry.dir.entries.get(name);
      if (next === undefined) return undefined;
      entry = next;
    }
    return entry;
  }

  /** The entry at `path`, undefined if missing; ENOTDIR if a parent is a file. */
  private lookup(path: string, op: string): Entry | undefined {
    if (path === '') return { kind: 'dir', dir: this.root };
    const p = this.parentOrUndefined(path, op);
    return p === undefined ? undefined : p.dir.entries.get(p.name);
  }

  /** Parent directory and last name of `path`; undefined if the parent does not exist. */
  private parentOrUndefined(path: string, op = 'lookup'): { dir: Dir; name: string } | undefined {
    const names = path.split('/');
    const name = names.pop()!;
    let d = this.root;
    for (const n of names) {
      const e = d.entries.get(n);
      if (e === undefined) return undefined;
      if (e.kind !== 'dir') throw this.ioError(op, path, 'ENOTDIR');
      d = e.dir;
    }
    return { dir: d, name };
  }

  /** Parent directory and last name of `path`; ENOENT if the parent does not exist. */
  private parent(path: string, op: string): { dir: Dir; name: string } {
    const p = this.parentOrUndefined(path, op);
    if (p === undefined) throw this.ioError(op, path, 'ENOENT');
    return p;
  }

  private inodeAt(path: string): Inode {
    const entry = this.lookupOrUndefined(path);
    if (entry === undefined || entry.kind !== 'file') {
      throw new StorageError('io_error', `no file at ${path}`, { errno: entry === undefined ? 'ENOENT' : 'EISDIR', path });
    }
    return entry.inode;
  }
}
