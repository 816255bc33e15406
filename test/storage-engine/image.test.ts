/** Checkpoint images: write/read round trip, zero pages, coalesced reads, corruption detection, crash safety. */
import { strict as assert } from 'node:assert';
import { crc32c } from '../../storage-engine/crc32c';
import { CorruptionError, StorageError } from '../../storage-engine/errors';
import {
  IMAGE_HEADER_BYTES,
  IMAGE_READ_BYTES_MAX,
  IMAGE_TABLE_ENTRY_BYTES,
  IMAGE_WRITE_BUFFER_BYTES,
  ImageReader,
  ImageWriter,
  imageFileName,
  isImageTempFileName,
  parseImageFileName,
} from '../../storage-engine/image';
import { SimDisk, SimulatedCrash } from '../../storage-engine/sim-disk';

const DIR = 'shard/img';
const PAGE = 4096;

function pageData(page: number, size = PAGE): Uint8Array {
  const d = new Uint8Array(size);
  for (let i = 0; i < size; i += 16) d[i] = (page * 13 + i / 16) & 0xff;
  d[1] = 1; // never all zero
  return d;
}

function setupDisk(): SimDisk {
  const disk = new SimDisk();
  disk.mkdirp(DIR);
  disk.fsyncDir('');
  disk.fsyncDir('shard');
  return disk;
}

/** Writes an image of `pages` (page -> data), pages in ascending order. */
function writeImage(disk: SimDisk, lsn: number, pages: Map<number, Uint8Array>, pageCount = 1000, size: 4096 | 8192 = PAGE): string {
  const w = ImageWriter.create(disk, { dir: DIR, lsn, term: 3, pageSize: size, pageCount, entriesMax: pages.size });
  for (const p of [...pages.keys()].sort((a, b) => a - b)) w.addPage(p, pages.get(p)!);
  return w.finish().path;
}

function expectCorruption(fn: () => unknown, text?: string): CorruptionError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof CorruptionError, `expected a CorruptionError, got ${String(caught)}`);
  if (text !== undefined) assert.ok(caught.message.includes(text), `"${caught.message}" mentions "${text}"`);
  return caught;
}

describe('image', () => {
  it('names files image-<16 hex>.img and recognizes temp files', () => {
    assert.equal(imageFileName(0x1234), 'image-0000000000001234.img');
    assert.equal(parseImageFileName('image-0000000000001234.img'), 0x1234);
    assert.equal(parseImageFileName('image-0000000000001234.img.tmp'), undefined);
    assert.equal(parseImageFileName('checkpoint'), undefined);
    assert.ok(isImageTempFileName('image-0000000000001234.img.tmp'));
  });

  for (const size of [4096, 8192] as const) {
    it(`round-trips pages of ${size} bytes; zero and unwritten pages are not stored and read as zeros`, () => {
      const disk = setupDisk();
      const pages = new Map<number, Uint8Array>();
      for (const p of [0, 1, 2, 10, 500, 999]) pages.set(p, pageData(p, size));
      pages.set(7, new Uint8Array(size)); // all zero: omitted
      const path = writeImage(disk, 77, pages, 1000, size);
      assert.deepEqual(disk.list(DIR), [imageFileName(77)], 'no temp file left');
      const r = ImageReader.open(disk, path);
      assert.equal(r.lsn, 77);
      assert.equal(r.term, 3);
      assert.equal(r.pageSize, size);
      assert.equal(r.pageCount, 1000);
      assert.equal(r.entries, 6);
      const out = new Uint8Array(size);
      for (const p of [0, 1, 2, 10, 500, 999]) {
        assert.ok(r.has(p));
        assert.equal(r.readPage(p, out), true);
        assert.deepEqual(out, pageData(p, size));
      }
      for (const p of [3, 7, 998]) {
        assert.equal(r.has(p), false);
        out.fill(9);
        assert.equal(r.readPage(p, out), false);
        assert.deepEqual(out, new Uint8Array(size));
      }
      r.close();
      assert.throws(() => r.readPage(0, out), (e: unknown) => e instanceof StorageError && e.code === 'closed');
    });
  }

  it('writes an empty image', () => {
    const disk = setupDisk();
    const r = ImageReader.open(disk, writeImage(disk, 0, new Map()));
    assert.equal(r.entries, 0);
    assert.equal(r.readPage(5, new Uint8Array(PAGE)), false);
  });

  it('flushes each buffer it writes, so that finishing a large image flushes only the rest', () => {
    const disk = setupDisk();
    const perBuffer = IMAGE_WRITE_BUFFER_BYTES / PAGE;
    const count = 2 * perBuffer + 3;
    const w = ImageWriter.create(disk, { dir: DIR, lsn: 9, term: 3, pageSize: PAGE, pageCount: count, entriesMax: count });
    const syncsAt = (): number => disk.counters.fdatasyncs;
    const before = syncsAt();
    for (let p = 0; p < count; p++) {
      w.addPage(p, pageData(p));
      // A buffer is written (and flushed) when the next page no longer fits in it.
      assert.equal(syncsAt() - before, Math.floor(p / perBuffer), `after page ${p}`);
    }
    const path = w.finish().path;
    assert.equal(syncsAt() - before, 4, 'the last buffer, then header and table');
    const r = ImageReader.open(disk, path);
    for (const p of [0, perBuffer, count - 1]) {
      const out = new Uint8Array(PAGE);
      assert.equal(r.readPage(p, out), true);
      assert.deepEqual(out, pageData(p));
    }
  });

  it('coalesces 32 adjacent pages into one disk read, and splits at the read bound and at gaps', () => {
    const disk = setupDisk();
    const pages = new Map<number, Uint8Array>();
    for (let p = 100; p < 200; p++) pages.set(p, pageData(p));
    pages.set(300, pageData(300));
    const r = ImageReader.open(disk, writeImage(disk, 5, pages));
    const want = Array.from({ length: 32 }, (_, i) => 131 - i); // any order
    const outs = want.map(() => new Uint8Array(PAGE));
    let before = disk.counters.reads;
    r.readPages(want, outs);
    assert.equal(disk.counters.reads - before, 1, '32 adjacent pages -> 1 read');
    want.forEach((p, i) => assert.deepEqual(outs[i], pageData(p)));

    // 100 adjacent pages exceed IMAGE_READ_BYTES_MAX (64 pages): 2 reads.
    const all = Array.from({ length: 100 }, (_, i) => 100 + i);
    const outs2 = all.map(() => new Uint8Array(PAGE));
    before = disk.counters.reads;
    r.readPages(all, outs2);
    assert.equal(disk.counters.reads - before, Math.ceil((100 * PAGE) / IMAGE_READ_BYTES_MAX));
    all.forEach((p, i) => assert.deepEqual(outs2[i], pageData(p)));

    // A gap (page 150 not asked), a far page, a missing page and a duplicate: 3 reads.
    const mixed = [149, 151, 148, 300, 400, 151];
    const outs3 = mixed.map(() => new Uint8Array(PAGE));
    before = disk.counters.reads;
    const found = r.readPages(mixed, outs3);
    assert.equal(disk.counters.reads - before, 3);
    assert.deepEqual(found, [true, true, true, true, false, true]);
    mixed.forEach((p, i) => assert.deepEqual(outs3[i], p === 400 ? new Uint8Array(PAGE) : pageData(p)));
  });

  it('detects a corrupt header or table with CorruptionError', () => {
    const disk = setupDisk();
    const pages = new Map([[1, pageData(1)], [2, pageData(2)], [3, pageData(3)]]);
    const path = writeImage(disk, 9, pages);
    // Each field of the header and the table, one at a time.
    const offsets = [0, 8, 12, 20, 28, 32, 36, IMAGE_HEADER_BYTES, IMAGE_HEADER_BYTES + 8, IMAGE_HEADER_BYTES + 16, IMAGE_HEADER_BYTES + 3 * IMAGE_TABLE_ENTRY_BYTES];
    for (const off of offsets) {
      disk.flipBits(path, off, 1);
      expectCorruption(() => ImageReader.open(disk, path));
      disk.flipBits(path, off, 1); // flip back
      ImageReader.open(disk, path).close();
    }
    // A file cut short.
    const fh = disk.open(path);
    disk.truncate(fh, 30);
    disk.close(fh);
    expectCorruption(() => ImageReader.open(disk, path), 'shorter than the header');
  });

  it('an LSN or a term past 2^53 - 1 that passes the header\'s checksum is corrupt, not a number read wrong', () => {
    for (const field of [12, 20]) {
      const disk = setupDisk();
      const path = writeImage(disk, 9, new Map([[1, pageData(1)]]));
      const bytes = disk.fileBytes(path);
      const end = IMAGE_HEADER_BYTES + IMAGE_TABLE_ENTRY_BYTES;
      const dv = new DataView(bytes.buffer, bytes.byteOffset);
      dv.setUint32(field + 4, 0x0020_0000, true); // high word: the value is 2^53 and more
      dv.setUint32(end, crc32c(bytes, 0, 0, end), true);
      const fh = disk.open(path);
      disk.write(fh, bytes.subarray(0, end + 4), 0);
      disk.close(fh);
      const e = expectCorruption(() => ImageReader.open(disk, path), 'lsn or term exceeds 2^53 - 1');
      assert.equal(e.reports[0]!.offset, 12);
    }
  });

  it('rejects a table that passes its CRC but is out of place', () => {
    // A writer bug that stores data offsets past the end of the file must be caught by the structure check.
    const disk = setupDisk();
    const path = writeImage(disk, 9, new Map([[1, pageData(1)]]));
    const fh = disk.open(path);
    disk.truncate(fh, disk.size(fh) - 1);
    disk.close(fh);
    expectCorruption(() => ImageReader.open(disk, path), 'out of place');
  });

  it('detects a corrupt page and names it', () => {
    const disk = setupDisk();
    const pages = new Map<number, Uint8Array>();
    for (let p = 10; p < 20; p++) pages.set(p, pageData(p));
    const path = writeImage(disk, 9, pages);
    const r = ImageReader.open(disk, path);
    const dataStart = Math.ceil((IMAGE_HEADER_BYTES + 10 * IMAGE_TABLE_ENTRY_BYTES + 4) / PAGE) * PAGE;
    disk.flipBits(path, dataStart + 3 * PAGE + 100, 1); // page 13
    const e = expectCorruption(() => r.readPage(13, new Uint8Array(PAGE)), 'page 13');
    assert.ok(e.reports[0]!.reason.includes('page 13'));
    expectCorruption(() => r.readPages([11, 12, 13, 14], [11, 12, 13, 14].map(() => new Uint8Array(PAGE))), 'page 13');
    r.readPage(12, new Uint8Array(PAGE)); // the others still read
    r.readPage(14, new Uint8Array(PAGE));
  });

  it('the writer refuses pages out of order, beyond pageCount or beyond entriesMax', () => {
    const disk = setupDisk();
    const isInvariant = (e: unknown): boolean => e instanceof StorageError && e.code === 'invariant';
    const w = ImageWriter.create(disk, { dir: DIR, lsn: 1, term: 1, pageSize: PAGE, pageCount: 10, entriesMax: 2 });
    w.addPage(3, pageData(3));
    assert.throws(() => w.addPage(3, pageData(3)), isInvariant);
    assert.throws(() => w.addPage(10, pageData(10)), isInvariant);
    assert.throws(() => w.addPage(4, new Uint8Array(100)), isInvariant);
    w.addPage(5, pageData(5));
    assert.throws(() => w.addPage(6, pageData(6)), isInvariant);
    w.abort();
    assert.deepEqual(disk.list(DIR), [], 'abort removes the temp file');
    const bad = (e: unknown): boolean => e instanceof StorageError && e.code === 'bad_request';
    assert.throws(() => ImageWriter.create(disk, { dir: DIR, lsn: 1, term: 1, pageSize: 2048 as 4096, pageCount: 10, entriesMax: 0 }), bad);
    assert.throws(() => ImageWriter.create(disk, { dir: DIR, lsn: 1, term: 1, pageSize: PAGE, pageCount: 0, entriesMax: 0 }), bad);
    assert.throws(() => ImageWriter.create(disk, { dir: DIR, lsn: 1, term: 1, pageSize: PAGE, pageCount: 10, entriesMax: 11 }), bad);
    assert.throws(() => ImageWriter.create(disk, { dir: DIR, lsn: -1, term: 1, pageSize: PAGE, pageCount: 10, entriesMax: 1 }), bad);
  });

  it('a crash at any step of a write, then a power cut, leaves either no image or a complete one', () => {
    const pages = new Map<number, Uint8Array>();
    for (let p = 0; p < 600; p += 2) pages.set(p, pageData(p)); // > 1 MiB: several buffered writes
    let n = 0;
    for (;;) {
      const disk = setupDisk();
      disk.crashAfter(n);
      let finished = false;
      try {
        writeImage(disk, 4, pages);
        finished = true;
      } catch (e) {
        assert.ok(e instanceof SimulatedCrash, `crash expected, got ${String(e)}`);
      }
      disk.powerCut();
      const names = disk.list(DIR).filter((x) => !isImageTempFileName(x));
      if (names.length > 0) {
        assert.deepEqual(names, [imageFileName(4)]);
        const r = ImageReader.open(disk, `${DIR}/${names[0]}`);
        const out = new Uint8Array(PAGE);
        for (const [p, d] of pages) {
          r.readPage(p, out);
          assert.deepEqual(out, d);
        }
      }
      if (finished) {
        assert.equal(names.length, 1, 'a finished write survives a power cut');
        break;
      }
      n++;
      assert.ok(n < 100, 'the write finishes in a bounded number of steps');
    }
  });
});
