/**
 * The catalog shard: where a replicated controller keeps its catalog (docs/replication.md, "A
 * replicated controller").
 *
 * It is a shard like a volume's, of a volume no catalog lists (`CATALOG_VOLUME_ID`, one shard of
 * 8 KiB pages), whose replicas are the controller nodes (`controllers` in the node's config), one
 * on each node's first host. Its log is the catalog's: replicated to a majority and fsync'd before
 * a change is answered, its leader elected as any shard's. The node whose replica leads runs the
 * controller, and only it writes the shard, each write naming the term its replica leads in:
 * a write of a controller whose replica was deposed meets a leader of another term and is refused
 * (ShardFence.term), so a deposed controller can never overwrite its successor's catalog.
 *
 * Layout (a catalog is written whole, as the local catalog file is):
 * - page 0, the header: `SCAT`, the layout's version (1), the region holding the catalog (0 or 1),
 *   the catalog's length in bytes, its CRC-32C, and its epoch, each a little-endian u32 (the
 *   epoch a u64); the rest zeros. A header of zeros: no catalog was written yet.
 * - two regions of CATALOG_REGION_PAGES pages (16 MiB) each, from page 1: the catalog, CBOR.
 * A change writes the catalog into the region the header does not name, then the header: a
 * header is one page, written by one record, so a reader finds the old catalog or the new one,
 * never a mix, also when the controller dies between the two. (A catalog and its header that fit
 * in one request are written by one record.)
 */
import { decode, encode } from '../messages/codec';
import { ProtocolError } from '../messages/errors';
import { shardLeadersSubject } from '../messages/subjects';
import { validateShardFlushReply, validateShardReadReply, validateShardWriteReply } from '../messages/validate';
import type { ShardAssignment } from '../messages/control';
import type { PageWrite } from '../messages/api';
import { crc32c } from '../storage-engine/crc32c';
import type { CatalogState } from '../actors/controller';
import { pagesPerRequest, type StrataClient } from './client';

import { CATALOG_VOLUME_ID, CATALOG_VOLUME_NAME } from '../messages/control';
import { pageWritesCrc } from '../storage-engine/page-data-crc';
export { CATALOG_VOLUME_ID, CATALOG_VOLUME_NAME };
export const CATALOG_PAGE_SIZE = 8192;
/** Pages of a region: 16 MiB, the bound of a catalog kept in a local file (MetaStore). */
export const CATALOG_REGION_PAGES = 2048;
export const CATALOG_PAGE_COUNT = 1 + 2 * CATALOG_REGION_PAGES;
/** The most bytes an encoded catalog takes: one region. */
export const CATALOG_BYTES_MAX = CATALOG_REGION_PAGES * CATALOG_PAGE_SIZE;
export { CONTROLLERS_MAX, CONTROLLERS_MIN } from '../messages/control';

const MAGIC = 0x54414353; // 'SCAT', little-endian
const LAYOUT_VERSION = 1;
const HEADER_BYTES = 28;

/** Where a catalog is, as a header says. */
export interface CatalogHeader {
  region: 0 | 1;
  bytes: number;
  crc: number;
  epoch: number;
}

/** The catalog shard's assignment on a controller node: shard 0, on the node's first host. */
export function catalogAssignment(controllers: readonly string[]): ShardAssignment {
  return {
    volumeId: CATALOG_VOLUME_ID,
    volumeName: CATALOG_VOLUME_NAME,
    shard: 0,
    shards: 1,
    pageCount: CATALOG_PAGE_COUNT,
    pageSize: CATALOG_PAGE_SIZE,
    stripePages: CATALOG_PAGE_COUNT,
    hostId: 0,
    members: [...controllers],
  };
}

/** The first page of a region. */
export function regionStart(region: 0 | 1): number {
  return 1 + region * CATALOG_REGION_PAGES;
}

/** A header page. */
export function encodeHeader(h: CatalogHeader): Uint8Array {
  const page = new Uint8Array(CATALOG_PAGE_SIZE);
  const view = new DataView(page.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint32(4, LAYOUT_VERSION, true);
  view.setUint32(8, h.region, true);
  view.setUint32(12, h.bytes, true);
  view.setUint32(16, h.crc, true);
  view.setBigUint64(20, BigInt(h.epoch), true);
  return page;
}

/** A header page read back: undefined for one of zeros (no catalog yet); `corruption` for anything else that is not a header. */
export function decodeHeader(page: Uint8Array): CatalogHeader | undefined {
  if (page.length !== CATALOG_PAGE_SIZE) throw new ProtocolError('corruption', `the catalog shard's header page has ${page.length} bytes, not ${CATALOG_PAGE_SIZE}`);
  if (page.every((b) => b === 0)) return undefined;
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  const magic = view.getUint32(0, true);
  const version = view.getUint32(4, true);
  const region = view.getUint32(8, true);
  const bytes = view.getUint32(12, true);
  const epoch = Number(view.getBigUint64(20, true));
  const bad = (why: string): never => {
    throw new ProtocolError('corruption', `the catalog shard's header is not one: ${why}`);
  };
  if (magic !== MAGIC) bad(`magic 0x${magic.toString(16)}`);
  if (version !== LAYOUT_VERSION) bad(`layout version ${version}, this node reads ${LAYOUT_VERSION}`);
  if (region !== 0 && region !== 1) bad(`region ${region}`);
  if (bytes < 1 || bytes > CATALOG_BYTES_MAX) bad(`length ${bytes}`);
  if (!Number.isSafeInteger(epoch)) bad(`epoch ${epoch}`);
  for (let i = HEADER_BYTES; i < page.length; i++) if (page[i] !== 0) bad(`byte ${i} is not zero`);
  return { region: region as 0 | 1, bytes, crc: view.getUint32(16, true), epoch };
}

/**
 * The pages that make `state` the catalog, in the region `current` does not name (region 0 when
 * there is no catalog yet): the region's pages, then the header, last, and the catalog's bytes.
 * `held`: the bytes of the catalog that region holds (the one before the current), when known:
 * its pages that the new catalog leaves as they are are not written again (a catalog of many
 * volumes changes in a few pages, and a new volume at its end). A region's page past `held`'s
 * last may hold an older catalog's bytes, and is always written. `too_large` for a catalog beyond
 * a region.
 */
export function catalogPages(state: CatalogState, current: 0 | 1 | undefined, held?: Uint8Array, encoded?: Uint8Array): { data: PageWrite[]; header: PageWrite; region: 0 | 1; bytes: Uint8Array } {
  const bytes = encoded ?? encode(state, { bytesMax: CATALOG_BYTES_MAX });
  if (bytes.byteLength > CATALOG_BYTES_MAX) throw new ProtocolError('too_large', `the catalog of ${bytes.byteLength} bytes exceeds its region of ${CATALOG_BYTES_MAX} bytes`, { bytes: bytes.byteLength, bytesMax: CATALOG_BYTES_MAX });
  const region: 0 | 1 = current === 0 ? 1 : 0;
  const data: PageWrite[] = [];
  for (let at = 0, page = regionStart(region); at < bytes.length; at += CATALOG_PAGE_SIZE, page++) {
    const p = new Uint8Array(CATALOG_PAGE_SIZE);
    p.set(bytes.subarray(at, Math.min(bytes.length, at + CATALOG_PAGE_SIZE)));
    if (held !== undefined && at < held.length && samePage(p, held.subarray(at, Math.min(held.length, at + CATALOG_PAGE_SIZE)))) continue;
    data.push({ page, data: p });
  }
  return { data, header: { page: 0, data: encodeHeader({ region, bytes: bytes.length, crc: crc32c(bytes), epoch: state.epoch }) }, region, bytes };
}

/** Whether a page (zero-padded) holds `chunk` and zeros after it, as a written page of `chunk` does. */
function samePage(page: Uint8Array, chunk: Uint8Array): boolean {
  for (let i = 0; i < page.length; i++) if (page[i] !== (i < chunk.length ? chunk[i] : 0)) return false;
  return true;
}

/** The catalog's bytes (`h.bytes` of them) from the pages of its region, in order; `corruption` when they hold fewer. */
function catalogBytes(h: CatalogHeader, pages: readonly Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(h.bytes);
  let at = 0;
  for (const p of pages) {
    if (at >= h.bytes) break;
    const n = Math.min(p.length, h.bytes - at);
    bytes.set(p.subarray(0, n), at);
    at += n;
  }
  if (at < h.bytes) throw new ProtocolError('corruption', `the catalog shard holds ${at} of the catalog's ${h.bytes} bytes`);
  return bytes;
}

/** The catalog from its header and the pages of its region (from the region's first, in order). */
export function decodeCatalog(h: CatalogHeader, pages: readonly Uint8Array[]): CatalogState {
  return decodeCatalogBytes(h, catalogBytes(h, pages));
}

/** The catalog from its bytes, checked against its header. */
function decodeCatalogBytes(h: CatalogHeader, bytes: Uint8Array): CatalogState {
  const crc = crc32c(bytes);
  if (crc !== h.crc) throw new ProtocolError('corruption', `the catalog in region ${h.region} does not match its header's CRC-32C (0x${crc.toString(16)}, header 0x${h.crc.toString(16)})`);
  // Bounded by its region, not by a message's 1 MiB: a catalog of many volumes is larger.
  const state = decode(bytes, { bytesMax: CATALOG_BYTES_MAX }) as CatalogState;
  if (state === null || typeof state !== 'object' || state.version !== 1 || state.epoch !== h.epoch) {
    throw new ProtocolError('corruption', `the catalog in region ${h.region} is not the header's (epoch ${String((state as { epoch?: unknown } | null)?.epoch)}, header ${h.epoch})`);
  }
  return state;
}

/**
 * The catalog shard as its leader's node reads and writes it, over the shard's subject, each
 * request naming `term`: the term the node's replica leads in. Writes go one after another (the
 * controller chains them).
 */
export class CatalogShard {
  /** The region the header names, as of the last load or write; undefined: no catalog yet. */
  private region: 0 | 1 | undefined;
  /** The catalog bytes each region holds, as this instance read or wrote them (undefined: not known). */
  private readonly held: [Uint8Array | undefined, Uint8Array | undefined] = [undefined, undefined];

  constructor(
    private readonly client: StrataClient,
    private readonly opts: { term: number; timeoutMs: number },
  ) {}

  get term(): number {
    return this.opts.term;
  }

  /** Resolves once the leader in `term` has committed and applied everything its log holds. */
  async flush(): Promise<void> {
    await this.client.send(this.subject(), 'shard.flush', { term: this.opts.term }, Date.now() + this.opts.timeoutMs, validateShardFlushReply);
  }

  /** The catalog the shard holds (undefined: none yet), read at its leader in `term`. */
  async load(): Promise<CatalogState | undefined> {
    const deadlineMs = Date.now() + this.opts.timeoutMs;
    const [headerPage] = await this.read([0], deadlineMs);
    const h = decodeHeader(headerPage!);
    if (h === undefined) {
      this.region = undefined;
      return undefined;
    }
    const count = Math.ceil(h.bytes / CATALOG_PAGE_SIZE);
    const per = this.perRequest();
    const pages: Uint8Array[] = [];
    for (let i = 0; i < count; i += per) {
      const numbers = Array.from({ length: Math.min(per, count - i) }, (_, k) => regionStart(h.region) + i + k);
      pages.push(...(await this.read(numbers, deadlineMs)));
    }
    const bytes = catalogBytes(h, pages);
    const state = decodeCatalogBytes(h, bytes);
    this.region = h.region;
    this.held[h.region] = bytes;
    return state;
  }

  /** Makes `state` the catalog: its region's pages, then the header; resolves once committed. */
  async write(state: CatalogState, encoded?: Uint8Array): Promise<void> {
    const deadlineMs = Date.now() + this.opts.timeoutMs;
    const target = this.region === 0 ? 1 : 0;
    const { data, header, region, bytes } = catalogPages(state, this.region, this.held[target], encoded);
    const per = this.perRequest();
    if (data.length + 1 <= per) {
      await this.send([...data, header], deadlineMs);
    } else {
      for (let i = 0; i < data.length; i += per) await this.send(data.slice(i, i + per), deadlineMs);
      await this.send([header], deadlineMs);
    }
    this.region = region;
    this.held[region] = bytes;
  }

  private perRequest(): number {
    return pagesPerRequest(CATALOG_PAGE_SIZE, this.client.maxPayloadBytes);
  }

  /**
   * The catalog shard's leaders subject (every replica that believes it leads takes each
   * request): a frozen leader of an earlier term keeps its subscriptions, its share of the shard
   * subject's queue group among them, while the next one leads; a takeover's flush and load
   * went to it half the time and waited out their deadline. Each request names its term: a
   * leader of an earlier term than that leaves it unanswered (to the named term's leader), one of
   * a later term refuses it (`stale_term`).
   */
  private subject(): string {
    return shardLeadersSubject(this.client.cluster, CATALOG_VOLUME_ID, 0);
  }

  private async read(pages: number[], deadlineMs: number): Promise<Uint8Array[]> {
    const r = await this.client.send(this.subject(), 'shard.read', { pages, term: this.opts.term }, deadlineMs, (v) =>
      validateShardReadReply(v, { count: pages.length, pageSize: CATALOG_PAGE_SIZE }),
    );
    return r.pages;
  }

  private async send(pages: PageWrite[], deadlineMs: number): Promise<void> {
    await this.client.send(this.subject(), 'shard.write', { pages, crc: pageWritesCrc(pages), term: this.opts.term, deadlineMs }, deadlineMs, validateShardWriteReply);
  }
}
