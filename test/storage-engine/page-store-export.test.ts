/**
 * Exporting a page store's image at an LSN into another shard's directory, and seeding a new
 * replica (a branch's) from it: the seeded replica reads the parent's pages as of that LSN and
 * continues its log after it; the export changes nothing of the parent, keeps out what is
 * applied between its steps, refuses unreadable LSNs and a concurrent checkpoint, leaves nothing
 * when it ends early; the seed refuses a directory with state and is crash-safe.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import type { Disk } from '../../storage-engine/disk';
import { CorruptionError, StorageError } from '../../storage-engine/errors';
import { IMAGE_BYTES_MIN, ImageReader, imageFileName } from '../../storage-engine/image';
import { PageStore, type CheckpointStep } from '../../storage-engine/page-store';
import { encodePageWrite } from '../../storage-engine/page-write';
import { RealDisk } from '../../storage-engine/real-disk';
import { RecordKind } from '../../storage-engine/record';
import { ShardStorage, type ShardStorageOptions } from '../../storage-engine/shard-storage';
import { SimDisk, SimulatedCrash } from '../../storage-engine/sim-disk';
import { Slab } from '../../storage-engine/slab';
import { expectStorageError as expectCode } from '../support/expect';
import { prng } from '../support/prng';

const PAGE = 4096;
const PAGES = 200;
const ALL = Array.from({ length: PAGES }, (_, p) => p);
const ZERO = new Uint8Array(PAGE);

const options = (dir: string, slab: Slab, pageCount = PAGES): ShardStorageOptions => ({
  dir, pageSize: PAGE, pageCount, cacheBytesMax: 32 * PAGE, slab, segmentBytesMax: 32 * 1024,
});

/** The parent shard's replica ('P') on a disk of its own, and what writes its records. */
interface Parent {
  disk: SimDisk;
  slab: Slab;
  st: ShardStorage;
  rnd: () => number;
  seq: number;
}

function parent(seed: number): Parent {
  const disk = new SimDisk();
  const slab = new Slab({ slotBytes: PAGE, slotCount: 1024 });
  return { disk, slab, st: ShardStorage.open(disk, options('P', slab)), rnd: prng(seed), seq: seed * 100_000 };
}

/** A page of `seed`'s content (never all zero). */
function content(seed: number): Uint8Array {
  const d = new Uint8Array(PAGE);
  const dv = new DataView(d.buffer);
  for (let i = 0; i < PAGE; i += 64) dv.setUint32(i, (Math.imul(seed, 2654435761) + i) >>> 0 || 1, true);
  d[PAGE - 1] = 1;
  return d;
}

/**
 * Appends `n` records at `term` (page writes of 1..5 pages, mostly overwrites of a hot set, one
 * in eight pages all zero, one record in ten a noop), syncs and applies them.
 */
function write(p: Parent, n: number, term: number): void {
  for (let k = 0; k < n; k++) {
    const lsn = p.st.log.lastLsn + 1;
    if (p.rnd() < 0.1) {
      p.st.log.write([{ term, kind: RecordKind.Noop, payload: new Uint8Array(0) }]);
    } else {
      const count = 1 + Math.floor(p.rnd() * 5);
      const entries = Array.from({ length: count }, () => {
        const page = p.rnd() < 0.7 ? Math.floor(p.rnd() * 40) : Math.floor(p.rnd() * PAGES);
        return { page, data: p.rnd() < 0.125 ? new Uint8Array(PAGE) : content(++p.seq) };
      });
      p.st.log.write([{ term, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, entries) }]);
    }
    assert.equal(p.st.log.lastLsn, lsn);
  }
  p.st.log.sync();
  const from = p.st.store.appliedLsn + 1;
  for (const r of p.st.log.read(from, p.st.log.lastLsn, { bytesMax: 64 * 1024 * 1024 })) p.st.store.apply(r);
}

/**
 * A parent (`parent(seed)`) whose history crosses an image: `before` records in term 1, a
 * checkpoint, then `after` records in term `afterTerm`; its applied LSN is returned beside it.
 */
function parentAcrossAnImage(seed: number, before: number, after: number, afterTerm = 1): { p: Parent; lsn: number } {
  const p = parent(seed);
  write(p, before, 1);
  p.st.store.checkpoint();
  write(p, after, afterTerm);
  return { p, lsn: p.st.store.appliedLsn };
}

/** Every page of `store` as of `lsn` (default its applied LSN). */
function pagesOf(store: PageStore, lsn?: number): Uint8Array[] {
  return store.getPages(ALL, lsn);
}

/** What an export must leave as it was: the parent's files, pointer, floor, images, versions and log. */
function parentState(p: Parent): string {
  const s = p.st.store.stats();
  return JSON.stringify({
    files: p.disk.list('P').sort(),
    logFiles: p.disk.list('P/log').sort(),
    pointer: p.disk.exists('P/checkpoint') ? Array.from(p.disk.fileBytes('P/checkpoint')) : null,
    store: [s.appliedLsn, s.imageLsn, s.oldestReadableLsn, s.images, s.versions],
    log: [p.st.log.firstLsn, p.st.log.lastLsn, p.st.log.lastTerm, p.st.log.syncedLsn],
  });
}

/** Creates a new shard directory for a child replica (the caller of an export does). */
function childDir(disk: Disk, dir: string): string {
  disk.mkdirp(dir);
  disk.fsyncDir('');
  return dir;
}

/**
 * Opens the replica seeded in `dir` and checks it: its pages are `expected`, its applied and
 * oldest readable LSN are `lsn`, its log is empty after `lsn` (last term `term`), and a record
 * appended at lsn + 1 applies and reads back.
 */
function checkSeeded(disk: Disk, slab: Slab, dir: string, lsn: number, term: number, expected: readonly Uint8Array[], what: string): void {
  const child = ShardStorage.open(disk, options(dir, slab));
  try {
    assert.equal(disk.exists(`${dir}/install`), false, `${what}: the open finished the seed`);
    assert.deepEqual(pagesOf(child.store), expected, `${what}: the child's pages are the parent's as of ${lsn}`);
    assert.deepEqual([child.store.appliedLsn, child.store.oldestReadableLsn], [lsn, lsn], what);
    assert.deepEqual([child.log.firstLsn, child.log.lastLsn, child.log.lastTerm], [lsn + 1, lsn, term], what);
    assert.equal(PageStore.imageLsn(disk, dir), lsn, `${what}: the pointer names the image`);
    const data = content(9_999_999 + lsn);
    const next = child.log.write([{ term: Math.max(term, 1), kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, [{ page: 7, data }]) }]);
    assert.equal(next, lsn + 1, `${what}: the log continues after the branch point`);
    child.log.sync();
    child.store.apply(child.log.read(next, next)[0]!);
    assert.deepEqual(child.store.getPage(7), data, `${what}: the appended page reads back`);
    assert.deepEqual(child.store.getPage(7, lsn), expected[7], `${what}: and as of the branch point it is the parent's`);
  } finally {
    child.close();
  }
}

/** Exports `p`'s pages at `lsn` into a new child dir, seeds it, and checks the child and the parent. */
function exportAndSeed(p: Parent, dir: string, lsn: number, what: string): void {
  const term = p.st.log.termAt(lsn);
  const expected = pagesOf(p.st.store, lsn);
  const before = parentState(p);
  childDir(p.disk, dir);
  const out = p.st.store.exportImage(lsn, dir, { term });
  assert.deepEqual(out, { lsn, path: `${dir}/${imageFileName(lsn)}` });
  assert.equal(parentState(p), before, `${what}: the export changed nothing of the parent`);
  assert.deepEqual(p.disk.list(dir), [imageFileName(lsn)], `${what}: one image file, no temp file`);
  const r = ImageReader.open(p.disk, out.path);
  try {
    assert.deepEqual([r.lsn, r.term, r.pageSize, r.pageCount], [lsn, term, PAGE, PAGES], what);
    const nonZero = expected.filter((d) => !d.every((b) => b === 0)).length;
    assert.equal(r.entries, nonZero, `${what}: all-zero pages are left out`);
    assert.ok(lsn > 0 || r.entries === 0);
  } finally {
    r.close();
  }
  ShardStorage.seedFromImage(p.disk, dir, lsn, term);
  checkSeeded(p.disk, p.slab, dir, lsn, term, expected, what);
}

/** Runs an export's steps to the end, calling `between` after each step but the last. */
function runSteps(steps: Generator<CheckpointStep, { lsn: number; path: string }, void>, between: (n: number) => void): { result: { lsn: number; path: string }; steps: number } {
  let n = 0;
  for (;;) {
    const r = steps.next();
    n++;
    if (r.done === true) return { result: r.value, steps: n };
    between(n);
  }
}

describe('PageStore export and ShardStorage seed (branches)', () => {
  it('exports at LSN 0, below and at the only image and at the applied LSN while the floor is 0; a seeded replica reads the parent as of it and appends after it', () => {
    const p = parent(1);
    write(p, 60, 1);
    const image = p.st.store.checkpoint().lsn;
    write(p, 40, 2);
    assert.deepEqual([p.st.store.oldestReadableLsn, p.st.store.stats().imageLsn, image], [0, image, 60]);
    const applied = p.st.store.appliedLsn;
    exportAndSeed(p, 'C0', 0, 'LSN 0');
    exportAndSeed(p, 'C1', 30, 'before the only image (the empty volume is the base)');
    exportAndSeed(p, 'C2', image, "at the image's LSN");
    exportAndSeed(p, 'C3', image + 15, 'between the image and the applied LSN');
    exportAndSeed(p, 'C4', applied, 'the applied LSN');
    // The image at LSN 0 holds no page: its header and the checksum of its empty table.
    assert.equal(p.disk.fileBytes(`C0/${imageFileName(0)}`).length, IMAGE_BYTES_MIN);
    // The exports changed nothing: a checkpoint of the parent runs as before.
    assert.equal(p.st.store.checkpoint().lsn, applied);
    p.st.close();
  });

  it('exports in a size smaller than the store (a branch of a volume whose replica grew since): its header says it, a page past it fails the export, a larger size is refused', () => {
    const p = parent(31);
    write(p, 50, 1);
    p.st.grow(PAGES * 2);
    const lsn = p.st.store.appliedLsn;
    const expected = pagesOf(p.st.store, lsn);
    const out = p.st.store.exportImage(lsn, childDir(p.disk, 'S'), { pageCount: PAGES });
    const r = ImageReader.open(p.disk, out.path);
    assert.equal(r.pageCount, PAGES);
    r.close();
    ShardStorage.seedFromImage(p.disk, 'S', lsn, 0);
    checkSeeded(p.disk, p.slab, 'S', lsn, 0, expected, 'in the smaller size');
    // A page past that size, written once the replica grew: not in an image of the smaller size.
    p.st.log.write([{ term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, [{ page: PAGES + 7, data: content(7) }]) }]);
    p.st.log.sync();
    p.st.store.apply(p.st.log.read(lsn + 1, lsn + 1)[0]!);
    expectCode(() => p.st.store.exportImage(lsn + 1, childDir(p.disk, 'T'), { pageCount: PAGES }), 'out_of_range');
    assert.deepEqual(p.disk.list('T').filter((n) => !n.endsWith('.discard')), [], 'no image left behind');
    expectCode(() => p.st.store.exportImage(lsn + 1, childDir(p.disk, 'U'), { pageCount: PAGES * 2 + 1 }), 'bad_request');
    assert.equal(ImageReader.open(p.disk, p.st.store.exportImage(lsn + 1, 'U').path).pageCount, PAGES * 2, 'by default, the store\'s size');
    p.st.close();
  });

  it('exports at the floor, between two images, at the newest image and at the applied LSN of a store with checkpoints and a trimmed log; the seeds survive a power cut', () => {
    const p = parent(2);
    const images: number[] = [];
    for (let round = 1; round <= 4; round++) {
      write(p, 50, round);
      images.push(p.st.store.checkpoint().lsn);
    }
    write(p, 30, 5);
    const floor = p.st.store.oldestReadableLsn;
    const newest = images[images.length - 1]!;
    const applied = p.st.store.appliedLsn;
    assert.equal(floor, images[2], 'two images kept, the older one the floor');
    assert.ok(p.st.log.firstLsn > 1, 'the log was trimmed');
    const cases: Array<[string, number, string]> = [
      ['C0', floor, 'at the floor (the older image)'],
      ['C1', floor + 20, 'between the two images'],
      ['C2', newest, 'at the newest image'],
      ['C3', newest + 1, 'just after the newest image'],
      ['C4', applied, 'the applied LSN'],
    ];
    const expected = new Map<string, Uint8Array[]>();
    for (const [dir, lsn, what] of cases) {
      expected.set(dir, pagesOf(p.st.store, lsn));
      exportAndSeed(p, dir, lsn, what);
    }
    p.st.close();
    p.disk.powerCut();
    for (const [dir, lsn, what] of cases) {
      const child = ShardStorage.open(p.disk, options(dir, p.slab));
      try {
        // The record appended by the check (at lsn + 1) was synced: the child reads it still.
        assert.equal(child.store.appliedLsn, lsn, `${what}, after a power cut`);
        assert.equal(child.log.lastLsn, lsn + 1, `${what}, after a power cut`);
        const want = expected.get(dir)!;
        assert.deepEqual(pagesOf(child.store).filter((_, i) => i !== 7), want.filter((_, i) => i !== 7), `${what}, after a power cut`);
      } finally {
        child.close();
      }
    }
  });

  it('records applied to the parent between the steps of an export are not in the image; a checkpoint meanwhile is refused, and runs after it', () => {
    const { p, lsn } = parentAcrossAnImage(3, 80, 60);
    const expected = pagesOf(p.st.store, lsn);
    childDir(p.disk, 'C');
    const { result, steps } = runSteps(p.st.store.exportImageSteps(lsn, 'C', { term: 1 }), () => {
      expectCode(() => p.st.store.checkpointSteps().next(), 'invariant');
      expectCode(() => p.st.store.checkpoint(), 'invariant');
      expectCode(() => p.st.store.exportImageSteps(lsn, 'C').next(), 'invariant');
      write(p, 4, 2);
    });
    assert.ok(steps >= 5, `the export ran in ${steps} steps`);
    assert.equal(result.lsn, lsn);
    assert.ok(p.st.store.appliedLsn > lsn);
    assert.notDeepEqual(pagesOf(p.st.store), expected, 'the records applied meanwhile changed pages');
    assert.deepEqual(pagesOf(p.st.store, lsn), expected, 'the parent still reads its pages as of the export');
    ShardStorage.seedFromImage(p.disk, 'C', lsn, 1);
    checkSeeded(p.disk, p.slab, 'C', lsn, 1, expected, 'applied between steps');
    assert.equal(p.st.store.checkpoint().lsn, p.st.store.appliedLsn, 'a checkpoint runs once the export is done');
    p.st.close();
  });

  it('an export is refused while a checkpoint runs, and creates nothing', () => {
    const p = parent(4);
    write(p, 80, 1);
    childDir(p.disk, 'C');
    const checkpoint = p.st.store.checkpointSteps();
    assert.equal(checkpoint.next().done, false);
    expectCode(() => p.st.store.exportImage(10, 'C'), 'invariant');
    expectCode(() => p.st.store.exportImageSteps(10, 'C').next(), 'invariant');
    assert.deepEqual(p.disk.list('C'), []);
    while (checkpoint.next().done !== true);
    assert.equal(p.st.store.exportImage(10, 'C', { term: 1 }).lsn, 10, 'the export runs once the checkpoint is done');
    p.st.close();
  });

  it('refuses an LSN outside the readable range, a bad term and a bad destination with their codes, before it creates anything', () => {
    const p = parent(5);
    for (let round = 1; round <= 3; round++) {
      write(p, 40, 1);
      p.st.store.checkpoint();
    }
    write(p, 10, 1);
    const floor = p.st.store.oldestReadableLsn;
    const applied = p.st.store.appliedLsn;
    assert.ok(floor > 0);
    childDir(p.disk, 'C');
    const before = parentState(p);
    const refused: Array<[() => unknown, string]> = [
      [() => p.st.store.exportImage(floor - 1, 'C'), 'trimmed'],
      [() => p.st.store.exportImage(0, 'C'), 'trimmed'],
      [() => p.st.store.exportImage(applied + 1, 'C', { term: 1 }), 'future_lsn'],
      [() => p.st.store.exportImage(-1, 'C'), 'bad_request'],
      [() => p.st.store.exportImage(floor + 0.5, 'C'), 'bad_request'],
      [() => p.st.store.exportImage(Number.NaN, 'C'), 'bad_request'],
      [() => p.st.store.exportImage(undefined as unknown as number, 'C'), 'bad_request'],
      [() => p.st.store.exportImage(applied, 'C', { term: -1 }), 'bad_request'],
      [() => p.st.store.exportImage(applied, 'C', { term: 1.5 }), 'bad_request'],
      [() => p.st.store.exportImage(applied, 'P', { term: 1 }), 'bad_request'], // the store's own dir
      [() => p.st.store.exportImage(applied, 'P/', { term: 1 }), 'bad_request'],
      [() => p.st.store.exportImage(applied, 'missing', { term: 1 }), 'bad_request'],
      [() => p.st.store.exportImage(applied, '', { term: 1 }), 'bad_request'],
      [() => p.st.store.exportImageSteps(applied + 1, 'C').next(), 'future_lsn'],
    ];
    for (const [fn, code] of refused) {
      const e = expectCode(fn, code);
      // A bad term is refused by its own check, before anything else looks at it.
      if (/term: (-1|1\.5) /.test(fn.toString())) assert.match(e.message, /^export term -?[\d.]+ is not a non-negative integer$/);
      assert.deepEqual(p.disk.list('C'), [], `nothing created (${code})`);
      assert.equal(p.disk.exists('missing'), false);
    }
    assert.equal(parentState(p), before, 'the parent is as it was');
    // The refusals left the one-at-a-time flag free: a checkpoint and an export run.
    write(p, 5, 1);
    assert.equal(p.st.store.checkpoint().lsn, p.st.store.appliedLsn);
    assert.equal(p.st.store.exportImage(p.st.store.appliedLsn, 'C', { term: 1 }).lsn, p.st.store.appliedLsn);
    p.st.close();

    // LSN 0 has term 0.
    const q = parent(6);
    write(q, 10, 1);
    childDir(q.disk, 'C');
    expectCode(() => q.st.store.exportImage(0, 'C', { term: 1 }), 'bad_request');
    assert.deepEqual(q.disk.list('C'), []);
    q.st.close();
  });

  it('an export ended early (return(), the store closed, a failed write) leaves no image file; the next export runs', () => {
    const { p, lsn: applied } = parentAcrossAnImage(7, 80, 40);
    const lsn = applied - 5;
    childDir(p.disk, 'C');
    const before = parentState(p);
    const files = (): string[] => p.disk.list('C');

    // Abandoned with return() while the image is being written.
    const steps = p.st.store.exportImageSteps(lsn, 'C', { term: 1 });
    assert.equal(steps.next().done, false);
    assert.deepEqual(files(), [], 'the first step creates no file');
    while (files().length === 0) assert.equal(steps.next().done, false);
    assert.deepEqual(files(), [`${imageFileName(lsn)}.tmp`], 'the image is being written');
    steps.return(undefined as never);
    assert.deepEqual(files(), [], 'the partial image is removed');

    // A failed write of the image.
    p.disk.failWrite({ path: 'C/' });
    expectCode(() => p.st.store.exportImage(lsn, 'C', { term: 1 }), 'io_error');
    assert.deepEqual(files(), [], 'the partial image is removed');
    assert.equal(parentState(p), before, 'the parent is as it was');

    // The export runs after both, and a checkpoint too.
    assert.equal(p.st.store.exportImage(lsn, 'C', { term: 1 }).lsn, lsn);
    assert.deepEqual(files(), [imageFileName(lsn)]);
    p.disk.remove(`C/${imageFileName(lsn)}`);

    // The store closed between steps: the next step throws closed.
    const again = p.st.store.exportImageSteps(lsn, 'C', { term: 1 });
    again.next();
    while (files().length === 0) assert.equal(again.next().done, false);
    p.st.close();
    expectCode(() => again.next(), 'closed');
    assert.deepEqual(files(), [], 'the partial image is removed');
    expectCode(() => p.st.store.exportImage(lsn, 'C', { term: 1 }), 'closed');
  });

  it('seedFromImage refuses a directory with a replica\'s state, a missing image and one whose header differs, and writes no marker', () => {
    const p = parent(8);
    write(p, 60, 2);
    p.st.store.checkpoint();
    const lsn = p.st.store.appliedLsn;
    /** A child dir prepared by `prepare` (its replica's storage open), then the image exported into it. */
    const prepared = (dir: string, prepare: (st: ShardStorage) => void): string => {
      childDir(p.disk, dir);
      const st = ShardStorage.open(p.disk, options(dir, p.slab));
      try {
        prepare(st);
      } finally {
        st.close();
      }
      p.st.store.exportImage(lsn, dir, { term: 2 });
      return dir;
    };
    const withVote = prepared('V', (st) => st.save({ term: 3, votedFor: null }));
    const withRecord = prepared('R', (st) => {
      st.log.write([{ term: 1, kind: RecordKind.Noop, payload: new Uint8Array(0) }]);
      st.log.sync();
    });
    const withPointer = prepared('K', (st) => {
      st.log.write([{ term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, [{ page: 1, data: content(1) }]) }]);
      st.log.sync();
      st.store.apply(st.log.read(1, 1)[0]!);
      st.store.checkpoint(); // its pointer, and its log trimmed: empty, but not at LSN 0
    });
    const withReset = prepared('T', (st) => st.log.reset(50, 1)); // an empty log that continues LSN 49
    // An LSN or term that is not one, and a term at LSN 0 (whose term is 0): refused before the directory is looked at.
    for (const [l, t, what] of [[-1, 2, /are not non-negative integers/], [lsn, 1.5, /are not non-negative integers/], [0, 2, /term 2 at LSN 0, whose term is 0/]] as const) {
      assert.match(expectCode(() => ShardStorage.seedFromImage(p.disk, withVote, l, t), 'bad_request').message, what);
    }
    for (const [dir, what] of [[withVote, /raft/], [withRecord, /log is not empty at LSN 0.*1\.\.1/], [withPointer, /checkpoint pointer/], [withReset, /log is not empty at LSN 0.*50\.\.49/]] as const) {
      const e = expectCode(() => ShardStorage.seedFromImage(p.disk, dir, lsn, 2), 'invariant');
      assert.match(e.message, what);
      assert.ok(e.message.includes(dir), e.message);
      assert.equal(p.disk.exists(`${dir}/install`), false, `${dir}: no marker`);
    }
    // The state is untouched: the replica with a record opens on its log.
    const r = ShardStorage.open(p.disk, options(withRecord, p.slab));
    assert.deepEqual([r.log.firstLsn, r.log.lastLsn, r.newestLsn()], [1, 1, 0]);
    r.close();

    // A seed done: a second one is refused (its marker is state), and so after the open.
    childDir(p.disk, 'S');
    p.st.store.exportImage(lsn, 'S', { term: 2 });
    ShardStorage.seedFromImage(p.disk, 'S', lsn, 2);
    assert.match(expectCode(() => ShardStorage.seedFromImage(p.disk, 'S', lsn, 2), 'invariant').message, /install/);
    ShardStorage.open(p.disk, options('S', p.slab)).close();
    assert.match(expectCode(() => ShardStorage.seedFromImage(p.disk, 'S', lsn, 2), 'invariant').message, /checkpoint pointer/);

    // The image: missing, of another term or LSN, damaged.
    childDir(p.disk, 'M');
    expectCode(() => ShardStorage.seedFromImage(p.disk, 'M', lsn, 2), 'bad_request');
    expectCode(() => ShardStorage.seedFromImage(p.disk, 'missing', lsn, 2), 'bad_request');
    p.st.store.exportImage(lsn, 'M', { term: 2 });
    assert.match(expectCode(() => ShardStorage.seedFromImage(p.disk, 'M', lsn, 3), 'bad_request').message, /holds lsn \d+ term 2, not \d+\/3/);
    p.disk.rename(`M/${imageFileName(lsn)}`, `M/${imageFileName(lsn - 1)}`); // an image under another LSN's name
    assert.match(expectCode(() => ShardStorage.seedFromImage(p.disk, 'M', lsn - 1, 2), 'bad_request').message, /holds lsn/);
    p.disk.remove(`M/${imageFileName(lsn - 1)}`);
    p.st.store.exportImage(lsn, 'M', { term: 2 });
    p.disk.flipBits(`M/${imageFileName(lsn)}`, 13, 1);
    assert.throws(() => ShardStorage.seedFromImage(p.disk, 'M', lsn, 2), (e: unknown) => e instanceof CorruptionError);
    expectCode(() => ShardStorage.seedFromImage(p.disk, 'M', -1, 0), 'bad_request');
    expectCode(() => ShardStorage.seedFromImage(p.disk, 'M', 0, 1), 'bad_request');
    assert.equal(p.disk.exists('M/install'), false, 'no marker');
    p.st.close();
  });

  it('a seed after an open of the empty replica (its log created at LSN 0) is accepted; image files of another LSN are removed', () => {
    const { p, lsn } = parentAcrossAnImage(9, 60, 20);
    childDir(p.disk, 'C');
    ShardStorage.open(p.disk, options('C', p.slab)).close(); // a new replica's log, empty at LSN 0
    p.st.store.exportImage(lsn - 10, 'C', { term: 1 }); // an earlier attempt at another LSN
    p.st.store.exportImage(lsn, 'C', { term: 1 });
    ShardStorage.seedFromImage(p.disk, 'C', lsn, 1);
    assert.equal(p.disk.exists(`C/${imageFileName(lsn - 10)}`), false, 'the other image is removed');
    checkSeeded(p.disk, p.slab, 'C', lsn, 1, pagesOf(p.st.store, lsn), 'seeded after an open');
    p.st.close();
  });

  it('a crash with the image written but no marker: the open is an empty replica at LSN 0, the image not its state; the seed done again then opens on it', () => {
    const { p, lsn } = parentAcrossAnImage(10, 60, 20);
    const expected = pagesOf(p.st.store, lsn);
    childDir(p.disk, 'C');
    p.st.store.exportImage(lsn, 'C', { term: 1 });
    p.st.close();
    p.disk.powerCut();
    assert.deepEqual(p.disk.list('C'), [imageFileName(lsn)], 'the image is durable');
    const empty = ShardStorage.open(p.disk, options('C', p.slab));
    try {
      assert.deepEqual([empty.store.appliedLsn, empty.store.oldestReadableLsn, empty.log.firstLsn, empty.log.lastLsn, empty.newestLsn()], [0, 0, 1, 0, 0]);
      assert.deepEqual(pagesOf(empty.store), ALL.map(() => ZERO), 'the image is not taken as state');
    } finally {
      empty.close();
    }
    // Done again: the export (over the leftover image) and the seed.
    const again = ShardStorage.open(p.disk, options('P', p.slab));
    assert.equal(again.store.appliedLsn, PageStore.imageLsn(p.disk, 'P'));
    p.st = again;
    // The parent reopens at its image (a replica replays further once it knows the commit LSN).
    for (const r of again.log.read(again.store.appliedLsn + 1, lsn, { bytesMax: 64 * 1024 * 1024 })) again.store.apply(r);
    assert.deepEqual(pagesOf(again.store, lsn), expected);
    again.store.exportImage(lsn, 'C', { term: 1 });
    ShardStorage.seedFromImage(p.disk, 'C', lsn, 1);
    checkSeeded(p.disk, p.slab, 'C', lsn, 1, expected, 'seeded again');
    again.close();
  });

  it('a power cut right after the seed (the marker written, nothing else): the open finishes it, and a reopen after another power cut finds it', () => {
    const p = parent(11);
    write(p, 60, 3);
    const lsn = p.st.store.appliedLsn;
    const expected = pagesOf(p.st.store, lsn);
    childDir(p.disk, 'C');
    p.st.store.exportImage(lsn, 'C', { term: 3 });
    ShardStorage.seedFromImage(p.disk, 'C', lsn, 3);
    p.st.close();
    p.disk.powerCut();
    assert.equal(p.disk.exists('C/install'), true, 'the marker is durable');
    assert.equal(PageStore.hasPointer(p.disk, 'C'), false, 'no pointer yet');
    checkSeeded(p.disk, p.slab, 'C', lsn, 3, expected, 'after a power cut');
    p.disk.powerCut();
    const child = ShardStorage.open(p.disk, options('C', p.slab));
    try {
      assert.deepEqual([child.store.oldestReadableLsn, child.log.firstLsn, child.log.lastLsn], [lsn, lsn + 1, lsn + 1]);
    } finally {
      child.close();
    }
  });

  it('a crash at every step of the export, the seed and the open that finishes it, then a power cut: the open is either an empty replica (the seed is done again) or the complete seed', function () {
    this.timeout(120_000);
    let completed = false;
    let empty = 0;
    let seeded = 0;
    for (let n = 0; !completed; n++) {
      assert.ok(n < 200, 'the export and the seed finish in a bounded number of steps');
      const { p, lsn } = parentAcrossAnImage(12, 60, 30, 2);
      const expected = pagesOf(p.st.store, lsn);
      childDir(p.disk, 'C');
      let seededBeforeCrash = false;
      p.disk.crashAfter(n);
      try {
        p.st.store.exportImage(lsn, 'C', { term: 2 });
        ShardStorage.seedFromImage(p.disk, 'C', lsn, 2);
        seededBeforeCrash = true;
        ShardStorage.open(p.disk, options('C', p.slab)).close();
        completed = true;
      } catch (e) {
        assert.ok(e instanceof SimulatedCrash, `crash expected after ${n} steps, got ${String(e)}`);
      }
      p.disk.powerCut();
      assert.equal(p.disk.exists('C'), true);
      const child = ShardStorage.open(p.disk, options('C', p.slab));
      const at = child.store.appliedLsn;
      try {
        if (at === 0) {
          assert.equal(seededBeforeCrash, false, 'a seed that returned is never lost');
          assert.deepEqual([child.log.firstLsn, child.log.lastLsn, child.newestLsn()], [1, 0, 0], `after ${n} steps`);
          assert.deepEqual(pagesOf(child.store), ALL.map(() => ZERO), `after ${n} steps: no state`);
        } else {
          assert.equal(at, lsn, `after ${n} steps`);
          assert.deepEqual(pagesOf(child.store), expected, `after ${n} steps`);
        }
      } finally {
        child.close();
      }
      if (at === 0) {
        empty++;
        // Done again, from the parent reopened (the crash cut its handles too).
        const again = ShardStorage.open(p.disk, options('P', p.slab));
        for (const r of again.log.read(again.store.appliedLsn + 1, lsn, { bytesMax: 64 * 1024 * 1024 })) again.store.apply(r);
        again.store.exportImage(lsn, 'C', { term: 2 });
        ShardStorage.seedFromImage(p.disk, 'C', lsn, 2);
        again.close();
        checkSeeded(p.disk, p.slab, 'C', lsn, 2, expected, `seeded again after ${n} steps`);
      } else {
        seeded++;
        checkSeeded(p.disk, p.slab, 'C', lsn, 2, expected, `after ${n} steps`);
      }
    }
    assert.ok(empty > 5 && seeded > 5, `the crashes fell before (${empty}) and after (${seeded}) the marker`);
  });

  it('on a real disk, with the image flushed off the thread: the steps yield the flushes, the seeded replica reads the parent', async () => {
    const root = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-export-'));
    try {
      const disk = new RealDisk(root);
      const slab = new Slab({ slotBytes: PAGE, slotCount: 1024 });
      const pageCount = 1024; // an image of 4 MiB: several write buffers
      const st = ShardStorage.open(disk, options('P', slab, pageCount));
      for (let at = 0; at < pageCount; at += 128) {
        st.log.write([{ term: 1, kind: RecordKind.PageWrite, payload: encodePageWrite(PAGE, Array.from({ length: 128 }, (_, k) => ({ page: at + k, data: content(at + k) }))) }]);
      }
      st.log.sync();
      for (const r of st.log.read(1, st.log.lastLsn, { bytesMax: 64 * 1024 * 1024 })) st.store.apply(r);
      const lsn = st.store.appliedLsn;
      disk.mkdirp('C');
      disk.fsyncDir('');
      const steps = st.store.exportImageSteps(lsn, 'C', { term: 1, flushOffThread: true });
      let flushes = 0;
      let result: { lsn: number; path: string };
      for (;;) {
        const r = steps.next();
        if (r.done === true) {
          result = r.value;
          break;
        }
        if (r.value !== undefined) {
          flushes++;
          await r.value;
        }
      }
      assert.ok(flushes >= 3, `${flushes} flushes off the thread`);
      assert.equal(result.lsn, lsn);
      st.close();
      ShardStorage.seedFromImage(disk, 'C', lsn, 1);
      const child = ShardStorage.open(disk, options('C', slab, pageCount));
      try {
        assert.deepEqual([child.store.appliedLsn, child.log.lastLsn, child.log.firstLsn], [lsn, lsn, lsn + 1]);
        for (let at = 0; at < pageCount; at += 256) {
          const pages = Array.from({ length: 256 }, (_, k) => at + k);
          assert.deepEqual(child.store.getPages(pages), pages.map((pg) => content(pg)));
        }
      } finally {
        child.close();
      }
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('StorageError codes of the export are the ones getPage uses for the same LSNs', () => {
    const p = parent(13);
    write(p, 40, 1);
    p.st.store.checkpoint();
    write(p, 40, 1);
    p.st.store.checkpoint();
    childDir(p.disk, 'C');
    for (const lsn of [p.st.store.oldestReadableLsn - 1, p.st.store.appliedLsn + 1, -2]) {
      let code: string | undefined;
      try {
        p.st.store.getPage(0, lsn);
      } catch (e) {
        code = (e as StorageError).code;
      }
      assert.ok(code !== undefined);
      expectCode(() => p.st.store.exportImage(lsn, 'C', { term: 1 }), code);
    }
    p.st.close();
  });
});
