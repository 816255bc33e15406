/**
 * PageStore: GetPage@LSN against a model at every LSN, restarts, checkpoints with trim and
 * retention, crashes at every step of a checkpoint, corrupt images, and every rejected input.
 */
import { strict as assert } from 'node:assert';
import { DISCARD_SUFFIX, isDiscardedName, type Disk } from '../../storage-engine/disk';
import { CorruptionError, StorageError } from '../../storage-engine/errors';
import { IMAGE_BYTES_MIN, IMAGE_TABLE_ENTRY_BYTES, ImageReader, imageFileName } from '../../storage-engine/image';
import { SegmentLog } from '../../storage-engine/log';
import { MetaStore } from '../../storage-engine/metadata';
import type { PageCache } from '../../storage-engine/page-cache';
import { crc32c } from '../../storage-engine/crc32c';
import { encodePageWrite, pagesOfPageWrite, pageWriteDataStart } from '../../storage-engine/page-write';
import { encodePageZero } from '../../storage-engine/page-zero';
import { CHECKPOINT_COLLECT_PAGES, GET_PAGES_MAX, PageStore, type CheckpointStep, type PageStoreOptions } from '../../storage-engine/page-store';
import { RecordKind, type LogRecord } from '../../storage-engine/record';
import { SimDisk, SimulatedCrash } from '../../storage-engine/sim-disk';
import { Slab } from '../../storage-engine/slab';
import { expectStorageError as expectCode } from '../support/expect';
import { prng } from '../support/prng';
import { flipInSlab } from '../support/slab';

const PAGE = 4096;
const LOG_DIR = 'shard-0/log';
const STORE_DIR = 'shard-0/pages';

/** Deterministic PRNG (mulberry32). */
function content(seed: number): Uint8Array {
  const d = new Uint8Array(PAGE);
  const w = new Uint32Array(d.buffer);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < w.length; i += 8) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    w[i] = x;
  }
  return d;
}

const ZERO = new Uint8Array(PAGE);

/** Page history: page -> ascending (lsn, data). */
class Model {
  readonly history = new Map<number, { lsn: number; data: Uint8Array }[]>();
  lastLsn = 0;
  at(page: number, lsn: number): Uint8Array {
    const h = this.history.get(page) ?? [];
    let d: Uint8Array = ZERO;
    for (const e of h) if (e.lsn <= lsn) d = e.data;
    return d;
  }
}

interface World {
  disk: SimDisk;
  log: SegmentLog;
  slab: Slab;
  store: PageStore;
  model: Model;
  rnd: () => number;
  opts: PageStoreOptions;
  seq: number;
}

function newDisk(): SimDisk {
  const disk = new SimDisk();
  disk.mkdirp('shard-0');
  disk.fsyncDir('');
  return disk;
}

function openLog(disk: SimDisk): SegmentLog {
  return SegmentLog.open(disk, { dir: LOG_DIR, segmentBytesMax: 32 * 1024 });
}

function world(seed: number, extra: Partial<PageStoreOptions> = {}): World {
  const disk = newDisk();
  const log = openLog(disk);
  const slab = new Slab({ slotBytes: PAGE, slotCount: 512 });
  const opts: PageStoreOptions = { dir: STORE_DIR, pageSize: PAGE, pageCount: 48, cacheBytesMax: 16 * PAGE, slab, ...extra };
  const store = PageStore.open(disk, log, opts);
  return { disk, log, slab, store, model: new Model(), rnd: prng(seed), opts, seq: seed * 1000 };
}

/**
 * Appends `n` random records (page writes of 1..6 pages, runs, duplicates, zero pages, noops,
 * ranges made zeros: short ones, and up to the whole volume, unless `zeroRanges` is false),
 * syncs, applies.
 */
function writeRandom(w: World, n: number, zeroRanges = true): void {
  for (let k = 0; k < n; k++) {
    const lsn = w.log.lastLsn + 1;
    let record: LogRecord;
    const kind = w.rnd();
    if (kind < 0.1) {
      record = { lsn, term: 1, kind: RecordKind.Noop, payload: new Uint8Array(0) };
    } else if (zeroRanges && kind < 0.16) {
      const first = Math.floor(w.rnd() * w.opts.pageCount);
      const count = w.rnd() < 0.5 ? 1 + Math.floor(w.rnd() * 4) : w.opts.pageCount - first;
      const clipped = Math.min(count, w.opts.pageCount - first);
      record = { lsn, term: 1, kind: RecordKind.PageZero, payload: encodePageZero({ first, count: clipped }) };
      for (let page = first; page < first + clipped; page++) {
        const h = w.model.history.get(page) ?? [];
        h.push({ lsn, data: ZERO });
        w.model.history.set(page, h);
      }
    } else {
      const count = 1 + Math.floor(w.rnd() * 6);
      const start = Math.floor(w.rnd() * w.opts.pageCount);
      const run = w.rnd() < 0.5;
      const entries: { page: number; data: Uint8Array }[] = [];
      for (let i = 0; i < count; i++) {
        const page = run ? (start + i) % w.opts.pageCount : Math.floor(w.rnd() * w.opts.pageCount);
        const data = w.rnd() < 0.1 ? new Uint8Array(PAGE) : content(++w.seq);
        entries.push({ page, data });
      }
      if (w.rnd() < 0.1) entries.push({ page: entries[0]!.page, data: content(++w.seq) }); // duplicate: last wins
      record = { lsn, term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, entries) };
      for (const e of entries) {
        const h = w.model.history.get(e.page) ?? [];
        if (h.length > 0 && h[h.length - 1]!.lsn === lsn) h.pop();
        h.push({ lsn, data: e.data });
        w.model.history.set(e.page, h);
      }
    }
    assert.equal(w.log.write([{ term: record.term, kind: record.kind, payload: record.payload }]), lsn);
    w.store.apply(record);
    w.model.lastLsn = lsn;
  }
  w.log.sync();
}

/** Every page at every LSN in [from, to] equals the model (single and vectored reads). */
function checkAll(store: PageStore, model: Model, from: number, to: number, pageCount: number): void {
  const all = Array.from({ length: pageCount }, (_, p) => p);
  for (let lsn = from; lsn <= to; lsn++) {
    for (const p of all) assert.deepEqual(store.getPage(p, lsn), model.at(p, lsn), `page ${p} at LSN ${lsn}`);
    const got = store.getPages(all, lsn);
    for (const p of all) assert.deepEqual(got[p], model.at(p, lsn), `getPages: page ${p} at LSN ${lsn}`);
    for (const p of all) {
      const cached = store.getPagesCached([p], lsn);
      if (cached !== undefined) {
        assert.deepEqual(cached.pages[0], model.at(p, lsn), `getPagesCached: page ${p} at LSN ${lsn}`);
        assert.equal(cached.crc, crc32c(model.at(p, lsn)), `getPagesCached: the checksum of page ${p} at LSN ${lsn}`);
      }
    }
  }
}

function reopen(w: World, replayUptoLsn?: number): void {
  w.store.close();
  w.log.close();
  w.log = openLog(w.disk);
  w.store = PageStore.open(w.disk, w.log, w.opts, replayUptoLsn);
}

function imageFiles(w: World): string[] {
  return w.disk.list(STORE_DIR).filter((n) => n.endsWith('.img'));
}

function tempFiles(w: World): string[] {
  return w.disk.list(STORE_DIR).filter((n) => n.endsWith('.tmp'));
}

/** Writes `entries` as one PageWrite record (LSN 1 of an empty log), syncs and applies it. */
function applyOneRecord(w: World, entries: { page: number; data: Uint8Array }[]): void {
  w.log.write([{ term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, entries) }]);
  w.log.sync();
  w.store.apply(w.log.read(1, 1)[0]!);
}

/**
 * Until the function returned is called, one bit of `page` changes right after its check where it
 * is read, as memory that changes under a reader: in an image's read buffer (after the image's
 * check of the page) or in a log record's (after the record's check).
 */
function changeAfterCheck(w: World, where: 'image' | 'record', page: number): () => void {
  if (where === 'image') {
    const readPages = ImageReader.prototype.readPages;
    ImageReader.prototype.readPages = function (this: ImageReader, ...args: Parameters<ImageReader['readPages']>): boolean[] {
      const found = readPages.apply(this, args);
      args[0].forEach((p, i) => p === page && found[i] && (args[1][i]![100] ^= 0x04));
      return found;
    };
    return () => (ImageReader.prototype.readPages = readPages);
  }
  const log = w.log;
  const read = log.read.bind(log);
  log.read = (from, to, opts) => {
    const records = read(from, to, opts);
    for (const r of records) {
      if (r.kind !== RecordKind.PageWrite) continue;
      const pages = pagesOfPageWrite(r.payload);
      const k = pages.lastIndexOf(page);
      if (k >= 0) r.payload[pageWriteDataStart(pages.length) + k * PAGE + 100]! ^= 0x04;
    }
    return records;
  };
  return () => (log.read = read);
}

describe('PageStore', () => {
  it('answers every page at every LSN like the model, before and after a restart (log only)', () => {
    const w = world(1);
    writeRandom(w, 80);
    assert.equal(w.store.appliedLsn, 80);
    assert.equal(w.store.oldestReadableLsn, 0);
    checkAll(w.store, w.model, 0, 80, w.opts.pageCount);
    reopen(w);
    assert.equal(w.store.appliedLsn, 80);
    checkAll(w.store, w.model, 0, 80, w.opts.pageCount);
  });

  it('answers every LSN like the model across checkpoints when retention keeps all history', () => {
    const w = world(2, { retainLsns: 1000 });
    for (let round = 0; round < 4; round++) {
      writeRandom(w, 30);
      const cp = w.store.checkpoint();
      assert.equal(cp.lsn, w.model.lastLsn);
      assert.equal(cp.file, imageFileName(cp.lsn));
      assert.equal(w.store.stats().imageLsn, cp.lsn);
      checkAll(w.store, w.model, 0, w.model.lastLsn, w.opts.pageCount);
    }
    writeRandom(w, 10);
    checkAll(w.store, w.model, 0, w.model.lastLsn, w.opts.pageCount);
    reopen(w);
    checkAll(w.store, w.model, 0, w.model.lastLsn, w.opts.pageCount);
  });

  it('after checkpoints and trim: older LSNs are trimmed, newer ones right, also after a restart', () => {
    const w = world(3, { imagesKeep: 2 });
    writeRandom(w, 40);
    const c1 = w.store.checkpoint();
    // imagesKeep 2 counts the empty volume at LSN 0 while the log starts at 1: nothing trimmed yet.
    assert.equal(w.store.oldestReadableLsn, 0);
    assert.equal(w.log.firstLsn, 1);
    writeRandom(w, 40);
    const c2 = w.store.checkpoint();
    assert.equal(w.store.oldestReadableLsn, c1.lsn);
    writeRandom(w, 40);
    const versionsBefore = w.store.stats().versions;
    const c3 = w.store.checkpoint();
    assert.equal(w.store.oldestReadableLsn, c2.lsn);
    assert.ok(w.store.stats().versions < versionsBefore, 'the version index shrank with the trimmed log');
    assert.ok(w.log.firstLsn > 1 && w.log.firstLsn <= c2.lsn + 1, `log trimmed (firstLsn ${w.log.firstLsn})`);
    assert.deepEqual(imageFiles(w), [imageFileName(c2.lsn), imageFileName(c3.lsn)], 'images beyond imagesKeep deleted');
    writeRandom(w, 10);
    const last = w.model.lastLsn;
    for (const lsn of [0, 1, c1.lsn, c2.lsn - 1]) expectCode(() => w.store.getPage(0, lsn), 'trimmed');
    expectCode(() => w.store.getPages([0, 1], c2.lsn - 1), 'trimmed');
    checkAll(w.store, w.model, c2.lsn, last, w.opts.pageCount);
    reopen(w);
    assert.equal(w.store.oldestReadableLsn, c2.lsn);
    assert.equal(w.store.stats().imageLsn, c3.lsn);
    expectCode(() => w.store.getPage(0, c2.lsn - 1), 'trimmed');
    checkAll(w.store, w.model, c2.lsn, last, w.opts.pageCount);
  });

  it('a checkpoint hands the images it lets go to the background removal; an open removes one a crash left', () => {
    const w = world(31, { imagesKeep: 2 });
    // The disk's background removal, run by the test when it chooses.
    const queued: string[] = [];
    (w.disk as Disk).removeAsync = (path: string): Promise<void> => {
      queued.push(path);
      return Promise.resolve();
    };
    const cuts: number[] = [];
    for (let i = 0; i < 3; i++) {
      writeRandom(w, 40);
      cuts.push(w.store.checkpoint().lsn);
    }
    const gone = `${STORE_DIR}/${imageFileName(cuts[0]!)}${DISCARD_SUFFIX}`;
    assert.deepEqual(queued.filter((q) => q.startsWith(STORE_DIR)), [gone], 'the image beyond imagesKeep went to the background, not removed on this thread');
    assert.ok(queued.some((q) => q.startsWith(`${LOG_DIR}/seg-`)), 'so did the log segments the checkpoint trimmed');
    assert.deepEqual(imageFiles(w), [imageFileName(cuts[1]!), imageFileName(cuts[2]!)]);
    assert.deepEqual(w.disk.list(STORE_DIR).filter(isDiscardedName), [imageFileName(cuts[0]!) + DISCARD_SUFFIX]);
    // A power cut before the background removal ran: the renamed image is still there, durably.
    w.disk.powerCut();
    delete (w.disk as Disk).removeAsync;
    w.log = openLog(w.disk);
    w.store = PageStore.open(w.disk, w.log, w.opts);
    assert.deepEqual(w.disk.list(STORE_DIR).filter(isDiscardedName), [], 'the open removed it');
    assert.deepEqual(w.disk.list(LOG_DIR).filter(isDiscardedName), [], 'and the log\'s open the trimmed segments');
    assert.equal(w.store.stats().imageLsn, cuts[2]);
    assert.equal(w.store.stats().discardFailures, 0);
    checkAll(w.store, w.model, w.store.oldestReadableLsn, w.model.lastLsn, w.opts.pageCount);
  });

  it('a failed background removal of an image is counted, and the next open removes the file', async () => {
    const w = world(32, { imagesKeep: 1 });
    (w.disk as Disk).removeAsync = (): Promise<void> => Promise.reject(new Error('EIO'));
    writeRandom(w, 30);
    const first = w.store.checkpoint().lsn;
    writeRandom(w, 30);
    w.store.checkpoint();
    await new Promise((r) => setImmediate(r));
    assert.equal(w.store.stats().discardFailures, 1);
    assert.deepEqual(w.disk.list(STORE_DIR).filter(isDiscardedName), [imageFileName(first) + DISCARD_SUFFIX]);
    delete (w.disk as Disk).removeAsync;
    reopen(w);
    assert.deepEqual(w.disk.list(STORE_DIR).filter(isDiscardedName), []);
  });

  it('retainLsns keeps reads possible at every LSN >= newest image - retainLsns', () => {
    const retainLsns = 50;
    const w = world(4, { imagesKeep: 1, retainLsns });
    for (let round = 0; round < 6; round++) {
      writeRandom(w, 20);
      const cp = w.store.checkpoint();
      const floor = w.store.oldestReadableLsn;
      assert.ok(floor <= Math.max(0, cp.lsn - retainLsns), `floor ${floor} <= ${cp.lsn} - ${retainLsns}`);
      assert.ok(w.store.stats().images <= 3, 'at most imagesKeep + the retention base and its successor');
      checkAll(w.store, w.model, Math.max(floor, cp.lsn - retainLsns - 5), w.model.lastLsn, w.opts.pageCount);
      if (floor > 0) expectCode(() => w.store.getPage(0, floor - 1), 'trimmed');
    }
    assert.ok(w.store.oldestReadableLsn > 0, 'history was trimmed eventually');
    assert.ok(w.log.firstLsn > 1);
  });

  it('grows: pages past the old end are taken and read as zeros until written, at every LSN; images of fewer pages open in a larger store, never the reverse', () => {
    const w = world(12);
    writeRandom(w, 40);
    w.store.checkpoint();
    const small = w.model.lastLsn;
    const grownBy = 16;
    expectCode(() => w.store.apply({ lsn: small + 1, term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, [{ page: 48, data: content(1) }]) }), 'out_of_range');
    w.store.grow(40); // fewer: nothing changes
    assert.equal(w.store.pages, 48);
    expectCode(() => w.store.grow(0), 'bad_request');
    w.store.grow(48 + grownBy);
    assert.equal(w.store.pages, 64);
    w.opts = { ...w.opts, pageCount: 64 };
    writeRandom(w, 60); // pages 0..63 now
    assert.ok([...w.model.history.keys()].some((p) => p >= 48), 'pages past the old end were written');
    // At an LSN before the growth, the new pages read as zeros.
    assert.deepEqual(w.store.getPage(63, small), ZERO);
    checkAll(w.store, w.model, w.store.oldestReadableLsn, w.model.lastLsn, 64);
    // The image of 48 pages, then one of 64: both open in a store of 64 (a restart of the grown replica).
    reopen(w, small + 5);
    checkAll(w.store, w.model, w.store.oldestReadableLsn, small + 5, 64);
    reopen(w);
    w.store.checkpoint();
    reopen(w);
    checkAll(w.store, w.model, w.store.oldestReadableLsn, w.model.lastLsn, 64);
    // A store of fewer pages than its newest image (a size taken back) is refused, not read short.
    w.store.close();
    w.log.close();
    w.log = openLog(w.disk);
    expectCode(() => PageStore.open(w.disk, w.log, { ...w.opts, pageCount: 48 }), 'bad_request');
    w.store = PageStore.open(w.disk, w.log, w.opts);
  });

  it('restart = newest image + log suffix, and replayUptoLsn stops early', () => {
    const w = world(5);
    writeRandom(w, 50);
    w.store.checkpoint();
    writeRandom(w, 50);
    w.store.checkpoint();
    writeRandom(w, 50);
    w.store.checkpoint();
    writeRandom(w, 25);
    const last = w.model.lastLsn;
    reopen(w, last - 10);
    assert.equal(w.store.appliedLsn, last - 10);
    expectCode(() => w.store.getPage(0, last - 9), 'future_lsn');
    checkAll(w.store, w.model, w.store.oldestReadableLsn, last - 10, w.opts.pageCount);
    reopen(w);
    assert.equal(w.store.appliedLsn, last);
    checkAll(w.store, w.model, w.store.oldestReadableLsn, last, w.opts.pageCount);
    const floor = w.store.oldestReadableLsn;
    expectCode(() => reopen(w, last + 1), 'bad_request');
    w.log = openLog(w.disk);
    const below = w.log.firstLsn - 1;
    assert.ok(below < floor, `the log (from ${w.log.firstLsn}) keeps records below the floor ${floor}`);
    expectCode(() => PageStore.open(w.disk, w.log, w.opts, below), 'trimmed');
    if (below > 0) expectCode(() => PageStore.open(w.disk, w.log, w.opts, below - 1), 'bad_request');
    w.store = PageStore.open(w.disk, w.log, w.opts);
  });

  for (const [what, opts] of [['', {}], [' keeping one image and sealing the log (a device short of space)', { imagesKeep: 1, sealLog: true }]] as const) it(`a crash at every step of a checkpoint${what}, then a power cut, reopens with the same pages`, function () {
    // A reopened store at every step: several seconds of CPU on an idle machine, more on a loaded one.
    this.timeout(120_000);
    let n = 0;
    let completed = false;
    const build = (): World => {
      const w = world(6, { imagesKeep: 2 });
      writeRandom(w, 30);
      w.store.checkpoint();
      writeRandom(w, 30);
      w.store.checkpoint(); // trims: floor = first image
      writeRandom(w, 30);
      return w;
    };
    while (!completed) {
      const w = build();
      const last = w.model.lastLsn;
      w.disk.crashAfter(n);
      try {
        w.store.checkpoint(opts); // writes an image, moves the pointer, deletes one, trims the log
        completed = true;
      } catch (e) {
        assert.ok(e instanceof SimulatedCrash, `crash expected at step ${n}, got ${String(e)}`);
      }
      w.disk.powerCut();
      w.log = openLog(w.disk);
      w.store = PageStore.open(w.disk, w.log, w.opts);
      assert.equal(w.store.appliedLsn, last, `step ${n}`);
      assert.equal(tempFiles(w).length, 0, 'temp files removed on open');
      checkAll(w.store, w.model, w.store.oldestReadableLsn, last, w.opts.pageCount);
      // The reopened store checkpoints again fine.
      writeRandom(w, 5);
      w.store.checkpoint();
      checkAll(w.store, w.model, w.model.lastLsn - 5, w.model.lastLsn, w.opts.pageCount);
      n++;
      assert.ok(n < 200, 'the checkpoint finishes in a bounded number of steps');
    }
    assert.ok(n > 10, `the crash loop covered the checkpoint's steps (${n})`);
    if ('sealLog' in opts) {
      // Completed: the whole log went with the images before it.
      const w = build();
      w.store.checkpoint(opts);
      assert.equal(w.log.firstLsn, w.model.lastLsn + 1);
      assert.equal(w.store.stats().images, 1);
    }
  });

  it('a corrupt newest image falls back to the previous one while the log covers it', () => {
    const w = world(7, { imagesKeep: 2 });
    writeRandom(w, 40);
    const c1 = w.store.checkpoint();
    writeRandom(w, 40);
    const c2 = w.store.checkpoint();
    writeRandom(w, 10);
    const last = w.model.lastLsn;
    w.store.close();
    w.log.close();
    w.disk.flipBits(`${STORE_DIR}/${c2.file}`, 45, 1); // the table
    w.log = openLog(w.disk);
    w.store = PageStore.open(w.disk, w.log, w.opts);
    assert.equal(w.store.stats().imageLsn, c1.lsn, 'fell back to the older image');
    checkAll(w.store, w.model, c1.lsn, last, w.opts.pageCount);
    // The next checkpoint replaces the corrupt image.
    const c3 = w.store.checkpoint();
    assert.equal(c3.lsn, last);
    reopen(w);
    assert.equal(w.store.stats().imageLsn, last);
    checkAll(w.store, w.model, w.store.oldestReadableLsn, last, w.opts.pageCount);
  });

  it('with no older image covered by the log, a corrupt image is reported as CorruptionError', () => {
    const w = world(8, { imagesKeep: 1 });
    writeRandom(w, 40);
    w.store.checkpoint();
    writeRandom(w, 40);
    const c2 = w.store.checkpoint();
    assert.equal(w.store.oldestReadableLsn, c2.lsn);
    w.store.close();
    w.log.close();
    w.disk.flipBits(`${STORE_DIR}/${c2.file}`, 12, 1); // the header LSN
    w.log = openLog(w.disk);
    let caught: unknown;
    try {
      PageStore.open(w.disk, w.log, w.opts);
    } catch (e) {
      caught = e;
    }
    assert.ok(caught instanceof CorruptionError, `expected CorruptionError, got ${String(caught)}`);
    assert.ok(caught.reports.some((r) => r.file.endsWith(c2.file)), 'the report names the image');
    // A missing image is reported the same way.
    w.disk.remove(`${STORE_DIR}/${c2.file}`);
    assert.throws(() => PageStore.open(w.disk, w.log, w.opts), (e: unknown) => e instanceof CorruptionError);
  });

  it('a corrupt image while the log still starts at 1 falls back to the log alone', () => {
    const w = world(9, { imagesKeep: 2 });
    writeRandom(w, 40);
    const c1 = w.store.checkpoint();
    assert.equal(w.store.oldestReadableLsn, 0);
    w.store.close();
    w.log.close();
    w.disk.flipBits(`${STORE_DIR}/${c1.file}`, 0, 1);
    w.log = openLog(w.disk);
    w.store = PageStore.open(w.disk, w.log, w.opts);
    assert.equal(w.store.stats().imageLsn, 0);
    checkAll(w.store, w.model, 0, w.model.lastLsn, w.opts.pageCount);
  });

  it('a corrupt checkpoint pointer falls back to the images on disk', () => {
    const w = world(10, { imagesKeep: 2 });
    writeRandom(w, 40);
    w.store.checkpoint();
    writeRandom(w, 40);
    const c2 = w.store.checkpoint();
    w.store.close();
    w.log.close();
    w.disk.flipBits(`${STORE_DIR}/checkpoint`, 25, 1);
    w.log = openLog(w.disk);
    w.store = PageStore.open(w.disk, w.log, w.opts);
    assert.equal(w.store.stats().imageLsn, c2.lsn);
    checkAll(w.store, w.model, w.store.oldestReadableLsn, w.model.lastLsn, w.opts.pageCount);
  });

  it('a checkpoint pointer that reads but does not hold together (its floor above its image) is taken as lost: the images on disk are used', () => {
    const w = world(12, { imagesKeep: 2 });
    writeRandom(w, 40);
    w.store.checkpoint();
    writeRandom(w, 40);
    const c2 = w.store.checkpoint();
    w.store.close();
    w.log.close();
    const meta = new MetaStore(w.disk, STORE_DIR);
    const pointer = meta.read<{ floorLsn: number }>('checkpoint')!;
    meta.write('checkpoint', { ...pointer, floorLsn: c2.lsn + 1000 });
    assert.equal(PageStore.imageLsn(w.disk, STORE_DIR), 0, 'no image named');
    w.log = openLog(w.disk);
    w.store = PageStore.open(w.disk, w.log, w.opts);
    assert.equal(w.store.stats().imageLsn, c2.lsn);
    checkAll(w.store, w.model, w.store.oldestReadableLsn, w.model.lastLsn, w.opts.pageCount);
  });

  it('a page whose image data is corrupt fails its read with CorruptionError naming it', () => {
    const w = world(11, { cacheBytesMax: 0 });
    const page5 = content(5);
    w.log.write([{ term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, [{ page: 5, data: page5 }]) }]);
    w.store.apply(w.log.read(1, 1)[0]!);
    const cp = w.store.checkpoint();
    const size = w.disk.size(w.disk.open(`${STORE_DIR}/${cp.file}`));
    w.disk.flipBits(`${STORE_DIR}/${cp.file}`, size - 10, 1); // the only page is the last bytes
    reopen(w);
    const e = expectCode(() => w.store.getPage(5), 'corruption');
    assert.ok(e.message.includes('page 5'));
    assert.deepEqual(w.store.getPage(5, 0), ZERO, 'LSN 0 does not need the image');
  });

  it('never-written pages read as zeros; bad pages, LSNs and buffers are rejected', () => {
    const w = world(12);
    assert.deepEqual(w.store.getPage(0), ZERO);
    assert.deepEqual(w.store.getPage(47, 0), ZERO);
    writeRandom(w, 5);
    const s = w.store;
    expectCode(() => s.getPage(48), 'out_of_range');
    expectCode(() => s.getPage(-1), 'out_of_range');
    expectCode(() => s.getPage(1.5), 'out_of_range');
    expectCode(() => s.getPages([0, 48]), 'out_of_range');
    expectCode(() => s.getPage(0, 6), 'future_lsn');
    expectCode(() => s.getPages([0], 6), 'future_lsn');
    expectCode(() => s.getPage(0, -1), 'bad_request');
    expectCode(() => s.getPage(0, 2.5), 'bad_request');
    expectCode(() => s.getPage(0, 1, new Uint8Array(100)), 'bad_request');
    expectCode(() => s.getPages(new Array<number>(GET_PAGES_MAX + 1).fill(0)), 'too_large');
    const out = new Uint8Array(PAGE);
    assert.equal(s.getPage(3, 5, out), out, 'reads into the given buffer');
    assert.deepEqual(out, w.model.at(3, 5));
    s.close();
    expectCode(() => s.getPage(0), 'closed');
    expectCode(() => s.checkpoint(), 'closed');
  });

  it('a range made zeros costs versions only for the pages that hold data, once: over 2^32 pages, and again', () => {
    const pageCount = 0xffff_ffff;
    const w = world(41, { pageCount });
    const held = [0, 7, 4096, 1_000_000, pageCount - 1];
    const append = (kind: RecordKind, payload: Uint8Array): number => {
      const lsn = w.log.write([{ term: 1, kind, payload }]);
      w.log.sync();
      w.store.apply(w.log.read(lsn, lsn)[0]!);
      return lsn;
    };
    append(RecordKind.PageWrite, encodePageWrite(PAGE, held.slice(0, 3).map((page) => ({ page, data: content(page + 1) }))));
    w.store.checkpoint();
    // Two pages written after the image, one of them also in it.
    const before = append(RecordKind.PageWrite, encodePageWrite(PAGE, [7, 1_000_000, pageCount - 1].map((page) => ({ page, data: content(page + 2) }))));
    const versions = w.store.stats().versions;
    const zeroed = append(RecordKind.PageZero, encodePageZero({ first: 0, count: pageCount }));
    assert.equal(w.store.stats().versions, versions + held.length, 'one version per page holding data, none for the others');
    for (const page of [...held, 1, 123_456_789]) assert.deepEqual(w.store.getPage(page), ZERO, `page ${page} after the zeros`);
    assert.deepEqual(w.store.getPage(7, before), content(9), 'the page as of before the zeros');
    assert.deepEqual(w.store.getPage(4096, before), content(4097), 'an image page as of before the zeros');
    append(RecordKind.PageZero, encodePageZero({ first: 5, count: 5_000 }));
    assert.equal(w.store.stats().versions, versions + held.length, 'pages already zeros take no version again');
    // A page written again after the zeros holds data again.
    append(RecordKind.PageWrite, encodePageWrite(PAGE, [{ page: 4096, data: content(1) }]));
    const again = append(RecordKind.PageZero, encodePageZero({ first: 4000, count: 200 }));
    assert.deepEqual(w.store.getPage(4096, again - 1), content(1));
    assert.deepEqual(w.store.getPage(4096), ZERO);
    // The image the next checkpoint writes stores no page, and the store reads the same from it.
    const cp = w.store.checkpoint();
    const image = ImageReader.open(w.disk, `${STORE_DIR}/${cp.file}`);
    assert.equal(image.entries, 0, 'the pages made zeros are not stored');
    image.close();
    reopen(w);
    for (const page of held) assert.deepEqual(w.store.getPage(page), ZERO);
    assert.ok(zeroed > before);
  });

  it('pagesWithData: the pages whose newest record writes data, none made zeros or never written, across checkpoints and restarts; cut short past rangesMax', () => {
    const w = world(11, { imagesKeep: 2 });
    /** The pages of `ranges` in first..end - 1, as ranges (ascending, apart). */
    const clip = (ranges: number[], first: number, end: number): number[] => {
      const out: number[] = [];
      for (let i = 0; i < ranges.length; i += 2) {
        const from = Math.max(first, ranges[i]!);
        const to = Math.min(end, ranges[i]! + ranges[i + 1]!);
        if (from < to) out.push(from, to - from);
      }
      return out;
    };
    const check = (what: string): void => {
      const n = w.opts.pageCount;
      const got = w.store.pagesWithData(0, n, 1000);
      assert.equal(got.end, n, what);
      const held = new Set<number>();
      for (let i = 0; i < got.ranges.length; i += 2) {
        if (i > 0) assert.ok(got.ranges[i]! > got.ranges[i - 2]! + got.ranges[i - 1]!, `${what}: ranges ascending and apart: ${got.ranges.join(',')}`);
        for (let p = got.ranges[i]!; p < got.ranges[i]! + got.ranges[i + 1]!; p++) held.add(p);
      }
      for (let page = 0; page < n; page++) {
        // The model's pages made zeros by a range hold the shared ZERO; pages written with zeros
        // hold buffers of their own, data until a checkpoint's image leaves them out.
        const h = w.model.history.get(page);
        const last = h?.[h.length - 1]?.data;
        if (last === undefined || last === ZERO) assert.ok(!held.has(page), `${what}: page ${page}, never written or made zeros, is not listed`);
        else if (last.some((b) => b !== 0)) assert.ok(held.has(page), `${what}: page ${page}, which holds data, is listed`);
      }
      for (let k = 1; k * 2 < got.ranges.length; k++) {
        assert.deepEqual(w.store.pagesWithData(0, n, k), { end: got.ranges[2 * k]!, ranges: got.ranges.slice(0, 2 * k) }, `${what}: at most ${k} ranges`);
      }
      for (const [first, end] of [[5, 6], [7, 30], [40, 48]] as const) {
        assert.deepEqual(w.store.pagesWithData(first, end, 1000), { end, ranges: clip(got.ranges, first, end) }, `${what}: ${first}..${end - 1}`);
      }
      assert.ok(got.ranges.length > 0 || w.model.lastLsn === 0, `${what}: some page holds data`);
    };
    check('empty');
    for (let round = 0; round < 6; round++) {
      writeRandom(w, 25);
      check(`round ${round}`);
      w.store.checkpoint();
      check(`round ${round}, after a checkpoint`);
      writeRandom(w, 5);
      reopen(w);
      check(`round ${round}, after a restart`);
    }
    expectCode(() => w.store.pagesWithData(0, 48, 10, 0), 'bad_request');
    expectCode(() => w.store.pagesWithData(0, 49, 10), 'out_of_range');
    expectCode(() => w.store.pagesWithData(5, 5, 10), 'out_of_range');
    expectCode(() => w.store.pagesWithData(0, 48, 0), 'bad_request');
  });

  it('pagesWithData looks at a range page by page only when it is no longer than the pages held, and then at most scanPagesMax pages', () => {
    const w = world(12);
    // Pages 0..19 written: 20 pages hold versions.
    applyOneRecord(w, Array.from({ length: 20 }, (_, page) => ({ page, data: content(page + 1) })));
    const scanned = w.store.pagesWithData(0, 10, 1000, 4);
    assert.deepEqual(scanned, { end: 4, ranges: [0, 4] }, 'cut after 4 pages');
    assert.deepEqual(w.store.pagesWithData(4, 6, 1000, 4), { end: 6, ranges: [4, 2] });
    // 48 pages against 20 held: the pages held are looked at, and the answer is whole.
    assert.deepEqual(w.store.pagesWithData(0, 48, 1000, 4), { end: 48, ranges: [0, 20] });
    // Once an image stores them, at most scanPagesMax of its pages: the answer stops at the next.
    w.store.checkpoint();
    assert.deepEqual(w.store.pagesWithData(0, 48, 1000, 8), { end: 8, ranges: [0, 8] });
    assert.deepEqual(w.store.pagesWithData(8, 48, 1000, 100), { end: 48, ranges: [8, 12] });
  });

  it('apply refuses a range made zeros past the end or malformed, changing nothing', () => {
    const w = world(42);
    writeRandom(w, 3, false);
    const versions = w.store.stats().versions;
    expectCode(() => w.store.apply({ lsn: 4, term: 1, kind: RecordKind.PageZero, payload: encodePageZero({ first: 40, count: 9 }) }), 'out_of_range');
    const bad = encodePageZero({ first: 1, count: 2 });
    bad[4] = 1;
    expectCode(() => w.store.apply({ lsn: 4, term: 1, kind: RecordKind.PageZero, payload: bad }), 'corruption');
    expectCode(() => w.store.apply({ lsn: 4, term: 1, kind: RecordKind.PageZero, payload: bad.subarray(0, 16) }), 'corruption');
    assert.equal(w.store.appliedLsn, 3);
    assert.equal(w.store.stats().versions, versions);
    expectCode(() => encodePageZero({ first: -1, count: 1 }), 'bad_request');
    expectCode(() => encodePageZero({ first: 0, count: 0 }), 'bad_request');
    expectCode(() => encodePageZero({ first: Number.MAX_SAFE_INTEGER, count: 1 }), 'bad_request');
  });

  it('apply checks order, page range and payload, and a rejected record changes nothing', () => {
    const w = world(13);
    writeRandom(w, 3);
    const rec = (lsn: number, pages: number[]): LogRecord => ({
      lsn, term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, pages.map((page) => ({ page, data: content(page + 1) }))),
    });
    expectCode(() => w.store.apply(rec(5, [1])), 'invariant');
    expectCode(() => w.store.apply(rec(3, [1])), 'invariant');
    const versions = w.store.stats().versions;
    expectCode(() => w.store.apply(rec(4, [1, 48])), 'out_of_range');
    const bad = rec(4, [1]);
    bad.payload[0] ^= 0xff;
    expectCode(() => w.store.apply(bad), 'corruption');
    assert.equal(w.store.appliedLsn, 3);
    assert.equal(w.store.stats().versions, versions);
    assert.deepEqual(w.store.getPage(1), w.model.at(1, 3));
    w.store.apply({ lsn: 4, term: 2, kind: RecordKind.Config, payload: new Uint8Array([1, 2]) });
    assert.equal(w.store.appliedLsn, 4);
  });

  it('apply checks a record held in memory against its checksum: one whose page changed since is neither applied nor cached', () => {
    const w = world(13);
    writeRandom(w, 3);
    const versions = w.store.stats().versions;
    const payload = encodePageWrite(PAGE, [{ page: 1, data: content(70) }, { page: 2, data: content(71) }], undefined, new Uint8Array(16).fill(9));
    const payloadCrc = crc32c(payload);
    // A bit of page 2's data, of a page number (1 becomes 5), of the write id: each refused.
    for (const at of [payload.length - 16 - 5, 16, payload.length - 1]) {
      const changed = Uint8Array.from(payload);
      changed[at] ^= 0x04;
      const e = expectCode(() => w.store.apply({ lsn: 4, term: 1, kind: RecordKind.PageWrite, payload: changed, payloadCrc }), 'invariant');
      assert.match(e.message, /^record 4 held in memory no longer matches its checksum \(CRC-32C \d+, now \d+\): not applied$/);
      assert.equal(w.store.appliedLsn, 3);
      assert.equal(w.store.stats().versions, versions);
      assert.deepEqual(w.store.getPage(2), w.model.at(2, 3), 'not cached as changed');
    }
    // As it was made: applied, and cached with the checksums the check used.
    w.store.apply({ lsn: 4, term: 1, kind: RecordKind.PageWrite, payload, payloadCrc });
    assert.equal(w.store.appliedLsn, 4);
    assert.deepEqual(w.store.getPage(2), content(71));
    assert.deepEqual(w.store.getPage(1), content(70));
  });

  it('an open whose replay meets a record that does not apply fails with it and leaves no file open (its images closed)', () => {
    const w = world(21, { imagesKeep: 2 });
    writeRandom(w, 6);
    w.store.checkpoint();
    writeRandom(w, 2);
    w.store.checkpoint();
    // A page write that is not one, in a record whose checksum holds: the replay cannot apply it.
    const bad = encodePageWrite(PAGE, [{ page: 1, data: content(1) }]);
    bad[0] ^= 0xff;
    w.log.write([{ term: 1, kind: RecordKind.PageWrite, payload: bad }]);
    w.log.sync();
    w.store.close();
    const open = w.disk.openFiles; // the log's own
    expectCode(() => PageStore.open(w.disk, w.log, w.opts), 'corruption');
    assert.equal(w.disk.openFiles, open, 'the images the failed open read are closed');
    // Up to the record before it, the store opens.
    w.store = PageStore.open(w.disk, w.log, w.opts, w.log.lastLsn - 1);
    assert.deepEqual(w.store.getPage(1), w.model.at(1, w.log.lastLsn - 1));
  });

  it('serves repeated reads from the cache within its byte bound, and coalesces image reads', () => {
    const w = world(14, { cacheBytesMax: 8 * PAGE });
    const entries = Array.from({ length: 32 }, (_, i) => ({ page: 8 + i, data: content(100 + i) }));
    applyOneRecord(w, entries);
    const before = w.disk.counters.reads;
    w.store.getPage(8);
    const afterFirst = w.disk.counters.reads;
    assert.ok(afterFirst > before, 'first read goes to the log');
    w.store.getPage(8);
    assert.equal(w.disk.counters.reads, afterFirst, 'second read is a cache hit');
    assert.equal(w.store.stats().cache.hits, 1);
    for (let i = 0; i < 32; i++) w.store.getPage(8 + i);
    const st = w.store.stats().cache;
    assert.ok(st.bytes <= 8 * PAGE && st.evictions > 0, `bytes ${st.bytes}, evictions ${st.evictions}`);
    // Vectored read of a log record: one log read for all 32 pages.
    const r0 = w.disk.counters.reads;
    w.store.getPages(entries.map((e) => e.page));
    assert.ok(w.disk.counters.reads - r0 <= 1);
    // From an image: 32 adjacent pages -> 1 disk read.
    w.store.checkpoint();
    w.opts = { ...w.opts, cacheBytesMax: 0 };
    reopen(w);
    const r1 = w.disk.counters.reads;
    const got = w.store.getPages(entries.map((e) => e.page));
    assert.equal(w.disk.counters.reads - r1, 1, '32 adjacent image pages in one read');
    got.forEach((d, i) => assert.deepEqual(d, entries[i]!.data));
    w.store.close();
    assert.equal(w.slab.stats().slotsUsed, 0, 'close frees the cache slots');
  });

  it('checkpointSteps: records applied between the steps are not in the image; every LSN reads right, after a restart too', () => {
    const w = world(16, { pageCount: 200 });
    writeRandom(w, 200);
    const start = w.store.appliedLsn;
    const steps = w.store.checkpointSteps();
    let r = steps.next();
    let between = 0;
    while (r.done !== true) {
      expectCode(() => w.store.checkpointSteps().next(), 'invariant');
      writeRandom(w, 3);
      between++;
      r = steps.next();
    }
    assert.ok(between >= 2, `the image was written in ${between + 1} steps`);
    assert.equal(r.value.lsn, start);
    assert.equal(w.store.stats().imageLsn, start);
    const last = w.model.lastLsn;
    assert.ok(last > start);
    checkAll(w.store, w.model, start - 2, last, 200);
    reopen(w);
    assert.equal(w.store.stats().imageLsn, start);
    checkAll(w.store, w.model, start - 2, last, 200);
  });

  it('checkpointSteps: the store closed between steps ends the checkpoint with closed and leaves no temp file', () => {
    const w = world(17, { pageCount: 200 });
    writeRandom(w, 200);
    const steps = w.store.checkpointSteps();
    // The first step takes the pages' versions; the file is created by a step of its own.
    assert.equal(steps.next().done, false);
    assert.deepEqual(tempFiles(w), [], 'the first step creates no file');
    assert.equal(steps.next().done, false);
    assert.ok(tempFiles(w).length > 0, 'the image is being written');
    w.store.close();
    expectCode(() => steps.next(), 'closed');
    assert.deepEqual(tempFiles(w), [], 'the half-written image is removed');
    reopen(w);
    assert.equal(w.store.stats().imageLsn, 0, 'no image was switched to');
    checkAll(w.store, w.model, w.model.lastLsn - 2, w.model.lastLsn, 200);
    // Abandoned with return(): the same.
    const again = w.store.checkpointSteps();
    again.next();
    again.return(undefined as never);
    assert.deepEqual(tempFiles(w), []);
    assert.equal(w.store.checkpoint().lsn, w.model.lastLsn, 'a later checkpoint runs');
  });

  it('checkpointSteps: the last batch, finishing the image and switching to it are separate steps', () => {
    const w = world(18, { pageCount: 200 });
    writeRandom(w, 200);
    const lsn = w.model.lastLsn;
    const steps = w.store.checkpointSteps();
    const results: Array<IteratorResult<CheckpointStep, { lsn: number; file: string }>> = [];
    const states: string[] = [];
    for (;;) {
      const r = steps.next();
      results.push(r);
      states.push(`${tempFiles(w).length} tmp, ${imageFiles(w).length} img, newest ${w.store.stats().imageLsn}`);
      if (r.done) break;
    }
    assert.ok(results.length >= 4, `${results.length} steps`);
    // The step before the switch finished the image (renamed into place) without switching to
    // it; the one before that flushed its last buffer. (Steps that clean up may follow the switch.)
    const at = states.indexOf(`0 tmp, 1 img, newest ${lsn}`);
    assert.deepEqual(states.slice(at - 2, at + 1), ['1 tmp, 0 img, newest 0', '0 tmp, 1 img, newest 0', `0 tmp, 1 img, newest ${lsn}`]);
    assert.ok(states.slice(at).every((x) => x === `0 tmp, 1 img, newest ${lsn}`));
    // Closed between finishing and switching: the checkpoint ends with closed, the image stays unused.
    writeRandom(w, 20);
    const again = w.store.checkpointSteps();
    let r = again.next();
    while (imageFiles(w).length < 2) r = again.next();
    assert.equal(r.done, false);
    w.store.close();
    expectCode(() => again.next(), 'closed');
    reopen(w);
    assert.equal(w.store.stats().imageLsn, lsn, 'the finished image was not switched to');
    checkAll(w.store, w.model, w.model.lastLsn - 2, w.model.lastLsn, 200);
    assert.equal(w.store.checkpoint().lsn, w.model.lastLsn, 'a later checkpoint runs, over the unused image');
    assert.deepEqual(tempFiles(w), []);
  });

  it('checkpointSteps: the versions of more pages than one step takes are taken over several steps, sorted, as of the first', function () {
    this.timeout(120_000);
    // More written pages than two collect steps take, inserted in random order: three sorted runs.
    const pageCount = 2 * CHECKPOINT_COLLECT_PAGES + 700;
    const w = world(33, { pageCount, cacheBytesMax: 64 * PAGE });
    const order = Array.from({ length: pageCount - 100 }, (_, p) => p);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(w.rnd() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    /**
     * Writes each list of pages as one record, all with one sync, and applies them. One page in
     * four has content, the others are written as zeros: a version all the same, but not stored
     * in the image (which keeps the simulated disk's copies on each flush small).
     */
    const writePages = (...records: number[][]): void => {
      const first = w.log.lastLsn + 1;
      const entries = records.map((pages) => pages.map((page) => ({ page, data: ++w.seq % 4 === 0 ? content(w.seq) : ZERO })));
      w.log.write(entries.map((e) => ({ term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, e) })));
      w.log.sync();
      for (const record of w.log.read(first, w.log.lastLsn, { bytesMax: 64 * 1024 * 1024 })) w.store.apply(record);
      entries.forEach((e, k) => {
        for (const { page, data } of e) {
          const h = w.model.history.get(page) ?? [];
          h.push({ lsn: first + k, data });
          w.model.history.set(page, h);
        }
      });
      w.model.lastLsn = w.log.lastLsn;
    };
    for (let i = 0; i < order.length; i += 1024) {
      const records: number[][] = [];
      for (let j = i; j < Math.min(order.length, i + 1024); j += 16) records.push(order.slice(j, Math.min(j + 16, order.length)));
      writePages(...records);
    }
    const start = w.store.appliedLsn;
    const steps = w.store.checkpointSteps();
    let collectSteps = 0;
    let r = steps.next();
    while (r.done !== true) {
      if (tempFiles(w).length === 0 && imageFiles(w).length === 0) collectSteps++;
      // Between steps: newer versions of pages the image holds, and pages it must not hold.
      writePages([Math.floor(w.rnd() * (pageCount - 100)), pageCount - 100 + Math.floor(w.rnd() * 100)]);
      r = steps.next();
    }
    assert.equal(collectSteps, Math.ceil(order.length / CHECKPOINT_COLLECT_PAGES), 'a step per chunk of the version index; the next one creates the file');
    assert.equal(r.value.lsn, start);
    const all = Array.from({ length: pageCount }, (_, p) => p);
    const check = (): void => {
      for (let p = 0; p < pageCount; p += 256) {
        const got = w.store.getPages(all.slice(p, p + 256), start);
        got.forEach((d, k) => assert.ok(Buffer.from(d).equals(w.model.at(p + k, start)), `page ${p + k} at LSN ${start}`));
      }
    };
    check();
    reopen(w);
    assert.equal(w.store.stats().imageLsn, start);
    check();
    // A second checkpoint makes the first image the floor: the versions at or below it are
    // dropped after the switch, a chunk of the version index per step.
    writePages([1, 2, 3]);
    const again = w.store.checkpointSteps();
    let r2 = again.next();
    while (w.store.stats().oldestReadableLsn !== start) r2 = again.next();
    const versions = [w.store.stats().versions];
    while (r2.done !== true) {
      r2 = again.next();
      versions.push(w.store.stats().versions);
    }
    const drops = versions.slice(1).map((v, k) => versions[k]! - v).filter((d) => d > 0);
    assert.ok(drops.length >= Math.floor(order.length / CHECKPOINT_COLLECT_PAGES), `versions dropped in ${drops.length} steps: ${drops.join(', ')}`);
    const after = [...w.model.history.values()].reduce((n, h) => n + h.filter((e) => e.lsn > start).length, 0);
    assert.equal(versions[versions.length - 1], after, 'what is left: the versions after the floor');
  });

  it('checkpointSteps: after the switch, each trimmed log segment is a step; closed in between, the checkpoint still ends with its result', () => {
    const segments = (w: World): string[] => w.disk.list(LOG_DIR).filter((n) => n.endsWith('.log'));
    const w = world(34, { imagesKeep: 1, pageCount: 64 });
    writeRandom(w, 60);
    const before = segments(w).length;
    assert.ok(before >= 4, `${before} segments`);
    const lsn = w.model.lastLsn;
    const steps = w.store.checkpointSteps();
    let r = steps.next();
    while (w.store.stats().imageLsn !== lsn) r = steps.next();
    assert.equal(r.done, false, 'the switch is not the last step when there is a log to trim');
    assert.equal(segments(w).length, before, 'the switch step trims nothing');
    const counts: number[] = [];
    while (r.done !== true) {
      r = steps.next();
      counts.push(segments(w).length);
    }
    assert.equal(r.value.lsn, lsn);
    // After the switch: a step per chunk of the version index dropped, then one per segment.
    const trims = counts.map((c, k) => (k === 0 ? before : counts[k - 1]!) - c);
    assert.ok(trims.every((t) => t === 0 || t === 1), `segments trimmed per step: ${trims.join(',')}`);
    assert.ok(trims.filter((t) => t === 1).length >= 3, `${trims.filter((t) => t === 1).length} trim steps`);
    assert.equal(w.log.canTrimPrefix(lsn), false);
    checkAll(w.store, w.model, lsn, lsn, 64);

    // Closed right after the switch: done, with the checkpoint's result; the next one trims.
    writeRandom(w, 60);
    const lsn2 = w.model.lastLsn;
    const again = w.store.checkpointSteps();
    r = again.next();
    while (w.store.stats().imageLsn !== lsn2) r = again.next();
    const left = segments(w).length;
    w.store.close();
    r = again.next();
    assert.equal(r.done, true);
    assert.deepEqual(r.value, { lsn: lsn2, file: imageFileName(lsn2) });
    assert.equal(segments(w).length, left, 'nothing trimmed after the close');
    reopen(w);
    assert.equal(w.store.stats().imageLsn, lsn2);
    assert.ok(w.log.canTrimPrefix(lsn2), 'the segments the image covers are still there');
    checkAll(w.store, w.model, lsn2, lsn2, 64);
    writeRandom(w, 5);
    w.store.checkpoint();
    assert.equal(w.log.canTrimPrefix(lsn2), false, 'the next checkpoint trimmed them');
    checkAll(w.store, w.model, w.store.oldestReadableLsn, w.model.lastLsn, 64);
  });

  it('a dropped image whose close fails leaves the store on its new image: the checkpoint ends, reads and the next checkpoint work', () => {
    const w = world(41, { imagesKeep: 1 });
    writeRandom(w, 30);
    const firstImage = imageFileName(w.store.appliedLsn);
    // The disk's close of the first image's handle fails (RealDisk reports an EIO of close).
    const handles = new Set<number>();
    const open = w.disk.open.bind(w.disk);
    const close = w.disk.close.bind(w.disk);
    w.disk.open = (path, opts) => {
      const fh = open(path, opts);
      if (path.endsWith(`/${firstImage}`)) handles.add(fh);
      return fh;
    };
    w.disk.close = (fh) => {
      close(fh);
      if (handles.has(fh)) throw new StorageError('io_error', 'close: EIO (test)');
    };
    const first = w.store.checkpoint().lsn;
    assert.equal(imageFileName(first), firstImage);
    writeRandom(w, 30);
    const second = w.store.checkpoint().lsn;
    assert.equal(w.store.stats().imageLsn, second);
    assert.equal(w.store.oldestReadableLsn, second, 'imagesKeep 1: the first image is let go');
    assert.equal(w.store.stats().discardFailures, 1, 'the failed close is counted');
    checkAll(w.store, w.model, second, w.model.lastLsn, 48);
    writeRandom(w, 10);
    assert.equal(w.store.checkpoint().lsn, w.model.lastLsn);
    checkAll(w.store, w.model, w.model.lastLsn, w.model.lastLsn, 48);
  });

  describe('a checkpoint for space: imageBytesBound, imagesKeep', () => {
    const entryBytes = PAGE + IMAGE_TABLE_ENTRY_BYTES;
    /** Appends one record of `kind` to `w`'s log, syncs, applies it; returns its LSN. */
    const append = (w: World, kind: RecordKind, payload: Uint8Array): number => {
      const lsn = w.log.write([{ term: 1, kind, payload }]);
      w.log.sync();
      w.store.apply(w.log.read(lsn, lsn)[0]!);
      return lsn;
    };
    const write = (w: World, page: number): number => append(w, RecordKind.PageWrite, encodePageWrite(PAGE, [{ page, data: content(page + 1) }]));
    const zero = (w: World, first: number, count: number): number => append(w, RecordKind.PageZero, encodePageZero({ first, count }));

    it('imageBytesBound is never under the bytes of the image a checkpoint then writes', () => {
      const w = world(91);
      for (let round = 0; round < 16; round++) {
        writeRandom(w, 20);
        const bound = w.store.imageBytesBound();
        const { file } = w.store.checkpoint();
        const fh = w.disk.open(`${STORE_DIR}/${file}`);
        const bytes = w.disk.size(fh);
        w.disk.close(fh);
        assert.ok(bound >= bytes, `round ${round}: bound ${bound}, image ${bytes} bytes`);
      }
    });

    it('counts the pages whose newest version holds data: pages made zeros leave the bound, and a checkpoint keeping one image lets the history behind it go', () => {
      const w = world(92);
      for (let p = 0; p < 20; p++) write(w, p);
      assert.equal(w.store.imageBytesBound(), IMAGE_BYTES_MIN + 20 * entryBytes);
      const zeroed = zero(w, 0, 15);
      assert.equal(w.store.imageBytesBound(), IMAGE_BYTES_MIN + 5 * entryBytes, 'pages made zeros are not counted');
      zero(w, 0, 48);
      write(w, 3);
      assert.equal(w.store.imageBytesBound(), IMAGE_BYTES_MIN + entryBytes, 'a page written again after its zeros is');
      // A checkpoint as the store keeps them (2 images): the history since LSN 0 stays readable.
      write(w, 30);
      const first = w.store.checkpoint().lsn;
      assert.equal(w.store.oldestReadableLsn, 0);
      assert.deepEqual(w.store.getPage(5, zeroed - 1), content(6), 'the history is kept');
      // The newest image's 2 pages, and the versions since LSN 0 that still hold data (the same 2).
      assert.equal(w.store.imageBytesBound(), IMAGE_BYTES_MIN + 4 * entryBytes);
      write(w, 31);
      // One keeping a single image: the older images and the log up to it go.
      const logBefore = w.log.firstLsn;
      const second = w.store.checkpoint({ imagesKeep: 1 }).lsn;
      assert.ok(second > first);
      assert.equal(w.store.oldestReadableLsn, second);
      assert.equal(w.store.stats().images, 1);
      assert.ok(w.log.firstLsn > logBefore, `the log is trimmed (first LSN ${logBefore} -> ${w.log.firstLsn})`);
      expectCode(() => w.store.getPage(5, zeroed - 1), 'trimmed');
      assert.deepEqual(w.store.getPage(3, second), content(4));
      assert.deepEqual(w.store.getPage(31, second), content(32));
      assert.equal(w.store.imageBytesBound(), IMAGE_BYTES_MIN + 3 * entryBytes, 'the image: pages 3, 30 and 31');
      assert.equal(imageFiles(w).length, 1);
    });

    it('sealLog: a checkpoint whose image holds every record seals the log\'s active segment, and the whole log goes; without, the active segment stays', () => {
      for (const sealLog of [false, true]) {
        const w = world(94);
        for (let p = 0; p < 10; p++) write(w, p);
        assert.ok(w.log.stats().segments >= 2 && w.log.activeBytes * 16 >= w.log.activeBytesMax, 'records in a sealed segment and in the active one');
        const lsn = w.store.checkpoint({ imagesKeep: 1, sealLog }).lsn;
        assert.equal(lsn, 10);
        if (sealLog) {
          assert.equal(w.log.firstLsn, lsn + 1, 'no record left');
          assert.equal(w.log.stats().segments, 1);
        } else {
          assert.ok(w.log.firstLsn <= lsn, 'the active segment stays');
        }
        // Opened again: the pages as written, and the log goes on after the image.
        reopen(w);
        for (let p = 0; p < 10; p++) assert.deepEqual(w.store.getPage(p, lsn), content(p + 1));
        assert.equal(write(w, 11), lsn + 1);
        assert.deepEqual(w.store.getPage(11, lsn + 1), content(12));
      }
    });

    it('imagesKeep of a checkpoint is an integer from 1 to the store\'s own', () => {
      const w = world(93);
      writeRandom(w, 10);
      for (const bad of [0, 3, 1.5, -1]) {
        expectCode(() => w.store.checkpoint({ imagesKeep: bad }), 'bad_request');
      }
      assert.equal(w.store.stats().images, 0, 'nothing was written');
      assert.equal(w.store.checkpoint({ imagesKeep: 2 }).lsn, w.log.lastLsn);
    });
  });

  describe('checkpointSteps with flushOffThread', () => {
    /**
     * `w`'s store and log opened again on a view of its disk whose fdatasyncAsync waits in
     * `flushes` until the test settles it (a failure: fsync_failed); the sync calls pass through.
     */
    function onAsyncFlushDisk(w: World): { store: PageStore; flushes: Array<{ settle: (fail?: boolean) => void }>; syncs: () => number } {
      w.store.close();
      w.log.close();
      const flushes: Array<{ settle: (fail?: boolean) => void }> = [];
      let syncs = 0;
      const disk = new Proxy(w.disk, {
        get(target, prop) {
          if (prop === 'fdatasyncAsync') {
            return (fh: number) =>
              new Promise<void>((resolve, reject) =>
                flushes.push({
                  settle: (fail) => {
                    if (fail === true) reject(new StorageError('fsync_failed', 'EIO (test)'));
                    else resolve(target.fdatasync(fh));
                  },
                }),
              );
          }
          if (prop === 'fdatasync') {
            return (fh: number) => {
              syncs++;
              target.fdatasync(fh);
            };
          }
          const v = (target as unknown as Record<string | symbol, unknown>)[prop];
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
      w.log = openLog(disk);
      w.store = PageStore.open(disk, w.log, w.opts);
      return { store: w.store, flushes, syncs: () => syncs };
    }

    /** Every page of `store` at `lsn` reads as in the model (one page at a time). */
    function checkPagesAt(store: PageStore, model: Model, lsn: number, pageCount: number): void {
      for (let p = 0; p < pageCount; p++) assert.deepEqual(store.getPage(p, lsn), model.at(p, lsn), `page ${p} at LSN ${lsn}`);
    }

    it("flushes each image buffer off the thread and yields it: the next step runs once it is done; the image reads right", async () => {
      // 1,000 pages of 4 KiB: an image of about 4 MiB, four 1 MiB buffers and the last one.
      const w = world(35, { pageCount: 1000 });
      writeRandom(w, 700, false);
      const { store, flushes, syncs } = onAsyncFlushDisk(w);
      const lsn = w.model.lastLsn;
      const syncs0 = syncs();
      const steps = store.checkpointSteps({ flushOffThread: true });
      let yielded = 0;
      let syncsAtFirstYield: number | undefined;
      for (;;) {
        const r = steps.next();
        if (r.done === true) {
          assert.equal(r.value.lsn, lsn);
          break;
        }
        if (r.value === undefined) continue;
        yielded++;
        syncsAtFirstYield ??= syncs();
        assert.equal(flushes.length, yielded, 'each yielded flush is one running off the thread');
        let settled = false;
        void r.value.then(() => (settled = true));
        await Promise.resolve();
        assert.equal(settled, false, 'it waits for the disk');
        flushes[yielded - 1]!.settle();
        await r.value;
      }
      assert.ok(yielded >= 4, `${yielded} buffers flushed off the thread`);
      // Until the image's finish, nothing of it was flushed on the thread.
      assert.equal(syncsAtFirstYield, syncs0);
      assert.deepEqual(tempFiles(w), []);
      assert.equal(store.stats().imageLsn, lsn);
      checkPagesAt(store, w.model, lsn, 1000);
      reopen(w);
      assert.equal(w.store.stats().imageLsn, lsn);
      checkPagesAt(w.store, w.model, lsn, 1000);
    });

    /** A store of 1,000 pages after 700 random writes, a checkpoint run up to the step that yields its first flush. */
    function untilFirstFlush(seed: number): ReturnType<typeof onAsyncFlushDisk> & { w: World; steps: Generator<CheckpointStep, unknown, void>; flush: Promise<void> } {
      const w = world(seed, { pageCount: 1000 });
      writeRandom(w, 700);
      const disk = onAsyncFlushDisk(w);
      const steps = disk.store.checkpointSteps({ flushOffThread: true });
      let r = steps.next();
      while (r.done !== true && r.value === undefined) r = steps.next();
      assert.equal(r.done, false);
      return { ...disk, w, steps, flush: r.value! };
    }

    it('a flush that fails ends the checkpoint (return()): the temp file goes, nothing is switched, a later checkpoint runs', async () => {
      const { w, store, flushes, steps, flush } = untilFirstFlush(36);
      flushes[0]!.settle(true);
      await assert.rejects(flush, (e: StorageError) => e.code === 'fsync_failed');
      // What a driver does with a failed step.
      steps.return(undefined as never);
      assert.deepEqual(tempFiles(w), [], 'the half-written image is removed');
      assert.equal(store.stats().imageLsn, 0);
      // The next checkpoint runs (the sync one flushes on the thread).
      assert.equal(store.checkpoint().lsn, w.model.lastLsn);
      checkPagesAt(store, w.model, w.model.lastLsn, 1000);
    });

    it('abandoned while a flush runs, then checkpointed again at the same LSN: the old removal does not take the new image file', async () => {
      const { w, store, flushes, steps, flush } = untilFirstFlush(38);
      steps.return(undefined as never); // The first build ends early, its flush still running.
      // A checkpoint again at once, at the same applied LSN, up to its first flush.
      const again = store.checkpointSteps({ flushOffThread: true });
      let r = again.next();
      while (r.done !== true && r.value === undefined) r = again.next();
      assert.equal(r.done, false);
      // The first build's flush ends now: its deferred close and removal run.
      flushes[0]!.settle();
      await flush;
      await Promise.resolve();
      // The second build goes on to its end.
      for (;;) {
        if (r.done === true) break;
        if (r.value !== undefined) {
          flushes[flushes.length - 1]!.settle();
          await r.value;
        }
        r = again.next();
      }
      assert.equal(r.value.lsn, w.model.lastLsn);
      assert.deepEqual(tempFiles(w), []);
      assert.equal(store.stats().imageLsn, w.model.lastLsn);
    });

    it('abandoned while a flush runs, the image file is closed and removed only once the flush ends', async () => {
      const { w, store, flushes, steps, flush } = untilFirstFlush(37);
      steps.return(undefined as never);
      assert.deepEqual(tempFiles(w).map((n) => /\.abandoned-\d+\.img\.tmp$/.test(n)), [true], 'kept open, moved aside, while the disk flushes it');
      flushes[0]!.settle();
      await flush;
      await Promise.resolve();
      assert.deepEqual(tempFiles(w), [], 'removed once the flush ended');
      assert.equal(store.checkpoint().lsn, w.model.lastLsn);
    });
  });

  it('getPagesCached answers from memory only: cached and never-written pages, else undefined without a disk read', () => {
    const w = world(15, { cacheBytesMax: 4 * PAGE });
    const entries = Array.from({ length: 6 }, (_, i) => ({ page: 10 + i, data: content(200 + i) }));
    applyOneRecord(w, entries);
    // apply cached the written pages; the 4-page bound kept the last four (12..15).
    const reads0 = w.disk.counters.reads;
    const hits0 = w.store.stats().cache.hits;
    const cached = w.store.getPagesCached([15, 0, 12]);
    assert.ok(cached !== undefined, 'cached pages and a never-written page come from memory');
    const got = cached.pages;
    assert.deepEqual(got[0], entries[5]!.data);
    assert.deepEqual(got[1], ZERO);
    assert.deepEqual(got[2], entries[2]!.data);
    const all = new Uint8Array(3 * PAGE);
    got.forEach((g, i) => all.set(g, i * PAGE));
    assert.equal(cached.crc, crc32c(all), 'the checksum of the pages in order, from the ones they were cached with');
    assert.equal(w.store.stats().cache.hits, hits0 + 2);
    const misses0 = w.store.stats().cache.misses;
    assert.equal(w.store.getPagesCached([15, 10]), undefined, 'page 10 was evicted: it needs the log');
    assert.equal(w.disk.counters.reads, reads0, 'no disk read');
    assert.equal(w.store.stats().cache.misses, misses0, 'a miss of the memory-only path is not counted');
    assert.deepEqual(w.store.getPages([10])[0], entries[0]!.data, 'the queued path reads it from the log');
    assert.deepEqual(w.store.getPagesCached([10])?.pages[0], entries[0]!.data, 'and caches it');
    assert.deepEqual(w.store.getPagesCached([10], 0)?.pages[0], ZERO, 'at LSN 0 every page is zeros');
    expectCode(() => w.store.getPagesCached([48]), 'out_of_range');
    expectCode(() => w.store.getPagesCached([0], 2), 'future_lsn');
    expectCode(() => w.store.getPagesCached(new Array<number>(GET_PAGES_MAX + 1).fill(0)), 'too_large');
    w.store.close();
    expectCode(() => w.store.getPagesCached([0]), 'closed');
  });

  it('a cached page whose copy does not match its checksum is not served from memory: read from its record, cached again, counted', () => {
    const w = world(15, { cacheBytesMax: 4 * PAGE });
    const entries = [{ page: 3, data: content(31) }, { page: 4, data: content(41) }];
    applyOneRecord(w, entries);
    assert.ok(w.store.getPagesCached([3, 4]) !== undefined, 'both cached');
    // One bit of page 4's copy in the slab changes under the cache.
    const slab = (w.store as unknown as { cache: { slab: Slab } }).cache.slab;
    const hit = flipInSlab(slab, entries[1]!.data, 7, 0x80);
    assert.equal(hit, 1, 'the page found in one slot');
    assert.equal(w.store.getPagesCached([3, 4]), undefined, 'not from memory: the damaged copy is dropped');
    assert.equal(w.store.stats().cache.damaged, 1);
    assert.deepEqual(w.store.getPages([3, 4]), [entries[0]!.data, entries[1]!.data], 'read from the log');
    const again = w.store.getPagesCached([3, 4]);
    assert.deepEqual(again?.pages, [entries[0]!.data, entries[1]!.data], 'and cached again');
  });

  describe('getPagesChecked: the checksum of the pages read, from those each was checked against', () => {
    /** Page 1 (and 2, twice) in the image; 5 written after it; 6..8 made zeros after 6 was written; 40 never written. */
    const laidOut = (): World => {
      const w = world(16, { cacheBytesMax: 4 * PAGE });
      const put = (kind: RecordKind, payload: Uint8Array): void => {
        w.log.write([{ term: 1, kind, payload }]);
        w.store.apply(w.log.read(w.log.lastLsn, w.log.lastLsn)[0]!);
      };
      put(RecordKind.PageWrite, encodePageWrite(PAGE, [{ page: 2, data: content(20) }, { page: 1, data: content(10) }, { page: 2, data: content(21) }]));
      w.store.checkpoint();
      put(RecordKind.PageWrite, encodePageWrite(PAGE, [{ page: 6, data: content(60) }, { page: 5, data: content(50) }, { page: 6, data: content(61) }]));
      put(RecordKind.PageZero, encodePageZero({ first: 6, count: 3 }));
      put(RecordKind.PageWrite, encodePageWrite(PAGE, [{ page: 9, data: content(90) }, { page: 9, data: content(91) }]));
      w.log.sync();
      reopen(w);
      // The replay cached the pages it applied: nothing is cached, each page is read from disk.
      (w.store as unknown as { cache: PageCache }).cache.dropBelow(Number.MAX_SAFE_INTEGER);
      return w;
    };
    const ASKED = [1, 5, 6, 40, 2, 9, 1];
    const expected = [content(10), content(50), ZERO, ZERO, content(21), content(91), content(10)];
    const joined = (pages: Uint8Array[]): Uint8Array => {
      const all = new Uint8Array(pages.length * PAGE);
      pages.forEach((p, i) => all.set(p, i * PAGE));
      return all;
    };

    it('from an image, a page write, a page zero, a page never written and the cache: the pages\' own', () => {
      const w = laidOut();
      const reads0 = w.disk.counters.reads;
      const misses0 = w.store.stats().cache.misses;
      const first = w.store.getPagesChecked(ASKED);
      assert.ok(w.disk.counters.reads > reads0, 'read from disk');
      assert.equal(w.store.stats().cache.misses - misses0, 6, 'every page but the one never written and the one made zeros, from disk');
      assert.deepEqual(first.pages, expected);
      assert.equal(first.crc, crc32c(joined(expected)));
      // 1, 2, 5 and 9 were cached as they were read: with the checksums they were checked against.
      const cached = w.store.getPagesCached([9, 1, 5, 2]);
      assert.ok(cached !== undefined, 'cached');
      assert.equal(cached.crc, crc32c(joined([content(91), content(10), content(50), content(21)])));
      const again = w.store.getPagesChecked(ASKED);
      assert.deepEqual(again, first, 'the same from the cache');
      assert.equal(w.store.stats().cache.damaged, 0);
    });

    it('a page changed in memory after its check, out of an image or a log record, fails the checksum it comes with, and its cached copy is not served', () => {
      for (const where of ['image', 'record'] as const) {
        const w = laidOut();
        const page = where === 'image' ? 1 : 5;
        const restore = [changeAfterCheck(w, where, page)];
        try {
          const got = w.store.getPagesChecked([page]);
          assert.notDeepEqual(got.pages[0], expected[ASKED.indexOf(page)], `${where}: the page changed`);
          assert.notEqual(got.crc, crc32c(got.pages[0]!), `${where}: the checksum is not the changed page's: its reader refuses it`);
          assert.equal(got.crc, crc32c(expected[ASKED.indexOf(page)]!), `${where}: it is the page's as stored`);
        } finally {
          for (const r of restore) r();
        }
        assert.equal(w.store.getPagesCached([page]), undefined, `${where}: the changed copy is not served from the cache`);
        assert.equal(w.store.stats().cache.damaged, 1, where);
        const reread = w.store.getPagesChecked([page]);
        assert.deepEqual(reread.pages[0], expected[ASKED.indexOf(page)], `${where}: read again, right`);
        assert.equal(reread.crc, crc32c(reread.pages[0]!));
      }
    });
  });

  it('a checkpoint stores each page with the checksum it was checked against where it was read: a page changed in memory since fails its read from the new image', () => {
    for (const where of ['record', 'image'] as const) {
      const w = world(17, { cacheBytesMax: 0 });
      const put = (entries: { page: number; data: Uint8Array }[]): void => {
        w.log.write([{ term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, entries) }]);
        w.store.apply(w.log.read(w.log.lastLsn, w.log.lastLsn)[0]!);
      };
      put([{ page: 2, data: content(2) }, { page: 7, data: content(7) }]);
      w.store.checkpoint();
      put([{ page: 3, data: content(3) }]);
      // The next checkpoint folds page 2 and 7 from the first image and 3 from the log.
      const target = where === 'record' ? 3 : 7;
      const restore = [changeAfterCheck(w, where, target)];
      try {
        w.store.checkpoint();
      } finally {
        for (const r of restore) r();
      }
      const other = where === 'record' ? 7 : 3;
      assert.deepEqual(w.store.getPage(other), content(other), `${where}: the other pages are right`);
      assert.deepEqual(w.store.getPage(2), content(2), where);
      const e = expectCode(() => w.store.getPage(target), 'corruption');
      assert.ok(e instanceof CorruptionError && e.message.includes(`page ${target} checksum mismatch`), `${where}: ${e.message}`);
    }
  });

  it('rejects bad options and an image of another page size or of more pages (one of fewer is a volume that grew since)', () => {
    const w = world(15);
    writeRandom(w, 10);
    w.store.checkpoint();
    w.store.close();
    const o = w.opts;
    for (const bad of [
      { ...o, pageSize: 2048 as 4096 }, { ...o, pageCount: 0 }, { ...o, pageCount: 2 ** 32 }, { ...o, cacheBytesMax: -1 },
      { ...o, imagesKeep: 0 }, { ...o, retainLsns: -1 }, { ...o, dir: '' },
    ]) {
      expectCode(() => PageStore.open(w.disk, w.log, bad), 'bad_request');
    }
    expectCode(() => PageStore.open(w.disk, w.log, { ...o, pageCount: 32 }), 'bad_request');
    expectCode(() => PageStore.open(w.disk, w.log, { ...o, pageSize: 8192, slab: new Slab({ slotBytes: 8192, slotCount: 64 }) }), 'bad_request');
    const grown = PageStore.open(w.disk, w.log, { ...o, pageCount: 64 });
    assert.equal(grown.pages, 64);
    checkAll(grown, w.model, grown.oldestReadableLsn, w.model.lastLsn, 64);
    grown.close();
  });

  it('checkpoint is a no-op when the newest image is at appliedLsn', () => {
    const w = world(16);
    assert.deepEqual(w.store.checkpoint(), { lsn: 0, file: '' });
    writeRandom(w, 5);
    const c = w.store.checkpoint();
    const ops = w.disk.mutatingOps;
    assert.deepEqual(w.store.checkpoint(), c);
    assert.equal(w.disk.mutatingOps, ops);
  });

  it('an image whose term differs from the log at its LSN is not used', () => {
    const w = world(17, { imagesKeep: 2 });
    writeRandom(w, 20);
    const cp = w.store.checkpoint(); // term 1 at cp.lsn
    w.store.close();
    // The log's history at cp.lsn changes (a new term rewrote it); the image no longer matches.
    w.log.truncateSuffix(cp.lsn);
    const rewritten = encodePageWrite(PAGE, [{ page: 0, data: content(999) }]);
    w.log.write([{ term: 2, kind: RecordKind.PageWrite, payload: rewritten }]);
    w.log.sync();
    w.log.close();
    w.log = openLog(w.disk);
    w.store = PageStore.open(w.disk, w.log, w.opts);
    assert.equal(w.store.stats().imageLsn, 0, 'the image was set aside');
    assert.deepEqual(w.store.getPage(0, cp.lsn), content(999));
  });

  it('adoptImage refuses an image whose header holds another term than the one given, and writes no checkpoint pointer', () => {
    const w = world(20);
    writeRandom(w, 20);
    const cp = w.store.checkpoint(); // an image at cp.lsn, term 1
    w.store.close();
    const pointer = w.disk.fileBytes(`${STORE_DIR}/checkpoint`);
    const ops = w.disk.mutatingOps;
    assert.throws(
      () => PageStore.adoptImage(w.disk, STORE_DIR, cp.lsn, 2),
      (e: Error) =>
        e instanceof CorruptionError && e.code === 'corruption' && e.message.includes(`holds lsn ${cp.lsn} term 1, expected ${cp.lsn}/2`) && e.reports[0]!.reason === 'image header does not match',
    );
    assert.equal(w.disk.mutatingOps, ops, 'nothing was written');
    assert.deepEqual(w.disk.fileBytes(`${STORE_DIR}/checkpoint`), pointer);
    // With the term the image holds, it is adopted: the pointer is written again.
    PageStore.adoptImage(w.disk, STORE_DIR, cp.lsn, 1);
    assert.ok(w.disk.mutatingOps > ops);
    w.log.close();
    w.log = openLog(w.disk);
    w.store = PageStore.open(w.disk, w.log, w.opts);
    assert.equal(w.store.stats().imageLsn, cp.lsn);
  });

  it('detects a log rewritten under the store: a record that no longer writes what was indexed', () => {
    const w = world(18, { cacheBytesMax: 0 });
    for (let i = 1; i <= 3; i++) {
      w.log.write([{ term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, [{ page: i, data: content(i) }]) }]);
      w.store.apply(w.log.read(i, i)[0]!);
    }
    w.log.sync();
    w.log.truncateSuffix(3);
    w.log.write([{ term: 2, kind: RecordKind.Noop, payload: new Uint8Array(0) }]);
    assert.match(expectCode(() => w.store.getPage(3), 'corruption').message, /record 3 indexed as a page write has kind/);
    w.log.truncateSuffix(3);
    w.log.write([{ term: 2, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, [{ page: 4, data: content(4) }]) }]);
    const e = expectCode(() => w.store.getPages([1, 3]), 'corruption');
    assert.ok(e.message.includes('page 3'));
    assert.deepEqual(w.store.getPage(1), content(1));
  });

  it('a failed image write or pointer update leaves the store as it was, without temp files', () => {
    const w = world(19, { imagesKeep: 2 });
    writeRandom(w, 30);
    const c1 = w.store.checkpoint();
    writeRandom(w, 30);
    w.disk.failWrite({ path: `${STORE_DIR}/image-` });
    expectCode(() => w.store.checkpoint(), 'io_error');
    assert.deepEqual(w.disk.list(STORE_DIR).filter((n) => n.startsWith('image-')), [c1.file], 'temp file removed');
    assert.equal(w.store.stats().imageLsn, c1.lsn);
    checkAll(w.store, w.model, 0, w.model.lastLsn, w.opts.pageCount);
    w.disk.failFsync({ path: `${STORE_DIR}/checkpoint` });
    expectCode(() => w.store.checkpoint(), 'fsync_failed');
    assert.equal(w.store.stats().imageLsn, c1.lsn, 'the pointer did not move, nor did the store');
    assert.equal(w.store.oldestReadableLsn, 0);
    checkAll(w.store, w.model, 0, w.model.lastLsn, w.opts.pageCount);
    const c2 = w.store.checkpoint();
    assert.equal(c2.lsn, w.model.lastLsn);
    reopen(w);
    checkAll(w.store, w.model, w.store.oldestReadableLsn, w.model.lastLsn, w.opts.pageCount);
  });
});
