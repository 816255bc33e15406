/**
 * Controller: the volume catalog and the placement of shards on nodes.
 *
 * The catalog (volumes, their ids, geometry and where each shard lives, and tombstones of
 * deleted volumes) is durable: every change is written with MetaStore's atomic replacement
 * before it is acknowledged. Node membership is soft state rebuilt from heartbeats, bounded:
 * at most `nodesMax` members (a heartbeat from one more node is refused `too_large`), and a
 * member silent for `memberSilenceMsMax` that holds no shard placement is forgotten.
 *
 * This is logic only: it does no messaging and reads no clock. The node hosting it passes the
 * current time in and carries out the effects (telling nodes to open or destroy shards).
 * A controller with a replicated log of its own (like a shard's) replaces the single durable
 * catalog when the controller itself is replicated.
 */
import { MetaStore } from '../storage-engine/metadata';
import { StorageError } from '../storage-engine/errors';
import { ProtocolError } from '../messages/errors';
import type { VolumeInfo, VolumeSpec } from '../messages/api';

export interface ReplicaPlacement {
  nodeId: string;
  hostId: number;
}

/** Where a shard's replicas live: on distinct nodes. */
export interface ShardPlacement {
  shard: number;
  replicas: ReplicaPlacement[];
}

export interface VolumeRecord extends VolumeInfo {
  placements: ShardPlacement[];
}

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
}

export interface NodeMember {
  nodeId: string;
  hosts: number;
  lastSeenMs: number;
}

/** Members (nodes heard from) the controller keeps at most, by default. */
export const NODES_MAX = 1024;
/** A member silent this long that holds no shard placement is forgotten, by default (24 h). */
export const MEMBER_SILENCE_MS_MAX = 24 * 60 * 60 * 1000;
/** Members are checked for forgetting at most this often (by the heartbeats' clock). */
const MEMBER_SWEEP_EVERY_MS = 60 * 1000;

export interface ControllerOptions {
  meta: MetaStore;
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

const CATALOG = 'catalog';

/**
 * Shard replicas the catalog holds at most (every shard of every volume, times its replicas).
 * The catalog is one metadata file, written whole at each change: at this bound it is about
 * 2.5 MB; without it, volumes of many shards and replicas ran it into the metadata size limit
 * (16 MiB) with an error about a "metadata payload", after each change had cost the controller
 * half a second of CPU.
 */
export const CATALOG_REPLICAS_MAX = 65536;

export class Controller {
  private state: CatalogState;
  private readonly meta: MetaStore;
  private readonly members = new Map<string, NodeMember>();
  private readonly liveWindowMs: number;
  private readonly volumesMax: number;
  private readonly replicasMax: number;
  private readonly tombstonesMax: number;
  private readonly nodesMax: number;
  private readonly memberSilenceMsMax: number;
  private memberSweepMs = -Infinity;
  private placementCursor = 0;

  constructor(opts: ControllerOptions) {
    this.meta = opts.meta;
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
    this.state = this.meta.read<CatalogState>(CATALOG) ?? { version: 1, epoch: 0, nextId: 1, ...(tag === undefined ? {} : { tag }), volumes: [], tombstones: [] };
    if (this.state.version !== 1) {
      throw new StorageError('corruption', `catalog has unknown version ${String(this.state.version)}`);
    }
  }

  get epoch(): number {
    return this.state.epoch;
  }

  /**
   * Records a heartbeat (or registration) of a node. A node not yet a member while `nodesMax`
   * are is refused `too_large`. Once a minute (by `nowMs`), members silent for long are
   * forgotten first (see `sweep`): a heartbeat may not cost a walk over every placement.
   */
  heartbeat(nodeId: string, hosts: number, nowMs: number): void {
    if (nowMs - this.memberSweepMs >= MEMBER_SWEEP_EVERY_MS) this.sweep(nowMs);
    if (!this.members.has(nodeId) && this.members.size >= this.nodesMax) {
      throw new ProtocolError('too_large', `the controller knows ${this.nodesMax} nodes, its limit; node '${nodeId}' is not admitted (a member silent ${this.memberSilenceMsMax} ms that holds no shards is forgotten, checked every minute)`, {
        nodeId,
        nodesMax: this.nodesMax,
      });
    }
    this.members.set(nodeId, { nodeId, hosts, lastSeenMs: nowMs });
  }

  /** Forgets members silent longer than memberSilenceMsMax that hold no shard placement. */
  private sweep(nowMs: number): void {
    this.memberSweepMs = nowMs;
    const placed = new Set<string>();
    for (const v of this.state.volumes) for (const p of v.placements) for (const r of p.replicas) placed.add(r.nodeId);
    for (const [id, m] of this.members) {
      if (nowMs - m.lastSeenMs > this.memberSilenceMsMax && !placed.has(id)) this.members.delete(id);
    }
  }

  liveNodes(nowMs: number): NodeMember[] {
    return [...this.members.values()]
      .filter((m) => nowMs - m.lastSeenMs <= this.liveWindowMs)
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  /**
   * The nodes the catalog places replicas on that this controller has not heard from since it
   * started (after a restart of the controller, a node that died before it), sorted.
   */
  placedUnheard(): string[] {
    const placed = new Set<string>();
    for (const v of this.state.volumes) for (const p of v.placements) for (const r of p.replicas) if (!this.members.has(r.nodeId)) placed.add(r.nodeId);
    return [...placed].sort();
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

  /** Shards placed on a node, and ids of deleted volumes whose leftovers it must destroy. */
  assignments(nodeId: string): { epoch: number; shards: Array<{ volume: VolumeRecord; placement: ShardPlacement; hostId: number }>; tombstones: string[] } {
    const shards: Array<{ volume: VolumeRecord; placement: ShardPlacement; hostId: number }> = [];
    for (const v of this.state.volumes) {
      for (const p of v.placements) {
        const mine = p.replicas.find((r) => r.nodeId === nodeId);
        if (mine) shards.push({ volume: v, placement: p, hostId: mine.hostId });
      }
    }
    return { epoch: this.state.epoch, shards, tombstones: [...this.state.tombstones] };
  }

  /**
   * Adds a volume: picks an id and places its shards round-robin over the (node, host) pairs of
   * live nodes, so consecutive shards land on different nodes first. Durable when it returns.
   */
  create(spec: VolumeSpec, nowMs: number): VolumeRecord {
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
    const live = this.liveNodes(nowMs);
    if (live.length === 0) throw new ProtocolError('unavailable', 'no live node to place the volume on');
    if (spec.replicas > live.length) {
      throw new ProtocolError('unavailable', `replicas=${spec.replicas} needs ${spec.replicas} live nodes, ${live.length} are live`, {
        path: 'replicas',
        liveNodes: live.length,
      });
    }
    // Shard s gets `replicas` consecutive nodes starting at a rotating offset, so leaders and
    // load spread over the nodes; on each node, the host with the fewest replicas in the
    // catalog (the lowest id among equals). A rotation of hosts alone started every volume of
    // one shard on host 0 of a node, leaving its other hosts idle.
    const load = this.hostLoad();
    const placements: ShardPlacement[] = [];
    for (let s = 0; s < spec.shards; s++) {
      const replicas: ReplicaPlacement[] = [];
      for (let r = 0; r < spec.replicas; r++) {
        const m = live[(this.placementCursor + s + r) % live.length]!;
        let h = 0;
        for (let i = 1; i < m.hosts; i++) if ((load.get(`${m.nodeId}/${i}`) ?? 0) < (load.get(`${m.nodeId}/${h}`) ?? 0)) h = i;
        load.set(`${m.nodeId}/${h}`, (load.get(`${m.nodeId}/${h}`) ?? 0) + 1);
        replicas.push({ nodeId: m.nodeId, hostId: h });
      }
      placements.push({ shard: s, replicas });
    }
    this.placementCursor = (this.placementCursor + spec.shards) % Math.max(1, live.length);
    const id = `v${this.state.nextId.toString(36)}${this.state.tag === undefined ? '' : `-${this.state.tag}`}`;
    const rec: VolumeRecord = { ...spec, id, createdAt: Math.floor(nowMs), placements };
    this.commit({ ...this.state, nextId: this.state.nextId + 1, volumes: [...this.state.volumes, rec] });
    return rec;
  }

  /** Replicas placed on each host of the catalog, by `<nodeId>/<hostId>`. */
  private hostLoad(): Map<string, number> {
    const load = new Map<string, number>();
    for (const v of this.state.volumes) {
      for (const p of v.placements) for (const r of p.replicas) load.set(`${r.nodeId}/${r.hostId}`, (load.get(`${r.nodeId}/${r.hostId}`) ?? 0) + 1);
    }
    return load;
  }

  /** Removes a volume and leaves a tombstone for its shards. Durable when it returns. */
  delete(name: string): VolumeRecord {
    const v = this.get(name);
    const tombstones = [...this.state.tombstones, v.id].slice(-this.tombstonesMax);
    this.commit({ ...this.state, volumes: this.state.volumes.filter((x) => x.name !== name), tombstones });
    return v;
  }

  private commit(next: CatalogState): void {
    const s = { ...next, epoch: this.state.epoch + 1 };
    this.meta.write(CATALOG, s);
    this.state = s;
  }
}

/** The public view of a volume record (no placement). */
export function volumeInfo(v: VolumeRecord): VolumeInfo {
  return {
    name: v.name, id: v.id, pageCount: v.pageCount, pageSize: v.pageSize, shards: v.shards,
    stripePages: v.stripePages, replicas: v.replicas, createdAt: v.createdAt,
  };
}
