/** HardStateJournal: format, one fdatasync per batch, crashes, torn and damaged records, rewrites. */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { crc32c } from '../../storage-engine/crc32c';
import { CorruptionError } from '../../storage-engine/errors';
import {
  HARD_STATE_JOURNAL,
  HARD_STATE_JOURNAL_BYTES_MAX,
  HARD_STATE_JOURNAL_FORMAT_VERSION,
  HARD_STATE_RECORD_HEADER_BYTES,
  HARD_STATE_RECORD_HEADER_BYTES_V1,
  HARD_STATE_RECORD_PAYLOAD_BYTES_MAX,
  HARD_STATE_VALUE_BYTES_MAX,
  HardStateJournal,
} from '../../storage-engine/hard-state-journal';
import { RealDisk } from '../../storage-engine/real-disk';
import { SimDisk, SimulatedCrash } from '../../storage-engine/sim-disk';
import { expectStorageError } from '../support/expect';
import { tearAtRandom } from '../support/disk';
import { prng } from '../support/prng';

const state = (term: number, votedFor: string | null = null): { term: number; votedFor: string | null } => ({ term, votedFor });

function durableDisk(dirs: string[] = []): SimDisk {
  const disk = new SimDisk();
  for (const d of dirs) disk.mkdirp(d);
  disk.fsyncDir('');
  for (const d of new Set(dirs.map((d) => d.split('/')[0]!))) disk.fsyncDir(d);
  return disk;
}

/** Closes `j`, cuts the power, and opens the journal again from what was durable. */
function reopenAfterPowerCut(disk: SimDisk, j: HardStateJournal): HardStateJournal {
  j.close();
  disk.powerCut();
  return HardStateJournal.open(disk);
}

function value(j: HardStateJournal, dir: string): unknown {
  const found = j.lookup(dir);
  return found.kind === 'saved' ? found.value : found.kind;
}

type Saves = Parameters<HardStateJournal['saveMany']>[0];

/** A journal of one record holding `first`, then a last one holding `last`, closed: where the last record starts and ends. */
function journalEndingWith(first: Saves, last: Saves): { disk: SimDisk; kept: number; end: number } {
  const disk = durableDisk();
  const j = HardStateJournal.open(disk);
  j.saveMany(first);
  const kept = disk.fileBytes(HARD_STATE_JOURNAL).length;
  j.saveMany(last);
  const end = disk.fileBytes(HARD_STATE_JOURNAL).length;
  j.close();
  return { disk, kept, end };
}

describe('HardStateJournal', () => {
  it('keeps the newest save of each directory across a reopen; none for a directory never saved', () => {
    const disk = durableDisk();
    const j = HardStateJournal.open(disk);
    j.saveMany([{ key: 'shards/v1-0', value: state(1) }, { key: 'shards/v1-1', value: state(2, 'n2') }]);
    j.saveMany([{ key: 'shards/v1-0', value: state(3, 'n1') }]);
    const again = reopenAfterPowerCut(disk, j);
    assert.deepEqual(value(again, 'shards/v1-0'), state(3, 'n1'));
    assert.deepEqual(value(again, 'shards/v1-1'), state(2, 'n2'));
    assert.equal(value(again, 'shards/v2-0'), 'none');
    assert.deepEqual(again.damage, []);
    assert.equal(again.stats().dirs, 2);
  });

  it('writes a batch of saves with one write and one fdatasync, in the documented format', () => {
    const disk = durableDisk();
    const j = HardStateJournal.open(disk);
    const before = { ...disk.counters };
    j.saveMany(Array.from({ length: 300 }, (_, i) => ({ key: `shards/v${i}-0`, value: state(i + 1, 'n1') })));
    assert.equal(disk.counters.fdatasyncs - before.fdatasyncs, 1);
    assert.equal(disk.counters.writes - before.writes, 1);
    assert.equal(disk.counters.fsyncDirs - before.fsyncDirs, 0);
    assert.deepEqual(j.stats(), { bytes: disk.fileBytes(HARD_STATE_JOURNAL).length, dirs: 300, batches: 1, saves: 300, compactions: 0, rewriteFailures: 0 });
    j.close();
    const file = disk.fileBytes(HARD_STATE_JOURNAL);
    const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
    assert.equal(new TextDecoder().decode(file.subarray(0, 4)), 'STHJ');
    assert.equal(dv.getUint32(4, true), HARD_STATE_JOURNAL_FORMAT_VERSION);
    assert.equal(HARD_STATE_JOURNAL_FORMAT_VERSION, 2);
    const payload = file.subarray(HARD_STATE_RECORD_HEADER_BYTES);
    assert.equal(dv.getUint32(8, true), payload.length);
    assert.equal(dv.getUint32(12, true), crc32c(payload));
    assert.equal(dv.getUint32(16, true), crc32c(file.subarray(0, 16)), 'the header CRC covers the 16 bytes before it');
    const entries = JSON.parse(new TextDecoder().decode(payload)) as Array<[string, unknown]>;
    assert.deepEqual(entries[0], ['shards/v0-0', state(1, 'n1')]);
    assert.equal(entries.length, 300);
  });

  it('a save whose fdatasync did not end before a power cut is not kept (it was never answered)', () => {
    const disk = durableDisk();
    const j = HardStateJournal.open(disk);
    j.saveMany([{ key: 'shards/v1-0', value: state(1) }]);
    disk.crashAfter(1); // the write is made; the fdatasync is not
    assert.throws(() => j.saveMany([{ key: 'shards/v1-0', value: state(2, 'n3') }]), SimulatedCrash);
    disk.powerCut();
    const again = HardStateJournal.open(disk);
    assert.deepEqual(value(again, 'shards/v1-0'), state(1));
    assert.deepEqual(again.damage, []);
  });

  it('cuts a record torn by a crash at every length, and appends after what it kept', () => {
    for (const keep of [1, 4, HARD_STATE_RECORD_HEADER_BYTES - 1, HARD_STATE_RECORD_HEADER_BYTES, HARD_STATE_RECORD_HEADER_BYTES + 5, 40]) {
      const disk = durableDisk();
      const j = HardStateJournal.open(disk);
      j.saveMany([{ key: 'shards/v1-0', value: state(1) }]);
      const kept = disk.fileBytes(HARD_STATE_JOURNAL).length;
      disk.crashAfter(1);
      assert.throws(() => j.saveMany([{ key: 'shards/v1-0', value: state(2, 'n3') }, { key: 'shards/v1-1', value: state(2) }]), SimulatedCrash);
      const { tornBytes } = disk.powerCut({ tear: { path: HARD_STATE_JOURNAL, keepBytes: keep } });
      assert.equal(tornBytes, keep);
      assert.equal(disk.fileBytes(HARD_STATE_JOURNAL).length, kept + keep);
      const again = HardStateJournal.open(disk);
      assert.deepEqual(again.damage, [], `torn at ${keep}`);
      assert.deepEqual(value(again, 'shards/v1-0'), state(1));
      assert.equal(value(again, 'shards/v1-1'), 'none');
      assert.equal(disk.fileBytes(HARD_STATE_JOURNAL).length, kept, 'the torn record is cut off');
      again.saveMany([{ key: 'shards/v1-1', value: state(4) }]);
      const third = reopenAfterPowerCut(disk, again);
      assert.deepEqual(third.damage, []);
      assert.deepEqual(value(third, 'shards/v1-1'), state(4));
    }
  });

  it('damage with valid records after it: every directory whose newest state may have been in it reads as damaged, until saved again', () => {
    const disk = durableDisk(['shards/a', 'shards/b', 'shards/c', 'shards/d']);
    const dirs = (): string[] => disk.list('shards').map((n) => `shards/${n}`);
    const j = HardStateJournal.open(disk, { dirs });
    j.saveMany([{ key: 'shards/a', value: state(5, 'n1') }, { key: 'shards/b', value: state(5, 'n1') }]);
    const firstEnd = disk.fileBytes(HARD_STATE_JOURNAL).length;
    j.saveMany([{ key: 'shards/b', value: state(6, 'n2') }, { key: 'shards/d', value: state(1) }]);
    j.close();
    disk.flipBits(HARD_STATE_JOURNAL, firstEnd - 3, 1);
    const again = HardStateJournal.open(disk, { dirs });
    assert.equal(again.damage.length, 1);
    assert.match(again.damage[0]!.reason, /record at 0: payload CRC-32C does not match/);
    // a was only in the damaged record; c has a directory and no entry after the damage (its
    // state may have been there); b and d were saved after it.
    assert.throws(() => again.lookup('shards/a'), (e: unknown) => e instanceof CorruptionError && /lost to damage/.test(e.message));
    assert.throws(() => again.lookup('shards/c'), CorruptionError);
    assert.deepEqual(value(again, 'shards/b'), state(6, 'n2'));
    assert.deepEqual(value(again, 'shards/d'), state(1));
    again.close();
    // The file was rewritten without the damage, the damaged directories marked in it.
    disk.powerCut();
    const third = HardStateJournal.open(disk, { dirs });
    assert.deepEqual(third.damage, []);
    assert.throws(() => third.lookup('shards/a'), CorruptionError);
    assert.throws(() => third.lookup('shards/c'), CorruptionError);
    third.saveMany([{ key: 'shards/a', value: state(9) }]);
    assert.deepEqual(value(third, 'shards/a'), state(9));
  });

  it('two damaged records: a directory saved between them, and not after the second, reads as damaged', () => {
    const disk = durableDisk(['shards/a', 'shards/b']);
    const j = HardStateJournal.open(disk);
    const ends: number[] = [];
    for (const [key, term] of [['shards/a', 1], ['shards/a', 2], ['shards/b', 3], ['shards/a', 4], ['shards/b', 5]] as const) {
      j.saveMany([{ key, value: state(term) }]);
      ends.push(disk.fileBytes(HARD_STATE_JOURNAL).length);
    }
    j.close();
    disk.flipBits(HARD_STATE_JOURNAL, ends[0]! - 3, 1); // a's term 1
    disk.flipBits(HARD_STATE_JOURNAL, ends[3]! - 3, 1); // a's term 4: newer than its term 2, between the damages
    const again = HardStateJournal.open(disk, { dirs: () => ['shards/a', 'shards/b'] });
    assert.equal(again.damage.length, 2);
    assert.throws(() => again.lookup('shards/a'), CorruptionError);
    assert.deepEqual(value(again, 'shards/b'), state(5));
  });

  it('a record cut short in the middle of the file is damage, not a torn tail', () => {
    const disk = durableDisk(['shards/a', 'shards/b']);
    const j = HardStateJournal.open(disk);
    j.saveMany([{ key: 'shards/a', value: state(5, 'n1') }]);
    const firstEnd = disk.fileBytes(HARD_STATE_JOURNAL).length;
    j.saveMany([{ key: 'shards/b', value: state(1) }]);
    j.close();
    // The first record's length field now says it runs past the end of the file.
    disk.flipBits(HARD_STATE_JOURNAL, 10, 1);
    const again = HardStateJournal.open(disk, { dirs: () => ['shards/a'] });
    assert.equal(again.damage.length, 1, `damage: ${JSON.stringify(again.damage)} (first record ends at ${firstEnd})`);
    assert.throws(() => again.lookup('shards/a'), CorruptionError);
    assert.deepEqual(value(again, 'shards/b'), state(1));
  });

  it('the last record whole but not checking out is damage (written, answered, rotted since); zeros after the last record are a torn tail', () => {
    const disk = durableDisk(['shards/a', 'shards/b', 'shards/c']);
    const dirs = (): string[] => disk.list('shards').map((n) => `shards/${n}`);
    const j = HardStateJournal.open(disk, { dirs });
    j.saveMany([{ key: 'shards/a', value: state(5, 'n1') }]);
    j.saveMany([{ key: 'shards/b', value: state(6, 'n2') }]);
    const end = disk.fileBytes(HARD_STATE_JOURNAL).length;
    j.close();
    disk.flipBits(HARD_STATE_JOURNAL, end - 3, 1);
    const again = HardStateJournal.open(disk, { dirs });
    assert.equal(again.damage.length, 1);
    for (const d of ['shards/a', 'shards/b', 'shards/c']) assert.throws(() => again.lookup(d), CorruptionError, d);
    again.close();

    const zeros = durableDisk(['shards/a']);
    const z = HardStateJournal.open(zeros);
    z.saveMany([{ key: 'shards/a', value: state(5, 'n1') }]);
    const size = zeros.fileBytes(HARD_STATE_JOURNAL).length;
    z.close();
    const fh = zeros.open(HARD_STATE_JOURNAL);
    zeros.write(fh, new Uint8Array(300), size);
    zeros.fdatasync(fh);
    zeros.close(fh);
    const after = HardStateJournal.open(zeros);
    assert.deepEqual(after.damage, []);
    assert.deepEqual(value(after, 'shards/a'), state(5, 'n1'));
    assert.equal(zeros.fileBytes(HARD_STATE_JOURNAL).length, size);
  });

  it('the last record, its length rotted to run past the end of the file, is damage: its header CRC tells it from a torn write', () => {
    const disk = durableDisk(['shards/a', 'shards/b']);
    const dirs = (): string[] => disk.list('shards').map((n) => `shards/${n}`);
    const j = HardStateJournal.open(disk, { dirs });
    j.saveMany([{ key: 'shards/a', value: state(5, 'n1') }, { key: 'shards/b', value: state(5, 'n1') }]);
    const firstEnd = disk.fileBytes(HARD_STATE_JOURNAL).length;
    j.saveMany([{ key: 'shards/b', value: state(6, 'n2') }]); // answered: b voted for n2 in term 6
    const end = disk.fileBytes(HARD_STATE_JOURNAL).length;
    j.close();
    // The second byte of the last record's length: + 0xFF00 bytes, under the bound, past the end.
    disk.flipBits(HARD_STATE_JOURNAL, firstEnd + 9, 1);
    const length = new DataView(disk.fileBytes(HARD_STATE_JOURNAL).buffer).getUint32(firstEnd + 8, true);
    assert.ok(firstEnd + HARD_STATE_RECORD_HEADER_BYTES + length > end && length <= 1024 * 1024, `length ${length}`);
    const again = HardStateJournal.open(disk, { dirs });
    assert.equal(again.damage.length, 1);
    assert.match(again.damage[0]!.reason, new RegExp(`record at ${firstEnd}: header CRC-32C does not match`));
    // Not term 5 with no vote, which would let b vote again in term 6.
    assert.throws(() => again.lookup('shards/b'), CorruptionError);
    assert.throws(() => again.lookup('shards/a'), CorruptionError);
  });

  it('a write cut anywhere, with zeros after the point it reached (a filesystem showing its new length), is a torn tail', () => {
    const disk0 = durableDisk();
    const probe = HardStateJournal.open(disk0);
    probe.saveMany([{ key: 'shards/v1-0', value: state(2, 'n3') }, { key: 'shards/v1-1', value: state(2) }]);
    const recordBytes = disk0.fileBytes(HARD_STATE_JOURNAL).length;
    for (let keep = 0; keep < recordBytes; keep++) {
      const { disk, kept, end } = journalEndingWith([{ key: 'shards/v1-0', value: state(1) }], [{ key: 'shards/v1-0', value: state(2, 'n3') }, { key: 'shards/v1-1', value: state(2) }]);
      assert.equal(end, kept + recordBytes);
      // What the write did not reach reads as zeros.
      const fh = disk.open(HARD_STATE_JOURNAL);
      disk.write(fh, new Uint8Array(recordBytes - keep), kept + keep);
      disk.fdatasync(fh);
      disk.close(fh);
      const again = HardStateJournal.open(disk);
      assert.deepEqual(again.damage, [], `cut after ${keep} bytes`);
      assert.deepEqual(value(again, 'shards/v1-0'), state(1));
      assert.equal(value(again, 'shards/v1-1'), 'none');
      assert.equal(disk.fileBytes(HARD_STATE_JOURNAL).length, kept, 'the torn record is cut off');
    }
  });

  it('the last record with a sector of zeros in its payload (a crash wrote a later sector, not that one) is a torn tail, its end intact or not', () => {
    const { disk, kept, end } = journalEndingWith([{ key: 'shards/a', value: state(1) }], Array.from({ length: 60 }, (_, i) => ({ key: `shards/v${i}-0`, value: state(2, 'n2') })));
    const sector = Math.ceil((kept + HARD_STATE_RECORD_HEADER_BYTES) / 512) * 512;
    assert.ok(sector + 512 < end, `a whole sector inside the payload (${kept}..${end})`);
    disk.zeroBytes(HARD_STATE_JOURNAL, sector, 512);
    const again = HardStateJournal.open(disk);
    assert.deepEqual(again.damage, []);
    assert.deepEqual(value(again, 'shards/a'), state(1));
    assert.equal(value(again, 'shards/v0-0'), 'none');
    assert.equal(disk.fileBytes(HARD_STATE_JOURNAL).length, kept, 'the torn record is cut off');
  });

  it('the last record, its header across a sector boundary, the sector of its start not written while the next one was: a torn tail', () => {
    const disk = durableDisk();
    const j = HardStateJournal.open(disk);
    j.saveMany([{ key: 'shards/a', value: state(1) }]);
    const first = disk.fileBytes(HARD_STATE_JOURNAL).length;
    // Then records whose names' lengths put the last record's header 8 bytes before a sector boundary.
    for (let size = first; ; size += first) {
      const n = (((504 - size - first + 1) % 512) + 512) % 512; // a name of n letters: first + n - 1 bytes
      if (n >= 1 && n <= 200) {
        j.saveMany([{ key: `shards/${'b'.repeat(n)}`, value: state(1) }]);
        break;
      }
      j.saveMany([{ key: 'shards/a', value: state(1) }]);
    }
    const at = disk.fileBytes(HARD_STATE_JOURNAL).length;
    assert.equal(at % 512, 504);
    j.saveMany([{ key: 'shards/c', value: state(3, 'n2') }]);
    j.close();
    disk.zeroBytes(HARD_STATE_JOURNAL, at, 8);
    const again = HardStateJournal.open(disk);
    assert.deepEqual(again.damage, []);
    assert.deepEqual(value(again, 'shards/a'), state(1));
    assert.equal(value(again, 'shards/c'), 'none');
    assert.equal(disk.fileBytes(HARD_STATE_JOURNAL).length, at, 'the torn record is cut off');
  });

  describe('the last record, at random', () => {
    /** A journal of one record (shards/a), then a last one of 1..40 entries with names of any length, closed. */
    function journalOf(rand: () => number): { disk: SimDisk; kept: number; end: number; first: string } {
      const first = [{ key: `shards/${'a'.repeat(1 + Math.floor(rand() * 200))}`, value: state(1) }];
      const keys = Array.from({ length: 1 + Math.floor(rand() * 40) }, (_, i) => `shards/v${i}-${'x'.repeat(Math.floor(rand() * 60))}`);
      return { ...journalEndingWith(first, keys.map((key) => ({ key, value: state(2, 'n2') }))), first: keys[0]! };
    }

    it('a write a crash cut short (the file ending in it, zeros from any byte of it on, any of its sectors not written) is a torn tail, never damage', () => {
      const rand = prng(9001);
      for (let round = 0; round < 1500; round++) {
        const { disk, kept, end, first } = journalOf(rand);
        const before = disk.fileBytes(HARD_STATE_JOURNAL);
        tearAtRandom(disk, HARD_STATE_JOURNAL, kept, end, rand);
        const after = disk.fileBytes(HARD_STATE_JOURNAL);
        const changed = after.length !== before.length || after.some((b, i) => b !== before[i]);
        const again = HardStateJournal.open(disk);
        const label = `round ${round}: record ${kept}..${end}`;
        assert.deepEqual(again.damage, [], label);
        assert.deepEqual(value(again, first), changed ? 'none' : state(2, 'n2'), label);
        assert.equal(disk.fileBytes(HARD_STATE_JOURNAL).length, changed ? kept : end, label);
        again.close();
      }
    });

    it('a bit of it rotted is damage, never a torn tail', () => {
      const rand = prng(9002);
      for (let round = 0; round < 1500; round++) {
        const { disk, kept, end } = journalOf(rand);
        disk.flipBits(HARD_STATE_JOURNAL, kept + Math.floor(rand() * (end - kept)), 1);
        const again = HardStateJournal.open(disk);
        assert.equal(again.damage.length, 1, `round ${round}: record ${kept}..${end}`);
        again.close();
      }
    });
  });

  it('reads the records of format version 1 (no header CRC), and appends records of the current version after them', () => {
    const disk = durableDisk(['shards/a']);
    const payload = new TextEncoder().encode(JSON.stringify([['shards/a', state(4, 'n2')]]));
    const v1 = new Uint8Array(HARD_STATE_RECORD_HEADER_BYTES_V1 + payload.length);
    const dv = new DataView(v1.buffer);
    v1.set(new TextEncoder().encode('STHJ'), 0);
    dv.setUint32(4, 1, true);
    dv.setUint32(8, payload.length, true);
    dv.setUint32(12, crc32c(payload), true);
    v1.set(payload, HARD_STATE_RECORD_HEADER_BYTES_V1);
    const fh = disk.open(HARD_STATE_JOURNAL, { create: true });
    disk.write(fh, v1, 0);
    disk.fdatasync(fh);
    disk.close(fh);
    disk.fsyncDir('');
    const j = HardStateJournal.open(disk);
    assert.deepEqual(j.damage, []);
    assert.deepEqual(value(j, 'shards/a'), state(4, 'n2'));
    j.saveMany([{ key: 'shards/b', value: state(1) }]);
    const again = reopenAfterPowerCut(disk, j);
    assert.deepEqual(again.damage, []);
    assert.deepEqual(value(again, 'shards/a'), state(4, 'n2'));
    assert.deepEqual(value(again, 'shards/b'), state(1));
    const file = disk.fileBytes(HARD_STATE_JOURNAL);
    assert.equal(new DataView(file.buffer, file.byteOffset).getUint32(v1.length + 4, true), HARD_STATE_JOURNAL_FORMAT_VERSION);
  });

  it('forgets a destroyed directory durably; forgetting one it holds nothing of writes nothing', () => {
    const disk = durableDisk();
    const j = HardStateJournal.open(disk);
    j.saveMany([{ key: 'shards/v1-0', value: state(7, 'n2') }]);
    const size = disk.fileBytes(HARD_STATE_JOURNAL).length;
    j.forget('shards/v9-0');
    assert.equal(disk.fileBytes(HARD_STATE_JOURNAL).length, size);
    j.forget('shards/v1-0');
    assert.equal(value(j, 'shards/v1-0'), 'forgotten');
    const again = reopenAfterPowerCut(disk, j);
    assert.equal(value(again, 'shards/v1-0'), 'forgotten');
    again.saveMany([{ key: 'shards/v1-0', value: state(1) }]);
    assert.deepEqual(value(again, 'shards/v1-0'), state(1));
  });

  it('rewrites the file once over its bound and mostly superseded: bounded, nothing lost, directories that are gone dropped', () => {
    const disk = durableDisk(['shards/kept', 'shards/x', 'shards/y', 'shards/z']);
    const j = HardStateJournal.open(disk, { compactBytes: 4096 });
    j.saveMany([{ key: 'shards/kept', value: state(1) }, { key: 'shards/gone', value: state(1) }]);
    j.forget('shards/gone');
    j.forget('shards/kept'); // its directory is still there (a destroy a crash cut short): kept forgotten
    j.saveMany([{ key: 'shards/z', value: state(1) }]);
    disk.removeTree('shards/z'); // gone without a word: dropped at the rewrite all the same
    for (let t = 1; t <= 400; t++) j.saveMany([{ key: 'shards/x', value: state(t, 'n1') }, { key: 'shards/y', value: state(t, 'n2') }]);
    const st = j.stats();
    assert.ok(st.compactions >= 5, `compactions: ${st.compactions}`);
    assert.ok(st.bytes <= 4096 + 200, `bytes: ${st.bytes}`);
    assert.equal(st.dirs, 3, 'x, y and the forgotten directory still there');
    const again = reopenAfterPowerCut(disk, j);
    assert.deepEqual(value(again, 'shards/x'), state(400, 'n1'));
    assert.deepEqual(value(again, 'shards/y'), state(400, 'n2'));
    assert.equal(value(again, 'shards/kept'), 'forgotten');
    assert.equal(value(again, 'shards/gone'), 'none');
    assert.equal(value(again, 'shards/z'), 'none');
    assert.deepEqual(disk.list(''), ['hard-states', 'shards']);
  });

  it('a rewrite that fails (a full disk) fails no save: the old file goes on, and the rewrite is tried again once it grew by the bound', () => {
    const disk = durableDisk(['shards/x']);
    HardStateJournal.open(disk).close(); // made (through its .tmp), then opened by its name
    const j = HardStateJournal.open(disk, { compactBytes: 2000 });
    disk.failWrite({ path: `${HARD_STATE_JOURNAL}.tmp`, errno: 'ENOSPC', times: 1 });
    let t = 0;
    while (j.stats().rewriteFailures === 0) {
      assert.ok(++t < 200, 'a rewrite was tried');
      j.saveMany([{ key: 'shards/x', value: state(t, 'n1') }]);
    }
    const failedAt = j.stats().bytes;
    assert.equal(j.stats().compactions, 0);
    while (j.stats().compactions === 0) {
      assert.ok(++t < 400, 'the rewrite was tried again');
      j.saveMany([{ key: 'shards/x', value: state(t, 'n1') }]);
      if (j.stats().compactions === 0) assert.ok(j.stats().bytes <= failedAt + 2000 + 100, `not before it grew by the bound: ${j.stats().bytes}`);
    }
    j.saveMany([{ key: 'shards/x', value: state(++t, 'n1') }]);
    assert.deepEqual(value(reopenAfterPowerCut(disk, j), 'shards/x'), state(t, 'n1'));
  });

  it('a crash at any step of a rewrite leaves every save that was answered', () => {
    for (let steps = 1; steps <= 8; steps++) {
      const disk = durableDisk(['shards/x']);
      const j = HardStateJournal.open(disk, { compactBytes: 600 });
      let answered = 0;
      let crashed = false;
      for (let t = 1; t <= 40 && !crashed; t++) {
        if (j.stats().bytes > 450 && !crashed) disk.crashAfter(steps);
        try {
          j.saveMany([{ key: 'shards/x', value: state(t, 'n1') }]);
          answered = t;
        } catch (e) {
          assert.ok(e instanceof SimulatedCrash, String(e));
          crashed = true;
        }
        disk.clearFaults();
      }
      disk.powerCut();
      const again = HardStateJournal.open(disk);
      const found = again.lookup('shards/x');
      assert.equal(found.kind, 'saved', `crash after ${steps} steps`);
      const term = (found.kind === 'saved' ? found.value : undefined) as { term: number };
      assert.ok(term.term === answered || term.term === answered + 1, `crash after ${steps} steps: term ${term.term}, answered ${answered}`);
      assert.deepEqual(again.damage, []);
    }
  });

  it('read only: a torn record is left where it is, and saves are refused', () => {
    const disk = durableDisk();
    const j = HardStateJournal.open(disk);
    j.saveMany([{ key: 'shards/a', value: state(1) }]);
    disk.crashAfter(1);
    assert.throws(() => j.saveMany([{ key: 'shards/a', value: state(2) }]), SimulatedCrash);
    disk.powerCut({ tear: { path: HARD_STATE_JOURNAL, keepBytes: 10 } });
    const size = disk.fileBytes(HARD_STATE_JOURNAL).length;
    const ro = HardStateJournal.open(disk, { readOnly: true });
    assert.deepEqual(value(ro, 'shards/a'), state(1));
    assert.equal(disk.fileBytes(HARD_STATE_JOURNAL).length, size);
    assert.match(expectStorageError(() => ro.saveMany([{ key: 'shards/a', value: state(3) }]), 'bad_request').message, /read only/);
    assert.equal(HardStateJournal.open(durableDisk(), { readOnly: true }).stats().bytes, 0);
  });

  it('refuses what is not a hard state: not an object, too large, no directory', () => {
    const j = HardStateJournal.open(durableDisk());
    assert.match(expectStorageError(() => j.saveMany([{ key: 'shards/a', value: 3 }]), 'bad_request').message, /must be an object/);
    assert.match(expectStorageError(() => j.saveMany([{ key: 'shards/a', value: [1] }]), 'bad_request').message, /must be an object/);
    assert.match(expectStorageError(() => j.saveMany([{ key: '', value: state(1) }]), 'bad_request').message, /needs a directory/);
    expectStorageError(() => j.saveMany([{ key: 'shards/a', value: { term: 1, votedFor: 'x'.repeat(HARD_STATE_VALUE_BYTES_MAX) } }]), 'too_large');
    assert.equal(j.stats().batches, 0);
  });

  it('a file over the bound of a journal is not read (not a journal this code wrote): damage, with the file named, nothing changed', () => {
    const root = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-journal-test-'));
    try {
      // Sparse: no space taken, and the open looks at its size before reading it.
      fs.writeFileSync(nodePath.join(root, HARD_STATE_JOURNAL), '');
      fs.truncateSync(nodePath.join(root, HARD_STATE_JOURNAL), HARD_STATE_JOURNAL_BYTES_MAX + 1);
      const disk = new RealDisk(root);
      assert.throws(
        () => HardStateJournal.open(disk),
        (e: unknown) => e instanceof CorruptionError && e.message.includes(`${HARD_STATE_JOURNAL_BYTES_MAX + 1} bytes is over the bound`) && e.reports[0]?.file === HARD_STATE_JOURNAL,
      );
      assert.equal(disk.openFiles, 0);
      assert.equal(fs.statSync(nodePath.join(root, HARD_STATE_JOURNAL)).size, HARD_STATE_JOURNAL_BYTES_MAX + 1);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('bounds values and directories in UTF-8 bytes, not characters', () => {
    const j = HardStateJournal.open(durableDisk());
    // 1,400 characters of 3 bytes each: 4,200 bytes of JSON and more, over the bound of 4,096.
    const wide = { term: 1, votedFor: '€'.repeat(1_400) };
    assert.ok(JSON.stringify(wide).length < HARD_STATE_VALUE_BYTES_MAX);
    assert.match(expectStorageError(() => j.saveMany([{ key: 'shards/a', value: wide }]), 'too_large').message, /takes 42\d\d bytes, over 4096/);
    assert.match(expectStorageError(() => j.saveMany([{ key: `shards/${'é'.repeat(600)}`, value: state(1) }]), 'too_large').message, /directory of 12\d\d bytes is over 1024/);
    j.saveMany([{ key: `shards/${'é'.repeat(500)}`, value: { term: 1, votedFor: '€'.repeat(1_300) } }]);
    assert.equal(j.stats().batches, 1);
  });

  it('a batch over the record bound is written as several records of at most the bound, all read back, whatever its characters', () => {
    for (const [what, fill] of [['ASCII', 'x'], ['3-byte characters', '€']] as const) {
      // 500 saves of 3.9 KB each: about 2 MB of JSON, more than one record's 1 MiB.
      const saves = Array.from({ length: 500 }, (_, i) => ({ key: `shards/v${i}.0`, value: { term: i + 1, votedFor: null, note: fill.repeat(Math.floor(3_900 / Buffer.byteLength(fill))) } }));
      const disk = durableDisk(saves.map((s) => s.key));
      const j = HardStateJournal.open(disk);
      j.saveMany(saves);
      // One batch, all of it live: nothing to rewrite (its size and what is live both in bytes).
      assert.deepEqual([j.stats().batches, j.stats().compactions], [1, 0], what);
      const bytes = disk.fileBytes(HARD_STATE_JOURNAL);
      const lengths: number[] = [];
      for (let at = 0; at < bytes.length; ) {
        const length = new DataView(bytes.buffer, bytes.byteOffset + at).getUint32(8, true);
        lengths.push(length);
        at += HARD_STATE_RECORD_HEADER_BYTES + length;
      }
      assert.ok(lengths.length >= 4, `${what}: ${lengths.length} records`);
      for (const length of lengths) assert.ok(length <= HARD_STATE_RECORD_PAYLOAD_BYTES_MAX, `${what}: a record of ${length} bytes`);
      const again = reopenAfterPowerCut(disk, j);
      assert.deepEqual(again.damage, [], what);
      for (const s of saves) assert.deepEqual(value(again, s.key), s.value, `${what}: ${s.key}`);
      again.close();
    }
  });

  it('a failed fdatasync takes none of the batch, and what it wrote is cut before the next save', () => {
    const disk = durableDisk();
    const j = HardStateJournal.open(disk);
    j.saveMany([{ key: 'shards/a', value: state(1) }]);
    disk.failFsync({ path: HARD_STATE_JOURNAL });
    expectStorageError(() => j.saveMany([{ key: 'shards/a', value: state(2, 'n2') }, { key: 'shards/b', value: { term: 2, votedFor: 'n2', note: 'y'.repeat(200) } }]), 'fsync_failed');
    assert.deepEqual(value(j, 'shards/a'), state(1));
    assert.equal(value(j, 'shards/b'), 'none');
    j.saveMany([{ key: 'shards/a', value: state(3) }]);
    const again = reopenAfterPowerCut(disk, j);
    assert.deepEqual(again.damage, []);
    assert.deepEqual(value(again, 'shards/a'), state(3));
    assert.equal(value(again, 'shards/b'), 'none');
  });
});
