/**
 * The catalog shard's layout (cluster/catalog-shard.ts): a header page naming the region that
 * holds the catalog, two regions written in turn; everything read back is checked.
 */
import { strict as assert } from 'node:assert';
import {
  CATALOG_PAGE_SIZE,
  CATALOG_REGION_PAGES,
  catalogAssignment,
  catalogPages,
  decodeCatalog,
  decodeHeader,
  encodeHeader,
  regionStart,
} from '../../cluster/catalog-shard';
import type { CatalogState } from '../../actors/controller';
import { encode } from '../../messages/codec';
import { ProtocolError } from '../../messages/errors';
import { crc32c } from '../../storage-engine/crc32c';

const state = (epoch: number, extra: Partial<CatalogState> = {}): CatalogState => ({ version: 1, epoch, nextId: 3, tag: 'abcd1234', volumes: [], tombstones: ['v1-abcd1234'], ...extra });
const isCode = (code: string, re?: RegExp) => (e: unknown) => e instanceof ProtocolError && e.code === code && (re === undefined || re.test(e.message));
const pagesOf = (w: ReturnType<typeof catalogPages>) => w.data.map((p) => p.data);

describe('catalog shard layout', () => {
  it('a header of zeros is no catalog; a header reads back as written', () => {
    assert.equal(decodeHeader(new Uint8Array(CATALOG_PAGE_SIZE)), undefined);
    const h = { region: 1 as const, bytes: 12345, crc: 0xdeadbeef, epoch: 2 ** 40 + 7 };
    assert.deepEqual(decodeHeader(encodeHeader(h)), h);
  });

  it('a page that is not a header is corruption, naming why', () => {
    const h = encodeHeader({ region: 0, bytes: 10, crc: 1, epoch: 1 });
    const with_ = (at: number, value: number): Uint8Array => {
      const p = h.slice();
      p[at] = value;
      return p;
    };
    assert.throws(() => decodeHeader(with_(0, 0x41)), isCode('corruption', /magic/));
    assert.throws(() => decodeHeader(with_(4, 2)), isCode('corruption', /layout version 2/));
    assert.throws(() => decodeHeader(with_(8, 2)), isCode('corruption', /region 2/));
    assert.throws(() => decodeHeader(with_(100, 1)), isCode('corruption', /byte 100 is not zero/));
    const empty = h.slice();
    empty.fill(0, 12, 16);
    assert.throws(() => decodeHeader(empty), isCode('corruption', /length 0/));
    const long = h.slice();
    new DataView(long.buffer).setUint32(12, CATALOG_REGION_PAGES * CATALOG_PAGE_SIZE + 1, true);
    assert.throws(() => decodeHeader(long), isCode('corruption', new RegExp(`length ${CATALOG_REGION_PAGES * CATALOG_PAGE_SIZE + 1}$`)));
    const unsafe = h.slice();
    new DataView(unsafe.buffer).setBigUint64(20, 2n ** 53n, true);
    assert.throws(() => decodeHeader(unsafe), isCode('corruption', /epoch 9007199254740992$/));
    assert.throws(() => decodeHeader(new Uint8Array(100)), isCode('corruption', /100 bytes/));
  });

  it('changes go to the region the header does not name, in turn; each reads back whole', () => {
    const first = catalogPages(state(1), undefined);
    assert.equal(first.region, 0);
    assert.equal(first.data[0]!.page, regionStart(0));
    assert.equal(first.header.page, 0);
    const h1 = decodeHeader(first.header.data)!;
    assert.deepEqual(decodeCatalog(h1, pagesOf(first)), state(1));
    const second = catalogPages(state(2), 0);
    assert.equal(second.region, 1);
    assert.equal(second.data[0]!.page, regionStart(1));
    assert.equal(regionStart(1), 1 + CATALOG_REGION_PAGES);
    assert.equal(catalogPages(state(3), 1).region, 0);
  });

  it('a catalog of many pages: pages in order, the last padded with zeros', () => {
    const big = state(5, { tombstones: Array.from({ length: 4000 }, (_, i) => `v${i.toString(36)}-abcd1234`) });
    const w = catalogPages(big, undefined);
    const h = decodeHeader(w.header.data)!;
    assert.equal(w.data.length, Math.ceil(h.bytes / CATALOG_PAGE_SIZE));
    assert.ok(w.data.length > 3);
    w.data.forEach((p, i) => assert.equal(p.page, regionStart(0) + i));
    assert.deepEqual(decodeCatalog(h, pagesOf(w)), big);
  });

  it('a catalog larger than a message (1 MiB) reads back: a catalog is bounded by its region, not by NATS', () => {
    const big = state(6, { tombstones: Array.from({ length: 80_000 }, (_, i) => `v${i.toString(36)}-abcd1234`) });
    const w = catalogPages(big, 1);
    const h = decodeHeader(w.header.data)!;
    assert.ok(h.bytes > 1024 * 1024, `${h.bytes} bytes`);
    assert.equal(w.region, 0);
    assert.deepEqual(decodeCatalog(h, pagesOf(w)), big);
  });

  it('a change leaves the pages of its region that hold its bytes already: the shard read back holds each catalog whole', () => {
    // The shard as a map of pages, written as the controller writes them.
    const shard = new Map<number, Uint8Array>();
    const apply = (w: ReturnType<typeof catalogPages>): void => {
      for (const p of [...w.data, w.header]) shard.set(p.page, p.data);
    };
    const readBack = (): CatalogState => {
      const h = decodeHeader(shard.get(0)!)!;
      const count = Math.ceil(h.bytes / CATALOG_PAGE_SIZE);
      return decodeCatalog(h, Array.from({ length: count }, (_, i) => shard.get(regionStart(h.region) + i) ?? new Uint8Array(CATALOG_PAGE_SIZE)));
    };
    const names = (n: number): string[] => Array.from({ length: n }, (_, i) => `v${i.toString(36).padStart(4, '0')}-abcd1234`);
    // An older, longer catalog in region 0 first: its last pages stay behind the next ones there.
    const c0 = catalogPages(state(1, { tombstones: names(3000) }), undefined);
    apply(c0);
    const c1 = catalogPages(state(2, { tombstones: names(2000) }), 0);
    apply(c1);
    assert.deepEqual(readBack(), state(2, { tombstones: names(2000) }));
    // Region 0 holds c0's bytes: the first pages of c2 are the same (the same leading tombstones).
    const c2 = catalogPages(state(3, { tombstones: names(2100) }), 1, c0.bytes);
    assert.equal(c2.region, 0);
    const pages2 = Math.ceil(c2.bytes.length / CATALOG_PAGE_SIZE);
    assert.ok(c2.data.length < pages2, `${c2.data.length} of ${pages2} pages written`);
    apply(c2);
    assert.deepEqual(readBack(), state(3, { tombstones: names(2100) }));
    // Region 1 holds c1's: a change of the epoch alone (its first page) and a longer list.
    const c3 = catalogPages(state(4, { tombstones: names(2200) }), 0, c1.bytes);
    apply(c3);
    assert.deepEqual(readBack(), state(4, { tombstones: names(2200) }));
    // A catalog shorter than what the region held: what it wrote reads back, and nothing past it.
    const c4 = catalogPages(state(5, { tombstones: names(10) }), 1, c2.bytes);
    apply(c4);
    assert.deepEqual(readBack(), state(5, { tombstones: names(10) }));
    // Without what the region holds, every page is written.
    assert.equal(catalogPages(state(6, { tombstones: names(2100) }), 1).data.length, Math.ceil(c2.bytes.length / CATALOG_PAGE_SIZE));
  });

  it('a region that does not match its header is corruption: a changed byte, a missing page, another epoch', () => {
    const w = catalogPages(state(7, { tombstones: Array.from({ length: 2000 }, (_, i) => `v${i}-abcd1234`) }), undefined);
    const h = decodeHeader(w.header.data)!;
    const flipped = pagesOf(w).map((p) => p.slice());
    flipped[1]![10]! ^= 1;
    assert.throws(() => decodeCatalog(h, flipped), isCode('corruption', /CRC-32C/));
    assert.throws(() => decodeCatalog(h, pagesOf(w).slice(0, -1)), isCode('corruption', /holds \d+ of the catalog's \d+ bytes/));
    const other = catalogPages(state(8), undefined);
    const h8 = decodeHeader(other.header.data)!;
    assert.throws(() => decodeCatalog({ ...h8, epoch: 9 }, pagesOf(other)), isCode('corruption', /epoch 8, header 9/));
    // Bytes that match the header's CRC-32C but are not a catalog of this layout: another version, not a map.
    const v2 = catalogPages({ ...state(8), version: 2 } as unknown as CatalogState, undefined);
    assert.throws(() => decodeCatalog(decodeHeader(v2.header.data)!, pagesOf(v2)), isCode('corruption', /is not the header's \(epoch 8, header 8\)/));
    const nothing = encode(null);
    const page = new Uint8Array(CATALOG_PAGE_SIZE);
    page.set(nothing);
    assert.throws(() => decodeCatalog({ region: 0, bytes: nothing.length, crc: crc32c(nothing), epoch: 1 }, [page]), isCode('corruption', /is not the header's \(epoch undefined, header 1\)/));
  });

  it('a catalog beyond a region is refused too_large', () => {
    const huge = state(1, { tombstones: [('x').repeat(CATALOG_REGION_PAGES * CATALOG_PAGE_SIZE)] });
    assert.throws(() => catalogPages(huge, undefined), isCode('too_large'));
  });

  it('its assignment: one shard of 8 KiB pages on the first host of each controller node', () => {
    const a = catalogAssignment(['c1', 'c2', 'c3']);
    assert.deepEqual([a.shards, a.shard, a.pageSize, a.hostId, a.members], [1, 0, 8192, 0, ['c1', 'c2', 'c3']]);
    assert.equal(a.pageCount, 1 + 2 * CATALOG_REGION_PAGES);
  });
});
