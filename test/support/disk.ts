/** Helpers of the tests of Disk implementations (RealDisk, SimDisk, OverlayDisk). */
import { strict as assert } from 'node:assert';
import { SECTOR_BYTES, type Disk } from '../../storage-engine/disk';
import type { SimDisk } from '../../storage-engine/sim-disk';

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
export const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** The whole content of the file `path` of `disk`, as text. */
export function readAll(disk: Disk, path: string): string {
  const fh = disk.open(path);
  try {
    const buf = new Uint8Array(disk.size(fh));
    assert.equal(disk.read(fh, buf, 0), buf.length);
    return text(buf);
  } finally {
    disk.close(fh);
  }
}

/**
 * Leaves [from, to) of the file `path` of `disk` as a write a crash cut short may, at random
 * (current and durable content alike): the file ending within it; or some of its sectors
 * (SECTOR_BYTES, aligned in the file) zeros, zeros from some byte of it on, or both.
 */
export function tearAtRandom(disk: SimDisk, path: string, from: number, to: number, rand: () => number): void {
  const how = rand();
  if (how < 0.2) {
    const fh = disk.open(path);
    disk.truncate(fh, from + Math.floor(rand() * (to - from)));
    disk.fdatasync(fh);
    disk.close(fh);
    return;
  }
  if (how < 0.7) {
    for (let s = Math.floor(from / SECTOR_BYTES) * SECTOR_BYTES; s < to; s += SECTOR_BYTES) {
      if (rand() < 0.2) disk.zeroBytes(path, Math.max(s, from), Math.min(s + SECTOR_BYTES, to) - Math.max(s, from));
    }
  }
  if (how >= 0.5) {
    const cut = from + Math.floor(rand() * (to - from));
    disk.zeroBytes(path, cut, to - cut);
  }
}
