/**
 * Controller: the volume catalog and the placement of shards on nodes.
 *
 * The catalog (volumes, their ids, geometry and where each shard lives, and tombstones of
 * deleted volumes) is durable: every change is written (MetaStore's atomic replacement, or the
 * catalog shard's commit) before it is acknowledged. Node membership is soft state rebuilt from heartbeats, bounded:
 * at most `nodesMax` members (a heartbeat from one more node is refused `too_large`), and a
 * member silent for `memberSilenceMsMax` that holds no shard placement is forgotten.
 *
 * This is logic only: it does no messaging and reads no clock. The node hosting it passes the
 * current time in and carries out the effects (telling nodes to open or destroy shards).
 * The catalog is kept in one of two ways: in a MetaStore on the controller's node (one copy),
 * or replicated, in the catalog shard (cluster/catalog-shard.ts), whose leader's node runs the
 * controller (docs/replication.md, "A replicated controller").
 */
import { MetaStore } from '../storage-engine/metadata';
import { StorageError } from '../storage-engine/errors';
import { ProtocolError } from '../messages/errors';
import { encode } from '../messages/codec';
import { idNumber, idTag, shardKey } from '../messages/volume-id';
import type { BranchPoint, VolumeInfo, VolumeSpec } from '../messages/api';
import { expectCounter, expectName } from '../messages/validate';
import { DRAINING_NODES_MAX, type DownReplica, type NotCopied, type ShardAssignment } from '../messages/control';

export interface ReplicaPlacement {
  nodeId: string;
  hostId: number;
}

/** Where a shard's replicas live: on distinct nodes. */
export interface ShardPlacement {
  shard: number;
  replicas: ReplicaPlacement[];
  /**
   * A move under way (docs/replication.md, "Moving a replica"): the replica it adds, on a node
   * not in `replicas`, and the node of `replicas` it takes off (`removing`). Both or neither.
   * `replicas` stays the set before the move until the shard's leader has committed the new one.
   */
  adding?: ReplicaPlacement;
  removing?: string;
  /**
   * Nodes finished moves took off the shard, newest last (at most REMOVED_PER_SHARD_MAX): each
   * destroys its replica when it next reconciles. A node a later move adds again leaves it.
   */
  removed?: string[];
  /** The last move of the shard that finished: asked again, it is answered done. */
  moved?: { from: string; to: string };
}

/** Nodes a shard's placement remembers as moved off it, at most (`ShardPlacement.removed`). */
export const REMOVED_PER_SHARD_MAX = 8;

/** A move `repairPlan` proposes: one that replaces a dead node's replica, or one under way to resume. */
export interface RepairMove {
  volume: string;
  volumeId: string;
  shard: number;
  from: string;
  to: string;
  /** The catalog holds this move under way already. */
  resumed: boolean;
  /**
   * Why: `from` is dead, its replica there is down (`failed`: its node reports it down), or
   * `from` is draining (for a move under way: why it was begun is not known, `resumed`).
   */
  reason: 'dead' | 'failed' | 'draining' | 'resumed' | 'balance';
  /**
   * The node the move adds died meanwhile: the move is finished without it (a majority of each
   * set is live without it), and its replica is then replaced as any dead node's. It opens the
   * replica if it comes back first, as one that lost its storage.
   */
  withoutOpen?: true;
}

/** A move of a shard's replica, as the controller runs it (`beginMove`). */
export interface ShardMove {
  volume: VolumeRecord;
  shard: number;
  from: string;
  to: ReplicaPlacement;
  /** The shard's set before the move, and after it. */
  priorMembers: string[];
  members: string[];
  /** The catalog held this move already (it is resumed), or held it done (nothing to record). */
  resumed: boolean;
  done: boolean;
}

/** How a shard's assignment reaches a node: a member, the node a move adds, or one a move took off. */
export type AssignmentRole = 'member' | 'adding' | 'removed';

export interface VolumeRecord extends VolumeInfo {
  placements: ShardPlacement[];
  /** The id of the create or branch that added it (RequestId), if it had one: `madeBy`. */
  requestId?: string;
  /**
   * Its create or branch has not been answered: set when it is added (`create`, `branch`), taken
   * off (`placed`) once every node answered the opens of its replicas, before the answer. Such a
   * volume is neither described nor listed, and the controller undoes it rather than opening its
   * replicas again (`unplaced`). Absent (a catalog written before it existed, a recovered
   * volume): placed.
   */
  placing?: true;
}

/** A branch point of another count of LSNs than the parent has shards (the controller's check, and the API router's before it). */
export function branchPointCountError(parent: string, shards: number, count: number): ProtocolError {
  return new ProtocolError('bad_request', `lsns: volume '${parent}' has ${shards} shard${shards === 1 ? '' : 's'}, so a branch of it takes ${shards} LSN${shards === 1 ? '' : 's'} (one per shard, in shard order), got ${count}`, {
    path: 'lsns', shards, lsns: count,
  });
}

/** The deletes with a request id the catalog remembers (`deletedBy`), newest last. */
export const DELETES_REMEMBERED_MAX = 256;
/** The resizes with a request id the catalog remembers (`resizedBy`), newest last. */
export const RESIZES_REMEMBERED_MAX = 256;

export interface CatalogState {
  version: 1;
  /** Bumped on every change; lets nodes tell a newer catalog from an older one. */
  epoch: number;
  nextId: number;
  /**
   * Random token chosen when this catalog was created, part of every volume id it assigns, so
   * that a catalog created again (its controller's data lost) never gives a new volume the id
   * of an old one whose files are still on a node. Absent in catalogs written before it existed.
   */
  tag?: string;
  volumes: VolumeRecord[];
  /** Ids of deleted volumes whose shards nodes must destroy (newest last, bounded). */
  tombstones: string[];
  /**
   * Nodes an operator marked draining (`drain`), sorted, at most DRAINING_NODES_MAX: their
   * replicas are moved to other nodes, and nothing new is placed on them. Absent: none.
   */
  draining?: string[];
  /** An operator asked for the replicas to be spread evenly (`setRebalance`); absent: not asked. */
  rebalance?: true;
  /**
   * The last DELETES_REMEMBERED_MAX deletes that came with a request id (RequestId), newest last:
   * a delete sent again is answered done without deleting a volume of that name made since
   * (`deletedBy`). Absent: none.
   */
  deletedBy?: Array<{ requestId: string; name: string }>;
  /**
   * The last RESIZES_REMEMBERED_MAX resizes that came with a request id and grew a volume, newest
   * last: one sent again after the volume grew further is answered with it (`resizedBy`), not
   * refused as a shrink; one sent again after that volume was deleted is refused `not_found`
   * (by its `name`; entries of earlier builds have none), not made on a volume of that name made
   * since. Absent: none.
   */
  resizedBy?: Array<{ requestId: string; volumeId: string; name?: string }>;
  /**
   * The creates and branches (their request ids, RequestId) whose volume a delete removed since,
   * the last DELETES_REMEMBERED_MAX, newest last: one of them sent again late (a try queued
   * behind the delete) is refused, not made anew, which would bring a deleted volume back
   * (`deletedSince`). Not those undone by the controller (answered not made: made anew when sent
   * again). Absent: none.
   */
  madeThenDeleted?: Array<{ requestId: string; name: string }>;
}

export interface NodeMember {
  nodeId: string;
  hosts: number;
  lastSeenMs: number;
  /** Its failure domain, as its heartbeats name it (HeartbeatRequest.zone); absent: a domain of its own. */
  zone?: string;
  /**
   * The replicas its last heartbeat reported down (HeartbeatRequest.down), by `volumeId.shard`:
   * since when, by this controller's clock, without a break in the reports. Absent: none.
   */
  down?: ReadonlyMap<string, number>;
  /** How many shards its replicas lead, as its last heartbeat said (HeartbeatRequest.leading). */
  leading?: number;
  /**
   * Not live until its next heartbeat, whatever its last one (`markGone`): it said it stops, or did
   * not answer a request to open a new volume's replicas (no responders).
   */
  gone?: true;
}

/** The failure domain of a member: its zone, or the node alone. */
function domainOf(m: NodeMember): string {
  return m.zone === undefined ? `node:${m.nodeId}` : `zone:${m.zone}`;
}

/**
 * Where a replica taken off a shard's node goes: among `live`, a node `taken` does not rule out,
 * in none of `domains` (the failure domains of the shard's replicas that stay) first, then the
 * one holding the fewest replicas by `load`, the first in `live` among equals; undefined when
 * there is none.
 */
function replacementNode(live: readonly NodeMember[], taken: (nodeId: string) => boolean, domains: ReadonlySet<string>, load: ReadonlyMap<string, number>): NodeMember | undefined {
  const rank = (m: NodeMember): [number, number] => [domains.has(domainOf(m)) ? 1 : 0, load.get(m.nodeId) ?? 0];
  let best: NodeMember | undefined;
  for (const m of live) {
    if (taken(m.nodeId)) continue;
    if (best === undefined) best = m;
    else {
      const [d, l] = rank(m);
      const [bd, bl] = rank(best);
      if (d < bd || (d === bd && l < bl)) best = m;
    }
  }
  return best;
}

/**
 * The host of `node` with the fewest replicas by `load` (keyed `<nodeId>/<hostId>`; the lowest id
 * among equals).
 */
function leastLoadedHost(node: { nodeId: string; hosts: number }, load: ReadonlyMap<string, number>): number {
  let h = 0;
  for (let i = 1; i < node.hosts; i++) if ((load.get(`${node.nodeId}/${i}`) ?? 0) < (load.get(`${node.nodeId}/${h}`) ?? 0)) h = i;
  return h;
}

/** Members (nodes heard from) the controller keeps at most, by default. */
export const NODES_MAX = 1024;
/** A member silent this long that holds no shard placement is forgotten, by default (24 h). */
export const MEMBER_SILENCE_MS_MAX = 24 * 60 * 60 * 1000;
/** Members are checked for forgetting at most this often (by the heartbeats' clock). */
const MEMBER_SWEEP_EVERY_MS = 60 * 1000;

/**
 * A catalog kept elsewhere than in a local MetaStore: in the catalog shard, replicated like any
 * shard's log (cluster/catalog-shard.ts). `state` is the catalog as read when this controller took
 * over (undefined: none yet); `write` makes one durably the catalog, after the ones before it.
 */
export interface ReplicatedCatalog {
  state: CatalogState | undefined;
  /** `encoded`: `state` as `encode` makes it, when the controller made it already (`bytesMax`). */
  write(state: CatalogState, encoded?: Uint8Array): Promise<void>;
  /**
   * The most bytes the encoded catalog may take (its region of the catalog shard): a change that
   * would make it larger is refused `too_large`, before anything changes (a write that failed
   * for its size would fence the controller, and the next one would fail the same way).
   */
  bytesMax?: number;
}

export interface ControllerOptions {
  /** The catalog's local, single-copy storage; or, instead, `replicated`. */
  meta?: MetaStore;
  replicated?: ReplicatedCatalog;
  /** A node is live if heard from within this long; default 5 s. */
  liveWindowMs?: number;
  /** Members at most; default NODES_MAX. */
  nodesMax?: number;
  /** Silence after which a member without placements is forgotten; default MEMBER_SILENCE_MS_MAX. */
  memberSilenceMsMax?: number;
  /** Volumes at most; default 4096. */
  volumesMax?: number;
  /** Shard replicas placed in the whole catalog at most; default CATALOG_REPLICAS_MAX. */
  replicasMax?: number;
  /** Tombstones kept; default 4096. */
  tombstonesMax?: number;
  /**
   * The `tag` of a catalog created now (no catalog on disk yet): 1..16 of [a-z0-9]. Default none
   * (ids `v1`, `v2`…). A node passes a random one.
   */
  newCatalogTag?: string;
}

/** The catalog's name in its MetaStore (a controller node that keeps it alone: `<dataDir>/controller/catalog`). */
export const CATALOG = 'catalog';

/**
 * Shard replicas the catalog holds at most (every shard of every volume, times its replicas).
 * The catalog is written whole at each change: at this bound it is about 6 MB with short node
 * ids; without it, volumes of many shards and replicas ran it into its size limit (16 MiB) after
 * each change had cost the controller half a second of CPU. Node ids of 64 characters and every
 * shard's list of removed nodes full can still take it past 16 MiB at this bound: a change that
 * would is refused `too_large` (ReplicatedCatalog.bytesMax; a catalog kept alone meets its
 * MetaStore's limit).
 */
export const CATALOG_REPLICAS_MAX = 65536;

export class Controller {
  private state: CatalogState;
  private readonly meta: MetaStore | undefined;
  private readonly replicated: ReplicatedCatalog | undefined;
  /** Replicated: the writes of the changes made so far, one after another; never rejected. */
  private writes: Promise<void> = Promise.resolve();
  private readonly members = new Map<string, NodeMember>();
  private readonly liveWindowMs: number;
  private readonly volumesMax: number;
  private readonly replicasMax: number;
  private readonly tombstonesMax: number;
  private readonly nodesMax: number;
  private readonly memberSilenceMsMax: number;
  private memberSweepMs = -Infinity;
  private placementCursor = 0;
  /** Set when a catalog write failed after its rename (see `commit`). */
  private fenced: string | undefined;
  /** Replicated: why this controller no longer runs (`retire`), once its node gave up its seat. */
  private retired: string | undefined;

  constructor(opts: ControllerOptions) {
    if ((opts.meta === undefined) === (opts.replicated === undefined)) {
      throw new StorageError('bad_request', 'a controller keeps its catalog in a MetaStore or replicated, one of the two');
    }
    this.meta = opts.meta;
    this.replicated = opts.replicated;
    this.liveWindowMs = opts.liveWindowMs ?? 5000;
    this.volumesMax = opts.volumesMax ?? 4096;
    this.replicasMax = opts.replicasMax ?? CATALOG_REPLICAS_MAX;
    this.tombstonesMax = opts.tombstonesMax ?? 4096;
    this.nodesMax = opts.nodesMax ?? NODES_MAX;
    this.memberSilenceMsMax = opts.memberSilenceMsMax ?? MEMBER_SILENCE_MS_MAX;
    const tag = opts.newCatalogTag;
    if (tag !== undefined && !/^[a-z0-9]{1,16}$/.test(tag)) {
      throw new StorageError('bad_request', `newCatalogTag must be 1..16 of [a-z0-9], got ${JSON.stringify(tag)}`);
    }
    this.state = (this.meta !== undefined ? this.meta.read<CatalogState>(CATALOG) : this.replicated!.state) ?? { version: 1, epoch: 0, nextId: 1, ...(tag === undefined ? {} : { tag }), volumes: [], tombstones: [] };
    if (this.state.version !== 1) {
      throw new StorageError('corruption', `catalog has unknown version ${String(this.state.version)}`);
    }
  }

  get epoch(): number {
    return this.state.epoch;
  }

  /** The number of the next volume id this catalog issues: every id it issued is below it. */
  get nextId(): number {
    return this.state.nextId;
  }

  /** The tag this catalog was created with (undefined for a catalog of before tags). */
  get tag(): string | undefined {
    return this.state.tag;
  }

  /**
   * Records a heartbeat (or registration) of a node. A node not yet a member while `nodesMax`
   * are is refused `too_large`. Once a minute (by `nowMs`), members silent for long are
   * forgotten first (see `sweep`): a heartbeat may not cost a walk over every placement.
   */
  heartbeat(nodeId: string, hosts: number, nowMs: number, zone?: string, report: { down?: readonly DownReplica[]; leading?: number } = {}): void {
    const { down, leading } = report;
    if (nowMs - this.memberSweepMs >= MEMBER_SWEEP_EVERY_MS) this.sweep(nowMs);
    if (!this.members.has(nodeId) && this.members.size >= this.nodesMax) {
      throw new ProtocolError('too_large', `the controller knows ${this.nodesMax} nodes, its limit; node '${nodeId}' is not admitted (a member silent ${this.memberSilenceMsMax} ms that holds no shards is forgotten, checked every minute)`, {
        nodeId,
        nodesMax: this.nodesMax,
      });
    }
    // A replica reported down in the heartbeat before too keeps the earlier start: a node's
    // clock restarts with the node, the controller's does not.
    const before = this.members.get(nodeId)?.down;
    let downSince: Map<string, number> | undefined;
    for (const d of down ?? []) {
      const key = shardKey(d.volumeId, d.shard);
      downSince ??= new Map();
      downSince.set(key, Math.min(before?.get(key) ?? Infinity, nowMs - d.forMs));
    }
    this.members.set(nodeId, {
      nodeId, hosts, lastSeenMs: nowMs,
      ...(zone === undefined ? {} : { zone }),
      ...(downSince === undefined ? {} : { down: downSince }),
      ...(leading === undefined || leading === 0 ? {} : { leading }),
    });
  }

  /**
   * Whether node `nodeId`'s replica of the shard serves, as far as this controller knows: its node
   * is live (`liveIds`) and its last heartbeat did not report the replica down.
   */
  private replicaUp(nodeId: string, volumeId: string, shard: number, liveIds: ReadonlySet<string>): boolean {
    return liveIds.has(nodeId) && this.members.get(nodeId)?.down?.has(shardKey(volumeId, shard)) !== true;
  }

  /** Whether a majority of `set` are replicas of the shard that serve (`replicaUp`). */
  private majorityUp(set: readonly string[], volumeId: string, shard: number, liveIds: ReadonlySet<string>): boolean {
    return set.filter((n) => this.replicaUp(n, volumeId, shard, liveIds)).length >= Math.floor(set.length / 2) + 1;
  }

  /** Forgets members silent longer than memberSilenceMsMax that hold no shard placement. */
  private sweep(nowMs: number): void {
    this.memberSweepMs = nowMs;
    const placed = this.placedNodes();
    for (const [id, m] of this.members) {
      if (nowMs - m.lastSeenMs > this.memberSilenceMsMax && !placed.has(id)) this.members.delete(id);
    }
  }

  /**
   * Node `nodeId` is not live until its next heartbeat (NodeMember.gone): nothing new is placed on
   * it meanwhile. Its last heartbeat still dates its silence (the wait before its replicas are
   * replaced). False when the node is no member.
   */
  markGone(nodeId: string): boolean {
    const m = this.members.get(nodeId);
    if (m === undefined) return false;
    this.members.set(nodeId, { ...m, gone: true });
    return true;
  }

  /** Whether node `nodeId` is among `liveNodes(nowMs)`. */
  isLive(nodeId: string, nowMs: number): boolean {
    const m = this.members.get(nodeId);
    return m !== undefined && nowMs - m.lastSeenMs <= this.liveWindowMs && m.gone !== true;
  }

  liveNodes(nowMs: number): NodeMember[] {
    return [...this.members.values()]
      .filter((m) => this.isLive(m.nodeId, nowMs))
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  /** The live nodes that are not draining, sorted: those a new replica, a moved one or a leadership may go to. */
  private liveNotDraining(nowMs: number): NodeMember[] {
    const draining = new Set(this.state.draining ?? []);
    return this.liveNodes(nowMs).filter((m) => !draining.has(m.nodeId));
  }

  /**
   * The nodes the catalog places replicas on that this controller has not heard from since it
   * started (after a restart of the controller, a node that died before it), sorted.
   */
  placedUnheard(): string[] {
    return [...this.placedNodes()].filter((id) => !this.members.has(id)).sort();
  }

  /** The nodes the catalog places replicas on (a move under way's added node too). */
  placedNodes(): Set<string> {
    return new Set(this.replicasByNode().keys());
  }

  /** Shard replicas the catalog places on each node that holds any (the one a move under way adds counted). */
  private replicasByNode(): Map<string, number> {
    const load = new Map<string, number>();
    for (const v of this.state.volumes) for (const p of v.placements) for (const r of placedOn(p)) load.set(r.nodeId, (load.get(r.nodeId) ?? 0) + 1);
    return load;
  }

  /** The failure domain of node `nodeId` (a node never heard from: its own). */
  private domainOfNode(nodeId: string): string {
    return domainOf(this.members.get(nodeId) ?? { nodeId, hosts: 1, lastSeenMs: 0 });
  }

  /**
   * The shards of the catalog with at least one replica on a node that is not live (`liveNodes`)
   * or that its node reports down.
   */
  underReplicated(nowMs: number): number {
    const live = new Set(this.liveNodes(nowMs).map((m) => m.nodeId));
    let n = 0;
    for (const v of this.state.volumes) for (const p of v.placements) if (p.replicas.some((r) => !this.replicaUp(r.nodeId, v.id, p.shard, live))) n++;
    return n;
  }

  /** Every member: each node heard from since this controller started, live or not, until forgotten. */
  knownNodes(): NodeMember[] {
    return [...this.members.values()].sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  list(): VolumeRecord[] {
    return this.state.volumes.map((v) => ({ ...v }));
  }

  get(name: string): VolumeRecord {
    const v = this.state.volumes.find((x) => x.name === name);
    if (!v) throw new ProtocolError('not_found', `volume '${name}' does not exist`, { name });
    return v;
  }

  /**
   * Shards placed on a node, and ids of deleted volumes whose leftovers it must destroy. With the
   * shards it holds, those a move under way adds to it (`adding`) and those a finished move took
   * off it (`removed`: it destroys its replica).
   */
  assignments(nodeId: string): { epoch: number; shards: Array<{ volume: VolumeRecord; placement: ShardPlacement; hostId: number; role: AssignmentRole }>; tombstones: string[] } {
    const shards: Array<{ volume: VolumeRecord; placement: ShardPlacement; hostId: number; role: AssignmentRole }> = [];
    for (const v of this.state.volumes) {
      for (const p of v.placements) {
        const mine = p.replicas.find((r) => r.nodeId === nodeId);
        if (mine) shards.push({ volume: v, placement: p, hostId: mine.hostId, role: 'member' });
        else if (p.adding?.nodeId === nodeId) shards.push({ volume: v, placement: p, hostId: p.adding.hostId, role: 'adding' });
        else if (p.removed?.includes(nodeId) === true) shards.push({ volume: v, placement: p, hostId: 0, role: 'removed' });
      }
    }
    return { epoch: this.state.epoch, shards, tombstones: [...this.state.tombstones] };
  }

  /**
   * Records durably the move of shard `shard` of volume `name`'s replica on node `from` to node
   * `to` (a live member, placed on its least loaded host), and returns what the node running it
   * needs. Once recorded, `to`'s reconciliation opens the new replica, and a node that held
   * the shard keeps it until the move is finished (`finishMove`).
   *
   * Asked again while the catalog holds the same move, it changes nothing (`resumed`); asked
   * once it is finished (the shard's last move, from `from` to `to`), nothing either (`done`: the leader
   * answers that the set is already the new one). Refused, changing nothing: `not_found` (no
   * such volume), `out_of_range` (no such shard), `bad_request` (`from` not a member, `to`
   * one already, the same node), `unavailable` (another move of the shard under way, or `to`
   * not live).
   */
  beginMove(name: string, shard: number, from: string, to: string, nowMs: number): ShardMove {
    const v = this.get(name);
    if (!Number.isSafeInteger(shard) || shard < 0 || shard >= v.shards) {
      throw new ProtocolError('out_of_range', `shard ${shard}: volume '${name}' has shards 0..${v.shards - 1}`, { shard, shards: v.shards });
    }
    if (from === to) throw new ProtocolError('bad_request', `from and to are the same node '${from}': name the node to take the replica off and another to put it on`, { path: 'to' });
    const p = v.placements.find((x) => x.shard === shard)!;
    const members = p.replicas.map((r) => r.nodeId);
    const describe = (f: string, t: string): string => `the move of shard ${shard} of volume '${name}' from node '${f}' to node '${t}'`;
    if (p.adding !== undefined) {
      const removing = p.removing!;
      if (removing !== from || p.adding.nodeId !== to) {
        throw new ProtocolError('unavailable', `${describe(removing, p.adding.nodeId)} is under way, one move of a shard at a time: run that one again to finish it (strata shard move ${name} ${shard} --from ${removing} --to ${p.adding.nodeId})`, {
          from: removing, to: p.adding.nodeId,
        });
      }
      const next = members.map((m) => (m === from ? to : m));
      return { volume: v, shard, from, to: p.adding, priorMembers: members, members: next, resumed: true, done: false };
    }
    if (p.moved?.from === from && p.moved.to === to && !members.includes(from) && members.includes(to)) {
      // Done before: the leader answers that its set is this one already.
      const prior = members.map((m) => (m === to ? from : m));
      return { volume: v, shard, from, to: p.replicas.find((r) => r.nodeId === to)!, priorMembers: prior, members, resumed: true, done: true };
    }
    if (!members.includes(from)) {
      throw new ProtocolError('bad_request', `node '${from}' holds no replica of shard ${shard} of volume '${name}': its replicas are on ${members.join(', ')}`, { path: 'from', members });
    }
    if (members.includes(to)) {
      throw new ProtocolError('bad_request', `node '${to}' holds a replica of shard ${shard} of volume '${name}' already (its replicas are on ${members.join(', ')}): move it to a node that holds none`, { path: 'to', members });
    }
    if ((this.state.draining ?? []).includes(to)) {
      throw new ProtocolError('bad_request', `node '${to}' is draining: move the replica to another node, or take the mark off first (strata drain ${to} --undo)`, { path: 'to' });
    }
    const live = this.liveNodes(nowMs);
    const target = live.find((m) => m.nodeId === to);
    if (target === undefined) {
      const others = live.map((m) => m.nodeId).filter((id) => !members.includes(id));
      throw new ProtocolError('unavailable', `node '${to}' is not live (the controller has not heard from it within ${this.liveWindowMs} ms): start it, or move the replica to a live node that holds none of the shard${others.length > 0 ? ` (${others.join(', ')})` : ' (there is none)'}`, {
        path: 'to', liveNodes: others,
      });
    }
    const adding: ReplicaPlacement = { nodeId: to, hostId: leastLoadedHost(target, this.hostLoad()) };
    const removed = p.removed?.filter((n) => n !== to);
    const placement: ShardPlacement = { shard, replicas: p.replicas, adding, removing: from, ...(removed !== undefined && removed.length > 0 ? { removed } : {}), ...(p.moved ? { moved: p.moved } : {}) };
    const volume = this.withPlacement(v, placement);
    const next = members.map((m) => (m === from ? to : m));
    return { volume, shard, from, to: adding, priorMembers: members, members: next, resumed: false, done: false };
  }

  /**
   * Finishes, durably, the move `beginMove` recorded, once the shard's leader has committed the
   * new set: `to` replaces `from` among the shard's replicas, and `from` is remembered as moved
   * off (it destroys its replica when it next reconciles). Changes nothing when the catalog holds
   * the move done already. `not_found` when the volume was deleted meanwhile, `unavailable`
   * when the catalog holds no such move any more.
   */
  finishMove(name: string, shard: number, from: string, to: string): VolumeRecord {
    const v = this.get(name);
    const p = v.placements.find((x) => x.shard === shard);
    if (p === undefined) throw new ProtocolError('out_of_range', `shard ${shard}: volume '${name}' has shards 0..${v.shards - 1}`, { shard });
    const members = p.replicas.map((r) => r.nodeId);
    if (p.adding === undefined && members.includes(to) && !members.includes(from)) return v;
    if (p.adding?.nodeId !== to || p.removing !== from) {
      throw new ProtocolError('unavailable', `the catalog holds no move of shard ${shard} of volume '${name}' from node '${from}' to node '${to}' any more`, { from, to });
    }
    // In the order of before, `to` where `from` was: the shard's first replica stays first.
    const replicas = p.replicas.map((r) => (r.nodeId === from ? p.adding! : r));
    const removed = [...(p.removed ?? []).filter((n) => n !== from && n !== to), from].slice(-REMOVED_PER_SHARD_MAX);
    return this.withPlacement(v, { shard, replicas, removed, moved: { from, to } });
  }

  /** The move under way of each shard of volume `name` (none: an empty list). */
  moves(name: string): Array<{ shard: number; from: string; to: string }> {
    return this.get(name).placements.flatMap((p) => (p.adding === undefined ? [] : [{ shard: p.shard, from: p.removing!, to: p.adding.nodeId }]));
  }

  /** The nodes marked draining, sorted. */
  draining(): string[] {
    return [...(this.state.draining ?? [])];
  }

  /**
   * Marks node `nodeId` draining (`undo`: no longer), durably; nothing changes (and nothing is
   * written) when it is so already. `too_large` past DRAINING_NODES_MAX nodes. Returns whether
   * it is draining now and the replicas the catalog still places on it.
   */
  drain(nodeId: string, undo: boolean): { draining: boolean; replicas: number } {
    const now = new Set(this.state.draining ?? []);
    if (undo ? now.has(nodeId) : !now.has(nodeId)) {
      if (!undo && now.size >= DRAINING_NODES_MAX) {
        throw new ProtocolError('too_large', `${DRAINING_NODES_MAX} nodes are draining, the limit: wait for one to be empty and take its mark off (strata drain NODE --undo)`, { drainingMax: DRAINING_NODES_MAX });
      }
      if (undo) now.delete(nodeId);
      else now.add(nodeId);
      const { draining: _, ...rest } = this.state;
      this.commit({ ...rest, ...(now.size === 0 ? {} : { draining: [...now].sort() }) });
    }
    return { draining: !undo, replicas: this.replicasOn(nodeId) };
  }

  /** Shard replicas the catalog places on `nodeId` (the one a move under way adds counted). */
  replicasOn(nodeId: string): number {
    return this.replicasByNode().get(nodeId) ?? 0;
  }

  /**
   * The moves that replace replicas on dead nodes (docs/replication.md, "Replacing a dead node's
   * replicas"), replicas live nodes report down ("Replacing a replica its node reports down") and
   * move them off draining nodes ("Draining a node"), at most `max`, in catalog order; changes
   * nothing (`beginMove` records each). With `afterMs` 0, no node counts as dead and no replica
   * as failed.
   *
   * A node is dead once it is not live and has been silent longer than `afterMs`: since its last
   * heartbeat, or, for a node the catalog places replicas on that this controller has not heard
   * from, since `sinceMs` (when the controller started). A live node's replica has failed once its
   * heartbeats have reported it down (HeartbeatRequest.down) for longer than `afterMs`. A replica
   * serves when its node is live and does not report it down. For each shard (but those `skip`
   * names):
   * - a move under way is resumed as it was recorded when each of its two sets has a majority of
   *   replicas that serve and the node it adds is live or dead (`withoutOpen`), not while it is
   *   only silent;
   * - else its first member on a dead node, or else its first failed replica, or else its first
   *   member on a draining node, is replaced, when a majority of its replicas serve
   *   (a shard without one has no leader to change its set, and a sole replica's data is on the
   *   dead node alone), by a live node outside the shard's set and not draining: one in a failure domain none of
   *   the shard's other members is in first, then the one that holds the fewest replicas (the
   *   first by id among equals; counting the ones this plan adds).
   */
  repairPlan(nowMs: number, opts: { afterMs: number; sinceMs: number; max: number; skip?: (volumeId: string, shard: number) => boolean }): RepairMove[] {
    const out: RepairMove[] = [];
    if (opts.max <= 0) return out;
    const draining = new Set(this.state.draining ?? []);
    // Nodes a replica may move to.
    const live = this.liveNotDraining(nowMs);
    const liveIds = new Set(this.liveNodes(nowMs).map((m) => m.nodeId));
    const dead = (nodeId: string): boolean => {
      if (opts.afterMs <= 0 || liveIds.has(nodeId)) return false;
      const since = this.members.get(nodeId)?.lastSeenMs ?? opts.sinceMs;
      return nowMs - since > opts.afterMs;
    };
    // A live node's replica it has reported down for longer than the wait.
    const failed = (nodeId: string, volumeId: string, shard: number): boolean => {
      if (opts.afterMs <= 0 || !liveIds.has(nodeId)) return false;
      const since = this.members.get(nodeId)?.down?.get(shardKey(volumeId, shard));
      return since !== undefined && nowMs - since > opts.afterMs;
    };
    let load: Map<string, number> | undefined;
    for (const v of this.state.volumes) {
      for (const p of v.placements) {
        if (out.length >= opts.max) return out;
        if (opts.skip?.(v.id, p.shard) === true) continue;
        const members = p.replicas.map((r) => r.nodeId);
        if (p.adding !== undefined) {
          const next = members.map((m) => (m === p.removing ? p.adding!.nodeId : m));
          const adds = p.adding.nodeId;
          if ((liveIds.has(adds) || dead(adds)) && this.majorityUp(members, v.id, p.shard, liveIds) && this.majorityUp(next, v.id, p.shard, liveIds)) {
            out.push({ volume: v.name, volumeId: v.id, shard: p.shard, from: p.removing!, to: adds, resumed: true, reason: 'resumed', ...(liveIds.has(adds) ? {} : { withoutOpen: true }) });
          }
          continue;
        }
        // A dead node's replica first, then one its live node reports down, then a draining node's.
        const deadOne = members.find(dead);
        const failedOne = deadOne === undefined ? members.find((n) => failed(n, v.id, p.shard)) : undefined;
        const from = deadOne ?? failedOne ?? members.find((n) => draining.has(n));
        if (from === undefined || !this.majorityUp(members, v.id, p.shard, liveIds)) continue;
        load ??= this.replicasByNode();
        // The failure domains of the replicas that stay.
        const kept = new Set(members.filter((n) => n !== from).map((n) => this.domainOfNode(n)));
        const best = replacementNode(live, (n) => members.includes(n), kept, load);
        if (best === undefined) continue;
        const to = best.nodeId;
        load.set(to, (load.get(to) ?? 0) + 1);
        out.push({ volume: v.name, volumeId: v.id, shard: p.shard, from, to, resumed: false, reason: deadOne !== undefined ? 'dead' : failedOne !== undefined ? 'failed' : 'draining' });
      }
    }
    return out;
  }

  /** An operator asked for the replicas to be spread evenly, and it is not done yet. */
  get rebalancing(): boolean {
    return this.state.rebalance === true;
  }

  /** Asks for a rebalance (`on`) or calls it off / records it done, durably; nothing is written when so already. */
  setRebalance(on: boolean): void {
    if (this.rebalancing === on) return;
    const { rebalance: _, ...rest } = this.state;
    this.commit({ ...rest, ...(on ? { rebalance: true as const } : {}) });
  }

  /**
   * Shard replicas the catalog places on each live node that is not draining (the replica a move
   * under way adds counted), by node id: what a rebalance evens out.
   */
  spread(nowMs: number): Map<string, number> {
    const placed = this.replicasByNode();
    return new Map(this.liveNotDraining(nowMs).map((m) => [m.nodeId, placed.get(m.nodeId) ?? 0]));
  }

  /**
   * One move that evens out the replicas over the live nodes that are not draining
   * (docs/replication.md, "Rebalancing"), or undefined when there is none: the most loaded and
   * the least loaded differ by at most one replica, or no shard of the most loaded node can move
   * to a less loaded one under the rules. From the most loaded node (the first by id among
   * equals) to the least loaded one that holds fewer by two or more, a shard in catalog order
   * that: has no move under way, is not named by `skip`, has a majority of replicas that serve, does not hold a
   * replica there already, and whose other replicas are in no failure domain of that node's
   * (unless the replica moved off was in it too: the spread over domains never gets worse).
   */
  balancePlan(nowMs: number, skip?: (volumeId: string, shard: number) => boolean): RepairMove | undefined {
    const liveIds = new Set(this.liveNodes(nowMs).map((m) => m.nodeId));
    // The first pair with a shard that may move.
    for (const [from, to] of unevenPairs(this.spread(nowMs))) {
      for (const v of this.state.volumes) {
        for (const p of v.placements) {
          if (p.adding !== undefined || skip?.(v.id, p.shard) === true) continue;
          const members = p.replicas.map((r) => r.nodeId);
          if (!members.includes(from) || members.includes(to)) continue;
          if (!this.majorityUp(members, v.id, p.shard, liveIds)) continue;
          const others = new Set(members.filter((n) => n !== from).map((n) => this.domainOfNode(n)));
          if (others.has(this.domainOfNode(to)) && !others.has(this.domainOfNode(from))) continue;
          return { volume: v.name, volumeId: v.id, shard: p.shard, from, to, resumed: false, reason: 'balance' };
        }
      }
    }
    return undefined;
  }

  /**
   * Shards led by each live node that is not draining, as their heartbeats say, by node id: what
   * a rebalance evens out once the replicas are (docs/replication.md, "Rebalancing").
   */
  leaders(nowMs: number): Map<string, number> {
    return new Map(this.liveNotDraining(nowMs).map((m) => [m.nodeId, m.leading ?? 0]));
  }

  /**
   * The next handover of a rebalance of leaders, or undefined when there is none: from the live,
   * not draining node that leads the most shards (the first by id among equals) to the one that
   * leads the fewest, at least two fewer, but the pairs `skip` names (`from>to`: the node leads no
   * shard with a replica on the other).
   */
  leaderBalancePlan(nowMs: number, skip: ReadonlySet<string> = new Set()): { from: string; to: string } | undefined {
    for (const [from, to] of unevenPairs(this.leaders(nowMs))) if (!skip.has(`${from}>${to}`)) return { from, to };
    return undefined;
  }

  /**
   * What a rebalance of leaders found a pair of `leaderBalancePlan` with no shard to hand over
   * from: the leaders' counts (`leaders`) and each shard's set, as one string. A pair so found stays
   * so while it is unchanged; a new leader or a moved replica may give the pair a shard again.
   */
  leaderBalanceBasis(nowMs: number): string {
    const sets = this.state.volumes.map((v) => `${v.id}:${v.placements.map((p) => placedOn(p).map((r) => r.nodeId).join(',')).join('/')}`);
    return `${JSON.stringify([...this.leaders(nowMs)])}|${sets.join(';')}`;
  }

  /** Volume `v` with `placement` replacing its shard's, committed; the new record. */
  private withPlacement(v: VolumeRecord, placement: ShardPlacement): VolumeRecord {
    const next: VolumeRecord = { ...v, placements: v.placements.map((p) => (p.shard === placement.shard ? placement : p)) };
    this.commit({ ...this.state, volumes: this.state.volumes.map((x) => (x.id === v.id ? next : x)) });
    return next;
  }

  /**
   * Adds a volume: picks an id and places its shards round-robin over the (node, host) pairs of
   * live nodes, so consecutive shards land on different nodes first. Durable when it returns.
   */
  create(spec: VolumeSpec, nowMs: number, requestId?: string): VolumeRecord {
    this.checkRoomFor(spec);
    const live = this.liveNotDraining(nowMs);
    const drainingLive = this.liveNodes(nowMs).length - live.length;
    const but = drainingLive > 0 ? ` (not counting ${drainingLive} draining)` : '';
    if (live.length === 0) throw new ProtocolError('unavailable', `no live node to place the volume on${but}`);
    if (spec.replicas > live.length) {
      throw new ProtocolError('unavailable', `replicas=${spec.replicas} needs ${spec.replicas} live nodes, ${live.length} are live${but}`, {
        path: 'replicas',
        liveNodes: live.length,
      });
    }
    // Shard s takes the live nodes in order from a rotating offset, so leaders and load spread
    // over the nodes: first one per failure domain (a node without a zone is a domain of its
    // own), then, with fewer domains than replicas, the next nodes not taken. On each node, the
    // host with the fewest replicas in the catalog (the lowest id among equals). A rotation of
    // hosts alone started every volume of one shard on host 0 of a node, leaving its other
    // hosts idle.
    const load = this.hostLoad();
    const placements: ShardPlacement[] = [];
    for (let s = 0; s < spec.shards; s++) {
      const replicas: ReplicaPlacement[] = [];
      const ring = live.map((_, k) => live[(this.placementCursor + s + k) % live.length]!);
      const domains = new Set<string>();
      const chosen: NodeMember[] = [];
      for (const m of ring) if (chosen.length < spec.replicas && !domains.has(domainOf(m))) (domains.add(domainOf(m)), chosen.push(m));
      for (const m of ring) if (chosen.length < spec.replicas && !chosen.includes(m)) chosen.push(m);
      for (const m of chosen) {
        const h = leastLoadedHost(m, load);
        load.set(`${m.nodeId}/${h}`, (load.get(`${m.nodeId}/${h}`) ?? 0) + 1);
        replicas.push({ nodeId: m.nodeId, hostId: h });
      }
      placements.push({ shard: s, replicas });
    }
    this.placementCursor = (this.placementCursor + spec.shards) % Math.max(1, live.length);
    return this.add(spec, placements, nowMs, undefined, requestId);
  }

  /**
   * The volume called `name` that a create or branch with `requestId` added, if the catalog
   * holds it: that request sent again (its answer was lost), to be answered with it rather than
   * `already_exists`. Undefined without a request id, or when no such volume is there (never made,
   * or its create undone: made anew).
   */
  madeBy(requestId: string | undefined, name: string): VolumeRecord | undefined {
    if (requestId === undefined) return undefined;
    return this.state.volumes.find((v) => v.name === name && v.requestId === requestId);
  }

  /**
   * The volume called `name` if its create or branch was not answered yet (`placing`): its
   * controller may have stopped before every node opened its replicas. Undefined otherwise.
   */
  unplaced(name: string): VolumeRecord | undefined {
    const v = this.state.volumes.find((x) => x.name === name);
    return v?.placing === true ? v : undefined;
  }

  /** The volumes whose create or branch was not answered yet (`unplaced`), in catalog order. */
  unplacedVolumes(): VolumeRecord[] {
    return this.state.volumes.filter((v) => v.placing === true);
  }

  /**
   * Records that every node opened the replicas of volume `id` (`placing` taken off), before its
   * create or branch is answered. `not_found` when the catalog no longer holds it (undone
   * meanwhile). Durable once `settled`.
   */
  placed(id: string): VolumeRecord {
    const v = this.state.volumes.find((x) => x.id === id);
    if (v === undefined) throw new ProtocolError('not_found', `volume ${id} is no longer in the catalog (its create was undone)`, { id });
    if (v.placing !== true) return v;
    const { placing: _placing, ...next } = v;
    this.commit({ ...this.state, volumes: this.state.volumes.map((x) => (x.id === id ? next : x)) });
    return next;
  }

  /** True when the volume `name` a create or branch with `requestId` made was deleted since (`madeThenDeleted`). */
  deletedSince(requestId: string | undefined, name: string): boolean {
    if (requestId === undefined) return false;
    return (this.state.madeThenDeleted ?? []).some((d) => d.requestId === requestId && d.name === name);
  }

  /** True when a delete of volume `name` with `requestId` was made: that request sent again, answered done (`DELETES_REMEMBERED_MAX`). */
  deletedBy(requestId: string | undefined, name: string): boolean {
    if (requestId === undefined) return false;
    return (this.state.deletedBy ?? []).some((d) => d.requestId === requestId && d.name === name);
  }

  /**
   * Refuses a volume of `spec`'s name and size that the catalog cannot take: its name is taken
   * (`already_exists`), or the catalog holds volumesMax volumes or would hold more than
   * replicasMax shard replicas with it (`too_large`).
   */
  private checkRoomFor(spec: Pick<VolumeSpec, 'name' | 'shards' | 'replicas'>): void {
    if (this.state.volumes.some((v) => v.name === spec.name)) {
      throw new ProtocolError('already_exists', `volume '${spec.name}' already exists`, { name: spec.name });
    }
    if (this.state.volumes.length >= this.volumesMax) {
      throw new ProtocolError('too_large', `the cluster holds ${this.volumesMax} volumes, its limit`);
    }
    const placed = this.state.volumes.reduce((n, v) => n + v.shards * v.replicas, 0);
    if (placed + spec.shards * spec.replicas > this.replicasMax) {
      throw new ProtocolError(
        'too_large',
        `the volume needs ${spec.shards * spec.replicas} shard replicas and the cluster holds ${placed} of its limit of ${this.replicasMax}`,
        { replicas: spec.shards * spec.replicas, placed, replicasMax: this.replicasMax },
      );
    }
  }

  /** Adds a volume of `spec` placed as `placements` (and `branch`, if any) under a new id, not placed yet (`placing`), durably; the new record. */
  private add(spec: VolumeSpec, placements: ShardPlacement[], nowMs: number, branch?: BranchPoint, requestId?: string): VolumeRecord {
    const id = `v${this.state.nextId.toString(36)}${this.state.tag === undefined ? '' : `-${this.state.tag}`}`;
    const geometry: VolumeSpec = { name: spec.name, pageCount: spec.pageCount, pageSize: spec.pageSize, shards: spec.shards, stripePages: spec.stripePages, replicas: spec.replicas };
    const rec: VolumeRecord = { ...geometry, id, createdAt: Math.floor(nowMs), placements, ...(branch === undefined ? {} : { branch }), ...(requestId === undefined ? {} : { requestId }), placing: true };
    this.commit({ ...this.state, nextId: this.state.nextId + 1, volumes: [...this.state.volumes, rec] });
    return rec;
  }

  /**
   * Adds a branch of volume `req.parent` (docs/protocol.md, volume.branch): a volume `req.name`
   * of the parent's geometry whose shard `i` starts as the parent's shard `i` was at
   * `req.lsns[i]`, recorded as its `branch`. Durable when it returns; after that the two are
   * independent (deleting either leaves the other).
   *
   * Each shard's replicas go where the parent's are (the same nodes and hosts, so that each host
   * copies the parent's pages locally: `seedOf`): the parent's set, or while a move of one of its
   * replicas is under way, the set the move changes it to. A replica whose node is not live, or
   * is draining, goes instead where a repair would move it (a live node that is not
   * draining and holds none of the shard, in a failure domain the shard's other replicas are
   * not in first, then the node with the fewest replicas; its least loaded host): its peers give
   * it the shard.
   *
   * Refused, changing nothing: `bad_request` for a name that is not one (path `name`) or `lsns`
   * that are not one LSN per shard of the parent (path `lsns`); `not_found` when the parent does
   * not exist (path `parent`); `already_exists` and `too_large` as `create`; `unavailable` when a
   * shard of the parent has fewer replicas on live nodes that are not draining than a majority
   * (the branch would have no majority of replicas with the shard's pages to elect a leader from),
   * or when there are too few such nodes to place every replica.
   */
  branch(req: { name: string; parent: string; lsns: readonly number[]; requestId?: string }, nowMs: number): VolumeRecord {
    const name = expectName(req.name, 'name');
    const parent = this.state.volumes.find((x) => x.name === req.parent);
    if (parent === undefined) throw new ProtocolError('not_found', `parent: volume '${req.parent}' does not exist`, { name: req.parent, path: 'parent' });
    if (!Array.isArray(req.lsns) || req.lsns.length !== parent.shards) throw branchPointCountError(parent.name, parent.shards, Array.isArray(req.lsns) ? req.lsns.length : 0);
    const lsns = req.lsns.map((lsn, i) => expectCounter(lsn, `lsns[${i}]`));
    const spec: VolumeSpec = { name, pageCount: parent.pageCount, pageSize: parent.pageSize, shards: parent.shards, stripePages: parent.stripePages, replicas: parent.replicas };
    this.checkRoomFor(spec);
    const live = this.liveNotDraining(nowMs);
    const liveIds = new Set(live.map((m) => m.nodeId));
    const majority = Math.floor(parent.replicas / 2) + 1;
    const load = this.replicasByNode();
    const hostLoad = this.hostLoad();
    const placements: ShardPlacement[] = [];
    for (const p of parent.placements) {
      // The set the parent's shard has, or is changing to.
      const set = p.adding === undefined ? p.replicas : p.replicas.map((r) => (r.nodeId === p.removing ? p.adding! : r));
      const kept = set.filter((r) => liveIds.has(r.nodeId));
      if (kept.length < majority) {
        throw new ProtocolError('unavailable', `shard ${p.shard} of volume '${parent.name}' has ${kept.length} of its ${set.length} replicas on live nodes that are not draining (${set.map((r) => r.nodeId).join(', ')}), fewer than a majority: the branch would have no majority to start from; retry once they are back, or the shard's replicas have been moved`, {
          shard: p.shard, members: set.map((r) => r.nodeId),
        });
      }
      const replicas: ReplicaPlacement[] = [];
      for (const r of set) {
        if (liveIds.has(r.nodeId)) {
          replicas.push({ nodeId: r.nodeId, hostId: r.hostId });
          continue;
        }
        // As a repair replaces a replica (`replacementNode`): a live node, not draining, outside
        // the shard's set; in a failure domain of none of the shard's other replicas first, then
        // the one that holds the fewest replicas.
        const taken = new Set([...set.map((x) => x.nodeId), ...replicas.map((x) => x.nodeId)]);
        const domains = new Set([...kept, ...replicas].map((x) => this.domainOfNode(x.nodeId)));
        const best = replacementNode(live, (n) => taken.has(n), domains, load);
        if (best === undefined) {
          throw new ProtocolError('unavailable', `the replica of shard ${p.shard} on node '${r.nodeId}' (not live, or draining) has no live node that is not draining and holds none of the shard to go to`, {
            shard: p.shard, node: r.nodeId,
          });
        }
        const h = leastLoadedHost(best, hostLoad);
        hostLoad.set(`${best.nodeId}/${h}`, (hostLoad.get(`${best.nodeId}/${h}`) ?? 0) + 1);
        load.set(best.nodeId, (load.get(best.nodeId) ?? 0) + 1);
        replicas.push({ nodeId: best.nodeId, hostId: h });
      }
      placements.push({ shard: p.shard, replicas });
    }
    return this.add(spec, placements, nowMs, { parent: parent.name, parentId: parent.id, lsns }, req.requestId);
  }

  /**
   * What a recovery would add from the nodes' records of their replicas (`nodes`, one entry an
   * answering node): every volume they hold that this catalog lacks, complete and consistent,
   * and the ones left out with why. Changes nothing (`addRecovered` does).
   *
   * Left out: a volume this catalog issued the id of (its tag is this catalog's: it was deleted
   * or its create undone, and its replicas are leftovers), one it holds a tombstone of, one
   * whose records disagree (geometry, members), one with a shard no answering node holds, one
   * whose name a volume of the catalog (or another found) has, and those past the catalog's
   * bounds. A replica on a node that did not answer (or lost its records) is placed on the host
   * its shard would get there (`shard mod hosts`, host 0 for a node never heard from): that
   * node opens it as a replica that lost its storage, and its peers give it back. A shard whose
   * records show a move under way (the node it adds records the set before as `priorMembers`,
   * the others that set) is added with that move under way, to be run again. A branch volume
   * is added with its branch point when every record of it names the same parent id and one LSN
   * per shard (their `seed`), under the parent's name if the catalog or the nodes know it, else
   * its id; without it otherwise (`branchOfRecords`).
   */
  planRecovery(nodes: readonly { nodeId: string; hosts: number; shards: readonly RecoveryRecord[] }[], nowMs: number): { add: VolumeRecord[]; skipped: Array<{ id: string; name: string; shards: number; replicas: number; reason: string }> } {
    const byVolume = new Map<string, Array<{ nodeId: string; rec: RecoveryRecord }>>();
    for (const n of nodes) {
      for (const rec of n.shards) {
        const list = byVolume.get(rec.volumeId) ?? [];
        list.push({ nodeId: n.nodeId, rec });
        byVolume.set(rec.volumeId, list);
      }
    }
    const known = new Set(this.state.volumes.map((v) => v.id));
    const dead = new Set(this.state.tombstones);
    const hostsOf = new Map<string, number>();
    for (const m of this.members.values()) hostsOf.set(m.nodeId, m.hosts);
    for (const n of nodes) hostsOf.set(n.nodeId, n.hosts);
    const skipped: Array<{ id: string; name: string; shards: number; replicas: number; reason: string }> = [];
    const found: VolumeRecord[] = [];
    for (const [id, held] of [...byVolume].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (known.has(id)) continue;
      const first = held[0]!.rec;
      const skip = (reason: string): void => void skipped.push({ id, name: first.volumeName, shards: first.shards, replicas: first.members.length, reason });
      // An id of this catalog's below its next one: issued, and no longer listed (deleted, or its
      // create undone). One at or past it the catalog has not issued: the catalog is older than
      // the nodes' records (restored from a copy), and the volume is recovered (`addRecovered`
      // moves the next id past it, so that no new volume is given the id of one nodes hold).
      const n = idNumber(id);
      if (idTag(id) === this.state.tag && (n === undefined || n < this.state.nextId)) {
        skip('its id was issued by this catalog, which no longer lists it (deleted, or its create undone): its replicas are leftovers');
        continue;
      }
      if (dead.has(id)) {
        skip('deleted (the catalog holds its tombstone)');
        continue;
      }
      const replicas = first.members.length;
      if (replicas !== 1 && replicas !== 3 && replicas !== 5) {
        skip(`its records name ${replicas} members, not 1, 3 or 5`);
        continue;
      }
      // Not pageCount: a node down while the volume grew records the size before (it takes the
      // new one when it next reconciles); the volume has the largest any record gives.
      const disagree = (['volumeName', 'shards', 'pageSize', 'stripePages', 'createdAt'] as const).find((k) => held.some((h) => h.rec[k] !== first[k]));
      if (disagree !== undefined) {
        skip(`the nodes' records disagree on its ${disagree}`);
        continue;
      }
      const placements: ShardPlacement[] = [];
      let problem: string | undefined;
      for (let shard = 0; shard < first.shards && problem === undefined; shard++) {
        const holders = held.filter((h) => h.rec.shard === shard);
        if (holders.length === 0) {
          problem = `shard ${shard}: no answering node holds a replica of it`;
          break;
        }
        // A move under way when the catalog was lost: the node it adds records both sets (the
        // set before as `priorMembers`), the others the set before. It is recovered under way,
        // and the operator runs it again to finish it.
        const joining = holders.filter((h) => h.rec.priorMembers !== undefined);
        const settled = holders.filter((h) => h.rec.priorMembers === undefined);
        let move: { adding: ReplicaPlacement; removing: string } | undefined;
        if (joining.length > 0) {
          const j = joining[0]!;
          const prior = j.rec.priorMembers!;
          const added = j.rec.members.filter((n) => !prior.includes(n));
          const removing = prior.filter((n) => !j.rec.members.includes(n));
          const agree = joining.length === 1 && added.length === 1 && added[0] === j.nodeId && removing.length === 1 && j.rec.members.length === prior.length && settled.every((h) => h.rec.members.join(',') === prior.join(','));
          if (!agree) {
            problem = `shard ${shard}: the nodes' records disagree on its members (a move of one of its replicas was under way)`;
            break;
          }
          move = { adding: { nodeId: j.nodeId, hostId: j.rec.hostId }, removing: removing[0]! };
        }
        let members = move === undefined ? holders[0]!.rec.members : joining[0]!.rec.priorMembers!;
        // Holders whose records are older than the set in force: a node a move took the replica
        // off while it was down, which has not reconciled since. The set is the one every node
        // it names records, a majority of it answering; their replicas are left out (leftovers).
        let behind = new Set<string>();
        if (move === undefined && settled.some((h) => h.rec.members.join(',') !== members.join(','))) {
          const sets = [...new Set(settled.map((h) => h.rec.members.join(',')))].map((k) => k.split(','));
          const agreed = sets.filter((set) => {
            const named = settled.filter((h) => set.includes(h.nodeId));
            return named.length * 2 > set.length && named.every((h) => h.rec.members.join(',') === set.join(','));
          });
          if (agreed.length === 1) {
            members = agreed[0]!;
            behind = new Set(settled.filter((h) => !members.includes(h.nodeId)).map((h) => h.nodeId));
          }
        }
        const inForce = settled.filter((h) => !behind.has(h.nodeId));
        if (members.length !== first.members.length || inForce.some((h) => h.rec.members.join(',') !== members.join(','))) {
          problem = `shard ${shard}: the nodes' records disagree on its members`;
          break;
        }
        if (inForce.some((h) => !members.includes(h.nodeId))) {
          problem = `shard ${shard}: a node holds a replica of it that is not a member`;
          break;
        }
        placements.push({
          shard,
          replicas: members.map((nodeId) => ({
            nodeId,
            hostId: inForce.find((h) => h.nodeId === nodeId)?.rec.hostId ?? shard % (hostsOf.get(nodeId) ?? 1),
          })),
          ...(move ?? {}),
        });
      }
      if (problem !== undefined) {
        skip(problem);
        continue;
      }
      found.push({
        name: first.volumeName, id, pageCount: Math.max(...held.map((h) => h.rec.pageCount)), pageSize: first.pageSize, shards: first.shards,
        stripePages: first.stripePages, replicas, createdAt: first.createdAt ?? Math.floor(nowMs), placements,
        ...branchOfRecords(held.map((h) => h.rec), first.shards, (parentId) => this.state.volumes.find((v) => v.id === parentId)?.name ?? byVolume.get(parentId)?.[0]?.rec.volumeName),
      });
    }
    const names = new Map<string, number>();
    for (const v of found) names.set(v.name, (names.get(v.name) ?? 0) + 1);
    const add: VolumeRecord[] = [];
    let volumes = this.state.volumes.length;
    let placed = this.state.volumes.reduce((n, v) => n + v.shards * v.replicas, 0);
    for (const v of found) {
      const skip = (reason: string): void => void skipped.push({ id: v.id, name: v.name, shards: v.shards, replicas: v.replicas, reason });
      const taken = this.state.volumes.find((x) => x.name === v.name);
      if (taken !== undefined) skip(`its name is taken by volume ${taken.id} of the catalog`);
      else if (names.get(v.name)! > 1) skip(`the nodes hold ${names.get(v.name)} volumes of this name`);
      else if (volumes >= this.volumesMax) skip(`the catalog holds ${this.volumesMax} volumes, its limit`);
      else if (placed + v.shards * v.replicas > this.replicasMax) skip(`the catalog would hold more than ${this.replicasMax} shard replicas, its limit`);
      else {
        add.push(v);
        volumes++;
        placed += v.shards * v.replicas;
      }
    }
    return { add, skipped };
  }

  /**
   * Adds volumes a recovery found (`planRecovery`) in one durable change; refuses, changing
   * nothing, when one of them now has an id or a name the catalog holds.
   */
  addRecovered(volumes: readonly VolumeRecord[]): void {
    if (volumes.length === 0) return;
    for (const v of volumes) {
      const clash = this.state.volumes.find((x) => x.id === v.id || x.name === v.name);
      if (clash !== undefined) throw new ProtocolError('already_exists', `volume '${v.name}' (${v.id}) clashes with volume '${clash.name}' (${clash.id}) of the catalog`, { name: v.name });
    }
    // Ids of this catalog's it had not issued (a catalog older than the nodes' records): the next
    // id goes past them.
    const own = volumes.filter((v) => idTag(v.id) === this.state.tag).map((v) => idNumber(v.id) ?? 0);
    const nextId = Math.max(this.state.nextId, ...own.map((n) => n + 1));
    this.commit({ ...this.state, nextId, volumes: [...this.state.volumes, ...volumes] });
  }

  /** Replicas placed on each host of the catalog, by `<nodeId>/<hostId>`. */
  private hostLoad(): Map<string, number> {
    const load = new Map<string, number>();
    for (const v of this.state.volumes) {
      for (const p of v.placements) for (const r of placedOn(p)) load.set(`${r.nodeId}/${r.hostId}`, (load.get(`${r.nodeId}/${r.hostId}`) ?? 0) + 1);
    }
    return load;
  }

  /**
   * The volume called `name` as it would be grown to `pageCount` pages, checked and not yet
   * recorded (`resize` records it): `not_found` (no such volume), `bad_request` (fewer pages than
   * it has: a volume never shrinks, the pages past the new end would be lost). The same record
   * when it has that size already.
   */
  checkResize(name: string, pageCount: number): VolumeRecord {
    const v = this.get(name);
    if (pageCount < v.pageCount) {
      throw new ProtocolError('bad_request', `pageCount: volume '${name}' has ${v.pageCount} pages; a volume grows, it does not shrink (the pages past ${pageCount - 1} would be lost)`, {
        path: 'pageCount', pageCount: v.pageCount,
      });
    }
    return v;
  }

  /**
   * The volume called `name` if a resize with `requestId` grew it (RESIZES_REMEMBERED_MAX): that
   * request sent again, answered with the volume as it is (also when it has grown further since).
   * Undefined without a request id, or when no such resize grew a volume of that name. When it
   * grew one that was deleted since: `not_found` (a volume of that name made since is another,
   * which that request must not grow: a volume does not shrink back).
   */
  resizedBy(requestId: string | undefined, name: string): VolumeRecord | undefined {
    if (requestId === undefined) return undefined;
    const v = this.state.volumes.find((x) => x.name === name);
    const grew = (this.state.resizedBy ?? []).filter((r) => r.requestId === requestId);
    if (v !== undefined && grew.some((r) => r.volumeId === v.id)) return v;
    if (grew.some((r) => r.name === name)) {
      throw new ProtocolError('not_found', `volume '${name}' was resized by this request and deleted since${v !== undefined ? ' (the volume of that name now is another)' : ''}: not resized again`, { requestId });
    }
    return undefined;
  }

  /**
   * Records, durably, that the volume called `name` has `pageCount` pages (checked as
   * `checkResize`), and remembers `requestId` with the volume's id (`resizedBy`), if given and the
   * volume grew.
   */
  resize(name: string, pageCount: number, requestId?: string): VolumeRecord {
    const v = this.checkResize(name, pageCount);
    if (v.pageCount === pageCount) return v;
    const next: VolumeRecord = { ...v, pageCount };
    const remembered = requestId === undefined ? {} : { resizedBy: [...(this.state.resizedBy ?? []), { requestId, volumeId: v.id, name }].slice(-RESIZES_REMEMBERED_MAX) };
    this.commit({ ...this.state, volumes: this.state.volumes.map((x) => (x.id === v.id ? next : x)), ...remembered });
    return next;
  }

  /**
   * Removes a volume and leaves a tombstone for its shards, and remembers `requestId` with its name
   * (`deletedBy`), if given, and the request id of the create or branch that made it
   * (`madeThenDeleted`), unless `undo` (a create the controller undoes: answered not made).
   * Durable when it returns.
   */
  delete(name: string, requestId?: string, opts: { undo?: boolean } = {}): VolumeRecord {
    const v = this.get(name);
    const tombstones = [...this.state.tombstones, v.id].slice(-this.tombstonesMax);
    const remembered = requestId === undefined ? {} : { deletedBy: [...(this.state.deletedBy ?? []), { requestId, name }].slice(-DELETES_REMEMBERED_MAX) };
    const made = opts.undo === true || v.requestId === undefined ? {} : { madeThenDeleted: [...(this.state.madeThenDeleted ?? []), { requestId: v.requestId, name }].slice(-DELETES_REMEMBERED_MAX) };
    this.commit({ ...this.state, volumes: this.state.volumes.filter((x) => x.name !== name), tombstones, ...remembered, ...made });
    return v;
  }

  /**
   * Makes `next` the catalog, durably. A write that failed before its rename left the old catalog
   * in place: the change is refused and nothing else happens. One that failed after it (its
   * directory's fsync) left the new one visible but maybe not durable: a restart reads whichever
   * the disk kept, so the change is answered `timeout` (it may or may not be kept), and the
   * catalog takes no change until then, none being made on a state that may not be the disk's.
   *
   * Replicated, the change is made at once in memory and written after the changes before it;
   * whoever acts on it or answers for it waits for `settled` first. A write that fails leaves
   * its outcome unknown (the catalog shard's next leader may commit it or not): the controller
   * then takes no change, and `settled` rejects, for this one and every later one. Its node
   * gives up its seat; the next controller reads the catalog from the shard.
   */
  private commit(next: CatalogState): void {
    if (this.retired !== undefined) {
      throw new ProtocolError('unavailable', `this controller no longer runs (${this.retired}): it takes no change; retry, the next one answers`, { notController: true });
    }
    if (this.fenced !== undefined) {
      throw new ProtocolError('unavailable', this.replicated !== undefined
        ? `a write of the catalog failed (${this.fenced}): this controller takes no change; the next one reads the catalog again`
        : `the catalog's storage failed (${this.fenced}): it takes no change until the controller's node restarts`);
    }
    const s = { ...next, epoch: this.state.epoch + 1 };
    if (this.replicated !== undefined) {
      const { write, bytesMax } = this.replicated;
      // Encoded once: its size checked here, its bytes written.
      const encoded = bytesMax === undefined ? undefined : encode(s, { bytesMax: Number.MAX_SAFE_INTEGER });
      if (encoded !== undefined && encoded.byteLength > bytesMax!) {
        throw new ProtocolError('too_large', `the catalog would take ${encoded.byteLength} bytes with this change, over its limit of ${bytesMax}: the change is not made (delete volumes, or use fewer shards or replicas)`, { bytes: encoded.byteLength, bytesMax });
      }
      this.state = s;
      this.writes = this.writes.then(() => (this.fenced === undefined && this.retired === undefined ? write(s, encoded) : undefined)).catch((e: unknown) => {
        this.fenced ??= e instanceof Error ? e.message : String(e);
      });
      return;
    }
    try {
      this.meta!.write(CATALOG, s);
    } catch (e) {
      let visible: boolean;
      try {
        visible = this.meta!.read<CatalogState>(CATALOG)?.epoch === s.epoch;
      } catch {
        visible = true; // Not even readable: nothing more is known.
      }
      if (!visible) throw e;
      this.fenced = e instanceof Error ? e.message : String(e);
      throw new ProtocolError('timeout', `the catalog change may or may not be durable: ${this.fenced}; the catalog takes no change until the controller's node restarts`);
    }
    this.state = s;
  }

  /**
   * Resolves once every change made so far is durable (at once with a MetaStore, whose changes
   * are durable when made). Replicated, rejects `timeout` once a write failed: the changes since
   * the last that was written may or may not be kept.
   */
  async settled(): Promise<void> {
    await this.writes;
    if (this.retired !== undefined) {
      throw new ProtocolError('timeout', `the catalog change may or may not be kept: this controller no longer runs (${this.retired}), and the changes it had not written are not written`);
    }
    if (this.fenced !== undefined && this.replicated !== undefined) {
      throw new ProtocolError('timeout', `the catalog change may or may not be kept: a write of the catalog failed (${this.fenced}); this node no longer serves as the controller`);
    }
  }

  /**
   * Replicated: this controller takes no change from now on, and writes none of those it made and
   * has not written yet (its node gave up its seat: the next controller, maybe of the same term
   * of the catalog shard, reads the catalog again and writes it; two writers would mix their
   * catalogs in the shard). Resolves once the catalog write under way, if any, has ended.
   */
  retire(why: string): Promise<void> {
    this.retired ??= why;
    return this.writes;
  }

  /** Why the catalog takes no change (a write whose outcome on disk is unknown), or undefined. */
  get storageFailure(): string | undefined {
    return this.fenced;
  }
}

/**
 * The pairs of nodes whose counts differ by two or more, in the order a rebalance tries them:
 * from the highest count down (the first by id among equals), and for each, to the lowest up.
 */
function* unevenPairs(count: ReadonlyMap<string, number>): Generator<[string, string]> {
  const byId = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
  const nodes = [...count.keys()].sort(byId);
  const fromOrder = [...nodes].sort((a, b) => count.get(b)! - count.get(a)! || byId(a, b));
  const toOrder = [...nodes].sort((a, b) => count.get(a)! - count.get(b)! || byId(a, b));
  for (const from of fromOrder) {
    for (const to of toOrder) {
      if (count.get(from)! - count.get(to)! < 2) break;
      yield [from, to];
    }
  }
}

/** The replicas of a shard's placement and the one a move under way adds. */
function placedOn(p: ShardPlacement): ReplicaPlacement[] {
  return p.adding === undefined ? p.replicas : [...p.replicas, p.adding];
}

/** A node's record of a replica it holds, as a recovery reads it. */
export type RecoveryRecord = ShardAssignment;

/**
 * The branch point of a volume as its replicas' records give it (`{}` when they do not): every
 * record has a `seed`, all of the same parent id, those of one shard of the same LSN, and every
 * shard of the volume named. The parent's name is `parentName`'s (the parent's now, which may
 * not be the one it had when the branch was made), else its id.
 */
export function branchOfRecords(records: readonly RecoveryRecord[], shards: number, parentName: (parentId: string) => string | undefined): { branch?: BranchPoint } {
  const parentId = records[0]?.seed?.volumeId;
  if (parentId === undefined) return {};
  const lsns: Array<number | undefined> = new Array<number | undefined>(shards).fill(undefined);
  for (const r of records) {
    if (r.seed === undefined || r.seed.volumeId !== parentId || r.shard >= shards) return {};
    if (lsns[r.shard] !== undefined && lsns[r.shard] !== r.seed.lsn) return {};
    lsns[r.shard] = r.seed.lsn;
  }
  if (lsns.some((l) => l === undefined)) return {};
  // A parent no one knows the name of (deleted since): its id stands for its name. The branch
  // point is kept all the same: without it, the branch's replicas that never got the parent's
  // pages would be free to lead the branch empty (DeviceHost.seedShard, ReplicaOptions.seedLsn).
  return { branch: { parent: parentName(parentId) ?? parentId, parentId, lsns: lsns as number[] } };
}

export { idNumber, idTag };

/** The public view of a volume record (no placement; a branch's branch point). */
export function volumeInfo(v: VolumeRecord): VolumeInfo {
  return {
    name: v.name, id: v.id, pageCount: v.pageCount, pageSize: v.pageSize, shards: v.shards,
    stripePages: v.stripePages, replicas: v.replicas, createdAt: v.createdAt,
    ...(v.branch === undefined ? {} : { branch: { parent: v.branch.parent, parentId: v.branch.parentId, lsns: [...v.branch.lsns] } }),
  };
}

/**
 * The seed of shard `shard` of volume `v` (ShardAssignment.seed): for a branch volume, the
 * parent's id and the LSN of the parent's shard `shard` the branch starts from; undefined for a
 * volume that is not a branch (or a shard it does not have). A node opening a new replica of the
 * shard copies the parent's replica on the same host at that LSN, or, when it cannot, waits for a
 * peer to send it the shard.
 */
export function seedOf(v: Pick<VolumeRecord, 'branch' | 'shards'>, shard: number): { volumeId: string; lsn: number } | undefined {
  const b = v.branch;
  if (b === undefined || !Number.isSafeInteger(shard) || shard < 0 || shard >= v.shards) return undefined;
  const lsn = b.lsns[shard];
  return lsn === undefined ? undefined : { volumeId: b.parentId, lsn };
}

/**
 * The refusal of a branch one of whose shards none of its replicas could copy from the parent
 * (each node's answer to its open: ShardsOpenReply.notCopied), or undefined: `no_space` when
 * each failed for want of room over its device's reserve, else `unavailable`; the message
 * gives each node's reason.
 */
export function branchNotCopied(v: VolumeRecord, notCopied: ReadonlyMap<string, readonly NotCopied[]>): ProtocolError | undefined {
  if (v.branch === undefined) return undefined;
  for (const p of v.placements) {
    if (seedOf(v, p.shard) === undefined || p.replicas.length === 0) continue;
    const why = p.replicas.map((r) => ({ node: r.nodeId, n: notCopied.get(r.nodeId)?.find((x) => x.volumeId === v.id && x.shard === p.shard) }));
    if (why.some((w) => w.n === undefined)) continue;
    const reasons = why.map((w) => `node ${w.node}: ${w.n!.reason}`).join('; ');
    const noSpace = why.every((w) => w.n!.noSpace);
    const what = noSpace
      ? `no device of its replicas of shard ${p.shard} has room for a copy of the parent's pages over its reserve of free space`
      : `no replica of its shard ${p.shard} could copy the parent's pages at the branch point, and none has them to send the others`;
    return new ProtocolError(noSpace ? 'no_space' : 'unavailable', `branch '${v.name}' of '${v.branch.parent}' was not made: ${what} (${reasons})`, { shard: p.shard });
  }
  return undefined;
}
