/**
 * The disk interface: the only way storage-engine and actors code touches files.
 *
 * It is synchronous on purpose. A device is driven by one DeviceQueue on a dedicated thread,
 * and on this machine a synchronous `writeSync` per batch is far cheaper than one libuv round
 * trip per operation (see ../shared/DESIGN.md, measured facts). The one exception is the
 * optional `fdatasyncAsync`: a flush takes long enough (0.3–3 ms) that one thread-pool round
 * trip per batch is worth freeing the thread for it (docs/architecture.md). Tests swap in
 * `SimDisk` (sim-disk.ts), which tears writes, flips bits, fails fsync and loses whatever was not
 * synced on a simulated power cut.
 *
 * Paths are relative to the disk's root, with '/' separators (e.g. "shard-3/log/seg-….log").
 * Errors are thrown as `StorageError` with code `io_error` (or `fsync_failed` from the sync
 * calls), with the OS error code (`EIO`, `ENOSPC`, `ENOENT`…) in `details.errno`.
 */
import { errnoOf, StorageError } from './errors';

export type FileHandle = number;

export interface OpenOptions {
  /** Create the file if it does not exist (default false: ENOENT is an error). */
  create?: boolean;
  /** Truncate the file to zero on open (default false). */
  truncate?: boolean;
}

export interface Disk {
  /** Opens (or creates) a file for reading and writing. */
  open(path: string, opts?: OpenOptions): FileHandle;
  close(fh: FileHandle): void;
  /** Current size in bytes of an open file. */
  size(fh: FileHandle): number;
  /** Writes all of `data` at `offset` (positional write; the file grows as needed). */
  write(fh: FileHandle, data: Uint8Array, offset: number): void;
  /** Appends `data` at the current end of the file; returns the offset it was written at. */
  append(fh: FileHandle, data: Uint8Array): number;
  /** Reads up to `buf.length` bytes at `offset` into `buf`; returns the count read (short at EOF). */
  read(fh: FileHandle, buf: Uint8Array, offset: number): number;
  /** Makes the file's data durable (fdatasync). Throws StorageError('fsync_failed') on failure. */
  fdatasync(fh: FileHandle): void;
  /**
   * Optional: fdatasync off the calling thread (the OS thread pool), so the caller's thread can
   * go on with other work while the disk flushes. Same errors as `fdatasync`, as a rejection.
   * The file must stay open and unwritten until it settles.
   */
  fdatasyncAsync?(fh: FileHandle): Promise<void>;
  /** Sets the file's length (shrinks or grows with zeros). Not durable until fdatasync. */
  truncate(fh: FileHandle, length: number): void;
  /** Atomically renames a file within the disk (replacing `to`). Durable after fsyncDir of the parent(s). */
  rename(from: string, to: string): void;
  /** Makes the directory's entries (creates, renames, removes) durable. */
  fsyncDir(dir: string): void;
  /** Creates a directory and its parents; no error if it exists. Durable after fsyncDir of the parent. */
  mkdirp(dir: string): void;
  /** Names (not paths) of the entries in a directory, sorted; [] if the directory does not exist. */
  list(dir: string): string[];
  /** Removes a file; no error if it does not exist. Durable after fsyncDir of the parent. */
  remove(path: string): void;
  /**
   * Optional: `remove` off the calling thread (the OS thread pool). Removing a large file frees
   * its blocks inside the call: 20–30 ms for a 64 MiB log segment on ext4, which would stall
   * every shard of the thread. Same errors as `remove`, as a rejection. See `discardFile`.
   */
  removeAsync?(path: string): Promise<void>;
  /** Removes a directory and everything under it; no error if it does not exist. */
  removeTree(dir: string): void;
  /** Optional: `removeTree` off the calling thread, as `removeAsync` (see `discardTree`). */
  removeTreeAsync?(dir: string): Promise<void>;
  exists(path: string): boolean;
  /**
   * Optional: the space of the filesystem holding the disk's files: what its user may still
   * write, and its size. Throws StorageError `io_error` when the filesystem does not say.
   */
  space?(): DiskSpace;
  /**
   * Optional: the bytes written through this disk so far (writes and appends), which a device
   * subtracts from the free space `space` last said until it asks again (DeviceQueue.space).
   */
  bytesWritten?(): number;
}

/** The open file of handle `fh` in a Disk's table of them; `io_error` (EBADF) for a handle not in it. */
/** A filesystem's space, in bytes. */
export interface DiskSpace {
  /** What the disk's user may still write (blocks available to it, not the root's reserve). */
  freeBytes: number;
  sizeBytes: number;
}

export function openFileOf<T>(files: ReadonlyMap<FileHandle, T>, fh: FileHandle): T {
  const f = files.get(fh);
  if (f === undefined) throw new StorageError('io_error', `bad file handle ${fh}`, { errno: 'EBADF', fh });
  return f;
}

/**
 * A Disk's error for `op` on `path`: `cause` is the OS error it failed with, or the errno alone
 * (`ENOENT`…, for a failure the Disk found itself), in `details.errno` either way.
 */
export function diskError(op: string, path: string, cause: unknown, code: 'io_error' | 'fsync_failed' = 'io_error', extra: Record<string, unknown> = {}): StorageError {
  const errno = typeof cause === 'string' ? cause : errnoOf(cause);
  return new StorageError(code, `${op} ${path}: ${errno}`, { errno, path, ...extra }, typeof cause === 'string' ? undefined : cause);
}

/** The unit a torn write is cut at: what a device writes whole (the smallest sector). */
export const SECTOR_BYTES = 512;

/**
 * True when some sector of a file (SECTOR_BYTES, aligned in the file) holds only zeros within
 * [from, to) (file offsets); `bytes[0]` is the file's byte at offset `at`, and `bytes` holds the
 * range. What a write a crash cut short leaves where the file held zeros: a sector it did not
 * write while a later one was written.
 */
export function zeroSectorWithin(bytes: Uint8Array, at: number, from: number, to: number): boolean {
  return zeroCensus(bytes, at, from, to, true).zeroSectors > 0;
}

/** What `zeroCensus` finds in a range of a file. */
export interface ZeroCensus {
  /** Sectors of the file (SECTOR_BYTES, aligned in the file) holding only zeros within the range. */
  zeroSectors: number;
  /** File offset of the range's last non-zero byte; `from - 1` when it holds only zeros. */
  lastNonZero: number;
}

/**
 * Where a range [from, to) of a file (file offsets; `bytes[0]` is the file's byte at offset `at`)
 * holds zeros, in the terms of a torn write: the sectors (aligned in the file, counted within
 * the range) holding only zeros, and the last non-zero byte. A write a crash cut short leaves
 * zeros where it did not reach (the file held zeros there): whole sectors, or everything from
 * some byte on; it can only add zero sectors and move the last non-zero byte back. One pass: a
 * sector ends its scan at its first non-zero byte; `firstOnly` stops at the first zero sector.
 */
export function zeroCensus(bytes: Uint8Array, at: number, from: number, to: number, firstOnly = false): ZeroCensus {
  let zeroSectors = 0;
  let lastSector = -1; // start of the last sector holding a non-zero byte
  let view: Buffer | undefined;
  let next = Math.min(to, from - (from % SECTOR_BYTES) + SECTOR_BYTES);
  for (let s = from; s < to; s = next, next = Math.min(to, next + SECTOR_BYTES)) {
    // Most sectors of data end the scan at their first byte; zeros are compared natively, a
    // run of them at once.
    if (bytes[s - at] === 0) {
      view ??= Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
      const run = Math.min(to, Math.floor((s + ZERO_RUN.length) / SECTOR_BYTES) * SECTOR_BYTES);
      if (!firstOnly && run > next && zerosAt(view, s - at, run - at)) {
        zeroSectors += 1 + Math.ceil((run - next) / SECTOR_BYTES);
        next = run;
        continue;
      }
      if (zerosAt(view, s - at, next - at)) {
        zeroSectors++;
        if (firstOnly) break;
      } else lastSector = s;
    } else lastSector = s;
  }
  let lastNonZero = from - 1;
  if (lastSector >= 0) {
    lastNonZero = Math.min(to, (Math.floor(lastSector / SECTOR_BYTES) + 1) * SECTOR_BYTES) - 1;
    while (bytes[lastNonZero - at] === 0) lastNonZero--;
  }
  return { zeroSectors, lastNonZero };
}

/** Zeros to compare runs of a range with (`zeroCensus`). */
const ZERO_RUN = Buffer.alloc(64 * 1024);

/** True if view[i..j) holds only zeros (at most ZERO_RUN's length). */
function zerosAt(view: Buffer, i: number, j: number): boolean {
  return view.compare(ZERO_RUN, 0, j - i, i, j) === 0;
}

/** Parent directory of a disk path ('' for the root). */
export function parentDir(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

/** Joins disk path parts with '/', skipping empty ones. */
export function joinPath(...parts: string[]): string {
  return parts.filter((p) => p.length > 0).join('/');
}

/**
 * Suffix of a file or directory renamed away to be removed in the background (`discardFile`,
 * `discardTree`). No log segment, image or metadata name ends with it, so whatever opens a
 * directory ignores such an entry, and removes it (`removeDiscarded`) in case a crash came
 * before the background removal did.
 */
export const DISCARD_SUFFIX = '.discard';

/** True for the name of an entry `discardFile` or `discardTree` renamed away. */
export function isDiscardedName(name: string): boolean {
  return name.endsWith(DISCARD_SUFFIX);
}

/** An entry renamed away, for `removeInBackground` once the rename is durable. */
export interface Discarded {
  path: string;
  tree: boolean;
}

/**
 * The first half of removing `path` without freeing its blocks on this thread: renames it to
 * `path` + DISCARD_SUFFIX, so it is gone as far as its directory's owner is concerned (durably
 * once the caller fsyncs the directory, in the same order as a `remove` would be). Once that
 * fsync succeeded, the caller hands the result to `removeInBackground`: cut before its rename is
 * durable, a file could come back short after a power cut.
 */
export function discardFile(disk: Disk, path: string): Discarded {
  const discarded = path + DISCARD_SUFFIX;
  disk.rename(path, discarded);
  return { path: discarded, tree: false };
}

/** Most `<dir>.<n>.discard` names `discardTree` tries before it removes in place. */
const DISCARD_NAMES_MAX = 64;

/**
 * `discardFile` for the directory `dir` and everything under it: renamed to `<dir>.<n>.discard`
 * (the lowest `n` not in use). Removing a shard of a few GiB frees tens of 64 MiB segments,
 * 20–30 ms each on this machine: seconds of a stalled thread. Undefined when there is nothing
 * to hand over: `dir` does not exist, or it was removed at once (a disk without
 * `removeTreeAsync`, or every name in use).
 */
export function discardTree(disk: Disk, dir: string): Discarded | undefined {
  if (!disk.exists(dir)) return undefined;
  let discarded: string | undefined;
  if (disk.removeTreeAsync !== undefined) {
    for (let n = 0; n < DISCARD_NAMES_MAX && discarded === undefined; n++) {
      const name = `${dir}.${n}${DISCARD_SUFFIX}`;
      if (!disk.exists(name)) discarded = name;
    }
  }
  if (discarded === undefined) {
    disk.removeTree(dir);
    return undefined;
  }
  disk.rename(dir, discarded);
  return { path: discarded, tree: true };
}

/**
 * The second half: removes what `discardFile` / `discardTree` renamed away, with the disk's
 * `removeAsync` / `removeTreeAsync` when it has them, else at once. A background removal that
 * fails leaves the entry for `removeDiscarded` at the next open; `onBackgroundError` hears of it
 * (the caller counts it: there is nobody to throw to).
 */
export function removeInBackground(disk: Disk, items: readonly Discarded[], onBackgroundError?: (err: unknown) => void): void {
  for (const { path, tree } of items) {
    const background = tree ? disk.removeTreeAsync?.bind(disk) : disk.removeAsync?.bind(disk);
    if (background === undefined) {
      if (tree) disk.removeTree(path);
      else disk.remove(path);
      continue;
    }
    background(path).catch((err: unknown) => onBackgroundError?.(err));
  }
}

/**
 * Removes the entries of `dir` (the names its listing returned) that were renamed away and that
 * a crash left behind, as `removeInBackground` (each as a tree: a file given as a tree is removed
 * too). Returns how many there were. Their removal need not be durable: one left again is
 * removed again. Their renames are made durable first (one directory fsync): the crash that left
 * one may have come before its rename's fsync, and a file cut down under its new name would
 * otherwise come back under its old one, cut short, at a power loss (a log segment that a
 * recovery would take for damage).
 */
export function removeDiscarded(disk: Disk, dir: string, names: readonly string[], onBackgroundError?: (err: unknown) => void): number {
  const items = names.filter(isDiscardedName).map((name) => ({ path: joinPath(dir, name), tree: true }));
  if (items.length === 0) return 0;
  disk.fsyncDir(dir);
  removeInBackground(disk, items, onBackgroundError);
  return items.length;
}
