/** SegmentLog: appends, reads, terms, trims, truncation, reset, bounds, reopen (SimDisk and RealDisk). */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { DISCARD_SUFFIX, isDiscardedName, type Disk } from '../../storage-engine/disk';
import { StorageError } from '../../storage-engine/errors';
import {
  LOG_READ_BYTES_LIMIT,
  LOG_SEALED_HANDLES_MAX,
  LOG_WRITE_BATCH_RECORDS_MAX,
  LOG_RECOVERY_CHUNK_BYTES,
  logEncodeScratchBytes,
  logRecoveryScratch,
  SegmentLog,
} from '../../storage-engine/log';
import { parseSegmentName, recordBytes, segmentName, SEGMENT_HEADER_BYTES } from '../../storage-engine/log-segment';
import { RealDisk } from '../../storage-engine/real-disk';
import { RECORD_PAYLOAD_BYTES_MAX, type LogRecordInput } from '../../storage-engine/record';
import { SimDisk } from '../../storage-engine/sim-disk';
import { waitFor } from '../support/wait';
import { assertHistory, history, payloadOf, termOf } from '../support/log-history';

const DIR = 'shard-1/log';
const SEG = 4096;

function isCode(code: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof StorageError, `expected a StorageError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  };
}

function segFiles(disk: SimDisk | RealDisk, dir = DIR): string[] {
  return disk.list(dir).filter((n) => parseSegmentName(n) !== undefined);
}

describe('SegmentLog', () => {
  it('starts empty at LSN 1 with term 0, and honours firstLsn/prevTerm for a new log', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR });
    assert.deepEqual([log.firstLsn, log.lastLsn, log.lastTerm, log.syncedLsn], [1, 0, 0, 0]);
    assert.equal(log.termAt(0), 0);
    assert.deepEqual(log.corruption, []);
    assert.deepEqual(segFiles(disk), [segmentName(1)]);
    const other = SegmentLog.open(disk, { dir: 'shard-2/log', firstLsn: 500, prevTerm: 7 });
    assert.deepEqual([other.firstLsn, other.lastLsn, other.lastTerm, other.syncedLsn], [500, 499, 7, 499]);
    assert.equal(other.termAt(499), 7);
    assert.equal(other.write([{ term: 7, kind: 2, payload: new Uint8Array(0) }]), 500);
    // The log directory and its first segment survive a power cut right after open.
    disk.powerCut();
    const again = SegmentLog.open(disk, { dir: 'shard-2/log', firstLsn: 1 });
    assert.deepEqual([again.firstLsn, again.lastLsn, again.lastTerm], [500, 499, 7]);
  });

  it('the logs of a thread share one encoding buffer: large batches in many logs keep one, and each log reads back its own records', () => {
    const disk = new SimDisk();
    const big = (lsn: number): LogRecordInput[] => Array.from({ length: 16 }, (_, i) => ({ term: 1, kind: 1, payload: new Uint8Array(128 * 1024).fill((lsn + i) % 251) }));
    const logs = Array.from({ length: 8 }, (_, i) => SegmentLog.open(disk, { dir: `shard-${i}/log` }));
    // Interleaved: every log writes a 2 MiB batch, then a small one.
    for (const [i, log] of logs.entries()) assert.equal(log.write(big(i)), 16);
    for (const [i, log] of logs.entries()) assert.equal(log.write([{ term: 1, kind: 1, payload: new Uint8Array(10).fill(i) }]), 17);
    const kept = logEncodeScratchBytes();
    assert.ok(kept >= 2 * 1024 * 1024 && kept <= 4 * 1024 * 1024, `one buffer for eight logs: ${kept} bytes`);
    for (const [i, log] of logs.entries()) {
      log.sync();
      const got = log.read(1, 17);
      assert.deepEqual(got.slice(0, 16).map((r) => [r.payload.length, r.payload[0], r.payload[r.payload.length - 1]]), big(i).map((r) => [r.payload.length, r.payload[0], r.payload[0]]));
      assert.deepEqual(got[16]!.payload, new Uint8Array(10).fill(i));
      log.close();
    }
  });

  it('the opens of a thread\'s logs share one recovery buffer: reopening eight logs allocates it once at most, and each recovers its own records', () => {
    const disk = new SimDisk();
    // Log i holds records of its own bytes, in a segment of its own size (the largest first;
    // small writes, each followed by zeros written ahead).
    const recordsOf = (i: number): LogRecordInput[] => Array.from({ length: 8 - i }, (_, k) => ({ term: 1, kind: 1, payload: new Uint8Array(48 * 1024).fill(i * 16 + k) }));
    for (let i = 0; i < 8; i++) {
      const log = SegmentLog.open(disk, { dir: `shard-${i}/log` });
      for (const r of recordsOf(i)) log.write([r]);
      log.sync();
      log.close();
    }
    const before = logRecoveryScratch().allocations;
    for (let i = 0; i < 8; i++) {
      const log = SegmentLog.open(disk, { dir: `shard-${i}/log` });
      assert.deepEqual(log.corruption, []);
      assert.deepEqual(log.read(1, log.lastLsn).map((r) => [r.lsn, r.payload.length, r.payload[0], r.payload[r.payload.length - 1]]), recordsOf(i).map((r, k) => [k + 1, r.payload.length, r.payload[0], r.payload[0]]));
      log.close();
    }
    assert.ok(logRecoveryScratch().allocations - before <= 1, `allocations: ${logRecoveryScratch().allocations - before}`);
    const { bytes } = logRecoveryScratch();
    assert.ok(bytes > 0 && bytes <= LOG_RECOVERY_CHUNK_BYTES, `kept: ${bytes} bytes`);
  });

  it('a log opened while another recovers (from its onRecovered) reads into a buffer of its own: both recover every record', () => {
    const disk = new SimDisk();
    for (const [dir, fill] of [['shard-a/log', 0xaa], ['shard-b/log', 0xbb]] as const) {
      const log = SegmentLog.open(disk, { dir });
      log.write(Array.from({ length: 6 }, (_, k) => ({ term: 1, kind: 1, payload: new Uint8Array(8 * 1024).fill(fill + k) })));
      log.sync();
      log.close();
    }
    let inner: SegmentLog | undefined;
    const seen: number[] = [];
    const outer = SegmentLog.open(disk, {
      dir: 'shard-a/log',
      onRecovered: (lsn, _term, _kind, payload) => {
        seen.push(payload[0]!);
        // Opened during the outer scan, which goes on reading from its buffer afterwards.
        if (lsn === 1) inner = SegmentLog.open(disk, { dir: 'shard-b/log' });
      },
    });
    assert.deepEqual(seen, [0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf]);
    for (const [log, fill] of [[outer, 0xaa], [inner!, 0xbb]] as const) {
      assert.deepEqual(log.corruption, []);
      assert.deepEqual(log.read(1, log.lastLsn).map((r) => r.payload[0]), [0, 1, 2, 3, 4, 5].map((k) => fill + k));
      log.close();
    }
  });

  it('appends and reads ranges across many segments; termAt; syncedLsn only moves on sync or roll-over', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    assert.equal(log.write(history(1, 3)), 3);
    assert.equal(log.syncedLsn, 0, 'write is not durable');
    log.sync();
    assert.equal(log.syncedLsn, 3);
    for (let lsn = 4; lsn <= 200; lsn += 7) log.write(history(lsn, Math.min(lsn + 6, 200)));
    assert.equal(log.lastLsn, 200);
    assert.equal(log.lastTerm, termOf(200));
    const st = log.stats();
    assert.ok(st.segments >= 10, `expected many segments, got ${st.segments}`);
    assert.equal(st.segments, segFiles(disk).length);
    // Each roll-over synced the sealed segment: everything before the active segment is durable.
    assert.ok(log.syncedLsn > 3 && log.syncedLsn < 200);
    log.sync();
    assert.equal(log.syncedLsn, 200);
    assertHistory(log, 1, 200);
    for (const [a, b] of [[1, 1], [5, 17], [30, 120], [199, 200], [77, 77]] as const) {
      const got = log.read(a, b);
      assert.deepEqual(got.map((r) => r.lsn), Array.from({ length: b - a + 1 }, (_, k) => a + k));
    }
    for (let lsn = 0; lsn <= 200; lsn++) assert.equal(log.termAt(lsn), lsn === 0 ? 0 : termOf(lsn));
    assert.throws(() => log.termAt(201), isCode('out_of_range'));
    assert.throws(() => log.read(5, 201), isCode('out_of_range'));
    assert.throws(() => log.read(6, 5), isCode('bad_request'));
    // Each segment respects the size limit.
    for (const name of segFiles(disk)) assert.ok(disk.fileBytes(`${DIR}/${name}`).length <= SEG, name);
  });

  it('does one disk write per segment touched by a batch', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 3));
    assert.equal(log.stats().writes, 1);
    const before = disk.counters.writes;
    log.write(history(4, 6));
    assert.equal(disk.counters.writes - before, 1, 'one write for a batch inside one segment');
    // 20 records of 132..532 bytes do not fit what is left of a 4 KiB segment.
    const segsBefore = log.stats().segments;
    const w0 = log.stats().writes;
    log.write(history(7, 26));
    const touched = log.stats().segments - segsBefore + 1;
    assert.ok(touched >= 2);
    assert.equal(log.stats().writes - w0, touched, 'one record write per segment touched');
    log.sync();
    assertHistory(log, 1, 26);
  });

  it('gives a record larger than a segment a segment of its own', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write([{ term: 1, kind: 1, payload: payloadOf(1, 100) }]);
    log.write([
      { term: 1, kind: 1, payload: payloadOf(2, 3 * SEG) },
      { term: 1, kind: 1, payload: payloadOf(3, 100) },
    ]);
    log.sync();
    assert.deepEqual(segFiles(disk), [segmentName(1), segmentName(2), segmentName(3)]);
    assert.equal(disk.fileBytes(`${DIR}/${segmentName(2)}`).length, SEGMENT_HEADER_BYTES + recordBytes(3 * SEG));
    const got = log.read(1, 3);
    assert.deepEqual(got.map((r) => r.payload.length), [100, 3 * SEG, 100]);
    assert.deepEqual(got[1]!.payload, payloadOf(2, 3 * SEG));
    log.close();
    const again = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    assert.deepEqual(again.corruption, []);
    assert.deepEqual(again.read(1, 3).map((r) => r.payload.length), [100, 3 * SEG, 100]);
  });

  it('reopens with identical records, terms and positions', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 150));
    log.sync();
    const stats = log.stats();
    log.close();
    assert.throws(() => log.read(1, 1), isCode('closed'));
    assert.throws(() => log.write(history(151, 151)), isCode('closed'));
    disk.powerCut();
    const again = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    assert.deepEqual(again.corruption, []);
    assert.deepEqual(again.stats(), { ...stats, writes: 0, syncs: 0 });
    assert.equal(again.lastTerm, termOf(150));
    assertHistory(again, 1, 150);
    for (let lsn = 1; lsn <= 150; lsn++) assert.equal(again.termAt(lsn), termOf(lsn));
    again.write(history(151, 160));
    again.sync();
    assertHistory(again, 1, 160);
  });

  it('stops a read at bytesMax of payload, always returning at least one record', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    const recs: LogRecordInput[] = [];
    for (let lsn = 1; lsn <= 40; lsn++) recs.push({ term: 1, kind: 1, payload: payloadOf(lsn, 1000) });
    log.write(recs);
    assert.deepEqual(log.read(1, 40, { bytesMax: 3500 }).map((r) => r.lsn), [1, 2, 3]);
    assert.deepEqual(log.read(5, 40, { bytesMax: 3000 }).map((r) => r.lsn), [5, 6, 7]);
    assert.deepEqual(log.read(9, 40, { bytesMax: 10 }).map((r) => r.lsn), [9]);
    assert.equal(log.read(1, 40, { bytesMax: 1_000_000 }).length, 40);
    assert.throws(() => log.read(1, 2, { bytesMax: 0 }), isCode('bad_request'));
    assert.throws(() => log.read(1, 2, { bytesMax: LOG_READ_BYTES_LIMIT + 1 }), isCode('bad_request'));
  });

  it('trimPrefix deletes only whole segments, never the active one; reads below firstLsn are trimmed', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 100));
    log.sync();
    const bases = segFiles(disk).map((n) => parseSegmentName(n)!);
    assert.ok(bases.length >= 5);
    const cut = bases[2]! + 1; // inside the third segment
    log.trimPrefix(cut);
    assert.equal(log.firstLsn, bases[2], 'the segment holding uptoLsn+... is kept whole');
    assert.deepEqual(segFiles(disk).map((n) => parseSegmentName(n)), bases.slice(2));
    assert.throws(() => log.read(bases[2]! - 1, 100), isCode('trimmed'));
    assert.throws(() => log.termAt(bases[2]! - 2), isCode('trimmed'));
    assert.equal(log.termAt(bases[2]! - 1), termOf(bases[2]! - 1), 'term of firstLsn-1 comes from the segment header');
    assertHistory(log, bases[2]!, 100);
    // At most segmentsMax at a time, oldest first; canTrimPrefix says whether any is left.
    assert.throws(() => log.trimPrefix(1_000_000, 0), isCode('bad_request'));
    assert.equal(log.canTrimPrefix(bases[3]! - 2), false, 'no whole segment is <= that LSN');
    assert.equal(log.canTrimPrefix(bases[3]! - 1), true);
    log.trimPrefix(1_000_000, 1);
    assert.equal(log.firstLsn, bases[3]);
    assert.deepEqual(segFiles(disk).map((n) => parseSegmentName(n)), bases.slice(3));
    // Trimming up to the end keeps the active segment.
    log.trimPrefix(1_000_000);
    assert.equal(log.canTrimPrefix(1_000_000), false, 'the active segment is never trimmed');
    assert.equal(log.stats().segments, 1);
    assert.equal(log.firstLsn, bases[bases.length - 1]);
    assert.equal(log.lastLsn, 100);
    assert.equal(log.termAt(log.firstLsn - 1), termOf(log.firstLsn - 1));
    // Durable: a power cut right after keeps the trim.
    disk.powerCut();
    const again = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    assert.equal(again.firstLsn, bases[bases.length - 1]);
    assertHistory(again, again.firstLsn, 100);
    assert.throws(() => again.read(1, 1), isCode('trimmed'));
  });

  it('truncateSuffix with nothing to cut still leaves what is left durable (syncedLsn == lastLsn)', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write([{ term: 1, kind: 1, payload: new Uint8Array(10) }]);
    assert.equal(log.syncedLsn, 0, 'written, not synced');
    log.truncateSuffix(log.lastLsn + 1);
    assert.equal(log.syncedLsn, 1);
    disk.powerCut();
    assert.equal(SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG }).lastLsn, 1);
  });

  it('truncateSuffix removes a suffix durably, across segments, and appends continue', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 100));
    log.sync();
    const bases = segFiles(disk).map((n) => parseSegmentName(n)!);
    // Inside an earlier segment: later segment files go away.
    const from = bases[1]! + 2;
    log.truncateSuffix(from);
    assert.equal(log.lastLsn, from - 1);
    assert.equal(log.syncedLsn, from - 1);
    assert.equal(log.lastTerm, termOf(from - 1));
    assert.deepEqual(segFiles(disk).map((n) => parseSegmentName(n)), bases.slice(0, 2));
    assert.throws(() => log.read(from, from), isCode('out_of_range'));
    // Append a different history (higher term) after the cut.
    const newer: LogRecordInput[] = [];
    for (let lsn = from; lsn < from + 60; lsn++) newer.push({ term: 50, kind: 3, payload: payloadOf(lsn + 1000) });
    log.write(newer);
    log.sync();
    assert.equal(log.termAt(from), 50);
    // At a segment base: that segment is kept empty.
    const bases2 = segFiles(disk).map((n) => parseSegmentName(n)!);
    const last = bases2[bases2.length - 1]!;
    log.truncateSuffix(last);
    assert.equal(log.lastLsn, last - 1);
    // Bounds.
    assert.throws(() => log.truncateSuffix(log.lastLsn + 2), isCode('out_of_range'));
    log.truncateSuffix(log.lastLsn + 1); // no-op
    log.trimPrefix(bases2[1]! - 1);
    assert.throws(() => log.truncateSuffix(log.firstLsn - 1), isCode('trimmed'));
    disk.powerCut();
    const again = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, last - 1);
    const got = again.read(from, last - 1);
    assert.ok(got.every((r) => r.term === 50 && r.kind === 3));
    assert.deepEqual(got[0]!.payload, payloadOf(from + 1000));
    again.write([{ term: 51, kind: 1, payload: payloadOf(1) }]);
    again.sync();
    assert.equal(again.lastTerm, 51);
    // Truncating everything down to firstLsn leaves an empty log at firstLsn.
    again.truncateSuffix(again.firstLsn);
    assert.equal(again.lastLsn, again.firstLsn - 1);
    assert.equal(again.stats().segments, 1);
  });

  it('reset discards everything and continues at nextLsn', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 60));
    log.sync();
    log.reset(1000, 9);
    assert.deepEqual([log.firstLsn, log.lastLsn, log.lastTerm, log.syncedLsn], [1000, 999, 9, 999]);
    assert.equal(log.termAt(999), 9);
    assert.throws(() => log.read(50, 50), isCode('trimmed'));
    assert.deepEqual(disk.list(DIR), [segmentName(1000)]);
    assert.equal(log.write([{ term: 9, kind: 2, payload: new Uint8Array(0) }]), 1000);
    log.sync();
    // Backwards too (a reset may go to a lower LSN).
    log.reset(5, 2);
    assert.deepEqual(disk.list(DIR), [segmentName(5)]);
    disk.powerCut();
    const again = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    assert.deepEqual([again.firstLsn, again.lastLsn, again.lastTerm], [5, 4, 2]);
    assert.throws(() => again.reset(0, 0), isCode('bad_request'));
  });

  it('refuses out-of-bound input with typed errors', () => {
    const disk = new SimDisk();
    assert.throws(() => SegmentLog.open(disk, { dir: DIR, segmentBytesMax: 4095 }), isCode('bad_request'));
    assert.throws(() => SegmentLog.open(disk, { dir: DIR, firstLsn: 0 }), isCode('bad_request'));
    assert.throws(() => SegmentLog.open(disk, { dir: DIR, prevTerm: -1 }), isCode('bad_request'));
    const log = SegmentLog.open(disk, { dir: DIR });
    log.write([{ term: 5, kind: 1, payload: new Uint8Array(1) }]);
    const big = new Uint8Array(RECORD_PAYLOAD_BYTES_MAX + 1);
    assert.throws(() => log.write([{ term: 5, kind: 1, payload: big }]), isCode('bad_request'));
    assert.throws(() => log.write([{ term: 4, kind: 1, payload: new Uint8Array(1) }]), isCode('bad_request'), 'terms never decrease');
    assert.throws(() => log.write([{ term: 5, kind: 256, payload: new Uint8Array(1) }]), isCode('bad_request'));
    assert.throws(() => log.write([{ term: 5.5, kind: 1, payload: new Uint8Array(1) }]), isCode('bad_request'));
    assert.throws(
      () => log.write([{ term: 5, kind: 1, payload: 'text' as unknown as Uint8Array }]),
      isCode('bad_request'),
    );
    const empty = { term: 5, kind: 2, payload: new Uint8Array(0) };
    assert.throws(() => log.write(new Array<LogRecordInput>(LOG_WRITE_BATCH_RECORDS_MAX + 1).fill(empty)), isCode('bad_request'));
    const max = new Uint8Array(RECORD_PAYLOAD_BYTES_MAX);
    assert.throws(() => log.write(new Array<LogRecordInput>(61).fill({ term: 5, kind: 1, payload: max })), isCode('bad_request'));
    assert.equal(log.lastLsn, 1, 'a refused batch writes nothing');
    assert.throws(() => log.read(-1, 1), isCode('bad_request'));
    assert.throws(() => log.termAt(1.5), isCode('bad_request'));
    assert.throws(() => log.trimPrefix(Number.NaN), isCode('bad_request'));
    // The largest payload is accepted.
    assert.equal(log.write([{ term: 5, kind: 1, payload: max }]), 2);
    assert.equal(log.read(2, 2)[0]!.payload.length, RECORD_PAYLOAD_BYTES_MAX);
    assert.equal(log.write([]), 2);
  });

  it('reports a record that rotted after open as CorruptionError on read', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR });
    log.write(history(1, 5));
    log.sync();
    const path = `${DIR}/${segmentName(1)}`;
    const off3 = SEGMENT_HEADER_BYTES + recordBytes(payloadOf(1).length) + recordBytes(payloadOf(2).length);
    disk.flipBits(path, off3 + 40, 1);
    assert.throws(
      () => log.read(1, 5),
      (e: unknown) => {
        assert.ok(e instanceof StorageError && e.code === 'corruption');
        const reports = (e.details as { reports: { fromLsn: number; offset: number }[] }).reports;
        assert.deepEqual(reports.map((r) => [r.fromLsn, r.offset]), [[3, off3]]);
        return true;
      },
    );
    assertHistory(log, 1, 2);
    assertHistory(log, 4, 5);
  });

  it('fails for good on a write error', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR });
    log.write(history(1, 3));
    log.sync();
    disk.failWrite({ path: DIR });
    assert.throws(() => log.write(history(4, 4)), isCode('io_error'));
    assert.throws(() => log.write(history(4, 4)), isCode('device_failed'));
    assert.throws(() => log.sync(), isCode('device_failed'));
    assert.throws(() => log.truncateSuffix(2), isCode('device_failed'));
    assertHistory(log, 1, 3);
  });

  it('keeps a bounded number of sealed segments open', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 400));
    log.sync();
    assert.ok(log.stats().segments > 2 * LOG_SEALED_HANDLES_MAX);
    assert.ok(disk.openFiles <= LOG_SEALED_HANDLES_MAX + 1, `open files ${disk.openFiles}`);
    assertHistory(log, 1, 400);
    assert.ok(disk.openFiles <= LOG_SEALED_HANDLES_MAX + 1, `open files ${disk.openFiles}`);
    log.close();
    assert.equal(disk.openFiles, 0);
    const again = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    assert.equal(disk.openFiles, 1, 'recovery leaves only the active segment open');
    again.close();
  });

  it('works on the real file system and reopens identically', () => {
    const root = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-log-'));
    try {
      const disk = new RealDisk(root);
      const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
      log.write(history(1, 120));
      log.sync();
      log.trimPrefix(10);
      log.truncateSuffix(111);
      log.write(history(111, 130));
      log.sync();
      const stats = log.stats();
      log.close();
      fs.writeFileSync(nodePath.join(root, DIR, `${segmentName(999)}.tmp`), 'leftover');
      const again = SegmentLog.open(new RealDisk(root), { dir: DIR, segmentBytesMax: SEG });
      assert.deepEqual(again.corruption, []);
      assert.deepEqual(again.stats(), { ...stats, writes: 0, syncs: 0 });
      assertHistory(again, again.firstLsn, 130);
      assert.ok(!fs.existsSync(nodePath.join(root, DIR, `${segmentName(999)}.tmp`)));
      again.close();
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
  it('trimPrefix frees trimmed segments off the thread on the real file system, and an open removes one a crash left', async () => {
    const root = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-log-'));
    try {
      const disk = new RealDisk(root);
      const removedHere: string[] = [];
      const remove = disk.remove.bind(disk);
      disk.remove = (path: string): void => {
        removedHere.push(path);
        remove(path);
      };
      const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
      log.write(history(1, 100));
      log.sync();
      const bases = segFiles(disk).map((n) => parseSegmentName(n)!);
      log.trimPrefix(bases[3]! + 1);
      assert.deepEqual(removedHere, [], 'no segment removed on the calling thread');
      assert.deepEqual(segFiles(disk).map((n) => parseSegmentName(n)), bases.slice(3));
      await waitFor('the trimmed segments removed', () => fs.readdirSync(nodePath.join(root, DIR)).filter(isDiscardedName).length === 0);
      assert.equal(log.stats().discardFailures, 0);
      log.close();
      // A crash between the rename and the background removal leaves the renamed file.
      const left = nodePath.join(root, DIR, segmentName(bases[0]!) + DISCARD_SUFFIX);
      fs.writeFileSync(left, 'a trimmed segment');
      const again = SegmentLog.open(new RealDisk(root), { dir: DIR, segmentBytesMax: SEG });
      assert.equal(again.firstLsn, bases[3]);
      assertHistory(again, bases[3]!, 100);
      await waitFor('the open removes the leftover', () => !fs.existsSync(left));
      again.close();
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('an open removes a trimmed segment a crash left (disk without background removal: at once)', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 30));
    log.sync();
    log.close();
    const left = `${DIR}/${segmentName(1)}${DISCARD_SUFFIX}`;
    const fh = disk.open(left, { create: true });
    disk.write(fh, new Uint8Array(64).fill(7), 0);
    disk.fdatasync(fh);
    disk.close(fh);
    disk.fsyncDir(DIR);
    const again = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    assert.equal(disk.exists(left), false);
    assertHistory(again, 1, 30);
  });

  it('an open makes a leftover trimmed segment\'s rename durable before it cuts it down: a power loss then cannot bring it back cut short', async () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 60));
    log.sync();
    const lastLsn = log.lastLsn;
    log.close();
    // A trim renamed the first segment away, and the process died before the directory fsync.
    const first = segFiles(disk)[0]!;
    disk.rename(`${DIR}/${first}`, `${DIR}/${first}${DISCARD_SUFFIX}`);
    // Removed in the background as RealDisk removes a file: cut down a step at a time, each cut
    // flushed (a step of 1 KiB here), then unlinked.
    const cuts: Array<Promise<void>> = [];
    let cutsDone = 0;
    const background = disk as Disk;
    background.removeAsync = (path: string): Promise<void> => {
      const cut = (async (): Promise<void> => {
        await Promise.resolve();
        const fh = disk.open(path);
        for (let size = disk.size(fh) - 1024; size > 0; size -= 1024) {
          disk.truncate(fh, size);
          disk.fdatasync(fh);
          if (++cutsDone === 2) return; // the power goes here
        }
      })();
      cuts.push(cut);
      return cut;
    };
    background.removeTreeAsync = background.removeAsync;
    const reopened = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    await Promise.all(cuts);
    assert.equal(cutsDone, 2, 'the removal had begun');
    reopened.close();
    delete background.removeAsync;
    delete background.removeTreeAsync;
    disk.powerCut();
    const after = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    assert.deepEqual(after.corruption, []);
    assert.equal(after.lastLsn, lastLsn);
    assertHistory(after, after.firstLsn, lastLsn);
  });

  it('syncAsync flushes off the thread on the real file system; nothing may change the log until it settles', async () => {
    const root = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-log-'));
    try {
      const disk = new RealDisk(root);
      const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: 64 * 1024 });
      log.write(history(1, 20));
      const before = disk.counters.fdatasyncs;
      const flushing = log.syncAsync();
      assert.equal(log.syncedLsn, 0, 'not durable before the flush settles');
      assert.throws(() => log.write(history(21, 21)), isCode('invariant'));
      assert.throws(() => log.trimPrefix(5), isCode('invariant'));
      assert.throws(() => log.sync(), isCode('invariant'));
      await assert.rejects(log.syncAsync(), isCode('invariant'));
      await flushing;
      assert.equal(log.syncedLsn, 20);
      assert.equal(disk.counters.fdatasyncs, before + 1);
      log.write(history(21, 25));
      await log.syncAsync();
      assert.equal(log.syncedLsn, 25);
      await log.syncAsync(); // nothing unsynced: settles at once
      log.close();
      assertHistory(SegmentLog.open(new RealDisk(root), { dir: DIR }), 1, 25);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('a failed syncAsync fails the log for good, like a failed sync', async () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    // SimDisk flushes only synchronously: syncAsync falls back to sync and reports the same way.
    log.write(history(1, 3));
    disk.failFsync({ times: 1 });
    await assert.rejects(log.syncAsync(), isCode('fsync_failed'));
    assert.throws(() => log.write(history(4, 4)), isCode('device_failed'));
    await assert.rejects(log.syncAsync(), isCode('device_failed'));
  });

  it('a syncAsync whose flush off the thread fails fails the log for good; what it did not make durable is not read', async () => {
    const sim = new SimDisk();
    // A disk that flushes off the thread, as RealDisk does; its asynchronous flush fails once.
    let failAsync = false;
    const disk = new Proxy(sim, {
      get(target, prop) {
        if (prop === 'fdatasyncAsync') {
          return async (fh: number): Promise<void> => {
            if (failAsync) {
              failAsync = false;
              throw new StorageError('fsync_failed', 'fdatasync: EIO (test)', { errno: 'EIO' });
            }
            target.fdatasync(fh);
          };
        }
        const v = (target as unknown as Record<string | symbol, unknown>)[prop];
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax: SEG });
    log.write(history(1, 3));
    await log.syncAsync();
    assert.equal(log.syncedLsn, 3);
    failAsync = true;
    log.write(history(4, 6));
    await assert.rejects(log.syncAsync(), isCode('fsync_failed'));
    assert.equal(log.syncedLsn, 3);
    assert.throws(() => log.write(history(7, 7)), isCode('device_failed'));
    await assert.rejects(log.syncAsync(), isCode('device_failed'));
    assert.throws(() => log.sync(), isCode('device_failed'));
    assert.throws(() => log.truncateSuffix(4), isCode('device_failed'));
    // The records the failed flush held may not be on the device: they are not served.
    assert.throws(() => log.read(4, 4), isCode('device_failed'));
    assert.throws(() => log.termAt(5), isCode('device_failed'));
    assertHistory(log, 1, 3);
  });
});
