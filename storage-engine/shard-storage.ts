/**
 * ShardStorage: the durable state of one replica of a shard on one device.
 *
 *   <dir>/log/seg-….log     the replica's log (SegmentLog)
 *   <dir>/image-….img        checkpoint images, <dir>/checkpoint their pointer (PageStore)
 *   <dir>/raft               term and vote (atomic metadata), saved before any reply depends on them,
 *                            on a device without a hard-state journal (with one, the journal holds them)
 *   <dir>/incoming.img.tmp   an image being received from the leader
 *   <dir>/install            redo marker of an image installation in progress
 *
 * Opening replays the log only up to the newest image: later records may not be committed yet
 * (a new leader may truncate them), and applying is only ever done for committed records.
 *
 * Installing an image received from the leader is crash-safe: the image is written and synced
 * under its final name, then the marker `install` {lsn, term} is written; from there on the
 * installation is redone on open until it completes (log reset to continue at lsn + 1, pointer
 * moved to the image, marker removed). A crash before the marker leaves the old state intact.
 *
 * A branch's replica is seeded the same way (`seedFromImage`): its parent's page store exports
 * the image at the branch point into the new replica's directory, the seed writes the marker,
 * and the next open finishes the installation.
 */
import type { Disk } from './disk';
import { validateConfig } from '../messages/raft';
import { joinPath } from './disk';
import { SegmentLog } from './log';
import { PageStore, type PageStoreOptions } from './page-store';
import { MetaStore } from './metadata';
import type { HardStateJournal, HardStateLookup, StateSink } from './hard-state-journal';
import { ImageReader, imageFileName, parseImageFileName } from './image';
import { parseSegmentName } from './log-segment';
import { LogWriteIds, type LogWriteIdList } from './log-write-ids';
import type { Slab } from './slab';
import { CorruptionError, StorageError, assert, type CorruptionReport } from './errors';

export interface ShardStorageOptions {
  dir: string;
  pageSize: 4096 | 8192;
  pageCount: number;
  cacheBytesMax: number;
  slab: Slab;
  segmentBytesMax?: number;
  /** Records of history kept readable behind the newest image (PageStore `retainLsns`); default 0. */
  retainLsns?: number;
  /**
   * Repair a damaged log at open (a replica of a set of several, whose peers hold the records it
   * lost): discard the damage, keeping the valid prefix (or restart the log after the newest image
   * when the damage reaches into what the image covers), and mark the hard state `repairTerm` so
   * that the replica does not vote until it holds the lost records again. Without it a damaged
   * log opens read-only (writes throw CorruptionError), as a sole copy must.
   */
  repairFromPeers?: boolean;
  /**
   * A sole copy's open (without `repairFromPeers`): a damaged log is kept as it is (read-only,
   * nothing discarded) and the hard state is marked `repairTerm`, so that the replica does not
   * take the lead on a log it cannot append to (it would fail and be restarted until left down):
   * it waits for an operator to accept the loss (`strata shard force-vote`: its host opens it
   * again with `repairFromPeers`, which discards the damage and what follows it, and then clears
   * the mark).
   */
  holdDamagedLog?: boolean;
  /**
   * Default true: damage in the images or the checkpoint pointer that the open went past is
   * healed at once (healImages: the newest image or the pointer written again, the other
   * damaged images removed). False: it is only reported (`repaired`): a look that writes nothing
   * it need not (strata inspect, whose writes stay in memory: a whole image would be held there).
   */
  healImages?: boolean;
  /**
   * For a replica reopened because it found its storage damaged while it ran (a scrub): the
   * damage it found. Images named there are not used (PageStore `damagedImages`); when an older
   * image and the log still hold what such an image held, the newest image is written again at
   * once (replacing a damaged one atomically) and the other damaged files are removed; otherwise
   * (with `repairFromPeers`) the replica starts over and its peers send everything again. Damage
   * of the log is found by the open itself.
   */
  damaged?: readonly CorruptionReport[];
  /**
   * The LSN this replica's log was durable up to before a reopen (its host knows it; after a
   * process restart nobody does). A log that opens shorter lost records the replica may have
   * acknowledged: a record at its end that rotted is reported as damage when it was written whole
   * (SegmentLog recovery), but some look like a write a crash cut short and are cut without a
   * report: one written before records had a zero census whose data ends in a zero byte or holds
   * a sector of zeros, or one whose rot zeroed its last non-zero byte or a whole sector.
   * The cut is then reported (`repaired`, `lostRecords`), and with `repairFromPeers` the replica
   * is marked to repair (no vote until it holds them again); a sole copy has lost them.
   */
  durableLsn?: number;
  /**
   * The reopen follows a failure of the device (a write or an fsync failed; its host knows): the
   * records after `durableLsn` were never made durable, and are cut. The page cache may still
   * show them, but a failed fdatasync may have left them off the device, and on Linux no later
   * fdatasync writes them (it marks them clean): kept, they would be served, committed and
   * counted durable, and lost at the next power cut. None of them was acknowledged.
   */
  afterDeviceFailure?: boolean;
  /**
   * The replica was opened on this node before (its node's record of its shards, a
   * reconciliation with the catalog, a restart of its host): its storage should be here. An open
   * that finds no term and vote saved reports `storageLost`, and marks the hard state `lost`
   * before anything else (a sole copy too: it then serves nothing until an operator accepts the
   * loss): the replica may have voted and acknowledged records
   * in a former life it no longer knows of (a wiped or replaced disk, or only its hard state lost:
   * a replica saves its term before it takes a record or an image). Without it, such an open is a
   * new replica's. (A term and vote that no longer read are marked `lost` too, with
   * `repairFromPeers`, expected or not, and reported as damage.)
   */
  expectExisting?: boolean;
  /**
   * Most write ids of the log's records its open keeps for the replica (`takeWriteIdsAtOpen`),
   * the newest; default 0 (none: a replica that opens the log then knows no id of it).
   */
  writeIdsKept?: number;
  /** The wall clock (ms since the epoch) of the checkpoint pointer's time; default Date.now. */
  wallClock?: () => number;
  /**
   * The device's hard-state journal: the replica's term and vote are saved there (many replicas'
   * saves in one write and fdatasync) rather than in its `raft` file, which is still read when
   * the journal holds nothing of the directory (a directory of before the journal).
   */
  journal?: HardStateJournal;
}

export interface HardStateRecord {
  term: number;
  votedFor: string | null;
  /** See the Replica's HardState.repairTerm: set when a repair discarded records (at this term). */
  repairTerm?: number;
  /** See the Replica's HardState.lost: set when the open found no term and vote (none saved, or unreadable) of a replica that existed. */
  lost?: boolean;
}

interface InstallMarker {
  lsn: number;
  term: number;
}

/** The hard state of a replica whose term and vote were lost (HardStateRecord.lost). */
const LOST_MARK: HardStateRecord = { term: 0, votedFor: null, repairTerm: 0, lost: true };

function isHardStateRecord(v: unknown): v is HardStateRecord {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  const term = o['term'];
  const votedFor = o['votedFor'];
  const repairTerm = o['repairTerm'];
  return Number.isSafeInteger(term) && (term as number) >= 0 && (votedFor === null || typeof votedFor === 'string') &&
    (repairTerm === undefined || (Number.isSafeInteger(repairTerm) && (repairTerm as number) >= 0)) && (o['lost'] === undefined || o['lost'] === true);
}

/**
 * Where a replica's term and vote are kept: the device's hard-state journal when it has one
 * (its `raft` file read only while the journal holds nothing of the directory), else the `raft`
 * file. Reading throws CorruptionError when they no longer read.
 */
class HardStatePlace {
  constructor(
    private readonly meta: MetaStore,
    private readonly dir: string,
    readonly journal: HardStateJournal | undefined,
  ) {}

  read(): HardStateRecord | undefined {
    if (this.journal !== undefined) {
      const found = this.journal.lookup(this.dir);
      if (found.kind === 'forgotten') return undefined;
      if (found.kind === 'saved') {
        if (!isHardStateRecord(found.value)) {
          throw new CorruptionError(`the hard-state journal ${this.journal.path} holds no term and vote for ${this.dir}`, [
            { file: this.journal.path, offset: 0, fromLsn: 0, toLsn: 0, reason: `the entry of ${this.dir} is not a term and vote` },
          ]);
        }
        return found.value;
      }
    }
    return this.meta.read<HardStateRecord>(RAFT);
  }

  write(state: HardStateRecord): void {
    if (this.journal !== undefined) this.journal.saveMany([{ key: this.dir, value: state }]);
    else this.meta.write(RAFT, state);
  }

  /** Whether a term and vote were ever saved for the directory (read or not). */
  held(disk: Disk): boolean {
    let found: HardStateLookup['kind'];
    try {
      found = this.journal?.lookup(this.dir).kind ?? 'none';
    } catch (e) {
      if (e instanceof CorruptionError) return true; // Saved once, lost to damage since.
      throw e;
    }
    return found === 'saved' || (found === 'none' && disk.exists(joinPath(this.dir, RAFT)));
  }
}

/**
 * A term and vote that no longer read (a damaged file): replaced by the lost mark, so that the
 * replica learns its peers' terms before it votes again; returns the damage (none: they read).
 */
function checkHardState(place: HardStatePlace): CorruptionReport[] {
  try {
    place.read();
    return [];
  } catch (e) {
    if (!(e instanceof CorruptionError)) throw e;
    place.write(LOST_MARK);
    return [...e.reports];
  }
}

/** A replica set: members, and the prior set during a change. */
export interface ConfigSetRecord {
  members: string[];
  prior?: string[];
}

/** The replica-set configurations of a replica's log (see the Replica's ConfigState). */
export interface ConfigRecord {
  base: ConfigSetRecord;
  changes: Array<{ lsn: number; term: number; config: ConfigSetRecord; image?: boolean }>;
}

/** A replica set as saved (messages/raft validateConfig); false for anything else. */
function isConfigSet(v: unknown): v is ConfigSetRecord {
  try {
    validateConfig(v);
    return true;
  } catch {
    return false;
  }
}

function isConfigRecord(v: unknown): v is ConfigRecord {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  const changes = o['changes'];
  return isConfigSet(o['base']) && Array.isArray(changes) && changes.every((c: unknown) => {
    if (c === null || typeof c !== 'object') return false;
    const x = c as Record<string, unknown>;
    return Number.isSafeInteger(x['lsn']) && Number.isSafeInteger(x['term']) && isConfigSet(x['config']) && (x['image'] === undefined || x['image'] === true);
  });
}

const INCOMING = 'incoming.img.tmp';
const INSTALL = 'install';
const RAFT = 'raft';
const CONFIG = 'config';

/** Marks the hard state: this replica's log is losing records it may have acknowledged (HardStateRecord.repairTerm). */
function markRepair(place: HardStatePlace, log: SegmentLog): void {
  const hs = place.read();
  // The hard state's term is at least the term of every record (a replica takes a record's
  // term, durably, before it accepts the record).
  const repairTerm = Math.max(hs?.term ?? 0, log.lastTerm, hs?.repairTerm ?? 0);
  // A replica marked lost (its storage was wiped) stays so: it has yet to learn its peers' terms.
  const marked: HardStateRecord = { term: hs?.term ?? 0, votedFor: hs?.votedFor ?? null, repairTerm, ...(hs?.lost === true ? { lost: true } : {}) };
  place.write(marked);
}

/**
 * After a store opened past damage (images known or found damaged, whose content an older image
 * and the log held; a 'checkpoint' pointer unreadable or naming an image that is gone): writes
 * the newest image again at once, so that the pointer names a good image and followers can be
 * sent one (its temporary file is renamed over a damaged one: atomic), or else writes the
 * pointer again for the newest image there is, then removes the other damaged files, which
 * nothing uses any more. The image the pointer names is never removed here: a crash at any point
 * leaves a store that opens.
 */
function healImages(disk: Disk, dir: string, store: PageStore): void {
  store.checkpoint();
  store.repointAfterOpen();
  const pointed = joinPath(dir, imageFileName(PageStore.imageLsn(disk, dir)));
  let removed = false;
  for (const file of new Set(store.damagedImages.map((d) => d.file))) {
    if (file === pointed || !disk.exists(file)) continue;
    disk.remove(file);
    removed = true;
  }
  if (removed) disk.fsyncDir(dir);
}

/** Removes the images and restarts the log at LSN 1: the peers send everything again. */
function startOver(disk: Disk, dir: string, log: SegmentLog): void {
  PageStore.discardAll(disk, dir);
  log.reset(1, 0);
}

/**
 * Repairs a damaged log (see `repairFromPeers`); returns what was damaged. The hard state is
 * marked first, so that a crash during the repair leaves a replica that still does not vote.
 */
function repairLog(disk: Disk, dir: string, place: HardStatePlace, log: SegmentLog): CorruptionReport[] {
  const damage = [...log.corruption];
  markRepair(place, log);
  const imageLsn = PageStore.imageLsn(disk, dir) || PageStore.newestImageOnDisk(disk, dir);
  if (imageLsn <= log.lastLsn) {
    try {
      log.discardDamage();
      return damage;
    } catch (e) {
      // No valid prefix to keep (the first segment is unreadable): as below.
      if (!(e instanceof CorruptionError)) throw e;
    }
  }
  // The damage reaches into records the newest image covers (or nothing of the log can be
  // kept): the image stays the base, and the log starts again after it (the records after it
  // come from the peers).
  let term: number | undefined;
  if (imageLsn > 0) {
    try {
      const image = ImageReader.open(disk, joinPath(dir, imageFileName(imageLsn)));
      term = image.term;
      image.close();
    } catch (e) {
      if (!(e instanceof CorruptionError)) throw e;
    }
  }
  if (term !== undefined) {
    log.reset(imageLsn + 1, term);
  } else {
    startOver(disk, dir, log); // No image to start from either.
  }
  return damage;
}

export class ShardStorage {
  log: SegmentLog;
  store: PageStore;
  private readonly disk: Disk;
  private readonly opts: ShardStorageOptions;
  private readonly meta: MetaStore;
  private readonly place: HardStatePlace;
  private incoming: { fh: number; lsn: number; term: number; bytes: number; written: number } | undefined;
  private closed = false;
  /** The damage the open repaired (`repairFromPeers`, `damaged`), for the host to report; empty when none. */
  readonly repaired: readonly CorruptionReport[];
  /**
   * This open discarded records the replica may have acknowledged: with `repairFromPeers` it is
   * marked to repair (no vote until given them back); a sole copy has lost them.
   */
  readonly lostRecords: boolean;
  /** This open found no term and vote of a replica expected to exist (`expectExisting`); the hard state is marked `lost`. */
  readonly storageLost: boolean;
  /** The write ids found at open, until taken (`takeWriteIdsAtOpen`). */
  private idsAtOpen: { ids: LogWriteIds; completeSinceWallMs: number | undefined } | undefined;

  private constructor(disk: Disk, opts: ShardStorageOptions, log: SegmentLog, store: PageStore, repaired: readonly CorruptionReport[], lostRecords = false, storageLost = false) {
    this.disk = disk;
    this.opts = { ...opts }; // Its pageCount grows (`grow`).
    this.meta = new MetaStore(disk, opts.dir);
    this.place = new HardStatePlace(this.meta, opts.dir, opts.journal);
    this.log = log;
    this.store = store;
    this.repaired = repaired;
    this.lostRecords = lostRecords;
    this.storageLost = storageLost;
  }

  /**
   * Keeps the write ids the log's recovery found, with the time since which they are every id of
   * a record this replica holds, in its log or folded into an image:
   * - ever, if the log still starts at LSN 1 (nothing was folded into an image and trimmed, no
   *   image installed), and no id found was dropped for the bound;
   * - since the checkpoint pointer was written otherwise (every record the log no longer holds
   *   is in the image, so was written before the pointer): unknown if it does not say, or if an
   *   id of a record the log still holds was dropped for the bound.
   */
  private withIdsAtOpen(ids: LogWriteIds): this {
    const log = this.log;
    const completeSinceWallMs =
      ids.droppedThroughLsn >= log.firstLsn ? undefined : log.firstLsn === 1 ? Number.NEGATIVE_INFINITY : PageStore.checkpointMadeAtMs(this.disk, this.opts.dir);
    this.idsAtOpen = { ids, completeSinceWallMs };
    return this;
  }

  /**
   * The write ids of the records the log holds, in LSN order, as its recovery found them at open
   * (the open may have cut some records since, or reset the log: those are left out), and how
   * long before `wallNowMs` (the wall clock, ms since the epoch) they are every id of a record
   * this replica holds (`completeAgoMs`; Infinity: ever; undefined: not known). Once per open:
   * the ids are let go.
   */
  takeWriteIdsAtOpen(wallNowMs: number): { ids: LogWriteIdList; completeAgoMs: number | undefined } {
    const at = this.idsAtOpen;
    this.idsAtOpen = undefined;
    if (at === undefined) return { ids: { count: 0, forEach: () => undefined }, completeAgoMs: undefined };
    const log = this.log;
    const found = at.ids;
    const held = (lsn: number, term: number): boolean => lsn >= log.firstLsn && lsn <= log.lastLsn && log.termAt(lsn) === term;
    let count = 0;
    found.forEach((_, lsn, term) => {
      if (held(lsn, term)) count++;
    });
    const ids: LogWriteIdList = {
      count,
      forEach: (fn) =>
        found.forEach((id, lsn, term) => {
          if (held(lsn, term)) fn(id, lsn, term);
        }),
    };
    return { ids, completeAgoMs: at.completeSinceWallMs === undefined ? undefined : wallNowMs - at.completeSinceWallMs };
  }

  static open(disk: Disk, opts: ShardStorageOptions): ShardStorage {
    // What the journal holds of a directory that is not there is of a replica gone (its files
    // lost since): this one starts from what it finds, as with a `raft` file gone.
    if (opts.journal !== undefined && !disk.exists(opts.dir)) opts.journal.forget(opts.dir);
    disk.mkdirp(joinPath(opts.dir, 'log'));
    const meta = new MetaStore(disk, opts.dir);
    const place = new HardStatePlace(meta, opts.dir, opts.journal);
    const ids = new LogWriteIds(opts.writeIdsKept ?? 0);
    const log = SegmentLog.open(disk, {
      dir: joinPath(opts.dir, 'log'),
      ...(opts.segmentBytesMax ? { segmentBytesMax: opts.segmentBytesMax } : {}),
      onRecovered: ids.onRecovered,
    });
    try {
      // Before anything else is written.
      const hardStateDamage = opts.repairFromPeers ? checkHardState(place) : [];
      // Marked before anything else is written (repairLog's markRepair would otherwise save a
      // hard state without `lost`): a crash after this open's first write must not leave a
      // replica that looks new or merely repairing.
      const storageLost = opts.expectExisting === true && hardStateDamage.length === 0 && place.read() === undefined;
      if (storageLost) place.write(LOST_MARK);
      const marker = meta.read<InstallMarker>(INSTALL);
      if (marker !== undefined) finishInstall(disk, opts.dir, log, marker, opts.wallClock);
      if (disk.exists(joinPath(opts.dir, INCOMING))) {
        disk.remove(joinPath(opts.dir, INCOMING));
        disk.fsyncDir(opts.dir);
      }
      const repaired = opts.repairFromPeers && log.corruption.length > 0 ? repairLog(disk, opts.dir, place, log) : [];
      if (opts.holdDamagedLog === true && !opts.repairFromPeers && log.corruption.length > 0) markRepair(place, log);
      if (opts.afterDeviceFailure === true && opts.durableLsn !== undefined && log.corruption.length === 0 && log.lastLsn > opts.durableLsn) {
        log.truncateSuffix(Math.max(opts.durableLsn, log.firstLsn - 1) + 1);
      }
      // Without a readable checkpoint pointer, the newest image on disk (built from applied, so
      // committed, records) bounds the replay; PageStore.open then takes any image the log covers.
      const imageLsn = PageStore.imageLsn(disk, opts.dir) || PageStore.newestImageOnDisk(disk, opts.dir);
      const replayUpto = Math.max(log.firstLsn - 1, Math.min(imageLsn, log.lastLsn));
      let lost = repaired.length > 0 || hardStateDamage.length > 0;
      const found: CorruptionReport[] = [...hardStateDamage, ...repaired];
      if (opts.durableLsn !== undefined && log.lastLsn < opts.durableLsn && !lost) {
        // Marked before anything else is done: a crash after the cut must not forget it.
        found.push({
          file: joinPath(opts.dir, 'log'), offset: 0, fromLsn: log.lastLsn + 1, toLsn: opts.durableLsn,
          reason: `the log ends at ${log.lastLsn}, below the LSN ${opts.durableLsn} it held durably before the reopen`,
        });
        if (opts.repairFromPeers) markRepair(place, log);
        lost = true;
      }
      let store: PageStore;
      try {
        store = PageStore.open(disk, log, { ...storeOptions(opts), ...(opts.damaged ? { damagedImages: opts.damaged } : {}) }, replayUpto);
        if (store.openDamage.length > 0) {
          try {
            if (opts.healImages !== false) healImages(disk, opts.dir, store);
          } catch (e) {
            store.close();
            throw e;
          }
          found.push(...store.openDamage);
        }
      } catch (e) {
        // No valid image to start from (and the log does not reach back to the empty volume):
        // start over from nothing, and let the peers send everything again.
        if (!(e instanceof CorruptionError)) throw e;
        if (!opts.repairFromPeers) {
          // The log's own damage is part of what to tell (a damaged first segment, say).
          const logDamage = log.corruption.filter((c) => !e.reports.includes(c));
          throw logDamage.length === 0 ? e : new CorruptionError(`${e.message}; the log is damaged too`, [...logDamage, ...e.reports]);
        }
        markRepair(place, log);
        startOver(disk, opts.dir, log);
        store = PageStore.open(disk, log, storeOptions(opts), 0);
        return new ShardStorage(disk, opts, log, store, [...found, ...e.reports], true).withIdsAtOpen(ids);
      }
      return new ShardStorage(disk, opts, log, store, found, lost, storageLost).withIdsAtOpen(ids);
    } catch (e) {
      log.close();
      throw e;
    }
  }

  /**
   * What of a replica's state `dir` holds, by name (its term and vote `raft`, in its file or in
   * the device's `journal`, an `install` marker, a `checkpoint pointer`); empty for a directory
   * no replica has used yet (its log aside: see `seedFromImage`).
   */
  static heldState(disk: Disk, dir: string, journal?: HardStateJournal): string[] {
    const held = new HardStatePlace(new MetaStore(disk, dir), dir, journal).held(disk) ? [RAFT] : [];
    if (disk.exists(joinPath(dir, INSTALL))) held.push(INSTALL);
    if (PageStore.hasPointer(disk, dir)) held.push('checkpoint pointer');
    return held;
  }

  /**
   * Seeds a new replica of a branch (a volume created from another at the branch point `lsn`)
   * in `dir`, into which the parent shard's replica on this device has just exported its pages
   * as of `lsn` (PageStore.exportImage: `image-<lsn>.img`, complete and durable, with header
   * `lsn` and `term`). The directory must hold no replica state yet: no term and vote (`raft`),
   * no checkpoint pointer, no install marker, and a log that is absent or empty at LSN 0 (as a
   * first open leaves it); otherwise 'invariant', naming the directory and what it holds.
   * 'bad_request' for an LSN or term that is malformed (LSN 0 has term 0), or an image that is
   * missing or whose header holds another LSN or term; CorruptionError if it does not open.
   * Image files at other LSNs (an earlier attempt's: no pointer names them) are removed.
   *
   * The seed writes the install marker {lsn, term}, as a received image's installation does:
   * the next `open` (with the shard's own options) finishes it as it finishes an interrupted
   * installation. The log is reset to continue at `lsn + 1` after term `term` (at LSN 0 the new
   * log at LSN 1 already does), the checkpoint pointer names the image and the oldest readable
   * LSN is `lsn`; the replica then holds the parent's pages as of `lsn`. The image's page size
   * and count must be the shard's (the open throws 'bad_request' otherwise).
   *
   * Crash safety. The image is complete and durable under its final name before the seed
   * starts (written under a temporary name, fdatasync'd, renamed, the directory fsync'd). The
   * marker is written atomically (MetaStore: temporary file, fdatasync, rename, directory
   * fsync): that is the commit point.
   * - A crash before the marker is durable leaves no seed: image files that no pointer or marker
   *   names, and perhaps an empty log. An open then finds neither: its log is empty, so it
   *   replays up to LSN 0, and the store uses only images up to the pointer's LSN, none without
   *   one: an empty replica at LSN 0, the image not taken as state (the replica's first
   *   checkpoint removes it). The seed is done again, export included: that directory still
   *   holds nothing a seed refuses, as long as no term and vote was saved in it meanwhile.
   * - A crash after it leaves a seed that every open finishes until the marker is removed: the
   *   log reset (its own commit point is the `.reset` segment), the pointer (atomic) and the
   *   marker's removal are each idempotent, redone in that order.
   */
  static seedFromImage(disk: Disk, dir: string, lsn: number, term: number, journal?: HardStateJournal): void {
    if (!Number.isSafeInteger(lsn) || lsn < 0 || !Number.isSafeInteger(term) || term < 0) {
      throw new StorageError('bad_request', `seed of ${dir}: lsn ${String(lsn)} and term ${String(term)} are not non-negative integers`);
    }
    if (lsn === 0 && term !== 0) throw new StorageError('bad_request', `seed of ${dir}: term ${term} at LSN 0, whose term is 0`);
    const held = ShardStorage.heldState(disk, dir, journal);
    if (held.length > 0) {
      throw new StorageError('invariant', `cannot seed ${dir} from an image: it holds a replica's state (${held.join(', ')})`, { dir, held });
    }
    checkLogEmpty(disk, dir);
    const file = imageFileName(lsn);
    const path = joinPath(dir, file);
    if (!disk.exists(path)) throw new StorageError('bad_request', `cannot seed ${dir}: it holds no ${file} (export the image first)`, { dir, lsn });
    const r = ImageReader.open(disk, path);
    try {
      if (r.lsn !== lsn || r.term !== term) {
        throw new StorageError('bad_request', `cannot seed ${dir}: ${file} holds lsn ${r.lsn} term ${r.term}, not ${lsn}/${term}`, { dir, lsn, term });
      }
    } finally {
      r.close();
    }
    let removed = false;
    for (const name of disk.list(dir)) {
      const l = parseImageFileName(name);
      if (l === undefined || l === lsn) continue;
      disk.remove(joinPath(dir, name));
      removed = true;
    }
    if (removed) disk.fsyncDir(dir);
    new MetaStore(disk, dir).write(INSTALL, { lsn, term } satisfies InstallMarker);
  }

  // --- term and vote ---------------------------------------------------------------------------

  load(): HardStateRecord | undefined {
    this.checkOpen();
    return this.place.read();
  }

  /**
   * Refused once closed ('closed'): a replica restarted on the same directory has read the term
   * and vote already, and its closed predecessor, whose saves may still wait in the device's
   * queue, must not change them under it (it could grant a second vote in one term).
   */
  save(state: HardStateRecord): void {
    this.checkOpen();
    this.place.write(state);
  }

  /**
   * With a hard-state journal: where a device queue may save this replica's term and vote in a
   * batch with other replicas' (DeviceQueue.saveState), the journal and this replica's key, and
   * the check that refuses a save once closed (as `save`); undefined without one.
   */
  get stateSink(): { sink: StateSink; key: string; check: () => void } | undefined {
    const journal = this.place.journal;
    if (journal === undefined) return undefined;
    return { sink: journal, key: this.opts.dir, check: () => this.checkOpen() };
  }

  // --- replica-set configurations --------------------------------------------------------------

  /**
   * The replica-set configurations its log recorded (the Replica's ConfigState), in their own
   * file beside the term and vote; undefined when none was saved. A file that does not read
   * throws CorruptionError (the replica then takes the set its node gives it).
   */
  loadConfig(): ConfigRecord | undefined {
    this.checkOpen();
    const state = this.meta.read<ConfigRecord>(CONFIG);
    if (state === undefined) return undefined;
    if (!isConfigRecord(state)) {
      throw new StorageError('corruption', `the replica-set configuration file '${CONFIG}' holds no configuration`);
    }
    return state;
  }

  /** Replaces them atomically (refused once closed, as `save`). */
  saveConfig(state: ConfigRecord): void {
    this.checkOpen();
    this.meta.write(CONFIG, state);
  }

  // --- images for followers ----------------------------------------------------------------------

  /** The newest image of this replica (to send to a follower), if any. */
  newest(): { lsn: number; term: number; bytes: number } | undefined {
    this.checkOpen();
    const lsn = PageStore.imageLsn(this.disk, this.opts.dir);
    if (lsn === 0) return undefined;
    const r = ImageReader.open(this.disk, joinPath(this.opts.dir, imageFileName(lsn)));
    try {
      const fh = this.disk.open(joinPath(this.opts.dir, imageFileName(lsn)));
      try {
        return { lsn, term: r.term, bytes: this.disk.size(fh) };
      } finally {
        this.disk.close(fh);
      }
    } finally {
      r.close();
    }
  }

  read(lsn: number, offset: number, length: number): Uint8Array {
    this.checkOpen();
    const fh = this.disk.open(joinPath(this.opts.dir, imageFileName(lsn)));
    try {
      const buf = new Uint8Array(length);
      const n = this.disk.read(fh, buf, offset);
      if (n !== length) throw new StorageError('io_error', `image ${lsn}: short read at ${offset}`);
      return buf;
    } finally {
      this.disk.close(fh);
    }
  }

  /** LSN of the newest image (the checkpoint pointer's; 0 if none), without opening it. */
  newestLsn(): number {
    this.checkOpen();
    return PageStore.imageLsn(this.disk, this.opts.dir);
  }

  /** ImageReader.verifySteps of our image at `lsn` (closed at the end, or when the caller stops). */
  *verifySteps(lsn: number): Generator<void, void, void> {
    this.checkOpen();
    const path = joinPath(this.opts.dir, imageFileName(lsn));
    const r = ImageReader.open(this.disk, path);
    try {
      const steps = r.verifySteps();
      for (;;) {
        let step: IteratorResult<void, void>;
        try {
          step = steps.next();
        } catch (e) {
          // A checkpoint let the image go meanwhile: renamed away, it is cut short in the
          // background, and what reads short then is gone, not damaged.
          if (e instanceof CorruptionError && !this.disk.exists(path)) return;
          throw e;
        }
        if (step.done === true) return;
        yield;
      }
    } finally {
      r.close();
    }
  }

  // --- receiving an image --------------------------------------------------------------------------

  begin(lsn: number, term: number, bytes: number): void {
    this.checkOpen();
    this.discardIncoming();
    const fh = this.disk.open(joinPath(this.opts.dir, INCOMING), { create: true, truncate: true });
    this.incoming = { fh, lsn, term, bytes, written: 0 };
  }

  write(offset: number, data: Uint8Array): void {
    this.checkOpen();
    const inc = this.incoming;
    if (!inc || offset !== inc.written || offset + data.length > inc.bytes) {
      throw new StorageError('bad_request', `image chunk at ${offset} does not continue the image being received`);
    }
    this.disk.write(inc.fh, data, offset);
    inc.written += data.length;
  }

  /** Makes the received image this replica's state; returns the new log and store. */
  install(): { log: SegmentLog; store: PageStore } {
    this.checkOpen();
    const inc = this.incoming;
    if (!inc || inc.written !== inc.bytes) throw new StorageError('bad_request', 'no complete image has been received');
    this.disk.fdatasync(inc.fh);
    this.disk.close(inc.fh);
    this.incoming = undefined;
    // Checked whole, under its temporary name, before anything depends on it: a file under an
    // image's name is always a good image, and a bad one (bit rot at the sender, a transfer
    // error) never replaces this replica's log.
    const incoming = joinPath(this.opts.dir, INCOMING);
    const r = ImageReader.open(this.disk, incoming);
    try {
      if (r.lsn !== inc.lsn || r.term !== inc.term || r.pageSize !== this.opts.pageSize) {
        throw new StorageError('corruption', `received image does not match: lsn ${r.lsn}/${inc.lsn}, term ${r.term}/${inc.term}`);
      }
      // Of a volume grown since this replica took its size (it takes the new one from its node):
      // not installed until then (the replica refuses such a transfer at its first chunk). One
      // made before it grew has fewer pages, the others read as zeros.
      if (r.pageCount > this.opts.pageCount) {
        throw new StorageError('bad_request', `received image has ${r.pageCount} pages, this replica ${this.opts.pageCount}: its volume grew, and this replica has not taken the new size yet`);
      }
      r.verifyPages();
    } finally {
      r.close();
    }
    // The marker first, then the image's name (finishInstall): a file under an image's name
    // that no pointer names is taken to be of records this log applied (a checkpoint's whose
    // pointer was not written), and bounds the replay of the log at open. Renamed before the
    // marker, a crash between the two left the leader's image under its name beside a log of
    // records it never committed, which the reopen then applied up to the image's LSN.
    this.meta.write(INSTALL, { lsn: inc.lsn, term: inc.term } satisfies InstallMarker);
    this.store.close();
    finishInstall(this.disk, this.opts.dir, this.log, { lsn: inc.lsn, term: inc.term }, this.opts.wallClock);
    this.store = PageStore.open(this.disk, this.log, storeOptions(this.opts), inc.lsn);
    return { log: this.log, store: this.store };
  }

  /** The volume grew to `pageCount` pages (fewer than it has changes nothing): the store, and every store it opens from now on. */
  grow(pageCount: number): void {
    this.checkOpen();
    if (pageCount <= this.opts.pageCount) return;
    this.opts.pageCount = pageCount;
    this.store.grow(pageCount);
  }

  private checkOpen(): void {
    if (this.closed) throw new StorageError('closed', `shard storage ${this.opts.dir} is closed`);
  }

  /** Drops the image being received, if any (its file is removed at the next begin or open). */
  discardIncoming(): void {
    if (this.incoming) {
      this.disk.close(this.incoming.fh);
      this.incoming = undefined;
    }
  }

  close(): void {
    this.closed = true;
    this.discardIncoming();
    try {
      this.store.close();
    } finally {
      this.log.close();
    }
  }
}

function storeOptions(o: ShardStorageOptions): PageStoreOptions {
  return {
    dir: o.dir, pageSize: o.pageSize, pageCount: o.pageCount, cacheBytesMax: o.cacheBytesMax, slab: o.slab,
    ...(o.retainLsns !== undefined ? { retainLsns: o.retainLsns } : {}),
    ...(o.wallClock !== undefined ? { wallClock: o.wallClock } : {}),
  };
}

/**
 * Throws 'invariant' unless the log of the replica in `dir` is absent or empty at LSN 0 (a
 * seed's precondition). A log with segments is opened (and recovered) to be looked at.
 */
function checkLogEmpty(disk: Disk, dir: string): void {
  const logDir = joinPath(dir, 'log');
  if (!disk.exists(logDir)) return;
  const segments = disk.list(logDir).filter((name) => parseSegmentName(name.endsWith('.reset') ? name.slice(0, -'.reset'.length) : name) !== undefined);
  if (segments.length === 0) return;
  const log = SegmentLog.open(disk, { dir: logDir });
  try {
    if (log.corruption.length > 0 || log.firstLsn !== 1 || log.lastLsn !== 0 || log.lastTerm !== 0) {
      throw new StorageError(
        'invariant',
        `cannot seed ${dir} from an image: its log is not empty at LSN 0 (it holds LSNs ${log.firstLsn}..${log.lastLsn}, last term ${log.lastTerm}${log.corruption.length > 0 ? ', damaged' : ''})`,
        { dir, firstLsn: log.firstLsn, lastLsn: log.lastLsn },
      );
    }
  } finally {
    log.close();
  }
}

/** The redo part of an installation: idempotent. */
function finishInstall(disk: Disk, dir: string, log: SegmentLog, m: InstallMarker, wallClock: () => number = Date.now): void {
  // The received image, still under its temporary name (checked whole before the marker was
  // written); a seed's, or one a crash left renamed already, is under its own.
  const final = joinPath(dir, imageFileName(m.lsn));
  if (!disk.exists(final)) {
    disk.rename(joinPath(dir, INCOMING), final);
    disk.fsyncDir(dir);
  }
  if (!(log.firstLsn === m.lsn + 1 && log.lastLsn === m.lsn)) log.reset(m.lsn + 1, m.term);
  assert(log.lastLsn === m.lsn && log.lastTerm === m.term, 'log continues after the installed image', {
    lastLsn: log.lastLsn,
    lastTerm: log.lastTerm,
    lsn: m.lsn,
  });
  PageStore.adoptImage(disk, dir, m.lsn, m.term, wallClock());
  disk.remove(joinPath(dir, INSTALL));
  disk.fsyncDir(dir);
}
