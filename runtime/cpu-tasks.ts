/**
 * Tasks of the CPU pool (runs on piscina worker threads). Stateless: everything a task needs
 * arrives in its message, and page data arrives as a handle into a SharedArrayBuffer slab
 * (buffer + offset + length), never as a copy.
 */
import { crc32c } from '../storage-engine/crc32c';
import { touchForWrite } from '../storage-engine/slab';

export interface Crc32cTask {
  op: 'crc32c';
  sab: SharedArrayBuffer;
  offset: number;
  length: number;
}

/** Makes slab memory resident ahead of use (`touchForWrite`); answers the words touched. */
export interface TouchTask {
  op: 'touch';
  sab: SharedArrayBuffer;
  offset: number;
  stride: number;
  count: number;
  bytes: number;
}

export type CpuTask = Crc32cTask | TouchTask;

export default function run(task: CpuTask): number {
  switch (task.op) {
    case 'crc32c': {
      if (!(task.sab instanceof SharedArrayBuffer)) throw new TypeError('crc32c task: sab must be a SharedArrayBuffer');
      if (!Number.isSafeInteger(task.offset) || !Number.isSafeInteger(task.length) || task.offset < 0 || task.length < 0 || task.offset + task.length > task.sab.byteLength) {
        throw new RangeError(`crc32c task: range [${task.offset}, +${task.length}) outside the ${task.sab.byteLength}-byte buffer`);
      }
      return crc32c(new Uint8Array(task.sab, task.offset, task.length));
    }
    case 'touch':
      return touchForWrite(task.sab, task.offset, task.stride, task.count, task.bytes);
    default:
      throw new TypeError(`unknown CPU task ${(task as { op: unknown }).op as string}`);
  }
}
