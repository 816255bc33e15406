/**
 * ApiRouter: what a node does with requests to the public API subjects.
 *
 * Catalog verbs (volume.create|branch|list|info|delete) are forwarded, bytes as they came, to the
 * controller, which validates and answers them. Page verbs (page.write, page.read, volume.flush)
 * are validated here and routed to the shards' subjects with the same code the TypeScript client
 * uses, so both paths split, bound and merge requests identically. `status` gathers every
 * node's view with one scatter request, until every live node has answered or a deadline.
 *
 * Every request is routed within its deadline: the caller's Strata-Deadline, at most the
 * router's own timeout away (`deadline`). A catalog request carries it on to the controller in
 * its own Strata-Deadline header, so the controller can skip one whose caller gave up.
 */
import { headers as natsHeaders, type NatsConnection, type Subscription } from 'nats';
import { encode, decode, encodedErrorCode, MESSAGE_BYTES_MAX } from '../messages/codec';
import { newInbox, serverMaxPayload } from '../runtime/request-mux';
import { Notice, NOTICED } from '../runtime/notice';
import { errorReply, isPlainObject, ProtocolError, throwIfError } from '../messages/errors';
import { expectArray, expectMap, field, requestIdIn, validatePageRead, validatePageWriteRequest, validatePageZeroRequest, validatePageMapRequest, validatePageReadRequest, validateVolumeBranchRequest, validateVolumeFlushRequest, validateVolumeNameRequest } from '../messages/validate';
import { controllerSubject } from '../messages/control';
import { PAGE_MAP_RANGES_MAX, SHARDS_MAX, VOLUMES_PER_LIST_MAX, type VolumeInfo } from '../messages/api';
import { NODES_MAX, branchPointCountError } from '../actors/controller';
import { deadlineRemainingMs, HEADER_DEADLINE } from '../messages/headers';
import { createClient, GEOMETRY_RECHECK_MS, NatsTransport, newRequestId, type PageToWrite, type StrataClient, type Volume } from './client';
import { CATALOG_PAGE_COUNT, CATALOG_PAGE_SIZE, CATALOG_VOLUME_ID, CATALOG_VOLUME_NAME } from './catalog-shard';
import { checkPageDataCrc, eachPageCrc } from '../storage-engine/page-data-crc';

/** Volumes whose routing info a node keeps at most. */
const VOLUME_CACHE_MAX = 1024;
/** Longest a status waits for the nodes' answers (the live ones that answered end it sooner). */
export const STATUS_GATHER_MS_MAX = 2000;
/** Messages gathered by one status request at most (a node of many shards answers in parts). */
const STATUS_REPLIES_MAX = 1024;
/** Room left in a status reply's message for its headers. */
const STATUS_REPLY_ROOM_BYTES = 4096;

/**
 * Catalog verbs whose caller's deadline is kept as it is, not cut to the router's timeout: they
 * open a replica of every shard of a volume (`ApiRouter.deadline`).
 */
export const SIZED_DEADLINE_VERBS: ReadonlySet<string> = new Set(['volume.create', 'volume.branch']);

/** Times one catalog change with a request id is sent again to a controller just seated, at most (`forwardToController`). */
export const CHANGE_RESENDS_MAX = 8;

/**
 * How much of each shard a status reply holds: every replica of every shard; the replicas of
 * the shards that are not healthy (the others counted); per volume, counts of its shards by state.
 */
export type StatusDetail = 'full' | 'degraded-replicas' | 'summary';

export class ApiRouter {
  private readonly nc: NatsConnection;
  private readonly cluster: string;
  private readonly timeoutMs: number;
  /** The client it routes with, over the node's connection (the node reads and writes the catalog shard with it). */
  readonly client: StrataClient;
  private readonly volumes = new Map<string, Volume>();
  private readonly statusGatherMsMax: number;
  /**
   * Given when a controller takes its seat (`controllerSeated`): it ends the wait of each catalog
   * change that may be sent again (at most the node's API requests in flight).
   */
  readonly seated = new Notice();
  /** Catalog changes sent again to a controller just seated (`forwardToController`), since the start. */
  changesSentAgain = 0;
  /**
   * How the last gather of the nodes' status answers ended (`gatherNodeStatus`): every expected
   * node answered in full, its wait of `waitMs` passed, STATUS_REPLIES_MAX messages came, or the
   * connection could not take it.
   */
  lastStatusGather: { ended: 'answered' | 'waited' | 'replies' | 'closed'; waitMs: number } | undefined;

  /** `statusGatherMsMax`: longest a status waits for the nodes' answers (STATUS_GATHER_MS_MAX). */
  constructor(nc: NatsConnection, cluster: string, timeoutMs: number, options: { statusGatherMsMax?: number } = {}) {
    this.nc = nc;
    this.cluster = cluster;
    this.timeoutMs = timeoutMs;
    this.statusGatherMsMax = options.statusGatherMsMax ?? STATUS_GATHER_MS_MAX;
    this.client = createClient(new NatsTransport(nc), { cluster, timeoutMs });
  }

  /**
   * The deadline of a request routed at `nowMs` whose caller set `callerDeadlineMs` (its
   * Strata-Deadline, if any): the earlier of that and the router's own timeout, except for a
   * `volume.create` or `volume.branch` that has one (the caller's is kept). A caller's deadline
   * already passed throws ProtocolError('timeout').
   */
  deadline(callerDeadlineMs: number | undefined, nowMs: number, verb?: string): number {
    const remainingMs = deadlineRemainingMs(callerDeadlineMs, nowMs);
    // A volume's creation (or a branch's) takes its nodes time in proportion to its shards (a few
    // fsyncs each): the caller's deadline is kept, up to DEADLINE_AHEAD_MS_MAX, and the router's
    // timeout is only the default.
    if (SIZED_DEADLINE_VERBS.has(verb ?? '') && callerDeadlineMs !== undefined) return nowMs + remainingMs;
    return nowMs + Math.min(this.timeoutMs, remainingMs);
  }

  /**
   * A controller took its seat (`controller.seated`): the catalog changes waiting for an answer
   * that may send again are sent to it (`forwardToController`).
   */
  controllerSeated(): void {
    this.seated.notify();
  }

  /**
   * Forwards a catalog request to the controller, with `deadlineMs` as its Strata-Deadline, and
   * returns its reply bytes unchanged (an error reply when none came before the deadline).
   *
   * `resend` (a change with a request id: `hasRequestId`): when a controller takes its seat while
   * the answer is awaited, the request is sent again, to it, at most CHANGE_RESENDS_MAX times,
   * and that answer is the one returned. The controller it went to may have died with it (no
   * answer would ever come); the catalog answers a change sent again as it was made, and the
   * controller before, if it still answers, finished that change before its seat was taken.
   *
   * A change (`change`: its request id) that may have been made is never answered as not made:
   * no answer in time, or after a send that may have reached a controller (any send but the
   * last) an answer that says it did nothing (`unavailable`: no controller reachable, or one that
   * no longer runs it) or no responders, is `timeout` with `details.outcomeUnknown` and the
   * change's `requestId`, with which the requester may send it again (the catalog answers it as
   * it was made).
   */
  async forwardToController(verb: string, data: Uint8Array, deadlineMs: number, resend = false, change?: { requestId: string }): Promise<Uint8Array> {
    let timeout = deadlineMs - Date.now();
    let sent = 1;
    const unknown = (err: ProtocolError): Uint8Array =>
      encode(errorReply(new ProtocolError('timeout', `${err.message}; an earlier send of ${verb} may have reached a controller: the change may or may not have been made`, {
        ...(err.details ?? {}),
        code: err.code,
        outcomeUnknown: true,
        requestId: change!.requestId,
      })));
    try {
      for (; ; sent++) {
        timeout = deadlineMs - Date.now();
        if (timeout <= 0) throw new ProtocolError('timeout', `the deadline passed before ${verb} reached the controller`);
        const headers = natsHeaders();
        headers.set(HEADER_DEADLINE, String(deadlineMs));
        const request = this.nc.request(controllerSubject(this.cluster, verb), data, { timeout, headers });
        if (sent > 1) this.changesSentAgain++;
        const answer = !resend || sent > CHANGE_RESENDS_MAX ? (await request).data : await this.seated.race(request.then((r) => r.data));
        if (answer === NOTICED) continue; // A controller was seated meanwhile: its answer (any) is the one waited for.
        if (change !== undefined && sent > 1 && encodedErrorCode(answer) === 'unavailable') return unknown(errorIn(answer));
        return answer;
      }
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      const err = e instanceof ProtocolError
        ? e
        : code === '503'
          ? new ProtocolError('unavailable', 'the controller is not reachable (no responders)', { noController: true })
          : code === 'TIMEOUT'
            ? new ProtocolError('timeout', `the controller did not answer within ${timeout} ms`, { timeoutMs: timeout })
            : new ProtocolError('unavailable', `the controller is not reachable: ${(e as Error).message}`);
      // Nothing reached a controller: no responders to the first send, or its deadline passed before it went.
      const noneReached = sent === 1 && (code === '503' || e instanceof ProtocolError);
      if (change !== undefined && !noneReached) return unknown(err);
      return encode(errorReply(err));
    }
  }

  /**
   * A catalog change from the API (volume.create, volume.delete, volume.resize) forwarded to the
   * controller. One without a request id is given one here (`withRequestId`), so that this router
   * may send it again to a controller seated while it waits (`forwardToController`): the catalog
   * answers the same request sent again as it was made. A requester that sends the change again
   * itself still sends a new request (another id).
   */
  forwardChange(verb: string, body: unknown, data: Uint8Array, deadlineMs: number): Promise<Uint8Array> {
    const sent = withRequestId(body, data);
    return this.forwardToController(verb, sent.data, deadlineMs, sent.requestId !== undefined, sent.requestId === undefined ? undefined : { requestId: sent.requestId });
  }

  /**
   * volume.info: the controller's answer; when the controller is not reachable (`unavailable`),
   * the geometry `local` knows (the assignments of this node, which hosts a replica of the
   * volume, and not of one whose create was not answered: StrataNode.localVolumeInfo), so that
   * page requests of a volume go on while the catalog is down. The catalog's other answers
   * (`not_found`, a timeout) stand.
   */
  async volumeInfo(body: unknown, data: Uint8Array, deadlineMs: number, local: (name: string) => VolumeInfo | undefined): Promise<Uint8Array> {
    const { name } = validateVolumeNameRequest(body);
    const reply = await this.forwardToController('volume.info', data, deadlineMs);
    if (encodedErrorCode(reply) !== 'unavailable') return reply;
    const info = local(name);
    return info === undefined ? reply : encode(info);
  }

  /**
   * volume.branch (docs/branches.md): without `lsns`, the branch point is the parent's commit LSN
   * of every shard now (a flush of the parent), filled in before the request goes to the
   * controller, which creates the branch and has its nodes copy the parent's pages. The branch is
   * answered once every shard of it serves (a flush of the branch this request made, by its id: a
   * replica of each shard holds the copy and leads). When that does not happen within the
   * deadline, the answer says why (`unavailable`), and the branch is left: the controller deleted
   * it already if no replica of a shard could copy, and another router serving the same request
   * may have answered it serves (docs/branches.md).
   */
  async branch(body: unknown, data: Uint8Array, deadlineMs: number): Promise<Uint8Array> {
    // Given a request id when it has none, as a change is (`forwardChange`).
    const asked = validateVolumeBranchRequest(body);
    const req = asked.requestId === undefined ? { ...asked, requestId: newRequestId() } : asked;
    let sent = req === asked ? data : encode(req);
    try {
      // A share of the time: the rest is the copy's and the check's.
      const partMs = Date.now() + Math.max(1, Math.floor((deadlineMs - Date.now()) / 4));
      const parent = this.volume(req.parent);
      if (req.lsns === undefined) {
        const flushed = await parent.flush({ deadlineMs: partMs });
        sent = encode({ ...req, lsns: flushed.lsns.map((s) => s.lsn) });
      } else {
        // A branch point the parent's leaders cannot read (no longer retained, or not written
        // yet) is refused before anything is created: a read of a page of each shard at it.
        const info = await parent.info({ deadlineMs: partMs });
        if (req.lsns.length !== info.shards) {
          throw branchPointCountError(req.parent, info.shards, req.lsns.length);
        }
        const firsts = Array.from({ length: info.shards }, (_, shard) => shard * info.stripePages).filter((p) => p < info.pageCount);
        await parent.readPages(firsts, { lsns: req.lsns.map((lsn, shard) => ({ shard, lsn })), deadlineMs: partMs });
      }
    } catch (e) {
      return encode(errorReply(e instanceof ProtocolError ? e : new ProtocolError('unavailable', (e as Error).message)));
    }
    const requestId = req.requestId!;
    const reply = await this.forwardToController('volume.branch', sent, deadlineMs, true, { requestId });
    if (encodedErrorCode(reply) !== undefined) return reply;
    const { id } = decode(reply) as { id: string };
    try {
      // The volume this request made (a volume of that name made since is another), until the
      // deadline, less a moment for the answer.
      await this.client.volume(req.name, { id }).flush({ deadlineMs: Date.now() + Math.max(1, Math.floor((deadlineMs - Date.now()) * 0.9)) });
      return reply;
    } catch (e) {
      // Not deleted here: the request may be served by other routers too (a client sends it
      // again to every one), and one may have answered that the branch serves; a branch none of
      // whose replicas of a shard could copy the parent's pages is deleted by the controller, as
      // it is made. Sent again with its request id, the request waits for this branch again:
      // `timeout` (not `unavailable`, which says nothing was done), naming it and the branch.
      throw new ProtocolError('timeout', `branch '${req.name}' (id ${id}) of '${req.parent}' was made, but a shard of it did not serve in time (${(e as Error).message}): ` +
        `its replicas may still be copying the parent's pages; send the request again with its request id to wait for it, or delete the branch (strata volume delete ${req.name})`, { id, requestId, outcomeUnknown: true });
    }
  }

  async pageWrite(body: unknown, deadlineMs: number): Promise<unknown> {
    const req = validatePageWriteRequest(body);
    // Checked before any shard is asked: pages damaged on the way are written nowhere. Each
    // page's checksum, made as they are checked, goes on with it: the shards' writes are
    // checksummed from them, so a page that changes in this process after the check is refused.
    let pages: PageToWrite[] = req.pages;
    if (req.crc !== undefined) {
      const { crcs, crc } = eachPageCrc(req.pages.map((p) => p.data));
      checkPageDataCrc(req.crc, crc, 'page.write');
      pages = req.pages.map(({ page, data }, i) => ({ page, data, crc: crcs[i]! }));
    }
    const r = await this.volume(req.volume).writePages(pages, { deadlineMs });
    return { lsn: r.lsn, lsns: r.lsns };
  }

  async pageZero(body: unknown, deadlineMs: number): Promise<unknown> {
    const req = validatePageZeroRequest(body);
    const r = await this.volume(req.volume).zeroPages(req.first, req.count, { deadlineMs });
    return { lsn: r.lsn, lsns: r.lsns };
  }

  async pageMap(body: unknown, deadlineMs: number): Promise<unknown> {
    const req = validatePageMapRequest(body);
    const r = await this.volume(req.volume).pagesWithData(req.first, req.count, { deadlineMs });
    return { ...mapReplyRanges(r.end, r.ranges), lsn: r.lsn, lsns: r.lsns };
  }

  async pageRead(body: unknown, deadlineMs: number): Promise<unknown> {
    const req = validatePageReadRequest(body);
    const volume = this.volume(req.volume);
    // The reply is one message: checked against the volume before any shard is asked. Refused
    // by the cached geometry, checked once more against the catalog's (the volume may have been
    // deleted and created again, larger).
    const info = await volume.info({ deadlineMs });
    try {
      validatePageRead(req, info.pageSize, info.pageCount);
    } catch (e) {
      // Only what the geometry decides, and bounded: a catalog that does not answer leaves the refusal.
      if (!(e instanceof ProtocolError) || (e.code !== 'out_of_range' && e.code !== 'too_large')) throw e;
      const fresh = await volume.info({ deadlineMs: Math.min(deadlineMs, Date.now() + GEOMETRY_RECHECK_MS), refresh: true });
      if (fresh === info) throw e;
      validatePageRead(req, fresh.pageSize, fresh.pageCount);
    }
    const at = req.lsn !== undefined ? { lsn: req.lsn } : req.lsns !== undefined ? { lsns: req.lsns } : {};
    const r = await volume.readPages(req.pages, { ...at, deadlineMs });
    // Made from the pages' checksums as each shard's reply was checked, not from the pages now.
    return { pages: r.pages, crc: r.crc, lsn: r.lsn, lsns: r.lsns };
  }

  async flush(body: unknown, deadlineMs: number): Promise<unknown> {
    const req = validateVolumeFlushRequest(body);
    const r = await this.volume(req.volume).flush({ deadlineMs });
    return { lsn: r.lsn, lsns: r.lsns };
  }

  /** Drops cached routing of a volume (after it was deleted). */
  forget(name: string): void {
    this.volumes.delete(name);
  }

  /** Drops cached routing of a volume by id. */
  forgetId(_volumeId: string): void {
    // Routing is cached by name; a stale entry heals itself on "no responders" (the client
    // refreshes the volume info once). Clearing everything is cheap and always correct.
    this.volumes.clear();
  }

  /** The cluster's status: every node's own view, the controller's membership and the catalog. */
  async clusterStatus(local: Record<string, unknown>, deadlineMs: number): Promise<unknown> {
    const selfId = (local.node as { id?: unknown } | undefined)?.id;
    // The controller's part goes at once, beside the gather of the nodes' answers, which ends as
    // soon as every node the controller counts live (and this one) has answered in full. A node
    // the controller has not heard from since it started (no lastSeenMs: the controller has just
    // restarted, and the nodes' next heartbeats are up to a second away) is waited for too: it
    // may well be up, and without it a status right after a restart of the controller showed
    // only the node that answered it.
    // Three quarters of the time left at most, for the gather and for the controller's part
    // alike: the merged answer must still reach the caller. (A controller that takes requests
    // and never answers, frozen, would otherwise hold the answer past the caller's deadline.)
    const partMs = Math.max(1, Math.floor((deadlineMs - Date.now()) * 0.75));
    const waitMs = Math.min(partMs, this.statusGatherMsMax);
    const fromController = this.controllerView(Date.now() + partMs);
    // Never rejects: the gather waits on it where nothing would handle a rejection.
    const expected = fromController.then((v) => {
      if (!v.controllerReachable) return undefined;
      const ids = new Set(v.members.filter((m) => typeof m.nodeId === 'string' && (m.live === true || m.lastSeenMs === undefined)).map((m) => m.nodeId as string));
      if (typeof selfId === 'string') ids.add(selfId);
      return ids;
    }).catch(() => undefined);
    const nodes = await this.gatherNodeStatus(waitMs, expected);
    // The gather failed, or this node's answer did not come in time: its own view, once.
    if (!nodes.some((n) => (n.node as { id?: unknown } | undefined)?.id === selfId)) nodes.push(local);
    const view = await fromController;
    return mergeClusterStatus({ self: local.node as Record<string, unknown>, nodes: joinNodeStatus(nodes), ...view }, (serverMaxPayload(this.nc) ?? MESSAGE_BYTES_MAX) - STATUS_REPLY_ROOM_BYTES);
  }

  /**
   * The nodes' answers to one `nodes.status` scatter request: gathered until every node of
   * `expected` has answered all its parts, for `waitMs` at most (for all of it when `expected`
   * is undefined: how many nodes answer is then not known), STATUS_REPLIES_MAX messages at most.
   * Answers that are not a node's status (garbage, an error reply) are left out. Never rejects.
   */
  private gatherNodeStatus(waitMs: number, expected: Promise<ReadonlySet<string> | undefined>): Promise<Array<Record<string, unknown>>> {
    return new Promise((resolve) => {
      const nodes: Array<Record<string, unknown>> = [];
      const answered = new StatusAnswers();
      let expectedIds: ReadonlySet<string> | undefined;
      let messages = 0;
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      let sub: Subscription | undefined;
      const finish = (ended: 'answered' | 'waited' | 'replies' | 'closed'): void => {
        if (done) return;
        done = true;
        this.lastStatusGather = { ended, waitMs };
        clearTimeout(timer);
        sub?.unsubscribe();
        resolve(nodes);
      };
      const finishIfComplete = (): void => {
        if (expectedIds !== undefined && answered.completeFor(expectedIds)) finish('answered');
      };
      try {
        sub = this.nc.subscribe(newInbox(this.nc), {
          max: STATUS_REPLIES_MAX,
          callback: (err, m) => {
            if (done) return;
            if (err !== null) {
              finish('closed');
              return;
            }
            messages++;
            try {
              const reply = throwIfError(decode(m.data));
              if (nodeStatusShaped(reply)) {
                nodes.push(reply as Record<string, unknown>);
                answered.add(reply as Record<string, unknown>);
              }
            } catch {
              // Not even CBOR, or an error reply: the node is reported by its absence.
            }
            if (messages >= STATUS_REPLIES_MAX) finish('replies');
            else finishIfComplete();
          },
        });
        timer = setTimeout(() => finish('waited'), waitMs);
        this.nc.publish(`strata.${this.cluster}.nodes.status`, encode({}), { reply: sub.getSubject() });
      } catch {
        finish('closed'); // the connection is closed or draining: what was gathered (nothing)
        return;
      }
      void expected.then((ids) => {
        expectedIds = ids;
        finishIfComplete();
      });
    });
  }

  /** The controller's membership and catalog for a status; never rejects. */
  private async controllerView(deadlineMs: number): Promise<{
    members: Array<Record<string, unknown>>;
    catalog: Array<Record<string, unknown>>;
    catalogError?: string;
    controllerReachable: boolean;
  }> {
    // Both asked at once: their waits add up to one, not two.
    const asked = (verb: string, key: string, lengthMax: number): Promise<Array<Record<string, unknown>>> =>
      this.forwardToController(verb, encode({}), deadlineMs).then((r) => listOfMaps(throwIfError(decode(r)), key, lengthMax));
    const membersAsked = asked('members', 'members', NODES_MAX);
    const catalogAsked = asked('volume.list', 'volumes', VOLUMES_PER_LIST_MAX);
    catalogAsked.catch(() => undefined); // read below, or left when the members failed
    try {
      const members = await membersAsked;
      try {
        const catalog = await catalogAsked;
        return { members, catalog, controllerReachable: true };
      } catch (e) {
        // The controller answered, but not with the list (more volumes than one message holds).
        if (!(e instanceof ProtocolError) || e.code !== 'too_large') throw e;
        return { members, catalog: [], catalogError: e.code, controllerReachable: true };
      }
    } catch {
      // Without a controller (or with an answer that is not one: anyone on the server can answer
      // its subjects) the status still shows what the nodes say.
      return { members: [], catalog: [], controllerReachable: false };
    }
  }

  private volume(name: string): Volume {
    let v = this.volumes.get(name);
    if (v) {
      // Refresh recency (Map keeps insertion order; the oldest entry is evicted first).
      this.volumes.delete(name);
      this.volumes.set(name, v);
      return v;
    }
    v = this.client.volume(name);
    this.volumes.set(name, v);
    if (this.volumes.size > VOLUME_CACHE_MAX) this.volumes.delete(this.volumes.keys().next().value!);
    return v;
  }
}

/** A node's status reply as the merge reads it: a map, whose `shards` (if any) is a list of maps. */
function nodeStatusShaped(value: unknown): boolean {
  if (!isPlainObject(value)) return false;
  const shards = value.shards;
  return shards === undefined || (Array.isArray(shards) && shards.every(isPlainObject));
}

/**
 * A node's answer to the status gather in messages of at most `bytesMax` encoded bytes each: the
 * whole status when it fits, else parts that each repeat the node's own fields and carry a run
 * of its shards, numbered `part` (from 0) of `parts`. A single shard too large for a part still
 * goes (alone), to be refused by the send as it would be whole.
 */
export function splitNodeStatus(status: Record<string, unknown>, bytesMax: number): Array<Record<string, unknown>> {
  const shards = Array.isArray(status.shards) ? (status.shards as unknown[]) : [];
  if (shards.length === 0 || encode(status).length <= bytesMax) return [status];
  // Room for the shards of a part: the part's own fields (with the largest part numbers), and
  // the array header that grows with its length.
  const room = bytesMax - encode({ ...status, shards: [], part: shards.length, parts: shards.length }).length - 16;
  const chunks: unknown[][] = [[]];
  let used = 0;
  for (const sh of shards) {
    const size = encode(sh).length;
    if (used + size > room && chunks[chunks.length - 1]!.length > 0) {
      chunks.push([]);
      used = 0;
    }
    chunks[chunks.length - 1]!.push(sh);
    used += size;
  }
  return chunks.map((chunk, part) => ({ ...status, shards: chunk, part, parts: chunks.length }));
}

/** The node id and `part` of `parts` a node's status answer names (splitNodeStatus); undefined when either is missing or malformed. */
function statusPart(r: Record<string, unknown>): { id: string; part: number; parts: number } | undefined {
  const id = (r.node as { id?: unknown } | undefined)?.id;
  const { part, parts } = r;
  if (typeof id !== 'string' || typeof parts !== 'number' || typeof part !== 'number') return undefined;
  if (!Number.isSafeInteger(parts) || parts < 1 || !Number.isSafeInteger(part) || part < 0 || part >= parts) return undefined;
  return { id, part, parts };
}

/** Which nodes have answered a status gather in full (all the parts of splitNodeStatus). */
class StatusAnswers {
  /** Per node id: its count of parts, and the parts received. */
  private readonly parts = new Map<string, { parts: number; got: Set<number> }>();

  add(reply: Record<string, unknown>): void {
    const id = (reply.node as { id?: unknown } | undefined)?.id;
    if (typeof id !== 'string') return;
    if (reply.part === undefined && reply.parts === undefined) {
      this.parts.set(id, { parts: 1, got: new Set([0]) }); // whole in one message
      return;
    }
    const p = statusPart(reply);
    if (p === undefined) return;
    const { part, parts } = p;
    let entry = this.parts.get(id);
    if (entry === undefined) {
      entry = { parts, got: new Set() };
      this.parts.set(id, entry);
    }
    // Parts of one answer agree on their count (as joinNodeStatus keeps them).
    if (parts === entry.parts) entry.got.add(part);
  }

  /**
   * True when every node of `ids` has answered all its parts, and so has every node that sent
   * some of them (a node that is answering is up, whatever the controller counts it: cut off
   * after its first part, it would be reported with parts missing and without its shards).
   */
  completeFor(ids: ReadonlySet<string>): boolean {
    for (const id of ids) if (!this.parts.has(id)) return false;
    for (const entry of this.parts.values()) if (entry.got.size < entry.parts) return false;
    return true;
  }
}

/**
 * The nodes' answers to a status gather, a node's parts (splitNodeStatus) joined into one view
 * with its shards in part order. A node some of whose parts did not arrive says how many in
 * `partsMissing` (their shards are then not reported). Answers without a node id pass as they are.
 */
export function joinNodeStatus(replies: ReadonlyArray<Record<string, unknown>>): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  const partsOf = new Map<string, { parts: number; got: Map<number, Record<string, unknown>> }>();
  for (const r of replies) {
    const p = statusPart(r);
    if (p === undefined) {
      out.push(r);
      continue;
    }
    const { id, part, parts } = p;
    let entry = partsOf.get(id);
    if (!entry) {
      entry = { parts, got: new Map() };
      partsOf.set(id, entry);
    }
    // Parts of one answer agree on their count; a stray part of another count is left out.
    if (parts === entry.parts && !entry.got.has(part)) entry.got.set(part, r);
  }
  for (const { parts, got } of partsOf.values()) {
    const ordered = [...got.entries()].sort((a, b) => a[0] - b[0]).map(([, r]) => r);
    const { part: _part, parts: _parts, shards: _shards, ...rest } = ordered[0]!;
    out.push({
      ...rest,
      shards: ordered.flatMap((r) => (Array.isArray(r.shards) ? (r.shards as unknown[]) : [])),
      ...(got.size < parts ? { partsMissing: parts - got.size } : {}),
    });
  }
  return out;
}

/** Replicas of volumes the catalog does not list that a cluster status names (all are counted). */
export const UNLISTED_REPLICAS_SHOWN_MAX = 64;

/** What a cluster status merges: the answering node, the nodes' views, the controller's part. */
export interface StatusParts {
  self: Record<string, unknown>;
  nodes: Array<Record<string, unknown>>;
  members: Array<Record<string, unknown>>;
  catalog: Array<Record<string, unknown>>;
  catalogError?: string;
  controllerReachable: boolean;
}

/** A volume's status: per shard, what its replicas report (`reported`, by `<volumeId>.<shard>`; the leader's view first). */
function volumeStatus(v: Record<string, unknown>, reported: ReadonlyMap<string, Array<Record<string, unknown>>>) {
  return {
    ...v,
    shards: Array.from({ length: Math.min(SHARDS_MAX, Math.max(0, Math.trunc(Number(v.shards)) || 0)) }, (_, i) => {
      const reps = reported.get(`${String(v.id)}.${i}`) ?? [];
      const leader = reps.find((r) => r.role === 'leader' && r.state === 'up');
      const best = leader ?? reps.find((r) => r.state === 'up');
      // A replica that is down reports zeros as placeholders: its term and LSNs are not known.
      const replicas = reps.map((r) => ({
        node: r.node, role: r.role, state: r.state,
        ...(r.state === 'down' ? {} : { term: r.term, commitLsn: r.commitLsn, appliedLsn: r.appliedLsn }),
        ...(r.downReason ? { reason: r.downReason } : {}),
        // Its log lost records: it votes for no one until it has them again (docs/replication.md).
        ...(r.repairing === true ? { repairing: true } : {}),
        // Its storage was lost: the peers whose term it waits for before anything else.
        ...(Array.isArray(r.awaitingTerms) && r.awaitingTerms.length > 0 ? { awaitingTerms: r.awaitingTerms } : {}),
        // Its files' bytes on its node's device (Replica.stats().storage).
        ...(r.state !== 'down' && r.storage !== undefined ? { storage: r.storage } : {}),
      }));
      if (!best) return { shard: i, role: 'none', term: 0, commitLsn: 0, appliedLsn: 0, state: 'unavailable', replicas };
      // The leader's replica set: the one in force (a move changes it), and the set it changes
      // from while a change is under way.
      const config = (leader?.config ?? undefined) as { members?: unknown; prior?: unknown } | undefined;
      const members = Array.isArray(config?.members) ? (config.members as unknown[]).filter((m): m is string => typeof m === 'string') : undefined;
      const prior = Array.isArray(config?.prior) ? (config.prior as unknown[]).filter((m): m is string => typeof m === 'string') : undefined;
      return {
        shard: i,
        role: leader ? 'leader' : 'none',
        term: best.term,
        commitLsn: best.commitLsn,
        appliedLsn: best.appliedLsn,
        ...(leader ? { leader: leader.node } : {}),
        state: leader ? 'up' : 'no_leader',
        lag: leader?.lag ?? {},
        ...(members !== undefined ? { members } : {}),
        ...(prior !== undefined ? { priorMembers: prior } : {}),
        replicas,
      };
    }),
  };
}

/**
 * A page.map reply's `end` and `ranges` (pairs) from a merged answer: one message holds at most
 * `rangesMax` ranges, past which the answer ends where the first range left out begins.
 */
export function mapReplyRanges(end: number, ranges: ReadonlyArray<{ first: number; count: number }>, rangesMax = PAGE_MAP_RANGES_MAX): { end: number; ranges: number[] } {
  const kept = ranges.slice(0, rangesMax);
  return { end: ranges.length > rangesMax ? ranges[rangesMax]!.first : end, ranges: kept.flatMap((x) => [x.first, x.count]) };
}

/**
 * The cluster status from its parts: each volume of the catalog with, per shard, what its
 * replicas report; in at most `bytesMax` encoded bytes, with less detail when it must be
 * (`StatusDetail`, docs/protocol.md).
 */
export function mergeClusterStatus(input: StatusParts, bytesMax: number): Record<string, unknown> {
  const { self, nodes, members, catalog, catalogError, controllerReachable } = input;
  // Each volume of the catalog with, per shard, what its replicas report (the leader's view first).
  const reported = new Map<string, Array<Record<string, unknown>>>();
  for (const n of nodes as Array<{ node?: { id?: string }; shards?: Array<Record<string, unknown>> }>) {
    for (const sh of n.shards ?? []) {
      const key = `${String(sh.volumeId)}.${String(sh.shard)}`;
      reported.set(key, [...(reported.get(key) ?? []), { ...sh, node: n.node?.id }]);
    }
  }
  const volumes = catalog.map((v) => volumeStatus(v, reported));
  // The catalog shard of a replicated controller, which no catalog lists: its own entry.
  const catalogReplicas = reported.get(`${CATALOG_VOLUME_ID}.0`);
  // Its replicas are the controller nodes, as its leader knows them, or without a leader as a
  // replica that reports knows them (some may not report: a majority of them dead, say).
  const catalogLeader = catalogReplicas?.find((r) => r.role === 'leader' && r.state === 'up');
  const membersOf = (r: Record<string, unknown> | undefined): string[] | undefined => {
    const m = (r?.config as { members?: unknown } | undefined)?.members;
    return Array.isArray(m) ? m.filter((x): x is string => typeof x === 'string') : undefined;
  };
  const catalogMembers = membersOf(catalogLeader) ?? catalogReplicas?.map(membersOf).find((m) => m !== undefined);
  const catalogShard = catalogReplicas === undefined
    ? undefined
    : volumeStatus({
        id: CATALOG_VOLUME_ID, name: CATALOG_VOLUME_NAME, pageCount: CATALOG_PAGE_COUNT, pageSize: CATALOG_PAGE_SIZE, shards: 1,
        replicas: catalogMembers !== undefined ? catalogMembers.length : catalogReplicas.length,
      }, reported);
  // Without a leader, the members it has, so that those not reported are shown missing.
  const catalogRow = catalogShard?.shards[0] as { members?: string[] } | undefined;
  if (catalogRow !== undefined && catalogRow.members === undefined && catalogMembers !== undefined) catalogRow.members = catalogMembers;
  // The nodes' own shard lists are in the volumes already: each node's is left out.
  const nodeViews = nodes.map(({ shards, ...rest }) => ({ ...rest, shardCount: Array.isArray(shards) ? shards.length : 0 }));
  // Replicas nodes hold of volumes the catalog does not list: one being created or deleted
  // (for a moment), or opened on a node by hand (shards.open). Nodes keep them (a node destroys
  // a replica only for a volume the catalog deleted, or a shard a finished move took off it: so
  // the replicas outlive a lost catalog),
  // and the operator sees them here. Known only with the whole catalog at hand.
  const listed = new Set(catalog.map((v) => String(v.id)));
  const unlisted: Array<{ node: unknown; volumeId: unknown; shard: unknown }> = [];
  let unlistedCount = 0;
  if (controllerReachable && catalogError === undefined) {
    for (const reps of reported.values()) {
      if (listed.has(String(reps[0]!.volumeId)) || reps[0]!.volumeId === CATALOG_VOLUME_ID) continue;
      for (const r of reps) {
        unlistedCount++;
        if (unlisted.length < UNLISTED_REPLICAS_SHOWN_MAX) unlisted.push({ node: r.node, volumeId: r.volumeId, shard: r.shard });
      }
    }
  }
  const reply = (detail: StatusDetail, vols: unknown[]): Record<string, unknown> => ({
    node: self, detail, volumes: vols, nodes: nodeViews, members, controllerReachable, ...(catalogError !== undefined ? { catalogError } : {}),
    ...(unlistedCount > 0 ? { unlistedReplicas: unlisted, unlistedReplicaCount: unlistedCount } : {}),
    ...(catalogShard !== undefined ? { catalogShard } : {}),
  });
  // One message holds it: with many shard replicas, less detail (docs/protocol.md, status).
  const fits = (r: Record<string, unknown>): boolean => encode(r).length <= bytesMax;
  const full = reply('full', volumes);
  if (fits(full)) return full;
  // Up, with as many replicas as the volume has, each reported up and not repairing, and every
  // follower the leader counts among them (one on a dead node is only in the leader's lag).
  const replicasOf = (v: object): number => Math.max(1, Math.trunc(Number((v as { replicas?: unknown }).replicas)) || 1);
  const healthy = (
    sh: { state: string; lag?: object; replicas: Array<{ node?: unknown; state?: unknown; repairing?: boolean }> },
    expected: number,
  ): boolean =>
    sh.state === 'up' &&
    sh.replicas.length >= expected &&
    sh.replicas.every((r) => r.state === 'up' && r.repairing !== true) &&
    Object.keys(sh.lag ?? {}).every((node) => sh.replicas.some((r) => r.node === node));
  const degraded = reply('degraded-replicas', volumes.map((v) => ({
    ...v,
    shards: v.shards.map((sh) => (healthy(sh, replicasOf(v)) ? { ...sh, replicas: undefined, replicaCount: sh.replicas.length } : sh)),
  })));
  if (fits(degraded)) return degraded;
  return reply('summary', volumes.map(({ shards, ...v }) => ({
    ...v,
    shards: [],
    shardCount: shards.length,
    shardsUp: shards.filter((sh) => sh.state === 'up').length,
    shardsDegraded: shards.filter((sh) => sh.state === 'up' && !healthy(sh, replicasOf(v))).length,
    shardsUnavailable: shards.filter((sh) => sh.state !== 'up').length,
  })));
}

/** `body[key]`, a list of at most `lengthMax` maps (a controller's answer); bad_request when it is not one. */
function listOfMaps(body: unknown, key: string, lengthMax: number): Array<Record<string, unknown>> {
  return expectArray(field(expectMap(body, ''), key), key, { lengthMin: 0, lengthMax }).map((m, i) => expectMap(m, `${key}[${i}]`));
}

/** The error an encoded error reply carries. */
function errorIn(reply: Uint8Array): ProtocolError {
  try {
    throwIfError(decode(reply));
  } catch (e) {
    if (e instanceof ProtocolError) return e;
  }
  return new ProtocolError('internal', 'an error reply without an error');
}

/**
 * `data` (the encoded `body` of a catalog change) with a new request id (a random UUID) when the
 * body is a map without `requestId`; else `data` itself. A body that is not a map, or whose
 * `requestId` is not valid, goes as it came: the controller refuses it (`bad_request`). With the
 * request id it goes with (none for a body without a string one).
 */
export function withRequestId(body: unknown, data: Uint8Array): { data: Uint8Array; requestId: string | undefined } {
  if (!isPlainObject(body) || 'requestId' in body) return { data, requestId: requestIdIn(body) };
  const requestId = newRequestId();
  return { data: encode({ ...body, requestId }), requestId };
}
