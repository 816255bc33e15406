import * as assert from 'node:assert/strict';
import { Decoder } from 'cbor-x';
import { MESSAGE_BYTES_MAX, decode, encode, encodeShardReadReply, encodeShardWriteRequest, itemsWithin } from '../../messages/codec';
import { EARLIER_ATTEMPTS_MAX, PAGES_PER_REQUEST_MAX, REQUEST_ITEMS_MAX, SHARDS_MAX } from '../../messages/api';
import { validateShardReadReply, validateShardWriteRequest } from '../../messages/validate';
import { ProtocolError } from '../../messages/errors';
import { validatePageWriteRequest, validateVolumeCreateRequest } from '../../messages/validate';
import { assertProtocolError } from '../support/expect';

function pageMessage(): { volume: string; pages: { page: number; data: Uint8Array }[] } {
  return { volume: 'vol', pages: [{ page: 7, data: new Uint8Array(4096).fill(0xab) }] };
}

/** True if `needle` occurs in `hay` as a byte sequence. */
function contains(hay: Uint8Array, needle: readonly number[]): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

describe('messages/codec', () => {
  it('round-trips a page message', () => {
    const msg = pageMessage();
    const back = decode(encode(msg));
    assert.deepEqual(validatePageWriteRequest(back), msg);
  });

  it('malformed CBOR bytes give bad_request "malformed CBOR"', () => {
    assertProtocolError(() => decode(Uint8Array.from([0xff])), 'bad_request', undefined, /^malformed CBOR/);
    assertProtocolError(() => decode(Uint8Array.from([0x1c])), 'bad_request', undefined, /^malformed CBOR/); // reserved info 28
  });

  it('truncated CBOR gives bad_request', () => {
    const bytes = encode(pageMessage());
    for (const cut of [1, 10, 100, bytes.length - 1]) {
      assertProtocolError(() => decode(bytes.subarray(0, cut)), 'bad_request', undefined, /^malformed CBOR/);
    }
  });

  it('trailing bytes after the item give bad_request', () => {
    assertProtocolError(() => decode(Uint8Array.from([0x01, 0x02])), 'bad_request', undefined, /^malformed CBOR/);
  });

  it('an empty message gives bad_request', () => {
    assertProtocolError(() => decode(new Uint8Array(0)), 'bad_request', undefined, /empty/);
  });

  it('input that is not a byte array gives bad_request', () => {
    assertProtocolError(() => decode('a0' as unknown as Uint8Array), 'bad_request', undefined, /not a byte array/);
  });

  it('absurd nesting gives bad_request, and the codec keeps working after it', () => {
    const deep = new Uint8Array(300_001).fill(0x81); // 300000 nested one-entry arrays
    deep[300_000] = 0x00;
    assertProtocolError(() => decode(deep), 'bad_request', undefined, /^malformed CBOR/);
    assert.deepEqual(decode(encode({ a: 1 })), { a: 1 });
  });

  it('a header declaring a huge array gives bad_request without allocating', () => {
    assertProtocolError(() => decode(Uint8Array.from([0x9a, 0x05, 0x00, 0x00, 0x00, 0x00])), 'bad_request');
  });

  it('counts CBOR items by their heads, skipping string contents (itemsWithin)', () => {
    // map, "a", array, 1, 2, map, "b", "x"
    const bytes = encode({ a: [1, 2, { b: 'x' }] });
    assert.equal(itemsWithin(bytes, 8), true);
    assert.equal(itemsWithin(bytes, 7), false);
    // Byte and text strings whose contents look like heads count once each.
    const strings = encode({ data: new Uint8Array(100_000).fill(0xa0), text: '\u00a0'.repeat(1000) });
    assert.equal(itemsWithin(strings, 5), true);
    assert.equal(itemsWithin(strings, 4), false);
    // Floats, 64-bit integers, tags and indefinite lengths: each head once.
    assert.equal(itemsWithin(encode([1.5, 2 ** 40, -(2 ** 40), new Date(0)]), 6), true);
    assert.equal(itemsWithin(new Uint8Array([0x9f, 0x01, 0x02, 0xff]), 4), true);
    assert.equal(itemsWithin(new Uint8Array([0x9f, 0x01, 0x02, 0xff]), 3), false);
    // A head that runs past the end is left to the decoder.
    assert.equal(itemsWithin(new Uint8Array([0x5a, 0xff, 0xff, 0xff, 0xff, 0x00]), 1), true);
  });

  it('the largest client requests hold fewer items than REQUEST_ITEMS_MAX', () => {
    const pages = Array.from({ length: PAGES_PER_REQUEST_MAX }, (_, i) => i);
    const lsns = Array.from({ length: SHARDS_MAX }, (_, shard) => ({ shard, lsn: 2 ** 40 + shard, term: 2 ** 31 }));
    const read = encode({ volume: 'v'.repeat(64), pages, lsns });
    const write = encode({ volume: 'v'.repeat(64), pages: pages.map((page) => ({ page, data: new Uint8Array(16) })), deadlineMs: Date.now() });
    const earlier = Array.from({ length: EARLIER_ATTEMPTS_MAX }, (_, i) => ({ lsn: i + 1, term: i + 1 }));
    const shardWrite = encodeShardWriteRequest({ pages: pages.map((page) => ({ page, data: new Uint8Array(16) })), earlier });
    for (const bytes of [read, write, shardWrite]) {
      assert.equal(itemsWithin(bytes, 2200), true);
      assert.doesNotThrow(() => decode(bytes, { itemsMax: REQUEST_ITEMS_MAX }));
    }
  });

  it('a message of more items than itemsMax gives too_large without being decoded', () => {
    // A million empty maps in 1 MB: decoded, each would be an object.
    const items = MESSAGE_BYTES_MAX - 8;
    const body = new Uint8Array(5 + items).fill(0xa0);
    body[0] = 0x9a;
    new DataView(body.buffer).setUint32(1, items);
    const e = assertProtocolError(() => decode(body, { itemsMax: REQUEST_ITEMS_MAX }), 'too_large');
    assert.match(e.message, /more than 8192 CBOR items/);
    assert.deepEqual(e.details, { bytes: body.byteLength, itemsMax: REQUEST_ITEMS_MAX });
    // The same array declared one item longer than it holds: decoded, it is malformed (truncated).
    // Refused too_large all the same: its items are counted before it is decoded.
    const truncated = body.slice();
    new DataView(truncated.buffer).setUint32(1, items + 1);
    assertProtocolError(() => decode(truncated, {}), 'bad_request');
    const early = assertProtocolError(() => decode(truncated, { itemsMax: REQUEST_ITEMS_MAX }), 'too_large');
    assert.match(early.message, /more than 8192 CBOR items/);
    // Without the bound it is decoded, as before.
    assert.equal((decode(encode([{}, {}]), {}) as unknown[]).length, 2);
  });

  it('input over the bound gives too_large before parsing', () => {
    const big = new Uint8Array(MESSAGE_BYTES_MAX + 1); // zeros: would be "trailing bytes" if parsed
    const err = assertProtocolError(() => decode(big), 'too_large');
    assert.deepEqual(err.details, { bytes: MESSAGE_BYTES_MAX + 1, bytesMax: MESSAGE_BYTES_MAX });
    assertProtocolError(() => decode(encode({ a: 'x'.repeat(100) }), { bytesMax: 50 }), 'too_large');
    assert.deepEqual(decode(encode({ a: 1 }), { bytesMax: 50 }), { a: 1 });
    // A bound that is not a positive integer is the caller's bug, said at once.
    for (const bytesMax of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => decode(encode({ a: 1 }), { bytesMax }), (e: unknown) => e instanceof RangeError && /bytesMax must be a positive integer/.test(e.message));
      assert.throws(() => encode({ a: 1 }, { bytesMax }), RangeError);
    }
  });

  it('encode refuses a message over the bound with too_large', () => {
    const data = new Uint8Array(MESSAGE_BYTES_MAX);
    const err = assertProtocolError(() => encode({ data }), 'too_large');
    assert.ok((err.details?.bytes as number) > MESSAGE_BYTES_MAX);
    assertProtocolError(() => encode({ data: new Uint8Array(100) }, { bytesMax: 64 }), 'too_large');
  });

  it('encode turns an unencodable value into internal', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assertProtocolError(() => encode(cyclic), 'internal', undefined, /can not encode/);
  });

  it('writes no record extension: same-key objects decode in a fresh decoder', () => {
    const msg = [{ page: 1, lsn: 2 }, { page: 3, lsn: 4 }];
    const bytes = encode(msg);
    // record definition tag 57343 (0xd9 0xdf 0xff) and record tags 0xe000.. (0xd9 0xe0..)
    assert.ok(!contains(bytes, [0xd9, 0xdf, 0xff]), 'record definition tag found');
    assert.ok(!contains(bytes, [0xd9, 0xe0]), 'record tag found');
    // the keys are spelt out in each map
    const keyPage = [0x64, ...Buffer.from('page')];
    let count = 0;
    for (let i = 0; i + keyPage.length <= bytes.length; i++) {
      if (keyPage.every((b, j) => bytes[i + j] === b)) count++;
    }
    assert.equal(count, 2);
    assert.deepEqual(new Decoder({ mapsAsObjects: true }).decode(bytes), msg);
    // a second encoding of the same shape is identical and stands alone
    const again = encode(msg);
    assert.deepEqual(Buffer.from(again), Buffer.from(bytes));
    assert.deepEqual(new Decoder({ mapsAsObjects: true }).decode(again), msg);
  });

  it('writes a Uint8Array as a plain byte string (no tag 64)', () => {
    const bytes = encode(new Uint8Array([1, 2, 3]));
    assert.deepEqual([...bytes], [0x43, 1, 2, 3]);
  });

  it('decodes 64-bit integers to numbers, never bigint', () => {
    const big = decode(Uint8Array.from([0x1b, 0, 0, 1, 0, 0, 0, 0, 0]));
    assert.equal(big, 2 ** 40);
    const huge = decode(Uint8Array.from([0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    assert.equal(typeof huge, 'number');
    // a value a number can not hold exactly is then refused by the validators
    const msg = Uint8Array.from([
      0xa2, 0x64, ...Buffer.from('name'), 0x61, 0x76,
      0x69, ...Buffer.from('pageCount'), 0x1b, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // 2^53 + 1
    ]);
    assert.throws(() => validateVolumeCreateRequest(decode(msg)), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request');
  });

  it('a __proto__ key does not change the prototype', () => {
    const bytes = Uint8Array.from([0xa1, 0x69, ...Buffer.from('__proto__'), 0xa1, 0x61, 0x78, 0x01]);
    const value = decode(bytes) as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(value), Object.prototype);
    assert.equal(({} as Record<string, unknown>).x, undefined);
  });

  it('decoding a 4 KiB page message does not copy the page (a view of the input)', () => {
    const input = encode(pageMessage());
    const decoded = validatePageWriteRequest(decode(input));
    const data = decoded.pages[0]!.data;
    assert.equal(data.buffer, input.buffer, 'decoded page is not a view of the input');
    assert.ok(data.byteOffset >= input.byteOffset && data.byteOffset + 4096 <= input.byteOffset + input.byteLength);
    // the view aliases the input: a change to the input shows through (why callers must not reuse it)
    input[data.byteOffset - input.byteOffset] = 0x00;
    assert.equal(data[0], 0x00);
  });

  it('a later encode does not overwrite an earlier result', () => {
    const first = encode({ a: 'first' });
    const copy = Uint8Array.from(first);
    for (let i = 0; i < 500; i++) encode({ filler: 'x'.repeat(200) });
    assert.equal(Buffer.compare(first, copy), 0);
  });
});

describe('encodeShardReadReply (a read reply without cbor-x)', () => {
  const sizes = [0, 1, 23, 24, 255, 256, 4096, 65535, 65536];
  const numbers = [0, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER];

  it('decodes (here and with a stock cbor-x decoder) to the reply it was given, for every size of every head', () => {
    const stock = new Decoder({ mapsAsObjects: true, int64AsNumber: true } as ConstructorParameters<typeof Decoder>[0]);
    for (const size of sizes) {
      // Every head of a number with small pages; large pages with a few.
      for (const n of size <= 256 ? numbers : [0, 2 ** 40 + 7]) {
        for (const term of [undefined, 0, n]) {
          const pages = [new Uint8Array(size).map((_, i) => (i * 7 + n) & 0xff), new Uint8Array(size).fill(0x5a)];
          const reply = term === undefined ? { pages, lsn: n } : { pages, lsn: n, term };
          const bytes = encodeShardReadReply(reply);
          assert.deepEqual(decode(bytes), reply, `pages of ${size} bytes, lsn ${n}, term ${String(term)}`);
          const viaStock = stock.decode(bytes) as { pages: Uint8Array[] };
          assert.deepEqual(viaStock.pages.map((p) => [...p]), pages.map((p) => [...p]));
        }
      }
    }
  });

  it('replies of many pages (every head of the array), read back by the reply validator', () => {
    for (const count of [1, 23, 24, 255, 256]) {
      const pages = Array.from({ length: count }, (_, i) => new Uint8Array(16).fill(i & 0xff));
      const reply = validateShardReadReply(decode(encodeShardReadReply({ pages, lsn: 9, term: 2 })));
      assert.equal(reply.pages.length, count);
      reply.pages.forEach((p, i) => assert.equal(p[0], i & 0xff));
    }
  });

  it('writes into the buffer `alloc` gives, and refuses one of another size', () => {
    const backing = new Uint8Array(4096 + 64);
    let asked = 0;
    const bytes = encodeShardReadReply({ pages: [new Uint8Array(4096).fill(3)], lsn: 5 }, { alloc: (n) => backing.subarray(0, (asked = n)) });
    assert.equal(bytes.buffer, backing.buffer, 'the given buffer is used');
    assert.equal(bytes.length, asked);
    assertProtocolError(() => encodeShardReadReply({ pages: [new Uint8Array(8)], lsn: 5 }, { alloc: (n) => new Uint8Array(n + 1) }), 'internal');
  });

  it('refuses what encode refuses: over bytesMax, and values that are not a reply', () => {
    const page = new Uint8Array(1000);
    assertProtocolError(() => encodeShardReadReply({ pages: [page, page], lsn: 1 }, { bytesMax: 2000 }), 'too_large');
    assert.throws(() => encode({ pages: [page, page], lsn: 1 }, { bytesMax: 2000 }), (e: unknown) => (e as ProtocolError).code === 'too_large');
    for (const lsn of [-1, 1.5, Number.MAX_SAFE_INTEGER + 1, NaN]) {
      assertProtocolError(() => encodeShardReadReply({ pages: [page], lsn }), 'internal');
      assertProtocolError(() => encodeShardReadReply({ pages: [page], lsn: 1, term: lsn }), 'internal');
    }
    assertProtocolError(() => encodeShardReadReply({ pages: ['not bytes' as unknown as Uint8Array], lsn: 1 }), 'internal');
  });
});

describe('encodeShardWriteRequest (a write request without cbor-x)', () => {
  const numbers = [0, 23, 24, 255, 256, 65535, 65536, 2 ** 32, Number.MAX_SAFE_INTEGER];

  it('decodes to the request it was given, for every head size of page numbers, counts, term and deadline', () => {
    for (const count of [1, 2, 23, 24]) {
      for (const n of numbers) {
        const pages = Array.from({ length: count }, (_, i) => ({ page: (n - i) >= 0 ? n - i : i, data: new Uint8Array(i % 3 === 0 ? 4096 : 24).fill(i) }));
        const writeId = new Uint8Array(16).fill(n % 251);
        for (const extra of [{}, { term: n }, { deadlineMs: n }, { term: 3, deadlineMs: n }, { writeId }, { term: 4, deadlineMs: 5, writeId, sentMs: n }]) {
          const req = { pages, ...extra };
          const bytes = encodeShardWriteRequest(req);
          assert.deepEqual(decode(bytes), req, `count ${count}, n ${n}, ${JSON.stringify(extra)}`);
        }
      }
    }
    const valid = { pages: [{ page: 7, data: new Uint8Array(4096).fill(9) }], term: 2 };
    assert.deepEqual(validateShardWriteRequest(decode(encodeShardWriteRequest(valid))), valid);
    const resent = { ...valid, writeId: new Uint8Array(16).fill(3), sentMs: 1_700_000_000_000 };
    assert.deepEqual(validateShardWriteRequest(decode(encodeShardWriteRequest(resent))), resent);
  });

  it('a value of another shape is encoded by encode, so it means the same', () => {
    const data = new Uint8Array(8).fill(1);
    const odd: unknown[] = [
      { pages: [{ page: -1, data }] },
      { pages: [{ page: 1.5, data }] },
      { pages: [{ page: 1, data: 'not bytes' }] },
      { pages: [{ page: 1, data, extra: true }] },
      { pages: [{ page: 1, data }], other: 'field' },
      { pages: 'not a list' },
      { pages: [{ page: 1, data }], term: -2 },
      { pages: [{ page: 1, data }], writeId: 'not bytes' },
      { pages: [{ page: 1, data }], writeId: data, sentMs: -1 },
      { pages: [null] },
    ];
    for (const v of odd) {
      const bytes = encodeShardWriteRequest(v as Parameters<typeof encodeShardWriteRequest>[0]);
      assert.deepEqual(decode(bytes), decode(encode(v)), JSON.stringify(v));
    }
  });

  it('writes into the buffer `alloc` gives, and refuses over bytesMax with too_large', () => {
    const req = { pages: [{ page: 1, data: new Uint8Array(4096) }] };
    const backing = new Uint8Array(8192);
    const bytes = encodeShardWriteRequest(req, { alloc: (n) => backing.subarray(16, 16 + n) });
    assert.equal(bytes.buffer, backing.buffer);
    assert.deepEqual(decode(bytes), req);
    assertProtocolError(() => encodeShardWriteRequest(req, { bytesMax: 4096 }), 'too_large');
  });
});
