import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { TRANSIT_RESENDS_MAX, Volume, createClient, type ClientTransport, type TransportRequestOptions } from '../../cluster/client';
import { decode, encode, encodeShardReadReply, encodeShardWriteRequest } from '../../messages/codec';
import { ProtocolError, errorReply, type ErrorReply } from '../../messages/errors';
import { HEADER_DEADLINE, HEADER_SCHEMA, HEADER_TYPE } from '../../messages/headers';
import { apiSubject, shardSubject } from '../../messages/subjects';
import type { ShardReadReply, ShardWriteRequest, VolumeInfo } from '../../messages/api';
import { validateShardReadReply, validateShardWriteRequest } from '../../messages/validate';
import { validateRaftRequest, type AppendRequest } from '../../messages/raft';
import { crc32c } from '../../storage-engine/crc32c';
import { checkPageDataCrc, damagedInTransit, pageDataCrc, pageWritesCrc } from '../../storage-engine/page-data-crc';
import { rejectsWith } from '../support/expect';

function filled(value: number, size = 4096): Uint8Array {
  const d = new Uint8Array(size).fill(value);
  d[0] = value ^ 0x5a;
  return d;
}

/** Decoded pages (Buffers) as plain Uint8Arrays, to compare. */
function plain(pages: unknown): Uint8Array[] {
  return (pages as Uint8Array[]).map((p) => Uint8Array.from(p));
}

function headers(type: string): Record<string, string> {
  return { [HEADER_TYPE]: type, [HEADER_SCHEMA]: '1', [HEADER_DEADLINE]: String(Date.now() + 5000) };
}

describe('page data checksums in transit (PAGE_DATA_CRC)', () => {
  describe('the checksum', () => {
    it('is the CRC-32C of the pages\' data one after the other; a mismatch is corruption in transit', () => {
      const a = filled(1);
      const b = filled(2);
      const both = new Uint8Array(8192);
      both.set(a, 0);
      both.set(b, 4096);
      assert.equal(pageDataCrc([a, b]), crc32c(both));
      assert.equal(pageWritesCrc([{ data: a }, { data: b }]), crc32c(both));
      assert.notEqual(pageDataCrc([b, a]), pageDataCrc([a, b]), 'the order counts');
      checkPageDataCrc(crc32c(both), pageDataCrc([a, b]), 'x');
      assert.throws(
        () => checkPageDataCrc(crc32c(both), pageDataCrc([a, a]), 'shard.write to v/0'),
        (e: unknown) => damagedInTransit(e) && /^shard\.write to v\/0: its data does not match/.test((e as Error).message),
      );
      assert.equal(damagedInTransit(new ProtocolError('corruption', 'a rotted log')), false, 'damage of a replica\'s storage is not');
    });

    it('goes on the wire with a shard.write and a shard.read reply, and is validated as an unsigned 32-bit integer', () => {
      const pages = [{ page: 3, data: filled(3) }];
      const req: ShardWriteRequest = { pages, crc: 0xffffffff, writeId: new Uint8Array(16) };
      assert.equal(validateShardWriteRequest(decode(encodeShardWriteRequest(req))).crc, 0xffffffff);
      const reply: ShardReadReply = { pages: [filled(4)], lsn: 9, term: 2, crc: 12345 };
      assert.deepEqual(validateShardReadReply(decode(encodeShardReadReply(reply))), { pages: [filled(4)], lsn: 9, term: 2, crc: 12345 });
      for (const bad of [-1, 2 ** 32, 1.5, 'x']) {
        assert.throws(() => validateShardWriteRequest({ pages, crc: bad }), (e: ProtocolError) => e.code === 'bad_request' && e.details?.['path'] === 'crc', String(bad));
        assert.throws(() => validateShardReadReply({ pages: [filled(4)], lsn: 1, crc: bad }), (e: ProtocolError) => e.code === 'bad_request' && e.details?.['path'] === 'crc', String(bad));
      }
    });
  });

  it('each record of an append carries its payload\'s checksum, validated as an unsigned 32-bit integer', () => {
    const payload = new Uint8Array(8).fill(1);
    const append = (crc: unknown) => ({ type: 'append', term: 1, leader: 'n1', prevLsn: 0, prevTerm: 0, records: [{ term: 1, kind: 2, payload, crc }], commitLsn: 0 });
    const taken = validateRaftRequest(decode(encode(append(crc32c(payload))))) as AppendRequest;
    assert.equal(taken.records[0]!.crc, crc32c(payload));
    assert.equal((validateRaftRequest(append(null)) as AppendRequest).records[0]!.crc, undefined, 'from a leader of an older version: none');
    for (const bad of [-1, 2 ** 32, 0.5, 'x']) {
      assert.throws(() => validateRaftRequest(append(bad)), (e: ProtocolError) => e.code === 'bad_request' && e.details?.['path'] === 'records[0].crc', String(bad));
    }
  });

  describe('the client (a transport that damages page data)', () => {
    const info: VolumeInfo = { name: 'vol', id: 'v1', pageCount: 64, pageSize: 4096, shards: 2, stripePages: 1, replicas: 1, createdAt: 1 };

    /** Answers volume.info, and each shard request through `shard` (its decoded body, its type). */
    class Transport implements ClientTransport {
      readonly maxPayloadBytes = 1024 * 1024;
      readonly sent: Array<{ type: string; subject: string; body: Record<string, unknown> }> = [];
      constructor(private readonly shard: (type: string, body: Record<string, unknown>, n: number) => unknown) {}
      async request(subject: string, data: Uint8Array, options: TransportRequestOptions): Promise<Uint8Array> {
        const type = options.headers?.[HEADER_TYPE] ?? '';
        if (type === 'volume.info') return encode(info);
        const body = decode(data) as Record<string, unknown>;
        this.sent.push({ type, subject, body });
        const reply = this.shard(type, body, this.sent.filter((s) => s.type === type).length);
        return reply instanceof Uint8Array ? reply : encode(reply);
      }
      close(): Promise<void> {
        return Promise.resolve();
      }
    }
    const inTransit = () => errorReply(new ProtocolError('corruption', 'shard.write to v1/0: its data does not match the checksum it was sent with', { inTransit: true }));

    it('sends each shard.write with the checksum of its own pages\' data', async () => {
      const t = new Transport((type) => (type === 'shard.write' ? { lsn: 1, term: 1 } : errorReply(new ProtocolError('internal', type))));
      const pages = [0, 1, 2, 3].map((page) => ({ page, data: filled(page + 10) }));
      await createClient(t, { cluster: 'c' }).volume('vol').writePages(pages);
      const writes = t.sent.filter((s) => s.type === 'shard.write');
      assert.equal(writes.length, 2, 'one request per shard');
      for (const w of writes) {
        const sent = w.body['pages'] as Array<{ page: number; data: Uint8Array }>;
        assert.equal(w.body['crc'], pageWritesCrc(sent), `its pages ${sent.map((p) => p.page).join(',')}`);
      }
    });

    it('makes a shard.write\'s checksum from the checksums the caller gave with its pages: a page changed after its checksum goes with the checksum of what it was', async () => {
      const t = new Transport((type) => (type === 'shard.write' ? { lsn: 1, term: 1 } : errorReply(new ProtocolError('internal', type))));
      const vol = createClient(t, { cluster: 'c' }).volume('vol');
      // Pages 0 and 2 on shard 0, 1 on shard 1; page 2's checksum not given.
      const was = filled(40);
      const now = filled(41);
      await vol.writePages([{ page: 0, data: now, crc: crc32c(was) }, { page: 1, data: filled(1), crc: crc32c(filled(1)) }, { page: 2, data: filled(2) }]);
      const [w0, w1] = [0, 1].map((shard) => t.sent.find((s) => s.type === 'shard.write' && new RegExp(`\\.v1\\.${shard}(\\.|$)`).test(s.subject))!.body);
      assert.equal(w0!['crc'], pageDataCrc([was, filled(2)]), 'from the given checksum and the data of the page without one');
      assert.notEqual(w0!['crc'], pageDataCrc([now, filled(2)]), 'not from the changed page: its leader refuses it');
      assert.equal(w1!['crc'], pageDataCrc([filled(1)]));
      for (const bad of [-1, 2 ** 32, 1.5, '7']) {
        await rejectsWith(vol.writePages([{ page: 0, data: now, crc: bad as number }]), 'bad_request', /pages\[0\]\.crc/);
      }
    });

    it('sends a write its leader refused as damaged on the way again, the same request, and a write damaged every time fails corruption', async () => {
      const once = new Transport((_type, _body, n) => (n === 1 ? inTransit() : { lsn: 5, term: 1 }));
      const r = await createClient(once, { cluster: 'c' }).volume('vol').writePages([{ page: 0, data: filled(1) }]);
      assert.equal(r.lsn, 5);
      assert.equal(once.sent.length, 2);
      assert.deepEqual(once.sent[1]!.body, once.sent[0]!.body, 'the same pages, write id and checksum');

      const always = new Transport(() => inTransit());
      const e = await rejectsWith(createClient(always, { cluster: 'c' }).volume('vol').writePages([{ page: 0, data: filled(1) }]), 'corruption', /does not match the checksum/);
      assert.equal(e.details?.['inTransit'], true);
      assert.equal(always.sent.length, 1 + TRANSIT_RESENDS_MAX, 'sent again TRANSIT_RESENDS_MAX times, no more');

      // A leader of a version before the checksum refuses the field, taking nothing: sent again without it.
      const older = new Transport((_type, body) =>
        body['crc'] !== undefined ? errorReply(new ProtocolError('bad_request', 'crc: unknown field (allowed: pages, deadlineMs, term, earlier, writeId, sentMs)', { path: 'crc' })) : { lsn: 6, term: 1 },
      );
      assert.equal((await createClient(older, { cluster: 'c' }).volume('vol').writePages([{ page: 0, data: filled(1) }])).lsn, 6);
      assert.deepEqual(older.sent.map((w) => w.body['crc'] === undefined), [false, true]);
      // A crc the node knows and finds bad is not that.
      const badValue = new Transport(() => errorReply(new ProtocolError('bad_request', 'crc: expected an integer in 0..4294967295, got -1', { path: 'crc' })));
      await rejectsWith(createClient(badValue, { cluster: 'c' }).volume('vol').writePages([{ page: 0, data: filled(1) }]), 'bad_request', /expected an integer/);
      assert.equal(badValue.sent.length, 1);

      // Damage of the shard's own storage is the answer at once.
      const rotted = new Transport(() => errorReply(new ProtocolError('corruption', 'the only copy rotted')));
      await rejectsWith(createClient(rotted, { cluster: 'c' }).volume('vol').writePages([{ page: 0, data: filled(1) }]), 'corruption', /rotted/);
      assert.equal(rotted.sent.length, 1);
    });

    it('gives a read\'s result the checksum of its pages in request order, made as each shard\'s reply was checked: a page changed in memory since fails it', async () => {
      const replies: Uint8Array[] = [];
      let release: () => void = () => undefined;
      const later = new Promise<void>((r) => (release = r));
      const t = new Transport((_type, body) => {
        const pages = (body['pages'] as number[]).map((p) => filled(p + 1));
        const bytes = encodeShardReadReply({ pages, lsn: 3, crc: pageDataCrc(pages) });
        replies.push(bytes);
        return bytes;
      });
      // The reply of the second shard comes once the test has changed the first one's memory.
      const request = t.request.bind(t);
      t.request = async (subject, data, options) => {
        const reply = await request(subject, data, options);
        if (replies.length === 2 && reply === replies[1]) await later;
        return reply;
      };
      const reading = createClient(t, { cluster: 'c' }).volume('vol').readPages([3, 0, 1, 2, 5]);
      while (replies.length < 2) await new Promise((r) => setImmediate(r));
      // A byte of the first page of the first shard's reply, already checked.
      const page = (t.sent.find((x) => x.type === 'shard.read')!.body['pages'] as number[])[0]!;
      const first = replies[0]!;
      const at = first.findIndex((b, i) => b === page + 1 && first[i + 4094] === page + 1);
      assert.ok(at >= 0);
      await new Promise((r) => setImmediate(r));
      first[at]! ^= 0x01;
      release();
      const r = await reading;
      const asked = [3, 0, 1, 2, 5];
      const expected = asked.map((p) => filled(p + 1));
      assert.equal(r.crc, pageDataCrc(expected), 'the pages\' as they arrived');
      assert.notDeepEqual(r.pages[asked.indexOf(page)], expected[asked.indexOf(page)], 'the reply was decoded in place: the page changed');
      assert.notEqual(r.crc, pageDataCrc(r.pages), 'a page changed since fails it');
    });

    it('reads again a reply whose pages do not match its checksum, takes one without a checksum, and fails corruption when every reply is damaged', async () => {
      const good = filled(7);
      const damagedReply = (): Uint8Array => {
        const bad = good.slice();
        bad[100]! ^= 0x10;
        return encodeShardReadReply({ pages: [bad], lsn: 3, crc: pageDataCrc([good]) });
      };
      const once = new Transport((_type, _body, n) => (n === 1 ? damagedReply() : { pages: [good], lsn: 3, crc: pageDataCrc([good]) }));
      const r = await createClient(once, { cluster: 'c' }).volume('vol').readPages([0]);
      assert.deepEqual(r.pages[0], good, 'the pages of the reply that matched its checksum');
      assert.equal(once.sent.length, 2);

      const always = new Transport(() => damagedReply());
      const e = await rejectsWith(createClient(always, { cluster: 'c' }).volume('vol').readPages([0]), 'corruption', /shard\.read reply from .*: its data does not match/);
      assert.equal(e.details?.['inTransit'], true);
      assert.equal(always.sent.length, 1 + TRANSIT_RESENDS_MAX);

      // No time left when the damaged reply comes: the damage is the answer, not a timeout.
      let now = 1_000_000;
      const late = new Transport(() => {
        now += 60_000;
        return damagedReply();
      });
      await rejectsWith(createClient(late, { cluster: 'c', nowMs: () => now }).volume('vol').readPages([0]), 'corruption', /does not match/);
      assert.equal(late.sent.length, 1);

      const unchecked = new Transport(() => ({ pages: [good], lsn: 3 }));
      assert.deepEqual((await createClient(unchecked, { cluster: 'c' }).volume('vol').readPages([0])).pages[0], good);
    });
  });

  describe('a node', function () {
    this.timeout(60_000);
    let c: InProcessCluster;
    let shard0: string;
    let volumeId: string;

    async function raw(subject: string, type: string, body: unknown): Promise<Record<string, unknown>> {
      const data = type === 'shard.write' ? encodeShardWriteRequest(body as ShardWriteRequest) : encode(body);
      return decode(await c.client.rawRequest(subject, data, headers(type))) as Record<string, unknown>;
    }
    const errorOf = (reply: Record<string, unknown>): ErrorReply['error'] => {
      assert.ok(reply['error'], `expected an error reply, got ${JSON.stringify(reply).slice(0, 200)}`);
      return (reply as unknown as ErrorReply).error;
    };

    before(async () => {
      c = await startCluster({ nodes: 1, hosts: 1 });
      const info = await c.client.createVolume({ name: 'v-crc', pageCount: 64, shards: 1 });
      shard0 = shardSubject(c.cluster, info.id, 0);
      volumeId = info.id;
    });
    after(async () => {
      await c?.stop();
    });

    it('refuses a shard.write whose pages do not match its checksum, writing nothing, and takes it with the right one', async () => {
      const pages = [{ page: 5, data: filled(5) }, { page: 6, data: filled(6) }];
      const e = errorOf(await raw(shard0, 'shard.write', { pages, crc: (pageWritesCrc(pages) ^ 4) >>> 0 }));
      assert.equal(e.code, 'corruption');
      assert.equal(e.details?.['inTransit'], true);
      assert.match(e.message, /^shard\.write to .*\/0: its data does not match the checksum it was sent with/);
      const vol = c.client.volume('v-crc');
      assert.deepEqual((await vol.readPages([5, 6])).pages, [new Uint8Array(4096), new Uint8Array(4096)], 'nothing was written');
      const ok = await raw(shard0, 'shard.write', { pages, crc: pageWritesCrc(pages) });
      assert.equal(typeof ok['lsn'], 'number', JSON.stringify(ok).slice(0, 200));
      assert.deepEqual((await vol.readPages([5, 6])).pages, [filled(5), filled(6)]);
      const bad = errorOf(await raw(shard0, 'shard.write', { pages, crc: 2 ** 32 }));
      assert.equal(bad.code, 'bad_request');
      assert.equal(bad.details?.['path'], 'crc');
    });

    it('makes the record of a checked shard.write with the checksum it was sent with, not with another pass over its pages', async () => {
      // 64 pages, 256 KiB: without a checksum sent, its record's is made on the CPU pool.
      const pages = Array.from({ length: 64 }, (_, i) => ({ page: i, data: filled(i + 20) }));
      const offloaded = async (): Promise<number> => {
        let n = 0;
        for (const h of await c.nodes[0]!.hostPool.stats()) for (const r of h.device?.shards ?? []) if (r.volumeId === volumeId) n += r.offloaded;
        return n;
      };
      const before = await offloaded();
      const ok = await raw(shard0, 'shard.write', { pages, crc: pageWritesCrc(pages) });
      assert.equal(typeof ok['lsn'], 'number', JSON.stringify(ok).slice(0, 200));
      assert.equal(await offloaded(), before, 'made from the checksum sent');
      const plainWrite = await raw(shard0, 'shard.write', { pages });
      assert.equal(typeof plainWrite['lsn'], 'number', JSON.stringify(plainWrite).slice(0, 200));
      assert.equal(await offloaded(), before + 1, 'without one, made from the record (the check of this test)');
      assert.deepEqual((await c.client.volume('v-crc').readPages([0, 63])).pages, [filled(20), filled(83)]);
      // Put back as the other tests expect: zeros.
      await c.client.volume('v-crc').writePages(pages.map((p) => ({ page: p.page, data: new Uint8Array(4096) })));
    });

    it('answers a shard.read with the checksum of the pages it sends', async () => {
      await c.client.volume('v-crc').writePages([{ page: 9, data: filled(9) }]);
      const r = await raw(shard0, 'shard.read', { pages: [9, 10, 9] });
      const pages = r['pages'] as Uint8Array[];
      assert.deepEqual(plain(pages), [filled(9), new Uint8Array(4096), filled(9)]);
      assert.equal(r['crc'], pageDataCrc(pages));
    });

    it('writes pages given with their checksums; refuses, writing nothing, a page that changed after its checksum was made', async () => {
      const vol = c.client.volume('v-crc');
      const was = filled(44);
      await rejectsWith(vol.writePages([{ page: 44, data: filled(45), crc: crc32c(was) }]), 'corruption', /does not match the checksum/);
      assert.deepEqual((await vol.readPages([44])).pages, [new Uint8Array(4096)], 'nothing was written');
      await vol.writePages([{ page: 44, data: was, crc: crc32c(was) }]);
      assert.deepEqual((await vol.readPages([44])).pages, [was]);
    });

    it('the API: a page.write\'s pages go to their shards with the checksums they were checked against: one changed in the router after its check is refused, writing nothing', async () => {
      const api = (verb: 'page.write' | 'page.read', body: unknown) => raw(apiSubject(c.cluster, verb), verb, body);
      const writePages = Volume.prototype.writePages;
      let given: (number | undefined)[] | undefined;
      // In the router (the in-process node's client): a page's memory changes after the check.
      Volume.prototype.writePages = function (this: Volume, pages, options) {
        if (given === undefined && pages.some((p) => p.crc !== undefined)) {
          given = pages.map((p) => p.crc);
          pages[1]!.data[5]! ^= 0x01;
        }
        return writePages.call(this, pages, options);
      };
      const pages = [{ page: 30, data: filled(30) }, { page: 31, data: filled(31) }];
      try {
        const e = errorOf(await api('page.write', { volume: 'v-crc', pages, crc: pageWritesCrc(pages) }));
        assert.equal(e.code, 'corruption');
        assert.equal(e.details?.['inTransit'], true);
      } finally {
        Volume.prototype.writePages = writePages;
      }
      assert.deepEqual(given, [crc32c(filled(30)), crc32c(filled(31))]);
      const zeros = await api('page.read', { volume: 'v-crc', pages: [30, 31] });
      assert.deepEqual(plain(zeros['pages']), [new Uint8Array(4096), new Uint8Array(4096)], 'nothing was written');
      await api('page.write', { volume: 'v-crc', pages, crc: pageWritesCrc(pages) });
      assert.deepEqual(plain((await api('page.read', { volume: 'v-crc', pages: [30, 31] }))['pages']), [filled(30), filled(31)]);
    });

    it('the API: refuses a page.write whose pages do not match its checksum, writing nothing; answers a page.read with its pages\' checksum', async () => {
      const api = (verb: 'page.write' | 'page.read', body: unknown) => raw(apiSubject(c.cluster, verb), verb, body);
      const pages = [{ page: 20, data: filled(20) }, { page: 21, data: filled(21) }];
      const e = errorOf(await api('page.write', { volume: 'v-crc', pages, crc: (pageWritesCrc(pages) ^ 1) >>> 0 }));
      assert.equal(e.code, 'corruption');
      assert.equal(e.details?.['inTransit'], true);
      assert.match(e.message, /^page\.write: its data does not match/);
      const zeros = await api('page.read', { volume: 'v-crc', pages: [20, 21] });
      assert.deepEqual(plain(zeros['pages']), [new Uint8Array(4096), new Uint8Array(4096)], 'nothing was written');
      assert.equal(zeros['crc'], pageDataCrc([new Uint8Array(4096), new Uint8Array(4096)]));
      await api('page.write', { volume: 'v-crc', pages, crc: pageWritesCrc(pages) });
      const r = await api('page.read', { volume: 'v-crc', pages: [21, 20] });
      assert.deepEqual(plain(r['pages']), [filled(21), filled(20)]);
      assert.equal(r['crc'], pageDataCrc([filled(21), filled(20)]));
    });
  });
});
