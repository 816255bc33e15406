import * as assert from 'node:assert/strict';
import { formatStatus, formatStatusJson, STATUS_ROWS_MAX } from '../../observability/status';

const NOW = 1_700_000_000_000;

/** A status reply as ApiRouter.clusterStatus builds it: node n3 is dead, host 1 of n2 is down. */
function sampleReply(): Record<string, unknown> {
  const nodeStatus = (id: string, hosts: Array<{ ok: boolean; reason?: string; loopDelayMaxMs?: number }>, controller: boolean) => ({
    node: { id, cluster: 'dev', version: '0.1.0', uptimeMs: 3_725_000, controller, healthy: hosts.every((h) => h.ok) },
    hosts: hosts.map((h, i) => ({ hostId: i, ok: h.ok, ...(h.reason ? { reason: h.reason } : {}), ...(h.loopDelayMaxMs !== undefined ? { loopDelayMaxMs: h.loopDelayMaxMs } : {}), restarts: 0, deviceRestarts: 0, mailbox: [] })),
    shards: [],
  });
  return {
    node: { id: 'n1', cluster: 'dev', version: '0.1.0', uptimeMs: 3_725_000, controller: true, healthy: true },
    controllerReachable: true,
    members: [
      { nodeId: 'n1', hosts: 2, lastSeenMs: NOW - 300, live: true },
      { nodeId: 'n2', hosts: 2, lastSeenMs: NOW - 800, live: true },
      { nodeId: 'n3', hosts: 2, lastSeenMs: NOW - 42_000, live: false },
    ],
    nodes: [
      nodeStatus('n1', [{ ok: true, loopDelayMaxMs: 2.5 }, { ok: true, loopDelayMaxMs: 312.4 }], true),
      nodeStatus('n2', [{ ok: true, loopDelayMaxMs: 1.25 }, { ok: false, reason: 'device failed' }], false),
    ],
    volumes: [
      {
        name: 'db', id: 'v7', pageCount: 1024, pageSize: 4096, shards: [
          {
            shard: 0, role: 'leader', term: 3, commitLsn: 120, appliedLsn: 118, leader: 'n1', state: 'up', lag: { n2: 2, n3: 40 },
            replicas: [
              { node: 'n1', role: 'leader', state: 'up', term: 3, commitLsn: 120, appliedLsn: 118, storage: { logBytes: 2 ** 20, imageBytes: 3 * 2 ** 20, imagePages: 768 } },
              { node: 'n2', role: 'follower', state: 'up', term: 3, commitLsn: 119, appliedLsn: 119, storage: { logBytes: 512, imageBytes: 0, imagePages: 0 } },
            ],
          },
          { shard: 1, role: 'none', term: 0, commitLsn: 0, appliedLsn: 0, state: 'unavailable', replicas: [{ node: 'n2', role: 'follower', state: 'down', term: 0, commitLsn: 0, appliedLsn: 0, reason: 'device failed' }] },
        ], stripePages: 256, replicas: 3, createdAt: NOW - 1000,
      },
    ],
  };
}

describe('observability/status', () => {
  it('renders nodes with health (a dead one), volumes and shards', () => {
    const text = formatStatus(sampleReply(), { nowMs: NOW });
    assert.match(text, /^Strata cluster dev — answered by node n1 \(version 0\.1\.0\), controller reachable \(on n1\)$/m);
    assert.match(text, /^NODES \(3, 1 dead, 1 degraded\)$/m);
    assert.match(text, /^ {2}NODE +STATE +HOSTS OK +LOOP DELAY +FREE +UPTIME +VERSION +CONTROLLER +LAST SEEN +REASON$/m);
    assert.match(text, /^ {2}n1 +up +2\/2 +312ms +- +1h02m +0\.1\.0 +yes +0\.3s ago +-$/m, 'the worst host\'s loop delay');
    assert.match(text, /^ {2}n2 +degraded +1\/2 +1\.3ms .* host 1: device failed$/m);
    assert.match(text, /^ {2}n3 +DEAD +\?\/2 +- +- +- +- +- +42\.0s ago +no heartbeat$/m);
    // With the controller's time until it replaces the node's replicas, or its saying it does now.
    const members = (r: ReturnType<typeof sampleReply>, repairInMs: number) =>
      ({ ...r, members: (r.members as Array<Record<string, unknown>>).map((m) => (m.nodeId === 'n3' ? { ...m, repairInMs } : m)) });
    assert.match(formatStatus(members(sampleReply(), 558_000), { nowMs: NOW }), /^ {2}n3 +DEAD .* 42\.0s ago +no heartbeat; replicas replaced in 9m18s$/m);
    assert.match(formatStatus(members(sampleReply(), 0), { nowMs: NOW }), /^ {2}n3 +DEAD .* 42\.0s ago +no heartbeat; replacing its replicas$/m);
    // A node an operator drains (strata drain), with the reason it is degraded if it is.
    const draining = (r: ReturnType<typeof sampleReply>, id: string) =>
      ({ ...r, members: (r.members as Array<Record<string, unknown>>).map((m) => (m.nodeId === id ? { ...m, draining: true } : m)) });
    assert.match(formatStatus(draining(sampleReply(), 'n1'), { nowMs: NOW }), /^ {2}n1 +up .* 0\.3s ago +draining$/m);
    assert.match(formatStatus(draining(sampleReply(), 'n2'), { nowMs: NOW }), /^ {2}n2 +degraded .* draining; host 1: device failed$/m);
    // A live node's replicas it reports down: how many, and when the controller replaces them.
    const down = (r: ReturnType<typeof sampleReply>, extra: Record<string, unknown>) =>
      ({ ...r, members: (r.members as Array<Record<string, unknown>>).map((m) => (m.nodeId === 'n2' ? { ...m, ...extra } : m)) });
    assert.match(formatStatus(down(sampleReply(), { replicasDown: 2, replicasDownRepairInMs: 61_000 }), { nowMs: NOW }), /^ {2}n2 +degraded .* 2 replicas down, replaced in 1m01s; host 1: dev…$/m);
    assert.match(formatStatus(down(sampleReply(), { replicasDown: 1, replicasDownRepairInMs: 0 }), { nowMs: NOW }), /^ {2}n2 +degraded .* 1 replica down, replacing; host 1: device failed$/m);
    assert.match(formatStatus(down(sampleReply(), { replicasDown: 1 }), { nowMs: NOW }), /^ {2}n2 +degraded .* 1 replica down; host 1: device failed$/m);
    // Nodes that name their failure domain: a ZONE column ('-' for one that names none).
    const zoned = sampleReply();
    zoned.members = (zoned.members as Array<Record<string, unknown>>).map((m) => (m.nodeId === 'n3' ? m : { ...m, zone: m.nodeId === 'n1' ? 'rack-a' : 'rack-b' }));
    const zt = formatStatus(zoned, { nowMs: NOW });
    assert.match(zt, /^ {2}NODE +ZONE +STATE +HOSTS OK/m);
    assert.match(zt, /^ {2}n1 +rack-a +up +2\/2 /m);
    assert.match(zt, /^ {2}n3 +- +DEAD /m);
    assert.doesNotMatch(formatStatus(sampleReply(), { nowMs: NOW }), /ZONE/);
    assert.match(text, /^VOLUMES \(1\)$/m);
    // What the replicas that report it hold on their devices, together: 4 MiB and 512 bytes.
    assert.match(text, /^ {2}db {2}id=v7 {2}1024 pages × 4096 B {2}shards=2 {2}replicas=3 {2}stored=4\.0 MiB {2}\(2 shards not ok\)$/m);
    assert.match(text, /^ {4}SHARD +LEADER +TERM +COMMIT LSN +APPLIED LSN +REPLICAS UP +REPLICA LAG +HEALTH$/m);
    assert.match(text, /^ {4}0 +n1 +3 +120 +118 +2\/3 +40 +degraded: n3 missing$/m);
    assert.match(text, /^ {4}1 +- +- +- +- +0\/3 +- +unavailable$/m, 'an unavailable shard\'s term and LSNs are not known: not shown as 0');
    assert.match(text, /^ {4}SHARD +REPLICA +ROLE +STATE +TERM +COMMIT LSN +APPLIED LSN +LAG +STORED +NOTE$/m);
    assert.match(text, /^ {4}0 +n1 +leader +up +3 +120 +118 +- +4\.0 MiB +-$/m);
    assert.match(text, /^ {4}0 +n2 +follower +up +3 +119 +119 +2 +512 B +-$/m);
    assert.match(text, /^ {4}0 +n3 +- +missing +- +- +- +40 +- +node DEAD$/m);
    assert.match(text, /^ {4}1 +n2 +follower +down +0 +0 +0 +- +- +device failed$/m);
    // A volume none of whose replicas reports its storage shows none; a malformed one counts for nothing.
    const unreported = sampleReply();
    const shard0 = ((unreported.volumes as Array<{ shards: Array<{ replicas: Array<Record<string, unknown>> }> }>)[0]!.shards[0]!);
    shard0.replicas[0]!.storage = { logBytes: -1, imageBytes: 5 };
    delete shard0.replicas[1]!.storage;
    const ut = formatStatus(unreported, { nowMs: NOW });
    assert.match(ut, /^ {2}db {2}id=v7 {2}1024 pages × 4096 B {2}shards=2 {2}replicas=3 {2}\(2 shards not ok\)$/m);
    assert.match(ut, /^ {4}0 +n1 +leader +up +3 +120 +118 +- +- +-$/m);
    assert.ok(!text.includes('\u001b['), 'no colors unless asked');
  });

  it("free space: of a node's devices, the one with the least; a device under its reserve makes the node degraded, saying so", () => {
    const reply = sampleReply();
    const GIB = 2 ** 30;
    const hosts = (reply.nodes as Array<{ hosts: Array<Record<string, unknown>> }>)[0]!.hosts;
    hosts[0]!.queue = { space: { freeBytes: 40 * GIB, sizeBytes: 100 * GIB, reserveBytes: GIB, state: 'ok' } };
    hosts[1]!.queue = { space: { freeBytes: 30 * GIB, sizeBytes: 50 * GIB, reserveBytes: GIB, state: 'ok' } };
    assert.match(formatStatus(reply, { nowMs: NOW }), /^ {2}n1 +up +2\/2 +312ms +40\.0 GiB \(40%\) +1h02m .* +-$/m, 'the device with the least free space of its size');
    hosts[1]!.queue = { space: { freeBytes: 512 * 2 ** 20, sizeBytes: 50 * GIB, reserveBytes: GIB, state: 'low' } };
    const text = formatStatus(reply, { nowMs: NOW });
    assert.match(text, /^NODES \(3, 1 dead, 2 degraded\)$/m);
    assert.match(text, /^ {2}n1 +degraded +2\/2 +312ms +512\.0 MiB \(1%\) .* host 1: writes refused, 512\.0 MiB free$/m);
  });

  it('a replicated controller: the node that runs it and its term in the first line, and the catalog shard as a section of its own', () => {
    const reply = sampleReply();
    const nodes = reply.nodes as Array<{ node: Record<string, unknown> }>;
    nodes[0]!.node.controller = false;
    nodes[1]!.node.controller = true;
    nodes[1]!.node.controllerTerm = 7;
    reply.catalogShard = {
      name: 'strata-catalog', id: 'v0-catalog', pageCount: 4097, pageSize: 8192, replicas: 3, shards: [
        {
          shard: 0, role: 'leader', term: 7, commitLsn: 40, appliedLsn: 40, leader: 'n2', state: 'up', lag: { n1: 0, n3: 12 }, members: ['n1', 'n2', 'n3'],
          replicas: [
            { node: 'n1', role: 'follower', state: 'up', term: 7, commitLsn: 40, appliedLsn: 40 },
            { node: 'n2', role: 'leader', state: 'up', term: 7, commitLsn: 40, appliedLsn: 40 },
          ],
        },
      ],
    };
    const text = formatStatus(reply, { nowMs: NOW });
    assert.match(text, /controller reachable \(on n2, term 7\)$/m);
    const lines = text.split('\n');
    const at = lines.indexOf("CATALOG (replicated on the controller nodes; the controller runs on its leader's node)");
    assert.ok(at > 0 && at < lines.findIndex((l) => l.startsWith('VOLUMES (')), 'between the nodes and the volumes');
    assert.match(lines[at + 1]!, /^ {2}strata-catalog +id=v0-catalog +4097 pages × 8192 B +shards=1 +replicas=3 +\(1 shard not ok\)$/);
    assert.match(text, /^ {4}0 +n3 +- +missing +- +- +- +12 +- +node DEAD$/m, 'the dead controller node\'s replica, missing');
    // The volumes' count leaves it out.
    assert.match(text, /^VOLUMES \(1\)$/m);
  });

  it('a node whose answer arrived in part is degraded, saying its shards are not all reported', () => {
    const reply = sampleReply();
    const n1 = (reply.nodes as Array<Record<string, unknown>>)[0]!;
    n1.partsMissing = 2;
    const text = formatStatus(reply, { nowMs: NOW });
    assert.match(text, /^NODES \(3, 1 dead, 2 degraded\)$/m);
    assert.match(text, /^ {2}n1 +degraded +2\/2 .* 2 answer part\(s\) lost: shards unreported$/m);
  });

  it('without a reachable controller, the volumes are not known: not shown as none', () => {
    const reply = { ...sampleReply(), controllerReachable: false, members: [], volumes: [] };
    const text = formatStatus(reply, { nowMs: NOW });
    assert.match(text, /controller NOT reachable$/m);
    assert.match(text, /^VOLUMES \(\?\)$/m);
    assert.match(text, /^ {2}not listed: the controller \(which keeps the volume catalog\) is not reachable$/m);
    assert.doesNotMatch(text, /\(none\)/);
  });

  it('colors dead and down rows when asked', () => {
    const text = formatStatus(sampleReply(), { nowMs: NOW, color: true });
    assert.match(text, /\u001b\[31m {2}n3 +DEAD/);
    assert.match(text, /\u001b\[33m {2}n2 +degraded/);
    assert.match(text, /\u001b\[31m {4}0 +n3 +- +missing/);
  });

  it('tolerates missing, odd and hostile fields', () => {
    assert.match(formatStatus(undefined, { nowMs: NOW }), /NODES \(0\)[\s\S]*VOLUMES \(0\)\n {2}\(none\)/);
    const reply = sampleReply();
    (reply.volumes as Array<Record<string, unknown>>)[0]!.name = 'evil\u001b[2Jname' + 'x'.repeat(200);
    reply.nodes = [{ node: { id: 42 } }, 'junk', null];
    const text = formatStatus(reply, { nowMs: NOW });
    assert.ok(!text.includes('\u001b'), 'control characters are stripped');
    assert.match(text, /evil\?\[2Jnamex+…/);
    assert.match(text, /n1 +no reply/);
  });

  it('bounds the rows it prints', () => {
    const reply = sampleReply();
    const shards = Array.from({ length: STATUS_ROWS_MAX + 5 }, (_, i) => ({ shard: i, role: 'leader', state: 'up' }));
    (reply.volumes as Array<Record<string, unknown>>)[0]!.shards = shards;
    const text = formatStatus(reply, { nowMs: NOW });
    // The shard table's rows (these shards list no replicas: no replica table follows).
    const rows = text.split('\n').filter((l) => /^ {4}\d+ /.test(l)).map((l) => Number(l.trim().split(' ')[0]));
    assert.deepEqual(rows, Array.from({ length: STATUS_ROWS_MAX }, (_, i) => i), `the first ${STATUS_ROWS_MAX} shards, and no more`);
    assert.match(text, /^ {4}… 5 more$/m);
  });

  it('bounds the volumes it prints', () => {
    const reply = sampleReply();
    reply.volumes = Array.from({ length: STATUS_ROWS_MAX + 3 }, (_, i) => ({ name: `vol${i}`, id: `v${i}`, pageCount: 64, pageSize: 4096, shards: [] }));
    const text = formatStatus(reply, { nowMs: NOW });
    assert.match(text, new RegExp(`^VOLUMES \\(${STATUS_ROWS_MAX + 3}\\)$`, 'm'), 'the count is of every volume');
    const listed = text.split('\n').filter((l) => /^ {2}vol\d+ +id=/.test(l)).map((l) => l.trim().split(' ')[0]);
    assert.deepEqual(listed, Array.from({ length: STATUS_ROWS_MAX }, (_, i) => `vol${i}`), `the first ${STATUS_ROWS_MAX} volumes, and no more`);
    assert.match(text, /^ {2}… 3 more volumes$/m);
  });

  it('the JSON mode is the reply', () => {
    const reply = sampleReply();
    assert.deepEqual(JSON.parse(formatStatusJson(reply)), reply);
  });
});
