/**
 * FaultyDisk: a Disk that passes every call to another one, except the faults it is told to
 * inject. Nodes always run their devices through it (a delegation per call), so that fault
 * tests of a running cluster can make one replica's fdatasync fail like a dying disk does.
 */
import type { Disk, DiskSpace, FileHandle, OpenOptions } from '../storage-engine/disk';
import { StorageError } from '../storage-engine/errors';

export class FaultyDisk implements Disk {
  private fsyncFailures = 0;
  private freeBytes: number | undefined;
  injected = 0;
  /** Background removals (`removeAsync`, `removeTreeAsync`) that failed; the next open removes their files. */
  backgroundRemoveFailures = 0;

  constructor(private readonly inner: Disk) {}

  /** The next `times` fdatasync/fsyncDir calls fail with EIO (Infinity: every one, for good). */
  failFsync(times: number): void {
    if (!(times > 0)) throw new StorageError('bad_request', `times must be positive, got ${times}`);
    this.fsyncFailures = times;
  }

  clearFaults(): void {
    this.fsyncFailures = 0;
    this.freeBytes = undefined;
  }

  private maybeFailSync(what: string): void {
    if (this.fsyncFailures <= 0) return;
    this.fsyncFailures--;
    this.injected++;
    throw new StorageError('fsync_failed', `${what}: EIO (injected)`, { errno: 'EIO', injected: true });
  }

  open(path: string, opts?: OpenOptions): FileHandle {
    return this.inner.open(path, opts);
  }
  close(fh: FileHandle): void {
    this.inner.close(fh);
  }
  size(fh: FileHandle): number {
    return this.inner.size(fh);
  }
  write(fh: FileHandle, data: Uint8Array, offset: number): void {
    this.inner.write(fh, data, offset);
  }
  append(fh: FileHandle, data: Uint8Array): number {
    return this.inner.append(fh, data);
  }
  read(fh: FileHandle, buf: Uint8Array, offset: number): number {
    return this.inner.read(fh, buf, offset);
  }
  fdatasync(fh: FileHandle): void {
    this.maybeFailSync('fdatasync');
    this.inner.fdatasync(fh);
  }
  /** Fails like `fdatasync`; over a disk without an asynchronous flush, flushes synchronously. */
  async fdatasyncAsync(fh: FileHandle): Promise<void> {
    this.maybeFailSync('fdatasync');
    if (this.inner.fdatasyncAsync === undefined) return this.inner.fdatasync(fh);
    return this.inner.fdatasyncAsync(fh);
  }
  truncate(fh: FileHandle, length: number): void {
    this.inner.truncate(fh, length);
  }
  rename(from: string, to: string): void {
    this.inner.rename(from, to);
  }
  fsyncDir(dir: string): void {
    this.maybeFailSync('fsync of a directory');
    this.inner.fsyncDir(dir);
  }
  mkdirp(dir: string): void {
    this.inner.mkdirp(dir);
  }
  list(dir: string): string[] {
    return this.inner.list(dir);
  }
  remove(path: string): void {
    this.inner.remove(path);
  }
  /** Over a disk without a background removal, removes at once. Failures are counted. */
  async removeAsync(path: string): Promise<void> {
    if (this.inner.removeAsync === undefined) return this.inner.remove(path);
    return this.inner.removeAsync(path).catch((e: unknown) => this.backgroundFailed(e));
  }
  removeTree(dir: string): void {
    this.inner.removeTree(dir);
  }
  /** Over a disk without a background removal, removes at once. Failures are counted. */
  async removeTreeAsync(dir: string): Promise<void> {
    if (this.inner.removeTreeAsync === undefined) return this.inner.removeTree(dir);
    return this.inner.removeTreeAsync(dir).catch((e: unknown) => this.backgroundFailed(e));
  }

  private backgroundFailed(e: unknown): never {
    this.backgroundRemoveFailures++;
    throw e;
  }
  exists(path: string): boolean {
    return this.inner.exists(path);
  }

  /** The inner disk's space, or, told a free size (`setFreeBytes`), that in place of its free bytes. */
  space(): DiskSpace {
    const inner = this.inner.space?.() ?? { freeBytes: Number.MAX_SAFE_INTEGER, sizeBytes: Number.MAX_SAFE_INTEGER };
    return this.freeBytes === undefined ? inner : { freeBytes: Math.min(this.freeBytes, inner.sizeBytes), sizeBytes: inner.sizeBytes };
  }

  bytesWritten(): number {
    return this.inner.bytesWritten?.() ?? 0;
  }

  /** Fault injection: the disk says it has `bytes` free (undefined: what it has). */
  setFreeBytes(bytes: number | undefined): void {
    if (bytes !== undefined && !(Number.isSafeInteger(bytes) && bytes >= 0)) throw new StorageError('bad_request', `free bytes must be a non-negative integer, got ${String(bytes)}`);
    this.freeBytes = bytes;
  }
}
