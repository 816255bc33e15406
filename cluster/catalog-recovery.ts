/**
 * Recovery of a lost catalog from the nodes (docs/replication.md, "A lost catalog").
 *
 * The catalog is durable on the controller's node only. Every node keeps its own durable record
 * of the replicas it holds, with each one's volume geometry and members: together, the live
 * nodes' records describe every volume that has a replica on one of them. `strata catalog
 * recover` has the controller read them (`node.<id>.records`, page by page) and add to its
 * catalog what it lacks (Controller.planRecovery, addRecovered).
 */
import type { NatsConnection } from 'nats';
import { decode, encode, pageWithin } from '../messages/codec';
import { ProtocolError, throwIfError, toProtocolError } from '../messages/errors';
import {
  ASSIGNMENTS_PAGE_MAX,
  ASSIGNMENTS_PER_NODE_MAX,
  RECOVER_TEXT_MAX,
  nodeSubject,
  validateNodeRecordsReply,
  type CatalogRecoverReply,
  type NodeRecordsReply,
  type RecoveredVolume,
  type ShardAssignment,
} from '../messages/control';
import { fromNatsError } from '../runtime/request-mux';

/** Reads of a node's records (all pages) before a recovery gives that node up: its records kept changing. */
export const RECORDS_READ_TRIES = 3;

/**
 * One page of a node's records from index `from`: as many as `bytesMax` holds (at most
 * ASSIGNMENTS_PAGE_MAX, at least one), with the index of the next page when there is one, and
 * the records' `version` when given.
 */
export function recordsPage(nodeId: string, hosts: number, shards: readonly ShardAssignment[], from: number, bytesMax: number, version?: number): NodeRecordsReply {
  const room = bytesMax - encode({ nodeId, hosts, shards: [], next: ASSIGNMENTS_PER_NODE_MAX, ...(version === undefined ? {} : { version: Number.MAX_SAFE_INTEGER }) }).length;
  const page = pageWithin(shards, from, room, ASSIGNMENTS_PAGE_MAX);
  const next = from + page.length;
  return { nodeId, hosts, shards: page, ...(next < shards.length ? { next } : {}), ...(version === undefined ? {} : { version }) };
}

/**
 * Reads every page of node `nodeId`'s records, each request within `timeoutMs`, the whole
 * within `deadlineMs` (a clock time). Records that changed between two pages (their `version`)
 * are read again from the first page, at most RECORDS_READ_TRIES times in all: a record removed
 * meanwhile moves the ones after it to lower indexes, and the next page would miss one. Throws a
 * ProtocolError (`timeout`, `unavailable`, or the node's error) when a page can not be had.
 */
export async function readNodeRecords(nc: NatsConnection, cluster: string, nodeId: string, timeoutMs: number, deadlineMs: number): Promise<NodeRecordsReply> {
  for (let attempt = 1; ; attempt++) {
    const read = await readNodeRecordsOnce(nc, cluster, nodeId, timeoutMs, deadlineMs);
    if (read !== undefined) return read;
    if (attempt >= RECORDS_READ_TRIES) {
      throw new ProtocolError('unavailable', `node '${nodeId}''s records changed while they were read, ${RECORDS_READ_TRIES} times`);
    }
  }
}

/** One read of every page of a node's records; undefined if they changed between two pages. */
async function readNodeRecordsOnce(nc: NatsConnection, cluster: string, nodeId: string, timeoutMs: number, deadlineMs: number): Promise<NodeRecordsReply | undefined> {
  const subject = nodeSubject(cluster, nodeId, 'records');
  const shards: ShardAssignment[] = [];
  let hosts = 1;
  let from = 0;
  let version: number | undefined;
  for (;;) {
    const leftMs = deadlineMs - Date.now();
    if (leftMs <= 0) throw new ProtocolError('timeout', `node '${nodeId}' did not give all its records in time (${shards.length} read)`);
    let page: NodeRecordsReply;
    const waitMs = Math.max(1, Math.min(timeoutMs, leftMs));
    try {
      const r = await nc.request(subject, encode({ from }), { timeout: waitMs });
      page = validateNodeRecordsReply(throwIfError(decode(r.data)));
    } catch (e) {
      throw fromNatsError(e, subject, waitMs);
    }
    if (page.nodeId !== nodeId) throw new ProtocolError('internal', `node '${nodeId}' answered as '${page.nodeId}'`);
    if (from === 0) version = page.version;
    else if (page.version !== version) return undefined;
    hosts = page.hosts;
    shards.push(...page.shards);
    // A node holds at most ASSIGNMENTS_PER_NODE_MAX records: more is not a node's answer, and
    // would grow this list without bound.
    if (shards.length > ASSIGNMENTS_PER_NODE_MAX) throw new ProtocolError('internal', `node '${nodeId}' gave more than ${ASSIGNMENTS_PER_NODE_MAX} records`);
    if (page.next === undefined) break;
    // A page must move on by what it held: a node answering the same `next` again would be asked
    // for ever, and one whose `next` runs ahead of its records would have more asked than it has.
    if (page.next !== shards.length || page.shards.length === 0) throw new ProtocolError('internal', `node '${nodeId}' answered page ${from} with ${page.shards.length} records and next ${page.next}`);
    from = page.next;
  }
  return { nodeId, hosts, shards, ...(version === undefined ? {} : { version }) };
}

/**
 * The reply of a recovery, cut to `bytesMax` when its lists do not fit (the counts stay whole);
 * reasons and errors at most RECOVER_TEXT_MAX characters.
 */
export function recoverReply(
  r: {
    applied: boolean;
    epoch: number;
    nodesAsked: number;
    nodesFailed: { node: string; error: unknown }[];
    recovered: RecoveredVolume[];
    skipped: RecoveredVolume[];
  },
  bytesMax: number,
): CatalogRecoverReply {
  const clip = (s: string): string => (s.length <= RECOVER_TEXT_MAX ? s : `${s.slice(0, RECOVER_TEXT_MAX - 1)}…`);
  const nodesFailed = r.nodesFailed.map((f) => ({ node: f.node, error: clip(toProtocolError(f.error).message) }));
  const skipped = r.skipped.map((v) => ({ ...v, ...(v.reason === undefined ? {} : { reason: clip(v.reason) }) }));
  const reply: CatalogRecoverReply = {
    applied: r.applied,
    epoch: r.epoch,
    nodesAsked: r.nodesAsked,
    nodesFailed,
    recovered: r.recovered,
    skipped,
    recoveredCount: r.recovered.length,
    skippedCount: r.skipped.length,
  };
  const fits = (r: CatalogRecoverReply): boolean => encode(r, { bytesMax: Number.MAX_SAFE_INTEGER }).length <= bytesMax;
  if (fits(reply)) return reply;
  // Halved until they fit (the counts say how many there were).
  let keep = Math.max(r.recovered.length, skipped.length, nodesFailed.length);
  while (keep > 0) {
    keep = Math.floor(keep / 2);
    const cut = { ...reply, nodesFailed: nodesFailed.slice(0, keep), recovered: r.recovered.slice(0, keep), skipped: skipped.slice(0, keep) };
    if (fits(cut)) return cut;
  }
  return { ...reply, nodesFailed: [], recovered: [], skipped: [] };
}
