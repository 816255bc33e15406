/** Helpers of the tests of Disk implementations (RealDisk, SimDisk, OverlayDisk). */
import { strict as assert } from 'node:assert';
import type { Disk } from '../../storage-engine/disk';

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
