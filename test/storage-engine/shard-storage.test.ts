/**
 * ShardStorage: opening without a readable checkpoint pointer, repairing a damaged log at open,
 * and installing an image received from a leader only once all of it checks out.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { CorruptionError, StorageError, type CorruptionReport } from '../../storage-engine/errors';
import { imageFileName } from '../../storage-engine/image';
import { encodePageWrite, pageWriteDataStart } from '../../storage-engine/page-write';
import { parseSegmentName, RECORD_HEADER_BYTES } from '../../storage-engine/log-segment';
import { RealDisk } from '../../storage-engine/real-disk';
import { ShardStorage, type ShardStorageOptions } from '../../storage-engine/shard-storage';
import { PageStore } from '../../storage-engine/page-store';
import { HARD_STATE_JOURNAL, HardStateJournal } from '../../storage-engine/hard-state-journal';
import { SimDisk, SimulatedCrash } from '../../storage-engine/sim-disk';
import { Slab } from '../../storage-engine/slab';
import { waitFor } from '../support/wait';
import { expectStorageError } from '../support/expect';

const PAGE = 4096;
const PAGES = 64;
const slab = new Slab({ slotBytes: PAGE, slotCount: 4096 });
const options = (dir: string): ShardStorageOptions => ({ dir, pageSize: PAGE, pageCount: PAGES, cacheBytesMax: 1 << 16, slab, segmentBytesMax: 16 * 1024 });

/** Writes, applies and checkpoints `rounds` × 40 one-page records (page p holds its LSN). */
function fill(st: ShardStorage, rounds: number): number {
  let lsn = st.log.lastLsn;
  for (let round = 0; round < rounds; round++) {
    const records = Array.from({ length: 40 }, (_, k) => {
      const at = lsn + k + 1;
      return { term: 1, kind: 1, payload: encodePageWrite(PAGE, [{ page: at % PAGES, data: new Uint8Array(PAGE).fill(at & 0xff) }]) };
    });
    st.log.write(records);
    st.log.sync();
    for (const r of st.log.read(lsn + 1, lsn + 40)) st.store.apply(r);
    lsn += 40;
    st.store.checkpoint();
  }
  return lsn;
}

/** The log segments of `dir`, ascending base LSN. */
const segments = (disk: SimDisk, dir: string): { name: string; base: number }[] =>
  disk
    .list(`${dir}/log`)
    .map((name) => ({ name, base: parseSegmentName(name) }))
    .filter((x): x is { name: string; base: number } => x.base !== undefined)
    .sort((a, b) => a.base - b.base);

/** Opens a shard's storage, runs `check` on it, and closes it whatever happens. */
function whileOpen(disk: SimDisk, opts: ShardStorageOptions, check: (st: ShardStorage) => void): void {
  const st = ShardStorage.open(disk, opts);
  try {
    check(st);
  } finally {
    st.close();
  }
}

describe('ShardStorage', () => {
  it('a check of an image a checkpoint let go meanwhile ends quietly when the image is cut away in the background', async () => {
    const root = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-shard-'));
    try {
      const disk = new RealDisk(root);
      const big = { ...options('S'), pageCount: 2048, cacheBytesMax: 1 << 20, segmentBytesMax: 64 * 1024 * 1024 };
      const st = ShardStorage.open(disk, big);
      let lsn = 0;
      /** Writes `count` pages from `first` (one record per 256 pages), applies them and checkpoints. */
      const writeAndCheckpoint = (first: number, count: number): void => {
        for (let at = first; at < first + count; at += 256) {
          const pages = Array.from({ length: Math.min(256, first + count - at) }, (_, k) => ({ page: at + k, data: new Uint8Array(PAGE).fill((lsn + 1) & 0xff) }));
          st.log.write([{ term: 1, kind: 1, payload: encodePageWrite(PAGE, pages) }]);
          st.log.sync();
          lsn++;
          st.store.apply(st.log.read(lsn, lsn)[0]!);
        }
        st.store.checkpoint();
      };
      writeAndCheckpoint(0, 2048); // an 8 MiB image
      const checked = st.newestLsn();
      const steps = st.verifySteps(checked);
      assert.equal(steps.next().done, false, 'the check is under way');
      writeAndCheckpoint(0, 1);
      writeAndCheckpoint(1, 1); // the checked image is let go, renamed away and cut in the background
      const name = imageFileName(checked);
      await waitFor('the let-go image removed', () => !fs.readdirSync(nodePath.join(root, 'S')).some((n) => n.startsWith(name)));
      let n = 0;
      while (steps.next().done !== true) n++;
      assert.ok(n < 64, `ended after ${n} more steps, without a CorruptionError`);
      st.close();
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('opens from the newest image the log covers when its checkpoint pointer is unreadable', () => {
    const disk = new SimDisk();
    const st = ShardStorage.open(disk, options('S'));
    const last = fill(st, 3);
    assert.ok(st.log.firstLsn > 1, 'the log was trimmed behind the images');
    st.close();
    disk.flipBits('S/checkpoint', 25, 1);
    disk.powerCut();
    whileOpen(disk, options('S'), (again) => {
      assert.equal(again.store.appliedLsn, last);
      assert.deepEqual(again.store.getPage(last % PAGES), new Uint8Array(PAGE).fill(last & 0xff));
    });
  });

  /** A leader's newest checkpoint image (after 2 rounds of writes) and its bytes, as a follower would receive them. */
  const leaderImage = (): { image: NonNullable<ReturnType<ShardStorage['newest']>>; bytes: Uint8Array } => {
    const leader = ShardStorage.open(new SimDisk(), options('L'));
    fill(leader, 2);
    const image = leader.newest()!;
    const bytes = leader.read(image.lsn, 0, image.bytes);
    leader.close();
    return { image, bytes };
  };

  it('refuses a received image with a bad page before it replaces anything: the log, the state and the image names stay as they were', () => {
    const { image, bytes } = leaderImage();
    bytes[bytes.length - 100]! ^= 0x10; // a bit of the last stored page, flipped on the way

    const disk = new SimDisk();
    const follower = ShardStorage.open(disk, options('F'));
    follower.log.write([{ term: 1, kind: 1, payload: encodePageWrite(PAGE, [{ page: 1, data: new Uint8Array(PAGE).fill(7) }]) }]);
    follower.log.sync();
    follower.begin(image.lsn, image.term, image.bytes);
    follower.write(0, bytes);
    assert.throws(() => follower.install(), (e: Error) => e instanceof CorruptionError && /checksum mismatch/.test(e.message));
    assert.equal(follower.log.lastLsn, 1, 'the log was not reset');
    assert.equal(disk.exists(`F/${imageFileName(image.lsn)}`), false, 'no file under an image name');
    follower.close();
    whileOpen(disk, options('F'), (reopened) => {
      assert.equal(reopened.log.lastLsn, 1);
    });
  });

  it('refuses to install an image not wholly received, or none begun: the log stays as it was', () => {
    const { image, bytes } = leaderImage();
    const disk = new SimDisk();
    const follower = ShardStorage.open(disk, options('F'));
    assert.throws(() => follower.install(), (e: Error) => e instanceof StorageError && e.code === 'bad_request' && /no complete image has been received/.test(e.message));
    follower.begin(image.lsn, image.term, image.bytes);
    follower.write(0, bytes.subarray(0, bytes.length - 1));
    assert.throws(() => follower.install(), (e: Error) => e instanceof StorageError && e.code === 'bad_request' && /no complete image has been received/.test(e.message));
    assert.equal(follower.log.lastLsn, 0, 'the log was not reset');
    assert.equal(disk.exists(`F/${imageFileName(image.lsn)}`), false, 'no file under an image name');
    // The last byte, and it installs.
    follower.write(bytes.length - 1, bytes.subarray(bytes.length - 1));
    follower.install();
    assert.equal(follower.log.lastLsn, image.lsn);
    follower.close();
  });

  it('an installed image survives a power cut right after install: the store opens on it and reads every page right', () => {
    const { image, bytes } = leaderImage();
    const disk = new SimDisk();
    const follower = ShardStorage.open(disk, options('F'));
    follower.begin(image.lsn, image.term, image.bytes);
    follower.write(0, bytes.subarray(0, 5000));
    follower.write(5000, bytes.subarray(5000));
    follower.install();
    follower.close();
    disk.powerCut();
    whileOpen(disk, options('F'), (reopened) => {
      assert.deepEqual([reopened.log.lastLsn, reopened.store.appliedLsn, reopened.newestLsn()], [image.lsn, image.lsn, image.lsn]);
      for (let p = 0; p < PAGES; p++) {
        const lsn = image.lsn - ((image.lsn - p) % PAGES); // the last record that wrote page p
        assert.deepEqual(reopened.store.getPage(p), new Uint8Array(PAGE).fill(lsn & 0xff), `page ${p}`);
      }
    });
  });

  it('a crash at any step of an install, with no checkpoint pointer beside a log of records never committed: the old state or the image, never those records applied', () => {
    const { image, bytes } = leaderImage();
    let finished = false;
    for (let steps = 0; !finished; steps++) {
      assert.ok(steps < 100, 'the install finishes within 100 disk steps');
      const disk = new SimDisk();
      const follower = ShardStorage.open(disk, options('F'));
      // A leader cut off with five records of its own, which no other replica took.
      follower.log.write(Array.from({ length: 5 }, (_, k) => ({ term: 1, kind: 1, payload: encodePageWrite(PAGE, [{ page: 3, data: new Uint8Array(PAGE).fill(0x11 + k) }]) })));
      follower.log.sync();
      follower.begin(image.lsn, image.term, image.bytes);
      follower.write(0, bytes);
      disk.crashAfter(steps);
      try {
        follower.install();
        finished = true;
      } catch (e) {
        if (!(e instanceof SimulatedCrash)) throw e;
      }
      try {
        follower.close();
      } catch {
        // The disk crashed under it.
      }
      disk.powerCut();
      whileOpen(disk, options('F'), (again) => {
        const applied = again.store.appliedLsn;
        assert.ok(applied === 0 || applied === image.lsn, `crash after ${steps} steps: applied ${applied}, neither 0 nor the image's ${image.lsn}`);
        const page3 = again.store.getPage(3);
        if (applied === 0) assert.ok(page3.every((b) => b === 0), `crash after ${steps} steps: page 3 as before`);
        else assert.equal(again.log.lastLsn, image.lsn);
      });
    }
  });

  it('refuses an image chunk that does not continue the image being received, or runs past its size', () => {
    const { image, bytes } = leaderImage();
    const disk = new SimDisk();
    const follower = ShardStorage.open(disk, options('F'));
    expectStorageError(() => follower.write(0, bytes.subarray(0, 10)), 'bad_request'); // nothing begun
    follower.begin(image.lsn, image.term, image.bytes);
    follower.write(0, bytes.subarray(0, 4096));
    expectStorageError(() => follower.write(8192, bytes.subarray(8192, 12288)), 'bad_request'); // a gap
    expectStorageError(() => follower.write(0, bytes.subarray(0, 4096)), 'bad_request'); // again
    expectStorageError(() => follower.write(4096, new Uint8Array(image.bytes)), 'bad_request'); // past the end
    follower.write(4096, bytes.subarray(4096));
    follower.install();
    assert.equal(follower.newestLsn(), image.lsn);
    follower.close();
  });

  it('removes an image a crash left half received when it opens', () => {
    const disk = new SimDisk();
    const st = ShardStorage.open(disk, options('F'));
    st.begin(200, 1, 100_000);
    st.write(0, new Uint8Array(5000).fill(9));
    st.close();
    assert.equal(disk.exists('F/incoming.img.tmp'), true);
    whileOpen(disk, options('F'), () => {
      assert.equal(disk.exists('F/incoming.img.tmp'), false);
    });
    disk.powerCut();
    assert.equal(disk.exists('F/incoming.img.tmp'), false, 'durably');
  });

  it('refuses an intact received image whose term is not the one announced: the log, the state and the image names stay as they were', () => {
    const { image, bytes } = leaderImage();

    const disk = new SimDisk();
    const follower = ShardStorage.open(disk, options('F'));
    follower.log.write([{ term: 1, kind: 1, payload: encodePageWrite(PAGE, [{ page: 1, data: new Uint8Array(PAGE).fill(7) }]) }]);
    follower.log.sync();
    follower.begin(image.lsn, image.term + 1, image.bytes);
    follower.write(0, bytes);
    assert.throws(
      () => follower.install(),
      (e: Error) => e instanceof StorageError && e.code === 'corruption' && /does not match: lsn \d+\/\d+, term 1\/2/.test(e.message),
    );
    assert.equal(follower.log.lastLsn, 1, 'the log was not reset');
    assert.equal(disk.exists(`F/${imageFileName(image.lsn)}`), false, 'no file under an image name');
    assert.equal(follower.newestLsn(), 0, 'no checkpoint pointer names the image');
    // The replica goes on as before: its record applies and reads back.
    follower.store.apply(follower.log.read(1, 1)[0]!);
    assert.deepEqual(follower.store.getPage(1), new Uint8Array(PAGE).fill(7));
    // The same bytes announced with their own term install.
    follower.begin(image.lsn, image.term, image.bytes);
    follower.write(0, bytes);
    const { log } = follower.install();
    assert.deepEqual([log.lastLsn, log.lastTerm], [image.lsn, image.term]);
    follower.close();
    whileOpen(disk, options('F'), (reopened) => {
      assert.equal(reopened.store.appliedLsn, image.lsn);
    });
  });

  it('grows: a received image of more pages than it has is refused until it grows, then installs; its stores from then on have the new size', () => {
    const { image, bytes } = leaderImage();
    const disk = new SimDisk();
    const follower = ShardStorage.open(disk, { ...options('F'), pageCount: PAGES / 2 });
    follower.begin(image.lsn, image.term, image.bytes);
    follower.write(0, bytes);
    assert.throws(() => follower.install(), (e: Error) => e instanceof StorageError && e.code === 'bad_request' && /has 64 pages, this replica 32/.test(e.message));
    assert.equal(disk.exists(`F/${imageFileName(image.lsn)}`), false, 'no file under an image name');
    follower.grow(PAGES / 4); // fewer: nothing changes
    assert.equal(follower.store.pages, PAGES / 2);
    follower.grow(PAGES);
    assert.equal(follower.store.pages, PAGES);
    follower.begin(image.lsn, image.term, image.bytes);
    follower.write(0, bytes);
    const { store } = follower.install();
    assert.equal(store.pages, PAGES, 'the store it opens on the image has the new size');
    follower.close();
    // A replica of more pages than the image (its volume grew after the image was made) installs it as it is.
    const larger = ShardStorage.open(new SimDisk(), { ...options('G'), pageCount: PAGES * 2 });
    larger.begin(image.lsn, image.term, image.bytes);
    larger.write(0, bytes);
    assert.equal(larger.install().store.pages, PAGES * 2);
    larger.close();
  });

  describe('a replica expected to exist (expectExisting)', () => {
    const lostMark = { term: 0, votedFor: null, repairTerm: 0, lost: true };

    it('with no trace of its storage: reported lost, and the hard state marked before anything else', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, { ...options('S'), repairFromPeers: true, expectExisting: true });
      assert.equal(st.storageLost, true);
      assert.deepEqual(st.load(), lostMark);
      st.close();
      // Reopened: the mark is what it finds (it is not reported again).
      const again = ShardStorage.open(disk, { ...options('S'), repairFromPeers: true, expectExisting: true });
      assert.equal(again.storageLost, false);
      assert.deepEqual(again.load(), lostMark);
      again.close();
    });

    it('a power cut at any step of that open leaves a store whose next open marks it again', () => {
      for (let steps = 0; ; steps++) {
        assert.ok(steps < 100, 'the open finishes in a bounded number of steps');
        const disk = new SimDisk();
        disk.crashAfter(steps);
        let finished = false;
        try {
          ShardStorage.open(disk, { ...options('S'), repairFromPeers: true, expectExisting: true }).close();
          finished = true;
        } catch (e) {
          assert.ok(e instanceof SimulatedCrash, `crash expected, got ${String(e)}`);
        }
        disk.powerCut();
        const again = ShardStorage.open(disk, { ...options('S'), repairFromPeers: true, expectExisting: true });
        assert.deepEqual(again.load(), lostMark, `after ${steps} steps`);
        again.close();
        if (finished) break;
      }
    });

    it('a reopen that also finds its log shorter than it was durable (a disk replaced under a running host) keeps the lost mark', () => {
      // The host reopens after a device failure with the durable LSN it knew: the log's cut marks
      // the replica to repair (markRepair), which must not drop `lost` (it would vote without
      // having learned its peers' terms).
      const st = ShardStorage.open(new SimDisk(), { ...options('S'), repairFromPeers: true, expectExisting: true, durableLsn: 5 });
      assert.equal(st.storageLost, true);
      assert.equal(st.load()?.lost, true);
      st.close();
    });

    it('a sole copy is reported lost and marked too (it waits for an operator)', () => {
      const st = ShardStorage.open(new SimDisk(), { ...options('S'), expectExisting: true });
      assert.equal(st.storageLost, true);
      assert.deepEqual(st.load(), lostMark);
      st.close();
    });

    it('a replica with a saved term is not lost; one with records and an image but no term and vote lost them; without expectExisting, an empty one is new', () => {
      const termOnly = new SimDisk();
      const a = ShardStorage.open(termOnly, options('S'));
      assert.equal(a.storageLost, false, 'a new replica');
      assert.equal(a.load(), undefined);
      a.save({ term: 2, votedFor: 'n1' });
      a.close();
      const b = ShardStorage.open(termOnly, { ...options('S'), repairFromPeers: true, expectExisting: true });
      assert.equal(b.storageLost, false);
      assert.deepEqual(b.load(), { term: 2, votedFor: 'n1' });
      b.close();
      // Records and an image, but no hard state file: a replica saves its term before it takes
      // a record or an image, so its term and vote were lost (not its records).
      const filled = new SimDisk();
      const c = ShardStorage.open(filled, options('S'));
      const last = fill(c, 1);
      c.close();
      const d = ShardStorage.open(filled, { ...options('S'), repairFromPeers: true, expectExisting: true });
      assert.equal(d.storageLost, true);
      assert.deepEqual(d.load(), lostMark);
      assert.equal(d.log.lastLsn, last, 'the records stay');
      d.close();
    });

    it('a term and vote that no longer read are marked lost and reported as damage, expected or not; a sole copy\'s read of them fails as before', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      const last = fill(st, 1);
      st.save({ term: 3, votedFor: 'n2' });
      st.close();
      disk.flipBits('S/raft', disk.fileBytes('S/raft').length - 3, 1);
      const sole = ShardStorage.open(disk, options('S'));
      assert.throws(() => sole.load(), CorruptionError);
      sole.close();
      const again = ShardStorage.open(disk, { ...options('S'), repairFromPeers: true });
      assert.equal(again.storageLost, false, 'reported as damage instead');
      assert.equal(again.lostRecords, true);
      assert.deepEqual(again.repaired.map((r) => r.file), ['S/raft']);
      assert.deepEqual(again.load(), lostMark);
      assert.equal(again.log.lastLsn, last, 'the records stay');
      again.close();
    });
  });

  describe('with the device\'s hard-state journal', () => {
    const lostMark = { term: 0, votedFor: null, repairTerm: 0, lost: true };
    const withJournal = (disk: SimDisk, dir = 'shards/S'): ShardStorageOptions => ({
      ...options(dir),
      journal: HardStateJournal.open(disk, { dirs: () => disk.list('shards').map((name) => `shards/${name}`) }),
    });

    it('saves the term and vote in the journal, not in a file of the directory, and reads them back after a power cut', () => {
      const disk = new SimDisk();
      const opts = withJournal(disk);
      const st = ShardStorage.open(disk, opts);
      st.save({ term: 4, votedFor: 'n2' });
      assert.equal(disk.exists('shards/S/raft'), false);
      assert.deepEqual(st.stateSink?.key, 'shards/S');
      assert.equal(st.stateSink?.sink, opts.journal);
      st.close();
      assert.throws(() => st.stateSink?.check(), (e: unknown) => e instanceof StorageError && e.code === 'closed');
      disk.powerCut();
      const again = ShardStorage.open(disk, { ...withJournal(disk), repairFromPeers: true, expectExisting: true });
      assert.equal(again.storageLost, false);
      assert.deepEqual(again.load(), { term: 4, votedFor: 'n2' });
      assert.deepEqual(ShardStorage.heldState(disk, 'shards/S', opts.journal), ['raft']);
      assert.deepEqual(ShardStorage.heldState(disk, 'shards/S'), [], 'without the journal nothing says so');
      again.close();
      assert.equal(ShardStorage.open(disk, options('shards/T')).stateSink, undefined, 'no journal: each save on its own');
    });

    it('a directory of before the journal: its raft file is read until the first save, which goes to the journal', () => {
      const disk = new SimDisk();
      const old = ShardStorage.open(disk, options('shards/S'));
      old.save({ term: 7, votedFor: 'n3' });
      old.close();
      const st = ShardStorage.open(disk, { ...withJournal(disk), repairFromPeers: true, expectExisting: true });
      assert.equal(st.storageLost, false);
      assert.deepEqual(st.load(), { term: 7, votedFor: 'n3' });
      st.save({ term: 8, votedFor: null });
      st.close();
      const again = ShardStorage.open(disk, withJournal(disk));
      assert.deepEqual(again.load(), { term: 8, votedFor: null });
      again.close();
    });

    it('what the journal holds of a directory that is gone is forgotten: expected to exist, it is lost; otherwise new', () => {
      for (const expectExisting of [true, false]) {
        const disk = new SimDisk();
        const st = ShardStorage.open(disk, withJournal(disk));
        st.save({ term: 5, votedFor: 'n1' });
        st.close();
        disk.removeTree('shards/S'); // its files lost, the device's journal not
        const again = ShardStorage.open(disk, { ...withJournal(disk), repairFromPeers: true, expectExisting });
        assert.equal(again.storageLost, expectExisting);
        assert.deepEqual(again.load(), expectExisting ? lostMark : undefined);
        again.close();
      }
    });

    it('a term and vote lost to damage of the journal are marked lost and reported with repairFromPeers; a sole copy\'s read of them fails', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, withJournal(disk));
      st.save({ term: 3, votedFor: 'n2' });
      st.close();
      const other = ShardStorage.open(disk, withJournal(disk, 'shards/U'));
      other.save({ term: 1, votedFor: null });
      other.close();
      disk.flipBits(HARD_STATE_JOURNAL, 20, 1);
      const sole = ShardStorage.open(disk, withJournal(disk));
      assert.throws(() => sole.load(), CorruptionError);
      sole.close();
      const again = ShardStorage.open(disk, { ...withJournal(disk), repairFromPeers: true });
      assert.equal(again.lostRecords, true);
      assert.deepEqual(again.repaired.map((r) => r.file), [HARD_STATE_JOURNAL]);
      assert.deepEqual(again.load(), lostMark);
      again.close();
      const u = ShardStorage.open(disk, withJournal(disk, 'shards/U'));
      assert.deepEqual(u.load(), { term: 1, votedFor: null }, 'saved after the damage: kept');
      u.close();
    });

    it('a directory whose state the journal lost to damage still counts as holding one (a replica there is not new); an entry that is no term and vote is damage', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, withJournal(disk));
      st.save({ term: 3, votedFor: 'n2' });
      st.close();
      disk.flipBits(HARD_STATE_JOURNAL, 20, 1);
      const journal = withJournal(disk).journal!;
      assert.throws(() => journal.lookup('shards/S'), CorruptionError);
      assert.deepEqual(ShardStorage.heldState(disk, 'shards/S', journal), ['raft']);
      // An entry of the journal for the directory that is not a term and vote (not one Strata writes).
      journal.saveMany([{ key: 'shards/S', value: { note: 'not a hard state' } }]);
      const odd = ShardStorage.open(disk, { ...options('shards/S'), journal });
      assert.throws(() => odd.load(), (e: unknown) => e instanceof CorruptionError && /holds no term and vote for shards\/S/.test(e.message));
      odd.close();
    });
  });

  describe('damage found at open', () => {
    /** Log segments by base LSN. */
    /** Writes and applies `count` records after the last, without a checkpoint. */
    const more = (st: ShardStorage, count: number): number => {
      const from = st.log.lastLsn + 1;
      st.log.write(Array.from({ length: count }, (_, k) => ({ term: 2, kind: 1, payload: encodePageWrite(PAGE, [{ page: (from + k) % PAGES, data: new Uint8Array(PAGE).fill((from + k) & 0xff) }]) })));
      st.log.sync();
      for (const r of st.log.read(from, from + count - 1)) st.store.apply(r);
      return from + count - 1;
    };

    it('an existing replica with no term and vote whose log is also damaged is marked lost, and the repair keeps the mark', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      const imaged = fill(st, 1);
      more(st, 30);
      st.close(); // No hard state saved on this disk (as after losing that file alone).
      const seg = segments(disk, 'S').find((x) => x.base > imaged + 3)!;
      disk.flipBits(`S/log/${seg.name}`, 200, 1);
      whileOpen(disk, { ...options('S'), repairFromPeers: true, expectExisting: true }, (st2) => {
        assert.equal(st2.storageLost, true);
        assert.equal(st2.repaired.length, 1, 'the damage is repaired too');
        assert.deepEqual(st2.load(), { term: 0, votedFor: null, repairTerm: 2, lost: true }, 'repairTerm: its last record\'s term');
      });
    });

    it('opens read-only without repairFromPeers; with it, the damage goes, the valid prefix stays and the hard state is marked', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      const imaged = fill(st, 1);
      const last = more(st, 30);
      st.save({ term: 3, votedFor: 'n2' });
      st.close();
      const seg = segments(disk, 'S').find((x) => x.base > imaged + 3)!;
      disk.flipBits(`S/log/${seg.name}`, 200, 1);

      const plain = ShardStorage.open(disk, options('S'));
      assert.equal(plain.log.corruption.length, 1);
      assert.deepEqual(plain.repaired, []);
      assert.equal(plain.load()?.repairTerm, undefined);
      assert.throws(() => plain.log.write([{ term: 3, kind: 2, payload: new Uint8Array(0) }]), CorruptionError);
      plain.close();

      whileOpen(disk, { ...options('S'), repairFromPeers: true }, (st2) => {
        assert.equal(st2.repaired.length, 1);
        assert.equal(st2.repaired[0]!.fromLsn, seg.base);
        assert.deepEqual(st2.log.corruption, []);
        assert.equal(st2.log.lastLsn, seg.base - 1);
        assert.ok(st2.log.lastLsn < last);
        assert.equal(st2.store.appliedLsn, imaged, 'the store opens at its image (records after it are applied once known committed)');
        assert.deepEqual(st2.load(), { term: 3, votedFor: 'n2', repairTerm: 3 });
        assert.equal(st2.log.write([{ term: 3, kind: 2, payload: new Uint8Array(0) }]), seg.base, 'the log takes records again');
        st2.log.sync();
      });
    });

    it('damage among records the newest image covers: the log starts again after the image', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      const imaged = fill(st, 2);
      st.close();
      const inLog = segments(disk, 'S').filter((x) => x.base <= imaged - 3);
      assert.ok(inLog.length >= 1, 'the log still holds records the image covers');
      disk.flipBits(`S/log/${inLog[inLog.length - 1]!.name}`, 200, 1);
      whileOpen(disk, { ...options('S'), repairFromPeers: true }, (st2) => {
        assert.equal(st2.repaired.length, 1);
        assert.deepEqual([st2.log.firstLsn, st2.log.lastLsn], [imaged + 1, imaged]);
        assert.equal(st2.store.appliedLsn, imaged);
        assert.deepEqual(st2.store.getPage(imaged % PAGES), new Uint8Array(PAGE).fill(imaged & 0xff));
        assert.equal(st2.load()?.repairTerm, 1);
      });
    });

    it('no valid image to start from: without repairFromPeers it does not open; with it, it starts over from nothing', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      fill(st, 2);
      st.save({ term: 4, votedFor: null });
      st.close();
      const images = disk.list('S').filter((n) => n.startsWith('image-'));
      assert.ok(images.length >= 1);
      for (const name of images) disk.flipBits(`S/${name}`, 3, 1); // each image's header
      assert.throws(() => ShardStorage.open(disk, options('S')), CorruptionError);
      whileOpen(disk, { ...options('S'), repairFromPeers: true }, (st2) => {
        assert.ok(st2.repaired.length >= 1);
        assert.deepEqual([st2.log.firstLsn, st2.log.lastLsn, st2.store.appliedLsn], [1, 0, 0]);
        assert.deepEqual(disk.list('S').filter((n) => n.startsWith('image-') || n === 'checkpoint'), []);
        assert.deepEqual(st2.load(), { term: 4, votedFor: null, repairTerm: 4 });
      });
      // Durable: it opens as it was left.
      whileOpen(disk, { ...options('S'), repairFromPeers: true }, (st3) => {
        assert.deepEqual(st3.repaired, []);
        assert.equal(st3.log.lastLsn, 0);
      });
    });

    it('the first log segment unreadable and no image: it starts over from nothing instead of never opening', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      st.log.write(Array.from({ length: 10 }, (_, k) => ({ term: 1, kind: 1, payload: encodePageWrite(PAGE, [{ page: k, data: new Uint8Array(PAGE).fill(k) }]) })));
      st.log.sync();
      st.save({ term: 1, votedFor: null });
      st.close();
      const first = segments(disk, 'S')[0]!;
      disk.flipBits(`S/log/${first.name}`, 2, 1); // its header
      whileOpen(disk, { ...options('S'), repairFromPeers: true }, (st2) => {
        assert.equal(st2.repaired.length, 1);
        assert.deepEqual([st2.log.firstLsn, st2.log.lastLsn, st2.store.appliedLsn], [1, 0, 0]);
        assert.deepEqual(st2.load(), { term: 1, votedFor: null, repairTerm: 1 });
      });
    });
  });

  describe('damage the open finds by itself in the images and the checkpoint pointer: reported and healed', () => {
    const imageFilesOf = (disk: SimDisk): string[] => disk.list('S').filter((n) => /^image-[0-9a-f]+\.img$/.test(n)).sort();
    /** A store with images at 40 and 80 (the log from 41 on; an open replays it up to 80). */
    const built = (): { disk: SimDisk; last: number } => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      const last = fill(st, 2);
      st.save({ term: 1, votedFor: null });
      st.close();
      return { disk, last };
    };
    const pageAt = (p: number, last: number): Uint8Array => {
      let n = p === 0 ? PAGES : p;
      while (n + PAGES <= last) n += PAGES;
      return new Uint8Array(PAGE).fill(n & 0xff);
    };
    const readsEveryPage = (st: ShardStorage, last: number): void => {
      assert.equal(st.store.appliedLsn, last);
      for (let p = 0; p < PAGES; p++) assert.deepEqual(st.store.getPage(p), pageAt(p, last), `page ${p}`);
    };

    for (const [what, image, offset] of [
      ['the older image\'s table', 40, 36],
      ['the newest image\'s header', 80, 12],
    ] as const) {
      it(`${what} damaged: the open names it in repaired, writes the newest image again or removes the older, and nothing is lost`, () => {
        const { disk, last } = built();
        disk.flipBits(`S/${imageFileName(image)}`, offset, 1);
        whileOpen(disk, options('S'), (st) => {
          assert.deepEqual(st.repaired.map((r) => r.file), [`S/${imageFileName(image)}`]);
          assert.equal(st.lostRecords, false);
          readsEveryPage(st, last);
          if (image === 80) assert.deepEqual(imageFilesOf(disk), [imageFileName(40), imageFileName(80)], 'the newest written again');
          else assert.deepEqual(imageFilesOf(disk), [imageFileName(80)], 'the damaged older image removed');
        });
        // Healed: the next open finds nothing.
        whileOpen(disk, options('S'), (st) => {
          assert.deepEqual(st.repaired, []);
          readsEveryPage(st, last);
        });
      });
    }

    it('the newest image gone: named in repaired and written again', () => {
      const { disk, last } = built();
      disk.remove(`S/${imageFileName(80)}`);
      whileOpen(disk, options('S'), (st) => {
        assert.deepEqual(st.repaired.map((r) => [r.file, r.reason]), [[`S/${imageFileName(80)}`, 'image named by the checkpoint pointer is missing']]);
        assert.deepEqual(imageFilesOf(disk), [imageFileName(40), imageFileName(80)]);
        readsEveryPage(st, last);
      });
      whileOpen(disk, options('S'), (st) => assert.deepEqual(st.repaired, []));
    });

    it('the checkpoint pointer unreadable: named in repaired and written again for the newest image', () => {
      const { disk, last } = built();
      disk.flipBits('S/checkpoint', 25, 1);
      assert.equal(PageStore.imageLsn(disk, 'S'), 0, 'no image named');
      whileOpen(disk, options('S'), (st) => {
        assert.deepEqual(st.repaired.map((r) => r.file), ['S/checkpoint']);
        assert.match(st.repaired[0]!.reason, /checkpoint pointer unreadable/);
        readsEveryPage(st, last);
      });
      assert.equal(PageStore.imageLsn(disk, 'S'), 80, 'the pointer names the newest image again');
      whileOpen(disk, options('S'), (st) => {
        assert.deepEqual(st.repaired, []);
        assert.equal(st.store.oldestReadableLsn, 40);
      });
    });

    it('the checkpoint pointer gone with the log trimmed behind the images: the error says the pointer is missing', () => {
      const { disk } = built();
      disk.remove('S/checkpoint');
      assert.throws(
        () => ShardStorage.open(disk, options('S')),
        (e: unknown) => e instanceof CorruptionError && e.reports.some((r) => r.file === 'S/checkpoint' && /checkpoint pointer missing/.test(r.reason)),
      );
    });

    /**
     * One image, at 90, and the log after it (its first segment starting at 91, a sealed log
     * trimmed up to the image), 10 records of term 2 after it; the first segment's header damaged.
     */
    const firstSegmentDamaged = (): { disk: SimDisk; first: string } => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      fill(st, 2);
      const write = (term: number): void => {
        const from = st.log.lastLsn + 1;
        st.log.write(Array.from({ length: 10 }, (_, k) => ({ term, kind: 1, payload: encodePageWrite(PAGE, [{ page: (from + k) % PAGES, data: new Uint8Array(PAGE).fill(term) }]) })));
        st.log.sync();
        for (const r of st.log.read(from, from + 9)) st.store.apply(r);
      };
      write(1);
      st.store.checkpoint({ imagesKeep: 1, sealLog: true });
      write(2);
      st.save({ term: 2, votedFor: null });
      st.close();
      const first = segments(disk, 'S')[0]!;
      assert.equal(first.base, 91, 'the log starts right after the image');
      assert.deepEqual(imageFilesOf(disk), [imageFileName(90)]);
      disk.flipBits(`S/log/${first.name}`, 2, 1); // its header
      return { disk, first: `S/log/${first.name}` };
    };

    it('the first log segment\'s header damaged right after the image: the image is not blamed; a sole copy holds the damaged log and opens', () => {
      const { disk, first } = firstSegmentDamaged();
      whileOpen(disk, { ...options('S'), holdDamagedLog: true }, (st) => {
        assert.deepEqual(st.log.corruption.map((c) => c.file), [first]);
        assert.equal(st.store.appliedLsn, 90);
        assert.deepEqual(st.repaired, [], 'the image is not taken for damaged');
        assert.equal(st.load()?.repairTerm, 2, 'held: it does not vote');
      });
    });

    it('an open that fails for want of an image names the log\'s damage too', () => {
      const { disk, first } = firstSegmentDamaged();
      disk.flipBits(`S/${imageFileName(90)}`, 12, 1);
      assert.throws(
        () => ShardStorage.open(disk, options('S')),
        (e: unknown) => e instanceof CorruptionError && e.reports.some((r) => r.file === first) && e.reports.some((r) => r.file === `S/${imageFileName(90)}`),
      );
    });
  });

  describe('damage found while running: the reopen without the damaged images (a scrub)', () => {
    /** Image files of `dir`, ascending LSN. */
    const imageFiles = (disk: SimDisk, dir: string): string[] =>
      disk
        .list(dir)
        .filter((n) => /^image-[0-9a-f]+\.img$/.test(n))
        .sort();
    /** Flips a bit of the last stored page of an image (page 63 when every page is stored). */
    const damageLastPage = (disk: SimDisk, path: string): void => disk.flipBits(path, disk.fileBytes(path).length - 100, 1);
    const pageOf = (lsn: number): Uint8Array => new Uint8Array(PAGE).fill(lsn & 0xff);
    /** What page p holds after `fill` wrote records 1..last (record n writes page n % PAGES). */
    const lastWrite = (p: number, last: number): Uint8Array => {
      let n = p === 0 ? PAGES : p;
      while (n + PAGES <= last) n += PAGES;
      return pageOf(n);
    };
    /** What a running replica reports: the read of `page` (at `lsn`) fails its checksum. */
    const damageFound = (disk: SimDisk, page = 63, lsn?: number): CorruptionReport[] => {
      let found: CorruptionReport[] = [];
      whileOpen(disk, { ...options('S'), repairFromPeers: true }, (plain) => {
        assert.deepEqual(plain.repaired, [], 'opening checks the header and the table only');
        assert.throws(() => plain.store.getPage(page, lsn), (e: Error) => {
          if (!(e instanceof CorruptionError) || !new RegExp(`page ${page} checksum mismatch`).test(e.message)) return false;
          found = e.reports;
          return true;
        });
      });
      return found;
    };

    it('the newest image damaged: it is not used, and is written again from the older one and the log; nothing is lost', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      const last = fill(st, 2); // images at 40 and 80; the log from 41
      st.save({ term: 2, votedFor: null });
      st.close();
      const newest = `S/${imageFileName(last)}`;
      assert.deepEqual(imageFiles(disk, 'S'), [imageFileName(40), imageFileName(last)]);
      damageLastPage(disk, newest);
      const damaged = damageFound(disk);
      assert.equal(damaged[0]!.file, newest);

      whileOpen(disk, { ...options('S'), repairFromPeers: true, damaged }, (st2) => {
        assert.deepEqual(st2.repaired, damaged);
        assert.equal(st2.lostRecords, false);
        assert.equal(st2.store.appliedLsn, last);
        assert.deepEqual(st2.store.getPage(63), pageOf(63));
        assert.deepEqual(st2.store.getPage(last % PAGES), pageOf(last));
        assert.equal(st2.load()?.repairTerm, undefined, 'nothing was lost: it votes as before');
        assert.deepEqual(st2.newest(), { lsn: last, term: 1, bytes: disk.fileBytes(newest).length }, 'followers are sent the rebuilt image');
      });
      // The rebuilt image is good: a plain open reads every page.
      whileOpen(disk, options('S'), (st3) => {
        for (let p = 0; p < PAGES; p++) assert.deepEqual(st3.store.getPage(p), lastWrite(p, last));
      });
    });

    it('a power cut at any step of that reopen leaves a store that opens, reads every page right, and has an image to send', () => {
      let steps = 0;
      for (;; steps++) {
        assert.ok(steps < 200, 'the reopen finishes in a bounded number of steps');
        const disk = new SimDisk();
        const st = ShardStorage.open(disk, options('S'));
        const last = fill(st, 2);
        st.close();
        damageLastPage(disk, `S/${imageFileName(last)}`);
        const damaged = damageFound(disk);
        disk.powerCut();
        disk.crashAfter(steps);
        let finished = false;
        try {
          ShardStorage.open(disk, { ...options('S'), repairFromPeers: true, damaged }).close();
          finished = true;
        } catch (e) {
          assert.ok(e instanceof SimulatedCrash, `crash expected, got ${String(e)}`);
        }
        disk.powerCut();
        // The power cut took the host's memory of the damage with it: a plain open. The damaged
        // image is either still there (a read finds it again) or replaced whole; never missing.
        whileOpen(disk, { ...options('S'), repairFromPeers: true }, (again) => {
          assert.equal(again.store.appliedLsn, last);
          assert.equal(again.load()?.repairTerm, undefined);
          const image = again.newest();
          assert.ok(image !== undefined && image.lsn === last, 'the pointer names an image that exists');
          let intact = true;
          for (let p = 0; p < PAGES; p++) {
            try {
              assert.deepEqual(again.store.getPage(p), lastWrite(p, last));
            } catch (e) {
              if (!(e instanceof CorruptionError) || finished) throw e;
              intact = false;
            }
          }
          if (!intact) assert.equal(imageFiles(disk, 'S').length, 2, 'not rebuilt yet: both images still there');
        });
        if (finished) break;
      }
      assert.ok(steps > 3, `the reopen took ${steps} mutating steps`);
    });

    it('the older image damaged: it is removed, and the store reads from the newest', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      const last = fill(st, 2);
      st.close();
      damageLastPage(disk, `S/${imageFileName(40)}`);
      const damaged = damageFound(disk, 40, 40); // the last page the older image stores
      whileOpen(disk, { ...options('S'), damaged }, (st2) => {
        assert.equal(st2.repaired.length, 1);
        assert.deepEqual(imageFiles(disk, 'S'), [imageFileName(last)]);
        assert.equal(st2.store.oldestReadableLsn, last);
        assert.deepEqual(st2.store.getPage(63), pageOf(63));
      });
      whileOpen(disk, options('S'), (st3) => {
        assert.equal(st3.store.oldestReadableLsn, last);
        for (let p = 0; p < PAGES; p++) assert.deepEqual(st3.store.getPage(p), lastWrite(p, last));
      });
    });

    it('every image damaged and the log trimmed behind them: without repairFromPeers it does not open; with it, it starts over and does not vote', () => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      fill(st, 3); // images at 80 and 120; the log from 81
      st.save({ term: 5, votedFor: 'n1' });
      st.close();
      const files = imageFiles(disk, 'S');
      for (const name of files) damageLastPage(disk, `S/${name}`);
      const damaged = files.map((name) => ({ file: `S/${name}`, offset: 0, fromLsn: 0, toLsn: 0, reason: 'checksum mismatch' }));
      assert.throws(() => ShardStorage.open(disk, { ...options('S'), damaged }), CorruptionError);
      assert.deepEqual(imageFiles(disk, 'S'), files, 'a sole copy keeps what it has');
      whileOpen(disk, { ...options('S'), repairFromPeers: true, damaged }, (st2) => {
        assert.ok(st2.repaired.length >= 2);
        assert.equal(st2.lostRecords, true);
        assert.deepEqual([st2.log.firstLsn, st2.log.lastLsn, st2.store.appliedLsn], [1, 0, 0]);
        assert.deepEqual(st2.load(), { term: 5, votedFor: 'n1', repairTerm: 5 });
      });
    });

    /** A replica of 10 durable records, term 3 saved: its disk, the segment and where the last record's page starts. */
    const tenRecords = (): { disk: SimDisk; segment: string; pageAt: number } => {
      const disk = new SimDisk();
      const st = ShardStorage.open(disk, options('S'));
      st.log.write(Array.from({ length: 10 }, (_, k) => ({ term: 1, kind: 1, payload: encodePageWrite(PAGE, [{ page: k, data: new Uint8Array(PAGE).fill(k === 9 ? 0xee : k) }]) })));
      st.log.sync();
      st.save({ term: 3, votedFor: null });
      st.close();
      const run = Buffer.alloc(PAGE, 0xee);
      const segment = disk.list('S/log').find((n) => n.endsWith('.log') && Buffer.from(disk.fileBytes(`S/log/${n}`)).includes(run))!;
      assert.ok(segment, 'a segment holds the last record\'s page');
      return { disk, segment: `S/log/${segment}`, pageAt: Buffer.from(disk.fileBytes(`S/log/${segment}`)).indexOf(run) };
    };

    it('records at the end of the log damaged so as to look like a torn write (their end reads as zeros): cut, and with durableLsn the replica is marked to repair', () => {
      const make = (): SimDisk => {
        const { disk, segment, pageAt } = tenRecords();
        // The end of the last record's page, acknowledged long ago, reads as zeros: damage that
        // looks like a write a crash cut short.
        disk.zeroBytes(segment, pageAt + PAGE - 100, 100);
        return disk;
      };
      // Nobody knows what was durable (a process restart): the cut goes unnoticed, as any torn write.
      whileOpen(make(), { ...options('S'), repairFromPeers: true }, (st) => {
        assert.equal(st.log.lastLsn, 9);
        assert.equal(st.lostRecords, false);
      });
      // The host that reopens it knows: 10 records were durable.
      whileOpen(make(), { ...options('S'), repairFromPeers: true, durableLsn: 10 }, (st) => {
        assert.equal(st.log.lastLsn, 9);
        assert.equal(st.lostRecords, true);
        assert.deepEqual(st.load(), { term: 3, votedFor: null, repairTerm: 3 });
        assert.deepEqual([st.repaired[0]!.fromLsn, st.repaired[0]!.toLsn], [10, 10]);
      });
    });

    it('a record at the end of the log whose header or page rotted is found without durableLsn (its header check, its written sectors): after a process restart too, the replica is marked to repair', () => {
      for (const [what, at] of [['its LSN', -pageWriteDataStart(1) - RECORD_HEADER_BYTES + 8], ['its page', 100]] as const) {
        const { disk, segment, pageAt } = tenRecords();
        // A bit of the last record (acknowledged long ago) flips.
        disk.flipBits(segment, pageAt + at, 1);
        whileOpen(disk, { ...options('S'), repairFromPeers: true }, (st) => {
          assert.equal(st.log.lastLsn, 9, what);
          assert.deepEqual(st.load(), { term: 3, votedFor: null, repairTerm: 3 }, what);
          assert.deepEqual([st.repaired[0]!.fromLsn, st.repaired[0]!.toLsn], [10, 10], what);
        });
      }
    });
  });

  it('keeps the replica-set configurations across a reopen; a file that holds no configuration is corruption', () => {
    const disk = new SimDisk();
    whileOpen(disk, options('S'), (st) => assert.equal(st.loadConfig(), undefined));
    const good = { base: { members: ['a', 'b', 'c'] }, changes: [{ lsn: 4, term: 2, config: { members: ['a', 'b', 'd'], prior: ['a', 'b', 'c'] } }, { lsn: 9, term: 2, config: { members: ['a', 'b', 'd'] }, image: true as const }] };
    whileOpen(disk, options('S'), (st) => st.saveConfig(good));
    whileOpen(disk, options('S'), (st) => assert.deepEqual(st.loadConfig(), good));
    const change = good.changes[0]!;
    for (const bad of [
      'config',
      { changes: [] },
      { base: { members: [] }, changes: [] },
      { base: { members: ['a', 1] }, changes: [] },
      { base: { members: ['a'], prior: 'b' }, changes: [] },
      { base: good.base },
      { base: good.base, changes: [null] },
      { base: good.base, changes: [{ ...change, lsn: 1.5 }] },
      { base: good.base, changes: [{ ...change, term: '2' }] },
      { base: good.base, changes: [{ ...change, config: { members: 'a' } }] },
      { base: good.base, changes: [{ ...change, image: false }] },
    ]) {
      whileOpen(disk, options('S'), (st) => {
        st.saveConfig(bad as never);
        expectStorageError(() => st.loadConfig(), 'corruption');
      });
    }
    // Refused once closed.
    const st = ShardStorage.open(disk, options('S'));
    st.close();
    assert.throws(() => st.saveConfig(good), (e: unknown) => e instanceof StorageError);
  });
});
