/**
 * zeroCensus: the zero sectors and the last non-zero byte of a range of a file, against a
 * byte-by-byte reference, over random layouts of zeros (runs longer than the native comparison's
 * span included), offsets in the file, and views into larger buffers. And what a record
 * header's census says of its payload as read (judgeZeroCensus): torn for every write a crash
 * cut short, rotted for damage a crash cannot leave.
 */
import { strict as assert } from 'node:assert';
import { SECTOR_BYTES, zeroCensus, zeroSectorWithin } from '../../storage-engine/disk';
import { encodeRecord, judgeZeroCensus, recordBytes, RECORD_HEADER_BYTES, viewOf } from '../../storage-engine/log-segment';
import { prng } from '../support/prng';

/** The census by definition: each sector (aligned in the file) within [from, to), one byte at a time. */
function reference(bytes: Uint8Array, at: number, from: number, to: number): { zeroSectors: number; lastNonZero: number } {
  let zeroSectors = 0;
  let lastNonZero = from - 1;
  for (let s = from; s < to; ) {
    const next = Math.min(to, (Math.floor(s / SECTOR_BYTES) + 1) * SECTOR_BYTES);
    let zeros = true;
    for (let k = s; k < next; k++) {
      if (bytes[k - at] !== 0) {
        zeros = false;
        lastNonZero = k;
      }
    }
    if (zeros) zeroSectors++;
    s = next;
  }
  return { zeroSectors, lastNonZero };
}

describe('zeroCensus', () => {
  it('counts the zero sectors and finds the last non-zero byte as a byte-by-byte scan does', () => {
    const rand = prng(20261207);
    for (let round = 0; round < 400; round++) {
      const length = Math.floor(rand() * (round % 10 === 0 ? 300_000 : 9_000));
      const lead = Math.floor(rand() * 16); // a view at any alignment into a larger buffer
      const backing = new Uint8Array(lead + length + 16).fill(0xee);
      const bytes = backing.subarray(lead, lead + length);
      bytes.fill(0);
      // Runs of data and of zeros, of any length (some longer than 64 KiB).
      for (let p = 0; p < length; ) {
        const run = Math.floor(rand() ** 3 * 100_000) + 1;
        if (rand() < 0.5) for (let k = p; k < Math.min(length, p + run); k++) if (rand() < 0.9) bytes[k] = 1 + Math.floor(rand() * 255);
        p += run;
      }
      const at = Math.floor(rand() * 5_000); // the range's offset in the file
      const from = at + Math.floor(rand() * Math.min(length, 700));
      const to = Math.max(from, at + length - Math.floor(rand() * Math.min(length, 700)));
      const label = `round ${round}: length ${length}, at ${at}, [${from}, ${to})`;
      const want = reference(bytes, at, from, to);
      assert.deepEqual(zeroCensus(bytes, at, from, to), want, label);
      assert.equal(zeroSectorWithin(bytes, at, from, to), want.zeroSectors > 0, label);
    }
  });

  it('counts a sector by the part of it inside the range, and a range of zeros has no last non-zero byte', () => {
    const bytes = new Uint8Array(2048);
    bytes[10] = 1; // sector 0 of the file
    bytes[1500] = 2; // sector 2
    // [100, 1600): sector 0 from 100 on and sector 3 to 1600 are zeros, sector 1 is, sector 2 is not.
    assert.deepEqual(zeroCensus(bytes, 0, 100, 1600), { zeroSectors: 3, lastNonZero: 1500 });
    assert.deepEqual(zeroCensus(bytes, 0, 0, 1600), { zeroSectors: 2, lastNonZero: 1500 });
    assert.deepEqual(zeroCensus(bytes, 0, 1501, 2048), { zeroSectors: 2, lastNonZero: 1500 });
    assert.deepEqual(zeroCensus(new Uint8Array(100), 1000, 1000, 1100), { zeroSectors: 2, lastNonZero: 999 }); // across 1024
    assert.deepEqual(zeroCensus(bytes, 0, 5, 5), { zeroSectors: 0, lastNonZero: 4 });
  });
});

describe('a record header\'s zero census (judgeZeroCensus)', () => {
  /** A payload of runs of data and zeros (zero sectors, zero tails, pages of zeros), at random. */
  function payloadOf(rand: () => number): Uint8Array {
    const length = rand() < 0.2 ? 4096 : 1 + Math.floor(rand() * 9000);
    const bytes = new Uint8Array(length);
    if (rand() < 0.1) return bytes; // all zeros
    for (let p = 0; p < length; ) {
      const run = 1 + Math.floor(rand() ** 2 * 1500);
      if (rand() < 0.5) for (let k = p; k < Math.min(length, p + run); k++) bytes[k] = rand() < 0.8 ? 1 + Math.floor(rand() * 255) : 0;
      p += run;
    }
    return bytes;
  }

  /** A record of a random payload, encoded to lie at a random file offset `at` (its payload at `at` + 32). */
  function randomRecord(rand: () => number): { payload: Uint8Array; at: number; rec: Uint8Array } {
    const payload = payloadOf(rand);
    const at = 64 + 8 * Math.floor(rand() * 600);
    const rec = new Uint8Array(recordBytes(payload.length));
    encodeRecord(rec, viewOf(rec), 0, 7, 2, 1, payload, undefined, at);
    return { payload, at, rec };
  }

  it('reads every write a crash cut short as torn: any sectors of its payload not written, its end cut at any byte, or both', () => {
    const rand = prng(7041);
    for (let round = 0; round < 3000; round++) {
      const { payload, at, rec } = randomRecord(rand);
      const torn = rec.slice();
      const start = at + RECORD_HEADER_BYTES;
      const end = start + payload.length;
      // Sectors of the file the write did not reach (their bytes within the payload).
      for (let s = Math.floor(start / SECTOR_BYTES) * SECTOR_BYTES; s < end; s += SECTOR_BYTES) {
        if (rand() < 0.15) torn.fill(0, Math.max(s, start) - at, Math.min(s + SECTOR_BYTES, end) - at);
      }
      if (rand() < 0.5) torn.fill(0, start - at + Math.floor(rand() * payload.length), end - at);
      const changed = torn.some((b, i) => b !== rec[i]);
      const label = `round ${round}: ${payload.length} bytes at ${at}`;
      assert.equal(judgeZeroCensus(torn, 0, start), changed ? 'torn' : 'rotted', label);
    }
  });

  it('reads rot as rotted: a flipped bit of a zero byte, or of a byte of data that stays non-zero', () => {
    const rand = prng(7043);
    for (let round = 0; round < 3000; round++) {
      const { payload, at, rec } = randomRecord(rand);
      const k = RECORD_HEADER_BYTES + Math.floor(rand() * payload.length);
      const before = rec[k]!;
      rec[k] = before ^ (1 << Math.floor(rand() * 8));
      if (before !== 0 && rec[k] === 0) continue; // data that became zero: what a crash can leave too
      assert.equal(judgeZeroCensus(rec, 0, at + RECORD_HEADER_BYTES), 'rotted', `round ${round}: ${payload.length} bytes at ${at}, byte ${k - RECORD_HEADER_BYTES} ${before} -> ${rec[k]}`);
    }
  });

  it('says nothing of a record written before the census (the field zero)', () => {
    const payload = new Uint8Array(100).fill(3);
    const out = new Uint8Array(recordBytes(payload.length));
    encodeRecord(out, viewOf(out), 0, 7, 2, 1, payload);
    assert.equal(judgeZeroCensus(out, 0, 64 + RECORD_HEADER_BYTES), 'none');
  });
});
