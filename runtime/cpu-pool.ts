/**
 * CpuPool: stateless CPU work off the actor threads, on piscina.
 *
 * Used on the write path for large batches: a ShardActor encodes the batch's PageWrite payload
 * into a slab slot and asks the pool for its CRC-32C by handle (no copy crosses threads); the
 * log then combines it with the record header's checksum. The actor's thread keeps serving other
 * requests meanwhile. Piscina hosts no stateful actor (it may end idle workers).
 *
 * It also makes the page caches' slab memory resident ahead of use (`touch`, runtime/slab-warmer.ts),
 * so that the actor threads do not take a page fault for each page they cache.
 *
 * Bounded: at most `maxQueue` tasks wait; past that a task is refused with `overloaded` and the
 * caller computes the checksum itself (or warms later).
 */
import * as path from 'node:path';
import Piscina from 'piscina';
import { StorageError } from '../storage-engine/errors';
import type { CpuTask } from './cpu-tasks';

export interface CpuPoolOptions {
  /** Worker threads at most; default 1 (the machine's cores already run the actor hosts). */
  maxThreads?: number;
  /** Tasks waiting for a thread at most; default 256. */
  maxQueue?: number;
  /** An idle worker ends after this long; default 30 s. */
  idleTimeoutMs?: number;
}

export interface CpuPoolStats {
  /** Tasks run, of every kind; `checksums` of them CRC-32C (the rest warm slab memory). */
  tasks: number;
  checksums: number;
  refused: number;
  queued: number;
  utilization: number;
}

export class CpuPool {
  private readonly pool: Piscina<CpuTask, number>;
  private readonly maxQueue: number;
  private tasks = 0;
  private checksums = 0;
  private refused = 0;
  private closed = false;

  constructor(opts: CpuPoolOptions = {}) {
    this.maxQueue = opts.maxQueue ?? 256;
    this.pool = new Piscina<CpuTask, number>({
      filename: path.join(__dirname, 'cpu-tasks.js'),
      minThreads: 0,
      maxThreads: opts.maxThreads ?? 1,
      idleTimeout: opts.idleTimeoutMs ?? 30_000,
      maxQueue: this.maxQueue,
    });
  }

  /** CRC-32C of `length` bytes at `offset` of a SharedArrayBuffer, computed on a pool thread. */
  crc32c(sab: SharedArrayBuffer, offset: number, length: number): Promise<number> {
    return this.submit({ op: 'crc32c', sab, offset, length });
  }

  /**
   * Makes `count` regions of `bytes` bytes, `stride` apart from `offset` in a SharedArrayBuffer,
   * resident on a pool thread (`touchForWrite`); resolves with the words touched.
   */
  touch(sab: SharedArrayBuffer, offset: number, stride: number, count: number, bytes: number): Promise<number> {
    return this.submit({ op: 'touch', sab, offset, stride, count, bytes });
  }

  private submit(task: CpuTask): Promise<number> {
    if (this.closed) return Promise.reject(new StorageError('closed', 'CPU pool is closed'));
    if (this.pool.queueSize >= this.maxQueue) {
      this.refused++;
      return Promise.reject(new StorageError('overloaded', 'CPU pool queue is full'));
    }
    this.tasks++;
    if (task.op === 'crc32c') this.checksums++;
    return this.pool.run(task);
  }

  stats(): CpuPoolStats {
    return { tasks: this.tasks, checksums: this.checksums, refused: this.refused, queued: this.pool.queueSize, utilization: this.pool.utilization };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.destroy();
  }
}
