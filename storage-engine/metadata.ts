/**
 * MetaStore: small durable metadata (term, vote, configuration, checkpoint pointer, volume
 * catalog), one file per name, replaced atomically. Format and protocol: docs/metadata-and-slab.md.
 *
 * File layout (little-endian):
 *   0  8 bytes  magic "STRMETA1"
 *   8  u32      format version (1)
 *  12  u32      payload length in bytes
 *  16  u32      CRC-32C of the payload
 *  20  payload  UTF-8 JSON
 *
 * Write: `<name>.tmp` (create + truncate) ← bytes, fdatasync, close, rename to `<name>`,
 * fsyncDir(dir). A crash at any step leaves either the old or the new value under `<name>`.
 */
import type { Disk } from './disk';
import { joinPath } from './disk';
import { crc32c } from './crc32c';
import { CorruptionError, StorageError } from './errors';

/** The 8 magic bytes at the start of every metadata file. */
export const META_MAGIC = 'STRMETA1';
/** The format version this code writes and reads. */
export const META_FORMAT_VERSION = 1;
/** Bytes before the payload: magic, version, payload length, payload CRC-32C. */
export const META_HEADER_BYTES = 20;
/** Default bound on a payload (the UTF-8 JSON), in bytes. */
export const META_PAYLOAD_BYTES_MAX_DEFAULT = 1024 * 1024;
/** Suffix of the temporary file a write goes through. */
export const META_TMP_SUFFIX = '.tmp';
/** Longest metadata name, in characters. */
export const META_NAME_CHARS_MAX = 64;

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const MAGIC_BYTES = new TextEncoder().encode(META_MAGIC);

export interface MetaStoreOptions {
  /** Largest payload accepted by write() and read(), in bytes (default 1 MiB, at most 64 MiB). */
  payloadBytesMax?: number;
}

/** Checks a metadata name: [A-Za-z0-9][A-Za-z0-9._-]*, at most 64 chars, not ending in ".tmp". */
export function checkMetaName(name: string): void {
  if (
    typeof name !== 'string' ||
    name.length > META_NAME_CHARS_MAX ||
    !NAME_PATTERN.test(name) ||
    name.endsWith(META_TMP_SUFFIX)
  ) {
    throw new StorageError('bad_request', `bad metadata name: ${String(name)}`, { name });
  }
}

/** Encodes a value into the metadata file format (header + UTF-8 JSON). */
export function encodeMeta(value: unknown, payloadBytesMax = META_PAYLOAD_BYTES_MAX_DEFAULT): Uint8Array {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (e) {
    throw new StorageError('bad_request', `metadata value is not JSON-serializable: ${String(e)}`, undefined, e);
  }
  if (json === undefined) {
    throw new StorageError('bad_request', 'metadata value is not JSON-serializable (undefined, a function or a symbol)');
  }
  const payload = new TextEncoder().encode(json);
  if (payload.length > payloadBytesMax) {
    throw new StorageError('too_large', `metadata payload of ${payload.length} bytes exceeds ${payloadBytesMax}`, {
      payloadBytes: payload.length,
      payloadBytesMax,
    });
  }
  return encodeFramed(MAGIC_BYTES, META_FORMAT_VERSION, payload);
}

/**
 * `payload` behind a header of `magic`, then three little-endian u32: `version`, the payload's
 * length and its CRC-32C (so `magic.length + 12` header bytes): the frame of a metadata file.
 */
function encodeFramed(magic: Uint8Array, version: number, payload: Uint8Array): Uint8Array {
  const at = magic.length;
  const out = new Uint8Array(at + 12 + payload.length);
  const dv = new DataView(out.buffer);
  out.set(magic, 0);
  dv.setUint32(at, version, true);
  dv.setUint32(at + 4, payload.length, true);
  dv.setUint32(at + 8, crc32c(payload), true);
  out.set(payload, at + 12);
  return out;
}

/**
 * Decodes a metadata file. Anything that does not check out exactly (magic, version, length equal
 * to the file's, CRC-32C, JSON) throws CorruptionError: garbage is never returned.
 */
export function decodeMeta(file: string, bytes: Uint8Array, payloadBytesMax = META_PAYLOAD_BYTES_MAX_DEFAULT): unknown {
  const corrupt = (offset: number, reason: string): CorruptionError =>
    new CorruptionError(`metadata file ${file} is corrupt: ${reason}`, [{ file, offset, fromLsn: 0, toLsn: 0, reason }]);
  if (bytes.length < META_HEADER_BYTES) throw corrupt(0, `${bytes.length} bytes, shorter than the header`);
  for (let i = 0; i < MAGIC_BYTES.length; i++) {
    if (bytes[i] !== MAGIC_BYTES[i]) throw corrupt(0, 'bad magic');
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== META_FORMAT_VERSION) throw corrupt(8, `unsupported format version ${version}`);
  const payloadBytes = dv.getUint32(12, true);
  if (payloadBytes > payloadBytesMax) throw corrupt(12, `payload length ${payloadBytes} exceeds ${payloadBytesMax}`);
  if (META_HEADER_BYTES + payloadBytes !== bytes.length) {
    throw corrupt(12, `payload length ${payloadBytes} does not match the file size ${bytes.length}`);
  }
  const payload = bytes.subarray(META_HEADER_BYTES);
  const crcStored = dv.getUint32(16, true);
  const crcActual = crc32c(payload);
  if (crcStored !== crcActual) {
    throw corrupt(META_HEADER_BYTES, `payload CRC-32C ${crcActual.toString(16)} != stored ${crcStored.toString(16)}`);
  }
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload)) as unknown;
  } catch (e) {
    // A matching CRC over invalid JSON means a bad writer, not bit rot; still never return garbage.
    throw corrupt(META_HEADER_BYTES, `payload is not valid UTF-8 JSON: ${String(e)}`);
  }
}

/**
 * Durable named values in one directory of a disk. The directory must exist and be durable
 * (created and its parent fsync'd) before the first write. Not thread-safe: one owner.
 */
export class MetaStore {
  private readonly disk: Disk;
  private readonly dir: string;
  private readonly payloadBytesMax: number;

  constructor(disk: Disk, dir: string, opts: MetaStoreOptions = {}) {
    const max = opts.payloadBytesMax ?? META_PAYLOAD_BYTES_MAX_DEFAULT;
    if (!Number.isSafeInteger(max) || max < 2 || max > 64 * 1024 * 1024) {
      throw new StorageError('bad_request', `payloadBytesMax must be in [2, 64 MiB], got ${max}`);
    }
    this.disk = disk;
    this.dir = dir;
    this.payloadBytesMax = max;
  }

  /**
   * The value last written under `name`, or undefined if none was ever written (or the directory
   * does not exist). A damaged file throws CorruptionError; a leftover `<name>.tmp` is ignored.
   * The caller vouches for the type `T`: the value is parsed JSON, not validated here.
   */
  read<T>(name: string): T | undefined {
    checkMetaName(name);
    const path = joinPath(this.dir, name);
    let fh: number;
    try {
      fh = this.disk.open(path);
    } catch (e) {
      if (e instanceof StorageError && e.details?.['errno'] === 'ENOENT') return undefined;
      throw e;
    }
    let bytes: Uint8Array;
    try {
      const size = this.disk.size(fh);
      if (size > META_HEADER_BYTES + this.payloadBytesMax) {
        throw new CorruptionError(`metadata file ${path} is corrupt: ${size} bytes is over the bound`, [
          { file: path, offset: 0, fromLsn: 0, toLsn: 0, reason: `file of ${size} bytes exceeds the bound` },
        ]);
      }
      bytes = new Uint8Array(size);
      const n = this.disk.read(fh, bytes, 0);
      if (n !== size) bytes = bytes.subarray(0, n);
    } finally {
      this.disk.close(fh);
    }
    return decodeMeta(path, bytes, this.payloadBytesMax) as T;
  }

  /**
   * Durably replaces the value under `name` with `value` (JSON-serializable, payload at most
   * payloadBytesMax bytes, else StorageError 'too_large'). When it returns, the new value survives
   * a power cut. When it throws (io_error, fsync_failed), `name` holds the old or the new value
   * after a power cut, never a mix; an fsync_failed means the device can no longer be trusted.
   */
  write(name: string, value: unknown): void {
    checkMetaName(name);
    const bytes = encodeMeta(value, this.payloadBytesMax);
    const path = joinPath(this.dir, name);
    const tmp = path + META_TMP_SUFFIX;
    // create + truncate: a leftover tmp from an interrupted write is simply overwritten.
    const fh = this.disk.open(tmp, { create: true, truncate: true });
    try {
      this.disk.write(fh, bytes, 0);
      // The content must be durable before the name points to it, or a power cut after the
      // (durable) rename could leave `name` empty or partly written.
      this.disk.fdatasync(fh);
    } finally {
      this.disk.close(fh);
    }
    // rename replaces `name` atomically: readers see the old or the new file, never a mix.
    this.disk.rename(tmp, path);
    // The rename is a directory entry change: durable only once the directory is fsync'd.
    this.disk.fsyncDir(this.dir);
  }
}
