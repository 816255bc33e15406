/**
 * `strata inspect`: what a node's data directory holds, read offline and changed in nothing.
 *
 * Each replica's directory is opened with the storage engine's own code (ShardStorage.open:
 * the log's recovery with every record's checksum, the checkpoint pointer, the images, the
 * term and vote), on an OverlayDisk: whatever that open would write (a torn tail cut, a
 * leftover temporary file removed, an image installation finished) happens in memory only,
 * and is reported as what the node's next open will do. So an operator sees what a node sees,
 * down to a page as of an LSN (GetPage@LSN), without starting it and without a cluster.
 *
 * What it reads: a node's data directory (its `node` record, its devices `dev<n>/shards/*`),
 * a device directory (`shards/*`), or one replica's directory (`log/`, `raft`, images). The
 * node's record gives each replica its volume's name and geometry; a replica's directory given
 * alone takes its page size from its images or page-write records.
 *
 * Bounds: the records listed (`limit`, at most INSPECT_RECORDS_MAX), a page read (one), the
 * page cache of each open (INSPECT_CACHE_BYTES), a file copied into memory when the open would
 * change it (OverlayDisk's bound). The log is read in steps of at most 4 MiB.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { OverlayDisk } from '../storage-engine/overlay-disk';
import { ShardStorage, type ConfigRecord, type HardStateRecord } from '../storage-engine/shard-storage';
import { SegmentLog } from '../storage-engine/log';
import { MetaStore } from '../storage-engine/metadata';
import { Slab } from '../storage-engine/slab';
import { ImageReader, IMAGE_PAGE_COUNT_MAX, imageFileName, parseImageFileName } from '../storage-engine/image';
import { CorruptionError, StorageError, type CorruptionReport } from '../storage-engine/errors';
import { RecordKind, type LogRecord } from '../storage-engine/record';
import { pagesOfPageWrite, readPageWriteHeader } from '../storage-engine/page-write';
import { decodePageZero } from '../storage-engine/page-zero';
import { writeIdOfRecord } from '../storage-engine/log-write-ids';
import { crc32c } from '../storage-engine/crc32c';
import { decodeConfig } from '../actors/replica';
import type { ShardAssignment } from '../messages/control';
import { CATALOG_VOLUME_ID, CATALOG_VOLUME_NAME, CATALOG_PAGE_SIZE, CATALOG_PAGE_COUNT, decodeCatalog, decodeHeader, regionStart } from './catalog-shard';
import { CATALOG, type CatalogState } from '../actors/controller';
import { GET_PAGES_MAX } from '../storage-engine/page-store';
import { textTable } from './text-table';
import { lockOf } from './data-dir-lock';
import { LOCAL_CATALOG_DIR, NODE_META, deviceOfDirName, localCatalogStore, nodeMetaStore, type NodeMeta } from './data-dir-layout';
import { parseShardKey, shardKey } from '../messages/volume-id';
import { isDiscardedName } from '../storage-engine/disk';
import { HARD_STATE_JOURNAL, HardStateJournal, type HardStateLookup } from '../storage-engine/hard-state-journal';

/** Most records one `inspect --records` lists. */
export const INSPECT_RECORDS_MAX = 100_000;
/** Records listed when no `--limit` is given. */
export const INSPECT_RECORDS_DEFAULT = 1000;
/** Page cache of each replica opened (the pages written since its newest image are indexed, not kept). */
const INSPECT_CACHE_BYTES = 4 * 1024 * 1024;
/** Bytes of the log read at a time. */
const READ_STEP_BYTES = 4 * 1024 * 1024;
/** Most replica directories one inspection opens (a node holds at most a few thousand). */
export const INSPECT_REPLICAS_MAX = 65_536;

/** A replica as its directory holds it. */
export interface ReplicaReport {
  /** The replica's directory (the path given, joined). */
  dir: string;
  volumeId: string;
  shard: number;
  /** From the node's record (or `strata-catalog` for the catalog shard), when known. */
  volumeName?: string;
  /** The device directory (`dev0`…), when read from a node's data directory. */
  device?: string;
  pageSize?: number;
  /** The volume's pages as the node's record has them (undefined without one). */
  pageCount?: number;
  /** Term and vote (`raft`); undefined when none was ever saved (a replica that never took a term). */
  term?: number;
  votedFor?: string | null;
  /** The replica must get records it lost back from its peers before it votes again (`repairTerm`). */
  repairing?: boolean;
  /** Its storage was found lost (wiped, replaced) by an open that expected it (`lost`). */
  lost?: boolean;
  /** The replica set in force at the end of its log, and the set it changes from during a move. */
  members?: string[];
  prior?: string[];
  log?: { firstLsn: number; lastLsn: number; lastTerm: number; segments: number; bytes: number };
  images: Array<{ file: string; lsn: number; term?: number; pagesStored?: number; bytes: number; damage?: string }>;
  /** LSN of the image a read starts from, and the oldest LSN readable (as of that image). */
  imageLsn?: number;
  oldestReadableLsn?: number;
  /** Bytes of every file under the directory. */
  bytes: number;
  /** Damage found: the open's reports, and with `verify` every image page's checksum. */
  damage: CorruptionReport[];
  /**
   * What the node's next open of this directory will change, relative to it (a torn tail cut…);
   * but for damaged images and checkpoint pointer (in `damage`): the open writes the newest image
   * or the pointer again and removes the other damaged images, which a look does not do in memory.
   */
  nextOpen: string[];
  /** Of `nextOpen`, the log segments the open makes shorter: a torn tail cut. */
  tailCut?: string[];
  /** The open failed on something other than damage: its message. */
  error?: string;
  /** `ok`, `damaged`, `lost`, `repairing`, `unreadable`. */
  state: 'ok' | 'damaged' | 'lost' | 'repairing' | 'unreadable';
}

/** The record listing of `inspect --records`. */
export interface RecordLine {
  lsn: number;
  term: number;
  kind: 'page-write' | 'page-zero' | 'noop' | 'config' | string;
  bytes: number;
  /** A page write's pages, in order. */
  pages?: number[];
  /** A page-zero record's range of volume pages (the shard's own pages in it were made zeros). */
  zeros?: { first: number; count: number };
  /**
   * The write id the client gave the write (hex), which its tries shared: two records with the
   * same id are one write written twice (docs/protocol.md, "A write sent again: write ids").
   */
  writeId?: string;
  members?: string[];
  prior?: string[];
}

/** A page read offline: its bytes as of `lsn`, and where they come from. */
export interface PageRead {
  page: number;
  lsn: number;
  /** The record that last wrote it at or before `lsn`; `image` when it comes from the image the reads start at; `zeros` if never written. */
  source: { kind: 'record'; lsn: number; term: number } | { kind: 'image'; lsn: number } | { kind: 'zeros' };
  crc32c: number;
  data: Uint8Array;
}

export interface InspectReport {
  /** What the path is. */
  kind: 'node' | 'device' | 'replica';
  path: string;
  /**
   * The node's record (`node`), for a node's data directory; `catalog` once a change of the
   * controller nodes added the node or took it out (NodeMeta.catalog).
   */
  node?: { nodeId: string; cluster: string; hosts: number; catalog?: { member: boolean; members: string[] } };
  /** A lock file shows a node process using the directory: what is read may be changing. */
  inUse?: { nodeId?: string; pid?: number; running?: boolean };
  replicas: ReplicaReport[];
  records?: RecordLine[];
  /** The listing stopped at the limit: the LSN of the next record. */
  recordsNext?: number;
  page?: PageRead;
  /** The volume catalog, with `catalog`: from the catalog shard's replica as of `lsn`, or from the file of a controller node that keeps it alone. */
  catalog?: { source: 'catalog shard' | 'controller file'; lsn?: number; state: CatalogState | null };
}

export interface InspectOptions {
  /** Only this replica: `VOLUME/SHARD`, VOLUME a volume id or name. Required for `records` and `page` in a directory of several. */
  shard?: string;
  /** Read every page of every image and check it against its checksum. */
  verify?: boolean;
  records?: { fromLsn?: number; toLsn?: number; limit?: number };
  page?: { page: number; lsn?: number };
  /** The volume catalog this node holds (as of `lsn` in the catalog shard; default its log's end). */
  catalog?: { lsn?: number };
}

/** An error of the inspection's input (a path that is not a Strata directory, a replica not there). */
export class InspectError extends Error {
  override readonly name = 'InspectError';
  constructor(
    readonly code: 'not_found' | 'bad_request' | 'out_of_range' | 'trimmed' | 'future_lsn',
    message: string,
  ) {
    super(message);
  }
}

/** A replica directory found, with what the node's record says of it. */
interface Found {
  /** Real path of the directory holding the replica's directory, and its name there. */
  parent: string;
  name: string;
  volumeId: string;
  shard: number;
  device?: string;
  assignment?: Pick<ShardAssignment, 'volumeName' | 'pageSize' | 'pageCount'> & { members?: string[]; shards?: number; stripePages?: number };
}


/** Inspects `root`. Never writes under it. Throws InspectError for input that is not what it should be. */
export function inspect(root: string, opts: InspectOptions = {}): InspectReport {
  const abs = path.resolve(root);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch (e) {
    throw new InspectError('not_found', `${root}: ${(e as NodeJS.ErrnoException).code ?? 'cannot be read'}`);
  }
  if (!st.isDirectory()) throw new InspectError('bad_request', `${root} is not a directory`);
  const report = findReplicas(abs, root);
  let chosen = report.found;
  if (opts.catalog !== undefined) {
    if (opts.shard !== undefined || opts.records !== undefined || opts.page !== undefined) throw new InspectError('bad_request', '--catalog reads the catalog shard: --shard, --records and --page go without it');
    const local = report.kind === 'node' ? localCatalog(abs, opts.catalog.lsn) : undefined;
    if (local !== undefined) {
      const out: InspectReport = { kind: report.kind, path: root, replicas: [], catalog: local };
      if (report.node !== undefined) out.node = report.node;
      return out;
    }
    chosen = report.found.filter((f) => f.volumeId === CATALOG_VOLUME_ID);
    if (chosen.length === 0) throw new InspectError('not_found', `${root} holds no catalog: no replica of the catalog shard (${CATALOG_VOLUME_ID}/0), no controller/ of a controller node that keeps it alone`);
  }
  if (opts.shard !== undefined) chosen = [pick(report.found, opts.shard, root)];
  if ((opts.records !== undefined || opts.page !== undefined) && chosen.length !== 1) {
    throw new InspectError('bad_request', `${root} holds ${chosen.length} replicas: name one with --shard VOLUME/SHARD (${chosen.slice(0, 3).map((f) => `${f.volumeId}/${f.shard}`).join(', ')}${chosen.length > 3 ? ', …' : ''})`);
  }
  const out: InspectReport = { kind: report.kind, path: root, replicas: [] };
  if (report.node !== undefined) out.node = report.node;
  const lock = report.kind === 'node' ? lockOf(abs) : undefined;
  if (lock !== undefined) {
    out.inUse = {
      ...(lock.holder !== undefined ? { nodeId: lock.holder.nodeId, pid: lock.holder.pid } : {}),
      ...(lock.runs !== undefined ? { running: lock.runs } : {}),
    };
  }
  for (const f of chosen) {
    const detail = chosen.length === 1 && (opts.records !== undefined || opts.page !== undefined || opts.catalog !== undefined);
    out.replicas.push(inspectReplica(f, opts, detail ? out : undefined));
  }
  return out;
}

/** The replica `spec` names (`VOLUME/SHARD` or `VOLUME.SHARD`, VOLUME an id or a name). */
function pick(found: readonly Found[], spec: string, root: string): Found {
  const m = /^(.+)[/.]([0-9]+)$/.exec(spec);
  if (m === null) throw new InspectError('bad_request', `--shard: expected VOLUME/SHARD, got ${JSON.stringify(spec)}`);
  const volume = m[1]!;
  const shard = Number(m[2]);
  const hit = found.filter((f) => f.shard === shard && (f.volumeId === volume || f.assignment?.volumeName === volume));
  if (hit.length === 1) return hit[0]!;
  if (hit.length > 1) throw new InspectError('bad_request', `--shard ${spec}: ${hit.length} replicas match (on ${hit.map((f) => f.device ?? f.parent).join(', ')}); name the device's directory`);
  throw new InspectError('not_found', `${root} holds no replica of shard ${shard} of volume ${volume}`);
}

/** The replica directories under `abs`, by what `abs` is. */
function findReplicas(abs: string, shown: string): { kind: InspectReport['kind']; node?: InspectReport['node']; found: Found[] } {
  const names = fs.readdirSync(abs);
  if (names.includes('log') || names.includes('raft')) {
    // A replica's own directory; inside a node's data directory (<node>/dev<n>/shards/<name>),
    // the node's record gives it its volume's name and geometry.
    const device = path.dirname(path.dirname(abs));
    const nodeDir = path.dirname(device);
    if (path.basename(path.dirname(abs)) === 'shards' && deviceOfDirName(path.basename(device)) !== undefined && fs.existsSync(path.join(nodeDir, NODE_META))) {
      const mine = findReplicas(nodeDir, nodeDir).found.find((f) => f.parent === path.dirname(abs) && f.name === path.basename(abs));
      if (mine !== undefined) return { kind: 'replica', found: [mine] };
    }
    const key = parseShardKey(path.basename(abs));
    return {
      kind: 'replica',
      found: [{ parent: path.dirname(abs), name: path.basename(abs), volumeId: key?.volumeId ?? path.basename(abs), shard: key?.shard ?? 0 }],
    };
  }
  if (names.includes('shards') && !names.includes(NODE_META)) {
    return { kind: 'device', found: replicasIn(path.join(abs, 'shards'), undefined, new Map()) };
  }
  if (names.includes(NODE_META)) {
    const rec = readNodeMeta(abs);
    const byKey = new Map<string, ShardAssignment>();
    for (const a of rec.shards) byKey.set(shardKey(a.volumeId, a.shard), a);
    const found: Found[] = [];
    for (const dev of names.filter((n) => deviceOfDirName(n) !== undefined).sort((a, b) => deviceOfDirName(a)! - deviceOfDirName(b)!)) {
      found.push(...replicasIn(path.join(abs, dev, 'shards'), dev, byKey));
    }
    const catalog = rec.catalog !== undefined && typeof rec.catalog === 'object' ? { catalog: { member: rec.catalog.member === true, members: Array.isArray(rec.catalog.members) ? rec.catalog.members.map(String) : [] } } : {};
    return { kind: 'node', node: { nodeId: rec.nodeId, cluster: rec.cluster, hosts: rec.hosts, ...catalog }, found };
  }
  throw new InspectError('bad_request', `${shown} is not a Strata data directory: no node record (node), no shards/ and no replica (log/, raft)`);
}

function replicasIn(dir: string, device: string | undefined, byKey: ReadonlyMap<string, ShardAssignment>): Found[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const found: Found[] = [];
  for (const name of names.sort()) {
    // A replica being removed (`….discard`), or not a replica's name.
    const key = isDiscardedName(name) ? undefined : parseShardKey(name);
    if (key === undefined) continue;
    if (found.length >= INSPECT_REPLICAS_MAX) throw new InspectError('bad_request', `${dir} holds more than ${INSPECT_REPLICAS_MAX} replicas`);
    const { volumeId, shard } = key;
    const a = byKey.get(name);
    const f: Found = { parent: dir, name, volumeId, shard, ...(device !== undefined ? { device } : {}) };
    if (a !== undefined) f.assignment = { volumeName: a.volumeName, pageSize: a.pageSize, pageCount: a.pageCount, members: [...a.members], shards: a.shards, stripePages: a.stripePages };
    else if (volumeId === CATALOG_VOLUME_ID) f.assignment = { volumeName: CATALOG_VOLUME_NAME, pageSize: CATALOG_PAGE_SIZE, pageCount: CATALOG_PAGE_COUNT };
    found.push(f);
  }
  return found;
}

function readNodeMeta(abs: string): NodeMeta {
  const disk = new OverlayDisk(abs);
  try {
    const rec = nodeMetaStore(disk).read<NodeMeta>(NODE_META);
    if (rec === undefined || typeof rec !== 'object' || !Array.isArray(rec.shards)) throw new InspectError('bad_request', `${abs}/node is not a node's record`);
    return rec;
  } catch (e) {
    if (e instanceof CorruptionError) throw new InspectError('bad_request', `${abs}/node: ${e.message}`);
    throw e;
  } finally {
    disk.closeAll();
  }
}

/** Bytes of the files under `dir`. */
function treeBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += treeBytes(p);
    else if (e.isFile()) total += fs.statSync(p).size;
  }
  return total;
}

/** The page size of a replica without a node's record: its images', else its first page write's. */
function guessPageSize(disk: OverlayDisk, name: string, log: SegmentLog | undefined): 4096 | 8192 | undefined {
  for (const file of disk.list(name)) {
    if (parseImageFileName(file) === undefined) continue;
    try {
      const r = ImageReader.open(disk, `${name}/${file}`);
      const size = r.pageSize;
      r.close();
      return size;
    } catch {
      // A damaged image says nothing; the log may.
    }
  }
  if (log === undefined || log.lastLsn < log.firstLsn) return undefined;
  for (let lsn = log.firstLsn; lsn <= log.lastLsn; ) {
    const records = log.read(lsn, log.lastLsn, { bytesMax: READ_STEP_BYTES });
    for (const r of records) {
      if (r.kind === RecordKind.PageWrite) return readPageWriteHeader(r.payload).pageSize;
    }
    lsn = records[records.length - 1]!.lsn + 1;
  }
  return undefined;
}

/**
 * Opens the replica `f` (over an OverlayDisk), reports on it, and, when it opens, hands its
 * storage to `visit` (with every record applied: any LSN the log holds can be read) before
 * closing it, with the report: damage `visit` finds goes into it.
 */
function inspectReplica(
  f: Found,
  opts: InspectOptions,
  detail: InspectReport | undefined,
  visit?: (storage: ShardStorage, disk: OverlayDisk, name: string, rep: ReplicaReport) => void,
): ReplicaReport {
  const dir = path.join(f.parent, f.name);
  const rep: ReplicaReport = {
    dir,
    volumeId: f.volumeId,
    shard: f.shard,
    images: [],
    bytes: 0,
    damage: [],
    nextOpen: [],
    state: 'ok',
  };
  if (f.device !== undefined) rep.device = f.device;
  // An entry named as a replica that is not a directory (a file, a link to nothing) is shown as
  // unreadable: the other replicas are still reported.
  try {
    if (!fs.statSync(dir).isDirectory()) rep.error = 'not a directory';
    else rep.bytes = treeBytes(dir);
  } catch (e) {
    rep.error = `can not be read: ${e instanceof Error ? e.message : String(e)}`;
  }
  if (rep.error !== undefined) {
    if (detail !== undefined) throw new InspectError('bad_request', `${dir} ${rep.error}`);
    rep.state = 'unreadable';
    return rep;
  }
  if (f.assignment !== undefined) {
    rep.volumeName = f.assignment.volumeName;
    rep.pageSize = f.assignment.pageSize;
    rep.pageCount = f.assignment.pageCount;
    // The set the node was given; a set changed since (a move) is in the replica's `config`, read below.
    if (f.assignment.members !== undefined) rep.members = f.assignment.members;
  }
  const disk = new OverlayDisk(f.parent);
  const name = f.name;
  let storage: ShardStorage | undefined;
  try {
    readMeta(disk, name, rep, f.parent);
    let pageSize = f.assignment?.pageSize;
    if (pageSize === undefined) {
      let log: SegmentLog | undefined;
      try {
        log = SegmentLog.open(disk, { dir: `${name}/log` });
        pageSize = guessPageSize(disk, name, log);
      } catch {
        // A log that does not open, or reads short: the open below reports why.
      } finally {
        log?.close();
      }
      if (pageSize !== undefined) rep.pageSize = pageSize;
    }
    const slab = new Slab({ slotBytes: 8192, slotCount: INSPECT_CACHE_BYTES / 8192 });
    try {
      storage = ShardStorage.open(disk, {
        dir: name,
        pageSize: pageSize ?? 4096,
        // Not a bound here: a record past the node's page count is shown, not refused.
        pageCount: IMAGE_PAGE_COUNT_MAX,
        cacheBytesMax: INSPECT_CACHE_BYTES,
        slab,
        repairFromPeers: false,
        // Damaged images are listed, not written again in memory.
        healImages: false,
      });
    } catch (e) {
      if (e instanceof CorruptionError) rep.damage.push(...e.reports);
      else rep.error = e instanceof Error ? e.message : String(e);
      summarizeLogAlone(disk, name, rep);
    }
    if (storage !== undefined) {
      const log = storage.log;
      rep.damage.push(...log.corruption, ...storage.repaired);
      rep.log = { ...logFiles(path.join(dir, 'log')), firstLsn: log.firstLsn, lastLsn: log.lastLsn, lastTerm: log.lastTerm };
      applyToEnd(storage, rep);
      const s = storage.store.stats();
      rep.imageLsn = s.imageLsn;
      rep.oldestReadableLsn = s.oldestReadableLsn;
      rep.damage.push(...storage.store.damagedImages.filter((d) => !rep.damage.some((x) => x.file === d.file && x.reason === d.reason)));
    }
    listImages(disk, name, dir, rep, opts.verify === true);
    if (visit !== undefined && storage !== undefined) visit(storage, disk, name, rep);
    if (detail !== undefined && storage !== undefined) {
      if (opts.records !== undefined) listRecords(storage, opts.records, detail);
      if (opts.page !== undefined) {
        checkPageOf(f, opts.page.page);
        detail.page = readPage(disk, name, storage, opts.page.page, opts.page.lsn);
      }
      if (opts.catalog !== undefined) detail.catalog = readCatalog(storage, opts.catalog.lsn);
    } else if (detail !== undefined) {
      throw new InspectError('bad_request', `${dir} does not open (${rep.error ?? rep.damage.map((d) => d.reason).join('; ')}): its records and pages cannot be read`);
    }
    rep.nextOpen = disk.changedPaths().map((p) => (p.startsWith(`${name}/`) ? p.slice(name.length + 1) : p));
    const cut = rep.nextOpen.filter((p) => /^log\/seg-[0-9a-f]{16}\.log$/.test(p) && shortened(disk, `${name}/${p}`, path.join(dir, p)));
    if (cut.length > 0) rep.tailCut = cut;
  } finally {
    storage?.close();
    disk.closeAll();
  }
  rep.state = rep.damage.length > 0 ? 'damaged' : rep.error !== undefined ? 'unreadable' : rep.lost === true ? 'lost' : rep.repairing === true ? 'repairing' : 'ok';
  return rep;
}

/** The journals of devices read (by path, size and time of change): a node's replicas share one. */
const journalsRead = new Map<string, HardStateJournal>();
const JOURNALS_READ_MAX = 16;

/**
 * The hard-state journal of the device whose `shards` directory is `parent` (real path), read
 * only; undefined for a replica directory outside a device. Damage of the journal is reported
 * by the lookup of a replica whose term and vote it took.
 */
function deviceJournal(parent: string): HardStateJournal | undefined {
  if (path.basename(parent) !== 'shards') return undefined;
  const device = path.dirname(parent);
  let st: fs.Stats;
  try {
    st = fs.statSync(path.join(device, HARD_STATE_JOURNAL));
  } catch {
    return undefined;
  }
  const key = `${device}:${st.size}:${st.mtimeMs}`;
  let j = journalsRead.get(key);
  if (j === undefined) {
    const disk = new OverlayDisk(device);
    j = HardStateJournal.open(disk, {
      readOnly: true,
      dirs: () => disk.list('shards').filter((n) => !isDiscardedName(n)).map((n) => `shards/${n}`),
    });
    if (journalsRead.size >= JOURNALS_READ_MAX) journalsRead.clear();
    journalsRead.set(key, j);
  }
  return j;
}

/** Term and vote (the device's hard-state journal, else the replica's own file), and the replica set, from the replica's metadata files. */
function readMeta(disk: OverlayDisk, name: string, rep: ReplicaReport, parent: string): void {
  const meta = new MetaStore(disk, name);
  try {
    let found: HardStateLookup | undefined;
    try {
      found = deviceJournal(parent)?.lookup(`shards/${name}`);
    } catch (e) {
      // Named by its real path: the journal is the device's, not in the replica's directory.
      if (e instanceof CorruptionError) throw new CorruptionError(e.message, e.reports.map((r) => ({ ...r, file: path.join(path.dirname(parent), r.file) })));
      throw e;
    }
    const hs = found?.kind === 'saved' ? (found.value as HardStateRecord) : found?.kind === 'forgotten' ? undefined : meta.read<HardStateRecord>('raft');
    if (hs !== undefined) {
      rep.term = hs.term;
      rep.votedFor = hs.votedFor;
      if (hs.repairTerm !== undefined) rep.repairing = true;
      if (hs.lost === true) rep.lost = true;
    }
  } catch (e) {
    if (!(e instanceof CorruptionError)) throw e;
    rep.damage.push(...e.reports);
  }
  try {
    const c = meta.read<ConfigRecord>('config');
    if (c !== undefined) {
      const last = c.changes.length > 0 ? c.changes[c.changes.length - 1]!.config : c.base;
      rep.members = [...last.members];
      if (last.prior !== undefined) rep.prior = [...last.prior];
    }
  } catch (e) {
    if (!(e instanceof CorruptionError)) throw e;
    rep.damage.push(...e.reports);
  }
}

/** Segment files of the log directory `dir` (real path), and their bytes. */
function logFiles(dir: string): { segments: number; bytes: number } {
  let segments = 0;
  let bytes = 0;
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir);
  } catch {
    // No log directory: a replica that never opened.
  }
  for (const file of names) {
    if (!/^seg-[0-9a-f]{16}\.log$/.test(file)) continue;
    segments++;
    bytes += fs.statSync(path.join(dir, file)).size;
  }
  return { segments, bytes };
}

/** The log's summary when the replica as a whole does not open. */
function summarizeLogAlone(disk: OverlayDisk, name: string, rep: ReplicaReport): void {
  const dir = path.join(rep.dir, 'log');
  let log: SegmentLog | undefined;
  try {
    log = SegmentLog.open(disk, { dir: `${name}/log` });
    rep.log = { ...logFiles(dir), firstLsn: log.firstLsn, lastLsn: log.lastLsn, lastTerm: log.lastTerm };
    for (const c of log.corruption) if (!rep.damage.some((d) => d.file === c.file && d.offset === c.offset)) rep.damage.push(c);
  } catch (e) {
    rep.error ??= e instanceof Error ? e.message : String(e);
  } finally {
    log?.close();
  }
}

/**
 * Applies the records after the newest image (the open stops there: a node applies the rest once
 * its leader says they are committed), so that every LSN the log holds can be read.
 */
function applyToEnd(storage: ShardStorage, rep: ReplicaReport): void {
  const { log, store } = storage;
  try {
    while (store.appliedLsn < log.lastLsn) {
      for (const r of log.read(store.appliedLsn + 1, log.lastLsn, { bytesMax: READ_STEP_BYTES })) store.apply(r);
    }
  } catch (e) {
    // A record that does not read back, or does not apply: what is before it can still be read.
    if (e instanceof CorruptionError) rep.damage.push(...e.reports);
    else if (e instanceof StorageError) rep.damage.push({ file: path.join(rep.dir, 'log'), offset: 0, fromLsn: store.appliedLsn + 1, toLsn: store.appliedLsn + 1, reason: `LSN ${store.appliedLsn + 1} does not apply: ${e.message}` });
    else throw e;
  }
}

function listImages(disk: OverlayDisk, name: string, dir: string, rep: ReplicaReport, verify: boolean): void {
  for (const file of disk.list(name)) {
    const lsn = parseImageFileName(file);
    if (lsn === undefined) continue;
    const real = path.join(dir, file);
    let bytes = 0;
    try {
      bytes = fs.statSync(real).size;
    } catch {
      continue; // Not on the real disk: made by the open in memory (an installation finished).
    }
    const entry: ReplicaReport['images'][number] = { file, lsn, bytes };
    let reader: ImageReader | undefined;
    try {
      reader = ImageReader.open(disk, `${name}/${file}`);
      entry.term = reader.term;
      entry.pagesStored = reader.entries;
      if (verify) reader.verifyPages();
    } catch (e) {
      if (!(e instanceof CorruptionError)) throw e;
      entry.damage = e.reports.map((r) => r.reason).join('; ');
      for (const r of e.reports) if (!rep.damage.some((d) => d.file.endsWith(`${name}/${file}`) && d.reason === r.reason)) rep.damage.push(r);
    } finally {
      reader?.close();
    }
    rep.images.push(entry);
  }
  rep.images.sort((a, b) => a.lsn - b.lsn);
}

function inRange(range: { first: number; count: number }, page: number): boolean {
  return page >= range.first && page < range.first + range.count;
}

function recordLine(r: LogRecord): RecordLine {
  const line: RecordLine = { lsn: r.lsn, term: r.term, kind: String(r.kind), bytes: r.payload.length };
  if (r.kind === RecordKind.PageWrite) {
    line.kind = 'page-write';
    line.pages = pagesOfPageWrite(r.payload);
  } else if (r.kind === RecordKind.PageZero) {
    line.kind = 'page-zero';
    try {
      line.zeros = decodePageZero(r.payload);
    } catch {
      line.kind = 'page-zero (unreadable)';
    }
  } else if (r.kind === RecordKind.Noop) {
    line.kind = 'noop';
  } else if (r.kind === RecordKind.Config) {
    line.kind = 'config';
    try {
      const c = decodeConfig(r.payload);
      line.members = [...c.members];
      if (c.prior !== undefined) line.prior = [...c.prior];
    } catch {
      line.kind = 'config (unreadable)';
    }
  }
  const id = line.pages !== undefined || line.zeros !== undefined ? writeIdOfRecord(r.kind, r.payload) : undefined;
  if (id !== undefined) line.writeId = Buffer.from(id).toString('hex');
  return line;
}

function listRecords(storage: ShardStorage, want: NonNullable<InspectOptions['records']>, out: InspectReport): void {
  const log = storage.log;
  const limit = want.limit ?? INSPECT_RECORDS_DEFAULT;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > INSPECT_RECORDS_MAX) throw new InspectError('bad_request', `--limit: ${limit} is out of range (1..${INSPECT_RECORDS_MAX})`);
  const from = want.fromLsn ?? log.firstLsn;
  const to = want.toLsn ?? log.lastLsn;
  if (from > to && want.fromLsn !== undefined && want.toLsn !== undefined) throw new InspectError('bad_request', `--from ${from} is above --to ${to}`);
  if (want.fromLsn !== undefined && from < log.firstLsn) throw new InspectError('trimmed', `--from ${from}: the log starts at LSN ${log.firstLsn} (the records before are in the images)`);
  if (want.toLsn !== undefined && to > log.lastLsn) throw new InspectError('out_of_range', `--to ${to}: the log ends at LSN ${log.lastLsn}`);
  if (want.fromLsn !== undefined && from > log.lastLsn) throw new InspectError('out_of_range', `--from ${from}: the log ends at LSN ${log.lastLsn}`);
  const lines: RecordLine[] = [];
  let lsn = from;
  while (lsn <= to && lines.length < limit) {
    const records = log.read(lsn, Math.min(to, lsn + (limit - lines.length) - 1), { bytesMax: READ_STEP_BYTES });
    for (const r of records) lines.push(recordLine(r));
    lsn = records[records.length - 1]!.lsn + 1;
  }
  out.records = lines;
  if (lsn <= to) out.recordsNext = lsn;
}

function readPage(disk: OverlayDisk, name: string, storage: ShardStorage, page: number, lsn: number | undefined): PageRead {
  const { store, log } = storage;
  const at = lsn ?? store.appliedLsn;
  if (at > store.appliedLsn) throw new InspectError('future_lsn', `--lsn ${at}: the log ends at LSN ${store.appliedLsn}`);
  if (at < store.oldestReadableLsn) throw new InspectError('trimmed', `--lsn ${at}: the oldest LSN readable is ${store.oldestReadableLsn} (its image); the history before it is trimmed`);
  let data: Uint8Array;
  try {
    data = store.getPage(page, at);
  } catch (e) {
    if (e instanceof StorageError && e.code === 'out_of_range') throw new InspectError('out_of_range', `--page ${page}: ${e.message}`);
    throw e;
  }
  let source: PageRead['source'] = { kind: 'zeros' };
  // The last record at or before `at` that wrote the page, among those after the image reads start at.
  for (let from = Math.max(store.oldestReadableLsn + 1, log.firstLsn); from <= at; ) {
    const records = log.read(from, at, { bytesMax: READ_STEP_BYTES });
    for (const r of records) {
      if (r.kind === RecordKind.PageWrite && pagesOfPageWrite(r.payload).includes(page)) source = { kind: 'record', lsn: r.lsn, term: r.term };
      if (r.kind === RecordKind.PageZero && inRange(decodePageZero(r.payload), page)) source = { kind: 'record', lsn: r.lsn, term: r.term };
    }
    from = records[records.length - 1]!.lsn + 1;
  }
  if (source.kind === 'zeros' && store.oldestReadableLsn > 0 && imageStores(disk, `${name}/${imageFileName(store.oldestReadableLsn)}`, page)) {
    source = { kind: 'image', lsn: store.oldestReadableLsn };
  }
  return { page, lsn: at, source, crc32c: crc32c(data), data };
}

/** The catalog a controller node that keeps it alone holds in `controller/catalog`; undefined when there is no such file. */
function localCatalog(dataDir: string, lsn: number | undefined): InspectReport['catalog'] {
  if (!fs.existsSync(path.join(dataDir, LOCAL_CATALOG_DIR, CATALOG))) return undefined;
  if (lsn !== undefined) throw new InspectError('bad_request', `--lsn: the catalog of ${dataDir} is a file (a controller node that keeps it alone), not a shard: it has no LSNs`);
  const disk = new OverlayDisk(dataDir);
  try {
    return { source: 'controller file', state: localCatalogStore(disk).read<CatalogState>(CATALOG) ?? null };
  } catch (e) {
    if (e instanceof CorruptionError) throw new InspectError('bad_request', `${dataDir}/controller/${CATALOG}: ${e.message}`);
    throw e;
  } finally {
    disk.closeAll();
  }
}

/** The catalog the catalog shard holds as of `lsn` (its header page, then its region's pages); null before the first catalog was written. */
function readCatalog(storage: ShardStorage, lsn: number | undefined): NonNullable<InspectReport['catalog']> {
  const { store } = storage;
  const at = lsn ?? store.appliedLsn;
  if (at > store.appliedLsn) throw new InspectError('future_lsn', `--lsn ${at}: the log ends at LSN ${store.appliedLsn}`);
  if (at < store.oldestReadableLsn) throw new InspectError('trimmed', `--lsn ${at}: the oldest LSN readable is ${store.oldestReadableLsn} (its image); the history before it is trimmed`);
  const header = decodeHeader(store.getPage(0, at));
  if (header === undefined) return { source: 'catalog shard', lsn: at, state: null };
  const count = Math.ceil(header.bytes / CATALOG_PAGE_SIZE);
  const pages: Uint8Array[] = [];
  for (let first = regionStart(header.region); pages.length < count; first += GET_PAGES_MAX) {
    const n = Math.min(GET_PAGES_MAX, count - pages.length);
    pages.push(...store.getPages(Array.from({ length: n }, (_, i) => first + i), at));
  }
  return { source: 'catalog shard', lsn: at, state: decodeCatalog(header, pages) };
}

/**
 * A page of the volume that the replica `f` holds, when the node's record gives the volume's
 * geometry: below its page count, and on this shard (`floor(page / stripePages) mod shards`).
 */
function checkPageOf(f: Found, page: number): void {
  const a = f.assignment;
  if (a === undefined) return;
  if (page >= a.pageCount) throw new InspectError('out_of_range', `--page ${page}: volume ${a.volumeName} has ${a.pageCount} pages (0..${a.pageCount - 1})`);
  if (a.shards !== undefined && a.stripePages !== undefined) {
    const shard = Math.floor(page / a.stripePages) % a.shards;
    if (shard !== f.shard) throw new InspectError('bad_request', `--page ${page}: page ${page} of volume ${a.volumeName} is on shard ${shard}, not on shard ${f.shard} (--shard ${a.volumeName}/${shard})`);
  }
}

/** Whether the image file `file` stores `page` (an image stores the pages that are not zeros). */
function imageStores(disk: OverlayDisk, file: string, page: number): boolean {
  const reader = ImageReader.open(disk, file);
  try {
    return reader.has(page);
  } finally {
    reader.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Comparing the replicas of a shard
// ---------------------------------------------------------------------------------------------

/** Most directories one comparison reads. */
export const COMPARE_PATHS_MAX = 16;
/** Page numbers of differing pages a comparison names (the count is whole). */
const DIFFERING_NAMED_MAX = 16;

/** One replica compared with the reference (the first path's). */
export interface CompareEntry {
  path: string;
  /** The node whose data directory holds it, when known. */
  node?: string;
  replica: ReplicaReport;
  /**
   * The last LSN of the LSNs both logs hold at which both have the same term: by the log
   * matching rule the two logs are the same record for record up to it, which the comparison
   * checks. Undefined when they hold no LSN in common.
   */
  agreedTo?: number;
  /** From this LSN on, the two logs hold records of different terms: a tail written by a leader that was deposed before committing it. Allowed. */
  tailFrom?: number;
  /** Two logs that differ where they must not: same LSN and term, or an agreement after a difference. A bug or damage the checksums did not catch. */
  diverged?: { lsn: number; reason: string };
  /** Every page either replica holds, compared as of `agreedTo` (when both can read that LSN). */
  pages?: { lsn: number; compared: number; differing: number; named: number[] };
}

export interface CompareReport {
  volumeId: string;
  shard: number;
  /** The first path's replica, the one the others are compared with. */
  reference: { path: string; node?: string; replica: ReplicaReport };
  others: CompareEntry[];
  /** No replica diverged, no page differs, every replica opened. */
  ok: boolean;
}

/**
 * The replica directories of every node's data directory under `root` (a cluster's, as `strata
 * dev` lays it out: `<root>/<node>/dev<n>/shards/<volumeId>.<shard>`), by replica name.
 */
export function replicaDirsByShard(root: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const node of fs.readdirSync(root).sort()) {
    const dir = path.join(root, node);
    if (!fs.existsSync(path.join(dir, NODE_META))) continue;
    for (const f of findReplicas(dir, dir).found) {
      const list = out.get(f.name) ?? [];
      list.push(path.join(f.parent, f.name));
      out.set(f.name, list);
    }
  }
  return out;
}

/** A replica the comparison reads: found under `path` (of the shard `shard` names, or the only one there). */
function compareTarget(p: string, shard: string | undefined): { found: Found; node?: string } {
  const abs = path.resolve(p);
  if (!fs.existsSync(abs) || !fs.statSync(abs).isDirectory()) throw new InspectError('not_found', `${p}: not a directory`);
  const r = findReplicas(abs, p);
  if (shard !== undefined) return { found: pick(r.found, shard, p), ...(r.node ? { node: r.node.nodeId } : {}) };
  if (r.found.length !== 1) throw new InspectError('bad_request', `${p} holds ${r.found.length} replicas: name the shard to compare with --shard VOLUME/SHARD`);
  return { found: r.found[0]!, ...(r.node ? { node: r.node.nodeId } : {}) };
}

/** (term, kind, CRC-32C of the payload) of each record of a log, read in steps. */
function* fingerprints(log: SegmentLog, from: number, to: number): Generator<{ lsn: number; term: number; kind: number; crc: number; pages: number[] | undefined }> {
  for (let lsn = from; lsn <= to; ) {
    const records = log.read(lsn, to, { bytesMax: READ_STEP_BYTES });
    for (const r of records) yield { lsn: r.lsn, term: r.term, kind: r.kind, crc: crc32c(r.payload), pages: r.kind === RecordKind.PageWrite ? pagesOfPageWrite(r.payload) : undefined };
    lsn = records[records.length - 1]!.lsn + 1;
  }
}

/** Every page a replica holds data of (in its images, in its log's page writes). */
function pagesHeld(disk: OverlayDisk, name: string, log: SegmentLog): Set<number> {
  const pages = new Set<number>();
  for (const file of disk.list(name)) {
    if (parseImageFileName(file) === undefined) continue;
    let reader: ImageReader | undefined;
    try {
      reader = ImageReader.open(disk, `${name}/${file}`);
      for (let i = 0; i < reader.entries; i++) pages.add(reader.pageAt(i));
    } catch (e) {
      if (!(e instanceof CorruptionError)) throw e; // Damage: reported by the open's summary.
    } finally {
      reader?.close();
    }
  }
  for (const f of fingerprints(log, log.firstLsn, log.lastLsn)) for (const p of f.pages ?? []) pages.add(p);
  return pages;
}

/**
 * CRC-32C of each of `pages` as of `lsn`; undefined when one does not read back (an image page
 * whose checksum fails, which the open does not check): its damage goes into `rep`.
 */
function pageCrcs(storage: ShardStorage, rep: ReplicaReport, pages: readonly number[], lsn: number): number[] | undefined {
  const out: number[] = [];
  try {
    for (let i = 0; i < pages.length; i += GET_PAGES_MAX) {
      for (const data of storage.store.getPages(pages.slice(i, i + GET_PAGES_MAX), lsn)) out.push(crc32c(data));
    }
  } catch (e) {
    if (!(e instanceof CorruptionError)) throw e;
    for (const r of e.reports) if (!rep.damage.some((d) => d.file === r.file && d.reason === r.reason)) rep.damage.push(r);
    return undefined;
  }
  return out;
}

/**
 * Compares the replicas of one shard held under `paths` (nodes' data directories with `shard`
 * named, or the replicas' own directories), each with the first: their logs record for record
 * where both hold an LSN in the same term, and every page either holds as of the last such LSN.
 * Read offline and changing nothing, as `inspect`. For the replicas of a stopped cluster (or a
 * copy of their directories): a running node's files may change while they are read.
 */
export function compareReplicas(paths: readonly string[], shard?: string): CompareReport {
  if (paths.length < 2 || paths.length > COMPARE_PATHS_MAX) throw new InspectError('bad_request', `--compare: 2..${COMPARE_PATHS_MAX} directories, got ${paths.length}`);
  const targets = paths.map((p) => compareTarget(p, shard));
  const ref = targets[0]!;
  for (const [k, t] of targets.entries()) {
    if (t.found.volumeId !== ref.found.volumeId || t.found.shard !== ref.found.shard) {
      throw new InspectError('bad_request', `${paths[k]} holds shard ${t.found.shard} of ${t.found.volumeId}, not shard ${ref.found.shard} of ${ref.found.volumeId}`);
    }
  }
  let refReport: ReplicaReport | undefined;
  const others: CompareEntry[] = [];
  for (let k = 1; k < targets.length; k++) {
    const t = targets[k]!;
    let pair: Omit<CompareEntry, 'path' | 'replica'> = {};
    let rep: ReplicaReport | undefined;
    // The reference is opened again for each: two replicas open at a time.
    const refRep = inspectReplica(ref.found, {}, undefined, (a, aDisk, aName, aRep) => {
      rep = inspectReplica(t.found, {}, undefined, (b, bDisk, bName, bRep) => {
        pair = comparePair({ storage: a, disk: aDisk, name: aName, rep: aRep }, { storage: b, disk: bDisk, name: bName, rep: bRep });
      });
    });
    refReport ??= refRep;
    // The reference did not open: the other is reported on its own.
    rep ??= inspectReplica(t.found, {}, undefined);
    others.push({ ...pair, path: paths[k]!, replica: rep, ...(t.node !== undefined ? { node: t.node } : {}) });
  }
  const all = [refReport!, ...others.map((o) => o.replica)];
  const ok = all.every((r) => r.state !== 'damaged' && r.state !== 'unreadable') && others.every((o) => o.diverged === undefined && (o.pages?.differing ?? 0) === 0);
  return {
    volumeId: ref.found.volumeId,
    shard: ref.found.shard,
    reference: { path: paths[0]!, replica: refReport!, ...(ref.node !== undefined ? { node: ref.node } : {}) },
    others,
    ok,
  };
}

/** A replica open for a comparison: its storage, where it is, and its report. */
interface Opened {
  storage: ShardStorage;
  disk: OverlayDisk;
  name: string;
  rep: ReplicaReport;
}

function comparePair(x: Opened, y: Opened): Omit<CompareEntry, 'path' | 'replica'> {
  const a = x.storage;
  const b = y.storage;
  const out: Omit<CompareEntry, 'path' | 'replica'> = {};
  const lo = Math.max(a.log.firstLsn, b.log.firstLsn);
  const hi = Math.min(a.log.lastLsn, b.log.lastLsn);
  if (lo <= hi) {
    const ia = fingerprints(a.log, lo, hi);
    const ib = fingerprints(b.log, lo, hi);
    for (let x = ia.next(), y = ib.next(); !x.done && !y.done; x = ia.next(), y = ib.next()) {
      const ra = x.value;
      const rb = y.value;
      if (ra.term !== rb.term) {
        out.tailFrom ??= ra.lsn;
        continue;
      }
      if (out.tailFrom !== undefined) {
        out.diverged = { lsn: ra.lsn, reason: `both hold LSN ${ra.lsn} in term ${ra.term}, but their records differ in term from LSN ${out.tailFrom} before it` };
        break;
      }
      if (ra.kind !== rb.kind || ra.crc !== rb.crc) {
        out.diverged = { lsn: ra.lsn, reason: `both hold LSN ${ra.lsn} in term ${ra.term}, with different records (kind ${ra.kind}, CRC-32C ${ra.crc.toString(16)} against kind ${rb.kind}, ${rb.crc.toString(16)})` };
        break;
      }
      out.agreedTo = ra.lsn;
    }
  }
  const at = out.agreedTo;
  if (out.diverged === undefined && at !== undefined && at >= a.store.oldestReadableLsn && at >= b.store.oldestReadableLsn) {
    const pages = [...new Set([...pagesHeld(x.disk, x.name, a.log), ...pagesHeld(y.disk, y.name, b.log)])].sort((p, q) => p - q);
    const ca = pageCrcs(a, x.rep, pages, at);
    const cb = pageCrcs(b, y.rep, pages, at);
    // A replica whose pages do not read back is reported damaged, its pages not compared.
    if (ca !== undefined && cb !== undefined) {
      const differ = pages.filter((_, i) => ca[i] !== cb[i]);
      out.pages = { lsn: at, compared: pages.length, differing: differ.length, named: differ.slice(0, DIFFERING_NAMED_MAX) };
    }
  }
  return out;
}

/** A comparison as text: a line per replica. */
export function compareText(r: CompareReport): string {
  const ref = r.reference.replica;
  const rows = [['NODE', 'PATH', 'LOG', 'LAST TERM', 'READABLE FROM', 'AGREES UP TO', 'PAGES', 'STATE']];
  const logText = (x: ReplicaReport): string => (x.log === undefined ? '-' : x.log.lastLsn < x.log.firstLsn ? `empty from ${x.log.firstLsn}` : `${x.log.firstLsn}..${x.log.lastLsn}`);
  rows.push([r.reference.node ?? '-', r.reference.path, logText(ref), ref.log ? String(ref.log.lastTerm) : '-', ref.oldestReadableLsn === undefined ? '-' : String(ref.oldestReadableLsn), '-', '-', ref.state === 'ok' ? 'reference' : `reference, ${ref.state}`]);
  for (const o of r.others) {
    const x = o.replica;
    const state =
      x.state === 'damaged' || x.state === 'unreadable' ? x.state
        : o.diverged !== undefined ? 'DIVERGED'
        : (o.pages?.differing ?? 0) > 0 ? 'PAGES DIFFER'
        : o.tailFrom !== undefined ? `same; its tail from LSN ${o.tailFrom} is of another term`
        : o.agreedTo === undefined ? 'no LSN in common'
        : 'same';
    const pages = o.pages === undefined ? '-' : `${o.pages.compared - o.pages.differing}/${o.pages.compared} equal at ${o.pages.lsn}`;
    rows.push([o.node ?? '-', o.path, logText(x), x.log ? String(x.log.lastTerm) : '-', x.oldestReadableLsn === undefined ? '-' : String(x.oldestReadableLsn), o.agreedTo === undefined ? '-' : String(o.agreedTo), pages, state]);
  }
  const lines = [`shard ${r.shard} of ${r.volumeId}${ref.volumeName !== undefined ? ` (${ref.volumeName})` : ''}: ${r.others.length + 1} replicas, each compared with the first`, '', textTable(rows).trimEnd()];
  for (const o of r.others) {
    if (o.diverged !== undefined) lines.push(`${o.path}: ${o.diverged.reason}`);
    if (o.pages !== undefined && o.pages.differing > 0) lines.push(`${o.path}: ${o.pages.differing} page(s) differ as of LSN ${o.pages.lsn}: ${pageRanges(o.pages.named)}${o.pages.differing > o.pages.named.length ? ', …' : ''}`);
  }
  for (const x of [ref, ...r.others.map((o) => o.replica)]) {
    for (const d of x.damage) lines.push(`${x.dir}: damage: ${d.file}${d.offset > 0 ? ` at offset ${d.offset}` : ''}: ${d.reason}`);
    if (x.error !== undefined) lines.push(`${x.dir}: does not open: ${x.error}`);
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------------

/** Page numbers as ranges: `0-9, 12, 40-41`, at most `max` ranges shown. */
export function pageRanges(pages: readonly number[], max = 8): string {
  const sorted = [...new Set(pages)].sort((a, b) => a - b);
  const ranges: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    ranges.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return ranges.length > max ? `${ranges.slice(0, max).join(', ')}, … (${ranges.length - max} more ranges)` : ranges.join(', ');
}


function mib(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

/** Whether the open left the file `diskPath` (of the overlay) shorter than it is on disk (`realPath`). */
function shortened(disk: OverlayDisk, diskPath: string, realPath: string): boolean {
  let realBytes: number;
  try {
    realBytes = fs.statSync(realPath).size;
  } catch {
    return false; // Not on disk: the open makes it.
  }
  if (!disk.exists(diskPath)) return false;
  const fh = disk.open(diskPath);
  try {
    return disk.size(fh) < realBytes;
  } finally {
    disk.close(fh);
  }
}

/** What `nextOpen` holds, said for a person. */
function nextOpenText(paths: readonly string[], tailCut: readonly string[] = []): string {
  return paths.map((p) => (tailCut.includes(p) ? `${p} (a torn tail cut)` : p)).join(', ');
}

/** The report as text: a table of the replicas, their damage, and the records or the page asked for. */
export function inspectText(r: InspectReport): string {
  const lines: string[] = [];
  if (r.node !== undefined) {
    lines.push(`node ${r.node.nodeId} of cluster ${r.node.cluster}, ${r.node.hosts} host(s): ${r.path}`);
    const cat = r.node.catalog;
    if (cat !== undefined) {
      lines.push(
        cat.member
          ? `a controller node by a change of the controller nodes (its record; set ${cat.members.join(',')}), whatever its --controllers`
          : `taken out of the controller nodes by a change (its record; set ${cat.members.join(',')}): holds no replica of the catalog shard, whatever its --controllers`,
      );
    }
  } else lines.push(`${r.kind === 'device' ? 'device directory' : 'replica directory'}: ${r.path}`);
  if (r.inUse !== undefined) {
    const who = `${r.inUse.nodeId !== undefined ? `node ${r.inUse.nodeId}` : 'a node'}${r.inUse.pid !== undefined ? `, process ${r.inUse.pid}` : ''}`;
    lines.push(
      r.inUse.running === false
        ? `note: a lock file names ${who}, which no longer runs here (a crash); the node takes it over when started`
        : `note: the directory is in use by ${who}: what is read may be changing under it`,
    );
  }
  if (r.replicas.length === 0) {
    lines.push(r.catalog !== undefined ? '' : 'no replicas');
    if (r.catalog !== undefined) lines.push(catalogText(r.catalog));
    return lines.join('\n') + '\n';
  }
  const rows = [['REPLICA', 'VOLUME', 'DEVICE', 'TERM', 'VOTE', 'SET', 'LOG', 'LAST TERM', 'IMAGE', 'READABLE FROM', 'SIZE', 'STATE']];
  for (const x of r.replicas) {
    rows.push([
      `${x.volumeId}/${x.shard}`,
      x.volumeName ?? '-',
      x.device ?? '-',
      x.term === undefined ? '-' : String(x.term),
      x.votedFor ?? '-',
      x.members === undefined ? '-' : `${x.members.join(',')}${x.prior !== undefined ? ` (from ${x.prior.join(',')})` : ''}`,
      x.log === undefined ? '-' : x.log.lastLsn < x.log.firstLsn ? `empty from ${x.log.firstLsn}` : `${x.log.firstLsn}..${x.log.lastLsn}`,
      x.log === undefined ? '-' : String(x.log.lastTerm),
      x.imageLsn === undefined || x.imageLsn === 0 ? '-' : String(x.imageLsn),
      x.oldestReadableLsn === undefined ? '-' : String(x.oldestReadableLsn),
      mib(x.bytes),
      x.state,
    ]);
  }
  lines.push('', textTable(rows).trimEnd());
  for (const x of r.replicas) {
    const name = `${x.volumeId}/${x.shard}`;
    for (const d of x.damage) lines.push(`${name}: damage: ${d.file}${d.offset > 0 ? ` at offset ${d.offset}` : ''}${d.toLsn >= d.fromLsn && d.fromLsn > 0 ? `, LSNs ${d.fromLsn}..${d.toLsn}` : ''}: ${d.reason}`);
    // The log is used up to its last record before the first damage: valid records after the
    // damage are not used either (until the replica is repaired).
    const logDamage = x.damage.filter((d) => /(^|\/)log\/seg-[0-9a-f]{16}\.log$/.test(d.file) && d.fromLsn > 0);
    if (x.log !== undefined && logDamage.length > 0 && logDamage.some((d) => d.fromLsn > x.log!.lastLsn)) {
      lines.push(`${name}: the log is used up to LSN ${x.log.lastLsn}: no record after it is, valid or not, until the replica is repaired`);
    }
    if (x.error !== undefined) lines.push(`${name}: does not open: ${x.error}`);
    if (x.lost === true) lines.push(`${name}: its storage was found lost: it takes no vote until its peers give it the shard back`);
    if (x.repairing === true) lines.push(`${name}: repairing: it takes no vote until its peers give it back the records it lost`);
    if (x.nextOpen.length > 0) lines.push(`${name}: the node's next open changes ${nextOpenText(x.nextOpen, x.tailCut)}`);
  }
  if (r.replicas.length === 1) {
    const x = r.replicas[0]!;
    if (x.log !== undefined) lines.push('', `log: ${x.log.segments} segment(s), ${mib(x.log.bytes)}, LSNs ${x.log.firstLsn}..${x.log.lastLsn}`);
    for (const i of x.images) lines.push(`image ${i.file}: LSN ${i.lsn}${i.term !== undefined ? `, term ${i.term}` : ''}, ${i.pagesStored ?? '?'} page(s) stored, ${mib(i.bytes)}${i.damage !== undefined ? `, DAMAGED: ${i.damage}` : ''}`);
  }
  if (r.records !== undefined) {
    const rows2 = [['LSN', 'TERM', 'KIND', 'BYTES', 'WHAT']];
    for (const l of r.records) {
      const what = l.pages !== undefined ? `${l.pages.length} page(s): ${pageRanges(l.pages)}` : l.zeros !== undefined ? `the shard's pages of ${l.zeros.first}..${l.zeros.first + l.zeros.count - 1} made zeros` : l.members !== undefined ? `set ${l.members.join(',')}${l.prior !== undefined ? ` (joint, from ${l.prior.join(',')})` : ''}` : '';
      rows2.push([String(l.lsn), String(l.term), l.kind, String(l.bytes), l.writeId !== undefined ? `${what} (write id ${l.writeId})` : what]);
    }
    lines.push('', textTable(rows2).trimEnd());
    if (r.recordsNext !== undefined) lines.push(`… more from LSN ${r.recordsNext} (--from ${r.recordsNext})`);
  }
  if (r.catalog !== undefined) lines.push('', catalogText(r.catalog));
  if (r.page !== undefined) {
    const p = r.page;
    const src = p.source.kind === 'record' ? `written by LSN ${p.source.lsn} (term ${p.source.term})` : p.source.kind === 'image' ? `from the image at LSN ${p.source.lsn}` : 'never written (zeros)';
    lines.push('', `page ${p.page} as of LSN ${p.lsn}: ${src}, ${p.data.length} bytes, crc32c ${p.crc32c.toString(16).padStart(8, '0')}`);
    lines.push(hexDump(p.data, 64));
  }
  return lines.join('\n') + '\n';
}

function catalogText(c: NonNullable<InspectReport['catalog']>): string {
  const where = c.source === 'catalog shard' ? `the catalog shard as of LSN ${c.lsn}` : 'the file of a controller node that keeps it alone (controller/catalog)';
  if (c.state === null) return `catalog (${where}): none written yet`;
  const s = c.state;
  const lines = [`catalog (${where}): epoch ${s.epoch}, tag ${s.tag ?? '-'}, next id ${s.nextId}, ${s.volumes.length} volume(s), ${s.tombstones.length} tombstone(s)${s.draining?.length ? `, draining ${s.draining.join(',')}` : ''}${s.rebalance ? ', rebalancing' : ''}`];
  if (s.volumes.length > 0) {
    const rows = [['NAME', 'ID', 'PAGES', 'PAGE SIZE', 'SHARDS', 'REPLICAS', 'BRANCH OF', 'SETS']];
    for (const v of s.volumes) {
      const sets = v.placements.map((p) => `${p.shard}:${p.replicas.map((r) => r.nodeId).join(',')}${p.adding !== undefined ? `(+${p.adding.nodeId} -${p.removing ?? '?'})` : ''}`);
      rows.push([v.name, v.id, String(v.pageCount), String(v.pageSize), String(v.shards), String(v.replicas), v.branch?.parent ?? '-', sets.length > 4 ? `${sets.slice(0, 4).join(' ')} … (${sets.length} shards)` : sets.join(' ')]);
    }
    lines.push(textTable(rows).trimEnd());
  }
  return lines.join('\n');
}

/** The first `bytes` bytes as a hex dump. */
function hexDump(data: Uint8Array, bytes: number): string {
  const out: string[] = [];
  for (let off = 0; off < Math.min(bytes, data.length); off += 16) {
    const row = [...data.subarray(off, off + 16)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    out.push(`${off.toString(16).padStart(8, '0')}  ${row}`);
  }
  if (data.length > bytes) out.push(`… ${data.length - bytes} more bytes (--out FILE writes the whole page)`);
  return out.join('\n');
}

/** The report as JSON: page data as hex, damage as reported. */
export function inspectJson(r: InspectReport): unknown {
  if (r.page === undefined) return r;
  const { data, ...rest } = r.page;
  return { ...r, page: { ...rest, dataHex: Buffer.from(data.buffer, data.byteOffset, data.length).toString('hex') } };
}
