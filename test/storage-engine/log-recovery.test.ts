/**
 * SegmentLog recovery: torn tails at every byte, bit rot in the tail and in the middle, power cuts
 * at every step of roll-over / trim / truncate / reset, fsync failure, damaged segment headers,
 * gaps, leftover temporaries. All on SimDisk.
 */
import { strict as assert } from 'node:assert';
import { crc32c } from '../../storage-engine/crc32c';
import { CorruptionError, StorageError, type CorruptionReport } from '../../storage-engine/errors';
import { LOG_RECOVERY_CHUNK_BYTES, SegmentLog } from '../../storage-engine/log';
import {
  encodeRecord,
  decodeSegmentHeader,
  encodeSegmentHeader,
  parseSegmentName,
  recordBytes,
  recordCrc,
  recordHeaderCheck,
  RECORD_HEADER_BYTES,
  RECORD_HEADER_CHECK_OFFSET,
  RECORD_ZERO_CENSUS_OFFSET,
  segmentName,
  SEGMENT_BYTES_LIMIT,
  SEGMENT_BYTES_MIN,
  SEGMENT_HEADER_BYTES,
  viewOf,
} from '../../storage-engine/log-segment';
import { SimDisk, SimulatedCrash } from '../../storage-engine/sim-disk';
import { assertHistory, history, payloadOf, termOf } from '../support/log-history';
import { tearAtRandom } from '../support/disk';
import { prng } from '../support/prng';

const DIR = 'shard-7/log';
const SEG = 4096;
const pathOf = (name: string): string => `${DIR}/${name}`;

/** Offset of record `lsn` in a segment with base `baseLsn` holding the standard history. */
function offsetOf(lsn: number, baseLsn = 1): number {
  let off = SEGMENT_HEADER_BYTES;
  for (let k = baseLsn; k < lsn; k++) off += recordBytes(payloadOf(k).length);
  return off;
}

function segBases(disk: SimDisk): number[] {
  return disk.list(DIR).map((n) => parseSegmentName(n)).filter((b): b is number => b !== undefined);
}

function isCode(code: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof StorageError, `expected a StorageError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  };
}

function snapshot(disk: SimDisk): Map<string, Uint8Array> {
  const m = new Map<string, Uint8Array>();
  for (const n of disk.list(DIR)) m.set(n, disk.fileBytes(pathOf(n)));
  return m;
}

/** A log holding the standard history 1..lastLsn, synced. */
function logWith(lastLsn: number, segmentBytesMax = 64 * 1024 * 1024): { disk: SimDisk; log: SegmentLog } {
  const disk = new SimDisk();
  const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax });
  log.write(history(1, lastLsn));
  log.sync();
  return { disk, log };
}

function reopen(disk: SimDisk, segmentBytesMax = SEG): SegmentLog {
  return SegmentLog.open(disk, { dir: DIR, segmentBytesMax });
}

/** Asserts the log refuses every mutation but reset because of corruption. */
function assertReadOnly(log: SegmentLog): void {
  const isCorruption = (e: unknown): boolean => e instanceof CorruptionError && e.code === 'corruption';
  assert.throws(() => log.write(history(log.lastLsn + 1, log.lastLsn + 1)), isCorruption);
  assert.throws(() => log.truncateSuffix(log.lastLsn), isCorruption);
}

/** Appends `from..to`, cuts the power and reopens: the log is sound and holds `first..to`. */
function assertAppendsSurvive(disk: SimDisk, log: SegmentLog, from: number, to: number, first = 1, what = ''): void {
  log.write(history(from, to));
  log.sync();
  disk.powerCut();
  const again = reopen(disk);
  assert.deepEqual(again.corruption, [], what);
  assertHistory(again, first, to);
}

describe('SegmentLog recovery', () => {
  it('(a) a torn last write, at every byte, keeps exactly the whole records before the tear', function () {
    // Thousands of reopened logs: about 20 s of CPU on an idle machine, much more on a loaded one.
    this.timeout(180_000);
    const batch = history(6, 8);
    const path = pathOf(segmentName(1));
    // The batch lands on zeros written ahead, so a tear that loses only a record's trailing zero
    // bytes leaves that record whole: a record survives once the tear keeps its last non-zero byte.
    const encoded = (() => {
      const { disk, log } = logWith(8);
      log.close();
      return disk.fileBytes(path).subarray(offsetOf(6), offsetOf(9));
    })();
    const needed: number[] = [];
    let start = 0;
    for (const r of batch) {
      const end = start + recordBytes(r.payload.length);
      let last = end;
      while (last > start && encoded[last - 1] === 0) last--;
      needed.push(last);
      start = end;
    }
    for (let keep = 0; keep <= start; keep++) {
      const { disk, log } = logWith(5);
      log.write(batch); // one disk write, never synced
      const report = disk.powerCut({ tear: { path, keepBytes: keep } });
      assert.equal(report.tornBytes, keep);
      const whole = needed.filter((e) => e <= keep).length;
      const again = reopen(disk);
      assert.deepEqual(again.corruption, [], `keep=${keep}`);
      assert.equal(again.lastLsn, 5 + whole, `keep=${keep}`);
      assert.equal(again.syncedLsn, 5 + whole);
      // The torn bytes are cut off, durably; only the zeros written ahead may stay after the end.
      for (const bytes of [disk.fileBytes(path), disk.durableBytes(path)]) {
        assert.ok(bytes.length >= offsetOf(6 + whole), `keep=${keep}`);
        assert.ok(bytes.subarray(offsetOf(6 + whole)).every((b) => b === 0), `keep=${keep}: nothing but zeros after the end`);
      }
      assertHistory(again, 1, 5 + whole);
      // Appends continue after the cut and survive the next power cut.
      again.write(history(6 + whole, 10));
      again.sync();
      disk.powerCut();
      assertHistory(reopen(disk), 1, 10);
    }
  });

  it('(b) the last record cut short (zeros from within it to its end), nothing valid after it: a torn tail', () => {
    const { disk } = logWith(5);
    const path = pathOf(segmentName(1));
    disk.zeroBytes(path, offsetOf(5) + 40, offsetOf(6) - offsetOf(5) - 40);
    const log = reopen(disk);
    assert.deepEqual(log.corruption, []);
    assert.equal(log.lastLsn, 4);
    assert.equal(disk.durableBytes(path).length, offsetOf(5));
    log.write(history(5, 6));
    log.sync();
    assertHistory(log, 1, 6);
  });

  it('(b) the last record\'s payload damaged, every sector of it written, nothing valid after it: reported lost, not cut', () => {
    const { disk, log } = logWith(5);
    log.close();
    const path = pathOf(segmentName(1));
    disk.flipBits(path, offsetOf(5) + 40, 3);
    const before = snapshot(disk);
    const again = reopen(disk);
    assert.deepEqual(again.corruption.map((c) => [c.offset, c.fromLsn, c.toLsn]), [[offsetOf(5), 5, 5]]);
    assert.match(again.corruption[0]!.reason, /^record checksum mismatch; its zeros are where they were written/);
    assertHistory(again, 1, 4);
    assertReadOnly(again);
    assert.deepEqual(snapshot(disk), before, 'nothing truncated');
  });

  /** Payloads holding zeros as data: each reads as torn when it rots unless its header has a zero census. */
  function payloadsWithZeros(): Array<[string, Uint8Array]> {
    const endsInZero = new Uint8Array(1500).fill(7);
    endsInZero[1499] = 0;
    const zeroSector = new Uint8Array(2000).fill(7);
    zeroSector.fill(0, 600, 1700); // whatever the record's offset, a whole aligned sector in it
    const mostlyZeros = new Uint8Array(4096);
    mostlyZeros.set([7, 7, 7, 7, 7], 0);
    mostlyZeros[2500] = 7;
    return [
      ['ends in a zero byte', endsInZero],
      ['holds a sector of zeros', zeroSector],
      ['a page of zeros', new Uint8Array(4096)],
      ['a page of zeros but for a few bytes', mostlyZeros],
    ];
  }

  /** A log of the standard history 1..4 and record 5 holding `payload`, synced and closed. */
  function logEndingWith(payload: Uint8Array): SimDisk {
    const { disk, log } = logWith(4);
    log.write([{ term: termOf(5), kind: 1, payload }]);
    log.sync();
    log.close();
    return disk;
  }

  it('(b) damage in a last record that holds zeros (ends in them, a sector of them, a page of them), nothing valid after it: its header\'s zero census tells it from a torn write, so it is reported lost, not cut', () => {
    const payloadAt = offsetOf(5) + RECORD_HEADER_BYTES;
    for (const [what, payload] of payloadsWithZeros()) {
      let last = payload.length - 1;
      while (last >= 0 && payload[last] === 0) last--;
      const firstZero = payload.indexOf(0);
      const places: Array<[string, number]> = [['a zero byte', firstZero]];
      if (last >= 0) places.push(['its last non-zero byte', last]);
      if (last >= 0 && last + 1 < payload.length) places.push(['the zero byte after its last non-zero one', last + 1]);
      for (const [where, at] of places) {
        const disk = logEndingWith(payload);
        const path = pathOf(segmentName(1));
        disk.flipBits(path, payloadAt + at, 1);
        const before = snapshot(disk);
        const again = reopen(disk);
        const label = `${what}, ${where} (${at}) damaged`;
        assert.deepEqual(again.corruption.map((c) => [c.offset, c.fromLsn, c.toLsn]), [[offsetOf(5), 5, 5]], label);
        assert.match(again.corruption[0]!.reason, /^record checksum mismatch; its zeros are where they were written/, label);
        assertHistory(again, 1, 4);
        assertReadOnly(again);
        assert.deepEqual(snapshot(disk), before, `${label}: nothing truncated`);
      }
    }
  });

  it('(b) a last record that holds zeros, its write cut short (at every byte, or any one sector of it not written), reads as a torn tail', function () {
    this.timeout(180_000);
    const path = pathOf(segmentName(1));
    const at = offsetOf(5);
    for (const [what, payload] of payloadsWithZeros()) {
      const encoded = (() => {
        const disk = logEndingWith(payload);
        return disk.fileBytes(path).subarray(at, at + recordBytes(payload.length));
      })();
      // The record survives once what was written holds its last non-zero byte.
      let needed = encoded.length;
      while (encoded[needed - 1] === 0) needed--;
      for (let keep = 0; keep <= encoded.length; keep++) {
        const { disk, log } = logWith(4);
        log.write([{ term: termOf(5), kind: 1, payload }]); // one disk write, never synced
        disk.powerCut({ tear: { path, keepBytes: keep } });
        const again = reopen(disk);
        const label = `${what}: keep=${keep}`;
        assert.deepEqual(again.corruption, [], label);
        assert.equal(again.lastLsn, keep >= needed ? 5 : 4, label);
        again.close();
      }
      // A sector of the file the write did not reach while it reached the others: zeros there.
      for (let s = Math.floor(at / 512) * 512; s < at + encoded.length; s += 512) {
        const from = Math.max(s, at);
        const to = Math.min(s + 512, at + encoded.length);
        const disk = logEndingWith(payload);
        disk.zeroBytes(path, from, to - from);
        const lost = encoded.subarray(from - at, to - at).some((b) => b !== 0);
        const again = reopen(disk);
        const label = `${what}: sector at ${s} not written`;
        assert.deepEqual(again.corruption, [], label);
        assert.equal(again.lastLsn, lost ? 4 : 5, label);
        again.close();
      }
    }
  });

  describe('(b) the last record, at random', () => {
    /** A payload of runs of data and zeros (pages of zeros, zero tails, zero sectors), at random. */
    function randomPayload(rand: () => number): Uint8Array {
      const bytes = new Uint8Array(rand() < 0.3 ? 4096 : 1 + Math.floor(rand() * 6000));
      if (rand() < 0.1) return bytes;
      for (let p = 0; p < bytes.length; ) {
        const run = 1 + Math.floor(rand() ** 2 * 1200);
        if (rand() < 0.5) for (let k = p; k < Math.min(bytes.length, p + run); k++) bytes[k] = 1 + Math.floor(rand() * 255);
        p += run;
      }
      return bytes;
    }

    /** A log of records 1..4, then record 5 holding `payload` after a record of `lead` bytes (which places it in its sectors), synced and closed. */
    function logOf(payload: Uint8Array, lead: number): { disk: SimDisk; at: number; end: number } {
      const { disk, log } = logWith(3);
      log.write([{ term: termOf(4), kind: 1, payload: new Uint8Array(lead).fill(9) }]);
      const at = log.stats().bytes;
      log.write([{ term: termOf(5), kind: 1, payload }]); // (a padding record may follow it)
      log.sync();
      log.close();
      return { disk, at, end: at + recordBytes(payload.length) };
    }

    it('a write a crash cut short (the file ending in it, zeros from any byte of it on, any of its sectors not written, its header\'s included) is a torn tail, never damage', () => {
      const rand = prng(5101);
      const path = pathOf(segmentName(1));
      for (let round = 0; round < 1500; round++) {
        const payload = randomPayload(rand);
        const { disk, at, end } = logOf(payload, Math.floor(rand() * 1024));
        const before = disk.fileBytes(path);
        tearAtRandom(disk, path, at, end, rand);
        const after = disk.fileBytes(path);
        const changed = after.length < end || after.subarray(at, end).some((b, i) => b !== before[at + i]);
        const again = reopen(disk);
        const label = `round ${round}: ${payload.length} bytes at ${at}`;
        assert.deepEqual(again.corruption, [], label);
        assert.equal(again.lastLsn, changed ? 4 : 5, label);
        again.close();
      }
    });

    it('a bit of it rotted is reported, never cut as a torn tail, but for one that leaves zeros a crash could have left', () => {
      const rand = prng(5102);
      const path = pathOf(segmentName(1));
      let reported = 0;
      for (let round = 0; round < 1500; round++) {
        const payload = randomPayload(rand);
        const { disk, at } = logOf(payload, Math.floor(rand() * 1024));
        const k = at + Math.floor(rand() * (RECORD_HEADER_BYTES + payload.length)); // (its padding is no part of it)
        const was = disk.fileBytes(path)[k]!;
        disk.flipBits(path, k, 1);
        // A byte of data that became zero is what a crash may leave too (read as torn, as documented).
        if (was !== 0 && disk.fileBytes(path)[k] === 0) continue;
        const again = reopen(disk);
        const label = `round ${round}: ${payload.length} bytes at ${at}, byte ${k - at} (${was})`;
        assert.deepEqual(again.corruption.map((c) => [c.offset, c.fromLsn, c.toLsn]), [[at, 5, 5]], label);
        reported++;
        again.close();
      }
      assert.ok(reported > 1000, `${reported} reported`);
    });
  });

  it('(b) the zero census of a last record past the first read of recovery (an 8 MiB window further on) tells rot from a torn write there too', () => {
    const zeroish = new Uint8Array(4096);
    zeroish.set([7, 7, 7], 100);
    const setup = (): { disk: SimDisk; at: number } => {
      const disk = new SimDisk();
      const log = SegmentLog.open(disk, { dir: DIR });
      const page = new Uint8Array(4096).fill(5);
      for (let i = 0; i < 9; i++) log.write(Array.from({ length: 256 }, () => ({ term: 1, kind: 1, payload: page })));
      log.write([{ term: 1, kind: 1, payload: zeroish }]);
      log.sync();
      const at = log.stats().bytes - recordBytes(zeroish.length);
      log.close();
      assert.ok(at > LOG_RECOVERY_CHUNK_BYTES, `the last record (at ${at}) lies past the first read`);
      return { disk, at };
    };
    const path = pathOf(segmentName(1));
    const rotted = setup();
    rotted.disk.flipBits(path, rotted.at + RECORD_HEADER_BYTES + 3000, 1);
    const a = reopen(rotted.disk);
    assert.deepEqual(a.corruption.map((c) => [c.offset, c.fromLsn, c.toLsn]), [[rotted.at, 9 * 256 + 1, 9 * 256 + 1]]);
    const torn = setup();
    torn.disk.zeroBytes(path, torn.at + RECORD_HEADER_BYTES + 100, 3);
    const b = reopen(torn.disk);
    assert.deepEqual(b.corruption, []);
    assert.equal(b.lastLsn, 9 * 256);
  });

  it('(b) a record written before headers had a zero census (the field zero) reads as before: damage in it is a torn tail when it ends in a zero byte or holds a sector of zeros, reported otherwise', () => {
    for (const [what, payload] of [...payloadsWithZeros(), ['no zeros', new Uint8Array(1500).fill(7)] as [string, Uint8Array]]) {
      const disk = logEndingWith(payload);
      const path = pathOf(segmentName(1));
      const at = offsetOf(5);
      const rec = disk.fileBytes(path).slice(at, at + recordBytes(payload.length));
      const view = viewOf(rec);
      assert.notEqual(rec[RECORD_ZERO_CENSUS_OFFSET]! | rec[RECORD_ZERO_CENSUS_OFFSET + 1]! | rec[RECORD_ZERO_CENSUS_OFFSET + 2]!, 0, 'records are written with a census');
      rec.fill(0, RECORD_ZERO_CENSUS_OFFSET, RECORD_ZERO_CENSUS_OFFSET + 3);
      view.setUint32(RECORD_HEADER_CHECK_OFFSET, recordHeaderCheck(rec, 0), true);
      view.setUint32(4, recordCrc(rec, 0, payload.length), true);
      const fh = disk.open(path);
      disk.write(fh, rec, at);
      disk.fdatasync(fh);
      disk.close(fh);
      const whole = reopen(disk);
      assert.deepEqual(whole.corruption, [], what);
      assert.equal(whole.lastLsn, 5, what);
      whole.close();
      const firstNonZero = payload.findIndex((b) => b !== 0);
      disk.flipBits(path, at + RECORD_HEADER_BYTES + (firstNonZero >= 0 ? firstNonZero : 0), 1);
      const again = reopen(disk);
      if (payload.includes(0)) {
        assert.deepEqual(again.corruption, [], what);
        assert.equal(disk.durableBytes(path).length, at, `${what}: cut as a torn tail`);
      } else {
        assert.deepEqual(again.corruption.map((c) => [c.offset, c.fromLsn, c.toLsn]), [[at, 5, 5]], what);
        assert.match(again.corruption[0]!.reason, /; every sector of it was written/, what);
      }
      assert.equal(again.lastLsn, 4, what);
    }
  });

  it('(b) a last record whose header lies across a sector boundary, its first sector not written while its second was: a torn tail', () => {
    // Record 5's length puts record 6's header at 8 bytes before a sector boundary.
    const o5 = offsetOf(5);
    const len = (((504 - o5 - RECORD_HEADER_BYTES) % 512) + 512) % 512;
    const { disk, log } = logWith(4);
    log.write([{ term: termOf(5), kind: 1, payload: new Uint8Array(len).fill(9) }]);
    log.write(history(6, 6));
    log.sync();
    log.close();
    const o6 = o5 + recordBytes(len);
    assert.equal(o6 % 512, 504);
    const path = pathOf(segmentName(1));
    disk.zeroBytes(path, o6, 8); // its length and CRC
    const again = reopen(disk);
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, 5);
    assert.equal(disk.durableBytes(path).length, o6, 'cut as a torn tail');
  });

  it('(b) the last record\'s header damaged (its length, its LSN), nothing valid after it: its header check tells it from a torn write, so it is reported lost, not cut', () => {
    for (const [at, what] of [[3, 'length out of bounds'], [1, 'length running into the zeros written ahead'], [8, 'LSN']] as const) {
      const { disk, log } = logWith(5);
      log.close();
      const path = pathOf(segmentName(1));
      disk.flipBits(path, offsetOf(5) + at, 1);
      const before = snapshot(disk);
      const again = reopen(disk);
      assert.deepEqual(
        again.corruption.map((c) => ({ offset: c.offset, fromLsn: c.fromLsn, toLsn: c.toLsn })),
        [{ offset: offsetOf(5), fromLsn: 5, toLsn: 5 }],
        what,
      );
      assert.match(again.corruption[0]!.reason, /; its header does not match its check/);
      assert.equal(again.lastLsn, 4, what);
      assertHistory(again, 1, 4);
      assertReadOnly(again);
      assert.deepEqual(snapshot(disk), before, `${what}: nothing truncated`);
    }
  });

  it('(b) a record written before headers had a check (the field zero) reads as before: its header damaged at the end of the log is a torn tail', () => {
    const { disk, log } = logWith(5);
    log.close();
    const path = pathOf(segmentName(1));
    // Record 5 as it was written before: no check, its CRC over the header as it then was.
    const bytes = disk.fileBytes(path);
    const at = offsetOf(5);
    const rec = bytes.slice(at, at + recordBytes(payloadOf(5).length));
    const view = viewOf(rec);
    assert.notEqual(view.getUint32(RECORD_HEADER_CHECK_OFFSET, true), 0, 'records are written with a check');
    view.setUint32(RECORD_HEADER_CHECK_OFFSET, 0, true);
    view.setUint32(4, recordCrc(rec, 0, payloadOf(5).length), true);
    const fh = disk.open(path);
    disk.write(fh, rec, at);
    disk.fdatasync(fh);
    disk.close(fh);
    const whole = reopen(disk);
    assert.deepEqual(whole.corruption, []);
    assertHistory(whole, 1, 5);
    whole.close();
    disk.flipBits(path, at + 3, 1);
    const again = reopen(disk);
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, 4);
    assert.equal(disk.durableBytes(path).length, at, 'cut as a torn tail');
  });

  it('(c) a bit flip in a middle record with valid records after it is corruption: reported, nothing truncated, writes refused', () => {
    const { disk } = logWith(10);
    const path = pathOf(segmentName(1));
    disk.flipBits(path, offsetOf(4) + 100, 1);
    const before = snapshot(disk);
    const log = reopen(disk);
    const expected: CorruptionReport[] = [
      { file: path, offset: offsetOf(4), fromLsn: 4, toLsn: 4, reason: 'record checksum mismatch' },
    ];
    assert.deepEqual(log.corruption, expected);
    assert.deepEqual([log.firstLsn, log.lastLsn, log.lastTerm], [1, 3, termOf(3)]);
    assertHistory(log, 1, 3);
    assert.throws(() => log.read(4, 4), isCode('out_of_range'));
    assertReadOnly(log);
    log.sync(); // nothing to do, not an error
    assert.deepEqual(snapshot(disk), before, 'no byte on disk changed');
    // Reopening again reports the same and still changes nothing.
    disk.powerCut();
    assert.deepEqual(reopen(disk).corruption, expected);
    assert.deepEqual(snapshot(disk), before);
    // reset is the repair tool: it clears the corruption.
    const repaired = reopen(disk);
    repaired.reset(11, termOf(10));
    assert.deepEqual(repaired.corruption, []);
    assertAppendsSurvive(disk, repaired, 11, 12, 11);
  });

  it('(c) damage over several records reports the whole lost range', () => {
    const { disk } = logWith(10);
    disk.flipBits(pathOf(segmentName(1)), offsetOf(4), offsetOf(7) - offsetOf(4)); // records 4, 5, 6
    const log = reopen(disk);
    assert.equal(log.corruption.length, 1);
    assert.deepEqual([log.corruption[0]!.fromLsn, log.corruption[0]!.toLsn, log.lastLsn], [4, 6, 3]);
  });

  it('(c) damage at the end of a sealed segment is corruption even if the next segment is empty', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 40)); // rolls over: sealed segments are synced, the last one is not
    const bases = segBases(disk);
    assert.ok(bases.length >= 3);
    disk.powerCut(); // the active segment's records are lost, its header is not
    const lastBase = bases[bases.length - 1]!;
    const sealedBase = bases[bases.length - 2]!;
    const again = reopen(disk);
    assert.equal(again.lastLsn, lastBase - 1);
    again.close();
    // The last record of the sealed segment rots.
    const sealedPath = pathOf(segmentName(sealedBase));
    disk.flipBits(sealedPath, offsetOf(lastBase - 1, sealedBase) + 40, 1);
    const before = snapshot(disk);
    const bad = reopen(disk);
    assert.deepEqual(
      bad.corruption.map((c) => [c.file, c.offset, c.fromLsn, c.toLsn]),
      [[sealedPath, offsetOf(lastBase - 1, sealedBase), lastBase - 1, lastBase - 1]],
    );
    assert.equal(bad.lastLsn, lastBase - 2);
    assertReadOnly(bad);
    assert.deepEqual(snapshot(disk), before);
  });

  it('(d) a power cut after every mutating step of segment roll-overs leaves a valid log with everything synced', () => {
    const setup = (): { disk: SimDisk; log: SegmentLog } => logWith(10, SEG);
    const step = (log: SegmentLog): void => {
      log.write(history(11, 40)); // several roll-overs
      log.sync();
      log.write(history(41, 45));
      log.sync();
    };
    const probe = setup();
    const ops0 = probe.disk.mutatingOps;
    step(probe.log);
    const stepOps = probe.disk.mutatingOps - ops0;
    assert.ok(stepOps >= 15, `roll-overs take many steps (${stepOps})`);
    const seen = new Set<number>();
    for (let n = 0; n <= stepOps; n++) {
      const { disk, log } = setup();
      disk.crashAfter(n);
      let crashed = false;
      try {
        step(log);
      } catch (e) {
        assert.ok(e instanceof SimulatedCrash, `n=${n}: ${String(e)}`);
        crashed = true;
      }
      assert.equal(crashed, n < stepOps, `n=${n}`);
      const durable = log.syncedLsn;
      disk.powerCut();
      const again = reopen(disk);
      assert.deepEqual(again.corruption, [], `n=${n}`);
      assert.ok(again.lastLsn >= durable && again.lastLsn <= 45, `n=${n}: lastLsn ${again.lastLsn}, durable ${durable}`);
      seen.add(again.lastLsn);
      assertHistory(again, 1, again.lastLsn);
      // The recovered log takes appends and survives another power cut.
      assertAppendsSurvive(disk, again, again.lastLsn + 1, 50);
      assert.deepEqual(disk.list(DIR).filter((x) => !x.endsWith('.log')), [], 'no temporaries left');
    }
    assert.ok(seen.has(10) && seen.has(45) && seen.size >= 3, `crash points cover several outcomes: ${[...seen]}`);
  });

  it('(d) a power cut at every step of trimPrefix, truncateSuffix and reset never damages the log', () => {
    const cases: { name: string; op: (log: SegmentLog) => void; check: (log: SegmentLog) => void }[] = [
      {
        name: 'trimPrefix',
        op: (log) => log.trimPrefix(60),
        check: (log) => {
          assert.equal(log.lastLsn, 80);
          assertHistory(log, log.firstLsn, 80);
        },
      },
      {
        name: 'truncateSuffix',
        op: (log) => log.truncateSuffix(20),
        check: (log) => {
          assert.ok(log.lastLsn === 19 || log.lastLsn === 80 || log.lastLsn >= 20, String(log.lastLsn));
          assertHistory(log, 1, log.lastLsn);
        },
      },
      {
        name: 'reset',
        op: (log) => log.reset(500, 9),
        check: (log) => {
          if (log.firstLsn === 500) {
            assert.deepEqual([log.lastLsn, log.lastTerm], [499, 9]);
          } else {
            assert.deepEqual([log.firstLsn, log.lastLsn], [1, 80]);
            assertHistory(log, 1, 80);
          }
        },
      },
    ];
    for (const c of cases) {
      const probe = logWith(80, SEG);
      const ops0 = probe.disk.mutatingOps;
      c.op(probe.log);
      const stepOps = probe.disk.mutatingOps - ops0;
      assert.ok(stepOps >= 3, c.name);
      for (let n = 0; n <= stepOps; n++) {
        const { disk, log } = logWith(80, SEG);
        disk.crashAfter(n);
        try {
          c.op(log);
        } catch (e) {
          assert.ok(e instanceof SimulatedCrash, `${c.name} n=${n}: ${String(e)}`);
        }
        disk.powerCut();
        const again = reopen(disk);
        assert.deepEqual(again.corruption, [], `${c.name} n=${n}`);
        c.check(again);
        // Finishing the operation after recovery gives the final state.
        if (c.name === 'truncateSuffix' && again.lastLsn >= 20) again.truncateSuffix(20);
        if (c.name === 'reset' && again.firstLsn !== 500) again.reset(500, 9);
        again.write([{ term: 60, kind: 2, payload: new Uint8Array(0) }]);
        again.sync();
        disk.powerCut();
        const third = reopen(disk);
        assert.deepEqual(third.corruption, []);
        assert.equal(third.lastTerm, 60);
        assert.equal(third.lastLsn, c.name === 'trimPrefix' ? 81 : c.name === 'truncateSuffix' ? 20 : 500);
        assert.deepEqual(disk.list(DIR).filter((x) => !x.endsWith('.log')), [], `${c.name} n=${n}: no temporaries`);
      }
    }
  });

  it('(e) a failed fsync fails the log for good; after a power cut the unsynced records are gone', () => {
    const { disk, log } = logWith(3);
    log.write(history(4, 6));
    disk.failFsync({ path: DIR });
    assert.throws(() => log.sync(), isCode('fsync_failed'));
    assert.equal(log.syncedLsn, 3);
    assert.throws(() => log.write(history(7, 7)), isCode('device_failed'));
    assert.throws(() => log.sync(), isCode('device_failed'), 'no retry of a failed fsync');
    assert.throws(() => log.trimPrefix(1), isCode('device_failed'));
    assert.throws(() => log.reset(1, 0), isCode('device_failed'));
    assert.throws(() => log.read(1, 4), isCode('device_failed'), 'unsynced records are not served');
    assert.throws(() => log.termAt(5), isCode('device_failed'));
    assertHistory(log, 1, 3);
    disk.powerCut();
    const again = reopen(disk);
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, 3);
    assertHistory(again, 1, 3);
  });

  it('(e) a failed fsync while sealing a segment fails the write and the log', () => {
    const { disk, log } = logWith(5, SEG);
    disk.failFsync({ path: DIR });
    assert.throws(() => log.write(history(6, 40)), isCode('fsync_failed'));
    assert.equal(log.syncedLsn, 5);
    assert.throws(() => log.write(history(41, 41)), isCode('device_failed'));
    disk.powerCut();
    const again = reopen(disk);
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, 5);
    assert.equal(segBases(disk).length, 1);
  });

  it('(e) a reopen after a process crash makes the records it reads durable before it counts them synced', () => {
    const { disk, log } = logWith(5);
    // Written, never synced: the process ends with them in the page cache only.
    log.write(history(6, 9));
    log.close();
    const again = reopen(disk, 64 * 1024 * 1024);
    assert.equal(again.lastLsn, 9);
    assert.equal(again.syncedLsn, 9, 'every record read counts as durable');
    // Nothing else is written or synced: the reopen's own flush is what keeps them.
    disk.powerCut();
    const third = reopen(disk, 64 * 1024 * 1024);
    assert.deepEqual(third.corruption, []);
    assert.equal(third.lastLsn, 9, 'records counted durable survive a power cut');
    assertHistory(third, 1, 9);
  });

  describe('(e) a reopen after a failed directory fsync (as a host reopens a failed device, or a process restarts)', () => {
    /** A SimDisk whose next `failDirs` directory fsyncs fail (file fdatasyncs still work). */
    class DirFsyncFails extends SimDisk {
      failDirs = 0;
      override fsyncDir(dir: string): void {
        if (this.failDirs > 0) {
          this.failDirs--;
          throw new StorageError('fsync_failed', `fsyncDir ${dir}: EIO (test)`, { errno: 'EIO', path: dir });
        }
        super.fsyncDir(dir);
      }
    }

    it('makes the new segment it finds durable: records appended to it and synced survive a power cut', () => {
      const disk = new DirFsyncFails();
      const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
      log.write(history(1, 5));
      log.sync();
      const before = segBases(disk);
      // A roll-over whose new segment is renamed into place, then the directory fsync fails.
      disk.failDirs = 1;
      let lsn = 5;
      assert.throws(() => {
        for (;;) log.write(history(++lsn, lsn));
      }, isCode('fsync_failed'));
      assert.equal(segBases(disk).length, before.length + 1, 'the new segment is in the directory, not yet durably');
      const again = reopen(disk);
      const acked = again.lastLsn + 3;
      again.write(history(again.lastLsn + 1, acked));
      again.sync(); // acknowledged from here on
      disk.powerCut();
      const third = reopen(disk);
      assert.deepEqual(third.corruption, []);
      assert.equal(third.lastLsn, acked, 'records synced after the reopen survive the power cut');
      assertHistory(third, 1, acked);
    });

    it('makes the removals of a failed truncateSuffix durable: a power cut cannot bring back the records it cut', () => {
      const disk = new DirFsyncFails();
      const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
      log.write(history(1, 40));
      log.sync();
      const bases = segBases(disk);
      assert.ok(bases.length >= 3);
      const from = bases[bases.length - 2]! + 1; // inside the segment before the newest: that one goes
      disk.failDirs = 1;
      assert.throws(() => log.truncateSuffix(from), isCode('fsync_failed'));
      const again = reopen(disk);
      assert.ok(again.lastLsn < bases[bases.length - 1]!, 'the newest segment is gone from the directory');
      again.truncateSuffix(from);
      again.write([{ term: 60, kind: 2, payload: new Uint8Array(0) }]);
      again.sync();
      disk.powerCut();
      const third = reopen(disk);
      assert.deepEqual(third.corruption, [], 'no removed segment came back');
      assert.deepEqual([third.lastLsn, third.lastTerm], [from, 60]);
      assertHistory(third, 1, from - 1);
    });
  });

  it('(f) a damaged header of a middle segment is corruption', () => {
    const { disk } = logWith(60, SEG);
    const bases = segBases(disk);
    assert.ok(bases.length >= 4);
    const path = pathOf(segmentName(bases[1]!));
    disk.flipBits(path, 20, 1); // inside baseLsn
    const before = snapshot(disk);
    const log = reopen(disk);
    assert.deepEqual(log.corruption, [
      { file: path, offset: 0, fromLsn: bases[1]!, toLsn: bases[2]! - 1, reason: 'segment header checksum mismatch' },
    ]);
    assert.equal(log.lastLsn, bases[1]! - 1);
    assertHistory(log, 1, log.lastLsn);
    assertReadOnly(log);
    assert.deepEqual(snapshot(disk), before);
  });

  it('(f) a damaged header of the first segment leaves an empty read-only log', () => {
    const { disk } = logWith(60, SEG);
    const bases = segBases(disk);
    disk.flipBits(pathOf(segmentName(1)), 0, 1); // magic
    const log = reopen(disk);
    assert.deepEqual(log.corruption.map((c) => [c.offset, c.fromLsn, c.toLsn, c.reason]), [
      [0, 1, bases[1]! - 1, 'segment header magic mismatch'],
    ]);
    assert.deepEqual([log.firstLsn, log.lastLsn], [1, 0]);
    assertReadOnly(log);
    log.reset(61, termOf(60));
    assert.deepEqual(log.corruption, []);
    assert.deepEqual(segBases(disk), [61]);
  });

  it('(f) a damaged header of an empty last segment is a torn creation: removed', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 40));
    disk.powerCut(); // the last segment keeps only its header
    const bases = segBases(disk);
    const lastBase = bases[bases.length - 1]!;
    disk.flipBits(pathOf(segmentName(lastBase)), 30, 2);
    const again = reopen(disk);
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, lastBase - 1);
    assert.deepEqual(segBases(disk), bases.slice(0, -1));
    again.write(history(lastBase, lastBase + 3));
    again.sync();
    disk.powerCut();
    assertHistory(reopen(disk), 1, lastBase + 3);
  });

  it('(c) damage at the end of a sealed segment is corruption even if the next segment holds nothing valid (its header zeros too): judged on its own bytes, not the next segment\'s', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 40));
    log.sync();
    log.close();
    const bases = segBases(disk);
    assert.ok(bases.length >= 3);
    const lastBase = bases[bases.length - 1]!;
    const sealedBase = bases[bases.length - 2]!;
    const sealedPath = pathOf(segmentName(sealedBase));
    const lastPath = pathOf(segmentName(lastBase));
    // The sealed segment's last record rots (a bit of its payload: every sector of it was
    // written); the last segment is all zeros, header and records. Recovery looks for anything
    // valid in the last segment before it judges the damaged record: that look must not leave
    // the last segment's zeros in place of the sealed segment's bytes.
    disk.flipBits(sealedPath, offsetOf(lastBase - 1, sealedBase) + RECORD_HEADER_BYTES + 10, 1);
    disk.zeroBytes(lastPath, 0, disk.fileBytes(lastPath).length);
    const before = snapshot(disk);
    const bad = reopen(disk);
    assert.deepEqual(
      bad.corruption.map((c) => [c.file, c.offset, c.fromLsn, c.toLsn]),
      [[sealedPath, offsetOf(lastBase - 1, sealedBase), lastBase - 1, lastBase - 1]],
    );
    assert.match(bad.corruption[0]!.reason, /not a torn write/);
    assert.equal(bad.lastLsn, lastBase - 2);
    assertReadOnly(bad);
    assert.deepEqual(snapshot(disk), before, 'nothing cut, no segment removed');
  });

  it('(b) a torn tail in the segment before a torn creation: truncated, and the later file removed', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 40));
    disk.powerCut(); // the last segment keeps only its header
    const bases = segBases(disk);
    const lastBase = bases[bases.length - 1]!;
    const sealedBase = bases[bases.length - 2]!;
    disk.flipBits(pathOf(segmentName(lastBase)), 30, 2);
    // The sealed segment's last record cut short: zeros from within it to its end.
    disk.zeroBytes(pathOf(segmentName(sealedBase)), offsetOf(lastBase - 1, sealedBase) + 40, offsetOf(lastBase, sealedBase) - offsetOf(lastBase - 1, sealedBase) - 40);
    const again = reopen(disk);
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, lastBase - 2);
    assert.deepEqual(segBases(disk), bases.slice(0, -1));
    assert.equal(disk.durableBytes(pathOf(segmentName(sealedBase))).length, offsetOf(lastBase - 1, sealedBase));
    again.write(history(lastBase - 1, lastBase + 3));
    again.sync();
    disk.powerCut();
    assertHistory(reopen(disk), 1, lastBase + 3);
  });

  it('(f) a damaged header of a last segment holding records is corruption', () => {
    const { disk } = logWith(60, SEG);
    const bases = segBases(disk);
    const lastBase = bases[bases.length - 1]!;
    disk.flipBits(pathOf(segmentName(lastBase)), 9, 1); // version
    const log = reopen(disk);
    assert.equal(log.corruption.length, 1);
    assert.deepEqual([log.corruption[0]!.fromLsn, log.corruption[0]!.toLsn], [lastBase, 60]);
    assert.equal(log.lastLsn, lastBase - 1);
    assert.ok(segBases(disk).includes(lastBase), 'not deleted');
  });

  it('(b) a record with a valid checksum and the next LSN but a lower term than the one before it ends the valid prefix', () => {
    const { disk, log } = logWith(12); // LSN 10..12 are of term 2
    const end = log.stats().bytes;
    log.close();
    // Terms never decrease in a log: such a record is not one this log wrote after LSN 12.
    const payload = payloadOf(13);
    const buf = new Uint8Array(recordBytes(payload.length));
    encodeRecord(buf, viewOf(buf), 0, 13, 1, 1, payload);
    const fh = disk.open(pathOf(segmentName(1)));
    disk.write(fh, buf, end);
    disk.fdatasync(fh);
    disk.close(fh);
    const again = reopen(disk, 64 * 1024 * 1024);
    assert.deepEqual([again.lastLsn, again.lastTerm], [12, 2]);
    assertHistory(again, 1, 12);
  });

  it('(f) a segment whose header prevTerm differs from the term of the record before it is corruption', () => {
    const { disk, log } = logWith(30, SEG);
    log.close();
    const bases = segBases(disk);
    assert.ok(bases.length >= 3);
    const base = bases[1]!;
    const path = pathOf(segmentName(base));
    const header = encodeSegmentHeader({ baseLsn: base, prevTerm: termOf(base - 1) + 1, segmentBytesMax: SEG });
    const fh = disk.open(path);
    disk.write(fh, header, 0);
    disk.fdatasync(fh);
    disk.close(fh);
    const again = reopen(disk);
    assert.equal(again.lastLsn, base - 1, 'the valid prefix ends before that segment');
    assert.equal(again.corruption.length, 1);
    assert.equal(again.corruption[0]!.file, path);
    assert.equal(again.corruption[0]!.fromLsn, base);
    assert.match(again.corruption[0]!.reason, /prevTerm/);
    assert.throws(() => again.write(history(base, base)), (e: unknown) => e instanceof CorruptionError);
  });

  it('(f) a missing middle segment (a gap in LSNs) is corruption', () => {
    const { disk } = logWith(60, SEG);
    const bases = segBases(disk);
    disk.remove(pathOf(segmentName(bases[2]!)));
    disk.fsyncDir(DIR);
    const log = reopen(disk);
    assert.deepEqual(log.corruption.map((c) => [c.file, c.fromLsn, c.toLsn]), [
      [pathOf(segmentName(bases[3]!)), bases[2]!, bases[3]! - 1],
    ]);
    assert.equal(log.lastLsn, bases[2]! - 1);
    assertReadOnly(log);
  });

  it('(g) leftover temporaries are removed on open; a committed reset is finished', () => {
    const { disk, log } = logWith(5);
    log.close();
    const tmp = pathOf(`${segmentName(6)}.tmp`);
    const fh = disk.open(tmp, { create: true });
    disk.write(fh, new Uint8Array(10), 0);
    disk.close(fh);
    disk.fsyncDir(DIR);
    // A committed but unfinished reset to LSN 100.
    const rfh = disk.open(pathOf(`${segmentName(100)}.reset`), { create: true });
    disk.write(rfh, encodeSegmentHeader({ baseLsn: 100, prevTerm: 4, segmentBytesMax: SEG }), 0);
    disk.fdatasync(rfh);
    disk.close(rfh);
    disk.fsyncDir(DIR);
    const again = reopen(disk);
    assert.deepEqual(disk.list(DIR), [segmentName(100)]);
    assert.deepEqual([again.firstLsn, again.lastLsn, again.lastTerm], [100, 99, 4]);
    // Durably so.
    disk.powerCut();
    assert.deepEqual(disk.list(DIR), [segmentName(100)]);
  });

  it('(g) a reset file whose header is damaged, or names another LSN, is removed and the log stays as it was', () => {
    for (const damage of ['flipped bit', 'other LSN'] as const) {
      const { disk, log } = logWith(30, SEG);
      log.close();
      const before = snapshot(disk);
      const header = encodeSegmentHeader({ baseLsn: damage === 'other LSN' ? 101 : 100, prevTerm: 4, segmentBytesMax: SEG });
      if (damage === 'flipped bit') header[20]! ^= 0x04;
      const rfh = disk.open(pathOf(`${segmentName(100)}.reset`), { create: true });
      disk.write(rfh, header, 0);
      disk.fdatasync(rfh);
      disk.close(rfh);
      disk.fsyncDir(DIR);
      const again = reopen(disk);
      assert.deepEqual(again.corruption, [], damage);
      assert.deepEqual([again.firstLsn, again.lastLsn], [1, 30], `${damage}: the log is not replaced by the damaged reset`);
      assertHistory(again, 1, 30);
      assert.deepEqual(snapshot(disk), before, `${damage}: the reset file is gone, the segments untouched`);
      disk.powerCut();
      assert.deepEqual(snapshot(disk), before, `${damage}: durably`);
    }
  });

  it('(g) two reset files refuse the open and change nothing (only one reset can be committed at a time)', () => {
    const { disk, log } = logWith(30, SEG);
    log.close();
    for (const base of [100, 200]) {
      const rfh = disk.open(pathOf(`${segmentName(base)}.reset`), { create: true });
      disk.write(rfh, encodeSegmentHeader({ baseLsn: base, prevTerm: 4, segmentBytesMax: SEG }), 0);
      disk.fdatasync(rfh);
      disk.close(rfh);
    }
    disk.fsyncDir(DIR);
    const before = snapshot(disk);
    assert.throws(() => reopen(disk), isCode('corruption'));
    assert.deepEqual(snapshot(disk), before);
  });

  it('refuses to open a segment of an unknown format version', () => {
    const { disk, log } = logWith(5);
    log.close();
    const path = pathOf(segmentName(1));
    const bytes = disk.fileBytes(path);
    const view = viewOf(bytes);
    view.setUint32(8, 2, true);
    view.setUint32(60, crc32c(bytes, 0, 0, 60), true);
    const fh = disk.open(path);
    disk.write(fh, bytes.subarray(0, SEGMENT_HEADER_BYTES), 0);
    disk.fdatasync(fh);
    disk.close(fh);
    assert.throws(() => reopen(disk), (e: unknown) => e instanceof StorageError && /unsupported segment format version 2/.test(e.message));
    assert.deepEqual(disk.fileBytes(path), bytes, 'nothing removed or truncated');
  });

  describe('discardDamage (repair of a replica whose peers hold the lost records)', () => {
    /** A log over several segments whose record `bad` (in a sealed segment) rots; reopened. */
    function damaged(): { disk: SimDisk; bad: number; bases: number[] } {
      const disk = new SimDisk();
      const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
      log.write(history(1, 40));
      log.sync();
      log.close();
      const bases = segBases(disk);
      assert.ok(bases.length >= 4, `several segments (${bases.length})`);
      const base = bases[1]!;
      const bad = base + 2;
      disk.flipBits(pathOf(segmentName(base)), offsetOf(bad, base) + 30, 1);
      return { disk, bad, bases };
    }

    it('keeps the valid prefix, drops the damage and every later segment, and takes appends again', () => {
      const { disk, bad, bases } = damaged();
      const log = reopen(disk);
      assert.equal(log.corruption.length, 1);
      assert.equal(log.lastLsn, bad - 1);
      log.discardDamage();
      assert.deepEqual(log.corruption, []);
      assert.deepEqual([log.firstLsn, log.lastLsn, log.syncedLsn], [1, bad - 1, bad - 1]);
      assert.deepEqual(segBases(disk), bases.slice(0, 2), 'later segments removed');
      assertHistory(log, 1, bad - 1);
      assertAppendsSurvive(disk, log, bad, 50);
    });

    it('a power cut at every step of it leaves the same valid prefix, damaged or repaired', () => {
      const probe = damaged();
      const probeLog = reopen(probe.disk);
      const ops0 = probe.disk.mutatingOps;
      probeLog.discardDamage();
      const steps = probe.disk.mutatingOps - ops0;
      assert.ok(steps >= 3, `several steps (${steps})`);
      let repairedSeen = 0;
      let damagedSeen = 0;
      for (let n = 0; n <= steps; n++) {
        const { disk, bad } = damaged();
        const log = reopen(disk);
        disk.crashAfter(n);
        try {
          log.discardDamage();
        } catch (e) {
          assert.ok(e instanceof SimulatedCrash, `n=${n}: ${String(e)}`);
        }
        disk.powerCut();
        const again = reopen(disk);
        assert.equal(again.lastLsn, bad - 1, `n=${n}`);
        assertHistory(again, 1, bad - 1);
        if (again.corruption.length > 0) {
          damagedSeen++;
          again.discardDamage();
        } else repairedSeen++;
        assertAppendsSurvive(disk, again, bad, bad + 3, 1, `n=${n}`);
      }
      assert.ok(repairedSeen > 0 && damagedSeen > 0, `both outcomes seen (${repairedSeen}, ${damagedSeen})`);
    });

    it('is a no-op on a sound log, and refuses a log whose first segment is unreadable', () => {
      const { disk, log } = logWith(5, SEG);
      const ops = disk.mutatingOps;
      log.discardDamage();
      assert.equal(disk.mutatingOps, ops);
      log.close();
      disk.flipBits(pathOf(segmentName(1)), 8, 1); // the segment header
      const bad = reopen(disk);
      assert.equal(bad.corruption.length, 1);
      assert.throws(() => bad.discardDamage(), (e: unknown) => e instanceof CorruptionError && /no valid segment/.test(e.message));
    });
  });

  it('a segment header whose fields are out of bounds, its checksum matching, is refused naming the field (never read as a segment)', () => {
    const good = encodeSegmentHeader({ baseLsn: 5, prevTerm: 2, segmentBytesMax: SEG });
    assert.deepEqual(decodeSegmentHeader(good), { ok: true, header: { baseLsn: 5, prevTerm: 2, segmentBytesMax: SEG } });
    /** The header with `edit` made and its checksum recomputed. */
    const edited = (edit: (v: DataView) => void): Uint8Array => {
      const b = good.slice();
      const v = viewOf(b);
      edit(v);
      v.setUint32(SEGMENT_HEADER_BYTES - 4, crc32c(b, 0, 0, SEGMENT_HEADER_BYTES - 4), true);
      return b;
    };
    for (const [bytesMax, what] of [[SEGMENT_BYTES_MIN - 1, 'under'], [SEGMENT_BYTES_LIMIT + 1, 'over']] as const) {
      const d = decodeSegmentHeader(edited((v) => v.setUint32(12, bytesMax, true)));
      assert.deepEqual(d, { ok: false, reason: `segment header segmentBytesMax ${bytesMax} out of bounds`, unsupportedVersion: false }, what);
    }
    const zeroBase = decodeSegmentHeader(edited((v) => v.setBigUint64(16, 0n, true)));
    assert.deepEqual(zeroBase, { ok: false, reason: 'segment header baseLsn out of bounds', unsupportedVersion: false });
    const version = decodeSegmentHeader(edited((v) => v.setUint32(8, 2, true)));
    assert.deepEqual(version, { ok: false, reason: 'unsupported segment format version 2', unsupportedVersion: true });
  });
});
