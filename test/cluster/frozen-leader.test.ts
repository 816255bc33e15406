/**
 * A shard whose deposed leader is frozen (a paused VM, a process stopped with SIGSTOP): its node's
 * NATS connection stays open, so it keeps its subscriptions while the shard elects the next
 * leader, its share of the shard subject's queue group among them, and it answers nothing.
 * Here it is stood in for by subscriptions that take requests and never answer: twenty in the
 * shard subject's queue group beside the real leader (a request sent there meets the real
 * leader 1 time in 21), and one on the shard's leaders subject. A read, a map or a flush whose
 * first try meets them is answered at its second, sent to every leader. Without the leaders
 * subject, most would meet the frozen members on every try. A page write goes to every leader
 * from its first try, with the write's id (a leader answers a try of a write its log holds with
 * that record): the real leader answers it.
 */
import { strict as assert } from 'node:assert';
import { connect as natsConnect, type Msg, type NatsConnection } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { writeInTries } from '../../cluster/nbd';
import { shardLeadersSubject, shardSubject } from '../../messages/subjects';
import { decode, encode } from '../../messages/codec';
import { ProtocolError } from '../../messages/errors';
import { HEADER_DEADLINE, HEADER_SCHEMA, HEADER_TYPE } from '../../messages/headers';

describe('a shard whose frozen leader keeps its subscriptions', function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  let nc: NatsConnection;
  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 1, clientTimeoutMs: 20_000 });
    nc = await natsConnect({ servers: c.natsUrl });
  });
  after(async () => {
    await nc?.close();
    await c?.stop();
  });

  const page = (n: number, fill: number): Uint8Array => new Uint8Array(4096).fill(fill).fill(n, 0, 1);

  it('reads, maps and flushes are answered from their second try, sent to every leader; the block writes of the NBD export at their first', async () => {
    const info = await c.client.createVolume({ name: 'frozen', pageCount: 64, shards: 1, replicas: 1 });
    const vol = c.client.volume('frozen');
    await vol.writePages(Array.from({ length: 8 }, (_, n) => ({ page: n, data: page(n, 1) })));
    let queueTaken = 0;
    let leadersTaken = 0;
    for (let i = 0; i < 20; i++) nc.subscribe(shardSubject(c.cluster, info.id, 0), { queue: 'leader', callback: () => void queueTaken++ });
    nc.subscribe(shardLeadersSubject(c.cluster, info.id, 0), { callback: () => void leadersTaken++ });
    await nc.flush();

    const reads = await Promise.all(Array.from({ length: 8 }, (_, n) => vol.readPages([n])));
    assert.deepEqual(reads.map((r) => r.pages[0]), Array.from({ length: 8 }, (_, n) => page(n, 1)));
    const map = await vol.pagesWithData(0, 64);
    assert.deepEqual(map.ranges, [{ first: 0, count: 8 }]);
    const flushed = await vol.flush();
    assert.ok(flushed.lsn > 0);

    // Block writes as the NBD export makes them: a try without an answer would be made again.
    const again: number[] = [];
    await Promise.all(
      Array.from({ length: 8 }, (_, n) =>
        writeInTries((deadlineMs) => vol.writePages([{ page: n, data: page(n, 2) }], { deadlineMs }), 15_000, { onUnknown: () => void again.push(n) }),
      ),
    );
    assert.deepEqual((await Promise.all(Array.from({ length: 8 }, (_, n) => vol.readPages([n])))).map((r) => r.pages[0]), Array.from({ length: 8 }, (_, n) => page(n, 2)));

    // The frozen members took requests, and every one sent again reached them too (and the real
    // leader). Every write went to every leader: the export's first tries were answered.
    assert.ok(queueTaken > 0 && leadersTaken >= 8, `${queueTaken} requests met the frozen members of the queue group, ${leadersTaken} went to every leader`);
    assert.deepEqual(again, [], 'no block write made again by the export');
  });

  it("the client's page writes and ranges made zeros go to every leader: the real one answers each, written once", async () => {
    const info = await c.client.createVolume({ name: 'frozen-writes', pageCount: 64, shards: 1, replicas: 1 });
    const vol = c.client.volume('frozen-writes');
    const before = (await vol.flush()).lsn;
    let queueTaken = 0;
    let leadersTaken = 0;
    const write = (m: Msg): boolean => ['shard.write', 'shard.zero'].includes(m.headers?.get(HEADER_TYPE) ?? '');
    for (let i = 0; i < 20; i++) nc.subscribe(shardSubject(c.cluster, info.id, 0), { queue: 'leader', callback: (_, m) => void (queueTaken += write(m) ? 1 : 0) });
    nc.subscribe(shardLeadersSubject(c.cluster, info.id, 0), { callback: (_, m) => void (leadersTaken += write(m) ? 1 : 0) });
    await nc.flush();
    const writes = await Promise.all(Array.from({ length: 12 }, (_, n) => vol.writePages([{ page: n, data: page(n, 4) }])));
    const zeros = await Promise.all([vol.zeroPages(40, 4), vol.zeroPages(50, 4)]);
    const lsns = [...writes, ...zeros].map((r) => r.lsn).sort((a, b) => a - b);
    // One record each, no more: the LSNs after `before`, one by one.
    assert.deepEqual(lsns, Array.from({ length: 14 }, (_, i) => before + 1 + i));
    assert.equal((await vol.flush()).lsn, before + 14);
    assert.deepEqual((await Promise.all(Array.from({ length: 12 }, (_, n) => vol.readPages([n])))).map((r) => r.pages[0]), Array.from({ length: 12 }, (_, n) => page(n, 4)));
    assert.equal(queueTaken, 0, 'no write went to the queue group');
    assert.ok(leadersTaken >= 14, `${leadersTaken} writes taken by the frozen member on the leaders subject, of 14`);
  });

  it('a write sent again with its write id is answered with its record, also after its leader restarted (it reads the ids of its log at open)', async () => {
    const info = await c.client.createVolume({ name: 'write-ids', pageCount: 64, shards: 1, replicas: 1 });
    const headers = (): Record<string, string> => ({ [HEADER_TYPE]: 'shard.write', [HEADER_SCHEMA]: '1', [HEADER_DEADLINE]: String(Date.now() + 5000) });
    const writeId = new Uint8Array(16).fill(0x5a);
    const body = { pages: [{ page: 3, data: page(3, 5) }], writeId };
    const ask = async (subject: string, req: object): Promise<{ lsn?: number; error?: { code?: string; details?: Record<string, unknown> } }> =>
      decode(await c.client.rawRequest(subject, encode(req), headers())) as { lsn?: number; error?: { code?: string; details?: Record<string, unknown> } };
    const first = await ask(shardSubject(c.cluster, info.id, 0), body);
    assert.ok((first.lsn ?? 0) > 0, JSON.stringify(first));
    const again = await ask(shardLeadersSubject(c.cluster, info.id, 0), { ...body, sentMs: Date.now() - 1000 });
    assert.equal(again.lsn, first.lsn, 'the first try\'s record, not a second');
    // Its node restarted: the replica reads the ids of its log's records back as it opens it.
    const vol = c.client.volume('write-ids');
    await c.stopNode(0);
    await c.restart(0);
    // Its next term's first record (no data) after the write's.
    const restarted = (await vol.flush()).lsn;
    assert.equal(restarted, first.lsn! + 1);
    const old = await ask(shardLeadersSubject(c.cluster, info.id, 0), { ...body, sentMs: Date.now() - 5000 });
    assert.equal(old.lsn, first.lsn, JSON.stringify(old));
    assert.equal((await vol.flush()).lsn, restarted, 'nothing written');
    assert.deepEqual((await vol.readPages([3])).pages, [page(3, 5)]);
    // Its log starts at LSN 1 (no checkpoint yet): an id it does not hold was never written, and is written now.
    const other = await ask(shardLeadersSubject(c.cluster, info.id, 0), { pages: [{ page: 4, data: page(4, 6) }], writeId: new Uint8Array(16).fill(0x5b), sentMs: Date.now() - 5000 });
    assert.equal(other.lsn, restarted + 1, JSON.stringify(other));
  });

  it('a leader that finds a request on the leaders subject names a later term (a newer leader exists) leaves it to that one, unanswered; on the shard subject it answers not_leader', async () => {
    const info = await c.client.createVolume({ name: 'later-term', pageCount: 64, shards: 1, replicas: 1 });
    const term = (await c.client.volume('later-term').write(0, page(0, 3))).lsns[0]!.term!;
    const headers = (): Record<string, string> => ({ [HEADER_TYPE]: 'shard.read', [HEADER_SCHEMA]: '1', [HEADER_DEADLINE]: String(Date.now() + 5000) });
    const later = encode({ pages: [0], term: term + 5 });
    const refused = decode(await c.client.rawRequest(shardSubject(c.cluster, info.id, 0), later, headers())) as { error?: { code?: string } };
    assert.equal(refused.error?.code, 'not_leader');
    await assert.rejects(c.client.rawRequest(shardLeadersSubject(c.cluster, info.id, 0), later, headers(), { timeoutMs: 1500 }), (e: unknown) => e instanceof ProtocolError && e.code === 'timeout');
    // Its own term: answered there as on the shard subject.
    const own = decode(await c.client.rawRequest(shardLeadersSubject(c.cluster, info.id, 0), encode({ pages: [0], term }), headers())) as { error?: unknown; lsn?: number };
    assert.equal(own.error, undefined);
    assert.ok((own.lsn ?? 0) > 0);
  });
});
