/** MetaStore: format, atomic replacement under crashes at every step, corruption and fault handling. */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { crc32c } from '../../storage-engine/crc32c';
import { CorruptionError } from '../../storage-engine/errors';
import {
  decodeMeta,
  encodeMeta,
  META_HEADER_BYTES,
  MetaStore,
} from '../../storage-engine/metadata';
import { RealDisk } from '../../storage-engine/real-disk';
import { SimDisk, SimulatedCrash } from '../../storage-engine/sim-disk';
import { expectStorageError } from '../support/expect';

const DIR = 'node/meta';
const OLD = { term: 7, votedFor: 'node-a', members: ['node-a', 'node-b', 'node-c'] };
const NEW = { term: 8, votedFor: 'node-b', members: ['node-a', 'node-b', 'node-c', 'node-d'], note: 'x'.repeat(300) };

/** A SimDisk with a durable DIR, optionally holding a durable OLD value under 'vote'. */
function setup(withOld: boolean): { disk: SimDisk; store: MetaStore } {
  const disk = new SimDisk();
  disk.mkdirp(DIR);
  disk.fsyncDir('');
  disk.fsyncDir('node');
  disk.fsyncDir(DIR);
  const store = new MetaStore(disk, DIR);
  if (withOld) store.write('vote', OLD);
  return { disk, store };
}

describe('MetaStore', () => {
  it('round-trips values and returns undefined for a missing name or directory', () => {
    const { disk, store } = setup(false);
    assert.equal(store.read('vote'), undefined);
    store.write('vote', OLD);
    assert.deepEqual(store.read<typeof OLD>('vote'), OLD);
    store.write('vote', NEW);
    assert.deepEqual(store.read('vote'), NEW);
    store.write('zero', 0);
    assert.equal(store.read<number>('zero'), 0);
    store.write('null', null);
    assert.equal(store.read('null'), null);
    assert.equal(new MetaStore(disk, 'no/such/dir').read('vote'), undefined);
    assert.deepEqual(disk.list(DIR), ['null', 'vote', 'zero']);
  });

  it('a file that cannot be opened for another reason than its absence is an io_error naming why, not a value never written', () => {
    const { disk, store } = setup(false);
    disk.mkdirp(`${DIR}/vote`); // a directory where the file would be
    const e = expectStorageError(() => store.read('vote'), 'io_error');
    assert.equal(e.details?.['errno'], 'EISDIR');
  });

  it('writes the documented format: magic, version 1, length, CRC-32C, inspectable JSON', () => {
    const { disk, store } = setup(false);
    store.write('term', { term: 3 });
    const file = disk.fileBytes(`${DIR}/term`);
    const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
    assert.equal(new TextDecoder().decode(file.subarray(0, 8)), 'STRMETA1');
    assert.equal(dv.getUint32(8, true), 1);
    const payload = file.subarray(META_HEADER_BYTES);
    assert.equal(dv.getUint32(12, true), payload.length);
    assert.equal(dv.getUint32(16, true), crc32c(payload));
    assert.equal(new TextDecoder().decode(payload), '{"term":3}');
    // Durable when write() returns, without any further sync.
    disk.powerCut();
    assert.deepEqual(new MetaStore(disk, DIR).read('term'), { term: 3 });
  });

  it('a crash after every mutating step of write() leaves the old or the new value, never a mix or an error', () => {
    for (const withOld of [true, false]) {
      const probe = setup(withOld);
      const start = probe.disk.mutatingOps;
      probe.store.write('vote', NEW);
      const steps = probe.disk.mutatingOps - start;
      assert.equal(steps, 5); // open(create,truncate), write, fdatasync, rename, fsyncDir
      const expectedOld = withOld ? OLD : undefined;
      const tears: Array<{ path: string; keepBytes: number } | undefined> = [undefined];
      for (const path of [`${DIR}/vote.tmp`, `${DIR}/vote`]) {
        for (const keepBytes of [0, 1, 19, 20, 50, 10_000]) tears.push({ path, keepBytes });
      }
      for (let n = 0; n <= steps; n++) {
        for (const tear of tears) {
          const what = `crash after ${n} steps, tear ${JSON.stringify(tear)}`;
          const { disk, store } = setup(withOld);
          disk.crashAfter(n);
          let crashed = false;
          try {
            store.write('vote', NEW);
          } catch (e) {
            assert.ok(e instanceof SimulatedCrash, `${what}: unexpected ${String(e)}`);
            crashed = true;
          }
          assert.equal(crashed, n < steps);
          disk.powerCut(tear === undefined ? {} : { tear });
          const reopened = new MetaStore(disk, DIR);
          const got = reopened.read('vote');
          if (n === steps) {
            assert.deepEqual(got, NEW, `${what}: completed write lost`);
          } else {
            assert.ok(
              JSON.stringify(got) === JSON.stringify(expectedOld) || JSON.stringify(got) === JSON.stringify(NEW),
              `${what}: got ${JSON.stringify(got)}`,
            );
          }
          // The store keeps working after the crash, whatever the tmp file holds.
          reopened.write('vote', { term: 99 });
          assert.deepEqual(reopened.read('vote'), { term: 99 });
          assert.equal(disk.exists(`${DIR}/vote.tmp`), false);
        }
      }
    }
  });

  it('a flipped byte anywhere in the file gives CorruptionError, never a value', () => {
    const { disk, store } = setup(true);
    const size = disk.fileBytes(`${DIR}/vote`).length;
    for (let offset = 0; offset < size; offset++) {
      disk.flipBits(`${DIR}/vote`, offset, 1);
      let caught: unknown;
      try {
        store.read('vote');
      } catch (e) {
        caught = e;
      }
      assert.ok(caught instanceof CorruptionError, `offset ${offset}: ${String(caught)}`);
      assert.equal(caught.code, 'corruption');
      assert.equal(caught.reports[0]!.file, `${DIR}/vote`);
      disk.flipBits(`${DIR}/vote`, offset, 1);
    }
    assert.deepEqual(store.read('vote'), OLD);
  });

  it('a truncated or extended file gives CorruptionError', () => {
    const { disk, store } = setup(true);
    const path = `${DIR}/vote`;
    const size = disk.fileBytes(path).length;
    const fh = disk.open(path);
    disk.append(fh, new Uint8Array([0]));
    assert.throws(() => store.read('vote'), CorruptionError);
    for (const len of [size - 1, META_HEADER_BYTES, 10, 0]) {
      disk.truncate(fh, len);
      assert.throws(() => store.read('vote'), CorruptionError, `length ${len}`);
    }
    disk.close(fh);
  });

  it('a file larger than the bound is corruption, without reading it all', () => {
    const { disk } = setup(false);
    const fh = disk.open(`${DIR}/big`, { create: true });
    disk.truncate(fh, META_HEADER_BYTES + 1025);
    disk.close(fh);
    const reads = disk.counters.reads;
    assert.throws(() => new MetaStore(disk, DIR, { payloadBytesMax: 1024 }).read('big'), CorruptionError);
    assert.equal(disk.counters.reads, reads);
  });

  it('ignores a leftover tmp file on read and replaces it on the next write', () => {
    const { disk, store } = setup(true);
    const fh = disk.open(`${DIR}/vote.tmp`, { create: true });
    disk.write(fh, new TextEncoder().encode('garbage from an interrupted write, longer than the new value'.repeat(20)), 0);
    disk.close(fh);
    assert.deepEqual(store.read('vote'), OLD);
    store.write('vote', NEW);
    assert.equal(disk.exists(`${DIR}/vote.tmp`), false);
    assert.deepEqual(store.read('vote'), NEW);
  });

  it('an fdatasync failure during write throws and the old value stays, before and after a power cut', () => {
    const { disk, store } = setup(true);
    disk.failFsync({ path: `${DIR}/vote.tmp` });
    expectStorageError(() => store.write('vote', NEW), 'fsync_failed');
    assert.deepEqual(store.read('vote'), OLD);
    assert.equal(disk.openFiles, 0);
    disk.powerCut();
    assert.deepEqual(new MetaStore(disk, DIR).read('vote'), OLD);
  });

  it('an fsyncDir failure throws; after a power cut the old value is back', () => {
    const { disk, store } = setup(true);
    disk.failFsync({ path: DIR });
    expectStorageError(() => store.write('vote', NEW), 'fsync_failed');
    disk.powerCut();
    assert.deepEqual(new MetaStore(disk, DIR).read('vote'), OLD);
  });

  it('a write failure (ENOSPC) throws io_error and the old value stays', () => {
    const { disk, store } = setup(true);
    disk.failWrite({ errno: 'ENOSPC' });
    const e = expectStorageError(() => store.write('vote', NEW), 'io_error');
    assert.equal(e.details?.['errno'], 'ENOSPC');
    assert.deepEqual(store.read('vote'), OLD);
    assert.equal(disk.openFiles, 0);
    store.write('vote', NEW);
    assert.deepEqual(store.read('vote'), NEW);
  });

  it('bounds the payload: too_large, and nothing touched on disk', () => {
    const { disk } = setup(true);
    const store = new MetaStore(disk, DIR, { payloadBytesMax: 64 });
    const ops = disk.mutatingOps;
    expectStorageError(() => store.write('vote', { s: 'y'.repeat(100) }), 'too_large');
    assert.equal(disk.mutatingOps, ops);
    expectStorageError(() => new MetaStore(disk, DIR).write('big', 'z'.repeat(1024 * 1024)), 'too_large');
    expectStorageError(() => new MetaStore(disk, DIR, { payloadBytesMax: 1 }), 'bad_request');
    // A file written under a larger bound is refused by a reader with a smaller one.
    assert.throws(() => store.read('vote'), CorruptionError);
  });

  it('rejects bad names and values that are not JSON', () => {
    const { store } = setup(false);
    for (const name of ['', '../x', 'a/b', 'vote.tmp', '.hidden', 'x'.repeat(65), 'sp ace']) {
      expectStorageError(() => store.write(name, 1), 'bad_request');
      expectStorageError(() => store.read(name), 'bad_request');
    }
    expectStorageError(() => store.write('v', undefined), 'bad_request');
    expectStorageError(() => store.write('v', () => 1), 'bad_request');
    // Values JSON.stringify throws on (a cycle, a bigint), refused as such.
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    for (const v of [cyclic, 10n]) assert.match(expectStorageError(() => store.write('v', v), 'bad_request').message, /^metadata value is not JSON-serializable: /);
  });

  it('decodeMeta refuses a valid CRC over invalid JSON and an unknown version', () => {
    const good = encodeMeta({ a: 1 });
    assert.deepEqual(decodeMeta('f', good), { a: 1 });
    const payload = new TextEncoder().encode('{not json');
    const bad = new Uint8Array(META_HEADER_BYTES + payload.length);
    bad.set(good.subarray(0, 8));
    const dv = new DataView(bad.buffer);
    dv.setUint32(8, 1, true);
    dv.setUint32(12, payload.length, true);
    dv.setUint32(16, crc32c(payload), true);
    bad.set(payload, META_HEADER_BYTES);
    assert.throws(() => decodeMeta('f', bad), CorruptionError);
    const v2 = good.slice();
    new DataView(v2.buffer).setUint32(8, 2, true);
    assert.throws(() => decodeMeta('f', v2), /unsupported format version 2/);
  });

  it('works on RealDisk', () => {
    const root = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'strata-meta-test-'));
    try {
      const disk = new RealDisk(root);
      disk.mkdirp('meta');
      const store = new MetaStore(disk, 'meta');
      store.write('catalog', { volumes: ['v1'] });
      store.write('catalog', { volumes: ['v1', 'v2'] });
      assert.deepEqual(store.read('catalog'), { volumes: ['v1', 'v2'] });
      assert.deepEqual(fs.readdirSync(nodePath.join(root, 'meta')), ['catalog']);
      assert.equal(disk.openFiles, 0);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
