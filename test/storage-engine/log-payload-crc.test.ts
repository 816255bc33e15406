import { strict as assert } from 'node:assert';
import { SegmentLog } from '../../storage-engine/log';
import { SimDisk } from '../../storage-engine/sim-disk';
import { crc32c } from '../../storage-engine/crc32c';
import { CorruptionError, StorageError } from '../../storage-engine/errors';

const payload = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);

describe('SegmentLog records with a precomputed payload checksum', () => {
  it('are byte-for-byte the records the log would have checksummed itself', () => {
    const a = new SimDisk();
    const b = new SimDisk();
    const la = SegmentLog.open(a, { dir: 'log' });
    const lb = SegmentLog.open(b, { dir: 'log' });
    for (const [n, fill] of [[5000, 1], [1, 2], [70000, 3], [0, 4]] as const) {
      const p = payload(n, fill);
      la.write([{ term: 1, kind: 1, payload: p }]);
      lb.write([{ term: 1, kind: 1, payload: p, payloadCrc: crc32c(p) }]);
    }
    la.sync();
    lb.sync();
    const name = a.list('log').find((f) => f.endsWith('.log'))!;
    assert.deepEqual(b.fileBytes(`log/${name}`), a.fileBytes(`log/${name}`));
  });

  it('a wrong payload checksum makes the record invalid: recovery does not keep it', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: 'log' });
    const good = payload(4096, 7);
    log.write([{ term: 1, kind: 1, payload: good, payloadCrc: crc32c(good) }]);
    log.write([{ term: 1, kind: 1, payload: good, payloadCrc: (crc32c(good) ^ 1) >>> 0 }]);
    log.sync();
    log.close();
    const again = SegmentLog.open(disk, { dir: 'log' });
    assert.equal(again.lastLsn, 1, 'the record with the wrong checksum is a torn tail, not data');
    assert.deepEqual(again.read(1, 1)[0]!.payload, good);
  });

  it('refuses a payloadCrc that is not an unsigned 32-bit integer', () => {
    const log = SegmentLog.open(new SimDisk(), { dir: 'log' });
    for (const bad of [-1, 2 ** 32, 1.5, Number.NaN]) {
      assert.throws(() => log.write([{ term: 1, kind: 1, payload: payload(8, 0), payloadCrc: bad }]), (e: StorageError) => e.code === 'bad_request');
    }
  });
});

describe('SegmentLog reads with a payload checksum made by the reader (payloadCrc)', () => {
  const written = (): { disk: SimDisk; log: SegmentLog; payloads: Uint8Array[]; file: string } => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: 'log' });
    const payloads = [payload(4096, 1), payload(100, 2), payload(0, 3)];
    log.write(payloads.map((p, i) => ({ term: 1, kind: 1 + i, payload: p })));
    log.sync();
    return { disk, log, payloads, file: `log/${disk.list('log').find((f) => f.endsWith('.log'))!}` };
  };

  it('checks each record against the checksum the reader made of its payload, called once per record with its kind', () => {
    const { log, payloads } = written();
    const seen: { kind: number; bytes: number }[] = [];
    const records = log.read(1, 3, { payloadCrc: (kind, p) => (seen.push({ kind, bytes: p.length }), crc32c(p)) });
    assert.deepEqual(records.map((r) => r.payload), payloads);
    assert.deepEqual(seen, [{ kind: 1, bytes: 4096 }, { kind: 2, bytes: 100 }, { kind: 3, bytes: 0 }]);
  });

  it('a checksum made of other bytes than the record\'s fails the read with CorruptionError naming the segment; undefined leaves the check to the log', () => {
    const { log, payloads, file } = written();
    assert.throws(
      () => log.read(1, 3, { payloadCrc: (kind, p) => (kind === 2 ? crc32c(payload(p.length, 9)) : crc32c(p)) }),
      (e: unknown) => e instanceof CorruptionError && e.reports[0]!.file === file && e.reports[0]!.fromLsn === 2 && /record checksum mismatch/.test(e.message),
    );
    assert.deepEqual(log.read(1, 3, { payloadCrc: () => undefined }).map((r) => r.payload), payloads);
  });

  it('a record damaged on disk fails whichever makes the payload\'s checksum', () => {
    const { disk, log, file } = written();
    const bytes = disk.fileBytes(file);
    // A byte of the first payload's data: its 4096 bytes of 1 are the only run of them in the file.
    const at = bytes.findIndex((b, i) => b === 1 && bytes[i + 4095] === 1) + 2000;
    disk.flipBits(file, at, 1);
    for (const payloadCrc of [undefined, (_k: number, p: Uint8Array) => crc32c(p), () => undefined]) {
      assert.throws(() => log.read(1, 1, payloadCrc === undefined ? {} : { payloadCrc }), (e: unknown) => e instanceof CorruptionError && /record checksum mismatch/.test(e.message));
    }
  });
});
