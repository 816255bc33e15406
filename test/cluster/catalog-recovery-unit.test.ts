import { strict as assert } from 'node:assert';
import type { NatsConnection } from 'nats';
import { readNodeRecords, recordsPage, recoverReply } from '../../cluster/catalog-recovery';
import { decode, encode } from '../../messages/codec';
import { ProtocolError } from '../../messages/errors';
import { ASSIGNMENTS_PER_NODE_MAX, RECOVER_TEXT_MAX, validateCatalogRecoverReply, type NodeRecordsReply, type ShardAssignment } from '../../messages/control';

const assignment = (i: number): ShardAssignment => ({
  volumeId: `v${i}-old`, volumeName: `vol-${i}`, shard: 0, shards: 1, pageCount: 64, pageSize: 4096, stripePages: 4, hostId: 0, members: ['n1', 'n2', 'n3'], createdAt: 1,
});

/** A connection whose requests are answered by `answer` (the decoded request body in, a reply body out). */
function fakeNc(answer: (subject: string, body: Record<string, unknown>) => unknown): NatsConnection {
  return {
    request: async (subject: string, data: Uint8Array) => ({ data: encode(answer(subject, decode(data) as Record<string, unknown>)) }),
  } as unknown as NatsConnection;
}

describe('cluster/catalog-recovery', () => {
  it("pages a node's records to fit the reply bound, and reads them back whole", async () => {
    const all = Array.from({ length: 300 }, (_, i) => assignment(i));
    const bytesMax = 4096;
    let pages = 0;
    const nc = fakeNc((subject, body) => {
      assert.equal(subject, 'strata.c.node.n2.records');
      pages++;
      const page = recordsPage('n2', 2, all, Number(body.from ?? 0), bytesMax);
      assert.ok(encode(page).length <= bytesMax, 'each page fits');
      return page;
    });
    const r = await readNodeRecords(nc, 'c', 'n2', 1000, Date.now() + 10_000);
    assert.equal(r.hosts, 2);
    assert.deepEqual(r.shards, all);
    assert.ok(pages > 5, `read in ${pages} pages`);
    // One record larger than the bound alone is still sent (and refused by the server as too large).
    assert.equal(recordsPage('n2', 2, all, 0, 10).shards.length, 1);
  });

  it('reads the records again from the first page when they changed between two pages', async () => {
    let held = Array.from({ length: 300 }, (_, i) => assignment(i));
    let version = 7;
    let pages = 0;
    const nc = fakeNc((_subject, body) => {
      const page = recordsPage('n2', 1, held, Number(body.from ?? 0), 4096, version);
      // After the first page, the node destroys the replica of its first record.
      if (++pages === 1) {
        held = held.slice(1);
        version++;
      }
      return page;
    });
    const r = await readNodeRecords(nc, 'c', 'n2', 1000, Date.now() + 10_000);
    assert.deepEqual(r.shards.map((a) => a.volumeId), held.map((a) => a.volumeId));
    // Records that change between every two pages: given up after RECORDS_READ_TRIES reads.
    const restless = fakeNc((_subject, body) => recordsPage('n2', 1, held, Number(body.from ?? 0), 4096, version++));
    await assert.rejects(readNodeRecords(restless, 'c', 'n2', 1000, Date.now() + 10_000), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && /changed while they were read/.test(e.message));
  });

  it('fails on a page that does not move on, an answer in another name, an error reply, or a deadline passed', async () => {
    // `next` 1 from 0 moves on; from 1, `next` 1 again does not.
    const stuck = fakeNc(() => ({ nodeId: 'n2', hosts: 1, shards: [assignment(1)], next: 1 }));
    await assert.rejects(readNodeRecords(stuck, 'c', 'n2', 1000, Date.now() + 10_000), (e: unknown) => e instanceof ProtocolError && e.code === 'internal' && /page 1 with 1 records and next 1$/.test(e.message));
    // A page of no record names a next page: asked for ever, it would never end.
    const empty = fakeNc((_subject, body) => ({ nodeId: 'n2', hosts: 1, shards: [], next: Number(body.from ?? 0) + 1 }));
    await assert.rejects(readNodeRecords(empty, 'c', 'n2', 1000, Date.now() + 2000), (e: unknown) => e instanceof ProtocolError && e.code === 'internal' && /answered page 0 with 0 records and next 1$/.test(e.message));
    // A `next` that runs ahead of the records given (one record a page, next one page on each
    // time): asked on, it would grow the list past what any node holds; refused at once.
    const ahead = fakeNc((_subject, body) => ({ nodeId: 'n2', hosts: 1, shards: Array.from({ length: 4 }, (_, i) => assignment(i)), next: Number(body.from ?? 0) + 1000 }));
    await assert.rejects(readNodeRecords(ahead, 'c', 'n2', 1000, Date.now() + 10_000), (e: unknown) => e instanceof ProtocolError && e.code === 'internal' && /answered page 0 with 4 records and next 1000$/.test(e.message));
    // More records than a node may hold, in pages that each move on by what they hold: refused past the bound.
    let asked = 0;
    const endless = fakeNc((_subject, body) => {
      asked++;
      const from = Number(body.from ?? 0);
      const next = from + 512;
      return { nodeId: 'n2', hosts: 1, shards: Array.from({ length: 512 }, (_, i) => assignment(from + i)), ...(next <= ASSIGNMENTS_PER_NODE_MAX ? { next } : {}) };
    });
    await assert.rejects(readNodeRecords(endless, 'c', 'n2', 1000, Date.now() + 30_000), (e: unknown) => e instanceof ProtocolError && e.code === 'internal' && new RegExp(`gave more than ${ASSIGNMENTS_PER_NODE_MAX} records`).test(e.message));
    assert.ok(asked <= Math.ceil(ASSIGNMENTS_PER_NODE_MAX / 512) + 1, `asked ${asked} pages`);
    const other = fakeNc(() => ({ nodeId: 'n3', hosts: 1, shards: [] }));
    await assert.rejects(readNodeRecords(other, 'c', 'n2', 1000, Date.now() + 10_000), /answered as 'n3'/);
    const refusing = fakeNc(() => ({ error: { code: 'overloaded', message: 'busy' } }));
    await assert.rejects(readNodeRecords(refusing, 'c', 'n2', 1000, Date.now() + 10_000), (e: unknown) => e instanceof ProtocolError && e.code === 'overloaded');
    const never = fakeNc(() => assert.fail('not asked after its deadline'));
    await assert.rejects(readNodeRecords(never, 'c', 'n2', 1000, Date.now() - 1), (e: unknown) => e instanceof ProtocolError && e.code === 'timeout');
    const bad = fakeNc((): NodeRecordsReply => ({ nodeId: 'n2', hosts: 0, shards: [] }));
    await assert.rejects(readNodeRecords(bad, 'c', 'n2', 1000, Date.now() + 10_000), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request');
  });

  it("cuts a recovery's reply to its bound, keeping the counts, and its texts to RECOVER_TEXT_MAX", () => {
    const volumes = Array.from({ length: 2000 }, (_, i) => ({ id: `v${i}-old`, name: `volume-${i}`, shards: 1, replicas: 3 }));
    const long = 'x'.repeat(5000);
    const full = { applied: true, epoch: 7, nodesAsked: 3, nodesFailed: [{ node: 'n3', error: new ProtocolError('timeout', long) }], recovered: volumes, skipped: volumes.map((v) => ({ ...v, reason: long })) };
    const big = recoverReply(full, 1 << 30);
    assert.equal(big.recovered.length, 2000);
    assert.equal(big.skipped[0]!.reason!.length, RECOVER_TEXT_MAX);
    assert.equal(big.nodesFailed[0]!.error.length, RECOVER_TEXT_MAX);
    const cut = recoverReply(full, 64 * 1024);
    assert.ok(encode(cut).length <= 64 * 1024);
    assert.ok(cut.recovered.length > 0 && cut.recovered.length < 2000);
    assert.equal(cut.recoveredCount, 2000);
    assert.equal(cut.skippedCount, 2000);
    assert.deepEqual(validateCatalogRecoverReply(decode(encode(cut))), cut);
    assert.deepEqual(recoverReply(full, 100).recovered, []);
  });
});
