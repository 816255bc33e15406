import * as assert from 'node:assert/strict';
import {
  ENVELOPE_BYTES_RESERVE,
  ID_LENGTH_MAX,
  MESSAGE_TYPES,
  PAGE_COUNT_MAX,
  PAGES_PER_REQUEST_MAX,
  REQUEST_DATA_BYTES_MAX,
  SHARDS_MAX,
  SHARD_MAP_RANGES_MAX,
  STRIPE_PAGES_MAX,
  VOLUMES_PER_LIST_MAX,
  shardOfPage,
} from '../../messages/api';
import type { MessageType, ReplyMap, RequestMap, VolumeInfo } from '../../messages/api';
import { MESSAGE_BYTES_MAX, decode, encode } from '../../messages/codec';
import {
  REPLY_VALIDATORS,
  REQUEST_VALIDATORS,
  checkReadLsnShards,
  validatePageRead,
  validatePageReadReply,
  validatePageReadRequest,
  validatePageWrite,
  validatePageWriteRequest,
  validatePageZero,
  validatePageZeroRequest,
  validateShardZeroRequest,
  validateReply,
  validateRequest,
  validateShardRead,
  validateShardReadReply,
  validateShardWrite,
  validateShardWriteRequest,
  validateStatusReply,
  validateVolumeBranchRequest,
  validateVolumeCreateRequest,
  validateVolumeDeleteReply,
  validateVolumeDeleteRequest,
  validateVolumeInfo,
  validateVolumeListReply,
  validateShardMapReply,
} from '../../messages/validate';
import { assertProtocolError } from '../support/expect';
import { ProtocolError } from '../../messages/errors';

const page = (fill: number, bytes = 4096): Uint8Array => new Uint8Array(bytes).fill(fill);
const writes = (count: number, bytes = 4096): { page: number; data: Uint8Array }[] =>
  Array.from({ length: count }, (_, i) => ({ page: i, data: page(i & 0xff, bytes) }));

const volumeInfo: VolumeInfo = {
  name: 'db-1.data',
  id: 'v_0001',
  pageCount: 1 << 20,
  pageSize: 4096,
  shards: 4,
  stripePages: 256,
  replicas: 3,
  createdAt: 1_700_000_000_000,
};

/** One valid request and reply of every message type. */
const EXAMPLES: { [T in MessageType]: { request: RequestMap[T]; reply: ReplyMap[T] } } = {
  'volume.create': {
    request: { name: 'db-1.data', pageCount: 1 << 20, pageSize: 4096, shards: 4, stripePages: 256, replicas: 3 },
    reply: volumeInfo,
  },
  'volume.branch': {
    request: { name: 'db-1.test', parent: 'db-1.data', lsns: [42, 0, 7, 9] },
    reply: { ...volumeInfo, name: 'db-1.test', id: 'v_0002', branch: { parent: 'db-1.data', parentId: 'v_0001', lsns: [42, 0, 7, 9] } },
  },
  'volume.list': { request: {}, reply: { volumes: [volumeInfo, { ...volumeInfo, name: 'other', id: 'v2' }] } },
  'volume.info': { request: { name: 'db-1.data' }, reply: volumeInfo },
  'volume.delete': { request: { name: 'db-1.data' }, reply: { deleted: true } },
  'volume.resize': { request: { name: 'db-1.data', pageCount: 1 << 21 }, reply: { ...volumeInfo, pageCount: 1 << 21 } },
  'volume.flush': { request: { volume: 'db-1.data' }, reply: { lsn: 42, lsns: [{ shard: 0, lsn: 42, term: 3 }] } },
  'page.write': {
    request: { volume: 'db-1.data', pages: [{ page: 0, data: page(1) }, { page: 300, data: page(2) }] },
    reply: { lsn: 17, lsns: [{ shard: 0, lsn: 17 }, { shard: 1, lsn: 9, term: 2 }] },
  },
  'page.zero': { request: { volume: 'db-1.data', first: 200, count: 1 << 20 }, reply: { lsn: 18, lsns: [{ shard: 0, lsn: 18 }, { shard: 1, lsn: 10, term: 2 }] } },
  'page.map': { request: { volume: 'db-1.data', first: 0, count: 1 << 20 }, reply: { end: 1 << 20, ranges: [0, 12, 100, 1], lsn: 18, lsns: [{ shard: 0, lsn: 18 }, { shard: 1, lsn: 10, term: 2 }] } },
  'page.read': {
    request: { volume: 'db-1.data', pages: [0, 300, 0], lsn: 17 },
    reply: { pages: [page(1), page(2), page(1)], lsn: 17, lsns: [{ shard: 0, lsn: 17 }] },
  },
  status: {
    request: {},
    reply: {
      node: { id: 'n1', cluster: 'dev', version: '0.1.0', uptimeMs: 1234, hosts: 2 },
      volumes: [
        {
          name: 'db-1.data',
          id: 'v_0001',
          shards: [{ shard: 0, role: 'leader', term: 3, commitLsn: 42, appliedLsn: 41, leader: 'n1', cacheBytes: 4096 }],
        },
      ],
      devices: [{ id: 'dev0', failed: false }],
    },
  },
  'shard.write': {
    request: { pages: [{ page: 5, data: page(9) }], deadlineMs: 1_700_000_000_500, term: 3 },
    reply: { lsn: 43, term: 3 },
  },
  'shard.zero': {
    request: { first: 0, count: 4096, deadlineMs: 1_700_000_000_500, term: 3, earlier: [{ lsn: 42, term: 2 }] },
    reply: { lsn: 44, term: 3 },
  },
  'shard.read': { request: { pages: [5, 6], lsn: 43, term: 3 }, reply: { pages: [page(9), page(0)], lsn: 43, term: 3 } },
  'shard.flush': { request: { term: 3 }, reply: { lsn: 43, term: 3 } },
  'shard.map': { request: { first: 0, count: 1024, term: 3 }, reply: { end: 1024, ranges: [0, 4, 512, 16], lsn: 43, term: 3 } },
};

describe('messages/validate', () => {
  describe('round trips', () => {
    for (const type of MESSAGE_TYPES) {
      it(`${type}: request and reply survive encode → decode → validate`, () => {
        const { request, reply } = EXAMPLES[type];
        assert.deepEqual(validateRequest(type, decode(encode(request))), request);
        assert.deepEqual(validateReply(type, decode(encode(reply))), reply);
        assert.equal(REQUEST_VALIDATORS[type], REQUEST_VALIDATORS[type]); // present for every type
        assert.equal(typeof REPLY_VALIDATORS[type], 'function');
      });
    }

    it('volume.create fills in defaults', () => {
      assert.deepEqual(validateVolumeCreateRequest(decode(encode({ name: 'a', pageCount: 1 }))), {
        name: 'a',
        pageCount: 1,
        pageSize: 4096,
        shards: 1,
        stripePages: 256,
        replicas: 1,
      });
    });

    it('volume.create refuses more shards than the volume has stripes (a shard would hold no page)', () => {
      assert.throws(
        () => validateVolumeCreateRequest({ name: 'a', pageCount: 10, shards: 20 }),
        (e: ProtocolError) => e.code === 'bad_request' && e.details?.['path'] === 'shards' && /20 shards, but 10 pages in stripes of 256 make 1 stripe: at most 1 shard/.test(e.message),
      );
      assert.equal(validateVolumeCreateRequest({ name: 'a', pageCount: 64, shards: 4, stripePages: 16 }).shards, 4);
      assert.throws(() => validateVolumeCreateRequest({ name: 'a', pageCount: 64, shards: 5, stripePages: 16 }), (e: ProtocolError) => e.code === 'bad_request');
    });

    it('optional fields sent as null count as absent', () => {
      assert.deepEqual(validateVolumeCreateRequest({ name: 'a', pageCount: 1, shards: null }).shards, 1);
      assert.deepEqual(validatePageReadRequest({ volume: 'a', pages: [1], lsn: null }), { volume: 'a', pages: [1] });
    });

    it('accepts the limits themselves', () => {
      const spec = validateVolumeCreateRequest({
        name: 'a'.repeat(64),
        pageCount: PAGE_COUNT_MAX,
        pageSize: 8192,
        shards: SHARDS_MAX,
        stripePages: STRIPE_PAGES_MAX,
        replicas: 5,
      });
      assert.equal(spec.pageCount, 2 ** 32 - 1);
      const maxPages = REQUEST_DATA_BYTES_MAX / 4096;
      const req = validatePageWriteRequest(decode(encode({ volume: 'v', pages: writes(maxPages) })));
      assert.equal(req.pages.length, maxPages);
      const read = validatePageReadRequest({ volume: 'v', pages: Array.from({ length: PAGES_PER_REQUEST_MAX }, (_, i) => i) });
      assert.equal(read.pages.length, PAGES_PER_REQUEST_MAX);
    });

    it('a largest valid write and a largest read reply fit in a default message', () => {
      const name = 'n'.repeat(64);
      for (const pageSize of [4096, 8192]) {
        const count = REQUEST_DATA_BYTES_MAX / pageSize;
        const pages = Array.from({ length: count }, (_, i) => ({ page: PAGE_COUNT_MAX - 1 - i, data: page(1, pageSize) }));
        const bytes = encode({ volume: name, pages });
        assert.ok(bytes.byteLength <= MESSAGE_BYTES_MAX, `${bytes.byteLength} bytes`);
        assert.ok(bytes.byteLength - REQUEST_DATA_BYTES_MAX < ENVELOPE_BYTES_RESERVE / 2);
        const reply = encode({ pages: pages.map((p) => p.data), lsn: Number.MAX_SAFE_INTEGER });
        assert.ok(reply.byteLength <= MESSAGE_BYTES_MAX);
      }
    });
  });

  describe('a change\'s request id (requestId)', () => {
    it('volume.create, volume.branch, volume.delete and volume.resize take one (1..64 of [A-Za-z0-9_-]); null is absent; volume.info takes none', () => {
      const id = 'a'.repeat(ID_LENGTH_MAX);
      assert.equal(validateVolumeCreateRequest({ name: 'a', pageCount: 1, requestId: id }).requestId, id);
      assert.equal('requestId' in validateVolumeCreateRequest({ name: 'a', pageCount: 1, requestId: null }), false);
      assert.equal(validateVolumeBranchRequest({ name: 'b', parent: 'a', requestId: 'x_1-Y' }).requestId, 'x_1-Y');
      assert.deepEqual(validateVolumeDeleteRequest({ name: 'a', requestId: 'r' }), { name: 'a', requestId: 'r' });
      assert.deepEqual(validateVolumeDeleteRequest({ name: 'a' }), { name: 'a' });
      assertProtocolError(() => validateRequest('volume.info', { name: 'a', requestId: 'r' }), 'bad_request', 'requestId', /unknown field/);
      assert.deepEqual(validateRequest('volume.resize', { name: 'a', pageCount: 2, requestId: 'r' }), { name: 'a', pageCount: 2, requestId: 'r' });
    });

    it('refuses one that is not an id, naming requestId', () => {
      for (const bad of ['', 'a'.repeat(ID_LENGTH_MAX + 1), 'a b', 'a.b', 7, ['r']]) {
        assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: 1, requestId: bad }), 'bad_request', 'requestId');
        assertProtocolError(() => validateVolumeBranchRequest({ name: 'b', parent: 'a', requestId: bad }), 'bad_request', 'requestId');
        assertProtocolError(() => validateVolumeDeleteRequest({ name: 'a', requestId: bad }), 'bad_request', 'requestId');
        assertProtocolError(() => validateRequest('volume.resize', { name: 'a', pageCount: 2, requestId: bad }), 'bad_request', 'requestId');
      }
    });
  });

  describe('volume.branch', () => {
    it('takes a name, a parent, and optionally one LSN per shard (0 and LSN_MAX included); null lsns is absent', () => {
      assert.deepEqual(validateVolumeBranchRequest({ name: 'b', parent: 'a' }), { name: 'b', parent: 'a' });
      assert.deepEqual(validateVolumeBranchRequest({ name: 'b', parent: 'a', lsns: null }), { name: 'b', parent: 'a' });
      assert.deepEqual(validateVolumeBranchRequest({ name: 'b', parent: 'a', lsns: [0, Number.MAX_SAFE_INTEGER] }), { name: 'b', parent: 'a', lsns: [0, Number.MAX_SAFE_INTEGER] });
      const full = Array.from({ length: SHARDS_MAX }, (_, i) => i);
      assert.deepEqual(validateVolumeBranchRequest({ name: 'b', parent: 'a', lsns: full }).lsns, full);
    });

    it('names the field that is wrong', () => {
      assertProtocolError(() => validateVolumeBranchRequest({ parent: 'a' }), 'bad_request', 'name', /required field is missing/);
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'Bad Name', parent: 'a' }), 'bad_request', 'name', /\[a-z0-9\]\[a-z0-9._-\]\*/);
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'x'.repeat(65), parent: 'a' }), 'bad_request', 'name');
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'b' }), 'bad_request', 'parent', /required field is missing/);
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'b', parent: 7 }), 'bad_request', 'parent', /got the number 7/);
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'b', parent: 'a', lsns: 5 }), 'bad_request', 'lsns', /expected an array/);
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'b', parent: 'a', lsns: [] }), 'bad_request', 'lsns', /at least 1 entries/);
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'b', parent: 'a', lsns: Array.from({ length: SHARDS_MAX + 1 }, () => 1) }), 'bad_request', 'lsns', /at most 256 entries, got 257/);
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'b', parent: 'a', lsns: [3, -1] }), 'bad_request', 'lsns[1]', /0\.\.9007199254740991, got -1/);
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'b', parent: 'a', lsns: [1.5] }), 'bad_request', 'lsns[0]', /got the number 1\.5/);
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'b', parent: 'a', lsns: [2 ** 53] }), 'bad_request', 'lsns[0]');
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'b', parent: 'a', lsns: ['1'] }), 'bad_request', 'lsns[0]', /got the string "1"/);
      assertProtocolError(() => validateVolumeBranchRequest({ name: 'b', parent: 'a', at: 3 }), 'bad_request', 'at', /unknown field \(allowed: name, parent, lsns, requestId\)/);
      assertProtocolError(() => validateRequest('volume.branch', []), 'bad_request', '', /expected a map/);
    });

    it("a VolumeInfo's branch point is checked field by field", () => {
      const branch = { parent: 'a', parentId: 'v1', lsns: [3] };
      assert.deepEqual(validateVolumeInfo({ ...volumeInfo, branch }).branch, branch);
      assert.equal('branch' in validateVolumeInfo({ ...volumeInfo, branch: null }), false);
      assertProtocolError(() => validateVolumeInfo({ ...volumeInfo, branch: 'a' }), 'bad_request', 'branch', /expected a map/);
      assertProtocolError(() => validateVolumeInfo({ ...volumeInfo, branch: { ...branch, parent: 'A A' } }), 'bad_request', 'branch.parent');
      assertProtocolError(() => validateVolumeInfo({ ...volumeInfo, branch: { ...branch, parentId: 'v.1' } }), 'bad_request', 'branch.parentId');
      assertProtocolError(() => validateVolumeInfo({ ...volumeInfo, branch: { ...branch, lsns: [-1] } }), 'bad_request', 'branch.lsns[0]');
      assertProtocolError(() => validateVolumeListReply({ volumes: [{ ...volumeInfo, branch: { parent: 'a', parentId: 'v1' } }] }), 'bad_request', 'volumes[0].branch.lsns', /required field is missing/);
    });
  });

  describe('bad input', () => {
    it('a non-map top level gives bad_request at the root', () => {
      for (const type of MESSAGE_TYPES) {
        for (const value of [[], 'x', 1, null, new Uint8Array(1), new Date(0)]) {
          assertProtocolError(() => validateRequest(type, value), 'bad_request', '', /^message: expected a map/);
          assertProtocolError(() => validateReply(type, value), 'bad_request', '');
        }
      }
    });

    it('missing fields are named', () => {
      assertProtocolError(() => validateVolumeCreateRequest({ pageCount: 1 }), 'bad_request', 'name', /required field is missing/);
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a' }), 'bad_request', 'pageCount');
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a' }), 'bad_request', 'pages');
      assertProtocolError(() => validatePageWriteRequest({ pages: writes(1) }), 'bad_request', 'volume');
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [{ page: 1 }] }), 'bad_request', 'pages[0].data');
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [{ data: page(0) }] }), 'bad_request', 'pages[0].page');
      assertProtocolError(() => validateRequest('volume.info', {}), 'bad_request', 'name');
      assertProtocolError(() => validateRequest('volume.flush', {}), 'bad_request', 'volume');
      assertProtocolError(() => validateRequest('page.read', { volume: 'a' }), 'bad_request', 'pages');
      assertProtocolError(() => validateRequest('shard.write', {}), 'bad_request', 'pages');
      assertProtocolError(() => validateRequest('shard.read', {}), 'bad_request', 'pages');
      assertProtocolError(() => validateReply('page.write', {}), 'bad_request', 'lsn');
      assertProtocolError(() => validateReply('page.read', { pages: [] }), 'bad_request', 'lsn');
      assertProtocolError(() => validateReply('shard.flush', {}), 'bad_request', 'lsn');
      assertProtocolError(() => validateVolumeInfo({ ...volumeInfo, id: undefined }), 'bad_request', 'id');
      assertProtocolError(() => validateStatusReply({ node: { id: 'n', cluster: 'c', version: '1' }, volumes: [] }), 'bad_request', 'node.uptimeMs');
    });

    it('shard.write earlier: 1..8 records, each with an LSN and a term of at least 1', () => {
      const ok = validateRequest('shard.write', { pages: writes(1), earlier: [{ lsn: 7, term: 2 }, { lsn: 9, term: 3 }] });
      assert.deepEqual(ok.earlier, [{ lsn: 7, term: 2 }, { lsn: 9, term: 3 }]);
      const many = Array.from({ length: 9 }, (_, i) => ({ lsn: i + 1, term: 1 }));
      assertProtocolError(() => validateRequest('shard.write', { pages: writes(1), earlier: many }), 'bad_request', 'earlier');
      assertProtocolError(() => validateRequest('shard.write', { pages: writes(1), earlier: [] }), 'bad_request', 'earlier');
      assertProtocolError(() => validateRequest('shard.write', { pages: writes(1), earlier: [{ lsn: 0, term: 1 }] }), 'bad_request', 'earlier[0].lsn');
      assertProtocolError(() => validateRequest('shard.write', { pages: writes(1), earlier: [{ lsn: 3 }] }), 'bad_request', 'earlier[0].term');
      assertProtocolError(() => validateRequest('shard.write', { pages: writes(1), earlier: [5] }), 'bad_request', 'earlier[0]');
    });

    it('shard.write and shard.zero writeId: 16 bytes; sentMs: a time, only beside a writeId', () => {
      const writeId = new Uint8Array(16).fill(7);
      for (const [type, base] of [['shard.write', { pages: writes(1) }], ['shard.zero', { first: 0, count: 4 }]] as const) {
        const ok = validateRequest(type, { ...base, writeId, sentMs: 1_700_000_000_000 });
        assert.deepEqual([ok.writeId, ok.sentMs], [writeId, 1_700_000_000_000]);
        assertProtocolError(() => validateRequest(type, { ...base, writeId: new Uint8Array(15) }), 'bad_request', 'writeId', /expected 16 bytes, got 15/);
        assertProtocolError(() => validateRequest(type, { ...base, writeId: 'abc' }), 'bad_request', 'writeId');
        assertProtocolError(() => validateRequest(type, { ...base, writeId, sentMs: -5 }), 'bad_request', 'sentMs');
        assertProtocolError(() => validateRequest(type, { ...base, sentMs: 5 }), 'bad_request', 'sentMs', /without a writeId/);
      }
    });

    it('shard.map: a range of pages; its reply covers part of it, with ranges ascending and apart within what it covers', () => {
      assert.deepEqual(validateRequest('shard.map', { first: 5, count: 10 }), { first: 5, count: 10 });
      assertProtocolError(() => validateRequest('shard.map', { first: 5, count: 0 }), 'bad_request', 'count');
      assertProtocolError(() => validateRequest('shard.map', { first: 2 ** 32 - 2, count: 2 }), 'out_of_range', 'count');
      assertProtocolError(() => validateRequest('shard.map', { first: 5, count: 1, pages: [1] }), 'bad_request', 'pages');
      const asked = { first: 10, count: 100 };
      assert.deepEqual(validateShardMapReply({ end: 50, ranges: [10, 2, 20, 30], lsn: 4 }, asked), { end: 50, ranges: [10, 2, 20, 30], lsn: 4 });
      assert.deepEqual(validateShardMapReply({ end: 110, ranges: [], lsn: 0 }, asked).ranges, []);
      assertProtocolError(() => validateShardMapReply({ end: 50, ranges: [10, 2, 20], lsn: 4 }, asked), 'bad_request', 'ranges', /pairs/);
      assertProtocolError(() => validateShardMapReply({ end: 50, ranges: [9, 2], lsn: 4 }, asked), 'bad_request', 'ranges[0]');
      assertProtocolError(() => validateShardMapReply({ end: 50, ranges: [10, 2, 12, 3], lsn: 4 }, asked), 'bad_request', 'ranges[2]', /in 13\.\./);
      assertProtocolError(() => validateShardMapReply({ end: 50, ranges: [20, 2, 10, 3], lsn: 4 }, asked), 'bad_request', 'ranges[2]');
      assertProtocolError(() => validateShardMapReply({ end: 50, ranges: [40, 11], lsn: 4 }, asked), 'bad_request', 'ranges[1]');
      assertProtocolError(() => validateShardMapReply({ end: 50, ranges: [40, 0], lsn: 4 }, asked), 'bad_request', 'ranges[1]');
      assertProtocolError(() => validateShardMapReply({ end: 10, ranges: [], lsn: 4 }, asked), 'bad_request', 'end');
      assertProtocolError(() => validateShardMapReply({ end: 111, ranges: [], lsn: 4 }, asked), 'bad_request', 'end');
      assertProtocolError(() => validateShardMapReply({ end: 50, ranges: new Array(2 * SHARD_MAP_RANGES_MAX + 2).fill(1), lsn: 4 }), 'bad_request', 'ranges');
    });

    it('unknown request fields are rejected, unknown reply fields ignored', () => {
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: 1, pagesize: 8192 }), 'bad_request', 'pagesize', /unknown field/);
      assertProtocolError(() => validateRequest('volume.list', { all: true }), 'bad_request', 'all');
      assertProtocolError(() => validateRequest('status', { verbose: 1 }), 'bad_request', 'verbose');
      assertProtocolError(() => validateRequest('shard.flush', { lsn: 1 }), 'bad_request', 'lsn');
      assertProtocolError(() => validateRequest('shard.write', { pages: writes(1), earlier: [{ lsn: 1, term: 1, page: 2 }] }), 'bad_request', 'earlier[0].page');
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [{ page: 1, data: page(0), crc: 1 }] }), 'bad_request', 'pages[0].crc');
      assert.deepEqual(validateReply('page.write', { lsn: 3, future: 'x' }), { lsn: 3 });
      assert.deepEqual(validateReply('volume.info', { ...volumeInfo, branchOf: 'x' }), volumeInfo);
    });

    it('wrong types are named with what was got', () => {
      assertProtocolError(() => validateVolumeCreateRequest({ name: 1, pageCount: 1 }), 'bad_request', 'name', /got the number 1/);
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: '1' }), 'bad_request', 'pageCount', /expected an integer, got the string "1"/);
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: true }), 'bad_request', 'pageCount');
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: {} }), 'bad_request', 'pages', /expected an array, got a map/);
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [5] }), 'bad_request', 'pages[0]', /expected a map/);
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [{ page: 1, data: 'AAAA' }] }), 'bad_request', 'pages[0].data', /expected a byte string/);
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [{ page: 1, data: new Uint16Array(2048) }] }), 'bad_request', 'pages[0].data', /Uint16Array/);
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1, '2'] }), 'bad_request', 'pages[1]');
      assertProtocolError(() => validatePageReadReply({ pages: [page(0), 7], lsn: 1 }), 'bad_request', 'pages[1]');
      assertProtocolError(() => validateVolumeDeleteReply({ deleted: 1 }), 'bad_request', 'deleted');
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: 1, pageSize: 4000 }), 'bad_request', 'pageSize', /one of 4096, 8192/);
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: 1, replicas: 2 }), 'bad_request', 'replicas', /one of 1, 3, 5/);
      assertProtocolError(() => validateStatusReply({ ...EXAMPLES.status.reply, volumes: [{ name: 'v', id: 'i', shards: [{ shard: 0, role: 'boss', term: 0, commitLsn: 0, appliedLsn: 0 }] }] }), 'bad_request', 'volumes[0].shards[0].role');
    });

    it('negative, non-integer and too big numbers', () => {
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: 0 }), 'bad_request', 'pageCount', /1\.\.4294967295, got 0/);
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: -5 }), 'bad_request', 'pageCount');
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: 1.5 }), 'bad_request', 'pageCount', /got the number 1\.5/);
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: NaN }), 'bad_request', 'pageCount');
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: Infinity }), 'bad_request', 'pageCount');
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: PAGE_COUNT_MAX + 1 }), 'bad_request', 'pageCount');
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: 1, shards: 0 }), 'bad_request', 'shards');
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: 1, shards: SHARDS_MAX + 1 }), 'bad_request', 'shards');
      assertProtocolError(() => validateVolumeCreateRequest({ name: 'a', pageCount: 1, stripePages: STRIPE_PAGES_MAX + 1 }), 'bad_request', 'stripePages');
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [{ page: -1, data: page(0) }] }), 'bad_request', 'pages[0].page');
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [{ page: 0.5, data: page(0) }] }), 'bad_request', 'pages[0].page');
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [{ page: PAGE_COUNT_MAX, data: page(0) }] }), 'out_of_range', 'pages[0].page');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [2 ** 53] }), 'out_of_range', 'pages[0]');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsn: -1 }), 'bad_request', 'lsn');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsn: 2 ** 53 }), 'bad_request', 'lsn');
      // One LSN per shard: 1..SHARDS_MAX entries, each shard once, not with `lsn`.
      const lsns = Array.from({ length: SHARDS_MAX }, (_, shard) => ({ shard, lsn: shard * 3, term: 1 }));
      assert.deepEqual(validatePageReadRequest({ volume: 'a', pages: [1], lsns }).lsns, lsns);
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsns: [] }), 'bad_request', 'lsns');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsns: [...lsns, { shard: 0, lsn: 1 }] }), 'bad_request', 'lsns');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsns: [{ shard: 2, lsn: 1 }, { shard: 2, lsn: 5 }] }), 'bad_request', 'lsns[1].shard');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsns: [{ shard: SHARDS_MAX, lsn: 1 }] }), 'bad_request', 'lsns[0].shard');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsns: [{ shard: 0, lsn: -1 }] }), 'bad_request', 'lsns[0].lsn');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsns: [{ shard: 0 }] }), 'bad_request', 'lsns[0].lsn');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsns: [{ shard: 0, lsn: 1, at: 2 }] }), 'bad_request', 'lsns[0].at');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsns: [7] }), 'bad_request', 'lsns[0]');
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [1], lsn: 3, lsns: [{ shard: 0, lsn: 1 }] }), 'bad_request', 'lsns');
      assert.deepEqual(validatePageReadRequest({ volume: 'a', pages: [1], lsn: null, lsns: [{ shard: 0, lsn: 1 }] }).lsns, [{ shard: 0, lsn: 1 }]);
      assertProtocolError(() => checkReadLsnShards([{ shard: 0, lsn: 1 }, { shard: 4, lsn: 1 }], 4, 'lsns'), 'out_of_range', 'lsns[1].shard');
      checkReadLsnShards([{ shard: 3, lsn: 1 }], 4, 'lsns');
      assertProtocolError(() => validateShardWriteRequest({ pages: writes(1), deadlineMs: 1.5 }), 'bad_request', 'deadlineMs');
      assertProtocolError(() => validateShardWriteRequest({ pages: writes(1), term: -1 }), 'bad_request', 'term');
      assertProtocolError(() => validateReply('page.write', { lsn: 1, lsns: [{ shard: SHARDS_MAX, lsn: 1 }] }), 'bad_request', 'lsns[0].shard');
      assertProtocolError(() => validateVolumeInfo({ ...volumeInfo, createdAt: -1 }), 'bad_request', 'createdAt');
    });

    it('bad names', () => {
      for (const name of ['', 'A', 'Abc', '-a', '.a', 'a b', 'a/b', 'a*', 'é', 'a'.repeat(65)]) {
        assertProtocolError(() => validateVolumeCreateRequest({ name, pageCount: 1 }), 'bad_request', 'name', /\[a-z0-9\]\[a-z0-9._-\]\*/);
        assertProtocolError(() => validatePageReadRequest({ volume: name, pages: [1] }), 'bad_request', 'volume');
      }
      for (const id of ['', 'a.b', 'a*', 'a>', 'a b', 'x'.repeat(65)]) {
        assertProtocolError(() => validateVolumeInfo({ ...volumeInfo, id }), 'bad_request', 'id');
      }
      const long = assertProtocolError(() => validateVolumeCreateRequest({ name: 'Z'.repeat(10_000), pageCount: 1 }), 'bad_request', 'name');
      assert.ok(long.message.length < 200, 'a bad value is quoted shortened');
    });

    it('wrong data length', () => {
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [{ page: 0, data: page(0, 100) }] }), 'bad_request', 'pages[0].data', /expected 4096 or 8192 bytes, got 100/);
      const mixed = [{ page: 0, data: page(0) }, { page: 1, data: page(0, 8192) }];
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: mixed }), 'bad_request', 'pages[1].data', /expected 4096 bytes like pages\[0\]\.data, got 8192/);
      // against the volume's page size
      const req = validatePageWriteRequest({ volume: 'a', pages: writes(4, 8192) });
      assertProtocolError(() => validatePageWrite(req, 4096, 1000), 'bad_request', 'pages[0].data', /^pages\[0\]\.data: expected 4096 bytes, got 8192$/);
      assert.equal(validatePageWrite(validatePageWriteRequest({ volume: 'a', pages: writes(4) }), 4096, 1000).pages.length, 4);
    });

    it('the message a brief example names: pages[3].data: expected 4096 bytes, got 100', () => {
      const pages = writes(4);
      const req = { volume: 'a', pages: [...pages.slice(0, 3), { page: 3, data: page(0, 100) }] };
      // the request-level check names the same field (all entries must share one size)
      assertProtocolError(() => validatePageWriteRequest(req), 'bad_request', 'pages[3].data', /got 100/);
      assertProtocolError(() => validatePageWrite(req, 4096, 100), 'bad_request', 'pages[3].data', /^pages\[3\]\.data: expected 4096 bytes, got 100$/);
    });

    it('pages out of the volume give out_of_range', () => {
      const req = validatePageWriteRequest({ volume: 'a', pages: [{ page: 5, data: page(0) }, { page: 100, data: page(0) }] });
      const err = assertProtocolError(() => validatePageWrite(req, 4096, 100), 'out_of_range', 'pages[1].page', /page 100 is out of range/);
      assert.equal(err.details?.pageCount, 100);
      const read = validatePageReadRequest({ volume: 'a', pages: [99, 100] });
      assertProtocolError(() => validatePageRead(read, 4096, 100), 'out_of_range', 'pages[1]');
      assert.equal(validatePageRead(validatePageReadRequest({ volume: 'a', pages: [99] }), 4096, 100).pages.length, 1);
    });

    it('a range made zeros: first a page, count 1..PAGE_COUNT_MAX, within the largest volume and then within the volume', () => {
      assert.deepEqual(validatePageZeroRequest({ volume: 'a', first: PAGE_COUNT_MAX - 1, count: 1 }), { volume: 'a', first: PAGE_COUNT_MAX - 1, count: 1 });
      assertProtocolError(() => validatePageZeroRequest({ volume: 'a', first: 0, count: 0 }), 'bad_request', 'count');
      assertProtocolError(() => validatePageZeroRequest({ volume: 'a', first: -1, count: 1 }), 'bad_request', 'first');
      assertProtocolError(() => validatePageZeroRequest({ volume: 'a', first: 1.5, count: 1 }), 'bad_request', 'first');
      assertProtocolError(() => validatePageZeroRequest({ volume: 'a', count: 1 }), 'bad_request', 'first', /required/);
      assertProtocolError(() => validatePageZeroRequest({ volume: 'a', first: 1, count: PAGE_COUNT_MAX }), 'out_of_range', 'count', /past the largest volume/);
      assertProtocolError(() => validatePageZeroRequest({ volume: 'a', first: 1, count: 2, pages: [] }), 'bad_request', 'pages');
      assertProtocolError(() => validateShardZeroRequest({ first: 1, count: 2, earlier: [] }), 'bad_request', 'earlier');
      const err = assertProtocolError(() => validatePageZero({ first: 90, count: 11 }, 100), 'out_of_range', 'count', /90\.\.100 are not all in the volume/);
      assert.equal(err.details?.pageCount, 100);
      assert.deepEqual(validatePageZero({ first: 90, count: 10 }, 100), { first: 90, count: 10 });
    });

    it('duplicate pages in a write are refused', () => {
      const pages = [{ page: 1, data: page(0) }, { page: 2, data: page(0) }, { page: 1, data: page(1) }];
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages }), 'bad_request', 'pages[2].page', /duplicate page 1 \(also at pages\[0\]\)/);
    });

    it('too many pages give too_large, zero pages bad_request', () => {
      const n = PAGES_PER_REQUEST_MAX + 1;
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: Array.from({ length: n }, (_, i) => i) }), 'too_large', 'pages', /at most 256 entries, got 257/);
      assertProtocolError(() => validateShardWriteRequest({ pages: Array.from({ length: n }, (_, i) => ({ page: i, data: new Uint8Array(0) })) }), 'too_large', 'pages');
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: [] }), 'bad_request', 'pages', /at least 1/);
      assertProtocolError(() => validatePageReadRequest({ volume: 'a', pages: [] }), 'bad_request', 'pages');
    });

    it('oversize total data gives too_large', () => {
      const count = REQUEST_DATA_BYTES_MAX / 4096 + 1; // one page over, still ≤ 256 entries
      assert.ok(count <= PAGES_PER_REQUEST_MAX);
      const err = assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: writes(count) }), 'too_large', 'pages');
      assert.equal(err.details?.bytesMax, REQUEST_DATA_BYTES_MAX);
      assertProtocolError(() => validatePageWriteRequest({ volume: 'a', pages: writes(200, 8192) }), 'too_large', 'pages');
      // a read whose reply would not fit
      const read = validatePageReadRequest({ volume: 'a', pages: Array.from({ length: 200 }, (_, i) => i) });
      assertProtocolError(() => validatePageRead(read, 8192, 1000), 'too_large', 'pages');
      assert.equal(validatePageRead(read, 4096, 1000).pages.length, 200);
    });

    it('list and status replies are bounded', () => {
      const volumes = Array.from({ length: VOLUMES_PER_LIST_MAX + 1 }, () => volumeInfo);
      assertProtocolError(() => validateVolumeListReply({ volumes }), 'bad_request', 'volumes');
      assertProtocolError(() => validateVolumeListReply({ volumes: [volumeInfo, { ...volumeInfo, pageSize: 1 }] }), 'bad_request', 'volumes[1].pageSize');
    });

    it('a page of the volume list: after a name, at most limit; its next is its last volume', () => {
      assert.deepEqual(validateRequest('volume.list', {}), {});
      assert.deepEqual(validateRequest('volume.list', { after: 'db-1', limit: 10 }), { after: 'db-1', limit: 10 });
      assert.deepEqual(validateRequest('volume.list', { limit: VOLUMES_PER_LIST_MAX }), { limit: VOLUMES_PER_LIST_MAX });
      assertProtocolError(() => validateRequest('volume.list', { limit: 0 }), 'bad_request', 'limit');
      assertProtocolError(() => validateRequest('volume.list', { limit: VOLUMES_PER_LIST_MAX + 1 }), 'bad_request', 'limit');
      assertProtocolError(() => validateRequest('volume.list', { limit: 1.5 }), 'bad_request', 'limit');
      assertProtocolError(() => validateRequest('volume.list', { after: 'Bad Name' }), 'bad_request', 'after');
      assertProtocolError(() => validateRequest('volume.list', { after: '' }), 'bad_request', 'after');
      const other = { ...volumeInfo, name: 'other', id: 'v2' };
      assert.deepEqual(validateVolumeListReply({ volumes: [volumeInfo, other], next: 'other', epoch: 4 }), { volumes: [volumeInfo, other], next: 'other', epoch: 4 });
      assertProtocolError(() => validateVolumeListReply({ volumes: [volumeInfo, other], next: volumeInfo.name }), 'bad_request', 'next');
      assertProtocolError(() => validateVolumeListReply({ volumes: [], next: 'other' }), 'bad_request', 'next');
      assertProtocolError(() => validateVolumeListReply({ volumes: [], epoch: -1 }), 'bad_request', 'epoch');
    });

    it('read replies can be checked against what was asked', () => {
      const reply = { pages: [page(0), page(0)], lsn: 1 };
      assert.equal(validatePageReadReply(reply, { count: 2, pageSize: 4096 }).pages.length, 2);
      assertProtocolError(() => validatePageReadReply(reply, { count: 3, pageSize: 4096 }), 'bad_request', 'pages', /expected 3 pages, got 2/);
      assertProtocolError(() => validateShardReadReply(reply, { count: 2, pageSize: 8192 }), 'bad_request', 'pages[0]');
    });
  });

  describe('shard geometry', () => {
    const layout = { pageCount: 4096, pageSize: 4096 as const, shards: 4, stripePages: 256 };

    it('shardOfPage stripes pages over shards', () => {
      assert.equal(shardOfPage(0, layout), 0);
      assert.equal(shardOfPage(255, layout), 0);
      assert.equal(shardOfPage(256, layout), 1);
      assert.equal(shardOfPage(1023, layout), 3);
      assert.equal(shardOfPage(1024, layout), 0);
    });

    it('a shard refuses pages of another shard', () => {
      const ok = validateShardWriteRequest({ pages: [{ page: 256, data: page(0) }, { page: 1280, data: page(0) }] });
      assert.equal(validateShardWrite(ok, { ...layout, shard: 1 }), ok);
      const err = assertProtocolError(() => validateShardWrite(ok, { ...layout, shard: 0 }), 'bad_request', 'pages[0].page', /belongs to shard 1, not shard 0/);
      assert.equal(err.details?.shard, 1);
      const read = validateRequest('shard.read', { pages: [256, 0] });
      assertProtocolError(() => validateShardRead(read, { ...layout, shard: 1 }), 'bad_request', 'pages[1]');
      assertProtocolError(() => validateShardRead(validateRequest('shard.read', { pages: [5000] }), { ...layout, shard: 1 }), 'out_of_range', 'pages[0]');
      assertProtocolError(() => validateShardWrite(validateShardWriteRequest({ pages: [{ page: 256, data: page(0, 8192) }] }), { ...layout, shard: 1 }), 'bad_request', 'pages[0].data');
    });
  });
});

describe('byte strings', () => {
  it('decoded pages come back as plain Uint8Array views of the received bytes (no Buffer, no copy)', () => {
    const data = new Uint8Array(4096).fill(5);
    const wire = encode({ pages: [{ page: 1, data }] });
    const req = validateShardWriteRequest(decode(wire));
    const got = req.pages[0]!.data;
    assert.equal(Object.getPrototypeOf(got), Uint8Array.prototype);
    assert.equal(got.buffer, wire.buffer, 'the page is a view into the received message, not a copy');
    assert.deepEqual(got, data);
  });
});
