/**
 * The bytes of a file held in memory (SimDisk's files, the files OverlayDisk has changed):
 * `buf[0, len)` is the content; the bytes of `buf` past `len` are spare room.
 */
export interface MemBytes {
  buf: Uint8Array;
  len: number;
}

/** Grows `f.buf` to hold at least `bytes` (doubling, at least 4 KiB, at most `capacityMax`), keeping the content. */
export function reserveBytes(f: MemBytes, bytes: number, capacityMax: number): void {
  if (bytes <= f.buf.length) return;
  const buf = new Uint8Array(Math.min(capacityMax, Math.max(bytes, f.buf.length * 2, 4096)));
  buf.set(f.buf.subarray(0, f.len));
  f.buf = buf;
}

/** Zeros up to `length` past the content, room made for them; `len` is the caller's to set. */
export function zeroTo(f: MemBytes, length: number, capacityMax: number): void {
  if (length <= f.len) return;
  reserveBytes(f, length, capacityMax);
  f.buf.fill(0, f.len, length);
}

/** Writes `data` at `offset`: a gap past the content reads as zeros, and the file grows to the write's end. */
export function writeBytes(f: MemBytes, data: Uint8Array, offset: number, capacityMax: number): void {
  const end = offset + data.length;
  if (end > f.len) {
    zeroTo(f, end, capacityMax);
    f.len = end;
  }
  f.buf.set(data, offset);
}
