/** PageWrite payload codec: round trips, duplicates (last wins), and every rejected input. */
import { strict as assert } from 'node:assert';
import {
  decodePageWrite,
  encodePageWrite,
  PAGE_WRITE_HEADER_BYTES,
  PAGE_WRITE_PAGES_MAX,
  pageDataOfPageWrite,
  pagesOfPageWrite,
  pageWriteBytes,
  pageWriteCrcs,
  pageWritePayloadCrc,
  readPageWriteHeader,
  WRITE_ID_BYTES,
  writeIdOfPageWrite,
} from '../../storage-engine/page-write';
import { crc32c } from '../../storage-engine/crc32c';
import { pageWritesCrc } from '../../storage-engine/page-data-crc';
import { edited } from '../support/bytes';
import { expectStorageError as expectCode } from '../support/expect';

function page(size: number, fill: number): Uint8Array {
  const d = new Uint8Array(size);
  for (let i = 0; i < size; i++) d[i] = (fill * 31 + i) & 0xff;
  return d;
}

describe('page-write codec', () => {
  for (const size of [4096, 8192] as const) {
    it(`round-trips one and many pages of ${size} bytes, with views into the payload`, () => {
      const one = encodePageWrite(size, [{ page: 7, data: page(size, 1) }]);
      assert.equal(one.length, pageWriteBytes(size, 1));
      const d1 = decodePageWrite(one, size);
      assert.equal(d1.length, 1);
      assert.equal(d1[0]!.page, 7);
      assert.deepEqual(d1[0]!.data, page(size, 1));
      assert.equal(d1[0]!.data.buffer, one.buffer, 'data is a view, not a copy');

      const max = size === 4096 ? PAGE_WRITE_PAGES_MAX : 128;
      const entries = Array.from({ length: max }, (_, i) => ({ page: 2 ** 40 + i * 3, data: page(size, i) }));
      const many = encodePageWrite(size, entries);
      const d = decodePageWrite(many, size);
      assert.deepEqual(d.map((e) => e.page), entries.map((e) => e.page));
      for (let i = 0; i < max; i++) assert.deepEqual(d[i]!.data, entries[i]!.data);
      assert.deepEqual(pagesOfPageWrite(many), entries.map((e) => e.page));
      assert.deepEqual(readPageWriteHeader(many), { pageSize: size, count: max, withId: false });
    });
  }

  it('keeps duplicates in order and the last one wins', () => {
    const p = encodePageWrite(4096, [
      { page: 3, data: page(4096, 1) },
      { page: 5, data: page(4096, 2) },
      { page: 3, data: page(4096, 3) },
    ]);
    assert.deepEqual(pagesOfPageWrite(p), [3, 5, 3]);
    assert.deepEqual(pageDataOfPageWrite(p, 4096, 3), page(4096, 3));
    assert.deepEqual(pageDataOfPageWrite(p, 4096, 5), page(4096, 2));
    assert.equal(pageDataOfPageWrite(p, 4096, 4), undefined);
  });

  it('works on a payload that is a view at an odd offset of a larger buffer', () => {
    const p = encodePageWrite(4096, [{ page: 1, data: page(4096, 9) }]);
    const big = new Uint8Array(p.length + 3);
    big.set(p, 3);
    const view = big.subarray(3);
    assert.deepEqual(pagesOfPageWrite(view), [1]);
    assert.deepEqual(decodePageWrite(view, 4096)[0]!.data, page(4096, 9));
  });

  it('rejects bad encoder input with bad_request', () => {
    const d = page(4096, 1);
    expectCode(() => encodePageWrite(2048, [{ page: 0, data: new Uint8Array(2048) }]), 'bad_request');
    expectCode(() => encodePageWrite(4096, []), 'bad_request');
    expectCode(() => encodePageWrite(4096, Array.from({ length: PAGE_WRITE_PAGES_MAX + 1 }, (_, i) => ({ page: i, data: d }))), 'bad_request');
    expectCode(() => encodePageWrite(8192, Array.from({ length: 129 }, (_, i) => ({ page: i, data: new Uint8Array(8192) }))), 'bad_request');
    expectCode(() => encodePageWrite(4096, [{ page: -1, data: d }]), 'bad_request');
    expectCode(() => encodePageWrite(4096, [{ page: 1.5, data: d }]), 'bad_request');
    expectCode(() => encodePageWrite(4096, [{ page: 2 ** 53, data: d }]), 'bad_request');
    expectCode(() => encodePageWrite(4096, [{ page: NaN, data: d }]), 'bad_request');
    expectCode(() => encodePageWrite(4096, [{ page: 0, data: new Uint8Array(4095) }]), 'bad_request');
    expectCode(() => encodePageWrite(4096, [{ page: 0, data: new Uint8Array(8192) }]), 'bad_request');
  });

  it('rejects malformed payloads with corruption', () => {
    const good = encodePageWrite(4096, [{ page: 1, data: page(4096, 1) }, { page: 2, data: page(4096, 2) }]);
    const mutate = (f: (dv: DataView, b: Uint8Array) => void): Uint8Array => edited(good, f);
    expectCode(() => decodePageWrite(new Uint8Array(8), 4096), 'corruption');
    expectCode(() => decodePageWrite(mutate((dv) => dv.setUint32(0, 0xdeadbeef, true)), 4096), 'corruption');
    expectCode(() => decodePageWrite(mutate((dv) => dv.setUint32(4, 2048, true)), 4096), 'corruption');
    expectCode(() => decodePageWrite(good, 8192), 'corruption'); // page size differs from the store's
    expectCode(() => decodePageWrite(mutate((dv) => dv.setUint32(8, 0, true)), 4096), 'corruption');
    expectCode(() => decodePageWrite(mutate((dv) => dv.setUint32(8, PAGE_WRITE_PAGES_MAX + 1, true)), 4096), 'corruption');
    expectCode(() => decodePageWrite(mutate((dv) => dv.setUint32(8, 3, true)), 4096), 'corruption'); // length mismatch
    expectCode(() => decodePageWrite(mutate((dv) => dv.setUint32(12, 1, true)), 4096), 'corruption');
    expectCode(() => decodePageWrite(good.subarray(0, good.length - 1), 4096), 'corruption');
    const longer = new Uint8Array(good.length + 1);
    longer.set(good);
    expectCode(() => decodePageWrite(longer, 4096), 'corruption');
    // A page number above 2^53 - 1.
    expectCode(() => pagesOfPageWrite(mutate((dv) => dv.setUint32(PAGE_WRITE_HEADER_BYTES + 4, 0x200000, true))), 'corruption');
    expectCode(() => pageDataOfPageWrite(mutate((dv) => dv.setUint32(0, 1, true)), 4096, 1), 'corruption');
  });

  it('names what is wrong with a malformed header, each by its own check; encodes into a buffer only when it is large enough', () => {
    const good = encodePageWrite(4096, [{ page: 1, data: page(4096, 1) }]);
    const changed = (edit: (dv: DataView) => void): Uint8Array => edited(good, edit);
    const says = (payload: Uint8Array, re: RegExp): void => {
      assert.match(expectCode(() => readPageWriteHeader(payload), 'corruption').message, re);
    };
    says(good.subarray(0, PAGE_WRITE_HEADER_BYTES - 1), /^page write payload of \d+ bytes is shorter than its header$/);
    says(changed((dv) => dv.setUint32(4, 512, true)), /^page write page size 512 is not 4096 or 8192$/);
    says(changed((dv) => dv.setUint32(8, 0, true)), /^page write count 0 out of 1\.\./);
    says(changed((dv) => dv.setUint32(8, 0xffff, true)), /^page write count 65535 out of 1\.\./);
    const bytes = pageWriteBytes(4096, 1);
    assert.match(expectCode(() => encodePageWrite(4096, [{ page: 1, data: page(4096, 1) }], new Uint8Array(bytes - 1)), 'bad_request').message, /^output buffer of \d+ bytes is smaller than/);
    assert.deepEqual(encodePageWrite(4096, [{ page: 1, data: page(4096, 1) }], new Uint8Array(bytes + 8)), good);
  });

  it("makes a payload's checksum from its pages' data checksum: the payload's own, with or without a write id; not the payload's once a page of it changed", () => {
    const id = Uint8Array.from({ length: WRITE_ID_BYTES }, (_, i) => 7 + i);
    for (const size of [4096, 8192]) {
      for (const count of [1, 3, PAGE_WRITE_PAGES_MAX / (size / 4096) / 4]) {
        const pages = Array.from({ length: count }, (_, i) => ({ page: 100 - i, data: page(size, i + count) }));
        for (const writeId of [undefined, id]) {
          const payload = encodePageWrite(size, pages, undefined, writeId);
          const made = pageWritePayloadCrc(payload, size, count, pageWritesCrc(pages));
          assert.equal(made, crc32c(payload), `${count} pages of ${size}${writeId ? ' with an id' : ''}`);
          // A page changed after its data's checksum was made: the payload's checksum is not this.
          const changed = Uint8Array.from(payload);
          changed[PAGE_WRITE_HEADER_BYTES + 8 * count + (count - 1) * size + 17] ^= 0x10;
          assert.notEqual(pageWritePayloadCrc(changed, size, count, pageWritesCrc(pages)), crc32c(changed));
        }
      }
    }
    const one = encodePageWrite(4096, [{ page: 1, data: page(4096, 1) }]);
    assert.throws(() => pageWritePayloadCrc(one.subarray(0, one.length - 1), 4096, 1, 0), /the page data lies within the payload/);
  });

  it("gives each page's checksum and the payload's made from them (pageWriteCrcs); nothing for a payload that is not a page write of its page size", () => {
    const id = Uint8Array.from({ length: WRITE_ID_BYTES }, (_, i) => 3 + i);
    for (const size of [4096, 8192]) {
      // Page 9 twice: each pair has its own checksum.
      const pages = [9, 4, 9, 70].map((p, i) => ({ page: p, data: page(size, 5 + i) }));
      for (const writeId of [undefined, id]) {
        const payload = encodePageWrite(size, pages, undefined, writeId);
        const got = pageWriteCrcs(payload, size);
        assert.ok(got !== undefined);
        assert.deepEqual(got.pages, [9, 4, 9, 70]);
        assert.deepEqual(got.crcs, pages.map((p) => crc32c(p.data)));
        assert.equal(got.payloadCrc, crc32c(payload));
      }
      assert.equal(pageWriteCrcs(encodePageWrite(size, pages), size === 4096 ? 8192 : 4096), undefined, 'another page size');
    }
    const one = encodePageWrite(4096, [{ page: 1, data: page(4096, 1) }]);
    assert.equal(pageWriteCrcs(one.subarray(0, one.length - 1), 4096), undefined, 'cut short');
    assert.equal(pageWriteCrcs(new Uint8Array(0), 4096), undefined, 'empty (a record of another kind)');
  });

  it('carries a write id after the data: flagged, counted in the length, read back; a payload without one reads the same pages', () => {
    const id = Uint8Array.from({ length: WRITE_ID_BYTES }, (_, i) => 200 - i);
    const pages = [{ page: 9, data: page(4096, 9) }, { page: 3, data: page(4096, 3) }];
    const withId = encodePageWrite(4096, pages, undefined, id);
    const without = encodePageWrite(4096, pages);
    assert.equal(withId.length, pageWriteBytes(4096, 2, true));
    assert.equal(withId.length, without.length + WRITE_ID_BYTES);
    assert.deepEqual(readPageWriteHeader(withId), { pageSize: 4096, count: 2, withId: true });
    assert.deepEqual(readPageWriteHeader(without), { pageSize: 4096, count: 2, withId: false });
    assert.deepEqual(decodePageWrite(withId, 4096), decodePageWrite(without, 4096));
    assert.deepEqual(pageDataOfPageWrite(withId, 4096, 3), page(4096, 3));
    assert.deepEqual(writeIdOfPageWrite(withId), id);
    assert.equal(writeIdOfPageWrite(without), undefined);
    // Into a buffer: the id lands at the end too.
    assert.deepEqual(encodePageWrite(4096, pages, new Uint8Array(withId.length + 8), id), withId);
    // The flag without the id's bytes, or the id's bytes without the flag, is a length mismatch.
    assert.match(expectCode(() => readPageWriteHeader(edited(without, (dv) => dv.setUint32(12, 1, true))), 'corruption').message, /expected \d+ for 2 pages and a write id$/);
    assert.match(expectCode(() => readPageWriteHeader(edited(withId, (dv) => dv.setUint32(12, 0, true))), 'corruption').message, /expected \d+ for 2 pages$/);
    assert.match(expectCode(() => readPageWriteHeader(edited(withId, (dv) => dv.setUint32(12, 2, true))), 'corruption').message, /^page write flags 0x2 has unknown bits$/);
    // An id of another length is refused before anything is written.
    for (const bad of [new Uint8Array(15), new Uint8Array(17)]) {
      assert.match(expectCode(() => encodePageWrite(4096, pages, undefined, bad), 'bad_request').message, /^a write id is 16 bytes, got 1[57]$/);
    }
  });
});
