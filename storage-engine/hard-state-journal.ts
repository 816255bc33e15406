/**
 * HardStateJournal: the terms and votes of every replica of one device, in one append-only file
 * beside the device's shard directories, so that the saves of many replicas take one write and
 * one fdatasync (hundreds of shards electing at once would otherwise each write and fsync a file
 * of their own, twice: docs/replication.md, "Election"). Format and protocol:
 * docs/metadata-and-slab.md, "The hard-state journal".
 *
 * Record layout (little-endian), one record per batch of saves:
 *   0  4 bytes  magic "STHJ"
 *   4  u32      format version (2)
 *   8  u32      payload length in bytes
 *  12  u32      CRC-32C of the payload
 *  16  u32      CRC-32C of bytes 0..15 (the header)
 *  20  payload  UTF-8 JSON: an array of entries, [dir, value] (a save), [dir, null] (forgotten:
 *               the directory is gone) or [dir, "damaged"] (its state was lost to damage)
 * Records of version 1 (written by earlier versions) have no header CRC (a 16-byte header) and
 * are read as they are; new records are version 2.
 *
 * A batch is answered only once its record is durable (fdatasync), so a last record a crash cut
 * short (by the end of the file, or by zeros after the point the write reached) was never
 * answered: at open it is cut off. The header's own CRC tells such a record from a whole one
 * whose length rotted so as to run past the end of the file: a torn record has a header that
 * checks out and its payload cut (or a sector of it zeros: written out of order), or a header cut
 * itself (zeros from within it to the end). A
 * whole record that does not check out, or any with valid records after it, is damage, not a
 * crash: every directory without a save after it has lost its state (`lookup` throws
 * CorruptionError for it until it is saved again). The file is rewritten with one entry per
 * directory still there (a new file, fdatasync'd, renamed over the old one) once it is over its
 * bound and mostly superseded entries.
 */
import type { Disk, FileHandle } from './disk';
import { parentDir, zeroSectorWithin } from './disk';
import { crc32c } from './crc32c';
import { CorruptionError, StorageError, type CorruptionReport } from './errors';
import { META_TMP_SUFFIX } from './metadata';

/** Name of the journal file in a device's root directory. */
export const HARD_STATE_JOURNAL = 'hard-states';
/** The format version of the records written (version 1 records are read too). */
export const HARD_STATE_JOURNAL_FORMAT_VERSION = 2;
/** Header of a record of the version written (with the header's own CRC). */
export const HARD_STATE_RECORD_HEADER_BYTES = 20;
/** Header of a version 1 record (no header CRC). */
export const HARD_STATE_RECORD_HEADER_BYTES_V1 = 16;
/** Bytes of magic and version, which every version's header starts with. */
const HEADER_PREFIX_BYTES = 8;
/** Largest payload of one record: a batch larger than this is written as several records (one fdatasync). */
export const HARD_STATE_RECORD_PAYLOAD_BYTES_MAX = 1024 * 1024;
/** Largest value of one entry, as JSON in UTF-8 bytes. */
export const HARD_STATE_VALUE_BYTES_MAX = 4096;
/** Largest directory (the key of a save) in bytes. */
export const HARD_STATE_KEY_BYTES_MAX = 1024;
/** Default size past which the file is rewritten (when mostly superseded entries). */
export const HARD_STATE_COMPACT_BYTES_DEFAULT = 1024 * 1024;
/** Largest journal file that is read at open (a bigger one is not a journal this code wrote). */
export const HARD_STATE_JOURNAL_BYTES_MAX = 256 * 1024 * 1024;

const MAGIC = new TextEncoder().encode('STHJ');
const DAMAGED = 'damaged';

/** One save of a batch: the replica of directory `key` now has hard state `value` (JSON). */
export interface HardStateSave {
  key: string;
  value: unknown;
}

/** Where a device queue writes batches of saves (DeviceQueue.saveState). */
export interface StateSink {
  /** Writes every save in one durable step; when it throws, none of them may be taken as saved. */
  saveMany(saves: readonly HardStateSave[]): void;
}

/** What the journal holds for a directory. */
export type HardStateLookup =
  | { kind: 'saved'; value: unknown }
  /** Its directory went after its last save: it has no state (a new replica there starts afresh). */
  | { kind: 'forgotten' }
  /** Nothing in the journal (a directory whose state, if any, is in its own file). */
  | { kind: 'none' };

export interface HardStateJournalOptions {
  /** Path of the journal file on the disk (default `hard-states`, in the disk's root). */
  path?: string;
  /**
   * The directories that may hold replicas (consulted only when damage is found at open: those
   * without a save after it are marked damaged).
   */
  dirs?: () => string[];
  /** Read only (an offline inspection): a torn tail is not cut, damage not rewritten, saves refused. */
  readOnly?: boolean;
  /** Size past which the file is rewritten when at least half of it is superseded entries (default 1 MiB). */
  compactBytes?: number;
}

type Entry = { kind: 'saved'; value: unknown; bytes: number } | { kind: 'forgotten' } | { kind: 'damaged' };

interface ParsedRecord {
  entries: Array<[string, unknown]>;
  end: number;
}

/**
 * Why a record does not check out, and where a torn write would have had to stop for it to read
 * so: when the file holds only zeros (or nothing) from some offset below `tornBefore` on, the
 * record may be a last write a crash cut short (never answered); otherwise it was whole, and
 * rotted since.
 */
interface BadRecord {
  reason: string;
  tornBefore: number;
}

export interface HardStateJournalStats {
  /** Size of the file. */
  bytes: number;
  /** Directories with an entry. */
  dirs: number;
  /** Batches written (each one write and one fdatasync) since open. */
  batches: number;
  /** Saves written since open. */
  saves: number;
  /** Rewrites of the file since open, and those that failed (tried again later). */
  compactions: number;
  rewriteFailures: number;
}

function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

function encodeRecord(entries: ReadonlyArray<readonly [string, unknown]>): Uint8Array {
  const payload = new TextEncoder().encode(JSON.stringify(entries));
  const out = new Uint8Array(HARD_STATE_RECORD_HEADER_BYTES + payload.length);
  const dv = new DataView(out.buffer);
  out.set(MAGIC, 0);
  dv.setUint32(4, HARD_STATE_JOURNAL_FORMAT_VERSION, true);
  dv.setUint32(8, payload.length, true);
  dv.setUint32(12, crc32c(payload), true);
  dv.setUint32(16, crc32c(out, 0, 0, 16), true);
  out.set(payload, HARD_STATE_RECORD_HEADER_BYTES);
  return out;
}

function isEntry(e: unknown): e is [string, unknown] {
  return Array.isArray(e) && e.length === 2 && typeof e[0] === 'string' && e[0].length > 0 &&
    (e[1] === null || e[1] === DAMAGED || (typeof e[1] === 'object' && !Array.isArray(e[1])));
}

/** The record at `offset`, or why it does not check out. */
function parseRecord(bytes: Uint8Array, offset: number): ParsedRecord | BadRecord {
  const left = bytes.length - offset;
  // A header cut by the end of the file: written in part. A torn write stopped anywhere in it
  // (a whole record is longer than any header).
  const cut = (header: number): BadRecord => ({ reason: `${left} bytes, shorter than a record header of ${header}`, tornBefore: bytes.length + 1 });
  if (left < HEADER_PREFIX_BYTES) return cut(HARD_STATE_RECORD_HEADER_BYTES);
  // Not a header that checks out: torn when zeros start within the header, or when a sector of
  // it holds only zeros (a header across a sector boundary: a crash wrote the later sector, not
  // that one).
  const badHeader = (reason: string, header = HARD_STATE_RECORD_HEADER_BYTES): BadRecord => ({
    reason,
    tornBefore: zeroSectorWithin(bytes, 0, offset, Math.min(bytes.length, offset + header)) ? bytes.length + 1 : offset + header,
  });
  for (let i = 0; i < MAGIC.length; i++) if (bytes[offset + i] !== MAGIC[i]) return badHeader('bad magic');
  const version = new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_PREFIX_BYTES).getUint32(4, true);
  if (version !== 1 && version !== HARD_STATE_JOURNAL_FORMAT_VERSION) return badHeader(`unsupported format version ${version}`);
  const headerBytes = version === 1 ? HARD_STATE_RECORD_HEADER_BYTES_V1 : HARD_STATE_RECORD_HEADER_BYTES;
  if (left < headerBytes) return cut(headerBytes);
  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, headerBytes);
  if (version !== 1 && crc32c(bytes, 0, offset, offset + 16) !== dv.getUint32(16, true)) return badHeader('header CRC-32C does not match');
  const length = dv.getUint32(8, true);
  if (length > HARD_STATE_RECORD_PAYLOAD_BYTES_MAX) return badHeader(`payload length ${length} exceeds ${HARD_STATE_RECORD_PAYLOAD_BYTES_MAX}`, headerBytes);
  const end = offset + headerBytes + length;
  // The header is whole (and, from version 2 on, checks out): the payload was being written
  // when the file ends before it, or zeros start within it (a JSON payload ends in "]").
  if (end > bytes.length) return { reason: `payload of ${length} bytes runs past the end of the file`, tornBefore: bytes.length + 1 };
  const payload = bytes.subarray(offset + headerBytes, end);
  // A sector of zeros in a payload of JSON (which holds no zero byte) is one a crash did not
  // write, while a later one was (out of order): torn, however the rest reads.
  const bad = (reason: string): BadRecord => ({ reason, tornBefore: zeroSectorWithin(bytes, 0, offset + headerBytes, end) ? bytes.length + 1 : end });
  if (crc32c(payload) !== dv.getUint32(12, true)) return bad('payload CRC-32C does not match');
  let entries: unknown;
  try {
    entries = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch (e) {
    return bad(`payload is not valid UTF-8 JSON: ${String(e)}`);
  }
  if (!Array.isArray(entries) || !entries.every(isEntry)) return bad('payload is not a list of entries');
  return { entries, end };
}

function isBad(r: ParsedRecord | BadRecord): r is BadRecord {
  return 'reason' in r;
}

/** Where the zeros at the end of `bytes` start (its length when it does not end in a zero). */
function trailingZerosStart(bytes: Uint8Array): number {
  let i = bytes.length;
  while (i > 0 && bytes[i - 1] === 0) i--;
  return i;
}

/** The offset of the first record after `from` that checks out, if any. */
function nextValidRecord(bytes: Uint8Array, from: number): number | undefined {
  for (let o = from; o + HARD_STATE_RECORD_HEADER_BYTES_V1 <= bytes.length; o++) {
    if (bytes[o] !== MAGIC[0]) continue;
    if (!isBad(parseRecord(bytes, o))) return o;
  }
  return undefined;
}

export class HardStateJournal implements StateSink {
  readonly path: string;
  /** Damage found at open: a record that did not check out, with valid records after it. */
  readonly damage: readonly CorruptionReport[];
  private readonly disk: Disk;
  private readonly readOnly: boolean;
  private readonly compactBytes: number;
  private readonly entries = new Map<string, Entry>();
  private fh: FileHandle | undefined;
  private size = 0;
  private liveBytes = 0;
  /** An append failed: what it may have written past `size` is cut before the next one. */
  private tailUnknown = false;
  /** Size past which the file is rewritten (when mostly superseded): the bound, or more after a failed rewrite. */
  private rewriteAtBytes: number;
  private counters = { batches: 0, saves: 0, compactions: 0, rewriteFailures: 0 };

  private constructor(disk: Disk, path: string, opts: HardStateJournalOptions, damage: CorruptionReport[]) {
    this.disk = disk;
    this.path = path;
    this.readOnly = opts.readOnly === true;
    this.damage = damage;
    const compact = opts.compactBytes ?? HARD_STATE_COMPACT_BYTES_DEFAULT;
    if (!Number.isSafeInteger(compact) || compact < 1) throw new StorageError('bad_request', `compactBytes must be a positive integer, got ${String(opts.compactBytes)}`);
    this.compactBytes = compact;
    this.rewriteAtBytes = compact;
  }

  /**
   * Opens the journal of a device (creating it empty if absent, unless read only): reads every
   * record, cuts a torn last one off, and marks damaged the directories a damaged record may
   * have held the newest state of (rewriting the file without the damage).
   */
  static open(disk: Disk, opts: HardStateJournalOptions = {}): HardStateJournal {
    const path = opts.path ?? HARD_STATE_JOURNAL;
    let bytes = new Uint8Array(0);
    if (disk.exists(path)) {
      const fh = disk.open(path);
      try {
        const size = disk.size(fh);
        if (size > HARD_STATE_JOURNAL_BYTES_MAX) {
          throw new CorruptionError(`hard-state journal ${path} is corrupt: ${size} bytes is over the bound of ${HARD_STATE_JOURNAL_BYTES_MAX}`, [
            { file: path, offset: 0, fromLsn: 0, toLsn: 0, reason: `file of ${size} bytes exceeds the bound` },
          ]);
        }
        bytes = new Uint8Array(size);
        const n = disk.read(fh, bytes, 0);
        if (n !== size) bytes = bytes.subarray(0, n);
      } finally {
        disk.close(fh);
      }
    }
    const damage: CorruptionReport[] = [];
    const j = new HardStateJournal(disk, path, opts, damage);
    let offset = 0;
    let damagedAt: number | undefined;
    const savedAfterDamage = new Set<string>();
    while (offset < bytes.length) {
      const r = parseRecord(bytes, offset);
      if (!isBad(r)) {
        for (const [dir, value] of r.entries) {
          j.take(dir, value);
          if (damagedAt !== undefined) savedAfterDamage.add(dir);
        }
        offset = r.end;
        continue;
      }
      const next = nextValidRecord(bytes, offset + 1);
      // The last record, cut short by the end of the file (or by zeros a filesystem showed past
      // the data written): a crash during its write, before its fdatasync ended, so never
      // answered. Everything from here on goes. A whole record that does not check out was
      // written and rotted since: damage, as one with valid records after it is.
      if (next === undefined && trailingZerosStart(bytes) < r.tornBefore) break;
      damage.push({ file: path, offset, fromLsn: 0, toLsn: 0, reason: `hard-state journal record at ${offset}: ${r.reason}` });
      damagedAt ??= offset;
      // Only a save after the last damage is known to be a directory's newest.
      savedAfterDamage.clear();
      offset = next ?? bytes.length;
    }
    const validEnd = offset;
    if (damagedAt !== undefined) {
      // Whatever the damaged records held is lost: every directory whose newest state may have
      // been there (any not saved after the last damage) reads as damaged.
      const dirs = new Set([...j.entries.keys(), ...(opts.dirs?.() ?? [])]);
      for (const dir of dirs) if (!savedAfterDamage.has(dir)) j.take(dir, DAMAGED);
    }
    if (j.readOnly) {
      j.size = validEnd;
      return j;
    }
    if (damagedAt !== undefined || !disk.exists(path)) {
      j.rewrite();
      if (damagedAt === undefined) j.counters.compactions = 0; // A new file, not a rewrite.
    } else {
      j.fh = disk.open(path);
      if (validEnd < bytes.length) {
        disk.truncate(j.fh, validEnd);
        disk.fdatasync(j.fh);
      }
      j.size = validEnd;
    }
    return j;
  }

  /** What the journal holds for `dir`; throws CorruptionError when damage took its state. */
  lookup(dir: string): HardStateLookup {
    const e = this.entries.get(dir);
    if (e === undefined) return { kind: 'none' };
    if (e.kind === 'damaged') {
      throw new CorruptionError(`the term and vote of ${dir} were lost to damage of the hard-state journal ${this.path}`, [
        { file: this.path, offset: 0, fromLsn: 0, toLsn: 0, reason: `the term and vote of ${dir} were in a damaged record` },
      ]);
    }
    if (e.kind === 'forgotten') return { kind: 'forgotten' };
    return { kind: 'saved', value: e.value };
  }

  /** Saves every entry in one durable step (one fdatasync; several records when over the record bound). */
  saveMany(saves: readonly HardStateSave[]): void {
    if (saves.length === 0) return;
    const entries: Array<[string, unknown]> = saves.map((s) => {
      if (typeof s.key !== 'string' || s.key.length === 0) throw new StorageError('bad_request', 'a hard-state save needs a directory');
      if (s.value === null || typeof s.value !== 'object' || Array.isArray(s.value)) {
        throw new StorageError('bad_request', `the hard state of ${s.key} must be an object`);
      }
      // Bytes as written (UTF-8), not characters: a record's bound is in bytes.
      if (utf8Bytes(s.key) > HARD_STATE_KEY_BYTES_MAX) throw new StorageError('too_large', `a hard-state directory of ${utf8Bytes(s.key)} bytes is over ${HARD_STATE_KEY_BYTES_MAX}`);
      const bytes = utf8Bytes(JSON.stringify(s.value));
      if (bytes > HARD_STATE_VALUE_BYTES_MAX) throw new StorageError('too_large', `the hard state of ${s.key} takes ${bytes} bytes, over ${HARD_STATE_VALUE_BYTES_MAX}`);
      return [s.key, s.value];
    });
    this.append(entries);
    this.counters.saves += entries.length;
  }

  /**
   * Durably records that `dir` is gone (its replica's files lost or destroyed): a replica made
   * there later starts without a term and vote.
   */
  forget(dir: string): void {
    const e = this.entries.get(dir);
    if (e === undefined || e.kind === 'forgotten') return;
    this.append([[dir, null]]);
  }

  stats(): HardStateJournalStats {
    return { bytes: this.size, dirs: this.entries.size, ...this.counters };
  }

  close(): void {
    if (this.fh !== undefined) this.disk.close(this.fh);
    this.fh = undefined;
  }

  private take(dir: string, value: unknown): void {
    const old = this.entries.get(dir);
    if (old?.kind === 'saved') this.liveBytes -= old.bytes;
    if (value === null) this.entries.set(dir, { kind: 'forgotten' });
    else if (value === DAMAGED) this.entries.set(dir, { kind: 'damaged' });
    else {
      const bytes = utf8Bytes(dir) + utf8Bytes(JSON.stringify(value)) + 8;
      this.entries.set(dir, { kind: 'saved', value, bytes });
      this.liveBytes += bytes;
    }
  }

  private append(entries: ReadonlyArray<[string, unknown]>): void {
    if (this.readOnly) throw new StorageError('bad_request', `the hard-state journal ${this.path} is open read only`);
    if (this.fh === undefined) throw new StorageError('closed', `the hard-state journal ${this.path} is closed`);
    const records = this.encode(entries);
    let written = 0;
    try {
      // Stale bytes of a failed append after a shorter record would read as damage at the next open.
      if (this.tailUnknown) this.disk.truncate(this.fh, this.size);
      for (const r of records) {
        this.disk.write(this.fh, r, this.size + written);
        written += r.length;
      }
      this.disk.fdatasync(this.fh);
    } catch (e) {
      // None of these saves is taken: the caller was not answered.
      this.tailUnknown = true;
      throw e;
    }
    this.tailUnknown = false;
    this.size += written;
    this.counters.batches++;
    for (const [dir, value] of entries) this.take(dir, value);
    if (this.size > this.rewriteAtBytes && this.size > 2 * this.liveBytes) {
      try {
        this.rewrite();
        this.rewriteAtBytes = this.compactBytes;
      } catch (e) {
        // These saves are durable already: a rewrite that failed (a full disk) is tried again
        // once the file grew by the bound again. A failed fsync fails the device.
        if (!(e instanceof StorageError) || e.code === 'fsync_failed') throw e;
        this.rewriteAtBytes = this.size + this.compactBytes;
        this.counters.rewriteFailures++;
      }
    }
  }

  /** Records of at most the payload bound each. */
  private encode(entries: ReadonlyArray<readonly [string, unknown]>): Uint8Array[] {
    const out: Uint8Array[] = [];
    let from = 0;
    let bytes = 0;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const b = utf8Bytes(JSON.stringify(e)) + 1;
      if (i > from && bytes + b > HARD_STATE_RECORD_PAYLOAD_BYTES_MAX / 2) {
        out.push(encodeRecord(entries.slice(from, i)));
        from = i;
        bytes = 0;
      }
      bytes += b;
    }
    out.push(encodeRecord(entries.slice(from)));
    return out;
  }

  /**
   * Writes the file anew with one entry per directory that is still there (what it holds of one
   * that is gone would be forgotten at the open of a replica there: ShardStorage.open): a new
   * file, fdatasync'd, renamed over the old one, the directory fsync'd.
   */
  private rewrite(): void {
    const keep: Array<[string, unknown]> = [];
    for (const [dir, e] of this.entries) {
      if (!this.disk.exists(dir)) {
        if (e.kind === 'saved') this.liveBytes -= e.bytes;
        this.entries.delete(dir);
      } else if (e.kind === 'saved') keep.push([dir, e.value]);
      else keep.push([dir, e.kind === 'damaged' ? DAMAGED : null]);
    }
    const tmp = this.path + META_TMP_SUFFIX;
    const records = keep.length > 0 ? this.encode(keep) : [];
    const fh = this.disk.open(tmp, { create: true, truncate: true });
    let size = 0;
    try {
      for (const r of records) {
        this.disk.write(fh, r, size);
        size += r.length;
      }
      this.disk.fdatasync(fh);
      this.disk.rename(tmp, this.path);
    } catch (e) {
      // The old file is the journal still.
      this.disk.close(fh);
      throw e;
    }
    // The name is the new file's from here on: appends go there.
    const old = this.fh;
    this.fh = fh;
    this.size = size;
    this.tailUnknown = false;
    if (old !== undefined) this.disk.close(old);
    this.counters.compactions++;
    this.disk.fsyncDir(parentDir(this.path));
  }
}
